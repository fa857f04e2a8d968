/* heal.c - what lost or damaged data costs, and snapshots rewritten without it; see heal.h.
 *
 * One walk serves both: walk_tree reads a tree, checks each file's blobs and recurses into each
 * directory, reports what is lost and, when rewriting, builds the tree without it and stores
 * that through a store (so the new trees are packed and indexed like a backup's). Trees found
 * whole are kept in a hash set (`clean`) and not walked again. */
#include "repo/heal.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "repo/crypt.h"
#include "repo/index.h"
#include "repo/repo.h"
#include "repo/snapshot.h"
#include "repo/store.h"
#include "repo/tree.h"

#define HEAL_TAG "repaired"

/* A sorted array of IDs. */
struct oid_list {
    struct oid *v;
    size_t n;
};

/* A set of IDs: open addressing, linear probing, at most half full. IDs are keyed hashes, so
 * their first bytes serve as the hash, and none is all zeros (the empty slot). */
struct oid_set {
    struct oid *slots;
    size_t cap, n; /* cap: a power of two, or 0 */
};

struct heal {
    struct repo *r;
    const struct heal_options *o;
    struct heal_stats *st;
    struct store *store;   /* when rewriting */
    struct oid_list packs; /* in the repository, sorted */
    struct oid_set clean;  /* trees with nothing lost below them */
    const struct oid *snap;
    struct buf path; /* the entry's path, NUL-terminated */
    uint64_t damage; /* entries reported in the current snapshot */
};

enum walk_state { WALK_WHOLE, WALK_CHANGED, WALK_LOST };

static int oid_cmp_v(const void *a, const void *b)
{
    return oid_cmp(a, b);
}

static bool list_has(const struct oid_list *l, const struct oid *id)
{
    return l->n && bsearch(id, l->v, l->n, sizeof *l->v, oid_cmp_v) != NULL;
}

static size_t set_home(const struct oid_set *s, const struct oid *id)
{
    uint64_t h;
    memcpy(&h, id->b, sizeof h);
    return (size_t)h & (s->cap - 1);
}

static bool set_has(const struct oid_set *s, const struct oid *id)
{
    if (!s->n) return false;
    for (size_t i = set_home(s, id);; i = (i + 1) & (s->cap - 1)) {
        if (oid_is_zero(&s->slots[i])) return false;
        if (oid_eq(&s->slots[i], id)) return true;
    }
}

static void set_put(struct oid_set *s, const struct oid *id)
{
    size_t i = set_home(s, id);
    while (!oid_is_zero(&s->slots[i]) && !oid_eq(&s->slots[i], id))
        i = (i + 1) & (s->cap - 1);
    if (oid_is_zero(&s->slots[i])) {
        s->slots[i] = *id;
        s->n++;
    }
}

static int set_add(struct oid_set *s, const struct oid *id, struct err *e)
{
    if ((s->n + 1) * 2 > s->cap) {
        struct oid_set g = {.cap = s->cap ? s->cap * 2 : 1024};
        g.slots = calloc(g.cap, sizeof *g.slots);
        if (!g.slots) return err_set(e, ERR_FAIL, "out of memory");
        for (size_t i = 0; i < s->cap; i++)
            if (!oid_is_zero(&s->slots[i])) set_put(&g, &s->slots[i]);
        free(s->slots);
        *s = g;
    }
    set_put(s, id);
    return 0;
}

/* Reads a blob: *lost when it is gone or damaged (never for other failures, which fail). With
 * `out` NULL the blob is only looked up, not read. */
static int read_blob(struct heal *h, enum blob_type type, const struct oid *id, struct buf *out,
                     bool *lost, struct err *e)
{
    struct idx_loc loc;
    repo_index_lock(h->r, false);
    bool found = idx_lookup(repo_index(h->r), id, &loc);
    struct oid pack = found ? *idx_pack_id(repo_index(h->r), loc.pack) : (struct oid){{0}};
    repo_index_unlock(h->r);
    *lost = !found || !list_has(&h->packs, &pack);
    if (*lost || !out) return 0;
    struct err le;
    err_clear(&le);
    int rc = repo_load_blob(h->r, type, id, out, &le);
    if (rc == ERR_NOT_FOUND || rc == ERR_AUTH) {
        *lost = true;
        return 0;
    }
    if (rc < 0) *e = le;
    return rc;
}

static void report(struct heal *h, bool dir, uint64_t lost, uint64_t blobs)
{
    h->damage++;
    if (dir)
        h->st->dirs_lost++;
    else
        h->st->files_lost++;
    struct heal_damage d = {.snapshot = h->snap,
                            .path = h->path.len ? (const char *)h->path.data : "/",
                            .dir = dir,
                            .lost = lost,
                            .blobs = blobs};
    if (h->o->report) h->o->report(h->o->ctx, &d);
}

