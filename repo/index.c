/* index.c - the in-memory blob index and the index file codec; see index.h.
 *
 * Memory layout. Blob IDs are keyed hashes, so they are uniformly distributed: the sorted main
 * array is split into 65536 buckets by the first two ID bytes, a directory gives each bucket's
 * first entry, and entries store only the other 30 ID bytes. An entry is then 46 bytes, which
 * pays for the directory (256 KiB) and the tail, and keeps the whole index under 48 bytes a blob.
 * A lookup is one directory read and a binary search over ~N/65536 entries.
 *
 * New blobs go to an unsorted tail of full entries, kept in fixed-size blocks (so growing it
 * wastes at most one block), with an open-addressing hash table over it. When the tail exceeds
 * max(4096, main/8) entries it is sorted and merged into the main array in place: the main array
 * grows by mremap (pages move, bytes are not copied) and a backward merge fills it. Each blob is
 * thus moved O(log N / log 1.125) times in total, and the peak memory stays near the final size.
 */
#include "repo/index.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#define IDX_PREFIX 2 /* ID bytes implied by the bucket */
#define IDX_BUCKETS (1u << (8 * IDX_PREFIX))
#define IDX_REST (OID_LEN - IDX_PREFIX)
#define IDX_TYPE_BIT (1u << 31)
#define IDX_MAX_PACKS (IDX_TYPE_BIT - 1)
#define IDX_TAIL_MIN 4096
/* Tail hash slots hold a tail position + 1 in the low 24 bits and 8 bits of the ID's hash in the
 * high bits, so a probe rarely has to read a tail entry that does not match. */
#define IDX_SLOT_POS_BITS 24
#define IDX_TAIL_MAX ((1u << IDX_SLOT_POS_BITS) - 1)
#define IDX_BLOCK_BITS 10 /* tail entries per block: 1024 (48 KiB) */
#define IDX_BLOCK (1u << IDX_BLOCK_BITS)
#define IDX_MAX_BLOBS ((size_t)UINT32_MAX - 1) /* directory offsets are 32-bit */

/* A main-array entry: 46 bytes, packed so the array has no padding. */
struct ment {
    uint8_t rest[IDX_REST]; /* ID bytes 2..31 */
    uint32_t pack_type;     /* pack number | type << 31 */
    uint32_t offset;
    uint32_t stored_len;
    uint32_t raw_len;
} __attribute__((packed));

_Static_assert(sizeof(struct ment) == 46, "main entry must be 46 bytes");

/* A tail entry keeps the full ID (the tail is small and unsorted). */
struct tent {
    struct oid id;
    uint32_t pack_type;
    uint32_t offset;
    uint32_t stored_len;
    uint32_t raw_len;
};

struct idx {
    struct ment *main; /* sorted; allocated to exactly n_main entries */
    size_t n_main;
    uint32_t *dir; /* IDX_BUCKETS + 1 offsets into main; NULL while main is empty */

    struct tent **blocks; /* the tail: entry i is blocks[i / IDX_BLOCK][i % IDX_BLOCK] */
    size_t n_tail, n_blocks, cap_blocks;
    uint32_t *slots; /* tail hash, 0 = empty (see IDX_SLOT_POS_BITS); n_slots a power of 2 */
    size_t n_slots;

    struct oid *packs;
    size_t n_packs, cap_packs;
    uint32_t *pslots; /* pack hash: pack number + 1, 0 = empty */
    size_t n_pslots;
};

static inline uint32_t bucket_of(const struct oid *id)
{
    return (uint32_t)id->b[0] << 8 | id->b[1];
}

static inline uint64_t hash_oid(const struct oid *id)
{
    return XXH3_64bits(id->b, OID_LEN);
}

static inline uint32_t slot_tag(uint64_t h)
{
    return (uint32_t)(h >> 56) << IDX_SLOT_POS_BITS;
}

