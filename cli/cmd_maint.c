/* cmd_maint.c - `podvault forget`, `prune`, `check`, `repair index` and `maintain`, and the
 * writer lock calls of `backup`. */
#include "cli/cmd_maint.h"

#include <jansson.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/maintjob.h"
#include "cli/format.h"
#include "cli/options.h"
#include "repo/check.h"
#include "repo/lock.h"
#include "repo/maintain.h"
#include "repo/prune.h"
#include "repo/repo.h"
#include "repo/retention.h"
#include "repo/walk.h"

/* ---- shared ---- */

/* Option values shared by several commands (below the filter options' 900s). */
enum {
    O_DRY_RUN = 1,
    O_PRUNE,
    O_MAX_UNUSED,
    O_MAX_MEMORY,
    O_THREADS,
    O_SMALL_PACK,
    O_QUICK,
    O_FULL,
    O_FORCE,
    O_LOCK_WAIT,
    O_READ_DATA,
    O_READ_SUBSET,
    O_KEEP_LAST,
    O_KEEP_HOURLY,
    O_KEEP_DAILY,
    O_KEEP_WEEKLY,
    O_KEEP_MONTHLY,
    O_KEEP_YEARLY,
    O_KEEP_WITHIN,
    O_KEEP_TAG,
    O_GROUP_BY,
    O_QUICK_EVERY,
    O_FULL_EVERY,
};

#define PRUNE_OPTIONS                                                                              \
    {"max-unused", required_argument, NULL, O_MAX_UNUSED},                                         \
        {"small-pack", required_argument, NULL, O_SMALL_PACK},                                     \
        {"max-memory", required_argument, NULL, O_MAX_MEMORY},                                     \
        {"threads", required_argument, NULL, O_THREADS},                                           \
    {                                                                                              \
        "lock-wait", required_argument, NULL, O_LOCK_WAIT                                          \
    }

#define PRUNE_OPTIONS_HELP                                                                         \
    "  --max-unused P%     unused space to tolerate, as a share of the repository (default 5%;\n"  \
    "                      \"unlimited\" never repacks for space)\n"                               \
    "  --small-pack SIZE   merge packs smaller than SIZE (default: a quarter of the pack size)\n"  \
    "  --threads N         reads and deletions at once (default 4)\n"                              \
    "  --max-memory SIZE   bound the index and tables (e.g. 256M, 2G; default: env\n"              \
    "                      PODVAULT_MAX_MEMORY, else none): beyond it, work in passes\n"           \
    "  --lock-wait SECONDS wait this long for another maintenance run to end (default 0)\n"

struct maint_args {
    struct prune_options prune;
    unsigned threads;
    uint32_t lock_wait;
};

#define MAX_MEMORY_ENV "PODVAULT_MAX_MEMORY"

/* The bound from the environment, for a CronJob; --max-memory overrides it. A bad value is
 * refused by maint_begin, which every command here passes. */
static bool env_max_memory(uint64_t *v)
{
    const char *s = getenv(MAX_MEMORY_ENV);
    *v = 0;
    return !s || !*s || opt_parse_size(s, v);
}

static void maint_args_init(struct maint_args *a)
{
    memset(a, 0, sizeof *a);
    prune_options_default(&a->prune);
    env_max_memory(&a->prune.max_memory);
}

/* Takes one of PRUNE_OPTIONS; returns 0, 1 when `opt` is not one, or an exit code (> 1). */
static int prune_option(struct cli *g, int opt, const char *arg, struct maint_args *a)
{
    uint64_t v;
    switch (opt) {
    case O_MAX_UNUSED: {
        if (strcmp(arg, "unlimited") == 0) {
            a->prune.max_unused = 1;
            return 0;
        }
        char *end;
        double p = strtod(arg, &end);
        if (end == arg || strcmp(end, "%") != 0 || !(p >= 0) || p > 100)
            return cli_usage_error(g, "--max-unused wants a share like 5%% or \"unlimited\"");
        a->prune.max_unused = p / 100;
        return 0;
    }
    case O_MAX_MEMORY:
        if (!opt_parse_size(arg, &v) || !v)
            return cli_usage_error(g, "--max-memory wants a size like 256M or 2G");
        a->prune.max_memory = v;
        return 0;
    case O_SMALL_PACK:
        if (!opt_parse_size(arg, &v)) return cli_usage_error(g, "--small-pack wants a size");
        a->prune.small_pack = v;
        return 0;
    case O_THREADS:
        if (!opt_parse_uint(arg, 1, 64, &v))
            return cli_usage_error(g, "--threads wants a number from 1 to 64");
        a->threads = (unsigned)v;
        a->prune.threads = (unsigned)v;
        return 0;
    case O_LOCK_WAIT:
        if (!opt_parse_uint(arg, 0, 86400, &v))
            return cli_usage_error(g, "--lock-wait wants seconds (0..86400)");
        a->lock_wait = (uint32_t)v;
        return 0;
    default:
        return 1;
    }
}

/* Checks the environment's memory bound, sets the heap up for a bound, and takes the prune
 * lock; returns an exit code, having printed the error.
 *
 * Under a bound, blocks of 128 KiB and more go back to the system when freed. glibc otherwise
 * raises that threshold to the largest block freed (index files, packs), after which such
 * blocks come from the heap and their space stays with the process across passes: measured at
 * 2 million blobs, a bounded prune peaked at 101 MiB instead of 52, for 10% more time. */
#define MAINT_MMAP_THRESHOLD (128 * 1024)

