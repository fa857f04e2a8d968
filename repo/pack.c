/* pack.c - pack files: the writer that assembles them and the reader of their headers; see
 * pack.h, and docs/FORMAT.md for the bytes. */
#include "repo/pack.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/failpoint.h"
#include "backend/backend.h"

static const uint8_t pack_magic[4] = {'P', 'V', 'P', 'K'};
#define PACK_VERSION 1
#define PACK_TRAILER_LEN 4
/* Smallest encoded header entry: type, ID, two one-byte uvarints. */
#define PACK_MIN_ENTRY (1 + OID_LEN + 1 + 1)
/* Largest encoded header entry: type, ID, two five-byte uvarints. */
#define PACK_MAX_ENTRY (1 + OID_LEN + 5 + 5)
/* Largest sealed header a valid pack can have; anything claiming more is refused unread. */
#define PACK_MAX_HEADER                                                                            \
    ((uint64_t)sizeof pack_magic + 1 + 10 + (uint64_t)PACK_MAX_ENTRIES * PACK_MAX_ENTRY +          \
     CRYPT_FILE_OVERHEAD)
/* The first read of a pack's header fetches this much of its end; most headers fit. */
#define PACK_TAIL_GUESS (64u * 1024)

struct pack_writer {
    int fd;        /* the temporary file that receives the pack; owned */
    uint64_t size; /* bytes written to it */
    bool finished;
    struct pack_entry *entries;
    size_t n, cap;
};

void pack_object_name(const struct oid *pack_id, char out[80])
{
    char hex[OID_HEX_LEN + 1];
    oid_hex(pack_id, hex);
    snprintf(out, 80, "data/%.2s/%s", hex, hex);
}

/* "pack-header/<hex>": the header's seal names its pack, so it cannot be moved to another. */
static void header_kind(const struct oid *pack_id, char out[12 + OID_HEX_LEN + 1])
{
    char hex[OID_HEX_LEN + 1];
    snprintf(out, 12 + OID_HEX_LEN + 1, "pack-header/%s", oid_hex(pack_id, hex));
}

int pack_writer_new(struct pack_writer **out, int fd, struct err *e)
{
    struct pack_writer *w = calloc(1, sizeof *w);
    if (!w) {
        close(fd);
        return err_set(e, ERR_FAIL, "pack writer: out of memory");
    }
    w->fd = fd;
    *out = w;
    return 0;
}

void pack_writer_free(struct pack_writer *w)
{
    if (!w) return;
    close(w->fd);
    free(w->entries);
    free(w);
}

/* Appends bytes to the pack's file at its end. */
static int append(struct pack_writer *w, const void *data, size_t len, struct err *e)
{
    if (fp_pwrite_all(w->fd, data, len, w->size) < 0)
        return err_sys(e, errno, "pack writer: writing its temporary file");
    w->size += len;
    return 0;
}

int pack_writer_add(struct pack_writer *w, enum blob_type type, const struct oid *id,
                    const void *sealed, size_t sealed_len, uint32_t raw_len, struct err *e)
{
    if (type != BLOB_DATA && type != BLOB_TREE)
        return err_set(e, ERR_FAIL, "pack writer: invalid blob type %d", (int)type);
    if (w->finished) return err_set(e, ERR_FAIL, "pack writer: the pack is already finished");
    if (w->n >= PACK_MAX_ENTRIES)
        return err_set(e, ERR_FAIL, "pack writer: pack already holds %u blobs", PACK_MAX_ENTRIES);
    /* Offsets are 32-bit and the whole pack, header included, must stay addressable. */
    if (sealed_len > UINT32_MAX || w->size + sealed_len > UINT32_MAX - PACK_MAX_HEADER)
        return err_set(e, ERR_FAIL, "pack writer: pack would exceed 4 GiB");
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        struct pack_entry *p = realloc(w->entries, cap * sizeof *p);
        if (!p) return err_set(e, ERR_FAIL, "pack writer: out of memory");
        w->entries = p;
        w->cap = cap;
    }
    uint64_t offset = w->size;
    int rc = append(w, sealed, sealed_len, e);
    if (rc < 0) {
        /* What a failed write left must not be taken for the next blob's bytes. */
        w->size = offset;
        return rc;
    }
    struct pack_entry *pe = &w->entries[w->n++];
    pe->id = *id;
    pe->type = (uint8_t)type;
    pe->offset = (uint32_t)offset;
    pe->stored_len = (uint32_t)sealed_len;
    pe->raw_len = raw_len;
    return 0;
}

uint64_t pack_writer_size(const struct pack_writer *w)
{
    return w->size;
}

size_t pack_writer_count(const struct pack_writer *w)
{
    return w->n;
}

