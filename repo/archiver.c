/* archiver.c - backup: walk the given paths, read and chunk files, hand chunks to the worker
 * pool, build one tree per directory, and save a snapshot.
 *
 * Files. This file is the walk and the trees; the ring buffer that files are read into and the
 * worker threads that hash and store its chunks are repo/readring.h; an entry's metadata (stat
 * fields, owner names, extended attributes) is repo/meta.h; the path buffer, exclude matching and
 * the scanner that counts what lies ahead for progress totals are repo/scan.h.
 *
 * Threads. The calling thread ("walker") walks depth-first, reads each file into the ring, cuts
 * chunks there and queues each chunk as a span of the ring (no copy). Worker threads hash
 * (crypt_blob_id) and store (store_add: dedup, compress, seal, pack) each chunk straight from the
 * ring and write the blob ID into the extent slot the walker reserved for it (chunk_done); the
 * span is then released. The ring (a chunker maximum plus an average chunk per worker) bounds
 * the memory of data in flight whatever the file sizes. Hashing runs in the workers rather than
 * on the walker, which would otherwise be the bottleneck on two cores (bench/design-figures.md).
 *
 * Trees. A directory's tree can be encoded only once every chunk of its files is stored. To
 * keep the pipeline full, a finished directory is not encoded at once: it stays "open" in its
 * parent until the next sibling directory starts, the parent ends, or its chunks are all done,
 * whichever comes first. So at most two directories per level of depth are held in memory.
 *
 * The pool's lock (a->rr.mu) guards, besides the pool, every directory's pending count and the
 * node/extent arrays that workers write IDs into (the walker grows them under the same lock).
 */
#include "repo/archiver.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/held.h"
#include "chunker/chunker.h"
#include "repo/crypt.h"
#include "repo/meta.h"
#include "repo/names.h"
#include "repo/readring.h"
#include "repo/repo.h"
#include "repo/scan.h"
#include "repo/store.h"
#include "repo/tree.h"

#define PROGRESS_INTERVAL 0.25
#define READ_MAX (1u << 20) /* largest read: small enough to start cutting early */
/* Reading waits for this much room in the ring (or half a chunker maximum, if less): waiting
 * for more left the workers idle while the walker read (bench/design-figures.md). */
#define READ_MIN (256u << 10)

/* A directory being built. */
struct dir {
    struct tree t;        /* its entries, added in name order */
    struct tree prev;     /* the parent snapshot's version of it (empty when none) */
    bool has_prev_id;     /* the parent snapshot had a directory here */
    struct oid prev_id;   /* ... with this tree ID */
    uint64_t pending;     /* chunks of its files not yet stored (under a->rr.mu) */
    struct dir *open_sub; /* last subdirectory walked, not yet encoded */
    size_t node;          /* index of its node in the parent directory's tree */
    bool real;            /* false for the synthetic root of a multi-path backup */
};

struct arch {
    struct repo *r;
    const struct arch_options *o;
    struct store *s;
    const struct crypt_keys *keys;
    const struct chunker *ch;
    size_t max_chunk;

    struct rr rr; /* the read ring and the workers; rr.mu also guards the trees being built */

    /* reading (walker only) */
    size_t ext_cap; /* capacity of the content array of the file being read */
    bool proc_fd;   /* /proc/self/fd works, for xattrs of entries without an open fd */

    /* walk state (walker only) */
    struct scan_path path;
    struct meta_idcache users, groups;
    struct snap_summary sum;
    uint64_t files_done, bytes_done;
    double t0, last_progress;
    struct scan_root *roots;
    size_t n_roots;

    struct scan scan; /* counts what lies ahead, for progress totals */
};

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool canceled(const struct arch *a)
{
    return a->o->cancel && *a->o->cancel;
}

static int oom(struct err *e)
{
    return err_set(e, ERR_FAIL, "out of memory");
}

/* A problem with one entry: reported, counted, and the backup goes on. */
static void problem(struct arch *a, const char *what, int errnum)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(errnum));
    a->sum.errors++;
    if (a->o->report) a->o->report(a->o->ctx, a->path.p, msg);
}

/* A note about an entry that is not an error. */
static void notice(struct arch *a, const char *path, const char *msg)
{
    if (a->o->report) a->o->report(a->o->ctx, path, msg);
}

static void progress_tick(struct arch *a, bool force)
{
    if (!a->o->progress) return;
    double t = now_sec();
    if (!force && t - a->last_progress < PROGRESS_INTERVAL) return;
    a->last_progress = t;
    struct arch_progress p = {
        .files_done = a->files_done,
        .bytes_done = a->bytes_done,
        .files_total = atomic_load(&a->scan.files),
        .bytes_total = atomic_load(&a->scan.bytes),
        .scan_done = atomic_load(&a->scan.done),
        .errors = a->sum.errors,
        .elapsed = t - a->t0,
    };
    pthread_mutex_lock(&a->rr.mu);
    p.bytes_new = a->rr.bytes_new;
    pthread_mutex_unlock(&a->rr.mu);
    a->o->progress(a->o->ctx, &p);
}

/* ---- metadata (repo/meta.h) ---- */

/* meta_problem_fn: a problem reading an entry's metadata is one of the backup's problems. */
static void meta_problem(void *ctx, const char *what, int errnum)
{
    problem(ctx, what, errnum);
}

