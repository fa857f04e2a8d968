/* fuzz_config.c - libFuzzer target for config_decode; whatever decodes must encode and decode
 * back to the same config. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "repo/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e;
    struct config c, d;
    if (config_decode(data, size, &c, &e) != 0) return 0;
    struct buf b = BUF_INIT;
    if (config_encode(&c, &b, &e) != 0) __builtin_trap();
    if (config_decode(b.data, b.len, &d, &e) != 0) __builtin_trap();
    if (c.version != d.version || !oid_eq(&c.repo_id, &d.repo_id) ||
        memcmp(&c.chunker, &d.chunker, sizeof c.chunker) != 0 || c.pack_size != d.pack_size ||
        c.zstd_level != d.zstd_level)
        __builtin_trap();
    buf_free(&b);
    return 0;
}
