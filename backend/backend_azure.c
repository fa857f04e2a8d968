/* backend_azure.c - the backend that keeps objects as block blobs in an Azure Blob Storage
 * container (Azure, or Azurite).
 *
 * Every request carries x-ms-date and one pinned x-ms-version, and is authorized in one place
 * (authorize): Shared Key (HMAC-SHA256 of Azure's string-to-sign, "Authorize with Shared Key")
 * or a SAS appended to the query as given; a bearer token from Microsoft Entra ID slots in
 * there too. Small objects go up in one Put Blob; larger ones block by block from the file
 * (bounded memory), made visible by the Put Block List that commits them, so a failed upload
 * leaves nothing. Retries (backend/http.c) on 5xx, ServerBusy, OperationTimedOut, resets; 403
 * fails at once with the server's reason. Thread-safe like backend/http.c. */
#include "backend/backend_azure.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/azure_token.h"
#include "backend/azure_xml.h"
#include "backend/http.h"
#include "backend/s3_xml.h"

#define LIST_BODY_MAX (16u << 20)
#define KEY_MAX 128 /* decoded Shared Key bytes (Azure's are 64) */
#define LOCATION_FORM "expected azure:CONTAINER[/PREFIX]"

struct az {
    struct backend b;
    /* Immutable after open. */
    struct http *http;
    char *account;             /* for Shared Key's canonical resource and header */
    uint8_t key[KEY_MAX];      /* the decoded Shared Key */
    size_t key_len;            /* 0: no Shared Key (SAS or token) */
    struct azure_token *token; /* Microsoft Entra ID, or NULL; thread-safe itself */
    char *sas;                 /* or NULL */
    char *container;
    char *base;       /* endpoint + "/" + container: the container's URL */
    char *canon_base; /* "/" + account + the URL path of base, for the canonical resource */
    char *prefix;     /* "" or "some/prefix/" */
    long list_max;
    uint64_t block_size;
};

static struct az *as_az(struct backend *b)
{
    return (struct az *)b;
}

/* ---- settings ---- */

void azure_account_free(struct azure_account *a)
{
    if (a->key) sodium_memzero(a->key, strlen(a->key));
    if (a->sas) sodium_memzero(a->sas, strlen(a->sas));
    free(a->account);
    free(a->key);
    free(a->sas);
    free(a->endpoint);
    memset(a, 0, sizeof *a);
}

/* Azurite's published development account (UseDevelopmentStorage=true). */
#define DEV_ACCOUNT "devstoreaccount1"
#define DEV_KEY                                                                                    \
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#define DEV_ENDPOINT "http://127.0.0.1:10000/" DEV_ACCOUNT

struct conn_fields {
    const char *name;
    size_t off;
};

/* The fields of a connection string we read; values are views into a copy of it. */
struct conn {
    char *copy;
    const char *account, *key, *sas, *endpoint, *protocol, *suffix, *dev;
};

static const struct conn_fields conn_fields[] = {
    {"AccountName", offsetof(struct conn, account)},
    {"AccountKey", offsetof(struct conn, key)},
    {"SharedAccessSignature", offsetof(struct conn, sas)},
    {"BlobEndpoint", offsetof(struct conn, endpoint)},
    {"DefaultEndpointsProtocol", offsetof(struct conn, protocol)},
    {"EndpointSuffix", offsetof(struct conn, suffix)},
    {"UseDevelopmentStorage", offsetof(struct conn, dev)},
};

/* Splits "Key=Value;Key=Value" (values may hold '='; other keys, such as QueueEndpoint, are
 * ignored). */
