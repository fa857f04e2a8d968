/* synthrepo.c - writes a synthetic repository of millions of small blobs, for measuring prune
 * and check at sizes no quick backup reaches (bench/maintbig.sh).
 *
 * Usage: synthrepo LOCATION BLOBS [SNAPSHOTS [PACK_MIB [BLOBS_PER_FILE]]]
 *   (defaults: 3 snapshots, 4 MiB packs, 4 blobs a file; password from PODVAULT_PASSWORD, else
 *   "bench"; BENCH_KDF_MIN=1 makes the key cheap to derive, as the tests do: a bench tool's
 *   own switch, which the podvault program does not know).
 *
 * It writes through the repository's own write path, as the archiver does (crypt_blob_id,
 * store_add, tree_encode, snap_save): BLOBS unique data blobs of 64..263 random bytes, in files
 * of BLOBS_PER_FILE blobs, 1000 files a directory, under one root. The first snapshot holds them
 * all. The others (the same newer tree, an hour apart) drop the files of the second tenth of the
 * blobs (whole packs fall unused), every other file of the fourth tenth (packs half used, for
 * repacking), and add a twentieth of new blobs; unchanged directories share their trees. After
 * `forget --keep-last SNAPSHOTS-1`, prune deletes and repacks. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/prng.h"
#include "repo/crypt.h"
#include "repo/repo.h"
#include "repo/snapshot.h"
#include "repo/store.h"
#include "repo/tree.h"

#define FILES_PER_DIR 1000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct synth {
    struct repo *r;
    struct store *s;
    struct oid *ids; /* every data blob, in the order written */
    uint32_t *lens;
    size_t n_ids;
    size_t per_file;
    uint64_t trees;
};

/* Stores blob `i` (its bytes follow from i alone) and records its ID. */
static int add_blob(struct synth *y, uint64_t i, struct err *e)
{
    uint8_t data[264];
    uint64_t st = i * 0x2545f4914f6cdd1dull + 1;
    size_t len = 64 + prng_next(&st) % 200;
    for (size_t k = 0; k < len; k += 8) {
        uint64_t v = prng_next(&st);
        memcpy(data + k, &v, len - k < 8 ? len - k : 8);
    }
    int rc = crypt_blob_id(repo_keys(y->r), data, len, &y->ids[y->n_ids], e);
    if (rc == 0) rc = store_add(y->s, BLOB_DATA, &y->ids[y->n_ids], data, len, NULL, e);
    if (rc == 0) y->lens[y->n_ids++] = (uint32_t)len;
    return rc;
}

static char *dup_name(const char *fmt, uint64_t v, size_t *len)
{
    char b[32];
    int n = snprintf(b, sizeof b, fmt, v);
    *len = (size_t)n;
    return strdup(b);
}

/* Stores tree `t` (sorted here, then freed) and gives its ID. */
static int store_tree(struct synth *y, struct tree *t, struct oid *id, struct err *e)
{
    struct buf b = BUF_INIT;
    tree_sort(t);
    int rc = tree_encode(t, &b, e);
    bool added = false;
    if (rc == 0) rc = crypt_blob_id(repo_keys(y->r), b.data, b.len, id, e);
    if (rc == 0) rc = store_add(y->s, BLOB_TREE, id, b.data, b.len, &added, e);
    if (added) y->trees++;
    buf_free(&b);
    tree_free(t);
    return rc;
}

/* Whether the newer snapshots keep file `f` (of n_files in the first set). */
static bool kept(size_t f, size_t n_files)
{
    size_t tenth = n_files / 10;
    if (f >= tenth && f < 2 * tenth) return false;
    if (f >= 3 * tenth && f < 4 * tenth && (f & 1)) return false;
    return true;
}

/* The root tree of files [0, n_files) that `keep` accepts (NULL: all), plus files [n_files,
 * n_all) (new ones). */
static int write_set(struct synth *y, size_t n_files, size_t n_all,
                     bool (*keep)(size_t f, size_t n), struct oid *root, struct err *e)
{
    struct tree rt = TREE_INIT, dt = TREE_INIT;
    int rc = 0;
    size_t n_dirs = (n_all + FILES_PER_DIR - 1) / FILES_PER_DIR;
    for (size_t d = 0; d < n_dirs && rc == 0; d++) {
        for (size_t f = d * FILES_PER_DIR; f < (d + 1) * FILES_PER_DIR && f < n_all && rc == 0;
             f++) {
            if (keep && f < n_files && !keep(f, n_files)) continue;
            struct tree_node nd = {.type = TREE_FILE, .mode = 0644, .nlink = 1, .inode = f + 1};
            nd.name = (uint8_t *)dup_name("f%07" PRIu64, f, &nd.name_len);
            nd.content = calloc(y->per_file, sizeof *nd.content);
            if (!nd.name || !nd.content) {
                tree_node_free(&nd);
                rc = err_set(e, ERR_FAIL, "out of memory");
                break;
            }
            nd.n_content = y->per_file;
            for (size_t k = 0; k < y->per_file; k++) {
                size_t b = f * y->per_file + k;
                nd.content[k].id = y->ids[b];
                nd.content[k].len = y->lens[b];
                nd.size += y->lens[b];
            }
            nd.mtime_sec = 1700000000;
            rc = tree_add(&dt, &nd, e);
            if (rc < 0) tree_node_free(&nd);
        }
        struct tree_node dn = {.type = TREE_DIR, .mode = 0755, .nlink = 2};
        if (rc == 0) rc = store_tree(y, &dt, &dn.subtree, e);
        if (rc < 0) break;
        dn.name = (uint8_t *)dup_name("d%05" PRIu64, d, &dn.name_len);
        if (!dn.name) rc = err_set(e, ERR_FAIL, "out of memory");
        if (rc == 0) rc = tree_add(&rt, &dn, e);
        if (rc < 0) tree_node_free(&dn);
    }
    tree_free(&dt);
    if (rc == 0) return store_tree(y, &rt, root, e);
    tree_free(&rt);
    return rc;
}

