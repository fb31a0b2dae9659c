/*
 * store: the chunk codec (chunk.c) — bit-exact round trips of edge cases, every error of the
 * encoder, truncated, flipped and forged blobs for the decoder, chunk_header, and the bytes per
 * sample on data shaped like what opsdb stores (values printed with 2 decimals or as integers,
 * every 10 s). Forged blobs are built here with their own header writer and zstd, so each
 * corruption check of the decoder is reached on its own.
 */
#include "unit.h"

#include "store/chunk.h"
#include "store/varint.h" /* struct reader, for chunk_get_values */

#include <float.h>
#include <math.h>

#define DAY_SAMPLES 8640   /* one day at 10 s */
#define T0 1767225600000LL /* 2026-01-01T00:00:00Z */

static double rnd_unit(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* x as text with `decimals` digits and read back, as a scraper would hand it over */
static double printed(double x, int decimals)
{
    char text[64];
    snprintf(text, sizeof text, "%.*f", decimals, x);
    return strtod(text, NULL);
}

static void regular_ts(int64_t *ts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ts[i] = T0 + (int64_t)i * 10000;
}

static void encode_ok(const int64_t *ts, const double *v, size_t n, struct buf *out)
{
    struct err e;
    err_clear(&e);
    buf_init(out, 64u << 20);
    int rc = chunk_encode(ts, v, n, out, &e);
    if (rc != 0)
        fail_msg("encoding %zu samples: rc %d: %s", n, rc, e.msg);
}

/* The header's size in a well-formed blob: magic, version, three varints and the flags. */
static size_t blob_header_len(const struct buf *b)
{
    size_t pos = 3;
    for (int varints = 0; varints < 3; pos++)
        if (!((unsigned char)b->data[pos] & 0x80))
            varints++;
    return pos + 1;
}

static unsigned blob_flags(const struct buf *b)
{
    return (unsigned char)b->data[blob_header_len(b) - 1];
}

/* Encodes, checks the header, decodes and compares bit for bit; returns the blob's size and,
 * when decimal is not NULL, whether the decimal encoding was chosen. */
static size_t round_trip(const int64_t *ts, const double *v, size_t n, bool *decimal)
{
    struct buf out;
    encode_ok(ts, v, n, &out);
    struct err e;
    size_t hn;
    int64_t first, last;
    assert_int_equal(chunk_header(out.data, out.len, &hn, &first, &last, &e), 0);
    assert_int_equal(hn, n);
    assert_true(first == ts[0] && last == ts[n - 1]);

    int64_t *ts2 = malloc(n * sizeof *ts2);
    double *v2 = malloc(n * sizeof *v2);
    size_t got = 0;
    int rc = chunk_decode(out.data, out.len, ts2, v2, n, &got, &e);
    if (rc != 0)
        fail_msg("decoding %zu samples: rc %d: %s", n, rc, e.msg);
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++) {
        if (ts2[i] != ts[i])
            fail_msg("sample %zu: ts %lld came back as %lld", i, (long long)ts[i],
                     (long long)ts2[i]);
        if (bits_of(v2[i]) != bits_of(v[i]))
            fail_msg("sample %zu: value %.17g (0x%016llx) came back as %.17g (0x%016llx)", i, v[i],
                     (unsigned long long)bits_of(v[i]), v2[i], (unsigned long long)bits_of(v2[i]));
    }
    if (decimal)
        *decimal = blob_flags(&out) & 1;
    size_t len = out.len;
    free(v2);
    free(ts2);
    buf_release(&out);
    return len;
}

/* ---------------------------------------------------------------------------------------------
 * Round trips.
 */

static void one_sample(void **state)
{
    (void)state;
    int64_t ts[] = {0, INT64_MIN, INT64_MAX, -1, T0};
    double v[] = {0.0, -0.0, NAN, 42.5, -DBL_MAX};
    for (size_t i = 0; i < 5; i++)
        round_trip(&ts[i], &v[i], 1, NULL);
}

static void extreme_timestamps(void **state)
{
    (void)state;
    double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t all[] = {INT64_MIN, INT64_MIN + 1, -T0, -1, 0, 1, T0, INT64_MAX};
    round_trip(all, v, 8, NULL);
    int64_t ends[] = {INT64_MIN, INT64_MAX}; /* a delta of 2^64 - 1 */
    round_trip(ends, v, 2, NULL);
    int64_t swing[] = {INT64_MIN, -1, INT64_MAX - 1, INT64_MAX}; /* dods near +-2^64 */
    round_trip(swing, v, 4, NULL);
    int64_t negative[] = {-5000000, -4000000, -3999999, -1000, -999, -998, -1, 0};
    round_trip(negative, v, 8, NULL);
}

