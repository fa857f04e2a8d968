/* test_archiver.c - backups of real files into a temporary local repository, checked by walking
 * the snapshot's trees and comparing every node's metadata and content with the files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/capability.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/err.h"
#include "repo/archiver.h"
#include "repo/config.h"
#include "repo/crypt.h"
#include "repo/repo.h"
#include "repo/snapshot.h"
#include "repo/tree.h"

#define PASSWORD "test password"

static char g_base[4096]; /* temp dir holding everything */
static char g_repo[4200]; /* repository location */
static struct repo *g_r;

/* ---- helpers ---- */

static void join(char *out, size_t size, const char *a, const char *b)
{
    int n = snprintf(out, size, "%s/%s", a, b);
    assert_true(n > 0 && (size_t)n < size);
}

/* A fresh directory under the base temp dir. */
static void fresh_dir(char *out, size_t size, const char *name)
{
    join(out, size, g_base, name);
    assert_int_equal(mkdir(out, 0755), 0);
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

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

static void write_random(const char *dir, const char *name, size_t len, uint64_t seed)
{
    char path[4600];
    join(path, sizeof path, dir, name);
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    fill_random(p, len, seed);
    write_file(path, p, len);
    free(p);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    chmod(path, 0700);
    return remove(path);
}

static void rm_tree(const char *path)
{
    nftw(path, rm_cb, 64, FTW_DEPTH | FTW_PHYS);
}

struct reports {
    int n;
    char paths[16][4600];
    char msgs[16][256];
    int progress_calls;
    struct arch_progress last;
};

static void on_report(void *ctx, const char *path, const char *msg)
{
    struct reports *rp = ctx;
    if (rp->n < 16) {
        snprintf(rp->paths[rp->n], sizeof rp->paths[0], "%s", path);
        snprintf(rp->msgs[rp->n], sizeof rp->msgs[0], "%s", msg);
    }
    rp->n++;
}

static void on_progress(void *ctx, const struct arch_progress *p)
{
    struct reports *rp = ctx;
    rp->progress_calls++;
    rp->last = *p;
}

static bool reported(const struct reports *rp, const char *path, const char *msg_part)
{
    for (int i = 0; i < rp->n && i < 16; i++)
        if (strcmp(rp->paths[i], path) == 0 && strstr(rp->msgs[i], msg_part)) return true;
    return false;
}

static void opts_init(struct arch_options *o, struct reports *rp)
{
    memset(o, 0, sizeof *o);
    memset(rp, 0, sizeof *rp);
    o->hostname = "test-host";
    o->report = on_report;
    o->progress = on_progress;
    o->ctx = rp;
    o->threads = 2;
}

static void backup(const char *const *paths, size_t n, const struct arch_options *o,
                   struct snapshot *s)
{
    struct err e;
    err_clear(&e);
    int rc = arch_backup(g_r, paths, n, o, s, &e);
    if (rc != 0) fail_msg("arch_backup: %s", e.msg);
}

static void backup1(const char *path, const struct arch_options *o, struct snapshot *s)
{
    backup(&path, 1, o, s);
}

static void load_tree(const struct oid *id, struct tree *t)
{
    struct buf b = BUF_INIT;
    struct err e;
    err_clear(&e);
    if (repo_load_blob(g_r, BLOB_TREE, id, &b, &e) != 0) fail_msg("load tree: %s", e.msg);
    if (tree_decode(b.data, b.len, t, &e) != 0) fail_msg("decode tree: %s", e.msg);
    buf_free(&b);
}

static const struct tree_node *find(const struct tree *t, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < t->n; i++)
        if (t->nodes[i].name_len == len && memcmp(t->nodes[i].name, name, len) == 0)
            return &t->nodes[i];
    return NULL;
}

/* Loads the tree of directory `rel` ("" for the root, "a/b" below it) of snapshot s. */
static void tree_at(const struct snapshot *s, const char *rel, struct tree *out)
{
    struct oid id = s->tree;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", rel);
    for (char *save = NULL, *part = strtok_r(buf, "/", &save); part;
         part = strtok_r(NULL, "/", &save)) {
        struct tree t = TREE_INIT;
        load_tree(&id, &t);
        const struct tree_node *n = find(&t, part);
        if (!n || n->type != TREE_DIR) fail_msg("no directory %s in snapshot", part);
        id = n->subtree;
        tree_free(&t);
    }
    load_tree(&id, out);
}

/* Compares a file's bytes with the blobs (and holes) of its extents. */
static void verify_content(const struct tree_node *n, const char *path)
{
    /* O_NOATIME: checking must not change what the next backup sees. */
    int fd = open(path, O_RDONLY | O_NOATIME);
    assert_true(fd >= 0);
    uint64_t off = 0;
    struct buf b = BUF_INIT;
    uint8_t *disk = NULL;
    size_t disk_cap = 0;
    for (size_t i = 0; i < n->n_content; i++) {
        const struct tree_extent *x = &n->content[i];
        if (x->hole) {
            /* Holes of a sparse test file may be gigabytes: check they are holes on disk. */
            off_t d = lseek(fd, (off_t)off, SEEK_DATA);
            assert_true(d < 0 || (uint64_t)d >= off + x->len);
            off += x->len;
            continue;
        }
        struct err e;
        err_clear(&e);
        buf_reset(&b);
        if (repo_load_blob(g_r, BLOB_DATA, &x->id, &b, &e) != 0)
            fail_msg("load blob of %s: %s", path, e.msg);
        assert_int_equal(b.len, x->len);
        if (disk_cap < x->len) {
            disk = realloc(disk, x->len);
            disk_cap = x->len;
        }
        assert_int_equal(pread(fd, disk, x->len, (off_t)off), (ssize_t)x->len);
        if (memcmp(disk, b.data, x->len) != 0)
            fail_msg("content of %s differs at extent %zu", path, i);
        off += x->len;
    }
    assert_int_equal(off, n->size);
    free(disk);
    buf_free(&b);
    close(fd);
}

