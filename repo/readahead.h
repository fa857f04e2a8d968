/* readahead.h - read-ahead of blobs from a remote repository: segments of packs fetched by
 * background threads ahead of the readers, within a fixed memory budget.
 *
 * The repository (repo/repo.c) owns one `struct ra` and routes to it the blob reads of a
 * repository whose reads go through segments (repo_set_read_ahead); repo/readahead.c explains
 * the policy. An ra uses only the repository's public interface (repo/repo.h): its backend, its
 * keys, and its index under repo_index_lock.
 *
 * Thread-safety: ra_prefetch, ra_prefetch_cancel, ra_open_blob and ra_set_readers may be called
 * from any number of threads at once. ra_new, ra_set_window, ra_end and ra_free need that no
 * other thread uses the ra. */
#ifndef PV_REPO_READAHEAD_H
#define PV_REPO_READAHEAD_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"
#include "repo/index.h"

struct repo;
struct ra;

/* The segment size a remote repository reads through unless told (4 MiB; see readahead.c). */
#define RA_WINDOW_BYTES (4u << 20)
/* Most threads that read at once (ra_set_readers). */
#define RA_READERS_MAX 48

/* A read-ahead for `repo` (not owned; it must outlive the ra), off (window 0) and with no thread
 * started: fetchers start at the first planned segment. The caller owns *out (ra_free).
 * Errors: ERR_FAIL (out of memory). */
int ra_new(struct repo *repo, struct ra **out, struct err *e);
/* Stops the fetchers and frees everything; NULL is fine. */
void ra_free(struct ra *ra);

/* Sets the segment size (0: off), after ra_end (segments of the old size go). */
void ra_set_window(struct ra *ra, size_t bytes);
/* The segment size; 0 when read-ahead is off. */
size_t ra_window(const struct ra *ra);
/* How many threads read at once (clamped to 1..RA_READERS_MAX): the budget of segments with
 * bytes is one per fetcher and one per reader. */
void ra_set_readers(struct ra *ra, unsigned n);

/* Announces a read of the blob at `loc` in pack `pack`: its segments are planned (in the order
 * of the calls) and kept until read. Each call is matched by one ra_open_blob of that blob or
 * one ra_prefetch_cancel. Needs a window (ra_window() > 0). No errors: what cannot be planned
 * is read directly later. */
void ra_prefetch(struct ra *ra, const struct oid *pack, const struct idx_loc *loc);
/* The announced read will not happen: its segments may go. */
void ra_prefetch_cancel(struct ra *ra, const struct oid *pack, const struct idx_loc *loc);
/* Stops the fetcher threads, forgets what was announced and frees the segments. */
void ra_end(struct ra *ra);

/* Opens blob `id` at `loc` in pack `pack` (object `name`) through the segments, appending its
 * plaintext to `out` (owned by the caller); what no segment holds is read directly. Needs a
 * window. Errors: those of backend_load and crypt_blob_open (ERR_AUTH: not authentic). */
int ra_open_blob(struct ra *ra, const char *name, const struct oid *pack, const struct idx_loc *loc,
                 const struct oid *id, struct buf *out, struct err *e);

#endif