static void irregular_timestamps(void **state)
{
    (void)state;
    size_t n = 5000;
    int64_t *ts = malloc(n * sizeof *ts);
    double *v = malloc(n * sizeof *v);
    int64_t t = T0;
    for (size_t i = 0; i < n; i++) {
        /* jittered scrapes, missed scrapes, bursts 1 ms apart and gaps of days */
        uint64_t r = rnd();
        t += r % 7 == 0    ? 1
             : r % 11 == 0 ? (int64_t)(r % 5) * 86400000 + 1
                           : 10000 - 50 + (int64_t)(r % 101);
        ts[i] = t;
        v[i] = (double)(i % 17);
    }
    round_trip(ts, v, n, NULL);
    free(v);
    free(ts);
}

static const uint64_t special_bits[] = {
    0x0000000000000000u, /* +0.0 */
    0x8000000000000000u, /* -0.0 */
    0x7ff0000000000000u, /* +inf */
    0xfff0000000000000u, /* -inf */
    0x7ff8000000000000u, /* quiet NaN */
    0xfff8000000000000u, /* negative quiet NaN */
    0x7ff0000000000001u, /* signalling NaN */
    0x7ff8dead0000beefu, /* NaN with a payload */
    0xffffffffffffffffu, /* all ones: a NaN */
    0x0000000000000001u, /* smallest subnormal */
    0x800fffffffffffffu, /* largest negative subnormal */
    0x0010000000000000u, /* DBL_MIN */
    0x7fefffffffffffffu, /* DBL_MAX */
    0xffefffffffffffffu, /* -DBL_MAX */
    0x3ff0000000000000u, /* 1.0 */
};
#define NSPECIAL (sizeof special_bits / sizeof special_bits[0])

static void special_doubles(void **state)
{
    (void)state;
    int64_t ts[NSPECIAL * 3];
    double v[NSPECIAL * 3];
    regular_ts(ts, NSPECIAL * 3);
    for (size_t i = 0; i < NSPECIAL * 3; i++)
        v[i] = of_bits(special_bits[(i * 7) % NSPECIAL]);
    bool decimal;
    round_trip(ts, v, NSPECIAL * 3, &decimal);
    assert_false(decimal);
    /* each special value alone, and repeated */
    for (size_t i = 0; i < NSPECIAL; i++) {
        double same[3] = {of_bits(special_bits[i]), of_bits(special_bits[i]),
                          of_bits(special_bits[i])};
        round_trip(ts, same, 3, NULL);
    }
}

static void decimal_values(void **state)
{
    (void)state;
    int64_t ts[8];
    regular_ts(ts, 8);
    const double sets[][8] = {
        {0, 1, 2, 3, 1e15, -1e15, 9007199254740991.0, -9007199254740991.0}, /* k = 0 */
        {0.5, 0.25, 0.125, -0.0625, 1, 2, 3, 4},                            /* k = 4 */
        {12.34, 99.99, 0.01, -0.01, 100, 0, 55.5, 3.14},                    /* k = 2 */
        {0.123456789012345, 1e-15, -1e-15, 0.1, 0.2, 0.3, 0.7, 0.9},        /* k = 15 */
        {1e-3, 2e-3, 5e-3, 1e-3, 123456.789, -0.001, 0, 0},                 /* k = 3 */
    };
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        bool decimal;
        round_trip(ts, sets[s], 8, &decimal);
        if (!decimal)
            fail_msg("set %zu was not encoded as decimal", s);
    }
}

static void fallback_values(void **state)
{
    (void)state;
    int64_t ts[8];
    regular_ts(ts, 8);
    const double sets[][8] = {
        {1.0 / 3, 2.0 / 3, 1, 2, 3, 4, 5, 6},
        {0.1 + 0.2, 0.1, 0.2, 0.3, 0, 0, 0, 0},    /* 0.30000000000000004 */
        {1e-16, 0, 0, 0, 0, 0, 0, 0},              /* past 15 decimals */
        {9007199254740992.0, 1, 2, 3, 4, 5, 6, 7}, /* 2^53 */
        {1e300, 1, 2, 3, 4, 5, 6, 7},
        {-0.0, 1, 2, 3, 4, 5, 6, 7},
        {1, 2, 3, 4, 5, 6, 7, INFINITY},
        {1, 2, 3, 4, NAN, 6, 7, 8},
        {M_PI, M_E, M_SQRT2, M_LN2, M_PI, M_PI, M_PI, M_E},
    };
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        bool decimal;
        round_trip(ts, sets[s], 8, &decimal);
        if (decimal)
            fail_msg("set %zu was encoded as decimal", s);
    }
    /* random bit patterns, and a smooth non-decimal series */
    size_t n = 4000;
    int64_t *many_ts = malloc(n * sizeof *many_ts);
    double *v = malloc(n * sizeof *v);
    regular_ts(many_ts, n);
    for (size_t i = 0; i < n; i++)
        v[i] = of_bits(rnd());
    round_trip(many_ts, v, n, NULL);
    for (size_t i = 0; i < n; i++)
        v[i] = sin((double)i / 100) * 1000;
    round_trip(many_ts, v, n, NULL);
    free(v);
    free(many_ts);
}

