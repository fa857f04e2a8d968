/* fuzz_cred_answers.c - libFuzzer target for the parsers of what credentials endpoints send
 * back (backend/aws_creds.h: STS XML, container and instance metadata JSON;
 * backend/azure_token.h: Entra ID and managed identity JSON): whatever a server, or something
 * pretending to be one, answers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/aws_creds.h"
#include "backend/azure_token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_cred(int rc, const struct aws_cred *c, const struct err *e)
{
    if (rc != 0 && rc != ERR_FAIL) abort();
    if (rc == ERR_FAIL && (e->msg[0] == '\0' || c->access_key)) abort();
    if (rc == 0 && (!c->access_key || !*c->access_key || !c->secret_key || !*c->secret_key))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aws_cred c;
    struct err e;
    err_clear(&e);
    int rc = aws_creds_parse_sts((const char *)data, size, &c, &e);
    check_cred(rc, &c, &e);
    aws_cred_free(&c);
    err_clear(&e);
    rc = aws_creds_parse_json((const char *)data, size, &c, &e);
    check_cred(rc, &c, &e);
    aws_cred_free(&c);
    char *tok = NULL;
    time_t exp = 0;
    err_clear(&e);
    rc = azure_token_parse((const char *)data, size, 1000, &tok, &exp, &e);
    if (rc != 0 && rc != ERR_FAIL) abort();
    if (rc == 0 && (!tok || !*tok || exp <= 0)) abort();
    if (rc != 0 && (tok || e.msg[0] == '\0')) abort();
    free(tok);
    return 0;
}
