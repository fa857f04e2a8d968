/* azure_token.c - Microsoft Entra ID tokens; see azure_token.h. */
#include "backend/azure_token.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cred_http.h"

struct azure_token {
    char *url;  /* the token endpoint, with the query for managed identity */
    char *form; /* the POST body without the assertion (Entra ID), or NULL (managed identity) */
    char *assertion_file;
    char *cacert;
    bool insecure;
    long window_s, timeout_s;
    pthread_mutex_t mu;
    char *token; /* under mu */
    time_t expires, refresh_at;
    unsigned long fetches;
};

static bool set(const char *s)
{
    return s && *s;
}

void azure_token_opts_from(struct azure_token_opts *t, const struct backend_opts *o)
{
    *t = (struct azure_token_opts){.tenant_id = o->azure_tenant_id,
                                   .client_id = o->azure_client_id,
                                   .client_secret = o->azure_client_secret,
                                   .federated_token_file = o->azure_federated_token_file,
                                   .authority_host = o->azure_authority_host,
                                   .imds_host = o->azure_imds_host,
                                   .cacert = o->cacert,
                                   .insecure_tls = o->insecure_tls,
                                   .refresh_window_s = o->cred_refresh_s,
                                   .timeout_s = o->connect_timeout_s};
}

static int json_seconds(json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    char *end = NULL;
    if (!s || !*s) return -1;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno || *end ? -1 : 0;
}

int azure_token_parse(const char *json, size_t len, time_t now, char **token, time_t *expires,
                      struct err *e)
{
    *token = NULL;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return err_set(e, ERR_FAIL, "token answer: not a JSON object");
    }
    const char *error = json_string_value(json_object_get(o, "error"));
    const char *desc = json_string_value(json_object_get(o, "error_description"));
    const char *tok = json_string_value(json_object_get(o, "access_token"));
    long long in = 0, on = 0;
    bool has_in = json_seconds(json_object_get(o, "expires_in"), &in) == 0;
    bool has_on = json_seconds(json_object_get(o, "expires_on"), &on) == 0;
    int rc = 0;
    if (error) {
        char a[128], b[600];
        cred_http_clean(a, sizeof a, error, strlen(error));
        cred_http_clean(b, sizeof b, desc ? desc : "", desc ? strlen(desc) : 0);
        rc = err_set(e, ERR_FAIL, "refused: %s%s%s", a, b[0] ? ": " : "", b);
    } else if (!set(tok)) {
        rc = err_set(e, ERR_FAIL, "token answer: no access_token");
    } else if ((!has_in || in <= 0) && (!has_on || on <= (long long)now)) {
        rc = err_set(e, ERR_FAIL, "token answer: no usable expires_in or expires_on");
    } else if (!(*token = strdup(tok))) {
        rc = err_set(e, ERR_FAIL, "out of memory");
    } else {
        *expires = has_in && in > 0 ? now + (time_t)in : (time_t)on;
    }
    json_decref(o);
    return rc;
}

