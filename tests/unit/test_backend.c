/* test_backend.c - the backend conformance suite, run against every backend within reach: a local
 * directory always; S3 when PV_TEST_S3 (s3:http://127.0.0.1:7480/<bucket>/<prefix>) and the
 * AWS_* credentials are set (tests/s3-env.sh prints them); the same S3 suite again through
 * pv_faultproxy breaking a share of the requests; Azure Blob Storage when PV_TEST_AZURE
 * (azure:<container>/<prefix>) and AZURE_STORAGE_CONNECTION_STRING are set (tests/azure-env.sh
 * starts Azurite and prints them), directly and through pv_faultproxy. Checks that need no
 * server (location parsing, credentials, a server that never recovers) run always. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sys/mman.h>

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/backend_azure.h"
#include "backend/backend_s3.h"

/* ---- small helpers ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void random_name(char *out, size_t cap, const char *dir)
{
    uint8_t r[32];
    char hex[65];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    if (snprintf(out, cap, "%s/%s", dir, hex) >= (int)cap) fail_msg("name too long");
}

static uint8_t *random_bytes(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    randombytes_buf(p, n);
    return p;
}

/* Environment changes made by a test, undone by env_restore(). */
static struct {
    char *name, *old;
} saved_env[64];
static size_t n_saved_env;

static void env_set(const char *name, const char *value)
{
    assert_true(n_saved_env < sizeof saved_env / sizeof saved_env[0]);
    const char *old = getenv(name);
    saved_env[n_saved_env].name = strdup(name);
    saved_env[n_saved_env].old = old ? strdup(old) : NULL;
    n_saved_env++;
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

static void env_restore(void)
{
    while (n_saved_env > 0) {
        n_saved_env--;
        if (saved_env[n_saved_env].old)
            setenv(saved_env[n_saved_env].name, saved_env[n_saved_env].old, 1);
        else
            unsetenv(saved_env[n_saved_env].name);
        free(saved_env[n_saved_env].name);
        free(saved_env[n_saved_env].old);
    }
}

static int env_reset(void **state)
{
    env_restore();
    return 0;
}

static const char *env_get(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

/* backend_open with the settings of the process's environment, as a program's edge reads them:
 * the variables' contract (backend_s3.h) is tested through here. */
static int open_env(const char *loc, bool create, struct backend **b, struct err *e)
{
    struct backend_opts o;
    backend_opts_default(&o);
    *b = NULL;
    int rc = backend_opts_from_vars(&o, env_get, NULL, e);
    return rc < 0 ? rc : backend_open(loc, &o, create, b, e);
}

static bool s3_available(void)
{
    const char *loc = getenv("PV_TEST_S3");
    return loc && strncmp(loc, "s3:http://", 10) == 0 && getenv("AWS_ACCESS_KEY_ID") &&
           getenv("AWS_SECRET_ACCESS_KEY");
}

/* Splits PV_TEST_S3 into "host:port" and "/bucket/prefix". */
static void s3_split(char *hostport, size_t hcap, const char **path)
{
    const char *loc = getenv("PV_TEST_S3") + strlen("s3:http://");
    const char *slash = strchr(loc, '/');
    assert_non_null(slash);
    snprintf(hostport, hcap, "%.*s", (int)(slash - loc), loc);
    *path = slash;
}

static void rm_rf(const char *path)
{
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "rm -rf '%s'", path) > 0);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

/* Runs fn(ctx, i) for i in [0, n) on `threads` threads. */
struct par {
    void (*fn)(void *ctx, size_t i);
    void *ctx;
    size_t n;
    size_t next;
    pthread_mutex_t mu;
};

static void *par_main(void *arg)
{
    struct par *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n) return NULL;
        p->fn(p->ctx, i);
    }
}

static void parallel(int threads, size_t n, void (*fn)(void *ctx, size_t i), void *ctx)
{
    struct par p = {.fn = fn, .ctx = ctx, .n = n};
    pthread_mutex_init(&p.mu, NULL);
    pthread_t t[16];
    assert_true(threads <= 16);
    for (int i = 0; i < threads; i++)
        assert_int_equal(pthread_create(&t[i], NULL, par_main, &p), 0);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&p.mu);
}

/* Failures seen on worker threads, where cmocka's asserts cannot be used. */
struct failures {
    pthread_mutex_t mu;
    int count;
    char first[ERR_MSG_MAX + 64];
};

static void fail_note(struct failures *f, const char *fmt, ...)
{
    pthread_mutex_lock(&f->mu);
    if (f->count++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->first, sizeof f->first, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&f->mu);
}

static void failures_check(struct failures *f)
{
    if (f->count) fail_msg("%d failures, first: %s", f->count, f->first);
}

/* ---- the fault-injecting proxy ---- */

struct proxy {
    pid_t pid;
    int port;
    char stats[PATH_MAX];
};

static bool proxy_path(char *out, size_t cap)
{
    const char *bd = getenv("PV_BUILD_DIR");
    if (bd) {
        if (snprintf(out, cap, "%s/pv_faultproxy", bd) < (int)cap && access(out, X_OK) == 0)
            return true;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return false;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash) return false;
    *slash = '\0';
    return snprintf(out, cap, "%s/pv_faultproxy", self) < (int)cap && access(out, X_OK) == 0;
}

