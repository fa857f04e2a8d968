/* test_cli.c - unit tests of the command line's own parts: option values, global options mixed
 * with command options, passwords from files and the environment, and text/JSON formatting. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/format.h"
#include "cli/options.h"
#include "backend/backend_s3.h"
#include "cli/password.h"

static void test_parse_size(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(opt_parse_size("123", &v));
    assert_int_equal(v, 123);
    assert_true(opt_parse_size("4K", &v));
    assert_int_equal(v, 4096);
    assert_true(opt_parse_size("1MiB", &v));
    assert_int_equal(v, 1048576);
    assert_true(opt_parse_size("2g", &v));
    assert_int_equal(v, 2ull << 30);
    assert_true(opt_parse_size("16mb", &v));
    assert_int_equal(v, 16ull << 20);
    assert_false(opt_parse_size("1.5M", &v));
    assert_false(opt_parse_size("", &v));
    assert_false(opt_parse_size("-1", &v));
    assert_false(opt_parse_size("12X", &v));
    assert_false(opt_parse_size("K", &v));
    assert_false(opt_parse_size("99999999999999999G", &v));
    assert_false(opt_parse_size("999999999999999999999", &v));
}

static void test_parse_uint(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(opt_parse_uint("7", 1, 10, &v));
    assert_int_equal(v, 7);
    assert_false(opt_parse_uint("0", 1, 10, &v));
    assert_false(opt_parse_uint("11", 1, 10, &v));
    assert_false(opt_parse_uint("3x", 1, 10, &v));
    assert_false(opt_parse_uint(" 3", 1, 10, &v));
}

static void check_abs(const char *in, const char *want)
{
    char *got = opt_abs_path(in);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_abs_path(void **state)
{
    (void)state;
    check_abs("/a/./b/../c", "/a/c");
    check_abs("/", "/");
    check_abs("//x//y/", "/x/y");
    check_abs("/..", "/");
    check_abs("/a/b/../../..", "/");
    char cwd[4096], want[4200];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "%s/sub", strcmp(cwd, "/") == 0 ? "" : cwd);
    check_abs("sub/.", want);
}

static void test_read_patterns(void **state)
{
    (void)state;
    char path[] = "/tmp/pv-test-cli-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "# a comment\n\n  *.tmp  \n/data/cache\n\t\n#x\nlast";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    struct cli_list l = {.owned = true};
    struct err e;
    err_clear(&e);
    assert_int_equal(opt_read_patterns(path, &l, &e), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.v[0], "*.tmp");
    assert_string_equal(l.v[1], "/data/cache");
    assert_string_equal(l.v[2], "last");
    cli_list_free(&l);
    unlink(path);
    assert_int_equal(opt_read_patterns(path, &l, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, path));
}

static void test_filter(void **state)
{
    (void)state;
    struct cli_filter f;
    memset(&f, 0, sizeof f);
    assert_int_equal(cli_filter_add(&f, CLI_OPT_FILTER_TAG, "a,b,,c"), 0);
    assert_int_equal(cli_filter_add(&f, CLI_OPT_FILTER_TAG, "d"), 0);
    assert_int_equal(cli_filter_add(&f, CLI_OPT_FILTER_PATH, "/x/../data/"), 0);
    assert_int_equal(cli_filter_add(&f, CLI_OPT_FILTER_HOST, "node-1"), 0);
    struct snap_filter sf;
    cli_filter_make(&f, &sf);
    assert_int_equal(sf.n_tags, 4);
    assert_string_equal(sf.tags[0], "a");
    assert_string_equal(sf.tags[2], "c");
    assert_string_equal(sf.tags[3], "d");
    assert_int_equal(sf.n_paths, 1);
    assert_string_equal(sf.paths[0], "/data");
    assert_string_equal(sf.hostname, "node-1");
    cli_filter_free(&f);
    /* An empty filter matches anything: NULL lists. */
    memset(&f, 0, sizeof f);
    cli_filter_make(&f, &sf);
    assert_null(sf.tags);
    assert_null(sf.paths);
    assert_null(sf.hostname);
}

/* Global options are taken wherever they are, the command's are returned, positional arguments
 * end up at argv[optind..]. */
