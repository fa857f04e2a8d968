/* restorer_write.c - what a restore writes: file content, by a pool of worker threads that
 * fetch, authenticate and write each file's blobs (holes stay holes), and metadata (owner,
 * xattrs, mode, times), applied to files by the worker that finishes them and to every other
 * entry by the walk in restorer.c. See restorer_int.h for what the two files share. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "base/failpoint.h"
#include "repo/crypt.h"
#include "repo/repo.h"
#include "repo/restorer_int.h"
#include "repo/tree.h"

/* With --sparse, all-zero blocks of this size (aligned in the file) are left as holes. */
#define SPARSE_BLOCK 4096
#define MAX_THREADS 64

static void deadline_in(struct timespec *ts, long long ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_nsec += ns;
    ts->tv_sec += ts->tv_nsec / 1000000000LL;
    ts->tv_nsec %= 1000000000LL;
}

/* ---- metadata ---- */

static uint32_t owner_id(struct rs *rs, bool user, const char *name, uint32_t fallback)
{
    if (rs->o->numeric_owner || !name || !*name) return fallback;
    struct owner_entry *cache = user ? rs->users : rs->groups;
    size_t *n = user ? &rs->n_users : &rs->n_groups;
    uint32_t id = fallback;
    pthread_mutex_lock(&rs->owner_lock);
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(cache[i].name, name) == 0) {
            id = cache[i].id;
            pthread_mutex_unlock(&rs->owner_lock);
            return id;
        }
    }
    char tmp[16384];
    if (user) {
        struct passwd pw, *res = NULL;
        if (getpwnam_r(name, &pw, tmp, sizeof tmp, &res) == 0 && res) id = res->pw_uid;
    } else {
        struct group gr, *res = NULL;
        if (getgrnam_r(name, &gr, tmp, sizeof tmp, &res) == 0 && res) id = res->gr_gid;
    }
    if (*n < OWNER_CACHE && (cache[*n].name = strdup(name))) cache[(*n)++].id = id;
    pthread_mutex_unlock(&rs->owner_lock);
    return id;
}

static void set_xattrs(struct rs *rs, const struct tree_node *n, const struct meta_at *at,
                       const char *disp)
{
    char proc[64 + NAME_MAX + 1] = "";
    if (at->fd < 0 && n->n_xattrs) {
        /* No *at() variant of setxattr: go through the directory's descriptor; lsetxattr does
         * not follow the final name, and the directory part is our own O_NOFOLLOW descriptor. */
        int w = snprintf(proc, sizeof proc, "/proc/self/fd/%d/%s", at->dirfd, at->name);
        if (w < 0 || (size_t)w >= sizeof proc) {
            restore_report(rs, disp, true, "xattrs not restored: name too long");
            return;
        }
    }
    for (size_t i = 0; i < n->n_xattrs; i++) {
        const struct tree_xattr *x = &n->xattrs[i];
        int rc = at->fd >= 0 ? fsetxattr(at->fd, x->name, x->value, x->value_len, 0)
                             : lsetxattr(proc, x->name, x->value, x->value_len, 0);
        if (rc < 0) restore_report(rs, disp, true, "xattr %s: %s", x->name, strerror(errno));
    }
}

/* Owner first (chown clears setuid/setgid and file capabilities), then xattrs (ACLs and
 * capabilities, which need the final owner), then mode, then times (every earlier step may
 * change ctime but not these). Failures are reported and the next step still runs. */
void restore_apply_meta(struct rs *rs, const struct tree_node *n, const struct meta_at *at,
                        const char *disp)
{
    if (rs->is_root) {
        uid_t uid = owner_id(rs, true, n->user, n->uid);
        gid_t gid = owner_id(rs, false, n->group, n->gid);
        int rc = at->fd >= 0 ? fchown(at->fd, uid, gid)
                             : fchownat(at->dirfd, at->name, uid, gid, AT_SYMLINK_NOFOLLOW);
        if (rc < 0) restore_report(rs, disp, true, "chown: %s", strerror(errno));
    }
    set_xattrs(rs, n, at, disp);
    if (!at->symlink) {
        mode_t mode = n->mode & 07777;
        int rc = at->fd >= 0 ? fchmod(at->fd, mode)
                             : fchmodat(at->dirfd, at->name, mode, AT_SYMLINK_NOFOLLOW);
        if (rc < 0) restore_report(rs, disp, true, "chmod: %s", strerror(errno));
    }
    struct timespec ts[2] = {
        {.tv_sec = n->atime_sec, .tv_nsec = n->atime_nsec},
        {.tv_sec = n->mtime_sec, .tv_nsec = n->mtime_nsec},
    };
    if (at->omit_atime) ts[0].tv_nsec = UTIME_OMIT;
    int rc = at->fd >= 0 ? futimens(at->fd, ts)
                         : utimensat(at->dirfd, at->name, ts, AT_SYMLINK_NOFOLLOW);
    if (rc < 0) restore_report(rs, disp, true, "setting times: %s", strerror(errno));
}

