/* k8s_config.c - where the API server is and how to authenticate: in-cluster, kubeconfig, URL. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <yaml.h>

#include "agent/asys.h"
#include "agent/k8s.h"

#define KUBECONFIG_MAX (4u << 20)
#define SA_FILE_MAX (1u << 20)

void k8s_config_free(struct k8s_config *c)
{
    free(c->server);
    free(c->token);
    free(c->token_file);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->namespace);
    buf_free(&c->ca_data);
    buf_free(&c->cert_data);
    buf_free(&c->key_data);
    memset(c, 0, sizeof *c);
}

static int dup_into(char **dst, const char *src, struct err *e)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
    if (src && !*dst) return err_set(e, ERR_FAIL, "out of memory");
    return 0;
}

/* Drops trailing slashes so paths can be appended. */
static int set_server(struct k8s_config *c, const char *url, struct err *e)
{
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return err_set(e, ERR_FAIL, "API server URL %s: must start with http:// or https://", url);
    if (dup_into(&c->server, url, e) < 0) return e->code;
    size_t n = strlen(c->server);
    while (n > 0 && c->server[n - 1] == '/')
        c->server[--n] = '\0';
    return 0;
}

int k8s_config_server(struct k8s_config *c, const char *url, struct err *e)
{
    return set_server(c, url, e);
}

/* Reads a small text file and strips trailing whitespace. */
static int read_text(const char *path, char **out, struct err *e)
{
    struct buf b = BUF_INIT;
    if (asys_read_file(path, SA_FILE_MAX, &b, e) < 0) return e->code;
    while (b.len > 0 &&
           (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r' || b.data[b.len - 1] == ' '))
        b.data[--b.len] = '\0';
    *out = (char *)b.data;
    if (!*out) *out = strdup("");
    return *out ? 0 : err_set(e, ERR_FAIL, "out of memory");
}

int k8s_config_in_cluster(struct k8s_config *c, const char *sa_dir, struct err *e)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port)
        return err_set(e, ERR_FAIL,
                       "not running in a cluster (KUBERNETES_SERVICE_HOST/_PORT are unset): "
                       "give --server URL or --kubeconfig FILE");
    char url[512], path[PATH_MAX];
    /* An IPv6 service address needs brackets in a URL. */
    snprintf(url, sizeof url, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
    if (set_server(c, url, e) < 0) return e->code;
    snprintf(path, sizeof path, "%s/token", sa_dir);
    if (dup_into(&c->token_file, path, e) < 0) return e->code;
    if (read_text(path, &c->token, e) < 0)
        return err_wrap(e, "in-cluster configuration: service-account token");
    snprintf(path, sizeof path, "%s/ca.crt", sa_dir);
    if (dup_into(&c->ca_file, path, e) < 0) return e->code;
    snprintf(path, sizeof path, "%s/namespace", sa_dir);
    struct err ignored;
    if (read_text(path, &c->namespace, &ignored) < 0) c->namespace = NULL;
    return 0;
}

/* --- kubeconfig: YAML turned into JSON, then read with jansson */

static json_t *yaml_node_json(yaml_document_t *doc, yaml_node_t *n, int depth)
{
    if (!n || depth > 64) return NULL;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return json_stringn((const char *)n->data.scalar.value, n->data.scalar.length);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             a && it < n->data.sequence.items.top; it++) {
            json_t *v = yaml_node_json(doc, yaml_document_get_node(doc, *it), depth + 1);
            if (v) json_array_append_new(a, v);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; o && p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE) continue;
            json_t *v = yaml_node_json(doc, yaml_document_get_node(doc, p->value), depth + 1);
            if (v) json_object_set_new(o, (const char *)k->data.scalar.value, v);
        }
        return o;
    }
    default:
        return NULL;
    }
}

static json_t *yaml_parse_json(const char *text, size_t len, struct err *e)
{
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) {
        err_set(e, ERR_FAIL, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &doc)) {
        err_set(e, ERR_FAIL, "YAML error at line %zu: %s", p.problem_mark.line + 1,
                p.problem ? p.problem : "unknown");
        yaml_parser_delete(&p);
        return NULL;
    }
    json_t *j = yaml_node_json(&doc, yaml_document_get_root_node(&doc), 0);
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        err_set(e, ERR_FAIL, "not a kubeconfig: the document is not a mapping");
        return NULL;
    }
    return j;
}

/* The entry of list `key` whose "name" is `name`, and its `inner` member. */
static json_t *named(json_t *root, const char *key, const char *name, const char *inner)
{
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(root, key), i, it)
    {
        const char *n = json_string_value(json_object_get(it, "name"));
        if (n && strcmp(n, name) == 0) return json_object_get(it, inner);
    }
    return NULL;
}