/* Stores `v` in the first free slot from h's home position (linear probing). */
static void slot_put(uint32_t *slots, size_t n_slots, uint64_t h, uint32_t v)
{
    size_t mask = n_slots - 1, i = (size_t)h & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = v;
}

/* The main array is mapped directly rather than malloc'd: growing it is then a page remap (never
 * a copy, never twice the memory), and it can ask for huge pages, which saves most of the TLB
 * misses of lookups in a large index. */
static size_t main_bytes(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n * sizeof(struct ment) + page - 1) / page * page;
}

static struct ment *main_resize(struct ment *old, size_t n_old, size_t n_new)
{
    void *p = old ? mremap(old, main_bytes(n_old), main_bytes(n_new), MREMAP_MAYMOVE)
                  : mmap(NULL, main_bytes(n_new), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, main_bytes(n_new), MADV_HUGEPAGE); /* only a hint; failure changes nothing */
    return p;
}

static inline struct tent *tail_at(const struct idx *x, size_t i)
{
    return &x->blocks[i >> IDX_BLOCK_BITS][i & (IDX_BLOCK - 1)];
}

static void tail_clear(struct idx *x)
{
    for (size_t i = 0; i < x->n_blocks; i++)
        free(x->blocks[i]);
    free(x->blocks);
    free(x->slots);
    x->blocks = NULL;
    x->slots = NULL;
    x->n_tail = x->n_blocks = x->cap_blocks = x->n_slots = 0;
}

int idx_new(struct idx **out, struct err *e)
{
    struct idx *x = calloc(1, sizeof *x);
    if (!x) return err_set(e, ERR_FAIL, "index: out of memory");
    *out = x;
    return 0;
}

void idx_clear(struct idx *x)
{
    if (x->main) munmap(x->main, main_bytes(x->n_main));
    free(x->dir);
    tail_clear(x);
    free(x->packs);
    free(x->pslots);
    memset(x, 0, sizeof *x);
}

void idx_free(struct idx *x)
{
    if (!x) return;
    idx_clear(x);
    free(x);
}

static inline uint64_t load_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return __builtin_bswap64(v);
}

/* Compares the 30 ID bytes at `key` (whose first 8 are also in `key8`) with an entry's. Most
 * comparisons are decided by the first 8 bytes. */
static inline int cmp_rest(const uint8_t *key, uint64_t key8, const struct ment *m)
{
    uint64_t v = load_be64(m->rest);
    if (key8 != v) return key8 < v ? -1 : 1;
    return memcmp(key + 8, m->rest + 8, IDX_REST - 8);
}

/* Finds `id` in its bucket. Bytes 2..3 of the IDs are uniform too, so an interpolated first
 * guess lands within a few entries of the target: a short linear walk from there touches only
 * adjacent cache lines. If the walk is long (IDs not uniform after all), binary search the rest. */
