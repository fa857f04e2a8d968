/* maint_fixture.h - what the maintenance tests (test_prune.c, test_check.c, test_lock.c) share:
 * temporary repositories with small packs, snapshots of generated blobs written through
 * store/tree/snapshot, and their verification. The scratch directory (fixture_setup and
 * fixture_teardown as the group's set-up) is fixture.h's. Header-only, included by one test file
 * each. */
#ifndef PV_TESTS_MAINT_FIXTURE_H
#define PV_TESTS_MAINT_FIXTURE_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/prng.h"
#include "repo/index.h"
#include "repo/lock.h"
#include "repo/repo.h"
#include "repo/snapshot.h"
#include "repo/store.h"
#include "repo/tree.h"
#include "fixture.h"

#define FX_PACK_SIZE (1u * 1024 * 1024)
/* Blobs of ~100 KiB: about ten to a pack. */
#define FX_BLOB_LEN(num) (96u * 1024 + (unsigned)(num) % 7 * 1024)

static int64_t fx_clock = 1700000000;

/* Creates a repository whose packs hold pack_size bytes, and returns its location in loc. */
static __attribute__((unused)) void fx_create_sized(char loc[FIXTURE_LOC_MAX], uint32_t pack_size)
{
    struct err e;
    fixture_location(loc);
    if (fixture_create(loc, "pw", pack_size, 1, &e) != 0) {
        fprintf(stderr, "repo_create: %s\n", e.msg);
        abort();
    }
}

/* Creates a repository with FX_PACK_SIZE packs. */
static __attribute__((unused)) void fx_create(char loc[600])
{
    fx_create_sized(loc, FX_PACK_SIZE);
}

/* Opens a repository as a writer would: lock, marks, index. *lk may be NULL to skip the lock. */
static __attribute__((unused)) struct repo *fx_open(const char *loc, struct lock **lk)
{
    struct repo *r;
    struct err e;
    if (repo_open(loc, "pw", NULL, &r, &e) != 0) {
        fprintf(stderr, "repo_open: %s\n", e.msg);
        abort();
    }
    if (lk && lock_writer_begin(r, NULL, lk, &e) != 0) {
        fprintf(stderr, "lock_writer_begin: %s\n", e.msg);
        abort();
    }
    if (lock_load_index(r, NULL, &e) != 0) {
        fprintf(stderr, "lock_load_index: %s\n", e.msg);
        abort();
    }
    return r;
}

/* The content of blob number `num`: incompressible, the same every time. */
static uint8_t *fx_content(int num, size_t *len)
{
    *len = FX_BLOB_LEN(num);
    uint8_t *d = malloc(*len);
    uint64_t s = (uint64_t)num * 7919 + 1;
    for (size_t i = 0; i < *len; i += 8) {
        uint64_t v = prng_next(&s);
        memcpy(d + i, &v, *len - i < 8 ? *len - i : 8);
    }
    return d;
}

static __attribute__((unused)) struct oid fx_blob_id(struct repo *r, int num)
{
    size_t len;
    uint8_t *d = fx_content(num, &len);
    struct oid id;
    crypt_blob_id(repo_keys(r), d, len, &id, NULL);
    free(d);
    return id;
}

/* Stores a root tree with one file "f<num>" per number, and what the index lacks, through a
 * store of its own (so each call writes packs, and an index file, of its own). */
static __attribute__((unused)) struct oid fx_store(struct repo *r, const int *nums, size_t n)
{
    struct err e;
    struct store *s;
    if (store_new(r, &s, &e) != 0) abort();
    struct tree t = TREE_INIT;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *d = fx_content(nums[i], &len);
        struct oid id;
        crypt_blob_id(repo_keys(r), d, len, &id, NULL);
        if (store_add(s, BLOB_DATA, &id, d, len, NULL, &e) != 0) {
            fprintf(stderr, "store_add: %s\n", e.msg);
            abort();
        }
        free(d);
        struct tree_node nd;
        memset(&nd, 0, sizeof nd);
        char name[32];
        snprintf(name, sizeof name, "f%d", nums[i]);
        nd.name = (uint8_t *)strdup(name);
        nd.name_len = strlen(name);
        nd.type = TREE_FILE;
        nd.mode = 0644;
        nd.size = len;
        nd.content = calloc(1, sizeof *nd.content);
        nd.content[0].len = len;
        nd.content[0].id = id;
        nd.n_content = 1;
        if (tree_add(&t, &nd, &e) != 0) abort();
    }
    tree_sort(&t);
    struct buf b = BUF_INIT;
    struct snapshot sn;
    memset(&sn, 0, sizeof sn);
    if (tree_encode(&t, &b, &e) != 0) abort();
    crypt_blob_id(repo_keys(r), b.data, b.len, &sn.tree, NULL);
    if (store_add(s, BLOB_TREE, &sn.tree, b.data, b.len, NULL, &e) != 0) abort();
    if (store_flush(s, &e) != 0) {
        fprintf(stderr, "store_flush: %s\n", e.msg);
        abort();
    }
    store_free(s);
    buf_free(&b);
    tree_free(&t);
    return sn.tree;
}

