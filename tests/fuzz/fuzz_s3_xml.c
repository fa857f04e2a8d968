/* fuzz_s3_xml.c - libFuzzer target for the object stores' XML parsers: S3's listing pages and
 * error documents (which Azure's errors share) and Azure's List Blobs pages, which read whatever
 * a server, or something pretending to be one, sends back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/azure_xml.h"
#include "backend/s3_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
    size_t n;
    uint64_t total;
};

static int on_entry(void *ctx, const char *key, uint64_t size)
{
    struct seen *s = ctx;
    /* Keys handed out are NUL-terminated, non-empty and within S3's (and Azure's) limit. */
    size_t len = strlen(key);
    if (len == 0 || len > S3_XML_KEY_MAX || len > AZURE_XML_NAME_MAX) abort();
    s->n++;
    s->total += size;
    /* Exercise the early stop too. */
    return s->n == 5000 ? 7 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct s3_list_page page = {0};
    struct seen s = {0};
    struct err e;
    err_clear(&e);
    int rc = s3_xml_parse_list((const char *)data, size, on_entry, &s, &page, &e);
    if (rc != 0 && rc != 7 && rc != ERR_FAIL) abort();
    if (rc == ERR_FAIL && e.msg[0] == '\0') abort();
    if (page.entries != s.n) abort();
    if (page.next_token &&
        (strlen(page.next_token) == 0 || strlen(page.next_token) > S3_XML_TOKEN_MAX))
        abort();
    s3_xml_page_free(&page);

    struct azure_list_page az = {0};
    struct seen as = {0};
    rc = azure_xml_parse_list((const char *)data, size, on_entry, &as, &az, &e);
    if (rc != 0 && rc != 7 && rc != ERR_FAIL) abort();
    if (rc == ERR_FAIL && e.msg[0] == '\0') abort();
    if (az.entries != as.n) abort();
    if (az.next_marker &&
        (strlen(az.next_marker) == 0 || strlen(az.next_marker) > AZURE_XML_MARKER_MAX))
        abort();
    azure_xml_page_free(&az);

    struct s3_error er;
    if (s3_xml_parse_error((const char *)data, size, &er)) {
        if (er.code[0] == '\0' || strlen(er.code) >= sizeof er.code) abort();
        for (const char *p = er.message; *p; p++)
            if ((unsigned char)*p < 0x20) abort();
    }
    return 0;
}
