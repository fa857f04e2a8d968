/* test_agent_job.c - unit tests of agent/job: --json output lines, a child's status, error and
 * summary lines followed to its end, its exit code and stderr, cancel by SIGTERM, slots; and of
 * agent/runner's snapshot choice and uploaderSettings parallelism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include <cmocka.h>

#include "agent/job.h"
#include "agent/runner.h"

extern char **environ;

static void test_parse_lines(void **state)
{
    struct job_status st = {0};
    json_t *obj;
    const char *status =
        "{\"message_type\":\"status\",\"seconds_elapsed\":1.5,\"percent_done\":0.42,"
        "\"total_files\":10,\"files_done\":4,\"total_bytes\":1000,"
        "\"bytes_done\":420,\"bytes_new\":100,\"errors\":1}";
    assert_int_equal(job_parse_line(status, strlen(status), &st, &obj), JOB_LINE_STATUS);
    assert_null(obj);
    assert_int_equal(st.total_bytes, 1000);
    assert_int_equal(st.bytes_done, 420);
    assert_int_equal(st.files_done, 4);
    assert_int_equal(st.bytes_new, 100);
    assert_true(st.percent_done > 0.41 && st.percent_done < 0.43);
    const char *err = "{\"message_type\":\"error\",\"path\":\"/x\",\"error\":\"EACCES\"}";
    assert_int_equal(job_parse_line(err, strlen(err), &st, &obj), JOB_LINE_ERROR);
    assert_string_equal(json_string_value(json_object_get(obj, "path")), "/x");
    json_decref(obj);
    const char *sum = "{\"message_type\":\"summary\",\"snapshot_id\":\"ab\"}";
    assert_int_equal(job_parse_line(sum, strlen(sum), &st, &obj), JOB_LINE_SUMMARY);
    json_decref(obj);
    assert_int_equal(job_parse_line("[1,2]", 5, &st, &obj), JOB_LINE_OTHER);
    assert_int_equal(job_parse_line("garbage", 7, &st, &obj), JOB_LINE_OTHER);
    assert_null(obj);
}

struct progress {
    int calls;
    uint64_t last_done;
};

static void on_status(void *ctx, const struct job_status *st)
{
    struct progress *p = ctx;
    p->calls++;
    p->last_done = st->bytes_done;
}

static void test_follow_child(void **state)
{
    const char *script =
        "echo '{\"message_type\":\"status\",\"total_bytes\":10,\"bytes_done\":5}';"
        "echo 'not json';"
        "printf '{\"message_type\":\"err'; printf 'or\",\"path\":\"/a\",\"error\":\"gone\"}\\n';"
        "echo '{\"message_type\":\"error\",\"path\":\"/b\",\"error\":\"bad\"}';"
        "echo '{\"message_type\":\"status\",\"total_bytes\":10,\"bytes_done\":10}';"
        "echo \"password=$PODVAULT_PASSWORD\" >&2;"
        "printf '{\"message_type\":\"summary\",\"snapshot_id\":\"ff\"}';"
        "exit 3";
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    const char *envp[] = {"PODVAULT_PASSWORD=pw", NULL};
    struct job *j;
    struct err e;
    assert_int_equal(job_start(argv, envp, &j, &e), 0);
    struct progress p = {0};
    struct job_result r;
    struct buf out = BUF_INIT;
    assert_int_equal(job_wait(j, on_status, &p, &out, &r, &e), 0);
    job_free(j);
    assert_int_equal(r.exit_code, 3);
    assert_false(r.signaled);
    assert_int_equal(p.calls, 2);
    assert_int_equal(p.last_done, 10);
    assert_int_equal(r.error_lines, 2);
    assert_string_equal(r.first_error, "/a: gone");
    assert_string_equal(r.stderr_tail, "password=pw ");
    assert_non_null(r.summary); /* the last line had no newline */
    assert_string_equal(json_string_value(json_object_get(r.summary, "snapshot_id")), "ff");
    assert_non_null(memmem(out.data, out.len, "not json", 8));
    char why[256];
    assert_string_equal(job_result_reason(&r, why, sizeof why), "/a: gone");
    job_result_free(&r);
    buf_free(&out);

    const char *missing[] = {"/nonexistent/podvault", NULL};
    assert_true(job_start(missing, envp, &j, &e) < 0);
    assert_non_null(strstr(e.msg, "/nonexistent/podvault"));
}

struct canceler {
    struct job *j;
};

static void *cancel_soon(void *arg)
{
    usleep(200 * 1000);
    job_cancel(((struct canceler *)arg)->j);
    return NULL;
}

