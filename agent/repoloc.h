/* repoloc.h - from a Velero BackupStorageLocation to a podvault repository and its settings.
 *
 * One repository per volume namespace per location, in the folder Velero leaves to plugins:
 *   s3:<s3Url>/<bucket>[/<prefix>]/plugins/podvault/<namespace>
 * Velero's BSL controller marks a location Unavailable when its prefix holds any top-level
 * folder but backups, restores, restic, metadata, plugins and kopia (velero
 * pkg/persistence/object_store_layout.go, object_store.go IsValid), and kopia/ and restic/ are
 * Velero's own repositories: nothing of podvault's goes anywhere but plugins/podvault/.
 * s3Url defaults to https://s3.<region>.amazonaws.com. spec.config gives region (default
 * us-east-1), s3ForcePathStyle, insecureSkipTLSVerify and profile (the credentials file section);
 * spec.objectStorage.caCert a PEM bundle (base64). A location whose spec.config.podvaultPath is
 * set names a plain directory instead (tests, or a shared file system mounted on every node):
 *   <podvaultPath>[/<prefix>]/plugins/podvault/<namespace>
 * Earlier builds used <prefix>/podvault/<namespace> (REPOLOC_LEGACY_DIR): repositories
 * there are never used, only named in errors with the command that moves them.
 * S3-compatible providers are served ("aws", "velero.io/aws", "s3", "minio", or any provider
 * with config.s3Url), and Azure Blob Storage ("azure", "velero.io/azure"):
 *   azure:<bucket = container>[/<prefix>]/plugins/podvault/<namespace>
 * as Velero reads an azure location (velero pkg/util/azure/storage.go): config.storageAccount
 * (required), config.storageAccountURI (else https://<account>.blob.<the suffix of the
 * credentials' AZURE_CLOUD_NAME>), and the account key from the credentials file's line named by
 * config.storageAccountKeyEnvVar. Velero's other ways, useAAD (Microsoft Entra ID) and a key
 * fetched through Azure Resource Manager with resourceGroup and subscriptionId, fail with a
 * message. Other providers fail with a message.
 */
#ifndef PV_AGENT_REPOLOC_H
#define PV_AGENT_REPOLOC_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "base/err.h"

#define REPOLOC_MAX_ARGS 8
#define REPOLOC_MAX_INIT_ARGS 4
#define REPOLOC_DIR "plugins/podvault" /* under the location's prefix */
#define REPOLOC_LEGACY_DIR "podvault"  /* where earlier builds put repositories */

struct repoloc {
    char *location;  /* the -r value */
    char *root;      /* the location's prefix as a backend location: Velero's backups/ are here */
    char *base;      /* <root>/plugins/podvault: the parent of every namespace's repository */
    char *legacy;    /* <root>/podvault[/<namespace>]: the old place, for the move message */
    char *move_hint; /* a shell command that moves `legacy` to `location` */
    char *args[REPOLOC_MAX_ARGS]; /* global options for podvault (S3 settings), owned */
    size_t n_args;
    /* options for `podvault init` when the agent creates the repository: --object-lock DAYS
     * [--object-lock-mode M] from the annotations podvault.io/object-lock-days / -mode
     * (docs/AGENT.md, "Immutable repositories"), owned */
    char *init_args[REPOLOC_MAX_INIT_ARGS];
    size_t n_init_args;
    bool s3;       /* needs S3 credentials */
    char *profile; /* credentials file section ("default") */
    /* Azure: the storage account, its blob endpoint (NULL: from the credentials' cloud), and
     * the credentials file's variable that holds the account key (NULL with azure_aad: config
     * useAAD, Microsoft Entra ID); owned. */
    bool azure, azure_aad;
    char *azure_account, *azure_endpoint, *azure_key_var;
};

/* Builds the repository of `volume_ns` at `bsl` (with `volume_ns` NULL: `location` is `base`,
 * for jobs over every repository of the location). A caCert is written to `ca_dir`/ca.pem
 * (0600) and named by --cacert. All strings are owned by `out` (repoloc_free). */
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

/* The value of `var` in Velero's Azure credentials file (dotenv text: "NAME=value" lines,
 * optional "export ", '#' comments, values optionally quoted). *out is owned by the caller
 * (NULL when the file has no such line, which is not an error). */
int repoloc_azure_var(const char *text, const char *var, char **out, struct err *e);

/* The blob endpoint of `account` in the Azure cloud that the credentials' AZURE_CLOUD_NAME names
 * (AzurePublicCloud, the default; AzureChinaCloud; AzureUSGovernmentCloud), as Velero's
 * pkg/util/azure/util.go picks it. *out owned by the caller. */
int repoloc_azure_endpoint(const char *cloud_name, const char *account, char **out, struct err *e);

#endif
