/* names.h - the entry names of a directory, read at once and sorted bytewise, so that the
 * backup's trees come out in a deterministic order. Thread-safety: a list is used by one thread
 * at a time. */
#ifndef PV_REPO_NAMES_H
#define PV_REPO_NAMES_H

#include <stddef.h>

#include "base/buf.h"
#include "base/err.h"

/* A sorted list of directory entry names; zeroed: empty. Owns its text. */
struct names {
    struct buf text; /* NUL-terminated names, back to back */
    size_t *off;
    size_t n, cap;
};

/* Appends every entry name of the directory open as `fd` (not "." and "..") to the empty
 * list nm, sorted; fd stays open. Returns 0, a positive errno when the directory cannot be read
 * (nm then holds what was read, for names_free), or ERR_FAIL (out of memory). */
int names_read(int fd, struct names *nm, struct err *e);
/* Name i (< nm->n), valid until names_free. */
const char *names_get(const struct names *nm, size_t i);
/* Frees the list and empties it. */
void names_free(struct names *nm);

#endif
