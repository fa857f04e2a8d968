/* test_tree.c - tree encoding: round trips, determinism, and refusal of malformed or hostile
 * bytes (truncations, bad fields, huge counts). */
#include <sys/stat.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "repo/tree.h"

/* ---- building nodes ---- */

static uint8_t *memdup_or_null(const void *p, size_t len)
{
    if (len == 0) return NULL;
    uint8_t *q = malloc(len);
    assert_non_null(q);
    memcpy(q, p, len);
    return q;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

static void fill_id(struct oid *id, uint8_t seed)
{
    for (int i = 0; i < OID_LEN; i++)
        id->b[i] = (uint8_t)(seed * 31 + i);
}

static void set_name(struct tree_node *n, const void *name, size_t len)
{
    n->name = memdup_or_null(name, len);
    n->name_len = len;
}

static void add_xattr(struct tree_node *n, const char *name, const void *value, size_t len)
{
    n->xattrs = realloc(n->xattrs, (n->n_xattrs + 1) * sizeof *n->xattrs);
    assert_non_null(n->xattrs);
    struct tree_xattr *x = &n->xattrs[n->n_xattrs++];
    x->name = xstrdup(name);
    x->value = memdup_or_null(value, len);
    x->value_len = len;
}

static void add_extent(struct tree_node *n, bool hole, uint64_t len, uint8_t seed)
{
    n->content = realloc(n->content, (n->n_content + 1) * sizeof *n->content);
    assert_non_null(n->content);
    struct tree_extent *x = &n->content[n->n_content++];
    memset(x, 0, sizeof *x);
    x->hole = hole;
    x->len = len;
    if (!hole) fill_id(&x->id, seed);
}

/* Every field set to something other than zero, with values at the edges of their ranges. */
static void fill_common(struct tree_node *n, uint8_t type, uint64_t seed)
{
    n->type = type;
    n->mode = 07777 - (uint32_t)seed;
    n->uid = UINT32_MAX - (uint32_t)seed;
    n->gid = 1000 + (uint32_t)seed;
    n->user = xstrdup("alice");
    n->group = xstrdup("wheel-ñ");
    n->mtime_sec = -1 - (int64_t)seed; /* before 1970 */
    n->mtime_nsec = 999999999;
    n->atime_sec = INT64_MAX - (int64_t)seed;
    n->atime_nsec = 1;
    n->ctime_sec = INT64_MIN + (int64_t)seed;
    n->ctime_nsec = 500000000;
    n->inode = UINT64_MAX - seed;
    n->dev = 0x10300 + seed;
    n->nlink = 3 + seed;
    n->size = 1ull << 40;
    n->flags = TREE_FLAG_CHANGED | TREE_FLAG_READ_ERROR;
}

/* One node of each type, added in scrambled order. */
static void build_all_types(struct tree *t)
{
    struct err e;
    static const uint8_t bin[] = {0, 1, 2, 0xff, 0, 0x80};
    struct tree_node n;

    memset(&n, 0, sizeof n);
    set_name(&n, "socket", 6);
    fill_common(&n, TREE_SOCKET, 7);
    assert_int_equal(tree_add(t, &n, &e), 0);

    memset(&n, 0, sizeof n);
    set_name(&n, "file", 4);
    fill_common(&n, TREE_FILE, 1);
    add_xattr(&n, "security.capability", bin, sizeof bin);
    add_xattr(&n, "user.empty", "", 0);
    add_xattr(&n, "user.mime", "text/plain", 10);
    add_extent(&n, false, 65536, 1);
    add_extent(&n, true, 1ull << 30, 0);
    add_extent(&n, false, 1, 2);
    add_extent(&n, true, 4096, 0);
    assert_int_equal(tree_add(t, &n, &e), 0);
    assert_null(n.name); /* ownership moved */

    memset(&n, 0, sizeof n);
    set_name(&n, "dir", 3);
    fill_common(&n, TREE_DIR, 2);
    fill_id(&n.subtree, 9);
    add_xattr(&n, "user.a", "x", 1);
    assert_int_equal(tree_add(t, &n, &e), 0);

    memset(&n, 0, sizeof n);
    set_name(&n, "link", 4);
    fill_common(&n, TREE_SYMLINK, 3);
    n.link_target = memdup_or_null("../\xff\x01target", 11);
    n.link_len = 11;
    assert_int_equal(tree_add(t, &n, &e), 0);

    memset(&n, 0, sizeof n);
    set_name(&n, "fifo", 4);
    fill_common(&n, TREE_FIFO, 4);
    free(n.user);
    free(n.group);
    n.user = n.group = NULL; /* unknown owner names */
    assert_int_equal(tree_add(t, &n, &e), 0);

    memset(&n, 0, sizeof n);
    set_name(&n, "chr\0nul", 7); /* the decoder does not judge names */
    fill_common(&n, TREE_CHARDEV, 5);
    n.rdev = (1u << 8) | 3;
    assert_int_equal(tree_add(t, &n, &e), 0);

    memset(&n, 0, sizeof n);
    set_name(&n, "\xff\xfe", 2);
    fill_common(&n, TREE_BLOCKDEV, 6);
    n.rdev = UINT64_MAX;
    assert_int_equal(tree_add(t, &n, &e), 0);

    tree_sort(t);
}

static void assert_str_equal_or_null(const char *a, const char *b)
{
    if (!a || !b)
        assert_true(a == b);
    else
        assert_string_equal(a, b);
}

static void assert_bytes_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    assert_int_equal(alen, blen);
    if (alen) assert_memory_equal(a, b, alen);
}

