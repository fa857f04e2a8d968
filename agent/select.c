/* select.c - Velero's volume selection rules on pod objects (see select.h). */
#include "agent/select.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/k8s.h"
#include "agent/volume.h"

/* True when `name` is one of the comma-separated names in `list` (spaces around names ignored). */
static bool in_list(const char *list, const char *name)
{
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *last = end;
        while (last > p && last[-1] == ' ')
            last--;
        if ((size_t)(last - p) == n && n > 0 && memcmp(p, name, n) == 0) return true;
        p = end;
    }
    return false;
}

/* True when some container (init containers too) lists `volume` under `key`. */
static bool used_by(const json_t *pod, const char *volume, const char *key)
{
    static const char *const groups[] = {"spec.containers", "spec.initContainers"};
    for (size_t g = 0; g < 2; g++) {
        size_t i, j;
        json_t *c, *m;
        json_array_foreach(k8s_at(pod, groups[g]), i, c)
        {
            json_array_foreach(json_object_get(c, key), j, m)
            {
                const char *n = json_string_value(json_object_get(m, "name"));
                if (n && strcmp(n, volume) == 0) return true;
            }
        }
    }
    return false;
}

/* The reason opt-out mode leaves out a volume by its kind, or NULL. */
static const char *optout_kind(const json_t *v, const char *name)
{
    static const char *const kinds[][2] = {{"secret", "secret volume"},
                                           {"configMap", "configMap volume"},
                                           {"projected", "projected volume"},
                                           {"downwardAPI", "downwardAPI volume"}};
    if (strncmp(name, "default-token", 13) == 0 || strncmp(name, "kube-api-access-", 16) == 0)
        return "service-account token volume";
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (json_object_get(v, kinds[i][0])) return kinds[i][1];
    return NULL;
}

