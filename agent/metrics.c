/* metrics.c - counters, their Prometheus text, and a tiny libuv HTTP server; see metrics.h. */
#include "agent/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#define N_KINDS 2
#define N_PHASES 5
#define REQ_MAX 4096

static const char *const kind_names[N_KINDS] = {"backup", "restore"};
static const char *const phase_names[N_PHASES] = {"Completed", "Failed", "Canceled", "Requeued",
                                                  "Other"};
static const char *const watch_names[] = {"list", "resume", "expired", "failure"};
static const double buckets[] = {1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

struct metrics {
    pthread_mutex_t mu;
    uint64_t jobs[N_KINDS][N_PHASES], running[N_KINDS], bytes[N_KINDS], bytes_new[N_KINDS];
    uint64_t hist[N_KINDS][N_BUCKETS], dur_count[N_KINDS];
    double dur_sum[N_KINDS];
    uint64_t watch[4];
    bool healthy;
    char why[256];
    /* the server */
    bool serving;
    pthread_t thread;
    uv_loop_t loop;
    uv_tcp_t tcp;
    uv_async_t wake;
};

int metrics_new(struct metrics **out, struct err *e)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) return err_set(e, ERR_FAIL, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    m->healthy = true;
    *out = m;
    return 0;
}

void metrics_job_started(struct metrics *m, enum metrics_kind k)
{
    pthread_mutex_lock(&m->mu);
    m->running[k]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_job_finished(struct metrics *m, enum metrics_kind k, const char *phase, double seconds,
                          uint64_t bytes, uint64_t bytes_new)
{
    size_t p = 0;
    while (p < N_PHASES - 1 && strcmp(phase_names[p], phase) != 0)
        p++;
    pthread_mutex_lock(&m->mu);
    if (m->running[k]) m->running[k]--;
    m->jobs[k][p]++;
    m->bytes[k] += bytes;
    m->bytes_new[k] += bytes_new;
    for (size_t b = 0; b < N_BUCKETS; b++)
        if (seconds <= buckets[b]) m->hist[k][b]++;
    m->dur_count[k]++;
    m->dur_sum[k] += seconds;
    pthread_mutex_unlock(&m->mu);
}

void metrics_watch(struct metrics *m, enum metrics_watch ev, unsigned long n)
{
    pthread_mutex_lock(&m->mu);
    m->watch[ev] += n;
    pthread_mutex_unlock(&m->mu);
}

void metrics_set_health(struct metrics *m, bool healthy, const char *why)
{
    pthread_mutex_lock(&m->mu);
    m->healthy = healthy;
    snprintf(m->why, sizeof m->why, "%s", why ? why : "");
    pthread_mutex_unlock(&m->mu);
}

static int put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(struct buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) return -1;
    return buf_append(b, line, (size_t)n);
}

static uint64_t rss_bytes(void)
{
    unsigned long pages_total = 0, pages_rss = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f) return 0;
    if (fscanf(f, "%lu %lu", &pages_total, &pages_rss) != 2) pages_rss = 0;
    fclose(f);
    return (uint64_t)pages_rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

