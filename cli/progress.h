/* progress.h - progress of a backup or restore: a one-line display on a terminal, or JSON status
 * lines, and the problems met on the way. Safe to call from several threads. */
#ifndef PV_CLI_PROGRESS_H
#define PV_CLI_PROGRESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* What both backup and restore report. */
struct progress_figures {
    double elapsed;
    uint64_t files_done, files_total;
    uint64_t bytes_done, bytes_total;
    bool totals_final; /* the totals will not grow any more (ETA is meaningful) */
    bool has_bytes_new;
    uint64_t bytes_new;
    uint64_t errors;
};

struct progress {
    pthread_mutex_t lock;
    bool json;  /* status and error lines as JSON on stdout */
    bool tty;   /* a live line on stderr */
    bool quiet; /* no status at all (errors still shown) */
    bool line_shown;
    double last;    /* elapsed time of the last status printed */
    unsigned width; /* terminal columns */
};

void progress_init(struct progress *p, bool json, int verbosity);
void progress_destroy(struct progress *p);
/* Shows the figures, at most every 0.5 s (JSON) or 0.25 s (terminal). */
void progress_update(struct progress *p, const struct progress_figures *f);
/* Reports a problem with one entry: {"message_type":"error",...} or "podvault: path: msg". */
void progress_error(struct progress *p, const char *path, const char *msg);
/* Removes the live line before the final summary is printed. */
void progress_finish(struct progress *p);

#endif