/* Starts pv_faultproxy with the given extra arguments (NULL-terminated) in front of `target`. */
static void proxy_start(struct proxy *p, const char *target, ...)
{
    char exe[PATH_MAX];
    assert_true(proxy_path(exe, sizeof exe));
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(p->stats, sizeof p->stats, "%s/pv-proxy-stats-%d-%u", tmp, (int)getpid(),
             randombytes_random());
    const char *argv[40] = {exe, "--target", target, "--stats", p->stats};
    size_t argc = 5;
    va_list ap;
    va_start(ap, target);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 38;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        /* A failed assertion skips proxy_stop(); the proxy must not outlive the tests. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char line[128] = "";
    size_t len = 0;
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    while (len < sizeof line - 1 && !strchr(line, '\n') && poll(&pfd, 1, 5000) > 0) {
        ssize_t n = read(fds[0], line + len, sizeof line - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        line[len] = '\0';
    }
    close(fds[0]);
    assert_int_equal(sscanf(line, "listening 127.0.0.1:%d", &p->port), 1);
}

static void proxy_stop(struct proxy *p)
{
    if (p->pid <= 0) return;
    kill(p->pid, SIGTERM);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
    unlink(p->stats);
}

static void proxy_stats(const struct proxy *p, unsigned long *requests, unsigned long *faults)
{
    FILE *f = fopen(p->stats, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "requests %lu\nfaults %lu\n", requests, faults), 2);
    fclose(f);
}

/* ---- fixtures: one per backend the suite runs against ---- */

enum kind { K_LOCAL, K_S3, K_S3_PROXY, K_AZURE, K_AZURE_PROXY };

struct fixture {
    enum kind kind;
    char *location;
    char *tmpdir; /* local: removed at the end */
    struct backend *b;
    size_t list_n;      /* objects saved by the listing check */
    struct proxy proxy; /* K_S3_PROXY, K_AZURE_PROXY */
};

static int setup_local(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (asprintf(&fx->tmpdir, "%s/pv-backend-XXXXXX", tmp) < 0 || !mkdtemp(fx->tmpdir)) return -1;
    if (asprintf(&fx->location, "%s/repo/nested", fx->tmpdir) < 0) return -1;
    struct err e;
    err_clear(&e);
    /* Without create, a missing directory is "not found". */
    struct backend *b = NULL;
    if (open_env(fx->location, false, &b, &e) != ERR_NOT_FOUND) return -1;
    if (open_env(fx->location, true, &fx->b, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    fx->kind = K_LOCAL;
    fx->list_n = 300;
    *state = fx;
    return 0;
}

/* The S3 location of a fresh, empty prefix under PV_TEST_S3, reached at `hostport`. */
static char *s3_run_location(const char *hostport)
{
    const char *path;
    char real_hp[128], *loc = NULL;
    s3_split(real_hp, sizeof real_hp, &path);
    uint8_t r[8];
    char hex[17];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    if (asprintf(&loc, "s3:http://%s%s/run-%s", hostport ? hostport : real_hp, path, hex) < 0)
        return NULL;
    return loc;
}

static void s3_common_env(void)
{
    env_set(BACKEND_S3_ENV_LIST_MAX, "100");
    env_set(BACKEND_S3_ENV_RETRIES, NULL);
    env_set(BACKEND_S3_ENV_RETRY_DELAY_MS, NULL);
    env_set(BACKEND_S3_ENV_RETRY_MAX_DELAY_MS, NULL);
    env_set(BACKEND_S3_ENV_STALL_TIMEOUT, NULL);
}

/* Opens fx->location (created) as the fixture of `kind`, whose listing check saves `list_n`
 * objects. */
static int fixture_open(void **state, struct fixture *fx, enum kind kind, size_t list_n)
{
    struct err e;
    err_clear(&e);
    if (!fx->location || open_env(fx->location, true, &fx->b, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    fx->kind = kind;
    fx->list_n = list_n;
    *state = fx;
    return 0;
}

/* The settings of a suite through the fault proxy: small pages, many quick retries, and the
 * proxy's 1.5 s delays turned into timeouts. */
static void flaky_env(void)
{
    env_set(BACKEND_S3_ENV_LIST_MAX, "50");
    env_set(BACKEND_S3_ENV_RETRIES, "12");
    env_set(BACKEND_S3_ENV_RETRY_DELAY_MS, "5");
    env_set(BACKEND_S3_ENV_RETRY_MAX_DELAY_MS, "50");
    env_set(BACKEND_S3_ENV_STALL_TIMEOUT, "1");
}

static int setup_s3(void **state)
{
    if (!s3_available()) {
        printf("[  SKIPPED ] S3 suite: set PV_TEST_S3 and AWS_* (see tests/s3-env.sh)\n");
        return -1;
    }
    struct fixture *fx = calloc(1, sizeof *fx);
    s3_common_env();
    fx->location = s3_run_location(NULL);
    /* more than one page of 1000, and 12 pages of 100 */
    return fixture_open(state, fx, K_S3, 1100);
}

/* The S3 suite through a proxy that breaks 15% of the requests; retries must hide it all. */
static int setup_s3_proxy(void **state)
{
    char exe[PATH_MAX];
    if (!s3_available() || !proxy_path(exe, sizeof exe)) {
        printf("[  SKIPPED ] S3 suite through the fault proxy: needs PV_TEST_S3 and "
               "pv_faultproxy\n");
        return -1;
    }
    struct fixture *fx = calloc(1, sizeof *fx);
    const char *path;
    char hp[128], proxied[64];
    s3_split(hp, sizeof hp, &path);
    proxy_start(&fx->proxy, hp, "--rate", "15", "--delay-ms", "1500", NULL);
    snprintf(proxied, sizeof proxied, "127.0.0.1:%d", fx->proxy.port);
    s3_common_env();
    flaky_env();
    fx->location = s3_run_location(proxied);
    return fixture_open(state, fx, K_S3_PROXY, 260);
}

/* ---- Azure (Azurite) ---- */

static bool azure_available(void)
{
    const char *loc = getenv("PV_TEST_AZURE");
    return loc && strncmp(loc, "azure:", 6) == 0 && getenv(BACKEND_AZURE_ENV_CONNECTION_STRING);
}

/* The connection string of PV_TEST_AZURE's server, its BlobEndpoint's host and port replaced
 * by `hostport` (NULL: as it is). */
static char *azure_conn_via(const char *hostport)
{
    const char *cs = getenv(BACKEND_AZURE_ENV_CONNECTION_STRING);
    const char *ep = strstr(cs, "BlobEndpoint=http://");
    char *out = NULL;
    if (!hostport || !ep) return strdup(cs);
    const char *host = ep + strlen("BlobEndpoint=http://"), *end = strchr(host, '/');
    assert_non_null(end);
    assert_true(asprintf(&out, "%.*s%s%s", (int)(host - cs), cs, hostport, end) > 0);
    return out;
}

/* host:port of PV_TEST_AZURE's server. */
static void azure_hostport(char *out, size_t cap)
{
    const char *cs = getenv(BACKEND_AZURE_ENV_CONNECTION_STRING);
    const char *ep = strstr(cs, "BlobEndpoint=http://");
    assert_non_null(ep);
    const char *host = ep + strlen("BlobEndpoint=http://"), *end = strchr(host, '/');
    assert_non_null(end);
    snprintf(out, cap, "%.*s", (int)(end - host), host);
}

/* A fresh, empty prefix under PV_TEST_AZURE. */
static char *azure_run_location(void)
{
    uint8_t r[8];
    char hex[17], *loc = NULL;
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    if (asprintf(&loc, "%s/run-%s", getenv("PV_TEST_AZURE"), hex) < 0) return NULL;
    return loc;
}

static void azure_common_env(void)
{
    s3_common_env();
    /* 1 MiB blocks: the suite's 3 MiB objects go up block by block, smaller ones whole. */
    env_set(BACKEND_AZURE_ENV_BLOCK_SIZE, "1048576");
}

static int setup_azure(void **state)
{
    if (!azure_available()) return -1;
    struct fixture *fx = calloc(1, sizeof *fx);
    azure_common_env();
    fx->location = azure_run_location();
    /* more than one page of 1000, and 12 pages of 100 */
    return fixture_open(state, fx, K_AZURE, 1100);
}

/* The Azure suite through a proxy that breaks 15% of the requests; retries must hide it all. */
static int setup_azure_proxy(void **state)
{
    char exe[PATH_MAX];
    if (!azure_available() || !proxy_path(exe, sizeof exe)) {
        printf("[  SKIPPED ] Azure suite through the fault proxy: needs PV_TEST_AZURE and "
               "pv_faultproxy\n");
        return -1;
    }
    struct fixture *fx = calloc(1, sizeof *fx);
    char hp[128], proxied[64];
    azure_hostport(hp, sizeof hp);
    proxy_start(&fx->proxy, hp, "--rate", "15", "--delay-ms", "1500", NULL);
    snprintf(proxied, sizeof proxied, "127.0.0.1:%d", fx->proxy.port);
    azure_common_env();
    char *cs = azure_conn_via(proxied);
    env_set(BACKEND_AZURE_ENV_CONNECTION_STRING, cs);
    free(cs);
    flaky_env();
    fx->location = azure_run_location();
    return fixture_open(state, fx, K_AZURE_PROXY, 260);
}

struct names {
    pthread_mutex_t mu;
    char **v;
    size_t n, cap;
};

static int collect(void *ctx, const char *name, uint64_t size)
{
    struct names *ns = ctx;
    pthread_mutex_lock(&ns->mu);
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? 2 * ns->cap : 64;
        ns->v = realloc(ns->v, ns->cap * sizeof *ns->v);
    }
    ns->v[ns->n++] = strdup(name);
    pthread_mutex_unlock(&ns->mu);
    return 0;
}

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

struct remove_ctx {
    struct backend *b;
    struct names *ns;
    struct failures f;
};

static void remove_one(void *ctx, size_t i)
{
    struct remove_ctx *rc = ctx;
    struct err e;
    err_clear(&e);
    if (backend_remove(rc->b, rc->ns->v[i], &e) != 0) fail_note(&rc->f, "%s", e.msg);
}

/* Removes every object whose name starts with `prefix`. */
static void remove_all(struct backend *b, const char *prefix)
{
    struct names ns = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct err e;
    err_clear(&e);
    assert_int_equal(backend_list(b, prefix, collect, &ns, &e), 0);
    struct remove_ctx rc = {.b = b, .ns = &ns, .f = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    parallel(8, ns.n, remove_one, &rc);
    names_free(&ns);
    failures_check(&rc.f);
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (!fx) return 0;
    if (fx->kind != K_LOCAL && fx->b) remove_all(fx->b, "");
    backend_close(fx->b);
    proxy_stop(&fx->proxy);
    if (fx->tmpdir) rm_rf(fx->tmpdir);
    free(fx->tmpdir);
    free(fx->location);
    free(fx);
    env_restore();
    return 0;
}

/* ---- the conformance suite ---- */

static void check_load(struct backend *b, const char *name, uint64_t off, uint64_t len,
                       const uint8_t *want, size_t want_len)
{
    struct buf out = BUF_INIT;
    struct err e;
    err_clear(&e);
    /* load appends: what was in the buffer stays */
    assert_int_equal(buf_append(&out, "xyz", 3), 0);
    int rc = backend_load(b, name, off, len, &out, &e);
    if (rc != 0)
        fail_msg("load %s [%llu,+%llu]: %s", name, (unsigned long long)off, (unsigned long long)len,
                 e.msg);
    assert_int_equal(out.len, 3 + want_len);
    assert_memory_equal(out.data, "xyz", 3);
    if (want_len) assert_memory_equal(out.data + 3, want, want_len);
    buf_free(&out);
}

static void save_ok(struct backend *b, const char *name, const void *data, size_t len,
                    bool overwrite)
{
    struct err e;
    err_clear(&e);
    if (backend_save(b, name, data, len, overwrite, &e) != 0) fail_msg("save %s: %s", name, e.msg);
}

static void test_save_load(void **state)
{
    struct fixture *fx = *state;
    /* 3 MiB: curl asks for "100 Continue" above 1 MiB, a path of its own */
    size_t sizes[] = {0, 1, 4096, 300000, 3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[128];
        random_name(name, sizeof name, "snapshots");
        uint8_t *data = random_bytes(sizes[i]);
        save_ok(fx->b, name, data, sizes[i], false);
        check_load(fx->b, name, 0, 0, data, sizes[i]);
        uint64_t size = 99;
        struct err e;
        err_clear(&e);
        assert_int_equal(backend_stat(fx->b, name, &size, &e), 0);
        assert_int_equal(size, sizes[i]);
        free(data);
    }
}

/* A temporary file holding `data`: the backend's own (linked into place where it can be), or a
 * memfd, which no backend can link and every backend must copy. */
static int tmp_with(struct backend *b, bool own, const uint8_t *data, size_t len)
{
    struct err e;
    int fd = -1;
    if (own)
        assert_int_equal(backend_tmp_file(b, &fd, &e), 0);
    else
        fd = memfd_create("test-backend", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    return fd;
}

/* Saves the first len bytes of fd under name, failing the test with the backend's message,
 * and checks that they load back as `data`. */
static void save_fd_ok(struct backend *b, const char *name, int fd, const uint8_t *data, size_t len,
                       bool overwrite)
{
    struct err e;
    err_clear(&e);
    if (backend_save_fd(b, name, fd, len, overwrite, &e) != 0)
        fail_msg("save_fd %s%s: %s", name, overwrite ? " with overwrite" : "", e.msg);
    check_load(b, name, 0, 0, data, len);
}

/* Saving from a file: both kinds of file, a name that exists, and a file shorter than the
 * length asked for (a save that fails half-way), which must leave nothing under the name. */
static void test_save_fd(void **state)
{
    struct fixture *fx = *state;
    size_t sizes[] = {0, 1, 300000, 3 << 20};
    struct err e;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int own = 0; own < 2; own++) {
            char name[128];
            random_name(name, sizeof name, "data");
            uint8_t *data = random_bytes(sizes[i]);
            int fd = tmp_with(fx->b, own, data, sizes[i]);
            save_fd_ok(fx->b, name, fd, data, sizes[i], false);
            /* The name is taken now, whichever way the first save went. */
            int fd2 = tmp_with(fx->b, own, data, sizes[i]);
            assert_int_equal(backend_save_fd(fx->b, name, fd2, sizes[i], false, &e), ERR_EXISTS);
            check_load(fx->b, name, 0, 0, data, sizes[i]);
            /* With overwrite, other content replaces it. */
            uint8_t *other = random_bytes(sizes[i] + 10);
            int fd3 = tmp_with(fx->b, own, other, sizes[i] + 10);
            save_fd_ok(fx->b, name, fd3, other, sizes[i] + 10, true);
            close(fd3);
            free(other);
            close(fd2);
            close(fd);
            free(data);
        }
    }
    /* A save with overwrite of a new name from the backend's own temporary file: the local
     * directory links that file into place rather than copying it. */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[128];
        random_name(name, sizeof name, "data");
        uint8_t *data = random_bytes(sizes[i]);
        int fd = tmp_with(fx->b, true, data, sizes[i]);
        save_fd_ok(fx->b, name, fd, data, sizes[i], true);
        if (fx->kind == K_LOCAL) {
            char *path = NULL;
            struct stat saved, tmp;
            assert_true(asprintf(&path, "%s/%s", fx->location, name) > 0);
            assert_int_equal(stat(path, &saved), 0);
            assert_int_equal(fstat(fd, &tmp), 0);
            assert_true(saved.st_ino == tmp.st_ino && saved.st_dev == tmp.st_dev);
            free(path);
        }
        close(fd);
        free(data);
    }
    for (int own = 0; own < 2; own++) {
        char name[128];
        random_name(name, sizeof name, "data");
        uint8_t *data = random_bytes(1000);
        int fd = tmp_with(fx->b, own, data, 1000);
        err_clear(&e);
        assert_int_equal(backend_save_fd(fx->b, name, fd, 5000, false, &e), ERR_FAIL);
        assert_true(e.msg[0] != '\0');
        uint64_t size;
        assert_int_equal(backend_stat(fx->b, name, &size, &e), ERR_NOT_FOUND);
        close(fd);
        free(data);
    }
}

static void test_ranges(void **state)
{
    struct fixture *fx = *state;
    char name[128];
    random_name(name, sizeof name, "data/7f");
    size_t n = 100000;
    uint8_t *data = random_bytes(n);
    save_ok(fx->b, name, data, n, false);
    check_load(fx->b, name, 0, 1, data, 1);
    check_load(fx->b, name, 12345, 5000, data + 12345, 5000);
    check_load(fx->b, name, n - 1, 1, data + n - 1, 1);
    check_load(fx->b, name, 0, n, data, n);
    check_load(fx->b, name, 777, 0, data + 777, n - 777); /* len 0: to the end */
    check_load(fx->b, name, n, 0, NULL, 0);               /* the empty rest */

    /* Past the end: an error that is not "not found", and nothing appended. */
    struct {
        uint64_t off, len;
    } bad[] = {{n - 1, 2}, {0, n + 1}, {n, 1}, {n + 10, 0}, {n + 10, 5}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf out = BUF_INIT;
        struct err e;
        err_clear(&e);
        int rc = backend_load(fx->b, name, bad[i].off, bad[i].len, &out, &e);
        if (rc != ERR_FAIL) fail_msg("range %zu: rc %d (%s)", i, rc, e.msg);
        assert_non_null(strstr(e.msg, name));
        assert_int_equal(out.len, 0);
        buf_free(&out);
    }
    free(data);
}

static void test_not_found(void **state)
{
    struct fixture *fx = *state;
    char name[128];
    random_name(name, sizeof name, "index");
    struct buf out = BUF_INIT;
    struct err e;
    uint64_t size;
    err_clear(&e);
    assert_int_equal(backend_load(fx->b, name, 0, 0, &out, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, name));
    err_clear(&e);
    assert_int_equal(backend_load(fx->b, name, 10, 10, &out, &e), ERR_NOT_FOUND);
    err_clear(&e);
    assert_int_equal(backend_stat(fx->b, name, &size, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, name));
    err_clear(&e);
    assert_int_equal(backend_remove(fx->b, name, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, name));
    /* Below a name that is an object, not a directory. */
    save_ok(fx->b, name, "x", 1, false);
    char below[200];
    snprintf(below, sizeof below, "%s/sub", name);
    err_clear(&e);
    assert_int_equal(backend_load(fx->b, below, 0, 0, &out, &e), ERR_NOT_FOUND);
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

static void test_exists(void **state)
{
    struct fixture *fx = *state;
    char name[128];
    random_name(name, sizeof name, "keys");
    save_ok(fx->b, name, "first", 5, false);
    struct err e;
    err_clear(&e);
    assert_int_equal(backend_save(fx->b, name, "second", 6, false, &e), ERR_EXISTS);
    assert_non_null(strstr(e.msg, name));
    check_load(fx->b, name, 0, 0, (const uint8_t *)"first", 5);
    save_ok(fx->b, name, "third!", 6, true);
    check_load(fx->b, name, 0, 0, (const uint8_t *)"third!", 6);
    /* overwrite of a name that does not exist yet simply creates it */
    char other[128];
    random_name(other, sizeof other, "keys");
    save_ok(fx->b, other, "new", 3, true);
    check_load(fx->b, other, 0, 0, (const uint8_t *)"new", 3);
}

static int count_cb(void *ctx, const char *name, uint64_t size)
{
    (*(size_t *)ctx)++;
    return 0;
}

static void test_stat_remove(void **state)
{
    struct fixture *fx = *state;
    char name[128];
    random_name(name, sizeof name, "locks");
    save_ok(fx->b, name, "lock", 4, false);
    uint64_t size = 0;
    struct err e;
    err_clear(&e);
    assert_int_equal(backend_stat(fx->b, name, &size, &e), 0);
    assert_int_equal(size, 4);
    size_t n = 0;
    assert_int_equal(backend_list(fx->b, name, count_cb, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(backend_remove(fx->b, name, &e), 0);
    assert_int_equal(backend_stat(fx->b, name, &size, &e), ERR_NOT_FOUND);
    struct buf out = BUF_INIT;
    assert_int_equal(backend_load(fx->b, name, 0, 0, &out, &e), ERR_NOT_FOUND);
    assert_int_equal(backend_remove(fx->b, name, &e), ERR_NOT_FOUND);
    n = 0;
    assert_int_equal(backend_list(fx->b, name, count_cb, &n, &e), 0);
    assert_int_equal(n, 0);
    /* The name is free again. */
    save_ok(fx->b, name, "again", 5, false);
    check_load(fx->b, name, 0, 0, (const uint8_t *)"again", 5);
}

static void test_bad_names(void **state)
{
    struct fixture *fx = *state;
    const char *bad[] = {"",    "/etc/passwd", "../x", "a/../../x", "a//b",    "a/",
                         "./a", "data/.tmp-1", "a b",  "a\\b",      "data/%2e"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct err e;
        struct buf out = BUF_INIT;
        uint64_t size;
        err_clear(&e);
        assert_int_equal(backend_save(fx->b, bad[i], "x", 1, true, &e), ERR_FAIL);
        assert_int_equal(backend_load(fx->b, bad[i], 0, 0, &out, &e), ERR_FAIL);
        assert_int_equal(backend_stat(fx->b, bad[i], &size, &e), ERR_FAIL);
        assert_int_equal(backend_remove(fx->b, bad[i], &e), ERR_FAIL);
    }
    size_t n = 0;
    struct err e;
    err_clear(&e);
    assert_int_equal(backend_list(fx->b, "../", count_cb, &n, &e), ERR_FAIL);
    assert_int_equal(backend_list(fx->b, "/", count_cb, &n, &e), ERR_FAIL);
    assert_int_equal(n, 0);
}

/* ---- listing ---- */

struct entry {
    char name[128]; /* first: entries sort and are searched by name with strcmp */
    uint64_t size;
    bool seen;
};

struct listing {
    struct backend *b;
    struct entry *v;
    size_t n;
    size_t calls, unknown, wrong_size, twice;
    struct failures f;
};

static void list_save_one(void *ctx, size_t i)
{
    struct listing *l = ctx;
    uint8_t data[200];
    randombytes_buf(data, sizeof data);
    struct err e;
    err_clear(&e);
    if (backend_save(l->b, l->v[i].name, data, (size_t)l->v[i].size, false, &e) != 0)
        fail_note(&l->f, "%s", e.msg);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int list_check_cb(void *ctx, const char *name, uint64_t size)
{
    struct listing *l = ctx;
    l->calls++;
    struct entry *hit = bsearch(name, l->v, l->n, sizeof l->v[0], by_name);
    if (!hit) {
        l->unknown++;
        return 0;
    }
    if (hit->seen) l->twice++;
    hit->seen = true;
    if (hit->size != size) l->wrong_size++;
    return 0;
}

/* Lists `prefix` and checks that exactly the saved names starting with it come back. */
static void expect_listing(struct listing *l, const char *prefix)
{
    for (size_t i = 0; i < l->n; i++)
        l->v[i].seen = false;
    l->calls = l->unknown = l->wrong_size = l->twice = 0;
    struct err e;
    err_clear(&e);
    if (backend_list(l->b, prefix, list_check_cb, l, &e) != 0) fail_msg("list: %s", e.msg);
    size_t want = 0;
    for (size_t i = 0; i < l->n; i++) {
        bool match = strncmp(l->v[i].name, prefix, strlen(prefix)) == 0;
        want += match;
        if (match != l->v[i].seen)
            fail_msg("list \"%s\": %s %s", prefix, l->v[i].name,
                     match ? "missing" : "listed but does not match");
    }
    assert_int_equal(l->twice, 0);
    assert_int_equal(l->wrong_size, 0);
    assert_int_equal(l->unknown, 0);
    assert_int_equal(l->calls, want);
}

static int stop_cb(void *ctx, const char *name, uint64_t size)
{
    (*(size_t *)ctx)++;
    return 42;
}

static void test_list(void **state)
{
    struct fixture *fx = *state;
    /* The suite's other checks leave objects behind; list in a directory of our own. */
    char top[80];
    random_name(top, sizeof top, "t");
    top[20] = '\0';
    struct listing l = {.b = fx->b, .n = fx->list_n + 5, .f = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    l.v = calloc(l.n, sizeof *l.v);
    for (size_t i = 0; i < l.n; i++) {
        char dir[128];
        if (i < fx->list_n)
            snprintf(dir, sizeof dir, "%s/data/%02x", top, (unsigned)(i % 16));
        else
            snprintf(dir, sizeof dir, "%s/%s", top, i % 2 ? "index" : "snapshots");
        random_name(l.v[i].name, sizeof l.v[i].name, dir);
        l.v[i].size = randombytes_uniform(200);
    }
    double t0 = now_s();
    parallel(8, l.n, list_save_one, &l);
    failures_check(&l.f);
    qsort(l.v, l.n, sizeof l.v[0], by_name);
    char p[128];
    snprintf(p, sizeof p, "%s/data/", top);
    expect_listing(&l, p);
    snprintf(p, sizeof p, "%s/data/0", top); /* a prefix that ends inside a name */
    expect_listing(&l, p);
    snprintf(p, sizeof p, "%s/", top);
    expect_listing(&l, p);
    snprintf(p, sizeof p, "%s/index/", top);
    expect_listing(&l, p);
    snprintf(p, sizeof p, "%s/nothing/", top);
    expect_listing(&l, p);
    /* The callback stops the listing, and its value comes back. */
    size_t calls = 0;
    struct err e;
    err_clear(&e);
    snprintf(p, sizeof p, "%s/", top);
    assert_int_equal(backend_list(fx->b, p, stop_cb, &calls, &e), 42);
    assert_int_equal(calls, 1);
    /* A listing of everything includes ours. */
    size_t all = 0;
    assert_int_equal(backend_list(fx->b, "", count_cb, &all, &e), 0);
    assert_true(all >= l.n);
    remove_all(fx->b, p);
    size_t left = 0;
    assert_int_equal(backend_list(fx->b, p, count_cb, &left, &e), 0);
    assert_int_equal(left, 0);
    printf("    %zu objects saved, listed 6 ways and removed in %.1f s\n", l.n, now_s() - t0);
    free(l.v);
}

/* ---- many threads at once ---- */

struct mt {
    struct backend *b;
    struct failures f;
};

static void mt_one(void *ctx, size_t i)
{
    struct mt *m = ctx;
    char name[128];
    random_name(name, sizeof name, i % 2 ? "data/aa" : "data/bb");
    /* At least 3 bytes: the range load below asks for n / 3 bytes, and a length of 0 would
     * mean "to the end". */
    size_t n = 3 + randombytes_uniform(i % 5 == 0 ? 600000 : 20000);
    uint8_t *data = malloc(n);
    randombytes_buf(data, n);
    struct err e;
    struct buf out = BUF_INIT;
    uint64_t size = 0;
    err_clear(&e);
    if (backend_save(m->b, name, data, n, false, &e) != 0) {
        fail_note(&m->f, "save: %s", e.msg);
    } else if (backend_load(m->b, name, 0, 0, &out, &e) != 0) {
        fail_note(&m->f, "load: %s", e.msg);
    } else if (out.len != n || memcmp(out.data, data, n) != 0) {
        fail_note(&m->f, "load %s: wrong bytes", name);
    } else if (buf_reset(&out), backend_load(m->b, name, n / 3, n / 3, &out, &e) != 0) {
        fail_note(&m->f, "range load: %s", e.msg);
    } else if (out.len != n / 3 || (n / 3 && memcmp(out.data, data + n / 3, n / 3) != 0)) {
        fail_note(&m->f, "range load %s: wrong bytes", name);
    } else if (backend_stat(m->b, name, &size, &e) != 0 || size != n) {
        fail_note(&m->f, "stat %s: %s", name, e.msg);
    } else if (i % 3 == 0 && backend_remove(m->b, name, &e) != 0) {
        fail_note(&m->f, "remove: %s", e.msg);
    }
    buf_free(&out);
    free(data);
}

static void test_threads(void **state)
{
    struct fixture *fx = *state;
    struct mt m = {.b = fx->b, .f = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    double t0 = now_s();
    parallel(8, 160, mt_one, &m);
    failures_check(&m.f);
    printf("    160 objects by 8 threads in %.1f s\n", now_s() - t0);
}

/* ---- a save that fails half-way leaves nothing visible ---- */

static void expect_invisible(struct backend *b, const char *name)
{
    struct err e;
    uint64_t size;
    err_clear(&e);
    int rc = backend_stat(b, name, &size, &e);
    if (rc != ERR_NOT_FOUND)
        fail_msg("%s visible after a failed save (rc %d, %s)", name, rc, e.msg);
    char dir[128];
    snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(name, '/') - name + 1), name);
    size_t n = 0;
    assert_int_equal(backend_list(b, dir, count_cb, &n, &e), 0);
    assert_int_equal(n, 0);
}

/* Counts files left in a directory (temporary ones included). */
static size_t files_in(const char *dir)
{
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "find '%s' -type f | wc -l", dir) > 0);
    FILE *p = popen(cmd, "r");
    free(cmd);
    size_t n = 999;
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%zu", &n), 1);
    pclose(p);
    return n;
}

/* In a child: a file-size limit makes write() fail half-way (EFBIG), or, with SIGXFSZ left at
 * its default, kills the process half-way through the write, as a crash would. */
static void local_fsize_limit(struct fixture *fx, bool killed)
{
    char name[128], dir[PATH_MAX];
    random_name(name, sizeof name, killed ? "data/c1" : "data/c2");
    snprintf(dir, sizeof dir, "%s/%.7s", fx->location, name);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {.rlim_cur = 8192, .rlim_max = 8192};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0) _exit(3);
        if (!killed) signal(SIGXFSZ, SIG_IGN);
        static uint8_t big[100000];
        struct err e;
        err_clear(&e);
        int rc = backend_save(fx->b, name, big, sizeof big, false, &e);
        if (rc != ERR_FAIL) _exit(1);
        if (!strstr(e.msg, name) || !strstr(e.msg, "File too large")) _exit(2);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (killed) {
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), SIGXFSZ);
        assert_true(files_in(dir) <= 1); /* a crash may leave a temporary file, never listed */
    } else {
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        assert_int_equal(files_in(dir), 0); /* a failed save cleans up after itself */
    }
    expect_invisible(fx->b, name);
}

/* In a child with its own mount namespace: a 64 KiB tmpfs fills up (ENOSPC). Exit 77 when
 * namespaces are not allowed here. */
static void local_enospc(struct fixture *fx)
{
    char mnt[PATH_MAX];
    snprintf(mnt, sizeof mnt, "%s/tiny", fx->tmpdir);
    assert_int_equal(mkdir(mnt, 0755), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) < 0) {
            uid_t uid = getuid();
            gid_t gid = getgid();
            if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) _exit(77);
            char map[64];
            int fd = open("/proc/self/setgroups", O_WRONLY);
            if (fd >= 0) {
                (void)!write(fd, "deny", 4);
                close(fd);
            }
            snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
            fd = open("/proc/self/uid_map", O_WRONLY);
            if (fd < 0 || write(fd, map, strlen(map)) < 0) _exit(77);
            close(fd);
            snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
            fd = open("/proc/self/gid_map", O_WRONLY);
            if (fd < 0 || write(fd, map, strlen(map)) < 0) _exit(77);
            close(fd);
        }
        if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0) _exit(77);
        if (mount("tmpfs", mnt, "tmpfs", 0, "size=64k") < 0) _exit(77);
        char repo[PATH_MAX + 8];
        snprintf(repo, sizeof repo, "%s/repo", mnt);
        struct backend *b = NULL;
        struct err e;
        err_clear(&e);
        if (open_env(repo, true, &b, &e) != 0) _exit(4);
        static uint8_t big[1 << 20];
        char small_name[128], name[128];
        random_name(small_name, sizeof small_name, "data/00");
        random_name(name, sizeof name, "data/00");
        if (backend_save(b, small_name, big, 1000, false, &e) != 0) _exit(5);
        int rc = backend_save(b, name, big, sizeof big, false, &e);
        if (rc != ERR_FAIL || !strstr(e.msg, name) || !strstr(e.msg, "No space left")) _exit(6);
        uint64_t size;
        if (backend_stat(b, name, &size, &e) != ERR_NOT_FOUND) _exit(7);
        size_t n = 0;
        if (backend_list(b, "", count_cb, &n, &e) != 0 || n != 1) _exit(8);
        char data_dir[PATH_MAX + 32];
        snprintf(data_dir, sizeof data_dir, "%s/data/00", repo);
        if (files_in(data_dir) != 1) _exit(9); /* no temporary file left behind */
        backend_close(b);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        printf("    (ENOSPC check skipped: no mount namespace for a tiny tmpfs here)\n");
        return;
    }
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* S3: a proxy that cuts every upload half-way; the server must not keep a partial object. */
static void s3_cut_upload(struct fixture *fx)
{
    char exe[PATH_MAX];
    if (!proxy_path(exe, sizeof exe)) {
        printf("    (cut-upload check skipped: pv_faultproxy not found)\n");
        return;
    }
    const char *path;
    char hp[128], proxied[64], *loc = NULL;
    s3_split(hp, sizeof hp, &path);
    struct proxy p = {0};
    proxy_start(&p, hp, "--always", "cut", NULL);
    snprintf(proxied, sizeof proxied, "127.0.0.1:%d", p.port);
    /* Same bucket and prefix as the fixture, reached through the proxy. */
    const char *fpath = strchr(fx->location + strlen("s3:http://"), '/');
    assert_true(asprintf(&loc, "s3:http://%s%s", proxied, fpath) > 0);
    env_set(BACKEND_S3_ENV_RETRIES, "2");
    env_set(BACKEND_S3_ENV_RETRY_DELAY_MS, "1");
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    char name[128];
    random_name(name, sizeof name, "data/c3");
    uint8_t *data = random_bytes(300000);
    /* overwrite: no existence check first, straight to the upload that gets cut */
    int rc = backend_save(b, name, data, 300000, true, &e);
    assert_int_equal(rc, ERR_FAIL);
    assert_non_null(strstr(e.msg, name));
    if (!strstr(e.msg, "gave up after 3 attempts")) fail_msg("%s", e.msg);
    unsigned long requests, faults;
    proxy_stats(&p, &requests, &faults);
    assert_int_equal(requests, 3);
    expect_invisible(fx->b, name);
    backend_close(b);
    proxy_stop(&p);
    free(data);
    free(loc);
}

