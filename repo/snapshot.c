/* snapshot.c - snapshots: their JSON codec, storage under "snapshots/", and selection by ID,
 * prefix or "latest". The JSON fields are described in docs/FORMAT.md. */
#include "repo/snapshot.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/jsonf.h"
#include "repo/repo.h"

#define SNAP_DIR "snapshots"
#define SNAP_KIND "snapshot"
#define SNAP_MAX_JSON (16u << 20)
#define SNAP_MAX_STRING 4096 /* PATH_MAX; host, user, tag and label strings are far shorter */
#define NSEC_PER_SEC 1000000000u

/* The summary counters in the order they are written; duration is a separate (real) field. */
/* clang-format off */
#define SUMMARY_FIELD(x) {#x, offsetof(struct snap_summary, x)}
static const struct {
    const char *name;
    size_t off;
} summary_fields[] = {
    SUMMARY_FIELD(files_new),    SUMMARY_FIELD(files_changed),   SUMMARY_FIELD(files_unmodified),
    SUMMARY_FIELD(dirs_new),     SUMMARY_FIELD(dirs_changed),    SUMMARY_FIELD(dirs_unmodified),
    SUMMARY_FIELD(total_files),  SUMMARY_FIELD(total_bytes),     SUMMARY_FIELD(bytes_read),
    SUMMARY_FIELD(blobs_new),    SUMMARY_FIELD(bytes_new),       SUMMARY_FIELD(bytes_stored),
    SUMMARY_FIELD(errors),       SUMMARY_FIELD(files_changed_during),
};
#undef SUMMARY_FIELD
/* clang-format on */
#define N_SUMMARY_FIELDS (sizeof summary_fields / sizeof summary_fields[0])

/* ---- time stamps ---- */

#define TIME_MIN_SEC (-62167219200LL) /* 0000-01-01T00:00:00Z */
#define TIME_MAX_SEC 253402300799LL   /* 9999-12-31T23:59:59Z */

/* Days since 1970-01-01 of a proleptic Gregorian date, and back; eras of 400 years repeat. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

bool snap_format_time(int64_t sec, uint32_t nsec, char out[SNAP_TIME_LEN])
{
    if (sec < TIME_MIN_SEC || sec > TIME_MAX_SEC || nsec >= NSEC_PER_SEC) return false;
    int64_t days = (sec - TIME_MIN_SEC) / 86400 + days_from_civil(0, 1, 1);
    int64_t rem = (sec - TIME_MIN_SEC) % 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    /* every value is in range already; the modulos let the compiler see that it fits */
    snprintf(out, SNAP_TIME_LEN, "%04u-%02u-%02uT%02u:%02u:%02u.%09uZ", (unsigned)y % 10000u,
             m % 100u, d % 100u, (unsigned)(rem / 3600) % 100u, (unsigned)(rem / 60 % 60),
             (unsigned)(rem % 60), nsec % NSEC_PER_SEC);
    return true;
}

/* Reads exactly n digits. */
static bool digits(const char **p, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9') return false;
        v = v * 10 + (unsigned)(**p - '0');
    }
    *out = v;
    return true;
}

static bool expect(const char **p, char c)
{
    if (**p != c) return false;
    (*p)++;
    return true;
}

bool snap_parse_time(const char *s, int64_t *sec, uint32_t *nsec)
{
    unsigned y, mo, d, h, mi, se, frac = 0;
    const char *p = s;
    if (!digits(&p, 4, &y) || !expect(&p, '-') || !digits(&p, 2, &mo) || !expect(&p, '-') ||
        !digits(&p, 2, &d) || !expect(&p, 'T') || !digits(&p, 2, &h) || !expect(&p, ':') ||
        !digits(&p, 2, &mi) || !expect(&p, ':') || !digits(&p, 2, &se))
        return false;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; *p >= '0' && *p <= '9'; p++, n++) {
            if (n == 9) return false;
            frac = frac * 10 + (unsigned)(*p - '0');
        }
        if (n == 0) return false;
        for (; n < 9; n++)
            frac *= 10;
    }
    if (!expect(&p, 'Z') || *p) return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59)
        return false;
    *sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    *nsec = frac;
    return true;
}

