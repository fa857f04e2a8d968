/* test_crypt.c - unit tests of key derivation, blob IDs, and sealing of blobs and files:
 * round trips, compression decisions, tamper detection and hostile plaintexts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <sodium.h>
#include <zstd.h>

#include "chunker/chunker.h"
#include "repo/crypt.h"

static struct crypt_keys keys, other;

static int setup(void **state)
{
    struct err e;
    if (crypt_init(&e) < 0) return -1;
    crypt_keys_generate(&keys);
    crypt_keys_generate(&other);
    return 0;
}

static uint8_t *random_data(size_t len)
{
    uint8_t *p = malloc(len + 1);
    assert_non_null(p);
    randombytes_buf(p, len);
    return p;
}

/* Text-like data that zstd shrinks a lot. */
static uint8_t *text_data(size_t len)
{
    uint8_t *p = malloc(len + 1);
    assert_non_null(p);
    static const char words[] = "volume snapshot backup restore chunk pack index tree blob ";
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)words[(i * 7 + i / 13) % (sizeof words - 1)];
    return p;
}

static void test_key_derivation(void **state)
{
    struct crypt_keys a, b;
    memset(&a, 0, sizeof a);
    memset(a.master, 0x42, sizeof a.master);
    b = a;
    crypt_keys_derive(&a);
    crypt_keys_derive(&b);
    assert_memory_equal(&a, &b, sizeof a);
    const uint8_t *sub[] = {a.master, a.blob_id, a.blob, a.file, a.gear};
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            assert_memory_not_equal(sub[i], sub[j], CRYPT_KEY_LEN);
    /* The documented derivation: crypto_kdf, context "podvault", ids 1..4. */
    uint8_t k[32];
    crypto_kdf_derive_from_key(k, 32, 1, "podvault", a.master);
    assert_memory_equal(k, a.blob_id, 32);
    crypto_kdf_derive_from_key(k, 32, 2, "podvault", a.master);
    assert_memory_equal(k, a.blob, 32);
    crypto_kdf_derive_from_key(k, 32, 3, "podvault", a.master);
    assert_memory_equal(k, a.file, 32);
    crypto_kdf_derive_from_key(k, 32, 4, "podvault", a.master);
    assert_memory_equal(k, a.gear, 32);
    assert_memory_not_equal(keys.master, other.master, CRYPT_KEY_LEN);
    crypt_keys_wipe(&a);
    static const struct crypt_keys zero;
    assert_memory_equal(&a, &zero, sizeof a);
}

/* Known answers, also reproduced by an independent implementation from docs/FORMAT.md:
 * a change here is a change of the repository format. */
static void test_known_answers(void **state)
{
    struct crypt_keys k;
    char hex[OID_HEX_LEN + 1];
    for (int i = 0; i < 32; i++)
        k.master[i] = (uint8_t)i;
    crypt_keys_derive(&k);
    sodium_bin2hex(hex, sizeof hex, k.blob_id, 32);
    assert_string_equal(hex, "7feb3eb686d3da9c5274c620b9ef09afd58b416916bd98f403d58f362feb337e");
    sodium_bin2hex(hex, sizeof hex, k.blob, 32);
    assert_string_equal(hex, "698cc2b1789fc3f496800ef92a5fb64dcf746c7133d30be15662328698f2654c");
    sodium_bin2hex(hex, sizeof hex, k.file, 32);
    assert_string_equal(hex, "3d6bd28e21d115915d225dd562f9eb0b0aa5d2ae638e50ad13339fe0296aaf25");
    sodium_bin2hex(hex, sizeof hex, k.gear, 32);
    assert_string_equal(hex, "33becf5ee69e338c938edb8334ec3d7a24e9a66ec067940706bf887ae479ef96");
    /* HMAC-SHA-256 (what `openssl dgst -sha256 -mac HMAC -macopt hexkey:<blob_id>` prints),
     * and the keyed BLAKE2b-256 of version 1 repositories. */
    struct oid id;
    assert_int_equal(k.id_hash, CRYPT_ID_HMAC_SHA256);
    assert_int_equal(crypt_blob_id(&k, "abc", 3, &id, NULL), 0);
    assert_string_equal(oid_hex(&id, hex),
                        "6cc6ce6eec6ef58300a486a12f50ab38af8a4d03c2f5050a18c1fa1a513b3128");
    k.id_hash = CRYPT_ID_BLAKE2B;
    assert_int_equal(crypt_blob_id(&k, "abc", 3, &id, NULL), 0);
    assert_string_equal(oid_hex(&id, hex),
                        "31087082a961b66dc61ba8cd299af50eacbde5f688a0aff472d1bddaa23aec8e");
}

