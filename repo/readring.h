/* readring.h - the backup's read ring and worker pool: the walker reads file bytes into a ring
 * buffer and hands chunks of it to worker threads as spans (no copy); each worker hashes its
 * chunk (crypt_blob_id) and stores it (store_add) straight from the ring, then releases the span.
 *
 * The ring's pages are mapped twice, back to back, so that every span is contiguous even where
 * it wraps around. Positions only grow; position p lives at base[p % size]. Bytes flow
 * head (read in) -> cut (handed to jobs) -> tail (released by finished jobs, in issue order):
 * tail <= cut <= head <= tail + size always holds (asserted).
 *
 * Threads: one walker (the thread that calls rr_start and everything below but the callbacks)
 * and the workers. `mu` guards the job queue, tail, the failure, and whatever the caller's claim
 * and done callbacks touch (the archiver's trees and pending counts): the caller takes it too for
 * its own state. head and cut are the walker's (cut changes under mu). */
#ifndef PV_REPO_READRING_H
#define PV_REPO_READRING_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/oid.h"
#include "repo/crypt.h"
#include "repo/store.h"

/* One chunk handed to the workers: ring bytes [start, start + len), issued as number `seq`, and
 * where the caller wants its blob ID (owner, node, ext: the pool does not look at them). */
struct rr_job {
    uint64_t start;
    size_t len;
    uint64_t seq;
    void *owner;
    size_t node, ext;
};

/* Called under mu when a job is issued: records the chunk in the caller's state and sets
 * j->ext. A negative ERR_* (with e filled) refuses the job. */
typedef int (*rr_claim_fn)(void *ctx, struct rr_job *j, struct err *e);
/* Called under mu on a worker when a job ends: `id` is its blob ID, or NULL when the job was
 * dropped (rr_drain, or after a failure) or failed; `added` tells the blob was new. */
typedef void (*rr_done_fn)(void *ctx, const struct rr_job *j, const struct oid *id, bool added);

struct rr_params {
    unsigned threads;  /* workers; 0: one per CPU (at most 256) */
    size_t ring_bytes; /* rounded up to pages; given the workers' count by rr_ring_bytes */
    const struct crypt_keys *keys; /* not owned; for blob IDs */
    struct store *store;           /* not owned */
    rr_claim_fn claim;
    rr_done_fn done;
    void *ctx;
};

struct rr_span; /* where each issued job's span ends, and whether it is done */

struct rr {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* workers wait for jobs */
    pthread_cond_t walker_cv; /* the walker waits for room, or for its own conditions */
    /* the ring */
    uint8_t *base; /* 2 * size bytes: the same pages twice */
    size_t size;
    uint64_t head, cut; /* the walker's */
    uint64_t tail;      /* under mu */
    /* the pool (under mu) */
    struct rr_params par;
    pthread_t *workers;
    unsigned n_workers;
    struct rr_job *q; /* circular queue of max_jobs */
    size_t q_head, q_len, max_jobs;
    struct rr_span *spans; /* max_jobs, indexed by seq % max_jobs */
    uint64_t issued, released;
    unsigned active; /* jobs a worker is processing */
    bool stop;       /* workers exit when the queue is empty */
    bool abort;      /* workers drop jobs without storing them */
    bool failed;     /* a worker failed; fail holds why */
    struct err fail;
    uint64_t bytes_new; /* bytes of chunks that were new to the repository */
};

/* Initializes the lock and conditions of a zeroed `p` (owned by the caller), so that mu can be
 * used before rr_start. rr_free releases everything. */
void rr_init(struct rr *p);
/* How many workers `threads` means (0: one per CPU), for sizing the ring. */
unsigned rr_workers(unsigned threads);
/* Maps the ring and starts the workers. Errors: ERR_FAIL (out of memory, mapping, threads);
 * rr_free cleans up after a failure too. */
int rr_start(struct rr *p, const struct rr_params *par, struct err *e);
/* Waits until the ring has at least `min` free bytes (*free_bytes: how many it has), or a
 * worker failed (its error). Walker only. */
int rr_wait_room(struct rr *p, size_t min, size_t *free_bytes, struct err *e);
/* Hands ring bytes [cut, cut + len) to the workers as job (owner, node), calling claim under
 * mu; blocks while every job slot is taken. Errors: a worker's failure, or claim's. Walker
 * only. */
int rr_submit(struct rr *p, void *owner, size_t node, size_t len, struct err *e);
/* A worker's failure, if any (0 otherwise). Thread-safe. */
int rr_check(struct rr *p, struct err *e);
/* The failure under mu (caller holds it): 0, or a worker's error copied into e. */
int rr_failure_locked(struct rr *p, struct err *e);
/* Makes the workers drop whatever is queued and waits until none is busy (on failure or
 * cancel). Walker only. */
void rr_drain(struct rr *p);
/* Lets the workers finish the queue and joins them. Walker only. */
void rr_stop(struct rr *p);
/* Stops the workers if running and frees everything rr_init and rr_start made. */
void rr_free(struct rr *p);

#endif
