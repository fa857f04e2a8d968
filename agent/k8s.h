/* k8s.h - a small Kubernetes API client: connection settings, JSON requests and list+watch.
 *
 * Connection settings come from the pod's service account (in-cluster), from a kubeconfig file,
 * or from a plain server URL (e.g. `kubectl proxy`). A client (one libcurl handle) serves one
 * thread at a time; threads make their own clients from the same settings.
 * HTTP status codes map to error codes: 404 is ERR_NOT_FOUND, 409 (a stale resourceVersion or
 * an object that already exists) is ERR_EXISTS, 401 and 403 are ERR_AUTH, the rest ERR_FAIL; the
 * message then carries the server's Status message.
 */
#ifndef PV_AGENT_K8S_H
#define PV_AGENT_K8S_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/err.h"

#define K8S_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct k8s_config {
    char *server;       /* "https://host:port", no trailing slash */
    char *token;        /* bearer token, or NULL */
    char *token_file;   /* re-read before each request when set (service-account tokens rotate) */
    char *ca_file;      /* PEM file, or NULL */
    struct buf ca_data; /* PEM bytes (kubeconfig certificate-authority-data) */
    char *cert_file, *key_file;     /* client certificate and key (PEM files), or NULL */
    struct buf cert_data, key_data; /* the same given inline */
    bool insecure;                  /* insecure-skip-tls-verify */
    char *namespace;                /* the context's or service account's namespace, or NULL */
};

void k8s_config_free(struct k8s_config *c);

/* In-cluster: KUBERNETES_SERVICE_HOST and _PORT, and the token, CA and namespace files of
 * `sa_dir` (normally K8S_SA_DIR). */
int k8s_config_in_cluster(struct k8s_config *c, const char *sa_dir, struct err *e);

/* A kubeconfig file: the named context (NULL: current-context) picks the cluster (server,
 * certificate-authority[-data], insecure-skip-tls-verify) and the user (token, tokenFile,
 * client-certificate[-data], client-key[-data]). Relative file names are relative to the
 * kubeconfig's directory. Exec and auth-provider plugins are refused with a message. */
int k8s_config_kubeconfig(struct k8s_config *c, const char *path, const char *context,
                          struct err *e);
/* The same from YAML text; `dir` resolves relative file names. */
int k8s_config_kubeconfig_parse(struct k8s_config *c, const char *yaml, size_t len, const char *dir,
                                const char *context, struct err *e);

/* A plain server URL, no credentials (kubectl proxy, the test stand-in). */
int k8s_config_server(struct k8s_config *c, const char *url, struct err *e);

/* Picks the source as the agent's options say: `server` if given, else `kubeconfig` if given,
 * else in-cluster. */
int k8s_config_load(struct k8s_config *c, const char *server, const char *kubeconfig,
                    const char *context, struct err *e);

struct k8s_client;

/* The client copies what it needs from `c`; `stop` (may be NULL) is polled during transfers,
 * and a non-zero value ends them with ERR_CANCELED. */
int k8s_client_new(const struct k8s_config *c, const volatile int *stop, struct k8s_client **out,
                   struct err *e);
void k8s_client_free(struct k8s_client *k);

/* A resource collection: group ("" for the core group), version, plural, and whether it is
 * namespaced. */
struct k8s_res {
    const char *group, *version, *plural;
    bool namespaced;
};

extern const struct k8s_res K8S_PODS, K8S_PVCS, K8S_PVS, K8S_SECRETS, K8S_CONFIGMAPS, K8S_NODES,
    K8S_CSIDRIVERS, K8S_BSLS, K8S_PVBS, K8S_PVRS, K8S_BACKUPS, K8S_DAEMONSETS;

/* "/api/v1/namespaces/NS/pods/NAME/SUB" and the like; ns, name, sub may be NULL. The result is
 * allocated (caller frees), or NULL when memory is out. Names are URL-escaped. */
char *k8s_path(const struct k8s_res *r, const char *ns, const char *name, const char *sub);

/* One request. `body` may be NULL; `ctype` is its Content-Type (NULL: application/json). On a
 * 2xx answer *out (if not NULL) receives the decoded body (caller decrefs). */
int k8s_request(struct k8s_client *k, const char *method, const char *path, json_t *body,
                const char *ctype, json_t **out, struct err *e);
int k8s_get(struct k8s_client *k, const char *path, json_t **out, struct err *e);
int k8s_put(struct k8s_client *k, const char *path, json_t *obj, json_t **out, struct err *e);
int k8s_create(struct k8s_client *k, const char *path, json_t *obj, json_t **out, struct err *e);
int k8s_merge_patch(struct k8s_client *k, const char *path, json_t *patch, json_t **out,
                    struct err *e);
/* The HTTP status of the client's last answer (0 when none came), e.g. to tell 422 Invalid
 * from other failures. */
long k8s_last_status(const struct k8s_client *k);

/* Splits a byte stream into lines, handing each complete line (without its '\n', NUL-ended)
 * to `fn`; a line longer than `max` fails. A non-zero return of `fn` stops and is returned. */
struct k8s_lines {
    struct buf pending;
    size_t max;
    int (*fn)(void *ctx, char *line, size_t len);
    void *ctx;
};
int k8s_lines_feed(struct k8s_lines *l, const char *data, size_t len);
void k8s_lines_free(struct k8s_lines *l);

/* List then watch, like client-go's reflector. A list (in pages of 500) calls `fn` with
 * LIST_BEGIN (object NULL), then LIST for each object, then SYNC (object NULL) once the list is
 * complete, so the caller can drop what the list did not contain; each watch event calls it with
 * ADDED, MODIFIED or DELETED. A watch that ends is resumed from the last resourceVersion seen;
 * an expired version (410 Gone) leads to a new list; failures back off (0.2 s doubling to 30 s)
 * and retry. Returns only when the client's stop flag becomes non-zero (0) or `fn` returns
 * non-zero (that value). */
enum k8s_event { K8S_LIST_BEGIN, K8S_LIST, K8S_ADDED, K8S_MODIFIED, K8S_DELETED, K8S_SYNC };

/* Counters kept by k8s_informer_run; other threads read them with __atomic_load_n. */
struct k8s_informer_stats {
    unsigned long lists, watches, resumes, expired, failures;
    unsigned long failure_streak; /* failures since the last list, event or accepted watch */
};

struct k8s_informer {
    const struct k8s_res *res;
    const char *ns;             /* NULL: every namespace */
    const char *label_selector; /* may be NULL */
    const char *field_selector; /* may be NULL */
    unsigned watch_timeout;     /* seconds the server keeps one watch open; 0 = 300 */
    int (*fn)(void *ctx, enum k8s_event type, json_t *obj);
    void *ctx;
    /* Called after each failure with its message (may be NULL). */
    void (*on_error)(void *ctx, const struct err *e);
    struct k8s_informer_stats stats; /* updated by k8s_informer_run */
};
int k8s_informer_run(struct k8s_client *k, struct k8s_informer *inf);

/* Small helpers over JSON objects: the string at a dotted path ("metadata.name"), or NULL. */
const char *k8s_str(const json_t *obj, const char *path);
/* Whether `s` is a valid Kubernetes namespace name (an RFC 1123 label: 1 to 63 of [a-z0-9-],
 * starting and ending with a letter or digit), so it can name a path or a prefix safely. */
bool k8s_namespace_ok(const char *s);
json_t *k8s_at(const json_t *obj, const char *path);

#endif