/* Azure: a proxy that cuts every upload half-way; neither a Put Blob nor a blob in blocks may
 * leave a partial object. */
static void azure_cut_upload(struct fixture *fx, size_t size, unsigned long want_requests)
{
    char exe[PATH_MAX], hp[128], proxied[64];
    if (!proxy_path(exe, sizeof exe)) {
        printf("    (cut-upload check skipped: pv_faultproxy not found)\n");
        return;
    }
    azure_hostport(hp, sizeof hp);
    struct proxy p = {0};
    proxy_start(&p, hp, "--always", "cut", NULL);
    snprintf(proxied, sizeof proxied, "127.0.0.1:%d", p.port);
    char *cs = azure_conn_via(proxied);
    env_set(BACKEND_AZURE_ENV_CONNECTION_STRING, cs);
    free(cs);
    env_set(BACKEND_S3_ENV_RETRIES, "2");
    env_set(BACKEND_S3_ENV_RETRY_DELAY_MS, "1");
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env(fx->location, false, &b, &e), 0);
    char name[128];
    random_name(name, sizeof name, "data/c3");
    uint8_t *data = random_bytes(size);
    assert_int_equal(backend_save(b, name, data, size, true, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, name));
    if (!strstr(e.msg, "gave up after 3 attempts")) fail_msg("%s", e.msg);
    unsigned long requests, faults;
    proxy_stats(&p, &requests, &faults);
    assert_int_equal(requests, want_requests);
    expect_invisible(fx->b, name);
    backend_close(b);
    proxy_stop(&p);
    free(data);
}