static void verify_xattrs(const struct tree_node *n, const char *path)
{
    char list[4096];
    ssize_t len = llistxattr(path, list, sizeof list);
    if (len < 0) len = 0;
    size_t count = 0;
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1) {
        char val[4096];
        ssize_t vl = lgetxattr(path, list + i, val, sizeof val);
        assert_true(vl >= 0);
        bool found = false;
        for (size_t k = 0; k < n->n_xattrs; k++) {
            if (strcmp(n->xattrs[k].name, list + i) == 0) {
                assert_int_equal(n->xattrs[k].value_len, (size_t)vl);
                assert_memory_equal(n->xattrs[k].value, val, (size_t)vl);
                found = true;
            }
        }
        if (!found) fail_msg("xattr %s of %s not recorded", list + i, path);
        count++;
    }
    assert_int_equal(count, n->n_xattrs);
    for (size_t k = 1; k < n->n_xattrs; k++)
        assert_true(strcmp(n->xattrs[k - 1].name, n->xattrs[k].name) < 0);
}

static void verify_node(const struct tree_node *n, const char *path, const struct stat *st)
{
    assert_int_equal(n->type, tree_type_of_mode(st->st_mode));
    assert_int_equal(n->mode, st->st_mode & 07777);
    assert_int_equal(n->uid, st->st_uid);
    assert_int_equal(n->gid, st->st_gid);
    struct passwd *pw = getpwuid(st->st_uid);
    if (pw) assert_string_equal(n->user, pw->pw_name);
    struct group *gr = getgrgid(st->st_gid);
    if (gr) assert_string_equal(n->group, gr->gr_name);
    assert_int_equal(n->mtime_sec, st->st_mtim.tv_sec);
    assert_int_equal(n->mtime_nsec, st->st_mtim.tv_nsec);
    assert_int_equal(n->ctime_sec, st->st_ctim.tv_sec);
    assert_int_equal(n->ctime_nsec, st->st_ctim.tv_nsec);
    /* Reading with O_NOATIME (we own the files) leaves atime as it was. */
    assert_int_equal(n->atime_sec, st->st_atim.tv_sec);
    assert_int_equal(n->atime_nsec, st->st_atim.tv_nsec);
    assert_int_equal(n->inode, st->st_ino);
    assert_int_equal(n->dev, st->st_dev);
    assert_int_equal(n->nlink, st->st_nlink);
    assert_int_equal(n->flags, 0);
    verify_xattrs(n, path);
    switch (n->type) {
    case TREE_FILE:
        assert_int_equal(n->size, st->st_size);
        verify_content(n, path);
        break;
    case TREE_SYMLINK: {
        char target[4096];
        ssize_t len = readlink(path, target, sizeof target);
        assert_true(len >= 0);
        assert_int_equal(n->link_len, (size_t)len);
        assert_memory_equal(n->link_target, target, (size_t)len);
        break;
    }
    case TREE_CHARDEV:
    case TREE_BLOCKDEV:
        assert_int_equal(n->rdev, st->st_rdev);
        break;
    default:
        assert_int_equal(n->n_content, 0);
    }
}

/* Checks that the tree `id` describes the directory `dir` exactly, recursively. Returns the
 * number of entries checked. */
static size_t verify_tree(const struct oid *id, const char *dir)
{
    struct tree t = TREE_INIT;
    load_tree(id, &t);
    size_t count = 0;
    for (size_t i = 0; i < t.n; i++) {
        const struct tree_node *n = &t.nodes[i];
        if (i > 0) {
            const struct tree_node *p = &t.nodes[i - 1];
            size_t m = p->name_len < n->name_len ? p->name_len : n->name_len;
            int c = memcmp(p->name, n->name, m);
            assert_true(c < 0 || (c == 0 && p->name_len < n->name_len));
        }
        char name[4096], path[8200];
        memcpy(name, n->name, n->name_len);
        name[n->name_len] = '\0';
        join(path, sizeof path, dir, name);
        struct stat st;
        if (lstat(path, &st) != 0) fail_msg("%s is in the snapshot but not on disk", path);
        verify_node(n, path, &st);
        count++;
        if (n->type == TREE_DIR) count += verify_tree(&n->subtree, path);
    }
    /* and nothing on disk is missing */
    size_t on_disk = 0;
    DIR *d = fdopendir(open(dir, O_RDONLY | O_DIRECTORY | O_NOATIME));
    assert_non_null(d);
    for (struct dirent *de; (de = readdir(d));)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) on_disk++;
    closedir(d);
    assert_int_equal(on_disk, t.n);
    tree_free(&t);
    return count;
}

