/* format.h - turning values into text for people and JSON for programs. */
#ifndef PV_CLI_FORMAT_H
#define PV_CLI_FORMAT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/oid.h"
#include "repo/snapshot.h"
#include "repo/tree.h"

/* "1.50 MiB"; out must hold 32 bytes. */
const char *fmt_bytes(uint64_t n, char out[32]);
/* "1:02:03" or "2:03"; out must hold 32 bytes. */
const char *fmt_duration(double seconds, char out[32]);
/* RFC 3339 in UTC with nanoseconds: "2024-05-01T12:00:00.123456789Z"; out holds 48 bytes. */
const char *fmt_time_rfc3339(int64_t sec, uint32_t nsec, char out[48]);
/* Local time "2024-05-01 14:00:00"; out holds 32 bytes. */
const char *fmt_time_local(int64_t sec, char out[32]);
/* The first 8 hex digits of an ID; out holds 9 bytes. */
const char *fmt_short_id(const struct oid *id, char out[9]);
/* "drwxr-xr-x" style type and permission string; out holds 11 bytes. */
const char *fmt_mode(uint8_t type, uint32_t mode, char out[11]);
/* Name of a tree node type ("file", "dir", ...). */
const char *fmt_node_type(uint8_t type);

/* Writes bytes for a terminal: control characters and backslashes appear as escapes, so a
 * hostile name cannot break lines or drive the terminal. */
void fmt_put_escaped(FILE *f, const void *bytes, size_t len);

/* A JSON string of arbitrary bytes: invalid UTF-8 sequences become U+FFFD. NULL when memory
 * is out. */
json_t *fmt_json_bytes(const void *bytes, size_t len);
json_t *fmt_json_str(const char *s); /* NULL s gives JSON null */
json_t *fmt_json_oid(const struct oid *id);
json_t *fmt_json_time(int64_t sec, uint32_t nsec);
/* Sets a key and steals the value; a NULL value is skipped. */
void fmt_json_set(json_t *obj, const char *key, json_t *value);
/* Prints one JSON value on one line (compact) or indented, then a newline; frees it. Returns 0,
 * or -1 when the value is NULL (memory was out) or writing failed. */
int fmt_json_print(json_t *v, bool pretty);

/* Every snap_summary field by name, as CLI.md lists them. */
json_t *fmt_json_snap_summary(const struct snap_summary *s);
/* A snapshot as `snapshots --json` prints it. */
json_t *fmt_json_snapshot(const struct snapshot *s);
/* A tree node; `content` adds the extents and extended attributes. */
json_t *fmt_json_node(const struct tree_node *n, bool content);

#endif
