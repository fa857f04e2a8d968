/* request.c - `podvault request`: creates PodVolumeBackups and PodVolumeRestores like Velero's
 * server, waits for the node agents, and prints what happened (see request.h). */
#include "agent/request.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/k8s.h"
#include "agent/k8s_opts.h"
#include "agent/rwait.h"
#include "agent/select.h"
#include "base/contract.h"

static const char usage[] =
    "usage: podvault request backup --namespace NS [--selector LABELS] [--name NAME]\n"
    "                               [--default-volumes] [--wait] [--timeout SECONDS]\n"
    "       podvault request restore --from BACKUP --namespace NS [--name NAME] [--wait]\n"
    "                                [--timeout SECONDS]\n"
    "       podvault request status NAME\n"
    "       podvault request cancel NAME [--wait] [--timeout SECONDS]\n"
    "connection: --server URL | --kubeconfig FILE [--context NAME] | in-cluster;\n"
    "            --velero-namespace NS (default $VELERO_NAMESPACE or velero)\n";

struct req {
    struct k8s_opts k8s; /* the connection (its credentials_file is not used: the agents read the
                          * location's credentials, not this command) */
    const char *vns, *ns, *selector, *name, *from;
    bool default_volumes, wait;
    bool canceling; /* request cancel: Canceled (any final phase) is the goal, not Completed */
    long timeout;
    struct k8s_client *k;
    json_t *agents; /* the node agent pods in Velero's namespace */
};

/* "?labelSelector=<escaped>" appended to `path` (allocated). */
static char *with_selector(const char *path, const char *key, const char *sel)
{
    size_t n = strlen(path), m = strlen(key), s = sel ? strlen(sel) : 0;
    char *out = malloc(n + m + 3 + 3 * s);
    if (!out) return NULL;
    char *p = out + sprintf(out, "%s", path);
    if (sel && *sel) {
        p += sprintf(p, "?%s=", key);
        for (const unsigned char *c = (const unsigned char *)sel; *c; c++)
            p += (strchr("-_.~", *c) || (*c >= '0' && *c <= '9') ||
                  ((*c | 32) >= 'a' && (*c | 32) <= 'z'))
                     ? sprintf(p, "%c", *c)
                     : sprintf(p, "%%%02X", *c);
    }
    return out;
}

/* Lists `res` in `ns` with a label selector; *items is a new reference to the items array. */
static int list(struct req *q, const struct k8s_res *res, const char *ns, const char *sel,
                json_t **items, struct err *e)
{
    char *base = k8s_path(res, ns, NULL, NULL),
         *path = base ? with_selector(base, "labelSelector", sel) : NULL;
    free(base);
    if (!path) return err_set(e, ERR_FAIL, "out of memory");
    json_t *l = NULL;
    int rc = k8s_get(q->k, path, &l, e);
    free(path);
    if (rc < 0) return err_wrap(e, "listing %s in namespace %s", res->plural, ns);
    *items = json_incref(json_object_get(l, "items"));
    json_decref(l);
    if (!json_is_array(*items)) {
        json_decref(*items);
        *items = json_array();
    }
    return 0;
}

/* Velero's label value rule: names over 63 characters become their first 57 and 6 hex digits
 * of their SHA-256. */
static void label_value(const char *name, char out[64])
{
    size_t n = strlen(name);
    if (n <= 63) {
        memcpy(out, name, n + 1);
        return;
    }
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)name, n);
    memcpy(out, name, 57);
    sprintf(out + 57, "%02x%02x%02x", h[0], h[1], h[2]);
}

static void new_uid(char out[37])
{
    unsigned char b[16];
    randombytes_buf(b, sizeof b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
            b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
            b[15]);
}

/* The PV bound to a claim, for select.h. */
static int claim_pv(void *ctx, const char *ns, const char *claim, json_t **pv, struct err *e)
{
    struct req *q = ctx;
    char *path = k8s_path(&K8S_PVCS, ns, claim, NULL);
    json_t *pvc = NULL;
    int rc = path ? k8s_get(q->k, path, &pvc, e) : err_set(e, ERR_FAIL, "out of memory");
    free(path);
    if (rc < 0) return rc;
    const char *vol = k8s_str(pvc, "spec.volumeName");
    if (!vol || !*vol) rc = err_set(e, ERR_NOT_FOUND, "the claim is not bound");
    path = rc < 0 ? NULL : k8s_path(&K8S_PVS, NULL, vol, NULL);
    if (rc == 0) rc = path ? k8s_get(q->k, path, pv, e) : err_set(e, ERR_FAIL, "out of memory");
    free(path);
    json_decref(pvc);
    return rc;
}