static bool main_find(const struct idx *x, const struct oid *id, const struct ment **found)
{
    if (!x->dir) return false;
    uint32_t b = bucket_of(id);
    size_t lo = x->dir[b], hi = x->dir[b + 1];
    if (lo == hi) return false;
    const uint8_t *key = id->b + IDX_PREFIX;
    uint64_t key8 = load_be64(key);
    size_t g = lo + (((size_t)key[0] << 8 | key[1]) * (hi - lo) >> 16);
    int c = cmp_rest(key, key8, &x->main[g]);
    if (c < 0) {
        hi = g;
        for (int step = 0; step < 8 && hi > lo; step++) {
            c = cmp_rest(key, key8, &x->main[hi - 1]);
            if (c >= 0) {
                if (c == 0) *found = &x->main[hi - 1];
                return c == 0;
            }
            hi--;
        }
    } else if (c > 0) {
        lo = g + 1;
        for (int step = 0; step < 8 && lo < hi; step++) {
            c = cmp_rest(key, key8, &x->main[lo]);
            if (c <= 0) {
                if (c == 0) *found = &x->main[lo];
                return c == 0;
            }
            lo++;
        }
    } else {
        *found = &x->main[g];
        return true;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        c = cmp_rest(key, key8, &x->main[mid]);
        if (c == 0) {
            *found = &x->main[mid];
            return true;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

static bool tail_find(const struct idx *x, const struct oid *id, const struct tent **found)
{
    if (!x->n_tail) return false;
    uint64_t hash = hash_oid(id);
    uint32_t tag = slot_tag(hash), pos_mask = (1u << IDX_SLOT_POS_BITS) - 1;
    size_t mask = x->n_slots - 1;
    for (size_t h = (size_t)hash & mask;; h = (h + 1) & mask) {
        uint32_t s = x->slots[h];
        if (!s) return false;
        if ((s & ~pos_mask) != tag) continue;
        const struct tent *t = tail_at(x, (s & pos_mask) - 1);
        if (oid_eq(&t->id, id)) {
            *found = t;
            return true;
        }
    }
}

static void fill_loc(struct idx_loc *loc, uint32_t pack_type, uint32_t offset, uint32_t stored,
                     uint32_t raw)
{
    loc->pack = pack_type & ~IDX_TYPE_BIT;
    loc->type = (uint8_t)(pack_type >> 31);
    loc->offset = offset;
    loc->stored_len = stored;
    loc->raw_len = raw;
}

bool idx_lookup(const struct idx *x, const struct oid *blob, struct idx_loc *loc)
{
    const struct ment *m;
    const struct tent *t;
    if (main_find(x, blob, &m)) {
        if (loc) fill_loc(loc, m->pack_type, m->offset, m->stored_len, m->raw_len);
        return true;
    }
    if (tail_find(x, blob, &t)) {
        if (loc) fill_loc(loc, t->pack_type, t->offset, t->stored_len, t->raw_len);
        return true;
    }
    return false;
}

/* Rebuilds the tail hash with `n_slots` slots (a power of two). */
static int tail_rehash(struct idx *x, size_t n_slots)
{
    uint32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < x->n_tail; i++) {
        uint64_t h = hash_oid(&tail_at(x, i)->id);
        slot_put(slots, n_slots, h, (uint32_t)(i + 1) | slot_tag(h));
    }
    free(x->slots);
    x->slots = slots;
    x->n_slots = n_slots;
    return 0;
}

static int tent_cmp(const void *a, const void *b)
{
    return oid_cmp(&((const struct tent *)a)->id, &((const struct tent *)b)->id);
}

/* Compares the full ID of main entry `m` in bucket `b` with `id`. */
static int ment_cmp_id(uint32_t b, const struct ment *m, const struct oid *id)
{
    uint32_t ib = bucket_of(id);
    if (b != ib) return b < ib ? -1 : 1;
    return memcmp(m->rest, id->b + IDX_PREFIX, IDX_REST);
}

static void ment_from_tent(struct ment *m, const struct tent *t)
{
    memcpy(m->rest, t->id.b + IDX_PREFIX, IDX_REST);
    m->pack_type = t->pack_type;
    m->offset = t->offset;
    m->stored_len = t->stored_len;
    m->raw_len = t->raw_len;
}

/* Sorts the tail and merges it into the main array; the tail is then empty and freed. */
static int idx_merge(struct idx *x, struct err *e)
{
    if (!x->n_tail) return 0;
    size_t n_old = x->n_main, n_tail = x->n_tail, n_new = n_old + n_tail;
    if (!x->dir) {
        x->dir = calloc(IDX_BUCKETS + 1, sizeof *x->dir);
        if (!x->dir) return err_set(e, ERR_FAIL, "index: out of memory");
    }
    struct tent *tail = malloc(n_tail * sizeof *tail);
    if (!tail) return err_set(e, ERR_FAIL, "index: out of memory (%zu blobs)", n_new);
    struct ment *m = main_resize(x->main, n_old, n_new);
    if (!m) {
        free(tail);
        return err_set(e, ERR_FAIL, "index: out of memory (%zu blobs)", n_new);
    }
    x->main = m;
    /* Nothing below can fail. Blocks are freed as they are copied, so the peak grows by one
     * block, not by a second tail. */
    for (size_t i = 0; i < x->n_blocks; i++) {
        size_t first = (size_t)i << IDX_BLOCK_BITS;
        size_t k = n_tail - first < IDX_BLOCK ? n_tail - first : IDX_BLOCK;
        memcpy(tail + first, x->blocks[i], k * sizeof *tail);
        free(x->blocks[i]);
    }
    x->n_blocks = 0;
    tail_clear(x);
    qsort(tail, n_tail, sizeof *tail, tent_cmp);

    /* Backward merge: the write position never passes below the unread main entries. */
    size_t i = n_old, j = n_tail, k = n_new;
    uint32_t b = IDX_BUCKETS - 1;
    while (j > 0) {
        if (i > 0) {
            while (x->dir[b] > i - 1)
                b--;
            if (ment_cmp_id(b, &m[i - 1], &tail[j - 1].id) > 0) {
                m[--k] = m[--i];
                continue;
            }
        }
        ment_from_tent(&m[--k], &tail[--j]);
    }

    /* Each bucket start moves up by the number of tail entries in earlier buckets. */
    size_t t = 0;
    for (uint32_t bk = 0; bk <= IDX_BUCKETS; bk++) {
        while (t < n_tail && bucket_of(&tail[t].id) < bk)
            t++;
        x->dir[bk] += (uint32_t)t;
    }
    x->n_main = n_new;
    free(tail);
    return 0;
}

static int tail_add(struct idx *x, const struct oid *id, uint32_t pack_type,
                    const struct pack_entry *pe, struct err *e)
{
    if (x->n_main + x->n_tail >= IDX_MAX_BLOBS)
        return err_set(e, ERR_FAIL, "index: more than %zu blobs", IDX_MAX_BLOBS);
    if (x->n_tail == x->n_blocks << IDX_BLOCK_BITS) {
        if (x->n_blocks == x->cap_blocks) {
            size_t cap = x->cap_blocks ? x->cap_blocks * 2 : 16;
            struct tent **bl = realloc(x->blocks, cap * sizeof *bl);
            if (!bl) return err_set(e, ERR_FAIL, "index: out of memory");
            x->blocks = bl;
            x->cap_blocks = cap;
        }
        struct tent *blk = malloc(IDX_BLOCK * sizeof *blk);
        if (!blk) return err_set(e, ERR_FAIL, "index: out of memory");
        x->blocks[x->n_blocks++] = blk;
    }
    if ((x->n_tail + 1) * 4 > x->n_slots * 3) {
        if (tail_rehash(x, x->n_slots ? x->n_slots * 2 : 512) < 0)
            return err_set(e, ERR_FAIL, "index: out of memory");
    }
    struct tent *t = tail_at(x, x->n_tail);
    t->id = *id;
    t->pack_type = pack_type;
    t->offset = pe->offset;
    t->stored_len = pe->stored_len;
    t->raw_len = pe->raw_len;
    uint64_t h = hash_oid(id);
    slot_put(x->slots, x->n_slots, h, (uint32_t)(++x->n_tail) | slot_tag(h));

    size_t limit = x->n_main / 8 > IDX_TAIL_MIN ? x->n_main / 8 : IDX_TAIL_MIN;
    if (limit > IDX_TAIL_MAX) limit = IDX_TAIL_MAX;
    if (x->n_tail >= limit) return idx_merge(x, e);
    return 0;
}

/* Returns the number of `pack_id` in the pack table, adding it when new. */
static int pack_number(struct idx *x, const struct oid *pack_id, uint32_t *num, struct err *e)
{
    if (x->n_pslots) {
        size_t mask = x->n_pslots - 1;
        for (size_t h = (size_t)hash_oid(pack_id) & mask; x->pslots[h]; h = (h + 1) & mask) {
            if (oid_eq(&x->packs[x->pslots[h] - 1], pack_id)) {
                *num = x->pslots[h] - 1;
                return 0;
            }
        }
    }
    if (x->n_packs >= IDX_MAX_PACKS)
        return err_set(e, ERR_FAIL, "index: more than %u packs", (unsigned)IDX_MAX_PACKS);
    if (x->n_packs == x->cap_packs) {
        size_t cap = x->cap_packs ? x->cap_packs * 2 : 64;
        struct oid *p = realloc(x->packs, cap * sizeof *p);
        if (!p) return err_set(e, ERR_FAIL, "index: out of memory");
        x->packs = p;
        x->cap_packs = cap;
    }
    if ((x->n_packs + 1) * 2 > x->n_pslots) {
        size_t n = x->n_pslots ? x->n_pslots * 2 : 128;
        uint32_t *s = calloc(n, sizeof *s);
        if (!s) return err_set(e, ERR_FAIL, "index: out of memory");
        for (size_t i = 0; i < x->n_packs; i++)
            slot_put(s, n, hash_oid(&x->packs[i]), (uint32_t)(i + 1));
        free(x->pslots);
        x->pslots = s;
        x->n_pslots = n;
    }
    x->packs[x->n_packs] = *pack_id;
    slot_put(x->pslots, x->n_pslots, hash_oid(pack_id), (uint32_t)(++x->n_packs));
    *num = (uint32_t)(x->n_packs - 1);
    return 0;
}

int idx_add_pack(struct idx *x, const struct oid *pack_id, const struct pack_entry *entries,
                 size_t n, struct err *e)
{
    uint32_t num = 0;
    int rc = pack_number(x, pack_id, &num, e);
    if (rc < 0) return rc;
    for (size_t i = 0; i < n; i++) {
        const struct pack_entry *pe = &entries[i];
        if (pe->type > BLOB_TREE)
            return err_set(e, ERR_FAIL, "index: blob %zu of a pack has invalid type %u", i,
                           pe->type);
        if (idx_lookup(x, &pe->id, NULL)) continue;
        rc = tail_add(x, &pe->id, num | (uint32_t)pe->type << 31, pe, e);
        if (rc < 0) return rc;
    }
    return 0;
}

const struct oid *idx_pack_id(const struct idx *x, uint32_t pack)
{
    return pack < x->n_packs ? &x->packs[pack] : NULL;
}

size_t idx_blob_count(const struct idx *x)
{
    return x->n_main + x->n_tail;
}

size_t idx_pack_count(const struct idx *x)
{
    return x->n_packs;
}

size_t idx_memory(const struct idx *x)
{
    return sizeof *x + (x->n_main ? main_bytes(x->n_main) : 0) +
           (x->dir ? (IDX_BUCKETS + 1) * sizeof *x->dir : 0) +
           x->n_blocks * IDX_BLOCK * sizeof(struct tent) + x->cap_blocks * sizeof *x->blocks +
           x->n_slots * sizeof *x->slots + x->cap_packs * sizeof *x->packs +
           x->n_pslots * sizeof *x->pslots;
}

int idx_seal(struct idx *x, struct err *e)
{
    return idx_merge(x, e);
}

bool idx_lookup_pos(const struct idx *x, const struct oid *blob, struct idx_loc *loc, size_t *pos)
{
    const struct ment *m;
    const struct tent *t;
    if (main_find(x, blob, &m)) {
        if (loc) fill_loc(loc, m->pack_type, m->offset, m->stored_len, m->raw_len);
        if (pos) *pos = (size_t)(m - x->main);
        return true;
    }
    /* Only an index that was not sealed has a tail; its blobs have no position yet. */
    if (tail_find(x, blob, &t)) {
        if (loc) fill_loc(loc, t->pack_type, t->offset, t->stored_len, t->raw_len);
        if (pos) *pos = SIZE_MAX;
        return true;
    }
    return false;
}

void idx_at(const struct idx *x, size_t pos, struct oid *blob, struct idx_loc *loc)
{
    /* The bucket is the last one starting at or before pos. */
    uint32_t lo = 0, hi = IDX_BUCKETS;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (x->dir[mid] <= pos)
            lo = mid;
        else
            hi = mid;
    }
    const struct ment *m = &x->main[pos];
    if (blob) {
        blob->b[0] = (uint8_t)(lo >> 8);
        blob->b[1] = (uint8_t)lo;
        memcpy(blob->b + IDX_PREFIX, m->rest, IDX_REST);
    }
    if (loc) fill_loc(loc, m->pack_type, m->offset, m->stored_len, m->raw_len);
}

bool idx_pack_find(const struct idx *x, const struct oid *pack_id, uint32_t *pack)
{
    if (!x->n_pslots) return false;
    size_t mask = x->n_pslots - 1;
    for (size_t h = (size_t)hash_oid(pack_id) & mask; x->pslots[h]; h = (h + 1) & mask) {
        if (oid_eq(&x->packs[x->pslots[h] - 1], pack_id)) {
            if (pack) *pack = x->pslots[h] - 1;
            return true;
        }
    }
    return false;
}

int idx_forget_packs(struct idx *x, const struct oid *packs, size_t n, size_t *forgotten,
                     struct err *e)
{
    if (forgotten) *forgotten = 0;
    int rc = idx_merge(x, e);
    if (rc < 0) return rc;
    uint8_t *drop = calloc(x->n_packs / 8 + 1, 1);
    if (!drop) return err_set(e, ERR_FAIL, "index: out of memory");
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        uint32_t num;
        if (!idx_pack_find(x, &packs[i], &num)) continue;
        drop[num / 8] |= (uint8_t)(1u << (num % 8));
        any = true;
    }
    if (!any || !x->n_main) {
        free(drop);
        return 0;
    }
    /* Compact in place, keeping order, and recount each bucket's start as we go. */
    size_t w = 0;
    uint32_t b = 0;
    for (size_t i = 0; i < x->n_main; i++) {
        while (x->dir[b + 1] <= i) {
            b++;
            x->dir[b] = (uint32_t)w;
        }
        uint32_t num = x->main[i].pack_type & ~IDX_TYPE_BIT;
        if (drop[num / 8] & (1u << (num % 8))) continue;
        if (w != i) x->main[w] = x->main[i];
        w++;
    }
    while (b < IDX_BUCKETS)
        x->dir[++b] = (uint32_t)w;
    free(drop);
    if (forgotten) *forgotten = x->n_main - w;
    if (w == 0) {
        munmap(x->main, main_bytes(x->n_main));
        x->main = NULL;
    } else if (main_bytes(w) < main_bytes(x->n_main)) {
        /* Shrinking is unmapping the pages past the new end. */
        munmap((char *)x->main + main_bytes(w), main_bytes(x->n_main) - main_bytes(w));
    }
    x->n_main = w;
    return 0;
}

