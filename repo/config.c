/* config.c - the repository config as JSON, validated field by field; see config.h and
 * docs/FORMAT.md ("Config"). */
#include "repo/config.h"

#include <jansson.h>
#include <string.h>

#include "repo/jsonf.h"

#define CONFIG_MAX_LEN (64u * 1024)
#define PACK_SIZE_MIN (1u * 1024 * 1024)
#define PACK_SIZE_MAX (1024u * 1024 * 1024)
#define ZSTD_LEVEL_MAX 19

void config_default(struct config *c)
{
    c->version = CONFIG_VERSION;
    oid_random(&c->repo_id);
    c->chunker.min_size = CHUNKER_DEFAULT_MIN;
    c->chunker.avg_size = CHUNKER_DEFAULT_AVG;
    c->chunker.max_size = CHUNKER_DEFAULT_MAX;
    c->pack_size = CONFIG_DEFAULT_PACK_SIZE;
    c->zstd_level = CONFIG_DEFAULT_ZSTD_LEVEL;
    c->blob_id = CONFIG_DEFAULT_BLOB_ID;
    c->object_lock.mode = BACKEND_LOCK_OFF;
    c->object_lock.seconds = 0;
}

/* The names of the blob ID functions in version 2 configs. */
static const char *blob_id_name(enum crypt_id_hash h)
{
    return h == CRYPT_ID_BLAKE2B ? "blake2b" : h == CRYPT_ID_HMAC_SHA256 ? "hmac-sha256" : NULL;
}

static int check_version(uint64_t version, struct err *e)
{
    if (version < CONFIG_VERSION_MIN || version > CONFIG_VERSION_LOCK)
        return err_set(e, ERR_FAIL,
                       "config: repository format version %llu is not supported (this podvault "
                       "reads versions %d to %d)",
                       (unsigned long long)version, CONFIG_VERSION_MIN, CONFIG_VERSION_LOCK);
    return 0;
}

/* Version 3 and only it has an object lock, with a retention within bounds. */
static int check_lock(const struct config *c, struct err *e)
{
    const struct backend_retention *l = &c->object_lock;
    bool on = l->mode != BACKEND_LOCK_OFF;
    if (on != (c->version == CONFIG_VERSION_LOCK))
        return err_set(e, ERR_FAIL, "config: version %u %s an object lock", c->version,
                       on ? "cannot have" : "must have");
    if (on && l->mode != BACKEND_LOCK_GOVERNANCE && l->mode != BACKEND_LOCK_COMPLIANCE)
        return err_set(e, ERR_FAIL, "config: unknown object lock mode %d", (int)l->mode);
    if (on && (l->seconds < CONFIG_LOCK_SECONDS_MIN || l->seconds > CONFIG_LOCK_SECONDS_MAX))
        return err_set(e, ERR_FAIL,
                       "config: object lock retention of %llu seconds is outside %u..%llu",
                       (unsigned long long)l->seconds, CONFIG_LOCK_SECONDS_MIN,
                       (unsigned long long)CONFIG_LOCK_SECONDS_MAX);
    return 0;
}

/* The checks shared by encode (refuse to write a config we could not read) and decode. */
static int check(const struct config *c, struct err *e)
{
    int rc = check_version(c->version, e);
    if (rc < 0) return rc;
    rc = chunker_params_check(&c->chunker, e);
    if (rc < 0) return err_wrap(e, "config");
    if (c->pack_size < PACK_SIZE_MIN || c->pack_size > PACK_SIZE_MAX)
        return err_set(e, ERR_FAIL, "config: pack_size %u is outside %u..%u", c->pack_size,
                       PACK_SIZE_MIN, PACK_SIZE_MAX);
    if (c->zstd_level < 0 || c->zstd_level > ZSTD_LEVEL_MAX)
        return err_set(e, ERR_FAIL, "config: zstd_level %d is outside 0..%d", c->zstd_level,
                       ZSTD_LEVEL_MAX);
    if (!blob_id_name(c->blob_id) || (c->version == 1 && c->blob_id != CRYPT_ID_BLAKE2B))
        return err_set(e, ERR_FAIL, "config: blob ID function %d is not possible in version %u",
                       (int)c->blob_id, c->version);
    return check_lock(c, e);
}

