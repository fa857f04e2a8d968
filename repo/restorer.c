/* restorer.c - restore a snapshot beneath a target directory without ever leaving it: the walk
 * of its trees (names, includes, directory descriptors, entries, hard links) on the calling
 * thread. File content and metadata are written by restorer_write.c (restorer_int.h). */
#include "repo/restorer.h"

#include "base/failpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "repo/crypt.h"
#include "repo/repo.h"
#include "repo/restorer_int.h"
#include "repo/tree.h"

/* A hostile repository can chain distinct trees arbitrarily deep; real trees are far shallower
 * than this, and PATH_MAX alone keeps ordinary tools well below it. */
#define MAX_DEPTH 4096
/* Directory descriptors the walk keeps open; deeper ones are closed and reopened (again with
 * O_NOFOLLOW from an ancestor) when needed, so depth does not exhaust RLIMIT_NOFILE. */
#define FD_BUDGET 64
/* Content bytes per job: a large file is split so that both cores restore it. */
#define JOB_BYTES (16u << 20)

#define DIR_OPEN_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

struct report_item {
    struct report_item *next;
    char *path;
    char msg[];
};

/* Hard-link groups: (dev, inode) of files with nlink > 1 -> where the first one went. */
struct hlink {
    struct hlink *next;
    uint64_t dev, ino;
    bool ok;   /* false: the first occurrence was refused, so later ones are refused too */
    char *rel; /* path of the first occurrence relative to the restore root */
};

struct include {
    char **comp; /* path components (patterns), "." and empty ones dropped */
    size_t n;
    bool matched;
    const char *text;
};

/* One directory on the walk's stack. */
struct level {
    struct oid id; /* its tree */
    struct tree tree;
    uint8_t *dup; /* per node: its name occurs twice in this tree (NULL: no duplicates) */
    size_t next;  /* next node to restore */
    int fd;       /* -1 while closed to stay within FD_BUDGET */
    char *name;   /* its name in the parent (NULL for the root) */
    size_t rel_len, disp_len;
    struct tree_node meta; /* metadata applied when its entries are done */
    bool has_meta, omit_atime;
    bool all_in;  /* everything below is selected by the includes */
    uint8_t *inc; /* per include: still matching along this path */
};

static double elapsed(const struct rs *rs)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - rs->start.tv_sec) + (now.tv_nsec - rs->start.tv_nsec) / 1e9;
}

/* ---- reports and progress (restorer_int.h) ---- */

