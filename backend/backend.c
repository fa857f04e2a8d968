/* backend.c - picks the backend for a location and checks object names before any backend sees
 * them; see backend.h. */
#include "backend/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    NUM(connect_timeout_s, BACKEND_S3_ENV_CONNECT_TIMEOUT, 10, 1, 3600),
    NUM(stall_timeout_s, BACKEND_S3_ENV_STALL_TIMEOUT, 60, 1, 3600),
    NUM(list_max, BACKEND_S3_ENV_LIST_MAX, 1000, 1, 1000),
    NUM(uploads, BACKEND_S3_ENV_UPLOADS, 4, 1, 64),
    NUM(downloads, BACKEND_S3_ENV_DOWNLOADS, 2, 1, 16),
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
                           "S3 setting %s is %ld: expected a whole number from %ld to %ld", n->var,
                           v, n->min, n->max);
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
    return 0;
}

int backend_parse_kind(const char *location, enum backend_kind *kind, struct err *e)
{
    if (strncmp(location, "s3:", 3) == 0) {
        *kind = BACKEND_S3;
        return 0;
    }
    /* "name:" before any '/' is a scheme (RFC 3986's letters), not a directory. */
    size_t n =
        strspn(location, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
    if (n > 0 && location[n] == ':')
        return err_set(e, ERR_FAIL,
                       "%.100s: unknown repository scheme \"%.*s:\" (use s3:http[s]://host/bucket "
                       "for S3, or a directory path; write ./%.100s for a directory of that name)",
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
    if (rc < 0) return rc;
    if (kind == BACKEND_S3)
        rc = backend_s3_open(location, o, create, out, e);
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
