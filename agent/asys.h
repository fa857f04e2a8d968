/* asys.h - small system helpers the agent's modules share: whole-file reads, JSON-lines logs and
 * the string lists that become a child's argv and environment.
 *
 * The agent is a long-running program whose output is its log: one JSON object a line on stderr,
 * {"time":..,"level":..,"msg":..} plus the object the line is about ("kind", "namespace", "name").
 */
#ifndef PV_AGENT_ASYS_H
#define PV_AGENT_ASYS_H

#include <stddef.h>

#include "base/buf.h"
#include "base/err.h"

/* Appends the whole file to `out`, failing when it is larger than `max` bytes. A NUL is kept
 * after the data (not counted in out->len) so text can be used as a C string. */
int asys_read_file(const char *path, size_t max, struct buf *out, struct err *e);

/* Now in UTC as Kubernetes and the log lines write times, "2024-05-01T10:00:00Z" (buf needs 21
 * bytes). Thread-safe. */
void asys_now(char buf[21]);

enum asys_level { ASYS_DEBUG, ASYS_INFO, ASYS_WARN, ASYS_ERROR };

/* Lines below `min` are dropped (default ASYS_INFO). Set once at start-up. */
void asys_log_level(enum asys_level min);

/* Writes one log line; kind, ns and name may be NULL (then left out). */
void asys_log(enum asys_level lvl, const char *kind, const char *ns, const char *name,
              const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A NULL-terminated list of owned strings (argv, envp); zeroed when freed, as it may hold
 * secrets. Start from {0}. The add functions return 0, or -1 when memory is out. */
struct asys_strv {
    char **v;
    size_t n, cap;
};
int asys_sv_add(struct asys_strv *s, const char *x);
int asys_sv_addf(struct asys_strv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void asys_sv_free(struct asys_strv *s);
/* The list as execve(2) wants it (NULL when nothing was added). */
const char *const *asys_sv_list(const struct asys_strv *s);

#endif
