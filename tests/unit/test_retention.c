/* test_retention.c - forget policies pinned on fixed calendars: each rule alone, combinations,
 * the oldest snapshot kept while counts are left, ISO weeks across a year end, calendar
 * arithmetic in --keep-within, tag lists, groups, local time zones, and the parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "repo/retention.h"

#define MAXS 64

struct set {
    struct snapshot s[MAXS];
    size_t n;
    struct ret_result res[MAXS];
    size_t groups;
};

static void use_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

/* Adds a snapshot at "YYYY-MM-DD HH:MM" UTC on `host` with comma-separated tags. */
static void add(struct set *st, const char *when, const char *host, const char *tags)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    assert_non_null(strptime(when, "%Y-%m-%d %H:%M", &tm));
    struct snapshot *s = &st->s[st->n];
    memset(s, 0, sizeof *s);
    s->time_sec = (int64_t)timegm(&tm);
    s->id.b[0] = (uint8_t)st->n;
    s->id.b[1] = 0xaa;
    s->hostname = strdup(host ? host : "h");
    s->username = strdup("u");
    s->paths = calloc(1, sizeof *s->paths);
    s->paths[0] = strdup("/data");
    s->n_paths = 1;
    if (tags && *tags) {
        s->tags = calloc(8, sizeof *s->tags);
        const char *p = tags;
        while (*p) {
            size_t len = strcspn(p, ",");
            s->tags[s->n_tags++] = strndup(p, len);
            p += len;
            if (*p) p++;
        }
    }
    st->n++;
}

static void clear(struct set *st)
{
    for (size_t i = 0; i < st->n; i++)
        snap_free(&st->s[i]);
    st->n = 0;
}

static void apply(struct set *st, const struct ret_policy *p, unsigned by)
{
    struct err e;
    assert_int_equal(ret_apply(st->s, st->n, p, by, st->res, &st->groups, &e), 0);
}

/* The kept snapshots as a string of their indexes ("0 3 5"), in input order. */
static const char *kept(const struct set *st)
{
    static char out[512];
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < st->n; i++)
        if (st->res[i].keep)
            len += (size_t)snprintf(out + len, sizeof out - len, "%s%zu", len ? " " : "", i);
    return out;
}

static void test_keep_last(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    for (int i = 0; i < 6; i++) {
        char when[32];
        snprintf(when, sizeof when, "2024-03-0%d 12:00", i + 1);
        add(&st, when, "h", NULL);
    }
    struct ret_policy p = {.last = 3};
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "3 4 5");
    assert_int_equal(st.res[5].reasons, RET_KEEP_LAST);
    p.last = RET_UNLIMITED;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "0 1 2 3 4 5");
    clear(&st);
}

static void test_keep_daily_and_oldest(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2024-03-01 08:00", "h", NULL); /* 0 */
    add(&st, "2024-03-01 20:00", "h", NULL); /* 1: newest of Mar 1 */
    add(&st, "2024-03-02 09:00", "h", NULL); /* 2 */
    add(&st, "2024-03-02 10:00", "h", NULL); /* 3: newest of Mar 2 */
    add(&st, "2024-03-04 00:00", "h", NULL); /* 4: Mar 4 */
    add(&st, "2024-03-05 23:59", "h", NULL); /* 5: Mar 5 */
    struct ret_policy p = {.daily = 3};
    apply(&st, &p, RET_GROUP_DEFAULT);
    /* The three newest days with snapshots: Mar 5, 4, 2; the count is spent before the oldest. */
    assert_string_equal(kept(&st), "3 4 5");
    /* More counts than days: every day's newest, and the oldest snapshot too. */
    p.daily = 10;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "0 1 3 4 5");
    assert_int_equal(st.res[0].reasons, RET_KEEP_DAILY);
    p.daily = RET_UNLIMITED;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "0 1 3 4 5");
    clear(&st);
}

