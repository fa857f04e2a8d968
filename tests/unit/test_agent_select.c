/* test_agent_select.c - unit tests of agent/select: Velero's volume selection rules on pods shaped
 * like a real cluster's (kube-api-access projected volumes, PVCs, emptyDirs, hostPaths), each
 * rule and each skip reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/select.h"

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) fail_msg("bad JSON in test: %s (line %d)", je.text, je.line);
    return j;
}

/* A StatefulSet-like pod as the API server returns it (trimmed of fields the rules ignore). */
#define POD(NAME, ANNOTATIONS, PHASE, NODE)                                                        \
    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"" NAME "\","                 \
    "\"namespace\":\"shop\",\"uid\":\"uid-" NAME "\",\"labels\":{\"app\":\"db\"},"                 \
    "\"annotations\":{" ANNOTATIONS "}},"                                                          \
    "\"spec\":{\"nodeName\":\"" NODE "\",\"serviceAccountName\":\"default\","                      \
    "\"containers\":[{\"name\":\"db\",\"image\":\"postgres:16\","                                  \
    "\"volumeMounts\":[{\"name\":\"data\",\"mountPath\":\"/var/lib/postgresql/data\"},"            \
    "{\"name\":\"scratch\",\"mountPath\":\"/tmp\"},{\"name\":\"conf\",\"mountPath\":\"/etc/db\"}," \
    "{\"name\":\"creds\",\"mountPath\":\"/etc/creds\",\"readOnly\":true},"                         \
    "{\"name\":\"logs\",\"mountPath\":\"/var/log/host\"},"                                         \
    "{\"name\":\"shared\",\"mountPath\":\"/shared\"},{\"name\":\"local\",\"mountPath\":\"/"        \
    "local\"},"                                                                                    \
    "{\"name\":\"podinfo\",\"mountPath\":\"/etc/podinfo\"},"                                       \
    "{\"name\":\"kube-api-access-x7k2p\",\"mountPath\":"                                           \
    "\"/var/run/secrets/kubernetes.io/serviceaccount\",\"readOnly\":true}],"                       \
    "\"volumeDevices\":[{\"name\":\"raw\",\"devicePath\":\"/dev/xvda\"}]}],"                       \
    "\"initContainers\":[{\"name\":\"init\",\"image\":\"busybox\",\"volumeMounts\":"               \
    "[{\"name\":\"seed\",\"mountPath\":\"/seed\"}]}],"                                             \
    "\"volumes\":[{\"name\":\"data\",\"persistentVolumeClaim\":{\"claimName\":\"data-" NAME        \
    "\"}},"                                                                                        \
    "{\"name\":\"scratch\",\"emptyDir\":{}},"                                                      \
    "{\"name\":\"seed\",\"emptyDir\":{\"medium\":\"Memory\"}},"                                    \
    "{\"name\":\"conf\",\"configMap\":{\"name\":\"db-conf\",\"defaultMode\":420}},"                \
    "{\"name\":\"creds\",\"secret\":{\"secretName\":\"db-creds\",\"defaultMode\":420}},"           \
    "{\"name\":\"logs\",\"hostPath\":{\"path\":\"/var/log\",\"type\":\"\"}},"                      \
    "{\"name\":\"shared\",\"persistentVolumeClaim\":{\"claimName\":\"rwx\"}},"                     \
    "{\"name\":\"local\",\"persistentVolumeClaim\":{\"claimName\":\"on-host\"}},"                  \
    "{\"name\":\"raw\",\"persistentVolumeClaim\":{\"claimName\":\"raw-disk\"}},"                   \
    "{\"name\":\"unused\",\"emptyDir\":{}},"                                                       \
    "{\"name\":\"podinfo\",\"downwardAPI\":{\"items\":[{\"path\":\"labels\",\"fieldRef\":"         \
    "{\"fieldPath\":\"metadata.labels\"}}]}},"                                                     \
    "{\"name\":\"kube-api-access-x7k2p\",\"projected\":{\"defaultMode\":420,\"sources\":"          \
    "[{\"serviceAccountToken\":{\"expirationSeconds\":3607,\"path\":\"token\"}}]}}]},"             \
    "\"status\":{\"phase\":\"" PHASE "\",\"podIP\":\"10.42.0.17\"}}"

