/* test_index.c - unit tests of the in-memory index and the index file codec (repo/index.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/prng.h"
#include "repo/index.h"

static struct idx *new_idx(void)
{
    struct idx *x;
    struct err e;
    assert_int_equal(idx_new(&x, &e), 0);
    return x;
}

struct expect {
    struct pack_entry pe;
    uint32_t pack; /* index into the test's pack list */
};

static void check_loc(const struct idx *x, const struct expect *ex, const struct oid *packs)
{
    struct idx_loc loc;
    assert_true(idx_lookup(x, &ex->pe.id, &loc));
    assert_int_equal(loc.type, ex->pe.type);
    assert_int_equal(loc.offset, ex->pe.offset);
    assert_int_equal(loc.stored_len, ex->pe.stored_len);
    assert_int_equal(loc.raw_len, ex->pe.raw_len);
    assert_non_null(idx_pack_id(x, loc.pack));
    assert_true(oid_eq(idx_pack_id(x, loc.pack), &packs[ex->pack]));
}

struct walk {
    struct oid last;
    size_t n;
};

static int walk_cb(void *ctx, const struct oid *blob, const struct idx_loc *loc)
{
    struct walk *w = ctx;
    if (w->n) assert_true(oid_cmp(&w->last, blob) < 0); /* strictly increasing */
    w->last = *blob;
    w->n++;
    assert_true(loc->type <= BLOB_TREE);
    return 0;
}

static void test_add_lookup_many(void **state)
{
    enum { N = 100000 };
    struct idx *x = new_idx();
    struct expect *ex = calloc(N, sizeof *ex);
    struct oid *packs = calloc(N, sizeof *packs);
    struct pack_entry *batch = calloc(500, sizeof *batch);
    uint64_t seed = 1;
    size_t n = 0, n_packs = 0;
    struct err e;
    while (n < N) {
        size_t k = 1 + prng_next(&seed) % 500;
        if (k > N - n) k = N - n;
        prng_oid(&seed, &packs[n_packs]);
        uint32_t off = 0;
        for (size_t i = 0; i < k; i++) {
            struct pack_entry *pe = &ex[n + i].pe;
            prng_oid(&seed, &pe->id);
            pe->type = (uint8_t)(prng_next(&seed) & 1);
            pe->offset = off;
            pe->stored_len = 41 + (uint32_t)(prng_next(&seed) % 100000);
            pe->raw_len = (uint32_t)prng_next(&seed);
            off += pe->stored_len;
            ex[n + i].pack = (uint32_t)n_packs;
            batch[i] = *pe;
        }
        assert_int_equal(idx_add_pack(x, &packs[n_packs], batch, k, &e), 0);
        n_packs++;
        n += k;
        /* Spot-check across merges: the first and the latest blob stay findable. */
        check_loc(x, &ex[0], packs);
        check_loc(x, &ex[n - 1], packs);
    }
    assert_int_equal(idx_blob_count(x), N);
    assert_int_equal(idx_pack_count(x), n_packs);
    assert_null(idx_pack_id(x, (uint32_t)n_packs));
    for (size_t i = 0; i < N; i++)
        check_loc(x, &ex[i], packs);
    for (int i = 0; i < 10000; i++) {
        struct oid absent;
        prng_oid(&seed, &absent);
        assert_false(idx_lookup(x, &absent, NULL));
    }
    /* A neighbour of a present ID (last byte changed) is absent. */
    struct oid near = ex[7].pe.id;
    near.b[OID_LEN - 1] ^= 1;
    assert_false(idx_lookup(x, &near, NULL));

    struct walk w = {0};
    assert_int_equal(idx_foreach(x, walk_cb, &w), 0);
    assert_int_equal(w.n, N);
    for (size_t i = 0; i < N; i++) /* still all there after foreach merged the tail */
        check_loc(x, &ex[i], packs);
    idx_free(x);
    free(ex);
    free(packs);
    free(batch);
}

static int stop_cb(void *ctx, const struct oid *blob, const struct idx_loc *loc)
{
    size_t *n = ctx;
    return ++*n == 3 ? 42 : 0;
}

static void test_foreach_stops(void **state)
{
    struct idx *x = new_idx();
    struct pack_entry pe[5] = {0};
    uint64_t seed = 5;
    struct oid pack;
    struct err e;
    prng_oid(&seed, &pack);
    for (int i = 0; i < 5; i++)
        prng_oid(&seed, &pe[i].id);
    assert_int_equal(idx_add_pack(x, &pack, pe, 5, &e), 0);
    size_t n = 0;
    assert_int_equal(idx_foreach(x, stop_cb, &n), 42);
    assert_int_equal(n, 3);
    idx_free(x);
}