static int node_init(struct arch *a, struct tree_node *n, const char *name, const struct stat *st,
                     struct err *e)
{
    return meta_node_init(&a->users, &a->groups, n, name, st, e);
}

/* A path naming entry `name` of the directory open as `dfd`, usable by l*xattr(): through
 * /proc/self/fd when available (no path length limit, no race on the parent path), else the
 * entry's full path. */
static const char *entry_lpath(struct arch *a, int dfd, const char *name, char *tmp, size_t size)
{
    if (!a->proc_fd) return a->path.p;
    snprintf(tmp, size, "/proc/self/fd/%d/%s", dfd, name);
    return tmp;
}

/* ---- the worker pipeline ---- */

/* Reserves room for one more extent in the content array of the file being read (under a->rr.mu).
 */
static int ext_reserve(struct arch *a, struct tree_node *n, struct err *e)
{
    PV_ASSERT_HELD(&a->rr.mu);
    if (n->n_content < a->ext_cap) return 0;
    size_t cap = a->ext_cap ? a->ext_cap * 2 : 4;
    struct tree_extent *v = realloc(n->content, cap * sizeof *v);
    if (!v) return oom(e);
    n->content = v;
    a->ext_cap = cap;
    return 0;
}

/* rr_claim_fn: records the chunk of job j as the next extent of its file, and that its
 * directory waits for one more chunk. Caller (the pool) holds rr.mu. */
static int claim_chunk(void *ctx, struct rr_job *j, struct err *e)
{
    struct arch *a = ctx;
    struct dir *d = j->owner;
    struct tree_node *n = &d->t.nodes[j->node];
    int rc = ext_reserve(a, n, e);
    if (rc < 0) return rc;
    j->ext = n->n_content++;
    n->content[j->ext] = (struct tree_extent){.hole = false, .len = j->len};
    d->pending++;
    return 0;
}

/* rr_done_fn: the chunk's blob ID goes into its extent. Caller (a worker) holds rr.mu. */
static void chunk_done(void *ctx, const struct rr_job *j, const struct oid *id, bool added)
{
    struct dir *d = j->owner;
    (void)ctx;
    (void)added;
    assert(d->pending > 0 && j->ext < d->t.nodes[j->node].n_content);
    if (id) d->t.nodes[j->node].content[j->ext].id = *id;
    d->pending--;
}

/* Hands the next `len` bytes of the ring, a chunk of the file at d->t.nodes[node], to the
 * workers; blocks while all job slots are taken. */
static int submit(struct arch *a, struct dir *d, size_t node, size_t len, struct err *e)
{
    if (canceled(a)) return err_set(e, ERR_CANCELED, "backup canceled");
    return rr_submit(&a->rr, d, node, len, e);
}

static int add_hole(struct arch *a, struct dir *d, size_t node, uint64_t len, struct err *e)
{
    pthread_mutex_lock(&a->rr.mu);
    struct tree_node *n = &d->t.nodes[node];
    int rc = 0;
    if (n->n_content && n->content[n->n_content - 1].hole) {
        n->content[n->n_content - 1].len += len;
    } else if ((rc = ext_reserve(a, n, e)) == 0) {
        n->content[n->n_content++] = (struct tree_extent){.hole = true, .len = len};
    }
    pthread_mutex_unlock(&a->rr.mu);
    return rc;
}

/* Adds a node to d's tree; the array may move, so workers must not be reading it. */
static int dir_add(struct arch *a, struct dir *d, struct tree_node *n, size_t *index, struct err *e)
{
    pthread_mutex_lock(&a->rr.mu);
    int rc = tree_add(&d->t, n, e);
    if (index) *index = d->t.n - 1;
    pthread_mutex_unlock(&a->rr.mu);
    if (rc < 0) tree_node_free(n);
    return rc;
}

static void wait_pending(struct arch *a, struct dir *d)
{
    pthread_mutex_lock(&a->rr.mu);
    while (d->pending)
        pthread_cond_wait(&a->rr.walker_cv, &a->rr.mu);
    pthread_mutex_unlock(&a->rr.mu);
}

static int pipeline_start(struct arch *a, struct err *e)
{
    unsigned n = rr_workers(a->o->threads);
    /* The ring holds a maximum chunk to cut from and an average one in flight per worker: with
     * the default sizes 6 MiB; more bought no speed (bench/design-figures.md). */
    size_t ring = a->max_chunk + n * (size_t)chunker_params(a->ch)->avg_size;
    if (ring < a->max_chunk / 2 * 3) ring = a->max_chunk / 2 * 3;
    struct rr_params par = {.threads = n,
                            .ring_bytes = ring,
                            .keys = a->keys,
                            .store = a->s,
                            .claim = claim_chunk,
                            .done = chunk_done,
                            .ctx = a};
    return rr_start(&a->rr, &par, e);
}

/* ---- reading files ---- */

/* Reads [start, end) of the file, or when !bounded from start to EOF (`end` then being the size
 * seen at open), cutting chunks and submitting them. *got receives the bytes read; a read error
 * stops reading and is left in *rerr. */
