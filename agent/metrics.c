/* metrics.c - counters, their Prometheus text, and a tiny libuv HTTP server; see metrics.h. */
#include "agent/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#define N_KINDS 2
#define N_PHASES 5
#define N_DROPS 3
#define LINE_MAX_LEN 2048
#define RUNNING_TRACKED 256

static const char *const kind_names[N_KINDS] = {"backup", "restore"};
static const char *const phase_names[N_PHASES] = {"Completed", "Failed", "Canceled", "Requeued",
                                                  "Other"};
static const char *const watch_names[] = {"list", "resume", "expired", "failure"};
static const char *const drop_names[N_DROPS] = {"full", "deadline", "oversized"};
enum { DROP_FULL, DROP_DEADLINE, DROP_OVERSIZED };
static const double buckets[] = {1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])
/* Velero's podVolume_pod_volume_operation_latency_seconds buckets: 1, 5, 10, 15, 30 minutes,
 * 1, 2, 3, 4 hours (pkg/metrics/metrics.go NewNodeMetrics). */
static const double velero_buckets[] = {60, 300, 600, 900, 1800, 3600, 7200, 10800, 14400};
#define N_VBUCKETS (sizeof velero_buckets / sizeof velero_buckets[0])

/* One completed backup's Velero latency series (histogram and gauge share the labels). */
struct pvb_series {
    struct metrics_pvb_labels l;
    uint64_t hist[N_VBUCKETS], count;
    double sum, last;
};

/* Everything /metrics shows; copied whole under the lock, formatted outside it. */
struct metrics_state {
    uint64_t jobs[N_KINDS][N_PHASES], running[N_KINDS], bytes[N_KINDS], bytes_new[N_KINDS];
    uint64_t hist[N_KINDS][N_BUCKETS], dur_count[N_KINDS];
    double dur_sum[N_KINDS];
    uint64_t watch[4], drops[N_DROPS];
    uint64_t enqueued, dequeued;
    time_t starts[N_KINDS][RUNNING_TRACKED]; /* start times of running jobs (the first ones) */
    size_t n_starts[N_KINDS];
    struct pvb_series series[METRICS_PVB_SERIES]; /* a ring, oldest replaced first */
    size_t n_series, next_series;
    bool healthy;
    char why[256];
    char node[254];
};

struct conn;

struct metrics {
    pthread_mutex_t mu;
    struct metrics_state st;
    /* the server: all below belongs to its loop thread once it runs */
    bool serving;
    pthread_t thread;
    uv_loop_t loop;
    uv_tcp_t tcp;
    uv_async_t wake;
    uv_timer_t sweep;
    uv_check_t check;
    unsigned accept_budget; /* accepts left in this loop iteration */
    bool accept_waiting;    /* a connection waits to be accepted */
    struct metrics_limits lim;
    struct conn *head, *tail; /* open connections in accept order */
    unsigned n_conns;
    char rbuf[4096]; /* every read lands here: the loop reads one connection at a time */
};

int metrics_new(struct metrics **out, struct err *e)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) return err_set(e, ERR_FAIL, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    m->st.healthy = true;
    *out = m;
    return 0;
}

void metrics_set_node(struct metrics *m, const char *node)
{
    pthread_mutex_lock(&m->mu);
    snprintf(m->st.node, sizeof m->st.node, "%s", node ? node : "");
    pthread_mutex_unlock(&m->mu);
}

