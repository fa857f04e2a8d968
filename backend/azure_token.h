/* azure_token.h - Microsoft Entra ID bearer tokens for Azure Storage, as azidentity
 * (azure-sdk-for-go sdk/azidentity) gets them:
 *  - client secret (tenant_id, client_id, client_secret): POST
 *    {authority_host}{tenant_id}/oauth2/v2.0/token, grant_type=client_credentials
 *    (azidentity client_secret_credential.go, through MSAL's confidential client);
 *  - workload identity (tenant_id, client_id, federated_token_file): the same POST with
 *    client_assertion = the file's content, read again at each refresh because the kubelet
 *    rotates it (azidentity workload_identity.go / client_assertion_credential.go);
 *  - managed identity (neither): GET {msi_endpoint}?api-version=2018-02-01&resource=...
 *    [&client_id=...] with "Metadata: true" (azidentity managed_identity_client.go, IMDS).
 * The scope asked for is {resource}.default. Tokens are fetched again when fewer than
 * refresh_window_s seconds of their life remain, so a job of many hours keeps working.
 * Settings come as values; nothing here reads the environment. */
#ifndef PV_BACKEND_AZURE_TOKEN_H
#define PV_BACKEND_AZURE_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "backend/backend.h"
#include "base/err.h"

#define AZURE_TOKEN_AUTHORITY "https://login.microsoftonline.com/"
#define AZURE_TOKEN_MSI "http://169.254.169.254/metadata/identity/oauth2/token"
#define AZURE_TOKEN_RESOURCE "https://storage.azure.com/"

/* Strings are borrowed for azure_token_open (it copies them). NULL or "" means unset. */
struct azure_token_opts {
    const char *tenant_id, *client_id, *client_secret, *federated_token_file;
    const char *authority_host; /* NULL: AZURE_TOKEN_AUTHORITY */
    const char *msi_endpoint;   /* NULL: imds_host's, or AZURE_TOKEN_MSI */
    const char *imds_host;      /* "http://host[:port]": its /metadata/identity/oauth2/token */
    const char *resource;       /* NULL: AZURE_TOKEN_RESOURCE */
    const char *cacert;         /* PEM CA file; NULL: the system's */
    bool insecure_tls;
    long refresh_window_s; /* 300 when 0 is not wanted: see azure_token_opts_from */
    long timeout_s;        /* per exchange, >= 1 */
};

/* Fills `t` from the settings a backend is opened with (the AZURE_* fields of backend_opts,
 * its CA settings, timeout and refresh window). Borrows o's strings. */
void azure_token_opts_from(struct azure_token_opts *t, const struct backend_opts *o);

struct azure_token;

/* Checks the settings (a tenant and client id with a secret or a federated token file; or
 * neither, for managed identity; a secret and a token file together are refused) and fetches
 * the first token, so that a wrong secret or identity shows at once, with Entra ID's own
 * "error: error_description" (AADSTS... codes). The caller owns *out (azure_token_close). */
int azure_token_open(const struct azure_token_opts *o, struct azure_token **out, struct err *e);

/* The current bearer token, malloc'd (the caller frees it), fetched again first when it is
 * within the refresh window. One caller refreshes at a time, under a mutex; a failed refresh
 * hands out the old token while it has not expired. Thread-safe. */
int azure_token_get(struct azure_token *t, char **token, struct err *e);

/* How many tokens were fetched (the first included). Thread-safe. */
unsigned long azure_token_fetches(struct azure_token *t);

void azure_token_close(struct azure_token *t);

/* Pure: parses a token answer of Entra ID or of managed identity at time `now`: access_token
 * and expires_in (seconds, a number or a string) or expires_on (epoch seconds, a string or a
 * number); an answer with "error" fails with "error: error_description". *token is malloc'd. */
int azure_token_parse(const char *json, size_t len, time_t now, char **token, time_t *expires,
                      struct err *e);

#endif
