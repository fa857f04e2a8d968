/* maintjob.c - maintenance of every repository under a BackupStorageLocation (see maintjob.h). */
#include "agent/maintjob.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/asys.h"
#include "agent/gc.h"
#include "agent/job.h"
#include "agent/k8s.h"
#include "agent/repoloc.h"
#include "agent/runner.h"
#include "backend/backend.h"
#include "base/contract.h"
#include "repo/maintain.h"

extern char **environ;

/* --- decisions */

int maintjob_pick_location(const json_t *items, const char *name, const char *ns,
                           const json_t **out, struct err *e)
{
    const json_t *found = NULL, *it;
    char names[512] = "", defaults[512] = "";
    size_t i, n_default = 0;
    *out = NULL;
    json_array_foreach(items, i, it)
    {
        const char *n = k8s_str(it, "metadata.name");
        if (!n) continue;
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", n);
        if (name) {
            if (strcmp(n, name) == 0) found = it;
        } else if (json_is_true(k8s_at(it, "spec.default"))) {
            used = strlen(defaults);
            snprintf(defaults + used, sizeof defaults - used, "%s%s", used ? ", " : "", n);
            if (n_default++ == 0) found = it;
        }
    }
    if (n_default > 1)
        return err_set(e, ERR_FAIL,
                       "several BackupStorageLocations in namespace %s are marked default (%s); "
                       "name one with --location",
                       ns, defaults);
    if (!found && name)
        return err_set(e, ERR_NOT_FOUND,
                       "BackupStorageLocation %s does not exist in namespace %s (there: %s)", name,
                       ns, *names ? names : "none");
    if (!found)
        return err_set(e, ERR_NOT_FOUND,
                       "no BackupStorageLocation in namespace %s is marked default "
                       "(spec.default: true); name one with --location (there: %s)",
                       ns, *names ? names : "none");
    *out = found;
    return 0;
}

int maintjob_repos_add(struct maintjob_repos *r, const char *listed_name)
{
    const char *slash = strchr(listed_name, '/');
    if (!slash || slash == listed_name || strcmp(slash + 1, "config") != 0) return 0;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        char **v = realloc(r->ns, cap * sizeof *v);
        if (!v) return -1;
        r->ns = v;
        r->cap = cap;
    }
    if (!(r->ns[r->n] = strndup(listed_name, (size_t)(slash - listed_name)))) return -1;
    r->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void maintjob_repos_finish(struct maintjob_repos *r)
{
    if (!r->n) return;
    qsort(r->ns, r->n, sizeof *r->ns, cmp_str);
    size_t k = 1;
    for (size_t i = 1; i < r->n; i++) {
        if (strcmp(r->ns[i], r->ns[k - 1]) == 0)
            free(r->ns[i]);
        else
            r->ns[k++] = r->ns[i];
    }
    r->n = k;
}

void maintjob_repos_free(struct maintjob_repos *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->ns[i]);
    free(r->ns);
    memset(r, 0, sizeof *r);
}

/* --- reading the location */

static int load_location(const struct maintjob_config *c, struct k8s_client *k, json_t **bsl,
                         struct err *e)
{
    char *p = k8s_path(&K8S_BSLS, c->namespace, c->location, NULL);
    json_t *got = NULL;
    int rc = p ? k8s_get(k, p, &got, e) : err_set(e, ERR_FAIL, "out of memory");
    free(p);
    if (rc == ERR_NOT_FOUND && c->location)
        return err_set(e, rc, "BackupStorageLocation %s does not exist in namespace %s",
                       c->location, c->namespace);
    if (rc < 0) return err_wrap(e, "reading BackupStorageLocations in namespace %s", c->namespace);
    if (c->location) {
        *bsl = got;
        return 0;
    }
    const json_t *pick;
    rc = maintjob_pick_location(json_object_get(got, "items"), NULL, c->namespace, &pick, e);
    *bsl = rc == 0 ? json_incref((json_t *)pick) : NULL;
    json_decref(got);
    return rc;
}

/* The variable `name` of the children's environment, as their getenv would find it. */
static const char *child_var(void *ctx, const char *name)
{
    const struct asys_strv *envp = ctx;
    size_t n = strlen(name);
    for (size_t i = 0; i < envp->n; i++)
        if (strncmp(envp->v[i], name, n) == 0 && envp->v[i][n] == '=') return envp->v[i] + n + 1;
    return NULL;
}

