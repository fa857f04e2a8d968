/* workq.h - a work queue of string keys for the controller's workers, with the guarantees of
 * client-go's workqueue (k8s.io/client-go/util/workqueue/queue.go): each key is handled by one
 * worker at a time; a key added while it waits is queued once; a key added while it is handled
 * is handled again after wq_done; wq_shut ends every wait.
 *
 * Thread-safety: every function but wq_init and wq_free may be called from any thread at once.
 * No errors: a key that cannot be queued for want of memory is dropped (the controller's resync
 * adds every key again). */
#ifndef PV_AGENT_WORKQ_H
#define PV_AGENT_WORKQ_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* Invariants (asserted): head <= n <= cap; a key in the fifo is dirty; a dirty key not being
 * processed is in the fifo once; mu is held wherever any field changes. */
struct wq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    json_t *dirty, *processing; /* sets of keys: queued, and being handled */
    char **fifo;                /* fifo[head..n) are queued, in order; owned */
    size_t head, n, cap;
    bool shut;
};

/* An empty queue, in storage the caller owns; wq_free releases what it holds. */
void wq_init(struct wq *q);
/* Queues `key` (copied) unless it is queued already; when it is being handled, it is queued
 * again by wq_done. Does nothing once the queue is shut. */
void wq_add(struct wq *q, const char *key);
/* Waits for the next key and marks it handled; the caller owns the string and ends the handling
 * with wq_done. NULL once the queue is shut (what was queued is then dropped). */
char *wq_get(struct wq *q);
/* Ends the handling of `key` (a string wq_get returned, not yet freed). */
void wq_done(struct wq *q, const char *key);
/* Shuts the queue: wq_get returns NULL from now on, and wakes every waiting thread. */
void wq_shut(struct wq *q);
/* Frees the queued keys and the queue's resources; no thread may use it any more. */
void wq_free(struct wq *q);

#endif
