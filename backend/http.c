/* http.c - pooled, retried HTTP requests for the object-store backends; see http.h. */
#include "backend/http.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* curl's receive buffer for answers with a body (its default of 16 KiB costs a poll and a recv
 * per 16 KiB), and its send buffer for uploads (default 64 KiB), as in backend_s3.c. */
#define RECV_BUFFER (256L << 10)
#define SEND_BUFFER (512L << 10)
/* Room reserved up front for an answer of announced length. */
#define PREALLOC_MAX ((uint64_t)2 << 30)

struct http {
    char *cacert;
    bool insecure;
    struct http_retry retry;
    long connect_timeout_s, stall_timeout_s;
    CURLSH *share; /* DNS answers and TLS sessions */
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_mu;
    CURL **pool; /* idle handles, each with its live connection */
    size_t npool, pool_cap;
};

struct xfer {
    struct http_req *r;
    CURL *h;
    size_t out_start;
    long status; /* known once the body starts */
    bool too_much, oom;
    bool headers_done; /* the blank line that ends the last header block was seen */
    uint64_t up_pos;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    struct http_req *r = x->r;
    size_t n = size * nmemb;
    if (x->status == 0) {
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
        curl_off_t cl = -1;
        curl_easy_getinfo(x->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        /* Growing by doubling would copy a large object several times. */
        if (r->out && x->status / 100 == 2 && cl > 0 && (uint64_t)cl <= PREALLOC_MAX)
            (void)buf_reserve(r->out, (size_t)cl);
    }
    if (x->status / 100 != 2 && !r->all_answers) {
        size_t room = HTTP_ERR_BODY_MAX - r->err_body.len;
        if (buf_append(&r->err_body, p, n < room ? n : room) < 0) x->oom = true;
        return x->oom ? 0 : n;
    }
    if (!r->out) return n;
    if (r->out_max && (x->status == 206 || r->all_answers) &&
        r->out->len - x->out_start + n > r->out_max) {
        x->too_much = true;
        return 0;
    }
    if (buf_append(r->out, p, n) < 0) {
        x->oom = true;
        return 0;
    }
    return n;
}

/* Notes whether the header block really ended (curl accepts headers cut short by a closed
 * connection), and keeps the value of the header the backend asked for. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    struct http_req *r = x->r;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        x->headers_done = false; /* after 100 Continue */
        r->header_value[0] = '\0';
    }
    if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n'))
        x->headers_done = true;
    size_t kl = r->keep_header ? strlen(r->keep_header) : 0;
    if (kl && n > kl && p[kl] == ':' && strncasecmp(p, r->keep_header, kl) == 0) {
        const char *v = p + kl + 1, *end = p + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        size_t i = 0;
        for (; v < end && i + 1 < sizeof r->header_value; v++, i++)
            r->header_value[i] = (unsigned char)*v < 0x20 ? '?' : *v;
        r->header_value[i] = '\0';
    }
    return n;
}

static size_t on_upload(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    const struct http_req *r = x->r;
    uint64_t left = r->body_len - x->up_pos;
    size_t n = size * nmemb;
    if (n > left) n = (size_t)left;
    if (r->body) {
        memcpy(p, (const uint8_t *)r->body + x->up_pos, n);
    } else if (n > 0) {
        ssize_t got;
        do
            got = pread(r->body_fd, p, n, (off_t)(r->body_off + x->up_pos));
        while (got < 0 && errno == EINTR);
        /* A file that shrank or cannot be read must not become a short object. */
        if (got <= 0) return CURL_READFUNC_ABORT;
        n = (size_t)got;
    }
    x->up_pos += n;
    return n;
}

