/* common.c - what every command uses: one-line messages, exit codes for failures, opening the
 * repository and finding snapshots. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/format.h"
#include "cli/password.h"
#include "repo/cache.h"
#include "repo/repo.h"

/* Messages go through here so that each stays on one line whatever bytes it quotes. */
static void put_message(const char *msg)
{
    fputs("podvault: ", stderr);
    for (const char *c = msg; *c; c++)
        fputc((unsigned char)*c < 0x20 || *c == 0x7f ? '?' : *c, stderr);
    fputc('\n', stderr);
    fflush(stderr);
}

void cli_msg(const char *fmt, ...)
{
    char msg[ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    put_message(msg);
}

int cli_usage_error(const struct cli *g, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g->cmd)
        cli_msg("%s: %s (see 'podvault %s --help')", g->cmd, msg, g->cmd);
    else
        cli_msg("%s (see 'podvault --help')", msg);
    return PV_EXIT_USAGE;
}

int cli_fail(const struct cli *g, const struct err *e)
{
    if (e->code == ERR_CANCELED || *g->cancel) {
        put_message("interrupted");
        return PV_EXIT_CANCELED;
    }
    put_message(e->msg[0] ? e->msg : "failed (no message)");
    return PV_EXIT_ERROR;
}

void cli_note(const struct cli *g, const char *fmt, ...)
{
    if (g->verbosity < 2) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char *env_get(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

int cli_repo_opts(const struct cli *g, struct repo_open_opts *o, char **cache_dir, struct err *e)
{
    *cache_dir = NULL;
    repo_open_opts_default(o);
    struct backend_opts *b = &o->backend;
    if (backend_opts_from_vars(b, env_get, NULL, e) < 0) return e->code;
    if (g->s3_region) b->region = g->s3_region;
    if (g->cacert) b->cacert = g->cacert;
    if (g->insecure_tls) b->insecure_tls = true;
    if (g->s3_addressing != BACKEND_ADDR_AUTO) b->addressing = g->s3_addressing;
    b->as_of_ms = g->as_of_ms;
    struct err ignored; /* without a cache directory the repository works, only slower */
    if (!g->no_cache && cache_default_dir(g->cache_dir, getenv("XDG_CACHE_HOME"), getenv("HOME"),
                                          cache_dir, &ignored) == 0)
        o->cache_dir = *cache_dir;
    return 0;
}

int cli_repo_open(const struct cli *g, const char *password, struct repo **out, struct err *e)
{
    struct repo_open_opts o;
    char *cache_dir;
    *out = NULL;
    int rc = cli_repo_opts(g, &o, &cache_dir, e);
    if (rc == 0) rc = repo_open(g->repo, password, &o, out, e);
    free(cache_dir);
    return rc;
}

int cli_repo_create(const struct cli *g, const char *password, const struct repo_create_params *p,
                    struct err *e)
{
    struct repo_open_opts o;
    char *cache_dir;
    int rc = cli_repo_opts(g, &o, &cache_dir, e);
    if (rc == 0) rc = repo_create(g->repo, password, p, &o, e);
    free(cache_dir);
    return rc;
}

int cli_open_repo(struct cli *g, struct repo **out)
{
    *out = NULL;
    if (!g->repo || !*g->repo)
        return cli_usage_error(g, "no repository given: use -r or PODVAULT_REPOSITORY");
    struct err e;
    err_clear(&e);
    char *pw = NULL;
    struct password_source src = {g->password_file, "PODVAULT_PASSWORD",
                                  "enter the repository password: ", false, g->cancel};
    if (password_get(&src, &pw, &e)) return cli_fail(g, &e);
    int rc = cli_repo_open(g, pw, out, &e);
    password_free(pw);
    if (rc) *out = NULL;
    if (rc == ERR_NOT_FOUND) {
        put_message(e.msg);
        return PV_EXIT_NO_REPO;
    }
    if (rc == ERR_AUTH) {
        put_message(e.msg);
        return PV_EXIT_WRONG_PASSWORD;
    }
    if (rc) return cli_fail(g, &e);
    char id[9];
    cli_note(g, "opened repository %s with key %s", g->repo, fmt_short_id(repo_key_id(*out), id));
    return PV_EXIT_OK;
}

int cli_open_repo_indexed(struct cli *g, struct repo **out)
{
    int rc = cli_open_repo(g, out);
    if (rc) return rc;
    struct err e;
    err_clear(&e);
    if (repo_load_index(*out, &e)) {
        rc = cli_fail(g, &e);
        repo_close(*out);
        *out = NULL;
        return rc;
    }
    cli_note(g, "index: %zu blobs in %zu packs", idx_blob_count(repo_index(*out)),
             idx_pack_count(repo_index(*out)));
    return PV_EXIT_OK;
}

int cli_find_snapshot(struct cli *g, struct repo *r, const char *spec, const struct cli_filter *f,
                      struct snapshot *out)
{
    struct err e;
    struct snap_filter sf;
    err_clear(&e);
    cli_filter_make(f, &sf);
    if (snap_find(r, spec, &sf, out, &e)) return cli_fail(g, &e);
    return PV_EXIT_OK;
}
