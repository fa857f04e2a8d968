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

struct tcache;

/* A stored blob opened from its bytes as they come: begin, feed each piece in order, end. For a
 * blob that lies in two buffers (two segments of a pack), each released before the next is
 * awaited, and never copied together. The pieces are decrypted into the thread's scratch buffer
 * by its AEAD context: between begin and end, the thread seals and opens nothing else. The
 * fields are crypt.c's. */
struct crypt_opening {
    const struct crypt_keys *keys;
    enum blob_type type;
    struct oid id;
    size_t stored_len, raw_len;
    size_t fed; /* stored bytes fed so far */
    uint8_t nonce[CRYPT_NONCE_LEN];
    uint8_t tag[CRYPT_TAG_LEN];
    struct tcache *thread; /* this thread's AEAD context and scratch buffer */
    struct err err;        /* the first failure met while feeding (code ERR_OK: none) */
};

/* Starts opening a stored blob of stored_len bytes; fails as crypt_blob_open does when the
 * lengths or the type cannot be right, and then nothing more is to be done with `o`. */
int crypt_blob_open_begin(struct crypt_opening *o, const struct crypt_keys *k, enum blob_type type,
                          const struct oid *id, size_t stored_len, size_t raw_len, struct err *e);
/* Feeds the next n stored bytes. A failure (more bytes than stored_len, an OpenSSL failure) is
 * kept for crypt_blob_open_end to report. */
void crypt_blob_open_feed(struct crypt_opening *o, const void *data, size_t n);
/* Ends an opening begun, whatever happened since: appends the plaintext to `out` and returns 0
 * when every stored byte was fed and the blob is authentic and whole, else fails as
 * crypt_blob_open does. With `out` NULL, abandons the opening and returns 0. */
int crypt_blob_open_end(struct crypt_opening *o, struct buf *out, struct err *e);

/* Appends nonce || ciphertext || tag of `plain` to `out`, bound to the string `kind`. */
int crypt_file_seal(const struct crypt_keys *k, const char *kind, const void *plain, size_t len,
                    struct buf *out, struct err *e);
/* Appends the plaintext of a sealed file to `out`; ERR_AUTH when not authentic for `kind`. */
int crypt_file_open(const struct crypt_keys *k, const char *kind, const void *stored, size_t len,
                    struct buf *out, struct err *e);

#endif