/* curl rewinds the upload when it must send the body again on a new connection. */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
    struct xfer *x = ud;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > x->r->body_len)
        return CURL_SEEKFUNC_FAIL;
    x->up_pos = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static void set_common(struct http *c, CURL *h, struct http_req *r, struct xfer *x)
{
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->curl_msg);
    curl_easy_setopt(h, CURLOPT_URL, r->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_SHARE, c->share);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "podvault/" PV_VERSION);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->connect_timeout_s);
    /* Less than a byte a second for the stall time: the server is hung, give up on it. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->stall_timeout_s);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    if (c->cacert) curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
    if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "DELETE") == 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(h, CURLOPT_READDATA, x);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, x);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
        if (r->body_len > SEND_BUFFER) curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, SEND_BUFFER);
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
    }
    if (r->timeout_s > 0) curl_easy_setopt(h, CURLOPT_TIMEOUT, r->timeout_s);
    if (r->range) curl_easy_setopt(h, CURLOPT_RANGE, r->range);
    if (r->out) curl_easy_setopt(h, CURLOPT_BUFFERSIZE, RECV_BUFFER);
}

/* One attempt: r->cc, r->status, r->length and r->err_body describe its answer. */
static int attempt(struct http *c, CURL *h, struct http_req *r, struct err *e)
{
    struct xfer x = {.r = r, .h = h, .out_start = r->out ? r->out->len : 0};
    struct curl_slist *hdrs = NULL;
    curl_easy_reset(h);
    r->curl_msg[0] = '\0';
    r->header_value[0] = '\0';
    r->status = 0;
    r->length = 0;
    buf_reset(&r->err_body);
    int rc = r->prepare ? r->prepare(r->ctx, h, r, &hdrs, e) : 0;
    if (rc != 0) {
        curl_slist_free_all(hdrs);
        return rc;
    }
    set_common(c, h, r, &x);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    r->cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_off_t cl = -1;
    if (curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0)
        r->length = (uint64_t)cl;
    if (x.too_much)
        snprintf(r->curl_msg, CURL_ERROR_SIZE, "the server sent more than was asked for");
    if (x.oom) r->cc = CURLE_OUT_OF_MEMORY;
    /* An object's body must come whole, with its length announced: never take a cut-off
     * answer for the object. Both cases are worth another attempt. */
    bool cut = r->cc == CURLE_OK && !x.headers_done;
    if (r->cc == CURLE_OK && r->whole && r->status / 100 == 2 && strcmp(r->method, "DELETE") != 0 &&
        (cl < 0 || (r->out && r->out->len - x.out_start != (uint64_t)cl)))
        cut = true;
    if (cut) {
        r->cc = CURLE_PARTIAL_FILE;
        snprintf(r->curl_msg, CURL_ERROR_SIZE, "the answer was cut short");
    }
    curl_slist_free_all(hdrs);
    return 0;
}

static bool retryable_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

bool http_status_retryable(long st)
{
    /* 500, 502, 503 and 504 pass with time; 501 or 505 would not. */
    return st == 500 || st == 502 || st == 503 || st == 504 || st == 429 || st == 408;
}

bool http_retry_next(const struct http_retry *p, int attempt, long elapsed_ms, bool throttled,
                     uint32_t rnd, long *wait_ms)
{
    bool by_count = attempt <= p->retries;
    long left = p->throttle_ms - elapsed_ms;
    if (!by_count && !(throttled && left > 0)) return false;
    int shift = attempt - 1 < 20 ? attempt - 1 : 20;
    uint64_t d = (uint64_t)p->delay_ms << shift;
    if (d > (uint64_t)p->max_delay_ms) d = (uint64_t)p->max_delay_ms;
    long w = (long)((d * rnd) >> 32);
    if (!by_count && w > left) w = left;
    *wait_ms = w;
    return true;
}

static long elapsed_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static CURL *pool_get(struct http *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool > 0) h = c->pool[--c->npool];
    pthread_mutex_unlock(&c->pool_mu);
    return h ? h : curl_easy_init();
}

