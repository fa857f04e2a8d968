/* pv_treecmp.c - compares two directory trees on everything a restore must bring back. */
/*
 * Usage: pv_treecmp DIR_A DIR_B [--no-atime] [--no-owner] [--no-root] [--no-holes]
 *
 * Compares type, content, mode (incl. setuid/setgid/sticky), uid/gid, mtime and atime to the
 * nanosecond, extended attributes of every namespace this process can read (so POSIX ACLs),
 * symlink targets, device numbers, hard-link groups (the partition of paths into inodes), and
 * holes: B (the restored tree) may not allocate noticeably more than A. Each difference is
 * printed as "path: what differs (a vs b)". Exit status: 0 same, 1 different, 2 error.
 * Every entry is lstat'ed before it is read, and read with O_NOATIME where allowed, so reading
 * does not change the atimes compared. Symlink atimes are not compared: readlink() updates them.
 * --no-root skips the metadata of the two top directories themselves.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define READ_CHUNK (1 << 20)
/* B may allocate this much more than A before its holes count as lost (file systems round
 * allocations, and a restore may write a block that the original never allocated). */
#define HOLE_SLACK_MIN (256 * 1024)

struct ent {
    char *rel;
    dev_t dev;
    ino_t ino;
    const char *rep; /* first path of its hard-link group */
};

struct side {
    const char *root;
    struct ent *v;
    size_t n, cap;
};

struct cmp {
    bool atime, owner, root_meta, holes;
    struct side a, b;
    unsigned long ndiff;
    bool failed; /* an I/O error, not a difference */
    uint8_t *buf_a, *buf_b;
};

static void diff(struct cmp *c, const char *rel, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void diff(struct cmp *c, const char *rel, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", *rel ? rel : ".");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    c->ndiff++;
}

static void fail(struct cmp *c, const char *path, const char *what)
{
    fprintf(stderr, "pv_treecmp: %s: %s: %s\n", path, what, strerror(errno));
    c->failed = true;
}

static char *join(const char *root, const char *rel)
{
    char *p;
    if (asprintf(&p, "%s%s%s", root, *rel ? "/" : "", rel) < 0) {
        perror("pv_treecmp");
        exit(2);
    }
    return p;
}

static const char *type_name(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFREG:
        return "file";
    case S_IFDIR:
        return "directory";
    case S_IFLNK:
        return "symlink";
    case S_IFIFO:
        return "fifo";
    case S_IFCHR:
        return "char device";
    case S_IFBLK:
        return "block device";
    case S_IFSOCK:
        return "socket";
    default:
        return "unknown";
    }
}

static void add_ent(struct side *s, const char *rel, const struct stat *st)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) exit(2);
    }
    s->v[s->n].rel = strdup(rel);
    s->v[s->n].dev = st->st_dev;
    s->v[s->n].ino = st->st_ino;
    if (!s->v[s->n].rel) exit(2);
    s->n++;
}

static void cmp_time(struct cmp *c, const char *rel, const char *what, const struct timespec *a,
                     const struct timespec *b)
{
    if (a->tv_sec != b->tv_sec || a->tv_nsec != b->tv_nsec)
        diff(c, rel, "%s (%lld.%09ld vs %lld.%09ld)", what, (long long)a->tv_sec, a->tv_nsec,
             (long long)b->tv_sec, b->tv_nsec);
}

static void cmp_meta(struct cmp *c, const char *rel, const struct stat *a, const struct stat *b)
{
    bool link = S_ISLNK(a->st_mode);
    if (!link && (a->st_mode & 07777) != (b->st_mode & 07777))
        diff(c, rel, "mode (%04o vs %04o)", a->st_mode & 07777, b->st_mode & 07777);
    if (c->owner && a->st_uid != b->st_uid)
        diff(c, rel, "uid (%u vs %u)", (unsigned)a->st_uid, (unsigned)b->st_uid);
    if (c->owner && a->st_gid != b->st_gid)
        diff(c, rel, "gid (%u vs %u)", (unsigned)a->st_gid, (unsigned)b->st_gid);
    cmp_time(c, rel, "mtime", &a->st_mtim, &b->st_mtim);
    if (c->atime && !link) cmp_time(c, rel, "atime", &a->st_atim, &b->st_atim);
    if ((S_ISCHR(a->st_mode) || S_ISBLK(a->st_mode)) && a->st_rdev != b->st_rdev)
        diff(c, rel, "device number (%ju vs %ju)", (uintmax_t)a->st_rdev, (uintmax_t)b->st_rdev);
}