static void assert_node_equal(const struct tree_node *a, const struct tree_node *b)
{
    assert_bytes_equal(a->name, a->name_len, b->name, b->name_len);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->mode, b->mode);
    assert_int_equal(a->uid, b->uid);
    assert_int_equal(a->gid, b->gid);
    assert_str_equal_or_null(a->user, b->user);
    assert_str_equal_or_null(a->group, b->group);
    assert_true(a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec);
    assert_true(a->atime_sec == b->atime_sec && a->atime_nsec == b->atime_nsec);
    assert_true(a->ctime_sec == b->ctime_sec && a->ctime_nsec == b->ctime_nsec);
    assert_true(a->inode == b->inode && a->dev == b->dev && a->nlink == b->nlink);
    assert_true(a->size == b->size && a->rdev == b->rdev);
    assert_bytes_equal(a->link_target, a->link_len, b->link_target, b->link_len);
    assert_int_equal(a->n_xattrs, b->n_xattrs);
    for (size_t i = 0; i < a->n_xattrs; i++) {
        assert_string_equal(a->xattrs[i].name, b->xattrs[i].name);
        assert_bytes_equal(a->xattrs[i].value, a->xattrs[i].value_len, b->xattrs[i].value,
                           b->xattrs[i].value_len);
    }
    assert_int_equal(a->n_content, b->n_content);
    for (size_t i = 0; i < a->n_content; i++) {
        assert_int_equal(a->content[i].hole, b->content[i].hole);
        assert_true(a->content[i].len == b->content[i].len);
        assert_true(oid_eq(&a->content[i].id, &b->content[i].id));
    }
    assert_true(oid_eq(&a->subtree, &b->subtree));
    assert_int_equal(a->flags, b->flags);
}

/* ---- round trips ---- */

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    struct tree t = TREE_INIT, d = TREE_INIT;
    struct buf b = BUF_INIT, b2 = BUF_INIT;
    struct err e;
    build_all_types(&t);
    assert_int_equal(tree_encode(&t, &b, &e), 0);
    assert_int_equal(tree_decode(b.data, b.len, &d, &e), 0);
    assert_int_equal(d.n, 7);
    for (size_t i = 0; i < t.n; i++)
        assert_node_equal(&t.nodes[i], &d.nodes[i]);
    /* sorted bytewise: "\xff\xfe" last, "chr\0nul" before "dir" */
    assert_memory_equal(d.nodes[0].name, "chr\0nul", 7);
    assert_memory_equal(d.nodes[6].name, "\xff\xfe", 2);
    assert_int_equal(d.nodes[3].type, TREE_FILE); /* "fifo" < "file" */
    assert_int_equal(d.nodes[3].n_xattrs, 3);
    assert_null(d.nodes[3].xattrs[1].value); /* empty value */
    /* the decoded tree encodes to the same bytes */
    assert_int_equal(tree_encode(&d, &b2, &e), 0);
    assert_bytes_equal(b.data, b.len, b2.data, b2.len);
    tree_free(&t);
    tree_free(&d);
    assert_null(d.nodes);
    assert_int_equal(d.n, 0);
    buf_free(&b);
    buf_free(&b2);
}

