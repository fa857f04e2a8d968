/* test_agent_controller.c - unit tests of agent/controller's decisions: every phase with and
 * without cancel, deletion, a running job, a free slot, another node's object; and the
 * concurrency read from Velero's node-agent ConfigMap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/controller.h"
#include "agent/rwait.h"

static enum ctl_action decide(const char *phase, bool cancel, bool job, bool slot)
{
    struct ctl_view v = {
        .phase = phase, .cancel = cancel, .ours = true, .job_running = job, .slot_free = slot};
    return ctl_decide(&v);
}

static void test_new_objects(void **state)
{
    assert_int_equal(decide(NULL, false, false, true), CTL_ACCEPT);
    assert_int_equal(decide("", false, false, false), CTL_ACCEPT); /* accepting needs no slot */
    assert_int_equal(decide("New", false, false, true), CTL_ACCEPT);
    assert_int_equal(decide("New", true, false, true), CTL_CANCEL_NEW);
    /* Another node's object, or an uploader type not served. */
    struct ctl_view v = {.phase = "", .ours = false, .slot_free = true};
    assert_int_equal(ctl_decide(&v), CTL_IGNORE);
    v.phase = "InProgress";
    assert_int_equal(ctl_decide(&v), CTL_IGNORE); /* never fail another node's work */
}

static void test_accepted_waits_for_a_slot(void **state)
{
    assert_int_equal(decide("Accepted", false, false, true), CTL_START);
    assert_int_equal(decide("Accepted", false, false, false), CTL_WAIT);
    assert_int_equal(decide("Prepared", false, false, true), CTL_START);
    assert_int_equal(decide("Accepted", true, false, true), CTL_CANCEL_NEW);
    /* Our own start raced ahead of the event that reports it. */
    assert_int_equal(decide("Accepted", false, true, true), CTL_IGNORE);
}

static void test_running_and_restarts(void **state)
{
    assert_int_equal(decide("InProgress", false, true, false), CTL_IGNORE);
    assert_int_equal(decide("InProgress", true, true, false), CTL_CANCEL_JOB);
    assert_int_equal(decide("Canceling", true, true, false), CTL_IGNORE); /* already signalled */
    /* Found at start-up with no job of this process: the agent restarted. */
    assert_int_equal(decide("InProgress", false, false, true), CTL_FAIL_ORPHAN);
    assert_int_equal(decide("InProgress", true, false, true), CTL_FAIL_ORPHAN);
    assert_int_equal(decide("Canceling", true, false, true), CTL_FINISH_CANCEL);
}

static void test_final_and_unknown(void **state)
{
    const char *finals[] = {"Completed", "Failed", "Canceled"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(decide(finals[i], false, false, true), CTL_IGNORE);
        assert_int_equal(decide(finals[i], true, true, true), CTL_IGNORE);
    }
    assert_int_equal(decide("Exploded", false, false, true), CTL_IGNORE);
    assert_string_equal(ctl_action_name(CTL_FAIL_ORPHAN), "fail-orphan");
}

static void test_deletion(void **state)
{
    struct ctl_view v = {
        .phase = "InProgress", .deleting = true, .ours = true, .job_running = true};
    assert_int_equal(ctl_decide(&v), CTL_CANCEL_JOB);
    v.phase = "";
    v.job_running = false;
    assert_int_equal(ctl_decide(&v), CTL_IGNORE); /* being deleted: do not start it */
    v.phase = "Accepted";
    v.slot_free = true;
    assert_int_equal(ctl_decide(&v), CTL_IGNORE);
}

static void test_legacy_phases(void **state)
{
    /* Velero 1.16's CRDs: no Accepted step, a new object starts at once when a slot is free. */
    struct ctl_view v = {.phase = "", .ours = true, .slot_free = true, .legacy = true};
    assert_int_equal(ctl_decide(&v), CTL_START);
    v.phase = "New";
    v.slot_free = false;
    assert_int_equal(ctl_decide(&v), CTL_WAIT);
    v.cancel = true;
    assert_int_equal(ctl_decide(&v), CTL_CANCEL_NEW);
    v.phase = "InProgress";
    v.job_running = true;
    assert_int_equal(ctl_decide(&v), CTL_CANCEL_JOB);
    v.job_running = false;
    assert_int_equal(ctl_decide(&v), CTL_FAIL_ORPHAN);
}

