/* backend_local.c - the backend that keeps every object as a file under a directory.
 *
 * An object "a/b/c" is the file "<root>/a/b/c". Saves write a temporary file next to the target
 * (".tmp-<random>", never listed), fsync it, then rename it into place and fsync the directory,
 * so a crash or a failed write leaves either the whole object or nothing under its name; a
 * removal syncs the directory too, so it is durable when it returns. An object assembled in a
 * temporary file of local_tmp_file (an unnamed O_TMPFILE in the root) is instead synced and
 * linked into place, which costs no copy. */
#include "backend/backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/failpoint.h"
#include "base/fdio.h"

#define TMP_MARK ".tmp-"

struct local {
    struct backend b;
    char *root; /* without trailing slash; immutable after open */
};

static struct local *as_local(struct backend *b)
{
    return (struct local *)b;
}

/* "<root>/<name>" in a fresh allocation, or NULL when memory is out. */
static char *join(const char *root, const char *name)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", root, name) < 0 ? NULL : p;
}

static int oom(struct err *e, const char *what, const char *name)
{
    return err_set(e, ERR_FAIL, "%s %s: out of memory", what, name);
}

/* fsync of a directory makes the names created or renamed in it durable. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fp_fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Creates every missing directory on the way to `path` (which ends in a file name), below
 * `root` (which exists). Each new directory's parent is synced so the new entry survives. */
static int make_parents(const char *root, char *path, struct err *e)
{
    for (char *s = path + strlen(root) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        int rc = fp_mkdir(path, 0700);
        int saved = errno;
        if (rc == 0) {
            char *slash = strrchr(path, '/');
            *slash = '\0';
            rc = sync_dir(path);
            saved = errno;
            *slash = '/';
        } else if (saved == EEXIST) {
            rc = 0;
        }
        if (rc < 0) {
            err_sys(e, saved, "creating directory %s", path);
            *s = '/';
            return ERR_FAIL;
        }
        *s = '/';
    }
    return 0;
}

/* Copies [0, len) of the file open as `src` to `out`, through a bounded buffer. */
static int copy_fd(int src, int out, uint64_t len)
{
    enum { COPY_BUF = 256 * 1024 };
    uint8_t *b = malloc(COPY_BUF);
    if (!b) {
        errno = ENOMEM;
        return -1;
    }
    int rc = 0;
    for (uint64_t off = 0; off < len && rc == 0;) {
        size_t want = len - off < COPY_BUF ? (size_t)(len - off) : COPY_BUF;
        rc = fdio_pread_exact(src, b, want, off);
        if (rc == 0) rc = fp_pwrite_all(out, b, want, off);
        off += want;
    }
    int saved = errno;
    free(b);
    errno = saved;
    return rc;
}

/* What a save writes: `len` bytes from memory (`data`), or from the file open as `fd`. */
struct source {
    const void *data;
    int fd;
    uint64_t len;
};