static void test_empty_tree(void **state)
{
    (void)state;
    struct tree t = TREE_INIT, d = TREE_INIT;
    struct buf b = BUF_INIT;
    struct err e;
    assert_int_equal(tree_encode(&t, &b, &e), 0);
    assert_bytes_equal(b.data, b.len, (const uint8_t *)"PVTR\x01\x00", 6);
    assert_int_equal(tree_decode(b.data, b.len, &d, &e), 0);
    assert_int_equal(d.n, 0);
    buf_free(&b);
}

static void test_encode_appends(void **state)
{
    (void)state;
    struct tree t = TREE_INIT;
    struct buf b = BUF_INIT;
    struct err e;
    buf_append(&b, "xy", 2);
    assert_int_equal(tree_encode(&t, &b, &e), 0);
    assert_bytes_equal(b.data, b.len, (const uint8_t *)"xyPVTR\x01\x00", 8);
    buf_free(&b);
}

/* Equal input gives equal bytes, whatever order nodes and xattrs were added in. */
static void test_deterministic(void **state)
{
    (void)state;
    struct tree t1 = TREE_INIT, t2 = TREE_INIT;
    struct buf b1 = BUF_INIT, b2 = BUF_INIT;
    struct err e;
    build_all_types(&t1);
    build_all_types(&t2);
    /* scramble t2: reverse the nodes and the file's xattrs, then sort again */
    for (size_t i = 0; i < t2.n / 2; i++) {
        struct tree_node tmp = t2.nodes[i];
        t2.nodes[i] = t2.nodes[t2.n - 1 - i];
        t2.nodes[t2.n - 1 - i] = tmp;
    }
    struct tree_node *f = &t2.nodes[3]; /* "file", which the reversal left in place */
    assert_int_equal(f->type, TREE_FILE);
    struct tree_xattr x = f->xattrs[0];
    f->xattrs[0] = f->xattrs[2];
    f->xattrs[2] = x;
    assert_int_not_equal(tree_encode(&t2, &b2, &e), 0); /* unsorted is refused */
    assert_int_equal(b2.len, 0);
    tree_sort(&t2);
    assert_int_equal(tree_encode(&t1, &b1, &e), 0);
    assert_int_equal(tree_encode(&t2, &b2, &e), 0);
    assert_bytes_equal(b1.data, b1.len, b2.data, b2.len);
    tree_free(&t1);
    tree_free(&t2);
    buf_free(&b1);
    buf_free(&b2);
}

/* ---- the byte layout, written out independently of tree.c ---- */

struct raw_xattr {
    const char *name;
    size_t name_len;
    const void *value;
    size_t value_len;
};

struct raw_extent {
    uint8_t kind;
    uint64_t len;
    uint8_t id_seed;
};

/* One node as its fields appear in the encoding; every integer is the raw varint value. */
struct raw {
    const void *name;
    size_t name_len;
    uint8_t type;
    uint64_t mode, uid, gid;
    const char *user, *group;
    uint64_t mtime_zz, mtime_nsec, atime_zz, atime_nsec, ctime_zz, ctime_nsec;
    uint64_t inode, dev, nlink, size, rdev;
    const void *link;
    size_t link_len;
    uint64_t n_xattrs; /* as written; may differ from the entries that follow */
    const struct raw_xattr *xattrs;
    size_t xattrs_written;
    uint64_t n_extents;
    const struct raw_extent *extents;
    size_t extents_written;
    uint8_t subtree_flag;
    uint64_t flags;
};

static struct raw raw_fifo(void)
{
    struct raw r;
    memset(&r, 0, sizeof r);
    r.name = "p";
    r.name_len = 1;
    r.type = TREE_FIFO;
    r.mode = 0644;
    return r;
}

static void put_raw_str(struct buf *b, const char *s)
{
    buf_put_bytes(b, s, s ? strlen(s) : 0);
}

