/* prune.c - mark, repack and delete what no snapshot needs, beside running backups; see
 * prune.h and docs/MAINTENANCE.md (the numbered steps below follow its protocol).
 *
 * Blob attribution: the in-memory index keeps one location per blob, the first it loaded. A
 * blob stored twice (a backup that honoured a mark stores it again) must be attributed to the
 * copy that stays, so the index is loaded without the packs of earlier marks, which are then
 * added from their headers: a blob is attributed to a marked pack only when no other pack has
 * it. Usage is counted per attributed copy; other copies are unused bytes.
 */
#include "repo/prune.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "repo/index.h"
#include "repo/lock.h"
#include "repo/pack.h"
#include "repo/prune_int.h"
#include "repo/repo.h"
#include "repo/store.h"
#include "repo/walk.h"

/* Stored bytes a pack header takes per blob, and in all, for telling unused blobs from
 * overhead. */
#define PRUNE_HEADER_PER_BLOB 48
#define PRUNE_HEADER_FIXED 128

/* A pack's slot, looked up by ID (several passes: struct pr's `table`). */
struct tslot {
    struct oid id;
    uint32_t slot;
};

/* ---- what both files share (prune_int.h) ---- */

void prune_note_memory(struct pr *p, uint64_t extra)
{
    uint64_t m = idx_memory(repo_index(p->r)) + p->used.n / 8 + p->n_slots * sizeof *p->ps +
                 p->n_rep * sizeof *p->rep + extra;
    if (m > p->st->memory) p->st->memory = m;
}

/* ---- step 1: what is there ---- */

static int list_data(struct pr *p, struct err *e)
{
    return walk_list_packs(p->r, &p->data, &p->n_data, e);
}

static const struct walk_pack *find_data(const struct pr *p, const struct oid *id)
{
    return walk_find_pack(p->data, p->n_data, id);
}

static int load_marks(struct pr *p, struct err *e)
{
    int rc = lock_marks_load(p->r, &p->marks, &p->n_marks, e);
    if (rc < 0) return rc;
    size_t total = 0;
    for (size_t i = 0; i < p->n_marks; i++)
        total += p->marks[i].n_packs;
    p->marked = malloc((total ? total : 1) * sizeof *p->marked);
    if (!p->marked) return err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < p->n_marks; i++)
        for (size_t k = 0; k < p->marks[i].n_packs; k++)
            p->marked[p->n_marked++] = p->marks[i].packs[k];
    if (p->n_marked) qsort(p->marked, p->n_marked, sizeof *p->marked, prune_cmp_oid);
    size_t w = 0;
    for (size_t i = 0; i < p->n_marked; i++)
        if (!w || !oid_eq(&p->marked[w - 1], &p->marked[i])) p->marked[w++] = p->marked[i];
    p->n_marked = w;
    return 0;
}

/* The first pass lists the index files; later passes load the same ones, and those found since
 * (i_new, once the re-check has looked for them). */
static int load_index(struct pr *p, struct err *e)
{
    if (!p->listed) {
        int rc = walk_load_index_range(p->r, p->marked, p->n_marked, &p->range, NULL, 0, &p->i0,
                                       &p->n_i0, NULL, NULL, e);
        p->listed = rc == 0;
        return rc;
    }
    struct oid *only = malloc((p->n_i0 + p->n_i_new + 1) * sizeof *only), *ids = NULL;
    if (!only) return err_set(e, ERR_FAIL, "prune: out of memory");
    if (p->n_i0) memcpy(only, p->i0, p->n_i0 * sizeof *only);
    if (p->n_i_new) memcpy(only + p->n_i0, p->i_new, p->n_i_new * sizeof *only);
    size_t n_only = p->n_i0 + p->n_i_new, n = 0;
    qsort(only, n_only, sizeof *only, prune_cmp_oid);
    int rc = walk_load_index_range(p->r, p->marked, p->n_marked, &p->range, only, n_only, &ids, &n,
                                   NULL, NULL, e);
    free(ids);
    free(only);
    return rc;
}

/* Re-adds a marked pack from its header, after every other pack (see the top of this file). */
static int readd_one(void *ctx, size_t i, struct err *e)
{
    struct pr *p = ctx;
    const struct oid *id = &p->marked[i];
    if (!find_data(p, id)) return 0; /* deleted already; the mark is dropped later */
    struct pack_entry *ents = NULL;
    size_t n = 0;
    char hex[OID_HEX_LEN + 1];
    int rc = pack_read_header(repo_backend(p->r), repo_keys(p->r), id, &ents, &n, e);
    if (rc == ERR_NOT_FOUND) return 0;
    if (rc < 0)
        return err_wrap(e, "pack %s (marked for deletion): reading its header (run check)",
                        oid_hex(id, hex));
    size_t kept = 0;
    for (size_t k = 0; k < n; k++)
        if (ents[k].type == BLOB_TREE || walk_in_range(&p->range, &ents[k].id))
            ents[kept++] = ents[k];
    n = kept;
    repo_index_lock(p->r, true);
    rc = idx_add_pack(repo_index(p->r), id, ents, n, e);
    repo_index_unlock(p->r);
    free(ents);
    return rc;
}

/* The index was loaded without the marked packs; they are added now, after every other. */
static int attribute_marked(struct pr *p, struct err *e)
{
    if (!p->n_marked) return 0;
    return walk_parallel(p->n_marked, p->o->threads, readd_one, p, p->stop, e);
}

/* ---- step 1: the walk ---- */

static void on_problem(void *ctx, enum walk_problem kind, const struct oid *snapshot,
                       const struct oid *tree, const struct oid *blob, const char *msg)
{
    struct pr *p = ctx;
    if (!p->walk_problems) {
        char hex[OID_HEX_LEN + 1];
        snprintf(p->problem_msg, sizeof p->problem_msg, "snapshot %s: %s", oid_hex(snapshot, hex),
                 msg);
    }
    p->walk_problems = true;
}

