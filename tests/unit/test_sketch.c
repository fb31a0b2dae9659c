/*
 * core: the latency sketch (sketch.c) — every percentile within 1% of the exact, linearly
 * interpolated percentile on lognormal, uniform, bimodal and wide-range latencies; merges of parts
 * serialize exactly like one sketch of the whole; zeros, single values, count limits; the blob
 * round trip and every malformed-blob path. Then the SQL functions (store/sqlite_sketch.c) on an
 * in-memory database. Random data comes from a seeded generator, so failures reproduce.
 */
#include "unit.h"

#include "core/sketch.h"
#include "store/sqlite_sketch.h"

#include <float.h>
#include <math.h>
#include <sqlite3.h>

/* ---------------------------------------------------------------------------------------------
 * Data and the exact percentile.
 */

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed;
}

/* splitmix64 */
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_uniform(void)
{
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

/* Standard normal (Box-Muller). */
static double rng_normal(void)
{
    double u1 = 1.0 - rng_uniform(), u2 = rng_uniform();
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

enum dist { DIST_LOGNORMAL, DIST_UNIFORM, DIST_BIMODAL, DIST_WIDE, DIST_COUNT };
static const char *const dist_names[DIST_COUNT] = {"lognormal", "uniform", "bimodal", "wide"};

/* One latency in ms of the distribution. */
static double draw(enum dist d)
{
    switch (d) {
    case DIST_LOGNORMAL:
        return exp(log(40.0) + 0.9 * rng_normal());
    case DIST_UNIFORM:
        return 0.5 + 2000.0 * rng_uniform();
    case DIST_BIMODAL: /* a fast cached path and a slow one */
        if (rng_uniform() < 0.8)
            return fabs(8.0 + 2.0 * rng_normal()) + 0.1;
        return fabs(900.0 + 150.0 * rng_normal()) + 0.1;
    default: /* log-uniform over the whole span latencies take, 1 us .. 3 h */
        return exp(log(1e-3) + (log(1e7) - log(1e-3)) * rng_uniform());
    }
}

static double *draw_n(enum dist d, size_t n)
{
    double *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = draw(d);
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Exact percentile of sorted[0..n), as opsdb's percentile(x, p) defines it. */
static double exact_percentile(const double *sorted, size_t n, double p)
{
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - (double)lo);
}

/* The sketch's promise: alpha of the exact value, plus rounding and the zero threshold. */
static bool within(double est, double exact)
{
    return fabs(est - exact) <= SKETCH_RELATIVE_ACCURACY * exact * (1 + 1e-9) + 1e-9;
}

static struct sketch *sketch_of(const double *v, size_t n)
{
    struct sketch *s = sketch_new();
    assert_non_null(s);
    struct err e;
    err_clear(&e);
    for (size_t i = 0; i < n; i++)
        if (sketch_add(s, v[i], 1, &e) != 0)
            fail_msg("add %g: %s", v[i], e.msg);
    return s;
}

static void serialize(const struct sketch *s, struct buf *out)
{
    buf_init(out, SKETCH_BLOB_MAX_BYTES);
    assert_int_equal(sketch_serialize(s, out), 0);
    assert_true(out->len <= SKETCH_BLOB_MAX_BYTES);
}

static void assert_same_blob(const struct sketch *a, const struct sketch *b)
{
    struct buf x, y;
    serialize(a, &x);
    serialize(b, &y);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.data, y.data, x.len);
    buf_release(&x);
    buf_release(&y);
}

/* Checks s against the exact percentiles of v[0..n) at the usual and at random p; returns the
 * largest relative error seen. */
static double check_against_exact(const struct sketch *s, double *v, size_t n, const char *what)
{
    static const double fixed[] = {0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100};
    size_t nfixed = sizeof fixed / sizeof fixed[0];
    qsort(v, n, sizeof *v, cmp_double);
    double worst = 0;
    for (size_t i = 0; i < nfixed + 300; i++) {
        double p = i < nfixed ? fixed[i] : 100.0 * rng_uniform();
        double est = sketch_percentile(s, p), exact = exact_percentile(v, n, p);
        if (!within(est, exact))
            fail_msg("%s (n=%zu) p%.6g: sketch %.17g, exact %.17g (%.4f%% off)", what, n, p, est,
                     exact, 100 * fabs(est - exact) / exact);
        if (exact > 0)
            worst = fmax(worst, fabs(est - exact) / exact);
    }
    return worst;
}

/* ---------------------------------------------------------------------------------------------
 * Accuracy.
 */

static void accuracy_on_latency_sets(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 2, 3, 7, 100, 1000, 50000};
    rng_seed(1);
    for (int d = 0; d < DIST_COUNT; d++) {
        double worst = 0;
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            double *v = draw_n((enum dist)d, sizes[k]);
            struct sketch *s = sketch_of(v, sizes[k]);
            assert_int_equal(sketch_count(s), sizes[k]);
            worst = fmax(worst, check_against_exact(s, v, sizes[k], dist_names[d]));
            sketch_free(&s);
            assert_null(s);
            free(v);
        }
        print_message("%-9s largest relative error %.5f%%\n", dist_names[d], 100 * worst);
    }
}