int metrics_render(struct metrics *m, struct buf *b)
{
    int bad = 0;
    pthread_mutex_lock(&m->mu);
    bad |= put(b, "# HELP podvault_agent_jobs_total Jobs that ended, by kind and final phase.\n"
                  "# TYPE podvault_agent_jobs_total counter\n");
    for (int k = 0; k < N_KINDS; k++)
        for (int p = 0; p < N_PHASES; p++)
            bad |= put(b, "podvault_agent_jobs_total{kind=\"%s\",phase=\"%s\"} %llu\n",
                       kind_names[k], phase_names[p], (unsigned long long)m->jobs[k][p]);
    bad |= put(b, "# HELP podvault_agent_jobs_running Jobs running now.\n"
                  "# TYPE podvault_agent_jobs_running gauge\n");
    for (int k = 0; k < N_KINDS; k++)
        bad |= put(b, "podvault_agent_jobs_running{kind=\"%s\"} %llu\n", kind_names[k],
                   (unsigned long long)m->running[k]);
    bad |= put(b, "# HELP podvault_agent_bytes_total Bytes of files backed up or restored.\n"
                  "# TYPE podvault_agent_bytes_total counter\n");
    for (int k = 0; k < N_KINDS; k++)
        bad |= put(b, "podvault_agent_bytes_total{kind=\"%s\"} %llu\n", kind_names[k],
                   (unsigned long long)m->bytes[k]);
    bad |= put(b, "# HELP podvault_agent_bytes_new_total Bytes new to the repository.\n"
                  "# TYPE podvault_agent_bytes_new_total counter\n");
    for (int k = 0; k < N_KINDS; k++)
        bad |= put(b, "podvault_agent_bytes_new_total{kind=\"%s\"} %llu\n", kind_names[k],
                   (unsigned long long)m->bytes_new[k]);
    bad |= put(b, "# HELP podvault_agent_job_duration_seconds How long jobs ran.\n"
                  "# TYPE podvault_agent_job_duration_seconds histogram\n");
    for (int k = 0; k < N_KINDS; k++) {
        for (size_t i = 0; i < N_BUCKETS; i++)
            bad |=
                put(b, "podvault_agent_job_duration_seconds_bucket{kind=\"%s\",le=\"%g\"} %llu\n",
                    kind_names[k], buckets[i], (unsigned long long)m->hist[k][i]);
        bad |= put(b, "podvault_agent_job_duration_seconds_bucket{kind=\"%s\",le=\"+Inf\"} %llu\n",
                   kind_names[k], (unsigned long long)m->dur_count[k]);
        bad |= put(b, "podvault_agent_job_duration_seconds_sum{kind=\"%s\"} %.3f\n", kind_names[k],
                   m->dur_sum[k]);
        bad |= put(b, "podvault_agent_job_duration_seconds_count{kind=\"%s\"} %llu\n",
                   kind_names[k], (unsigned long long)m->dur_count[k]);
    }
    bad |= put(b, "# HELP podvault_agent_watch_total List and watch events of the API client.\n"
                  "# TYPE podvault_agent_watch_total counter\n");
    for (int w = 0; w < 4; w++)
        bad |= put(b, "podvault_agent_watch_total{event=\"%s\"} %llu\n", watch_names[w],
                   (unsigned long long)m->watch[w]);
    bad |= put(b,
               "# HELP podvault_agent_healthy 1 while the agent can reach the API server.\n"
               "# TYPE podvault_agent_healthy gauge\npodvault_agent_healthy %d\n",
               m->healthy ? 1 : 0);
    pthread_mutex_unlock(&m->mu);
    bad |= put(b,
               "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
               "# TYPE process_resident_memory_bytes gauge\n"
               "process_resident_memory_bytes %llu\n",
               (unsigned long long)rss_bytes());
    return bad ? -1 : 0;
}

/* --- HTTP */

struct conn {
    uv_tcp_t tcp;
    struct metrics *m;
    char req[REQ_MAX];
    size_t len;
    uv_write_t wr;
    struct buf resp;
};

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    buf_free(&c->resp);
    free(c);
}

