/* scan.c - the backup's paths: the path buffer, exclude matching, opening without atime, and
 * the scanner that counts what lies ahead for progress totals; see scan.h. */
#include "repo/scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define SCAN_MAX_DEPTH 64

/* ---- paths, excludes, opening ---- */

int scan_path_set(struct scan_path *pb, const char *s, struct err *e)
{
    size_t n = strlen(s);
    if (n + 1 > pb->cap) {
        char *p = realloc(pb->p, n + 256);
        if (!p) return err_set(e, ERR_FAIL, "out of memory");
        pb->p = p;
        pb->cap = n + 256;
    }
    memcpy(pb->p, s, n + 1);
    pb->len = n;
    return 0;
}

int scan_path_push(struct scan_path *pb, const char *name, size_t *saved, struct err *e)
{
    size_t n = strlen(name);
    bool slash = pb->len == 0 || pb->p[pb->len - 1] != '/';
    size_t need = pb->len + slash + n + 1;
    if (need > pb->cap) {
        size_t cap = need * 2;
        char *p = realloc(pb->p, cap);
        if (!p) return err_set(e, ERR_FAIL, "out of memory");
        pb->p = p;
        pb->cap = cap;
    }
    *saved = pb->len;
    if (slash) pb->p[pb->len++] = '/';
    memcpy(pb->p + pb->len, name, n + 1);
    pb->len += n;
    return 0;
}

void scan_path_pop(struct scan_path *pb, size_t saved)
{
    pb->len = saved;
    pb->p[saved] = '\0';
}

bool scan_excluded(const struct arch_options *o, const char *path, const char *name)
{
    for (size_t i = 0; i < o->n_excludes; i++) {
        const char *pat = o->excludes[i];
        if (strchr(pat, '/') ? fnmatch(pat, path, FNM_PATHNAME) == 0 : fnmatch(pat, name, 0) == 0)
            return true;
    }
    return false;
}

int scan_open_noatime(int dfd, const char *name, int flags)
{
    int fd = openat(dfd, name, flags | O_NOATIME | O_CLOEXEC);
    if (fd < 0 && errno == EPERM) fd = openat(dfd, name, flags | O_CLOEXEC);
    return fd;
}

/* ---- the scanner ---- */

/* Counts the entries below the directory open as `fd`. Below SCAN_MAX_DEPTH levels nothing is
 * counted: the scan holds one descriptor per level and must not take the walker's. */
static void scan_dir(struct scan *sc, int fd, struct scan_path *pb, dev_t root_dev, unsigned depth)
{
    DIR *dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return;
    }
    struct dirent *de;
    struct err e;
    while (!atomic_load(&sc->stop) && (de = readdir(dir))) {
        const char *s = de->d_name;
        if (s[0] == '.' && (s[1] == '\0' || (s[1] == '.' && s[2] == '\0'))) continue;
        size_t saved;
        if (scan_path_push(pb, s, &saved, &e) < 0) break;
        struct stat st;
        if (!scan_excluded(sc->o, pb->p, s) &&
            fstatat(dirfd(dir), s, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            atomic_fetch_add(&sc->files, 1);
            if (S_ISREG(st.st_mode)) atomic_fetch_add(&sc->bytes, (uint64_t)st.st_size);
            if (S_ISDIR(st.st_mode) && !(sc->o->one_file_system && st.st_dev != root_dev)) {
                int sub =
                    depth < SCAN_MAX_DEPTH
                        ? scan_open_noatime(dirfd(dir), s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
                        : -1;
                if (sub >= 0) scan_dir(sc, sub, pb, root_dev, depth + 1);
            }
        }
        scan_path_pop(pb, saved);
    }
    closedir(dir);
}

static void *scan_main(void *arg)
{
    struct scan *sc = arg;
    /* Lowest priority: the scan only feeds the ETA and must not slow the backup. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    struct scan_path pb = {0};
    struct err e;
    bool single = sc->n_roots == 1 && S_ISDIR(sc->roots[0].st.st_mode);
    for (size_t i = 0; i < sc->n_roots && !atomic_load(&sc->stop); i++) {
        const struct scan_root *rt = &sc->roots[i];
        if (scan_path_set(&pb, rt->path, &e) < 0) break;
        if (!single) {
            atomic_fetch_add(&sc->files, 1);
            if (S_ISREG(rt->st.st_mode)) atomic_fetch_add(&sc->bytes, (uint64_t)rt->st.st_size);
        }
        if (S_ISDIR(rt->st.st_mode)) {
            int fd = scan_open_noatime(AT_FDCWD, rt->path, O_RDONLY | O_DIRECTORY);
            if (fd >= 0) scan_dir(sc, fd, &pb, rt->st.st_dev, 0);
        }
    }
    free(pb.p);
    atomic_store(&sc->done, !atomic_load(&sc->stop));
    return NULL;
}

void scan_init(struct scan *sc)
{
    memset(sc, 0, sizeof *sc);
    atomic_init(&sc->stop, false);
    atomic_init(&sc->done, false);
    atomic_init(&sc->files, 0);
    atomic_init(&sc->bytes, 0);
}

bool scan_start(struct scan *sc, const struct arch_options *o, const struct scan_root *roots,
                size_t n_roots)
{
    sc->o = o;
    sc->roots = roots;
    sc->n_roots = n_roots;
    sc->started = pthread_create(&sc->thread, NULL, scan_main, sc) == 0;
    return sc->started;
}

void scan_stop(struct scan *sc)
{
    if (!sc->started) return;
    atomic_store(&sc->stop, true);
    pthread_join(sc->thread, NULL);
    sc->started = false;
}
