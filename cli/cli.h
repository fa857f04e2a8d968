/* cli.h - what the parts of the `podvault` command line share: global settings, exit codes,
 * option parsing that mixes global and command options, and opening the repository. */
#ifndef PV_CLI_CLI_H
#define PV_CLI_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/contract.h" /* exit codes (PV_EXIT_*) and --json message types */
#include "base/err.h"
#include "repo/repo.h"
#include "repo/snapshot.h"

/* Settings shared by every command; filled from the environment, then from global options
 * (which are accepted before and after the command name). */
struct cli {
    const char *cmd;           /* command being run, for messages */
    const char *repo;          /* -r / $PODVAULT_REPOSITORY */
    const char *password_file; /* --password-file / $PODVAULT_PASSWORD_FILE */
    const char *cache_dir;     /* --cache-dir / $PODVAULT_CACHE_DIR */
    bool no_cache;
    /* S3 settings given as global options; they beat the environment's (cli_repo_opts). */
    const char *s3_region;                 /* --s3-region */
    const char *cacert;                    /* --cacert */
    bool insecure_tls;                     /* --insecure-tls */
    enum backend_addressing s3_addressing; /* --s3-path-style / --s3-virtual-host */
    int64_t as_of_ms; /* --as-of: read the repository as it stood then (ms; 0: now) */
    bool json;
    int verbosity; /* 0 with -q, 1 normally, 2+ with -v */
    /* Set by SIGINT/SIGTERM; polled by long operations. */
    const volatile sig_atomic_t *cancel;
};

/* Option parsing: a command's options merged with the global ones. Global options are applied
 * to `struct cli` as they are met, so they work anywhere on the line. */
#define CLI_MAX_OPTIONS 48
struct cli_parser {
    const char *usage; /* the command's --help text */
    struct option opts[CLI_MAX_OPTIONS];
    char shortopts[64];
};

/* Returned by cli_next() besides the command's own option values. */
enum { CLI_OPT_END = -1, CLI_OPT_HELP = -10, CLI_OPT_BAD = -11 };

void cli_parser_init(struct cli_parser *p, const char *usage, const char *shortopts,
                     const struct option *longopts);
/* The next command option (its `val`), CLI_OPT_END when options are over (positional arguments
 * are then argv[optind..]), CLI_OPT_HELP after printing the usage for -h/--help, or CLI_OPT_BAD
 * after printing a usage error. `optarg` holds the option's argument. */
int cli_next(struct cli *g, struct cli_parser *p, int argc, char **argv);
/* Handles the CLI_OPT_HELP / CLI_OPT_BAD results: returns the exit code to leave with. */
int cli_parse_exit(int opt);

/* Prints "podvault: <message>" (one line) on stderr. */
void cli_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints a usage error naming the command and returns PV_EXIT_USAGE. */
int cli_usage_error(const struct cli *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints an error and returns its exit code (130 when canceled, 1 otherwise). */
int cli_fail(const struct cli *g, const struct err *e);
/* Prints a verbose note (-v) on stderr. */
void cli_note(const struct cli *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The settings the repository is opened with, read here at the program's edge: the backend's
 * from the environment (backend_opts_from_vars) with the global options above them, and the
 * cache directory (--cache-dir, $PODVAULT_CACHE_DIR, $XDG_CACHE_HOME/podvault,
 * ~/.cache/podvault; none with --no-cache or when none can be named). *cache_dir is malloc'd
 * (or NULL) and o->cache_dir points to it: free it after the last use of `o`. */
int cli_repo_opts(const struct cli *g, struct repo_open_opts *o, char **cache_dir, struct err *e);
/* repo_open / repo_create with cli_repo_opts' settings; errors as those functions'. */
struct repo;
int cli_repo_open(const struct cli *g, const char *password, struct repo **out, struct err *e);
int cli_repo_create(const struct cli *g, const char *password, const struct repo_create_params *p,
                    struct err *e);
/* Reads the password and opens the repository; returns an exit code (0 when opened), having
 * printed the error: 10 when there is no repository, 12 when the password is wrong. */
int cli_open_repo(struct cli *g, struct repo **out);
/* Like cli_open_repo and also loads the index. */
int cli_open_repo_indexed(struct cli *g, struct repo **out);

/* A growable list of strings borrowed from argv (or owned when `owned`). */
struct cli_list {
    const char **v;
    size_t n, cap;
    bool owned;
};
int cli_list_add(struct cli_list *l, const char *s);
/* Adds each non-empty comma-separated item of s; the list must own its strings. */
int cli_list_add_csv(struct cli_list *l, const char *s);
void cli_list_free(struct cli_list *l);

/* Filters for "latest": --host, --path (repeatable), --tag (repeatable, or comma-separated). */
struct cli_filter {
    const char *host;
    struct cli_list paths; /* owned: made absolute */
    struct cli_list tags;  /* owned: split at commas */
};
/* The long options of a filter, to append to a command's table (values below). */
enum { CLI_OPT_FILTER_HOST = 900, CLI_OPT_FILTER_PATH, CLI_OPT_FILTER_TAG };
#define CLI_FILTER_OPTIONS                                                                         \
    {"host", required_argument, NULL, CLI_OPT_FILTER_HOST},                                        \
        {"path", required_argument, NULL, CLI_OPT_FILTER_PATH},                                    \
    {                                                                                              \
        "tag", required_argument, NULL, CLI_OPT_FILTER_TAG                                         \
    }
/* Takes one filter option; returns 0, or -1 when memory is out. */
int cli_filter_add(struct cli_filter *f, int opt, const char *arg);
void cli_filter_make(const struct cli_filter *f, struct snap_filter *out);
void cli_filter_free(struct cli_filter *f);

/* Resolves a snapshot spec (ID, unique prefix, "latest") and loads it; returns an exit code,
 * having printed the error. */
int cli_find_snapshot(struct cli *g, struct repo *r, const char *spec, const struct cli_filter *f,
                      struct snapshot *out);

/* The commands: each gets argv from its own name on and returns an exit code. */
int cmd_init(struct cli *g, int argc, char **argv);
int cmd_backup(struct cli *g, int argc, char **argv);
int cmd_snapshots(struct cli *g, int argc, char **argv);
int cmd_ls(struct cli *g, int argc, char **argv);
int cmd_restore(struct cli *g, int argc, char **argv);
int cmd_cat(struct cli *g, int argc, char **argv);
int cmd_key(struct cli *g, int argc, char **argv);
int cmd_version(struct cli *g, int argc, char **argv);

#endif
