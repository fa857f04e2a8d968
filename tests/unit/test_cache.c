/* test_cache.c - the local object cache: hits, misses, ranges, replacement, removal, separation of
 * repositories, the cache directory tag, the default location, and concurrent writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "repo/cache.h"

#include "fixture.h"

#define ID_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define ID_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

struct fx {
    char dir[256];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (fixture_mkdtemp(f->dir, sizeof f->dir, "pv-cache") < 0) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    int rc = fixture_rmtree(f->dir);
    free(f);
    return rc;
}

static struct cache *open_ok(const char *dir, const char *id)
{
    struct cache *c = NULL;
    struct err e;
    err_clear(&e);
    if (cache_open(dir, id, &c, &e) != 0) fail_msg("cache_open: %s", e.msg);
    return c;
}

static void test_bad_id(void **state)
{
    struct fx *f = *state;
    struct cache *c = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(cache_open(f->dir, "../../etc", &c, &e), ERR_FAIL);
    assert_null(c);
    assert_int_equal(cache_open(f->dir,
                                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                &c, &e),
                     ERR_FAIL);
}

static void test_roundtrip(void **state)
{
    struct fx *f = *state;
    struct cache *c = open_ok(f->dir, ID_A);
    struct buf out = BUF_INIT;
    struct err e;
    err_clear(&e);
    assert_int_equal(cache_get(c, "index/01", &out, &e), ERR_NOT_FOUND);
    assert_int_equal(out.len, 0);
    assert_int_equal(cache_put(c, "index/01", "hello", 5, &e), 0);
    assert_int_equal(cache_get(c, "index/01", &out, &e), 0);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "hello", 5);
    /* replacing is allowed: the cache follows the repository */
    assert_int_equal(cache_put(c, "index/01", "bye", 3, &e), 0);
    buf_reset(&out);
    assert_int_equal(cache_get(c, "index/01", &out, &e), 0);
    assert_int_equal(out.len, 3);
    assert_memory_equal(out.data, "bye", 3);
    /* ranges: appended; a range past the end, or an empty one, fails */
    assert_int_equal(cache_get_range(c, "index/01", 1, 2, &out, &e), 0);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data + 3, "ye", 2);
    assert_int_equal(cache_get_range(c, "index/01", 2, 2, &out, &e), ERR_FAIL);
    assert_int_equal(cache_get_range(c, "index/01", 0, 0, &out, &e), ERR_FAIL);
    assert_int_equal(cache_get_range(c, "index/02", 0, 1, &out, &e), ERR_NOT_FOUND);
    assert_int_equal(out.len, 5);
    assert_int_equal(cache_remove(c, "index/01", &e), 0);
    assert_int_equal(cache_get(c, "index/01", &out, &e), ERR_NOT_FOUND);
    assert_int_equal(cache_remove(c, "index/01", &e), 0); /* already gone: fine */
    /* names are checked like backend names */
    assert_int_equal(cache_put(c, "../escape", "x", 1, &e), ERR_FAIL);
    buf_free(&out);
    cache_close(c);

    char tag[300];
    snprintf(tag, sizeof tag, "%s/CACHEDIR.TAG", f->dir);
    FILE *t = fopen(tag, "r");
    assert_non_null(t);
    char line[64] = "";
    assert_non_null(fgets(line, sizeof line, t));
    fclose(t);
    assert_string_equal(line, "Signature: 8a477f597d28d172789f06886806bc55\n");
}

/* What the cache writes is private, whatever the umask: 0700 directories, 0600 files. */
static void test_private_modes(void **state)
{
    struct fx *f = *state;
    char sub[300], path[400];
    snprintf(sub, sizeof sub, "%s/new", f->dir);
    mode_t old = umask(0);
    struct cache *c = open_ok(sub, ID_A);
    struct err e;
    err_clear(&e);
    assert_int_equal(cache_put(c, "index/01", "hello", 5, &e), 0);
    cache_close(c);
    umask(old);
    const char *dirs[] = {"", "/" ID_A, "/" ID_A "/index"};
    const char *files[] = {"/CACHEDIR.TAG", "/" ID_A "/index/01"};
    struct stat st;
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", sub, dirs[i]);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
    }
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s%s", sub, files[i]);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
}