/* The URL and form of the chosen flow. */
static int build(struct azure_token *t, const struct azure_token_opts *o, struct err *e)
{
    const char *resource = set(o->resource) ? o->resource : AZURE_TOKEN_RESOURCE;
    struct buf b = BUF_INIT;
    char *scope = NULL;
    int rc = 0;
    if (set(o->tenant_id) || set(o->client_secret) || set(o->federated_token_file)) {
        if (!set(o->tenant_id) || !set(o->client_id))
            return err_set(e, ERR_FAIL,
                           "Microsoft Entra ID needs AZURE_TENANT_ID and AZURE_CLIENT_ID with "
                           "AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE");
        if (set(o->client_secret) == set(o->federated_token_file))
            return err_set(e, ERR_FAIL,
                           "Microsoft Entra ID: give one of AZURE_CLIENT_SECRET and "
                           "AZURE_FEDERATED_TOKEN_FILE");
        const char *auth = set(o->authority_host) ? o->authority_host : AZURE_TOKEN_AUTHORITY;
        size_t n = strlen(auth);
        if (strncmp(auth, "https://", 8) != 0 && strncmp(auth, "http://", 7) != 0)
            return err_set(e, ERR_FAIL, "AZURE_AUTHORITY_HOST \"%.100s\" is not an http(s) URL",
                           auth);
        if (asprintf(&t->url, "%s%s%s/oauth2/v2.0/token", auth, auth[n - 1] == '/' ? "" : "/",
                     o->tenant_id) < 0 ||
            asprintf(&scope, "%s.default", resource) < 0) {
            t->url = NULL;
            scope = NULL;
            rc = -1;
        }
        if (rc == 0 && (cred_http_form_add(&b, "client_id", o->client_id) < 0 ||
                        cred_http_form_add(&b, "grant_type", "client_credentials") < 0 ||
                        cred_http_form_add(&b, "scope", scope) < 0))
            rc = -1;
        if (rc == 0 && set(o->client_secret) &&
            cred_http_form_add(&b, "client_secret", o->client_secret) < 0)
            rc = -1;
        if (rc == 0 && set(o->federated_token_file) &&
            (cred_http_form_add(&b, "client_assertion_type",
                                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") < 0 ||
             !(t->assertion_file = strdup(o->federated_token_file))))
            rc = -1;
        if (rc == 0 && buf_append(&b, "", 1) < 0) rc = -1;
        if (rc == 0)
            t->form = (char *)b.data;
        else
            buf_free(&b);
    } else {
        char *enc = curl_easy_escape(NULL, resource, 0);
        char *cid = set(o->client_id) ? curl_easy_escape(NULL, o->client_id, 0) : NULL;
        const char *ep = set(o->msi_endpoint) ? o->msi_endpoint : AZURE_TOKEN_MSI, *host = "";
        if (!set(o->msi_endpoint) && set(o->imds_host)) {
            host = o->imds_host;
            ep = host[strlen(host) - 1] == '/' ? "metadata/identity/oauth2/token"
                                               : "/metadata/identity/oauth2/token";
        }
        if (!enc || (set(o->client_id) && !cid) ||
            asprintf(&t->url, "%s%s?api-version=2018-02-01&resource=%s%s%s", host, ep, enc,
                     cid ? "&client_id=" : "", cid ? cid : "") < 0) {
            t->url = NULL;
            rc = -1;
        }
        curl_free(enc);
        curl_free(cid);
    }
    free(scope);
    return rc < 0 ? err_set(e, ERR_FAIL, "out of memory") : 0;
}

static int fetch(struct azure_token *t, char **token, time_t *expires, struct err *e)
{
    struct buf body = BUF_INIT, ans = BUF_INIT;
    char *assertion = NULL;
    int rc = 0;
    if (t->assertion_file)
        rc = cred_http_read_token(t->assertion_file, "AZURE_FEDERATED_TOKEN_FILE", &assertion, e);
    if (rc == 0 && t->form &&
        (buf_append(&body, t->form, strlen(t->form)) < 0 ||
         (assertion && cred_http_form_add(&body, "client_assertion", assertion) < 0) ||
         buf_append(&body, "", 1) < 0))
        rc = err_set(e, ERR_FAIL, "out of memory");
    static const char *const post_hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                                            "Accept: application/json", NULL};
    static const char *const msi_hdrs[] = {"Metadata: true", "Accept: application/json", NULL};
    struct cred_http_req r = {.method = t->form ? "POST" : "GET",
                              .url = t->url,
                              .headers = t->form ? post_hdrs : msi_hdrs,
                              .body = t->form ? (const char *)body.data : NULL,
                              .cacert = t->cacert,
                              .insecure_tls = t->insecure,
                              .timeout_s = t->timeout_s,
                              .attempts = 3,
                              .what =
                                  t->form ? "Microsoft Entra ID token" : "managed identity token"};
    long status = 0;
    if (rc == 0 && cred_http_do(&r, &status, &ans, e) == 0) {
        /* An answer: what it says, under the endpoint's name (the transport names it itself). */
        rc = azure_token_parse((const char *)ans.data, ans.len, time(NULL), token, expires, e);
        if (rc == 0 && status / 100 != 2) {
            free(*token);
            *token = NULL;
            rc = err_set(e, ERR_FAIL, "HTTP %ld", status);
        } else if (rc < 0 && status / 100 != 2 && !strstr(e->msg, "refused")) {
            char text[200];
            cred_http_clean(text, sizeof text, (const char *)ans.data, ans.len);
            err_set(e, ERR_FAIL, "HTTP %ld: %s", status, text);
        }
        if (rc < 0) err_wrap(e, "%s from %s", r.what, t->url);
    } else if (rc == 0) {
        rc = e->code;
    }
    if (assertion) sodium_memzero(assertion, strlen(assertion));
    if (body.data) sodium_memzero(body.data, body.len);
    free(assertion);
    buf_free(&body);
    buf_free(&ans);
    return rc;
}

int azure_token_open(const struct azure_token_opts *o, struct azure_token **out, struct err *e)
{
    *out = NULL;
    struct azure_token *t = calloc(1, sizeof *t);
    if (!t) return err_set(e, ERR_FAIL, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    t->insecure = o->insecure_tls;
    t->window_s = o->refresh_window_s;
    t->timeout_s = o->timeout_s > 0 ? o->timeout_s : 10;
    int rc = 0;
    if (set(o->cacert) && !(t->cacert = strdup(o->cacert)))
        rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) rc = build(t, o, e);
    if (rc == 0) rc = fetch(t, &t->token, &t->expires, e);
    if (rc < 0) {
        azure_token_close(t);
        return rc;
    }
    t->fetches = 1;
    t->refresh_at = cred_http_refresh_at(t->expires, time(NULL), t->window_s);
    *out = t;
    return 0;
}

int azure_token_get(struct azure_token *t, char **token, struct err *e)
{
    int rc = 0;
    *token = NULL;
    pthread_mutex_lock(&t->mu);
    time_t now = time(NULL);
    if (now >= t->refresh_at) {
        char *fresh = NULL;
        time_t exp = 0;
        struct err fe;
        if (fetch(t, &fresh, &exp, &fe) == 0) {
            sodium_memzero(t->token, strlen(t->token));
            free(t->token);
            t->token = fresh;
            t->expires = exp;
            t->refresh_at = cred_http_refresh_at(exp, now, t->window_s);
            t->fetches++;
        } else if (now >= t->expires) {
            rc = err_set(e, ERR_FAIL, "%s", fe.msg);
        }
    }
    if (rc == 0 && !(*token = strdup(t->token))) rc = err_set(e, ERR_FAIL, "out of memory");
    pthread_mutex_unlock(&t->mu);
    return rc;
}

unsigned long azure_token_fetches(struct azure_token *t)
{
    pthread_mutex_lock(&t->mu);
    unsigned long n = t->fetches;
    pthread_mutex_unlock(&t->mu);
    return n;
}

void azure_token_close(struct azure_token *t)
{
    if (!t) return;
    if (t->token) sodium_memzero(t->token, strlen(t->token));
    if (t->form) sodium_memzero(t->form, strlen(t->form));
    free(t->token);
    free(t->form);
    free(t->url);
    free(t->assertion_file);
    free(t->cacert);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
