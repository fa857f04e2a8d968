/* test_agent_gc.c - unit tests of agent/gc: which snapshots of deleted Velero backups
 * maintenance forgets (backup in the cluster, in the location with the same or another UID,
 * gone from both, either unreadable, no backup recorded), and where the backup comes from (a
 * PodVolumeBackup's ownerReference, a snapshot's labels, a velero-backup.json). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/gc.h"

static json_t *parse(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_decide(void **state)
{
    (void)state;
    struct gc_owner b1 = {"daily-1", "u-1"};
    json_t *cluster = parse("{\"u-9\":\"other\"}");
    json_t *in_cluster = parse("{\"u-1\":\"daily-1\"}");
    json_t *same = parse("{\"daily-1\":\"u-1\"}");
    json_t *other_uid = parse("{\"daily-1\":\"u-2\"}"); /* deleted, then made again by name */
    json_t *absent = parse("{\"daily-1\":null}");
    json_t *unread = parse("{}"); /* reading backups/daily-1/velero-backup.json failed */

    struct gc_view v = {in_cluster, absent};
    assert_int_equal(gc_decide(&b1, &v), GC_KEEP_IN_CLUSTER);
    v = (struct gc_view){cluster, same};
    assert_int_equal(gc_decide(&b1, &v), GC_KEEP_IN_LOCATION);
    v = (struct gc_view){cluster, other_uid};
    assert_int_equal(gc_decide(&b1, &v), GC_FORGET);
    v = (struct gc_view){cluster, absent};
    assert_int_equal(gc_decide(&b1, &v), GC_FORGET);
    v = (struct gc_view){NULL, absent}; /* the Backup list failed */
    assert_int_equal(gc_decide(&b1, &v), GC_KEEP_UNSURE);
    v = (struct gc_view){cluster, unread};
    assert_int_equal(gc_decide(&b1, &v), GC_KEEP_UNSURE);
    v = (struct gc_view){cluster, NULL};
    assert_int_equal(gc_decide(&b1, &v), GC_KEEP_UNSURE);
    v = (struct gc_view){cluster, absent};
    assert_int_equal(gc_decide(NULL, &v), GC_KEEP_NOT_VELERO);
    struct gc_owner none = {0};
    assert_int_equal(gc_decide(&none, &v), GC_KEEP_NOT_VELERO);
    assert_non_null(strstr(gc_verdict_name(GC_FORGET), "gone"));
    json_decref(cluster);
    json_decref(in_cluster);
    json_decref(same);
    json_decref(other_uid);
    json_decref(absent);
    json_decref(unread);
}

static void test_snapshot_owner(void **state)
{
    (void)state;
    struct gc_owner o;
    json_t *s = parse("{\"id\":\"ab\",\"labels\":{\"velero-backup\":\"daily-1\","
                      "\"velero-backup-uid\":\"u-1\",\"pod\":\"web\"},\"tags\":[\"backup=x\"]}");
    assert_true(gc_snapshot_owner(s, &o));
    assert_string_equal(o.name, "daily-1");
    assert_string_equal(o.uid, "u-1");
    json_decref(s);
    /* Velero's tags alone (podvault request writes them too) are no claim */
    s = parse("{\"id\":\"ab\",\"tags\":[\"backup=daily-1\",\"backup-uid=u-1\"],"
              "\"labels\":{\"pod\":\"web\"}}");
    assert_false(gc_snapshot_owner(s, &o));
    assert_null(o.name);
    json_decref(s);
    s = parse("{\"labels\":{\"velero-backup\":\"daily-1\"}}");
    assert_false(gc_snapshot_owner(s, &o));
    json_decref(s);
    /* a name that would leave backups/<name>/ */
    s = parse("{\"labels\":{\"velero-backup\":\"../x\",\"velero-backup-uid\":\"u\"}}");
    assert_false(gc_snapshot_owner(s, &o));
    json_decref(s);
    assert_true(gc_name_ok("a.b-c9"));
    assert_false(gc_name_ok(".."));
    assert_false(gc_name_ok("A"));
    assert_false(gc_name_ok(""));
    assert_false(gc_name_ok(NULL));
}

static void test_pvb_owner(void **state)
{
    (void)state;
    struct gc_owner o;
    json_t *p = parse(
        "{\"metadata\":{\"labels\":{\"velero.io/backup-uid\":\"u-1\"},\"ownerReferences\":["
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"name\":\"p\",\"uid\":\"x\"},"
        "{\"apiVersion\":\"velero.io/v1\",\"kind\":\"Backup\",\"name\":\"daily-1\",\"uid\":\"u-1\","
        "\"controller\":true}]}}");
    assert_true(gc_pvb_owner(p, &o));
    assert_string_equal(o.name, "daily-1");
    assert_string_equal(o.uid, "u-1");
    json_decref(p);
    /* the label names another UID: no claim */
    p = parse(
        "{\"metadata\":{\"labels\":{\"velero.io/backup-uid\":\"u-2\"},\"ownerReferences\":["
        "{\"apiVersion\":\"velero.io/v1\",\"kind\":\"Backup\",\"name\":\"b\",\"uid\":\"u-1\"}]}}");
    assert_false(gc_pvb_owner(p, &o));
    json_decref(p);
    /* podvault request's PVBs: labels and tags, no ownerReference */
    p = parse("{\"metadata\":{\"labels\":{\"velero.io/backup-name\":\"b\","
              "\"velero.io/backup-uid\":\"u\"}},\"spec\":{\"tags\":{\"backup\":\"b\","
              "\"backup-uid\":\"u\"}}}");
    assert_false(gc_pvb_owner(p, &o));
    assert_null(o.uid);
    json_decref(p);
}

static void test_backup_json(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    json_t *doc;
    const char *uid;
    struct err e;
    const char *good = "{\"kind\":\"Backup\",\"apiVersion\":\"velero.io/v1\","
                       "\"metadata\":{\"name\":\"daily-1\",\"uid\":\"u-1\"}}";
    assert_int_equal(buf_append(&b, good, strlen(good)), 0);
    assert_int_equal(gc_parse_backup_json(&b, &doc, &uid, &e), 0);
    assert_string_equal(uid, "u-1");
    json_decref(doc);
    buf_free(&b);
    const char *bad[] = {"{\"kind\":\"Restore\",\"metadata\":{\"uid\":\"u\"}}",
                         "{\"kind\":\"Backup\",\"metadata\":{}}", "not json", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        b = (struct buf)BUF_INIT;
        assert_int_equal(buf_append(&b, bad[i], strlen(bad[i])), 0);
        assert_int_equal(gc_parse_backup_json(&b, &doc, &uid, &e), ERR_FAIL);
        assert_null(doc);
        assert_null(uid);
        assert_non_null(strstr(e.msg, "not a Velero Backup"));
        buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_snapshot_owner),
        cmocka_unit_test(test_pvb_owner),
        cmocka_unit_test(test_backup_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
