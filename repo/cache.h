/* cache.h - a local directory that keeps copies of immutable repository objects (index files,
 * snapshots, pack headers, tree packs...) so that listing snapshots or an incremental backup of
 * a remote repository does not download the same metadata again.
 *
 * Layout: "<dir>/CACHEDIR.TAG" (so backup tools skip the cache) and "<dir>/<repo id hex>/<object
 * name>", one file per object, written atomically like the local backend. The cache holds the
 * repository's bytes as they are (encrypted); nothing in it is trusted: callers authenticate what
 * cache_get returns like anything loaded from the backend, and cache_remove an object that fails.
 * Several threads and several processes may use one cache at once. Its size is not bounded:
 * callers drop entries for objects the repository no longer has (cache_list + cache_remove).
 */
#ifndef PV_REPO_CACHE_H
#define PV_REPO_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "backend/backend.h"

struct cache;

/* The cache directory: `dir` (the user's choice: --cache-dir or $PODVAULT_CACHE_DIR) when set,
 * else <xdg_cache_home>/podvault, else <home>/.cache/podvault; the caller passes the values of
 * those variables (NULL or "" when unset). *out is malloc'd. ERR_FAIL when all three are unset. */
int cache_default_dir(const char *dir, const char *xdg_cache_home, const char *home, char **out,
                      struct err *e);

/* Opens (creating it if needed) the cache of one repository under `dir`. */
int cache_open(const char *dir, const char *repo_id_hex, struct cache **out, struct err *e);
void cache_close(struct cache *c);

/* Appends the cached copy of `name` to `out`; ERR_NOT_FOUND when it is not cached. */
int cache_get(struct cache *c, const char *name, struct buf *out, struct err *e);
/* Appends bytes [offset, offset+len) of the cached copy of `name` (len > 0); ERR_NOT_FOUND when
 * it is not cached, ERR_FAIL when the copy is shorter. */
int cache_get_range(struct cache *c, const char *name, uint64_t offset, uint64_t len,
                    struct buf *out, struct err *e);
/* Stores a copy of `name` (replacing any older one). */
int cache_put(struct cache *c, const char *name, const void *data, size_t len, struct err *e);
/* Drops the copy of `name`; dropping what is not cached is not an error. */
int cache_remove(struct cache *c, const char *name, struct err *e);
/* Calls cb for every cached object whose name starts with `prefix`, as backend_list does. */
int cache_list(struct cache *c, const char *prefix, backend_list_cb cb, void *ctx, struct err *e);

#endif
