/* s3_versions.c - ListObjectVersions pages and the table of versions; see s3_versions.h.
 * Follows S3's ListObjectVersions answer: <ListVersionsResult> with <Version> and <DeleteMarker>
 * entries (Key, VersionId, IsLatest, LastModified, Size), newest first within a key, and
 * <IsTruncated>, <NextKeyMarker>, <NextVersionIdMarker> for the next page. */
#include "backend/s3_versions.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/xmlscan.h"

#define ENTRIES_MAX (1u << 24) /* 16 million versions: far more than a repository has */

enum vtag {
    V_OTHER,
    V_ROOT,
    V_VERSION,
    V_MARKER,
    V_KEY,
    V_VID,
    V_LATEST,
    V_MTIME,
    V_SIZE,
    V_TRUNC,
    V_NKEY,
    V_NVID
};

static const struct xs_name vtags[] = {
    {"ListVersionsResult", V_ROOT},
    {"Version", V_VERSION},
    {"DeleteMarker", V_MARKER},
    {"Key", V_KEY},
    {"VersionId", V_VID},
    {"IsLatest", V_LATEST},
    {"LastModified", V_MTIME},
    {"Size", V_SIZE},
    {"IsTruncated", V_TRUNC},
    {"NextKeyMarker", V_NKEY},
    {"NextVersionIdMarker", V_NVID},
};

struct vx {
    struct xs xs;    /* first: the handlers get &vx->xs */
    enum vtag entry; /* V_VERSION or V_MARKER while inside one, else V_OTHER */
    char text[S3_VER_KEY_MAX + 1];
    /* the entry being read */
    bool have_key, have_vid, have_mtime;
    char key[S3_VER_KEY_MAX + 1], vid[S3_VER_ID_MAX + 1];
    struct s3_version v;
    s3_version_cb cb;
    void *ctx;
    struct s3_versions_page *page;
};

static bool wanted(const struct vx *x, enum vtag t)
{
    if (x->xs.depth == 3 && x->entry != V_OTHER)
        return t == V_KEY || t == V_VID || t == V_LATEST || t == V_MTIME || t == V_SIZE;
    return x->xs.depth == 2 && (t == V_TRUNC || t == V_NKEY || t == V_NVID);
}

static int v_start(struct xs *s, const char *local)
{
    struct vx *x = (struct vx *)s;
    enum vtag t = (enum vtag)xs_find(vtags, sizeof vtags / sizeof vtags[0], local, V_OTHER);
    if (s->depth == 1 && t != V_ROOT) {
        xs_stop(s, ERR_FAIL, "not a ListVersionsResult document");
        return t;
    }
    if (s->depth == 2 && (t == V_VERSION || t == V_MARKER)) {
        x->entry = t;
        x->have_key = x->have_vid = x->have_mtime = false;
        memset(&x->v, 0, sizeof x->v);
        x->v.marker = t == V_MARKER;
    }
    if (wanted(x, t)) xs_capture(s);
    return t;
}

static int set_marker(char **dst, const struct xs *s)
{
    free(*dst);
    *dst = NULL;
    if (s->tlen == 0) return 0; /* an empty marker is no marker */
    if (!xs_text_ok(s, S3_VER_ID_MAX)) return -1;
    *dst = strdup(s->text);
    return *dst ? 0 : -1;
}

