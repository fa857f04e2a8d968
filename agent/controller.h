/* controller.h - serves the PodVolumeBackups and PodVolumeRestores of one node.
 *
 * Two informers (list+watch) feed a work queue of object keys; worker threads decide what each
 * object needs (ctl_decide) and write its status; each job runs on a thread of its own that
 * drives podvault children (runner.h), so a long job never blocks the watch or other objects.
 *
 * Phases: New/"" -> Accepted (the agent took it) -> InProgress (a job runs) -> Completed | Failed;
 * with spec.cancel: Canceling -> Canceled (or straight to Canceled when nothing ran yet).
 * A PVB is this node's when spec.node is the node; a PVR when its target pod runs on the node
 * (then status.node records it). spec.uploaderType must be one of the served types. A PVR is
 * accepted and started only while its pod is held in Velero's restore-wait init container
 * (rwait.h), and once the kubelet has mounted its volume; a pod without that init container fails
 * it at once, a gate or volume not ready within `prepare_timeout` of its creation fails it then.
 * Status is written by GET, change, PUT (to /status when the kind has a status subresource,
 * else to the object), retried every 100 ms on 409 Conflict, so that a newer change by someone
 * else is never overwritten. Progress is written at most every `progress_interval` seconds.
 * On start, InProgress or Canceling objects of this node that no job of this process runs are
 * finished: Failed with "agent restarted while the backup was running" (or Canceled).
 * On stop, running jobs get `shutdown_grace` seconds; those still running are stopped and their
 * objects handed back (phase Accepted), so that the next agent runs them again.
 * The CRDs of Velero 1.16 and earlier allow only the phases New, InProgress, Completed and
 * Failed: when the API server refuses a newer phase (422), the controller uses only those from
 * then on (no Accepted step, no Canceling, Failed with a "canceled" message for Canceled).
 */
#ifndef PV_AGENT_CONTROLLER_H
#define PV_AGENT_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "agent/k8s.h"
#include "agent/metrics.h"
#include "agent/runner.h"
#include "base/err.h"

struct ctl_config {
    const char *node;                  /* this node's name */
    const char *namespace;             /* where the PVBs, PVRs, locations and Secrets live */
    const char *const *uploader_types; /* spec.uploaderType values served ("" = unset) */
    size_t n_uploader_types;
    unsigned concurrency;       /* jobs at once */
    unsigned progress_interval; /* seconds between progress writes */
    unsigned resync_interval;   /* seconds between re-checks of waiting objects */
    unsigned shutdown_grace;    /* seconds running jobs get to finish on stop */
    unsigned prepare_timeout;   /* seconds an unstarted PVR waits for its pod's gate and volume */
    const struct k8s_config *k8s;
    struct runner_env runner; /* init_lock is the controller's own */
    struct metrics *metrics;  /* may be NULL */
};

struct ctl;

int ctl_new(const struct ctl_config *cfg, struct ctl **out, struct err *e);
/* Serves until *stop becomes non-zero, then stops as described above and returns 0. */
int ctl_run(struct ctl *c, const volatile int *stop, struct err *e);
void ctl_free(struct ctl *c);

/* --- the decision, apart from any I/O so it can be tested */

enum ctl_action {
    CTL_IGNORE,        /* not this node's, final, or nothing to do now */
    CTL_ACCEPT,        /* New -> Accepted */
    CTL_START,         /* Accepted -> InProgress and start a job */
    CTL_WAIT,          /* Accepted, but every job slot is busy */
    CTL_CANCEL_NEW,    /* canceled before any job ran -> Canceled */
    CTL_CANCEL_JOB,    /* stop the running job -> Canceling */
    CTL_FAIL_ORPHAN,   /* InProgress with no job in this process -> Failed */
    CTL_FINISH_CANCEL, /* Canceling with no job in this process -> Canceled */
    CTL_FAIL_PREPARE,  /* a PVR whose pod will not be, or was not in time, held for it -> Failed */
};

struct ctl_view {
    const char *phase; /* status.phase; NULL or "" for a new object */
    bool cancel;       /* spec.cancel */
    bool deleting;     /* metadata.deletionTimestamp is set */
    bool ours;         /* this node's, and an uploader type served */
    bool job_running;  /* a job of this process works on this very object (same UID) */
    bool slot_free;    /* a job could start now */
    bool legacy;       /* the kind's CRD knows only New, InProgress, Completed and Failed */
    /* PVRs only (false for PVBs): the gate of rwait.h. */
    bool gate_closed; /* the pod is not held in its restore-wait init container now */
    bool gate_never;  /* the pod has no restore-wait init container */
    bool expired;     /* created more than prepare_timeout seconds ago */
};

enum ctl_action ctl_decide(const struct ctl_view *v);
const char *ctl_action_name(enum ctl_action a);

/* The concurrency from Velero's node-agent ConfigMap value (JSON text with "loadConcurrency":
 * {"globalConfig": N, "perNodeConfig": [{"nodeSelector": {matchLabels, matchExpressions},
 * "number": N}]}) for a node object: the smallest number whose selector matches, else the
 * global one, else `fallback`. ERR_NOT_FOUND when the text has no loadConcurrency. */
int ctl_concurrency_from_config(const char *json_text, const json_t *node, unsigned fallback,
                                unsigned *out, struct err *e);

#endif
