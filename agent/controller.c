/* controller.c - the PVB/PVR controller of one node: informers, decisions, status writes and
 * job threads; see controller.h. Its workers take keys from a work queue (agent/workq.h). */
#include "agent/controller.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/asys.h"
#include "agent/rwait.h"
#include "agent/workq.h"

#define N_WORKERS 2
#define CONFLICT_RETRIES 50     /* 409s in a row before a status write gives up (5 s) */
#define FINAL_WRITE_ATTEMPTS 60 /* a final status is retried for about a minute */
#define UNHEALTHY_FAILURES 5    /* failed list/watch attempts in a row */

/* ------------------------------------------------------------------------------------------
 * Decisions */

/* String equality where NULL (an absent field) is the empty string. */
static bool str_is(const char *s, const char *want)
{
    return strcmp(s ? s : "", want) == 0;
}

static bool phase_final(const char *p)
{
    return str_is(p, "Completed") || str_is(p, "Failed") || str_is(p, "Canceled");
}

enum ctl_action ctl_decide(const struct ctl_view *v)
{
    const char *p = v->phase ? v->phase : "";
    if (!v->ours || phase_final(p)) return CTL_IGNORE;
    if (v->job_running) {
        if (v->cancel || v->deleting) return str_is(p, "Canceling") ? CTL_IGNORE : CTL_CANCEL_JOB;
        return CTL_IGNORE;
    }
    if (str_is(p, "InProgress")) return CTL_FAIL_ORPHAN;
    if (str_is(p, "Canceling")) return CTL_FINISH_CANCEL;
    if (v->deleting) return CTL_IGNORE;
    bool fresh = str_is(p, "") || str_is(p, "New");
    if (fresh || str_is(p, "Accepted") || str_is(p, "Prepared")) {
        if (v->cancel) return CTL_CANCEL_NEW;
        if (v->gate_never || (v->gate_closed && v->expired)) return CTL_FAIL_PREPARE;
        if (v->gate_closed) return CTL_WAIT;
        if (fresh && !v->legacy) return CTL_ACCEPT;
        return v->slot_free ? CTL_START : CTL_WAIT;
    }
    return CTL_IGNORE; /* a phase this agent does not know */
}

const char *ctl_action_name(enum ctl_action a)
{
    static const char *const names[] = {"ignore",      "accept",        "start",
                                        "wait",        "cancel-new",    "cancel-job",
                                        "fail-orphan", "finish-cancel", "fail-prepare"};
    return (unsigned)a < sizeof names / sizeof names[0] ? names[a] : "?";
}

/* ------------------------------------------------------------------------------------------
 * Concurrency from Velero's node-agent ConfigMap */

static bool selector_matches(const json_t *sel, const json_t *labels)
{
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(sel, "matchLabels"), key, v)
    {
        const char *have = json_string_value(json_object_get(labels, key));
        if (!have || !json_is_string(v) || strcmp(have, json_string_value(v)) != 0) return false;
    }
    size_t i, j;
    json_t *ex, *val;
    json_array_foreach(json_object_get(sel, "matchExpressions"), i, ex)
    {
        const char *k = k8s_str(ex, "key"), *op = k8s_str(ex, "operator");
        const char *have = k ? json_string_value(json_object_get(labels, k)) : NULL;
        if (!k || !op) return false;
        bool in = false;
        json_array_foreach(json_object_get(ex, "values"), j, val)
        {
            if (have && json_is_string(val) && strcmp(have, json_string_value(val)) == 0) in = true;
        }
        if ((strcmp(op, "In") == 0 && !in) || (strcmp(op, "NotIn") == 0 && in) ||
            (strcmp(op, "Exists") == 0 && !have) || (strcmp(op, "DoesNotExist") == 0 && have))
            return false;
        if (strcmp(op, "In") && strcmp(op, "NotIn") && strcmp(op, "Exists") &&
            strcmp(op, "DoesNotExist"))
            return false;
    }
    return true;
}