/* Observations added with a count are the same as that many single ones. */
static void accuracy_with_counts(void **state)
{
    (void)state;
    rng_seed(2);
    size_t distinct = 500, n = 0;
    double *expanded = malloc(distinct * 40 * sizeof *expanded);
    struct sketch *s = sketch_new(), *singles = sketch_new();
    struct err e;
    for (size_t i = 0; i < distinct; i++) {
        double x = draw(DIST_BIMODAL);
        uint64_t count = 1 + rng_next() % 39;
        assert_int_equal(sketch_add(s, x, count, &e), 0);
        for (uint64_t c = 0; c < count; c++) {
            expanded[n++] = x;
            assert_int_equal(sketch_add(singles, x, 1, &e), 0);
        }
    }
    assert_int_equal(sketch_count(s), n);
    assert_same_blob(s, singles);
    check_against_exact(s, expanded, n, "counted");
    sketch_free(&s);
    sketch_free(&singles);
    free(expanded);
}

/* ---------------------------------------------------------------------------------------------
 * Merging.
 */

static void merge_of_parts_equals_whole(void **state)
{
    (void)state;
    rng_seed(3);
    size_t n = 20000;
    double *v = draw_n(DIST_WIDE, n);
    struct sketch *whole = sketch_of(v, n), *by_merge = sketch_new(), *by_blob = sketch_new();
    struct err e;
    err_clear(&e);
    /* parts of random sizes, some empty, merged both as sketches and through their blobs */
    for (size_t at = 0; at < n;) {
        size_t len = rng_next() % 300;
        len = len > n - at ? n - at : len;
        struct sketch *part = sketch_of(v + at, len);
        assert_int_equal(sketch_merge(by_merge, part, &e), 0);
        struct buf b;
        serialize(part, &b);
        if (sketch_merge_blob(by_blob, b.data, b.len, &e) != 0)
            fail_msg("merge_blob: %s", e.msg);
        buf_release(&b);
        sketch_free(&part);
        at += len;
    }
    assert_int_equal(sketch_count(by_merge), n);
    assert_same_blob(whole, by_merge);
    assert_same_blob(whole, by_blob);
    check_against_exact(by_merge, v, n, "merged");
    sketch_free(&whole);
    sketch_free(&by_merge);
    sketch_free(&by_blob);
    free(v);
}

/* A merge into itself doubles every count, like adding each value twice. */
static void merge_into_itself(void **state)
{
    (void)state;
    rng_seed(4);
    double v[200];
    for (size_t i = 0; i < 100; i++)
        v[i] = v[i + 100] = draw(DIST_LOGNORMAL);
    v[0] = v[100] = 0; /* zeros double too */
    struct sketch *s = sketch_of(v, 100), *twice = sketch_of(v, 200);
    struct err e;
    assert_int_equal(sketch_merge(s, s, &e), 0);
    assert_int_equal(sketch_count(s), 200);
    assert_same_blob(s, twice);
    sketch_free(&s);
    sketch_free(&twice);
}

/* ---------------------------------------------------------------------------------------------
 * Edges: empty, zeros, one value, invalid values, limits, clamping.
 */

static void empty_sketch(void **state)
{
    (void)state;
    struct sketch *s = sketch_new(), *copy = sketch_new();
    assert_int_equal(sketch_count(s), 0);
    assert_true(isnan(sketch_percentile(s, 50)));
    struct buf b;
    serialize(s, &b);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "\x01\x00\x00", 3);
    struct err e;
    assert_int_equal(sketch_merge_blob(copy, b.data, b.len, &e), 0);
    assert_int_equal(sketch_count(copy), 0);
    assert_int_equal(sketch_merge(copy, s, &e), 0);
    assert_true(isnan(sketch_percentile(copy, 0)));
    buf_release(&b);
    sketch_free(&s);
    sketch_free(&copy);
    sketch_free(&s); /* a cleared pointer frees nothing */
}

