/* backend_s3.c - the backend that keeps objects in an S3 bucket (AWS, Ceph RGW, MinIO...).
 *
 * libcurl signs every request (SigV4); we add the x-amz-content-sha256 header it does not, so
 * the server checks each uploaded body against its hash and never stores a damaged object.
 * Requests that fail in a way that can pass (5xx, 429, SlowDown, timeouts, resets) are retried
 * with exponential backoff and full jitter (http_retry_next), answers that ask to slow down for
 * up to the throttle time; everything else fails at once with the server's code.
 * Several threads may use one backend: each request borrows a curl handle from a pool, and a
 * handle keeps its connection open for the next request that borrows it (backend/http.c, which
 * the Azure backend shares). */
#include "backend/backend_s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
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
#include "backend/http.h"
#include "backend/s3_lock.h"
#include "backend/s3_versions.h"
#include "backend/s3_xml.h"

/* SHA-256 of nothing: the payload hash of requests without a body. */
#define SHA256_HEX_LEN 64
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define LIST_BODY_MAX (16u << 20)

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
    long list_max, throttle_ms;
    struct http *http; /* the requests: retries, connection pool (thread-safe) */
    /* Object Lock of saved objects (s3_lock.h); set before sharing */
    struct backend_retention lock;
    int64_t as_of_ms; /* > 0: reads see this time (backend_opts.as_of_ms) ... */
    struct s3_vt *vt; /* ... through the versions listed at open (s3_versions.h) */
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
    struct http_settings hs = {.cacert = o->cacert,
                               .insecure_tls = o->insecure_tls,
                               .retries = o->retries,
                               .retry_delay_ms = o->retry_delay_ms,
                               .retry_max_delay_ms = o->retry_max_delay_ms,
                               .throttle_ms = o->throttle_time_s * 1000,
                               .connect_timeout_s = o->connect_timeout_s,
                               .stall_timeout_s = o->stall_timeout_s};
    if (http_new(&hs, &s->http, e) < 0) return e->code;
    s->list_max = o->list_max;
    s->throttle_ms = o->throttle_time_s * 1000;
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
    const char *extra[3];    /* more header lines (Object Lock), NULL where unused */
    uint64_t out_max;        /* most bytes a ranged answer may bring; 0 = no limit */
    struct s3 *s;            /* set by request */
    bool renewed;            /* the credentials were renewed after ExpiredToken */
    /* results of the last attempt */
    long status;
    uint64_t length; /* Content-Length, for HEAD */
    struct s3_error err;
};

/* http's prepare: SigV4 by libcurl, and the x-amz-content-sha256 header it does not add, so the
 * server checks each uploaded body against its hash and never stores a damaged object. No
 * "Expect:" line to turn off 100-continue: curl 7.88 would sign it as an empty header that is
 * never sent, and every upload would fail with SignatureDoesNotMatch. */
static int s3_prepare(void *ctx, CURL *h, const struct http_req *hr, struct curl_slist **hdrs,
                      struct err *e)
{
    const struct req *r = ctx;
    const struct s3 *s = r->s;
    (void)hr;
    /* The current credentials for each attempt: temporary ones are refreshed on the way. curl
     * copies the strings it is given, so they are freed here. */
    struct aws_cred k = {0};
    if (aws_creds_get(s->creds, &k, e) < 0)
        return err_wrap(e, "S3 %s of %s in %s", r->method, r->what, s->b.location);
    char sha_hdr[128], *token_hdr = NULL;
    snprintf(sha_hdr, sizeof sha_hdr, "x-amz-content-sha256: %s",
             r->body_sha256 ? r->body_sha256 : EMPTY_SHA256);
    int rc = 0;
    if (k.token && asprintf(&token_hdr, "x-amz-security-token: %s", k.token) < 0) {
        token_hdr = NULL;
        rc = err_set(e, ERR_FAIL, "S3 %s of %s: out of memory", r->method, r->what);
    }
    const char *lines[] = {sha_hdr, token_hdr, r->extra[0], r->extra[1], r->extra[2]};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0] && rc == 0; i++) {
        if (!lines[i]) continue;
        struct curl_slist *t = curl_slist_append(*hdrs, lines[i]);
        if (!t)
            rc = err_set(e, ERR_FAIL, "S3 %s of %s: out of memory", r->method, r->what);
        else
            *hdrs = t;
    }
    if (rc == 0) {
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(h, CURLOPT_USERNAME, k.access_key);
        curl_easy_setopt(h, CURLOPT_PASSWORD, k.secret_key);
    }
    free(token_hdr);
    aws_cred_free(&k);
    return rc;
}

