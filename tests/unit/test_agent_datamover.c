/* test_agent_datamover.c - unit tests of agent/datamover's decision (every phase, cancel, another
 * data mover, objects another node's node-agent has) and of the status it writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/datamover.h"

static enum dm_action decide(const char *phase, bool cancel, const char *taken_by)
{
    struct dm_view v = {.phase = phase, .cancel = cancel, .taken_by = taken_by, .node = "n1"};
    return dm_decide(&v);
}

static void test_new_objects_are_declined(void **state)
{
    (void)state;
    assert_int_equal(decide(NULL, false, NULL), DM_DECLINE);
    assert_int_equal(decide("", false, NULL), DM_DECLINE);
    assert_int_equal(decide("New", false, NULL), DM_DECLINE);
    assert_int_equal(decide("New", true, NULL), DM_CANCEL);
}

static void test_final_and_others_are_left_alone(void **state)
{
    (void)state;
    const char *final[] = {"Completed", "Failed", "Canceled"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(decide(final[i], false, "n1"), DM_IGNORE);
        assert_int_equal(decide(final[i], true, NULL), DM_IGNORE);
    }
    /* Another node's node-agent works on it (e.g. Velero's, during a switch). */
    const char *busy[] = {"Accepted", "Prepared", "InProgress", "Canceling"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(decide(busy[i], false, "n2"), DM_IGNORE);
        assert_int_equal(decide(busy[i], false, NULL), DM_IGNORE);
    }
    /* Another data mover's objects, whatever their phase. */
    struct dm_view v = {.phase = "", .datamover = "acme", .node = "n1"};
    assert_int_equal(dm_decide(&v), DM_IGNORE);
    v.datamover = "velero";
    assert_int_equal(dm_decide(&v), DM_DECLINE);
}

static void test_this_nodes_orphans_end(void **state)
{
    (void)state;
    assert_int_equal(decide("Accepted", false, "n1"), DM_ORPHAN);
    assert_int_equal(decide("InProgress", false, "n1"), DM_ORPHAN);
    assert_int_equal(decide("InProgress", true, "n1"), DM_CANCEL);
    assert_int_equal(decide("Canceling", false, "n1"), DM_CANCEL);
}

static void test_view_and_apply(void **state)
{
    (void)state;
    json_error_t je;
    json_t *o = json_loads("{\"metadata\":{\"name\":\"du\",\"resourceVersion\":\"7\"},"
                           "\"spec\":{\"cancel\":false,\"sourcePVC\":\"data\"},"
                           "\"status\":{\"phase\":\"InProgress\",\"node\":\"n1\","
                           "\"startTimestamp\":\"2024-01-01T00:00:00Z\"}}",
                           0, &je);
    assert_non_null(o);
    struct dm_view v = dm_view_of(o, "n1");
    assert_string_equal(v.phase, "InProgress");
    assert_string_equal(v.taken_by, "n1");
    assert_false(v.cancel);
    assert_int_equal(dm_decide(&v), DM_ORPHAN);
    assert_int_equal(dm_apply(o, DM_ORPHAN, "DataUpload", "n1", "2024-05-01T10:00:00Z"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "status"), "phase")),
                        "Failed");
    const char *msg = json_string_value(json_object_get(json_object_get(o, "status"), "message"));
    assert_non_null(strstr(msg, "podvault"));
    assert_non_null(strstr(msg, "DataUpload"));
    /* A start time already there is kept; the spec and resourceVersion are not touched. */
    json_t *st = json_object_get(o, "status");
    assert_string_equal(json_string_value(json_object_get(st, "startTimestamp")),
                        "2024-01-01T00:00:00Z");
    assert_string_equal(json_string_value(json_object_get(st, "completionTimestamp")),
                        "2024-05-01T10:00:00Z");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "metadata"), "resourceVersion")), "7");
    json_decref(o);

    /* A new object without status: Failed with the "does not serve" message; canceled ones
     * end Canceled. */
    o = json_loads("{\"metadata\":{\"name\":\"dd\"},\"spec\":{\"cancel\":true}}", 0, &je);
    v = dm_view_of(o, "n1");
    assert_true(v.cancel);
    assert_int_equal(dm_decide(&v), DM_CANCEL);
    assert_int_equal(dm_apply(o, DM_CANCEL, "DataDownload", "n1", "2024-05-01T10:00:00Z"), 0);
    st = json_object_get(o, "status");
    assert_string_equal(json_string_value(json_object_get(st, "phase")), "Canceled");
    assert_string_equal(json_string_value(json_object_get(st, "startTimestamp")),
                        "2024-05-01T10:00:00Z");
    assert_int_equal(dm_apply(o, DM_DECLINE, "DataDownload", "n1", "2024-05-01T10:00:00Z"), 0);
    msg = json_string_value(json_object_get(st, "message"));
    assert_non_null(strstr(msg, "does not serve CSI snapshot data movement (DataDownload)"));
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_objects_are_declined),
        cmocka_unit_test(test_final_and_others_are_left_alone),
        cmocka_unit_test(test_this_nodes_orphans_end),
        cmocka_unit_test(test_view_and_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
