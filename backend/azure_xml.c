/* azure_xml.c - the expat-based parser of Azure List Blobs pages; see azure_xml.h. */
#include "backend/azure_xml.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend/xmlscan.h"

/* The elements that matter, by depth: 1 EnumerationResults, 2 Blobs or NextMarker, 3 Blob,
 * 4 Name or Properties, 5 Content-Length. */
enum tag { T_OTHER, T_ROOT, T_BLOBS, T_MARKER, T_BLOB, T_NAME, T_PROPS, T_LENGTH };

static const struct {
    const char *name;
    int depth;
    enum tag parent, tag;
} tags[] = {
    {"EnumerationResults", 1, T_OTHER, T_ROOT},
    {"Blobs", 2, T_ROOT, T_BLOBS},
    {"NextMarker", 2, T_ROOT, T_MARKER},
    {"Blob", 3, T_BLOBS, T_BLOB},
    {"Name", 4, T_BLOB, T_NAME},
    {"Properties", 4, T_BLOB, T_PROPS},
    {"Content-Length", 5, T_PROPS, T_LENGTH},
};

struct ax {
    struct xs xs; /* first: the handlers get &ax->xs */
    char text[AZURE_XML_MARKER_MAX + 1];
    azure_xml_entry_cb cb;
    void *cb_ctx;
    struct azure_list_page *page;
    bool have_name, have_size;
    uint64_t size;
    char name[AZURE_XML_NAME_MAX + 1];
};

/* Names count only where the listing has them: at their depth, under their parent. */
static enum tag lookup(const struct xs *s, const char *name)
{
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        if (tags[i].depth == s->depth && (int)tags[i].parent == xs_tag(s, s->depth - 1) &&
            strcmp(tags[i].name, name) == 0)
            return tags[i].tag;
    return T_OTHER;
}

static int on_start(struct xs *s, const char *name)
{
    struct ax *x = (struct ax *)s;
    enum tag t = lookup(s, name);
    if (s->depth == 1 && t != T_ROOT) {
        xs_stop(s, ERR_FAIL,
                strcmp(name, "Error") == 0 ? "the server sent an error document, not a listing"
                                           : "unexpected document element");
        return t;
    }
    if (t == T_BLOB) {
        x->have_name = x->have_size = false;
        x->size = 0;
    }
    if (t == T_NAME || t == T_LENGTH || t == T_MARKER) xs_capture(s);
    return t;
}

static void end_text(struct ax *x, enum tag t)
{
    struct xs *s = &x->xs;
    if (t == T_NAME) {
        if (!xs_take(s, x->name, AZURE_XML_NAME_MAX))
            return xs_stop(s, ERR_FAIL, "listing entry with an empty or overlong name");
        x->have_name = true;
    } else if (t == T_LENGTH) {
        if (!xs_u64(x->text, &x->size))
            return xs_stop(s, ERR_FAIL, "listing entry with a bad Content-Length");
        x->have_size = true;
    } else if (t == T_MARKER && s->tlen > 0) {
        if (!xs_text_ok(s, AZURE_XML_MARKER_MAX))
            return xs_stop(s, ERR_FAIL, "overlong NextMarker");
        free(x->page->next_marker);
        if (!(x->page->next_marker = strdup(x->text))) return xs_stop(s, ERR_FAIL, "out of memory");
    }
}

static void on_end(struct xs *s, int tag, bool captured)
{
    struct ax *x = (struct ax *)s;
    enum tag t = (enum tag)tag;
    if (captured) end_text(x, t);
    if (s->rc == 0 && t == T_BLOB) {
        if (!x->have_name || !x->have_size)
            return xs_stop(s, ERR_FAIL, "listing entry without Name or Content-Length");
        x->page->entries++;
        int rc = x->cb(x->cb_ctx, x->name, x->size);
        if (rc != 0) return xs_stop(s, rc, NULL);
    }
}

int azure_xml_parse_list(const char *xml, size_t len, azure_xml_entry_cb cb, void *ctx,
                         struct azure_list_page *page, struct err *e)
{
    struct ax *x = calloc(1, sizeof *x);
    if (!x) return err_set(e, ERR_FAIL, "parsing a listing: out of memory");
    x->xs = (struct xs){
        .on_start = on_start, .on_end = on_end, .text = x->text, .cap = AZURE_XML_MARKER_MAX};
    x->cb = cb;
    x->cb_ctx = ctx;
    x->page = page;
    int rc = xs_parse(&x->xs, xml, len, "malformed listing from the server", e);
    free(x);
    return rc;
}

void azure_xml_page_free(struct azure_list_page *page)
{
    free(page->next_marker);
    page->next_marker = NULL;
}