static void mixed_values(void **state)
{
    (void)state;
    size_t n = 3000;
    int64_t *ts = malloc(n * sizeof *ts);
    double *v = malloc(n * sizeof *v);
    regular_ts(ts, n);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd() % 10;
        v[i] = r < 4   ? printed(rnd_unit() * 100, 2)
               : r < 7 ? (i ? v[i - 1] : 0) /* runs of repeats */
               : r < 8 ? of_bits(special_bits[rnd() % NSPECIAL])
               : r < 9 ? (double)(int64_t)rnd()
                       : rnd_unit();
    }
    round_trip(ts, v, n, NULL);
    free(v);
    free(ts);
}

static void most_samples(void **state)
{
    (void)state;
    size_t n = CHUNK_MAX_SAMPLES;
    int64_t *ts = malloc(n * sizeof *ts);
    double *v = malloc(n * sizeof *v);
    regular_ts(ts, n);
    for (size_t i = 0; i < n; i++)
        v[i] = (double)(rnd() % 1000000) / 100;
    bool decimal;
    round_trip(ts, v, n, &decimal);
    assert_true(decimal);
    v[n / 2] = 1.0 / 3;
    round_trip(ts, v, n, &decimal);
    assert_false(decimal);
    free(v);
    free(ts);
}

/* ---------------------------------------------------------------------------------------------
 * Encoder errors.
 */

static void expect_encode_error(const int64_t *ts, const double *v, size_t n, const char *needle)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    assert_int_equal(buf_append(&out, "keep", 4), 0);
    struct err e;
    err_clear(&e);
    assert_int_equal(chunk_encode(ts, v, n, &out, &e), E_INVALID);
    assert_int_equal(e.code, E_INVALID);
    if (!strstr(e.msg, needle))
        fail_msg("message '%s' lacks '%s'", e.msg, needle);
    assert_int_equal(out.len, 4); /* unchanged */
    assert_memory_equal(out.data, "keep", 4);
    buf_release(&out);
}

static void encode_errors(void **state)
{
    (void)state;
    int64_t ts[] = {1000, 2000, 2000, 3000};
    double v[] = {1, 2, 3, 4};
    expect_encode_error(ts, v, 0, "a chunk of 0 samples cannot be encoded: it holds 1..1048576");
    expect_encode_error(ts, v, (size_t)CHUNK_MAX_SAMPLES + 1, "1048577 samples");
    expect_encode_error(ts, v, 4, "sample 2: ts 2000 is not after ts 2000");
    int64_t down[] = {T0, T0 + 10000, T0 + 5000};
    expect_encode_error(down, v, 3, "sample 2: ts 1767225605000 is not after ts 1767225610000");
    int64_t wrap[] = {INT64_MAX, INT64_MIN};
    expect_encode_error(wrap, v, 2, "is not after");

    /* the output's limit: E_LIMIT, nothing appended */
    struct buf small;
    buf_init(&small, 20);
    assert_int_equal(buf_append(&small, "abc", 3), 0);
    struct err e;
    err_clear(&e);
    assert_int_equal(chunk_encode(ts, v, 2, &small, &e), E_LIMIT);
    assert_int_equal(e.code, E_LIMIT);
    assert_non_null(strstr(e.msg, "no room for a chunk"));
    assert_int_equal(small.len, 3);
    buf_release(&small);
}

/* ---------------------------------------------------------------------------------------------
 * Decoder errors.
 */

/* 500 samples of 2-decimal values, or (use_xor) of non-decimal ones. */
static void sample_blob(bool use_xor, struct buf *out)
{
    int64_t ts[500];
    double v[500];
    for (size_t i = 0; i < 500; i++) {
        ts[i] = T0 + (int64_t)i * 10000 + (int64_t)(i % 3);
        v[i] = use_xor ? sqrt((double)i) : (double)(i % 50) / 4;
    }
    encode_ok(ts, v, 500, out);
    assert_int_equal(blob_flags(out) & 1, !use_xor);
}

static int decode(const void *blob, size_t len, size_t cap, size_t *n, struct err *e)
{
    static int64_t ts[1000];
    static double v[1000];
    err_clear(e);
    *n = 12345;
    return chunk_decode(blob, len, ts, v, cap, n, e);
}

