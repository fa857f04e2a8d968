/* s3_xml.c - expat-based parsers for S3 listing pages and error documents; see s3_xml.h. */
#include "backend/s3_xml.h"

#include <expat.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Bodies larger than this are not listings or errors any server would send. */
#define DOC_MAX (64u << 20)
#define DEPTH_MAX 64
/* Separates a namespace URI from the local name in what expat reports; cannot occur in XML. */
#define NS_SEP '\x01'

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

static const struct {
    const char *name;
    enum tag tag;
} tags[] = {
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
    struct s3_xml_run run; /* first: the shared run's state */
    enum tag want_root;    /* T_LIST or T_ERROR */
    int depth;
    enum tag stack[4]; /* tags at depths 1..3 */
    int capture_depth; /* depth whose text is being collected, 0 when none */
    size_t tlen;
    bool overflow;
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
    bool saw_root;
};

void s3_xml_stop(struct s3_xml_run *run, int rc, const char *why)
{
    if (run->rc == 0) {
        run->rc = rc;
        run->why = why;
    }
    XML_StopParser(run->p, XML_FALSE);
}

static void stop(struct px *x, int rc, const char *why)
{
    s3_xml_stop(&x->run, rc, why);
}

static enum tag lookup(const char *name)
{
    const char *local = strrchr(name, NS_SEP);
    local = local ? local + 1 : name;
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        if (strcmp(tags[i].name, local) == 0) return tags[i].tag;
    return T_OTHER;
}

static bool wanted_text(const struct px *x, enum tag t)
{
    if (x->want_root == T_LIST)
        return (x->depth == 3 && x->stack[2] == T_CONTENTS && (t == T_KEY || t == T_SIZE)) ||
               (x->depth == 2 && (t == T_TRUNCATED || t == T_TOKEN));
    return x->depth == 2 && (t == T_CODE || t == T_MESSAGE || t == T_REGION);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct px *x = ud;
    (void)attrs;
    if (++x->depth > DEPTH_MAX) return stop(x, ERR_FAIL, "elements nested too deeply");
    enum tag t = lookup(name);
    if (x->depth < 4) x->stack[x->depth] = t;
    if (x->depth == 1) {
        if (t != x->want_root)
            return stop(x, ERR_FAIL,
                        t == T_ERROR ? "the server sent an error document, not a listing"
                                     : "unexpected document element");
        x->saw_root = true;
    }
    if (x->depth == 2 && x->want_root == T_LIST && t == T_CONTENTS) {
        x->have_key = x->have_size = false;
        x->size = 0;
    }
    if (wanted_text(x, t)) {
        x->capture_depth = x->depth;
        x->tlen = 0;
        x->overflow = false;
    }
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    struct px *x = ud;
    if (x->capture_depth != x->depth || len <= 0) return;
    size_t room = sizeof x->text - 1 - x->tlen;
    size_t n = (size_t)len;
    if (n > room) {
        n = room;
        x->overflow = true;
    }
    memcpy(x->text + x->tlen, s, n);
    x->tlen += n;
}

