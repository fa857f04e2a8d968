/* k8s.c - JSON requests to the Kubernetes API server over libcurl, and list+watch; see k8s.h. */
#include "agent/k8s.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "agent/asys.h"

#define RESPONSE_MAX (64u << 20) /* a list of every PVB of a busy cluster fits */
#define WATCH_LINE_MAX (16u << 20)
#define TOKEN_MAX (64u << 10)

const struct k8s_res K8S_PODS = {"", "v1", "pods", true};
const struct k8s_res K8S_PVCS = {"", "v1", "persistentvolumeclaims", true};
const struct k8s_res K8S_PVS = {"", "v1", "persistentvolumes", false};
const struct k8s_res K8S_SECRETS = {"", "v1", "secrets", true};
const struct k8s_res K8S_CONFIGMAPS = {"", "v1", "configmaps", true};
const struct k8s_res K8S_NODES = {"", "v1", "nodes", false};
const struct k8s_res K8S_CSIDRIVERS = {"storage.k8s.io", "v1", "csidrivers", false};
const struct k8s_res K8S_BSLS = {"velero.io", "v1", "backupstoragelocations", true};
const struct k8s_res K8S_PVBS = {"velero.io", "v1", "podvolumebackups", true};
const struct k8s_res K8S_BACKUPS = {"velero.io", "v1", "backups", true};
const struct k8s_res K8S_PVRS = {"velero.io", "v1", "podvolumerestores", true};
const struct k8s_res K8S_DAEMONSETS = {"apps", "v1", "daemonsets", true};

struct k8s_client {
    CURL *curl;
    char *server, *token, *token_file;
    const volatile int *stop;
    long last_status;
};

/* --- small helpers */

json_t *k8s_at(const json_t *obj, const char *path)
{
    char key[128];
    const json_t *cur = obj;
    while (cur && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof key) return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        cur = json_object_get(cur, key);
        path += n + (dot ? 1 : 0);
    }
    return (json_t *)cur;
}

const char *k8s_str(const json_t *obj, const char *path)
{
    return json_string_value(k8s_at(obj, path));
}

bool k8s_namespace_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n >= 1 && n <= 63 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n &&
           s[0] != '-' && s[n - 1] != '-';
}

/* Percent-encodes everything but RFC 3986 unreserved characters. */
static int escape_into(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            if (buf_put_u8(b, ch) < 0) return -1;
        } else {
            char enc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            if (buf_append(b, enc, 3) < 0) return -1;
        }
    }
    return 0;
}

static int put_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

