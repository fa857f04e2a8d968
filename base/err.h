/* err.h - error values: a message a user can act on, carried up the call stack.
 *
 * Every fallible function in podvault returns an int (0 on success, a negative value on
 * failure) and takes a `struct err *` that it fills on failure. Callers add context on the way
 * up with err_wrap(), so the final message reads like "loading index 3f2a…: pack header:
 * authentication failed". Nothing here allocates, so errors can be reported when memory is out.
 */
#ifndef PV_BASE_ERR_H
#define PV_BASE_ERR_H

#include <stddef.h>

/* Return codes shared by every module. ERR_NOT_FOUND lets callers tell "absent" from "broken". */
enum {
    ERR_OK = 0,
    ERR_FAIL = -1,      /* any failure; the message says what */
    ERR_NOT_FOUND = -2, /* the named object does not exist */
    ERR_EXISTS = -3,    /* the object to create already exists */
    ERR_AUTH = -4,      /* wrong password or failed authentication of stored bytes */
    ERR_CANCELED = -5,  /* the operation was asked to stop */
};

#define ERR_MSG_MAX 1024

struct err {
    int code;              /* last code set, one of the ERR_* values */
    char msg[ERR_MSG_MAX]; /* NUL-terminated, never empty after a failure */
};

/* Clears an error value; a cleared error has code ERR_OK and an empty message. */
void err_clear(struct err *e);

/* Sets the message from printf-style arguments and returns `code` (so `return err_set(...)`). */
int err_set(struct err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Like err_set with code ERR_FAIL, appending ": strerror(errnum)". ENOENT maps to
 * ERR_NOT_FOUND, EEXIST to ERR_EXISTS; the mapped code is returned. */
int err_sys(struct err *e, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prepends context ("what we were doing: ") to an existing message and returns e->code. */
int err_wrap(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