static void end_text(struct vx *x, enum vtag t)
{
    struct xs *s = &x->xs;
    switch (t) {
    case V_KEY:
        if (!xs_take(s, x->key, S3_VER_KEY_MAX))
            return xs_stop(s, ERR_FAIL, "entry with a bad key");
        x->have_key = true;
        break;
    case V_VID:
        if (!xs_take(s, x->vid, S3_VER_ID_MAX))
            return xs_stop(s, ERR_FAIL, "entry with a bad version ID");
        x->have_vid = true;
        break;
    case V_LATEST:
        if (!xs_bool(x->text, &x->v.latest))
            return xs_stop(s, ERR_FAIL, "IsLatest is neither true nor false");
        break;
    case V_MTIME:
        if (s->overflow || !s3_time_parse_ms(x->text, &x->v.mtime_ms))
            return xs_stop(s, ERR_FAIL, "entry with a bad LastModified");
        x->have_mtime = true;
        break;
    case V_SIZE:
        if (!xs_u64(x->text, &x->v.size)) return xs_stop(s, ERR_FAIL, "entry with a bad size");
        break;
    case V_TRUNC:
        if (!xs_bool(x->text, &x->page->truncated))
            return xs_stop(s, ERR_FAIL, "IsTruncated is neither true nor false");
        break;
    case V_NKEY:
        if (set_marker(&x->page->next_key, s) < 0) return xs_stop(s, ERR_FAIL, "bad NextKeyMarker");
        break;
    case V_NVID:
        if (set_marker(&x->page->next_version, s) < 0)
            return xs_stop(s, ERR_FAIL, "bad NextVersionIdMarker");
        break;
    default:
        break;
    }
}

static void v_end(struct xs *s, int tag, bool captured)
{
    struct vx *x = (struct vx *)s;
    enum vtag t = (enum vtag)tag;
    if (captured) end_text(x, t);
    if (s->rc == 0 && s->depth == 2 && x->entry != V_OTHER && t == x->entry) {
        x->entry = V_OTHER;
        if (!x->have_key || !x->have_vid || !x->have_mtime)
            return xs_stop(s, ERR_FAIL, "entry without Key, VersionId or LastModified");
        x->v.key = x->key;
        x->v.version_id = x->vid;
        if (x->v.marker) x->v.size = 0;
        x->page->entries++;
        int rc = x->cb(x->ctx, &x->v);
        if (rc != 0) return xs_stop(s, rc, NULL);
    }
}

int s3_versions_parse(const char *xml, size_t len, s3_version_cb cb, void *ctx,
                      struct s3_versions_page *page, struct err *e)
{
    struct vx *x = calloc(1, sizeof *x);
    if (!x) return err_set(e, ERR_FAIL, "parsing a version listing: out of memory");
    x->xs = (struct xs){
        .on_start = v_start, .on_end = v_end, .text = x->text, .cap = S3_VER_KEY_MAX, .ns = true};
    x->cb = cb;
    x->ctx = ctx;
    x->page = page;
    int rc = xs_parse(&x->xs, xml, len, "malformed version listing", e);
    free(x);
    return rc;
}

void s3_versions_page_free(struct s3_versions_page *page)
{
    free(page->next_key);
    free(page->next_version);
    page->next_key = page->next_version = NULL;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool s3_time_parse_ms(const char *s, int64_t *ms)
{
    int Y, M, D, h, m, sec;
    if (strlen(s) < 20 || !digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) ||
        s[7] != '-' || !digits(s + 8, 2, &D) || s[10] != 'T' || !digits(s + 11, 2, &h) ||
        s[13] != ':' || !digits(s + 14, 2, &m) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return false;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return false;
    const char *p = s + 19;
    int frac = 0, nfrac = 0;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, nfrac++)
            if (nfrac < 3) frac = frac * 10 + (*p - '0');
        if (nfrac == 0) return false;
        for (int i = nfrac; i < 3; i++)
            frac *= 10;
    }
    if (strcmp(p, "Z") != 0) return false;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return false;
    *ms = (int64_t)t * 1000 + frac;
    return true;
}

/* ---- the table ---- */

struct ventry {
    struct s3_version v; /* key and version_id owned */
    size_t seq;          /* listing order */
};

struct s3_vt {
    struct ventry *e;
    size_t n, cap;
    size_t *starts; /* after finish: index of each key's first entry, nkeys + 1 of them */
    size_t nkeys;
    bool done;
};

struct s3_vt *s3_vt_new(void)
{
    return calloc(1, sizeof(struct s3_vt));
}

