/* walk.c - the used-blob walk over snapshot trees, tolerant snapshot loading and a parallel
 * loop; see walk.h. */
#include "repo/walk.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/index.h"
#include "repo/repo.h"
#include "repo/tree.h"

#define WALK_DEFAULT_THREADS 4
#define WALK_MAX_THREADS 64

/* ---- bitmaps ---- */

int walk_bits_init(struct walk_bits *b, size_t n, struct err *e)
{
    b->n = n;
    b->w = calloc(n / 64 + 1, sizeof *b->w);
    if (!b->w) return err_set(e, ERR_FAIL, "out of memory for a bitmap of %zu blobs", n);
    return 0;
}

void walk_bits_free(struct walk_bits *b)
{
    free(b->w);
    b->w = NULL;
    b->n = 0;
}

bool walk_bit_set(struct walk_bits *b, size_t i)
{
    uint64_t m = (uint64_t)1 << (i % 64);
    return __atomic_fetch_or(&b->w[i / 64], m, __ATOMIC_RELAXED) & m;
}

size_t walk_bits_count(const struct walk_bits *b)
{
    size_t c = 0;
    for (size_t i = 0; i < b->n / 64 + 1; i++)
        c += (size_t)__builtin_popcountll(b->w[i]);
    return c;
}

static unsigned threads_of(unsigned t)
{
    if (!t) return WALK_DEFAULT_THREADS;
    return t > WALK_MAX_THREADS ? WALK_MAX_THREADS : t;
}

/* ---- parallel loop ---- */

struct par {
    size_t n;
    int (*fn)(void *ctx, size_t i, struct err *e);
    void *ctx;
    const volatile int *cancel;
    atomic_size_t next;
    pthread_mutex_t mu;
    int rc;
    struct err e;
};

static void *par_main(void *arg)
{
    struct par *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        bool stop = p->rc < 0;
        if (!stop && p->cancel && *p->cancel) {
            p->rc = err_set(&p->e, ERR_CANCELED, "canceled");
            stop = true;
        }
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n) break;
        struct err e;
        err_clear(&e);
        int rc = p->fn(p->ctx, i, &e);
        if (rc < 0) {
            pthread_mutex_lock(&p->mu);
            if (p->rc == 0) {
                p->rc = rc;
                p->e = e;
            }
            pthread_mutex_unlock(&p->mu);
            break;
        }
    }
    return NULL;
}

int walk_parallel(size_t n, unsigned threads, int (*fn)(void *ctx, size_t i, struct err *e),
                  void *ctx, const volatile int *cancel, struct err *e)
{
    struct par p = {.n = n, .fn = fn, .ctx = ctx, .cancel = cancel};
    atomic_init(&p.next, 0);
    pthread_mutex_init(&p.mu, NULL);
    unsigned t = threads_of(threads);
    if (t > n) t = n ? (unsigned)n : 1;
    pthread_t th[WALK_MAX_THREADS];
    unsigned started = 0;
    for (; started < t; started++)
        if (pthread_create(&th[started], NULL, par_main, &p) != 0) break;
    if (!started) par_main(&p);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.mu);
    if (p.rc < 0) {
        *e = p.e;
        return p.rc;
    }
    return 0;
}

/* ---- the tree walk ---- */

struct wjob {
    struct oid tree;
    uint32_t root; /* which root led here, for reports */
};

struct walker {
    struct repo *r;
    const struct idx *x;
    const struct walk_root *roots;
    struct walk_bits *used;
    const struct walk_options *o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct wjob *stack;
    size_t n, cap;
    unsigned active;
    bool stop;
    int rc;
    struct err e;
    uint64_t trees, problems;
};

static void problem(struct walker *w, enum walk_problem kind, uint32_t root, const struct oid *tree,
                    const struct oid *blob, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void problem(struct walker *w, enum walk_problem kind, uint32_t root, const struct oid *tree,
                    const struct oid *blob, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    if (kind != WALK_DATA_MISSING && w->o->range && w->o->range->part > 0) return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&w->mu);
    w->problems++;
    if (w->o->problem) w->o->problem(w->o->ctx, kind, &w->roots[root].snapshot, tree, blob, msg);
    pthread_mutex_unlock(&w->mu);
}

