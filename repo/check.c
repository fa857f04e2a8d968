/* check.c - verify structure and data of a repository, and rebuild the index from the packs;
 * see check.h. */
#include "repo/check.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/index.h"
#include "repo/lock.h"
#include "repo/pack.h"
#include "repo/repo.h"
#include "repo/walk.h"

/* Blobs per index file written by repair (about 2.5 MiB a file). */
#define REPAIR_FILE_BLOBS 65536
/* Trailer bytes after a pack's header. */
#define PACK_TRAILER 4

/* A pack the index lists that data/ lacks: its blobs, counted over the passes. */
struct missing {
    struct oid id;
    uint64_t blobs, used;
};

/* A blob that failed to decrypt, reported in the pass of its range (which knows its use). */
struct bad_blob {
    struct oid id, pack;
    char msg[ERR_MSG_MAX];
};

struct ck {
    struct repo *r;
    const struct check_options *o;
    struct check_stats *st;
    pthread_mutex_t mu;
    struct walk_pack *data;
    size_t n_data;
    size_t n_table;
    struct walk_range range; /* this pass */
    struct oid *index_ids;   /* the files the first pass loaded, which the others load too */
    size_t n_index;
    uint8_t *has_blobs; /* per pack number: the index lists blobs of this range in it */
    struct walk_bits used, confirmed;
    uint8_t *header_ok; /* per pack number: its header was read and compared */
    uint8_t *read_sel;  /* per listed pack: read its data */
    /* Per listed pack, over all passes: */
    uint32_t *need;       /* bytes the index says the pack has at least */
    uint8_t *header_bad;  /* its header could not be read (reported in the first pass) */
    uint32_t *unindexed;  /* header entries no index lists */
    uint32_t *n_header;   /* entries its header lists */
    struct missing *miss; /* sorted by ID */
    size_t n_miss;
    struct bad_blob *bad; /* decryption failures of later ranges */
    size_t n_bad, cap_bad;
};