static void zeros(void **state)
{
    (void)state;
    double v[] = {0, 0, 0, -0.0, 1e-12, 5e-10, 0, 2.5, 40, 900, 0, 3, 1e-9};
    size_t n = sizeof v / sizeof v[0];
    struct sketch *s = sketch_of(v, n);
    assert_int_equal(sketch_count(s), n);
    assert_true(sketch_percentile(s, 0) == 0);
    assert_true(sketch_percentile(s, 50) == 0); /* rank 6 of 13 is still a zero */
    check_against_exact(s, v, n, "zeros");
    /* only zeros: every percentile is exactly 0 */
    struct sketch *z = sketch_new();
    struct err e;
    assert_int_equal(sketch_add(z, 0, 1000, &e), 0);
    assert_true(sketch_percentile(z, 0) == 0 && sketch_percentile(z, 99) == 0 &&
                sketch_percentile(z, 100) == 0);
    sketch_free(&s);
    sketch_free(&z);
}

static void single_value(void **state)
{
    (void)state;
    static const double xs[] = {1e-9, 0.001, 1, 123.456, 1e7};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        struct sketch *s = sketch_new();
        struct err e;
        assert_int_equal(sketch_add(s, xs[i], i + 1, &e), 0);
        double p0 = sketch_percentile(s, 0);
        if (!within(p0, xs[i]))
            fail_msg("%g is reported as %.17g", xs[i], p0);
        for (double p = 0; p <= 100; p += 12.5)
            assert_true(sketch_percentile(s, p) == p0);
        sketch_free(&s);
    }
}

static void invalid_values(void **state)
{
    (void)state;
    static const double bad[] = {-1, -1e-300, -INFINITY, INFINITY, NAN};
    struct sketch *s = sketch_new();
    struct err e;
    assert_int_equal(sketch_add(s, 5, 1, &e), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(sketch_add(s, bad[i], 1, &e), E_INVALID);
        assert_int_equal(e.code, E_INVALID);
        assert_non_null(strstr(e.msg, "must be finite and >= 0"));
    }
    assert_int_equal(sketch_add(s, -1, 0, &e), E_INVALID); /* even with count 0 */
    assert_int_equal(sketch_add(s, 7, 0, &e), 0);          /* count 0 adds nothing */
    assert_int_equal(sketch_count(s), 1);
    assert_true(isnan(sketch_percentile(s, -0.001)));
    assert_true(isnan(sketch_percentile(s, 100.001)));
    assert_true(isnan(sketch_percentile(s, NAN)));
    sketch_free(&s);
}

static void count_limits(void **state)
{
    (void)state;
    struct sketch *full = sketch_new(), *one = sketch_new();
    struct err e;
    assert_int_equal(sketch_add(full, 10, UINT64_MAX - 1, &e), 0);
    assert_int_equal(sketch_add(full, 0, 1, &e), 0);
    assert_int_equal(sketch_count(full), UINT64_MAX);
    err_clear(&e);
    assert_int_equal(sketch_add(full, 10, 1, &e), E_LIMIT);
    assert_non_null(strstr(e.msg, "count would pass"));
    assert_int_equal(sketch_add(one, 20, 1, &e), 0);
    assert_int_equal(sketch_merge(full, one, &e), E_LIMIT);
    assert_int_equal(sketch_count(full), UINT64_MAX);
    /* percentiles stay defined at the largest count */
    assert_true(sketch_percentile(full, 0) == 0);
    assert_true(within(sketch_percentile(full, 50), 10));
    assert_true(within(sketch_percentile(full, 100), 10));
    /* the full sketch's blob parses, and merging it into a non-empty one is E_LIMIT */
    struct buf b;
    serialize(full, &b);
    struct sketch *copy = sketch_new();
    assert_int_equal(sketch_merge_blob(copy, b.data, b.len, &e), 0);
    assert_same_blob(copy, full);
    assert_int_equal(sketch_merge_blob(one, b.data, b.len, &e), E_LIMIT);
    assert_int_equal(sketch_count(one), 1);
    buf_release(&b);
    sketch_free(&full);
    sketch_free(&one);
    sketch_free(&copy);
}

