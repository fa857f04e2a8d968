/* s3_lock.h - S3 Object Lock for the S3 backend: which objects carry a retention date, the
 * headers that give it to an upload, and the parser of GetObjectLockConfiguration answers.
 * Internal to backend_s3.c; a header of its own so that unit tests and the fuzzer reach it.
 * Pure functions apart from s3_lock_headers, which reads the body it hashes. All thread-safe.
 */
#ifndef PV_BACKEND_S3_LOCK_H
#define PV_BACKEND_S3_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "backend/backend.h"
#include "base/err.h"

/* The directory whose objects are written without retention: lock objects must be removable by
 * the backups that wrote them (docs/FORMAT.md, "Object Lock"). */
#define S3_LOCK_EXEMPT_DIR "locks/"

/* The extra header lines of one locked upload, ready for curl. */
struct s3_lock_hdrs {
    char mode[64];  /* "x-amz-object-lock-mode: GOVERNANCE" */
    char until[96]; /* "x-amz-object-lock-retain-until-date: 2026-12-09T02:10:00Z" */
    char md5[64];   /* "Content-MD5: <base64>", which S3 demands beside a retention */
};

/* Whether an object of this repository-relative name gets a retention under `r` (mode set and
 * the name not under S3_LOCK_EXEMPT_DIR). */
bool s3_lock_applies(const struct backend_retention *r, const char *name);

/* The S3 spelling of a mode: "GOVERNANCE" or "COMPLIANCE"; NULL for BACKEND_LOCK_OFF. */
const char *s3_lock_mode_name(enum backend_lock_mode m);

/* Formats `t` (seconds since the epoch, UTC) as S3 wants a retain-until date:
 * "YYYY-MM-DDTHH:MM:SSZ". Returns false when it does not fit in `cap`. */
bool s3_lock_format_date(time_t t, char *out, size_t cap);

/* Fills `h` for an upload at time `now` under `r`: retain until now + r->seconds, and the MD5
 * of `len` bytes from memory (`data`) or, when data is NULL, of [0, len) of the file `fd` (read
 * with pread, in bounded pieces). ERR_FAIL when the file cannot be read or the date overflows. */
int s3_lock_headers(const struct backend_retention *r, time_t now, const void *data, int fd,
                    uint64_t len, struct s3_lock_hdrs *h, struct err *e);

/* Reads a GetObjectLockConfiguration answer: *enabled is true when it says
 * <ObjectLockEnabled>Enabled</ObjectLockEnabled>. ERR_FAIL (with a message) when the body is not
 * such a document. Input is untrusted: its size is capped, DTDs are refused. */
int s3_lock_parse_config(const char *xml, size_t len, bool *enabled, struct err *e);

#endif
