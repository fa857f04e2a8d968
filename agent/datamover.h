/* datamover.h - declines Velero's CSI snapshot data movement (velero.io/v2alpha1 DataUpload and
 * DataDownload), which podvault does not serve.
 *
 * Where podvault's agent has taken the place of Velero's node-agent, nobody else would take
 * these objects, and Velero's server would wait for them until its operation timeout (hours).
 * So every agent watches them in Velero's namespace and ends a new one at once: Failed, with a
 * message saying that podvault does not serve it (Canceled when it was already canceled). All
 * agents race for the same object as Velero's node-agents race to accept one: each GETs it and
 * PUTs it back with its resourceVersion; a 409 Conflict means another agent (or anyone) wrote
 * first, and the loser stops. Objects of another data mover (spec.datamover other than "" or
 * "velero") are left alone, as Velero's node-agent leaves them (velero pkg/datamover/util.go
 * IsBuiltInUploader); so are objects another node's node-agent has taken, unless it is this
 * node's (then podvault replaced it and nobody finishes them).
 */
#ifndef PV_AGENT_DATAMOVER_H
#define PV_AGENT_DATAMOVER_H

#include <stdbool.h>

#include <jansson.h>

#include "agent/k8s.h"
#include "base/err.h"

/* --- the decision, apart from any I/O */

enum dm_action {
    DM_IGNORE,  /* another data mover's, final, or another node's node-agent works on it */
    DM_DECLINE, /* New -> Failed: podvault does not serve it */
    DM_CANCEL,  /* canceled (spec.cancel) and nobody to finish it -> Canceled */
    DM_ORPHAN,  /* taken by the node-agent this agent replaced -> Failed */
};

struct dm_view {
    const char *phase;     /* status.phase; NULL or "" for a new object */
    const char *datamover; /* spec.datamover; NULL or "" is Velero's built-in one */
    bool cancel;           /* spec.cancel */
    const char *taken_by;  /* status.acceptedByNode, else status.node; may be NULL */
    const char *node;      /* this agent's node */
};

enum dm_action dm_decide(const struct dm_view *v);

/* The view of an object (pointers into `obj`, valid while it lives). */
struct dm_view dm_view_of(const json_t *obj, const char *node);

/* Changes `obj`'s status for action `a` (not DM_IGNORE): phase, message, startTimestamp when
 * unset, completionTimestamp = `now`. `kind` ("DataUpload", "DataDownload") goes into the
 * message. Returns 0, or -1 when memory is out. */
int dm_apply(json_t *obj, enum dm_action a, const char *kind, const char *node, const char *now);

/* --- the watcher */

struct dm_config {
    const char *node;      /* this agent's node */
    const char *namespace; /* Velero's namespace */
    const struct k8s_config *k8s;
};

struct dm;

/* Starts one list+watch thread per kind. The strings of `cfg` must outlive the watcher.
 * Errors: ERR_FAIL (memory, threads, a client). Not thread-safe against dm_stop. */
int dm_start(const struct dm_config *cfg, struct dm **out, struct err *e);
/* Stops the threads (within a second or so: a request in flight is abandoned) and frees `d`
 * (NULL is fine). */
void dm_stop(struct dm *d);

#endif