static void test_keep_hourly(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2024-03-01 10:05", "h", NULL); /* 0 */
    add(&st, "2024-03-01 10:55", "h", NULL); /* 1 */
    add(&st, "2024-03-01 11:10", "h", NULL); /* 2 */
    add(&st, "2024-03-01 11:20", "h", NULL); /* 3 */
    add(&st, "2024-03-02 11:20", "h", NULL); /* 4: same hour, next day */
    struct ret_policy p = {.hourly = 2};
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "3 4");
    clear(&st);
}

static void test_keep_weekly_iso_year_end(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2022-12-26 12:00", "h", NULL); /* 0: Mon, 2022-W52 */
    add(&st, "2022-12-31 12:00", "h", NULL); /* 1: Sat, 2022-W52 */
    add(&st, "2023-01-01 12:00", "h", NULL); /* 2: Sun, still 2022-W52 */
    add(&st, "2023-01-02 12:00", "h", NULL); /* 3: Mon, 2023-W01 */
    add(&st, "2023-01-08 12:00", "h", NULL); /* 4: Sun, 2023-W01 */
    add(&st, "2020-12-31 12:00", "h", NULL); /* 5: Thu, 2020-W53 */
    add(&st, "2021-01-03 12:00", "h", NULL); /* 6: Sun, 2020-W53 */
    add(&st, "2021-01-04 12:00", "h", NULL); /* 7: Mon, 2021-W01 */
    struct ret_policy p = {.weekly = 3};
    apply(&st, &p, RET_GROUP_DEFAULT);
    /* Newest of 2023-W01 (4), of 2022-W52 (2), of 2021-W01 (7). */
    assert_string_equal(kept(&st), "2 4 7");
    p.weekly = 4;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "2 4 6 7"); /* 2020-W53 (6); the count is spent there */
    p.weekly = 5;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "2 4 5 6 7"); /* counts left: the oldest (5) too */
    clear(&st);
}

static void test_keep_monthly_yearly(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2021-06-15 12:00", "h", NULL); /* 0 */
    add(&st, "2022-01-31 12:00", "h", NULL); /* 1 */
    add(&st, "2022-02-01 12:00", "h", NULL); /* 2 */
    add(&st, "2022-02-20 12:00", "h", NULL); /* 3 */
    add(&st, "2023-12-31 23:00", "h", NULL); /* 4 */
    add(&st, "2024-01-01 01:00", "h", NULL); /* 5 */
    struct ret_policy p = {.monthly = 3};
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "3 4 5");
    struct ret_policy y = {.yearly = 3};
    apply(&st, &y, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "3 4 5");
    y.yearly = 10;
    apply(&st, &y, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "0 3 4 5");
    clear(&st);
}

static void test_combination_reasons(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    /* One snapshot a day for 40 days, at noon. */
    for (int d = 0; d < 40; d++) {
        struct tm tm = {.tm_year = 124, .tm_mon = 0, .tm_mday = 1 + d, .tm_hour = 12};
        time_t t = timegm(&tm);
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", gmtime(&t));
        add(&st, when, "h", NULL);
    }
    struct ret_policy p = {.last = 2, .daily = 7, .weekly = 4, .monthly = 2};
    apply(&st, &p, RET_GROUP_DEFAULT);
    /* Days are Jan 1 (0) .. Feb 9 (39). daily: 33..39; weekly (ISO weeks end on Sundays):
     * Feb 9 is a Friday, so Feb 9 (39), Feb 4 (34), Jan 28 (27), Jan 21 (20); monthly: Feb 9,
     * Jan 31 (30). last: 38, 39. */
    assert_string_equal(kept(&st), "20 27 30 33 34 35 36 37 38 39");
    assert_int_equal(st.res[39].reasons,
                     RET_KEEP_LAST | RET_KEEP_DAILY | RET_KEEP_WEEKLY | RET_KEEP_MONTHLY);
    assert_int_equal(st.res[30].reasons, RET_KEEP_MONTHLY);
    assert_int_equal(st.res[34].reasons, RET_KEEP_DAILY | RET_KEEP_WEEKLY);
    char why[128];
    assert_string_equal(ret_reasons(st.res[34].reasons, why, sizeof why), "daily, weekly");
    clear(&st);
}