/* The settings this process opens the location's backend with: those its `podvault` children
 * get, from their environment and the location's options (repoloc.h), an option beating a
 * variable as on their command line. Strings point into `l` and `envp`. */
static int location_opts(const struct repoloc *l, const struct asys_strv *envp,
                         struct backend_opts *o, struct err *e)
{
    backend_opts_default(o);
    if (backend_opts_from_vars(o, child_var, (void *)envp, e) < 0) return e->code;
    for (size_t i = 0; i < l->n_args; i++) {
        const char *a = l->args[i], *v = i + 1 < l->n_args ? l->args[i + 1] : NULL;
        if (strcmp(a, "--s3-region") == 0 && v && ++i)
            o->region = v;
        else if (strcmp(a, "--cacert") == 0 && v && ++i)
            o->cacert = v;
        else if (strcmp(a, "--insecure-tls") == 0)
            o->insecure_tls = true;
        else if (strcmp(a, "--s3-path-style") == 0)
            o->addressing = BACKEND_ADDR_PATH;
    }
    return 0;
}

static int on_listed(void *ctx, const char *name, uint64_t size)
{
    (void)size;
    return maintjob_repos_add(ctx, name) < 0 ? 1 : 0;
}

/* Lists `base` (the location's plugins/podvault/ folder, or the old podvault/ one). A directory
 * that does not exist yet holds no repository. */
static int find_repos(const char *base, const struct backend_opts *o, struct maintjob_repos *r,
                      struct err *e)
{
    struct backend *b;
    enum backend_kind kind;
    int rc = backend_parse_kind(base, &kind, e);
    if (rc == 0) rc = backend_open(base, o, false, &b, e);
    if (rc == ERR_NOT_FOUND && kind == BACKEND_LOCAL) return 0;
    if (rc < 0) return err_wrap(e, "opening %s", base);
    rc = backend_list(b, "", on_listed, r, e);
    backend_close(b);
    if (rc > 0) return err_set(e, ERR_FAIL, "listing %s: out of memory", base);
    if (rc < 0) return err_wrap(e, "listing the repositories at %s", base);
    maintjob_repos_finish(r);
    return 0;
}

/* Repositories at the place earlier builds used (repoloc.h) are not maintained: each is an
 * error naming the command that moves it, as long as it is there. Returns how many. */
static size_t report_legacy(const json_t *bsl, const struct repoloc *base,
                            const struct backend_opts *o, const char *scratch)
{
    struct maintjob_repos old = {0};
    struct err e;
    err_clear(&e);
    if (find_repos(base->legacy, o, &old, &e) < 0) {
        asys_log(ASYS_ERROR, "BackupStorageLocation", NULL, k8s_str(bsl, "metadata.name"), "%s",
                 e.msg);
        return 1;
    }
    for (size_t i = 0; i < old.n; i++) {
        struct repoloc l;
        if (repoloc_from_bsl(bsl, old.ns[i], scratch, &l, &e) < 0) {
            asys_log(ASYS_ERROR, "Repository", NULL, old.ns[i], "%s", e.msg);
            continue;
        }
        asys_log(ASYS_ERROR, "Repository", NULL, old.ns[i],
                 "the repository at %s is where earlier podvault builds put it: Velero marks the "
                 "location Unavailable while it is there, and podvault no longer uses it. Move "
                 "it: %s",
                 l.legacy, l.move_hint);
        repoloc_free(&l);
    }
    size_t n = old.n;
    maintjob_repos_free(&old);
    return n;
}

/* --- children */

struct watch {
    struct job *j;
    const volatile sig_atomic_t *cancel;
    atomic_int done;
};

/* The signal handler only sets the flag; the child, in a process group of its own, is told here. */
static void *watch_cancel(void *arg)
{
    struct watch *w = arg;
    while (!atomic_load(&w->done)) {
        if (*w->cancel) {
            job_cancel(w->j);
            break;
        }
        usleep(100 * 1000);
    }
    return NULL;
}

static uint64_t field(const json_t *o, const char *path)
{
    json_int_t v = json_integer_value(k8s_at(o, path));
    return v > 0 ? (uint64_t)v : 0;
}

