/* fdio.c - whole reads and writes at an offset of a file; see fdio.h. */
#include "base/fdio.h"

#include <errno.h>
#include <unistd.h>

ssize_t fdio_pread_full(int fd, void *p, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)p + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int fdio_pread_exact(int fd, void *p, size_t n, uint64_t off)
{
    ssize_t got = fdio_pread_full(fd, p, n, off);
    if (got < 0) return -1;
    if ((size_t)got < n) {
        errno = EIO;
        return -1;
    }
    return 0;
}

int fdio_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        c += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}
