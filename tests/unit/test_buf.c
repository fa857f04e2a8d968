/* test_buf.c - unit tests of base/buf: growable buffers, little-endian integers, uvarints
 * (round trip, overlong and truncated encodings refused) and bounds-checked reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"

static void test_buf_grow(void **state)
{
    struct buf b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_put_u8(&b, (uint8_t)i), 0);
    assert_int_equal(b.len, 1000);
    assert_true(b.cap >= 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(b.data[i], (uint8_t)i);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_true(b.cap >= 1000);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -1);
    assert_int_equal(buf_append(&b, "", 0), 0);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

static void test_fixed_ints(void **state)
{
    struct buf b = BUF_INIT;
    assert_int_equal(buf_put_u32(&b, 0x11223344u), 0);
    assert_int_equal(buf_put_u64(&b, 0x0102030405060708ull), 0);
    static const uint8_t want[] = {0x44, 0x33, 0x22, 0x11, 8, 7, 6, 5, 4, 3, 2, 1};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    struct rd r = rd_make(b.data, b.len);
    uint32_t v32;
    uint64_t v64;
    assert_true(rd_u32(&r, &v32));
    assert_int_equal(v32, 0x11223344u);
    assert_true(rd_u64(&r, &v64));
    assert_int_equal(v64, 0x0102030405060708ull);
    assert_int_equal(r.left, 0);
    assert_false(rd_u32(&r, &v32));
    r = rd_make(b.data, 7);
    assert_true(rd_u32(&r, &v32));
    assert_false(rd_u64(&r, &v64));
    assert_int_equal(r.left, 3); /* a failed read leaves the cursor alone */
    buf_free(&b);
}

static void test_uvarint_round_trip(void **state)
{
    static const uint64_t vals[] = {0,          1,          127,        128,
                                    255,        300,        16383,      16384,
                                    UINT32_MAX, 1ull << 35, 1ull << 56, (1ull << 63) - 1,
                                    1ull << 63, UINT64_MAX};
    static const size_t lens[] = {1, 1, 1, 2, 2, 2, 2, 3, 5, 6, 9, 9, 10, 10};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        struct buf b = BUF_INIT;
        assert_int_equal(buf_put_uvarint(&b, vals[i]), 0);
        assert_int_equal(b.len, lens[i]);
        struct rd r = rd_make(b.data, b.len);
        uint64_t v = 12345;
        assert_true(rd_uvarint(&r, &v));
        assert_true(v == vals[i]);
        assert_int_equal(r.left, 0);
        /* every proper prefix is truncated */
        for (size_t k = 0; k < b.len; k++) {
            r = rd_make(b.data, k);
            assert_false(rd_uvarint(&r, &v));
            assert_int_equal(r.left, k);
        }
        buf_free(&b);
    }
    const uint8_t known[] = {0xac, 0x02};
    struct rd r = rd_make(known, sizeof known);
    uint64_t v;
    assert_true(rd_uvarint(&r, &v));
    assert_int_equal(v, 300);
}

static void test_uvarint_rejects(void **state)
{
    static const struct {
        uint8_t b[12];
        size_t n;
    } bad[] = {
        {{0x80, 0x00}, 2},                                                        /* overlong 0 */
        {{0xff, 0x80, 0x00}, 3},                                                  /* overlong */
        {{0x80}, 1},                                                              /* truncated */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, 10},       /* > 64 bits */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00}, 11}, /* 11 bytes */
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 11},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rd r = rd_make(bad[i].b, bad[i].n);
        uint64_t v;
        assert_false(rd_uvarint(&r, &v));
        assert_int_equal(r.left, bad[i].n);
        assert_ptr_equal(r.p, bad[i].b);
    }
}

static void test_bytes_and_skip(void **state)
{
    struct buf b = BUF_INIT;
    assert_int_equal(buf_put_bytes(&b, "hello", 5), 0);
    assert_int_equal(buf_put_bytes(&b, "", 0), 0);
    assert_int_equal(b.len, 7);
    struct rd r = rd_make(b.data, b.len);
    const uint8_t *p;
    size_t n;
    assert_false(rd_bytes(&r, 4, &p, &n)); /* over the caller's maximum */
    assert_int_equal(r.left, 7);
    assert_true(rd_bytes(&r, 5, &p, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    assert_true(rd_bytes(&r, 5, &p, &n));
    assert_int_equal(n, 0);
    assert_int_equal(r.left, 0);

    /* a length that runs past the end */
    r = rd_make(b.data, 5);
    assert_false(rd_bytes(&r, 100, &p, &n));
    assert_int_equal(r.left, 5);

    uint8_t out[4];
    r = rd_make(b.data, b.len);
    assert_false(rd_copy(&r, out, 8));
    assert_true(rd_copy(&r, out, 4));
    assert_memory_equal(out, "\x05hel", 4);
    assert_true(rd_skip(&r, 1, NULL));
    assert_false(rd_skip(&r, 3, &p));
    assert_true(rd_skip(&r, 2, &p));
    assert_int_equal(r.left, 0);
    uint8_t u;
    assert_false(rd_u8(&r, &u));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_grow),           cmocka_unit_test(test_fixed_ints),
        cmocka_unit_test(test_uvarint_round_trip), cmocka_unit_test(test_uvarint_rejects),
        cmocka_unit_test(test_bytes_and_skip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
