/* test_cloud_creds.c - unit tests of the pure parts of backend/aws_creds.c and
 * backend/azure_token.c: STS AssumeRoleWithWebIdentity answers and errors (and a refused DTD),
 * the JSON of container endpoints and instance metadata, expiry times and the refresh
 * decision, Entra ID and managed identity token answers; and the settings the program's edge
 * reads (backend_opts_from_vars) for the identities. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend/aws_creds.h"
#include "backend/azure_token.h"
#include "backend/cred_http.h"

static const char STS_OK[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    "<AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:sa</"
    "SubjectFromWebIdentityToken><Credentials><SessionToken>FwoGZX&amp;IvYXdz</SessionToken>"
    "<SecretAccessKey>wJalrXUtnFEMI</SecretAccessKey><Expiration>2026-12-08T03:04:05Z</Expiration>"
    "<AccessKeyId>ASIAEXAMPLE</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>"
    "</AssumeRoleWithWebIdentityResponse>";

static void test_sts(void **state)
{
    struct aws_cred c;
    struct err e;
    err_clear(&e);
    assert_int_equal(aws_creds_parse_sts(STS_OK, strlen(STS_OK), &c, &e), 0);
    assert_string_equal(c.access_key, "ASIAEXAMPLE");
    assert_string_equal(c.secret_key, "wJalrXUtnFEMI");
    assert_string_equal(c.token, "FwoGZX&IvYXdz");
    time_t t;
    assert_int_equal(aws_creds_parse_time("2026-12-08T03:04:05Z", &t), 0);
    assert_int_equal(c.expires, t);
    aws_cred_free(&c);
    assert_null(c.access_key);

    static const char refused[] =
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender"
        "</Type><Code>AccessDenied</Code><Message>Not authorized to perform "
        "sts:AssumeRoleWithWebIdentity</Message></Error><RequestId>1</RequestId></ErrorResponse>";
    assert_int_equal(aws_creds_parse_sts(refused, strlen(refused), &c, &e), ERR_FAIL);
    assert_string_equal(e.msg, "STS refused: AccessDenied: Not authorized to perform "
                               "sts:AssumeRoleWithWebIdentity");
    assert_null(c.access_key);

    static const char *const bad[] = {
        "<x>", /* not well-formed */
        "<!DOCTYPE a [<!ENTITY b \"c\">]><a>&b;</a>",
        "<R><Credentials><AccessKeyId>A</AccessKeyId></Credentials></R>", /* no secret */
        /* an expiration that is not a time */
        ("<R><Credentials><AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
         "<Expiration>tomorrow</Expiration></Credentials></R>"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(aws_creds_parse_sts(bad[i], strlen(bad[i]), &c, &e), ERR_FAIL);
        assert_true(e.msg[0] != '\0');
        assert_null(c.access_key);
    }
}

static void test_json(void **state)
{
    struct aws_cred c;
    struct err e;
    err_clear(&e);
    static const char imds[] = "{\"Code\":\"Success\",\"LastUpdated\":\"2026-12-08T01:00:00Z\","
                               "\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIA1\","
                               "\"SecretAccessKey\":\"S1\",\"Token\":\"T1\","
                               "\"Expiration\":\"2026-12-08T07:00:00Z\"}";
    assert_int_equal(aws_creds_parse_json(imds, strlen(imds), &c, &e), 0);
    assert_string_equal(c.access_key, "ASIA1");
    assert_string_equal(c.token, "T1");
    assert_true(c.expires > 0);
    aws_cred_free(&c);
    /* EKS Pod Identity: no Code, fractional seconds. */
    static const char pod[] = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
                              "\"AccountId\":\"1\",\"Expiration\":\"2026-12-08T07:00:00.123Z\"}";
    assert_int_equal(aws_creds_parse_json(pod, strlen(pod), &c, &e), 0);
    time_t t;
    assert_int_equal(aws_creds_parse_time("2026-12-08T07:00:00Z", &t), 0);
    assert_int_equal(c.expires, t);
    aws_cred_free(&c);
    static const char denied[] = "{\"code\":\"AccessDeniedException\",\"message\":\"bad token\"}";
    assert_int_equal(aws_creds_parse_json(denied, strlen(denied), &c, &e), ERR_FAIL);
    assert_string_equal(e.msg, "refused: AccessDeniedException: bad token");
    static const char failed[] = "{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"Message\":\"m\"}";
    assert_int_equal(aws_creds_parse_json(failed, strlen(failed), &c, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "AssumeRoleUnauthorizedAccess: m"));
    assert_int_equal(aws_creds_parse_json("[1]", 3, &c, &e), ERR_FAIL);
    assert_int_equal(aws_creds_parse_json("{\"AccessKeyId\":\"A\"}", 19, &c, &e), ERR_FAIL);
    assert_null(c.access_key);
}

static void test_times_and_refresh(void **state)
{
    time_t t;
    assert_int_equal(aws_creds_parse_time("1970-01-01T00:01:40Z", &t), 0);
    assert_int_equal(t, 100);
    assert_int_equal(aws_creds_parse_time("1970-01-01T00:01:40+00:00", &t), 0);
    assert_int_equal(t, 100);
    assert_int_equal(aws_creds_parse_time("1970-01-01T00:01:40+02:00", &t), -1);
    assert_int_equal(aws_creds_parse_time("1970-01-01 00:01:40", &t), -1);
    assert_int_equal(aws_creds_parse_time("", &t), -1);
    /* Never expiring keys never refresh; others 300 s before expiry, or at half their life
     * when that comes later (no fetch per request for short-lived ones). */
    assert_int_equal(cred_http_refresh_at(0, 1000, 300), 0);
    assert_int_equal(cred_http_refresh_at(10000, 6400, 300), 9700);
    assert_int_equal(cred_http_refresh_at(10000, 9900, 300), 9950);
    assert_int_equal(cred_http_refresh_at(10000, 9999, 0), 10000);
    assert_int_equal(cred_http_refresh_at(10000, 20000, 300), 10000);
}