static size_t snapshot_count(void)
{
    struct snapshot *list = NULL;
    size_t n = 0;
    struct err e;
    err_clear(&e);
    assert_int_equal(snap_list(g_r, &list, &n, &e), 0);
    snap_list_free(list, n);
    return n;
}

/* Bytes of every file under a directory (the repository's size on disk). */
static uint64_t g_du;
static int du_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)path;
    (void)f;
    if (flag == FTW_F) g_du += (uint64_t)st->st_blocks * 512;
    return 0;
}

static uint64_t disk_usage(const char *dir)
{
    g_du = 0;
    nftw(dir, du_cb, 64, FTW_PHYS);
    return g_du;
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    if (crypt_init(&e) != 0) return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_base, sizeof g_base, "%s/pv-arch-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_base)) return -1;
    char *real = realpath(g_base, NULL); /* the archiver reports and stores real paths */
    if (!real) return -1;
    snprintf(g_base, sizeof g_base, "%s", real);
    free(real);
    join(g_repo, sizeof g_repo, g_base, "repo");
    struct repo_create_params p;
    memset(&p, 0, sizeof p);
    config_default(&p.config);
    /* Small chunks so that modest files span many of them. */
    p.config.chunker.min_size = 16 * 1024;
    p.config.chunker.avg_size = 64 * 1024;
    p.config.chunker.max_size = 256 * 1024;
    p.config.pack_size = 1024 * 1024;
    keyfile_params_min(&p.kdf);
    if (repo_create(g_repo, PASSWORD, &p, NULL, &e) != 0 ||
        repo_open(g_repo, PASSWORD, NULL, &g_r, &e) != 0) {
        fprintf(stderr, "repository: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    repo_close(g_r);
    rm_tree(g_base);
    return 0;
}

/* ---- tests ---- */

/* A tree with every kind of entry: backed up, then every node checked against the disk. */
static void test_full_tree(void **state)
{
    (void)state;
    char d[4200], p[4600], q[4600];
    fresh_dir(d, sizeof d, "full");
    write_random(d, "empty", 0, 1);
    write_random(d, "small", 100, 2);
    write_random(d, "big", 3 * 1024 * 1024 + 12345, 3); /* > 10 chunks of max 256 KiB */
    join(p, sizeof p, d, "sub");
    assert_int_equal(mkdir(p, 0750), 0);
    write_random(p, "inner", 70000, 4);
    join(q, sizeof q, p, "deeper");
    assert_int_equal(mkdir(q, 0700), 0);
    write_random(q, "leaf", 5, 5);
    join(p, sizeof p, d, "emptydir");
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(chmod(p, 03775), 0); /* setgid + sticky */
    join(p, sizeof p, d, "suid");
    write_random(d, "suid", 10, 6);
    assert_int_equal(chmod(p, 04755), 0);
    join(p, sizeof p, d, "link");
    assert_int_equal(symlink("sub/inner", p), 0);
    join(p, sizeof p, d, "dangling");
    assert_int_equal(symlink("/nonexistent/target", p), 0);
    join(p, sizeof p, d, "fifo");
    assert_int_equal(mkfifo(p, 0640), 0);
    join(p, sizeof p, d, "sock");
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_true(strlen(p) < sizeof sun.sun_path);
    memcpy(sun.sun_path, p, strlen(p) + 1);
    assert_int_equal(bind(sock, (struct sockaddr *)&sun, sizeof sun), 0);
    close(sock);
    join(p, sizeof p, d, "small");
    join(q, sizeof q, d, "hardlink");
    assert_int_equal(link(p, q), 0);
    assert_int_equal(setxattr(p, "user.color", "blue", 4, 0), 0);
    assert_int_equal(setxattr(p, "user.empty", "", 0, 0), 0);
    join(p, sizeof p, d, "sub");
    assert_int_equal(setxattr(p, "user.dir", "x", 1, 0), 0);
    join(p, sizeof p, d, "name with\nnewline \xff");
    write_file(p, "odd", 3);
    if (geteuid() == 0) {
        join(p, sizeof p, d, "null");
        assert_int_equal(mknod(p, S_IFCHR | 0600, makedev(1, 3)), 0);
        join(p, sizeof p, d, "owned");
        write_file(p, "x", 1);
        assert_int_equal(chown(p, 1234, 5678), 0);
    }

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    const char *tags[] = {"b", "a", "b"};
    const char *labels[] = {"pod=web-0", "namespace=default"};
    o.tags = tags;
    o.n_tags = 3;
    o.labels = labels;
    o.n_labels = 2;
    struct snapshot s;
    backup1(d, &o, &s);

    assert_int_equal(rp.n, 0);
    assert_false(s.incomplete);
    assert_false(s.has_parent);
    assert_string_equal(s.hostname, "test-host");
    assert_int_equal(s.n_paths, 1);
    assert_string_equal(s.paths[0], d);
    assert_int_equal(s.n_tags, 2);
    assert_string_equal(s.tags[0], "a");
    assert_string_equal(s.tags[1], "b");
    assert_int_equal(s.n_labels, 2);
    assert_string_equal(s.labels[0], "pod=web-0");
    struct stat st;
    assert_int_equal(stat(d, &st), 0);
    assert_true(s.root.present);
    assert_int_equal(s.root.mode, st.st_mode & 07777);
    assert_int_equal(s.root.mtime_sec, st.st_mtim.tv_sec);
    assert_int_equal(s.root.mtime_nsec, st.st_mtim.tv_nsec);

    size_t entries = verify_tree(&s.tree, d);
    size_t files = geteuid() == 0 ? 9 : 8; /* regular files, counting the hard link */
    size_t total = geteuid() == 0 ? 17 : 15;
    assert_int_equal(entries, total);
    assert_int_equal(s.summary.files_new, files);
    assert_int_equal(s.summary.files_changed, 0);
    assert_int_equal(s.summary.files_unmodified, 0);
    assert_int_equal(s.summary.dirs_new, 4); /* root, sub, deeper, emptydir */
    assert_int_equal(s.summary.total_files, total - 3);
    assert_int_equal(s.summary.errors, 0);
    assert_int_equal(s.summary.files_changed_during, 0);
    uint64_t bytes = 0 + 100 + (3 * 1024 * 1024 + 12345) + 70000 + 5 + 10 + 100 + 3;
    if (geteuid() == 0) bytes += 1;
    assert_int_equal(s.summary.total_bytes, bytes);
    assert_int_equal(s.summary.bytes_read, bytes);
    assert_true(s.summary.blobs_new > 12);
    /* "small" and its hard link share content, stored once; the rest is new, plus trees. */
    assert_true(s.summary.bytes_new >= bytes - 100);
    assert_true(s.summary.bytes_new < bytes - 100 + 8192);
    assert_true(s.summary.bytes_stored > 0);

    /* The snapshot was saved and reads back the same. */
    struct snapshot l;
    struct err e;
    err_clear(&e);
    assert_int_equal(snap_load(g_r, &s.id, &l, &e), 0);
    assert_memory_equal(&l.tree, &s.tree, sizeof l.tree);
    snap_free(&l);

    /* Hard links: same inode and dev, nlink 2. */
    struct tree t = TREE_INIT;
    load_tree(&s.tree, &t);
    const struct tree_node *a = find(&t, "small"), *b = find(&t, "hardlink");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->inode, b->inode);
    assert_int_equal(a->dev, b->dev);
    assert_int_equal(a->nlink, 2);
    assert_int_equal(a->n_xattrs, 2);
    assert_int_equal(a->n_content, 1);
    assert_int_equal(b->n_content, 1);
    assert_memory_equal(&a->content[0].id, &b->content[0].id, sizeof a->content[0].id);
    const struct tree_node *big = find(&t, "big");
    assert_true(big->n_content >= 12);
    tree_free(&t);

    /* Progress was called at least at the end, with the final counts. */
    assert_true(rp.progress_calls >= 1);
    assert_int_equal(rp.last.files_done, total);
    assert_int_equal(rp.last.bytes_done, bytes);
    if (rp.last.scan_done) { /* the scan ahead counted the same */
        assert_int_equal(rp.last.files_total, total);
        assert_int_equal(rp.last.bytes_total, bytes);
    }
    snap_free(&s);
}

/* Re-backup of an unchanged tree reads nothing and gives the same root tree; a change reads
 * only the changed file. */
static void test_incremental(void **state)
{
    (void)state;
    char d[4200], p[4600];
    fresh_dir(d, sizeof d, "incr");
    write_random(d, "a", 1000000, 10);
    write_random(d, "b", 200000, 11);
    join(p, sizeof p, d, "sub");
    assert_int_equal(mkdir(p, 0755), 0);
    write_random(p, "c", 300000, 12);
    join(p, sizeof p, d, "l");
    assert_int_equal(symlink("a", p), 0);
    /* The first readlink sets the link's atime (relatime) unless it happens within the clock
     * tick of the link's creation; let a tick pass so that the next backups see it stable. */
    usleep(20000);

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    struct snapshot s1, s2, s3, s4;
    backup1(d, &o, &s1);
    assert_int_equal(s1.summary.files_new, 3);
    assert_int_equal(s1.summary.bytes_read, 1500000);

    backup1(d, &o, &s2);
    assert_true(s2.has_parent);
    assert_memory_equal(&s2.parent, &s1.id, sizeof s1.id);
    assert_int_equal(s2.summary.bytes_read, 0);
    assert_int_equal(s2.summary.files_unmodified, 3);
    assert_int_equal(s2.summary.files_new + s2.summary.files_changed, 0);
    assert_int_equal(s2.summary.dirs_unmodified, 2);
    assert_int_equal(s2.summary.dirs_new + s2.summary.dirs_changed, 0);
    assert_int_equal(s2.summary.blobs_new, 0);
    assert_int_equal(s2.summary.total_bytes, 1500000);
    assert_memory_equal(&s2.tree, &s1.tree, sizeof s1.tree);
    verify_tree(&s2.tree, d);

    /* Change one file in the subdirectory. */
    join(p, sizeof p, d, "sub");
    write_random(p, "c", 300001, 13);
    backup1(d, &o, &s3);
    assert_memory_equal(&s3.parent, &s2.id, sizeof s2.id);
    assert_int_equal(s3.summary.bytes_read, 300001);
    assert_int_equal(s3.summary.files_changed, 1);
    assert_int_equal(s3.summary.files_unmodified, 2);
    assert_int_equal(s3.summary.dirs_changed, 2); /* sub and the root above it */
    assert_false(oid_eq(&s3.tree, &s2.tree));
    verify_tree(&s3.tree, d);

    /* no_parent reads everything again, but stores nothing new. */
    o.no_parent = true;
    backup1(d, &o, &s4);
    assert_false(s4.has_parent);
    assert_int_equal(s4.summary.bytes_read, 1500001);
    assert_int_equal(s4.summary.files_new, 3);
    assert_int_equal(s4.summary.blobs_new, 0);
    assert_memory_equal(&s4.tree, &s3.tree, sizeof s3.tree);

    /* An explicit parent is used as given. */
    o.no_parent = false;
    o.parent = &s1.id;
    struct snapshot s5;
    backup1(d, &o, &s5);
    assert_memory_equal(&s5.parent, &s1.id, sizeof s1.id);
    assert_int_equal(s5.summary.bytes_read, 300001);
    snap_free(&s1);
    snap_free(&s2);
    snap_free(&s3);
    snap_free(&s4);
    snap_free(&s5);
}

/* Metadata taken from the parent for unchanged inodes (xattrs, link targets) is right, and a
 * metadata change (which changes ctime) is picked up. */
static void test_incremental_metadata(void **state)
{
    (void)state;
    char d[4200], f[4600], sub[4600], l[4600];
    fresh_dir(d, sizeof d, "incrmeta");
    write_random(d, "f", 5000, 14);
    join(f, sizeof f, d, "f");
    assert_int_equal(setxattr(f, "user.one", "1", 1, 0), 0);
    join(sub, sizeof sub, d, "sub");
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(setxattr(sub, "user.dir", "d", 1, 0), 0);
    join(l, sizeof l, d, "link");
    assert_int_equal(symlink("f", l), 0);
    usleep(20000); /* see test_incremental */

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    struct snapshot s1, s2, s3;
    backup1(d, &o, &s1);
    backup1(d, &o, &s2);
    assert_int_equal(s2.summary.bytes_read, 0);
    assert_memory_equal(&s2.tree, &s1.tree, sizeof s1.tree);
    verify_tree(&s2.tree, d);

    assert_int_equal(setxattr(f, "user.two", "22", 2, 0), 0);
    assert_int_equal(setxattr(sub, "user.dir", "changed", 7, 0), 0);
    assert_int_equal(chmod(sub, 0700), 0);
    assert_int_equal(unlink(l), 0);
    assert_int_equal(symlink("sub", l), 0);
    backup1(d, &o, &s3);
    assert_int_equal(s3.summary.bytes_read, 5000); /* f's ctime changed: read again */
    assert_int_equal(s3.summary.files_changed, 1);
    verify_tree(&s3.tree, d);
    snap_free(&s1);
    snap_free(&s2);
    snap_free(&s3);
}

/* A deep chain of directories and a wide directory come back whole. */
static void test_deep_and_wide(void **state)
{
    (void)state;
    char d[4200], p[8200], wide[4600];
    fresh_dir(d, sizeof d, "deepwide");
    snprintf(p, sizeof p, "%s", d);
    for (int i = 0; i < 150; i++) {
        size_t n = strlen(p);
        assert_true(n + 4 < sizeof p);
        memcpy(p + n, "/dd", 4);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    write_random(p, "bottom", 100, 80);
    join(wide, sizeof wide, d, "wide");
    assert_int_equal(mkdir(wide, 0755), 0);
    for (int i = 0; i < 2000; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%04d", i);
        write_random(wide, name, (size_t)(i % 7) * 10, 1000 + (uint64_t)i);
    }
    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    struct snapshot s;
    backup1(d, &o, &s);
    assert_int_equal(rp.n, 0);
    assert_int_equal(verify_tree(&s.tree, d), 150 + 1 + 1 + 2000);
    assert_int_equal(s.summary.dirs_new, 1 + 150 + 1);
    assert_int_equal(s.summary.files_new, 2001);
    snap_free(&s);
}

/* The same content in a second directory adds (almost) no new bytes. */
static void test_dedup(void **state)
{
    (void)state;
    char d1[4200], d2[4200];
    fresh_dir(d1, sizeof d1, "dedup1");
    fresh_dir(d2, sizeof d2, "dedup2");
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", i);
        write_random(d1, name, 500000, 100 + i);
        write_random(d2, name, 500000, 100 + i);
    }
    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    struct snapshot s1, s2;
    backup1(d1, &o, &s1);
    assert_true(s1.summary.bytes_new >= 2000000);
    backup1(d2, &o, &s2);
    assert_false(s2.has_parent); /* other path */
    assert_int_equal(s2.summary.bytes_read, 2000000);
    /* only the tree blob (inodes and times differ) */
    assert_true(s2.summary.bytes_new < 4096);
    assert_true(s2.summary.blobs_new <= 1);
    verify_tree(&s2.tree, d2);
    snap_free(&s1);
    snap_free(&s2);
}

/* An 8 GiB file with little data: holes are not read nor stored, and it is fast. */
static void test_sparse(void **state)
{
    (void)state;
    char d[4200], p[4600];
    fresh_dir(d, sizeof d, "sparse");
    join(p, sizeof p, d, "disk.img");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    uint8_t *data = malloc(1 << 20);
    fill_random(data, 1 << 20, 77);
    const uint64_t size = 8ull << 30;
    assert_int_equal(pwrite(fd, data, 65536, 0), 65536);
    assert_int_equal(pwrite(fd, data, 1 << 20, (off_t)(4ull << 30)), 1 << 20);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    assert_int_equal(fsync(fd), 0);
    close(fd);
    free(data);

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    uint64_t before = disk_usage(g_repo);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct snapshot s;
    backup1(d, &o, &s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 10.0);
    assert_int_equal(s.summary.total_bytes, size);
    assert_true(s.summary.bytes_read <= 2u << 20);
    assert_true(disk_usage(g_repo) - before < 4u << 20);

    struct tree t = TREE_INIT;
    load_tree(&s.tree, &t);
    const struct tree_node *n = find(&t, "disk.img");
    assert_non_null(n);
    assert_int_equal(n->size, size);
    uint64_t holes = 0, blobs = 0, total = 0;
    for (size_t i = 0; i < n->n_content; i++) {
        total += n->content[i].len;
        if (n->content[i].hole)
            holes += n->content[i].len;
        else
            blobs += n->content[i].len;
    }
    assert_int_equal(total, size);
    assert_true(holes >= size - (2u << 20));
    assert_true(blobs >= 65536 + (1u << 20));
    assert_true(n->content[n->n_content - 1].hole); /* trailing hole */
    tree_free(&t);
    verify_tree(&s.tree, d);

    /* unchanged: reused without reading */
    struct snapshot s2;
    backup1(d, &o, &s2);
    assert_int_equal(s2.summary.bytes_read, 0);
    assert_memory_equal(&s2.tree, &s.tree, sizeof s.tree);
    snap_free(&s);
    snap_free(&s2);
}

/* Removes capabilities from the calling thread's effective set (they stay permitted). */
static bool caps_effective(const int *caps, size_t n, bool on)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &h, data) != 0) return false;
    for (size_t i = 0; i < n; i++) {
        if (on)
            data[caps[i] / 32].effective |= 1u << (caps[i] % 32);
        else
            data[caps[i] / 32].effective &= ~(1u << (caps[i] % 32));
    }
    return syscall(SYS_capset, &h, data) == 0;
}

