/* test_agent_metrics.c - unit tests of agent/metrics: the Prometheus text after jobs and watch
 * events, Velero's node-agent series and their labels, and the HTTP server on 127.0.0.1
 * (/metrics, /healthz 200 then 503, 404, stop; a flood of half-sent and silent connections,
 * a slowloris, an oversized request). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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
    metrics_job_started(m, METRICS_BACKUP, 1000);
    metrics_job_started(m, METRICS_BACKUP, 1000);
    metrics_job_finished(m, METRICS_BACKUP, 1000, "Completed", 42.0, 1000, 300);
    metrics_job_started(m, METRICS_RESTORE, 2000);
    metrics_job_finished(m, METRICS_RESTORE, 2000, "Failed", 0.5, 10, 0);
    metrics_job_finished(m, METRICS_BACKUP, 1000, "Weird", 7200, 0, 0);
    metrics_watch(m, METRICS_EXPIRED, 2);
    metrics_set_health(m, false, "watch failing");
    struct buf b = BUF_INIT;
    assert_int_equal(metrics_render(m, &b), 0);
    assert_true(has(&b, "podvault_agent_jobs_total{kind=\"backup\",phase=\"Completed\"} 1\n"));
    assert_true(has(&b, "podvault_agent_jobs_total{kind=\"restore\",phase=\"Failed\"} 1\n"));
    assert_true(has(&b, "podvault_agent_jobs_total{kind=\"backup\",phase=\"Other\"} 1\n"));
    assert_true(has(&b, "podvault_agent_jobs_running{kind=\"backup\"} 0\n"));
    assert_true(has(&b, "podvault_agent_job_oldest_start_time_seconds{kind=\"backup\"} 0\n"));
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

/* A PodVolumeBackup as Velero's server makes it (owned by its Backup) or as `podvault request`
 * does (a label, no owner). */
static json_t *pvb(const char *name, bool owned)
{
    json_t *o = json_pack("{s:{s:s, s:s, s:{s:s}}, s:{s:s, s:s, s:{s:s, s:s}}}", "metadata", "name",
                          name, "namespace", "velero", "labels", "velero.io/backup-name",
                          "nightly-label", "spec", "backupStorageLocation", "default",
                          "uploaderType", "kopia", "pod", "namespace", "shop", "name", "db-0");
    if (owned)
        json_object_set_new(json_object_get(o, "metadata"), "ownerReferences",
                            json_pack("[{s:s, s:s}]", "kind", "Backup", "name", "nightly"));
    return o;
}

static void test_velero_labels(void **state)
{
    struct metrics_pvb_labels l;
    json_t *o = pvb("nightly-abcde", true);
    metrics_pvb_labels(o, &l);
    assert_string_equal(l.pvb, "nightly-abcde");
    assert_string_equal(l.backup, "velero/nightly");
    assert_string_equal(l.operation, "nightly-abcde-default-shop-kopia-backup");
    json_decref(o);
    o = pvb("req-1", false);
    metrics_pvb_labels(o, &l);
    assert_string_equal(l.backup, "velero/nightly-label");
    json_decref(o);
    o = json_object(); /* nothing known: empty values, no crash */
    metrics_pvb_labels(o, &l);
    assert_string_equal(l.pvb, "");
    assert_string_equal(l.backup, "/");
    assert_string_equal(l.operation, "----backup");
    json_decref(o);
}