/* Names of the xattrs of a path, as a NUL-separated list (without following symlinks). */
static ssize_t list_xattrs(const char *path, char **out)
{
    *out = NULL;
    for (;;) {
        ssize_t n = llistxattr(path, NULL, 0);
        if (n <= 0) return n;
        char *l = malloc((size_t)n);
        if (!l) return -1;
        ssize_t m = llistxattr(path, l, (size_t)n);
        if (m >= 0) {
            *out = l;
            return m;
        }
        free(l);
        if (errno != ERANGE) return -1;
    }
}

static ssize_t get_xattr(const char *path, const char *name, char **out)
{
    *out = NULL;
    for (;;) {
        ssize_t n = lgetxattr(path, name, NULL, 0);
        if (n < 0) return n;
        char *v = malloc((size_t)n + 1);
        if (!v) return -1;
        ssize_t m = lgetxattr(path, name, v, (size_t)n);
        if (m >= 0) {
            *out = v;
            return m;
        }
        free(v);
        if (errno != ERANGE) return -1;
    }
}

static bool in_list(const char *list, ssize_t len, const char *name)
{
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1) {
        if (strcmp(list + i, name) == 0) return true;
    }
    return false;
}

static void cmp_xattrs(struct cmp *c, const char *rel, const char *pa, const char *pb)
{
    char *la, *lb;
    ssize_t na = list_xattrs(pa, &la), nb = list_xattrs(pb, &lb);
    if (na < 0 && errno != ENOTSUP) fail(c, pa, "listing xattrs");
    if (nb < 0 && errno != ENOTSUP) fail(c, pb, "listing xattrs");
    for (ssize_t i = 0; i < na; i += (ssize_t)strlen(la + i) + 1) {
        const char *name = la + i;
        if (!in_list(lb, nb, name)) {
            diff(c, rel, "xattr %s (present vs absent)", name);
            continue;
        }
        char *va, *vb;
        ssize_t sa = get_xattr(pa, name, &va), sb = get_xattr(pb, name, &vb);
        if (sa < 0 || sb < 0)
            fail(c, rel, "reading xattr");
        else if (sa != sb || memcmp(va, vb, (size_t)sa) != 0)
            diff(c, rel, "xattr %s value (%zd bytes vs %zd bytes, contents differ)", name, sa, sb);
        free(va);
        free(vb);
    }
    for (ssize_t i = 0; i < nb; i += (ssize_t)strlen(lb + i) + 1) {
        if (!in_list(la, na, lb + i)) diff(c, rel, "xattr %s (absent vs present)", lb + i);
    }
    free(la);
    free(lb);
}

/* The end of the run (data or hole) that contains `pos`. */
static off_t run_end(int fd, off_t pos, off_t size)
{
    off_t d = lseek(fd, pos, SEEK_DATA);
    if (d < 0) return size; /* ENXIO: only a hole from here */
    if (d > pos) return d;
    off_t h = lseek(fd, pos, SEEK_HOLE);
    return h < 0 ? size : h;
}

/* Opens for reading without touching atime when allowed (owner or root), so that comparing
 * twice gives the same answer. */
static int open_noatime(const char *path, int flags)
{
    int fd = open(path, flags | O_NOATIME | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EPERM) fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC);
    return fd;
}

static bool read_full(int fd, uint8_t *p, size_t n, off_t off)
{
    while (n) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return true;
}

/* Compares contents, skipping ranges that are holes in both (so an 8 GiB sparse file with
 * little data compares in time proportional to its data). */