/* An unreadable file and an unreadable directory are reported, counted, and skipped; the
 * snapshot is marked incomplete. As root, DAC override is dropped for the duration. */
static void test_unreadable(void **state)
{
    (void)state;
    char d[4200], p[4600], sub[4600];
    fresh_dir(d, sizeof d, "unreadable");
    write_random(d, "ok", 1000, 20);
    write_random(d, "secret", 1000, 21);
    join(p, sizeof p, d, "secret");
    assert_int_equal(chmod(p, 0), 0);
    join(sub, sizeof sub, d, "closed");
    assert_int_equal(mkdir(sub, 0755), 0);
    write_random(sub, "x", 10, 22);
    assert_int_equal(chmod(sub, 0), 0);

    static const int caps[] = {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH};
    bool dropped = geteuid() == 0 && caps_effective(caps, 2, false);
    int probe = open(p, O_RDONLY);
    if (probe >= 0) {
        close(probe);
        if (dropped) caps_effective(caps, 2, true);
        chmod(sub, 0755);
        skip(); /* cannot make a file unreadable here */
    }

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    struct snapshot s;
    struct err e;
    err_clear(&e);
    const char *path = d;
    int rc = arch_backup(g_r, &path, 1, &o, &s, &e);
    if (dropped) assert_true(caps_effective(caps, 2, true));
    chmod(sub, 0755);
    if (rc != 0) fail_msg("arch_backup: %s", e.msg);

    assert_true(s.incomplete);
    assert_int_equal(s.summary.errors, 2);
    assert_int_equal(s.summary.files_new, 1);
    assert_true(reported(&rp, p, "Permission denied"));
    assert_true(reported(&rp, sub, "Permission denied"));
    struct tree t = TREE_INIT;
    load_tree(&s.tree, &t);
    assert_int_equal(t.n, 1);
    assert_non_null(find(&t, "ok"));
    tree_free(&t);
    snap_free(&s);
}