static void test_restore_gate(void **state)
{
    /* A PVR's pod not held in restore-wait: neither accepted nor started, until it expires. */
    struct ctl_view v = {.phase = "", .ours = true, .slot_free = true, .gate_closed = true};
    assert_int_equal(ctl_decide(&v), CTL_WAIT);
    v.phase = "Accepted"; /* accepted by an earlier agent, then the pod moved on */
    assert_int_equal(ctl_decide(&v), CTL_WAIT);
    v.expired = true;
    assert_int_equal(ctl_decide(&v), CTL_FAIL_PREPARE);
    v.phase = "New";
    assert_int_equal(ctl_decide(&v), CTL_FAIL_PREPARE);
    v.legacy = true;
    assert_int_equal(ctl_decide(&v), CTL_FAIL_PREPARE);
    /* A pod without the init container is never restored into: failed at once. */
    v = (struct ctl_view){.phase = "", .ours = true, .gate_closed = true, .gate_never = true};
    assert_int_equal(ctl_decide(&v), CTL_FAIL_PREPARE);
    v.cancel = true; /* a cancel still ends it as Canceled */
    assert_int_equal(ctl_decide(&v), CTL_CANCEL_NEW);
    /* Open gate: as before. Expiry alone changes nothing once the gate is open. */
    v = (struct ctl_view){.phase = "", .ours = true, .slot_free = true, .expired = true};
    assert_int_equal(ctl_decide(&v), CTL_ACCEPT);
    v.phase = "Accepted";
    assert_int_equal(ctl_decide(&v), CTL_START);
    /* Nothing of the gate touches running or final work, nor another node's. */
    v = (struct ctl_view){.phase = "InProgress",
                          .ours = true,
                          .job_running = true,
                          .gate_closed = true,
                          .expired = true};
    assert_int_equal(ctl_decide(&v), CTL_IGNORE);
    v.phase = "Completed";
    assert_int_equal(ctl_decide(&v), CTL_IGNORE);
    v = (struct ctl_view){.phase = "", .gate_never = true, .gate_closed = true};
    assert_int_equal(ctl_decide(&v), CTL_IGNORE);
    assert_string_equal(ctl_action_name(CTL_FAIL_PREPARE), "fail-prepare");
}

static enum rwait_state pod_state(const char *json)
{
    json_t *pod = json_loads(json, 0, NULL);
    assert_non_null(pod);
    enum rwait_state s = rwait_pod_state(pod);
    json_decref(pod);
    return s;
}

#define SPEC_RW "\"spec\":{\"initContainers\":[{\"name\":\"x\"},{\"name\":\"restore-wait\"}]}"

