/* repo.c - opening and creating repositories, the index load, and object I/O; see repo.h.
 *
 * Layout under a backend (docs/FORMAT-packidx.md): "config" (sealed, kind "config"),
 * "keys/<hex>" (key files, JSON), "data/<2 hex>/<hex>" (packs), "index/<hex>",
 * "snapshots/<hex>" and "locks/<hex>". "config" is written last by repo_create, so its presence
 * is what makes a location a repository.
 */
#include "repo/repo.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/pack.h"

#define REPO_CONFIG_NAME "config"
#define REPO_KIND_CONFIG "config"
#define REPO_KIND_INDEX "index"
/* Index files are fetched and decrypted by this many threads at once. */
#define REPO_INDEX_THREADS 4
/* Longest object name we build: "<dir>/<64 hex>" with a short dir. */
#define REPO_NAME_MAX 160

struct repo {
    struct backend *b;
    struct crypt_keys keys;
    struct config config;
    struct chunker *chunker;
    struct oid key_id;

    /* The index: readers (repo_load_blob, store lookups) hold the read side, writers (index
     * load, the store adding packs) the write side. */
    pthread_rwlock_t idx_lock;
    struct idx *idx;
    pthread_mutex_t load_lock; /* serializes repo_load_index */
    bool index_loaded;
};

static int object_name(char out[REPO_NAME_MAX], const char *dir, const struct oid *id,
                       struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    oid_hex(id, hex);
    if (strcmp(dir, "data") == 0) {
        pack_object_name(id, out);
        return 0;
    }
    if (snprintf(out, REPO_NAME_MAX, "%s/%s", dir, hex) >= REPO_NAME_MAX)
        return err_set(e, ERR_FAIL, "object directory name \"%.40s\" is too long", dir);
    return 0;
}

/* ---- creating and opening ---- */

/* Writes the first key file, then the config (whose presence makes the location a repository). */
static int create_objects(struct backend *b, const char *location, const char *password,
                          const struct repo_create_params *p, struct err *e)
{
    struct crypt_keys keys;
    struct buf json = BUF_INIT, sealed = BUF_INIT;
    struct config c = p->config;
    struct oid key_id;
    char key_name[REPO_NAME_MAX];
    crypt_keys_generate(&keys);
    c.version = CONFIG_VERSION;
    oid_random(&c.repo_id);
    oid_random(&key_id);
    object_name(key_name, "keys", &key_id, e);

    /* Encoding validates, so a repository is never created with a config it cannot read. */
    int rc = config_encode(&c, &json, e);
    if (rc == 0) rc = crypt_file_seal(&keys, REPO_KIND_CONFIG, json.data, json.len, &sealed, e);
    if (rc == 0) {
        buf_reset(&json);
        rc = keyfile_create(keys.master, password, &p->kdf, &json, e);
    }
    if (rc == 0) rc = backend_save(b, key_name, json.data, json.len, false, e);
    if (rc == 0) {
        rc = backend_save(b, REPO_CONFIG_NAME, sealed.data, sealed.len, false, e);
        if (rc < 0) {
            struct err ignored; /* best effort: without the config the key file is an orphan */
            backend_remove(b, key_name, &ignored);
        }
        if (rc == ERR_EXISTS) /* another creator won the race */
            rc = err_set(e, ERR_EXISTS, "a repository already exists at %s", location);
    }
    crypt_keys_wipe(&keys);
    buf_free(&json);
    buf_free(&sealed);
    return rc;
}

int repo_create(const char *location, const char *password, const struct repo_create_params *p,
                struct err *e)
{
    int rc = crypt_init(e);
    if (rc < 0) return rc;
    struct backend *b;
    rc = backend_open(location, true, &b, e);
    if (rc < 0) return err_wrap(e, "creating a repository at %s", location);
    uint64_t size;
    rc = backend_stat(b, REPO_CONFIG_NAME, &size, e);
    if (rc == 0)
        rc = err_set(e, ERR_EXISTS, "a repository already exists at %s", location);
    else if (rc == ERR_NOT_FOUND)
        rc = create_objects(b, location, password, p, e);
    if (rc < 0 && rc != ERR_EXISTS) err_wrap(e, "creating a repository at %s", location);
    backend_close(b);
    return rc;
}

