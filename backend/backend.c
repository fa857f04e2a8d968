/* backend.c - picks the backend for a location and checks object names before any backend sees
 * them; see backend.h. */
#include "backend/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "backend/backend_azure.h"
#include "backend/backend_s3.h"

/* Names are also file paths (local) and S3 keys, so only characters that are safe as both pass,
 * and no component may climb out of the repository or look like a local temporary file. */
#define NAME_MAX_LEN 512
#define TMP_MARK ".tmp-"

static bool name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '/';
}

/* A prefix may end in the middle of a component ("data/a") or with a slash ("snapshots/"). */
static bool prefix_ok(const char *p)
{
    size_t n = strlen(p);
    if (n > NAME_MAX_LEN || p[0] == '/') return false;
    const char *comp = p;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && !name_char_ok(p[i])) return false;
        if (i < n && p[i] != '/') continue;
        size_t clen = (size_t)(p + i - comp);
        if (i < n && clen == 0) return false; /* "a//b" */
        if ((clen == 1 && comp[0] == '.') || (clen == 2 && comp[0] == '.' && comp[1] == '.'))
            return false;
        if (clen >= strlen(TMP_MARK) && strncmp(comp, TMP_MARK, strlen(TMP_MARK)) == 0)
            return false;
        comp = p + i + 1;
    }
    return true;
}

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && name[n - 1] != '/' && prefix_ok(name);
}

static int check_name(struct backend *b, const char *name, struct err *e)
{
    if (name_ok(name)) return 0;
    return err_set(e, ERR_FAIL, "invalid object name \"%.100s\" for %s", name, b->location);
}

/* ---- settings ---- */

/* The numeric settings: where each lives in the struct, its variable, default and bounds. */
struct num_setting {
    size_t off;
    const char *var;
    long def, min, max;
};

#define NUM(field, var, def, min, max)                                                             \
    {                                                                                              \
        offsetof(struct backend_opts, field), var, def, min, max                                   \
    }
static const struct num_setting num_settings[] = {
    NUM(retries, BACKEND_S3_ENV_RETRIES, 6, 0, 100),
    NUM(retry_delay_ms, BACKEND_S3_ENV_RETRY_DELAY_MS, 100, 1, 60000),
    NUM(retry_max_delay_ms, BACKEND_S3_ENV_RETRY_MAX_DELAY_MS, 10000, 1, 600000),
    NUM(throttle_time_s, BACKEND_S3_ENV_THROTTLE_TIME, 300, 0, 86400),
    NUM(connect_timeout_s, BACKEND_S3_ENV_CONNECT_TIMEOUT, 10, 1, 3600),
    NUM(stall_timeout_s, BACKEND_S3_ENV_STALL_TIMEOUT, 60, 1, 3600),
    NUM(list_max, BACKEND_S3_ENV_LIST_MAX, 1000, 1, 1000),
    NUM(uploads, BACKEND_S3_ENV_UPLOADS, 4, 1, 64),
    NUM(downloads, BACKEND_S3_ENV_DOWNLOADS, 2, 1, 16),
    NUM(azure_block_size, BACKEND_AZURE_ENV_BLOCK_SIZE, 4L << 20, 64L << 10, 100L << 20),
    NUM(cred_refresh_s, BACKEND_S3_ENV_REFRESH_WINDOW, 300, 0, 3000),
};
#define N_NUM (sizeof num_settings / sizeof num_settings[0])

static long *num_field(struct backend_opts *o, const struct num_setting *n)
{
    return (long *)(void *)((char *)o + n->off);
}

void backend_opts_default(struct backend_opts *o)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < N_NUM; i++)
        *num_field(o, &num_settings[i]) = num_settings[i].def;
}

/* Settings given as values are checked as those from variables are. */
static int opts_check(const struct backend_opts *o, struct err *e)
{
    for (size_t i = 0; i < N_NUM; i++) {
        const struct num_setting *n = &num_settings[i];
        long v = *num_field((struct backend_opts *)o, n);
        if (v < n->min || v > n->max)
            return err_set(e, ERR_FAIL,
                           "setting %s is %ld: expected a whole number from %ld to %ld", n->var, v,
                           n->min, n->max);
    }
    return 0;
}

/* The value of the first of up to three variables that is set and not empty. */
static const char *var_first(backend_var_fn get, void *ctx, const char *a, const char *b,
                             const char *c)
{
    const char *names[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) {
        const char *v = names[i] ? get(ctx, names[i]) : NULL;
        if (v && *v) return v;
    }
    return NULL;
}