/* Fails the walk for good (the index was not sealed, or memory ran out). */
static void fatal(struct walker *w, const struct err *e)
{
    pthread_mutex_lock(&w->mu);
    if (w->rc == 0) {
        w->rc = e->code < 0 ? e->code : ERR_FAIL;
        w->e = *e;
    }
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Looks a blob up and marks it; *fresh tells whether this call marked it first. */
static bool mark(struct walker *w, const struct oid *id, bool *fresh)
{
    size_t pos;
    if (!idx_lookup_pos(w->x, id, NULL, &pos)) return false;
    if (pos == SIZE_MAX) {
        struct err e;
        err_set(&e, ERR_FAIL, "internal error: the index was not sealed before the walk");
        fatal(w, &e);
        return true;
    }
    bool was = walk_bit_set(w->used, pos);
    if (fresh) *fresh = !was;
    return true;
}

static int push(struct walker *w, const struct wjob *jobs, size_t n)
{
    if (!n) return 0;
    pthread_mutex_lock(&w->mu);
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->n + n)
            cap *= 2;
        struct wjob *s = realloc(w->stack, cap * sizeof *s);
        if (!s) {
            pthread_mutex_unlock(&w->mu);
            return -1;
        }
        w->stack = s;
        w->cap = cap;
    }
    memcpy(w->stack + w->n, jobs, n * sizeof *jobs);
    w->n += n;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void walk_one(struct walker *w, const struct wjob *job, struct buf *b, struct wjob **kids,
                     size_t *cap)
{
    char hex[OID_HEX_LEN + 1];
    struct err e;
    buf_reset(b);
    int rc = repo_load_blob(w->r, BLOB_TREE, &job->tree, b, &e);
    if (rc < 0) {
        problem(w, rc == ERR_NOT_FOUND ? WALK_TREE_MISSING : WALK_TREE_BAD, job->root, &job->tree,
                &job->tree, "tree %s: %s", oid_hex(&job->tree, hex), e.msg);
        return;
    }
    struct tree t = TREE_INIT;
    if (tree_decode(b->data, b->len, &t, &e) < 0) {
        problem(w, WALK_TREE_BAD, job->root, &job->tree, &job->tree, "tree %s: %s",
                oid_hex(&job->tree, hex), e.msg);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->trees++;
    pthread_mutex_unlock(&w->mu);
    size_t n_kids = 0;
    for (size_t i = 0; i < t.n; i++) {
        const struct tree_node *nd = &t.nodes[i];
        if (nd->type == TREE_DIR) {
            bool fresh = false;
            if (!mark(w, &nd->subtree, &fresh)) {
                char hex2[OID_HEX_LEN + 1];
                problem(w, WALK_TREE_MISSING, job->root, &job->tree, &nd->subtree,
                        "tree %s, entry \"%.*s\": subtree %s is not in the index",
                        oid_hex(&job->tree, hex), (int)(nd->name_len > 200 ? 200 : nd->name_len),
                        (const char *)nd->name, oid_hex(&nd->subtree, hex2));
                continue;
            }
            if (!fresh) continue;
            if (n_kids == *cap) {
                size_t c = *cap ? *cap * 2 : 64;
                struct wjob *k = realloc(*kids, c * sizeof *k);
                if (!k) {
                    err_set(&e, ERR_FAIL, "tree walk: out of memory");
                    fatal(w, &e);
                    break;
                }
                *kids = k;
                *cap = c;
            }
            (*kids)[n_kids].tree = nd->subtree;
            (*kids)[n_kids].root = job->root;
            n_kids++;
        } else if (nd->type == TREE_FILE) {
            for (size_t k = 0; k < nd->n_content; k++) {
                const struct tree_extent *x = &nd->content[k];
                if (x->hole || !walk_in_range(w->o->range, &x->id) || mark(w, &x->id, NULL))
                    continue;
                char hex2[OID_HEX_LEN + 1];
                problem(w, WALK_DATA_MISSING, job->root, &job->tree, &x->id,
                        "tree %s, file \"%.*s\": data blob %s is not in the index",
                        oid_hex(&job->tree, hex), (int)(nd->name_len > 200 ? 200 : nd->name_len),
                        (const char *)nd->name, oid_hex(&x->id, hex2));
            }
        }
    }
    tree_free(&t);
    if (push(w, *kids, n_kids) < 0) {
        err_set(&e, ERR_FAIL, "tree walk: out of memory");
        fatal(w, &e);
    }
}

static void *walk_main(void *arg)
{
    struct walker *w = arg;
    struct buf b = BUF_INIT;
    struct wjob *kids = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->n && w->active && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->stop && w->o->cancel && *w->o->cancel) {
            w->stop = true;
            if (w->rc == 0) w->rc = err_set(&w->e, ERR_CANCELED, "canceled");
        }
        if (w->stop || (!w->n && !w->active)) break;
        struct wjob job = w->stack[--w->n];
        w->active++;
        pthread_mutex_unlock(&w->mu);
        walk_one(w, &job, &b, &kids, &cap);
        pthread_mutex_lock(&w->mu);
        w->active--;
        if (!w->n && !w->active) pthread_cond_broadcast(&w->cv);
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    buf_free(&b);
    free(kids);
    return NULL;
}

