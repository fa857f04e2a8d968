/* retention.c - forget policies (restic's semantics); see retention.h. */
#include "repo/retention.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"

#define RET_MAX_COUNT 1000000

int ret_parse_duration(const char *s, struct ret_duration *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    const char *p = s;
    unsigned seen = 0;
    if (!*p) return err_set(e, ERR_FAIL, "empty duration (want e.g. 1y2m3d4h)");
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return err_set(e, ERR_FAIL, "duration \"%s\": expected a number at \"%s\"", s, p);
        long v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (*p++ - '0');
            if (v > RET_MAX_COUNT)
                return err_set(e, ERR_FAIL, "duration \"%s\": number too large", s);
        }
        const char *units = "ymdh";
        const char *u = *p ? strchr(units, *p) : NULL;
        if (!u) return err_set(e, ERR_FAIL, "duration \"%s\": unit must be y, m, d or h", s);
        unsigned bit = 1u << (u - units);
        if (seen & bit) return err_set(e, ERR_FAIL, "duration \"%s\": unit %c twice", s, *p);
        seen |= bit;
        int *field[] = {&out->years, &out->months, &out->days, &out->hours};
        *field[u - units] = (int)v;
        p++;
    }
    return 0;
}

int ret_parse_group_by(const char *s, unsigned *out, struct err *e)
{
    *out = 0;
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 4 && strncmp(p, "host", 4) == 0)
            *out |= RET_GROUP_HOST;
        else if (len == 5 && strncmp(p, "paths", 5) == 0)
            *out |= RET_GROUP_PATHS;
        else if (len == 4 && strncmp(p, "tags", 4) == 0)
            *out |= RET_GROUP_TAGS;
        else
            return err_set(e, ERR_FAIL, "group-by \"%s\": fields are host, paths and tags", s);
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

int ret_parse_count(const char *s, int *out, struct err *e)
{
    if (strcmp(s, "unlimited") == 0) {
        *out = RET_UNLIMITED;
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > RET_MAX_COUNT || !isdigit((unsigned char)*s))
        return err_set(e, ERR_FAIL, "\"%s\" is not a count (0..%d or \"unlimited\")", s,
                       RET_MAX_COUNT);
    *out = (int)v;
    return 0;
}

static bool duration_zero(const struct ret_duration *d)
{
    return !d->years && !d->months && !d->days && !d->hours;
}

bool ret_policy_empty(const struct ret_policy *p)
{
    return !p->last && !p->hourly && !p->daily && !p->weekly && !p->monthly && !p->yearly &&
           duration_zero(&p->within) && !p->n_keep_tags;
}

static const char *const reason_names[] = {"last",    "hourly", "daily",  "weekly",
                                           "monthly", "yearly", "within", "tags"};

const char *ret_reasons(unsigned reasons, char *out, size_t cap)
{
    size_t len = 0;
    if (cap) out[0] = '\0';
    for (size_t i = 0; i < sizeof reason_names / sizeof *reason_names; i++) {
        if (!(reasons & (1u << i))) continue;
        int k = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", reason_names[i]);
        if (k < 0 || (size_t)k >= cap - len) break;
        len += (size_t)k;
    }
    return out;
}

/* ---- periods ---- */

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* ISO 8601 year * 100 + week: the week belongs to the year of its Thursday. */
static long iso_week(const struct tm *t)
{
    int year = t->tm_year + 1900;
    int wday = (t->tm_wday + 6) % 7; /* Monday = 0 */
    int thursday = t->tm_yday - wday + 3;
    if (thursday < 0) {
        year--;
        thursday += leap(year) ? 366 : 365;
    } else if (thursday >= (leap(year) ? 366 : 365)) {
        thursday -= leap(year) ? 366 : 365;
        year++;
    }
    return (long)year * 100 + thursday / 7 + 1;
}

enum { B_LAST, B_HOURLY, B_DAILY, B_WEEKLY, B_MONTHLY, B_YEARLY, B_COUNT };

/* The period a time falls in, for each bucket rule; keep-last gives every snapshot its own. */
static long period(int bucket, const struct tm *t, size_t nr)
{
    long y = t->tm_year + 1900, m = t->tm_mon + 1, d = t->tm_mday;
    switch (bucket) {
    case B_LAST:
        return (long)nr;
    case B_HOURLY:
        return ((y * 100 + m) * 100 + d) * 100 + t->tm_hour;
    case B_DAILY:
        return (y * 100 + m) * 100 + d;
    case B_WEEKLY:
        return iso_week(t);
    case B_MONTHLY:
        return y * 100 + m;
    default:
        return y;
    }
}

/* ---- groups ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An unambiguous byte string naming the group: length-prefixed fields. */
static int group_key(const struct snapshot *s, unsigned by, struct buf *out)
{
    int bad = 0;
    if (by & RET_GROUP_HOST)
        bad |= buf_put_bytes(out, s->hostname, s->hostname ? strlen(s->hostname) : 0);
    if (by & RET_GROUP_PATHS) {
        char **sorted = malloc((s->n_paths ? s->n_paths : 1) * sizeof *sorted);
        if (!sorted) return -1;
        memcpy(sorted, s->paths, s->n_paths * sizeof *sorted);
        qsort(sorted, s->n_paths, sizeof *sorted, cmp_str);
        bad |= buf_put_uvarint(out, s->n_paths);
        for (size_t i = 0; i < s->n_paths; i++)
            bad |= buf_put_bytes(out, sorted[i], strlen(sorted[i]));
        free(sorted);
    }
    if (by & RET_GROUP_TAGS) { /* tags are kept sorted */
        bad |= buf_put_uvarint(out, s->n_tags);
        for (size_t i = 0; i < s->n_tags; i++)
            bad |= buf_put_bytes(out, s->tags[i], strlen(s->tags[i]));
    }
    return bad ? -1 : 0;
}

