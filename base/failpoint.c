/* failpoint.c - the test layer under podvault's durable file operations; see failpoint.h.
 * Only fp_parse is compiled in a normal build. */
#include "base/failpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int fp_parse(const char *spec, struct fp_config *out, struct err *e)
{
    static const struct {
        const char *name;
        enum fp_mode mode;
    } modes[] = {{"crash:", FP_CRASH},
                 {"powerloss:", FP_POWERLOSS},
                 {"enospc:", FP_ENOSPC},
                 {"eio:", FP_EIO}};
    *out = (struct fp_config){.mode = FP_OFF};
    if (!spec || !*spec) return 0;
    if (strcmp(spec, "count") == 0) {
        out->mode = FP_COUNT;
        return 0;
    }
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        size_t len = strlen(modes[i].name);
        if (strncmp(spec, modes[i].name, len) != 0) continue;
        const char *num = spec + len;
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(num, &end, 10);
        if (*num < '1' || *num > '9' || errno || *end || n == 0) break;
        *out = (struct fp_config){.mode = modes[i].mode, .at = n};
        return 0;
    }
    return err_set(e, ERR_FAIL,
                   "PV_FAILPOINT \"%.60s\": expected count, crash:N, powerloss:N, enospc:N or "
                   "eio:N with N >= 1",
                   spec);
}

#ifdef PV_FAILPOINTS
#include <ftw.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>

/* What an operation is, for counting, failing and the power-loss log. */
enum op {
    OP_WRITE,
    OP_FSYNC,
    OP_CREATE,
    OP_RENAME,
    OP_LINK,
    OP_UNLINK,
    OP_MKDIR,
    OP_TRUNCATE,
};
static const char *const op_names[] = {"write", "fsync",  "create", "rename",
                                       "link",  "unlink", "mkdir",  "truncate"};

/* A file written since its last fsync: its data past `synced` is lost at a power loss. */
struct dirty {
    dev_t dev;
    ino_t ino;
    int fd; /* a duplicate, so the file can be truncated even after its owner closed it */
    off_t synced;
    struct dirty *next;
};

/* A name changed in a directory not fsynced since: reverted at a power loss. */
struct nsop {
    enum op op;
    dev_t dir_dev; /* the directory whose fsync makes it durable */
    ino_t dir_ino;
    char *a;     /* the name made (create, mkdir, link, rename's target) or removed (unlink) */
    char *b;     /* rename's source */
    char *saved; /* a hidden link to what was replaced or removed, put back at a power loss */
    struct nsop *prev;
};

static struct {
    pthread_mutex_t lock;
    struct fp_config cfg;
    uint64_t ops;
    struct dirty *dirty;
    struct nsop *last; /* newest first */
    uint64_t saves;
} fp = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    if (n > 0) (void)!write(STDERR_FILENO, line, (size_t)n);
}

static void report(void)
{
    if (fp.cfg.mode == FP_COUNT) say("podvault failpoints: %" PRIu64 " operations\n", fp.ops);
}

void fp_start(const struct fp_config *c)
{
    fp.cfg = *c;
    if (c->mode != FP_OFF) atexit(report);
}

uint64_t fp_ops(void)
{
    pthread_mutex_lock(&fp.lock);
    uint64_t n = fp.ops;
    pthread_mutex_unlock(&fp.lock);
    return n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    return remove(path) < 0 ? 0 : 0;
}

/* Undoes what was not made durable (the lock is held for good). */
static void lose_power(void)
{
    for (struct dirty *d = fp.dirty; d; d = d->next)
        if (ftruncate(d->fd, d->synced) < 0) say("podvault failpoints: truncating: %m\n");
    for (struct nsop *o = fp.last; o; o = o->prev) {
        int rc = 0;
        switch (o->op) {
        case OP_CREATE:
        case OP_LINK:
            rc = unlink(o->a);
            break;
        case OP_MKDIR:
            rc = nftw(o->a, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
            break;
        case OP_RENAME:
            rc = rename(o->a, o->b);
            if (rc == 0 && o->saved) rc = rename(o->saved, o->a);
            break;
        case OP_UNLINK:
            rc = rename(o->saved, o->a);
            break;
        default:
            break;
        }
        if (rc < 0) say("podvault failpoints: undoing the %s of %s: %m\n", op_names[o->op], o->a);
    }
}

/* Names the file open as fd (for the messages below) in buf; "?" when it cannot. */
static const char *fd_path(int fd, char *buf, size_t size)
{
    char proc[32];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, buf, size - 1);
    if (n < 0) return "?";
    buf[n] = 0;
    return buf;
}

