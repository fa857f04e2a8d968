/* fuzz_pack_header.c - libFuzzer target for pack_header_decode with fixed keys. Arbitrary bytes
 * almost never authenticate, so the input is mostly used as the header plaintext, sealed as an
 * authentic header: that exercises the parser and its checks behind the authentication.
 * Input: bytes 0..1 give the blob area length (LE), byte 2 selects the mode, the rest is the
 * header plaintext (or, in raw mode, the pack tail itself). */
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct crypt_keys keys;

static void init_keys(void)
{
    if (keys.master[0]) return;
    if (sodium_init() < 0) __builtin_trap();
    memset(keys.master, 0x29, sizeof keys.master);
    crypt_keys_derive(&keys);
}

/* Checks what a successful decode promises: entries back to back from 0, filling the blob area
 * (when the caller knows it; ~0 otherwise). */
static void check(const struct pack_entry *ents, size_t n, uint64_t area)
{
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].offset != off || ents[i].type > BLOB_TREE) __builtin_trap();
        off += ents[i].stored_len;
    }
    if ((area != ~0ull && off != area) || n > PACK_MAX_ENTRIES) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_keys();
    if (size < 3) return 0;
    struct oid pid;
    memset(pid.b, 0x51, sizeof pid.b);
    size_t area = (size_t)data[0] | (size_t)data[1] << 8;
    uint8_t mode = data[2];
    const uint8_t *p = data + 3;
    size_t n = size - 3;
    struct pack_entry *ents = NULL;
    size_t count = 0, need = 0;
    struct err e;

    if (mode & 1) {
        /* Raw tail, claimed to end a pack of n + area bytes. */
        if (pack_header_decode(&keys, &pid, p, n, n + area, &ents, &count, &need, &e) == 0)
            check(ents, count, ~0ull);
        free(ents);
        return 0;
    }

    struct buf pack = BUF_INIT;
    char hex[OID_HEX_LEN + 1], kind[100];
    snprintf(kind, sizeof kind, "pack-header/%s", oid_hex(&pid, hex));
    if (buf_reserve(&pack, area) < 0) return 0;
    if (area) memset(pack.data, 0, area);
    pack.len = area;
    if (crypt_file_seal(&keys, kind, p, n, &pack, &e) < 0) __builtin_trap();
    buf_put_u32(&pack, (uint32_t)(pack.len - area));
    /* Mode bit 1: hand over only part of the tail, as a first ranged read would. */
    size_t tail = (mode & 2) && pack.len > 64 ? 64 : pack.len;
    int rc = pack_header_decode(&keys, &pid, pack.data + pack.len - tail, tail, pack.len, &ents,
                                &count, &need, &e);
    if (rc == 0) check(ents, count, area);
    if (rc != 0 && tail < pack.len && need > tail) {
        free(ents);
        ents = NULL;
        rc = pack_header_decode(&keys, &pid, pack.data + pack.len - need, need, pack.len, &ents,
                                &count, NULL, &e);
        if (rc == 0) check(ents, count, area);
    }
    free(ents);
    buf_free(&pack);
    return 0;
}