static int conn_parse(const char *cs, struct conn *c, struct err *e)
{
    memset(c, 0, sizeof *c);
    if (!(c->copy = strdup(cs))) return err_set(e, ERR_FAIL, "out of memory");
    char *save = NULL;
    for (char *part = strtok_r(c->copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
        while (*part == ' ')
            part++;
        if (!*part) continue;
        char *eq = strchr(part, '=');
        if (!eq || eq == part)
            return err_set(e, ERR_FAIL, "\"%.40s\" is not Key=Value (parts are separated by ';')",
                           part);
        *eq = '\0';
        for (size_t i = 0; i < sizeof conn_fields / sizeof conn_fields[0]; i++)
            if (strcasecmp(part, conn_fields[i].name) == 0)
                *(const char **)(void *)((char *)c + conn_fields[i].off) = eq + 1;
    }
    return 0;
}

static int dup_or_null(char **dst, const char *v)
{
    *dst = NULL;
    if (!v || !*v) return 0;
    return (*dst = strdup(v)) ? 0 : -1;
}

/* Fills `out` from a parsed connection string. */
static int resolve_conn(const struct conn *c, struct azure_account *out, struct err *e)
{
    if (c->dev && strcasecmp(c->dev, "true") == 0) {
        if (dup_or_null(&out->account, DEV_ACCOUNT) < 0 || dup_or_null(&out->key, DEV_KEY) < 0 ||
            dup_or_null(&out->endpoint, DEV_ENDPOINT) < 0)
            return err_set(e, ERR_FAIL, "out of memory");
        return 0;
    }
    if (dup_or_null(&out->account, c->account) < 0 || dup_or_null(&out->key, c->key) < 0 ||
        dup_or_null(&out->sas, c->sas) < 0 || dup_or_null(&out->endpoint, c->endpoint) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    if (!out->endpoint && out->account &&
        asprintf(&out->endpoint, "%s://%s.blob.%s", c->protocol ? c->protocol : "https",
                 out->account, c->suffix ? c->suffix : "core.windows.net") < 0) {
        out->endpoint = NULL;
        return err_set(e, ERR_FAIL, "out of memory");
    }
    if (!out->key && !out->sas)
        return err_set(e, ERR_FAIL, "it has neither AccountKey nor SharedAccessSignature");
    if (!out->endpoint) return err_set(e, ERR_FAIL, "it has neither AccountName nor BlobEndpoint");
    if (out->key && !out->account)
        return err_set(e, ERR_FAIL, "it has an AccountKey but no AccountName");
    return 0;
}

static bool set(const char *s)
{
    return s && *s;
}

static int resolve_vars(const struct backend_opts *o, struct azure_account *out, struct err *e)
{
    if (dup_or_null(&out->account, o->azure_account) < 0 ||
        dup_or_null(&out->key, o->azure_key) < 0 || dup_or_null(&out->sas, o->azure_sas) < 0 ||
        dup_or_null(&out->endpoint, o->azure_endpoint) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    out->entra = !out->key && !out->sas &&
                 (o->azure_login || set(o->azure_tenant_id) || set(o->azure_client_id) ||
                  set(o->azure_federated_token_file));
    if (!out->key && !out->sas && !out->entra)
        return err_set(e, ERR_FAIL,
                       "no Azure credentials: set " BACKEND_AZURE_ENV_CONNECTION_STRING
                       ", or " BACKEND_AZURE_ENV_ACCOUNT " with " BACKEND_AZURE_ENV_KEY
                       " or " BACKEND_AZURE_ENV_SAS ", or Microsoft Entra ID (AZURE_TENANT_ID "
                       "and AZURE_CLIENT_ID with AZURE_CLIENT_SECRET or "
                       "AZURE_FEDERATED_TOKEN_FILE; " BACKEND_AZURE_ENV_AUTH_MODE
                       "=login for the managed identity)");
    if (!out->account && (out->key || !out->endpoint))
        return err_set(e, ERR_FAIL, "no Azure storage account: set " BACKEND_AZURE_ENV_ACCOUNT);
    if (!out->endpoint &&
        asprintf(&out->endpoint, "https://%s.blob.core.windows.net", out->account) < 0) {
        out->endpoint = NULL;
        return err_set(e, ERR_FAIL, "out of memory");
    }
    return 0;
}

/* The checks every resolved account passes: a decodable key, a plain account name, an http(s)
 * endpoint; the SAS loses a leading '?' and the endpoint its trailing '/'. */
static int resolve_check(struct azure_account *a, struct err *e)
{
    if (a->key) {
        uint8_t bin[KEY_MAX];
        size_t n = 0;
        int bad = sodium_base642bin(bin, sizeof bin, a->key, strlen(a->key), NULL, &n, NULL,
                                    sodium_base64_VARIANT_ORIGINAL);
        sodium_memzero(bin, sizeof bin);
        if (bad || n == 0) return err_set(e, ERR_FAIL, "the account key is not base64");
    }
    if (a->account &&
        strspn(a->account, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(a->account))
        return err_set(e, ERR_FAIL, "bad account name \"%.64s\" (a-z and 0-9 only)", a->account);
    if (strncmp(a->endpoint, "http://", 7) != 0 && strncmp(a->endpoint, "https://", 8) != 0)
        return err_set(e, ERR_FAIL, "endpoint \"%.100s\" is not an http:// or https:// URL",
                       a->endpoint);
    size_t n = strlen(a->endpoint);
    while (n > 0 && a->endpoint[n - 1] == '/')
        a->endpoint[--n] = '\0';
    if (strpbrk(a->endpoint, "?# ")) return err_set(e, ERR_FAIL, "endpoint has a query or space");
    if (a->sas && a->sas[0] == '?') memmove(a->sas, a->sas + 1, strlen(a->sas));
    return 0;
}

int azure_resolve(const struct backend_opts *o, struct azure_account *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    int rc;
    if (o->azure_connection_string && *o->azure_connection_string) {
        struct conn c;
        rc = conn_parse(o->azure_connection_string, &c, e);
        if (rc == 0) rc = resolve_conn(&c, out, e);
        if (c.copy) sodium_memzero(c.copy, strlen(o->azure_connection_string));
        free(c.copy);
    } else {
        rc = resolve_vars(o, out, e);
    }
    if (rc == 0) rc = resolve_check(out, e);
    if (rc < 0) azure_account_free(out);
    return rc;
}

/* ---- location ---- */

static bool container_ok(const char *c)
{
    size_t n = strlen(c);
    if (n < 3 || n > 63 || c[0] == '-' || c[n - 1] == '-' || strstr(c, "--")) return false;
    return strspn(c, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* Splits "azure:CONTAINER[/PREFIX]". */
static int parse_location(struct az *a, const char *loc, struct err *e)
{
    const char *rest = loc + strlen("azure:");
    const char *slash = strchr(rest, '/');
    size_t clen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!(a->container = strndup(rest, clen))) return err_set(e, ERR_FAIL, "out of memory");
    if (!container_ok(a->container))
        return err_set(
            e, ERR_FAIL,
            "%s: bad container name \"%.64s\" (3 to 63 of a-z 0-9 and single '-'; " LOCATION_FORM
            ")",
            loc, a->container);
    const char *p = slash ? slash + 1 : "";
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    if (strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") < plen ||
        strstr(p, "//"))
        return err_set(e, ERR_FAIL, "%s: the prefix may hold only A-Z a-z 0-9 - _ . and single '/'",
                       loc);
    if (asprintf(&a->prefix, "%.*s%s", (int)plen, p, plen ? "/" : "") < 0) {
        a->prefix = NULL;
        return err_set(e, ERR_FAIL, "out of memory");
    }
    return 0;
}

/* The URL of the container and the canonical resource that Shared Key signs for it. */
static int set_base(struct az *a, const struct azure_account *acct, struct err *e)
{
    const char *host = strstr(acct->endpoint, "://") + 3;
    const char *path = strchr(host, '/');
    if (asprintf(&a->base, "%s/%s", acct->endpoint, a->container) < 0) a->base = NULL;
    if (asprintf(&a->canon_base, "/%s%s/%s", acct->account ? acct->account : "", path ? path : "",
                 a->container) < 0)
        a->canon_base = NULL;
    if (!a->base || !a->canon_base) return err_set(e, ERR_FAIL, "out of memory");
    return 0;
}

static int load_account(struct az *a, const struct backend_opts *o, struct err *e)
{
    struct azure_account acct;
    int rc = azure_resolve(o, &acct, e);
    if (rc == 0 && acct.key &&
        sodium_base642bin(a->key, sizeof a->key, acct.key, strlen(acct.key), NULL, &a->key_len,
                          NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
        rc = err_set(e, ERR_FAIL, "the account key is not base64");
    if (rc == 0 &&
        (dup_or_null(&a->account, acct.account) < 0 || dup_or_null(&a->sas, acct.sas) < 0))
        rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) rc = set_base(a, &acct, e);
    if (rc == 0 && acct.entra) {
        struct azure_token_opts t;
        azure_token_opts_from(&t, o);
        rc = azure_token_open(&t, &a->token, e);
    }
    azure_account_free(&acct);
    return rc;
}

/* ---- requests ---- */

/* A query parameter or an x-ms- header: name and (unencoded) value. */
struct kv {
    const char *k, *v;
};

#define CALL_MAX 6

/* One request to Azure, as its parts: what the URL, the headers and the signature are made of. */
struct call {
    struct az *a;
    const char *method;
    const char *what; /* the object name, or a description, for messages */
    const char *blob; /* the blob's full name (prefix + name), or NULL for the container */
    struct kv query[CALL_MAX];
    size_t nq;
    struct kv hdr[CALL_MAX]; /* x-ms- headers besides x-ms-date and x-ms-version */
    size_t nh;
    const char *if_none_match;
    const char *keep; /* a response header to keep (http_req.header_value); NULL: the error code */
    bool has_body;
    uint64_t body_len;
    /* the last answer's error, from x-ms-error-code or the body */
    struct s3_error err;
};

static int kv_cmp(const void *x, const void *y)
{
    return strcmp(((const struct kv *)x)->k, ((const struct kv *)y)->k);
}

/* Percent-encodes all but RFC 3986's unreserved characters (and '/' when asked). */
static int append_encoded(struct buf *b, const char *s, bool keep_slash)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char enc[4];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
        if (plain ? buf_append(b, s, 1) < 0
                  : (snprintf(enc, sizeof enc, "%%%02X", c), buf_append(b, enc, 3) < 0))
            return -1;
    }
    return 0;
}

static int append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

/* The request's URL: the container's, the blob's encoded name, the query, and the SAS. */
static char *call_url(const struct call *c)
{
    struct buf b = BUF_INIT;
    int rc = append_str(&b, c->a->base);
    if (rc == 0 && c->blob) rc = buf_append(&b, "/", 1) < 0 || append_encoded(&b, c->blob, true);
    for (size_t i = 0; rc == 0 && i < c->nq; i++)
        rc = append_str(&b, i ? "&" : "?") < 0 || append_str(&b, c->query[i].k) < 0 ||
             buf_append(&b, "=", 1) < 0 || append_encoded(&b, c->query[i].v, false) < 0;
    if (rc == 0 && c->a->sas)
        rc = append_str(&b, c->nq ? "&" : "?") < 0 || append_str(&b, c->a->sas) < 0;
    if (rc == 0) rc = buf_append(&b, "", 1);
    if (rc != 0) {
        buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* Azure's string-to-sign for Shared Key (version 2015-02-21 and later): the verb, eleven
 * standard headers (Content-Length empty when zero), the x-ms- headers sorted, each
 * "name:value\n", and the canonical resource: "/account/path" then "\nname:value" for each
 * query parameter, sorted, unencoded. `xms` must be sorted. */
static int string_to_sign(const struct call *c, const struct kv *xms, size_t nx, struct buf *b)
{
    char len[32] = "";
    if (c->has_body && c->body_len)
        snprintf(len, sizeof len, "%llu", (unsigned long long)c->body_len);
    const char *std[11] = {
        "", "", len, "", "", "", "", "", c->if_none_match ? c->if_none_match : "", "", ""};
    int rc = append_str(b, c->method) < 0 || buf_append(b, "\n", 1) < 0;
    for (size_t i = 0; rc == 0 && i < 11; i++)
        rc = append_str(b, std[i]) < 0 || buf_append(b, "\n", 1) < 0;
    for (size_t i = 0; rc == 0 && i < nx; i++)
        rc = append_str(b, xms[i].k) < 0 || buf_append(b, ":", 1) < 0 ||
             append_str(b, xms[i].v) < 0 || buf_append(b, "\n", 1) < 0;
    if (rc == 0) rc = append_str(b, c->a->canon_base);
    if (rc == 0 && c->blob) rc = buf_append(b, "/", 1) < 0 || append_encoded(b, c->blob, true);
    struct kv q[CALL_MAX];
    memcpy(q, c->query, c->nq * sizeof *q);
    qsort(q, c->nq, sizeof *q, kv_cmp);
    for (size_t i = 0; rc == 0 && i < c->nq; i++)
        rc = buf_append(b, "\n", 1) < 0 || append_str(b, q[i].k) < 0 || buf_append(b, ":", 1) < 0 ||
             append_str(b, q[i].v) < 0;
    return rc ? -1 : 0;
}

static int add_header(struct curl_slist **hdrs, const char *name, const char *value)
{
    char line[512];
    if ((size_t)snprintf(line, sizeof line, "%s: %s", name, value) >= sizeof line) return -1;
    struct curl_slist *t = curl_slist_append(*hdrs, line);
    if (!t) return -1;
    *hdrs = t;
    return 0;
}

/* A Microsoft Entra ID token's header: "Authorization: Bearer <token>", the token current (it is
 * fetched again before it expires). */
static int authorize_bearer(const struct call *c, struct curl_slist **hdrs, struct err *e)
{
    char *tok = NULL, *auth = NULL;
    int rc = azure_token_get(c->a->token, &tok, e);
    if (rc < 0) return err_wrap(e, "%s %s", c->method, c->what);
    if (asprintf(&auth, "Bearer %s", tok) < 0) auth = NULL;
    if (!auth || add_header(hdrs, "Authorization", auth) < 0)
        rc = err_set(e, ERR_FAIL, "%s %s: out of memory", c->method, c->what);
    sodium_memzero(tok, strlen(tok));
    free(tok);
    if (auth) sodium_memzero(auth, strlen(auth));
    free(auth);
    return rc;
}

/* What authorizes the request, the one place that knows: with a Shared Key the Authorization
 * header ("SharedKey account:base64(HMAC-SHA256(key, string-to-sign))"); with a Microsoft
 * Entra ID token "Bearer <token>"; with a SAS nothing (it is in the URL). `xms` are the x-ms-
 * headers sent, sorted. */
static int authorize(const struct call *c, const struct kv *xms, size_t nx,
                     struct curl_slist **hdrs, struct err *e)
{
    struct az *a = c->a;
    if (a->token) return authorize_bearer(c, hdrs, e);
    if (a->key_len == 0) return 0;
    struct buf sts = BUF_INIT;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    int rc = string_to_sign(c, xms, nx, &sts);
    if (rc == 0 && !HMAC(EVP_sha256(), a->key, (int)a->key_len, sts.data, sts.len, mac, &mac_len))
        rc = -1;
    char b64[sodium_base64_ENCODED_LEN(EVP_MAX_MD_SIZE, sodium_base64_VARIANT_ORIGINAL)];
    char auth[400];
    if (rc == 0) {
        sodium_bin2base64(b64, sizeof b64, mac, mac_len, sodium_base64_VARIANT_ORIGINAL);
        snprintf(auth, sizeof auth, "SharedKey %s:%s", a->account, b64);
        rc = add_header(hdrs, "Authorization", auth);
    }
    buf_free(&sts);
    return rc ? err_set(e, ERR_FAIL, "signing the request for %s: out of memory", c->what) : 0;
}

/* http's prepare: the headers of one attempt, dated now and signed. */
static int prepare(void *ctx, CURL *h, const struct http_req *r, struct curl_slist **hdrs,
                   struct err *e)
{
    const struct call *c = ctx;
    (void)h;
    (void)r;
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
    struct kv xms[CALL_MAX + 2];
    size_t nx = 0;
    for (size_t i = 0; i < c->nh; i++)
        xms[nx++] = c->hdr[i];
    xms[nx++] = (struct kv){"x-ms-date", date};
    xms[nx++] = (struct kv){"x-ms-version", BACKEND_AZURE_VERSION};
    qsort(xms, nx, sizeof *xms, kv_cmp);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < nx; i++)
        rc = add_header(hdrs, xms[i].k, xms[i].v);
    if (rc == 0 && c->if_none_match) rc = add_header(hdrs, "If-None-Match", c->if_none_match);
    if (rc != 0) return err_set(e, ERR_FAIL, "%s %s: out of memory", c->method, c->what);
    return authorize(c, xms, nx, hdrs, e);
}

/* Azure's messages end in "\nRequestId:...\nTime:..." (made '?' by the parser): cut that. */
static void trim_message(char *m)
{
    char *tail = strstr(m, "?RequestId:");
    if (tail) *tail = '\0';
}

/* http's failed: reads Azure's error code (the x-ms-error-code header, which HEAD answers carry
 * too, or the body's <Code>) and message; says whether to try again. */
static bool failed(void *ctx, struct http_req *r)
{
    struct call *c = ctx;
    memset(&c->err, 0, sizeof c->err);
    if (r->err_body.len)
        s3_xml_parse_error((const char *)r->err_body.data, r->err_body.len, &c->err);
    if (r->header_value[0] && !c->keep)
        snprintf(c->err.code, sizeof c->err.code, "%s", r->header_value);
    trim_message(c->err.message);
    static const char *const codes[] = {"ServerBusy", "OperationTimedOut", "InternalError"};
    if (http_status_retryable(r->status)) return true;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(c->err.code, codes[i]) == 0) return true;
    return false;
}

static int call_error(const struct call *c, const struct http_req *r, struct err *e)
{
    char detail[768], tail[64] = "";
    if (r->attempts > 1) snprintf(tail, sizeof tail, " (gave up after %d attempts)", r->attempts);
    int code = ERR_FAIL;
    if (r->cc != CURLE_OK) {
        http_describe_transfer(r, detail, sizeof detail);
    } else {
        const char *ec = c->err.code[0] ? c->err.code : "(no error code in the answer)";
        snprintf(detail, sizeof detail, "HTTP %ld %s%s%s", r->status, ec,
                 c->err.message[0] ? ": " : "", c->err.message);
        if (r->status == 404 && strcmp(c->err.code, "BlobNotFound") == 0) code = ERR_NOT_FOUND;
        if (strcmp(c->err.code, "ContainerNotFound") == 0)
            snprintf(tail + strlen(tail), sizeof tail - strlen(tail),
                     " (no container \"%.20s\"; init creates it)", c->a->container);
    }
    return err_set(e, code, "Azure %s of %s in %s: %s%s", c->method, c->what, c->a->b.location,
                   detail, tail);
}

/* Runs the call with the request's body and answer options in `r`. On failure r->status and
 * c->err describe the last answer. */
static int run(struct call *c, struct http_req *r, struct err *e)
{
    char *url = call_url(c);
    if (!url) return err_set(e, ERR_FAIL, "%s %s: out of memory", c->method, c->what);
    r->method = c->method;
    r->url = url;
    r->prepare = prepare;
    r->failed = failed;
    r->ctx = c;
    r->keep_header = c->keep ? c->keep : "x-ms-error-code";
    if (strcmp(c->method, "PUT") == 0) c->has_body = true;
    c->body_len = r->body_len;
    memset(&c->err, 0, sizeof c->err);
    int rc = http_request(c->a->http, r, e);
    if (rc < 0 && !r->prepare_failed) rc = call_error(c, r, e);
    free(url);
    return rc;
}

static char *blob_name(struct az *a, const char *name)
{
    char *full = NULL;
    return asprintf(&full, "%s%s", a->prefix, name) < 0 ? NULL : full;
}

/* ---- operations ---- */

/* Bytes [off, off+len) of memory `data`, or when data is NULL of the file `fd`. */
struct body {
    const uint8_t *data;
    int fd;
    uint64_t off, len;
};

static void body_req(struct http_req *r, const struct body *b)
{
    /* An empty body is sent from memory: nothing to read from the file. */
    r->body = b->data ? (const void *)(b->data + b->off) : (b->len ? NULL : "");
    r->body_fd = b->fd;
    r->body_off = b->off;
    r->body_len = b->len;
}

/* Every upload carries its random tag in this metadata, so that an upload that was retried can
 * tell its own blob from another's. */
#define TAG_HEADER "x-ms-meta-podvaultupload"
#define TAG_HEX 32

static void new_tag(char tag[TAG_HEX + 1])
{
    uint8_t rnd[TAG_HEX / 2];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(tag, TAG_HEX + 1, rnd, sizeof rnd);
}

/* Whether the blob carries `tag`: Get Blob Properties, its metadata. */
static bool blob_has_tag(struct az *a, const char *name, const char *blob, const char *tag)
{
    struct call c = {.a = a, .method = "HEAD", .what = name, .blob = blob, .keep = TAG_HEADER};
    struct http_req r = {0};
    struct err e;
    return run(&c, &r, &e) == 0 && strcmp(r.header_value, tag) == 0;
}

/* Taken names fail with ERR_EXISTS: If-None-Match: * answers 409 BlobAlreadyExists (or 412).
 * After a retry that answer may be about our own first attempt, which got through but whose
 * answer was lost: then the blob carries our tag, and the save succeeded. */
static int exists_error(struct call *c, const struct http_req *r, int rc, const char *tag,
                        struct err *e)
{
    if (rc < 0 && (r->status == 409 || r->status == 412) &&
        (strcmp(c->err.code, "BlobAlreadyExists") == 0 ||
         strcmp(c->err.code, "ConditionNotMet") == 0)) {
        if (r->attempts > 1 && blob_has_tag(c->a, c->what, c->blob, tag)) {
            err_clear(e);
            return 0;
        }
        return err_set(e, ERR_EXISTS, "saving %s in %s: the object already exists", c->what,
                       c->a->b.location);
    }
    return rc;
}

/* One Put Blob. */
static int put_blob(struct az *a, const char *name, const char *blob, const struct body *b,
                    bool overwrite, struct err *e)
{
    char tag[TAG_HEX + 1];
    new_tag(tag);
    struct call c = {.a = a, .method = "PUT", .what = name, .blob = blob, .nh = 2};
    c.hdr[0] = (struct kv){"x-ms-blob-type", "BlockBlob"};
    c.hdr[1] = (struct kv){TAG_HEADER, tag};
    c.if_none_match = overwrite ? NULL : "*";
    struct http_req r = {0};
    body_req(&r, b);
    return exists_error(&c, &r, run(&c, &r, e), tag, e);
}

/* Block IDs: the upload's random tag and the block's number, the same length for every block
 * (Azure's rule), base64 as Azure wants them. */
static void block_id(const char *tag, uint64_t i, char out[64])
{
    char raw[48];
    snprintf(raw, sizeof raw, "%s-%09llu", tag, (unsigned long long)i); /* 42 bytes */
    sodium_bin2base64(out, 64, (const unsigned char *)raw, strlen(raw),
                      sodium_base64_VARIANT_ORIGINAL);
}

/* Put Block for each block_size piece, then Put Block List, which alone makes the blob
 * visible: a failure before it leaves no object (Azure drops uncommitted blocks in a week). */
static int put_blocks(struct az *a, const char *name, const char *blob, const struct body *b,
                      bool overwrite, struct err *e)
{
    char tag[TAG_HEX + 1], id[64];
    new_tag(tag);
    struct buf list = BUF_INIT;
    int rc = append_str(&list, "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>") < 0
                 ? err_set(e, ERR_FAIL, "saving %s: out of memory", name)
                 : 0;
    for (uint64_t i = 0, off = 0; rc == 0 && off < b->len; i++, off += a->block_size) {
        block_id(tag, i, id);
        struct call c = {.a = a, .method = "PUT", .what = name, .blob = blob, .nq = 2};
        c.query[0] = (struct kv){"comp", "block"};
        c.query[1] = (struct kv){"blockid", id};
        struct body piece = *b;
        piece.off = b->off + off;
        piece.len = b->len - off < a->block_size ? b->len - off : a->block_size;
        struct http_req r = {0};
        body_req(&r, &piece);
        rc = run(&c, &r, e);
        if (rc == 0 && (append_str(&list, "<Latest>") < 0 || append_str(&list, id) < 0 ||
                        append_str(&list, "</Latest>") < 0))
            rc = err_set(e, ERR_FAIL, "saving %s: out of memory", name);
    }
    if (rc == 0 && append_str(&list, "</BlockList>") < 0)
        rc = err_set(e, ERR_FAIL, "saving %s: out of memory", name);
    if (rc == 0) {
        struct call c = {.a = a, .method = "PUT", .what = name, .blob = blob, .nq = 1, .nh = 1};
        c.query[0] = (struct kv){"comp", "blocklist"};
        c.hdr[0] = (struct kv){TAG_HEADER, tag};
        c.if_none_match = overwrite ? NULL : "*";
        struct http_req r = {.body = list.data, .body_len = list.len};
        rc = exists_error(&c, &r, run(&c, &r, e), tag, e);
    }
    buf_free(&list);
    return rc;
}

static int save_body(struct az *a, const char *name, const struct body *b, bool overwrite,
                     struct err *e)
{
    char *blob = blob_name(a, name);
    if (!blob) return err_set(e, ERR_FAIL, "saving %s: out of memory", name);
    int rc = b->len <= a->block_size ? put_blob(a, name, blob, b, overwrite, e)
                                     : put_blocks(a, name, blob, b, overwrite, e);
    free(blob);
    return rc;
}

static int az_save(struct backend *self, const char *name, const void *data, size_t len,
                   bool overwrite, struct err *e)
{
    struct body b = {.data = data ? data : (const uint8_t *)"", .fd = -1, .len = len};
    return save_body(as_az(self), name, &b, overwrite, e);
}

static int az_save_fd(struct backend *self, const char *name, int fd, uint64_t len, bool overwrite,
                      struct err *e)
{
    struct body b = {.fd = fd, .len = len};
    return save_body(as_az(self), name, &b, overwrite, e);
}

/* Get Blob Properties: the size. */
static int az_stat(struct backend *self, const char *name, uint64_t *size, struct err *e)
{
    struct az *a = as_az(self);
    char *blob = blob_name(a, name);
    if (!blob) return err_set(e, ERR_FAIL, "checking %s: out of memory", name);
    struct call c = {.a = a, .method = "HEAD", .what = name, .blob = blob};
    struct http_req r = {.whole = true};
    int rc = run(&c, &r, e);
    if (rc == 0) *size = r.length;
    free(blob);
    return rc;
}

/* Get Blob of the range asked for (x-ms-range), all of it when offset and len are 0. */
static int az_load(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                   struct buf *out, struct err *e)
{
    struct az *a = as_az(self);
    char *blob = blob_name(a, name);
    if (!blob) return err_set(e, ERR_FAIL, "loading %s: out of memory", name);
    char range[80] = "";
    if (len)
        snprintf(range, sizeof range, "bytes=%llu-%llu", (unsigned long long)offset,
                 (unsigned long long)(offset + len - 1));
    else if (offset)
        snprintf(range, sizeof range, "bytes=%llu-", (unsigned long long)offset);
    struct call c = {.a = a, .method = "GET", .what = name, .blob = blob};
    if (range[0]) c.hdr[c.nh++] = (struct kv){"x-ms-range", range};
    size_t start = out->len;
    struct http_req r = {.out = out, .out_max = len, .whole = true};
    if (len && len < SIZE_MAX / 4) (void)buf_reserve(out, (size_t)len);
    int rc = run(&c, &r, e);
    free(blob);
    if (rc < 0 && r.status == 416) {
        /* The range starts at or past the end: reading the empty rest of an object is fine. */
        uint64_t size = 0;
        struct err e2;
        if (az_stat(self, name, &size, &e2) < 0) return rc;
        return http_range_416(size, offset, len, name, a->b.location, e);
    }
    if (rc < 0) return rc;
    return http_range_fit(out, start, r.status, offset, len, name, a->b.location, e);
}

/* One List Blobs page; *marker is replaced by the next page's, NULL after the last. */
static int list_page(struct az *a, const char *full, char **marker, struct http_list *lc,
                     struct buf *body, struct err *e)
{
    char max[24], what[300];
    snprintf(max, sizeof max, "%ld", a->list_max);
    snprintf(what, sizeof what, "the listing of \"%.200s\"", full);
    struct call c = {.a = a, .method = "GET", .what = what, .nq = 0};
    c.query[c.nq++] = (struct kv){"restype", "container"};
    c.query[c.nq++] = (struct kv){"comp", "list"};
    if (*full) c.query[c.nq++] = (struct kv){"prefix", full}; /* none rather than empty */
    c.query[c.nq++] = (struct kv){"maxresults", max};
    if (*marker) c.query[c.nq++] = (struct kv){"marker", *marker};
    buf_reset(body);
    struct http_req r = {.out = body};
    int rc = run(&c, &r, e);
    if (rc == 0 && body->len > LIST_BODY_MAX)
        rc = err_set(e, ERR_FAIL, "listing %s in %s: page too large", full, a->b.location);
    struct azure_list_page page = {0};
    if (rc == 0) {
        rc = azure_xml_parse_list((const char *)body->data, body->len, http_list_entry, lc, &page,
                                  e);
        if (rc != 0 && !lc->stopped) err_wrap(e, "listing %s in %s", full, a->b.location);
    }
    /* A next page must move us on, or we would ask for it forever. */
    if (rc == 0 && page.next_marker && *marker && strcmp(page.next_marker, *marker) == 0)
        rc = err_set(e, ERR_FAIL, "listing %s in %s: the server gave the same marker again", full,
                     a->b.location);
    free(*marker);
    *marker = rc == 0 ? page.next_marker : NULL;
    if (rc != 0) azure_xml_page_free(&page);
    return rc;
}

static int az_list(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                   struct err *e)
{
    struct az *a = as_az(self);
    struct http_list lc = {.prefix = a->prefix, .cb = cb, .ctx = ctx};
    struct buf body = BUF_INIT;
    char *full = NULL, *marker = NULL;
    int rc = asprintf(&full, "%s%s", a->prefix, prefix) < 0
                 ? (full = NULL, err_set(e, ERR_FAIL, "listing %s: out of memory", prefix))
                 : 0;
    do
        if (rc == 0) rc = list_page(a, full, &marker, &lc, &body, e);
    while (rc == 0 && marker);
    free(marker);
    free(full);
    buf_free(&body);
    return rc;
}

/* Delete Blob. A missing blob answers 404 BlobNotFound, but after a retry that may mean that
 * our first attempt got through and its answer was lost: so Get Blob Properties first says
 * whether there is a blob, and a 404 after a retry is then our own doing. */
static int az_remove(struct backend *self, const char *name, struct err *e)
{
    struct az *a = as_az(self);
    uint64_t size;
    int rc = az_stat(self, name, &size, e);
    if (rc < 0) return rc == ERR_NOT_FOUND ? err_wrap(e, "removing %s", name) : rc;
    char *blob = blob_name(a, name);
    if (!blob) return err_set(e, ERR_FAIL, "removing %s: out of memory", name);
    struct call c = {.a = a, .method = "DELETE", .what = name, .blob = blob};
    struct http_req r = {0};
    rc = run(&c, &r, e);
    if (rc == ERR_NOT_FOUND && r.attempts > 1) {
        err_clear(e);
        rc = 0;
    }
    free(blob);
    return rc;
}

static void az_close(struct backend *self)
{
    struct az *a = as_az(self);
    http_free(a->http);
    azure_token_close(a->token);
    sodium_memzero(a->key, sizeof a->key);
    if (a->sas) sodium_memzero(a->sas, strlen(a->sas));
    free(a->account);
    free(a->sas);
    free(a->container);
    free(a->base);
    free(a->canon_base);
    free(a->prefix);
    free(a->b.location);
    free(a);
}

static const struct backend_ops az_ops = {
    .save = az_save,
    .save_fd = az_save_fd,
    .load = az_load,
    .stat = az_stat,
    .list = az_list,
    .remove = az_remove,
    .close = az_close,
};

/* `init`: Create Container; one that is there already (409 ContainerAlreadyExists) is fine.
 * Bad credentials show here, before anything is written. */
static int ensure_container(struct az *a, struct err *e)
{
    char what[100];
    snprintf(what, sizeof what, "container %s", a->container);
    struct call c = {.a = a, .method = "PUT", .what = what, .nq = 1};
    c.query[0] = (struct kv){"restype", "container"};
    struct http_req r = {.body = "", .body_len = 0};
    int rc = run(&c, &r, e);
    if (rc < 0 && r.status == 409 && strcmp(c.err.code, "ContainerAlreadyExists") == 0) {
        err_clear(e);
        rc = 0;
    }
    return rc;
}

int backend_azure_open(const char *location, const struct backend_opts *o, bool create,
                       struct backend **out, struct err *e)
{
    *out = NULL;
    struct az *a = calloc(1, sizeof *a);
    if (!a) return err_set(e, ERR_FAIL, "opening %s: out of memory", location);
    a->b.ops = &az_ops;
    a->list_max = o->list_max;
    a->block_size = (uint64_t)o->azure_block_size;
    a->b.save_slots = (unsigned)o->uploads;
    a->b.load_slots = (unsigned)o->downloads;
    struct http_settings hs = {.cacert = o->cacert,
                               .insecure_tls = o->insecure_tls,
                               .retries = o->retries,
                               .retry_delay_ms = o->retry_delay_ms,
                               .retry_max_delay_ms = o->retry_max_delay_ms,
                               .throttle_ms = o->throttle_time_s * 1000,
                               .connect_timeout_s = o->connect_timeout_s,
                               .stall_timeout_s = o->stall_timeout_s};
    int rc = (a->b.location = strdup(location)) ? 0 : err_set(e, ERR_FAIL, "out of memory");
    if (!rc) rc = parse_location(a, location, e);
    if (!rc) rc = load_account(a, o, e);
    if (!rc) rc = http_new(&hs, &a->http, e);
    if (!rc && create) rc = ensure_container(a, e);
    if (rc < 0) {
        if (!strstr(e->msg, location)) err_wrap(e, "opening %s", location);
        az_close(&a->b);
        return rc;
    }
    *out = &a->b;
    return 0;
}