/* Values past the index range are clamped to the top bucket; below the zero threshold are 0. */
static void clamping(void **state)
{
    (void)state;
    struct sketch *s = sketch_new();
    struct err e;
    assert_int_equal(sketch_add(s, 1e300, 1, &e), 0);
    assert_int_equal(sketch_add(s, DBL_MAX, 1, &e), 0);
    double top = sketch_percentile(s, 100);
    assert_true(top > 1.6e18 && top < 1.8e18);
    assert_true(sketch_percentile(s, 0) == top);
    assert_int_equal(sketch_add(s, 1e-10, 1, &e), 0);
    assert_true(sketch_percentile(s, 0) == 0);
    assert_int_equal(sketch_add(s, 1e-9, 2, &e), 0);     /* the threshold itself is kept */
    assert_true(within(sketch_percentile(s, 25), 1e-9)); /* rank 1 of 0, 1e-9, 1e-9, top, top */
    sketch_free(&s);
}

/* ---------------------------------------------------------------------------------------------
 * The blob.
 */

static void round_trip(void **state)
{
    (void)state;
    rng_seed(5);
    for (int d = 0; d < DIST_COUNT; d++) {
        size_t n = 5000;
        double *v = draw_n((enum dist)d, n);
        v[0] = v[1] = 0;
        struct sketch *s = sketch_of(v, n), *copy = sketch_new();
        struct buf b;
        serialize(s, &b);
        struct err e;
        assert_int_equal(sketch_merge_blob(copy, b.data, b.len, &e), 0);
        assert_int_equal(sketch_count(copy), n);
        assert_same_blob(s, copy);
        for (double p = 0; p <= 100; p += 0.5)
            assert_true(sketch_percentile(s, p) == sketch_percentile(copy, p));
        print_message("%-9s %zu values: %zu-byte blob\n", dist_names[d], n, b.len);
        buf_release(&b);
        sketch_free(&s);
        sketch_free(&copy);
        free(v);
    }
}

/* Merges blob into a sketch holding one value; expects E_INVALID mentioning needle (NULL: any
 * message) and the sketch unchanged. */
