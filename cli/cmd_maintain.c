/* cmd_maintain.c - `podvault maintain`: the maintenance that is due, for one repository or, with
 * --location, for every repository under a Velero BackupStorageLocation (agent/maintjob.h). */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/k8s_opts.h"
#include "agent/maintjob.h"
#include "cli/cmd_maint.h"
#include "cli/format.h"
#include "cli/maint.h"
#include "cli/writer_lock.h"
#include "repo/check.h"
#include "repo/lock.h"
#include "repo/maintain.h"
#include "repo/repo.h"
#include "repo/retention.h"

static const char maintain_usage[] =
    "usage: podvault maintain [--quick | --full] [options]\n"
    "\n"
    "What a scheduled job runs: does the maintenance that is due, as recorded in the repository\n"
    "(so any node may run it). Quick (hourly): deletes what earlier prunes marked, compacts the\n"
    "index. Full (daily): prune and check. Without --quick/--full, whatever is due (full first).\n"
    "\n"
    "In a cluster, --location NAME (or --default-location, the one marked default) maintains,\n"
    "one after the other, every repository under that Velero BackupStorageLocation, with the\n"
    "password of Secret velero-repo-credentials and the location's S3 settings; -r and\n"
    "--password-file are not used then. Exit code 1 if any repository failed. First it\n"
    "forgets (and prunes) the snapshots made for Velero backups that are gone from both the\n"
    "cluster and the location (--dry-run: only names them).\n"
    "  --server URL | --kubeconfig FILE [--context NAME]   the API server (default in-cluster)\n"
    "  --namespace NS          Velero's namespace (default $VELERO_NAMESPACE, else velero)\n"
    "  --credentials-file FILE S3 keys when the location names no Secret (default\n"
    "                          $AWS_SHARED_CREDENTIALS_FILE)\n"
    "\n"
    "Options:\n"
    "  --quick / --full        consider only this kind\n"
    "  --force                 run even if not due\n"
    "  --dry-run               say what is due and what prune would do; change nothing\n"
    "  --quick-every DURATION  how often quick runs are due (default 1h; units y, m (months),\n"
    "                          d, h)\n"
    "  --full-every DURATION   how often full runs are due (default 1d)\n"
    "  --read-data-subset S    with full runs, also read this share of the "
    "data\n" PRUNE_OPTIONS_HELP;

static int parse_every(struct cli *g, const char *arg, uint32_t *out)
{
    struct ret_duration d;
    struct err e;
    if (ret_parse_duration(arg, &d, &e) < 0) return cli_usage_error(g, "%s", e.msg);
    uint64_t s = (((uint64_t)d.years * 365 + (uint64_t)d.months * 30 + (uint64_t)d.days) * 24 +
                  (uint64_t)d.hours) *
                 3600;
    if (!s || s > UINT32_MAX) return cli_usage_error(g, "\"%s\" is not a usable interval", arg);
    *out = (uint32_t)s;
    return 0;
}

/* Cluster options of maintain (values apart from the shared ones above). */
/* Cluster options of maintain besides the connection (values apart from the shared ones in
 * maint.h and from K8S_OPT_*). */
enum {
    O_LOCATION = 800,
    O_DEFAULT_LOCATION,
    O_NAMESPACE,
};

static const struct option maintain_longopts[] = {
    {"location", required_argument, NULL, O_LOCATION},
    {"default-location", no_argument, NULL, O_DEFAULT_LOCATION},
    K8S_OPTS_LONGOPTS,
    {"namespace", required_argument, NULL, O_NAMESPACE},
    {"quick", no_argument, NULL, O_QUICK},
    {"full", no_argument, NULL, O_FULL},
    {"force", no_argument, NULL, O_FORCE},
    {"dry-run", no_argument, NULL, O_DRY_RUN},
    {"quick-every", required_argument, NULL, O_QUICK_EVERY},
    {"full-every", required_argument, NULL, O_FULL_EVERY},
    {"read-data-subset", required_argument, NULL, O_READ_SUBSET},
    PRUNE_OPTIONS,
    {NULL, 0, NULL, 0},
};

