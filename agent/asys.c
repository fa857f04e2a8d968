/* asys.c - whole-file reads, JSON-lines logging and string lists for the agent; see asys.h. */
#include "agent/asys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

int asys_read_file(const char *path, size_t max, struct buf *out, struct err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_sys(e, errno, "opening %s", path);
    size_t start = out->len;
    int rc = 0;
    for (;;) {
        if (buf_reserve(out, 4096) < 0) {
            rc = err_set(e, ERR_FAIL, "reading %s: out of memory", path);
            break;
        }
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len - 1);
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = err_sys(e, errno, "reading %s", path);
            break;
        }
        if (n == 0) break;
        out->len += (size_t)n;
        if (out->len - start > max) {
            rc = err_set(e, ERR_FAIL, "%s is larger than %zu bytes", path, max);
            break;
        }
    }
    close(fd);
    if (rc < 0) {
        out->len = start;
        return rc;
    }
    out->data[out->len] = '\0';
    return 0;
}

/* Written once before threads start, read afterwards. */
void asys_now(char buf[21])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static enum asys_level log_min = ASYS_INFO;

void asys_log_level(enum asys_level min)
{
    log_min = min;
}

void asys_log(enum asys_level lvl, const char *kind, const char *ns, const char *name,
              const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    if (lvl < log_min) return;
    char msg[2048], ts[21];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    asys_now(ts);
    json_t *o = json_pack("{s:s, s:s, s:s}", "time", ts, "level", names[lvl], "msg", msg);
    if (!o) return;
    if (kind) json_object_set_new(o, "kind", json_string(kind));
    if (ns) json_object_set_new(o, "namespace", json_string(ns));
    if (name) json_object_set_new(o, "name", json_string(name));
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line) return;
    fprintf(stderr, "%s\n", line); /* one call, so lines of several threads do not interleave */
    free(line);
}

int asys_sv_add(struct asys_strv *s, const char *x)
{
    if (s->n + 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(x))) return -1;
    s->v[++s->n] = NULL;
    return 0;
}

int asys_sv_addf(struct asys_strv *s, const char *fmt, ...)
{
    char *x;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&x, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    int rc = asys_sv_add(s, x);
    sodium_memzero(x, (size_t)n);
    free(x);
    return rc;
}

void asys_sv_free(struct asys_strv *s)
{
    for (size_t i = 0; i < s->n; i++) {
        sodium_memzero(s->v[i], strlen(s->v[i]));
        free(s->v[i]);
    }
    free(s->v);
    memset(s, 0, sizeof *s);
}

const char *const *asys_sv_list(const struct asys_strv *s)
{
    return (const char *const *)s->v;
}
