/* test_agent_volume.c - unit tests of agent/volume: Velero's rule for a pod volume's directory
 * (PVC -> PV name, /mount for CSI by spec or by a driver-naming annotation, inline CSI, block
 * volumes refused) and the search under a kubelet-like pods directory (exactly one match). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "agent/volume.h"

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) fail_msg("bad JSON in test: %s", je.text);
    return j;
}

static const char pod_json[] =
    "{\"metadata\":{\"uid\":\"u1\"},\"spec\":{\"volumes\":["
    "{\"name\":\"data\",\"persistentVolumeClaim\":{\"claimName\":\"claim-1\"}},"
    "{\"name\":\"cache\",\"emptyDir\":{}},"
    "{\"name\":\"eph\",\"csi\":{\"driver\":\"d\"}}]}}";

static char *dir_for(const json_t *pod, const char *volume, const char *pv_text,
                     const char *drivers_text, int *rc, struct err *e)
{
    json_t *pv = pv_text ? parse(pv_text) : NULL,
           *drivers = drivers_text ? parse(drivers_text) : NULL;
    char *dir = NULL;
    *rc = volume_dir(volume_entry(pod, volume), pv, drivers, &dir, e);
    json_decref(pv);
    json_decref(drivers);
    return dir;
}

static void test_dir_rule(void **state)
{
    json_t *pod = parse(pod_json);
    struct err e;
    int rc;
    assert_string_equal(volume_claim(volume_entry(pod, "data")), "claim-1");
    assert_null(volume_claim(volume_entry(pod, "cache")));
    assert_null(volume_entry(pod, "missing"));

    char *d = dir_for(pod, "cache", NULL, NULL, &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(d, "cache");
    free(d);
    d = dir_for(pod, "eph", NULL, NULL, &rc, &e);
    assert_string_equal(d, "eph/mount"); /* inline CSI volume */
    free(d);

    /* A PVC: the PV's name; /mount when the PV is CSI. */
    d = dir_for(pod, "data", "{\"metadata\":{\"name\":\"pv-9\"},\"spec\":{\"nfs\":{}}}", NULL, &rc,
                &e);
    assert_string_equal(d, "pv-9");
    free(d);
    d = dir_for(pod, "data",
                "{\"metadata\":{\"name\":\"pv-9\"},\"spec\":{\"csi\":{\"driver\":\"x\"}}}", NULL,
                &rc, &e);
    assert_string_equal(d, "pv-9/mount");
    free(d);

    /* CSI migration: the annotation names a driver, which counts only when it exists. */
    const char *annotated =
        "{\"metadata\":{\"name\":\"pv-9\",\"annotations\":{"
        "\"pv.kubernetes.io/provisioned-by\":\"ebs.csi.aws.com\"}},\"spec\":{}}";
    json_t *pv = parse(annotated);
    assert_true(volume_pv_names_driver(pv));
    json_decref(pv);
    d = dir_for(pod, "data", annotated,
                "{\"items\":[{\"metadata\":{\"name\":\"ebs.csi.aws.com\"}}]}", &rc, &e);
    assert_string_equal(d, "pv-9/mount");
    free(d);
    d = dir_for(pod, "data", annotated, "{\"items\":[{\"metadata\":{\"name\":\"other\"}}]}", &rc,
                &e);
    assert_string_equal(d, "pv-9");
    free(d);
    d = dir_for(pod, "data",
                "{\"metadata\":{\"name\":\"pv-9\",\"annotations\":{"
                "\"pv.kubernetes.io/migrated-to\":\"pd.csi.storage.gke.io\"}}}",
                "{\"items\":[{\"metadata\":{\"name\":\"pd.csi.storage.gke.io\"}}]}", &rc, &e);
    assert_string_equal(d, "pv-9/mount");
    free(d);

    /* Block volumes and unbound claims are refused with a message. */
    d = dir_for(pod, "data",
                "{\"metadata\":{\"name\":\"pv-b\"},\"spec\":{\"volumeMode\":\"Block\",\"csi\":{}}}",
                NULL, &rc, &e);
    assert_int_equal(rc, ERR_FAIL);
    assert_null(d);
    assert_non_null(strstr(e.msg, "block volume"));
    d = dir_for(pod, "data", "{\"metadata\":{}}", NULL, &rc, &e);
    assert_int_equal(rc, ERR_FAIL);
    assert_non_null(strstr(e.msg, "claim-1"));
    json_decref(pod);
}

static void mkdirs(const char *root, const char *rel)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/%s'", root, rel);
    assert_int_equal(system(cmd), 0);
}

static void test_find(void **state)
{
    char root[] = "/tmp/pv-volume-test.XXXXXX";
    assert_non_null(mkdtemp(root));
    struct err e;
    char *path = NULL;
    /* No pod directory at all. */
    assert_int_equal(volume_find(root, "u1", "data", &path, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "expected one matching path: "));
    assert_non_null(strstr(e.msg, "/u1/volumes/*/data, got 0"));

    mkdirs(root, "u1/volumes/kubernetes.io~empty-dir/data");
    mkdirs(root, "u1/volumes/kubernetes.io~csi/pv-9/mount");
    mkdirs(root, "u1/volumes/.hidden/pv-9/mount");
    assert_int_equal(volume_find(root, "u1", "data", &path, &e), 0);
    char want[512];
    snprintf(want, sizeof want, "%s/u1/volumes/kubernetes.io~empty-dir/data", root);
    assert_string_equal(path, want);
    free(path);
    assert_int_equal(volume_find(root, "u1", "pv-9/mount", &path, &e), 0);
    snprintf(want, sizeof want, "%s/u1/volumes/kubernetes.io~csi/pv-9/mount", root);
    assert_string_equal(path, want);
    free(path);

    /* The same name under two plugins is ambiguous; a file is not a volume. */
    mkdirs(root, "u1/volumes/kubernetes.io~nfs/data");
    assert_int_equal(volume_find(root, "u1", "data", &path, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "got 2"));
    snprintf(want, sizeof want, "touch '%s/u1/volumes/kubernetes.io~nfs/filevol'", root);
    assert_int_equal(system(want), 0);
    assert_int_equal(volume_find(root, "u1", "filevol", &path, &e), ERR_NOT_FOUND);

    /* Names from the API never lead out of the pods directory. */
    assert_int_equal(volume_find(root, "..", "data", &path, &e), ERR_FAIL);
    assert_int_equal(volume_find(root, "u1/../u1", "data", &path, &e), ERR_FAIL);
    assert_int_equal(volume_find(root, "u1", "../../u1/volumes", &path, &e), ERR_FAIL);
    assert_int_equal(volume_find(root, "u1", "pv-9/../pv-9/mount", &path, &e), ERR_FAIL);
    assert_int_equal(volume_find(root, "u1", "", &path, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "refusing"));

    bool empty = false;
    snprintf(want, sizeof want, "%s/u1/volumes/kubernetes.io~csi/pv-9/mount", root);
    assert_int_equal(volume_is_empty(want, &empty, &e), 0);
    assert_true(empty);
    snprintf(want, sizeof want, "%s/u1/volumes/kubernetes.io~csi/pv-9", root);
    assert_int_equal(volume_is_empty(want, &empty, &e), 0);
    assert_false(empty);
    assert_int_equal(volume_is_empty("/nonexistent/x", &empty, &e), ERR_NOT_FOUND);

    snprintf(want, sizeof want, "rm -rf '%s'", root);
    assert_int_equal(system(want), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dir_rule),
        cmocka_unit_test(test_find),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
