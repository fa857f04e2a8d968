/* test_chunker.c - unit tests of the content-defined chunker: parameter checks, agreement with a
 * byte-by-byte reference of the documented algorithm, bounds, keying, and shift resistance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "chunker/chunker.h"

static const struct chunker_params defaults = {CHUNKER_DEFAULT_MIN, CHUNKER_DEFAULT_AVG,
                                               CHUNKER_DEFAULT_MAX};
static const struct chunker_params small = {2048, 8192, 32768};

static uint8_t key_a[CHUNKER_KEY_LEN], key_b[CHUNKER_KEY_LEN];

static int setup(void **state)
{
    if (sodium_init() < 0) return -1;
    memset(key_a, 0xa5, sizeof key_a);
    memset(key_b, 0xa5, sizeof key_b);
    key_b[31] ^= 1;
    return 0;
}

/* Deterministic pseudo-random bytes, so failures reproduce. */
static uint8_t *random_bytes(size_t len, uint8_t seed)
{
    static const uint8_t nonce[crypto_stream_chacha20_IETF_NONCEBYTES];
    uint8_t k[32];
    memset(k, seed, sizeof k);
    uint8_t *p = malloc(len + 1);
    assert_non_null(p);
    crypto_stream_chacha20_ietf(p, len, nonce, k);
    return p;
}

static struct chunker *make(const struct chunker_params *p, const uint8_t *key)
{
    struct chunker *c = NULL;
    struct err e;
    assert_int_equal(chunker_new(p, key, &c, &e), 0);
    assert_non_null(c);
    return c;
}

/* Cut lengths of a whole buffer; returns how many, in *n. */
static size_t *cut_all(const struct chunker *c, const uint8_t *d, size_t len, size_t *n)
{
    size_t cap = 16, cnt = 0, off = 0;
    size_t *v = malloc(cap * sizeof *v);
    assert_non_null(v);
    while (off < len) {
        size_t k = chunker_cut(c, d + off, len - off);
        assert_true(k >= 1 && k <= len - off);
        if (cnt == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof *v);
            assert_non_null(v);
        }
        v[cnt++] = k;
        off += k;
    }
    *n = cnt;
    return v;
}

/* The algorithm exactly as docs/FORMAT.md states it, one byte at a time. */
static size_t ref_cut(const struct chunker_params *p, const uint8_t key[32], const uint8_t *d,
                      size_t len)
{
    static const uint8_t nonce[crypto_stream_chacha20_IETF_NONCEBYTES];
    uint8_t ks[2048];
    uint64_t gear[256];
    crypto_stream_chacha20_ietf(ks, sizeof ks, nonce, key);
    for (int i = 0; i < 256; i++) {
        gear[i] = 0;
        for (int j = 0; j < 8; j++)
            gear[i] |= (uint64_t)ks[8 * i + j] << (8 * j);
    }
    unsigned bits = 0;
    for (uint32_t a = p->avg_size; a > 1; a >>= 1)
        bits++;
    uint64_t ms = 0, ml = 0;
    for (unsigned k = 0; k < bits + 2; k++)
        ms |= (uint64_t)1 << (63 - 2 * k);
    for (unsigned k = 0; k < bits - 2; k++)
        ml |= (uint64_t)1 << (63 - 2 * k);

    if (len <= p->min_size) return len;
    size_t end = len < p->max_size ? len : p->max_size;
    uint64_t h = 0;
    for (size_t i = p->min_size - 64; i < end; i++) {
        h = (h << 1) + gear[d[i]];
        if (i < p->min_size) continue;
        uint64_t m = i < p->avg_size ? ms : ml;
        if ((h & m) == 0) return i + 1;
    }
    return end;
}

static void test_params_check(void **state)
{
    struct err e;
    assert_int_equal(chunker_params_check(&defaults, &e), 0);
    assert_int_equal(chunker_params_check(&small, &e), 0);
    const struct chunker_params bad[] = {
        {512, 8192, 32768},                  /* min below the limit */
        {2048, 6000, 32768},                 /* avg not a power of two */
        {8192, 8192, 32768},                 /* avg not above min */
        {2048, 8192, 8192},                  /* max not above avg */
        {2048, 8192, 0},                     /* max zero */
        {2048, 0, 32768},                    /* avg zero */
        {1u << 20, 1u << 24, (1u << 26) + 1} /* max above the limit */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(chunker_params_check(&bad[i], &e), ERR_FAIL);
        assert_true(e.msg[0] != '\0');
        struct chunker *c = (struct chunker *)&e;
        assert_int_equal(chunker_new(&bad[i], key_a, &c, &e), ERR_FAIL);
        assert_null(c);
    }
    const struct chunker_params edge = {CHUNKER_LIMIT_MIN, 2048, CHUNKER_LIMIT_MAX};
    assert_int_equal(chunker_params_check(&edge, &e), 0);
}