/* Nodes with a Running node agent pod (Velero's label role=node-agent) in Velero's namespace. */
static bool node_has_agent(void *ctx, const char *node)
{
    const struct req *q = ctx;
    size_t i;
    json_t *p;
    json_array_foreach(q->agents, i, p)
    {
        const char *n = k8s_str(p, "spec.nodeName"), *phase = k8s_str(p, "status.phase");
        if (n && phase && strcmp(n, node) == 0 && strcmp(phase, "Running") == 0) return true;
    }
    return false;
}

static json_t *pvb_for(const struct req *q, const struct sel_vol *v, const char *uid,
                       const char *claim_uid)
{
    char label[64];
    label_value(q->name, label);
    json_t *labels =
        json_pack("{s:s, s:s}", "velero.io/backup-name", label, "velero.io/backup-uid", uid);
    json_t *tags =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "backup", q->name, "backup-uid", uid, "pod",
                  v->pod, "pod-uid", v->pod_uid, "ns", v->ns, "volume", v->volume);
    json_t *meta = json_pack("{s:s+, s:s, s:o}", "generateName", q->name, "-", "namespace", q->vns,
                             "labels", labels);
    if (claim_uid) {
        json_object_set_new(labels, "velero.io/pvc-uid", json_string(claim_uid));
        json_object_set_new(tags, "pvc-uid", json_string(claim_uid));
    }
    if (v->claim)
        json_object_set_new(meta, "annotations",
                            json_pack("{s:s}", "velero.io/pvc-name", v->claim));
    return json_pack("{s:s, s:s, s:o, s:{s:s, s:{s:s, s:s, s:s, s:s}, s:s, s:s, s:s, s:s, s:o}}",
                     "apiVersion", "velero.io/v1", "kind", "PodVolumeBackup", "metadata", meta,
                     "spec", "node", v->node, "pod", "kind", "Pod", "namespace", v->ns, "name",
                     v->pod, "uid", v->pod_uid, "volume", v->volume, "backupStorageLocation",
                     "default", "repoIdentifier", "", "uploaderType", "kopia", "tags", tags);
}

static bool final_phase(const char *p)
{
    return p && (!strcmp(p, "Completed") || !strcmp(p, "Failed") || !strcmp(p, "Canceled"));
}

/* Prints one table of PVBs or PVRs; returns the number not Completed. */
static int print_table(json_t *items, bool backups)
{
    int bad = 0;
    size_t i;
    json_t *o;
    printf("%-20s %-28s %-11s %12s %12s %s\n", "VOLUME", "POD", "PHASE", "SIZE",
           backups ? "NEW" : "DONE", backups ? "SNAPSHOT" : "FROM SNAPSHOT");
    json_array_foreach(items, i, o)
    {
        const char *phase = k8s_str(o, "status.phase"), *msg = k8s_str(o, "status.message");
        char pod[256];
        snprintf(pod, sizeof pod, "%s/%s", k8s_str(o, "spec.pod.namespace") ?: "?",
                 k8s_str(o, "spec.pod.name") ?: "?");
        json_int_t total = json_integer_value(k8s_at(o, "status.progress.totalBytes")),
                   other = json_integer_value(k8s_at(o, backups ? "status.incrementalBytes"
                                                                : "status.progress.bytesDone"));
        const char *snap = k8s_str(o, backups ? "status.snapshotID" : "spec.snapshotID");
        printf("%-20s %-28s %-11s %12lld %12lld %s\n", k8s_str(o, "spec.volume") ?: "?", pod,
               phase && *phase ? phase : "New", (long long)total, (long long)other,
               snap && *snap ? snap : "-");
        if (msg && *msg) printf("    %s\n", msg);
        if (!phase || strcmp(phase, "Completed") != 0) bad++;
    }
    return bad;
}

