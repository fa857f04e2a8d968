/* job.c - child processes that run the data path, and their --json output; see job.h. */
#include "agent/job.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/k8s.h"
#include "base/contract.h"

#define LINE_MAX_BYTES (1u << 20)
#define STDOUT_COPY_MAX (64u << 20)
#define KILL_AFTER_SECONDS 30

struct job {
    pthread_mutex_t mu; /* guards pid against reuse: it is cleared once the child is reaped */
    pid_t pid;
    int out_fd, err_fd;
    time_t cancel_at; /* when job_cancel was first called, 0 if never */
};

void job_result_free(struct job_result *r)
{
    json_decref(r->summary);
    r->summary = NULL;
}

const char *job_result_reason(const struct job_result *r, char *buf, size_t cap)
{
    if (r->first_error[0])
        snprintf(buf, cap, "%s", r->first_error);
    else if (r->stderr_tail[0])
        snprintf(buf, cap, "%s", r->stderr_tail);
    else if (r->signaled)
        snprintf(buf, cap, "killed by signal %d", r->exit_code - 128);
    else
        snprintf(buf, cap, "exit code %d", r->exit_code);
    return buf;
}

static uint64_t u64_of(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v) && json_integer_value(v) >= 0) return (uint64_t)json_integer_value(v);
    if (json_is_real(v) && json_real_value(v) >= 0) return (uint64_t)json_real_value(v);
    return 0;
}

enum job_line job_parse_line(const char *line, size_t len, struct job_status *st, json_t **obj)
{
    *obj = NULL;
    json_t *j = json_loadb(line, len, 0, NULL);
    const char *type = k8s_str(j, PV_MSG_KEY);
    enum job_line kind = JOB_LINE_OTHER;
    if (!type) {
        json_decref(j);
        return kind;
    }
    if (strcmp(type, PV_MSG_STATUS) == 0) {
        kind = JOB_LINE_STATUS;
        st->seconds_elapsed = json_number_value(json_object_get(j, "seconds_elapsed"));
        st->percent_done = json_number_value(json_object_get(j, "percent_done"));
        st->total_files = u64_of(j, "total_files");
        st->files_done = u64_of(j, "files_done");
        st->total_bytes = u64_of(j, "total_bytes");
        st->bytes_done = u64_of(j, "bytes_done");
        st->bytes_new = u64_of(j, "bytes_new");
        st->errors = u64_of(j, "errors");
        json_decref(j);
        return kind;
    }
    if (strcmp(type, PV_MSG_ERROR) == 0)
        kind = JOB_LINE_ERROR;
    else if (strcmp(type, PV_MSG_SUMMARY) == 0)
        kind = JOB_LINE_SUMMARY;
    if (kind == JOB_LINE_OTHER)
        json_decref(j);
    else
        *obj = j;
    return kind;
}

