/* http.h - the HTTP requests of the object-store backends (Azure Blob Storage; the S3 backend's
 * own copy of this machinery can move here): a pool of libcurl handles that keep their
 * connections, uploads from memory or from a file read with pread(2), answers into a buffer,
 * and retries with exponential backoff and jitter of what may pass (connection failures, resets,
 * answers cut short, and what the backend's `failed` callback calls passing).
 * cred_http.c runs the credentials endpoints' exchanges through it too (POST, a total timeout,
 * every answer a result). Internal to backend/. */
#ifndef PV_BACKEND_HTTP_H
#define PV_BACKEND_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/buf.h"
#include "base/err.h"

/* Copied by http_new; strings may be freed after. */
struct http_settings {
    const char *cacert; /* a PEM file of CA certificates; NULL: the system's */
    bool insecure_tls;
    long retries;                            /* after a failed attempt */
    long retry_delay_ms, retry_max_delay_ms; /* first backoff and its cap */
    long throttle_ms; /* how long answers that ask to slow down are retried beyond `retries` */
    long connect_timeout_s, stall_timeout_s;
};

/* The retry rule, apart from the requests so that it can be tested alone. */
struct http_retry {
    long retries;      /* retries after a failed attempt, whatever failed */
    long delay_ms;     /* the first backoff's upper bound */
    long max_delay_ms; /* the cap on any one backoff */
    long throttle_ms;  /* how long throttling answers are retried beyond `retries` */
};

/* Whether a request whose attempt `attempt` (1 for the first) failed in a way that may pass
 * should be tried again, `elapsed_ms` after its first attempt began; `throttled` says the server
 * asked to slow down. When it should, *wait_ms is the wait before the next attempt: exponential
 * backoff with full jitter (AWS's rule, aws-sdk-go-v2 aws/retry/jitter_backoff.go), a uniform
 * draw from [0, min(max_delay_ms, delay_ms * 2^(attempt-1))) taken from `rnd` (32 random bits),
 * and never past the end of the throttle time when only that time allows the retry. Pure:
 * thread-safe, no I/O. */
bool http_retry_next(const struct http_retry *p, int attempt, long elapsed_ms, bool throttled,
                     uint32_t rnd, long *wait_ms);

struct http;

/* The most bytes kept of a failed answer's body (the backend parses its error document). */
#define HTTP_ERR_BODY_MAX (64u << 10)

struct http_req {
    const char *method; /* GET, PUT, POST (body from memory only), HEAD or DELETE */
    const char *url;
    const void *body; /* PUT from memory, or when NULL ... */
    int body_fd;      /* ... bytes [body_off, body_off+body_len) of this file, read with pread */
    uint64_t body_off, body_len;
    const char *range; /* CURLOPT_RANGE ("a-b", "a-") or NULL */
    struct buf *out;   /* a successful answer's body is appended here; NULL drops it */
    uint64_t out_max;  /* most bytes a 206 answer (any, with all_answers) may bring; 0: no limit */
    /* A 2xx answer other than to DELETE must announce its length and bring all of it. */
    bool whole;
    bool no_retry;  /* one attempt only, whatever its outcome */
    long timeout_s; /* each attempt's whole time, connect included; 0: only the stall timeout */
    /* Every answer is a result, whatever its status: its body goes to out (at most out_max
     * bytes when out_max is set; more fails the attempt with CURLE_WRITE_ERROR), and
     * http_request returns 0 when the last attempt brought an answer. */
    bool all_answers;
    /* Called before every attempt, on a handle reset to its defaults, to set the request's
     * headers (appended to *hdrs, which http frees) and options (signing). Non-zero fails the
     * request with what it put in e. */
    int (*prepare)(void *ctx, CURL *h, const struct http_req *r, struct curl_slist **hdrs,
                   struct err *e);
    /* Called after an answer that is not 2xx (status and err_body set): whether to try again;
     * it sets r->throttled when the answer asks the client to slow down (without it: 503, 429). */
    bool (*failed)(void *ctx, struct http_req *r);
    void *ctx;
    /* A response header whose value is kept in header_value (e.g. "x-ms-error-code"), or NULL. */
    const char *keep_header;
    /* Results of the last attempt. */
    long status;
    uint64_t length;     /* Content-Length, for HEAD */
    struct buf err_body; /* a failed answer's body (up to HTTP_ERR_BODY_MAX); freed by http */
    char header_value[128];
    CURLcode cc;                    /* the transfer's result; CURLE_OK when an answer came */
    char curl_msg[CURL_ERROR_SIZE]; /* curl's words about a failed transfer, or ours */
    int attempts;
    long elapsed_ms;     /* from the first attempt's start to the last one's end */
    bool throttled;      /* the last answer asked the client to slow down */
    bool prepare_failed; /* the failure is prepare's, in e */
};

/* A client with its own handle pool and shared DNS/TLS-session cache. Fails only when out of
 * memory or when libcurl cannot start. Free with http_free (NULL is fine). */
int http_new(const struct http_settings *s, struct http **out, struct err *e);
void http_free(struct http *c);

/* Runs r, retrying what may pass. Returns 0 on a 2xx answer; else -1 with r->cc, r->status
 * and r->header_value describing the last attempt (the caller words the error), or, with
 * r->prepare_failed, prepare's code with e set. r->out holds only a successful
 * answer's body. Thread-safe: any number of threads may run requests on one client. r->err_body
 * is released before returning. */
int http_request(struct http *c, struct http_req *r, struct err *e);

/* Whether an HTTP status is one that passes with time: 408, 429, 500, 502, 503, 504. */
bool http_status_retryable(long status);

/* "curl's reason: detail" of a failed transfer (r->cc != CURLE_OK) into buf. */
void http_describe_transfer(const struct http_req *r, char *buf, size_t cap);

/* A listing's relay to backend_list's callback: keys under the backend's own `prefix` become
 * object names; other keys and "folder/" placeholders made by consoles are skipped. */
struct http_list {
    const char *prefix; /* "" or "some/prefix/" */
    backend_list_cb cb;
    void *ctx;
    bool stopped; /* cb asked to stop */
};
/* The parsers' entry callback (s3_xml, azure_xml); `ud` is a struct http_list. */
int http_list_entry(void *ud, const char *key, uint64_t size);

/* The bytes [offset, offset+len) of object `name` in `where` (len 0: to its end) that a ranged
 * GET answered with `status` appended to `out` from `start`: keeps the part asked for when the
 * server ignored the range and sent everything (200), and checks that all of it came. Returns
 * 0, or ERR_FAIL naming the object's size (out->len is then `start` again). */
int http_range_fit(struct buf *out, size_t start, long status, uint64_t offset, uint64_t len,
                   const char *name, const char *where, struct err *e);
/* A 416 answer to such a GET, the object being `size` bytes: 0 when only its empty rest was
 * asked for, else ERR_FAIL. */
int http_range_416(uint64_t size, uint64_t offset, uint64_t len, const char *name,
                   const char *where, struct err *e);

#endif
