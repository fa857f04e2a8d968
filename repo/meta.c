/* meta.c - an entry's metadata for its tree node: stat(2) fields, owner names, extended
 * attributes; see meta.h. */
#include "repo/meta.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define XATTR_LIST_MAX_TRIES 8

struct meta_idname {
    uint32_t id;
    char *name; /* NULL when the id has no name */
};

static int oom(struct err *e)
{
    return err_set(e, ERR_FAIL, "out of memory");
}

void meta_idcache_free(struct meta_idcache *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].name);
    free(c->v);
    memset(c, 0, sizeof *c);
}

/* The user (or group) name of an id, looked up once per id; *out is NULL for unknown ids. */
int meta_idcache_get(struct meta_idcache *c, uint32_t id, bool group, const char **out,
                     struct err *e)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i].id == id) {
            *out = c->v[i].name;
            return 0;
        }
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct meta_idname *v = realloc(c->v, cap * sizeof *v);
        if (!v) return oom(e);
        c->v = v;
        c->cap = cap;
    }
    char *name = NULL;
    for (size_t size = 4096; size <= (1u << 20); size *= 4) {
        char *tmp = malloc(size);
        if (!tmp) return oom(e);
        int rc;
        const char *found = NULL;
        if (group) {
            struct group gr, *res = NULL;
            rc = getgrgid_r(id, &gr, tmp, size, &res);
            if (rc == 0 && res) found = res->gr_name;
        } else {
            struct passwd pw, *res = NULL;
            rc = getpwuid_r(id, &pw, tmp, size, &res);
            if (rc == 0 && res) found = res->pw_name;
        }
        if (found && strlen(found) > TREE_MAX_OWNER) found = NULL; /* trees cannot hold it */
        if (found && !(name = strdup(found))) {
            free(tmp);
            return oom(e);
        }
        free(tmp);
        if (rc != ERANGE) break;
    }
    c->v[c->n].id = id;
    c->v[c->n].name = name;
    c->n++;
    *out = name;
    return 0;
}

void meta_set_times(struct tree_node *n, const struct stat *st)
{
    n->mtime_sec = st->st_mtim.tv_sec;
    n->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
    n->atime_sec = st->st_atim.tv_sec;
    n->atime_nsec = (uint32_t)st->st_atim.tv_nsec;
    n->ctime_sec = st->st_ctim.tv_sec;
    n->ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
}

/* Fills a fresh node's name and every metadata field that comes from stat(2). */
int meta_node_init(struct meta_idcache *users, struct meta_idcache *groups, struct tree_node *n,
                   const char *name, const struct stat *st, struct err *e)
{
    memset(n, 0, sizeof *n);
    n->name_len = strlen(name);
    n->name = malloc(n->name_len ? n->name_len : 1);
    if (!n->name) return oom(e);
    memcpy(n->name, name, n->name_len);
    n->type = tree_type_of_mode(st->st_mode);
    n->mode = st->st_mode & 07777;
    n->uid = st->st_uid;
    n->gid = st->st_gid;
    const char *user, *group;
    if (meta_idcache_get(users, st->st_uid, false, &user, e) < 0 ||
        meta_idcache_get(groups, st->st_gid, true, &group, e) < 0)
        return e->code;
    if ((user && !(n->user = strdup(user))) || (group && !(n->group = strdup(group))))
        return oom(e);
    meta_set_times(n, st);
    n->inode = st->st_ino;
    n->dev = st->st_dev;
    n->nlink = st->st_nlink;
    if (S_ISREG(st->st_mode)) n->size = (uint64_t)st->st_size;
    if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) n->rdev = st->st_rdev;
    return 0;
}

static ssize_t xa_list(int fd, const char *lpath, char *list, size_t size)
{
    return fd >= 0 ? flistxattr(fd, list, size) : llistxattr(lpath, list, size);
}

static ssize_t xa_get(int fd, const char *lpath, const char *name, void *v, size_t size)
{
    return fd >= 0 ? fgetxattr(fd, name, v, size) : lgetxattr(lpath, name, v, size);
}

static int xattr_cmp(const void *x, const void *y)
{
    return strcmp(((const struct tree_xattr *)x)->name, ((const struct tree_xattr *)y)->name);
}

