/* s3_xml.h - parsers for the XML bodies an S3 server sends: ListObjectsV2 pages and <Error>
 * documents. Internal to the S3 backend; a header of its own so the fuzzer can reach it.
 * Input is untrusted: lengths are capped, DTDs and entity declarations are refused. */
#ifndef PV_BACKEND_S3_XML_H
#define PV_BACKEND_S3_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define S3_XML_KEY_MAX 1024   /* S3's own limit on key length */
#define S3_XML_TOKEN_MAX 4096 /* continuation tokens are opaque; real ones are far shorter */

/* Called for each <Contents> entry; a non-zero return stops parsing and is passed on. */
typedef int (*s3_xml_entry_cb)(void *ctx, const char *key, uint64_t size);

struct s3_list_page {
    bool truncated;   /* <IsTruncated>true</IsTruncated>: more pages follow */
    char *next_token; /* <NextContinuationToken>, malloc'd, or NULL */
    size_t entries;   /* <Contents> elements seen */
};

/* Parses one ListObjectsV2 page. Returns 0, the callback's non-zero value, or ERR_FAIL with a
 * message when the document is not a well-formed listing. `page` must be zeroed by the caller
 * and freed with s3_xml_page_free() whatever the result. */
int s3_xml_parse_list(const char *xml, size_t len, s3_xml_entry_cb cb, void *ctx,
                      struct s3_list_page *page, struct err *e);
void s3_xml_page_free(struct s3_list_page *page);

struct s3_error {
    char code[128];    /* e.g. "SignatureDoesNotMatch"; empty when absent */
    char message[512]; /* may be empty (Ceph RGW sends none); control bytes replaced by '?' */
    char region[64];   /* <Region>, the bucket's (AWS names it in AuthorizationHeaderMalformed) */
};

/* Reads <Error><Code>..</Code><Message>..</Message>[<Region>..</Region>]</Error>. Returns false
 * (and leaves `out` empty) when the body is not such a document. Longer values are cut. */
bool s3_xml_parse_error(const char *xml, size_t len, struct s3_error *out);

#endif