static void test_failed_save_invisible(void **state)
{
    struct fixture *fx = *state;
    if (fx->kind == K_LOCAL) {
        local_fsize_limit(fx, false);
        local_fsize_limit(fx, true);
        local_enospc(fx);
    } else if (fx->kind == K_AZURE || fx->kind == K_AZURE_PROXY) {
        azure_cut_upload(fx, 300000, 3);  /* one Put Blob, tried 3 times */
        azure_cut_upload(fx, 3 << 20, 3); /* the first Put Block, tried 3 times */
    } else {
        s3_cut_upload(fx);
    }
}

#define SUITE                                                                                      \
    cmocka_unit_test(test_save_load), cmocka_unit_test(test_save_fd),                              \
        cmocka_unit_test(test_ranges), cmocka_unit_test(test_not_found),                           \
        cmocka_unit_test(test_exists), cmocka_unit_test(test_stat_remove),                         \
        cmocka_unit_test(test_bad_names), cmocka_unit_test(test_list),                             \
        cmocka_unit_test(test_threads), cmocka_unit_test(test_failed_save_invisible)

/* ---- Azure: settings (no server), and errors against Azurite ---- */

static void resolve_ok(const struct backend_opts *o, const char *account, const char *endpoint,
                       bool key, const char *sas)
{
    struct azure_account a;
    struct err e;
    err_clear(&e);
    if (azure_resolve(o, &a, &e) != 0) fail_msg("azure_resolve: %s", e.msg);
    if (account) assert_string_equal(a.account, account);
    assert_string_equal(a.endpoint, endpoint);
    assert_true((a.key != NULL) == key);
    if (sas)
        assert_string_equal(a.sas, sas);
    else
        assert_null(a.sas);
    azure_account_free(&a);
}

