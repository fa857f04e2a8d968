/* backend_s3.c - the backend that keeps objects in an S3 bucket (AWS, Ceph RGW, MinIO...).
 *
 * libcurl signs every request (SigV4); we add the x-amz-content-sha256 header it does not, so
 * the server checks each uploaded body against its hash and never stores a damaged object.
 * Requests that fail in a way that can pass (5xx, 429, SlowDown, timeouts, resets) are retried
 * with exponential backoff and jitter; everything else fails at once with the server's code.
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

#include "base/fdio.h"
#include "backend/backend.h"
#include "backend/http.h"
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
    char *sigv4; /* "aws:amz:<region>:s3" for CURLOPT_AWS_SIGV4 */
    char *access_key, *secret_key, *token_header;
    long list_max;
    struct http *http; /* the requests: retries, connection pool (thread-safe) */
};

static struct s3 *as_s3(struct backend *b)
{
    return (struct s3 *)b;
}

/* ---- settings ---- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static int set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
    return *dst ? 0 : -1;
}

static int set_token(struct s3 *s, const char *token)
{
    free(s->token_header);
    s->token_header = NULL;
    return asprintf(&s->token_header, "x-amz-security-token: %s", token) < 0 ? -1 : 0;
}

/* Reads one profile of an AWS shared credentials file (INI: "[name]" sections, "key = value"
 * lines, '#' or ';' comments; "[profile name]" as in ~/.aws/config is accepted too). */
static int read_credentials_file(struct s3 *s, const char *path, const char *profile, bool named,
                                 struct err *e)
{
    FILE *f = fopen(path, "re");
    if (!f && errno == ENOENT && !named)
        return err_set(e, ERR_FAIL,
                       "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                       "write them to %s",
                       path);
    if (!f) {
        err_sys(e, errno, "reading the AWS credentials file %s", path);
        return e->code = ERR_FAIL;
    }
    char *line = NULL;
    size_t cap = 0;
    bool in = false, seen = false;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        char *l = trim(line);
        if (*l == '\0' || *l == '#' || *l == ';') continue;
        if (*l == '[') {
            char *close = strchr(l, ']');
            if (!close) continue;
            *close = '\0';
            char *name = trim(l + 1);
            if (strncmp(name, "profile ", 8) == 0) name = trim(name + 8);
            in = strcmp(name, profile) == 0;
            seen |= in;
            continue;
        }
        char *eq = strchr(l, '=');
        if (!in || !eq) continue;
        *eq = '\0';
        char *key = trim(l), *val = trim(eq + 1);
        if (strcmp(key, "aws_access_key_id") == 0)
            rc = set_str(&s->access_key, val);
        else if (strcmp(key, "aws_secret_access_key") == 0)
            rc = set_str(&s->secret_key, val);
        else if (strcmp(key, "aws_session_token") == 0 && *val)
            rc = set_token(s, val);
    }
    free(line);
    fclose(f);
    if (rc < 0) return err_set(e, ERR_FAIL, "reading %s: out of memory", path);
    if (!seen)
        return err_set(e, ERR_FAIL, "no profile [%s] in the AWS credentials file %s", profile,
                       path);
    if (!s->access_key || !*s->access_key || !s->secret_key || !*s->secret_key)
        return err_set(e, ERR_FAIL,
                       "profile [%s] in %s lacks aws_access_key_id or aws_secret_access_key",
                       profile, path);
    return 0;
}