void metrics_job_started(struct metrics *m, enum metrics_kind k, time_t started)
{
    pthread_mutex_lock(&m->mu);
    m->st.running[k]++;
    if (m->st.n_starts[k] < RUNNING_TRACKED) m->st.starts[k][m->st.n_starts[k]++] = started;
    if (k == METRICS_BACKUP) m->st.enqueued++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_job_finished(struct metrics *m, enum metrics_kind k, time_t started, const char *phase,
                          double seconds, uint64_t bytes, uint64_t bytes_new)
{
    size_t p = 0;
    while (p < N_PHASES - 1 && strcmp(phase_names[p], phase) != 0)
        p++;
    pthread_mutex_lock(&m->mu);
    struct metrics_state *st = &m->st;
    if (st->running[k]) st->running[k]--;
    for (size_t i = 0; i < st->n_starts[k]; i++)
        if (st->starts[k][i] == started) {
            st->starts[k][i] = st->starts[k][--st->n_starts[k]];
            break;
        }
    st->jobs[k][p]++;
    st->bytes[k] += bytes;
    st->bytes_new[k] += bytes_new;
    for (size_t b = 0; b < N_BUCKETS; b++)
        if (seconds <= buckets[b]) st->hist[k][b]++;
    st->dur_count[k]++;
    st->dur_sum[k] += seconds;
    pthread_mutex_unlock(&m->mu);
}

static const char *str_at(const json_t *obj, const char *a, const char *b)
{
    const json_t *v = json_object_get(obj, a);
    if (b) v = json_object_get(v, b);
    return json_is_string(v) ? json_string_value(v) : "";
}

void metrics_pvb_labels(const json_t *pvb, struct metrics_pvb_labels *out)
{
    const json_t *meta = json_object_get(pvb, "metadata");
    const json_t *spec = json_object_get(pvb, "spec");
    const char *owner =
        str_at(json_array_get(json_object_get(meta, "ownerReferences"), 0), "name", NULL);
    if (!*owner) owner = str_at(json_object_get(meta, "labels"), "velero.io/backup-name", NULL);
    const char *name = str_at(meta, "name", NULL);
    snprintf(out->pvb, sizeof out->pvb, "%s", name);
    snprintf(out->backup, sizeof out->backup, "%s/%s", str_at(meta, "namespace", NULL), owner);
    snprintf(out->operation, sizeof out->operation, "%s-%s-%s-%s-backup", name,
             str_at(spec, "backupStorageLocation", NULL), str_at(spec, "pod", "namespace"),
             str_at(spec, "uploaderType", NULL));
}

/* The series of these labels, else a new one in the oldest slot. Under the lock. */
static struct pvb_series *series_for(struct metrics_state *st, const struct metrics_pvb_labels *l)
{
    for (size_t i = 0; i < st->n_series; i++)
        if (memcmp(&st->series[i].l, l, sizeof *l) == 0) return &st->series[i];
    struct pvb_series *s = &st->series[st->next_series];
    st->next_series = (st->next_series + 1) % METRICS_PVB_SERIES;
    if (st->n_series < METRICS_PVB_SERIES) st->n_series++;
    memset(s, 0, sizeof *s);
    s->l = *l;
    return s;
}

void metrics_pvb_completed(struct metrics *m, const json_t *pvb, double seconds)
{
    struct metrics_pvb_labels l;
    memset(&l, 0, sizeof l); /* compared whole */
    metrics_pvb_labels(pvb, &l);
    double whole = seconds < 0 ? 0 : (double)(uint64_t)seconds; /* Velero: duration / time.Second */
    pthread_mutex_lock(&m->mu);
    struct pvb_series *s = series_for(&m->st, &l);
    for (size_t b = 0; b < N_VBUCKETS; b++)
        if (whole <= velero_buckets[b]) s->hist[b]++;
    s->count++;
    s->sum += whole;
    s->last = whole;
    m->st.dequeued++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_watch(struct metrics *m, enum metrics_watch ev, unsigned long n)
{
    pthread_mutex_lock(&m->mu);
    m->st.watch[ev] += n;
    pthread_mutex_unlock(&m->mu);
}

void metrics_set_health(struct metrics *m, bool healthy, const char *why)
{
    pthread_mutex_lock(&m->mu);
    m->st.healthy = healthy;
    snprintf(m->st.why, sizeof m->st.why, "%s", why ? why : "");
    pthread_mutex_unlock(&m->mu);
}

static void count_drop(struct metrics *m, int why)
{
    pthread_mutex_lock(&m->mu);
    m->st.drops[why]++;
    pthread_mutex_unlock(&m->mu);
}

static int put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(struct buf *b, const char *fmt, ...)
{
    char line[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) return -1;
    return buf_append(b, line, (size_t)n);
}

/* A label value with \, " and newlines escaped as the text format asks. */
static const char *esc(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (; *in && o + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') out[o++] = '\\';
        if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
            continue;
        }
        out[o++] = *in;
    }
    out[o] = '\0';
    return out;
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

#define ULL(x) ((unsigned long long)(x))

static int render_own(const struct metrics_state *st, struct buf *b)
{
    int bad = 0;
    bad |= put(b, "# HELP podvault_agent_jobs_total Jobs that ended, by kind and final phase.\n"
                  "# TYPE podvault_agent_jobs_total counter\n");
    for (int k = 0; k < N_KINDS; k++)
        for (int p = 0; p < N_PHASES; p++)
            bad |= put(b, "podvault_agent_jobs_total{kind=\"%s\",phase=\"%s\"} %llu\n",
                       kind_names[k], phase_names[p], ULL(st->jobs[k][p]));
    bad |= put(b, "# HELP podvault_agent_jobs_running Jobs running now.\n"
                  "# TYPE podvault_agent_jobs_running gauge\n");
    for (int k = 0; k < N_KINDS; k++)
        bad |= put(b, "podvault_agent_jobs_running{kind=\"%s\"} %llu\n", kind_names[k],
                   ULL(st->running[k]));
    bad |= put(b, "# HELP podvault_agent_job_oldest_start_time_seconds When the longest-running "
                  "job started (Unix time), 0 when none runs.\n"
                  "# TYPE podvault_agent_job_oldest_start_time_seconds gauge\n");
    for (int k = 0; k < N_KINDS; k++) {
        time_t oldest = 0;
        for (size_t i = 0; i < st->n_starts[k]; i++)
            if (!oldest || st->starts[k][i] < oldest) oldest = st->starts[k][i];
        bad |= put(b, "podvault_agent_job_oldest_start_time_seconds{kind=\"%s\"} %lld\n",
                   kind_names[k], (long long)oldest);
    }
    bad |= put(b, "# HELP podvault_agent_bytes_total Bytes of files backed up or restored.\n"
                  "# TYPE podvault_agent_bytes_total counter\n");
    for (int k = 0; k < N_KINDS; k++)
        bad |= put(b, "podvault_agent_bytes_total{kind=\"%s\"} %llu\n", kind_names[k],
                   ULL(st->bytes[k]));
    bad |= put(b, "# HELP podvault_agent_bytes_new_total Bytes new to the repository.\n"
                  "# TYPE podvault_agent_bytes_new_total counter\n");
    for (int k = 0; k < N_KINDS; k++)
        bad |= put(b, "podvault_agent_bytes_new_total{kind=\"%s\"} %llu\n", kind_names[k],
                   ULL(st->bytes_new[k]));
    bad |= put(b, "# HELP podvault_agent_job_duration_seconds How long jobs ran.\n"
                  "# TYPE podvault_agent_job_duration_seconds histogram\n");
    for (int k = 0; k < N_KINDS; k++) {
        const char *kn = kind_names[k];
        for (size_t i = 0; i < N_BUCKETS; i++)
            bad |=
                put(b, "podvault_agent_job_duration_seconds_bucket{kind=\"%s\",le=\"%g\"} %llu\n",
                    kn, buckets[i], ULL(st->hist[k][i]));
        bad |= put(b, "podvault_agent_job_duration_seconds_bucket{kind=\"%s\",le=\"+Inf\"} %llu\n",
                   kn, ULL(st->dur_count[k]));
        bad |= put(b, "podvault_agent_job_duration_seconds_sum{kind=\"%s\"} %.3f\n", kn,
                   st->dur_sum[k]);
        bad |= put(b, "podvault_agent_job_duration_seconds_count{kind=\"%s\"} %llu\n", kn,
                   ULL(st->dur_count[k]));
    }
    bad |= put(b, "# HELP podvault_agent_watch_total List and watch events of the API client.\n"
                  "# TYPE podvault_agent_watch_total counter\n");
    for (int w = 0; w < 4; w++)
        bad |= put(b, "podvault_agent_watch_total{event=\"%s\"} %llu\n", watch_names[w],
                   ULL(st->watch[w]));
    bad |= put(b, "# HELP podvault_agent_http_dropped_total Connections to this endpoint closed "
                  "unanswered: full (evicted for a newer one), deadline, oversized.\n"
                  "# TYPE podvault_agent_http_dropped_total counter\n");
    for (int d = 0; d < N_DROPS; d++)
        bad |= put(b, "podvault_agent_http_dropped_total{reason=\"%s\"} %llu\n", drop_names[d],
                   ULL(st->drops[d]));
    bad |= put(b,
               "# HELP podvault_agent_healthy 1 while the agent can reach the API server.\n"
               "# TYPE podvault_agent_healthy gauge\npodvault_agent_healthy %d\n",
               st->healthy ? 1 : 0);
    return bad;
}

/* The label set of a Velero latency series, in Velero's order. */
static const char *series_labels(const char *node, const struct pvb_series *s, char *out,
                                 size_t cap)
{
    char op[700], bk[700], pvb[300];
    snprintf(out, cap, "node=\"%s\",operation=\"%s\",backupName=\"%s\",pod_volume_backup=\"%s\"",
             node, esc(s->l.operation, op, sizeof op), esc(s->l.backup, bk, sizeof bk),
             esc(s->l.pvb, pvb, sizeof pvb));
    return out;
}

/* Velero's node-agent series (pkg/metrics/metrics.go NewNodeMetrics). */
static int render_velero(const struct metrics_state *st, struct buf *b)
{
    char node[600], ls[1900];
    esc(st->node, node, sizeof node);
    int bad =
        put(b,
            "# HELP podVolume_pod_volume_backup_enqueue_count Pod volume backups started on this "
            "node (Velero node-agent name).\n"
            "# TYPE podVolume_pod_volume_backup_enqueue_count counter\n"
            "podVolume_pod_volume_backup_enqueue_count{node=\"%s\"} %llu\n"
            "# HELP podVolume_pod_volume_backup_dequeue_count Pod volume backups completed on this "
            "node (Velero node-agent name).\n"
            "# TYPE podVolume_pod_volume_backup_dequeue_count counter\n"
            "podVolume_pod_volume_backup_dequeue_count{node=\"%s\"} %llu\n",
            node, ULL(st->enqueued), node, ULL(st->dequeued));
    const char *h = "podVolume_pod_volume_operation_latency_seconds";
    bad |= put(b,
               "# HELP %s Seconds each completed pod volume backup took (Velero node-agent name).\n"
               "# TYPE %s histogram\n",
               h, h);
    for (size_t i = 0; i < st->n_series; i++) {
        const struct pvb_series *s = &st->series[i];
        series_labels(node, s, ls, sizeof ls);
        for (size_t j = 0; j < N_VBUCKETS; j++)
            bad |=
                put(b, "%s_bucket{%s,le=\"%g\"} %llu\n", h, ls, velero_buckets[j], ULL(s->hist[j]));
        bad |= put(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", h, ls, ULL(s->count));
        bad |= put(b, "%s_sum{%s} %.0f\n%s_count{%s} %llu\n", h, ls, s->sum, h, ls, ULL(s->count));
    }
    bad |= put(b,
               "# HELP %s_gauge Seconds the last completed backup of each series took (Velero "
               "node-agent name).\n# TYPE %s_gauge gauge\n",
               h, h);
    for (size_t i = 0; i < st->n_series; i++)
        bad |= put(b, "%s_gauge{%s} %.0f\n", h, series_labels(node, &st->series[i], ls, sizeof ls),
                   st->series[i].last);
    return bad;
}

int metrics_render(struct metrics *m, struct buf *b)
{
    struct metrics_state *st = malloc(sizeof *st);
    if (!st) return -1;
    pthread_mutex_lock(&m->mu);
    memcpy(st, &m->st, sizeof *st);
    pthread_mutex_unlock(&m->mu);
    int bad = render_own(st, b);
    bad |= render_velero(st, b);
    bad |= put(b,
               "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
               "# TYPE process_resident_memory_bytes gauge\n"
               "process_resident_memory_bytes %llu\n",
               ULL(rss_bytes()));
    free(st);
    return bad ? -1 : 0;
}

/* --- HTTP
 *
 * The server must stay answerable and small whatever clients do: at most lim.max_conns open
 * connections (a new one evicts the oldest unanswered connection of the client address that
 * holds the most: a flood churns itself while a prober's quick request gets through), a deadline
 * from accept to the end of the request that bytes do not extend (slowloris), another for the
 * answer, a bounded request, and no buffer per connection until its answer (reads land in one
 * shared buffer; only the request line is kept). One timer sweeps the deadlines. */

enum conn_state { CONN_READING, CONN_WRITING, CONN_CLOSING };

struct conn {
    uv_tcp_t tcp;
    struct metrics *m;
    struct conn *prev, *next; /* the server's open connections, oldest first */
    enum conn_state state;
    uint64_t deadline; /* uv_now() milliseconds */
    size_t total;      /* request bytes read */
    int eol;           /* header-end state: 0 in a line, 1 after \n, 2 after \n\r */
    bool line_done;
    size_t line_len;
    char line[256];   /* the request line, cut */
    uint8_t peer[16]; /* the client's address (IPv4 in the first 4 bytes), port left out */
    uv_write_t wr;
    struct buf resp;
};

static void conn_freed(uv_handle_t *h)
{
    struct conn *c = h->data;
    buf_free(&c->resp);
    free(c);
}

/* Unlinks and closes; safe to call again. */
static void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING) return;
    struct metrics *m = c->m;
    c->state = CONN_CLOSING;
    *(c->prev ? &c->prev->next : &m->head) = c->next;
    *(c->next ? &c->next->prev : &m->tail) = c->prev;
    m->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, conn_freed);
}

