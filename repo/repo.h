/* repo.h - an open repository: its backend, keys, config and index, and object I/O.
 *
 * repo_open() unlocks a repository with a password (trying each key file) and reads its config.
 * The index is loaded on demand with repo_load_index(). Sealed files (config, index, snapshots)
 * are read and written through repo_save_file()/repo_load_file(); blobs through
 * repo_load_blob() and, for writing, store.h. A `struct repo` may be used by several threads
 * once opened and indexed (the index is then only read, or written under the store's lock).
 */
#ifndef PV_REPO_REPO_H
#define PV_REPO_REPO_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"
#include "chunker/chunker.h"
#include "backend/backend.h"
#include "repo/config.h"
#include "repo/crypt.h"
#include "repo/index.h"
#include "repo/keyfile.h"

struct repo;

struct repo_create_params {
    struct config config;      /* chunker sizes, pack size, compression; repo_id is generated */
    struct keyfile_params kdf; /* Argon2id cost for the first password */
};

/* How a repository is opened, as values (the program's edge fills it; nothing in repo/ reads
 * the environment). Strings are borrowed for the call. */
struct repo_open_opts {
    struct backend_opts backend; /* backend.h */
    /* For a repository that is not a local directory: the directory of the local cache
     * (repo/cache.h), or NULL for none (--no-cache). */
    const char *cache_dir;
};

/* The defaults: the backend's defaults, no cache. */
void repo_open_opts_default(struct repo_open_opts *o);

/* Creates a repository at `location` (which must not already hold one); `o` as for repo_open
 * (only its backend settings are used). */
int repo_create(const char *location, const char *password, const struct repo_create_params *p,
                const struct repo_open_opts *o, struct err *e);
/* Opens a repository with settings `o` (NULL: repo_open_opts_default). ERR_AUTH when no key
 * file accepts the password; ERR_NOT_FOUND when the location holds no repository. */
int repo_open(const char *location, const char *password, const struct repo_open_opts *o,
              struct repo **out, struct err *e);
void repo_close(struct repo *r);

/* The local cache (repo/cache.h) of index files, snapshots and tree packs. repo_open gives a
 * repository that is not a local directory one in its options' cache_dir (none when NULL); a
 * cache that cannot be opened is no error (the repository is then used without one).
 * repo_set_cache replaces that choice, before the repository is shared between threads: `dir`,
 * or NULL for no cache. Cached copies are authenticated on every use. */
int repo_set_cache(struct repo *r, const char *dir, struct err *e);
/* The cache directory in use, or NULL. */
const char *repo_cache_dir(const struct repo *r);
/* Blob reads go through segments of `bytes` of their pack, fetched by background threads and
 * shared by the reads of the blobs they hold (0: each blob is one read). repo_open turns it on
 * for a repository that is not a local directory. Set before the repository is shared between
 * threads. */
void repo_set_read_ahead(struct repo *r, size_t bytes);
/* How many threads read blobs at once (2 unless set; at most 48). Read-ahead keeps a segment
 * for each beside those being fetched, so that readers do not wait for each other's room (and
 * read directly what they cannot have). Thread-safe. */
void repo_set_readers(struct repo *r, unsigned n);
/* Whether blob reads go through read-ahead (see repo_set_read_ahead). */
bool repo_reads_ahead(const struct repo *r);
/* Read-ahead for a reader that knows what it will read (a restore): each repo_prefetch tells
 * that blob `id` will be read soon, in the order of the calls, so that its bytes are fetched
 * before they are asked for (no more than a fixed number of segments at once). Each call must be
 * matched by one repo_load_blob of that blob, or by one repo_prefetch_cancel when it will not be
 * read after all: what is announced and not read yet stays in memory. Both do nothing without
 * read-ahead; thread-safe. repo_prefetch_end stops the fetches, forgets what was announced and
 * frees the segments; call it when no other thread uses the repository (repo_close does). */
void repo_prefetch(struct repo *r, const struct oid *id);
void repo_prefetch_cancel(struct repo *r, const struct oid *id);
void repo_prefetch_end(struct repo *r);

/* Reads every index file into the in-memory index (once; later calls do nothing). Cached tree
 * packs that the index no longer lists are dropped. */
int repo_load_index(struct repo *r, struct err *e);

struct backend *repo_backend(struct repo *r);
const struct crypt_keys *repo_keys(const struct repo *r);
const struct config *repo_config(const struct repo *r);
const struct chunker *repo_chunker(const struct repo *r);
struct idx *repo_index(struct repo *r);
/* The index is shared by the threads using the repository: code that reads it while a store may
 * be writing (idx_lookup, idx_pack_id) holds the read side of this lock, code that adds to it the
 * write side. repo_load_blob and the store take it themselves. */
void repo_index_lock(struct repo *r, bool write);
void repo_index_unlock(struct repo *r);
/* The ID of the key file that opened the repository. */
const struct oid *repo_key_id(const struct repo *r);

/* Reads, authenticates and decrypts one blob, appending its plaintext to `out`.
 * ERR_NOT_FOUND when the index does not know it. With a cache, a blob stored in a tree pack is
 * read from the cached pack, the whole pack being fetched once. Thread-safe. */
int repo_load_blob(struct repo *r, enum blob_type type, const struct oid *id, struct buf *out,
                   struct err *e);

/* Seals `plain` as a file of `kind` and stores it as "<dir>/<random hex>"; the ID is returned. */
int repo_save_file(struct repo *r, const char *dir, const char *kind, const void *plain, size_t len,
                   struct oid *id, struct err *e);
/* Loads and opens "<dir>/<hex id>", appending the plaintext to `out`. */
int repo_load_file(struct repo *r, const char *dir, const char *kind, const struct oid *id,
                   struct buf *out, struct err *e);
/* Lists the IDs of the objects in "<dir>/" (malloc'd array). Names that are not IDs are
 * skipped. Cached copies of index files or snapshots that the listing no longer shows (removed
 * by another client) are dropped. */
int repo_list_ids(struct repo *r, const char *dir, struct oid **ids, size_t *n, struct err *e);
/* Removes "<dir>/<hex id>" (the pack for dir "data") from the repository and from the cache;
 * ERR_NOT_FOUND when the repository does not have it. For prune and forget. */
int repo_remove_file(struct repo *r, const char *dir, const struct oid *id, struct err *e);
struct pack_writer;
/* Uploads the pack that `w` finished as pack_id (of pack_len bytes), holding blobs of `type`
 * (the store keeps types in separate packs); a tree pack is kept in the cache too. */
int repo_save_pack(struct repo *r, const struct oid *pack_id, enum blob_type type,
                   const struct pack_writer *w, uint64_t pack_len, struct err *e);

/* Key management: add a password (new key file; its ID in *id), remove a key file (never the
 * last one, nor the one in use), list key files. */
int repo_key_add(struct repo *r, const char *password, const struct keyfile_params *p,
                 struct oid *id, struct err *e);
int repo_key_remove(struct repo *r, const struct oid *id, struct err *e);

#endif
