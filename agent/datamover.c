/* datamover.c - declines Velero's DataUploads and DataDownloads; see datamover.h. */
#include "agent/datamover.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/asys.h"

#define DM_ATTEMPTS 5 /* tries of a write that fails other than by a conflict, 1 s apart */

static const struct k8s_res K8S_DATAUPLOADS = {"velero.io", "v2alpha1", "datauploads", true};
static const struct k8s_res K8S_DATADOWNLOADS = {"velero.io", "v2alpha1", "datadownloads", true};

static bool empty(const char *s)
{
    return !s || !*s;
}

static bool is(const char *s, const char *want)
{
    return strcmp(s ? s : "", want) == 0;
}

/* Velero's phases of both kinds (v2alpha1 data_upload_types.go, data_download_types.go);
 * final ones as isDataUploadInFinalState (controller/data_upload_controller.go). */
enum dm_action dm_decide(const struct dm_view *v)
{
    if (!empty(v->datamover) && !is(v->datamover, "velero")) return DM_IGNORE;
    if (is(v->phase, "Completed") || is(v->phase, "Failed") || is(v->phase, "Canceled"))
        return DM_IGNORE;
    if (empty(v->phase) || is(v->phase, "New")) return v->cancel ? DM_CANCEL : DM_DECLINE;
    /* Accepted, Prepared, InProgress, Canceling: a node-agent has it. Only this node's own,
     * which this agent replaced, will never finish it. */
    if (empty(v->taken_by) || !is(v->taken_by, v->node)) return DM_IGNORE;
    return v->cancel || is(v->phase, "Canceling") ? DM_CANCEL : DM_ORPHAN;
}

struct dm_view dm_view_of(const json_t *obj, const char *node)
{
    const char *by = k8s_str(obj, "status.acceptedByNode");
    return (struct dm_view){
        .phase = k8s_str(obj, "status.phase"),
        .datamover = k8s_str(obj, "spec.datamover"),
        .cancel = json_is_true(k8s_at(obj, "spec.cancel")),
        .taken_by = empty(by) ? k8s_str(obj, "status.node") : by,
        .node = node,
    };
}

