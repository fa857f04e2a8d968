/* backend.h - where repository objects live: one interface, several implementations.
 *
 * A backend stores immutable objects under slash-separated names ("config", "keys/<hex>",
 * "data/<2 hex>/<hex>", "index/<hex>", "snapshots/<hex>", "locks/<hex>"). The engine cannot tell
 * backends apart. Every implementation guarantees:
 *  - save is atomic: readers see the whole object or nothing, also after a crash or a failed
 *    upload half-way; saving a name that exists fails with ERR_EXISTS unless `overwrite`;
 *  - load of a missing object fails with ERR_NOT_FOUND, distinct from other failures;
 *  - every function may be called from several threads at once.
 * Implementations: backend_local.c (a directory), backend_s3.c (S3 and compatible stores).
 */
#ifndef PV_BACKEND_BACKEND_H
#define PV_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

struct backend;

/* Called once per object found by backend_list; return non-zero to stop listing (that value is
 * then returned by backend_list). */
typedef int (*backend_list_cb)(void *ctx, const char *name, uint64_t size);

/* The table each implementation fills. `self` is the backend itself. */
struct backend_ops {
    int (*save)(struct backend *self, const char *name, const void *data, size_t len,
                bool overwrite, struct err *e);
    int (*save_fd)(struct backend *self, const char *name, int fd, uint64_t len, bool overwrite,
                   struct err *e);
    /* NULL: temporary files go to $TMPDIR (or /tmp). */
    int (*tmp_file)(struct backend *self, int *fd, struct err *e);
    int (*load)(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                struct buf *out, struct err *e);
    int (*stat)(struct backend *self, const char *name, uint64_t *size, struct err *e);
    int (*list)(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                struct err *e);
    int (*remove)(struct backend *self, const char *name, struct err *e);
    void (*close)(struct backend *self);
};

struct backend {
    const struct backend_ops *ops;
    char *location;      /* as the user gave it, for messages; owned */
    unsigned save_slots; /* how many saves the engine should keep running at once (>= 1) */
    unsigned load_slots; /* how many loads read-ahead may keep running at once (0 means 1) */
};

/* Opens the backend named by a location: "s3:<url>/<bucket>[/<prefix>]" for S3 (see
 * backend_s3.h for options taken from the environment), anything else a local directory
 * (which need not exist yet when `create` is true). */
int backend_open(const char *location, bool create, struct backend **out, struct err *e);

/* Stores `data` under `name`, atomically. */
int backend_save(struct backend *b, const char *name, const void *data, size_t len, bool overwrite,
                 struct err *e);
/* Stores the first `len` bytes of the file open as `fd` under `name`, atomically, like
 * backend_save. The file is read with pread(2) (its offset is left alone) and never held in
 * memory whole; the caller keeps fd. */
int backend_save_fd(struct backend *b, const char *name, int fd, uint64_t len, bool overwrite,
                    struct err *e);
/* Opens a new, empty, anonymous temporary file for reading and writing (it vanishes when
 * closed) in which an object can be assembled before backend_save_fd. The backend places it
 * where saving it is cheapest: the local backend in the repository's own file system, where
 * saving links it into place without copying it. */
int backend_tmp_file(struct backend *b, int *fd, struct err *e);
/* backend_tmp_file's mechanics in a given directory, for implementations: O_TMPFILE, or a
 * unique file unlinked at once where the file system lacks it. */
int backend_tmp_file_in(const char *dir, int *fd, struct err *e);
/* Appends bytes [offset, offset+len) of the object to `out`; len 0 means "to the end".
 * Fails (ERR_FAIL) when the object is shorter than offset+len. */
int backend_load(struct backend *b, const char *name, uint64_t offset, uint64_t len,
                 struct buf *out, struct err *e);
int backend_stat(struct backend *b, const char *name, uint64_t *size, struct err *e);
/* Calls cb for every object whose name starts with `prefix` (e.g. "snapshots/"), in no
 * particular order. */
int backend_list(struct backend *b, const char *prefix, backend_list_cb cb, void *ctx,
                 struct err *e);
/* Removes an object; removing a missing object fails with ERR_NOT_FOUND. */
int backend_remove(struct backend *b, const char *name, struct err *e);
void backend_close(struct backend *b);

/* Constructors, used by backend_open. With `create`, the S3 backend creates a missing bucket. */
int backend_local_open(const char *path, bool create, struct backend **out, struct err *e);
int backend_s3_open(const char *location, bool create, struct backend **out, struct err *e);

#endif