static void problem(struct ck *c, bool error, enum check_object obj, const struct oid *id,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void problem(struct ck *c, bool error, enum check_object obj, const struct oid *id,
                    const char *fmt, ...)
{
    char msg[ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->mu);
    if (error)
        c->st->errors++;
    else
        c->st->warnings++;
    if (c->o->report) {
        struct check_problem p = {error, obj, *id, msg};
        c->o->report(c->o->ctx, &p);
    }
    pthread_mutex_unlock(&c->mu);
}

static void progress(struct ck *c, const char *phase, uint64_t done, uint64_t total)
{
    if (c->o->progress) c->o->progress(c->o->ctx, phase, done, total);
}

int check_parse_subset(const char *s, struct check_options *o, struct err *e)
{
    char *end;
    size_t len = strlen(s);
    if (len > 1 && s[len - 1] == '%') {
        double f = strtod(s, &end);
        if (end != s + len - 1 || !(f > 0) || f > 100)
            return err_set(e, ERR_FAIL, "read-data subset \"%s\": want a share 0%%..100%%", s);
        o->read = CHECK_READ_SUBSET;
        o->subset_frac = f / 100;
        o->subset_n = o->subset_m = 0;
        return 0;
    }
    unsigned long n = strtoul(s, &end, 10);
    if (end == s || *end != '/')
        return err_set(e, ERR_FAIL, "read-data subset \"%s\": want N%% or n/m", s);
    const char *q = end + 1;
    unsigned long m = strtoul(q, &end, 10);
    if (end == q || *end || m < 1 || m > 1000000 || n < 1 || n > m || s[0] == '-' || q[0] == '-')
        return err_set(e, ERR_FAIL, "read-data subset \"%s\": want n/m with 1 <= n <= m", s);
    o->read = CHECK_READ_SUBSET;
    o->subset_n = (uint32_t)n;
    o->subset_m = (uint32_t)m;
    o->subset_frac = 0;
    return 0;
}

/* ---- loading ---- */

static void bad_index(void *ctx, const struct oid *id, const char *msg)
{
    struct ck *c = ctx;
    /* Called under the loader's lock, not ours. */
    problem(c, true, CHECK_INDEX, id, "%s", msg);
}

static void bad_snapshot(void *ctx, const struct oid *id, const char *msg)
{
    struct ck *c = ctx;
    char hex[OID_HEX_LEN + 1];
    problem(c, true, CHECK_SNAPSHOT, id, "snapshot %s: %s", oid_hex(id, hex), msg);
}

static void walk_problem(void *ctx, enum walk_problem kind, const struct oid *snapshot,
                         const struct oid *tree, const struct oid *blob, const char *msg)
{
    struct ck *c = ctx;
    char hex[OID_HEX_LEN + 1];
    enum check_object obj = kind == WALK_DATA_MISSING ? CHECK_BLOB : CHECK_TREE;
    problem(c, true, obj, blob, "snapshot %s: %s", oid_hex(snapshot, hex), msg);
}

static uint32_t pack_group(const struct oid *id, uint32_t m)
{
    uint32_t v;
    memcpy(&v, id->b, sizeof v);
    return v % m;
}

/* ---- packs ---- */

static int note_bad_blob(struct ck *c, const struct oid *id, const struct oid *pack,
                         const char *msg)
{
    pthread_mutex_lock(&c->mu);
    if (c->n_bad == c->cap_bad) {
        size_t cap = c->cap_bad ? c->cap_bad * 2 : 16;
        struct bad_blob *v = realloc(c->bad, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&c->mu);
            return ERR_FAIL;
        }
        c->bad = v;
        c->cap_bad = cap;
    }
    struct bad_blob *b = &c->bad[c->n_bad++];
    b->id = *id;
    b->pack = *pack;
    snprintf(b->msg, sizeof b->msg, "%s", msg);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static void report_bad_blob(struct ck *c, const struct oid *id, const struct oid *pack,
                            const char *msg)
{
    char hex[OID_HEX_LEN + 1], hex2[OID_HEX_LEN + 1];
    struct idx_loc loc;
    size_t pos;
    bool used = idx_lookup_pos(repo_index(c->r), id, &loc, &pos) && walk_bit(&c->used, pos);
    problem(c, true, CHECK_BLOB, id, "blob %s in pack %s%s: %s", oid_hex(id, hex),
            oid_hex(pack, hex2), used ? " (used by snapshots)" : "", msg);
}

/* Reads a pack's blobs in ranges of about this many bytes (a blob larger than this is read
 * alone), so reading data holds this much per thread, not a whole pack. 2 MiB: a 16 MiB pack
 * takes 8 requests, and two threads hold a few MiB beside the tables. */
#define CHECK_READ_RANGE (2u * 1024 * 1024)

/* Reads the blobs of pack i in ranges and verifies each against its ID. A range that cannot be
 * read makes each of its blobs bad, with the reason. */
static int check_pack_data(struct ck *c, size_t i, const struct pack_entry *ents, size_t n,
                           struct err *e)
{
    struct repo *r = c->r;
    const struct walk_pack *wp = &c->data[i];
    char name[80];
    pack_object_name(&wp->id, name);
    struct buf range = BUF_INIT, plain = BUF_INIT;
    uint64_t bytes = 0;
    int frc = 0;
    for (size_t k = 0; k < n;) {
        /* Blobs lie back to back in header order (pack_header_decode checks it). */
        size_t end = k + 1;
        uint32_t start = ents[k].offset;
        uint64_t len = ents[k].stored_len;
        while (end < n && len + ents[end].stored_len <= CHECK_READ_RANGE)
            len += ents[end++].stored_len;
        struct err le;
        buf_reset(&range);
        int lrc = backend_load(repo_backend(r), name, start, len, &range, &le);
        if (lrc == 0) bytes += len;
        for (; k < end; k++) {
            const struct pack_entry *pk = &ents[k];
            struct err be;
            int brc;
            if (lrc < 0) {
                brc = lrc;
                be = le;
            } else {
                buf_reset(&plain);
                brc = crypt_blob_open(repo_keys(r), (enum blob_type)pk->type, &pk->id,
                                      range.data + (pk->offset - start), pk->stored_len,
                                      pk->raw_len, &plain, &be);
            }
            if (brc < 0 && walk_in_range(&c->range, &pk->id))
                report_bad_blob(c, &pk->id, &wp->id, be.msg);
            else if (brc < 0 && note_bad_blob(c, &pk->id, &wp->id, be.msg) < 0 && !frc)
                frc = err_set(e, ERR_FAIL, "check: out of memory");
        }
    }
    buf_free(&range);
    buf_free(&plain);
    pthread_mutex_lock(&c->mu);
    c->st->packs_read++;
    c->st->blobs_read += n;
    c->st->bytes_read += bytes;
    pthread_mutex_unlock(&c->mu);
    return frc;
}

/* Compares a pack's header with the index (the entries of this pass's range) and, when
 * selected, reads and verifies all its blobs (in the first pass). Findings about the pack as a
 * whole are made in the first pass, or after the last one. */
static int check_pack(void *ctx, size_t i, struct err *e)
{
    struct ck *c = ctx;
    const struct walk_pack *wp = &c->data[i];
    struct repo *r = c->r;
    struct idx *x = repo_index(r);
    bool first = c->range.part == 0;
    if (c->header_bad[i]) return 0;
    char hex[OID_HEX_LEN + 1];
    uint32_t num = 0;
    bool listed = idx_pack_find(x, &wp->id, &num) && num < c->n_table;

    struct pack_entry *ents = NULL;
    size_t n = 0;
    struct err pe;
    int rc = pack_read_header(repo_backend(r), repo_keys(r), &wp->id, &ents, &n, &pe);
    if (rc < 0) {
        c->header_bad[i] = 1;
        if (!first) return 0; /* appeared only now: someone is changing the repository */
    }
    if (rc == ERR_NOT_FOUND) {
        /* Deleted since listed: only prune deletes, and the caller holds the prune lock, so
         * this is someone removing files by hand. */
        problem(c, true, CHECK_PACK, &wp->id, "pack %s vanished during the check",
                oid_hex(&wp->id, hex));
        return 0;
    }
    if (rc < 0) {
        problem(c, listed, CHECK_PACK, &wp->id, "pack %s: %s%s", oid_hex(&wp->id, hex), pe.msg,
                listed ? "" : " (the pack is in no index)");
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        const struct pack_entry *pk = &ents[k];
        struct idx_loc loc;
        size_t pos;
        if (!walk_in_range(&c->range, &pk->id)) continue; /* another pass compares it */
        if (!idx_lookup_pos(x, &pk->id, &loc, &pos)) {
            pthread_mutex_lock(&c->mu);
            c->unindexed[i]++;
            pthread_mutex_unlock(&c->mu);
        } else if (loc.pack == num && listed) {
            if (loc.offset != pk->offset || loc.stored_len != pk->stored_len ||
                loc.raw_len != pk->raw_len || loc.type != pk->type) {
                char hex2[OID_HEX_LEN + 1];
                problem(c, true, CHECK_BLOB, &pk->id,
                        "blob %s: the index places it in pack %s at offset %u (%u bytes), the "
                        "pack's header at offset %u (%u bytes)",
                        oid_hex(&pk->id, hex), oid_hex(&wp->id, hex2), loc.offset, loc.stored_len,
                        pk->offset, pk->stored_len);
            }
            walk_bit_set(&c->confirmed, pos);
        }
    }
    int frc = 0;
    if (first && c->read_sel && c->read_sel[i]) frc = check_pack_data(c, i, ents, n, e);
    if (listed && c->has_blobs[num]) c->header_ok[num] = 1;
    if (first) c->n_header[i] = (uint32_t)n;
    free(ents);
    return frc;
}

/* What is known about each pack only once every pass has run. */
static void report_packs(struct ck *c)
{
    struct idx *x = repo_index(c->r);
    char hex[OID_HEX_LEN + 1];
    for (size_t i = 0; i < c->n_data; i++) {
        const struct walk_pack *wp = &c->data[i];
        if (c->need[i] && (uint64_t)c->need[i] + PACK_TRAILER > wp->size)
            problem(c, true, CHECK_PACK, &wp->id,
                    "pack %s is truncated: %llu bytes, but the index places blobs up to byte %u",
                    oid_hex(&wp->id, hex), (unsigned long long)wp->size, c->need[i]);
        if (c->header_bad[i]) continue;
        if (!idx_pack_find(x, &wp->id, NULL))
            problem(c, false, CHECK_PACK, &wp->id,
                    "pack %s (%u blobs) is in no index: left by a backup that was interrupted or "
                    "is still running; prune removes it",
                    oid_hex(&wp->id, hex), c->n_header[i]);
        else if (c->unindexed[i])
            problem(c, false, CHECK_PACK, &wp->id,
                    "pack %s holds %u blobs that no index lists (unused; prune removes them)",
                    oid_hex(&wp->id, hex), c->unindexed[i]);
    }
    for (size_t i = 0; i < c->n_miss; i++)
        problem(c, true, CHECK_PACK, &c->miss[i].id,
                "pack %s is missing: the index lists %llu blobs in it, %llu of them used by "
                "snapshots",
                oid_hex(&c->miss[i].id, hex), (unsigned long long)c->miss[i].blobs,
                (unsigned long long)c->miss[i].used);
}

/* Which packs to read whole, for read_data. */
static int select_reads(struct ck *c, struct err *e)
{
    if (c->o->read == CHECK_READ_NONE) return 0;
    c->read_sel = calloc(c->n_data ? c->n_data : 1, 1);
    if (!c->read_sel) return err_set(e, ERR_FAIL, "check: out of memory");
    for (size_t i = 0; i < c->n_data; i++) {
        if (c->o->read == CHECK_READ_ALL)
            c->read_sel[i] = 1;
        else if (c->o->subset_m)
            c->read_sel[i] = pack_group(&c->data[i].id, c->o->subset_m) == c->o->subset_n - 1;
    }
    if (c->o->read == CHECK_READ_SUBSET && !c->o->subset_m) {
        /* A random share: shuffle-free selection of exactly ceil(frac * n) packs. */
        size_t want = (size_t)(c->o->subset_frac * (double)c->n_data + 0.999999);
        if (want > c->n_data) want = c->n_data;
        for (size_t i = 0, left = c->n_data; i < c->n_data && want; i++, left--) {
            uint32_t rnd;
            struct oid rid;
            oid_random(&rid);
            memcpy(&rnd, rid.b, sizeof rnd);
            if ((uint64_t)rnd % left < want) {
                c->read_sel[i] = 1;
                want--;
            }
        }
    }
    return 0;
}

static void check_marks_and_locks(struct ck *c)
{
    struct err e;
    struct lock_mark *marks;
    size_t n;
    struct oid none;
    memset(&none, 0, sizeof none);
    if (lock_marks_load(c->r, &marks, &n, &e) < 0)
        problem(c, true, CHECK_DELETIONS, &none, "pending deletions: %s", e.msg);
    else
        lock_marks_free(marks, n);
    struct lock_info *locks;
    if (lock_list(c->r, &locks, &n, &e) < 0) {
        problem(c, true, CHECK_LOCK, &none, "locks: %s", e.msg);
        return;
    }
    char hex[OID_HEX_LEN + 1];
    for (size_t i = 0; i < n; i++)
        if (!locks[i].readable)
            problem(c, false, CHECK_LOCK, &locks[i].id,
                    "lock %s cannot be read; it holds up prune's deletions until removed",
                    oid_hex(&locks[i].id, hex));
    free(locks);
}

static void bad_index_first(void *ctx, const struct oid *id, const char *msg)
{
    struct ck *c = ctx;
    if (c->range.part == 0) bad_index(ctx, id, msg);
}

static int cmp_missing(const void *a, const void *b)
{
    return oid_cmp(&((const struct missing *)a)->id, &((const struct missing *)b)->id);
}

/* Counts the blobs of a pack data/ lacks, for the report after the last pass. */
static int note_missing(struct ck *c, const struct oid *id, uint64_t blobs, uint64_t used,
                        struct err *e)
{
    struct missing key = {.id = *id};
    struct missing *m =
        c->n_miss ? bsearch(&key, c->miss, c->n_miss, sizeof key, cmp_missing) : NULL;
    if (!m) {
        struct missing *v = realloc(c->miss, (c->n_miss + 1) * sizeof *v);
        if (!v) return err_set(e, ERR_FAIL, "check: out of memory");
        c->miss = v;
        c->miss[c->n_miss++] = key;
        qsort(c->miss, c->n_miss, sizeof *c->miss, cmp_missing);
        m = bsearch(&key, c->miss, c->n_miss, sizeof key, cmp_missing);
    }
    m->blobs += blobs;
    m->used += used;
    return 0;
}

/* The passes (max_memory): fixed costs are the trees (every pass loads them, and the walk may
 * hold each pending), packs and snapshots; the data blobs are split. */
static int plan(struct ck *c, size_t n_snaps, uint32_t *passes, struct err *e)
{
    *passes = 1;
    if (!c->o->max_memory) return 0;
    struct walk_counts wc;
    int rc = walk_count_index(c->r, &wc, e);
    if (rc < 0) return rc;
    /* A pack in the index's table, in the data/ listing, and the per-pack tables. */
    uint64_t per_pack = WALK_COST_PACK + sizeof(struct walk_pack) + 16;
    uint64_t fixed = (256 << 10) + wc.trees * (WALK_COST_BLOB + WALK_COST_PENDING_TREE) +
                     wc.packs * per_pack + n_snaps * WALK_COST_SNAPSHOT;
    return walk_plan_passes(c->o->max_memory, fixed, wc.data * WALK_COST_BLOB, "check", passes, e);
}

static int list_packs(struct ck *c, struct err *e)
{
    int rc = walk_list_packs(c->r, &c->data, &c->n_data, e);
    if (rc < 0) return rc;
    c->st->packs = c->n_data;
    size_t nd = c->n_data ? c->n_data : 1;
    c->need = calloc(nd, sizeof *c->need);
    c->header_bad = calloc(nd, 1);
    c->unindexed = calloc(nd, sizeof *c->unindexed);
    c->n_header = calloc(nd, sizeof *c->n_header);
    if (!c->need || !c->header_bad || !c->unindexed || !c->n_header)
        return err_set(e, ERR_FAIL, "check: out of memory");
    return select_reads(c, e);
}

/* One pass: the index entries of c->range (and every tree), the walk, the headers. */
static int check_pass(struct ck *c, const struct walk_root *roots, size_t n_roots, struct err *e)
{
    struct repo *r = c->r;
    const struct check_options *o = c->o;
    struct check_stats *st = c->st;
    struct oid *index_ids = NULL;
    size_t n_index = 0;
    char hex[OID_HEX_LEN + 1], hex2[OID_HEX_LEN + 1];
    bool first = c->range.part == 0;
    int rc = walk_load_index_range(r, NULL, 0, &c->range, first ? NULL : c->index_ids, c->n_index,
                                   &index_ids, &n_index, bad_index_first, c, e);
    if (rc < 0) return rc;
    if (first) {
        /* The packs after the index: a pack an index file lists was uploaded before it. */
        c->index_ids = index_ids;
        c->n_index = st->index_files = n_index;
        if ((rc = list_packs(c, e)) < 0) return rc;
    } else {
        free(index_ids);
    }
    struct idx *x = repo_index(r);
    size_t n_blobs = idx_blob_count(x);
    c->n_table = idx_pack_count(x);
    free(c->has_blobs);
    free(c->header_ok);
    walk_bits_free(&c->used);
    walk_bits_free(&c->confirmed);
    c->has_blobs = calloc(c->n_table ? c->n_table : 1, 1);
    c->header_ok = calloc(c->n_table ? c->n_table : 1, 1);
    if (!c->has_blobs || !c->header_ok) return err_set(e, ERR_FAIL, "check: out of memory");
    if ((rc = walk_bits_init(&c->used, n_blobs, e)) < 0 ||
        (rc = walk_bits_init(&c->confirmed, n_blobs, e)) < 0)
        return rc;
    /* A pack's extent counts each blob once: trees in the pass of their range. */
    for (size_t pos = 0; pos < n_blobs; pos++) {
        struct idx_loc loc;
        struct oid id;
        idx_at(x, pos, &id, &loc);
        c->has_blobs[loc.pack] = 1;
        if (!walk_in_range(&c->range, &id)) continue;
        const struct walk_pack *wp = walk_find_pack(c->data, c->n_data, idx_pack_id(x, loc.pack));
        uint32_t end = loc.offset + loc.stored_len;
        if (wp && end > c->need[wp - c->data]) c->need[wp - c->data] = end;
    }

    struct walk_options wo = {.threads = o->threads,
                              .range = &c->range,
                              .cancel = o->cancel,
                              .problem = walk_problem,
                              .ctx = c};
    struct walk_stats ws;
    progress(c, "walking snapshots", 0, n_roots);
    if ((rc = walk_trees(r, roots, n_roots, &c->used, &wo, &ws, e)) < 0) return rc;
    if (first) st->trees = ws.trees;

    /* Packs the index lists that are not there, and the counts of this range. */
    uint32_t *miss_blobs = calloc(c->n_table ? c->n_table : 1, sizeof *miss_blobs);
    uint32_t *miss_used = calloc(c->n_table ? c->n_table : 1, sizeof *miss_used);
    uint8_t *gone = calloc(c->n_table ? c->n_table : 1, 1);
    if (!miss_blobs || !miss_used || !gone) rc = err_set(e, ERR_FAIL, "check: out of memory");
    for (uint32_t pk = 0; rc == 0 && pk < c->n_table; pk++)
        gone[pk] = c->has_blobs[pk] && !walk_find_pack(c->data, c->n_data, idx_pack_id(x, pk));
    for (size_t pos = 0; rc == 0 && pos < n_blobs; pos++) {
        struct idx_loc loc;
        struct oid id;
        idx_at(x, pos, &id, &loc);
        if (!walk_in_range(&c->range, &id)) continue;
        bool used = walk_bit(&c->used, pos);
        st->blobs++;
        st->blobs_used += used;
        if (gone[loc.pack]) {
            miss_blobs[loc.pack]++;
            miss_used[loc.pack] += used;
        }
    }
    for (uint32_t pk = 0; rc == 0 && pk < c->n_table; pk++)
        if (gone[pk]) rc = note_missing(c, idx_pack_id(x, pk), miss_blobs[pk], miss_used[pk], e);
    free(miss_blobs);
    free(miss_used);
    free(gone);
    if (rc < 0) return rc;

    /* Every pack: header against index, and data when selected. */
    progress(c, o->read ? "reading packs" : "reading pack headers", 0, c->n_data);
    /* Reading whole packs holds one pack per thread: two unless told otherwise. */
    unsigned threads = o->threads ? o->threads : o->read != CHECK_READ_NONE ? 2 : 0;
    if ((rc = walk_parallel(c->n_data, threads, check_pack, c, o->cancel, e)) < 0) return rc;
    for (size_t pos = 0; pos < n_blobs; pos++) {
        if (walk_bit(&c->confirmed, pos)) continue;
        struct idx_loc loc;
        struct oid id;
        idx_at(x, pos, &id, &loc);
        /* A pack that is missing, or whose header could not be read, was reported itself. */
        if (!c->header_ok[loc.pack] || !walk_in_range(&c->range, &id)) continue;
        problem(c, true, CHECK_BLOB, &id,
                "blob %s: the index places it in pack %s, whose header does not list it",
                oid_hex(&id, hex), oid_hex(idx_pack_id(x, loc.pack), hex2));
    }
    /* Blobs of this range that failed to decrypt in the first pass. */
    for (size_t i = 0; i < c->n_bad; i++)
        if (walk_in_range(&c->range, &c->bad[i].id))
            report_bad_blob(c, &c->bad[i].id, &c->bad[i].pack, c->bad[i].msg);
    uint64_t mem = idx_memory(x) + 2 * (n_blobs / 8) + c->n_table * 2 +
                   c->n_data * (sizeof *c->data + 14) + c->n_bad * sizeof *c->bad;
    if (mem > st->memory) st->memory = mem;
    return 0;
}

int check_run(struct repo *r, const struct check_options *o, struct check_stats *st, struct err *e)
{
    memset(st, 0, sizeof *st);
    struct ck c = {.r = r, .o = o, .st = st};
    pthread_mutex_init(&c.mu, NULL);
    struct snapshot *snaps = NULL;
    size_t n_snaps = 0;
    struct walk_root *roots = NULL;
    uint32_t passes = 1;
    int rc;

    /* Snapshots first: a backup writes its index files before its snapshot, so every snapshot
     * listed now finds its blobs in the index loaded next, backups running or not. */
    progress(&c, "loading snapshots", 0, 1);
    if ((rc = walk_load_snapshots(r, &snaps, &n_snaps, bad_snapshot, &c, e)) < 0) goto out;
    st->snapshots = n_snaps;
    progress(&c, "loading the index", 0, 1);
    if ((rc = plan(&c, n_snaps, &passes, e)) < 0) goto out;
    st->passes = passes;
    roots = malloc((n_snaps ? n_snaps : 1) * sizeof *roots);
    if (!roots) {
        rc = err_set(e, ERR_FAIL, "check: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_snaps; i++) {
        roots[i].snapshot = snaps[i].id;
        roots[i].tree = snaps[i].tree;
    }
    for (uint32_t k = 0; k < passes && rc == 0; k++) {
        c.range.part = k;
        c.range.parts = passes;
        if (passes > 1) progress(&c, "pass", k + 1, passes);
        rc = check_pass(&c, roots, n_snaps, e);
    }
    if (rc < 0) goto out;
    report_packs(&c);
    check_marks_and_locks(&c);
out:
    pthread_mutex_destroy(&c.mu);
    snap_list_free(snaps, n_snaps);
    free(roots);
    free(c.data);
    free(c.need);
    free(c.has_blobs);
    free(c.header_ok);
    free(c.read_sel);
    free(c.header_bad);
    free(c.unindexed);
    free(c.n_header);
    free(c.miss);
    free(c.bad);
    free(c.index_ids);
    walk_bits_free(&c.used);
    walk_bits_free(&c.confirmed);
    if (rc < 0 && rc != ERR_CANCELED) return err_wrap(e, "check");
    return rc;
}

/* ---- repair index ---- */

struct repair {
    struct repo *r;
    const struct check_options *o;
    struct check_repair_stats *st;
    struct walk_pack *data;
    const struct oid *old;
    size_t n_old;
    pthread_mutex_t mu;
    struct walk_ixlist packs;
    int rc;
    struct err e;
};

/* Writes the collected packs as one index file; the last one supersedes every old file.
 * Caller holds the lock. */
static int repair_flush(struct repair *R, bool last, struct err *e)
{
    struct buf plain = BUF_INIT;
    struct oid id;
    int rc = idx_file_encode(R->packs.v, R->packs.n, last ? R->old : NULL, last ? R->n_old : 0,
                             &plain, e);
    if (rc == 0) rc = repo_save_file(R->r, "index", "index", plain.data, plain.len, &id, e);
    buf_free(&plain);
    walk_ixlist_clear(&R->packs);
    if (rc < 0) return err_wrap(e, "writing a new index file");
    R->st->index_files_written++;
    return 0;
}

static int repair_one(void *ctx, size_t i, struct err *e)
{
    struct repair *R = ctx;
    const struct oid *id = &R->data[i].id;
    struct pack_entry *ents = NULL;
    size_t n = 0;
    struct err pe;
    int rc = pack_read_header(repo_backend(R->r), repo_keys(R->r), id, &ents, &n, &pe);
    char hex[OID_HEX_LEN + 1];
    if (rc == ERR_NOT_FOUND) return 0;
    pthread_mutex_lock(&R->mu);
    if (rc < 0) {
        R->st->packs_bad++;
        if (R->o->report) {
            char msg[ERR_MSG_MAX + 128];
            snprintf(msg, sizeof msg, "pack %s left out of the index: %s", oid_hex(id, hex),
                     pe.msg);
            struct check_problem p = {true, CHECK_PACK, *id, msg};
            R->o->report(R->o->ctx, &p);
        }
        pthread_mutex_unlock(&R->mu);
        return 0;
    }
    rc = walk_ixlist_add(&R->packs, id, ents, n, e);
    if (rc < 0) {
        pthread_mutex_unlock(&R->mu);
        return rc;
    }
    R->st->packs++;
    R->st->blobs += n;
    rc = 0;
    if (R->packs.blobs >= REPAIR_FILE_BLOBS) rc = repair_flush(R, false, e);
    pthread_mutex_unlock(&R->mu);
    return rc;
}

int check_repair_index(struct repo *r, const struct check_options *o, struct check_repair_stats *st,
                       struct err *e)
{
    memset(st, 0, sizeof *st);
    struct repair R = {.r = r, .o = o, .st = st};
    pthread_mutex_init(&R.mu, NULL);
    struct oid *old = NULL;
    size_t n_old = 0, n_data = 0;
    /* The old files are listed before the packs: a pack a listed file names was uploaded before
     * that file was written, so it is in the later pack listing. */
    int rc = repo_list_ids(r, "index", &old, &n_old, e);
    if (rc == ERR_NOT_FOUND) rc = 0;
    if (rc == 0) rc = walk_list_packs(r, &R.data, &n_data, e);
    R.old = old;
    R.n_old = n_old;
    if (rc == 0 && o->progress) o->progress(o->ctx, "reading pack headers", 0, n_data);
    if (rc == 0) rc = walk_parallel(n_data, o->threads, repair_one, &R, o->cancel, e);
    if (rc == 0) rc = repair_flush(&R, true, e);
    char name[96], hex[OID_HEX_LEN + 1];
    for (size_t i = 0; rc == 0 && i < n_old; i++) {
        snprintf(name, sizeof name, "index/%s", oid_hex(&old[i], hex));
        int rrc = repo_remove_file(r, "index", &old[i], e);
        if (rrc == ERR_NOT_FOUND) continue;
        if (rrc < 0) {
            rc = err_wrap(e, "removing the replaced index file %s", name);
            break;
        }
        st->index_files_removed++;
    }
    walk_ixlist_free(&R.packs);
    free(R.data);
    free(old);
    pthread_mutex_destroy(&R.mu);
    if (rc < 0 && rc != ERR_CANCELED) return err_wrap(e, "repair index");
    return rc;
}
