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
    uint64_t total_files;          /* files of any type in the snapshot */
    uint64_t total_bytes;          /* sum of file sizes */
    uint64_t bytes_read;           /* bytes read from files (not skipped as unchanged) */
    uint64_t blobs_new;            /* blobs this backup added to the repository */
    uint64_t bytes_new;            /* plain bytes of those blobs */
    uint64_t bytes_stored;         /* stored (compressed, sealed) bytes of those blobs */
    uint64_t errors;               /* entries that could not be read */
    uint64_t files_changed_during; /* files that changed while being read */
    double duration;               /* seconds */
};

/* Metadata of the backed-up root directory itself (single-directory backups only). */
struct snap_root {
    bool present;
    uint32_t mode, uid, gid;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
};

struct snapshot {
    struct oid id;    /* the object name; not part of the JSON */
    int64_t time_sec; /* start of the backup */
    uint32_t time_nsec;
    struct oid tree; /* root tree blob */
    bool has_parent;
    struct oid parent;
    char *hostname, *username; /* owned */
    char **paths;              /* owned, as given (absolute) */
    size_t n_paths;
    char **tags; /* owned, sorted */
    size_t n_tags;
    char **labels; /* owned "key=value" strings (pod, namespace, volume, pvc, ...) */
    size_t n_labels;
    struct snap_root root;
    bool incomplete; /* some entries could not be read */
    struct snap_summary summary;
};

/* JSON plaintext, appended to `out`. Tags are written sorted and without duplicates, labels as
 * an object sorted by key (each must be "key=value" with a non-empty key free of '=', keys
 * unique). Strings must be valid UTF-8; the time must fall in years 0000..9999. */
int snap_encode(const struct snapshot *s, struct buf *out, struct err *e);
/* Parses strictly (a field of the wrong type or out of range is refused with a message naming
 * it; unknown fields are ignored). Zeroes *s first, id included; on failure *s stays empty. */
int snap_decode(const void *json, size_t len, struct snapshot *s, struct err *e);
/* Frees what the snapshot owns and zeroes it. */
void snap_free(struct snapshot *s);
/* Deep copy. On failure *dst is left empty. */
int snap_copy(struct snapshot *dst, const struct snapshot *src, struct err *e);

/* Time stamps as snapshots spell them: RFC 3339 in UTC with nine fraction digits,
 * "2026-11-28T14:39:51.123456789Z". snap_format_time fails (false) outside years 0000..9999 or
 * for nsec >= 10^9. snap_parse_time takes 0 to 9 fraction digits and only "Z" as zone. */
#define SNAP_TIME_LEN 32
bool snap_format_time(int64_t sec, uint32_t nsec, char out[SNAP_TIME_LEN]);
bool snap_parse_time(const char *s, int64_t *sec, uint32_t *nsec);

/* Stores a snapshot under a new random ID, which is written to s->id. */
int snap_save(struct repo *r, struct snapshot *s, struct err *e);
int snap_load(struct repo *r, const struct oid *id, struct snapshot *s, struct err *e);
/* Loads every snapshot, sorted by time (oldest first), then by ID. Unreadable ones fail the
 * call. */
int snap_list(struct repo *r, struct snapshot **out, size_t *n, struct err *e);
void snap_list_free(struct snapshot *list, size_t n);

struct snap_filter {
    const char *hostname;     /* NULL = any */
    const char *const *paths; /* the snapshot's set of paths must equal this set; none = any */
    size_t n_paths;
    const char *const *tags; /* snapshot must carry every one; none = any */
    size_t n_tags;
};

/* A NULL filter matches every snapshot. */
bool snap_matches(const struct snapshot *s, const struct snap_filter *f);
/* Resolves "latest" (newest matching the filter), a full ID, or a unique ID prefix (hex digits,
 * either case; the filter does not apply to IDs). ERR_NOT_FOUND when nothing matches; ERR_FAIL
 * naming the candidates when a prefix is ambiguous. */
int snap_find(struct repo *r, const char *spec, const struct snap_filter *f, struct snapshot *out,
              struct err *e);

#endif
