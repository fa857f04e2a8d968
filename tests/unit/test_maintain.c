/* test_maintain.c - scheduled maintenance: what is due given the records (quick hourly, full
 * daily, a full run counting as quick, failures not counting, --force), records stored in the
 * repository and read back by any later run, a full run pruning and checking, a quick run
 * deleting what was marked, and the newest records kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "maint_fixture.h"
#include "repo/maintain.h"

static void test_due(void **state)
{
    (void)state;
    struct maint_options o;
    maint_options_default(&o);
    struct maint_state st = {0};
    int64_t now = 1700000000;
    assert_int_equal(maint_due(&st, now, &o), MAINT_FULL); /* never ran */
    st.last_full = st.last_quick = now - 100;
    assert_int_equal(maint_due(&st, now, &o), MAINT_NONE);
    st.last_quick = now - MAINT_QUICK_EVERY;
    assert_int_equal(maint_due(&st, now, &o), MAINT_QUICK);
    st.last_full = now - MAINT_FULL_EVERY;
    assert_int_equal(maint_due(&st, now, &o), MAINT_FULL);
    o.want = MAINT_QUICK;
    assert_int_equal(maint_due(&st, now, &o), MAINT_QUICK);
    st.last_quick = now - 10;
    assert_int_equal(maint_due(&st, now, &o), MAINT_NONE);
    o.force = true;
    assert_int_equal(maint_due(&st, now, &o), MAINT_QUICK);
    o.want = MAINT_FULL;
    o.force = false;
    assert_int_equal(maint_due(&st, now, &o), MAINT_FULL);
    st.last_full = now - 10;
    assert_int_equal(maint_due(&st, now, &o), MAINT_NONE);
    o.full_every = 5;
    assert_int_equal(maint_due(&st, now, &o), MAINT_FULL);
    assert_string_equal(maint_kind_name(MAINT_QUICK), "quick");
}

static void test_record_codec(void **state)
{
    (void)state;
    struct maint_record m = {.kind = MAINT_FULL,
                             .started = 5,
                             .finished = 9,
                             .ok = false,
                             .packs_deleted = 3,
                             .bytes_freed = 1u << 30,
                             .check_errors = 2};
    snprintf(m.hostname, sizeof m.hostname, "node-1");
    snprintf(m.error, sizeof m.error, "check found 2 errors");
    struct buf b = BUF_INIT;
    struct err e;
    assert_int_equal(maint_record_encode(&m, &b, &e), 0);
    struct maint_record d;
    memset(&d, 0, sizeof d);
    assert_int_equal(maint_record_decode(b.data, b.len, &d, &e), 0);
    assert_int_equal(d.kind, MAINT_FULL);
    assert_false(d.ok);
    assert_string_equal(d.error, "check found 2 errors");
    assert_string_equal(d.hostname, "node-1");
    assert_int_equal(d.bytes_freed, 1u << 30);
    assert_int_equal(d.check_errors, 2);
    buf_free(&b);
    const char *bad[] = {"{}", "[]",
                         "{\"kind\":\"weekly\",\"started\":1,\"finished\":2,"
                         "\"hostname\":\"h\",\"ok\":true,\"packs_deleted\":0,"
                         "\"bytes_freed\":0,\"packs_pending\":0,\"check_errors\":0}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(maint_record_decode(bad[i], strlen(bad[i]), &d, &e), ERR_FAIL);
}

static int run(const char *loc, struct maint_options *o, struct maint_result *res)
{
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    struct lock_options lo = {.kind = LOCK_PRUNE};
    struct lock *lk;
    assert_int_equal(lock_acquire(r, &lo, &lk, &e), 0);
    int rc = maint_run(r, lk, o, res, &e);
    if (rc < 0) fprintf(stderr, "maint_run: %s\n", e.msg);
    lock_release(lk, &e);
    repo_close(r);
    return rc;
}

static void test_runs_and_records(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30], b[5] = {100, 101, 102, 103, 104};
    for (int i = 0; i < 30; i++)
        a[i] = i;
    struct oid sa = fx_backup(r, a, 30, NULL);
    struct oid sb = fx_backup(r, b, 5, NULL);
    fx_forget(r, &sa);
    repo_close(r);

    struct maint_options o;
    maint_options_default(&o);
    struct maint_result res;
    /* Nothing ran yet: a full run prunes and checks. */
    assert_int_equal(run(loc, &o, &res), 0);
    assert_int_equal(res.ran, MAINT_FULL);
    assert_true(res.prune.packs_deleted >= 3);
    assert_true(res.checked);
    assert_int_equal(res.check.errors, 0);
    assert_int_equal(fx_count(loc, "maintenance"), 1);
    /* Another job, later: nothing is due. */
    assert_int_equal(run(loc, &o, &res), 0);
    assert_int_equal(res.ran, MAINT_NONE);
    assert_true(res.before.last_full > 0);
    assert_true(res.next_quick > res.before.last_quick);
    assert_int_equal(fx_count(loc, "maintenance"), 1);

    /* A quick run deletes what a full prune left marked for a writer that has ended since. */
    r = fx_open(loc, NULL);
    int c[20];
    for (int i = 0; i < 20; i++)
        c[i] = 200 + i;
    struct oid sc = fx_backup(r, c, 20, NULL);
    fx_forget(r, &sc);
    repo_close(r);
    struct lock *lk;
    struct repo *w = fx_open(loc, &lk);
    o.want = MAINT_FULL;
    o.force = true;
    assert_int_equal(run(loc, &o, &res), 0);
    assert_true(res.prune.packs_pending >= 2);
    struct err e;
    assert_int_equal(lock_release(lk, &e), 0);
    repo_close(w);
    o.want = MAINT_QUICK;
    assert_int_equal(run(loc, &o, &res), 0);
    assert_int_equal(res.ran, MAINT_QUICK);
    assert_true(res.prune.packs_deleted >= 2);
    assert_false(res.checked);
    assert_int_equal(fx_count(loc, "deletions"), 0);
    assert_int_equal(fx_verify(loc, &sb), 0);

    /* A dry run records nothing; only the newest MAINT_KEEP records stay. */
    o.dry_run = true;
    int before = fx_count(loc, "maintenance");
    assert_int_equal(run(loc, &o, &res), 0);
    assert_int_equal(fx_count(loc, "maintenance"), before);
    o.dry_run = false;
    for (int i = 0; i < MAINT_KEEP + 2; i++)
        assert_int_equal(run(loc, &o, &res), 0);
    assert_int_equal(fx_count(loc, "maintenance"), MAINT_KEEP);
    struct maint_state st;
    struct maint_record *recs;
    size_t n;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    assert_int_equal(maint_state_load(r, &st, &recs, &n, &e), 0);
    assert_int_equal(n, MAINT_KEEP);
    for (size_t i = 1; i < n; i++)
        assert_true(recs[i - 1].finished >= recs[i].finished);
    assert_true(recs[0].ok);
    free(recs);
    repo_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_due),
        cmocka_unit_test(test_record_codec),
        cmocka_unit_test(test_runs_and_records),
    };
    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