char *k8s_path(const struct k8s_res *r, const char *ns, const char *name, const char *sub)
{
    struct buf b = BUF_INIT;
    int bad = *r->group ? put_str(&b, "/apis/") | put_str(&b, r->group) | put_str(&b, "/")
                        : put_str(&b, "/api/");
    bad |= put_str(&b, r->version);
    if (r->namespaced && ns) bad |= put_str(&b, "/namespaces/") | escape_into(&b, ns);
    bad |= put_str(&b, "/") | put_str(&b, r->plural);
    if (name) bad |= put_str(&b, "/") | escape_into(&b, name);
    if (sub) bad |= put_str(&b, "/") | put_str(&b, sub);
    bad |= buf_put_u8(&b, 0);
    if (bad) {
        buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* --- client */

int k8s_client_new(const struct k8s_config *c, const volatile int *stop, struct k8s_client **out,
                   struct err *e)
{
    struct k8s_client *k = calloc(1, sizeof *k);
    if (!k) return err_set(e, ERR_FAIL, "out of memory");
    k->stop = stop;
    k->curl = curl_easy_init();
    k->server = c->server ? strdup(c->server) : NULL;
    k->token = c->token ? strdup(c->token) : NULL;
    k->token_file = c->token_file ? strdup(c->token_file) : NULL;
    if (!k->curl || !k->server || (c->token && !k->token) || (c->token_file && !k->token_file)) {
        k8s_client_free(k);
        return err_set(e, ERR_FAIL, "creating the API client: out of memory or no server set");
    }
    CURL *h = k->curl;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 15L);
    if (c->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->ca_data.len) {
        struct curl_blob blob = {c->ca_data.data, c->ca_data.len, CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (c->cert_file) curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
    if (c->key_file) curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
    if (c->cert_data.len) {
        struct curl_blob blob = {c->cert_data.data, c->cert_data.len, CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &blob);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (c->key_data.len) {
        struct curl_blob blob = {c->key_data.data, c->key_data.len, CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &blob);
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    *out = k;
    return 0;
}

void k8s_client_free(struct k8s_client *k)
{
    if (!k) return;
    if (k->curl) curl_easy_cleanup(k->curl);
    free(k->server);
    free(k->token);
    free(k->token_file);
    free(k);
}

struct xfer {
    struct k8s_client *k;
    struct k8s_informer *inf; /* a watch: its failure streak ends when the server accepts it */
    struct buf body;          /* the response, or the error body of a failed watch */
    struct k8s_lines *lines;  /* a watch: 2xx bodies go here instead */
    int line_rc;              /* what the line handler returned, when it stopped the transfer */
};

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    long code = 0;
    curl_easy_getinfo(x->k->curl, CURLINFO_RESPONSE_CODE, &code);
    if (x->lines && code / 100 == 2) {
        x->line_rc = k8s_lines_feed(x->lines, data, len);
        return x->line_rc ? 0 : len;
    }
    if (x->body.len + len > RESPONSE_MAX || buf_append(&x->body, data, len) < 0) return 0;
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    long code = 0;
    curl_easy_getinfo(x->k->curl, CURLINFO_RESPONSE_CODE, &code);
    if (x->inf && code / 100 == 2)
        __atomic_store_n(&x->inf->stats.failure_streak, 0, __ATOMIC_RELAXED);
    return size * n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct k8s_client *k = ud;
    return k->stop && *k->stop ? 1 : 0;
}

/* The message of a Status body, or the start of whatever the body was. */
static void status_message(const struct buf *body, char *out, size_t cap)
{
    json_t *j = body->len ? json_loadb((const char *)body->data, body->len, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(j, "message"));
    if (m)
        snprintf(out, cap, "%s", m);
    else
        snprintf(out, cap, "%.*s", (int)(body->len < 200 ? body->len : 200),
                 body->data ? (const char *)body->data : "");
    json_decref(j);
}

static int code_error(long code, const char *method, const char *path, const struct buf *body,
                      struct err *e)
{
    char msg[512];
    status_message(body, msg, sizeof msg);
    int ec = code == 404                  ? ERR_NOT_FOUND
             : code == 409                ? ERR_EXISTS
             : code == 401 || code == 403 ? ERR_AUTH
                                          : ERR_FAIL;
    return err_set(e, ec, "%s %s: HTTP %ld: %s", method, path, code, msg);
}

/* Performs one transfer; *code receives the HTTP status. Transport failures return ERR_FAIL,
 * a stop request ERR_CANCELED; the caller judges the status code. */
static int perform(struct k8s_client *k, const char *method, const char *path, const char *body,
                   size_t body_len, const char *ctype, long timeout, struct xfer *x, long *code,
                   struct err *e)
{
    CURL *h = k->curl;
    char url[4096], auth[TOKEN_MAX + 32], ct[128];
    snprintf(url, sizeof url, "%s%s", k->server, path);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    const char *token = k->token;
    struct buf tok = BUF_INIT;
    if (k->token_file) {
        struct err te;
        if (asys_read_file(k->token_file, TOKEN_MAX, &tok, &te) == 0 && tok.len) {
            while (tok.len && (tok.data[tok.len - 1] == '\n' || tok.data[tok.len - 1] == '\r'))
                tok.data[--tok.len] = '\0';
            token = (const char *)tok.data;
        }
    }
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    buf_free(&tok);
    if (body) {
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype ? ctype : "application/json");
        hdrs = curl_slist_append(hdrs, ct);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, k);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    *code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
    k->last_status = *code;
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return err_set(e, ERR_CANCELED, "%s %s: stopped", method, path);
    if (rc == CURLE_WRITE_ERROR && x->line_rc) return 0; /* the line handler ended the watch */
    if (rc != CURLE_OK)
        return err_set(e, ERR_FAIL, "%s %s%s: %s", method, k->server, path, curl_easy_strerror(rc));
    return 0;
}

int k8s_request(struct k8s_client *k, const char *method, const char *path, json_t *body,
                const char *ctype, json_t **out, struct err *e)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text) return err_set(e, ERR_FAIL, "out of memory");
    struct xfer x = {.k = k};
    long code;
    int rc = perform(k, method, path, text, text ? strlen(text) : 0, ctype, 60, &x, &code, e);
    free(text);
    if (rc == 0 && code / 100 != 2) rc = code_error(code, method, path, &x.body, e);
    if (rc == 0 && out) {
        json_error_t je;
        *out = json_loadb(x.body.data ? (const char *)x.body.data : "", x.body.len, 0, &je);
        if (!*out)
            rc = err_set(e, ERR_FAIL, "%s %s: the answer is not JSON: %s", method, path, je.text);
    }
    buf_free(&x.body);
    return rc;
}

int k8s_get(struct k8s_client *k, const char *path, json_t **out, struct err *e)
{
    return k8s_request(k, "GET", path, NULL, NULL, out, e);
}

int k8s_put(struct k8s_client *k, const char *path, json_t *obj, json_t **out, struct err *e)
{
    return k8s_request(k, "PUT", path, obj, NULL, out, e);
}

int k8s_create(struct k8s_client *k, const char *path, json_t *obj, json_t **out, struct err *e)
{
    return k8s_request(k, "POST", path, obj, NULL, out, e);
}

int k8s_merge_patch(struct k8s_client *k, const char *path, json_t *patch, json_t **out,
                    struct err *e)
{
    return k8s_request(k, "PATCH", path, patch, "application/merge-patch+json", out, e);
}

long k8s_last_status(const struct k8s_client *k)
{
    return k->last_status;
}

/* --- line splitting */

int k8s_lines_feed(struct k8s_lines *l, const char *data, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (l->pending.len + take > l->max) return -1;
        if (buf_append(&l->pending, data, take) < 0) return -1;
        if (!nl) return 0;
        if (buf_put_u8(&l->pending, 0) < 0) return -1;
        size_t n = l->pending.len - 1;
        l->pending.len = 0;
        int rc = l->fn(l->ctx, (char *)l->pending.data, n);
        if (rc) return rc;
        data = nl + 1;
        len -= take + 1;
    }
    return 0;
}