/* Reads one attribute's value. Returns 0 (value in *out), a positive errno, or ERR_* on memory. */
static int xattr_value(int fd, const char *lpath, const char *name, struct tree_xattr *out,
                       struct err *e)
{
    for (int tries = 0; tries < XATTR_LIST_MAX_TRIES; tries++) {
        ssize_t size = xa_get(fd, lpath, name, NULL, 0);
        if (size < 0) return errno;
        if ((size_t)size > TREE_MAX_XATTR_VALUE) return E2BIG;
        uint8_t *v = malloc(size ? (size_t)size : 1);
        if (!v) return oom(e);
        ssize_t got = xa_get(fd, lpath, name, v, (size_t)size);
        if (got >= 0) {
            out->value = v;
            out->value_len = (size_t)got;
            return 0;
        }
        int en = errno;
        free(v);
        if (en != ERANGE) return en;
    }
    return ERANGE;
}

/* Records the extended attributes of every namespace this process can read (user.*, and
 * security.*, trusted.*, system.posix_acl_* where permitted) through the open `fd`, or else
 * through `lpath` without following a final symlink. Problems are reported, not fatal. */
int meta_xattrs(struct tree_node *n, int fd, const char *lpath, meta_problem_fn problem, void *ctx,
                struct err *e)
{
    char *list = NULL;
    ssize_t len = -1;
    int en = 0;
    for (int tries = 0; tries < XATTR_LIST_MAX_TRIES; tries++) {
        len = xa_list(fd, lpath, NULL, 0);
        if (len <= 0) {
            en = errno;
            break;
        }
        list = malloc((size_t)len + 1);
        if (!list) return oom(e);
        ssize_t got = xa_list(fd, lpath, list, (size_t)len);
        if (got >= 0) {
            len = got;
            list[len] = '\0'; /* the kernel ends each name with NUL; be sure of the last */
            break;
        }
        en = errno;
        free(list);
        list = NULL;
        len = -1;
        if (en != ERANGE) break;
    }
    if (len < 0) {
        if (en != ENOTSUP && en != ENOSYS) problem(ctx, "listxattr", en);
        return 0;
    }
    size_t count = 0;
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1)
        count++;
    int rc = 0;
    struct tree_xattr *xs = count ? calloc(count, sizeof *xs) : NULL;
    size_t nx = 0;
    if (count && !xs) rc = oom(e);
    for (ssize_t i = 0; rc == 0 && i < len; i += (ssize_t)strlen(list + i) + 1) {
        const char *name = list + i;
        if (!*name) continue;
        int r = xattr_value(fd, lpath, name, &xs[nx], e);
        if (r < 0) {
            rc = r;
        } else if (r == 0) {
            if (!(xs[nx].name = strdup(name))) {
                free(xs[nx].value);
                rc = oom(e);
            } else {
                nx++;
            }
        } else if (r != ENODATA) { /* ENODATA: removed since it was listed */
            char what[300];
            snprintf(what, sizeof what, "getxattr %.256s", name);
            problem(ctx, what, r);
        }
    }
    free(list);
    if (rc < 0) {
        for (size_t i = 0; i < nx; i++) {
            free(xs[i].name);
            free(xs[i].value);
        }
        free(xs);
        return rc;
    }
    if (nx > 1) qsort(xs, nx, sizeof *xs, xattr_cmp);
    n->xattrs = xs;
    n->n_xattrs = nx;
    if (!nx) {
        free(xs);
        n->xattrs = NULL;
    }
    return 0;
}

int meta_copy_xattrs(struct tree_node *n, const struct tree_node *pn, struct err *e)
{
    if (!pn->n_xattrs) return 0;
    n->xattrs = calloc(pn->n_xattrs, sizeof *n->xattrs);
    if (!n->xattrs) return oom(e);
    for (size_t i = 0; i < pn->n_xattrs; i++) {
        const struct tree_xattr *x = &pn->xattrs[i];
        struct tree_xattr *y = &n->xattrs[i];
        if (!(y->name = strdup(x->name)) || !(y->value = malloc(x->value_len ? x->value_len : 1)))
            return oom(e); /* n owns what was copied so far; tree_node_free frees it */
        if (x->value_len) memcpy(y->value, x->value, x->value_len);
        y->value_len = x->value_len;
        n->n_xattrs = i + 1;
    }
    return 0;
}
