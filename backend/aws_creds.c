/* aws_creds.c - the AWS credentials chain; see aws_creds.h. The requests follow aws-sdk-go-v2:
 * credentials/stscreds/web_identity_provider.go (AssumeRoleWithWebIdentity, unsigned form POST),
 * credentials/endpointcreds/provider.go (GET with an Authorization header, JSON answer) and
 * credentials/ec2rolecreds/provider.go with feature/ec2/imds (PUT /latest/api/token, then the
 * role's name and its credentials under /latest/meta-data/iam/security-credentials/). */
#include "backend/aws_creds.h"

#include <curl/curl.h>
#include <errno.h>
#include <expat.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cred_http.h"

#define VALUE_MAX (16u << 10)
#define IMDS_DEFAULT "http://169.254.169.254"
#define IMDS_TOKEN_TTL "21600"
/* Instance metadata is a link-local service: it answers at once or not at all (off EC2). */
#define IMDS_TIMEOUT_S 2

enum source { SRC_KEYS, SRC_FILE, SRC_WEB, SRC_CONTAINER, SRC_IMDS };
static const char *const source_names[] = {"keys", "credentials file", "web identity",
                                           "container endpoint", "instance metadata"};

struct aws_creds {
    enum source src;
    /* settings, owned */
    char *role_arn, *token_file, *session_name, *sts_url;
    char *container_uri, *container_token, *container_token_file;
    char *imds;
    char *cacert;
    bool insecure;
    long window_s, timeout_s;
    /* state, under mu */
    pthread_mutex_t mu;
    struct aws_cred cur;
    time_t refresh_at; /* 0: never */
    unsigned long fetches;
};

void aws_cred_free(struct aws_cred *c)
{
    if (!c) return;
    if (c->secret_key) sodium_memzero(c->secret_key, strlen(c->secret_key));
    if (c->token) sodium_memzero(c->token, strlen(c->token));
    free(c->access_key);
    free(c->secret_key);
    free(c->token);
    memset(c, 0, sizeof *c);
}

static int cred_copy(struct aws_cred *dst, const struct aws_cred *src)
{
    memset(dst, 0, sizeof *dst);
    dst->expires = src->expires;
    dst->access_key = strdup(src->access_key);
    dst->secret_key = strdup(src->secret_key);
    dst->token = src->token ? strdup(src->token) : NULL;
    if (!dst->access_key || !dst->secret_key || (src->token && !dst->token)) {
        aws_cred_free(dst);
        return -1;
    }
    return 0;
}

/* ---- pure parts ---- */

int aws_creds_parse_time(const char *s, time_t *out)
{
    struct tm tm = {0};
    const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!p) return -1;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++) {
        }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0) return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    *out = t;
    return 0;
}

/* Checks a parsed set and fills `out` (which takes the strings). */
static int take_cred(char **id, char **secret, char **token, const char *exp, const char *what,
                     struct aws_cred *out, struct err *e)
{
    time_t t = 0;
    if (!*id || !**id || !*secret || !**secret)
        return err_set(e, ERR_FAIL, "%s: the answer carries no AccessKeyId or SecretAccessKey",
                       what);
    if (exp && *exp && aws_creds_parse_time(exp, &t) < 0)
        return err_set(e, ERR_FAIL, "%s: unreadable Expiration \"%.40s\"", what, exp);
    *out = (struct aws_cred){.access_key = *id, .secret_key = *secret, .expires = t};
    if (*token && **token) {
        out->token = *token;
        *token = NULL;
    }
    *id = *secret = NULL;
    return 0;
}

enum sts_field { F_ID, F_SECRET, F_TOKEN, F_EXP, F_CODE, F_MSG, F_N };
static const char *const sts_names[F_N] = {
    "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration", "Code", "Message"};

struct sts_px {
    XML_Parser p;
    int depth, field; /* field being read, -1 when none */
    bool bad;
    struct buf val[F_N];
};