/* ---- file content (worker threads) ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Writes one blob at `off`; with sparse, aligned all-zero blocks are skipped (they stay holes,
 * as the file was created empty). Returns bytes written, or -errno. */
static int64_t write_data(int fd, const uint8_t *p, size_t n, uint64_t off, bool sparse)
{
    if (!sparse) {
        return fp_pwrite_all(fd, p, n, off) < 0 ? -errno : (int64_t)n;
    }
    int64_t written = 0;
    size_t i = 0;
    while (i < n) {
        /* One run of blocks that are all zero, or all not. */
        size_t blk = SPARSE_BLOCK - (size_t)((off + i) % SPARSE_BLOCK);
        if (blk > n - i) blk = n - i;
        bool zero = all_zero(p + i, blk);
        size_t j = i + blk;
        while (j < n) {
            size_t b = n - j < SPARSE_BLOCK ? n - j : SPARSE_BLOCK;
            if (all_zero(p + j, b) != zero) break;
            j += b;
        }
        if (!zero) {
            if (fp_pwrite_all(fd, p + i, j - i, off + i) < 0) return -errno;
            written += (int64_t)(j - i);
        }
        i = j;
    }
    return written;
}

/* A file whose content could not be written whole is removed: what a restore leaves must be
 * what was backed up, never something that passes for it. */
static void remove_partial(struct rs *rs, struct rfile *f)
{
    const char *last;
    int dirfd = restore_open_parent(rs, f->rel, &last);
    int rc = dirfd < 0 ? dirfd : fp_unlinkat(dirfd, last, 0) < 0 ? -errno : 0;
    if (dirfd >= 0) close(dirfd);
    if (rc < 0)
        restore_report(rs, f->disp, true, "removing the partly restored file: %s", strerror(-rc));
    else if (f->failed)
        restore_report(rs, f->disp, true, "removed: its content could not be restored whole");
}

static void finish_file(struct rs *rs, struct rfile *f)
{
    if (f->failed || restore_canceled(rs)) {
        remove_partial(rs, f);
    } else {
        if (f->set_length && fp_ftruncate(f->fd, (off_t)f->length) < 0) {
            restore_report(rs, f->disp, true, "setting size to %llu: %s",
                           (unsigned long long)f->length, strerror(errno));
        } else {
            struct meta_at at = {.fd = f->fd};
            restore_apply_meta(rs, &f->node, &at, f->disp);
            rs->files++;
        }
    }
    close(f->fd);
    rs->entries_done++;
    tree_node_free(&f->node);
    free(f->disp);
    free(f->rel);
    free(f);
}

void restore_release_file(struct rs *rs, struct rfile *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1) finish_file(rs, f);
}

struct worker {
    struct rs *rs;
    struct buf blob;
    struct oid cached; /* the blob now in `blob`, reused when the next extent names it again */
    bool have_cached;
};

/* Blobs of a remote repository are fetched ahead of the workers: the walk announces the
 * blobs of each job as it queues it, and every blob announced is then read, or its
 * announcement taken back, exactly once. */
static void announce(struct rs *rs, const struct job *j)
{
    for (size_t k = j->first; k < j->first + j->count; k++)
        if (!j->f->node.content[k].hole) repo_prefetch(rs->r, &j->f->node.content[k].id);
}

/* Extents [k, end of the job) will not be read. */
static void unannounce(struct rs *rs, const struct job *j, size_t k)
{
    for (; k < j->first + j->count; k++)
        if (!j->f->node.content[k].hole) repo_prefetch_cancel(rs->r, &j->f->node.content[k].id);
}

