/* fuzz_blob.c - libFuzzer target for opening blobs and files with fixed keys. Arbitrary bytes
 * almost never authenticate, so the input is also sealed as an authentic blob plaintext
 * (flag || payload, as docs/FORMAT.md lays it out): that reaches the decompression and
 * length checks behind the authentication, which a hostile key holder could reach too.
 * The forged blob is also opened fed in two pieces, which must fail the same way.
 * Input: byte 0 selects type and kind (and where the pieces are cut), bytes 1..3 the claimed
 * plaintext length, then the bytes. */
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "repo/crypt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct crypt_keys keys;

static void init_keys(void)
{
    if (keys.master[0]) return;
    if (sodium_init() < 0) __builtin_trap();
    memset(keys.master, 0x17, sizeof keys.master);
    crypt_keys_derive(&keys);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_keys();
    if (size < 4) return 0;
    struct err e;
    struct oid id;
    memset(&id, 0x33, sizeof id);
    enum blob_type type = (data[0] & 1) ? BLOB_TREE : BLOB_DATA;
    size_t raw_len = (size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16;
    const uint8_t *p = data + 4;
    size_t n = size - 4;
    struct buf out = BUF_INIT, forged = BUF_INIT;

    if (crypt_blob_open(&keys, type, &id, p, n, raw_len, &out, &e) == 0) __builtin_trap();
    if (crypt_file_open(&keys, (data[0] & 2) ? "index" : "snapshot", p, n, &out, &e) == 0)
        __builtin_trap();
    if (out.len != 0) __builtin_trap();

    /* nonce || encrypt(p) under the right AD: p[0] is the flag, the rest the payload. */
    uint8_t ad[13 + 1 + 32];
    memcpy(ad, "podvault-blob", 13);
    ad[13] = (uint8_t)type;
    memcpy(ad + 14, id.b, 32);
    if (buf_reserve(&forged, n + CRYPT_FILE_OVERHEAD) != 0) __builtin_trap();
    memset(forged.data, 0, CRYPT_NONCE_LEN);
    unsigned long long clen;
    crypto_aead_xchacha20poly1305_ietf_encrypt(forged.data + CRYPT_NONCE_LEN, &clen, p, n, ad,
                                               sizeof ad, NULL, forged.data, keys.blob);
    forged.len = CRYPT_NONCE_LEN + (size_t)clen;
    /* the ID is fixed, so the content never hashes to it: every path must end in failure */
    int whole = crypt_blob_open(&keys, type, &id, forged.data, forged.len, raw_len, &out, &e);
    if (whole == 0 || out.len != 0) __builtin_trap();
    /* fed in two pieces, cut where byte 0 says: the same failure */
    struct crypt_opening o;
    size_t cut = (size_t)(data[0] >> 2) * forged.len / 64;
    if (crypt_blob_open_begin(&o, &keys, type, &id, forged.len, raw_len, &e) == 0) {
        crypt_blob_open_feed(&o, forged.data, cut);
        crypt_blob_open_feed(&o, forged.data + cut, forged.len - cut);
        if (crypt_blob_open_end(&o, &out, &e) != whole || out.len != 0) __builtin_trap();
    }
    buf_free(&forged);
    buf_free(&out);
    return 0;
}