static void put_raw(struct buf *b, const struct raw *r)
{
    buf_put_bytes(b, r->name, r->name_len);
    buf_put_u8(b, r->type);
    buf_put_uvarint(b, r->mode);
    buf_put_uvarint(b, r->uid);
    buf_put_uvarint(b, r->gid);
    put_raw_str(b, r->user);
    put_raw_str(b, r->group);
    const uint64_t ints[] = {r->mtime_zz, r->mtime_nsec, r->atime_zz, r->atime_nsec,
                             r->ctime_zz, r->ctime_nsec, r->inode,    r->dev,
                             r->nlink,    r->size,       r->rdev};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        buf_put_uvarint(b, ints[i]);
    buf_put_bytes(b, r->link, r->link_len);
    buf_put_uvarint(b, r->n_xattrs);
    for (size_t i = 0; i < r->xattrs_written; i++) {
        buf_put_bytes(b, r->xattrs[i].name, r->xattrs[i].name_len);
        buf_put_bytes(b, r->xattrs[i].value, r->xattrs[i].value_len);
    }
    buf_put_uvarint(b, r->n_extents);
    for (size_t i = 0; i < r->extents_written; i++) {
        buf_put_u8(b, r->extents[i].kind);
        buf_put_uvarint(b, r->extents[i].len);
        if (r->extents[i].kind == 0) {
            struct oid id;
            fill_id(&id, r->extents[i].id_seed);
            buf_append(b, id.b, OID_LEN);
        }
    }
    buf_put_u8(b, r->subtree_flag);
    if (r->subtree_flag) {
        struct oid id;
        fill_id(&id, 9);
        buf_append(b, id.b, OID_LEN);
    }
    buf_put_uvarint(b, r->flags);
}

static void raw_tree(struct buf *b, const struct raw *nodes, size_t n)
{
    buf_reset(b);
    buf_append(b, "PVTR", 4);
    buf_put_u8(b, 1);
    buf_put_uvarint(b, n);
    for (size_t i = 0; i < n; i++)
        put_raw(b, &nodes[i]);
}

/* The encoder writes exactly the documented layout (docs/FORMAT.md). */
static void test_layout_matches_format(void **state)
{
    (void)state;
    static const uint8_t bin[] = {0, 1, 2, 0xff, 0, 0x80};
    struct raw_xattr xs[] = {{"security.capability", 19, bin, sizeof bin},
                             {"user.empty", 10, NULL, 0},
                             {"user.mime", 9, "text/plain", 10}};
    struct raw_extent ext[] = {{0, 65536, 1}, {1, 1ull << 30, 0}, {0, 1, 2}, {1, 4096, 0}};
    struct raw r;
    memset(&r, 0, sizeof r);
    r.name = "file";
    r.name_len = 4;
    r.type = TREE_FILE;
    r.mode = 07776;
    r.uid = UINT32_MAX - 1;
    r.gid = 1001;
    r.user = "alice";
    r.group = "wheel-ñ";
    r.mtime_zz = 3; /* -2 */
    r.mtime_nsec = 999999999;
    r.atime_zz = ((uint64_t)INT64_MAX - 1) * 2;
    r.atime_nsec = 1;
    r.ctime_zz = UINT64_MAX - 2; /* INT64_MIN + 1 */
    r.ctime_nsec = 500000000;
    r.inode = UINT64_MAX - 1;
    r.dev = 0x10301;
    r.nlink = 4;
    r.size = 1ull << 40;
    r.n_xattrs = r.xattrs_written = 3;
    r.xattrs = xs;
    r.n_extents = r.extents_written = 4;
    r.extents = ext;
    r.flags = 3;

    struct tree t = TREE_INIT;
    struct buf want = BUF_INIT, got = BUF_INIT;
    struct err e;
    build_all_types(&t);
    /* keep only "file" (index 3 after sorting) */
    struct tree one = {&t.nodes[3], 1, 1};
    raw_tree(&want, &r, 1);
    assert_int_equal(tree_encode(&one, &got, &e), 0);
    assert_bytes_equal(want.data, want.len, got.data, got.len);
    tree_free(&t);

    /* the smallest node: empty name, FIFO, all zero, is 23 bytes after the 6-byte header */
    struct tree_node n;
    memset(&n, 0, sizeof n);
    n.type = TREE_FIFO;
    assert_int_equal(tree_add(&t, &n, &e), 0);
    buf_reset(&got);
    assert_int_equal(tree_encode(&t, &got, &e), 0);
    assert_int_equal(got.len, 6 + 23);
    tree_free(&t);
    /* and a tree of nothing but minimal nodes decodes (the count check is not too tight) */
    struct raw two[2] = {raw_fifo(), raw_fifo()};
    two[0].name_len = two[1].name_len = 0;
    two[0].mode = two[1].mode = 0;
    raw_tree(&want, two, 2);
    assert_int_equal(want.len, 6 + 2 * 23);
    assert_int_equal(tree_decode(want.data, want.len, &t, &e), 0);
    assert_int_equal(t.n, 2);
    tree_free(&t);
    buf_free(&want);
    buf_free(&got);
}

