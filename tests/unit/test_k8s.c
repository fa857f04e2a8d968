/* test_k8s.c - unit tests of agent/k8s: watch line splitting, kubeconfig parsing, paths, and the
 * client and list+watch loop against a scripted HTTP server on 127.0.0.1 (resume after a watch
 * ends, relist after 410 Gone, error codes, bearer tokens read from a file). */
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "agent/asys.h"
#include "agent/k8s.h"
#include "script_server.h"

/* --- line splitting */

struct seen_lines {
    char lines[8][64];
    int n;
    int stop_at; /* return 7 from this line on (0: never) */
};

static int collect(void *ctx, char *line, size_t len)
{
    struct seen_lines *s = ctx;
    assert_int_equal(strlen(line), len); /* NUL-terminated, no '\n' */
    if (s->n < 8) snprintf(s->lines[s->n], sizeof s->lines[0], "%s", line);
    s->n++;
    return s->stop_at && s->n >= s->stop_at ? 7 : 0;
}

static void test_lines_split_across_chunks(void **state)
{
    struct seen_lines s = {0};
    struct k8s_lines l = {.max = 16, .fn = collect, .ctx = &s};
    assert_int_equal(k8s_lines_feed(&l, "ab", 2), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(k8s_lines_feed(&l, "c\nde\n\nf", 7), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.lines[0], "abc");
    assert_string_equal(s.lines[1], "de");
    assert_string_equal(s.lines[2], "");
    assert_int_equal(k8s_lines_feed(&l, "g\n", 2), 0);
    assert_string_equal(s.lines[3], "fg");
    /* A line longer than max fails, even when it arrives in pieces. */
    assert_int_equal(k8s_lines_feed(&l, "0123456789", 10), 0);
    assert_int_equal(k8s_lines_feed(&l, "0123456789", 10), -1);
    k8s_lines_free(&l);
}

static void test_lines_handler_stops(void **state)
{
    struct seen_lines s = {.stop_at = 2};
    struct k8s_lines l = {.max = 100, .fn = collect, .ctx = &s};
    assert_int_equal(k8s_lines_feed(&l, "1\n2\n3\n", 6), 7);
    assert_int_equal(s.n, 2);
    k8s_lines_free(&l);
}

/* --- kubeconfig */

static const char kubeconfig[] =
    "apiVersion: v1\n"
    "kind: Config\n"
    "current-context: prod\n"
    "clusters:\n"
    "- name: c-prod\n"
    "  cluster:\n"
    "    server: https://10.0.0.1:6443/\n"
    "    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"
    "- name: c-dev\n"
    "  cluster:\n"
    "    server: http://127.0.0.1:8001\n"
    "    insecure-skip-tls-verify: true\n"
    "    certificate-authority: certs/ca.pem\n"
    "contexts:\n"
    "- name: prod\n"
    "  context: {cluster: c-prod, user: u-prod, namespace: velero}\n"
    "- name: dev\n"
    "  context: {cluster: c-dev, user: u-dev}\n"
    "- name: plugin\n"
    "  context: {cluster: c-dev, user: u-exec}\n"
    "users:\n"
    "- name: u-prod\n"
    "  user:\n"
    "    token: s3cr3t\n"
    "    client-certificate-data: Y2VydA==\n"
    "    client-key-data: a2V5\n"
    "- name: u-dev\n"
    "  user:\n"
    "    tokenFile: /var/run/tok\n"
    "    client-certificate: dev.crt\n"
    "    client-key: /abs/dev.key\n"
    "- name: u-exec\n"
    "  user:\n"
    "    exec: {command: aws, args: [eks, get-token]}\n";

static void test_kubeconfig_current_context(void **state)
{
    struct k8s_config c = {0};
    struct err e;
    assert_int_equal(
        k8s_config_kubeconfig_parse(&c, kubeconfig, strlen(kubeconfig), "/home/u/.kube", NULL, &e),
        0);
    assert_string_equal(c.server, "https://10.0.0.1:6443");
    assert_string_equal(c.token, "s3cr3t");
    assert_string_equal(c.namespace, "velero");
    assert_int_equal(c.ca_data.len, 28);
    assert_memory_equal(c.ca_data.data, "-----BEGIN CERTIFICATE-----\n", 28);
    assert_int_equal(c.cert_data.len, 4);
    assert_memory_equal(c.cert_data.data, "cert", 4);
    assert_memory_equal(c.key_data.data, "key", 3);
    assert_false(c.insecure);
    assert_null(c.ca_file);
    k8s_config_free(&c);
}

static void test_kubeconfig_named_context_and_files(void **state)
{
    struct k8s_config c = {0};
    struct err e;
    assert_int_equal(
        k8s_config_kubeconfig_parse(&c, kubeconfig, strlen(kubeconfig), "/home/u/.kube", "dev", &e),
        0);
    assert_string_equal(c.server, "http://127.0.0.1:8001");
    assert_true(c.insecure);
    assert_string_equal(c.ca_file, "/home/u/.kube/certs/ca.pem");
    assert_string_equal(c.token_file, "/var/run/tok");
    assert_string_equal(c.cert_file, "/home/u/.kube/dev.crt");
    assert_string_equal(c.key_file, "/abs/dev.key");
    assert_null(c.token);
    assert_null(c.namespace);
    k8s_config_free(&c);
}

static void test_kubeconfig_refusals(void **state)
{
    struct k8s_config c = {0};
    struct err e;
    assert_int_equal(
        k8s_config_kubeconfig_parse(&c, kubeconfig, strlen(kubeconfig), "/", "plugin", &e),
        ERR_FAIL);
    assert_non_null(strstr(e.msg, "exec"));
    k8s_config_free(&c);
    assert_int_equal(
        k8s_config_kubeconfig_parse(&c, kubeconfig, strlen(kubeconfig), "/", "nope", &e),
        ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "context nope"));
    k8s_config_free(&c);
    static const char bad[] = "clusters: [unclosed\n";
    assert_int_equal(k8s_config_kubeconfig_parse(&c, bad, strlen(bad), "/", NULL, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "YAML"));
    k8s_config_free(&c);
    static const char nocur[] = "apiVersion: v1\nclusters: []\n";
    assert_int_equal(k8s_config_kubeconfig_parse(&c, nocur, strlen(nocur), "/", NULL, &e),
                     ERR_FAIL);
    assert_non_null(strstr(e.msg, "current-context"));
    k8s_config_free(&c);
    static const char bad64[] = "current-context: x\ncontexts: [{name: x, context: {cluster: y}}]\n"
                                "clusters: [{name: y, cluster: {server: 'https://h', "
                                "certificate-authority-data: '!!!'}}]\n";
    assert_int_equal(k8s_config_kubeconfig_parse(&c, bad64, strlen(bad64), "/", NULL, &e),
                     ERR_FAIL);
    assert_non_null(strstr(e.msg, "base64"));
    k8s_config_free(&c);
}

