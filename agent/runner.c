/* runner.c - one backup or restore of a pod volume, carried out by podvault children. */
#include "agent/runner.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/asys.h"
#include "agent/excludes.h"
#include "agent/gc.h"
#include "agent/repoloc.h"
#include "agent/volfs.h"
#include "agent/volume.h"
#include "base/contract.h"

#define REPO_PASSWORD_SECRET "velero-repo-credentials"
#define REPO_PASSWORD_KEY "repository-password"
#define SECRET_MAX (1u << 20)

/* --- results */

static void set_result(struct runner_result *r, const char *phase, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_result(struct runner_result *r, const char *phase, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    r->phase = phase;
}

/* After a step: a cancel request wins over whatever the step reported. */
static bool canceled(const struct runner_hooks *h, struct runner_result *r, const char *what,
                     const char *path)
{
    if (!*h->cancel) return false;
    set_result(r, "Canceled", "canceled while %s %s", what, path);
    return true;
}

/* A restore canceled while its child ran: the volume holds part of the snapshot. */
static bool canceled_partial(const struct runner_hooks *h, struct runner_result *r,
                             const char *path)
{
    if (!*h->cancel) return false;
    set_result(r, "Canceled",
               "canceled while restoring into %s: the volume is partially restored (%llu of %llu "
               "bytes) and has no completion mark, so the pod waits in its restore-wait init "
               "container; restore it again or delete the pod",
               path, (unsigned long long)r->bytes_done, (unsigned long long)r->total_bytes);
    return true;
}

static void fail_err(struct runner_result *r, const struct err *e)
{
    set_result(r, e->code == ERR_CANCELED ? "Canceled" : "Failed", "%s", e->msg);
}

/* --- the pod's volume */

int runner_find_volume(const struct runner_env *env, struct k8s_client *k, const json_t *spec,
                       char **path, char **claim_out, struct err *e)
{
    const char *ns = k8s_str(spec, "pod.namespace"), *name = k8s_str(spec, "pod.name");
    const char *want_uid = k8s_str(spec, "pod.uid"), *volume = k8s_str(spec, "volume");
    if (!ns || !*ns || !name || !*name)
        return err_set(e, ERR_FAIL, "spec.pod must name the pod's namespace and name");
    if (!volume || !*volume) return err_set(e, ERR_FAIL, "spec.volume is missing");
    char *p = k8s_path(&K8S_PODS, ns, name, NULL);
    json_t *pod = NULL, *pvc = NULL, *pv = NULL, *drivers = NULL;
    int rc = p ? k8s_get(k, p, &pod, e) : err_set(e, ERR_FAIL, "out of memory");
    free(p);
    if (rc < 0) {
        if (rc == ERR_NOT_FOUND) err_set(e, rc, "pod %s/%s does not exist", ns, name);
        return rc;
    }
    const char *uid = k8s_str(pod, "metadata.uid");
    const json_t *entry = volume_entry(pod, volume);
    char *dir = NULL;
    if (!uid) {
        rc = err_set(e, ERR_FAIL, "pod %s/%s has no UID", ns, name);
    } else if (want_uid && *want_uid && strcmp(want_uid, uid) != 0) {
        rc = err_set(e, ERR_FAIL, "pod %s/%s was replaced: its UID is now %s, not %s", ns, name,
                     uid, want_uid);
    } else if (!entry) {
        rc = err_set(e, ERR_FAIL, "pod %s/%s has no volume named %s", ns, name, volume);
    } else if (volume_claim(entry)) {
        const char *claim = volume_claim(entry);
        p = k8s_path(&K8S_PVCS, ns, claim, NULL);
        rc = p ? k8s_get(k, p, &pvc, e) : err_set(e, ERR_FAIL, "out of memory");
        free(p);
        const char *pv_name = k8s_str(pvc, "spec.volumeName");
        if (rc == 0 && !pv_name)
            rc = err_set(e, ERR_FAIL, "PVC %s/%s is not bound to a PersistentVolume", ns, claim);
        if (rc == 0) {
            p = k8s_path(&K8S_PVS, NULL, pv_name, NULL);
            rc = p ? k8s_get(k, p, &pv, e) : err_set(e, ERR_FAIL, "out of memory");
            free(p);
        }
        if (rc == 0 && volume_pv_names_driver(pv)) {
            p = k8s_path(&K8S_CSIDRIVERS, NULL, NULL, NULL);
            rc = p ? k8s_get(k, p, &drivers, e) : err_set(e, ERR_FAIL, "out of memory");
            free(p);
        }
        if (rc == 0 && claim_out && !(*claim_out = strdup(claim)))
            rc = err_set(e, ERR_FAIL, "out of memory");
    }
    if (rc == 0) rc = volume_dir(entry, pv, drivers, &dir, e);
    if (rc == 0) rc = volume_find(env->host_pods, uid, dir, path, e);
    if (rc < 0) err_wrap(e, "volume %s of pod %s/%s", volume, ns, name);
    free(dir);
    json_decref(pod);
    json_decref(pvc);
    json_decref(pv);
    json_decref(drivers);
    return rc;
}

/* --- the repository and the children's environment */

static int secret_value(struct k8s_client *k, const char *ns, const char *name, const char *key,
                        char **out, struct err *e)
{
    char *p = k8s_path(&K8S_SECRETS, ns, name, NULL);
    json_t *s = NULL;
    int rc = p ? k8s_get(k, p, &s, e) : err_set(e, ERR_FAIL, "out of memory");
    free(p);
    if (rc < 0) {
        if (rc == ERR_NOT_FOUND) err_set(e, rc, "Secret %s/%s does not exist", ns, name);
        return rc;
    }
    const char *b64 = json_string_value(json_object_get(json_object_get(s, "data"), key));
    if (!b64) {
        json_decref(s);
        return err_set(e, ERR_NOT_FOUND, "Secret %s/%s has no key %s", ns, name, key);
    }
    size_t n = strlen(b64), got = 0;
    *out = malloc(n + 1);
    if (!*out)
        rc = err_set(e, ERR_FAIL, "out of memory");
    else if (sodium_base642bin((unsigned char *)*out, n, b64, n, " \r\n", &got, NULL,
                               sodium_base64_VARIANT_ORIGINAL) != 0)
        rc = err_set(e, ERR_FAIL, "Secret %s/%s: key %s is not base64", ns, name, key);
    else
        (*out)[got] = '\0';
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    json_decref(s);
    return rc;
}

static bool env_has(const char *const *env, const char *name)
{
    size_t n = strlen(name);
    for (; env && *env; env++)
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=') return true;
    return false;
}

/* The text of the location's credentials: its spec.credential Secret, else the mounted
 * credentials file. *text is NULL (and 0 returned) when there is neither, or, with
 * `file_optional`, when the credentials file is not there. *what names the source for
 * messages. */
static int credentials_text(const struct runner_env *env, struct k8s_client *k, const json_t *bsl,
                            bool file_optional, char **text, char *what, size_t what_cap,
                            struct err *e)
{
    const char *sname = k8s_str(bsl, "spec.credential.name");
    const char *skey = k8s_str(bsl, "spec.credential.key");
    *text = NULL;
    if (sname && *sname) {
        snprintf(what, what_cap, "Secret %s/%s", env->namespace, sname);
        return secret_value(k, env->namespace, sname, skey && *skey ? skey : "cloud", text, e);
    }
    if (!env->credentials_file) return 0;
    if (file_optional && access(env->credentials_file, F_OK) != 0) return 0;
    struct buf file = BUF_INIT;
    snprintf(what, what_cap, "%s", env->credentials_file);
    int rc = asys_read_file(env->credentials_file, SECRET_MAX, &file, e);
    if (rc == 0 && !file.data && buf_append(&file, "", 1) < 0)
        rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) {
        *text = (char *)file.data;
        file.data = NULL;
    }
    buf_free(&file);
    return rc;
}