/* Lists the objects labelled `key`=`name` until all are final or the time is up; prints them. */
static int wait_and_print(struct req *q, const struct k8s_res *res, const char *key, bool backups,
                          struct err *e)
{
    char label[64], sel[160];
    label_value(q->name, label);
    snprintf(sel, sizeof sel, "%s=%s", key, label);
    time_t end = time(NULL) + q->timeout;
    json_t *items = NULL;
    size_t done = 0;
    for (;;) {
        json_decref(items);
        items = NULL;
        int rc = list(q, res, q->vns, sel, &items, e);
        if (rc < 0) return rc;
        size_t i;
        json_t *o;
        done = 0;
        json_array_foreach(items, i, o) done += final_phase(k8s_str(o, "status.phase"));
        if (!q->wait || done == json_array_size(items) || time(NULL) >= end) break;
        usleep(500 * 1000);
    }
    int bad = print_table(items, backups);
    if (q->canceling) bad = (int)(json_array_size(items) - done);
    size_t n = json_array_size(items);
    json_decref(items);
    if (n == 0) return err_set(e, ERR_NOT_FOUND, "no %s labelled %s", res->plural, sel);
    if (bad && q->wait)
        return err_set(e, ERR_FAIL, "%d of %zu did not %s", bad, n,
                       q->canceling ? "end in time" : "complete");
    return 0;
}

static int do_backup(struct req *q, struct err *e)
{
    char uid[37], name[64];
    new_uid(uid);
    if (!q->name) {
        time_t t = time(NULL);
        strftime(name, sizeof name, "podvault-%Y%m%d%H%M%S", gmtime(&t));
        q->name = name;
    }
    json_t *pods = NULL;
    struct sel_result r = {0};
    int rc = list(q, &K8S_PODS, q->ns, q->selector, &pods, e);
    if (rc == 0) rc = list(q, &K8S_PODS, q->vns, "role=node-agent", &q->agents, e);
    struct sel_opts o = {.default_volumes = q->default_volumes,
                         .claim_pv = claim_pv,
                         .node_has_agent = node_has_agent,
                         .ctx = q};
    size_t i;
    json_t *p;
    json_array_foreach(pods, i, p)
    {
        if (rc == 0) rc = sel_pod(&r, p, &o, e);
    }
    for (i = 0; rc == 0 && i < r.n_skipped; i++)
        printf("skipped %s/%s volume %s: %s\n", r.skipped[i].ns, r.skipped[i].pod,
               r.skipped[i].volume, r.skipped[i].reason);
    for (i = 0; rc == 0 && i < r.n_chosen; i++) {
        const struct sel_vol *v = &r.chosen[i];
        json_t *pvc = NULL;
        if (v->claim) {
            char *path = k8s_path(&K8S_PVCS, v->ns, v->claim, NULL);
            struct err ignored;
            if (path) k8s_get(q->k, path, &pvc, &ignored);
            free(path);
        }
        json_t *obj = pvb_for(q, v, uid, k8s_str(pvc, "metadata.uid")), *made = NULL;
        json_decref(pvc);
        char *path = k8s_path(&K8S_PVBS, q->vns, NULL, NULL);
        rc = obj && path ? k8s_create(q->k, path, obj, &made, e)
                         : err_set(e, ERR_FAIL, "out of memory");
        if (rc < 0)
            err_wrap(e, "creating a PodVolumeBackup for %s/%s volume %s", v->ns, v->pod, v->volume);
        else
            fprintf(stderr, "created PodVolumeBackup %s/%s\n", q->vns,
                    k8s_str(made, "metadata.name"));
        free(path);
        json_decref(obj);
        json_decref(made);
    }
    size_t chosen = r.n_chosen;
    sel_result_free(&r);
    json_decref(pods);
    if (rc < 0) return rc;
    printf("backup %s (uid %s): %zu volume(s) requested\n", q->name, uid, chosen);
    if (chosen == 0) return 0;
    return wait_and_print(q, &K8S_PVBS, "velero.io/backup-name", true, e);
}

/* The PodVolumeRestore for one completed PodVolumeBackup, into the pod of the same name in
 * q->ns (NULL when the pod is not there: the caller reports it). */