/* Logs what the child reported; returns whether the repository's maintenance succeeded. */
static bool report(const char *ns, const struct repoloc *loc, const struct runner_env *env,
                   const struct job_result *jr)
{
    const json_t *s = jr->summary;
    const char *ran = k8s_str(s, "ran"), *err = k8s_str(s, "error");
    if (jr->exit_code == 0 && json_is_true(json_object_get(s, "ok")) && ran) {
        if (strcmp(ran, maint_kind_name(MAINT_NONE)) == 0)
            asys_log(ASYS_INFO, "Repository", NULL, ns,
                     "maintenance of %s: nothing was due (next quick run %s, full run %s)",
                     loc->location, k8s_str(s, "next_quick") ?: "?",
                     k8s_str(s, "next_full") ?: "?");
        else
            asys_log(ASYS_INFO, "Repository", NULL, ns,
                     "maintenance of %s: %s run done: %llu packs deleted, %llu bytes freed, %llu "
                     "packs wait for running backups%s",
                     loc->location, ran, (unsigned long long)field(s, "prune.packs_deleted"),
                     (unsigned long long)field(s, "prune.bytes_freed"),
                     (unsigned long long)field(s, "prune.packs_pending"),
                     json_object_get(s, "check") ? ", check found no errors" : "");
        return true;
    }
    char why[1024];
    if (err && *err)
        snprintf(why, sizeof why, "%s", err);
    else
        runner_explain(jr->exit_code, jr, loc, env, why, sizeof why);
    asys_log(ASYS_ERROR, "Repository", NULL, ns, "maintenance of %s FAILED (exit code %d): %s",
             loc->location, jr->exit_code, why);
    return false;
}

/* Runs one child to its end; SIGTERM to the job reaches it. Its stdout goes to `out` unless
 * NULL. */
static int run_watched(const struct maintjob_config *c, const struct asys_strv *argv,
                       const struct asys_strv *envp, struct buf *out, struct job_result *jr,
                       struct err *e)
{
    struct job *j;
    memset(jr, 0, sizeof *jr);
    if (job_start(asys_sv_list(argv), asys_sv_list(envp), &j, e) < 0) return e->code;
    struct watch w = {.j = j, .cancel = c->cancel};
    pthread_t t;
    bool watching = c->cancel && pthread_create(&t, NULL, watch_cancel, &w) == 0;
    int rc = job_wait(j, NULL, NULL, out, jr, e);
    atomic_store(&w.done, 1);
    if (watching) pthread_join(t, NULL);
    job_free(j);
    return rc;
}

/* The start of a child's command line: the location's options, the command, --no-cache. */
static int child_argv(const struct maintjob_config *c, const struct runner_env *env,
                      const struct repoloc *loc, const char *cmd, struct asys_strv *a)
{
    int bad = runner_base_argv(env, loc, a) | asys_sv_add(a, cmd);
    if (c->no_cache) bad |= asys_sv_add(a, "--no-cache");
    return bad ? -1 : 0;
}

/* --- forgetting the snapshots of deleted Velero backups (gc.h) */

#define GC_MAX_PER_RUN 1000 /* snapshots forgotten per repository and run; the rest next run */

struct gc_state {
    json_t *cluster;      /* UID -> name of every Backup; NULL: the list failed */
    json_t *location;     /* name -> UID or null, of what was read */
    json_t *tried;        /* every name read, whatever came of it */
    struct backend *root; /* the location's root; NULL: it could not be opened */
    const char *root_name;
};

static void gc_begin(const struct maintjob_config *c, struct k8s_client *k,
                     const struct repoloc *base, const struct backend_opts *o, struct gc_state *st)
{
    struct err e;
    err_clear(&e);
    memset(st, 0, sizeof *st);
    st->root_name = base->root;
    st->location = json_object();
    st->tried = json_object();
    char *p = k8s_path(&K8S_BACKUPS, c->namespace, NULL, NULL);
    json_t *list = NULL;
    int rc = p ? k8s_get(k, p, &list, &e) : err_set(&e, ERR_FAIL, "out of memory");
    free(p);
    const json_t *items = json_object_get(list, "items"), *it;
    if (rc == 0 && !json_is_array(items)) rc = err_set(&e, ERR_FAIL, "the list has no items");
    if (rc == 0 && (st->cluster = json_object())) {
        size_t i;
        json_array_foreach(items, i, it)
        {
            const char *uid = k8s_str(it, "metadata.uid"), *name = k8s_str(it, "metadata.name");
            if (uid) json_object_set_new(st->cluster, uid, json_string(name ? name : ""));
        }
    }
    json_decref(list);
    if (rc < 0)
        asys_log(ASYS_WARN, "BackupStorageLocation", c->namespace, NULL,
                 "listing Velero Backups in namespace %s failed: %s; no snapshot of a deleted "
                 "backup is forgotten in this run",
                 c->namespace, e.msg);
    if (backend_open(base->root, o, false, &st->root, &e) < 0) {
        st->root = NULL;
        asys_log(ASYS_WARN, "BackupStorageLocation", c->namespace, NULL,
                 "opening %s failed: %s; no snapshot of a deleted backup is forgotten in this run",
                 base->root, e.msg);
    }
}