static void sts_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct sts_px *x = ud;
    x->field = -1;
    if (++x->depth > 16) {
        x->bad = true;
        XML_StopParser(x->p, XML_FALSE);
        return;
    }
    for (int i = 0; i < F_N; i++)
        if (strcmp(name, sts_names[i]) == 0) {
            x->field = i;
            x->val[i].len = 0;
        }
}

static void sts_end(void *ud, const XML_Char *name)
{
    struct sts_px *x = ud;
    x->depth--;
    x->field = -1;
}

static void sts_text(void *ud, const XML_Char *s, int len)
{
    struct sts_px *x = ud;
    if (x->field < 0) return;
    struct buf *b = &x->val[x->field];
    if (b->len + (size_t)len > VALUE_MAX || buf_append(b, s, (size_t)len) < 0) {
        x->bad = true;
        XML_StopParser(x->p, XML_FALSE);
    }
}

static void sts_dtd(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
                    int has_internal)
{
    struct sts_px *x = ud;
    x->bad = true;
    XML_StopParser(x->p, XML_FALSE);
}

/* The text of each field, NUL-terminated and malloc'd (NULL when absent). */
static char *sts_take(struct sts_px *x, int f)
{
    struct buf *b = &x->val[f];
    if (!b->data || buf_append(b, "", 1) < 0) return NULL;
    char *s = (char *)b->data;
    *b = (struct buf)BUF_INIT;
    return s;
}

int aws_creds_parse_sts(const char *xml, size_t len, struct aws_cred *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    struct sts_px x = {.field = -1};
    for (int i = 0; i < F_N; i++)
        x.val[i] = (struct buf)BUF_INIT;
    x.p = XML_ParserCreate("UTF-8");
    if (!x.p) return err_set(e, ERR_FAIL, "STS answer: out of memory");
    XML_SetUserData(x.p, &x);
    XML_SetElementHandler(x.p, sts_start, sts_end);
    XML_SetCharacterDataHandler(x.p, sts_text);
    XML_SetStartDoctypeDeclHandler(x.p, sts_dtd);
    bool ok =
        len <= INT32_MAX && XML_Parse(x.p, xml, (int)len, XML_TRUE) == XML_STATUS_OK && !x.bad;
    XML_ParserFree(x.p);
    char *v[F_N];
    for (int i = 0; i < F_N; i++)
        v[i] = sts_take(&x, i);
    int rc;
    if (!ok) {
        rc = err_set(e, ERR_FAIL, "STS answer: not a well-formed XML document");
    } else if (v[F_CODE]) {
        char code[128], msg[512];
        cred_http_clean(code, sizeof code, v[F_CODE], strlen(v[F_CODE]));
        cred_http_clean(msg, sizeof msg, v[F_MSG] ? v[F_MSG] : "", v[F_MSG] ? strlen(v[F_MSG]) : 0);
        rc = err_set(e, ERR_FAIL, "STS refused: %s%s%s", code, msg[0] ? ": " : "", msg);
    } else {
        rc = take_cred(&v[F_ID], &v[F_SECRET], &v[F_TOKEN], v[F_EXP], "STS answer", out, e);
    }
    for (int i = 0; i < F_N; i++) {
        if (v[i]) sodium_memzero(v[i], strlen(v[i]));
        free(v[i]);
        buf_free(&x.val[i]);
    }
    return rc;
}

static char *json_dup(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? strdup(s) : NULL;
}

int aws_creds_parse_json(const char *json, size_t len, struct aws_cred *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return err_set(e, ERR_FAIL, "credentials answer: not a JSON object");
    }
    const char *code = json_string_value(json_object_get(o, "code"));
    const char *ccode = json_string_value(json_object_get(o, "Code"));
    const char *msg = json_string_value(json_object_get(o, "message"));
    if (!msg) msg = json_string_value(json_object_get(o, "Message"));
    if (!code && ccode && strcmp(ccode, "Success") != 0) code = ccode;
    int rc = 0;
    if (code) {
        char c[128], m[512];
        cred_http_clean(c, sizeof c, code, strlen(code));
        cred_http_clean(m, sizeof m, msg ? msg : "", msg ? strlen(msg) : 0);
        rc = err_set(e, ERR_FAIL, "refused: %s%s%s", c, m[0] ? ": " : "", m);
    } else {
        char *id = json_dup(o, "AccessKeyId"), *secret = json_dup(o, "SecretAccessKey");
        char *token = json_dup(o, "Token");
        rc = take_cred(&id, &secret, &token, json_string_value(json_object_get(o, "Expiration")),
                       "credentials answer", out, e);
        aws_cred_free(&(struct aws_cred){.access_key = id, .secret_key = secret, .token = token});
    }
    json_decref(o);
    return rc;
}

