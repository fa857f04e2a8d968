/* cred_http.c - HTTP exchanges with credentials endpoints; see cred_http.h. */
#include "backend/cred_http.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "backend/http.h"

/* Credentials endpoints are tried again on 5xx and 429 answers (the AWS SDKs' retryer). */
static bool cred_failed(void *ctx, struct http_req *r)
{
    (void)ctx;
    return r->status >= 500 || r->status == 429;
}

/* Sets the caller's header lines on each attempt; curl would add "Expect: 100-continue". */
static int cred_prepare(void *ctx, CURL *h, const struct http_req *r, struct curl_slist **hdrs,
                        struct err *e)
{
    const struct cred_http_req *req = ctx;
    (void)h;
    (void)r;
    static const char *const always[] = {"Expect:", NULL};
    const char *const *lists[] = {always, req->headers};
    for (size_t l = 0; l < 2; l++)
        for (const char *const *hd = lists[l]; hd && *hd; hd++) {
            struct curl_slist *t = curl_slist_append(*hdrs, *hd);
            if (!t) return err_set(e, ERR_FAIL, "%s: out of memory", req->what);
            *hdrs = t;
        }
    return 0;
}

int cred_http_do(const struct cred_http_req *req, long *status, struct buf *out, struct err *e)
{
    struct http_settings s = {.cacert = req->cacert,
                              .insecure_tls = req->insecure_tls,
                              .retries = req->attempts - 1,
                              .retry_delay_ms = 200,
                              .retry_max_delay_ms = 1000,
                              .connect_timeout_s = req->timeout_s,
                              .stall_timeout_s = req->timeout_s};
    struct http *c = NULL;
    *status = 0;
    int rc = http_new(&s, &c, e);
    if (rc != 0) return rc;
    struct http_req r = {.method = req->method,
                         .url = req->url,
                         .body = req->body,
                         .body_len = req->body ? strlen(req->body) : 0,
                         .body_fd = -1,
                         .out = out,
                         .out_max = CRED_HTTP_BODY_MAX,
                         .timeout_s = req->timeout_s,
                         .all_answers = true,
                         .prepare = cred_prepare,
                         .failed = cred_failed,
                         .ctx = (void *)req};
    rc = http_request(c, &r, e);
    http_free(c);
    if (r.prepare_failed) return rc;
    if (rc == 0) {
        *status = r.status;
        return 0;
    }
    if (r.cc == CURLE_WRITE_ERROR)
        return err_set(e, ERR_FAIL, "%s at %s: the answer is larger than %u bytes", req->what,
                       req->url, CRED_HTTP_BODY_MAX);
    char why[CURL_ERROR_SIZE + 64];
    http_describe_transfer(&r, why, sizeof why);
    return err_set(e, ERR_FAIL, "%s at %s: %s", req->what, req->url, why);
}

void cred_http_clean(char *dst, size_t cap, const char *s, size_t len)
{
    size_t n = 0;
    for (; n + 1 < cap && n < len && s[n]; n++)
        dst[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    if (cap) dst[n] = '\0';
}

int cred_http_form_add(struct buf *b, const char *name, const char *value)
{
    char *enc = curl_easy_escape(NULL, value, 0);
    int rc = enc ? 0 : -1;
    if (rc == 0 && b->len && buf_append(b, "&", 1) < 0) rc = -1;
    if (rc == 0 && (buf_append(b, name, strlen(name)) < 0 || buf_append(b, "=", 1) < 0 ||
                    buf_append(b, enc, strlen(enc)) < 0))
        rc = -1;
    curl_free(enc);
    return rc;
}

int cred_http_read_token(const char *path, const char *what, char **out, struct err *e)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        err_sys(e, errno, "reading the %s token file %s", what, path);
        return e->code = ERR_FAIL;
    }
    char *s = malloc(CRED_HTTP_TOKEN_MAX + 1);
    size_t n = s ? fread(s, 1, CRED_HTTP_TOKEN_MAX + 1, f) : 0;
    bool failed = ferror(f);
    fclose(f);
    if (!s) return err_set(e, ERR_FAIL, "reading %s: out of memory", path);
    int rc = 0;
    if (failed)
        rc = err_set(e, ERR_FAIL, "reading the %s token file %s failed", what, path);
    else if (n > CRED_HTTP_TOKEN_MAX)
        rc = err_set(e, ERR_FAIL, "the %s token file %s is larger than %u bytes", what, path,
                     CRED_HTTP_TOKEN_MAX);
    while (rc == 0 && n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        n--;
    if (rc == 0 && n == 0) rc = err_set(e, ERR_FAIL, "the %s token file %s is empty", what, path);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s[n] = '\0';
    *out = s;
    return 0;
}

time_t cred_http_refresh_at(time_t expires, time_t fetched, long window_s)
{
    if (expires == 0) return 0;
    time_t half = expires > fetched ? (expires - fetched) / 2 : 0;
    return expires - ((time_t)window_s < half ? (time_t)window_s : half);
}
