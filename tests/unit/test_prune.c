/* test_prune.c - prune on real temporary repositories: it deletes exactly what no snapshot
 * uses, repacks partly used packs, waits for writers that were live when it marked, unmarks
 * what a writer came to use, honours marks in later writers, removes orphan packs, changes
 * nothing on a dry run or when the index is broken, and resumes after an interruption at each
 * step, the repository checking clean in between. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "maint_fixture.h"
#include "repo/check.h"
#include "repo/pack.h"
#include "repo/prune.h"
#include "repo/walk.h"

struct acts {
    size_t n;
    struct act {
        struct oid pack;
        enum prune_action a;
        uint64_t size, used;
    } v[256];
};

struct run {
    const char *cancel_at; /* phase at which to interrupt */
    volatile int cancel;
    void (*hook)(void *hctx, const char *phase);
    void *hctx;
    struct acts *acts; /* each pack acted on (may be NULL), sorted after the run */
    char *msg;         /* prune's message on failure (may be NULL: printed) */
};

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    (void)done;
    (void)total;
    struct run *rn = ctx;
    if (rn->hook) rn->hook(rn->hctx, phase);
    if (rn->cancel_at && strcmp(phase, rn->cancel_at) == 0) {
        rn->cancel = 1;
        usleep(500 * 1000); /* the lock's thread folds it into the stop flag within 200 ms */
    }
}

static void on_pack(void *ctx, enum prune_action a, const struct oid *pack, uint64_t size,
                    uint64_t used)
{
    struct acts *l = ((struct run *)ctx)->acts;
    if (l && l->n < 256) l->v[l->n++] = (struct act){*pack, a, size, used};
}

static int cmp_act(const void *pa, const void *pb)
{
    const struct act *a = pa, *b = pb;
    int c = oid_cmp(&a->pack, &b->pack);
    return c ? c : (int)a->a - (int)b->a;
}

/* Runs prune under a prune lock of its own; returns prune's result. */
static int run_prune(const char *loc, struct prune_options *o, struct run *rn,
                     struct prune_stats *st)
{
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    struct run none = {0};
    if (!rn) rn = &none;
    struct lock_options lo = {.kind = LOCK_PRUNE, .cancel = &rn->cancel};
    struct lock *lk;
    assert_int_equal(lock_acquire(r, &lo, &lk, &e), 0);
    o->progress = on_progress;
    o->pack = on_pack;
    o->ctx = rn;
    if (rn->acts) memset(rn->acts, 0, sizeof *rn->acts);
    int rc = prune_run(r, lk, o, st, &e);
    if (rc < 0 && rc != ERR_CANCELED && !rn->msg) fprintf(stderr, "prune: %s\n", e.msg);
    if (rc < 0 && rn->msg) snprintf(rn->msg, ERR_MSG_MAX, "%s", e.msg);
    if (rn->acts) qsort(rn->acts->v, rn->acts->n, sizeof *rn->acts->v, cmp_act);
    assert_int_equal(lock_release(lk, &e), 0);
    repo_close(r);
    return rc;
}

/* Runs check; returns errors, and warnings in *warnings. */
static int run_check(const char *loc, bool read_data, uint64_t *warnings)
{
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    struct check_options o = {.read = read_data ? CHECK_READ_ALL : CHECK_READ_NONE};
    struct check_stats st;
    assert_int_equal(check_run(r, &o, &st, &e), 0);
    repo_close(r);
    if (warnings) *warnings = st.warnings;
    return (int)st.errors;
}

static void nums(int *v, int from, int to)
{
    for (int i = from; i < to; i++)
        v[i - from] = i;
}

static void test_deletes_unused(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30], b[30];
    nums(a, 0, 30);
    nums(b, 100, 130);
    struct oid sa = fx_backup(r, a, 30, NULL);
    struct oid sb = fx_backup(r, b, 30, NULL);
    struct oid blob_a = fx_blob_id(r, 3), blob_b = fx_blob_id(r, 103);
    struct oid pa = fx_pack_of(r, &blob_a), pb = fx_pack_of(r, &blob_b);
    int packs_before = fx_count(loc, "data");
    fx_forget(r, &sa);
    repo_close(r);

    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_true(st.packs_deleted >= 3);
    assert_true(st.bytes_freed > 30u * 96 * 1024);
    assert_int_equal(st.packs_pending, 0);
    assert_int_equal(st.packs_repacked, 0);
    assert_int_equal(fx_count(loc, "data"), packs_before - (int)st.packs_deleted);
    assert_false(fx_pack_exists(loc, &pa));
    assert_true(fx_pack_exists(loc, &pb));
    assert_int_equal(fx_verify(loc, &sb), 0);
    /* Nothing of A is indexed any more, and the index was rewritten as one file. */
    r = fx_open(loc, NULL);
    assert_false(idx_lookup(repo_index(r), &blob_a, NULL));
    assert_true(idx_lookup(repo_index(r), &blob_b, NULL));
    repo_close(r);
    assert_int_equal(fx_count(loc, "index"), 1);
    assert_int_equal(fx_count(loc, "deletions"), 0);
    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(warn, 0);

    /* A second prune finds nothing to do. */
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(st.packs_deleted + st.packs_repacked + st.packs_marked, 0);
}

