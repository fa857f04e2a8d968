/* repoloc.c - BackupStorageLocation to repository location, and AWS credentials files. */
#include "agent/repoloc.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/k8s.h"
#include "base/buf.h"

void repoloc_free(struct repoloc *l)
{
    free(l->location);
    free(l->root);
    free(l->base);
    free(l->legacy);
    free(l->move_hint);
    free(l->profile);
    free(l->azure_account);
    free(l->azure_endpoint);
    free(l->azure_key_var);
    for (size_t i = 0; i < l->n_args; i++)
        free(l->args[i]);
    for (size_t i = 0; i < l->n_init_args; i++)
        free(l->init_args[i]);
    memset(l, 0, sizeof *l);
}

static int add_arg(struct repoloc *l, const char *a, struct err *e)
{
    if (l->n_args == REPOLOC_MAX_ARGS) return err_set(e, ERR_FAIL, "too many repository options");
    if (!(l->args[l->n_args] = strdup(a))) return err_set(e, ERR_FAIL, "out of memory");
    l->n_args++;
    return 0;
}

static bool truthy(const char *v)
{
    return v && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* The prefix without leading and trailing slashes, into out. */
static void trim_slashes(const char *in, char *out, size_t cap)
{
    while (*in == '/')
        in++;
    snprintf(out, cap, "%s", in);
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/')
        out[--n] = '\0';
}

static int write_ca(const char *b64, const char *dir, struct repoloc *l, struct err *e)
{
    size_t n = strlen(b64), got = 0;
    unsigned char *pem = malloc(n + 1);
    if (!pem) return err_set(e, ERR_FAIL, "out of memory");
    if (sodium_base642bin(pem, n, b64, n, " \t\r\n", &got, NULL, sodium_base64_VARIANT_ORIGINAL) !=
        0) {
        free(pem);
        return err_set(e, ERR_FAIL, "spec.objectStorage.caCert is not valid base64");
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        free(pem);
        return err_sys(e, errno, "writing the location's CA to %s", path);
    }
    ssize_t w = write(fd, pem, got);
    int werr = errno;
    free(pem);
    if (close(fd) < 0 || w != (ssize_t)got)
        return err_sys(e, w < 0 ? werr : EIO, "writing the location's CA to %s", path);
    return add_arg(l, "--cacert", e) < 0 ? e->code : add_arg(l, path, e);
}

static bool s3_provider(const char *p)
{
    return !p || !*p || strcmp(p, "aws") == 0 || strcmp(p, "velero.io/aws") == 0 ||
           strcmp(p, "s3") == 0 || strcmp(p, "minio") == 0;
}

static bool azure_provider(const char *p)
{
    return p && (strcmp(p, "azure") == 0 || strcmp(p, "velero.io/azure") == 0);
}

/* Google Cloud Storage, reached through its S3-compatible XML API with HMAC keys. */
static bool gcp_provider(const char *p)
{
    return p && (strcmp(p, "gcp") == 0 || strcmp(p, "velero.io/gcp") == 0);
}

#define GCS_XML_API "https://storage.googleapis.com"

/* The location's endpoint into `url` and the region to sign for (NULL: none given). GCS signs
 * with any region; "auto" is the one its documentation names. Without a region, the jobs ask
 * the bucket for its own (backend_s3.c discover_region), as Velero does
 * (pkg/repository/config/aws.go GetAWSBucketRegion), over AWS's global endpoint. */
static const char *endpoint(const char *s3url, bool gcs, const char *region, char *url, size_t cap)
{
    if ((!region || !*region) && gcs) region = "auto";
    if (region && !*region) region = NULL;
    if (s3url && *s3url)
        trim_slashes(s3url, url, cap);
    else if (gcs)
        snprintf(url, cap, "%s", GCS_XML_API);
    else
        snprintf(url, cap, "https://s3.%s%samazonaws.com", region ? region : "", region ? "." : "");
    return region;
}

/* A formatted string, allocated; NULL when memory is out. */
static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* The paths under the location's root `root` (see repoloc.h). `bucket_path` is
 * "<bucket>[/<prefix>]" for S3 (with its `url`) and Azure (url NULL), which the move command
 * names; NULL for a directory. */
static int set_paths(struct repoloc *l, const char *root, const char *volume_ns,
                     const char *bucket_path, const char *url, struct err *e)
{
    const char *sep = volume_ns ? "/" : "", *ns = volume_ns ? volume_ns : "";
    l->root = fmt("%s", root);
    l->base = fmt("%s/" REPOLOC_DIR, root);
    l->location = fmt("%s/" REPOLOC_DIR "%s%s", root, sep, ns);
    l->legacy = fmt("%s/" REPOLOC_LEGACY_DIR "%s%s", root, sep, ns);
    if (!bucket_path && l->location) /* into the parent of location, which may not exist yet */
        l->move_hint =
            fmt("mkdir -p '%.*s' && mv '%s' '%s'", (int)(strrchr(l->location, '/') - l->location),
                l->location, l->legacy, l->location);
    else if (bucket_path && !url)
        l->move_hint = fmt("azcopy copy --recursive '<account URL>/%s/" REPOLOC_LEGACY_DIR
                           "%s%s/*' '<account URL>/%s/" REPOLOC_DIR "%s%s/' (then remove the old)",
                           bucket_path, sep, ns, bucket_path, sep, ns);
    else if (bucket_path)
        l->move_hint = fmt("aws s3 mv --recursive --endpoint-url %s s3://%s/" REPOLOC_LEGACY_DIR
                           "%s%s/ s3://%s/" REPOLOC_DIR "%s%s/",
                           url, bucket_path, sep, ns, bucket_path, sep, ns);
    if (!l->root || !l->base || !l->location || !l->legacy || !l->move_hint)
        return err_set(e, ERR_FAIL, "out of memory");
    return 0;
}

/* An azure location (repoloc.h): velero pkg/util/azure/storage.go's rules for a key. */
static int azure_location(const json_t *bsl, const char *name, const char *bucket,
                          const char *prefix, const char *volume_ns, struct repoloc *out,
                          struct err *e)
{
    const char *account = k8s_str(bsl, "spec.config.storageAccount");
    const char *uri = k8s_str(bsl, "spec.config.storageAccountURI");
    const char *key_var = k8s_str(bsl, "spec.config.storageAccountKeyEnvVar");
    if (!bucket || !*bucket)
        return err_set(e, ERR_FAIL, "BackupStorageLocation %s has no spec.objectStorage.bucket",
                       name);
    if (!account || !*account)
        return err_set(e, ERR_FAIL, "BackupStorageLocation %s: config.storageAccount is required",
                       name);
    bool aad = truthy(k8s_str(bsl, "spec.config.useAAD"));
    if ((!key_var || !*key_var) && !aad)
        return err_set(e, ERR_FAIL,
                       "BackupStorageLocation %s: set config.storageAccountKeyEnvVar to the "
                       "credentials file's variable that holds the storage account's access "
                       "key, or config.useAAD to \"true\" for Microsoft Entra ID (podvault "
                       "does not fetch the key through Azure Resource Manager with "
                       "resourceGroup and subscriptionId)",
                       name);
    char bucket_path[2048], root[4096];
    snprintf(bucket_path, sizeof bucket_path, "%s%s%s", bucket, *prefix ? "/" : "", prefix);
    snprintf(root, sizeof root, "azure:%s", bucket_path);
    int rc = set_paths(out, root, volume_ns, bucket_path, NULL, e);
    if (rc < 0) return rc;
    out->azure = true;
    /* Velero's order (GetStorageAccountCredentials): a key variable wins over useAAD. */
    out->azure_aad = !(key_var && *key_var);
    if (!(out->azure_account = strdup(account)) ||
        (!out->azure_aad && !(out->azure_key_var = strdup(key_var))) ||
        (uri && *uri && !(out->azure_endpoint = strdup(uri))))
        return err_set(e, ERR_FAIL, "out of memory");
    return 0;
}

static int add_init_arg(struct repoloc *l, const char *a, struct err *e)
{
    if (l->n_init_args == REPOLOC_MAX_INIT_ARGS) return err_set(e, ERR_FAIL, "too many options");
    if (!(l->init_args[l->n_init_args] = strdup(a))) return err_set(e, ERR_FAIL, "out of memory");
    l->n_init_args++;
    return 0;
}

/* The annotation `name` of the location, or NULL. */
static const char *bsl_annotation(const json_t *bsl, const char *name)
{
    return json_string_value(json_object_get(k8s_at(bsl, "metadata.annotations"), name));
}

/* The annotations podvault.io/object-lock-days ("30", or a duration such as "2h") and
 * podvault.io/object-lock-mode ("governance" or "compliance"): how the agent initialises a new
 * repository of this location (S3 Object Lock); `podvault init` checks the values further.
 * Annotations, not spec.config keys: Velero's object store plugins refuse a location whose
 * config has keys they do not know (velero pkg/plugin/framework/validation.go
 * validateConfigKeys, called by velero-plugin-for-aws ObjectStore.Init), which would make the
 * location Unavailable. */
static int lock_args(const json_t *bsl, const char *name, struct repoloc *l, struct err *e)
{
    const char *days = bsl_annotation(bsl, "podvault.io/object-lock-days");
    const char *mode = bsl_annotation(bsl, "podvault.io/object-lock-mode");
    if (mode && *mode && (!days || !*days))
        return err_set(e, ERR_FAIL,
                       "BackupStorageLocation %s: annotation podvault.io/object-lock-mode needs "
                       "podvault.io/object-lock-days",
                       name);
    if (!days || !*days) return 0;
    size_t n = strlen(days);
    if (n > 20 || strspn(days, "0123456789") == 0 || strspn(days, "0123456789smhdSMHD") != n)
        return err_set(e, ERR_FAIL,
                       "BackupStorageLocation %s: annotation podvault.io/object-lock-days "
                       "\"%.40s\" is not a number of days (or a duration such as 12h)",
                       name, days);
    if (mode && *mode && strcmp(mode, "governance") != 0 && strcmp(mode, "compliance") != 0)
        return err_set(e, ERR_FAIL,
                       "BackupStorageLocation %s: annotation podvault.io/object-lock-mode "
                       "\"%.40s\" is neither governance nor compliance",
                       name, mode);
    int rc = add_init_arg(l, "--object-lock", e);
    if (rc == 0) rc = add_init_arg(l, days, e);
    if (rc == 0 && mode && *mode) rc = add_init_arg(l, "--object-lock-mode", e);
    if (rc == 0 && mode && *mode) rc = add_init_arg(l, mode, e);
    return rc;
}

int repoloc_from_bsl(const json_t *bsl, const char *volume_ns, const char *ca_dir,
                     struct repoloc *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    const char *name = k8s_str(bsl, "metadata.name");
    const char *provider = k8s_str(bsl, "spec.provider");
    const char *bucket = k8s_str(bsl, "spec.objectStorage.bucket");
    const char *prefix_raw = k8s_str(bsl, "spec.objectStorage.prefix");
    const char *dir = k8s_str(bsl, "spec.config.podvaultPath");
    const char *s3url = k8s_str(bsl, "spec.config.s3Url");
    const char *region = k8s_str(bsl, "spec.config.region");
    const char *profile = k8s_str(bsl, "spec.config.profile");
    char prefix[1024], url[2048], root[4096], bucket_path[2048];
    trim_slashes(prefix_raw ? prefix_raw : "", prefix, sizeof prefix);
    if (!name) name = "(unnamed)";
    if (volume_ns && (!*volume_ns || strchr(volume_ns, '/') || strcmp(volume_ns, ".") == 0 ||
                      strcmp(volume_ns, "..") == 0))
        return err_set(e, ERR_FAIL, "invalid volume namespace \"%s\"", volume_ns);
    if (!(out->profile = strdup(profile && *profile ? profile : "default")))
        return err_set(e, ERR_FAIL, "out of memory");
    int rc = 0;
    if (dir && *dir) {
        snprintf(root, sizeof root, "%s%s%s", dir, *prefix ? "/" : "", prefix);
        if ((rc = set_paths(out, root, volume_ns, NULL, NULL, e)) < 0 ||
            (rc = lock_args(bsl, name, out, e)) < 0)
            goto fail;
        return 0;
    }
    if (azure_provider(provider)) {
        rc = azure_location(bsl, name, bucket, prefix, volume_ns, out, e);
        if (rc < 0) goto fail;
        return 0;
    }
    bool gcs = gcp_provider(provider) && !(s3url && *s3url);
    if (!s3_provider(provider) && !gcs && !s3url) {
        rc = err_set(e, ERR_FAIL,
                     "BackupStorageLocation %s: provider %s is not supported: podvault "
                     "stores into S3-compatible object storage (provider aws, with "
                     "config.s3Url for other stores; provider gcp with HMAC keys) and Azure "
                     "Blob Storage (provider azure)",
                     name, provider);
        goto fail;
    }
    if (!bucket || !*bucket) {
        rc =
            err_set(e, ERR_FAIL, "BackupStorageLocation %s has no spec.objectStorage.bucket", name);
        goto fail;
    }
    region = endpoint(s3url, gcs, region, url, sizeof url);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        rc = err_set(e, ERR_FAIL,
                     "BackupStorageLocation %s: config.s3Url %s must start with http:// or "
                     "https://",
                     name, url);
        goto fail;
    }
    snprintf(bucket_path, sizeof bucket_path, "%s%s%s", bucket, *prefix ? "/" : "", prefix);
    snprintf(root, sizeof root, "s3:%s/%s", url, bucket_path);
    if ((rc = set_paths(out, root, volume_ns, bucket_path, url, e)) < 0) goto fail;
    out->s3 = true;
    if ((region &&
         ((rc = add_arg(out, "--s3-region", e)) < 0 || (rc = add_arg(out, region, e)) < 0)) ||
        (rc = add_arg(out,
                      gcs || truthy(k8s_str(bsl, "spec.config.s3ForcePathStyle"))
                          ? "--s3-path-style"
                          : "--s3-virtual-host",
                      e)) < 0)
        goto fail;
    if ((rc = lock_args(bsl, name, out, e)) < 0) goto fail;
    if (truthy(k8s_str(bsl, "spec.config.insecureSkipTLSVerify")) &&
        (rc = add_arg(out, "--insecure-tls", e)) < 0)
        goto fail;
    const char *ca = k8s_str(bsl, "spec.objectStorage.caCert");
    if (ca && *ca && (rc = write_ca(ca, ca_dir, out, e)) < 0) {
        err_wrap(e, "BackupStorageLocation %s", name);
        goto fail;
    }
    return 0;
fail:
    repoloc_free(out);
    return rc;
}

