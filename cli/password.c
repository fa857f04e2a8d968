/* password.c - reads passwords from files, the environment, or the terminal with echo off. */
#include "cli/password.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

/* Longer passwords are refused rather than cut, so that what was typed is what is used. */
#define PASSWORD_MAX 4096

static char *dup_secret(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (!p) return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static int read_file(const char *path, char **out, struct err *e)
{
    char buf[PASSWORD_MAX + 2];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_sys(e, errno, "password file %s", path);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int saved = errno;
            close(fd);
            sodium_memzero(buf, sizeof buf);
            return err_sys(e, saved, "reading password file %s", path);
        }
        if (n == 0) break;
        len += (size_t)n;
        if (len == sizeof buf) break;
    }
    close(fd);
    if (len > 0 && buf[len - 1] == '\n') len--;
    if (len > 0 && buf[len - 1] == '\r') len--;
    int rc = 0;
    if (len > PASSWORD_MAX)
        rc = err_set(e, ERR_FAIL, "password file %s: longer than %d bytes", path, PASSWORD_MAX);
    else if (memchr(buf, '\0', len))
        rc = err_set(e, ERR_FAIL, "password file %s: holds a NUL byte", path);
    else if (!(*out = dup_secret(buf, len)))
        rc = err_set(e, ERR_FAIL, "out of memory");
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* Reads one line from the terminal into buf. poll() is used because, unlike read(), it is never
 * restarted after a signal, so Ctrl-C ends the prompt even with SA_RESTART handlers. */
static int read_line(int fd, char *buf, size_t cap, size_t *len,
                     const volatile sig_atomic_t *cancel, struct err *e)
{
    *len = 0;
    for (;;) {
        if (cancel && *cancel) return err_set(e, ERR_CANCELED, "interrupted");
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, -1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return err_sys(e, errno, "reading the terminal");
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return err_sys(e, errno, "reading the terminal");
        if (n == 0 || c == '\n') return 0;
        if (*len + 1 >= cap)
            return err_set(e, ERR_FAIL, "password longer than %d bytes", PASSWORD_MAX);
        buf[(*len)++] = c;
    }
}

static int prompt_once(int fd, const char *prompt, char *buf, size_t cap, size_t *len,
                       const volatile sig_atomic_t *cancel, struct err *e)
{
    struct termios old, quiet;
    bool restore = false;
    if (write(fd, prompt, strlen(prompt)) < 0) return err_sys(e, errno, "writing the terminal");
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    int rc = read_line(fd, buf, cap, len, cancel, e);
    if (restore) tcsetattr(fd, TCSAFLUSH, &old);
    /* ECHONL did not end the line when the read was cut short. */
    if (rc) (void)!write(fd, "\n", 1);
    return rc;
}

static int prompt(const struct password_source *src, char **out, struct err *e)
{
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_FAIL,
                       "no password given and no terminal to ask on: use --password-file, "
                       "PODVAULT_PASSWORD_FILE or PODVAULT_PASSWORD");
    char first[PASSWORD_MAX + 1], second[PASSWORD_MAX + 1];
    size_t n1 = 0, n2 = 0;
    int rc = prompt_once(fd, src->prompt, first, sizeof first, &n1, src->cancel, e);
    if (!rc && src->confirm) {
        rc = prompt_once(fd, "enter the password again: ", second, sizeof second, &n2, src->cancel,
                         e);
        if (!rc && (n1 != n2 || memcmp(first, second, n1) != 0))
            rc = err_set(e, ERR_FAIL, "the passwords do not match");
    }
    if (!rc && !(*out = dup_secret(first, n1))) rc = err_set(e, ERR_FAIL, "out of memory");
    sodium_memzero(first, sizeof first);
    sodium_memzero(second, sizeof second);
    close(fd);
    return rc;
}

int password_get(const struct password_source *src, char **out, struct err *e)
{
    *out = NULL;
    int rc;
    const char *env = src->env ? getenv(src->env) : NULL;
    if (src->file && *src->file)
        rc = read_file(src->file, out, e);
    else if (env) {
        rc = 0;
        if (!(*out = dup_secret(env, strlen(env)))) rc = err_set(e, ERR_FAIL, "out of memory");
    } else
        rc = prompt(src, out, e);
    if (rc == 0 && src->confirm && **out == '\0') {
        password_free(*out);
        *out = NULL;
        rc = err_set(e, ERR_FAIL, "an empty password is not allowed");
    }
    return rc;
}

void password_free(char *pw)
{
    if (!pw) return;
    sodium_memzero(pw, strlen(pw));
    free(pw);
}
