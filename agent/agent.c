/* agent.c - `podvault agent`: options, start-up, signals; see agent.h. */
#include "agent/agent.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "agent/asys.h"
#include "agent/controller.h"
#include "agent/k8s.h"
#include "agent/k8s_opts.h"
#include "agent/datamover.h"
#include "agent/metrics.h"
#include "base/contract.h"

extern char **environ;

#define MAX_UPLOADER_TYPES 8

static const char usage[] =
    "usage: podvault agent [options]\n"
    "Serves Velero's PodVolumeBackups and PodVolumeRestores of one node.\n"
    "  --node NAME                 this node (default $NODE_NAME)\n"
    "  --namespace NS              where PVBs, PVRs, locations and Secrets live\n"
    "                              (default $VELERO_NAMESPACE, else velero)\n"
    "  --host-pods DIR             the kubelet pods directory as mounted (default /host_pods)\n"
    "  --server URL                API server URL without credentials (e.g. kubectl proxy)\n"
    "  --kubeconfig FILE           kubeconfig file (default: in-cluster service account)\n"
    "  --context NAME              kubeconfig context (default: its current-context)\n"
    "  --credentials-file FILE     AWS shared credentials (default $AWS_SHARED_CREDENTIALS_FILE)\n"
    "  --concurrency N             jobs at once (default: from --node-agent-configmap, else 1)\n"
    "  --node-agent-configmap NAME Velero's node-agent ConfigMap (loadConcurrency)\n"
    "  --uploader-types LIST       spec.uploaderType values served, comma-separated; an empty\n"
    "                              item means unset (default \"kopia,\")\n"
    "  --metrics-address ADDR      /metrics and /healthz (default :8085; \"off\" disables)\n"
    "  --cache-dir DIR             cache directory for the podvault jobs\n"
    "  --scratch-dir DIR           temporary files (default $VELERO_SCRATCH_DIR, else /tmp)\n"
    "  --progress-interval SEC     seconds between progress writes (default 3)\n"
    "  --shutdown-grace SEC        seconds running jobs get on SIGTERM (default 30)\n"
    "  --prepare-timeout DURATION  how long a PodVolumeRestore waits for its pod's restore-wait\n"
    "                              init container and volume, e.g. 1800, 90s, 30m, 2h (default\n"
    "                              30m; also --data-mover-prepare-timeout, as Velero names it)\n"
    "  --podvault PATH             program the jobs run (default: this one)\n"
    "  --log-level LEVEL           debug, info, warning or error (default info)\n"
    "  --data-movement MODE        decline (default): fail Velero's DataUploads and\n"
    "                              DataDownloads at once, as podvault does not serve them;\n"
    "                              ignore: leave them to another node-agent\n";

struct opts {
    const char *node, *ns, *host_pods, *configmap;
    struct k8s_opts k8s; /* --server, --kubeconfig, --context, --credentials-file */
    const char *uploaders, *metrics_addr, *cache_dir, *scratch, *exe, *log_level;
    bool decline_data_movement;
    long concurrency, progress, grace, prepare;
};

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* A duration as Velero's flags take it, in whole seconds, minutes or hours ("90s", "30m", "2h")
 * or plain seconds: from 1 second to 30 days. */
static bool parse_duration(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    long unit = !*end               ? 1
                : !strcmp(end, "s") ? 1
                : !strcmp(end, "m") ? 60
                : !strcmp(end, "h") ? 3600
                                    : 0;
    if (errno || end == s || !unit || v < 1 || v > 30L * 86400 / unit) return false;
    *out = v * unit;
    return true;
}

/* A whole number from 0 to max. */
static bool parse_number(const char *s, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > max) return false;
    *out = v;
    return true;
}

enum {
    O_NODE = 256,
    O_NS,
    O_HOSTPODS,
    O_CONC,
    O_CM,
    O_UPLOADERS,
    O_METRICS,
    O_CACHE,
    O_SCRATCH,
    O_PROGRESS,
    O_GRACE,
    O_PREPARE,
    O_EXE,
    O_LOG,
    O_DATAMOVE
};