/* Whether a mark's snapshot list lacks s, i.e. s is new since that mark. */
static bool new_since_some_mark(const struct pr *p, const struct oid *s)
{
    for (size_t i = 0; i < p->n_marks; i++)
        if (!prune_has_oid(p->marks[i].snapshots, p->marks[i].n_snapshots, s)) return true;
    return false;
}

/* Snapshots are listed before the index is loaded: a backup writes its index files before its
 * snapshot, so every snapshot listed here finds its blobs in the index loaded next. Snapshots
 * saved later are the re-check's (step 4). */
static int load_snapshots(struct pr *p, struct err *e)
{
    return walk_load_snapshots(p->r, &p->snaps, &p->n_snaps, NULL, NULL, e);
}

static int walk_used(struct pr *p, struct err *e)
{
    int rc;
    free(p->walked);
    p->n_walked = 0;
    walk_bits_free(&p->used);
    p->walked = malloc((p->n_snaps ? p->n_snaps : 1) * sizeof *p->walked);
    struct walk_root *roots = malloc((p->n_snaps ? p->n_snaps : 1) * sizeof *roots);
    if (!p->walked || !roots) {
        free(roots);
        return err_set(e, ERR_FAIL, "prune: out of memory");
    }
    size_t n_roots = 0;
    for (size_t i = 0; i < p->n_snaps; i++) {
        p->walked[p->n_walked++] = p->snaps[i].id;
        /* A quick prune looks only at snapshots saved since some mark was made. */
        if (p->o->quick && !new_since_some_mark(p, &p->snaps[i].id)) continue;
        roots[n_roots].snapshot = p->snaps[i].id;
        roots[n_roots].tree = p->snaps[i].tree;
        n_roots++;
    }
    if (p->n_walked) qsort(p->walked, p->n_walked, sizeof *p->walked, prune_cmp_oid);
    repo_index_lock(p->r, true);
    rc = idx_seal(repo_index(p->r), e);
    repo_index_unlock(p->r);
    if (rc == 0) rc = walk_bits_init(&p->used, idx_blob_count(repo_index(p->r)), e);
    struct walk_stats ws;
    struct walk_options wo = {.threads = p->o->threads,
                              .range = &p->range,
                              .cancel = p->stop,
                              .problem = on_problem,
                              .ctx = p};
    prune_progress(p, "walking snapshots", 0, n_roots);
    if (rc == 0) rc = walk_trees(p->r, roots, n_roots, &p->used, &wo, &ws, e);
    free(roots);
    if (rc < 0) return rc;
    p->st->snapshots = n_roots;
    if (p->range.part == 0) p->st->trees = ws.trees;
    prune_note_memory(p, 0);
    if (p->walk_problems)
        return err_set(
            e, ERR_FAIL,
            "%llu problems in the snapshots, the first: %s; prune changed nothing "
            "(run check, then repair index; data that is lost for good: repair snapshots "
            "--forget)",
            (unsigned long long)ws.problems, p->problem_msg);
    return 0;
}

/* ---- step 2: what to do with each pack ---- */

static int cmp_tslot(const void *a, const void *b)
{
    return oid_cmp(&((const struct tslot *)a)->id, &((const struct tslot *)b)->id);
}

long prune_slot_of(const struct pr *p, const struct oid *id)
{
    uint32_t num;
    if (p->table) {
        struct tslot key = {.id = *id},
                     *t = bsearch(&key, p->table, p->n_table, sizeof key, cmp_tslot);
        if (t) return (long)t->slot;
    } else if (idx_pack_find(repo_index(p->r), id, &num) && num < p->n_table) {
        return (long)num;
    }
    const struct walk_pack *o = walk_find_pack(p->orphans, p->n_orphans, id);
    return o ? (long)(p->n_table + (size_t)(o - p->orphans)) : -1;
}

const struct oid *prune_slot_id(const struct pr *p, size_t s)
{
    if (s >= p->n_table) return &p->orphans[s - p->n_table].id;
    return p->table ? &p->table_ids[s] : idx_pack_id(repo_index(p->r), (uint32_t)s);
}

/* The slots, from the first pass's index. */
static int make_slots(struct pr *p, struct err *e)
{
    struct idx *x = repo_index(p->r);
    p->n_table = idx_pack_count(x);
    /* Orphans: in data/, in no index. */
    p->orphans = malloc((p->n_data ? p->n_data : 1) * sizeof *p->orphans);
    if (!p->orphans) return err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < p->n_data; i++)
        if (!idx_pack_find(x, &p->data[i].id, NULL)) p->orphans[p->n_orphans++] = p->data[i];
    p->n_slots = p->n_table + p->n_orphans;
    p->ps = calloc(p->n_slots ? p->n_slots : 1, sizeof *p->ps);
    if (!p->ps) return err_set(e, ERR_FAIL, "prune: out of memory");
    if (p->passes <= 1) return 0;
    p->table = malloc((p->n_table ? p->n_table : 1) * sizeof *p->table);
    p->table_ids = malloc((p->n_table ? p->n_table : 1) * sizeof *p->table_ids);
    if (!p->table || !p->table_ids) return err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < p->n_table; i++) {
        p->table_ids[i] = p->table[i].id = *idx_pack_id(x, (uint32_t)i);
        p->table[i].slot = (uint32_t)i;
    }
    if (p->n_table) qsort(p->table, p->n_table, sizeof *p->table, cmp_tslot);
    return 0;
}

/* A pack of the loaded index that has no slot: one the repack's store added (the pack table
 * keeps its numbers across loads). None of the loaded files lists it. */
#define NO_SLOT UINT32_MAX