int config_encode(const struct config *c, struct buf *out, struct err *e)
{
    int rc = check(c, e);
    if (rc < 0) return rc;
    char hex[OID_HEX_LEN + 1];
    json_t *root = json_pack(
        "{s:i, s:s, s:{s:I, s:I, s:I}, s:I, s:i}", "version", (int)c->version, "repo_id",
        oid_hex(&c->repo_id, hex), "chunker", "min_size", (json_int_t)c->chunker.min_size,
        "avg_size", (json_int_t)c->chunker.avg_size, "max_size", (json_int_t)c->chunker.max_size,
        "pack_size", (json_int_t)c->pack_size, "zstd_level", c->zstd_level);
    if (root && c->version >= 2 &&
        json_object_set_new(root, "blob_id", json_string(blob_id_name(c->blob_id))) < 0) {
        json_decref(root);
        root = NULL;
    }
    if (root && c->object_lock.mode != BACKEND_LOCK_OFF &&
        json_object_set_new(root, "object_lock",
                            json_pack("{s:s, s:I}", "mode",
                                      backend_lock_mode_str(c->object_lock.mode), "retention_s",
                                      (json_int_t)c->object_lock.seconds)) < 0) {
        json_decref(root);
        root = NULL;
    }
    if (!root) return err_set(e, ERR_FAIL, "config: encoding failed (out of memory)");
    rc = jsonf_dump(root, out, "config", e);
    json_decref(root);
    return rc;
}

static int decode_lock(const json_t *root, struct backend_retention *l, struct err *e)
{
    static const char what[] = "config object_lock";
    const json_t *o = json_object_get(root, "object_lock");
    if (!json_is_object(o))
        return err_set(e, ERR_FAIL, "config: field \"object_lock\" is missing or not an object");
    const char *mode;
    int rc = jsonf_string(o, "mode", 20, what, &mode, e);
    if (rc < 0) return rc;
    if (!backend_lock_mode_parse(mode, &l->mode))
        return err_set(e, ERR_FAIL, "config: unknown object lock mode \"%.20s\"", mode);
    return jsonf_uint(o, "retention_s", 0, UINT64_MAX, what, &l->seconds, e);
}

int config_decode(const void *json, size_t len, struct config *c, struct err *e)
{
    static const char what[] = "config";
    json_t *root;
    int rc = jsonf_parse(json, len, CONFIG_MAX_LEN, what, &root, e);
    if (rc < 0) return rc;
    struct config tmp;
    uint64_t version, min, avg, max, pack, level;
    const json_t *ch = json_object_get(root, "chunker");
    /* the version first: a newer format may have changed any other field */
    if ((rc = jsonf_uint(root, "version", 0, UINT64_MAX, what, &version, e)) < 0 ||
        (rc = check_version(version, e)) < 0)
        goto out;
    tmp.version = (uint32_t)version;
    if ((rc = jsonf_hex(root, "repo_id", tmp.repo_id.b, OID_LEN, what, e)) < 0) goto out;
    if (!json_is_object(ch)) {
        rc = err_set(e, ERR_FAIL, "config: field \"chunker\" is missing or not an object");
        goto out;
    }
    if ((rc = jsonf_uint(ch, "min_size", 0, UINT32_MAX, "config chunker", &min, e)) < 0 ||
        (rc = jsonf_uint(ch, "avg_size", 0, UINT32_MAX, "config chunker", &avg, e)) < 0 ||
        (rc = jsonf_uint(ch, "max_size", 0, UINT32_MAX, "config chunker", &max, e)) < 0 ||
        (rc = jsonf_uint(root, "pack_size", 0, UINT32_MAX, what, &pack, e)) < 0 ||
        (rc = jsonf_uint(root, "zstd_level", 0, ZSTD_LEVEL_MAX, what, &level, e)) < 0)
        goto out;
    tmp.chunker.min_size = (uint32_t)min;
    tmp.chunker.avg_size = (uint32_t)avg;
    tmp.chunker.max_size = (uint32_t)max;
    tmp.pack_size = (uint32_t)pack;
    tmp.zstd_level = (int)level;
    tmp.blob_id = CRYPT_ID_BLAKE2B;
    if (version >= 2) {
        const char *name;
        if ((rc = jsonf_string(root, "blob_id", 40, what, &name, e)) < 0) goto out;
        if (strcmp(name, "hmac-sha256") == 0) {
            tmp.blob_id = CRYPT_ID_HMAC_SHA256;
        } else if (strcmp(name, "blake2b") != 0) {
            rc = err_set(e, ERR_FAIL, "config: unknown blob_id \"%.40s\"", name);
            goto out;
        }
    }
    tmp.object_lock.mode = BACKEND_LOCK_OFF;
    tmp.object_lock.seconds = 0;
    if (version == CONFIG_VERSION_LOCK && (rc = decode_lock(root, &tmp.object_lock, e)) < 0)
        goto out;
    if ((rc = check(&tmp, e)) < 0) goto out;
    *c = tmp;
out:
    json_decref(root);
    return rc;
}
