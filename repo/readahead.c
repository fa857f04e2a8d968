/* readahead.c - read-ahead of blobs from a remote repository; see readahead.h.
 *
 * Reading blobs one request each would make a restore from S3 cost one round trip per small
 * file, and reading them only when asked leaves the server idle while the blobs are decoded and
 * written. So a remote repository reads blobs through segments: pack bytes [k x W, (k+1) x W)
 * for a window size W (RA_WINDOW_BYTES), fetched by a few background threads (the backend's
 * load_slots, PODVAULT_S3_DOWNLOADS for S3) and shared by every read of the blobs they hold. A
 * reader that knows what comes next (a restore, which knows the jobs it queues) announces each
 * blob with repo_prefetch: the segments it lies in are planned, and the fetchers fetch planned
 * segments oldest first. A reader waits for the segments of its blob (asking for them first, or
 * planning them when nobody did) and opens the blob where it lies: a blob across two segments is
 * decrypted piece by piece, each segment released before the next is awaited (copying such blobs
 * together cost a restore 470 MB of copies into freshly faulted pages and a tenth of its CPU;
 * pinning both at once left a reader without room for the second three times as often). The
 * first read of a segment plans the next one of its pack, since blobs written together are read
 * together. Memory is a fixed budget: one segment per fetcher, plus one per thread that reads
 * (ra_set_readers, from repo_set_readers), hold bytes at once, in buffers allocated once. A segment
 * with announced reads not done yet is never dropped for another; when the budget is full of those,
 * the fetchers wait, and a reader that cannot have its segment reads its blob directly instead of
 * waiting (so no wait depends on a read that may never come). A fetch that fails only drops its
 * segment: its readers read directly, with the backend's usual retries and errors. A local
 * repository reads each blob when asked.
 *
 * Invariants (asserted): a segment is free (no bytes, no reads), planned (no bytes), loading (its
 * bytes belong to the fetcher), ready (exactly `want` bytes) or failed (no bytes); only a ready
 * segment is read in place (readers > 0); n_filled counts the loading and ready ones; win_lock is
 * held wherever segments or counters change.
 */
#include "repo/readahead.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/held.h"
#include "repo/crypt.h"
#include "repo/pack.h"
#include "repo/repo.h"

/* The segments planned at once (a planned segment holds no bytes yet); most fetcher threads;
 * threads reading at once unless told (ra_set_readers): each may hold a segment while it reads,
 * so the budget of segments with bytes is one per fetcher and one per reader. Segments of 4 MiB
 * (RA_WINDOW_BYTES), aligned: Ceph RGW keeps an object in 4 MiB pieces, and a segment across two
 * of them cost it two reads (3 MiB segments took the server a tenth more CPU for the same
 * restore). */
#define RA_SEGMENTS 128
#define RA_FETCHERS_MAX 16
#define RA_READERS_DEFAULT 2

enum win_state {
    WIN_FREE,
    WIN_PLANNED, /* to be fetched */
    WIN_LOADING, /* `data` belongs to the fetcher */
    WIN_READY,
    WIN_FAILED, /* the fetch failed: its readers read directly */
};

/* Segment `seg` of a pack: bytes [off, off + want), off = seg x the window size. */
struct window {
    enum win_state state;
    struct oid pack;
    uint32_t pack_no;
    uint64_t seg, off, want;
    struct buf data;  /* exactly `want` bytes once ready */
    uint32_t pending; /* reads announced (ra_prefetch) and not done: not dropped meanwhile */
    unsigned readers; /* blobs being opened in place: not dropped meanwhile */
    uint64_t seq;     /* planning order; 0: a reader waits for it */
    bool stuck;       /* a reader waits for it but there is no room: readers read directly */
    bool fresh;       /* fetched and not read from yet */
    bool passed;      /* a read began in the next segment of its pack since */
    uint64_t used;    /* for least-recently-used replacement */
};

/* win_lock guards the segments, the counters and pack_end; readers wait for win_ready (a fetch
 * ended), fetchers for fetch_work (a segment was planned, or room made). */