/* The server asks the client to slow down: retried for up to the throttle time. */
static bool throttled_status(const struct req *r)
{
    static const char *const codes[] = {"SlowDown", "Throttling", "ThrottlingException",
                                        "RequestLimitExceeded", "TooManyRequests"};
    if (r->status == 503 || r->status == 429) return true;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(r->err.code, codes[i]) == 0) return true;
    return false;
}

/* 500, 502, 503 and 504 pass with time, and S3's codes that say so. */
static bool retryable_status(const struct req *r)
{
    static const char *const codes[] = {"RequestTimeout", "InternalError", "ServiceUnavailable"};
    if (throttled_status(r) || http_status_retryable(r->status)) return true;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(r->err.code, codes[i]) == 0) return true;
    return false;
}

/* http's failed: reads S3's error document. */
static bool s3_failed(void *ctx, struct http_req *hr)
{
    struct req *r = ctx;
    r->status = hr->status;
    memset(&r->err, 0, sizeof r->err);
    if (hr->err_body.len > 0)
        s3_xml_parse_error((const char *)hr->err_body.data, hr->err_body.len, &r->err);
    hr->throttled = throttled_status(r);
    /* Credentials that expired early (a clock apart from the server's): new ones, once. */
    if (!r->renewed && strcmp(r->err.code, "ExpiredToken") == 0) {
        r->renewed = true;
        aws_creds_invalidate(r->s->creds);
        return true;
    }
    return retryable_status(r);
}

