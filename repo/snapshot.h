/* snapshot.h - snapshots: what was backed up, when, from where, and its root tree.
 *
 * A snapshot is JSON sealed as a file of kind "snapshot", stored at "snapshots/<hex>" under a
 * random ID. Fields are listed in docs/FORMAT.md. Selecting snapshots works as in restic: by ID,
 * by a unique prefix of an ID, or "latest", narrowed by host, path and tag filters.
 */
#ifndef PV_REPO_SNAPSHOT_H
#define PV_REPO_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"

struct repo;

struct snap_summary {
    uint64_t files_new, files_changed, files_unmodified;
    uint64_t dirs_new, dirs_changed, dirs_unmodified;
    uint64_t total_files;      /* files of any type in the snapshot */
    uint64_t total_bytes;      /* sum of file sizes */
    uint64_t bytes_read;       /* bytes read from files (not skipped as unchanged) */
    uint64_t blobs_new;        /* blobs this backup added to the repository */
    uint64_t bytes_new;        /* plain bytes of those blobs */
    uint64_t bytes_stored;     /* stored (compressed, sealed) bytes of those blobs */
    uint64_t errors;           /* entries that could not be read */
    uint64_t files_changed_during; /* files that changed while being read */
    double duration;           /* seconds */
};

/* Metadata of the backed-up root directory itself (single-directory backups only). */
struct snap_root {
    bool present;
    uint32_t mode, uid, gid;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
};

struct snapshot {
    struct oid id;      /* the object name; not part of the JSON */
    int64_t time_sec;   /* start of the backup */
    uint32_t time_nsec;
    struct oid tree;    /* root tree blob */
    bool has_parent;
    struct oid parent;
    char *hostname, *username; /* owned */
    char **paths;       /* owned, as given (absolute) */
    size_t n_paths;
    char **tags;        /* owned, sorted */
    size_t n_tags;
    char **labels;      /* owned "key=value" strings (pod, namespace, volume, pvc, ...) */
    size_t n_labels;
    struct snap_root root;
    bool incomplete;    /* some entries could not be read */
    struct snap_summary summary;
};

/* JSON plaintext. */
int snap_encode(const struct snapshot *s, struct buf *out, struct err *e);
int snap_decode(const void *json, size_t len, struct snapshot *s, struct err *e);
void snap_free(struct snapshot *s);
/* Deep copy. */
int snap_copy(struct snapshot *dst, const struct snapshot *src, struct err *e);

/* Stores a snapshot under a new random ID, which is written to s->id. */
int snap_save(struct repo *r, struct snapshot *s, struct err *e);
int snap_load(struct repo *r, const struct oid *id, struct snapshot *s, struct err *e);
/* Loads every snapshot, sorted by time (oldest first). Unreadable ones fail the call. */
int snap_list(struct repo *r, struct snapshot **out, size_t *n, struct err *e);
void snap_list_free(struct snapshot *list, size_t n);

struct snap_filter {
    const char *hostname;     /* NULL = any */
    const char *const *paths; /* all must match the snapshot's paths exactly; NULL = any */
    size_t n_paths;
    const char *const *tags;  /* snapshot must carry every one; NULL = any */
    size_t n_tags;
};

bool snap_matches(const struct snapshot *s, const struct snap_filter *f);
/* Resolves "latest" (newest matching the filter), a full ID, or a unique ID prefix. ERR_NOT_FOUND
 * when nothing matches; ERR_FAIL naming the candidates when a prefix is ambiguous. */
int snap_find(struct repo *r, const char *spec, const struct snap_filter *f, struct snapshot *out,
              struct err *e);

#endif
