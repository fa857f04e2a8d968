/* lock.c - writer and prune locks with a refresh thread, stale detection, and the
 * pending-deletion marks that writers honour; see lock.h and docs/MAINTENANCE.md. */
#include "repo/lock.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "repo/index.h"
#include "repo/jsonf.h"
#include "repo/repo.h"

#define LOCK_DIR "locks"
#define LOCK_KIND "lock"
#define MARK_DIR "deletions"
#define MARK_KIND "deletions"
#define LOCK_JSON_MAX (64u * 1024)
#define MARK_JSON_MAX (256u * 1024 * 1024)
/* Listings redone because an object vanished while being read, before giving up. */
#define LIST_ATTEMPTS 20
/* The refresh thread wakes this often to look at the cancel flag (milliseconds). */
#define LOCK_TICK_MS 200

struct lock {
    struct repo *r;
    struct lock_options o;
    struct lock_info info; /* the current object; info.id changes at each refresh */

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool quit;
    volatile int stop; /* what lock_stop_flag hands out */
    bool lost;
    struct err lost_err;
    double last_ok;  /* boot-time clock of the last successful store of the lock */
    double next_try; /* boot-time clock of the next refresh attempt */
};

/* A clock that keeps running while the machine sleeps or the process is stopped, so that a
 * holder that was frozen notices on waking that others may have counted it stale. */
static double boot_clock(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Boot ID and PID namespace: two processes see each other's PIDs exactly when these agree. */
static void machine_id(char out[96])
{
    char boot[64] = "", ns[64] = "";
    out[0] = '\0';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f) {
        if (!fgets(boot, sizeof boot, f)) boot[0] = '\0';
        fclose(f);
    }
    boot[strcspn(boot, "\n")] = '\0';
    ssize_t k = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    if (!boot[0] || k <= 0) return;
    ns[k] = '\0';
    snprintf(out, 96, "%s/%s", boot, ns);
}

static uint32_t stale_of(uint32_t s)
{
    return s ? s : LOCK_STALE_SEC;
}

static const char *kind_name(enum lock_kind k)
{
    return k == LOCK_PRUNE ? "prune" : "backup";
}

/* ---- lock objects ---- */

int lock_info_encode(const struct lock_info *li, struct buf *out, struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    json_t *o = json_object();
    if (!o) return err_set(e, ERR_FAIL, "lock: out of memory");
    json_object_set_new(o, "kind", json_string(kind_name(li->kind)));
    json_object_set_new(o, "holder", json_string(oid_hex(&li->holder, hex)));
    json_object_set_new(o, "hostname", json_string(li->hostname));
    json_object_set_new(o, "machine", json_string(li->machine));
    json_object_set_new(o, "pid", json_integer(li->pid));
    json_object_set_new(o, "started", json_integer(li->started));
    json_object_set_new(o, "refreshed", json_integer(li->refreshed));
    int rc = jsonf_dump(o, out, "lock", e);
    json_decref(o);
    return rc;
}

static int copy_str(const json_t *o, const char *key, char *out, size_t cap, struct err *e)
{
    const char *s;
    int rc = jsonf_string(o, key, cap - 1, "lock", &s, e);
    if (rc == 0) snprintf(out, cap, "%s", s);
    return rc;
}