/* Maps this pass's pack numbers to slots. */
static int map_slots(struct pr *p, struct err *e)
{
    struct idx *x = repo_index(p->r);
    size_t n_packs = idx_pack_count(x);
    free(p->num_slot);
    p->num_slot = malloc((n_packs ? n_packs : 1) * sizeof *p->num_slot);
    if (!p->num_slot) return err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < n_packs; i++) {
        long sl = prune_slot_of(p, idx_pack_id(x, (uint32_t)i));
        p->num_slot[i] = sl < 0 || (size_t)sl >= p->n_table ? NO_SLOT : (uint32_t)sl;
    }
    return 0;
}

/* The slot of the pack of the blob at `loc`, failing when it has none. */
static int blob_slot(const struct pr *p, const struct idx_loc *loc, uint32_t *slot, struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    *slot = p->num_slot[loc->pack];
    if (*slot == NO_SLOT)
        return err_set(e, ERR_FAIL, "pack %s appeared in the index between two passes",
                       oid_hex(idx_pack_id(repo_index(p->r), loc->pack), hex));
    return 0;
}

/* Adds this pass's blobs (those of its range) to the figures of their packs. */
static int count_pass(struct pr *p, struct err *e)
{
    struct idx *x = repo_index(p->r);
    size_t n = idx_blob_count(x);
    for (size_t pos = 0; pos < n; pos++) {
        struct idx_loc loc;
        struct oid id;
        uint32_t slot;
        idx_at(x, pos, &id, &loc);
        if (!walk_in_range(&p->range, &id)) continue; /* a tree of another range */
        int rc = blob_slot(p, &loc, &slot, e);
        if (rc < 0) return rc;
        struct pstat *s = &p->ps[slot];
        s->n_blobs++;
        s->blob_bytes += loc.stored_len;
        s->fl |= loc.type == 1 ? F_TREE : F_BLOBDATA;
        p->st->blobs++;
        if (walk_bit(&p->used, pos)) {
            s->n_used++;
            s->used_bytes += loc.stored_len;
            p->st->blobs_used++;
        }
    }
    prune_note_memory(p, 0);
    return 0;
}

static int pack_stats(struct pr *p, struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    for (size_t i = 0; i < p->n_slots; i++) {
        struct pstat *s = &p->ps[i];
        const struct oid *id = prune_slot_id(p, i);
        const struct walk_pack *d = find_data(p, id);
        if (d) {
            s->fl |= F_DATA;
            s->size = d->size;
        }
        if (prune_has_oid(p->marked, p->n_marked, id)) s->fl |= F_MARKED;
        if (!d && s->n_used)
            return err_set(e, ERR_FAIL,
                           "pack %s holds %u blobs that snapshots use, but it is missing; prune "
                           "changed nothing (run check, then repair index)",
                           oid_hex(id, hex), s->n_used);
        if (!d && s->n_blobs) s->fl |= F_GONE;
        if (d) {
            p->st->packs++;
            p->st->bytes += s->size;
            p->st->bytes_used += s->used_bytes;
        }
    }
    p->st->packs_unindexed = p->n_orphans;
    return 0;
}

/* The passes (max_memory): fixed costs are the trees (every pass loads them, and the walk may
 * hold each pending), packs and snapshots; the data blobs are split. A prune that changes the
 * repository repeats the passes to repack (when it repacks) and writes the new index from the
 * index files, one at a time (write_index_streamed). */
static int plan(struct pr *p, struct err *e)
{
    p->passes = 1;
    p->st->passes = 1;
    if (!p->o->max_memory) return 0;
    struct walk_counts wc;
    int rc = walk_count_index(p->r, &wc, e);
    if (rc < 0) return rc;
    /* A pack in the index's table, its figures, the data/ listing, and the slot lookup. */
    uint64_t per_pack = WALK_COST_PACK + sizeof(struct pstat) + sizeof(struct walk_pack) +
                        sizeof(struct tslot) + sizeof(struct oid) + 4;
    uint64_t fixed = (256 << 10) + wc.trees * (WALK_COST_BLOB + WALK_COST_PENDING_TREE) +
                     wc.packs * per_pack + p->n_snaps * (WALK_COST_SNAPSHOT + 2 * OID_LEN);
    p->fixed = fixed;
    p->split = wc.data * WALK_COST_BLOB;
    rc = walk_plan_passes(p->o->max_memory, fixed, p->split, "prune", &p->passes, e);
    p->st->passes = p->passes;
    p->reloads = p->passes > 1;
    return rc;
}

/* Loads pass k's range of the index (and every tree), places the marked packs' blobs, and walks
 * the snapshots, marking what the range uses. */
static int load_pass(struct pr *p, uint32_t k, struct err *e)
{
    p->range.part = k;
    p->range.parts = p->passes;
    if (p->passes > 1) prune_progress(p, "pass", k + 1, p->passes);
    int rc = load_index(p, e);
    if (rc == 0 && !p->ps) rc = list_data(p, e); /* once, in the first pass */
    if (rc == 0) rc = attribute_marked(p, e);
    if (rc == 0) rc = prune_canceled(p, e);
    if (rc == 0) rc = walk_used(p, e);
    return rc;
}

/* Step 1 in passes: each counts what its range uses. */
static int analyse(struct pr *p, struct err *e)
{
    int rc = 0;
    for (uint32_t k = 0; k < p->passes && rc == 0; k++) {
        if ((rc = load_pass(p, k, e)) < 0) break;
        if (k == 0 && (rc = make_slots(p, e)) < 0) break;
        if ((rc = map_slots(p, e)) == 0) rc = count_pass(p, e);
    }
    if (rc == 0) rc = pack_stats(p, e);
    return rc;
}

static uint64_t unused_of(const struct pstat *s)
{
    return s->size > s->used_bytes ? s->size - s->used_bytes : 0;
}