static void test_next_mixed(void **state)
{
    (void)state;
    static const struct option longopts[] = {
        {"tag", required_argument, NULL, 1}, {"force", no_argument, NULL, 2}, {NULL, 0, NULL, 0}};
    char *argv[] = {"backup",
                    "-r",
                    "/repo",
                    "/data",
                    "--json",
                    "--tag",
                    "x",
                    "-q",
                    "--force",
                    "/more",
                    "--password-file=/pw",
                    NULL};
    int argc = 11;
    volatile sig_atomic_t cancel = 0;
    struct cli g = {.verbosity = 1, .cancel = &cancel, .cmd = "backup"};
    struct cli_parser p;
    cli_parser_init(&p, "usage\n", "", longopts);
    optind = 0;
    int seen_tag = 0, seen_force = 0, opt;
    while ((opt = cli_next(&g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt == 1) {
            seen_tag++;
            assert_string_equal(optarg, "x");
        } else if (opt == 2)
            seen_force++;
        else
            fail_msg("unexpected option %d", opt);
    }
    assert_int_equal(seen_tag, 1);
    assert_int_equal(seen_force, 1);
    assert_string_equal(g.repo, "/repo");
    assert_string_equal(g.password_file, "/pw");
    assert_true(g.json);
    assert_int_equal(g.verbosity, 0);
    assert_int_equal(argc - optind, 2);
    assert_string_equal(argv[optind], "/data");
    assert_string_equal(argv[optind + 1], "/more");
}

/* The S3 addressing options set the variable the S3 backend reads, each the way it says. */
static void test_s3_addressing(void **state)
{
    (void)state;
    static const struct option longopts[] = {{NULL, 0, NULL, 0}};
    const char *flags[] = {"--s3-path-style", "--s3-virtual-host"};
    const enum backend_addressing want[] = {BACKEND_ADDR_PATH, BACKEND_ADDR_VIRTUAL};
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"snapshots", (char *)flags[i], NULL};
        volatile sig_atomic_t cancel = 0;
        struct cli g = {.verbosity = 1, .cancel = &cancel, .cmd = "snapshots", .no_cache = true};
        struct cli_parser p;
        cli_parser_init(&p, "usage\n", "", longopts);
        optind = 0;
        /* The option beats the variable, which says the opposite. */
        setenv(BACKEND_S3_ENV_VIRTUAL_HOST, i == 0 ? "1" : "0", 1);
        assert_int_equal(cli_next(&g, &p, 2, argv), CLI_OPT_END);
        assert_int_equal(g.s3_addressing, want[i]);
        struct repo_open_opts o;
        char *cache_dir;
        struct err e;
        assert_int_equal(cli_repo_opts(&g, &o, &cache_dir, &e), 0);
        assert_int_equal(o.backend.addressing, want[i]);
        assert_null(o.cache_dir);
        free(cache_dir);
    }
    unsetenv(BACKEND_S3_ENV_VIRTUAL_HOST);
}

static void test_next_errors(void **state)
{
    (void)state;
    static const struct option longopts[] = {{"tag", required_argument, NULL, 1},
                                             {NULL, 0, NULL, 0}};
    volatile sig_atomic_t cancel = 0;
    struct cli g = {.verbosity = 1, .cancel = &cancel, .cmd = "x"};
    struct cli_parser p;
    cli_parser_init(&p, "usage\n", "", longopts);

    char *unknown[] = {"x", "--nope", NULL};
    optind = 0;
    assert_int_equal(cli_next(&g, &p, 2, unknown), CLI_OPT_BAD);
    char *missing[] = {"x", "--tag", NULL};
    optind = 0;
    assert_int_equal(cli_next(&g, &p, 2, missing), CLI_OPT_BAD);
    char *help[] = {"x", "-v", "--help", NULL};
    optind = 0;
    assert_int_equal(cli_next(&g, &p, 3, help), CLI_OPT_HELP);
    assert_int_equal(g.verbosity, 2);
    assert_int_equal(cli_parse_exit(CLI_OPT_HELP), PV_EXIT_OK);
    assert_int_equal(cli_parse_exit(CLI_OPT_BAD), PV_EXIT_USAGE);
}

