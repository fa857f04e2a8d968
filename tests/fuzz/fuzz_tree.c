/* fuzz_tree.c - libFuzzer target for tree_decode: hostile bytes must be refused cleanly, and
 * whatever decodes must encode again (byte for byte when it was already in canonical order). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp_names(const struct tree_node *a, const struct tree_node *b)
{
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n ? memcmp(a->name, b->name, n) : 0;
    return c ? c : (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tree t = TREE_INIT;
    struct buf out = BUF_INIT;
    struct err e;
    if (tree_decode(data, size, &t, &e) != 0) {
        if (t.nodes || t.n || !e.msg[0]) __builtin_trap();
        return 0;
    }
    bool increasing = true;
    for (size_t i = 1; i < t.n; i++)
        if (cmp_names(&t.nodes[i - 1], &t.nodes[i]) >= 0) increasing = false;
    tree_sort(&t);
    bool unique = true;
    for (size_t i = 1; i < t.n; i++)
        if (cmp_names(&t.nodes[i - 1], &t.nodes[i]) == 0) unique = false;
    int rc = tree_encode(&t, &out, &e);
    if (unique != (rc == 0)) __builtin_trap();
    if (increasing && (out.len != size || memcmp(out.data, data, size) != 0)) __builtin_trap();
    if (rc == 0) {
        struct tree again = TREE_INIT;
        if (tree_decode(out.data, out.len, &again, &e) != 0 || again.n != t.n) __builtin_trap();
        tree_free(&again);
    }
    buf_free(&out);
    tree_free(&t);
    return 0;
}