bool s3_xml_u64(const char *s, uint64_t *v)
{
    uint64_t r = 0;
    if (!*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        unsigned d = (unsigned)(*s - '0');
        if (r > (UINT64_MAX - d) / 10) return false;
        r = r * 10 + d;
    }
    *v = r;
    return true;
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
    x->capture_depth = 0;
    x->text[x->tlen] = '\0';
    switch (t) {
    case T_KEY:
        if (x->overflow || x->tlen > S3_XML_KEY_MAX || x->tlen == 0 || memchr(x->text, 0, x->tlen))
            return stop(x, ERR_FAIL, "listing entry with an empty or overlong key");
        memcpy(x->key, x->text, x->tlen + 1);
        x->have_key = true;
        break;
    case T_SIZE:
        if (!s3_xml_u64(x->text, &x->size))
            return stop(x, ERR_FAIL, "listing entry with a bad size");
        x->have_size = true;
        break;
    case T_TRUNCATED:
        if (strcmp(x->text, "true") != 0 && strcmp(x->text, "false") != 0)
            return stop(x, ERR_FAIL, "IsTruncated is neither true nor false");
        x->page->truncated = x->text[0] == 't';
        break;
    case T_TOKEN:
        if (x->overflow || x->tlen == 0 || memchr(x->text, 0, x->tlen))
            return stop(x, ERR_FAIL, "empty or overlong continuation token");
        free(x->page->next_token);
        x->page->next_token = strdup(x->text);
        if (!x->page->next_token) return stop(x, ERR_FAIL, "out of memory");
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

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    struct px *x = ud;
    enum tag t = lookup(name);
    if (x->capture_depth == x->depth) end_text(x, t);
    if (x->run.rc == 0 && x->depth == 2 && x->want_root == T_LIST && t == T_CONTENTS) {
        if (!x->have_key || !x->have_size)
            return stop(x, ERR_FAIL, "listing entry without Key or Size");
        x->page->entries++;
        int rc = x->cb(x->cb_ctx, x->key, x->size);
        if (rc != 0) return stop(x, rc, NULL);
    }
    x->depth--;
}

/* Object stores never send a DTD; refusing them rules out entity expansion attacks. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    s3_xml_stop(ud, ERR_FAIL, "document type declarations are not accepted");
}

static void XMLCALL on_entity(void *ud, const XML_Char *name, int is_param, const XML_Char *value,
                              int value_len, const XML_Char *base, const XML_Char *sysid,
                              const XML_Char *pubid, const XML_Char *notation)
{
    s3_xml_stop(ud, ERR_FAIL, "entity declarations are not accepted");
}

int s3_xml_run(struct s3_xml_run *run, const char *xml, size_t len, XML_Char ns_sep,
               XML_StartElementHandler start, XML_EndElementHandler end,
               XML_CharacterDataHandler text)
{
    if (len > DOC_MAX) {
        run->why = "document too large";
        return run->rc = ERR_FAIL;
    }
    run->p = ns_sep ? XML_ParserCreateNS(NULL, ns_sep) : XML_ParserCreate(NULL);
    if (!run->p) {
        run->why = "out of memory";
        return run->rc = ERR_FAIL;
    }
    XML_SetUserData(run->p, run);
    XML_SetElementHandler(run->p, start, end);
    XML_SetCharacterDataHandler(run->p, text);
    XML_SetStartDoctypeDeclHandler(run->p, on_doctype);
    XML_SetEntityDeclHandler(run->p, on_entity);
    if (XML_Parse(run->p, xml, (int)len, XML_TRUE) == XML_STATUS_ERROR && run->rc == 0) {
        run->why = XML_ErrorString(XML_GetErrorCode(run->p));
        run->rc = ERR_FAIL;
    }
    XML_ParserFree(run->p);
    run->p = NULL;
    return run->rc;
}

/* Runs expat over the document with this file's handlers. */
static int run(struct px *x, const char *xml, size_t len)
{
    return s3_xml_run(&x->run, xml, len, NS_SEP, on_start, on_end, on_text);
}

int s3_xml_parse_list(const char *xml, size_t len, s3_xml_entry_cb cb, void *ctx,
                      struct s3_list_page *page, struct err *e)
{
    struct px *x = calloc(1, sizeof *x);
    if (!x) return err_set(e, ERR_FAIL, "parsing a listing: out of memory");
    x->want_root = T_LIST;
    x->cb = cb;
    x->cb_ctx = ctx;
    x->page = page;
    int rc = run(x, xml, len);
    if (rc == 0 && !x->saw_root) {
        rc = ERR_FAIL;
        x->run.why = "empty document";
    }
    if (rc == ERR_FAIL && x->run.why)
        err_set(e, ERR_FAIL, "malformed listing from the server: %s", x->run.why);
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
    struct px *x = calloc(1, sizeof *x);
    if (!x) return false;
    x->want_root = T_ERROR;
    x->err = out;
    run(x, xml, len);
    /* A cut-off body still tells us the code when it came first. */
    bool ok = x->saw_root && out->code[0] != '\0';
    free(x);
    if (!ok) memset(out, 0, sizeof *out);
    return ok;
}
