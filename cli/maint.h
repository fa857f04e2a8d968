/* maint.h - what the maintenance commands (forget, prune, check, repair, maintain; one file
 * each, cmd_forget.c, cmd_prune.c, cmd_check.c, cmd_maintain.c) share: option values, the
 * options of prune that several of them take, the prune lock and heap set-up, progress notes,
 * and the summaries of prune and check that maintain prints too. Internal to cli/: the commands
 * themselves are in cmd_maint.h. Single-threaded like the commands, except where noted.
 */
#ifndef PV_CLI_MAINT_H
#define PV_CLI_MAINT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli/cli.h"
#include "repo/check.h"
#include "repo/prune.h"

struct lock;
struct oid;
struct repo;

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

struct cli_maint_args {
    struct prune_options prune;
    unsigned threads;
    uint32_t lock_wait;
};

/* Defaults, then the environment's memory bound ($PODVAULT_MAX_MEMORY; a bad value is refused
 * by cli_maint_begin). */
void cli_maint_args_init(struct cli_maint_args *a);

/* Takes one of PRUNE_OPTIONS; returns 0, 1 when `opt` is not one, or an exit code (> 1) after
 * printing a usage error. */
int cli_prune_option(struct cli *g, int opt, const char *arg, struct cli_maint_args *a);

/* The heap's mmap threshold under a memory bound: blocks of 128 KiB and more go back to the
 * system when freed. glibc otherwise raises that threshold to the largest block freed (index
 * files, packs), after which such blocks come from the heap and their space stays with the
 * process across passes (measured: bench/RESULTS.md, "glibc's mmap threshold in maintenance"). */
#define MAINT_MMAP_THRESHOLD (128 * 1024)

/* Checks the environment's memory bound, sets the heap up for a bound (MAINT_MMAP_THRESHOLD),
 * and takes the prune lock (*lk, released with cli_lock_release); returns an exit code, having
 * printed the error. */
int cli_maint_begin(struct cli *g, struct repo *r, const struct cli_maint_args *a,
                    struct lock **lk);

/* Opens the repository of the global options (*r, closed with repo_close) and then does
 * cli_maint_begin; on failure nothing stays open. Returns an exit code, having printed the
 * error. */
int cli_maint_open(struct cli *g, const struct cli_maint_args *a, struct repo **r,
                   struct lock **lk);

/* Progress callbacks of prune and check (ctx: the struct cli); they print -v notes only, with
 * cli_note (stdio's stream lock per call: lines of two threads may interleave). */
void cli_note_phase(void *ctx, const char *phase, uint64_t done, uint64_t total);
void cli_note_pack(void *ctx, enum prune_action a, const struct oid *pack, uint64_t size,
                   uint64_t used);

/* Prune's summary as a new JSON object (the caller owns it), and as text (nothing with -q). */
json_t *cli_prune_json(const struct prune_stats *s, bool dry_run);
void cli_prune_print(const struct cli *g, const struct prune_stats *s, bool dry_run, bool quick);

/* Locks, prunes, releases; prints the summary, or with json_out stores it there (owned by the
 * caller) instead. Returns an exit code, having printed the error. */
int cli_run_prune(struct cli *g, struct repo *r, struct cli_maint_args *a, json_t **json_out);

/* Check's report of one problem (ctx: the struct cli): a JSON "error"/"warning" line or text. */
void cli_check_problem(void *ctx, const struct check_problem *pb);
/* Check's summary as a new JSON object (the caller owns it), and as text. */
json_t *cli_check_json(const struct check_stats *s);
void cli_check_print(const struct cli *g, const struct check_stats *s);

#endif