void k8s_lines_free(struct k8s_lines *l)
{
    buf_free(&l->pending);
}

/* --- list + watch */

enum { WATCH_EXPIRED = 1, WATCH_FAILED = 2 }; /* line handler results; others come from fn */

struct watch_state {
    struct k8s_informer *inf;
    char rv[64];
    unsigned long events;
    int fn_rc;
    struct err *e;
};

static void remember_rv(struct watch_state *w, const json_t *obj)
{
    const char *rv = k8s_str(obj, "metadata.resourceVersion");
    if (rv && strlen(rv) < sizeof w->rv) snprintf(w->rv, sizeof w->rv, "%s", rv);
}

static int on_watch_line(void *ctx, char *line, size_t len)
{
    struct watch_state *w = ctx;
    if (len == 0) return 0;
    json_t *ev = json_loadb(line, len, 0, NULL);
    const char *type = k8s_str(ev, "type");
    json_t *obj = json_object_get(ev, "object");
    int rc = 0;
    if (!type || !json_is_object(obj)) {
        err_set(w->e, ERR_FAIL, "watch: malformed event: %.100s", line);
        rc = WATCH_FAILED;
    } else if (strcmp(type, "ERROR") == 0) {
        json_int_t code = json_integer_value(json_object_get(obj, "code"));
        const char *msg = k8s_str(obj, "message");
        err_set(w->e, ERR_FAIL, "watch: error event %lld: %s", (long long)code, msg ? msg : "");
        rc = code == 410 ? WATCH_EXPIRED : WATCH_FAILED;
    } else if (strcmp(type, "BOOKMARK") == 0) {
        remember_rv(w, obj);
    } else {
        enum k8s_event t = strcmp(type, "ADDED") == 0      ? K8S_ADDED
                           : strcmp(type, "MODIFIED") == 0 ? K8S_MODIFIED
                           : strcmp(type, "DELETED") == 0  ? K8S_DELETED
                                                           : K8S_SYNC;
        if (t == K8S_SYNC) {
            err_set(w->e, ERR_FAIL, "watch: unknown event type %s", type);
            rc = WATCH_FAILED;
        } else {
            remember_rv(w, obj);
            w->events++;
            __atomic_store_n(&w->inf->stats.failure_streak, 0, __ATOMIC_RELAXED);
            w->fn_rc = w->inf->fn(w->inf->ctx, t, obj);
            if (w->fn_rc) rc = w->fn_rc + 16; /* distinct from the handler's own codes */
        }
    }
    json_decref(ev);
    return rc;
}