static json_t *pvr_for(const struct req *q, const json_t *pvb, const json_t *pod, const char *uid)
{
    char label[64];
    label_value(q->name, label);
    const char *pod_uid = k8s_str(pod, "metadata.uid") ?: "";
    json_t *labels = json_pack("{s:s, s:s, s:s}", "velero.io/restore-name", label,
                               "velero.io/restore-uid", uid, "velero.io/pod-uid", pod_uid);
    json_t *cu = json_object_get(k8s_at(pvb, "metadata.labels"), "velero.io/pvc-uid");
    if (json_is_string(cu)) json_object_set(labels, "velero.io/pvc-uid", cu);
    return json_pack("{s:s, s:s, s:{s:s+, s:s, s:o, s:[{s:s, s:s, s:s, s:s, s:b}]},"
                     " s:{s:{s:s, s:s, s:s, s:s}, s:s, s:s, s:s, s:s, s:s, s:s}}",
                     "apiVersion", "velero.io/v1", "kind", "PodVolumeRestore", "metadata",
                     "generateName", q->name, "-", "namespace", q->vns, "labels", labels,
                     "ownerReferences", "apiVersion", "velero.io/v1", "kind", "Restore", "name",
                     q->name, "uid", uid, "controller", 1, "spec", "pod", "kind", "Pod",
                     "namespace", q->ns, "name", k8s_str(pod, "metadata.name"), "uid", pod_uid,
                     "volume", k8s_str(pvb, "spec.volume"), "backupStorageLocation",
                     k8s_str(pvb, "spec.backupStorageLocation") ?: "default", "repoIdentifier", "",
                     "uploaderType", "kopia", "snapshotID", k8s_str(pvb, "status.snapshotID"),
                     "sourceNamespace", k8s_str(pvb, "spec.pod.namespace") ?: q->ns);
}

/* Velero's restorer creates no PodVolumeRestore unless a DaemonSet named node-agent exists in
 * its namespace (velero pkg/nodeagent/node_agent.go IsRunningOnLinux, called from
 * pkg/podvolume/restorer.go): `request restore`, which plays that restorer, checks the same. */
static int need_node_agent(struct req *q, struct err *e)
{
    char *path = k8s_path(&K8S_DAEMONSETS, q->vns, "node-agent", NULL);
    json_t *ds = NULL;
    int rc = path ? k8s_get(q->k, path, &ds, e) : err_set(e, ERR_FAIL, "out of memory");
    free(path);
    json_decref(ds);
    if (rc == ERR_NOT_FOUND)
        return err_set(
            e, ERR_FAIL,
            "there is no DaemonSet node-agent in namespace %s, without which Velero "
            "creates no PodVolumeRestores either: deploy podvault's agent (deploy/agent)",
            q->vns);
    if (rc < 0) err_wrap(e, "looking for the DaemonSet node-agent in namespace %s", q->vns);
    return rc;
}

static int do_restore(struct req *q, struct err *e)
{
    char uid[37], name[80], sel[160], label[64];
    new_uid(uid);
    if (!q->name) {
        char ts[20];
        time_t t = time(NULL);
        strftime(ts, sizeof ts, "%Y%m%d%H%M%S", gmtime(&t));
        snprintf(name, sizeof name, "%.50s-%s", q->from, ts);
        q->name = name;
    }
    if (need_node_agent(q, e) < 0) return e->code;
    label_value(q->from, label);
    snprintf(sel, sizeof sel, "velero.io/backup-name=%s", label);
    json_t *pvbs = NULL;
    int rc = list(q, &K8S_PVBS, q->vns, sel, &pvbs, e);
    if (rc < 0) return rc;
    size_t i, made = 0;
    json_t *b;
    json_array_foreach(pvbs, i, b)
    {
        const char *pod = k8s_str(b, "spec.pod.name"), *vol = k8s_str(b, "spec.volume"),
                   *phase = k8s_str(b, "status.phase"), *snap = k8s_str(b, "status.snapshotID");
        if (rc < 0 || !pod || !vol) continue;
        if (!phase || strcmp(phase, "Completed") != 0 || !snap || !*snap) {
            printf("skipped %s volume %s: the backup is %s without a snapshot\n", pod, vol,
                   phase && *phase ? phase : "New");
            continue;
        }
        char *path = k8s_path(&K8S_PODS, q->ns, pod, NULL);
        json_t *target = NULL, *obj = NULL, *out = NULL;
        struct err pe;
        int prc =
            path ? k8s_get(q->k, path, &target, &pe) : err_set(&pe, ERR_FAIL, "out of memory");
        free(path);
        if (prc < 0) {
            printf("skipped %s volume %s: no target pod %s/%s (%s)\n", pod, vol, q->ns, pod,
                   pe.msg);
            continue;
        }
        if (rwait_pod_state(target) == RWAIT_NONE) {
            printf("skipped %s volume %s: pod %s/%s has no restore-wait init container, and "
                   "podvault restores only into a pod held there (docs/AGENT.md)\n",
                   pod, vol, q->ns, pod);
            json_decref(target);
            continue;
        }
        obj = pvr_for(q, b, target, uid);
        path = k8s_path(&K8S_PVRS, q->vns, NULL, NULL);
        rc = obj && path ? k8s_create(q->k, path, obj, &out, e)
                         : err_set(e, ERR_FAIL, "out of memory");
        if (rc < 0)
            err_wrap(e, "creating a PodVolumeRestore for %s/%s volume %s", q->ns, pod, vol);
        else
            made++;
        free(path);
        json_decref(target);
        json_decref(obj);
        json_decref(out);
    }
    size_t n = json_array_size(pvbs);
    json_decref(pvbs);
    if (rc < 0) return rc;
    if (n == 0) return err_set(e, ERR_NOT_FOUND, "no PodVolumeBackups of backup %s", q->from);
    printf("restore %s (uid %s) from %s: %zu volume(s) requested\n", q->name, uid, q->from, made);
    if (made == 0) return err_set(e, ERR_FAIL, "nothing to restore from backup %s", q->from);
    return wait_and_print(q, &K8S_PVRS, "velero.io/restore-name", false, e);
}

