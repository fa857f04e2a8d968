/* rwait.c - the restore-wait gate; see rwait.h. */
#include "agent/rwait.h"

#include <stdbool.h>
#include <string.h>

#include "agent/k8s.h"

/* The entry named restore-wait in the array `list` (containers or their statuses), or NULL. */
static const json_t *named(const json_t *list)
{
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *n = k8s_str(c, "name");
        if (n && strcmp(n, RWAIT_CONTAINER) == 0) return c;
    }
    return NULL;
}

enum rwait_state rwait_pod_state(const json_t *pod)
{
    if (!pod) return RWAIT_NO_POD;
    if (!named(k8s_at(pod, "spec.initContainers"))) return RWAIT_NONE;
    if (k8s_str(pod, "metadata.deletionTimestamp")) return RWAIT_PASSED;
    const json_t *st = named(k8s_at(pod, "status.initContainerStatuses"));
    const json_t *state = k8s_at(st, "state");
    if (json_is_object(json_object_get(state, "running"))) return RWAIT_RUNNING;
    if (json_is_object(json_object_get(state, "terminated"))) return RWAIT_PASSED;
    return RWAIT_PENDING;
}

const char *rwait_state_text(enum rwait_state s)
{
    switch (s) {
    case RWAIT_NO_POD:
        return "the pod is not on this node";
    case RWAIT_NONE:
        return "the pod has no restore-wait init container (Velero's restore adds it)";
    case RWAIT_PENDING:
        return "its restore-wait init container has not started";
    case RWAIT_RUNNING:
        return "its restore-wait init container is running";
    case RWAIT_PASSED:
        return "its restore-wait init container has ended (the application may be running)";
    }
    return "?";
}