/* Whether a blob decodes to the same samples as b, bit for bit. */
static bool same_samples(const void *blob, size_t len, const struct buf *b)
{
    static int64_t ts_a[1000], ts_b[1000];
    static double v_a[1000], v_b[1000];
    size_t na, nb;
    if (chunk_decode(blob, len, ts_a, v_a, 1000, &na, NULL) ||
        chunk_decode(b->data, b->len, ts_b, v_b, 1000, &nb, NULL))
        return false;
    return na == nb && !memcmp(ts_a, ts_b, na * sizeof ts_a[0]) &&
           !memcmp(v_a, v_b, na * sizeof v_a[0]);
}

static void truncated(void **state)
{
    (void)state;
    for (int use_xor = 0; use_xor < 2; use_xor++) {
        struct buf b;
        sample_blob(use_xor, &b);
        size_t header_len = blob_header_len(&b);
        for (size_t len = 0; len < b.len; len++) {
            char *cut = malloc(len ? len : 1); /* exact size: ASan sees any overread */
            memcpy(cut, b.data, len);
            size_t n;
            struct err e;
            int rc = decode(cut, len, 1000, &n, &e);
            if (rc != E_INVALID)
                fail_msg("cut at %zu of %zu: rc %d", len, b.len, rc);
            assert_int_equal(e.code, E_INVALID);
            assert_true(e.msg[0] != '\0');
            assert_int_equal(n, 0);
            rc = chunk_header(cut, len, &n, NULL, NULL, &e);
            assert_int_equal(rc, len >= header_len ? 0 : E_INVALID);
            free(cut);
        }
        size_t n;
        struct err e;
        assert_int_equal(decode(b.data, b.len, 1000, &n, &e), 0);
        assert_int_equal(n, 500);
        buf_release(&b);
    }
}

/* Every single flipped bit is caught (the header by its checks, the payload by zstd's checksum
 * and the size checks) or changes nothing that is decoded. */
static void flipped_bits(void **state)
{
    (void)state;
    for (int use_xor = 0; use_xor < 2; use_xor++) {
        struct buf b;
        sample_blob(use_xor, &b);
        char *bad = malloc(b.len);
        for (size_t i = 0; i < b.len; i++) {
            for (int bit = 0; bit < 8; bit++) {
                memcpy(bad, b.data, b.len);
                bad[i] ^= (char)(1 << bit);
                size_t n;
                struct err e;
                int rc = decode(bad, b.len, 1000, &n, &e);
                size_t claimed = 0;
                if (rc == E_LIMIT) /* a flip in the count's varint can only make it larger */
                    assert_int_equal(chunk_header(bad, b.len, &claimed, NULL, NULL, NULL), 0);
                /* what zstd ignores (an unused bit of its frame header) may change */
                if (rc == 0)
                    assert_true(n == 500 && same_samples(bad, b.len, &b));
                else if (rc != E_INVALID && !(rc == E_LIMIT && claimed > 1000))
                    fail_msg("%s blob, bit %d of byte %zu of %zu flipped: rc %d",
                             use_xor ? "xor" : "decimal", bit, i, b.len, rc);
                assert_true(rc == 0 || e.msg[0] != '\0');
            }
        }
        /* bytes of garbage: never a crash */
        for (size_t i = 0; i < 2000; i++) {
            memcpy(bad, b.data, b.len);
            bad[rnd() % b.len] = (char)rnd();
            bad[rnd() % b.len] = (char)rnd();
            size_t n;
            struct err e;
            int rc = decode(bad, b.len, 1000, &n, &e);
            assert_true(rc == 0 || rc == E_INVALID || rc == E_LIMIT);
        }
        free(bad);
        buf_release(&b);
    }
}

static void cap_too_small(void **state)
{
    (void)state;
    struct buf b;
    sample_blob(false, &b);
    size_t n;
    struct err e;
    assert_int_equal(decode(b.data, b.len, 499, &n, &e), E_LIMIT);
    assert_string_equal(e.msg, "the chunk holds 500 samples, more than the 499 there is room for");
    assert_int_equal(n, 0);
    assert_int_equal(chunk_decode(b.data, b.len, NULL, NULL, 0, &n, &e), E_LIMIT);
    assert_int_equal(decode(b.data, b.len, 500, &n, &e), 0);
    assert_int_equal(n, 500);
    buf_release(&b);
}

static uint64_t zz(int64_t v)
{
    return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
}

struct forged {
    uint64_t n;
    int64_t first, last;
    unsigned flags;
    const unsigned char *raw; /* payload before zstd */
    size_t raw_len;
    bool no_content_size;
    const char *tail; /* bytes after the frame */
};