static void text_free(char *text)
{
    if (!text) return;
    sodium_memzero(text, strlen(text));
    free(text);
}

/* Whether the agent's environment gives the pod an AWS identity that the children's
 * credentials chain (backend/aws_creds.h) uses: IRSA's web identity, or EKS Pod Identity. */
static bool aws_identity(const char *const *env)
{
    return (env_has(env, "AWS_ROLE_ARN") && env_has(env, "AWS_WEB_IDENTITY_TOKEN_FILE")) ||
           env_has(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
}

/* Reads the S3 keys: the location's credential Secret, else the mounted credentials file; with
 * neither, keys or an identity (IRSA, Pod Identity) already in the agent's environment are
 * inherited (creds stays empty): the children's environment is the agent's, so AWS_ROLE_ARN,
 * AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_* and AZURE_* reach them unchanged. */
static int s3_credentials(const struct runner_env *env, struct k8s_client *k, const json_t *bsl,
                          const char *profile, struct repoloc_creds *creds, struct err *e)
{
    char *text = NULL, what[512];
    bool identity = aws_identity(env->base_env);
    int rc = credentials_text(env, k, bsl, identity, &text, what, sizeof what, e);
    if (rc == 0 && !text) {
        if (env_has(env->base_env, "AWS_ACCESS_KEY_ID") || identity) return 0;
        return err_set(e, ERR_FAIL,
                       "no S3 credentials: the location names no spec.credential Secret and no "
                       "credentials file is mounted (--credentials-file or "
                       "AWS_SHARED_CREDENTIALS_FILE; Velero mounts Secret cloud-credentials at "
                       "/credentials/cloud), and the agent has no AWS identity (IRSA: "
                       "AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE; EKS Pod Identity: "
                       "AWS_CONTAINER_CREDENTIALS_FULL_URI)");
    }
    if (rc == 0) {
        rc = repoloc_parse_credentials(text, profile, creds, e);
        if (rc < 0) err_wrap(e, "S3 credentials in %s", what);
    }
    text_free(text);
    return rc;
}

/* The Microsoft Entra ID variables of a useAAD location's job, as Velero's NewCredential
 * (pkg/util/azure/credential.go) picks the credential: a client secret in the credentials file
 * (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET) wins; else the workload identity that
 * the agent's own environment carries (AZURE_FEDERATED_TOKEN_FILE and the rest, inherited);
 * else the managed identity, of the file's AZURE_CLIENT_ID when it names one. */
static int azure_aad_env(const char *text, const char *what, struct asys_strv *out, struct err *e)
{
    static const char *const vars[] = {"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"};
    char *val[3] = {NULL, NULL, NULL}, *cert = NULL;
    int rc = 0;
    for (size_t i = 0; rc == 0 && text && i < 3; i++)
        rc = repoloc_azure_var(text, vars[i], &val[i], e);
    if (rc == 0 && text) rc = repoloc_azure_var(text, "AZURE_CLIENT_CERTIFICATE_PATH", &cert, e);
    if (rc == 0 && cert && *cert && !(val[2] && *val[2]))
        rc = err_set(e, ERR_FAIL,
                     "the Azure credentials in %s name a client certificate: podvault takes a "
                     "client secret (AZURE_CLIENT_SECRET), workload identity or a managed "
                     "identity",
                     what);
    if (rc == 0 && asys_sv_add(out, "AZURE_STORAGE_AUTH_MODE=login") < 0)
        rc = err_set(e, ERR_FAIL, "out of memory");
    bool secret = val[2] && *val[2];
    /* The file's secret wins: an inherited workload identity is set empty (unset for the job). */
    if (rc == 0 && secret && asys_sv_add(out, "AZURE_FEDERATED_TOKEN_FILE=") < 0)
        rc = err_set(e, ERR_FAIL, "out of memory");
    for (size_t i = 0; rc == 0 && i < 3; i++)
        if (val[i] && *val[i] && (secret || i == 1) &&
            asys_sv_addf(out, "%s=%s", vars[i], val[i]) < 0)
            rc = err_set(e, ERR_FAIL, "out of memory");
    for (size_t i = 0; i < 3; i++)
        text_free(val[i]);
    free(cert);
    return rc;
}

/* The variables that give an Azure location's job its account, key (or Entra ID identity) and
 * endpoint, from Velero's Azure credentials file (AZURE_*=... lines; velero
 * pkg/util/azure/storage.go): the key is the line config.storageAccountKeyEnvVar names, the
 * endpoint config.storageAccountURI or the account's in the cloud AZURE_CLOUD_NAME names. */
static int azure_env(const struct runner_env *env, struct k8s_client *k, const json_t *bsl,
                     const struct repoloc *loc, struct asys_strv *out, struct err *e)
{
    char *text = NULL, *key = NULL, *cloud = NULL, *endpoint = NULL, what[512] = "";
    int rc = credentials_text(env, k, bsl, loc->azure_aad, &text, what, sizeof what, e);
    if (rc == 0 && !text && !loc->azure_aad)
        rc = err_set(e, ERR_FAIL,
                     "no Azure credentials: the location names no spec.credential Secret and no "
                     "credentials file is mounted (Velero mounts Secret cloud-credentials at "
                     "/credentials/cloud)");
    if (rc == 0 && !loc->azure_aad) {
        rc = repoloc_azure_var(text, loc->azure_key_var, &key, e);
        if (rc == 0 && (!key || !*key))
            rc = err_set(e, ERR_FAIL,
                         "no %s=... line in the Azure credentials in %s (the location's "
                         "config.storageAccountKeyEnvVar)",
                         loc->azure_key_var, what);
    }
    if (rc == 0 && !loc->azure_endpoint) {
        if (text) rc = repoloc_azure_var(text, "AZURE_CLOUD_NAME", &cloud, e);
        if (rc == 0) rc = repoloc_azure_endpoint(cloud, loc->azure_account, &endpoint, e);
    }
    const char *ep = loc->azure_endpoint ? loc->azure_endpoint : endpoint;
    if (rc == 0 && (asys_sv_addf(out, "AZURE_STORAGE_ACCOUNT=%s", loc->azure_account) < 0 ||
                    (key && asys_sv_addf(out, "AZURE_STORAGE_KEY=%s", key) < 0) ||
                    asys_sv_addf(out, "PODVAULT_AZURE_ENDPOINT=%s", ep) < 0))
        rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0 && loc->azure_aad) rc = azure_aad_env(text, what, out, e);
    text_free(text);
    text_free(key);
    free(cloud);
    free(endpoint);
    return rc;
}