static int var_long(const struct num_setting *n, const char *v, long *out, struct err *e)
{
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < n->min || x > n->max)
        return err_set(e, ERR_FAIL, "%s=\"%.40s\": expected a whole number from %ld to %ld", n->var,
                       v, n->min, n->max);
    *out = x;
    return 0;
}

/* AWS's credentials chain and endpoints, and Microsoft Entra ID, under the names the AWS SDKs
 * and azidentity read (aws-sdk-go-v2 config/env_config.go; azidentity's environment
 * credential and workload identity). */
static void cloud_vars(struct backend_opts *o, backend_var_fn get, void *ctx)
{
    static const struct {
        size_t off;
        const char *var;
    } strs[] = {
        {offsetof(struct backend_opts, role_arn), "AWS_ROLE_ARN"},
        {offsetof(struct backend_opts, web_identity_token_file), "AWS_WEB_IDENTITY_TOKEN_FILE"},
        {offsetof(struct backend_opts, role_session_name), "AWS_ROLE_SESSION_NAME"},
        {offsetof(struct backend_opts, sts_endpoint), "AWS_ENDPOINT_URL_STS"},
        {offsetof(struct backend_opts, container_uri), "AWS_CONTAINER_CREDENTIALS_FULL_URI"},
        {offsetof(struct backend_opts, container_token), "AWS_CONTAINER_AUTHORIZATION_TOKEN"},
        {offsetof(struct backend_opts, container_token_file),
         "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"},
        {offsetof(struct backend_opts, imds_endpoint), "AWS_EC2_METADATA_SERVICE_ENDPOINT"},
        {offsetof(struct backend_opts, s3_endpoint), "AWS_ENDPOINT_URL_S3"},
        {offsetof(struct backend_opts, azure_tenant_id), "AZURE_TENANT_ID"},
        {offsetof(struct backend_opts, azure_client_id), "AZURE_CLIENT_ID"},
        {offsetof(struct backend_opts, azure_client_secret), "AZURE_CLIENT_SECRET"},
        {offsetof(struct backend_opts, azure_federated_token_file), "AZURE_FEDERATED_TOKEN_FILE"},
        {offsetof(struct backend_opts, azure_authority_host), "AZURE_AUTHORITY_HOST"},
        /* azidentity's override of the instance metadata host (managed_identity_client.go). */
        {offsetof(struct backend_opts, azure_imds_host), "AZURE_POD_IDENTITY_AUTHORITY_HOST"},
    };
    const char *v;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if ((v = var_first(get, ctx, strs[i].var, NULL, NULL)))
            *(const char **)(void *)((char *)o + strs[i].off) = v;
    if ((v = var_first(get, ctx, "AWS_EC2_METADATA_DISABLED", NULL, NULL)))
        o->imds_disabled = strcasecmp(v, "true") == 0;
}

/* The Azure variables; a malformed connection string or key is named here, where the user set
 * it, rather than when a backend opens. */
static int opts_azure_from_vars(struct backend_opts *o, backend_var_fn get, void *ctx,
                                struct err *e)
{
    const char *v;
    if ((v = var_first(get, ctx, BACKEND_AZURE_ENV_CONNECTION_STRING, NULL, NULL)))
        o->azure_connection_string = v;
    if ((v = var_first(get, ctx, BACKEND_AZURE_ENV_ACCOUNT, NULL, NULL))) o->azure_account = v;
    if ((v = var_first(get, ctx, BACKEND_AZURE_ENV_KEY, NULL, NULL))) o->azure_key = v;
    if ((v = var_first(get, ctx, BACKEND_AZURE_ENV_SAS, NULL, NULL))) o->azure_sas = v;
    if ((v = var_first(get, ctx, BACKEND_AZURE_ENV_ENDPOINT, NULL, NULL))) o->azure_endpoint = v;
    if ((v = var_first(get, ctx, BACKEND_AZURE_ENV_AUTH_MODE, NULL, NULL))) {
        if (strcmp(v, "login") != 0 && strcmp(v, "key") != 0)
            return err_set(e, ERR_FAIL, "%s=\"%.40s\": use login or key",
                           BACKEND_AZURE_ENV_AUTH_MODE, v);
        o->azure_login = strcmp(v, "login") == 0;
    }
    if (!o->azure_connection_string) return 0;
    struct azure_account a;
    int rc = azure_resolve(o, &a, e);
    azure_account_free(&a);
    if (rc < 0) err_wrap(e, "%s", BACKEND_AZURE_ENV_CONNECTION_STRING);
    return rc;
}