static void test_small_inputs(void **state)
{
    struct chunker *c = make(&small, key_a);
    uint8_t *d = random_bytes(small.max_size * 2, 1);
    assert_int_equal(chunker_cut(c, d, 0), 0);
    assert_int_equal(chunker_cut(c, d, 1), 1);
    assert_int_equal(chunker_cut(c, d, small.min_size), small.min_size);
    size_t k = chunker_cut(c, d, small.min_size + 1);
    assert_true(k == small.min_size + 1);
    assert_memory_equal(chunker_params(c), &small, sizeof small);
    free(d);
    chunker_free(c);
}

static void test_matches_reference(void **state)
{
    const struct chunker_params *ps[] = {&small, &defaults};
    const size_t lens[] = {4u << 20, 24u << 20};
    for (int t = 0; t < 2; t++) {
        struct chunker *c = make(ps[t], key_a);
        uint8_t *d = random_bytes(lens[t], (uint8_t)(7 + t));
        size_t off = 0, n = 0;
        while (off < lens[t]) {
            size_t k = chunker_cut(c, d + off, lens[t] - off);
            assert_int_equal(k, ref_cut(ps[t], key_a, d + off, lens[t] - off));
            off += k;
            n++;
        }
        assert_true(n > 8);
        free(d);
        chunker_free(c);
    }
}

/* Known answer, also reproduced by an independent implementation from docs/FORMAT.md:
 * gear key and data as in the document's test vector. A change here changes every chunk. */
static void test_known_answer(void **state)
{
    static const uint8_t nonce[crypto_stream_chacha20_IETF_NONCEBYTES];
    uint8_t gear_key[32], master[32];
    size_t n = 0;
    assert_int_equal(sodium_hex2bin(gear_key, 32,
                                    "33becf5ee69e338c938edb8334ec3d7a"
                                    "24e9a66ec067940706bf887ae479ef96",
                                    64, NULL, &n, NULL),
                     0);
    for (int i = 0; i < 32; i++)
        master[i] = (uint8_t)i;
    size_t len = 1u << 20;
    uint8_t *d = malloc(len);
    assert_non_null(d);
    crypto_stream_chacha20_ietf(d, len, nonce, master);
    const struct chunker_params p = {1024, 4096, 16384};
    struct chunker *c = make(&p, gear_key);
    static const size_t want[] = {4365, 4398, 4592, 4162, 4270, 4262, 5197, 2180, 4100, 6063};
    size_t off = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        size_t k = chunker_cut(c, d + off, len - off);
        assert_int_equal(k, want[i]);
        off += k;
    }
    chunker_free(c);
    free(d);
}