static void test_repacks_partly_used(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30], b[10] = {0, 1, 2, 3, 4, 10, 11, 12, 13, 14};
    nums(a, 0, 30);
    struct oid sa = fx_backup(r, a, 30, NULL);
    struct oid sb = fx_backup(r, b, 10, NULL);
    struct oid b0 = fx_blob_id(r, 0), b14 = fx_blob_id(r, 14), b25 = fx_blob_id(r, 25),
               b5 = fx_blob_id(r, 5);
    struct oid p0 = fx_pack_of(r, &b0), p14 = fx_pack_of(r, &b14);
    assert_false(oid_eq(&p0, &p14));
    fx_forget(r, &sa);
    repo_close(r);

    struct prune_options o;
    prune_options_default(&o);
    o.max_unused = 0;
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(st.packs_repacked, 2);
    assert_int_equal(st.blobs_repacked, 10);
    assert_false(fx_pack_exists(loc, &p0));
    assert_false(fx_pack_exists(loc, &p14));
    assert_int_equal(fx_verify(loc, &sb), 0);
    r = fx_open(loc, NULL);
    struct oid n0 = fx_pack_of(r, &b0), n14 = fx_pack_of(r, &b14);
    assert_true(oid_eq(&n0, &n14)); /* merged into one new pack */
    assert_false(idx_lookup(repo_index(r), &b25, NULL));
    assert_false(idx_lookup(repo_index(r), &b5, NULL));
    repo_close(r);
    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(warn, 0);
}

static void test_waits_for_writer(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30], b[5] = {100, 101, 102, 103, 104};
    nums(a, 0, 30);
    struct oid sa = fx_backup(r, a, 30, NULL);
    struct oid sb = fx_backup(r, b, 5, NULL);
    struct oid b3 = fx_blob_id(r, 3);
    struct oid p3 = fx_pack_of(r, &b3);
    fx_forget(r, &sa);
    repo_close(r);

    struct lock *lk;
    struct repo *w = fx_open(loc, &lk); /* a backup in progress */
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(st.packs_deleted, 0);
    assert_true(st.packs_pending >= 3);
    assert_int_equal(st.waiting_writers, 1);
    assert_true(fx_pack_exists(loc, &p3));
    assert_int_equal(fx_count(loc, "deletions"), 1);
    /* Still waiting on a second run. */
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(st.packs_deleted, 0);
    assert_true(fx_pack_exists(loc, &p3));
    uint64_t warn;
    assert_int_equal(run_check(loc, false, &warn), 0);

    struct err e;
    assert_int_equal(lock_release(lk, &e), 0);
    repo_close(w);
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_true(st.packs_deleted >= 3);
    assert_false(fx_pack_exists(loc, &p3));
    assert_int_equal(fx_count(loc, "deletions"), 0);
    assert_int_equal(fx_verify(loc, &sb), 0);
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(warn, 0);
}

/* A writer that loaded the index before the mark refers to blobs of a marked pack. */
static void test_unmarks_what_writer_used(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30];
    nums(a, 0, 30);
    struct oid sa = fx_backup(r, a, 30, NULL);
    struct oid b5 = fx_blob_id(r, 5), b25 = fx_blob_id(r, 25);
    struct oid p5 = fx_pack_of(r, &b5), p25 = fx_pack_of(r, &b25);
    fx_forget(r, &sa);
    repo_close(r);

    struct lock *lk;
    struct repo *w = fx_open(loc, &lk);
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_true(st.packs_pending >= 3);
    /* The writer deduplicates against what it loaded: blobs 5..7 are not stored again. */
    int use[3] = {5, 6, 7};
    struct oid sw = fx_backup(w, use, 3, NULL);
    struct err e;
    assert_int_equal(lock_release(lk, &e), 0);
    repo_close(w);
    assert_true(fx_pack_exists(loc, &p5));

    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_true(st.packs_unmarked >= 1);
    assert_true(fx_pack_exists(loc, &p5));
    assert_false(fx_pack_exists(loc, &p25));
    assert_int_equal(fx_verify(loc, &sw), 0);
    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
    /* The unmarked pack is partly used now: a later prune may repack it, never lose it. */
    o.max_unused = 0;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(fx_verify(loc, &sw), 0);
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(warn, 0);
}

struct late_writer {
    const char *loc;
    int done;
    struct oid snap;
};