static void expect_invalid(const void *blob, size_t len, const char *needle)
{
    struct sketch *s = sketch_new();
    struct err e;
    assert_int_equal(sketch_add(s, 3, 1, &e), 0);
    err_clear(&e);
    int rc = sketch_merge_blob(s, blob, len, &e);
    if (rc != E_INVALID)
        fail_msg("%zu-byte blob: rc %d, want E_INVALID (%s)", len, rc, needle ? needle : "");
    assert_int_equal(e.code, E_INVALID);
    assert_true(e.msg[0] != '\0');
    if (needle && !strstr(e.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle);
    assert_int_equal(sketch_count(s), 1);
    assert_true(within(sketch_percentile(s, 50), 3));
    sketch_free(&s);
}

static void truncated_blobs(void **state)
{
    (void)state;
    /* multi-byte varints everywhere: zero count, bucket count, negative and large deltas,
     * large counts */
    struct sketch *s = sketch_new();
    struct err e;
    assert_int_equal(sketch_add(s, 0, 300, &e), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(sketch_add(s, 1e-3 * pow(1.5, i % 45), 1 + (uint64_t)i * 99991, &e), 0);
    assert_int_equal(sketch_add(s, 1e9, UINT64_MAX / 2, &e), 0);
    struct buf b;
    serialize(s, &b);
    for (size_t len = 0; len < b.len; len++) {
        char *copy = malloc(len ? len : 1); /* exact size: ASan catches any read past it */
        memcpy(copy, b.data, len);
        expect_invalid(copy, len, len == 0 ? "empty" : "truncated");
        free(copy);
    }
    expect_invalid(NULL, 0, "empty");
    char *longer = malloc(b.len + 1);
    memcpy(longer, b.data, b.len);
    longer[b.len] = 0;
    expect_invalid(longer, b.len + 1, "1 trailing bytes");
    free(longer);
    buf_release(&b);
    sketch_free(&s);
}

#define BLOB(...) (const unsigned char[]){__VA_ARGS__}, sizeof((const unsigned char[]){__VA_ARGS__})

static void malformed_blobs(void **state)
{
    (void)state;
    expect_invalid(BLOB(0, 0, 0), "version 0");
    expect_invalid(BLOB(2, 0, 0), "version 2");
    expect_invalid(BLOB(0xff), "version 255");
    /* index 2101 (zigzag 4202 = 0xea 0x20) and -1101 (zigzag 2201 = 0x99 0x11) */
    expect_invalid(BLOB(1, 0, 1, 0xea, 0x20, 1), "outside -1100..2100");
    expect_invalid(BLOB(1, 0, 1, 0x99, 0x11, 1), "outside -1100..2100");
    /* a delta too large to be an index at all, and the largest varint */
    expect_invalid(BLOB(1, 0, 1, 0x80, 0x80, 0x80, 0x01, 1), "out of range");
    expect_invalid(BLOB(1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1),
                   "out of range");
    /* indexes 5 then 5, then 5 then 4 */
    expect_invalid(BLOB(1, 0, 2, 10, 1, 0, 1), "does not increase");
    expect_invalid(BLOB(1, 0, 2, 10, 1, 1, 1), "does not increase");
    expect_invalid(BLOB(1, 0, 1, 10, 0), "bucket 1 is empty");
    expect_invalid(BLOB(1, 0x80, 0x00, 0), "not minimally encoded");
    expect_invalid(BLOB(1, 0, 1, 10, 0x81, 0x00), "not minimally encoded");
    /* 10-byte varints whose last byte carries bits past 64, and an 11-byte one */
    expect_invalid(BLOB(1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0),
                   "overflows 64 bits");
    expect_invalid(BLOB(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x00, 0),
                   "overflows 64 bits");
    /* 3202 buckets (0x82 0x19) cannot exist */
    expect_invalid(BLOB(1, 0, 0x82, 0x19), "more than the 3201 possible");
    /* zeros UINT64_MAX plus a bucket of 1 */
    expect_invalid(BLOB(1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 0, 1),
                   "past 64 bits");
    expect_invalid(BLOB(1, 0, 0, 0), "1 trailing bytes");
    /* and well-formed neighbours of those parse */
    struct sketch *s = sketch_new();
    struct err e;
    assert_int_equal(sketch_merge_blob(s, BLOB(1, 0, 2, 10, 1, 2, 1), &e), 0);
    assert_int_equal(sketch_merge_blob(s, BLOB(1, 0, 1, 0xe8, 0x20, 1), &e), 0); /* 2100 */
    assert_int_equal(sketch_merge_blob(s, BLOB(1, 0, 1, 0x97, 0x11, 1), &e), 0); /* -1100 */
    assert_int_equal(sketch_count(s), 4);
    sketch_free(&s);
}

/* Random bytes and mutated blobs: either E_INVALID or a sketch whose blob is exactly the input
 * (the encoding is canonical). */
static void garbage_blobs(void **state)
{
    (void)state;
    rng_seed(6);
    struct sketch *base = sketch_new();
    struct err e;
    for (int i = 0; i < 40; i++)
        assert_int_equal(sketch_add(base, draw(DIST_WIDE), 1 + rng_next() % 1000, &e), 0);
    struct buf valid;
    serialize(base, &valid);
    size_t parsed = 0;
    for (int iter = 0; iter < 100000; iter++) {
        unsigned char bytes[256];
        size_t len;
        if (iter % 2) {
            len = rng_next() % 48;
            for (size_t i = 0; i < len; i++)
                bytes[i] = (unsigned char)rng_next();
            if (len && iter % 4 == 1)
                bytes[0] = SKETCH_BLOB_VERSION;
        } else {
            len = valid.len < sizeof bytes ? valid.len : sizeof bytes;
            memcpy(bytes, valid.data, len);
            for (int k = 0; k < 1 + iter % 3; k++)
                bytes[rng_next() % len] ^= (unsigned char)(1u << (rng_next() % 8));
        }
        struct sketch *s = sketch_new();
        err_clear(&e);
        int rc = sketch_merge_blob(s, bytes, len, &e);
        if (rc == 0) {
            struct buf b;
            serialize(s, &b);
            assert_int_equal(b.len, len);
            assert_memory_equal(b.data, bytes, len);
            buf_release(&b);
            parsed++;
        } else {
            assert_int_equal(rc, E_INVALID);
            assert_true(e.msg[0] != '\0');
            assert_int_equal(sketch_count(s), 0);
        }
        sketch_free(&s);
    }
    print_message("garbage: %zu of 100000 parsed, all canonical\n", parsed);
    buf_release(&valid);
    sketch_free(&base);
}

/* ---------------------------------------------------------------------------------------------
 * SQL functions.
 */

static sqlite3 *open_db(void)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(sqlite_sketch_register(db), SQLITE_OK);
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

/* Runs a one-row query; returns its first column's type and fills *d (REAL/INTEGER) or blob. */
static int query(sqlite3 *db, const char *sql, double p, double *d, struct buf *blob)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_double(st, 1, p);
    if (sqlite3_step(st) != SQLITE_ROW)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int type = sqlite3_column_type(st, 0);
    if (d)
        *d = sqlite3_column_double(st, 0);
    if (blob) {
        buf_init(blob, SKETCH_BLOB_MAX_BYTES);
        const void *data = sqlite3_column_blob(st, 0);
        assert_int_equal(buf_append(blob, data, (size_t)sqlite3_column_bytes(st, 0)), 0);
    }
    sqlite3_finalize(st);
    return type;
}

/* Expects the query to fail with a message containing needle. */
static void query_fails(sqlite3 *db, const char *sql, const char *needle)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            ;
        sqlite3_finalize(st);
    }
    if (rc == SQLITE_DONE || rc == SQLITE_OK)
        fail_msg("%s: succeeded, want an error with \"%s\"", sql, needle);
    if (!strstr(sqlite3_errmsg(db), needle))
        fail_msg("%s: error \"%s\" lacks \"%s\"", sql, sqlite3_errmsg(db), needle);
}

