/* gc.h - which podvault snapshots belong to Velero backups that are gone, so that maintenance
 * forgets them (docs/AGENT.md, "Deleted backups").
 *
 * `velero backup delete` and TTL expiry make Velero's server forget each PodVolumeBackup's
 * snapshot ID in its own kopia repository (velero pkg/controller/backup_deletion_controller.go,
 * deletePodVolumeSnapshots), where podvault's IDs are unknown: podvault's snapshots would stay
 * forever. So the agent records on each snapshot the Velero backup it was made for (labels
 * velero-backup and velero-backup-uid, from the PodVolumeBackup's ownerReference of kind Backup,
 * which Velero's pkg/podvolume/backupper.go sets), and maintenance forgets a snapshot when that
 * backup is gone: no Backup object with its UID in the cluster AND no
 * backups/<name>/velero-backup.json with its UID in the location. Velero deletes the location's
 * objects before the Backup object, and its backup sync controller makes Backup objects again
 * from the location's, so only both absent means gone; whatever could not be read counts as
 * present. Snapshots without those labels (made by `podvault request`, by hand, or before the
 * labels existed) are never touched.
 * Thread-safety: none needed; the functions keep no state.
 */
#ifndef PV_AGENT_GC_H
#define PV_AGENT_GC_H

#include <stdbool.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/err.h"

#define GC_LABEL_NAME "velero-backup"
#define GC_LABEL_UID "velero-backup-uid"

/* A Velero backup: its name and UID, borrowed from the JSON they were read from. */
struct gc_owner {
    const char *name, *uid;
};

/* Whether `name` can name a Velero Backup (a Kubernetes object name: 1..253 of [a-z0-9.-], not
 * "." or ".."), so that backups/<name>/ stays one folder of the location. */
bool gc_name_ok(const char *name);

/* The Backup a PodVolumeBackup was made for: its ownerReference of kind Backup, apiVersion
 * velero.io/v1, with a usable name and a UID. false when there is none (PodVolumeBackups of
 * `podvault request` have none), or when the PVB's velero.io/backup-uid label names another
 * UID. */
bool gc_pvb_owner(const json_t *pvb, struct gc_owner *out);

/* The Backup a snapshot (one item of `podvault snapshots --json`) records in its labels; false
 * when either label is missing or the name is not usable. */
bool gc_snapshot_owner(const json_t *snap, struct gc_owner *out);

/* What maintenance could read. */
struct gc_view {
    /* object: UID -> name of every Backup in Velero's namespace; NULL: the list failed */
    const json_t *cluster;
    /* object: name -> the metadata.uid (a string) of the location's
     * backups/<name>/velero-backup.json, or JSON null when that object does not exist; a name
     * that is not a key could not be read (or was not asked for). */
    const json_t *location;
};

enum gc_verdict {
    GC_FORGET,           /* its backup is gone */
    GC_KEEP_NOT_VELERO,  /* it records no Velero backup */
    GC_KEEP_IN_CLUSTER,  /* a Backup with its UID exists */
    GC_KEEP_IN_LOCATION, /* the location holds its backup, same UID */
    GC_KEEP_UNSURE,      /* the cluster or the location could not be read */
};

/* The rule above, for a snapshot whose owner is `o` (NULL: it records none). */
enum gc_verdict gc_decide(const struct gc_owner *o, const struct gc_view *v);
const char *gc_verdict_name(enum gc_verdict v);

/* The metadata.uid of a velero-backup.json (Velero's Backup as JSON) into *uid (borrowed from
 * *doc, which the caller decrefs). ERR_FAIL with a message when it is not such a document. */
int gc_parse_backup_json(const struct buf *text, json_t **doc, const char **uid, struct err *e);

#endif