const struct pack_entry *pack_writer_entries(const struct pack_writer *w, size_t *n)
{
    *n = w->n;
    return w->entries;
}

int pack_writer_fd(const struct pack_writer *w)
{
    return w->fd;
}

int pack_writer_finish(struct pack_writer *w, const struct crypt_keys *k, struct oid *pack_id,
                       uint64_t *pack_len, struct err *e)
{
    if (w->finished) return err_set(e, ERR_FAIL, "pack writer: the pack is already finished");
    struct buf hdr = BUF_INIT, sealed = BUF_INIT;
    int bad = buf_append(&hdr, pack_magic, sizeof pack_magic);
    bad |= buf_put_u8(&hdr, PACK_VERSION);
    bad |= buf_put_uvarint(&hdr, w->n);
    for (size_t i = 0; i < w->n; i++) {
        const struct pack_entry *pe = &w->entries[i];
        bad |= buf_put_u8(&hdr, pe->type);
        bad |= buf_append(&hdr, pe->id.b, OID_LEN);
        bad |= buf_put_uvarint(&hdr, pe->stored_len);
        bad |= buf_put_uvarint(&hdr, pe->raw_len);
    }
    if (bad) {
        buf_free(&hdr);
        return err_set(e, ERR_FAIL, "pack writer: out of memory");
    }
    oid_random(pack_id);
    char kind[12 + OID_HEX_LEN + 1];
    header_kind(pack_id, kind);
    int rc = crypt_file_seal(k, kind, hdr.data, hdr.len, &sealed, e);
    if (rc < 0)
        err_wrap(e, "pack writer");
    else if (buf_put_u32(&sealed, (uint32_t)sealed.len) < 0)
        rc = err_set(e, ERR_FAIL, "pack writer: out of memory");
    uint64_t blobs_end = w->size;
    if (rc == 0) rc = append(w, sealed.data, sealed.len, e);
    if (rc < 0)
        w->size = blobs_end;
    else
        w->finished = true;
    buf_free(&hdr);
    buf_free(&sealed);
    *pack_len = w->size;
    return rc;
}

int pack_writer_load(const struct pack_writer *w, struct buf *out, struct err *e)
{
    if (w->size > SIZE_MAX || buf_reserve(out, (size_t)w->size) < 0)
        return err_set(e, ERR_FAIL, "pack writer: out of memory");
    if (fdio_pread_exact(w->fd, out->data + out->len, (size_t)w->size, 0) < 0)
        return err_sys(e, errno, "pack writer: reading its temporary file");
    out->len += (size_t)w->size;
    return 0;
}

