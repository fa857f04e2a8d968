/* pv_faultproxy.c - an HTTP proxy for tests that sits on loopback between a client and an S3
 * server and breaks a share of the requests on purpose: it drops the connection, delays the
 * request, answers 500 or 503 itself, or cuts the request or the answer short.
 *
 *   pv_faultproxy --target 127.0.0.1:7480 [--listen PORT] [--rate PERCENT]
 *                 [--faults drop,delay,500,503,cut] [--delay-ms N] [--always FAULT]
 *                 [--storm-ms N] [--seed N] [--stats FILE] [--log FILE]
 *
 * "delay" holds the answer back (the request reaches the server at once, so a client that gives
 * up and retries never races a late copy of its own request).
 * It prints "listening 127.0.0.1:<port>" once ready (--listen 0, the default, picks a free
 * port). --always makes every request fail ("the server never recovers"). --storm-ms N limits
 * the faults that --rate picks to the first N ms after the first request, then the server
 * recovers (--faults 503 --rate 50 --storm-ms 60000: a minute of SlowDown to half of all
 * requests). --stats names a
 * file rewritten after each request with "requests N" and "faults N" lines; --log a file
 * that gets the header block of every request, as received. One request per
 * connection: the proxy adds "Connection: close" both ways, so it only has to find the end of
 * the headers, never the end of a body. SIGTERM or SIGINT stops it. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define HEAD_MAX (64u << 10)

enum fault { F_NONE, F_DROP, F_DELAY, F_500, F_503, F_CUT, F_COUNT };
static const char *const fault_names[F_COUNT] = {"none", "drop", "delay", "500", "503", "cut"};

struct proxy {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_signal_t sigterm, sigint;
    struct sockaddr_in target;
    unsigned rate;     /* percent of requests that meet a fault */
    unsigned enabled;  /* bit per fault that --rate may pick */
    enum fault always; /* F_NONE unless --always */
    unsigned delay_ms;
    uint64_t storm_ms;    /* 0: --rate applies for ever */
    uint64_t storm_start; /* uv_now of the first request, 0 before it */
    uint64_t rng;
    unsigned long requests, faults;
    const char *stats_path;
    FILE *log;
};

struct conn {
    struct proxy *px;
    uv_tcp_t client, upstream;
    uv_connect_t connect_req;
    uv_timer_t timer;
    int open_handles; /* freed when the last one is closed */
    bool closing, shutting, upstream_ready;
    enum fault fault;
    /* request headers, gathered until the blank line */
    char *head;
    size_t head_len;
    bool head_done;
    uint64_t body_left; /* request body bytes not yet seen (Content-Length) */
    uint64_t send_left; /* "cut": request bytes still allowed upstream; UINT64_MAX = all */
    char *pending;      /* bytes for upstream while it connects */
    size_t pending_len;
    /* answer headers, gathered to rewrite them */
    char *rhead;
    size_t rhead_len;
    bool rhead_done;
    uint64_t recv_left; /* "cut": answer bytes still passed on; UINT64_MAX = all */
    /* "delay": the answer is held back until the timer fires */
    bool hold, held_eof;
    char *held;
    size_t held_len;
};

struct wreq {
    uv_write_t w;
    char data[];
};

static uint64_t next_rand(struct proxy *px)
{
    uint64_t x = px->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return px->rng = x;
}

static void write_stats(struct proxy *px)
{
    if (!px->stats_path) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", px->stats_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "requests %lu\nfaults %lu\n", px->requests, px->faults);
    if (fclose(f) == 0) rename(tmp, px->stats_path);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0) return;
    free(c->head);
    free(c->rhead);
    free(c->pending);
    free(c->held);
    free(c);
}

static void close_conn(struct conn *c)
{
    if (c->closing) return;
    c->closing = true;
    uv_handle_t *hs[] = {(uv_handle_t *)&c->client, (uv_handle_t *)&c->upstream,
                         (uv_handle_t *)&c->timer};
    for (size_t i = 0; i < 3; i++)
        if (hs[i]->data && !uv_is_closing(hs[i])) uv_close(hs[i], on_handle_closed);
}

static void on_written(uv_write_t *w, int status)
{
    free(w);
}

