/* s3_versions.h - the versions of a versioned bucket (S3 Object Lock): the parser of
 * ListObjectVersions pages, and the table from which the S3 backend reads a repository as it
 * stood at a time (--as-of) and repair versions plans. Internal to the S3 backend; a header of
 * its own so that unit tests and the fuzzer reach it. Input is untrusted: the document, keys,
 * version IDs and markers are capped, DTDs refused. Not thread-safe: a table is built by one
 * thread, then only read (s3_vt_* lookups may then run on several threads).
 */
#ifndef PV_BACKEND_S3_VERSIONS_H
#define PV_BACKEND_S3_VERSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define S3_VER_KEY_MAX 1024 /* S3's limit on key length */
#define S3_VER_ID_MAX 1024  /* version IDs and markers are opaque; real ones are far shorter */

/* One <Version> or <DeleteMarker>. Strings are valid during the callback only. */
struct s3_version {
    const char *key;
    const char *version_id;
    int64_t mtime_ms; /* LastModified, milliseconds since the epoch */
    uint64_t size;    /* 0 for a delete marker */
    bool marker;      /* a delete marker */
    bool latest;      /* IsLatest: the current state of the key */
};

/* Called for each entry in document order; a non-zero return stops parsing and is passed on. */
typedef int (*s3_version_cb)(void *ctx, const struct s3_version *v);

struct s3_versions_page {
    bool truncated;                /* more pages follow */
    char *next_key, *next_version; /* NextKeyMarker, NextVersionIdMarker (malloc'd, or NULL) */
    size_t entries;
};

/* Parses one ListObjectVersions page (<ListVersionsResult>). Returns 0, the callback's value, or
 * ERR_FAIL with a message when the document is not a well-formed listing. `page` must be zeroed
 * by the caller and freed with s3_versions_page_free whatever the result. */
int s3_versions_parse(const char *xml, size_t len, s3_version_cb cb, void *ctx,
                      struct s3_versions_page *page, struct err *e);
void s3_versions_page_free(struct s3_versions_page *page);

/* Parses an S3 time, "YYYY-MM-DDTHH:MM:SS[.fraction]Z" (UTC), into milliseconds since the epoch
 * (the fraction cut to milliseconds). False when malformed. */
bool s3_time_parse_ms(const char *s, int64_t *ms);

/* ---- the table of versions ---- */

struct s3_vt;

/* An empty table; NULL when out of memory. Free with s3_vt_free. */
struct s3_vt *s3_vt_new(void);
void s3_vt_free(struct s3_vt *t);
/* Adds a listed entry (the callback of s3_versions_parse can be this with the table as ctx);
 * 1 when out of memory, too many entries, or after s3_vt_finish. Entries of a key must come newest
 * first, as S3 lists them; the order decides between versions of the same LastModified. */
int s3_vt_add(void *t, const struct s3_version *v);
/* Sorts the table for lookups; nothing can be added afterwards. */
void s3_vt_finish(struct s3_vt *t);

/* What a key was at a time: the newest entry at or before it, NULL when the key did not exist
 * then (no entry, or a delete marker). `now` picks the current state (the IsLatest entry)
 * instead. The entry's strings live as long as the table. */
const struct s3_version *s3_vt_at(const struct s3_vt *t, const char *key, int64_t ms);
const struct s3_version *s3_vt_current(const struct s3_vt *t, const char *key);
/* What makes key's current state that of time `ms`: 0 nothing, 1 restore (*v: the version of
 * that time), 2 remove (it did not exist then but does now). */
int s3_vt_change(const struct s3_vt *t, const char *key, int64_t ms, const struct s3_version **v);
/* The distinct keys, in byte order: key i for i < s3_vt_keys(t). */
size_t s3_vt_keys(const struct s3_vt *t);
const char *s3_vt_key(const struct s3_vt *t, size_t i);
/* The entries of key i (how many), and the j-th of them, newest first (NULL out of range). */
size_t s3_vt_entries(const struct s3_vt *t, size_t i);
const struct s3_version *s3_vt_entry(const struct s3_vt *t, size_t i, size_t j);

#endif
