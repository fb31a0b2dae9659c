/*
 * libFuzzer target: latency sketch blobs (sketch_merge_blob), the bytes the sketch_merge() and
 * sketch_percentile() SQL functions take from any query. Every input either fails with E_INVALID
 * and a message, leaving the sketch as it was, or parses to a sketch whose blob is exactly the
 * input (the encoding is canonical), whose percentiles are ordered and in range, and which merges
 * into others or itself within the count limit.
 */
#include "fuzz_common.h"

#include "core/sketch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The largest value a sketch reports: its top bucket's, about 1.7e18 (sketch.h). */
#define FUZZ_SKETCH_TOP 1.8e18

/* Percentiles are NaN only when empty, else finite, >= 0, in range and non-decreasing in p. */
static void check_percentiles(const struct sketch *s)
{
    double prev = 0;
    for (int i = 0; i <= 40; i++) {
        double p = 2.5 * i, v = sketch_percentile(s, p);
        if (sketch_count(s) == 0) {
            fuzz_check(isnan(v), "p%g of an empty sketch is %g", p, v);
            continue;
        }
        fuzz_check(isfinite(v) && v >= 0 && v <= FUZZ_SKETCH_TOP, "p%g is %g", p, v);
        fuzz_check(v >= prev * (1 - 1e-12), "p%g %.17g < %.17g", p, v, prev);
        prev = v;
    }
}

/* Merges s into a sketch holding one value and into itself: both succeed or hit the limit. */
static void check_merges(struct sketch *s)
{
    struct err e;
    struct sketch *seeded = sketch_new();
    fuzz_check(seeded && sketch_add(seeded, 1.0, 1, &e) == 0, "seeded sketch");
    uint64_t n = sketch_count(s);
    int rc = sketch_merge(seeded, s, &e);
    fuzz_check(rc == 0 || (rc == E_LIMIT && n == UINT64_MAX), "merge rc %d", rc);
    fuzz_check(sketch_count(seeded) == (rc == 0 ? n + 1 : 1), "merged count");
    check_percentiles(seeded);
    sketch_free(&seeded);
    rc = sketch_merge(s, s, &e);
    fuzz_check(rc == 0 || (rc == E_LIMIT && n > UINT64_MAX / 2), "self merge rc %d", rc);
    fuzz_check(sketch_count(s) == (rc == 0 ? 2 * n : n), "self-merged count");
    check_percentiles(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *blob = malloc(size ? size : 1); /* exact size: ASan sees any read past it */
    memcpy(blob, data, size);
    struct sketch *s = sketch_new();
    fuzz_check(s != NULL, "sketch_new");
    struct err e;
    err_clear(&e);
    int rc = sketch_merge_blob(s, blob, size, &e);
    fuzz_check(rc == 0 || rc == E_INVALID, "rc %d", rc);
    if (rc != 0) {
        fuzz_check(e.code == rc && e.msg[0] != '\0', "failure %d without a message", rc);
        fuzz_check(sketch_count(s) == 0, "a failed merge changed the sketch");
    } else {
        struct buf out;
        buf_init(&out, SKETCH_BLOB_MAX_BYTES);
        fuzz_check(sketch_serialize(s, &out) == 0, "serialize");
        fuzz_check(out.len == size && memcmp(out.data, blob, size) == 0,
                   "not canonical: %zu bytes in, %zu out", size, out.len);
        buf_release(&out);
        check_percentiles(s);
        check_merges(s);
    }
    sketch_free(&s);
    free(blob);
    return 0;
}
