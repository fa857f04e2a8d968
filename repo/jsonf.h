/* jsonf.h - bounds-checked field readers for the small JSON documents of a repository (config,
 * key files), on top of jansson. Every reader names the document and field in its error, and
 * refuses values of the wrong type or outside the given bounds rather than converting them. */
#ifndef PV_REPO_JSONF_H
#define PV_REPO_JSONF_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

/* Parses `len` bytes (at most max_len) holding one JSON object, refusing duplicate keys.
 * `what` names the document in errors. *out is a new reference on success. */
int jsonf_parse(const void *data, size_t len, size_t max_len, const char *what, json_t **out,
                struct err *e);

/* An integer field in lo..hi. */
int jsonf_uint(const json_t *obj, const char *key, uint64_t lo, uint64_t hi, const char *what,
               uint64_t *out, struct err *e);

/* A string field of at most max bytes (never with a NUL inside); *out points into obj. */
int jsonf_string(const json_t *obj, const char *key, size_t max, const char *what, const char **out,
                 struct err *e);

/* A string field of exactly 2 * len hex digits, decoded into out[len]. */
int jsonf_hex(const json_t *obj, const char *key, uint8_t *out, size_t len, const char *what,
              struct err *e);

/* Appends the compact encoding of `obj` (keys in insertion order) to `out`. */
int jsonf_dump(const json_t *obj, struct buf *out, const char *what, struct err *e);

#endif