/* At the "marking" phase (after the walk, before the mark and the lock listing), a writer that
 * loaded the index earlier saves a snapshot using blobs the walk found unused, and ends. */
static struct lock *late_lock;
static struct repo *late_repo;

static void late_hook(void *ctx, const char *phase)
{
    struct late_writer *lw = ctx;
    if (strcmp(phase, "marking") != 0 || lw->done) return;
    int use[2] = {8, 9};
    lw->snap = fx_backup(late_repo, use, 2, NULL);
    struct err e;
    assert_int_equal(lock_release(late_lock, &e), 0);
    lw->done = 1;
}

static void test_recheck_finds_late_snapshot(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30];
    nums(a, 0, 30);
    struct oid sa = fx_backup(r, a, 30, NULL);
    struct oid b8 = fx_blob_id(r, 8);
    struct oid p8 = fx_pack_of(r, &b8);
    fx_forget(r, &sa);
    repo_close(r);

    late_repo = fx_open(loc, &late_lock);
    struct late_writer lw = {.loc = loc};
    struct run rn = {.hook = late_hook, .hctx = &lw};
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, &rn, &st), 0);
    assert_true(lw.done);
    repo_close(late_repo);
    /* The writer had ended by the lock listing, so nothing waited for it; the re-check found
     * its snapshot and kept the pack it uses. */
    assert_int_equal(st.waiting_writers, 0);
    assert_true(st.packs_unmarked >= 1);
    assert_true(st.packs_deleted >= 2);
    assert_true(fx_pack_exists(loc, &p8));
    assert_int_equal(fx_verify(loc, &lw.snap), 0);
    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
}

/* A repository whose only snapshot (files 0..29) was forgotten: every pack is unused. Returns
 * the pack holding file 5's blob, whose ID goes to *b5. */
static struct oid forgotten_history(char loc[600], struct oid *b5)
{
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30];
    nums(a, 0, 30);
    struct oid sa = fx_backup(r, a, 30, NULL);
    *b5 = fx_blob_id(r, 5);
    struct oid p5 = fx_pack_of(r, b5);
    fx_forget(r, &sa);
    repo_close(r);
    return p5;
}

static void test_writer_honours_marks(void **state)
{
    (void)state;
    char loc[600];
    struct oid b5, p5 = forgotten_history(loc, &b5);

    struct lock *lk1, *lk2;
    struct repo *w1 = fx_open(loc, &lk1); /* live through the prune: deletions wait */
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_true(st.packs_pending >= 3);

    /* A writer starting after the mark does not see the marked packs' blobs. */
    struct repo *w2;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &w2, &e), 0);
    assert_int_equal(lock_writer_begin(w2, NULL, &lk2, &e), 0);
    size_t marked = 0;
    assert_int_equal(lock_load_index(w2, &marked, &e), 0);
    assert_true(marked >= 3);
    assert_false(idx_lookup(repo_index(w2), &b5, NULL));
    int use[1] = {5};
    struct oid sw = fx_backup(w2, use, 1, NULL);
    struct oid n5 = fx_pack_of(w2, &b5);
    assert_false(oid_eq(&n5, &p5)); /* stored again, in a pack of its own */
    assert_int_equal(lock_release(lk2, &e), 0);
    repo_close(w2);
    assert_int_equal(lock_release(lk1, &e), 0);
    repo_close(w1);

    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_true(st.packs_deleted >= 3);
    assert_false(fx_pack_exists(loc, &p5)); /* its copy of blob 5 is not needed */
    assert_int_equal(fx_verify(loc, &sw), 0);
    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(warn, 0);
}

/* A writer that started after the mark stores a marked blob again, in a pack of its own, while
 * a prune that deletes the marked pack runs (its index file appears after the prune loaded the
 * index): the new copy must stay indexed. */
struct restore_hook {
    struct repo *w;
    struct oid tree;
    bool done;
};

static void store_hook(void *ctx, const char *phase)
{
    struct restore_hook *h = ctx;
    if (strcmp(phase, "marking") != 0 || h->done) return;
    int use[2] = {5, 6};
    h->tree = fx_store(h->w, use, 2);
    h->done = true;
}

static void test_new_copy_stays_indexed(void **state)
{
    (void)state;
    char loc[600];
    struct oid b5, p5 = forgotten_history(loc, &b5);

    struct lock *lk1, *lk2;
    struct repo *w1 = fx_open(loc, &lk1);
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0); /* marks; w1 holds the deletion */
    struct err e;
    assert_int_equal(lock_release(lk1, &e), 0);
    repo_close(w1);
    struct restore_hook h = {.w = fx_open(loc, &lk2)}; /* honours the mark */
    struct run rn = {.hook = store_hook, .hctx = &h};
    /* w1 has ended: the marked packs go, while w2 stores blob 5 again. */
    assert_int_equal(run_prune(loc, &o, &rn, &st), 0);
    assert_true(h.done);
    assert_true(st.packs_deleted >= 3);
    assert_false(fx_pack_exists(loc, &p5));
    struct oid sw = fx_save(h.w, &h.tree, NULL);
    assert_int_equal(lock_release(lk2, &e), 0);
    repo_close(h.w);
    assert_int_equal(fx_verify(loc, &sw), 0);
    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(fx_verify(loc, &sw), 0);
}

