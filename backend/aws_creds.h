/* aws_creds.h - the AWS credentials chain of the S3 backend, in the order of the AWS SDKs'
 * default chain (aws-sdk-go-v2 config/resolve_credentials.go), the one Velero's own uploader
 * uses:
 *  1. keys given as values (AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY [+ AWS_SESSION_TOKEN]);
 *  2. the shared credentials file and profile, when a file or profile was named or
 *     <home>/.aws/credentials exists;
 *  3. web identity (IRSA): role_arn + web_identity_token_file, exchanged at STS with
 *     AssumeRoleWithWebIdentity (the token file is read again at each refresh: the kubelet
 *     rotates it);
 *  4. a container credentials endpoint (EKS Pod Identity, ECS): container_uri, with the
 *     Authorization value from container_token or the file container_token_file (read again
 *     at each refresh);
 *  5. EC2 instance metadata, IMDSv2 only (a session token first), unless imds_disabled.
 * The first source that is configured is used; it is not an error for a later one to be
 * configured too. Temporary credentials (3-5; 1-2 never refresh) are fetched again when fewer
 * than refresh_window_s seconds remain, or half their life has passed if that comes later
 * (cred_http_refresh_at).
 * All settings come in a struct backend_opts (backend.h); nothing here reads the environment.
 */
#ifndef PV_BACKEND_AWS_CREDS_H
#define PV_BACKEND_AWS_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "backend/backend.h"
#include "base/err.h"

/* One set of credentials. Strings are malloc'd and owned by the struct (aws_cred_free). */
struct aws_cred {
    char *access_key, *secret_key;
    char *token;    /* session token, or NULL */
    time_t expires; /* 0: never */
};

/* Frees the strings (the secret is wiped first) and zeroes the struct. NULL-safe. */
void aws_cred_free(struct aws_cred *c);

struct aws_creds;

/* Picks the source from `o` and fetches the first credentials from it, so that a missing or
 * refused identity shows at once. The strings of `o` are copied. `region` is the bucket's
 * region, used for the default STS endpoint (https://sts.<region>.amazonaws.com; NULL: the
 * global https://sts.amazonaws.com). ERR_FAIL with a message that names the source and, from
 * an endpoint that refused, its own code and message (STS's <Code>/<Message>, the endpoint's
 * JSON "code"/"message"). The caller owns *out (aws_creds_close). */
int aws_creds_open(const struct backend_opts *o, const char *region, struct aws_creds **out,
                   struct err *e);

/* Copies the current credentials into *out (the caller frees them with aws_cred_free),
 * fetching new ones first when they are temporary and within the refresh window. One caller
 * refreshes at a time, under the object's mutex; the others wait for its result. When a
 * refresh fails while the old credentials have not yet expired, those are handed out (the
 * next call tries again); once they have expired, the refresh's error is returned.
 * Thread-safe. */
int aws_creds_get(struct aws_creds *c, struct aws_cred *out, struct err *e);

/* Marks the current credentials as stale, so the next aws_creds_get fetches new ones (after a
 * server said ExpiredToken). No effect on credentials that do not expire. Thread-safe. */
void aws_creds_invalidate(struct aws_creds *c);

/* A short name of the source in use ("keys", "credentials file", "web identity", "container
 * endpoint", "instance metadata"), for messages. */
const char *aws_creds_source(const struct aws_creds *c);

/* How many times credentials were fetched (the first included). Thread-safe. */
unsigned long aws_creds_fetches(struct aws_creds *c);

void aws_creds_close(struct aws_creds *c);

/* ---- pure parts, for the tests ---- */

/* Parses an ISO 8601 / RFC 3339 UTC time as the AWS endpoints write it
 * ("2026-12-08T03:04:05Z", with optional fractional seconds, or "+00:00"). */
int aws_creds_parse_time(const char *s, time_t *out);

/* Parses an STS AssumeRoleWithWebIdentity answer: the <Credentials> of a success, or the
 * <Error><Code>/<Message> of an <ErrorResponse> (ERR_FAIL "STS refused: Code: Message").
 * DTDs are refused. On success `out` is filled (free with aws_cred_free). */
int aws_creds_parse_sts(const char *xml, size_t len, struct aws_cred *out, struct err *e);

/* Parses the JSON of a container endpoint or of instance metadata: AccessKeyId,
 * SecretAccessKey, Token, Expiration; an answer with "code"/"message" (or "Code" other than
 * "Success") fails with them. */
int aws_creds_parse_json(const char *json, size_t len, struct aws_cred *out, struct err *e);

#endif