static void cmp_content(struct cmp *c, const char *rel, const char *pa, const char *pb,
                        const struct stat *sa, const struct stat *sb)
{
    if (sa->st_size != sb->st_size) {
        diff(c, rel, "size (%lld vs %lld)", (long long)sa->st_size, (long long)sb->st_size);
        return;
    }
    int fa = open_noatime(pa, O_RDONLY), fb = open_noatime(pb, O_RDONLY);
    if (fa < 0 || fb < 0) {
        fail(c, fa < 0 ? pa : pb, "open");
        goto out;
    }
    off_t size = sa->st_size, pos = 0;
    while (pos < size) {
        off_t da = lseek(fa, pos, SEEK_DATA), db = lseek(fb, pos, SEEK_DATA);
        if (da < 0) da = size;
        if (db < 0) db = size;
        off_t start = da < db ? da : db;
        if (start >= size) break;
        off_t ea = run_end(fa, start, size), eb = run_end(fb, start, size);
        off_t end = ea < eb ? ea : eb;
        for (off_t o = start; o < end;) {
            size_t n = (size_t)(end - o < READ_CHUNK ? end - o : READ_CHUNK);
            if (!read_full(fa, c->buf_a, n, o) || !read_full(fb, c->buf_b, n, o)) {
                fail(c, rel, "reading");
                goto out;
            }
            if (memcmp(c->buf_a, c->buf_b, n) != 0) {
                size_t i = 0;
                while (c->buf_a[i] == c->buf_b[i])
                    i++;
                diff(c, rel, "content (first difference at byte %lld: 0x%02x vs 0x%02x)",
                     (long long)(o + (off_t)i), c->buf_a[i], c->buf_b[i]);
                goto out;
            }
            o += (off_t)n;
        }
        pos = end;
    }
    if (c->holes) {
        long long aa = (long long)sa->st_blocks * 512, ab = (long long)sb->st_blocks * 512;
        long long slack = aa / 16 > HOLE_SLACK_MIN ? aa / 16 : HOLE_SLACK_MIN;
        if (ab > aa + slack) diff(c, rel, "allocated bytes, holes lost (%lld vs %lld)", aa, ab);
    }
out:
    if (fa >= 0) close(fa);
    if (fb >= 0) close(fb);
}

static void cmp_symlink(struct cmp *c, const char *rel, const char *pa, const char *pb)
{
    char ta[4097], tb[4097];
    ssize_t na = readlink(pa, ta, sizeof ta - 1), nb = readlink(pb, tb, sizeof tb - 1);
    if (na < 0 || nb < 0) {
        fail(c, rel, "readlink");
        return;
    }
    ta[na] = tb[nb] = 0;
    if (na != nb || memcmp(ta, tb, (size_t)na) != 0)
        diff(c, rel, "symlink target (%s vs %s)", ta, tb);
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Sorted names of a directory's entries (without "." and ".."). */
static char **list_dir(struct cmp *c, const char *path, size_t *n)
{
    *n = 0;
    int fd = open_noatime(path, O_RDONLY | O_DIRECTORY);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        fail(c, path, "opendir");
        if (fd >= 0) close(fd);
        return NULL;
    }
    char **v = NULL;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 32;
            v = realloc(v, cap * sizeof *v);
            if (!v) exit(2);
        }
        if (!(v[(*n)++] = strdup(de->d_name))) exit(2);
    }
    closedir(d);
    if (*n) qsort(v, *n, sizeof *v, cmp_str);
    return v;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void cmp_entry(struct cmp *c, const char *rel);

static void cmp_dir(struct cmp *c, const char *rel, const char *pa, const char *pb)
{
    size_t na, nb;
    char **la = list_dir(c, pa, &na), **lb = list_dir(c, pb, &nb);
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        int o = i == na ? 1 : j == nb ? -1 : strcmp(la[i], lb[j]);
        const char *name = o <= 0 ? la[i] : lb[j];
        char *sub = *rel ? NULL : strdup(name);
        if (*rel && asprintf(&sub, "%s/%s", rel, name) < 0) exit(2);
        if (!sub) exit(2);
        if (o < 0)
            diff(c, sub, "presence (present vs absent)");
        else if (o > 0)
            diff(c, sub, "presence (absent vs present)");
        else
            cmp_entry(c, sub);
        free(sub);
        i += o <= 0;
        j += o >= 0;
    }
    free_list(la, na);
    free_list(lb, nb);
}