/* ---- the shared credentials file ---- */

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

/* Reads one profile of an AWS shared credentials file (INI: "[name]" sections, "key = value"
 * lines, '#' or ';' comments; "[profile name]" as in ~/.aws/config is accepted too). */
static int read_credentials_file(const char *path, const char *profile, struct aws_cred *out,
                                 struct err *e)
{
    FILE *f = fopen(path, "re");
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
            rc = set_str(&out->access_key, val);
        else if (strcmp(key, "aws_secret_access_key") == 0)
            rc = set_str(&out->secret_key, val);
        else if (strcmp(key, "aws_session_token") == 0 && *val)
            rc = set_str(&out->token, val);
    }
    if (line) sodium_memzero(line, cap);
    free(line);
    fclose(f);
    if (rc < 0) return err_set(e, ERR_FAIL, "reading %s: out of memory", path);
    if (!seen)
        return err_set(e, ERR_FAIL, "no profile [%s] in the AWS credentials file %s", profile,
                       path);
    if (!out->access_key || !*out->access_key || !out->secret_key || !*out->secret_key)
        return err_set(e, ERR_FAIL,
                       "profile [%s] in %s lacks aws_access_key_id or aws_secret_access_key",
                       profile, path);
    return 0;
}

/* ---- fetching temporary credentials ---- */

static bool set(const char *s)
{
    return s && *s;
}

static struct cred_http_req http_req(const struct aws_creds *c, const char *method, const char *url,
                                     const char *what)
{
    return (struct cred_http_req){.method = method,
                                  .url = url,
                                  .cacert = c->cacert,
                                  .insecure_tls = c->insecure,
                                  .timeout_s = c->timeout_s,
                                  .attempts = 3,
                                  .what = what};
}

static int fetch_web(struct aws_creds *c, struct aws_cred *out, struct err *e)
{
    char *jwt = NULL;
    if (cred_http_read_token(c->token_file, "web identity", &jwt, e) < 0) return e->code;
    struct buf form = BUF_INIT, ans = BUF_INIT;
    int rc = 0;
    if (cred_http_form_add(&form, "Action", "AssumeRoleWithWebIdentity") < 0 ||
        cred_http_form_add(&form, "RoleArn", c->role_arn) < 0 ||
        cred_http_form_add(&form, "RoleSessionName", c->session_name) < 0 ||
        cred_http_form_add(&form, "Version", "2011-06-15") < 0 ||
        cred_http_form_add(&form, "WebIdentityToken", jwt) < 0 || buf_append(&form, "", 1) < 0)
        rc = err_set(e, ERR_FAIL, "out of memory");
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    struct cred_http_req r = http_req(c, "POST", c->sts_url, "STS AssumeRoleWithWebIdentity");
    r.headers = hdrs;
    r.body = (const char *)form.data;
    long status = 0;
    if (rc == 0) rc = cred_http_do(&r, &status, &ans, e);
    if (rc == 0) rc = aws_creds_parse_sts((const char *)ans.data, ans.len, out, e);
    if (rc == 0 && status / 100 != 2) {
        aws_cred_free(out);
        rc = err_set(e, ERR_FAIL, "STS answered HTTP %ld without an error document", status);
    }
    if (rc < 0)
        err_wrap(e, "assuming role %s with the web identity token %s", c->role_arn, c->token_file);
    if (form.data) sodium_memzero(form.data, form.len);
    sodium_memzero(jwt, strlen(jwt));
    free(jwt);
    buf_free(&form);
    buf_free(&ans);
    return rc;
}

