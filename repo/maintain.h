/* maintain.h - scheduled maintenance: what a job runs on a timer, deciding itself what is due.
 *
 * The repository records each run as a sealed object "maintenance/<id>" (kind, times, host,
 * outcome, figures), so any node or job can run `maintain` and do only what is due:
 *  - quick (due hourly): a quick prune (delete packs marked earlier once safe, compact the
 *    index) - cheap, no walk of all snapshots;
 *  - full (due daily): a full prune (walk, mark, repack) and a structural check.
 * A full run counts as a quick one. Only successful runs count. Two runs never overlap: the
 * caller holds the prune lock for the whole run. The newest MAINT_KEEP records are kept.
 */
#ifndef PV_REPO_MAINTAIN_H
#define PV_REPO_MAINTAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"
#include "repo/check.h"
#include "repo/prune.h"

struct repo;
struct lock;

#define MAINT_QUICK_EVERY 3600
#define MAINT_FULL_EVERY 86400
#define MAINT_KEEP 20

enum maint_kind {
    MAINT_NONE = 0,
    MAINT_QUICK = 1,
    MAINT_FULL = 2,
};

/* One maintenance/<id> object. */
struct maint_record {
    struct oid id;
    enum maint_kind kind;
    int64_t started, finished; /* Unix seconds, by the clock of the host that ran it */
    char hostname[256];
    bool ok;
    char error[512]; /* when !ok */
    uint64_t packs_deleted, bytes_freed, packs_pending, check_errors;
};

/* What ran when: the last successful runs (0 when never). */
struct maint_state {
    int64_t last_quick; /* a full run counts as a quick one too */
    int64_t last_full;
    size_t n_records;
};

struct maint_options {
    enum maint_kind want;             /* MAINT_NONE: whatever is due; else only this kind */
    bool force;                       /* run `want` (full when MAINT_NONE) even when not due */
    bool dry_run;                     /* decide and report; prune in dry-run mode; record nothing */
    uint32_t quick_every, full_every; /* seconds (0: defaults) */
    struct prune_options prune;       /* quick and dry_run are set by maint_run */
    struct check_options check;       /* for full runs */
};

struct maint_result {
    enum maint_kind ran; /* MAINT_NONE: nothing was due */
    struct maint_state before;
    struct prune_stats prune;
    bool checked;
    struct check_stats check;
    int64_t next_quick, next_full; /* when each is due next (Unix seconds) */
};

/* The JSON plaintext of a record (FORMAT.md), for tests and fuzzing; the decoder keeps
 * out->id and refuses anything malformed. */
int maint_record_encode(const struct maint_record *m, struct buf *out, struct err *e);
int maint_record_decode(const void *json, size_t len, struct maint_record *out, struct err *e);

/* Reads every record; *records (may be NULL) gets them, newest first (caller frees). Records
 * that cannot be read are skipped. */
int maint_state_load(struct repo *r, struct maint_state *st, struct maint_record **records,
                     size_t *n, struct err *e);
/* Which run is due at `now`, given what the caller wants (see maint_options). */
enum maint_kind maint_due(const struct maint_state *st, int64_t now, const struct maint_options *o);
const char *maint_kind_name(enum maint_kind k);

void maint_options_default(struct maint_options *o);
/* Runs what is due under the prune lock `lk`, and records it. A failure is recorded too (and
 * returned); it does not count as the run having happened. */
int maint_run(struct repo *r, struct lock *lk, const struct maint_options *o,
              struct maint_result *res, struct err *e);

#endif