int ctl_concurrency_from_config(const char *json_text, const json_t *node, unsigned fallback,
                                unsigned *out, struct err *e)
{
    json_error_t je;
    json_t *cfg = json_loads(json_text, 0, &je);
    if (!cfg) return err_set(e, ERR_FAIL, "node-agent configuration is not JSON: %s", je.text);
    json_t *lc = json_object_get(cfg, "loadConcurrency");
    if (!json_is_object(lc)) {
        json_decref(cfg);
        return err_set(e, ERR_NOT_FOUND, "no loadConcurrency in the node-agent configuration");
    }
    json_int_t global = json_integer_value(json_object_get(lc, "globalConfig"));
    json_int_t best = 0;
    size_t i;
    json_t *pn;
    json_t *labels = k8s_at(node, "metadata.labels");
    json_array_foreach(json_object_get(lc, "perNodeConfig"), i, pn)
    {
        json_int_t n = json_integer_value(json_object_get(pn, "number"));
        if (n > 0 && selector_matches(json_object_get(pn, "nodeSelector"), labels) &&
            (best == 0 || n < best))
            best = n;
    }
    *out = best > 0 ? (unsigned)best : global > 0 ? (unsigned)global : fallback;
    json_decref(cfg);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * The controller */

/* The informers: the two kinds served, and the pods of this node (INF_PODS). */
enum { KIND_PVB, KIND_PVR, INF_PODS, N_INF };

static const char *const kind_names[] = {"PodVolumeBackup", "PodVolumeRestore", "Pod"};
static const struct k8s_res *const kind_res[] = {&K8S_PVBS, &K8S_PVRS, &K8S_PODS};

struct ctl_job {
    struct ctl_job *next;
    struct ctl *c;
    int kind;
    char *key, *uid;
    json_t *obj;        /* the object as it was when the job started */
    pthread_mutex_t mu; /* guards child */
    struct job *child;
    volatile int cancel; /* the object asked to stop, or the agent is stopping */
    volatile int handback;
    volatile int deleted; /* the object is gone: nothing to write */
    time_t started, last_progress;
    json_t *pending_progress;
};

struct ictx {
    struct ctl *c;
    int kind;
    struct k8s_informer inf;
    struct k8s_client *k;
    json_t *seen; /* keys of the current list */
    pthread_t thread;
    unsigned long seen_failures, seen_lists, seen_resumes, seen_expired;
};

struct ctl {
    struct ctl_config cfg;
    pthread_mutex_t init_lock;
    pthread_mutex_t mu; /* cache and jobs */
    pthread_cond_t jobs_cv;
    json_t *cache; /* key -> object not final (PVBs: of this node) */
    json_t *pods;  /* "ns/name" -> the pods of this node, for PVRs */
    char pod_selector[300];
    struct ctl_job *jobs;
    unsigned n_jobs;
    struct job_slots slots;
    struct wq q;
    int status_sub[2]; /* per kind: 0 unknown, 1 the kind has /status, -1 it has none */
    int legacy[2];     /* per kind: the CRD refused a phase newer than Velero 1.16's */
    volatile int stop_watch;
    struct ictx inf[N_INF];
    pthread_t workers[N_WORKERS];
};

static void make_key(char *out, size_t cap, int kind, const char *ns, const char *name)
{
    snprintf(out, cap, "%c/%s/%s", kind == KIND_PVB ? 'b' : 'r', ns ? ns : "", name ? name : "");
}

static void log_obj(enum asys_level lvl, int kind, const json_t *obj, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_obj(enum asys_level lvl, int kind, const json_t *obj, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    asys_log(lvl, kind_names[kind], k8s_str(obj, "metadata.namespace"),
             k8s_str(obj, "metadata.name"), "%s", msg);
}

static bool uploader_served(const struct ctl *c, const json_t *obj)
{
    const char *t = k8s_str(obj, "spec.uploaderType");
    if (!t) t = "";
    for (size_t i = 0; i < c->cfg.n_uploader_types; i++)
        if (strcmp(c->cfg.uploader_types[i], t) == 0) return true;
    return false;
}

/* Whether the informers keep the object in the cache (a worker may have something to do). */
static bool worth_caching(const struct ctl *c, int kind, const json_t *obj)
{
    if (phase_final(k8s_str(obj, "status.phase"))) return false;
    if (kind == KIND_PVB) {
        const char *node = k8s_str(obj, "spec.node");
        return node && strcmp(node, c->cfg.node) == 0;
    }
    const char *node = k8s_str(obj, "status.node");
    return !node || !*node || strcmp(node, c->cfg.node) == 0;
}

static struct ctl_job *job_find_locked(struct ctl *c, const char *key)
{
    for (struct ctl_job *j = c->jobs; j; j = j->next)
        if (strcmp(j->key, key) == 0) return j;
    return NULL;
}

static void enqueue_all(struct ctl *c)
{
    pthread_mutex_lock(&c->mu);
    json_t *keys = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(c->cache, key, v) json_object_set_new(keys, key, json_true());
    pthread_mutex_unlock(&c->mu);
    json_object_foreach(keys, key, v) wq_add(&c->q, key);
    json_decref(keys);
}

/* --- informers */

static int on_event(void *ctx, enum k8s_event t, json_t *obj)
{
    struct ictx *ic = ctx;
    struct ctl *c = ic->c;
    char key[600];
    if (t == K8S_LIST_BEGIN) {
        json_object_clear(ic->seen);
        return 0;
    }
    if (t == K8S_SYNC) { /* objects the list did not return are gone */
        json_t *gone = json_array();
        const char *k;
        json_t *v;
        void *tmp;
        pthread_mutex_lock(&c->mu);
        json_object_foreach_safe(c->cache, tmp, k, v)
        {
            if (k[0] == (ic->kind == KIND_PVB ? 'b' : 'r') && !json_object_get(ic->seen, k)) {
                json_array_append_new(gone, json_string(k));
                json_object_del(c->cache, k);
            }
        }
        pthread_mutex_unlock(&c->mu);
        size_t i;
        json_array_foreach(gone, i, v) wq_add(&c->q, json_string_value(v));
        json_decref(gone);
        json_object_clear(ic->seen);
        return 0;
    }
    make_key(key, sizeof key, ic->kind, k8s_str(obj, "metadata.namespace"),
             k8s_str(obj, "metadata.name"));
    if (t == K8S_LIST) json_object_set_new(ic->seen, key, json_true());
    bool keep = t != K8S_DELETED && worth_caching(c, ic->kind, obj);
    pthread_mutex_lock(&c->mu);
    if (keep)
        json_object_set(c->cache, key, obj);
    else
        json_object_del(c->cache, key);
    bool has_job = job_find_locked(c, key) != NULL;
    pthread_mutex_unlock(&c->mu);
    if (keep || has_job) wq_add(&c->q, key);
    return 0;
}

/* The pods of this node: a PVR whose target pod is among them is this node's. A pod that
 * appears (or changes) brings the PVRs that wait for it back to the queue. */
static int on_pod_event(void *ctx, enum k8s_event t, json_t *obj)
{
    struct ictx *ic = ctx;
    struct ctl *c = ic->c;
    char key[600];
    const char *k;
    json_t *v;
    void *tmp;
    json_t *wake = json_array();
    pthread_mutex_lock(&c->mu);
    if (t == K8S_LIST_BEGIN) {
        json_object_clear(ic->seen);
    } else if (t == K8S_SYNC) {
        json_object_foreach_safe(c->pods, tmp, k, v)
        {
            if (!json_object_get(ic->seen, k)) json_object_del(c->pods, k);
        }
    } else {
        const char *ns = k8s_str(obj, "metadata.namespace"), *name = k8s_str(obj, "metadata.name");
        snprintf(key, sizeof key, "%s/%s", ns ? ns : "", name ? name : "");
        if (t == K8S_LIST) json_object_set_new(ic->seen, key, json_true());
        if (t == K8S_DELETED) {
            json_object_del(c->pods, key);
        } else {
            json_object_set(c->pods, key, obj);
            json_object_foreach(c->cache, k, v)
            {
                if (k[0] == 'r' && str_is(k8s_str(v, "spec.pod.namespace"), ns ? ns : "") &&
                    str_is(k8s_str(v, "spec.pod.name"), name ? name : ""))
                    json_array_append_new(wake, json_string(k));
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    size_t i;
    json_array_foreach(wake, i, v) wq_add(&c->q, json_string_value(v));
    json_decref(wake);
    return 0;
}

static void on_watch_error(void *ctx, const struct err *e)
{
    struct ictx *ic = ctx;
    asys_log(ASYS_WARN, kind_names[ic->kind], ic->c->cfg.namespace, NULL,
             "list/watch failed (retrying): %s", e->msg);
}

static void *informer_thread(void *arg)
{
    struct ictx *ic = arg;
    k8s_informer_run(ic->k, &ic->inf);
    return NULL;
}

/* --- status writes */

/* Whether `phase` is one of `from` (a NULL-terminated list; NULL: any phase). */
static bool phase_in(const char *phase, const char *const *from)
{
    bool allowed = !from;
    for (const char *const *f = from; f && *f; f++)
        allowed |= str_is(phase, *f);
    return allowed;
}

/* Merges `fields` into obj's status (made an object if it is not one; a null value removes the
 * key); returns whether the status changed. */
static bool merge_status(json_t *obj, const json_t *fields)
{
    json_t *status = json_object_get(obj, "status");
    if (!json_is_object(status)) {
        status = json_object();
        json_object_set_new(obj, "status", status);
    }
    json_t *before = json_deep_copy(status);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)fields, key, v)
    {
        if (json_is_null(v))
            json_object_del(status, key);
        else
            json_object_set(status, key, v);
    }
    bool changed = !json_equal(before, status);
    json_decref(before);
    return changed;
}

/* Merges `fields` into the object's status (a null value removes the key). Skipped (returns 1)
 * when the phase is not one of `from` (NULL: any) or the object is not the one with `uid`.
 * *out (if not NULL) receives the object as written. */
static int status_update(struct ctl *c, struct k8s_client *k, int kind, const char *ns,
                         const char *name, const char *uid, const json_t *fields,
                         const char *const *from, json_t **out, struct err *e)
{
    char *path = k8s_path(kind_res[kind], ns, name, NULL);
    char *spath = k8s_path(kind_res[kind], ns, name, "status");
    int rc = 0;
    if (out) *out = NULL;
    if (!path || !spath) {
        rc = err_set(e, ERR_FAIL, "out of memory");
        goto done;
    }
    for (int attempt = 0;; attempt++) {
        json_t *obj = NULL, *written = NULL;
        if (attempt > CONFLICT_RETRIES) {
            rc = err_set(e, ERR_FAIL, "status of %s/%s: still conflicting after %d attempts", ns,
                         name, attempt);
            break;
        }
        if ((rc = k8s_get(k, path, &obj, e)) < 0) break;
        const char *have_uid = k8s_str(obj, "metadata.uid");
        const char *phase = k8s_str(obj, "status.phase");
        if ((uid && (!have_uid || strcmp(uid, have_uid) != 0)) || !phase_in(phase, from)) {
            json_decref(obj);
            rc = 1;
            break;
        }
        if (!merge_status(obj, fields)) {
            if (out)
                *out = obj;
            else
                json_decref(obj);
            rc = 0;
            break;
        }
        int sub = __atomic_load_n(&c->status_sub[kind], __ATOMIC_RELAXED);
        rc = k8s_put(k, sub >= 0 ? spath : path, obj, &written, e);
        if (rc == ERR_NOT_FOUND && sub >= 0) {
            /* No /status: the kind keeps status in the object (Velero's CRDs), unless the
             * object itself is gone, which the next GET tells. */
            __atomic_store_n(&c->status_sub[kind], -1, __ATOMIC_RELAXED);
            json_decref(obj);
            continue;
        }
        if (rc == 0 && sub >= 0) __atomic_store_n(&c->status_sub[kind], 1, __ATOMIC_RELAXED);
        if (rc == 0 && sub < 0 &&
            !str_is(k8s_str(written, "status.phase"), k8s_str(obj, "status.phase"))) {
            /* The server dropped the status: the kind has gained a status subresource. Only the
             * phase tells: a CRD prunes the fields it does not know (Velero's versions differ). */
            __atomic_store_n(&c->status_sub[kind], 1, __ATOMIC_RELAXED);
            json_decref(obj);
            json_decref(written);
            continue;
        }
        json_decref(obj);
        if (rc == ERR_EXISTS) {
            json_decref(written);
            usleep(100 * 1000);
            continue;
        }
        if (rc == 0 && out)
            *out = written;
        else
            json_decref(written);
        break;
    }
done:
    free(path);
    free(spath);
    return rc;
}

/* A status write of a worker or job, with the reason logged when it fails. */
/* The phases of Velero 1.16 and earlier stand in for the newer ones: Accepted is New again,
 * Canceling is not written, Canceled is Failed. Returns false when `fields` had a newer phase. */
static bool to_legacy_phases(json_t *fields)
{
    const char *p = json_string_value(json_object_get(fields, "phase"));
    if (str_is(p, "Accepted") || str_is(p, "Prepared"))
        json_object_set_new(fields, "phase", json_string("New"));
    else if (str_is(p, "Canceling"))
        json_object_del(fields, "phase");
    else if (str_is(p, "Canceled"))
        json_object_set_new(fields, "phase", json_string("Failed"));
    else
        return true;
    return false;
}

static int write_status(struct ctl *c, struct k8s_client *k, int kind, const json_t *obj,
                        json_t *fields, const char *const *from, json_t **out)
{
    struct err e;
    err_clear(&e);
    bool legacy = __atomic_load_n(&c->legacy[kind], __ATOMIC_RELAXED);
    if (legacy) to_legacy_phases(fields);
    int rc;
    for (;;) {
        rc = status_update(c, k, kind, k8s_str(obj, "metadata.namespace"),
                           k8s_str(obj, "metadata.name"), k8s_str(obj, "metadata.uid"), fields,
                           from, out, &e);
        if (rc < 0 && !legacy && k8s_last_status(k) == 422 && !to_legacy_phases(fields)) {
            legacy = true;
            __atomic_store_n(&c->legacy[kind], 1, __ATOMIC_RELAXED);
            log_obj(ASYS_WARN, kind, obj,
                    "the CRD refuses phases newer than Velero 1.16's (%s): using New, InProgress, "
                    "Completed and Failed from now on",
                    e.msg);
            continue;
        }
        break;
    }
    if (rc < 0) log_obj(ASYS_ERROR, kind, obj, "writing status: %s", e.msg);
    json_decref(fields);
    return rc;
}

/* --- jobs */

struct job_thread_ctx {
    struct ctl_job *j;
    struct k8s_client *k;
};

static void job_child_hook(void *ctx, struct job *child)
{
    struct ctl_job *j = ((struct job_thread_ctx *)ctx)->j;
    pthread_mutex_lock(&j->mu);
    j->child = child;
    if (child && j->cancel) job_cancel(child);
    pthread_mutex_unlock(&j->mu);
}

static void job_request_cancel(struct ctl_job *j)
{
    pthread_mutex_lock(&j->mu);
    j->cancel = 1;
    if (j->child) job_cancel(j->child);
    pthread_mutex_unlock(&j->mu);
}

static void job_update_hook(void *ctx, json_t *fields, bool urgent)
{
    struct job_thread_ctx *t = ctx;
    struct ctl_job *j = t->j;
    static const char *const running[] = {"InProgress", NULL};
    if (!urgent) {
        json_decref(j->pending_progress);
        j->pending_progress = json_deep_copy(fields);
        if (time(NULL) - j->last_progress < (time_t)j->c->cfg.progress_interval) return;
        fields = j->pending_progress;
        j->pending_progress = NULL;
        j->last_progress = time(NULL);
        write_status(j->c, t->k, j->kind, j->obj, fields, running, NULL);
        return;
    }
    write_status(j->c, t->k, j->kind, j->obj, json_deep_copy(fields), running, NULL);
}

/* Every job that metrics_job_started counted ends here once, whatever became of it. */
static void job_metrics_done(struct ctl *c, const struct ctl_job *j, const char *outcome,
                             const struct runner_result *r)
{
    if (c->cfg.metrics)
        metrics_job_finished(c->cfg.metrics, j->kind == KIND_PVB ? METRICS_BACKUP : METRICS_RESTORE,
                             j->started, outcome, difftime(time(NULL), j->started), r->bytes_done,
                             r->bytes_new);
}

static void job_finish(struct ctl *c, struct k8s_client *k, struct ctl_job *j,
                       const struct runner_result *r)
{
    static const char *const active[] = {"InProgress", "Canceling", NULL};
    static const char *const in_progress[] = {"InProgress", NULL};
    char ts[21];
    asys_now(ts);
    const char *what = j->kind == KIND_PVB ? "backup" : "restore";
    const char *outcome = r->phase;
    bool wrote_final = false;
    if (j->deleted) {
        log_obj(ASYS_INFO, j->kind, j->obj, "%s ended (%s) after its object was deleted", what,
                r->phase);
        job_metrics_done(c, j, r->phase, r);
        return;
    }
    for (int attempt = 0; attempt < FINAL_WRITE_ATTEMPTS; attempt++) {
        int rc;
        if (j->handback && strcmp(r->phase, "Completed") != 0) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "the agent on node %s stopped while the %s was running; it runs again when "
                     "the agent starts",
                     c->cfg.node, what);
            rc = write_status(c, k, j->kind, j->obj,
                              json_pack("{s:s, s:s, s:n, s:n}", "phase", "Accepted", "message", msg,
                                        "startTimestamp", "progress"),
                              in_progress, NULL);
            if (rc == 0) {
                outcome = "Requeued";
                break;
            }
            if (rc < 0) {
                sleep(1);
                continue;
            }
            /* Not InProgress any more: the object was canceled meanwhile; finish it. */
        }
        json_t *f = json_pack("{s:s, s:s, s:{s:I, s:I}}", "phase", r->phase, "completionTimestamp",
                              ts, "progress", "totalBytes", (json_int_t)r->total_bytes, "bytesDone",
                              (json_int_t)r->bytes_done);
        json_object_set_new(f, "message", r->message[0] ? json_string(r->message) : json_null());
        if (r->path[0]) json_object_set_new(f, "path", json_string(r->path));
        if (j->kind == KIND_PVB && (r->snapshot_id[0] || strcmp(r->phase, "Completed") == 0)) {
            /* Velero keeps incrementalBytes in status or, lately, in status.progress: both are
             * written, and the CRD prunes the one it does not know. */
            json_object_set_new(f, "snapshotID", json_string(r->snapshot_id));
            json_object_set_new(f, "incrementalBytes", json_integer((json_int_t)r->bytes_new));
            json_object_set_new(json_object_get(f, "progress"), "incrementalBytes",
                                json_integer((json_int_t)r->bytes_new));
        }
        rc = write_status(c, k, j->kind, j->obj, f, active, NULL);
        wrote_final = rc == 0;
        if (rc >= 0) break;
        sleep(1);
    }
    log_obj(strcmp(r->phase, "Completed") == 0 ? ASYS_INFO : ASYS_WARN, j->kind, j->obj,
            "%s %s%s%s%s%s", what, outcome, r->snapshot_id[0] ? ": snapshot " : "", r->snapshot_id,
            r->message[0] ? ": " : "", r->message);
    job_metrics_done(c, j, outcome, r);
    /* Velero counts a dequeue and observes the latency once Completed is written. */
    if (c->cfg.metrics && j->kind == KIND_PVB && wrote_final && strcmp(r->phase, "Completed") == 0)
        metrics_pvb_completed(c->cfg.metrics, j->obj, difftime(time(NULL), j->started));
}

static void job_free_fields(struct ctl_job *j)
{
    json_decref(j->obj);
    json_decref(j->pending_progress);
    pthread_mutex_destroy(&j->mu);
    free(j->key);
    free(j->uid);
    free(j);
}

/* Takes the job out of the list and frees it; the caller gives its slot back. */
static void job_unlink(struct ctl *c, struct ctl_job *j)
{
    pthread_mutex_lock(&c->mu);
    for (struct ctl_job **pp = &c->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    c->n_jobs--;
    pthread_cond_broadcast(&c->jobs_cv);
    pthread_mutex_unlock(&c->mu);
    job_free_fields(j);
}

static void *job_thread(void *arg)
{
    struct ctl_job *j = arg;
    struct ctl *c = j->c;
    struct err e;
    struct runner_result r;
    struct job_thread_ctx t = {j, NULL};
    /* No stop flag: a job's status writes must get through while the agent stops. */
    if (k8s_client_new(c->cfg.k8s, NULL, &t.k, &e) < 0) {
        memset(&r, 0, sizeof r);
        r.phase = "Failed";
        snprintf(r.message, sizeof r.message, "%s", e.msg);
    } else {
        struct runner_hooks h = {
            .ctx = &t, .child = job_child_hook, .update = job_update_hook, .cancel = &j->cancel};
        if (j->kind == KIND_PVB)
            runner_backup(&c->cfg.runner, t.k, j->obj, &h, &r);
        else
            runner_restore(&c->cfg.runner, t.k, j->obj, &h, &r);
    }
    if (t.k)
        job_finish(c, t.k, j, &r);
    else
        job_metrics_done(c, j, r.phase, &r);
    k8s_client_free(t.k);
    job_unlink(c, j);
    job_slots_give(&c->slots);
    enqueue_all(c); /* a slot is free: waiting objects may start */
    return NULL;
}

/* Starts a job thread for the object; the caller holds a job slot for it, and keeps it when
 * this fails. */
static int job_spawn(struct ctl *c, int kind, const char *key, json_t *obj)
{
    struct ctl_job *j = calloc(1, sizeof *j);
    if (!j) return -1;
    j->c = c;
    j->kind = kind;
    j->key = strdup(key);
    j->uid = strdup(k8s_str(obj, "metadata.uid"));
    j->obj = json_incref(obj);
    j->started = j->last_progress = time(NULL);
    pthread_mutex_init(&j->mu, NULL);
    if (!j->key || !j->uid) {
        job_free_fields(j);
        return -1;
    }
    pthread_mutex_lock(&c->mu);
    j->next = c->jobs;
    c->jobs = j;
    c->n_jobs++;
    pthread_mutex_unlock(&c->mu);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    /* Counted before the thread runs, which may end it at once. */
    if (c->cfg.metrics)
        metrics_job_started(c->cfg.metrics, kind == KIND_PVB ? METRICS_BACKUP : METRICS_RESTORE,
                            j->started);
    int rc = pthread_create(&th, &at, job_thread, j);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        struct runner_result none = {.phase = "Failed"};
        job_metrics_done(c, j, "Failed", &none);
        job_unlink(c, j);
        return -1;
    }
    return 0;
}

/* --- workers */

/* Whether a PVR is this node's: status.node says so once accepted; before, whether its pod is
 * among this node's (a pod not created or not scheduled yet is nobody's, for now). */
static bool pvr_ours(struct ctl *c, const json_t *obj)
{
    const char *node = k8s_str(obj, "status.node");
    if (node && *node) return strcmp(node, c->cfg.node) == 0;
    const char *ns = k8s_str(obj, "spec.pod.namespace"), *name = k8s_str(obj, "spec.pod.name");
    if (!ns || !name) return false; /* nobody can tell whose it is */
    char key[600];
    snprintf(key, sizeof key, "%s/%s", ns, name);
    pthread_mutex_lock(&c->mu);
    bool ours = json_object_get(c->pods, key) != NULL;
    pthread_mutex_unlock(&c->mu);
    return ours;
}

/* Seconds since the object's creationTimestamp; -1 when it has none that can be read. */
static double age_of(const json_t *obj)
{
    struct tm tm = {0};
    const char *created = k8s_str(obj, "metadata.creationTimestamp");
    if (!created || !strptime(created, "%Y-%m-%dT%H:%M:%SZ", &tm)) return -1;
    return difftime(time(NULL), timegm(&tm));
}

/* The restore-wait state of a PVR's pod, as this node's pod informer last saw it. */
static enum rwait_state pvr_gate(struct ctl *c, const json_t *obj)
{
    char key[600];
    snprintf(key, sizeof key, "%s/%s", k8s_str(obj, "spec.pod.namespace") ?: "",
             k8s_str(obj, "spec.pod.name") ?: "");
    pthread_mutex_lock(&c->mu);
    enum rwait_state s = rwait_pod_state(json_object_get(c->pods, key));
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* Once the restore-wait init container runs the kubelet has mounted every volume, but the
 * agent may see the directory a moment later: an accepted PVR waits for it, within the prepare
 * timeout; then the job runs anyway, to fail with the reason. */
static bool pvr_volume_ready(struct ctl *c, struct k8s_client *k, const json_t *obj)
{
    struct err e;
    char *path = NULL;
    int rc = runner_find_volume(&c->cfg.runner, k, k8s_at(obj, "spec"), &path, NULL, &e);
    free(path);
    if (rc != ERR_NOT_FOUND || age_of(obj) > c->cfg.prepare_timeout) return true;
    log_obj(ASYS_DEBUG, KIND_PVR, obj, "waiting for the volume to be mounted: %s", e.msg);
    return false;
}

/* The message of a PVR failed by CTL_FAIL_PREPARE. */
static void prepare_failure(const struct ctl *c, const json_t *obj, enum rwait_state g, char *msg,
                            size_t cap)
{
    const char *ns = k8s_str(obj, "spec.pod.namespace"), *pod = k8s_str(obj, "spec.pod.name");
    if (g == RWAIT_NONE)
        snprintf(msg, cap,
                 "nothing was restored: pod %s/%s has no restore-wait init container; podvault "
                 "restores only into a pod held there by Velero's restore, never over a running "
                 "application's data",
                 ns ?: "", pod ?: "");
    else
        snprintf(msg, cap,
                 "nothing was restored: pod %s/%s was not held in its restore-wait init container "
                 "within %u s of the PodVolumeRestore's creation (--prepare-timeout): %s",
                 ns ?: "", pod ?: "", c->cfg.prepare_timeout, rwait_state_text(g));
}

/* The phases from which each status write of reconcile may start (write_status's `from`). */
static const char *const from_fresh[] = {"", "New", NULL};
/* "" and New too: with legacy phases a job starts without an Accepted step. */
static const char *const from_startable[] = {"", "New", "Accepted", "Prepared", NULL};
static const char *const from_in_progress[] = {"InProgress", NULL};
static const char *const from_canceling[] = {"Canceling", NULL};
static const char *const from_not_started[] = {"", "New", "Accepted", "Prepared", NULL};

/* What reconcile sees of the object under `key`: a new reference to it (NULL when it is gone),
 * the view ctl_decide takes (*v, pointing into the object), and for a restore of this node the
 * state of its pod's restore-wait gate (*gate). A job whose object was deleted or replaced has no
 * one to report to: it is canceled here. */
static json_t *reconcile_view(struct ctl *c, int kind, const char *key, struct ctl_view *v,
                              enum rwait_state *gate)
{
    pthread_mutex_lock(&c->mu);
    json_t *obj = json_incref(json_object_get(c->cache, key));
    struct ctl_job *job = job_find_locked(c, key);
    const char *uid = k8s_str(obj, "metadata.uid");
    bool running = job && uid && strcmp(job->uid, uid) == 0;
    if (job && !running) {
        job->deleted = 1;
        job_request_cancel(job);
    }
    pthread_mutex_unlock(&c->mu);
    if (!obj) return NULL;
    *v = (struct ctl_view){
        .phase = k8s_str(obj, "status.phase"),
        .cancel = json_is_true(k8s_at(obj, "spec.cancel")),
        .deleting = k8s_str(obj, "metadata.deletionTimestamp") != NULL,
        .job_running = running,
        .slot_free = job_slots_used(&c->slots) < c->slots.max,
        .legacy = __atomic_load_n(&c->legacy[kind], __ATOMIC_RELAXED),
    };
    v->ours =
        uploader_served(c, obj) &&
        (kind == KIND_PVB ? str_is(k8s_str(obj, "spec.node"), c->cfg.node) : pvr_ours(c, obj));
    *gate = RWAIT_RUNNING;
    if (kind == KIND_PVR && v->ours) {
        *gate = pvr_gate(c, obj);
        v->gate_closed = *gate != RWAIT_RUNNING;
        v->gate_never = *gate == RWAIT_NONE;
        v->expired = age_of(obj) > c->cfg.prepare_timeout;
    }
    return obj;
}

/* CTL_START: takes a job slot, writes InProgress and starts the job; Failed when its thread
 * cannot start. */
static void start_job(struct ctl *c, struct k8s_client *k, int kind, const char *key,
                      const json_t *obj, const char *ts)
{
    if (!job_slots_take(&c->slots)) return; /* another worker was quicker */
    json_t *written = NULL;
    json_t *f = json_pack("{s:s, s:s, s:s}", "phase", "InProgress", "startTimestamp", ts, "node",
                          c->cfg.node);
    if (write_status(c, k, kind, obj, f, from_startable, &written) != 0 || !written) {
        job_slots_give(&c->slots);
    } else if (job_spawn(c, kind, key, written) < 0) {
        job_slots_give(&c->slots);
        write_status(c, k, kind, obj,
                     json_pack("{s:s, s:s, s:s}", "phase", "Failed", "completionTimestamp", ts,
                               "message", "the agent could not start a job thread"),
                     from_in_progress, NULL);
    } else {
        log_obj(ASYS_INFO, kind, obj, "%s started", kind == KIND_PVB ? "backup" : "restore");
    }
    json_decref(written);
}

/* CTL_CANCEL_JOB: asks the running job to stop (to forget the object too when it is being
 * deleted) and, unless it is being deleted, writes Canceling. */
static void cancel_job(struct ctl *c, struct k8s_client *k, int kind, const char *key,
                       const json_t *obj, bool deleting)
{
    pthread_mutex_lock(&c->mu);
    struct ctl_job *job = job_find_locked(c, key);
    if (job) {
        if (deleting) job->deleted = 1;
        job_request_cancel(job);
    }
    pthread_mutex_unlock(&c->mu);
    if (!deleting && write_status(c, k, kind, obj, json_pack("{s:s}", "phase", "Canceling"),
                                  from_in_progress, NULL) == 0)
        log_obj(ASYS_INFO, kind, obj, "canceling the running %s",
                kind == KIND_PVB ? "backup" : "restore");
}

/* Writes a final phase (Failed or Canceled) with `msg`, from the phases `from`, and logs it. */
static void finish(struct ctl *c, struct k8s_client *k, int kind, const json_t *obj,
                   const char *phase, const char *msg, const char *const *from, enum asys_level lvl,
                   const char *ts)
{
    json_t *f =
        json_pack("{s:s, s:s, s:s}", "phase", phase, "completionTimestamp", ts, "message", msg);
    if (write_status(c, k, kind, obj, f, from, NULL) == 0) log_obj(lvl, kind, obj, "%s", msg);
}

static void reconcile(struct ctl *c, struct k8s_client *k, const char *key)
{
    int kind = key[0] == 'b' ? KIND_PVB : KIND_PVR;
    struct ctl_view v;
    enum rwait_state gate;
    json_t *obj = reconcile_view(c, kind, key, &v, &gate);
    if (!obj) return;
    enum ctl_action a = ctl_decide(&v);
    if (c->stop_watch && (a == CTL_ACCEPT || a == CTL_START)) a = CTL_IGNORE; /* stopping */
    if (a == CTL_START && kind == KIND_PVR && !pvr_volume_ready(c, k, obj)) a = CTL_WAIT;
    char ts[21], msg[600];
    asys_now(ts);
    const char *what = kind == KIND_PVB ? "backup" : "restore";
    switch (a) {
    case CTL_IGNORE:
    case CTL_WAIT:
        break;
    case CTL_ACCEPT: {
        json_t *f = json_pack("{s:s, s:s, s:s}", "phase", "Accepted", "acceptedTimestamp", ts,
                              "node", c->cfg.node);
        if (write_status(c, k, kind, obj, f, from_fresh, NULL) == 0)
            log_obj(ASYS_INFO, kind, obj, "accepted on node %s", c->cfg.node);
        break;
    }
    case CTL_START:
        start_job(c, k, kind, key, obj, ts);
        break;
    case CTL_CANCEL_NEW:
        finish(c, k, kind, obj, "Canceled", "canceled before it started", from_not_started,
               ASYS_INFO, ts);
        break;
    case CTL_CANCEL_JOB:
        cancel_job(c, k, kind, key, obj, v.deleting);
        break;
    case CTL_FAIL_ORPHAN:
        snprintf(msg, sizeof msg, "agent restarted while the %s was running", what);
        finish(c, k, kind, obj, "Failed", msg, from_in_progress, ASYS_WARN, ts);
        break;
    case CTL_FAIL_PREPARE:
        prepare_failure(c, obj, gate, msg, sizeof msg);
        finish(c, k, kind, obj, "Failed", msg, from_not_started, ASYS_WARN, ts);
        break;
    case CTL_FINISH_CANCEL: {
        json_t *f = json_pack("{s:s, s:s, s:s}", "phase", "Canceled", "completionTimestamp", ts,
                              "message", "canceled (the agent restarted while canceling)");
        if (write_status(c, k, kind, obj, f, from_canceling, NULL) == 0)
            log_obj(ASYS_INFO, kind, obj, "canceled");
        break;
    }
    }
    json_decref(obj);
}

static void *worker_thread(void *arg)
{
    struct ctl *c = arg;
    struct k8s_client *k = NULL;
    struct err e;
    /* No stop flag: a status write cut short could be done on the server yet look failed
     * here. The queue ends the loop; a request ends within its timeout. */
    if (k8s_client_new(c->cfg.k8s, NULL, &k, &e) < 0) {
        asys_log(ASYS_ERROR, NULL, NULL, NULL, "worker: %s", e.msg);
        return NULL;
    }
    char *key;
    while ((key = wq_get(&c->q)) != NULL) {
        reconcile(c, k, key);
        wq_done(&c->q, key);
        free(key);
    }
    k8s_client_free(k);
    return NULL;
}

/* --- life cycle */

int ctl_new(const struct ctl_config *cfg, struct ctl **out, struct err *e)
{
    struct ctl *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ERR_FAIL, "out of memory");
    c->cfg = *cfg;
    if (!c->cfg.progress_interval) c->cfg.progress_interval = 3;
    if (!c->cfg.resync_interval) c->cfg.resync_interval = 5;
    if (!c->cfg.prepare_timeout) c->cfg.prepare_timeout = 1800;
    pthread_mutex_init(&c->init_lock, NULL);
    c->cfg.runner.init_lock = &c->init_lock;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->jobs_cv, NULL);
    c->cache = json_object();
    c->pods = json_object();
    job_slots_init(&c->slots, cfg->concurrency);
    wq_init(&c->q);
    if (!c->cache || !c->pods || !c->q.dirty || !c->q.processing) {
        ctl_free(c);
        return err_set(e, ERR_FAIL, "out of memory");
    }
    *out = c;
    return 0;
}

