/* test_agent_workq.c - unit tests of agent/workq: a key queued once however often it is added,
 * in order; a key added while handled is handled again after wq_done and not before; one worker
 * at a time per key, and a last handling after the last add, under 4 threads; wq_shut wakes the
 * waiting workers, and keys added afterwards are ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "agent/workq.h"

static void expect_key(struct wq *q, const char *want)
{
    char *k = wq_get(q);
    assert_non_null(k);
    assert_string_equal(k, want);
    wq_done(q, k);
    free(k);
}

static size_t queued(struct wq *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->n - q->head;
    pthread_mutex_unlock(&q->mu);
    return n;
}

static void test_dedup_in_order(void **state)
{
    (void)state;
    struct wq q;
    wq_init(&q);
    wq_add(&q, "ns/a");
    wq_add(&q, "ns/b");
    wq_add(&q, "ns/a"); /* queued already: not again */
    assert_int_equal(queued(&q), 2);
    expect_key(&q, "ns/a");
    expect_key(&q, "ns/b");
    assert_int_equal(queued(&q), 0);
    for (int i = 0; i < 200; i++) { /* grows, and reuses the consumed front */
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        wq_add(&q, key);
    }
    assert_int_equal(queued(&q), 200);
    expect_key(&q, "k0");
    wq_add(&q, "k0");
    assert_int_equal(queued(&q), 200);
    wq_free(&q); /* frees the keys still queued (valgrind and ASan check) */
}

static void test_added_while_handled(void **state)
{
    (void)state;
    struct wq q;
    wq_init(&q);
    wq_add(&q, "a");
    char *a = wq_get(&q);
    assert_string_equal(a, "a");
    wq_add(&q, "a"); /* handled now: not queued beside itself */
    wq_add(&q, "a");
    assert_int_equal(queued(&q), 0);
    wq_add(&q, "b");
    expect_key(&q, "b"); /* another worker may not take "a" meanwhile */
    wq_done(&q, a);      /* ... but it comes back, once */
    free(a);
    assert_int_equal(queued(&q), 1);
    expect_key(&q, "a");
    assert_int_equal(queued(&q), 0);
    wq_free(&q);
}

#define N_KEYS 5
#define N_WORKERS 4
#define N_ADDS 3000

struct stress {
    struct wq q;
    atomic_int busy[N_KEYS]; /* workers handling the key now */
    atomic_int adds[N_KEYS]; /* adds so far */
    atomic_int seen[N_KEYS]; /* adds seen when a handling of the key last began */
    atomic_int overlaps;     /* handlings that found another one of the same key */
    atomic_int handled;
};

static void *stress_worker(void *arg)
{
    struct stress *s = arg;
    char *k;
    while ((k = wq_get(&s->q)) != NULL) {
        int i = k[0] - '0';
        if (atomic_fetch_add(&s->busy[i], 1) != 0) atomic_fetch_add(&s->overlaps, 1);
        atomic_store(&s->seen[i], atomic_load(&s->adds[i]));
        struct timespec ts = {0, 20000}; /* 20 us: long enough for adds to come meanwhile */
        nanosleep(&ts, NULL);
        atomic_fetch_sub(&s->busy[i], 1);
        atomic_fetch_add(&s->handled, 1);
        wq_done(&s->q, k);
        free(k);
    }
    return NULL;
}

static bool idle(struct wq *q)
{
    pthread_mutex_lock(&q->mu);
    bool empty = q->head == q->n && json_object_size(q->processing) == 0;
    pthread_mutex_unlock(&q->mu);
    return empty;
}

static void test_one_worker_per_key(void **state)
{
    (void)state;
    static struct stress s; /* zeroed */
    wq_init(&s.q);
    pthread_t t[N_WORKERS];
    for (int i = 0; i < N_WORKERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, stress_worker, &s), 0);
    for (int n = 0; n < N_ADDS; n++) {
        int i = (n * 7 + n / 3) % N_KEYS;
        char key[2] = {(char)('0' + i), 0};
        atomic_fetch_add(&s.adds[i], 1);
        wq_add(&s.q, key);
    }
    for (int tries = 0; tries < 5000 && !idle(&s.q); tries++) { /* 5 s at most */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_true(idle(&s.q));
    wq_shut(&s.q);
    for (int i = 0; i < N_WORKERS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&s.overlaps), 0);
    /* Every key was handled after its last add: none is lost while another handling runs. */
    for (int i = 0; i < N_KEYS; i++)
        assert_int_equal(atomic_load(&s.seen[i]), atomic_load(&s.adds[i]));
    assert_true(atomic_load(&s.handled) >= N_KEYS);
    assert_true(atomic_load(&s.handled) <= N_ADDS);
    wq_free(&s.q);
}

static void *get_one(void *arg)
{
    return wq_get(arg);
}

static void test_shutdown(void **state)
{
    (void)state;
    struct wq q;
    wq_init(&q);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, get_one, &q), 0);
    struct timespec ts = {0, 20000000}; /* let them wait */
    nanosleep(&ts, NULL);
    wq_shut(&q);
    for (int i = 0; i < 2; i++) {
        void *k = (void *)1;
        pthread_join(t[i], &k);
        assert_null(k); /* woken, with nothing */
    }
    wq_add(&q, "late"); /* ignored once shut */
    assert_int_equal(queued(&q), 0);
    assert_null(wq_get(&q));
    wq_free(&q);

    wq_init(&q); /* keys queued at the shut are dropped, and freed by wq_free */
    wq_add(&q, "x");
    wq_shut(&q);
    assert_null(wq_get(&q));
    wq_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedup_in_order),
        cmocka_unit_test(test_added_while_handled),
        cmocka_unit_test(test_one_worker_per_key),
        cmocka_unit_test(test_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
