/* fuzz_s3_versions.c - libFuzzer target for the S3 version listing parser and the table of
 * versions built from it (--as-of, repair versions), and the Object Lock configuration parser:
 * all read whatever a server, or something pretending to be one, sends back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/s3_lock.h"
#include "backend/s3_versions.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_version(void *ctx, const struct s3_version *v)
{
    size_t k = strlen(v->key), n = strlen(v->version_id);
    /* What is handed out is NUL-terminated, non-empty and within bounds. */
    if (k == 0 || k > S3_VER_KEY_MAX || n == 0 || n > S3_VER_ID_MAX) abort();
    if (v->marker && v->size != 0) abort();
    return s3_vt_add(ctx, v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct s3_versions_page page = {0};
    struct s3_vt *t = s3_vt_new();
    struct err e;
    err_clear(&e);
    if (!t) return 0;
    int rc = s3_versions_parse((const char *)data, size, on_version, t, &page, &e);
    if (rc != 0 && rc != 1 && rc != ERR_FAIL) abort();
    if (rc == ERR_FAIL && e.msg[0] == '\0') abort();
    if ((page.next_key && strlen(page.next_key) > S3_VER_ID_MAX) ||
        (page.next_version && strlen(page.next_version) > S3_VER_ID_MAX))
        abort();
    s3_versions_page_free(&page);
    s3_vt_finish(t);
    /* Every key's choice at any time is one of its own versions, never a marker. */
    for (size_t i = 0; i < s3_vt_keys(t); i++) {
        const char *key = s3_vt_key(t, i);
        const struct s3_version *at = s3_vt_at(t, key, INT64_MAX), *cur = s3_vt_current(t, key);
        if ((at && (at->marker || strcmp(at->key, key) != 0)) || (cur && cur->marker)) abort();
        if (s3_vt_entries(t, i) == 0 || s3_vt_entry(t, i, s3_vt_entries(t, i))) abort();
    }
    s3_vt_free(t);
    bool on;
    rc = s3_lock_parse_config((const char *)data, size, &on, &e);
    if (rc != 0 && rc != ERR_FAIL) abort();
    return 0;
}
