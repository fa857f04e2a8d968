/* test_check.c - check on real temporary repositories finds each kind of damage and names the
 * object at fault: a flipped byte in a blob (only when reading data, in every subset that holds
 * it), in a pack header, a truncated pack, a missing pack, a missing or damaged index file, a
 * damaged snapshot; repair index then recovers what the packs still hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "maint_fixture.h"
#include "repo/check.h"
#include "repo/pack.h"

#define MAXP 256

struct found {
    size_t n;
    bool error[MAXP];
    enum check_object obj[MAXP];
    struct oid id[MAXP];
    char msg[MAXP][256];
};

static void collect(void *ctx, const struct check_problem *p)
{
    struct found *f = ctx;
    if (f->n == MAXP) return;
    f->error[f->n] = p->error;
    f->obj[f->n] = p->object;
    f->id[f->n] = p->id;
    snprintf(f->msg[f->n], sizeof f->msg[f->n], "%s", p->msg);
    f->n++;
}

static struct check_stats check(const char *loc, enum check_read read, const char *subset,
                                struct found *f)
{
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    struct check_options o = {.read = read, .report = collect, .ctx = f};
    if (subset) assert_int_equal(check_parse_subset(subset, &o, &e), 0);
    memset(f, 0, sizeof *f);
    struct check_stats st;
    assert_int_equal(check_run(r, &o, &st, &e), 0);
    repo_close(r);
    return st;
}

/* Whether a problem of this kind names this object. */
static bool named(const struct found *f, bool error, enum check_object obj, const struct oid *id)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->error[i] == error && f->obj[i] == obj && oid_eq(&f->id[i], id)) return true;
    return false;
}

struct fixture {
    char loc[600];
    struct oid sa, sb;
    struct oid blob, pack; /* blob 5 of A and its pack */
    struct oid index_a;    /* the index file written by A's backup */
    uint32_t offset, stored;
};

static void make(struct fixture *x)
{
    fx_create(x->loc);
    struct repo *r = fx_open(x->loc, NULL);
    int a[30], b[10];
    for (int i = 0; i < 30; i++)
        a[i] = i;
    for (int i = 0; i < 10; i++)
        b[i] = 100 + i;
    x->sa = fx_backup(r, a, 30, NULL);
    struct oid *ids;
    size_t n;
    struct err e;
    assert_int_equal(repo_list_ids(r, "index", &ids, &n, &e), 0);
    assert_int_equal(n, 1);
    x->index_a = ids[0];
    free(ids);
    x->sb = fx_backup(r, b, 10, NULL);
    x->blob = fx_blob_id(r, 5);
    struct idx_loc loc;
    assert_true(idx_lookup(repo_index(r), &x->blob, &loc));
    x->pack = *idx_pack_id(repo_index(r), loc.pack);
    x->offset = loc.offset;
    x->stored = loc.stored_len;
    repo_close(r);
}

static void pack_path(const struct fixture *x, const struct oid *pack, char out[800])
{
    char name[80];
    pack_object_name(pack, name);
    snprintf(out, 800, "%s/%s", x->loc, name);
}

static void flip(const char *path, long offset)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    if (offset < 0) {
        fseek(f, 0, SEEK_END);
        offset += ftell(f);
    }
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ 0x20, f);
    fclose(f);
}

static void test_clean(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    struct found f;
    struct check_stats st = check(x.loc, CHECK_READ_ALL, NULL, &f);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.warnings, 0);
    assert_int_equal(st.snapshots, 2);
    assert_int_equal(st.blobs, 42); /* 40 data blobs, 2 trees */
    assert_int_equal(st.blobs_used, 42);
    assert_int_equal(st.blobs_read, 42);
    assert_int_equal(st.packs_read, st.packs);
    assert_true(st.memory > 0);
}