int pack_header_decode(const struct crypt_keys *k, const struct oid *pack_id, const void *tail,
                       size_t tail_len, uint64_t pack_size, struct pack_entry **entries, size_t *n,
                       size_t *need, struct err *e)
{
    char hex[OID_HEX_LEN + 1];
    oid_hex(pack_id, hex);
    *entries = NULL;
    *n = 0;
    if (tail_len > pack_size)
        return err_set(e, ERR_FAIL, "pack %s: %zu bytes of tail but the pack has %llu", hex,
                       tail_len, (unsigned long long)pack_size);
    if (pack_size > UINT32_MAX)
        return err_set(e, ERR_FAIL, "pack %s: %llu bytes is larger than a pack can be", hex,
                       (unsigned long long)pack_size);
    if (tail_len < PACK_TRAILER_LEN) {
        if (need) *need = PACK_TRAILER_LEN;
        return err_set(e, ERR_FAIL, "pack %s: too short to hold a header", hex);
    }
    struct rd trailer =
        rd_make((const uint8_t *)tail + tail_len - PACK_TRAILER_LEN, PACK_TRAILER_LEN);
    uint32_t hdr_len;
    rd_u32(&trailer, &hdr_len);
    if (hdr_len < CRYPT_FILE_OVERHEAD || hdr_len > PACK_MAX_HEADER ||
        (uint64_t)hdr_len + PACK_TRAILER_LEN > pack_size)
        return err_set(e, ERR_FAIL, "pack %s: header length %u does not fit a %llu-byte pack", hex,
                       hdr_len, (unsigned long long)pack_size);
    if ((size_t)hdr_len + PACK_TRAILER_LEN > tail_len) {
        if (need) *need = (size_t)hdr_len + PACK_TRAILER_LEN;
        return err_set(e, ERR_FAIL, "pack %s: header needs %zu bytes of tail, got %zu", hex,
                       (size_t)hdr_len + PACK_TRAILER_LEN, tail_len);
    }
    uint64_t blob_area = pack_size - hdr_len - PACK_TRAILER_LEN;
    const uint8_t *sealed = (const uint8_t *)tail + tail_len - PACK_TRAILER_LEN - hdr_len;

    char kind[12 + OID_HEX_LEN + 1];
    header_kind(pack_id, kind);
    struct buf plain = BUF_INIT;
    int rc = crypt_file_open(k, kind, sealed, hdr_len, &plain, e);
    if (rc < 0) {
        buf_free(&plain);
        return err_wrap(e, "pack %s", hex);
    }

    struct rd r = rd_make(plain.data, plain.len);
    const uint8_t *magic;
    uint8_t version;
    uint64_t count;
    struct pack_entry *ents = NULL;
    if (!rd_skip(&r, sizeof pack_magic, &magic) || memcmp(magic, pack_magic, sizeof pack_magic)) {
        rc = err_set(e, ERR_FAIL, "pack %s: header has a bad magic", hex);
        goto out;
    }
    if (!rd_u8(&r, &version)) {
        rc = err_set(e, ERR_FAIL, "pack %s: header truncated after its magic", hex);
        goto out;
    }
    if (version != PACK_VERSION) {
        rc = err_set(e, ERR_FAIL, "pack %s: unsupported header version %u", hex, version);
        goto out;
    }
    if (!rd_uvarint(&r, &count) || count > PACK_MAX_ENTRIES || count > r.left / PACK_MIN_ENTRY) {
        rc = err_set(e, ERR_FAIL, "pack %s: header has a bad blob count", hex);
        goto out;
    }
    if (count) {
        ents = malloc((size_t)count * sizeof *ents);
        if (!ents) {
            rc = err_set(e, ERR_FAIL, "pack %s: out of memory", hex);
            goto out;
        }
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        struct pack_entry *pe = &ents[i];
        uint64_t stored, raw;
        if (!rd_u8(&r, &pe->type) || !rd_copy(&r, pe->id.b, OID_LEN) || !rd_uvarint(&r, &stored) ||
            !rd_uvarint(&r, &raw)) {
            rc = err_set(e, ERR_FAIL, "pack %s: header truncated at blob %zu", hex, i);
            goto out;
        }
        if (pe->type != BLOB_DATA && pe->type != BLOB_TREE) {
            rc = err_set(e, ERR_FAIL, "pack %s: blob %zu has invalid type %u", hex, i, pe->type);
            goto out;
        }
        if (stored > blob_area - offset || raw > UINT32_MAX) {
            rc = err_set(e, ERR_FAIL, "pack %s: blob %zu runs past the blob area", hex, i);
            goto out;
        }
        pe->offset = (uint32_t)offset;
        pe->stored_len = (uint32_t)stored;
        pe->raw_len = (uint32_t)raw;
        offset += stored;
    }
    if (r.left) {
        rc = err_set(e, ERR_FAIL, "pack %s: %zu unexpected bytes after the header entries", hex,
                     r.left);
        goto out;
    }
    if (offset != blob_area) {
        rc = err_set(e, ERR_FAIL, "pack %s: header lists %llu blob bytes, the pack holds %llu", hex,
                     (unsigned long long)offset, (unsigned long long)blob_area);
        goto out;
    }
    *entries = ents;
    *n = (size_t)count;
    ents = NULL;
    rc = 0;
out:
    free(ents);
    buf_free(&plain);
    return rc;
}

int pack_read_header(struct backend *b, const struct crypt_keys *k, const struct oid *pack_id,
                     struct pack_entry **entries, size_t *n, struct err *e)
{
    char name[80];
    pack_object_name(pack_id, name);
    uint64_t size;
    int rc = backend_stat(b, name, &size, e);
    if (rc < 0) return rc;
    if (size > UINT32_MAX)
        return err_set(e, ERR_FAIL, "pack %s: %llu bytes is larger than a pack can be", name,
                       (unsigned long long)size);

    struct buf tail = BUF_INIT;
    size_t want = size < PACK_TAIL_GUESS ? (size_t)size : PACK_TAIL_GUESS;
    rc = backend_load(b, name, size - want, want, &tail, e);
    size_t need = 0;
    if (rc == 0)
        rc = pack_header_decode(k, pack_id, tail.data, tail.len, size, entries, n, &need, e);
    if (rc == ERR_FAIL && need > tail.len && need <= size) {
        /* The header is larger than the first guess: one exact second read. */
        buf_reset(&tail);
        rc = backend_load(b, name, size - need, need, &tail, e);
        if (rc == 0)
            rc = pack_header_decode(k, pack_id, tail.data, tail.len, size, entries, n, NULL, e);
    }
    buf_free(&tail);
    return rc;
}