/* A JSON answer of a container endpoint or of instance metadata into `out`. */
static int json_answer(long status, const struct buf *ans, struct aws_cred *out, struct err *e)
{
    int rc = aws_creds_parse_json((const char *)ans->data, ans->len, out, e);
    if (rc < 0 && status / 100 != 2) {
        char body[200];
        cred_http_clean(body, sizeof body, (const char *)ans->data, ans->len);
        if (!strstr(e->msg, "refused")) return err_set(e, ERR_FAIL, "HTTP %ld: %s", status, body);
    }
    if (rc == 0 && status / 100 != 2) {
        aws_cred_free(out);
        return err_set(e, ERR_FAIL, "HTTP %ld", status);
    }
    return rc;
}

static int fetch_container(struct aws_creds *c, struct aws_cred *out, struct err *e)
{
    char *token = NULL, *auth = NULL;
    if (c->container_token_file &&
        cred_http_read_token(c->container_token_file, "container authorization", &token, e) < 0)
        return e->code;
    const char *t = token ? token : c->container_token;
    int rc = 0;
    if (t && asprintf(&auth, "Authorization: %s", t) < 0) {
        auth = NULL;
        rc = err_set(e, ERR_FAIL, "out of memory");
    }
    const char *hdrs[] = {"Accept: application/json", auth, NULL};
    struct cred_http_req r = http_req(c, "GET", c->container_uri, "container credentials");
    r.headers = hdrs;
    struct buf ans = BUF_INIT;
    long status = 0;
    if (rc == 0) rc = cred_http_do(&r, &status, &ans, e);
    if (rc == 0) rc = json_answer(status, &ans, out, e);
    if (rc < 0) err_wrap(e, "credentials from the container endpoint %s", c->container_uri);
    if (token) sodium_memzero(token, strlen(token));
    if (auth) sodium_memzero(auth, strlen(auth));
    free(token);
    free(auth);
    buf_free(&ans);
    return rc;
}

/* GET of an IMDS path with the session token; the body NUL-terminated in `ans`. */
static int imds_get(struct aws_creds *c, const char *hdr, const char *path, struct buf *ans,
                    long *status, struct err *e)
{
    char *url = NULL;
    if (asprintf(&url, "%s%s", c->imds, path) < 0) return err_set(e, ERR_FAIL, "out of memory");
    const char *hdrs[] = {hdr, NULL};
    struct cred_http_req r = http_req(c, "GET", url, "instance metadata");
    r.headers = hdrs;
    r.attempts = 2;
    r.timeout_s = IMDS_TIMEOUT_S;
    buf_reset(ans);
    int rc = cred_http_do(&r, status, ans, e);
    if (rc == 0 && buf_append(ans, "", 1) < 0) rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) ans->len--;
    free(url);
    return rc;
}

static int fetch_imds(struct aws_creds *c, struct aws_cred *out, struct err *e)
{
    char *url = NULL, *hdr = NULL, *path = NULL;
    struct buf ans = BUF_INIT;
    long status = 0;
    int rc = asprintf(&url, "%s/latest/api/token", c->imds) < 0 ? -1 : 0;
    if (rc < 0) return err_set(e, ERR_FAIL, "out of memory");
    static const char *const ttl[] = {"X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL,
                                      NULL};
    struct cred_http_req r = http_req(c, "PUT", url, "instance metadata session token");
    r.headers = ttl;
    r.attempts = 2;
    r.timeout_s = IMDS_TIMEOUT_S;
    rc = cred_http_do(&r, &status, &ans, e);
    if (rc == 0 && status / 100 != 2)
        rc = err_set(e, ERR_FAIL, "the instance metadata session token: HTTP %ld", status);
    if (rc == 0 && (buf_append(&ans, "", 1) < 0 ||
                    asprintf(&hdr, "X-aws-ec2-metadata-token: %s", trim((char *)ans.data)) < 0)) {
        hdr = NULL;
        rc = err_set(e, ERR_FAIL, "out of memory");
    }
    const char *base = "/latest/meta-data/iam/security-credentials/";
    if (rc == 0) rc = imds_get(c, hdr, base, &ans, &status, e);
    if (rc == 0 && status / 100 != 2)
        rc = err_set(e, ERR_FAIL, "no IAM role (HTTP %ld for %s): the instance has no profile",
                     status, base);
    char *role = rc == 0 ? trim((char *)ans.data) : NULL;
    if (role) role[strcspn(role, "\r\n")] = '\0';
    if (rc == 0 && (!*role || strchr(role, '/')))
        rc = err_set(e, ERR_FAIL, "no usable IAM role name in %s", base);
    if (rc == 0 && asprintf(&path, "%s%s", base, role) < 0) {
        path = NULL;
        rc = err_set(e, ERR_FAIL, "out of memory");
    }
    if (rc == 0) rc = imds_get(c, hdr, path, &ans, &status, e);
    if (rc == 0) rc = json_answer(status, &ans, out, e);
    if (rc < 0) err_wrap(e, "credentials from the EC2 instance metadata at %s", c->imds);
    if (hdr) sodium_memzero(hdr, strlen(hdr));
    free(hdr);
    free(url);
    free(path);
    buf_free(&ans);
    return rc;
}