/* Sets spec.cancel on every object of the backup (else restore) named q->name that is not
 * final, as a merge patch: the agents' status writes are not disturbed. */
static int cancel_kind(struct req *q, const struct k8s_res *res, const char *key, const char *kind,
                       size_t *found, struct err *e)
{
    char label[64], sel[160];
    label_value(q->name, label);
    snprintf(sel, sizeof sel, "%s=%s", key, label);
    json_t *items = NULL, *o;
    int rc = list(q, res, q->vns, sel, &items, e);
    if (rc < 0) return rc;
    size_t i, asked = 0;
    json_array_foreach(items, i, o)
    {
        const char *name = k8s_str(o, "metadata.name");
        if (final_phase(k8s_str(o, "status.phase")) || !name) continue;
        char *path = k8s_path(res, q->vns, name, NULL);
        json_t *patch = json_pack("{s:{s:b}}", "spec", "cancel", 1);
        rc = path && patch ? k8s_merge_patch(q->k, path, patch, NULL, e)
                           : err_set(e, ERR_FAIL, "out of memory");
        free(path);
        json_decref(patch);
        if (rc == ERR_NOT_FOUND) { /* deleted meanwhile */
            rc = 0;
            continue;
        }
        if (rc < 0) {
            err_wrap(e, "setting spec.cancel on %s %s/%s", kind, q->vns, name);
            break;
        }
        asked++;
    }
    *found = json_array_size(items);
    json_decref(items);
    if (rc == 0 && *found)
        printf("cancel requested for %zu of %zu %ss of %s (the others are final)\n", asked, *found,
               kind, q->name);
    return rc;
}

static int do_cancel(struct req *q, struct err *e)
{
    size_t n = 0;
    bool backups = true;
    q->canceling = true;
    int rc = cancel_kind(q, &K8S_PVBS, "velero.io/backup-name", "PodVolumeBackup", &n, e);
    if (rc == 0 && n == 0) {
        backups = false;
        rc = cancel_kind(q, &K8S_PVRS, "velero.io/restore-name", "PodVolumeRestore", &n, e);
    }
    if (rc < 0) return rc;
    if (n == 0)
        return err_set(e, ERR_NOT_FOUND,
                       "no PodVolumeBackups or PodVolumeRestores of a backup or restore named %s "
                       "in namespace %s",
                       q->name, q->vns);
    return wait_and_print(q, backups ? &K8S_PVBS : &K8S_PVRS,
                          backups ? "velero.io/backup-name" : "velero.io/restore-name", backups, e);
}

static int do_status(struct req *q, struct err *e)
{
    int rc = wait_and_print(q, &K8S_PVBS, "velero.io/backup-name", true, e);
    if (rc != ERR_NOT_FOUND) return rc;
    err_clear(e);
    return wait_and_print(q, &K8S_PVRS, "velero.io/restore-name", false, e);
}

enum { O_VNS = 256, O_NAME, O_DEFAULT, O_WAIT, O_TIMEOUT, O_FROM };

