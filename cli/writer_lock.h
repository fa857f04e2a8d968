/* writer_lock.h - the two calls with which `backup` joins the protocol that keeps prune safe
 * beside it (see docs/MAINTENANCE.md), and the release of a lock that the maintenance commands
 * share. */
#ifndef PV_CLI_WRITER_LOCK_H
#define PV_CLI_WRITER_LOCK_H

#include "base/err.h"
#include "cli/cli.h"

struct lock;
struct repo;

/* For writers (backup), right after cli_open_repo and before anything reads the index: takes
 * the writer lock (refreshed by a thread until cli_writer_end), then loads the index without
 * the packs prune marked for deletion. Returns an exit code, having printed the error. Pass
 * lock_stop_flag(*lk) as the operation's cancel flag: it follows g->cancel, and also stops the
 * backup if the lock is lost. */
int cli_writer_begin(struct cli *g, struct repo *r, struct lock **lk);
/* Releases the writer lock (NULL does nothing). `rc` is the operation's result; when the lock
 * was lost meanwhile, returns ERR_FAIL with *e saying so instead. */
int cli_writer_end(struct lock *lk, int rc, struct err *e);

/* Releases a lock (writer or prune), ignoring errors: a lock that stays behind goes stale by
 * itself. */
void cli_lock_release(struct lock *lk);

#endif
