/* job.h - the agent's data path runs in child processes: start one, follow its --json output,
 * cancel it, collect its result; and a counter of job slots for the concurrency limit.
 *
 * A child is `podvault [options] backup|restore|snapshots|init ... --json` (see the CLI contract):
 * a crash or a memory spike in one cannot take the agent down. Its stdout carries one JSON object
 * a line ("status", "error", "summary" message types); its stderr is kept (the last KiB) for
 * messages when it fails without saying why on stdout.
 */
#ifndef PV_AGENT_JOB_H
#define PV_AGENT_JOB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/err.h"

struct job_status {
    double seconds_elapsed, percent_done;
    uint64_t total_files, files_done, total_bytes, bytes_done, bytes_new, errors;
};

struct job_result {
    int exit_code;          /* the child's exit status; 128 + N when killed by signal N */
    bool signaled;          /* killed by a signal (not exited) */
    json_t *summary;        /* the "summary" line, or NULL (owned) */
    char first_error[512];  /* "PATH: ERROR" of the first "error" line, or "" */
    uint64_t error_lines;   /* how many "error" lines came */
    char stderr_tail[1024]; /* the end of what the child wrote on stderr */
    struct job_status last; /* the last "status" line */
};
void job_result_free(struct job_result *r);

/* The text that best explains a failure: the first error line, else the stderr tail, else the
 * exit code. */
const char *job_result_reason(const struct job_result *r, char *buf, size_t cap);

enum job_line { JOB_LINE_OTHER, JOB_LINE_STATUS, JOB_LINE_ERROR, JOB_LINE_SUMMARY };

/* Classifies one output line; a status line fills *st, and an error or summary line is
 * returned in *obj (caller decrefs; NULL for other lines). */
enum job_line job_parse_line(const char *line, size_t len, struct job_status *st, json_t **obj);

struct job;

/* Starts argv[0] with argv and exactly the environment envp (NULL-terminated lists); stdin is
 * /dev/null. The child leads a process group of its own, and signals blocked in the calling
 * thread are unblocked in it. */
int job_start(const char *const *argv, const char *const *envp, struct job **out, struct err *e);

/* Follows the child to its end. `on_status` (may be NULL) sees every status line; when
 * `stdout_copy` is not NULL the whole stdout is also appended there (for `snapshots --json`).
 * A child asked to stop that has not ended 30 s later is killed. */
int job_wait(struct job *j, void (*on_status)(void *ctx, const struct job_status *st), void *ctx,
             struct buf *stdout_copy, struct job_result *res, struct err *e);

/* Asks the child's process group to stop (SIGTERM). Safe from any thread until job_free, also
 * after the child ended. */
void job_cancel(struct job *j);
void job_free(struct job *j);

/* At most `max` jobs at once; take returns false when all slots are in use. */
struct job_slots {
    pthread_mutex_t mu;
    unsigned used, max;
};
void job_slots_init(struct job_slots *s, unsigned max);
bool job_slots_take(struct job_slots *s);
void job_slots_give(struct job_slots *s);
unsigned job_slots_used(struct job_slots *s);

#endif