static int read_range(struct arch *a, struct dir *d, size_t node, int fd, uint64_t start,
                      uint64_t end, bool bounded, uint64_t *got, int *rerr, struct err *e)
{
    struct rr *rg = &a->rr;
    uint64_t pos = start;
    bool eof = false;
    for (;;) {
        /* The chunker needs a maximum chunk's worth of bytes ahead, or the end of the data. */
        while (!eof && rg->head - rg->cut < a->max_chunk) {
            /* Free space is at least (size - max) >= max / 2 once the workers catch up, so
             * this wait always ends. */
            size_t want;
            int rc = rr_wait_room(rg, a->max_chunk / 2 < READ_MIN ? a->max_chunk / 2 : READ_MIN,
                                  &want, e);
            if (rc < 0) return rc;
            if (want > READ_MAX) want = READ_MAX;
            /* Read only into the first view (see ring_unmap_wrapped). */
            if (want > rg->size - rg->head % rg->size) want = rg->size - rg->head % rg->size;
            if (bounded && end - pos < want) want = (size_t)(end - pos);
            if (want == 0) {
                eof = true;
                break;
            }
            ssize_t n = pread(fd, rg->base + rg->head % rg->size, want, (off_t)pos);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) *rerr = errno;
            if (n <= 0) {
                eof = true;
                break;
            }
            pos += (uint64_t)n;
            rg->head += (uint64_t)n;
            a->sum.bytes_read += (uint64_t)n;
            /* A short read that ends where the file ended at open is the end: this saves a
             * read per small file. Growth after it shows in the fstat after reading. */
            if (!bounded && (size_t)n < want && pos == end) eof = true;
        }
        while (rg->head - rg->cut >= a->max_chunk || (eof && rg->cut < rg->head)) {
            size_t cut =
                chunker_cut(a->ch, rg->base + rg->cut % rg->size, (size_t)(rg->head - rg->cut));
            int rc = submit(a, d, node, cut, e);
            if (rc < 0) return rc;
            a->bytes_done += cut;
            progress_tick(a, false);
        }
        if (eof) break;
    }
    *got = pos - start;
    return 0;
}

/* Reads a whole file into extents. A file that has fewer allocated blocks than its size may be
 * sparse: its data ranges are found with SEEK_DATA/SEEK_HOLE and the holes become hole extents
 * without being read. *covered receives the length the extents cover. */
static int read_file(struct arch *a, struct dir *d, size_t node, int fd, const struct stat *st,
                     uint64_t *covered, int *rerr, struct err *e)
{
    uint64_t size = (uint64_t)st->st_size;
    if (size == 0 || (uint64_t)st->st_blocks * 512 >= size)
        return read_range(a, d, node, fd, 0, size, false, covered, rerr, e);
    uint64_t pos = 0;
    while (pos < size) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
            data = (off_t)size;
        } else if (data < 0 && pos == 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
            return read_range(a, d, node, fd, 0, size, false, covered, rerr, e);
        } else if (data < 0) {
            *rerr = errno;
            break;
        }
        if ((uint64_t)data > size) data = (off_t)size;
        if ((uint64_t)data > pos) {
            int rc = add_hole(a, d, node, (uint64_t)data - pos, e);
            if (rc < 0) return rc;
            a->bytes_done += (uint64_t)data - pos;
            pos = (uint64_t)data;
        }
        if (pos >= size) break;
        off_t hole = lseek(fd, (off_t)pos, SEEK_HOLE);
        if (hole < 0) {
            *rerr = errno;
            break;
        }
        uint64_t end = (uint64_t)hole > size ? size : (uint64_t)hole;
        uint64_t got = 0;
        int rc = read_range(a, d, node, fd, pos, end, true, &got, rerr, e);
        if (rc < 0) return rc;
        pos += got;
        if (*rerr || pos < end) break; /* read error, or the file shrank */
    }
    *covered = pos;
    return 0;
}

static bool same_time(int64_t s1, uint32_t n1, const struct timespec *ts)
{
    return s1 == ts->tv_sec && n1 == (uint32_t)ts->tv_nsec;
}

/* Whether the parent snapshot's node `pn` may stand for the file `st` without reading it. */
static bool reusable(struct arch *a, const struct tree_node *pn, const struct stat *st)
{
    if (pn->type != TREE_FILE || (pn->flags & (TREE_FLAG_CHANGED | TREE_FLAG_READ_ERROR)) ||
        pn->size != (uint64_t)st->st_size || pn->inode != (uint64_t)st->st_ino ||
        !same_time(pn->mtime_sec, pn->mtime_nsec, &st->st_mtim) ||
        !same_time(pn->ctime_sec, pn->ctime_nsec, &st->st_ctim))
        return false;
    uint64_t total = 0;
    for (size_t i = 0; i < pn->n_content; i++) {
        const struct tree_extent *x = &pn->content[i];
        total += x->len;
        if (!x->hole && !store_has(a->s, &x->id)) return false;
    }
    return total == pn->size;
}

