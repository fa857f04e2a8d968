/* test_store.c - unit tests of the blob write path (repo/store.c): concurrent deduplication,
 * separate tree and data packs, pack sizes, index files, reload, and failure handling. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/prng.h"
#include "repo/crypt.h"
#include "repo/pack.h"
#include "repo/repo.h"
#include "repo/store.h"

#include "fixture.h"

#define PACK_SIZE (1u * 1024 * 1024)

static struct repo *new_repo(char loc[FIXTURE_LOC_MAX])
{
    struct err e;
    fixture_location(loc);
    assert_int_equal(fixture_create(loc, "pw", PACK_SIZE, 3, &e), 0);
    struct repo *r;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    assert_int_equal(repo_load_index(r, &e), 0);
    return r;
}

struct blob {
    enum blob_type type;
    uint8_t *data;
    size_t len;
    struct oid id;
};

/* `n_data` incompressible data blobs of 2..14 KiB, then `n_tree` compressible tree blobs. */
static struct blob *make_blobs(struct repo *r, size_t n_data, size_t n_tree, size_t data_max,
                               uint64_t seed)
{
    struct blob *b = calloc(n_data + n_tree, sizeof *b);
    for (size_t i = 0; i < n_data + n_tree; i++) {
        bool tree = i >= n_data;
        b[i].type = tree ? BLOB_TREE : BLOB_DATA;
        b[i].len = tree ? 200 + prng_next(&seed) % 2000 : 2048 + prng_next(&seed) % data_max;
        b[i].data = malloc(b[i].len);
        for (size_t j = 0; j < b[i].len; j++)
            b[i].data[j] = tree ? (uint8_t)("tree entry "[j % 11] + (j / 64 == i % 7))
                                : (uint8_t)prng_next(&seed);
        snprintf((char *)b[i].data, b[i].len, "%zu", i); /* all distinct */
        crypt_blob_id(repo_keys(r), b[i].data, b[i].len, &b[i].id, NULL);
    }
    return b;
}

static void free_blobs(struct blob *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(b[i].data);
    free(b);
}

struct adder {
    struct store *s;
    struct blob *blobs;
    size_t n;
    uint64_t seed;
    size_t added;
    int rc;
};

/* Adds every blob, in an order of its own, each one twice. */
static void *adder_main(void *arg)
{
    struct adder *a = arg;
    size_t *order = malloc(a->n * sizeof *order);
    for (size_t i = 0; i < a->n; i++)
        order[i] = i;
    for (size_t i = a->n - 1; i > 0; i--) {
        size_t j = prng_next(&a->seed) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t k = 0; k < 2 * a->n && a->rc == 0; k++) {
        struct blob *b = &a->blobs[order[k % a->n]];
        bool added;
        struct err e;
        a->rc = store_add(a->s, b->type, &b->id, b->data, b->len, &added, &e);
        a->added += added;
    }
    free(order);
    return NULL;
}

struct pack_census {
    struct repo *r;
    struct blob *blobs;
    size_t n;
    unsigned *seen; /* per blob: how many pack entries name it */
    size_t packs[2], small[2];
    uint64_t max_stored;
};

static int census_pack(struct pack_census *c, const struct oid *pack_id)
{
    struct pack_entry *ents;
    size_t n;
    struct err e;
    int rc = pack_read_header(repo_backend(c->r), repo_keys(c->r), pack_id, &ents, &n, &e);
    if (rc) fail_msg("%s", e.msg);
    assert_true(n > 0);
    uint64_t area = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ents[i].type, ents[0].type); /* one type per pack */
        area += ents[i].stored_len;
        size_t k;
        for (k = 0; k < c->n && !oid_eq(&c->blobs[k].id, &ents[i].id); k++)
            ;
        assert_true(k < c->n);
        assert_int_equal(c->blobs[k].type, ents[i].type);
        c->seen[k]++;
    }
    /* A pack is cut when it reaches the pack size: it never exceeds it by more than its last
     * blob, and only the last pack of each type (written at flush) may be below it. */
    assert_true(area - ents[n - 1].stored_len < PACK_SIZE);
    if (area < PACK_SIZE) c->small[ents[0].type]++;
    c->packs[ents[0].type]++;
    free(ents);
    return 0;
}