static void test_blob_id(void **state)
{
    struct oid x, y, z;
    crypt_blob_id(&keys, "hello", 5, &x, NULL);
    crypt_blob_id(&keys, "hello", 5, &y, NULL);
    assert_true(oid_eq(&x, &y));
    crypt_blob_id(&other, "hello", 5, &z, NULL);
    assert_false(oid_eq(&x, &z));
    crypt_blob_id(&keys, "hellp", 5, &z, NULL);
    assert_false(oid_eq(&x, &z));
    uint8_t ref[32];
    unsigned int ref_len = 0;
    assert_non_null(
        HMAC(EVP_sha256(), keys.blob_id, 32, (const uint8_t *)"hello", 5, ref, &ref_len));
    assert_memory_equal(ref, x.b, 32);
    crypt_blob_id(&keys, NULL, 0, &z, NULL); /* the empty blob has an ID too */
    assert_false(oid_is_zero(&z));
    /* Version 1 repositories: keyed BLAKE2b. */
    struct crypt_keys v1 = keys;
    v1.id_hash = CRYPT_ID_BLAKE2B;
    crypt_blob_id(&v1, "hello", 5, &y, NULL);
    crypto_generichash(ref, 32, (const uint8_t *)"hello", 5, keys.blob_id, 32);
    assert_memory_equal(ref, y.b, 32);
    assert_false(oid_eq(&x, &y));
}

/* Seals and opens `len` bytes; returns the stored length. */
static size_t round_trip(enum blob_type type, const uint8_t *plain, size_t len, int level)
{
    struct err e;
    struct oid id;
    struct buf sealed = BUF_INIT, out = BUF_INIT;
    crypt_blob_id(&keys, plain, len, &id, NULL);
    assert_int_equal(buf_append(&sealed, "prefix", 6), 0);
    assert_int_equal(crypt_blob_seal(&keys, type, &id, plain, len, level, &sealed, &e), 0);
    assert_memory_equal(sealed.data, "prefix", 6);
    assert_int_equal(buf_append(&out, "xy", 2), 0);
    assert_int_equal(
        crypt_blob_open(&keys, type, &id, sealed.data + 6, sealed.len - 6, len, &out, &e), 0);
    assert_int_equal(out.len, len + 2);
    assert_memory_equal(out.data, "xy", 2);
    if (len) assert_memory_equal(out.data + 2, plain, len);
    size_t stored = sealed.len - 6;
    buf_free(&sealed);
    buf_free(&out);
    return stored;
}

static void test_blob_round_trips(void **state)
{
    static const size_t sizes[] = {0, 1, 63, 64, 1000, 131072, 131073, 1u << 20, 4u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        uint8_t *r = random_data(n), *t = text_data(n);
        /* random data is never compressed: exactly the overhead */
        assert_int_equal(round_trip(BLOB_DATA, r, n, 3), n + CRYPT_BLOB_OVERHEAD);
        size_t st = round_trip(BLOB_TREE, t, n, 3);
        if (n >= 1000) assert_true(st < n / 4);
        /* level 0 disables compression */
        assert_int_equal(round_trip(BLOB_DATA, t, n, 0), n + CRYPT_BLOB_OVERHEAD);
        free(r);
        free(t);
    }
    /* Random head and tail around a compressible middle: the sample is taken from the middle, and
     * the whole chunk is compressed. */
    size_t n = 1u << 20;
    uint8_t *mix = random_data(n), *t = text_data(n);
    memcpy(mix + n / 8, t, n - n / 4);
    assert_true(round_trip(BLOB_DATA, mix, n, 3) < n - n / 2);
    free(mix);
    free(t);
}