static void send_bytes(struct conn *c, uv_tcp_t *to, const char *p, size_t n)
{
    if (n == 0 || c->closing) return;
    struct wreq *w = malloc(sizeof *w + n);
    if (!w) return close_conn(c);
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->w, (uv_stream_t *)to, &b, 1, on_written) < 0) {
        free(w);
        close_conn(c);
    }
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    struct conn *c = s->handle->data;
    free(s);
    close_conn(c);
}

/* Closes once everything written so far to `to` has gone out. */
static void finish_via(struct conn *c, uv_tcp_t *to)
{
    if (c->closing || c->shutting) return;
    c->shutting = true;
    uv_shutdown_t *s = malloc(sizeof *s);
    if (!s || uv_shutdown(s, (uv_stream_t *)to, on_shutdown) < 0) {
        free(s);
        close_conn(c);
    }
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    b->base = malloc(65536);
    b->len = b->base ? 65536 : 0;
}

/* Finds "\r\n\r\n"; returns the header length including it, or 0. */
static size_t head_end(const char *p, size_t n)
{
    for (size_t i = 3; i < n; i++)
        if (p[i - 3] == '\r' && p[i - 2] == '\n' && p[i - 1] == '\r' && p[i] == '\n') return i + 1;
    return 0;
}

static uint64_t header_u64(const char *head, size_t len, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *l = head; l < head + len;) {
        const char *eol = memchr(l, '\n', (size_t)(head + len - l));
        if (!eol) break;
        if ((size_t)(eol - l) > nlen + 1 && strncasecmp(l, name, nlen) == 0 && l[nlen] == ':')
            return strtoull(l + nlen + 1, NULL, 10);
        l = eol + 1;
    }
    return 0;
}

static bool header_has(const char *head, size_t len, const char *name, const char *value)
{
    size_t nlen = strlen(name);
    for (const char *l = head; l < head + len;) {
        const char *eol = memchr(l, '\n', (size_t)(head + len - l));
        if (!eol) break;
        if ((size_t)(eol - l) > nlen + 1 && strncasecmp(l, name, nlen) == 0 && l[nlen] == ':' &&
            memmem(l, (size_t)(eol - l), value, strlen(value)))
            return true;
        l = eol + 1;
    }
    return false;
}

/* Copies the header block with every Connection/Keep-Alive line replaced by one
 * "Connection: close" after the first line. Returns a malloc'd block and its length. */
static char *rewrite_head(const char *head, size_t len, size_t *out_len)
{
    char *out = malloc(len + 32), *o = out;
    if (!out) return NULL;
    bool first = true;
    for (const char *l = head; l < head + len;) {
        const char *eol = memchr(l, '\n', (size_t)(head + len - l));
        size_t n = eol ? (size_t)(eol - l) + 1 : (size_t)(head + len - l);
        /* The last line of the block may be shorter than the names compared against. */
        bool drop =
            !first && n >= 11 &&
            (strncasecmp(l, "Connection:", 11) == 0 || strncasecmp(l, "Keep-Alive:", 11) == 0);
        if (!drop) {
            memcpy(o, l, n);
            o += n;
        }
        if (first) {
            memcpy(o, "Connection: close\r\n", 19);
            o += 19;
            first = false;
        }
        l += n;
    }
    *out_len = (size_t)(o - out);
    return out;
}

static void answer_error(struct conn *c)
{
    int code = c->fault == F_500 ? 500 : 503;
    const char *xcode = code == 500 ? "InternalError" : "SlowDown";
    char body[256], msg[512];
    int bl = snprintf(body, sizeof body,
                      "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code>"
                      "<Message>injected by pv_faultproxy</Message></Error>",
                      xcode);
    int ml =
        snprintf(msg, sizeof msg,
                 "HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                 "Connection: close\r\n\r\n%s",
                 code, code == 500 ? "Internal Server Error" : "Service Unavailable", bl, body);
    send_bytes(c, &c->client, msg, (size_t)ml);
    finish_via(c, &c->client);
}

