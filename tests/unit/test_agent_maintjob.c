/* test_agent_maintjob.c - unit tests of agent/maintjob's decisions: which BackupStorageLocation
 * (by name, or the one marked default as Velero picks it, with the errors when there is none or
 * several) and which repositories a listing of <prefix>/plugins/podvault/ holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/k8s.h"
#include "agent/maintjob.h"

static json_t *items(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

#define BSL(name, def) "{\"metadata\": {\"name\": \"" name "\"}, \"spec\": {\"default\": " def "}}"

static void test_pick_by_name(void **state)
{
    (void)state;
    json_t *l = items("[" BSL("a", "false") ", " BSL("b", "true") ", {\"spec\": {}}]");
    const json_t *got;
    struct err e;
    assert_int_equal(maintjob_pick_location(l, "a", "velero", &got, &e), 0);
    assert_string_equal(k8s_str(got, "metadata.name"), "a");
    /* a name wins over the default mark */
    assert_int_equal(maintjob_pick_location(l, "b", "velero", &got, &e), 0);
    assert_string_equal(k8s_str(got, "metadata.name"), "b");
    assert_int_equal(maintjob_pick_location(l, "c", "velero", &got, &e), ERR_NOT_FOUND);
    assert_null(got);
    assert_non_null(strstr(e.msg, "BackupStorageLocation c does not exist in namespace velero"));
    assert_non_null(strstr(e.msg, "(there: a, b)"));
    json_decref(l);
}

static void test_pick_default(void **state)
{
    (void)state;
    const json_t *got;
    struct err e;
    /* spec.default must be the boolean true, as in Velero's CRD */
    json_t *l = items("[" BSL("a", "false") ", " BSL("s", "\"true\"") ", " BSL("main", "true") "]");
    assert_int_equal(maintjob_pick_location(l, NULL, "velero", &got, &e), 0);
    assert_string_equal(k8s_str(got, "metadata.name"), "main");
    json_decref(l);

    l = items("[" BSL("a", "false") ", {\"metadata\": {\"name\": \"b\"}}]");
    assert_int_equal(maintjob_pick_location(l, NULL, "ns1", &got, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no BackupStorageLocation in namespace ns1 is marked default"));
    assert_non_null(strstr(e.msg, "--location"));
    json_decref(l);

    l = items("[" BSL("x", "true") ", " BSL("y", "false") ", " BSL("z", "true") "]");
    assert_int_equal(maintjob_pick_location(l, NULL, "velero", &got, &e), ERR_FAIL);
    assert_null(got);
    assert_non_null(strstr(e.msg, "are marked default (x, z)"));
    json_decref(l);

    l = items("[]");
    assert_int_equal(maintjob_pick_location(l, NULL, "velero", &got, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "(there: none)"));
    json_decref(l);
    /* not a list at all (an odd answer) is no location */
    assert_int_equal(maintjob_pick_location(NULL, NULL, "velero", &got, &e), ERR_NOT_FOUND);
}

static void test_repos_from_listing(void **state)
{
    (void)state;
    /* what a listing of <prefix>/plugins/podvault/ gives, in no particular order, with a repeat */
    static const char *const names[] = {
        "shop/data/ab/abcdef",
        "shop/config",
        "crm/keys/0123",
        "crm/config",
        "shop/config",
        "config",
        "/config",
        "stray/configs",
        "deep/x/config",
        "crm/snapshots/ff",
        "a-b.c_1/config",
        "notes.txt",
        "only-data/data/00/11",
        "shop/index/config",
    };
    struct maintjob_repos r = {0};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        assert_int_equal(maintjob_repos_add(&r, names[i]), 0);
    maintjob_repos_finish(&r);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.ns[0], "a-b.c_1");
    assert_string_equal(r.ns[1], "crm");
    assert_string_equal(r.ns[2], "shop");
    maintjob_repos_free(&r);
    assert_int_equal(r.n, 0);
    assert_null(r.ns);

    /* an empty location, and many repositories (the array grows) */
    maintjob_repos_finish(&r);
    assert_int_equal(r.n, 0);
    char name[32];
    for (int i = 99; i >= 0; i--) {
        snprintf(name, sizeof name, "ns%02d/config", i);
        assert_int_equal(maintjob_repos_add(&r, name), 0);
    }
    maintjob_repos_finish(&r);
    assert_int_equal(r.n, 100);
    assert_string_equal(r.ns[0], "ns00");
    assert_string_equal(r.ns[99], "ns99");
    maintjob_repos_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_by_name),
        cmocka_unit_test(test_pick_default),
        cmocka_unit_test(test_repos_from_listing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
