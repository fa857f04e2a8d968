/* tree.c - deterministic binary encoding of directory trees; the bytes are described in
 * docs/FORMAT.md. */
#include "repo/tree.h"

#include <sys/stat.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TREE_MAGIC "PVTR"
#define TREE_MAGIC_LEN 4
#define TREE_VERSION 1
#define EXTENT_BLOB 0
#define EXTENT_HOLE 1
#define TREE_KNOWN_FLAGS (TREE_FLAG_CHANGED | TREE_FLAG_READ_ERROR)
#define NSEC_PER_SEC 1000000000u

/* The fewest bytes a node, an xattr and an extent encode to. A count read from the input is
 * checked against the bytes left before anything is allocated, so hostile counts cost nothing
 * and memory stays a small multiple of the input size. */
#define MIN_NODE_BYTES 23
#define MIN_XATTR_BYTES 3
#define MIN_EXTENT_BYTES 2

int tree_add(struct tree *t, struct tree_node *node, struct err *e)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        if (cap > SIZE_MAX / sizeof *t->nodes)
            return err_set(e, ERR_FAIL, "tree too large: %zu entries", t->n);
        struct tree_node *p = realloc(t->nodes, cap * sizeof *p);
        if (!p) return err_set(e, ERR_FAIL, "out of memory adding a tree entry");
        t->nodes = p;
        t->cap = cap;
    }
    t->nodes[t->n++] = *node;
    memset(node, 0, sizeof *node);
    return 0;
}

static int name_cmp(const struct tree_node *a, const struct tree_node *b)
{
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n ? memcmp(a->name, b->name, n) : 0;
    if (c) return c;
    return (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

static int node_qsort_cmp(const void *a, const void *b)
{
    return name_cmp(a, b);
}

static int xattr_qsort_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tree_xattr *)a)->name, ((const struct tree_xattr *)b)->name);
}

void tree_sort(struct tree *t)
{
    if (t->n > 1) qsort(t->nodes, t->n, sizeof *t->nodes, node_qsort_cmp);
    for (size_t i = 0; i < t->n; i++) {
        struct tree_node *n = &t->nodes[i];
        if (n->n_xattrs > 1) qsort(n->xattrs, n->n_xattrs, sizeof *n->xattrs, xattr_qsort_cmp);
    }
}

void tree_node_free(struct tree_node *node)
{
    free(node->name);
    free(node->user);
    free(node->group);
    free(node->link_target);
    for (size_t i = 0; i < node->n_xattrs; i++) {
        free(node->xattrs[i].name);
        free(node->xattrs[i].value);
    }
    free(node->xattrs);
    free(node->content);
    memset(node, 0, sizeof *node);
}

void tree_free(struct tree *t)
{
    for (size_t i = 0; i < t->n; i++)
        tree_node_free(&t->nodes[i]);
    free(t->nodes);
    t->nodes = NULL;
    t->n = t->cap = 0;
}

/* ---- encoding ---- */

