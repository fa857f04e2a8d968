/* prune_int.h - what the two halves of prune share; internal to repo/prune.c and
 * repo/prune_finish.c, included by nothing else (prune.h is the module's contract).
 *
 * prune.c makes the plan: steps 1 to 4 of docs/MAINTENANCE.md (what is there, the walk, what to
 * do with each pack, the repack, the mark, who may still refer to marked packs, the re-check of
 * snapshots saved since the walk), and prune_run. prune_finish.c carries it out: step 5 (the new
 * index, the deletions, the marks rewritten, stale locks removed) and the outcome reported.
 *
 * Ownership: one struct pr lives on prune_run's stack for one run and owns every table it
 * points to (freed by pr_free in prune.c); the functions here borrow it. Thread-safety: a struct
 * pr belongs to prune_run's thread; the parallel loops (walk_parallel) that get it as their
 * context only read it, and change only the in-memory index (under repo_index_lock) and the
 * repack's store (thread-safe, store.h).
 */
#ifndef PV_REPO_PRUNE_INT_H
#define PV_REPO_PRUNE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/err.h"
#include "base/oid.h"
#include "repo/lock.h"
#include "repo/prune.h"
#include "repo/snapshot.h"
#include "repo/walk.h"

struct tslot;

/* Pack states. */
enum {
    F_DATA = 1 << 0,     /* present in data/ */
    F_MARKED = 1 << 1,   /* listed by a mark from an earlier prune */
    F_DELETE = 1 << 2,   /* no used blob: marked by this prune */
    F_REPACK = 1 << 3,   /* repacked by this prune */
    F_UNMARK = 1 << 4,   /* marked, but used */
    F_GONE = 1 << 5,     /* indexed, not in data/, not used: drop from the index */
    F_BLOCKED = 1 << 6,  /* a writer live at marking time may still refer to it */
    F_TREE = 1 << 7,     /* holds tree blobs */
    F_BLOBDATA = 1 << 8, /* holds data blobs */
    F_NOW = 1 << 9,      /* deleted by this prune */
    F_SMALL = 1 << 10,
};

struct pstat {
    uint64_t size;       /* from the listing */
    uint64_t used_bytes; /* stored bytes of used blobs attributed to it */
    uint64_t blob_bytes; /* stored bytes of all blobs attributed to it */
    uint32_t n_blobs, n_used;
    uint32_t fl;
};

/* A blob of a pack being repacked. */
struct rentry {
    struct oid id;
    uint32_t slot;
    uint32_t offset, stored_len, raw_len;
    uint8_t type;
    bool used;
};

struct pr {
    struct repo *r;
    const struct prune_options *o;
    struct prune_stats *st;
    const volatile int *stop;
    int64_t now;

    struct oid *i0; /* index files listed before the load */
    size_t n_i0;
    bool listed;       /* i0 is known: later passes load the same files */
    struct oid *i_new; /* index files loaded later (their content is in the index too) */
    size_t n_i_new;
    struct lock_mark *marks;
    size_t n_marks;
    struct oid *marked; /* union of the marks' packs, sorted */
    size_t n_marked;
    struct walk_pack *data; /* data/ listing, sorted */
    size_t n_data;

    /* Slots: pack numbers of the index's table (n_table of them, as of the walk), then the
     * packs no index lists (orphans). */
    struct pstat *ps;
    size_t n_table, n_slots;
    /* With several passes (max_memory), each reloads the index, whose pack numbers then differ:
     * slots are the first pass's numbers, kept here with a lookup sorted by ID. */
    struct walk_range range;
    uint32_t passes;
    uint64_t fixed, split; /* what every pass holds, and the data blobs' cost that passes split */
    /* The in-memory index is loaded again after the first load (passes, or a repack in batches):
     * the later steps load the index files again rather than trust it. */
    bool reloads;
    uint64_t repack_room; /* a batch of the repack's blobs may take this much (0: no bound) */
    struct tslot *table;  /* sorted by ID */
    struct oid *table_ids;
    uint32_t *num_slot;        /* this pass's pack number -> slot */
    struct walk_pack *orphans; /* sorted */
    size_t n_orphans;