static void test_bounds_and_determinism(void **state)
{
    size_t len = 32u << 20;
    uint8_t *d = random_bytes(len, 2);
    struct chunker *c = make(&small, key_a), *c2 = make(&small, key_a);
    size_t n, n2;
    size_t *v = cut_all(c, d, len, &n);
    size_t *v2 = cut_all(c2, d, len, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(v, v2, n * sizeof *v);
    for (size_t i = 0; i + 1 < n; i++) {
        assert_true(v[i] > small.min_size);
        assert_true(v[i] <= small.max_size);
    }
    /* Normalized chunking keeps the mean near the average on random data. */
    double mean = (double)len / (double)n;
    assert_true(mean > 0.8 * small.avg_size && mean < 1.5 * small.avg_size);

    /* Passing more than max_size never changes a cut. */
    size_t off = 0;
    for (size_t i = 0; i + 1 < n && i < 200; i++) {
        assert_int_equal(chunker_cut(c, d + off, small.max_size), v[i]);
        assert_int_equal(chunker_cut(c, d + off, small.max_size + 12345), v[i]);
        off += v[i];
    }

    /* Zeros never match the masks (the hash is a constant), so every chunk is max_size. */
    memset(d, 0, 4 * small.max_size);
    assert_int_equal(chunker_cut(c, d, 4 * small.max_size), small.max_size);
    free(v);
    free(v2);
    free(d);
    chunker_free(c);
    chunker_free(c2);
}

static void test_key_changes_cuts(void **state)
{
    size_t len = 8u << 20;
    uint8_t *d = random_bytes(len, 3);
    struct chunker *a = make(&small, key_a), *b = make(&small, key_b);
    size_t na, nb;
    size_t *va = cut_all(a, d, len, &na);
    size_t *vb = cut_all(b, d, len, &nb);
    /* Count cut offsets that the two keys share: by chance only, a few percent at most. */
    size_t shared = 0, ia = 0, ib = 0, oa = va[0], ob = vb[0];
    while (ia < na && ib < nb) {
        if (oa == ob) shared++;
        if (oa <= ob) {
            if (++ia < na) oa += va[ia];
        } else {
            if (++ib < nb) ob += vb[ib];
        }
    }
    assert_true(na > 100 && nb > 100);
    assert_true(shared * 10 < na);
    free(va);
    free(vb);
    free(d);
    chunker_free(a);
    chunker_free(b);
}

/* Chunks of `b` whose content is not among the chunks of `a` (by keyed hash). */
static size_t new_chunks(const struct chunker *c, const uint8_t *a, size_t alen, const uint8_t *b,
                         size_t blen)
{
    size_t na, nb;
    size_t *va = cut_all(c, a, alen, &na), *vb = cut_all(c, b, blen, &nb);
    uint8_t(*ha)[16] = malloc(na * 16);
    assert_non_null(ha);
    size_t off = 0;
    for (size_t i = 0; i < na; off += va[i], i++)
        crypto_generichash(ha[i], 16, a + off, va[i], NULL, 0);
    size_t fresh = 0;
    off = 0;
    for (size_t i = 0; i < nb; off += vb[i], i++) {
        uint8_t h[16];
        crypto_generichash(h, 16, b + off, vb[i], NULL, 0);
        bool found = false;
        for (size_t j = 0; j < na && !found; j++)
            found = memcmp(ha[j], h, 16) == 0;
        fresh += !found;
    }
    free(ha);
    free(va);
    free(vb);
    return fresh;
}

static void test_shift_resistance(void **state)
{
    size_t len = 64u << 20;
    uint8_t *orig = random_bytes(len, 4);
    uint8_t *mod = malloc(len + 1000);
    assert_non_null(mod);
    const struct chunker_params *ps[] = {&defaults, &small};
    for (int t = 0; t < 2; t++) {
        struct chunker *c = make(ps[t], key_a);
        /* small parameters give thousands of chunks: test them on a prefix to stay quick */
        size_t n = t == 0 ? len : len / 8;
        static const size_t shifts[] = {1, 7, 64, 333, 1000};
        for (size_t s = 0; s < sizeof shifts / sizeof shifts[0]; s++) {
            size_t k = shifts[s];
            /* insertion at the start */
            memset(mod, 0x5c, k);
            memcpy(mod + k, orig, n);
            assert_true(new_chunks(c, orig, n, mod, n + k) <= 2);
            /* deletion at the start */
            assert_true(new_chunks(c, orig, n, orig + k, n - k) <= 2);
        }
        /* a change of a few bytes in the middle touches one chunk, two if it moves a cut */
        memcpy(mod, orig, n);
        mod[n / 2] ^= 0xff;
        mod[n / 2 + 10] ^= 0x01;
        size_t fresh = new_chunks(c, orig, n, mod, n);
        assert_true(fresh >= 1 && fresh <= 2);
        /* an insertion in the middle: at most the chunks around it differ */
        memcpy(mod, orig, n / 2);
        memset(mod + n / 2, 0x33, 500);
        memcpy(mod + n / 2 + 500, orig + n / 2, n - n / 2);
        fresh = new_chunks(c, orig, n, mod, n + 500);
        assert_true(fresh >= 1 && fresh <= 3);
        chunker_free(c);
    }
    free(mod);
    free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_check),           cmocka_unit_test(test_small_inputs),
        cmocka_unit_test(test_matches_reference),      cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_bounds_and_determinism), cmocka_unit_test(test_key_changes_cuts),
        cmocka_unit_test(test_shift_resistance),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
