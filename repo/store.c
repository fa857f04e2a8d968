/* store.c - the blob write path: deduplicate, seal, pack, upload, index; see store.h.
 *
 * One mutex guards the store's shared state: the set of blob IDs accepted but not yet in the
 * repository's index (in flight), the two open pack writers (tree blobs and data blobs go to
 * separate packs, so tree packs stay small and cacheable), the queue of full packs, and the
 * uploaded packs not yet listed in an index file. Sealing (compression and encryption) runs
 * outside it in the callers' threads; pack uploads and index file writes run in the store's
 * own uploader threads (as many as the backend asks for), so the callers never wait on storage
 * unless the queue is full. Packs are assembled in temporary files (backend_tmp_file), so a
 * queued or uploading pack costs disk, not memory. Lock order: store mutex, then the
 * repository's index lock.
 *
 * A failed pack upload or index write makes the store fail for good: a backup must not go on to
 * save a snapshot that refers to blobs that were not stored.
 */
#include "repo/store.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "base/held.h"
#include "repo/index.h"
#include "repo/pack.h"
#include "repo/repo.h"

/* An index file is written once this many packs, or this many blobs, are uploaded but not yet
 * listed in one. Readers hold a whole index file while decoding it (maintenance under
 * --max-memory, one at a time), so the blob cap bounds that: 16 packs of small blobs listed
 * ~270,000, 11 MB sealed and as much decoded (prune writes files of the same cap). */
#define STORE_INDEX_EVERY 16
#define STORE_INDEX_BLOBS 65536
/* ... or once the oldest of them was uploaded this long ago, so that a backup killed while it
 * uploads slowly loses at most this much of its uploads (the next backup finds the packs listed
 * in index files and stores their blobs again only if they are not). */
#define STORE_INDEX_AGE_MS 10000
/* Full packs that may wait for an uploader, per uploader: enough to cover one upload's
 * latency, few enough to bound the temporary disk space (pack size x uploaders x 2). */
#define STORE_QUEUE_PER_UPLOADER 2
/* Sealing buffers kept for reuse. One buffer per blob, freed after it, left freed chunk-sized
 * buffers resident in the arenas of the threads that sealed them (how much: bench/RESULTS.md
 * "Sealing buffers kept for reuse"). More concurrent sealers than this still work; their extra
 * buffers are freed. */
#define STORE_SPARE_BUFS 4

/* A set of blob IDs: open addressing, linear probing, deletion by backward shift. The all-zero
 * ID marks an empty slot, so it is kept apart in `has_zero`. */
struct oid_set {
    struct oid *slots;
    size_t n_slots; /* a power of two, or 0 */
    size_t n;
    bool has_zero;
};

struct upload {
    struct pack_writer *w;
    enum blob_type type;
};

struct store {
    struct repo *r;
    const struct crypt_keys *keys;
    int zstd_level;
    uint32_t pack_size;

    pthread_mutex_t lock;
    pthread_cond_t idle;   /* signalled when `sealing` or `busy` drops, or the queue shrinks */
    pthread_cond_t queued; /* signalled when a pack is queued, or the uploaders must stop */
    struct oid_set inflight;
    struct pack_writer *open[2]; /* by enum blob_type; NULL until a blob of that type comes */
    struct upload *queue;        /* a ring of full packs waiting for an uploader */
    size_t q_head, q_len, q_cap;
    pthread_t *uploaders;
    unsigned n_uploaders;
    bool stopping;
    struct idx_file_pack *pending; /* uploaded, not yet in an index file */
    size_t n_pending, cap_pending, n_pending_blobs;
    struct timespec pending_since; /* CLOCK_MONOTONIC: when the first of them was uploaded */
    size_t sealing; /* store_add calls between reserving an ID and adding it to a pack */
    struct buf spare[STORE_SPARE_BUFS]; /* sealing buffers not in use (n_spare of them) */
    size_t n_spare;
    size_t busy; /* packs queued or uploading, and index writes running */
    int failed;  /* 0, or the error that made the store fail */
    struct err fail_err;
    struct store_stats stats;
};

/* The set's invariants, O(1): a power-of-two table at most half full (so every probe run ends
 * at an empty slot), and no table without room for what it counts. */
static void set_check(const struct oid_set *s)
{
    assert((s->n_slots & (s->n_slots - 1)) == 0);
    assert(s->n * 2 <= s->n_slots);
    (void)s;
}