int backend_opts_from_vars(struct backend_opts *o, backend_var_fn get, void *ctx, struct err *e)
{
    const char *v;
    if ((v = var_first(get, ctx, "TMPDIR", NULL, NULL))) o->tmp_dir = v;
    if ((v = var_first(get, ctx, BACKEND_S3_ENV_REGION, "AWS_REGION", "AWS_DEFAULT_REGION")))
        o->region = v;
    if ((v = var_first(get, ctx, BACKEND_S3_ENV_VIRTUAL_HOST, NULL, NULL)))
        o->addressing = strcmp(v, "1") == 0 ? BACKEND_ADDR_VIRTUAL : BACKEND_ADDR_PATH;
    if ((v = var_first(get, ctx, BACKEND_S3_ENV_CACERT, "AWS_CA_BUNDLE", NULL))) o->cacert = v;
    if ((v = var_first(get, ctx, BACKEND_S3_ENV_INSECURE_TLS, NULL, NULL)))
        o->insecure_tls = strcmp(v, "1") == 0;
    for (size_t i = 0; i < N_NUM; i++) {
        const struct num_setting *n = &num_settings[i];
        v = var_first(get, ctx, n->var, NULL, NULL);
        if (v && var_long(n, v, num_field(o, n), e) < 0) return e->code;
    }
    if ((v = var_first(get, ctx, "AWS_ACCESS_KEY_ID", NULL, NULL))) o->access_key = v;
    if ((v = var_first(get, ctx, "AWS_SECRET_ACCESS_KEY", NULL, NULL))) o->secret_key = v;
    if ((v = var_first(get, ctx, "AWS_SESSION_TOKEN", NULL, NULL))) o->session_token = v;
    if ((v = var_first(get, ctx, "AWS_SHARED_CREDENTIALS_FILE", NULL, NULL)))
        o->credentials_file = v;
    if ((v = var_first(get, ctx, "AWS_PROFILE", NULL, NULL))) o->profile = v;
    if ((v = var_first(get, ctx, "HOME", NULL, NULL))) o->home = v;
    cloud_vars(o, get, ctx);
    return opts_azure_from_vars(o, get, ctx, e);
}

int backend_parse_kind(const char *location, enum backend_kind *kind, struct err *e)
{
    if (strncmp(location, "s3:", 3) == 0) {
        *kind = BACKEND_S3;
        return 0;
    }
    if (strncmp(location, "azure:", 6) == 0) {
        *kind = BACKEND_AZURE;
        return 0;
    }
    /* A ':' before any '/' makes a scheme ("gs:", "b2:"), or a mistyped one ("s3;http://"),
     * not a directory: refused, so that no directory named after it is created in the current
     * one. "./name:..." and absolute paths are directories. */
    size_t first = strcspn(location, "/");
    const char *colon = memchr(location, ':', first);
    size_t n = colon ? (size_t)(colon - location) : 0;
    if (colon && location[0] != '.')
        return err_set(e, ERR_FAIL,
                       "%.100s: unknown repository scheme \"%.*s:\" (use s3:http[s]://host/bucket "
                       "for S3, azure:container[/prefix] for Azure Blob Storage, or a "
                       "directory path; write ./%.100s for a directory of that name)",
                       location, (int)(n < 40 ? n : 40), location, location);
    *kind = BACKEND_LOCAL;
    return 0;
}

int backend_open(const char *location, const struct backend_opts *o, bool create,
                 struct backend **out, struct err *e)
{
    *out = NULL;
    struct backend_opts defaults;
    if (!o) {
        backend_opts_default(&defaults);
        o = &defaults;
    }
    enum backend_kind kind;
    int rc = backend_parse_kind(location, &kind, e);
    if (rc == 0) rc = opts_check(o, e);
    if (rc == 0 && o->as_of_ms && kind != BACKEND_S3)
        rc = err_set(e, ERR_FAIL,
                     "%s: --as-of reads the versions of an S3 bucket; a local directory has none",
                     location);
    if (rc < 0) return rc;
    if (kind == BACKEND_S3)
        rc = backend_s3_open(location, o, create, out, e);
    else if (kind == BACKEND_AZURE)
        rc = backend_azure_open(location, o, create, out, e);
    else
        rc = backend_local_open(location, create, out, e);
    if (rc < 0) return rc;
    (*out)->kind = kind;
    if (o->tmp_dir && *o->tmp_dir && !((*out)->tmp_dir = strdup(o->tmp_dir))) {
        backend_close(*out);
        *out = NULL;
        return err_set(e, ERR_FAIL, "opening %s: out of memory", location);
    }
    return 0;
}

