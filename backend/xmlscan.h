/* xmlscan.h - the SAX plumbing the backends' XML decoders share (S3 listings and errors, Azure
 * List Blobs, S3 ListObjectVersions): expat set-up with limits, element depth, one token per
 * element, bounded text capture with an overflow flag, and the first failure's reason.
 * Input is untrusted: documents over XS_DOC_MAX bytes, nesting over XS_DEPTH_MAX, DTDs and
 * entity declarations are refused. A decoder embeds a struct xs, fills in its handlers and
 * buffer, and calls xs_run; the handlers read and steer the scan with the functions below. */
#ifndef PV_BACKEND_XMLSCAN_H
#define PV_BACKEND_XMLSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define XS_DOC_MAX (64u << 20) /* no listing or error document a server sends is larger */
#define XS_DEPTH_MAX 64

/* An element name (its local part, without namespace) and the decoder's token for it. */
struct xs_name {
    const char *name;
    int tag;
};

struct xs;
/* Called at each start tag, after the depth was raised; returns the element's token, which the
 * scan keeps for the element's end and its children (xs_tag). May call xs_capture, xs_stop. */
typedef int (*xs_start_fn)(struct xs *x, const char *local);
/* Called at each end tag, before the depth is lowered, with the element's token. When its text
 * was captured, x->text holds it NUL-terminated and `captured` is true. May call xs_stop. */
typedef void (*xs_end_fn)(struct xs *x, int tag, bool captured);

/* One scan. The decoder sets on_start, on_end, text (a buffer of cap + 1 bytes it owns), cap,
 * ns (true: names are reported without their namespace URI), and everything else to zero. */
struct xs {
    xs_start_fn on_start;
    xs_end_fn on_end;
    char *text;
    size_t cap;
    bool ns;
    /* state, read by the handlers */
    int depth;                   /* of the current element, 1 for the document element */
    int stack[XS_DEPTH_MAX + 1]; /* stack[d]: the token of the element at depth d */
    size_t tlen;                 /* bytes in text; at most cap */
    bool overflow;               /* the text was longer than cap and was cut */
    bool saw_root;               /* the document element started */
    int rc;                      /* 0, ERR_FAIL, or a callback's value given to xs_stop */
    const char *why;             /* static text: what was wrong with the document, or NULL */
    void *parser;                /* expat's, while xs_run runs */
    int capture;                 /* depth whose text is being collected, 0 when none */
};

/* Runs the scan over `len` bytes of `xml`. Returns x->rc: 0, the value of the first xs_stop,
 * or ERR_FAIL with x->why set when the document is too large, malformed, or memory ran out.
 * Does not check the document element: the handlers do. Allocates only inside, frees all.
 * Thread-safe: no state outside x. */
int xs_run(struct xs *x, const char *xml, size_t len);

/* xs_run for a decoder's public function: a document without an element is ERR_FAIL too
 * ("empty document"), and an ERR_FAIL with its reason is put in e as "<what>: <reason>"
 * (`what` names the document, e.g. "malformed listing from the server"). Returns as xs_run. */
int xs_parse(struct xs *x, const char *xml, size_t len, const char *what, struct err *e);

/* Stops the scan with `rc` and the static reason `why` (may be NULL); the first stop wins. */
void xs_stop(struct xs *x, int rc, const char *why);

/* Collects the text of the current element (at the current depth only) from here on. */
void xs_capture(struct xs *x);

/* The token of the element at `depth` (0 or out of range: 0). */
int xs_tag(const struct xs *x, int depth);

/* The token for `local` in a table of n names, or `other` when it is not there. */
int xs_find(const struct xs_name *names, size_t n, const char *local, int other);

/* True when the captured text is complete, at most `max` bytes and free of NUL bytes. */
bool xs_text_ok(const struct xs *x, size_t max);

/* Copies the captured text into dst (max + 1 bytes) when it is xs_text_ok and not empty. */
bool xs_take(const struct xs *x, char *dst, size_t max);

/* Parses decimal digits only (no sign, no spaces) that fit in 64 bits. */
bool xs_u64(const char *s, uint64_t *v);

/* Parses "true" or "false". */
bool xs_bool(const char *s, bool *v);

#endif
