/* walk.h - what prune and check share: the walk of every tree reachable from snapshots, which
 * marks each referenced blob in a bitmap over the positions of a sealed index (one bit a blob,
 * so millions of blobs cost a few hundred KiB on top of the index), tolerant snapshot loading,
 * and a small parallel loop for the many independent reads both do (trees, pack headers, packs).
 * Trees are loaded by several threads, since on S3 each is a request of its own.
 */
#ifndef PV_REPO_WALK_H
#define PV_REPO_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/oid.h"
#include "repo/index.h"
#include "repo/snapshot.h"

struct repo;

/* A bitmap; bits are set atomically, so several threads may share one. */
struct walk_bits {
    uint64_t *w;
    size_t n;
};

int walk_bits_init(struct walk_bits *b, size_t n, struct err *e);
void walk_bits_free(struct walk_bits *b);
static inline bool walk_bit(const struct walk_bits *b, size_t i)
{
    return (b->w[i / 64] >> (i % 64)) & 1;
}
/* Sets bit i; returns whether it was set before. */
bool walk_bit_set(struct walk_bits *b, size_t i);
size_t walk_bits_count(const struct walk_bits *b);

enum walk_problem {
    WALK_TREE_MISSING = 1, /* a tree blob the index does not know */
    WALK_TREE_BAD,         /* a tree that cannot be read, authenticated or decoded */
    WALK_DATA_MISSING,     /* a data blob the index does not know */
};

struct walk_root {
    struct oid snapshot; /* for reports */
    struct oid tree;
};

struct walk_range;

struct walk_options {
    unsigned threads; /* 0: 4 */
    /* A pass over one range of blob IDs (NULL: all): data blobs outside it are neither marked
     * nor reported, and tree problems are reported only in the first part (every pass walks the
     * same trees). */
    const struct walk_range *range;
    const volatile int *cancel;
    /* Each problem (may be NULL): the snapshot it was found from, the tree holding the
     * reference (the root itself for a missing root), the blob at fault, a message. Called
     * from the walking threads, one at a time. */
    void (*problem)(void *ctx, enum walk_problem kind, const struct oid *snapshot,
                    const struct oid *tree, const struct oid *blob, const char *msg);
    void *ctx;
};

struct walk_stats {
    uint64_t trees;    /* distinct trees read */
    uint64_t problems; /* problems reported */
};

/* Marks in `used` (sized to idx_blob_count) every blob reachable from the roots. The
 * repository's index must be sealed and not change during the walk. Problems do not stop the
 * walk; they are reported and counted. Fails only when the walk cannot go on (canceled:
 * ERR_CANCELED). */
int walk_trees(struct repo *r, const struct walk_root *roots, size_t n_roots,
               struct walk_bits *used, const struct walk_options *o, struct walk_stats *st,
               struct err *e);

/* Loads every snapshot (sorted by time, oldest first), skipping those removed while being
 * listed (a forget running beside). A snapshot that cannot be read is reported through `bad`
 * and skipped, or fails the call when `bad` is NULL. */
int walk_load_snapshots(struct repo *r, struct snapshot **out, size_t *n,
                        void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                        struct err *e);

/* Loads every index file into the repository's in-memory index, which is emptied first (so a
 * long-lived repository can load again), honouring the files' supersedes lists. *ids gets the
 * files whose content the index now holds: every file listed but those that failed (malloc'd,
 * sorted). A file that cannot be read is reported through `bad` and skipped, or fails the call
 * when `bad` is NULL. The index is sealed afterwards. */
int walk_load_index(struct repo *r, struct oid **ids, size_t *n_ids,
                    void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                    struct err *e);
/* walk_load_index leaving out the `n_skip` packs of `skip` (sorted). */
int walk_load_index_skip(struct repo *r, const struct oid *skip, size_t n_skip, struct oid **ids,
                         size_t *n_ids,
                         void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                         struct err *e);