/* The PVs of the claims above: "on-host" is bound to a hostPath PV, "gone" to nothing. */
static int claim_pv(void *ctx, const char *ns, const char *claim, json_t **pv, struct err *e)
{
    int *calls = ctx;
    (*calls)++;
    assert_string_equal(ns, "shop");
    if (strcmp(claim, "on-host") == 0)
        *pv = parse("{\"metadata\":{\"name\":\"pv-local\"},\"spec\":{\"hostPath\":"
                    "{\"path\":\"/mnt/disks/1\"},\"volumeMode\":\"Filesystem\"}}");
    else if (strcmp(claim, "raw-disk") == 0)
        *pv = parse("{\"metadata\":{\"name\":\"pv-raw\"},\"spec\":{\"csi\":{\"driver\":"
                    "\"ebs.csi.aws.com\"},\"volumeMode\":\"Block\"}}");
    else if (strcmp(claim, "gone") == 0)
        return err_set(e, ERR_NOT_FOUND, "persistentvolumeclaims \"gone\" not found");
    else if (strcmp(claim, "broken") == 0)
        return err_set(e, ERR_FAIL, "connection refused");
    else
        *pv = parse("{\"metadata\":{\"name\":\"pvc-1f2e\"},\"spec\":{\"csi\":{\"driver\":"
                    "\"ebs.csi.aws.com\"},\"volumeMode\":\"Filesystem\"}}");
    return 0;
}

static bool agent_nodes(void *ctx, const char *node)
{
    (void)ctx;
    return strcmp(node, "worker-1") == 0 || strcmp(node, "worker-2") == 0;
}

static const struct sel_vol *find(const struct sel_vol *v, size_t n, const char *pod,
                                  const char *volume)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].pod, pod) == 0 && strcmp(v[i].volume, volume) == 0) return &v[i];
    return NULL;
}

static const char *reason(const struct sel_result *r, const char *pod, const char *volume)
{
    const struct sel_vol *v = find(r->skipped, r->n_skipped, pod, volume);
    return v ? v->reason : NULL;
}

static void select_pod(struct sel_result *r, const char *text, bool opt_out, int *calls)
{
    json_t *pod = parse(text);
    struct sel_opts o = {.default_volumes = opt_out,
                         .claim_pv = claim_pv,
                         .node_has_agent = agent_nodes,
                         .ctx = calls};
    struct err e;
    assert_int_equal(sel_pod(r, pod, &o, &e), 0);
    json_decref(pod);
}

static void test_opt_in(void **state)
{
    (void)state;
    struct sel_result r = {0};
    int calls = 0;
    select_pod(&r,
               POD("db-0",
                   "\"" SEL_ANN_INCLUDE
                   "\":\" data, scratch,logs,unused,raw,local,seed,typo,creds\"",
                   "Running", "worker-1"),
               false, &calls);
    /* Chosen: the PVC, the emptyDirs (one mounted only by an init container), and a secret
     * the annotation names explicitly. */
    assert_int_equal(r.n_chosen, 4);
    const struct sel_vol *d = find(r.chosen, r.n_chosen, "db-0", "data");
    assert_non_null(d);
    assert_string_equal(d->claim, "data-db-0");
    assert_string_equal(d->ns, "shop");
    assert_string_equal(d->pod_uid, "uid-db-0");
    assert_string_equal(d->node, "worker-1");
    assert_non_null(find(r.chosen, r.n_chosen, "db-0", "scratch"));
    assert_null(find(r.chosen, r.n_chosen, "db-0", "scratch")->claim);
    assert_non_null(find(r.chosen, r.n_chosen, "db-0", "seed"));
    assert_non_null(find(r.chosen, r.n_chosen, "db-0", "creds"));
    /* Volumes not named are neither chosen nor reported. */
    assert_null(find(r.chosen, r.n_chosen, "db-0", "conf"));
    assert_null(reason(&r, "db-0", "conf"));
    assert_string_equal(reason(&r, "db-0", "logs"), "hostPath volume");
    assert_string_equal(reason(&r, "db-0", "unused"), "no container mounts it");
    assert_string_equal(reason(&r, "db-0", "raw"), "block-mode volume (volumeDevices)");
    assert_string_equal(reason(&r, "db-0", "local"),
                        "PVC on-host is bound to hostPath PV pv-local");
    assert_string_equal(reason(&r, "db-0", "typo"), "the pod has no volume of that name");
    assert_int_equal(r.n_skipped, 5);
    sel_result_free(&r);
}