static void written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void respond(struct conn *c)
{
    struct metrics *m = c->m;
    int code = 404;
    const char *ctype = "text/plain; charset=utf-8";
    struct buf body = BUF_INIT;
    char path[256] = "";
    if (sscanf(c->req, "GET %255s", path) == 1) {
        char *q = strchr(path, '?');
        if (q) *q = '\0';
        if (strcmp(path, "/metrics") == 0) {
            code = metrics_render(m, &body) == 0 ? 200 : 500;
            ctype = "text/plain; version=0.0.4; charset=utf-8";
        } else if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
            pthread_mutex_lock(&m->mu);
            code = m->healthy ? 200 : 503;
            put(&body, "%s\n", m->healthy ? "ok" : m->why);
            pthread_mutex_unlock(&m->mu);
        } else {
            put(&body, "not found: try /metrics or /healthz\n");
        }
    } else {
        code = 405;
        put(&body, "only GET is served\n");
    }
    const char *reason = code == 200   ? "OK"
                         : code == 404 ? "Not Found"
                         : code == 405 ? "Method Not Allowed"
                         : code == 503 ? "Service Unavailable"
                                       : "Internal Server Error";
    put(&c->resp,
        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
        code, reason, ctype, body.len);
    if (body.len) buf_append(&c->resp, body.data, body.len);
    buf_free(&body);
    uv_buf_t ub = uv_buf_init((char *)c->resp.data, (unsigned)c->resp.len);
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &ub, 1, written) != 0)
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    struct conn *c = h->data;
    *out = uv_buf_init(c->req + c->len, (unsigned)(REQ_MAX - 1 - c->len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, conn_closed);
        return;
    }
    c->len += (size_t)n;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n") || c->len >= REQ_MAX - 1) {
        uv_read_stop(s);
        respond(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct metrics *m = server->data;
    if (status < 0) return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->m = m;
    uv_tcp_init(&m->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, h->type == UV_TCP && h->data != arg ? conn_closed : NULL);
}

static void on_wake(uv_async_t *a)
{
    struct metrics *m = a->data;
    /* The listening handle and the async handle carry `m` as data; connections their conn. */
    uv_walk(&m->loop, close_any, m);
}

static void *serve_thread(void *arg)
{
    struct metrics *m = arg;
    uv_run(&m->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int parse_address(const char *addr, struct sockaddr_storage *ss, struct err *e)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon) return err_set(e, ERR_FAIL, "metrics address %s: expected HOST:PORT", addr);
    int port = atoi(colon + 1);
    size_t hn = (size_t)(colon - addr);
    if (hn >= sizeof host || port < 0 || port > 65535)
        return err_set(e, ERR_FAIL, "metrics address %s: bad host or port", addr);
    memcpy(host, addr, hn);
    host[hn] = '\0';
    if (hn >= 2 && host[0] == '[' && host[hn - 1] == ']') {
        host[hn - 1] = '\0';
        if (uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)ss) == 0) return 0;
    } else if (uv_ip4_addr(hn ? host : "0.0.0.0", port, (struct sockaddr_in *)ss) == 0) {
        return 0;
    }
    return err_set(e, ERR_FAIL, "metrics address %s: not an IP address and port", addr);
}

int metrics_serve(struct metrics *m, const char *address, int *port, struct err *e)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (parse_address(address, &ss, e) < 0) return e->code;
    if (uv_loop_init(&m->loop) != 0) return err_set(e, ERR_FAIL, "starting the metrics loop");
    uv_tcp_init(&m->loop, &m->tcp);
    m->tcp.data = m;
    int rc = uv_tcp_bind(&m->tcp, (const struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&m->tcp, 16, on_connection);
    if (rc != 0) {
        err_set(e, ERR_FAIL, "serving metrics on %s: %s", address, uv_strerror(rc));
        uv_close((uv_handle_t *)&m->tcp, NULL);
        uv_run(&m->loop, UV_RUN_DEFAULT);
        uv_loop_close(&m->loop);
        return e->code;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&m->tcp, (struct sockaddr *)&bound, &len);
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    uv_async_init(&m->loop, &m->wake, on_wake);
    m->wake.data = m;
    if (pthread_create(&m->thread, NULL, serve_thread, m) != 0) {
        uv_walk(&m->loop, close_any, m);
        uv_run(&m->loop, UV_RUN_DEFAULT);
        uv_loop_close(&m->loop);
        return err_set(e, ERR_FAIL, "starting the metrics thread");
    }
    m->serving = true;
    return 0;
}

void metrics_free(struct metrics *m)
{
    if (!m) return;
    if (m->serving) {
        uv_async_send(&m->wake);
        pthread_join(m->thread, NULL);
        uv_loop_close(&m->loop);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}
