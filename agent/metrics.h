/* metrics.h - the agent's counters, shown as Prometheus text on /metrics, and /healthz, served
 * over HTTP by a libuv loop on a thread of its own.
 *
 * Exposed (all prefixed podvault_agent_): jobs_total{kind,phase} (finished jobs by final phase),
 * jobs_running{kind}, bytes_total{kind} (bytes backed up or restored), bytes_new_total{kind}
 * (new bytes a backup added), job_duration_seconds{kind} (histogram), watch_total{event}
 * (list, resume, expired, failure), healthy; and process_resident_memory_bytes.
 * /healthz answers 200 "ok" while healthy, else 503 with the reason.
 */
#ifndef PV_AGENT_METRICS_H
#define PV_AGENT_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

enum metrics_kind { METRICS_BACKUP, METRICS_RESTORE };
enum metrics_watch { METRICS_LIST, METRICS_RESUME, METRICS_EXPIRED, METRICS_FAILURE };

struct metrics;

int metrics_new(struct metrics **out, struct err *e);
void metrics_free(struct metrics *m); /* stops the server first if it runs */

/* Every function below may be called from any thread. */
void metrics_job_started(struct metrics *m, enum metrics_kind k);
/* `phase` is the final phase (Completed, Failed, Canceled) or another word for jobs handed
 * back (e.g. "Requeued"). */
void metrics_job_finished(struct metrics *m, enum metrics_kind k, const char *phase, double seconds,
                          uint64_t bytes, uint64_t bytes_new);
void metrics_watch(struct metrics *m, enum metrics_watch ev, unsigned long n);
/* `why` says what is wrong when not healthy (copied). */
void metrics_set_health(struct metrics *m, bool healthy, const char *why);

/* The Prometheus text exposition (version 0.0.4). */
int metrics_render(struct metrics *m, struct buf *out);

/* Serves /metrics and /healthz on `address` ("HOST:PORT", ":PORT" for every IPv4 address,
 * "[V6]:PORT"; port 0 picks one). *port receives the bound port. */
int metrics_serve(struct metrics *m, const char *address, int *port, struct err *e);

#endif