/* Counts an operation on `what`, or on the file open as fd when what is NULL (the lock is
 * held), and acts on it: 0 to go on, -1 with errno to fail. The operation that is failed on
 * purpose is named on stderr, so that a test can tell which one its command met. */
static int hit(enum op op, const char *what, int fd)
{
    uint64_t n = ++fp.ops;
    enum fp_mode m = fp.cfg.mode;
    char buf[512];
    if (!what && n == fp.cfg.at && m != FP_OFF && m != FP_COUNT)
        what = fd_path(fd, buf, sizeof buf);
    if ((m == FP_EIO || m == FP_ENOSPC) && n == fp.cfg.at)
        say("podvault failpoints: %s at operation %" PRIu64 " (%s %s)\n",
            m == FP_EIO ? "EIO" : "ENOSPC", n, op_names[op], what);
    if ((m == FP_CRASH || m == FP_POWERLOSS) && n == fp.cfg.at) {
        say("podvault failpoints: %s at operation %" PRIu64 " (%s %s)\n",
            m == FP_CRASH ? "crash" : "power loss", n, op_names[op], what);
        if (m == FP_POWERLOSS) lose_power();
        _exit(FP_CRASH_EXIT);
    }
    if (m == FP_EIO && n == fp.cfg.at) {
        errno = EIO;
        return -1;
    }
    bool grows = op == OP_WRITE || op == OP_CREATE || op == OP_MKDIR || op == OP_LINK;
    if (m == FP_ENOSPC && (n == fp.cfg.at || (n > fp.cfg.at && grows))) {
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

static bool logging(void)
{
    return fp.cfg.mode == FP_POWERLOSS;
}

/* Logs a name change in the directory of `path` (the lock is held). Out of memory or a
 * directory that cannot be read leaves it unlogged: a test then reports the undone state. */
static void log_ns(enum op op, const char *a, const char *b, char *saved)
{
    struct nsop *o = calloc(1, sizeof *o);
    char *dir = strdup(a);
    struct stat st;
    if (!o || !dir || stat(dirname(dir), &st) < 0) {
        say("podvault failpoints: cannot log the %s of %s\n", op_names[op], a);
        free(o);
        free(dir);
        free(saved);
        return;
    }
    free(dir);
    *o = (struct nsop){.op = op, .dir_dev = st.st_dev, .dir_ino = st.st_ino, .a = strdup(a)};
    o->b = b ? strdup(b) : NULL;
    o->saved = saved;
    o->prev = fp.last;
    fp.last = o;
}

/* Keeps what `path` names under a hidden name of its directory, to put it back at a power
 * loss; NULL when it names nothing. */
static char *save_old(const char *path)
{
    char *s = NULL;
    char *dir = strdup(path);
    if (!dir) return NULL;
    if (asprintf(&s, "%s/.tmp-fpsave-%" PRIu64, dirname(dir), ++fp.saves) < 0) s = NULL;
    free(dir);
    if (s && link(path, s) < 0) {
        free(s);
        s = NULL;
    }
    return s;
}

static void note_write(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) return;
    for (struct dirty *d = fp.dirty; d; d = d->next)
        if (d->dev == st.st_dev && d->ino == st.st_ino) return;
    struct dirty *d = calloc(1, sizeof *d);
    if (!d) return;
    *d = (struct dirty){.dev = st.st_dev, .ino = st.st_ino, .synced = st.st_size};
    d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d->fd < 0) {
        free(d);
        return;
    }
    d->next = fp.dirty;
    fp.dirty = d;
}

/* An fsync made a file's data, or a directory's names, durable. */
static void note_sync(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return;
    for (struct dirty **p = &fp.dirty; *p;) {
        struct dirty *d = *p;
        if (d->dev == st.st_dev && d->ino == st.st_ino) {
            *p = d->next;
            close(d->fd);
            free(d);
        } else {
            p = &d->next;
        }
    }
    if (!S_ISDIR(st.st_mode)) return;
    for (struct nsop **p = &fp.last; *p;) {
        struct nsop *o = *p;
        if (o->dir_dev == st.st_dev && o->dir_ino == st.st_ino) {
            *p = o->prev;
            if (o->saved) (void)!unlink(o->saved);
            free(o->a);
            free(o->b);
            free(o->saved);
            free(o);
        } else {
            p = &o->prev;
        }
    }
}

