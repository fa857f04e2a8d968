/* k8s_opts.h - the connection options of every command that talks to the Kubernetes API server
 * (`podvault agent`, `podvault request`, `podvault maintain --location`), parsed here once:
 *
 *   --server URL              the API server, no credentials (kubectl proxy, the test stand-in)
 *   --kubeconfig FILE         a kubeconfig file
 *   --context NAME            its context (default: its current-context)
 *   --credentials-file FILE   AWS shared credentials for a location that names no Secret
 *
 * With neither --server nor --kubeconfig, the in-cluster service account is used.
 * A command puts K8S_OPTS_LONGOPTS in its getopt_long table and hands each option to
 * k8s_opts_take. Defaults from the environment are the command's business (read at its edge).
 */
#ifndef PV_AGENT_K8S_OPTS_H
#define PV_AGENT_K8S_OPTS_H

#include <getopt.h>
#include <stdbool.h>

#include "agent/k8s.h"
#include "base/err.h"

/* The option values; the strings are borrowed from argv (or the environment). Start from {0}. */
struct k8s_opts {
    const char *server, *kubeconfig, *context, *credentials_file;
};

/* getopt_long values of the options: above 255 (no short option) and apart from the values the
 * commands use for their own options (below 700) and the CLI's global ones. */
enum {
    K8S_OPT_SERVER = 700,
    K8S_OPT_KUBECONFIG,
    K8S_OPT_CONTEXT,
    K8S_OPT_CREDENTIALS_FILE,
};

/* The getopt_long entries, to put in a command's option table. */
#define K8S_OPTS_LONGOPTS                                                                          \
    {"server", required_argument, NULL, K8S_OPT_SERVER},                                           \
        {"kubeconfig", required_argument, NULL, K8S_OPT_KUBECONFIG},                               \
        {"context", required_argument, NULL, K8S_OPT_CONTEXT},                                     \
    {                                                                                              \
        "credentials-file", required_argument, NULL, K8S_OPT_CREDENTIALS_FILE                      \
    }

/* Takes one parsed option: true when `opt` is one of K8S_OPT_* (its argument `arg` is then
 * kept in *o, borrowed), false for any other option (*o unchanged). */
bool k8s_opts_take(struct k8s_opts *o, int opt, const char *arg);

/* Whether the options name a way to the API server (--server, --kubeconfig or --context). */
bool k8s_opts_any(const struct k8s_opts *o);

/* Loads the configuration the options choose (see k8s_config_load: --server if given, else
 * --kubeconfig, else in-cluster) into *c, which the caller frees with k8s_config_free.
 * Errors: as k8s_config_load (unreadable or bad kubeconfig, no service account, bad URL). */
int k8s_opts_load(const struct k8s_opts *o, struct k8s_config *c, struct err *e);

#endif