static void resolve_fails(const struct backend_opts *o, const char *needle)
{
    struct azure_account a;
    struct err e;
    err_clear(&e);
    assert_int_equal(azure_resolve(o, &a, &e), ERR_FAIL);
    if (!strstr(e.msg, needle)) fail_msg("\"%s\" lacks \"%s\"", e.msg, needle);
    assert_null(a.account);
    assert_null(a.endpoint);
    azure_account_free(&a);
}

/* Connection strings and variables as Azure's tools read them, and what is refused. */
static void test_azure_settings(void **state)
{
    struct backend_opts o;
    backend_opts_default(&o);
    const char *key = "a2V5a2V5a2V5";
    o.azure_connection_string = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
                                "a2V5a2V5a2V5;EndpointSuffix=core.chinacloudapi.cn";
    resolve_ok(&o, "acct", "https://acct.blob.core.chinacloudapi.cn", true, NULL);
    o.azure_connection_string = "AccountName=acct;AccountKey=a2V5a2V5a2V5";
    resolve_ok(&o, "acct", "https://acct.blob.core.windows.net", true, NULL);
    o.azure_connection_string =
        "BlobEndpoint=http://127.0.0.1:1/dev/;SharedAccessSignature=sv=2021&sig=x%2B=";
    resolve_ok(&o, NULL, "http://127.0.0.1:1/dev", false, "sv=2021&sig=x%2B=");
    o.azure_connection_string = "UseDevelopmentStorage=true";
    resolve_ok(&o, "devstoreaccount1", "http://127.0.0.1:10000/devstoreaccount1", true, NULL);
    /* The connection string is used whole: the variables beside it are not read. */
    o.azure_account = "other";
    o.azure_key = key;
    o.azure_connection_string = "AccountName=acct;AccountKey=a2V5a2V5a2V5";
    resolve_ok(&o, "acct", "https://acct.blob.core.windows.net", true, NULL);
    o.azure_connection_string = "AccountName=acct";
    resolve_fails(&o, "neither AccountKey nor SharedAccessSignature");
    o.azure_connection_string = "AccountName=acct;AccountKey=not base64!";
    resolve_fails(&o, "not base64");
    o.azure_connection_string = "AccountName;AccountKey=a2V5";
    resolve_fails(&o, "is not Key=Value");
    o.azure_connection_string = "AccountName=a;AccountKey=a2V5;BlobEndpoint=ftp://h";
    resolve_fails(&o, "not an http:// or https:// URL");
    /* Without a connection string: account and key or SAS, at Azure's endpoint or another. */
    o.azure_connection_string = NULL;
    resolve_ok(&o, "other", "https://other.blob.core.windows.net", true, NULL);
    o.azure_key = NULL;
    o.azure_sas = "?sv=1&sig=2";
    o.azure_endpoint = "http://127.0.0.1:9/acc/";
    resolve_ok(&o, "other", "http://127.0.0.1:9/acc", false, "sv=1&sig=2");
    o.azure_sas = NULL;
    resolve_fails(&o, "no Azure credentials: set " BACKEND_AZURE_ENV_CONNECTION_STRING);
    o.azure_account = NULL;
    o.azure_key = key;
    resolve_fails(&o, "set " BACKEND_AZURE_ENV_ACCOUNT);
    o.azure_account = "Upper";
    resolve_fails(&o, "bad account name");

    /* From the variables, where a malformed connection string is named. */
    env_set(BACKEND_AZURE_ENV_CONNECTION_STRING, "AccountName=acct;garbage");
    backend_opts_default(&o);
    struct err e;
    err_clear(&e);
    assert_int_equal(backend_opts_from_vars(&o, env_get, NULL, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, BACKEND_AZURE_ENV_CONNECTION_STRING));
    env_set(BACKEND_AZURE_ENV_CONNECTION_STRING, NULL);
    env_set(BACKEND_AZURE_ENV_ACCOUNT, "acct");
    env_set(BACKEND_AZURE_ENV_KEY, key);
    env_set(BACKEND_AZURE_ENV_BLOCK_SIZE, "1000");
    assert_int_equal(backend_opts_from_vars(&o, env_get, NULL, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, BACKEND_AZURE_ENV_BLOCK_SIZE));
    env_set(BACKEND_AZURE_ENV_BLOCK_SIZE, NULL);
    backend_opts_default(&o); /* the connection string from above is in it still */
    assert_int_equal(backend_opts_from_vars(&o, env_get, NULL, &e), 0);
    assert_string_equal(o.azure_account, "acct");
    assert_string_equal(o.azure_key, key);

    /* Locations. */
    struct backend *b = NULL;
    const char *bad[][2] = {{"azure:ab/p", "bad container name"},
                            {"azure:Upper/p", "bad container name"},
                            {"azure:a--b/p", "bad container name"},
                            {"azure:abc/p q", "the prefix may hold only"},
                            {"azure:abc/a//b", "the prefix may hold only"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(backend_open(bad[i][0], &o, false, &b, &e), ERR_FAIL);
        if (!strstr(e.msg, bad[i][1])) fail_msg("%s: \"%s\"", bad[i][0], e.msg);
        assert_null(b);
    }
    assert_int_equal(backend_open("azure:abc/some/prefix/", &o, false, &b, &e), 0);
    assert_int_equal(b->kind, BACKEND_AZURE);
    backend_close(b);
    env_restore();
}

/* A wrong key fails at once (one request, no retries) with Azure's code and message. */
static void test_azure_wrong_key(void **state)
{
    const char *cs = getenv(BACKEND_AZURE_ENV_CONNECTION_STRING);
    const char *k = strstr(cs, "AccountKey=");
    assert_non_null(k);
    char *bad = NULL;
    /* Another valid base64 key: the first character changed. */
    size_t at = (size_t)(k - cs) + strlen("AccountKey=");
    assert_true(asprintf(&bad, "%.*s%c%s", (int)at, cs, cs[at] == 'A' ? 'B' : 'A', cs + at + 1) >
                0);
    env_set(BACKEND_AZURE_ENV_CONNECTION_STRING, bad);
    free(bad);
    char *loc = azure_run_location();
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    double t0 = now_s();
    assert_int_equal(open_env(loc, true, &b, &e), ERR_FAIL);
    assert_true(now_s() - t0 < 2.0);
    assert_null(b);
    if (!strstr(e.msg, "HTTP 403 AuthorizationFailure: Server failed to authenticate") ||
        strstr(e.msg, "gave up") || strstr(e.msg, "RequestId"))
        fail_msg("wrong key: %s", e.msg);
    free(loc);
    env_restore();
}

/* A container that does not exist, without `create`: every request says so, and a missing
 * container is never taken for a missing object. */
static void test_azure_no_container(void **state)
{
    char loc[64];
    uint8_t r[6];
    char hex[13];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    snprintf(loc, sizeof loc, "azure:pv-missing-%s/repo", hex);
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    uint64_t size;
    struct buf out = BUF_INIT;
    assert_int_equal(backend_stat(b, "config", &size, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "ContainerNotFound"));
    assert_int_equal(backend_load(b, "config", 0, 0, &out, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "HTTP 404 ContainerNotFound: The specified container does not"));
    assert_non_null(strstr(e.msg, "init creates it"));
    assert_int_equal(backend_save(b, "keys/x", "k", 1, false, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "ContainerNotFound"));
    buf_free(&out);
    backend_close(b);
}

/* ---- S3 checks that need no server ---- */

static void expect_open_fails(const char *loc, const char *needle)
{
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    int rc = open_env(loc, false, &b, &e);
    if (rc != ERR_FAIL || !strstr(e.msg, needle))
        fail_msg("open %s: rc %d, \"%s\" lacks \"%s\"", loc, rc, e.msg, needle);
    assert_null(b);
}

/* Settings given as values, without the environment: the kind of each backend, a scheme that
 * is not known, numbers out of bounds, and S3 settings taken from the struct (the process's
 * variables saying otherwise are ignored). */
static void test_opts_and_kinds(void **state)
{
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    enum backend_kind kind;
    assert_int_equal(backend_parse_kind("s3:http://h/b", &kind, &e), 0);
    assert_int_equal(kind, BACKEND_S3);
    assert_int_equal(backend_parse_kind("/srv/repo", &kind, &e), 0);
    assert_int_equal(kind, BACKEND_LOCAL);
    assert_int_equal(backend_parse_kind("./gs:odd", &kind, &e), 0);
    assert_int_equal(kind, BACKEND_LOCAL);
    assert_int_equal(backend_parse_kind("gs://bucket/p", &kind, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "unknown repository scheme \"gs:\""));
    assert_int_equal(backend_parse_kind("azure:container/p", &kind, &e), 0);
    assert_int_equal(kind, BACKEND_AZURE);
    assert_int_equal(backend_open("ftp:container", NULL, true, &b, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "unknown repository scheme \"ftp:\""));
    assert_non_null(strstr(e.msg, "azure:container[/prefix]"));
    /* A mistyped scheme is refused too, with the schemes there are. */
    assert_int_equal(backend_parse_kind("s3;http://127.0.0.1/bucket", &kind, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "unknown repository scheme \"s3;http:\""));
    assert_non_null(strstr(e.msg, "s3:http[s]://host/bucket"));
    assert_int_equal(backend_parse_kind("b2:bucket", &kind, &e), ERR_FAIL);
    assert_int_equal(backend_parse_kind("repo/a:b", &kind, &e), 0);
    assert_int_equal(kind, BACKEND_LOCAL);
    assert_null(b);

    char dir[] = "/tmp/pv-opts-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct backend_opts o;
    backend_opts_default(&o);
    o.tmp_dir = dir;
    assert_int_equal(backend_open(dir, &o, false, &b, &e), 0);
    assert_int_equal(b->kind, BACKEND_LOCAL);
    backend_close(b);
    o.uploads = 65;
    assert_int_equal(backend_open(dir, &o, false, &b, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, BACKEND_S3_ENV_UPLOADS));
    assert_null(b);
    rmdir(dir);

    env_set(BACKEND_S3_ENV_UPLOADS, "1");
    env_set("AWS_ACCESS_KEY_ID", NULL);
    env_set("AWS_SECRET_ACCESS_KEY", NULL);
    backend_opts_default(&o);
    o.uploads = 7;
    o.downloads = 3;
    o.access_key = "k";
    o.secret_key = "s";
    assert_int_equal(backend_open("s3:http://127.0.0.1:1/bucket/p", &o, false, &b, &e), 0);
    assert_int_equal(b->kind, BACKEND_S3);
    assert_int_equal(b->save_slots, 7);
    assert_int_equal(b->load_slots, 3);
    backend_close(b);
    o.region = "us east";
    assert_int_equal(backend_open("s3:http://127.0.0.1:1/bucket/p", &o, false, &b, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "bad S3 region"));
    env_restore();
}

static void test_s3_locations(void **state)
{
    env_set("AWS_ACCESS_KEY_ID", "k");
    env_set("AWS_SECRET_ACCESS_KEY", "s");
    expect_open_fails("s3:http://127.0.0.1:1", "no bucket");
    expect_open_fails("s3:ftp://127.0.0.1:1/bucket", "only http and https");
    expect_open_fails("s3:http://127.0.0.1:1/ab", "bad bucket name");
    expect_open_fails("s3:http://127.0.0.1:1/a%20b", "bad bucket name");
    expect_open_fails("s3:http://user@127.0.0.1:1/bucket", "bad host");
    env_set(BACKEND_S3_ENV_REGION, "us east");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "region");
    env_set(BACKEND_S3_ENV_REGION, NULL);
    env_set(BACKEND_S3_ENV_RETRIES, "many");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", BACKEND_S3_ENV_RETRIES);
    env_set(BACKEND_S3_ENV_RETRIES, NULL);
    env_set("AWS_ENDPOINT_URL_S3", "ftp://h");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "AWS_ENDPOINT_URL_S3");
    env_set("AWS_ENDPOINT_URL_S3", "http://h/path");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "without a path");
    env_restore();
}