static void test_blob_tamper(void **state)
{
    struct err e;
    uint8_t *t = text_data(3000), *r = random_data(300);
    const uint8_t *plains[] = {t, r};
    size_t lens[] = {3000, 300};
    for (int p = 0; p < 2; p++) {
        struct oid id, id2;
        struct buf s = BUF_INIT, out = BUF_INIT;
        crypt_blob_id(&keys, plains[p], lens[p], &id, NULL);
        assert_int_equal(crypt_blob_seal(&keys, BLOB_DATA, &id, plains[p], lens[p], 3, &s, &e), 0);
        for (size_t i = 0; i < s.len; i++) {
            s.data[i] ^= 0x01;
            assert_int_equal(
                crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, lens[p], &out, &e), ERR_AUTH);
            s.data[i] ^= 0x01;
            assert_int_equal(out.len, 0);
        }
        assert_true(strstr(e.msg, "authentication failed") != NULL);
        /* wrong type, wrong id, wrong key */
        assert_int_equal(crypt_blob_open(&keys, BLOB_TREE, &id, s.data, s.len, lens[p], &out, &e),
                         ERR_AUTH);
        id2 = id;
        id2.b[5] ^= 0x80;
        assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id2, s.data, s.len, lens[p], &out, &e),
                         ERR_AUTH);
        assert_int_equal(crypt_blob_open(&other, BLOB_DATA, &id, s.data, s.len, lens[p], &out, &e),
                         ERR_AUTH);
        /* truncated and extended */
        assert_true(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len - 1, lens[p], &out, &e) <
                    0);
        assert_int_equal(buf_put_u8(&s, 0), 0);
        assert_true(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, lens[p], &out, &e) < 0);
        s.len--;
        /* a wrong expected length is refused, not an authentication failure */
        assert_int_equal(
            crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, lens[p] + 1, &out, &e), ERR_FAIL);
        assert_int_equal(out.len, 0);
        /* the intact bytes still open */
        assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, lens[p], &out, &e),
                         0);
        buf_free(&s);
        buf_free(&out);
    }
    free(t);
    free(r);
}

/* Opens s through crypt_blob_open_begin/feed/end, fed in pieces cut at `cuts` (in order). */
static int open_in_pieces(const struct buf *s, const struct oid *id, size_t raw_len,
                          const size_t *cuts, size_t n_cuts, struct buf *out, struct err *e)
{
    struct crypt_opening o;
    int rc = crypt_blob_open_begin(&o, &keys, BLOB_DATA, id, s->len, raw_len, e);
    if (rc < 0) return rc;
    size_t from = 0;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : s->len;
        crypt_blob_open_feed(&o, s->data + from, to - from);
        from = to;
    }
    return crypt_blob_open_end(&o, out, e);
}

/* A stored blob fed in pieces cut at every position (inside the nonce, the ciphertext and the
 * tag; with empty pieces; in three) opens as the whole does; a flipped byte anywhere fails
 * authentication; too few or too many bytes fail; an abandoned opening leaves nothing. */
