/* k8s_opts.c - the API server connection options shared by agent, request and maintain; see
 * k8s_opts.h. */
#include "agent/k8s_opts.h"

bool k8s_opts_take(struct k8s_opts *o, int opt, const char *arg)
{
    switch (opt) {
    case K8S_OPT_SERVER:
        o->server = arg;
        return true;
    case K8S_OPT_KUBECONFIG:
        o->kubeconfig = arg;
        return true;
    case K8S_OPT_CONTEXT:
        o->context = arg;
        return true;
    case K8S_OPT_CREDENTIALS_FILE:
        o->credentials_file = arg;
        return true;
    default:
        return false;
    }
}

bool k8s_opts_any(const struct k8s_opts *o)
{
    return o->server || o->kubeconfig || o->context;
}

int k8s_opts_load(const struct k8s_opts *o, struct k8s_config *c, struct err *e)
{
    return k8s_config_load(c, o->server, o->kubeconfig, o->context, e);
}
