/* prune_finish.c - prune's step 5 (docs/MAINTENANCE.md): the plan that prune.c made is carried
 * out. A new index without the packs that go is written first (one set of files that supersedes
 * every file it replaces, so an interruption leaves the old index in force), then the packs are
 * deleted, the replaced index files removed, the marks rewritten (a new mark stored before the
 * old one is removed) and stale locks removed. See prune_int.h for what it shares with prune.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "repo/index.h"
#include "repo/lock.h"
#include "repo/pack.h"
#include "repo/prune_int.h"
#include "repo/repo.h"
#include "repo/walk.h"

/* The index is rewritten when there are at least this many index files, even if nothing was
 * deleted: loading many small files costs every backup time. */
#define PRUNE_COMPACT_FILES 32
/* Blobs per index file written by prune (about 2.5 MiB a file). */
#define PRUNE_INDEX_FILE_BLOBS 65536

/* ---- the new index ---- */

static bool dropped(const struct pstat *s)
{
    return (s->fl & (F_NOW | F_GONE)) != 0;
}

struct ixw {
    struct pr *p;
    struct walk_ixlist l;
};

static int ixw_flush(struct ixw *w, bool last, struct err *e)
{
    struct pr *p = w->p;
    struct oid *sup = NULL;
    size_t n_sup = 0;
    int rc = 0;
    if (last) {
        /* The last file names every file it replaces: until it exists, the old files stay in
         * force and the new ones only duplicate them. */
        sup = malloc((p->n_i0 + p->n_i_new + 1) * sizeof *sup);
        if (!sup) return err_set(e, ERR_FAIL, "prune: out of memory");
        memcpy(sup, p->i0, p->n_i0 * sizeof *sup);
        memcpy(sup + p->n_i0, p->i_new, p->n_i_new * sizeof *sup);
        n_sup = p->n_i0 + p->n_i_new;
    }
    struct buf plain = BUF_INIT;
    struct oid id;
    if (w->l.n || last) rc = idx_file_encode(w->l.v, w->l.n, sup, n_sup, &plain, e);
    if (rc == 0 && (w->l.n || last))
        rc = repo_save_file(p->r, "index", "index", plain.data, plain.len, &id, e);
    if (rc == 0 && (w->l.n || last)) p->st->index_files_written++;
    buf_free(&plain);
    free(sup);
    walk_ixlist_clear(&w->l);
    if (rc < 0) return err_wrap(e, "writing the new index");
    return 0;
}

static int ixw_add(struct ixw *w, const struct oid *pack, struct pack_entry *ents, size_t n,
                   struct err *e)
{
    int rc = walk_ixlist_add(&w->l, pack, ents, n, e);
    if (rc == 0 && w->l.blobs >= PRUNE_INDEX_FILE_BLOBS) rc = ixw_flush(w, false, e);
    return rc;
}

static bool pack_dropped(const struct pr *p, const struct oid *pack)
{
    long s = prune_slot_of(p, pack);
    return s >= 0 && dropped(&p->ps[s]);
}

struct oid_list {
    struct oid *v;
    size_t n, cap;
};

/* Lists the packs of index `x` (sealed), each with the blobs `x` places in it, except packs
 * dropped, packs in `skip` (sorted), and packs no blob is placed in; the IDs of the packs listed
 * go to `emitted` when it is not NULL. */
