/* store.h - the blob write path: deduplicate, seal, pack, upload, index.
 *
 * A store is shared by all the threads of one backup (or one repack). store_add() deduplicates
 * against the repository's index and against blobs already accepted by this store (in flight),
 * so no blob is stored twice; it seals the blob outside any lock, appends it to the current pack,
 * and uploads the pack when it reaches the config's pack size. Every few packs or seconds (and
 * at store_flush) an index file for the uploaded packs is written (store_index_due), so an
 * interrupted backup's packs are found and reused by the next one. Nothing refers to a blob before
 * store_flush() returns.
 */
#ifndef PV_REPO_STORE_H
#define PV_REPO_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/oid.h"
#include "repo/crypt.h"

struct repo;
struct store;

struct store_stats {
    uint64_t blobs_new;    /* blobs added */
    uint64_t bytes_new;    /* their plain bytes */
    uint64_t bytes_stored; /* their sealed bytes */
    uint64_t packs;        /* packs uploaded */
};

/* The repository's index must be loaded. */
int store_new(struct repo *r, struct store **out, struct err *e);
/* Adds a blob whose ID the caller computed with crypt_blob_id(). *added (may be NULL) tells
 * whether it was new. Thread-safe. */
int store_add(struct store *s, enum blob_type type, const struct oid *id, const void *plain,
              size_t len, bool *added, struct err *e);
/* Whether the repository or this store already has the blob. Thread-safe. */
bool store_has(struct store *s, const struct oid *id);
/* Waits until every full pack is uploaded and in the repository's index (with the index file
 * then due, if any), leaving the packs being filled open: a caller that reloads the index between
 * additions (prune, repacking in batches) then does so while nothing else changes it. */
int store_wait(struct store *s, struct err *e);
/* Uploads the pending pack and writes an index file for everything not yet indexed. */
int store_flush(struct store *s, struct err *e);
void store_stats(struct store *s, struct store_stats *out);
/* Whether `packs` uploaded packs of `blobs` blobs, the oldest uploaded `age_ms` ago, should be
 * listed in an index file now: at 16 packs, 65,536 blobs, or 10 s, whichever comes first, so an
 * interrupted backup loses little of what it uploaded (the uploader threads ask it after each
 * upload, and every second while they wait). Pure: thread-safe. */
bool store_index_due(size_t packs, size_t blobs, long age_ms);
/* Frees the store. Blobs added since the last successful flush are not indexed. */
void store_free(struct store *s);

#endif
