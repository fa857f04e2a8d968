/* test_pack.c - unit tests of pack writing and pack header decoding (repo/pack.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <fcntl.h>

#include "backend/backend.h"
#include "repo/pack.h"

static struct crypt_keys keys;

static int setup(void **state)
{
    struct err e;
    if (crypt_init(&e) < 0) return -1;
    crypt_keys_generate(&keys);
    return 0;
}

/* A writer on a fresh anonymous temporary file. */
static struct pack_writer *new_writer(void)
{
    struct pack_writer *w;
    struct err e;
    int fd;
    const char *dir = getenv("TMPDIR");
    assert_int_equal(backend_tmp_file_in(dir && *dir ? dir : "/tmp", &fd, &e), 0);
    assert_int_equal(pack_writer_new(&w, fd, &e), 0);
    return w;
}

/* Finishes the pack and reads its bytes back from the writer's file into `pack`. */
static void finish(struct pack_writer *w, struct oid *pack_id, struct buf *pack)
{
    struct err e;
    uint64_t len = 0;
    assert_int_equal(pack_writer_finish(w, &keys, pack_id, &len, &e), 0);
    assert_int_equal(len, pack_writer_size(w));
    buf_reset(pack);
    assert_int_equal(pack_writer_load(w, pack, &e), 0);
    assert_int_equal(pack->len, len);
}

/* Seals `n` blobs of varying sizes into a fresh pack; returns the writer (entries still valid). */
static struct pack_writer *make_pack(size_t n, struct oid *pack_id, struct buf *pack)
{
    struct err e;
    struct pack_writer *w = new_writer();
    struct buf plain = BUF_INIT, sealed = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&plain);
        for (size_t j = 0; j < 100 + i * 37 % 5000; j++)
            buf_put_u8(&plain, (uint8_t)(i * 31 + j * (i % 7)));
        struct oid id;
        crypt_blob_id(&keys, plain.data, plain.len, &id, NULL);
        enum blob_type t = i % 3 == 0 ? BLOB_TREE : BLOB_DATA;
        buf_reset(&sealed);
        assert_int_equal(crypt_blob_seal(&keys, t, &id, plain.data, plain.len, 3, &sealed, &e), 0);
        assert_int_equal(
            pack_writer_add(w, t, &id, sealed.data, sealed.len, (uint32_t)plain.len, &e), 0);
    }
    assert_int_equal(pack_writer_count(w), n);
    uint64_t blob_bytes = pack_writer_size(w);
    finish(w, pack_id, pack);
    assert_true(pack->len > blob_bytes + 4 + CRYPT_FILE_OVERHEAD);
    buf_free(&plain);
    buf_free(&sealed);
    return w;
}

static void test_roundtrip(void **state)
{
    struct oid pid;
    struct buf pack = BUF_INIT;
    struct err e;
    struct pack_writer *w = make_pack(50, &pid, &pack);
    size_t wn;
    const struct pack_entry *we = pack_writer_entries(w, &wn);
    assert_int_equal(wn, 50);

    struct pack_entry *ents;
    size_t n, need = 0;
    assert_int_equal(
        pack_header_decode(&keys, &pid, pack.data, pack.len, pack.len, &ents, &n, &need, &e), 0);
    assert_int_equal(n, 50);
    uint32_t off = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(oid_eq(&ents[i].id, &we[i].id));
        assert_int_equal(ents[i].type, we[i].type);
        assert_int_equal(ents[i].offset, we[i].offset);
        assert_int_equal(ents[i].offset, off);
        assert_int_equal(ents[i].stored_len, we[i].stored_len);
        assert_int_equal(ents[i].raw_len, we[i].raw_len);
        off += ents[i].stored_len;
        struct buf out = BUF_INIT;
        assert_int_equal(crypt_blob_open(&keys, ents[i].type, &ents[i].id,
                                         pack.data + ents[i].offset, ents[i].stored_len,
                                         ents[i].raw_len, &out, &e),
                         0);
        assert_int_equal(out.len, ents[i].raw_len);
        buf_free(&out);
    }
    free(ents);

    /* A finished pack takes nothing more, and cannot be finished twice. */
    uint8_t blob[CRYPT_BLOB_OVERHEAD + 3] = {1, 2, 3};
    struct oid bid = {{9}}, pid2;
    uint64_t len;
    assert_int_equal(pack_writer_add(w, BLOB_DATA, &bid, blob, sizeof blob, 3, &e), ERR_FAIL);
    assert_int_equal(pack_writer_finish(w, &keys, &pid2, &len, &e), ERR_FAIL);
    pack_writer_free(w);

    /* A second pack gets its own ID and only its own blobs. */
    w = new_writer();
    assert_int_equal(pack_writer_add(w, BLOB_DATA, &bid, blob, sizeof blob, 3, &e), 0);
    finish(w, &pid2, &pack);
    assert_false(oid_eq(&pid, &pid2));
    assert_int_equal(
        pack_header_decode(&keys, &pid2, pack.data, pack.len, pack.len, &ents, &n, NULL, &e), 0);
    assert_int_equal(n, 1);
    assert_true(oid_eq(&ents[0].id, &bid));
    assert_memory_equal(pack.data, blob, sizeof blob);
    free(ents);
    pack_writer_free(w);
    buf_free(&pack);
}