static void gc_end(struct gc_state *st)
{
    json_decref(st->cluster);
    json_decref(st->location);
    json_decref(st->tried);
    if (st->root) backend_close(st->root);
    memset(st, 0, sizeof *st);
}

/* Reads backups/<name>/velero-backup.json once into st->location: its UID, null when it does
 * not exist; nothing when it could not be read (gc_decide then keeps). */
static void gc_read(struct gc_state *st, const char *name)
{
    if (!st->root || json_object_get(st->tried, name)) return;
    json_object_set_new(st->tried, name, json_true());
    char key[400];
    snprintf(key, sizeof key, "backups/%s/velero-backup.json", name);
    struct buf text = BUF_INIT;
    struct err e;
    err_clear(&e);
    json_t *doc = NULL;
    const char *uid = NULL;
    int rc = backend_load(st->root, key, 0, 0, &text, &e);
    if (rc == ERR_NOT_FOUND)
        json_object_set_new(st->location, name, json_null());
    else if (rc == 0 && gc_parse_backup_json(&text, &doc, &uid, &e) == 0)
        json_object_set_new(st->location, name, json_string(uid));
    else
        asys_log(ASYS_WARN, "Backup", NULL, name,
                 "reading %s/%s failed: %s; the snapshots of backup %s are kept", st->root_name,
                 key, e.msg, name);
    json_decref(doc);
    buf_free(&text);
}

/* `snapshots --json` of the repository into *list (an array); false, logged, on failure. */
static bool gc_list(const struct maintjob_config *c, const struct runner_env *env,
                    const struct asys_strv *envp, const struct repoloc *loc, const char *ns,
                    json_t **list)
{
    struct asys_strv a = {0};
    struct buf out = BUF_INIT;
    struct job_result jr = {0};
    struct err e;
    err_clear(&e);
    char why[1024] = "";
    *list = NULL;
    int rc = child_argv(c, env, loc, "snapshots", &a) < 0 ? err_set(&e, ERR_FAIL, "out of memory")
                                                          : run_watched(c, &a, envp, &out, &jr, &e);
    if (rc == 0 && jr.exit_code == 0) {
        *list = json_loadb(out.data ? (const char *)out.data : "", out.len, 0, NULL);
        if (!json_is_array(*list)) snprintf(why, sizeof why, "snapshots --json printed no array");
    } else if (rc == 0) {
        runner_explain(jr.exit_code, &jr, loc, env, why, sizeof why);
    } else {
        snprintf(why, sizeof why, "%s", e.msg);
    }
    if (why[0]) {
        json_decref(*list);
        *list = NULL;
        asys_log(ASYS_ERROR, "Repository", NULL, ns,
                 "listing the snapshots of %s FAILED: %s; none is forgotten", loc->location, why);
    }
    job_result_free(&jr);
    buf_free(&out);
    asys_sv_free(&a);
    return *list != NULL;
}

static void gc_log_each(const json_t *gone, const char *ns, const char *what)
{
    size_t i;
    const json_t *snap;
    json_array_foreach(gone, i, snap)
    {
        struct gc_owner o;
        gc_snapshot_owner(snap, &o);
        asys_log(ASYS_INFO, "Repository", NULL, ns,
                 "%s snapshot %s (%s, %s) of Velero backup %s (uid %s): the backup is gone from "
                 "the cluster and the location",
                 what, k8s_str(snap, "id"), k8s_str(snap, "hostname") ?: "?",
                 k8s_str(snap, "time") ?: "?", o.name, o.uid);
    }
}