int idx_foreach(struct idx *x, idx_foreach_cb cb, void *ctx)
{
    struct err e;
    if (idx_merge(x, &e) < 0) return e.code;
    uint32_t b = 0;
    for (size_t i = 0; i < x->n_main; i++) {
        while (x->dir[b + 1] <= i)
            b++;
        struct oid id;
        id.b[0] = (uint8_t)(b >> 8);
        id.b[1] = (uint8_t)b;
        const struct ment *m = &x->main[i];
        memcpy(id.b + IDX_PREFIX, m->rest, IDX_REST);
        struct idx_loc loc;
        fill_loc(&loc, m->pack_type, m->offset, m->stored_len, m->raw_len);
        int rc = cb(ctx, &id, &loc);
        if (rc) return rc;
    }
    return 0;
}

/* ---- index files ---- */

static const uint8_t idx_magic[4] = {'P', 'V', 'I', 'X'};
#define IDX_FILE_VERSION 1
/* Smallest encodings, used to bound counts by the bytes left before anything is allocated. */
#define IDX_MIN_BLOB (1 + OID_LEN + 3)
#define IDX_MIN_PACK (OID_LEN + 1)

int idx_file_encode(const struct idx_file_pack *packs, size_t n_packs, const struct oid *supersedes,
                    size_t n_supersedes, struct buf *out, struct err *e)
{
    int bad = 0;
    bad |= buf_append(out, idx_magic, sizeof idx_magic);
    bad |= buf_put_u8(out, IDX_FILE_VERSION);
    bad |= buf_put_uvarint(out, n_supersedes);
    for (size_t i = 0; i < n_supersedes; i++)
        bad |= buf_append(out, supersedes[i].b, OID_LEN);
    bad |= buf_put_uvarint(out, n_packs);
    for (size_t p = 0; p < n_packs; p++) {
        if (packs[p].n > PACK_MAX_ENTRIES)
            return err_set(e, ERR_FAIL, "index file: pack %zu lists %zu blobs (limit %u)", p,
                           packs[p].n, PACK_MAX_ENTRIES);
        bad |= buf_append(out, packs[p].pack_id.b, OID_LEN);
        bad |= buf_put_uvarint(out, packs[p].n);
        for (size_t i = 0; i < packs[p].n; i++) {
            const struct pack_entry *pe = &packs[p].entries[i];
            if (pe->type > BLOB_TREE)
                return err_set(e, ERR_FAIL, "index file: blob with invalid type %u", pe->type);
            bad |= buf_put_u8(out, pe->type);
            bad |= buf_append(out, pe->id.b, OID_LEN);
            bad |= buf_put_uvarint(out, pe->offset);
            bad |= buf_put_uvarint(out, pe->stored_len);
            bad |= buf_put_uvarint(out, pe->raw_len);
        }
    }
    if (bad) return err_set(e, ERR_FAIL, "index file: out of memory");
    return 0;
}

