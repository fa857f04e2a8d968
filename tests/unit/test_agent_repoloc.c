/* test_agent_repoloc.c - unit tests of agent/repoloc: BackupStorageLocation to repository
 * location and podvault options (AWS default URL, s3Url, path style, TLS, CA file, local
 * directories, refused providers) and AWS shared-credentials files; Velero's azure locations and
 * its Azure credentials file (AZURE_*=... lines). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/repoloc.h"

static int from(const char *bsl_text, const char *ns, const char *dir, struct repoloc *l,
                struct err *e)
{
    json_t *bsl = json_loads(bsl_text, 0, NULL);
    assert_non_null(bsl);
    int rc = repoloc_from_bsl(bsl, ns, dir, l, e);
    json_decref(bsl);
    return rc;
}

static void assert_args(const struct repoloc *l, const char *const *want)
{
    size_t n = 0;
    while (want[n])
        n++;
    assert_int_equal(l->n_args, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(l->args[i], want[i]);
}

static void test_s3_locations(void **state)
{
    struct repoloc l;
    struct err e;
    assert_int_equal(from("{\"metadata\":{\"name\":\"default\"},\"spec\":{\"provider\":\"aws\","
                          "\"objectStorage\":{\"bucket\":\"bk\",\"prefix\":\"/cluster1/\"},"
                          "\"config\":{\"region\":\"eu-west-1\"}}}",
                          "shop", "/tmp", &l, &e),
                     0);
    assert_string_equal(l.location,
                        "s3:https://s3.eu-west-1.amazonaws.com/bk/cluster1/plugins/podvault/shop");
    assert_string_equal(l.root, "s3:https://s3.eu-west-1.amazonaws.com/bk/cluster1");
    assert_string_equal(l.base,
                        "s3:https://s3.eu-west-1.amazonaws.com/bk/cluster1/plugins/podvault");
    assert_string_equal(l.legacy,
                        "s3:https://s3.eu-west-1.amazonaws.com/bk/cluster1/podvault/shop");
    assert_string_equal(l.move_hint,
                        "aws s3 mv --recursive --endpoint-url https://s3.eu-west-1.amazonaws.com "
                        "s3://bk/cluster1/podvault/shop/ s3://bk/cluster1/plugins/podvault/shop/");
    assert_true(l.s3);
    assert_string_equal(l.profile, "default");
    static const char *const aws[] = {"--s3-region", "eu-west-1", "--s3-virtual-host", NULL};
    assert_args(&l, aws);
    repoloc_free(&l);

    assert_int_equal(from("{\"spec\":{\"provider\":\"aws\",\"objectStorage\":{\"bucket\":\"b\"}}}",
                          "ns", "/tmp", &l, &e),
                     0);
    assert_string_equal(l.root, "s3:https://s3.amazonaws.com/b");
    static const char *const no_region[] = {"--s3-virtual-host", NULL};
    assert_args(&l, no_region);
    repoloc_free(&l);
    assert_int_equal(
        from("{\"metadata\":{\"name\":\"minio\"},\"spec\":{\"provider\":\"velero.io/aws\","
             "\"objectStorage\":{\"bucket\":\"velero\"},"
             "\"config\":{\"s3Url\":\"http://minio.velero.svc:9000/\","
             "\"s3ForcePathStyle\":\"true\",\"insecureSkipTLSVerify\":\"true\","
             "\"profile\":\"backup\"}}}",
             "default", "/tmp", &l, &e),
        0);
    assert_string_equal(l.location,
                        "s3:http://minio.velero.svc:9000/velero/plugins/podvault/default");
    assert_string_equal(l.root, "s3:http://minio.velero.svc:9000/velero");
    assert_string_equal(l.profile, "backup");
    /* No region: the jobs ask the bucket (no --s3-region). */
    static const char *const minio[] = {"--s3-path-style", "--insecure-tls", NULL};
    assert_args(&l, minio);
    assert_int_equal(l.n_init_args, 0);
    repoloc_free(&l);

    /* S3 Object Lock for the repositories the agent creates: annotations, which Velero's
     * plugins do not validate (spec.config keys they do not know make a location Unavailable) */
    const char *locked = "{\"metadata\":{\"name\":\"locked\",\"annotations\":{%s}},\"spec\":{"
                         "\"provider\":\"aws\",\"objectStorage\":{\"bucket\":\"bk\"}}}";
    char doc[512];
    snprintf(doc, sizeof doc, locked,
             "\"podvault.io/object-lock-days\":\"30\",\"podvault.io/object-lock-mode\":"
             "\"compliance\"");
    assert_int_equal(from(doc, "shop", "/tmp", &l, &e), 0);
    assert_int_equal(l.n_init_args, 4);
    assert_string_equal(l.init_args[0], "--object-lock");
    assert_string_equal(l.init_args[1], "30");
    assert_string_equal(l.init_args[2], "--object-lock-mode");
    assert_string_equal(l.init_args[3], "compliance");
    repoloc_free(&l);
    snprintf(doc, sizeof doc, locked, "\"podvault.io/object-lock-days\":\"12h\"");
    assert_int_equal(from(doc, "shop", "/tmp", &l, &e), 0);
    assert_int_equal(l.n_init_args, 2);
    assert_string_equal(l.init_args[1], "12h");
    repoloc_free(&l);
    /* spec.config keys of that name are not read (Velero's plugin would refuse the location) */
    assert_int_equal(from("{\"metadata\":{\"name\":\"cfg\"},\"spec\":{\"provider\":\"aws\","
                          "\"objectStorage\":{\"bucket\":\"bk\"},\"config\":{"
                          "\"podvaultObjectLockDays\":\"30\"}}}",
                          "shop", "/tmp", &l, &e),
                     0);
    assert_int_equal(l.n_init_args, 0);
    repoloc_free(&l);
    static const char *const bad[] = {
        "\"podvault.io/object-lock-days\":\"thirty\"",
        "\"podvault.io/object-lock-days\":\"30\",\"podvault.io/object-lock-mode\":\"strict\"",
        "\"podvault.io/object-lock-mode\":\"governance\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(doc, sizeof doc, locked, bad[i]);
        assert_int_equal(from(doc, "shop", "/tmp", &l, &e), ERR_FAIL);
        assert_non_null(strstr(e.msg, "annotation podvault.io/object-lock-"));
    }
}

