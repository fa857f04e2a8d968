/* restorer_int.h - what the two halves of the restorer share; internal to repo/restorer.c and
 * repo/restorer_write.c, included by nothing else (restorer.h is the module's contract).
 *
 * restorer.c walks the snapshot's trees on the calling thread of restore_snapshot: it checks
 * names, creates directories, symlinks, special files and hard links, opens each regular file
 * and queues its content as jobs. restorer_write.c writes: its workers fetch the jobs' blobs and
 * write them, and it applies metadata to every entry.
 *
 * Ownership: one struct rs lives on restore_snapshot's stack for one restore and owns what it
 * points to (freed by cleanup in restorer.c); a struct rfile is owned by its references (the
 * walk's while it queues, one per queued job) and freed by whoever drops the last one.
 * Thread-safety: each function below says which threads may call it; the fields of struct rs
 * say which lock guards them; its counters are atomic, and the rest is set before the workers
 * start or is the walk's own.
 */
#ifndef PV_REPO_RESTORER_INT_H
#define PV_REPO_RESTORER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "base/buf.h"
#include "base/err.h"
#include "repo/restorer.h"
#include "repo/snapshot.h"
#include "repo/tree.h"

/* Progress is delivered at most this often (ns); waits for the workers wake up as often. */
#define PROGRESS_NS 250000000LL
/* Owner names cached for each of users and groups. */
#define OWNER_CACHE 128

struct report_item;
struct hlink;
struct include;
struct level;

/* A file being written: shared by its jobs; whoever drops the last reference finishes it. */
struct rfile {
    int fd;
    atomic_uint refs;
    atomic_bool failed;
    uint64_t length; /* final length */
    /* The writes may end short of `length` (a trailing hole, or zeros left out with --sparse):
     * the file is then ftruncate'd to it at the end. Otherwise the last write sets the length,
     * and a call per file is spared. */
    bool set_length;
    char *disp;
    char *rel;             /* its path below the restore root, to remove it if it fails */
    struct tree_node node; /* moved out of its tree */
};

struct job {
    struct rfile *f;
    size_t first, count; /* extents [first, first+count) */
    uint64_t off;        /* file offset of the first extent */
};

struct owner_entry {
    char *name;
    uint32_t id;
};

struct rs {
    struct repo *r;
    const struct snapshot *snap;
    const struct restore_options *o;
    bool is_root;
    int rootfd;
    struct timespec start, last_tick;

    atomic_uint_fast64_t files, dirs, links, specials, bytes, skipped, errors;
    atomic_uint_fast64_t entries_done, entries_total, bytes_done, bytes_total;

    pthread_mutex_t lock;       /* queue and reports */
    pthread_mutex_t owner_lock; /* owner caches: name lookups may be slow (NSS) */
    pthread_cond_t not_empty, not_full, idle;
    struct job *q;
    size_t q_cap, q_head, q_len, outstanding;
    bool closing;
    pthread_t *threads;
    unsigned started;

    struct report_item *reports, **reports_tail;
    atomic_size_t n_reports;

    struct owner_entry users[OWNER_CACHE], groups[OWNER_CACHE];
    size_t n_users, n_groups;

    struct hlink **hl;
    size_t hl_buckets, hl_n;

    struct include *inc;
    size_t n_inc;

    struct level *stack;
    size_t depth, stack_cap;
    size_t open_fds;
    struct buf rel, disp; /* paths of the entry being restored (NUL-terminated) */
};

/* Where metadata goes: an open descriptor of the entry, or (for symlinks and special files,
 * which we do not open) a name in an open directory, never followed if it is a symlink. */
struct meta_at {
    int fd;
    int dirfd;
    const char *name;
    bool symlink;
    bool omit_atime;
};

static inline bool restore_canceled(const struct rs *rs)
{
    return rs->o->cancel && *rs->o->cancel;
}

/* ---- defined in restorer.c ---- */

/* Queues a message for the calling thread of restore_snapshot, which alone invokes the user's
 * callback (so the callback never runs on a worker). `error` counts it in the summary. Any
 * thread; a message that cannot be allocated is dropped (the error still counts). */
void restore_report(struct rs *rs, const char *path, bool error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Delivers queued reports and, every PROGRESS_NS (or when `force`), progress. The calling
 * thread of restore_snapshot only. */
void restore_tick(struct rs *rs, bool force);
/* Opens the directory holding `rel` (a path below the restore root written by this restore),
 * component by component with O_NOFOLLOW; *last points at the final name. Returns the
 * descriptor (the caller closes it) or -errno. Any thread. */
int restore_open_parent(struct rs *rs, const char *rel, const char **last);

/* ---- defined in restorer_write.c ---- */

/* Applies n's metadata at `at`: owner (when root), xattrs, mode (not to a symlink), times.
 * Failures are reported (restore_report) and the next step still runs. Any thread. */
void restore_apply_meta(struct rs *rs, const struct tree_node *n, const struct meta_at *at,
                        const char *disp);
/* Starts the workers (o->threads, else one per CPU, at most 64) and their queue. Fails out of
 * memory or when a thread cannot start; stop them with restore_stop_workers either way. The
 * calling thread of restore_snapshot only, as are restore_push_job and restore_stop_workers. */
int restore_start_workers(struct rs *rs, struct err *e);
/* Queues a job, which holds a reference to its file, waiting while the queue is full (and
 * keeping progress flowing meanwhile). On cancel the job is dropped and its reference
 * released. */
void restore_push_job(struct rs *rs, const struct job *j);
/* Drops a reference to `f`; the last one finishes the file (its length, its metadata, or its
 * removal when its content could not be written whole) and frees it. Any thread. */
void restore_release_file(struct rs *rs, struct rfile *f);
/* Waits for queued work (delivering progress meanwhile) and joins the workers. */
void restore_stop_workers(struct rs *rs);

#endif
