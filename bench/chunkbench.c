/* chunkbench.c - measures the chunker: speed on one core over random data, and deduplication
 * of a synthetic data set (a file, an edited copy, appended records, a shifted copy) for the
 * default chunk sizes against alternatives. Usage: chunkbench [speed MiB (1024)] [set MiB (256)]
 * The figures justify the defaults in chunker/chunker.h; see docs/FORMAT.md. */
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "chunker/chunker.h"

#define MIB (1024u * 1024)

static double seconds(clockid_t clk)
{
    struct timespec t;
    clock_gettime(clk, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Deterministic filler, so runs are comparable. */
static void fill(uint8_t *p, size_t len, uint64_t seed)
{
    static const uint8_t nonce[crypto_stream_chacha20_IETF_NONCEBYTES];
    uint8_t k[32] = {0};
    memcpy(k, &seed, sizeof seed);
    crypto_stream_chacha20_ietf(p, len, nonce, k);
}

static int speed(const struct chunker *c, size_t total)
{
    /* A 64 MiB buffer chunked again and again: larger than any cache, and the chunker keeps no
     * state between calls, so this measures the same work as one large buffer. */
    size_t blen = total < 64 * MIB ? total : 64 * MIB;
    uint8_t *d = malloc(blen);
    if (!d) return -1;
    fill(d, blen, 1);
    size_t done = 0, chunks = 0;
    double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_THREAD_CPUTIME_ID);
    while (done < total) {
        size_t len = total - done < blen ? total - done : blen;
        for (size_t off = 0; off < len; chunks++)
            off += chunker_cut(c, d + off, len - off);
        done += len;
    }
    double wall = seconds(CLOCK_MONOTONIC) - w0, cpu = seconds(CLOCK_THREAD_CPUTIME_ID) - c0;
    printf("speed: %zu MiB in %zu chunks: %.0f MB/s (CPU time), %.0f MB/s (wall)\n", total / MIB,
           chunks, (double)total / cpu / 1e6, (double)total / wall / 1e6);
    free(d);
    return 0;
}

struct chunk {
    XXH128_hash_t h;
    size_t len;
};

struct list {
    struct chunk *v;
    size_t n, cap;
};

static int add_chunks(const struct chunker *c, const uint8_t *d, size_t len, struct list *l,
                      size_t *count, size_t *at_max)
{
    size_t max = chunker_params(c)->max_size;
    for (size_t off = 0; off < len;) {
        size_t k = chunker_cut(c, d + off, len - off);
        if (l->n == l->cap) {
            size_t cap = l->cap ? 2 * l->cap : 1024;
            struct chunk *v = realloc(l->v, cap * sizeof *v);
            if (!v) return -1;
            l->v = v;
            l->cap = cap;
        }
        l->v[l->n].h = XXH3_128bits(d + off, k);
        l->v[l->n++].len = k;
        (*count)++;
        *at_max += k == max;
        off += k;
    }
    return 0;
}

static int cmp_chunk(const void *a, const void *b)
{
    return XXH128_cmp(&((const struct chunk *)a)->h, &((const struct chunk *)b)->h);
}

/* Bytes of chunks in l[from..) whose hash is not among l[0..from) nor earlier in l[from..). */
static size_t new_bytes(struct list *l, size_t from)
{
    qsort(l->v, from, sizeof *l->v, cmp_chunk);
    size_t fresh = 0;
    for (size_t i = from; i < l->n; i++) {
        if (bsearch(&l->v[i], l->v, from, sizeof *l->v, cmp_chunk)) continue;
        bool dup = false;
        for (size_t j = from; j < i && !dup; j++)
            dup = XXH128_isEqual(l->v[j].h, l->v[i].h);
        if (!dup) fresh += l->v[i].len;
    }
    return fresh;
}

struct version {
    const char *name;
    const uint8_t *d;
    size_t len;
};

static int dedup(const struct chunker_params *p, const uint8_t key[32], const struct version *vs,
                 int nv)
{
    struct chunker *c;
    struct err e;
    if (chunker_new(p, key, &c, &e) < 0) {
        fprintf(stderr, "chunkbench: %s\n", e.msg);
        return -1;
    }
    struct list l = {0};
    size_t logical = 0, stored = 0, count = 0, at_max = 0;
    char fresh_s[256] = "";
    size_t fl = 0;
    for (int i = 0; i < nv; i++) {
        size_t from = l.n;
        if (add_chunks(c, vs[i].d, vs[i].len, &l, &count, &at_max) < 0) return -1;
        size_t fresh = new_bytes(&l, from);
        logical += vs[i].len;
        stored += fresh;
        if (i > 0) fl += (size_t)snprintf(fresh_s + fl, sizeof fresh_s - fl, " %7.2f", fresh / 1e6);
    }
    printf("%4uK/%4uK/%5uK %8zu %8.0fK %6.2f%% %7.3f %s\n", p->min_size / 1024, p->avg_size / 1024,
           p->max_size / 1024, count, (double)logical / count / 1024, 100.0 * at_max / count,
           (double)logical / stored, fresh_s);
    free(l.v);
    chunker_free(c);
    return 0;
}

int main(int argc, char **argv)
{
    size_t speed_mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t set_mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
    if (sodium_init() < 0 || speed_mib == 0 || set_mib < 16) {
        fprintf(stderr, "usage: chunkbench [speed MiB (1024)] [data set MiB >= 16 (256)]\n");
        return 2;
    }
    uint8_t key[32];
    memset(key, 0x3c, sizeof key);
    const struct chunker_params def = {CHUNKER_DEFAULT_MIN, CHUNKER_DEFAULT_AVG,
                                       CHUNKER_DEFAULT_MAX};
    struct chunker *c;
    struct err e;
    if (chunker_new(&def, key, &c, &e) < 0 || speed(c, speed_mib * MIB) < 0) return 1;
    chunker_free(c);

    /* v1: a file. v2: v1 with 32 edits at random places (insertions, deletions, overwrites of
     * 1..4096 bytes). v3: v2 with 8 MiB of records appended. v4: v3 behind a 100-byte header. */
    size_t base = set_mib * MIB, hdr = 100, append = 8 * MIB, slack = 32 * 4096;
    uint8_t *v1 = malloc(base), *x = malloc(hdr + base + slack + append);
    if (!v1 || !x) return 1;
    fill(v1, base, 2);
    uint64_t rng = 12345;
#define NEXT() (rng = rng * 6364136223846793005ull + 1442695040888963407ull, rng >> 33)
    size_t pos[32];
    for (int i = 0; i < 32; i++)
        pos[i] = (size_t)(NEXT() % base);
    for (int i = 1; i < 32; i++) /* sorted, so that edits are applied front to back */
        for (int j = i; j > 0 && pos[j - 1] > pos[j]; j--) {
            size_t t = pos[j];
            pos[j] = pos[j - 1];
            pos[j - 1] = t;
        }
    uint8_t *v2 = x + hdr, filler[4096];
    size_t in = 0, out = 0, added = 0;
    for (int i = 0; i < 32; i++) {
        size_t n = 1 + (size_t)(NEXT() % 4096), kind = (size_t)(NEXT() % 3);
        if (pos[i] < in) continue; /* overlaps the previous edit */
        memcpy(v2 + out, v1 + in, pos[i] - in);
        out += pos[i] - in;
        in = pos[i];
        fill(filler, sizeof filler, 100 + (uint64_t)i);
        if (kind == 0) { /* insert */
            memcpy(v2 + out, filler, n);
            out += n;
            added += n;
        } else if (kind == 1) { /* delete */
            in += n < base - in ? n : base - in;
        } else { /* overwrite */
            size_t m = n < base - in ? n : base - in;
            memcpy(v2 + out, filler, m);
            out += m;
            in += m;
            added += m;
        }
    }
    memcpy(v2 + out, v1 + in, base - in);
    out += base - in;
    fill(v2 + out, append, 3);
    fill(x, hdr, 4);
    struct version vs[] = {
        {"v1", v1, base}, {"v2", v2, out}, {"v3", v2, out + append}, {"v4", x, hdr + out + append}};

    printf("\ndedup: v1 = %zu MiB random; v2 = v1 + 32 random edits; v3 = v2 + 8 MiB appended;\n"
           "v4 = v3 shifted by a 100-byte header. ratio = logical bytes / stored bytes (ideal "
           "%.3f);\nnew MB = bytes stored for v2, v3, v4 (ideal: %.3f, %.3f, %.4f).\n",
           set_mib, (double)(base + 3 * out + 2 * append + hdr) / (double)(base + added + append),
           added / 1e6, append / 1e6, hdr / 1e6);
    printf("  min/ avg/  max    chunks     mean  at max   ratio  new MB v2 v3 v4\n");
    static const struct chunker_params alts[] = {
        {64 * 1024, 256 * 1024, 1024 * 1024},   {128 * 1024, 512 * 1024, 2048 * 1024},
        {256 * 1024, 1024 * 1024, 4096 * 1024}, {512 * 1024, 1024 * 1024, 8192 * 1024},
        {512 * 1024, 2048 * 1024, 8192 * 1024}, {1024 * 1024, 4096 * 1024, 16384 * 1024},
    };
    for (size_t i = 0; i < sizeof alts / sizeof alts[0]; i++)
        if (dedup(&alts[i], key, vs, 4) < 0) return 1;
    free(v1);
    free(x);
    return 0;
}