int lock_info_decode(const void *json, size_t len, struct lock_info *li, struct err *e)
{
    struct oid id = li->id;
    memset(li, 0, sizeof *li);
    li->id = id;
    json_t *o;
    int rc = jsonf_parse(json, len, LOCK_JSON_MAX, "lock", &o, e);
    if (rc < 0) return rc;
    const char *kind;
    uint64_t pid, started, refreshed;
    if ((rc = jsonf_string(o, "kind", 16, "lock", &kind, e)) < 0) goto out;
    if (strcmp(kind, "backup") == 0)
        li->kind = LOCK_BACKUP;
    else if (strcmp(kind, "prune") == 0)
        li->kind = LOCK_PRUNE;
    else {
        rc = err_set(e, ERR_FAIL, "lock: unknown kind \"%s\"", kind);
        goto out;
    }
    if ((rc = jsonf_hex(o, "holder", li->holder.b, OID_LEN, "lock", e)) < 0 ||
        (rc = copy_str(o, "hostname", li->hostname, sizeof li->hostname, e)) < 0 ||
        (rc = copy_str(o, "machine", li->machine, sizeof li->machine, e)) < 0 ||
        (rc = jsonf_uint(o, "pid", 0, INT32_MAX, "lock", &pid, e)) < 0 ||
        (rc = jsonf_uint(o, "started", 0, INT64_MAX, "lock", &started, e)) < 0 ||
        (rc = jsonf_uint(o, "refreshed", 0, INT64_MAX, "lock", &refreshed, e)) < 0)
        goto out;
    li->pid = (int64_t)pid;
    li->started = (int64_t)started;
    li->refreshed = (int64_t)refreshed;
    li->readable = true;
out:
    json_decref(o);
    return rc;
}

static void object_name(char out[96], const char *dir, const struct oid *id)
{
    char hex[OID_HEX_LEN + 1];
    snprintf(out, 96, "%s/%s", dir, oid_hex(id, hex));
}

static int remove_object(struct repo *r, const char *dir, const struct oid *id, struct err *e)
{
    char name[96];
    object_name(name, dir, id);
    int rc = backend_remove(repo_backend(r), name, e);
    if (rc == ERR_NOT_FOUND) return 0; /* already gone is what we wanted */
    if (rc < 0) return err_wrap(e, "removing %s", name);
    return 0;
}

/* Stores the lock with a fresh `refreshed` time under a new ID, then removes the old object.
 * The new object exists before the old one goes, so a listing never misses the holder (lock_list
 * relists when an object vanishes under it). */
static int store_lock(struct lock *l, struct err *e)
{
    struct lock_info li;
    pthread_mutex_lock(&l->mu);
    li = l->info;
    pthread_mutex_unlock(&l->mu);
    li.refreshed = (int64_t)time(NULL);
    struct buf json = BUF_INIT;
    struct oid id;
    int rc = lock_info_encode(&li, &json, e);
    if (rc == 0) rc = repo_save_file(l->r, LOCK_DIR, LOCK_KIND, json.data, json.len, &id, e);
    buf_free(&json);
    if (rc < 0) return rc;
    bool had_old = !oid_is_zero(&li.id);
    struct oid old = li.id;
    pthread_mutex_lock(&l->mu);
    l->info.id = id;
    l->info.refreshed = li.refreshed;
    pthread_mutex_unlock(&l->mu);
    if (had_old) {
        struct err ignored; /* a leftover old object only goes stale */
        remove_object(l->r, LOCK_DIR, &old, &ignored);
    }
    return 0;
}