struct grower {
    char path[4600];
    atomic_int stop;
    atomic_int writes;
};

static void *grow_main(void *arg)
{
    struct grower *g = arg;
    int fd = open(g->path, O_WRONLY | O_APPEND);
    if (fd < 0) return NULL;
    char block[512];
    memset(block, 'g', sizeof block);
    while (!g->stop) {
        if (write(fd, block, sizeof block) == (ssize_t)sizeof block) g->writes++;
        usleep(200);
    }
    close(fd);
    return NULL;
}

/* A file written to while it is read is flagged, reported and counted; the backup goes on. */
static void test_changed_during_read(void **state)
{
    (void)state;
    char d[4200];
    fresh_dir(d, sizeof d, "growing");
    write_random(d, "grows", 64u << 20, 30);
    write_random(d, "still", 1000, 31);
    struct grower g;
    memset(&g, 0, sizeof g);
    join(g.path, sizeof g.path, d, "grows");

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    o.no_parent = true;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, grow_main, &g), 0);
    while (g.writes == 0)
        usleep(100);
    struct snapshot s;
    backup1(d, &o, &s);
    g.stop = 1;
    pthread_join(th, NULL);

    assert_int_equal(s.summary.files_changed_during, 1);
    assert_int_equal(s.summary.errors, 0);
    assert_false(s.incomplete);
    assert_true(reported(&rp, g.path, "changed while being read"));
    struct tree t = TREE_INIT;
    load_tree(&s.tree, &t);
    const struct tree_node *n = find(&t, "grows");
    assert_non_null(n);
    assert_true(n->flags & TREE_FLAG_CHANGED);
    uint64_t total = 0;
    for (size_t i = 0; i < n->n_content; i++)
        total += n->content[i].len;
    assert_int_equal(total, n->size);
    assert_true(n->size >= 64u << 20);
    assert_int_equal(find(&t, "still")->flags, 0);
    tree_free(&t);

    /* A flagged file is never reused: the next backup reads it again. */
    struct snapshot s2;
    o.no_parent = false;
    o.parent = &s.id;
    backup1(d, &o, &s2);
    assert_true(s2.summary.bytes_read >= 64u << 20);
    assert_int_equal(s2.summary.files_changed, 1);
    assert_int_equal(s2.summary.files_unmodified, 1);
    snap_free(&s);
    snap_free(&s2);
}

