/* test_restorer.c - restores of snapshots built here (and of hostile ones from pv_hostile),
 * checked against the source tree with pv_treecmp and by direct inspection. */
/*
 * Snapshots are built by a small walker in this file (stat, xattrs, holes via SEEK_DATA, fixed
 * 1 MiB chunks) so that these tests depend only on store/tree/snapshot, not on the archiver.
 * Hostile snapshots come from the pv_hostile tool (found next to this test in the build
 * directory, or through $PV_BUILD_DIR); each restore must refuse the attack, report it, go on,
 * and write nothing outside its target.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/err.h"
#include "repo/config.h"
#include "repo/crypt.h"
#include "repo/repo.h"
#include "repo/restorer.h"
#include "repo/snapshot.h"
#include "repo/store.h"
#include "repo/tree.h"

#define PASSWORD "restorer test"
#define CHUNK (1u << 20)
#define GiB (1ull << 30)

struct fx {
    char dir[512]; /* everything lives below */
    char repo[600];
    char src[600];
    char outside[600]; /* sentinel directory attacks aim at */
    struct repo *r;
    struct store *st;
    struct snapshot snap; /* of src, built by backup() */
    char *paths[1];
};

struct rec {
    char **lines;
    size_t n;
    unsigned progress_calls;
    struct restore_progress last;
};

/* ---- helpers ---- */

static void pathf(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < size);
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

static void put_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static void put_random(const char *path, size_t len, uint64_t seed)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    fill_random(p, len, seed);
    put_file(path, p, len, 0644);
    free(p);
}