struct ra {
    struct repo *repo;   /* not owned */
    size_t window_bytes; /* 0: off */
    pthread_mutex_t win_lock;
    pthread_cond_t win_ready, fetch_work;
    struct window win[RA_SEGMENTS];
    unsigned n_filled, win_budget; /* segments loading or ready, and how many may be */
    unsigned readers;              /* threads reading at once (ra_set_readers) */
    /* Buffers of the window size that no segment holds, kept for the next fetch: allocated once,
     * so that memory stays budget x window size however the allocator would place them. */
    uint8_t *spare[RA_FETCHERS_MAX + RA_READERS_MAX];
    unsigned n_spare;
    uint64_t win_tick, plan_seq;
    pthread_t fetchers[RA_FETCHERS_MAX];
    unsigned n_fetchers;    /* started when first needed */
    unsigned fetchers_idle; /* waiting for fetch_work */
    bool fetch_stop;
    /* By pack number: where the last blob the index knows in that pack ends, so that a window
     * never asks for bytes past a pack's end. Built when first needed. */
    uint64_t *pack_end;
    size_t n_pack_end;
};

/* The invariants of one segment's state (see the top of the file); O(1). */
static void win_check(const struct window *w)
{
    assert(w->readers == 0 || w->state == WIN_READY);
    assert(w->state == WIN_LOADING || w->state == WIN_READY || w->data.data == NULL);
    assert(w->state != WIN_READY || w->data.len == w->want);
    assert(w->state != WIN_FREE || (w->pending == 0 && w->readers == 0));
    (void)w;
}

static int note_pack_end(void *ctx, const struct oid *blob, const struct idx_loc *loc)
{
    struct ra *ra = ctx;
    uint64_t end = (uint64_t)loc->offset + loc->stored_len;
    if (loc->pack < ra->n_pack_end && end > ra->pack_end[loc->pack]) ra->pack_end[loc->pack] = end;
    return 0;
}

/* Where the blob area of pack number `pack` ends, as far as the index knows; 0 when that cannot
 * be told (out of memory). Caller holds win_lock. */
static uint64_t pack_end(struct ra *ra, uint32_t pack)
{
    PV_ASSERT_HELD(&ra->win_lock);
    if (pack >= ra->n_pack_end) { /* packs were added since the table was built */
        free(ra->pack_end);
        /* idx_foreach may reorganize the index: the write side. */
        repo_index_lock(ra->repo, true);
        struct idx *idx = repo_index(ra->repo);
        ra->n_pack_end = idx_pack_count(idx);
        ra->pack_end = calloc(ra->n_pack_end ? ra->n_pack_end : 1, sizeof *ra->pack_end);
        if (!ra->pack_end)
            ra->n_pack_end = 0;
        else if (idx_foreach(idx, note_pack_end, ra) != 0)
            memset(ra->pack_end, 0, ra->n_pack_end * sizeof *ra->pack_end);
        repo_index_unlock(ra->repo);
    }
    return pack < ra->n_pack_end ? ra->pack_end[pack] : 0;
}

/* Segment k of `pack` in any state but free, or NULL. */
static struct window *seg_find(struct ra *ra, const struct oid *pack, uint64_t k)
{
    PV_ASSERT_HELD(&ra->win_lock);
    for (size_t i = 0; i < RA_SEGMENTS; i++) {
        struct window *w = &ra->win[i];
        if (w->state != WIN_FREE && w->seg == k && oid_eq(&w->pack, pack)) return w;
    }
    return NULL;
}

/* Keeps a buffer of the window size for the next fetch. */
static void spare_put(struct ra *ra, uint8_t *p)
{
    PV_ASSERT_HELD(&ra->win_lock);
    assert(ra->n_spare <= sizeof ra->spare / sizeof *ra->spare);
    if (p && ra->n_spare < sizeof ra->spare / sizeof *ra->spare)
        ra->spare[ra->n_spare++] = p;
    else
        free(p);
}

