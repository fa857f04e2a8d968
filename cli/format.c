/* format.c - text and JSON renderings of sizes, times, IDs, snapshots and tree nodes. */
#include "cli/format.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/buf.h"

const char *fmt_bytes(uint64_t n, char out[32])
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, 32, "%llu B", (unsigned long long)n);
    else
        snprintf(out, 32, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, units[u]);
    return out;
}

const char *fmt_duration(double seconds, char out[32])
{
    if (!(seconds >= 0) || seconds > 1e9) seconds = 0;
    unsigned long long s = (unsigned long long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, 32, "%llu:%02llu:%02llu", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(out, 32, "%llu:%02llu", s / 60, s % 60);
    return out;
}

const char *fmt_time_rfc3339(int64_t sec, uint32_t nsec, char out[48])
{
    struct tm tm;
    time_t t = (time_t)sec;
    if (!gmtime_r(&t, &tm)) {
        snprintf(out, 48, "invalid");
        return out;
    }
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 48, "%s.%09uZ", base, nsec % 1000000000u);
    return out;
}

const char *fmt_time_local(int64_t sec, char out[32])
{
    struct tm tm;
    time_t t = (time_t)sec;
    if (!localtime_r(&t, &tm))
        snprintf(out, 32, "invalid");
    else
        strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
    return out;
}

const char *fmt_short_id(const struct oid *id, char out[9])
{
    char hex[OID_HEX_LEN + 1];
    oid_hex(id, hex);
    memcpy(out, hex, 8);
    out[8] = '\0';
    return out;
}

const char *fmt_node_type(uint8_t type)
{
    switch (type) {
    case TREE_FILE:
        return "file";
    case TREE_DIR:
        return "dir";
    case TREE_SYMLINK:
        return "symlink";
    case TREE_FIFO:
        return "fifo";
    case TREE_CHARDEV:
        return "chardev";
    case TREE_BLOCKDEV:
        return "blockdev";
    case TREE_SOCKET:
        return "socket";
    default:
        return "unknown";
    }
}

const char *fmt_mode(uint8_t type, uint32_t mode, char out[11])
{
    static const char types[] = "?-dlpcbs"; /* indexed by enum tree_node_type */
    out[0] = type < sizeof types - 1 ? types[type] : '?';
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        out[1 + i] = (mode & (0400u >> i)) ? rwx[i] : '-';
    if (mode & S_ISUID) out[3] = (mode & 0100) ? 's' : 'S';
    if (mode & S_ISGID) out[6] = (mode & 0010) ? 's' : 'S';
    if (mode & S_ISVTX) out[9] = (mode & 0001) ? 't' : 'T';
    out[10] = '\0';
    return out;
}