/* ---- string lists ---- */

static int strcmp_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t label_key_len(const char *label)
{
    const char *eq = strchr(label, '=');
    return eq ? (size_t)(eq - label) : strlen(label);
}

/* Orders "key=value" strings by key alone: "a=1" comes before "a.b=2". */
static int label_cmp(const void *pa, const void *pb)
{
    const char *a = *(char *const *)pa, *b = *(char *const *)pb;
    size_t la = label_key_len(a), lb = label_key_len(b);
    int c = memcmp(a, b, la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int dup_str(char **dst, const char *src)
{
    *dst = NULL;
    return src && !(*dst = strdup(src)) ? -1 : 0;
}

static int dup_strv(char ***dst, size_t *n_dst, char *const *src, size_t n)
{
    *dst = NULL;
    *n_dst = 0;
    if (n == 0) return 0;
    if (!(*dst = calloc(n, sizeof **dst))) return -1;
    for (; *n_dst < n; (*n_dst)++)
        if (dup_str(&(*dst)[*n_dst], src[*n_dst]) < 0) return -1;
    return 0;
}

/* ---- encoding ---- */

static int enc_oom(struct err *e, const char *field)
{
    return err_set(e, ERR_FAIL, "encoding snapshot field \"%s\": out of memory", field);
}

static int put(json_t *o, const char *key, json_t *v, struct err *e)
{
    return v && json_object_set_new(o, key, v) == 0 ? 0 : enc_oom(e, key);
}

/* jansson refuses strings that are not UTF-8 (json_string returns NULL); say so. */
static int make_string(const char *s, const char *field, json_t **out, struct err *e)
{
    if (!s) s = "";
    if (!(*out = json_string(s)))
        return err_set(e, ERR_FAIL, "encoding snapshot field \"%s\": \"%s\" is not valid UTF-8",
                       field, s);
    return 0;
}

static int put_string(json_t *o, const char *key, const char *s, struct err *e)
{
    json_t *v;
    int rc = make_string(s, key, &v, e);
    return rc < 0 ? rc : put(o, key, v, e);
}

static int put_time(json_t *o, const char *key, int64_t sec, uint32_t nsec, struct err *e)
{
    char t[SNAP_TIME_LEN];
    if (!snap_format_time(sec, nsec, t))
        return err_set(e, ERR_FAIL,
                       "encoding snapshot field \"%s\": %lld s %u ns is not a time in years "
                       "0000..9999",
                       key, (long long)sec, nsec);
    return put_string(o, key, t, e);
}

static int put_uint(json_t *o, const char *key, uint64_t v, struct err *e)
{
    if (v > INT64_MAX)
        return err_set(e, ERR_FAIL, "encoding snapshot field \"%s\": %llu is too large for JSON",
                       key, (unsigned long long)v);
    return put(o, key, json_integer((json_int_t)v), e);
}

/* `v` is written in the order given, or sorted with duplicates dropped (tags are a set). */
static int put_strings(json_t *o, const char *key, char *const *v, size_t n, bool as_set,
                       struct err *e)
{
    json_t *a = json_array();
    char **sorted = n ? malloc(n * sizeof *sorted) : NULL;
    int rc = a && (sorted || n == 0) ? 0 : enc_oom(e, key);
    if (rc == 0 && n) {
        memcpy(sorted, v, n * sizeof *sorted);
        if (as_set) qsort(sorted, n, sizeof *sorted, strcmp_ptr);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *s;
        if (as_set && i > 0 && strcmp(sorted[i - 1], sorted[i]) == 0) continue;
        if ((rc = make_string(sorted[i], key, &s, e)) == 0 && json_array_append_new(a, s) < 0)
            rc = enc_oom(e, key);
    }
    free(sorted);
    if (rc < 0) {
        json_decref(a);
        return rc;
    }
    return put(o, key, a, e);
}

static int put_labels(json_t *o, char *const *labels, size_t n, struct err *e)
{
    json_t *obj = json_object();
    char **sorted = n ? malloc(n * sizeof *sorted) : NULL;
    int rc = obj && (sorted || n == 0) ? 0 : enc_oom(e, "labels");
    if (rc == 0 && n) {
        memcpy(sorted, labels, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, label_cmp);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *l = sorted[i], *eq = strchr(l, '=');
        if (!eq || eq == l) {
            rc = err_set(e, ERR_FAIL, "encoding snapshot: label \"%s\" is not key=value", l);
        } else if (i > 0 && label_cmp(&sorted[i - 1], &sorted[i]) == 0) {
            rc = err_set(e, ERR_FAIL, "encoding snapshot: label key \"%.*s\" given twice",
                         (int)(eq - l), l);
        } else {
            char *key = strndup(l, (size_t)(eq - l));
            json_t *v = NULL;
            if (!key) rc = enc_oom(e, "labels");
            if (rc == 0) rc = make_string(eq + 1, "labels", &v, e);
            /* jansson checks keys too; memory running out is the other, unlikely, cause */
            if (rc == 0 && json_object_set_new(obj, key, v) < 0)
                rc = err_set(e, ERR_FAIL, "encoding snapshot: label key \"%s\" is not valid UTF-8",
                             key);
            free(key);
        }
    }
    free(sorted);
    if (rc < 0) {
        json_decref(obj);
        return rc;
    }
    return put(o, "labels", obj, e);
}

static int put_root(json_t *o, const struct snap_root *r, struct err *e)
{
    json_t *obj = json_object();
    if (!obj) return enc_oom(e, "root");
    int rc = 0;
    if (r->mode > 07777)
        rc = err_set(e, ERR_FAIL, "encoding snapshot field \"root\": mode %#o beyond 07777",
                     r->mode);
    if (rc == 0) rc = put_uint(obj, "mode", r->mode, e);
    if (rc == 0) rc = put_uint(obj, "uid", r->uid, e);
    if (rc == 0) rc = put_uint(obj, "gid", r->gid, e);
    if (rc == 0) rc = put_time(obj, "mtime", r->mtime_sec, r->mtime_nsec, e);
    if (rc < 0) {
        json_decref(obj);
        return rc;
    }
    return put(o, "root", obj, e);
}

static int put_summary(json_t *o, const struct snap_summary *s, struct err *e)
{
    json_t *obj = json_object();
    if (!obj) return enc_oom(e, "summary");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < N_SUMMARY_FIELDS; i++)
        rc = put_uint(obj, summary_fields[i].name,
                      *(const uint64_t *)((const char *)s + summary_fields[i].off), e);
    if (rc == 0 && !(isfinite(s->duration) && s->duration >= 0))
        rc = err_set(e, ERR_FAIL, "encoding snapshot field \"duration\": %g is not a duration",
                     s->duration);
    if (rc == 0) rc = put(obj, "duration", json_real(s->duration), e);
    if (rc < 0) {
        json_decref(obj);
        return rc;
    }
    return put(o, "summary", obj, e);
}

static int put_oid(json_t *o, const char *key, const struct oid *id, struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    return put_string(o, key, oid_hex(id, hex), e);
}

int snap_encode(const struct snapshot *s, struct buf *out, struct err *e)
{
    json_t *o = json_object();
    if (!o) return enc_oom(e, "time");
    int rc = put_time(o, "time", s->time_sec, s->time_nsec, e);
    if (rc == 0) rc = put_oid(o, "tree", &s->tree, e);
    if (rc == 0 && s->has_parent) rc = put_oid(o, "parent", &s->parent, e);
    if (rc == 0) rc = put_string(o, "hostname", s->hostname, e);
    if (rc == 0) rc = put_string(o, "username", s->username, e);
    if (rc == 0) rc = put_strings(o, "paths", s->paths, s->n_paths, false, e);
    if (rc == 0) rc = put_strings(o, "tags", s->tags, s->n_tags, true, e);
    if (rc == 0) rc = put_labels(o, s->labels, s->n_labels, e);
    if (rc == 0 && s->root.present) rc = put_root(o, &s->root, e);
    if (rc == 0) rc = put(o, "incomplete", json_boolean(s->incomplete), e);
    if (rc == 0) rc = put_summary(o, &s->summary, e);
    if (rc == 0) rc = jsonf_dump(o, out, "encoding snapshot", e);
    json_decref(o);
    return rc;
}

/* ---- decoding ---- */

static int dec_bad(struct err *e, const char *field, const char *why)
{
    return err_set(e, ERR_FAIL, "snapshot: field \"%s\" %s", field, why);
}

static int dec_oom(struct err *e)
{
    return err_set(e, ERR_FAIL, "decoding snapshot: out of memory");
}

static int get_time(const json_t *o, const char *key, const char *what, int64_t *sec,
                    uint32_t *nsec, struct err *e)
{
    const char *t;
    int rc = jsonf_string(o, key, SNAP_TIME_LEN, what, &t, e);
    if (rc < 0) return rc;
    if (!snap_parse_time(t, sec, nsec))
        return err_set(e, ERR_FAIL,
                       "%s: field \"%s\" = \"%s\" is not an RFC 3339 UTC time like "
                       "\"2026-11-28T14:39:51.123456789Z\"",
                       what, key, t);
    return 0;
}

static int get_str(const json_t *o, const char *key, char **out, struct err *e)
{
    const char *s;
    int rc = jsonf_string(o, key, SNAP_MAX_STRING, "snapshot", &s, e);
    if (rc < 0) return rc;
    return (*out = strdup(s)) ? 0 : dec_oom(e);
}

/* An array of strings; absent is empty unless `required`. */
static int get_strings(const json_t *o, const char *key, bool required, char ***out, size_t *n,
                       struct err *e)
{
    const json_t *a = json_object_get(o, key);
    if (!a) return required ? dec_bad(e, key, "is missing") : 0;
    if (!json_is_array(a)) return dec_bad(e, key, "is not an array");
    size_t count = json_array_size(a);
    if (count == 0) return 0;
    if (!(*out = calloc(count, sizeof **out))) return dec_oom(e);
    for (size_t i = 0; i < count; i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_string(v)) return dec_bad(e, key, "holds an element that is not a string");
        size_t len = json_string_length(v);
        const char *s = json_string_value(v);
        if (len > SNAP_MAX_STRING || strlen(s) != len)
            return dec_bad(e, key, "holds a string that is too long or contains a NUL");
        if (!((*out)[i] = strdup(s))) return dec_oom(e);
        *n = i + 1;
    }
    return 0;
}