static size_t set_home(const struct oid_set *s, const struct oid *id)
{
    return (size_t)XXH3_64bits(id->b, OID_LEN) & (s->n_slots - 1);
}

static bool set_has(const struct oid_set *s, const struct oid *id)
{
    if (oid_is_zero(id)) return s->has_zero;
    if (!s->n) return false;
    size_t mask = s->n_slots - 1;
    for (size_t i = set_home(s, id); !oid_is_zero(&s->slots[i]); i = (i + 1) & mask)
        if (oid_eq(&s->slots[i], id)) return true;
    return false;
}

static void set_put_slot(struct oid_set *s, const struct oid *id)
{
    size_t mask = s->n_slots - 1, i = set_home(s, id);
    while (!oid_is_zero(&s->slots[i]))
        i = (i + 1) & mask;
    s->slots[i] = *id;
}

/* Adds an ID known to be absent. Returns 0, or -1 when memory is out. */
static int set_add(struct oid_set *s, const struct oid *id)
{
    assert(!set_has(s, id));
    if (oid_is_zero(id)) {
        s->has_zero = true;
        return 0;
    }
    if ((s->n + 1) * 2 > s->n_slots) {
        struct oid_set bigger = {.n_slots = s->n_slots ? s->n_slots * 2 : 256, .n = s->n};
        bigger.slots = calloc(bigger.n_slots, sizeof *bigger.slots);
        if (!bigger.slots) return -1;
        for (size_t i = 0; i < s->n_slots; i++)
            if (!oid_is_zero(&s->slots[i])) set_put_slot(&bigger, &s->slots[i]);
        bigger.has_zero = s->has_zero;
        free(s->slots);
        *s = bigger;
    }
    set_put_slot(s, id);
    s->n++;
    set_check(s);
    return 0;
}

static void set_remove(struct oid_set *s, const struct oid *id)
{
    if (oid_is_zero(id)) {
        s->has_zero = false;
        return;
    }
    if (!s->n) return;
    size_t mask = s->n_slots - 1, i = set_home(s, id);
    while (!oid_eq(&s->slots[i], id)) {
        if (oid_is_zero(&s->slots[i])) return;
        i = (i + 1) & mask;
    }
    /* Backward shift: pull later entries of the probe run into the hole when their home
     * position does not lie cyclically in (hole, their slot]. */
    for (size_t j = (i + 1) & mask; !oid_is_zero(&s->slots[j]); j = (j + 1) & mask) {
        size_t home = set_home(s, &s->slots[j]);
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        s->slots[i] = s->slots[j];
        i = j;
    }
    memset(&s->slots[i], 0, sizeof s->slots[i]);
    assert(s->n > 0);
    s->n--;
    set_check(s);
}

/* Records the first failure; every later call then fails with it. Caller holds the lock. */
static void set_failed(struct store *s, int rc, const struct err *e)
{
    PV_ASSERT_HELD(&s->lock);
    if (s->failed) return;
    s->failed = rc < 0 ? rc : ERR_FAIL;
    s->fail_err = *e;
}

static int failed_err(struct store *s, struct err *e)
{
    return err_set(e, s->failed, "the store failed earlier, nothing more is stored: %s",
                   s->fail_err.msg);
}

static void *uploader_main(void *arg);
static void stop_uploaders(struct store *s);