static int set_path(char **dst, const char *dir, const char *file, struct err *e)
{
    if (!file) return 0;
    char p[PATH_MAX];
    if (file[0] == '/' || !dir)
        snprintf(p, sizeof p, "%s", file);
    else
        snprintf(p, sizeof p, "%s/%s", dir, file);
    return dup_into(dst, p, e);
}

static int set_b64(struct buf *dst, const char *b64, const char *what, struct err *e)
{
    if (!b64) return 0;
    size_t n = strlen(b64), got = 0;
    buf_reset(dst);
    if (buf_reserve(dst, n + 1) < 0) return err_set(e, ERR_FAIL, "out of memory");
    if (sodium_base642bin(dst->data, n, b64, n, " \t\r\n", &got, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return err_set(e, ERR_FAIL, "%s is not valid base64", what);
    dst->len = got;
    dst->data[got] = '\0';
    return 0;
}

int k8s_config_kubeconfig_parse(struct k8s_config *c, const char *yaml, size_t len, const char *dir,
                                const char *context, struct err *e)
{
    json_t *root = yaml_parse_json(yaml, len, e);
    if (!root) return e->code;
    int rc = 0;
    const char *ctx_name = context ? context : k8s_str(root, "current-context");
    json_t *ctx = ctx_name ? named(root, "contexts", ctx_name, "context") : NULL;
    if (!ctx_name || !*ctx_name) {
        rc = err_set(e, ERR_FAIL, "no current-context is set: name one with --context");
        goto out;
    }
    if (!ctx) {
        rc = err_set(e, ERR_NOT_FOUND, "context %s is not defined", ctx_name);
        goto out;
    }
    const char *cl_name = k8s_str(ctx, "cluster"), *user_name = k8s_str(ctx, "user");
    json_t *cl = cl_name ? named(root, "clusters", cl_name, "cluster") : NULL;
    if (!cl || !k8s_str(cl, "server")) {
        rc = err_set(e, ERR_NOT_FOUND, "context %s: cluster %s is not defined or has no server",
                     ctx_name, cl_name ? cl_name : "(none)");
        goto out;
    }
    if ((rc = set_server(c, k8s_str(cl, "server"), e)) < 0) goto out;
    const char *insecure = k8s_str(cl, "insecure-skip-tls-verify");
    c->insecure = insecure && strcmp(insecure, "true") == 0;
    if ((rc = set_path(&c->ca_file, dir, k8s_str(cl, "certificate-authority"), e)) < 0 ||
        (rc = set_b64(&c->ca_data, k8s_str(cl, "certificate-authority-data"),
                      "certificate-authority-data", e)) < 0)
        goto out;
    if (k8s_str(ctx, "namespace") &&
        (rc = dup_into(&c->namespace, k8s_str(ctx, "namespace"), e)) < 0)
        goto out;
    json_t *user = user_name ? named(root, "users", user_name, "user") : NULL;
    if (!user) goto out; /* a cluster without credentials, e.g. behind kubectl proxy */
    if (k8s_at(user, "exec") || k8s_at(user, "auth-provider")) {
        rc = err_set(e, ERR_FAIL,
                     "user %s authenticates with an exec or auth-provider plugin, which podvault "
                     "does not run: use a token or client certificate, or the in-cluster account",
                     user_name);
        goto out;
    }
    if ((k8s_str(user, "token") && (rc = dup_into(&c->token, k8s_str(user, "token"), e)) < 0) ||
        (rc = set_path(&c->token_file, dir, k8s_str(user, "tokenFile"), e)) < 0 ||
        (rc = set_path(&c->cert_file, dir, k8s_str(user, "client-certificate"), e)) < 0 ||
        (rc = set_path(&c->key_file, dir, k8s_str(user, "client-key"), e)) < 0 ||
        (rc = set_b64(&c->cert_data, k8s_str(user, "client-certificate-data"),
                      "client-certificate-data", e)) < 0 ||
        (rc = set_b64(&c->key_data, k8s_str(user, "client-key-data"), "client-key-data", e)) < 0)
        goto out;
out:
    json_decref(root);
    return rc;
}

int k8s_config_kubeconfig(struct k8s_config *c, const char *path, const char *context,
                          struct err *e)
{
    struct buf b = BUF_INIT;
    if (asys_read_file(path, KUBECONFIG_MAX, &b, e) < 0) return e->code;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int rc =
        k8s_config_kubeconfig_parse(c, b.data ? (const char *)b.data : "", b.len, dir, context, e);
    buf_free(&b);
    if (rc < 0) return err_wrap(e, "kubeconfig %s", path);
    return 0;
}

int k8s_config_load(struct k8s_config *c, const char *server, const char *kubeconfig,
                    const char *context, struct err *e)
{
    if (server) return k8s_config_server(c, server, e);
    if (kubeconfig) return k8s_config_kubeconfig(c, kubeconfig, context, e);
    return k8s_config_in_cluster(c, K8S_SA_DIR, e);
}
