/* volume.h - where a pod's volume lives on its node, by Velero's rule.
 *
 * The kubelet mounts each volume of a pod at <pods dir>/<pod UID>/volumes/<plugin>/<dir>, and the
 * agent sees the kubelet's pods directory at /host_pods (settable). <dir> is:
 *  - for a PVC: the bound PV's name, plus "/mount" when the PV is a CSI volume (spec.csi set, or
 *    its pv.kubernetes.io/provisioned-by or pv.kubernetes.io/migrated-to annotation names a
 *    CSIDriver that exists);
 *  - otherwise the volume's name, plus "/mount" for an inline CSI volume.
 * <plugin> (e.g. kubernetes.io~csi, kubernetes.io~empty-dir) is whatever exists; exactly one
 * directory must match, else the error says "expected one matching path: <pattern>, got <n>".
 */
#ifndef PV_AGENT_VOLUME_H
#define PV_AGENT_VOLUME_H

#include <stdbool.h>

#include <jansson.h>

#include "base/err.h"

/* The pod's volume entry named `volume` (from spec.volumes), or NULL. */
const json_t *volume_entry(const json_t *pod, const char *volume);

/* The PVC that volume entry uses, or NULL when it is not a PVC. */
const char *volume_claim(const json_t *entry);

/* True when the PV's annotations name a CSI driver, so the caller needs the CSIDriver list. */
bool volume_pv_names_driver(const json_t *pv);

/* Computes <dir> (allocated, caller frees). `pv` is the bound PV for a PVC (NULL otherwise);
 * `drivers` the CSIDriverList (or NULL when not needed). Block-mode PVs fail: their data is a
 * device, not files. */
int volume_dir(const json_t *entry, const json_t *pv, const json_t *drivers, char **dir,
               struct err *e);

/* Finds the one directory <host_pods>/<pod_uid>/volumes/<any plugin>/<dir> (allocated). Plugin
 * directories whose names start with '.' are not considered, as with a shell glob. A pod UID or
 * directory that could leave that place ("..", '/' other than in "<name>/mount") is refused. */
int volume_find(const char *host_pods, const char *pod_uid, const char *dir, char **path,
                struct err *e);

/* True when the directory holds no entries (an empty volume gets no snapshot). */
int volume_is_empty(const char *path, bool *empty, struct err *e);

#endif