int store_new(struct repo *r, struct store **out, struct err *e)
{
    struct store *s = calloc(1, sizeof *s);
    if (!s) return err_set(e, ERR_FAIL, "store: out of memory");
    s->r = r;
    s->keys = repo_keys(r);
    s->zstd_level = repo_config(r)->zstd_level;
    s->pack_size = repo_config(r)->pack_size;
    unsigned n = repo_backend(r)->save_slots ? repo_backend(r)->save_slots : 1;
    s->q_cap = (size_t)n * STORE_QUEUE_PER_UPLOADER;
    s->queue = calloc(s->q_cap, sizeof *s->queue);
    s->uploaders = calloc(n, sizeof *s->uploaders);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    pthread_condattr_t ca; /* `queued` is waited on with deadlines of CLOCK_MONOTONIC */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->queued, &ca);
    pthread_condattr_destroy(&ca);
    int rc = s->queue && s->uploaders ? 0 : err_set(e, ERR_FAIL, "store: out of memory");
    for (unsigned i = 0; rc == 0 && i < n; i++) {
        int en = pthread_create(&s->uploaders[i], NULL, uploader_main, s);
        if (en)
            rc = err_sys(e, en, "store: starting an upload thread");
        else
            s->n_uploaders++;
    }
    if (rc < 0) {
        store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void free_pending(struct idx_file_pack *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(p[i].entries);
    free(p);
}

void store_free(struct store *s)
{
    if (!s) return;
    stop_uploaders(s);
    pack_writer_free(s->open[BLOB_DATA]);
    pack_writer_free(s->open[BLOB_TREE]);
    free(s->queue);
    free(s->uploaders);
    free_pending(s->pending, s->n_pending);
    free(s->inflight.slots);
    for (size_t i = 0; i < s->n_spare; i++)
        buf_free(&s->spare[i]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    pthread_cond_destroy(&s->queued);
    free(s);
}

/* Whether the repository or this store has the blob. Caller holds the lock. */
static bool known(struct store *s, const struct oid *id)
{
    PV_ASSERT_HELD(&s->lock);
    if (set_has(&s->inflight, id)) return true;
    repo_index_lock(s->r, false);
    bool found = idx_lookup(repo_index(s->r), id, NULL);
    repo_index_unlock(s->r);
    return found;
}

bool store_has(struct store *s, const struct oid *id)
{
    pthread_mutex_lock(&s->lock);
    bool found = known(s, id);
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* Writes an index file listing `packs`, which it frees. */
static int write_index(struct store *s, struct idx_file_pack *packs, size_t n, struct err *e)
{
    struct buf plain = BUF_INIT;
    struct oid id;
    int rc = idx_file_encode(packs, n, NULL, 0, &plain, e);
    if (rc == 0) rc = repo_save_file(s->r, "index", "index", plain.data, plain.len, &id, e);
    buf_free(&plain);
    free_pending(packs, n);
    if (rc < 0) return err_wrap(e, "writing an index file for %zu packs", n);
    return 0;
}

/* Records an uploaded pack: its blobs move from in flight to the index, and it waits for an
 * index file. Caller holds the lock. */
static int pack_uploaded(struct store *s, const struct oid *pack_id, struct pack_writer *w,
                         struct err *e)
{
    PV_ASSERT_HELD(&s->lock);
    size_t n;
    const struct pack_entry *ents = pack_writer_entries(w, &n);
    if (s->n_pending == s->cap_pending) {
        size_t cap = s->cap_pending ? s->cap_pending * 2 : STORE_INDEX_EVERY;
        struct idx_file_pack *p = realloc(s->pending, cap * sizeof *p);
        if (!p) return err_set(e, ERR_FAIL, "store: out of memory");
        s->pending = p;
        s->cap_pending = cap;
    }
    struct idx_file_pack *fp = &s->pending[s->n_pending];
    fp->pack_id = *pack_id;
    fp->n = n;
    fp->entries = malloc((n ? n : 1) * sizeof *fp->entries);
    if (!fp->entries) return err_set(e, ERR_FAIL, "store: out of memory");
    memcpy(fp->entries, ents, n * sizeof *ents);
    repo_index_lock(s->r, true);
    int rc = idx_add_pack(repo_index(s->r), pack_id, ents, n, e);
    repo_index_unlock(s->r);
    if (rc < 0) {
        free(fp->entries);
        return rc;
    }
    if (s->n_pending == 0) clock_gettime(CLOCK_MONOTONIC, &s->pending_since);
    s->n_pending++;
    s->n_pending_blobs += n;
    for (size_t i = 0; i < n; i++)
        set_remove(&s->inflight, &ents[i].id);
    s->stats.packs++;
    return 0;
}

bool store_index_due(size_t packs, size_t blobs, long age_ms)
{
    if (packs == 0) return false;
    return packs >= STORE_INDEX_EVERY || blobs >= STORE_INDEX_BLOBS || age_ms >= STORE_INDEX_AGE_MS;
}

static long pending_age_ms(const struct store *s)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - s->pending_since.tv_sec) * 1000 +
           (t.tv_nsec - s->pending_since.tv_nsec) / 1000000;
}

/* Takes the packs waiting for an index file when one is due (or, with `all`, whenever there are
 * any), counting the write to come in s->busy. Caller holds the lock. */
static struct idx_file_pack *take_batch(struct store *s, bool all, size_t *n)
{
    PV_ASSERT_HELD(&s->lock);
    *n = 0;
    if (!s->n_pending ||
        !(all || store_index_due(s->n_pending, s->n_pending_blobs, pending_age_ms(s))))
        return NULL;
    struct idx_file_pack *batch = s->pending;
    *n = s->n_pending;
    s->pending = NULL;
    s->n_pending = s->cap_pending = s->n_pending_blobs = 0;
    s->busy++;
    return batch;
}

/* Writes the index file of a batch taken by take_batch, and ends its count in s->busy. Called
 * without the lock. */
static int write_batch(struct store *s, struct idx_file_pack *batch, size_t n, struct err *e)
{
    int rc = write_index(s, batch, n, e);
    pthread_mutex_lock(&s->lock);
    if (rc < 0) set_failed(s, rc, e);
    assert(s->busy > 0);
    s->busy--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Finishes and uploads a full pack writer of blobs of `type` (counted in s->busy), then
 * indexes it, writing an index file when enough packs wait for one. Called without the lock. */
static void upload(struct store *s, enum blob_type type, struct pack_writer *w)
{
    struct err e;
    err_clear(&e);
    struct oid pack_id;
    uint64_t pack_len;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (s->failed) rc = s->failed; /* the backup is lost anyway: spare the upload */
    pthread_mutex_unlock(&s->lock);
    if (rc == 0) {
        rc = pack_writer_finish(w, s->keys, &pack_id, &pack_len, &e);
        if (rc < 0) err_wrap(&e, "finishing a pack in %s", backend_tmp_dir(repo_backend(s->r)));
    }
    if (rc == 0) rc = repo_save_pack(s->r, &pack_id, type, w, pack_len, &e);

    struct idx_file_pack *batch = NULL;
    size_t n_batch = 0;
    pthread_mutex_lock(&s->lock);
    if (rc == 0 && s->failed) rc = failed_err(s, &e);
    if (rc == 0) rc = pack_uploaded(s, &pack_id, w, &e);
    if (rc == 0) batch = take_batch(s, false, &n_batch);
    if (rc < 0 && !s->failed) set_failed(s, rc, &e);
    pthread_mutex_unlock(&s->lock);
    pack_writer_free(w);

    if (batch) write_batch(s, batch, n_batch, &e);
    pthread_mutex_lock(&s->lock);
    assert(s->busy > 0);
    s->busy--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

static void *uploader_main(void *arg)
{
    struct store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->q_len && !s->stopping) {
            if (!s->n_pending || s->failed) {
                pthread_cond_wait(&s->queued, &s->lock);
                continue;
            }
            /* Uploaded packs wait for an index file: write it once it is due, even when no
             * other pack comes (the backup may be reading a long stretch of known data). */
            size_t n_batch;
            struct idx_file_pack *batch = take_batch(s, false, &n_batch);
            if (batch) {
                pthread_mutex_unlock(&s->lock);
                struct err e;
                err_clear(&e);
                write_batch(s, batch, n_batch, &e);
                pthread_mutex_lock(&s->lock);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&s->queued, &s->lock, &until);
        }
        if (!s->q_len) break;
        struct upload u = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
        pthread_cond_broadcast(&s->idle); /* room in the queue */
        pthread_mutex_unlock(&s->lock);
        upload(s, u.type, u.w);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Drops the packs still queued (a store freed without a flush saves nothing more) and ends
 * the uploader threads once their current uploads end. */
static void stop_uploaders(struct store *s)
{
    pthread_mutex_lock(&s->lock);
    for (; s->q_len; s->q_len--, s->busy--) {
        pack_writer_free(s->queue[s->q_head].w);
        s->q_head = (s->q_head + 1) % s->q_cap;
    }
    s->stopping = true;
    pthread_cond_broadcast(&s->queued);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->n_uploaders; i++)
        pthread_join(s->uploaders[i], NULL);
    s->n_uploaders = 0;
}

/* Hands the open pack of `type` to the uploaders, waiting while the queue is full. Caller holds
 * the lock (which the wait releases). */
static void queue_pack(struct store *s, enum blob_type type)
{
    PV_ASSERT_HELD(&s->lock);
    struct upload u = {.w = s->open[type], .type = type};
    assert(u.w != NULL);
    s->open[type] = NULL;
    s->busy++;
    while (s->q_len == s->q_cap)
        pthread_cond_wait(&s->idle, &s->lock);
    assert(s->q_len < s->q_cap && s->busy > s->q_len); /* each queued pack counts as busy */
    s->queue[(s->q_head + s->q_len++) % s->q_cap] = u;
    pthread_cond_signal(&s->queued);
}

/* Opens a pack writer for `type` when there is none. Caller holds the lock. */
static int open_writer(struct store *s, enum blob_type type, struct err *e)
{
    PV_ASSERT_HELD(&s->lock);
    if (s->open[type]) return 0;
    int fd;
    int rc = backend_tmp_file(repo_backend(s->r), &fd, e);
    if (rc == 0) rc = pack_writer_new(&s->open[type], fd, e);
    if (rc < 0) return err_wrap(e, "store: starting a new pack");
    return 0;
}

int store_add(struct store *s, enum blob_type type, const struct oid *id, const void *plain,
              size_t len, bool *added, struct err *e)
{
    if (added) *added = false;
    if (type != BLOB_DATA && type != BLOB_TREE)
        return err_set(e, ERR_FAIL, "store: invalid blob type %d", (int)type);
    if (len > UINT32_MAX)
        return err_set(e, ERR_FAIL, "store: a blob of %zu bytes is too large", len);

    pthread_mutex_lock(&s->lock);
    if (s->failed) {
        int rc = failed_err(s, e);
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    if (known(s, id)) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    if (set_add(&s->inflight, id) < 0) {
        pthread_mutex_unlock(&s->lock);
        return err_set(e, ERR_FAIL, "store: out of memory");
    }
    s->sealing++;
    struct buf sealed = s->n_spare ? s->spare[--s->n_spare] : (struct buf)BUF_INIT;
    pthread_mutex_unlock(&s->lock);

    /* The parallel part: compression and encryption. */
    buf_reset(&sealed);
    int rc = crypt_blob_seal(s->keys, type, id, plain, len, s->zstd_level, &sealed, e);

    pthread_mutex_lock(&s->lock);
    if (rc == 0 && s->failed) rc = failed_err(s, e);
    if (rc == 0) rc = open_writer(s, type, e);
    if (rc == 0) {
        rc = pack_writer_add(s->open[type], type, id, sealed.data, sealed.len, (uint32_t)len, e);
        if (rc < 0) err_wrap(e, "assembling a pack in %s", backend_tmp_dir(repo_backend(s->r)));
    }
    if (rc == 0) {
        s->stats.blobs_new++;
        s->stats.bytes_new += len;
        s->stats.bytes_stored += sealed.len;
    }
    /* A blob reserved but not packed would be missing from the repository while its ID says
     * it is there, so any failure here fails the store. */
    if (rc < 0) set_failed(s, rc, e);
    assert(s->sealing > 0);
    s->sealing--;
    pthread_cond_broadcast(&s->idle);
    struct pack_writer *w = s->open[type];
    if (rc == 0 &&
        (pack_writer_size(w) >= s->pack_size || pack_writer_count(w) >= PACK_MAX_ENTRIES))
        queue_pack(s, type);
    if (s->n_spare < STORE_SPARE_BUFS) {
        s->spare[s->n_spare++] = sealed;
        sealed = (struct buf)BUF_INIT;
    }
    pthread_mutex_unlock(&s->lock);
    buf_free(&sealed);
    if (rc < 0) return rc;
    if (added) *added = true;
    return 0;
}

int store_wait(struct store *s, struct err *e)
{
    pthread_mutex_lock(&s->lock);
    while (s->sealing || s->busy)
        pthread_cond_wait(&s->idle, &s->lock);
    int rc = s->failed ? failed_err(s, e) : 0;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int store_flush(struct store *s, struct err *e)
{
    pthread_mutex_lock(&s->lock);
    /* Blobs being sealed right now belong in this flush. */
    while (s->sealing && !s->failed)
        pthread_cond_wait(&s->idle, &s->lock);
    for (int t = 0; t < 2 && !s->failed; t++)
        if (s->open[t] && pack_writer_count(s->open[t])) queue_pack(s, (enum blob_type)t);
    while (s->busy) /* queued and running uploads, and their index writes */
        pthread_cond_wait(&s->idle, &s->lock);
    if (s->failed) {
        int rc = failed_err(s, e);
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    size_t n_batch;
    struct idx_file_pack *batch = take_batch(s, true, &n_batch);
    pthread_mutex_unlock(&s->lock);
    return batch ? write_batch(s, batch, n_batch, e) : 0;
}

void store_stats(struct store *s, struct store_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}
