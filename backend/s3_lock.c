/* s3_lock.c - S3 Object Lock headers and the GetObjectLockConfiguration parser; see s3_lock.h.
 * The rules follow S3's PutObject with x-amz-object-lock-mode / -retain-until-date (Content-MD5
 * required beside them) and GetObjectLockConfiguration. */
#include "backend/s3_lock.h"

#include <errno.h>
#include <expat.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fdio.h"

#define LOCK_DOC_MAX (64u << 10) /* a lock configuration is a few hundred bytes */
#define LOCK_DEPTH_MAX 16
#define NS_SEP '\x01'

bool s3_lock_applies(const struct backend_retention *r, const char *name)
{
    return r && r->mode != BACKEND_LOCK_OFF &&
           strncmp(name, S3_LOCK_EXEMPT_DIR, sizeof S3_LOCK_EXEMPT_DIR - 1) != 0;
}

const char *s3_lock_mode_name(enum backend_lock_mode m)
{
    return m == BACKEND_LOCK_GOVERNANCE   ? "GOVERNANCE"
           : m == BACKEND_LOCK_COMPLIANCE ? "COMPLIANCE"
                                          : NULL;
}

bool s3_lock_format_date(time_t t, char *out, size_t cap)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm)) return false;
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return n > 0;
}

/* MD5 of memory or of [0, len) of a file, as base64 (S3's Content-MD5). */
static int body_md5(const void *data, int fd, uint64_t len, char *b64, size_t cap)
{
    enum { MD5_BUF = 256 * 1024 };
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *b = data ? NULL : malloc(MD5_BUF);
    int rc = ctx && (data || b) && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 ? 0 : -1;
    if (rc < 0) errno = ENOMEM;
    if (rc == 0 && data && EVP_DigestUpdate(ctx, data, (size_t)len) != 1) rc = -1;
    for (uint64_t off = 0; rc == 0 && !data && off < len;) {
        size_t want = len - off < MD5_BUF ? (size_t)(len - off) : MD5_BUF;
        if (fdio_pread_exact(fd, b, want, off) < 0 || EVP_DigestUpdate(ctx, b, want) != 1) rc = -1;
        off += want;
    }
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;
    if (rc == 0 && (EVP_DigestFinal_ex(ctx, h, &hlen) != 1 || hlen != 16)) rc = -1;
    if (rc == 0) sodium_bin2base64(b64, cap, h, hlen, sodium_base64_VARIANT_ORIGINAL);
    EVP_MD_CTX_free(ctx);
    free(b);
    return rc;
}

int s3_lock_headers(const struct backend_retention *r, time_t now, const void *data, int fd,
                    uint64_t len, struct s3_lock_hdrs *h, struct err *e)
{
    const char *mode = s3_lock_mode_name(r->mode);
    char date[40], md5[32];
    if (!mode) return err_set(e, ERR_FAIL, "object lock: no retention mode");
    if (r->seconds > (uint64_t)100 * 365 * 86400 || now < 0)
        return err_set(e, ERR_FAIL, "object lock: retention of %llu seconds is too long",
                       (unsigned long long)r->seconds);
    if (!s3_lock_format_date(now + (time_t)r->seconds, date, sizeof date))
        return err_set(e, ERR_FAIL, "object lock: the retain-until date cannot be written");
    if (body_md5(data, fd, len, md5, sizeof md5) < 0)
        return err_sys(e, errno, "object lock: hashing the body (MD5)");
    snprintf(h->mode, sizeof h->mode, "x-amz-object-lock-mode: %s", mode);
    snprintf(h->until, sizeof h->until, "x-amz-object-lock-retain-until-date: %s", date);
    snprintf(h->md5, sizeof h->md5, "Content-MD5: %s", md5);
    return 0;
}

/* ---- GetObjectLockConfiguration ---- */

struct lx {
    XML_Parser p;
    int depth;
    bool root_ok, in_enabled, enabled;
    size_t tlen;
    char text[32];
    const char *why;
};

static void lx_stop(struct lx *x, const char *why)
{
    if (!x->why) x->why = why;
    XML_StopParser(x->p, XML_FALSE);
}

static const char *local_name(const char *name)
{
    const char *l = strrchr(name, NS_SEP);
    return l ? l + 1 : name;
}

static void XMLCALL lx_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct lx *x = ud;
    (void)attrs;
    if (++x->depth > LOCK_DEPTH_MAX) return lx_stop(x, "elements nested too deeply");
    const char *l = local_name(name);
    if (x->depth == 1) {
        if (strcmp(l, "ObjectLockConfiguration") != 0)
            return lx_stop(x, "not an ObjectLockConfiguration document");
        x->root_ok = true;
    }
    if (x->depth == 2 && strcmp(l, "ObjectLockEnabled") == 0) {
        x->in_enabled = true;
        x->tlen = 0;
    }
}

static void XMLCALL lx_text(void *ud, const XML_Char *s, int len)
{
    struct lx *x = ud;
    if (!x->in_enabled || len <= 0) return;
    size_t n = (size_t)len, room = sizeof x->text - 1 - x->tlen;
    if (n > room) return lx_stop(x, "ObjectLockEnabled is too long");
    memcpy(x->text + x->tlen, s, n);
    x->tlen += n;
}

static void XMLCALL lx_end(void *ud, const XML_Char *name)
{
    struct lx *x = ud;
    (void)name;
    if (x->in_enabled && x->depth == 2) {
        x->in_enabled = false;
        x->text[x->tlen] = '\0';
        x->enabled = strcmp(x->text, "Enabled") == 0;
    }
    x->depth--;
}

static void XMLCALL lx_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    lx_stop(ud, "document type declarations are not accepted");
}

int s3_lock_parse_config(const char *xml, size_t len, bool *enabled, struct err *e)
{
    *enabled = false;
    if (len > LOCK_DOC_MAX)
        return err_set(e, ERR_FAIL, "malformed object lock configuration: too large");
    struct lx x = {0};
    x.p = XML_ParserCreateNS(NULL, NS_SEP);
    if (!x.p) return err_set(e, ERR_FAIL, "parsing the object lock configuration: out of memory");
    XML_SetUserData(x.p, &x);
    XML_SetElementHandler(x.p, lx_start, lx_end);
    XML_SetCharacterDataHandler(x.p, lx_text);
    XML_SetStartDoctypeDeclHandler(x.p, lx_doctype);
    if (XML_Parse(x.p, xml, (int)len, XML_TRUE) == XML_STATUS_ERROR && !x.why)
        x.why = XML_ErrorString(XML_GetErrorCode(x.p));
    XML_ParserFree(x.p);
    if (!x.why && !x.root_ok) x.why = "empty document";
    if (x.why) return err_set(e, ERR_FAIL, "malformed object lock configuration: %s", x.why);
    *enabled = x.enabled;
    return 0;
}