/* Reads a whole file without touching its atime (which the comparisons check). */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NOATIME);
    if (fd < 0 && errno == EPERM) fd = open(path, O_RDONLY | O_NOFOLLOW);
    if (fd < 0) return NULL;
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *p = malloc((size_t)st.st_size + 1);
    assert_non_null(p);
    assert_int_equal(read(fd, p, (size_t)st.st_size), st.st_size);
    p[st.st_size] = 0;
    close(fd);
    if (len) *len = (size_t)st.st_size;
    return p;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void set_time(const char *path, int64_t sec, long nsec)
{
    struct timespec ts[2] = {{sec - 1000, nsec / 2}, {sec, nsec}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void rm_rf(const char *path)
{
    char cmd[1200];
    pathf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static void on_report(void *ctx, const char *path, const char *msg)
{
    struct rec *rc = ctx;
    char *line;
    assert_true(asprintf(&line, "%s: %s", path, msg) > 0);
    rc->lines = realloc(rc->lines, (rc->n + 1) * sizeof *rc->lines);
    assert_non_null(rc->lines);
    rc->lines[rc->n++] = line;
}

static void on_progress(void *ctx, const struct restore_progress *p)
{
    struct rec *rc = ctx;
    rc->progress_calls++;
    rc->last = *p;
}

static bool has_report(const struct rec *rc, const char *sub)
{
    for (size_t i = 0; i < rc->n; i++) {
        if (strstr(rc->lines[i], sub)) return true;
    }
    return false;
}

static void print_reports(const struct rec *rc)
{
    for (size_t i = 0; i < rc->n; i++)
        print_message("  report: %.300s\n", rc->lines[i]);
}

static void rec_free(struct rec *rc)
{
    for (size_t i = 0; i < rc->n; i++)
        free(rc->lines[i]);
    free(rc->lines);
    memset(rc, 0, sizeof *rc);
}

/* A tool built next to the tests (ctest runs them in the build directory). */
static bool tool_path(char *out, size_t size, const char *name)
{
    const char *bd = getenv("PV_BUILD_DIR");
    pathf(out, size, "%s/%s", bd ? bd : ".", name);
    return access(out, X_OK) == 0;
}

/* Runs pv_treecmp; returns its exit status, or -1 when the tool is not built. Its output is
 * printed, and kept in `out` when given. */
static int treecmp_out(const char *a, const char *b, const char *flags, char *out, size_t size)
{
    char tool[1024], cmd[3000];
    if (!tool_path(tool, sizeof tool, "pv_treecmp")) return -1;
    pathf(cmd, sizeof cmd, "'%s' '%s' '%s' %s", tool, a, b, flags);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[4096];
    size_t used = 0;
    if (out) out[0] = 0;
    while (fgets(line, sizeof line, p)) {
        print_message("  pv_treecmp: %s", line);
        size_t l = strlen(line);
        if (out && used + l < size) {
            memcpy(out + used, line, l + 1);
            used += l;
        }
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

static int treecmp(const char *a, const char *b, const char *flags)
{
    return treecmp_out(a, b, flags, NULL, 0);
}

static void expect_same(const char *a, const char *b, const char *flags)
{
    int rc = treecmp(a, b, flags);
    if (rc < 0)
        print_message("pv_treecmp not found (set PV_BUILD_DIR); comparison skipped\n");
    else
        assert_int_equal(rc, 0);
}

/* ---- repository and a minimal backup ---- */

static void fx_open(struct fx *f)
{
    struct err e;
    err_clear(&e);
    if (repo_open(f->repo, PASSWORD, NULL, &f->r, &e) < 0) fail_msg("repo_open: %s", e.msg);
    if (repo_load_index(f->r, &e) < 0) fail_msg("repo_load_index: %s", e.msg);
    if (store_new(f->r, &f->st, &e) < 0) fail_msg("store_new: %s", e.msg);
}

static void fx_close(struct fx *f)
{
    if (f->st) store_free(f->st);
    if (f->r) repo_close(f->r);
    f->st = NULL;
    f->r = NULL;
}

/* Makes everything stored so far readable: flush, then reopen so the index is reloaded. */
static void fx_commit(struct fx *f)
{
    struct err e;
    err_clear(&e);
    if (store_flush(f->st, &e) < 0) fail_msg("store_flush: %s", e.msg);
    fx_close(f);
    fx_open(f);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    const char *tmp = getenv("TMPDIR");
    pathf(f->dir, sizeof f->dir, "%s/pv_restorer_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(chmod(f->dir, 0755), 0);
    pathf(f->repo, sizeof f->repo, "%s/repo", f->dir);
    pathf(f->src, sizeof f->src, "%s/src", f->dir);
    pathf(f->outside, sizeof f->outside, "%s/outside", f->dir);
    assert_int_equal(mkdir(f->src, 0755), 0);
    assert_int_equal(mkdir(f->outside, 0755), 0);
    char keep[700];
    pathf(keep, sizeof keep, "%s/keep", f->outside);
    put_file(keep, "sentinel\n", 9, 0644);

    struct err e;
    err_clear(&e);
    if (crypt_init(&e) < 0) fail_msg("crypt_init: %s", e.msg);
    struct repo_create_params p;
    memset(&p, 0, sizeof p);
    config_default(&p.config);
    keyfile_params_default(&p.kdf);
    if (repo_create(f->repo, PASSWORD, &p, NULL, &e) < 0) fail_msg("repo_create: %s", e.msg);
    fx_open(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->r) fx_close(f);
    snap_free(&f->snap);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void store_blob(struct fx *f, enum blob_type type, const void *p, size_t len, struct oid *id)
{
    struct err e;
    err_clear(&e);
    crypt_blob_id(repo_keys(f->r), p, len, id, NULL);
    if (store_add(f->st, type, id, p, len, NULL, &e) < 0) fail_msg("store_add: %s", e.msg);
}

static void store_tree(struct fx *f, struct tree *t, struct oid *id)
{
    struct buf b = BUF_INIT;
    struct err e;
    err_clear(&e);
    tree_sort(t);
    if (tree_encode(t, &b, &e) < 0) fail_msg("tree_encode: %s", e.msg);
    store_blob(f, BLOB_TREE, b.data, b.len, id);
    buf_free(&b);
    tree_free(t);
}

static void read_xattrs(const char *path, struct tree_node *n)
{
    char list[65536];
    ssize_t len = llistxattr(path, list, sizeof list);
    if (len <= 0) return;
    size_t count = 0;
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1)
        count++;
    n->xattrs = calloc(count, sizeof *n->xattrs);
    assert_non_null(n->xattrs);
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1) {
        struct tree_xattr *x = &n->xattrs[n->n_xattrs++];
        x->name = strdup(list + i);
        ssize_t vl = lgetxattr(path, list + i, NULL, 0);
        assert_true(vl >= 0);
        x->value = malloc((size_t)vl + 1);
        assert_int_equal(lgetxattr(path, list + i, x->value, (size_t)vl), vl);
        x->value_len = (size_t)vl;
    }
}

static void add_extent(struct tree_node *n, const struct tree_extent *x)
{
    n->content = realloc(n->content, (n->n_content + 1) * sizeof *n->content);
    assert_non_null(n->content);
    n->content[n->n_content++] = *x;
}

/* Content as data extents of at most CHUNK bytes and hole extents, found with SEEK_DATA. */
static void backup_content(struct fx *f, const char *path, struct tree_node *n)
{
    int fd = open(path, O_RDONLY | O_NOATIME | O_NOFOLLOW);
    assert_true(fd >= 0);
    uint8_t *buf = malloc(CHUNK);
    assert_non_null(buf);
    off_t size = (off_t)n->size, pos = 0;
    while (pos < size) {
        off_t d = lseek(fd, pos, SEEK_DATA);
        if (d < 0) d = size;
        if (d > pos) add_extent(n, &(struct tree_extent){.hole = true, .len = (uint64_t)(d - pos)});
        pos = d;
        if (pos >= size) break;
        off_t h = lseek(fd, pos, SEEK_HOLE);
        if (h < 0) h = size;
        while (pos < h) {
            size_t len = (size_t)(h - pos < CHUNK ? h - pos : CHUNK);
            assert_int_equal(pread(fd, buf, len, pos), (ssize_t)len);
            struct tree_extent x = {.len = len};
            store_blob(f, BLOB_DATA, buf, len, &x.id);
            add_extent(n, &x);
            pos += (off_t)len;
        }
    }
    free(buf);
    close(fd);
}

static void backup_dir(struct fx *f, const char *path, struct oid *id);

static void backup_node(struct fx *f, const char *path, const char *name, struct tree *t)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    struct tree_node n = {0};
    n.name_len = strlen(name);
    n.name = (uint8_t *)strdup(name);
    n.mode = st.st_mode & 07777;
    n.uid = st.st_uid;
    n.gid = st.st_gid;
    char tmp[4096];
    struct passwd pw, *pwr = NULL;
    struct group gr, *grr = NULL;
    if (getpwuid_r(st.st_uid, &pw, tmp, sizeof tmp, &pwr) == 0 && pwr) n.user = strdup(pw.pw_name);
    if (getgrgid_r(st.st_gid, &gr, tmp, sizeof tmp, &grr) == 0 && grr) n.group = strdup(gr.gr_name);
    n.mtime_sec = st.st_mtim.tv_sec;
    n.mtime_nsec = (uint32_t)st.st_mtim.tv_nsec;
    n.atime_sec = st.st_atim.tv_sec;
    n.atime_nsec = (uint32_t)st.st_atim.tv_nsec;
    n.ctime_sec = st.st_ctim.tv_sec;
    n.ctime_nsec = (uint32_t)st.st_ctim.tv_nsec;
    n.inode = st.st_ino;
    n.dev = st.st_dev;
    n.nlink = st.st_nlink;
    read_xattrs(path, &n);
    switch (st.st_mode & S_IFMT) {
    case S_IFREG:
        n.type = TREE_FILE;
        n.size = (uint64_t)st.st_size;
        backup_content(f, path, &n);
        break;
    case S_IFDIR:
        n.type = TREE_DIR;
        backup_dir(f, path, &n.subtree);
        break;
    case S_IFLNK: {
        n.type = TREE_SYMLINK;
        ssize_t l = readlink(path, tmp, sizeof tmp);
        assert_true(l > 0);
        n.link_target = malloc((size_t)l);
        memcpy(n.link_target, tmp, (size_t)l);
        n.link_len = (size_t)l;
        break;
    }
    case S_IFIFO:
        n.type = TREE_FIFO;
        break;
    case S_IFCHR:
        n.type = TREE_CHARDEV;
        break;
    case S_IFBLK:
        n.type = TREE_BLOCKDEV;
        break;
    case S_IFSOCK:
        n.type = TREE_SOCKET;
        break;
    }
    if (n.type == TREE_CHARDEV || n.type == TREE_BLOCKDEV) n.rdev = st.st_rdev;
    struct err e;
    err_clear(&e);
    if (tree_add(t, &n, &e) < 0) fail_msg("tree_add: %s", e.msg);
}

static void backup_dir(struct fx *f, const char *path, struct oid *id)
{
    struct tree t = TREE_INIT;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOATIME);
    assert_true(fd >= 0);
    DIR *d = fdopendir(fd);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char sub[4096];
        pathf(sub, sizeof sub, "%s/%s", path, de->d_name);
        backup_node(f, sub, de->d_name, &t);
    }
    closedir(d);
    store_tree(f, &t, id);
}

/* Snapshot of f->src (not saved: restore_snapshot takes it as it is). */
static void backup(struct fx *f)
{
    snap_free(&f->snap);
    memset(&f->snap, 0, sizeof f->snap);
    backup_dir(f, f->src, &f->snap.tree);
    struct stat st;
    assert_int_equal(stat(f->src, &st), 0);
    f->snap.root = (struct snap_root){.present = true,
                                      .mode = st.st_mode & 07777,
                                      .uid = st.st_uid,
                                      .gid = st.st_gid,
                                      .mtime_sec = st.st_mtim.tv_sec,
                                      .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec};
    f->snap.paths = calloc(1, sizeof *f->snap.paths);
    f->snap.paths[0] = strdup(f->src);
    f->snap.n_paths = 1;
    fx_commit(f);
}

static int restore(struct fx *f, const char *target, struct restore_options *o, struct rec *rc,
                   struct restore_summary *sum)
{
    struct err e;
    err_clear(&e);
    o->target = target;
    o->report = on_report;
    o->progress = on_progress;
    o->ctx = rc;
    int r = restore_snapshot(f->r, &f->snap, o, sum, &e);
    if (r < 0) print_message("restore: %s\n", e.msg);
    return r;
}

static void src_path(const struct fx *f, char *out, size_t size, const char *rel)
{
    pathf(out, size, "%s/%s", f->src, rel);
}

/* ---- the source tree of the round trips ---- */

/* POSIX ACL xattr: user::rwx user:1234:r-- group::r-x mask::r-x other::r-x. */
static const uint8_t acl_bytes[] = {
    2,    0, 0, 0,                         /* version */
    0x01, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, /* ACL_USER_OBJ rwx */
    0x02, 0, 4, 0, 0xd2, 0x04, 0,    0,    /* ACL_USER 1234 r */
    0x04, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, /* ACL_GROUP_OBJ r-x */
    0x10, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, /* ACL_MASK r-x */
    0x20, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, /* ACL_OTHER r-x */
};

static bool make_source(struct fx *f, bool with_big)
{
    static const char *const dirs[] = {"dir",    "dir/sub", "dir/sub/deep", "emptydir",
                                       "sticky", "sgid",    "acl"};
    char p[1024], q[1024];
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        src_path(f, p, sizeof p, dirs[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    src_path(f, p, sizeof p, "empty");
    put_file(p, "", 0, 0640);
    src_path(f, p, sizeof p, "small");
    put_file(p, "hello", 5, 0644);
    src_path(f, p, sizeof p, "notes.txt");
    put_file(p, "notes\n", 6, 0600);
    src_path(f, p, sizeof p, "dir/sub/deep/file");
    put_random(p, 300000, 7);
    if (with_big) {
        src_path(f, p, sizeof p, "big");
        put_random(p, 20 * CHUNK + 12345, 11); /* more than one job of 16 MiB */
    }
    src_path(f, p, sizeof p, "setuid");
    put_file(p, "#!/bin/sh\n", 10, 04755);
    src_path(f, p, sizeof p, "h1");
    put_file(p, "linked\n", 7, 0644);
    src_path(f, q, sizeof q, "dir/h2");
    assert_int_equal(link(p, q), 0);
    src_path(f, q, sizeof q, "dir/sub/h3");
    assert_int_equal(link(p, q), 0);
    src_path(f, p, sizeof p, "abs");
    assert_int_equal(symlink("/etc/passwd", p), 0);
    src_path(f, p, sizeof p, "dir/rel");
    assert_int_equal(symlink("../small", p), 0);
    src_path(f, p, sizeof p, "dangling");
    assert_int_equal(symlink("no/such/thing", p), 0);
    src_path(f, p, sizeof p, "fifo");
    assert_int_equal(mkfifo(p, 0640), 0);
    src_path(f, p, sizeof p, "sticky");
    assert_int_equal(chmod(p, 01777), 0);
    src_path(f, p, sizeof p, "sgid");
    assert_int_equal(chmod(p, 02775), 0);
    src_path(f, p, sizeof p, "emptydir");
    assert_int_equal(chmod(p, 0700), 0);

    src_path(f, p, sizeof p, "small");
    bool xattrs = setxattr(p, "user.plain", "value", 5, 0) == 0;
    if (xattrs) {
        static const char bin[] = {0, 1, 2, 0, 'x'};
        assert_int_equal(setxattr(p, "user.binary", bin, sizeof bin, 0), 0);
        src_path(f, p, sizeof p, "dir");
        assert_int_equal(setxattr(p, "user.dir", "d", 1, 0), 0);
        src_path(f, p, sizeof p, "acl/file");
        put_file(p, "acl\n", 4, 0644);
        if (setxattr(p, "system.posix_acl_access", acl_bytes, sizeof acl_bytes, 0) == 0) {
            src_path(f, p, sizeof p, "acl");
            assert_int_equal(setxattr(p, "system.posix_acl_access", acl_bytes, sizeof acl_bytes, 0),
                             0);
            assert_int_equal(
                setxattr(p, "system.posix_acl_default", acl_bytes, sizeof acl_bytes, 0), 0);
        } else {
            print_message("POSIX ACLs not supported here (%s): ACL checks skipped\n",
                          strerror(errno));
        }
    } else {
        print_message("user xattrs not supported here (%s): xattr checks skipped\n",
                      strerror(errno));
    }
    if (geteuid() == 0) {
        src_path(f, p, sizeof p, "owned");
        put_file(p, "owned\n", 6, 0644);
        assert_int_equal(chown(p, 1234, 5678), 0);
        src_path(f, p, sizeof p, "dir/sub");
        assert_int_equal(chown(p, 65534, 65534), 0);
        src_path(f, p, sizeof p, "null");
        assert_int_equal(mknod(p, S_IFCHR | 0666, makedev(1, 3)), 0);
        src_path(f, p, sizeof p, "setuid");
        assert_int_equal(chown(p, 1234, 1234), 0);
        assert_int_equal(chmod(p, 06755), 0); /* chown cleared it */
    }
    /* Times last, children before parents; every entry gets its own nanoseconds. */
    static const char *const order[] = {"dir/sub/deep/file",
                                        "dir/sub/deep",
                                        "dir/sub/h3",
                                        "dir/rel",
                                        "dir/sub",
                                        "dir",
                                        "emptydir",
                                        "sticky",
                                        "sgid",
                                        "acl/file",
                                        "acl",
                                        "empty",
                                        "small",
                                        "notes.txt",
                                        "setuid",
                                        "abs",
                                        "dangling",
                                        "fifo",
                                        "owned",
                                        "null",
                                        "big",
                                        ""};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        src_path(f, p, sizeof p, order[i]);
        if (exists(p)) set_time(p, 1600000000 + (int64_t)i * 1000, 100000001L * (long)(i % 9) + 7);
    }
    return xattrs;
}

/* ---- round trips ---- */

static void test_roundtrip(void **state)
{
    struct fx *f = *state;
    make_source(f, true);
    char sock[1024];
    src_path(f, sock, sizeof sock, "sock");
    int sfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    bool have_sock = strlen(sock) < sizeof sa.sun_path;
    if (have_sock) {
        strcpy(sa.sun_path, sock);
        assert_int_equal(bind(sfd, (struct sockaddr *)&sa, sizeof sa), 0);
    }
    close(sfd);
    char p[1024];
    src_path(f, p, sizeof p, "");
    set_time(p, 1600000000, 5);
    backup(f);
    if (have_sock) assert_int_equal(unlink(sock), 0); /* sockets are not restored */
    set_time(p, 1600000000, 5);

    char out[700];
    pathf(out, sizeof out, "%s/out/new", f->dir); /* created like mkdir -p */
    struct restore_options o = {.threads = 2};
    struct rec rc = {0};
    struct restore_summary sum;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    print_reports(&rc);
    assert_int_equal(sum.errors, 0);
    if (have_sock) assert_true(has_report(&rc, "/sock: socket not restored"));
    assert_true(rc.progress_calls >= 1);
    assert_int_equal(rc.last.files_done, rc.last.files_total);
    assert_true(sum.files >= 8);
    assert_int_equal(sum.links, 3);
    assert_true(sum.dirs >= 7);
    assert_true(sum.bytes >= 20 * CHUNK);

    /* The root's atime is not recorded in snapshots: compare the root without it. */
    expect_same(f->src, out, "--no-root");
    struct stat a, b;
    assert_int_equal(stat(f->src, &a), 0);
    assert_int_equal(stat(out, &b), 0);
    assert_int_equal(a.st_mode, b.st_mode);
    assert_int_equal(a.st_mtim.tv_sec, b.st_mtim.tv_sec);
    assert_int_equal(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);

    /* Checks that do not rely on pv_treecmp. */
    char q[1024];
    pathf(q, sizeof q, "%s/setuid", out);
    assert_int_equal(lstat(q, &b), 0);
    assert_int_equal(b.st_mode & 07777, geteuid() == 0 ? 06755 : 04755);
    if (geteuid() == 0) assert_int_equal(b.st_uid, 1234);
    pathf(q, sizeof q, "%s/sticky", out);
    assert_int_equal(lstat(q, &b), 0);
    assert_int_equal(b.st_mode & 07777, 01777);
    pathf(q, sizeof q, "%s/h1", out);
    assert_int_equal(lstat(q, &a), 0);
    assert_int_equal(a.st_nlink, 3);
    pathf(q, sizeof q, "%s/dir/sub/h3", out);
    assert_int_equal(lstat(q, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    pathf(q, sizeof q, "%s/abs", out);
    char t[64] = {0};
    assert_int_equal(readlink(q, t, sizeof t), 11);
    assert_string_equal(t, "/etc/passwd");
    pathf(q, sizeof q, "%s/fifo", out);
    assert_int_equal(lstat(q, &b), 0);
    assert_true(S_ISFIFO(b.st_mode));
    src_path(f, p, sizeof p, "dir/sub/deep/file");
    assert_int_equal(lstat(p, &a), 0);
    pathf(q, sizeof q, "%s/dir/sub/deep/file", out);
    assert_int_equal(lstat(q, &b), 0);
    assert_int_equal(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
    assert_int_equal(a.st_atim.tv_nsec, b.st_atim.tv_nsec);
    pathf(q, sizeof q, "%s/big", out);
    size_t l1, l2;
    src_path(f, p, sizeof p, "big");
    char *x = slurp(p, &l1), *y = slurp(q, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(x, y, l1);
    free(x);
    free(y);
    pathf(q, sizeof q, "%s/small", out);
    char v[16];
    ssize_t vl = lgetxattr(q, "user.plain", v, sizeof v);
    if (vl >= 0) {
        assert_int_equal(vl, 5);
        assert_memory_equal(v, "value", 5);
    }
    pathf(q, sizeof q, "%s/acl", out);
    uint8_t acl[64];
    src_path(f, p, sizeof p, "acl");
    if (lgetxattr(p, "system.posix_acl_default", acl, sizeof acl) > 0) {
        assert_int_equal(lgetxattr(q, "system.posix_acl_default", acl, sizeof acl),
                         (ssize_t)sizeof acl_bytes);
        assert_memory_equal(acl, acl_bytes, sizeof acl_bytes);
    }
    if (geteuid() == 0) {
        pathf(q, sizeof q, "%s/null", out);
        assert_int_equal(lstat(q, &b), 0);
        assert_true(S_ISCHR(b.st_mode));
        assert_int_equal(b.st_rdev, makedev(1, 3));
        assert_int_equal(sum.specials, 2);
    }
    rec_free(&rc);

    /* One thread gives the same tree. */
    char out1[700];
    pathf(out1, sizeof out1, "%s/out1", f->dir);
    struct restore_options o1 = {.threads = 1};
    assert_int_equal(restore(f, out1, &o1, &rc, &sum), 0);
    assert_int_equal(sum.errors, 0);
    expect_same(f->src, out1, "--no-root");
    rec_free(&rc);
}

/* pv_treecmp must see what differs: otherwise the round trips above prove nothing. */
static void test_treecmp_sees_differences(void **state)
{
    struct fx *f = *state;
    make_source(f, false);
    char copy[700], cmd[2000], p[1024];
    pathf(copy, sizeof copy, "%s/copy", f->dir);
    pathf(cmd, sizeof cmd, "cp -a '%s' '%s'", f->src, copy);
    assert_int_equal(system(cmd), 0);
    if (treecmp(f->src, copy, "--no-atime") < 0) skip();
    assert_int_equal(treecmp(f->src, copy, "--no-atime"), 0);
    char out[8192];

    pathf(p, sizeof p, "%s/small", copy);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    put_file(p, "HELLO", 5, 0644);
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    assert_int_equal(treecmp_out(f->src, copy, "--no-atime", out, sizeof out), 1);
    assert_string_equal(out, "small: content (first difference at byte 0: 0x68 vs 0x48)\n");
    put_file(p, "hello", 5, 0644);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    assert_int_equal(treecmp(f->src, copy, "--no-atime"), 0);

    /* h3 becomes a copy of h1 instead of a link; its directory keeps its mtime. */
    char h1[1024], sub[1024];
    pathf(sub, sizeof sub, "%s/dir/sub", copy);
    assert_int_equal(lstat(sub, &st), 0);
    pathf(p, sizeof p, "%s/dir/sub/h3", copy);
    assert_int_equal(unlink(p), 0);
    pathf(h1, sizeof h1, "%s/h1", copy);
    pathf(cmd, sizeof cmd, "cp -a '%s' '%s'", h1, p);
    assert_int_equal(system(cmd), 0);
    struct timespec dts[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, sub, dts, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(treecmp_out(f->src, copy, "--no-atime", out, sizeof out), 1);
    assert_string_equal(out,
                        "dir/sub/h3: hard-link group (same inode as dir/h2 vs as dir/sub/h3)\n");

    /* Mode, xattr and a symlink target. */
    pathf(p, sizeof p, "%s/setuid", copy);
    assert_int_equal(chmod(p, 0755), 0);
    assert_int_equal(treecmp_out(f->src, copy, "--no-atime", out, sizeof out), 1);
    assert_non_null(strstr(out, "setuid: mode ("));
    rm_rf(copy);
}

static void test_sparse(void **state)
{
    struct fx *f = *state;
    char p[1024];
    src_path(f, p, sizeof p, "sparse");
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)(8 * GiB)), 0);
    uint8_t *data = malloc(512 * 1024);
    fill_random(data, 512 * 1024, 3);
    assert_int_equal(pwrite(fd, data, 256 * 1024, 0), 256 * 1024);
    assert_int_equal(pwrite(fd, data, 512 * 1024, (off_t)(4 * GiB)), 512 * 1024);
    assert_int_equal(pwrite(fd, data, 256 * 1024, (off_t)(8 * GiB - 256 * 1024)), 256 * 1024);
    close(fd);
    /* Ending in a hole: no write reaches the end, the length must still be restored. */
    src_path(f, p, sizeof p, "tail_hole");
    fd = open(p, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, 64 * 1024, 0), 64 * 1024);
    assert_int_equal(ftruncate(fd, (off_t)(3 * CHUNK)), 0);
    close(fd);
    free(data);
    /* Zeros written as data: kept as data unless --sparse. */
    src_path(f, p, sizeof p, "zeros");
    uint8_t *zeros = calloc(1, 2 * CHUNK);
    put_file(p, zeros, 2 * CHUNK, 0644);
    free(zeros);
    backup(f);

    char out[700], q[1024];
    pathf(out, sizeof out, "%s/out", f->dir);
    struct restore_options o = {0};
    struct rec rc = {0};
    struct restore_summary sum;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    print_reports(&rc);
    assert_int_equal(sum.errors, 0);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("8 GiB sparse file restored in %.3f s\n", secs);
    assert_true(secs < 10);
    pathf(q, sizeof q, "%s/sparse", out);
    struct stat st;
    assert_int_equal(lstat(q, &st), 0);
    assert_int_equal((uint64_t)st.st_size, 8 * GiB);
    assert_true((uint64_t)st.st_blocks * 512 < 4 * CHUNK);
    pathf(q, sizeof q, "%s/tail_hole", out);
    assert_int_equal(lstat(q, &st), 0);
    assert_int_equal((uint64_t)st.st_size, 3 * CHUNK);
    pathf(q, sizeof q, "%s/zeros", out);
    assert_int_equal(lstat(q, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 >= 2 * CHUNK);
    assert_int_equal(sum.bytes, 2 * CHUNK + 1024 * 1024 + 64 * 1024);
    expect_same(f->src, out, "--no-root");
    rec_free(&rc);

    /* --sparse: the zero blocks become holes too. */
    pathf(out, sizeof out, "%s/out_sparse", f->dir);
    o.sparse = true;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_int_equal(sum.errors, 0);
    assert_int_equal(sum.bytes, 1024 * 1024 + 64 * 1024);
    pathf(q, sizeof q, "%s/zeros", out);
    assert_int_equal(lstat(q, &st), 0);
    assert_int_equal((uint64_t)st.st_size, 2 * CHUNK);
    assert_true(st.st_blocks * 512 < 64 * 1024);
    expect_same(f->src, out, "--no-root --no-holes");
    rec_free(&rc);
}

static void test_include(void **state)
{
    struct fx *f = *state;
    make_source(f, false);
    backup(f);
    char out[700], q[1024], p[1024];
    pathf(out, sizeof out, "%s/out", f->dir);
    char abs_inc[1024];
    pathf(abs_inc, sizeof abs_inc, "%s/dir/sub/deep", f->src); /* the source's own path */
    const char *inc[] = {abs_inc, "/dir/h2", "*.txt", "/no/such/path"};
    struct restore_options o = {.includes = inc, .n_includes = 4};
    struct rec rc = {0};
    struct restore_summary sum;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    print_reports(&rc);
    assert_int_equal(sum.errors, 0);
    assert_true(has_report(&rc, "/no/such/path: include matched nothing"));
    pathf(q, sizeof q, "%s/dir/sub/deep/file", out);
    assert_true(exists(q));
    pathf(q, sizeof q, "%s/notes.txt", out);
    assert_true(exists(q));
    /* h2's group leader (h1) is not selected: h2 is restored as the file itself. */
    pathf(q, sizeof q, "%s/dir/h2", out);
    char *s = slurp(q, NULL);
    assert_non_null(s);
    assert_string_equal(s, "linked\n");
    free(s);
    static const char *const absent[] = {"small",    "h1",   "dir/rel", "dir/sub/h3",
                                         "emptydir", "fifo", "big"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++) {
        pathf(q, sizeof q, "%s/%s", out, absent[i]);
        if (exists(q)) fail_msg("%s restored although not included", absent[i]);
    }
    /* Ancestors get their metadata. */
    struct stat a, b;
    src_path(f, p, sizeof p, "dir/sub");
    pathf(q, sizeof q, "%s/dir/sub", out);
    assert_int_equal(lstat(p, &a), 0);
    assert_int_equal(lstat(q, &b), 0);
    assert_int_equal(a.st_mode, b.st_mode);
    assert_int_equal(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
    assert_int_equal(a.st_uid, b.st_uid);
    rec_free(&rc);
}

static void test_subpath(void **state)
{
    struct fx *f = *state;
    make_source(f, false);
    backup(f);
    char out[700], q[1024], p[1024];
    pathf(out, sizeof out, "%s/out", f->dir);
    struct restore_options o = {.subpath = "/dir/sub"};
    struct rec rc = {0};
    struct restore_summary sum;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_int_equal(sum.errors, 0);
    src_path(f, p, sizeof p, "dir/sub");
    /* The target gets the metadata of /dir/sub itself, so the roots compare too. */
    pathf(q, sizeof q, "%s/deep/file", out);
    assert_true(exists(q));
    pathf(q, sizeof q, "%s/h3", out);
    assert_true(exists(q));
    pathf(q, sizeof q, "%s/dir", out);
    assert_false(exists(q));
    expect_same(p, out, "");
    rec_free(&rc);

    /* "/" is the whole snapshot, with the snapshot root's metadata on the target. */
    pathf(out, sizeof out, "%s/out_all", f->dir);
    o.subpath = "/";
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_int_equal(sum.errors, 0);
    struct stat a, b;
    assert_int_equal(stat(f->src, &a), 0);
    assert_int_equal(stat(out, &b), 0);
    assert_int_equal(a.st_mode, b.st_mode);
    assert_int_equal(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
    expect_same(f->src, out, "--no-root");
    rec_free(&rc);

    struct err e;
    err_clear(&e);
    o.target = out;
    o.subpath = "/dir/nothere";
    assert_int_equal(restore_snapshot(f->r, &f->snap, &o, &sum, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "nothere"));
    o.subpath = "/small";
    assert_true(restore_snapshot(f->r, &f->snap, &o, &sum, &e) < 0);
    assert_non_null(strstr(e.msg, "not a directory"));
    o.subpath = "/dir/../..";
    assert_true(restore_snapshot(f->r, &f->snap, &o, &sum, &e) < 0);
}

static void expect_content(const char *path, const char *want)
{
    char *s = slurp(path, NULL);
    if (!s) fail_msg("%s: cannot read", path);
    if (strcmp(s, want) != 0) fail_msg("%s: \"%s\", expected \"%s\"", path, s, want);
    free(s);
}

static void test_overwrite(void **state)
{
    struct fx *f = *state;
    make_source(f, false);
    backup(f);
    char out[700], small[1024], deepf[1024], q[1024];
    pathf(out, sizeof out, "%s/out", f->dir);
    pathf(small, sizeof small, "%s/small", out);
    pathf(deepf, sizeof deepf, "%s/notes.txt", out);
    struct restore_options o = {0};
    struct rec rc = {0};
    struct restore_summary sum;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_int_equal(sum.errors, 0);
    rec_free(&rc);

    /* Same size and mtime, other bytes: if-changed keeps it; a changed size is replaced. */
    struct stat st;
    assert_int_equal(lstat(small, &st), 0);
    put_file(small, "HELLO", 5, 0644);
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, small, ts, 0), 0);
    put_file(deepf, "longer content\n", 15, 0644);
    o.overwrite = RESTORE_OVERWRITE_IF_CHANGED;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_int_equal(sum.errors, 0);
    expect_content(small, "HELLO");
    expect_content(deepf, "notes\n");
    assert_true(sum.skipped >= 5);
    rec_free(&rc);

    /* never: keeps whatever is there. */
    put_file(deepf, "mine\n", 5, 0644);
    o.overwrite = RESTORE_OVERWRITE_NEVER;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    expect_content(deepf, "mine\n");
    expect_content(small, "HELLO");
    rec_free(&rc);

    /* always: replaces, and a symlink in a file's place is replaced, never written through. */
    char victim[1024];
    pathf(victim, sizeof victim, "%s/victim", f->outside);
    put_file(victim, "original\n", 9, 0644);
    assert_int_equal(unlink(deepf), 0);
    assert_int_equal(symlink(victim, deepf), 0);
    o.overwrite = RESTORE_OVERWRITE_ALWAYS;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    print_reports(&rc);
    assert_int_equal(sum.errors, 0);
    expect_content(small, "hello");
    expect_content(deepf, "notes\n");
    assert_int_equal(lstat(deepf, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    expect_content(victim, "original\n");
    expect_same(f->src, out, "--no-root");
    rec_free(&rc);

    /* A directory where a file goes is left alone and reported. */
    assert_int_equal(unlink(small), 0);
    assert_int_equal(mkdir(small, 0755), 0);
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_int_equal(sum.errors, 1);
    assert_true(has_report(&rc, "/small: not restored: a directory is in the way"));
    rec_free(&rc);

    /* A symlink where a directory goes: refused, nothing written through it. */
    pathf(q, sizeof q, "%s/dir", out);
    rm_rf(q);
    assert_int_equal(symlink(f->outside, q), 0);
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_true(has_report(&rc, "/dir: refused: a symlink or non-directory is in the way"));
    pathf(q, sizeof q, "%s/sub", f->outside);
    assert_false(exists(q));
    pathf(q, sizeof q, "%s/h2", f->outside);
    assert_false(exists(q));
    rec_free(&rc);
}

/* Names and owners as root: names win over numbers unless numeric_owner. */
static void test_owner_names(void **state)
{
    struct fx *f = *state;
    if (geteuid() != 0) skip();
    struct passwd *pw = getpwnam("nobody");
    if (!pw) skip();
    uid_t nobody = pw->pw_uid;
    struct tree t = TREE_INIT;
    struct tree_node n = {0};
    n.name = (uint8_t *)strdup("named");
    n.name_len = 5;
    n.type = TREE_FILE;
    n.mode = 0640;
    n.uid = 4321;
    n.gid = 4321;
    n.user = strdup("nobody");
    n.group = strdup("no-such-group-here");
    n.nlink = 1;
    struct err e;
    err_clear(&e);
    assert_int_equal(tree_add(&t, &n, &e), 0);
    snap_free(&f->snap);
    memset(&f->snap, 0, sizeof f->snap);
    store_tree(f, &t, &f->snap.tree);
    fx_commit(f);

    char out[700], q[1024];
    pathf(out, sizeof out, "%s/out", f->dir);
    pathf(q, sizeof q, "%s/named", out);
    struct restore_options o = {0};
    struct rec rc = {0};
    struct restore_summary sum;
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    struct stat st;
    assert_int_equal(lstat(q, &st), 0);
    assert_int_equal(st.st_uid, nobody);
    assert_int_equal(st.st_gid, 4321); /* unknown name: the number */
    assert_int_equal(st.st_mode & 07777, 0640);
    rec_free(&rc);
    o.numeric_owner = true;
    pathf(out, sizeof out, "%s/out2", f->dir);
    pathf(q, sizeof q, "%s/named", out);
    assert_int_equal(restore(f, out, &o, &rc, &sum), 0);
    assert_int_equal(lstat(q, &st), 0);
    assert_int_equal(st.st_uid, 4321);
    rec_free(&rc);
}

static void test_cancel(void **state)
{
    struct fx *f = *state;
    make_source(f, false);
    backup(f);
    char out[700];
    pathf(out, sizeof out, "%s/out", f->dir);
    volatile int cancel = 1;
    struct restore_options o = {.cancel = &cancel};
    struct rec rc = {0};
    struct restore_summary sum;
    assert_int_equal(restore(f, out, &o, &rc, &sum), ERR_CANCELED);
    rec_free(&rc);
}

/* ---- hostile snapshots ---- */

/* Fails if a file named pv_escaped* exists anywhere below `dir` (skipping `skip`, whose depth
 * would need thousands of descriptors), or if the sentinel directory gained anything. */
static void scan_escapes(const char *dir, const char *skip)
{
    if (skip && strcmp(dir, skip) == 0) return;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (!strncmp(de->d_name, "pv_escaped", 10) || !strcmp(de->d_name, "pv_loop_file"))
            fail_msg("%s/%s exists: an attack got through", dir, de->d_name);
        if (de->d_type == DT_DIR) {
            char sub[4096];
            pathf(sub, sizeof sub, "%s/%s", dir, de->d_name);
            scan_escapes(sub, skip);
        }
    }
    closedir(d);
}

static void check_outside(const struct fx *f)
{
    DIR *d = opendir(f->outside);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "keep"))
            fail_msg("%s/%s appeared outside the target", f->outside, de->d_name);
    }
    closedir(d);
    char keep[700];
    pathf(keep, sizeof keep, "%s/keep", f->outside);
    expect_content(keep, "sentinel\n");
}

struct hostile {
    char id[OID_HEX_LEN + 1];
    char name[64];
};

/* Runs pv_hostile on a fresh repository and reopens it; returns the number of snapshots. */
static size_t make_hostile(struct fx *f, struct hostile *h, size_t max)
{
    char tool[1024], cmd[4000];
    if (!tool_path(tool, sizeof tool, "pv_hostile")) return 0;
    fx_close(f);
    pathf(cmd, sizeof cmd, "PODVAULT_PASSWORD='%s' '%s' -r '%s' --outside '%s'", PASSWORD, tool,
          f->repo, f->outside);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = 0;
    while (n < max && fscanf(p, "%64s %63s", h[n].id, h[n].name) == 2)
        n++;
    assert_int_equal(pclose(p), 0);
    fx_open(f);
    return n;
}

static bool restore_hostile(struct fx *f, const struct hostile *h, const char *target,
                            struct rec *rc, struct restore_summary *sum)
{
    struct oid id;
    assert_true(oid_parse(h->id, &id));
    struct snapshot s;
    struct err e;
    err_clear(&e);
    if (snap_load(f->r, &id, &s, &e) < 0) fail_msg("snap_load %s: %s", h->name, e.msg);
    struct restore_options o = {.report = on_report, .ctx = rc, .target = target};
    int r = restore_snapshot(f->r, &s, &o, sum, &e);
    snap_free(&s);
    if (r < 0) print_message("%s: %s\n", h->name, e.msg);
    print_message("[%s] errors %llu\n", h->name, (unsigned long long)sum->errors);
    print_reports(rc);
    return r == 0;
}

static const struct hostile *find_attack(const struct hostile *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(h[i].name, name)) return &h[i];
    }
    fail_msg("pv_hostile wrote no %s snapshot", name);
    return NULL;
}

struct expectation {
    const char *attack;
    const char *report; /* a report that must appear */
    int min_errors;
};

static void test_hostile(void **state)
{
    struct fx *f = *state;
    struct hostile h[64];
    size_t n = make_hostile(f, h, 64);
    if (!n) {
        print_message("pv_hostile not found (set PV_BUILD_DIR): skipped\n");
        skip();
    }
    bool root = geteuid() == 0;
    const struct expectation ex[] = {
        {"dotdot", "/..: refused: name \"..\"", 1},
        {"dot", "/.: refused: name \".\"", 1},
        {"empty_name", "/: refused: empty name", 1},
        {"slash_in_name", "/a\\x2fpv_escaped_slash: refused: name contains '/'", 1},
        {"absolute_name", "pv_escaped_abs: refused: name contains '/'", 1},
        {"nul_in_name", "/pv_escaped_nul\\x00\\x2f..\\x2f..\\x2fx: refused: name contains", 1},
        {"symlink_then_dir", "/link_0: refused: the name occurs more than once", 2},
        {"symlink_relative", "/up\\x2fpv_escaped_relative: refused: name contains '/'", 1},
        {"duplicate_names", "/dup_0: refused: the name occurs more than once", 2},
        {"self_reference", "/loop: not restored: tree", 1},
        {"hardlink_to_refused", "/pv_link: refused: hard link to an entry that was not", 2},
        {"huge_size", "/overflow: refused: content longer than the largest possible file", 1},
        {"bad_content", "/short: content not restored: blob is 6 bytes, tree says 106", 2},
        {"deep", "refused: directories nested too deeply", 1},
        {"socket", "/sock: socket not restored", 0},
        {"device_node", root ? NULL : "/pv_null: device node not restored", root ? 0 : 2},
    };
    char targets[700], target[800], q[1024];
    pathf(targets, sizeof targets, "%s/targets", f->dir);
    assert_int_equal(mkdir(targets, 0755), 0);
    for (size_t i = 0; i < sizeof ex / sizeof *ex; i++) {
        const struct hostile *a = find_attack(h, n, ex[i].attack);
        pathf(target, sizeof target, "%s/%s", targets, ex[i].attack);
        struct rec rc = {0};
        struct restore_summary sum;
        assert_true(restore_hostile(f, a, target, &rc, &sum));
        if (ex[i].report && !has_report(&rc, ex[i].report))
            fail_msg("%s: no report \"%s\"", ex[i].attack, ex[i].report);
        if (sum.errors < (uint64_t)ex[i].min_errors)
            fail_msg("%s: %llu errors, expected at least %d", ex[i].attack,
                     (unsigned long long)sum.errors, ex[i].min_errors);
        if (ex[i].min_errors == 0) assert_int_equal(sum.errors, 0);
        /* The restore went on after the attack. */
        pathf(q, sizeof q, "%s/ok", target);
        expect_content(q, "pwned\n");
        check_outside(f);
        rec_free(&rc);
    }
    /* Symlinks are restored verbatim (they are content), never followed. */
    pathf(q, sizeof q, "%s/slash_in_name/a", targets);
    char t[700] = {0};
    assert_true(readlink(q, t, sizeof t) > 0);
    assert_string_equal(t, f->outside);
    pathf(q, sizeof q, "%s/symlink_relative/up", targets);
    struct stat st;
    assert_int_equal(lstat(q, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    pathf(q, sizeof q, "%s/hardlink_to_refused/pv_link", targets);
    assert_false(exists(q));
    pathf(q, sizeof q, "%s/huge_size/huge", targets);
    if (lstat(q, &st) == 0) assert_true(st.st_blocks < 1024); /* only if the fs allows it */
    pathf(q, sizeof q, "%s/bad_content/short", targets);
    if (lstat(q, &st) == 0) assert_int_equal(st.st_blocks, 0); /* nothing unverified written */
    if (root) {
        pathf(q, sizeof q, "%s/device_node/pv_null", targets);
        assert_int_equal(lstat(q, &st), 0);
        assert_true(S_ISCHR(st.st_mode));
    }

    /* Two stages into one target: a symlink to the outside, then a directory and a file of
     * that name. */
    pathf(target, sizeof target, "%s/stage", targets);
    static const char *const stages[] = {"symlink_outside", "dir_through_symlink",
                                         "file_over_symlink"};
    for (size_t i = 0; i < 3; i++) {
        struct rec rc = {0};
        struct restore_summary sum;
        assert_true(restore_hostile(f, find_attack(h, n, stages[i]), target, &rc, &sum));
        if (i == 0) assert_int_equal(sum.errors, 0);
        if (i == 1) {
            assert_true(has_report(&rc, "/link: refused: a symlink or non-directory"));
            assert_int_equal(sum.errors, 1);
        }
        if (i == 2) assert_int_equal(sum.errors, 0);
        check_outside(f);
        rec_free(&rc);
    }
    pathf(q, sizeof q, "%s/link", target);
    expect_content(q, "pwned\n"); /* the symlink was replaced by the file */
    assert_int_equal(lstat(q, &st), 0);
    assert_true(S_ISREG(st.st_mode));

    char deep[900];
    pathf(deep, sizeof deep, "%s/deep/deep", targets);
    scan_escapes(f->dir, deep);
    check_outside(f);
}

/* As an unprivileged user: device nodes are refused, FIFOs and files still restored. */
static void test_hostile_unprivileged(void **state)
{
    struct fx *f = *state;
    if (geteuid() != 0) skip(); /* the hostile test covers it when not root */
    struct hostile h[64];
    size_t n = make_hostile(f, h, 64);
    if (!n) skip();
    const struct hostile *a = find_attack(h, n, "device_node");
    store_free(f->st); /* no store threads across fork() */
    f->st = NULL;
    char target[700], cmd[1400];
    pathf(cmd, sizeof cmd, "chmod -R a+rX '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    pathf(target, sizeof target, "%s/unpriv", f->dir);
    assert_int_equal(mkdir(target, 0755), 0);
    assert_int_equal(chown(target, 65534, 65534), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0) _exit(3);
        struct rec rc = {0};
        struct restore_summary sum;
        bool ok = restore_hostile(f, a, target, &rc, &sum);
        _exit(ok && sum.errors == 2 && has_report(&rc, "/pv_null: device node not restored") &&
                      has_report(&rc, "/pv_sda: device node not restored")
                  ? 0
                  : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    char q[900];
    pathf(q, sizeof q, "%s/pv_null", target);
    assert_false(exists(q));
    pathf(q, sizeof q, "%s/ok", target);
    expect_content(q, "pwned\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_treecmp_sees_differences, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sparse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_include, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subpath, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_unprivileged, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