static int maint_begin(struct cli *g, struct repo *r, const struct maint_args *a, struct lock **lk)
{
    uint64_t v;
    if (!env_max_memory(&v))
        return cli_usage_error(g, "%s wants a size like 256M or 2G, not \"%s\"", MAX_MEMORY_ENV,
                               getenv(MAX_MEMORY_ENV));
    if (a->prune.max_memory) mallopt(M_MMAP_THRESHOLD, MAINT_MMAP_THRESHOLD);
    struct lock_options lo = {.kind = LOCK_PRUNE, .cancel = g->cancel, .wait_sec = a->lock_wait};
    struct err e;
    err_clear(&e);
    if (lock_acquire(r, &lo, lk, &e) < 0) return cli_fail(g, &e);
    return PV_EXIT_OK;
}

static void release(struct lock *lk)
{
    struct err ignored; /* a lock that stays behind goes stale by itself */
    lock_release(lk, &ignored);
}

static void note_phase(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    struct cli *g = ctx;
    (void)done;
    if (total > 1)
        cli_note(g, "%s (%llu)", phase, (unsigned long long)total);
    else
        cli_note(g, "%s", phase);
}

static void note_pack(void *ctx, enum prune_action a, const struct oid *pack, uint64_t size,
                      uint64_t used)
{
    struct cli *g = ctx;
    static const char *const what[] = {"", "delete", "repack", "pending", "unmark"};
    char hex[OID_HEX_LEN + 1], b1[32], b2[32];
    cli_note(g, "%-7s pack %s  %s, %s used", what[a], oid_hex(pack, hex), fmt_bytes(size, b1),
             fmt_bytes(used, b2));
}

static json_t *prune_json(const struct prune_stats *s, bool dry_run)
{
    json_t *o = json_object();
#define U(field) fmt_json_set(o, #field, json_integer((json_int_t)s->field))
    U(snapshots);
    U(trees);
    U(blobs);
    U(blobs_used);
    U(packs);
    U(bytes);
    U(bytes_used);
    U(packs_unindexed);
    U(packs_marked);
    U(packs_repacked);
    U(blobs_repacked);
    U(bytes_repacked);
    U(packs_deleted);
    U(bytes_deleted);
    U(packs_pending);
    U(packs_unmarked);
    U(waiting_writers);
    U(index_files_written);
    U(index_files_removed);
    U(locks_removed);
    U(bytes_freed);
    U(bytes_unused_after);
    U(memory);
    U(passes);
    U(repack_batches);
#undef U
    fmt_json_set(o, "dry_run", json_boolean(dry_run));
    return o;
}

static void prune_print(const struct cli *g, const struct prune_stats *s, bool dry_run, bool quick)
{
    if (g->verbosity == 0) return;
    char b1[32], b2[32], b3[32];
    const char *would = dry_run ? "would " : "";
    if (!quick)
        printf("repository: %llu packs, %s; %llu of %llu blobs used (%s), %llu snapshots, %llu "
               "trees\n",
               (unsigned long long)s->packs, fmt_bytes(s->bytes, b1),
               (unsigned long long)s->blobs_used, (unsigned long long)s->blobs,
               fmt_bytes(s->bytes_used, b2), (unsigned long long)s->snapshots,
               (unsigned long long)s->trees);
    if (s->packs_repacked)
        printf("%srepack %llu packs: %s in %llu blobs copied\n", would,
               (unsigned long long)s->packs_repacked, fmt_bytes(s->bytes_repacked, b1),
               (unsigned long long)s->blobs_repacked);
    printf("%sdelete %llu packs (%s)\n", would, (unsigned long long)s->packs_deleted,
           fmt_bytes(s->bytes_deleted, b1));
    if (s->packs_unmarked)
        printf("%llu packs marked earlier are used again and stay\n",
               (unsigned long long)s->packs_unmarked);
    if (s->packs_pending)
        printf("%llu packs %s marked until the %llu backups running since the mark end; a "
               "later prune deletes them\n",
               (unsigned long long)s->packs_pending, dry_run ? "would stay" : "stay",
               (unsigned long long)s->waiting_writers);
    if (!dry_run && (s->index_files_written || s->index_files_removed))
        printf("index: %llu files written, %llu replaced\n",
               (unsigned long long)s->index_files_written,
               (unsigned long long)s->index_files_removed);
    printf("%sfree %s", would, fmt_bytes(s->bytes_freed, b1));
    if (!quick)
        printf("; unused afterwards: %s (%.1f%%)", fmt_bytes(s->bytes_unused_after, b2),
               s->bytes ? 100.0 * (double)s->bytes_unused_after / (double)s->bytes : 0.0);
    printf("; memory %s\n", fmt_bytes(s->memory, b3));
}

/* Opens, locks, prunes, releases; prints the summary. */
static int run_prune(struct cli *g, struct repo *r, struct maint_args *a, json_t **json_out)
{
    struct lock *lk;
    int rc = maint_begin(g, r, a, &lk);
    if (rc) return rc;
    a->prune.progress = note_phase;
    a->prune.pack = note_pack;
    a->prune.ctx = g;
    struct prune_stats st;
    struct err e;
    err_clear(&e);
    int prc = prune_run(r, lk, &a->prune, &st, &e);
    struct err lost;
    if (prc == ERR_CANCELED && lock_lost(lk, &lost)) e = lost;
    release(lk);
    if (prc < 0) return cli_fail(g, &e);
    if (json_out)
        *json_out = prune_json(&st, a->prune.dry_run);
    else if (g->json) {
        json_t *o = prune_json(&st, a->prune.dry_run);
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_print(o, false);
    } else {
        prune_print(g, &st, a->prune.dry_run, a->prune.quick);
    }
    return PV_EXIT_OK;
}

/* ---- forget ---- */