/* Writes the whole temporary file, synced; on failure nothing of it remains. */
static int write_tmp(const char *root, char *tmp, const struct source *src, struct err *e)
{
    int fd = fp_open_create(tmp, O_WRONLY | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {
        if (make_parents(root, tmp, e) < 0) return ERR_FAIL;
        fd = fp_open_create(tmp, O_WRONLY | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) return err_sys(e, errno, "creating %s", tmp);
    const char *step = "writing";
    int rc = src->data ? fp_pwrite_all(fd, src->data, (size_t)src->len, 0)
                       : copy_fd(src->fd, fd, src->len);
    if (rc == 0) {
        step = "syncing";
        rc = fp_fsync(fd);
    }
    int saved = errno;
    if (close(fd) < 0 && rc == 0) {
        step = "closing";
        rc = -1;
        saved = errno;
    }
    if (rc == 0) return 0;
    fp_unlink(tmp);
    return err_sys(e, saved, "%s %s", step, tmp);
}

/* Moves the finished temporary file to its name; without `overwrite` an existing object wins.
 * renameat2(RENAME_NOREPLACE) is atomic; file systems without it get link()+unlink(), which
 * is just as safe because link() never replaces. */
static int publish(const char *tmp, const char *path, bool overwrite, struct err *e)
{
    int rc;
    if (overwrite) {
        rc = fp_rename(tmp, path);
    } else {
        rc = fp_rename_noreplace(tmp, path);
        if (rc < 0 && (errno == EINVAL || errno == ENOSYS)) {
            rc = fp_link(tmp, path);
            if (rc == 0) fp_unlink(tmp);
        }
    }
    if (rc == 0) return 0;
    int saved = errno;
    fp_unlink(tmp);
    if (saved == EEXIST) return err_set(e, ERR_EXISTS, "the object already exists");
    return err_sys(e, saved, "renaming %s to %s", tmp, path);
}

/* Saves an O_TMPFILE made by local_tmp_file by linking it into place: no copy at all. Returns
 * 1 when the file cannot be linked (not one of ours, another file system, no /proc): the
 * caller then copies it. linkat() never replaces: ERR_EXISTS when the name is taken. */
static int link_tmpfile(const char *root, char *path, int fd, uint64_t len, struct err *e)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0 ||
        (uint64_t)st.st_size != len)
        return 1;
    if (fp_fsync(fd) < 0) return err_sys(e, errno, "syncing the temporary file of %s", path);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int rc = fp_link_fd(fd, path);
    if (rc < 0 && errno == ENOENT && access(proc, F_OK) == 0) {
        if (make_parents(root, path, e) < 0) return ERR_FAIL;
        rc = fp_link_fd(fd, path);
    }
    if (rc == 0) return 0;
    if (errno == EEXIST) return err_set(e, ERR_EXISTS, "the object already exists");
    return 1;
}

static int save_source(struct local *l, const char *name, const struct source *src, bool overwrite,
                       struct err *e)
{
    char *path = join(l->root, name);
    char *tmp = NULL;
    if (!path) return oom(e, "saving", name);
    char *slash = strrchr(path, '/');
    int rc = src->data ? 1 : link_tmpfile(l->root, path, src->fd, src->len, e);
    if (rc == ERR_EXISTS && overwrite) { /* replaced by a copy, renamed over it */
        err_clear(e);
        rc = 1;
    }
    if (rc == 1) {
        uint8_t rnd[8];
        char hex[2 * sizeof rnd + 1];
        randombytes_buf(rnd, sizeof rnd);
        sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
        if (asprintf(&tmp, "%.*s/" TMP_MARK "%s", (int)(slash - path), path, hex) < 0) {
            free(path);
            return oom(e, "saving", name);
        }
        rc = write_tmp(l->root, tmp, src, e);
        if (rc == 0) rc = publish(tmp, path, overwrite, e);
    }
    if (rc == 0) {
        *slash = '\0';
        if (sync_dir(path) < 0) rc = err_sys(e, errno, "syncing directory %s", path);
    }
    if (rc < 0) {
        /* A failed save is never "not found", whatever errno said. */
        if (rc != ERR_EXISTS) e->code = rc = ERR_FAIL;
        err_wrap(e, "saving %s to %s", name, l->root);
    }
    free(tmp);
    free(path);
    return rc;
}

static int local_save(struct backend *self, const char *name, const void *data, size_t len,
                      bool overwrite, struct err *e)
{
    struct source src = {.data = data ? data : "", .fd = -1, .len = len};
    return save_source(as_local(self), name, &src, overwrite, e);
}

static int local_save_fd(struct backend *self, const char *name, int fd, uint64_t len,
                         bool overwrite, struct err *e)
{
    struct source src = {.data = NULL, .fd = fd, .len = len};
    return save_source(as_local(self), name, &src, overwrite, e);
}

/* In the repository's root, so that local_save_fd can link it into place. */
static int local_tmp_file(struct backend *self, int *fd, struct err *e)
{
    return backend_tmp_file_in(as_local(self)->root, fd, e);
}

/* Opening "a/b" when "a" is a file fails with ENOTDIR: that object is just as absent. */
static int open_errno(void)
{
    return errno == ENOTDIR ? ENOENT : errno;
}

