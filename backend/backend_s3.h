/* backend_s3.h - the names of the variables from which a program's edge takes the S3 backend's
 * settings (backend_opts_from_vars, backend.h); the backend itself reads only the struct
 * backend_opts it is opened with.
 *
 * Location: "s3:http[s]://host[:port]/bucket[/prefix]" ("s3:host/bucket" means https). Objects
 * are the keys "<prefix>/<name>". Path-style URLs (http://host/bucket/key) unless virtual-hosted
 * addressing (http://bucket.host/key) is asked for, or the host is an amazonaws.com name given
 * without a port and the bucket name has no dot.
 *
 * Credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) when set; else the
 * shared credentials file (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials from HOME),
 * section AWS_PROFILE (default "default"), keys aws_access_key_id, aws_secret_access_key and
 * aws_session_token; else web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), a
 * container credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI) or EC2 instance metadata:
 * the chain of backend/aws_creds.h. A CLI option given beside a variable wins over it.
 *
 * Region: the option, else PODVAULT_S3_REGION, AWS_REGION, AWS_DEFAULT_REGION; with none, the
 * bucket is asked at open (x-amz-bucket-region, or the <Region> of AuthorizationHeaderMalformed),
 * and a server that names none is signed for us-east-1. AWS_ENDPOINT_URL_S3 replaces the
 * location's scheme and host.
 */
#ifndef PV_BACKEND_BACKEND_S3_H
#define PV_BACKEND_BACKEND_S3_H

/* Region used in signatures; the first one set wins, then the bucket's own (see above). */
#define BACKEND_S3_ENV_REGION "PODVAULT_S3_REGION" /* then AWS_REGION, AWS_DEFAULT_REGION */
/* "1": virtual-hosted addressing; "0": path-style; unset: decided from the host (see above). */
#define BACKEND_S3_ENV_VIRTUAL_HOST "PODVAULT_S3_VIRTUAL_HOST"
/* A PEM file of CA certificates for private endpoints (AWS_CA_BUNDLE is read too). */
#define BACKEND_S3_ENV_CACERT "PODVAULT_S3_CACERT"
/* "1": do not verify the server's TLS certificate. Only when the user asks. */
#define BACKEND_S3_ENV_INSECURE_TLS "PODVAULT_S3_INSECURE_TLS"
/* Retries after a failed attempt (5xx, 429, SlowDown, timeouts, resets); default 6, max 100. */
#define BACKEND_S3_ENV_RETRIES "PODVAULT_S3_RETRIES"
/* First backoff delay and its cap, in milliseconds; default 100 and 10000. */
#define BACKEND_S3_ENV_RETRY_DELAY_MS "PODVAULT_S3_RETRY_DELAY_MS"
#define BACKEND_S3_ENV_RETRY_MAX_DELAY_MS "PODVAULT_S3_RETRY_MAX_DELAY_MS"
/* Seconds during which answers that ask the client to slow down (HTTP 503 or 429, SlowDown and
 * the other throttling codes) are still retried once the retries above are used up, counted
 * from a request's first attempt; default 300, 0..86400 (0: the retry count alone decides). */
#define BACKEND_S3_ENV_THROTTLE_TIME "PODVAULT_S3_THROTTLE_TIME"
/* Seconds to wait for a connection (default 10), and seconds without a single byte moving
 * before a request is abandoned as hung (default 60). */
#define BACKEND_S3_ENV_CONNECT_TIMEOUT "PODVAULT_S3_CONNECT_TIMEOUT"
#define BACKEND_S3_ENV_STALL_TIMEOUT "PODVAULT_S3_STALL_TIMEOUT"
/* Keys asked for per listing page, 1..1000 (default 1000); small values test pagination. */
#define BACKEND_S3_ENV_LIST_MAX "PODVAULT_S3_LIST_MAX"
/* Uploads a backup keeps in flight at once (default 4, 1..64). */
#define BACKEND_S3_ENV_UPLOADS "PODVAULT_S3_UPLOADS"
/* Segments of packs a restore fetches ahead at once (default 2, 1..16); each holds up to 4 MiB,
 * and two more are kept for the reads in progress. From a distant server more go faster
 * (measurements in bench/README.md). */
#define BACKEND_S3_ENV_DOWNLOADS "PODVAULT_S3_DOWNLOADS"
/* Seconds before temporary AWS credentials expire at which new ones are fetched (default 300,
 * as the AWS SDKs' expiry window; 0..3000). Small values let tests see a refresh. */
#define BACKEND_S3_ENV_REFRESH_WINDOW "PODVAULT_AWS_REFRESH_WINDOW_S"

#endif