/* Unused bytes beyond the header's share: real unused blobs (or copies of blobs). */
static bool partly_used(const struct pstat *s)
{
    uint64_t overhead = PRUNE_HEADER_FIXED + (uint64_t)s->n_blobs * PRUNE_HEADER_PER_BLOB;
    return unused_of(s) > overhead;
}

struct cand {
    size_t slot;
    double share; /* unused share */
};

static int cmp_cand(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    if (a->share != b->share) return a->share > b->share ? -1 : 1;
    return a->slot < b->slot ? -1 : a->slot > b->slot;
}

static int decide(struct pr *p, struct err *e)
{
    uint64_t unused_after = 0;
    struct cand *cands = malloc((p->n_slots ? p->n_slots : 1) * sizeof *cands);
    if (!cands) return err_set(e, ERR_FAIL, "prune: out of memory");
    size_t n_cands = 0;
    uint64_t small = p->o->small_pack ? p->o->small_pack : repo_config(p->r)->pack_size / 4;
    size_t n_small[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < p->n_slots; i++) {
        struct pstat *s = &p->ps[i];
        if (!(s->fl & F_DATA)) continue;
        if (s->fl & F_MARKED) {
            if (s->n_used) s->fl |= F_UNMARK;
            if (s->n_used) unused_after += unused_of(s);
            continue;
        }
        if (p->o->quick) {
            unused_after += unused_of(s);
            continue;
        }
        if (!s->n_used) {
            s->fl |= F_DELETE;
            continue;
        }
        unused_after += unused_of(s);
        if (partly_used(s)) {
            cands[n_cands].slot = i;
            cands[n_cands].share = (double)unused_of(s) / (double)(s->size ? s->size : 1);
            n_cands++;
        }
        if (s->size < small) {
            s->fl |= F_SMALL;
            n_small[(s->fl & F_TREE ? 1 : 0) | (s->fl & F_BLOBDATA ? 2 : 0)]++;
        }
    }
    if (!p->o->quick) {
        double mu = p->o->max_unused;
        double allowed = mu >= 1 ? 1e300 : (double)p->st->bytes_used * mu / (1 - mu);
        qsort(cands, n_cands, sizeof *cands, cmp_cand);
        for (size_t k = 0; k < n_cands && (double)unused_after > allowed; k++) {
            struct pstat *s = &p->ps[cands[k].slot];
            s->fl |= F_REPACK;
            unused_after -= unused_of(s);
        }
        /* Small packs of one kind are merged when there are several. */
        for (size_t i = 0; i < p->n_slots; i++) {
            struct pstat *s = &p->ps[i];
            if (!(s->fl & F_SMALL) || (s->fl & F_REPACK)) continue;
            if (n_small[(s->fl & F_TREE ? 1 : 0) | (s->fl & F_BLOBDATA ? 2 : 0)] < 2) continue;
            s->fl |= F_REPACK;
            unused_after -= unused_of(s);
        }
    }
    free(cands);
    p->st->bytes_unused_after = unused_after;
    return 0;
}

/* ---- step 2: repack ---- */