/* Sets the path to its first `len` bytes followed by "/name". */
static int path_enter(struct heal *h, size_t len, const struct tree_node *n, struct err *e)
{
    h->path.len = len;
    if (buf_append(&h->path, "/", 1) < 0 || buf_append(&h->path, n->name, n->name_len) < 0 ||
        buf_append(&h->path, "", 1) < 0)
        return err_set(e, ERR_FAIL, "out of memory");
    h->path.len--; /* the NUL stays after the end */
    return 0;
}

/* The lost blobs of a file's content. */
static int file_lost(struct heal *h, const struct tree_node *n, uint64_t *lost, struct err *e)
{
    struct buf b = BUF_INIT;
    *lost = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n->n_content; i++) {
        if (n->content[i].hole) continue;
        bool gone;
        b.len = 0;
        rc = read_blob(h, BLOB_DATA, &n->content[i].id, h->o->read_data ? &b : NULL, &gone, e);
        if (rc == 0 && gone) ++*lost;
    }
    buf_free(&b);
    return rc;
}

static int walk_tree(struct heal *h, const struct oid *id, enum walk_state *state,
                     struct oid *new_id, struct err *e);

/* One node of a tree: *keep false when it is lost (reported), else the node possibly changed
 * (a directory's subtree rewritten; *changed then). */
static int walk_node(struct heal *h, struct tree_node *n, bool *keep, bool *changed, struct err *e)
{
    *keep = true;
    if (n->type == TREE_FILE) {
        uint64_t lost;
        int rc = file_lost(h, n, &lost, e);
        if (rc == 0 && lost) {
            uint64_t blobs = 0;
            for (size_t i = 0; i < n->n_content; i++)
                blobs += !n->content[i].hole;
            report(h, false, lost, blobs);
            *keep = false;
        }
        return rc;
    }
    if (n->type != TREE_DIR) return 0;
    enum walk_state st;
    struct oid sub;
    int rc = walk_tree(h, &n->subtree, &st, &sub, e);
    if (rc < 0) return rc;
    if (st == WALK_LOST) {
        report(h, true, 0, 0);
        *keep = false;
    } else if (st == WALK_CHANGED) {
        if (h->store) n->subtree = sub;
        *changed = true;
    }
    return 0;
}

/* Stores the rewritten tree `t` and sets *id to its ID. */
static int store_tree(struct heal *h, const struct tree *t, struct oid *id, struct err *e)
{
    struct buf enc = BUF_INIT;
    int rc = tree_encode(t, &enc, e);
    if (rc == 0) rc = crypt_blob_id(repo_keys(h->r), enc.data, enc.len, id, e);
    if (rc == 0) rc = store_add(h->store, BLOB_TREE, id, enc.data, enc.len, NULL, e);
    buf_free(&enc);
    return rc;
}

static int walk_tree(struct heal *h, const struct oid *id, enum walk_state *state,
                     struct oid *new_id, struct err *e)
{
    *state = WALK_WHOLE;
    if (set_has(&h->clean, id)) return 0;
    if (h->o->cancel && *h->o->cancel) return err_set(e, ERR_CANCELED, "interrupted");
    struct buf b = BUF_INIT;
    struct tree t = TREE_INIT, out = TREE_INIT;
    bool lost;
    int rc = read_blob(h, BLOB_TREE, id, &b, &lost, e);
    if (rc == 0 && !lost) {
        struct err de;
        lost = tree_decode(b.data, b.len, &t, &de) < 0; /* damaged yet authentic: unusable */
    }
    buf_free(&b);
    if (rc < 0 || lost) {
        if (lost) *state = WALK_LOST;
        tree_free(&t);
        return rc;
    }
    size_t len = h->path.len;
    bool changed = false;
    for (size_t i = 0; rc == 0 && i < t.n; i++) {
        bool keep;
        rc = path_enter(h, len, &t.nodes[i], e);
        if (rc == 0) rc = walk_node(h, &t.nodes[i], &keep, &changed, e);
        if (rc == 0 && !keep) changed = true;
        if (rc == 0 && keep && h->store) rc = tree_add(&out, &t.nodes[i], e);
    }
    h->path.len = len;
    if (rc == 0 && !changed) rc = set_add(&h->clean, id, e);
    if (rc == 0 && changed) {
        *state = WALK_CHANGED;
        if (h->store) rc = store_tree(h, &out, new_id, e); /* nodes stay in name order */
    }
    tree_free(&out);
    tree_free(&t);
    return rc;
}

