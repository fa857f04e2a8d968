/* repo.c - opening and creating repositories, the index load, and object I/O; see repo.h.
 *
 * Layout under a backend (docs/FORMAT.md): "config" (sealed, kind "config"),
 * "keys/<hex>" (key files, JSON), "data/<2 hex>/<hex>" (packs), "index/<hex>",
 * "snapshots/<hex>" and "locks/<hex>". "config" is written last by repo_create, so its presence
 * is what makes a location a repository.
 *
 * A repository that is not a local directory gets a local cache (repo/cache.h) of the immutable
 * objects every command reads: index files, snapshots and tree packs. Objects never change once
 * written, so a copy never goes stale; it can only be damaged, which the authentication of every
 * read catches (the copy is then dropped and the object fetched again). Objects this client
 * writes go into the cache as they are uploaded, so a following backup downloads none of them.
 * Tree packs are cached whole rather than blob by blob: one request fetches all the trees a pack
 * holds (a walk through a snapshot needs most of them), the pack holds nothing but trees, and a
 * tree is then read from the cached file by offset, so memory per read stays one blob.
 *
 * Blob reads of a remote repository go through read-ahead (repo/readahead.h): segments of
 * packs fetched by background threads ahead of the readers. A local repository reads each blob
 * when asked.
 */
#include "repo/repo.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/cache.h"
#include "repo/pack.h"
#include "repo/readahead.h"

#define REPO_CONFIG_NAME "config"
#define REPO_KIND_CONFIG "config"
#define REPO_KIND_INDEX "index"
/* Index files are fetched and decrypted by this many threads at once. */
#define REPO_INDEX_THREADS 4
/* Longest object name we build: "<dir>/<64 hex>" with a short dir. */
#define REPO_NAME_MAX 160
/* Listings of index/ tried when a file listed is gone by the time it is read (a concurrent
 * prune replaced it); each try lists again. */
#define REPO_RELIST_TRIES 3

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

    struct cache *cache; /* NULL: none */
    char *cache_dir;
    /* Serializes downloads of tree packs into the cache, so that threads wanting trees of one
     * pack fetch it once. Such downloads are rare (once per pack), so one lock is enough. */
    pthread_mutex_t fetch_lock;

    struct ra *ra; /* read-ahead (repo/readahead.h), off for a local repository */
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
    /* A locked repository's first objects are locked too: refuse a bucket without Object Lock
     * before writing anything. */
    int rc = backend_set_retention(b, &c.object_lock, true, e);
    if (rc < 0) return rc;
    crypt_keys_generate(&keys);
    c.version = c.object_lock.mode != BACKEND_LOCK_OFF ? CONFIG_VERSION_LOCK : CONFIG_VERSION;
    c.blob_id = CONFIG_DEFAULT_BLOB_ID;
    oid_random(&c.repo_id);
    oid_random(&key_id);
    object_name(key_name, "keys", &key_id, e);

    /* Encoding validates, so a repository is never created with a config it cannot read. */
    rc = config_encode(&c, &json, e);
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

void repo_open_opts_default(struct repo_open_opts *o)
{
    memset(o, 0, sizeof *o);
    backend_opts_default(&o->backend);
}

int repo_create(const char *location, const char *password, const struct repo_create_params *p,
                const struct repo_open_opts *o, struct err *e)
{
    int rc = crypt_init(e);
    if (rc < 0) return rc;
    struct backend *b;
    rc = backend_open(location, o ? &o->backend : NULL, true, &b, e);
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
    cache_close(r->cache);
    free(r->cache_dir);
    pthread_mutex_destroy(&r->fetch_lock);
    ra_free(r->ra);
    chunker_free(r->chunker);
    idx_free(r->idx);
    backend_close(r->b);
    pthread_rwlock_destroy(&r->idx_lock);
    pthread_mutex_destroy(&r->load_lock);
    crypt_keys_wipe(&r->keys);
    free(r);
}

static int open_objects(struct repo *r, const char *location, const char *password,
                        const struct backend_opts *bo, struct err *e)
{
    struct buf sealed = BUF_INIT, json = BUF_INIT;
    int rc = backend_open(location, bo, false, &r->b, e);
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
    if (rc == 0) r->keys.id_hash = r->config.blob_id;
    /* Whatever this program writes to a locked repository is locked (docs/FORMAT.md). */
    if (rc == 0) rc = backend_set_retention(r->b, &r->config.object_lock, false, e);
    if (rc == 0) rc = chunker_new(&r->config.chunker, r->keys.gear, &r->chunker, e);
    if (rc == 0) rc = idx_new(&r->idx, e);
    buf_free(&sealed);
    buf_free(&json);
    if (rc < 0) return err_wrap(e, "opening the repository at %s", location);
    return 0;
}