static bool rd_u32var(struct rd *r, uint32_t *v)
{
    uint64_t x;
    if (!rd_uvarint(r, &x) || x > UINT32_MAX) return false;
    *v = (uint32_t)x;
    return true;
}

/* Reads one blob entry of pack `p`; *why says what was wrong. */
static bool read_blob(struct rd *r, struct pack_entry *pe, const char **why)
{
    *why = "truncated";
    if (!rd_u8(r, &pe->type) || !rd_copy(r, pe->id.b, OID_LEN) || !rd_u32var(r, &pe->offset) ||
        !rd_u32var(r, &pe->stored_len) || !rd_u32var(r, &pe->raw_len))
        return false;
    if (pe->type > BLOB_TREE) {
        *why = "invalid blob type";
        return false;
    }
    if ((uint64_t)pe->offset + pe->stored_len > UINT32_MAX) {
        *why = "blob extends past 4 GiB";
        return false;
    }
    return true;
}

/* Walks an index file. With x == NULL only validates and reports the largest pack's blob
 * count; otherwise adds every pack to x using `scratch` (room for max_count entries). */
static int parse_file(struct idx *x, const void *data, size_t len, struct oid *sup,
                      struct pack_entry *scratch, size_t *max_count, idx_pack_filter keep,
                      idx_blob_filter keep_blob, void *ctx, struct err *e)
{
    struct rd r = rd_make(data, len);
    const uint8_t *magic;
    uint8_t version;
    uint64_t n_sup, n_packs;
    if (!rd_skip(&r, sizeof idx_magic, &magic) || memcmp(magic, idx_magic, sizeof idx_magic))
        return err_set(e, ERR_FAIL, "index file: bad magic (not an index file)");
    if (!rd_u8(&r, &version)) return err_set(e, ERR_FAIL, "index file: truncated after magic");
    if (version != IDX_FILE_VERSION)
        return err_set(e, ERR_FAIL, "index file: unsupported version %u", version);
    if (!rd_uvarint(&r, &n_sup) || n_sup > r.left / OID_LEN)
        return err_set(e, ERR_FAIL, "index file: bad superseded-index count");
    for (uint64_t i = 0; i < n_sup; i++) {
        const uint8_t *id;
        rd_skip(&r, OID_LEN, &id); /* cannot fail: the count was bounded by the bytes left */
        if (sup) memcpy(sup[i].b, id, OID_LEN);
    }
    if (!rd_uvarint(&r, &n_packs) || n_packs > r.left / IDX_MIN_PACK)
        return err_set(e, ERR_FAIL, "index file: bad pack count");
    for (uint64_t p = 0; p < n_packs; p++) {
        struct oid pack_id;
        uint64_t count;
        if (!rd_copy(&r, pack_id.b, OID_LEN) || !rd_uvarint(&r, &count))
            return err_set(e, ERR_FAIL, "index file: truncated at pack %llu",
                           (unsigned long long)p);
        if (count > PACK_MAX_ENTRIES || count > r.left / IDX_MIN_BLOB)
            return err_set(e, ERR_FAIL, "index file: pack %llu: bad blob count %llu",
                           (unsigned long long)p, (unsigned long long)count);
        if (!x && count > *max_count) *max_count = (size_t)count;
        size_t kept = 0;
        for (uint64_t i = 0; i < count; i++) {
            struct pack_entry tmp, *pe = x ? &scratch[kept] : &tmp;
            const char *why;
            if (!read_blob(&r, pe, &why))
                return err_set(e, ERR_FAIL, "index file: pack %llu, blob %llu: %s",
                               (unsigned long long)p, (unsigned long long)i, why);
            if (x && (!keep_blob || keep_blob(ctx, pe))) kept++;
        }
        if (x && (!keep || keep(ctx, &pack_id))) {
            int rc = idx_add_pack(x, &pack_id, scratch, kept, e);
            if (rc < 0) return rc;
        }
    }
    if (r.left) return err_set(e, ERR_FAIL, "index file: %zu unexpected bytes at the end", r.left);
    return 0;
}

