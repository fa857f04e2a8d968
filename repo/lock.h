/* lock.h - what lets prune run beside backups: writer and prune locks ("locks/<id>") and
 * pending-deletion marks ("deletions/<id>"). docs/MAINTENANCE.md states the rule they implement
 * and why it holds; in short:
 *  - a backup creates a writer lock, THEN reads the marks, THEN loads the index, and treats
 *    every blob of a marked pack as absent (lock_writer_begin, then lock_load_index);
 *  - prune marks the packs it wants gone, lists the locks after the mark is stored, and deletes
 *    a marked pack only once every writer that was live at that listing has ended, and no
 *    snapshot saved since the mark uses it.
 * Locks never block a backup. A holder refreshes its lock every LOCK_REFRESH_SEC; a lock not
 * refreshed for LOCK_STALE_SEC, or whose process is gone (same machine only), is stale: its
 * holder counts as ended. Only prune locks exclude each other.
 */
#ifndef PV_REPO_LOCK_H
#define PV_REPO_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"

struct repo;

#define LOCK_REFRESH_SEC 300
#define LOCK_STALE_SEC 900

enum lock_kind {
    LOCK_BACKUP = 0, /* a writer: informational, any number at once */
    LOCK_PRUNE = 1,  /* maintenance (prune, check, repair, maintain): one at a time */
};

/* A lock object as read back. Times are Unix seconds by the holder's clock. */
struct lock_info {
    struct oid id;     /* object name; changes at every refresh */
    struct oid holder; /* stays the same across refreshes */
    enum lock_kind kind;
    bool readable; /* false: the object could not be opened (then only id is set, and it
                      counts as a live writer, because nothing says it is not) */
    char hostname[256];
    char machine[96]; /* boot ID and PID namespace: where `pid` means something */
    int64_t pid;
    int64_t started, refreshed;
};

struct lock_options {
    enum lock_kind kind;
    /* Watched by the refresh thread (may be NULL): once non-zero, the lock's stop flag is set. */
    const volatile int *cancel;
    uint32_t refresh_sec, stale_sec; /* 0: LOCK_REFRESH_SEC, LOCK_STALE_SEC */
    /* Prune locks: how long to keep trying while another live prune lock exists (0: fail at
     * once). */
    uint32_t wait_sec;
};

/* A lock held by this process, kept fresh by a thread of its own. */
struct lock;

/* Creates a lock and starts refreshing it. A prune lock fails with ERR_EXISTS, naming the
 * holder, when another live prune lock exists (after wait_sec of retrying). */
int lock_acquire(struct repo *r, const struct lock_options *o, struct lock **out, struct err *e);
/* lock_acquire of a writer lock with the default timing. */
int lock_writer_begin(struct repo *r, const volatile int *cancel, struct lock **out, struct err *e);
/* Non-zero once the operation holding the lock must stop: the watched cancel flag became
 * non-zero, or the lock is lost (it could not be refreshed for long enough that others may
 * already count it stale). Pass it as the `cancel` of the archiver or prune. */
const volatile int *lock_stop_flag(struct lock *l);
/* Whether the lock is lost; the message says why. */
bool lock_lost(struct lock *l, struct err *why);
const struct oid *lock_holder(const struct lock *l);
/* Stops refreshing and removes the lock object (NULL does nothing). A failed removal is
 * returned, but harmless: the object goes stale by itself. */
int lock_release(struct lock *l, struct err *e);

/* Lists every lock object, each read back. Objects that vanish while being read (refreshed or
 * released) make it list again, so a holder is never missed between its old and new object. */
int lock_list(struct repo *r, struct lock_info **out, size_t *n, struct err *e);
/* Whether a lock's holder counts as ended at `now`: not refreshed for stale_sec (0: default),
 * or, on this same machine, its process no longer exists. Unreadable locks are never stale. */
bool lock_is_stale(const struct lock_info *l, int64_t now, uint32_t stale_sec);
/* Removes the stale lock objects; *removed (may be NULL) counts them. */
int lock_remove_stale(struct repo *r, int64_t now, uint32_t stale_sec, size_t *removed,
                      struct err *e);

/* A pending-deletion mark: packs prune found unused and will delete once safe. */
struct lock_mark {
    struct oid id;     /* object name (set by lock_mark_save) */
    int64_t marked_at; /* Unix seconds, prune's clock; informational */
    struct oid *packs; /* owned */
    size_t n_packs;
    /* Snapshots known not to use the packs when they were marked: a later check need only
     * look at snapshots not listed here. */
    struct oid *snapshots; /* owned, sorted */
    size_t n_snapshots;
    /* Holders of the writer locks live when the locks were listed after the mark was stored;
     * absent when prune stopped before listing (the next prune then lists them itself). */
    bool has_waiting;
    struct oid *waiting; /* owned, sorted */
    size_t n_waiting;
};

/* Loads every mark (sorted lists). Marks that vanish while being read make it list again. */
int lock_marks_load(struct repo *r, struct lock_mark **out, size_t *n, struct err *e);
/* Stores a mark under a new ID (written to m->id). Sorts its lists. */
int lock_mark_save(struct repo *r, struct lock_mark *m, struct err *e);
int lock_mark_remove(struct repo *r, const struct oid *id, struct err *e);
void lock_mark_free(struct lock_mark *m);
void lock_marks_free(struct lock_mark *m, size_t n);

/* The JSON plaintext of lock objects and marks (FORMAT.md), for tests and fuzzing. The
 * decoders keep out->id, refuse anything malformed, and on failure leave nothing allocated.
 * lock_mark_encode sorts the mark's lists. */
int lock_info_encode(const struct lock_info *li, struct buf *out, struct err *e);
int lock_info_decode(const void *json, size_t len, struct lock_info *out, struct err *e);
int lock_mark_encode(struct lock_mark *m, struct buf *out, struct err *e);
int lock_mark_decode(const void *json, size_t len, struct lock_mark *out, struct err *e);

/* The writer's index load, to call after lock_writer_begin and before anything that uses the
 * index: reads the marks, then loads the index (repo_load_index; retried when an index file
 * vanishes because prune replaced it), then removes from the in-memory index every blob whose
 * location is a marked pack, so the writer stores it again rather than refer to it.
 * *n_marked (may be NULL) tells how many packs were marked. */
int lock_load_index(struct repo *r, size_t *n_marked, struct err *e);

#endif
