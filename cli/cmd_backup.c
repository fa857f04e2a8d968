/* cmd_backup.c - `podvault backup`: options, progress and the summary of a backup. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/writer_lock.h"
#include "cli/format.h"
#include "cli/options.h"
#include "cli/progress.h"
#include "repo/archiver.h"
#include "repo/lock.h"
#include "repo/repo.h"

static const char backup_usage[] =
    "usage: podvault backup PATH... [options]\n"
    "\n"
    "Backs up files and directories into a new snapshot. One directory becomes the snapshot's\n"
    "root; several paths become entries of the root named by their last component. Unless\n"
    "--parent or --force is given, the latest snapshot of the same host and paths is the parent:\n"
    "files whose size, times and inode did not change are not read again.\n"
    "\n"
    "Options:\n"
    "  --tag T             tag the snapshot (repeatable, or T1,T2)\n"
    "  --host H            record H as the host name (default: this machine's)\n"
    "  --label KEY=VALUE   record a label (repeatable)\n"
    "  --parent ID         use this snapshot as the parent ('latest': the newest of --host's,\n"
    "                      or of this machine's, whatever its paths)\n"
    "  --force             read every file (no parent)\n"
    "  --exclude PATTERN   skip matching entries (repeatable; fnmatch patterns, matched on the\n"
    "                      full path when they hold a '/', else on the name)\n"
    "  --exclude-file F    read exclude patterns from F, one a line ('#' starts a comment)\n"
    "  --one-file-system   do not cross into other file systems\n"
    "  --threads N         worker threads (default: one per CPU)\n"
    "\n"
    "Exit code 3: the snapshot was saved but some entries could not be read.\n";

enum {
    O_TAG = 1,
    O_HOST,
    O_LABEL,
    O_PARENT,
    O_FORCE,
    O_EXCLUDE,
    O_EXCLUDE_FILE,
    O_ONE_FS,
    O_THREADS,
};

struct backup_args {
    struct cli_list paths, tags, labels, excludes;
    const char *host, *parent;
    bool force, one_fs;
    uint64_t threads;
};

static void args_free(struct backup_args *a)
{
    cli_list_free(&a->paths);
    cli_list_free(&a->tags);
    cli_list_free(&a->labels);
    cli_list_free(&a->excludes);
}

/* Returns PARSED to go on, or the exit code to leave with (0 after --help). */
#define PARSED (-1)
static int parse_args(struct cli *g, int argc, char **argv, struct backup_args *a)
{
    static const struct option longopts[] = {
        {"tag", required_argument, NULL, O_TAG},
        {"host", required_argument, NULL, O_HOST},
        {"label", required_argument, NULL, O_LABEL},
        {"parent", required_argument, NULL, O_PARENT},
        {"force", no_argument, NULL, O_FORCE},
        {"exclude", required_argument, NULL, O_EXCLUDE},
        {"exclude-file", required_argument, NULL, O_EXCLUDE_FILE},
        {"one-file-system", no_argument, NULL, O_ONE_FS},
        {"threads", required_argument, NULL, O_THREADS},
        {NULL, 0, NULL, 0},
    };
    struct cli_parser p;
    cli_parser_init(&p, backup_usage, "", longopts);
    /* Patterns from files and tags split at commas are copies; all are, for one owner. */
    a->excludes.owned = a->tags.owned = true;
    int opt, rc = 0;
    struct err e;
    err_clear(&e);
    while (!rc && (opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        switch (opt) {
        case O_TAG:
            rc = cli_list_add_csv(&a->tags, optarg);
            break;
        case O_HOST:
            a->host = optarg;
            break;
        case O_LABEL:
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return cli_usage_error(g, "--label wants KEY=VALUE, not '%s'", optarg);
            rc = cli_list_add(&a->labels, optarg);
            break;
        case O_PARENT:
            a->parent = optarg;
            break;
        case O_FORCE:
            a->force = true;
            break;
        case O_EXCLUDE:
            rc = cli_list_add(&a->excludes, optarg);
            break;
        case O_EXCLUDE_FILE:
            if (opt_read_patterns(optarg, &a->excludes, &e)) return cli_fail(g, &e);
            break;
        case O_ONE_FS:
            a->one_fs = true;
            break;
        case O_THREADS:
            if (!opt_parse_uint(optarg, 1, 256, &a->threads))
                return cli_usage_error(g, "--threads wants a number from 1 to 256");
            break;
        default:
            return cli_parse_exit(opt);
        }
    }
    if (rc) {
        cli_msg("out of memory");
        return PV_EXIT_ERROR;
    }
    if (a->force && a->parent) return cli_usage_error(g, "--parent and --force exclude each other");
    for (int i = optind; i < argc; i++)
        if (cli_list_add(&a->paths, argv[i])) {
            cli_msg("out of memory");
            return PV_EXIT_ERROR;
        }
    if (!a->paths.n)
        return cli_usage_error(g, "what should be backed up? (give one or more paths)");
    return PARSED;
}

struct backup_ui {
    struct progress progress;
};

static void on_progress(void *ctx, const struct arch_progress *ap)
{
    struct backup_ui *ui = ctx;
    struct progress_figures f = {
        .elapsed = ap->elapsed,
        .files_done = ap->files_done,
        .files_total = ap->files_total,
        .bytes_done = ap->bytes_done,
        .bytes_total = ap->bytes_total,
        .totals_final = ap->scan_done,
        .has_bytes_new = true,
        .bytes_new = ap->bytes_new,
        .errors = ap->errors,
    };
    progress_update(&ui->progress, &f);
}

static void on_report(void *ctx, const char *path, const char *msg)
{
    struct backup_ui *ui = ctx;
    progress_error(&ui->progress, path, msg);
}

static void print_summary(const struct cli *g, const struct snapshot *s)
{
    const struct snap_summary *m = &s->summary;
    char sid[9], b1[32], b2[32], b3[32], t[32];
    if (g->json) {
        json_t *o = fmt_json_snap_summary(m);
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_set(o, "snapshot_id", fmt_json_oid(&s->id));
        if (s->has_parent) fmt_json_set(o, "parent", fmt_json_oid(&s->parent));
        fmt_json_set(o, "incomplete", json_boolean(s->incomplete));
        fmt_json_set(o, "seconds", json_real(m->duration));
        fmt_json_print(o, false);
        return;
    }
    if (g->verbosity == 0) return;
    if (s->has_parent) printf("parent snapshot %s\n", fmt_short_id(&s->parent, sid));
    printf("Files: %10llu new, %10llu changed, %10llu unmodified\n",
           (unsigned long long)m->files_new, (unsigned long long)m->files_changed,
           (unsigned long long)m->files_unmodified);
    printf("Dirs:  %10llu new, %10llu changed, %10llu unmodified\n",
           (unsigned long long)m->dirs_new, (unsigned long long)m->dirs_changed,
           (unsigned long long)m->dirs_unmodified);
    printf("Added to the repository: %s in %llu blobs (%s stored)\n", fmt_bytes(m->bytes_new, b1),
           (unsigned long long)m->blobs_new, fmt_bytes(m->bytes_stored, b2));
    printf("processed %llu files, %s (%s read) in %s\n", (unsigned long long)m->total_files,
           fmt_bytes(m->total_bytes, b1), fmt_bytes(m->bytes_read, b3),
           fmt_duration(m->duration, t));
    if (m->files_changed_during)
        printf("%llu files changed while they were read\n",
               (unsigned long long)m->files_changed_during);
    if (s->incomplete)
        printf("snapshot %s saved, INCOMPLETE: %llu entries could not be read\n",
               fmt_short_id(&s->id, sid), (unsigned long long)m->errors);
    else
        printf("snapshot %s saved\n", fmt_short_id(&s->id, sid));
}

int cmd_backup(struct cli *g, int argc, char **argv)
{
    struct backup_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_args(g, argc, argv, &a);
    struct repo *r = NULL;
    struct lock *lk = NULL;
    if (rc == PARSED) rc = cli_open_repo(g, &r);
    if (r && !rc) rc = cli_writer_begin(g, r, &lk);
    if (!r || rc) { /* a usage error, --help, the repository did not open, or no lock */
        repo_close(r);
        args_free(&a);
        return rc;
    }

    struct snapshot parent, snap;
    memset(&parent, 0, sizeof parent);
    memset(&snap, 0, sizeof snap);
    if (a.parent) {
        /* The host narrows "latest" as it does for restore; an ID names one snapshot anyway. */
        char here[256] = "unknown";
        struct cli_filter by_host;
        memset(&by_host, 0, sizeof by_host);
        if (!a.host && gethostname(here, sizeof here) == 0) here[sizeof here - 1] = 0;
        by_host.host = a.host ? a.host : here;
        rc = cli_find_snapshot(g, r, a.parent, &by_host, &parent);
    }
    struct backup_ui ui;
    progress_init(&ui.progress, g->json, g->verbosity);
    if (!rc) {
        struct arch_options o = {
            .hostname = a.host,
            .tags = a.tags.v,
            .n_tags = a.tags.n,
            .labels = a.labels.v,
            .n_labels = a.labels.n,
            .parent = a.parent ? &parent.id : NULL,
            .no_parent = a.force,
            .excludes = a.excludes.v,
            .n_excludes = a.excludes.n,
            .one_file_system = a.one_fs,
            .threads = (unsigned)a.threads,
            .progress = on_progress,
            .report = on_report,
            .ctx = &ui,
            .cancel = lock_stop_flag(lk),
        };
        struct err e;
        err_clear(&e);
        int brc = arch_backup(r, a.paths.v, a.paths.n, &o, &snap, &e);
        brc = cli_writer_end(lk, brc, &e);
        lk = NULL;
        progress_finish(&ui.progress);
        if (brc) {
            rc = cli_fail(g, &e);
        } else {
            print_summary(g, &snap);
            rc = snap.incomplete ? PV_EXIT_INCOMPLETE : PV_EXIT_OK;
            snap_free(&snap);
        }
    }
    progress_destroy(&ui.progress);
    snap_free(&parent);
    struct err ignored;
    cli_writer_end(lk, 0, &ignored);
    repo_close(r);
    args_free(&a);
    return rc;
}