static int count_cb(void *ctx, const char *name, uint64_t size)
{
    (*(int *)ctx)++;
    return 0;
}

static void test_repos_apart(void **state)
{
    struct fx *f = *state;
    struct cache *a = open_ok(f->dir, ID_A), *b = open_ok(f->dir, ID_B);
    struct buf out = BUF_INIT;
    struct err e;
    err_clear(&e);
    assert_int_equal(cache_put(a, "snapshots/01", "A", 1, &e), 0);
    assert_int_equal(cache_put(a, "snapshots/02", "AA", 2, &e), 0);
    assert_int_equal(cache_put(a, "index/01", "AAA", 3, &e), 0);
    assert_int_equal(cache_get(b, "snapshots/01", &out, &e), ERR_NOT_FOUND);
    int n = 0;
    assert_int_equal(cache_list(a, "snapshots/", count_cb, &n, &e), 0);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(cache_list(b, "", count_cb, &n, &e), 0);
    assert_int_equal(n, 0);
    cache_close(a);
    cache_close(b);
    /* and what was cached is there after reopening */
    a = open_ok(f->dir, ID_A);
    assert_int_equal(cache_get(a, "index/01", &out, &e), 0);
    assert_int_equal(out.len, 3);
    cache_close(a);
    buf_free(&out);
}

static void test_default_dir(void **state)
{
    char *d = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(cache_default_dir("/x/pv", "/x/xdg", "/x/home", &d, &e), 0);
    assert_string_equal(d, "/x/pv");
    free(d);
    assert_int_equal(cache_default_dir(NULL, "/x/xdg", "/x/home", &d, &e), 0);
    assert_string_equal(d, "/x/xdg/podvault");
    free(d);
    assert_int_equal(cache_default_dir("", "", "/x/home", &d, &e), 0);
    assert_string_equal(d, "/x/home/.cache/podvault");
    free(d);
    assert_int_equal(cache_default_dir(NULL, NULL, NULL, &d, &e), ERR_FAIL);
    assert_null(d);
}

struct writer {
    struct cache *c;
    uint8_t fill;
    int failures;
};

static void *write_many(void *arg)
{
    struct writer *w = arg;
    static uint8_t data[4][200000];
    memset(data[w->fill], w->fill, sizeof data[w->fill]);
    struct err e;
    for (int i = 0; i < 30; i++) {
        err_clear(&e);
        if (cache_put(w->c, "data/00/shared", data[w->fill], sizeof data[w->fill], &e) != 0)
            w->failures++;
    }
    return NULL;
}

/* Writers racing on one name: a reader always sees one whole version, never a mix. */
static void test_concurrent_writers(void **state)
{
    struct fx *f = *state;
    struct cache *c = open_ok(f->dir, ID_B);
    static uint8_t first[200000];
    struct err e;
    err_clear(&e);
    assert_int_equal(cache_put(c, "data/00/shared", first, sizeof first, &e), 0);
    struct writer w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){.c = c, .fill = (uint8_t)i};
        assert_int_equal(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
    }
    struct buf out = BUF_INIT;
    for (int i = 0; i < 200; i++) {
        buf_reset(&out);
        err_clear(&e);
        assert_int_equal(cache_get(c, "data/00/shared", &out, &e), 0);
        assert_int_equal(out.len, 200000);
        for (size_t j = 1; j < out.len; j++)
            if (out.data[j] != out.data[0]) fail_msg("mixed versions at byte %zu", j);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    buf_free(&out);
    cache_close(c);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_private_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repos_apart, setup, teardown),
        cmocka_unit_test(test_default_dir),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
