/* maintjob.h - `podvault maintain --location NAME` (or --default-location): scheduled maintenance
 * of every podvault repository under a Velero BackupStorageLocation (see docs/AGENT.md).
 *
 * The location is read from the API server (by name, or the one whose spec.default is true, as
 * Velero picks it); its repositories, one per volume namespace (repoloc.h:
 * <prefix>/plugins/podvault/<namespace>), are found by listing that folder and keeping the names
 * "<namespace>/config". Each repository is maintained by a `podvault maintain` child (the code
 * `podvault maintain -r REPO` runs, which holds the repository's prune lock for the whole run),
 * one repository after the other, with the password of Secret velero-repo-credentials and the
 * location's S3 settings and keys, as the agent's jobs get them (runner.h). Before that, the
 * snapshots whose Velero backup is gone (gc.h) are forgotten and pruned by a `forget --prune`
 * child. A failure of one repository is logged and the others are still maintained.
 */
#ifndef PV_AGENT_MAINTJOB_H
#define PV_AGENT_MAINTJOB_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "agent/k8s_opts.h"
#include "base/err.h"

/* One option of the `maintain` children: "--name" alone (value NULL) or "--name=value". */
struct maintjob_option {
    const char *name, *value;
};

struct maintjob_config {
    struct k8s_opts k8s;   /* the connection; its credentials_file: S3 keys when the location
                            * names no Secret (may be NULL) */
    const char *namespace; /* Velero's: locations and Secrets */
    const char *location;  /* NULL: the location marked default */
    const char *cache_dir;        /* for the children; NULL: their default */
    bool no_cache;                /* the children get --no-cache */
    bool dry_run; /* snapshots of deleted Velero backups are only logged, not forgotten */
    const char *scratch_dir; /* a directory of the job's own is made here (a CA file) */
    const char *exe;         /* the podvault program the children run */
    const struct maintjob_option *maint_args; /* the options of every `maintain` child */
    size_t n_maint_args;
    const volatile sig_atomic_t *cancel; /* non-zero: stop the running child and give up */
};

/* Runs the maintenance; logs one JSON line per repository (and per problem) on stderr. Returns
 * the exit code: 0 when every repository was maintained (or there is none yet), 1 when the
 * location could not be read or any repository failed, 130 when canceled. */
int maintjob_run(const struct maintjob_config *c);

/* --- the decisions, apart from any I/O so they can be tested */

/* From the items of a BackupStorageLocation list: the one named `name`, or with `name` NULL the
 * one whose spec.default is true. ERR_NOT_FOUND when there is none (the message names what
 * exists), ERR_FAIL when several are marked default. `ns` is for messages. */
int maintjob_pick_location(const json_t *items, const char *name, const char *ns,
                           const json_t **out, struct err *e);

/* The repositories found under a location: sorted, each once. */
struct maintjob_repos {
    char **ns;
    size_t n, cap;
};
/* Takes one object name listed under <prefix>/plugins/podvault/: a name "<namespace>/config" adds
 * the namespace (a repository's config object exists from its `init` on); other names are ignored.
 * Returns -1 when memory is out. */
int maintjob_repos_add(struct maintjob_repos *r, const char *listed_name);
/* Sorts and drops duplicates (a listing may repeat a name). */
void maintjob_repos_finish(struct maintjob_repos *r);
void maintjob_repos_free(struct maintjob_repos *r);

#endif
