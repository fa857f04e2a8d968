/* pv_azure_token.c - gets Microsoft Entra ID tokens through backend/azure_token.c, for tests
 * (the Azure backend is its user in the program):
 *
 *   pv_azure_token [--count N] [--sleep-ms MS]
 *
 * Settings come from the environment as the program's edge takes them (AZURE_TENANT_ID,
 * AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST,
 * AZURE_POD_IDENTITY_AUTHORITY_HOST, PODVAULT_AWS_REFRESH_WINDOW_S for the refresh window).
 * Prints N tokens (one per azure_token_get, MS milliseconds apart), one a line, then
 * "fetches F". Exit 0, or 1 with the error on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/azure_token.h"

static const char *env_get(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

int main(int argc, char **argv)
{
    long count = 1, sleep_ms = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--count") == 0)
            count = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--sleep-ms") == 0)
            sleep_ms = atol(argv[i + 1]);
        else {
            fprintf(stderr, "pv_azure_token: unknown option %s\n", argv[i]);
            return 1;
        }
    }
    if (count < 1 || count > 100 || sleep_ms < 0 || sleep_ms > 60000) {
        fprintf(stderr, "pv_azure_token: --count 1..100, --sleep-ms 0..60000\n");
        return 1;
    }
    struct backend_opts o;
    struct err e;
    err_clear(&e);
    backend_opts_default(&o);
    if (backend_opts_from_vars(&o, env_get, NULL, &e) < 0) {
        fprintf(stderr, "pv_azure_token: %s\n", e.msg);
        return 1;
    }
    struct azure_token_opts t;
    azure_token_opts_from(&t, &o);
    struct azure_token *tok = NULL;
    int rc = azure_token_open(&t, &tok, &e);
    for (long i = 0; rc == 0 && i < count; i++) {
        if (i > 0) {
            struct timespec ts = {.tv_sec = sleep_ms / 1000,
                                  .tv_nsec = (sleep_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        char *s = NULL;
        rc = azure_token_get(tok, &s, &e);
        if (rc == 0) printf("%s\n", s);
        free(s);
    }
    if (rc == 0) printf("fetches %lu\n", azure_token_fetches(tok));
    azure_token_close(tok);
    if (rc < 0) fprintf(stderr, "pv_azure_token: %s\n", e.msg);
    return rc < 0 ? 1 : 0;
}