/* What maintain's options say: for one repository (mo, a) or for a location (mj). */
struct maintain_args {
    struct maint_options mo;
    struct cli_maint_args a;
    struct maintjob_config mj;
    struct maintjob_option fwd[32]; /* mj.maint_args: the options the children get */
    bool cluster, default_location;
};

/* Keeps a maintain option for the `maintain` children of --location; -1 when there are too
 * many. */
static int forward_option(struct maintjob_config *c, struct maintjob_option *fwd, size_t cap,
                          const struct option *longopts, int opt, const char *arg)
{
    for (const struct option *o = longopts; o->name; o++) {
        if (o->val != opt) continue;
        if (c->n_maint_args == cap) return -1;
        fwd[c->n_maint_args++] = (struct maintjob_option){o->name, o->has_arg ? arg : NULL};
        return 0;
    }
    return 0;
}

/* Takes one cluster option (--location, --default-location, --namespace or a connection
 * option); returns whether `opt` was one. */
static bool cluster_option(struct maintain_args *m, int opt, const char *arg)
{
    if (k8s_opts_take(&m->mj.k8s, opt, arg)) return true;
    if (opt == O_NAMESPACE) {
        m->mj.namespace = arg;
        return true;
    }
    if (opt != O_LOCATION && opt != O_DEFAULT_LOCATION) return false;
    if (opt == O_LOCATION) m->mj.location = arg;
    m->default_location |= opt == O_DEFAULT_LOCATION;
    m->cluster = true;
    return true;
}

/* Takes one maintenance option (what is due and how); returns 0, or an exit code after printing
 * a usage error. Options of neither kind go to cli_prune_option. */
static int maint_option(struct cli *g, int opt, const char *arg, struct maintain_args *m)
{
    struct maint_options *mo = &m->mo;
    struct err e;
    int rc;
    switch (opt) {
    case O_QUICK:
    case O_FULL:
        if (mo->want != MAINT_NONE) return cli_usage_error(g, "--quick or --full, not both");
        mo->want = opt == O_QUICK ? MAINT_QUICK : MAINT_FULL;
        return 0;
    case O_FORCE:
        mo->force = true;
        return 0;
    case O_DRY_RUN:
        mo->dry_run = true;
        return 0;
    case O_QUICK_EVERY:
        return (rc = parse_every(g, arg, &mo->quick_every)) ? rc : 0;
    case O_FULL_EVERY:
        return (rc = parse_every(g, arg, &mo->full_every)) ? rc : 0;
    case O_READ_SUBSET:
        if (check_parse_subset(arg, &mo->check, &e) < 0)
            return cli_usage_error(g, "--read-data-subset: %s", e.msg);
        return 0;
    default:
        if (opt < 0) return cli_parse_exit(opt);
        rc = cli_prune_option(g, opt, arg, &m->a);
        if (rc == 1) return cli_parse_exit(CLI_OPT_BAD);
        return rc;
    }
}

/* Parses maintain's command line into *m (initialized here); returns -1 to go on, else the exit
 * code to leave with (0 after --help), having printed any error. */
static int maintain_parse(struct cli *g, int argc, char **argv, struct maintain_args *m)
{
    memset(m, 0, sizeof *m);
    maint_options_default(&m->mo);
    cli_maint_args_init(&m->a);
    m->mj.maint_args = m->fwd;
    struct cli_parser p;
    cli_parser_init(&p, maintain_usage, "", maintain_longopts);
    int opt, rc;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (cluster_option(m, opt, optarg)) continue;
        if (opt >= 0 && forward_option(&m->mj, m->fwd, sizeof m->fwd / sizeof *m->fwd,
                                       maintain_longopts, opt, optarg))
            return cli_usage_error(g, "too many options");
        if ((rc = maint_option(g, opt, optarg, m))) return rc;
    }
    if (optind < argc) return cli_usage_error(g, "maintain takes no arguments");
    if (m->mj.location && m->default_location)
        return cli_usage_error(g, "--location or --default-location, not both");
    m->mj.dry_run = m->mo.dry_run;
    if (!m->cluster && (k8s_opts_any(&m->mj.k8s) || m->mj.namespace || m->mj.k8s.credentials_file))
        return cli_usage_error(g, "cluster options go with --location or --default-location");
    return -1;
}

