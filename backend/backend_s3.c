/* backend_s3.c - the backend that keeps objects in an S3 bucket (AWS, Ceph RGW, MinIO...).
 *
 * libcurl signs every request (SigV4); we add the x-amz-content-sha256 header it does not, so
 * the server checks each uploaded body against its hash and never stores a damaged object.
 * Requests that fail in a way that can pass (5xx, 429, SlowDown, timeouts, resets) are retried
 * with exponential backoff and jitter; everything else fails at once with the server's code.
 * Several threads may use one backend: each request borrows a curl handle from a pool, and a
 * handle keeps its connection open for the next request that borrows it. */
#include "backend/backend_s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/fdio.h"
#include "backend/aws_creds.h"
#include "backend/backend.h"
#include "backend/s3_xml.h"

/* SHA-256 of nothing: the payload hash of requests without a body. */
#define SHA256_HEX_LEN 64
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ERR_BODY_MAX (64u << 10)
/* curl's receive buffer for answers with a body. Its default, 16 KiB, costs a poll and a recv
 * per 16 KiB: 130,000 of each to restore 2 GB, against 14,000 with this. */
#define RECV_BUFFER (256L << 10)
/* curl's send buffer for uploads, for the same reason: its default, 64 KiB, costs a read and a
 * send per 64 KiB of each pack. */
#define SEND_BUFFER (512L << 10)
#define LIST_BODY_MAX (16u << 20)
/* Room reserved up front for an answer of announced length; packs are at most 1 GiB. */
#define PREALLOC_MAX ((uint64_t)2 << 30)

struct s3 {
    struct backend b;
    /* Immutable after open. */
    char *bucket_url;  /* for bucket-level requests, before "?query" */
    char *object_base; /* the URL of an object is this followed by its encoded key */
    char *bucket;
    char *prefix; /* "" or "some/prefix/" */
    char *region;
    bool region_given;       /* else found out from the bucket (discover_region) */
    char *sigv4;             /* "aws:amz:<region>:s3" for CURLOPT_AWS_SIGV4 */
    struct aws_creds *creds; /* thread-safe itself */
    char *cacert;
    bool insecure;
    long retries, delay_ms, max_delay_ms, connect_timeout_s, stall_timeout_s, list_max;
    /* Shared by the threads, under locks. */
    CURLSH *share; /* DNS answers and TLS sessions */
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_mu;
    CURL **pool; /* idle handles, each with its live connection */
    size_t npool, pool_cap;
};

static struct s3 *as_s3(struct backend *b)
{
    return (struct s3 *)b;
}

/* ---- settings ---- */

static int set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
    return *dst ? 0 : -1;
}

/* Percent-encodes everything but RFC 3986 unreserved characters (and '/' when asked), which is
 * the spelling SigV4 expects in canonical URIs and query strings. */
static char *uri_encode(const char *s, bool keep_slash)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            *o++ = (char)c;
        } else {
            sprintf(o, "%%%02X", c);
            o += 3;
        }
    }
    *o = '\0';
    return out;
}

static bool bucket_name_ok(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 255) return false;
    for (; *b; b++)
        if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') || (*b >= '0' && *b <= '9') ||
              *b == '.' || *b == '-' || *b == '_'))
            return false;
    return true;
}

static bool host_ok(const char *h)
{
    if (!*h) return false;
    for (; *h; h++)
        if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') || (*h >= '0' && *h <= '9') ||
              *h == '.' || *h == '-' || *h == ':' || *h == '[' || *h == ']'))
            return false;
    return true;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

#define LOCATION_FORM "expected s3:http[s]://host[:port]/bucket[/prefix]"

/* An endpoint "http[s]://host[:port][/]" in place of the location's own (AWS_ENDPOINT_URL_S3,
 * as the AWS SDKs read it: aws-sdk-go-v2 config/env_config.go). */
static int endpoint_override(const char *ep, const char **scheme, char **host, struct err *e)
{
    const char *h;
    if (strncmp(ep, "http://", 7) == 0) {
        *scheme = "http";
        h = ep + 7;
    } else if (strncmp(ep, "https://", 8) == 0) {
        *scheme = "https";
        h = ep + 8;
    } else {
        return err_set(e, ERR_FAIL,
                       "AWS_ENDPOINT_URL_S3=\"%.100s\": expected http[s]://host[:port]", ep);
    }
    size_t n = strcspn(h, "/");
    if (n == 0 || (h[n] && h[n + 1]))
        return err_set(
            e, ERR_FAIL,
            "AWS_ENDPOINT_URL_S3=\"%.100s\": expected http[s]://host[:port] without a path", ep);
    char *dup = strndup(h, n);
    if (!dup) return err_set(e, ERR_FAIL, "out of memory");
    free(*host);
    *host = dup;
    return 0;
}

/* Splits "s3:[scheme://]host[:port]/bucket[/prefix]" and builds the URLs; `endpoint` (NULL
 * when unset) replaces the scheme and host. */
