/* main.c - the `podvault` program: global options, command dispatch, signals and exit codes. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/request.h"
#include "base/failpoint.h"
#include "cli/cli.h"
#include "cli/cmd_maint.h"
#include "repo/crypt.h"

static const char usage[] =
    "usage: podvault [global options] COMMAND [options] [args]\n"
    "\n"
    "Backs up directories into a deduplicating, compressed, encrypted repository and restores\n"
    "them.\n"
    "\n"
    "Commands:\n"
    "  init        create a repository\n"
    "  backup      back up files and directories\n"
    "  snapshots   list snapshots\n"
    "  ls          list the files of a snapshot\n"
    "  restore     restore a snapshot\n"
    "  cat         print a repository object as JSON\n"
    "  key         manage the passwords of a repository\n"
    "  forget      remove snapshots, by ID or by a retention policy\n"
    "  prune       free the space no snapshot needs\n"
    "  check       verify the repository (and its data with --read-data)\n"
    "  repair      rebuild the index from the packs (repair index), or rewrite snapshots\n"
    "              without lost data (repair snapshots)\n"
    "  maintain    run the maintenance that is due (for scheduled jobs)\n"
    "  version     print the version\n"
    "  agent       run the node agent (PodVolumeBackup/PodVolumeRestore on this node)\n"
    "  request     ask the node agents for pod volume backups and restores\n"
    "\n"
    "Global options (before or after the command):\n"
    "  -r, --repo LOCATION     repository: a directory, or "
    "s3:http(s)://host[:port]/bucket[/prefix]\n"
    "                          (default $PODVAULT_REPOSITORY)\n"
    "  --password-file FILE    read the password from FILE (default $PODVAULT_PASSWORD_FILE;\n"
    "                          else $PODVAULT_PASSWORD; else ask on the terminal)\n"
    "  --cache-dir DIR         local cache (default $PODVAULT_CACHE_DIR, else\n"
    "                          $XDG_CACHE_HOME/podvault or ~/.cache/podvault)\n"
    "  --no-cache              do not use a local cache\n"
    "  --json                  machine output: JSON, one object per line\n"
    "  -q, --quiet             print only errors\n"
    "  -v, --verbose           print more\n"
    "  --insecure-tls          do not verify the S3 server's TLS certificate\n"
    "  --cacert FILE           trust the CA certificates in FILE for S3\n"
    "  --s3-region REGION      S3 region (default $AWS_REGION or $AWS_DEFAULT_REGION, else\n"
    "                          the bucket's own)\n"
    "  --s3-path-style         address buckets as http://host/bucket\n"
    "  --s3-virtual-host       address buckets as http://bucket.host (default: path style,\n"
    "                          but virtual-hosted for amazonaws.com names without a port)\n"
    "  --as-of TIME            read an S3 repository (a versioned bucket) as it stood at TIME\n"
    "                          (UTC: 2026-12-08T02:16:06Z or @SECONDS): every object is its\n"
    "                          newest version then; nothing can be written\n"
    "\n"
    "Environment for S3: $PODVAULT_S3_UPLOADS (uploads at once, default 4) and\n"
    "$PODVAULT_S3_DOWNLOADS (read-ahead downloads at once, default 2).\n"
    "\n"
    "Exit codes: 0 ok, 1 error, 2 usage error, 3 backup saved but some entries could not be\n"
    "read, 10 no repository at the location, 12 wrong password, 130 interrupted.\n"
    "\n"
    "`podvault COMMAND --help` describes a command.\n";

/* The one piece of global state: a signal handler can only reach a static. */
static volatile sig_atomic_t canceled;

static void on_signal(int sig)
{
    (void)sig;
    /* A second signal means "now": the operation did not stop quickly enough. */
    if (canceled) _exit(PV_EXIT_CANCELED);
    canceled = 1;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* Restart system calls: library code sees no EINTR and stops by polling the flag. */
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A parent may have left them blocked (the mask survives exec); they must reach us. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    /* A closed pipe (podvault ls | head) is an error on write, not a silent death. */
    signal(SIGPIPE, SIG_IGN);
}

/* The node agent parses its own options and handles its own signals (see agent/agent.h). */
static int cmd_agent(struct cli *g, int argc, char **argv)
{
    (void)g;
    return agent_main(argc, argv);
}

/* `request` also parses its own options (see agent/request.h). */
static int cmd_request(struct cli *g, int argc, char **argv)
{
    (void)g;
    return request_main(argc, argv);
}

static const struct {
    const char *name;
    int (*run)(struct cli *g, int argc, char **argv);
} commands[] = {
    {"init", cmd_init},
    {"backup", cmd_backup},
    {"snapshots", cmd_snapshots},
    {"ls", cmd_ls},
    {"restore", cmd_restore},
    {"cat", cmd_cat},
    {"key", cmd_key},
    {"version", cmd_version},
    {"forget", cmd_forget},
    {"prune", cmd_prune},
    {"check", cmd_check},
    {"repair", cmd_repair},
    {"maintain", cmd_maintain},
    {"agent", cmd_agent},
    {"request", cmd_request},
};

static int find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0) return (int)i;
    return -1;
}

/* Environment defaults; options parsed later override them. */
static void from_environment(struct cli *g)
{
    g->repo = getenv("PODVAULT_REPOSITORY");
    g->password_file = getenv("PODVAULT_PASSWORD_FILE");
    g->cache_dir = getenv("PODVAULT_CACHE_DIR");
    g->verbosity = 1;
    g->cancel = &canceled;
}

int main(int argc, char **argv)
{
    struct cli g;
    memset(&g, 0, sizeof g);
    from_environment(&g);
    install_signals();

    struct err e;
    err_clear(&e);
#ifdef PV_FAILPOINTS
    /* Test builds only (cmake -DPV_FAILPOINTS=ON): read once, here, before any thread. */
    struct fp_config fpc;
    if (fp_parse(getenv("PV_FAILPOINT"), &fpc, &e) < 0) return cli_usage_error(&g, "%s", e.msg);
    fp_start(&fpc);
#endif
    if (crypt_init(&e)) return cli_fail(&g, &e);

    /* Global options before the command; '+' stops at the command name. */
    struct cli_parser p;
    cli_parser_init(&p, usage, NULL, NULL);
    snprintf(p.shortopts, sizeof p.shortopts, "+:r:qvh");
    int opt = cli_next(&g, &p, argc, argv);
    if (opt != CLI_OPT_END) {
        if (opt >= 0) return cli_usage_error(&g, "unexpected option");
        return cli_parse_exit(opt);
    }
    if (optind >= argc) return cli_usage_error(&g, "no command given");
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        if (optind + 1 >= argc || find_command(argv[optind + 1]) < 0) {
            fputs(usage, stdout);
            return PV_EXIT_OK;
        }
        /* "help CMD" is "CMD --help". */
        char *args[] = {argv[optind + 1], "--help", NULL};
        g.cmd = argv[optind + 1];
        optind = 0;
        return commands[find_command(g.cmd)].run(&g, 2, args);
    }
    int c = find_command(name);
    if (c < 0) return cli_usage_error(&g, "unknown command '%s'", name);
    g.cmd = commands[c].name;
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    optind = 0; /* glibc: a full re-initialisation of getopt for the command's own options */
    int rc = commands[c].run(&g, sub_argc, sub_argv);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == PV_EXIT_OK) {
            cli_msg("writing the output: %s", strerror(errno));
            rc = PV_EXIT_ERROR;
        }
    }
    if (canceled && rc != PV_EXIT_USAGE) rc = PV_EXIT_CANCELED;
    return rc;
}