static void test_in_cluster(void **state)
{
    char dir[] = "/tmp/pv-k8s-sa.XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/token", dir);
    FILE *f = fopen(path, "w");
    fputs("tok-1\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/namespace", dir);
    f = fopen(path, "w");
    fputs("velero", f);
    fclose(f);
    struct k8s_config c = {0};
    struct err e;
    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_int_equal(k8s_config_in_cluster(&c, dir, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "KUBERNETES_SERVICE_HOST"));
    k8s_config_free(&c);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    assert_int_equal(k8s_config_in_cluster(&c, dir, &e), 0);
    assert_string_equal(c.server, "https://[fd00::1]:443");
    assert_string_equal(c.token, "tok-1");
    assert_string_equal(c.namespace, "velero");
    snprintf(path, sizeof path, "%s/ca.crt", dir);
    assert_string_equal(c.ca_file, path);
    k8s_config_free(&c);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    snprintf(path, sizeof path, "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

static void test_paths_and_lookups(void **state)
{
    char *p = k8s_path(&K8S_PODS, "default", "web", NULL);
    assert_string_equal(p, "/api/v1/namespaces/default/pods/web");
    free(p);
    p = k8s_path(&K8S_PVBS, "velero", "a b/c", "status");
    assert_string_equal(p,
                        "/apis/velero.io/v1/namespaces/velero/podvolumebackups/a%20b%2Fc/status");
    free(p);
    p = k8s_path(&K8S_PVS, "ignored", "pv-1", NULL);
    assert_string_equal(p, "/api/v1/persistentvolumes/pv-1");
    free(p);
    p = k8s_path(&K8S_PVRS, NULL, NULL, NULL);
    assert_string_equal(p, "/apis/velero.io/v1/podvolumerestores");
    free(p);
    json_t *o = json_loads("{\"a\":{\"b\":{\"c\":\"x\",\"n\":1}}}", 0, NULL);
    assert_string_equal(k8s_str(o, "a.b.c"), "x");
    assert_null(k8s_str(o, "a.b.n"));
    assert_null(k8s_str(o, "a.z.c"));
    assert_true(json_is_integer(k8s_at(o, "a.b.n")));
    json_decref(o);
    char ts[21];
    asys_now(ts);
    assert_int_equal(strlen(ts), 20);
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], 'Z');
}

