/* check.h - verify a repository, and rebuild its index from the packs.
 *
 * check_run verifies the structure: every index file and snapshot loads; every tree and data
 * blob a snapshot reaches is in the index, and every tree decodes; every pack the index lists
 * exists, is long enough, and its header (read back and authenticated) lists each blob where the
 * index says. With read_data it also reads every pack's blobs (each pack once, in ranges of
 * about 2 MiB) and decrypts and verifies every blob against its ID. Each problem is reported
 * with the ID of the object at fault and counted; unreferenced data (packs no index lists, blobs
 * no snapshot uses) is reported as a warning, since prune removes it and it harms nothing.
 *
 * check_repair_index reads every pack's header and writes index files that supersede all
 * existing ones, so a lost or damaged index file costs nothing that the packs still hold.
 *
 * Memory (bounded by max_memory, in passes): the index plus two bits a blob and ~16 bytes a pack;
 * with read_data, a 2 MiB range of a pack per thread.
 */
#ifndef PV_REPO_CHECK_H
#define PV_REPO_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/oid.h"

struct repo;

enum check_object {
    CHECK_INDEX = 1,
    CHECK_PACK,
    CHECK_SNAPSHOT,
    CHECK_TREE,
    CHECK_BLOB,
    CHECK_LOCK,
    CHECK_DELETIONS,
};

struct check_problem {
    bool error; /* false: a warning (unreferenced data) */
    enum check_object object;
    struct oid id; /* the object at fault */
    const char *msg;
};

enum check_read {
    CHECK_READ_NONE = 0,
    CHECK_READ_ALL,
    CHECK_READ_SUBSET, /* subset_n of subset_m groups, or subset_frac of the packs */
};

struct check_options {
    enum check_read read;
    /* Subsets: packs are put in subset_m groups by their ID; group subset_n (1..m) is read.
     * With subset_m 0, a random subset_frac (0..1] of the packs is read instead. */
    uint32_t subset_n, subset_m;
    double subset_frac;
    unsigned threads; /* 0: 4, or 2 when reading data */
    /* Bound in bytes on the index and the tables (0: none). When they would not fit, the work is
     * done in passes over ranges of blob IDs (walk.h); when even one range does not fit, the
     * run fails at once, naming the least bound that would work. */
    uint64_t max_memory;
    const volatile int *cancel;
    /* Each problem (may be NULL); called one at a time. */
    void (*report)(void *ctx, const struct check_problem *p);
    void (*progress)(void *ctx, const char *phase, uint64_t done, uint64_t total);
    void *ctx;
};

struct check_stats {
    uint64_t index_files, snapshots, trees, packs, blobs, blobs_used;
    uint64_t packs_read, blobs_read, bytes_read; /* read_data */
    uint64_t errors, warnings;
    uint64_t memory; /* peak bytes of the index and check's own tables */
    uint64_t passes; /* over ranges of blob IDs (max_memory) */
};

/* Parses "10%" (a share) or "2/5" (group 2 of 5) into o's subset fields and sets o->read. */
int check_parse_subset(const char *s, struct check_options *o, struct err *e);

/* Runs the check. Returns 0 when it could run to the end (problems are counted in *st), or an
 * error when it could not (canceled: ERR_CANCELED). The caller holds a prune lock, so that no
 * prune deletes what check is looking at. */
int check_run(struct repo *r, const struct check_options *o, struct check_stats *st, struct err *e);

struct check_repair_stats {
    uint64_t packs, blobs; /* indexed anew */
    uint64_t packs_bad;    /* whose header could not be read (reported, left out) */
    uint64_t index_files_written, index_files_removed;
};

/* Rebuilds the index from the pack headers; the caller holds a prune lock. Packs whose header
 * cannot be read are reported through o->report and left out. Uses o's threads, cancel,
 * report and progress. */
int check_repair_index(struct repo *r, const struct check_options *o, struct check_repair_stats *st,
                       struct err *e);

#endif