static void *refresh_main(void *arg)
{
    struct lock *l = arg;
    uint32_t stale = stale_of(l->o.stale_sec);
    uint32_t refresh = l->o.refresh_sec ? l->o.refresh_sec : LOCK_REFRESH_SEC;
    /* Give up the lock well before anyone may count it stale. */
    double lost_after = stale - stale / 5.0;
    double retry = refresh / 10.0;
    pthread_mutex_lock(&l->mu);
    while (!l->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += LOCK_TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        if (l->quit) break;
        if (l->o.cancel && *l->o.cancel) l->stop = 1;
        if (l->lost) continue;
        double now = boot_clock();
        if (now - l->last_ok >= lost_after) {
            l->lost = true;
            l->stop = 1;
            char last[ERR_MSG_MAX]; /* err_set must not read the buffer it writes */
            memcpy(last, l->lost_err.msg, sizeof last);
            err_set(&l->lost_err, ERR_FAIL,
                    "lost the repository lock: it could not be refreshed for %.0f s (others "
                    "count it stale after %u s)%s%s",
                    now - l->last_ok, stale, last[0] ? "; last error: " : "", last);
            continue;
        }
        if (now < l->next_try) continue;
        pthread_mutex_unlock(&l->mu);
        struct err e;
        err_clear(&e);
        int rc = store_lock(l, &e);
        double done = boot_clock();
        pthread_mutex_lock(&l->mu);
        if (rc == 0) {
            l->last_ok = done;
            l->next_try = done + refresh;
            err_clear(&l->lost_err);
        } else {
            l->next_try = done + retry;
            l->lost_err = e;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static struct lock *lock_new(struct repo *r, const struct lock_options *o)
{
    struct lock *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->r = r;
    l->o = *o;
    l->info.kind = o->kind;
    oid_random(&l->info.holder);
    if (gethostname(l->info.hostname, sizeof l->info.hostname) < 0)
        snprintf(l->info.hostname, sizeof l->info.hostname, "unknown");
    l->info.hostname[sizeof l->info.hostname - 1] = '\0';
    machine_id(l->info.machine);
    l->info.pid = (int64_t)getpid();
    l->info.started = (int64_t)time(NULL);
    l->info.readable = true;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    return l;
}

static void stop_thread(struct lock *l)
{
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    l->quit = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->started = false;
}

static void lock_destroy(struct lock *l)
{
    stop_thread(l);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

/* Another live prune lock, if any (its info in *other). */
static int find_other_prune(struct lock *l, bool *found, struct lock_info *other, struct err *e)
{
    struct lock_info *list;
    size_t n;
    *found = false;
    int rc = lock_list(l->r, &list, &n, e);
    if (rc < 0) return rc;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n && !*found; i++) {
        if (!list[i].readable || list[i].kind != LOCK_PRUNE) continue;
        if (oid_eq(&list[i].holder, &l->info.holder)) continue;
        if (lock_is_stale(&list[i], now, l->o.stale_sec)) continue;
        *other = list[i];
        *found = true;
    }
    free(list);
    return 0;
}

static void sleep_sec(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int lock_acquire(struct repo *r, const struct lock_options *o, struct lock **out, struct err *e)
{
    *out = NULL;
    struct lock *l = lock_new(r, o);
    if (!l) return err_set(e, ERR_FAIL, "lock: out of memory");
    double t0 = boot_clock();
    int rc;
    for (;;) {
        memset(&l->info.id, 0, sizeof l->info.id);
        if ((rc = store_lock(l, e)) < 0) {
            err_wrap(e, "creating a %s lock", kind_name(o->kind));
            goto fail;
        }
        if (o->kind != LOCK_PRUNE) break;
        /* Mutual exclusion without trusting clocks: each prune stores its lock, then lists;
         * whoever sees another live prune lock backs off. Of two prunes, the one that listed
         * last sees the other, so two never both go on (both may back off and retry). */
        bool busy;
        struct lock_info other;
        rc = find_other_prune(l, &busy, &other, e);
        if (rc == 0 && !busy) break;
        struct err ignored;
        remove_object(r, LOCK_DIR, &l->info.id, &ignored);
        if (rc < 0) goto fail;
        if (o->cancel && *o->cancel) {
            rc = err_set(e, ERR_CANCELED, "canceled while waiting for the prune lock");
            goto fail;
        }
        double waited = boot_clock() - t0;
        if (waited >= o->wait_sec) {
            char hex[OID_HEX_LEN + 1];
            int64_t age = (int64_t)time(NULL) - other.refreshed;
            rc = err_set(e, ERR_EXISTS,
                         "another maintenance operation is running on this repository: prune "
                         "lock %s of %s (pid %lld), refreshed %llds ago; it counts as ended "
                         "once not refreshed for %us",
                         oid_hex(&other.id, hex), other.hostname, (long long)other.pid,
                         (long long)age, stale_of(o->stale_sec));
            goto fail;
        }
        /* Random back-off, so two prunes that saw each other do not meet again. */
        struct oid rnd;
        uint32_t jitter;
        oid_random(&rnd);
        memcpy(&jitter, rnd.b, sizeof jitter);
        double pause = 0.2 + (jitter % 1000) / 1000.0;
        if (pause > o->wait_sec - waited) pause = o->wait_sec - waited;
        sleep_sec(pause);
    }
    l->last_ok = boot_clock();
    l->next_try = l->last_ok + (o->refresh_sec ? o->refresh_sec : LOCK_REFRESH_SEC);
    if (pthread_create(&l->thread, NULL, refresh_main, l) != 0) {
        struct err ignored;
        remove_object(r, LOCK_DIR, &l->info.id, &ignored);
        rc = err_set(e, ERR_FAIL, "lock: cannot start the refresh thread");
        goto fail;
    }
    l->started = true;
    *out = l;
    return 0;
fail:
    lock_destroy(l);
    return rc;
}

int lock_writer_begin(struct repo *r, const volatile int *cancel, struct lock **out, struct err *e)
{
    struct lock_options o = {.kind = LOCK_BACKUP, .cancel = cancel};
    return lock_acquire(r, &o, out, e);
}

const volatile int *lock_stop_flag(struct lock *l)
{
    return &l->stop;
}

bool lock_lost(struct lock *l, struct err *why)
{
    pthread_mutex_lock(&l->mu);
    bool lost = l->lost;
    if (lost && why) *why = l->lost_err;
    pthread_mutex_unlock(&l->mu);
    return lost;
}

const struct oid *lock_holder(const struct lock *l)
{
    return &l->info.holder;
}

int lock_release(struct lock *l, struct err *e)
{
    if (!l) return 0;
    struct repo *r = l->r;
    stop_thread(l);
    struct oid id = l->info.id;
    lock_destroy(l);
    int rc = remove_object(r, LOCK_DIR, &id, e);
    if (rc < 0) return err_wrap(e, "releasing the repository lock");
    return 0;
}

/* ---- listing ---- */

int lock_list(struct repo *r, struct lock_info **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    struct buf plain = BUF_INIT;
    for (int attempt = 0; attempt < LIST_ATTEMPTS; attempt++) {
        struct oid *ids = NULL;
        size_t n_ids = 0;
        int rc = repo_list_ids(r, LOCK_DIR, &ids, &n_ids, e);
        if (rc == ERR_NOT_FOUND) {
            rc = 0;
            n_ids = 0;
        }
        if (rc < 0) return err_wrap(e, "listing locks");
        struct lock_info *list = calloc(n_ids ? n_ids : 1, sizeof *list);
        if (!list) {
            free(ids);
            return err_set(e, ERR_FAIL, "listing locks: out of memory");
        }
        bool vanished = false;
        for (size_t i = 0; i < n_ids && rc == 0; i++) {
            buf_reset(&plain);
            struct err le;
            list[i].id = ids[i];
            int lrc = repo_load_file(r, LOCK_DIR, LOCK_KIND, &ids[i], &plain, &le);
            if (lrc == 0) lrc = lock_info_decode(plain.data, plain.len, &list[i], &le);
            if (lrc == ERR_NOT_FOUND) {
                vanished = true;
                break;
            }
            if (lrc < 0 && lrc != ERR_AUTH && lrc != ERR_FAIL) {
                rc = lrc;
                *e = le;
            }
            if (lrc < 0) list[i].readable = false;
        }
        free(ids);
        if (rc < 0) {
            free(list);
            buf_free(&plain);
            return err_wrap(e, "reading locks");
        }
        if (vanished) {
            free(list);
            continue;
        }
        buf_free(&plain);
        *out = list;
        *n = n_ids;
        return 0;
    }
    buf_free(&plain);
    return err_set(e, ERR_FAIL, "listing locks: they kept changing during %d listings",
                   LIST_ATTEMPTS);
}

bool lock_is_stale(const struct lock_info *l, int64_t now, uint32_t stale_sec)
{
    if (!l->readable) return false;
    if (l->refreshed + (int64_t)stale_of(stale_sec) < now) return true;
    char here[96];
    machine_id(here);
    if (!here[0] || strcmp(here, l->machine) != 0 || l->pid <= 0) return false;
    /* Same machine and PID namespace: a process that no longer exists holds nothing. A reused
     * PID only makes the lock look live, which is the safe mistake. */
    if (l->pid == (int64_t)getpid()) return false;
    return kill((pid_t)l->pid, 0) < 0 && errno == ESRCH;
}

int lock_remove_stale(struct repo *r, int64_t now, uint32_t stale_sec, size_t *removed,
                      struct err *e)
{
    if (removed) *removed = 0;
    struct lock_info *list;
    size_t n;
    int rc = lock_list(r, &list, &n, e);
    if (rc < 0) return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!lock_is_stale(&list[i], now, stale_sec)) continue;
        rc = remove_object(r, LOCK_DIR, &list[i].id, e);
        if (rc == 0 && removed) (*removed)++;
    }
    free(list);
    return rc;
}

/* ---- marks ---- */

static int cmp_oid(const void *a, const void *b)
{
    return oid_cmp(a, b);
}

static json_t *oid_array(const struct oid *ids, size_t n)
{
    json_t *a = json_array();
    char hex[OID_HEX_LEN + 1];
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(oid_hex(&ids[i], hex))) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static int read_oid_array(const json_t *o, const char *key, struct oid **out, size_t *n,
                          struct err *e)
{
    const json_t *a = json_object_get(o, key);
    *out = NULL;
    *n = 0;
    if (!a) return err_set(e, ERR_FAIL, "deletions: field \"%s\" is missing", key);
    if (!json_is_array(a))
        return err_set(e, ERR_FAIL, "deletions: field \"%s\" is not an array", key);
    size_t k = json_array_size(a); /* bounded by the document's size */
    struct oid *ids = malloc((k ? k : 1) * sizeof *ids);
    if (!ids) return err_set(e, ERR_FAIL, "deletions: out of memory");
    for (size_t i = 0; i < k; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !oid_parse(s, &ids[i])) {
            free(ids);
            return err_set(e, ERR_FAIL, "deletions: \"%s\"[%zu] is not an ID", key, i);
        }
    }
    if (k) qsort(ids, k, sizeof *ids, cmp_oid);
    *out = ids;
    *n = k;
    return 0;
}

int lock_mark_decode(const void *json, size_t len, struct lock_mark *m, struct err *e)
{
    struct oid id = m->id;
    memset(m, 0, sizeof *m);
    m->id = id;
    json_t *o;
    int rc = jsonf_parse(json, len, MARK_JSON_MAX, "deletions", &o, e);
    if (rc < 0) return rc;
    uint64_t at;
    rc = jsonf_uint(o, "marked_at", 0, INT64_MAX, "deletions", &at, e);
    if (rc == 0) rc = read_oid_array(o, "packs", &m->packs, &m->n_packs, e);
    if (rc == 0) rc = read_oid_array(o, "snapshots", &m->snapshots, &m->n_snapshots, e);
    if (rc == 0 && json_object_get(o, "waiting")) {
        m->has_waiting = true;
        rc = read_oid_array(o, "waiting", &m->waiting, &m->n_waiting, e);
    }
    m->marked_at = (int64_t)at;
    json_decref(o);
    if (rc < 0) {
        lock_mark_free(m);
        m->id = id;
    }
    return rc;
}

void lock_mark_free(struct lock_mark *m)
{
    if (!m) return;
    free(m->packs);
    free(m->snapshots);
    free(m->waiting);
    memset(m, 0, sizeof *m);
}

void lock_marks_free(struct lock_mark *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++)
        lock_mark_free(&m[i]);
    free(m);
}