static void test_blob_open_pieces(void **state)
{
    struct err e;
    const size_t n = 500;
    uint8_t *t = text_data(n), *r = random_data(n);
    const uint8_t *plains[] = {t, r};
    for (int p = 0; p < 2; p++) {
        struct oid id;
        struct buf s = BUF_INIT, out = BUF_INIT;
        crypt_blob_id(&keys, plains[p], n, &id, NULL);
        assert_int_equal(crypt_blob_seal(&keys, BLOB_DATA, &id, plains[p], n, 3, &s, &e), 0);
        for (size_t cut = 0; cut <= s.len; cut++) {
            size_t three[2] = {cut, cut + (s.len - cut) / 2};
            buf_reset(&out);
            assert_int_equal(open_in_pieces(&s, &id, n, &cut, 1, &out, &e), 0);
            assert_int_equal(open_in_pieces(&s, &id, n, three, 2, &out, &e), 0);
            assert_int_equal(out.len, 2 * n);
            assert_memory_equal(out.data, plains[p], n);
            assert_memory_equal(out.data + n, plains[p], n);
            /* damage at the cut, in the nonce, the ciphertext or the tag */
            size_t at = cut < s.len ? cut : s.len - 1;
            buf_reset(&out);
            s.data[at] ^= 0x40;
            assert_int_equal(open_in_pieces(&s, &id, n, three, 2, &out, &e), ERR_AUTH);
            s.data[at] ^= 0x40;
            assert_int_equal(out.len, 0);
        }
        /* too few bytes, then too many */
        struct crypt_opening o;
        assert_int_equal(crypt_blob_open_begin(&o, &keys, BLOB_DATA, &id, s.len, n, &e), 0);
        crypt_blob_open_feed(&o, s.data, s.len - 1);
        assert_int_equal(crypt_blob_open_end(&o, &out, &e), ERR_FAIL);
        assert_true(strstr(e.msg, "stored bytes were read") != NULL);
        assert_int_equal(crypt_blob_open_begin(&o, &keys, BLOB_DATA, &id, s.len, n, &e), 0);
        crypt_blob_open_feed(&o, s.data, s.len - 1);
        crypt_blob_open_feed(&o, s.data + s.len - 2, 2);
        assert_int_equal(crypt_blob_open_end(&o, &out, &e), ERR_FAIL);
        assert_true(strstr(e.msg, "more than the stored length") != NULL);
        /* abandoned half-way: nothing appended, and the next opening on this thread works */
        assert_int_equal(crypt_blob_open_begin(&o, &keys, BLOB_DATA, &id, s.len, n, &e), 0);
        crypt_blob_open_feed(&o, s.data, s.len / 2);
        assert_int_equal(crypt_blob_open_end(&o, NULL, &e), 0);
        assert_int_equal(out.len, 0);
        assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), 0);
        assert_memory_equal(out.data, plains[p], n);
        /* lengths that cannot be right fail at the start */
        assert_int_equal(crypt_blob_open_begin(&o, &keys, BLOB_DATA, &id, 10, n, &e), ERR_FAIL);
        buf_free(&s);
        buf_free(&out);
    }
    free(t);
    free(r);
}

static void test_blob_limits(void **state)
{
    struct err e;
    struct oid id;
    struct buf s = BUF_INIT, out = BUF_INIT;
    memset(&id, 1, sizeof id);
    uint8_t small[CRYPT_BLOB_OVERHEAD] = {0};
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, small, sizeof small,
                                     (size_t)CHUNKER_LIMIT_MAX + 1, &out, &e),
                     ERR_FAIL);
    assert_int_equal(
        crypt_blob_open(&keys, BLOB_TREE, &id, small, sizeof small, SIZE_MAX, &out, &e), ERR_FAIL);
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, small, 10, 0, &out, &e), ERR_FAIL);
    assert_int_equal(
        crypt_blob_open(&keys, (enum blob_type)7, &id, small, sizeof small, 0, &out, &e), ERR_FAIL);
    assert_int_equal(crypt_blob_seal(&keys, (enum blob_type)7, &id, small, 1, 3, &s, &e), ERR_FAIL);
    assert_int_equal(out.len, 0);
    buf_free(&s);
    buf_free(&out);
}

/* Seals flag || payload under the blob key as the format says, bypassing crypt_blob_seal, to
 * present crypt_blob_open with authentic but malformed plaintexts. */
static void forge(const struct oid *id, uint8_t flag, const void *payload, size_t len,
                  struct buf *s)
{
    uint8_t ad[13 + 1 + 32];
    memcpy(ad, "podvault-blob", 13);
    ad[13] = BLOB_DATA;
    memcpy(ad + 14, id->b, 32);
    uint8_t *m = malloc(len + 1);
    assert_non_null(m);
    m[0] = flag;
    memcpy(m + 1, payload, len);
    buf_reset(s);
    assert_int_equal(buf_reserve(s, len + CRYPT_BLOB_OVERHEAD), 0);
    randombytes_buf(s->data, 24);
    unsigned long long clen;
    crypto_aead_xchacha20poly1305_ietf_encrypt(s->data + 24, &clen, m, len + 1, ad, sizeof ad, NULL,
                                               s->data, keys.blob);
    s->len = 24 + (size_t)clen;
    free(m);
}