struct item {
    const struct snapshot *s;
    size_t index; /* in the caller's array */
    struct buf key;
};

static int cmp_time_desc(const struct snapshot *a, const struct snapshot *b)
{
    if (a->time_sec != b->time_sec) return a->time_sec > b->time_sec ? -1 : 1;
    if (a->time_nsec != b->time_nsec) return a->time_nsec > b->time_nsec ? -1 : 1;
    return -oid_cmp(&a->id, &b->id);
}

static int cmp_key(const struct item *a, const struct item *b)
{
    size_t n = a->key.len < b->key.len ? a->key.len : b->key.len;
    int c = n ? memcmp(a->key.data, b->key.data, n) : 0;
    if (c) return c;
    return a->key.len < b->key.len ? -1 : a->key.len > b->key.len;
}

static int cmp_item(const void *pa, const void *pb)
{
    const struct item *a = pa, *b = pb;
    int c = cmp_key(a, b);
    return c ? c : cmp_time_desc(a->s, b->s);
}

/* Whether s carries every tag of the comma-separated list. */
static bool has_tags(const struct snapshot *s, const char *list)
{
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len) {
            bool found = false;
            for (size_t i = 0; i < s->n_tags && !found; i++)
                found = strlen(s->tags[i]) == len && memcmp(s->tags[i], p, len) == 0;
            if (!found) return false;
        }
        p += len;
        if (*p == ',') p++;
    }
    return true;
}

/* Whether time (sec, nsec) is strictly after the newest snapshot's time minus d. */
static bool within(const struct snapshot *newest, const struct ret_duration *d,
                   const struct snapshot *cur)
{
    time_t t = (time_t)newest->time_sec;
    struct tm tm;
    localtime_r(&t, &tm);
    tm.tm_year -= d->years;
    tm.tm_mon -= d->months;
    tm.tm_mday -= d->days;
    tm.tm_isdst = -1;
    int64_t limit = (int64_t)mktime(&tm) - (int64_t)d->hours * 3600;
    if (cur->time_sec != limit) return cur->time_sec > limit;
    return cur->time_nsec > newest->time_nsec;
}

/* Applies the policy to one group, sorted newest first. */
static void apply_group(struct item *g, size_t n, const struct ret_policy *p,
                        struct ret_result *out)
{
    struct {
        int count;
        long last;
    } b[B_COUNT] = {{p->last, -1},   {p->hourly, -1},  {p->daily, -1},
                    {p->weekly, -1}, {p->monthly, -1}, {p->yearly, -1}};
    for (size_t nr = 0; nr < n; nr++) {
        const struct snapshot *cur = g[nr].s;
        struct ret_result *r = &out[g[nr].index];
        unsigned why = 0;
        for (size_t i = 0; i < p->n_keep_tags; i++)
            if (has_tags(cur, p->keep_tags[i])) why |= RET_KEEP_TAG;
        time_t t = (time_t)cur->time_sec;
        struct tm tm;
        localtime_r(&t, &tm);
        for (int k = 0; k < B_COUNT; k++) {
            if (b[k].count == 0) continue;
            long v = period(k, &tm, nr);
            /* The oldest snapshot is kept too while the rule has counts left. */
            if (v != b[k].last || nr == n - 1) {
                why |= 1u << k;
                b[k].last = v;
                if (b[k].count > 0) b[k].count--;
            }
        }
        if (!duration_zero(&p->within) && within(g[0].s, &p->within, cur)) why |= RET_KEEP_WITHIN;
        r->reasons = why;
        r->keep = why != 0;
    }
}

int ret_apply(const struct snapshot *snaps, size_t n, const struct ret_policy *p, unsigned group_by,
              struct ret_result *out, size_t *n_groups, struct err *e)
{
    if (n_groups) *n_groups = 0;
    if (!n) return 0;
    struct item *items = calloc(n, sizeof *items);
    if (!items) return err_set(e, ERR_FAIL, "retention: out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        items[i].s = &snaps[i];
        items[i].index = i;
        if (group_key(&snaps[i], group_by, &items[i].key) < 0)
            rc = err_set(e, ERR_FAIL, "retention: out of memory");
    }
    if (rc == 0) {
        qsort(items, n, sizeof *items, cmp_item);
        bool empty = ret_policy_empty(p);
        size_t group = 0;
        for (size_t start = 0; start < n; group++) {
            size_t end = start + 1;
            while (end < n && cmp_key(&items[start], &items[end]) == 0)
                end++;
            for (size_t i = start; i < end; i++) {
                out[items[i].index].group = group;
                out[items[i].index].keep = true;
                out[items[i].index].reasons = 0;
            }
            if (!empty) apply_group(items + start, end - start, p, out);
            start = end;
        }
        if (n_groups) *n_groups = group;
    }
    for (size_t i = 0; i < n; i++)
        buf_free(&items[i].key);
    free(items);
    return rc;
}