static void test_azure_answers(void **state)
{
    char *tok = NULL;
    time_t exp = 0;
    struct err e;
    err_clear(&e);
    static const char entra[] = "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                                "\"ext_expires_in\":3599,\"access_token\":\"eyJ0\"}";
    assert_int_equal(azure_token_parse(entra, strlen(entra), 1000, &tok, &exp, &e), 0);
    assert_string_equal(tok, "eyJ0");
    assert_int_equal(exp, 4599);
    free(tok);
    /* Managed identity: strings, expires_on alone is enough. */
    static const char msi[] = "{\"access_token\":\"m\",\"expires_on\":\"5000\","
                              "\"resource\":\"https://storage.azure.com/\"}";
    assert_int_equal(azure_token_parse(msi, strlen(msi), 1000, &tok, &exp, &e), 0);
    assert_int_equal(exp, 5000);
    free(tok);
    static const char err[] =
        "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: "
        "Invalid client secret provided.\"}";
    assert_int_equal(azure_token_parse(err, strlen(err), 1000, &tok, &exp, &e), ERR_FAIL);
    assert_string_equal(e.msg, "refused: invalid_client: AADSTS7000215: Invalid client secret "
                               "provided.");
    assert_null(tok);
    static const char *const bad[] = {
        "{\"access_token\":\"x\"}", "{\"access_token\":\"x\",\"expires_in\":\"soon\"}",
        "{\"access_token\":\"x\",\"expires_on\":\"999\"}", "{\"expires_in\":10}", "nope"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(azure_token_parse(bad[i], strlen(bad[i]), 1000, &tok, &exp, &e), ERR_FAIL);
        assert_null(tok);
    }
}

struct vars {
    const char *const *kv; /* name, value, ..., NULL */
};

static const char *var(void *ctx, const char *name)
{
    for (const char *const *p = ((struct vars *)ctx)->kv; *p; p += 2)
        if (strcmp(p[0], name) == 0) return p[1];
    return NULL;
}

static void test_settings(void **state)
{
    static const char *const kv[] = {"AWS_ROLE_ARN",
                                     "arn:r",
                                     "AWS_WEB_IDENTITY_TOKEN_FILE",
                                     "/t",
                                     "AWS_ROLE_SESSION_NAME",
                                     "s",
                                     "AWS_ENDPOINT_URL_STS",
                                     "http://sts",
                                     "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                     "http://pod",
                                     "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                                     "/p",
                                     "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                                     "http://imds",
                                     "AWS_EC2_METADATA_DISABLED",
                                     "TRUE",
                                     "AWS_ENDPOINT_URL_S3",
                                     "http://s3",
                                     "PODVAULT_AWS_REFRESH_WINDOW_S",
                                     "7",
                                     "AZURE_TENANT_ID",
                                     "ten",
                                     "AZURE_CLIENT_ID",
                                     "cli",
                                     "AZURE_CLIENT_SECRET",
                                     "sec",
                                     "AZURE_FEDERATED_TOKEN_FILE",
                                     "/f",
                                     "AZURE_AUTHORITY_HOST",
                                     "http://a/",
                                     "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                                     "http://i",
                                     NULL};
    struct vars v = {kv};
    struct backend_opts o;
    struct err e;
    err_clear(&e);
    backend_opts_default(&o);
    assert_int_equal(o.cred_refresh_s, 300);
    assert_false(o.imds_disabled);
    assert_int_equal(backend_opts_from_vars(&o, var, &v, &e), 0);
    assert_string_equal(o.role_arn, "arn:r");
    assert_string_equal(o.web_identity_token_file, "/t");
    assert_string_equal(o.role_session_name, "s");
    assert_string_equal(o.sts_endpoint, "http://sts");
    assert_string_equal(o.container_uri, "http://pod");
    assert_string_equal(o.container_token_file, "/p");
    assert_string_equal(o.imds_endpoint, "http://imds");
    assert_true(o.imds_disabled);
    assert_string_equal(o.s3_endpoint, "http://s3");
    assert_int_equal(o.cred_refresh_s, 7);
    struct azure_token_opts t;
    azure_token_opts_from(&t, &o);
    assert_string_equal(t.tenant_id, "ten");
    assert_string_equal(t.client_id, "cli");
    assert_string_equal(t.client_secret, "sec");
    assert_string_equal(t.federated_token_file, "/f");
    assert_string_equal(t.authority_host, "http://a/");
    assert_int_equal(t.refresh_window_s, 7);
    assert_string_equal(t.imds_host, "http://i");
    /* A secret and a token file together are refused before any request. */
    struct azure_token *tok = NULL;
    assert_int_equal(azure_token_open(&t, &tok, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "one of AZURE_CLIENT_SECRET and AZURE_FEDERATED_TOKEN_FILE"));
    assert_null(tok);
    t.client_secret = NULL;
    t.tenant_id = NULL;
    assert_int_equal(azure_token_open(&t, &tok, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "needs AZURE_TENANT_ID"));
    static const char *const bad[] = {"PODVAULT_AWS_REFRESH_WINDOW_S", "-1", NULL};
    struct vars vb = {bad};
    assert_int_equal(backend_opts_from_vars(&o, var, &vb, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "PODVAULT_AWS_REFRESH_WINDOW_S"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sts),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_times_and_refresh),
        cmocka_unit_test(test_azure_answers),
        cmocka_unit_test(test_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