/* Forgets, and prunes in the same child, the repository's snapshots whose Velero backup is
 * gone (with c->dry_run only logs them). Returns false, logged, on failure. */
static bool gc_repository(const struct maintjob_config *c, const struct runner_env *env,
                          const struct asys_strv *envp, const struct repoloc *loc, const char *ns,
                          struct gc_state *st)
{
    json_t *list, *gone = json_array(), *snap;
    if (!gone || !gc_list(c, env, envp, loc, ns, &list)) {
        json_decref(gone);
        return false;
    }
    struct gc_view view = {st->cluster, st->location};
    size_t i, unsure = 0;
    json_array_foreach(list, i, snap)
    {
        struct gc_owner o;
        bool owned = gc_snapshot_owner(snap, &o);
        if (owned && st->cluster && !json_object_get(st->cluster, o.uid)) gc_read(st, o.name);
        enum gc_verdict v = gc_decide(owned ? &o : NULL, &view);
        unsure += v == GC_KEEP_UNSURE;
        if (v == GC_FORGET && k8s_str(snap, "id") && json_array_size(gone) < GC_MAX_PER_RUN)
            json_array_append(gone, snap);
    }
    if (unsure)
        asys_log(ASYS_WARN, "Repository", NULL, ns, "%zu snapshots of %s are kept because %s",
                 unsure, loc->location, gc_verdict_name(GC_KEEP_UNSURE));
    bool ok = true;
    if (json_array_size(gone) && c->dry_run) {
        gc_log_each(gone, ns, "would forget");
    } else if (json_array_size(gone)) {
        struct asys_strv a = {0};
        struct job_result jr = {0};
        struct err e;
        err_clear(&e);
        int bad = child_argv(c, env, loc, "forget", &a) | asys_sv_add(&a, "--prune");
        json_array_foreach(gone, i, snap) bad |= asys_sv_add(&a, k8s_str(snap, "id"));
        int rc =
            bad ? err_set(&e, ERR_FAIL, "out of memory") : run_watched(c, &a, envp, NULL, &jr, &e);
        ok = rc == 0 && jr.exit_code == 0;
        if (ok) {
            gc_log_each(gone, ns, "forgot");
            asys_log(ASYS_INFO, "Repository", NULL, ns,
                     "forgot %zu snapshots of deleted Velero backups in %s; prune: %llu packs "
                     "deleted, %llu bytes freed, %llu packs wait for running backups",
                     json_array_size(gone), loc->location,
                     (unsigned long long)field(jr.summary, "prune.packs_deleted"),
                     (unsigned long long)field(jr.summary, "prune.bytes_freed"),
                     (unsigned long long)field(jr.summary, "prune.packs_pending"));
        } else {
            char why[1024];
            if (rc == 0) runner_explain(jr.exit_code, &jr, loc, env, why, sizeof why);
            asys_log(ASYS_ERROR, "Repository", NULL, ns,
                     "forgetting %zu snapshots of deleted Velero backups in %s FAILED: %s",
                     json_array_size(gone), loc->location, rc == 0 ? why : e.msg);
        }
        job_result_free(&jr);
        asys_sv_free(&a);
    }
    json_decref(gone);
    json_decref(list);
    return ok;
}

/* --- one repository */

static bool maintain_one(const struct maintjob_config *c, const struct runner_env *env,
                         const json_t *bsl, const struct asys_strv *envp, const char *ns,
                         struct gc_state *st)
{
    struct repoloc loc;
    struct asys_strv argv = {0};
    struct job_result jr = {0};
    struct err e;
    err_clear(&e);
    if (repoloc_from_bsl(bsl, ns, env->scratch_dir, &loc, &e) < 0) {
        asys_log(ASYS_ERROR, "Repository", NULL, ns, "%s", e.msg);
        return false;
    }
    asys_log(ASYS_INFO, "Repository", NULL, ns, "maintaining %s", loc.location);
    bool forgot = gc_repository(c, env, envp, &loc, ns, st), ok = false;
    int bad = child_argv(c, env, &loc, "maintain", &argv);
    for (size_t i = 0; i < c->n_maint_args; i++) {
        const struct maintjob_option *o = &c->maint_args[i];
        bad |= o->value ? asys_sv_addf(&argv, "--%s=%s", o->name, o->value)
                        : asys_sv_addf(&argv, "--%s", o->name);
    }
    int rc =
        bad ? err_set(&e, ERR_FAIL, "out of memory") : run_watched(c, &argv, envp, NULL, &jr, &e);
    if (rc < 0)
        asys_log(ASYS_ERROR, "Repository", NULL, ns, "maintenance of %s FAILED: %s", loc.location,
                 e.msg);
    else
        ok = report(ns, &loc, env, &jr);
    job_result_free(&jr);
    asys_sv_free(&argv);
    repoloc_free(&loc);
    return ok && forgot;
}