/* Feeds the informers' counters to the metrics and judges health. */
static void watch_health(struct ctl *c)
{
    bool healthy = true;
    char why[300] = "";
    for (int i = 0; i < N_INF; i++) {
        struct ictx *ic = &c->inf[i];
        struct k8s_informer_stats *s = &ic->inf.stats;
        unsigned long lists = __atomic_load_n(&s->lists, __ATOMIC_RELAXED);
        unsigned long resumes = __atomic_load_n(&s->resumes, __ATOMIC_RELAXED);
        unsigned long expired = __atomic_load_n(&s->expired, __ATOMIC_RELAXED);
        unsigned long failures = __atomic_load_n(&s->failures, __ATOMIC_RELAXED);
        unsigned long streak = __atomic_load_n(&s->failure_streak, __ATOMIC_RELAXED);
        if (c->cfg.metrics) {
            metrics_watch(c->cfg.metrics, METRICS_LIST, lists - ic->seen_lists);
            metrics_watch(c->cfg.metrics, METRICS_RESUME, resumes - ic->seen_resumes);
            metrics_watch(c->cfg.metrics, METRICS_EXPIRED, expired - ic->seen_expired);
            metrics_watch(c->cfg.metrics, METRICS_FAILURE, failures - ic->seen_failures);
        }
        ic->seen_lists = lists;
        ic->seen_resumes = resumes;
        ic->seen_expired = expired;
        ic->seen_failures = failures;
        if (streak >= UNHEALTHY_FAILURES) {
            healthy = false;
            snprintf(why, sizeof why, "watching %s failed %lu times in a row", kind_res[i]->plural,
                     streak);
        }
    }
    if (c->cfg.metrics) metrics_set_health(c->cfg.metrics, healthy, why);
}