int backend_save(struct backend *b, const char *name, const void *data, size_t len, bool overwrite,
                 struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->save(b, name, data, len, overwrite, e);
}

int backend_save_fd(struct backend *b, const char *name, int fd, uint64_t len, bool overwrite,
                    struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->save_fd(b, name, fd, len, overwrite, e);
}

int backend_tmp_file_in(const char *dir, int *fd, struct err *e)
{
    *fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (*fd >= 0) return 0;
    char *path = NULL;
    if (asprintf(&path, "%s/" TMP_MARK "podvault-XXXXXX", dir) < 0)
        return err_set(e, ERR_FAIL, "creating a temporary file in %s: out of memory", dir);
    *fd = mkostemp(path, O_CLOEXEC);
    int saved = errno;
    if (*fd >= 0) unlink(path);
    free(path);
    if (*fd < 0) return err_sys(e, saved, "creating a temporary file in %s", dir);
    return 0;
}

const char *backend_tmp_dir(const struct backend *b)
{
    /* A backend with a place of its own (the local one) keeps it at its location. */
    if (b->ops->tmp_file) return b->location;
    return b->tmp_dir ? b->tmp_dir : "/tmp";
}

int backend_tmp_file(struct backend *b, int *fd, struct err *e)
{
    if (b->ops->tmp_file) return b->ops->tmp_file(b, fd, e);
    return backend_tmp_file_in(b->tmp_dir ? b->tmp_dir : "/tmp", fd, e);
}

int backend_load(struct backend *b, const char *name, uint64_t offset, uint64_t len,
                 struct buf *out, struct err *e)
{
    int rc = check_name(b, name, e);
    if (rc) return rc;
    if (len > UINT64_MAX - offset)
        return err_set(e, ERR_FAIL, "loading %s from %s: range overflows", name, b->location);
    return b->ops->load(b, name, offset, len, out, e);
}

int backend_stat(struct backend *b, const char *name, uint64_t *size, struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->stat(b, name, size, e);
}

int backend_list(struct backend *b, const char *prefix, backend_list_cb cb, void *ctx,
                 struct err *e)
{
    if (!prefix_ok(prefix))
        return err_set(e, ERR_FAIL, "invalid listing prefix \"%.100s\" for %s", prefix,
                       b->location);
    return b->ops->list(b, prefix, cb, ctx, e);
}

int backend_remove(struct backend *b, const char *name, struct err *e)
{
    int rc = check_name(b, name, e);
    return rc ? rc : b->ops->remove(b, name, e);
}

void backend_close(struct backend *b)
{
    if (!b) return;
    char *tmp = b->tmp_dir; /* the implementation frees the rest, and b itself */
    b->ops->close(b);
    free(tmp);
}

int backend_set_retention(struct backend *b, const struct backend_retention *r, bool verify,
                          struct err *e)
{
    if (!b->ops->set_retention) {
        if (r->mode == BACKEND_LOCK_OFF) return 0;
        return err_set(e, ERR_FAIL,
                       "%s: object lock needs an S3 bucket with Object Lock enabled; this "
                       "backend cannot keep objects immutable",
                       b->location);
    }
    return b->ops->set_retention(b, r, verify, e);
}

bool backend_lock_mode_parse(const char *s, enum backend_lock_mode *m)
{
    if (strcasecmp(s, "governance") == 0)
        *m = BACKEND_LOCK_GOVERNANCE;
    else if (strcasecmp(s, "compliance") == 0)
        *m = BACKEND_LOCK_COMPLIANCE;
    else
        return false;
    return true;
}

const char *backend_lock_mode_str(enum backend_lock_mode m)
{
    return m == BACKEND_LOCK_GOVERNANCE   ? "governance"
           : m == BACKEND_LOCK_COMPLIANCE ? "compliance"
                                          : "off";
}

int backend_versions_plan(struct backend *b, backend_version_cb cb, void *ctx, struct err *e)
{
    if (!b->ops->versions_plan)
        return err_set(e, ERR_FAIL,
                       "%s keeps no versions of its objects (only a versioned S3 "
                       "bucket does)",
                       b->location);
    return b->ops->versions_plan(b, cb, ctx, e);
}

int backend_version_apply(struct backend *b, const char *name, enum backend_version_action a,
                          struct err *e)
{
    int rc = check_name(b, name, e);
    if (rc) return rc;
    if (!b->ops->version_apply)
        return err_set(e, ERR_FAIL, "%s keeps no versions of its objects", b->location);
    return b->ops->version_apply(b, name, a, e);
}