static int load_credentials(struct s3 *s, const struct backend_opts *o, struct err *e)
{
    bool has_id = o->access_key && *o->access_key, has_secret = o->secret_key && *o->secret_key;
    if (has_id != has_secret)
        return err_set(e, ERR_FAIL,
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    if (has_id) {
        const char *token = o->session_token;
        if (set_str(&s->access_key, o->access_key) < 0 ||
            set_str(&s->secret_key, o->secret_key) < 0 ||
            (token && *token && set_token(s, token) < 0))
            return err_set(e, ERR_FAIL, "out of memory");
        return 0;
    }
    const char *file = o->credentials_file && *o->credentials_file ? o->credentials_file : NULL;
    char *path = NULL;
    if (file) {
        path = strdup(file);
    } else {
        if (!o->home || !*o->home)
            return err_set(e, ERR_FAIL,
                           "no S3 credentials: set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE");
        if (asprintf(&path, "%s/.aws/credentials", o->home) < 0) path = NULL;
    }
    if (!path) return err_set(e, ERR_FAIL, "out of memory");
    const char *profile = o->profile && *o->profile ? o->profile : "default";
    int rc = read_credentials_file(s, path, profile, file != NULL, e);
    free(path);
    return rc;
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

/* Splits "s3:[scheme://]host[:port]/bucket[/prefix]" and builds the URLs. */
static int parse_location(struct s3 *s, const char *loc, enum backend_addressing addressing,
                          struct err *e)
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
static int load_settings(struct s3 *s, const struct backend_opts *o, struct err *e)
{
    const char *region = o->region && *o->region ? o->region : "us-east-1";
    size_t rn = strlen(region);
    if (rn > 64 || strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != rn)
        return err_set(e, ERR_FAIL, "bad S3 region \"%.64s\"", region);
    if (set_str(&s->region, region) < 0 || asprintf(&s->sigv4, "aws:amz:%s:s3", region) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    struct http_settings hs = {.cacert = o->cacert,
                               .insecure_tls = o->insecure_tls,
                               .retries = o->retries,
                               .retry_delay_ms = o->retry_delay_ms,
                               .retry_max_delay_ms = o->retry_max_delay_ms,
                               .connect_timeout_s = o->connect_timeout_s,
                               .stall_timeout_s = o->stall_timeout_s};
    if (http_new(&hs, &s->http, e) < 0) return e->code;
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
    struct s3 *s;            /* set by request */
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
    char sha_hdr[128];
    snprintf(sha_hdr, sizeof sha_hdr, "x-amz-content-sha256: %s",
             r->body_sha256 ? r->body_sha256 : EMPTY_SHA256);
    const char *lines[] = {sha_hdr, s->token_header};
    for (size_t i = 0; i < 2; i++) {
        if (!lines[i]) continue;
        struct curl_slist *t = curl_slist_append(*hdrs, lines[i]);
        if (!t) return err_set(e, ERR_FAIL, "S3 %s of %s: out of memory", r->method, r->what);
        *hdrs = t;
    }
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, s->access_key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret_key);
    return 0;
}

/* 500, 502, 503 and 504 pass with time, and S3's codes that say so. */
static bool retryable_status(const struct req *r)
{
    static const char *const codes[] = {"SlowDown", "RequestTimeout", "InternalError",
                                        "ServiceUnavailable"};
    if (http_status_retryable(r->status)) return true;
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
    return retryable_status(r);
}

/* Fills e with what went wrong with r, naming the operation and the object. */
static int request_error(struct s3 *s, const struct req *r, const struct http_req *hr,
                         struct err *e)
{
    char detail[768], tail[64] = "";
    if (hr->attempts > 1) snprintf(tail, sizeof tail, " (gave up after %d attempts)", hr->attempts);
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
        return http_range_416(size, offset, len, name, s->b.location, e);
    }
    if (rc < 0) return rc;
    return http_range_fit(out, start, r.status, offset, len, name, s->b.location, e);
}

static int s3_stat(struct backend *self, const char *name, uint64_t *size, struct err *e)
{
    return s3_head(as_s3(self), name, size, e);
}

static int s3_list(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                   struct err *e)
{
    struct s3 *s = as_s3(self);
    struct http_list lc = {.prefix = s->prefix, .cb = cb, .ctx = ctx};
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
    http_free(s->http);
    if (s->secret_key) sodium_memzero(s->secret_key, strlen(s->secret_key));
    free(s->bucket_url);
    free(s->object_base);
    free(s->bucket);
    free(s->prefix);
    free(s->region);
    free(s->sigv4);
    free(s->access_key);
    free(s->secret_key);
    free(s->token_header);
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
    if (!rc) rc = parse_location(s, location, o->addressing, e);
    if (!rc) rc = load_settings(s, o, e);
    if (!rc) rc = load_credentials(s, o, e);
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
    if (!rc && create) rc = ensure_bucket(s, e);
    if (rc < 0) {
        if (!strstr(e->msg, location)) err_wrap(e, "opening %s", location);
        s3_close(&s->b);
        return rc;
    }
    *out = &s->b;
    return 0;
}
