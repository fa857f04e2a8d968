/* test_s3_lock.c - unit tests of S3 Object Lock's pure parts (backend/s3_lock.h) and of the
 * object lock in the repository config: which objects are locked, the headers of a locked
 * upload (date, mode, Content-MD5 of memory and of a file), the lock configuration parser, and
 * the config's version 3 round trip and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/s3_lock.h"
#include "repo/config.h"
#include "repo/crypt.h"

static void test_applies(void **state)
{
    struct backend_retention off = {BACKEND_LOCK_OFF, 86400}, on = {BACKEND_LOCK_GOVERNANCE, 60};
    assert_false(s3_lock_applies(&off, "config"));
    assert_false(s3_lock_applies(NULL, "config"));
    assert_true(s3_lock_applies(&on, "config"));
    assert_true(s3_lock_applies(&on, "data/ab/abcd"));
    assert_true(s3_lock_applies(&on, "snapshots/ab"));
    assert_true(s3_lock_applies(&on, "lockss/x"));
    assert_false(s3_lock_applies(&on, "locks/ab"));
    assert_string_equal(s3_lock_mode_name(BACKEND_LOCK_COMPLIANCE), "COMPLIANCE");
    assert_null(s3_lock_mode_name(BACKEND_LOCK_OFF));
}

static void test_headers(void **state)
{
    struct err e;
    struct s3_lock_hdrs h;
    struct backend_retention r = {BACKEND_LOCK_COMPLIANCE, 2 * 86400};
    /* 2026-12-08T00:00:00Z + 2 days; MD5("abc") = kAFQmDzST7DWlj99KOF/cg== */
    assert_int_equal(s3_lock_headers(&r, 1796688000, "abc", -1, 3, &h, &e), 0);
    assert_string_equal(h.mode, "x-amz-object-lock-mode: COMPLIANCE");
    assert_string_equal(h.until, "x-amz-object-lock-retain-until-date: 2026-12-10T00:00:00Z");
    assert_string_equal(h.md5, "Content-MD5: kAFQmDzST7DWlj99KOF/cg==");
    /* from a file: MD5 of nothing, then of 600 KiB read in pieces equals that of memory */
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(s3_lock_headers(&r, 0, NULL, fileno(f), 0, &h, &e), 0);
    assert_string_equal(h.md5, "Content-MD5: 1B2M2Y8AsgTpgAmY7PhCfg==");
    size_t n = 600 * 1024;
    char *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)(i * 7 + i / 300);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fflush(f), 0);
    struct s3_lock_hdrs hm;
    assert_int_equal(s3_lock_headers(&r, 0, NULL, fileno(f), n, &h, &e), 0);
    assert_int_equal(s3_lock_headers(&r, 0, b, -1, n, &hm, &e), 0);
    assert_string_equal(h.md5, hm.md5);
    /* a file shorter than asked for fails */
    assert_int_equal(s3_lock_headers(&r, 0, NULL, fileno(f), n + 1, &h, &e), ERR_FAIL);
    fclose(f);
    free(b);
    struct backend_retention off = {BACKEND_LOCK_OFF, 60};
    assert_int_equal(s3_lock_headers(&off, 0, "", -1, 0, &h, &e), ERR_FAIL);
}

