/* password.h - getting a password: from a file, the environment, or the terminal (echo off). */
#ifndef PV_CLI_PASSWORD_H
#define PV_CLI_PASSWORD_H

#include <signal.h>
#include <stdbool.h>

#include "base/err.h"

/* Where a password may come from, in order: `file` (--password-file or
 * $PODVAULT_PASSWORD_FILE), then the variable `env` (may be NULL), then a prompt on the
 * controlling terminal. `confirm` asks twice when prompting (new passwords). A password read
 * from a file loses its trailing line break. `cancel` is watched while prompting (Ctrl-C gives
 * ERR_CANCELED with the terminal restored). The result is malloc'd; free it with
 * password_free(). */
struct password_source {
    const char *file;
    const char *env;
    const char *prompt;
    bool confirm;
    const volatile sig_atomic_t *cancel;
};

int password_get(const struct password_source *src, char **out, struct err *e);
/* Wipes and frees a password. */
void password_free(char *pw);

#endif