/* A pack no index lists, as a backup that died leaves behind. */
static struct oid write_orphan(const char *loc)
{
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    struct pack_writer *pw;
    int fd;
    assert_int_equal(backend_tmp_file(repo_backend(r), &fd, &e), 0);
    assert_int_equal(pack_writer_new(&pw, fd, &e), 0);
    size_t len;
    uint8_t *d = fx_content(999, &len);
    struct oid id, pack_id;
    crypt_blob_id(repo_keys(r), d, len, &id, NULL);
    struct buf sealed = BUF_INIT;
    assert_int_equal(crypt_blob_seal(repo_keys(r), BLOB_DATA, &id, d, len, 0, &sealed, &e), 0);
    assert_int_equal(
        pack_writer_add(pw, BLOB_DATA, &id, sealed.data, sealed.len, (uint32_t)len, &e), 0);
    uint64_t pack_len;
    assert_int_equal(pack_writer_finish(pw, repo_keys(r), &pack_id, &pack_len, &e), 0);
    assert_int_equal(repo_save_pack(r, &pack_id, BLOB_DATA, pw, pack_len, &e), 0);
    buf_free(&sealed);
    free(d);
    pack_writer_free(pw);
    repo_close(r);
    return pack_id;
}

static void test_orphan_pack(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int b[3] = {1, 2, 3};
    struct oid sb = fx_backup(r, b, 3, NULL);
    repo_close(r);
    struct oid orphan = write_orphan(loc);
    uint64_t warn;
    assert_int_equal(run_check(loc, false, &warn), 0);
    assert_int_equal(warn, 1); /* the orphan, reported as unreferenced data */

    /* While a writer is live it might be that writer's pack: kept. */
    struct lock *lk;
    struct repo *w = fx_open(loc, &lk);
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(st.packs_unindexed, 1);
    assert_true(fx_pack_exists(loc, &orphan));
    struct err e;
    assert_int_equal(lock_release(lk, &e), 0);
    repo_close(w);
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_false(fx_pack_exists(loc, &orphan));
    assert_int_equal(fx_verify(loc, &sb), 0);
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(warn, 0);
}

static void test_dry_run_changes_nothing(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30], b[10] = {0, 1, 2, 3, 4, 10, 11, 12, 13, 14};
    nums(a, 0, 30);
    struct oid sa = fx_backup(r, a, 30, NULL);
    fx_backup(r, b, 10, NULL);
    fx_forget(r, &sa);
    repo_close(r);
    int packs = fx_count(loc, "data"), idx = fx_count(loc, "index");
    struct prune_options o;
    prune_options_default(&o);
    o.max_unused = 0;
    o.dry_run = true;
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(st.packs_repacked, 2);
    assert_true(st.packs_deleted >= 1);
    assert_true(st.bytes_freed > 0);
    assert_int_equal(fx_count(loc, "data"), packs);
    assert_int_equal(fx_count(loc, "index"), idx);
    assert_int_equal(fx_count(loc, "deletions"), 0);
}

/* A dry run with a bound and its plan. Returns prune's result. */
static int dry_plan(const char *loc, uint64_t bound, struct acts *l, struct prune_stats *st,
                    char msg[ERR_MSG_MAX])
{
    struct prune_options o;
    prune_options_default(&o);
    o.max_unused = 0;
    o.dry_run = true;
    o.max_memory = bound;
    char quiet[ERR_MSG_MAX];
    struct run rn = {.acts = l, .msg = msg ? msg : quiet};
    return run_prune(loc, &o, &rn, st);
}

/* A history with packs to delete and to repack, the oldest snapshot forgotten; *keep gets the
 * two snapshots that stay. */
static void bounded_history(char loc[600], struct oid keep[2])
{
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[40], b[10] = {0, 1, 2, 3, 4, 10, 11, 12, 13, 14}, c[20];
    nums(a, 0, 40);
    nums(c, 200, 220);
    struct oid sa = fx_backup(r, a, 40, NULL);
    keep[0] = fx_backup(r, b, 10, NULL);
    keep[1] = fx_backup(r, c, 20, NULL);
    fx_forget(r, &sa);
    repo_close(r);
}