/* Whether the first n entries of `sv` set the variable that `var` ("NAME=value") sets. */
static bool named(const struct asys_strv *sv, size_t n, const char *var)
{
    size_t len = strcspn(var, "=");
    for (size_t i = 0; i < n; i++)
        if (strncmp(sv->v[i], var, len) == 0 && sv->v[i][len] == '=') return true;
    return false;
}

static bool inherited(const char *var, bool own_aws, bool own_azure)
{
    static const char *const drop[] = {
        "PODVAULT_PASSWORD=", "PODVAULT_PASSWORD_FILE=", "PODVAULT_REPOSITORY=", "TMPDIR=", NULL};
    static const char *const aws[] = {"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=",
                                      "AWS_SESSION_TOKEN=", "AWS_SHARED_CREDENTIALS_FILE=", NULL};
    /* A connection string would win over the location's account and key. */
    static const char *const azure[] = {"AZURE_STORAGE_CONNECTION_STRING=",
                                        "AZURE_STORAGE_ACCOUNT=",
                                        "AZURE_STORAGE_KEY=",
                                        "AZURE_STORAGE_SAS_TOKEN=",
                                        "PODVAULT_AZURE_ENDPOINT=",
                                        "AZURE_STORAGE_AUTH_MODE=",
                                        NULL};
    for (const char *const *d = drop; *d; d++)
        if (strncmp(var, *d, strlen(*d)) == 0) return false;
    for (const char *const *d = aws; own_aws && *d; d++)
        if (strncmp(var, *d, strlen(*d)) == 0) return false;
    for (const char *const *d = azure; own_azure && *d; d++)
        if (strncmp(var, *d, strlen(*d)) == 0) return false;
    return true;
}

