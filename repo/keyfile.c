/* keyfile.c - key files: the master key wrapped under an Argon2id password key; see keyfile.h
 * and docs/FORMAT.md ("Key files"). */
#include "repo/keyfile.h"

#include <jansson.h>
#include <pwd.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "repo/jsonf.h"

#define KEYFILE_VERSION 1
#define KEYFILE_KDF "argon2id"
#define KEYFILE_AD "podvault-key"
#define KEYFILE_MAX_LEN (64u * 1024)
#define SALT_LEN crypto_pwhash_argon2id_SALTBYTES
#define WRAPPED_LEN (CRYPT_KEY_LEN + CRYPT_TAG_LEN)

/* Bounds on parameters read from a file: a hostile key file must not make opening the
 * repository take hours or gigabytes. 4 GiB and 100 passes are far above anything we write. */
#define OPSLIMIT_MIN crypto_pwhash_argon2id_OPSLIMIT_MIN
#define OPSLIMIT_MAX 100u
#define MEMLIMIT_MIN crypto_pwhash_argon2id_MEMLIMIT_MIN
#define MEMLIMIT_MAX (4ull * 1024 * 1024 * 1024)

#define WRONG_PASSWORD "wrong password or no key file matches"
/* Longest string that fits a keyfile_info field with its NUL. */
#define INFO_MAX(field) (sizeof((struct keyfile_info *)0)->field - 1)

void keyfile_params_default(struct keyfile_params *p)
{
    p->opslimit = KEYFILE_DEFAULT_OPSLIMIT;
    p->memlimit = KEYFILE_DEFAULT_MEMLIMIT;
}

void keyfile_params_min(struct keyfile_params *p)
{
    p->opslimit = crypto_pwhash_argon2id_OPSLIMIT_MIN;
    p->memlimit = crypto_pwhash_argon2id_MEMLIMIT_MIN;
}

static int params_check(uint64_t opslimit, uint64_t memlimit, struct err *e)
{
    if (opslimit < OPSLIMIT_MIN || opslimit > OPSLIMIT_MAX)
        return err_set(e, ERR_FAIL, "key file: opslimit %llu is outside %llu..%llu",
                       (unsigned long long)opslimit, (unsigned long long)OPSLIMIT_MIN,
                       (unsigned long long)OPSLIMIT_MAX);
    if (memlimit < MEMLIMIT_MIN || memlimit > MEMLIMIT_MAX)
        return err_set(e, ERR_FAIL, "key file: memlimit %llu is outside %llu..%llu",
                       (unsigned long long)memlimit, (unsigned long long)MEMLIMIT_MIN,
                       (unsigned long long)MEMLIMIT_MAX);
    return 0;
}

/* Everything a key file holds, validated. Strings point into `root`. */
struct parsed {
    json_t *root;
    uint64_t opslimit, memlimit;
    uint8_t salt[SALT_LEN];
    uint8_t nonce[CRYPT_NONCE_LEN];
    uint8_t wrapped[WRAPPED_LEN];
    const char *created, *hostname, *username;
};

static int parse(const void *json, size_t len, struct parsed *k, struct err *e)
{
    static const char what[] = "key file";
    uint64_t version;
    const char *kdf;
    int rc = jsonf_parse(json, len, KEYFILE_MAX_LEN, what, &k->root, e);
    if (rc < 0) return rc;
    if ((rc = jsonf_uint(k->root, "version", 0, UINT32_MAX, what, &version, e)) < 0) goto fail;
    if (version != KEYFILE_VERSION) {
        rc = err_set(e, ERR_FAIL, "key file: version %llu is not supported (expected %d)",
                     (unsigned long long)version, KEYFILE_VERSION);
        goto fail;
    }
    if ((rc = jsonf_string(k->root, "kdf", 32, what, &kdf, e)) < 0) goto fail;
    if (strcmp(kdf, KEYFILE_KDF) != 0) {
        rc = err_set(e, ERR_FAIL, "key file: key derivation \"%s\" is not supported", kdf);
        goto fail;
    }
    if ((rc = jsonf_uint(k->root, "opslimit", 0, UINT64_MAX, what, &k->opslimit, e)) < 0 ||
        (rc = jsonf_uint(k->root, "memlimit", 0, UINT64_MAX, what, &k->memlimit, e)) < 0 ||
        (rc = params_check(k->opslimit, k->memlimit, e)) < 0 ||
        (rc = jsonf_hex(k->root, "salt", k->salt, sizeof k->salt, what, e)) < 0 ||
        (rc = jsonf_hex(k->root, "nonce", k->nonce, sizeof k->nonce, what, e)) < 0 ||
        (rc = jsonf_hex(k->root, "wrapped", k->wrapped, sizeof k->wrapped, what, e)) < 0 ||
        (rc = jsonf_string(k->root, "created", INFO_MAX(created), what, &k->created, e)) < 0 ||
        (rc = jsonf_string(k->root, "hostname", INFO_MAX(hostname), what, &k->hostname, e)) < 0 ||
        (rc = jsonf_string(k->root, "username", INFO_MAX(username), what, &k->username, e)) < 0)
        goto fail;
    return 0;
fail:
    json_decref(k->root);
    k->root = NULL;
    return rc;
}