static int emit_packs(struct pr *p, struct ixw *w, struct idx *x, const struct oid_list *skip,
                      struct oid_list *emitted, struct err *e)
{
    size_t n = idx_blob_count(x), n_packs = idx_pack_count(x);
    /* Blob positions grouped by pack (a counting sort): 4 bytes a blob for a moment. */
    uint32_t *start = calloc(n_packs + 1, sizeof *start);
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);
    int rc = 0;
    if (!start || !order) {
        rc = err_set(e, ERR_FAIL, "prune: out of memory writing the index");
        goto out;
    }
    prune_note_memory(p, (n + n_packs) * sizeof *order);
    for (size_t pos = 0; pos < n; pos++) {
        struct idx_loc loc;
        idx_at(x, pos, NULL, &loc);
        start[loc.pack + 1]++;
    }
    for (size_t i = 0; i < n_packs; i++)
        start[i + 1] += start[i];
    for (size_t pos = 0; pos < n; pos++) {
        struct idx_loc loc;
        idx_at(x, pos, NULL, &loc);
        order[start[loc.pack]++] = (uint32_t)pos;
    }
    for (size_t i = n_packs; i > 0; i--)
        start[i] = start[i - 1];
    start[0] = 0;
    for (uint32_t pk = 0; pk < n_packs && rc == 0; pk++) {
        size_t a = start[pk], b = start[pk + 1];
        const struct oid *id = idx_pack_id(x, pk);
        if (a == b || pack_dropped(p, id)) continue;
        if (skip && skip->n && bsearch(id, skip->v, skip->n, sizeof *skip->v, prune_cmp_oid))
            continue;
        struct pack_entry *ents = malloc((b - a) * sizeof *ents);
        if (!ents) {
            rc = err_set(e, ERR_FAIL, "prune: out of memory writing the index");
            break;
        }
        for (size_t i = a; i < b; i++) {
            struct idx_loc loc;
            idx_at(x, order[i], &ents[i - a].id, &loc);
            ents[i - a].type = loc.type;
            ents[i - a].offset = loc.offset;
            ents[i - a].stored_len = loc.stored_len;
            ents[i - a].raw_len = loc.raw_len;
        }
        rc = ixw_add(w, id, ents, b - a, e);
        if (rc == 0 && emitted) {
            if (emitted->n == emitted->cap) {
                size_t cap = emitted->cap ? emitted->cap * 2 : 64;
                struct oid *v = realloc(emitted->v, cap * sizeof *v);
                if (!v) {
                    rc = err_set(e, ERR_FAIL, "prune: out of memory writing the index");
                    break;
                }
                emitted->v = v;
                emitted->cap = cap;
            }
            emitted->v[emitted->n++] = *id;
        }
    }
out:
    free(start);
    free(order);
    return rc;
}

/* The packs of index files written since the load (by backups, or by the repack), each with
 * all the blobs its file lists. The in-memory index may place such a blob in an older copy,
 * in a marked pack loaded first, which this prune may delete: the new copy must stay listed. */
static int emit_new_files(struct pr *p, struct ixw *w, struct oid_list *emitted, struct err *e)
{
    struct buf plain = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < p->n_i_new && rc == 0; i++) {
        buf_reset(&plain);
        struct idx *t = NULL;
        rc = repo_load_file(p->r, "index", "index", &p->i_new[i], &plain, e);
        if (rc == 0) rc = idx_new(&t, e);
        if (rc == 0) rc = idx_file_decode(t, plain.data, plain.len, NULL, NULL, e);
        if (rc == 0) rc = idx_seal(t, e);
        if (rc == 0) rc = emit_packs(p, w, t, NULL, emitted, e);
        idx_free(t);
    }
    buf_free(&plain);
    if (emitted->n) qsort(emitted->v, emitted->n, sizeof *emitted->v, prune_cmp_oid);
    return rc;
}

/* Writes index files listing every pack that stays: the packs of files written since the load
 * with all their blobs, the others with the blobs the index places in them, and the repacked
 * packs that wait for deletion with all their blobs. */
static int write_index(struct pr *p, struct err *e)
{
    struct idx *x = repo_index(p->r);
    repo_index_lock(p->r, true);
    int rc = idx_seal(x, e);
    repo_index_unlock(p->r);
    if (rc < 0) return rc;
    struct ixw w = {.p = p};
    struct oid_list emitted = {0};
    rc = emit_new_files(p, &w, &emitted, e);
    if (rc == 0) rc = emit_packs(p, &w, x, &emitted, NULL, e);
    for (size_t i = 0; i < p->n_rep && rc == 0;) {
        size_t j = i;
        while (j < p->n_rep && p->rep[j].slot == p->rep[i].slot)
            j++;
        if (!dropped(&p->ps[p->rep[i].slot])) {
            struct pack_entry *ents = malloc((j - i) * sizeof *ents);
            if (!ents) {
                rc = err_set(e, ERR_FAIL, "prune: out of memory writing the index");
                break;
            }
            for (size_t k = i; k < j; k++) {
                ents[k - i].id = p->rep[k].id;
                ents[k - i].type = p->rep[k].type;
                ents[k - i].offset = p->rep[k].offset;
                ents[k - i].stored_len = p->rep[k].stored_len;
                ents[k - i].raw_len = p->rep[k].raw_len;
            }
            rc = ixw_add(&w, prune_slot_id(p, p->rep[i].slot), ents, j - i, e);
        }
        i = j;
    }
    if (rc == 0) rc = ixw_flush(&w, true, e);
    walk_ixlist_free(&w.l);
    free(emitted.v);
    return rc;
}