static const struct option request_longopts[] = {
    K8S_OPTS_LONGOPTS,
    {"velero-namespace", required_argument, 0, O_VNS},
    {"namespace", required_argument, 0, 'n'},
    {"selector", required_argument, 0, 'l'},
    {"name", required_argument, 0, O_NAME},
    {"default-volumes", no_argument, 0, O_DEFAULT},
    {"wait", no_argument, 0, O_WAIT},
    {"timeout", required_argument, 0, O_TIMEOUT},
    {"from", required_argument, 0, O_FROM},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

/* Takes one option of request's own; returns 0 to go on, or the exit code to leave with (0
 * after --help, 2 after a usage error), having printed the usage or the error. */
static int req_option(struct req *q, int ch, const char *arg)
{
    char *end;
    switch (ch) {
    case O_VNS:
        q->vns = arg;
        return 0;
    case 'n':
        q->ns = arg;
        return 0;
    case 'l':
        q->selector = arg;
        return 0;
    case O_NAME:
        q->name = arg;
        return 0;
    case O_DEFAULT:
        q->default_volumes = true;
        return 0;
    case O_WAIT:
        q->wait = true;
        return 0;
    case O_FROM:
        q->from = arg;
        return 0;
    case O_TIMEOUT:
        q->timeout = strtol(arg, &end, 10);
        if (*end || q->timeout <= 0) {
            fprintf(stderr, "podvault request: --timeout wants seconds, not %s\n", arg);
            return PV_EXIT_USAGE;
        }
        return 0;
    case 'h':
        fputs(usage, stdout);
        return PV_EXIT_OK;
    default:
        fputs(usage, stderr);
        return PV_EXIT_USAGE;
    }
}

/* Parses `request SUB [options] [NAME]` into *q (initialized here) and *sub; returns -1 to go
 * on, else the exit code to leave with, having printed the usage or the error. */
static int req_parse(int argc, char **argv, struct req *q, const char **sub)
{
    *q = (struct req){.vns = getenv("VELERO_NAMESPACE"), .timeout = 4 * 3600};
    if (!q->vns || !*q->vns) q->vns = "velero";
    if (argc < 2 || argv[1][0] == '-') {
        fputs(usage, argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
        return argc >= 2 && !strcmp(argv[1], "--help") ? PV_EXIT_OK : PV_EXIT_USAGE;
    }
    *sub = argv[1];
    int ch, rc;
    optind = 0; /* 0: glibc starts a fresh scan (the CLI has run getopt already) */
    while ((ch = getopt_long(argc - 1, argv + 1, "hn:l:", request_longopts, NULL)) != -1) {
        if (k8s_opts_take(&q->k8s, ch, optarg)) continue;
        if ((rc = req_option(q, ch, optarg)) != 0 || ch == 'h') return rc;
    }
    int rest = argc - 1 - optind;
    bool ok = (!strcmp(*sub, "backup") && rest == 0 && q->ns) ||
              (!strcmp(*sub, "restore") && rest == 0 && q->ns && q->from) ||
              ((!strcmp(*sub, "status") || !strcmp(*sub, "cancel")) && rest == 1);
    if (!ok) {
        fprintf(stderr, "podvault request: bad arguments for %s\n%s", *sub, usage);
        return PV_EXIT_USAGE;
    }
    if (!strcmp(*sub, "status") || !strcmp(*sub, "cancel")) q->name = argv[1 + optind];
    if (!strcmp(*sub, "status")) q->wait = false;
    return -1;
}

int request_main(int argc, char **argv)
{
    struct req q;
    const char *sub = NULL;
    int rc = req_parse(argc, argv, &q, &sub);
    if (rc != -1) return rc;
    if (sodium_init() < 0) {
        fputs("podvault request: libsodium failed to initialise\n", stderr);
        return PV_EXIT_ERROR;
    }
    struct err e;
    err_clear(&e);
    struct k8s_config kc = {0};
    rc = k8s_opts_load(&q.k8s, &kc, &e);
    if (rc == 0) rc = k8s_client_new(&kc, NULL, &q.k, &e);
    if (rc == 0) {
        if (!strcmp(sub, "backup"))
            rc = do_backup(&q, &e);
        else if (!strcmp(sub, "restore"))
            rc = do_restore(&q, &e);
        else if (!strcmp(sub, "cancel"))
            rc = do_cancel(&q, &e);
        else
            rc = do_status(&q, &e);
    }
    if (rc < 0) fprintf(stderr, "podvault request %s: %s\n", sub, e.msg);
    k8s_client_free(q.k);
    k8s_config_free(&kc);
    json_decref(q.agents);
    return rc < 0 ? PV_EXIT_ERROR : PV_EXIT_OK;
}