/* t(g, x): n lognormal latencies in 37 groups, plus NULL rows that every function ignores. */
static double *fill_table(sqlite3 *db, size_t n)
{
    exec(db, "CREATE TABLE t(g INTEGER, x REAL); BEGIN");
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?)", -1, &st, NULL),
                     SQLITE_OK);
    double *v = draw_n(DIST_LOGNORMAL, n);
    for (size_t i = 0; i < n + 10; i++) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)(i % 37));
        if (i < n)
            sqlite3_bind_double(st, 2, v[i]);
        else
            sqlite3_bind_null(st, 2);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec(db, "COMMIT");
    return v;
}

static void sql_percentiles(void **state)
{
    (void)state;
    rng_seed(7);
    sqlite3 *db = open_db();
    size_t n = 20000;
    double *v = fill_table(db, n);
    struct sketch *s = sketch_of(v, n);
    qsort(v, n, sizeof *v, cmp_double);
    static const double ps[] = {0, 50, 95, 99, 100};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        double est;
        assert_int_equal(
            query(db, "SELECT sketch_percentile(sketch(x), ?) FROM t", ps[i], &est, NULL),
            SQLITE_FLOAT);
        if (!within(est, exact_percentile(v, n, ps[i])))
            fail_msg("p%g: %.17g vs exact %.17g", ps[i], est, exact_percentile(v, n, ps[i]));
        assert_true(est == sketch_percentile(s, ps[i]));
    }
    double count;
    assert_int_equal(query(db, "SELECT sketch_count(sketch(x)) FROM t", 0, &count, NULL),
                     SQLITE_INTEGER);
    assert_true(count == (double)n);
    /* the SQL blob is the C blob */
    struct buf from_sql, from_c;
    assert_int_equal(query(db, "SELECT sketch(x) FROM t", 0, NULL, &from_sql), SQLITE_BLOB);
    serialize(s, &from_c);
    assert_int_equal(from_sql.len, from_c.len);
    assert_memory_equal(from_sql.data, from_c.data, from_c.len);
    buf_release(&from_sql);
    buf_release(&from_c);
    sketch_free(&s);
    free(v);
    sqlite3_close(db);
}

/* Per-group sketches, as a rollup keeps them, merge to exactly the sketch of every row. */
static void sql_merge_of_groups(void **state)
{
    (void)state;
    rng_seed(8);
    sqlite3 *db = open_db();
    size_t n = 20000;
    double *v = fill_table(db, n);
    exec(db, "CREATE TABLE r AS SELECT g, sketch(x) AS s FROM t GROUP BY g");
    struct buf whole, merged;
    query(db, "SELECT sketch(x) FROM t", 0, NULL, &whole);
    assert_int_equal(query(db, "SELECT sketch_merge(s) FROM r", 0, NULL, &merged), SQLITE_BLOB);
    assert_int_equal(whole.len, merged.len);
    assert_memory_equal(whole.data, merged.data, whole.len);
    buf_release(&whole);
    buf_release(&merged);
    /* a window of groups against the exact percentile of its rows */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (i % 37 < 10)
            v[m++] = v[i];
    qsort(v, m, sizeof *v, cmp_double);
    double est, count;
    query(db, "SELECT sketch_percentile(sketch_merge(s), ?) FROM r WHERE g < 10", 99, &est, NULL);
    assert_true(within(est, exact_percentile(v, m, 99)));
    query(db, "SELECT sketch_count(sketch_merge(s)) FROM r WHERE g < 10", 0, &count, NULL);
    assert_true(count == (double)m);
    free(v);
    sqlite3_close(db);
}