static void test_cancel(void **state)
{
    /* Like podvault: SIGTERM ends it with exit code 130. */
    const char *argv[] = {"/bin/sh", "-c", "trap 'exit 130' TERM; sleep 20 & wait", NULL};
    const char *envp[] = {NULL};
    struct job *j;
    struct err e;
    assert_int_equal(job_start(argv, envp, &j, &e), 0);
    struct canceler c = {j};
    pthread_t t;
    pthread_create(&t, NULL, cancel_soon, &c);
    struct job_result r;
    time_t t0 = time(NULL);
    assert_int_equal(job_wait(j, NULL, NULL, NULL, &r, &e), 0);
    pthread_join(t, NULL);
    assert_true(time(NULL) - t0 < 10);
    assert_int_equal(r.exit_code, 130);
    assert_false(r.signaled);
    job_cancel(j); /* after the end: harmless */
    job_free(j);
    job_result_free(&r);

    /* A child that ignores nothing dies of the signal. */
    const char *argv2[] = {"/bin/sleep", "20", NULL};
    assert_int_equal(job_start(argv2, envp, &j, &e), 0);
    c.j = j;
    pthread_create(&t, NULL, cancel_soon, &c);
    assert_int_equal(job_wait(j, NULL, NULL, NULL, &r, &e), 0);
    pthread_join(t, NULL);
    assert_true(r.signaled);
    assert_int_equal(r.exit_code, 128 + 15);
    char why[64];
    assert_string_equal(job_result_reason(&r, why, sizeof why), "killed by signal 15");
    job_free(j);
    job_result_free(&r);
}

static void test_slots(void **state)
{
    struct job_slots s;
    job_slots_init(&s, 2);
    assert_true(job_slots_take(&s));
    assert_true(job_slots_take(&s));
    assert_false(job_slots_take(&s));
    assert_int_equal(job_slots_used(&s), 2);
    job_slots_give(&s);
    assert_true(job_slots_take(&s));
    job_slots_give(&s);
    job_slots_give(&s);
    job_slots_give(&s); /* never below zero */
    assert_int_equal(job_slots_used(&s), 0);
    pthread_mutex_destroy(&s.mu);
}

static void test_pick_snapshot(void **state)
{
    json_t *list = json_loads(
        "[{\"id\":\"aa11\",\"time\":\"2024-05-01T10:00:00.5Z\"},"
        "{\"id\":\"bb22\",\"time\":\"2024-05-02T09:00:00Z\"},"
        "{\"id\":\"ab33\",\"time\":\"2024-04-30T00:00:00Z\"},{\"time\":\"2030-01-01T00:00:00Z\"}]",
        0, NULL);
    assert_string_equal(json_string_value(json_object_get(runner_pick_snapshot(list, NULL), "id")),
                        "bb22");
    assert_string_equal(
        json_string_value(json_object_get(runner_pick_snapshot(list, "aa11"), "id")), "aa11");
    assert_string_equal(json_string_value(json_object_get(runner_pick_snapshot(list, "bb"), "id")),
                        "bb22");
    assert_null(runner_pick_snapshot(list, "a")); /* ambiguous */
    assert_null(runner_pick_snapshot(list, "cc"));
    json_t *empty = json_array();
    assert_null(runner_pick_snapshot(empty, NULL));
    json_decref(empty);
    json_decref(list);
}

static void expect_parallel(const char *value, unsigned want, const char *note_part)
{
    char note[200] = "";
    unsigned n = 99;
    assert_int_equal(runner_parallel("ParallelFilesUpload", value, &n, note, sizeof note), 0);
    assert_int_equal(n, want);
    if (note_part)
        assert_non_null(strstr(note, note_part));
    else
        assert_string_equal(note, "");
}

static void test_parallel(void **state)
{
    expect_parallel(NULL, 0, NULL);
    expect_parallel("", 0, NULL);
    expect_parallel("8", 8, NULL);
    expect_parallel("256", 256, NULL);
    expect_parallel("257", 256, "more than podvault runs: 256 used");
    expect_parallel("99999999999999999999999", 256, "more than podvault runs: 256 used");
    expect_parallel("0", 0, "is not a positive number: ignored");
    expect_parallel("-4", 0, "is not a positive number: ignored");
    expect_parallel("+4", 0, "is not a positive number: ignored");
    expect_parallel(" 4", 0, "is not a positive number: ignored");
    expect_parallel("4x", 0, "is not a positive number: ignored");
    expect_parallel("many", 0, "uploaderSettings.ParallelFilesUpload \"many\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_lines),   cmocka_unit_test(test_follow_child),
        cmocka_unit_test(test_cancel),        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_pick_snapshot), cmocka_unit_test(test_parallel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