void fmt_put_escaped(FILE *f, const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (c == '\\')
            fputs("\\\\", f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not one (overlong forms,
 * surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0)
        n = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        n = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        n = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (left < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

json_t *fmt_json_bytes(const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        /* NUL is valid UTF-8 but ends C strings; names never hold it, so it is replaced too. */
        if (n == 0 || p[i] == 0) {
            if (buf_append(&b, "\xef\xbf\xbd", 3)) goto oom;
            i++;
        } else {
            if (buf_append(&b, p + i, n)) goto oom;
            i += n;
        }
    }
    json_t *s = json_stringn(b.data ? (const char *)b.data : "", b.len);
    buf_free(&b);
    return s;
oom:
    buf_free(&b);
    return NULL;
}

json_t *fmt_json_str(const char *s)
{
    return s ? fmt_json_bytes(s, strlen(s)) : json_null();
}

json_t *fmt_json_oid(const struct oid *id)
{
    char hex[OID_HEX_LEN + 1];
    return json_string(oid_hex(id, hex));
}

json_t *fmt_json_time(int64_t sec, uint32_t nsec)
{
    char t[48];
    return json_string(fmt_time_rfc3339(sec, nsec, t));
}

void fmt_json_set(json_t *obj, const char *key, json_t *value)
{
    if (obj && value) json_object_set_new(obj, key, value);
}

int fmt_json_print(json_t *v, bool pretty)
{
    if (!v) return -1;
    int rc = json_dumpf(v, stdout, pretty ? JSON_INDENT(2) : JSON_COMPACT);
    if (rc == 0 && fputc('\n', stdout) == EOF) rc = -1;
    fflush(stdout);
    json_decref(v);
    return rc;
}

json_t *fmt_json_snap_summary(const struct snap_summary *s)
{
    json_t *o = json_object();
#define U(field) fmt_json_set(o, #field, json_integer((json_int_t)s->field))
    U(files_new);
    U(files_changed);
    U(files_unmodified);
    U(dirs_new);
    U(dirs_changed);
    U(dirs_unmodified);
    U(total_files);
    U(total_bytes);
    U(bytes_read);
    U(blobs_new);
    U(bytes_new);
    U(bytes_stored);
    U(errors);
    U(files_changed_during);
#undef U
    fmt_json_set(o, "duration", json_real(s->duration));
    return o;
}

static json_t *str_array(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, fmt_json_str(v[i]));
    return a;
}

json_t *fmt_json_snapshot(const struct snapshot *s)
{
    char hex[OID_HEX_LEN + 1], shortid[9];
    json_t *o = json_object();
    fmt_json_set(o, "id", json_string(oid_hex(&s->id, hex)));
    fmt_json_set(o, "short_id", json_string(fmt_short_id(&s->id, shortid)));
    fmt_json_set(o, "time", fmt_json_time(s->time_sec, s->time_nsec));
    fmt_json_set(o, "hostname", fmt_json_str(s->hostname));
    fmt_json_set(o, "username", fmt_json_str(s->username));
    fmt_json_set(o, "paths", str_array(s->paths, s->n_paths));
    fmt_json_set(o, "tags", str_array(s->tags, s->n_tags));
    json_t *labels = json_object();
    for (size_t i = 0; labels && i < s->n_labels; i++) {
        const char *eq = strchr(s->labels[i], '=');
        size_t klen = eq ? (size_t)(eq - s->labels[i]) : strlen(s->labels[i]);
        json_t *key = fmt_json_bytes(s->labels[i], klen);
        if (key)
            json_object_set_new(labels, json_string_value(key), fmt_json_str(eq ? eq + 1 : ""));
        json_decref(key);
    }
    fmt_json_set(o, "labels", labels);
    if (s->has_parent) fmt_json_set(o, "parent", fmt_json_oid(&s->parent));
    fmt_json_set(o, "tree", fmt_json_oid(&s->tree));
    fmt_json_set(o, "incomplete", json_boolean(s->incomplete));
    fmt_json_set(o, "summary", fmt_json_snap_summary(&s->summary));
    return o;
}

static json_t *base64(const uint8_t *v, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(cap);
    if (!s) return NULL;
    sodium_bin2base64(s, cap, v, len, sodium_base64_VARIANT_ORIGINAL);
    json_t *j = json_string(s);
    free(s);
    return j;
}

json_t *fmt_json_node(const struct tree_node *n, bool content)
{
    char perm[11];
    json_t *o = json_object();
    fmt_json_set(o, "name", fmt_json_bytes(n->name, n->name_len));
    fmt_json_set(o, "type", json_string(fmt_node_type(n->type)));
    fmt_json_set(o, "mode", json_integer(n->mode));
    fmt_json_set(o, "permissions", json_string(fmt_mode(n->type, n->mode, perm)));
    fmt_json_set(o, "uid", json_integer(n->uid));
    fmt_json_set(o, "gid", json_integer(n->gid));
    if (n->user) fmt_json_set(o, "user", fmt_json_str(n->user));
    if (n->group) fmt_json_set(o, "group", fmt_json_str(n->group));
    fmt_json_set(o, "size", json_integer((json_int_t)n->size));
    fmt_json_set(o, "mtime", fmt_json_time(n->mtime_sec, n->mtime_nsec));
    fmt_json_set(o, "atime", fmt_json_time(n->atime_sec, n->atime_nsec));
    fmt_json_set(o, "ctime", fmt_json_time(n->ctime_sec, n->ctime_nsec));
    fmt_json_set(o, "inode", json_integer((json_int_t)n->inode));
    fmt_json_set(o, "device", json_integer((json_int_t)n->dev));
    fmt_json_set(o, "links", json_integer((json_int_t)n->nlink));
    if (n->type == TREE_CHARDEV || n->type == TREE_BLOCKDEV)
        fmt_json_set(o, "rdev", json_integer((json_int_t)n->rdev));
    if (n->type == TREE_SYMLINK)
        fmt_json_set(o, "link_target", fmt_json_bytes(n->link_target, n->link_len));
    if (n->type == TREE_DIR) fmt_json_set(o, "subtree", fmt_json_oid(&n->subtree));
    if (n->flags & TREE_FLAG_CHANGED) fmt_json_set(o, "changed_while_read", json_true());
    if (n->flags & TREE_FLAG_READ_ERROR) fmt_json_set(o, "read_error", json_true());
    if (!content) return o;
    if (n->type == TREE_FILE) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n->n_content; i++) {
            const struct tree_extent *x = &n->content[i];
            json_t *ex = json_object();
            if (x->hole)
                fmt_json_set(ex, "hole", json_integer((json_int_t)x->len));
            else {
                fmt_json_set(ex, "blob", fmt_json_oid(&x->id));
                fmt_json_set(ex, "length", json_integer((json_int_t)x->len));
            }
            json_array_append_new(a, ex);
        }
        fmt_json_set(o, "content", a);
    }
    if (n->n_xattrs) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n->n_xattrs; i++) {
            json_t *x = json_object();
            fmt_json_set(x, "name", fmt_json_str(n->xattrs[i].name));
            fmt_json_set(x, "value_base64", base64(n->xattrs[i].value, n->xattrs[i].value_len));
            json_array_append_new(a, x);
        }
        fmt_json_set(o, "xattrs", a);
    }
    return o;
}