static void test_s3_credentials(void **state)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/pv-creds-%d", tmp, (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# comment\n[default]\naws_access_key_id = A\n\n[other]\r\n"
          "aws_access_key_id=B\r\naws_secret_access_key = SB\r\n",
          f);
    fclose(f);
    env_set("AWS_ACCESS_KEY_ID", NULL);
    env_set("AWS_SECRET_ACCESS_KEY", NULL);
    env_set("AWS_SESSION_TOKEN", NULL);
    env_set("AWS_SHARED_CREDENTIALS_FILE", path);
    env_set("AWS_PROFILE", NULL);
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "lacks aws_access_key_id or aws_secret");
    env_set("AWS_PROFILE", "nope");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "no profile [nope]");
    env_set("AWS_PROFILE", "other");
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env("s3:http://127.0.0.1:1/bucket/p", false, &b, &e), 0);
    backend_close(b);
    env_set("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "/nonexistent/credentials");
    env_set("AWS_SHARED_CREDENTIALS_FILE", NULL);
    env_set("HOME", "/nonexistent");
    /* With no ~/.aws/credentials, the chain goes on to the pod's identity, and with none of
     * those set and instance metadata off, the message lists the ways. */
    env_set("AWS_EC2_METADATA_DISABLED", "true");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "no S3 credentials");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "AWS_WEB_IDENTITY_TOKEN_FILE");
    /* Instance metadata that does not answer (nothing listens on port 1). */
    env_set("AWS_EC2_METADATA_DISABLED", NULL);
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1");
    expect_open_fails("s3:http://127.0.0.1:1/bucket",
                      "EC2 instance metadata at http://127.0.0.1:1");
    env_set("AWS_EC2_METADATA_SERVICE_ENDPOINT", NULL);
    env_set("AWS_ACCESS_KEY_ID", "only-the-key");
    expect_open_fails("s3:http://127.0.0.1:1/bucket", "must be set together");
    env_restore();
    unlink(path);
}