/* Tags are a set: kept sorted, duplicates dropped. */
static void sort_unique(char **v, size_t *n)
{
    if (*n < 2) return;
    qsort(v, *n, sizeof *v, strcmp_ptr);
    size_t k = 1;
    for (size_t i = 1; i < *n; i++) {
        if (strcmp(v[k - 1], v[i]) == 0)
            free(v[i]);
        else
            v[k++] = v[i];
    }
    *n = k;
}

static int get_labels(const json_t *o, struct snapshot *s, struct err *e)
{
    const json_t *obj = json_object_get(o, "labels");
    if (!obj) return 0;
    if (!json_is_object(obj)) return dec_bad(e, "labels", "is not an object");
    size_t count = json_object_size(obj);
    if (count == 0) return 0;
    if (!(s->labels = calloc(count, sizeof *s->labels))) return dec_oom(e);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (!json_is_string(v))
            return err_set(e, ERR_FAIL, "snapshot: label \"%s\" is not a string", key);
        size_t len = json_string_length(v);
        if (!key[0] || strchr(key, '=') || len > SNAP_MAX_STRING ||
            strlen(json_string_value(v)) != len)
            return err_set(e, ERR_FAIL,
                           "snapshot: label \"%s\" has an empty key, a key with '=', a NUL or "
                           "a value that is too long",
                           key);
        if (asprintf(&s->labels[s->n_labels], "%s=%s", key, json_string_value(v)) < 0) {
            s->labels[s->n_labels] = NULL;
            return dec_oom(e);
        }
        s->n_labels++;
    }
    qsort(s->labels, s->n_labels, sizeof *s->labels, label_cmp);
    return 0;
}

