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

struct ck {
    struct repo *r;
    const struct check_options *o;
    struct check_stats *st;
    pthread_mutex_t mu;
    struct walk_pack *data;
    size_t n_data;
    size_t n_table;
    uint32_t *need;     /* per pack number: bytes the index says the pack has at least */
    uint8_t *has_blobs; /* per pack number: the index lists blobs in it */
    struct walk_bits used, confirmed;
    uint8_t *header_ok; /* per pack number: its header was read and compared */
    uint8_t *read_sel;  /* per listed pack: read its data */
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

/* Compares a pack's header with the index and, when selected, reads and verifies its blobs. */
static int check_pack(void *ctx, size_t i, struct err *e)
{
    struct ck *c = ctx;
    const struct walk_pack *wp = &c->data[i];
    struct repo *r = c->r;
    struct idx *x = repo_index(r);
    char name[80], hex[OID_HEX_LEN + 1];
    pack_object_name(&wp->id, name);
    uint32_t num = 0;
    bool indexed = idx_pack_find(x, &wp->id, &num) && num < c->n_table && c->has_blobs[num];
    if (indexed && (uint64_t)c->need[num] + PACK_TRAILER > wp->size)
        problem(c, true, CHECK_PACK, &wp->id,
                "pack %s is truncated: %llu bytes, but the index places blobs up to byte %u",
                oid_hex(&wp->id, hex), (unsigned long long)wp->size, c->need[num]);

    struct pack_entry *ents = NULL;
    size_t n = 0;
    struct buf whole = BUF_INIT;
    struct err pe;
    int rc;
    bool read = c->read_sel && c->read_sel[i];
    if (read) {
        rc = backend_load(repo_backend(r), name, 0, 0, &whole, &pe);
        if (rc == 0) {
            size_t need = 0;
            rc = pack_header_decode(repo_keys(r), &wp->id, whole.data, whole.len, whole.len, &ents,
                                    &n, &need, &pe);
        }
    } else {
        rc = pack_read_header(repo_backend(r), repo_keys(r), &wp->id, &ents, &n, &pe);
    }
    if (rc == ERR_NOT_FOUND) {
        /* Deleted since listed: only prune deletes, and the caller holds the prune lock, so
         * this is someone removing files by hand. */
        problem(c, true, CHECK_PACK, &wp->id, "pack %s vanished during the check",
                oid_hex(&wp->id, hex));
        buf_free(&whole);
        return 0;
    }
    if (rc < 0) {
        problem(c, indexed, CHECK_PACK, &wp->id, "pack %s: %s%s", oid_hex(&wp->id, hex), pe.msg,
                indexed ? "" : " (the pack is in no index)");
        buf_free(&whole);
        return 0;
    }
    size_t unindexed = 0;
    for (size_t k = 0; k < n; k++) {
        const struct pack_entry *pk = &ents[k];
        struct idx_loc loc;
        size_t pos;
        if (!idx_lookup_pos(x, &pk->id, &loc, &pos)) {
            unindexed++;
        } else if (loc.pack == num && indexed) {
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
        if (!read) continue;
        struct buf plain = BUF_INIT;
        struct err be;
        int brc =
            crypt_blob_open(repo_keys(r), (enum blob_type)pk->type, &pk->id,
                            whole.data + pk->offset, pk->stored_len, pk->raw_len, &plain, &be);
        buf_free(&plain);
        if (brc < 0) {
            char hex2[OID_HEX_LEN + 1];
            bool used = idx_lookup_pos(x, &pk->id, &loc, &pos) && walk_bit(&c->used, pos);
            problem(c, true, CHECK_BLOB, &pk->id, "blob %s in pack %s%s: %s", oid_hex(&pk->id, hex),
                    oid_hex(&wp->id, hex2), used ? " (used by snapshots)" : "", be.msg);
        }
        pthread_mutex_lock(&c->mu);
        c->st->blobs_read++;
        pthread_mutex_unlock(&c->mu);
    }
    if (read) {
        pthread_mutex_lock(&c->mu);
        c->st->packs_read++;
        c->st->bytes_read += whole.len;
        pthread_mutex_unlock(&c->mu);
    }
    if (indexed) c->header_ok[num] = 1;
    if (!idx_pack_find(x, &wp->id, NULL))
        problem(c, false, CHECK_PACK, &wp->id,
                "pack %s (%zu blobs) is in no index: left by a backup that was interrupted or is "
                "still running; prune removes it",
                oid_hex(&wp->id, hex), n);
    else if (unindexed)
        problem(c, false, CHECK_PACK, &wp->id,
                "pack %s holds %zu blobs that no index lists (unused; prune removes them)",
                oid_hex(&wp->id, hex), unindexed);
    free(ents);
    buf_free(&whole);
    return 0;
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

int check_run(struct repo *r, const struct check_options *o, struct check_stats *st, struct err *e)
{
    memset(st, 0, sizeof *st);
    struct ck c = {.r = r, .o = o, .st = st};
    pthread_mutex_init(&c.mu, NULL);
    struct oid *index_ids = NULL;
    size_t n_index = 0;
    struct snapshot *snaps = NULL;
    size_t n_snaps = 0;
    struct walk_root *roots = NULL;
    char hex[OID_HEX_LEN + 1], hex2[OID_HEX_LEN + 1];
    int rc;

    /* Snapshots first: a backup writes its index files before its snapshot, so every snapshot
     * listed now finds its blobs in the index loaded next, backups running or not. */
    progress(&c, "loading snapshots", 0, 1);
    if ((rc = walk_load_snapshots(r, &snaps, &n_snaps, bad_snapshot, &c, e)) < 0) goto out;
    st->snapshots = n_snaps;
    progress(&c, "loading the index", 0, 1);
    if ((rc = walk_load_index(r, &index_ids, &n_index, bad_index, &c, e)) < 0) goto out;
    st->index_files = n_index;
    if ((rc = walk_list_packs(r, &c.data, &c.n_data, e)) < 0) goto out;
    struct idx *x = repo_index(r);
    size_t n_blobs = idx_blob_count(x);
    c.n_table = idx_pack_count(x);
    st->blobs = n_blobs;
    st->packs = c.n_data;
    c.need = calloc(c.n_table ? c.n_table : 1, sizeof *c.need);
    c.has_blobs = calloc(c.n_table ? c.n_table : 1, 1);
    c.header_ok = calloc(c.n_table ? c.n_table : 1, 1);
    if (!c.need || !c.has_blobs || !c.header_ok) {
        rc = err_set(e, ERR_FAIL, "check: out of memory");
        goto out;
    }
    if ((rc = walk_bits_init(&c.used, n_blobs, e)) < 0 ||
        (rc = walk_bits_init(&c.confirmed, n_blobs, e)) < 0)
        goto out;
    for (size_t pos = 0; pos < n_blobs; pos++) {
        struct idx_loc loc;
        idx_at(x, pos, NULL, &loc);
        uint32_t end = loc.offset + loc.stored_len;
        if (end > c.need[loc.pack]) c.need[loc.pack] = end;
        c.has_blobs[loc.pack] = 1;
    }

    /* The snapshots' trees. */
    roots = malloc((n_snaps ? n_snaps : 1) * sizeof *roots);
    if (!roots) {
        rc = err_set(e, ERR_FAIL, "check: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_snaps; i++) {
        roots[i].snapshot = snaps[i].id;
        roots[i].tree = snaps[i].tree;
    }
    struct walk_options wo = {
        .threads = o->threads, .cancel = o->cancel, .problem = walk_problem, .ctx = &c};
    struct walk_stats ws;
    progress(&c, "walking snapshots", 0, n_snaps);
    if ((rc = walk_trees(r, roots, n_snaps, &c.used, &wo, &ws, e)) < 0) goto out;
    st->trees = ws.trees;
    st->blobs_used = walk_bits_count(&c.used);

    /* Packs the index lists that are not there. */
    for (uint32_t pk = 0; pk < c.n_table; pk++) {
        if (!c.has_blobs[pk]) continue;
        const struct oid *id = idx_pack_id(x, pk);
        if (walk_find_pack(c.data, c.n_data, id)) continue;
        size_t blobs = 0, used = 0;
        for (size_t pos = 0; pos < n_blobs; pos++) {
            struct idx_loc loc;
            idx_at(x, pos, NULL, &loc);
            if (loc.pack != pk) continue;
            blobs++;
            used += walk_bit(&c.used, pos);
        }
        problem(&c, true, CHECK_PACK, id,
                "pack %s is missing: the index lists %zu blobs in it, %zu of them used by "
                "snapshots",
                oid_hex(id, hex), blobs, used);
    }

    /* Every pack: header against index, and data when selected. */
    if ((rc = select_reads(&c, e)) < 0) goto out;
    progress(&c, o->read ? "reading packs" : "reading pack headers", 0, c.n_data);
    /* Reading whole packs holds one pack per thread: two unless told otherwise. */
    unsigned threads = o->threads ? o->threads : o->read != CHECK_READ_NONE ? 2 : 0;
    if ((rc = walk_parallel(c.n_data, threads, check_pack, &c, o->cancel, e)) < 0) goto out;
    for (size_t pos = 0; pos < n_blobs; pos++) {
        if (walk_bit(&c.confirmed, pos)) continue;
        struct idx_loc loc;
        struct oid id;
        idx_at(x, pos, &id, &loc);
        /* A pack that is missing, or whose header could not be read, was reported itself. */
        if (!c.header_ok[loc.pack]) continue;
        problem(&c, true, CHECK_BLOB, &id,
                "blob %s: the index places it in pack %s, whose header does not list it",
                oid_hex(&id, hex), oid_hex(idx_pack_id(x, loc.pack), hex2));
    }
    check_marks_and_locks(&c);
    st->memory = idx_memory(x) + 2 * (n_blobs / 8) + c.n_table * 6 + c.n_data * sizeof *c.data;
out:
    pthread_mutex_destroy(&c.mu);
    free(index_ids);
    snap_list_free(snaps, n_snaps);
    free(roots);
    free(c.data);
    free(c.need);
    free(c.has_blobs);
    free(c.header_ok);
    free(c.read_sel);
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
    struct idx_file_pack *packs;
    size_t n_packs, cap_packs, n_blobs;
    int rc;
    struct err e;
};

/* Writes the collected packs as one index file; the last one supersedes every old file.
 * Caller holds the lock. */
static int repair_flush(struct repair *R, bool last, struct err *e)
{
    struct buf plain = BUF_INIT;
    struct oid id;
    int rc =
        idx_file_encode(R->packs, R->n_packs, last ? R->old : NULL, last ? R->n_old : 0, &plain, e);
    if (rc == 0) rc = repo_save_file(R->r, "index", "index", plain.data, plain.len, &id, e);
    buf_free(&plain);
    for (size_t i = 0; i < R->n_packs; i++)
        free(R->packs[i].entries);
    R->n_packs = R->n_blobs = 0;
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
    if (R->n_packs == R->cap_packs) {
        size_t cap = R->cap_packs ? R->cap_packs * 2 : 256;
        struct idx_file_pack *p = realloc(R->packs, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&R->mu);
            free(ents);
            return err_set(e, ERR_FAIL, "repair: out of memory");
        }
        R->packs = p;
        R->cap_packs = cap;
    }
    R->packs[R->n_packs].pack_id = *id;
    R->packs[R->n_packs].entries = ents;
    R->packs[R->n_packs].n = n;
    R->n_packs++;
    R->n_blobs += n;
    R->st->packs++;
    R->st->blobs += n;
    rc = 0;
    if (R->n_blobs >= REPAIR_FILE_BLOBS) rc = repair_flush(R, false, e);
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
        int rrc = backend_remove(repo_backend(r), name, e);
        if (rrc == ERR_NOT_FOUND) continue;
        if (rrc < 0) {
            rc = err_wrap(e, "removing the replaced index file %s", name);
            break;
        }
        st->index_files_removed++;
    }
    for (size_t i = 0; i < R.n_packs; i++)
        free(R.packs[i].entries);
    free(R.packs);
    free(R.data);
    free(old);
    pthread_mutex_destroy(&R.mu);
    if (rc < 0 && rc != ERR_CANCELED) return err_wrap(e, "repair index");
    return rc;
}
