/* restorer.h - restore: recreate a snapshot's tree beneath a target directory.
 *
 * The restorer writes only beneath its target, however hostile the repository: every directory
 * is entered with openat(O_NOFOLLOW | O_DIRECTORY) from the target's descriptor, names that are
 * empty, ".", "..", or contain '/' or NUL are refused, duplicate names in one tree are refused,
 * and nothing the repository names is ever resolved through an existing symlink. Each refused
 * entry is reported and the rest of the restore goes on.
 * File contents are restored by a pool of threads; every blob is authenticated and its ID
 * verified before any byte of it is written. Holes are recreated as holes. Metadata (owner when
 * root, mode, xattrs, times) is applied after content, and to directories after their entries.
 */
#ifndef PV_REPO_RESTORER_H
#define PV_REPO_RESTORER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "repo/snapshot.h"

struct repo;

enum restore_overwrite {
    RESTORE_OVERWRITE_ALWAYS = 0, /* replace existing files */
    RESTORE_OVERWRITE_IF_CHANGED, /* replace when size or mtime differ */
    RESTORE_OVERWRITE_NEVER,      /* keep existing files */
};

struct restore_progress {
    uint64_t files_done, files_total;
    uint64_t bytes_done, bytes_total;
    uint64_t errors;
    double elapsed;
};

/* Entries restored: files (every path of a hard-link group counts), dirs (not the target
 * itself), links (symlinks), specials (FIFOs and device nodes). Sockets are never restored; each
 * is reported as a note, not an error. */
struct restore_summary {
    uint64_t files, dirs, links, specials; /* entries restored */
    uint64_t bytes;                        /* content bytes written (holes excluded) */
    uint64_t skipped;                      /* kept by the overwrite policy */
    uint64_t errors;                       /* entries refused or failed */
    double duration;
};

/* The target receives the restored directory's own metadata: snapshot.root on a full restore
 * (when present), the subpath directory's otherwise. Includes are paths relative to the
 * restored directory ("/a/b" and "a/b" alike; a full restore of a one-directory backup also
 * accepts them prefixed with the backed-up path); each component may be an fnmatch(3) pattern.
 * An included path brings everything below it and its ancestors (with their metadata). */
struct restore_options {
    const char *target;  /* created if missing */
    const char *subpath; /* restore only this directory of the snapshot ("/a/b"); NULL = all */
    const char *const *includes; /* restore only these paths (and what is below them); NULL = all */
    size_t n_includes;
    bool numeric_owner; /* use uid/gid, ignore user and group names */
    enum restore_overwrite overwrite;
    bool sparse;      /* also write all-zero data blocks as holes */
    unsigned threads; /* 0 = number of CPUs */
    /* Both callbacks run on the thread that called restore_snapshot, never concurrently:
     * progress about every 250 ms and once at the end; report once per refused or failed entry
     * (and for notes such as skipped sockets or an include that matched nothing), with the
     * entry's path in the snapshot, bytes a terminal would misread written as \xNN. */
    void (*progress)(void *ctx, const struct restore_progress *p);
    void (*report)(void *ctx, const char *path, const char *msg);
    void *ctx;
    const volatile int *cancel;
};

/* Restores a snapshot. Returns 0 when everything was restored, ERR_FAIL when the restore could
 * not run (message says why), and 0 with summary->errors > 0 when single entries failed. */
int restore_snapshot(struct repo *r, const struct snapshot *s, const struct restore_options *o,
                     struct restore_summary *summary, struct err *e);

#endif