static bool pack_kept(void *ctx, const struct oid *pack)
{
    return !pack_dropped(ctx, pack);
}

static bool list_none(void *ctx, const struct oid *pack)
{
    (void)ctx;
    (void)pack;
    return false;
}

/* The files i0 and i_new that some other of them supersedes (left by an interrupted prune): their
 * packs are listed in the file that superseded them, or gone. */
static int superseded_files(struct pr *p, struct oid_list *sup, struct err *e)
{
    struct buf plain = BUF_INIT;
    struct idx *none = NULL; /* stays empty */
    int rc = idx_new(&none, e);
    for (size_t i = 0; i < p->n_i0 + p->n_i_new && rc == 0; i++) {
        const struct oid *id = i < p->n_i0 ? &p->i0[i] : &p->i_new[i - p->n_i0];
        struct oid *v = NULL;
        size_t n = 0;
        buf_reset(&plain);
        rc = repo_load_file(p->r, "index", "index", id, &plain, e);
        if (rc == ERR_NOT_FOUND) { /* vanished while the first pass listed it */
            rc = 0;
            continue;
        }
        if (rc == 0)
            rc = idx_file_decode_filtered(none, plain.data, plain.len, list_none, NULL, &v, &n, e);
        if (rc == 0 && n) {
            struct oid *grown = realloc(sup->v, (sup->n + n) * sizeof *grown);
            if (!grown)
                rc = err_set(e, ERR_FAIL, "prune: out of memory");
            else {
                sup->v = grown;
                memcpy(sup->v + sup->n, v, n * sizeof *v);
                sup->n += n;
            }
        }
        free(v);
    }
    idx_free(none);
    buf_free(&plain);
    if (sup->n) qsort(sup->v, sup->n, sizeof *sup->v, prune_cmp_oid);
    return rc;
}

/* The new index in several passes, without the whole index in memory: each index file in force
 * is decoded alone, and its packs that stay are listed again with all the blobs it lists for them
 * (a pack listed by two files is listed twice; the loader merges such lists). A marked pack that
 * stays but no file lists is listed from its header, as a single pass lists it. Holds one decoded
 * file and one file being written at a time. */
static int write_index_streamed(struct pr *p, struct err *e)
{
    struct ixw w = {.p = p};
    struct oid_list sup = {0}, emitted = {0};
    struct buf plain = BUF_INIT;
    int rc = superseded_files(p, &sup, e);
    for (size_t i = 0; i < p->n_i0 + p->n_i_new && rc == 0; i++) {
        const struct oid *id = i < p->n_i0 ? &p->i0[i] : &p->i_new[i - p->n_i0];
        if (prune_has_oid(sup.v, sup.n, id)) continue;
        struct idx *t = NULL;
        buf_reset(&plain);
        rc = repo_load_file(p->r, "index", "index", id, &plain, e);
        if (rc == ERR_NOT_FOUND) {
            rc = 0;
            continue;
        }
        if (rc == 0) rc = idx_new(&t, e);
        if (rc == 0)
            rc = idx_file_decode_filtered(t, plain.data, plain.len, pack_kept, p, NULL, NULL, e);
        if (rc == 0) rc = idx_seal(t, e);
        if (rc == 0) rc = emit_packs(p, &w, t, NULL, &emitted, e);
        idx_free(t);
    }
    buf_free(&plain);
    if (emitted.n) qsort(emitted.v, emitted.n, sizeof *emitted.v, prune_cmp_oid);
    char hex[OID_HEX_LEN + 1];
    for (size_t i = 0; i < p->n_slots && rc == 0; i++) {
        const struct pstat *s = &p->ps[i];
        const struct oid *id = prune_slot_id(p, i);
        if (!(s->fl & F_MARKED) || !(s->fl & F_DATA) || dropped(s) ||
            prune_has_oid(emitted.v, emitted.n, id))
            continue;
        struct pack_entry *ents = NULL;
        size_t n = 0;
        rc = pack_read_header(repo_backend(p->r), repo_keys(p->r), id, &ents, &n, e);
        if (rc < 0) {
            err_wrap(e, "pack %s (marked for deletion): reading its header", oid_hex(id, hex));
            break;
        }
        rc = ixw_add(&w, id, ents, n, e);
    }
    if (rc == 0) rc = ixw_flush(&w, true, e);
    walk_ixlist_free(&w.l);
    free(sup.v);
    free(emitted.v);
    return rc;
}