int runner_child_env(const struct runner_env *env, struct k8s_client *k, const struct repoloc *loc,
                     const json_t *bsl, struct asys_strv *out, struct err *e)
{
    char *password = NULL;
    struct repoloc_creds creds = {0};
    int rc = secret_value(k, env->namespace, REPO_PASSWORD_SECRET, REPO_PASSWORD_KEY, &password, e);
    if (rc < 0) {
        return err_wrap(e,
                        "repository password (Velero creates Secret %s with key %s; create it "
                        "when podvault runs without Velero)",
                        REPO_PASSWORD_SECRET, REPO_PASSWORD_KEY);
    }
    if (loc->s3) rc = s3_credentials(env, k, bsl, loc->profile, &creds, e);
    /* The location's own variables first; an inherited one of the same name is left out. */
    if (rc == 0 && loc->azure) rc = azure_env(env, k, bsl, loc, out, e);
    size_t own = out->n;
    for (const char *const *v = env->base_env; rc == 0 && v && *v; v++)
        if (inherited(*v, creds.key_id != NULL, loc->azure) && !named(out, own, *v) &&
            asys_sv_add(out, *v) < 0)
            rc = err_set(e, ERR_FAIL, "out of memory");
    /* A job assembles packs for object storage in temporary files (pack size x uploads in
     * flight): they go to the scratch volume, never to a container's read-only root. */
    if (rc == 0 &&
        ((env->scratch_dir && asys_sv_addf(out, "TMPDIR=%s", env->scratch_dir) < 0) ||
         asys_sv_addf(out, "PODVAULT_PASSWORD=%s", password) < 0 ||
         (creds.key_id && (asys_sv_addf(out, "AWS_ACCESS_KEY_ID=%s", creds.key_id) < 0 ||
                           asys_sv_addf(out, "AWS_SECRET_ACCESS_KEY=%s", creds.secret) < 0)) ||
         (creds.session_token &&
          asys_sv_addf(out, "AWS_SESSION_TOKEN=%s", creds.session_token) < 0)))
        rc = err_set(e, ERR_FAIL, "out of memory");
    sodium_memzero(password, strlen(password));
    free(password);
    repoloc_creds_free(&creds);
    return rc;
}

static int load_location(const struct runner_env *env, struct k8s_client *k, const json_t *spec,
                         const char *volume_ns, const char *scratch, struct repoloc *loc,
                         json_t **bsl_out, struct err *e)
{
    const char *name = k8s_str(spec, "backupStorageLocation");
    if (!name || !*name) return err_set(e, ERR_FAIL, "spec.backupStorageLocation is missing");
    char *p = k8s_path(&K8S_BSLS, env->namespace, name, NULL);
    int rc = p ? k8s_get(k, p, bsl_out, e) : err_set(e, ERR_FAIL, "out of memory");
    free(p);
    if (rc == ERR_NOT_FOUND)
        return err_set(e, rc, "BackupStorageLocation %s does not exist in namespace %s", name,
                       env->namespace);
    if (rc < 0) return rc;
    return repoloc_from_bsl(*bsl_out, volume_ns, scratch, loc, e);
}

/* --- children */

struct run_ctx {
    const struct runner_hooks *h;
    struct runner_result *res;
};

static void on_status(void *ctx, const struct job_status *st)
{
    struct run_ctx *rc = ctx;
    rc->res->total_bytes = st->total_bytes;
    rc->res->bytes_done = st->bytes_done;
    json_t *f = json_pack("{s:{s:I, s:I}}", "progress", "totalBytes", (json_int_t)st->total_bytes,
                          "bytesDone", (json_int_t)st->bytes_done);
    if (f) rc->h->update(rc->h->ctx, f, false);
    json_decref(f);
}

int runner_base_argv(const struct runner_env *env, const struct repoloc *loc, struct asys_strv *a)
{
    int bad = asys_sv_add(a, env->exe) | asys_sv_add(a, "--json") | asys_sv_add(a, "-r") |
              asys_sv_add(a, loc->location);
    if (env->cache_dir) bad |= asys_sv_add(a, "--cache-dir") | asys_sv_add(a, env->cache_dir);
    for (size_t i = 0; i < loc->n_args; i++)
        bad |= asys_sv_add(a, loc->args[i]);
    return bad ? -1 : 0;
}

/* Runs one child to its end; progress lines reach the hooks when `res` is given. */
static int run_child(const struct runner_hooks *h, const struct asys_strv *argv,
                     const struct asys_strv *envp, struct runner_result *res, struct buf *out,
                     struct job_result *jr, struct err *e)
{
    memset(jr, 0, sizeof *jr); /* callers free it whatever happened */
    if (*h->cancel) return err_set(e, ERR_CANCELED, "canceled");
    struct job *j;
    if (job_start(asys_sv_list(argv), asys_sv_list(envp), &j, e) < 0) return e->code;
    h->child(h->ctx, j);
    struct run_ctx rc = {h, res};
    int r = job_wait(j, res ? on_status : NULL, &rc, out, jr, e);
    h->child(h->ctx, NULL);
    job_free(j);
    return r;
}