static void run_job(struct worker *w, const struct job *j)
{
    struct rs *rs = w->rs;
    struct rfile *f = j->f;
    uint64_t off = j->off;
    size_t k = j->first;
    for (; k < j->first + j->count; k++) {
        if (f->failed || restore_canceled(rs)) break;
        const struct tree_extent *x = &f->node.content[k];
        if (x->hole) {
            off += x->len;
            continue;
        }
        if (w->have_cached && oid_eq(&w->cached, &x->id)) {
            repo_prefetch_cancel(rs->r, &x->id);
        } else {
            struct err e;
            err_clear(&e);
            w->have_cached = false;
            buf_reset(&w->blob);
            if (repo_load_blob(rs->r, BLOB_DATA, &x->id, &w->blob, &e) < 0) {
                char hex[OID_HEX_LEN + 1];
                restore_report(rs, f->disp, true, "content not restored: blob %s: %s",
                               oid_hex(&x->id, hex), e.msg);
                f->failed = true;
                k++;
                break;
            }
            w->cached = x->id;
            w->have_cached = true;
        }
        if (w->blob.len != x->len) {
            restore_report(rs, f->disp, true,
                           "content not restored: blob is %zu bytes, tree says %llu", w->blob.len,
                           (unsigned long long)x->len);
            f->failed = true;
            k++;
            break;
        }
        int64_t n = write_data(f->fd, w->blob.data, w->blob.len, off, rs->o->sparse);
        if (n < 0) {
            restore_report(rs, f->disp, true, "writing: %s", strerror((int)-n));
            f->failed = true;
            k++;
            break;
        }
        rs->bytes += (uint64_t)n;
        rs->bytes_done += x->len;
        off += x->len;
    }
    unannounce(rs, j, k);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct rs *rs = w->rs;
    for (;;) {
        pthread_mutex_lock(&rs->lock);
        while (!rs->q_len && !rs->closing)
            pthread_cond_wait(&rs->not_empty, &rs->lock);
        if (!rs->q_len) {
            pthread_mutex_unlock(&rs->lock);
            break;
        }
        struct job j = rs->q[rs->q_head];
        rs->q_head = (rs->q_head + 1) % rs->q_cap;
        rs->q_len--;
        pthread_cond_signal(&rs->not_full);
        pthread_mutex_unlock(&rs->lock);

        run_job(w, &j);
        restore_release_file(rs, j.f);

        pthread_mutex_lock(&rs->lock);
        if (--rs->outstanding == 0) pthread_cond_broadcast(&rs->idle);
        pthread_mutex_unlock(&rs->lock);
    }
    buf_free(&w->blob);
    free(w);
    return NULL;
}

/* Queues a job, waiting while the queue is full (and keeping progress flowing meanwhile).
 * On cancel the job is dropped. */
void restore_push_job(struct rs *rs, const struct job *j)
{
    announce(rs, j);
    pthread_mutex_lock(&rs->lock);
    while (rs->q_len == rs->q_cap && !restore_canceled(rs)) {
        struct timespec ts;
        deadline_in(&ts, PROGRESS_NS);
        pthread_cond_timedwait(&rs->not_full, &rs->lock, &ts);
        pthread_mutex_unlock(&rs->lock);
        restore_tick(rs, false);
        pthread_mutex_lock(&rs->lock);
    }
    if (restore_canceled(rs)) {
        pthread_mutex_unlock(&rs->lock);
        unannounce(rs, j, j->first);
        restore_release_file(rs, j->f);
        return;
    }
    rs->q[(rs->q_head + rs->q_len) % rs->q_cap] = *j;
    rs->q_len++;
    rs->outstanding++;
    pthread_cond_signal(&rs->not_empty);
    pthread_mutex_unlock(&rs->lock);
}

int restore_start_workers(struct rs *rs, struct err *e)
{
    unsigned n = rs->o->threads;
    if (!n) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (n > MAX_THREADS) n = MAX_THREADS;
    repo_set_readers(rs->r, n);
    rs->q_cap = 4 * (size_t)n;
    rs->q = calloc(rs->q_cap, sizeof *rs->q);
    rs->threads = calloc(n, sizeof *rs->threads);
    if (!rs->q || !rs->threads) return err_set(e, ERR_FAIL, "out of memory");
    for (unsigned i = 0; i < n; i++) {
        struct worker *w = calloc(1, sizeof *w);
        if (!w) return err_set(e, ERR_FAIL, "out of memory");
        w->rs = rs;
        int rc = pthread_create(&rs->threads[i], NULL, worker_main, w);
        if (rc) {
            free(w);
            return err_sys(e, rc, "starting restore threads");
        }
        rs->started++;
    }
    return 0;
}

/* Waits for queued work (delivering progress meanwhile) and joins the workers. */
void restore_stop_workers(struct rs *rs)
{
    pthread_mutex_lock(&rs->lock);
    while (rs->outstanding) {
        struct timespec ts;
        deadline_in(&ts, PROGRESS_NS);
        pthread_cond_timedwait(&rs->idle, &rs->lock, &ts);
        pthread_mutex_unlock(&rs->lock);
        restore_tick(rs, false);
        pthread_mutex_lock(&rs->lock);
    }
    rs->closing = true;
    pthread_cond_broadcast(&rs->not_empty);
    pthread_mutex_unlock(&rs->lock);
    for (unsigned i = 0; i < rs->started; i++)
        pthread_join(rs->threads[i], NULL);
}