static int fetch(struct aws_creds *c, struct aws_cred *out, struct err *e)
{
    switch (c->src) {
    case SRC_WEB:
        return fetch_web(c, out, e);
    case SRC_CONTAINER:
        return fetch_container(c, out, e);
    case SRC_IMDS:
        return fetch_imds(c, out, e);
    default:
        return err_set(e, ERR_FAIL, "credentials from %s do not refresh", source_names[c->src]);
    }
}

/* ---- the chain ---- */

static int static_source(struct aws_creds *c, const struct backend_opts *o, bool *found,
                         struct err *e)
{
    bool has_id = set(o->access_key), has_secret = set(o->secret_key);
    *found = true;
    if (has_id != has_secret)
        return err_set(e, ERR_FAIL,
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    if (has_id) {
        c->src = SRC_KEYS;
        struct aws_cred k = {.access_key = (char *)o->access_key,
                             .secret_key = (char *)o->secret_key,
                             .token = set(o->session_token) ? (char *)o->session_token : NULL};
        return cred_copy(&c->cur, &k) < 0 ? err_set(e, ERR_FAIL, "out of memory") : 0;
    }
    char *path = NULL;
    bool named = set(o->credentials_file);
    if (set(o->credentials_file))
        path = strdup(o->credentials_file);
    else if (set(o->home) && asprintf(&path, "%s/.aws/credentials", o->home) < 0)
        path = NULL;
    if (!path && (set(o->credentials_file) || set(o->home)))
        return err_set(e, ERR_FAIL, "out of memory");
    if (!path || (!named && access(path, F_OK) != 0)) {
        free(path);
        *found = false;
        return 0;
    }
    c->src = SRC_FILE;
    int rc = read_credentials_file(path, set(o->profile) ? o->profile : "default", &c->cur, e);
    free(path);
    return rc;
}

static int dup_opt(char **dst, const char *v)
{
    if (!set(v)) return 0;
    *dst = strdup(v);
    return *dst ? 0 : -1;
}

/* The settings a temporary source needs, copied. */
static int temp_source(struct aws_creds *c, const struct backend_opts *o, const char *region)
{
    if (set(o->role_arn) && set(o->web_identity_token_file)) {
        c->src = SRC_WEB;
        int rc = 0;
        if (set(o->sts_endpoint))
            rc = dup_opt(&c->sts_url, o->sts_endpoint);
        else if (set(region) && asprintf(&c->sts_url, "https://sts.%s.amazonaws.com/", region) < 0)
            c->sts_url = NULL, rc = -1;
        else if (!set(region))
            rc = dup_opt(&c->sts_url, "https://sts.amazonaws.com/");
        if (rc == 0 && set(o->role_session_name))
            rc = dup_opt(&c->session_name, o->role_session_name);
        else if (rc == 0 && asprintf(&c->session_name, "podvault-%lld", (long long)time(NULL)) < 0)
            c->session_name = NULL, rc = -1;
        if (rc == 0) rc = dup_opt(&c->role_arn, o->role_arn);
        if (rc == 0) rc = dup_opt(&c->token_file, o->web_identity_token_file);
        return rc;
    }
    if (set(o->container_uri)) {
        c->src = SRC_CONTAINER;
        if (dup_opt(&c->container_uri, o->container_uri) < 0 ||
            dup_opt(&c->container_token, o->container_token) < 0 ||
            dup_opt(&c->container_token_file, o->container_token_file) < 0)
            return -1;
        return 0;
    }
    c->src = SRC_IMDS;
    const char *ep = set(o->imds_endpoint) ? o->imds_endpoint : IMDS_DEFAULT;
    size_t n = strlen(ep);
    while (n > 0 && ep[n - 1] == '/')
        n--;
    c->imds = strndup(ep, n);
    return c->imds ? 0 : -1;
}

#define NO_CREDS                                                                                   \
    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, write them to "           \
    "AWS_SHARED_CREDENTIALS_FILE (or ~/.aws/credentials), or give the pod an AWS identity "        \
    "(IRSA: AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE; EKS Pod Identity: "                      \
    "AWS_CONTAINER_CREDENTIALS_FULL_URI; or an EC2 instance profile)"

int aws_creds_open(const struct backend_opts *o, const char *region, struct aws_creds **out,
                   struct err *e)
{
    *out = NULL;
    struct aws_creds *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ERR_FAIL, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->window_s = o->cred_refresh_s;
    c->timeout_s = o->connect_timeout_s;
    c->insecure = o->insecure_tls;
    bool found = false;
    int rc = dup_opt(&c->cacert, o->cacert) < 0 ? err_set(e, ERR_FAIL, "out of memory") : 0;
    if (rc == 0) rc = static_source(c, o, &found, e);
    if (rc == 0 && !found) {
        if (!set(o->role_arn) && !set(o->container_uri) && o->imds_disabled)
            rc = err_set(e, ERR_FAIL, NO_CREDS);
        else if (temp_source(c, o, region) < 0)
            rc = err_set(e, ERR_FAIL, "out of memory");
        else if ((rc = fetch(c, &c->cur, e)) < 0 && c->src == SRC_IMDS)
            err_wrap(e, NO_CREDS ". Last");
    }
    if (rc == 0) {
        c->fetches = 1;
        if (c->src >= SRC_WEB)
            c->refresh_at = cred_http_refresh_at(c->cur.expires, time(NULL), c->window_s);
    }
    if (rc < 0) {
        aws_creds_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int aws_creds_get(struct aws_creds *c, struct aws_cred *out, struct err *e)
{
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    time_t now = time(NULL);
    if (c->refresh_at && now >= c->refresh_at) {
        struct aws_cred fresh;
        struct err fe;
        if (fetch(c, &fresh, &fe) == 0) {
            aws_cred_free(&c->cur);
            c->cur = fresh;
            c->fetches++;
            c->refresh_at = cred_http_refresh_at(fresh.expires, now, c->window_s);
        } else if (c->cur.expires <= now) {
            rc = err_set(e, ERR_FAIL, "%s", fe.msg);
        }
    }
    if (rc == 0 && cred_copy(out, &c->cur) < 0) rc = err_set(e, ERR_FAIL, "out of memory");
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void aws_creds_invalidate(struct aws_creds *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->refresh_at) c->refresh_at = time(NULL);
    pthread_mutex_unlock(&c->mu);
}

const char *aws_creds_source(const struct aws_creds *c)
{
    return source_names[c->src];
}

unsigned long aws_creds_fetches(struct aws_creds *c)
{
    pthread_mutex_lock(&c->mu);
    unsigned long n = c->fetches;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void aws_creds_close(struct aws_creds *c)
{
    if (!c) return;
    aws_cred_free(&c->cur);
    pthread_mutex_destroy(&c->mu);
    char *strs[] = {c->role_arn,      c->token_file,      c->session_name,         c->sts_url,
                    c->container_uri, c->container_token, c->container_token_file, c->imds,
                    c->cacert};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(strs[i]);
    free(c);
}
