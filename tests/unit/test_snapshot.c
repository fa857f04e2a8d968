/* test_snapshot.c - snapshots: the JSON codec (round trips, exact times, strict refusals),
 * filters, and saving, listing and finding snapshots in a real repository in a temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <unistd.h>

#include "repo/repo.h"
#include "repo/snapshot.h"

#include "fixture.h"

static const char *const summary_names[] = {
    "files_new",        "files_changed",
    "files_unmodified", "dirs_new",
    "dirs_changed",     "dirs_unmodified",
    "total_files",      "total_bytes",
    "bytes_read",       "blobs_new",
    "bytes_new",        "bytes_stored",
    "errors",           "files_changed_during",
    "duration",
};
#define N_SUMMARY (sizeof summary_names / sizeof summary_names[0])

static char **strv(size_t n, ...)
{
    va_list ap;
    char **v = calloc(n ? n : 1, sizeof *v);
    assert_non_null(v);
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        v[i] = strdup(va_arg(ap, const char *));
    va_end(ap);
    return v;
}

static void fill_id(struct oid *id, uint8_t seed)
{
    for (int i = 0; i < OID_LEN; i++)
        id->b[i] = (uint8_t)(seed + i);
}

/* A snapshot with every field set. */
static void full_snapshot(struct snapshot *s)
{
    memset(s, 0, sizeof *s);
    s->time_sec = 1795876791; /* 2026-11-28T14:39:51Z */
    s->time_nsec = 123456789;
    fill_id(&s->tree, 1);
    s->has_parent = true;
    fill_id(&s->parent, 2);
    s->hostname = strdup("node-1");
    s->username = strdup("root");
    s->paths = strv(2, "/var/lib/kubelet/pods/x/volumes/data", "/b é");
    s->n_paths = 2;
    s->tags = strv(3, "velero", "daily", "velero");
    s->n_tags = 3;
    s->labels = strv(3, "pvc=data-0", "a.b=x=y", "a=");
    s->n_labels = 3;
    s->root.present = true;
    s->root.mode = 02755;
    s->root.uid = UINT32_MAX;
    s->root.gid = 7;
    s->root.mtime_sec = -1;
    s->root.mtime_nsec = 999999999;
    s->incomplete = true;
    struct snap_summary *m = &s->summary; /* 1000 + position in summary_names */
    m->files_new = 1000;
    m->files_changed = 1001;
    m->files_unmodified = 1002;
    m->dirs_new = 1003;
    m->dirs_changed = 1004;
    m->dirs_unmodified = 1005;
    m->total_files = 1006;
    m->total_bytes = 1007;
    m->bytes_read = 1008;
    m->blobs_new = 1009;
    m->bytes_new = 1010;
    m->bytes_stored = 1011;
    m->errors = (uint64_t)INT64_MAX;
    m->files_changed_during = 1013;
    s->summary.duration = 2.5;
}

static void assert_strv_equal(char **a, size_t na, char **b, size_t nb)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_string_equal(a[i], b[i]);
}

static json_t *encode_to_json(const struct snapshot *s)
{
    struct buf b = BUF_INIT;
    struct err e;
    if (snap_encode(s, &b, &e) != 0) fail_msg("encode: %s", e.msg);
    json_error_t je;
    json_t *o = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &je);
    assert_non_null(o);
    buf_free(&b);
    return o;
}

/* ---- the codec ---- */