static void sql_nulls(void **state)
{
    (void)state;
    sqlite3 *db = open_db();
    exec(db, "CREATE TABLE t(x REAL); INSERT INTO t VALUES (NULL), (NULL)");
    static const char *const null_queries[] = {
        "SELECT sketch(x) FROM t WHERE 0",
        "SELECT sketch(x) FROM t",
        "SELECT sketch_merge(x) FROM t",
        "SELECT sketch_merge(s) FROM (SELECT sketch(x) AS s FROM t)",
        "SELECT sketch_percentile(NULL, 50)",
        "SELECT sketch_percentile(sketch(5), NULL)",
        "SELECT sketch_count(NULL)",
        "SELECT sketch_percentile(x'010000', 50)", /* empty sketch */
    };
    for (size_t i = 0; i < sizeof null_queries / sizeof null_queries[0]; i++)
        if (query(db, null_queries[i], 0, NULL, NULL) != SQLITE_NULL)
            fail_msg("%s is not NULL", null_queries[i]);
    double d;
    assert_int_equal(query(db, "SELECT sketch_count(x'010000')", 0, &d, NULL), SQLITE_INTEGER);
    assert_true(d == 0);
    /* numbers in text are numbers, as elsewhere in SQLite */
    assert_int_equal(query(db, "SELECT sketch_percentile(sketch('12.5'), '50')", 0, &d, NULL),
                     SQLITE_FLOAT);
    assert_true(within(d, 12.5));
    sqlite3_close(db);
}

static void sql_errors(void **state)
{
    (void)state;
    sqlite3 *db = open_db();
    exec(db, "CREATE TABLE t(x REAL); INSERT INTO t VALUES (1), (-2), (3)");
    query_fails(db, "SELECT sketch(x) FROM t", "sketch: value -2 is not a latency");
    query_fails(db, "SELECT sketch(1e999)", "sketch: value inf is not a latency");
    query_fails(db, "SELECT sketch('fast')", "sketch: x is text, not a latency");
    query_fails(db, "SELECT sketch(x'00')", "sketch: x is a blob");
    query_fails(db, "SELECT sketch_percentile(sketch(1), 101)", "between 0 and 100");
    query_fails(db, "SELECT sketch_percentile(sketch(1), -1)", "between 0 and 100");
    query_fails(db, "SELECT sketch_percentile(sketch(1), 'p99')", "between 0 and 100");
    query_fails(db, "SELECT sketch_percentile(x'02', 50)",
                "sketch_percentile: sketch blob: version");
    query_fails(db, "SELECT sketch_percentile(1, 50)",
                "is an integer, not a blob made by sketch()");
    query_fails(db, "SELECT sketch_merge(x'0100')", "sketch_merge: sketch blob: truncated");
    query_fails(db, "SELECT sketch_merge('text')", "is text, not a blob");
    query_fails(db, "SELECT sketch_count(x'')", "sketch_count: sketch blob: empty");
    query_fails(db, "SELECT sketch_count(sketch_merge(x'0100000000'))", "2 trailing bytes");
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accuracy_on_latency_sets),
        cmocka_unit_test(accuracy_with_counts),
        cmocka_unit_test(merge_of_parts_equals_whole),
        cmocka_unit_test(merge_into_itself),
        cmocka_unit_test(empty_sketch),
        cmocka_unit_test(zeros),
        cmocka_unit_test(single_value),
        cmocka_unit_test(invalid_values),
        cmocka_unit_test(count_limits),
        cmocka_unit_test(clamping),
        cmocka_unit_test(round_trip),
        cmocka_unit_test(truncated_blobs),
        cmocka_unit_test(malformed_blobs),
        cmocka_unit_test(garbage_blobs),
        cmocka_unit_test(sql_percentiles),
        cmocka_unit_test(sql_merge_of_groups),
        cmocka_unit_test(sql_nulls),
        cmocka_unit_test(sql_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