void runner_explain(int code, const struct job_result *jr, const struct repoloc *loc,
                    const struct runner_env *env, char *buf, size_t cap)
{
    char why[1024];
    if (code == PV_EXIT_NO_REPO && loc->legacy)
        snprintf(buf, cap,
                 "no podvault repository at %s (one made by an earlier podvault build would be "
                 "at %s: move it with %s)",
                 loc->location, loc->legacy, loc->move_hint);
    else if (code == PV_EXIT_NO_REPO)
        snprintf(buf, cap, "no podvault repository at %s", loc->location);
    else if (code == PV_EXIT_WRONG_PASSWORD)
        snprintf(buf, cap,
                 "wrong repository password: Secret %s/%s (key %s) does not open the repository "
                 "at %s",
                 env->namespace, REPO_PASSWORD_SECRET, REPO_PASSWORD_KEY, loc->location);
    else
        snprintf(buf, cap, "%s", job_result_reason(jr, why, sizeof why));
}

/* `snapshots --json [--host H]` into *list (an array). *code is the exit code. */
static int list_snapshots(const struct runner_env *env, const struct runner_hooks *h,
                          const struct repoloc *loc, const struct asys_strv *envp, const char *host,
                          json_t **list, int *code, char *why, size_t why_cap, struct err *e)
{
    struct asys_strv a = {0};
    struct buf out = BUF_INIT;
    struct job_result jr = {0};
    *list = NULL;
    int rc = runner_base_argv(env, loc, &a) | asys_sv_add(&a, "snapshots");
    if (host) rc |= asys_sv_add(&a, "--host") | asys_sv_add(&a, host);
    rc = rc ? err_set(e, ERR_FAIL, "out of memory") : run_child(h, &a, envp, NULL, &out, &jr, e);
    if (rc == 0) {
        *code = jr.exit_code;
        if (jr.exit_code == 0) {
            *list = json_loadb(out.data ? (const char *)out.data : "", out.len, 0, NULL);
            if (!json_is_array(*list)) {
                json_decref(*list);
                *list = NULL;
                rc = err_set(e, ERR_FAIL, "podvault snapshots --json did not print an array");
            }
        } else {
            runner_explain(jr.exit_code, &jr, loc, env, why, why_cap);
        }
    }
    job_result_free(&jr);
    buf_free(&out);
    asys_sv_free(&a);
    return rc;
}

const json_t *runner_pick_snapshot(const json_t *list, const char *id)
{
    const json_t *best = NULL;
    size_t i, idlen = id ? strlen(id) : 0, matches = 0;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *sid = k8s_str(s, "id"), *t = k8s_str(s, "time");
        if (!sid) continue;
        if (id) {
            if (strcmp(sid, id) == 0) return s;
            if (idlen && strncmp(sid, id, idlen) == 0) {
                best = s;
                matches++;
            }
        } else if (t && (!best || strcmp(t, k8s_str(best, "time")) > 0)) {
            best = s;
        }
    }
    return id && matches != 1 ? NULL : best;
}

/* --- scratch space for one job */

/* Removes the job's scratch directory (the agent's own, under env->scratch_dir) the same way
 * as anything else: through descriptors, never following a link. */
static void remove_scratch(const struct runner_env *env, const char *dir)
{
    struct err e;
    int fd = open(env->scratch_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const char *name = strrchr(dir, '/');
    if (fd < 0) return;
    if (name && volfs_remove(fd, name + 1, env->scratch_dir, &e) < 0)
        asys_log(ASYS_WARN, NULL, NULL, NULL, "%s", e.msg);
    close(fd);
}

static int make_scratch(const struct runner_env *env, char *dir, size_t cap, struct err *e)
{
    snprintf(dir, cap, "%s/podvault-job-XXXXXX", env->scratch_dir);
    if (!mkdtemp(dir))
        return err_sys(e, errno, "creating a scratch directory under %s", env->scratch_dir);
    return 0;
}

/* What a backup and a restore share: the volume, the scratch directory, the location and the
 * children's environment. */
struct prep {
    char *path, *claim;
    int volfd; /* the volume, opened by volfs_open; -1 until then */
    char scratch[PATH_MAX];
    struct repoloc loc;
    json_t *bsl;
    struct asys_strv envp;
};

static void prep_init(struct prep *p)
{
    memset(p, 0, sizeof *p);
    p->volfd = -1;
}

static int prepare(const struct runner_env *env, struct k8s_client *k, const json_t *spec,
                   const char *repo_ns, const struct runner_hooks *h, struct prep *p,
                   struct runner_result *res, struct err *e)
{
    prep_init(p);
    if (runner_find_volume(env, k, spec, &p->path, &p->claim, e) < 0) return e->code;
    p->volfd = volfs_open(p->path, e);
    if (p->volfd < 0) return e->code;
    snprintf(res->path, sizeof res->path, "%s", p->path);
    json_t *f = json_pack("{s:s}", "path", p->path);
    if (f) h->update(h->ctx, f, true);
    json_decref(f);
    if (make_scratch(env, p->scratch, sizeof p->scratch, e) < 0) return e->code;
    if (load_location(env, k, spec, repo_ns, p->scratch, &p->loc, &p->bsl, e) < 0) return e->code;
    return runner_child_env(env, k, &p->loc, p->bsl, &p->envp, e);
}

static void prep_free(const struct runner_env *env, struct prep *p)
{
    if (p->scratch[0]) remove_scratch(env, p->scratch);
    if (p->volfd >= 0) close(p->volfd);
    free(p->path);
    free(p->claim);
    repoloc_free(&p->loc);
    json_decref(p->bsl);
    asys_sv_free(&p->envp);
}

/* --- backup */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* --tag k=v for each of the PVB's tags, in key order so runs are repeatable. */
static int add_tags(struct asys_strv *a, const json_t *tags)
{
    size_t n = json_object_size(tags), i = 0;
    if (!n) return 0;
    const char **keys = calloc(n, sizeof *keys);
    if (!keys) return -1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)tags, key, v) keys[i++] = key;
    qsort(keys, n, sizeof *keys, cmp_str);
    int bad = 0;
    for (i = 0; i < n; i++) {
        const char *val = json_string_value(json_object_get(tags, keys[i]));
        bad |= asys_sv_add(a, "--tag") | asys_sv_addf(a, "%s=%s", keys[i], val ? val : "");
    }
    free(keys);
    return bad;
}