/* ---- deletions, marks ---- */

static int delete_one(void *ctx, size_t k, struct err *e)
{
    struct pr *p = ctx;
    char name[80];
    pack_object_name(prune_slot_id(p, p->now_slots[k]), name);
    int rc = repo_remove_file(p->r, "data", prune_slot_id(p, p->now_slots[k]), e);
    if (rc == ERR_NOT_FOUND) return 0;
    if (rc < 0) return err_wrap(e, "deleting pack %s", name + 8);
    return 0;
}

static int remove_index_files(struct pr *p, struct err *e)
{
    char name[96], hex[OID_HEX_LEN + 1];
    for (size_t i = 0; i < p->n_i0 + p->n_i_new; i++) {
        const struct oid *id = i < p->n_i0 ? &p->i0[i] : &p->i_new[i - p->n_i0];
        snprintf(name, sizeof name, "index/%s", oid_hex(id, hex));
        int rc = repo_remove_file(p->r, "index", id, e);
        if (rc == ERR_NOT_FOUND) continue;
        if (rc < 0) return err_wrap(e, "removing the replaced index file %s", name);
        p->st->index_files_removed++;
    }
    return 0;
}

/* Rewrites each mark whose packs or waiting set changed; drops emptied ones. The new mark is
 * stored before the old one is removed, so a pack stays marked throughout. */
static int update_marks(struct pr *p, struct err *e)
{
    size_t nm = prune_n_all_marks(p);
    for (size_t i = 0; i < nm; i++) {
        struct lock_mark *m = prune_mark_at(p, i);
        struct lock_mark nw = {.marked_at = m->marked_at};
        nw.packs = malloc((m->n_packs ? m->n_packs : 1) * sizeof *nw.packs);
        if (!nw.packs) return err_set(e, ERR_FAIL, "prune: out of memory");
        for (size_t k = 0; k < m->n_packs; k++) {
            long s = prune_slot_of(p, &m->packs[k]);
            if (s < 0) continue; /* gone from data/ and from the index */
            const struct pstat *ps = &p->ps[s];
            if (!(ps->fl & F_DATA) || (ps->fl & (F_NOW | F_UNMARK))) continue;
            nw.packs[nw.n_packs++] = m->packs[k];
        }
        if (nw.n_packs) {
            if (p->pending[i]) {
                /* Still waiting: for the writers of its set that are live now. */
                nw.has_waiting = true;
                const struct oid *src = m->has_waiting ? m->waiting : p->holders;
                size_t n_src = m->has_waiting ? m->n_waiting : p->n_holders;
                nw.waiting = malloc((n_src ? n_src : 1) * sizeof *nw.waiting);
                if (!nw.waiting) {
                    lock_mark_free(&nw);
                    return err_set(e, ERR_FAIL, "prune: out of memory");
                }
                for (size_t k = 0; k < n_src; k++)
                    if (prune_has_oid(p->holders, p->n_holders, &src[k]))
                        nw.waiting[nw.n_waiting++] = src[k];
            } else {
                /* Not waiting for anyone: only kept because a re-check or the cancel stopped
                 * its deletion; the next prune decides again. */
                nw.has_waiting = true;
            }
            bool same = m->has_waiting && nw.n_packs == m->n_packs &&
                        nw.n_waiting == m->n_waiting &&
                        (!nw.n_waiting ||
                         memcmp(nw.waiting, m->waiting, nw.n_waiting * sizeof *nw.waiting) == 0);
            if (same && i < p->n_marks) {
                lock_mark_free(&nw);
                continue;
            }
            nw.snapshots = malloc((p->n_walked ? p->n_walked : 1) * sizeof *nw.snapshots);
            if (!nw.snapshots) {
                lock_mark_free(&nw);
                return err_set(e, ERR_FAIL, "prune: out of memory");
            }
            memcpy(nw.snapshots, p->walked, p->n_walked * sizeof *p->walked);
            nw.n_snapshots = p->n_walked;
            int rc = lock_mark_save(p->r, &nw, e);
            if (rc < 0) {
                lock_mark_free(&nw);
                return rc;
            }
            p->st->packs_pending += nw.n_packs;
        }
        lock_mark_free(&nw);
        int rc = lock_mark_remove(p->r, &m->id, e);
        if (rc < 0) return rc;
    }
    return 0;
}

