/* repoloc.h - from a Velero BackupStorageLocation to a podvault repository and its settings.
 *
 * One repository per volume namespace per location, beside Velero's own (kopia/, restic/):
 *   s3:<s3Url>/<bucket>[/<prefix>]/podvault/<namespace>
 * where s3Url defaults to https://s3.<region>.amazonaws.com. spec.config gives region (default
 * us-east-1), s3ForcePathStyle, insecureSkipTLSVerify and profile (the credentials file section);
 * spec.objectStorage.caCert a PEM bundle (base64). A location whose spec.config.podvaultPath is
 * set names a plain directory instead (tests, or a shared file system mounted on every node):
 *   <podvaultPath>[/<prefix>]/podvault/<namespace>
 * Only S3-compatible providers are served ("aws", "velero.io/aws", "s3", "minio", or any
 * provider with config.s3Url); others fail with a message.
 */
#ifndef PV_AGENT_REPOLOC_H
#define PV_AGENT_REPOLOC_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "base/err.h"

#define REPOLOC_MAX_ARGS 8

struct repoloc {
    char *location;               /* the -r value */
    char *args[REPOLOC_MAX_ARGS]; /* global options for podvault (S3 settings), owned */
    size_t n_args;
    bool s3;       /* needs S3 credentials */
    char *profile; /* credentials file section ("default") */
};

/* Builds the repository of `volume_ns` at `bsl`. A caCert is written to `ca_dir`/ca.pem (0600)
 * and named by --cacert. */
int repoloc_from_bsl(const json_t *bsl, const char *volume_ns, const char *ca_dir,
                     struct repoloc *out, struct err *e);
void repoloc_free(struct repoloc *l);

struct repoloc_creds {
    char *key_id, *secret, *session_token; /* owned; session_token may be NULL */
};

/* Reads the section `profile` of an AWS shared-credentials file (INI text: "[name]" headers,
 * "key = value" lines, '#' and ';' comments). */
int repoloc_parse_credentials(const char *text, const char *profile, struct repoloc_creds *out,
                              struct err *e);
void repoloc_creds_free(struct repoloc_creds *c);

#endif
