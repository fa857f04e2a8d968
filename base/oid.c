/* oid.c - object identifiers; see oid.h. */
#include "base/oid.h"

#include <sodium.h>

char *oid_hex(const struct oid *id, char out[OID_HEX_LEN + 1])
{
    sodium_bin2hex(out, OID_HEX_LEN + 1, id->b, OID_LEN);
    return out;
}

bool oid_parse(const char *hex, struct oid *out)
{
    size_t bin_len = 0;
    const char *end = NULL;
    if (strlen(hex) != OID_HEX_LEN) return false;
    if (sodium_hex2bin(out->b, OID_LEN, hex, OID_HEX_LEN, NULL, &bin_len, &end) != 0) return false;
    return bin_len == OID_LEN && end == hex + OID_HEX_LEN;
}

void oid_random(struct oid *out)
{
    randombytes_buf(out->b, OID_LEN);
}

bool oid_is_zero(const struct oid *id)
{
    static const struct oid zero;
    return sodium_memcmp(id->b, zero.b, OID_LEN) == 0;
}
