/* writer_lock.c - the writer lock with which `backup` joins the protocol that keeps prune safe
 * beside it (docs/MAINTENANCE.md); see writer_lock.h. */
#include "cli/writer_lock.h"

#include "repo/index.h"
#include "repo/lock.h"
#include "repo/repo.h"

void cli_lock_release(struct lock *lk)
{
    struct err ignored; /* a lock that stays behind goes stale by itself */
    lock_release(lk, &ignored);
}

int cli_writer_begin(struct cli *g, struct repo *r, struct lock **lk)
{
    struct err e;
    err_clear(&e);
    *lk = NULL;
    size_t marked = 0;
    if (lock_writer_begin(r, g->cancel, lk, &e) < 0) return cli_fail(g, &e);
    if (lock_load_index(r, &marked, &e) < 0) {
        cli_lock_release(*lk);
        *lk = NULL;
        return cli_fail(g, &e);
    }
    cli_note(g, "index: %zu blobs in %zu packs; %zu packs pending deletion are not used",
             idx_blob_count(repo_index(r)), idx_pack_count(repo_index(r)), marked);
    return PV_EXIT_OK;
}

int cli_writer_end(struct lock *lk, int rc, struct err *e)
{
    if (!lk) return rc;
    struct err lost;
    if (lock_lost(lk, &lost)) {
        *e = lost;
        if (rc == 0)
            err_wrap(e, "the snapshot was saved, but a prune may have deleted data it refers to "
                        "meanwhile (run check)");
        else
            err_wrap(e, "backup stopped, no snapshot was saved");
        rc = ERR_FAIL;
        e->code = ERR_FAIL;
    }
    cli_lock_release(lk);
    return rc;
}
