/* metrics.h - the agent's counters, shown as Prometheus text on /metrics, and /healthz, served
 * over HTTP by a libuv loop on a thread of its own.
 *
 * podvault's own (all prefixed podvault_agent_): jobs_total{kind,phase} (finished jobs by final
 * phase), jobs_running{kind}, bytes_total{kind} (bytes backed up or restored),
 * bytes_new_total{kind} (new bytes a backup added), job_duration_seconds{kind} (histogram),
 * job_oldest_start_time_seconds{kind} (Unix time the longest-running job started, else 0),
 * watch_total{event} (list, resume, expired, failure), healthy, http_dropped_total{reason}
 * (connections the server closed: full, deadline, oversized); and
 * process_resident_memory_bytes.
 *
 * Velero's node-agent's, same names, types, labels, buckets and moments as Velero's
 * pkg/metrics/metrics.go (NewNodeMetrics) and pkg/controller/pod_volume_backup_controller.go:
 * podVolume_pod_volume_backup_enqueue_count{node} (a backup job started),
 * podVolume_pod_volume_backup_dequeue_count{node} (a backup's Completed status was written),
 * podVolume_pod_volume_operation_latency_seconds{node,operation,backupName,pod_volume_backup}
 * (histogram) and podVolume_pod_volume_operation_latency_seconds_gauge{...}, both observed with a
 * completed backup's whole seconds. Velero records nothing for restores. The per-backup series
 * of the last METRICS_PVB_SERIES completed backups are kept (Velero keeps all until restart).
 *
 * /healthz (and /readyz) answers 200 "ok" while healthy, else 503 with the reason.
 *
 * Locking: one mutex guards the counters; it is held only for in-memory updates and copies,
 * never across I/O, so a stuck or flooded HTTP server cannot hold up the controller.
 */
#ifndef PV_AGENT_METRICS_H
#define PV_AGENT_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/err.h"

enum metrics_kind { METRICS_BACKUP, METRICS_RESTORE };
enum metrics_watch { METRICS_LIST, METRICS_RESUME, METRICS_EXPIRED, METRICS_FAILURE };

#define METRICS_PVB_SERIES 256 /* per-backup latency series kept */

struct metrics;

/* Limits of the HTTP server. Every connection is closed once answered (no keep-alive). */
struct metrics_limits {
    unsigned max_conns;   /* open connections; a new one beyond evicts the oldest unanswered
                             one of the client address holding the most */
    unsigned request_ms;  /* from accept to the end of the request's headers (not reset by data) */
    unsigned response_ms; /* from the end of the request to the answer handed to the kernel */
    unsigned request_max; /* bytes of request line and headers */
};
#define METRICS_LIMITS_DEFAULT                                                                     \
    {                                                                                              \
        .max_conns = 64, .request_ms = 5000, .response_ms = 10000, .request_max = 4096             \
    }

/* Velero's labels of one completed PodVolumeBackup (pod_volume_backup_controller.go
 * OnDataPathCompleted): backup "<pvb namespace>/<owner name>", the owner being
 * metadata.ownerReferences[0] (the Backup), else the label velero.io/backup-name (objects made
 * by `podvault request` have no owner), else empty; operation
 * "<pvb name>-<spec.backupStorageLocation>-<spec.pod.namespace>-<spec.uploaderType>-backup". */
struct metrics_pvb_labels {
    char pvb[254];
    char backup[320];
    char operation[640];
};

/* Fills `out` from a PodVolumeBackup object; missing fields count as empty strings. Pure;
 * values too long for `out` are cut. */
void metrics_pvb_labels(const json_t *pvb, struct metrics_pvb_labels *out);

int metrics_new(struct metrics **out, struct err *e);
void metrics_free(struct metrics *m); /* stops the server first if it runs */

/* Every function below may be called from any thread. */

/* The value of Velero's `node` label (copied); set it before serving. Empty until set. */
void metrics_set_node(struct metrics *m, const char *node);
/* A job started at `started` (for the oldest running job); for a backup also Velero's enqueue
 * count. */
void metrics_job_started(struct metrics *m, enum metrics_kind k, time_t started);
/* The job that started at `started` ended after `seconds`. `phase` is the final phase
 * (Completed, Failed, Canceled) or another word for jobs handed back (e.g. "Requeued"). */
void metrics_job_finished(struct metrics *m, enum metrics_kind k, time_t started, const char *phase,
                          double seconds, uint64_t bytes, uint64_t bytes_new);
/* A backup's Completed status was written (Velero's dequeue count and latency); `pvb` is the
 * object (borrowed), `seconds` how long it ran. */
void metrics_pvb_completed(struct metrics *m, const json_t *pvb, double seconds);
void metrics_watch(struct metrics *m, enum metrics_watch ev, unsigned long n);
/* `why` says what is wrong when not healthy (copied). */
void metrics_set_health(struct metrics *m, bool healthy, const char *why);

/* Appends the Prometheus text exposition (version 0.0.4) to `out`; -1 when out of memory. */
int metrics_render(struct metrics *m, struct buf *out);

/* Serves /metrics and /healthz on `address` ("HOST:PORT", ":PORT" for every IPv4 address,
 * "[V6]:PORT"; port 0 picks one) within `lim` (NULL: METRICS_LIMITS_DEFAULT), on a thread of
 * its own until metrics_free. *port receives the bound port. The server holds at most
 * lim->max_conns connections (one more for a moment while it evicts), plus the listener and
 * the loop's own two or three descriptors. */
int metrics_serve(struct metrics *m, const char *address, const struct metrics_limits *lim,
                  int *port, struct err *e);

#endif
