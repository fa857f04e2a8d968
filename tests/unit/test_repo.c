/* test_repo.c - unit tests of repository create/open, keys, files, index load, blob reads, the
 * local cache of index files, snapshots and tree packs, and read-ahead (repo/repo.c), on a local
 * directory (cache and read-ahead switched on explicitly; a counting wrapper shows what reaches
 * the backend). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "repo/cache.h"
#include "repo/pack.h"
#include "repo/repo.h"
#include "repo/store.h"
#include "fixture.h"

/* A fresh repository location (not created yet). */
static void new_location(char out[FIXTURE_LOC_MAX])
{
    fixture_location(out);
}

static void create(const char *loc, const char *pw)
{
    struct err e;
    assert_int_equal(fixture_create(loc, pw, 2u * 1024 * 1024, 5, &e), 0);
}

static struct repo *open_ok(const char *loc, const char *pw)
{
    struct repo *r;
    struct err e;
    int rc = repo_open(loc, pw, NULL, &r, &e);
    if (rc) fail_msg("open %s: %s", loc, e.msg);
    return r;
}

static size_t count_ids(struct repo *r, const char *dir)
{
    struct oid *ids;
    size_t n;
    struct err e;
    assert_int_equal(repo_list_ids(r, dir, &ids, &n, &e), 0);
    free(ids);
    return n;
}

static void test_create_open(void **state)
{
    char loc[600];
    new_location(loc);
    create(loc, "secret");
    struct repo *r = open_ok(loc, "secret");
    const struct config *c = repo_config(r);
    assert_int_equal(c->version, CONFIG_VERSION);
    assert_int_equal(c->pack_size, 2u * 1024 * 1024);
    assert_int_equal(c->zstd_level, 5);
    assert_int_equal(c->chunker.avg_size, CHUNKER_DEFAULT_AVG);
    assert_false(oid_is_zero(&c->repo_id));
    assert_non_null(repo_chunker(r));
    assert_non_null(repo_backend(r));
    assert_non_null(repo_index(r));
    assert_int_equal(idx_blob_count(repo_index(r)), 0);

    /* The key that opened it is the one key file. */
    struct oid *ids;
    size_t n;
    struct err e;
    assert_int_equal(repo_list_ids(r, "keys", &ids, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_true(oid_eq(&ids[0], repo_key_id(r)));
    free(ids);

    /* Two opens derive the same keys. */
    struct repo *r2 = open_ok(loc, "secret");
    assert_memory_equal(repo_keys(r), repo_keys(r2), sizeof(struct crypt_keys));
    assert_memory_equal(&repo_config(r)->repo_id, &repo_config(r2)->repo_id, OID_LEN);
    repo_close(r2);
    repo_close(r);
}

static void test_wrong_password(void **state)
{
    char loc[600];
    struct repo *r = (struct repo *)loc;
    struct err e;
    new_location(loc);
    create(loc, "right");
    assert_int_equal(repo_open(loc, "wrong", NULL, &r, &e), ERR_AUTH);
    assert_null(r);
    assert_non_null(strstr(e.msg, "password"));
    assert_int_equal(repo_open(loc, "", NULL, &r, &e), ERR_AUTH);
}

static void test_missing_repo(void **state)
{
    char loc[600];
    struct repo *r;
    struct err e;
    new_location(loc);
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no repository at"));
    assert_non_null(strstr(e.msg, loc));
    /* An existing directory that is not a repository. */
    assert_int_equal(mkdir(loc, 0700), 0);
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no repository at"));
}

static void test_create_twice(void **state)
{
    char loc[600];
    new_location(loc);
    create(loc, "one");
    struct repo_create_params p;
    struct err e;
    config_default(&p.config);
    keyfile_params_min(&p.kdf);
    assert_int_equal(repo_create(loc, "two", &p, NULL, &e), ERR_EXISTS);
    assert_non_null(strstr(e.msg, "already exists"));
    struct repo *r = open_ok(loc, "one");
    assert_int_equal(count_ids(r, "keys"), 1); /* no stray key file */
    repo_close(r);
    assert_int_equal(repo_open(loc, "two", NULL, &r, &e), ERR_AUTH);
}

static void test_create_bad_config(void **state)
{
    char loc[600];
    new_location(loc);
    struct repo_create_params p;
    struct err e;
    config_default(&p.config);
    p.config.pack_size = 10; /* below the minimum */
    keyfile_params_min(&p.kdf);
    assert_int_equal(repo_create(loc, "pw", &p, NULL, &e), ERR_FAIL);
    struct repo *r;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), ERR_NOT_FOUND);
}

static void test_keys(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "first");
    struct repo *r = open_ok(loc, "first");
    struct oid first = *repo_key_id(r), second;
    struct keyfile_params kp;
    keyfile_params_min(&kp);
    assert_int_equal(repo_key_add(r, "second", &kp, &second, &e), 0);
    assert_int_equal(count_ids(r, "keys"), 2);
    /* The key in use cannot be removed. */
    assert_int_equal(repo_key_remove(r, &first, &e), ERR_FAIL);
    repo_close(r);

    r = open_ok(loc, "second");
    assert_true(oid_eq(repo_key_id(r), &second));
    struct repo *r1 = open_ok(loc, "first");
    assert_memory_equal(repo_keys(r)->master, repo_keys(r1)->master, CRYPT_KEY_LEN);
    repo_close(r1);

    struct oid absent = {{1, 2, 3}};
    assert_int_equal(repo_key_remove(r, &absent, &e), ERR_NOT_FOUND);
    assert_int_equal(repo_key_remove(r, &first, &e), 0);
    assert_int_equal(count_ids(r, "keys"), 1);
    /* The last key stays (and is also the one in use). */
    assert_int_equal(repo_key_remove(r, &second, &e), ERR_FAIL);
    repo_close(r);

    assert_int_equal(repo_open(loc, "first", NULL, &r, &e), ERR_AUTH);
    r = open_ok(loc, "second");
    repo_close(r);
}

static void test_broken_key_file_skipped(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    char name[100];
    /* Sorts first, so it is tried first. */
    snprintf(name, sizeof name, "keys/%064d", 0);
    assert_int_equal(backend_save(repo_backend(r), name, "{", 1, false, &e), 0);
    repo_close(r);
    r = open_ok(loc, "pw");
    repo_close(r);
    assert_int_equal(repo_open(loc, "nope", NULL, &r, &e), ERR_AUTH);
    assert_non_null(strstr(e.msg, "could not be read"));
}