static void test_opt_in_without_annotation(void **state)
{
    (void)state;
    struct sel_result r = {0};
    int calls = 0;
    select_pod(&r, POD("db-0", "", "Running", "worker-1"), false, &calls);
    assert_int_equal(r.n_chosen, 0);
    assert_int_equal(r.n_skipped, 0);
    assert_int_equal(calls, 0);
    sel_result_free(&r);
}

static void test_opt_out(void **state)
{
    (void)state;
    struct sel_result r = {0};
    int calls = 0;
    select_pod(&r, POD("db-0", "\"" SEL_ANN_EXCLUDE "\":\"seed\"", "Running", "worker-1"), true,
               &calls);
    assert_int_equal(r.n_chosen, 3);
    assert_non_null(find(r.chosen, r.n_chosen, "db-0", "data"));
    assert_non_null(find(r.chosen, r.n_chosen, "db-0", "scratch"));
    assert_non_null(find(r.chosen, r.n_chosen, "db-0", "shared"));
    assert_string_equal(reason(&r, "db-0", "seed"), "excluded by annotation " SEL_ANN_EXCLUDE);
    assert_string_equal(reason(&r, "db-0", "conf"), "configMap volume");
    assert_string_equal(reason(&r, "db-0", "creds"), "secret volume");
    assert_string_equal(reason(&r, "db-0", "podinfo"), "downwardAPI volume");
    assert_string_equal(reason(&r, "db-0", "kube-api-access-x7k2p"),
                        "service-account token volume");
    assert_string_equal(reason(&r, "db-0", "logs"), "hostPath volume");
    assert_string_equal(reason(&r, "db-0", "unused"), "no container mounts it");
    assert_string_equal(reason(&r, "db-0", "raw"), "block-mode volume (volumeDevices)");
    assert_string_equal(reason(&r, "db-0", "local"),
                        "PVC on-host is bound to hostPath PV pv-local");
    assert_int_equal(r.n_skipped, 9);
    sel_result_free(&r);
}

static void test_token_and_projected(void **state)
{
    (void)state;
    struct sel_result r = {0};
    int calls = 0;
    /* An older cluster's secret-backed token, and a projected volume that is not a token. */
    select_pod(
        &r,
        "{\"metadata\":{\"name\":\"old\",\"namespace\":\"shop\",\"uid\":\"u\"},"
        "\"spec\":{\"nodeName\":\"worker-2\",\"containers\":[{\"name\":\"c\","
        "\"volumeMounts\":[{\"name\":\"default-token-abcde\",\"mountPath\":\"/t\"},"
        "{\"name\":\"bundle\",\"mountPath\":\"/b\"},{\"name\":\"cache\",\"mountPath\":\"/c\"}]}],"
        "\"volumes\":[{\"name\":\"default-token-abcde\",\"secret\":{\"secretName\":"
        "\"default-token-abcde\"}},{\"name\":\"bundle\",\"projected\":{\"sources\":[]}},"
        "{\"name\":\"cache\",\"emptyDir\":{\"sizeLimit\":\"1Gi\"}}]},"
        "\"status\":{\"phase\":\"Running\"}}",
        true, &calls);
    assert_int_equal(r.n_chosen, 1);
    assert_non_null(find(r.chosen, r.n_chosen, "old", "cache"));
    assert_string_equal(reason(&r, "old", "default-token-abcde"), "service-account token volume");
    assert_string_equal(reason(&r, "old", "bundle"), "projected volume");
    sel_result_free(&r);
}

