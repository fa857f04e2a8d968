/* cmd_repair_versions.c - `podvault repair versions --as-of TIME [--dry-run]`: makes the state of
 * a versioned S3 repository at TIME current again (docs/FORMAT.md, "S3 Object Lock"). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cmd_maint.h"
#include "cli/format.h"
#include "cli/maint.h"
#include "cli/writer_lock.h"
#include "repo/lock.h"

static const char versions_usage[] =
    "usage: podvault --as-of TIME repair versions [--dry-run] [options]\n"
    "\n"
    "Makes the repository as it stood at TIME (see the global option --as-of) current again, in a\n"
    "versioned S3 bucket: every object whose current state differs from its state then gets\n"
    "the version of that time copied back (with the repository's Object Lock retention anew),\n"
    "and every object that did not exist then is removed (a delete marker: its versions stay).\n"
    "Each change is printed before it is made; lock objects are left alone.\n"
    "\n"
    "Options:\n"
    "  --dry-run           only print what would be done\n"
    "  --lock-wait SECONDS wait this long for a running prune to end (default 0)\n";

/* The planned changes, in name order. */
struct plan {
    struct change {
        char *name;
        enum backend_version_action a;
        uint64_t size;
    } * c;
    size_t n, cap;
    uint64_t restore, remove;
};

static int plan_add(void *ctx, const char *name, enum backend_version_action a, uint64_t size)
{
    struct plan *p = ctx;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        struct change *c = realloc(p->c, cap * sizeof *c);
        if (!c) return 1;
        p->c = c;
        p->cap = cap;
    }
    if (!(p->c[p->n].name = strdup(name))) return 1;
    p->c[p->n].a = a;
    p->c[p->n++].size = size;
    if (a == BACKEND_VERSION_RESTORE)
        p->restore++;
    else
        p->remove++;
    return 0;
}

static void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->c[i].name);
    free(p->c);
}

static void print_change(const struct cli *g, const struct change *c, bool dry_run)
{
    const char *what = c->a == BACKEND_VERSION_RESTORE ? "restore" : "remove";
    if (g->json) {
        json_t *j = json_object();
        fmt_json_set(j, PV_MSG_KEY, json_string("version_change"));
        fmt_json_set(j, "action", json_string(what));
        fmt_json_set(j, "name", json_string(c->name));
        fmt_json_set(j, "size", json_integer((json_int_t)c->size));
        fmt_json_set(j, "dry_run", json_boolean(dry_run));
        fmt_json_print(j, false);
    } else if (g->verbosity > 0) {
        printf("%s%-7s %s\n", dry_run ? "would " : "", what, c->name);
    }
}

static void print_summary(const struct cli *g, const struct plan *p, uint64_t done, bool dry_run)
{
    if (g->json) {
        json_t *j = json_object();
        fmt_json_set(j, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_set(j, "restore", json_integer((json_int_t)p->restore));
        fmt_json_set(j, "remove", json_integer((json_int_t)p->remove));
        fmt_json_set(j, "done", json_integer((json_int_t)done));
        fmt_json_set(j, "dry_run", json_boolean(dry_run));
        fmt_json_print(j, false);
    } else if (g->verbosity > 0) {
        printf("%s%llu objects to restore, %llu to remove%s\n", dry_run ? "dry run: " : "",
               (unsigned long long)p->restore, (unsigned long long)p->remove,
               dry_run ? "; nothing changed" : "; done");
    }
}

/* Shows the whole plan, then (unless dry_run) carries it out in order. */
static int run_plan(struct cli *g, struct backend *b, bool dry_run, uint64_t *done, struct err *e)
{
    struct plan p = {0};
    int rc = backend_versions_plan(b, plan_add, &p, e);
    if (rc > 0) rc = err_set(e, ERR_FAIL, "planning the repair: out of memory");
    for (size_t i = 0; rc == 0 && i < p.n; i++)
        print_change(g, &p.c[i], dry_run);
    if (rc == 0 && !g->json) fflush(stdout);
    for (size_t i = 0; rc == 0 && !dry_run && i < p.n; i++) {
        if (g->cancel && *g->cancel) rc = err_set(e, ERR_FAIL, "interrupted");
        if (rc == 0) rc = backend_version_apply(b, p.c[i].name, p.c[i].a, e);
        if (rc == 0) ++*done;
    }
    if (rc == 0) print_summary(g, &p, *done, dry_run);
    plan_free(&p);
    return rc;
}

int cmd_repair_versions(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dry-run", no_argument, NULL, O_DRY_RUN},
        {"lock-wait", required_argument, NULL, O_LOCK_WAIT},
        {NULL, 0, NULL, 0},
    };
    struct cli_maint_args a;
    cli_maint_args_init(&a);
    bool dry_run = false;
    struct cli_parser p;
    cli_parser_init(&p, versions_usage, "", longopts);
    int opt;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt < 0) return cli_parse_exit(opt);
        if (opt == O_DRY_RUN) {
            dry_run = true;
            continue;
        }
        int rc = cli_prune_option(g, opt, optarg, &a);
        if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
        if (rc) return rc;
    }
    if (optind >= argc || strcmp(argv[optind], "versions") != 0 || optind + 1 != argc)
        return cli_usage_error(g, "usage: podvault --as-of TIME repair versions [--dry-run]");
    if (g->as_of_ms <= 0)
        return cli_usage_error(g, "repair versions needs --as-of TIME: the time to go back to");
    struct repo *r;
    struct lock *lk;
    int rc = cli_maint_open(g, &a, &r, &lk);
    if (rc) return rc;
    struct err e;
    err_clear(&e);
    uint64_t done = 0;
    int rrc = run_plan(g, repo_backend(r), dry_run, &done, &e);
    cli_lock_release(lk);
    repo_close(r);
    if (rrc < 0) return cli_fail(g, &e);
    return PV_EXIT_OK;
}