int walk_trees(struct repo *r, const struct walk_root *roots, size_t n_roots,
               struct walk_bits *used, const struct walk_options *o, struct walk_stats *st,
               struct err *e)
{
    struct walker w = {.r = r, .x = repo_index(r), .roots = roots, .used = used, .o = o};
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    char hex[OID_HEX_LEN + 1];
    for (size_t i = 0; i < n_roots && w.rc == 0; i++) {
        bool fresh = false;
        if (!mark(&w, &roots[i].tree, &fresh)) {
            problem(&w, WALK_TREE_MISSING, (uint32_t)i, &roots[i].tree, &roots[i].tree,
                    "root tree %s is not in the index", oid_hex(&roots[i].tree, hex));
            continue;
        }
        struct wjob job = {roots[i].tree, (uint32_t)i};
        if (fresh && push(&w, &job, 1) < 0) {
            struct err me;
            err_set(&me, ERR_FAIL, "tree walk: out of memory");
            fatal(&w, &me);
        }
    }
    unsigned t = threads_of(o->threads);
    pthread_t th[WALK_MAX_THREADS];
    unsigned started = 0;
    if (w.rc == 0) {
        for (; started < t; started++)
            if (pthread_create(&th[started], NULL, walk_main, &w) != 0) break;
        if (!started) walk_main(&w);
        for (unsigned i = 0; i < started; i++)
            pthread_join(th[i], NULL);
    }
    st->trees = w.trees;
    st->problems = w.problems;
    free(w.stack);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (w.rc < 0) {
        *e = w.e;
        return w.rc;
    }
    return 0;
}

/* ---- snapshots ---- */

struct snap_load {
    struct repo *r;
    const struct oid *ids;
    struct snapshot *list;
    uint8_t *state; /* 0 loaded, 1 vanished, 2 unreadable */
    void (*bad)(void *ctx, const struct oid *id, const char *msg);
    void *ctx;
    pthread_mutex_t mu;
};

static int load_one(void *ctx, size_t i, struct err *e)
{
    struct snap_load *L = ctx;
    struct err le;
    int rc = snap_load(L->r, &L->ids[i], &L->list[i], &le);
    if (rc == 0) {
        L->list[i].id = L->ids[i];
        return 0;
    }
    if (rc == ERR_NOT_FOUND) {
        L->state[i] = 1;
        return 0;
    }
    L->state[i] = 2;
    if (!L->bad) {
        *e = le;
        return rc;
    }
    pthread_mutex_lock(&L->mu);
    L->bad(L->ctx, &L->ids[i], le.msg);
    pthread_mutex_unlock(&L->mu);
    return 0;
}