static int local_load(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                      struct buf *out, struct err *e)
{
    struct local *l = as_local(self);
    char *path = join(l->root, name);
    if (!path) return oom(e, "loading", name);
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        rc = err_sys(e, open_errno(), "opening %s", path);
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        rc = err_sys(e, errno, "reading the size of %s", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = err_set(e, ERR_FAIL, "%s is not a regular file", path);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (offset > size || (len > 0 && len > size - offset)) {
        rc = err_set(e, ERR_FAIL, "the object is %llu bytes, shorter than the %llu bytes at %llu",
                     (unsigned long long)size, (unsigned long long)len, (unsigned long long)offset);
        goto out;
    }
    uint64_t want = len ? len : size - offset;
    if (want > SIZE_MAX / 2 || buf_reserve(out, (size_t)want) < 0) {
        rc = err_set(e, ERR_FAIL, "out of memory for %llu bytes", (unsigned long long)want);
        goto out;
    }
    ssize_t n = fdio_pread_full(fd, out->data + out->len, (size_t)want, offset);
    if (n < 0) {
        rc = err_sys(e, errno, "reading %s", path);
        goto out;
    }
    if ((uint64_t)n < want) {
        rc = err_set(e, ERR_FAIL, "%s shrank while being read", path);
        goto out;
    }
    out->len += (size_t)n;
out:
    if (fd >= 0) close(fd);
    if (rc < 0) err_wrap(e, "loading %s from %s", name, l->root);
    free(path);
    return rc;
}

static int local_stat(struct backend *self, const char *name, uint64_t *size, struct err *e)
{
    struct local *l = as_local(self);
    char *path = join(l->root, name);
    if (!path) return oom(e, "checking", name);
    struct stat st;
    int rc = 0;
    if (stat(path, &st) < 0)
        rc = err_sys(e, open_errno(), "%s", path);
    else if (!S_ISREG(st.st_mode))
        rc = err_set(e, ERR_FAIL, "%s is not a regular file", path);
    else
        *size = (uint64_t)st.st_size;
    if (rc < 0) err_wrap(e, "checking %s in %s", name, l->root);
    free(path);
    return rc;
}

struct walk {
    const char *prefix;
    size_t plen;
    backend_list_cb cb;
    void *ctx;
    bool stopped; /* the callback asked to stop: its value is passed on untouched */
    struct err *e;
    char rel[PATH_MAX]; /* name of the directory being read, ending in '/' unless empty */
};

/* Reads the directory `fd` (taking ownership), whose name is w->rel, and everything below that
 * could match the prefix. */
static int walk_dir(struct walk *w, int fd)
{
    DIR *d = fdopendir(fd);
    if (!d) {
        int saved = errno;
        close(fd);
        return err_sys(w->e, saved, "reading directory %s", w->rel);
    }
    size_t rlen = strlen(w->rel);
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0) continue;
        if (strncmp(n, TMP_MARK, strlen(TMP_MARK)) == 0) continue;
        size_t nlen = strlen(n);
        if (rlen + nlen + 2 > sizeof w->rel) continue; /* not a name we could have written */
        memcpy(w->rel + rlen, n, nlen + 1);
        struct stat st;
        if (fstatat(dirfd(d), n, &st, 0) < 0) {
            if (errno == ENOENT) continue; /* removed while we listed */
            rc = err_sys(w->e, errno, "reading %s", w->rel);
        } else if (S_ISDIR(st.st_mode)) {
            w->rel[rlen + nlen] = '/';
            w->rel[rlen + nlen + 1] = '\0';
            size_t cmp = rlen + nlen + 1 < w->plen ? rlen + nlen + 1 : w->plen;
            if (strncmp(w->rel, w->prefix, cmp) == 0) {
                int sub = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (sub >= 0)
                    rc = walk_dir(w, sub);
                else if (errno != ENOENT)
                    rc = err_sys(w->e, errno, "opening directory %s", w->rel);
            }
        } else if (S_ISREG(st.st_mode) && strncmp(w->rel, w->prefix, w->plen) == 0) {
            rc = w->cb(w->ctx, w->rel, (uint64_t)st.st_size);
            w->stopped = rc != 0;
        }
        w->rel[rlen] = '\0';
    }
    if (rc == 0 && errno != 0) rc = err_sys(w->e, errno, "reading directory %s", w->rel);
    closedir(d);
    return rc;
}