static void test_excludes(void **state)
{
    (void)state;
    char d[4200], p[4600], pat[4700];
    fresh_dir(d, sizeof d, "excl");
    write_random(d, "keep.txt", 10, 40);
    write_random(d, "drop.tmp", 10, 41);
    join(p, sizeof p, d, "cache");
    assert_int_equal(mkdir(p, 0755), 0);
    write_random(p, "big", 100000, 42);
    join(p, sizeof p, d, "sub");
    assert_int_equal(mkdir(p, 0755), 0);
    write_random(p, "cache", 10, 43); /* a file named like the excluded dir, elsewhere */
    write_random(p, "also.tmp", 10, 44);
    snprintf(pat, sizeof pat, "%s/cache", d);
    const char *excludes[] = {"*.tmp", pat};

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    o.excludes = excludes;
    o.n_excludes = 2;
    struct snapshot s;
    backup1(d, &o, &s);
    assert_int_equal(s.summary.bytes_read, 20);
    struct tree t = TREE_INIT;
    load_tree(&s.tree, &t);
    assert_int_equal(t.n, 2);
    assert_non_null(find(&t, "keep.txt"));
    assert_non_null(find(&t, "sub"));
    tree_free(&t);
    tree_at(&s, "sub", &t);
    assert_int_equal(t.n, 1);
    assert_non_null(find(&t, "cache"));
    tree_free(&t);
    snap_free(&s);
}