int ctl_run(struct ctl *c, const volatile int *stop, struct err *e)
{
    int started_inf = 0, started_workers = 0, rc = 0;
    snprintf(c->pod_selector, sizeof c->pod_selector, "spec.nodeName=%s", c->cfg.node);
    for (int i = 0; i < N_INF; i++) {
        struct ictx *ic = &c->inf[i];
        ic->c = c;
        ic->kind = i;
        ic->seen = json_object();
        ic->inf.res = kind_res[i];
        ic->inf.ns = i == INF_PODS ? NULL : c->cfg.namespace;
        ic->inf.field_selector = i == INF_PODS ? c->pod_selector : NULL;
        ic->inf.fn = i == INF_PODS ? on_pod_event : on_event;
        ic->inf.on_error = on_watch_error;
        ic->inf.ctx = ic;
        if ((rc = k8s_client_new(c->cfg.k8s, &c->stop_watch, &ic->k, e)) < 0) goto stop;
        if (pthread_create(&ic->thread, NULL, informer_thread, ic) != 0) {
            rc = err_set(e, ERR_FAIL, "starting a watch thread");
            goto stop;
        }
        started_inf++;
    }
    for (int i = 0; i < N_WORKERS; i++) {
        if (pthread_create(&c->workers[i], NULL, worker_thread, c) != 0) {
            rc = err_set(e, ERR_FAIL, "starting a worker thread");
            goto stop;
        }
        started_workers++;
    }
    asys_log(ASYS_INFO, NULL, c->cfg.namespace, NULL,
             "serving PodVolumeBackups and PodVolumeRestores of node %s (%u jobs at once)",
             c->cfg.node, c->slots.max);
    for (unsigned tick = 1; !*stop; tick++) {
        usleep(100 * 1000);
        if (tick % 10 == 0) watch_health(c);
        if (tick % (10 * c->cfg.resync_interval) == 0) enqueue_all(c);
    }
stop:
    c->stop_watch = 1;
    wq_shut(&c->q);
    for (int i = 0; i < started_inf; i++)
        pthread_join(c->inf[i].thread, NULL);
    for (int i = 0; i < started_workers; i++)
        pthread_join(c->workers[i], NULL);
    watch_health(c);
    /* Running jobs get the grace period, then are stopped and handed back. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += c->cfg.shutdown_grace;
    pthread_mutex_lock(&c->mu);
    if (c->n_jobs)
        asys_log(ASYS_INFO, NULL, NULL, NULL, "stopping: waiting up to %u s for %u running jobs",
                 c->cfg.shutdown_grace, c->n_jobs);
    while (c->n_jobs && pthread_cond_timedwait(&c->jobs_cv, &c->mu, &until) == 0) {
    }
    for (struct ctl_job *j = c->jobs; j; j = j->next) {
        j->handback = 1;
        job_request_cancel(j);
    }
    /* A stopped child ends within 30 s (then it is killed); its final write takes a minute at
     * most. */
    until.tv_sec += 30 + FINAL_WRITE_ATTEMPTS + 5;
    while (c->n_jobs && pthread_cond_timedwait(&c->jobs_cv, &c->mu, &until) == 0) {
    }
    unsigned left = c->n_jobs;
    pthread_mutex_unlock(&c->mu);
    if (left) asys_log(ASYS_ERROR, NULL, NULL, NULL, "%u jobs did not stop in time", left);
    return rc;
}

void ctl_free(struct ctl *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    unsigned left = c->n_jobs;
    pthread_mutex_unlock(&c->mu);
    if (left) return; /* job threads still use it; the process is about to end */
    for (int i = 0; i < N_INF; i++) {
        k8s_client_free(c->inf[i].k);
        json_decref(c->inf[i].seen);
    }
    wq_free(&c->q);
    json_decref(c->cache);
    json_decref(c->pods);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->jobs_cv);
    pthread_mutex_destroy(&c->init_lock);
    pthread_mutex_destroy(&c->slots.mu);
    free(c);
}