int dm_apply(json_t *obj, enum dm_action a, const char *kind, const char *node, const char *now)
{
    char msg[512];
    const char *phase = "Failed";
    if (a == DM_DECLINE)
        snprintf(msg, sizeof msg,
                 "podvault's node-agent (node %s) does not serve CSI snapshot data movement "
                 "(%s): back the volume up with file-system backup instead "
                 "(--default-volumes-to-fs-backup, or the pod annotation "
                 "backup.velero.io/backup-volumes), or reinstall Velero's node-agent",
                 node, kind);
    else if (a == DM_ORPHAN)
        snprintf(msg, sizeof msg,
                 "the node-agent that took this %s on node %s was replaced by podvault's, which "
                 "does not serve CSI snapshot data movement",
                 kind, node);
    else {
        phase = "Canceled";
        snprintf(msg, sizeof msg, "canceled; podvault's node-agent (node %s) does not serve %s",
                 node, kind);
    }
    json_t *st = json_object_get(obj, "status");
    if (!json_is_object(st)) {
        st = json_object();
        if (!st || json_object_set_new(obj, "status", st) < 0) return -1;
    }
    int rc = json_object_set_new(st, "phase", json_string(phase));
    rc |= json_object_set_new(st, "message", json_string(msg));
    if (empty(json_string_value(json_object_get(st, "startTimestamp"))))
        rc |= json_object_set_new(st, "startTimestamp", json_string(now));
    rc |= json_object_set_new(st, "completionTimestamp", json_string(now));
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------
 * The watcher */

struct dm_kind {
    struct dm *d;
    const char *kind;
    struct k8s_informer inf;
    struct k8s_client *watch, *write;
    pthread_t thread;
    bool started;
};

struct dm {
    struct dm_config cfg;
    volatile int stop;
    struct dm_kind kinds[2];
};

/* GET, decide again on what is there now, change, PUT with its resourceVersion. Returns 0 when
 * written or nothing is to be done, ERR_EXISTS when someone else wrote first, else an error. */
static int dm_write(struct dm_kind *dk, const char *ns, const char *name, struct err *e)
{
    const struct dm_config *cfg = &dk->d->cfg;
    char *p = k8s_path(dk->inf.res, ns, name, NULL);
    if (!p) return err_set(e, ERR_FAIL, "out of memory");
    json_t *obj = NULL;
    int rc = k8s_get(dk->write, p, &obj, e);
    if (rc == 0) {
        struct dm_view v = dm_view_of(obj, cfg->node);
        enum dm_action a = dm_decide(&v);
        char now[21];
        asys_now(now);
        if (a != DM_IGNORE && dm_apply(obj, a, dk->kind, cfg->node, now) < 0)
            rc = err_set(e, ERR_FAIL, "out of memory");
        else if (a != DM_IGNORE && (rc = k8s_put(dk->write, p, obj, NULL, e)) == 0)
            asys_log(ASYS_INFO, dk->kind, ns, name, "%s: %s",
                     is(k8s_str(obj, "status.phase"), "Canceled") ? "canceled" : "declined",
                     k8s_str(obj, "status.message"));
    }
    json_decref(obj);
    free(p);
    return rc == ERR_NOT_FOUND ? 0 : rc;
}

static int dm_on_event(void *ctx, enum k8s_event t, json_t *obj)
{
    struct dm_kind *dk = ctx;
    if (t != K8S_LIST && t != K8S_ADDED && t != K8S_MODIFIED) return 0;
    struct dm_view v = dm_view_of(obj, dk->d->cfg.node);
    if (dm_decide(&v) == DM_IGNORE) return 0;
    const char *ns = k8s_str(obj, "metadata.namespace"), *name = k8s_str(obj, "metadata.name");
    struct err e;
    for (int i = 0; i < DM_ATTEMPTS && !dk->d->stop; i++) {
        int rc = dm_write(dk, ns, name, &e);
        if (rc == 0) return 0;
        if (rc == ERR_EXISTS) { /* another agent won the race (or the object changed) */
            asys_log(ASYS_DEBUG, dk->kind, ns, name, "another writer came first: %s", e.msg);
            return 0;
        }
        asys_log(ASYS_WARN, dk->kind, ns, name, "declining failed (attempt %d of %d): %s", i + 1,
                 DM_ATTEMPTS, e.msg);
        sleep(1);
    }
    return 0;
}

static void dm_on_error(void *ctx, const struct err *e)
{
    struct dm_kind *dk = ctx;
    asys_log(ASYS_DEBUG, dk->kind, dk->d->cfg.namespace, NULL, "list/watch failed (retrying): %s",
             e ? e->msg : "");
}

static void *dm_thread(void *arg)
{
    struct dm_kind *dk = arg;
    k8s_informer_run(dk->watch, &dk->inf);
    return NULL;
}

int dm_start(const struct dm_config *cfg, struct dm **out, struct err *e)
{
    static const char *const names[2] = {"DataUpload", "DataDownload"};
    const struct k8s_res *const res[2] = {&K8S_DATAUPLOADS, &K8S_DATADOWNLOADS};
    struct dm *d = calloc(1, sizeof *d);
    if (!d) return err_set(e, ERR_FAIL, "out of memory");
    d->cfg = *cfg;
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        struct dm_kind *dk = &d->kinds[i];
        dk->d = d;
        dk->kind = names[i];
        dk->inf = (struct k8s_informer){.res = res[i],
                                        .ns = cfg->namespace,
                                        .fn = dm_on_event,
                                        .on_error = dm_on_error,
                                        .ctx = dk};
        if ((rc = k8s_client_new(cfg->k8s, &d->stop, &dk->watch, e)) < 0 ||
            (rc = k8s_client_new(cfg->k8s, &d->stop, &dk->write, e)) < 0)
            break;
        if (pthread_create(&dk->thread, NULL, dm_thread, dk) != 0) {
            rc = err_set(e, ERR_FAIL, "starting the %s watch thread", names[i]);
            break;
        }
        dk->started = true;
    }
    if (rc < 0) {
        dm_stop(d);
        return rc;
    }
    *out = d;
    return 0;
}

void dm_stop(struct dm *d)
{
    if (!d) return;
    d->stop = 1;
    for (int i = 0; i < 2; i++) {
        if (d->kinds[i].started) pthread_join(d->kinds[i].thread, NULL);
        k8s_client_free(d->kinds[i].watch);
        k8s_client_free(d->kinds[i].write);
    }
    free(d);
}