    struct snapshot *snaps;
    size_t n_snaps;
    struct oid *walked; /* snapshots known not to use marked packs, sorted */
    size_t n_walked;
    struct walk_bits used;

    struct rentry *rep; /* blobs of repacked packs, by slot then offset */
    size_t n_rep;
    struct oid *holders; /* live writers */
    size_t n_holders;
    size_t *now_slots;      /* packs to delete now */
    uint8_t *pending;       /* per mark (old ones, then this prune's): writers it still waits for */
    struct lock_mark fresh; /* this prune's mark */
    bool fresh_saved;
    bool walk_problems;
    char problem_msg[ERR_MSG_MAX];
};

/* ---- small helpers (no failure but prune_canceled's, no allocation) ---- */

static inline int prune_cmp_oid(const void *a, const void *b)
{
    return oid_cmp(a, b);
}

static inline bool prune_has_oid(const struct oid *v, size_t n, const struct oid *id)
{
    return n && bsearch(id, v, n, sizeof *v, prune_cmp_oid);
}

static inline int prune_canceled(struct pr *p, struct err *e)
{
    if (p->stop && *p->stop) return err_set(e, ERR_CANCELED, "prune canceled");
    return 0;
}

static inline void prune_progress(struct pr *p, const char *phase, uint64_t done, uint64_t total)
{
    if (p->o->progress) p->o->progress(p->o->ctx, phase, done, total);
}

static inline void prune_report(struct pr *p, enum prune_action a, const struct oid *id,
                                const struct pstat *s)
{
    if (p->o->pack) p->o->pack(p->o->ctx, a, id, s->size, s->used_bytes);
}

/* The mark at i: old marks first, then this prune's own. */
static inline struct lock_mark *prune_mark_at(struct pr *p, size_t i)
{
    return i < p->n_marks ? &p->marks[i] : &p->fresh;
}

static inline size_t prune_n_all_marks(const struct pr *p)
{
    return p->n_marks + (p->fresh_saved ? 1 : 0);
}

static inline bool prune_candidate(const struct pstat *s)
{
    return (s->fl & F_DATA) && (s->fl & (F_MARKED | F_DELETE | F_REPACK)) &&
           !(s->fl & (F_UNMARK | F_BLOCKED));
}

/* ---- defined in prune.c ---- */

/* Records the memory prune holds now, plus `extra` bytes, in the peak (st->memory). */
void prune_note_memory(struct pr *p, uint64_t extra);
/* The slot of pack `id` (its figures: p->ps[slot]), or -1 when it has none (neither in the
 * first pass's index nor in data/). */
long prune_slot_of(const struct pr *p, const struct oid *id);
/* The ID of the pack in slot `s` (< p->n_slots); points into p's tables or the index. */
const struct oid *prune_slot_id(const struct pr *p, size_t s);
/* Adds to p->i_new the index files written since the load (by backups, or by the repack's
 * store); with `decode`, their content goes into the in-memory index too. Fails on a listing
 * or read error, or out of memory. */
int prune_find_new_index_files(struct pr *p, bool decode, struct err *e);

/* ---- defined in prune_finish.c (step 5) ---- */

/* Deletes the packs that may go now (or, dry run, reports what would go), writing first a new
 * index without them when the index changes or is due for compaction, then removing the index
 * files it replaces, rewriting the marks and removing stale locks. Fails (leaving a valid
 * repository: the marks stay, the next prune goes on) on a storage error or cancel. */
int prune_finish(struct pr *p, struct err *e);
/* Counts in st->packs_pending the packs the marks still hold, for a run that failed before
 * prune_finish counted them. Cannot fail. */
void prune_count_pending(struct pr *p);

#endif
