/* fdio.h - whole reads and writes at an offset of a file, through short transfers and EINTR.
 *
 * pread and pwrite may move fewer bytes than asked (a signal, a transfer over 2 GiB, a pipe);
 * these loop until all is moved, the file ends, or an error other than EINTR.
 */
#ifndef PV_BASE_FDIO_H
#define PV_BASE_FDIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Reads n bytes at `off` of fd into p. Returns how many were read: n, or fewer only when the
 * file ends first; -1 with errno set on an error. */
ssize_t fdio_pread_full(int fd, void *p, size_t n, uint64_t off);

/* The same for a file known to hold the n bytes: 0, or -1 with errno set (EIO when the file
 * ends first). */
int fdio_pread_exact(int fd, void *p, size_t n, uint64_t off);

/* Writes the n bytes at p at `off` of fd. Returns 0, or -1 with errno set (EIO when the file
 * takes no more bytes). */
int fdio_pwrite_all(int fd, const void *p, size_t n, uint64_t off);

#endif
