/* test_agent_childenv.c - unit tests of agent/runner's runner_child_env for Velero azure
 * locations, against a scripted API server on 127.0.0.1 (tests/unit/script_server.h) that
 * serves the repository password Secret and the location's credentials Secret:
 *  - a storage account key (config.storageAccountKeyEnvVar): the job gets the account, the key
 *    and the endpoint, and no inherited connection string;
 *  - useAAD with a client secret in the credentials file: Microsoft Entra ID variables from the
 *    file win over the agent's own workload identity, whose token file is cleared;
 *  - useAAD without a Secret: the agent's workload identity is passed on, with
 *    AZURE_STORAGE_AUTH_MODE=login and no key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "agent/k8s.h"
#include "agent/repoloc.h"
#include "agent/runner.h"
#include "script_server.h"

/* base64 of "pw" and of the credentials files below */
#define PASSWORD_SECRET "{\"data\":{\"repository-password\":\"cHc=\"}}"

static char *secret_json(const char *key, const char *text)
{
    size_t n = strlen(text);
    char *b64 = malloc(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL));
    assert_non_null(b64);
    sodium_bin2base64(b64, sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL),
                      (const unsigned char *)text, n, sodium_base64_VARIANT_ORIGINAL);
    char *out = NULL;
    assert_true(asprintf(&out, "{\"data\":{\"%s\":\"%s\"}}", key, b64) > 0);
    free(b64);
    return out;
}

/* How many entries of env set `name`, and the value of the first. */
static int count_var(const struct asys_strv *env, const char *name, const char **value)
{
    size_t n = strlen(name);
    int c = 0;
    for (size_t i = 0; i < env->n; i++)
        if (strncmp(env->v[i], name, n) == 0 && env->v[i][n] == '=') {
            if (c++ == 0 && value) *value = env->v[i] + n + 1;
        }
    return c;
}

static void expect_var(const struct asys_strv *env, const char *name, const char *want)
{
    const char *v = NULL;
    int c = count_var(env, name, &v);
    if (!want) {
        if (c != 0) fail_msg("%s is set (%s)", name, v);
        return;
    }
    if (c != 1) fail_msg("%s is set %d times", name, c);
    if (strcmp(v, want) != 0) fail_msg("%s=%s, expected %s", name, v, want);
}

/* Runs runner_child_env for the location `bsl_text` with the script's answers. */
static void child_env(const char *bsl_text, const struct step *script, int n_steps,
                      const char *const *base_env, struct asys_strv *out)
{
    struct server s;
    server_start(&s, script, n_steps);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    struct k8s_config c = {0};
    struct err e;
    err_clear(&e);
    assert_int_equal(k8s_config_server(&c, url, &e), 0);
    struct k8s_client *k;
    assert_int_equal(k8s_client_new(&c, NULL, &k, &e), 0);
    json_t *bsl = json_loads(bsl_text, 0, NULL);
    assert_non_null(bsl);
    struct repoloc loc;
    if (repoloc_from_bsl(bsl, "ns1", "/tmp", &loc, &e) != 0) fail_msg("repoloc: %s", e.msg);
    struct runner_env env = {.namespace = "velero", .base_env = base_env};
    if (runner_child_env(&env, k, &loc, bsl, out, &e) != 0) fail_msg("child env: %s", e.msg);
    repoloc_free(&loc);
    json_decref(bsl);
    k8s_client_free(k);
    k8s_config_free(&c);
    server_stop(&s);
    assert_string_equal(s.mismatch, "");
    expect_var(out, "PODVAULT_PASSWORD", "pw");
}

static const char *const agent_env[] = {
    "PATH=/usr/bin",
    "AZURE_STORAGE_CONNECTION_STRING=AccountName=x;AccountKey=eQ==",
    "AZURE_CLIENT_ID=wi-client",
    "AZURE_TENANT_ID=wi-tenant",
    "AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/token",
    "AZURE_AUTHORITY_HOST=https://login.example/",
    NULL};