/* Saves a snapshot of a tree fx_store stored. */
static __attribute__((unused)) struct oid fx_save(struct repo *r, const struct oid *tree,
                                                  const char *tag)
{
    struct err e;
    struct snapshot sn;
    memset(&sn, 0, sizeof sn);
    sn.tree = *tree;
    sn.time_sec = fx_clock++;
    sn.hostname = strdup("h");
    sn.username = strdup("u");
    sn.paths = calloc(1, sizeof *sn.paths);
    sn.paths[0] = strdup("/data");
    sn.n_paths = 1;
    if (tag) {
        sn.tags = calloc(1, sizeof *sn.tags);
        sn.tags[0] = strdup(tag);
        sn.n_tags = 1;
    }
    if (snap_save(r, &sn, &e) != 0) {
        fprintf(stderr, "snap_save: %s\n", e.msg);
        abort();
    }
    struct oid id = sn.id;
    snap_free(&sn);
    return id;
}

/* fx_store, then fx_save. */
static __attribute__((unused)) struct oid fx_backup(struct repo *r, const int *nums, size_t n,
                                                    const char *tag)
{
    struct oid tree = fx_store(r, nums, n);
    return fx_save(r, &tree, tag);
}

static __attribute__((unused)) void fx_forget(struct repo *r, const struct oid *id)
{
    char name[96], hex[OID_HEX_LEN + 1];
    struct err e;
    snprintf(name, sizeof name, "snapshots/%s", oid_hex(id, hex));
    if (backend_remove(repo_backend(r), name, &e) != 0) abort();
}

/* Whether every file of the snapshot reads back as generated, on a freshly opened repository
 * (its own index load). Returns the number of files that do not. */
static __attribute__((unused)) int fx_verify(const char *loc, const struct oid *snap_id)
{
    struct repo *r;
    struct err e;
    if (repo_open(loc, "pw", NULL, &r, &e) != 0 || repo_load_index(r, &e) != 0) {
        fprintf(stderr, "fx_verify: %s\n", e.msg);
        return -1;
    }
    int bad = 0;
    struct snapshot sn;
    struct buf b = BUF_INIT;
    struct tree t = TREE_INIT;
    if (snap_load(r, snap_id, &sn, &e) != 0 ||
        repo_load_blob(r, BLOB_TREE, &sn.tree, &b, &e) != 0 ||
        tree_decode(b.data, b.len, &t, &e) != 0) {
        fprintf(stderr, "fx_verify: %s\n", e.msg);
        repo_close(r);
        return -1;
    }
    for (size_t i = 0; i < t.n; i++) {
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)t.nodes[i].name_len,
                 (const char *)t.nodes[i].name);
        int num = atoi(name + 1);
        size_t len;
        uint8_t *want = fx_content(num, &len);
        buf_reset(&b);
        if (repo_load_blob(r, BLOB_DATA, &t.nodes[i].content[0].id, &b, &e) != 0 || b.len != len ||
            memcmp(b.data, want, len) != 0) {
            fprintf(stderr, "fx_verify: file f%d: %s\n", num, e.msg);
            bad++;
        }
        free(want);
    }
    tree_free(&t);
    buf_free(&b);
    snap_free(&sn);
    repo_close(r);
    return bad;
}

/* Counts the files below <loc>/<dir> (recursively). */
static __attribute__((unused)) int fx_count(const char *loc, const char *dir)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "find '%s/%s' -type f 2>/dev/null | wc -l", loc, dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        pclose(f);
    }
    return n;
}

/* Whether <loc>/data holds the pack. */
static __attribute__((unused)) bool fx_pack_exists(const char *loc, const struct oid *pack)
{
    char name[80], path[800];
    pack_object_name(pack, name);
    snprintf(path, sizeof path, "%s/%s", loc, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* The pack the index of r places a blob in. */
static __attribute__((unused)) struct oid fx_pack_of(struct repo *r, const struct oid *blob)
{
    struct idx_loc loc;
    struct oid none;
    memset(&none, 0, sizeof none);
    if (!idx_lookup(repo_index(r), blob, &loc)) return none;
    return *idx_pack_id(repo_index(r), loc.pack);
}

#endif
