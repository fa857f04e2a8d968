/* xmlscan.c - the SAX plumbing shared by the backends' XML decoders; see xmlscan.h. */
#include "backend/xmlscan.h"

#include <expat.h>
#include <string.h>

/* Separates a namespace URI from the local name in what expat reports; cannot occur in XML. */
#define NS_SEP '\x01'

void xs_stop(struct xs *x, int rc, const char *why)
{
    if (x->rc == 0) {
        x->rc = rc;
        x->why = why;
    }
    if (x->parser) XML_StopParser(x->parser, XML_FALSE);
}

void xs_capture(struct xs *x)
{
    x->capture = x->depth;
    x->tlen = 0;
    x->overflow = false;
}

int xs_tag(const struct xs *x, int depth)
{
    return depth > 0 && depth <= XS_DEPTH_MAX ? x->stack[depth] : 0;
}

int xs_find(const struct xs_name *names, size_t n, const char *local, int other)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i].name, local) == 0) return names[i].tag;
    return other;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct xs *x = ud;
    (void)attrs;
    if (++x->depth > XS_DEPTH_MAX) return xs_stop(x, ERR_FAIL, "elements nested too deeply");
    if (x->depth == 1) x->saw_root = true;
    const char *local = x->ns ? strrchr(name, NS_SEP) : NULL;
    x->stack[x->depth] = x->on_start(x, local ? local + 1 : name);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    struct xs *x = ud;
    if (x->capture != x->depth || len <= 0) return;
    size_t room = x->cap - x->tlen, n = (size_t)len;
    if (n > room) {
        n = room;
        x->overflow = true;
    }
    memcpy(x->text + x->tlen, s, n);
    x->tlen += n;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    struct xs *x = ud;
    (void)name;
    bool captured = x->capture == x->depth;
    if (captured) {
        x->capture = 0;
        x->text[x->tlen] = '\0';
    }
    x->on_end(x, xs_tag(x, x->depth), captured);
    x->depth--;
}

/* No server sends a DTD; refusing them rules out entity expansion attacks. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    xs_stop(ud, ERR_FAIL, "document type declarations are not accepted");
}

static void XMLCALL on_entity(void *ud, const XML_Char *name, int is_param, const XML_Char *value,
                              int value_len, const XML_Char *base, const XML_Char *sysid,
                              const XML_Char *pubid, const XML_Char *notation)
{
    xs_stop(ud, ERR_FAIL, "entity declarations are not accepted");
}

int xs_run(struct xs *x, const char *xml, size_t len)
{
    if (len > XS_DOC_MAX) {
        x->why = "document too large";
        return x->rc = ERR_FAIL;
    }
    XML_Parser p = x->ns ? XML_ParserCreateNS(NULL, NS_SEP) : XML_ParserCreate(NULL);
    if (!p) {
        x->why = "out of memory";
        return x->rc = ERR_FAIL;
    }
    x->parser = p;
    XML_SetUserData(p, x);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_text);
    XML_SetStartDoctypeDeclHandler(p, on_doctype);
    XML_SetEntityDeclHandler(p, on_entity);
    if (XML_Parse(p, xml, (int)len, XML_TRUE) == XML_STATUS_ERROR && x->rc == 0) {
        x->why = XML_ErrorString(XML_GetErrorCode(p));
        x->rc = ERR_FAIL;
    }
    XML_ParserFree(p);
    x->parser = NULL;
    return x->rc;
}

int xs_parse(struct xs *x, const char *xml, size_t len, const char *what, struct err *e)
{
    int rc = xs_run(x, xml, len);
    if (rc == 0 && !x->saw_root) {
        x->why = "empty document";
        rc = x->rc = ERR_FAIL;
    }
    if (rc == ERR_FAIL && x->why) err_set(e, ERR_FAIL, "%s: %s", what, x->why);
    return rc;
}

bool xs_text_ok(const struct xs *x, size_t max)
{
    return !x->overflow && x->tlen <= max && !memchr(x->text, 0, x->tlen);
}

bool xs_take(const struct xs *x, char *dst, size_t max)
{
    if (x->tlen == 0 || !xs_text_ok(x, max)) return false;
    memcpy(dst, x->text, x->tlen + 1);
    return true;
}

bool xs_u64(const char *s, uint64_t *v)
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

bool xs_bool(const char *s, bool *v)
{
    if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0) return false;
    *v = s[0] == 't';
    return true;
}