static void test_first_location_wins(void **state)
{
    struct idx *x = new_idx();
    uint64_t seed = 9;
    struct oid pa, pb, pc;
    struct err e;
    prng_oid(&seed, &pa);
    prng_oid(&seed, &pb);
    prng_oid(&seed, &pc);
    struct pack_entry blob = {.type = BLOB_TREE, .offset = 10, .stored_len = 50, .raw_len = 9};
    prng_oid(&seed, &blob.id);
    /* Twice within one pack: the first entry counts. */
    struct pack_entry two[2] = {blob, blob};
    two[1].offset = 60;
    assert_int_equal(idx_add_pack(x, &pa, two, 2, &e), 0);
    struct pack_entry other = blob;
    other.offset = 20;
    assert_int_equal(idx_add_pack(x, &pb, &other, 1, &e), 0);
    struct idx_loc loc;
    assert_true(idx_lookup(x, &blob.id, &loc));
    assert_int_equal(loc.offset, 10);
    assert_true(oid_eq(idx_pack_id(x, loc.pack), &pa));
    assert_int_equal(idx_blob_count(x), 1);

    /* Push it through merges, then offer it again. */
    struct pack_entry *many = calloc(20000, sizeof *many);
    for (int i = 0; i < 20000; i++)
        prng_oid(&seed, &many[i].id);
    assert_int_equal(idx_add_pack(x, &pc, many, 20000, &e), 0);
    assert_int_equal(idx_add_pack(x, &pc, &other, 1, &e), 0);
    assert_true(idx_lookup(x, &blob.id, &loc));
    assert_int_equal(loc.offset, 10);
    assert_int_equal(loc.type, BLOB_TREE);
    assert_true(oid_eq(idx_pack_id(x, loc.pack), &pa));
    assert_int_equal(idx_blob_count(x), 20001);
    /* The same pack ID keeps its number. */
    assert_int_equal(idx_pack_count(x), 3);
    free(many);
    idx_free(x);
}

static void test_clear(void **state)
{
    struct idx *x = new_idx();
    struct pack_entry *pe = calloc(10000, sizeof *pe);
    uint64_t seed = 13;
    struct oid pack;
    struct err e;
    prng_oid(&seed, &pack);
    for (int i = 0; i < 10000; i++)
        prng_oid(&seed, &pe[i].id);
    assert_int_equal(idx_add_pack(x, &pack, pe, 10000, &e), 0); /* main array and tail */
    idx_clear(x);
    assert_int_equal(idx_blob_count(x), 0);
    assert_int_equal(idx_pack_count(x), 0);
    assert_false(idx_lookup(x, &pe[0].id, NULL));
    assert_false(idx_lookup(x, &pe[9999].id, NULL));
    assert_int_equal(idx_add_pack(x, &pack, pe + 5, 1, &e), 0);
    assert_int_equal(idx_blob_count(x), 1);
    assert_true(idx_lookup(x, &pe[5].id, NULL));
    assert_true(oid_eq(idx_pack_id(x, 0), &pack));
    free(pe);
    idx_free(x);
}

static void test_add_rejects_bad_type(void **state)
{
    struct idx *x = new_idx();
    struct pack_entry pe = {.type = 2};
    struct oid pack = {{1}};
    struct err e;
    assert_int_equal(idx_add_pack(x, &pack, &pe, 1, &e), ERR_FAIL);
    assert_false(idx_lookup(x, &pe.id, NULL));
    idx_free(x);
}

/* Three packs (one empty) and two superseded IDs, encoded into `out`. */
static void build_file(struct buf *out, struct idx_file_pack packs[3], struct oid sup[2])
{
    uint64_t seed = 77;
    static struct pack_entry ents[2][300];
    for (int p = 0; p < 3; p++) {
        prng_oid(&seed, &packs[p].pack_id);
        packs[p].n = p == 1 ? 0 : 300;
        packs[p].entries = p == 1 ? NULL : ents[p / 2];
    }
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 300; i++) {
            struct pack_entry *pe = &ents[p][i];
            prng_oid(&seed, &pe->id);
            pe->type = (uint8_t)(i % 2);
            pe->offset = (uint32_t)i * 1000000u;
            pe->stored_len = 1000000;
            pe->raw_len = i == 0 ? UINT32_MAX : (uint32_t)i;
        }
    prng_oid(&seed, &sup[0]);
    prng_oid(&seed, &sup[1]);
    struct err e;
    assert_int_equal(idx_file_encode(packs, 3, sup, 2, out, &e), 0);
}

