/* pv_objects.c - plays the other users of a storage location in tests: puts, removes and lists
 * objects at a location (a directory or "s3:...") through podvault's own backends, so that a
 * test does to an S3 bucket what Velero's server does to it, as it does to a directory.
 *
 *   pv_objects LOCATION put NAME FILE     stores FILE's bytes as NAME (replacing it)
 *   pv_objects LOCATION rm-prefix PREFIX  removes every object whose name starts with PREFIX
 *   pv_objects LOCATION top               prints the location's top level, sorted: "name/" for
 *                                         a folder (common prefix), "name" for an object
 *   pv_objects LOCATION du PREFIX         prints the total size of the objects under PREFIX
 *
 * The backend's settings come from the environment, as the podvault program takes them
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, PODVAULT_S3_*). Exit 0, or 1 with a message. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"

static const char *env_get(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

struct names {
    char **v;
    size_t n, cap;
};

/* Takes `s` (allocated; NULL when memory ran out) into the list; -1 when out of memory. */
static int names_take(struct names *ns, char *s)
{
    if (!s) return -1;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? 2 * ns->cap : 64;
        char **v = realloc(ns->v, cap * sizeof *v);
        if (!v) {
            free(s);
            return -1;
        }
        ns->v = v;
        ns->cap = cap;
    }
    ns->v[ns->n++] = s;
    return 0;
}

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

/* The top-level entry of `name`: up to and with its first '/', or the whole name. */
static int collect_top(void *ctx, const char *name, uint64_t size)
{
    (void)size;
    const char *slash = strchr(name, '/');
    return names_take(ctx, slash ? strndup(name, (size_t)(slash - name + 1)) : strdup(name));
}

static int collect_name(void *ctx, const char *name, uint64_t size)
{
    (void)size;
    return names_take(ctx, strdup(name));
}

static int add_size(void *ctx, const char *name, uint64_t size)
{
    (void)name;
    *(uint64_t *)ctx += size;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_top(struct backend *b, struct err *e)
{
    struct names ns = {0};
    int rc = backend_list(b, "", collect_top, &ns, e);
    if (rc == -1) rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) {
        qsort(ns.v, ns.n, sizeof *ns.v, cmp_str);
        for (size_t i = 0; i < ns.n; i++)
            if (i == 0 || strcmp(ns.v[i], ns.v[i - 1]) != 0) puts(ns.v[i]);
    }
    names_free(&ns);
    return rc;
}

static int rm_prefix(struct backend *b, const char *prefix, struct err *e)
{
    struct names ns = {0};
    int rc = backend_list(b, prefix, collect_name, &ns, e);
    if (rc == -1) rc = err_set(e, ERR_FAIL, "out of memory");
    for (size_t i = 0; rc == 0 && i < ns.n; i++) {
        rc = backend_remove(b, ns.v[i], e);
        if (rc == ERR_NOT_FOUND) rc = 0;
    }
    names_free(&ns);
    return rc;
}

static int cmd_put(struct backend *b, const char *name, const char *file, struct err *e)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int rc = err_sys(e, errno, "reading %s", file);
        if (fd >= 0) close(fd);
        return rc;
    }
    int rc = backend_save_fd(b, name, fd, (uint64_t)st.st_size, true, e);
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("usage: pv_objects LOCATION put NAME FILE | rm-prefix PREFIX | top | du PREFIX\n",
              stderr);
        return 2;
    }
    struct err e;
    err_clear(&e);
    struct backend_opts o;
    backend_opts_default(&o);
    struct backend *b = NULL;
    int rc = backend_opts_from_vars(&o, env_get, NULL, &e);
    if (rc == 0) rc = backend_open(argv[1], &o, false, &b, &e);
    const char *cmd = argv[2];
    if (rc < 0) {
        /* reported below */
    } else if (!strcmp(cmd, "put") && argc == 5) {
        rc = cmd_put(b, argv[3], argv[4], &e);
    } else if (!strcmp(cmd, "rm-prefix") && argc == 4) {
        rc = rm_prefix(b, argv[3], &e);
    } else if (!strcmp(cmd, "top") && argc == 3) {
        rc = cmd_top(b, &e);
    } else if (!strcmp(cmd, "du") && argc == 4) {
        uint64_t total = 0;
        rc = backend_list(b, argv[3], add_size, &total, &e);
        if (rc == 0) printf("%" PRIu64 "\n", total);
    } else {
        rc = err_set(&e, ERR_FAIL, "unknown command or wrong arguments: %s", cmd);
    }
    if (b) backend_close(b);
    if (rc < 0) {
        fprintf(stderr, "pv_objects: %s\n", e.msg);
        return 1;
    }
    return 0;
}
