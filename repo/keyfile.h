/* keyfile.h - key files: the master key wrapped by one password each (Argon2id).
 *
 * A key file is JSON, stored unencrypted as keys/<id>: the Argon2id parameters and salt, and the
 * master key sealed with XChaCha20-Poly1305 under the key that Argon2id derives from the password.
 * Several key files may exist, one per password; any of them opens the repository.
 */
#ifndef PV_REPO_KEYFILE_H
#define PV_REPO_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "repo/crypt.h"

struct keyfile_params {
    uint64_t opslimit; /* Argon2id passes (crypto_pwhash opslimit) */
    uint64_t memlimit; /* Argon2id memory in bytes */
};

/* Default Argon2id cost for new key files: 40 passes over 7 MiB. OWASP lists 7 MiB with 5 passes
 * among its equivalent Argon2id settings (with 9 MiB x 4, 19 MiB x 2, 46 MiB x 1); we spend eight
 * times those passes, the time 2 passes over 64 MiB (libsodium's INTERACTIVE cost) take, in
 * passes rather than memory, because that memory is part of the peak RSS of every command that
 * opens the repository (the time a try takes and that RSS: bench/RESULTS.md "Key derivation
 * cost"). Key files made with another cost keep theirs (`init`/`key add --kdf-memory`). */
#define KEYFILE_DEFAULT_OPSLIMIT 40u
#define KEYFILE_DEFAULT_MEMLIMIT (7ull * 1024 * 1024)

/* The default cost above. */
void keyfile_params_default(struct keyfile_params *p);
/* libsodium's minimum cost (1 pass over 8 KiB), which `init --kdf-passes 1 --kdf-memory 8K`
 * gives too: for test suites that create many repositories and must stay fast. Key files made
 * with it are trivial to brute-force; nothing chooses it but an explicit call or option. */
void keyfile_params_min(struct keyfile_params *p);

struct keyfile_info {
    char created[40];   /* RFC 3339 UTC */
    char hostname[256]; /* where it was made */
    char username[256]; /* who made it */
    uint64_t opslimit;
    uint64_t memlimit;
};

/* Encodes a new key file for `master` under `password` into `out` (JSON). */
int keyfile_create(const uint8_t master[CRYPT_KEY_LEN], const char *password,
                   const struct keyfile_params *p, struct buf *out, struct err *e);

/* Decodes a key file and unwraps the master key. ERR_AUTH for a wrong password; ERR_FAIL with
 * a message for a malformed file (including parameters outside sane bounds, so a hostile file
 * cannot make us allocate gigabytes). */
int keyfile_unwrap(const void *json, size_t len, const char *password,
                   uint8_t master[CRYPT_KEY_LEN], struct err *e);

/* Reads the descriptive fields of a key file without a password. */
int keyfile_info(const void *json, size_t len, struct keyfile_info *out, struct err *e);

#endif