static void test_account_key(void **state)
{
    char *creds = secret_json("cloud", "AZURE_STORAGE_ACCOUNT_ACCESS_KEY=a2V5\n");
    const struct step script[] = {
        {"GET /api/v1/namespaces/velero/secrets/velero-repo-credentials", NULL, "200 OK",
         PASSWORD_SECRET, NULL},
        {"GET /api/v1/namespaces/velero/secrets/az-creds", NULL, "200 OK", creds, NULL},
    };
    struct asys_strv out = {0};
    child_env("{\"metadata\":{\"name\":\"az\"},\"spec\":{\"provider\":\"azure\","
              "\"credential\":{\"name\":\"az-creds\",\"key\":\"cloud\"},"
              "\"objectStorage\":{\"bucket\":\"velero\"},\"config\":{\"storageAccount\":\"acct\","
              "\"storageAccountKeyEnvVar\":\"AZURE_STORAGE_ACCOUNT_ACCESS_KEY\"}}}",
              script, 2, agent_env, &out);
    expect_var(&out, "AZURE_STORAGE_ACCOUNT", "acct");
    expect_var(&out, "AZURE_STORAGE_KEY", "a2V5");
    expect_var(&out, "PODVAULT_AZURE_ENDPOINT", "https://acct.blob.core.windows.net");
    expect_var(&out, "AZURE_STORAGE_CONNECTION_STRING", NULL);
    expect_var(&out, "AZURE_STORAGE_AUTH_MODE", NULL);
    asys_sv_free(&out);
    free(creds);
}

static void test_aad_client_secret(void **state)
{
    char *creds = secret_json("cloud", "AZURE_TENANT_ID=file-tenant\nAZURE_CLIENT_ID=file-client\n"
                                       "AZURE_CLIENT_SECRET=file-secret\n");
    const struct step script[] = {
        {"GET /api/v1/namespaces/velero/secrets/velero-repo-credentials", NULL, "200 OK",
         PASSWORD_SECRET, NULL},
        {"GET /api/v1/namespaces/velero/secrets/az-creds", NULL, "200 OK", creds, NULL},
    };
    struct asys_strv out = {0};
    child_env("{\"metadata\":{\"name\":\"az\"},\"spec\":{\"provider\":\"azure\","
              "\"credential\":{\"name\":\"az-creds\",\"key\":\"cloud\"},"
              "\"objectStorage\":{\"bucket\":\"velero\"},\"config\":{\"storageAccount\":\"acct\","
              "\"useAAD\":\"true\",\"storageAccountURI\":\"https://acct.example\"}}}",
              script, 2, agent_env, &out);
    expect_var(&out, "AZURE_STORAGE_ACCOUNT", "acct");
    expect_var(&out, "AZURE_STORAGE_KEY", NULL);
    expect_var(&out, "PODVAULT_AZURE_ENDPOINT", "https://acct.example");
    expect_var(&out, "AZURE_STORAGE_AUTH_MODE", "login");
    expect_var(&out, "AZURE_TENANT_ID", "file-tenant");
    expect_var(&out, "AZURE_CLIENT_ID", "file-client");
    expect_var(&out, "AZURE_CLIENT_SECRET", "file-secret");
    expect_var(&out, "AZURE_FEDERATED_TOKEN_FILE", "");
    expect_var(&out, "AZURE_STORAGE_CONNECTION_STRING", NULL);
    asys_sv_free(&out);
    free(creds);
}

static void test_aad_workload_identity(void **state)
{
    const struct step script[] = {
        {"GET /api/v1/namespaces/velero/secrets/velero-repo-credentials", NULL, "200 OK",
         PASSWORD_SECRET, NULL},
    };
    struct asys_strv out = {0};
    child_env("{\"metadata\":{\"name\":\"az\"},\"spec\":{\"provider\":\"azure\","
              "\"objectStorage\":{\"bucket\":\"velero\"},\"config\":{\"storageAccount\":\"acct\","
              "\"useAAD\":\"true\"}}}",
              script, 1, agent_env, &out);
    expect_var(&out, "AZURE_STORAGE_AUTH_MODE", "login");
    expect_var(&out, "AZURE_STORAGE_KEY", NULL);
    expect_var(&out, "AZURE_CLIENT_SECRET", NULL);
    expect_var(&out, "AZURE_CLIENT_ID", "wi-client");
    expect_var(&out, "AZURE_TENANT_ID", "wi-tenant");
    expect_var(&out, "AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/token");
    expect_var(&out, "AZURE_AUTHORITY_HOST", "https://login.example/");
    expect_var(&out, "PODVAULT_AZURE_ENDPOINT", "https://acct.blob.core.windows.net");
    asys_sv_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_account_key),
        cmocka_unit_test(test_aad_client_secret),
        cmocka_unit_test(test_aad_workload_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
