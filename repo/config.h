/* config.h - the repository config: format version, repository ID and write settings.
 * Stored as the object "config", JSON sealed with the file key (kind "config"). */
#ifndef PV_REPO_CONFIG_H
#define PV_REPO_CONFIG_H

#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"
#include "backend/backend.h"
#include "chunker/chunker.h"
#include "repo/crypt.h"

/* Version 2 names the blob ID function ("blob_id"); version 1 configs, which lack it, mean
 * keyed BLAKE2b and are still read (and written back as version 1). */
#define CONFIG_VERSION 2
#define CONFIG_VERSION_MIN 1
/* Version 3 is version 2 with "object_lock" (S3 Object Lock): a program that knows only
 * versions 1 and 2 refuses it rather than write objects without retention. */
#define CONFIG_VERSION_LOCK 3
/* Object Lock retention: at least a minute (tests), at most 100 years. */
#define CONFIG_LOCK_SECONDS_MIN 60u
#define CONFIG_LOCK_SECONDS_MAX (100ull * 365 * 86400)
#define CONFIG_DEFAULT_BLOB_ID CRYPT_ID_HMAC_SHA256
#define CONFIG_DEFAULT_PACK_SIZE (16u * 1024 * 1024)
#define CONFIG_DEFAULT_ZSTD_LEVEL 3

struct config {
    uint32_t version;              /* CONFIG_VERSION_MIN..CONFIG_VERSION; newer are refused */
    struct oid repo_id;            /* random, names the repository (caches, locks) */
    struct chunker_params chunker; /* chunk size limits */
    uint32_t pack_size;            /* target pack size in bytes, 1 MiB..1 GiB */
    int zstd_level;                /* 0 = no compression, 1..19 */
    enum crypt_id_hash blob_id;    /* how blob IDs are computed (always BLAKE2b in version 1) */
    /* S3 Object Lock of what the repository writes: mode OFF in versions 1 and 2, set (with
     * CONFIG_LOCK_SECONDS_MIN..MAX seconds) in version 3 */
    struct backend_retention object_lock;
};

void config_default(struct config *c);
/* JSON plaintext of the config. */
int config_encode(const struct config *c, struct buf *out, struct err *e);
/* Parses and validates (every field within its bounds). */
int config_decode(const void *json, size_t len, struct config *c, struct err *e);

#endif
