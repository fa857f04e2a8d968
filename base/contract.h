/* contract.h - what the `podvault` command promises the programs that run it: its exit codes and
 * the message types of its --json lines. The CLI (cli/) writes them and the node agent (agent/)
 * reads them from its child processes; both include this header, so the two sides cannot
 * disagree. It lives in base/ because both modules depend on base/ and neither may depend on the
 * other's headers for it. README.md documents the same codes for users.
 *
 * Header only: constants, no state, nothing to free, usable from any thread. */
#ifndef PV_BASE_CONTRACT_H
#define PV_BASE_CONTRACT_H

/* Exit codes of `podvault COMMAND`. */
enum {
    PV_EXIT_OK = 0,
    PV_EXIT_ERROR = 1,
    PV_EXIT_USAGE = 2,
    PV_EXIT_INCOMPLETE = 3, /* backup saved, some entries could not be read */
    PV_EXIT_NO_REPO = 10,
    PV_EXIT_WRONG_PASSWORD = 12,
    PV_EXIT_CANCELED = 130,
};

/* The key that says what a --json line is, and its values. */
#define PV_MSG_KEY "message_type"
/* The "message_type" of each --json line a command prints (one JSON object a line). */
#define PV_MSG_STATUS "status"           /* progress of backup and restore */
#define PV_MSG_ERROR "error"             /* a problem with one entry (or, in check, an object) */
#define PV_MSG_WARNING "warning"         /* check: a problem that is not an error */
#define PV_MSG_SUMMARY "summary"         /* the last line of backup, restore and maintenance */
#define PV_MSG_INITIALIZED "initialized" /* init */
#define PV_MSG_GROUP "group"             /* forget: one group's decisions */
#define PV_MSG_REMOVED "removed"         /* forget ID: one snapshot removed */
#define PV_MSG_DAMAGE "damage"           /* check, repair snapshots: a file or directory lost */
#define PV_MSG_REWRITTEN "rewritten"     /* repair snapshots: a snapshot rewritten */

#endif
