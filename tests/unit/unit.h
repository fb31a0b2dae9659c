/*
 * Shared helpers of the cmocka unit tests (header only: each test_<name>.c is one program).
 * cmocka needs stdarg/stddef/setjmp/stdint before its header; including this file gets them.
 */
#ifndef OPSDB_TEST_UNIT_H
#define OPSDB_TEST_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "core/core.h"

/* xorshift64: deterministic data, the same on every run (a test program may set unit_rng
 * first, as its own seed). */
static uint64_t unit_rng __attribute__((unused)) = 0x2545f4914f6cdd1du;

static inline uint64_t rnd(void)
{
    unit_rng ^= unit_rng << 13;
    unit_rng ^= unit_rng >> 7;
    unit_rng ^= unit_rng << 17;
    return unit_rng;
}

/* A double's bits and back, for bit-exact comparisons. */
static inline uint64_t bits_of(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static inline double of_bits(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

/* A test that shows a known, reported bug in src/: skipped (so the suite stays green) unless
 * OPSDB_TEST_KNOWN_BUGS is set in the environment, which runs it to show the failure. */
#define KNOWN_BUG(why)                                                                             \
    do {                                                                                           \
        if (!getenv("OPSDB_TEST_KNOWN_BUGS")) {                                                    \
            print_message("known bug, skipped: %s\n", (why));                                      \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* The Makefile links every src object except main.o into each test, and src/cli/cli_common.o
 * refers to cli_commands(), which src/main.c defines. This weak stand-in satisfies the linker
 * (no unit test runs CLI commands); it yields to a real definition if one is ever linked. */
struct command;
__attribute__((weak)) const struct command *cli_commands(size_t *count);
__attribute__((weak)) const struct command *cli_commands(size_t *count)
{
    *count = 0;
    return NULL;
}

#define HOUR_MS (3600 * 1000LL)
#define DAY_MS (86400 * 1000LL)

/* An RFC 3339 text for now + offset_ms, for rows that must pass the time horizon checks. */
static inline void ut_time_text(int64_t offset_ms, char out[40])
{
    time_format_rfc3339(time_now_ms() + offset_ms, out, 40);
}

/* The index of the first rejection whose reason contains needle, or -1. */
static inline int ut_find_reject(const struct rejects *r, const char *needle)
{
    for (size_t i = 0; i < r->n; i++)
        if (strstr(r->items[i].reason, needle))
            return (int)i;
    return -1;
}

/* Fails the test with every rejection printed when needle is not among them. */
#define assert_rejected(r, needle)                                                                 \
    do {                                                                                           \
        if (ut_find_reject((r), (needle)) < 0) {                                                   \
            for (size_t k_ = 0; k_ < (r)->n; k_++)                                                 \
                print_error("  reject row %zu field '%s': %s\n", (r)->items[k_].row,               \
                            (r)->items[k_].field, (r)->items[k_].reason);                          \
            fail_msg("no rejection mentions \"%s\"", (needle));                                    \
        }                                                                                          \
    } while (0)

/* Fails with the rejections printed when r holds any. */
#define assert_no_rejects(r)                                                                       \
    do {                                                                                           \
        if ((r)->count) {                                                                          \
            for (size_t k_ = 0; k_ < (r)->n; k_++)                                                 \
                print_error("  reject row %zu field '%s': %s\n", (r)->items[k_].row,               \
                            (r)->items[k_].field, (r)->items[k_].reason);                          \
            fail_msg("%zu unexpected rejection(s)", (r)->count);                                   \
        }                                                                                          \
    } while (0)

/* The value of column name in row i of b. */
static inline struct value *ut_cell(struct batch *b, size_t i, const char *name)
{
    int col = schema_column(b->table, name);
    assert_true(col >= 0);
    return &batch_row(b, i)[col];
}

/* Asserts a TEXT cell equals s (by length: defaults need not be NUL-terminated). */
#define assert_cell_text(b, i, name, want)                                                         \
    do {                                                                                           \
        const struct value *v_ = ut_cell((b), (i), (name));                                        \
        const char *w_ = (want);                                                                   \
        assert_int_equal(v_->type, VAL_TEXT);                                                      \
        if (v_->len != strlen(w_) || memcmp(v_->s, w_, v_->len) != 0)                              \
            fail_msg("%s: '%.*s' != '%s'", (name), (int)v_->len, v_->s, w_);                       \
    } while (0)

/* Forging codec blobs (test_chunk.c, test_colpack.c), written independently of src/store: an
 * unsigned LEB128 varint at p; returns its bytes. */
static inline size_t ut_put_uvarint(unsigned char *p, uint64_t v)
{
    size_t i = 0;
    for (; v >= 0x80; v >>= 7)
        p[i++] = (unsigned char)(v | 0x80);
    p[i++] = (unsigned char)v;
    return i;
}

/* Writes at p (room for cap bytes) one zstd frame of raw with a checksum, and with its content
 * size unless no_content_size, then the bytes of tail (may be NULL); returns the bytes written. */
static inline size_t ut_zstd_frame(unsigned char *p, size_t cap, const void *raw, size_t raw_len,
                                   bool no_content_size, const char *tail)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    assert_non_null(c);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, !no_content_size);
    ZSTD_outBuffer out = {p, cap, 0};
    ZSTD_inBuffer in = {raw, raw_len, 0};
    assert_int_equal(ZSTD_compressStream2(c, &out, &in, ZSTD_e_end), 0);
    ZSTD_freeCCtx(c);
    size_t len = out.pos;
    if (tail) {
        assert_true(strlen(tail) <= cap - len);
        memcpy(p + len, tail, strlen(tail));
        len += strlen(tail);
    }
    return len;
}

#endif