int lock_marks_load(struct repo *r, struct lock_mark **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    struct buf plain = BUF_INIT;
    for (int attempt = 0; attempt < LIST_ATTEMPTS; attempt++) {
        struct oid *ids = NULL;
        size_t n_ids = 0;
        int rc = repo_list_ids(r, MARK_DIR, &ids, &n_ids, e);
        if (rc == ERR_NOT_FOUND) {
            rc = 0;
            n_ids = 0;
        }
        if (rc < 0) return err_wrap(e, "listing pending deletions");
        struct lock_mark *list = calloc(n_ids ? n_ids : 1, sizeof *list);
        if (!list) {
            free(ids);
            return err_set(e, ERR_FAIL, "listing pending deletions: out of memory");
        }
        bool vanished = false;
        size_t got = 0;
        char hex[OID_HEX_LEN + 1];
        for (; got < n_ids && rc == 0; got++) {
            buf_reset(&plain);
            list[got].id = ids[got];
            rc = repo_load_file(r, MARK_DIR, MARK_KIND, &ids[got], &plain, e);
            if (rc == 0) rc = lock_mark_decode(plain.data, plain.len, &list[got], e);
            if (rc == ERR_NOT_FOUND) {
                vanished = true;
                rc = 0;
                break;
            }
            if (rc < 0) err_wrap(e, "deletions/%s", oid_hex(&ids[got], hex));
        }
        free(ids);
        if (rc < 0 || vanished) {
            lock_marks_free(list, n_ids);
            if (rc < 0) {
                buf_free(&plain);
                return rc;
            }
            continue;
        }
        buf_free(&plain);
        *out = list;
        *n = n_ids;
        return 0;
    }
    buf_free(&plain);
    return err_set(e, ERR_FAIL, "listing pending deletions: they kept changing during %d listings",
                   LIST_ATTEMPTS);
}

