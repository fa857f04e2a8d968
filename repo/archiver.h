/* archiver.h - backup: walk directories, read and chunk files, store blobs and trees, and write
 * a snapshot.
 *
 * The walk and file reading run on the calling thread; chunks are hashed, deduplicated,
 * compressed and sealed by a pool of worker threads through store.h, so both cores stay busy.
 * Files are read in bounded windows, never whole. With a parent snapshot, a file whose type,
 * size, mtime, ctime and inode are unchanged reuses the parent's content list without reading,
 * and a directory whose encoded tree is unchanged reuses the parent's tree blob.
 * Problems with single entries (vanished, unreadable, changed while read) are reported through
 * the callback, counted in the summary, and do not stop the backup.
 */
#ifndef PV_REPO_ARCHIVER_H
#define PV_REPO_ARCHIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/oid.h"
#include "repo/snapshot.h"

struct repo;

struct arch_progress {
    uint64_t files_done;  /* entries finished */
    uint64_t bytes_done;  /* file bytes finished (read or skipped as unchanged) */
    uint64_t files_total; /* from a scan that runs ahead; grows until scan_done */
    uint64_t bytes_total;
    bool scan_done;
    uint64_t bytes_new; /* plain bytes of new blobs so far */
    uint64_t errors;
    double elapsed; /* seconds */
};

struct arch_options {
    const char *hostname; /* NULL: gethostname() */
    const char *const *tags;
    size_t n_tags;
    const char *const *labels; /* "key=value" strings recorded in the snapshot */
    size_t n_labels;
    const struct oid *parent;    /* explicit parent; NULL: latest snapshot of same host + paths */
    bool no_parent;              /* read every file (no incremental) */
    const char *const *excludes; /* fnmatch(3) patterns; a pattern with '/' matches the full
                                    path, otherwise the basename */
    size_t n_excludes;
    bool one_file_system; /* do not cross mount points below each path */
    unsigned threads;     /* worker threads; 0 = number of CPUs */
    /* Called about every 250 ms from the walking thread (may be NULL). */
    void (*progress)(void *ctx, const struct arch_progress *p);
    /* Called for each problem with an entry (may be NULL): path and a message. */
    void (*report)(void *ctx, const char *path, const char *msg);
    void *ctx;
    /* Polled often; when it becomes non-zero the backup stops with ERR_CANCELED and no
     * snapshot is written (blobs already uploaded are indexed and reused next time). */
    const volatile int *cancel;
};

/* Backs up `paths` (absolute or relative; stored absolute). A single directory path becomes the
 * snapshot's root tree (its own metadata in snapshot.root); several paths become entries of the
 * root tree named by their last component (which must differ). On success the snapshot has been
 * saved and is returned in *out (caller frees with snap_free); out->incomplete tells whether
 * some entries could not be read. */
int arch_backup(struct repo *r, const char *const *paths, size_t n_paths,
                const struct arch_options *o, struct snapshot *out, struct err *e);

#endif