struct name_list {
    char **names;
    size_t n, cap;
};

static int collect_name(void *ctx, const char *name, uint64_t size)
{
    struct name_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **p = realloc(l->names, cap * sizeof *p);
        if (!p) return ERR_FAIL;
        l->names = p;
        l->cap = cap;
    }
    if (!(l->names[l->n] = strdup(name))) return ERR_FAIL;
    l->n++;
    return 0;
}

static void name_list_free(struct name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Finds the key file that `password` opens and unwraps the master key into k->master. */
static int unlock(struct backend *b, const char *password, struct crypt_keys *k, struct oid *key_id,
                  struct err *e)
{
    struct name_list keys = {0};
    err_clear(e);
    int rc = backend_list(b, "keys/", collect_name, &keys, e);
    if (rc < 0) {
        name_list_free(&keys);
        if (e->code == ERR_OK) return err_set(e, ERR_FAIL, "listing key files: out of memory");
        return err_wrap(e, "listing key files");
    }
    /* Sorted, so that which key opens a repository is deterministic. */
    if (keys.n) qsort(keys.names, keys.n, sizeof *keys.names, cmp_str);
    size_t tried = 0, malformed = 0;
    char first_bad[ERR_MSG_MAX] = "";
    struct buf json = BUF_INIT;
    rc = ERR_AUTH;
    for (size_t i = 0; i < keys.n && rc == ERR_AUTH; i++) {
        struct oid id;
        if (!oid_parse(keys.names[i] + strlen("keys/"), &id)) continue;
        struct err ke;
        buf_reset(&json);
        int lrc = backend_load(b, keys.names[i], 0, 0, &json, &ke);
        if (lrc == ERR_NOT_FOUND) continue; /* removed since listed */
        if (lrc == 0) lrc = keyfile_unwrap(json.data, json.len, password, k->master, &ke);
        tried++;
        if (lrc == 0) {
            *key_id = id;
            rc = 0;
        } else if (lrc != ERR_AUTH) {
            if (!malformed++)
                snprintf(first_bad, sizeof first_bad, "%.100s: %.800s", keys.names[i], ke.msg);
        }
    }
    buf_free(&json);
    name_list_free(&keys);
    if (rc == 0) return 0;
    if (tried == 0) return err_set(e, ERR_FAIL, "the repository has no key files");
    if (malformed)
        return err_set(e, ERR_AUTH,
                       "wrong password: no key file accepts it (%zu tried; %zu could not be read, "
                       "first %s)",
                       tried, malformed, first_bad);
    return err_set(e, ERR_AUTH, "wrong password: none of the %zu key files accepts it", tried);
}

static void repo_free(struct repo *r)
{
    if (!r) return;
    chunker_free(r->chunker);
    idx_free(r->idx);
    backend_close(r->b);
    pthread_rwlock_destroy(&r->idx_lock);
    pthread_mutex_destroy(&r->load_lock);
    crypt_keys_wipe(&r->keys);
    free(r);
}

static int open_objects(struct repo *r, const char *location, const char *password, struct err *e)
{
    struct buf sealed = BUF_INIT, json = BUF_INIT;
    int rc = backend_open(location, false, &r->b, e);
    if (rc == 0) rc = backend_load(r->b, REPO_CONFIG_NAME, 0, 0, &sealed, e);
    if (rc == ERR_NOT_FOUND) {
        buf_free(&sealed);
        return err_set(e, ERR_NOT_FOUND, "no repository at %s", location);
    }
    if (rc == 0) rc = unlock(r->b, password, &r->keys, &r->key_id, e);
    if (rc == 0) {
        crypt_keys_derive(&r->keys);
        rc = crypt_file_open(&r->keys, REPO_KIND_CONFIG, sealed.data, sealed.len, &json, e);
        /* The password was right, so a config that fails is damaged, not ours to read. */
        if (rc == ERR_AUTH) {
            err_wrap(e, "config (damaged or replaced)");
            rc = e->code = ERR_FAIL;
        }
    }
    if (rc == 0) rc = config_decode(json.data, json.len, &r->config, e);
    if (rc == 0) rc = chunker_new(&r->config.chunker, r->keys.gear, &r->chunker, e);
    if (rc == 0) rc = idx_new(&r->idx, e);
    buf_free(&sealed);
    buf_free(&json);
    if (rc < 0) return err_wrap(e, "opening the repository at %s", location);
    return 0;
}

int repo_open(const char *location, const char *password, struct repo **out, struct err *e)
{
    *out = NULL;
    int rc = crypt_init(e);
    if (rc < 0) return rc;
    struct repo *r = calloc(1, sizeof *r);
    if (!r) return err_set(e, ERR_FAIL, "opening %s: out of memory", location);
    pthread_rwlock_init(&r->idx_lock, NULL);
    pthread_mutex_init(&r->load_lock, NULL);
    rc = open_objects(r, location, password, e);
    if (rc < 0) {
        repo_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void repo_close(struct repo *r)
{
    repo_free(r);
}

struct backend *repo_backend(struct repo *r)
{
    return r->b;
}

const struct crypt_keys *repo_keys(const struct repo *r)
{
    return &r->keys;
}

const struct config *repo_config(const struct repo *r)
{
    return &r->config;
}

const struct chunker *repo_chunker(const struct repo *r)
{
    return r->chunker;
}

struct idx *repo_index(struct repo *r)
{
    return r->idx;
}

const struct oid *repo_key_id(const struct repo *r)
{
    return &r->key_id;
}

void repo_index_lock(struct repo *r, bool write)
{
    if (write)
        pthread_rwlock_wrlock(&r->idx_lock);
    else
        pthread_rwlock_rdlock(&r->idx_lock);
}

void repo_index_unlock(struct repo *r)
{
    pthread_rwlock_unlock(&r->idx_lock);
}

/* ---- files ---- */

int repo_save_file(struct repo *r, const char *dir, const char *kind, const void *plain, size_t len,
                   struct oid *id, struct err *e)
{
    struct buf sealed = BUF_INIT;
    char name[REPO_NAME_MAX];
    oid_random(id);
    int rc = object_name(name, dir, id, e);
    if (rc == 0) rc = crypt_file_seal(&r->keys, kind, plain, len, &sealed, e);
    if (rc == 0) rc = backend_save(r->b, name, sealed.data, sealed.len, false, e);
    buf_free(&sealed);
    if (rc < 0) return err_wrap(e, "saving %s", name);
    return 0;
}

/* Fetches the sealed bytes of an immutable object. This is the one place a local cache of
 * such objects (index files, snapshots, tree packs) plugs in. */
static int fetch_sealed(struct repo *r, const char *name, struct buf *out, struct err *e)
{
    return backend_load(r->b, name, 0, 0, out, e);
}

int repo_load_file(struct repo *r, const char *dir, const char *kind, const struct oid *id,
                   struct buf *out, struct err *e)
{
    struct buf sealed = BUF_INIT;
    char name[REPO_NAME_MAX];
    int rc = object_name(name, dir, id, e);
    if (rc == 0) rc = fetch_sealed(r, name, &sealed, e);
    if (rc == 0) rc = crypt_file_open(&r->keys, kind, sealed.data, sealed.len, out, e);
    buf_free(&sealed);
    if (rc < 0) return err_wrap(e, "loading %s", name);
    return 0;
}

struct id_list {
    const char *dir;
    size_t dir_len;
    struct oid *ids;
    size_t n, cap;
};

/* Accepts "<dir>/<hex>", and for packs "data/<first 2 hex>/<hex>". */
static int collect_id(void *ctx, const char *name, uint64_t size)
{
    struct id_list *l = ctx;
    const char *rest = name + l->dir_len + 1;
    struct oid id;
    if (strlen(rest) == OID_HEX_LEN + 3 && rest[2] == '/' && oid_parse(rest + 3, &id) &&
        strncmp(rest, rest + 3, 2) == 0 && strcmp(l->dir, "data") == 0) {
        /* pack name */
    } else if (!oid_parse(rest, &id)) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct oid *p = realloc(l->ids, cap * sizeof *p);
        if (!p) return ERR_FAIL;
        l->ids = p;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

static int cmp_oid(const void *a, const void *b)
{
    return oid_cmp(a, b);
}

int repo_list_ids(struct repo *r, const char *dir, struct oid **ids, size_t *n, struct err *e)
{
    char prefix[REPO_NAME_MAX];
    if (snprintf(prefix, sizeof prefix, "%s/", dir) >= (int)sizeof prefix)
        return err_set(e, ERR_FAIL, "object directory name \"%.40s\" is too long", dir);
    struct id_list l = {.dir = dir, .dir_len = strlen(dir)};
    err_clear(e);
    int rc = backend_list(r->b, prefix, collect_id, &l, e);
    if (rc < 0) {
        free(l.ids);
        if (e->code == ERR_OK) return err_set(e, ERR_FAIL, "listing %s: out of memory", prefix);
        return err_wrap(e, "listing %s", prefix);
    }
    if (l.n) qsort(l.ids, l.n, sizeof *l.ids, cmp_oid);
    *ids = l.ids;
    *n = l.n;
    return 0;
}

/* ---- the index ---- */

struct index_load {
    struct repo *r;
    const struct oid *ids;
    size_t n;
    bool *superseded; /* per file: named by another file's supersedes list */
    bool *added;      /* per file: decoded into the index */
    pthread_mutex_t lock;
    size_t next;
    int rc;
    struct err e;
};

/* Marks each file that `sup` names. `ids` is sorted. */
static void mark_superseded(struct index_load *L, const struct oid *sup, size_t n_sup)
{
    for (size_t i = 0; i < n_sup; i++) {
        const struct oid *hit = bsearch(&sup[i], L->ids, L->n, sizeof *L->ids, cmp_oid);
        if (hit) L->superseded[hit - L->ids] = true;
    }
}

static void *index_worker(void *arg)
{
    struct index_load *L = arg;
    struct buf plain = BUF_INIT;
    for (;;) {
        pthread_mutex_lock(&L->lock);
        size_t i = L->next;
        while (i < L->n && L->superseded[i]) /* known to be superseded: skip */
            i++;
        L->next = i + 1;
        bool stop = i >= L->n || L->rc < 0;
        pthread_mutex_unlock(&L->lock);
        if (stop) break;

        struct err e;
        char hex[OID_HEX_LEN + 1];
        buf_reset(&plain);
        /* The download and decryption, the slow part, run outside any lock. */
        int rc = repo_load_file(L->r, "index", REPO_KIND_INDEX, &L->ids[i], &plain, &e);
        struct oid *sup = NULL;
        size_t n_sup = 0;
        if (rc == 0) {
            repo_index_lock(L->r, true);
            rc = idx_file_decode(L->r->idx, plain.data, plain.len, &sup, &n_sup, &e);
            repo_index_unlock(L->r);
            if (rc < 0) err_wrap(&e, "index %s", oid_hex(&L->ids[i], hex));
        }
        pthread_mutex_lock(&L->lock);
        if (rc < 0 && L->rc == 0) {
            L->rc = rc;
            L->e = e;
        }
        if (rc == 0) {
            L->added[i] = true;
            mark_superseded(L, sup, n_sup);
        }
        pthread_mutex_unlock(&L->lock);
        free(sup);
    }
    buf_free(&plain);
    return NULL;
}

/* Loads the index files (all, or all not superseded) with a few threads. */
static int load_index_files(struct index_load *L, struct err *e)
{
    pthread_t th[REPO_INDEX_THREADS];
    size_t n_threads = L->n < REPO_INDEX_THREADS ? L->n : REPO_INDEX_THREADS, started = 0;
    L->next = 0;
    L->rc = 0;
    for (; started < n_threads; started++)
        if (pthread_create(&th[started], NULL, index_worker, L) != 0) break;
    if (started == 0 && n_threads > 0) index_worker(L); /* no threads to be had: do it here */
    for (size_t t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    if (L->rc < 0) {
        *e = L->e;
        return L->rc;
    }
    return 0;
}

int repo_load_index(struct repo *r, struct err *e)
{
    pthread_mutex_lock(&r->load_lock);
    if (r->index_loaded) {
        pthread_mutex_unlock(&r->load_lock);
        return 0;
    }
    struct index_load L = {.r = r};
    pthread_mutex_init(&L.lock, NULL);
    struct oid *ids = NULL;
    size_t n = 0;
    int rc = repo_list_ids(r, "index", &ids, &n, e);
    if (rc < 0) goto out;
    L.ids = ids;
    L.n = n;
    L.superseded = calloc(n ? n : 1, sizeof *L.superseded);
    L.added = calloc(n ? n : 1, sizeof *L.added);
    if (!L.superseded || !L.added) {
        rc = err_set(e, ERR_FAIL, "loading the index: out of memory");
        goto out;
    }
    if ((rc = load_index_files(&L, e)) < 0) goto out;

    /* A superseded file (left behind by an interrupted prune) may list packs that are gone.
     * Rare, so it is handled by loading again without them rather than by holding every file
     * in memory until all supersedes lists are known. */
    bool redo = false;
    for (size_t i = 0; i < n; i++)
        redo |= L.superseded[i] && L.added[i];
    if (redo) {
        repo_index_lock(r, true);
        idx_clear(r->idx);
        repo_index_unlock(r);
        rc = load_index_files(&L, e);
    }
out:
    if (rc < 0) { /* leave an empty index rather than a partial one */
        repo_index_lock(r, true);
        idx_clear(r->idx);
        repo_index_unlock(r);
    }
    r->index_loaded = rc == 0;
    pthread_mutex_destroy(&L.lock);
    free(L.superseded);
    free(L.added);
    free(ids);
    pthread_mutex_unlock(&r->load_lock);
    if (rc < 0) return err_wrap(e, "loading the index");
    return 0;
}

/* ---- blobs ---- */

int repo_load_blob(struct repo *r, enum blob_type type, const struct oid *id, struct buf *out,
                   struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    struct idx_loc loc;
    struct oid pack_id;
    repo_index_lock(r, false);
    bool found = idx_lookup(r->idx, id, &loc);
    if (found) pack_id = *idx_pack_id(r->idx, loc.pack); /* copied: the table may grow */
    repo_index_unlock(r);
    if (!found) return err_set(e, ERR_NOT_FOUND, "blob %s is not in the index", oid_hex(id, hex));
    (void)type; /* the index knows the stored type (see below) */

    char name[80];
    pack_object_name(&pack_id, name);
    struct buf stored = BUF_INIT;
    int rc = backend_load(r->b, name, loc.offset, loc.stored_len, &stored, e);
    /* Blobs are keyed by ID alone, so a tree whose encoding equals a data chunk shares that
     * chunk's entry: open with the type it was stored as. The content is the same either way,
     * and crypt_blob_open checks it against the ID. */
    if (rc == 0)
        rc = crypt_blob_open(&r->keys, (enum blob_type)loc.type, id, stored.data, stored.len,
                             loc.raw_len, out, e);
    buf_free(&stored);
    if (rc < 0) return err_wrap(e, "blob %s in pack %s", oid_hex(id, hex), name + 8);
    return 0;
}

/* ---- keys ---- */

int repo_key_add(struct repo *r, const char *password, const struct keyfile_params *p,
                 struct oid *id, struct err *e)
{
    struct buf json = BUF_INIT;
    char name[REPO_NAME_MAX];
    oid_random(id);
    object_name(name, "keys", id, e);
    int rc = keyfile_create(r->keys.master, password, p, &json, e);
    if (rc == 0) rc = backend_save(r->b, name, json.data, json.len, false, e);
    buf_free(&json);
    if (rc < 0) return err_wrap(e, "adding key %s", name + 5);
    return 0;
}

int repo_key_remove(struct repo *r, const struct oid *id, struct err *e)
{
    char hex[OID_HEX_LEN + 1], name[REPO_NAME_MAX];
    oid_hex(id, hex);
    if (oid_eq(id, &r->key_id))
        return err_set(e, ERR_FAIL,
                       "refusing to remove key %s: it is the key this session opened the "
                       "repository with (open it with another password to remove this one)",
                       hex);
    struct oid *ids;
    size_t n;
    int rc = repo_list_ids(r, "keys", &ids, &n, e);
    if (rc < 0) return rc;
    bool present = n && bsearch(id, ids, n, sizeof *ids, cmp_oid) != NULL;
    free(ids);
    if (!present) return err_set(e, ERR_NOT_FOUND, "there is no key %s", hex);
    if (n < 2) return err_set(e, ERR_FAIL, "refusing to remove key %s: it is the last one", hex);
    object_name(name, "keys", id, e);
    rc = backend_remove(r->b, name, e);
    if (rc < 0) return err_wrap(e, "removing key %s", hex);
    return 0;
}