/* --- the whole job */

int maintjob_run(const struct maintjob_config *c)
{
    struct k8s_config kc = {0};
    struct k8s_client *k = NULL;
    json_t *bsl = NULL;
    struct repoloc base = {0};
    struct asys_strv envp = {0};
    struct maintjob_repos repos = {0};
    struct err e;
    err_clear(&e);
    /* A directory of its own for the location's CA file, which the children read. */
    char scratch[PATH_MAX];
    snprintf(scratch, sizeof scratch, "%s/podvault-maintain.XXXXXX", c->scratch_dir);
    if (!mkdtemp(scratch)) {
        err_sys(&e, errno, "making a scratch directory in %s", c->scratch_dir);
        asys_log(ASYS_ERROR, NULL, NULL, NULL, "%s", e.msg);
        return PV_EXIT_ERROR;
    }
    struct runner_env env = {.exe = c->exe,
                             .namespace = c->namespace,
                             .cache_dir = c->cache_dir,
                             .scratch_dir = scratch,
                             .credentials_file = c->k8s.credentials_file,
                             .base_env = (const char *const *)environ};
    int rc = k8s_opts_load(&c->k8s, &kc, &e);
    if (rc == 0) rc = k8s_client_new(&kc, c->cancel, &k, &e);
    if (rc == 0) rc = load_location(c, k, &bsl, &e);
    const char *name = rc == 0 ? k8s_str(bsl, "metadata.name") : c->location;
    if (rc == 0) rc = repoloc_from_bsl(bsl, NULL, scratch, &base, &e);
    if (rc == 0) rc = runner_child_env(&env, k, &base, bsl, &envp, &e);
    struct backend_opts bo;
    if (rc == 0) rc = location_opts(&base, &envp, &bo, &e);
    if (rc == 0) rc = find_repos(base.location, &bo, &repos, &e);
    if (rc < 0) {
        asys_log(ASYS_ERROR, "BackupStorageLocation", c->namespace, name, "%s", e.msg);
    } else {
        asys_log(ASYS_INFO, "BackupStorageLocation", c->namespace, name,
                 "%zu podvault repositories at %s", repos.n, base.location);
    }
    size_t failed = 0, done = 0;
    char failed_names[512] = "";
    size_t legacy = rc == 0 ? report_legacy(bsl, &base, &bo, scratch) : 0;
    struct gc_state gc = {0};
    if (rc == 0 && repos.n) gc_begin(c, k, &base, &bo, &gc);
    for (size_t i = 0; rc == 0 && i < repos.n && !(c->cancel && *c->cancel); i++, done++) {
        if (maintain_one(c, &env, bsl, &envp, repos.ns[i], &gc)) continue;
        size_t used = strlen(failed_names);
        snprintf(failed_names + used, sizeof failed_names - used, "%s%s", used ? ", " : "",
                 repos.ns[i]);
        failed++;
    }
    bool canceled = c->cancel && *c->cancel;
    if (rc == 0)
        asys_log(failed || canceled ? ASYS_ERROR : ASYS_INFO, "BackupStorageLocation", c->namespace,
                 name, "%zu of %zu repositories maintained%s%s%s", done - failed, repos.n,
                 failed ? "; failed: " : "", failed_names, canceled ? "; canceled" : "");
    char ca[PATH_MAX + 8];
    snprintf(ca, sizeof ca, "%s/ca.pem", scratch);
    unlink(ca);
    rmdir(scratch);
    gc_end(&gc);
    maintjob_repos_free(&repos);
    asys_sv_free(&envp);
    repoloc_free(&base);
    json_decref(bsl);
    k8s_client_free(k);
    k8s_config_free(&kc);
    if (canceled) return PV_EXIT_CANCELED;
    return rc < 0 || failed || legacy ? PV_EXIT_ERROR : PV_EXIT_OK;
}