static const char forget_usage[] =
    "usage: podvault forget [ID...] [policy] [options]\n"
    "\n"
    "Removes snapshots: the ones named, or those a policy does not keep. Snapshots are grouped\n"
    "(by host and paths unless --group-by says otherwise) and each group is kept by the policy\n"
    "on its own, as restic does: --keep-daily 7 keeps the newest snapshot of each of the 7\n"
    "latest days that have one (local time). A rule with counts left at the oldest snapshot keeps\n"
    "that one too. Only snapshot objects are removed; --prune then frees the data.\n"
    "\n"
    "Policy (N is a count or \"unlimited\"):\n"
    "  --keep-last N         the N newest snapshots\n"
    "  --keep-hourly N       the newest of each of the last N hours with snapshots\n"
    "  --keep-daily N        ... days\n"
    "  --keep-weekly N       ... ISO weeks\n"
    "  --keep-monthly N      ... months\n"
    "  --keep-yearly N       ... years\n"
    "  --keep-within D       every snapshot newer than the group's newest minus D (e.g. 1y2m3d4h)\n"
    "  --keep-tag T          snapshots carrying tag T (\"a,b\": both; repeatable)\n"
    "  --group-by FIELDS     host, paths, tags, comma-separated; \"\" for one group\n"
    "\n"
    "Options:\n"
    "  --host H, --path P, --tag T   consider only matching snapshots\n"
    "  --dry-run             say what would be removed, remove nothing\n"
    "  --prune               prune afterwards (see podvault prune --help)\n" PRUNE_OPTIONS_HELP;

struct forget_args {
    struct ret_policy policy;
    struct cli_list keep_tags;
    unsigned group_by;
    struct cli_filter filter;
    bool dry_run, prune;
    struct maint_args m;
};

static int forget_parse(struct cli *g, int argc, char **argv, struct forget_args *a)
{
    static const struct option longopts[] = {
        {"keep-last", required_argument, NULL, O_KEEP_LAST},
        {"keep-hourly", required_argument, NULL, O_KEEP_HOURLY},
        {"keep-daily", required_argument, NULL, O_KEEP_DAILY},
        {"keep-weekly", required_argument, NULL, O_KEEP_WEEKLY},
        {"keep-monthly", required_argument, NULL, O_KEEP_MONTHLY},
        {"keep-yearly", required_argument, NULL, O_KEEP_YEARLY},
        {"keep-within", required_argument, NULL, O_KEEP_WITHIN},
        {"keep-tag", required_argument, NULL, O_KEEP_TAG},
        {"group-by", required_argument, NULL, O_GROUP_BY},
        {"dry-run", no_argument, NULL, O_DRY_RUN},
        {"prune", no_argument, NULL, O_PRUNE},
        PRUNE_OPTIONS,
        CLI_FILTER_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    struct cli_parser p;
    cli_parser_init(&p, forget_usage, "", longopts);
    int opt;
    struct err e;
    err_clear(&e);
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        int *count = NULL;
        switch (opt) {
        case O_KEEP_LAST:
            count = &a->policy.last;
            break;
        case O_KEEP_HOURLY:
            count = &a->policy.hourly;
            break;
        case O_KEEP_DAILY:
            count = &a->policy.daily;
            break;
        case O_KEEP_WEEKLY:
            count = &a->policy.weekly;
            break;
        case O_KEEP_MONTHLY:
            count = &a->policy.monthly;
            break;
        case O_KEEP_YEARLY:
            count = &a->policy.yearly;
            break;
        case O_KEEP_WITHIN:
            if (ret_parse_duration(optarg, &a->policy.within, &e) < 0)
                return cli_usage_error(g, "--keep-within: %s", e.msg);
            continue;
        case O_KEEP_TAG:
            if (cli_list_add(&a->keep_tags, optarg)) return cli_usage_error(g, "out of memory");
            continue;
        case O_GROUP_BY:
            if (ret_parse_group_by(optarg, &a->group_by, &e) < 0)
                return cli_usage_error(g, "--group-by: %s", e.msg);
            continue;
        case O_DRY_RUN:
            a->dry_run = true;
            continue;
        case O_PRUNE:
            a->prune = true;
            continue;
        case CLI_OPT_FILTER_HOST:
        case CLI_OPT_FILTER_PATH:
        case CLI_OPT_FILTER_TAG:
            if (cli_filter_add(&a->filter, opt, optarg)) return cli_usage_error(g, "out of memory");
            continue;
        default: {
            if (opt < 0) return cli_parse_exit(opt);
            int rc = prune_option(g, opt, optarg, &a->m);
            if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
            if (rc) return rc;
            continue;
        }
        }
        if (ret_parse_count(optarg, count, &e) < 0)
            return cli_usage_error(g, "--%s: %s", longopts[opt - O_KEEP_LAST].name, e.msg);
    }
    a->policy.keep_tags = a->keep_tags.v;
    a->policy.n_keep_tags = a->keep_tags.n;
    return -1;
}

static int remove_snapshot(struct repo *r, const struct oid *id, struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    int rc = repo_remove_file(r, "snapshots", id, e); /* and its cached copy */
    if (rc == ERR_NOT_FOUND) return 0;                /* another forget was quicker */
    if (rc < 0) return err_wrap(e, "removing snapshot %s", oid_hex(id, hex));
    return 0;
}

static json_t *snap_brief(const struct snapshot *s, unsigned reasons)
{
    json_t *o = json_object();
    fmt_json_set(o, "id", fmt_json_oid(&s->id));
    fmt_json_set(o, "time", fmt_json_time(s->time_sec, s->time_nsec));
    if (reasons) {
        json_t *a = json_array();
        static const char *const names[] = {"last",    "hourly", "daily",  "weekly",
                                            "monthly", "yearly", "within", "tags"};
        for (unsigned i = 0; i < 8; i++)
            if (reasons & (1u << i)) json_array_append_new(a, json_string(names[i]));
        fmt_json_set(o, "reasons", a);
    }
    return o;
}

