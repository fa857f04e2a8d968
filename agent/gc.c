/* gc.c - the snapshots of Velero backups that are gone (see gc.h). */
#include "agent/gc.h"

#include <string.h>

#include "agent/k8s.h"

bool gc_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 253 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return false;
    return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789.-") == n;
}

static bool owner_ok(const struct gc_owner *o)
{
    return gc_name_ok(o->name) && o->uid && *o->uid;
}

bool gc_pvb_owner(const json_t *pvb, struct gc_owner *out)
{
    memset(out, 0, sizeof *out);
    const json_t *refs = k8s_at(pvb, "metadata.ownerReferences"), *r;
    size_t i;
    json_array_foreach(refs, i, r)
    {
        const char *kind = k8s_str(r, "kind"), *api = k8s_str(r, "apiVersion");
        if (!kind || !api || strcmp(kind, "Backup") != 0 || strcmp(api, "velero.io/v1") != 0)
            continue;
        out->name = k8s_str(r, "name");
        out->uid = k8s_str(r, "uid");
        break;
    }
    const char *label =
        json_string_value(json_object_get(k8s_at(pvb, "metadata.labels"), "velero.io/backup-uid"));
    if (owner_ok(out) && (!label || strcmp(label, out->uid) == 0)) return true;
    memset(out, 0, sizeof *out);
    return false;
}

bool gc_snapshot_owner(const json_t *snap, struct gc_owner *out)
{
    const json_t *labels = json_object_get(snap, "labels");
    out->name = json_string_value(json_object_get(labels, GC_LABEL_NAME));
    out->uid = json_string_value(json_object_get(labels, GC_LABEL_UID));
    if (owner_ok(out)) return true;
    memset(out, 0, sizeof *out);
    return false;
}

enum gc_verdict gc_decide(const struct gc_owner *o, const struct gc_view *v)
{
    if (!o || !o->name || !o->uid) return GC_KEEP_NOT_VELERO;
    if (!v->cluster) return GC_KEEP_UNSURE;
    if (json_object_get(v->cluster, o->uid)) return GC_KEEP_IN_CLUSTER;
    const json_t *there = json_object_get(v->location, o->name);
    if (!there) return GC_KEEP_UNSURE;
    if (json_is_null(there)) return GC_FORGET;
    const char *uid = json_string_value(there);
    if (!uid) return GC_KEEP_UNSURE;
    return strcmp(uid, o->uid) == 0 ? GC_KEEP_IN_LOCATION : GC_FORGET;
}

const char *gc_verdict_name(enum gc_verdict v)
{
    switch (v) {
    case GC_FORGET:
        return "its backup is gone";
    case GC_KEEP_NOT_VELERO:
        return "it records no Velero backup";
    case GC_KEEP_IN_CLUSTER:
        return "its Backup exists in the cluster";
    case GC_KEEP_IN_LOCATION:
        return "its backup is in the location";
    case GC_KEEP_UNSURE:
        return "the cluster or the location could not be read";
    }
    return "?";
}

int gc_parse_backup_json(const struct buf *text, json_t **doc, const char **uid, struct err *e)
{
    json_error_t je = {0};
    *uid = NULL;
    *doc = json_loadb(text->data ? (const char *)text->data : "", text->len, 0, &je);
    const char *kind = k8s_str(*doc, "kind"), *u = k8s_str(*doc, "metadata.uid");
    if (!*doc || (kind && strcmp(kind, "Backup") != 0) || !u || !*u) {
        json_decref(*doc);
        *doc = NULL;
        return err_set(e, ERR_FAIL, "not a Velero Backup with a metadata.uid%s%s",
                       je.text[0] ? ": " : "", je.text);
    }
    *uid = u;
    return 0;
}