static void test_ca_written(void **state)
{
    char dir[] = "/tmp/pv-repoloc.XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct repoloc l;
    struct err e;
    /* "-----BEGIN CERTIFICATE-----\n" in base64 */
    assert_int_equal(
        from("{\"spec\":{\"provider\":\"aws\",\"objectStorage\":{\"bucket\":\"b\","
             "\"caCert\":\"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\"},"
             "\"config\":{\"s3Url\":\"https://rgw:7480\",\"s3ForcePathStyle\":\"1\"}}}",
             "ns", dir, &l, &e),
        0);
    char ca[256];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    static const char *want_tail[] = {"--cacert", NULL};
    assert_string_equal(l.args[0], "--s3-path-style");
    assert_string_equal(l.args[l.n_args - 2], want_tail[0]);
    assert_string_equal(l.args[l.n_args - 1], ca);
    FILE *f = fopen(ca, "r");
    assert_non_null(f);
    char line[64] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "-----BEGIN CERTIFICATE-----\n");
    struct stat st;
    assert_int_equal(stat(ca, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    repoloc_free(&l);
    unlink(ca);
    rmdir(dir);
}

static void test_local_and_refusals(void **state)
{
    struct repoloc l;
    struct err e;
    assert_int_equal(from("{\"spec\":{\"provider\":\"local\",\"objectStorage\":{\"bucket\":\"x\","
                          "\"prefix\":\"p\"},\"config\":{\"podvaultPath\":\"/srv/backups\"}}}",
                          "apps", "/tmp", &l, &e),
                     0);
    assert_string_equal(l.location, "/srv/backups/p/plugins/podvault/apps");
    assert_string_equal(l.root, "/srv/backups/p");
    assert_string_equal(l.legacy, "/srv/backups/p/podvault/apps");
    assert_string_equal(l.move_hint, "mkdir -p '/srv/backups/p/plugins/podvault' && mv "
                                     "'/srv/backups/p/podvault/apps' "
                                     "'/srv/backups/p/plugins/podvault/apps'");
    repoloc_free(&l);
    /* no namespace: the parent of every repository, for maintenance */
    assert_int_equal(from("{\"spec\":{\"objectStorage\":{\"bucket\":\"x\"},"
                          "\"config\":{\"podvaultPath\":\"/srv/b\"}}}",
                          NULL, "/tmp", &l, &e),
                     0);
    assert_string_equal(l.location, "/srv/b/plugins/podvault");
    assert_string_equal(l.base, "/srv/b/plugins/podvault");
    assert_string_equal(l.legacy, "/srv/b/podvault");
    assert_string_equal(l.move_hint, "mkdir -p '/srv/b/plugins' && mv '/srv/b/podvault' "
                                     "'/srv/b/plugins/podvault'");
    assert_false(l.s3);
    assert_int_equal(l.n_args, 0);
    repoloc_free(&l);

    /* gcp: GCS's XML API with HMAC keys, path style, region "auto". */
    assert_int_equal(
        from("{\"metadata\":{\"name\":\"gcs\"},\"spec\":{\"provider\":\"velero.io/gcp\","
             "\"objectStorage\":{\"bucket\":\"b\",\"prefix\":\"p\"}}}",
             "ns", "/tmp", &l, &e),
        0);
    assert_string_equal(l.location, "s3:https://storage.googleapis.com/b/p/plugins/podvault/ns");
    assert_true(l.s3);
    const char *gcs_args[] = {"--s3-region", "auto", "--s3-path-style", NULL};
    assert_args(&l, gcs_args);
    repoloc_free(&l);
    assert_int_equal(from("{\"metadata\":{\"name\":\"az\"},\"spec\":{\"provider\":\"oracle\","
                          "\"objectStorage\":{\"bucket\":\"b\"}}}",
                          "ns", "/tmp", &l, &e),
                     ERR_FAIL);
    assert_non_null(strstr(e.msg, "BackupStorageLocation az: provider oracle is not supported"));
    assert_null(l.location);
    assert_int_equal(from("{\"metadata\":{\"name\":\"nob\"},\"spec\":{\"provider\":\"aws\"}}", "ns",
                          "/tmp", &l, &e),
                     ERR_FAIL);
    assert_non_null(strstr(e.msg, "no spec.objectStorage.bucket"));
    assert_int_equal(from("{\"spec\":{\"provider\":\"aws\",\"objectStorage\":{\"bucket\":\"b\"},"
                          "\"config\":{\"s3Url\":\"minio:9000\"}}}",
                          "ns", "/tmp", &l, &e),
                     ERR_FAIL);
    assert_non_null(strstr(e.msg, "must start with http"));
    /* a namespace that would leave plugins/podvault/ */
    const char *bad_ns[] = {"..", ".", "a/b", ""};
    for (size_t i = 0; i < sizeof bad_ns / sizeof *bad_ns; i++) {
        assert_int_equal(from("{\"spec\":{\"objectStorage\":{\"bucket\":\"x\"},"
                              "\"config\":{\"podvaultPath\":\"/srv/b\"}}}",
                              bad_ns[i], "/tmp", &l, &e),
                         ERR_FAIL);
        assert_non_null(strstr(e.msg, "invalid volume namespace"));
    }
    assert_int_equal(
        from("{\"spec\":{\"config\":{\"podvaultPath\":\"/x\"}}}", "../etc", "/tmp", &l, &e),
        ERR_FAIL);
    assert_int_equal(from("{\"spec\":{\"config\":{\"podvaultPath\":\"/x\"}}}", "", "/tmp", &l, &e),
                     ERR_FAIL);
}

static void test_credentials(void **state)
{
    static const char text[] = "# Velero's cloud file\n"
                               "[default]\n"
                               "aws_access_key_id = AKIA1\n"
                               "aws_secret_access_key=secret1  \n"
                               "\n"
                               "[profile backup]\n"
                               "; another\n"
                               "AWS_ACCESS_KEY_ID = AKIA2\n"
                               "aws_secret_access_key = secret2\n"
                               "aws_session_token = tok2\n"
                               "[empty]\n"
                               "aws_access_key_id = AKIA3\n";
    struct repoloc_creds c;
    struct err e;
    assert_int_equal(repoloc_parse_credentials(text, "default", &c, &e), 0);
    assert_string_equal(c.key_id, "AKIA1");
    assert_string_equal(c.secret, "secret1");
    assert_null(c.session_token);
    repoloc_creds_free(&c);
    assert_int_equal(repoloc_parse_credentials(text, "backup", &c, &e), 0);
    assert_string_equal(c.key_id, "AKIA2");
    assert_string_equal(c.secret, "secret2");
    assert_string_equal(c.session_token, "tok2");
    repoloc_creds_free(&c);
    assert_int_equal(repoloc_parse_credentials(text, "empty", &c, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "lacks"));
    assert_int_equal(repoloc_parse_credentials(text, "nope", &c, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no profile [nope]"));
    assert_int_equal(repoloc_parse_credentials("[\n]\n[", "default", &c, &e), ERR_NOT_FOUND);
    /* A service account key is not HMAC keys: said so. */
    assert_int_equal(
        repoloc_parse_credentials(" {\"type\": \"service_account\"}", "default", &c, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "HMAC keys"));
    assert_null(c.key_id);
}

/* Velero's azure locations (velero pkg/util/azure/storage.go): the container, the account,
 * its URI and the credentials' variable that holds the key; what podvault cannot do yet is
 * refused with what to set. */
static void test_azure_locations(void **state)
{
    struct repoloc l;
    struct err e;
    assert_int_equal(
        from("{\"metadata\":{\"name\":\"az\"},\"spec\":{\"provider\":\"velero.io/azure\","
             "\"objectStorage\":{\"bucket\":\"velero\",\"prefix\":\"/c1/\"},"
             "\"config\":{\"storageAccount\":\"acct\",\"resourceGroup\":\"rg\","
             "\"subscriptionId\":\"sub\",\"storageAccountKeyEnvVar\":\"AZURE_STORAGE_ACCOUNT_"
             "ACCESS_KEY\"}}}",
             "shop", "/tmp", &l, &e),
        0);
    assert_string_equal(l.location, "azure:velero/c1/plugins/podvault/shop");
    assert_string_equal(l.root, "azure:velero/c1");
    assert_string_equal(l.base, "azure:velero/c1/plugins/podvault");
    assert_true(l.azure);
    assert_false(l.s3);
    assert_string_equal(l.azure_account, "acct");
    assert_null(l.azure_endpoint);
    assert_string_equal(l.azure_key_var, "AZURE_STORAGE_ACCOUNT_ACCESS_KEY");
    assert_int_equal(l.n_args, 0);
    assert_non_null(strstr(l.move_hint, "azcopy copy --recursive"));
    repoloc_free(&l);
    assert_int_equal(from("{\"spec\":{\"provider\":\"azure\",\"objectStorage\":{\"bucket\":"
                          "\"vb\"},\"config\":{\"storageAccount\":\"devstoreaccount1\","
                          "\"storageAccountURI\":\"http://127.0.0.1:9/devstoreaccount1\","
                          "\"storageAccountKeyEnvVar\":\"K\"}}}",
                          NULL, "/tmp", &l, &e),
                     0);
    assert_string_equal(l.location, "azure:vb/plugins/podvault");
    assert_string_equal(l.azure_endpoint, "http://127.0.0.1:9/devstoreaccount1");
    repoloc_free(&l);
    /* useAAD: Microsoft Entra ID, no key variable; a key variable given beside it wins, as in
     * Velero's GetStorageAccountCredentials. */
    assert_int_equal(from("{\"spec\":{\"provider\":\"azure\",\"objectStorage\":{\"bucket\":"
                          "\"vb\"},\"config\":{\"storageAccount\":\"acct\",\"useAAD\":\"true\"}}}",
                          NULL, "/tmp", &l, &e),
                     0);
    assert_true(l.azure && l.azure_aad);
    assert_null(l.azure_key_var);
    repoloc_free(&l);
    assert_int_equal(from("{\"spec\":{\"provider\":\"azure\",\"objectStorage\":{\"bucket\":"
                          "\"vb\"},\"config\":{\"storageAccount\":\"acct\",\"useAAD\":\"true\","
                          "\"storageAccountKeyEnvVar\":\"K\"}}}",
                          NULL, "/tmp", &l, &e),
                     0);
    assert_false(l.azure_aad);
    assert_string_equal(l.azure_key_var, "K");
    repoloc_free(&l);
    const char *bad[][2] = {
        {"{\"spec\":{\"provider\":\"azure\",\"objectStorage\":{\"bucket\":\"b\"},"
         "\"config\":{\"storageAccountKeyEnvVar\":\"K\"}}}",
         "config.storageAccount is required"},
        {"{\"spec\":{\"provider\":\"azure\",\"objectStorage\":{\"bucket\":\"b\"},"
         "\"config\":{\"storageAccount\":\"a\",\"useAAD\":\"false\"}}}",
         "or config.useAAD to \"true\" for Microsoft Entra ID"},
        {"{\"spec\":{\"provider\":\"azure\",\"objectStorage\":{\"bucket\":\"b\"},"
         "\"config\":{\"storageAccount\":\"a\",\"resourceGroup\":\"rg\"}}}",
         "does not fetch the key through Azure Resource Manager with resourceGroup and "
         "subscriptionId"},
        {"{\"spec\":{\"provider\":\"azure\",\"config\":{\"storageAccount\":\"a\"}}}",
         "no spec.objectStorage.bucket"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(from(bad[i][0], "ns", "/tmp", &l, &e), ERR_FAIL);
        if (!strstr(e.msg, bad[i][1])) fail_msg("\"%s\" lacks \"%s\"", e.msg, bad[i][1]);
        assert_null(l.location);
    }
}

/* Velero's Azure credentials file: dotenv lines, and the cloud's endpoint. */
static void test_azure_credentials(void **state)
{
    static const char text[] = "# cloud-credentials\n"
                               "AZURE_SUBSCRIPTION_ID=sub\n"
                               "AZURE_RESOURCE_GROUP = rg\n"
                               "export AZURE_STORAGE_ACCOUNT_ACCESS_KEY=\"a2V5PT0=\"\n"
                               "AZURE_CLOUD_NAME=AzureChinaCloud\n"
                               "EMPTY=\n";
    char *v = NULL, *ep = NULL;
    struct err e;
    assert_int_equal(repoloc_azure_var(text, "AZURE_STORAGE_ACCOUNT_ACCESS_KEY", &v, &e), 0);
    assert_string_equal(v, "a2V5PT0=");
    free(v);
    assert_int_equal(repoloc_azure_var(text, "AZURE_RESOURCE_GROUP", &v, &e), 0);
    assert_string_equal(v, "rg");
    free(v);
    assert_int_equal(repoloc_azure_var(text, "AZURE_STORAGE", &v, &e), 0);
    assert_null(v);
    assert_int_equal(repoloc_azure_var(text, "EMPTY", &v, &e), 0);
    assert_string_equal(v, "");
    free(v);
    assert_int_equal(repoloc_azure_var(text, "AZURE_CLOUD_NAME", &v, &e), 0);
    assert_int_equal(repoloc_azure_endpoint(v, "acct", &ep, &e), 0);
    assert_string_equal(ep, "https://acct.blob.core.chinacloudapi.cn");
    free(ep);
    free(v);
    assert_int_equal(repoloc_azure_endpoint(NULL, "acct", &ep, &e), 0);
    assert_string_equal(ep, "https://acct.blob.core.windows.net");
    free(ep);
    assert_int_equal(repoloc_azure_endpoint("AzureGermanCloud", "acct", &ep, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "unknown AZURE_CLOUD_NAME"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_s3_locations),       cmocka_unit_test(test_ca_written),
        cmocka_unit_test(test_local_and_refusals), cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_azure_locations),    cmocka_unit_test(test_azure_credentials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