static void test_blob_hostile_plaintext(void **state)
{
    struct err e;
    struct buf s = BUF_INIT, out = BUF_INIT;
    size_t n = 5000;
    uint8_t *t = text_data(n);
    struct oid id;
    crypt_blob_id(&keys, t, n, &id, NULL);

    forge(&id, 0, t, n, &s); /* a well-formed raw blob opens */
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), 0);
    buf_reset(&out);

    forge(&id, 2, t, n, &s); /* unknown flag */
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), ERR_FAIL);

    struct oid wrong = id;
    wrong.b[0] ^= 1;
    forge(&wrong, 0, t, n, &s); /* authentic for `wrong`, but the content hashes to `id` */
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &wrong, s.data, s.len, n, &out, &e),
                     ERR_FAIL);
    assert_true(strstr(e.msg, "does not match its ID") != NULL);

    uint8_t z[8192];
    size_t zn = ZSTD_compress(z, sizeof z, t, n, 3);
    assert_false(ZSTD_isError(zn));
    forge(&id, 1, z, zn, &s); /* a valid frame opens */
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), 0);
    assert_memory_equal(out.data, t, n);
    buf_reset(&out);

    /* frame content size differing from raw_len */
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n - 1, &out, &e),
                     ERR_FAIL);
    /* two frames */
    uint8_t z2[16384];
    memcpy(z2, z, zn);
    memcpy(z2 + zn, z, zn);
    forge(&id, 1, z2, 2 * zn, &s);
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), ERR_FAIL);
    /* a frame without a content size */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    assert_non_null(cc);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    size_t zu = ZSTD_compress2(cc, z2, sizeof z2, t, n);
    assert_false(ZSTD_isError(zu));
    ZSTD_freeCCtx(cc);
    forge(&id, 1, z2, zu, &s);
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), ERR_FAIL);
    /* garbage after the flag */
    forge(&id, 1, "garbage!", 8, &s);
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), ERR_FAIL);
    /* a raw payload of the wrong length */
    forge(&id, 0, t, n - 1, &s);
    assert_int_equal(crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, n, &out, &e), ERR_FAIL);
    assert_int_equal(out.len, 0);
    buf_free(&s);
    buf_free(&out);
    free(t);
}

/* Sealed blobs are what libsodium's XChaCha20-Poly1305 opens (the AEAD runs in OpenSSL, the
 * subkey in libsodium: crypt.c), for lengths around ChaCha20's 64-byte blocks and beyond,
 * compressed or not. */
static void test_blob_seal_libsodium(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 63, 64, 65, 1000, 100000, 3u << 20};
    struct err e;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int compressible = 0; compressible < 2; compressible++) {
            size_t len = lens[i];
            uint8_t *plain = malloc(len + 1);
            assert_non_null(plain);
            if (compressible)
                memset(plain, 'a' + (int)i, len);
            else
                randombytes_buf(plain, len);
            struct oid id;
            assert_int_equal(crypt_blob_id(&keys, plain, len, &id, &e), 0);
            struct buf s = BUF_INIT;
            assert_int_equal(crypt_blob_seal(&keys, BLOB_DATA, &id, plain, len, 3, &s, &e), 0);
            uint8_t ad[13 + 1 + 32];
            memcpy(ad, "podvault-blob", 13);
            ad[13] = BLOB_DATA;
            memcpy(ad + 14, id.b, 32);
            size_t mlen = s.len - CRYPT_NONCE_LEN - CRYPT_TAG_LEN;
            uint8_t *m = malloc(mlen);
            assert_non_null(m);
            assert_int_equal(crypto_aead_xchacha20poly1305_ietf_decrypt(
                                 m, NULL, NULL, s.data + CRYPT_NONCE_LEN, s.len - CRYPT_NONCE_LEN,
                                 ad, sizeof ad, s.data, keys.blob),
                             0);
            uint8_t *back = malloc(len + 1);
            assert_non_null(back);
            if (m[0] == 0) { /* raw */
                assert_int_equal(mlen - 1, len);
                if (len) assert_memory_equal(m + 1, plain, len);
            } else {
                assert_int_equal(m[0], 1);
                assert_true(compressible && len >= 64);
                assert_int_equal(ZSTD_decompress(back, len, m + 1, mlen - 1), len);
                assert_memory_equal(back, plain, len);
            }
            free(back);
            free(m);
            buf_free(&s);
            free(plain);
        }
    }
}