static int get_root(const json_t *o, struct snap_root *r, struct err *e)
{
    const json_t *obj = json_object_get(o, "root");
    if (!obj) return 0;
    if (!json_is_object(obj)) return dec_bad(e, "root", "is not an object");
    uint64_t mode, uid, gid;
    int rc = jsonf_uint(obj, "mode", 0, 07777, "snapshot root", &mode, e);
    if (rc == 0) rc = jsonf_uint(obj, "uid", 0, UINT32_MAX, "snapshot root", &uid, e);
    if (rc == 0) rc = jsonf_uint(obj, "gid", 0, UINT32_MAX, "snapshot root", &gid, e);
    if (rc == 0) rc = get_time(obj, "mtime", "snapshot root", &r->mtime_sec, &r->mtime_nsec, e);
    if (rc < 0) return rc;
    r->present = true;
    r->mode = (uint32_t)mode;
    r->uid = (uint32_t)uid;
    r->gid = (uint32_t)gid;
    return 0;
}

static int get_summary(const json_t *o, struct snap_summary *s, struct err *e)
{
    const json_t *obj = json_object_get(o, "summary");
    if (!obj) return 0;
    if (!json_is_object(obj)) return dec_bad(e, "summary", "is not an object");
    for (size_t i = 0; i < N_SUMMARY_FIELDS; i++) {
        if (!json_object_get(obj, summary_fields[i].name)) continue;
        int rc = jsonf_uint(obj, summary_fields[i].name, 0, UINT64_MAX, "snapshot summary",
                            (uint64_t *)((char *)s + summary_fields[i].off), e);
        if (rc < 0) return rc;
    }
    const json_t *d = json_object_get(obj, "duration");
    if (d) {
        if (!json_is_number(d) || !(json_number_value(d) >= 0))
            return err_set(e, ERR_FAIL,
                           "snapshot summary: field \"duration\" is not a non-negative number");
        s->duration = json_number_value(d);
    }
    return 0;
}

