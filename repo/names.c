/* names.c - the entry names of a directory, sorted; see names.h. */
#include "repo/names.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int names_cmp(const void *x, const void *y, void *ctx)
{
    const char *base = ctx;
    return strcmp(base + *(const size_t *)x, base + *(const size_t *)y);
}

void names_free(struct names *nm)
{
    buf_free(&nm->text);
    free(nm->off);
    memset(nm, 0, sizeof *nm);
}

int names_read(int fd, struct names *nm, struct err *e)
{
    int fd2 = dup(fd);
    if (fd2 < 0) return errno;
    DIR *dir = fdopendir(fd2);
    if (!dir) {
        int en = errno;
        close(fd2);
        return en;
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            rc = errno;
            break;
        }
        const char *s = de->d_name;
        if (s[0] == '.' && (s[1] == '\0' || (s[1] == '.' && s[2] == '\0'))) continue;
        if (nm->n == nm->cap) {
            size_t cap = nm->cap ? nm->cap * 2 : 64;
            size_t *off = realloc(nm->off, cap * sizeof *off);
            if (!off) {
                rc = err_set(e, ERR_FAIL, "out of memory");
                break;
            }
            nm->off = off;
            nm->cap = cap;
        }
        nm->off[nm->n] = nm->text.len;
        if (buf_append(&nm->text, s, strlen(s) + 1) < 0) {
            rc = err_set(e, ERR_FAIL, "out of memory");
            break;
        }
        nm->n++;
    }
    closedir(dir);
    if (rc == 0 && nm->n > 1) qsort_r(nm->off, nm->n, sizeof *nm->off, names_cmp, nm->text.data);
    return rc;
}

const char *names_get(const struct names *nm, size_t i)
{
    return (const char *)nm->text.data + nm->off[i];
}