static void vol_free(struct sel_vol *v)
{
    free(v->ns);
    free(v->pod);
    free(v->pod_uid);
    free(v->node);
    free(v->volume);
    free(v->claim);
    free(v->reason);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Appends one volume of `pod` to the chosen (reason NULL) or skipped list. */
static int add(struct sel_result *r, const json_t *pod, const char *volume, const char *claim,
               char *reason, struct err *e)
{
    struct sel_vol **list = reason ? &r->skipped : &r->chosen;
    size_t *n = reason ? &r->n_skipped : &r->n_chosen;
    struct sel_vol *grown = realloc(*list, (*n + 1) * sizeof **list);
    if (!grown) {
        free(reason);
        return err_set(e, ERR_FAIL, "out of memory");
    }
    *list = grown;
    struct sel_vol v = {
        .ns = dup_or_null(k8s_str(pod, "metadata.namespace")),
        .pod = dup_or_null(k8s_str(pod, "metadata.name")),
        .pod_uid = dup_or_null(k8s_str(pod, "metadata.uid")),
        .node = dup_or_null(k8s_str(pod, "spec.nodeName")),
        .volume = strdup(volume),
        .claim = dup_or_null(claim),
        .reason = reason,
    };
    (*list)[(*n)++] = v;
    if (!v.volume || (claim && !v.claim)) return err_set(e, ERR_FAIL, "out of memory");
    return 0;
}

/* An allocated message, or NULL when memory is out. */
__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, f);
    int n = vasprintf(&s, f, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

/* The pod-wide reason for skipping every volume, or NULL (allocated). */
static int pod_reason(const json_t *pod, const struct sel_opts *o, char **reason, struct err *e)
{
    const char *phase = k8s_str(pod, "status.phase"), *node = k8s_str(pod, "spec.nodeName");
    *reason = NULL;
    if (!phase || strcmp(phase, "Running") != 0)
        *reason = fmt("pod is not Running (phase %s)", phase ? phase : "unknown");
    else if (!node || !*node)
        *reason = strdup("pod is not scheduled on a node");
    else if (o->node_has_agent && !o->node_has_agent(o->ctx, node))
        *reason = fmt("no running agent on node %s", node);
    else
        return 0;
    return *reason ? 0 : err_set(e, ERR_FAIL, "out of memory");
}

/* The reason a chosen PVC is skipped after looking at its PV, or NULL (allocated). */
static int claim_reason(struct sel_result *r, const json_t *pod, const char *claim,
                        const struct sel_opts *o, char **reason, struct err *e)
{
    const char *ns = k8s_str(pod, "metadata.namespace");
    *reason = NULL;
    for (size_t i = 0; i < r->n_chosen; i++) {
        const struct sel_vol *c = &r->chosen[i];
        if (c->claim && strcmp(c->claim, claim) == 0 && c->ns && ns && strcmp(c->ns, ns) == 0) {
            *reason = fmt("PVC %s is shared and already backed up with pod %s", claim, c->pod);
            return *reason ? 0 : err_set(e, ERR_FAIL, "out of memory");
        }
    }
    if (!o->claim_pv) return 0;
    json_t *pv = NULL;
    int rc = o->claim_pv(o->ctx, ns, claim, &pv, e);
    if (rc == ERR_NOT_FOUND) {
        *reason = fmt("PVC %s or its PV not found: %s", claim, e->msg);
        err_clear(e);
        return *reason ? 0 : err_set(e, ERR_FAIL, "out of memory");
    }
    if (rc < 0) return err_wrap(e, "looking up the PV of PVC %s/%s", ns ? ns : "", claim);
    const char *mode = k8s_str(pv, "spec.volumeMode"), *what = NULL;
    if (k8s_at(pv, "spec.hostPath"))
        what = "hostPath";
    else if (mode && strcmp(mode, "Block") == 0)
        what = "block-mode";
    if (what)
        *reason = fmt("PVC %s is bound to %s PV %s", claim, what, k8s_str(pv, "metadata.name"));
    json_decref(pv);
    return what && !*reason ? err_set(e, ERR_FAIL, "out of memory") : 0;
}

/* Decides one volume entry that the mode made a candidate. */
static int decide(struct sel_result *r, const json_t *pod, const json_t *v, const char *name,
                  const char *pod_why, const struct sel_opts *o, struct err *e)
{
    const char *claim = json_string_value(k8s_at(v, "persistentVolumeClaim.claimName"));
    char *reason = NULL;
    if (json_object_get(v, "hostPath"))
        reason = strdup("hostPath volume");
    else if (used_by(pod, name, "volumeDevices"))
        reason = strdup("block-mode volume (volumeDevices)");
    else if (!used_by(pod, name, "volumeMounts"))
        reason = strdup("no container mounts it");
    else if (pod_why)
        reason = strdup(pod_why);
    else if (claim) {
        int rc = claim_reason(r, pod, claim, o, &reason, e);
        if (rc < 0) return rc;
        return add(r, pod, name, claim, reason, e);
    } else
        return add(r, pod, name, NULL, NULL, e);
    if (!reason) return err_set(e, ERR_FAIL, "out of memory");
    return add(r, pod, name, claim, reason, e);
}

static const char *annotation(const json_t *pod, const char *key)
{
    return json_string_value(json_object_get(k8s_at(pod, "metadata.annotations"), key));
}

/* Opt-in names that match no volume of the pod are reported, so a typo does not go unnoticed. */
static int unknown_names(struct sel_result *r, const json_t *pod, const char *include,
                         struct err *e)
{
    for (const char *p = include; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n > 0) {
            char *name = strndup(p, n);
            if (!name) return err_set(e, ERR_FAIL, "out of memory");
            int rc = 0;
            if (!volume_entry(pod, name))
                rc = add(r, pod, name, NULL, strdup("the pod has no volume of that name"), e);
            free(name);
            if (rc < 0) return rc;
        }
        p += strcspn(p, ",");
    }
    return 0;
}

int sel_pod(struct sel_result *r, const json_t *pod, const struct sel_opts *o, struct err *e)
{
    const char *include = annotation(pod, SEL_ANN_INCLUDE),
               *exclude = annotation(pod, SEL_ANN_EXCLUDE);
    char *pod_why = NULL;
    int rc = pod_reason(pod, o, &pod_why, e);
    size_t i;
    json_t *v;
    json_array_foreach(k8s_at(pod, "spec.volumes"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name")), *kind;
        if (rc < 0 || !name) continue;
        if (!o->default_volumes) {
            if (in_list(include, name)) rc = decide(r, pod, v, name, pod_why, o, e);
        } else if (in_list(exclude, name)) {
            rc = add(r, pod, name, NULL, strdup("excluded by annotation " SEL_ANN_EXCLUDE), e);
        } else if ((kind = optout_kind(v, name))) {
            rc = add(r, pod, name, NULL, strdup(kind), e);
        } else {
            rc = decide(r, pod, v, name, pod_why, o, e);
        }
    }
    if (rc == 0 && !o->default_volumes) rc = unknown_names(r, pod, include, e);
    free(pod_why);
    return rc;
}

void sel_result_free(struct sel_result *r)
{
    for (size_t i = 0; i < r->n_chosen; i++)
        vol_free(&r->chosen[i]);
    for (size_t i = 0; i < r->n_skipped; i++)
        vol_free(&r->skipped[i]);
    free(r->chosen);
    free(r->skipped);
    *r = (struct sel_result){0};
}