static int decode_fields(const json_t *o, struct snapshot *s, struct err *e)
{
    int rc = get_time(o, "time", "snapshot", &s->time_sec, &s->time_nsec, e);
    if (rc == 0) rc = jsonf_hex(o, "tree", s->tree.b, OID_LEN, "snapshot", e);
    if (rc == 0 && json_object_get(o, "parent")) {
        rc = jsonf_hex(o, "parent", s->parent.b, OID_LEN, "snapshot", e);
        s->has_parent = rc == 0;
    }
    if (rc == 0) rc = get_str(o, "hostname", &s->hostname, e);
    if (rc == 0) rc = get_str(o, "username", &s->username, e);
    if (rc == 0) rc = get_strings(o, "paths", true, &s->paths, &s->n_paths, e);
    if (rc == 0) rc = get_strings(o, "tags", false, &s->tags, &s->n_tags, e);
    if (rc == 0) sort_unique(s->tags, &s->n_tags);
    if (rc == 0) rc = get_labels(o, s, e);
    if (rc == 0) rc = get_root(o, &s->root, e);
    const json_t *inc = json_object_get(o, "incomplete");
    if (rc == 0 && inc && !json_is_boolean(inc))
        rc = dec_bad(e, "incomplete", "is not true or false");
    s->incomplete = inc && json_is_true(inc);
    if (rc == 0) rc = get_summary(o, &s->summary, e);
    return rc;
}

int snap_decode(const void *json, size_t len, struct snapshot *s, struct err *e)
{
    memset(s, 0, sizeof *s);
    json_t *o;
    int rc = jsonf_parse(json, len, SNAP_MAX_JSON, "snapshot", &o, e);
    if (rc < 0) return rc;
    rc = decode_fields(o, s, e);
    json_decref(o);
    if (rc < 0) snap_free(s);
    return rc;
}

void snap_free(struct snapshot *s)
{
    free(s->hostname);
    free(s->username);
    free_strv(s->paths, s->n_paths);
    free_strv(s->tags, s->n_tags);
    free_strv(s->labels, s->n_labels);
    memset(s, 0, sizeof *s);
}

