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
#include "backend/s3_versions.h"
#include "cli/options.h"
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
        ("<ObjectLockConfiguration><ObjectLockEnabled>EnabledEnabledEnabledEnabledEnabled"
         "</ObjectLockEnabled></ObjectLockConfiguration>"),
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
    assert_non_null(memmem(b.data, b.len, "\"compliance\"", 12));
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

static void test_times(void **state)
{
    int64_t ms;
    assert_true(s3_time_parse_ms("2026-12-08T02:13:06.623Z", &ms));
    assert_int_equal(ms, 1796695986623LL);
    assert_true(s3_time_parse_ms("2026-12-08T02:13:06Z", &ms));
    assert_int_equal(ms, 1796695986000LL);
    assert_true(s3_time_parse_ms("2026-12-08T02:13:06.6234567Z", &ms));
    assert_int_equal(ms, 1796695986623LL);
    assert_true(s3_time_parse_ms("2026-12-08T02:13:06.6Z", &ms));
    assert_int_equal(ms, 1796695986600LL);
    static const char *bad[] = {"",
                                "2026-12-08",
                                "2026-12-08T02:13:06",
                                "2026-13-08T02:13:06Z",
                                "2026-12-08T02:13:06.Z",
                                "2026-12-08T02:13:06+01:00",
                                "1969-12-31T23:59:59Z",
                                "2026-12-08 02:13:06Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(s3_time_parse_ms(bad[i], &ms));
    /* what --as-of takes */
    assert_true(opt_parse_time_ms("2026-12-08T02:13:06.623Z", &ms));
    assert_int_equal(ms, 1796695986623LL);
    assert_true(opt_parse_time_ms("2026-12-08 02:13:06", &ms));
    assert_int_equal(ms, 1796695986000LL);
    assert_true(opt_parse_time_ms("@1796695986.5", &ms));
    assert_int_equal(ms, 1796695986500LL);
    assert_false(opt_parse_time_ms("yesterday", &ms));
    assert_false(opt_parse_time_ms("2026-12-08", &ms));
    assert_false(opt_parse_time_ms("2026-12-08T02:13:06+0100", &ms));
    assert_false(opt_parse_time_ms("@", &ms));
}

/* Three keys: "config" (one version), "data/ab" (a version, overwritten, then deleted), "snap"
 * (written after T). Listed as S3 does: keys in order, newest first within a key. */
static const char page1[] =
    "<?xml version=\"1.0\"?><ListVersionsResult "
    "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><IsTruncated>true</IsTruncated>"
    "<NextKeyMarker>r/data/ab</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>"
    "<Version><Key>r/config</Key><VersionId>c1</VersionId><IsLatest>true</IsLatest>"
    "<LastModified>2026-12-08T02:00:00.000Z</LastModified><Size>300</Size></Version>"
    "<DeleteMarker><Key>r/data/ab</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest>"
    "<LastModified>2026-12-08T02:30:00.000Z</LastModified></DeleteMarker>"
    "<Version><Key>r/data/ab</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest>"
    "<LastModified>2026-12-08T02:20:00.000Z</LastModified><Size>7</Size></Version>"
    "<Version><Key>r/data/ab</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>"
    "<LastModified>2026-12-08T02:10:00.000Z</LastModified><Size>1000</Size></Version>"
    "</ListVersionsResult>";
static const char page2[] =
    "<ListVersionsResult><IsTruncated>false</IsTruncated>"
    "<Version><Key>r/snap</Key><VersionId>s1</VersionId><IsLatest>true</IsLatest>"
    "<LastModified>2026-12-08T02:40:00.000Z</LastModified><Size>9</Size></Version>"
    "</ListVersionsResult>";

static void test_versions(void **state)
{
    struct err e;
    struct s3_vt *t = s3_vt_new();
    struct s3_versions_page p = {0};
    assert_int_equal(s3_versions_parse(page1, strlen(page1), s3_vt_add, t, &p, &e), 0);
    assert_true(p.truncated);
    assert_string_equal(p.next_key, "r/data/ab");
    assert_string_equal(p.next_version, "v1");
    assert_int_equal(p.entries, 4);
    s3_versions_page_free(&p);
    assert_int_equal(s3_versions_parse(page2, strlen(page2), s3_vt_add, t, &p, &e), 0);
    assert_false(p.truncated);
    assert_null(p.next_key);
    s3_versions_page_free(&p);
    s3_vt_finish(t);
    assert_int_equal(s3_vt_add(t, s3_vt_entry(t, 0, 0)), 1); /* nothing after finish */
    assert_int_equal(s3_vt_keys(t), 3);
    assert_string_equal(s3_vt_key(t, 1), "r/data/ab");
    assert_int_equal(s3_vt_entries(t, 1), 3);
    assert_true(s3_vt_entry(t, 1, 0)->marker);
    assert_null(s3_vt_entry(t, 1, 3));
    int64_t t0, t15, t25, t35, t45;
    assert_true(s3_time_parse_ms("2026-12-08T01:59:59.999Z", &t0));
    assert_true(s3_time_parse_ms("2026-12-08T02:15:00Z", &t15));
    assert_true(s3_time_parse_ms("2026-12-08T02:25:00Z", &t25));
    assert_true(s3_time_parse_ms("2026-12-08T02:35:00Z", &t35));
    assert_true(s3_time_parse_ms("2026-12-08T02:45:00Z", &t45));
    assert_null(s3_vt_at(t, "r/config", t0));
    assert_string_equal(s3_vt_at(t, "r/config", t0 + 1)->version_id, "c1"); /* at, inclusive */
    assert_null(s3_vt_at(t, "r/data/ab", t0));
    assert_string_equal(s3_vt_at(t, "r/data/ab", t15)->version_id, "v1");
    assert_int_equal(s3_vt_at(t, "r/data/ab", t15)->size, 1000);
    assert_string_equal(s3_vt_at(t, "r/data/ab", t25)->version_id, "v2");
    assert_null(s3_vt_at(t, "r/data/ab", t35)); /* deleted then */
    assert_null(s3_vt_current(t, "r/data/ab"));
    assert_null(s3_vt_at(t, "r/snap", t35));
    assert_string_equal(s3_vt_at(t, "r/snap", t45)->version_id, "s1");
    assert_string_equal(s3_vt_current(t, "r/snap")->version_id, "s1");
    assert_null(s3_vt_at(t, "r/nothing", t45));
    /* what repair versions does to go back to each time */
    const struct s3_version *v;
    assert_int_equal(s3_vt_change(t, "r/config", t15, &v), 0);  /* unchanged since */
    assert_int_equal(s3_vt_change(t, "r/data/ab", t15, &v), 1); /* deleted: restore v1 */
    assert_string_equal(v->version_id, "v1");
    assert_int_equal(s3_vt_change(t, "r/data/ab", t35, &v), 0); /* deleted then too */
    assert_int_equal(s3_vt_change(t, "r/snap", t35, &v), 2);    /* written after: remove */
    assert_int_equal(s3_vt_change(t, "r/snap", t45, &v), 0);
    assert_int_equal(s3_vt_change(t, "r/config", t0, &v), 2);
    s3_vt_free(t);

    /* malformed listings are refused with a message */
    static const char *bad[] = {
        "",
        "<ListBucketResult></ListBucketResult>",
        "<ListVersionsResult><Version><Key>k</Key><VersionId>v</VersionId></Version>"
        "</ListVersionsResult>",
        "<ListVersionsResult><Version><Key>k</Key><VersionId>v</VersionId><LastModified>"
        "yesterday</LastModified></Version></ListVersionsResult>",
        "<ListVersionsResult><Version><Key></Key><VersionId>v</VersionId><LastModified>"
        "2026-12-08T02:00:00Z</LastModified></Version></ListVersionsResult>",
        "<ListVersionsResult><IsTruncated>maybe</IsTruncated></ListVersionsResult>",
        "<!DOCTYPE a [<!ENTITY x \"y\">]><ListVersionsResult/>",
        "<ListVersionsResult><Version><Key>k</Key>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct s3_vt *u = s3_vt_new();
        memset(&p, 0, sizeof p);
        err_clear(&e);
        assert_int_equal(s3_versions_parse(bad[i], strlen(bad[i]), s3_vt_add, u, &p, &e), ERR_FAIL);
        assert_non_null(strstr(e.msg, "malformed version listing"));
        s3_versions_page_free(&p);
        s3_vt_free(u);
    }
    /* a key longer than S3 allows */
    size_t n = S3_VER_KEY_MAX + 200;
    char *doc = malloc(n + 200), *key = malloc(n + 1);
    memset(key, 'k', n);
    key[n] = '\0';
    snprintf(doc, n + 200,
             "<ListVersionsResult><Version><Key>%s</Key><VersionId>v</VersionId>"
             "<LastModified>2026-12-08T02:00:00Z</LastModified></Version></ListVersionsResult>",
             key);
    struct s3_vt *u = s3_vt_new();
    memset(&p, 0, sizeof p);
    assert_int_equal(s3_versions_parse(doc, strlen(doc), s3_vt_add, u, &p, &e), ERR_FAIL);
    s3_vt_free(u);
    free(doc);
    free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_applies),      cmocka_unit_test(test_headers),
        cmocka_unit_test(test_parse_config), cmocka_unit_test(test_config_lock),
        cmocka_unit_test(test_times),        cmocka_unit_test(test_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
