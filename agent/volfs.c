/* volfs.c - work inside a tenant's volume through descriptors only; see volfs.h. */
#include "agent/volfs.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
#define MAX_DEPTH 64 /* levels below the removed entry; each holds a descriptor */
#define ATTEMPTS 8   /* tries against a writer that keeps adding what we remove */

int volfs_open(const char *path, struct err *e)
{
    int fd = open(path, DIR_FLAGS);
    if (fd >= 0) return fd;
    int err = errno;
    struct stat st;
    if ((err == ELOOP || err == ENOTDIR) && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
        return err_set(e, ERR_FAIL, "volume directory %s is a symlink: refusing to follow it",
                       path);
    return err_sys(e, err, "opening volume directory %s", path);
}

int volfs_is_empty(int dirfd, const char *shown, bool *empty, struct err *e)
{
    int fd = openat(dirfd, ".", DIR_FLAGS);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int err = errno;
        if (fd >= 0) close(fd);
        return err_sys(e, err, "reading volume directory %s", shown);
    }
    struct dirent *de;
    *empty = true;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            *empty = false;
            break;
        }
    }
    closedir(d);
    return 0;
}

/* --- removal */

struct rm {
    dev_t dev;           /* the file system of the start: never left */
    char path[PATH_MAX]; /* what messages show: the entry being worked on */
    struct err *e;
};

static int rm_entry(struct rm *r, int dirfd, const char *name, unsigned depth);

/* Appends "/name" to r->path; returns the old length to restore, or -1 when it does not fit. */
static int path_push(struct rm *r, const char *name)
{
    size_t n = strlen(r->path);
    if (snprintf(r->path + n, sizeof r->path - n, "/%s", name) >= (int)(sizeof r->path - n))
        return -1;
    return (int)n;
}

/* Removes every entry of the directory open at `fd`, which it takes (and closes). */
static int rm_children(struct rm *r, int fd, unsigned depth)
{
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return err_sys(r->e, err, "reading %s", r->path);
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        int len = path_push(r, de->d_name);
        rc = len < 0 ? err_set(r->e, ERR_FAIL, "%s/%s: path too long", r->path, de->d_name)
                     : rm_entry(r, dirfd(d), de->d_name, depth);
        if (len >= 0) r->path[len] = '\0';
    }
    closedir(d);
    return rc;
}

enum { RM_GONE = 1, RM_NOT_DIR = 2 }; /* rm_contents' answers besides 0 and errors */

/* Empties the directory `name` of `dirfd`: 0, RM_GONE when `name` is gone, RM_NOT_DIR when it
 * is (now) not a directory, or a negative ERR_* code. */
static int rm_contents(struct rm *r, int dirfd, const char *name, unsigned depth)
{
    int fd = openat(dirfd, name, DIR_FLAGS);
    if (fd < 0) {
        if (errno == ENOENT) return RM_GONE;
        if (errno == ENOTDIR || errno == ELOOP) return RM_NOT_DIR; /* replaced: unlink it */
        return err_sys(r->e, errno, "opening %s", r->path);
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int err = errno;
        close(fd);
        return err_sys(r->e, err, "reading %s", r->path);
    }
    if (st.st_dev != r->dev || depth >= MAX_DEPTH) {
        close(fd);
        return err_set(r->e, ERR_FAIL, "not removing %s: %s", r->path,
                       depth >= MAX_DEPTH ? "more than 64 directories deep"
                                          : "it is on another file system");
    }
    return rm_children(r, fd, depth + 1);
}

static int rm_entry(struct rm *r, int dirfd, const char *name, unsigned depth)
{
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return 0;
        if (errno != EISDIR) return err_sys(r->e, errno, "removing %s", r->path);
        int rc = rm_contents(r, dirfd, name, depth);
        if (rc == RM_GONE) return 0;
        if (rc == RM_NOT_DIR) continue;
        if (rc < 0) return rc;
        if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
        if (errno != ENOTEMPTY && errno != EEXIST && errno != ENOTDIR)
            return err_sys(r->e, errno, "removing directory %s", r->path);
        /* Written to, or replaced, while we emptied it: once more. */
    }
    return err_set(r->e, ERR_FAIL, "removing %s: it kept changing while it was removed", r->path);
}

int volfs_remove(int dirfd, const char *name, const char *shown, struct err *e)
{
    assert(name && *name && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, ".."));
    struct rm r = {.e = e};
    struct stat st;
    if (fstat(dirfd, &st) < 0) return err_sys(e, errno, "reading %s", shown);
    r.dev = st.st_dev;
    if (snprintf(r.path, sizeof r.path, "%s/%s", shown, name) >= (int)sizeof r.path)
        return err_set(e, ERR_FAIL, "%s/%s: path too long", shown, name);
    return rm_entry(&r, dirfd, name, 0);
}

/* --- the completion mark */

bool volfs_mark_name_ok(const char *uid)
{
    size_t n = uid ? strlen(uid) : 0;
    if (n == 0 || n > 128 || uid[0] == '.') return false;
    return strspn(uid, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* Creates the empty file `name` (0644) in the directory open at `dirfd`, as a new file. */
static int create_empty(int dirfd, const char *shown, const char *name, struct err *e)
{
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        int fd = openat(dirfd, name,
                        O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
        if (fd >= 0) {
            int rc = fchmod(fd, 0644) < 0
                         ? err_sys(e, errno, "setting the mode of %s/%s", shown, name)
                         : 0;
            if (close(fd) < 0 && rc == 0) rc = err_sys(e, errno, "writing %s/%s", shown, name);
            return rc;
        }
        if (errno != EEXIST) return err_sys(e, errno, "creating %s/%s", shown, name);
        if (volfs_remove(dirfd, name, shown, e) < 0) return e->code; /* placed there: ours */
    }
    return err_set(e, ERR_FAIL, "creating %s/%s: something else kept creating it", shown, name);
}

int volfs_write_mark(int volfd, const char *shown, const char *restore_uid, struct err *e)
{
    char dir[PATH_MAX];
    if (!volfs_mark_name_ok(restore_uid))
        return err_set(e, ERR_FAIL, "restore UID \"%s\" cannot name a completion mark",
                       restore_uid ? restore_uid : "");
    snprintf(dir, sizeof dir, "%s/%s", shown, VOLFS_MARK_DIR);
    if (volfs_remove(volfd, VOLFS_MARK_DIR, shown, e) < 0) return e->code;
    if (mkdirat(volfd, VOLFS_MARK_DIR, 0755) < 0 && errno != EEXIST)
        return err_sys(e, errno, "creating %s", dir);
    int fd = openat(volfd, VOLFS_MARK_DIR, DIR_FLAGS);
    if (fd < 0) return err_sys(e, errno, "opening %s (replaced while the mark was written?)", dir);
    int rc = fchmod(fd, 0755) < 0 ? err_sys(e, errno, "setting the mode of %s", dir)
                                  : create_empty(fd, dir, restore_uid, e);
    close(fd);
    return rc;
}