static int parse_location(struct s3 *s, const char *loc, enum backend_addressing addressing,
                          const char *endpoint, struct err *e)
{
    const char *rest = loc + 3, *scheme = "https";
    if (strncmp(rest, "http://", 7) == 0) {
        scheme = "http";
        rest += 7;
    } else if (strncmp(rest, "https://", 8) == 0) {
        rest += 8;
    } else if (strstr(rest, "://")) {
        return err_set(e, ERR_FAIL, "%s: only http and https are supported", loc);
    }
    const char *slash = strchr(rest, '/');
    if (!slash) return err_set(e, ERR_FAIL, "%s: no bucket (" LOCATION_FORM ")", loc);
    char *host = strndup(rest, (size_t)(slash - rest));
    const char *bstart = slash + 1, *bend = strchr(bstart, '/');
    if (!bend) bend = bstart + strlen(bstart);
    s->bucket = strndup(bstart, (size_t)(bend - bstart));
    char *prefix = strdup(*bend ? bend + 1 : "");
    int rc = 0;
    if (!host || !s->bucket || !prefix) {
        rc = err_set(e, ERR_FAIL, "out of memory");
        goto out;
    }
    if (endpoint && *endpoint && (rc = endpoint_override(endpoint, &scheme, &host, e)) < 0)
        goto out;
    if (!host_ok(host)) {
        rc = err_set(e, ERR_FAIL, "%s: bad host \"%s\" (" LOCATION_FORM ")", loc, host);
        goto out;
    }
    if (!bucket_name_ok(s->bucket)) {
        rc = err_set(e, ERR_FAIL, "%s: bad bucket name \"%s\" (3 or more of a-z 0-9 . - _)", loc,
                     s->bucket);
        goto out;
    }
    size_t plen = strlen(prefix);
    while (plen > 0 && prefix[plen - 1] == '/')
        prefix[--plen] = '\0';
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)prefix[i] < 0x20 || prefix[i] == 0x7f) {
            rc = err_set(e, ERR_FAIL, "%s: control characters in the prefix", loc);
            goto out;
        }
    if (asprintf(&s->prefix, "%s%s", prefix, plen ? "/" : "") < 0) {
        s->prefix = NULL;
        rc = err_set(e, ERR_FAIL, "out of memory");
        goto out;
    }
    bool has_port = host[0] == '[' ? strstr(host, "]:") != NULL : strchr(host, ':') != NULL;
    bool virtual_host = addressing != BACKEND_ADDR_AUTO ? addressing == BACKEND_ADDR_VIRTUAL
                                                        : ends_with(host, ".amazonaws.com") &&
                                                              !has_port && !strchr(s->bucket, '.');
    int n;
    if (virtual_host) {
        n = asprintf(&s->bucket_url, "%s://%s.%s/", scheme, s->bucket, host);
        s->object_base = n < 0 ? NULL : strdup(s->bucket_url);
    } else {
        n = asprintf(&s->bucket_url, "%s://%s/%s", scheme, host, s->bucket);
        if (n >= 0 && asprintf(&s->object_base, "%s/", s->bucket_url) < 0) s->object_base = NULL;
    }
    if (n < 0) s->bucket_url = NULL;
    if (!s->bucket_url || !s->object_base) rc = err_set(e, ERR_FAIL, "out of memory");
out:
    free(host);
    free(prefix);
    return rc;
}

/* The numbers were checked by backend_open. */
static int set_region(struct s3 *s, const char *region, struct err *e)
{
    size_t rn = strlen(region);
    if (rn == 0 || rn > 64 || strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != rn)
        return err_set(e, ERR_FAIL, "bad S3 region \"%.64s\"", region);
    char *sig = NULL;
    if (asprintf(&sig, "aws:amz:%s:s3", region) < 0 || set_str(&s->region, region) < 0) {
        free(sig);
        return err_set(e, ERR_FAIL, "out of memory");
    }
    free(s->sigv4);
    s->sigv4 = sig;
    return 0;
}