/* ---- refusals by the encoder ---- */

static void expect_encode_fails(struct tree *t, const char *msg_part)
{
    struct buf b = BUF_INIT;
    struct err e;
    err_clear(&e);
    buf_append(&b, "keep", 4);
    assert_int_equal(tree_encode(t, &b, &e), ERR_FAIL);
    assert_int_equal(b.len, 4); /* output left as it was */
    if (!strstr(e.msg, msg_part)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, msg_part);
    buf_free(&b);
}

static void add_simple(struct tree *t, const char *name, uint8_t type)
{
    struct tree_node n;
    struct err e;
    memset(&n, 0, sizeof n);
    set_name(&n, name, strlen(name));
    n.type = type;
    assert_int_equal(tree_add(t, &n, &e), 0);
}

static void test_encode_refuses_unsorted_and_duplicates(void **state)
{
    (void)state;
    struct tree t = TREE_INIT;
    add_simple(&t, "b", TREE_FILE);
    add_simple(&t, "a", TREE_FILE);
    expect_encode_fails(&t, "\"a\": entries not sorted");
    tree_free(&t);

    add_simple(&t, "a", TREE_FILE);
    add_simple(&t, "a", TREE_DIR);
    expect_encode_fails(&t, "\"a\": duplicate name");
    tree_free(&t);

    /* shorter first on equal prefix */
    add_simple(&t, "ab", TREE_FILE);
    add_simple(&t, "a", TREE_FILE);
    expect_encode_fails(&t, "not sorted");
    tree_sort(&t);
    struct buf b = BUF_INIT;
    struct err e;
    assert_int_equal(tree_encode(&t, &b, &e), 0);
    assert_int_equal(t.nodes[0].name_len, 1);
    tree_free(&t);
    buf_free(&b);

    /* messages show odd bytes escaped */
    add_simple(&t, "z", TREE_FILE);
    add_simple(&t, "\x01q", TREE_FILE);
    expect_encode_fails(&t, "\"\\x01q\"");
    tree_free(&t);
}

static void test_encode_refuses_bad_fields(void **state)
{
    (void)state;
    struct tree t = TREE_INIT;
    struct tree_node *n;

    add_simple(&t, "f", TREE_FILE);
    n = &t.nodes[0];
    n->mode = 0100644;
    expect_encode_fails(&t, "mode");
    n->mode = 0644;
    n->type = 0;
    expect_encode_fails(&t, "unknown type 0");
    n->type = 8;
    expect_encode_fails(&t, "unknown type 8");
    n->type = TREE_FILE;
    n->atime_nsec = 1000000000;
    expect_encode_fails(&t, "nanoseconds");
    n->atime_nsec = 0;
    n->flags = 4;
    expect_encode_fails(&t, "unknown flags");
    n->flags = 0;
    fill_id(&n->subtree, 1);
    expect_encode_fails(&t, "subtree on an entry that is not a directory");
    memset(&n->subtree, 0, sizeof n->subtree);
    add_extent(n, false, 0, 1);
    expect_encode_fails(&t, "extent 0 is empty");
    n->content[0].len = UINT64_MAX;
    add_extent(n, true, 1, 0);
    expect_encode_fails(&t, "2^64");
    n->type = TREE_DIR;
    expect_encode_fails(&t, "content on an entry that is not a regular file");
    free(n->content);
    n->content = NULL;
    n->n_content = 0;
    n->link_target = memdup_or_null("x", 1);
    n->link_len = 1;
    expect_encode_fails(&t, "link target on an entry that is not a symlink");
    n->type = TREE_SYMLINK;
    n->link_target = realloc(n->link_target, TREE_MAX_LINK + 1);
    n->link_len = TREE_MAX_LINK + 1;
    memset(n->link_target, 'a', n->link_len);
    expect_encode_fails(&t, "link target longer");
    n->link_len = TREE_MAX_LINK;
    add_xattr(n, "user.b", "1", 1);
    add_xattr(n, "user.a", "1", 1);
    expect_encode_fails(&t, "xattrs not sorted");
    tree_sort(&t);
    add_xattr(n, "user.b", "2", 1);
    expect_encode_fails(&t, "duplicated at user.b");
    n->n_xattrs = 2;
    free(n->xattrs[2].name);
    free(n->xattrs[2].value);
    add_xattr(n, "", "2", 1);
    tree_sort(&t);
    expect_encode_fails(&t, "name empty");
    free(n->xattrs[0].name);
    n->xattrs[0].name = xstrdup("u"); /* valid again, and still first */
    n->user = malloc(TREE_MAX_OWNER + 2);
    memset(n->user, 'u', TREE_MAX_OWNER + 1);
    n->user[TREE_MAX_OWNER + 1] = '\0';
    expect_encode_fails(&t, "user name longer");
    n->user[TREE_MAX_OWNER] = '\0';
    struct buf b = BUF_INIT;
    struct err e;
    assert_int_equal(tree_encode(&t, &b, &e), 0); /* every limit reached, none passed */
    struct tree d = TREE_INIT;
    assert_int_equal(tree_decode(b.data, b.len, &d, &e), 0);
    assert_node_equal(&t.nodes[0], &d.nodes[0]);
    tree_free(&d);
    tree_free(&t);
    buf_free(&b);
}