static void test_keep_within(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2024-03-02 12:00", "h", NULL); /* 0 */
    add(&st, "2024-03-03 11:59", "h", NULL); /* 1 */
    add(&st, "2024-03-03 12:00", "h", NULL); /* 2: exactly 28 days before: not after it */
    add(&st, "2024-03-03 12:01", "h", NULL); /* 3 */
    add(&st, "2024-03-31 12:00", "h", NULL); /* 4: newest */
    struct ret_policy p;
    memset(&p, 0, sizeof p);
    struct err e;
    assert_int_equal(ret_parse_duration("28d", &p.within, &e), 0);
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "3 4");
    /* One month before Mar 31 is "Feb 31", that is Mar 2: all but the first are newer. */
    assert_int_equal(ret_parse_duration("1m", &p.within, &e), 0);
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "1 2 3 4");
    assert_int_equal(st.res[4].reasons, RET_KEEP_WITHIN);
    /* Hours count too: 27d23h. */
    assert_int_equal(ret_parse_duration("23h27d", &p.within, &e), 0);
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "4");
    clear(&st);
}

static void test_keep_tag(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2024-03-01 12:00", "h", "a");   /* 0 */
    add(&st, "2024-03-02 12:00", "h", "a,b"); /* 1 */
    add(&st, "2024-03-03 12:00", "h", "b");   /* 2 */
    add(&st, "2024-03-04 12:00", "h", "c");   /* 3 */
    add(&st, "2024-03-05 12:00", "h", NULL);  /* 4 */
    const char *tags[] = {"a,b", "c"};
    struct ret_policy p = {.keep_tags = tags, .n_keep_tags = 2};
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "1 3");
    assert_int_equal(st.res[1].reasons, RET_KEEP_TAG);
    p.last = 1;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "1 3 4");
    clear(&st);
}

static void test_groups(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2024-03-01 12:00", "alpha", "x"); /* 0 */
    add(&st, "2024-03-02 12:00", "beta", "y");  /* 1 */
    add(&st, "2024-03-03 12:00", "alpha", "y"); /* 2 */
    add(&st, "2024-03-04 12:00", "beta", "x");  /* 3 */
    add(&st, "2024-03-05 12:00", "alpha", "x"); /* 4 */
    struct ret_policy p = {.last = 1};
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_int_equal(st.groups, 2);
    assert_string_equal(kept(&st), "3 4");
    assert_int_equal(st.res[0].group, st.res[4].group);
    assert_int_not_equal(st.res[1].group, st.res[4].group);
    apply(&st, &p, 0);
    assert_int_equal(st.groups, 1);
    assert_string_equal(kept(&st), "4");
    apply(&st, &p, RET_GROUP_TAGS);
    assert_int_equal(st.groups, 2);
    assert_string_equal(kept(&st), "2 4");
    apply(&st, &p, RET_GROUP_HOST | RET_GROUP_TAGS);
    assert_int_equal(st.groups, 4);
    assert_string_equal(kept(&st), "1 2 3 4");
    /* Path order does not split a group. */
    clear(&st);
    add(&st, "2024-03-01 12:00", "h", NULL);
    add(&st, "2024-03-02 12:00", "h", NULL);
    free(st.s[0].paths[0]);
    free(st.s[0].paths);
    st.s[0].paths = calloc(2, sizeof *st.s[0].paths);
    st.s[0].paths[0] = strdup("/b");
    st.s[0].paths[1] = strdup("/a");
    st.s[0].n_paths = 2;
    free(st.s[1].paths[0]);
    free(st.s[1].paths);
    st.s[1].paths = calloc(2, sizeof *st.s[1].paths);
    st.s[1].paths[0] = strdup("/a");
    st.s[1].paths[1] = strdup("/b");
    st.s[1].n_paths = 2;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_int_equal(st.groups, 1);
    assert_string_equal(kept(&st), "1");
    clear(&st);
}

