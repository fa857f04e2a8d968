/* cmd_forget.c - `podvault forget`: remove snapshots by ID or by a retention policy, and prune
 * afterwards with --prune. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd_maint.h"
#include "cli/format.h"
#include "cli/maint.h"
#include "repo/repo.h"
#include "repo/retention.h"
#include "repo/walk.h"

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
    struct cli_maint_args m;
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
            int rc = cli_prune_option(g, opt, optarg, &a->m);
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
    cli_maint_args_init(&a.m);
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
        rc = cli_run_prune(g, r, &a.m, g->json ? &pj : NULL);
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
