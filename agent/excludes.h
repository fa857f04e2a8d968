/* excludes.h - folders and files of a pod volume left out of its backups, named by the pod's
 * annotation podvault.io/backup-excludes (velero#4129 asks for this; Velero has no such rule).
 *
 *   podvault.io/backup-excludes: "data:cache, data:/tmp/x.part, logs:*.gz"
 *
 * A comma-separated list of VOLUME:PATTERN items (blanks around items are ignored). PATTERN is
 * an fnmatch(3) pattern as `podvault backup --exclude` takes it: without '/' it matches an
 * entry's name at any depth; with '/' it matches the path from the volume's root (a leading '/'
 * is optional; '*' does not cross '/'). An excluded directory is left out with all it holds.
 * The value is parsed strictly: an item without a volume name or a pattern, a volume name that
 * is not a DNS label, a pattern with a ".." component, an empty component, a NUL, an unclosed
 * '[' or a trailing '\' is an error that names the item, and the backup fails with it.
 */
#ifndef PV_AGENT_EXCLUDES_H
#define PV_AGENT_EXCLUDES_H

#include <jansson.h>

#include "agent/asys.h"
#include "agent/k8s.h"
#include "base/err.h"

#define EXC_ANNOTATION "podvault.io/backup-excludes"

/* Parses annotation `value` (NULL: none) and appends "--exclude P" to `args` for each item of
 * `volume`, its pattern made absolute under `root` (the volume's directory as the backup child
 * sees it) when it holds a '/'. Pure. Errors: ERR_FAIL with a message naming the bad item
 * (every item is checked, whichever volume it names), or when memory is out. */
int exc_args(const char *value, const char *volume, const char *root, struct asys_strv *args,
             struct err *e);

/* exc_args for the volume of a PodVolumeBackup's `spec`, reading the annotation from its pod
 * (GET). A pod that is gone has no excludes. `k` is used by this thread only. */
int exc_args_for_pvb(struct k8s_client *k, const json_t *spec, const char *root,
                     struct asys_strv *args, struct err *e);

#endif
