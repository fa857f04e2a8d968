/* rwait.h - whether a pod is held in Velero's restore-wait init container, the only state in
 * which a PodVolumeRestore may write into its volumes.
 *
 * Velero's restore gives each pod it restores into an init container named "restore-wait"
 * (velero-restore-helper), which waits until every restored volume holds the completion mark.
 * While it runs, the kubelet has mounted every volume and no application container has started:
 * Velero's node-agent accepts a PodVolumeRestore only then (isInitContainerRunning in
 * pkg/controller/pod_volume_restore_controller.go). Restoring at any other time would overwrite
 * a live application's data and let it write during the restore. Pure functions, no I/O.
 */
#ifndef PV_AGENT_RWAIT_H
#define PV_AGENT_RWAIT_H

#include <jansson.h>

#define RWAIT_CONTAINER "restore-wait"

enum rwait_state {
    RWAIT_NO_POD,  /* the pod is unknown here (not created, or not on this node) */
    RWAIT_NONE,    /* the pod has no restore-wait init container: it is never restored into */
    RWAIT_PENDING, /* it has one that has not started yet (volumes being mounted) */
    RWAIT_RUNNING, /* it runs: the gate is open */
    RWAIT_PASSED,  /* it ended, or the pod is terminating: its application may run */
};

/* The state of `pod` (a Pod object, or NULL) by its spec.initContainers and
 * status.initContainerStatuses. */
enum rwait_state rwait_pod_state(const json_t *pod);

/* What the state means, for a status message ("is not held in ... : <text>"). */
const char *rwait_state_text(enum rwait_state s);

#endif