int snap_copy(struct snapshot *dst, const struct snapshot *src, struct err *e)
{
    *dst = *src;
    dst->hostname = dst->username = NULL;
    dst->paths = dst->tags = dst->labels = NULL;
    dst->n_paths = dst->n_tags = dst->n_labels = 0;
    if (dup_str(&dst->hostname, src->hostname) < 0 || dup_str(&dst->username, src->username) < 0 ||
        dup_strv(&dst->paths, &dst->n_paths, src->paths, src->n_paths) < 0 ||
        dup_strv(&dst->tags, &dst->n_tags, src->tags, src->n_tags) < 0 ||
        dup_strv(&dst->labels, &dst->n_labels, src->labels, src->n_labels) < 0) {
        snap_free(dst);
        return err_set(e, ERR_FAIL, "copying snapshot: out of memory");
    }
    return 0;
}

/* ---- storage ---- */

int snap_save(struct repo *r, struct snapshot *s, struct err *e)
{
    struct buf b = BUF_INIT;
    struct oid id;
    int rc = snap_encode(s, &b, e);
    if (rc == 0) rc = repo_save_file(r, SNAP_DIR, SNAP_KIND, b.data, b.len, &id, e);
    buf_free(&b);
    if (rc < 0) return err_wrap(e, "saving snapshot");
    s->id = id;
    return 0;
}

int snap_load(struct repo *r, const struct oid *id, struct snapshot *s, struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    struct buf b = BUF_INIT;
    memset(s, 0, sizeof *s);
    int rc = repo_load_file(r, SNAP_DIR, SNAP_KIND, id, &b, e);
    if (rc == 0) rc = snap_decode(b.data, b.len, s, e);
    buf_free(&b);
    if (rc < 0) return err_wrap(e, "loading snapshot %s", oid_hex(id, hex));
    s->id = *id;
    return 0;
}

static int snap_time_cmp(const void *pa, const void *pb)
{
    const struct snapshot *a = pa, *b = pb;
    if (a->time_sec != b->time_sec) return a->time_sec < b->time_sec ? -1 : 1;
    if (a->time_nsec != b->time_nsec) return a->time_nsec < b->time_nsec ? -1 : 1;
    return oid_cmp(&a->id, &b->id);
}

int snap_list(struct repo *r, struct snapshot **out, size_t *n, struct err *e)
{
    struct oid *ids = NULL;
    size_t n_ids = 0, got = 0;
    *out = NULL;
    *n = 0;
    int rc = repo_list_ids(r, SNAP_DIR, &ids, &n_ids, e);
    if (rc == ERR_NOT_FOUND) return 0; /* no snapshots directory: no snapshots */
    if (rc < 0) return err_wrap(e, "listing snapshots");
    struct snapshot *list = calloc(n_ids ? n_ids : 1, sizeof *list);
    if (!list) rc = err_set(e, ERR_FAIL, "listing %zu snapshots: out of memory", n_ids);
    for (size_t i = 0; rc == 0 && i < n_ids; i++) {
        rc = snap_load(r, &ids[i], &list[got], e);
        if (rc == 0) {
            got++;
        } else if (rc == ERR_NOT_FOUND) {
            /* Forgotten since it was listed: the listing is only a moment older. */
            snap_free(&list[got]);
            memset(&list[got], 0, sizeof list[got]);
            err_clear(e);
            rc = 0;
        }
    }
    free(ids);
    if (rc < 0) {
        snap_list_free(list, got + 1); /* the one that failed may hold parts */
        return rc;
    }
    qsort(list, got, sizeof *list, snap_time_cmp);
    *out = list;
    *n = got;
    return 0;
}

void snap_list_free(struct snapshot *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        snap_free(&list[i]);
    free(list);
}

/* ---- selection ---- */

static bool has_string(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0) return true;
    return false;
}

static bool has_cstring(const char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0) return true;
    return false;
}

bool snap_matches(const struct snapshot *s, const struct snap_filter *f)
{
    if (!f) return true;
    if (f->hostname && strcmp(f->hostname, s->hostname ? s->hostname : "") != 0) return false;
    if (f->paths && f->n_paths) {
        for (size_t i = 0; i < f->n_paths; i++)
            if (!has_string(s->paths, s->n_paths, f->paths[i])) return false;
        for (size_t i = 0; i < s->n_paths; i++)
            if (!has_cstring(f->paths, f->n_paths, s->paths[i])) return false;
    }
    for (size_t i = 0; f->tags && i < f->n_tags; i++)
        if (!has_string(s->tags, s->n_tags, f->tags[i])) return false;
    return true;
}