static int local_list(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                      struct err *e)
{
    struct local *l = as_local(self);
    struct walk *w = calloc(1, sizeof *w);
    if (!w) return oom(e, "listing", prefix);
    *w = (struct walk){.prefix = prefix, .plen = strlen(prefix), .cb = cb, .ctx = ctx, .e = e};
    /* Start in the deepest directory the prefix names in full. */
    const char *slash = strrchr(prefix, '/');
    size_t dlen = slash ? (size_t)(slash - prefix) + 1 : 0;
    memcpy(w->rel, prefix, dlen);
    w->rel[dlen] = '\0';
    char *dir = join(l->root, w->rel);
    int rc = 0;
    if (!dir) {
        rc = oom(e, "listing", prefix);
    } else {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
            rc = walk_dir(w, fd);
        else if (errno != ENOENT && errno != ENOTDIR)
            rc = err_sys(e, errno, "opening directory %s", dir);
        if (rc < 0 && !w->stopped) {
            e->code = rc = ERR_FAIL;
            err_wrap(e, "listing \"%s\" in %s", prefix, l->root);
        }
    }
    free(dir);
    free(w);
    return rc;
}

static int local_remove(struct backend *self, const char *name, struct err *e)
{
    struct local *l = as_local(self);
    char *path = join(l->root, name);
    if (!path) return oom(e, "removing", name);
    int rc = 0;
    if (fp_unlink(path) < 0) {
        rc = err_sys(e, open_errno(), "%s", path);
    } else {
        /* Durable before it returns, like a save: a removal that a power loss could undo
         * would bring back a forgotten snapshot after prune freed its data (crash_points.sh,
         * forget --prune). */
        *strrchr(path, '/') = '\0';
        if (sync_dir(path) < 0) rc = err_sys(e, errno, "syncing directory %s", path);
    }
    if (rc < 0) err_wrap(e, "removing %s from %s", name, l->root);
    free(path);
    return rc;
}

static void local_close(struct backend *self)
{
    struct local *l = as_local(self);
    free(l->root);
    free(l->b.location);
    free(l);
}

static const struct backend_ops local_ops = {
    .save = local_save,
    .save_fd = local_save_fd,
    .tmp_file = local_tmp_file,
    .load = local_load,
    .stat = local_stat,
    .list = local_list,
    .remove = local_remove,
    .close = local_close,
};

/* mkdir -p */
static int make_root(char *path, struct err *e)
{
    for (char *s = path + 1;; s++) {
        char c = *s;
        if (c != '/' && c != '\0') continue;
        *s = '\0';
        int rc = fp_mkdir(path, 0700);
        int saved = errno;
        *s = c;
        if (rc < 0 && saved != EEXIST) {
            err_sys(e, saved, "creating directory %.*s", (int)(s - path), path);
            return e->code = ERR_FAIL;
        }
        if (c == '\0') return 0;
    }
}

int backend_local_open(const char *path, bool create, struct backend **out, struct err *e)
{
    *out = NULL;
    if (path[0] == '\0') return err_set(e, ERR_FAIL, "empty repository path");
    if (sodium_init() < 0) return err_set(e, ERR_FAIL, "libsodium failed to initialise");
    struct local *l = calloc(1, sizeof *l);
    if (!l) return oom(e, "opening", path);
    l->b.ops = &local_ops;
    /* One save writing while another syncs keeps a disk busy; more only queue on it. */
    l->b.save_slots = 2;
    l->b.location = strdup(path);
    l->root = strdup(path);
    if (!l->b.location || !l->root) {
        local_close(&l->b);
        return oom(e, "opening", path);
    }
    for (size_t n = strlen(l->root); n > 1 && l->root[n - 1] == '/'; n--)
        l->root[n - 1] = '\0';
    int rc = create ? make_root(l->root, e) : 0;
    struct stat st;
    if (rc == 0 && stat(l->root, &st) < 0)
        rc = err_sys(e, errno, "repository directory %s", l->root);
    else if (rc == 0 && !S_ISDIR(st.st_mode))
        rc = err_set(e, ERR_FAIL, "repository location %s is not a directory", l->root);
    if (rc < 0) {
        local_close(&l->b);
        return rc;
    }
    *out = &l->b;
    return 0;
}