/* Several paths (and single files) become entries of a synthetic root named by their last
 * component; clashing names are refused before anything is stored. */
static void test_multiple_paths(void **state)
{
    (void)state;
    char d[4200], x[4600], y[4600], f[4600], clash[4600];
    fresh_dir(d, sizeof d, "multi");
    join(x, sizeof x, d, "x");
    join(y, sizeof y, d, "y");
    assert_int_equal(mkdir(x, 0755), 0);
    assert_int_equal(mkdir(y, 0755), 0);
    write_random(x, "one", 1000, 50);
    write_random(y, "two", 2000, 51);
    write_random(d, "file", 3000, 52);
    join(f, sizeof f, d, "file");

    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    const char *paths[] = {y, f, x};
    struct snapshot s;
    backup(paths, 3, &o, &s);
    assert_false(s.root.present);
    assert_int_equal(s.n_paths, 3);
    assert_string_equal(s.paths[0], y);
    struct tree t = TREE_INIT;
    load_tree(&s.tree, &t);
    assert_int_equal(t.n, 3);
    const char *names[] = {"file", "x", "y"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t.nodes[i].name_len, strlen(names[i]));
        assert_memory_equal(t.nodes[i].name, names[i], strlen(names[i]));
        char path[4600];
        join(path, sizeof path, d, names[i]);
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        verify_node(&t.nodes[i], path, &st);
    }
    verify_tree(&find(&t, "x")->subtree, x);
    tree_free(&t);
    assert_int_equal(s.summary.files_new, 3);
    assert_int_equal(s.summary.dirs_new, 2);

    /* same set of paths: incremental */
    struct snapshot s2;
    backup(paths, 3, &o, &s2);
    assert_true(s2.has_parent);
    assert_int_equal(s2.summary.bytes_read, 0);
    assert_memory_equal(&s2.tree, &s.tree, sizeof s.tree);

    /* a single file */
    struct snapshot s3;
    backup1(f, &o, &s3);
    load_tree(&s3.tree, &t);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.nodes[0].type, TREE_FILE);
    tree_free(&t);

    /* clashing names */
    join(clash, sizeof clash, x, "y");
    assert_int_equal(mkdir(clash, 0755), 0);
    const char *bad[] = {y, clash};
    size_t before = snapshot_count();
    struct err e;
    err_clear(&e);
    struct snapshot s4;
    assert_int_not_equal(arch_backup(g_r, bad, 2, &o, &s4, &e), 0);
    assert_non_null(strstr(e.msg, "\"y\""));
    assert_int_equal(snapshot_count(), before);

    /* a missing path */
    char missing[4600];
    join(missing, sizeof missing, d, "missing");
    const char *m = missing;
    err_clear(&e);
    assert_int_not_equal(arch_backup(g_r, &m, 1, &o, &s4, &e), 0);
    assert_non_null(strstr(e.msg, "missing"));

    /* a label that cannot be saved fails before anything is read */
    const char *bad_labels[] = {"pod=a", "pod=b"};
    o.labels = bad_labels;
    o.n_labels = 2;
    err_clear(&e);
    rp.progress_calls = 0;
    assert_int_not_equal(arch_backup(g_r, paths, 3, &o, &s4, &e), 0);
    assert_non_null(strstr(e.msg, "pod"));
    assert_int_equal(rp.progress_calls, 0);
    assert_int_equal(snapshot_count(), before);
    snap_free(&s);
    snap_free(&s2);
    snap_free(&s3);
}

