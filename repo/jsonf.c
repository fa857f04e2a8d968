/* jsonf.c - bounds-checked JSON field readers; see jsonf.h. */
#include "repo/jsonf.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

int jsonf_parse(const void *data, size_t len, size_t max_len, const char *what, json_t **out,
                struct err *e)
{
    *out = NULL;
    if (len > max_len)
        return err_set(e, ERR_FAIL, "%s: %zu bytes is larger than the limit %zu", what, len,
                       max_len);
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_set(e, ERR_FAIL, "%s: invalid JSON at line %d column %d: %s", what, jerr.line,
                       jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, ERR_FAIL, "%s: not a JSON object", what);
    }
    *out = root;
    return 0;
}

int jsonf_uint(const json_t *obj, const char *key, uint64_t lo, uint64_t hi, const char *what,
               uint64_t *out, struct err *e)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return err_set(e, ERR_FAIL, "%s: field \"%s\" is missing", what, key);
    if (!json_is_integer(v))
        return err_set(e, ERR_FAIL, "%s: field \"%s\" is not an integer", what, key);
    json_int_t n = json_integer_value(v);
    if (n < 0 || (uint64_t)n < lo || (uint64_t)n > hi)
        return err_set(e, ERR_FAIL, "%s: field \"%s\" = %lld is outside %llu..%llu", what, key,
                       (long long)n, (unsigned long long)lo, (unsigned long long)hi);
    *out = (uint64_t)n;
    return 0;
}

int jsonf_string(const json_t *obj, const char *key, size_t max, const char *what, const char **out,
                 struct err *e)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return err_set(e, ERR_FAIL, "%s: field \"%s\" is missing", what, key);
    if (!json_is_string(v))
        return err_set(e, ERR_FAIL, "%s: field \"%s\" is not a string", what, key);
    /* jansson refuses \u0000 in strings (no JSON_ALLOW_NUL), so this is a proper C string. */
    if (json_string_length(v) > max)
        return err_set(e, ERR_FAIL, "%s: field \"%s\" is longer than %zu bytes", what, key, max);
    *out = json_string_value(v);
    return 0;
}

int jsonf_hex(const json_t *obj, const char *key, uint8_t *out, size_t len, const char *what,
              struct err *e)
{
    const char *s;
    int rc = jsonf_string(obj, key, 2 * len, what, &s, e);
    if (rc < 0) return rc;
    size_t n = 0;
    const char *end = NULL;
    if (strlen(s) != 2 * len || sodium_hex2bin(out, len, s, 2 * len, NULL, &n, &end) != 0 ||
        n != len || end != s + 2 * len)
        return err_set(e, ERR_FAIL, "%s: field \"%s\" is not %zu hex digits", what, key, 2 * len);
    return 0;
}

int jsonf_dump(const json_t *obj, struct buf *out, const char *what, struct err *e)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) return err_set(e, ERR_FAIL, "%s: encoding JSON failed (out of memory)", what);
    int rc = buf_append(out, s, strlen(s));
    free(s);
    if (rc < 0) return err_set(e, ERR_FAIL, "%s: out of memory", what);
    return 0;
}