/* A blob with this header and payload, written independently of chunk.c. */
static size_t forge(const struct forged *f, unsigned char *blob, size_t cap)
{
    size_t len = 0;
    blob[len++] = 0x8f;
    blob[len++] = 'C';
    blob[len++] = 1;
    len += ut_put_uvarint(blob + len, f->n);
    len += ut_put_uvarint(blob + len, zz(f->first));
    len += ut_put_uvarint(blob + len, zz(f->last));
    blob[len++] = (unsigned char)f->flags;
    len += ut_zstd_frame(blob + len, cap - len, f->raw, f->raw_len, f->no_content_size, f->tail);
    return len;
}

static void expect_forged(const struct forged *f, int want_rc, const char *needle)
{
    unsigned char blob[4096];
    size_t len = forge(f, blob, sizeof blob);
    size_t n;
    struct err e;
    int rc = decode(blob, len, 1000, &n, &e);
    if (rc != want_rc || (needle && !strstr(e.msg, needle)))
        fail_msg("forged n=%llu flags=%u: rc %d '%s', wanted %d '%s'", (unsigned long long)f->n,
                 f->flags, rc, e.msg, want_rc, needle ? needle : "");
}

/* 3 samples at 1000, 1010, 1020 (dods 10, 0); decimal k = 1: 0.1, 0.2, 0.3 */
static const unsigned char good[] = {20, 0, 1, 2, 2, 2};
static const struct forged f = {3, 1000, 1020, 1, good, sizeof good, false, NULL};

static void forged_payloads(void **state)
{
    (void)state;
    expect_forged(&f, 0, NULL);

    struct forged t = f;
    t.first = 999;
    expect_forged(&t, E_INVALID, "its last ts is 1019, its header says 1020");
    const unsigned char flat[] = {20, 19, 1, 2, 2, 2}; /* second delta 0 */
    t = f;
    t.raw = flat;
    expect_forged(&t, E_INVALID, "ts 2 (1010) is not after 1010");
    const unsigned char scale32[] = {20, 0, 0x20, 2, 2, 2};
    t = f;
    t.raw = scale32;
    expect_forged(&t, E_INVALID, "no decimal scale in 0..15");
    /* delta-of-delta: m = 1, 2, 4 is d = 1, 1, 2 is dod 1, 0, 1 */
    const unsigned char dod[] = {20, 0, 0x11, 2, 0, 2};
    t.raw = dod;
    expect_forged(&t, 0, NULL);
    /* m = 2^53: zz = 2^54 */
    unsigned char huge[32] = {20, 0, 0};
    size_t huge_len = 3 + ut_put_uvarint(huge + 3, 1ull << 54);
    huge[huge_len++] = 0;
    huge[huge_len++] = 0;
    t = f;
    t.raw = huge;
    t.raw_len = huge_len;
    expect_forged(&t, E_INVALID, "value 0 is out of range");
    const unsigned char stray[] = {20, 0, 1, 2, 2, 2, 0};
    t = f;
    t.raw = stray;
    t.raw_len = sizeof stray;
    expect_forged(&t, E_INVALID, "1 stray bytes end its payload");
    const unsigned char long_varint[] = {20,   0,    1,    0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0x02, 2,    2};
    t = f;
    t.raw = long_varint;
    t.raw_len = sizeof long_varint;
    expect_forged(&t, E_INVALID, "value 0 of 3 ends early or overflows");

    /* XOR: control bytes 0x80 (repeat), 0x90 (9 leading zero bytes: impossible) */
    const unsigned char xor_good[] = {20, 0, 0x70, 0x80, 0x80, 0x3f};
    t = f;
    t.flags = 0;
    t.raw = xor_good;
    expect_forged(&t, 0, NULL);
    const unsigned char xor_bad[] = {20, 0, 0x70, 0x90, 0x80, 0x3f};
    t.raw = xor_bad;
    expect_forged(&t, E_INVALID, "value 1 of 3 is malformed");
    const unsigned char xor_short[] = {20, 0, 0x00, 0x80, 0x80, 0x3f};
    t.raw = xor_short;
    expect_forged(&t, E_INVALID, "value 0 of 3 is malformed");
}

/* no content size, a size n cannot have, bytes after the frame */
static void forged_sizes(void **state)
{
    (void)state;
    struct forged t = f;
    t.no_content_size = true;
    expect_forged(&t, E_INVALID, "does not declare a size within 6..51 bytes");
    t = f;
    t.raw_len = 5;
    expect_forged(&t, E_INVALID, "does not declare a size within 6..51 bytes");
    unsigned char big[64] = {0};
    t.raw = big;
    t.raw_len = 52;
    expect_forged(&t, E_INVALID, "does not declare a size within 6..51 bytes");
    t = f;
    t.tail = "x";
    expect_forged(&t, E_INVALID, "1 bytes follow its payload");
}