static int cmp_rentry(const void *pa, const void *pb)
{
    const struct rentry *a = pa, *b = pb;
    if (a->slot != b->slot) return a->slot < b->slot ? -1 : 1;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

struct repack {
    struct pr *p;
    struct store *s;
    size_t *first; /* per repacked pack: its first entry in p->rep */
    size_t n_packs;
};

static int repack_one(void *ctx, size_t k, struct err *e)
{
    struct repack *R = ctx;
    struct pr *p = R->p;
    size_t a = R->first[k], b = R->first[k + 1];
    const struct oid *pack_id = prune_slot_id(p, p->rep[a].slot);
    char name[80], hex[OID_HEX_LEN + 1];
    pack_object_name(pack_id, name);
    struct buf pack = BUF_INIT, plain = BUF_INIT;
    int rc = backend_load(repo_backend(p->r), name, 0, 0, &pack, e);
    if (rc < 0) err_wrap(e, "repacking");
    for (size_t i = a; i < b && rc == 0; i++) {
        const struct rentry *r = &p->rep[i];
        if (!r->used) continue;
        if ((uint64_t)r->offset + r->stored_len > pack.len) {
            rc = err_set(e, ERR_FAIL, "repacking pack %s: blob %s lies past its end (run check)",
                         name + 8, oid_hex(&r->id, hex));
            break;
        }
        buf_reset(&plain);
        rc = crypt_blob_open(repo_keys(p->r), (enum blob_type)r->type, &r->id,
                             pack.data + r->offset, r->stored_len, r->raw_len, &plain, e);
        if (rc < 0) {
            err_wrap(e, "repacking pack %s: blob %s (run check)", name + 8, oid_hex(&r->id, hex));
            break;
        }
        rc = store_add(R->s, (enum blob_type)r->type, &r->id, plain.data, plain.len, NULL, e);
    }
    buf_free(&pack);
    buf_free(&plain);
    return rc;
}

/* Adds to p->rep the blobs of the loaded range that lie in the packs being repacked in slots
 * [from, to): when the index is loaded once, every such blob (the used ones are copied, and all
 * are listed again in the index while the pack waits for its deletion), else only the used ones
 * (the index is then written from the index files). `count` is the room p->rep has. */
static int collect_range(struct pr *p, size_t from, size_t to, size_t count, struct err *e)
{
    struct idx *x = repo_index(p->r);
    size_t n = idx_blob_count(x);
    char hex[OID_HEX_LEN + 1], hex2[OID_HEX_LEN + 1];
    for (size_t pos = 0; pos < n; pos++) {
        struct idx_loc loc;
        struct oid id;
        uint32_t slot;
        idx_at(x, pos, &id, &loc);
        int rc = blob_slot(p, &loc, &slot, e);
        if (rc < 0) return rc;
        /* Every pass loads every tree; each is taken in the pass of its range. */
        if (!walk_in_range(&p->range, &id)) continue;
        bool used = walk_bit(&p->used, pos);
        /* A load that placed a blob stored twice in another copy than the analysis did (index
         * files are decoded several at once) could otherwise leave a used blob in a pack that
         * goes; the copy placed here stays or is copied, so only this case stops prune. */
        if (used && !p->ps[slot].n_used)
            return err_set(e, ERR_FAIL,
                           "used blob %s is now placed in pack %s, which held no used blob when "
                           "prune counted; nothing was marked or deleted (run prune again)",
                           oid_hex(&id, hex), oid_hex(prune_slot_id(p, slot), hex2));
        if (!(p->ps[slot].fl & F_REPACK) || slot < from || slot >= to) continue;
        if (p->reloads && !used) continue;
        if (p->n_rep == count)
            return err_set(e, ERR_FAIL, "prune: the index changed between passes");
        struct rentry *r = &p->rep[p->n_rep++];
        r->id = id;
        r->slot = slot;
        r->offset = loc.offset;
        r->stored_len = loc.stored_len;
        r->raw_len = loc.raw_len;
        r->type = loc.type;
        r->used = used;
    }
    prune_note_memory(p, 0);
    return 0;
}

/* Copies the used blobs of p->rep (those of the `n_packs` packs `ids`) into new packs through
 * the store `s`. The packs are forgotten first: the store deduplicates against the index, and
 * would not store their blobs again otherwise. */
static int copy_used(struct pr *p, struct store *s, const struct oid *ids, size_t n_packs,
                     struct err *e)
{
    struct idx *x = repo_index(p->r);
    struct repack R = {.p = p, .s = s};
    R.first = malloc((n_packs + 1) * sizeof *R.first);
    if (!R.first) return err_set(e, ERR_FAIL, "prune: out of memory");
    qsort(p->rep, p->n_rep, sizeof *p->rep, cmp_rentry);
    size_t k = 0;
    for (size_t i = 0; i < p->n_rep; i++)
        if (!i || p->rep[i].slot != p->rep[i - 1].slot) R.first[k++] = i;
    R.first[k] = p->n_rep;
    R.n_packs = k;
    repo_index_lock(p->r, true);
    int rc = idx_forget_packs(x, ids, n_packs, NULL, e);
    repo_index_unlock(p->r);
    prune_progress(p, "repacking", 0, R.n_packs);
    unsigned threads = p->o->threads ? p->o->threads : 2;
    if (rc == 0) rc = walk_parallel(R.n_packs, threads, repack_one, &R, p->stop, e);
    free(R.first);
    return rc;
}

/* What collecting a repacked pack's blobs costs: in p->rep, each blob the index lists for it
 * (only the used ones when `used_only`), then each used one in the index once the store has
 * added its copy (a later batch's load drops it); its ID and its first entry. */
static uint64_t repack_cost(const struct pstat *s, bool used_only)
{
    return (uint64_t)(used_only ? s->n_used : s->n_blobs) * sizeof(struct rentry) +
           (uint64_t)s->n_used * WALK_COST_BLOB + sizeof(struct oid) + sizeof(size_t);
}

/* The batch starting at slot `from`: the repacked packs up to *to (exclusive) whose cost fits
 * p->repack_room (at least one pack). Returns the number of packs; *count gets the entries they
 * need in p->rep. */
static size_t next_batch(const struct pr *p, size_t from, size_t *to, size_t *count)
{
    size_t n = 0;
    uint64_t cost = 0;
    *count = 0;
    size_t i = from;
    for (; i < p->n_slots; i++) {
        const struct pstat *s = &p->ps[i];
        if (!(s->fl & F_REPACK)) continue;
        uint64_t c = repack_cost(s, p->reloads);
        if (n && p->repack_room && cost + c > p->repack_room) break;
        cost += c;
        n++;
        *count += p->reloads ? s->n_used : s->n_blobs;
    }
    *to = i;
    return n;
}

/* Splits the repack into batches of packs whose blobs fit beside one pass, within max_memory
 * (one batch, as without a bound, when they all fit). A pack's blobs must fit whole: when one
 * does not fit beside a pass of the analysis, the repack makes more passes (down to the least a
 * pass can hold), and fails, naming the least bound that would work, when even that is not
 * enough. */
static int plan_repack(struct pr *p, struct err *e)
{
    uint64_t all = 0, largest = 0;
    size_t big = 0;
    for (size_t i = 0; i < p->n_slots; i++) {
        const struct pstat *s = &p->ps[i];
        if (!(s->fl & F_REPACK)) continue;
        all += repack_cost(s, p->reloads);
        if (repack_cost(s, true) > largest) {
            largest = repack_cost(s, true);
            big = i;
        }
    }
    p->st->repack_batches = all ? 1 : 0;
    uint64_t m = p->o->max_memory;
    if (!m || !all) return 0;
    uint32_t k = p->passes;
    uint64_t need = walk_pass_need(p->fixed, p->split, k);
    if (need + all <= m) return 0;
    while (k < WALK_MAX_PASSES && (need > m || m - need < largest))
        need = walk_pass_need(p->fixed, p->split, ++k);
    if (need > m || m - need < largest) {
        uint64_t one = walk_pass_need(p->fixed, p->split, 1),
                 least = walk_pass_need(p->fixed, p->split, WALK_MAX_PASSES);
        least = (one < least ? one : least) + largest;
        char b1[32], b2[32], hex[OID_HEX_LEN + 1];
        snprintf(b1, sizeof b1, "%.1f MiB", (double)m / (1 << 20));
        snprintf(b2, sizeof b2, "%.1f MiB", (double)least / (1 << 20));
        return err_set(e, ERR_FAIL,
                       "a memory bound of %s is too small to prune this repository: at least %s "
                       "(%llu bytes) is needed, to repack pack %s (its %u used blobs take %llu "
                       "bytes beside what a pass holds)",
                       b1, b2, (unsigned long long)least, oid_hex(prune_slot_id(p, big), hex),
                       p->ps[big].n_used, (unsigned long long)largest);
    }
    p->passes = k;
    p->st->passes = k;
    p->reloads = true;
    p->repack_room = m - need;
    p->st->repack_batches = 0;
    size_t to, count;
    for (size_t from = 0; next_batch(p, from, &to, &count); from = to)
        p->st->repack_batches++;
    return 0;
}

/* Repacks partly used packs, in batches (plan_repack). Each batch's blobs are collected range by
 * range (passes: the analysis's last range, still loaded, serves the first batch; the others
 * are loaded and walked again), then copied through one store, kept open across batches, so the
 * new packs come out as full as in one batch; the store indexes them before anything is
 * marked. */
static int repack(struct pr *p, struct err *e)
{
    uint32_t analysed = p->passes;
    int rc = plan_repack(p, e);
    if (rc < 0 || !p->st->repack_batches) return rc;
    size_t cap = 0, n_ids = 0, to, count;
    for (size_t from = 0, n; (n = next_batch(p, from, &to, &count)); from = to) {
        if (count > cap) cap = count;
        if (n > n_ids) n_ids = n;
    }
    struct oid *ids = malloc(n_ids * sizeof *ids);
    p->rep = malloc((cap ? cap : 1) * sizeof *p->rep);
    if (!ids || !p->rep) {
        free(ids);
        return err_set(e, ERR_FAIL, "prune: out of memory for repacking %zu blobs", cap);
    }
    struct store *s = NULL;
    rc = store_new(p->r, &s, e);
    /* The analysis's last range is loaded, with its walk, unless the repack makes more passes. */
    bool loaded = analysed == p->passes;
    uint32_t last = p->range.part;
    for (size_t from = 0, n; rc == 0 && (n = next_batch(p, from, &to, &count)); from = to) {
        size_t j = 0;
        for (size_t i = from; i < to; i++)
            if (p->ps[i].fl & F_REPACK) ids[j++] = *prune_slot_id(p, i);
        p->n_rep = 0;
        for (uint32_t i = 0; i < p->passes && rc == 0; i++) {
            uint32_t part = loaded ? (last + i) % p->passes : i;
            if (!loaded || i > 0) {
                /* The store's uploads add to the index: none may run while it is loaded. */
                rc = store_wait(s, e);
                if (rc == 0) rc = load_pass(p, part, e);
                if (rc == 0) rc = map_slots(p, e);
            }
            if (rc == 0) rc = collect_range(p, from, to, count, e);
        }
        if (rc == 0) rc = copy_used(p, s, ids, n, e);
        loaded = false;
    }
    free(ids);
    if (s) {
        /* Whatever was uploaded gets indexed, also after a failure, so nothing is lost and the
         * next prune finds it. */
        struct err fe;
        int frc = store_flush(s, rc == 0 ? e : &fe);
        if (rc == 0) rc = frc;
        struct store_stats ss;
        store_stats(s, &ss);
        store_free(s);
        p->st->blobs_repacked = ss.blobs_new;
        p->st->bytes_repacked = ss.bytes_stored;
    }
    if (rc < 0) return rc;
    for (size_t i = 0; i < p->n_slots; i++) {
        if (!(p->ps[i].fl & F_REPACK)) continue;
        p->st->packs_repacked++;
        prune_report(p, PRUNE_REPACK, prune_slot_id(p, i), &p->ps[i]);
    }
    return 0;
}

/* ---- step 3: mark ---- */

static int mark_new(struct pr *p, struct err *e)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n_slots; i++)
        if (p->ps[i].fl & (F_DELETE | F_REPACK)) n++;
    if (!n) return 0;
    struct lock_mark *m = &p->fresh;
    m->marked_at = p->now;
    m->packs = malloc(n * sizeof *m->packs);
    m->snapshots = malloc((p->n_walked ? p->n_walked : 1) * sizeof *m->snapshots);
    if (!m->packs || !m->snapshots) return err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < p->n_slots; i++)
        if (p->ps[i].fl & (F_DELETE | F_REPACK)) m->packs[m->n_packs++] = *prune_slot_id(p, i);
    memcpy(m->snapshots, p->walked, p->n_walked * sizeof *p->walked);
    m->n_snapshots = p->n_walked;
    int rc = lock_mark_save(p->r, m, e);
    if (rc < 0) return rc;
    p->fresh_saved = true;
    p->st->packs_marked = n;
    return 0;
}

