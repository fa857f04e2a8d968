/* script_server.h - a scripted HTTP/1.1 server on 127.0.0.1 for unit tests: a thread that answers
 * the n-th connection's request with script[n] (Connection: close) and notes the first request
 * that does not match the script in `mismatch`. Header-only, included by one test file each;
 * the script and the server struct are the caller's and must outlive server_stop. Needs
 * <cmocka.h> included before it (set-up failures are assertions). */
#ifndef PV_TESTS_SCRIPT_SERVER_H
#define PV_TESTS_SCRIPT_SERVER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

/* One answer: the request line must contain `expect` (and the request, headers or body,
 * `header`, when given). */

struct step {
    const char *expect, *header;
    const char *status; /* "200 OK" */
    const char *body;   /* sent whole; NULL with `chunks` */
    const char *const *chunks;
};

struct server {
    int fd, port;
    const struct step *script;
    int n_steps, served;
    char mismatch[512];
    pthread_t thread;
};

static void send_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void *serve(void *arg)
{
    struct server *s = arg;
    while (s->served < s->n_steps) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) break;
        char req[8192];
        size_t len = 0;
        while (len < sizeof req - 1) {
            ssize_t r = read(c, req + len, sizeof req - 1 - len);
            if (r <= 0) break;
            len += (size_t)r;
            req[len] = '\0';
            char *end = strstr(req, "\r\n\r\n");
            if (end) {
                const char *cl = strcasestr(req, "Content-Length:");
                size_t body = cl ? (size_t)atoi(cl + 15) : 0;
                if (len >= (size_t)(end + 4 - req) + body) break;
            }
        }
        const struct step *st = &s->script[s->served++];
        char *eol = strstr(req, "\r\n");
        if (eol) *eol = '\0';
        if (!strstr(req, st->expect) && !s->mismatch[0])
            snprintf(s->mismatch, sizeof s->mismatch, "step %d: got '%s', wanted '%s'", s->served,
                     req, st->expect);
        if (eol) *eol = '\r';
        if (st->header && !strstr(req, st->header) && !s->mismatch[0])
            snprintf(s->mismatch, sizeof s->mismatch, "step %d: no header '%s'", s->served,
                     st->header);
        char head[256];
        if (st->chunks) {
            snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nTransfer-Encoding: "
                     "chunked\r\nConnection: close\r\n\r\n",
                     st->status);
            send_all(c, head, strlen(head));
            for (const char *const *ch = st->chunks; *ch; ch++) {
                char size[32];
                snprintf(size, sizeof size, "%zx\r\n", strlen(*ch));
                send_all(c, size, strlen(size));
                send_all(c, *ch, strlen(*ch));
                send_all(c, "\r\n", 2);
            }
            send_all(c, "0\r\n\r\n", 5);
        } else {
            snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: "
                     "%zu\r\nConnection: close\r\n\r\n",
                     st->status, strlen(st->body));
            send_all(c, head, strlen(head));
            send_all(c, st->body, strlen(st->body));
        }
        close(c);
    }
    return NULL;
}

static void server_start(struct server *s, const struct step *script, int n)
{
    memset(s, 0, sizeof *s);
    s->script = script;
    s->n_steps = n;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 8), 0);
    socklen_t al = sizeof a;
    getsockname(s->fd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(s->thread, NULL);
}

#endif