/* Never called on a loading segment: its bytes belong to the fetcher. */
static void seg_drop(struct ra *ra, struct window *w)
{
    PV_ASSERT_HELD(&ra->win_lock);
    win_check(w);
    assert(w->state != WIN_LOADING && w->readers == 0);
    if (w->state == WIN_READY) ra->n_filled--;
    spare_put(ra, w->data.data);
    *w = (struct window){.state = WIN_FREE};
}

static void *fetcher_main(void *arg);

/* Caller holds win_lock. False when no thread could be started. */
static bool start_fetchers(struct ra *ra)
{
    PV_ASSERT_HELD(&ra->win_lock);
    if (ra->n_fetchers) return true;
    const struct backend *b = repo_backend(ra->repo);
    unsigned n = b->load_slots ? b->load_slots : 1;
    if (n > RA_FETCHERS_MAX) n = RA_FETCHERS_MAX;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&ra->fetchers[ra->n_fetchers], NULL, fetcher_main, ra) != 0) break;
        ra->n_fetchers++;
    }
    ra->win_budget = ra->n_fetchers + ra->readers;
    /* All at once and here: buffers allocated by the fetchers, one by one, would each lie in
     * the heap of the thread that asked first, among what it freed (more memory in all). */
    while (ra->n_spare < ra->win_budget) {
        uint8_t *p = malloc(ra->window_bytes);
        if (!p) break; /* the fetchers try again */
        ra->spare[ra->n_spare++] = p;
    }
    return ra->n_fetchers > 0;
}

static struct window *next_planned(struct ra *ra);

/* Wakes the idle fetchers when there is a planned segment for them: after a segment was
 * planned or made urgent, or room may have been made. Waking them on every read would cost two
 * context switches a blob for nothing. Caller holds win_lock. */
static void fetch_wake(struct ra *ra)
{
    PV_ASSERT_HELD(&ra->win_lock);
    if (ra->fetchers_idle && next_planned(ra)) pthread_cond_broadcast(&ra->fetch_work);
}

/* Plans the fetch of segment k of a pack: first among those planned when `urgent` (a reader
 * waits for it), else after them. NULL when the segment lies past the pack's blobs (or their end
 * is unknown), every slot is taken, or no fetcher runs. Caller holds win_lock. */
static struct window *seg_plan(struct ra *ra, const struct oid *pack, uint32_t pack_no, uint64_t k,
                               bool urgent)
{
    PV_ASSERT_HELD(&ra->win_lock);
    uint64_t end = pack_end(ra, pack_no), start = k * ra->window_bytes;
    if (start >= end || !start_fetchers(ra)) return NULL;
    struct window *w = NULL;
    for (size_t i = 0; i < RA_SEGMENTS && !w; i++)
        if (ra->win[i].state == WIN_FREE) w = &ra->win[i];
    if (!w) return NULL;
    *w = (struct window){.state = WIN_PLANNED,
                         .pack = *pack,
                         .pack_no = pack_no,
                         .seg = k,
                         .off = start,
                         .want = end - start < ra->window_bytes ? end - start : ra->window_bytes,
                         .seq = urgent ? 0 : ++ra->plan_seq};
    fetch_wake(ra);
    return w;
}

/* One announced read of segment w happened or will not happen. A segment not fetched (or
 * failed) that no read wants any more goes. */
static void seg_taken(struct ra *ra, struct window *w)
{
    PV_ASSERT_HELD(&ra->win_lock);
    if (!w->pending || --w->pending) return;
    if (w->state == WIN_PLANNED || w->state == WIN_FAILED) seg_drop(ra, w);
    fetch_wake(ra); /* room for a fetch, perhaps */
}

/* Whether segment a should be dropped before b: one that reading has passed first, then one
 * that was read, then the least recently used. */
static bool drop_before(const struct window *a, const struct window *b)
{
    if (a->passed != b->passed) return a->passed;
    if (a->fresh != b->fresh) return !a->fresh;
    return a->used < b->used;
}