/* Passes request bytes upstream, honouring a cut. */
static void forward_up(struct conn *c, const char *p, size_t n)
{
    if (n > c->send_left) n = (size_t)c->send_left;
    if (c->send_left != UINT64_MAX) c->send_left -= n;
    if (!c->upstream_ready) {
        char *np = realloc(c->pending, c->pending_len + n + 1);
        if (!np) return close_conn(c);
        memcpy(np + c->pending_len, p, n);
        c->pending = np;
        c->pending_len += n;
        return;
    }
    send_bytes(c, &c->upstream, p, n);
    if (c->send_left == 0) finish_via(c, &c->upstream); /* the server sees half a request */
}

/* Passes answer body bytes to the client, up to a cut when one was asked for. */
static void deliver_body(struct conn *c, const char *p, size_t n)
{
    if (n > c->recv_left) n = (size_t)c->recv_left;
    if (n) send_bytes(c, &c->client, p, n);
    if (c->recv_left != UINT64_MAX) c->recv_left -= n;
    if (c->recv_left == 0) {
        if (c->upstream.data) uv_read_stop((uv_stream_t *)&c->upstream);
        finish_via(c, &c->client);
    }
}

/* Passes answer bytes to the client: headers rewritten, the answer cut short when asked. The
 * bytes may hold the headers and much of the body at once (an answer held back by "delay"):
 * only the headers are gathered, at most HEAD_MAX of them. */
static void deliver(struct conn *c, const char *p, size_t n)
{
    if (n == 0) return;
    if (!c->rhead_done) {
        size_t take = n < HEAD_MAX - c->rhead_len ? n : HEAD_MAX - c->rhead_len;
        char *nh = realloc(c->rhead, c->rhead_len + take + 1);
        if (!nh) return close_conn(c);
        memcpy(nh + c->rhead_len, p, take);
        c->rhead = nh;
        c->rhead_len += take;
        p += take;
        n -= take;
        size_t end = head_end(c->rhead, c->rhead_len);
        if (end == 0) {
            if (c->rhead_len == HEAD_MAX) close_conn(c); /* headers too long */
            return;
        }
        if (end > 9 && strncmp(c->rhead + 8, " 1", 2) == 0) {
            /* "100 Continue" and friends pass as they are; the real answer follows. */
            send_bytes(c, &c->client, c->rhead, end);
            size_t rest = c->rhead_len - end;
            char *tail = malloc(rest + n + 1);
            if (!tail) return close_conn(c);
            memcpy(tail, c->rhead + end, rest);
            memcpy(tail + rest, p, n);
            c->rhead_len = 0;
            deliver(c, tail, rest + n);
            free(tail);
            return;
        }
        c->rhead_done = true;
        size_t nlen = 0;
        char *head = rewrite_head(c->rhead, end, &nlen);
        if (!head) return close_conn(c);
        if (c->fault == F_CUT && c->send_left == UINT64_MAX) {
            /* Nothing was cut on the way up: cut the answer, mid-body or mid-headers. */
            uint64_t cl = header_u64(c->rhead, end, "Content-Length");
            c->recv_left = cl > 1 ? nlen + cl / 2 : nlen / 2;
        }
        size_t fwd = nlen < c->recv_left ? nlen : (size_t)c->recv_left;
        send_bytes(c, &c->client, head, fwd);
        if (c->recv_left != UINT64_MAX) c->recv_left -= fwd;
        free(head);
        deliver_body(c, c->rhead + end, c->rhead_len - end);
        if (c->closing) return;
    }
    deliver_body(c, p, n);
}

static void on_upstream_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (c->hold) {
        /* "delay": keep the answer until the timer fires */
        if (nread < 0) {
            c->held_eof = true;
        } else {
            char *nh = realloc(c->held, c->held_len + (size_t)nread);
            if (!nh) {
                free(b->base);
                return close_conn(c);
            }
            memcpy(nh + c->held_len, b->base, (size_t)nread);
            c->held = nh;
            c->held_len += (size_t)nread;
        }
        free(b->base);
        return;
    }
    if (nread < 0) {
        free(b->base);
        return finish_via(c, &c->client);
    }
    deliver(c, b->base, (size_t)nread);
    free(b->base);
}