static struct k8s_client *client_for(struct server *s, const char *token, const volatile int *stop)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
    struct k8s_config c = {0};
    struct err e;
    assert_int_equal(k8s_config_server(&c, url, &e), 0);
    if (token) c.token = strdup(token);
    struct k8s_client *k;
    assert_int_equal(k8s_client_new(&c, stop, &k, &e), 0);
    k8s_config_free(&c);
    return k;
}

static void test_requests_and_errors(void **state)
{
    static const struct step script[] = {
        {"GET /api/v1/namespaces/ns/pods/p HTTP", "Authorization: Bearer tok", "200 OK",
         "{\"metadata\":{\"name\":\"p\"}}", NULL},
        {"PUT /apis/velero.io/v1/namespaces/ns/podvolumebackups/b HTTP", NULL, "409 Conflict",
         "{\"kind\":\"Status\",\"message\":\"the object has been modified\",\"code\":409}", NULL},
        {"GET /api/v1/namespaces/ns/pods/gone", NULL, "404 Not Found",
         "{\"kind\":\"Status\",\"message\":\"pods \\\"gone\\\" not found\"}", NULL},
        {"PATCH /api/v1/namespaces/ns/pods/p", "Content-Type: application/merge-patch+json",
         "403 Forbidden", "not json", NULL},
        {"GET /api/v1/namespaces/ns/pods/p", NULL, "200 OK", "{broken", NULL},
    };
    struct server s;
    server_start(&s, script, 5);
    struct k8s_client *k = client_for(&s, "tok", NULL);
    struct err e;
    json_t *out = NULL;
    assert_int_equal(k8s_get(k, "/api/v1/namespaces/ns/pods/p", &out, &e), 0);
    assert_string_equal(k8s_str(out, "metadata.name"), "p");
    assert_int_equal(
        k8s_put(k, "/apis/velero.io/v1/namespaces/ns/podvolumebackups/b", out, NULL, &e),
        ERR_EXISTS);
    assert_non_null(strstr(e.msg, "the object has been modified"));
    assert_int_equal(k8s_get(k, "/api/v1/namespaces/ns/pods/gone", NULL, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "not found"));
    assert_int_equal(k8s_merge_patch(k, "/api/v1/namespaces/ns/pods/p", out, NULL, &e), ERR_AUTH);
    assert_non_null(strstr(e.msg, "HTTP 403: not json"));
    json_decref(out);
    assert_int_equal(k8s_get(k, "/api/v1/namespaces/ns/pods/p", &out, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "not JSON"));
    k8s_client_free(k);
    server_stop(&s);
    assert_string_equal(s.mismatch, "");
}