static void test_file_roundtrip(void **state)
{
    struct idx_file_pack packs[3];
    struct oid sup[2];
    struct buf b = BUF_INIT;
    struct err e;
    build_file(&b, packs, sup);
    assert_memory_equal(b.data, "PVIX\x01\x02", 6);

    struct idx *x = new_idx();
    struct oid *got_sup = NULL;
    size_t n_sup = 0;
    assert_int_equal(idx_file_decode(x, b.data, b.len, &got_sup, &n_sup, &e), 0);
    assert_int_equal(n_sup, 2);
    assert_memory_equal(got_sup, sup, sizeof sup);
    free(got_sup);
    assert_int_equal(idx_blob_count(x), 600);
    assert_int_equal(idx_pack_count(x), 3);
    for (int p = 0; p < 3; p++)
        for (size_t i = 0; i < packs[p].n; i++) {
            const struct pack_entry *pe = &packs[p].entries[i];
            struct idx_loc loc;
            assert_true(idx_lookup(x, &pe->id, &loc));
            assert_true(oid_eq(idx_pack_id(x, loc.pack), &packs[p].pack_id));
            assert_int_equal(loc.type, pe->type);
            assert_int_equal(loc.offset, pe->offset);
            assert_int_equal(loc.stored_len, pe->stored_len);
            assert_int_equal(loc.raw_len, pe->raw_len);
        }
    /* Decoding without asking for the superseded list works too, and re-adding is a no-op. */
    assert_int_equal(idx_file_decode(x, b.data, b.len, NULL, NULL, &e), 0);
    assert_int_equal(idx_blob_count(x), 600);
    assert_int_equal(idx_pack_count(x), 3);
    idx_free(x);
    buf_free(&b);
}

static void test_file_empty(void **state)
{
    struct buf b = BUF_INIT;
    struct err e;
    assert_int_equal(idx_file_encode(NULL, 0, NULL, 0, &b, &e), 0);
    assert_int_equal(b.len, 7);
    struct idx *x = new_idx();
    static struct oid sentinel;
    struct oid *sup = &sentinel; /* must be overwritten */
    size_t n_sup = 99;
    assert_int_equal(idx_file_decode(x, b.data, b.len, &sup, &n_sup, &e), 0);
    assert_null(sup);
    assert_int_equal(n_sup, 0);
    assert_int_equal(idx_blob_count(x), 0);
    idx_free(x);
    buf_free(&b);
}

static void test_file_encode_rejects_bad_type(void **state)
{
    struct pack_entry pe = {.type = 7};
    struct idx_file_pack p = {.entries = &pe, .n = 1};
    struct buf b = BUF_INIT;
    struct err e;
    assert_int_equal(idx_file_encode(&p, 1, NULL, 0, &b, &e), ERR_FAIL);
    buf_free(&b);
}

/* Decodes bytes that must be refused, and checks that nothing was added. */
static void expect_refused(const void *data, size_t len)
{
    struct idx *x = new_idx();
    struct err e;
    struct oid *sup = NULL;
    size_t n_sup = 0;
    err_clear(&e);
    assert_int_equal(idx_file_decode(x, data, len, &sup, &n_sup, &e), ERR_FAIL);
    assert_true(e.msg[0] != '\0');
    assert_null(sup);
    assert_int_equal(idx_blob_count(x), 0);
    assert_int_equal(idx_pack_count(x), 0);
    idx_free(x);
}

