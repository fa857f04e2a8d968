/* test_lock.c - locks and marks: a writer lock is listed and refreshed under a new object while
 * keeping its holder, goes stale by age or when its process died, is lost (and stops its
 * holder) when it cannot be refreshed; prune locks exclude each other but not a dead one; the
 * cancel flag reaches the stop flag; marks round-trip and make a writer's index forget their
 * packs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "maint_fixture.h"

static struct repo *open_plain(const char *loc)
{
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    return r;
}

static size_t count_kind(struct repo *r, enum lock_kind kind, struct lock_info *out)
{
    struct lock_info *list;
    size_t n, k = 0;
    struct err e;
    assert_int_equal(lock_list(r, &list, &n, &e), 0);
    for (size_t i = 0; i < n; i++)
        if (list[i].readable && list[i].kind == kind) {
            if (out) *out = list[i];
            k++;
        }
    free(list);
    return k;
}

static void test_writer_lock_listed_and_refreshed(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = open_plain(loc);
    struct lock_options o = {.kind = LOCK_BACKUP, .refresh_sec = 1, .stale_sec = 30};
    struct lock *lk;
    struct err e;
    assert_int_equal(lock_acquire(r, &o, &lk, &e), 0);
    struct lock_info a, b;
    assert_int_equal(count_kind(r, LOCK_BACKUP, &a), 1);
    assert_true(oid_eq(&a.holder, lock_holder(lk)));
    assert_int_equal(a.pid, getpid());
    assert_false(lock_is_stale(&a, (int64_t)time(NULL), 30));
    /* Stale once not refreshed for stale_sec, by the reader's clock. */
    assert_true(lock_is_stale(&a, a.refreshed + 31, 30));
    assert_false(lock_is_stale(&a, a.refreshed + 29, 30));
    sleep(3);
    assert_int_equal(count_kind(r, LOCK_BACKUP, &b), 1); /* the old object is gone */
    assert_false(oid_eq(&a.id, &b.id));
    assert_true(oid_eq(&a.holder, &b.holder));
    assert_true(b.refreshed > a.refreshed);
    assert_int_equal(b.started, a.started);
    assert_false(lock_lost(lk, NULL));
    assert_int_equal(lock_release(lk, &e), 0);
    assert_int_equal(count_kind(r, LOCK_BACKUP, NULL), 0);
    assert_int_equal(fx_count(loc, "locks"), 0);
    repo_close(r);
}