static void print_group_header(const struct snapshot *s, unsigned by)
{
    printf("snapshots");
    if (by & RET_GROUP_HOST) printf(" of host %s", s->hostname ? s->hostname : "");
    if (by & RET_GROUP_PATHS) {
        printf(" of paths");
        for (size_t i = 0; i < s->n_paths; i++) {
            fputc(' ', stdout);
            fmt_put_escaped(stdout, s->paths[i], strlen(s->paths[i]));
        }
    }
    if (by & RET_GROUP_TAGS) {
        printf(" tagged");
        for (size_t i = 0; i < s->n_tags; i++)
            printf("%s%s", i ? "," : " ", s->tags[i]);
    }
    printf(":\n");
}

/* Prints a group's decisions and removes what it does not keep. */
static int forget_group(struct cli *g, struct repo *r, const struct forget_args *a,
                        const struct snapshot *list, const struct ret_result *res, size_t n,
                        size_t group, size_t *kept, size_t *removed, struct err *e)
{
    const struct snapshot *first = NULL;
    json_t *jg = g->json ? json_object() : NULL, *jk = NULL, *jr = NULL;
    if (jg) {
        jk = json_array();
        jr = json_array();
    }
    for (size_t pass = 0; pass < 2; pass++) {
        bool keep = pass == 0;
        size_t shown = 0;
        /* Newest first, as the policy sees them. */
        for (size_t k = n; k-- > 0;) {
            if (res[k].group != group || res[k].keep != keep) continue;
            if (!first) first = &list[k];
            if (jg) {
                json_array_append_new(keep ? jk : jr, snap_brief(&list[k], res[k].reasons));
            } else if (g->verbosity > 0) {
                if (!shown && pass == 0) print_group_header(&list[k], a->group_by);
                if (!shown) printf("%s:\n", keep ? "keep" : a->dry_run ? "would remove" : "remove");
                char sid[9], when[32], why[128];
                printf("  %s  %s  %s\n", fmt_short_id(&list[k].id, sid),
                       fmt_time_local(list[k].time_sec, when),
                       keep ? ret_reasons(res[k].reasons, why, sizeof why) : "");
            }
            shown++;
            if (keep) {
                (*kept)++;
            } else {
                if (!a->dry_run && remove_snapshot(r, &list[k].id, e) < 0) {
                    json_decref(jg);
                    json_decref(jk);
                    json_decref(jr);
                    return ERR_FAIL;
                }
                (*removed)++;
            }
        }
    }
    if (jg) {
        fmt_json_set(jg, PV_MSG_KEY, json_string(PV_MSG_GROUP));
        if (first && (a->group_by & RET_GROUP_HOST))
            fmt_json_set(jg, "hostname", fmt_json_str(first->hostname));
        if (first && (a->group_by & RET_GROUP_PATHS)) {
            json_t *p = json_array();
            for (size_t i = 0; i < first->n_paths; i++)
                json_array_append_new(p, fmt_json_str(first->paths[i]));
            fmt_json_set(jg, "paths", p);
        }
        if (first && (a->group_by & RET_GROUP_TAGS)) {
            json_t *t = json_array();
            for (size_t i = 0; i < first->n_tags; i++)
                json_array_append_new(t, fmt_json_str(first->tags[i]));
            fmt_json_set(jg, "tags", t);
        }
        fmt_json_set(jg, "keep", jk);
        fmt_json_set(jg, "remove", jr);
        fmt_json_print(jg, false);
    }
    return 0;
}

static int forget_by_policy(struct cli *g, struct repo *r, struct forget_args *a, size_t *kept,
                            size_t *removed)
{
    struct err e;
    err_clear(&e);
    struct snapshot *all;
    size_t n_all;
    if (walk_load_snapshots(r, &all, &n_all, NULL, NULL, &e) < 0) return cli_fail(g, &e);
    struct snap_filter sf;
    cli_filter_make(&a->filter, &sf);
    /* Keep the matching snapshots, oldest first. */
    size_t n = 0;
    for (size_t i = 0; i < n_all; i++) {
        if (snap_matches(&all[i], &sf)) {
            if (n != i) {
                struct snapshot t = all[n];
                all[n] = all[i];
                all[i] = t;
            }
            n++;
        }
    }
    struct ret_result *res = calloc(n ? n : 1, sizeof *res);
    size_t n_groups = 0;
    int rc = PV_EXIT_OK;
    if (!res) {
        cli_msg("out of memory");
        rc = PV_EXIT_ERROR;
    } else if (ret_apply(all, n, &a->policy, a->group_by, res, &n_groups, &e) < 0) {
        rc = cli_fail(g, &e);
    }
    for (size_t grp = 0; rc == 0 && grp < n_groups; grp++) {
        if (forget_group(g, r, a, all, res, n, grp, kept, removed, &e) < 0) rc = cli_fail(g, &e);
        if (rc == 0 && g->verbosity > 0 && !g->json && grp + 1 < n_groups) printf("\n");
    }
    free(res);
    snap_list_free(all, n_all);
    return rc;
}

static int forget_by_id(struct cli *g, struct repo *r, struct forget_args *a, int argc, char **argv,
                        size_t *removed)
{
    for (int i = optind; i < argc; i++) {
        struct snapshot s;
        struct err e;
        err_clear(&e);
        if (snap_find(r, argv[i], NULL, &s, &e) < 0) return cli_fail(g, &e);
        if (!a->dry_run && remove_snapshot(r, &s.id, &e) < 0) {
            snap_free(&s);
            return cli_fail(g, &e);
        }
        char sid[9];
        if (g->json) {
            json_t *o = snap_brief(&s, 0);
            fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_REMOVED));
            fmt_json_set(o, "dry_run", json_boolean(a->dry_run));
            fmt_json_print(o, false);
        } else if (g->verbosity > 0) {
            printf("%s snapshot %s\n", a->dry_run ? "would remove" : "removed",
                   fmt_short_id(&s.id, sid));
        }
        (*removed)++;
        snap_free(&s);
    }
    return PV_EXIT_OK;
}