static void test_rwait_states(void **state)
{
    assert_int_equal(rwait_pod_state(NULL), RWAIT_NO_POD);
    assert_int_equal(pod_state("{\"spec\":{\"containers\":[{\"name\":\"app\"}]}}"), RWAIT_NONE);
    assert_int_equal(pod_state("{\"spec\":{\"initContainers\":[{\"name\":\"restore-waitx\"}]}}"),
                     RWAIT_NONE);
    assert_int_equal(pod_state("{" SPEC_RW "}"), RWAIT_PENDING);
    assert_int_equal(pod_state("{" SPEC_RW ",\"status\":{\"initContainerStatuses\":[{\"name\":"
                               "\"restore-wait\",\"state\":{\"waiting\":{\"reason\":"
                               "\"PodInitializing\"}}}]}}"),
                     RWAIT_PENDING);
    /* Another init container running is not the gate. */
    assert_int_equal(pod_state("{" SPEC_RW ",\"status\":{\"initContainerStatuses\":[{\"name\":"
                               "\"x\",\"state\":{\"running\":{}}}]}}"),
                     RWAIT_PENDING);
    assert_int_equal(
        pod_state("{" SPEC_RW ",\"status\":{\"initContainerStatuses\":[{\"name\":"
                  "\"x\",\"state\":{\"terminated\":{}}},{\"name\":\"restore-wait\","
                  "\"state\":{\"running\":{\"startedAt\":\"2026-12-07T00:00:00Z\"}}}]}}"),
        RWAIT_RUNNING);
    assert_int_equal(pod_state("{" SPEC_RW ",\"status\":{\"initContainerStatuses\":[{\"name\":"
                               "\"restore-wait\",\"state\":{\"terminated\":{\"exitCode\":0}}}]}}"),
                     RWAIT_PASSED);
    /* A pod being deleted is past it, whatever its last status said. */
    assert_int_equal(
        pod_state("{\"metadata\":{\"deletionTimestamp\":\"2026-12-07T00:00:00Z\"}," SPEC_RW
                  ",\"status\":{\"initContainerStatuses\":[{\"name\":"
                  "\"restore-wait\",\"state\":{\"running\":{}}}]}}"),
        RWAIT_PASSED);
    assert_non_null(strstr(rwait_state_text(RWAIT_PASSED), "has ended"));
}

static void test_concurrency_config(void **state)
{
    json_t *node = json_loads("{\"metadata\":{\"name\":\"n1\",\"labels\":{\"zone\":\"a\","
                              "\"size\":\"big\"}}}",
                              0, NULL);
    struct err e;
    unsigned n = 0;
    const char *cfg = "{\"loadConcurrency\":{\"globalConfig\":2,\"perNodeConfig\":["
                      "{\"nodeSelector\":{\"matchLabels\":{\"zone\":\"a\"}},\"number\":5},"
                      "{\"nodeSelector\":{\"matchExpressions\":[{\"key\":\"size\",\"operator\":"
                      "\"In\",\"values\":[\"big\",\"huge\"]}]},\"number\":3},"
                      "{\"nodeSelector\":{\"matchLabels\":{\"zone\":\"b\"}},\"number\":1}]}}";
    assert_int_equal(ctl_concurrency_from_config(cfg, node, 9, &n, &e), 0);
    assert_int_equal(n, 3); /* the smallest matching number */
    assert_int_equal(ctl_concurrency_from_config(cfg, NULL, 9, &n, &e), 0);
    assert_int_equal(n, 2); /* no labels: the global number */
    const char *expr = "{\"loadConcurrency\":{\"perNodeConfig\":["
                       "{\"nodeSelector\":{\"matchExpressions\":[{\"key\":\"zone\",\"operator\":"
                       "\"NotIn\",\"values\":[\"a\"]}]},\"number\":1},"
                       "{\"nodeSelector\":{\"matchExpressions\":[{\"key\":\"gpu\",\"operator\":"
                       "\"DoesNotExist\"}]},\"number\":4}]}}";
    assert_int_equal(ctl_concurrency_from_config(expr, node, 9, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ctl_concurrency_from_config("{\"loadConcurrency\":{}}", node, 7, &n, &e), 0);
    assert_int_equal(n, 7);
    assert_int_equal(ctl_concurrency_from_config("{\"other\":1}", node, 7, &n, &e), ERR_NOT_FOUND);
    assert_int_equal(ctl_concurrency_from_config("not json", node, 7, &n, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "not JSON"));
    json_decref(node);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_objects),
        cmocka_unit_test(test_accepted_waits_for_a_slot),
        cmocka_unit_test(test_running_and_restarts),
        cmocka_unit_test(test_final_and_unknown),
        cmocka_unit_test(test_deletion),
        cmocka_unit_test(test_legacy_phases),
        cmocka_unit_test(test_restore_gate),
        cmocka_unit_test(test_rwait_states),
        cmocka_unit_test(test_concurrency_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