void repoloc_creds_free(struct repoloc_creds *c)
{
    if (c->secret) sodium_memzero(c->secret, strlen(c->secret));
    if (c->session_token) sodium_memzero(c->session_token, strlen(c->session_token));
    free(c->key_id);
    free(c->secret);
    free(c->session_token);
    memset(c, 0, sizeof *c);
}

/* Trims spaces at both ends of [s, s+n) in place; returns the new start, *n updated. */
static const char *trim(const char *s, size_t *n)
{
    while (*n && isspace((unsigned char)*s))
        s++, (*n)--;
    while (*n && isspace((unsigned char)s[*n - 1]))
        (*n)--;
    return s;
}

int repoloc_parse_credentials(const char *text, const char *profile, struct repoloc_creds *out,
                              struct err *e)
{
    memset(out, 0, sizeof *out);
    size_t tn = strlen(text ? text : "");
    const char *first = trim(text ? text : "", &tn);
    if (tn > 0 && first[0] == '{')
        return err_set(e, ERR_FAIL,
                       "the credentials are JSON (a Google service account key?): podvault "
                       "reaches Google Cloud Storage through its S3-compatible XML API, with "
                       "HMAC keys written as aws_access_key_id and aws_secret_access_key lines");
    bool in_section = false, seen = false;
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        const char *line = trim(p, &n);
        p = nl ? nl + 1 : NULL;
        if (n == 0 || line[0] == '#' || line[0] == ';') continue;
        if (n >= 2 && line[0] == '[' && line[n - 1] == ']') {
            size_t m = n - 2;
            const char *sec = trim(line + 1, &m);
            if (m > 8 && strncmp(sec, "profile ", 8) == 0) { /* the ~/.aws/config spelling */
                sec += 8;
                m -= 8;
                sec = trim(sec, &m);
            }
            in_section = m == strlen(profile) && strncmp(sec, profile, m) == 0;
            seen |= in_section;
            continue;
        }
        const char *eq = memchr(line, '=', n);
        if (!in_section || !eq) continue;
        size_t kn = (size_t)(eq - line), vn = n - kn - 1;
        const char *k = trim(line, &kn), *v = trim(eq + 1, &vn);
        char **dst = kn == 17 && strncasecmp(k, "aws_access_key_id", kn) == 0       ? &out->key_id
                     : kn == 21 && strncasecmp(k, "aws_secret_access_key", kn) == 0 ? &out->secret
                     : kn == 17 && strncasecmp(k, "aws_session_token", kn) == 0
                         ? &out->session_token
                         : NULL;
        if (!dst) continue;
        free(*dst);
        if (!(*dst = strndup(v, vn))) {
            repoloc_creds_free(out);
            return err_set(e, ERR_FAIL, "out of memory");
        }
    }
    if (!seen || !out->key_id || !out->secret) {
        repoloc_creds_free(out);
        return err_set(e, ERR_NOT_FOUND,
                       seen ? "profile [%s] lacks aws_access_key_id or aws_secret_access_key"
                            : "no profile [%s] in the credentials",
                       profile);
    }
    return 0;
}

