/* buf.c - growable buffers and bounds-checked readers; see buf.h. */
#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

int buf_reserve(struct buf *b, size_t extra)
{
    if (extra <= b->cap - b->len) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return -1;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
    if (len == 0) return 0;
    if (buf_reserve(b, len) < 0) return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int buf_put_u8(struct buf *b, uint8_t v)
{
    return buf_append(b, &v, 1);
}

int buf_put_u32(struct buf *b, uint32_t v)
{
    uint8_t le[4];
    for (int i = 0; i < 4; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    return buf_append(b, le, sizeof le);
}

int buf_put_u64(struct buf *b, uint64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    return buf_append(b, le, sizeof le);
}

int buf_put_uvarint(struct buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        tmp[n++] = byte | (v ? 0x80 : 0);
    } while (v);
    return buf_append(b, tmp, n);
}

int buf_put_bytes(struct buf *b, const void *data, size_t len)
{
    if (buf_put_uvarint(b, len) < 0) return -1;
    return buf_append(b, data, len);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

bool rd_u8(struct rd *r, uint8_t *v)
{
    if (r->left < 1) return false;
    *v = r->p[0];
    r->p++;
    r->left--;
    return true;
}

bool rd_u32(struct rd *r, uint32_t *v)
{
    if (r->left < 4) return false;
    uint32_t x = 0;
    for (int i = 0; i < 4; i++)
        x |= (uint32_t)r->p[i] << (8 * i);
    *v = x;
    r->p += 4;
    r->left -= 4;
    return true;
}

bool rd_u64(struct rd *r, uint64_t *v)
{
    if (r->left < 8) return false;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)r->p[i] << (8 * i);
    *v = x;
    r->p += 8;
    r->left -= 8;
    return true;
}

bool rd_uvarint(struct rd *r, uint64_t *v)
{
    uint64_t x = 0;
    for (size_t i = 0; i < 10 && i < r->left; i++) {
        uint8_t byte = r->p[i];
        if (i == 9 && byte > 1) return false; /* would overflow 64 bits */
        x |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            if (byte == 0 && i > 0) return false; /* overlong: not the canonical encoding */
            *v = x;
            r->p += i + 1;
            r->left -= i + 1;
            return true;
        }
    }
    return false;
}

bool rd_copy(struct rd *r, void *out, size_t len)
{
    if (r->left < len) return false;
    if (len) memcpy(out, r->p, len);
    r->p += len;
    r->left -= len;
    return true;
}

bool rd_skip(struct rd *r, size_t len, const uint8_t **out)
{
    if (r->left < len) return false;
    if (out) *out = r->p;
    r->p += len;
    r->left -= len;
    return true;
}

bool rd_bytes(struct rd *r, size_t max, const uint8_t **out, size_t *len)
{
    struct rd save = *r;
    uint64_t n;
    if (!rd_uvarint(r, &n) || n > max || n > r->left) {
        *r = save;
        return false;
    }
    *len = (size_t)n;
    return rd_skip(r, (size_t)n, out);
}