/* --label velero-backup=B --label velero-backup-uid=U for the Velero backup the PVB was made
 * for, by which maintenance forgets the snapshot once that backup is gone (gc.h). */
static int add_owner_labels(struct asys_strv *a, const json_t *pvb)
{
    struct gc_owner o;
    if (!gc_pvb_owner(pvb, &o)) return 0;
    return asys_sv_add(a, "--label") | asys_sv_addf(a, GC_LABEL_NAME "=%s", o.name) |
           asys_sv_add(a, "--label") | asys_sv_addf(a, GC_LABEL_UID "=%s", o.uid);
}

int runner_parallel(const char *key, const char *value, unsigned *threads, char *note, size_t cap)
{
    assert(key && threads && note && cap > 0);
    *threads = 0;
    if (!value || !*value) return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(value, &end, 10);
    bool digits = value[0] >= '0' && value[0] <= '9' && *end == '\0';
    if (!digits || n == 0) {
        snprintf(note, cap, "uploaderSettings.%s \"%.40s\" is not a positive number: ignored", key,
                 value);
        return 0;
    }
    if (errno == ERANGE || n > RUNNER_MAX_THREADS) {
        snprintf(note, cap, "uploaderSettings.%s %.40s is more than podvault runs: %u used", key,
                 value, RUNNER_MAX_THREADS);
        n = RUNNER_MAX_THREADS;
    }
    *threads = (unsigned)n;
    return 0;
}

/* --threads N from the uploaderSettings value `key` of `spec`, when it gives a number. */
static int add_threads(struct asys_strv *a, const json_t *spec, const char *key, char *note,
                       size_t cap)
{
    char path[80];
    unsigned n;
    snprintf(path, sizeof path, "uploaderSettings.%s", key);
    runner_parallel(key, k8s_str(spec, path), &n, note, cap);
    return n > 0 ? asys_sv_add(a, "--threads") | asys_sv_addf(a, "%u", n) : 0;
}

/* Fails, naming the command that moves it, when the namespace's repository is at the place
 * earlier builds used (repoloc.h): a new repository beside it would silently start over. */
static int refuse_legacy(const struct runner_env *env, const struct runner_hooks *h, struct prep *p,
                         struct err *e)
{
    struct repoloc old = p->loc; /* shallow: only `location` differs, nothing is freed */
    old.location = p->loc.legacy;
    json_t *list = NULL;
    int code = 0;
    char why[1024] = "";
    int rc = list_snapshots(env, h, &old, &p->envp, NULL, &list, &code, why, sizeof why, e);
    json_decref(list);
    if (rc < 0 || code == PV_EXIT_NO_REPO) return rc;
    return err_set(e, ERR_FAIL,
                   "the repository of this namespace is at %s, where earlier podvault builds "
                   "put it; Velero marks the location Unavailable while it is there. Move it, "
                   "then back up again: %s",
                   p->loc.legacy, p->loc.move_hint);
}

/* Creates the namespace's repository unless another job (or node) just did. */
static int init_repo(const struct runner_env *env, const struct runner_hooks *h, struct prep *p,
                     struct err *e)
{
    struct asys_strv a = {0};
    struct job_result jr = {0};
    json_t *list = NULL;
    int code = 0;
    char why[1024] = "";
    pthread_mutex_lock(env->init_lock);
    int rc = list_snapshots(env, h, &p->loc, &p->envp, NULL, &list, &code, why, sizeof why, e);
    if (rc == 0 && code == PV_EXIT_NO_REPO) rc = refuse_legacy(env, h, p, e);
    if (rc == 0 && code == PV_EXIT_NO_REPO) {
        rc = runner_base_argv(env, &p->loc, &a) | asys_sv_add(&a, "init");
        for (size_t i = 0; rc == 0 && i < p->loc.n_init_args; i++)
            rc = asys_sv_add(&a, p->loc.init_args[i]);
        rc = rc ? err_set(e, ERR_FAIL, "out of memory")
                : run_child(h, &a, &p->envp, NULL, NULL, &jr, e);
        if (rc == 0 && jr.exit_code != 0) {
            runner_explain(jr.exit_code, &jr, &p->loc, env, why, sizeof why);
            rc = err_set(e, ERR_FAIL, "creating the repository at %s: %s", p->loc.location, why);
            /* The agent of another node may have created it just now. */
            json_decref(list);
            struct err again;
            if (list_snapshots(env, h, &p->loc, &p->envp, NULL, &list, &code, why, sizeof why,
                               &again) == 0 &&
                code == 0)
                rc = 0;
        }
        job_result_free(&jr);
    } else if (rc == 0 && code != 0) {
        rc = err_set(e, ERR_FAIL, "%s", why);
    }
    pthread_mutex_unlock(env->init_lock);
    json_decref(list);
    asys_sv_free(&a);
    return rc;
}

