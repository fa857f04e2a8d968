/* scan.h - the backup's paths: the path buffer the walk builds entry by entry, exclude matching,
 * opening without updating access times, and the scanner, a thread of lowest priority that
 * counts the entries and bytes that lie ahead so that progress can show totals and an ETA.
 *
 * The scanner walks the same roots as the backup, by its own descriptors (at most 64 levels
 * deep, one descriptor a level), honouring the same excludes and --one-file-system. Its counts
 * are estimates: the tree may change while both walk it. It never reports a problem; what it
 * cannot read it does not count.
 */
#ifndef PV_REPO_SCAN_H
#define PV_REPO_SCAN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "base/err.h"
#include "repo/archiver.h"

/* A path being built, component by component; zeroed: empty (no text yet). Owns p (free(p)).
 * Used by one thread at a time. */
struct scan_path {
    char *p; /* NUL-terminated once set */
    size_t len, cap;
};

/* Sets the path to `s`. Fails only out of memory (ERR_FAIL), leaving the path as it was. */
int scan_path_set(struct scan_path *pb, const char *s, struct err *e);
/* Appends "/name" (no slash after a path that ends in one); *saved receives the length to
 * restore with scan_path_pop. Fails only out of memory, leaving the path as it was. */
int scan_path_push(struct scan_path *pb, const char *name, size_t *saved, struct err *e);
/* Cuts the path back to `saved` (from scan_path_push). */
void scan_path_pop(struct scan_path *pb, size_t saved);

/* Whether an entry is excluded by o's patterns: one with a '/' is matched against the full
 * path (FNM_PATHNAME), one without against the entry's name. Pure; any thread. */
bool scan_excluded(const struct arch_options *o, const char *path, const char *name);

/* openat(2) with O_NOATIME and O_CLOEXEC, again without O_NOATIME when it fails with EPERM (on
 * files the process does not own). Returns the descriptor (the caller closes it), or -1 with
 * errno set. Any thread. */
int scan_open_noatime(int dfd, const char *name, int flags);

/* A root of the backup: a path given, resolved (realpath) and lstat'ed. */
struct scan_root {
    char *path;       /* realpath, owned */
    const char *name; /* last component, inside path */
    struct stat st;
};

/* The scanner. files, bytes and done may be read (atomic_load) from any thread at any time;
 * the rest belongs to the thread that calls scan_start and scan_stop. */
struct scan {
    const struct arch_options *o;  /* excludes, one_file_system: borrowed */
    const struct scan_root *roots; /* borrowed until scan_stop */
    size_t n_roots;
    pthread_t thread;
    bool started;
    atomic_bool stop;                  /* asks the thread to end */
    atomic_bool done;                  /* the counts are final: the whole tree was counted */
    atomic_uint_fast64_t files, bytes; /* entries (every type) and regular files' bytes so far */
};

/* Makes an idle scanner with counts of 0. */
void scan_init(struct scan *sc);
/* Starts counting below `roots` on a thread of its own; `o` and `roots` must stay valid until
 * scan_stop. Returns whether the thread started: when it did not, the counts stay 0 and done
 * false, and the backup goes on without totals. Call once after scan_init. */
bool scan_start(struct scan *sc, const struct arch_options *o, const struct scan_root *roots,
                size_t n_roots);
/* Stops the thread, if one was started, and waits for it. The counts stay readable. */
void scan_stop(struct scan *sc);

#endif