static void test_file_hostile(void **state)
{
    struct idx_file_pack packs[3];
    struct oid sup[2];
    struct buf b = BUF_INIT;
    build_file(&b, packs, sup);

    for (size_t len = 0; len < b.len; len++) /* every truncation */
        expect_refused(b.data, len);

    struct buf t = BUF_INIT;
    buf_append(&t, b.data, b.len);
    buf_put_u8(&t, 0);
    expect_refused(t.data, t.len); /* trailing byte */

    buf_reset(&t);
    buf_append(&t, b.data, b.len);
    t.data[0] = 'X';
    expect_refused(t.data, t.len); /* magic */
    t.data[0] = 'P';
    t.data[4] = 2;
    expect_refused(t.data, t.len); /* version */

    /* Huge counts must be refused before allocating anything. */
    uint64_t huge[] = {UINT64_MAX, 1ull << 40, PACK_MAX_ENTRIES + 1ull, 1000};
    for (size_t h = 0; h < sizeof huge / sizeof huge[0]; h++) {
        buf_reset(&t);
        buf_append(&t, "PVIX\x01", 5);
        buf_put_uvarint(&t, huge[h]); /* superseded count */
        expect_refused(t.data, t.len);

        buf_reset(&t);
        buf_append(&t, "PVIX\x01\x00", 6);
        buf_put_uvarint(&t, huge[h]); /* pack count */
        buf_append(&t, sup, sizeof sup);
        expect_refused(t.data, t.len);

        buf_reset(&t);
        buf_append(&t, "PVIX\x01\x00\x01", 7);
        buf_append(&t, &sup[0], OID_LEN);
        buf_put_uvarint(&t, huge[h]); /* blob count */
        for (int i = 0; i < 100; i++)
            buf_append(&t, "\0\0\0\0\0\0\0\0\0\0", 10);
        expect_refused(t.data, t.len);
    }

    /* One-blob files with a bad field. */
    struct {
        uint8_t type;
        uint64_t offset, stored, raw;
    } bad[] = {
        {2, 0, 1, 1},                 /* type */
        {0, UINT32_MAX + 1ull, 1, 1}, /* offset over 32 bits */
        {0, 0, UINT32_MAX + 1ull, 1}, /* stored length over 32 bits */
        {0, 0, 1, UINT32_MAX + 1ull}, /* raw length over 32 bits */
        {0, UINT32_MAX - 5, 10, 1},   /* blob runs past 4 GiB */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_reset(&t);
        buf_append(&t, "PVIX\x01\x00\x01", 7);
        buf_append(&t, &sup[0], OID_LEN);
        buf_put_uvarint(&t, 1);
        buf_put_u8(&t, bad[i].type);
        buf_append(&t, &sup[1], OID_LEN);
        buf_put_uvarint(&t, bad[i].offset);
        buf_put_uvarint(&t, bad[i].stored);
        buf_put_uvarint(&t, bad[i].raw);
        expect_refused(t.data, t.len);
    }

    /* A valid file followed by a broken second pack adds nothing at all. */
    buf_reset(&t);
    buf_append(&t, b.data, b.len);
    t.data[t.len - 3] = 0x80; /* last raw_len becomes a truncated uvarint */
    expect_refused(t.data, t.len);

    /* Random corruption never crashes (ASan/UBSan builds check the "never"). */
    uint64_t seed = 3;
    for (int round = 0; round < 3000; round++) {
        buf_reset(&t);
        buf_append(&t, b.data, b.len);
        int flips = 1 + (int)(prng_next(&seed) % 4);
        for (int f = 0; f < flips; f++)
            t.data[prng_next(&seed) % t.len] ^= (uint8_t)(1u << (prng_next(&seed) % 8));
        struct idx *x = new_idx();
        struct err e;
        struct oid *got = NULL;
        size_t n_got = 0;
        if (idx_file_decode(x, t.data, t.len, &got, &n_got, &e) == 0)
            assert_true(idx_blob_count(x) <= 600);
        free(got);
        idx_free(x);
    }
    buf_free(&t);
    buf_free(&b);
}

static void test_memory_per_blob(void **state)
{
    enum { N = 1000000, PACK = 1000 };
    struct idx *x = new_idx();
    struct pack_entry *batch = calloc(PACK, sizeof *batch);
    uint64_t seed = 11;
    struct err e;
    double worst = 0; /* over the second half: the 256 KiB directory weighs on small indexes */
    for (size_t n = 0; n < N; n += PACK) {
        for (size_t i = 0; i < PACK; i++) {
            prng_oid(&seed, &batch[i].id);
            batch[i].stored_len = 1000;
        }
        struct oid pack;
        prng_oid(&seed, &pack);
        assert_int_equal(idx_add_pack(x, &pack, batch, PACK, &e), 0);
        double per_blob = (double)idx_memory(x) / (double)idx_blob_count(x);
        if (n >= N / 2 && per_blob > worst) worst = per_blob;
    }
    assert_int_equal(idx_blob_count(x), N);
    double per_blob = (double)idx_memory(x) / N;
    print_message("index memory: %.2f bytes/blob at %d blobs, at most %.2f from %d on\n", per_blob,
                  N, worst, N / 2);
    assert_true(per_blob <= 48.0);
    assert_true(worst <= 48.0);
    free(batch);
    idx_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_lookup_many),
        cmocka_unit_test(test_foreach_stops),
        cmocka_unit_test(test_first_location_wins),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_add_rejects_bad_type),
        cmocka_unit_test(test_file_roundtrip),
        cmocka_unit_test(test_file_empty),
        cmocka_unit_test(test_file_encode_rejects_bad_type),
        cmocka_unit_test(test_file_hostile),
        cmocka_unit_test(test_memory_per_blob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