int lock_mark_encode(struct lock_mark *m, struct buf *out, struct err *e)
{
    if (m->n_packs) qsort(m->packs, m->n_packs, sizeof *m->packs, cmp_oid);
    if (m->n_snapshots) qsort(m->snapshots, m->n_snapshots, sizeof *m->snapshots, cmp_oid);
    if (m->n_waiting) qsort(m->waiting, m->n_waiting, sizeof *m->waiting, cmp_oid);
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "marked_at", json_integer(m->marked_at));
        json_object_set_new(o, "packs", oid_array(m->packs, m->n_packs));
        json_object_set_new(o, "snapshots", oid_array(m->snapshots, m->n_snapshots));
        if (m->has_waiting) json_object_set_new(o, "waiting", oid_array(m->waiting, m->n_waiting));
    }
    if (!o || json_object_size(o) != 3u + m->has_waiting) {
        json_decref(o);
        return err_set(e, ERR_FAIL, "deletions: out of memory");
    }
    int rc = jsonf_dump(o, out, "deletions", e);
    json_decref(o);
    return rc;
}

int lock_mark_save(struct repo *r, struct lock_mark *m, struct err *e)
{
    struct buf json = BUF_INIT;
    int rc = lock_mark_encode(m, &json, e);
    if (rc == 0) rc = repo_save_file(r, MARK_DIR, MARK_KIND, json.data, json.len, &m->id, e);
    buf_free(&json);
    if (rc < 0) return err_wrap(e, "marking %zu packs for deletion", m->n_packs);
    return 0;
}