static void test_velero_render(void **state)
{
    struct metrics *m;
    struct err e;
    assert_int_equal(metrics_new(&m, &e), 0);
    metrics_set_node(m, "node-a");
    struct buf b = BUF_INIT;
    assert_int_equal(metrics_render(m, &b), 0); /* zero before any job, as Velero's */
    assert_true(has(&b, "podVolume_pod_volume_backup_enqueue_count{node=\"node-a\"} 0\n"));
    assert_true(has(&b, "podVolume_pod_volume_backup_dequeue_count{node=\"node-a\"} 0\n"));
    assert_true(has(&b, "# TYPE podVolume_pod_volume_operation_latency_seconds histogram\n"));
    assert_true(has(&b, "# TYPE podVolume_pod_volume_operation_latency_seconds_gauge gauge\n"));
    metrics_job_started(m, METRICS_BACKUP, 1500);
    metrics_job_started(m, METRICS_BACKUP, 1000);
    metrics_job_started(m, METRICS_RESTORE, 2000); /* Velero counts nothing for restores */
    json_t *o = pvb("nightly-abcde", true);
    metrics_pvb_completed(m, o, 301.9); /* whole seconds: 301 */
    json_decref(o);
    buf_reset(&b);
    assert_int_equal(metrics_render(m, &b), 0);
    assert_true(has(&b, "podVolume_pod_volume_backup_enqueue_count{node=\"node-a\"} 2\n"));
    assert_true(has(&b, "podVolume_pod_volume_backup_dequeue_count{node=\"node-a\"} 1\n"));
    assert_true(has(&b, "podvault_agent_job_oldest_start_time_seconds{kind=\"backup\"} 1000\n"));
    assert_true(has(&b, "podvault_agent_job_oldest_start_time_seconds{kind=\"restore\"} 2000\n"));
    const char *ls = "{node=\"node-a\",operation=\"nightly-abcde-default-shop-kopia-backup\","
                     "backupName=\"velero/nightly\",pod_volume_backup=\"nightly-abcde\"";
    char want[512];
    const char *const lines[] = {
        "podVolume_pod_volume_operation_latency_seconds_bucket%s,le=\"300\"} 0\n",
        "podVolume_pod_volume_operation_latency_seconds_bucket%s,le=\"600\"} 1\n",
        "podVolume_pod_volume_operation_latency_seconds_bucket%s,le=\"14400\"} 1\n",
        "podVolume_pod_volume_operation_latency_seconds_bucket%s,le=\"+Inf\"} 1\n",
        "podVolume_pod_volume_operation_latency_seconds_sum%s} 301\n",
        "podVolume_pod_volume_operation_latency_seconds_count%s} 1\n",
        "podVolume_pod_volume_operation_latency_seconds_gauge%s} 301\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        snprintf(want, sizeof want, lines[i], ls);
        assert_true(has(&b, want));
    }
    /* The kept series are bounded: the oldest goes first. */
    char name[32];
    for (int i = 0; i < METRICS_PVB_SERIES + 3; i++) {
        snprintf(name, sizeof name, "pvb-%d", i);
        o = pvb(name, true);
        metrics_pvb_completed(m, o, 5);
        json_decref(o);
    }
    buf_reset(&b);
    assert_int_equal(metrics_render(m, &b), 0);
    assert_false(has(&b, "pod_volume_backup=\"nightly-abcde\""));
    assert_false(has(&b, "pod_volume_backup=\"pvb-2\""));
    assert_true(has(&b, "pod_volume_backup=\"pvb-3\""));
    snprintf(name, sizeof name, "pvb-%d\"", METRICS_PVB_SERIES + 2);
    assert_true(has(&b, name));
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
    assert_int_equal(metrics_serve(m, "127.0.0.1:0", NULL, &port, &e), 0);
    assert_true(port > 0);
    struct buf b = BUF_INIT;
    assert_int_equal(get(port, "/healthz", &b), 200);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "ok\n", 3);
    buf_reset(&b);
    metrics_job_started(m, METRICS_RESTORE, 2000);
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
    assert_int_equal(metrics_serve(m2, "no-port", NULL, &port2, &e), ERR_FAIL);
    assert_int_equal(metrics_serve(m2, "999.1.1.1:80", NULL, &port2, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "999.1.1.1:80"));
    metrics_free(m2);
}