int cmd_forget(struct cli *g, int argc, char **argv)
{
    struct forget_args a;
    memset(&a, 0, sizeof a);
    maint_args_init(&a.m);
    a.group_by = RET_GROUP_DEFAULT;
    int rc = forget_parse(g, argc, argv, &a);
    bool by_id = optind < argc;
    if (rc == -1 && by_id && !ret_policy_empty(&a.policy))
        rc = cli_usage_error(g, "give snapshot IDs or a policy, not both");
    if (rc == -1 && !by_id && ret_policy_empty(&a.policy))
        rc = cli_usage_error(g, "no policy and no snapshot IDs given: nothing would be removed");
    struct repo *r = NULL;
    if (rc == -1) rc = cli_open_repo(g, &r);
    if (!r) { /* --help, a usage error, or no repository */
        cli_list_free(&a.keep_tags);
        cli_filter_free(&a.filter);
        return rc;
    }
    size_t kept = 0, removed = 0;
    if (rc == 0)
        rc = by_id ? forget_by_id(g, r, &a, argc, argv, &removed)
                   : forget_by_policy(g, r, &a, &kept, &removed);
    json_t *pj = NULL;
    if (rc == 0 && a.prune) {
        a.m.prune.dry_run = a.dry_run;
        rc = run_prune(g, r, &a.m, g->json ? &pj : NULL);
    }
    if (rc == 0 && g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_set(o, "kept", json_integer((json_int_t)kept));
        fmt_json_set(o, "removed", json_integer((json_int_t)removed));
        fmt_json_set(o, "dry_run", json_boolean(a.dry_run));
        if (pj) fmt_json_set(o, "prune", pj);
        fmt_json_print(o, false);
    } else if (rc == 0 && g->verbosity > 0 && !by_id) {
        printf("%s%zu snapshots, kept %zu\n", a.dry_run ? "would remove " : "removed ", removed,
               kept);
    } else {
        json_decref(pj);
    }
    repo_close(r);
    cli_list_free(&a.keep_tags);
    cli_filter_free(&a.filter);
    return rc;
}

/* ---- prune ---- */

static const char prune_usage[] =
    "usage: podvault prune [options]\n"
    "\n"
    "Frees the space no snapshot needs. Packs without used data are marked, and deleted at once\n"
    "when no backup is running; packs marked while backups ran are deleted by a later prune once\n"
    "those backups have ended. Partly used packs are repacked until the unused share is at most\n"
    "--max-unused. Safe beside running backups, and safe to interrupt: just run it again.\n"
    "\n"
    "Options:\n"
    "  --dry-run           say what would be deleted and freed; change nothing\n"
    "  --quick             only delete what earlier prunes marked (no walk of all "
    "snapshots)\n" PRUNE_OPTIONS_HELP;

int cmd_prune(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dry-run", no_argument, NULL, O_DRY_RUN},
        {"quick", no_argument, NULL, O_QUICK},
        PRUNE_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    struct maint_args a;
    maint_args_init(&a);
    struct cli_parser p;
    cli_parser_init(&p, prune_usage, "", longopts);
    int opt;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt == O_DRY_RUN) {
            a.prune.dry_run = true;
        } else if (opt == O_QUICK) {
            a.prune.quick = true;
        } else {
            if (opt < 0) return cli_parse_exit(opt);
            int rc = prune_option(g, opt, optarg, &a);
            if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
            if (rc) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(g, "prune takes no arguments");
    struct repo *r;
    int rc = cli_open_repo(g, &r);
    if (rc) return rc;
    rc = run_prune(g, r, &a, NULL);
    repo_close(r);
    return rc;
}

/* ---- check ---- */

static const char check_usage[] =
    "usage: podvault check [--read-data | --read-data-subset N%|n/m] [options]\n"
    "\n"
    "Verifies the repository: every index file and snapshot loads, every tree and data blob a\n"
    "snapshot refers to is indexed, every indexed pack exists and its header agrees with the\n"
    "index. --read-data also reads every pack and verifies each blob. Each problem is printed\n"
    "with the ID of the object at fault; unreferenced data is a warning, not an error.\n"
    "Exit code 1 when an error was found.\n"
    "\n"
    "Options:\n"
    "  --read-data             read and verify all data\n"
    "  --read-data-subset S    read a share of the packs (\"10%\") or group n of m (\"2/5\")\n"
    "  --threads N             reads at once (default 4; 2 with --read-data)\n"
    "  --max-memory SIZE       bound the index and tables (e.g. 256M; default: env\n"
    "                          PODVAULT_MAX_MEMORY, else none): beyond it, work in passes\n"
    "  --lock-wait SECONDS     wait this long for a running prune to end (default 0)\n";

static const char *object_name(enum check_object o)
{
    static const char *const names[] = {"",     "index", "pack", "snapshot",
                                        "tree", "blob",  "lock", "deletions"};
    return o < sizeof names / sizeof *names ? names[o] : "object";
}

static void on_check_problem(void *ctx, const struct check_problem *pb)
{
    struct cli *g = ctx;
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(pb->error ? PV_MSG_ERROR : PV_MSG_WARNING));
        fmt_json_set(o, "object", json_string(object_name(pb->object)));
        fmt_json_set(o, "id", fmt_json_oid(&pb->id));
        fmt_json_set(o, "message", fmt_json_str(pb->msg));
        fmt_json_print(o, false);
        return;
    }
    if (!pb->error && g->verbosity == 0) return;
    printf("%s: ", pb->error ? "error" : "warning");
    fmt_put_escaped(stdout, pb->msg, strlen(pb->msg));
    fputc('\n', stdout);
    fflush(stdout);
}

static json_t *check_json(const struct check_stats *s)
{
    json_t *o = json_object();
#define U(field) fmt_json_set(o, #field, json_integer((json_int_t)s->field))
    U(index_files);
    U(snapshots);
    U(trees);
    U(packs);
    U(blobs);
    U(blobs_used);
    U(packs_read);
    U(blobs_read);
    U(bytes_read);
    U(errors);
    U(warnings);
    U(memory);
    U(passes);
#undef U
    return o;
}