/* Nothing listens on port 1: connection refused, retried a bounded number of times. */
static void test_s3_unreachable(void **state)
{
    env_set("AWS_ACCESS_KEY_ID", "k");
    env_set("AWS_SECRET_ACCESS_KEY", "s");
    env_set(BACKEND_S3_ENV_RETRIES, "3");
    env_set(BACKEND_S3_ENV_RETRY_DELAY_MS, "10");
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env("s3:http://127.0.0.1:1/bucket/p", false, &b, &e), 0);
    struct buf out = BUF_INIT;
    double t0 = now_s();
    assert_int_equal(backend_load(b, "config", 0, 0, &out, &e), ERR_FAIL);
    assert_true(now_s() - t0 < 5);
    assert_non_null(strstr(e.msg, "GET of config"));
    assert_non_null(strstr(e.msg, "connect"));
    if (!strstr(e.msg, "gave up after 4 attempts")) fail_msg("%s", e.msg);
    backend_close(b);
    /* init on an unreachable server fails in open */
    b = NULL;
    assert_int_equal(open_env("s3:http://127.0.0.1:1/bucket/p", true, &b, &e), ERR_FAIL);
    assert_null(b);
    env_restore();
}

/* A server that never recovers: every request answered 503 (or dropped) by the proxy. The
 * error comes within bounded time, names the object and the operation, and says why. */
static void never_recovers(const char *fault, const char *needle)
{
    struct proxy p = {0};
    proxy_start(&p, "127.0.0.1:1", "--always", fault, "--delay-ms", "3000", NULL);
    char loc[128];
    snprintf(loc, sizeof loc, "s3:http://127.0.0.1:%d/bucket/prefix", p.port);
    env_set("AWS_ACCESS_KEY_ID", "k");
    env_set("AWS_SECRET_ACCESS_KEY", "s");
    env_set(BACKEND_S3_ENV_RETRIES, "4");
    env_set(BACKEND_S3_ENV_RETRY_DELAY_MS, "20");
    env_set(BACKEND_S3_ENV_STALL_TIMEOUT, "1");
    env_set(BACKEND_S3_ENV_THROTTLE_TIME, "0"); /* the count alone: s3_throttle.sh tests the time */
    /* A region given: no requests at open to find the bucket's, only the ones counted here. */
    env_set(BACKEND_S3_ENV_REGION, "us-east-1");
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    double t0 = now_s();
    int rc = backend_save(b, "snapshots/0011", "x", 1, true, &e);
    double took = now_s() - t0;
    assert_int_equal(rc, ERR_FAIL);
    if (!strstr(e.msg, needle) || !strstr(e.msg, "PUT of snapshots/0011") ||
        !strstr(e.msg, "gave up after 5 attempts"))
        fail_msg("%s: unexpected message: %s", fault, e.msg);
    assert_true(took < 12);
    unsigned long requests, faults;
    proxy_stats(&p, &requests, &faults);
    assert_int_equal(requests, 5);
    printf("    %s: failed in %.2f s: %s\n", fault, took, e.msg);
    backend_close(b);
    proxy_stop(&p);
    env_restore();
}

static void test_s3_never_recovers(void **state)
{
    char exe[PATH_MAX];
    if (!proxy_path(exe, sizeof exe)) skip();
    never_recovers("503", "HTTP 503 SlowDown");
    never_recovers("500", "HTTP 500 InternalError");
    never_recovers("drop", "Server returned nothing");
    never_recovers("delay", "Timeout was reached");
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* What goes on the wire, seen through the proxy's log (every answer is a 503, no server
 * needed): path-style and virtual-hosted URLs, the prefix, ranges, the listing query, the
 * session token and the payload hash. */
static void test_s3_requests_on_the_wire(void **state)
{
    char exe[PATH_MAX];
    if (!proxy_path(exe, sizeof exe)) skip();
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s/pv-proxy-log-%d", tmp, (int)getpid());
    unlink(log);
    struct proxy p = {0};
    proxy_start(&p, "127.0.0.1:1", "--always", "503", "--log", log, NULL);
    env_set("AWS_ACCESS_KEY_ID", "AKEXAMPLE");
    env_set("AWS_SECRET_ACCESS_KEY", "s");
    env_set("AWS_SESSION_TOKEN", "token-123");
    env_set(BACKEND_S3_ENV_RETRIES, "0");
    env_set(BACKEND_S3_ENV_THROTTLE_TIME, "0");
    env_set(BACKEND_S3_ENV_REGION, "eu-west-3");
    char loc[128], want[256];
    struct backend *b = NULL;
    struct buf out = BUF_INIT;
    struct err e;
    err_clear(&e);

    snprintf(loc, sizeof loc, "s3:http://127.0.0.1:%d/my-bucket/pre/fix/", p.port);
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    assert_int_equal(backend_load(b, "config", 0, 0, &out, &e), ERR_FAIL);
    assert_int_equal(backend_load(b, "data/00/ab", 10, 10, &out, &e), ERR_FAIL);
    assert_int_equal(backend_save(b, "keys/01", "abc", 3, true, &e), ERR_FAIL);
    size_t n = 0;
    assert_int_equal(backend_list(b, "snapshots/", count_cb, &n, &e), ERR_FAIL);
    backend_close(b);

    env_set(BACKEND_S3_ENV_VIRTUAL_HOST, "1");
    snprintf(loc, sizeof loc, "s3:http://localhost:%d/my-bucket", p.port);
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    assert_int_equal(backend_load(b, "config", 0, 0, &out, &e), ERR_FAIL);
    backend_close(b);

    const char *text = read_text(log);
    const char *needles[] = {
        "GET /my-bucket/pre/fix/config HTTP/1.1\r\n",
        "GET /my-bucket/pre/fix/data/00/ab HTTP/1.1\r\n",
        "Range: bytes=10-19\r\n",
        "PUT /my-bucket/pre/fix/keys/01 HTTP/1.1\r\n",
        /* sha256("abc") */
        "x-amz-content-sha256: "
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\r\n",
        "x-amz-content-sha256: "
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\r\n",
        "GET /my-bucket?list-type=2&max-keys=1000&prefix=pre%2Ffix%2Fsnapshots%2F HTTP/1.1\r\n",
        "x-amz-security-token: token-123\r\n",
        "/eu-west-3/s3/aws4_request",
        "Credential=AKEXAMPLE/",
        "GET /config HTTP/1.1\r\n",
    };
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        if (!strstr(text, needles[i]))
            fail_msg("not on the wire: %s\n--- log:\n%s", needles[i], text);
    /* the token is signed, not just sent */
    const char *signed_hdrs = strstr(text, "SignedHeaders=");
    assert_non_null(signed_hdrs);
    const char *eol = strchr(signed_hdrs, ',');
    assert_non_null(eol);
    assert_non_null(memmem(signed_hdrs, (size_t)(eol - signed_hdrs), "x-amz-security-token", 20));
    snprintf(want, sizeof want, "Host: my-bucket.localhost:%d\r\n", p.port);
    assert_non_null(strstr(text, want));
    buf_free(&out);
    proxy_stop(&p);
    unlink(log);
    env_restore();
}

/* ---- S3 checks against a real server ---- */

static struct backend *open_s3_with(const char *secret, const char *loc_override)
{
    env_set("AWS_SECRET_ACCESS_KEY", secret);
    char *loc = loc_override ? strdup(loc_override) : s3_run_location(NULL);
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    free(loc);
    return b;
}