int idx_file_decode(struct idx *x, const void *data, size_t len, struct oid **supersedes,
                    size_t *n_supersedes, struct err *e)
{
    return idx_file_decode_filtered(x, data, len, NULL, NULL, supersedes, n_supersedes, e);
}

int idx_file_decode_filtered(struct idx *x, const void *data, size_t len, idx_pack_filter keep,
                             void *ctx, struct oid **supersedes, size_t *n_supersedes,
                             struct err *e)
{
    return idx_file_decode_blobs(x, data, len, keep, NULL, ctx, supersedes, n_supersedes, e);
}

int idx_file_decode_blobs(struct idx *x, const void *data, size_t len, idx_pack_filter keep,
                          idx_blob_filter keep_blob, void *ctx, struct oid **supersedes,
                          size_t *n_supersedes, struct err *e)
{
    /* Validate everything first, so a bad file adds nothing and allocations are bounded by
     * counts already checked against the input length. */
    size_t max_count = 0;
    int rc = parse_file(NULL, data, len, NULL, NULL, &max_count, NULL, NULL, NULL, e);
    if (rc < 0) return rc;

    struct rd r = rd_make(data, len);
    uint64_t n_sup = 0;
    rd_skip(&r, sizeof idx_magic + 1, NULL);
    rd_uvarint(&r, &n_sup);
    struct oid *sup = NULL;
    if (supersedes && n_sup) {
        sup = malloc((size_t)n_sup * sizeof *sup);
        if (!sup) return err_set(e, ERR_FAIL, "index file: out of memory");
    }
    struct pack_entry *scratch = NULL;
    if (max_count) {
        scratch = malloc(max_count * sizeof *scratch);
        if (!scratch) {
            free(sup);
            return err_set(e, ERR_FAIL, "index file: out of memory");
        }
    }
    rc = parse_file(x, data, len, sup, scratch, &max_count, keep, keep_blob, ctx, e);
    free(scratch);
    if (rc < 0) {
        free(sup);
        return rc;
    }
    if (supersedes) {
        *supersedes = sup;
        *n_supersedes = (size_t)n_sup;
    }
    return 0;
}
