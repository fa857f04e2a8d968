/* pack.h - pack files: many sealed blobs followed by an encrypted header that lists them.
 *
 * Layout of a pack (docs/FORMAT.md has the byte-level details):
 *     blob 0 | blob 1 | ... | blob n-1 | sealed header | header length (u32 LE)
 * Blobs are stored back to back from offset 0 in the order the header lists them. The header is
 * sealed as a file of kind "pack-header/<pack id hex>", so it authenticates which pack it
 * belongs to. Pack IDs are random; packs live at "data/<first 2 hex>/<hex>".
 */
#ifndef PV_REPO_PACK_H
#define PV_REPO_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"
#include "repo/crypt.h"

/* Upper bound on blobs one pack header may list, so a hostile header cannot demand an
 * enormous allocation. */
#define PACK_MAX_ENTRIES (1u << 20)

struct pack_entry {
    struct oid id;       /* blob ID */
    uint8_t type;        /* enum blob_type */
    uint32_t offset;     /* of the sealed blob in the pack */
    uint32_t stored_len; /* sealed length */
    uint32_t raw_len;    /* plaintext length */
};

/* Writes "data/xx/<hex>" for a pack ID into out (at least 72 bytes). */
void pack_object_name(const struct oid *pack_id, char out[80]);

/* Collects sealed blobs in memory until the caller finishes the pack. Not thread-safe. */
struct pack_writer;

int pack_writer_new(struct pack_writer **out, struct err *e);
void pack_writer_free(struct pack_writer *w);
/* Appends one sealed blob. */
int pack_writer_add(struct pack_writer *w, enum blob_type type, const struct oid *id,
                    const void *sealed, size_t sealed_len, uint32_t raw_len, struct err *e);
/* Bytes so far (blobs only), and blobs so far. */
uint64_t pack_writer_size(const struct pack_writer *w);
size_t pack_writer_count(const struct pack_writer *w);
/* Picks a random pack ID, appends the sealed header and trailer, and hands over the whole pack's
 * bytes in `out` (which is reset first) and its ID. The entries stay readable until reset. */
int pack_writer_finish(struct pack_writer *w, const struct crypt_keys *k, struct oid *pack_id,
                       struct buf *out, struct err *e);
const struct pack_entry *pack_writer_entries(const struct pack_writer *w, size_t *n);
/* Empties the writer for the next pack. */
void pack_writer_reset(struct pack_writer *w);

/* Decodes a pack header from the last `tail_len` bytes of a pack of `pack_size` bytes (the tail
 * must include the header and the 4-byte trailer). On success *entries (malloc'd, caller frees)
 * holds *n entries, each checked to lie inside the pack's blob area without overlap.
 * If the tail is too short, fails with ERR_FAIL and sets *need to the tail length required. */
int pack_header_decode(const struct crypt_keys *k, const struct oid *pack_id, const void *tail,
                       size_t tail_len, uint64_t pack_size, struct pack_entry **entries,
                       size_t *n, size_t *need, struct err *e);

struct backend;
/* Reads and decodes a stored pack's header (one or two ranged loads). */
int pack_read_header(struct backend *b, const struct crypt_keys *k, const struct oid *pack_id,
                     struct pack_entry **entries, size_t *n, struct err *e);

#endif
