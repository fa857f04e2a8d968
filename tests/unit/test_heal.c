/* test_heal.c - unit tests of repo/heal.h: a snapshot whose file "b" lost its blob (pack
 * removed) and whose directory "sub" lost its tree: heal_scan names exactly those two entries;
 * heal_repair_snapshots saves a snapshot without them (tag "repaired", the original kept, the
 * rest intact), which scans clean; with forget the original goes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "repo/crypt.h"
#include "repo/heal.h"
#include "repo/index.h"
#include "repo/repo.h"
#include "repo/snapshot.h"
#include "repo/store.h"
#include "repo/tree.h"

struct seen {
    char paths[8][64];
    bool dir[8];
    size_t n;
};

static void on_damage(void *ctx, const struct heal_damage *d)
{
    struct seen *s = ctx;
    assert_true(s->n < 8);
    snprintf(s->paths[s->n], sizeof s->paths[0], "%s", d->path);
    s->dir[s->n++] = d->dir;
}

/* Stores one blob in a pack of its own (a store flushed at once); returns its ID. */
static struct oid put(struct repo *r, enum blob_type type, const void *data, size_t len)
{
    struct err e;
    struct oid id;
    struct store *s;
    assert_int_equal(crypt_blob_id(repo_keys(r), data, len, &id, &e), 0);
    assert_int_equal(store_new(r, &s, &e), 0);
    assert_int_equal(store_add(s, type, &id, data, len, NULL, &e), 0);
    assert_int_equal(store_flush(s, &e), 0);
    store_free(s);
    return id;
}

static void add_node(struct tree *t, const char *name, uint8_t type, const struct oid *id)
{
    struct err e;
    struct tree_node n;
    memset(&n, 0, sizeof n);
    n.name_len = strlen(name);
    n.name = malloc(n.name_len);
    memcpy(n.name, name, n.name_len);
    n.type = type;
    n.mode = 0644;
    if (type == TREE_DIR) {
        n.subtree = *id;
    } else {
        n.content = calloc(1, sizeof *n.content);
        n.content[0].id = *id;
        n.content[0].len = 5;
        n.n_content = 1;
        n.size = 5;
    }
    assert_int_equal(tree_add(t, &n, &e), 0);
}

static struct oid put_tree(struct repo *r, struct tree *t)
{
    struct err e;
    struct buf b = BUF_INIT;
    tree_sort(t);
    assert_int_equal(tree_encode(t, &b, &e), 0);
    struct oid id = put(r, BLOB_TREE, b.data, b.len);
    buf_free(&b);
    tree_free(t);
    return id;
}

/* Removes the pack that holds blob `id`. */
static void lose(struct repo *r, const struct oid *id)
{
    struct err e;
    struct idx_loc loc;
    assert_true(idx_lookup(repo_index(r), id, &loc));
    assert_int_equal(repo_remove_file(r, "data", idx_pack_id(repo_index(r), loc.pack), &e), 0);
}

static void test_scan_and_repair(void **state)
{
    char loc[FIXTURE_LOC_MAX];
    struct err e;
    fixture_location(loc);
    assert_int_equal(fixture_create(loc, "pw", 1 << 20, 3, &e), 0);
    struct repo *r;
    assert_int_equal(repo_open(loc, "pw", NULL, &r, &e), 0);
    assert_int_equal(repo_load_index(r, &e), 0);

    struct oid a = put(r, BLOB_DATA, "aaaaa", 5), b = put(r, BLOB_DATA, "bbbbb", 5);
    struct oid c = put(r, BLOB_DATA, "ccccc", 5);
    struct tree sub = TREE_INIT, root = TREE_INIT;
    add_node(&sub, "c", TREE_FILE, &c);
    struct oid sub_id = put_tree(r, &sub);
    add_node(&root, "a", TREE_FILE, &a);
    add_node(&root, "b", TREE_FILE, &b);
    add_node(&root, "sub", TREE_DIR, &sub_id);
    struct snapshot s;
    memset(&s, 0, sizeof s);
    s.tree = put_tree(r, &root);
    s.time_sec = 1700000000;
    s.hostname = strdup("h");
    s.username = strdup("u");
    s.paths = calloc(1, sizeof *s.paths);
    s.paths[0] = strdup("/data");
    s.n_paths = 1;
    assert_int_equal(snap_save(r, &s, &e), 0);
    struct oid orig = s.id;
    snap_free(&s);
    lose(r, &b);
    lose(r, &sub_id);

    struct seen seen = {0};
    struct heal_options o = {.report = on_damage, .ctx = &seen};
    struct heal_stats st;
    assert_int_equal(heal_scan(r, &o, &st, &e), 0);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.paths[0], "/b");
    assert_false(seen.dir[0]);
    assert_string_equal(seen.paths[1], "/sub");
    assert_true(seen.dir[1]);
    assert_int_equal(st.snapshots_damaged, 1);
    assert_int_equal(st.files_lost, 1);
    assert_int_equal(st.dirs_lost, 1);

    memset(&seen, 0, sizeof seen);
    assert_int_equal(heal_repair_snapshots(r, &o, &st, &e), 0);
    assert_int_equal(st.snapshots_written, 1);
    assert_int_equal(st.snapshots_forgotten, 0);
    struct snapshot *list;
    size_t n;
    assert_int_equal(snap_list(r, &list, &n, &e), 0);
    assert_int_equal(n, 2); /* the original kept */
    const struct snapshot *rw = oid_eq(&list[0].id, &orig) ? &list[1] : &list[0];
    assert_int_equal(rw->n_tags, 1);
    assert_string_equal(rw->tags[0], "repaired");
    assert_int_equal(rw->time_sec, 1700000000);
    struct buf tb = BUF_INIT;
    struct tree t = TREE_INIT;
    assert_int_equal(repo_load_blob(r, BLOB_TREE, &rw->tree, &tb, &e), 0);
    assert_int_equal(tree_decode(tb.data, tb.len, &t, &e), 0);
    assert_int_equal(t.n, 1); /* only "a" is left */
    assert_memory_equal(t.nodes[0].name, "a", 1);
    tree_free(&t);
    buf_free(&tb);
    snap_list_free(list, n);

    /* The rewrite scans clean; only the original is damaged. Then forget it. */
    memset(&seen, 0, sizeof seen);
    assert_int_equal(heal_scan(r, &o, &st, &e), 0);
    assert_int_equal(st.snapshots, 2);
    assert_int_equal(st.snapshots_damaged, 1);
    o.forget = true;
    memset(&seen, 0, sizeof seen);
    assert_int_equal(heal_repair_snapshots(r, &o, &st, &e), 0);
    assert_int_equal(st.snapshots_forgotten, 1);
    assert_int_equal(snap_list(r, &list, &n, &e), 0);
    assert_int_equal(n, 2); /* two rewrites of the same snapshot, the original gone */
    for (size_t i = 0; i < n; i++)
        assert_false(oid_eq(&list[i].id, &orig));
    snap_list_free(list, n);
    repo_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_and_repair),
    };
    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