/* Room for one more segment with bytes: under the budget, or by dropping a ready segment that
 * no announced read still needs (drop_before). A speculative fetch (the next segment, which no
 * read announced) drops only a segment that reading has passed: a reader between two blobs of
 * the segment it reads holds no pin on it, and dropping it for a guess fetched it twice.
 * Caller holds win_lock. */
static bool make_room(struct ra *ra, bool speculative)
{
    PV_ASSERT_HELD(&ra->win_lock);
    if (ra->n_filled < ra->win_budget) return true;
    struct window *best = NULL;
    for (size_t i = 0; i < RA_SEGMENTS; i++) {
        struct window *w = &ra->win[i];
        if (w->state != WIN_READY || w->pending || w->readers || (speculative && !w->passed))
            continue;
        if (!best || drop_before(w, best)) best = w;
    }
    if (!best) return false;
    seg_drop(ra, best);
    return true;
}

/* The planned segment to fetch next: the one planned first (urgent ones are planned at 0). */
static struct window *next_planned(struct ra *ra)
{
    PV_ASSERT_HELD(&ra->win_lock);
    struct window *best = NULL;
    for (size_t i = 0; i < RA_SEGMENTS; i++) {
        struct window *w = &ra->win[i];
        if (w->state == WIN_PLANNED && (!best || w->seq < best->seq)) best = w;
    }
    return best;
}

/* There is no room for a segment a reader waits for: the readers of every such segment read
 * directly instead. Every one, not only the first: the fetchers look at the first only, so the
 * reader of another would wait for room that only reads which may never come could make.
 * Caller holds win_lock. */
static void give_up_waited(struct ra *ra)
{
    PV_ASSERT_HELD(&ra->win_lock);
    bool any = false;
    for (size_t i = 0; i < RA_SEGMENTS; i++) {
        struct window *w = &ra->win[i];
        if (w->state == WIN_PLANNED && w->seq == 0 && !w->stuck) w->stuck = any = true;
    }
    if (any) pthread_cond_broadcast(&ra->win_ready);
}

/* A fetcher thread: fetches planned segments while there is room for their bytes. A segment
 * that fails is marked so (the error is dropped): its readers then read their blob directly,
 * which retries and reports as a read without read-ahead does. */
static void *fetcher_main(void *arg)
{
    struct ra *ra = arg;
    pthread_mutex_lock(&ra->win_lock);
    while (!ra->fetch_stop) {
        struct window *w = next_planned(ra);
        /* Speculative: nobody announced a read of it or waits for it. */
        bool speculative = w && !w->pending && w->seq;
        if (w && !make_room(ra, speculative)) {
            if (speculative) { /* speculation gives way */
                seg_drop(ra, w);
                continue;
            }
            if (w->seq == 0) give_up_waited(ra);
            w = NULL;
        }
        if (!w) {
            ra->fetchers_idle++;
            pthread_cond_wait(&ra->fetch_work, &ra->win_lock);
            ra->fetchers_idle--;
            continue;
        }
        assert(w->state == WIN_PLANNED && w->data.data == NULL);
        w->state = WIN_LOADING;
        w->stuck = false;
        ra->n_filled++;
        char name[80];
        pack_object_name(&w->pack, name);
        uint64_t off = w->off, want = w->want;
        struct buf data = {.data = ra->n_spare ? ra->spare[--ra->n_spare] : NULL,
                           .cap = ra->window_bytes};
        pthread_mutex_unlock(&ra->win_lock);

        struct err ignored;
        int rc = 0;
        if (!data.data && !(data.data = malloc(ra->window_bytes))) rc = ERR_FAIL;
        if (rc == 0) rc = backend_load(repo_backend(ra->repo), name, off, want, &data, &ignored);
        if (data.cap != ra->window_bytes) { /* grown (never expected): not of the kind kept */
            free(data.data);
            data.data = NULL;
            rc = ERR_FAIL;
        }
        pthread_mutex_lock(&ra->win_lock);
        if (rc == 0) {
            w->data = data;
            w->state = WIN_READY;
            w->fresh = true;
            w->used = ++ra->win_tick;
            win_check(w);
        } else {
            spare_put(ra, data.data);
            ra->n_filled--;
            w->state = WIN_FAILED;
            if (!w->pending) seg_drop(ra, w);
            fetch_wake(ra); /* its room is free again */
        }
        pthread_cond_broadcast(&ra->win_ready);
    }
    pthread_mutex_unlock(&ra->win_lock);
    return NULL;
}