static void enter(void)
{
    pthread_mutex_lock(&fp.lock);
}

/* Leaves the lock, keeping errno; returns rc. */
static int leave(int rc)
{
    int saved = errno;
    pthread_mutex_unlock(&fp.lock);
    errno = saved;
    return rc;
}

int fp_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    enter();
    int rc = hit(OP_WRITE, NULL, fd);
    if (rc == 0 && logging()) note_write(fd);
    if (rc == 0) rc = fdio_pwrite_all(fd, p, n, off);
    return leave(rc);
}

int fp_fsync(int fd)
{
    enter();
    int rc = hit(OP_FSYNC, NULL, fd);
    if (rc == 0) rc = fsync(fd);
    if (rc == 0 && logging()) note_sync(fd);
    return leave(rc);
}

int fp_ftruncate(int fd, off_t len)
{
    enter();
    int rc = hit(OP_TRUNCATE, NULL, fd);
    if (rc == 0 && logging()) note_write(fd);
    if (rc == 0) rc = ftruncate(fd, len);
    return leave(rc);
}

int fp_open_create(const char *path, int flags, mode_t mode)
{
    enter();
    int rc = hit(OP_CREATE, path, -1);
    if (rc < 0) return leave(rc);
    bool existed = access(path, F_OK) == 0;
    rc = open(path, flags | O_CREAT, mode);
    if (rc >= 0 && !existed && logging()) log_ns(OP_CREATE, path, NULL, NULL);
    return leave(rc);
}

static int rename_logged(const char *from, const char *to, bool replace)
{
    enter();
    int rc = hit(OP_RENAME, to, -1);
    if (rc < 0) return leave(rc);
    char *saved = replace && logging() ? save_old(to) : NULL;
    rc = replace ? rename(from, to) : renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
    if (rc == 0 && logging()) {
        log_ns(OP_RENAME, to, from, saved);
    } else if (saved) {
        (void)!unlink(saved);
        free(saved);
    }
    return leave(rc);
}

int fp_rename(const char *from, const char *to)
{
    return rename_logged(from, to, true);
}

int fp_rename_noreplace(const char *from, const char *to)
{
    return rename_logged(from, to, false);
}

/* link(from, to), or with from NULL, linkat of the unnamed file open as fd. */
static int link_logged(const char *from, int fd, const char *to)
{
    char proc[32];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    enter();
    int rc = hit(OP_LINK, to, -1);
    if (rc == 0)
        rc = from ? link(from, to) : linkat(AT_FDCWD, proc, AT_FDCWD, to, AT_SYMLINK_FOLLOW);
    if (rc == 0 && logging()) log_ns(OP_LINK, to, NULL, NULL);
    return leave(rc);
}

int fp_link(const char *from, const char *to)
{
    return link_logged(from, -1, to);
}

int fp_link_fd(int fd, const char *to)
{
    return link_logged(NULL, fd, to);
}

int fp_unlink(const char *path)
{
    enter();
    int rc = hit(OP_UNLINK, path, -1);
    if (rc < 0) return leave(rc);
    char *saved = logging() ? save_old(path) : NULL;
    rc = unlink(path);
    if (rc == 0 && saved) {
        log_ns(OP_UNLINK, path, NULL, saved);
    } else if (saved) {
        (void)!unlink(saved);
        free(saved);
    }
    return leave(rc);
}

int fp_mkdir(const char *path, mode_t mode)
{
    enter();
    int rc = hit(OP_MKDIR, path, -1);
    if (rc == 0) rc = mkdir(path, mode);
    if (rc == 0 && logging()) log_ns(OP_MKDIR, path, NULL, NULL);
    return leave(rc);
}

int fp_unlinkat(int dirfd, const char *name, int flags)
{
    enter();
    int rc = hit(OP_UNLINK, name, -1);
    if (rc == 0) rc = unlinkat(dirfd, name, flags);
    return leave(rc);
}

int fp_mkdirat(int dirfd, const char *name, mode_t mode)
{
    enter();
    int rc = hit(OP_MKDIR, name, -1);
    if (rc == 0) rc = mkdirat(dirfd, name, mode);
    return leave(rc);
}
#endif
