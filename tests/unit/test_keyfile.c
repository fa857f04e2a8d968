/* test_keyfile.c - unit tests of key files: round trip, wrong password, descriptive fields, and
 * refusal of malformed files and of Argon2id parameters outside sane bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "repo/keyfile.h"

static uint8_t master[CRYPT_KEY_LEN];
static struct keyfile_params fast;

static int setup(void **state)
{
    struct err e;
    if (crypt_init(&e) < 0) return -1;
    randombytes_buf(master, sizeof master);
    keyfile_params_min(&fast);
    return 0;
}

static void create(const char *password, struct buf *out)
{
    struct err e;
    buf_reset(out);
    assert_int_equal(keyfile_create(master, password, &fast, out, &e), 0);
}

static void test_params_default(void **state)
{
    struct keyfile_params p;
    assert_int_equal(fast.opslimit, crypto_pwhash_argon2id_OPSLIMIT_MIN);
    assert_int_equal(fast.memlimit, crypto_pwhash_argon2id_MEMLIMIT_MIN);
    keyfile_params_default(&p);
    assert_int_equal(p.opslimit, KEYFILE_DEFAULT_OPSLIMIT);
    assert_int_equal(p.memlimit, KEYFILE_DEFAULT_MEMLIMIT);
}

static void test_round_trip(void **state)
{
    struct err e;
    struct buf kf = BUF_INIT;
    uint8_t got[CRYPT_KEY_LEN];
    create("correct horse", &kf);
    assert_int_equal(keyfile_unwrap(kf.data, kf.len, "correct horse", got, &e), 0);
    assert_memory_equal(got, master, sizeof got);

    err_clear(&e);
    assert_int_equal(keyfile_unwrap(kf.data, kf.len, "correct horse!", got, &e), ERR_AUTH);
    assert_string_equal(e.msg, "wrong password or no key file matches");
    assert_int_equal(keyfile_unwrap(kf.data, kf.len, "", got, &e), ERR_AUTH);

    /* A second key file for the same master key has its own salt and nonce. */
    struct buf kf2 = BUF_INIT;
    create("correct horse", &kf2);
    assert_false(kf.len == kf2.len && memcmp(kf.data, kf2.data, kf.len) == 0);
    assert_int_equal(keyfile_unwrap(kf2.data, kf2.len, "correct horse", got, &e), 0);
    assert_memory_equal(got, master, sizeof got);

    struct keyfile_info info;
    assert_int_equal(keyfile_info(kf.data, kf.len, &info, &e), 0);
    assert_int_equal(info.opslimit, fast.opslimit);
    assert_int_equal(info.memlimit, fast.memlimit);
    assert_int_equal(strlen(info.created), 20);
    assert_int_equal(info.created[10], 'T');
    assert_int_equal(info.created[19], 'Z');
    assert_true(info.hostname[0] != '\0');
    assert_true(info.username[0] != '\0');
    buf_free(&kf);
    buf_free(&kf2);
}

static void test_create_refuses_bad_params(void **state)
{
    struct err e;
    struct buf kf = BUF_INIT;
    struct keyfile_params p = {0, fast.memlimit};
    assert_int_equal(keyfile_create(master, "pw", &p, &kf, &e), ERR_FAIL);
    p = (struct keyfile_params){1, 1024};
    assert_int_equal(keyfile_create(master, "pw", &p, &kf, &e), ERR_FAIL);
    assert_int_equal(kf.len, 0);
    buf_free(&kf);
}

/* Re-encodes the key file with `key` set to `v` (NULL removes it). */
static char *edit(const struct buf *kf, const char *key, json_t *v)
{
    json_t *root = json_loadb((const char *)kf->data, kf->len, 0, NULL);
    assert_non_null(root);
    if (v)
        json_object_set_new(root, key, v);
    else
        json_object_del(root, key);
    char *s = json_dumps(root, JSON_COMPACT);
    assert_non_null(s);
    json_decref(root);
    return s;
}