int lock_mark_remove(struct repo *r, const struct oid *id, struct err *e)
{
    return remove_object(r, MARK_DIR, id, e);
}

/* ---- the writer's index load ---- */

int lock_load_index(struct repo *r, size_t *n_marked, struct err *e)
{
    if (n_marked) *n_marked = 0;
    struct lock_mark *marks;
    size_t n_marks;
    int rc = lock_marks_load(r, &marks, &n_marks, e);
    if (rc < 0) return rc;
    size_t total = 0;
    for (size_t i = 0; i < n_marks; i++)
        total += marks[i].n_packs;
    struct oid *packs = malloc((total ? total : 1) * sizeof *packs);
    if (!packs) {
        lock_marks_free(marks, n_marks);
        return err_set(e, ERR_FAIL, "loading the index: out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n_marks; i++) {
        memcpy(packs + k, marks[i].packs, marks[i].n_packs * sizeof *packs);
        k += marks[i].n_packs;
    }
    lock_marks_free(marks, n_marks);

    /* An index file that prune replaced may vanish between the listing and its load; a new
     * listing then finds its replacement. */
    for (int attempt = 0; attempt < LIST_ATTEMPTS; attempt++) {
        rc = repo_load_index(r, e);
        if (rc != ERR_NOT_FOUND) break;
    }
    if (rc == 0 && total) {
        repo_index_lock(r, true);
        rc = idx_forget_packs(repo_index(r), packs, total, NULL, e);
        repo_index_unlock(r);
    }
    free(packs);
    if (rc < 0) return rc;
    if (n_marked) *n_marked = total;
    return 0;
}
