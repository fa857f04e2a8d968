/* cmd_restore.c - `podvault restore`: options, progress and the summary of a restore. */
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/format.h"
#include "cli/options.h"
#include "cli/progress.h"
#include "repo/repo.h"
#include "repo/restorer.h"

static const char restore_usage[] =
    "usage: podvault restore SNAPSHOT --target DIR [options]\n"
    "\n"
    "Restores a snapshot beneath DIR (created if missing). SNAPSHOT is an ID, a unique prefix,\n"
    "or \"latest\" (narrowed by --host, --path, --tag); \"SNAPSHOT:/sub/dir\" restores only the\n"
    "content of that directory of the snapshot.\n"
    "\n"
    "Options:\n"
    "  -t, --target DIR        where to restore (required)\n"
    "  --include PATH          restore only PATH of the snapshot and what is below it\n"
    "                          (repeatable)\n"
    "  --numeric-owner         use numeric uid/gid, ignore recorded user and group names\n"
    "  --overwrite MODE        existing files: always (default), if-changed, never\n"
    "  --sparse                write all-zero blocks as holes\n"
    "  --threads N             worker threads (default: one per CPU)\n"
    "  --host H, --path P, --tag T   narrow \"latest\"\n";

enum { O_INCLUDE = 1, O_NUMERIC_OWNER, O_OVERWRITE, O_SPARSE, O_THREADS };

struct restore_ui {
    struct progress progress;
};

static void on_progress(void *ctx, const struct restore_progress *rp)
{
    struct restore_ui *ui = ctx;
    struct progress_figures f = {
        .elapsed = rp->elapsed,
        .files_done = rp->files_done,
        .files_total = rp->files_total,
        .bytes_done = rp->bytes_done,
        .bytes_total = rp->bytes_total,
        .totals_final = true,
        .errors = rp->errors,
    };
    progress_update(&ui->progress, &f);
}

static void on_report(void *ctx, const char *path, const char *msg)
{
    struct restore_ui *ui = ctx;
    progress_error(&ui->progress, path, msg);
}

static void print_summary(const struct cli *g, const struct snapshot *s,
                          const struct restore_summary *m)
{
    char sid[9], b[32], rate[32], t[32];
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
#define U(field) fmt_json_set(o, #field, json_integer((json_int_t)m->field))
        U(files);
        U(dirs);
        U(links);
        U(specials);
        U(bytes);
        U(skipped);
        U(errors);
#undef U
        fmt_json_set(o, "duration", json_real(m->duration));
        fmt_json_set(o, "snapshot_id", fmt_json_oid(&s->id));
        fmt_json_set(o, "seconds", json_real(m->duration));
        fmt_json_print(o, false);
        return;
    }
    if (g->verbosity == 0) return;
    double bps = m->duration > 0 ? (double)m->bytes / m->duration : 0;
    printf("restored snapshot %s: %llu files, %llu dirs, %llu links, %llu others, %s in %s "
           "(%s/s)\n",
           fmt_short_id(&s->id, sid), (unsigned long long)m->files, (unsigned long long)m->dirs,
           (unsigned long long)m->links, (unsigned long long)m->specials, fmt_bytes(m->bytes, b),
           fmt_duration(m->duration, t), fmt_bytes((uint64_t)bps, rate));
    if (m->skipped) printf("%llu existing files kept\n", (unsigned long long)m->skipped);
}

static bool parse_overwrite(const char *s, enum restore_overwrite *out)
{
    if (strcmp(s, "always") == 0)
        *out = RESTORE_OVERWRITE_ALWAYS;
    else if (strcmp(s, "if-changed") == 0)
        *out = RESTORE_OVERWRITE_IF_CHANGED;
    else if (strcmp(s, "never") == 0)
        *out = RESTORE_OVERWRITE_NEVER;
    else
        return false;
    return true;
}