static void test_token_file_reread(void **state)
{
    static const struct step script[] = {
        {"GET /version", "Authorization: Bearer first", "200 OK", "{}", NULL},
        {"GET /version", "Authorization: Bearer second", "200 OK", "{}", NULL},
    };
    char path[] = "/tmp/pv-k8s-token.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "first\n", 6), 6);
    close(fd);
    struct server s;
    server_start(&s, script, 2);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    struct k8s_config c = {0};
    struct err e;
    assert_int_equal(k8s_config_server(&c, url, &e), 0);
    c.token_file = strdup(path);
    struct k8s_client *k;
    assert_int_equal(k8s_client_new(&c, NULL, &k, &e), 0);
    assert_int_equal(k8s_get(k, "/version", NULL, &e), 0);
    FILE *f = fopen(path, "w");
    fputs("second", f);
    fclose(f);
    assert_int_equal(k8s_get(k, "/version", NULL, &e), 0);
    k8s_client_free(k);
    k8s_config_free(&c);
    server_stop(&s);
    unlink(path);
    assert_string_equal(s.mismatch, "");
}

/* --- list + watch */

struct events {
    char log[32][48];
    int n;
};

static int on_event(void *ctx, enum k8s_event t, json_t *obj)
{
    static const char *const names[] = {"BEGIN", "LIST", "ADDED", "MODIFIED", "DELETED", "SYNC"};
    struct events *ev = ctx;
    const char *name = obj ? k8s_str(obj, "metadata.name") : "-";
    if (ev->n < 32) snprintf(ev->log[ev->n], sizeof ev->log[0], "%s %s", names[t], name);
    ev->n++;
    return t == K8S_DELETED ? 99 : 0; /* the test ends at the first delete */
}

#define OBJ(name, rv) "{\"metadata\":{\"name\":\"" name "\",\"resourceVersion\":\"" rv "\"}}"

static void test_informer_resume_and_relist(void **state)
{
    static const char *const watch1[] = {
        "{\"type\":\"ADDED\",\"object\":" OBJ("c", "11") "}\n{\"type\":\"MODI",
        "FIED\",\"object\":" OBJ("a", "12") "}\n",
        "{\"type\":\"BOOKMARK\",\"object\":" OBJ("", "13") "}\n", NULL};
    static const char *const watch2[] = {"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\","
                                         "\"code\":410,\"message\":\"too old\"}}\n",
                                         NULL};
    static const char *const watch3[] = {"{\"type\":\"DELETED\",\"object\":" OBJ("c", "21") "}\n",
                                         NULL};
    /* A list in two pages (the second asked for with the first's continue token), a watch that
     * ends after two events and a bookmark, one that expires, a new list, a failed watch, and
     * the resumed watch. */
    static const struct step script[] = {
        {"GET /api/v1/namespaces/ns/pods?labelSelector=app%3Dx&limit=500 HTTP", NULL, "200 OK",
         "{\"metadata\":{\"resourceVersion\":\"10\",\"continue\":\"p/2=\"},\"items\":[" OBJ(
             "a", "5") "]}",
         NULL},
        {"GET /api/v1/namespaces/ns/pods?labelSelector=app%3Dx&limit=500&continue=p%2F2%3D HTTP",
         NULL, "200 OK",
         "{\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[" OBJ("b", "6") "]}", NULL},
        {"labelSelector=app%3Dx&watch=1&allowWatchBookmarks=true&timeoutSeconds=30&resourceVersion="
         "10 ",
         NULL, "200 OK", NULL, watch1},
        {"watch=1&allowWatchBookmarks=true&timeoutSeconds=30&resourceVersion=13 ", NULL, "200 OK",
         NULL, watch2},
        {"GET /api/v1/namespaces/ns/pods?labelSelector=app%3Dx&limit=500 HTTP", NULL, "200 OK",
         "{\"metadata\":{\"resourceVersion\":\"20\"},\"items\":[" OBJ("c", "15") "]}", NULL},
        {"GET /api/v1/namespaces/ns/pods?labelSelector=app%3Dx&watch=1", NULL, "500 Internal",
         "{\"message\":\"etcd is sad\"}", NULL},
        {"resourceVersion=20 ", NULL, "200 OK", NULL, watch3},
    };
    struct server s;
    server_start(&s, script, 7);
    struct k8s_client *k = client_for(&s, NULL, NULL);
    struct events ev = {0};
    struct k8s_informer inf = {.res = &K8S_PODS,
                               .ns = "ns",
                               .label_selector = "app=x",
                               .watch_timeout = 30,
                               .fn = on_event,
                               .ctx = &ev};
    assert_int_equal(k8s_informer_run(k, &inf), 99);
    server_stop(&s);
    k8s_client_free(k);
    assert_string_equal(s.mismatch, "");
    static const char *const want[] = {"BEGIN -",    "LIST a",  "LIST b", "SYNC -", "ADDED c",
                                       "MODIFIED a", "BEGIN -", "LIST c", "SYNC -", "DELETED c"};
    assert_int_equal(ev.n, 10);
    for (int i = 0; i < 10; i++)
        assert_string_equal(ev.log[i], want[i]);
    assert_int_equal(inf.stats.lists, 2);
    assert_int_equal(inf.stats.expired, 1);
    assert_int_equal(inf.stats.resumes, 1);
    assert_int_equal(inf.stats.failures, 1);
}