static void cmp_entry(struct cmp *c, const char *rel)
{
    char *pa = join(c->a.root, rel), *pb = join(c->b.root, rel);
    struct stat sa, sb;
    if (lstat(pa, &sa) < 0 || lstat(pb, &sb) < 0) {
        fail(c, rel, "lstat");
        goto out;
    }
    if ((sa.st_mode & S_IFMT) != (sb.st_mode & S_IFMT)) {
        diff(c, rel, "type (%s vs %s)", type_name(sa.st_mode), type_name(sb.st_mode));
        goto out;
    }
    if (*rel || c->root_meta) {
        cmp_meta(c, rel, &sa, &sb);
        cmp_xattrs(c, rel, pa, pb);
    }
    if (!S_ISDIR(sa.st_mode)) {
        add_ent(&c->a, rel, &sa);
        add_ent(&c->b, rel, &sb);
    }
    if (S_ISDIR(sa.st_mode))
        cmp_dir(c, rel, pa, pb);
    else if (S_ISREG(sa.st_mode))
        cmp_content(c, rel, pa, pb, &sa, &sb);
    else if (S_ISLNK(sa.st_mode))
        cmp_symlink(c, rel, pa, pb);
out:
    free(pa);
    free(pb);
}

static int cmp_inode(const void *x, const void *y)
{
    const struct ent *a = x, *b = y;
    if (a->dev != b->dev) return a->dev < b->dev ? -1 : 1;
    if (a->ino != b->ino) return a->ino < b->ino ? -1 : 1;
    return strcmp(a->rel, b->rel);
}

static int cmp_rel(const void *x, const void *y)
{
    return strcmp(((const struct ent *)x)->rel, ((const struct ent *)y)->rel);
}

/* Sets each entry's rep to the first path (in sort order) of its hard-link group, then sorts
 * the entries by path. */
static void set_reps(struct side *s)
{
    qsort(s->v, s->n, sizeof *s->v, cmp_inode);
    for (size_t i = 0, first = 0; i < s->n; i++) {
        if (s->v[i].dev != s->v[first].dev || s->v[i].ino != s->v[first].ino) first = i;
        s->v[i].rep = s->v[first].rel;
    }
    qsort(s->v, s->n, sizeof *s->v, cmp_rel);
}

static void cmp_links(struct cmp *c)
{
    if (c->a.n != c->b.n) return; /* presence differences are already reported */
    set_reps(&c->a);
    set_reps(&c->b);
    for (size_t i = 0; i < c->a.n; i++) {
        if (strcmp(c->a.v[i].rel, c->b.v[i].rel) != 0) break;
        if (strcmp(c->a.v[i].rep, c->b.v[i].rep) != 0)
            diff(c, c->a.v[i].rel, "hard-link group (same inode as %s vs as %s)", c->a.v[i].rep,
                 c->b.v[i].rep);
    }
}

int main(int argc, char **argv)
{
    struct cmp c = {.atime = true, .owner = true, .root_meta = true, .holes = true};
    const char *dirs[2];
    int nd = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-atime"))
            c.atime = false;
        else if (!strcmp(argv[i], "--no-owner"))
            c.owner = false;
        else if (!strcmp(argv[i], "--no-root"))
            c.root_meta = false;
        else if (!strcmp(argv[i], "--no-holes"))
            c.holes = false;
        else if (argv[i][0] != '-' && nd < 2)
            dirs[nd++] = argv[i];
        else
            nd = 3;
    }
    if (nd != 2) {
        fprintf(stderr, "usage: pv_treecmp DIR_A DIR_B [--no-atime] [--no-owner] [--no-root] "
                        "[--no-holes]\n");
        return 2;
    }
    c.a.root = dirs[0];
    c.b.root = dirs[1];
    c.buf_a = malloc(READ_CHUNK);
    c.buf_b = malloc(READ_CHUNK);
    if (!c.buf_a || !c.buf_b) return 2;
    cmp_entry(&c, "");
    cmp_links(&c);
    for (size_t i = 0; i < c.a.n; i++)
        free(c.a.v[i].rel);
    for (size_t i = 0; i < c.b.n; i++)
        free(c.b.v[i].rel);
    free(c.a.v);
    free(c.b.v);
    free(c.buf_a);
    free(c.buf_b);
    if (c.failed) return 2;
    return c.ndiff ? 1 : 0;
}
