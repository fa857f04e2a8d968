/* s3_xml.c - expat-based parsers for S3 listing pages and error documents; see s3_xml.h. */
#include "backend/s3_xml.h"

#include <stdlib.h>
#include <string.h>

#include "backend/xmlscan.h"

enum tag {
    T_OTHER,
    T_LIST, /* ListBucketResult */
    T_CONTENTS,
    T_KEY,
    T_SIZE,
    T_TRUNCATED,
    T_TOKEN, /* NextContinuationToken */
    T_ERROR,
    T_CODE,
    T_MESSAGE,
    T_REGION, /* in an error: the bucket's region (AWS's AuthorizationHeaderMalformed) */
};

static const struct xs_name tags[] = {
    {"ListBucketResult", T_LIST},
    {"Contents", T_CONTENTS},
    {"Key", T_KEY},
    {"Size", T_SIZE},
    {"IsTruncated", T_TRUNCATED},
    {"NextContinuationToken", T_TOKEN},
    {"Error", T_ERROR},
    {"Code", T_CODE},
    {"Message", T_MESSAGE},
    {"Region", T_REGION},
};

struct px {
    struct xs xs;       /* first: the handlers get &px->xs */
    enum tag want_root; /* T_LIST or T_ERROR */
    char text[S3_XML_TOKEN_MAX + 1];
    /* listing */
    s3_xml_entry_cb cb;
    void *cb_ctx;
    struct s3_list_page *page;
    bool have_key, have_size;
    uint64_t size;
    char key[S3_XML_KEY_MAX + 1];
    /* error document */
    struct s3_error *err;
};

static bool wanted_text(const struct px *x, enum tag t)
{
    int depth = x->xs.depth;
    if (x->want_root == T_LIST)
        return (depth == 3 && xs_tag(&x->xs, 2) == T_CONTENTS && (t == T_KEY || t == T_SIZE)) ||
               (depth == 2 && (t == T_TRUNCATED || t == T_TOKEN));
    return depth == 2 && (t == T_CODE || t == T_MESSAGE || t == T_REGION);
}

static int on_start(struct xs *s, const char *local)
{
    struct px *x = (struct px *)s;
    enum tag t = (enum tag)xs_find(tags, sizeof tags / sizeof tags[0], local, T_OTHER);
    if (s->depth == 1 && t != x->want_root) {
        xs_stop(s, ERR_FAIL,
                t == T_ERROR ? "the server sent an error document, not a listing"
                             : "unexpected document element");
        return t;
    }
    if (s->depth == 2 && x->want_root == T_LIST && t == T_CONTENTS) {
        x->have_key = x->have_size = false;
        x->size = 0;
    }
    if (wanted_text(x, t)) xs_capture(s);
    return t;
}

/* Copies collected text for display: cut to fit, control bytes made visible as '?'. */
static void copy_display(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    dst[i] = '\0';
}

static void end_text(struct px *x, enum tag t)
{
    struct xs *s = &x->xs;
    switch (t) {
    case T_KEY:
        if (!xs_take(s, x->key, S3_XML_KEY_MAX))
            return xs_stop(s, ERR_FAIL, "listing entry with an empty or overlong key");
        x->have_key = true;
        break;
    case T_SIZE:
        if (!xs_u64(x->text, &x->size))
            return xs_stop(s, ERR_FAIL, "listing entry with a bad size");
        x->have_size = true;
        break;
    case T_TRUNCATED:
        if (!xs_bool(x->text, &x->page->truncated))
            return xs_stop(s, ERR_FAIL, "IsTruncated is neither true nor false");
        break;
    case T_TOKEN:
        if (s->tlen == 0 || !xs_text_ok(s, S3_XML_TOKEN_MAX))
            return xs_stop(s, ERR_FAIL, "empty or overlong continuation token");
        free(x->page->next_token);
        x->page->next_token = strdup(x->text);
        if (!x->page->next_token) return xs_stop(s, ERR_FAIL, "out of memory");
        break;
    case T_CODE:
        copy_display(x->err->code, sizeof x->err->code, x->text);
        break;
    case T_MESSAGE:
        copy_display(x->err->message, sizeof x->err->message, x->text);
        break;
    case T_REGION:
        copy_display(x->err->region, sizeof x->err->region, x->text);
        break;
    default:
        break;
    }
}

static void on_end(struct xs *s, int tag, bool captured)
{
    struct px *x = (struct px *)s;
    enum tag t = (enum tag)tag;
    if (captured) end_text(x, t);
    if (s->rc == 0 && s->depth == 2 && x->want_root == T_LIST && t == T_CONTENTS) {
        if (!x->have_key || !x->have_size)
            return xs_stop(s, ERR_FAIL, "listing entry without Key or Size");
        x->page->entries++;
        int rc = x->cb(x->cb_ctx, x->key, x->size);
        if (rc != 0) return xs_stop(s, rc, NULL);
    }
}

/* A zeroed decoder for documents whose element is `root`; NULL when out of memory. */
static struct px *px_new(enum tag root)
{
    struct px *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->xs = (struct xs){.on_start = on_start,
                        .on_end = on_end,
                        .text = x->text,
                        .cap = S3_XML_TOKEN_MAX,
                        .ns = true};
    x->want_root = root;
    return x;
}

int s3_xml_parse_list(const char *xml, size_t len, s3_xml_entry_cb cb, void *ctx,
                      struct s3_list_page *page, struct err *e)
{
    struct px *x = px_new(T_LIST);
    if (!x) return err_set(e, ERR_FAIL, "parsing a listing: out of memory");
    x->cb = cb;
    x->cb_ctx = ctx;
    x->page = page;
    int rc = xs_parse(&x->xs, xml, len, "malformed listing from the server", e);
    free(x);
    return rc;
}

void s3_xml_page_free(struct s3_list_page *page)
{
    free(page->next_token);
    page->next_token = NULL;
}

bool s3_xml_parse_error(const char *xml, size_t len, struct s3_error *out)
{
    memset(out, 0, sizeof *out);
    struct px *x = px_new(T_ERROR);
    if (!x) return false;
    x->err = out;
    xs_run(&x->xs, xml, len);
    /* A cut-off body still tells us the code when it came first. */
    bool ok = x->xs.saw_root && out->code[0] != '\0';
    free(x);
    if (!ok) memset(out, 0, sizeof *out);
    return ok;
}