/* keyfile_unwrap with password "pw" must return `code`; keyfile_info fails only on ERR_FAIL. */
static void expect(const char *s, int code)
{
    struct err e;
    struct keyfile_info info;
    uint8_t got[CRYPT_KEY_LEN];
    err_clear(&e);
    assert_int_equal(keyfile_info(s, strlen(s), &info, &e), code == ERR_FAIL ? ERR_FAIL : 0);
    err_clear(&e);
    assert_int_equal(keyfile_unwrap(s, strlen(s), "pw", got, &e), code);
    if (code) assert_true(e.msg[0] != '\0');
    if (!code) assert_memory_equal(got, master, sizeof got);
}

static void test_malformed(void **state)
{
    struct buf kf = BUF_INIT;
    create("pw", &kf);
    static const char *bad_json[] = {
        "", "{", "[]", "null", "\"x\"", "{\"version\":1}", "{}  x", "{\"version\":1,\"version\":1}",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++)
        expect(bad_json[i], ERR_FAIL);

    static const char *fields[] = {"version", "kdf",     "opslimit", "memlimit", "salt",
                                   "nonce",   "wrapped", "created",  "hostname", "username"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char *s = edit(&kf, fields[i], NULL); /* missing */
        expect(s, ERR_FAIL);
        free(s);
        s = edit(&kf, fields[i], json_true()); /* wrong type */
        expect(s, ERR_FAIL);
        free(s);
    }
    struct {
        const char *key;
        json_t *v;
        int code;
    } cases[] = {
        {"version", json_integer(2), ERR_FAIL},
        {"kdf", json_string("scrypt"), ERR_FAIL},
        {"opslimit", json_integer(0), ERR_FAIL},
        {"opslimit", json_integer(101), ERR_FAIL},
        {"opslimit", json_integer(-1), ERR_FAIL},
        {"opslimit", json_real(1.0), ERR_FAIL},
        {"memlimit", json_integer(8191), ERR_FAIL},
        {"memlimit", json_integer((json_int_t)4 * 1024 * 1024 * 1024 + 1), ERR_FAIL},
        {"memlimit", json_integer(INT64_MAX), ERR_FAIL},
        {"salt", json_string("00"), ERR_FAIL},
        {"salt", json_string("zz112233445566778899aabbccddeeff"), ERR_FAIL},
        {"nonce", json_string(""), ERR_FAIL},
        {"wrapped", json_string("00112233"), ERR_FAIL},
        {"hostname", json_string("x"), 0}, /* descriptive only: not authenticated */
        {"created", json_string("0123456789012345678901234567890123456789"), ERR_FAIL},
        /* parameters in bounds but different from the ones used: the derived key differs */
        {"opslimit", json_integer(2), ERR_AUTH},
        {"salt", json_string("00112233445566778899aabbccddeeff"), ERR_AUTH},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = edit(&kf, cases[i].key, cases[i].v);
        expect(s, cases[i].code);
        free(s);
    }
    /* every hex digit of the wrapped key and the nonce matters */
    json_t *root = json_loadb((const char *)kf.data, kf.len, 0, NULL);
    assert_non_null(root);
    const char *fields2[] = {"wrapped", "nonce"};
    for (int f = 0; f < 2; f++) {
        char hex[200];
        snprintf(hex, sizeof hex, "%s", json_string_value(json_object_get(root, fields2[f])));
        for (size_t i = 0; i < strlen(hex); i += 7) {
            char saved = hex[i];
            hex[i] = saved == '0' ? '1' : '0';
            char *s = edit(&kf, fields2[f], json_string(hex));
            expect(s, ERR_AUTH);
            free(s);
            hex[i] = saved;
        }
    }
    json_decref(root);
    /* too large a file is refused before parsing */
    size_t big = 70000;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    huge[big] = '\0';
    expect(huge, ERR_FAIL);
    free(huge);
    buf_free(&kf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_default),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_create_refuses_bad_params),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