static void check_print(const struct cli *g, const struct check_stats *s)
{
    if (g->verbosity == 0 && !s->errors) return;
    char b1[32], b2[32];
    printf("checked %llu snapshots, %llu trees, %llu packs, %llu blobs (%llu used), %llu index "
           "files",
           (unsigned long long)s->snapshots, (unsigned long long)s->trees,
           (unsigned long long)s->packs, (unsigned long long)s->blobs,
           (unsigned long long)s->blobs_used, (unsigned long long)s->index_files);
    if (s->packs_read)
        printf("; read %llu packs, %s, %llu blobs", (unsigned long long)s->packs_read,
               fmt_bytes(s->bytes_read, b1), (unsigned long long)s->blobs_read);
    printf("; memory %s\n", fmt_bytes(s->memory, b2));
    printf("%s: %llu errors, %llu warnings\n", s->errors ? "check FAILED" : "no errors",
           (unsigned long long)s->errors, (unsigned long long)s->warnings);
}

int cmd_check(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"read-data", no_argument, NULL, O_READ_DATA},
        {"read-data-subset", required_argument, NULL, O_READ_SUBSET},
        {"threads", required_argument, NULL, O_THREADS},
        {"lock-wait", required_argument, NULL, O_LOCK_WAIT},
        {"max-memory", required_argument, NULL, O_MAX_MEMORY},
        {NULL, 0, NULL, 0},
    };
    struct check_options o;
    memset(&o, 0, sizeof o);
    struct maint_args a;
    maint_args_init(&a);
    struct cli_parser p;
    cli_parser_init(&p, check_usage, "", longopts);
    int opt;
    struct err e;
    err_clear(&e);
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt == O_READ_DATA) {
            o.read = CHECK_READ_ALL;
        } else if (opt == O_READ_SUBSET) {
            if (check_parse_subset(optarg, &o, &e) < 0)
                return cli_usage_error(g, "--read-data-subset: %s", e.msg);
        } else {
            if (opt < 0) return cli_parse_exit(opt);
            int rc = prune_option(g, opt, optarg, &a);
            if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
            if (rc) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(g, "check takes no arguments");
    /* Reading data frees a range of a pack (2 MiB) after each read, which would otherwise stay in
     * the heap for the same reason: in bench/maint.sh, 28.8 MiB at peak instead of 34.7, for 5%
     * more time. */
    if (o.read != CHECK_READ_NONE) mallopt(M_MMAP_THRESHOLD, MAINT_MMAP_THRESHOLD);
    struct repo *r;
    int rc = cli_open_repo(g, &r);
    if (rc) return rc;
    struct lock *lk;
    rc = maint_begin(g, r, &a, &lk);
    if (rc) {
        repo_close(r);
        return rc;
    }
    o.threads = a.threads;
    o.max_memory = a.prune.max_memory;
    o.cancel = lock_stop_flag(lk);
    o.report = on_check_problem;
    o.progress = note_phase;
    o.ctx = g;
    struct check_stats st;
    int crc = check_run(r, &o, &st, &e);
    release(lk);
    repo_close(r);
    if (crc < 0) return cli_fail(g, &e);
    if (g->json) {
        json_t *j = check_json(&st);
        fmt_json_set(j, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_print(j, false);
    } else {
        check_print(g, &st);
    }
    return st.errors ? PV_EXIT_ERROR : PV_EXIT_OK;
}

/* ---- repair ---- */

static const char repair_usage[] =
    "usage: podvault repair index [options]\n"
    "\n"
    "Rebuilds the index from the headers of the packs, replacing every index file: what a lost\n"
    "or damaged index file listed is found again if its packs are intact. Packs whose header\n"
    "cannot be read are reported and left out.\n"
    "\n"
    "Options:\n"
    "  --threads N         pack headers read at once (default 4)\n"
    "  --lock-wait SECONDS wait this long for a running prune to end (default 0)\n";

int cmd_repair(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"threads", required_argument, NULL, O_THREADS},
        {"lock-wait", required_argument, NULL, O_LOCK_WAIT},
        {NULL, 0, NULL, 0},
    };
    struct maint_args a;
    maint_args_init(&a);
    struct cli_parser p;
    cli_parser_init(&p, repair_usage, "", longopts);
    int opt;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt < 0) return cli_parse_exit(opt);
        int rc = prune_option(g, opt, optarg, &a);
        if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
        if (rc) return rc;
    }
    if (optind >= argc || strcmp(argv[optind], "index") != 0 || optind + 1 != argc)
        return cli_usage_error(g, "what should be repaired? (only \"index\" is known)");
    struct repo *r;
    int rc = cli_open_repo(g, &r);
    if (rc) return rc;
    struct lock *lk;
    rc = maint_begin(g, r, &a, &lk);
    if (rc) {
        repo_close(r);
        return rc;
    }
    struct check_options o = {.threads = a.threads,
                              .cancel = lock_stop_flag(lk),
                              .report = on_check_problem,
                              .progress = note_phase,
                              .ctx = g};
    struct check_repair_stats st;
    struct err e;
    err_clear(&e);
    int rrc = check_repair_index(r, &o, &st, &e);
    release(lk);
    repo_close(r);
    if (rrc < 0) return cli_fail(g, &e);
    if (g->json) {
        json_t *j = json_object();
        fmt_json_set(j, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_set(j, "packs", json_integer((json_int_t)st.packs));
        fmt_json_set(j, "blobs", json_integer((json_int_t)st.blobs));
        fmt_json_set(j, "packs_bad", json_integer((json_int_t)st.packs_bad));
        fmt_json_set(j, "index_files_written", json_integer((json_int_t)st.index_files_written));
        fmt_json_set(j, "index_files_removed", json_integer((json_int_t)st.index_files_removed));
        fmt_json_print(j, false);
    } else if (g->verbosity > 0) {
        printf("indexed %llu blobs in %llu packs; %llu packs unreadable; wrote %llu index files, "
               "replaced %llu\n",
               (unsigned long long)st.blobs, (unsigned long long)st.packs,
               (unsigned long long)st.packs_bad, (unsigned long long)st.index_files_written,
               (unsigned long long)st.index_files_removed);
    }
    return st.packs_bad ? PV_EXIT_ERROR : PV_EXIT_OK;
}

