/* chunker.c - FastCDC-style cut points with a keyed gear table; see chunker.h and
 * docs/FORMAT.md ("Chunking") for the exact algorithm. */
#include "chunker/chunker.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>

/* The rolling hash covers exactly the last 64 bytes: bit j of h depends on the last j + 1 bytes
 * only, so hashing this many bytes before the first candidate makes every cut decision a pure
 * function of the 64-byte window ending at it, wherever the chunk started. */
#define WINDOW 64

struct chunker {
    struct chunker_params p;
    uint64_t mask_small; /* more one-bits: cuts are rarer before avg_size */
    uint64_t mask_large; /* fewer one-bits: cuts are likelier after avg_size */
    uint64_t gear[256];
};

int chunker_params_check(const struct chunker_params *p, struct err *e)
{
    if (p->min_size < CHUNKER_LIMIT_MIN)
        return err_set(e, ERR_FAIL, "chunker min_size %u is below the limit %u", p->min_size,
                       CHUNKER_LIMIT_MIN);
    if (p->avg_size == 0 || (p->avg_size & (p->avg_size - 1)) != 0)
        return err_set(e, ERR_FAIL, "chunker avg_size %u is not a power of two", p->avg_size);
    if (p->avg_size <= p->min_size)
        return err_set(e, ERR_FAIL, "chunker avg_size %u must exceed min_size %u", p->avg_size,
                       p->min_size);
    if (p->max_size <= p->avg_size)
        return err_set(e, ERR_FAIL, "chunker max_size %u must exceed avg_size %u", p->max_size,
                       p->avg_size);
    if (p->max_size > CHUNKER_LIMIT_MAX)
        return err_set(e, ERR_FAIL, "chunker max_size %u is above the limit %u", p->max_size,
                       CHUNKER_LIMIT_MAX);
    return 0;
}

/* `bits` one-bits, every second bit from bit 63 down. The high bits see the longest window, and
 * the gaps keep a hit at one position from making a hit at the next one likely (h << 1 moves
 * every bit onto a position the mask ignores). bits <= 28 by the parameter limits. */
static uint64_t spread_mask(unsigned bits)
{
    uint64_t m = 0;
    for (unsigned k = 0; k < bits; k++)
        m |= (uint64_t)1 << (63 - 2 * k);
    return m;
}

static unsigned log2_u32(uint32_t v)
{
    unsigned n = 0;
    while (v >>= 1)
        n++;
    return n;
}

int chunker_new(const struct chunker_params *p, const uint8_t key[CHUNKER_KEY_LEN],
                struct chunker **out, struct err *e)
{
    *out = NULL;
    int rc = chunker_params_check(p, e);
    if (rc < 0) return rc;
    if (sodium_init() < 0) return err_set(e, ERR_FAIL, "chunker: libsodium failed to initialise");
    struct chunker *c = calloc(1, sizeof *c);
    if (!c) return err_set(e, ERR_FAIL, "chunker: out of memory");
    c->p = *p;
    unsigned bits = log2_u32(p->avg_size);
    c->mask_small = spread_mask(bits + 2);
    c->mask_large = spread_mask(bits - 2);

    /* The gear table is the first 2048 bytes of the ChaCha20 keystream (zero nonce, counter 0)
     * read as 256 little-endian 64-bit words. */
    uint8_t ks[256 * 8];
    static const uint8_t nonce[crypto_stream_chacha20_IETF_NONCEBYTES];
    crypto_stream_chacha20_ietf(ks, sizeof ks, nonce, key);
    for (int i = 0; i < 256; i++) {
        uint64_t g = 0;
        for (int j = 0; j < 8; j++)
            g |= (uint64_t)ks[8 * i + j] << (8 * j);
        c->gear[i] = g;
    }
    sodium_memzero(ks, sizeof ks);
    *out = c;
    return 0;
}

void chunker_free(struct chunker *c)
{
    if (!c) return;
    sodium_memzero(c, sizeof *c);
    free(c);
}

const struct chunker_params *chunker_params(const struct chunker *c)
{
    return &c->p;
}

/* Rolls the hash over data[*pos..end) and returns the chunk length (index + 1) of the first byte
 * after which (h & mask) == 0, or 0 when there is none (then *pos == end and *hp is updated).
 * Two bytes a step: h2 = 4h + (2 gear[b0] + gear[b1]) puts one shift-and-add on the loop-carried
 * chain per two bytes instead of two, and h1 is still tested before h2, so the results are those
 * of the byte-by-byte definition. */
static inline size_t scan(const uint64_t *gear, const uint8_t *data, size_t *pos, size_t end,
                          uint64_t mask, uint64_t *hp)
{
    uint64_t h = *hp;
    size_t i = *pos;
#define PV_GEAR_PAIR(k)                                                                            \
    do {                                                                                           \
        uint64_t g0 = gear[data[i + (k)]], g1 = gear[data[i + (k) + 1]];                           \
        uint64_t h1 = (h << 1) + g0;                                                               \
        h = (h << 2) + ((g0 << 1) + g1);                                                           \
        if (__builtin_expect(!(h1 & mask), 0)) return i + (k) + 1;                                 \
        if (__builtin_expect(!(h & mask), 0)) return i + (k) + 2;                                  \
    } while (0)
    for (; i + 4 <= end; i += 4) {
        PV_GEAR_PAIR(0);
        PV_GEAR_PAIR(2);
    }
#undef PV_GEAR_PAIR
    for (; i < end; i++) {
        h = (h << 1) + gear[data[i]];
        if (!(h & mask)) return i + 1;
    }
    *pos = i;
    *hp = h;
    return 0;
}

size_t chunker_cut(const struct chunker *c, const uint8_t *data, size_t len)
{
    size_t min = c->p.min_size;
    if (len <= min) return len;
    size_t end = len < c->p.max_size ? len : c->p.max_size;
    size_t normal = c->p.avg_size < end ? c->p.avg_size : end;

    uint64_t h = 0;
    for (size_t i = min - WINDOW; i < min; i++)
        h = (h << 1) + c->gear[data[i]];
    size_t pos = min, cut;
    if ((cut = scan(c->gear, data, &pos, normal, c->mask_small, &h))) return cut;
    if ((cut = scan(c->gear, data, &pos, end, c->mask_large, &h))) return cut;
    return end;
}
