/* test_agent_metrics.c - unit tests of agent/metrics: the Prometheus text after jobs and watch
 * events, and the HTTP server on 127.0.0.1 (/metrics, /healthz 200 then 503, 404, stop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "agent/metrics.h"

static bool has(const struct buf *b, const char *line)
{
    return memmem(b->data, b->len, line, strlen(line)) != NULL;
}

static void test_render(void **state)
{
    struct metrics *m;
    struct err e;
    assert_int_equal(metrics_new(&m, &e), 0);
    metrics_job_started(m, METRICS_BACKUP);
    metrics_job_started(m, METRICS_BACKUP);
    metrics_job_finished(m, METRICS_BACKUP, "Completed", 42.0, 1000, 300);
    metrics_job_started(m, METRICS_RESTORE);
    metrics_job_finished(m, METRICS_RESTORE, "Failed", 0.5, 10, 0);
    metrics_job_finished(m, METRICS_BACKUP, "Weird", 7200, 0, 0);
    metrics_watch(m, METRICS_EXPIRED, 2);
    metrics_set_health(m, false, "watch failing");
    struct buf b = BUF_INIT;
    assert_int_equal(metrics_render(m, &b), 0);
    assert_true(has(&b, "podvault_agent_jobs_total{kind=\"backup\",phase=\"Completed\"} 1\n"));
    assert_true(has(&b, "podvault_agent_jobs_total{kind=\"restore\",phase=\"Failed\"} 1\n"));
    assert_true(has(&b, "podvault_agent_jobs_total{kind=\"backup\",phase=\"Other\"} 1\n"));
    assert_true(has(&b, "podvault_agent_jobs_running{kind=\"backup\"} 0\n"));
    assert_true(has(&b, "podvault_agent_bytes_total{kind=\"backup\"} 1000\n"));
    assert_true(has(&b, "podvault_agent_bytes_new_total{kind=\"backup\"} 300\n"));
    assert_true(
        has(&b, "podvault_agent_job_duration_seconds_bucket{kind=\"backup\",le=\"10\"} 0\n"));
    assert_true(
        has(&b, "podvault_agent_job_duration_seconds_bucket{kind=\"backup\",le=\"60\"} 1\n"));
    assert_true(
        has(&b, "podvault_agent_job_duration_seconds_bucket{kind=\"backup\",le=\"+Inf\"} 2\n"));
    assert_true(has(&b, "podvault_agent_job_duration_seconds_count{kind=\"backup\"} 2\n"));
    assert_true(has(&b, "podvault_agent_job_duration_seconds_sum{kind=\"restore\"} 0.500\n"));
    assert_true(has(&b, "podvault_agent_watch_total{event=\"expired\"} 2\n"));
    assert_true(has(&b, "podvault_agent_healthy 0\n"));
    assert_true(has(&b, "# TYPE podvault_agent_job_duration_seconds histogram\n"));
    assert_true(has(&b, "process_resident_memory_bytes "));
    buf_free(&b);
    metrics_free(m);
}

static size_t sink(char *data, size_t size, size_t n, void *ud)
{
    buf_append(ud, data, size * n);
    return size * n;
}

static long get(int port, const char *path, struct buf *body)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 5L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    return code;
}

static void test_serve(void **state)
{
    struct metrics *m;
    struct err e;
    int port = 0;
    assert_int_equal(metrics_new(&m, &e), 0);
    assert_int_equal(metrics_serve(m, "127.0.0.1:0", &port, &e), 0);
    assert_true(port > 0);
    struct buf b = BUF_INIT;
    assert_int_equal(get(port, "/healthz", &b), 200);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "ok\n", 3);
    buf_reset(&b);
    metrics_job_started(m, METRICS_RESTORE);
    assert_int_equal(get(port, "/metrics?x=1", &b), 200);
    assert_true(has(&b, "podvault_agent_jobs_running{kind=\"restore\"} 1\n"));
    buf_reset(&b);
    metrics_set_health(m, false, "watching podvolumebackups failed 5 times in a row");
    assert_int_equal(get(port, "/healthz", &b), 503);
    assert_true(has(&b, "failed 5 times"));
    buf_reset(&b);
    assert_int_equal(get(port, "/other", &b), 404);
    for (int i = 0; i < 50; i++) { /* many connections: each is closed and freed */
        buf_reset(&b);
        assert_int_equal(get(port, "/metrics", &b), 200);
    }
    buf_free(&b);
    metrics_free(m); /* stops the server thread */

    /* A taken port and a bad address fail with a message. */
    struct metrics *m2;
    assert_int_equal(metrics_new(&m2, &e), 0);
    int port2;
    assert_int_equal(metrics_serve(m2, "no-port", &port2, &e), ERR_FAIL);
    assert_int_equal(metrics_serve(m2, "999.1.1.1:80", &port2, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "999.1.1.1:80"));
    metrics_free(m2);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_serve),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
