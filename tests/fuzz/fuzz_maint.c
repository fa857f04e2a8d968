/* fuzz_maint.c - libFuzzer target for the maintenance objects' decoders (lock objects, pending
 * deletion marks, maintenance records; the first byte picks one): hostile JSON is refused
 * cleanly, and whatever decodes encodes to bytes that decode and encode the same again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/lock.h"
#include "repo/maintain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(struct buf *a, struct buf *b)
{
    if (a->len != b->len || memcmp(a->data, b->data, a->len) != 0) __builtin_trap();
    buf_free(a);
    buf_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    struct buf b1 = BUF_INIT, b2 = BUF_INIT;
    struct err e;
    const uint8_t *json = data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0: {
        struct lock_info a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        if (lock_info_decode(json, len, &a, &e) != 0) {
            if (!e.msg[0]) __builtin_trap();
            return 0;
        }
        if (lock_info_encode(&a, &b1, &e) != 0 || lock_info_decode(b1.data, b1.len, &b, &e) != 0 ||
            lock_info_encode(&b, &b2, &e) != 0)
            __builtin_trap();
        same(&b1, &b2);
        break;
    }
    case 1: {
        struct lock_mark a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        if (lock_mark_decode(json, len, &a, &e) != 0) {
            if (!e.msg[0] || a.packs || a.snapshots || a.waiting) __builtin_trap();
            return 0;
        }
        if (lock_mark_encode(&a, &b1, &e) != 0 || lock_mark_decode(b1.data, b1.len, &b, &e) != 0 ||
            lock_mark_encode(&b, &b2, &e) != 0)
            __builtin_trap();
        same(&b1, &b2);
        lock_mark_free(&a);
        lock_mark_free(&b);
        break;
    }
    default: {
        struct maint_record a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        if (maint_record_decode(json, len, &a, &e) != 0) {
            if (!e.msg[0]) __builtin_trap();
            return 0;
        }
        if (maint_record_encode(&a, &b1, &e) != 0 ||
            maint_record_decode(b1.data, b1.len, &b, &e) != 0 ||
            maint_record_encode(&b, &b2, &e) != 0)
            __builtin_trap();
        same(&b1, &b2);
        break;
    }
    }
    return 0;
}