static void test_empty_pack(void **state)
{
    struct pack_writer *w = new_writer();
    struct err e;
    struct oid pid;
    struct buf pack = BUF_INIT;
    finish(w, &pid, &pack);
    struct pack_entry *ents = (struct pack_entry *)&pack;
    size_t n = 7;
    assert_int_equal(
        pack_header_decode(&keys, &pid, pack.data, pack.len, pack.len, &ents, &n, NULL, &e), 0);
    assert_int_equal(n, 0);
    free(ents);
    pack_writer_free(w);
    buf_free(&pack);
}

static void test_writer_rejects(void **state)
{
    struct pack_writer *w = new_writer();
    struct err e;
    struct oid id = {{1}};
    assert_int_equal(pack_writer_add(w, (enum blob_type)2, &id, "x", 1, 1, &e), ERR_FAIL);
    assert_int_equal(pack_writer_add(w, BLOB_DATA, &id, "x", (size_t)UINT32_MAX + 1, 1, &e),
                     ERR_FAIL);
    assert_int_equal(pack_writer_count(w), 0);
    pack_writer_free(w);
}

/* A file that refuses writes (as a full disk does) fails the add with the system's reason and
 * leaves the pack as it was. */
static void test_write_fails(void **state)
{
    struct pack_writer *w;
    struct err e;
    struct oid id = {{1}};
    int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pack_writer_new(&w, fd, &e), 0);
    uint8_t blob[CRYPT_BLOB_OVERHEAD + 3] = {0};
    assert_int_equal(pack_writer_add(w, BLOB_DATA, &id, blob, sizeof blob, 3, &e), ERR_FAIL);
    assert_non_null(strstr(e.msg, "No space left on device"));
    assert_int_equal(pack_writer_count(w), 0);
    assert_int_equal(pack_writer_size(w), 0);
    pack_writer_free(w);
}

static void test_object_name(void **state)
{
    struct oid id;
    char hex[OID_HEX_LEN + 1], name[80], want[80];
    memset(id.b, 0xab, OID_LEN);
    id.b[0] = 0x0f;
    oid_hex(&id, hex);
    pack_object_name(&id, name);
    snprintf(want, sizeof want, "data/0f/%s", hex);
    assert_string_equal(name, want);
}

static void expect_decode(const struct oid *pid, const uint8_t *tail, size_t tail_len,
                          uint64_t size, int want)
{
    struct pack_entry *ents = NULL;
    size_t n = 0;
    struct err e;
    err_clear(&e);
    assert_int_equal(pack_header_decode(&keys, pid, tail, tail_len, size, &ents, &n, NULL, &e),
                     want);
    if (want < 0) {
        assert_null(ents);
        assert_true(e.msg[0] != '\0');
    }
    free(ents);
}

