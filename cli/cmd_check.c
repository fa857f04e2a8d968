/* cmd_check.c - `podvault check` and `podvault repair index` (`repair snapshots` is in
 * cmd_heal.c), and check's report that
 * maintain prints too. */
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "cli/cmd_maint.h"
#include "cli/format.h"
#include "cli/maint.h"
#include "cli/writer_lock.h"
#include "repo/check.h"
#include "repo/lock.h"
#include "repo/repo.h"

static const char check_usage[] =
    "usage: podvault check [--read-data | --read-data-subset N%|n/m] [options]\n"
    "\n"
    "Verifies the repository: every index file and snapshot loads, every tree and data blob a\n"
    "snapshot refers to is indexed, every indexed pack exists and its header agrees with the\n"
    "index. --read-data also reads every pack and verifies each blob. Each problem is printed\n"
    "with the ID of the object at fault; unreferenced data is a warning, not an error. When data\n"
    "is lost, the snapshots and files that refer to it are listed (\"damaged: ...\").\n"
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

void cli_check_problem(void *ctx, const struct check_problem *pb)
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

json_t *cli_check_json(const struct check_stats *s)
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

void cli_check_print(const struct cli *g, const struct check_stats *s)
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
    struct cli_maint_args a;
    cli_maint_args_init(&a);
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
            int rc = cli_prune_option(g, opt, optarg, &a);
            if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
            if (rc) return rc;
        }
    }
    if (optind < argc) return cli_usage_error(g, "check takes no arguments");
    /* Reading data frees a range of a pack (2 MiB) after each read, which would otherwise stay in
     * the heap for the same reason (measured: bench/RESULTS.md, "glibc's mmap threshold in
     * maintenance"). */
    if (o.read != CHECK_READ_NONE) mallopt(M_MMAP_THRESHOLD, MAINT_MMAP_THRESHOLD);
    struct repo *r;
    struct lock *lk;
    int rc = cli_maint_open(g, &a, &r, &lk);
    if (rc) return rc;
    o.threads = a.threads;
    o.max_memory = a.prune.max_memory;
    o.cancel = lock_stop_flag(lk);
    o.report = cli_check_problem;
    o.progress = cli_note_phase;
    o.ctx = g;
    struct check_stats st;
    int crc = check_run(r, &o, &st, &e);
    /* Lost data: name what it costs (not after passes, which leave a partial index). */
    if (crc == 0 && st.errors && st.passes <= 1) cli_check_damage(g, r, o.read == CHECK_READ_ALL);
    cli_lock_release(lk);
    repo_close(r);
    if (crc < 0) return cli_fail(g, &e);
    if (g->json) {
        json_t *j = cli_check_json(&st);
        fmt_json_set(j, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_print(j, false);
    } else {
        cli_check_print(g, &st);
    }
    return st.errors ? PV_EXIT_ERROR : PV_EXIT_OK;
}

/* ---- repair ---- */

static const char repair_usage[] =
    "usage: podvault repair index [options]\n"
    "       podvault repair snapshots [--forget] [--dry-run] [--read-data]\n"
    "       podvault --as-of TIME repair versions [--dry-run] (podvault repair versions --help)\n"
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
    for (int i = 1; i < argc; i++) { /* the first word says what; each has its own options */
        if (argv[i][0] == '-') continue;
        if (strcmp(argv[i], "snapshots") == 0) return cmd_repair_snapshots(g, argc, argv);
        break;
    }
    static const struct option longopts[] = {
        {"threads", required_argument, NULL, O_THREADS},
        {"lock-wait", required_argument, NULL, O_LOCK_WAIT},
        {NULL, 0, NULL, 0},
    };
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "versions") == 0) return cmd_repair_versions(g, argc, argv);
    struct cli_maint_args a;
    cli_maint_args_init(&a);
    struct cli_parser p;
    cli_parser_init(&p, repair_usage, "", longopts);
    int opt;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt < 0) return cli_parse_exit(opt);
        int rc = cli_prune_option(g, opt, optarg, &a);
        if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
        if (rc) return rc;
    }
    if (optind >= argc || strcmp(argv[optind], "index") != 0 || optind + 1 != argc)
        return cli_usage_error(
            g, "what should be repaired? (\"index\", \"snapshots\" or \"versions\")");
    struct repo *r;
    struct lock *lk;
    int rc = cli_maint_open(g, &a, &r, &lk);
    if (rc) return rc;
    struct check_options o = {.threads = a.threads,
                              .cancel = lock_stop_flag(lk),
                              .report = cli_check_problem,
                              .progress = cli_note_phase,
                              .ctx = g};
    struct check_repair_stats st;
    struct err e;
    err_clear(&e);
    int rrc = check_repair_index(r, &o, &st, &e);
    cli_lock_release(lk);
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