/* A connection to 127.0.0.1:port from 127.0.0.`from`. */
static int dial_from(int port, int from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK - 1 + (uint32_t)from);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
                    connect(fd, (struct sockaddr *)&a, sizeof a) != 0)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static int dial(int port)
{
    return dial_from(port, 1);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Whether the server closed the connection within `ms` (reads to EOF or error). */
static bool closed_within(int fd, int ms, struct buf *got)
{
    double end = now_s() + ms / 1000.0;
    char b[512];
    while (now_s() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t n = recv(fd, b, sizeof b, 0);
        if (n <= 0) return true;
        if (got) buf_append(got, b, (size_t)n);
    }
    return false;
}

#define FLOOD 300

static void test_flood(void **state)
{
    struct metrics *m;
    struct err e;
    int port = 0;
    struct metrics_limits lim = {
        .max_conns = 16, .request_ms = 600, .response_ms = 1000, .request_max = 1024};
    assert_int_equal(metrics_new(&m, &e), 0);
    assert_int_equal(metrics_serve(m, "127.0.0.1:0", &lim, &port, &e), 0);
    /* Half-sent requests and silent connections, far more than the cap. */
    static int fds[FLOOD];
    for (int i = 0; i < FLOOD; i++) {
        fds[i] = dial(port);
        assert_true(fds[i] >= 0);
        if (i % 2 == 0) assert_int_equal(send(fds[i], "GET /metrics HTTP/1.1\r\nHo", 26, 0), 26);
    }
    /* A prober still gets through at once. */
    struct buf b = BUF_INIT;
    double t0 = now_s();
    assert_int_equal(get(port, "/healthz", &b), 200);
    assert_true(now_s() - t0 < 1.0);
    buf_reset(&b);
    assert_int_equal(get(port, "/metrics", &b), 200);
    assert_false(has(&b, "podvault_agent_http_dropped_total{reason=\"full\"} 0\n"));
    /* Every flooding connection is closed by the deadline at the latest; none was answered. */
    for (int i = 0; i < FLOOD; i++) {
        struct buf got = BUF_INIT;
        assert_true(closed_within(fds[i], 2000, &got));
        assert_int_equal(got.len, 0);
        buf_free(&got);
        close(fds[i]);
    }
    /* A slowloris (a byte every 100 ms) is cut at the deadline from accept, not from its last
     * byte. */
    int fd = dial(port);
    t0 = now_s();
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t sent = 0;
    bool cut = false;
    while (!cut && now_s() - t0 < 3.0 && sent < strlen(req)) {
        if (send(fd, req + sent, 1, MSG_NOSIGNAL) != 1) break;
        sent++;
        cut = closed_within(fd, 100, NULL);
    }
    assert_true(cut || closed_within(fd, 1000, NULL));
    assert_true(now_s() - t0 < 1.5);
    assert_true(sent < strlen(req));
    close(fd);
    /* An oversized request: 431 and closed. */
    fd = dial(port);
    char big[1100];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 27);
    assert_int_equal(send(fd, big, sizeof big, MSG_NOSIGNAL), (ssize_t)sizeof big);
    struct buf got = BUF_INIT;
    assert_true(closed_within(fd, 2000, &got));
    assert_true(has(&got, "HTTP/1.1 431 "));
    buf_free(&got);
    close(fd);
    /* A full server makes room from the address holding the most connections: a silent
     * connection from 127.0.0.1 outlives 3 x the cap of newer ones from 127.0.0.2. */
    fd = dial_from(port, 1);
    for (int i = 0; i < FLOOD; i++)
        fds[i] = i < (int)lim.max_conns * 4 ? dial_from(port, 2) : -1;
    usleep(200 * 1000); /* all accepted (and evicted), well before the 600 ms deadline */
    const char *hz = "GET /healthz HTTP/1.1\r\n\r\n";
    assert_int_equal(send(fd, hz, strlen(hz), MSG_NOSIGNAL), (ssize_t)strlen(hz));
    struct buf ans = BUF_INIT;
    assert_true(closed_within(fd, 2000, &ans));
    assert_true(has(&ans, "HTTP/1.1 200 OK"));
    buf_free(&ans);
    close(fd);
    for (int i = 0; i < FLOOD; i++)
        if (fds[i] >= 0) close(fds[i]);
    buf_reset(&b);
    assert_int_equal(get(port, "/metrics", &b), 200);
    assert_false(has(&b, "podvault_agent_http_dropped_total{reason=\"deadline\"} 0\n"));
    assert_true(has(&b, "podvault_agent_http_dropped_total{reason=\"oversized\"} 1\n"));
    buf_free(&b);
    metrics_free(m);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),        cmocka_unit_test(test_serve),
        cmocka_unit_test(test_velero_labels), cmocka_unit_test(test_velero_render),
        cmocka_unit_test(test_flood),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
