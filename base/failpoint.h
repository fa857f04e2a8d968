/* failpoint.h - the file system operations that write or make durable what podvault stores, and,
 * only in a build configured with -DPV_FAILPOINTS=ON, a test layer under them.
 *
 * Every write, fsync, rename, link, unlink and mkdir of the local backend, the pack writer, the
 * cache and the restore's file writes goes through an fp_* function. In a normal build each one
 * is an inline call of the system function (the layer compiles to nothing; no symbol, no
 * environment variable, nothing reaches it: tests/integration/failpoint_absent.sh checks the
 * binary). In a failpoint build, main() reads PV_FAILPOINT once and hands it to fp_start; then
 * every operation is numbered (1, 2, ...) and the layer can:
 *   count        print the number of operations at exit ("podvault failpoints: N operations");
 *   crash:N      _exit(FP_CRASH_EXIT) just before operation N;
 *   powerloss:N  the same, after undoing what was not made durable (below);
 *   enospc:N     fail operation N and every later write, create, mkdir and link with ENOSPC
 *                (a disk that filled up and stays full);
 *   eio:N        fail operation N alone with EIO.
 * Power loss keeps a log: file data written since the file's last fsync is truncated back to
 * its size at that fsync (or at the first write), and every create, mkdir, link, rename and
 * unlink whose directory was not fsynced since is reverted (latest first), then the process
 * exits. docs/FORMAT.md, "Commit points", describes the model and its limits.
 *
 * Thread-safety: every function may be called from any thread; in a failpoint build the
 * operations are serialized by one lock (so a crash sees no operation half done).
 * Errors: each returns what the system function returns (-1 and errno on failure). */
#ifndef PV_BASE_FAILPOINT_H
#define PV_BASE_FAILPOINT_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"

/* The exit status of a simulated crash, distinct from every podvault exit code. */
#define FP_CRASH_EXIT 86

enum fp_mode { FP_OFF, FP_COUNT, FP_CRASH, FP_POWERLOSS, FP_ENOSPC, FP_EIO };

struct fp_config {
    enum fp_mode mode;
    uint64_t at; /* the operation N that crashes or fails (1-based); 0 with FP_OFF, FP_COUNT */
};

/* Parses a PV_FAILPOINT value ("count", "crash:N", "powerloss:N", "enospc:N", "eio:N"; NULL or
 * "" is FP_OFF). Pure; compiled in every build so that its rules are unit-tested. Returns 0, or
 * ERR_FAIL with a message naming the value. */
int fp_parse(const char *spec, struct fp_config *out, struct err *e);

#ifdef PV_FAILPOINTS
/* Starts the layer; called once by main before any other thread exists. */
void fp_start(const struct fp_config *c);
/* The number of operations so far. */
uint64_t fp_ops(void);

int fp_pwrite_all(int fd, const void *p, size_t n, uint64_t off);
int fp_fsync(int fd);
/* open(path, flags | O_CREAT, mode): a new name when O_EXCL is in flags. */
int fp_open_create(const char *path, int flags, mode_t mode);
int fp_rename(const char *from, const char *to);
/* renameat2(RENAME_NOREPLACE) of two paths. */
int fp_rename_noreplace(const char *from, const char *to);
int fp_link(const char *from, const char *to);
/* linkat of the unnamed file open as fd to `to` (through /proc/self/fd). */
int fp_link_fd(int fd, const char *to);
int fp_unlink(const char *path);
int fp_mkdir(const char *path, mode_t mode);
int fp_ftruncate(int fd, off_t len);
/* The *at forms the restore uses; counted and failed, not logged for power loss. */
int fp_unlinkat(int dirfd, const char *name, int flags);
int fp_mkdirat(int dirfd, const char *name, mode_t mode);
#else
static inline int fp_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    return fdio_pwrite_all(fd, p, n, off);
}
static inline int fp_fsync(int fd)
{
    return fsync(fd);
}
static inline int fp_open_create(const char *path, int flags, mode_t mode)
{
    return open(path, flags | O_CREAT, mode);
}
static inline int fp_rename(const char *from, const char *to)
{
    return rename(from, to);
}
static inline int fp_rename_noreplace(const char *from, const char *to)
{
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
}
static inline int fp_link(const char *from, const char *to)
{
    return link(from, to);
}
static inline int fp_link_fd(int fd, const char *to)
{
    char proc[32];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, proc, AT_FDCWD, to, AT_SYMLINK_FOLLOW);
}
static inline int fp_unlink(const char *path)
{
    return unlink(path);
}
static inline int fp_mkdir(const char *path, mode_t mode)
{
    return mkdir(path, mode);
}
static inline int fp_ftruncate(int fd, off_t len)
{
    return ftruncate(fd, len);
}
static inline int fp_unlinkat(int dirfd, const char *name, int flags)
{
    return unlinkat(dirfd, name, flags);
}
static inline int fp_mkdirat(int dirfd, const char *name, mode_t mode)
{
    return mkdirat(dirfd, name, mode);
}
#endif

#endif
