/* select.h - which of a pod's volumes get a file-system backup, by Velero's rules.
 *
 * Opt-in (the default): the volumes named in the pod annotation backup.velero.io/backup-volumes.
 * Opt-out (Velero's defaultVolumesToFsBackup): every volume except those named in
 * backup.velero.io/backup-volumes-excludes and except secret, configMap, projected and
 * downwardAPI volumes and service-account token volumes (default-token-*, kube-api-access-*).
 * In both modes these are skipped: hostPath volumes, volumes no container mounts, block-mode
 * volumes (volumeDevices, or a Block PV), PVCs bound to a hostPath PV, every volume of a pod that
 * is not Running or whose node has no running agent, and a PVC already chosen for another pod
 * (a ReadWriteMany claim is backed up once). Each skipped volume carries its reason.
 */
#ifndef PV_AGENT_SELECT_H
#define PV_AGENT_SELECT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "base/err.h"

#define SEL_ANN_INCLUDE "backup.velero.io/backup-volumes"
#define SEL_ANN_EXCLUDE "backup.velero.io/backup-volumes-excludes"

struct sel_opts {
    bool default_volumes; /* opt-out mode */
    /* The PV bound to the claim `ns`/`claim` (a new reference in *pv). Return ERR_NOT_FOUND when
     * the claim or its PV does not exist (the volume is skipped), another negative code to fail
     * the selection. NULL: PVCs are taken without looking at their PV. */
    int (*claim_pv)(void *ctx, const char *ns, const char *claim, json_t **pv, struct err *e);
    /* True when a node agent runs on `node`. NULL: every node has one. */
    bool (*node_has_agent)(void *ctx, const char *node);
    void *ctx;
};

/* One volume of one pod, chosen (reason NULL) or skipped. All strings are owned. */
struct sel_vol {
    char *ns, *pod, *pod_uid, *node, *volume;
    char *claim;  /* the PVC's name, or NULL */
    char *reason; /* why it is skipped, or NULL when chosen */
};

/* The selection over several pods; PVCs chosen so far are remembered across sel_pod calls. */
struct sel_result {
    struct sel_vol *chosen, *skipped;
    size_t n_chosen, n_skipped;
};

/* Adds `pod`'s volumes to `r`. Fails only when memory is out or claim_pv fails. */
int sel_pod(struct sel_result *r, const json_t *pod, const struct sel_opts *o, struct err *e);

void sel_result_free(struct sel_result *r);

#endif
