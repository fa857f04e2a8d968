/* oid.h - 32-byte object identifiers (blob, tree, pack, snapshot, index and key IDs) and their
 * lowercase hexadecimal spelling, which is how they appear in object names and on screen. */
#ifndef PV_BASE_OID_H
#define PV_BASE_OID_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define OID_LEN 32
#define OID_HEX_LEN 64

struct oid {
    uint8_t b[OID_LEN];
};

/* Writes 64 hex digits and a NUL into out[OID_HEX_LEN + 1]; returns out. */
char *oid_hex(const struct oid *id, char out[OID_HEX_LEN + 1]);
/* Parses exactly 64 hex digits (either case). Returns false on anything else. */
bool oid_parse(const char *hex, struct oid *out);
/* Fills the identifier with random bytes (libsodium's CSPRNG). */
void oid_random(struct oid *out);
bool oid_is_zero(const struct oid *id);

static inline int oid_cmp(const struct oid *a, const struct oid *b)
{
    return memcmp(a->b, b->b, OID_LEN);
}

static inline bool oid_eq(const struct oid *a, const struct oid *b)
{
    return memcmp(a->b, b->b, OID_LEN) == 0;
}

#endif