/* The collection's path with the informer's selectors and `extra` (escaped already) as query. */
static char *collection_query(const struct k8s_informer *inf, const char *extra)
{
    char *base = k8s_path(inf->res, inf->ns, NULL, NULL);
    struct buf b = BUF_INIT;
    int bad = !base || put_str(&b, base);
    char sep = '?';
    if (inf->label_selector) {
        bad |= put_str(&b, "?labelSelector=") | escape_into(&b, inf->label_selector);
        sep = '&';
    }
    if (inf->field_selector) {
        bad |= buf_put_u8(&b, (uint8_t)sep) | put_str(&b, "fieldSelector=") |
               escape_into(&b, inf->field_selector);
        sep = '&';
    }
    bad |= buf_put_u8(&b, (uint8_t)sep) | put_str(&b, extra) | buf_put_u8(&b, 0);
    free(base);
    if (bad) {
        buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* "NAME=VALUE" with VALUE escaped, appended after `prefix`; NULL when memory is out. */
static char *query_with(const char *prefix, const char *name, const char *value)
{
    struct buf b = BUF_INIT;
    int bad = put_str(&b, prefix);
    if (value && *value) bad |= put_str(&b, name) | escape_into(&b, value);
    bad |= buf_put_u8(&b, 0);
    if (bad) {
        buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* Sleeps `secs`, waking early when the client is told to stop. */
static void nap(const struct k8s_client *k, double secs)
{
    for (double t = 0; t < secs && !(k->stop && *k->stop); t += 0.05)
        usleep(50000);
}

static int do_list(struct k8s_client *k, struct k8s_informer *inf, struct watch_state *w,
                   struct err *e)
{
    char cont[4096] = "";
    bool first = true;
    if ((w->fn_rc = inf->fn(inf->ctx, K8S_LIST_BEGIN, NULL)) != 0) return 0;
    do {
        char *q = query_with("limit=500", "&continue=", cont);
        char *path = q ? collection_query(inf, q) : NULL;
        free(q);
        if (!path) return err_set(e, ERR_FAIL, "out of memory");
        json_t *list = NULL;
        int rc = k8s_get(k, path, &list, e);
        free(path);
        if (rc < 0) return rc;
        json_t *items = json_object_get(list, "items");
        const char *rv = k8s_str(list, "metadata.resourceVersion");
        const char *next = k8s_str(list, "metadata.continue");
        if (!json_is_array(items) || (first && (!rv || strlen(rv) >= sizeof w->rv)) ||
            (next && strlen(next) >= sizeof cont)) {
            json_decref(list);
            return err_set(e, ERR_FAIL,
                           "list of %s: no items or resourceVersion, or an overlong "
                           "continue token",
                           inf->res->plural);
        }
        if (first) snprintf(w->rv, sizeof w->rv, "%s", rv); /* every page is of the first's */
        first = false;
        snprintf(cont, sizeof cont, "%s", next ? next : "");
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            if ((w->fn_rc = inf->fn(inf->ctx, K8S_LIST, it)) != 0) break;
        }
        json_decref(list);
    } while (cont[0] && !w->fn_rc);
    if (w->fn_rc) return 0;
    __atomic_add_fetch(&inf->stats.lists, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&inf->stats.failure_streak, 0, __ATOMIC_RELAXED);
    w->fn_rc = inf->fn(inf->ctx, K8S_SYNC, NULL);
    return 0;
}

int k8s_informer_run(struct k8s_client *k, struct k8s_informer *inf)
{
    struct err e;
    struct watch_state w = {.inf = inf, .e = &e};
    bool need_list = true;
    double backoff = 0.2;
    unsigned timeout = inf->watch_timeout ? inf->watch_timeout : 300;
    while (!(k->stop && *k->stop)) {
        err_clear(&e);
        int rc = 0;
        if (need_list) {
            rc = do_list(k, inf, &w, &e);
            if (w.fn_rc) return w.fn_rc;
            if (rc == 0) need_list = false;
        }
        long code = 0;
        bool quick_end = false;
        if (rc == 0) {
            char head[96];
            snprintf(head, sizeof head, "watch=1&allowWatchBookmarks=true&timeoutSeconds=%u",
                     timeout);
            char *q = query_with(head, "&resourceVersion=", w.rv);
            char *path = q ? collection_query(inf, q) : NULL;
            free(q);
            struct k8s_lines lines = {.max = WATCH_LINE_MAX, .fn = on_watch_line, .ctx = &w};
            struct xfer x = {.k = k, .lines = &lines, .inf = inf};
            time_t t0 = time(NULL);
            unsigned long ev0 = w.events;
            __atomic_add_fetch(&inf->stats.watches, 1, __ATOMIC_RELAXED);
            rc = path ? perform(k, "GET", path, NULL, 0, NULL, (long)timeout + 60, &x, &code, &e)
                      : err_set(&e, ERR_FAIL, "out of memory");
            if (w.fn_rc) {
                free(path);
                k8s_lines_free(&lines);
                buf_free(&x.body);
                return w.fn_rc;
            }
            if (rc == 0 && x.line_rc == WATCH_EXPIRED) {
                need_list = true;
            } else if (rc == 0 && code == 410) {
                need_list = true;
            } else if (rc == 0 && x.line_rc < 0) {
                rc = err_set(&e, ERR_FAIL, "watch of %s: an event line longer than %u bytes",
                             inf->res->plural, WATCH_LINE_MAX);
            } else if (rc == 0 && x.line_rc) {
                rc = ERR_FAIL; /* the line handler set the message */
            } else if (rc == 0 && code / 100 != 2) {
                rc = code_error(code, "GET", path, &x.body, &e);
            }
            quick_end = rc == 0 && !need_list && w.events == ev0 && time(NULL) - t0 < 1;
            free(path);
            k8s_lines_free(&lines);
            buf_free(&x.body);
            if (need_list) {
                __atomic_add_fetch(&inf->stats.expired, 1, __ATOMIC_RELAXED);
                /* Expired again with nothing seen since the list: do not spin. */
                if (w.events == ev0 && time(NULL) - t0 < 1) {
                    nap(k, backoff);
                    backoff = backoff * 2 > 30 ? 30 : backoff * 2;
                }
                continue;
            }
        }
        if (rc == ERR_CANCELED) break;
        if (rc < 0) {
            __atomic_add_fetch(&inf->stats.failures, 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&inf->stats.failure_streak, 1, __ATOMIC_RELAXED);
            if (inf->on_error) inf->on_error(inf->ctx, &e);
        } else {
            __atomic_add_fetch(&inf->stats.resumes, 1, __ATOMIC_RELAXED);
            if (!quick_end) {
                backoff = 0.2;
                continue;
            }
        }
        nap(k, backoff);
        backoff = backoff * 2 > 30 ? 30 : backoff * 2;
    }
    return 0;
}
