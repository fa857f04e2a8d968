/* test_agent_volfs.c - unit tests of agent/volfs: the completion mark and the removal inside a
 * tenant's volume never reach outside it, whatever the tenant puts there or swaps in meanwhile
 * (a racer exchanging .velero with a symlink to another volume, as a security review did). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/volfs.h"

#define VICTIM_FILES 200

struct fixture {
    char root[64];        /* a temporary directory holding both volumes */
    char vol[128];        /* the tenant's volume */
    char victim[128];     /* another pod's volume: root-only files in a 0700 directory */
    char victim_sub[160]; /* a directory below it */
};

static void put_file(const char *dir, const char *name, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "secret\n", 7), 7);
    assert_int_equal(close(fd), 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->root, sizeof f->root, "/tmp/pv-volfs.XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->vol, sizeof f->vol, "%s/vol", f->root);
    snprintf(f->victim, sizeof f->victim, "%s/victim", f->root);
    snprintf(f->victim_sub, sizeof f->victim_sub, "%s/sub", f->victim);
    assert_int_equal(mkdir(f->vol, 0777), 0);
    assert_int_equal(mkdir(f->victim, 0700), 0);
    assert_int_equal(mkdir(f->victim_sub, 0700), 0);
    char name[32];
    for (int i = 0; i < VICTIM_FILES; i++) {
        snprintf(name, sizeof name, "f%03d", i);
        put_file(i % 2 ? f->victim : f->victim_sub, name, 0600);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->root);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Entries below `dir` (not following links), counting directories too. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        n++;
        if (de->d_type == DT_DIR) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
            n += count_entries(sub);
        }
    }
    closedir(d);
    return n;
}

/* The other volume: every file still there, nothing added. */
static void assert_victim_untouched(const struct fixture *f)
{
    assert_int_equal(count_entries(f->victim), VICTIM_FILES + 1);
}

static void assert_mark(const struct fixture *f, const char *uid)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/.velero", f->vol);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0755);
    snprintf(path, sizeof path, "%s/.velero/%s", f->vol, uid);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_int_equal(st.st_size, 0);
}

static int open_vol(const struct fixture *f)
{
    struct err e;
    int fd = volfs_open(f->vol, &e);
    assert_true(fd >= 0);
    return fd;
}

static void test_mark_replaces_old(void **state)
{
    struct fixture *f = *state;
    char cmd[1024];
    /* An old mark directory with files, a subdirectory, a FIFO, and links out of the volume. */
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/.velero/old/deeper && touch %s/.velero/stale %s/.velero/old/x && "
             "mkfifo %s/.velero/9f1c-uid.fifo && ln -s %s %s/.velero/old/out && "
             "ln -s %s/f001 %s/.velero/file-out",
             f->vol, f->vol, f->vol, f->vol, f->victim, f->vol, f->victim, f->vol);
    assert_int_equal(system(cmd), 0);
    struct err e;
    int fd = open_vol(f);
    mode_t old = umask(077);
    assert_int_equal(volfs_write_mark(fd, f->vol, "9f1c-uid", &e), 0);
    umask(old);
    assert_mark(f, "9f1c-uid");
    char path[512];
    snprintf(path, sizeof path, "%s/.velero", f->vol);
    assert_int_equal(count_entries(path), 1);
    assert_victim_untouched(f);
    /* Once more over its own mark. */
    assert_int_equal(volfs_write_mark(fd, f->vol, "second", &e), 0);
    assert_mark(f, "second");
    assert_int_equal(count_entries(path), 1);
    close(fd);
}

static void test_mark_dir_is_link_or_file(void **state)
{
    struct fixture *f = *state;
    char path[512];
    struct err e;
    int fd = open_vol(f);
    /* .velero is a symlink to the other volume: the link goes, what it points to stays. */
    snprintf(path, sizeof path, "%s/.velero", f->vol);
    assert_int_equal(symlink(f->victim, path), 0);
    assert_int_equal(volfs_write_mark(fd, f->vol, "u-1", &e), 0);
    assert_mark(f, "u-1");
    assert_victim_untouched(f);
    /* .velero is a regular file. */
    assert_int_equal(volfs_remove(fd, ".velero", f->vol, &e), 0);
    put_file(f->vol, ".velero", 0644);
    assert_int_equal(volfs_write_mark(fd, f->vol, "u-2", &e), 0);
    assert_mark(f, "u-2");
    close(fd);
}