static int snap_cmp_time(const void *pa, const void *pb)
{
    const struct snapshot *a = pa, *b = pb;
    if (a->time_sec != b->time_sec) return a->time_sec < b->time_sec ? -1 : 1;
    if (a->time_nsec != b->time_nsec) return a->time_nsec < b->time_nsec ? -1 : 1;
    return oid_cmp(&a->id, &b->id);
}

int walk_load_snapshots(struct repo *r, struct snapshot **out, size_t *n,
                        void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                        struct err *e)
{
    *out = NULL;
    *n = 0;
    struct oid *ids = NULL;
    size_t n_ids = 0;
    int rc = repo_list_ids(r, "snapshots", &ids, &n_ids, e);
    if (rc == ERR_NOT_FOUND) return 0;
    if (rc < 0) return err_wrap(e, "listing snapshots");
    struct snap_load L = {.r = r, .ids = ids, .bad = bad, .ctx = ctx};
    L.list = calloc(n_ids ? n_ids : 1, sizeof *L.list);
    L.state = calloc(n_ids ? n_ids : 1, 1);
    pthread_mutex_init(&L.mu, NULL);
    if (!L.list || !L.state)
        rc = err_set(e, ERR_FAIL, "loading %zu snapshots: out of memory", n_ids);
    if (rc == 0) rc = walk_parallel(n_ids, 8, load_one, &L, NULL, e);
    size_t k = 0;
    for (size_t i = 0; L.list && L.state && i < n_ids; i++) {
        if (L.state[i] != 0) continue;
        if (rc < 0)
            snap_free(&L.list[i]);
        else
            L.list[k++] = L.list[i];
    }
    pthread_mutex_destroy(&L.mu);
    free(L.state);
    free(ids);
    if (rc < 0) {
        free(L.list);
        return err_wrap(e, "loading snapshots");
    }
    if (k) qsort(L.list, k, sizeof *L.list, snap_cmp_time);
    *out = L.list;
    *n = k;
    return 0;
}

/* ---- the index ---- */

struct index_load {
    struct repo *r;
    const struct oid *ids;
    size_t n;
    uint8_t *state; /* 0 not loaded, 1 loaded, 2 failed, 3 vanished */
    uint8_t *superseded;
    void (*bad)(void *ctx, const struct oid *id, const char *msg);
    void *ctx;
    const struct oid *skip;
    size_t n_skip;
    const struct walk_range *range;
    pthread_mutex_t mu;
};

static int cmp_oid(const void *a, const void *b)
{
    return oid_cmp(a, b);
}

static bool not_skipped(void *ctx, const struct oid *pack)
{
    const struct index_load *L = ctx;
    return !L->n_skip || !bsearch(pack, L->skip, L->n_skip, sizeof *L->skip, cmp_oid);
}

bool walk_in_range(const struct walk_range *rg, const struct oid *id)
{
    if (!rg || rg->parts <= 1) return true;
    uint64_t v =
        (uint64_t)id->b[0] << 24 | (uint64_t)id->b[1] << 16 | (uint64_t)id->b[2] << 8 | id->b[3];
    return (v * rg->parts) >> 32 == rg->part;
}

static bool in_pass(void *ctx, const struct pack_entry *blob)
{
    const struct index_load *L = ctx;
    return blob->type == BLOB_TREE || walk_in_range(L->range, &blob->id);
}