/* ---- step 4: who may still refer to marked packs ---- */

static int list_writers(struct pr *p, struct err *e)
{
    struct lock_info *locks;
    size_t n;
    int rc = lock_list(p->r, &locks, &n, e);
    if (rc < 0) return rc;
    p->holders = malloc((n ? n : 1) * sizeof *p->holders);
    if (!p->holders) {
        free(locks);
        return err_set(e, ERR_FAIL, "prune: out of memory");
    }
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n; i++) {
        /* An unreadable lock says nothing, so it counts as a live writer. */
        if (!locks[i].readable)
            p->holders[p->n_holders++] = locks[i].id;
        else if (locks[i].kind == LOCK_BACKUP && !lock_is_stale(&locks[i], now, p->o->stale_sec))
            p->holders[p->n_holders++] = locks[i].holder;
    }
    free(locks);
    if (p->n_holders) qsort(p->holders, p->n_holders, sizeof *p->holders, prune_cmp_oid);
    size_t w = 0;
    for (size_t i = 0; i < p->n_holders; i++)
        if (!w || !oid_eq(&p->holders[w - 1], &p->holders[i])) p->holders[w++] = p->holders[i];
    p->n_holders = w;
    p->st->waiting_writers = w;
    return 0;
}

/* Narrows each mark's waiting set to the writers still live; a mark that never had one (just
 * made, or its prune stopped before listing locks) waits for every live writer. A pack is
 * blocked while any mark listing it waits for someone. */