/* ---- the cache ---- */

int repo_set_cache(struct repo *r, const char *dir, struct err *e)
{
    cache_close(r->cache);
    free(r->cache_dir);
    r->cache = NULL;
    r->cache_dir = NULL;
    if (!dir) return 0;
    char hex[OID_HEX_LEN + 1];
    int rc = cache_open(dir, oid_hex(&r->config.repo_id, hex), &r->cache, e);
    if (rc < 0) return rc;
    if (!(r->cache_dir = strdup(dir))) {
        cache_close(r->cache);
        r->cache = NULL;
        return err_set(e, ERR_FAIL, "opening the cache: out of memory");
    }
    return 0;
}

const char *repo_cache_dir(const struct repo *r)
{
    return r->cache_dir;
}

void repo_set_read_ahead(struct repo *r, size_t bytes)
{
    ra_set_window(r->ra, bytes);
}

void repo_set_readers(struct repo *r, unsigned n)
{
    ra_set_readers(r->ra, n);
}

bool repo_reads_ahead(const struct repo *r)
{
    return ra_window(r->ra) > 0;
}

/* Without a usable cache directory the repository still works, only slower. */
static void open_cache(struct repo *r, const char *dir)
{
    struct err ignored;
    if (dir && *dir) repo_set_cache(r, dir, &ignored);
}

/* The directories whose files are cached (packs are cached by repo_load_blob, trees only). */
static bool cached_dir(const char *dir)
{
    return strcmp(dir, "index") == 0 || strcmp(dir, "snapshots") == 0;
}

/* Keeps a copy; a cache that cannot take it (disk full, read-only) only costs a download later. */
static void cache_keep(struct repo *r, const char *name, const void *data, size_t len)
{
    struct err ignored;
    if (r->cache) cache_put(r->cache, name, data, len, &ignored);
}

static void cache_drop(struct repo *r, const char *name)
{
    struct err ignored;
    if (r->cache) cache_remove(r->cache, name, &ignored);
}