void s3_vt_free(struct s3_vt *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) {
        free((char *)t->e[i].v.key);
        free((char *)t->e[i].v.version_id);
    }
    free(t->e);
    free(t->starts);
    free(t);
}

int s3_vt_add(void *ctx, const struct s3_version *v)
{
    struct s3_vt *t = ctx;
    if (t->done || t->n >= ENTRIES_MAX) return 1;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        struct ventry *e = realloc(t->e, cap * sizeof *e);
        if (!e) return 1;
        t->e = e;
        t->cap = cap;
    }
    struct ventry *x = &t->e[t->n];
    x->v = *v;
    x->v.key = strdup(v->key);
    x->v.version_id = strdup(v->version_id);
    x->seq = t->n;
    if (!x->v.key || !x->v.version_id) {
        free((char *)x->v.key);
        free((char *)x->v.version_id);
        return 1;
    }
    t->n++;
    return 0;
}

/* Key, then newest first: later LastModified, then earlier in the listing. */
static int cmp_entry(const void *a, const void *b)
{
    const struct ventry *x = a, *y = b;
    int c = strcmp(x->v.key, y->v.key);
    if (c) return c;
    if (x->v.mtime_ms != y->v.mtime_ms) return x->v.mtime_ms > y->v.mtime_ms ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void s3_vt_finish(struct s3_vt *t)
{
    if (t->done) return;
    t->done = true;
    if (t->n) qsort(t->e, t->n, sizeof *t->e, cmp_entry);
    t->starts = malloc((t->n + 1) * sizeof *t->starts);
    if (!t->starts) {
        t->nkeys = 0; /* out of memory: the table reads as empty; lookups find nothing */
        return;
    }
    for (size_t i = 0; i < t->n; i++)
        if (i == 0 || strcmp(t->e[i].v.key, t->e[i - 1].v.key) != 0) t->starts[t->nkeys++] = i;
    t->starts[t->nkeys] = t->n;
}

static bool find_key(const struct s3_vt *t, const char *key, size_t *idx)
{
    size_t lo = 0, hi = t->nkeys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->e[t->starts[mid]].v.key, key);
        if (c == 0) {
            *idx = mid;
            return true;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

const struct s3_version *s3_vt_at(const struct s3_vt *t, const char *key, int64_t ms)
{
    size_t k;
    if (!t->done || !find_key(t, key, &k)) return NULL;
    for (size_t i = t->starts[k]; i < t->starts[k + 1]; i++)
        if (t->e[i].v.mtime_ms <= ms) return t->e[i].v.marker ? NULL : &t->e[i].v;
    return NULL;
}

const struct s3_version *s3_vt_current(const struct s3_vt *t, const char *key)
{
    size_t k;
    if (!t->done || !find_key(t, key, &k)) return NULL;
    for (size_t i = t->starts[k]; i < t->starts[k + 1]; i++)
        if (t->e[i].v.latest) return t->e[i].v.marker ? NULL : &t->e[i].v;
    return NULL;
}

size_t s3_vt_keys(const struct s3_vt *t)
{
    return t->done ? t->nkeys : 0;
}

const char *s3_vt_key(const struct s3_vt *t, size_t i)
{
    return i < s3_vt_keys(t) ? t->e[t->starts[i]].v.key : NULL;
}

size_t s3_vt_entries(const struct s3_vt *t, size_t i)
{
    return i < s3_vt_keys(t) ? t->starts[i + 1] - t->starts[i] : 0;
}

const struct s3_version *s3_vt_entry(const struct s3_vt *t, size_t i, size_t j)
{
    return j < s3_vt_entries(t, i) ? &t->e[t->starts[i] + j].v : NULL;
}

int s3_vt_change(const struct s3_vt *t, const char *key, int64_t ms, const struct s3_version **v)
{
    const struct s3_version *at = s3_vt_at(t, key, ms), *cur = s3_vt_current(t, key);
    *v = at;
    if (at && (!cur || strcmp(cur->version_id, at->version_id) != 0)) return 1;
    if (!at && cur) return 2;
    return 0;
}