void restore_report(struct rs *rs, const char *path, bool error, const char *fmt, ...)
{
    if (error) rs->errors++;
    if (!rs->o->report) return;
    char msg[ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = strlen(msg);
    struct report_item *it = malloc(sizeof *it + len + 1);
    if (!it) return;
    it->path = strdup(path ? path : "");
    if (!it->path) {
        free(it);
        return;
    }
    memcpy(it->msg, msg, len + 1);
    it->next = NULL;
    pthread_mutex_lock(&rs->lock);
    *rs->reports_tail = it;
    rs->reports_tail = &it->next;
    rs->n_reports++;
    pthread_mutex_unlock(&rs->lock);
}

static void drain_reports(struct rs *rs)
{
    if (!rs->n_reports) return;
    pthread_mutex_lock(&rs->lock);
    struct report_item *list = rs->reports;
    rs->reports = NULL;
    rs->reports_tail = &rs->reports;
    rs->n_reports = 0;
    pthread_mutex_unlock(&rs->lock);
    while (list) {
        struct report_item *next = list->next;
        rs->o->report(rs->o->ctx, list->path, list->msg);
        free(list->path);
        free(list);
        list = next;
    }
}

static void fill_progress(struct rs *rs, struct restore_progress *p)
{
    p->files_done = rs->entries_done;
    p->files_total = rs->entries_total;
    p->bytes_done = rs->bytes_done;
    p->bytes_total = rs->bytes_total;
    p->errors = rs->errors;
    p->elapsed = elapsed(rs);
}

/* Called from the restoring thread only: delivers reports and, every PROGRESS_NS, progress. */
void restore_tick(struct rs *rs, bool force)
{
    drain_reports(rs);
    if (!rs->o->progress) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns =
        (now.tv_sec - rs->last_tick.tv_sec) * 1000000000LL + (now.tv_nsec - rs->last_tick.tv_nsec);
    if (!force && ns < PROGRESS_NS) return;
    rs->last_tick = now;
    struct restore_progress p;
    fill_progress(rs, &p);
    rs->o->progress(rs->o->ctx, &p);
}

/* ---- names and paths ---- */

/* Why a name may not be created in a directory, or NULL when it may. */
static const char *name_problem(const uint8_t *name, size_t len)
{
    if (len == 0) return "empty name";
    if (len == 1 && name[0] == '.') return "name \".\"";
    if (len == 2 && name[0] == '.' && name[1] == '.') return "name \"..\"";
    if (memchr(name, '/', len)) return "name contains '/'";
    if (memchr(name, '\0', len)) return "name contains a NUL byte";
    return NULL;
}

/* Appends a name for display: bytes a terminal would misread (controls, '\\', and the '/' that
 * a hostile name may hold) are written as \xNN, so a report shows exactly what the tree says. */
static int put_display_name(struct buf *b, const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t c = name[i];
        if (c < 0x20 || c == 0x7f || c == '\\' || c == '/') {
            char esc[5];
            snprintf(esc, sizeof esc, "\\x%02x", c);
            if (buf_append(b, esc, 4) < 0) return -1;
        } else if (buf_put_u8(b, c) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Keeps a NUL after the bytes in use so that data is a C string. */
static int terminate(struct buf *b)
{
    if (buf_put_u8(b, 0) < 0) return -1;
    b->len--;
    return 0;
}

/* Sets rel and disp to the path of `name` inside level L. Invalid names get a display path
 * too (so they can be reported); rel is only used for valid ones. */
static int set_paths(struct rs *rs, const struct level *L, const uint8_t *name, size_t len)
{
    rs->rel.len = L->rel_len;
    rs->disp.len = L->disp_len;
    if (rs->rel.len && buf_put_u8(&rs->rel, '/') < 0) return -1;
    if (buf_append(&rs->rel, name, len) < 0 || terminate(&rs->rel) < 0) return -1;
    if (buf_put_u8(&rs->disp, '/') < 0 || put_display_name(&rs->disp, name, len) < 0 ||
        terminate(&rs->disp) < 0)
        return -1;
    return 0;
}

static char *dup_name(const uint8_t *name, size_t len)
{
    char *s = malloc(len + 1);
    if (!s) return NULL;
    memcpy(s, name, len);
    s[len] = 0;
    return s;
}

static int cmp_names(const void *a, const void *b, void *ctx)
{
    const struct tree_node *nodes = ctx;
    const struct tree_node *x = &nodes[*(const size_t *)a], *y = &nodes[*(const size_t *)b];
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = n ? memcmp(x->name, y->name, n) : 0;
    if (c) return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* Marks every node whose name occurs more than once. *dup stays NULL when there are none (the
 * usual case: the encoder writes strictly increasing names, which is checked first). */
static int find_duplicates(const struct tree *t, uint8_t **dup)
{
    *dup = NULL;
    bool sorted = true;
    for (size_t i = 1; i < t->n && sorted; i++) {
        size_t order[2] = {i - 1, i};
        sorted = cmp_names(&order[0], &order[1], t->nodes) < 0;
    }
    if (sorted) return 0;
    size_t *order = malloc(t->n * sizeof *order);
    if (!order) return -1;
    for (size_t i = 0; i < t->n; i++)
        order[i] = i;
    qsort_r(order, t->n, sizeof *order, cmp_names, t->nodes);
    uint8_t *d = NULL;
    for (size_t i = 1; i < t->n; i++) {
        if (cmp_names(&order[i - 1], &order[i], t->nodes) != 0) continue;
        if (!d && !(d = calloc(t->n, 1))) {
            free(order);
            return -1;
        }
        d[order[i - 1]] = d[order[i]] = 1;
    }
    free(order);
    *dup = d;
    return 0;
}

/* ---- includes ---- */

static void free_includes(struct rs *rs)
{
    for (size_t i = 0; i < rs->n_inc; i++) {
        for (size_t j = 0; j < rs->inc[i].n; j++)
            free(rs->inc[i].comp[j]);
        free(rs->inc[i].comp);
    }
    free(rs->inc);
}

/* Splits each include into components. An include may also spell the backed-up directory's
 * own path (e.g. "/data/x" for a backup of /data), since that is what users see in `snapshots`. */
static int parse_includes(struct rs *rs, struct err *e)
{
    const struct restore_options *o = rs->o;
    if (!o->includes || !o->n_includes) return 0;
    rs->inc = calloc(o->n_includes, sizeof *rs->inc);
    if (!rs->inc) return err_set(e, ERR_FAIL, "out of memory");
    rs->n_inc = o->n_includes;
    const char *base = NULL;
    if (!o->subpath && rs->snap->root.present && rs->snap->n_paths == 1 &&
        strcmp(rs->snap->paths[0], "/") != 0)
        base = rs->snap->paths[0];
    for (size_t i = 0; i < o->n_includes; i++) {
        const char *p = o->includes[i];
        struct include *in = &rs->inc[i];
        in->text = p;
        size_t bl = base ? strlen(base) : 0;
        if (base && strncmp(p, base, bl) == 0 && (p[bl] == '/' || p[bl] == 0)) p += bl;
        size_t cap = 1;
        for (const char *c = p; *c; c++)
            cap += *c == '/';
        in->comp = calloc(cap, sizeof *in->comp);
        if (!in->comp) return err_set(e, ERR_FAIL, "out of memory");
        while (*p) {
            const char *slash = strchr(p, '/');
            size_t len = slash ? (size_t)(slash - p) : strlen(p);
            if (len == 2 && p[0] == '.' && p[1] == '.')
                return err_set(e, ERR_FAIL, "include \"%s\": \"..\" is not allowed", in->text);
            if (len && !(len == 1 && p[0] == '.')) {
                if (!(in->comp[in->n] = dup_name((const uint8_t *)p, len)))
                    return err_set(e, ERR_FAIL, "out of memory");
                in->n++;
            }
            p += len + (slash != NULL);
        }
    }
    return 0;
}

static bool component_matches(const char *pattern, const char *name)
{
    return strcmp(pattern, name) == 0 || fnmatch(pattern, name, 0) == 0;
}

/* Whether a node named `name` in the directory at stack index pi (whose entries are path
 * component number pi) is selected; fills child_inc (one byte per include, what still matches
 * below it) and *all_in (everything below is selected). */
static bool selected(struct rs *rs, size_t pi, const char *name, bool is_dir, uint8_t *child_inc,
                     bool *all_in)
{
    const struct level *P = &rs->stack[pi];
    *all_in = true;
    if (!rs->n_inc || P->all_in) return true;
    *all_in = false;
    bool partial = false;
    for (size_t j = 0; j < rs->n_inc; j++) {
        struct include *in = &rs->inc[j];
        if (child_inc) child_inc[j] = 0;
        if (!P->inc[j] || pi >= in->n || !component_matches(in->comp[pi], name)) continue;
        if (pi + 1 == in->n) {
            in->matched = true;
            *all_in = true;
        } else {
            partial = true;
            if (child_inc) child_inc[j] = 1;
        }
    }
    return *all_in || (partial && is_dir);
}

/* ---- directory descriptors ---- */

static void close_level_fd(struct rs *rs, struct level *L)
{
    if (L->fd >= 0 && L != &rs->stack[0]) {
        close(L->fd);
        L->fd = -1;
        rs->open_fds--;
    }
}

/* Keeps the walk within FD_BUDGET by closing the shallowest descriptors (never the root's, nor
 * the two deepest, which are in use). */
static void trim_fds(struct rs *rs)
{
    for (size_t k = 1; rs->open_fds > FD_BUDGET && k + 2 < rs->depth; k++)
        close_level_fd(rs, &rs->stack[k]);
}

/* Makes sure level i's descriptor is open, reopening closed ones from the nearest open ancestor
 * by name, each with O_NOFOLLOW. */
static int level_fd(struct rs *rs, size_t i)
{
    if (rs->stack[i].fd >= 0) return rs->stack[i].fd;
    size_t j = i;
    while (rs->stack[j].fd < 0)
        j--;
    for (size_t k = j + 1; k <= i; k++) {
        int fd = openat(rs->stack[k - 1].fd, rs->stack[k].name, DIR_OPEN_FLAGS);
        if (fd < 0) return -errno;
        rs->stack[k].fd = fd;
        rs->open_fds++;
    }
    trim_fds(rs);
    return rs->stack[i].fd;
}

/* Opens the directory holding `rel` (a path below the restore root written by this restore),
 * component by component with O_NOFOLLOW; *last points at the final name. */
int restore_open_parent(struct rs *rs, const char *rel, const char **last)
{
    int fd = dup(rs->rootfd);
    if (fd < 0) return -errno;
    const char *p = rel;
    for (const char *slash; (slash = strchr(p, '/')); p = slash + 1) {
        char name[NAME_MAX + 1];
        size_t len = (size_t)(slash - p);
        if (len > NAME_MAX) {
            close(fd);
            return -ENAMETOOLONG;
        }
        memcpy(name, p, len);
        name[len] = 0;
        int next = openat(fd, name, DIR_OPEN_FLAGS);
        int saved = errno;
        close(fd);
        if (next < 0) return -saved;
        fd = next;
    }
    *last = p;
    return fd;
}

/* ---- entries (the walking thread) ---- */

/* An entry is in the way of one we are about to create. Returns 1 to keep it (overwrite
 * policy), 0 once it was removed (create again), -1 when it stays in the way (reported). */
static int make_room(struct rs *rs, int dirfd, const char *name, const struct tree_node *n)
{
    const char *disp = (const char *)rs->disp.data;
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) return 0;
        restore_report(rs, disp, true, "%s", strerror(errno));
        return -1;
    }
    enum restore_overwrite pol = rs->o->overwrite;
    bool same = false;
    if (pol == RESTORE_OVERWRITE_IF_CHANGED) {
        switch (n->type) {
        case TREE_FILE:
            same = S_ISREG(st.st_mode) && (uint64_t)st.st_size == n->size &&
                   st.st_mtim.tv_sec == n->mtime_sec && st.st_mtim.tv_nsec == n->mtime_nsec;
            break;
        case TREE_SYMLINK:
            if (S_ISLNK(st.st_mode) && (uint64_t)st.st_size == n->link_len) {
                char *t = malloc(n->link_len + 1);
                same = t && readlinkat(dirfd, name, t, n->link_len + 1) == (ssize_t)n->link_len &&
                       memcmp(t, n->link_target, n->link_len) == 0;
                free(t);
            }
            break;
        case TREE_FIFO:
            same = S_ISFIFO(st.st_mode);
            break;
        case TREE_CHARDEV:
            same = S_ISCHR(st.st_mode) && st.st_rdev == n->rdev;
            break;
        case TREE_BLOCKDEV:
            same = S_ISBLK(st.st_mode) && st.st_rdev == n->rdev;
            break;
        }
    }
    if (pol == RESTORE_OVERWRITE_NEVER || same) {
        rs->skipped++;
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        restore_report(rs, disp, true, "not restored: a directory is in the way");
        return -1;
    }
    if (unlinkat(dirfd, name, 0) < 0) {
        restore_report(rs, disp, true, "removing the existing entry: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* How to create one entry in a directory (never following an existing name). */
struct make {
    enum { MAKE_FILE, MAKE_SYMLINK, MAKE_NODE, MAKE_LINK } kind;
    const char *target; /* MAKE_SYMLINK: the link's content */
    mode_t mode;        /* MAKE_NODE: type and permissions */
    dev_t rdev;         /* MAKE_NODE */
    int odirfd;         /* MAKE_LINK: the existing file, by directory and name */
    const char *oname;
    int fd; /* out, MAKE_FILE: the new file, open for writing */
};

static int make_entry(struct make *m, int dirfd, const char *name)
{
    switch (m->kind) {
    case MAKE_FILE:
        m->fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        return m->fd < 0 ? -1 : 0;
    case MAKE_SYMLINK:
        return symlinkat(m->target, dirfd, name);
    case MAKE_NODE:
        return mknodat(dirfd, name, m->mode, m->rdev);
    case MAKE_LINK:
        return linkat(m->odirfd, m->oname, dirfd, name, 0);
    }
    return -1;
}

/* Creates an entry; when the name is taken, the overwrite policy decides once whether it is
 * kept or removed for a second try. Returns 0 when created, 1 when an existing entry was kept,
 * -1 when it failed (reported as "<what>: <error>"). */
static int create_entry(struct rs *rs, int dirfd, const char *name, const struct tree_node *n,
                        struct make *m, const char *what)
{
    for (int attempt = 0;; attempt++) {
        if (make_entry(m, dirfd, name) == 0) return 0;
        if (errno != EEXIST || attempt) {
            restore_report(rs, (const char *)rs->disp.data, true, "%s: %s", what, strerror(errno));
            return -1;
        }
        int room = make_room(rs, dirfd, name, n);
        if (room != 0) return room;
    }
}

static struct hlink **hl_slot(struct rs *rs, uint64_t dev, uint64_t ino)
{
    uint64_t h = (dev * 0x9e3779b97f4a7c15ULL) ^ (ino * 0xc2b2ae3d27d4eb4fULL);
    struct hlink **p = &rs->hl[(h >> 17) % rs->hl_buckets];
    while (*p && !((*p)->dev == dev && (*p)->ino == ino))
        p = &(*p)->next;
    return p;
}

static bool is_hardlinked(const struct tree_node *n)
{
    return n->type == TREE_FILE && n->nlink > 1;
}

/* Records where a hard-link group's first member went (rel NULL: it was refused). */
static int hl_add(struct rs *rs, const struct tree_node *n, const char *rel)
{
    if (rs->hl_n >= rs->hl_buckets) {
        size_t nb = rs->hl_buckets ? rs->hl_buckets * 2 : 256;
        struct hlink **t = calloc(nb, sizeof *t);
        if (!t) return -1;
        struct hlink **old = rs->hl;
        size_t ob = rs->hl_buckets;
        rs->hl = t;
        rs->hl_buckets = nb;
        for (size_t i = 0; i < ob; i++) {
            for (struct hlink *h = old[i], *next; h; h = next) {
                next = h->next;
                struct hlink **s = hl_slot(rs, h->dev, h->ino);
                h->next = NULL;
                *s = h;
            }
        }
        free(old);
    }
    struct hlink *h = calloc(1, sizeof *h);
    if (!h || (rel && !(h->rel = strdup(rel)))) {
        free(h);
        return -1;
    }
    h->dev = n->dev;
    h->ino = n->inode;
    h->ok = rel != NULL;
    *hl_slot(rs, h->dev, h->ino) = h;
    rs->hl_n++;
    return 0;
}

/* Records a file's outcome when it is the first member of a hard-link group. */
static int hl_first(struct rs *rs, const struct tree_node *n, const char *rel)
{
    return is_hardlinked(n) ? hl_add(rs, n, rel) : 0;
}

static struct hlink *hl_find(struct rs *rs, const struct tree_node *n)
{
    return rs->hl_buckets ? *hl_slot(rs, n->dev, n->inode) : NULL;
}

/* A refused entry: reported, counted, and if it starts a hard-link group, the group is marked
 * so that its later members are refused too (they would otherwise resurrect it). */
static int refuse(struct rs *rs, const struct tree_node *n, const char *why)
{
    restore_report(rs, (const char *)rs->disp.data, true, "refused: %s", why);
    if (is_hardlinked(n) && !hl_find(rs, n)) return hl_add(rs, n, NULL);
    return 0;
}

static int restore_hardlink(struct rs *rs, int dirfd, const char *name, const struct tree_node *n,
                            const struct hlink *h)
{
    const char *disp = (const char *)rs->disp.data;
    if (!h->ok) {
        restore_report(rs, disp, true, "refused: hard link to an entry that was not restored");
        return 0;
    }
    char what[64 + PATH_MAX];
    snprintf(what, sizeof what, "hard link to /%s", h->rel);
    struct make m = {.kind = MAKE_LINK};
    m.odirfd = restore_open_parent(rs, h->rel, &m.oname);
    if (m.odirfd < 0) {
        restore_report(rs, disp, true, "%s: %s", what, strerror(-m.odirfd));
        return 0;
    }
    if (create_entry(rs, dirfd, name, n, &m, what) == 0) rs->files++;
    close(m.odirfd);
    return 0;
}

/* Creates a regular file and queues its content; the node is moved into the job, and *queued
 * tells that the file is finished (and counted as done) by whoever completes its last job. */
static int restore_file(struct rs *rs, int dirfd, const char *name, struct tree_node *n,
                        bool *queued)
{
    const char *disp = (const char *)rs->disp.data;
    if (is_hardlinked(n)) {
        struct hlink *h = hl_find(rs, n);
        if (h) return restore_hardlink(rs, dirfd, name, n, h);
    }
    uint64_t end = 0, data = 0;
    for (size_t i = 0; i < n->n_content; i++) {
        const struct tree_extent *x = &n->content[i];
        if (x->len > (uint64_t)INT64_MAX - end)
            return refuse(rs, n, "content longer than the largest possible file");
        end += x->len;
        if (!x->hole) data += x->len;
    }
    if (n->size > (uint64_t)INT64_MAX) return refuse(rs, n, "file size too large");
    const char *rel = (const char *)rs->rel.data;
    struct make m = {.kind = MAKE_FILE};
    int made = create_entry(rs, dirfd, name, n, &m, "creating");
    if (made != 0) return hl_first(rs, n, made == 1 ? rel : NULL);
    int fd = m.fd;
    if (hl_first(rs, n, rel) < 0) {
        close(fd);
        return -1;
    }
    struct rfile *f = calloc(1, sizeof *f);
    if (!f || !(f->disp = strdup(disp)) || !(f->rel = strdup(rel))) {
        if (f) free(f->disp);
        free(f);
        close(fd);
        return -1;
    }
    f->fd = fd;
    f->length = end > n->size ? end : n->size;
    bool ends_in_hole = n->n_content && n->content[n->n_content - 1].hole;
    f->set_length = f->length > end || ends_in_hole || (rs->o->sparse && data);
    f->node = *n;
    memset(n, 0, sizeof *n);
    atomic_init(&f->refs, 1); /* ours, until every job is queued */
    rs->bytes_total += data;
    *queued = true;

    struct job j = {.f = f};
    uint64_t off = 0, chunk = 0;
    for (size_t i = 0; i < f->node.n_content; i++) {
        const struct tree_extent *x = &f->node.content[i];
        if (!j.count) {
            j.first = i;
            j.off = off;
        }
        j.count++;
        off += x->len;
        if (!x->hole) chunk += x->len;
        bool last = i + 1 == f->node.n_content;
        if (chunk && (chunk >= JOB_BYTES || last)) {
            atomic_fetch_add(&f->refs, 1);
            restore_push_job(rs, &j);
            j.count = 0;
            chunk = 0;
        } else if (!chunk) {
            j.count = 0; /* only holes so far: nothing to write */
        }
    }
    restore_release_file(rs, f);
    return 0;
}

static int restore_symlink(struct rs *rs, int dirfd, const char *name, const struct tree_node *n)
{
    const char *disp = (const char *)rs->disp.data;
    if (n->link_len && memchr(n->link_target, 0, n->link_len))
        return refuse(rs, n, "link target contains NUL");
    /* The target is written verbatim: it is content, never resolved by the restore. */
    struct make m = {.kind = MAKE_SYMLINK};
    char *target = dup_name(n->link_target ? n->link_target : (const uint8_t *)"", n->link_len);
    if (!(m.target = target)) return -1;
    if (create_entry(rs, dirfd, name, n, &m, "creating symlink") == 0) {
        struct meta_at at = {.fd = -1, .dirfd = dirfd, .name = name, .symlink = true};
        restore_apply_meta(rs, n, &at, disp);
        rs->links++;
    }
    free(target);
    return 0;
}

static int restore_special(struct rs *rs, int dirfd, const char *name, const struct tree_node *n)
{
    const char *disp = (const char *)rs->disp.data;
    mode_t type = n->type == TREE_FIFO ? S_IFIFO : n->type == TREE_CHARDEV ? S_IFCHR : S_IFBLK;
    if (type != S_IFIFO && !rs->is_root) {
        restore_report(rs, disp, true, "device node not restored: only root may create it");
        return 0;
    }
    struct make m = {.kind = MAKE_NODE, .mode = type | 0600};
    m.rdev = type == S_IFIFO ? 0 : (dev_t)n->rdev;
    if (create_entry(rs, dirfd, name, n, &m, "creating") == 0) {
        struct meta_at at = {.fd = -1, .dirfd = dirfd, .name = name};
        restore_apply_meta(rs, n, &at, disp);
        rs->specials++;
    }
    return 0;
}

/* Loads and decodes a tree blob. */
static int load_tree(struct repo *r, const struct oid *id, struct tree *t, struct err *e)
{
    struct buf b = BUF_INIT;
    int rc = repo_load_blob(r, BLOB_TREE, id, &b, e);
    if (rc == 0) rc = tree_decode(b.data, b.len, t, e);
    buf_free(&b);
    if (rc < 0) {
        char hex[OID_HEX_LEN + 1];
        tree_free(t);
        return err_wrap(e, "tree %s", oid_hex(id, hex));
    }
    return 0;
}

static void free_level(struct level *L)
{
    tree_free(&L->tree);
    tree_node_free(&L->meta);
    free(L->dup);
    free(L->name);
    free(L->inc);
}

/* Pushes a level whose tree is `t` and whose directory is open at `fd`; both are taken on
 * success and left to the caller on failure. */
static int push_level(struct rs *rs, const struct oid *id, struct tree *t, int fd, const char *name)
{
    if (rs->depth == rs->stack_cap) {
        size_t cap = rs->stack_cap ? rs->stack_cap * 2 : 16;
        struct level *s = realloc(rs->stack, cap * sizeof *s);
        if (!s) return -1;
        rs->stack = s;
        rs->stack_cap = cap;
    }
    struct level L = {.id = *id, .fd = fd};
    L.rel_len = rs->rel.len;
    L.disp_len = rs->disp.len;
    if ((name && !(L.name = strdup(name))) || (rs->n_inc && !(L.inc = calloc(rs->n_inc, 1))) ||
        find_duplicates(t, &L.dup) < 0) {
        free(L.name);
        free(L.inc);
        return -1;
    }
    L.tree = *t;
    memset(t, 0, sizeof *t);
    rs->stack[rs->depth++] = L;
    if (rs->depth > 1) {
        rs->open_fds++;
        trim_fds(rs);
    }
    return 0;
}

/* All entries of the top level are done: apply its metadata and pop it. */
static void pop_level(struct rs *rs)
{
    size_t i = rs->depth - 1;
    struct level *L = &rs->stack[i];
    rs->disp.len = L->disp_len;
    terminate(&rs->disp);
    const char *disp = L->disp_len ? (const char *)rs->disp.data : "/";
    if (L->has_meta) {
        int fd = restore_canceled(rs) ? -1 : level_fd(rs, i);
        if (fd >= 0) {
            struct meta_at at = {.fd = fd, .omit_atime = L->omit_atime};
            restore_apply_meta(rs, &L->meta, &at, disp);
        } else if (!restore_canceled(rs)) {
            restore_report(rs, disp, true, "reopening to set metadata: %s", strerror(-fd));
        }
    }
    if (i > 0) rs->dirs++; /* not the target itself */
    close_level_fd(rs, L);
    free_level(L);
    rs->depth--;
}

static int restore_dir(struct rs *rs, size_t pi, const char *name, struct tree_node *n,
                       const uint8_t *child_inc, bool all_in)
{
    const char *disp = (const char *)rs->disp.data;
    if (rs->depth >= MAX_DEPTH) return refuse(rs, n, "directories nested too deeply");
    for (size_t k = 0; k < rs->depth; k++) {
        if (oid_eq(&rs->stack[k].id, &n->subtree))
            return refuse(rs, n, "directory contains itself (tree cycle)");
    }
    struct tree t = TREE_INIT;
    struct err e;
    err_clear(&e);
    if (load_tree(rs->r, &n->subtree, &t, &e) < 0) {
        restore_report(rs, disp, true, "not restored: %s", e.msg);
        return 0;
    }
    int pfd = level_fd(rs, pi);
    if (pfd < 0) {
        restore_report(rs, disp, true, "reopening parent: %s", strerror(-pfd));
        tree_free(&t);
        return 0;
    }
    if (fp_mkdirat(pfd, name, 0700) < 0 && errno != EEXIST) {
        restore_report(rs, disp, true, "creating directory: %s", strerror(errno));
        tree_free(&t);
        return 0;
    }
    int fd = openat(pfd, name, DIR_OPEN_FLAGS);
    if (fd < 0) {
        int err = errno;
        if (err == ELOOP || err == ENOTDIR)
            restore_report(rs, disp, true, "refused: a symlink or non-directory is in the way");
        else
            restore_report(rs, disp, true, "opening directory: %s", strerror(err));
        tree_free(&t);
        return 0;
    }
    if (push_level(rs, &n->subtree, &t, fd, name) < 0) {
        close(fd);
        tree_free(&t);
        return -1;
    }
    struct level *L = &rs->stack[rs->depth - 1];
    L->meta = *n;
    memset(n, 0, sizeof *n);
    L->has_meta = true;
    L->all_in = all_in;
    if (L->inc) memcpy(L->inc, child_inc, rs->n_inc);
    return 0;
}

/* Restores the next entry of the top level. Returns -1 only when the restore cannot go on. */
static int restore_next(struct rs *rs, uint8_t *child_inc)
{
    size_t pi = rs->depth - 1;
    struct level *P = &rs->stack[pi];
    size_t idx = P->next++;
    struct tree_node *n = &P->tree.nodes[idx];
    bool dup = P->dup && P->dup[idx];
    if (set_paths(rs, P, n->name, n->name_len) < 0) return -1;

    const char *why = name_problem(n->name, n->name_len);
    if (why) return refuse(rs, n, why);
    const char *name = (const char *)rs->rel.data + (rs->rel.len - n->name_len);
    bool all_in;
    if (!selected(rs, pi, name, n->type == TREE_DIR, child_inc, &all_in)) return 0;
    if (dup) return refuse(rs, n, "the name occurs more than once in its directory");

    if (n->type == TREE_DIR) return restore_dir(rs, pi, name, n, child_inc, all_in);
    rs->entries_total++;
    bool queued = false;
    int rc = 0, dirfd;
    if (n->type == TREE_SOCKET) {
        restore_report(rs, (const char *)rs->disp.data, false, "socket not restored");
    } else if ((dirfd = level_fd(rs, pi)) < 0) {
        restore_report(rs, (const char *)rs->disp.data, true, "reopening parent: %s",
                       strerror(-dirfd));
    } else {
        switch (n->type) {
        case TREE_FILE:
            rc = restore_file(rs, dirfd, name, n, &queued);
            break;
        case TREE_SYMLINK:
            rc = restore_symlink(rs, dirfd, name, n);
            break;
        case TREE_FIFO:
        case TREE_CHARDEV:
        case TREE_BLOCKDEV:
            rc = restore_special(rs, dirfd, name, n);
            break;
        default: {
            char why_type[48];
            snprintf(why_type, sizeof why_type, "unknown entry type %u", n->type);
            rc = refuse(rs, n, why_type);
        }
        }
    }
    if (!queued) rs->entries_done++;
    return rc;
}

static int walk(struct rs *rs)
{
    uint8_t *child_inc = rs->n_inc ? calloc(rs->n_inc, 1) : NULL;
    if (rs->n_inc && !child_inc) return -1;
    int rc = 0;
    while (rs->depth && rc == 0) {
        restore_tick(rs, false);
        if (restore_canceled(rs)) break;
        struct level *L = &rs->stack[rs->depth - 1];
        if (L->next == L->tree.n)
            pop_level(rs);
        else
            rc = restore_next(rs, child_inc);
    }
    free(child_inc);
    return rc;
}

/* Finds the directory named by o->subpath: its tree becomes the restore root. */
static int resolve_subpath(struct rs *rs, struct tree *t, struct oid *id, struct tree_node *meta,
                           bool *found_dir, struct err *e)
{
    const char *p = rs->o->subpath;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        const char *comp = p;
        p += len + (slash != NULL);
        if (!len || (len == 1 && comp[0] == '.')) continue;
        if (len == 2 && comp[0] == '.' && comp[1] == '.')
            return err_set(e, ERR_FAIL, "path \"%s\": \"..\" is not allowed", rs->o->subpath);
        struct tree_node *found = NULL;
        for (size_t i = 0; i < t->n; i++) {
            struct tree_node *n = &t->nodes[i];
            if (n->name_len != len || memcmp(n->name, comp, len) != 0) continue;
            if (found)
                return err_set(e, ERR_FAIL, "path \"%s\": \"%.*s\" occurs twice in its directory",
                               rs->o->subpath, (int)len, comp);
            found = n;
        }
        if (!found)
            return err_set(e, ERR_NOT_FOUND, "path \"%s\": no \"%.*s\" in the snapshot",
                           rs->o->subpath, (int)len, comp);
        if (found->type != TREE_DIR)
            return err_set(e, ERR_FAIL, "path \"%s\": \"%.*s\" is not a directory", rs->o->subpath,
                           (int)len, comp);
        tree_node_free(meta);
        *meta = *found;
        memset(found, 0, sizeof *found);
        *found_dir = true;
        *id = meta->subtree;
        tree_free(t);
        if (load_tree(rs->r, id, t, e) < 0) return e->code;
    }
    return 0;
}

/* Opens (creating as needed, like mkdir -p) the target directory, which the user named. */
static int open_target(const char *target, struct err *e)
{
    int fd = open(target, DIR_OPEN_FLAGS & ~O_NOFOLLOW);
    if (fd >= 0) return fd;
    if (errno != ENOENT) return err_sys(e, errno, "target %s", target);
    char *p = strdup(target);
    if (!p) return err_set(e, ERR_FAIL, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            int rc = err_sys(e, errno, "creating target %s", p);
            free(p);
            return rc;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    fd = open(target, DIR_OPEN_FLAGS & ~O_NOFOLLOW);
    if (fd < 0) return err_sys(e, errno, "target %s", target);
    return fd;
}

static void cleanup(struct rs *rs)
{
    while (rs->depth) {
        struct level *L = &rs->stack[--rs->depth];
        close_level_fd(rs, L);
        free_level(L);
    }
    free(rs->stack);
    for (size_t i = 0; i < rs->hl_buckets; i++) {
        for (struct hlink *h = rs->hl[i], *next; h; h = next) {
            next = h->next;
            free(h->rel);
            free(h);
        }
    }
    free(rs->hl);
    for (size_t i = 0; i < rs->n_users; i++)
        free(rs->users[i].name);
    for (size_t i = 0; i < rs->n_groups; i++)
        free(rs->groups[i].name);
    free_includes(rs);
    buf_free(&rs->rel);
    buf_free(&rs->disp);
    free(rs->q);
    free(rs->threads);
    pthread_cond_destroy(&rs->not_empty);
    pthread_cond_destroy(&rs->not_full);
    pthread_cond_destroy(&rs->idle);
    pthread_mutex_destroy(&rs->lock);
    pthread_mutex_destroy(&rs->owner_lock);
}

static int init_sync(struct rs *rs)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca)) return -1;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&rs->lock, NULL);
    pthread_mutex_init(&rs->owner_lock, NULL);
    pthread_cond_init(&rs->not_empty, &ca);
    pthread_cond_init(&rs->not_full, &ca);
    pthread_cond_init(&rs->idle, &ca);
    pthread_condattr_destroy(&ca);
    rs->reports_tail = &rs->reports;
    return 0;
}

/* Sets up the root level: the snapshot's root tree (or the subpath's), applied to the target. */
static int push_root(struct rs *rs, int fd, struct err *e)
{
    struct tree t = TREE_INIT;
    struct tree_node meta = {0};
    bool sub = false; /* restoring a directory below the snapshot's root */
    struct oid id = rs->snap->tree;
    int rc = load_tree(rs->r, &id, &t, e);
    if (rc == 0 && rs->o->subpath) rc = resolve_subpath(rs, &t, &id, &meta, &sub, e);
    if (rc == 0 && (terminate(&rs->rel) < 0 || terminate(&rs->disp) < 0 ||
                    push_level(rs, &id, &t, fd, NULL) < 0))
        rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc < 0) {
        tree_free(&t);
        tree_node_free(&meta);
        return rc;
    }
    struct level *L = &rs->stack[0];
    L->all_in = rs->n_inc == 0;
    for (size_t j = 0; j < rs->n_inc; j++) {
        L->inc[j] = 1;
        if (rs->inc[j].n == 0) {
            L->all_in = true;
            rs->inc[j].matched = true;
        }
    }
    if (sub) {
        L->meta = meta;
        L->has_meta = true;
    } else if (rs->snap->root.present) {
        const struct snap_root *sr = &rs->snap->root;
        L->meta.mode = sr->mode;
        L->meta.uid = sr->uid;
        L->meta.gid = sr->gid;
        L->meta.mtime_sec = sr->mtime_sec;
        L->meta.mtime_nsec = sr->mtime_nsec;
        L->has_meta = L->omit_atime = true;
    }
    return 0;
}