/* Fills e with what went wrong with r, naming the operation and the object. */
static int request_error(struct s3 *s, const struct req *r, const struct http_req *hr,
                         struct err *e)
{
    char detail[768], tail[160] = "";
    if (hr->attempts > 1 && hr->cc == CURLE_OK && hr->throttled && s->throttle_ms > 0)
        snprintf(tail, sizeof tail,
                 " (gave up after %d attempts in %ld s: the server kept asking to slow down; "
                 "the throttle time is %ld s, " BACKEND_S3_ENV_THROTTLE_TIME ")",
                 hr->attempts, hr->elapsed_ms / 1000, s->throttle_ms / 1000);
    else if (hr->attempts > 1)
        snprintf(tail, sizeof tail, " (gave up after %d attempts)", hr->attempts);
    int code = ERR_FAIL;
    if (hr->cc != CURLE_OK) {
        http_describe_transfer(hr, detail, sizeof detail);
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

/* One request through backend/http.c (retries, connection pool). */
static int run(struct s3 *s, struct req *r, bool retry, struct http_req *hr, struct err *e)
{
    r->s = s;
    *hr = (struct http_req){.method = r->method,
                            .url = r->url,
                            .body = r->body,
                            .body_fd = r->body_fd,
                            .body_len = r->body_len,
                            .range = r->range,
                            .out = r->out,
                            .out_max = r->out_max,
                            .whole = r->object,
                            .no_retry = !retry,
                            .prepare = s3_prepare,
                            .failed = s3_failed,
                            .ctx = r};
    memset(&r->err, 0, sizeof r->err);
    int rc = http_request(s->http, hr, e);
    r->status = hr->status;
    r->length = hr->length;
    if (hr->cc != CURLE_OK) memset(&r->err, 0, sizeof r->err);
    return rc;
}

/* Runs a request, retrying what may pass. Returns 0 on a 2xx answer, else an error in e (with
 * r->status and r->err describing the last answer, for callers that expect some failures). */
static int request(struct s3 *s, struct req *r, struct err *e)
{
    struct http_req hr;
    int rc = run(s, r, true, &hr, e);
    if (rc == 0 || hr.prepare_failed) return rc;
    /* HEAD answers carry no body, hence no error code: ask again with a GET of one byte, whose
     * error document says why (SignatureDoesNotMatch, AccessDenied...). */
    if (hr.cc == CURLE_OK && strcmp(r->method, "HEAD") == 0 && r->status / 100 == 4 &&
        r->status != 404) {
        struct req probe = *r;
        probe.method = "GET";
        probe.range = "0-0";
        probe.out = NULL;
        struct http_req phr;
        struct err e2;
        if (run(s, &probe, false, &phr, &e2) < 0 && !phr.prepare_failed && phr.cc == CURLE_OK &&
            probe.status == r->status)
            r->err = probe.err;
    }
    return request_error(s, r, &hr, e);
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

/* ---- reading as of a time (backend_opts.as_of_ms) ---- */

static bool as_of(const struct s3 *s, const char *name)
{
    return s->vt && strncmp(name, S3_LOCK_EXEMPT_DIR, sizeof S3_LOCK_EXEMPT_DIR - 1) != 0;
}

static int as_of_refuse(struct s3 *s, const char *what, const char *name, struct err *e)
{
    return err_set(e, ERR_FAIL,
                   "%s %s: the repository is read as it stood at an earlier time (--as-of) and "
                   "cannot be changed so; `podvault repair versions --as-of` makes that state "
                   "current",
                   what, name);
}

/* The URL of the version of `name` that was current at s->as_of_ms, and its size. */
static int as_of_url(struct s3 *s, const char *name, char **url, uint64_t *size, struct err *e)
{
    char *key = NULL, *base = object_url(s, name), *vid = NULL;
    const struct s3_version *v = NULL;
    *url = NULL;
    if (base && asprintf(&key, "%s%s", s->prefix, name) >= 0) v = s3_vt_at(s->vt, key, s->as_of_ms);
    if (v && !(vid = uri_encode(v->version_id, false))) v = NULL;
    int rc = 0;
    if (!base || !key || (v && !vid)) {
        rc = err_set(e, ERR_FAIL, "%s: out of memory", name);
    } else if (!v) {
        char when[40] = "?";
        s3_lock_format_date((time_t)(s->as_of_ms / 1000), when, sizeof when);
        rc = err_set(e, ERR_NOT_FOUND, "%s did not exist in %s at %s", name, s->b.location, when);
    } else if (asprintf(url, "%s?versionId=%s", base, vid) < 0) {
        *url = NULL;
        rc = err_set(e, ERR_FAIL, "%s: out of memory", name);
    } else {
        *size = v->size;
    }
    free(key);
    free(base);
    free(vid);
    return rc;
}

/* One GET of a ListObjectVersions page of the repository's prefix into s->vt. */
static int versions_page(struct s3 *s, const char *enc_prefix, struct s3_versions_page *page,
                         struct buf *body, struct err *e)
{
    char *k = page->next_key ? uri_encode(page->next_key, false) : NULL;
    char *v = page->next_version ? uri_encode(page->next_version, false) : NULL;
    char *url = NULL;
    /* SigV4 wants the query sorted by name, and curl 7.88 signs it as written. */
    if ((page->next_key && !k) || (page->next_version && !v) ||
        asprintf(&url, "%s?%s%s%smax-keys=%ld&prefix=%s%s%s&versions=", s->bucket_url,
                 k ? "key-marker=" : "", k ? k : "", k ? "&" : "", s->list_max, enc_prefix,
                 v ? "&version-id-marker=" : "", v ? v : "") < 0)
        url = NULL;
    free(k);
    free(v);
    if (!url) return err_set(e, ERR_FAIL, "listing versions: out of memory");
    buf_reset(body);
    char what[300];
    snprintf(what, sizeof what, "the versions under \"%s\"", s->prefix);
    struct req r = {.method = "GET", .what = what, .url = url, .out = body};
    int rc = request(s, &r, e);
    free(url);
    if (rc == 0 && body->len > LIST_BODY_MAX)
        rc = err_set(e, ERR_FAIL, "listing versions in %s: page too large", s->b.location);
    if (rc < 0) return rc;
    char *old_key = page->next_key, *old_version = page->next_version;
    page->next_key = page->next_version = NULL;
    page->truncated = false;
    rc = s3_versions_parse((const char *)body->data, body->len, s3_vt_add, s->vt, page, e);
    if (rc > 0) rc = err_set(e, ERR_FAIL, "listing versions: out of memory or too many");
    /* A truncated page must move us on, or we would ask for it forever. */
    if (rc == 0 && page->truncated &&
        (!page->next_key ||
         (old_key && strcmp(old_key, page->next_key) == 0 &&
          (!page->next_version || !old_version || strcmp(old_version, page->next_version) == 0))))
        rc = err_set(e, ERR_FAIL,
                     "listing versions in %s: the server gave no new marker for a "
                     "truncated listing",
                     s->b.location);
    free(old_key);
    free(old_version);
    return rc;
}

/* Lists every version of the repository's objects (ListObjectVersions, all pages). */
static int load_versions(struct s3 *s, struct err *e)
{
    char *enc = uri_encode(s->prefix, false);
    struct buf body = BUF_INIT;
    struct s3_versions_page page = {0};
    int rc = (s->vt = s3_vt_new()) && enc ? 0 : err_set(e, ERR_FAIL, "out of memory");
    do
        if (rc == 0) rc = versions_page(s, enc, &page, &body, e);
    while (rc == 0 && page.truncated);
    if (rc == 0) s3_vt_finish(s->vt);
    s3_versions_page_free(&page);
    buf_free(&body);
    free(enc);
    if (rc < 0) err_wrap(e, "reading %s as of an earlier time", s->b.location);
    return rc;
}

/* ---- operations ---- */

static int s3_head(struct s3 *s, const char *name, uint64_t *size, struct err *e)
{
    char *url = NULL;
    if (as_of(s, name)) {
        int rc = as_of_url(s, name, &url, size, e);
        free(url);
        return rc;
    }
    url = object_url(s, name);
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
    if (as_of(s, name)) return as_of_refuse(s, "saving", name, e);
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
    struct s3_lock_hdrs lh;
    bool locked = rc == 0 && s3_lock_applies(&s->lock, name);
    if (locked && (rc = s3_lock_headers(&s->lock, time(NULL), data, fd, len, &lh, e)) < 0)
        err_wrap(e, "saving %s", name);
    if (rc == 0) {
        struct req r = {.method = "PUT",
                        .what = name,
                        .url = url,
                        .body = data,
                        .body_fd = fd,
                        .body_len = len,
                        .body_sha256 = hex};
        if (locked) {
            r.extra[0] = lh.mode;
            r.extra[1] = lh.until;
            r.extra[2] = lh.md5;
        }
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

static int s3_load(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                   struct buf *out, struct err *e)
{
    struct s3 *s = as_s3(self);
    uint64_t vsize;
    char *url = NULL;
    if (as_of(s, name) && as_of_url(s, name, &url, &vsize, e) < 0) return e->code;
    if (!url) url = object_url(s, name);
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
        return http_range_416(size, offset, len, name, s->b.location, e);
    }
    if (rc < 0) return rc;
    return http_range_fit(out, start, r.status, offset, len, name, s->b.location, e);
}

static int s3_stat(struct backend *self, const char *name, uint64_t *size, struct err *e)
{
    return s3_head(as_s3(self), name, size, e);
}

/* Lists what existed under `prefix` at s->as_of_ms. */
static int list_as_of(struct s3 *s, const char *prefix, struct http_list *lc)
{
    size_t plen = strlen(s->prefix), qlen = strlen(prefix);
    for (size_t i = 0; i < s3_vt_keys(s->vt); i++) {
        const char *key = s3_vt_key(s->vt, i);
        if (strncmp(key, s->prefix, plen) != 0 || strncmp(key + plen, prefix, qlen) != 0) continue;
        const struct s3_version *v = s3_vt_at(s->vt, key, s->as_of_ms);
        int rc = v ? http_list_entry(lc, key, v->size) : 0;
        if (rc) return rc;
    }
    return 0;
}

static int s3_list(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                   struct err *e)
{
    struct s3 *s = as_s3(self);
    struct http_list lc = {.prefix = s->prefix, .cb = cb, .ctx = ctx};
    if (as_of(s, prefix)) return list_as_of(s, prefix, &lc);
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
        rc = s3_xml_parse_list((const char *)body.data, body.len, http_list_entry, &lc, &page, e);
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
    if (as_of(s, name)) return as_of_refuse(s, "removing", name, e);
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

/* GetObjectLockConfiguration: whether the bucket enforces Object Lock. */
static int lock_check(struct s3 *s, struct err *e)
{
    char *url = NULL, what[300];
    snprintf(what, sizeof what, "the object lock configuration of bucket %s", s->bucket);
    if (asprintf(&url, "%s?object-lock=", s->bucket_url) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    struct buf body = BUF_INIT;
    struct req r = {.method = "GET", .what = what, .url = url, .out = &body};
    int rc = request(s, &r, e);
    bool enabled = false;
    if (rc < 0 && r.status == 404 && strcmp(r.err.code, "NoSuchBucket") != 0) {
        err_clear(e);
        rc = 0; /* ObjectLockConfigurationNotFoundError: not enabled */
    } else if (rc == 0) {
        rc = s3_lock_parse_config((const char *)body.data, body.len, &enabled, e);
    }
    if (rc == 0 && !enabled)
        rc = err_set(e, ERR_FAIL,
                     "bucket %s does not have Object Lock enabled: create a bucket with it "
                     "(aws s3api create-bucket --object-lock-enabled-for-bucket ...; versioning "
                     "alone is not enough) or leave out --object-lock",
                     s->bucket);
    free(url);
    buf_free(&body);
    return rc;
}

static int s3_set_retention(struct backend *self, const struct backend_retention *r, bool verify,
                            struct err *e)
{
    struct s3 *s = as_s3(self);
    if (r->mode != BACKEND_LOCK_OFF && verify) {
        int rc = lock_check(s, e);
        if (rc < 0) return rc;
    }
    s->lock = *r;
    return 0;
}

static int s3_versions_plan(struct backend *self, backend_version_cb cb, void *ctx, struct err *e)
{
    struct s3 *s = as_s3(self);
    if (!s->vt)
        return err_set(e, ERR_FAIL, "repairing versions needs the time to go back to (--as-of)");
    size_t plen = strlen(s->prefix);
    for (size_t i = 0; i < s3_vt_keys(s->vt); i++) {
        const char *key = s3_vt_key(s->vt, i);
        const struct s3_version *v;
        if (strncmp(key, s->prefix, plen) != 0 || !as_of(s, key + plen) || !key[plen]) continue;
        int c = s3_vt_change(s->vt, key, s->as_of_ms, &v);
        int rc = c == 0   ? 0
                 : c == 1 ? cb(ctx, key + plen, BACKEND_VERSION_RESTORE, v->size)
                          : cb(ctx, key + plen, BACKEND_VERSION_REMOVE, 0);
        if (rc) return rc;
    }
    return 0;
}

/* CopyObject of the version of s->as_of_ms over `name`, with the retention anew. */
static int copy_back(struct s3 *s, const char *name, const char *url, struct err *e)
{
    char *key = NULL, *src = NULL, *enc_key = NULL, *enc_vid = NULL;
    const struct s3_version *v = NULL;
    if (asprintf(&key, "%s%s", s->prefix, name) >= 0) v = s3_vt_at(s->vt, key, s->as_of_ms);
    int rc = 0;
    if (key && !v) {
        rc = err_set(e, ERR_NOT_FOUND, "%s has no version to restore", name);
    } else if (!key || !(enc_key = uri_encode(key, true)) ||
               !(enc_vid = uri_encode(v->version_id, false)) ||
               asprintf(&src, "x-amz-copy-source: /%s/%s?versionId=%s", s->bucket, enc_key,
                        enc_vid) < 0) {
        src = NULL;
        rc = err_set(e, ERR_FAIL, "restoring %s: out of memory", name);
    }
    struct s3_lock_hdrs lh;
    bool locked = rc == 0 && s3_lock_applies(&s->lock, name);
    if (locked) rc = s3_lock_headers(&s->lock, time(NULL), "", -1, 0, &lh, e);
    if (rc == 0) {
        struct buf answer = BUF_INIT;
        struct req r = {.method = "PUT", .what = name, .url = url, .body = "", .out = &answer};
        r.body_sha256 = EMPTY_SHA256;
        r.extra[0] = src;
        if (locked) {
            r.extra[1] = lh.mode;
            r.extra[2] = lh.until;
        }
        rc = request(s, &r, e);
        buf_free(&answer);
    }
    free(key);
    free(src);
    free(enc_key);
    free(enc_vid);
    return rc;
}

static int s3_version_apply(struct backend *self, const char *name, enum backend_version_action a,
                            struct err *e)
{
    struct s3 *s = as_s3(self);
    if (!s->vt || !as_of(s, name))
        return err_set(e, ERR_FAIL, "repairing %s needs the time to go back to (--as-of)", name);
    char *url = object_url(s, name);
    if (!url) return err_set(e, ERR_FAIL, "repairing %s: out of memory", name);
    int rc;
    if (a == BACKEND_VERSION_RESTORE) {
        rc = copy_back(s, name, url, e);
    } else {
        struct req r = {.method = "DELETE", .what = name, .object = true, .url = url};
        rc = request(s, &r, e);
    }
    free(url);
    if (rc < 0) err_wrap(e, "%s %s", a == BACKEND_VERSION_RESTORE ? "restoring" : "removing", name);
    return rc;
}

static void s3_close(struct backend *self)
{
    struct s3 *s = as_s3(self);
    http_free(s->http);
    aws_creds_close(s->creds);
    free(s->bucket_url);
    free(s->object_base);
    free(s->bucket);
    free(s->prefix);
    free(s->region);
    free(s->sigv4);
    s3_vt_free(s->vt);
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
    .set_retention = s3_set_retention,
    .versions_plan = s3_versions_plan,
    .version_apply = s3_version_apply,
};

/* One attempt at the bucket, for discover_region: the region it names, or "". */
static void ask_region(struct s3 *s, const char *method, const char *url, char region[64])
{
    struct req r = {.method = method, .what = s->bucket, .url = url, .s = s};
    struct http_req hr = {.method = method,
                          .url = url,
                          .no_retry = true,
                          .prepare = s3_prepare,
                          .failed = s3_failed,
                          .ctx = &r,
                          .keep_header = "x-amz-bucket-region"};
    struct err e2;
    region[0] = '\0';
    memset(&r.err, 0, sizeof r.err);
    (void)http_request(s->http, &hr, &e2);
    if (hr.prepare_failed || hr.cc != CURLE_OK) return;
    snprintf(region, 64, "%s", hr.header_value[0] ? hr.header_value : r.err.region);
}

/* A location with no region: ask the bucket, as the AWS SDKs' GetBucketRegion does
 * (aws-sdk-go-v2 feature/s3/manager/bucket_region.go): a HEAD of the bucket signed for
 * us-east-1 carries x-amz-bucket-region on AWS whatever its status; where it does not, the
 * <Region> of a GET's 400 AuthorizationHeaderMalformed names it. One attempt each, no retries:
 * a server that names no region (Ceph RGW, MinIO) or does not answer leaves us-east-1, and
 * the first real request reports what is wrong. */
static int discover_region(struct s3 *s, struct err *e)
{
    char *url = NULL, region[64];
    if (asprintf(&url, "%s?list-type=2&max-keys=1", s->bucket_url) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    int rc = 0;
    ask_region(s, "HEAD", s->bucket_url, region);
    if (!region[0]) ask_region(s, "GET", url, region);
    if (region[0] && strcmp(region, s->region) != 0) rc = set_region(s, region, e);
    if (rc < 0) err_wrap(e, "the region the bucket %s names", s->bucket);
    free(url);
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
    struct s3 *s = calloc(1, sizeof *s);
    if (!s) return err_set(e, ERR_FAIL, "opening %s: out of memory", location);
    s->b.ops = &s3_ops;
    int rc = 0;
    s->b.location = strdup(location);
    if (!s->b.location) rc = err_set(e, ERR_FAIL, "out of memory");
    if (!rc) rc = parse_location(s, location, o->addressing, o->s3_endpoint, e);
    if (!rc) rc = load_settings(s, o, e);
    if (!rc) rc = aws_creds_open(o, s->region_given ? s->region : NULL, &s->creds, e);
    if (!rc) {
        /* Fail here, not on the first request, when libcurl cannot sign. */
        CURL *h = curl_easy_init();
        if (!h)
            rc = err_set(e, ERR_FAIL, "out of memory");
        else if (curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4) != CURLE_OK)
            rc = err_set(e, ERR_FAIL,
                         "this libcurl (%s) cannot sign S3 requests (needs 7.75 or "
                         "newer)",
                         curl_version());
        if (h) curl_easy_cleanup(h);
    }
    if (!rc && !s->region_given) rc = discover_region(s, e);
    if (!rc && create) rc = ensure_bucket(s, e);
    if (!rc && o->as_of_ms > 0) {
        s->as_of_ms = o->as_of_ms;
        rc = load_versions(s, e);
    }
    if (rc < 0) {
        if (!strstr(e->msg, location)) err_wrap(e, "opening %s", location);
        s3_close(&s->b);
        return rc;
    }
    *out = &s->b;
    return 0;
}