static int derive(const char *password, const uint8_t salt[SALT_LEN], uint64_t opslimit,
                  uint64_t memlimit, uint8_t key[CRYPT_KEY_LEN], struct err *e)
{
    if (crypto_pwhash(key, CRYPT_KEY_LEN, password, strlen(password), salt, opslimit,
                      (size_t)memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return err_set(e, ERR_FAIL,
                       "key file: Argon2id with %llu bytes of memory failed (out of "
                       "memory?)",
                       (unsigned long long)memlimit);
    return 0;
}

static void now_rfc3339(char out[40])
{
    time_t t = time(NULL);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 40, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        strcpy(out, "1970-01-01T00:00:00Z");
}

static void who(char host[256], char user[256])
{
    if (gethostname(host, 256) != 0) strcpy(host, "unknown");
    host[255] = '\0';
    struct passwd pw, *res = NULL;
    char pwbuf[4096];
    uid_t uid = geteuid();
    if (getpwuid_r(uid, &pw, pwbuf, sizeof pwbuf, &res) == 0 && res && res->pw_name)
        snprintf(user, 256, "%s", res->pw_name);
    else
        snprintf(user, 256, "uid %u", (unsigned)uid);
}

int keyfile_create(const uint8_t master[CRYPT_KEY_LEN], const char *password,
                   const struct keyfile_params *p, struct buf *out, struct err *e)
{
    struct keyfile_params def;
    if (!p) {
        keyfile_params_default(&def);
        p = &def;
    }
    int rc = params_check(p->opslimit, p->memlimit, e);
    if (rc < 0) return rc;

    uint8_t salt[SALT_LEN], nonce[CRYPT_NONCE_LEN], wrapped[WRAPPED_LEN], key[CRYPT_KEY_LEN];
    randombytes_buf(salt, sizeof salt);
    randombytes_buf(nonce, sizeof nonce);
    if ((rc = derive(password, salt, p->opslimit, p->memlimit, key, e)) < 0) return rc;
    crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped, NULL, master, CRYPT_KEY_LEN,
                                               (const uint8_t *)KEYFILE_AD, strlen(KEYFILE_AD),
                                               NULL, nonce, key);
    sodium_memzero(key, sizeof key);

    char salt_hex[2 * SALT_LEN + 1], nonce_hex[2 * CRYPT_NONCE_LEN + 1];
    char wrapped_hex[2 * WRAPPED_LEN + 1], created[40], host[256], user[256];
    sodium_bin2hex(salt_hex, sizeof salt_hex, salt, sizeof salt);
    sodium_bin2hex(nonce_hex, sizeof nonce_hex, nonce, sizeof nonce);
    sodium_bin2hex(wrapped_hex, sizeof wrapped_hex, wrapped, sizeof wrapped);
    now_rfc3339(created);
    who(host, user);

    json_t *root =
        json_pack("{s:i, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "version", KEYFILE_VERSION,
                  "kdf", KEYFILE_KDF, "opslimit", (json_int_t)p->opslimit, "memlimit",
                  (json_int_t)p->memlimit, "salt", salt_hex, "nonce", nonce_hex, "wrapped",
                  wrapped_hex, "created", created, "hostname", host, "username", user);
    if (!root)
        return err_set(e, ERR_FAIL,
                       "key file: encoding failed (out of memory, or hostname or "
                       "user name not UTF-8)");
    rc = jsonf_dump(root, out, "key file", e);
    json_decref(root);
    return rc;
}

int keyfile_unwrap(const void *json, size_t len, const char *password,
                   uint8_t master[CRYPT_KEY_LEN], struct err *e)
{
    struct parsed k;
    int rc = parse(json, len, &k, e);
    if (rc < 0) return rc;
    uint8_t key[CRYPT_KEY_LEN];
    rc = derive(password, k.salt, k.opslimit, k.memlimit, key, e);
    if (rc == 0 && crypto_aead_xchacha20poly1305_ietf_decrypt(
                       master, NULL, NULL, k.wrapped, sizeof k.wrapped, (const uint8_t *)KEYFILE_AD,
                       strlen(KEYFILE_AD), k.nonce, key) != 0)
        rc = err_set(e, ERR_AUTH, WRONG_PASSWORD);
    sodium_memzero(key, sizeof key);
    json_decref(k.root);
    return rc;
}

int keyfile_info(const void *json, size_t len, struct keyfile_info *out, struct err *e)
{
    struct parsed k;
    int rc = parse(json, len, &k, e);
    if (rc < 0) return rc;
    snprintf(out->created, sizeof out->created, "%s", k.created);
    snprintf(out->hostname, sizeof out->hostname, "%s", k.hostname);
    snprintf(out->username, sizeof out->username, "%s", k.username);
    out->opslimit = k.opslimit;
    out->memlimit = k.memlimit;
    json_decref(k.root);
    return 0;
}