static void test_files(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    const char msg[] = "a snapshot, say";
    struct oid id, id2;
    assert_int_equal(repo_save_file(r, "snapshots", "snapshot", msg, sizeof msg, &id, &e), 0);
    assert_int_equal(repo_save_file(r, "snapshots", "snapshot", "", 0, &id2, &e), 0);
    assert_false(oid_eq(&id, &id2));

    struct buf out = BUF_INIT;
    buf_put_u8(&out, 'X'); /* loads append */
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id, &out, &e), 0);
    assert_int_equal(out.len, 1 + sizeof msg);
    assert_memory_equal(out.data + 1, msg, sizeof msg);
    buf_reset(&out);
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id2, &out, &e), 0);
    assert_int_equal(out.len, 0);
    /* A snapshot cannot be read as an index. */
    assert_int_equal(repo_load_file(r, "snapshots", "index", &id, &out, &e), ERR_AUTH);
    struct oid missing = {{9}};
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &missing, &out, &e), ERR_NOT_FOUND);

    /* Listing skips names that are not IDs. */
    assert_int_equal(backend_save(repo_backend(r), "snapshots/README", "x", 1, false, &e), 0);
    struct oid *ids;
    size_t n;
    assert_int_equal(repo_list_ids(r, "snapshots", &ids, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_true(oid_cmp(&ids[0], &ids[1]) < 0);
    assert_true((oid_eq(&ids[0], &id) && oid_eq(&ids[1], &id2)) ||
                (oid_eq(&ids[0], &id2) && oid_eq(&ids[1], &id)));
    free(ids);
    assert_int_equal(count_ids(r, "locks"), 0);
    buf_free(&out);
    repo_close(r);
}

static void test_tampered_config(void **state)
{
    char loc[600], other[600];
    struct err e;
    new_location(loc);
    new_location(other);
    create(loc, "pw");
    create(other, "pw");
    struct repo *r = open_ok(loc, "pw");
    struct buf cfg = BUF_INIT, cfg_other = BUF_INIT;
    assert_int_equal(backend_load(repo_backend(r), "config", 0, 0, &cfg, &e), 0);
    struct repo *ro = open_ok(other, "pw");
    assert_int_equal(backend_load(repo_backend(ro), "config", 0, 0, &cfg_other, &e), 0);
    repo_close(ro);

    cfg.data[cfg.len / 2] ^= 4;
    assert_int_equal(backend_save(repo_backend(r), "config", cfg.data, cfg.len, true, &e), 0);
    struct repo *bad;
    assert_int_equal(repo_open(loc, "pw", NULL, &bad, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "config"));
    /* Another repository's config, sealed with another key, is refused too. */
    assert_int_equal(
        backend_save(repo_backend(r), "config", cfg_other.data, cfg_other.len, true, &e), 0);
    assert_int_equal(repo_open(loc, "pw", NULL, &bad, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "config"));
    buf_free(&cfg);
    buf_free(&cfg_other);
    repo_close(r);
}

/* Writes a pack of `n` blobs whose plaintexts are "blob <tag> <i>" and returns its ID and
 * entries (caller frees). */
static void write_pack(struct repo *r, const char *tag, size_t n, struct oid *pack_id,
                       struct pack_entry **ents)
{
    struct pack_writer *w;
    struct err e;
    struct buf sealed = BUF_INIT;
    int fd;
    assert_int_equal(backend_tmp_file(repo_backend(r), &fd, &e), 0);
    assert_int_equal(pack_writer_new(&w, fd, &e), 0);
    for (size_t i = 0; i < n; i++) {
        char plain[64];
        int len = snprintf(plain, sizeof plain, "blob %s %zu", tag, i);
        struct oid id;
        crypt_blob_id(repo_keys(r), plain, (size_t)len, &id, NULL);
        buf_reset(&sealed);
        assert_int_equal(
            crypt_blob_seal(repo_keys(r), BLOB_DATA, &id, plain, (size_t)len, 3, &sealed, &e), 0);
        assert_int_equal(
            pack_writer_add(w, BLOB_DATA, &id, sealed.data, sealed.len, (uint32_t)len, &e), 0);
    }
    uint64_t pack_len;
    assert_int_equal(pack_writer_finish(w, repo_keys(r), pack_id, &pack_len, &e), 0);
    assert_int_equal(repo_save_pack(r, pack_id, BLOB_DATA, w, pack_len, &e), 0);
    size_t wn;
    const struct pack_entry *we = pack_writer_entries(w, &wn);
    *ents = malloc(wn * sizeof **ents);
    memcpy(*ents, we, wn * sizeof **ents);
    pack_writer_free(w);
    buf_free(&sealed);
}

static void write_index(struct repo *r, const struct idx_file_pack *packs, size_t n,
                        const struct oid *sup, size_t n_sup, struct oid *id)
{
    struct buf plain = BUF_INIT;
    struct err e;
    assert_int_equal(idx_file_encode(packs, n, sup, n_sup, &plain, &e), 0);
    assert_int_equal(repo_save_file(r, "index", "index", plain.data, plain.len, id, &e), 0);
    buf_free(&plain);
}

static void expect_blob(struct repo *r, const char *tag, size_t i, const struct pack_entry *pe)
{
    char plain[64];
    int len = snprintf(plain, sizeof plain, "blob %s %zu", tag, i);
    struct buf out = BUF_INIT;
    struct err e;
    assert_int_equal(repo_load_blob(r, BLOB_DATA, &pe->id, &out, &e), 0);
    assert_int_equal(out.len, (size_t)len);
    assert_memory_equal(out.data, plain, (size_t)len);
    buf_free(&out);
}

static void test_index_and_blobs(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    enum { FILES = 12, PER = 30 };
    struct oid packs[FILES], ids[FILES];
    struct pack_entry *ents[FILES];
    for (int f = 0; f < FILES; f++) {
        char tag[16];
        snprintf(tag, sizeof tag, "f%d", f);
        write_pack(r, tag, PER, &packs[f], &ents[f]);
        struct idx_file_pack fp = {packs[f], ents[f], PER};
        write_index(r, &fp, 1, NULL, 0, &ids[f]);
    }
    /* The pack listing finds the packs by their data/xx/ names. */
    assert_int_equal(count_ids(r, "data"), FILES);
    repo_close(r);

    r = open_ok(loc, "pw");
    struct buf out = BUF_INIT;
    assert_int_equal(repo_load_blob(r, BLOB_DATA, &ents[0][0].id, &out, &e), ERR_NOT_FOUND);
    assert_int_equal(repo_load_index(r, &e), 0);
    assert_int_equal(repo_load_index(r, &e), 0); /* once only */
    assert_int_equal(idx_blob_count(repo_index(r)), FILES * PER);
    assert_int_equal(idx_pack_count(repo_index(r)), FILES);
    for (int f = 0; f < FILES; f++) {
        char tag[16];
        snprintf(tag, sizeof tag, "f%d", f);
        for (int i = 0; i < PER; i++)
            expect_blob(r, tag, (size_t)i, &ents[f][i]);
    }
    struct oid unknown = {{0xee}};
    assert_int_equal(repo_load_blob(r, BLOB_DATA, &unknown, &out, &e), ERR_NOT_FOUND);

    /* A damaged pack is reported, naming the blob. */
    char name[80], hex[OID_HEX_LEN + 1];
    pack_object_name(&packs[3], name);
    struct buf pack = BUF_INIT;
    assert_int_equal(backend_load(repo_backend(r), name, 0, 0, &pack, &e), 0);
    pack.data[ents[3][5].offset + 30] ^= 1;
    assert_int_equal(backend_save(repo_backend(r), name, pack.data, pack.len, true, &e), 0);
    assert_int_equal(repo_load_blob(r, BLOB_DATA, &ents[3][5].id, &out, &e), ERR_AUTH);
    assert_non_null(strstr(e.msg, oid_hex(&ents[3][5].id, hex)));
    expect_blob(r, "f3", 6, &ents[3][6]);
    repo_close(r);
    buf_free(&pack);
    buf_free(&out);
    for (int f = 0; f < FILES; f++)
        free(ents[f]);
}

static void test_index_supersedes(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    /* Old index A: pack P1 with blobs 0..9 of "a". New index B supersedes A: pack P2 holding
     * blobs 0..4 of "a" again (as a prune that dropped 5..9 would write). Enough other index
     * files that A and B are loaded in parallel, in no particular order. */
    struct oid p1, p2, a, b, other[6];
    struct pack_entry *e1, *e2, *eo[6];
    write_pack(r, "a", 10, &p1, &e1);
    write_pack(r, "a", 5, &p2, &e2);
    struct idx_file_pack fa = {p1, e1, 10}, fb = {p2, e2, 5};
    write_index(r, &fa, 1, NULL, 0, &a);
    write_index(r, &fb, 1, &a, 1, &b);
    for (int i = 0; i < 6; i++) {
        struct oid pid;
        char tag[8];
        snprintf(tag, sizeof tag, "o%d", i);
        write_pack(r, tag, 3, &pid, &eo[i]);
        struct idx_file_pack fo = {pid, eo[i], 3};
        write_index(r, &fo, 1, NULL, 0, &other[i]);
    }
    repo_close(r);

    r = open_ok(loc, "pw");
    assert_int_equal(repo_load_index(r, &e), 0);
    struct idx *x = repo_index(r);
    assert_int_equal(idx_blob_count(x), 5 + 6 * 3);
    assert_int_equal(idx_pack_count(x), 7);
    for (int i = 0; i < 5; i++) {
        struct idx_loc loc_;
        assert_true(idx_lookup(x, &e2[i].id, &loc_));
        assert_true(oid_eq(idx_pack_id(x, loc_.pack), &p2));
        expect_blob(r, "a", (size_t)i, &e2[i]);
    }
    for (int i = 5; i < 10; i++)
        assert_false(idx_lookup(x, &e1[i].id, NULL));
    repo_close(r);
    free(e1);
    free(e2);
    for (int i = 0; i < 6; i++)
        free(eo[i]);
}

static void test_index_damaged(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    struct oid p, id, id2;
    struct pack_entry *ents;
    write_pack(r, "x", 4, &p, &ents);
    struct idx_file_pack fp = {p, ents, 4};
    write_index(r, &fp, 1, NULL, 0, &id);
    /* A sealed, authentic index file whose plaintext is not an index. */
    assert_int_equal(repo_save_file(r, "index", "index", "garbage", 7, &id2, &e), 0);
    assert_int_equal(repo_load_index(r, &e), ERR_FAIL);
    char hex[OID_HEX_LEN + 1];
    assert_non_null(strstr(e.msg, oid_hex(&id2, hex)));
    assert_int_equal(idx_blob_count(repo_index(r)), 0); /* nothing half-loaded */
    repo_close(r);
    free(ents);
}

/* ---- the cache ---- */

/* Counts the loads that reach a repository's backend, by directory. */
static struct {
    struct backend_ops ops;
    const struct backend_ops *inner;
    atomic_int index, snapshots, data;
} counting;

static int counting_load(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                         struct buf *out, struct err *e)
{
    if (strncmp(name, "index/", 6) == 0) counting.index++;
    if (strncmp(name, "snapshots/", 10) == 0) counting.snapshots++;
    if (strncmp(name, "data/", 5) == 0) counting.data++;
    return counting.inner->load(self, name, offset, len, out, e);
}

static void count_loads(struct repo *r)
{
    struct backend *b = repo_backend(r);
    counting.inner = b->ops;
    counting.ops = *b->ops;
    counting.ops.load = counting_load;
    b->ops = &counting.ops;
    counting.index = counting.snapshots = counting.data = 0;
}

/* The first listing of index/ also names a file that is not there, as when a concurrent prune
 * removed it between the listing and the load. */
static struct {
    struct backend_ops ops;
    const struct backend_ops *inner;
    int index_lists;
} ghost;

static int ghost_list(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                      struct err *e)
{
    int rc = ghost.inner->list(self, prefix, cb, ctx, e);
    if (rc != 0 || strcmp(prefix, "index/") != 0 || ghost.index_lists++ > 0) return rc;
    return cb(ctx, "index/00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", 9);
}

static void test_vanished_while_listed(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    struct oid pack_id;
    struct pack_entry *ents;
    write_pack(r, "a", 3, &pack_id, &ents);
    struct idx_file_pack fp = {.pack_id = pack_id, .entries = ents, .n = 3};
    struct oid iid;
    write_index(r, &fp, 1, NULL, 0, &iid);
    repo_close(r);

    r = open_ok(loc, "pw");
    struct backend *b = repo_backend(r);
    ghost.inner = b->ops;
    ghost.ops = *b->ops;
    ghost.ops.list = ghost_list;
    ghost.index_lists = 0;
    b->ops = &ghost.ops;
    err_clear(&e);
    if (repo_load_index(r, &e) != 0) fail_msg("index: %s", e.msg);
    assert_int_equal(ghost.index_lists, 2); /* listed again after the miss */
    assert_int_equal(idx_blob_count(repo_index(r)), 3);
    b->ops = ghost.inner;
    repo_close(r);
    free(ents);
}

static void cache_path(struct repo *r, const char *dir, const char *name, char out[1400])
{
    char hex[OID_HEX_LEN + 1];
    snprintf(out, 1400, "%s/%s/%s", dir, oid_hex(&repo_config(r)->repo_id, hex), name);
}

static bool cached(struct repo *r, const char *dir, const char *name)
{
    char path[1400];
    struct stat st;
    cache_path(r, dir, name, path);
    return stat(path, &st) == 0;
}

/* Replaces the cached copy of `name`, as damage would. */
static void put_cached(struct repo *r, const char *dir, const char *name, const void *data,
                       size_t len)
{
    struct cache *c;
    struct err e;
    char hex[OID_HEX_LEN + 1];
    assert_int_equal(cache_open(dir, oid_hex(&repo_config(r)->repo_id, hex), &c, &e), 0);
    assert_int_equal(cache_put(c, name, data, len, &e), 0);
    cache_close(c);
}

/* The cached copy of `name` holds what the repository holds. (This check's own load is not
 * counted.) */
static void expect_cached_copy(struct repo *r, const char *dir, const char *name)
{
    int counts[3] = {counting.index, counting.snapshots, counting.data};
    struct cache *c;
    struct buf a = BUF_INIT, b = BUF_INIT;
    struct err e;
    char hex[OID_HEX_LEN + 1];
    assert_int_equal(cache_open(dir, oid_hex(&repo_config(r)->repo_id, hex), &c, &e), 0);
    assert_int_equal(cache_get(c, name, &a, &e), 0);
    assert_int_equal(backend_load(repo_backend(r), name, 0, 0, &b, &e), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    counting.index = counts[0];
    counting.snapshots = counts[1];
    counting.data = counts[2];
    cache_close(c);
    buf_free(&a);
    buf_free(&b);
}

static void test_cache_files(void **state)
{
    char loc[600], cdir[600], name[160], name2[160], hex[OID_HEX_LEN + 1];
    struct err e;
    struct buf out = BUF_INIT;
    new_location(loc);
    new_location(cdir);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    assert_null(repo_cache_dir(r)); /* a local directory needs none */
    assert_int_equal(repo_set_cache(r, cdir, &e), 0);
    assert_string_equal(repo_cache_dir(r), cdir);
    count_loads(r);

    /* What this client saves is cached as it is uploaded, and read from there. */
    struct oid id, id2;
    assert_int_equal(repo_save_file(r, "snapshots", "snapshot", "one", 3, &id, &e), 0);
    snprintf(name, sizeof name, "snapshots/%s", oid_hex(&id, hex));
    assert_true(cached(r, cdir, name));
    expect_cached_copy(r, cdir, name);
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id, &out, &e), 0);
    assert_int_equal(out.len, 3);
    assert_memory_equal(out.data, "one", 3);
    assert_int_equal(counting.snapshots, 0);

    /* A copy that does not open is dropped and fetched again; the caller never sees it. */
    put_cached(r, cdir, name, "garbage that does not authenticate", 34);
    buf_reset(&out);
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id, &out, &e), 0);
    assert_int_equal(out.len, 3);
    assert_int_equal(counting.snapshots, 1);
    expect_cached_copy(r, cdir, name);
    /* ...also one cut short. */
    put_cached(r, cdir, name, "", 0);
    buf_reset(&out);
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id, &out, &e), 0);
    assert_int_equal(counting.snapshots, 2);
    expect_cached_copy(r, cdir, name);

    /* A file another client wrote is cached on its first read. */
    struct repo *other = open_ok(loc, "pw");
    assert_int_equal(repo_save_file(other, "snapshots", "snapshot", "two", 3, &id2, &e), 0);
    repo_close(other);
    snprintf(name2, sizeof name2, "snapshots/%s", oid_hex(&id2, hex));
    assert_false(cached(r, cdir, name2));
    for (int i = 0; i < 3; i++) {
        buf_reset(&out);
        assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id2, &out, &e), 0);
        assert_memory_equal(out.data, "two", 3);
    }
    assert_int_equal(counting.snapshots, 3);
    assert_true(cached(r, cdir, name2));

    /* Removed by another client: the listing drops the copy. */
    assert_int_equal(backend_remove(repo_backend(r), name2, &e), 0);
    assert_int_equal(count_ids(r, "snapshots"), 1);
    assert_false(cached(r, cdir, name2));
    assert_true(cached(r, cdir, name));
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id2, &out, &e), ERR_NOT_FOUND);

    /* repo_remove_file removes both. */
    assert_int_equal(repo_remove_file(r, "snapshots", &id, &e), 0);
    assert_false(cached(r, cdir, name));
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id, &out, &e), ERR_NOT_FOUND);
    assert_int_equal(repo_remove_file(r, "snapshots", &id, &e), ERR_NOT_FOUND);

    /* Index files are cached too; other directories are not. */
    assert_int_equal(repo_save_file(r, "index", "index", "x", 1, &id, &e), 0);
    snprintf(name, sizeof name, "index/%s", oid_hex(&id, hex));
    assert_true(cached(r, cdir, name));
    assert_int_equal(repo_save_file(r, "locks", "lock", "x", 1, &id, &e), 0);
    snprintf(name, sizeof name, "locks/%s", oid_hex(&id, hex));
    assert_false(cached(r, cdir, name));

    /* Without a cache, every read goes to the repository. */
    assert_int_equal(repo_set_cache(r, NULL, &e), 0);
    assert_null(repo_cache_dir(r));
    assert_int_equal(repo_save_file(r, "snapshots", "snapshot", "three", 5, &id, &e), 0);
    assert_int_equal(repo_load_file(r, "snapshots", "snapshot", &id, &out, &e), 0);
    assert_int_equal(counting.snapshots, 6); /* 3 + the two that found nothing + this one */
    snprintf(name, sizeof name, "snapshots/%s", oid_hex(&id, hex));
    assert_false(cached(r, cdir, name));
    buf_free(&out);
    repo_close(r);
}

