/* test_agent_excludes.c - unit tests of agent/excludes: the podvault.io/backup-excludes value,
 * the patterns each volume gets (names, paths under the volume's root, escaping), and every
 * malformed item refused with a message that names it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/excludes.h"

/* The arguments for `volume`, joined by '|', or the error message. */
static const char *args_of(const char *value, const char *volume, const char *root)
{
    static char out[1024];
    struct asys_strv a = {0};
    struct err e;
    err_clear(&e);
    if (exc_args(value, volume, root, &a, &e) < 0) {
        snprintf(out, sizeof out, "ERR %s", e.msg);
    } else {
        out[0] = '\0';
        for (size_t i = 0; i < a.n; i++)
            snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", i ? "|" : "", a.v[i]);
    }
    asys_sv_free(&a);
    return out;
}

static void test_patterns_per_volume(void **state)
{
    (void)state;
    const char *v = " data:cache , data:/tmp/*.part,logs:*.gz,data:sub/x ";
    assert_string_equal(args_of(v, "data", "/hp/u/volumes/k~e/data"),
                        "--exclude|cache|--exclude|/hp/u/volumes/k~e/data/tmp/*.part|"
                        "--exclude|/hp/u/volumes/k~e/data/sub/x");
    assert_string_equal(args_of(v, "logs", "/r"), "--exclude|*.gz");
    assert_string_equal(args_of(v, "other", "/r"), "");
    assert_string_equal(args_of(NULL, "data", "/r"), "");
    assert_string_equal(args_of("", "data", "/r"), "");
    /* Glob characters of the root are escaped; the pattern's own are kept. */
    assert_string_equal(args_of("d:a/[ab]*", "d", "/x[1]/y*"), "--exclude|/x\\[1\\]/y\\*/a/[ab]*");
}

static void test_bad_items_are_named(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"data:cache,nocolon", "item 2 \"nocolon\": it is not VOLUME:PATTERN"},
        {"Data:x", "item 1 \"Data:x\": the volume name is not a DNS label"},
        {":x", "the volume name is not a DNS label"},
        {"data:", "item 1 \"data:\": the pattern is empty"},
        {"data:/", "the pattern is empty"},
        {"data:a,,data:b", "item 2 \"\": it is not VOLUME:PATTERN"},
        {"data:../etc", "'..' component"},
        {"data:a/../b", "'..' component"},
        {"data:a//b", "empty component"},
        {"data:./a", "'.' component"},
        {"data:a/", "ends in '/'"},
        {"data:[ab", "'[' without its ']'"},
        {"data:ab\\", "lone '\\'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *got = args_of(bad[i][0], "other", "/r"); /* any volume: all are checked */
        if (!strstr(got, bad[i][1]) ||
            strncmp(got, "ERR annotation podvault.io/backup-excludes", 42) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i][0], got, bad[i][1]);
    }
    /* Escaped characters are fine. */
    assert_string_equal(args_of("data:a\\[b", "data", "/r"), "--exclude|a\\[b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patterns_per_volume),
        cmocka_unit_test(test_bad_items_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