static int index_one(void *ctx, size_t i, struct err *e)
{
    struct index_load *L = ctx;
    pthread_mutex_lock(&L->mu);
    bool skip = L->superseded[i];
    pthread_mutex_unlock(&L->mu);
    if (skip) return 0;
    struct buf plain = BUF_INIT;
    struct err le;
    char hex[OID_HEX_LEN + 1];
    struct oid *sup = NULL;
    size_t n_sup = 0;
    int rc = repo_load_file(L->r, "index", "index", &L->ids[i], &plain, &le);
    if (rc == 0) {
        repo_index_lock(L->r, true);
        rc = idx_file_decode_blobs(repo_index(L->r), plain.data, plain.len, not_skipped, in_pass, L,
                                   &sup, &n_sup, &le);
        repo_index_unlock(L->r);
        if (rc < 0) err_wrap(&le, "index %s", oid_hex(&L->ids[i], hex));
    }
    buf_free(&plain);
    pthread_mutex_lock(&L->mu);
    if (rc == 0) {
        L->state[i] = 1;
        for (size_t k = 0; k < n_sup; k++) {
            const struct oid *hit = bsearch(&sup[k], L->ids, L->n, sizeof *L->ids, cmp_oid);
            if (hit) L->superseded[hit - L->ids] = 1;
        }
    } else if (rc == ERR_NOT_FOUND) {
        L->state[i] = 3;
        rc = 0;
    } else {
        L->state[i] = 2;
        if (L->bad) {
            L->bad(L->ctx, &L->ids[i], le.msg);
            rc = 0;
        } else {
            *e = le;
        }
    }
    pthread_mutex_unlock(&L->mu);
    free(sup);
    return rc;
}

static int clear_index(struct repo *r, struct err *e)
{
    struct idx *x = repo_index(r);
    size_t n = idx_pack_count(x);
    struct oid *packs = malloc((n ? n : 1) * sizeof *packs);
    if (!packs) return err_set(e, ERR_FAIL, "loading the index: out of memory");
    for (size_t i = 0; i < n; i++)
        packs[i] = *idx_pack_id(x, (uint32_t)i);
    repo_index_lock(r, true);
    int rc = idx_forget_packs(x, packs, n, NULL, e);
    repo_index_unlock(r);
    free(packs);
    return rc;
}

int walk_load_index(struct repo *r, struct oid **ids, size_t *n_ids,
                    void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                    struct err *e)
{
    return walk_load_index_skip(r, NULL, 0, ids, n_ids, bad, ctx, e);
}

int walk_load_index_skip(struct repo *r, const struct oid *skip, size_t n_skip, struct oid **ids,
                         size_t *n_ids,
                         void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                         struct err *e)
{
    return walk_load_index_range(r, skip, n_skip, NULL, NULL, 0, ids, n_ids, bad, ctx, e);
}

int walk_load_index_range(struct repo *r, const struct oid *skip, size_t n_skip,
                          const struct walk_range *rg, const struct oid *only, size_t n_only,
                          struct oid **ids, size_t *n_ids,
                          void (*bad)(void *ctx, const struct oid *id, const char *msg), void *ctx,
                          struct err *e)
{
    *ids = NULL;
    *n_ids = 0;
    struct oid *list = NULL;
    size_t n = 0;
    int rc = repo_list_ids(r, "index", &list, &n, e);
    if (rc == ERR_NOT_FOUND) rc = 0;
    if (rc < 0) return err_wrap(e, "listing index files");
    if (only) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (n_only && bsearch(&list[i], only, n_only, sizeof *only, cmp_oid))
                list[k++] = list[i];
        n = k;
    }
    struct index_load L = {.r = r,
                           .ids = list,
                           .n = n,
                           .bad = bad,
                           .ctx = ctx,
                           .skip = skip,
                           .n_skip = n_skip,
                           .range = rg};
    L.state = calloc(n ? n : 1, 1);
    L.superseded = calloc(n ? n : 1, 1);
    pthread_mutex_init(&L.mu, NULL);
    if (!L.state || !L.superseded) rc = err_set(e, ERR_FAIL, "loading the index: out of memory");
    /* Each file being decoded is held whole, ciphertext and plaintext (tens of MB for one that
     * lists a few hundred thousand blobs): under a bound, one at a time. */
    unsigned threads = rg && rg->parts > 1 ? 1 : 4;
    if (rc == 0) rc = clear_index(r, e);
    if (rc == 0) rc = walk_parallel(n, threads, index_one, &L, NULL, e);
    /* A file loaded before the one superseding it was seen (left by an interrupted prune) may
     * list packs that are gone: load again without the superseded ones. */
    bool redo = false;
    for (size_t i = 0; rc == 0 && i < n; i++)
        redo |= L.superseded[i] && L.state[i] == 1;
    if (redo) {
        memset(L.state, 0, n);
        rc = clear_index(r, e);
        if (rc == 0) rc = walk_parallel(n, threads, index_one, &L, NULL, e);
    }
    if (rc == 0) {
        repo_index_lock(r, true);
        rc = idx_seal(repo_index(r), e);
        repo_index_unlock(r);
    }
    size_t k = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (L.state[i] != 2) list[k++] = list[i];
    pthread_mutex_destroy(&L.mu);
    free(L.state);
    free(L.superseded);
    if (rc < 0) {
        free(list);
        return err_wrap(e, "loading the index");
    }
    *ids = list;
    *n_ids = k;
    return 0;
}