int repoloc_azure_var(const char *text, const char *var, char **out, struct err *e)
{
    *out = NULL;
    size_t vl = strlen(var);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        const char *line = trim(p, &n);
        p = nl ? nl + 1 : NULL;
        if (n > 7 && strncmp(line, "export ", 7) == 0) {
            line += 7;
            n -= 7;
            line = trim(line, &n);
        }
        const char *eq = memchr(line, '=', n);
        if (n == 0 || line[0] == '#' || !eq) continue;
        size_t kn = (size_t)(eq - line), vn = n - kn - 1;
        const char *k = trim(line, &kn), *v = trim(eq + 1, &vn);
        if (kn != vl || strncmp(k, var, vl) != 0) continue;
        if (vn >= 2 && (v[0] == '"' || v[0] == '\'') && v[vn - 1] == v[0]) {
            v++;
            vn -= 2;
        }
        if (*out) sodium_memzero(*out, strlen(*out));
        free(*out);
        if (!(*out = strndup(v, vn))) return err_set(e, ERR_FAIL, "out of memory");
    }
    return 0;
}

int repoloc_azure_endpoint(const char *cloud_name, const char *account, char **out, struct err *e)
{
    static const char *const clouds[][2] = {
        {"AzurePublicCloud", "core.windows.net"},
        {"AzureChinaCloud", "core.chinacloudapi.cn"},
        {"AzureUSGovernmentCloud", "core.usgovcloudapi.net"},
    };
    const char *suffix = NULL;
    if (!cloud_name || !*cloud_name) cloud_name = clouds[0][0];
    for (size_t i = 0; i < sizeof clouds / sizeof clouds[0]; i++)
        if (strcasecmp(cloud_name, clouds[i][0]) == 0) suffix = clouds[i][1];
    if (!suffix)
        return err_set(e, ERR_FAIL,
                       "unknown AZURE_CLOUD_NAME \"%.40s\" (AzurePublicCloud, AzureChinaCloud or "
                       "AzureUSGovernmentCloud; or set config.storageAccountURI)",
                       cloud_name);
    if (!(*out = fmt("https://%s.blob.%s", account, suffix)))
        return err_set(e, ERR_FAIL, "out of memory");
    return 0;
}