static int compute_pending(struct pr *p, struct err *e)
{
    size_t nm = prune_n_all_marks(p);
    p->pending = calloc(nm ? nm : 1, 1);
    if (!p->pending) return err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < nm; i++) {
        struct lock_mark *m = prune_mark_at(p, i);
        bool waits = false;
        if (!m->has_waiting)
            waits = p->n_holders > 0;
        else
            for (size_t k = 0; k < m->n_waiting && !waits; k++)
                waits = prune_has_oid(p->holders, p->n_holders, &m->waiting[k]);
        p->pending[i] = waits;
        if (!waits) continue;
        for (size_t k = 0; k < m->n_packs; k++) {
            long s = prune_slot_of(p, &m->packs[k]);
            if (s >= 0) p->ps[s].fl |= F_BLOCKED;
        }
    }
    return 0;
}

/* ---- step 4: re-check snapshots saved since the walk ---- */

/* Adds to i_new the index files written since the load (by backups, or by the repack's store);
 * with `decode`, their content goes into the in-memory index too (one pass only: in several, the
 * passes load them by range). */
int prune_find_new_index_files(struct pr *p, bool decode, struct err *e)
{
    struct oid *now_ids = NULL;
    size_t n_now = 0;
    int rc = repo_list_ids(p->r, "index", &now_ids, &n_now, e);
    if (rc == ERR_NOT_FOUND) rc = 0;
    if (rc < 0) return rc;
    size_t n_had = p->n_i_new;
    struct oid *grown = realloc(p->i_new, (n_had + n_now + 1) * sizeof *p->i_new);
    if (!grown) {
        free(now_ids);
        return err_set(e, ERR_FAIL, "prune: out of memory");
    }
    p->i_new = grown;
    struct buf plain = BUF_INIT;
    for (size_t i = 0; i < n_now && rc == 0; i++) {
        if (prune_has_oid(p->i0, p->n_i0, &now_ids[i]) ||
            prune_has_oid(p->i_new, n_had, &now_ids[i]))
            continue;
        if (decode) {
            buf_reset(&plain);
            rc = repo_load_file(p->r, "index", "index", &now_ids[i], &plain, e);
            if (rc == ERR_NOT_FOUND) {
                rc = 0;
                continue;
            }
            if (rc < 0) break;
            repo_index_lock(p->r, true);
            rc = idx_file_decode(repo_index(p->r), plain.data, plain.len, NULL, NULL, e);
            repo_index_unlock(p->r);
        }
        if (rc == 0) p->i_new[p->n_i_new++] = now_ids[i];
    }
    buf_free(&plain);
    free(now_ids);
    if (p->n_i_new) qsort(p->i_new, p->n_i_new, sizeof *p->i_new, prune_cmp_oid);
    return rc;
}

/* Packs holding a blob that `used` (over the loaded index's positions) marks are unmarked. */
static void unmark_used(struct pr *p, const struct walk_bits *used)
{
    struct idx *x = repo_index(p->r);
    size_t n = idx_blob_count(x);
    for (size_t pos = 0; pos < n; pos++) {
        if (!walk_bit(used, pos)) continue;
        struct idx_loc loc;
        idx_at(x, pos, NULL, &loc);
        long s = prune_slot_of(p, idx_pack_id(x, loc.pack));
        if (s >= 0 && (p->ps[s].fl & (F_MARKED | F_DELETE | F_REPACK))) p->ps[s].fl |= F_UNMARK;
    }
}

/* Walks the new snapshots' roots, range by range in several passes (each loading the index files
 * of the first pass and those found since), and unmarks the packs they use. */
static int recheck_walk(struct pr *p, const struct walk_root *roots, size_t n_roots, struct err *e)
{
    int rc = prune_find_new_index_files(p, !p->reloads, e);
    struct walk_bits used2 = {0};
    for (uint32_t k = 0; k < p->passes && rc == 0 && !p->walk_problems; k++) {
        p->range.part = k;
        p->range.parts = p->passes;
        if (p->reloads) {
            if (p->passes > 1) prune_progress(p, "pass", k + 1, p->passes);
            rc = load_index(p, e);
            if (rc == 0) rc = attribute_marked(p, e);
        }
        if (rc == 0) {
            repo_index_lock(p->r, true);
            rc = idx_seal(repo_index(p->r), e);
            repo_index_unlock(p->r);
        }
        walk_bits_free(&used2);
        if (rc == 0) rc = walk_bits_init(&used2, idx_blob_count(repo_index(p->r)), e);
        struct walk_options wo = {.threads = p->o->threads,
                                  .range = &p->range,
                                  .cancel = p->stop,
                                  .problem = on_problem,
                                  .ctx = p};
        struct walk_stats ws;
        if (rc == 0) rc = walk_trees(p->r, roots, n_roots, &used2, &wo, &ws, e);
        if (rc == 0 && !p->walk_problems) unmark_used(p, &used2);
        prune_note_memory(p, used2.n / 8);
    }
    walk_bits_free(&used2);
    return rc;
}