/* ---- counting, and choosing the passes ---- */

struct counter {
    struct repo *r;
    const struct oid *ids;
    struct idx *packs; /* only the pack table is filled */
    struct walk_counts *c;
    pthread_mutex_t mu;
};

/* Counts a blob, keeping none. Called under the counter's lock. */
static bool count_blob(void *ctx, const struct pack_entry *blob)
{
    struct counter *C = ctx;
    if (blob->type == BLOB_TREE)
        C->c->trees++;
    else
        C->c->data++;
    return false;
}

static int count_one(void *ctx, size_t i, struct err *e)
{
    struct counter *C = ctx;
    struct buf plain = BUF_INIT;
    struct err le;
    int rc = repo_load_file(C->r, "index", "index", &C->ids[i], &plain, &le);
    if (rc == 0) {
        pthread_mutex_lock(&C->mu);
        rc = idx_file_decode_blobs(C->packs, plain.data, plain.len, NULL, count_blob, C, NULL, NULL,
                                   &le);
        if (rc == 0) C->c->files++;
        pthread_mutex_unlock(&C->mu);
    }
    buf_free(&plain);
    /* Out of memory is the only failure that matters here; bad files are the load's to report. */
    if (rc < 0 && strstr(le.msg, "out of memory")) {
        *e = le;
        return rc;
    }
    return 0;
}

int walk_count_index(struct repo *r, struct walk_counts *c, struct err *e)
{
    memset(c, 0, sizeof *c);
    struct oid *ids = NULL;
    size_t n = 0;
    int rc = repo_list_ids(r, "index", &ids, &n, e);
    if (rc == ERR_NOT_FOUND) return 0;
    if (rc < 0) return err_wrap(e, "listing index files");
    struct counter C = {.r = r, .ids = ids, .c = c};
    pthread_mutex_init(&C.mu, NULL);
    rc = idx_new(&C.packs, e);
    /* Only bounded runs count, and each file is held whole while it is: one at a time. */
    if (rc == 0) rc = walk_parallel(n, 1, count_one, &C, NULL, e);
    if (C.packs) c->packs = idx_pack_count(C.packs);
    idx_free(C.packs);
    pthread_mutex_destroy(&C.mu);
    free(ids);
    if (rc < 0) return err_wrap(e, "counting the index");
    return 0;
}

/* A range's share of `split` over k passes, with slack for ranges that hold more than their
 * share (the binomial count's standard deviation is sqrt(avg): a sixteenth of the average plus
 * 8 blobs is over 3 of them at any size). */
static uint64_t range_share(uint64_t split, uint32_t k)
{
    uint64_t avg = (split + k - 1) / k;
    return avg + avg / 16 + 8 * WALK_COST_BLOB;
}