static void test_empty_owner_reads_as_unknown(void **state)
{
    (void)state;
    struct tree t = TREE_INIT, d = TREE_INIT;
    struct buf b = BUF_INIT;
    struct err e;
    add_simple(&t, "f", TREE_FILE);
    t.nodes[0].user = xstrdup("");
    assert_int_equal(tree_encode(&t, &b, &e), 0);
    assert_int_equal(tree_decode(b.data, b.len, &d, &e), 0);
    assert_null(d.nodes[0].user);
    assert_null(d.nodes[0].group);
    tree_free(&t);
    tree_free(&d);
    buf_free(&b);
}

/* ---- refusals by the decoder ---- */

static void expect_decode_fails(const struct buf *b, const char *msg_part)
{
    struct tree d = TREE_INIT;
    struct err e;
    err_clear(&e);
    assert_int_equal(tree_decode(b->data, b->len, &d, &e), ERR_FAIL);
    assert_null(d.nodes);
    assert_int_equal(d.n, 0);
    if (!strstr(e.msg, msg_part)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, msg_part);
}

static void expect_decode_ok(const struct buf *b)
{
    struct tree d = TREE_INIT;
    struct err e;
    if (tree_decode(b->data, b->len, &d, &e) != 0) fail_msg("decode failed: %s", e.msg);
    tree_free(&d);
}

/* Every proper prefix of a valid encoding is refused, and nothing leaks (ASan build). */
static void test_truncated_at_every_length(void **state)
{
    (void)state;
    struct tree t = TREE_INIT;
    struct buf b = BUF_INIT;
    struct err e;
    build_all_types(&t);
    assert_int_equal(tree_encode(&t, &b, &e), 0);
    for (size_t len = 0; len < b.len; len++) {
        struct tree d = TREE_INIT;
        if (tree_decode(b.data, len, &d, &e) == 0) fail_msg("prefix of %zu bytes decoded", len);
        assert_null(d.nodes);
        assert_true(e.msg[0] != '\0');
    }
    /* and a trailing byte is refused too */
    buf_put_u8(&b, 0);
    expect_decode_fails(&b, "1 bytes after the last entry");
    tree_free(&t);
    buf_free(&b);
}

static void test_decode_refuses_bad_header(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    buf_append(&b, "PVTX\x01\x00", 6);
    expect_decode_fails(&b, "magic");
    buf_reset(&b);
    buf_append(&b, "PVTR\x02\x00", 6);
    expect_decode_fails(&b, "version 2 is not supported");
    buf_reset(&b);
    buf_append(&b, "PVTR\x01\x80\x00", 7); /* overlong varint for 0 */
    expect_decode_fails(&b, "entry count");
    buf_free(&b);
}