static void on_connected(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing) return;
    if (status < 0 && c->hold) {
        c->held_eof = true;
        return;
    }
    if (status < 0) return close_conn(c);
    c->upstream_ready = true;
    if (c->pending_len) send_bytes(c, &c->upstream, c->pending, c->pending_len);
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    if (c->send_left == 0) return finish_via(c, &c->upstream);
    uv_read_start((uv_stream_t *)&c->upstream, alloc_cb, on_upstream_read);
}

static void connect_upstream(struct conn *c)
{
    uv_tcp_init(c->px->loop, &c->upstream);
    c->upstream.data = c;
    c->open_handles++;
    c->connect_req.data = c;
    if (uv_tcp_connect(&c->connect_req, &c->upstream, (const struct sockaddr *)&c->px->target,
                       on_connected) < 0)
        close_conn(c);
}

static void after_delay(uv_timer_t *t)
{
    struct conn *c = t->data;
    c->hold = false;
    if (c->held_len) deliver(c, c->held, c->held_len);
    free(c->held);
    c->held = NULL;
    c->held_len = 0;
    if (c->held_eof) finish_via(c, &c->client);
}

static enum fault pick_fault(struct proxy *px)
{
    if (px->always != F_NONE) return px->always;
    if (px->storm_ms) {
        uint64_t now = uv_now(px->loop);
        if (px->storm_start == 0) px->storm_start = now ? now : 1;
        if (now - px->storm_start >= px->storm_ms) return F_NONE; /* recovered */
    }
    if (next_rand(px) % 100 >= px->rate || px->enabled == 0) return F_NONE;
    for (;;) {
        enum fault f = (enum fault)(1 + next_rand(px) % (F_COUNT - 1));
        if (px->enabled & (1u << f)) return f;
    }
}

/* The request headers are complete: decide its fate. */
static void start_request(struct conn *c, size_t end)
{
    struct proxy *px = c->px;
    uint64_t cl = header_u64(c->head, end, "Content-Length");
    size_t extra = c->head_len - end;
    c->body_left = cl > extra ? cl - extra : 0;
    c->fault = pick_fault(px);
    px->requests++;
    if (c->fault != F_NONE) px->faults++;
    write_stats(px);
    if (px->log) {
        fwrite(c->head, 1, end, px->log);
        fflush(px->log);
    }
    switch (c->fault) {
    case F_DROP:
        return close_conn(c);
    case F_500:
    case F_503:
        /* A client that waits for "100 Continue" sends no body before an answer. */
        if (header_has(c->head, end, "Expect", "100-continue")) c->body_left = 0;
        if (c->body_left == 0) answer_error(c);
        return; /* else answered once the body is swallowed */
    case F_CUT:
        /* Half the body goes up, then the connection breaks: whatever the server answers to
         * half a request (a 400, at its own pace) never reaches the client, as when a network
         * fails mid-upload, so the client sees a broken transfer every time. */
        if (cl > 1) {
            c->send_left = end + cl / 2;
            c->recv_left = 0;
        }
        break;
    default:
        break;
    }
    size_t nlen = 0;
    char *head = rewrite_head(c->head, end, &nlen);
    if (!head) return close_conn(c);
    if (c->fault == F_DELAY) {
        c->hold = true;
        uv_timer_init(px->loop, &c->timer);
        c->timer.data = c;
        c->open_handles++;
        uv_timer_start(&c->timer, after_delay, px->delay_ms, 0);
    }
    connect_upstream(c);
    if (c->send_left != UINT64_MAX) c->send_left += nlen - end; /* the rewrite changed sizes */
    forward_up(c, head, nlen);
    free(head);
    forward_up(c, c->head + end, extra);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (nread < 0) {
        free(b->base);
        return close_conn(c);
    }
    size_t n = (size_t)nread;
    if (!c->head_done) {
        char *nh = realloc(c->head, c->head_len + n);
        if (!nh || c->head_len + n > HEAD_MAX) {
            free(b->base);
            return close_conn(c);
        }
        memcpy(nh + c->head_len, b->base, n);
        c->head = nh;
        c->head_len += n;
        free(b->base);
        size_t end = head_end(c->head, c->head_len);
        if (end == 0) return;
        c->head_done = true;
        return start_request(c, end);
    }
    if (c->fault == F_500 || c->fault == F_503) {
        bool was_left = c->body_left > 0;
        c->body_left = n >= c->body_left ? 0 : c->body_left - n;
        if (was_left && c->body_left == 0) answer_error(c);
    } else {
        forward_up(c, b->base, n);
    }
    free(b->base);
}

