/* heal.h - what lost or damaged data costs, and snapshots rewritten without it.
 *
 * A blob is lost when the index does not list it, when the pack the index names is not in the
 * repository, or when reading it back finds it missing or failing authentication (trees always;
 * data blobs only with read_data, which reads every data blob a snapshot uses). heal_scan walks
 * every snapshot's trees and reports each file whose content refers to a lost blob, and each
 * directory whose tree is lost. heal_repair_snapshots walks them the same way and, for each
 * snapshot with such damage, stores new trees that leave the damaged entries out (so every
 * remaining file restores whole) and saves a new snapshot, tagged "repaired", with the same
 * host, paths, time, labels and parent. The original snapshot is removed only with `forget`;
 * nothing else is ever removed. A snapshot whose root tree is lost cannot be rewritten: it is
 * reported and left as it is.
 *
 * Both need the index loaded; heal_repair_snapshots runs as a writer (the caller holds the
 * writer lock, like a backup). Trees found whole are remembered (64 bytes each, a hash set), so
 * trees shared by many snapshots are read once.
 */
#ifndef PV_REPO_HEAL_H
#define PV_REPO_HEAL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "base/oid.h"

struct repo;

/* One damaged entry of one snapshot. */
struct heal_damage {
    const struct oid *snapshot;
    const char *path; /* inside the snapshot, from "/", NUL-terminated (names may hold any byte) */
    bool dir;         /* a directory whose tree is lost: all of it is gone */
    uint64_t lost;    /* a file: blobs of its content lost */
    uint64_t blobs;   /* a file: blobs of its content */
};

struct heal_options {
    bool read_data; /* read and verify every data blob used; an unreadable one counts as lost */
    bool forget;    /* heal_repair_snapshots: remove each original once its rewrite is saved */
    bool dry_run;   /* heal_repair_snapshots: report, store nothing */
    const volatile int *cancel;
    /* Each damaged entry (may be NULL); called one at a time, from the calling thread. */
    void (*report)(void *ctx, const struct heal_damage *d);
    /* Each rewritten snapshot (may be NULL): its new ID (NULL with dry_run), and whether the
     * original was removed. */
    void (*rewritten)(void *ctx, const struct oid *old_id, const struct oid *new_id,
                      bool forgotten);
    void *ctx;
};

struct heal_stats {
    uint64_t snapshots;         /* walked */
    uint64_t snapshots_damaged; /* with at least one damaged entry */
    uint64_t files_lost;        /* damaged files, counted per snapshot */
    uint64_t dirs_lost;         /* directories whose tree is lost, counted per snapshot */
    uint64_t snapshots_written, snapshots_forgotten;
    uint64_t snapshots_unrepairable; /* root tree lost */
};

/* Reports the damage of every snapshot. Returns 0 when the walk could end (damage is counted in
 * *st), or an error when it could not (ERR_CANCELED, or a failure that is not a lost blob, such
 * as a network error, which is never taken for lost data). Not thread-safe on one repo with a
 * store running. */
int heal_scan(struct repo *r, const struct heal_options *o, struct heal_stats *st, struct err *e);

/* Rewrites every damaged snapshot as above. Returns 0 when all the walks and writes succeeded
 * (unrepairable snapshots are counted, not failed), else an error; snapshots already saved stay
 * saved, and an original is removed only after its rewrite is stored. */
int heal_repair_snapshots(struct repo *r, const struct heal_options *o, struct heal_stats *st,
                          struct err *e);

#endif
