/* fuzz_keyfile.c - libFuzzer target for key file decoding: keyfile_info on arbitrary bytes, and
 * keyfile_unwrap with a fixed password when the file asks for the cheapest Argon2id cost (the
 * bounds already refuse expensive ones, but even in-bounds costs would slow fuzzing to a crawl). */
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "repo/keyfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e;
    struct keyfile_info info;
    if (sodium_init() < 0) return 0;
    if (keyfile_info(data, size, &info, &e) != 0) return 0;
    if (info.opslimit > crypto_pwhash_argon2id_OPSLIMIT_MIN ||
        info.memlimit > crypto_pwhash_argon2id_MEMLIMIT_MIN)
        return 0;
    uint8_t master[CRYPT_KEY_LEN];
    keyfile_unwrap(data, size, "fuzz password", master, &e);
    return 0;
}