static int save_snapshot(struct repo *r, const struct oid *root, int64_t t, struct oid *id,
                         struct err *e)
{
    char *paths[1] = {"/data"};
    struct snapshot s = {.time_sec = t,
                         .tree = *root,
                         .hostname = "synth",
                         .username = "bench",
                         .paths = paths,
                         .n_paths = 1};
    int rc = snap_save(r, &s, e);
    *id = s.id;
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr,
                "usage: synthrepo LOCATION BLOBS [SNAPSHOTS [PACK_MIB [BLOBS_PER_FILE]]]\n");
        return 2;
    }
    const char *loc = argv[1];
    uint64_t n_blobs = strtoull(argv[2], NULL, 10);
    unsigned snaps = argc > 3 ? (unsigned)atoi(argv[3]) : 3;
    unsigned pack_mib = argc > 4 ? (unsigned)atoi(argv[4]) : 4;
    size_t per_file = argc > 5 ? (size_t)atoi(argv[5]) : 4;
    const char *pw = getenv("PODVAULT_PASSWORD") ? getenv("PODVAULT_PASSWORD") : "bench";
    if (n_blobs < 100 || snaps < 2 || pack_mib < 1 || per_file < 1) {
        fprintf(stderr, "synthrepo: at least 100 blobs, 2 snapshots, 1 MiB packs, 1 blob a file\n");
        return 2;
    }
    struct err e;
    err_clear(&e);
    if (crypt_init(&e) < 0) {
        fprintf(stderr, "synthrepo: %s\n", e.msg);
        return 1;
    }
    struct repo_create_params cp;
    memset(&cp, 0, sizeof cp);
    config_default(&cp.config);
    cp.config.pack_size = pack_mib << 20;
    const char *kdf_min = getenv("BENCH_KDF_MIN");
    if (kdf_min && strcmp(kdf_min, "1") == 0)
        keyfile_params_min(&cp.kdf);
    else
        keyfile_params_default(&cp.kdf);
    double t0 = now();
    size_t n_files = (size_t)(n_blobs / per_file), n_new = n_files / 20;
    struct synth y = {.per_file = per_file};
    y.ids = malloc((n_files + n_new) * per_file * sizeof *y.ids);
    y.lens = malloc((n_files + n_new) * per_file * sizeof *y.lens);
    int rc = y.ids && y.lens ? 0 : err_set(&e, ERR_FAIL, "out of memory");
    if (rc == 0) rc = repo_create(loc, pw, &cp, NULL, &e);
    if (rc == 0) rc = repo_open(loc, pw, NULL, &y.r, &e);
    if (rc == 0) rc = repo_load_index(y.r, &e);
    if (rc == 0) rc = store_new(y.r, &y.s, &e);
    /* The first set's blobs, then the new ones, each in the order written: packs fill up in
     * that order, so a tenth of the files is a tenth of the packs. */
    for (uint64_t i = 0; i < (uint64_t)(n_files + n_new) * per_file && rc == 0; i++)
        rc = add_blob(&y, i, &e);
    struct oid old_root, new_root, sid;
    if (rc == 0) rc = write_set(&y, n_files, n_files, NULL, &old_root, &e);
    if (rc == 0) rc = write_set(&y, n_files, n_files + n_new, kept, &new_root, &e);
    if (rc == 0) rc = store_flush(y.s, &e);
    struct store_stats ss = {0};
    if (y.s) store_stats(y.s, &ss);
    int64_t when = 1700000000;
    if (rc == 0) rc = save_snapshot(y.r, &old_root, when, &sid, &e);
    for (unsigned k = 1; k < snaps && rc == 0; k++)
        rc = save_snapshot(y.r, &new_root, when + 3600 * (int64_t)k, &sid, &e);
    store_free(y.s);
    repo_close(y.r);
    free(y.ids);
    free(y.lens);
    if (rc < 0) {
        fprintf(stderr, "synthrepo: %s\n", e.msg);
        return 1;
    }
    printf("synthrepo: %s: %" PRIu64 " blobs (%zu data, %" PRIu64 " trees) in %" PRIu64
           " packs, %" PRIu64 " stored bytes, %zu files a snapshot, %u snapshots, %.1f s\n",
           loc, ss.blobs_new, (n_files + n_new) * per_file, y.trees, ss.packs, ss.bytes_stored,
           n_files, snaps, now() - t0);
    return 0;
}
