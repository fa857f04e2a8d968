/* prune.h - free the space no snapshot needs, safely beside running backups.
 *
 * A full prune walks every snapshot's trees (walk.h) to find the blobs in use, then:
 *  - packs with no used blob are marked for deletion (lock.h), as are packs no index lists
 *    (left by backups that died);
 *  - partly used packs are repacked (their used blobs copied into new packs through store.h)
 *    until the unused share of the repository is at most max_unused, and small packs are
 *    merged; the old packs are then marked too;
 *  - marked packs are deleted once no writer that was live after the mark remains, and no
 *    snapshot saved since the mark uses them (else they are unmarked); the rest stay marked for a
 *    later prune;
 *  - the index is rewritten without the deleted packs (one set of files that supersedes every
 *    file it replaces), and the replaced files are removed.
 * A quick prune (maintain --quick) skips the full walk: it only deletes packs marked earlier,
 * checking just the snapshots saved since they were marked, and compacts the index.
 * Every step leaves a repository that checks clean (at worst with unindexed, unused packs that
 * the next prune removes), so prune may be interrupted at any point and simply run again.
 * The caller holds a prune lock (lock.h), whose stop flag prune polls.
 *
 * Memory (bounded by max_memory, in passes; see docs/MAINTENANCE.md section 3): the index
 * (idx_memory, ~46 bytes a blob) plus one bit a blob for the walk, ~40 bytes a pack, and, while
 * repacking, ~64 bytes per blob being copied (with a bound, in batches of packs that fit beside
 * one pass); see docs/MAINTENANCE.md.
 */
#ifndef PV_REPO_PRUNE_H
#define PV_REPO_PRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/oid.h"

struct repo;
struct lock;

#define PRUNE_DEFAULT_MAX_UNUSED 0.05

enum prune_action {
    PRUNE_DELETE = 1, /* deleted now (or, dry run, would be) */
    PRUNE_REPACK,     /* its used blobs copied into new packs; then deleted or kept marked */
    PRUNE_PENDING,    /* marked, kept until the writers live at marking time have ended */
    PRUNE_UNMARK,     /* was marked, but a snapshot uses it: kept */
};

struct prune_options {
    /* Share of the repository (0..1) that may stay unused after prune: partly used packs are
     * repacked, those with most unused space first, until this holds. >= 1: never repack for
     * space. */
    double max_unused;
    /* Packs smaller than this (bytes) are merged when there are several (0: pack size / 4). */
    uint64_t small_pack;
    bool quick;         /* delete only what earlier prunes marked; no full walk, no repacking */
    bool dry_run;       /* change nothing; report what would happen */
    unsigned threads;   /* tree loads, pack reads and deletions at once (0: 4) */
    uint32_t stale_sec; /* lock staleness (0: LOCK_STALE_SEC) */
    /* Bound in bytes on the index and the tables (0: none). When they would not fit, the work is
     * done in passes over ranges of blob IDs (walk.h); when even one range does not fit, the
     * run fails at once, naming the least bound that would work. */
    uint64_t max_memory;
    /* Each pack acted on (may be NULL), for listings: size and used bytes. */
    void (*pack)(void *ctx, enum prune_action a, const struct oid *pack, uint64_t size,
                 uint64_t used);
    /* Progress (may be NULL): a phase name and a count within it. */
    void (*progress)(void *ctx, const char *phase, uint64_t done, uint64_t total);
    void *ctx;
};

struct prune_stats {
    uint64_t snapshots, trees;  /* snapshots walked, distinct trees read */
    uint64_t blobs, blobs_used; /* in the index */
    uint64_t packs, bytes;      /* packs in the repository and their bytes */
    uint64_t bytes_used;        /* stored bytes of used blobs */
    uint64_t packs_unindexed;   /* packs no index lists */
    uint64_t packs_marked;      /* newly marked for deletion */
    uint64_t packs_repacked, blobs_repacked, bytes_repacked; /* bytes: of blobs copied */
    uint64_t packs_deleted, bytes_deleted;
    uint64_t packs_pending;   /* left marked for a later prune */
    uint64_t packs_unmarked;  /* marked earlier but used after all */
    uint64_t waiting_writers; /* live writer locks that hold up deletions */
    uint64_t index_files_written, index_files_removed;
    uint64_t locks_removed;      /* stale locks */
    uint64_t bytes_freed;        /* deleted minus newly written (dry run: estimate) */
    uint64_t bytes_unused_after; /* unused bytes left (estimate) */
    uint64_t memory;             /* peak bytes of the index and prune's own tables */
    uint64_t passes;             /* over ranges of blob IDs (max_memory; the repack may add some) */
    uint64_t repack_batches;     /* the repacked packs are copied in this many (max_memory) */
};

void prune_options_default(struct prune_options *o);

/* Runs prune. `lk` is a prune lock the caller holds; its stop flag (cancel, or lock lost)
 * interrupts prune with ERR_CANCELED, leaving a valid repository. Fails, changing nothing,
 * when a snapshot refers to a blob the index lacks (run check, then repair). */
int prune_run(struct repo *r, struct lock *lk, const struct prune_options *o,
              struct prune_stats *st, struct err *e);

#endif