static void check_packs(struct repo *r, struct blob *blobs, size_t n, size_t want_data_packs_min)
{
    struct pack_census c = {.r = r, .blobs = blobs, .n = n};
    c.seen = calloc(n, sizeof *c.seen);
    struct oid *ids;
    size_t n_packs;
    struct err e;
    assert_int_equal(repo_list_ids(r, "data", &ids, &n_packs, &e), 0);
    for (size_t i = 0; i < n_packs; i++)
        census_pack(&c, &ids[i]);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(c.seen[i], 1); /* every blob stored exactly once */
    assert_true(c.packs[BLOB_DATA] >= want_data_packs_min);
    assert_true(c.packs[BLOB_TREE] >= 1);
    assert_true(c.small[BLOB_DATA] <= 1);
    assert_true(c.small[BLOB_TREE] <= 1);
    free(ids);
    free(c.seen);
}

/* Loads blobs [from, to) back; runs in threads, so it records failures instead of asserting. */
struct loader {
    struct repo *r;
    struct blob *blobs;
    size_t from, to;
    size_t bad; /* blobs that did not come back bit for bit */
    struct err e;
};

static void *loader_main(void *arg)
{
    struct loader *l = arg;
    struct buf out = BUF_INIT;
    for (size_t i = l->from; i < l->to; i++) {
        buf_reset(&out);
        struct blob *b = &l->blobs[i];
        if (repo_load_blob(l->r, b->type, &b->id, &out, &l->e) != 0 || out.len != b->len ||
            memcmp(out.data, b->data, b->len) != 0)
            l->bad++;
    }
    buf_free(&out);
    return NULL;
}

/* Reads blobs while the store writes: each read either finds nothing yet or the right bytes. */
struct racer {
    struct repo *r;
    struct blob *blobs;
    size_t n;
    volatile int *done;
    size_t found, bad;
};

static void *racer_main(void *arg)
{
    struct racer *c = arg;
    struct buf out = BUF_INIT;
    uint64_t seed = 77;
    for (int round = 0; round < 200000 && !__atomic_load_n(c->done, __ATOMIC_ACQUIRE); round++) {
        struct blob *b = &c->blobs[prng_next(&seed) % c->n];
        struct err e;
        buf_reset(&out);
        int rc = repo_load_blob(c->r, b->type, &b->id, &out, &e);
        if (rc == 0 && out.len == b->len && memcmp(out.data, b->data, b->len) == 0)
            c->found++;
        else if (rc != ERR_NOT_FOUND)
            c->bad++;
    }
    buf_free(&out);
    return NULL;
}

