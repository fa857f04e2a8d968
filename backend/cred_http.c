/* cred_http.c - HTTP exchanges with credentials endpoints; see cred_http.h. */
#include "backend/cred_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct sink {
    struct buf *out;
    size_t start;
    bool too_big;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct sink *k = ud;
    size_t n = size * nmemb;
    if (k->out->len - k->start + n > CRED_HTTP_BODY_MAX) {
        k->too_big = true;
        return 0;
    }
    return buf_append(k->out, p, n) < 0 ? 0 : n;
}

static bool worth_again(CURLcode cc, long status)
{
    if (cc == CURLE_OK) return status >= 500 || status == 429;
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_OPERATION_TIMEDOUT ||
           cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING ||
           cc == CURLE_PARTIAL_FILE || cc == CURLE_COULDNT_RESOLVE_HOST;
}

static CURLcode one_attempt(CURL *h, const struct cred_http_req *req, struct curl_slist *hdrs,
                            struct sink *k, char *msg)
{
    curl_easy_reset(h);
    msg[0] = '\0';
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, msg);
    curl_easy_setopt(h, CURLOPT_URL, req->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "podvault/" PV_VERSION);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, req->timeout_s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, req->timeout_s);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    if (req->body || strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(req->body ? strlen(req->body) : 0));
    }
    if (req->cacert) curl_easy_setopt(h, CURLOPT_CAINFO, req->cacert);
    if (req->insecure_tls) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    k->out->len = k->start;
    k->too_big = false;
    return curl_easy_perform(h);
}

int cred_http_do(const struct cred_http_req *req, long *status, struct buf *out, struct err *e)
{
    struct curl_slist *hdrs = NULL;
    /* curl would add "Expect: 100-continue" and a form Content-Type on its own. */
    static const char *const always[] = {"Expect:", NULL};
    const char *const *lists[] = {always, req->headers};
    for (size_t l = 0; l < 2; l++)
        for (const char *const *hd = lists[l]; hd && *hd; hd++) {
            struct curl_slist *t = curl_slist_append(hdrs, *hd);
            if (!t) {
                curl_slist_free_all(hdrs);
                return err_set(e, ERR_FAIL, "%s: out of memory", req->what);
            }
            hdrs = t;
        }
    CURL *h = curl_easy_init();
    if (!h) {
        curl_slist_free_all(hdrs);
        return err_set(e, ERR_FAIL, "%s: out of memory", req->what);
    }
    struct sink k = {.out = out, .start = out->len};
    char msg[CURL_ERROR_SIZE];
    CURLcode cc = CURLE_OK;
    *status = 0;
    for (int n = 1; n <= req->attempts; n++) {
        cc = one_attempt(h, req, hdrs, &k, msg);
        *status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        if (k.too_big || !worth_again(cc, *status) || n == req->attempts) break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200000000L * n};
        nanosleep(&ts, NULL);
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (k.too_big) {
        out->len = k.start;
        return err_set(e, ERR_FAIL, "%s at %s: the answer is larger than %u bytes", req->what,
                       req->url, CRED_HTTP_BODY_MAX);
    }
    if (cc != CURLE_OK) {
        out->len = k.start;
        return err_set(e, ERR_FAIL, "%s at %s: %s%s%s", req->what, req->url, curl_easy_strerror(cc),
                       msg[0] ? ": " : "", msg);
    }
    return 0;
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