enum { TREES = 300, DATAS = 20, READERS = 4 };

struct tree_blobs {
    struct repo *r;
    char plain[TREES][96];
    struct oid id[TREES];
    atomic_int bad;
};

static void *read_trees(void *arg)
{
    struct tree_blobs *t = arg;
    struct buf out = BUF_INIT;
    struct err e;
    for (int i = 0; i < TREES; i++) {
        buf_reset(&out);
        if (repo_load_blob(t->r, BLOB_TREE, &t->id[i], &out, &e) != 0 ||
            out.len != strlen(t->plain[i]) || memcmp(out.data, t->plain[i], out.len) != 0)
            t->bad++;
    }
    buf_free(&out);
    return NULL;
}

static void expect_trees(struct tree_blobs *t, int readers)
{
    pthread_t th[READERS];
    t->bad = 0;
    for (int i = 0; i < readers; i++)
        assert_int_equal(pthread_create(&th[i], NULL, read_trees, t), 0);
    for (int i = 0; i < readers; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(t->bad, 0);
}

/* The pack that holds blob `id`. */
static void pack_of(struct repo *r, const struct oid *id, char name[80])
{
    struct idx_loc loc;
    assert_true(idx_lookup(repo_index(r), id, &loc));
    pack_object_name(idx_pack_id(repo_index(r), loc.pack), name);
}

static void test_cache_tree_packs(void **state)
{
    char loc[600], cdir[600], cdir2[600], tree_pack[80], data_pack[80];
    struct err e;
    new_location(loc);
    new_location(cdir);
    new_location(cdir2);
    create(loc, "pw");
    static struct tree_blobs t;
    struct oid data_id[DATAS];
    char data[DATAS][64];

    /* A backup: the tree pack goes into the cache as it is uploaded, the data pack does not. */
    struct repo *r = open_ok(loc, "pw");
    assert_int_equal(repo_set_cache(r, cdir, &e), 0);
    assert_int_equal(repo_load_index(r, &e), 0);
    struct store *s;
    assert_int_equal(store_new(r, &s, &e), 0);
    for (int i = 0; i < TREES; i++) {
        snprintf(t.plain[i], sizeof t.plain[i], "{\"tree\":%d,\"nodes\":[\"dir %d\"]}", i, i * 7);
        crypt_blob_id(repo_keys(r), t.plain[i], strlen(t.plain[i]), &t.id[i], NULL);
        assert_int_equal(
            store_add(s, BLOB_TREE, &t.id[i], t.plain[i], strlen(t.plain[i]), NULL, &e), 0);
    }
    for (int i = 0; i < DATAS; i++) {
        snprintf(data[i], sizeof data[i], "file content %d", i);
        crypt_blob_id(repo_keys(r), data[i], strlen(data[i]), &data_id[i], NULL);
        assert_int_equal(store_add(s, BLOB_DATA, &data_id[i], data[i], strlen(data[i]), NULL, &e),
                         0);
    }
    assert_int_equal(store_flush(s, &e), 0);
    store_free(s);
    pack_of(r, &t.id[0], tree_pack);
    pack_of(r, &data_id[0], data_pack);
    assert_string_not_equal(tree_pack, data_pack);
    assert_true(cached(r, cdir, tree_pack));
    expect_cached_copy(r, cdir, tree_pack);
    assert_false(cached(r, cdir, data_pack));
    /* The next run reads its trees from there. */
    count_loads(r);
    t.r = r;
    expect_trees(&t, 1);
    assert_int_equal(counting.data, 0);
    repo_close(r);

    /* Another client with an empty cache: the first tree read fetches the whole pack, once,
     * however many threads want trees from it at the same time. */
    r = open_ok(loc, "pw");
    assert_int_equal(repo_set_cache(r, cdir2, &e), 0);
    count_loads(r);
    assert_int_equal(repo_load_index(r, &e), 0);
    assert_int_equal(counting.index, 1);
    t.r = r;
    expect_trees(&t, READERS);
    assert_int_equal(counting.data, 1);
    expect_cached_copy(r, cdir2, tree_pack);
    /* Data blobs are not cached. */
    struct buf out = BUF_INIT;
    for (int i = 0; i < 2; i++) {
        buf_reset(&out);
        assert_int_equal(repo_load_blob(r, BLOB_DATA, &data_id[3], &out, &e), 0);
        assert_memory_equal(out.data, data[3], strlen(data[3]));
    }
    assert_int_equal(counting.data, 3);
    assert_false(cached(r, cdir2, data_pack));

    /* A damaged copy is dropped and fetched again. */
    struct buf pack = BUF_INIT;
    assert_int_equal(backend_load(repo_backend(r), tree_pack, 0, 0, &pack, &e), 0);
    counting.data--; /* not the repository's read */
    struct idx_loc l0;
    assert_true(idx_lookup(repo_index(r), &t.id[0], &l0));
    pack.data[l0.offset + l0.stored_len / 2] ^= 0x20;
    put_cached(r, cdir2, tree_pack, pack.data, pack.len);
    expect_trees(&t, 1);
    assert_int_equal(counting.data, 4);
    expect_cached_copy(r, cdir2, tree_pack);
    /* ...also one cut short. */
    put_cached(r, cdir2, tree_pack, pack.data, 100);
    expect_trees(&t, 1);
    assert_int_equal(counting.data, 5);
    expect_cached_copy(r, cdir2, tree_pack);

    /* With the pack gone from the repository, its trees are still read from the cache (objects
     * never change, so the copy cannot be stale)... */
    assert_int_equal(backend_remove(repo_backend(r), tree_pack, &e), 0);
    expect_trees(&t, READERS);
    assert_int_equal(counting.data, 5);
    repo_close(r);

    /* ...until an index load shows the repository no longer lists it. The fake index drops
     * the tree pack; the copy of a pack the index does list stays. */
    r = open_ok(loc, "pw");
    assert_int_equal(repo_set_cache(r, cdir2, &e), 0);
    struct oid *ids;
    size_t n;
    assert_int_equal(repo_list_ids(r, "index", &ids, &n, &e), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(repo_remove_file(r, "index", &ids[i], &e), 0);
    free(ids);
    struct pack_entry *ents;
    struct oid p, xid;
    write_pack(r, "kept", 2, &p, &ents);
    struct idx_file_pack fp = {p, ents, 2};
    write_index(r, &fp, 1, NULL, 0, &xid);
    char kept[80];
    pack_object_name(&p, kept);
    assert_int_equal(backend_load(repo_backend(r), kept, 0, 0, &pack, &e), 0);
    put_cached(r, cdir2, kept, pack.data, pack.len);
    assert_int_equal(repo_load_index(r, &e), 0);
    assert_false(cached(r, cdir2, tree_pack));
    assert_true(cached(r, cdir2, kept));
    repo_close(r);
    free(ents);
    buf_free(&pack);
    buf_free(&out);
}

struct ahead {
    struct repo *r;
    const struct pack_entry *ents;
    size_t n;
    int stride; /* read every blob i with i % stride == phase, in that order */
    int phase;
    atomic_int bad;
};

static void *read_blobs(void *arg)
{
    struct ahead *a = arg;
    for (size_t i = (size_t)a->phase; i < a->n; i += (size_t)a->stride) {
        char plain[64];
        int len = snprintf(plain, sizeof plain, "blob ahead %zu", i);
        struct buf out = BUF_INIT;
        struct err e;
        if (repo_load_blob(a->r, BLOB_DATA, &a->ents[i].id, &out, &e) != 0 ||
            out.len != (size_t)len || memcmp(out.data, plain, out.len) != 0)
            a->bad++;
        buf_free(&out);
    }
    return NULL;
}

/* A new repository at loc holding one pack of n blobs "blob ahead <i>" (its entries in *ents,
 * the pack's ID in *pack) and an index of it; returns where the pack's blobs end. */
static uint64_t make_ahead_repo(char loc[600], size_t n, struct oid *pack, struct pack_entry **ents)
{
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    struct oid xid;
    write_pack(r, "ahead", n, pack, ents);
    struct idx_file_pack fp = {*pack, *ents, n};
    write_index(r, &fp, 1, NULL, 0, &xid);
    repo_close(r);
    return (*ents)[n - 1].offset + (*ents)[n - 1].stored_len;
}

static void test_read_ahead(void **state)
{
    char loc[600];
    struct err e;
    enum { N = 400 };
    struct oid p;
    struct pack_entry *ents;
    uint64_t area = make_ahead_repo(loc, N, &p, &ents);

    /* Off (a local directory's default): one read per blob. */
    struct repo *r = open_ok(loc, "pw");
    assert_int_equal(repo_load_index(r, &e), 0);
    count_loads(r);
    struct ahead a = {.r = r, .ents = ents, .n = N, .stride = 1};
    read_blobs(&a);
    assert_int_equal(a.bad, 0);
    assert_int_equal(counting.data, N);

    /* On: reading in order takes one read per window. */
    const size_t window = 2048;
    repo_set_read_ahead(r, window);
    counting.data = 0;
    read_blobs(&a);
    assert_int_equal(a.bad, 0);
    assert_true(counting.data >= (int)(area / window));
    assert_true(counting.data <= (int)(area / window) + 2);
    /* A window as large as the pack: one read; never past the pack's blobs (the local backend
     * fails a read past the end of the file, and the header follows the blobs anyway). */
    repo_set_read_ahead(r, 1u << 20);
    counting.data = 0;
    read_blobs(&a);
    assert_int_equal(a.bad, 0);
    assert_int_equal(counting.data, 1);

    /* Threads reading interleaved streams, and backwards: all correct, still far fewer reads
     * than blobs. */
    repo_close(r);
    r = open_ok(loc, "pw");
    assert_int_equal(repo_load_index(r, &e), 0);
    repo_set_read_ahead(r, window);
    count_loads(r);
    pthread_t th[4];
    struct ahead as[4];
    for (int t = 0; t < 4; t++) {
        as[t] = (struct ahead){.r = r, .ents = ents, .n = N, .stride = 4, .phase = t};
        assert_int_equal(pthread_create(&th[t], NULL, read_blobs, &as[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(as[t].bad, 0);
    }
    assert_true(counting.data < N / 4);
    for (int i = N - 1; i >= 0; i--) {
        struct ahead one = {.r = r, .ents = ents, .n = (size_t)i + 1, .stride = N, .phase = i};
        read_blobs(&one);
        assert_int_equal(one.bad, 0);
    }

    /* A damaged blob fails alone; its neighbours in the same window read fine. */
    char name[80];
    pack_object_name(&p, name);
    struct buf pack = BUF_INIT;
    assert_int_equal(backend_load(repo_backend(r), name, 0, 0, &pack, &e), 0);
    pack.data[ents[10].offset + 20] ^= 1;
    assert_int_equal(backend_save(repo_backend(r), name, pack.data, pack.len, true, &e), 0);
    repo_close(r);
    r = open_ok(loc, "pw");
    assert_int_equal(repo_load_index(r, &e), 0);
    repo_set_read_ahead(r, 1u << 20);
    struct buf out = BUF_INIT;
    assert_int_equal(repo_load_blob(r, BLOB_DATA, &ents[9].id, &out, &e), 0);
    assert_int_equal(repo_load_blob(r, BLOB_DATA, &ents[10].id, &out, &e), ERR_AUTH);
    assert_int_equal(repo_load_blob(r, BLOB_DATA, &ents[11].id, &out, &e), 0);
    repo_close(r);
    buf_free(&out);
    buf_free(&pack);
    free(ents);
}

/* Loads of data/ seen by the backend under a prefetching repository: how many, the most at
 * once, and the first load of a whole segment at `fail_at` fails (when fail_at >= 0). */
static struct {
    struct backend_ops ops;
    const struct backend_ops *inner;
    atomic_int loads, in_flight, max_in_flight, direct, tried, failed;
    long long fail_at;
    uint64_t window, ends[2]; /* segments are `window` bytes, or end where a pack's blobs do */
    uint64_t direct_offset;   /* where the last direct read began */
} watch;

static int watch_load(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                      struct buf *out, struct err *e)
{
    if (strncmp(name, "data/", 5) != 0) return watch.inner->load(self, name, offset, len, out, e);
    watch.loads++;
    bool segment =
        offset % watch.window == 0 &&
        (len == watch.window || offset + len == watch.ends[0] || offset + len == watch.ends[1]);
    if (!segment) {
        watch.direct++;
        watch.direct_offset = offset;
    }
    if (segment && (long long)offset == watch.fail_at && !watch.tried++) {
        watch.failed++;
        return err_set(e, ERR_FAIL, "injected failure");
    }
    int now = ++watch.in_flight, max = watch.max_in_flight;
    while (now > max && !atomic_compare_exchange_weak(&watch.max_in_flight, &max, now)) {
    }
    usleep(2000); /* a network's latency, so that fetches overlap */
    int rc = watch.inner->load(self, name, offset, len, out, e);
    watch.in_flight--;
    return rc;
}

static void watch_loads(struct repo *r, uint64_t window, long long fail_at)
{
    struct backend *b = repo_backend(r);
    if (b->ops != &watch.ops) {
        watch.inner = b->ops;
        watch.ops = *b->ops;
        watch.ops.load = watch_load;
        b->ops = &watch.ops;
    }
    watch.loads = watch.in_flight = watch.max_in_flight = watch.direct = watch.tried = 0;
    watch.failed = 0;
    watch.fail_at = fail_at;
    watch.window = window;
}

/* A restore's pattern: one thread announces the blobs in order, keeping at most `ahead` blobs
 * announced and not read; readers take the next blob in that order. */
struct plan {
    struct repo *r;
    const struct pack_entry *ents;
    size_t n, ahead;
    atomic_size_t announced, next, done;
    atomic_int bad;
};

static void *plan_reader(void *arg)
{
    struct plan *pl = arg;
    struct buf out = BUF_INIT;
    for (;;) {
        size_t i = pl->next++;
        if (i >= pl->n) break;
        while (pl->announced <= i)
            usleep(100);
        char plain[64];
        int len = snprintf(plain, sizeof plain, "blob ahead %zu", i);
        struct err e;
        buf_reset(&out);
        if (repo_load_blob(pl->r, BLOB_DATA, &pl->ents[i].id, &out, &e) != 0 ||
            out.len != (size_t)len || memcmp(out.data, plain, out.len) != 0)
            pl->bad++;
        pl->done++;
    }
    buf_free(&out);
    return NULL;
}

static void run_plan(struct repo *r, const struct pack_entry *ents, size_t n, size_t ahead)
{
    enum { PLAN_READERS = 3 };
    struct plan pl = {.r = r, .ents = ents, .n = n, .ahead = ahead};
    pthread_t th[PLAN_READERS];
    for (int t = 0; t < PLAN_READERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, plan_reader, &pl), 0);
    for (size_t i = 0; i < n; i++) {
        while (i >= pl.done + ahead)
            usleep(100);
        repo_prefetch(r, &ents[i].id);
        pl.announced++;
    }
    for (int t = 0; t < PLAN_READERS; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(pl.bad, 0);
}

/* Reads blob "blob other <i>" and checks it; returns 0 when it is right. */
static int read_others_at(struct repo *r, const struct pack_entry *ents, size_t i)
{
    char plain[64];
    int len = snprintf(plain, sizeof plain, "blob other %zu", i);
    struct buf out = BUF_INIT;
    struct err e;
    int bad = repo_load_blob(r, BLOB_DATA, &ents[i].id, &out, &e) != 0 || out.len != (size_t)len ||
              memcmp(out.data, plain, out.len) != 0;
    buf_free(&out);
    return bad;
}

/* Reads blobs "blob other <i>" (i < n) in order, checking them; returns how many were wrong. */
static int read_others(struct repo *r, const struct pack_entry *ents, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += read_others_at(r, ents, i);
    return bad;
}

/* The index of a blob in `ents` that begins in segment `seg` (of `window` bytes) and ends in
 * segment seg + `spans` - 1. */
static size_t blob_in_segments(const struct pack_entry *ents, size_t n, uint64_t window,
                               uint64_t seg, uint64_t spans)
{
    for (size_t i = 0; i < n; i++)
        if (ents[i].offset / window == seg &&
            (ents[i].offset + ents[i].stored_len - 1) / window == seg + spans - 1)
            return i;
    fail_msg("no blob lies in %llu segments from %llu", (unsigned long long)spans,
             (unsigned long long)seg);
    return 0;
}

/* The index of a blob in `ents` that lies wholly in segment `seg`. */
static size_t blob_in_segment(const struct pack_entry *ents, size_t n, uint64_t window,
                              uint64_t seg)
{
    return blob_in_segments(ents, n, window, seg, 1);
}

struct one_read {
    struct repo *r;
    const struct pack_entry *ents;
    size_t i;
    atomic_int state; /* 0: reading, 1: read right, -1: read wrong */
};

static void *read_one_other(void *arg)
{
    struct one_read *o = arg;
    o->state = read_others_at(o->r, o->ents, o->i) == 0 ? 1 : -1;
    return NULL;
}

static void test_prefetch(void **state)
{
    char loc[600];
    struct err e;
    new_location(loc);
    create(loc, "pw");
    struct repo *r = open_ok(loc, "pw");
    enum { N = 3000, N2 = 100 };
    struct oid xid;
    struct pack_entry *ents, *ents2;
    struct idx_file_pack fp[2] = {{.n = N}, {.n = N2}};
    write_pack(r, "ahead", N, &fp[0].pack_id, &ents);
    write_pack(r, "other", N2, &fp[1].pack_id, &ents2);
    fp[0].entries = ents;
    fp[1].entries = ents2;
    write_index(r, fp, 2, NULL, 0, &xid);
    uint64_t area = ents[N - 1].offset + ents[N - 1].stored_len;
    uint64_t area2 = ents2[N2 - 1].offset + ents2[N2 - 1].stored_len;
    watch.ends[0] = area;
    watch.ends[1] = area2;
    repo_close(r);

    /* Without read-ahead (a local directory), announcing does nothing. */
    const size_t window = 4096;
    r = open_ok(loc, "pw");
    assert_int_equal(repo_load_index(r, &e), 0);
    watch_loads(r, window, -1);
    run_plan(r, ents, 200, 50);
    assert_int_equal(watch.loads, 200);
    repo_close(r);

    /* With it: one fetch per segment, several in flight, each blob read in place or from two
     * segments (blobs straddle their ends); none read directly. */
    r = open_ok(loc, "pw");
    assert_int_equal(repo_load_index(r, &e), 0);
    repo_backend(r)->load_slots = 3; /* budget: 5 segments */
    repo_set_read_ahead(r, window);
    watch_loads(r, window, -1);
    run_plan(r, ents, N, 400);
    size_t segments = (size_t)((area + window - 1) / window);
    size_t segments2 = (size_t)((area2 + window - 1) / window);
    assert_true(segments > 20);
    assert_int_equal(watch.direct, 0);
    assert_int_equal(watch.loads, (int)segments);
    assert_true(watch.max_in_flight >= 2);
    assert_true(watch.max_in_flight <= 3);
    repo_prefetch_end(r);

    /* A fetch that fails costs its readers a direct read each (which succeeds here). */
    watch_loads(r, window, (long long)(segments / 2) * (long long)window);
    run_plan(r, ents, N, 400);
    assert_int_equal(watch.failed, 1);
    assert_true(watch.direct >= 1);
    assert_true(watch.loads <= (int)segments + watch.direct + 2);
    repo_prefetch_end(r);

    /* Announcements neither read nor taken back hold their segments and fill the budget; a
     * reader that finds no room does not wait for it but reads directly. */
    watch_loads(r, window, -1);
    for (size_t i = 0; i < N; i += 20)
        repo_prefetch(r, &ents[i].id);
    for (int i = 0; i < 5000 && (watch.loads < 5 || watch.in_flight); i++)
        usleep(1000);
    assert_int_equal(watch.loads, 5);
    assert_int_equal(read_others(r, ents2, N2), 0);
    assert_int_equal(watch.direct, N2);
    assert_int_equal(watch.loads, 5 + N2);
    /* Taken back, they make room again: the others are read through segments. (Last first:
     * the segments still planned go before room is made that a fetcher would fill with them.) */
    for (size_t i = N; i >= 20; i -= 20)
        repo_prefetch_cancel(r, &ents[i - 20].id);
    watch_loads(r, window, -1);
    assert_int_equal(read_others(r, ents2, N2), 0);
    assert_int_equal(watch.direct, 0);
    assert_int_equal(watch.loads, (int)segments2);

    /* Readers waiting for two different segments while the budget is full of announced ones:
     * both read directly. (The fetchers gave up only the first waited-for segment they found,
     * so a reader of a second one, planned after a first that stayed planned, waited for ever.)
     * Slots are taken in order from empty: pack 1's seven, then x, then y. With 4 readers
     * the budget is 3 fetches + 4 segments. */
    repo_prefetch_end(r);
    repo_set_readers(r, 4);
    watch_loads(r, window, -1);
    size_t pinned[7];
    for (uint64_t s = 0; s < 7; s++) {
        pinned[s] = blob_in_segment(ents, N, window, s);
        repo_prefetch(r, &ents[pinned[s]].id);
    }
    for (int i = 0; i < 5000 && (watch.loads < 7 || watch.in_flight); i++)
        usleep(1000);
    assert_int_equal(watch.loads, 7);
    size_t x = blob_in_segment(ents2, N2, window, 0), y = blob_in_segment(ents2, N2, window, 1);
    repo_prefetch(r, &ents2[x].id); /* twice: x stays planned after its first read */
    repo_prefetch(r, &ents2[x].id);
    assert_int_equal(read_others_at(r, ents2, x), 0);
    struct one_read o = {.r = r, .ents = ents2, .i = y};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, read_one_other, &o), 0);
    for (int i = 0; i < 10000 && o.state == 0; i++)
        usleep(1000);
    if (o.state == 0) fail_msg("a reader waits for a segment there is no room for");
    pthread_join(th, NULL);
    assert_int_equal(o.state, 1);
    assert_int_equal(watch.direct, 2);
    repo_prefetch_cancel(r, &ents2[x].id);
    for (size_t s = 0; s < 7; s++)
        repo_prefetch_cancel(r, &ents[pinned[s]].id);

    /* A blob across two segments, the first fetched and the second without room (the first
     * stays wanted, by a read announced twice): the piece in the first is decrypted from it, and
     * only the rest is read directly. */
    repo_prefetch_end(r);
    watch_loads(r, window, -1);
    repo_prefetch(r, &ents2[x].id);
    repo_prefetch(r, &ents2[x].id);
    for (uint64_t s = 0; s < 6; s++)
        repo_prefetch(r, &ents[pinned[s]].id);
    for (int i = 0; i < 5000 && (watch.loads < 7 || watch.in_flight); i++)
        usleep(1000);
    assert_int_equal(watch.loads, 7);
    size_t z = blob_in_segments(ents2, N2, window, 0, 2);
    assert_int_equal(read_others_at(r, ents2, z), 0);
    assert_int_equal(watch.direct, 1);
    assert_int_equal(watch.direct_offset, window);
    assert_int_equal(watch.loads, 8);
    repo_prefetch_cancel(r, &ents2[x].id);
    for (size_t s = 0; s < 6; s++)
        repo_prefetch_cancel(r, &ents[pinned[s]].id);
    repo_close(r);
    free(ents);
    free(ents2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_open),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_missing_repo),
        cmocka_unit_test(test_create_twice),
        cmocka_unit_test(test_create_bad_config),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_broken_key_file_skipped),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_tampered_config),
        cmocka_unit_test(test_index_and_blobs),
        cmocka_unit_test(test_index_supersedes),
        cmocka_unit_test(test_index_damaged),
        cmocka_unit_test(test_vanished_while_listed),
        cmocka_unit_test(test_cache_files),
        cmocka_unit_test(test_cache_tree_packs),
        cmocka_unit_test(test_read_ahead),
        cmocka_unit_test(test_prefetch),
    };
    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