static void on_accept(uv_stream_t *server, int status)
{
    struct proxy *px = server->data;
    if (status < 0) return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->px = px;
    c->send_left = c->recv_left = UINT64_MAX;
    uv_tcp_init(px->loop, &c->client);
    c->client.data = c;
    c->open_handles = 1;
    if (uv_accept(server, (uv_stream_t *)&c->client) < 0) return close_conn(c);
    uv_read_start((uv_stream_t *)&c->client, alloc_cb, on_client_read);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    uv_stop(sig->loop);
}

static enum fault fault_by_name(const char *s, size_t n)
{
    for (int f = 1; f < F_COUNT; f++)
        if (strlen(fault_names[f]) == n && strncmp(fault_names[f], s, n) == 0) return (enum fault)f;
    return F_NONE;
}

static int usage(void)
{
    fprintf(stderr, "usage: pv_faultproxy --target IP:PORT [--listen PORT] [--rate PERCENT] "
                    "[--faults drop,delay,500,503,cut] [--delay-ms N] [--always FAULT] "
                    "[--storm-ms N] [--seed N] [--stats FILE] [--log FILE]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct proxy px = {.rate = 0, .delay_ms = 2000, .enabled = ~0u};
    const char *target = NULL;
    int port = 0;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)uv_os_getpid() << 32);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        i++;
        if (strcmp(a, "--target") == 0) {
            target = v;
        } else if (strcmp(a, "--listen") == 0) {
            port = atoi(v);
        } else if (strcmp(a, "--rate") == 0) {
            px.rate = (unsigned)atoi(v);
        } else if (strcmp(a, "--delay-ms") == 0) {
            px.delay_ms = (unsigned)atoi(v);
        } else if (strcmp(a, "--storm-ms") == 0) {
            px.storm_ms = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--seed") == 0) {
            seed = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--stats") == 0) {
            px.stats_path = v;
        } else if (strcmp(a, "--log") == 0) {
            px.log = fopen(v, "a");
            if (!px.log) return usage();
        } else if (strcmp(a, "--always") == 0) {
            px.always = fault_by_name(v, strlen(v));
            if (px.always == F_NONE) return usage();
        } else if (strcmp(a, "--faults") == 0) {
            px.enabled = 0;
            for (const char *p = v; *p;) {
                size_t n = strcspn(p, ",");
                enum fault f = fault_by_name(p, n);
                if (f == F_NONE) return usage();
                px.enabled |= 1u << f;
                p += n + (p[n] == ',');
            }
        } else {
            return usage();
        }
    }
    const char *colon = target ? strrchr(target, ':') : NULL;
    if (!colon) return usage();
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - target), target);
    if (uv_ip4_addr(host, atoi(colon + 1), &px.target) < 0) return usage();
    /* A client that gives up closes its socket; writing to it must not kill the proxy. */
    signal(SIGPIPE, SIG_IGN);
    px.rng = seed ? seed : 1;
    px.loop = uv_default_loop();
    write_stats(&px);

    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(px.loop, &px.listener);
    px.listener.data = &px;
    int rc = uv_tcp_bind(&px.listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&px.listener, 128, on_accept);
    if (rc < 0) {
        fprintf(stderr, "pv_faultproxy: listening on 127.0.0.1:%d: %s\n", port, uv_strerror(rc));
        return 1;
    }
    struct sockaddr_in bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&px.listener, (struct sockaddr *)&bound, &blen);
    printf("listening 127.0.0.1:%d\n", ntohs(bound.sin_port));
    fflush(stdout);

    uv_signal_init(px.loop, &px.sigterm);
    uv_signal_start(&px.sigterm, on_signal, SIGTERM);
    uv_signal_init(px.loop, &px.sigint);
    uv_signal_start(&px.sigint, on_signal, SIGINT);
    uv_run(px.loop, UV_RUN_DEFAULT);
    write_stats(&px);
    return 0;
}