/* A read from segment w (k of its pack) begins. */
static void seg_read(struct ra *ra, struct window *w)
{
    PV_ASSERT_HELD(&ra->win_lock);
    bool first = w->fresh;
    w->fresh = false;
    w->used = ++ra->win_tick;
    seg_taken(ra, w);
    if (!first) return;
    struct window *prev = w->seg ? seg_find(ra, &w->pack, w->seg - 1) : NULL;
    if (prev) prev->passed = true;
    /* Sequential reading: the next segment is fetched while this one is read. */
    if (!seg_find(ra, &w->pack, w->seg + 1)) seg_plan(ra, &w->pack, w->pack_no, w->seg + 1, false);
}

/* Segment k of `pack` (number pack_no) once fetched, asking for it first or planning it when
 * nobody did; NULL when it cannot be had that way (it failed, or there is no room or slot for
 * it). Caller holds win_lock. */
static struct window *seg_wait(struct ra *ra, const struct oid *pack, uint32_t pack_no, uint64_t k)
{
    PV_ASSERT_HELD(&ra->win_lock);
    struct window *w = seg_find(ra, pack, k);
    if (!w && (w = seg_plan(ra, pack, pack_no, k, true)) != NULL) w->pending++;
    while (w && ((w->state == WIN_PLANNED && !w->stuck) || w->state == WIN_LOADING)) {
        if (w->state == WIN_PLANNED && w->seq) { /* needed now: before what is needed later */
            w->seq = 0;
            fetch_wake(ra);
        }
        pthread_cond_wait(&ra->win_ready, &ra->win_lock);
        w = seg_find(ra, pack, k);
    }
    return w && w->state == WIN_READY ? w : NULL;
}

/* Opens the blob `id` at `loc` in pack `pack` through the segments (see the top of the file),
 * appending its plaintext to `out`: segment by segment, each pinned while its piece of the blob
 * is decrypted and released before the next is awaited; what cannot be had that way is read
 * directly. */
int ra_open_blob(struct ra *ra, const char *name, const struct oid *pack, const struct idx_loc *loc,
                 const struct oid *id, struct buf *out, struct err *e)
{
    const uint64_t wb = ra->window_bytes, end = (uint64_t)loc->offset + loc->stored_len;
    uint64_t at = loc->offset;
    struct crypt_opening o;
    int rc = crypt_blob_open_begin(&o, repo_keys(ra->repo), (enum blob_type)loc->type, id,
                                   loc->stored_len, loc->raw_len, e);
    if (rc < 0) return rc;
    pthread_mutex_lock(&ra->win_lock);
    while (at < end) {
        struct window *w = seg_wait(ra, pack, loc->pack, at / wb);
        if (!w || at >= w->off + w->want) break;
        assert(w->state == WIN_READY && at >= w->off);
        seg_read(ra, w);
        w->readers++;
        pthread_mutex_unlock(&ra->win_lock);
        uint64_t piece = (end < w->off + w->want ? end : w->off + w->want) - at;
        crypt_blob_open_feed(&o, w->data.data + (at - w->off), (size_t)piece);
        at += piece;
        pthread_mutex_lock(&ra->win_lock);
        assert(w->readers > 0 && w->state == WIN_READY);
        if (!--w->readers && !w->pending) fetch_wake(ra); /* it may make room now */
    }
    /* The segments left will not be read: the rest is read directly. */
    for (uint64_t k = at / wb; at < end && k * wb < end; k++) {
        struct window *w = seg_find(ra, pack, k);
        if (w) seg_taken(ra, w);
    }
    pthread_mutex_unlock(&ra->win_lock);
    if (at < end) {
        struct buf rest = BUF_INIT;
        rc = backend_load(repo_backend(ra->repo), name, at, end - at, &rest, e);
        if (rc == 0) crypt_blob_open_feed(&o, rest.data, rest.len);
        buf_free(&rest);
    }
    if (rc < 0) {
        crypt_blob_open_end(&o, NULL, e);
        return rc;
    }
    return crypt_blob_open_end(&o, out, e);
}

