/* cmd_prune.c - `podvault prune`, and prune's summary that forget --prune and maintain print
 * too. */
#include <jansson.h>
#include <stdio.h>

#include "cli/cmd_maint.h"
#include "cli/format.h"
#include "cli/maint.h"
#include "cli/writer_lock.h"
#include "repo/lock.h"
#include "repo/prune.h"
#include "repo/repo.h"

json_t *cli_prune_json(const struct prune_stats *s, bool dry_run)
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

void cli_prune_print(const struct cli *g, const struct prune_stats *s, bool dry_run, bool quick)
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
int cli_run_prune(struct cli *g, struct repo *r, struct cli_maint_args *a, json_t **json_out)
{
    struct lock *lk;
    int rc = cli_maint_begin(g, r, a, &lk);
    if (rc) return rc;
    a->prune.progress = cli_note_phase;
    a->prune.pack = cli_note_pack;
    a->prune.ctx = g;
    struct prune_stats st;
    struct err e;
    err_clear(&e);
    int prc = prune_run(r, lk, &a->prune, &st, &e);
    struct err lost;
    if (prc == ERR_CANCELED && lock_lost(lk, &lost)) e = lost;
    cli_lock_release(lk);
    if (prc < 0) return cli_fail(g, &e);
    if (json_out)
        *json_out = cli_prune_json(&st, a->prune.dry_run);
    else if (g->json) {
        json_t *o = cli_prune_json(&st, a->prune.dry_run);
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_print(o, false);
    } else {
        cli_prune_print(g, &st, a->prune.dry_run, a->prune.quick);
    }
    return PV_EXIT_OK;
}

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
    struct cli_maint_args a;
    cli_maint_args_init(&a);
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
            int rc = cli_prune_option(g, opt, optarg, &a);
            if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
            if (rc) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(g, "prune takes no arguments");
    struct repo *r;
    int rc = cli_open_repo(g, &r);
    if (rc) return rc;
    rc = cli_run_prune(g, r, &a, NULL);
    repo_close(r);
    return rc;
}