uint64_t walk_pass_need(uint64_t fixed, uint64_t split, uint32_t passes)
{
    return fixed + (passes <= 1 ? split : range_share(split, passes));
}

int walk_plan_passes(uint64_t max_memory, uint64_t fixed, uint64_t split, const char *what,
                     uint32_t *passes, struct err *e)
{
    *passes = 1;
    if (!max_memory) return 0;
    if (walk_pass_need(fixed, split, 1) <= max_memory) return 0;
    uint64_t least = walk_pass_need(fixed, split, WALK_MAX_PASSES);
    if (least > max_memory) {
        char b1[32], b2[32];
        snprintf(b1, sizeof b1, "%.1f MiB", (double)max_memory / (1 << 20));
        snprintf(b2, sizeof b2, "%.1f MiB", (double)least / (1 << 20));
        return err_set(e, ERR_FAIL,
                       "a memory bound of %s is too small to %s this repository: at least %s "
                       "(%llu bytes) is needed, in %u passes (the trees, packs and snapshots "
                       "alone take %llu bytes in every pass; one pass needs %llu bytes)",
                       b1, what, b2, (unsigned long long)least, WALK_MAX_PASSES,
                       (unsigned long long)fixed, (unsigned long long)(fixed + split));
    }
    uint32_t k = 2;
    while (walk_pass_need(fixed, split, k) > max_memory)
        k++;
    *passes = k;
    return 0;
}

/* ---- index files being written ---- */

int walk_ixlist_add(struct walk_ixlist *l, const struct oid *pack, struct pack_entry *ents,
                    size_t n, struct err *e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct idx_file_pack *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(ents);
            return err_set(e, ERR_FAIL, "writing the index: out of memory");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].pack_id = *pack;
    l->v[l->n].entries = ents;
    l->v[l->n].n = n;
    l->n++;
    l->blobs += n;
    return 0;
}

void walk_ixlist_clear(struct walk_ixlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].entries);
    l->n = l->blobs = 0;
}

void walk_ixlist_free(struct walk_ixlist *l)
{
    walk_ixlist_clear(l);
    free(l->v);
    l->v = NULL;
    l->cap = 0;
}

/* ---- packs ---- */

struct pack_list {
    struct walk_pack *v;
    size_t n, cap;
};

static int collect_pack(void *ctx, const char *name, uint64_t size)
{
    struct pack_list *l = ctx;
    struct oid id;
    /* "data/xx/<hex>"; anything else in data/ is not ours to judge here. */
    if (strlen(name) != 5 + 3 + OID_HEX_LEN || name[7] != '/' || !oid_parse(name + 8, &id) ||
        strncmp(name + 5, name + 8, 2) != 0)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        struct walk_pack *v = realloc(l->v, cap * sizeof *v);
        if (!v) return ERR_FAIL;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].id = id;
    l->v[l->n].size = size;
    l->n++;
    return 0;
}

static int cmp_pack(const void *a, const void *b)
{
    return oid_cmp(&((const struct walk_pack *)a)->id, &((const struct walk_pack *)b)->id);
}

int walk_list_packs(struct repo *r, struct walk_pack **out, size_t *n, struct err *e)
{
    struct pack_list l = {0};
    *out = NULL;
    *n = 0;
    err_clear(e);
    int rc = backend_list(repo_backend(r), "data/", collect_pack, &l, e);
    if (rc == ERR_NOT_FOUND) rc = 0;
    if (rc < 0) {
        free(l.v);
        if (e->code == ERR_OK) return err_set(e, ERR_FAIL, "listing packs: out of memory");
        return err_wrap(e, "listing packs");
    }
    if (l.n) qsort(l.v, l.n, sizeof *l.v, cmp_pack);
    *out = l.v;
    *n = l.n;
    return 0;
}

const struct walk_pack *walk_find_pack(const struct walk_pack *packs, size_t n,
                                       const struct oid *id)
{
    struct walk_pack key = {.id = *id};
    return n ? bsearch(&key, packs, n, sizeof key, cmp_pack) : NULL;
}
