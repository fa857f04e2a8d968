/* options.h - small parsers for option values: sizes, counts, pattern files, path lists. */
#ifndef PV_CLI_OPTIONS_H
#define PV_CLI_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "cli/cli.h"

/* Parses a byte size: a number with an optional binary suffix (K, M, G, KiB, MiB, GiB, any
 * case). Returns false on anything else or on overflow. */
bool opt_parse_size(const char *s, uint64_t *out);
/* A UTC time as --as-of takes it: "YYYY-MM-DDTHH:MM:SS[.fff][Z]", the same with a space for
 * the T, or "@SECONDS[.fff]" since the epoch; in milliseconds since the epoch. */
bool opt_parse_time_ms(const char *s, int64_t *ms);
/* Parses a decimal number within [min, max]. */
bool opt_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Appends the patterns of an exclude file to `l` (owned copies): one a line, blank lines and
 * lines starting with '#' skipped, surrounding white space trimmed. */
int opt_read_patterns(const char *path, struct cli_list *l, struct err *e);
/* Makes a path absolute against the working directory without touching the file system
 * ("." and ".." components and repeated slashes folded). Returns a malloc'd string or NULL. */
char *opt_abs_path(const char *path);

#endif