static void test_local_time_zone(void **state)
{
    (void)state;
    struct set st = {0};
    add(&st, "2024-03-01 20:00", "h", NULL); /* 0: 23:00 on Mar 1 at UTC+3 */
    add(&st, "2024-03-01 22:30", "h", NULL); /* 1: 01:30 on Mar 2 at UTC+3 */
    add(&st, "2024-03-01 23:30", "h", NULL); /* 2: 02:30 on Mar 2 at UTC+3 */
    struct ret_policy p = {.daily = 1};
    use_tz("UTC");
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "2");
    p.daily = 2;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "0 2"); /* one day only: the oldest is kept for the count */
    use_tz("XYZ-3");                       /* POSIX: three hours east of UTC */
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "0 2"); /* two days: Mar 2's newest and Mar 1's */
    p.daily = 1;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "2");
    p.daily = 0;
    p.hourly = 2;
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "1 2");
    use_tz("UTC");
    clear(&st);
}

static void test_empty_policy_keeps_all(void **state)
{
    (void)state;
    use_tz("UTC");
    struct set st = {0};
    add(&st, "2024-03-01 12:00", "h", NULL);
    add(&st, "2024-03-02 12:00", "h", NULL);
    struct ret_policy p;
    memset(&p, 0, sizeof p);
    assert_true(ret_policy_empty(&p));
    apply(&st, &p, RET_GROUP_DEFAULT);
    assert_string_equal(kept(&st), "0 1");
    struct err e;
    assert_int_equal(ret_apply(NULL, 0, &p, 0, NULL, &st.groups, &e), 0);
    assert_int_equal(st.groups, 0);
    clear(&st);
}

static void test_parsers(void **state)
{
    (void)state;
    struct ret_duration d;
    struct err e;
    assert_int_equal(ret_parse_duration("1y2m3d4h", &d, &e), 0);
    assert_int_equal(d.years, 1);
    assert_int_equal(d.months, 2);
    assert_int_equal(d.days, 3);
    assert_int_equal(d.hours, 4);
    assert_int_equal(ret_parse_duration("12h", &d, &e), 0);
    assert_int_equal(d.hours, 12);
    assert_int_equal(d.days, 0);
    const char *bad[] = {"", "1", "y", "1x", "1y1y", "-1d", "1d ", "99999999999d"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(ret_parse_duration(bad[i], &d, &e), ERR_FAIL);
    unsigned by;
    assert_int_equal(ret_parse_group_by("host,tags", &by, &e), 0);
    assert_int_equal(by, RET_GROUP_HOST | RET_GROUP_TAGS);
    assert_int_equal(ret_parse_group_by("", &by, &e), 0);
    assert_int_equal(by, 0);
    assert_int_equal(ret_parse_group_by("paths", &by, &e), 0);
    assert_int_equal(by, RET_GROUP_PATHS);
    assert_int_equal(ret_parse_group_by("hosts", &by, &e), ERR_FAIL);
    int c;
    assert_int_equal(ret_parse_count("7", &c, &e), 0);
    assert_int_equal(c, 7);
    assert_int_equal(ret_parse_count("unlimited", &c, &e), 0);
    assert_int_equal(c, RET_UNLIMITED);
    assert_int_equal(ret_parse_count("-1", &c, &e), ERR_FAIL);
    assert_int_equal(ret_parse_count("3x", &c, &e), ERR_FAIL);
    assert_int_equal(ret_parse_count("", &c, &e), ERR_FAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_last),
        cmocka_unit_test(test_keep_daily_and_oldest),
        cmocka_unit_test(test_keep_hourly),
        cmocka_unit_test(test_keep_weekly_iso_year_end),
        cmocka_unit_test(test_keep_monthly_yearly),
        cmocka_unit_test(test_combination_reasons),
        cmocka_unit_test(test_keep_within),
        cmocka_unit_test(test_keep_tag),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_local_time_zone),
        cmocka_unit_test(test_empty_policy_keeps_all),
        cmocka_unit_test(test_parsers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