int repo_open(const char *location, const char *password, const struct repo_open_opts *o,
              struct repo **out, struct err *e)
{
    *out = NULL;
    int rc = crypt_init(e);
    if (rc < 0) return rc;
    struct repo *r = calloc(1, sizeof *r);
    if (!r) return err_set(e, ERR_FAIL, "opening %s: out of memory", location);
    pthread_rwlock_init(&r->idx_lock, NULL);
    pthread_mutex_init(&r->load_lock, NULL);
    pthread_mutex_init(&r->fetch_lock, NULL);
    rc = ra_new(r, &r->ra, e);
    if (rc == 0) rc = open_objects(r, location, password, o ? &o->backend : NULL, e);
    if (rc < 0) {
        repo_free(r);
        return rc;
    }
    /* A local directory needs neither a cache nor read-ahead: reading it is as fast as reading
     * them. */
    if (r->b->kind != BACKEND_LOCAL) {
        open_cache(r, o ? o->cache_dir : NULL);
        ra_set_window(r->ra, RA_WINDOW_BYTES);
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
    /* A name of 256 random bits is never taken: asking the backend to check would cost S3 a
     * request per file. */
    if (rc == 0) rc = backend_save(r->b, name, sealed.data, sealed.len, true, e);
    if (rc == 0 && cached_dir(dir)) cache_keep(r, name, sealed.data, sealed.len);
    buf_free(&sealed);
    if (rc < 0) return err_wrap(e, "saving %s", name);
    return 0;
}

/* Opens the cached copy of `name` into `out`. A copy that does not open (damaged, or not what
 * the caller expects) is dropped, so the caller's fetch from the backend replaces it. */
static int load_file_cached(struct repo *r, const char *name, const char *kind, struct buf *out)
{
    struct buf sealed = BUF_INIT;
    struct err ignored;
    int rc = cache_get(r->cache, name, &sealed, &ignored);
    if (rc == 0) rc = crypt_file_open(&r->keys, kind, sealed.data, sealed.len, out, &ignored);
    if (rc < 0 && rc != ERR_NOT_FOUND) cache_drop(r, name);
    buf_free(&sealed);
    return rc;
}

int repo_load_file(struct repo *r, const char *dir, const char *kind, const struct oid *id,
                   struct buf *out, struct err *e)
{
    struct buf sealed = BUF_INIT;
    char name[REPO_NAME_MAX];
    int rc = object_name(name, dir, id, e);
    if (rc < 0) return rc;
    bool cached = r->cache && cached_dir(dir);
    if (cached && load_file_cached(r, name, kind, out) == 0) return 0;
    rc = backend_load(r->b, name, 0, 0, &sealed, e);
    if (rc == 0) rc = crypt_file_open(&r->keys, kind, sealed.data, sealed.len, out, e);
    if (rc == 0 && cached) cache_keep(r, name, sealed.data, sealed.len);
    buf_free(&sealed);
    if (rc < 0) return err_wrap(e, "loading %s", name);
    return 0;
}

int repo_remove_file(struct repo *r, const char *dir, const struct oid *id, struct err *e)
{
    char name[REPO_NAME_MAX];
    int rc = object_name(name, dir, id, e);
    if (rc < 0) return rc;
    /* The copy goes first: a copy without its object would be read as if it still existed. */
    cache_drop(r, name);
    return backend_remove(r->b, name, e); /* its messages name the object */
}

int repo_save_pack(struct repo *r, const struct oid *pack_id, enum blob_type type,
                   const struct pack_writer *w, uint64_t pack_len, struct err *e)
{
    char name[80];
    pack_object_name(pack_id, name);
    /* Random name: no existence check needed (see repo_save_file). */
    int rc = backend_save_fd(r->b, name, pack_writer_fd(w), pack_len, true, e);
    if (rc < 0) return err_wrap(e, "uploading pack %s", name + 8);
    if (type == BLOB_TREE && r->cache) {
        struct buf pack = BUF_INIT;
        struct err ignored;
        if (pack_writer_load(w, &pack, &ignored) == 0) cache_keep(r, name, pack.data, pack.len);
        buf_free(&pack);
    }
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

/* Drops the cached copies under `prefix` ("index/", "snapshots/", "data/") whose ID, read at
 * `id_at` in the name, is not in `keep` (sorted): the repository no longer has them, another
 * client removed them. */
static void drop_stale(struct repo *r, const char *prefix, size_t id_at, const struct oid *keep,
                       size_t n_keep)
{
    struct name_list names = {0};
    struct err ignored;
    /* Collected first: the listing walks the directories the removals change. */
    cache_list(r->cache, prefix, collect_name, &names, &ignored);
    for (size_t i = 0; i < names.n; i++) {
        struct oid id;
        if (strlen(names.names[i]) < id_at || !oid_parse(names.names[i] + id_at, &id)) continue;
        if (!n_keep || !bsearch(&id, keep, n_keep, sizeof id, cmp_oid))
            cache_drop(r, names.names[i]);
    }
    name_list_free(&names);
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
    if (r->cache && cached_dir(dir)) drop_stale(r, prefix, strlen(prefix), l.ids, l.n);
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

/* Drops cached packs the index does not list (removed by a prune). */
static void drop_stale_packs(struct repo *r)
{
    repo_index_lock(r, false);
    size_t n = idx_pack_count(r->idx);
    struct oid *packs = malloc((n ? n : 1) * sizeof *packs);
    for (size_t i = 0; packs && i < n; i++)
        packs[i] = *idx_pack_id(r->idx, (uint32_t)i);
    repo_index_unlock(r);
    if (!packs) return; /* out of memory: the copies stay, harmless */
    if (n) qsort(packs, n, sizeof *packs, cmp_oid);
    drop_stale(r, "data/", strlen("data/xx/"), packs, n);
    free(packs);
}

/* One listing of index/ and the loading of what it named. */
static int load_index_once(struct repo *r, struct err *e)
{
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
    pthread_mutex_destroy(&L.lock);
    free(L.superseded);
    free(L.added);
    free(ids);
    return rc;
}

int repo_load_index(struct repo *r, struct err *e)
{
    pthread_mutex_lock(&r->load_lock);
    if (r->index_loaded) {
        pthread_mutex_unlock(&r->load_lock);
        return 0;
    }
    /* A prune running meanwhile deletes index files once a file that supersedes them is
     * stored: one listed but gone when read means a newer listing has its replacement. */
    int rc;
    for (int attempt = 1;; attempt++) {
        rc = load_index_once(r, e);
        if (rc != ERR_NOT_FOUND || attempt == REPO_RELIST_TRIES) break;
        err_clear(e);
    }
    if (rc == 0 && r->cache) drop_stale_packs(r);
    r->index_loaded = rc == 0;
    pthread_mutex_unlock(&r->load_lock);
    if (rc < 0) return err_wrap(e, "loading the index");
    return 0;
}

/* ---- blobs ---- */

static int open_blob(struct repo *r, const struct idx_loc *loc, const struct oid *id,
                     const struct buf *stored, struct buf *out, struct err *e)
{
    return crypt_blob_open(&r->keys, (enum blob_type)loc->type, id, stored->data, stored->len,
                           loc->raw_len, out, e);
}

/* Opens a blob from the cached copy of its pack; a copy that is missing, short or does not
 * open is dropped, and the call fails. */
static int tree_blob_cached(struct repo *r, const char *name, const struct idx_loc *loc,
                            const struct oid *id, struct buf *out)
{
    struct buf stored = BUF_INIT;
    struct err ignored;
    int rc = cache_get_range(r->cache, name, loc->offset, loc->stored_len, &stored, &ignored);
    if (rc == 0) rc = open_blob(r, loc, id, &stored, out, &ignored);
    if (rc < 0 && rc != ERR_NOT_FOUND) cache_drop(r, name);
    buf_free(&stored);
    return rc;
}

/* Downloads the whole pack `name`, keeps it in the cache, and hands over the blob's bytes. */
static int fetch_tree_pack(struct repo *r, const char *name, const struct idx_loc *loc,
                           struct buf *stored, struct err *e)
{
    struct buf pack = BUF_INIT;
    int rc = backend_load(r->b, name, 0, 0, &pack, e);
    if (rc == 0 && pack.len < (uint64_t)loc->offset + loc->stored_len)
        rc = err_set(e, ERR_FAIL, "the pack is %zu bytes, shorter than the index says", pack.len);
    if (rc == 0 && buf_append(stored, pack.data + loc->offset, loc->stored_len) < 0)
        rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) cache_keep(r, name, pack.data, pack.len);
    buf_free(&pack);
    return rc;
}

/* A blob of a tree pack, through the cache (see the top of the file). */
static int load_tree_blob(struct repo *r, const char *name, const struct idx_loc *loc,
                          const struct oid *id, struct buf *out, struct err *e)
{
    if (tree_blob_cached(r, name, loc, id, out) == 0) return 0;
    pthread_mutex_lock(&r->fetch_lock);
    /* Another thread may have fetched the pack while this one waited. */
    bool hit = tree_blob_cached(r, name, loc, id, out) == 0;
    struct buf stored = BUF_INIT;
    int rc = hit ? 0 : fetch_tree_pack(r, name, loc, &stored, e);
    pthread_mutex_unlock(&r->fetch_lock);
    if (!hit && rc == 0) {
        rc = open_blob(r, loc, id, &stored, out, e);
        if (rc < 0) cache_drop(r, name); /* the copy holds the same bytes */
    }
    buf_free(&stored);
    return rc;
}

/* Where blob `id` is stored; false when the index does not know it. */
static bool locate(struct repo *r, const struct oid *id, struct idx_loc *loc, struct oid *pack_id)
{
    repo_index_lock(r, false);
    bool found = idx_lookup(r->idx, id, loc);
    if (found) *pack_id = *idx_pack_id(r->idx, loc->pack); /* copied: the table may grow */
    repo_index_unlock(r);
    return found;
}

/* Announces (or cancels) a read of blob `id`, when it is read through segments. */
static void prefetch(struct repo *r, const struct oid *id, bool announce)
{
    struct idx_loc loc;
    struct oid pack;
    if (!ra_window(r->ra) || !locate(r, id, &loc, &pack) || (r->cache && loc.type == BLOB_TREE))
        return;
    if (announce)
        ra_prefetch(r->ra, &pack, &loc);
    else
        ra_prefetch_cancel(r->ra, &pack, &loc);
}

void repo_prefetch(struct repo *r, const struct oid *id)
{
    prefetch(r, id, true);
}

void repo_prefetch_cancel(struct repo *r, const struct oid *id)
{
    prefetch(r, id, false);
}

void repo_prefetch_end(struct repo *r)
{
    ra_end(r->ra);
}

int repo_load_blob(struct repo *r, enum blob_type type, const struct oid *id, struct buf *out,
                   struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    struct idx_loc loc;
    struct oid pack_id;
    if (!locate(r, id, &loc, &pack_id))
        return err_set(e, ERR_NOT_FOUND, "blob %s is not in the index", oid_hex(id, hex));
    (void)type; /* the index knows the stored type (see below) */

    char name[80];
    pack_object_name(&pack_id, name);
    int rc;
    /* Blobs are keyed by ID alone, so a tree whose encoding equals a data chunk shares that
     * chunk's entry: the stored type says which kind of pack holds it, and the blob is opened
     * with that type. The content is the same either way, and crypt_blob_open checks it against
     * the ID. */
    if (r->cache && loc.type == BLOB_TREE) {
        rc = load_tree_blob(r, name, &loc, id, out, e);
    } else if (ra_window(r->ra)) {
        rc = ra_open_blob(r->ra, name, &pack_id, &loc, id, out, e);
    } else {
        struct buf stored = BUF_INIT;
        rc = backend_load(r->b, name, loc.offset, loc.stored_len, &stored, e);
        if (rc == 0) rc = open_blob(r, &loc, id, &stored, out, e);
        buf_free(&stored);
    }
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
