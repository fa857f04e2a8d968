/* test_cred_http.c - unit tests of the credentials endpoints' transport (backend/cred_http.c on
 * backend/http.c) against a scripted HTTP server on 127.0.0.1: 5xx answers tried again up to the
 * attempts, a 4xx answer returned at once with its body, a POST's body and header lines sent,
 * an answer over CRED_HTTP_BODY_MAX refused, and a failed connection named in the error. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backend/cred_http.h"
#include "script_server.h"

/* Runs one exchange against the server at `port`; the answer's body NUL-terminated in out. */
static int exchange(int port, const char *method, const char *body, int attempts, long *status,
                    struct buf *out, struct err *e)
{
    static const char *const headers[] = {"X-Test: yes", NULL};
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/token", port);
    struct cred_http_req r = {.method = method,
                              .url = url,
                              .headers = headers,
                              .body = body,
                              .timeout_s = 5,
                              .attempts = attempts,
                              .what = "the test endpoint"};
    int rc = cred_http_do(&r, status, out, e);
    if (rc == 0) assert_int_equal(buf_append(out, "", 1), 0);
    return rc;
}

static void test_5xx_tried_again(void **state)
{
    static const struct step script[] = {
        {"GET /token", "X-Test: yes", "503 Service Unavailable", "busy", NULL},
        {"GET /token", "X-Test: yes", "500 Internal Server Error", "down", NULL},
        {"GET /token", "X-Test: yes", "200 OK", "{\"token\":\"t\"}", NULL},
    };
    struct server s;
    server_start(&s, script, 3);
    struct buf out = {0};
    struct err e = {0};
    long status = 0;
    assert_int_equal(exchange(s.port, "GET", NULL, 3, &status, &out, &e), 0);
    server_stop(&s);
    assert_string_equal(s.mismatch, "");
    assert_int_equal(s.served, 3);
    assert_int_equal(status, 200);
    assert_string_equal((const char *)out.data, "{\"token\":\"t\"}");
    buf_free(&out);
}

/* After the last attempt a 5xx answer is still an answer: the caller reads its body. */
static void test_attempts_bound_5xx(void **state)
{
    static const struct step script[] = {
        {"POST /token", "a=b", "502 Bad Gateway", "first", NULL},
        {"POST /token", "a=b", "502 Bad Gateway", "second", NULL},
    };
    struct server s;
    server_start(&s, script, 2);
    struct buf out = {0};
    struct err e = {0};
    long status = 0;
    assert_int_equal(exchange(s.port, "POST", "a=b", 2, &status, &out, &e), 0);
    server_stop(&s);
    assert_string_equal(s.mismatch, "");
    assert_int_equal(s.served, 2);
    assert_int_equal(status, 502);
    assert_string_equal((const char *)out.data, "second");
    buf_free(&out);
}

static void test_4xx_returned_at_once(void **state)
{
    static const struct step script[] = {
        {"POST /token", "grant_type=x", "400 Bad Request", "{\"error\":\"invalid_grant\"}", NULL},
    };
    struct server s;
    server_start(&s, script, 1);
    struct buf out = {0};
    struct err e = {0};
    long status = 0;
    assert_int_equal(exchange(s.port, "POST", "grant_type=x", 3, &status, &out, &e), 0);
    server_stop(&s);
    assert_string_equal(s.mismatch, "");
    assert_int_equal(s.served, 1);
    assert_int_equal(status, 400);
    assert_string_equal((const char *)out.data, "{\"error\":\"invalid_grant\"}");
    buf_free(&out);
}

static void test_answer_too_large(void **state)
{
    char *big = malloc(CRED_HTTP_BODY_MAX + 2);
    assert_non_null(big);
    memset(big, 'a', CRED_HTTP_BODY_MAX + 1);
    big[CRED_HTTP_BODY_MAX + 1] = '\0';
    const struct step script[] = {{"GET /token", NULL, "200 OK", big, NULL}};
    struct server s;
    server_start(&s, script, 1);
    struct buf out = {0};
    struct err e = {0};
    long status = 0;
    assert_int_equal(exchange(s.port, "GET", NULL, 3, &status, &out, &e), ERR_FAIL);
    server_stop(&s);
    assert_int_equal(s.served, 1);
    assert_non_null(strstr(e.msg, "the test endpoint at http://127.0.0.1:"));
    assert_non_null(strstr(e.msg, "larger than"));
    assert_int_equal(out.len, 0);
    buf_free(&out);
    free(big);
}

/* No answer: the error names the endpoint, its URL and curl's reason. */
static void test_refused_named(void **state)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd); /* nothing listens there now */
    struct buf out = {0};
    struct err e = {0};
    long status = 0;
    assert_int_equal(exchange(ntohs(a.sin_port), "GET", NULL, 2, &status, &out, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "the test endpoint at http://127.0.0.1:"));
    assert_non_null(strstr(e.msg, "Couldn't connect to server"));
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the server writes to a client that gave up */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_5xx_tried_again),      cmocka_unit_test(test_attempts_bound_5xx),
        cmocka_unit_test(test_4xx_returned_at_once), cmocka_unit_test(test_answer_too_large),
        cmocka_unit_test(test_refused_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
