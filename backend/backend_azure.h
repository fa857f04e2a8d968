/* backend_azure.h - the Azure Blob Storage backend's location form and the variables from which
 * a program's edge takes its settings (backend_opts_from_vars, backend.h); the backend itself
 * reads only the struct backend_opts it is opened with.
 *
 * Location: "azure:CONTAINER[/PREFIX]". Objects are the block blobs "<PREFIX>/<name>" of the
 * container. CONTAINER: 3 to 63 of a-z 0-9 and '-' (Azure's rule), PREFIX: of A-Z a-z 0-9 - _ .
 * and '/'.
 *
 * Credentials and endpoint, as Azure's own tools name them:
 *  - AZURE_STORAGE_CONNECTION_STRING, "Key=Value;..." with AccountName, AccountKey,
 *    SharedAccessSignature, BlobEndpoint, DefaultEndpointsProtocol (https), EndpointSuffix
 *    (core.windows.net), or UseDevelopmentStorage=true (Azurite on 127.0.0.1:10000). When set,
 *    it is used whole and the variables below are not read.
 *  - else AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY (Shared Key) or AZURE_STORAGE_SAS_TOKEN
 *    (a SAS, sent as given); the endpoint is PODVAULT_AZURE_ENDPOINT when set (a URL such as
 *    http://127.0.0.1:10000/devstoreaccount1), else https://ACCOUNT.blob.core.windows.net.
 *  - else AZURE_STORAGE_ACCOUNT with a Microsoft Entra ID bearer token (backend/azure_token.h):
 *    a client secret or workload identity when AZURE_TENANT_ID / AZURE_CLIENT_ID /
 *    AZURE_FEDERATED_TOKEN_FILE are set, else the managed identity when
 *    AZURE_STORAGE_AUTH_MODE=login. The identity needs a data role on the container, such as
 *    "Storage Blob Data Contributor".
 * Retries, timeouts, listing page size, uploads and downloads in flight are the settings the S3
 * backend has (backend_s3.h's PODVAULT_S3_* variables), which apply to Azure too.
 */
#ifndef PV_BACKEND_BACKEND_AZURE_H
#define PV_BACKEND_BACKEND_AZURE_H

#include "backend/backend.h"

#define BACKEND_AZURE_ENV_CONNECTION_STRING "AZURE_STORAGE_CONNECTION_STRING"
#define BACKEND_AZURE_ENV_ACCOUNT "AZURE_STORAGE_ACCOUNT"
#define BACKEND_AZURE_ENV_KEY "AZURE_STORAGE_KEY"
#define BACKEND_AZURE_ENV_SAS "AZURE_STORAGE_SAS_TOKEN"
#define BACKEND_AZURE_ENV_ENDPOINT "PODVAULT_AZURE_ENDPOINT"
/* "login": Microsoft Entra ID (managed identity when no AZURE_TENANT_ID/AZURE_CLIENT_ID are
 * set); "key": the account key or SAS only. The Azure CLI's variable of the same name. */
#define BACKEND_AZURE_ENV_AUTH_MODE "AZURE_STORAGE_AUTH_MODE"
/* Objects up to this many bytes go up in one Put Blob; larger ones in blocks of this size
 * (Put Block, then Put Block List). Default 4 MiB, 64 KiB..100 MiB. */
#define BACKEND_AZURE_ENV_BLOCK_SIZE "PODVAULT_AZURE_BLOCK_SIZE"

/* The one x-ms-version every request carries. */
#define BACKEND_AZURE_VERSION "2021-08-06"

/* What a backend is opened with, resolved from struct backend_opts (azure_resolve). */
struct azure_account {
    char *account;  /* may be NULL only with a SAS and an explicit endpoint */
    char *key;      /* base64 Shared Key, or NULL */
    char *sas;      /* without a leading '?', or NULL */
    char *endpoint; /* "scheme://host[:port][/path]", without a trailing '/' */
    bool entra;     /* neither key nor SAS: a Microsoft Entra ID token authorizes */
};

/* Works out account, credentials and endpoint from the settings (the rules above). Pure: no
 * I/O. ERR_FAIL with a message naming what is missing or malformed (the key's base64 is
 * checked); `out` is then empty. Free with azure_account_free whatever the result. */
int azure_resolve(const struct backend_opts *o, struct azure_account *out, struct err *e);
void azure_account_free(struct azure_account *a);

#endif