static int run_restore(struct cli *g, const char *spec, const struct cli_filter *filter,
                       struct restore_options *o)
{
    /* "ID:/sub/dir": IDs, prefixes and "latest" never hold a ':'. */
    char *snap_spec = strdup(spec);
    if (!snap_spec) {
        cli_msg("out of memory");
        return PV_EXIT_ERROR;
    }
    char *colon = strchr(snap_spec, ':');
    if (colon) {
        *colon = '\0';
        o->subpath = spec + (colon - snap_spec) + 1;
    }
    struct repo *r = NULL;
    struct snapshot s;
    memset(&s, 0, sizeof s);
    int rc = cli_open_repo_indexed(g, &r);
    if (!rc) rc = cli_find_snapshot(g, r, snap_spec, filter, &s);
    /* Reading ahead, the workers' blobs mostly come out of the shared segments, and the blocks
     * each thread still allocates are freed at once. glibc would raise its mmap threshold past
     * them and keep their space in every thread's arena (a third more peak RSS, in the same
     * time: bench/RESULTS.md "glibc's mmap threshold in restore"). From a local directory every
     * blob is read into a block of its own, which the raised threshold serves from the heap
     * without faulting in fresh pages, so the default stays. */
    if (!rc && repo_reads_ahead(r)) mallopt(M_MMAP_THRESHOLD, 1 << 20);
    if (!rc) {
        struct restore_ui ui;
        struct restore_summary sum;
        struct err e;
        memset(&sum, 0, sizeof sum);
        err_clear(&e);
        progress_init(&ui.progress, g->json, g->verbosity);
        o->progress = on_progress;
        o->report = on_report;
        o->ctx = &ui;
        char sid[9];
        cli_note(g, "restoring snapshot %s to %s", fmt_short_id(&s.id, sid), o->target);
        int rrc = restore_snapshot(r, &s, o, &sum, &e);
        progress_finish(&ui.progress);
        progress_destroy(&ui.progress);
        if (rrc) {
            rc = cli_fail(g, &e);
        } else {
            print_summary(g, &s, &sum);
            if (sum.errors) {
                cli_msg("%llu entries could not be restored into %s",
                        (unsigned long long)sum.errors, o->target);
                rc = PV_EXIT_ERROR;
            }
        }
    }
    snap_free(&s);
    if (r) repo_close(r);
    free(snap_spec);
    return rc;
}

int cmd_restore(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"target", required_argument, NULL, 't'},
        {"include", required_argument, NULL, O_INCLUDE},
        {"numeric-owner", no_argument, NULL, O_NUMERIC_OWNER},
        {"overwrite", required_argument, NULL, O_OVERWRITE},
        {"sparse", no_argument, NULL, O_SPARSE},
        {"threads", required_argument, NULL, O_THREADS},
        CLI_FILTER_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    struct restore_options o;
    struct cli_filter filter;
    struct cli_list includes = {.owned = false};
    memset(&o, 0, sizeof o);
    memset(&filter, 0, sizeof filter);
    o.cancel = g->cancel;
    struct cli_parser p;
    cli_parser_init(&p, restore_usage, "t:", longopts);
    int opt, rc = -1;
    uint64_t v;
    while (rc < 0 && (opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        switch (opt) {
        case 't':
            o.target = optarg;
            break;
        case O_INCLUDE:
            if (cli_list_add(&includes, optarg)) rc = PV_EXIT_ERROR;
            break;
        case O_NUMERIC_OWNER:
            o.numeric_owner = true;
            break;
        case O_OVERWRITE:
            if (!parse_overwrite(optarg, &o.overwrite))
                rc = cli_usage_error(g, "--overwrite wants always, if-changed or never");
            break;
        case O_SPARSE:
            o.sparse = true;
            break;
        case O_THREADS:
            if (!opt_parse_uint(optarg, 1, 256, &v))
                rc = cli_usage_error(g, "--threads wants a number from 1 to 256");
            o.threads = (unsigned)v;
            break;
        case CLI_OPT_FILTER_HOST:
        case CLI_OPT_FILTER_PATH:
        case CLI_OPT_FILTER_TAG:
            if (cli_filter_add(&filter, opt, optarg)) rc = PV_EXIT_ERROR;
            break;
        default:
            rc = cli_parse_exit(opt);
        }
    }
    if (rc == PV_EXIT_ERROR) cli_msg("out of memory");
    if (rc < 0 && argc - optind != 1)
        rc = cli_usage_error(g, argc - optind < 1 ? "which snapshot?" : "too many arguments");
    if (rc < 0 && !o.target) rc = cli_usage_error(g, "where to? (--target DIR is required)");
    if (rc < 0) {
        o.includes = includes.v;
        o.n_includes = includes.n;
        rc = run_restore(g, argv[optind], &filter, &o);
    }
    cli_list_free(&includes);
    cli_filter_free(&filter);
    return rc;
}
