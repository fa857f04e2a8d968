/* err.c - error values with a message; see err.h. */
#include "base/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void err_clear(struct err *e)
{
    e->code = ERR_OK;
    e->msg[0] = '\0';
}

int err_set(struct err *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

int err_sys(struct err *e, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n < sizeof e->msg)
        snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %s", strerror(errnum));
    e->code = errnum == ENOENT ? ERR_NOT_FOUND : errnum == EEXIST ? ERR_EXISTS : ERR_FAIL;
    return e->code;
}

int err_wrap(struct err *e, const char *fmt, ...)
{
    char prefix[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Shift the old message right and put "prefix: " in front, truncating the tail. */
    size_t plen = strlen(prefix);
    if (plen > sizeof e->msg / 2) plen = sizeof e->msg / 2;
    size_t olen = strnlen(e->msg, sizeof e->msg - 1);
    size_t room = sizeof e->msg - plen - 3;
    if (olen > room) olen = room;
    memmove(e->msg + plen + 2, e->msg, olen);
    memcpy(e->msg, prefix, plen);
    e->msg[plen] = ':';
    e->msg[plen + 1] = ' ';
    e->msg[plen + 2 + olen] = '\0';
    if (e->code == ERR_OK) e->code = ERR_FAIL;
    return e->code;
}