static void test_encode_fields(void **state)
{
    (void)state;
    struct snapshot s;
    full_snapshot(&s);
    json_t *o = encode_to_json(&s);
    assert_string_equal(json_string_value(json_object_get(o, "time")),
                        "2026-11-28T14:39:51.123456789Z");
    assert_string_equal(json_string_value(json_object_get(o, "tree")),
                        "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");
    assert_int_equal(strlen(json_string_value(json_object_get(o, "parent"))), 64);
    assert_string_equal(json_string_value(json_object_get(o, "hostname")), "node-1");
    assert_string_equal(json_string_value(json_object_get(o, "username")), "root");
    json_t *paths = json_object_get(o, "paths");
    assert_int_equal(json_array_size(paths), 2); /* kept as given */
    assert_string_equal(json_string_value(json_array_get(paths, 1)), "/b é");
    json_t *tags = json_object_get(o, "tags");
    assert_int_equal(json_array_size(tags), 2); /* a set: sorted, no duplicates */
    assert_string_equal(json_string_value(json_array_get(tags, 0)), "daily");
    assert_string_equal(json_string_value(json_array_get(tags, 1)), "velero");
    /* labels: an object whose keys come sorted */
    json_t *labels = json_object_get(o, "labels");
    const char *want_keys[] = {"a", "a.b", "pvc"}, *want_vals[] = {"", "x=y", "data-0"};
    size_t i = 0;
    for (void *it = json_object_iter(labels); it; it = json_object_iter_next(labels, it), i++) {
        assert_true(i < 3);
        assert_string_equal(json_object_iter_key(it), want_keys[i]);
        assert_string_equal(json_string_value(json_object_iter_value(it)), want_vals[i]);
    }
    assert_int_equal(i, 3);
    json_t *root = json_object_get(o, "root");
    assert_int_equal(json_integer_value(json_object_get(root, "mode")), 02755);
    assert_int_equal(json_integer_value(json_object_get(root, "uid")), UINT32_MAX);
    assert_int_equal(json_integer_value(json_object_get(root, "gid")), 7);
    assert_string_equal(json_string_value(json_object_get(root, "mtime")),
                        "1969-12-31T23:59:59.999999999Z");
    assert_true(json_is_true(json_object_get(o, "incomplete")));
    /* summary: exactly the field names of the CLI contract */
    json_t *sum = json_object_get(o, "summary");
    assert_int_equal(json_object_size(sum), N_SUMMARY);
    for (size_t k = 0; k < N_SUMMARY - 1; k++) {
        json_t *v = json_object_get(sum, summary_names[k]);
        if (!json_is_integer(v)) fail_msg("summary field %s missing", summary_names[k]);
        assert_int_equal(json_integer_value(v),
                         strcmp(summary_names[k], "errors") ? 1000 + (json_int_t)k : INT64_MAX);
    }
    assert_true(json_real_value(json_object_get(sum, "duration")) == 2.5);
    json_decref(o);
    snap_free(&s);
    assert_null(s.hostname);
    assert_int_equal(s.n_paths, 0);
}

static void assert_snap_equal(const struct snapshot *a, const struct snapshot *b)
{
    assert_true(a->time_sec == b->time_sec && a->time_nsec == b->time_nsec);
    assert_true(oid_eq(&a->tree, &b->tree));
    assert_int_equal(a->has_parent, b->has_parent);
    if (a->has_parent) assert_true(oid_eq(&a->parent, &b->parent));
    assert_string_equal(a->hostname, b->hostname);
    assert_string_equal(a->username, b->username);
    assert_strv_equal(a->paths, a->n_paths, b->paths, b->n_paths);
    assert_strv_equal(a->tags, a->n_tags, b->tags, b->n_tags);
    assert_strv_equal(a->labels, a->n_labels, b->labels, b->n_labels);
    assert_int_equal(a->root.present, b->root.present);
    if (a->root.present) {
        assert_true(a->root.mode == b->root.mode && a->root.uid == b->root.uid &&
                    a->root.gid == b->root.gid);
        assert_true(a->root.mtime_sec == b->root.mtime_sec &&
                    a->root.mtime_nsec == b->root.mtime_nsec);
    }
    assert_int_equal(a->incomplete, b->incomplete);
    assert_memory_equal(&a->summary, &b->summary, sizeof a->summary);
}

static void test_roundtrip(void **state)
{
    (void)state;
    struct snapshot s, d;
    struct buf b = BUF_INIT, b2 = BUF_INIT;
    struct err e;
    full_snapshot(&s);
    assert_int_equal(snap_encode(&s, &b, &e), 0);
    fill_id(&d.id, 9); /* decode zeroes it */
    assert_int_equal(snap_decode(b.data, b.len, &d, &e), 0);
    assert_true(oid_is_zero(&d.id));
    /* tags come back as a set, labels sorted by key */
    assert_int_equal(d.n_tags, 2);
    assert_string_equal(d.tags[0], "daily");
    assert_int_equal(d.n_labels, 3);
    assert_string_equal(d.labels[0], "a=");
    assert_string_equal(d.labels[1], "a.b=x=y");
    assert_string_equal(d.labels[2], "pvc=data-0");
    /* everything else as it was */
    free(s.tags[2]);
    s.n_tags = 2;
    char *t = s.tags[0];
    s.tags[0] = s.tags[1];
    s.tags[1] = t;
    char *l = s.labels[0];
    s.labels[0] = s.labels[2];
    s.labels[2] = l;
    assert_snap_equal(&s, &d);
    /* and it encodes to the same bytes */
    assert_int_equal(snap_encode(&d, &b2, &e), 0);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    snap_free(&s);
    snap_free(&d);
    buf_free(&b);
    buf_free(&b2);
}

