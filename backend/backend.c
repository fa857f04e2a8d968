/* backend.c - picks the backend for a location and checks object names before any backend sees
 * them; see backend.h. */
#include "backend/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Names are also file paths (local) and S3 keys, so only characters that are safe as both pass,
 * and no component may climb out of the repository or look like a local temporary file. */
#define NAME_MAX_LEN 512
#define TMP_MARK ".tmp-"

static bool name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '/';
}

/* A prefix may end in the middle of a component ("data/a") or with a slash ("snapshots/"). */
static bool prefix_ok(const char *p)
{
    size_t n = strlen(p);
    if (n > NAME_MAX_LEN || p[0] == '/') return false;
    const char *comp = p;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && !name_char_ok(p[i])) return false;
        if (i < n && p[i] != '/') continue;
        size_t clen = (size_t)(p + i - comp);
        if (i < n && clen == 0) return false; /* "a//b" */
        if ((clen == 1 && comp[0] == '.') || (clen == 2 && comp[0] == '.' && comp[1] == '.'))
            return false;
        if (clen >= strlen(TMP_MARK) && strncmp(comp, TMP_MARK, strlen(TMP_MARK)) == 0)
            return false;
        comp = p + i + 1;
    }
    return true;
}

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && name[n - 1] != '/' && prefix_ok(name);
}

static int check_name(struct backend *b, const char *name, struct err *e)
{
    if (name_ok(name)) return 0;
    return err_set(e, ERR_FAIL, "invalid object name \"%.100s\" for %s", name, b->location);
}

int backend_open(const char *location, bool create, struct backend **out, struct err *e)
{
    *out = NULL;
    if (strncmp(location, "s3:", 3) == 0) return backend_s3_open(location, create, out, e);
    return backend_local_open(location, create, out, e);
}

int backend_save(struct backend *b, const char *name, const void *data, size_t len, bool overwrite,
                 struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->save(b, name, data, len, overwrite, e);
}

int backend_save_fd(struct backend *b, const char *name, int fd, uint64_t len, bool overwrite,
                    struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->save_fd(b, name, fd, len, overwrite, e);
}

int backend_tmp_file_in(const char *dir, int *fd, struct err *e)
{
    *fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (*fd >= 0) return 0;
    char *path = NULL;
    if (asprintf(&path, "%s/" TMP_MARK "podvault-XXXXXX", dir) < 0)
        return err_set(e, ERR_FAIL, "creating a temporary file in %s: out of memory", dir);
    *fd = mkostemp(path, O_CLOEXEC);
    int saved = errno;
    if (*fd >= 0) unlink(path);
    free(path);
    if (*fd < 0) return err_sys(e, saved, "creating a temporary file in %s", dir);
    return 0;
}

int backend_tmp_file(struct backend *b, int *fd, struct err *e)
{
    if (b->ops->tmp_file) return b->ops->tmp_file(b, fd, e);
    const char *dir = getenv("TMPDIR");
    return backend_tmp_file_in(dir && *dir ? dir : "/tmp", fd, e);
}

int backend_load(struct backend *b, const char *name, uint64_t offset, uint64_t len,
                 struct buf *out, struct err *e)
{
    int rc = check_name(b, name, e);
    if (rc) return rc;
    if (len > UINT64_MAX - offset)
        return err_set(e, ERR_FAIL, "loading %s from %s: range overflows", name, b->location);
    return b->ops->load(b, name, offset, len, out, e);
}

int backend_stat(struct backend *b, const char *name, uint64_t *size, struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->stat(b, name, size, e);
}

int backend_list(struct backend *b, const char *prefix, backend_list_cb cb, void *ctx,
                 struct err *e)
{
    if (!prefix_ok(prefix))
        return err_set(e, ERR_FAIL, "invalid listing prefix \"%.100s\" for %s", prefix,
                       b->location);
    return b->ops->list(b, prefix, cb, ctx, e);
}

int backend_remove(struct backend *b, const char *name, struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->remove(b, name, e);
}

void backend_close(struct backend *b)
{
    if (b) b->ops->close(b);
}
