/* cred_http.h - one small HTTP exchange with a credentials endpoint (AWS STS, EC2 instance
 * metadata, EKS Pod Identity, Microsoft Entra ID, Azure managed identity): the shared transport
 * of aws_creds.c and azure_token.c. Answers are small (at most CRED_HTTP_BODY_MAX bytes) and
 * each exchange is bounded in time. Connection failures and 5xx/429 answers are tried again a
 * few times (the AWS SDKs' default retryer does the same for these endpoints); any other answer,
 * 4xx included, is returned to the caller, which reads the endpoint's own error from its body.
 *
 * Thread-safety: each call uses its own curl handle; calls may run in parallel. */
#ifndef PV_BACKEND_CRED_HTTP_H
#define PV_BACKEND_CRED_HTTP_H

#include <stdbool.h>
#include <time.h>

#include "base/buf.h"
#include "base/err.h"

#define CRED_HTTP_BODY_MAX (256u << 10)

struct cred_http_req {
    const char *method;         /* "GET", "POST" or "PUT" */
    const char *url;            /* http or https only */
    const char *const *headers; /* "Name: value" lines, NULL-terminated; may be NULL */
    const char *body;           /* NUL-terminated, or NULL for none */
    const char *cacert;         /* PEM file of CA certificates; NULL: the system's */
    bool insecure_tls;          /* do not verify the server's certificate */
    long timeout_s;             /* for the whole exchange (connect included), >= 1 */
    int attempts;               /* >= 1 */
    const char *what;           /* for messages: "the STS AssumeRoleWithWebIdentity" */
};

/* Runs the exchange. On an answer (whatever its status), returns 0 with *status set and the
 * body in `out` (appended; the caller owns out). ERR_FAIL when no answer came after the
 * attempts (the message names req->what, the URL and curl's reason) or the body is larger
 * than CRED_HTTP_BODY_MAX. */
int cred_http_do(const struct cred_http_req *req, long *status, struct buf *out, struct err *e);

/* Copies `s` (an answer's text, for a message) with control bytes replaced by '?', cut to
 * cap-1 bytes. */
void cred_http_clean(char *dst, size_t cap, const char *s, size_t len);

/* Appends "name=<value, form-encoded>" to an application/x-www-form-urlencoded body, with a
 * '&' before it unless the body is empty. -1 when out of memory. */
int cred_http_form_add(struct buf *b, const char *name, const char *value);

#define CRED_HTTP_TOKEN_MAX (64u << 10)

/* Reads a token file (a Kubernetes projected service account token, a Pod Identity token):
 * its content without trailing white space, malloc'd into *out. ERR_FAIL naming `what` and
 * the path when it cannot be read, is empty or is larger than CRED_HTTP_TOKEN_MAX. */
int cred_http_read_token(const char *path, const char *what, char **out, struct err *e);

/* When credentials fetched at `fetched` that expire at `expires` (0: never) are to be fetched
 * again: `window_s` before they expire, but no earlier than half their life, so that short-lived
 * ones are not fetched again for every request. 0 for never. Pure. */
time_t cred_http_refresh_at(time_t expires, time_t fetched, long window_s);

#endif