static void test_s3_wrong_secret(void **state)
{
    if (!s3_available()) skip();
    struct backend *b = open_s3_with("not-the-secret", NULL);
    struct err e;
    struct buf out = BUF_INIT;
    uint64_t size;
    double t0 = now_s();
    err_clear(&e);
    assert_int_equal(backend_save(b, "config", "x", 1, false, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
    assert_null(strstr(e.msg, "attempts"));
    printf("    %s\n", e.msg);
    assert_int_equal(backend_load(b, "config", 0, 0, &out, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
    /* HEAD answers have no body: the code still shows */
    assert_int_equal(backend_stat(b, "config", &size, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
    size_t n = 0;
    assert_int_equal(backend_list(b, "", count_cb, &n, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
    assert_true(now_s() - t0 < 2);
    backend_close(b);
    env_restore();

    env_set("AWS_ACCESS_KEY_ID", "nobody-has-this-key");
    b = open_s3_with("x", NULL);
    err_clear(&e);
    assert_int_equal(backend_load(b, "config", 0, 0, &out, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "InvalidAccessKeyId"));
    backend_close(b);
    env_restore();
    buf_free(&out);
}

/* Through a proxy that breaks nothing and counts: a bad signature costs one request. */
static void test_s3_wrong_secret_counted(void **state)
{
    char exe[PATH_MAX];
    if (!s3_available() || !proxy_path(exe, sizeof exe)) skip();
    const char *path;
    char hp[128], loc[512];
    s3_split(hp, sizeof hp, &path);
    struct proxy p = {0};
    proxy_start(&p, hp, NULL);
    snprintf(loc, sizeof loc, "s3:http://127.0.0.1:%d%s/wrong-secret", p.port, path);
    struct backend *b = open_s3_with("not-the-secret", loc);
    struct err e;
    err_clear(&e);
    assert_int_equal(backend_save(b, "config", "x", 1, true, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
    unsigned long requests, faults;
    proxy_stats(&p, &requests, &faults);
    assert_int_equal(requests, 1);
    assert_int_equal(faults, 0);
    backend_close(b);
    proxy_stop(&p);
    env_restore();
}

/* Raw signed request for bucket housekeeping the backend does not offer (deleting a bucket). */
static long raw_request(const char *method, const char *url);

static void test_s3_buckets(void **state)
{
    if (!s3_available()) skip();
    const char *path;
    char hp[128], loc[256];
    s3_split(hp, sizeof hp, &path);
    uint8_t r[6];
    char hex[13];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    snprintf(loc, sizeof loc, "s3:http://%s/pv-test-%s/prefix", hp, hex);
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    /* A missing bucket is not a missing object. */
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    struct buf out = BUF_INIT;
    assert_int_equal(backend_load(b, "config", 0, 0, &out, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "NoSuchBucket"));
    assert_int_equal(backend_save(b, "config", "x", 1, false, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "NoSuchBucket"));
    backend_close(b);
    /* init creates it */
    assert_int_equal(open_env(loc, true, &b, &e), 0);
    save_ok(b, "config", "x", 1, false);
    check_load(b, "config", 0, 0, (const uint8_t *)"x", 1);
    assert_int_equal(backend_remove(b, "config", &e), 0);
    backend_close(b);
    /* and opening with create again is fine */
    assert_int_equal(open_env(loc, true, &b, &e), 0);
    backend_close(b);
    char url[256];
    snprintf(url, sizeof url, "http://%s/pv-test-%s", hp, hex);
    assert_int_equal(raw_request("DELETE", url), 204);
}

static void test_s3_credentials_file(void **state)
{
    if (!s3_available()) skip();
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/pv-creds-%d", tmp, (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "[default]\naws_access_key_id = %s\naws_secret_access_key = wrong\n"
            "[profile pv]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
            getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_ACCESS_KEY_ID"),
            getenv("AWS_SECRET_ACCESS_KEY"));
    fclose(f);
    env_set("AWS_ACCESS_KEY_ID", NULL);
    env_set("AWS_SECRET_ACCESS_KEY", NULL);
    env_set("AWS_SHARED_CREDENTIALS_FILE", path);
    env_set("AWS_PROFILE", "pv");
    char *loc = s3_run_location(NULL);
    struct backend *b = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(open_env(loc, true, &b, &e), 0);
    save_ok(b, "keys/0a", "k", 1, false);
    check_load(b, "keys/0a", 0, 0, (const uint8_t *)"k", 1);
    assert_int_equal(backend_remove(b, "keys/0a", &e), 0);
    backend_close(b);
    env_set("AWS_PROFILE", NULL); /* [default] has the wrong secret */
    assert_int_equal(open_env(loc, false, &b, &e), 0);
    assert_int_equal(backend_save(b, "keys/0b", "k", 1, true, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "SignatureDoesNotMatch"));
    backend_close(b);
    free(loc);
    env_restore();
    unlink(path);
}

/* Proof that the proxy of the flaky suite did break requests, and that they were retried. */
static void test_proxy_did_break(void **state)
{
    struct fixture *fx = *state;
    unsigned long requests, faults;
    proxy_stats(&fx->proxy, &requests, &faults);
    printf("    the proxy saw %lu requests and broke %lu of them\n", requests, faults);
    assert_true(faults >= 20);
    assert_true(faults < requests);
}

static long raw_request(const char *method, const char *url)
{
    CURL *h = curl_easy_init();
    assert_non_null(h);
    char region[64];
    snprintf(region, sizeof region, "aws:amz:us-east-1:s3");
    struct curl_slist *hdrs =
        curl_slist_append(NULL, "x-amz-content-sha256: "
                                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, region);
    curl_easy_setopt(h, CURLOPT_USERNAME, getenv("AWS_ACCESS_KEY_ID"));
    curl_easy_setopt(h, CURLOPT_PASSWORD, getenv("AWS_SECRET_ACCESS_KEY"));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    return status;
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest suite[] = {SUITE};
    /* env_reset: a failed check must not leave its environment to the next one */
    const struct CMUnitTest offline[] = {
        cmocka_unit_test_teardown(test_opts_and_kinds, env_reset),
        cmocka_unit_test_teardown(test_s3_locations, env_reset),
        cmocka_unit_test_teardown(test_s3_credentials, env_reset),
        cmocka_unit_test_teardown(test_s3_unreachable, env_reset),
        cmocka_unit_test_teardown(test_s3_never_recovers, env_reset),
        cmocka_unit_test_teardown(test_s3_requests_on_the_wire, env_reset),
        cmocka_unit_test_teardown(test_azure_settings, env_reset),
    };
    const struct CMUnitTest azure_only[] = {
        cmocka_unit_test_teardown(test_azure_wrong_key, env_reset),
        cmocka_unit_test_teardown(test_azure_no_container, env_reset),
    };
    const struct CMUnitTest s3_only[] = {
        cmocka_unit_test_teardown(test_s3_wrong_secret, env_reset),
        cmocka_unit_test_teardown(test_s3_wrong_secret_counted, env_reset),
        cmocka_unit_test_teardown(test_s3_buckets, env_reset),
        cmocka_unit_test_teardown(test_s3_credentials_file, env_reset),
    };
    const struct CMUnitTest flaky[] = {SUITE, cmocka_unit_test(test_proxy_did_break)};
    int failed = 0;
    printf("== the conformance suite on a local directory\n");
    failed += cmocka_run_group_tests_name("local", suite, setup_local, teardown);
    printf("== S3 checks that need no server\n");
    failed += cmocka_run_group_tests_name("s3-offline", offline, NULL, NULL);
    if (s3_available()) {
        printf("== the conformance suite on S3 at %s\n", getenv("PV_TEST_S3"));
        failed += cmocka_run_group_tests_name("s3", suite, setup_s3, teardown);
        printf("== S3 errors, buckets and credentials\n");
        failed += cmocka_run_group_tests_name("s3-specifics", s3_only, NULL, NULL);
        printf("== the conformance suite on S3 through pv_faultproxy breaking 15%% of requests\n");
        failed += cmocka_run_group_tests_name("s3-faulty-proxy", flaky, setup_s3_proxy, teardown);
    } else {
        printf("S3 conformance suite SKIPPED: PV_TEST_S3 and AWS_ACCESS_KEY_ID/"
               "AWS_SECRET_ACCESS_KEY are not set (eval \"$(tests/s3-env.sh)\" sets them)\n");
    }
    if (azure_available()) {
        printf("== the conformance suite on Azure Blob Storage at %s\n", getenv("PV_TEST_AZURE"));
        failed += cmocka_run_group_tests_name("azure", suite, setup_azure, teardown);
        printf("== Azure errors\n");
        failed += cmocka_run_group_tests_name("azure-specifics", azure_only, NULL, NULL);
        printf("== the conformance suite on Azure through pv_faultproxy breaking 15%% of "
               "requests\n");
        failed +=
            cmocka_run_group_tests_name("azure-faulty-proxy", flaky, setup_azure_proxy, teardown);
    } else {
        printf("Azure conformance suite SKIPPED: PV_TEST_AZURE and "
               "AZURE_STORAGE_CONNECTION_STRING are not set (eval \"$(tests/azure-env.sh)\" "
               "sets them)\n");
    }
    return failed;
}