static uint32_t header_len(const struct buf *pack)
{
    const uint8_t *t = pack->data + pack->len - 4;
    return (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
}

static void test_tampered(void **state)
{
    struct oid pid, other;
    struct buf pack = BUF_INIT;
    struct pack_writer *w = make_pack(10, &pid, &pack);
    uint32_t hdr_len = header_len(&pack);
    size_t hdr_at = pack.len - 4 - hdr_len;

    /* Every byte of the sealed header is authenticated. */
    for (size_t i = hdr_at; i < pack.len - 4; i += 7) {
        pack.data[i] ^= 0x10;
        expect_decode(&pid, pack.data, pack.len, pack.len, ERR_AUTH);
        pack.data[i] ^= 0x10;
    }
    /* The header of one pack does not pass for another's. */
    other = pid;
    other.b[5] ^= 1;
    expect_decode(&other, pack.data, pack.len, pack.len, ERR_AUTH);
    /* Another key does not open it. */
    struct crypt_keys saved = keys;
    crypt_keys_generate(&keys);
    expect_decode(&pid, pack.data, pack.len, pack.len, ERR_AUTH);
    keys = saved;
    /* Damage in the blob area is the blobs' business, not the header's. */
    pack.data[0] ^= 1;
    expect_decode(&pid, pack.data, pack.len, pack.len, 0);
    pack_writer_free(w);
    buf_free(&pack);
}

static void test_truncated(void **state)
{
    struct oid pid;
    struct buf pack = BUF_INIT;
    struct err e;
    struct pack_writer *w = make_pack(20, &pid, &pack);
    struct pack_entry *ents;
    size_t n, need = 0;

    /* A tail too short for the header says how much is needed; that much then suffices. */
    assert_int_equal(pack_header_decode(&keys, &pid, pack.data + pack.len - 100, 100, pack.len,
                                        &ents, &n, &need, &e),
                     ERR_FAIL);
    assert_true(need > 100 && need < pack.len);
    assert_int_equal(pack_header_decode(&keys, &pid, pack.data + pack.len - need, need, pack.len,
                                        &ents, &n, NULL, &e),
                     0);
    assert_int_equal(n, 20);
    free(ents);
    need = 0;
    assert_int_equal(pack_header_decode(&keys, &pid, pack.data + pack.len - 2, 2, pack.len, &ents,
                                        &n, &need, &e),
                     ERR_FAIL);
    assert_int_equal(need, 4);

    /* Cut at the end: the trailer is gone or wrong. */
    for (size_t cut = 1; cut < 64; cut++)
        expect_decode(&pid, pack.data, pack.len - cut, pack.len - cut, ERR_FAIL);
    /* Cut at the front: the header no longer accounts for the pack's blob bytes. */
    expect_decode(&pid, pack.data + 1, pack.len - 1, pack.len - 1, ERR_FAIL);
    /* An extra byte at the front: likewise. */
    expect_decode(&pid, pack.data, pack.len, pack.len + 1, ERR_FAIL);
    /* A tail claimed longer than the pack. */
    expect_decode(&pid, pack.data, pack.len, pack.len - 1, ERR_FAIL);
    pack_writer_free(w);
    buf_free(&pack);
}

/* Builds a pack of `blob_bytes` zero bytes whose header is `plain`, sealed for `pid`. */
static void craft(struct buf *out, const struct oid *pid, const struct buf *plain,
                  size_t blob_bytes)
{
    char hex[OID_HEX_LEN + 1], kind[100];
    struct err e;
    snprintf(kind, sizeof kind, "pack-header/%s", oid_hex(pid, hex));
    buf_reset(out);
    for (size_t i = 0; i < blob_bytes; i++)
        buf_put_u8(out, 0);
    size_t before = out->len;
    assert_int_equal(crypt_file_seal(&keys, kind, plain->data, plain->len, out, &e), 0);
    buf_put_u32(out, (uint32_t)(out->len - before));
}

struct hdr_entry {
    uint8_t type;
    uint64_t stored, raw;
};

static void hdr(struct buf *p, const char *magic, uint8_t version, uint64_t count,
                const struct hdr_entry *ents, size_t n)
{
    buf_reset(p);
    buf_append(p, magic, 4);
    buf_put_u8(p, version);
    buf_put_uvarint(p, count);
    for (size_t i = 0; i < n; i++) {
        struct oid id;
        memset(id.b, (int)i + 1, OID_LEN);
        buf_put_u8(p, ents[i].type);
        buf_append(p, id.b, OID_LEN);
        buf_put_uvarint(p, ents[i].stored);
        buf_put_uvarint(p, ents[i].raw);
    }
}

static void test_hostile_headers(void **state)
{
    struct oid pid = {{0x42}};
    struct buf plain = BUF_INIT, pack = BUF_INIT;
    struct hdr_entry two[2] = {{BLOB_DATA, 100, 5}, {BLOB_TREE, 50, 7}};

    /* The honest version of the crafted pack decodes, so the refusals below are meaningful. */
    hdr(&plain, "PVPK", 1, 2, two, 2);
    craft(&pack, &pid, &plain, 150);
    expect_decode(&pid, pack.data, pack.len, pack.len, 0);

    uint64_t counts[] = {3, 1000, PACK_MAX_ENTRIES + 1ull, 1ull << 40, UINT64_MAX};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        hdr(&plain, "PVPK", 1, counts[i], two, 2);
        craft(&pack, &pid, &plain, 150);
        expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);
    }
    hdr(&plain, "PVPK", 1, 1, two, 2); /* trailing entry bytes */
    craft(&pack, &pid, &plain, 100);
    expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);
    hdr(&plain, "PVPX", 1, 2, two, 2);
    craft(&pack, &pid, &plain, 150);
    expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);
    hdr(&plain, "PVPK", 2, 2, two, 2);
    craft(&pack, &pid, &plain, 150);
    expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);
    hdr(&plain, "PVPK", 1, 2, two, 2); /* lengths sum to less, or more, than the blob area */
    craft(&pack, &pid, &plain, 151);
    expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);
    craft(&pack, &pid, &plain, 149);
    expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);

    struct hdr_entry bad[][2] = {
        {{2, 100, 5}, {BLOB_TREE, 50, 7}},                         /* type */
        {{BLOB_DATA, 100, UINT32_MAX + 1ull}, {BLOB_TREE, 50, 7}}, /* raw length */
        {{BLOB_DATA, UINT64_MAX, 5}, {BLOB_TREE, 151, 7}},         /* wraps around */
        {{BLOB_DATA, 200, 5}, {BLOB_TREE, UINT64_MAX - 49, 7}},    /* sum wraps to 150 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hdr(&plain, "PVPK", 1, 2, bad[i], 2);
        craft(&pack, &pid, &plain, 150);
        expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);
    }

    /* Trailers that lie about the header length. */
    hdr(&plain, "PVPK", 1, 2, two, 2);
    craft(&pack, &pid, &plain, 150);
    uint32_t lies[] = {0, 1, CRYPT_FILE_OVERHEAD - 1, (uint32_t)pack.len, UINT32_MAX};
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        for (int b = 0; b < 4; b++)
            pack.data[pack.len - 4 + b] = (uint8_t)(lies[i] >> (8 * b));
        expect_decode(&pid, pack.data, pack.len, pack.len, ERR_FAIL);
    }
    /* A pack claimed larger than 4 GiB. */
    craft(&pack, &pid, &plain, 150);
    expect_decode(&pid, pack.data, pack.len, (uint64_t)UINT32_MAX + 2, ERR_FAIL);
    buf_free(&plain);
    buf_free(&pack);
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_read_header_from_backend(void **state)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[512];
    snprintf(dir, sizeof dir, "%s/pv-pack-XXXXXX", tmp);
    assert_non_null(mkdtemp(dir));
    struct backend *b;
    struct err e;
    assert_int_equal(backend_open(dir, NULL, true, &b, &e), 0);

    /* A small pack (one read), and one whose header exceeds the 64 KiB first read. */
    size_t sizes[] = {3, 2500};
    for (size_t s = 0; s < 2; s++) {
        struct oid pid;
        struct buf pack = BUF_INIT;
        struct pack_writer *w = make_pack(sizes[s], &pid, &pack);
        if (s == 1) assert_true(header_len(&pack) > 64 * 1024);
        char name[80];
        pack_object_name(&pid, name);
        assert_int_equal(backend_save(b, name, pack.data, pack.len, false, &e), 0);
        struct pack_entry *ents;
        size_t n;
        assert_int_equal(pack_read_header(b, &keys, &pid, &ents, &n, &e), 0);
        size_t wn;
        const struct pack_entry *we = pack_writer_entries(w, &wn);
        assert_int_equal(n, wn);
        for (size_t i = 0; i < n; i++) {
            assert_true(oid_eq(&ents[i].id, &we[i].id));
            assert_int_equal(ents[i].type, we[i].type);
            assert_int_equal(ents[i].offset, we[i].offset);
            assert_int_equal(ents[i].stored_len, we[i].stored_len);
            assert_int_equal(ents[i].raw_len, we[i].raw_len);
        }
        free(ents);
        pack_writer_free(w);
        buf_free(&pack);
    }
    struct oid missing = {{7}};
    struct pack_entry *ents;
    size_t n;
    assert_int_equal(pack_read_header(b, &keys, &missing, &ents, &n, &e), ERR_NOT_FOUND);
    backend_close(b);
    rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_empty_pack),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_write_fails),
        cmocka_unit_test(test_object_name),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_read_header_from_backend),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