static int maintain_cluster(struct cli *g, struct maintjob_config *c)
{
    const char *ns = getenv("VELERO_NAMESPACE"), *tmp = getenv("TMPDIR");
    if (!c->namespace) c->namespace = ns && *ns ? ns : "velero";
    if (!c->k8s.credentials_file) c->k8s.credentials_file = getenv("AWS_SHARED_CREDENTIALS_FILE");
    c->cache_dir = g->cache_dir;
    c->no_cache = g->no_cache;
    c->scratch_dir = tmp && *tmp ? tmp : "/tmp";
    c->exe = "/proc/self/exe";
    c->cancel = g->cancel;
    return maintjob_run(c);
}

/* Prints what a maintenance run did (mrc: its result, e: its error): a JSON summary line, or
 * text unless -q. */
static void maintain_report(const struct cli *g, const struct maint_options *mo,
                            const struct maint_result *res, int mrc, const struct err *e)
{
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_SUMMARY));
        fmt_json_set(o, "ran", json_string(maint_kind_name(res->ran)));
        fmt_json_set(o, "dry_run", json_boolean(mo->dry_run));
        fmt_json_set(o, "ok", json_boolean(mrc == 0));
        if (mrc < 0) fmt_json_set(o, "error", fmt_json_str(e->msg));
        if (res->ran != MAINT_NONE)
            fmt_json_set(o, "prune", cli_prune_json(&res->prune, mo->dry_run));
        if (res->checked) fmt_json_set(o, "check", cli_check_json(&res->check));
        if (res->before.last_quick)
            fmt_json_set(o, "last_quick", fmt_json_time(res->before.last_quick, 0));
        if (res->before.last_full)
            fmt_json_set(o, "last_full", fmt_json_time(res->before.last_full, 0));
        fmt_json_set(o, "next_quick", fmt_json_time(res->next_quick, 0));
        fmt_json_set(o, "next_full", fmt_json_time(res->next_full, 0));
        fmt_json_print(o, false);
    } else if (g->verbosity > 0 && (mrc == 0 || res->ran != MAINT_NONE)) {
        char t1[32], t2[32];
        if (res->ran == MAINT_NONE) {
            printf("nothing is due\n");
        } else {
            printf("%s%s maintenance:\n", mo->dry_run ? "dry run of " : "",
                   maint_kind_name(res->ran));
            cli_prune_print(g, &res->prune, mo->dry_run, res->ran == MAINT_QUICK);
            if (res->checked) cli_check_print(g, &res->check);
        }
        printf("next quick run due %s, full run %s\n", fmt_time_local(res->next_quick, t1),
               fmt_time_local(res->next_full, t2));
    }
}

/* Maintains the repository of -r: opens it, takes the prune lock, runs what is due, reports. */
static int maintain_repo(struct cli *g, struct maintain_args *m)
{
    struct maint_options *mo = &m->mo;
    int rc;
    struct err e;
    err_clear(&e);
    struct repo *r;
    struct lock *lk;
    if ((rc = cli_maint_open(g, &m->a, &r, &lk))) return rc;
    mo->prune = m->a.prune;
    mo->prune.progress = cli_note_phase;
    mo->prune.pack = cli_note_pack;
    mo->prune.ctx = g;
    mo->check.threads = m->a.threads;
    mo->check.report = cli_check_problem;
    mo->check.progress = cli_note_phase;
    mo->check.ctx = g;
    struct maint_result res;
    int mrc = maint_run(r, lk, mo, &res, &e);
    struct err lost;
    if (mrc == ERR_CANCELED && lock_lost(lk, &lost)) e = lost;
    cli_lock_release(lk);
    repo_close(r);
    maintain_report(g, mo, &res, mrc, &e);
    if (mrc < 0) return cli_fail(g, &e);
    return PV_EXIT_OK;
}

int cmd_maintain(struct cli *g, int argc, char **argv)
{
    struct maintain_args m;
    int rc = maintain_parse(g, argc, argv, &m);
    if (rc != -1) return rc;
    return m.cluster ? maintain_cluster(g, &m.mj) : maintain_repo(g, &m);
}