static void forged_headers(void **state)
{
    (void)state;
    struct forged t = f;
    t.flags = 3;
    expect_forged(&t, E_INVALID, "unknown flags 0x03");
    t.flags = 0x80;
    expect_forged(&t, E_INVALID, "unknown flags 0x80");
    t = f;
    t.n = 0;
    expect_forged(&t, E_INVALID, "it claims 0 samples (1..1048576)");
    t.n = CHUNK_MAX_SAMPLES + 1ull;
    expect_forged(&t, E_INVALID, "it claims 1048577 samples");
    t.n = UINT64_MAX;
    expect_forged(&t, E_INVALID, "it claims 18446744073709551615 samples");
    t = f;
    t.last = 500;
    expect_forged(&t, E_INVALID, "3 samples cannot lie between ts 1000 and 500");
    t.last = 1001;
    expect_forged(&t, E_INVALID, "3 samples cannot lie between ts 1000 and 1001");
}

static void not_chunks(void **state)
{
    (void)state;
    struct err e;
    size_t n;
    assert_int_equal(chunk_header("", 0, &n, NULL, NULL, &e), E_INVALID);
    assert_string_equal(e.msg, "not a chunk: the blob of 0 bytes lacks the chunk magic");
    assert_int_equal(chunk_header("hello, world", 12, NULL, NULL, NULL, &e), E_INVALID);
    assert_int_equal(decode("hello, world", 12, 10, &n, &e), E_INVALID);
    assert_string_equal(e.msg, "not a chunk: the blob of 12 bytes lacks the chunk magic");
    assert_int_equal(chunk_header("\x8f"
                                  "C",
                                  2, NULL, NULL, NULL, &e),
                     E_INVALID);
    assert_non_null(strstr(e.msg, "truncated"));
    assert_int_equal(chunk_header("\x8f"
                                  "C\x02\x01\x00\x00\x01",
                                  7, NULL, NULL, NULL, &e),
                     E_INVALID);
    assert_string_equal(e.msg, "chunk version 2 is not supported (this build reads 1)");
    /* e may be NULL */
    assert_int_equal(chunk_header("x", 1, NULL, NULL, NULL, NULL), E_INVALID);
    assert_int_equal(chunk_decode("x", 1, NULL, NULL, 0, &n, NULL), E_INVALID);
}