/* A copy of `s` on the tree `root`, tagged HEAL_TAG, saved; its ID goes to *new_id. */
static int save_rewrite(struct heal *h, const struct snapshot *s, const struct oid *root,
                        struct oid *new_id, struct err *e)
{
    struct snapshot c;
    int rc = snap_copy(&c, s, e);
    if (rc < 0) return rc;
    c.tree = *root;
    char **tags = realloc(c.tags, (c.n_tags + 1) * sizeof *tags);
    if (tags) {
        c.tags = tags;
        tags[c.n_tags] = strdup(HEAL_TAG);
        if (tags[c.n_tags]) c.n_tags++;
    }
    if (!tags || c.n_tags == s->n_tags)
        rc = err_set(e, ERR_FAIL, "out of memory");
    else
        rc = snap_save(h->r, &c, e);
    if (rc == 0) *new_id = c.id;
    snap_free(&c);
    return rc;
}

/* The new roots of the snapshots to rewrite, in the order of the list. */
struct rewrite {
    size_t snap; /* index in the list */
    struct oid root;
};

/* Walks every snapshot, collecting the rewrites when h->store is set. */
static int walk_all(struct heal *h, struct snapshot *list, size_t n, struct rewrite *rw,
                    size_t *n_rw, struct err *e)
{
    *n_rw = 0;
    for (size_t i = 0; i < n; i++) {
        h->snap = &list[i].id;
        h->damage = 0;
        h->path.len = 0;
        h->st->snapshots++;
        enum walk_state st;
        struct oid root;
        int rc = walk_tree(h, &list[i].tree, &st, &root, e);
        if (rc < 0) return err_wrap(e, "snapshot %.8s", oid_hex(&list[i].id, (char[65]){0}));
        if (st == WALK_LOST) {
            report(h, true, 0, 0);
            h->st->snapshots_unrepairable++;
        }
        if (h->damage) h->st->snapshots_damaged++;
        if (st == WALK_CHANGED) rw[(*n_rw)++] = (struct rewrite){.snap = i, .root = root};
    }
    return 0;
}

/* Flushes the new trees, then saves each rewritten snapshot and, with forget, removes its
 * original once the rewrite is stored. */
static int save_all(struct heal *h, struct snapshot *list, const struct rewrite *rw, size_t n_rw,
                    struct err *e)
{
    int rc = h->store ? store_flush(h->store, e) : 0;
    for (size_t i = 0; rc == 0 && i < n_rw; i++) {
        const struct snapshot *s = &list[rw[i].snap];
        struct oid new_id;
        bool forgotten = false;
        if (h->store) {
            rc = save_rewrite(h, s, &rw[i].root, &new_id, e);
            if (rc < 0) break;
            h->st->snapshots_written++;
            if (h->o->forget) {
                rc = repo_remove_file(h->r, "snapshots", &s->id, e);
                if (rc == ERR_NOT_FOUND) rc = 0; /* a forget was quicker */
                forgotten = rc == 0;
                h->st->snapshots_forgotten += forgotten;
            }
        }
        if (h->o->rewritten)
            h->o->rewritten(h->o->ctx, &s->id, h->store ? &new_id : NULL, forgotten);
    }
    return rc;
}

static int heal_run(struct repo *r, const struct heal_options *o, bool rewrite,
                    struct heal_stats *st, struct err *e)
{
    memset(st, 0, sizeof *st);
    struct heal h = {.r = r, .o = o, .st = st, .path = BUF_INIT};
    struct snapshot *list = NULL;
    size_t n = 0, n_rw = 0;
    struct rewrite *rw = NULL;
    int rc = repo_list_ids(r, "data", &h.packs.v, &h.packs.n, e);
    if (rc == 0) {
        qsort(h.packs.v, h.packs.n, sizeof *h.packs.v, oid_cmp_v);
        rc = snap_list(r, &list, &n, e);
    }
    if (rc == 0 && !(rw = calloc(n ? n : 1, sizeof *rw)))
        rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0 && rewrite && !o->dry_run) rc = store_new(r, &h.store, e);
    if (rc == 0) rc = walk_all(&h, list, n, rw, &n_rw, e);
    if (rc == 0 && rewrite) rc = save_all(&h, list, rw, n_rw, e);
    if (h.store) store_free(h.store);
    free(rw);
    snap_list_free(list, n);
    free(h.packs.v);
    free(h.clean.slots);
    buf_free(&h.path);
    return rc;
}

int heal_scan(struct repo *r, const struct heal_options *o, struct heal_stats *st, struct err *e)
{
    return heal_run(r, o, false, st, e);
}

int heal_repair_snapshots(struct repo *r, const struct heal_options *o, struct heal_stats *st,
                          struct err *e)
{
    return heal_run(r, o, true, st, e);
}
