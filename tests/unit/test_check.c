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
    assert_int_equal(repo_open(loc, "pw", &r, &e), 0);
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
    assert_int_equal(repo_open(x.loc, "pw", &r, &e), 0);
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
    assert_int_equal(repo_open(x.loc, "pw", &r, &e), 0);
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
    assert_int_equal(repo_open(x.loc, "pw", &r, &e), 0);
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
    assert_int_equal(repo_open(x.loc, "pw", &r, &e), 0);
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
        cmocka_unit_test(test_flipped_header_byte),
        cmocka_unit_test(test_truncated_pack),
        cmocka_unit_test(test_missing_pack),
        cmocka_unit_test(test_missing_index_and_repair),
        cmocka_unit_test(test_damaged_index_file),
        cmocka_unit_test(test_damaged_snapshot),
        cmocka_unit_test(test_repair_reports_bad_pack),
        cmocka_unit_test(test_subset_parser),
    };
    return cmocka_run_group_tests(tests, fx_setup, fx_teardown);
}