static int load_settings(struct s3 *s, const struct backend_opts *o, struct err *e)
{
    s->region_given = o->region && *o->region;
    const char *region = s->region_given ? o->region : "us-east-1";
    if (set_region(s, region, e) < 0) return e->code;
    if (o->cacert && *o->cacert && set_str(&s->cacert, o->cacert) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    s->insecure = o->insecure_tls;
    s->retries = o->retries;
    s->delay_ms = o->retry_delay_ms;
    s->max_delay_ms = o->retry_max_delay_ms;
    s->connect_timeout_s = o->connect_timeout_s;
    s->stall_timeout_s = o->stall_timeout_s;
    s->list_max = o->list_max;
    s->b.save_slots = (unsigned)o->uploads;
    s->b.load_slots = (unsigned)o->downloads;
    return 0;
}

/* ---- requests ---- */

struct req {
    const char *method; /* GET, PUT, HEAD or DELETE */
    const char *what;   /* the object name, or the bucket, for messages */
    bool object;        /* a 404 without another code means the object is absent */
    const char *url;
    const void *body; /* PUT from memory, or when NULL ... */
    int body_fd;      /* ... from this file, read with pread */
    uint64_t body_len;
    const char *body_sha256; /* hex; NULL for requests without a body */
    const char *range;       /* CURLOPT_RANGE ("a-b", "a-") or NULL */
    struct buf *out;         /* a successful answer's body is appended here; NULL drops it */
    uint64_t out_max;        /* most bytes a ranged answer may bring; 0 = no limit */
    /* results of the last attempt */
    char bucket_region[64]; /* the x-amz-bucket-region header, or "" */
    long status;
    uint64_t length; /* Content-Length, for HEAD */
    struct s3_error err;
};

struct xfer {
    struct req *r;
    CURL *h;
    size_t out_start;
    long status; /* known once the body starts */
    bool too_much, oom;
    bool headers_done; /* the blank line that ends the last header block was seen */
    struct buf errbody;
    uint64_t up_pos;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    struct req *r = x->r;
    size_t n = size * nmemb;
    if (x->status == 0) {
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
        curl_off_t cl = -1;
        curl_easy_getinfo(x->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        /* Growing by doubling would copy a large object several times. */
        if (r->out && x->status / 100 == 2 && cl > 0 && (uint64_t)cl <= PREALLOC_MAX)
            (void)buf_reserve(r->out, (size_t)cl);
    }
    if (x->status / 100 != 2) {
        size_t room = ERR_BODY_MAX - x->errbody.len;
        if (buf_append(&x->errbody, p, n < room ? n : room) < 0) x->oom = true;
        return x->oom ? 0 : n;
    }
    if (!r->out) return n;
    /* A server that ignored the Range header (200) sends the whole object; we cut it later. */
    if (r->out_max && x->status == 206 && r->out->len - x->out_start + n > r->out_max) {
        x->too_much = true;
        return 0;
    }
    if (buf_append(r->out, p, n) < 0) {
        x->oom = true;
        return 0;
    }
    return n;
}

/* curl accepts an answer whose headers were cut short by a closed connection (a HEAD then
 * "succeeds" without its Content-Length): note whether the header block really ended. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) x->headers_done = false; /* after 100 Continue */
    if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n'))
        x->headers_done = true;
    static const char name[] = "x-amz-bucket-region:";
    if (n > sizeof name && n < sizeof name + 64 && strncasecmp(p, name, sizeof name - 1) == 0) {
        size_t i = sizeof name - 1, k = 0;
        while (i < n && p[i] == ' ')
            i++;
        for (; i < n && p[i] != '\r' && p[i] != '\n'; i++)
            x->r->bucket_region[k++] = p[i];
        x->r->bucket_region[k] = '\0';
    }
    return n;
}

static size_t on_upload(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    const struct req *r = x->r;
    uint64_t left = r->body_len - x->up_pos;
    size_t n = size * nmemb;
    if (n > left) n = (size_t)left;
    if (r->body) {
        memcpy(p, (const uint8_t *)r->body + x->up_pos, n);
    } else if (n > 0) {
        ssize_t got;
        do
            got = pread(r->body_fd, p, n, (off_t)x->up_pos);
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

/* One attempt. Returns curl's result; r->status and r->err describe the answer. */
/* The headers a request adds: the payload's hash and, with temporary credentials, their session
 * token. NULL when memory is out. */
static struct curl_slist *req_headers(const struct req *r, const struct aws_cred *k)
{
    char sha_hdr[128];
    snprintf(sha_hdr, sizeof sha_hdr, "x-amz-content-sha256: %s",
             r->body_sha256 ? r->body_sha256 : EMPTY_SHA256);
    /* No "Expect:" line to turn off 100-continue: curl 7.88 would sign it as an empty header
     * that is never sent, and every upload would fail with SignatureDoesNotMatch. */
    char *token_hdr = NULL;
    if (k->token && asprintf(&token_hdr, "x-amz-security-token: %s", k->token) < 0) return NULL;
    struct curl_slist *hdrs = curl_slist_append(NULL, sha_hdr), *t = hdrs;
    if (hdrs && token_hdr && !(t = curl_slist_append(hdrs, token_hdr))) {
        curl_slist_free_all(hdrs);
        hdrs = NULL;
    }
    free(token_hdr); /* curl_slist_append copied it */
    return hdrs;
}

static CURLcode attempt(struct s3 *s, CURL *h, const struct aws_cred *k, struct req *r,
                        char *curl_msg)
{
    struct xfer x = {.r = r, .h = h, .out_start = r->out ? r->out->len : 0};
    struct curl_slist *hdrs = req_headers(r, k);
    if (!hdrs) return CURLE_OUT_OF_MEMORY;
    curl_easy_reset(h);
    curl_msg[0] = '\0';
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(h, CURLOPT_URL, r->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_SHARE, s->share);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "podvault/" PV_VERSION);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, k->access_key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, k->secret_key);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, s->connect_timeout_s);
    /* Less than a byte a second for the stall time: the server is hung, give up on it. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s->stall_timeout_s);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    if (s->cacert) curl_easy_setopt(h, CURLOPT_CAINFO, s->cacert);
    if (s->insecure) {
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
        curl_easy_setopt(h, CURLOPT_READDATA, &x);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &x);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
        if (r->body_len > SEND_BUFFER) curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, SEND_BUFFER);
    }
    if (r->range) curl_easy_setopt(h, CURLOPT_RANGE, r->range);
    if (r->out) curl_easy_setopt(h, CURLOPT_BUFFERSIZE, RECV_BUFFER);

    r->bucket_region[0] = '\0';
    CURLcode cc = curl_easy_perform(h);
    r->status = 0;
    r->length = 0;
    memset(&r->err, 0, sizeof r->err);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_off_t cl = -1;
    if (curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0)
        r->length = (uint64_t)cl;
    if (x.too_much) snprintf(curl_msg, CURL_ERROR_SIZE, "the server sent more than was asked for");
    if (x.oom) cc = CURLE_OUT_OF_MEMORY;
    /* An object's body must come whole, with its length announced: never take a cut-off
     * answer for the object. Both cases are worth another attempt. */
    bool cut = cc == CURLE_OK && !x.headers_done;
    if (cc == CURLE_OK && r->object && r->status / 100 == 2 && strcmp(r->method, "DELETE") != 0 &&
        (cl < 0 || (r->out && r->out->len - x.out_start != (uint64_t)cl)))
        cut = true;
    if (cut) {
        cc = CURLE_PARTIAL_FILE;
        snprintf(curl_msg, CURL_ERROR_SIZE, "the answer was cut short");
    }
    if (cc == CURLE_OK && r->status / 100 != 2 && x.errbody.len > 0)
        s3_xml_parse_error((const char *)x.errbody.data, x.errbody.len, &r->err);
    buf_free(&x.errbody);
    curl_slist_free_all(hdrs);
    return cc;
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

/* 500, 502, 503 and 504 pass with time; 501 or 505 would not. */
static bool retryable_status(const struct req *r)
{
    static const char *const codes[] = {"SlowDown", "RequestTimeout", "InternalError",
                                        "ServiceUnavailable"};
    long st = r->status;
    if (st == 500 || st == 502 || st == 503 || st == 504 || st == 429 || st == 408) return true;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(r->err.code, codes[i]) == 0) return true;
    return false;
}