/* Cancels once new data was made, so that the canceled run has stored something whatever the
 * machine's pace (under valgrind the first progress call may come before any). */
static void on_progress_cancel(void *ctx, const struct arch_progress *p)
{
    if (p->bytes_new > 0) *(int *)ctx = 1;
}

/* A cancel stops the backup with ERR_CANCELED and writes no snapshot; what was stored is
 * indexed and reused by the next backup. */
static void test_cancel(void **state)
{
    (void)state;
    char d[4200];
    fresh_dir(d, sizeof d, "cancel");
    for (int i = 0; i < 8; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", i);
        write_random(d, name, 4u << 20, 60 + i);
    }
    volatile int cancel = 1;
    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    o.cancel = &cancel;
    size_t before = snapshot_count();
    struct snapshot s;
    struct err e;
    err_clear(&e);
    const char *path = d;
    assert_int_equal(arch_backup(g_r, &path, 1, &o, &s, &e), ERR_CANCELED);
    assert_int_equal(snapshot_count(), before);

    /* cancel from inside: a progress call (every 250 ms) flips the flag once new data was made */
    cancel = 0;
    o.progress = on_progress_cancel;
    o.ctx = (void *)&cancel;
    o.report = NULL;
    err_clear(&e);
    int rc = arch_backup(g_r, &path, 1, &o, &s, &e);
    if (rc == 0) {
        snap_free(&s); /* finished before a progress call saw new data: nothing to check */
        return;
    }
    assert_int_equal(rc, ERR_CANCELED);
    assert_int_equal(snapshot_count(), before);
    opts_init(&o, &rp);
    backup1(d, &o, &s);
    assert_int_equal(s.summary.bytes_read, 32u << 20);
    assert_true(s.summary.bytes_new < 32u << 20); /* part was stored by the canceled run */
    snap_free(&s);
}

/* A mount point below the backed-up directory is recorded but not entered with
 * one_file_system (needs the right to mount a tmpfs). */
static void test_one_file_system(void **state)
{
    (void)state;
    char d[4200], m[4600];
    fresh_dir(d, sizeof d, "onefs");
    write_random(d, "top", 10, 70);
    join(m, sizeof m, d, "mnt");
    assert_int_equal(mkdir(m, 0755), 0);
    if (mount("tmpfs", m, "tmpfs", 0, "size=4m") != 0) skip();
    write_random(m, "inside", 100, 71);
    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    o.one_file_system = true;
    struct snapshot s, s2;
    backup1(d, &o, &s);
    o.one_file_system = false;
    backup1(d, &o, &s2);
    umount(m);
    struct tree t = TREE_INIT;
    tree_at(&s, "mnt", &t);
    assert_int_equal(t.n, 0);
    tree_free(&t);
    tree_at(&s2, "mnt", &t);
    assert_int_equal(t.n, 1);
    tree_free(&t);
    snap_free(&s);
    snap_free(&s2);
}

/* A repository that cannot be written fails the backup with a message naming what failed, and
 * saves no snapshot. Runs last: it leaves the data directory as it found it, but the store's
 * failure may have left partial state that later tests should not depend on. */
static void test_store_failure(void **state)
{
    (void)state;
    char d[4200], data[4400], snaps[4400];
    fresh_dir(d, sizeof d, "storefail");
    write_random(d, "big", 40u << 20, 90); /* several packs of 1 MiB */
    join(data, sizeof data, g_repo, "data");
    join(snaps, sizeof snaps, g_repo, "snapshots");
    struct stat st;
    assert_int_equal(stat(data, &st), 0);
    static const int caps[] = {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH};
    bool dropped = geteuid() == 0 && caps_effective(caps, 2, false);
    assert_int_equal(chmod(data, 0500), 0);
    char probe[4500];
    join(probe, sizeof probe, data, "probe");
    int fd = open(probe, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0) {
        close(fd);
        unlink(probe);
        chmod(data, st.st_mode & 07777);
        if (dropped) caps_effective(caps, 2, true);
        skip(); /* cannot make the repository unwritable here */
    }
    size_t before = snapshot_count();
    struct arch_options o;
    struct reports rp;
    opts_init(&o, &rp);
    o.no_parent = true;
    struct snapshot s;
    struct err e;
    err_clear(&e);
    const char *path = d;
    int rc = arch_backup(g_r, &path, 1, &o, &s, &e);
    chmod(data, st.st_mode & 07777);
    if (dropped) assert_true(caps_effective(caps, 2, true));
    assert_int_not_equal(rc, 0);
    assert_true(e.msg[0] != '\0');
    assert_non_null(strstr(e.msg, "pack"));
    assert_int_equal(snapshot_count(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_tree),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_incremental_metadata),
        cmocka_unit_test(test_deep_and_wide),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_sparse),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_changed_during_read),
        cmocka_unit_test(test_excludes),
        cmocka_unit_test(test_multiple_paths),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_one_file_system),
        cmocka_unit_test(test_store_failure),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
