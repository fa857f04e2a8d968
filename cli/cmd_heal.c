/* cmd_heal.c - `podvault repair snapshots`, and the list of damaged snapshots and files that
 * `check` prints when data is lost (repo/heal.h does the work). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/contract.h"
#include "cli/cmd_maint.h"
#include "cli/format.h"
#include "cli/maint.h"
#include "cli/writer_lock.h"
#include "repo/heal.h"
#include "repo/lock.h"
#include "repo/repo.h"

enum { O_HEAL_FORGET = 800 };

/* One damaged entry: a JSON "damage" line, or "damaged: snapshot ID: PATH: ...". */
static void on_damage(void *ctx, const struct heal_damage *d)
{
    struct cli *g = ctx;
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_DAMAGE));
        fmt_json_set(o, "snapshot", fmt_json_oid(d->snapshot));
        fmt_json_set(o, "path", fmt_json_str(d->path));
        fmt_json_set(o, "dir", json_boolean(d->dir));
        if (!d->dir) {
            fmt_json_set(o, "blobs_lost", json_integer((json_int_t)d->lost));
            fmt_json_set(o, "blobs", json_integer((json_int_t)d->blobs));
        }
        fmt_json_print(o, false);
        return;
    }
    char sid[9];
    printf("damaged: snapshot %s: ", fmt_short_id(d->snapshot, sid));
    fmt_put_escaped(stdout, d->path, strlen(d->path));
    if (d->dir)
        printf(": directory lost (its tree cannot be read)\n");
    else
        printf(": %llu of %llu blobs lost\n", (unsigned long long)d->lost,
               (unsigned long long)d->blobs);
    fflush(stdout);
}

int cli_check_damage(struct cli *g, struct repo *r, bool read_data)
{
    struct err e;
    err_clear(&e);
    struct heal_options o = {
        .read_data = read_data, .report = on_damage, .ctx = g, .cancel = g->cancel};
    struct heal_stats st;
    if (repo_load_index(r, &e) < 0 || heal_scan(r, &o, &st, &e) < 0) {
        fprintf(stderr, "podvault: finding the damaged files: %s\n", e.msg);
        return -1;
    }
    if (!g->json)
        printf("damage: %llu of %llu snapshots, %llu files and %llu directories; `podvault repair "
               "index` finds what intact packs still hold, `podvault repair snapshots` drops what "
               "is lost for good\n",
               (unsigned long long)st.snapshots_damaged, (unsigned long long)st.snapshots,
               (unsigned long long)st.files_lost, (unsigned long long)st.dirs_lost);
    return 0;
}

static void on_rewritten(void *ctx, const struct oid *old_id, const struct oid *new_id,
                         bool forgotten)
{
    struct cli *g = ctx;
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_REWRITTEN));
        fmt_json_set(o, "snapshot", fmt_json_oid(old_id));
        fmt_json_set(o, "new_snapshot", new_id ? fmt_json_oid(new_id) : json_null());
        fmt_json_set(o, "forgotten", json_boolean(forgotten));
        fmt_json_print(o, false);
        return;
    }
    char a[9], b[9];
    if (!new_id)
        printf("snapshot %s would be rewritten (--dry-run)\n", fmt_short_id(old_id, a));
    else
        printf("snapshot %s rewritten as %s (tag \"repaired\"); the original was %s\n",
               fmt_short_id(old_id, a), fmt_short_id(new_id, b),
               forgotten ? "removed (--forget)" : "kept (--forget removes it)");
    fflush(stdout);
}

static void print_summary(const struct cli *g, const struct heal_stats *st)
{
    if (g->json) {
        json_t *j = json_object();
        fmt_json_set(j, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
#define U(field) fmt_json_set(j, #field, json_integer((json_int_t)st->field))
        U(snapshots);
        U(snapshots_damaged);
        U(files_lost);
        U(dirs_lost);
        U(snapshots_written);
        U(snapshots_forgotten);
        U(snapshots_unrepairable);
#undef U
        fmt_json_print(j, false);
        return;
    }
    printf("%llu of %llu snapshots damaged (%llu files, %llu directories dropped); %llu "
           "rewritten, %llu originals removed, %llu beyond repair (root tree lost)\n",
           (unsigned long long)st->snapshots_damaged, (unsigned long long)st->snapshots,
           (unsigned long long)st->files_lost, (unsigned long long)st->dirs_lost,
           (unsigned long long)st->snapshots_written, (unsigned long long)st->snapshots_forgotten,
           (unsigned long long)st->snapshots_unrepairable);
}

static const char repair_snapshots_usage[] =
    "usage: podvault repair snapshots [--forget] [--dry-run] [--read-data]\n"
    "\n"
    "Rewrites every snapshot that refers to lost data (blobs whose pack is gone or damaged) so\n"
    "that every remaining file restores whole: the damaged files and lost directories are left\n"
    "out and listed. Each new snapshot has the tag \"repaired\"; the original is kept unless\n"
    "--forget is given. Run `podvault repair index` first when packs were lost, and back the\n"
    "volumes up again first when they still hold the data: a backup stores the lost blobs again.\n"
    "\n"
    "Options:\n"
    "  --forget      remove each original snapshot once its rewrite is saved\n"
    "  --dry-run     list what would be dropped, write nothing\n"
    "  --read-data   also read every data blob, and count the unreadable ones as lost\n";

int cmd_repair_snapshots(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"forget", no_argument, NULL, O_HEAL_FORGET},
        {"dry-run", no_argument, NULL, O_DRY_RUN},
        {"read-data", no_argument, NULL, O_READ_DATA},
        {NULL, 0, NULL, 0},
    };
    struct heal_options o = {.report = on_damage, .rewritten = on_rewritten, .ctx = g};
    struct cli_parser p;
    cli_parser_init(&p, repair_snapshots_usage, "", longopts);
    int opt;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt == O_HEAL_FORGET)
            o.forget = true;
        else if (opt == O_DRY_RUN)
            o.dry_run = true;
        else if (opt == O_READ_DATA)
            o.read_data = true;
        else
            return cli_parse_exit(opt < 0 ? opt : CLI_OPT_BAD);
    }
    if (optind + 1 != argc || strcmp(argv[optind], "snapshots") != 0)
        return cli_usage_error(g, "repair snapshots takes no arguments");
    if (o.forget && o.dry_run)
        return cli_usage_error(g, "--forget and --dry-run exclude each other");
    struct repo *r = NULL;
    struct lock *lk = NULL;
    int rc = cli_open_repo(g, &r);
    if (!rc) rc = cli_writer_begin(g, r, &lk);
    if (rc) {
        repo_close(r);
        return rc;
    }
    o.cancel = lock_stop_flag(lk);
    struct heal_stats st;
    struct err e;
    err_clear(&e);
    int hrc = heal_repair_snapshots(r, &o, &st, &e);
    hrc = cli_writer_end(lk, hrc, &e);
    repo_close(r);
    if (hrc < 0) return cli_fail(g, &e);
    print_summary(g, &st);
    return st.snapshots_unrepairable ? PV_EXIT_ERROR : PV_EXIT_OK;
}