/* Exponential backoff with jitter: half the delay fixed, half random, so that many clients
 * that failed together do not come back together. */
static void backoff(const struct s3 *s, int attempt_no)
{
    int shift = attempt_no - 1 < 20 ? attempt_no - 1 : 20;
    uint64_t d = (uint64_t)s->delay_ms << shift;
    if (d > (uint64_t)s->max_delay_ms) d = (uint64_t)s->max_delay_ms;
    uint64_t ms = d / 2 + randombytes_uniform((uint32_t)(d / 2 + 1));
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static CURL *pool_get(struct s3 *s)
{
    CURL *h = NULL;
    pthread_mutex_lock(&s->pool_mu);
    if (s->npool > 0) h = s->pool[--s->npool];
    pthread_mutex_unlock(&s->pool_mu);
    return h ? h : curl_easy_init();
}

static void pool_put(struct s3 *s, CURL *h)
{
    pthread_mutex_lock(&s->pool_mu);
    if (s->npool == s->pool_cap) {
        size_t cap = s->pool_cap ? 2 * s->pool_cap : 8;
        CURL **p = realloc(s->pool, cap * sizeof *p);
        if (p) {
            s->pool = p;
            s->pool_cap = cap;
        }
    }
    if (s->npool < s->pool_cap) {
        s->pool[s->npool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (h) curl_easy_cleanup(h);
}

/* Fills e with what went wrong with r, naming the operation and the object. */
static int request_error(struct s3 *s, const struct req *r, CURLcode cc, const char *curl_msg,
                         int attempts, struct err *e)
{
    char detail[768], tail[64] = "";
    if (attempts > 1) snprintf(tail, sizeof tail, " (gave up after %d attempts)", attempts);
    int code = ERR_FAIL;
    if (cc != CURLE_OK) {
        snprintf(detail, sizeof detail, "%s%s%s", curl_easy_strerror(cc), curl_msg[0] ? ": " : "",
                 curl_msg);
    } else {
        const char *c = r->err.code[0] ? r->err.code : "(no error code in the answer)";
        snprintf(detail, sizeof detail, "HTTP %ld %s%s%s", r->status, c,
                 r->err.message[0] ? ": " : "", r->err.message);
        if (r->object && r->status == 404 &&
            (!r->err.code[0] || strcmp(r->err.code, "NoSuchKey") == 0))
            code = ERR_NOT_FOUND;
    }
    return err_set(e, code, "S3 %s of %s in %s: %s%s", r->method, r->what, s->b.location, detail,
                   tail);
}

/* Runs a request, retrying what may pass. Returns 0 on a 2xx answer, else an error in e (with
 * r->status and r->err describing the last answer, for callers that expect some failures). */
static int request(struct s3 *s, struct req *r, struct err *e)
{
    CURL *h = pool_get(s);
    if (!h) return err_set(e, ERR_FAIL, "S3 %s of %s: out of memory", r->method, r->what);
    size_t out_start = r->out ? r->out->len : 0;
    char curl_msg[CURL_ERROR_SIZE];
    CURLcode cc;
    int n = 1;
    struct aws_cred k = {0};
    bool renewed = false;
    for (;; n++) {
        if (r->out) r->out->len = out_start;
        /* The current credentials for each attempt: temporary ones are refreshed on the way. */
        aws_cred_free(&k);
        if (aws_creds_get(s->creds, &k, e) < 0) {
            pool_put(s, h);
            return err_wrap(e, "S3 %s of %s in %s", r->method, r->what, s->b.location);
        }
        cc = attempt(s, h, &k, r, curl_msg);
        if (cc == CURLE_OK && r->status / 100 == 2) {
            pool_put(s, h);
            aws_cred_free(&k);
            return 0;
        }
        /* Credentials that expired early (a clock apart from the server's): new ones, once. */
        if (cc == CURLE_OK && !renewed && strcmp(r->err.code, "ExpiredToken") == 0) {
            renewed = true;
            aws_creds_invalidate(s->creds);
            continue;
        }
        bool again = cc != CURLE_OK ? retryable_curl(cc) : retryable_status(r);
        if (!again || n > s->retries) break;
        backoff(s, n);
    }
    if (r->out) r->out->len = out_start;
    /* HEAD answers carry no body, hence no error code: ask again with a GET of one byte, whose
     * error document says why (SignatureDoesNotMatch, AccessDenied...). */
    if (cc == CURLE_OK && strcmp(r->method, "HEAD") == 0 && r->status / 100 == 4 &&
        r->status != 404) {
        struct req probe = *r;
        probe.method = "GET";
        probe.range = "0-0";
        probe.out = NULL;
        char probe_msg[CURL_ERROR_SIZE];
        if (attempt(s, h, &k, &probe, probe_msg) == CURLE_OK && probe.status == r->status)
            r->err = probe.err;
    }
    aws_cred_free(&k);
    pool_put(s, h);
    return request_error(s, r, cc, curl_msg, n, e);
}

static char *object_url(struct s3 *s, const char *name)
{
    char *key = NULL, *enc = NULL, *url = NULL;
    if (asprintf(&key, "%s%s", s->prefix, name) < 0) return NULL;
    enc = uri_encode(key, true);
    if (enc && asprintf(&url, "%s%s", s->object_base, enc) < 0) url = NULL;
    free(key);
    free(enc);
    return url;
}

/* ---- operations ---- */

static int s3_head(struct s3 *s, const char *name, uint64_t *size, struct err *e)
{
    char *url = object_url(s, name);
    if (!url) return err_set(e, ERR_FAIL, "checking %s: out of memory", name);
    struct req r = {.method = "HEAD", .what = name, .object = true, .url = url};
    int rc = request(s, &r, e);
    if (rc == 0) *size = r.length;
    free(url);
    return rc;
}

/* Whether an object exists, by a one-byte GET: unlike HEAD its 404 says NoSuchKey or
 * NoSuchBucket, so a missing bucket is not taken for a missing object. */
static int s3_exists(struct s3 *s, const char *name, const char *url, bool *exists, struct err *e)
{
    struct req r = {.method = "GET", .what = name, .object = true, .url = url, .range = "0-0"};
    int rc = request(s, &r, e);
    *exists = rc == 0 || (rc < 0 && r.status == 416); /* 416: it exists, but is empty */
    if (*exists || rc == ERR_NOT_FOUND) {
        err_clear(e);
        return 0;
    }
    return rc;
}

/* The hex SHA-256 that SigV4 wants before an upload starts, of `len` bytes from memory
 * (`data`) or, when data is NULL, of [0, len) of the file `fd`, read in bounded pieces.
 * OpenSSL's SHA-256 uses the CPU's SHA extensions, three times libsodium's speed here. */
static int body_sha256(const void *data, int fd, uint64_t len, char hex[SHA256_HEX_LEN + 1])
{
    enum { HASH_BUF = 256 * 1024 };
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *b = data ? NULL : malloc(HASH_BUF);
    int rc = ctx && (data || b) && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -1;
    if (rc < 0) errno = ENOMEM;
    if (rc == 0 && data && EVP_DigestUpdate(ctx, data, (size_t)len) != 1) rc = -1;
    for (uint64_t off = 0; rc == 0 && !data && off < len;) {
        size_t want = len - off < HASH_BUF ? (size_t)(len - off) : HASH_BUF;
        if (fdio_pread_exact(fd, b, want, off) < 0 || EVP_DigestUpdate(ctx, b, want) != 1) rc = -1;
        off += want;
    }
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;
    if (rc == 0 && (EVP_DigestFinal_ex(ctx, h, &hlen) != 1 || hlen != SHA256_HEX_LEN / 2)) rc = -1;
    if (rc == 0) sodium_bin2hex(hex, SHA256_HEX_LEN + 1, h, hlen);
    EVP_MD_CTX_free(ctx);
    free(b);
    return rc;
}

/* PUTs `len` bytes from memory (`data`) or, when data is NULL, from the file `fd`. */
static int put(struct s3 *s, const char *name, const void *data, int fd, uint64_t len,
               bool overwrite, struct err *e)
{
    char *url = object_url(s, name);
    if (!url) return err_set(e, ERR_FAIL, "saving %s: out of memory", name);
    int rc = 0;
    /* S3 has no put-if-absent that RGW honours, so check first. Two savers of one name could
     * both pass the check; names are random IDs, so that does not happen in practice. */
    if (!overwrite) {
        bool exists = false;
        rc = s3_exists(s, name, url, &exists, e);
        if (rc == 0 && exists)
            rc = err_set(e, ERR_EXISTS, "saving %s in %s: the object already exists", name,
                         s->b.location);
    }
    char hex[SHA256_HEX_LEN + 1];
    if (rc == 0 && body_sha256(data, fd, len, hex) < 0)
        rc = err_sys(e, errno, "saving %s: hashing its body", name);
    if (rc == 0) {
        struct req r = {.method = "PUT",
                        .what = name,
                        .url = url,
                        .body = data,
                        .body_fd = fd,
                        .body_len = len,
                        .body_sha256 = hex};
        rc = request(s, &r, e);
    }
    free(url);
    return rc;
}

static int s3_save(struct backend *self, const char *name, const void *data, size_t len,
                   bool overwrite, struct err *e)
{
    return put(as_s3(self), name, data ? data : "", -1, len, overwrite, e);
}

static int s3_save_fd(struct backend *self, const char *name, int fd, uint64_t len, bool overwrite,
                      struct err *e)
{
    return put(as_s3(self), name, NULL, fd, len, overwrite, e);
}

static int shorter(struct s3 *s, const char *name, uint64_t size, uint64_t offset, uint64_t len,
                   struct err *e)
{
    return err_set(e, ERR_FAIL,
                   "loading %s from %s: the object is %llu bytes, shorter than %llu "
                   "bytes at %llu",
                   name, s->b.location, (unsigned long long)size, (unsigned long long)len,
                   (unsigned long long)offset);
}

static int s3_load(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                   struct buf *out, struct err *e)
{
    struct s3 *s = as_s3(self);
    char *url = object_url(s, name);
    if (!url) return err_set(e, ERR_FAIL, "loading %s: out of memory", name);
    char range[64] = "";
    if (len)
        snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)offset,
                 (unsigned long long)(offset + len - 1));
    else if (offset)
        snprintf(range, sizeof range, "%llu-", (unsigned long long)offset);
    size_t start = out->len;
    struct req r = {.method = "GET",
                    .what = name,
                    .object = true,
                    .url = url,
                    .range = range[0] ? range : NULL,
                    .out = out,
                    .out_max = len};
    if (len && len < SIZE_MAX / 4) (void)buf_reserve(out, (size_t)len);
    int rc = request(s, &r, e);
    free(url);
    if (rc < 0 && r.status == 416) {
        /* The range starts at or past the end. Reading the empty rest of an object is fine. */
        uint64_t size = 0;
        struct err e2;
        if (s3_head(s, name, &size, &e2) < 0) return rc;
        if (len == 0 && offset == size) {
            err_clear(e);
            return 0;
        }
        return shorter(s, name, size, offset, len, e);
    }
    if (rc < 0) return rc;
    size_t got = out->len - start;
    if (r.range && r.status == 200) {
        /* The server ignored Range and sent everything: keep the part asked for. */
        if (offset > got || (len && len > got - offset)) {
            out->len = start;
            return shorter(s, name, got, offset, len, e);
        }
        size_t keep = len ? (size_t)len : got - (size_t)offset;
        memmove(out->data + start, out->data + start + offset, keep);
        out->len = start + keep;
    } else if (len && got != len) {
        out->len = start;
        return shorter(s, name, offset + got, offset, len, e);
    }
    return 0;
}

static int s3_stat(struct backend *self, const char *name, uint64_t *size, struct err *e)
{
    return s3_head(as_s3(self), name, size, e);
}

struct list_ctx {
    struct s3 *s;
    backend_list_cb cb;
    void *ctx;
    bool stopped;
};

static int list_entry(void *ud, const char *key, uint64_t size)
{
    struct list_ctx *l = ud;
    size_t plen = strlen(l->s->prefix);
    if (strncmp(key, l->s->prefix, plen) != 0) return 0;
    const char *name = key + plen;
    /* "folder/" placeholders made by consoles are not objects of ours. */
    if (!*name || name[strlen(name) - 1] == '/') return 0;
    int rc = l->cb(l->ctx, name, size);
    l->stopped = rc != 0;
    return rc;
}

static int s3_list(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                   struct err *e)
{
    struct s3 *s = as_s3(self);
    struct list_ctx lc = {.s = s, .cb = cb, .ctx = ctx};
    struct buf body = BUF_INIT;
    char *full = NULL, *enc_prefix = NULL, *token = NULL, *url = NULL;
    int rc = 0;
    if (asprintf(&full, "%s%s", s->prefix, prefix) < 0 || !(enc_prefix = uri_encode(full, false))) {
        rc = err_set(e, ERR_FAIL, "listing %s: out of memory", prefix);
        goto out;
    }
    for (;;) {
        /* SigV4 wants the query sorted by name, and curl 7.88 signs it as written. */
        char *enc_token = token ? uri_encode(token, false) : NULL;
        free(url);
        url = NULL;
        if ((token && !enc_token) ||
            asprintf(&url, "%s?%s%s%slist-type=2&max-keys=%ld&prefix=%s", s->bucket_url,
                     token ? "continuation-token=" : "", token ? enc_token : "", token ? "&" : "",
                     s->list_max, enc_prefix) < 0) {
            free(enc_token);
            url = NULL;
            rc = err_set(e, ERR_FAIL, "listing %s: out of memory", prefix);
            goto out;
        }
        free(enc_token);
        char what[256];
        snprintf(what, sizeof what, "the listing of \"%s\"", full);
        buf_reset(&body);
        struct req r = {.method = "GET", .what = what, .url = url, .out = &body};
        rc = request(s, &r, e);
        if (rc < 0) goto out;
        if (body.len > LIST_BODY_MAX) {
            rc = err_set(e, ERR_FAIL, "listing %s in %s: page too large", full, s->b.location);
            goto out;
        }
        struct s3_list_page page = {0};
        rc = s3_xml_parse_list((const char *)body.data, body.len, list_entry, &lc, &page, e);
        if (rc != 0) {
            s3_xml_page_free(&page);
            if (!lc.stopped) err_wrap(e, "listing %s in %s", full, s->b.location);
            goto out;
        }
        if (!page.truncated) {
            s3_xml_page_free(&page);
            break;
        }
        /* A truncated page must move us on, or we would ask for it forever. */
        if (!page.next_token || (token && strcmp(token, page.next_token) == 0)) {
            s3_xml_page_free(&page);
            rc = err_set(e, ERR_FAIL,
                         "listing %s in %s: the server gave no new continuation "
                         "token for a truncated listing",
                         full, s->b.location);
            goto out;
        }
        free(token);
        token = page.next_token;
        page.next_token = NULL;
    }
out:
    free(url);
    free(token);
    free(enc_prefix);
    free(full);
    buf_free(&body);
    return rc;
}

static int s3_remove(struct backend *self, const char *name, struct err *e)
{
    struct s3 *s = as_s3(self);
    char *url = object_url(s, name);
    if (!url) return err_set(e, ERR_FAIL, "removing %s: out of memory", name);
    /* S3 deletes a missing key without complaint; our contract says ERR_NOT_FOUND. */
    bool exists = false;
    int rc = s3_exists(s, name, url, &exists, e);
    if (rc == 0 && !exists)
        rc = err_set(e, ERR_NOT_FOUND, "removing %s from %s: no such object", name, s->b.location);
    if (rc == 0) {
        struct req r = {.method = "DELETE", .what = name, .object = true, .url = url};
        rc = request(s, &r, e);
    }
    free(url);
    return rc;
}

static void s3_close(struct backend *self)
{
    struct s3 *s = as_s3(self);
    for (size_t i = 0; i < s->npool; i++)
        curl_easy_cleanup(s->pool[i]);
    free(s->pool);
    if (s->share) curl_share_cleanup(s->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&s->share_mu[i]);
    pthread_mutex_destroy(&s->pool_mu);
    aws_creds_close(s->creds);
    free(s->bucket_url);
    free(s->object_base);
    free(s->bucket);
    free(s->prefix);
    free(s->region);
    free(s->sigv4);
    free(s->cacert);
    free(s->b.location);
    free(s);
}

static const struct backend_ops s3_ops = {
    .save = s3_save,
    .save_fd = s3_save_fd,
    .load = s3_load,
    .stat = s3_stat,
    .list = s3_list,
    .remove = s3_remove,
    .close = s3_close,
};

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
    struct s3 *s = ud;
    pthread_mutex_lock(&s->share_mu[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    struct s3 *s = ud;
    pthread_mutex_unlock(&s->share_mu[data]);
}

static CURLcode global_rc = CURLE_FAILED_INIT;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* One signed attempt at the bucket, for discover_region: the region it names, or "". */
static void ask_region(struct s3 *s, CURL *h, const struct aws_cred *k, const char *method,
                       const char *url, char region[64])
{
    char msg[CURL_ERROR_SIZE];
    struct req r = {.method = method, .what = s->bucket, .url = url};
    region[0] = '\0';
    if (attempt(s, h, k, &r, msg) != CURLE_OK) return;
    snprintf(region, 64, "%s", r.bucket_region[0] ? r.bucket_region : r.err.region);
}

/* A location with no region: ask the bucket, as the AWS SDKs' GetBucketRegion does
 * (aws-sdk-go-v2 feature/s3/manager/bucket_region.go): a HEAD of the bucket signed for
 * us-east-1 carries x-amz-bucket-region on AWS whatever its status; where it does not, the
 * <Region> of a GET's 400 AuthorizationHeaderMalformed names it. One attempt each, no retries:
 * a server that names no region (Ceph RGW, MinIO) or does not answer leaves us-east-1, and
 * the first real request reports what is wrong. */
static int discover_region(struct s3 *s, struct err *e)
{
    CURL *h = pool_get(s);
    struct aws_cred k = {0};
    char *url = NULL, region[64];
    int rc = 0;
    if (!h || asprintf(&url, "%s?list-type=2&max-keys=1", s->bucket_url) < 0) {
        url = NULL;
        rc = err_set(e, ERR_FAIL, "out of memory");
    }
    if (rc == 0) rc = aws_creds_get(s->creds, &k, e);
    if (rc == 0) {
        ask_region(s, h, &k, "HEAD", s->bucket_url, region);
        if (!region[0]) ask_region(s, h, &k, "GET", url, region);
        if (region[0] && strcmp(region, s->region) != 0) rc = set_region(s, region, e);
        if (rc < 0) err_wrap(e, "the region the bucket %s names", s->bucket);
    }
    aws_cred_free(&k);
    free(url);
    if (h) pool_put(s, h);
    return rc;
}

/* `init` on a missing bucket creates it; any other failure (bad credentials...) shows here. */
static int ensure_bucket(struct s3 *s, struct err *e)
{
    char *enc = uri_encode(s->prefix, false), *url = NULL;
    char what[300];
    snprintf(what, sizeof what, "bucket %s", s->bucket);
    if (!enc || asprintf(&url, "%s?list-type=2&max-keys=1&prefix=%s", s->bucket_url, enc) < 0) {
        free(enc);
        return err_set(e, ERR_FAIL, "out of memory");
    }
    free(enc);
    struct req r = {.method = "GET", .what = what, .url = url};
    int rc = request(s, &r, e);
    free(url);
    if (rc == 0 || r.status != 404 || strcmp(r.err.code, "NoSuchBucket") != 0) return rc;
    err_clear(e);
    char *body = NULL;
    if (strcmp(s->region, "us-east-1") != 0 &&
        asprintf(&body,
                 "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                 "<LocationConstraint>%s</LocationConstraint></CreateBucketConfiguration>",
                 s->region) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    char hex[SHA256_HEX_LEN + 1];
    size_t blen = body ? strlen(body) : 0;
    if (body_sha256(body ? body : "", -1, blen, hex) < 0) {
        free(body);
        return err_set(e, ERR_FAIL, "creating bucket %s: hashing the request failed", what);
    }
    struct req put = {.method = "PUT",
                      .what = what,
                      .url = s->bucket_url,
                      .body = body,
                      .body_len = blen,
                      .body_sha256 = hex};
    rc = request(s, &put, e);
    free(body);
    if (rc < 0 && strcmp(put.err.code, "BucketAlreadyOwnedByYou") == 0) {
        err_clear(e);
        rc = 0;
    }
    return rc;
}

int backend_s3_open(const char *location, const struct backend_opts *o, bool create,
                    struct backend **out, struct err *e)
{
    *out = NULL;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return err_set(e, ERR_FAIL, "libcurl failed to initialise: %s",
                       curl_easy_strerror(global_rc));
    if (sodium_init() < 0) return err_set(e, ERR_FAIL, "libsodium failed to initialise");
    struct s3 *s = calloc(1, sizeof *s);
    if (!s) return err_set(e, ERR_FAIL, "opening %s: out of memory", location);
    s->b.ops = &s3_ops;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&s->share_mu[i], NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    int rc = 0;
    s->b.location = strdup(location);
    s->share = curl_share_init();
    if (!s->b.location || !s->share) rc = err_set(e, ERR_FAIL, "out of memory");
    if (!rc) rc = parse_location(s, location, o->addressing, o->s3_endpoint, e);
    if (!rc) rc = load_settings(s, o, e);
    if (!rc) rc = aws_creds_open(o, s->region_given ? s->region : NULL, &s->creds, e);
    if (!rc) {
        curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        /* Fail here, not on the first request, when libcurl cannot sign. */
        CURL *h = curl_easy_init();
        if (!h)
            rc = err_set(e, ERR_FAIL, "out of memory");
        else if (curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4) != CURLE_OK)
            rc = err_set(e, ERR_FAIL,
                         "this libcurl (%s) cannot sign S3 requests (needs 7.75 or "
                         "newer)",
                         curl_version());
        if (h) pool_put(s, h);
    }
    if (!rc && !s->region_given) rc = discover_region(s, e);
    if (!rc && create) rc = ensure_bucket(s, e);
    if (rc < 0) {
        if (!strstr(e->msg, location)) err_wrap(e, "opening %s", location);
        s3_close(&s->b);
        return rc;
    }
    *out = &s->b;
    return 0;
}