/* A child takes a lock and dies without releasing it. */
static void dead_holder(const char *loc, enum lock_kind kind)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct repo *r;
        struct err e;
        struct lock *lk;
        struct lock_options o = {.kind = kind};
        if (repo_open(loc, "pw", NULL, &r, &e) != 0 || lock_acquire(r, &o, &lk, &e) != 0) _exit(1);
        _exit(0); /* as if killed: the lock object stays */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_dead_process_is_stale(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    dead_holder(loc, LOCK_BACKUP);
    struct repo *r = open_plain(loc);
    struct lock_info li;
    assert_int_equal(count_kind(r, LOCK_BACKUP, &li), 1);
    /* Fresh by its time, but its process is gone on this very machine. */
    assert_true(li.refreshed >= (int64_t)time(NULL) - 5);
    assert_true(lock_is_stale(&li, (int64_t)time(NULL), 0));
    /* On another machine the PID says nothing: only age counts. */
    snprintf(li.machine, sizeof li.machine, "another-boot/pid:[1]");
    assert_false(lock_is_stale(&li, (int64_t)time(NULL), 0));
    assert_true(lock_is_stale(&li, li.refreshed + LOCK_STALE_SEC + 1, 0));
    size_t removed;
    struct err e;
    assert_int_equal(lock_remove_stale(r, (int64_t)time(NULL), 0, &removed, &e), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(count_kind(r, LOCK_BACKUP, NULL), 0);
    repo_close(r);
}

static void test_prune_locks_exclude_each_other(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r1 = open_plain(loc), *r2 = open_plain(loc);
    struct lock_options o = {.kind = LOCK_PRUNE};
    struct lock *a, *b, *w;
    struct err e;
    /* Writers never stand in a prune's way, nor the other way round. */
    assert_int_equal(lock_writer_begin(r1, NULL, &w, &e), 0);
    assert_int_equal(lock_acquire(r1, &o, &a, &e), 0);
    assert_int_equal(lock_acquire(r2, &o, &b, &e), ERR_EXISTS);
    assert_non_null(strstr(e.msg, "another maintenance operation"));
    /* The loser left no lock behind. */
    assert_int_equal(count_kind(r2, LOCK_PRUNE, NULL), 1);
    /* With a wait, it gets the lock once the holder is done. */
    o.wait_sec = 1;
    double t0 = (double)time(NULL);
    assert_int_equal(lock_acquire(r2, &o, &b, &e), ERR_EXISTS);
    assert_true((double)time(NULL) - t0 <= 3);
    assert_int_equal(lock_release(a, &e), 0);
    assert_int_equal(lock_acquire(r2, &o, &b, &e), 0);
    assert_int_equal(lock_release(b, &e), 0);
    assert_int_equal(lock_release(w, &e), 0);
    /* A prune that died does not hold the next one up. */
    dead_holder(loc, LOCK_PRUNE);
    assert_int_equal(count_kind(r1, LOCK_PRUNE, NULL), 1);
    o.wait_sec = 0;
    assert_int_equal(lock_acquire(r1, &o, &a, &e), 0);
    assert_int_equal(lock_release(a, &e), 0);
    repo_close(r1);
    repo_close(r2);
}

static void test_lost_lock_stops_holder(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = open_plain(loc);
    struct lock_options o = {.kind = LOCK_BACKUP, .refresh_sec = 1, .stale_sec = 3};
    struct lock *lk;
    struct err e;
    assert_int_equal(lock_acquire(r, &o, &lk, &e), 0);
    /* Refreshes start failing: locks/ becomes a file (this also holds for root). */
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/locks", loc);
    snprintf(b, sizeof b, "%s/locks.away", loc);
    assert_int_equal(rename(a, b), 0);
    FILE *f = fopen(a, "w");
    assert_non_null(f);
    fclose(f);
    const volatile int *stop = lock_stop_flag(lk);
    for (int i = 0; i < 50 && !*stop; i++)
        usleep(100 * 1000);
    assert_true(*stop);
    struct err why;
    assert_true(lock_lost(lk, &why));
    assert_non_null(strstr(why.msg, "lost the repository lock"));
    remove(a);
    assert_int_equal(rename(b, a), 0);
    lock_release(lk, &e);
    repo_close(r);
}

static void test_cancel_reaches_stop_flag(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = open_plain(loc);
    volatile int cancel = 0;
    struct lock *lk;
    struct err e;
    assert_int_equal(lock_writer_begin(r, &cancel, &lk, &e), 0);
    const volatile int *stop = lock_stop_flag(lk);
    usleep(300 * 1000);
    assert_false(*stop);
    cancel = 1;
    for (int i = 0; i < 20 && !*stop; i++)
        usleep(50 * 1000);
    assert_true(*stop);
    assert_false(lock_lost(lk, NULL));
    assert_int_equal(lock_release(lk, &e), 0);
    repo_close(r);
}

static void test_marks_round_trip_and_writer_forgets(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[12], b[3] = {100, 101, 102};
    for (int i = 0; i < 12; i++)
        a[i] = i;
    fx_backup(r, a, 12, NULL);
    struct oid sb = fx_backup(r, b, 3, NULL);
    struct oid b0 = fx_blob_id(r, 0), b100 = fx_blob_id(r, 100);
    struct oid p0 = fx_pack_of(r, &b0);
    repo_close(r);
    r = open_plain(loc);

    struct lock_mark m;
    memset(&m, 0, sizeof m);
    m.marked_at = 1234;
    m.packs = malloc(2 * sizeof *m.packs);
    m.packs[0] = p0;
    oid_random(&m.packs[1]); /* a pack that does not exist: harmless */
    m.n_packs = 2;
    m.snapshots = malloc(sizeof *m.snapshots);
    m.snapshots[0] = sb;
    m.n_snapshots = 1;
    struct err e;
    assert_int_equal(lock_mark_save(r, &m, &e), 0);
    struct lock_mark *list;
    size_t n;
    assert_int_equal(lock_marks_load(r, &list, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_true(oid_eq(&list[0].id, &m.id));
    assert_int_equal(list[0].marked_at, 1234);
    assert_int_equal(list[0].n_packs, 2);
    assert_false(list[0].has_waiting);
    assert_int_equal(list[0].n_snapshots, 1);
    assert_true(oid_eq(&list[0].snapshots[0], &sb));
    lock_marks_free(list, n);

    /* Waiting sets round-trip too, empty or not. */
    struct lock_mark m2 = {.marked_at = 5, .has_waiting = true};
    m2.packs = malloc(sizeof *m2.packs);
    m2.packs[0] = p0;
    m2.n_packs = 1;
    assert_int_equal(lock_mark_save(r, &m2, &e), 0);
    assert_int_equal(lock_marks_load(r, &list, &n, &e), 0);
    assert_int_equal(n, 2);
    size_t with = oid_eq(&list[0].id, &m2.id) ? 0 : 1;
    assert_true(list[with].has_waiting);
    assert_int_equal(list[with].n_waiting, 0);
    lock_marks_free(list, n);

    /* A writer's index does not know the marked pack's blobs, and knows the others. */
    size_t marked;
    assert_int_equal(lock_load_index(r, &marked, &e), 0);
    assert_int_equal(marked, 3);
    assert_false(idx_lookup(repo_index(r), &b0, NULL));
    assert_true(idx_lookup(repo_index(r), &b100, NULL));

    assert_int_equal(lock_mark_remove(r, &m.id, &e), 0);
    assert_int_equal(lock_mark_remove(r, &m2.id, &e), 0);
    assert_int_equal(lock_mark_remove(r, &m2.id, &e), 0); /* already gone: fine */
    assert_int_equal(lock_marks_load(r, &list, &n, &e), 0);
    assert_int_equal(n, 0);
    lock_marks_free(list, n);
    lock_mark_free(&m);
    lock_mark_free(&m2);
    repo_close(r);
}

static void test_unreadable_lock_counts_as_live(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    char path[800];
    snprintf(path, sizeof path, "%s/locks", loc);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/locks/%064d", loc, 7);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("garbage", f);
    fclose(f);
    struct repo *r = open_plain(loc);
    struct lock_info *list;
    size_t n;
    struct err e;
    assert_int_equal(lock_list(r, &list, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_false(list[0].readable);
    assert_false(lock_is_stale(&list[0], INT64_MAX / 2, 0));
    free(list);
    repo_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_lock_listed_and_refreshed),
        cmocka_unit_test(test_dead_process_is_stale),
        cmocka_unit_test(test_prune_locks_exclude_each_other),
        cmocka_unit_test(test_lost_lock_stops_holder),
        cmocka_unit_test(test_cancel_reaches_stop_flag),
        cmocka_unit_test(test_marks_round_trip_and_writer_forgets),
        cmocka_unit_test(test_unreadable_lock_counts_as_live),
    };
    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
