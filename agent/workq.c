/* workq.c - the controller's work queue; see workq.h. */
#include "agent/workq.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "base/held.h"

void wq_init(struct wq *q)
{
    *q = (struct wq){0};
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->dirty = json_object();
    q->processing = json_object();
}

/* Appends a copy of `key` to the fifo; false when memory runs out. Caller holds mu. */
static bool push_locked(struct wq *q, const char *key)
{
    PV_ASSERT_HELD(&q->mu);
    assert(q->head <= q->n && q->n <= q->cap);
    if (q->head > 0 && q->head == q->n) q->head = q->n = 0;
    if (q->n == q->cap) {
        if (q->head > 0) { /* reuse the consumed front */
            memmove(q->fifo, q->fifo + q->head, (q->n - q->head) * sizeof *q->fifo);
            q->n -= q->head;
            q->head = 0;
        } else {
            size_t cap = q->cap ? q->cap * 2 : 64;
            char **f = realloc(q->fifo, cap * sizeof *f);
            if (!f) return false;
            q->fifo = f;
            q->cap = cap;
        }
    }
    char *k = strdup(key);
    if (!k) return false;
    q->fifo[q->n++] = k;
    pthread_cond_signal(&q->cv);
    return true;
}

void wq_add(struct wq *q, const char *key)
{
    pthread_mutex_lock(&q->mu);
    if (!q->shut && !json_object_get(q->dirty, key) &&
        json_object_set_new(q->dirty, key, json_true()) == 0) {
        /* Not queued, it is no longer dirty either, so that the resync's wq_add queues it. */
        if (!json_object_get(q->processing, key) && !push_locked(q, key))
            json_object_del(q->dirty, key);
    }
    pthread_mutex_unlock(&q->mu);
}

char *wq_get(struct wq *q)
{
    pthread_mutex_lock(&q->mu);
    while (!q->shut && q->head == q->n)
        pthread_cond_wait(&q->cv, &q->mu);
    char *k = NULL;
    if (!q->shut) {
        k = q->fifo[q->head++];
        /* Queued keys are dirty and none is handled twice at once. */
        assert(json_object_get(q->dirty, k) && !json_object_get(q->processing, k));
        json_object_set_new(q->processing, k, json_true());
        json_object_del(q->dirty, k);
    }
    pthread_mutex_unlock(&q->mu);
    return k;
}

void wq_done(struct wq *q, const char *key)
{
    pthread_mutex_lock(&q->mu);
    json_object_del(q->processing, key);
    if (json_object_get(q->dirty, key) && !push_locked(q, key)) json_object_del(q->dirty, key);
    pthread_mutex_unlock(&q->mu);
}

void wq_shut(struct wq *q)
{
    pthread_mutex_lock(&q->mu);
    q->shut = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void wq_free(struct wq *q)
{
    for (size_t i = q->head; i < q->n; i++)
        free(q->fifo[i]);
    free(q->fifo);
    json_decref(q->dirty);
    json_decref(q->processing);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}