/* ---- maintain ---- */

static const char maintain_usage[] =
    "usage: podvault maintain [--quick | --full] [options]\n"
    "\n"
    "What a scheduled job runs: does the maintenance that is due, as recorded in the repository\n"
    "(so any node may run it). Quick (hourly): deletes what earlier prunes marked, compacts the\n"
    "index. Full (daily): prune and check. Without --quick/--full, whatever is due (full first).\n"
    "\n"
    "In a cluster, --location NAME (or --default-location, the one marked default) maintains,\n"
    "one after the other, every repository under that Velero BackupStorageLocation, with the\n"
    "password of Secret velero-repo-credentials and the location's S3 settings; -r and\n"
    "--password-file are not used then. Exit code 1 if any repository failed. First it\n"
    "forgets (and prunes) the snapshots made for Velero backups that are gone from both the\n"
    "cluster and the location (--dry-run: only names them).\n"
    "  --server URL | --kubeconfig FILE [--context NAME]   the API server (default in-cluster)\n"
    "  --namespace NS          Velero's namespace (default $VELERO_NAMESPACE, else velero)\n"
    "  --credentials-file FILE S3 keys when the location names no Secret (default\n"
    "                          $AWS_SHARED_CREDENTIALS_FILE)\n"
    "\n"
    "Options:\n"
    "  --quick / --full        consider only this kind\n"
    "  --force                 run even if not due\n"
    "  --dry-run               say what is due and what prune would do; change nothing\n"
    "  --quick-every DURATION  how often quick runs are due (default 1h; units y, m (months),\n"
    "                          d, h)\n"
    "  --full-every DURATION   how often full runs are due (default 1d)\n"
    "  --read-data-subset S    with full runs, also read this share of the "
    "data\n" PRUNE_OPTIONS_HELP;

static int parse_every(struct cli *g, const char *arg, uint32_t *out)
{
    struct ret_duration d;
    struct err e;
    if (ret_parse_duration(arg, &d, &e) < 0) return cli_usage_error(g, "%s", e.msg);
    uint64_t s = (((uint64_t)d.years * 365 + (uint64_t)d.months * 30 + (uint64_t)d.days) * 24 +
                  (uint64_t)d.hours) *
                 3600;
    if (!s || s > UINT32_MAX) return cli_usage_error(g, "\"%s\" is not a usable interval", arg);
    *out = (uint32_t)s;
    return 0;
}

/* Cluster options of maintain (values apart from the shared ones above). */
enum {
    O_LOCATION = 800,
    O_DEFAULT_LOCATION,
    O_SERVER,
    O_KUBECONFIG,
    O_CONTEXT,
    O_NAMESPACE,
    O_CREDENTIALS_FILE,
};

/* Keeps a maintain option for the `maintain` children of --location; -1 when there are too
 * many. */
static int forward_option(struct maintjob_config *c, struct maintjob_option *fwd, size_t cap,
                          const struct option *longopts, int opt, const char *arg)
{
    for (const struct option *o = longopts; o->name; o++) {
        if (o->val != opt) continue;
        if (c->n_maint_args == cap) return -1;
        fwd[c->n_maint_args++] = (struct maintjob_option){o->name, o->has_arg ? arg : NULL};
        return 0;
    }
    return 0;
}

static int maintain_cluster(struct cli *g, struct maintjob_config *c)
{
    const char *ns = getenv("VELERO_NAMESPACE"), *tmp = getenv("TMPDIR");
    if (!c->namespace) c->namespace = ns && *ns ? ns : "velero";
    if (!c->credentials_file) c->credentials_file = getenv("AWS_SHARED_CREDENTIALS_FILE");
    c->cache_dir = g->cache_dir;
    c->no_cache = g->no_cache;
    c->scratch_dir = tmp && *tmp ? tmp : "/tmp";
    c->exe = "/proc/self/exe";
    c->cancel = g->cancel;
    return maintjob_run(c);
}

