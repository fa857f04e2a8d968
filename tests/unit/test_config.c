/* test_config.c - unit tests of the repository config: defaults, round trip, and refusal of
 * malformed JSON and of every field outside its bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "repo/config.h"
#include "repo/crypt.h"

static int setup(void **state)
{
    struct err e;
    return crypt_init(&e);
}

static void test_default_round_trip(void **state)
{
    struct err e;
    struct config c, d, c2;
    config_default(&c);
    config_default(&c2);
    assert_int_equal(c.version, CONFIG_VERSION);
    assert_false(oid_eq(&c.repo_id, &c2.repo_id));
    assert_int_equal(chunker_params_check(&c.chunker, &e), 0);
    assert_int_equal(c.pack_size, CONFIG_DEFAULT_PACK_SIZE);
    assert_int_equal(c.zstd_level, CONFIG_DEFAULT_ZSTD_LEVEL);

    struct buf b = BUF_INIT;
    assert_int_equal(config_encode(&c, &b, &e), 0);
    memset(&d, 0xee, sizeof d);
    assert_int_equal(config_decode(b.data, b.len, &d, &e), 0);
    assert_int_equal(d.version, c.version);
    assert_true(oid_eq(&d.repo_id, &c.repo_id));
    assert_memory_equal(&d.chunker, &c.chunker, sizeof c.chunker);
    assert_int_equal(d.pack_size, c.pack_size);
    assert_int_equal(d.zstd_level, c.zstd_level);

    /* non-default values survive too */
    c.chunker = (struct chunker_params){1024, 4096, 65536};
    c.pack_size = 1u << 30;
    c.zstd_level = 0;
    buf_reset(&b);
    assert_int_equal(config_encode(&c, &b, &e), 0);
    assert_int_equal(config_decode(b.data, b.len, &d, &e), 0);
    assert_memory_equal(&d.chunker, &c.chunker, sizeof c.chunker);
    assert_int_equal(d.pack_size, 1u << 30);
    assert_int_equal(d.zstd_level, 0);
    assert_int_equal(d.blob_id, CRYPT_ID_HMAC_SHA256);
    assert_non_null(memmem(b.data, b.len, "\"blob_id\":\"hmac-sha256\"", 23));

    /* A version 1 config (no blob_id) means keyed BLAKE2b, and is written back as it was. */
    c.version = 1;
    c.blob_id = CRYPT_ID_BLAKE2B;
    buf_reset(&b);
    assert_int_equal(config_encode(&c, &b, &e), 0);
    assert_null(memmem(b.data, b.len, "blob_id", 7));
    assert_int_equal(config_decode(b.data, b.len, &d, &e), 0);
    assert_int_equal(d.version, 1);
    assert_int_equal(d.blob_id, CRYPT_ID_BLAKE2B);
    /* ...but a version 1 config cannot claim another function. */
    c.blob_id = CRYPT_ID_HMAC_SHA256;
    buf_reset(&b);
    assert_int_equal(config_encode(&c, &b, &e), ERR_FAIL);
    buf_free(&b);
}

static void test_encode_refuses_bad(void **state)
{
    struct err e;
    struct config c;
    struct buf b = BUF_INIT;
    config_default(&c);
    c.zstd_level = 20;
    assert_int_equal(config_encode(&c, &b, &e), ERR_FAIL);
    config_default(&c);
    c.chunker.avg_size = 3u << 19;
    assert_int_equal(config_encode(&c, &b, &e), ERR_FAIL);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

/* Decoding `s` must fail and leave *c untouched. */
static void refused(const char *s)
{
    struct err e;
    struct config c, before;
    memset(&c, 0x5a, sizeof c);
    before = c;
    err_clear(&e);
    assert_int_equal(config_decode(s, strlen(s), &c, &e), ERR_FAIL);
    assert_true(e.msg[0] != '\0');
    assert_memory_equal(&c, &before, sizeof c);
}

static char *with(const char *path, json_t *v)
{
    struct err e;
    struct config c;
    struct buf b = BUF_INIT;
    config_default(&c);
    assert_int_equal(config_encode(&c, &b, &e), 0);
    json_t *root = json_loadb((const char *)b.data, b.len, 0, NULL);
    assert_non_null(root);
    buf_free(&b);
    json_t *obj = root;
    const char *key = path;
    if (strncmp(path, "chunker.", 8) == 0) {
        obj = json_object_get(root, "chunker");
        key = path + 8;
    }
    if (v)
        json_object_set_new(obj, key, v);
    else
        json_object_del(obj, key);
    char *s = json_dumps(root, JSON_COMPACT);
    assert_non_null(s);
    json_decref(root);
    return s;
}

static void test_decode_refuses_bad(void **state)
{
    static const char *bad_json[] = {
        "", "{", "[1]", "1", "{\"version\":1,\"version\":1}", "{\"version\":1} trailing"};
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++)
        refused(bad_json[i]);

    static const char *fields[] = {"version",          "repo_id",          "chunker",
                                   "chunker.min_size", "chunker.avg_size", "chunker.max_size",
                                   "pack_size",        "zstd_level",       "blob_id"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char *s = with(fields[i], NULL);
        refused(s);
        free(s);
        s = with(fields[i], json_string("1"));
        refused(s);
        free(s);
    }
    struct {
        const char *path;
        json_t *v;
    } cases[] = {
        {"version", json_integer(0)},
        {"version", json_integer(3)}, /* version 3 needs object_lock (test_s3_lock) */
        {"version", json_integer(4)},
        {"blob_id", json_string("sha1")},
        {"blob_id", json_integer(2)},
        {"repo_id", json_string("abcd")},
        {"repo_id",
         json_string("zz00000000000000000000000000000000000000000000000000000000000000")},
        {"chunker.min_size", json_integer(512)},
        {"chunker.min_size", json_integer(-1)},
        {"chunker.avg_size", json_integer(1000000)},
        {"chunker.avg_size", json_integer(128 * 1024)},
        {"chunker.max_size", json_integer(128 * 1024 * 1024)},
        {"chunker.max_size", json_integer((json_int_t)1 << 32)},
        {"pack_size", json_integer(1024 * 1024 - 1)},
        {"pack_size", json_integer((json_int_t)1024 * 1024 * 1024 + 1)},
        {"pack_size", json_real(16e6)},
        {"zstd_level", json_integer(-1)},
        {"zstd_level", json_integer(20)},
        {"zstd_level", json_false()},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = with(cases[i].path, cases[i].v);
        refused(s);
        free(s);
    }
    /* the version message tells the user what is going on */
    struct err e;
    struct config c;
    char *s = with("version", json_integer(4));
    assert_int_equal(config_decode(s, strlen(s), &c, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "version 4"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_round_trip),
        cmocka_unit_test(test_encode_refuses_bad),
        cmocka_unit_test(test_decode_refuses_bad),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
