/* crypt.h - the repository's keys and every use of cryptography on stored bytes.
 *
 * One random 32-byte master key per repository; purpose keys are derived from it with
 * libsodium's crypto_kdf (BLAKE2b), one context per purpose, so that no key serves two uses.
 *  - blob IDs: HMAC-SHA-256 of the plaintext, keyed BLAKE2b-256 in version 1 repositories (equal
 *    data is not linkable across repositories)
 *  - blobs: optional zstd, then XChaCha20-Poly1305 with a random nonce; the associated data binds
 *    the ciphertext to its blob type and ID, so a blob cannot be passed off as another
 *  - files (config, index, snapshots, pack headers): XChaCha20-Poly1305, associated data naming
 *    the kind of file, so a snapshot cannot be passed off as an index
 *  - the chunker's gear table key
 * The exact byte layouts are in docs/FORMAT.md.
 */
#ifndef PV_REPO_CRYPT_H
#define PV_REPO_CRYPT_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"

#define CRYPT_KEY_LEN 32
#define CRYPT_NONCE_LEN 24
#define CRYPT_TAG_LEN 16
/* Bytes a sealed blob adds to its (possibly compressed) payload: nonce, tag, one flag byte. */
#define CRYPT_BLOB_OVERHEAD (CRYPT_NONCE_LEN + CRYPT_TAG_LEN + 1)
/* Bytes a sealed file adds to its plaintext: nonce and tag. */
#define CRYPT_FILE_OVERHEAD (CRYPT_NONCE_LEN + CRYPT_TAG_LEN)

enum blob_type {
    BLOB_DATA = 0, /* a chunk of file content */
    BLOB_TREE = 1, /* an encoded directory (tree.h) */
};

/* How blob IDs are computed; the repository's config says which (docs/FORMAT.md). */
enum crypt_id_hash {
    CRYPT_ID_BLAKE2B = 1,     /* keyed BLAKE2b-256: format version 1 */
    CRYPT_ID_HMAC_SHA256 = 2, /* HMAC-SHA-256: version 2; 1.7x the speed with SHA extensions */
};

struct crypt_keys {
    uint8_t master[CRYPT_KEY_LEN];  /* the repository's master key, wrapped in key files */
    uint8_t blob_id[CRYPT_KEY_LEN]; /* keyed hash for blob IDs */
    uint8_t blob[CRYPT_KEY_LEN];    /* AEAD key for blobs */
    uint8_t file[CRYPT_KEY_LEN];    /* AEAD key for config, index, snapshot, pack headers */
    uint8_t gear[CRYPT_KEY_LEN];    /* chunker gear table */
    enum crypt_id_hash id_hash;     /* HMAC-SHA-256 once derived; a repository may set BLAKE2b */
};

/* Must be called once before anything else here (wraps sodium_init). Returns 0 or ERR_FAIL. */
int crypt_init(struct err *e);

/* Fills a fresh random master key and derives the purpose keys (blob IDs by HMAC-SHA-256). */
void crypt_keys_generate(struct crypt_keys *k);
/* Derives the purpose keys from k->master. */
void crypt_keys_derive(struct crypt_keys *k);
/* Overwrites every key with zeros. */
void crypt_keys_wipe(struct crypt_keys *k);

/* The blob ID of a plaintext: its keyed hash under k->blob_id, by k->id_hash. Fails only when
 * memory is out (OpenSSL's HMAC allocates its context once per thread); `e` may be NULL. */
int crypt_blob_id(const struct crypt_keys *k, const void *plain, size_t len, struct oid *out,
                  struct err *e);

/* Appends the stored form of a blob to `out`: compressed with zstd at `zstd_level` when that
 * saves at least 1/16 of the size (0 disables compression), then sealed. */
int crypt_blob_seal(const struct crypt_keys *k, enum blob_type type, const struct oid *id,
                    const void *plain, size_t len, int zstd_level, struct buf *out, struct err *e);

/* Appends the plaintext of a stored blob to `out`. Fails with ERR_AUTH when the bytes are not
 * authentic for (type, id), and with ERR_FAIL when the plaintext is not `raw_len` bytes long or
 * does not hash to `id`. Never allocates more than raw_len + a constant. */
int crypt_blob_open(const struct crypt_keys *k, enum blob_type type, const struct oid *id,
                    const void *stored, size_t stored_len, size_t raw_len, struct buf *out,
                    struct err *e);

/* A run of bytes in memory: one piece of a stored blob that lies in several buffers. */
struct crypt_span {
    const uint8_t *data;
    size_t len;
};

/* crypt_blob_open for a stored blob given as the concatenation of n_spans pieces (a blob read
 * across two segments of a pack), opened where it lies rather than copied together first. */
int crypt_blob_open_spans(const struct crypt_keys *k, enum blob_type type, const struct oid *id,
                          const struct crypt_span *spans, size_t n_spans, size_t raw_len,
                          struct buf *out, struct err *e);

/* Appends nonce || ciphertext || tag of `plain` to `out`, bound to the string `kind`. */
int crypt_file_seal(const struct crypt_keys *k, const char *kind, const void *plain, size_t len,
                    struct buf *out, struct err *e);
/* Appends the plaintext of a sealed file to `out`; ERR_AUTH when not authentic for `kind`. */
int crypt_file_open(const struct crypt_keys *k, const char *kind, const void *stored, size_t len,
                    struct buf *out, struct err *e);

#endif
