/* meta.h - an entry's metadata as the backup records it in its tree node: the stat(2) fields,
 * owner and group names, and extended attributes.
 *
 * Thread-safety: none of these keeps state of its own beyond the caches passed in; a cache is
 * used by one thread at a time (the archiver's walker). */
#ifndef PV_REPO_META_H
#define PV_REPO_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "base/err.h"
#include "repo/tree.h"

struct meta_idname;
/* User or group names by id, each looked up once. Zeroed: empty. Owns its names. */
struct meta_idcache {
    struct meta_idname *v;
    size_t n, cap;
};

/* Frees the names and empties the cache. */
void meta_idcache_free(struct meta_idcache *c);
/* The user (or, when `group`, group) name of `id`, looked up once per id: *out points into the
 * cache (valid until meta_idcache_free), NULL for an unknown id or a name longer than a tree can
 * hold. Errors: ERR_FAIL (out of memory). */
int meta_idcache_get(struct meta_idcache *c, uint32_t id, bool group, const char **out,
                     struct err *e);

/* Copies the three times of `st` into the node. */
void meta_set_times(struct tree_node *n, const struct stat *st);
/* Fills the fresh node `n` (overwritten; the caller then owns it, tree_node_free) with `name` and
 * every field that comes from stat(2), owner names through the caches. Errors: ERR_FAIL (out of
 * memory; what n holds is still freed by tree_node_free). */
int meta_node_init(struct meta_idcache *users, struct meta_idcache *groups, struct tree_node *n,
                   const char *name, const struct stat *st, struct err *e);

/* A problem with one entry's metadata, for the caller to report and count. */
typedef void (*meta_problem_fn)(void *ctx, const char *what, int errnum);
/* Records in n the extended attributes of every namespace this process can read (user.*, and
 * security.*, trusted.*, system.posix_acl_* where permitted), sorted by name, through the open
 * `fd`, or when fd < 0 through `lpath` without following a final symlink. An attribute that
 * cannot be read goes to `problem` (with `ctx`) and is left out. Errors: ERR_FAIL (out of
 * memory) only. */
int meta_xattrs(struct tree_node *n, int fd, const char *lpath, meta_problem_fn problem, void *ctx,
                struct err *e);
/* Copies pn's extended attributes into n (which has none). Errors: ERR_FAIL (out of memory; n
 * owns what was copied, for tree_node_free). */
int meta_copy_xattrs(struct tree_node *n, const struct tree_node *pn, struct err *e);

#endif