static void test_flipped_blob_byte(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800];
    pack_path(&x, &x.pack, path);
    flip(path, (long)x.offset + (long)x.stored / 2);
    struct found f;
    /* The structure is intact: only reading the data finds it. */
    struct check_stats st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    assert_int_equal(st.errors, 0);
    st = check(x.loc, CHECK_READ_ALL, NULL, &f);
    assert_int_equal(st.errors, 1);
    assert_true(named(&f, true, CHECK_BLOB, &x.blob));
    char hex[OID_HEX_LEN + 1];
    assert_non_null(strstr(f.msg[0], oid_hex(&x.pack, hex)));
    assert_non_null(strstr(f.msg[0], "used by snapshots"));
    /* Subsets: exactly one of the groups 1/3..3/3 holds the pack. */
    uint64_t found_in = 0, read = 0;
    const char *groups[] = {"1/3", "2/3", "3/3"};
    for (int g = 0; g < 3; g++) {
        st = check(x.loc, CHECK_READ_SUBSET, groups[g], &f);
        found_in += st.errors;
        read += st.packs_read;
    }
    assert_int_equal(found_in, 1);
    assert_int_equal(read, st.packs);
    st = check(x.loc, CHECK_READ_SUBSET, "100%", &f);
    assert_int_equal(st.errors, 1);
    st = check(x.loc, CHECK_READ_SUBSET, "1%", &f);
    assert_int_equal(st.packs_read, 1);
}

/* A pack larger than one read (2 MiB) is read in several ranges: damage in the first and the
 * last is found, and every blob is read once. */
static void test_read_in_ranges(void **state)
{
    (void)state;
    char loc[600];
    fx_create_sized(loc, 8u * 1024 * 1024);
    struct repo *r = fx_open(loc, NULL);
    int nums[60];
    for (int i = 0; i < 60; i++)
        nums[i] = i;
    fx_backup(r, nums, 60, NULL);
    struct oid first = fx_blob_id(r, 0), last = fx_blob_id(r, 59);
    struct idx_loc lf, ll;
    assert_true(idx_lookup(repo_index(r), &first, &lf));
    assert_true(idx_lookup(repo_index(r), &last, &ll));
    assert_int_equal(lf.pack, ll.pack);
    assert_true(ll.offset > 4u * 1024 * 1024); /* in the third range or later */
    struct oid pack = *idx_pack_id(repo_index(r), lf.pack);
    repo_close(r);

    struct found f;
    struct check_stats st = check(loc, CHECK_READ_ALL, NULL, &f);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.blobs_read, 61); /* and one tree */
    assert_true(st.bytes_read > 60u * 96 * 1024);

    char name[80], path[800];
    pack_object_name(&pack, name);
    snprintf(path, sizeof path, "%s/%s", loc, name);
    flip(path, (long)lf.offset + 10);
    flip(path, (long)ll.offset + (long)ll.stored_len - 1);
    st = check(loc, CHECK_READ_ALL, NULL, &f);
    assert_int_equal(st.errors, 2);
    assert_true(named(&f, true, CHECK_BLOB, &first));
    assert_true(named(&f, true, CHECK_BLOB, &last));
    assert_int_equal(st.blobs_read, 61);
}

static void test_flipped_header_byte(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800];
    pack_path(&x, &x.pack, path);
    flip(path, -20); /* inside the sealed header */
    struct found f;
    struct check_stats st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    assert_int_equal(st.errors, 1);
    assert_true(named(&f, true, CHECK_PACK, &x.pack));
}

static void test_truncated_pack(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800];
    pack_path(&x, &x.pack, path);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);
    struct found f;
    struct check_stats st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    assert_true(st.errors >= 1);
    assert_true(named(&f, true, CHECK_PACK, &x.pack));
    bool says_truncated = false;
    for (size_t i = 0; i < f.n; i++)
        says_truncated |= strstr(f.msg[i], "truncated") != NULL;
    assert_true(says_truncated);
    /* Every problem names that pack, none another object. */
    for (size_t i = 0; i < f.n; i++)
        assert_true(oid_eq(&f.id[i], &x.pack));
}

