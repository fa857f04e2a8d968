/* runner.h - carries out one PodVolumeBackup or PodVolumeRestore: finds the pod's volume, the
 * repository of its namespace and the credentials, then runs `podvault` children.
 *
 * A backup runs `snapshots --host H` (to find the parent: the latest snapshot of the same PVC,
 * or of the same pod volume when there is no PVC; `init` when the repository does not exist
 * yet), then `backup PATH --host H --parent ID --label ... --tag ...`. H is "<ns>/<pvc>" for a
 * PVC and "<ns>/<pod>/<volume>" otherwise: stable across pods, unlike the volume's path, which
 * contains the pod's UID. A restore runs `snapshots` (to check that the snapshot is there and
 * learn its size), then `restore ID --target PATH`, then writes Velero's completion mark.
 * The runner never writes the object's status itself: it reports through hooks and returns the
 * final phase and message.
 */
#ifndef PV_AGENT_RUNNER_H
#define PV_AGENT_RUNNER_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "agent/asys.h"
#include "agent/job.h"
#include "agent/k8s.h"
#include "agent/repoloc.h"

struct runner_env {
    const char *exe;              /* the podvault program the children run */
    const char *host_pods;        /* the kubelet pods directory as the agent sees it */
    const char *namespace;        /* Velero's namespace: locations and Secrets */
    const char *cache_dir;        /* for the children; NULL: their default */
    const char *scratch_dir;      /* per-job temporary files */
    const char *credentials_file; /* AWS shared-credentials file, or NULL */
    const char *const *base_env;  /* environment the children inherit (NULL-terminated) */
    pthread_mutex_t *init_lock;   /* serializes `init` of new repositories */
};

struct runner_hooks {
    void *ctx;
    /* The child now running (NULL once it ended), so that a cancel can reach it. */
    void (*child)(void *ctx, struct job *j);
    /* Status fields to merge into the object's status; `urgent` ones are written at once,
     * others (progress) at the caller's pace. The hook does not keep `fields`. */
    void (*update)(void *ctx, json_t *fields, bool urgent);
    const volatile int *cancel; /* non-zero once the object asked to be canceled */
};

struct runner_result {
    const char *phase;    /* "Completed", "Failed" or "Canceled" */
    char message[1024];   /* for status.message; "" when there is nothing to say */
    char snapshot_id[80]; /* backups: the new snapshot ("" for an empty volume) */
    char path[PATH_MAX];  /* the volume directory found, or "" */
    uint64_t total_bytes, bytes_done, bytes_new;
};

void runner_backup(const struct runner_env *env, struct k8s_client *k, const json_t *pvb,
                   const struct runner_hooks *h, struct runner_result *res);
void runner_restore(const struct runner_env *env, struct k8s_client *k, const json_t *pvr,
                    const struct runner_hooks *h, struct runner_result *res);

/* Finds the directory of the volume `spec` names (spec.pod, spec.volume) under host_pods, by the
 * rule of volume.h, looking up the pod, its PVC, the PV and CSI drivers. ERR_NOT_FOUND when the
 * pod exists and has that volume but no directory matches (not mounted yet); *claim (may be
 * NULL) receives the PVC's name for PVC volumes. */
int runner_find_volume(const struct runner_env *env, struct k8s_client *k, const json_t *spec,
                       char **path, char **claim, struct err *e);

/* What every child working on the repository `loc` (of the location `bsl`) is given, for other
 * jobs on a location's repositories (maintjob.h):
 * the environment: env->base_env without podvault's own variables (and without the AWS ones
 * when the location brings its keys), plus PODVAULT_PASSWORD from the Secret
 * velero-repo-credentials and, for S3, the keys of the location's spec.credential Secret, else
 * of env->credentials_file; */
int runner_child_env(const struct runner_env *env, struct k8s_client *k, const struct repoloc *loc,
                     const json_t *bsl, struct asys_strv *out, struct err *e);
/* the start of the command line: env->exe --json -r LOCATION [--cache-dir D] and the location's
 * S3 options (-1 when memory is out); */
int runner_base_argv(const struct runner_env *env, const struct repoloc *loc, struct asys_strv *a);
/* and what a failed child's exit `code` means: "no podvault repository at ...", "wrong repository
 * password: ...", else the reason the child gave. */
void runner_explain(int code, const struct job_result *jr, const struct repoloc *loc,
                    const struct runner_env *env, char *buf, size_t cap);

/* The most threads `podvault backup` and `restore` take (their --threads accepts 1 to 256). */
#define RUNNER_MAX_THREADS 256u

/* Reads Velero's uploaderSettings value `value` of `key` (ParallelFilesUpload/Download), may be
 * NULL: *threads receives a positive decimal number, clamped to RUNNER_MAX_THREADS, or 0 when
 * the value gives none (then the child's default applies). Anything not taken as given is said
 * in `note` (for status.message; left alone otherwise). Never fails: returns 0. */
int runner_parallel(const char *key, const char *value, unsigned *threads, char *note, size_t cap);

/* Picks from `snapshots --json` output the newest snapshot (by "time"), or with `id` set the
 * one whose ID starts with it; NULL when none (the returned object belongs to `list`). */
const json_t *runner_pick_snapshot(const json_t *list, const char *id);

#endif