/* Calls `fn` on each segment that the blob at `loc` in `pack` lies in, planning those not
 * planned yet when `plan`. */
static void for_segments(struct ra *ra, const struct oid *pack, const struct idx_loc *loc,
                         bool plan, void (*fn)(struct ra *, struct window *))
{
    assert(ra->window_bytes > 0);
    const uint64_t wb = ra->window_bytes, end = (uint64_t)loc->offset + loc->stored_len;
    pthread_mutex_lock(&ra->win_lock);
    for (uint64_t k = loc->offset / wb; k * wb < end; k++) {
        struct window *w = seg_find(ra, pack, k);
        if (!w && plan) w = seg_plan(ra, pack, loc->pack, k, false);
        if (w) fn(ra, w);
    }
    pthread_mutex_unlock(&ra->win_lock);
}

static void seg_announce(struct ra *ra, struct window *w)
{
    PV_ASSERT_HELD(&ra->win_lock);
    w->pending++;
}

void ra_prefetch(struct ra *ra, const struct oid *pack, const struct idx_loc *loc)
{
    for_segments(ra, pack, loc, true, seg_announce);
}

void ra_prefetch_cancel(struct ra *ra, const struct oid *pack, const struct idx_loc *loc)
{
    for_segments(ra, pack, loc, false, seg_taken);
}

void ra_end(struct ra *ra)
{
    pthread_mutex_lock(&ra->win_lock);
    ra->fetch_stop = true;
    pthread_cond_broadcast(&ra->fetch_work);
    pthread_mutex_unlock(&ra->win_lock);
    for (unsigned i = 0; i < ra->n_fetchers; i++)
        pthread_join(ra->fetchers[i], NULL);
    /* No thread uses the segments now (the lock is for seg_drop's contract). */
    pthread_mutex_lock(&ra->win_lock);
    for (size_t i = 0; i < RA_SEGMENTS; i++)
        seg_drop(ra, &ra->win[i]);
    assert(ra->n_filled == 0);
    while (ra->n_spare)
        free(ra->spare[--ra->n_spare]);
    pthread_mutex_unlock(&ra->win_lock);
    ra->n_fetchers = 0;
    ra->fetch_stop = false;
}

/* ---- life cycle and settings ---- */

int ra_new(struct repo *repo, struct ra **out, struct err *e)
{
    struct ra *ra = calloc(1, sizeof *ra);
    if (!ra) return err_set(e, ERR_FAIL, "out of memory");
    ra->repo = repo;
    ra->readers = RA_READERS_DEFAULT;
    pthread_mutex_init(&ra->win_lock, NULL);
    pthread_cond_init(&ra->win_ready, NULL);
    pthread_cond_init(&ra->fetch_work, NULL);
    *out = ra;
    return 0;
}

void ra_free(struct ra *ra)
{
    if (!ra) return;
    ra_end(ra);
    free(ra->pack_end);
    pthread_mutex_destroy(&ra->win_lock);
    pthread_cond_destroy(&ra->win_ready);
    pthread_cond_destroy(&ra->fetch_work);
    free(ra);
}

void ra_set_window(struct ra *ra, size_t bytes)
{
    ra_end(ra); /* segments of the old size */
    ra->window_bytes = bytes;
}

size_t ra_window(const struct ra *ra)
{
    return ra->window_bytes;
}

void ra_set_readers(struct ra *ra, unsigned n)
{
    if (n < 1) n = 1;
    if (n > RA_READERS_MAX) n = RA_READERS_MAX;
    pthread_mutex_lock(&ra->win_lock);
    ra->readers = n;
    if (ra->n_fetchers) ra->win_budget = ra->n_fetchers + n; /* its buffers come when needed */
    pthread_mutex_unlock(&ra->win_lock);
}
