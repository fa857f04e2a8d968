/* retention.h - forget policies: which snapshots to keep, with restic's semantics.
 *
 * Snapshots are split into groups (by host, paths and/or tags), and each group is walked from
 * the newest snapshot to the oldest. Each --keep-<period> N rule keeps the newest snapshot of
 * each of the N most recent periods (hours, days, ISO weeks, months, years, in local time) that
 * hold a snapshot; --keep-last N keeps the N newest. A rule that still has counts left when it
 * reaches the oldest snapshot of the group keeps that one too (restic 0.17), so the history
 * reaches back as far as it can. --keep-within D keeps every snapshot newer than the newest
 * one minus D (calendar arithmetic: 1y2m3d4h). --keep-tag keeps snapshots carrying the tags.
 * A snapshot is kept when any rule keeps it. Pure functions of their inputs and of the local
 * time zone (TZ), so tests pin them on a fixed calendar.
 */
#ifndef PV_REPO_RETENTION_H
#define PV_REPO_RETENTION_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "repo/snapshot.h"

/* A count that keeps every period. */
#define RET_UNLIMITED (-1)

struct ret_duration {
    int years, months, days, hours;
};

struct ret_policy {
    int last, hourly, daily, weekly, monthly, yearly; /* 0: unused; RET_UNLIMITED: all */
    struct ret_duration within;                       /* all zero: unused */
    /* Each entry is a comma-separated tag list: a snapshot carrying every tag of one entry is
     * kept. */
    const char *const *keep_tags;
    size_t n_keep_tags;
};

/* Group-by fields (bit mask); 0 puts every snapshot in one group. */
enum { RET_GROUP_HOST = 1, RET_GROUP_PATHS = 2, RET_GROUP_TAGS = 4 };
#define RET_GROUP_DEFAULT (RET_GROUP_HOST | RET_GROUP_PATHS)

/* Why a snapshot is kept (bit mask). */
enum {
    RET_KEEP_LAST = 1 << 0,
    RET_KEEP_HOURLY = 1 << 1,
    RET_KEEP_DAILY = 1 << 2,
    RET_KEEP_WEEKLY = 1 << 3,
    RET_KEEP_MONTHLY = 1 << 4,
    RET_KEEP_YEARLY = 1 << 5,
    RET_KEEP_WITHIN = 1 << 6,
    RET_KEEP_TAG = 1 << 7,
};

struct ret_result {
    bool keep;
    unsigned reasons; /* RET_KEEP_* */
    size_t group;     /* groups are numbered 0.. in the order of host, paths and tags */
};

/* "1y2m3d4h": each unit at most once, in any order, at least one. */
int ret_parse_duration(const char *s, struct ret_duration *out, struct err *e);
/* "host,paths,tags" in any combination; "" for no grouping. */
int ret_parse_group_by(const char *s, unsigned *out, struct err *e);
/* A count: a number (0..10^6) or "unlimited". */
int ret_parse_count(const char *s, int *out, struct err *e);
bool ret_policy_empty(const struct ret_policy *p);
/* Human-readable reasons ("daily, monthly"); out holds `cap` bytes. */
const char *ret_reasons(unsigned reasons, char *out, size_t cap);

/* Applies the policy to `n` snapshots (any order): out[i] is the decision for snaps[i], and
 * *n_groups (may be NULL) the number of groups. An empty policy keeps everything. */
int ret_apply(const struct snapshot *snaps, size_t n, const struct ret_policy *p, unsigned group_by,
              struct ret_result *out, size_t *n_groups, struct err *e);

#endif
