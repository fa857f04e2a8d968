/* buf.h - growable byte buffers for writing, and bounds-checked readers for decoding.
 *
 * Decoders of repository bytes (pack headers, index files, trees) read through a `struct rd`:
 * every read checks the remaining length, so hostile input can make a read fail but can never
 * make it run past the end. Integers are little-endian; "uvarint" is unsigned LEB128 (7 bits a
 * byte, low group first, at most 10 bytes, no overlong encodings accepted).
 */
#ifndef PV_BASE_BUF_H
#define PV_BASE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data; /* owned; NULL while empty and never grown */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated */
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Makes room for `extra` more bytes. Returns 0, or -1 when memory is out (buffer unchanged). */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_put_u8(struct buf *b, uint8_t v);
int buf_put_u32(struct buf *b, uint32_t v);
int buf_put_u64(struct buf *b, uint64_t v);
int buf_put_uvarint(struct buf *b, uint64_t v);
/* A uvarint length followed by that many bytes. */
int buf_put_bytes(struct buf *b, const void *data, size_t len);
/* Empties the buffer but keeps its memory. */
void buf_reset(struct buf *b);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);

/* A read cursor over bytes it does not own. Every rd_* function returns false, and leaves the
 * cursor unchanged, when the input is too short or malformed. */
struct rd {
    const uint8_t *p;
    size_t left;
};

static inline struct rd rd_make(const void *p, size_t len)
{
    struct rd r = {(const uint8_t *)p, len};
    return r;
}

bool rd_u8(struct rd *r, uint8_t *v);
bool rd_u32(struct rd *r, uint32_t *v);
bool rd_u64(struct rd *r, uint64_t *v);
bool rd_uvarint(struct rd *r, uint64_t *v);
/* Copies exactly `len` bytes out. */
bool rd_copy(struct rd *r, void *out, size_t len);
/* Points *out at the next `len` bytes without copying. */
bool rd_skip(struct rd *r, size_t len, const uint8_t **out);
/* Reads a uvarint length (at most `max`) and points at that many bytes. */
bool rd_bytes(struct rd *r, size_t max, const uint8_t **out, size_t *len);

#endif
