/* test_failpoint.c - the failpoint layer: PV_FAILPOINT's parser (every build), and, in a build
 * with -DPV_FAILPOINTS=ON, the power-loss model (a child process makes files and names, some
 * synced, some not, and is stopped; the parent finds exactly the durable state) and the
 * ENOSPC and EIO modes. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/failpoint.h"

static void parse_ok(const char *s, enum fp_mode mode, uint64_t at)
{
    struct fp_config c;
    struct err e;
    err_clear(&e);
    assert_int_equal(fp_parse(s, &c, &e), 0);
    assert_int_equal(c.mode, mode);
    assert_int_equal(c.at, at);
}

static void parse_bad(const char *s)
{
    struct fp_config c;
    struct err e;
    err_clear(&e);
    assert_int_equal(fp_parse(s, &c, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "PV_FAILPOINT"));
    assert_int_equal(c.mode, FP_OFF);
}

static void test_parse(void **state)
{
    parse_ok(NULL, FP_OFF, 0);
    parse_ok("", FP_OFF, 0);
    parse_ok("count", FP_COUNT, 0);
    parse_ok("crash:1", FP_CRASH, 1);
    parse_ok("powerloss:42", FP_POWERLOSS, 42);
    parse_ok("enospc:7", FP_ENOSPC, 7);
    parse_ok("eio:18446744073709551615", FP_EIO, UINT64_MAX);
    parse_bad("crash:0");
    parse_bad("crash:");
    parse_bad("crash:-1");
    parse_bad("crash:+1");
    parse_bad("crash:1x");
    parse_bad("crash:18446744073709551616");
    parse_bad("crash");
    parse_bad("counts");
    parse_bad("kill:3");
}

#ifdef PV_FAILPOINTS
static char dir[] = "/tmp/pv-test-failpoint.XXXXXX";

static char *at(const char *name)
{
    static char p[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static void put(const char *name, const char *data)
{
    FILE *f = fopen(at(name), "w");
    assert_non_null(f);
    fputs(data, f);
    fclose(f);
}

static void expect(const char *name, const char *data)
{
    char got[64] = "";
    FILE *f = fopen(at(name), "r");
    if (!data) {
        assert_null(f);
        return;
    }
    assert_non_null(f);
    size_t n = fread(got, 1, sizeof got - 1, f);
    got[n] = '\0';
    fclose(f);
    assert_string_equal(got, data);
}

/* In a child: the operations below, then one more, which is operation `crash` (counted). */
static void child_ops(void)
{
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    int fd = fp_open_create(at("a"), O_WRONLY | O_EXCL, 0600); /* 1 */
    fp_pwrite_all(fd, "hello", 5, 0);                          /* 2 */
    fp_fsync(fd);                                              /* 3 */
    fp_fsync(d);                                               /* 4: a is durable */
    fp_pwrite_all(fd, "world", 5, 5);                          /* 5: not synced */
    int fb = fp_open_create(at("b"), O_WRONLY | O_EXCL, 0600); /* 6: name not synced */
    fp_pwrite_all(fb, "bee", 3, 0);                            /* 7 */
    fp_fsync(fb);                                              /* 8 */
    fp_rename(at("old"), at("new"));                           /* 9: reverted */
    fp_rename(at("t"), at("kept"));                            /* 10: replaces kept, reverted */
    fp_unlink(at("gone"));                                     /* 11: reverted */
    fp_mkdir(at("sub"), 0700);                                 /* 12: reverted */
    fp_link(at("src"), at("ln"));                              /* 13: reverted */
    fp_fsync(fd);                                              /* 14: the crash */
    _exit(0);
}

static void test_powerloss(void **state)
{
    assert_non_null(mkdtemp(dir));
    put("old", "o");
    put("t", "tmp");
    put("kept", "k");
    put("gone", "g");
    put("src", "s");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fp_start(&(struct fp_config){.mode = FP_POWERLOSS, .at = 14});
        child_ops();
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), FP_CRASH_EXIT);
    expect("a", "hello");
    expect("b", NULL);
    expect("old", "o");
    expect("new", NULL);
    expect("t", "tmp");
    expect("kept", "k");
    expect("gone", "g");
    expect("ln", NULL);
    struct stat st;
    assert_int_equal(stat(at("sub"), &st), -1);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "ls -A %s | grep -c fpsave", dir);
    FILE *p = popen(cmd, "r");
    char out[16] = "";
    assert_non_null(fgets(out, sizeof out, p));
    pclose(p);
    assert_string_equal(out, "0\n"); /* the hidden copies went back */
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A plain crash undoes nothing; enospc and eio fail with their errno. */
static void test_fail_modes(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fp_start(&(struct fp_config){.mode = FP_ENOSPC, .at = 2});
        int fd = open("/dev/null", O_WRONLY);
        int ok1 = fp_pwrite_all(fd, "x", 1, 0) == 0;
        int fail2 = fp_pwrite_all(fd, "x", 1, 0) < 0 && errno == ENOSPC;
        int fail3 = fp_mkdir("/tmp/pv-test-failpoint-never", 0700) < 0 && errno == ENOSPC;
        int ok4 = fp_fsync(fd) == 0 || errno == EINVAL; /* a full disk still syncs */
        _exit(ok1 && fail2 && fail3 && ok4 && fp_ops() == 4 ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    pid = fork();
    if (pid == 0) {
        fp_start(&(struct fp_config){.mode = FP_EIO, .at = 1});
        int fd = open("/dev/null", O_WRONLY);
        int fail1 = fp_pwrite_all(fd, "x", 1, 0) < 0 && errno == EIO;
        int ok2 = fp_pwrite_all(fd, "x", 1, 0) == 0;
        _exit(fail1 && ok2 ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
#ifdef PV_FAILPOINTS
        cmocka_unit_test(test_powerloss),
        cmocka_unit_test(test_fail_modes),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