/* The largest bound that needs at least 4 passes (bisection on the outcome). */
static uint64_t four_pass_bound(const char *loc)
{
    uint64_t lo = 1024, hi = 1 << 20;
    char msg[ERR_MSG_MAX];
    struct acts l;
    struct prune_stats st;
    while (hi - lo > 64) {
        uint64_t mid = lo + (hi - lo) / 2;
        int rc = dry_plan(loc, mid, &l, &st, msg);
        if (rc == ERR_FAIL) assert_non_null(strstr(msg, "at least"));
        if (rc == ERR_FAIL || st.passes >= 4)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void assert_same_acts(const struct acts *l0, const struct acts *l1)
{
    assert_int_equal(l1->n, l0->n);
    for (size_t i = 0; i < l0->n; i++) {
        assert_true(oid_eq(&l0->v[i].pack, &l1->v[i].pack));
        assert_int_equal(l0->v[i].a, l1->v[i].a);
        assert_int_equal(l0->v[i].size, l1->v[i].size);
        assert_int_equal(l0->v[i].used, l1->v[i].used);
    }
}

/* A bounded prune (s1) deleted and repacked what the unbounded one (s0) did, and left nothing
 * marked for later. */
static void assert_same_outcome(const struct prune_stats *s1, const struct prune_stats *s0)
{
    assert_int_equal(s1->packs_deleted, s0->packs_deleted);
    assert_int_equal(s1->packs_repacked, s0->packs_repacked);
    assert_int_equal(s1->blobs_repacked, s0->blobs_repacked);
    assert_int_equal(s1->bytes_deleted, s0->bytes_deleted);
    assert_int_equal(s1->packs_pending, 0);
}

/* The plan with and without a bound that forces several passes is the same, pack by pack; any
 * run given a bound below what one range needs fails at once. */
static void test_bounded_plan(void **state)
{
    (void)state;
    char loc[600];
    struct oid keep[2];
    bounded_history(loc, keep);
    struct acts l0, l1;
    struct prune_stats s0, s1;
    assert_int_equal(dry_plan(loc, 0, &l0, &s0, NULL), 0);
    assert_int_equal(s0.passes, 1);
    assert_true(s0.packs_repacked >= 1);
    assert_true(s0.packs_deleted >= 1);
    uint64_t bound = four_pass_bound(loc);
    assert_int_equal(dry_plan(loc, bound, &l1, &s1, NULL), 0);
    assert_true(s1.passes >= 4);
    assert_same_acts(&l0, &l1);
    assert_int_equal(s1.blobs, s0.blobs);
    assert_int_equal(s1.blobs_used, s0.blobs_used);
    assert_int_equal(s1.trees, s0.trees);
    assert_int_equal(s1.packs_deleted, s0.packs_deleted);
    assert_int_equal(s1.packs_repacked, s0.packs_repacked);
    assert_int_equal(s1.bytes_freed, s0.bytes_freed);
    assert_int_equal(s1.bytes_unused_after, s0.bytes_unused_after);

    /* Too small: a clear error naming the least bound, before anything is read. */
    char msg[ERR_MSG_MAX];
    assert_int_equal(dry_plan(loc, 4096, &l1, &s1, msg), ERR_FAIL);
    assert_non_null(strstr(msg, "too small"));
    assert_non_null(strstr(msg, "at least"));
    assert_int_equal(l1.n, 0);
}

static int add_blob(void *ctx, const struct oid *blob, const struct idx_loc *loc)
{
    (void)loc;
    struct oid_set {
        struct oid *v;
        size_t n;
    } *s = ctx;
    s->v[s->n++] = *blob;
    return 0;
}

/* A real prune under a bound that forces at least 4 passes deletes and repacks exactly what the
 * unbounded one does on an identical repository, and leaves it indexing the same blobs, checking
 * clean and restorable; a bound too small for one range fails at once, changing nothing. */
static void test_bounded_prune(void **state)
{
    (void)state;
    char loc[600], twin[600], cmd[1300];
    struct oid keep[2];
    bounded_history(loc, keep);
    fixture_location(twin);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", loc, twin);
    assert_int_equal(system(cmd), 0);
    uint64_t bound = four_pass_bound(loc);

    /* Too small: fails at once, changing nothing. */
    int packs = fx_count(loc, "data"), idx = fx_count(loc, "index");
    struct prune_options o;
    prune_options_default(&o);
    o.max_unused = 0;
    o.max_memory = 4096;
    char msg[ERR_MSG_MAX];
    struct acts l0, l1;
    struct run rn = {.acts = &l1, .msg = msg};
    struct prune_stats s0, s1;
    assert_int_equal(run_prune(loc, &o, &rn, &s1), ERR_FAIL);
    assert_non_null(strstr(msg, "too small"));
    assert_non_null(strstr(msg, "at least"));
    assert_int_equal(l1.n, 0);
    assert_int_equal(fx_count(loc, "data"), packs);
    assert_int_equal(fx_count(loc, "index"), idx);
    assert_int_equal(fx_count(loc, "deletions"), 0);

    o.max_memory = bound;
    assert_int_equal(run_prune(loc, &o, &rn, &s1), 0);
    assert_true(s1.passes >= 4);
    struct run rn0 = {.acts = &l0};
    o.max_memory = 0;
    assert_int_equal(run_prune(twin, &o, &rn0, &s0), 0);
    assert_int_equal(s0.passes, 1);
    assert_true(s0.packs_repacked >= 1);
    assert_true(s0.packs_deleted >= 1);
    assert_same_acts(&l0, &l1);
    assert_same_outcome(&s1, &s0);
    assert_int_equal(fx_count(loc, "data"), fx_count(twin, "data"));
    assert_int_equal(fx_count(loc, "deletions"), 0);

    /* Both index the same blobs. */
    struct repo *r0 = fx_open(twin, NULL), *r1 = fx_open(loc, NULL);
    size_t n = idx_blob_count(repo_index(r0));
    assert_int_equal(idx_blob_count(repo_index(r1)), n);
    struct {
        struct oid *v;
        size_t n;
    } set = {malloc((n ? n : 1) * sizeof(struct oid)), 0};
    assert_non_null(set.v);
    assert_int_equal(idx_foreach(repo_index(r0), add_blob, &set), 0);
    for (size_t i = 0; i < set.n; i++)
        assert_true(idx_lookup(repo_index(r1), &set.v[i], NULL));
    free(set.v);
    repo_close(r0);
    repo_close(r1);

    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
    assert_int_equal(warn, 0);
    assert_int_equal(fx_verify(loc, &keep[0]), 0);
    assert_int_equal(fx_verify(loc, &keep[1]), 0);
    /* Nothing is left to do. */
    o.max_memory = bound;
    assert_int_equal(run_prune(loc, &o, NULL, &s1), 0);
    assert_int_equal(s1.packs_deleted + s1.packs_repacked + s1.packs_marked, 0);
}

/* The figure after `key` in a message, e.g. "(%llu bytes)". */
static uint64_t msg_figure(const char *msg, const char *key, const char *fmt)
{
    const char *t = strstr(msg, key);
    unsigned long long v = 0;
    assert_non_null(t);
    assert_int_equal(sscanf(t + strlen(key), fmt, &v), 1);
    return v;
}

/* A bound that leaves, beside `passes` passes, room for the largest repacked pack alone, so that
 * each repacked pack is copied in a batch of its own. From the messages: a bound too small for the
 * analysis names its fixed part, what one pass needs and the least it takes; at that least, no
 * room is left for the repack, whose message names the least it takes. */
static uint64_t batch_bound(const char *loc, uint32_t passes)
{
    char msg[ERR_MSG_MAX];
    struct acts l;
    struct prune_stats st;
    assert_int_equal(dry_plan(loc, 4096, &l, &st, msg), ERR_FAIL);
    uint64_t fixed = msg_figure(msg, "alone take ", "%llu"),
             one = msg_figure(msg, "one pass needs ", "%llu"),
             least = msg_figure(msg, "MiB (", "%llu");
    assert_true(least < one);
    assert_int_equal(dry_plan(loc, least, &l, &st, msg), ERR_FAIL);
    assert_non_null(strstr(msg, "too small to prune this repository"));
    assert_non_null(strstr(msg, "to repack pack"));
    uint64_t least2 = msg_figure(msg, "MiB (", "%llu");
    assert_true(least2 > least);
    return walk_pass_need(fixed, one - fixed, passes) + (least2 - least);
}

/* A real prune under a bound that leaves room for one repacked pack at a time beside a pass
 * copies them in several batches (one range, and several) through one store: it deletes and
 * repacks what the unbounded one does on an identical repository, writes as many packs, and
 * leaves every snapshot loading and the repository checking clean. */
static void test_bounded_repack_batches(void **state)
{
    (void)state;
    char loc[600], twin[600], copy[600], cmd[1300];
    struct oid keep[2];
    bounded_history(loc, keep);
    fixture_location(twin);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", loc, twin);
    assert_int_equal(system(cmd), 0);
    struct acts d0, d1, l0, l1;
    struct prune_stats s0, s1;
    assert_int_equal(dry_plan(loc, 0, &d0, &s0, NULL), 0);
    assert_int_equal(s0.repack_batches, 1);
    assert_true(s0.packs_repacked >= 2);
    struct prune_options o;
    prune_options_default(&o);
    o.max_unused = 0;
    struct run rn0 = {.acts = &l0};
    assert_int_equal(run_prune(twin, &o, &rn0, &s0), 0);
    assert_int_equal(s0.repack_batches, 1);
    assert_true(s0.packs_repacked >= 2);

    const uint32_t passes[2] = {1, 4};
    for (int i = 0; i < 2; i++) {
        uint64_t bound = batch_bound(loc, passes[i]);
        assert_int_equal(dry_plan(loc, bound, &d1, &s1, NULL), 0);
        assert_true(s1.repack_batches >= 2);
        assert_same_acts(&d0, &d1);

        fixture_location(copy);
        snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", loc, copy);
        assert_int_equal(system(cmd), 0);
        o.max_memory = bound;
        struct run rn1 = {.acts = &l1};
        assert_int_equal(run_prune(copy, &o, &rn1, &s1), 0);
        assert_true(s1.repack_batches >= 2);
        if (passes[i] == 1)
            assert_int_equal(s1.passes, 1);
        else
            assert_true(s1.passes >= 2);
        assert_same_acts(&l0, &l1);
        assert_same_outcome(&s1, &s0);
        assert_int_equal(fx_count(copy, "data"), fx_count(twin, "data"));
        assert_int_equal(fx_count(copy, "deletions"), 0);
        uint64_t warn;
        assert_int_equal(run_check(copy, true, &warn), 0);
        assert_int_equal(warn, 0);
        assert_int_equal(fx_verify(copy, &keep[0]), 0);
        assert_int_equal(fx_verify(copy, &keep[1]), 0);
        o.max_memory = 0;
        assert_int_equal(run_prune(copy, &o, NULL, &s1), 0);
        assert_int_equal(s1.packs_deleted + s1.packs_repacked + s1.packs_marked, 0);
    }
}

static void test_refuses_broken_index(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[5] = {1, 2, 3, 4, 5};
    fx_backup(r, a, 5, NULL);
    repo_close(r);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -f '%s'/index/*", loc);
    assert_int_equal(system(cmd), 0);
    int packs = fx_count(loc, "data");
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), ERR_FAIL);
    assert_int_equal(fx_count(loc, "data"), packs);
    assert_int_equal(fx_count(loc, "deletions"), 0);
}

static void test_interrupted_resumes(void **state)
{
    (void)state;
    const char *phases[] = {"walking snapshots", "repacking", "marking", "writing the index",
                            "deleting packs"};
    for (size_t k = 0; k < sizeof phases / sizeof *phases; k++) {
        char loc[600];
        fx_create(loc);
        struct repo *r = fx_open(loc, NULL);
        int a[30], b[12] = {0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 200, 201};
        nums(a, 0, 30);
        struct oid sa = fx_backup(r, a, 30, NULL);
        struct oid sb = fx_backup(r, b, 12, NULL);
        fx_forget(r, &sa);
        repo_close(r);

        struct prune_options o;
        prune_options_default(&o);
        o.max_unused = 0;
        struct prune_stats st;
        struct run rn = {.cancel_at = phases[k]};
        int rc = run_prune(loc, &o, &rn, &st);
        if (rc != ERR_CANCELED) fprintf(stderr, "phase %s: prune returned %d\n", phases[k], rc);
        assert_int_equal(rc, ERR_CANCELED);
        uint64_t warn;
        assert_int_equal(run_check(loc, true, &warn), 0);
        assert_int_equal(fx_verify(loc, &sb), 0);

        assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
        assert_int_equal(run_check(loc, true, &warn), 0);
        assert_int_equal(warn, 0);
        assert_int_equal(fx_verify(loc, &sb), 0);
        assert_int_equal(fx_count(loc, "deletions"), 0);
        assert_int_equal(fx_count(loc, "index"), 1);
    }
}

static void test_quick_deletes_marked_only(void **state)
{
    (void)state;
    char loc[600];
    fx_create(loc);
    struct repo *r = fx_open(loc, NULL);
    int a[30], b[5] = {100, 101, 102, 103, 104};
    nums(a, 0, 30);
    struct oid sa = fx_backup(r, a, 30, NULL);
    struct oid sb = fx_backup(r, b, 5, NULL);
    fx_forget(r, &sa);
    repo_close(r);
    struct lock *lk;
    struct repo *w = fx_open(loc, &lk);
    struct prune_options o;
    prune_options_default(&o);
    struct prune_stats st;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0); /* marks; the writer holds deletions */
    uint64_t pending = st.packs_pending;
    assert_true(pending >= 3);
    struct err e;
    assert_int_equal(lock_release(lk, &e), 0);
    repo_close(w);
    /* Another snapshot is forgotten: a quick prune does not look for newly unused data. */
    r = fx_open(loc, NULL);
    fx_forget(r, &sb);
    repo_close(r);
    int packs = fx_count(loc, "data");
    o.quick = true;
    assert_int_equal(run_prune(loc, &o, NULL, &st), 0);
    assert_int_equal(st.packs_deleted, pending);
    assert_int_equal(st.snapshots, 0);
    assert_int_equal(fx_count(loc, "data"), packs - (int)pending);
    uint64_t warn;
    assert_int_equal(run_check(loc, true, &warn), 0);
}

/* The index additions prune stands on: positions, idx_at, idx_pack_find, idx_forget_packs. */
static void test_index_positions(void **state)
{
    (void)state;
    struct idx *x;
    struct err e;
    assert_int_equal(idx_new(&x, &e), 0);
    struct oid packs[3];
    struct pack_entry ents[3][50];
    for (int p = 0; p < 3; p++) {
        oid_random(&packs[p]);
        for (int i = 0; i < 50; i++) {
            oid_random(&ents[p][i].id);
            ents[p][i].type = (uint8_t)(i % 2);
            ents[p][i].offset = (uint32_t)(i * 100);
            ents[p][i].stored_len = 100;
            ents[p][i].raw_len = (uint32_t)(p * 1000 + i);
        }
        assert_int_equal(idx_add_pack(x, &packs[p], ents[p], 50, &e), 0);
    }
    assert_int_equal(idx_seal(x, &e), 0);
    assert_int_equal(idx_blob_count(x), 150);
    /* Positions are ranks in ID order, and idx_at inverts idx_lookup_pos. */
    struct oid prev;
    memset(&prev, 0, sizeof prev);
    for (size_t pos = 0; pos < 150; pos++) {
        struct oid id;
        struct idx_loc loc, loc2;
        idx_at(x, pos, &id, &loc);
        if (pos) assert_true(oid_cmp(&prev, &id) < 0);
        prev = id;
        size_t back;
        assert_true(idx_lookup_pos(x, &id, &loc2, &back));
        assert_int_equal(back, pos);
        assert_int_equal(loc.raw_len, loc2.raw_len);
        assert_int_equal(loc.pack, loc2.pack);
    }
    uint32_t num;
    assert_true(idx_pack_find(x, &packs[1], &num));
    assert_true(oid_eq(idx_pack_id(x, num), &packs[1]));
    struct oid other;
    oid_random(&other);
    assert_false(idx_pack_find(x, &other, NULL));
    /* Forgetting a pack removes its blobs only; the others keep their data and stay sorted. */
    size_t gone;
    assert_int_equal(idx_forget_packs(x, &packs[1], 1, &gone, &e), 0);
    assert_int_equal(gone, 50);
    assert_int_equal(idx_blob_count(x), 100);
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 50; i++) {
            struct idx_loc loc;
            size_t pos;
            bool found = idx_lookup_pos(x, &ents[p][i].id, &loc, &pos);
            assert_int_equal(found, p != 1);
            if (!found) continue;
            assert_int_equal(loc.raw_len, (uint32_t)(p * 1000 + i));
            assert_int_equal(loc.type, i % 2);
            struct oid back;
            idx_at(x, pos, &back, NULL);
            assert_true(oid_eq(&back, &ents[p][i].id));
        }
    assert_true(idx_pack_find(x, &packs[1], NULL)); /* numbers stay valid */
    /* Re-adding places the blobs again; forgetting everything leaves an empty, usable index. */
    assert_int_equal(idx_add_pack(x, &packs[1], ents[1], 50, &e), 0);
    assert_true(idx_lookup(x, &ents[1][7].id, NULL));
    assert_int_equal(idx_forget_packs(x, packs, 3, &gone, &e), 0);
    assert_int_equal(gone, 150);
    assert_int_equal(idx_blob_count(x), 0);
    assert_false(idx_lookup(x, &ents[0][0].id, NULL));
    assert_int_equal(idx_add_pack(x, &packs[0], ents[0], 50, &e), 0);
    assert_int_equal(idx_seal(x, &e), 0);
    assert_true(idx_lookup(x, &ents[0][49].id, NULL));
    idx_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_positions),
        cmocka_unit_test(test_deletes_unused),
        cmocka_unit_test(test_repacks_partly_used),
        cmocka_unit_test(test_waits_for_writer),
        cmocka_unit_test(test_unmarks_what_writer_used),
        cmocka_unit_test(test_recheck_finds_late_snapshot),
        cmocka_unit_test(test_writer_honours_marks),
        cmocka_unit_test(test_new_copy_stays_indexed),
        cmocka_unit_test(test_orphan_pack),
        cmocka_unit_test(test_dry_run_changes_nothing),
        cmocka_unit_test(test_bounded_plan),
        cmocka_unit_test(test_bounded_prune),
        cmocka_unit_test(test_bounded_repack_batches),
        cmocka_unit_test(test_refuses_broken_index),
        cmocka_unit_test(test_interrupted_resumes),
        cmocka_unit_test(test_quick_deletes_marked_only),
    };
    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