/* ---- passes over ranges of blob IDs, to bound memory ----
 *
 * Blob IDs are keyed hashes, uniformly distributed, so `parts` ranges of the ID space (by the
 * first four ID bytes) hold about the same number of blobs each. Prune and check then do one
 * pass per range, loading every tree blob (the walk needs them all) but only the data blobs of
 * the range. */
struct walk_range {
    uint32_t part, parts; /* parts 0 or 1: every blob */
};

bool walk_in_range(const struct walk_range *rg, const struct oid *id);

/* walk_load_index_skip keeping only the tree blobs and the blobs in `rg` (NULL: all). Every
 * pack enters the pack table, whether or not some of its blobs are kept. With `only` (sorted),
 * only those of the listed files are loaded: later passes load what the first one did, so that
 * files written meanwhile (by backups) do not change what the passes see. */
int walk_load_index_range(struct repo *r, const struct oid *skip, size_t n_skip,
                          const struct walk_range *rg, const struct oid *only, size_t n_only,
                          struct oid **ids, size_t *n_ids,
                          void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                          struct err *e);

/* What the index files list, read before loading (an upper bound: a blob listed twice counts
 * twice). Files that cannot be read are skipped (the load reports them). */
struct walk_counts {
    uint64_t files, packs, trees, data;
};
int walk_count_index(struct repo *r, struct walk_counts *c, struct err *e);

/* Memory per item, as measured (docs/MAINTENANCE.md section 3): a blob in the in-memory index
 * while it loads (46 bytes sorted, plus the unsorted tail of up to 1/8 as many 56-byte entries
 * before each merge) with its bits, a pack in the index's pack table, a tree pending in the walk,
 * and a snapshot loaded. */
#define WALK_COST_BLOB 56
#define WALK_COST_PACK 48
#define WALK_COST_PENDING_TREE 36
#define WALK_COST_SNAPSHOT 512
/* The most passes: beyond this, a range would be too small to even out. */
#define WALK_MAX_PASSES 4096

/* Chooses the number of passes for a bound of `max_memory` bytes (0: no bound, one pass): the
 * fewest such that `fixed` (whatever every pass holds) plus a range's share of `split` (the
 * data blobs' cost, with some slack for uneven ranges) fits. Fails, naming the least bound that
 * would work, when even WALK_MAX_PASSES do not fit. `what` names the command. */
int walk_plan_passes(uint64_t max_memory, uint64_t fixed, uint64_t split, const char *what,
                     uint32_t *passes, struct err *e);
/* What each of `passes` passes holds, as walk_plan_passes counts it: `fixed`, plus `split` in
 * one pass, or a range's share of it with its slack in several. */
uint64_t walk_pass_need(uint64_t fixed, uint64_t split, uint32_t passes);

/* A pack in data/ and its size. */
struct walk_pack {
    struct oid id;
    uint64_t size;
};

/* Lists data/ (sorted by ID; malloc'd). */
int walk_list_packs(struct repo *r, struct walk_pack **out, size_t *n, struct err *e);
const struct walk_pack *walk_find_pack(const struct walk_pack *packs, size_t n,
                                       const struct oid *id);

/* The packs of an index file being written (prune's new index, repair's), each with its
 * entries, which the list owns. */
struct walk_ixlist {
    struct idx_file_pack *v;
    size_t n, cap;
    size_t blobs; /* entries in all */
};

/* Appends a pack; the list owns `ents` from now on (freed here on failure). */
int walk_ixlist_add(struct walk_ixlist *l, const struct oid *pack, struct pack_entry *ents,
                    size_t n, struct err *e);
/* Frees the entries and empties the list (keeping its room); walk_ixlist_free frees it all. */
void walk_ixlist_clear(struct walk_ixlist *l);
void walk_ixlist_free(struct walk_ixlist *l);

/* Runs fn(ctx, i) for i in 0..n-1 on `threads` threads (0: 4). Stops at the first failure,
 * which it returns, or at cancel (ERR_CANCELED). fn is called for each i at most once. */
int walk_parallel(size_t n, unsigned threads, int (*fn)(void *ctx, size_t i, struct err *e),
                  void *ctx, const volatile int *cancel, struct err *e);

#endif
