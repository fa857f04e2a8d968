/* maint.c - what the maintenance commands share: prune's options, the environment's memory
 * bound, the prune lock, progress notes; see maint.h. */
#include "cli/maint.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "cli/format.h"
#include "cli/options.h"
#include "cli/writer_lock.h"
#include "repo/lock.h"

#define MAX_MEMORY_ENV "PODVAULT_MAX_MEMORY"

/* The bound from the environment, for a CronJob; --max-memory overrides it. A bad value is
 * refused by cli_maint_begin, which every command here passes. */
static bool env_max_memory(uint64_t *v)
{
    const char *s = getenv(MAX_MEMORY_ENV);
    *v = 0;
    return !s || !*s || opt_parse_size(s, v);
}

void cli_maint_args_init(struct cli_maint_args *a)
{
    memset(a, 0, sizeof *a);
    prune_options_default(&a->prune);
    env_max_memory(&a->prune.max_memory);
}

/* Takes one of PRUNE_OPTIONS; returns 0, 1 when `opt` is not one, or an exit code (> 1). */
int cli_prune_option(struct cli *g, int opt, const char *arg, struct cli_maint_args *a)
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
 * lock; returns an exit code, having printed the error (see MAINT_MMAP_THRESHOLD). */
int cli_maint_begin(struct cli *g, struct repo *r, const struct cli_maint_args *a, struct lock **lk)
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

int cli_maint_open(struct cli *g, const struct cli_maint_args *a, struct repo **r, struct lock **lk)
{
    int rc = cli_open_repo(g, r);
    if (rc) return rc;
    rc = cli_maint_begin(g, *r, a, lk);
    if (rc) {
        repo_close(*r);
        *r = NULL;
    }
    return rc;
}

void cli_note_phase(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    struct cli *g = ctx;
    (void)done;
    if (total > 1)
        cli_note(g, "%s (%llu)", phase, (unsigned long long)total);
    else
        cli_note(g, "%s", phase);
}

void cli_note_pack(void *ctx, enum prune_action a, const struct oid *pack, uint64_t size,
                   uint64_t used)
{
    struct cli *g = ctx;
    static const char *const what[] = {"", "delete", "repack", "pending", "unmark"};
    char hex[OID_HEX_LEN + 1], b1[32], b2[32];
    cli_note(g, "%-7s pack %s  %s, %s used", what[a], oid_hex(pack, hex), fmt_bytes(size, b1),
             fmt_bytes(used, b2));
}