int cmd_maintain(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"location", required_argument, NULL, O_LOCATION},
        {"default-location", no_argument, NULL, O_DEFAULT_LOCATION},
        {"server", required_argument, NULL, O_SERVER},
        {"kubeconfig", required_argument, NULL, O_KUBECONFIG},
        {"context", required_argument, NULL, O_CONTEXT},
        {"namespace", required_argument, NULL, O_NAMESPACE},
        {"credentials-file", required_argument, NULL, O_CREDENTIALS_FILE},
        {"quick", no_argument, NULL, O_QUICK},
        {"full", no_argument, NULL, O_FULL},
        {"force", no_argument, NULL, O_FORCE},
        {"dry-run", no_argument, NULL, O_DRY_RUN},
        {"quick-every", required_argument, NULL, O_QUICK_EVERY},
        {"full-every", required_argument, NULL, O_FULL_EVERY},
        {"read-data-subset", required_argument, NULL, O_READ_SUBSET},
        PRUNE_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    struct maint_options mo;
    maint_options_default(&mo);
    struct maint_args a;
    maint_args_init(&a);
    struct cli_parser p;
    cli_parser_init(&p, maintain_usage, "", longopts);
    int opt, rc;
    struct err e;
    err_clear(&e);
    struct maintjob_config mj = {0};
    bool cluster = false, default_location = false;
    struct maintjob_option fwd[32];
    mj.maint_args = fwd;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt >= O_LOCATION && opt <= O_CREDENTIALS_FILE) {
            const char **to[] = {&mj.location, NULL,          &mj.server,          &mj.kubeconfig,
                                 &mj.context,  &mj.namespace, &mj.credentials_file};
            if (to[opt - O_LOCATION]) *to[opt - O_LOCATION] = optarg;
            default_location |= opt == O_DEFAULT_LOCATION;
            cluster |= opt == O_LOCATION || opt == O_DEFAULT_LOCATION;
            continue;
        }
        if (opt >= 0 && forward_option(&mj, fwd, sizeof fwd / sizeof *fwd, longopts, opt, optarg))
            return cli_usage_error(g, "too many options");
        switch (opt) {
        case O_QUICK:
        case O_FULL:
            if (mo.want != MAINT_NONE) return cli_usage_error(g, "--quick or --full, not both");
            mo.want = opt == O_QUICK ? MAINT_QUICK : MAINT_FULL;
            break;
        case O_FORCE:
            mo.force = true;
            break;
        case O_DRY_RUN:
            mo.dry_run = true;
            break;
        case O_QUICK_EVERY:
            if ((rc = parse_every(g, optarg, &mo.quick_every))) return rc;
            break;
        case O_FULL_EVERY:
            if ((rc = parse_every(g, optarg, &mo.full_every))) return rc;
            break;
        case O_READ_SUBSET:
            if (check_parse_subset(optarg, &mo.check, &e) < 0)
                return cli_usage_error(g, "--read-data-subset: %s", e.msg);
            break;
        default:
            if (opt < 0) return cli_parse_exit(opt);
            rc = prune_option(g, opt, optarg, &a);
            if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
            if (rc) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(g, "maintain takes no arguments");
    if (mj.location && default_location)
        return cli_usage_error(g, "--location or --default-location, not both");
    mj.dry_run = mo.dry_run;
    if (cluster) return maintain_cluster(g, &mj);
    if (mj.server || mj.kubeconfig || mj.context || mj.namespace || mj.credentials_file)
        return cli_usage_error(g, "cluster options go with --location or --default-location");
    struct repo *r;
    if ((rc = cli_open_repo(g, &r))) return rc;
    struct lock *lk;
    if ((rc = maint_begin(g, r, &a, &lk))) {
        repo_close(r);
        return rc;
    }
    mo.prune = a.prune;
    mo.prune.progress = note_phase;
    mo.prune.pack = note_pack;
    mo.prune.ctx = g;
    mo.check.threads = a.threads;
    mo.check.report = on_check_problem;
    mo.check.progress = note_phase;
    mo.check.ctx = g;
    struct maint_result res;
    int mrc = maint_run(r, lk, &mo, &res, &e);
    struct err lost;
    if (mrc == ERR_CANCELED && lock_lost(lk, &lost)) e = lost;
    release(lk);
    repo_close(r);
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_set(o, "ran", json_string(maint_kind_name(res.ran)));
        fmt_json_set(o, "dry_run", json_boolean(mo.dry_run));
        fmt_json_set(o, "ok", json_boolean(mrc == 0));
        if (mrc < 0) fmt_json_set(o, "error", fmt_json_str(e.msg));
        if (res.ran != MAINT_NONE) fmt_json_set(o, "prune", prune_json(&res.prune, mo.dry_run));
        if (res.checked) fmt_json_set(o, "check", check_json(&res.check));
        if (res.before.last_quick)
            fmt_json_set(o, "last_quick", fmt_json_time(res.before.last_quick, 0));
        if (res.before.last_full)
            fmt_json_set(o, "last_full", fmt_json_time(res.before.last_full, 0));
        fmt_json_set(o, "next_quick", fmt_json_time(res.next_quick, 0));
        fmt_json_set(o, "next_full", fmt_json_time(res.next_full, 0));
        fmt_json_print(o, false);
    } else if (g->verbosity > 0 && (mrc == 0 || res.ran != MAINT_NONE)) {
        char t1[32], t2[32];
        if (res.ran == MAINT_NONE) {
            printf("nothing is due\n");
        } else {
            printf("%s%s maintenance:\n", mo.dry_run ? "dry run of " : "",
                   maint_kind_name(res.ran));
            prune_print(g, &res.prune, mo.dry_run, res.ran == MAINT_QUICK);
            if (res.checked) check_print(g, &res.check);
        }
        printf("next quick run due %s, full run %s\n", fmt_time_local(res.next_quick, t1),
               fmt_time_local(res.next_full, t2));
    }
    if (mrc < 0) return cli_fail(g, &e);
    return PV_EXIT_OK;
}

/* ---- writers ---- */

int cli_writer_begin(struct cli *g, struct repo *r, struct lock **lk)
{
    struct err e;
    err_clear(&e);
    *lk = NULL;
    size_t marked = 0;
    if (lock_writer_begin(r, g->cancel, lk, &e) < 0) return cli_fail(g, &e);
    if (lock_load_index(r, &marked, &e) < 0) {
        release(*lk);
        *lk = NULL;
        return cli_fail(g, &e);
    }
    cli_note(g, "index: %zu blobs in %zu packs; %zu packs pending deletion are not used",
             idx_blob_count(repo_index(r)), idx_pack_count(repo_index(r)), marked);
    return PV_EXIT_OK;
}

int cli_writer_end(struct lock *lk, int rc, struct err *e)
{
    if (!lk) return rc;
    struct err lost;
    if (lock_lost(lk, &lost)) {
        *e = lost;
        if (rc == 0)
            err_wrap(e, "the snapshot was saved, but a prune may have deleted data it refers to "
                        "meanwhile (run check)");
        else
            err_wrap(e, "backup stopped, no snapshot was saved");
        rc = ERR_FAIL;
        e->code = ERR_FAIL;
    }
    release(lk);
    return rc;
}