static const struct tree_node *prev_lookup(const struct dir *d, const char *name)
{
    size_t len = strlen(name), lo = 0, hi = d->prev.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct tree_node *n = &d->prev.nodes[mid];
        size_t m = n->name_len < len ? n->name_len : len;
        int c = memcmp(n->name, name, m);
        if (c == 0) c = n->name_len < len ? -1 : n->name_len > len;
        if (c == 0) return n;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Whether the parent snapshot's node is this very inode, untouched since: its xattrs and a
 * symlink's target cannot change without changing ctime, so they are taken from it unread. */
static bool same_inode(const struct tree_node *pn, const struct stat *st)
{
    return pn && pn->type == tree_type_of_mode(st->st_mode) && pn->inode == (uint64_t)st->st_ino &&
           same_time(pn->ctime_sec, pn->ctime_nsec, &st->st_ctim);
}

/* The node's xattrs: from the parent snapshot when the inode is unchanged, else read through
 * `fd` or the entry's path. */
static int node_xattrs_of(struct arch *a, struct tree_node *n, const struct tree_node *pn,
                          const struct stat *st, int fd, int dfd, const char *name, struct err *e)
{
    char lpath[PATH_MAX];
    if (same_inode(pn, st)) return meta_copy_xattrs(n, pn, e);
    return meta_xattrs(n, fd, fd >= 0 ? NULL : entry_lpath(a, dfd, name, lpath, sizeof lpath),
                       meta_problem, a, e);
}

/* A file unchanged since the parent snapshot (pn): its node takes pn's content list, unread. */
static int do_unchanged(struct arch *a, struct dir *d, const char *name, const struct tree_node *pn,
                        const struct stat *lst, struct err *e)
{
    struct tree_node n;
    int rc = node_init(a, &n, name, lst, e);
    if (rc == 0 && pn->n_content) {
        n.content = malloc(pn->n_content * sizeof *n.content);
        if (!n.content) {
            rc = oom(e);
        } else {
            memcpy(n.content, pn->content, pn->n_content * sizeof *n.content);
            n.n_content = pn->n_content;
        }
    }
    if (rc == 0) rc = meta_copy_xattrs(&n, pn, e); /* reusable() implies same_inode() */
    if (rc == 0 && (rc = dir_add(a, d, &n, NULL, e)) == 0) {
        a->sum.files_unmodified++;
        a->sum.total_files++;
        a->sum.total_bytes += (uint64_t)lst->st_size;
        a->files_done++;
        a->bytes_done += (uint64_t)lst->st_size;
        return 0;
    }
    tree_node_free(&n);
    return rc;
}

static int do_file(struct arch *a, struct dir *d, int dfd, const char *name, const struct stat *lst,
                   struct err *e)
{
    const struct tree_node *pn = prev_lookup(d, name);
    if (pn && reusable(a, pn, lst)) return do_unchanged(a, d, name, pn, lst, e);
    struct tree_node n;
    int rc;

    /* O_NONBLOCK: should the entry have become a FIFO since lstat, open must not hang. */
    int fd = scan_open_noatime(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        problem(a, "open", errno);
        return 0;
    }
    struct stat st0, st1;
    if (fstat(fd, &st0) < 0) {
        problem(a, "stat", errno);
        close(fd);
        return 0;
    }
    if (!S_ISREG(st0.st_mode)) {
        problem(a, "open", ESTALE); /* replaced by another kind of entry while we looked */
        close(fd);
        return 0;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    size_t index;
    if ((rc = node_init(a, &n, name, &st0, e)) < 0 ||
        (rc = node_xattrs_of(a, &n, pn, &st0, fd, dfd, name, e)) < 0 ||
        (rc = dir_add(a, d, &n, &index, e)) < 0) {
        close(fd);
        goto fail;
    }
    a->ext_cap = 0;
    uint64_t covered = 0;
    int rerr = 0;
    rc = read_file(a, d, index, fd, &st0, &covered, &rerr, e);
    if (rc == 0 && fstat(fd, &st1) < 0) st1 = st0;
    close(fd);
    if (rc < 0) return rc;

    uint32_t flags = 0;
    if (rerr) {
        problem(a, "read", rerr);
        flags |= TREE_FLAG_READ_ERROR;
    }
    if (st1.st_size != st0.st_size || covered != (uint64_t)st0.st_size ||
        st1.st_mtim.tv_sec != st0.st_mtim.tv_sec || st1.st_mtim.tv_nsec != st0.st_mtim.tv_nsec) {
        flags |= TREE_FLAG_CHANGED;
        a->sum.files_changed_during++;
        notice(a, a->path.p, "file changed while being read");
    }
    pthread_mutex_lock(&a->rr.mu);
    struct tree_node *np = &d->t.nodes[index];
    /* The times after reading: the same as before unless the file changed (then it is flagged),
     * except atime when O_NOATIME was not permitted, which the next backup will then see. */
    meta_set_times(np, &st1);
    np->size = covered;
    np->flags = flags;
    pthread_mutex_unlock(&a->rr.mu);

    if (pn && pn->type == TREE_FILE)
        a->sum.files_changed++;
    else
        a->sum.files_new++;
    a->sum.total_files++;
    a->sum.total_bytes += covered;
    a->files_done++;
    return 0;
fail:
    tree_node_free(&n);
    return rc;
}

static int do_special(struct arch *a, struct dir *d, int dfd, const char *name,
                      const struct stat *lst, struct err *e)
{
    const struct tree_node *pn = prev_lookup(d, name);
    struct tree_node n;
    int rc = node_init(a, &n, name, lst, e);
    if (rc < 0) goto fail;
    if (S_ISLNK(lst->st_mode) && same_inode(pn, lst)) {
        /* the same link: its target is known, and not reading it leaves its atime alone */
        if (!(n.link_target = malloc(pn->link_len ? pn->link_len : 1))) {
            rc = oom(e);
            goto fail;
        }
        if (pn->link_len) memcpy(n.link_target, pn->link_target, pn->link_len);
        n.link_len = pn->link_len;
    } else if (S_ISLNK(lst->st_mode)) {
        size_t cap = lst->st_size > 0 ? (size_t)lst->st_size + 1 : 256;
        for (;;) {
            uint8_t *t = realloc(n.link_target, cap);
            if (!t) {
                rc = oom(e);
                goto fail;
            }
            n.link_target = t;
            ssize_t got = readlinkat(dfd, name, (char *)t, cap);
            if (got < 0) {
                problem(a, "readlink", errno);
                tree_node_free(&n);
                return 0;
            }
            if ((size_t)got < cap && (size_t)got <= TREE_MAX_LINK) {
                n.link_len = (size_t)got;
                break;
            }
            if (cap > TREE_MAX_LINK) { /* longer than any system makes them: not recordable */
                problem(a, "readlink", ENAMETOOLONG);
                tree_node_free(&n);
                return 0;
            }
            cap *= 2;
        }
        /* readlink may have updated the link's atime; record it as it is now, so an unchanged
         * link gives the same tree next time. */
        struct stat st;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            meta_set_times(&n, &st);
    }
    rc = node_xattrs_of(a, &n, pn, lst, -1, dfd, name, e);
    if (rc < 0 || (rc = dir_add(a, d, &n, NULL, e)) < 0) goto fail;
    a->sum.total_files++;
    a->files_done++;
    return 0;
fail:
    tree_node_free(&n);
    return rc;
}

/* ---- trees ---- */

static void dir_free(struct arch *a, struct dir *d)
{
    if (!d) return;
    dir_free(a, d->open_sub);
    pthread_mutex_lock(&a->rr.mu);
    bool busy = d->pending > 0;
    pthread_mutex_unlock(&a->rr.mu);
    if (busy) rr_drain(&a->rr);
    tree_free(&d->t);
    tree_free(&d->prev);
    free(d);
}

/* Loads the parent snapshot's tree `id` as d->prev. A tree that cannot be loaded only costs
 * incrementality: it is reported and the directory is read in full. */
static void dir_load_prev(struct arch *a, struct dir *d, const struct oid *id, const char *path)
{
    struct buf b = BUF_INIT;
    struct err e2;
    err_clear(&e2);
    d->has_prev_id = true;
    d->prev_id = *id;
    if (repo_load_blob(a->r, BLOB_TREE, id, &b, &e2) < 0 ||
        tree_decode(b.data, b.len, &d->prev, &e2) < 0) {
        tree_free(&d->prev);
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "parent snapshot's tree not usable, reading in full: %s", e2.msg);
        notice(a, path, msg);
    }
    buf_free(&b);
}

/* Waits for d's chunks, then encodes and stores its tree. */
static int dir_store(struct arch *a, struct dir *d, struct oid *id, struct err *e)
{
    wait_pending(a, d);
    int rc = rr_check(&a->rr, e);
    if (rc < 0) return rc;
    tree_sort(&d->t);
    struct buf b = BUF_INIT;
    rc = tree_encode(&d->t, &b, e);
    if (rc == 0) rc = crypt_blob_id(a->keys, b.data, b.len, id, e);
    if (rc == 0) rc = store_add(a->s, BLOB_TREE, id, b.data, b.len, NULL, e);
    buf_free(&b);
    if (rc < 0) return err_wrap(e, "storing a directory tree (under %s)", a->path.p);
    if (d->real) {
        if (!d->has_prev_id)
            a->sum.dirs_new++;
        else if (oid_eq(id, &d->prev_id))
            a->sum.dirs_unmodified++;
        else
            a->sum.dirs_changed++;
    }
    return 0;
}

/* Encodes d's open subdirectory, if any: always when `wait`, else only if its chunks are done. */
static int dir_close_sub(struct arch *a, struct dir *d, bool wait, struct err *e)
{
    struct dir *c = d->open_sub;
    if (!c) return 0;
    if (!wait) {
        pthread_mutex_lock(&a->rr.mu);
        bool busy = c->pending > 0;
        pthread_mutex_unlock(&a->rr.mu);
        if (busy) return 0;
    }
    struct oid id;
    int rc = dir_store(a, c, &id, e);
    if (rc < 0) return rc;
    pthread_mutex_lock(&a->rr.mu);
    d->t.nodes[c->node].subtree = id;
    pthread_mutex_unlock(&a->rr.mu);
    d->open_sub = NULL;
    dir_free(a, c);
    return 0;
}

static int walk_dir(struct arch *a, struct dir *d, int fd, const struct names *nm, dev_t root_dev,
                    struct err *e);

static int do_dir(struct arch *a, struct dir *d, int dfd, const char *name, dev_t root_dev,
                  struct err *e)
{
    int rc = dir_close_sub(a, d, true, e);
    if (rc < 0) return rc;
    int fd = scan_open_noatime(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) {
        problem(a, "open", errno);
        return 0;
    }
    struct stat st;
    struct names nm = {0};
    struct dir *c = NULL;
    struct tree_node n;
    memset(&n, 0, sizeof n);
    if (fstat(fd, &st) < 0) {
        problem(a, "stat", errno);
        goto out;
    }
    bool descend = !(a->o->one_file_system && st.st_dev != root_dev);
    if (descend) {
        rc = names_read(fd, &nm, e);
        if (rc > 0) {
            problem(a, "read directory", rc);
            rc = 0;
            goto out;
        }
        if (rc < 0) goto out;
        /* Reading may have updated the directory's atime (without O_NOATIME): record the
         * state after it. */
        if (fstat(fd, &st) < 0) {
            problem(a, "stat", errno);
            goto out;
        }
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        rc = oom(e);
        goto out;
    }
    c->real = true;
    const struct tree_node *pn = prev_lookup(d, name);
    if (pn && pn->type == TREE_DIR) dir_load_prev(a, c, &pn->subtree, a->path.p);
    if ((rc = node_init(a, &n, name, &st, e)) < 0 ||
        (rc = node_xattrs_of(a, &n, pn, &st, fd, dfd, name, e)) < 0 ||
        (rc = dir_add(a, d, &n, &c->node, e)) < 0)
        goto out;
    a->files_done++;
    if (descend && (rc = walk_dir(a, c, fd, &nm, root_dev, e)) < 0) goto out;
    d->open_sub = c;
    c = NULL;
out:
    tree_node_free(&n);
    dir_free(a, c);
    names_free(&nm);
    close(fd);
    return rc;
}

static int do_entry(struct arch *a, struct dir *d, int dfd, const char *name, dev_t root_dev,
                    struct err *e)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        problem(a, "lstat", errno);
        return 0;
    }
    if (S_ISREG(st.st_mode)) return do_file(a, d, dfd, name, &st, e);
    if (S_ISDIR(st.st_mode)) return do_dir(a, d, dfd, name, root_dev, e);
    return do_special(a, d, dfd, name, &st, e);
}