static const struct option agent_longopts[] = {
    {"node", required_argument, 0, O_NODE},
    {"namespace", required_argument, 0, O_NS},
    {"host-pods", required_argument, 0, O_HOSTPODS},
    K8S_OPTS_LONGOPTS,
    {"concurrency", required_argument, 0, O_CONC},
    {"node-agent-configmap", required_argument, 0, O_CM},
    {"uploader-types", required_argument, 0, O_UPLOADERS},
    {"metrics-address", required_argument, 0, O_METRICS},
    {"cache-dir", required_argument, 0, O_CACHE},
    {"scratch-dir", required_argument, 0, O_SCRATCH},
    {"progress-interval", required_argument, 0, O_PROGRESS},
    {"shutdown-grace", required_argument, 0, O_GRACE},
    {"prepare-timeout", required_argument, 0, O_PREPARE},
    {"data-mover-prepare-timeout", required_argument, 0, O_PREPARE},
    {"podvault", required_argument, 0, O_EXE},
    {"log-level", required_argument, 0, O_LOG},
    {"data-movement", required_argument, 0, O_DATAMOVE},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

/* The defaults, some from the environment the DaemonSet sets. */
static void opts_default(struct opts *o)
{
    *o = (struct opts){
        .node = env_or("NODE_NAME", NULL),
        .ns = env_or("VELERO_NAMESPACE", "velero"),
        .host_pods = "/host_pods",
        .k8s = {.credentials_file = env_or("AWS_SHARED_CREDENTIALS_FILE", NULL)},
        .uploaders = "kopia,",
        .metrics_addr = ":8085",
        .scratch = env_or("VELERO_SCRATCH_DIR", env_or("TMPDIR", "/tmp")),
        .exe = "/proc/self/exe",
        .log_level = "info",
        .decline_data_movement = true,
        .concurrency = 0,
        .progress = 3,
        .grace = 30,
        .prepare = 1800,
    };
}

/* The field of an option that takes a string as it is, or NULL for the others. */
static const char **string_option(struct opts *o, int ch)
{
    switch (ch) {
    case O_NODE:
        return &o->node;
    case O_NS:
        return &o->ns;
    case O_HOSTPODS:
        return &o->host_pods;
    case O_CM:
        return &o->configmap;
    case O_UPLOADERS:
        return &o->uploaders;
    case O_METRICS:
        return &o->metrics_addr;
    case O_CACHE:
        return &o->cache_dir;
    case O_SCRATCH:
        return &o->scratch;
    case O_EXE:
        return &o->exe;
    case O_LOG:
        return &o->log_level;
    default:
        return NULL;
    }
}

/* Takes an option whose value is checked (a mode, a number, a duration); returns 0, or the exit
 * code 2 after printing why the value is wrong. */
static int checked_option(struct opts *o, int ch, const char *arg)
{
    switch (ch) {
    case O_DATAMOVE:
        if (strcmp(arg, "decline") != 0 && strcmp(arg, "ignore") != 0) {
            fprintf(stderr, "podvault agent: --data-movement is decline or ignore\n");
            return PV_EXIT_USAGE;
        }
        o->decline_data_movement = strcmp(arg, "decline") == 0;
        return 0;
    case O_CONC:
        if (!parse_number(arg, 256, &o->concurrency) || o->concurrency < 1) {
            fprintf(stderr, "podvault agent: --concurrency takes a number from 1 to 256\n");
            return PV_EXIT_USAGE;
        }
        return 0;
    case O_PROGRESS:
    case O_GRACE:
        if (!parse_number(arg, 86400, ch == O_PROGRESS ? &o->progress : &o->grace)) {
            fprintf(stderr, "podvault agent: %s takes a number of seconds\n",
                    ch == O_PROGRESS ? "--progress-interval" : "--shutdown-grace");
            return PV_EXIT_USAGE;
        }
        return 0;
    case O_PREPARE:
        if (!parse_duration(arg, &o->prepare)) {
            fprintf(stderr, "podvault agent: --prepare-timeout takes a duration such as "
                            "1800, 90s, 30m or 2h (at most 30 days)\n");
            return PV_EXIT_USAGE;
        }
        return 0;
    default:
        fputs(usage, stderr);
        return PV_EXIT_USAGE;
    }
}

/* What the options say together: a node, one way to the API server, a known log level (which
 * is set here). Returns 0 or the exit code 2, having printed why. */
static int opts_check(const struct opts *o)
{
    if (!o->node || !*o->node) {
        fprintf(stderr, "podvault agent: no node name: give --node or set NODE_NAME (the "
                        "DaemonSet sets it from spec.nodeName)\n");
        return PV_EXIT_USAGE;
    }
    if (o->k8s.server && o->k8s.kubeconfig) {
        fprintf(stderr, "podvault agent: give --server or --kubeconfig, not both\n");
        return PV_EXIT_USAGE;
    }
    static const char *const levels[] = {"debug", "info", "warning", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(o->log_level, levels[i]) == 0) {
            asys_log_level((enum asys_level)i);
            return 0;
        }
    fprintf(stderr, "podvault agent: --log-level takes debug, info, warning or error\n");
    return PV_EXIT_USAGE;
}

/* Fills *o from the defaults and the command line; returns 0, -1 after --help, or the exit code
 * 2 after a usage error. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    opts_default(o);
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", agent_longopts, NULL)) != -1) {
        const char **field = string_option(o, ch);
        if (field) {
            *field = optarg;
            continue;
        }
        if (k8s_opts_take(&o->k8s, ch, optarg)) continue;
        if (ch == 'h') {
            fputs(usage, stdout);
            return -1;
        }
        int rc = checked_option(o, ch, optarg);
        if (rc) return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "podvault agent: unexpected argument %s\n%s", argv[optind], usage);
        return PV_EXIT_USAGE;
    }
    return opts_check(o);
}

/* Splits "kopia,," into {"kopia", ""} in `store` (modified in place). */
static size_t split_types(char *store, const char **out, size_t cap)
{
    size_t n = 0;
    char *p = store;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        bool dup = false;
        for (size_t i = 0; i < n; i++)
            dup |= strcmp(out[i], p) == 0;
        if (!dup && n < cap) out[n++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

/* The concurrency from Velero's node-agent ConfigMap: its first data value is the JSON. */
static unsigned concurrency_from_configmap(const struct k8s_config *kc, const struct opts *o)
{
    struct k8s_client *k;
    struct err e;
    unsigned n = 1;
    if (k8s_client_new(kc, NULL, &k, &e) < 0) goto fail;
    char *p = k8s_path(&K8S_CONFIGMAPS, o->ns, o->configmap, NULL);
    json_t *cm = NULL, *node = NULL;
    int rc = p ? k8s_get(k, p, &cm, &e) : err_set(&e, ERR_FAIL, "out of memory");
    free(p);
    if (rc == 0) {
        p = k8s_path(&K8S_NODES, NULL, o->node, NULL);
        struct err ne;
        if (!p || k8s_get(k, p, &node, &ne) < 0)
            asys_log(ASYS_WARN, "Node", NULL, o->node,
                     "reading the node's labels for perNodeConfig: %s", p ? ne.msg : "no memory");
        free(p);
        const char *key;
        json_t *v;
        /* Velero's ConfigMap has one key; a podvault one may hold other settings too: the
         * first value with a loadConcurrency counts. */
        rc = err_set(&e, ERR_FAIL, "ConfigMap %s/%s has no value with a loadConcurrency", o->ns,
                     o->configmap);
        json_object_foreach(json_object_get(cm, "data"), key, v)
        {
            struct err ve;
            if (!json_is_string(v)) continue;
            int r = ctl_concurrency_from_config(json_string_value(v), node, 1, &n, &ve);
            if (r == 0) {
                rc = 0;
                break;
            }
            if (r != ERR_NOT_FOUND) e = ve; /* a value that is not JSON: say so */
        }
    }
    json_decref(cm);
    json_decref(node);
    k8s_client_free(k);
    if (rc == 0) return n;
fail:
    asys_log(ASYS_WARN, "ConfigMap", o->ns, o->configmap,
             "node-agent configuration unusable, running 1 job at a time: %s", e.msg);
    return 1;
}

struct sigctx {
    sigset_t set;
    volatile int stop;
};

static void *signal_thread(void *arg)
{
    struct sigctx *s = arg;
    int sig;
    while (sigwait(&s->set, &sig) != 0) {
    }
    asys_log(ASYS_INFO, NULL, NULL, NULL, "received %s: stopping",
             sig == SIGTERM  ? "SIGTERM"
             : sig == SIGINT ? "SIGINT"
                             : "a signal");
    s->stop = 1;
    return NULL;
}

/* Blocks SIGTERM and SIGINT here, so in every thread (and, through them, each job) started
 * after, and starts the one thread that waits for them and sets sc->stop. Returns 0, or -1 when
 * the thread could not start. */
static int signals_start(struct sigctx *sc, pthread_t *thread)
{
    sc->stop = 0;
    sigemptyset(&sc->set);
    sigaddset(&sc->set, SIGTERM);
    sigaddset(&sc->set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sc->set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return pthread_create(thread, NULL, signal_thread, sc) != 0 ? -1 : 0;
}

/* Serves until *stop: the metrics endpoint, the controller and the DataUpload/DataDownload
 * decliner, each freed before returning. Returns 0 after a clean stop, else an error in *e. */
static int agent_serve(const struct opts *o, const struct k8s_config *kc, const volatile int *stop,
                       struct err *e)
{
    struct metrics *m = NULL;
    struct ctl *c = NULL;
    struct dm *dm = NULL;
    char types_store[256];
    const char *types[MAX_UPLOADER_TYPES];
    snprintf(types_store, sizeof types_store, "%s", o->uploaders);
    size_t n_types = split_types(types_store, types, MAX_UPLOADER_TYPES);
    unsigned conc = o->concurrency > 0 ? (unsigned)o->concurrency
                    : o->configmap     ? concurrency_from_configmap(kc, o)
                                       : 1;
    int rc = metrics_new(&m, e);
    if (rc < 0) goto out;
    metrics_set_node(m, o->node);
    if (strcmp(o->metrics_addr, "off") != 0 && *o->metrics_addr) {
        int port = 0;
        if ((rc = metrics_serve(m, o->metrics_addr, NULL, &port, e)) < 0) goto out;
        asys_log(ASYS_INFO, NULL, NULL, NULL, "metrics on %s (port %d)", o->metrics_addr, port);
    }
    struct ctl_config cfg = {
        .node = o->node,
        .namespace = o->ns,
        .uploader_types = types,
        .n_uploader_types = n_types,
        .concurrency = conc,
        .progress_interval = (unsigned)o->progress,
        .shutdown_grace = (unsigned)o->grace,
        .prepare_timeout = (unsigned)o->prepare,
        .k8s = kc,
        .metrics = m,
        .runner =
            {
                .exe = o->exe,
                .host_pods = o->host_pods,
                .namespace = o->ns,
                .cache_dir = o->cache_dir,
                .scratch_dir = o->scratch,
                .credentials_file = o->k8s.credentials_file,
                .base_env = (const char *const *)environ,
            },
    };
    if (access(o->host_pods, R_OK | X_OK) != 0)
        asys_log(ASYS_WARN, NULL, NULL, NULL,
                 "the kubelet pods directory %s is not readable: volumes will not be found",
                 o->host_pods);
    if ((rc = ctl_new(&cfg, &c, e)) < 0) goto out;
    asys_log(ASYS_INFO, NULL, o->ns, NULL, "podvault agent %s starting on node %s, API server %s",
             PV_VERSION, o->node, kc->server);
    struct dm_config dmc = {.node = o->node, .namespace = o->ns, .k8s = kc};
    if (o->decline_data_movement && (rc = dm_start(&dmc, &dm, e)) < 0) goto out;
    rc = ctl_run(c, stop, e);
out:
    dm_stop(dm);
    ctl_free(c);
    metrics_free(m);
    return rc;
}

int agent_main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc < 0 ? PV_EXIT_OK : rc;
    if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "podvault agent: cannot initialize libsodium or libcurl\n");
        return PV_EXIT_ERROR;
    }
    struct sigctx sc;
    pthread_t sig_thread;
    if (signals_start(&sc, &sig_thread) < 0) {
        fprintf(stderr, "podvault agent: cannot start the signal thread\n");
        return PV_EXIT_ERROR;
    }
    struct err e;
    err_clear(&e);
    struct k8s_config kc = {0};
    rc = k8s_opts_load(&o.k8s, &kc, &e);
    if (rc == 0) rc = agent_serve(&o, &kc, &sc.stop, &e);
    if (rc < 0) asys_log(ASYS_ERROR, NULL, NULL, NULL, "%s", e.msg);
    k8s_config_free(&kc);
    if (!sc.stop) pthread_kill(sig_thread, SIGTERM);
    pthread_join(sig_thread, NULL);
    curl_global_cleanup();
    asys_log(ASYS_INFO, NULL, NULL, NULL, "stopped");
    return rc < 0 ? PV_EXIT_ERROR : PV_EXIT_OK;
}
