/* test_repo.c - unit tests of repository create/open, keys, files, index load and blob reads
 * (repo/repo.c), on a local directory. */
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

#include "repo/pack.h"
#include "repo/repo.h"

static char base[512];
static int counter;

static int setup(void **state)
{
    setenv("PODVAULT_KDF_TEST", "1", 1);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(base, sizeof base, "%s/pv-repo-XXXXXX", tmp);
    return mkdtemp(base) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

/* A fresh repository location (not created yet). */
static void new_location(char out[600])
{
    snprintf(out, 600, "%s/r%d", base, counter++);
}

static void create(const char *loc, const char *pw)
{
    struct repo_create_params p;
    struct err e;
    config_default(&p.config);
    p.config.pack_size = 2u * 1024 * 1024;
    p.config.zstd_level = 5;
    keyfile_params_default(&p.kdf);
    assert_int_equal(repo_create(loc, pw, &p, &e), 0);
}

static struct repo *open_ok(const char *loc, const char *pw)
{
    struct repo *r;
    struct err e;
    int rc = repo_open(loc, pw, &r, &e);
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
    assert_int_equal(repo_open(loc, "wrong", &r, &e), ERR_AUTH);
    assert_null(r);
    assert_non_null(strstr(e.msg, "password"));
    assert_int_equal(repo_open(loc, "", &r, &e), ERR_AUTH);
}

static void test_missing_repo(void **state)
{
    char loc[600];
    struct repo *r;
    struct err e;
    new_location(loc);
    assert_int_equal(repo_open(loc, "pw", &r, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no repository at"));
    assert_non_null(strstr(e.msg, loc));
    /* An existing directory that is not a repository. */
    assert_int_equal(mkdir(loc, 0700), 0);
    assert_int_equal(repo_open(loc, "pw", &r, &e), ERR_NOT_FOUND);
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
    keyfile_params_default(&p.kdf);
    assert_int_equal(repo_create(loc, "two", &p, &e), ERR_EXISTS);
    assert_non_null(strstr(e.msg, "already exists"));
    struct repo *r = open_ok(loc, "one");
    assert_int_equal(count_ids(r, "keys"), 1); /* no stray key file */
    repo_close(r);
    assert_int_equal(repo_open(loc, "two", &r, &e), ERR_AUTH);
}

static void test_create_bad_config(void **state)
{
    char loc[600];
    new_location(loc);
    struct repo_create_params p;
    struct err e;
    config_default(&p.config);
    p.config.pack_size = 10; /* below the minimum */
    keyfile_params_default(&p.kdf);
    assert_int_equal(repo_create(loc, "pw", &p, &e), ERR_FAIL);
    struct repo *r;
    assert_int_equal(repo_open(loc, "pw", &r, &e), ERR_NOT_FOUND);
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
    keyfile_params_default(&kp);
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

    assert_int_equal(repo_open(loc, "first", &r, &e), ERR_AUTH);
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
    assert_int_equal(repo_open(loc, "nope", &r, &e), ERR_AUTH);
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
    assert_int_equal(repo_open(loc, "pw", &bad, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "config"));
    /* Another repository's config, sealed with another key, is refused too. */
    assert_int_equal(
        backend_save(repo_backend(r), "config", cfg_other.data, cfg_other.len, true, &e), 0);
    assert_int_equal(repo_open(loc, "pw", &bad, &e), ERR_FAIL);
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
    struct buf sealed = BUF_INIT, pack = BUF_INIT;
    assert_int_equal(pack_writer_new(&w, &e), 0);
    for (size_t i = 0; i < n; i++) {
        char plain[64];
        int len = snprintf(plain, sizeof plain, "blob %s %zu", tag, i);
        struct oid id;
        crypt_blob_id(repo_keys(r), plain, (size_t)len, &id);
        buf_reset(&sealed);
        assert_int_equal(
            crypt_blob_seal(repo_keys(r), BLOB_DATA, &id, plain, (size_t)len, 3, &sealed, &e), 0);
        assert_int_equal(
            pack_writer_add(w, BLOB_DATA, &id, sealed.data, sealed.len, (uint32_t)len, &e), 0);
    }
    assert_int_equal(pack_writer_finish(w, repo_keys(r), pack_id, &pack, &e), 0);
    char name[80];
    pack_object_name(pack_id, name);
    assert_int_equal(backend_save(repo_backend(r), name, pack.data, pack.len, false, &e), 0);
    size_t wn;
    const struct pack_entry *we = pack_writer_entries(w, &wn);
    *ents = malloc(wn * sizeof **ents);
    memcpy(*ents, we, wn * sizeof **ents);
    pack_writer_free(w);
    buf_free(&sealed);
    buf_free(&pack);
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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