static void test_missing_pack(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800];
    pack_path(&x, &x.pack, path);
    assert_int_equal(unlink(path), 0);
    struct found f;
    struct check_stats st = check(x.loc, CHECK_READ_ALL, NULL, &f);
    assert_int_equal(st.errors, 1);
    assert_true(named(&f, true, CHECK_PACK, &x.pack));
    assert_non_null(strstr(f.msg[0], "missing"));
    /* Repair cannot bring data back: the index then simply lacks those blobs. */
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(x.loc, "pw", NULL, &r, &e), 0);
    struct check_options o = {0};
    struct check_repair_stats rs;
    assert_int_equal(check_repair_index(r, &o, &rs, &e), 0);
    repo_close(r);
    st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    assert_true(st.errors >= 1);
    assert_true(named(&f, true, CHECK_BLOB, &x.blob));
    assert_int_equal(fx_verify(x.loc, &x.sb), 0);
}

static void test_missing_index_and_repair(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800], hex[OID_HEX_LEN + 1];
    snprintf(path, sizeof path, "%s/index/%s", x.loc, oid_hex(&x.index_a, hex));
    assert_int_equal(unlink(path), 0);
    struct found f;
    struct check_stats st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    /* Snapshot A's root tree is not indexed: one error naming it; A's packs: warnings each. */
    assert_true(st.errors >= 1);
    assert_true(st.warnings >= 4);
    assert_true(named(&f, false, CHECK_PACK, &x.pack));
    bool tree_named = false;
    for (size_t i = 0; i < f.n; i++)
        tree_named |= f.error[i] && f.obj[i] == CHECK_TREE;
    assert_true(tree_named);
    assert_int_equal(fx_verify(x.loc, &x.sb), 0);

    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(x.loc, "pw", NULL, &r, &e), 0);
    struct check_options o = {0};
    struct check_repair_stats rs;
    assert_int_equal(check_repair_index(r, &o, &rs, &e), 0);
    repo_close(r);
    assert_int_equal(rs.blobs, 42);
    assert_int_equal(rs.packs_bad, 0);
    assert_int_equal(rs.index_files_removed, 1);
    assert_int_equal(fx_count(x.loc, "index"), 1);
    st = check(x.loc, CHECK_READ_ALL, NULL, &f);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.warnings, 0);
    assert_int_equal(fx_verify(x.loc, &x.sa), 0);
    assert_int_equal(fx_verify(x.loc, &x.sb), 0);
}

static void test_damaged_index_file(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800], hex[OID_HEX_LEN + 1];
    snprintf(path, sizeof path, "%s/index/%s", x.loc, oid_hex(&x.index_a, hex));
    flip(path, 40);
    struct found f;
    struct check_stats st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    assert_true(named(&f, true, CHECK_INDEX, &x.index_a));
    assert_true(st.errors >= 2); /* the file, and what snapshot A then lacks */
    /* Repair replaces it, damaged or not. */
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(x.loc, "pw", NULL, &r, &e), 0);
    struct check_options o = {0};
    struct check_repair_stats rs;
    assert_int_equal(check_repair_index(r, &o, &rs, &e), 0);
    repo_close(r);
    st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    assert_int_equal(st.errors, 0);
    assert_int_equal(fx_verify(x.loc, &x.sa), 0);
}

static void test_damaged_snapshot(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800], hex[OID_HEX_LEN + 1];
    snprintf(path, sizeof path, "%s/snapshots/%s", x.loc, oid_hex(&x.sa, hex));
    flip(path, 30);
    struct found f;
    struct check_stats st = check(x.loc, CHECK_READ_NONE, NULL, &f);
    assert_int_equal(st.errors, 1);
    assert_true(named(&f, true, CHECK_SNAPSHOT, &x.sa));
    assert_int_equal(st.snapshots, 1);
}

