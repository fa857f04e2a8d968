/* fuzz_snapshot.c - libFuzzer target for snap_decode: hostile JSON must be refused cleanly, and
 * whatever decodes must encode, and its encoding must decode and encode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct snapshot s, again, copy;
    struct buf b1 = BUF_INIT, b2 = BUF_INIT, b3 = BUF_INIT;
    struct err e;
    if (snap_decode(data, size, &s, &e) != 0) {
        if (s.hostname || s.paths || s.tags || s.labels || !e.msg[0]) __builtin_trap();
        return 0;
    }
    if (snap_encode(&s, &b1, &e) != 0) __builtin_trap();
    if (snap_decode(b1.data, b1.len, &again, &e) != 0) __builtin_trap();
    if (snap_encode(&again, &b2, &e) != 0) __builtin_trap();
    if (b1.len != b2.len || memcmp(b1.data, b2.data, b1.len) != 0) __builtin_trap();
    if (snap_copy(&copy, &again, &e) != 0 || snap_encode(&copy, &b3, &e) != 0) __builtin_trap();
    if (b1.len != b3.len || memcmp(b1.data, b3.data, b1.len) != 0) __builtin_trap();
    snap_free(&s);
    snap_free(&again);
    snap_free(&copy);
    buf_free(&b1);
    buf_free(&b2);
    buf_free(&b3);
    return 0;
}
