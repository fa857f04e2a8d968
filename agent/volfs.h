/* volfs.h - what the agent does inside a pod volume, immune to the tenant who writes there.
 *
 * The agent runs as root (DAC_OVERRIDE, FOWNER) beside volumes that tenants write to while it
 * works: a name inside a volume can become a symlink, or another directory, between any two
 * system calls (renameat2 RENAME_EXCHANGE needs no privilege). So nothing here resolves a path
 * inside a volume in one call: the volume is opened once with O_DIRECTORY | O_NOFOLLOW, and every
 * later step is relative to an open descriptor (openat, mkdirat, unlinkat, fchmod), with
 * O_NOFOLLOW on every name, never crossing into another file system. A tenant can at most make
 * such an operation fail, or act on other entries of its own volume; never reach outside it.
 *
 * Errors: every function returns 0 or a negative ERR_* code with a message naming the path and
 * the cause. Thread-safety: functions share no state; each descriptor belongs to its caller.
 */
#ifndef PV_AGENT_VOLFS_H
#define PV_AGENT_VOLFS_H

#include <stdbool.h>

#include "base/err.h"

/* The directory that holds the completion mark for Velero's restore-wait init container. */
#define VOLFS_MARK_DIR ".velero"

/* Opens the volume directory `path` for work inside it (O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
 * O_CLOEXEC): the last component must be a directory itself, not a symlink to one (the earlier
 * components are the kubelet's, which tenants cannot write). Returns the descriptor (>= 0, the
 * caller closes it) or a negative ERR_* code (ERR_NOT_FOUND when it does not exist). */
int volfs_open(const char *path, struct err *e);

/* Sets *empty to whether the open directory `dirfd` holds no entries. `dirfd` stays open and
 * its position is not used. */
int volfs_is_empty(int dirfd, const char *shown, bool *empty, struct err *e);

/* Removes the entry `name` of the open directory `dirfd` and, when it is a directory, all below
 * it, through descriptors only: a symlink is removed, never followed; a directory on another
 * file system or more than 64 levels deep is left and reported. Entries a concurrent writer
 * adds are retried a bounded number of times, then reported. An absent `name` is success.
 * `shown` names `dirfd` in messages. */
int volfs_remove(int dirfd, const char *name, const char *shown, struct err *e);

/* Whether `uid` can name the completion mark: 1 to 128 of [A-Za-z0-9._-], not starting with
 * '.' (a Kubernetes UID is a UUID). Check this before touching the volume. */
bool volfs_mark_name_ok(const char *uid);

/* Writes Velero's completion mark into the volume open at `volfd`: removes .velero (whatever it
 * is), creates it (0755), and creates in it the empty file named `restore_uid` (0644), a new
 * file of our own (O_CREAT | O_EXCL, never an entry a tenant placed there). `shown` names the
 * volume in messages. */
int volfs_write_mark(int volfd, const char *shown, const char *restore_uid, struct err *e);

#endif