int restore_snapshot(struct repo *r, const struct snapshot *s, const struct restore_options *o,
                     struct restore_summary *summary, struct err *e)
{
    if (summary) memset(summary, 0, sizeof *summary);
    if (!o || !o->target || !*o->target) return err_set(e, ERR_FAIL, "restore: no target given");
    struct rs rs_store = {0}, *rs = &rs_store;
    rs->r = r;
    rs->snap = s;
    rs->o = o;
    rs->is_root = geteuid() == 0;
    rs->rootfd = -1;
    clock_gettime(CLOCK_MONOTONIC, &rs->start);
    rs->last_tick = rs->start;
    if (init_sync(rs) < 0) return err_set(e, ERR_FAIL, "out of memory");

    int rc = repo_load_index(r, e);
    if (rc == 0) rc = parse_includes(rs, e);
    if (rc == 0) {
        rs->rootfd = open_target(o->target, e);
        rc = rs->rootfd < 0 ? rs->rootfd : 0;
    }
    if (rc == 0 && (rc = push_root(rs, rs->rootfd, e)) < 0) err_wrap(e, "restoring snapshot");
    if (rc == 0) rc = restore_start_workers(rs, e);
    if (rc == 0 && walk(rs) < 0) rc = err_set(e, ERR_FAIL, "restore: out of memory");
    restore_stop_workers(rs);
    repo_prefetch_end(r);
    if (rc == 0 && restore_canceled(rs)) rc = err_set(e, ERR_CANCELED, "restore canceled");
    if (rc == 0) {
        for (size_t j = 0; j < rs->n_inc; j++) {
            if (!rs->inc[j].matched)
                restore_report(rs, rs->inc[j].text, false,
                               "include matched nothing in the snapshot");
        }
    }
    restore_tick(rs, true);
    if (summary) {
        summary->files = rs->files;
        summary->dirs = rs->dirs;
        summary->links = rs->links;
        summary->specials = rs->specials;
        summary->bytes = rs->bytes;
        summary->skipped = rs->skipped;
        summary->errors = rs->errors;
        summary->duration = elapsed(rs);
    }
    cleanup(rs);
    if (rs->rootfd >= 0) close(rs->rootfd);
    return rc;
}