static void test_pod_not_running_or_no_agent(void **state)
{
    (void)state;
    struct sel_result r = {0};
    int calls = 0;
    select_pod(&r, POD("db-1", "\"" SEL_ANN_INCLUDE "\":\"data,scratch\"", "Pending", "worker-1"),
               false, &calls);
    select_pod(&r, POD("db-2", "\"" SEL_ANN_INCLUDE "\":\"data,scratch\"", "Running", "worker-9"),
               false, &calls);
    assert_int_equal(r.n_chosen, 0);
    assert_int_equal(r.n_skipped, 4);
    assert_string_equal(reason(&r, "db-1", "data"), "pod is not Running (phase Pending)");
    assert_string_equal(reason(&r, "db-1", "scratch"), "pod is not Running (phase Pending)");
    assert_string_equal(reason(&r, "db-2", "data"), "no running agent on node worker-9");
    assert_int_equal(calls, 0); /* no PV lookups for pods that are skipped anyway */
    sel_result_free(&r);
}

static void test_shared_claim_once(void **state)
{
    (void)state;
    struct sel_result r = {0};
    int calls = 0;
    select_pod(&r, POD("web-a", "\"" SEL_ANN_INCLUDE "\":\"shared\"", "Running", "worker-1"), false,
               &calls);
    select_pod(&r, POD("web-b", "\"" SEL_ANN_INCLUDE "\":\"shared\"", "Running", "worker-2"), false,
               &calls);
    assert_int_equal(r.n_chosen, 1);
    assert_string_equal(r.chosen[0].pod, "web-a");
    assert_string_equal(r.chosen[0].claim, "rwx");
    assert_string_equal(reason(&r, "web-b", "shared"),
                        "PVC rwx is shared and already backed up with pod web-a");
    sel_result_free(&r);
}

static void test_claim_lookup(void **state)
{
    (void)state;
    json_t *pod = parse("{\"metadata\":{\"name\":\"p\",\"namespace\":\"shop\",\"uid\":\"u\","
                        "\"annotations\":{\"" SEL_ANN_INCLUDE "\":\"v\"}},\"spec\":{\"nodeName\":"
                        "\"worker-1\",\"containers\":[{\"name\":\"c\",\"volumeMounts\":[{\"name\":"
                        "\"v\",\"mountPath\":\"/v\"}]}],\"volumes\":[{\"name\":\"v\","
                        "\"persistentVolumeClaim\":{\"claimName\":\"gone\"}}]},"
                        "\"status\":{\"phase\":\"Running\"}}");
    int calls = 0;
    struct sel_opts o = {.claim_pv = claim_pv, .ctx = &calls};
    struct sel_result r = {0};
    struct err e;
    assert_int_equal(sel_pod(&r, pod, &o, &e), 0);
    assert_int_equal(r.n_skipped, 1);
    assert_string_equal(r.skipped[0].reason,
                        "PVC gone or its PV not found: persistentvolumeclaims \"gone\" not found");
    sel_result_free(&r);

    /* A PV in Block mode holds a device, not files, even when a container lists it as a mount. */
    json_t *claim =
        json_object_get(json_array_get(json_object_get(json_object_get(pod, "spec"), "volumes"), 0),
                        "persistentVolumeClaim");
    json_object_set_new(claim, "claimName", json_string("raw-disk"));
    assert_int_equal(sel_pod(&r, pod, &o, &e), 0);
    assert_int_equal(r.n_chosen, 0);
    assert_string_equal(r.skipped[0].reason, "PVC raw-disk is bound to block-mode PV pv-raw");
    sel_result_free(&r);

    /* A failing lookup (not "not found") fails the selection with context. */
    json_object_set_new(claim, "claimName", json_string("broken"));
    assert_int_equal(sel_pod(&r, pod, &o, &e), ERR_FAIL);
    assert_string_equal(e.msg, "looking up the PV of PVC shop/broken: connection refused");
    sel_result_free(&r);
    json_decref(pod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_in),
        cmocka_unit_test(test_opt_in_without_annotation),
        cmocka_unit_test(test_opt_out),
        cmocka_unit_test(test_token_and_projected),
        cmocka_unit_test(test_pod_not_running_or_no_agent),
        cmocka_unit_test(test_shared_claim_once),
        cmocka_unit_test(test_claim_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