static int walk_dir(struct arch *a, struct dir *d, int fd, const struct names *nm, dev_t root_dev,
                    struct err *e)
{
    for (size_t i = 0; i < nm->n; i++) {
        if (canceled(a)) return err_set(e, ERR_CANCELED, "backup canceled");
        const char *name = names_get(nm, i);
        size_t saved;
        int rc = scan_path_push(&a->path, name, &saved, e);
        if (rc < 0) return rc;
        if (!scan_excluded(a->o, a->path.p, name)) rc = do_entry(a, d, fd, name, root_dev, e);
        scan_path_pop(&a->path, saved);
        if (rc == 0) rc = dir_close_sub(a, d, false, e);
        if (rc < 0) return rc;
        progress_tick(a, false);
    }
    return dir_close_sub(a, d, true, e);
}

/* ---- roots, parent, snapshot ---- */

static int root_cmp(const void *x, const void *y)
{
    return strcmp(((const struct scan_root *)x)->name, ((const struct scan_root *)y)->name);
}

/* Resolves every path to an absolute one without symlinks, and checks that the root tree's
 * entry names (last components) differ. */
static int roots_resolve(struct arch *a, const char *const *paths, size_t n, struct err *e)
{
    a->roots = calloc(n, sizeof *a->roots);
    if (!a->roots) return oom(e);
    for (size_t i = 0; i < n; i++) {
        struct scan_root *rt = &a->roots[i];
        rt->path = realpath(paths[i], NULL);
        if (!rt->path) return err_sys(e, errno, "%s", paths[i]);
        a->n_roots++;
        if (lstat(rt->path, &rt->st) < 0) return err_sys(e, errno, "%s", rt->path);
        const char *slash = strrchr(rt->path, '/');
        rt->name = slash ? slash + 1 : rt->path;
    }
    if (n == 1 && S_ISDIR(a->roots[0].st.st_mode)) return 0;
    for (size_t i = 0; i < n; i++) {
        if (!*a->roots[i].name)
            return err_set(e, ERR_FAIL,
                           "%s can only be backed up alone: several paths (or a file) become "
                           "entries of the snapshot's root named by their last component",
                           a->roots[i].path);
    }
    struct scan_root *sorted = malloc(n * sizeof *sorted);
    if (!sorted) return oom(e);
    memcpy(sorted, a->roots, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, root_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
            int rc = err_set(e, ERR_FAIL,
                             "%s and %s would both be named \"%s\" in the snapshot; back them up "
                             "separately",
                             sorted[i - 1].path, sorted[i].path, sorted[i].name);
            free(sorted);
            return rc;
        }
    }
    free(sorted);
    return 0;
}

