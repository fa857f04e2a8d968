/* test_s3_retry.c - unit tests of the object stores' retry rule (backend/http.c) (http_retry_next):
 * how many attempts, how long each wait, full jitter within the exponential bound and its cap, and
 * throttling answers retried until the throttle time has passed, never beyond. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backend/http.h"

static const struct http_retry policy = {
    .retries = 6, .delay_ms = 100, .max_delay_ms = 10000, .throttle_ms = 300000};

/* The upper bound of attempt n's wait: delay * 2^(n-1), capped. */
static long bound(const struct http_retry *p, int n)
{
    long d = p->delay_ms;
    for (int i = 1; i < n && d < p->max_delay_ms; i++)
        d *= 2;
    return d < p->max_delay_ms ? d : p->max_delay_ms;
}

/* Full jitter: the lowest draw waits nothing, the highest just under the bound, the middle
 * half of it; the bound doubles from attempt to attempt up to the cap. */
static void test_full_jitter_within_bounds(void **state)
{
    for (int n = 1; n <= 6; n++) {
        long lo = -1, mid = -1, hi = -1;
        assert_true(http_retry_next(&policy, n, 0, false, 0, &lo));
        assert_true(http_retry_next(&policy, n, 0, false, 1u << 31, &mid));
        assert_true(http_retry_next(&policy, n, 0, false, UINT32_MAX, &hi));
        assert_int_equal(lo, 0);
        assert_int_equal(mid, bound(&policy, n) / 2);
        assert_true(hi < bound(&policy, n) && hi >= bound(&policy, n) - 1);
    }
    /* attempt 8 would be 12.8 s: the cap holds, and stays at huge attempt numbers */
    long w;
    assert_true(http_retry_next(&policy, 8, 0, true, UINT32_MAX, &w));
    assert_true(w <= 10000 && w >= 9999);
    assert_true(http_retry_next(&policy, 5000, 0, true, UINT32_MAX, &w));
    assert_true(w <= 10000 && w >= 9999);
}

/* Failures that are not throttling stop after `retries` retries, however early. */
static void test_count_bounds_other_failures(void **state)
{
    long w;
    assert_true(http_retry_next(&policy, 6, 0, false, 7, &w));
    assert_false(http_retry_next(&policy, 7, 0, false, 7, &w));
    struct http_retry none = policy;
    none.retries = 0;
    assert_false(http_retry_next(&none, 1, 0, false, 7, &w));
}

/* Throttling goes on past the count while the throttle time lasts; the last wait ends when
 * it does, so a storm that never ends fails within the throttle time plus one attempt. */
static void test_throttling_retried_for_the_throttle_time(void **state)
{
    long w = -1;
    assert_true(http_retry_next(&policy, 7, 1000, true, UINT32_MAX, &w));
    assert_true(http_retry_next(&policy, 40, 299000, true, UINT32_MAX, &w));
    assert_int_equal(w, 1000); /* 10 s drawn, 1 s left */
    assert_false(http_retry_next(&policy, 41, 300000, true, 0, &w));
    assert_false(http_retry_next(&policy, 41, 400000, true, 0, &w));
    /* within the count, the throttle time does not shorten the wait */
    assert_true(http_retry_next(&policy, 3, 299900, true, UINT32_MAX, &w));
    assert_true(w >= 399);
    /* a throttle time of 0: the count alone, as for any failure */
    struct http_retry count_only = policy;
    count_only.throttle_ms = 0;
    assert_false(http_retry_next(&count_only, 7, 0, true, 0, &w));
}

/* The waits a never-ending storm produces, drawn with a fixed sequence: how many attempts fit
 * in the throttle time. With full jitter the mean wait at the cap is half of it, so at most
 * about time / (cap / 2) + log2(cap / delay) attempts, whatever the draws; at least the count. */
static void test_attempts_in_a_storm_are_bounded(void **state)
{
    const struct http_retry p = {
        .retries = 6, .delay_ms = 100, .max_delay_ms = 2000, .throttle_ms = 20000};
    uint32_t x = 2463534242u; /* xorshift32 */
    long elapsed = 0, w;
    int n = 1;
    while (http_retry_next(&p, n, elapsed, true, x, &w)) {
        elapsed += w + 5; /* each attempt itself takes 5 ms */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        n++;
        assert_true(n < 100);
    }
    assert_true(elapsed >= 20000 && elapsed < 20000 + 2000 + 10);
    print_message("    %d attempts in %.1f s of a storm that never ends\n", n, elapsed / 1000.0);
    assert_true(n >= 7 && n <= 20000 / 1000 + 5 + 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_jitter_within_bounds),
        cmocka_unit_test(test_count_bounds_other_failures),
        cmocka_unit_test(test_throttling_retried_for_the_throttle_time),
        cmocka_unit_test(test_attempts_in_a_storm_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
