/* fuzz_index.c - libFuzzer target for idx_file_decode on raw bytes (index files are
 * authenticated before decoding, but the decoder must hold against any plaintext). A decoded
 * index is then walked and searched, to check it is consistent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "repo/index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct walk {
    struct idx *x;
    size_t n;
};

static int visit(void *ctx, const struct oid *blob, const struct idx_loc *loc)
{
    struct walk *w = ctx;
    struct idx_loc again;
    if (!idx_lookup(w->x, blob, &again) || again.offset != loc->offset || again.pack != loc->pack ||
        !idx_pack_id(w->x, loc->pack))
        __builtin_trap();
    w->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct idx *x;
    struct err e;
    if (idx_new(&x, &e) < 0) return 0;
    struct oid *sup = NULL;
    size_t n_sup = 0;
    if (idx_file_decode(x, data, size, &sup, &n_sup, &e) == 0) {
        if (n_sup * OID_LEN > size) __builtin_trap();
        struct walk w = {x, 0};
        if (idx_foreach(x, visit, &w) != 0 || w.n != idx_blob_count(x)) __builtin_trap();
    } else if (sup || idx_blob_count(x) || idx_pack_count(x)) {
        __builtin_trap(); /* a refused file adds nothing */
    }
    free(sup);
    idx_free(x);
    return 0;
}