static void roots_free(struct arch *a)
{
    for (size_t i = 0; i < a->n_roots; i++)
        free(a->roots[i].path);
    free(a->roots);
}

/* Finds the parent snapshot: the one given, or the newest with the same host and paths. */
static int parent_find(struct arch *a, const char *host, struct snapshot *p, bool *found,
                       struct err *e)
{
    *found = false;
    if (a->o->parent) {
        int rc = snap_load(a->r, a->o->parent, p, e);
        if (rc < 0) {
            char hex[OID_HEX_LEN + 1];
            return err_wrap(e, "loading parent snapshot %s", oid_hex(a->o->parent, hex));
        }
        p->id = *a->o->parent;
        *found = true;
        return 0;
    }
    if (a->o->no_parent) return 0;
    const char **paths = malloc(a->n_roots * sizeof *paths);
    if (!paths) return oom(e);
    for (size_t i = 0; i < a->n_roots; i++)
        paths[i] = a->roots[i].path;
    struct snap_filter f = {.hostname = host, .paths = paths, .n_paths = a->n_roots};
    struct snapshot *list = NULL;
    size_t n = 0;
    struct err e2;
    err_clear(&e2);
    int rc = 0;
    if (snap_list(a->r, &list, &n, &e2) < 0) {
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "no parent snapshot, reading every file: %s", e2.msg);
        notice(a, paths[0], msg);
    } else {
        for (size_t i = n; i-- > 0;) {
            if (snap_matches(&list[i], &f)) {
                rc = snap_copy(p, &list[i], e);
                *found = rc == 0;
                break;
            }
        }
        snap_list_free(list, n);
    }
    free(paths);
    return rc;
}