static int recheck(struct pr *p, struct err *e)
{
    bool any = false;
    for (size_t i = 0; i < p->n_slots && !any; i++)
        any = prune_candidate(&p->ps[i]);
    if (!any) return 0;
    struct oid *ids = NULL;
    size_t n_ids = 0;
    int rc = repo_list_ids(p->r, "snapshots", &ids, &n_ids, e);
    if (rc == ERR_NOT_FOUND) rc = 0;
    if (rc < 0) return rc;
    size_t n_new = 0;
    for (size_t i = 0; i < n_ids; i++)
        if (!prune_has_oid(p->walked, p->n_walked, &ids[i])) ids[n_new++] = ids[i];
    if (!n_new) {
        free(ids);
        return 0;
    }
    /* Snapshots saved since the walk were written by backups that ended since: load the index
     * files they wrote, then walk them. */
    struct walk_root *roots = malloc(n_new * sizeof *roots);
    size_t n_roots = 0;
    if (!roots) rc = err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < n_new && rc == 0; i++) {
        struct snapshot s;
        memset(&s, 0, sizeof s);
        int lrc = snap_load(p->r, &ids[i], &s, e);
        if (lrc == ERR_NOT_FOUND) continue;
        if (lrc < 0) {
            rc = lrc;
            break;
        }
        roots[n_roots].snapshot = ids[i];
        roots[n_roots].tree = s.tree;
        n_roots++;
        snap_free(&s);
    }
    if (rc == 0) rc = recheck_walk(p, roots, n_roots, e);
    if (rc == 0 && p->walk_problems) {
        /* Something new refers to blobs we cannot place: delete nothing this time. */
        for (size_t i = 0; i < p->n_slots; i++)
            p->ps[i].fl |= F_BLOCKED;
    } else if (rc == 0) {
        /* These snapshots are now known not to use what stays marked. */
        struct oid *w = realloc(p->walked, (p->n_walked + n_roots + 1) * sizeof *w);
        if (!w) {
            rc = err_set(e, ERR_FAIL, "prune: out of memory");
        } else {
            p->walked = w;
            for (size_t i = 0; i < n_roots; i++)
                p->walked[p->n_walked++] = roots[i].snapshot;
            qsort(p->walked, p->n_walked, sizeof *p->walked, prune_cmp_oid);
        }
    }
    free(roots);
    free(ids);
    return rc;
}

void prune_options_default(struct prune_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_unused = PRUNE_DEFAULT_MAX_UNUSED;
}

static void pr_free(struct pr *p)
{
    free(p->i0);
    free(p->i_new);
    lock_marks_free(p->marks, p->n_marks);
    free(p->marked);
    free(p->data);
    free(p->ps);
    free(p->orphans);
    free(p->table);
    free(p->table_ids);
    free(p->num_slot);
    snap_list_free(p->snaps, p->n_snaps);
    free(p->walked);
    walk_bits_free(&p->used);
    free(p->rep);
    free(p->holders);
    free(p->pending);
    free(p->now_slots);
    lock_mark_free(&p->fresh);
}

int prune_run(struct repo *r, struct lock *lk, const struct prune_options *o,
              struct prune_stats *st, struct err *e)
{
    memset(st, 0, sizeof *st);
    struct pr p = {.r = r, .o = o, .st = st, .stop = lk ? lock_stop_flag(lk) : NULL};
    p.now = (int64_t)time(NULL);
    int rc;
    /* 1. What is there: marks (before the index, as writers read them), snapshots (before the
     *    index, see load_snapshots), the index, the packs, then the blobs snapshots use. */
    prune_progress(&p, "loading the index", 0, 1);
    if ((rc = load_marks(&p, e)) < 0 || (rc = load_snapshots(&p, e)) < 0 ||
        (rc = plan(&p, e)) < 0 || (rc = analyse(&p, e)) < 0 || (rc = decide(&p, e)) < 0)
        goto out;
    if (o->dry_run) {
        /* Who would hold deletions up, without marking anything; the repack's batches. */
        if ((rc = list_writers(&p, e)) < 0 || (rc = plan_repack(&p, e)) < 0) goto out;
        for (size_t i = 0; i < p.n_slots; i++) {
            struct pstat *s = &p.ps[i];
            if (s->fl & F_REPACK) {
                prune_report(&p, PRUNE_REPACK, prune_slot_id(&p, i), s);
                st->packs_repacked++;
                st->bytes_repacked += s->used_bytes;
            }
            if (s->fl & (F_DELETE | F_REPACK)) st->packs_marked++;
            if ((s->fl & (F_DELETE | F_REPACK)) && p.n_holders) s->fl |= F_BLOCKED;
        }
        for (size_t i = 0; i < p.n_marks; i++) {
            struct lock_mark *m = &p.marks[i];
            bool waits = !m->has_waiting ? p.n_holders > 0 : false;
            for (size_t k = 0; m->has_waiting && k < m->n_waiting && !waits; k++)
                waits = prune_has_oid(p.holders, p.n_holders, &m->waiting[k]);
            for (size_t k = 0; waits && k < m->n_packs; k++) {
                long s = prune_slot_of(&p, &m->packs[k]);
                if (s >= 0) p.ps[s].fl |= F_BLOCKED;
            }
        }
        rc = prune_finish(&p, e);
        uint64_t freed = st->bytes_deleted;
        st->bytes_freed = freed > st->bytes_repacked ? freed - st->bytes_repacked : 0;
        goto out;
    }
    /* 2. Repack partly used packs. */
    if ((rc = prune_canceled(&p, e)) < 0 || (rc = repack(&p, e)) < 0) goto out;
    /* 3. Mark. 4. List the writers after the mark is stored; re-check new snapshots. */
    prune_progress(&p, "marking", 0, 1);
    if ((rc = prune_canceled(&p, e)) < 0 || (rc = mark_new(&p, e)) < 0 ||
        (rc = list_writers(&p, e)) < 0 || (rc = compute_pending(&p, e)) < 0 ||
        (rc = recheck(&p, e)) < 0)
        goto out;
    /* 5. New index, deletions, marks, stale locks. */
    rc = prune_finish(&p, e);
    if (st->bytes_deleted > st->bytes_repacked)
        st->bytes_freed = st->bytes_deleted - st->bytes_repacked;
out:
    if (rc < 0 && p.ps && !o->dry_run && st->packs_pending == 0) prune_count_pending(&p);
    prune_note_memory(&p, 0);
    pr_free(&p);
    if (rc < 0 && rc != ERR_CANCELED) return err_wrap(e, "prune");
    return rc;
}