void runner_backup(const struct runner_env *env, struct k8s_client *k, const json_t *pvb,
                   const struct runner_hooks *h, struct runner_result *res)
{
    memset(res, 0, sizeof *res);
    res->phase = "Failed";
    const json_t *spec = k8s_at(pvb, "spec");
    const char *ns = k8s_str(spec, "pod.namespace"), *pod = k8s_str(spec, "pod.name");
    const char *volume = k8s_str(spec, "volume");
    struct err e;
    err_clear(&e);
    struct prep p;
    struct asys_strv a = {0};
    struct job_result jr = {0};
    json_t *list = NULL;
    char host[512], why[1024] = "", note[200] = "";
    bool empty = false;
    int code = 0;
    if (prepare(env, k, spec, ns, h, &p, res, &e) < 0) goto fail;
    if (volfs_is_empty(p.volfd, p.path, &empty, &e) < 0) goto fail;
    if (empty) {
        set_result(res, "Completed", "volume %s is empty: no snapshot was taken", volume);
        goto out;
    }
    if (p.claim)
        snprintf(host, sizeof host, "%s/%s", ns, p.claim);
    else
        snprintf(host, sizeof host, "%s/%s/%s", ns, pod, volume);
    if (list_snapshots(env, h, &p.loc, &p.envp, host, &list, &code, why, sizeof why, &e) < 0)
        goto fail;
    if (canceled(h, res, "backing up", p.path)) goto out;
    if (code == PV_EXIT_NO_REPO) {
        if (init_repo(env, h, &p, &e) < 0) goto fail;
    } else if (code != 0) {
        set_result(res, "Failed", "%s", why);
        goto out;
    }
    const json_t *parent = runner_pick_snapshot(list, NULL);
    int bad = runner_base_argv(env, &p.loc, &a) | asys_sv_add(&a, "backup") |
              asys_sv_add(&a, p.path) | asys_sv_add(&a, "--host") | asys_sv_add(&a, host) |
              asys_sv_add(&a, "--label") | asys_sv_addf(&a, "pod=%s", pod) |
              asys_sv_add(&a, "--label") | asys_sv_addf(&a, "namespace=%s", ns) |
              asys_sv_add(&a, "--label") | asys_sv_addf(&a, "volume=%s", volume) |
              add_tags(&a, k8s_at(spec, "tags")) | add_owner_labels(&a, pvb);
    if (p.claim) bad |= asys_sv_add(&a, "--label") | asys_sv_addf(&a, "pvc=%s", p.claim);
    if (parent) bad |= asys_sv_add(&a, "--parent") | asys_sv_add(&a, k8s_str(parent, "id"));
    bad |= add_threads(&a, spec, "ParallelFilesUpload", note, sizeof note);
    if (bad) {
        err_set(&e, ERR_FAIL, "out of memory");
        goto fail;
    }
    if (exc_args_for_pvb(k, spec, p.path, &a, &e) < 0) goto fail; /* the pod's excludes */
    if (run_child(h, &a, &p.envp, res, NULL, &jr, &e) < 0) goto fail;
    if (jr.exit_code != 0 && canceled(h, res, "backing up", p.path)) goto out;
    const char *snap = k8s_str(jr.summary, "snapshot_id");
    if (snap) snprintf(res->snapshot_id, sizeof res->snapshot_id, "%s", snap);
    if (jr.summary) {
        res->total_bytes = (uint64_t)json_integer_value(json_object_get(jr.summary, "total_bytes"));
        res->bytes_done = res->total_bytes;
        res->bytes_new = (uint64_t)json_integer_value(json_object_get(jr.summary, "bytes_new"));
    }
    if (jr.exit_code == 0 && snap) {
        set_result(res, "Completed", "%s", note);
    } else if (jr.exit_code == PV_EXIT_INCOMPLETE) {
        set_result(res, "Failed",
                   "snapshot %s was saved, but %llu entries could not be read (first: %s)",
                   snap ? snap : "(unknown)", (unsigned long long)jr.error_lines,
                   jr.first_error[0] ? jr.first_error : "see the agent log");
    } else if (jr.exit_code == 0) {
        set_result(res, "Failed", "podvault backup ended without reporting a snapshot ID");
    } else {
        runner_explain(jr.exit_code, &jr, &p.loc, env, why, sizeof why);
        set_result(res, "Failed", "backup of %s: %s", p.path, why);
    }
    goto out;
fail:
    fail_err(res, &e);
out:
    job_result_free(&jr);
    json_decref(list);
    asys_sv_free(&a);
    prep_free(env, &p);
}