static void written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

/* The answer to a request line: status code, content type and body. */
static int route(struct metrics *m, const char *line, const char **ctype, struct buf *body)
{
    char path[256] = "";
    *ctype = "text/plain; charset=utf-8";
    if (sscanf(line, "GET %255s", path) != 1) {
        put(body, "only GET is served\n");
        return 405;
    }
    char *q = strchr(path, '?');
    if (q) *q = '\0';
    if (strcmp(path, "/metrics") == 0) {
        *ctype = "text/plain; version=0.0.4; charset=utf-8";
        return metrics_render(m, body) == 0 ? 200 : 500;
    }
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
        char why[256];
        pthread_mutex_lock(&m->mu);
        bool ok = m->st.healthy;
        memcpy(why, m->st.why, sizeof why);
        pthread_mutex_unlock(&m->mu);
        put(body, "%s\n", ok ? "ok" : why);
        return ok ? 200 : 503;
    }
    put(body, "not found: try /metrics or /healthz\n");
    return 404;
}

static void respond(struct conn *c, int code, const char *ctype, struct buf *body)
{
    const char *reason = code == 200   ? "OK"
                         : code == 404 ? "Not Found"
                         : code == 405 ? "Method Not Allowed"
                         : code == 431 ? "Request Header Fields Too Large"
                         : code == 503 ? "Service Unavailable"
                                       : "Internal Server Error";
    c->state = CONN_WRITING;
    c->deadline = uv_now(&c->m->loop) + c->m->lim.response_ms;
    uv_read_stop((uv_stream_t *)&c->tcp);
    int bad = put(&c->resp,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\n\r\n",
                  code, reason, ctype, body->len);
    if (body->len) bad |= buf_append(&c->resp, body->data, body->len);
    uv_buf_t ub = uv_buf_init((char *)c->resp.data, (unsigned)c->resp.len);
    c->wr.data = c;
    if (bad || uv_write(&c->wr, (uv_stream_t *)&c->tcp, &ub, 1, written) != 0) conn_close(c);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    (void)hint;
    struct conn *c = h->data;
    *out = uv_buf_init(c->m->rbuf, sizeof c->m->rbuf);
}