/* A node name for messages: printable ASCII kept, other bytes as \xNN, cut short if long. */
static const char *printable_name(const struct tree_node *n, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    for (; i < n->name_len && o + 8 < cap; i++) {
        uint8_t c = n->name[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    if (i < n->name_len) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = '\0';
    return out;
}

__attribute__((format(printf, 3, 4))) static int bad_node(struct err *e, const struct tree_node *n,
                                                          const char *fmt, ...)
{
    char name[128], why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return err_set(e, ERR_FAIL, "encoding tree entry \"%s\": %s",
                   printable_name(n, name, sizeof name), why);
}

static bool has_subtree_id(const struct tree_node *n)
{
    return !oid_is_zero(&n->subtree);
}

/* Refuses what the decoder would refuse, so that every encoded tree decodes again. */
static int check_node(const struct tree_node *n, struct err *e)
{
    if (n->name_len > TREE_MAX_NAME)
        return bad_node(e, n, "name longer than %d bytes", TREE_MAX_NAME);
    if (n->type < TREE_FILE || n->type > TREE_SOCKET)
        return bad_node(e, n, "unknown type %u", n->type);
    if (n->mode > 07777) return bad_node(e, n, "mode %#o has bits beyond 07777", n->mode);
    if (n->user && strlen(n->user) > TREE_MAX_OWNER)
        return bad_node(e, n, "user name longer than %d bytes", TREE_MAX_OWNER);
    if (n->group && strlen(n->group) > TREE_MAX_OWNER)
        return bad_node(e, n, "group name longer than %d bytes", TREE_MAX_OWNER);
    if (n->mtime_nsec >= NSEC_PER_SEC || n->atime_nsec >= NSEC_PER_SEC ||
        n->ctime_nsec >= NSEC_PER_SEC)
        return bad_node(e, n, "nanoseconds of a time stamp not below 10^9");
    if (n->link_len > TREE_MAX_LINK)
        return bad_node(e, n, "link target longer than %d bytes", TREE_MAX_LINK);
    if (n->link_len && n->type != TREE_SYMLINK)
        return bad_node(e, n, "link target on an entry that is not a symlink");
    if (n->n_xattrs > TREE_MAX_XATTRS)
        return bad_node(e, n, "more than %d xattrs", TREE_MAX_XATTRS);
    for (size_t i = 0; i < n->n_xattrs; i++) {
        const struct tree_xattr *x = &n->xattrs[i];
        size_t len = x->name ? strlen(x->name) : 0;
        if (len == 0 || len > TREE_MAX_XATTR_NAME)
            return bad_node(e, n, "xattr %zu: name empty or longer than %d bytes", i,
                            TREE_MAX_XATTR_NAME);
        if (x->value_len > TREE_MAX_XATTR_VALUE)
            return bad_node(e, n, "xattr %s: value longer than %u bytes", x->name,
                            TREE_MAX_XATTR_VALUE);
        if (i > 0 && strcmp(n->xattrs[i - 1].name, x->name) >= 0)
            return bad_node(e, n, "xattrs not sorted by name or duplicated at %s", x->name);
    }
    if (n->n_content && n->type != TREE_FILE)
        return bad_node(e, n, "content on an entry that is not a regular file");
    uint64_t total = 0;
    for (size_t i = 0; i < n->n_content; i++) {
        uint64_t len = n->content[i].len;
        if (len == 0) return bad_node(e, n, "content extent %zu is empty", i);
        if (len > UINT64_MAX - total) return bad_node(e, n, "content longer than 2^64 bytes");
        total += len;
    }
    if (n->type != TREE_DIR && has_subtree_id(n))
        return bad_node(e, n, "subtree on an entry that is not a directory");
    if (n->flags & ~(uint32_t)TREE_KNOWN_FLAGS)
        return bad_node(e, n, "unknown flags %#x", n->flags);
    return 0;
}

/* Time stamps are signed: zigzag keeps small negative seconds short. */
static uint64_t zigzag(int64_t v)
{
    return v < 0 ? ~((uint64_t)v << 1) : (uint64_t)v << 1;
}

static int64_t unzigzag(uint64_t u)
{
    return (u & 1) ? (int64_t) ~(u >> 1) : (int64_t)(u >> 1);
}

static int put_string(struct buf *b, const char *s)
{
    return buf_put_bytes(b, s, s ? strlen(s) : 0);
}

static int put_time(struct buf *b, int64_t sec, uint32_t nsec)
{
    return buf_put_uvarint(b, zigzag(sec)) < 0 ? -1 : buf_put_uvarint(b, nsec);
}

static int put_node(struct buf *b, const struct tree_node *n)
{
    if (buf_put_bytes(b, n->name, n->name_len) < 0 || buf_put_u8(b, n->type) < 0 ||
        buf_put_uvarint(b, n->mode) < 0 || buf_put_uvarint(b, n->uid) < 0 ||
        buf_put_uvarint(b, n->gid) < 0 || put_string(b, n->user) < 0 ||
        put_string(b, n->group) < 0 || put_time(b, n->mtime_sec, n->mtime_nsec) < 0 ||
        put_time(b, n->atime_sec, n->atime_nsec) < 0 ||
        put_time(b, n->ctime_sec, n->ctime_nsec) < 0 || buf_put_uvarint(b, n->inode) < 0 ||
        buf_put_uvarint(b, n->dev) < 0 || buf_put_uvarint(b, n->nlink) < 0 ||
        buf_put_uvarint(b, n->size) < 0 || buf_put_uvarint(b, n->rdev) < 0 ||
        buf_put_bytes(b, n->link_target, n->link_len) < 0 || buf_put_uvarint(b, n->n_xattrs) < 0)
        return -1;
    for (size_t i = 0; i < n->n_xattrs; i++) {
        const struct tree_xattr *x = &n->xattrs[i];
        if (put_string(b, x->name) < 0 || buf_put_bytes(b, x->value, x->value_len) < 0) return -1;
    }
    if (buf_put_uvarint(b, n->n_content) < 0) return -1;
    for (size_t i = 0; i < n->n_content; i++) {
        const struct tree_extent *x = &n->content[i];
        if (buf_put_u8(b, x->hole ? EXTENT_HOLE : EXTENT_BLOB) < 0 ||
            buf_put_uvarint(b, x->len) < 0 || (!x->hole && buf_append(b, x->id.b, OID_LEN) < 0))
            return -1;
    }
    if (n->type == TREE_DIR) {
        if (buf_put_u8(b, 1) < 0 || buf_append(b, n->subtree.b, OID_LEN) < 0) return -1;
    } else if (buf_put_u8(b, 0) < 0) {
        return -1;
    }
    return buf_put_uvarint(b, n->flags);
}

int tree_encode(const struct tree *t, struct buf *out, struct err *e)
{
    if (t->n > TREE_MAX_NODES)
        return err_set(e, ERR_FAIL, "encoding tree: %zu entries, more than %u", t->n,
                       TREE_MAX_NODES);
    for (size_t i = 0; i < t->n; i++) {
        int rc = check_node(&t->nodes[i], e);
        if (rc < 0) return rc;
        int order = i > 0 ? name_cmp(&t->nodes[i - 1], &t->nodes[i]) : -1;
        if (order == 0) return bad_node(e, &t->nodes[i], "duplicate name");
        if (order > 0) return bad_node(e, &t->nodes[i], "entries not sorted by name");
    }
    size_t start = out->len;
    bool ok = buf_append(out, TREE_MAGIC, TREE_MAGIC_LEN) == 0 &&
              buf_put_u8(out, TREE_VERSION) == 0 && buf_put_uvarint(out, t->n) == 0;
    for (size_t i = 0; ok && i < t->n; i++)
        ok = put_node(out, &t->nodes[i]) == 0;
    if (!ok) {
        out->len = start;
        return err_set(e, ERR_FAIL, "out of memory encoding a tree of %zu entries", t->n);
    }
    return 0;
}

/* ---- decoding ---- */

struct dec {
    struct rd r;
    size_t node; /* index of the node being read, for messages */
    struct err *e;
};

__attribute__((format(printf, 3, 4))) static int bad(struct dec *d, const char *field,
                                                     const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return err_set(d->e, ERR_FAIL, "malformed tree: entry %zu: %s: %s", d->node, field, why);
}

static int oom(struct dec *d)
{
    return err_set(d->e, ERR_FAIL, "out of memory decoding tree entry %zu", d->node);
}

static int get_u8(struct dec *d, const char *field, uint8_t *v)
{
    return rd_u8(&d->r, v) ? 0 : bad(d, field, "truncated");
}

static int get_uv(struct dec *d, const char *field, uint64_t max, uint64_t *v)
{
    if (!rd_uvarint(&d->r, v)) return bad(d, field, "truncated or malformed varint");
    if (*v > max)
        return bad(d, field, "%llu is above the limit %llu", (unsigned long long)*v,
                   (unsigned long long)max);
    return 0;
}

static int get_u32(struct dec *d, const char *field, uint32_t max, uint32_t *v)
{
    uint64_t x;
    int rc = get_uv(d, field, max, &x);
    if (rc == 0) *v = (uint32_t)x;
    return rc;
}

static int get_bytes(struct dec *d, const char *field, size_t max, const uint8_t **p, size_t *len)
{
    uint64_t n;
    if (!rd_uvarint(&d->r, &n)) return bad(d, field, "truncated or malformed length");
    if (n > max)
        return bad(d, field, "length %llu above the limit %zu", (unsigned long long)n, max);
    if (!rd_skip(&d->r, (size_t)n, p)) return bad(d, field, "truncated");
    *len = (size_t)n;
    return 0;
}

/* Copies a byte string; the empty string becomes NULL. */
static int get_blob(struct dec *d, const char *field, size_t max, uint8_t **out, size_t *len)
{
    const uint8_t *p;
    int rc = get_bytes(d, field, max, &p, len);
    if (rc < 0 || *len == 0) return rc;
    if (!(*out = malloc(*len))) return oom(d);
    memcpy(*out, p, *len);
    return 0;
}

/* Copies a NUL-free string; the empty string becomes NULL unless `required`. */
static int get_cstr(struct dec *d, const char *field, size_t max, bool required, char **out)
{
    const uint8_t *p;
    size_t len;
    int rc = get_bytes(d, field, max, &p, &len);
    if (rc < 0) return rc;
    if (len == 0) return required ? bad(d, field, "empty") : 0;
    if (memchr(p, 0, len)) return bad(d, field, "contains a NUL byte");
    if (!(*out = malloc(len + 1))) return oom(d);
    memcpy(*out, p, len);
    (*out)[len] = '\0';
    return 0;
}

static int get_time(struct dec *d, const char *field, int64_t *sec, uint32_t *nsec)
{
    uint64_t z;
    int rc = get_uv(d, field, UINT64_MAX, &z);
    if (rc == 0) rc = get_u32(d, field, NSEC_PER_SEC - 1, nsec);
    if (rc == 0) *sec = unzigzag(z);
    return rc;
}

static int get_xattrs(struct dec *d, struct tree_node *n)
{
    uint64_t count;
    int rc = get_uv(d, "xattr count", TREE_MAX_XATTRS, &count);
    if (rc < 0) return rc;
    if (count > d->r.left / MIN_XATTR_BYTES)
        return bad(d, "xattr count", "%llu xattrs cannot fit in the %zu bytes left",
                   (unsigned long long)count, d->r.left);
    if (count == 0) return 0;
    if (!(n->xattrs = calloc((size_t)count, sizeof *n->xattrs))) return oom(d);
    for (size_t i = 0; i < count; i++) {
        struct tree_xattr *x = &n->xattrs[i];
        n->n_xattrs = i + 1; /* owned from here on, so a failure frees what was read */
        if ((rc = get_cstr(d, "xattr name", TREE_MAX_XATTR_NAME, true, &x->name)) < 0 ||
            (rc = get_blob(d, "xattr value", TREE_MAX_XATTR_VALUE, &x->value, &x->value_len)) < 0)
            return rc;
        if (i > 0 && strcmp(n->xattrs[i - 1].name, x->name) >= 0)
            return bad(d, "xattr name", "not sorted or duplicated at \"%s\"", x->name);
    }
    return 0;
}

static int get_content(struct dec *d, struct tree_node *n)
{
    uint64_t count;
    int rc = get_uv(d, "extent count", UINT64_MAX, &count);
    if (rc < 0) return rc;
    if (count > d->r.left / MIN_EXTENT_BYTES)
        return bad(d, "extent count", "%llu extents cannot fit in the %zu bytes left",
                   (unsigned long long)count, d->r.left);
    if (count == 0) return 0;
    if (n->type != TREE_FILE) return bad(d, "extent count", "content on a non-file");
    if (!(n->content = calloc((size_t)count, sizeof *n->content))) return oom(d);
    n->n_content = (size_t)count;
    uint64_t total = 0;
    for (size_t i = 0; i < count; i++) {
        struct tree_extent *x = &n->content[i];
        uint8_t kind;
        if ((rc = get_u8(d, "extent kind", &kind)) < 0) return rc;
        if (kind != EXTENT_BLOB && kind != EXTENT_HOLE)
            return bad(d, "extent kind", "unknown kind %u", kind);
        x->hole = kind == EXTENT_HOLE;
        if ((rc = get_uv(d, "extent length", UINT64_MAX, &x->len)) < 0) return rc;
        if (x->len == 0) return bad(d, "extent length", "zero");
        if (x->len > UINT64_MAX - total) return bad(d, "extent length", "content above 2^64");
        total += x->len;
        if (!x->hole && !rd_copy(&d->r, x->id.b, OID_LEN))
            return bad(d, "extent blob ID", "truncated");
    }
    return 0;
}

static int get_node(struct dec *d, struct tree_node *n)
{
    int rc;
    uint64_t v;
    uint8_t present;
    if ((rc = get_blob(d, "name", TREE_MAX_NAME, &n->name, &n->name_len)) < 0 ||
        (rc = get_u8(d, "type", &n->type)) < 0)
        return rc;
    if (n->type < TREE_FILE || n->type > TREE_SOCKET)
        return bad(d, "type", "unknown type %u", n->type);
    if ((rc = get_u32(d, "mode", 07777, &n->mode)) < 0 ||
        (rc = get_u32(d, "uid", UINT32_MAX, &n->uid)) < 0 ||
        (rc = get_u32(d, "gid", UINT32_MAX, &n->gid)) < 0 ||
        (rc = get_cstr(d, "user", TREE_MAX_OWNER, false, &n->user)) < 0 ||
        (rc = get_cstr(d, "group", TREE_MAX_OWNER, false, &n->group)) < 0 ||
        (rc = get_time(d, "mtime", &n->mtime_sec, &n->mtime_nsec)) < 0 ||
        (rc = get_time(d, "atime", &n->atime_sec, &n->atime_nsec)) < 0 ||
        (rc = get_time(d, "ctime", &n->ctime_sec, &n->ctime_nsec)) < 0 ||
        (rc = get_uv(d, "inode", UINT64_MAX, &n->inode)) < 0 ||
        (rc = get_uv(d, "dev", UINT64_MAX, &n->dev)) < 0 ||
        (rc = get_uv(d, "nlink", UINT64_MAX, &n->nlink)) < 0 ||
        (rc = get_uv(d, "size", UINT64_MAX, &n->size)) < 0 ||
        (rc = get_uv(d, "rdev", UINT64_MAX, &n->rdev)) < 0 ||
        (rc = get_blob(d, "link target", TREE_MAX_LINK, &n->link_target, &n->link_len)) < 0)
        return rc;
    if (n->link_len && n->type != TREE_SYMLINK)
        return bad(d, "link target", "present on a non-symlink");
    if ((rc = get_xattrs(d, n)) < 0 || (rc = get_content(d, n)) < 0 ||
        (rc = get_u8(d, "subtree flag", &present)) < 0)
        return rc;
    if (present != (n->type == TREE_DIR))
        return bad(d, "subtree flag", "%u, but a subtree is required exactly for directories",
                   present);
    if (present && !rd_copy(&d->r, n->subtree.b, OID_LEN)) return bad(d, "subtree ID", "truncated");
    if ((rc = get_uv(d, "flags", UINT32_MAX, &v)) < 0) return rc;
    if (v & ~(uint64_t)TREE_KNOWN_FLAGS)
        return bad(d, "flags", "unknown flags %#llx", (unsigned long long)v);
    n->flags = (uint32_t)v;
    return 0;
}

static int decode_nodes(struct dec *d, struct tree *t)
{
    uint8_t magic[TREE_MAGIC_LEN], version;
    uint64_t count;
    struct err *e = d->e;
    if (!rd_copy(&d->r, magic, sizeof magic) || memcmp(magic, TREE_MAGIC, TREE_MAGIC_LEN) != 0)
        return err_set(e, ERR_FAIL, "malformed tree: no \"%s\" magic", TREE_MAGIC);
    if (!rd_u8(&d->r, &version)) return err_set(e, ERR_FAIL, "malformed tree: truncated header");
    if (version != TREE_VERSION)
        return err_set(e, ERR_FAIL, "tree format version %u is not supported (only %u)", version,
                       TREE_VERSION);
    if (!rd_uvarint(&d->r, &count) || count > TREE_MAX_NODES)
        return err_set(e, ERR_FAIL, "malformed tree: entry count missing or above %u",
                       TREE_MAX_NODES);
    if (count > d->r.left / MIN_NODE_BYTES)
        return err_set(e, ERR_FAIL, "malformed tree: %llu entries cannot fit in %zu bytes",
                       (unsigned long long)count, d->r.left);
    if (count == 0) return 0;
    if (!(t->nodes = calloc((size_t)count, sizeof *t->nodes)))
        return err_set(e, ERR_FAIL, "out of memory decoding a tree of %llu entries",
                       (unsigned long long)count);
    t->cap = (size_t)count;
    for (d->node = 0; d->node < count; d->node++) {
        t->n = d->node + 1; /* owned from here on, so a failure frees what was read */
        int rc = get_node(d, &t->nodes[d->node]);
        if (rc < 0) return rc;
    }
    return 0;
}

int tree_decode(const void *data, size_t len, struct tree *out, struct err *e)
{
    struct tree t = TREE_INIT;
    struct dec d = {rd_make(data, len), 0, e};
    int rc = decode_nodes(&d, &t);
    if (rc == 0 && d.r.left)
        rc = err_set(e, ERR_FAIL, "malformed tree: %zu bytes after the last entry", d.r.left);
    if (rc < 0) {
        tree_free(&t);
        return rc;
    }
    *out = t;
    return 0;
}

uint8_t tree_type_of_mode(uint32_t st_mode)
{
    switch (st_mode & S_IFMT) {
    case S_IFREG:
        return TREE_FILE;
    case S_IFDIR:
        return TREE_DIR;
    case S_IFLNK:
        return TREE_SYMLINK;
    case S_IFIFO:
        return TREE_FIFO;
    case S_IFCHR:
        return TREE_CHARDEV;
    case S_IFBLK:
        return TREE_BLOCKDEV;
    default:
        return TREE_SOCKET;
    }
}
