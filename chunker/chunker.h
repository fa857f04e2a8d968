/* chunker.h - content-defined chunking (FastCDC family) with a secret gear table.
 *
 * The chunker only finds cut points; it knows nothing of files or repositories. It is a gear
 * rolling hash (h = (h << 1) + gear[byte]) with normalized chunking: below the average size a
 * cut needs more zero bits (mask_small) than above it (mask_large), which pulls chunk sizes
 * towards the average. Bytes before the minimum size are never examined (cut-point skipping).
 *
 * The 256-entry gear table is derived from a per-repository secret key, so someone who sees
 * only chunk sizes cannot tell which content produced them. The object is immutable after
 * creation and may be shared by any number of threads.
 */
#ifndef PV_CHUNKER_H
#define PV_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Defaults (bytes). 1 MiB average keeps the index at ~1 M entries per TiB while still
 * deduplicating shifted and partially changed files; see docs/FORMAT.md for the measurement. */
#define CHUNKER_DEFAULT_MIN (256u * 1024)
#define CHUNKER_DEFAULT_AVG (1024u * 1024)
#define CHUNKER_DEFAULT_MAX (4096u * 1024)
/* Hard limits accepted from a repository config. */
#define CHUNKER_LIMIT_MIN (1u * 1024)
#define CHUNKER_LIMIT_MAX (64u * 1024 * 1024)

#define CHUNKER_KEY_LEN 32

struct chunker_params {
    uint32_t min_size; /* no cut before this many bytes */
    uint32_t avg_size; /* a power of two; the normalization point */
    uint32_t max_size; /* a cut is forced here */
};

struct chunker;

/* Checks params: CHUNKER_LIMIT_MIN <= min < avg < max <= CHUNKER_LIMIT_MAX, avg a power of two.
 * Returns 0, or ERR_FAIL with a message naming the bad value. */
int chunker_params_check(const struct chunker_params *p, struct err *e);

/* Creates a chunker for `p` whose gear table is derived from `key`. */
int chunker_new(const struct chunker_params *p, const uint8_t key[CHUNKER_KEY_LEN],
                struct chunker **out, struct err *e);
void chunker_free(struct chunker *c);
const struct chunker_params *chunker_params(const struct chunker *c);

/* Returns the length of the chunk that starts at data[0], in 1..len.
 * The caller must pass len >= max_size unless data ends at the end of the stream; the result is
 * then the same however much more than max_size is passed. len == 0 returns 0. */
size_t chunker_cut(const struct chunker *c, const uint8_t *data, size_t len);

#endif