static void header_fields(void **state)
{
    (void)state;
    int64_t ts[] = {-7, 5, 1000000000000000};
    double v[] = {1, 2, 3};
    struct buf b;
    encode_ok(ts, v, 3, &b);
    size_t n = 0;
    int64_t first = 0, last = 0;
    struct err e;
    assert_int_equal(chunk_header(b.data, b.len, &n, &first, &last, &e), 0);
    assert_int_equal(n, 3);
    assert_true(first == -7 && last == 1000000000000000);
    assert_int_equal(chunk_header(b.data, b.len, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(chunk_header(b.data, b.len, NULL, &first, NULL, &e), 0);
    /* a header alone: chunk_header reads it, chunk_decode refuses it */
    size_t header_len = blob_header_len(&b);
    assert_int_equal(chunk_header(b.data, header_len, &n, NULL, NULL, &e), 0);
    assert_int_equal(decode(b.data, header_len, 10, &n, &e), E_INVALID);
    buf_release(&b);
}

/* ---------------------------------------------------------------------------------------------
 * Size: bytes per sample on a day of data shaped like opsdb's.
 */

static double bytes_per_sample(const int64_t *ts, const double *v, size_t n, const char *what)
{
    bool decimal;
    size_t len = round_trip(ts, v, n, &decimal);
    double per = (double)len / (double)n;
    print_message("%-44s %6zu bytes, %.3f bytes/sample (%s)\n", what, len, per,
                  decimal ? "decimal" : "xor");
    return per;
}

/* A bounded random walk: x moves by up to +-step, reflected back into [lo, hi]. */
static double walk(double x, double step, double lo, double hi)
{
    x += (rnd_unit() * 2 - 1) * step;
    return x < lo ? 2 * lo - x : x > hi ? 2 * hi - x : x;
}

static void size_two_decimals(void **state)
{
    (void)state;
    size_t n = DAY_SAMPLES;
    int64_t *ts = malloc(n * sizeof *ts);
    double *v = malloc(n * sizeof *v);
    regular_ts(ts, n);
    double x = 37.5;
    for (size_t i = 0; i < n; i++) {
        x = walk(x, 1.0, 0, 100);
        v[i] = printed(x, 2);
    }
    assert_true(bytes_per_sample(ts, v, n, "percent, 2 decimals, steps <= 1.00") < 2.0);
    x = 1.5;
    for (size_t i = 0; i < n; i++) {
        x = walk(x, 0.05, 0, 16);
        v[i] = printed(x, 2);
    }
    assert_true(bytes_per_sample(ts, v, n, "load, 2 decimals, steps <= 0.05") < 2.0);
    for (size_t i = 0; i < n; i++)
        v[i] = 42.0;
    assert_true(bytes_per_sample(ts, v, n, "constant") < 0.05);
    free(v);
    free(ts);
}

static void size_integers(void **state)
{
    (void)state;
    size_t n = DAY_SAMPLES;
    int64_t *ts = malloc(n * sizeof *ts);
    double *v = malloc(n * sizeof *v);
    regular_ts(ts, n);
    /* bytes sent: a counter whose rate (about 1.25 MB per 10 s) walks */
    double rate = 1250000, total = 8.0e11;
    for (size_t i = 0; i < n; i++) {
        rate = walk(rate, 25000, 500000, 2500000);
        total += floor(rate);
        v[i] = total;
    }
    assert_true(bytes_per_sample(ts, v, n, "byte counter, rate walks by <= 25 KB") < 2.5);
    /* memory used: a gauge in bytes walking by up to 64 pages */
    double used = 4.0e9;
    for (size_t i = 0; i < n; i++) {
        used = walk(used, 64 * 4096, 1e9, 8e9);
        v[i] = floor(used / 4096) * 4096;
    }
    assert_true(bytes_per_sample(ts, v, n, "memory bytes, pages, steps <= 64 pages") < 2.0);
    /* requests served: a counter of small increments */
    double count = 123456;
    for (size_t i = 0; i < n; i++) {
        count += (double)(rnd() % 200);
        v[i] = count;
    }
    assert_true(bytes_per_sample(ts, v, n, "request counter, +0..199") < 2.0);
    free(v);
    free(ts);
}

/* ---------------------------------------------------------------------------------------------
 * One value column alone: chunk_put_values, chunk_get_values.
 */

/* Writes v[0 .. n) as a column into exactly chunk_values_bound(n) bytes (ASan sees a write past
 * them), checks its kind byte (1 decimal, 0 XOR), reads it back bit for bit from an exact-size
 * copy and returns the column (free it) and its length. */
static uint8_t *column_round_trip(const double *v, size_t n, int kind, size_t *len)
{
    uint8_t *col = malloc(chunk_values_bound(n));
    *len = chunk_put_values(col, v, n);
    assert_true(*len >= 1 && *len <= chunk_values_bound(n));
    if (col[0] != kind)
        fail_msg("%zu values: column kind %u, wanted %d", n, col[0], kind);
    uint8_t *exact = malloc(*len);
    memcpy(exact, col, *len);
    free(col);
    double *back = malloc((n ? n : 1) * sizeof *back);
    struct reader r = {exact, *len, 0};
    struct err e;
    err_clear(&e);
    if (chunk_get_values(&r, n, back, &e) != 0)
        fail_msg("%zu values: %s", n, e.msg);
    assert_int_equal(r.pos, *len);
    for (size_t i = 0; i < n; i++)
        if (bits_of(back[i]) != bits_of(v[i]))
            fail_msg("value %zu of %zu: 0x%016llx came back as 0x%016llx", i, n,
                     (unsigned long long)bits_of(v[i]), (unsigned long long)bits_of(back[i]));
    free(back);
    return exact;
}

static void values_round_trip(void **state)
{
    (void)state;
    size_t len, n = 4000;
    double *v = malloc(n * sizeof *v);
    const double decimal[][8] = {
        {0, 1, 2, 3, 1e15, -1e15, 9007199254740991.0, -9007199254740991.0},
        {12.34, 99.99, 0.01, -0.01, 100, 0, 55.5, 3.14},
        {0.123456789012345, 1e-15, -1e-15, 0.1, 0.2, 0.3, 0.7, 0.9},
        {1e12, 1e12 + 7, 1e12 + 15, 1e12 + 24, 1e12 + 34, 1e12 + 45, 1e12 + 57, 1e12 + 70},
    };
    for (size_t s = 0; s < sizeof decimal / sizeof decimal[0]; s++)
        for (size_t k = 0; k <= 8; k++)
            free(column_round_trip(decimal[s], k, 1, &len));
    /* each special double alone and repeated, then all of them in turn */
    for (size_t i = 0; i < NSPECIAL; i++) {
        v[0] = v[1] = v[2] = of_bits(special_bits[i]);
        bool is_decimal = (v[0] == 0 && !signbit(v[0])) || v[0] == 1.0; /* +0.0, 1.0 */
        free(column_round_trip(v, 3, is_decimal, &len));
    }
    for (size_t i = 0; i < NSPECIAL * 3; i++)
        v[i] = of_bits(special_bits[(i * 7) % NSPECIAL]);
    free(column_round_trip(v, NSPECIAL * 3, 0, &len));
    /* the largest columns: random bits (XOR), and mantissas near +-2^53 that alternate (decimal) */
    for (size_t i = 0; i < n; i++)
        v[i] = of_bits(rnd());
    free(column_round_trip(v, n, 0, &len));
    print_message("%zu random doubles: %zu bytes of %zu bound\n", n, len, chunk_values_bound(n));
    for (size_t i = 0; i < n; i++)
        v[i] = (i % 2 ? 1 : -1) * (9007199254740991.0 - (double)(rnd() % 1000));
    free(column_round_trip(v, n, 1, &len));
    /* a column reads only its own bytes: two back to back */
    uint8_t *a = column_round_trip(decimal[1], 8, 1, &len), both[256];
    size_t len_b;
    uint8_t *b = column_round_trip(v, 5, 1, &len_b);
    memcpy(both, a, len);
    memcpy(both + len, b, len_b);
    struct reader r = {both, len + len_b, 0};
    double back[8];
    assert_int_equal(chunk_get_values(&r, 8, back, NULL), 0);
    assert_int_equal(r.pos, len);
    assert_int_equal(chunk_get_values(&r, 5, back, NULL), 0);
    assert_true(r.pos == len + len_b && back[4] == v[4]);
    free(b);
    free(a);
    free(v);
}

/* chunk_get_values on bytes that are not a column of n values: E_INVALID with needle. */
static void expect_bad_column(const uint8_t *col, size_t len, size_t n, const char *needle)
{
    uint8_t *exact = malloc(len ? len : 1); /* ASan sees a read past the end */
    if (len)
        memcpy(exact, col, len);
    struct reader r = {exact, len, 0};
    double v[64];
    struct err e;
    err_clear(&e);
    int rc = chunk_get_values(&r, n, v, &e);
    if (rc != E_INVALID || e.code != E_INVALID || !e.msg[0] || (needle && !strstr(e.msg, needle)))
        fail_msg("%zu bytes for %zu values: rc %d '%s', wanted '%s'", len, n, rc, e.msg,
                 needle ? needle : "");
    free(exact);
}

static void values_errors(void **state)
{
    (void)state;
    expect_bad_column(NULL, 0, 3, "a value column is missing");
    const uint8_t kinds[] = {2, 3, 0x10, 0x80, 0xff};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        uint8_t col[] = {kinds[k], 0, 2, 2, 2};
        char needle[64];
        snprintf(needle, sizeof needle, "a value column of unknown kind %u", kinds[k]);
        expect_bad_column(col, sizeof col, 3, needle);
    }
    expect_bad_column((const uint8_t[]){1, 0x20, 2, 2, 2}, 5, 3, "no decimal scale in 0..15");
    expect_bad_column((const uint8_t[]){0, 0x90, 0x80, 0x80}, 4, 3, "value 0 of 3 is malformed");
    /* every truncation of a decimal and of an XOR column */
    double v[] = {1.25, -3.5, 1e6, 0.75, 1.0 / 3, -0.0, NAN, 2};
    for (size_t use_xor = 0; use_xor < 2; use_xor++) {
        size_t len, n = use_xor ? 8 : 4;
        uint8_t *col = column_round_trip(v, n, !use_xor, &len);
        for (size_t cut = 0; cut < len; cut++)
            expect_bad_column(col, cut, n, NULL);
        expect_bad_column(col, len, n + 1, NULL); /* one value more than it holds */
        free(col);
    }
}

int main(void)
{
    unit_rng = 0x9e3779b97f4a7c15u; /* the seed the measured sizes were taken with */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_sample),           cmocka_unit_test(extreme_timestamps),
        cmocka_unit_test(irregular_timestamps), cmocka_unit_test(special_doubles),
        cmocka_unit_test(decimal_values),       cmocka_unit_test(fallback_values),
        cmocka_unit_test(mixed_values),         cmocka_unit_test(most_samples),
        cmocka_unit_test(encode_errors),        cmocka_unit_test(truncated),
        cmocka_unit_test(flipped_bits),         cmocka_unit_test(cap_too_small),
        cmocka_unit_test(forged_payloads),      cmocka_unit_test(forged_sizes),
        cmocka_unit_test(forged_headers),       cmocka_unit_test(not_chunks),
        cmocka_unit_test(header_fields),        cmocka_unit_test(size_two_decimals),
        cmocka_unit_test(size_integers),        cmocka_unit_test(values_round_trip),
        cmocka_unit_test(values_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