/* Takes in request bytes; true once the headers ended (an empty line). */
static bool take(struct conn *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!c->line_done) {
            if (ch == '\n' || ch == '\r')
                c->line_done = true;
            else if (c->line_len < sizeof c->line - 1)
                c->line[c->line_len++] = ch;
        }
        if (ch == '\n') {
            if (c->eol) return true;
            c->eol = 1;
        } else if (ch == '\r' && c->eol == 1) {
            c->eol = 2;
        } else if (ch != '\r') {
            c->eol = 0;
        }
    }
    return false;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->state != CONN_READING || n == 0) return;
    struct metrics *m = c->m;
    bool done = take(c, b->base, (size_t)n);
    c->total += (size_t)n;
    if (!done && c->total < m->lim.request_max) return;
    struct buf body = BUF_INIT;
    const char *ctype = "text/plain; charset=utf-8";
    int code = 431;
    if (done) {
        c->line[c->line_len] = '\0';
        code = route(m, c->line, &ctype, &body);
    } else {
        count_drop(m, DROP_OVERSIZED);
        put(&body, "request headers over %u bytes\n", m->lim.request_max);
    }
    respond(c, code, ctype, &body);
    buf_free(&body);
}

static void peer_of(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
    if (ss.ss_family == AF_INET)
        memcpy(c->peer, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    else if (ss.ss_family == AF_INET6)
        memcpy(c->peer, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
}

/* Whom a newcomer `c` displaces when the server is full: the oldest unanswered connection of
 * the client address that holds the most unanswered ones (a flood from a few pods gives way
 * before the kubelet's single probe does), never `c`; NULL when every other one is being
 * answered. At most max_conns squared comparisons of 16 bytes. */
static struct conn *eviction_victim(struct metrics *m, const struct conn *c)
{
    struct conn *best = NULL;
    unsigned best_n = 0;
    for (struct conn *a = m->head; a; a = a->next) {
        if (a == c || a->state != CONN_READING) continue;
        unsigned n = 0; /* unanswered connections of a's address, the newcomer included */
        bool oldest = true;
        for (struct conn *b = m->head; b; b = b->next) {
            if (b->state != CONN_READING || memcmp(a->peer, b->peer, sizeof a->peer) != 0) continue;
            if (n++ == 0 && b != a) oldest = false;
        }
        if (oldest && n > best_n) {
            best = a;
            best_n = n;
        }
    }
    return best;
}

/* Accepts one waiting connection; false when it could not (libuv then stops watching the
 * listener until a later accept). */
static bool accept_one(struct metrics *m)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return false;
    c->m = m;
    uv_tcp_init(&m->loop, &c->tcp);
    c->tcp.data = c;
    c->state = CONN_READING;
    c->deadline = uv_now(&m->loop) + m->lim.request_ms;
    c->prev = m->tail;
    *(m->tail ? &m->tail->next : &m->head) = c;
    m->tail = c;
    m->n_conns++;
    if (uv_accept((uv_stream_t *)&m->tcp, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return true;
    }
    peer_of(c);
    if (m->n_conns > m->lim.max_conns) {
        struct conn *old = eviction_victim(m, c);
        count_drop(m, DROP_FULL);
        conn_close(old ? old : c); /* all busy answering: the newcomer goes */
        if (!old) return true;
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) conn_close(c);
    return true;
}

/* At most a quarter of the cap is accepted per loop iteration, so that a connection has a few
 * iterations to have its request read before newcomers evict it; the rest wait in the kernel
 * until the check phase (after this iteration's reads) accepts again. */
static void on_connection(uv_stream_t *server, int status)
{
    struct metrics *m = server->data;
    if (status < 0) return;
    if (m->accept_budget == 0 || !accept_one(m)) {
        m->accept_waiting = true; /* not accepted: libuv stops watching until we accept */
        return;
    }
    m->accept_budget--;
}

static void on_check(uv_check_t *h)
{
    struct metrics *m = h->data;
    m->accept_budget = m->lim.max_conns / 4 ? m->lim.max_conns / 4 : 1;
    if (!m->accept_waiting) return;
    if (accept_one(m)) {
        m->accept_waiting = false;
        m->accept_budget--;
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct metrics *m = t->data;
    uint64_t now = uv_now(&m->loop);
    for (struct conn *c = m->head, *next; c; c = next) {
        next = c->next;
        if (now < c->deadline) continue;
        count_drop(m, DROP_DEADLINE);
        conn_close(c);
    }
}

static void on_wake(uv_async_t *a)
{
    struct metrics *m = a->data;
    while (m->head)
        conn_close(m->head);
    uv_close((uv_handle_t *)&m->tcp, NULL);
    uv_close((uv_handle_t *)&m->sweep, NULL);
    uv_close((uv_handle_t *)&m->check, NULL);
    uv_close((uv_handle_t *)&m->wake, NULL);
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

int metrics_serve(struct metrics *m, const char *address, const struct metrics_limits *lim,
                  int *port, struct err *e)
{
    static const struct metrics_limits defaults = METRICS_LIMITS_DEFAULT;
    m->lim = lim ? *lim : defaults;
    if (m->lim.max_conns < 1 || m->lim.request_ms < 1 || m->lim.response_ms < 1 ||
        m->lim.request_max < 16)
        return err_set(e, ERR_FAIL, "metrics server: a limit is zero or too small");
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (parse_address(address, &ss, e) < 0) return e->code;
    if (uv_loop_init(&m->loop) != 0) return err_set(e, ERR_FAIL, "starting the metrics loop");
    uv_tcp_init(&m->loop, &m->tcp);
    m->tcp.data = m;
    int rc = uv_tcp_bind(&m->tcp, (const struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&m->tcp, 128, on_connection);
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
    uv_timer_init(&m->loop, &m->sweep);
    m->sweep.data = m;
    unsigned every =
        m->lim.request_ms < m->lim.response_ms ? m->lim.request_ms : m->lim.response_ms;
    every = every / 4 > 500 ? 500 : every / 4 ? every / 4 : 1; /* deadlines kept within 0.5 s */
    uv_timer_start(&m->sweep, on_sweep, every, every);
    uv_check_init(&m->loop, &m->check);
    m->check.data = m;
    uv_check_start(&m->check, on_check);
    on_check(&m->check);
    if (pthread_create(&m->thread, NULL, serve_thread, m) != 0) {
        on_wake(&m->wake);
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