int job_start(const char *const *argv, const char *const *envp, struct job **out, struct err *e)
{
    int op[2], ep[2];
    /* posix_spawn may report a missing program only as exit status 127 (it does under
     * valgrind): check first, so the caller gets the reason. */
    if (access(argv[0], X_OK) < 0) return err_sys(e, errno, "starting %s", argv[0]);
    if (pipe2(op, O_CLOEXEC) < 0) return err_sys(e, errno, "creating a pipe");
    if (pipe2(ep, O_CLOEXEC) < 0) {
        close(op[0]);
        close(op[1]);
        return err_sys(e, errno, "creating a pipe");
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, op[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    posix_spawnattr_init(&at);
    /* A process group of its own: signals meant for the agent's group (a terminal's ^C, a
     * kill of the group) do not stop jobs behind the agent's back, and a cancel reaches
     * whatever the job started. */
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &at, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(op[1]);
    close(ep[1]);
    if (rc != 0) {
        close(op[0]);
        close(ep[0]);
        return err_sys(e, rc, "starting %s", argv[0]);
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(op[0]);
        close(ep[0]);
        return err_set(e, ERR_FAIL, "out of memory");
    }
    pthread_mutex_init(&j->mu, NULL);
    j->pid = pid;
    j->out_fd = op[0];
    j->err_fd = ep[0];
    *out = j;
    return 0;
}

void job_cancel(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    if (j->pid > 0) kill(-j->pid, SIGTERM);
    if (!j->cancel_at) j->cancel_at = time(NULL);
    pthread_mutex_unlock(&j->mu);
}

struct follow {
    struct job_result *res;
    void (*on_status)(void *ctx, const struct job_status *st);
    void *ctx;
};

static int on_line(void *ctx, char *line, size_t len)
{
    struct follow *f = ctx;
    json_t *obj;
    switch (job_parse_line(line, len, &f->res->last, &obj)) {
    case JOB_LINE_STATUS:
        if (f->on_status) f->on_status(f->ctx, &f->res->last);
        break;
    case JOB_LINE_ERROR:
        if (f->res->error_lines++ == 0) {
            const char *p = k8s_str(obj, "path"), *m = k8s_str(obj, "error");
            snprintf(f->res->first_error, sizeof f->res->first_error, "%s%s%s", p ? p : "",
                     p ? ": " : "", m ? m : "(no message)");
        }
        break;
    case JOB_LINE_SUMMARY:
        json_decref(f->res->summary);
        f->res->summary = json_incref(obj);
        break;
    case JOB_LINE_OTHER:
        break;
    }
    json_decref(obj);
    return 0;
}

/* Keeps the last bytes of stderr, as text on one line. */
static void keep_tail(char *tail, size_t cap, const char *data, size_t n)
{
    size_t have = strlen(tail);
    if (n >= cap - 1) {
        data += n - (cap - 1);
        n = cap - 1;
        have = 0;
    } else if (have + n > cap - 1) {
        size_t drop = have + n - (cap - 1);
        memmove(tail, tail + drop, have - drop);
        have -= drop;
    }
    for (size_t i = 0; i < n; i++)
        tail[have + i] = data[i] == '\n' ? ' ' : data[i];
    tail[have + n] = '\0';
}

int job_wait(struct job *j, void (*on_status)(void *ctx, const struct job_status *st), void *ctx,
             struct buf *stdout_copy, struct job_result *res, struct err *e)
{
    memset(res, 0, sizeof *res);
    struct follow f = {res, on_status, ctx};
    struct k8s_lines lines = {.max = LINE_MAX_BYTES, .fn = on_line, .ctx = &f};
    bool out_open = true, err_open = true, killed = false, exited = false;
    int status = 0;
    pid_t w = 0;
    char chunk[16384];
    while (out_open || err_open) {
        struct pollfd p[2] = {{out_open ? j->out_fd : -1, POLLIN, 0},
                              {err_open ? j->err_fd : -1, POLLIN, 0}};
        /* Once the child has ended only what is already in the pipes is read: a descendant
         * that kept them open does not hold the job up. */
        int n = poll(p, 2, exited ? 0 : 1000);
        if (n < 0 && errno != EINTR) break;
        if (n == 0 && exited) break;
        pthread_mutex_lock(&j->mu);
        if (!killed && j->cancel_at && time(NULL) - j->cancel_at >= KILL_AFTER_SECONDS) {
            kill(-j->pid, SIGKILL);
            killed = true;
        }
        pthread_mutex_unlock(&j->mu);
        for (int i = 0; i < 2 && n > 0; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t got = read(p[i].fd, chunk, sizeof chunk);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                if (i == 0)
                    out_open = false;
                else
                    err_open = false;
                continue;
            }
            if (i == 1) {
                keep_tail(res->stderr_tail, sizeof res->stderr_tail, chunk, (size_t)got);
                continue;
            }
            if (stdout_copy && stdout_copy->len + (size_t)got <= STDOUT_COPY_MAX)
                buf_append(stdout_copy, chunk, (size_t)got);
            /* An over-long line is dropped; the rest of the output still counts. */
            if (k8s_lines_feed(&lines, chunk, (size_t)got) < 0) lines.pending.len = 0;
        }
        if (!exited) {
            w = waitpid(j->pid, &status, WNOHANG);
            exited = w == j->pid || (w < 0 && errno == ECHILD);
        }
    }
    if (lines.pending.len) k8s_lines_feed(&lines, "\n", 1);
    k8s_lines_free(&lines);
    if (!exited)
        while ((w = waitpid(j->pid, &status, 0)) < 0 && errno == EINTR) {
        }
    pthread_mutex_lock(&j->mu);
    j->pid = 0;
    pthread_mutex_unlock(&j->mu);
    close(j->out_fd);
    close(j->err_fd);
    j->out_fd = j->err_fd = -1;
    if (w < 0) return err_sys(e, errno, "waiting for a job process");
    res->signaled = WIFSIGNALED(status);
    res->exit_code = res->signaled ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    return 0;
}

void job_free(struct job *j)
{
    if (!j) return;
    if (j->pid > 0) { /* never waited for: do not leave a zombie or a runaway child */
        kill(-j->pid, SIGKILL);
        waitpid(j->pid, NULL, 0);
    }
    if (j->out_fd >= 0) close(j->out_fd);
    if (j->err_fd >= 0) close(j->err_fd);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void job_slots_init(struct job_slots *s, unsigned max)
{
    pthread_mutex_init(&s->mu, NULL);
    s->used = 0;
    s->max = max ? max : 1;
}

bool job_slots_take(struct job_slots *s)
{
    pthread_mutex_lock(&s->mu);
    bool ok = s->used < s->max;
    if (ok) s->used++;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void job_slots_give(struct job_slots *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->used) s->used--;
    pthread_mutex_unlock(&s->mu);
}

unsigned job_slots_used(struct job_slots *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned u = s->used;
    pthread_mutex_unlock(&s->mu);
    return u;
}
