/* cache.c - the local object cache; see cache.h. It is a local backend under
 * "<dir>/<repo id>", so it inherits atomic saves and name checks. */
#include "repo/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/failpoint.h"

struct cache {
    struct backend *b;
};

/* The standard marker (https://bford.info/cachedir/) that tells backup tools to skip us. */
#define CACHEDIR_TAG                                                                               \
    "Signature: 8a477f597d28d172789f06886806bc55\n"                                                \
    "# This file is a cache directory tag created by podvault.\n"                                  \
    "# For information about cache directory tags see https://bford.info/cachedir/\n"

int cache_default_dir(const char *dir, const char *xdg_cache_home, const char *home, char **out,
                      struct err *e)
{
    int n;
    *out = NULL;
    if (dir && *dir) {
        n = asprintf(out, "%s", dir);
    } else if (xdg_cache_home && *xdg_cache_home) {
        n = asprintf(out, "%s/podvault", xdg_cache_home);
    } else if (home && *home) {
        n = asprintf(out, "%s/.cache/podvault", home);
    } else {
        return err_set(e, ERR_FAIL, "no cache directory: set PODVAULT_CACHE_DIR or HOME");
    }
    if (n < 0) {
        *out = NULL;
        return err_set(e, ERR_FAIL, "out of memory");
    }
    return 0;
}

static bool is_hex_id(const char *s)
{
    return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* Writes CACHEDIR.TAG once; losing a race with another process is fine (O_EXCL). */
static void write_tag(const char *dir)
{
    char *path = NULL;
    if (asprintf(&path, "%s/CACHEDIR.TAG", dir) < 0) return;
    int fd = fp_open_create(path, O_WRONLY | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        /* A short write leaves a tag without effect, nothing worse. */
        (void)!fp_pwrite_all(fd, CACHEDIR_TAG, strlen(CACHEDIR_TAG), 0);
        close(fd);
    }
    free(path);
}

int cache_open(const char *dir, const char *repo_id_hex, struct cache **out, struct err *e)
{
    *out = NULL;
    if (!is_hex_id(repo_id_hex))
        return err_set(e, ERR_FAIL, "cache: \"%.80s\" is not a repository ID", repo_id_hex);
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, repo_id_hex) < 0)
        return err_set(e, ERR_FAIL, "cache: out of memory");
    struct cache *c = calloc(1, sizeof *c);
    int rc = c ? backend_local_open(path, true, &c->b, e) : err_set(e, ERR_FAIL, "out of memory");
    free(path);
    if (rc < 0) {
        free(c);
        return err_wrap(e, "opening the cache in %s", dir);
    }
    write_tag(dir);
    *out = c;
    return 0;
}

void cache_close(struct cache *c)
{
    if (!c) return;
    backend_close(c->b);
    free(c);
}

/* len 0: the whole copy. */
static int load(struct cache *c, const char *name, uint64_t offset, uint64_t len, struct buf *out,
                struct err *e)
{
    int rc = backend_load(c->b, name, offset, len, out, e);
    if (rc < 0 && rc != ERR_NOT_FOUND) err_wrap(e, "reading the cache");
    return rc;
}

int cache_get(struct cache *c, const char *name, struct buf *out, struct err *e)
{
    return load(c, name, 0, 0, out, e);
}

int cache_get_range(struct cache *c, const char *name, uint64_t offset, uint64_t len,
                    struct buf *out, struct err *e)
{
    if (len == 0) return err_set(e, ERR_FAIL, "cache: empty range of %.100s", name);
    return load(c, name, offset, len, out, e);
}

int cache_put(struct cache *c, const char *name, const void *data, size_t len, struct err *e)
{
    int rc = backend_save(c->b, name, data, len, true, e);
    return rc < 0 ? err_wrap(e, "writing the cache") : 0;
}

int cache_remove(struct cache *c, const char *name, struct err *e)
{
    int rc = backend_remove(c->b, name, e);
    if (rc == ERR_NOT_FOUND) {
        err_clear(e);
        return 0;
    }
    return rc < 0 ? err_wrap(e, "removing from the cache") : 0;
}

int cache_list(struct cache *c, const char *prefix, backend_list_cb cb, void *ctx, struct err *e)
{
    return backend_list(c->b, prefix, cb, ctx, e);
}
