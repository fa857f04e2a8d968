/* index.h - where every blob is: the in-memory index, and index files.
 *
 * The in-memory index maps a blob ID to (pack, offset, stored length, plain length, type) in
 * 48 bytes per blob: a 32-byte ID and four 32-bit fields, the type folded into the pack
 * number's top bit. Pack IDs are kept once each in a pack table. Entries are kept in a sorted
 * array (binary search) plus a small unsorted tail that is merged in as it grows, so memory stays
 * at ~48 bytes a blob however many blobs there are. Not thread-safe: callers lock.
 *
 * An index file ("index/<hex>", sealed, kind "index") lists packs and their blobs, and the IDs of
 * older index files it supersedes (written by prune when it compacts the index).
 */
#ifndef PV_REPO_INDEX_H
#define PV_REPO_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"
#include "repo/pack.h"

struct idx;

struct idx_loc {
    uint32_t pack; /* number in this index's pack table; idx_pack_id() gives the ID */
    uint8_t type;  /* enum blob_type */
    uint32_t offset;
    uint32_t stored_len;
    uint32_t raw_len;
};

int idx_new(struct idx **out, struct err *e);
void idx_free(struct idx *x);
/* Empties the index (blobs and packs); the object stays valid. */
void idx_clear(struct idx *x);

/* Adds every entry of one pack. A blob already present keeps its first location. */
int idx_add_pack(struct idx *x, const struct oid *pack_id, const struct pack_entry *entries,
                 size_t n, struct err *e);
/* Looks a blob up; returns false when absent. */
bool idx_lookup(const struct idx *x, const struct oid *blob, struct idx_loc *loc);
const struct oid *idx_pack_id(const struct idx *x, uint32_t pack);
size_t idx_blob_count(const struct idx *x);
size_t idx_pack_count(const struct idx *x);
/* Bytes of memory the index holds (for measurement). */
size_t idx_memory(const struct idx *x);

/* Positions, for per-blob bitmaps (prune, check): once idx_seal() has run, and until the next
 * idx_add_pack or idx_forget_packs, every blob has a fixed position in 0..idx_blob_count()-1
 * (its rank in ID order, the order idx_foreach visits). */
int idx_seal(struct idx *x, struct err *e);
/* idx_lookup on a sealed index that also gives the blob's position. */
bool idx_lookup_pos(const struct idx *x, const struct oid *blob, struct idx_loc *loc, size_t *pos);
/* The blob at a position of a sealed index (pos < idx_blob_count()). */
void idx_at(const struct idx *x, size_t pos, struct oid *blob, struct idx_loc *loc);
/* The number of a pack in the pack table; false when the index never saw it. */
bool idx_pack_find(const struct idx *x, const struct oid *pack_id, uint32_t *pack);
/* Removes every blob whose location is one of the `n` packs (the pack table keeps its numbers),
 * so a writer treats them as absent and stores them again. *forgotten (may be NULL) counts
 * them. The index is sealed afterwards. */
int idx_forget_packs(struct idx *x, const struct oid *packs, size_t n, size_t *forgotten,
                     struct err *e);

/* Calls cb for every blob (in ID order); non-zero from cb stops and is returned. */
typedef int (*idx_foreach_cb)(void *ctx, const struct oid *blob, const struct idx_loc *loc);
int idx_foreach(struct idx *x, idx_foreach_cb cb, void *ctx);

/* Index file codec. One pack's list inside an index file: */
struct idx_file_pack {
    struct oid pack_id;
    struct pack_entry *entries; /* owned by whoever built the struct */
    size_t n;
};

/* Encodes the plaintext of an index file. */
int idx_file_encode(const struct idx_file_pack *packs, size_t n_packs, const struct oid *supersedes,
                    size_t n_supersedes, struct buf *out, struct err *e);

/* Decodes the plaintext of an index file and adds its packs to `x`. When `supersedes` is not
 * NULL it receives a malloc'd array of the superseded index IDs (*n_supersedes of them).
 * Hostile input fails with a message; it never over-allocates or reads out of bounds. */
int idx_file_decode(struct idx *x, const void *data, size_t len, struct oid **supersedes,
                    size_t *n_supersedes, struct err *e);

/* idx_file_decode that adds only the packs `keep` accepts (prune loads the packs marked for
 * deletion last, so a blob stored again elsewhere is placed in the copy that stays). */
typedef bool (*idx_pack_filter)(void *ctx, const struct oid *pack_id);
int idx_file_decode_filtered(struct idx *x, const void *data, size_t len, idx_pack_filter keep,
                             void *ctx, struct oid **supersedes, size_t *n_supersedes,
                             struct err *e);

/* idx_file_decode_filtered that also keeps only the blobs `keep_blob` accepts (NULL: all). A
 * pack accepted by `keep` enters the pack table even when none of its blobs is kept. Prune and
 * check load the index in passes over ranges of blob IDs this way, to bound their memory. */
typedef bool (*idx_blob_filter)(void *ctx, const struct pack_entry *blob);
int idx_file_decode_blobs(struct idx *x, const void *data, size_t len, idx_pack_filter keep,
                          idx_blob_filter keep_blob, void *ctx, struct oid **supersedes,
                          size_t *n_supersedes, struct err *e);

#endif
