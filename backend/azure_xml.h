/* azure_xml.h - the parser for the List Blobs pages an Azure Blob Storage server sends
 * (<EnumerationResults><Blobs><Blob><Name>, <Properties><Content-Length>, <NextMarker>).
 * Internal to the Azure backend; a header of its own so that tests and a fuzzer can reach it.
 * Azure's error documents (<Error><Code><Message>) have S3's shape: s3_xml_parse_error reads
 * them. Input is untrusted: lengths are capped, DTDs and entity declarations are refused. */
#ifndef PV_BACKEND_AZURE_XML_H
#define PV_BACKEND_AZURE_XML_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define AZURE_XML_NAME_MAX 1024   /* Azure's own limit on blob names */
#define AZURE_XML_MARKER_MAX 4096 /* markers are opaque; real ones are far shorter */

/* Called for each <Blob> entry; a non-zero return stops parsing and is passed on. */
typedef int (*azure_xml_entry_cb)(void *ctx, const char *name, uint64_t size);

struct azure_list_page {
    char *next_marker; /* <NextMarker>, malloc'd; NULL when empty or absent (the last page) */
    size_t entries;    /* <Blob> elements seen */
};

/* Parses one List Blobs page. Returns 0, the callback's non-zero value, or ERR_FAIL with a
 * message when the document is not a well-formed listing. `page` must be zeroed by the caller
 * and freed with azure_xml_page_free() whatever the result. Thread-safe (no shared state). */
int azure_xml_parse_list(const char *xml, size_t len, azure_xml_entry_cb cb, void *ctx,
                         struct azure_list_page *page, struct err *e);
void azure_xml_page_free(struct azure_list_page *page);

#endif