/* Walks every root and stores the snapshot's root tree as *tree. */
static int walk_roots(struct arch *a, const struct snapshot *parent, bool has_parent,
                      struct snapshot *snap, struct oid *tree, struct err *e)
{
    struct dir *top = calloc(1, sizeof *top);
    if (!top) return oom(e);
    if (has_parent) dir_load_prev(a, top, &parent->tree, a->roots[0].path);
    int rc = 0;
    if (a->n_roots == 1 && S_ISDIR(a->roots[0].st.st_mode)) {
        const struct scan_root *rt = &a->roots[0];
        struct names nm = {0};
        struct stat st;
        top->real = true;
        int fd = scan_open_noatime(AT_FDCWD, rt->path, O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
            rc = err_sys(e, errno, "opening %s", rt->path);
        } else if ((rc = names_read(fd, &nm, e)) > 0) {
            rc = err_sys(e, rc, "reading directory %s", rt->path);
        } else if (rc == 0 && fstat(fd, &st) < 0) {
            rc = err_sys(e, errno, "%s", rt->path);
        }
        if (rc == 0 && (rc = scan_path_set(&a->path, rt->path, e)) == 0)
            rc = walk_dir(a, top, fd, &nm, st.st_dev, e);
        if (rc == 0) {
            snap->root.present = true;
            snap->root.mode = st.st_mode & 07777;
            snap->root.uid = st.st_uid;
            snap->root.gid = st.st_gid;
            snap->root.mtime_sec = st.st_mtim.tv_sec;
            snap->root.mtime_nsec = (uint32_t)st.st_mtim.tv_nsec;
        }
        names_free(&nm);
        if (fd >= 0) close(fd);
    } else {
        /* Roots in name order, so that the root tree's nodes are added sorted. */
        struct scan_root *sorted = malloc(a->n_roots * sizeof *sorted);
        if (!sorted)
            rc = oom(e);
        else
            memcpy(sorted, a->roots, a->n_roots * sizeof *sorted);
        if (sorted && a->n_roots > 1) qsort(sorted, a->n_roots, sizeof *sorted, root_cmp);
        for (size_t i = 0; rc == 0 && i < a->n_roots; i++) {
            const struct scan_root *rt = &sorted[i];
            char *parent_dir = strndup(rt->path, (size_t)(rt->name - rt->path));
            if (!parent_dir) {
                rc = oom(e);
                break;
            }
            int dfd = open(*parent_dir ? parent_dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (dfd < 0) rc = err_sys(e, errno, "opening %s", parent_dir);
            free(parent_dir);
            if (rc == 0 && (rc = scan_path_set(&a->path, rt->path, e)) == 0)
                rc = do_entry(a, top, dfd, rt->name, rt->st.st_dev, e);
            if (dfd >= 0) close(dfd);
            if (rc == 0) rc = dir_close_sub(a, top, false, e);
            progress_tick(a, false);
        }
        free(sorted);
        if (rc == 0) rc = dir_close_sub(a, top, true, e);
    }
    if (rc == 0) {
        if (a->n_roots > 1 || !S_ISDIR(a->roots[0].st.st_mode)) scan_path_set(&a->path, "/", e);
        rc = dir_store(a, top, tree, e);
    }
    dir_free(a, top);
    return rc;
}

static int str_cmp(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static int strv_copy(char ***out, size_t *n_out, const char *const *v, size_t n, struct err *e)
{
    *out = NULL;
    *n_out = 0;
    if (!n) return 0;
    char **c = calloc(n, sizeof *c);
    if (!c) return oom(e);
    *out = c;
    for (size_t i = 0; i < n; i++) {
        if (!(c[i] = strdup(v[i]))) return oom(e);
        (*n_out)++;
    }
    return 0;
}

/* Fills the snapshot's descriptive fields (everything but the tree and the summary). */
static int snap_fill(struct arch *a, const char *host, const struct snapshot *parent,
                     bool has_parent, struct snapshot *s, struct err *e)
{
    const char *user;
    char uidbuf[24];
    if (meta_idcache_get(&a->users, geteuid(), false, &user, e) < 0) return e->code;
    if (!user) {
        snprintf(uidbuf, sizeof uidbuf, "%u", (unsigned)geteuid());
        user = uidbuf;
    }
    if (!(s->hostname = strdup(host)) || !(s->username = strdup(user))) return oom(e);
    const char **paths = malloc(a->n_roots * sizeof *paths);
    if (!paths) return oom(e);
    for (size_t i = 0; i < a->n_roots; i++)
        paths[i] = a->roots[i].path;
    int rc = strv_copy(&s->paths, &s->n_paths, paths, a->n_roots, e);
    free(paths);
    if (rc < 0 || (rc = strv_copy(&s->tags, &s->n_tags, a->o->tags, a->o->n_tags, e)) < 0 ||
        (rc = strv_copy(&s->labels, &s->n_labels, a->o->labels, a->o->n_labels, e)) < 0)
        return rc;
    if (s->n_tags > 1) {
        qsort(s->tags, s->n_tags, sizeof *s->tags, str_cmp);
        size_t k = 1;
        for (size_t i = 1; i < s->n_tags; i++) {
            if (strcmp(s->tags[i], s->tags[k - 1]) == 0)
                free(s->tags[i]);
            else
                s->tags[k++] = s->tags[i];
        }
        s->n_tags = k;
    }
    if (has_parent) {
        s->has_parent = true;
        s->parent = parent->id;
    }
    return 0;
}

/* Fills the snapshot's descriptive fields and checks that they can be saved (labels of the form
 * key=value, valid UTF-8 everywhere), so that a bad label or path fails before any work. */
static int snap_prepare(struct arch *a, const char *host, const struct snapshot *parent,
                        bool has_parent, struct snapshot *s, struct err *e)
{
    for (size_t i = 0; i < a->o->n_tags; i++)
        if (!*a->o->tags[i]) return err_set(e, ERR_FAIL, "empty tag");
    int rc = snap_fill(a, host, parent, has_parent, s, e);
    struct buf b = BUF_INIT;
    if (rc == 0) rc = snap_encode(s, &b, e);
    buf_free(&b);
    return rc;
}

/* The state of one backup, before anything is started; NULL when memory is out. */
static struct arch *arch_new(struct repo *r, const struct arch_options *o)
{
    struct arch *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->r = r;
    a->o = o;
    a->t0 = now_sec();
    a->last_progress = a->t0;
    a->keys = repo_keys(r);
    a->ch = repo_chunker(r);
    a->max_chunk = chunker_params(a->ch)->max_size;
    a->proc_fd = access("/proc/self/fd", X_OK) == 0;
    rr_init(&a->rr);
    scan_init(&a->scan);
    return a;
}

/* Frees what arch_new and the backup made; the workers and the scanner have ended. */
static void arch_free(struct arch *a)
{
    if (a->s) store_free(a->s);
    free(a->path.p);
    meta_idcache_free(&a->users);
    meta_idcache_free(&a->groups);
    roots_free(a);
    rr_free(&a->rr);
    free(a);
}

int arch_backup(struct repo *r, const char *const *paths, size_t n_paths,
                const struct arch_options *o, struct snapshot *out, struct err *e)
{
    static const struct arch_options defaults;
    memset(out, 0, sizeof *out);
    if (!o) o = &defaults;
    if (n_paths == 0) return err_set(e, ERR_FAIL, "nothing to back up: no path given");

    struct timespec start;
    clock_gettime(CLOCK_REALTIME, &start);
    struct arch *a = arch_new(r, o);
    if (!a) return oom(e);

    struct snapshot parent;
    memset(&parent, 0, sizeof parent);
    bool has_parent = false;
    char host[256];
    const char *hostname = o->hostname;
    if (!hostname) {
        if (gethostname(host, sizeof host) < 0) snprintf(host, sizeof host, "unknown");
        host[sizeof host - 1] = '\0';
        hostname = host;
    }

    int rc = roots_resolve(a, paths, n_paths, e);
    if (rc == 0 && (rc = repo_load_index(r, e)) < 0) err_wrap(e, "loading the repository index");
    if (rc == 0) rc = parent_find(a, hostname, &parent, &has_parent, e);
    if (rc == 0) rc = snap_prepare(a, hostname, &parent, has_parent, out, e);
    if (rc == 0) rc = store_new(r, &a->s, e);
    if (rc == 0) rc = pipeline_start(a, e);
    if (rc == 0 && o->progress) scan_start(&a->scan, o, a->roots, a->n_roots);

    struct oid tree;
    if (rc == 0) rc = walk_roots(a, &parent, has_parent, out, &tree, e);

    scan_stop(&a->scan);
    rr_drain(&a->rr);
    rr_stop(&a->rr);
    if (a->s) {
        /* Also after a failure or cancel: what was uploaded gets indexed and is reused by the
         * next backup. */
        struct err e2;
        err_clear(&e2);
        int frc = store_flush(a->s, rc == 0 ? e : &e2);
        if (rc == 0 && frc < 0) rc = frc;
    }
    if (rc == 0) {
        progress_tick(a, true);
        struct store_stats ss;
        store_stats(a->s, &ss);
        out->tree = tree;
        out->time_sec = start.tv_sec;
        out->time_nsec = (uint32_t)start.tv_nsec;
        out->summary = a->sum;
        out->summary.blobs_new = ss.blobs_new;
        out->summary.bytes_new = ss.bytes_new;
        out->summary.bytes_stored = ss.bytes_stored;
        out->summary.duration = now_sec() - a->t0;
        out->incomplete = a->sum.errors > 0;
        if ((rc = snap_save(r, out, e)) < 0) err_wrap(e, "saving the snapshot");
    }
    if (rc < 0) {
        snap_free(out);
        memset(out, 0, sizeof *out);
    }

    if (has_parent) snap_free(&parent);
    arch_free(a);
    return rc;
}