static void test_minimal(void **state)
{
    (void)state;
    struct snapshot s, d;
    struct err e;
    memset(&s, 0, sizeof s);
    json_t *o = encode_to_json(&s); /* NULL strings are written empty */
    assert_null(json_object_get(o, "parent"));
    assert_null(json_object_get(o, "root"));
    assert_string_equal(json_string_value(json_object_get(o, "time")),
                        "1970-01-01T00:00:00.000000000Z");
    assert_string_equal(json_string_value(json_object_get(o, "hostname")), "");
    assert_int_equal(json_array_size(json_object_get(o, "paths")), 0);
    assert_int_equal(json_object_size(json_object_get(o, "labels")), 0);
    assert_true(json_is_false(json_object_get(o, "incomplete")));
    json_decref(o);

    /* only time, tree, hostname, username and paths are required */
    const char *min = "{\"time\":\"2026-01-02T03:04:05Z\",\"tree\":\"" /* upper case is fine */
                      "AB00000000000000000000000000000000000000000000000000000000000000\","
                      "\"hostname\":\"h\",\"username\":\"u\",\"paths\":[\"/p\"],\"future\":[1]}";
    if (snap_decode(min, strlen(min), &d, &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(d.tree.b[0], 0xab);
    assert_false(d.has_parent);
    assert_false(d.root.present);
    assert_false(d.incomplete);
    assert_int_equal(d.n_tags + d.n_labels, 0);
    assert_int_equal(d.time_nsec, 0);
    snap_free(&d);
}

static void test_time(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t sec;
        uint32_t nsec;
    } good[] = {
        {"1970-01-01T00:00:00Z", 0, 0},
        {"2026-11-28T14:39:51.123456789Z", 1795876791, 123456789},
        {"2026-11-28T14:39:51.1Z", 1795876791, 100000000},
        {"2026-11-28T14:39:51.000000001Z", 1795876791, 1},
        {"2024-02-29T23:59:59Z", 1709251199, 0},
        {"2000-02-29T00:00:00Z", 951782400, 0},
        {"1969-12-31T23:59:59.999999999Z", -1, 999999999},
        {"0000-01-01T00:00:00Z", -62167219200LL, 0},
        {"9999-12-31T23:59:59.999999999Z", 253402300799LL, 999999999},
    };
    static const char *const bad[] = {
        "",
        "2026-11-28T14:39:51",             /* no zone */
        "2026-11-28T14:39:51z",            /* lower case */
        "2026-11-28t14:39:51Z",            /* lower case */
        "2026-11-28T14:39:51+00:00",       /* only Z */
        "2026-11-28 14:39:51Z",            /* space */
        "2026-11-28T14:39:51.Z",           /* empty fraction */
        "2026-11-28T14:39:51.1234567890Z", /* ten digits */
        "2026-11-28T14:39:51ZZ",           /* trailing */
        " 2026-11-28T14:39:51Z",           /* leading */
        "2026-13-01T00:00:00Z",            /* month */
        "2026-00-01T00:00:00Z",            /* month */
        "2026-02-29T00:00:00Z",            /* not a leap year */
        "1900-02-29T00:00:00Z",            /* not a leap year */
        "2026-04-31T00:00:00Z",            /* day */
        "2026-01-00T00:00:00Z",            /* day */
        "2026-01-01T24:00:00Z",            /* hour */
        "2026-01-01T00:60:00Z",            /* minute */
        "2026-01-01T00:00:60Z",            /* leap seconds are not represented */
        "10000-01-01T00:00:00Z",           /* five-digit year */
        "+2026-01-01T00:00:00Z",
        "2026-1-01T00:00:00Z",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t sec;
        uint32_t nsec;
        char out[SNAP_TIME_LEN];
        if (!snap_parse_time(good[i].s, &sec, &nsec)) fail_msg("refused %s", good[i].s);
        if (sec != good[i].sec || nsec != good[i].nsec)
            fail_msg("%s: %lld.%u", good[i].s, (long long)sec, nsec);
        assert_true(snap_format_time(sec, nsec, out));
        assert_true(snap_parse_time(out, &sec, &nsec));
        assert_true(sec == good[i].sec && nsec == good[i].nsec);
        assert_int_equal(strlen(out), 30);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t sec;
        uint32_t nsec;
        if (snap_parse_time(bad[i], &sec, &nsec)) fail_msg("accepted \"%s\"", bad[i]);
    }
    char out[SNAP_TIME_LEN];
    assert_false(snap_format_time(-62167219201LL, 0, out));
    assert_false(snap_format_time(253402300800LL, 0, out));
    assert_false(snap_format_time(0, 1000000000, out));
    assert_false(snap_format_time(INT64_MIN, 0, out));
    /* every day for 800 years either side of 1970 round-trips */
    for (int64_t day = -292000; day <= 292000; day += 1) {
        int64_t sec = day * 86400 + 43210, back;
        uint32_t nsec;
        assert_true(snap_format_time(sec, 5, out));
        assert_true(snap_parse_time(out, &back, &nsec));
        if (back != sec) fail_msg("%s: %lld != %lld", out, (long long)back, (long long)sec);
    }
}

/* A valid document with one field replaced (raw JSON) or removed (NULL); "a.b" reaches into
 * an object. */
static char *doc_with(const char *path, const char *raw)
{
    struct snapshot s;
    full_snapshot(&s);
    json_t *o = encode_to_json(&s);
    snap_free(&s);
    json_t *parent = o;
    char key[64];
    snprintf(key, sizeof key, "%s", path);
    char *dot = strchr(key, '.');
    if (dot) {
        *dot = '\0';
        parent = json_object_get(o, key);
        memmove(key, dot + 1, strlen(dot + 1) + 1);
    }
    if (raw) {
        json_error_t je;
        json_t *v = json_loads(raw, JSON_DECODE_ANY, &je);
        if (!v) fail_msg("bad test JSON %s", raw);
        json_object_set_new(parent, key, v);
    } else {
        json_object_del(parent, key);
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static void expect_decode_fails_text(const char *text, const char *msg_part)
{
    struct snapshot d;
    struct err e;
    err_clear(&e);
    int rc = snap_decode(text, strlen(text), &d, &e);
    if (rc == 0) fail_msg("decoded: %s", text);
    assert_int_equal(rc, ERR_FAIL);
    if (!strstr(e.msg, msg_part)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, msg_part);
    assert_null(d.hostname); /* nothing left owned */
    assert_null(d.paths);
    assert_null(d.labels);
    assert_int_equal(d.n_tags, 0);
}

static void test_decode_strict(void **state)
{
    (void)state;
    static const struct {
        const char *path, *raw, *msg;
    } cases[] = {
        {"time", "5", "\"time\" is not a string"},
        {"time", "\"2026-11-28 14:39:51Z\"", "\"time\" = \"2026-11-28 14:39:51Z\" is not an RFC"},
        {"time", NULL, "\"time\" is missing"},
        {"tree", "\"abc\"", "\"tree\" is not 64 hex digits"},
        {"tree", "12", "\"tree\" is not a string"},
        {"tree", NULL, "\"tree\" is missing"},
        {"parent", "null", "\"parent\" is not a string"},
        {"parent", "\"zz00000000000000000000000000000000000000000000000000000000000000\"",
         "\"parent\" is not 64 hex"},
        {"hostname", "1", "\"hostname\" is not a string"},
        {"hostname", NULL, "\"hostname\" is missing"},
        {"username", "[]", "\"username\" is not a string"},
        {"paths", "\"/x\"", "\"paths\" is not an array"},
        {"paths", "[\"/a\", 1]", "\"paths\" holds an element that is not a string"},
        {"paths", NULL, "\"paths\" is missing"},
        {"tags", "{}", "\"tags\" is not an array"},
        {"tags", "[true]", "\"tags\" holds an element"},
        {"labels", "[]", "\"labels\" is not an object"},
        {"labels", "{\"a\":1}", "label \"a\" is not a string"},
        {"labels", "{\"a=b\":\"c\"}", "label \"a=b\""},
        {"labels", "{\"\":\"c\"}", "label \"\""},
        {"root", "1", "\"root\" is not an object"},
        {"root.mode", "\"x\"", "\"mode\" is not an integer"},
        {"root.mode", "4096", "\"mode\" = 4096 is outside"},
        {"root.uid", "-1", "\"uid\" = -1 is outside"},
        {"root.gid", "4294967296", "\"gid\" = 4294967296 is outside"},
        {"root.mtime", "\"yesterday\"", "\"mtime\" = \"yesterday\""},
        {"root.mtime", NULL, "\"mtime\" is missing"},
        {"incomplete", "\"yes\"", "\"incomplete\" is not true or false"},
        {"incomplete", "0", "\"incomplete\""},
        {"summary", "[]", "\"summary\" is not an object"},
        {"summary.files_new", "-1", "\"files_new\" = -1 is outside"},
        {"summary.bytes_new", "1.5", "\"bytes_new\" is not an integer"},
        {"summary.errors", "\"3\"", "\"errors\" is not an integer"},
        {"summary.duration", "\"1s\"", "\"duration\" is not a non-negative number"},
        {"summary.duration", "-0.5", "\"duration\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = doc_with(cases[i].path, cases[i].raw);
        expect_decode_fails_text(text, cases[i].msg);
        free(text);
    }
    expect_decode_fails_text("[]", "not a JSON object");
    expect_decode_fails_text("{", "invalid JSON");
    expect_decode_fails_text("", "invalid JSON");
    expect_decode_fails_text("{\"hostname\":\"a\",\"hostname\":\"b\"}", "invalid JSON");
    expect_decode_fails_text("{\"hostname\":\"a\\u0000b\"}", "invalid JSON");

    /* what may be left out, may be: summary fields default to zero, integers up to 2^63-1 */
    char *text = doc_with("summary", "{\"bytes_read\":9223372036854775807,\"duration\":3}");
    struct snapshot d;
    struct err e;
    if (snap_decode(text, strlen(text), &d, &e) != 0) fail_msg("%s", e.msg);
    assert_true(d.summary.bytes_read == (uint64_t)INT64_MAX);
    assert_true(d.summary.files_new == 0 && d.summary.duration == 3.0);
    snap_free(&d);
    free(text);
    /* tags given twice read as a set */
    text = doc_with("tags", "[\"b\",\"a\",\"b\"]");
    assert_int_equal(snap_decode(text, strlen(text), &d, &e), 0);
    assert_int_equal(d.n_tags, 2);
    assert_string_equal(d.tags[0], "a");
    assert_string_equal(d.tags[1], "b");
    snap_free(&d);
    free(text);
}

static void expect_encode_fails(const struct snapshot *s, const char *msg_part)
{
    struct buf b = BUF_INIT;
    struct err e;
    err_clear(&e);
    buf_append(&b, "keep", 4);
    assert_int_equal(snap_encode(s, &b, &e), ERR_FAIL);
    assert_int_equal(b.len, 4);
    if (!strstr(e.msg, msg_part)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, msg_part);
    buf_free(&b);
}

static void test_encode_refuses(void **state)
{
    (void)state;
    struct snapshot s;
    full_snapshot(&s);
    free(s.labels[0]);
    s.labels[0] = strdup("novalue");
    expect_encode_fails(&s, "label \"novalue\" is not key=value");
    free(s.labels[0]);
    s.labels[0] = strdup("=v");
    expect_encode_fails(&s, "label \"=v\" is not key=value");
    free(s.labels[0]);
    s.labels[0] = strdup("a=again");
    expect_encode_fails(&s, "label key \"a\" given twice");
    free(s.labels[0]);
    s.labels[0] = strdup("\xff=v");
    expect_encode_fails(&s, "not valid UTF-8");
    free(s.labels[0]);
    s.labels[0] = strdup("k=\xff");
    expect_encode_fails(&s, "\"labels\"");
    free(s.labels[0]);
    s.labels[0] = strdup("pod=p");

    char *h = s.hostname;
    s.hostname = "bad\xc3";
    expect_encode_fails(&s, "field \"hostname\": \"bad\xc3\" is not valid UTF-8");
    s.hostname = h;
    char *p = s.paths[1];
    s.paths[1] = "/\xfe";
    expect_encode_fails(&s, "field \"paths\"");
    s.paths[1] = p;

    s.time_sec = 253402300800LL;
    expect_encode_fails(&s, "field \"time\"");
    s.time_sec = 0;
    s.time_nsec = 1000000000;
    expect_encode_fails(&s, "field \"time\"");
    s.time_nsec = 0;
    s.root.mode = 010000;
    expect_encode_fails(&s, "\"root\": mode");
    s.root.mode = 0755;
    s.root.mtime_nsec = 1000000000;
    expect_encode_fails(&s, "\"mtime\"");
    s.root.mtime_nsec = 0;
    s.summary.bytes_stored = (uint64_t)INT64_MAX + 1;
    expect_encode_fails(&s, "\"bytes_stored\"");
    s.summary.bytes_stored = 0;
    s.summary.duration = NAN;
    expect_encode_fails(&s, "\"duration\"");
    s.summary.duration = -1;
    expect_encode_fails(&s, "\"duration\"");
    s.summary.duration = 0;
    struct buf b = BUF_INIT;
    struct err e;
    assert_int_equal(snap_encode(&s, &b, &e), 0);
    buf_free(&b);
    snap_free(&s);
}

static void test_copy(void **state)
{
    (void)state;
    struct snapshot s, c;
    struct err e;
    struct buf b1 = BUF_INIT, b2 = BUF_INIT;
    full_snapshot(&s);
    fill_id(&s.id, 5);
    assert_int_equal(snap_copy(&c, &s, &e), 0);
    assert_true(oid_eq(&c.id, &s.id));
    assert_ptr_not_equal(c.hostname, s.hostname);
    assert_ptr_not_equal(c.paths, s.paths);
    assert_ptr_not_equal(c.paths[0], s.paths[0]);
    assert_int_equal(snap_encode(&s, &b1, &e), 0);
    snap_free(&s); /* the copy stands alone */
    assert_int_equal(snap_encode(&c, &b2, &e), 0);
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);
    snap_free(&c);
    /* empty lists and NULL strings copy too */
    memset(&s, 0, sizeof s);
    assert_int_equal(snap_copy(&c, &s, &e), 0);
    assert_null(c.hostname);
    assert_null(c.paths);
    snap_free(&c);
    buf_free(&b1);
    buf_free(&b2);
}

static void test_matches(void **state)
{
    (void)state;
    struct snapshot s;
    full_snapshot(&s); /* host node-1, paths {/var/..., /b é}, tags {velero, daily} */
    const char *p2[] = {"/b é", "/var/lib/kubelet/pods/x/volumes/data"};
    const char *p2dup[] = {"/b é", "/var/lib/kubelet/pods/x/volumes/data", "/b é"};
    const char *p1[] = {"/b é"};
    const char *p3[] = {"/b é", "/var/lib/kubelet/pods/x/volumes/data", "/c"};
    const char *t1[] = {"daily"};
    const char *t2[] = {"daily", "velero"};
    const char *tx[] = {"daily", "weekly"};
    struct snap_filter f;

    assert_true(snap_matches(&s, NULL));
    memset(&f, 0, sizeof f);
    assert_true(snap_matches(&s, &f));
    f.hostname = "node-1";
    assert_true(snap_matches(&s, &f));
    f.hostname = "node-2";
    assert_false(snap_matches(&s, &f));
    f.hostname = NULL;

    f.paths = p2; /* order does not matter */
    f.n_paths = 2;
    assert_true(snap_matches(&s, &f));
    f.paths = p2dup;
    f.n_paths = 3;
    assert_true(snap_matches(&s, &f));
    f.paths = p1; /* a subset is not the same set */
    f.n_paths = 1;
    assert_false(snap_matches(&s, &f));
    f.paths = p3; /* nor a superset */
    f.n_paths = 3;
    assert_false(snap_matches(&s, &f));
    f.n_paths = 0; /* none given: any */
    assert_true(snap_matches(&s, &f));
    f.paths = NULL;

    f.tags = t1;
    f.n_tags = 1;
    assert_true(snap_matches(&s, &f));
    f.tags = t2;
    f.n_tags = 2;
    assert_true(snap_matches(&s, &f));
    f.tags = tx;
    assert_false(snap_matches(&s, &f));

    f.tags = t2;
    f.hostname = "node-1";
    f.paths = p2;
    f.n_paths = 2;
    assert_true(snap_matches(&s, &f));
    f.hostname = "other";
    assert_false(snap_matches(&s, &f));
    snap_free(&s);
}

/* ---- in a repository ---- */

struct fixture {
    char dir[256];
    char loc[300];
    struct repo *r;
};

static int setup_repo(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    struct repo_create_params p;
    struct err e;
    if (fixture_mkdtemp(fx->dir, sizeof fx->dir, "pv-snap") < 0) return -1;
    snprintf(fx->loc, sizeof fx->loc, "%s/repo", fx->dir);
    memset(&p, 0, sizeof p);
    config_default(&p.config);
    keyfile_params_min(&p.kdf);
    if (repo_create(fx->loc, "secret", &p, NULL, &e) != 0) {
        print_error("repo_create: %s\n", e.msg);
        return -1;
    }
    if (repo_open(fx->loc, "secret", NULL, &fx->r, &e) != 0) {
        print_error("repo_open: %s\n", e.msg);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown_repo(void **state)
{
    struct fixture *fx = *state;
    if (!fx) return 0;
    repo_close(fx->r);
    fixture_rmtree(fx->dir);
    free(fx);
    return 0;
}

static void save_one(struct repo *r, int64_t time_sec, const char *host, const char *path,
                     const char *tag, struct oid *id)
{
    struct snapshot s;
    struct err e;
    memset(&s, 0, sizeof s);
    s.time_sec = time_sec;
    fill_id(&s.tree, (uint8_t)time_sec);
    s.hostname = strdup(host);
    s.username = strdup("u");
    s.paths = strv(1, path);
    s.n_paths = 1;
    if (tag) {
        s.tags = strv(1, tag);
        s.n_tags = 1;
    }
    if (snap_save(r, &s, &e) != 0) fail_msg("snap_save: %s", e.msg);
    assert_false(oid_is_zero(&s.id));
    if (id) *id = s.id;
    snap_free(&s);
}

static void test_save_load_list(void **state)
{
    struct fixture *fx = *state;
    struct snapshot *list, s, l;
    size_t n;
    struct err e;
    assert_int_equal(snap_list(fx->r, &list, &n, &e), 0);
    assert_int_equal(n, 0);
    snap_list_free(list, n);

    struct oid ids[4];
    save_one(fx->r, 300, "h", "/a", NULL, &ids[0]);
    save_one(fx->r, 100, "h", "/a", NULL, &ids[1]);
    save_one(fx->r, 200, "h", "/a", NULL, &ids[2]);
    save_one(fx->r, 200, "h", "/a", NULL, &ids[3]);
    assert_int_equal(snap_list(fx->r, &list, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_true(list[0].time_sec == 100 && oid_eq(&list[0].id, &ids[1]));
    assert_true(list[1].time_sec == 200 && list[2].time_sec == 200);
    assert_true(oid_cmp(&list[1].id, &list[2].id) < 0); /* same time: by ID */
    assert_true(list[3].time_sec == 300 && oid_eq(&list[3].id, &ids[0]));
    snap_list_free(list, n);

    full_snapshot(&s);
    assert_int_equal(snap_save(fx->r, &s, &e), 0);
    assert_int_equal(snap_load(fx->r, &s.id, &l, &e), 0);
    assert_true(oid_eq(&s.id, &l.id));
    assert_int_equal(l.n_tags, 2);
    assert_string_equal(l.labels[2], "pvc=data-0");
    assert_string_equal(l.paths[1], "/b é");
    snap_free(&s);
    snap_free(&l);

    struct oid missing;
    fill_id(&missing, 77);
    assert_int_equal(snap_load(fx->r, &missing, &l, &e), ERR_NOT_FOUND);
    assert_null(l.hostname);

    /* an unreadable snapshot fails the listing, naming it */
    struct oid bad;
    char hex[OID_HEX_LEN + 1];
    assert_int_equal(repo_save_file(fx->r, "snapshots", "snapshot", "{}", 2, &bad, &e), 0);
    assert_int_not_equal(snap_list(fx->r, &list, &n, &e), 0);
    if (!strstr(e.msg, oid_hex(&bad, hex))) fail_msg("message \"%s\" lacks the ID", e.msg);
    assert_non_null(strstr(e.msg, "\"time\" is missing"));
}

/* A listing that also names a snapshot that is gone, as when `forget` removed it between the
 * listing and the load. */
static const struct backend_ops *ghost_inner;

static int ghost_list(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                      struct err *e)
{
    int rc = ghost_inner->list(self, prefix, cb, ctx, e);
    if (rc != 0 || strcmp(prefix, "snapshots/") != 0) return rc;
    return cb(ctx, "snapshots/00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", 9);
}

static void test_list_skips_vanished(void **state)
{
    struct fixture *fx = *state;
    struct oid ids[2];
    save_one(fx->r, 100, "h", "/a", NULL, &ids[0]);
    save_one(fx->r, 200, "h", "/a", NULL, &ids[1]);
    struct backend *b = repo_backend(fx->r);
    struct backend_ops ops = *b->ops;
    ghost_inner = b->ops;
    ops.list = ghost_list;
    b->ops = &ops;
    struct snapshot *list;
    size_t n;
    struct err e;
    err_clear(&e);
    int rc = snap_list(fx->r, &list, &n, &e);
    b->ops = ghost_inner;
    if (rc != 0) fail_msg("snap_list: %s", e.msg);
    assert_int_equal(n, 2);
    assert_true(oid_eq(&list[0].id, &ids[0]) && oid_eq(&list[1].id, &ids[1]));
    snap_list_free(list, n);
}

static void test_find(void **state)
{
    struct fixture *fx = *state;
    struct snapshot s;
    struct err e;
    char hex[OID_HEX_LEN + 1], spec[OID_HEX_LEN + 2];

    assert_int_equal(snap_find(fx->r, "latest", NULL, &s, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no snapshot matches \"latest\""));

    /* 17 snapshots: two of them must share their first hex digit */
    struct oid ids[17];
    for (int i = 0; i < 17; i++)
        save_one(fx->r, 1000 + i, i % 2 ? "odd" : "even", i < 10 ? "/x" : "/y",
                 i == 3 || i == 12 ? "third" : NULL, &ids[i]);

    assert_int_equal(snap_find(fx->r, "latest", NULL, &s, &e), 0);
    assert_true(oid_eq(&s.id, &ids[16]) && s.time_sec == 1016);
    snap_free(&s);

    struct snap_filter f;
    memset(&f, 0, sizeof f);
    f.hostname = "odd";
    assert_int_equal(snap_find(fx->r, "latest", &f, &s, &e), 0);
    assert_int_equal(s.time_sec, 1015);
    snap_free(&s);
    const char *px[] = {"/x"};
    f.paths = px;
    f.n_paths = 1;
    assert_int_equal(snap_find(fx->r, "latest", &f, &s, &e), 0);
    assert_int_equal(s.time_sec, 1009);
    snap_free(&s);
    const char *tags[] = {"third"};
    f.tags = tags;
    f.n_tags = 1;
    assert_int_equal(snap_find(fx->r, "latest", &f, &s, &e), 0);
    assert_int_equal(s.time_sec, 1003); /* odd, /x, tagged */
    snap_free(&s);
    f.hostname = "nobody";
    assert_int_equal(snap_find(fx->r, "latest", &f, &s, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "with host \"nobody\""));
    assert_non_null(strstr(e.msg, "with paths \"/x\""));
    assert_non_null(strstr(e.msg, "with tags \"third\""));
    assert_null(s.hostname);

    /* full IDs, either case; filters do not apply to IDs */
    oid_hex(&ids[4], hex);
    assert_int_equal(snap_find(fx->r, hex, &f, &s, &e), 0);
    assert_true(oid_eq(&s.id, &ids[4]));
    snap_free(&s);
    for (char *c = hex; *c; c++)
        *c = (char)(*c >= 'a' ? *c - 32 : *c);
    assert_int_equal(snap_find(fx->r, hex, NULL, &s, &e), 0);
    assert_true(oid_eq(&s.id, &ids[4]));
    snap_free(&s);

    /* prefixes: a unique one, an ambiguous one, and one matching nothing */
    size_t amb_a = 0, amb_b = 0;
    bool found = false;
    for (size_t i = 0; i < 17 && !found; i++)
        for (size_t j = i + 1; j < 17 && !found; j++)
            if (ids[i].b[0] >> 4 == ids[j].b[0] >> 4) {
                amb_a = i;
                amb_b = j;
                found = true;
            }
    assert_true(found);
    snprintf(spec, sizeof spec, "%.1s", oid_hex(&ids[amb_a], hex));
    assert_int_equal(snap_find(fx->r, spec, NULL, &s, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "is ambiguous"));
    oid_hex(&ids[amb_a], hex);
    hex[16] = '\0';
    assert_non_null(strstr(e.msg, hex));
    oid_hex(&ids[amb_b], hex);
    hex[16] = '\0';
    assert_non_null(strstr(e.msg, hex));

    /* the shortest unique prefix of ids[amb_a] resolves to it */
    oid_hex(&ids[amb_a], hex);
    size_t len = 1;
    for (;; len++) {
        size_t hits = 0;
        char other[OID_HEX_LEN + 1];
        for (size_t i = 0; i < 17; i++)
            hits += strncmp(oid_hex(&ids[i], other), hex, len) == 0;
        if (hits == 1) break;
    }
    snprintf(spec, sizeof spec, "%.*s", (int)len, hex);
    assert_int_equal(snap_find(fx->r, spec, NULL, &s, &e), 0);
    assert_true(oid_eq(&s.id, &ids[amb_a]));
    snap_free(&s);

    /* a two-digit prefix no ID has */
    for (unsigned p = 0; p < 256; p++) {
        bool used = false;
        for (size_t i = 0; i < 17; i++)
            used |= ids[i].b[0] == p;
        if (used) continue;
        snprintf(spec, sizeof spec, "%02x", p);
        break;
    }
    assert_int_equal(snap_find(fx->r, spec, NULL, &s, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no snapshot matches"));
    assert_non_null(strstr(e.msg, spec));

    /* a full ID that names nothing, and specs that are not IDs */
    struct oid missing;
    fill_id(&missing, 200);
    assert_int_equal(snap_find(fx->r, oid_hex(&missing, hex), NULL, &s, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no snapshot matches"));
    assert_int_equal(snap_find(fx->r, "", NULL, &s, &e), ERR_NOT_FOUND);
    assert_int_equal(snap_find(fx->r, "xyz", NULL, &s, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "\"xyz\""));
    assert_int_equal(snap_find(fx->r, "Latest", NULL, &s, &e), ERR_NOT_FOUND);
    snprintf(spec, sizeof spec, "%s0", oid_hex(&ids[0], hex)); /* 65 digits */
    assert_int_equal(snap_find(fx->r, spec, NULL, &s, &e), ERR_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_fields),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_decode_strict),
        cmocka_unit_test(test_encode_refuses),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_matches),
        cmocka_unit_test_setup_teardown(test_save_load_list, setup_repo, teardown_repo),
        cmocka_unit_test_setup_teardown(test_list_skips_vanished, setup_repo, teardown_repo),
        cmocka_unit_test_setup_teardown(test_find, setup_repo, teardown_repo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