void prune_count_pending(struct pr *p)
{
    for (size_t i = 0; i < prune_n_all_marks(p); i++) {
        struct lock_mark *m = prune_mark_at(p, i);
        for (size_t k = 0; k < m->n_packs; k++) {
            long s = prune_slot_of(p, &m->packs[k]);
            if (s < 0) continue;
            const struct pstat *ps = &p->ps[s];
            if ((ps->fl & F_DATA) && !(ps->fl & (F_NOW | F_UNMARK))) p->st->packs_pending++;
        }
    }
}

/* Reports and counts each pack deleted or unmarked, and on a dry run each that would stay
 * marked (a real run counts those when it rewrites the marks). */
static void report_outcome(struct pr *p, bool dry_run)
{
    for (size_t i = 0; i < p->n_slots; i++) {
        struct pstat *s = &p->ps[i];
        if (s->fl & F_NOW) {
            if (!(s->fl & F_REPACK)) prune_report(p, PRUNE_DELETE, prune_slot_id(p, i), s);
            p->st->packs_deleted++;
            p->st->bytes_deleted += s->size;
        } else if ((s->fl & F_DATA) && (s->fl & F_UNMARK)) {
            prune_report(p, PRUNE_UNMARK, prune_slot_id(p, i), s);
            p->st->packs_unmarked++;
        } else if (dry_run && (s->fl & F_DATA) && (s->fl & (F_MARKED | F_DELETE | F_REPACK))) {
            prune_report(p, PRUNE_PENDING, prune_slot_id(p, i), s);
            p->st->packs_pending++;
        }
    }
}

int prune_finish(struct pr *p, struct err *e)
{
    size_t n_now = 0;
    bool index_changes = false;
    p->now_slots = malloc((p->n_slots ? p->n_slots : 1) * sizeof *p->now_slots);
    if (!p->now_slots) return err_set(e, ERR_FAIL, "prune: out of memory");
    for (size_t i = 0; i < p->n_slots; i++) {
        struct pstat *s = &p->ps[i];
        if (prune_candidate(s)) {
            s->fl |= F_NOW;
            p->now_slots[n_now++] = i;
        }
        /* Deleting a pack an index lists, or forgetting a gone one, needs a new index. */
        if ((s->fl & F_GONE) ||
            ((s->fl & F_NOW) && idx_pack_find(repo_index(p->r), prune_slot_id(p, i), NULL)))
            index_changes = true;
    }
    bool compact = p->n_i0 + p->n_i_new >= PRUNE_COMPACT_FILES;
    int rc = 0;
    if (p->o->dry_run) {
        report_outcome(p, true);
        return 0;
    }
    if (index_changes || compact) {
        prune_progress(p, "writing the index", 0, 1);
        /* Index files written since the load (by the repack's store, or by backups) are loaded
         * too, so that the new index can replace them as well. */
        if ((rc = prune_find_new_index_files(p, !p->reloads, e)) < 0 ||
            (rc = (p->reloads ? write_index_streamed : write_index)(p, e)) < 0)
            return rc;
    }
    if ((rc = prune_canceled(p, e)) < 0) return rc;
    prune_progress(p, "deleting packs", 0, n_now);
    rc = walk_parallel(n_now, p->o->threads, delete_one, p, p->stop, e);
    report_outcome(p, false);
    if (rc < 0) return rc; /* the marks stay; the next prune deletes the rest */
    if (index_changes || compact) {
        if ((rc = remove_index_files(p, e)) < 0) return rc;
    }
    if ((rc = update_marks(p, e)) < 0) return rc;
    for (size_t i = 0; i < p->n_slots; i++) {
        struct pstat *s = &p->ps[i];
        if ((s->fl & F_DATA) && (s->fl & F_BLOCKED) && !(s->fl & (F_NOW | F_UNMARK)))
            prune_report(p, PRUNE_PENDING, prune_slot_id(p, i), s);
    }
    size_t removed = 0;
    rc = lock_remove_stale(p->r, (int64_t)time(NULL), p->o->stale_sec, &removed, e);
    p->st->locks_removed = removed;
    return rc;
}
