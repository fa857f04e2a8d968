/* azure_xml.c - the expat-based parser of Azure List Blobs pages; see azure_xml.h. */
#include "backend/azure_xml.h"

#include <expat.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend/s3_xml.h"

#define DEPTH_MAX 64

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
    struct s3_xml_run run; /* first: the shared run's state (s3_xml.h) */
    int depth;
    enum tag stack[DEPTH_MAX + 1]; /* stack[d]: the tag at depth d */
    bool capturing, overflow;
    size_t tlen;
    char text[AZURE_XML_MARKER_MAX + 1];
    azure_xml_entry_cb cb;
    void *cb_ctx;
    struct azure_list_page *page;
    bool have_name, have_size, saw_root;
    uint64_t size;
    char name[AZURE_XML_NAME_MAX + 1];
};

static void stop(struct ax *x, int rc, const char *why)
{
    s3_xml_stop(&x->run, rc, why);
}

static enum tag lookup(const struct ax *x, const char *name)
{
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        if (tags[i].depth == x->depth && tags[i].parent == x->stack[x->depth - 1] &&
            strcmp(tags[i].name, name) == 0)
            return tags[i].tag;
    return T_OTHER;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct ax *x = ud;
    (void)attrs;
    if (++x->depth > DEPTH_MAX) return stop(x, ERR_FAIL, "elements nested too deeply");
    enum tag t = lookup(x, name);
    x->stack[x->depth] = t;
    if (x->depth == 1) {
        if (t != T_ROOT)
            return stop(x, ERR_FAIL,
                        strcmp(name, "Error") == 0
                            ? "the server sent an error document, not a listing"
                            : "unexpected document element");
        x->saw_root = true;
    }
    if (t == T_BLOB) {
        x->have_name = x->have_size = false;
        x->size = 0;
    }
    x->capturing = t == T_NAME || t == T_LENGTH || t == T_MARKER;
    x->tlen = 0;
    x->overflow = false;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    struct ax *x = ud;
    if (!x->capturing || len <= 0) return;
    size_t room = sizeof x->text - 1 - x->tlen, n = (size_t)len;
    if (n > room) {
        n = room;
        x->overflow = true;
    }
    memcpy(x->text + x->tlen, s, n);
    x->tlen += n;
}

static void end_text(struct ax *x, enum tag t)
{
    x->capturing = false;
    x->text[x->tlen] = '\0';
    bool bad = x->overflow || memchr(x->text, 0, x->tlen);
    if (t == T_NAME) {
        if (bad || x->tlen == 0 || x->tlen > AZURE_XML_NAME_MAX)
            return stop(x, ERR_FAIL, "listing entry with an empty or overlong name");
        memcpy(x->name, x->text, x->tlen + 1);
        x->have_name = true;
    } else if (t == T_LENGTH) {
        if (!s3_xml_u64(x->text, &x->size))
            return stop(x, ERR_FAIL, "listing entry with a bad Content-Length");
        x->have_size = true;
    } else if (t == T_MARKER && x->tlen > 0) {
        if (bad) return stop(x, ERR_FAIL, "overlong NextMarker");
        free(x->page->next_marker);
        if (!(x->page->next_marker = strdup(x->text))) return stop(x, ERR_FAIL, "out of memory");
    }
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    struct ax *x = ud;
    (void)name;
    enum tag t = x->stack[x->depth];
    if (x->capturing) end_text(x, t);
    if (x->run.rc == 0 && t == T_BLOB) {
        if (!x->have_name || !x->have_size)
            return stop(x, ERR_FAIL, "listing entry without Name or Content-Length");
        x->page->entries++;
        int rc = x->cb(x->cb_ctx, x->name, x->size);
        if (rc != 0) return stop(x, rc, NULL);
    }
    x->depth--;
}

int azure_xml_parse_list(const char *xml, size_t len, azure_xml_entry_cb cb, void *ctx,
                         struct azure_list_page *page, struct err *e)
{
    struct ax *x = calloc(1, sizeof *x);
    if (!x) return err_set(e, ERR_FAIL, "parsing a listing: out of memory");
    x->cb = cb;
    x->cb_ctx = ctx;
    x->page = page;
    int rc = s3_xml_run(&x->run, xml, len, 0, on_start, on_end, on_text);
    if (rc == 0 && !x->saw_root) {
        rc = ERR_FAIL;
        x->run.why = "empty document";
    }
    if (rc == ERR_FAIL && x->run.why)
        err_set(e, ERR_FAIL, "malformed listing from the server: %s", x->run.why);
    free(x);
    return rc;
}

void azure_xml_page_free(struct azure_list_page *page)
{
    free(page->next_marker);
    page->next_marker = NULL;
}