static char *write_temp(const char *content)
{
    static char path[64];
    strcpy(path, "/tmp/pv-test-pw-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return path;
}

static void test_password(void **state)
{
    (void)state;
    struct err e;
    char *pw = NULL;
    struct password_source src = {NULL, "PV_TEST_PASSWORD", "prompt: ", false, NULL};

    src.file = write_temp("secret words\n");
    assert_int_equal(password_get(&src, &pw, &e), 0);
    assert_string_equal(pw, "secret words");
    password_free(pw);
    unlink(src.file);

    src.file = write_temp("crlf\r\n");
    assert_int_equal(password_get(&src, &pw, &e), 0);
    assert_string_equal(pw, "crlf");
    password_free(pw);
    unlink(src.file);

    /* An empty password may open (old repositories), but never be set. */
    src.file = write_temp("\n");
    assert_int_equal(password_get(&src, &pw, &e), 0);
    assert_string_equal(pw, "");
    password_free(pw);
    src.confirm = true;
    assert_int_equal(password_get(&src, &pw, &e), ERR_FAIL);
    assert_null(pw);
    assert_non_null(strstr(e.msg, "empty"));
    src.confirm = false;
    unlink(src.file);

    assert_int_equal(password_get(&src, &pw, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, src.file));

    /* The file wins over the environment; without a file the environment is used. */
    setenv("PV_TEST_PASSWORD", "from env", 1);
    src.file = NULL;
    assert_int_equal(password_get(&src, &pw, &e), 0);
    assert_string_equal(pw, "from env");
    password_free(pw);
    unsetenv("PV_TEST_PASSWORD");
}

static void test_fmt_text(void **state)
{
    (void)state;
    char b[48];
    assert_string_equal(fmt_bytes(0, b), "0 B");
    assert_string_equal(fmt_bytes(1023, b), "1023 B");
    assert_string_equal(fmt_bytes(1536, b), "1.50 KiB");
    assert_string_equal(fmt_bytes(10u << 20, b), "10.0 MiB");
    assert_string_equal(fmt_bytes(300ull << 30, b), "300 GiB");
    assert_string_equal(fmt_duration(5, b), "0:05");
    assert_string_equal(fmt_duration(3725, b), "1:02:05");
    assert_string_equal(fmt_duration(-1, b), "0:00");
    assert_string_equal(fmt_time_rfc3339(0, 5, b), "1970-01-01T00:00:00.000000005Z");
    assert_string_equal(fmt_time_rfc3339(1700000000, 123456789, b),
                        "2023-11-14T22:13:20.123456789Z");
    char m[11];
    assert_string_equal(fmt_mode(TREE_FILE, 04755, m), "-rwsr-xr-x");
    assert_string_equal(fmt_mode(TREE_DIR, 01777, m), "drwxrwxrwt");
    assert_string_equal(fmt_mode(TREE_FILE, 02640, m), "-rw-r-S---");
    assert_string_equal(fmt_mode(TREE_SYMLINK, 0777, m), "lrwxrwxrwx");
    assert_string_equal(fmt_mode(99, 0, m), "?---------");
    struct oid id;
    memset(&id, 0xab, sizeof id);
    assert_string_equal(fmt_short_id(&id, m), "abababab");
}

static void test_escape(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    static const char in[] = "a\nb\x01\\c\x1b[31m\xc3\xa9";
    fmt_put_escaped(f, in, sizeof in - 1);
    fclose(f);
    assert_string_equal(text, "a\\nb\\x01\\\\c\\x1b[31m\xc3\xa9");
    free(text);
}

static void check_json_bytes(const char *in, size_t len, const char *want)
{
    json_t *s = fmt_json_bytes(in, len);
    assert_non_null(s);
    assert_string_equal(json_string_value(s), want);
    json_decref(s);
}

static void test_json_bytes(void **state)
{
    (void)state;
#define R "\xef\xbf\xbd"
    check_json_bytes("plain", 5, "plain");
    check_json_bytes("", 0, "");
    check_json_bytes("caf\xc3\xa9", 5, "caf\xc3\xa9");
    check_json_bytes("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80");
    check_json_bytes("\xff", 1, R);
    check_json_bytes("a\xc0\xaf", 3, "a" R R);        /* overlong '/' */
    check_json_bytes("\xed\xa0\x80", 3, R R R);       /* a surrogate */
    check_json_bytes("\xf4\x90\x80\x80", 4, R R R R); /* above U+10FFFF */
    check_json_bytes("x\xe2\x82", 3, "x" R R);        /* cut short */
    check_json_bytes("a\0b", 3, "a" R "b");           /* NUL */
#undef R
    json_t *n = fmt_json_str(NULL);
    assert_true(json_is_null(n));
    json_decref(n);
}

static void test_json_snapshot(void **state)
{
    (void)state;
    char *paths[] = {"/data"}, *tags[] = {"nightly"}, *labels[] = {"pod=web-0", "ns=a=b"};
    struct snapshot s;
    memset(&s, 0, sizeof s);
    memset(&s.id, 0x12, sizeof s.id);
    memset(&s.tree, 0x34, sizeof s.tree);
    s.time_sec = 1700000000;
    s.hostname = "node-1";
    s.username = "root";
    s.paths = paths;
    s.n_paths = 1;
    s.tags = tags;
    s.n_tags = 1;
    s.labels = labels;
    s.n_labels = 2;
    s.summary.files_new = 3;
    json_t *o = fmt_json_snapshot(&s);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "short_id")), "12121212");
    assert_int_equal(strlen(json_string_value(json_object_get(o, "id"))), 64);
    assert_string_equal(json_string_value(json_object_get(o, "time")),
                        "2023-11-14T22:13:20.000000000Z");
    assert_null(json_object_get(o, "parent"));
    json_t *l = json_object_get(o, "labels");
    assert_string_equal(json_string_value(json_object_get(l, "pod")), "web-0");
    assert_string_equal(json_string_value(json_object_get(l, "ns")), "a=b");
    assert_true(json_is_false(json_object_get(o, "incomplete")));
    json_t *sum = json_object_get(o, "summary");
    assert_int_equal(json_integer_value(json_object_get(sum, "files_new")), 3);
    assert_int_equal(json_object_size(sum), 15);
    json_decref(o);

    s.has_parent = true;
    o = fmt_json_snapshot(&s);
    assert_non_null(json_object_get(o, "parent"));
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),    cmocka_unit_test(test_parse_uint),
        cmocka_unit_test(test_abs_path),      cmocka_unit_test(test_read_patterns),
        cmocka_unit_test(test_filter),        cmocka_unit_test(test_next_mixed),
        cmocka_unit_test(test_s3_addressing), cmocka_unit_test(test_next_errors),
        cmocka_unit_test(test_password),      cmocka_unit_test(test_fmt_text),
        cmocka_unit_test(test_escape),        cmocka_unit_test(test_json_bytes),
        cmocka_unit_test(test_json_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