static void test_decode_refuses_bad_fields(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    struct raw r;
    struct raw_xattr xs[2];
    struct raw_extent ext[2];

    r = raw_fifo();
    raw_tree(&b, &r, 1);
    expect_decode_ok(&b);

    r = raw_fifo();
    r.type = 0;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "entry 0: type: unknown type 0");
    r.type = 8;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "unknown type 8");

    r = raw_fifo();
    r.mode = 010000;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "mode");

    r = raw_fifo();
    r.uid = 1ull << 32;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "uid");
    r = raw_fifo();
    r.gid = 1ull << 32;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "gid");

    /* struct raw writes user names with strlen, so a NUL inside one is written by hand */
    for (int nul = 0; nul < 2; nul++) {
        buf_reset(&b);
        buf_append(&b, "PVTR\x01\x01", 6);
        buf_put_bytes(&b, "p", 1);
        buf_put_u8(&b, TREE_FIFO);
        buf_put_uvarint(&b, 0644);
        buf_put_uvarint(&b, 0);
        buf_put_uvarint(&b, 0);
        buf_put_bytes(&b, nul ? "ab\0c" : "abxc", 4);
        for (int i = 0; i < 17; i++) /* group, times, inode..rdev, link, counts, flag, flags */
            buf_put_u8(&b, 0);
        if (nul)
            expect_decode_fails(&b, "user: contains a NUL");
        else
            expect_decode_ok(&b);
    }

    r = raw_fifo();
    r.ctime_nsec = 1000000000;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "ctime");

    r = raw_fifo();
    r.link = "t";
    r.link_len = 1;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "link target: present on a non-symlink");
    r.type = TREE_SYMLINK;
    raw_tree(&b, &r, 1);
    expect_decode_ok(&b);

    r = raw_fifo();
    r.subtree_flag = 1;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "subtree flag");
    r.type = TREE_DIR;
    raw_tree(&b, &r, 1);
    expect_decode_ok(&b);
    r.subtree_flag = 0;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "subtree flag: 0");
    r.subtree_flag = 2;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "subtree flag: 2");

    r = raw_fifo();
    r.flags = 4;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "unknown flags");

    /* xattrs */
    r = raw_fifo();
    xs[0] = (struct raw_xattr){"user.b", 6, "1", 1};
    xs[1] = (struct raw_xattr){"user.a", 6, "2", 1};
    r.xattrs = xs;
    r.n_xattrs = r.xattrs_written = 2;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "not sorted or duplicated at \"user.a\"");
    xs[1].name = "user.b";
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "duplicated");
    xs[1].name = "user.c";
    raw_tree(&b, &r, 1);
    expect_decode_ok(&b);
    xs[0] = (struct raw_xattr){"user\0x", 6, "1", 1};
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "xattr name: contains a NUL");
    xs[0] = (struct raw_xattr){"", 0, "1", 1};
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "xattr name: empty");
    r.n_xattrs = TREE_MAX_XATTRS + 1;
    r.xattrs_written = 0;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "xattr count");

    /* extents */
    r = raw_fifo();
    r.type = TREE_FILE;
    ext[0] = (struct raw_extent){0, 100, 1};
    ext[1] = (struct raw_extent){1, 100, 0};
    r.extents = ext;
    r.n_extents = r.extents_written = 2;
    raw_tree(&b, &r, 1);
    expect_decode_ok(&b);
    ext[1].kind = 2;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "extent kind: unknown kind 2");
    ext[1].kind = 1;
    ext[1].len = 0;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "extent length: zero");
    ext[1].len = UINT64_MAX - 99;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "2^64");
    ext[1].len = 100;
    r.type = TREE_DIR;
    r.subtree_flag = 1;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "content on a non-file");

    /* names: any bytes up to the limit */
    static uint8_t longname[TREE_MAX_NAME + 1];
    memset(longname, '/', sizeof longname);
    r = raw_fifo();
    r.name = longname;
    r.name_len = TREE_MAX_NAME;
    raw_tree(&b, &r, 1);
    expect_decode_ok(&b);
    r.name_len = TREE_MAX_NAME + 1;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "name: length 4097 above the limit 4096");

    /* unsorted and duplicate names decode: the restorer judges them */
    struct raw two[2] = {raw_fifo(), raw_fifo()};
    raw_tree(&b, two, 2);
    expect_decode_ok(&b);
    two[1].name_len = 0;
    raw_tree(&b, two, 2);
    expect_decode_ok(&b);
    /* and errors name the entry */
    two[1].mode = 1ull << 40;
    raw_tree(&b, two, 2);
    expect_decode_fails(&b, "entry 1: mode");
    buf_free(&b);
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Counts far beyond the input are refused before any allocation, so they cost nothing. */
static void test_hostile_counts(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    struct raw r;
    double t0 = now_sec();

    for (int i = 0; i < 1000; i++) {
        buf_reset(&b);
        buf_append(&b, "PVTR\x01", 5);
        buf_put_uvarint(&b, TREE_MAX_NODES);
        buf_append(&b, "0123456789", 10);
        expect_decode_fails(&b, "cannot fit");
    }
    buf_reset(&b);
    buf_append(&b, "PVTR\x01", 5);
    buf_put_uvarint(&b, TREE_MAX_NODES + 1ull);
    expect_decode_fails(&b, "entry count");
    buf_reset(&b);
    buf_append(&b, "PVTR\x01", 5);
    buf_put_uvarint(&b, UINT64_MAX);
    expect_decode_fails(&b, "entry count");

    /* two nodes claimed, one present */
    r = raw_fifo();
    raw_tree(&b, &r, 1);
    b.data[5] = 2;
    expect_decode_fails(&b, "cannot fit");
    /* one node claimed, one present, but the count says 1 and bytes for 2 follow */
    struct raw two[2] = {raw_fifo(), raw_fifo()};
    raw_tree(&b, two, 2);
    b.data[5] = 1;
    expect_decode_fails(&b, "after the last entry");

    r = raw_fifo();
    r.n_xattrs = TREE_MAX_XATTRS;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "xattrs cannot fit");

    r = raw_fifo();
    r.type = TREE_FILE;
    r.n_extents = UINT64_MAX;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "extents cannot fit");
    r.n_extents = 1ull << 40;
    raw_tree(&b, &r, 1);
    expect_decode_fails(&b, "extents cannot fit");

    /* a length claiming more than is there */
    r = raw_fifo();
    raw_tree(&b, &r, 1);
    b.data[6] = 0x7f; /* name length 127, only a few bytes follow */
    expect_decode_fails(&b, "name: truncated");

    assert_true(now_sec() - t0 < 2.0);
    buf_free(&b);
}