/* Appends to a message, dropping what does not fit. */
__attribute__((format(printf, 3, 4))) static void msg_add(char *msg, size_t cap, const char *fmt,
                                                          ...)
{
    size_t len = strlen(msg);
    if (len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + len, cap - len, fmt, ap);
    va_end(ap);
}

static int find_latest(struct repo *r, const struct snap_filter *f, struct snapshot *out,
                       struct err *e)
{
    struct snapshot *list;
    size_t n;
    int rc = snap_list(r, &list, &n, e);
    if (rc < 0) return rc;
    size_t i = n;
    while (i > 0 && !snap_matches(&list[i - 1], f))
        i--;
    if (i > 0) {
        *out = list[i - 1];
        memset(&list[i - 1], 0, sizeof list[i - 1]);
    }
    snap_list_free(list, n);
    if (i > 0) return 0;
    char msg[ERR_MSG_MAX] = "no snapshot matches \"latest\"";
    if (f && f->hostname) msg_add(msg, sizeof msg, " with host \"%s\"", f->hostname);
    for (size_t k = 0; f && f->paths && k < f->n_paths; k++)
        msg_add(msg, sizeof msg, "%s \"%s\"", k ? "," : " with paths", f->paths[k]);
    for (size_t k = 0; f && f->tags && k < f->n_tags; k++)
        msg_add(msg, sizeof msg, "%s \"%s\"", k ? "," : " with tags", f->tags[k]);
    return err_set(e, ERR_NOT_FOUND, "%s", msg);
}

static int find_prefix(struct repo *r, const char *prefix, struct snapshot *out, struct err *e)
{
    struct oid *ids = NULL;
    size_t n_ids = 0, matches = 0, first = 0, plen = strlen(prefix);
    char hex[OID_HEX_LEN + 1];
    int rc = repo_list_ids(r, SNAP_DIR, &ids, &n_ids, e);
    if (rc < 0 && rc != ERR_NOT_FOUND) return err_wrap(e, "listing snapshots");
    char msg[ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "snapshot ID prefix \"%s\" is ambiguous; it matches", prefix);
    /* long enough to tell the candidates apart in practice */
    int show = plen + 8 < 16 ? 16 : plen + 8 > OID_HEX_LEN ? OID_HEX_LEN : (int)plen + 8;
    for (size_t i = 0; i < n_ids; i++) {
        if (strncmp(oid_hex(&ids[i], hex), prefix, plen) != 0) continue;
        if (matches++ == 0) first = i;
        msg_add(msg, sizeof msg, "%s %.*s", matches > 1 ? "," : "", show, hex);
    }
    struct oid id = matches == 1 ? ids[first] : (struct oid){{0}};
    free(ids);
    if (matches == 0) return err_set(e, ERR_NOT_FOUND, "no snapshot matches \"%s\"", prefix);
    if (matches > 1) return err_set(e, ERR_FAIL, "%s", msg);
    return snap_load(r, &id, out, e);
}

int snap_find(struct repo *r, const char *spec, const struct snap_filter *f, struct snapshot *out,
              struct err *e)
{
    memset(out, 0, sizeof *out);
    if (strcmp(spec, "latest") == 0) return find_latest(r, f, out, e);
    size_t len = strlen(spec);
    char lower[OID_HEX_LEN + 1];
    bool hex = len >= 1 && len <= OID_HEX_LEN;
    for (size_t i = 0; hex && i < len; i++) {
        hex = isxdigit((unsigned char)spec[i]);
        lower[i] = (char)tolower((unsigned char)spec[i]);
    }
    if (!hex)
        return err_set(e, ERR_NOT_FOUND,
                       "no snapshot matches \"%s\" (expected \"latest\", a snapshot ID or a "
                       "prefix of one)",
                       spec);
    lower[len] = '\0';
    if (len < OID_HEX_LEN) return find_prefix(r, lower, out, e);
    struct oid id;
    oid_parse(lower, &id);
    int rc = snap_load(r, &id, out, e);
    if (rc == ERR_NOT_FOUND) return err_set(e, ERR_NOT_FOUND, "no snapshot matches \"%s\"", spec);
    return rc;
}
