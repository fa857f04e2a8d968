/* prng.h - deterministic pseudo-random numbers for tests and benchmarks (SplitMix64).
 *
 * The same seed gives the same sequence on every machine, so a generated tree, index or repository
 * can be made again exactly. Not for anything secret: keys, nonces and IDs that must be
 * unpredictable come from libsodium (crypt.h, oid_random).
 */
#ifndef PV_BASE_PRNG_H
#define PV_BASE_PRNG_H

#include <stdint.h>
#include <string.h>

#include "base/oid.h"

/* The next number of the sequence whose state is *s (any value seeds it). The constants are
 * SplitMix64's: the golden-ratio increment, then two multiply-xorshift mixing rounds. */
static inline uint64_t prng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fills an ID with the next 32 bytes of the sequence. */
static inline void prng_oid(uint64_t *s, struct oid *id)
{
    for (int i = 0; i < OID_LEN; i += 8) {
        uint64_t v = prng_next(s);
        memcpy(id->b + i, &v, 8);
    }
}

#endif