static void test_parse_config(void **state)
{
    struct err e;
    bool on = true;
    const char *yes = "<?xml version=\"1.0\"?><ObjectLockConfiguration "
                      "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>"
                      "Enabled</ObjectLockEnabled></ObjectLockConfiguration>";
    assert_int_equal(s3_lock_parse_config(yes, strlen(yes), &on, &e), 0);
    assert_true(on);
    const char *rule = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>"
                       "<Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days>"
                       "</DefaultRetention></Rule></ObjectLockConfiguration>";
    assert_int_equal(s3_lock_parse_config(rule, strlen(rule), &on, &e), 0);
    assert_true(on);
    const char *no = "<ObjectLockConfiguration></ObjectLockConfiguration>";
    assert_int_equal(s3_lock_parse_config(no, strlen(no), &on, &e), 0);
    assert_false(on);
    const char *nested = "<ObjectLockConfiguration><Rule><ObjectLockEnabled>Enabled"
                         "</ObjectLockEnabled></Rule></ObjectLockConfiguration>";
    assert_int_equal(s3_lock_parse_config(nested, strlen(nested), &on, &e), 0);
    assert_false(on);
    static const char *bad[] = {
        "",
        "<Error><Code>NoSuchBucket</Code></Error>",
        "<ObjectLockConfiguration><ObjectLockEnabled>Enabled",
        "<!DOCTYPE x [<!ENTITY a \"b\">]><ObjectLockConfiguration/>",
        "<ObjectLockConfiguration><ObjectLockEnabled>EnabledEnabledEnabledEnabledEnabled"
        "</ObjectLockEnabled></ObjectLockConfiguration>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(s3_lock_parse_config(bad[i], strlen(bad[i]), &on, &e), ERR_FAIL);
        assert_false(on);
        assert_non_null(strstr(e.msg, "object lock configuration"));
    }
}

static void test_config_lock(void **state)
{
    struct err e;
    struct config c, d;
    struct buf b = BUF_INIT;
    assert_int_equal(crypt_init(&e), 0);
    config_default(&c);
    assert_int_equal(c.object_lock.mode, BACKEND_LOCK_OFF);
    c.object_lock.mode = BACKEND_LOCK_COMPLIANCE;
    c.object_lock.seconds = 86400;
    /* a lock needs version 3 and version 3 a lock */
    assert_int_equal(config_encode(&c, &b, &e), ERR_FAIL);
    c.version = CONFIG_VERSION_LOCK;
    assert_int_equal(config_encode(&c, &b, &e), 0);
    assert_int_equal(config_decode(b.data, b.len, &d, &e), 0);
    assert_int_equal(d.version, CONFIG_VERSION_LOCK);
    assert_int_equal(d.object_lock.mode, BACKEND_LOCK_COMPLIANCE);
    assert_int_equal(d.object_lock.seconds, 86400);
    assert_non_null(strstr((const char *)b.data, "\"compliance\""));
    c.object_lock.seconds = 59;
    buf_reset(&b);
    assert_int_equal(config_encode(&c, &b, &e), ERR_FAIL);
    c.object_lock.mode = BACKEND_LOCK_OFF;
    c.object_lock.seconds = 0;
    assert_int_equal(config_encode(&c, &b, &e), ERR_FAIL);
    static const char *bad[] = {
        /* version 3 without object_lock, with a bad mode, a short retention */
        "{\"version\":3,\"repo_id\":\"%s\",\"chunker\":{\"min_size\":262144,\"avg_size\":1048576,"
        "\"max_size\":4194304},\"pack_size\":16777216,\"zstd_level\":3,\"blob_id\":\"hmac-"
        "sha256\"}",
        "{\"version\":3,\"repo_id\":\"%s\",\"chunker\":{\"min_size\":262144,\"avg_size\":1048576,"
        "\"max_size\":4194304},\"pack_size\":16777216,\"zstd_level\":3,\"blob_id\":\"hmac-sha256\","
        "\"object_lock\":{\"mode\":\"legal-hold\",\"retention_s\":86400}}",
        "{\"version\":3,\"repo_id\":\"%s\",\"chunker\":{\"min_size\":262144,\"avg_size\":1048576,"
        "\"max_size\":4194304},\"pack_size\":16777216,\"zstd_level\":3,\"blob_id\":\"hmac-sha256\","
        "\"object_lock\":{\"mode\":\"governance\",\"retention_s\":1}}",
    };
    char hex[OID_HEX_LEN + 1], doc[1024];
    oid_hex(&c.repo_id, hex);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(doc, sizeof doc, bad[i], hex);
        err_clear(&e);
        assert_int_equal(config_decode(doc, strlen(doc), &d, &e), ERR_FAIL);
        assert_non_null(strstr(e.msg, "object lock") ? e.msg : strstr(e.msg, "object_lock"));
    }
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_applies),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_parse_config),
        cmocka_unit_test(test_config_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