static void test_repair_reports_bad_pack(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    char path[800];
    pack_path(&x, &x.pack, path);
    flip(path, -20);
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(x.loc, "pw", NULL, &r, &e), 0);
    struct found f;
    memset(&f, 0, sizeof f);
    struct check_options o = {.report = collect, .ctx = &f};
    struct check_repair_stats rs;
    assert_int_equal(check_repair_index(r, &o, &rs, &e), 0);
    repo_close(r);
    assert_int_equal(rs.packs_bad, 1);
    assert_true(named(&f, true, CHECK_PACK, &x.pack));
    assert_int_equal(fx_verify(x.loc, &x.sb), 0);
}

/* The passes check plans for a bound (0 when the bound is too small): a run canceled at once,
 * which fails after planning. */
static uint64_t planned(struct repo *r, uint64_t bound)
{
    static const volatile int stop = 1;
    struct check_options o = {.cancel = &stop, .max_memory = bound};
    struct check_stats st;
    struct err e;
    int rc = check_run(r, &o, &st, &e);
    if (rc == ERR_FAIL) return 0;
    assert_int_equal(rc, ERR_CANCELED);
    return st.passes;
}

/* Check with the largest memory bound that makes it work in at least `passes` passes. */
static struct check_stats check_bounded(const char *loc, enum check_read read, uint64_t passes,
                                        struct found *f)
{
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    uint64_t lo = 1024, hi = 1 << 20; /* planned(lo) >= passes or too small; planned(hi) < */
    assert_true(planned(r, hi) < passes);
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2, k = planned(r, mid);
        if (k == 0 || k >= passes)
            lo = mid;
        else
            hi = mid;
    }
    struct check_options o = {.read = read, .report = collect, .ctx = f, .max_memory = lo};
    memset(f, 0, sizeof *f);
    struct check_stats st;
    assert_int_equal(check_run(r, &o, &st, &e), 0);
    repo_close(r);
    assert_true(st.passes >= passes);
    assert_true(st.passes < passes * 2);
    return st;
}

static int cmp_msg(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The same problems, in any order. */
static void assert_same_findings(struct found *a, struct found *b)
{
    assert_int_equal(a->n, b->n);
    qsort(a->msg, a->n, sizeof a->msg[0], cmp_msg);
    qsort(b->msg, b->n, sizeof b->msg[0], cmp_msg);
    for (size_t i = 0; i < a->n; i++)
        assert_string_equal(a->msg[i], b->msg[i]);
}

static void test_bounded_same_findings(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    struct found f0, f1;
    struct check_stats s0 = check(x.loc, CHECK_READ_ALL, NULL, &f0);
    struct check_stats s1 = check_bounded(x.loc, CHECK_READ_ALL, 4, &f1);
    assert_int_equal(s0.errors + s0.warnings, 0);
    assert_int_equal(s1.errors + s1.warnings, 0);
    assert_int_equal(s1.blobs, s0.blobs);
    assert_int_equal(s1.blobs_used, s0.blobs_used);
    assert_int_equal(s1.blobs_read, s0.blobs_read);
    assert_int_equal(s1.trees, s0.trees);

    /* Damage of several kinds at once: a flipped blob, a flipped header elsewhere, a missing
     * pack, a truncated one. */
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(x.loc, "pw", NULL, &r, &e), 0);
    assert_int_equal(lock_load_index(r, NULL, &e), 0);
    struct oid p_missing, p_trunc, p_header;
    struct oid b25 = fx_blob_id(r, 25), b102 = fx_blob_id(r, 102), b15 = fx_blob_id(r, 15);
    p_missing = fx_pack_of(r, &b25);
    p_trunc = fx_pack_of(r, &b102);
    p_header = fx_pack_of(r, &b15);
    repo_close(r);
    assert_false(oid_eq(&p_missing, &x.pack));
    assert_false(oid_eq(&p_trunc, &x.pack) || oid_eq(&p_trunc, &p_missing));
    assert_false(oid_eq(&p_header, &x.pack) || oid_eq(&p_header, &p_missing) ||
                 oid_eq(&p_header, &p_trunc));
    char path[800];
    pack_path(&x, &x.pack, path);
    flip(path, x.offset + x.stored / 2);
    pack_path(&x, &p_header, path);
    flip(path, -10);
    pack_path(&x, &p_missing, path);
    assert_int_equal(unlink(path), 0);
    pack_path(&x, &p_trunc, path);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);
    struct check_stats a0 = check(x.loc, CHECK_READ_ALL, NULL, &f0);
    struct check_stats a1 = check_bounded(x.loc, CHECK_READ_ALL, 4, &f1);
    assert_true(a0.errors >= 4);
    assert_true(named(&f0, true, CHECK_BLOB, &x.blob));
    assert_true(named(&f0, true, CHECK_PACK, &p_missing));
    assert_true(named(&f0, true, CHECK_PACK, &p_trunc));
    assert_true(named(&f0, true, CHECK_PACK, &p_header));
    assert_true(named(&f1, true, CHECK_BLOB, &x.blob));
    assert_true(named(&f1, true, CHECK_PACK, &p_missing));
    assert_true(named(&f1, true, CHECK_PACK, &p_trunc));
    assert_true(named(&f1, true, CHECK_PACK, &p_header));
    assert_int_equal(a1.errors, a0.errors);
    assert_int_equal(a1.warnings, a0.warnings);
    assert_int_equal(a1.blobs, a0.blobs);
    assert_int_equal(a1.blobs_used, a0.blobs_used);
    assert_same_findings(&f0, &f1);
    /* Structure only, too. */
    check(x.loc, CHECK_READ_NONE, NULL, &f0);
    check_bounded(x.loc, CHECK_READ_NONE, 3, &f1);
    assert_same_findings(&f0, &f1);
}