static void test_mark_names(void **state)
{
    struct fixture *f = *state;
    struct err e;
    char long_uid[200];
    memset(long_uid, 'a', 129);
    long_uid[129] = '\0';
    const char *bad[] = {"", ".", "..", "../x", "a/b", ".hidden", "a b", "x\n", long_uid};
    int fd = open_vol(f);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(volfs_mark_name_ok(bad[i]));
        assert_int_equal(volfs_write_mark(fd, f->vol, bad[i], &e), ERR_FAIL);
        assert_non_null(strstr(e.msg, "cannot name a completion mark"));
    }
    assert_false(volfs_mark_name_ok(NULL));
    long_uid[128] = '\0';
    assert_true(volfs_mark_name_ok(long_uid));
    assert_true(volfs_mark_name_ok("3f0d2b8e-6c4a-4f51-9a2e-0b8c5d1e7f10"));
    /* Nothing was created for the refused names. */
    char path[512];
    snprintf(path, sizeof path, "%s/.velero", f->vol);
    assert_int_equal(access(path, F_OK), -1);
    close(fd);
}

static void test_open_refuses_links(void **state)
{
    struct fixture *f = *state;
    char path[512];
    struct err e;
    snprintf(path, sizeof path, "%s/link", f->root);
    assert_int_equal(symlink(f->vol, path), 0);
    assert_int_equal(volfs_open(path, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "is a symlink"));
    snprintf(path, sizeof path, "%s/f001", f->victim);
    assert_true(volfs_open(path, &e) < 0);
    assert_non_null(strstr(e.msg, "opening volume directory"));
    snprintf(path, sizeof path, "%s/none", f->root);
    assert_int_equal(volfs_open(path, &e), ERR_NOT_FOUND);
    /* Empty or not, through the descriptor. */
    bool empty = false;
    int fd = open_vol(f);
    assert_int_equal(volfs_is_empty(fd, f->vol, &empty, &e), 0);
    assert_true(empty);
    put_file(f->vol, "data", 0644);
    assert_int_equal(volfs_is_empty(fd, f->vol, &empty, &e), 0);
    assert_false(empty);
    close(fd);
}

static void test_remove_too_deep(void **state)
{
    struct fixture *f = *state;
    char path[4096];
    struct err e;
    int n = snprintf(path, sizeof path, "%s/tree", f->vol);
    for (int i = 0; i < 70; i++) {
        assert_int_equal(mkdir(path, 0755), 0);
        n += snprintf(path + n, sizeof path - (size_t)n, "/d");
    }
    int fd = open_vol(f);
    assert_int_equal(volfs_remove(fd, "tree", f->vol, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "more than 64 directories deep"));
    assert_int_equal(volfs_remove(fd, "absent", f->vol, &e), 0);
    close(fd);
}

/* --- the race: a tenant swaps .velero with a symlink to the other volume, over and over. */

struct racer {
    const struct fixture *f;
    volatile int stop;
    unsigned long swaps;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char mark[512], swap[512], sub[512];
    snprintf(mark, sizeof mark, "%s/.velero", r->f->vol);
    snprintf(swap, sizeof swap, "%s/swap", r->f->vol);
    while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
        struct stat st;
        if (lstat(swap, &st) < 0) {
            if (symlink(r->f->victim, swap) < 0) continue;
        }
        if (lstat(mark, &st) < 0) {
            mkdir(mark, 0777);
            snprintf(sub, sizeof sub, "%s/sub", mark);
            mkdir(sub, 0777);
        }
        if (renameat2(AT_FDCWD, mark, AT_FDCWD, swap, RENAME_EXCHANGE) == 0) r->swaps++;
        sched_yield(); /* under valgrind, which runs one thread at a time, let the writer run */
    }
    return NULL;
}

static void test_race(void **state)
{
    struct fixture *f = *state;
    struct racer r = {.f = f};
    pthread_t th;
    int fd = open_vol(f);
    assert_int_equal(pthread_create(&th, NULL, race, &r), 0);
    unsigned ok = 0, failed = 0;
    time_t deadline = time(NULL) + 20;
    for (int i = 0; i < 2000 && time(NULL) < deadline; i++) {
        struct err e;
        char uid[32];
        snprintf(uid, sizeof uid, "restore-%d", i);
        if (volfs_write_mark(fd, f->vol, uid, &e) == 0)
            ok++;
        else
            failed++;
    }
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
    assert_int_equal(pthread_join(th, NULL), 0);
    close(fd);
    printf("race: %u marks written, %u refused, %lu swaps by the racer\n", ok, failed, r.swaps);
    assert_true(r.swaps > 100);     /* the racer really raced */
    assert_true(ok + failed >= 20); /* valgrind lets a few hundred through in the time */
    assert_victim_untouched(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mark_replaces_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mark_dir_is_link_or_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mark_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_links, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_too_deep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_race, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