static void test_tree_add_keeps_node_on_failure_free(void **state)
{
    (void)state;
    /* tree_add grows; many nodes keep their content */
    struct tree t = TREE_INIT;
    struct err e;
    char name[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "n%04d", 999 - i);
        add_simple(&t, name, TREE_FILE);
    }
    assert_int_equal(t.n, 1000);
    tree_sort(&t);
    assert_memory_equal(t.nodes[0].name, "n0000", 5);
    assert_memory_equal(t.nodes[999].name, "n0999", 5);
    struct buf b = BUF_INIT;
    struct tree d = TREE_INIT;
    assert_int_equal(tree_encode(&t, &b, &e), 0);
    assert_int_equal(tree_decode(b.data, b.len, &d, &e), 0);
    assert_int_equal(d.n, 1000);
    tree_free(&t);
    tree_free(&d);
    buf_free(&b);
    tree_free(&t); /* freeing twice is harmless: the tree is empty */
}

/* Every stat(2) file type maps to its node type; an unknown one is recorded as a socket. */
static void test_type_of_mode(void **state)
{
    (void)state;
    assert_int_equal(tree_type_of_mode(S_IFREG | 0644), TREE_FILE);
    assert_int_equal(tree_type_of_mode(S_IFDIR | 0755), TREE_DIR);
    assert_int_equal(tree_type_of_mode(S_IFLNK | 0777), TREE_SYMLINK);
    assert_int_equal(tree_type_of_mode(S_IFIFO | 0600), TREE_FIFO);
    assert_int_equal(tree_type_of_mode(S_IFCHR | 0600), TREE_CHARDEV);
    assert_int_equal(tree_type_of_mode(S_IFBLK | 0600), TREE_BLOCKDEV);
    assert_int_equal(tree_type_of_mode(S_IFSOCK | 0600), TREE_SOCKET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_type_of_mode),
        cmocka_unit_test(test_empty_tree),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_layout_matches_format),
        cmocka_unit_test(test_encode_refuses_unsorted_and_duplicates),
        cmocka_unit_test(test_encode_refuses_bad_fields),
        cmocka_unit_test(test_empty_owner_reads_as_unknown),
        cmocka_unit_test(test_truncated_at_every_length),
        cmocka_unit_test(test_decode_refuses_bad_header),
        cmocka_unit_test(test_decode_refuses_bad_fields),
        cmocka_unit_test(test_hostile_counts),
        cmocka_unit_test(test_tree_add_keeps_node_on_failure_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