static void test_file_seal(void **state)
{
    struct err e;
    struct buf s = BUF_INIT, out = BUF_INIT;
    static const char msg[] = "{\"snapshot\":1}";
    assert_int_equal(crypt_file_seal(&keys, "snapshot", msg, sizeof msg, &s, &e), 0);
    assert_int_equal(s.len, sizeof msg + CRYPT_FILE_OVERHEAD);
    assert_int_equal(crypt_file_open(&keys, "snapshot", s.data, s.len, &out, &e), 0);
    assert_int_equal(out.len, sizeof msg);
    assert_memory_equal(out.data, msg, sizeof msg);
    buf_reset(&out);
    /* the documented layout: nonce || ciphertext || tag, AD "podvault-file:" || kind */
    uint8_t plain[sizeof msg];
    assert_int_equal(crypto_aead_xchacha20poly1305_ietf_decrypt(
                         plain, NULL, NULL, s.data + 24, s.len - 24,
                         (const uint8_t *)"podvault-file:snapshot", 22, s.data, keys.file),
                     0);
    assert_memory_equal(plain, msg, sizeof msg);

    assert_int_equal(crypt_file_open(&keys, "index", s.data, s.len, &out, &e), ERR_AUTH);
    assert_int_equal(crypt_file_open(&other, "snapshot", s.data, s.len, &out, &e), ERR_AUTH);
    for (size_t i = 0; i < s.len; i++) {
        s.data[i] ^= 0x20;
        assert_int_equal(crypt_file_open(&keys, "snapshot", s.data, s.len, &out, &e), ERR_AUTH);
        s.data[i] ^= 0x20;
    }
    assert_int_equal(crypt_file_open(&keys, "snapshot", s.data, CRYPT_FILE_OVERHEAD - 1, &out, &e),
                     ERR_FAIL);
    assert_int_equal(crypt_file_open(&keys, "snapshot", s.data, s.len - 1, &out, &e), ERR_AUTH);
    assert_int_equal(out.len, 0);
    assert_int_equal(crypt_file_open(&keys, "", s.data, s.len, &out, &e), ERR_FAIL);

    /* empty plaintext */
    buf_reset(&s);
    assert_int_equal(crypt_file_seal(&keys, "config", NULL, 0, &s, &e), 0);
    assert_int_equal(s.len, CRYPT_FILE_OVERHEAD);
    assert_int_equal(crypt_file_open(&keys, "config", s.data, s.len, &out, &e), 0);
    assert_int_equal(out.len, 0);
    buf_free(&s);
    buf_free(&out);
}

/* Each thread has its own zstd contexts; seal and open concurrently. */
static void *worker(void *arg)
{
    uint8_t *t = text_data(300000);
    t[0] = (uint8_t)(uintptr_t)arg;
    int bad = 0;
    for (int i = 0; i < 20; i++) {
        struct err e;
        struct oid id;
        struct buf s = BUF_INIT, out = BUF_INIT;
        t[1] = (uint8_t)i;
        crypt_blob_id(&keys, t, 300000, &id, NULL);
        bad |= crypt_blob_seal(&keys, BLOB_DATA, &id, t, 300000, 3, &s, &e);
        bad |= crypt_blob_open(&keys, BLOB_DATA, &id, s.data, s.len, 300000, &out, &e);
        bad |= out.len != 300000 || memcmp(out.data, t, 300000) != 0;
        buf_free(&s);
        buf_free(&out);
    }
    free(t);
    return (void *)(uintptr_t)(bad != 0);
}

static void test_threads(void **state)
{
    pthread_t th[3];
    for (uintptr_t i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker, (void *)i), 0);
    for (int i = 0; i < 3; i++) {
        void *r;
        assert_int_equal(pthread_join(th[i], &r), 0);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_derivation),
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_blob_id),
        cmocka_unit_test(test_blob_round_trips),
        cmocka_unit_test(test_blob_tamper),
        cmocka_unit_test(test_blob_open_pieces),
        cmocka_unit_test(test_blob_limits),
        cmocka_unit_test(test_blob_hostile_plaintext),
        cmocka_unit_test(test_blob_seal_libsodium),
        cmocka_unit_test(test_file_seal),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