struct run_args {
    struct k8s_client *k;
    struct k8s_informer *inf;
    int rc;
};

static void *run_informer(void *arg)
{
    struct run_args *a = arg;
    a->rc = k8s_informer_run(a->k, a->inf);
    return NULL;
}

static void test_informer_backs_off_until_stopped(void **state)
{
    /* Nobody listens on the port: the informer fails, backs off and retries until told to stop,
     * and then returns promptly. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    struct server s = {.port = ntohs(a.sin_port)};
    volatile int stop = 0;
    struct k8s_client *k = client_for(&s, NULL, &stop);
    struct events ev = {0};
    struct k8s_informer inf = {.res = &K8S_PVBS, .ns = "velero", .fn = on_event, .ctx = &ev};
    struct run_args ra = {k, &inf, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_informer, &ra), 0);
    usleep(700 * 1000);
    stop = 1;
    pthread_join(t, NULL);
    assert_int_equal(ra.rc, 0);
    for (int i = 0; i < ev.n && i < 32; i++) /* lists began, none got anywhere */
        assert_string_equal(ev.log[i], "BEGIN -");
    /* 0.2 + 0.4 s of backoff fit in 0.7 s: three attempts, not a busy loop. */
    assert_in_range(__atomic_load_n(&inf.stats.failures, __ATOMIC_RELAXED), 2, 4);
    assert_true(__atomic_load_n(&inf.stats.failure_streak, __ATOMIC_RELAXED) >= 2);
    k8s_client_free(k);
}

int main(void)
{
    /* As in `podvault agent`: a peer that hangs up is an error on write, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_split_across_chunks),
        cmocka_unit_test(test_lines_handler_stops),
        cmocka_unit_test(test_kubeconfig_current_context),
        cmocka_unit_test(test_kubeconfig_named_context_and_files),
        cmocka_unit_test(test_kubeconfig_refusals),
        cmocka_unit_test(test_in_cluster),
        cmocka_unit_test(test_paths_and_lookups),
        cmocka_unit_test(test_requests_and_errors),
        cmocka_unit_test(test_token_file_reread),
        cmocka_unit_test(test_informer_resume_and_relist),
        cmocka_unit_test(test_informer_backs_off_until_stopped),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