static void pool_put(struct http *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool == c->pool_cap) {
        size_t cap = c->pool_cap ? 2 * c->pool_cap : 8;
        CURL **p = realloc(c->pool, cap * sizeof *p);
        if (p) {
            c->pool = p;
            c->pool_cap = cap;
        }
    }
    if (c->npool < c->pool_cap) {
        c->pool[c->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (h) curl_easy_cleanup(h);
}

int http_request(struct http *c, struct http_req *r, struct err *e)
{
    CURL *h = pool_get(c);
    if (!h) return err_set(e, ERR_FAIL, "%s %s: out of memory", r->method, r->url);
    size_t out_start = r->out ? r->out->len : 0;
    int rc = -1;
    r->prepare_failed = false;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (r->attempts = 1;; r->attempts++) {
        if (r->out) r->out->len = out_start;
        int prc = attempt(c, h, r, e);
        if (prc != 0) {
            r->prepare_failed = true;
            rc = prc;
            break;
        }
        if (r->cc == CURLE_OK && r->status / 100 == 2) {
            rc = 0;
            break;
        }
        r->throttled = r->cc == CURLE_OK && (r->status == 503 || r->status == 429);
        bool again = r->cc != CURLE_OK
                         ? retryable_curl(r->cc)
                         : (r->failed ? r->failed(r->ctx, r) : http_status_retryable(r->status));
        long wait = 0;
        r->elapsed_ms = elapsed_since(&t0);
        if (!again || r->no_retry ||
            !http_retry_next(&c->retry, r->attempts, r->elapsed_ms, r->throttled,
                             randombytes_random(), &wait))
            break;
        sleep_ms(wait);
    }
    r->elapsed_ms = elapsed_since(&t0);
    if (rc != 0 && r->all_answers && !r->prepare_failed && r->cc == CURLE_OK) rc = 0;
    if (rc != 0 && r->out) r->out->len = out_start;
    buf_free(&r->err_body);
    pool_put(c, h);
    return rc;
}

void http_describe_transfer(const struct http_req *r, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s%s", curl_easy_strerror(r->cc), r->curl_msg[0] ? ": " : "",
             r->curl_msg);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
    struct http *c = ud;
    pthread_mutex_lock(&c->share_mu[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    struct http *c = ud;
    pthread_mutex_unlock(&c->share_mu[data]);
}

static CURLcode global_rc = CURLE_FAILED_INIT;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int http_new(const struct http_settings *s, struct http **out, struct err *e)
{
    *out = NULL;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return err_set(e, ERR_FAIL, "libcurl failed to initialise: %s",
                       curl_easy_strerror(global_rc));
    if (sodium_init() < 0) return err_set(e, ERR_FAIL, "libsodium failed to initialise");
    struct http *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ERR_FAIL, "out of memory");
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_mu[i], NULL);
    pthread_mutex_init(&c->pool_mu, NULL);
    c->insecure = s->insecure_tls;
    c->retry = (struct http_retry){.retries = s->retries,
                                   .delay_ms = s->retry_delay_ms,
                                   .max_delay_ms = s->retry_max_delay_ms,
                                   .throttle_ms = s->throttle_ms};
    c->connect_timeout_s = s->connect_timeout_s;
    c->stall_timeout_s = s->stall_timeout_s;
    c->share = curl_share_init();
    if (!c->share || (s->cacert && *s->cacert && !(c->cacert = strdup(s->cacert)))) {
        http_free(c);
        return err_set(e, ERR_FAIL, "out of memory");
    }
    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *out = c;
    return 0;
}

void http_free(struct http *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->npool; i++)
        curl_easy_cleanup(c->pool[i]);
    free(c->pool);
    if (c->share) curl_share_cleanup(c->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_mu[i]);
    pthread_mutex_destroy(&c->pool_mu);
    free(c->cacert);
    free(c);
}

static int shorter(const char *name, const char *where, uint64_t size, uint64_t offset,
                   uint64_t len, struct err *e)
{
    return err_set(e, ERR_FAIL,
                   "loading %s from %s: the object is %llu bytes, shorter than %llu bytes at %llu",
                   name, where, (unsigned long long)size, (unsigned long long)len,
                   (unsigned long long)offset);
}

int http_range_fit(struct buf *out, size_t start, long status, uint64_t offset, uint64_t len,
                   const char *name, const char *where, struct err *e)
{
    size_t got = out->len - start;
    bool ranged = len || offset;
    if (ranged && status == 200) {
        if (offset > got || (len && len > got - offset)) {
            out->len = start;
            return shorter(name, where, got, offset, len, e);
        }
        size_t keep = len ? (size_t)len : got - (size_t)offset;
        memmove(out->data + start, out->data + start + offset, keep);
        out->len = start + keep;
    } else if (len && got != len) {
        out->len = start;
        return shorter(name, where, offset + got, offset, len, e);
    }
    return 0;
}

int http_range_416(uint64_t size, uint64_t offset, uint64_t len, const char *name,
                   const char *where, struct err *e)
{
    if (len == 0 && offset == size) {
        err_clear(e);
        return 0;
    }
    return shorter(name, where, size, offset, len, e);
}

int http_list_entry(void *ud, const char *key, uint64_t size)
{
    struct http_list *l = ud;
    size_t plen = strlen(l->prefix);
    if (strncmp(key, l->prefix, plen) != 0) return 0;
    const char *name = key + plen;
    if (!*name || name[strlen(name) - 1] == '/') return 0;
    int rc = l->cb(l->ctx, name, size);
    l->stopped = rc != 0;
    return rc;
}