/* --- restore */

/* The UID of the Restore the PVR belongs to: its first owner, else Velero's label. */
static const char *restore_uid(const json_t *pvr)
{
    const char *uid = k8s_str(json_array_get(k8s_at(pvr, "metadata.ownerReferences"), 0), "uid");
    if (uid) return uid;
    return json_string_value(
        json_object_get(k8s_at(pvr, "metadata.labels"), "velero.io/restore-uid"));
}

/* Whether a restore is refused from its spec alone (then *e says why): no snapshot ID, a restore
 * UID that cannot name the completion mark, or a source namespace that is no namespace name. */
static bool restore_refused(const char *snap, const char *uid, const char *src_ns, struct err *e)
{
    if (!snap || !*snap) {
        err_set(e, ERR_FAIL, "spec.snapshotID is missing");
        return true;
    }
    if (!volfs_mark_name_ok(uid)) {
        err_set(e, ERR_FAIL,
                "the restore UID (the first ownerReference's uid, else the label "
                "velero.io/restore-uid) \"%.80s\" cannot name the completion mark: nothing "
                "was restored",
                uid ? uid : "");
        return true;
    }
    if (!k8s_namespace_ok(src_ns)) {
        err_set(e, ERR_FAIL,
                "spec.sourceNamespace \"%.80s\" is not a Kubernetes namespace name: nothing "
                "was restored",
                src_ns ? src_ns : "");
        return true;
    }
    return false;
}

void runner_restore(const struct runner_env *env, struct k8s_client *k, const json_t *pvr,
                    const struct runner_hooks *h, struct runner_result *res)
{
    memset(res, 0, sizeof *res);
    res->phase = "Failed";
    const json_t *spec = k8s_at(pvr, "spec");
    const char *snap = k8s_str(spec, "snapshotID"), *src_ns = k8s_str(spec, "sourceNamespace");
    if (!src_ns || !*src_ns) src_ns = k8s_str(spec, "pod.namespace");
    struct err e;
    err_clear(&e);
    struct prep p;
    struct asys_strv a = {0};
    struct job_result jr = {0};
    json_t *list = NULL;
    char why[1024] = "", note[200] = "";
    int code = 0;
    const char *uid = restore_uid(pvr);
    prep_init(&p);
    /* Everything that can be refused is refused before the volume is touched. */
    if (restore_refused(snap, uid, src_ns, &e)) goto fail;
    if (prepare(env, k, spec, src_ns, h, &p, res, &e) < 0) goto fail;
    if (list_snapshots(env, h, &p.loc, &p.envp, NULL, &list, &code, why, sizeof why, &e) < 0)
        goto fail;
    if (canceled(h, res, "restoring into", p.path)) goto out;
    if (code == PV_EXIT_NO_REPO) {
        set_result(res, "Failed",
                   "snapshot %s cannot be restored: there is no podvault repository at %s (a "
                   "snapshot taken by Velero's own kopia or restic uploader needs Velero's "
                   "node-agent)",
                   snap, p.loc.location);
        goto out;
    }
    if (code != 0) {
        set_result(res, "Failed", "%s", why);
        goto out;
    }
    const json_t *found = runner_pick_snapshot(list, snap);
    if (!found) {
        set_result(res, "Failed",
                   "snapshot %s is not in the podvault repository at %s (a snapshot taken by "
                   "Velero's own kopia or restic uploader needs Velero's node-agent)",
                   snap, p.loc.location);
        goto out;
    }
    res->total_bytes = (uint64_t)json_integer_value(k8s_at(found, "summary.total_bytes"));
    const char *sparse = k8s_str(spec, "uploaderSettings.WriteSparseFiles");
    int bad = runner_base_argv(env, &p.loc, &a) | asys_sv_add(&a, "restore") |
              asys_sv_add(&a, k8s_str(found, "id")) | asys_sv_add(&a, "--target") |
              asys_sv_add(&a, p.path);
    if (sparse && strcasecmp(sparse, "true") == 0) bad |= asys_sv_add(&a, "--sparse");
    bad |= add_threads(&a, spec, "ParallelFilesDownload", note, sizeof note);
    if (bad) {
        err_set(&e, ERR_FAIL, "out of memory");
        goto fail;
    }
    if (run_child(h, &a, &p.envp, res, NULL, &jr, &e) < 0) goto fail;
    if (jr.exit_code != 0 && canceled_partial(h, res, p.path)) goto out;
    if (jr.exit_code != 0) {
        runner_explain(jr.exit_code, &jr, &p.loc, env, why, sizeof why);
        set_result(res, "Failed", "restore of snapshot %s into %s: %s", snap, p.path, why);
    } else if (volfs_write_mark(p.volfd, p.path, uid, &e) < 0) {
        err_wrap(&e, "data restored, but the completion mark for Velero's restore-wait could not "
                     "be written");
        goto fail;
    } else {
        res->bytes_done = res->total_bytes;
        set_result(res, "Completed", "%s", note);
    }
    goto out;
fail:
    fail_err(res, &e);
out:
    job_result_free(&jr);
    json_decref(list);
    asys_sv_free(&a);
    prep_free(env, &p);
}
