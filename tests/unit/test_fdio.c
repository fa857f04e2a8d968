/* test_fdio.c - unit tests of base/fdio: whole writes and reads at offsets, a read that meets
 * the end of the file, and errors (a read-only descriptor, a full device). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/fdio.h"
#include "base/prng.h"

static int tmp_fd(void)
{
    char path[] = "/tmp/pv-fdio-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

static void test_fdio_round_trip(void **state)
{
    (void)state;
    enum { N = 5 << 20, AT = 12345 };
    uint8_t *in = malloc(N), *out = malloc(N + 100);
    assert_non_null(in);
    assert_non_null(out);
    uint64_t seed = 7;
    for (size_t i = 0; i < N; i++)
        in[i] = (uint8_t)prng_next(&seed);
    int fd = tmp_fd();
    assert_int_equal(fdio_pwrite_all(fd, in, N, AT), 0);
    assert_int_equal(lseek(fd, 0, SEEK_END), AT + N);
    assert_int_equal(fdio_pread_full(fd, out, N, AT), N);
    assert_memory_equal(in, out, N);
    /* The file ends first: the bytes there are, no error. */
    assert_int_equal(fdio_pread_full(fd, out, N + 100, AT), N);
    assert_int_equal(fdio_pread_full(fd, out, 10, AT + N + 5), 0);
    assert_int_equal(fdio_pread_full(fd, out, 0, 0), 0);
    assert_int_equal(fdio_pread_exact(fd, out, N, AT), 0);
    errno = 0;
    assert_int_equal(fdio_pread_exact(fd, out, N + 1, AT), -1);
    assert_int_equal(errno, EIO);
    close(fd);
    free(in);
    free(out);
}

/* A read (or write) of `path` opened with `flags` fails with errno `want`. */
static void expect_errno(const char *path, int flags, bool write, int want)
{
    char b[64] = {0};
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) {
        assert_int_equal(errno, ENOENT); /* a minimal container may lack /dev/full */
        return;
    }
    errno = 0;
    if (write)
        assert_int_equal(fdio_pwrite_all(fd, b, sizeof b, 0), -1);
    else
        assert_int_equal(fdio_pread_full(fd, b, sizeof b, 0), -1);
    assert_int_equal(errno, want);
    close(fd);
}

static void test_fdio_errors(void **state)
{
    (void)state;
    expect_errno("/dev/null", O_RDONLY, true, EBADF);
    expect_errno("/dev/null", O_WRONLY, false, EBADF);
    expect_errno("/dev/full", O_WRONLY, true, ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fdio_round_trip),
        cmocka_unit_test(test_fdio_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