static void test_concurrent_adds(void **state)
{
    enum { N_DATA = 700, N_TREE = 400, N = N_DATA + N_TREE, THREADS = 4 };
    char loc[600];
    struct err e;
    struct repo *r = new_repo(loc);
    struct blob *blobs = make_blobs(r, N_DATA, N_TREE, 12 * 1024, 1);
    struct store *s;
    assert_int_equal(store_new(r, &s, &e), 0);

    pthread_t th[THREADS], racer;
    struct adder ad[THREADS];
    int done = 0;
    struct racer rc_ = {.r = r, .blobs = blobs, .n = N, .done = &done};
    assert_int_equal(pthread_create(&racer, NULL, racer_main, &rc_), 0);
    for (int t = 0; t < THREADS; t++) {
        ad[t] = (struct adder){.s = s, .blobs = blobs, .n = N, .seed = 100 + (uint64_t)t};
        assert_int_equal(pthread_create(&th[t], NULL, adder_main, &ad[t]), 0);
    }
    size_t added = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(ad[t].rc, 0);
        added += ad[t].added;
    }
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    pthread_join(racer, NULL);
    assert_int_equal(rc_.bad, 0);
    print_message("racing reader: %zu blobs read while the store wrote\n", rc_.found);
    assert_int_equal(added, N); /* each blob accepted by exactly one call */
    for (size_t i = 0; i < N; i++)
        assert_true(store_has(s, &blobs[i].id));
    assert_int_equal(store_flush(s, &e), 0);

    struct store_stats st;
    store_stats(s, &st);
    assert_int_equal(st.blobs_new, N);
    uint64_t plain = 0;
    for (size_t i = 0; i < N; i++)
        plain += blobs[i].len;
    assert_int_equal(st.bytes_new, plain);
    assert_true(st.bytes_stored > 0);
    struct oid *ids;
    size_t n_packs;
    assert_int_equal(repo_list_ids(r, "data", &ids, &n_packs, &e), 0);
    free(ids);
    assert_int_equal(st.packs, n_packs);
    store_free(s);

    check_packs(r, blobs, N, 5);
    repo_close(r);

    /* A fresh open finds everything through the index files, and reads it back in parallel. */
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    assert_int_equal(repo_load_index(r, &e), 0);
    assert_int_equal(idx_blob_count(repo_index(r)), N);
    struct loader ld[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ld[t] = (struct loader){.r = r,
                                .blobs = blobs,
                                .from = (size_t)t * N / THREADS,
                                .to = (size_t)(t + 1) * N / THREADS};
        assert_int_equal(pthread_create(&th[t], NULL, loader_main, &ld[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        if (ld[t].bad) fail_msg("%zu blobs differ; last error: %s", ld[t].bad, ld[t].e.msg);
    }

    /* A second store over the same repository stores nothing again. */
    assert_int_equal(store_new(r, &s, &e), 0);
    for (size_t i = 0; i < N; i++) {
        bool was_added = true;
        assert_int_equal(
            store_add(s, blobs[i].type, &blobs[i].id, blobs[i].data, blobs[i].len, &was_added, &e),
            0);
        assert_false(was_added);
    }
    size_t n_index_before;
    assert_int_equal(repo_list_ids(r, "index", &ids, &n_index_before, &e), 0);
    free(ids);
    assert_int_equal(store_flush(s, &e), 0);
    store_stats(s, &st);
    assert_int_equal(st.blobs_new, 0);
    assert_int_equal(st.packs, 0);
    size_t n_index_after;
    assert_int_equal(repo_list_ids(r, "index", &ids, &n_index_after, &e), 0);
    free(ids);
    assert_int_equal(n_index_after, n_index_before); /* nothing new, no index file */
    store_free(s);
    repo_close(r);
    free_blobs(blobs, N);
}

static void test_index_written_during_backup(void **state)
{
    /* Enough data for more than 16 packs: an index file appears before any flush, once the
     * uploaders (which run behind the adds) are through the first 16. */
    enum { N = 600 };
    char loc[600];
    struct err e;
    struct repo *r = new_repo(loc);
    struct blob *blobs = make_blobs(r, N, 0, 64 * 1024, 2);
    struct store *s;
    assert_int_equal(store_new(r, &s, &e), 0);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(
            store_add(s, blobs[i].type, &blobs[i].id, blobs[i].data, blobs[i].len, NULL, &e), 0);
    struct oid *ids;
    size_t n_index = 0, n_packs;
    for (int tries = 0; tries < 2000 && n_index == 0; tries++) { /* at most ~20 s */
        assert_int_equal(repo_list_ids(r, "index", &ids, &n_index, &e), 0);
        free(ids);
        if (!n_index) usleep(10 * 1000);
    }
    assert_int_equal(n_index, 1);
    assert_int_equal(repo_list_ids(r, "data", &ids, &n_packs, &e), 0);
    free(ids);
    assert_true(n_packs >= 16);
    /* The blobs of uploaded packs are in the repository's index already. */
    assert_true(idx_blob_count(repo_index(r)) > 0);
    assert_int_equal(store_flush(s, &e), 0);
    assert_int_equal(store_flush(s, &e), 0); /* nothing left: no-op */
    assert_int_equal(repo_list_ids(r, "index", &ids, &n_index, &e), 0);
    free(ids);
    assert_int_equal(n_index, 2);
    assert_int_equal(idx_blob_count(repo_index(r)), N);
    store_free(s);
    repo_close(r);

    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    assert_int_equal(repo_load_index(r, &e), 0);
    assert_int_equal(idx_blob_count(repo_index(r)), N);
    struct loader ld = {.r = r, .blobs = blobs, .from = 0, .to = N};
    loader_main(&ld);
    assert_int_equal(ld.bad, 0);
    repo_close(r);
    free_blobs(blobs, N);
}

/* When the uploaded packs are listed in an index file: 16 packs, 65,536 blobs or 10 s after
 * the oldest was uploaded, whichever comes first; never with nothing to list. */
static void test_index_due(void **state)
{
    assert_false(store_index_due(0, 0, 1000000));
    assert_false(store_index_due(15, 65535, 9999));
    assert_true(store_index_due(16, 1, 0));
    assert_true(store_index_due(1, 65536, 0));
    assert_true(store_index_due(1, 1, 10000));
    assert_false(store_index_due(1, 1, 9999));
}

static void test_index_file_blob_cap(void **state)
{
    /* 100,000 tiny blobs fill far fewer than 16 packs, yet an index file is due once 65,536
     * blobs wait, so readers never hold a file of hundreds of thousands of blobs. */
    enum { N = 100000 };
    char loc[600];
    struct err e;
    struct repo *r = new_repo(loc);
    struct store *s;
    assert_int_equal(store_new(r, &s, &e), 0);
    for (uint32_t i = 0; i < N; i++) {
        uint8_t data[16] = {0};
        memcpy(data, &i, sizeof i);
        struct oid id;
        assert_int_equal(crypt_blob_id(repo_keys(r), data, sizeof data, &id, &e), 0);
        assert_int_equal(store_add(s, BLOB_DATA, &id, data, sizeof data, NULL, &e), 0);
    }
    assert_int_equal(store_flush(s, &e), 0);
    struct store_stats st;
    store_stats(s, &st);
    assert_true(st.packs < 16);
    struct oid *ids;
    size_t n_index;
    assert_int_equal(repo_list_ids(r, "index", &ids, &n_index, &e), 0);
    free(ids);
    assert_int_equal(n_index, 2);
    store_free(s);
    repo_close(r);
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    assert_int_equal(repo_load_index(r, &e), 0);
    assert_int_equal(idx_blob_count(repo_index(r)), N);
    repo_close(r);
}

static void test_tree_blobs_compress(void **state)
{
    char loc[600];
    struct err e;
    struct repo *r = new_repo(loc);
    struct blob *blobs = make_blobs(r, 0, 50, 0, 3);
    struct store *s;
    assert_int_equal(store_new(r, &s, &e), 0);
    for (size_t i = 0; i < 50; i++)
        assert_int_equal(
            store_add(s, blobs[i].type, &blobs[i].id, blobs[i].data, blobs[i].len, NULL, &e), 0);
    assert_int_equal(store_flush(s, &e), 0);
    struct store_stats st;
    store_stats(s, &st);
    assert_true(st.bytes_stored < st.bytes_new / 2);
    struct idx_loc loc_;
    assert_true(idx_lookup(repo_index(r), &blobs[7].id, &loc_));
    assert_int_equal(loc_.type, BLOB_TREE);
    assert_true(loc_.stored_len < loc_.raw_len);
    store_free(s);
    repo_close(r);
    free_blobs(blobs, 50);
}

static void test_flush_empty(void **state)
{
    char loc[600];
    struct err e;
    struct repo *r = new_repo(loc);
    struct store *s;
    assert_int_equal(store_new(r, &s, &e), 0);
    assert_int_equal(store_flush(s, &e), 0);
    struct oid *ids;
    size_t n;
    assert_int_equal(repo_list_ids(r, "index", &ids, &n, &e), 0);
    free(ids);
    assert_int_equal(n, 0);
    struct oid id = {{1}};
    assert_false(store_has(s, &id));
    assert_int_equal(store_add(s, (enum blob_type)5, &id, "x", 1, NULL, &e), ERR_FAIL);
    store_free(s);
    repo_close(r);
}

static void test_upload_failure_is_sticky(void **state)
{
    char loc[600], path[700];
    struct err e;
    struct repo *r = new_repo(loc);
    /* A file where the data/ directory should be: every pack upload fails. */
    snprintf(path, sizeof path, "%s/data", loc);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    struct blob *blobs = make_blobs(r, 200, 0, 12 * 1024, 4);
    struct store *s;
    assert_int_equal(store_new(r, &s, &e), 0);
    /* Uploads run behind the adds: the failure shows in a later add, or at the latest in the
     * flush, naming the pack. */
    int rc = 0;
    for (size_t i = 0; i < 200 && rc == 0; i++)
        rc = store_add(s, blobs[i].type, &blobs[i].id, blobs[i].data, blobs[i].len, NULL, &e);
    if (rc == 0) rc = store_flush(s, &e);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(e.msg, "pack"));
    err_clear(&e);
    assert_int_not_equal(
        store_add(s, blobs[199].type, &blobs[199].id, blobs[199].data, blobs[199].len, NULL, &e),
        0);
    assert_non_null(strstr(e.msg, "failed earlier"));
    assert_int_not_equal(store_flush(s, &e), 0);
    store_free(s);

    /* Nothing was indexed. */
    struct oid *ids;
    size_t n;
    assert_int_equal(repo_list_ids(r, "index", &ids, &n, &e), 0);
    free(ids);
    assert_int_equal(n, 0);
    repo_close(r);
    free_blobs(blobs, 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_adds),
        cmocka_unit_test(test_index_written_during_backup),
        cmocka_unit_test(test_index_due),
        cmocka_unit_test(test_index_file_blob_cap),
        cmocka_unit_test(test_tree_blobs_compress),
        cmocka_unit_test(test_flush_empty),
        cmocka_unit_test(test_upload_failure_is_sticky),
    };
    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