static void test_bound_too_small(void **state)
{
    (void)state;
    struct fixture x;
    make(&x);
    struct repo *r;
    struct err e;
    assert_int_equal(repo_open(x.loc, "pw", NULL, &r, &e), 0);
    struct found f;
    memset(&f, 0, sizeof f);
    struct check_options o = {.report = collect, .ctx = &f, .max_memory = 64 << 10};
    struct check_stats st;
    assert_int_equal(check_run(r, &o, &st, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "too small"));
    assert_non_null(strstr(e.msg, "at least"));
    assert_int_equal(f.n, 0); /* failed at once, before looking at anything */
    repo_close(r);
}

static void test_subset_parser(void **state)
{
    (void)state;
    struct check_options o;
    struct err e;
    memset(&o, 0, sizeof o);
    assert_int_equal(check_parse_subset("2/5", &o, &e), 0);
    assert_int_equal(o.read, CHECK_READ_SUBSET);
    assert_int_equal(o.subset_n, 2);
    assert_int_equal(o.subset_m, 5);
    assert_int_equal(check_parse_subset("12.5%", &o, &e), 0);
    assert_int_equal(o.subset_m, 0);
    assert_true(o.subset_frac > 0.124 && o.subset_frac < 0.126);
    const char *bad[] = {"0/5", "6/5", "1/0", "x", "%", "0%", "101%", "-1/2", "1/2x", "5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(check_parse_subset(bad[i], &o, &e), ERR_FAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_flipped_blob_byte),
        cmocka_unit_test(test_read_in_ranges),
        cmocka_unit_test(test_flipped_header_byte),
        cmocka_unit_test(test_truncated_pack),
        cmocka_unit_test(test_missing_pack),
        cmocka_unit_test(test_missing_index_and_repair),
        cmocka_unit_test(test_damaged_index_file),
        cmocka_unit_test(test_damaged_snapshot),
        cmocka_unit_test(test_repair_reports_bad_pack),
        cmocka_unit_test(test_subset_parser),
        cmocka_unit_test(test_bounded_same_findings),
        cmocka_unit_test(test_bound_too_small),
    };
    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
