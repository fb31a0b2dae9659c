/*
 * store: per-minute summaries (minutes.c) — the buckets of minutes_add_samples against a naive
 * recomputation (also before 1970 and at the ends of int64, and for runs that share a minute),
 * bit-exact encode/decode round trips of whole runs, sub-ranges and special doubles, a minute
 * split across two or three blobs coming back as one bucket, the encoder's errors, and the
 * decoder's refusals: not a blob, truncated and flipped blobs, buckets out of order, merged
 * counts past 2^53, and blobs forged here field by field in the layout of minutes.c's opening
 * comment (varints, chunk_put_values columns, zstd), each of which must be E_INVALID with a
 * message and leave the caller's buckets as they were.
 *
 * Samples are finite: ingestion refuses NaN and infinities. So a run that opens with a NaN
 * (nothing compares below a NaN: the min and max of a split minute would depend on the cut) is
 * not a case here. A NaN sum is: +inf and -inf partial sums of huge finite samples merge into
 * one, and it round-trips like any other double.
 */
#include "unit.h"

#include "store/chunk.h"
#include "store/minutes.h"

#include <float.h>
#include <math.h>

#define T0 1767225600000LL /* 2026-01-01T00:00:00Z, on a minute */
#define MAX_SAMPLES 8640   /* a day every 10 s */

/* The lowest and highest bucket starts an int64 ts can have, and the lowest ts that
 * minutes_add_samples takes (minutes.h: not within a minute of INT64_MIN). */
#define LOWEST_MINUTE (-9223372036854720000LL)
#define HIGHEST_MINUTE 9223372036854720000LL
#define FIRST_TS (INT64_MIN + MINUTE_MS)

#define COUNT_LIMIT (1ull << 53)

/* A multiple of 1/4 in -250..250: sums of a minute's samples are exact in any order. */
static double rnd_quarter(void)
{
    return (double)((int)(rnd() % 2001) - 1000) / 4;
}

static uint64_t zz(int64_t v)
{
    return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
}

/* The start of ts's minute, computed apart from minutes.c (for ts >= LOWEST_MINUTE). */
static int64_t floor_minute(int64_t ts)
{
    int64_t r = ts % MINUTE_MS;
    return r < 0 ? ts - r - MINUTE_MS : ts - r;
}

struct bucket {
    int64_t ts, count, last_ts;
    double min, max, sum, last;
};

/* The buckets of n samples (ts increasing), a sample at a time with fmin/fmax; returns how
 * many. */
static size_t naive(const int64_t *ts, const double *v, size_t n, struct bucket *out)
{
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t start = floor_minute(ts[i]);
        if (nb == 0 || out[nb - 1].ts != start) {
            out[nb++] = (struct bucket){start, 1, ts[i], v[i], v[i], v[i], v[i]};
            continue;
        }
        struct bucket *b = &out[nb - 1];
        b->count++;
        b->min = fmin(b->min, v[i]);
        b->max = fmax(b->max, v[i]);
        b->sum += v[i];
        b->last = v[i];
        b->last_ts = ts[i];
    }
    return nb;
}

static struct bucket bucket_at(const struct minutes *m, size_t i)
{
    return (struct bucket){m->ts[i],  m->count[i], m->last_ts[i], m->min[i],
                           m->max[i], m->sum[i],   m->last[i]};
}

static bool same_bucket(const struct bucket *a, const struct bucket *b)
{
    return a->ts == b->ts && a->count == b->count && a->last_ts == b->last_ts &&
           bits_of(a->min) == bits_of(b->min) && bits_of(a->max) == bits_of(b->max) &&
           bits_of(a->sum) == bits_of(b->sum) && bits_of(a->last) == bits_of(b->last);
}

static void assert_bucket(const struct bucket *got, const struct bucket *want, size_t i)
{
    if (same_bucket(got, want))
        return;
    const struct bucket *both[] = {got, want};
    for (int k = 0; k < 2; k++)
        print_error("  %s: ts %lld count %lld last_ts %lld min %.17g max %.17g sum %.17g "
                    "(0x%016llx) last %.17g\n",
                    k ? "wanted" : "got   ", (long long)both[k]->ts, (long long)both[k]->count,
                    (long long)both[k]->last_ts, both[k]->min, both[k]->max, both[k]->sum,
                    (unsigned long long)bits_of(both[k]->sum), both[k]->last);
    fail_msg("bucket %zu differs", i);
}

static void assert_buckets(const struct minutes *m, const struct bucket *want, size_t n)
{
    if (m->n != n)
        fail_msg("%zu buckets, wanted %zu", m->n, n);
    for (size_t i = 0; i < n; i++) {
        struct bucket got = bucket_at(m, i);
        assert_bucket(&got, &want[i], i);
    }
}

/* m's buckets as an array (free it). */
static struct bucket *snapshot(const struct minutes *m)
{
    struct bucket *b = malloc((m->n + 1) * sizeof *b);
    assert_non_null(b);
    for (size_t i = 0; i < m->n; i++)
        b[i] = bucket_at(m, i);
    return b;
}

/* a holds b's buckets [from, from + n) and no others. */
static void assert_range(const struct minutes *a, const struct minutes *b, size_t from, size_t n)
{
    struct bucket *want = snapshot(b);
    assert_buckets(a, want + from, n);
    free(want);
}

static void assert_same(const struct minutes *a, const struct minutes *b)
{
    assert_range(a, b, 0, b->n);
}

static void add_ok(struct minutes *m, const int64_t *ts, const double *v, size_t n)
{
    struct err e;
    err_clear(&e);
    int rc = minutes_add_samples(m, ts, v, n, &e);
    if (rc != 0)
        fail_msg("adding %zu samples: rc %d: %s", n, rc, e.msg);
}

/* Encodes buckets [from, from + n) of m into a fresh out (release it). */
static void encode_ok(const struct minutes *m, size_t from, size_t n, struct buf *out)
{
    struct err e;
    err_clear(&e);
    buf_init(out, 256u << 20);
    int rc = minutes_encode(m, from, n, out, &e);
    if (rc != 0)
        fail_msg("encoding buckets %zu..%zu: rc %d: %s", from, from + n, rc, e.msg);
}

/* Decodes an exact-size copy of blob (so ASan sees a read past its end) into m; on failure the
 * rc must be E_INVALID with a message and m must hold what it held. Returns the rc. */
static int decode_checked(struct minutes *m, const void *blob, size_t len, struct err *e)
{
    size_t n_before = m->n;
    struct bucket *before = snapshot(m);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, blob, len);
    err_clear(e);
    int rc = minutes_decode_append(m, copy, len, e);
    free(copy);
    if (rc != 0) {
        if (rc != E_INVALID || e->code != E_INVALID || e->msg[0] == '\0')
            fail_msg("decoding %zu bytes: rc %d, e.code %d, message '%s'", len, rc, e->code,
                     e->msg);
        assert_buckets(m, before, n_before);
    }
    assert_true(rc != 0 || e->msg[0] == '\0');
    free(before);
    return rc;
}

static void decode_ok(struct minutes *m, const void *blob, size_t len)
{
    struct err e;
    if (decode_checked(m, blob, len, &e) != 0)
        fail_msg("decoding %zu bytes: %s", len, e.msg);
}

/* Decoding blob into m fails with E_INVALID and a message holding needle (when not NULL), and
 * m holds what it held. */
static void expect_invalid(struct minutes *m, const void *blob, size_t len, const char *needle)
{
    struct err e;
    int rc = decode_checked(m, blob, len, &e);
    if (rc == 0 || (needle && !strstr(e.msg, needle)))
        fail_msg("decoding %zu bytes: rc %d '%s', wanted %d '%s'", len, rc, e.msg, E_INVALID,
                 needle ? needle : "");
}

/* The documented invariants of what a decoder holds. */
static void assert_invariants(const struct minutes *m)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->ts[i] % MINUTE_MS != 0)
            fail_msg("bucket %zu starts at %lld", i, (long long)m->ts[i]);
        if (i > 0 && m->ts[i] <= m->ts[i - 1])
            fail_msg("bucket %zu is not after bucket %zu", i, i - 1);
        if (m->count[i] < 1 || (uint64_t)m->count[i] > COUNT_LIMIT)
            fail_msg("bucket %zu has a count of %lld", i, (long long)m->count[i]);
        if (m->last_ts[i] < m->ts[i] || m->last_ts[i] - m->ts[i] >= MINUTE_MS)
            fail_msg("bucket %zu at %lld has last_ts %lld", i, (long long)m->ts[i],
                     (long long)m->last_ts[i]);
    }
}

/* n samples every step_ms from first, values (unless v is NULL) multiples of 1/4. */
static void samples(int64_t first, int64_t step_ms, size_t n, int64_t *ts, double *v)
{
    for (size_t i = 0; i < n; i++) {
        ts[i] = first + (int64_t)i * step_ms;
        if (v)
            v[i] = rnd_quarter();
    }
}

/* The buckets of n samples as a fresh blob (release it). */
static void encode_samples(const int64_t *ts, const double *v, size_t n, struct buf *blob)
{
    struct minutes one;
    minutes_init(&one);
    add_ok(&one, ts, v, n);
    encode_ok(&one, 0, one.n, blob);
    minutes_release(&one);
}

/* The samples as a blob of their own, decoded into m (appended, or merged into its last). */
static void add_via_blob(struct minutes *m, const int64_t *ts, const double *v, size_t n)
{
    struct buf blob;
    encode_samples(ts, v, n, &blob);
    decode_ok(m, blob.data, blob.len);
    buf_release(&blob);
}

/* Adds n samples to an empty m in two runs cut before sample cut (0: one run): the buckets of
 * the naive recomputation, which keep the invariants. Returns how many; m is the caller's. */
static size_t add_checked(struct minutes *m, const int64_t *ts, const double *v, size_t n,
                          size_t cut)
{
    struct bucket *want = malloc((n ? n : 1) * sizeof *want);
    assert_non_null(want);
    minutes_init(m);
    add_ok(m, ts, v, cut);
    add_ok(m, ts + cut, v + cut, n - cut);
    size_t nb = naive(ts, v, n, want);
    assert_buckets(m, want, nb);
    assert_invariants(m);
    free(want);
    return nb;
}

/* Encodes buckets [from, from + n) of m after 4 bytes that out holds (and keeps), decodes them
 * into an empty struct: the same buckets bit for bit. Returns the blob's size. */
static size_t round_trip(const struct minutes *m, size_t from, size_t n)
{
    struct buf out;
    buf_init(&out, 256u << 20);
    assert_int_equal(buf_append(&out, "keep", 4), 0);
    struct err e;
    if (minutes_encode(m, from, n, &out, &e) != 0)
        fail_msg("encoding buckets %zu..%zu: %s", from, from + n, e.msg);
    assert_memory_equal(out.data, "keep", 4);
    struct minutes back;
    minutes_init(&back);
    decode_ok(&back, out.data + 4, out.len - 4);
    assert_range(&back, m, from, n);
    size_t len = out.len - 4;
    minutes_release(&back);
    buf_release(&out);
    return len;
}

/* m from the samples cut into runs before each of cuts[0 .. ncuts) (increasing), each run
 * encoded on its own and the blobs decoded in order; with held, the first run is added as
 * samples instead. */
static void add_split(struct minutes *m, const int64_t *ts, const double *v, size_t n,
                      const size_t *cuts, size_t ncuts, bool held)
{
    minutes_init(m);
    for (size_t part = 0, from = 0; part <= ncuts; part++) {
        size_t to = part < ncuts ? cuts[part] : n;
        if (part == 0 && held)
            add_ok(m, ts, v, to);
        else
            add_via_blob(m, ts + from, v + from, to - from);
        from = to;
    }
}

/* ---------------------------------------------------------------------------------------------
 * minutes_add_samples.
 */

static void irregular(void **state)
{
    (void)state;
    static int64_t ts[MAX_SAMPLES];
    static double v[MAX_SAMPLES];
    int64_t t = T0 - 7 * DAY_MS;
    for (size_t i = 0; i < MAX_SAMPLES; i++) {
        /* bursts 1 ms apart, jittered scrapes, gaps of minutes and of days */
        uint64_t r = rnd();
        t += r % 7 == 0    ? 1
             : r % 13 == 0 ? (int64_t)(r % 600) * 1000 + 1
             : r % 97 == 0 ? (int64_t)(r % 3) * DAY_MS + 1
                           : 10000 - 50 + (int64_t)(r % 101);
        ts[i] = t;
        v[i] = (double)(int64_t)(rnd() % 100000) / 100;
    }
    struct minutes m;
    assert_true(add_checked(&m, ts, v, MAX_SAMPLES, 1000) > 256); /* past the first reservation */
    for (size_t from = 0; from < m.n; from += MINUTES_MAX)        /* a blob holds a day at most */
        round_trip(&m, from, m.n - from < MINUTES_MAX ? m.n - from : MINUTES_MAX);
    minutes_release(&m);
}

static void minute_starts(void **state)
{
    (void)state;
    int64_t ts[26];
    double v[26];
    samples(-185000, 10000, 26, ts, v); /* -185 s .. +65 s */
    struct minutes m;
    assert_int_equal(add_checked(&m, ts, v, 26, 0), 6);
    assert_true(m.ts[0] == -240000 && m.ts[3] == -60000 && m.ts[4] == 0 && m.ts[5] == 60000);
    minutes_release(&m);
    /* each side of a minute boundary, one sample at a time: also 0001-01-01T00:00:00Z and a ms
     * before it, the lowest ts taken and the highest (more in round_trips) */
    const int64_t edges[] = {
        -1,       -59999,   -60000, -60001, 59999, 60000, -62135596800000LL, -62135596800001LL,
        FIRST_TS, INT64_MAX};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        add_checked(&m, &edges[i], v, 1, 0);
        minutes_release(&m);
    }
    /* within a minute of INT64_MIN: E_INVALID with a message, nothing added */
    const int64_t bad[] = {INT64_MIN, INT64_MIN + 1, LOWEST_MINUTE, FIRST_TS - 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t run[] = {bad[i], FIRST_TS, T0};
        struct err e;
        minutes_init(&m);
        assert_int_equal(minutes_add_samples(&m, run, v, 3, &e), E_INVALID);
        char want[64];
        snprintf(want, sizeof want, "sample ts %lld has no minute", (long long)bad[i]);
        assert_string_equal(e.msg, want);
        assert_true(e.code == E_INVALID && m.n == 0);
        minutes_release(&m);
    }
}

/* Samples every 10 s from on a minute or inside one, added in one run or two cut anywhere (a run
 * whose first samples fall in the last held minute joins that bucket), or one at a time. */
static void runs(void **state)
{
    (void)state;
    int64_t ts[40];
    double v[40];
    const int64_t firsts[] = {T0, T0 + 20000, T0 + 59999, T0 + 1};
    struct minutes m, one_by_one;
    for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++) {
        samples(firsts[f], 10000, 40, ts, v);
        for (size_t cut = 0; cut < 40; cut++) {
            size_t nb = add_checked(&m, ts, v, 40, cut);
            /* steps of 10 s skip no minute */
            assert_int_equal(nb, (floor_minute(ts[39]) - floor_minute(ts[0])) / MINUTE_MS + 1);
            minutes_release(&m);
            assert_true(m.n == 0 && m.ts == NULL);
        }
        add_checked(&m, ts, v, 40, 0);
        minutes_init(&one_by_one);
        for (size_t i = 0; i < 40; i++)
            add_ok(&one_by_one, ts + i, v + i, 1);
        add_ok(&one_by_one, ts, v, 0); /* no samples: nothing changes */
        assert_same(&one_by_one, &m);
        minutes_release(&one_by_one);
        minutes_release(&m);
    }
    /* a full minute holds 6 samples whose min, max and sum are what they are */
    memcpy(v, (double[]){3, -1.5, 7.25, 0, 2, -1}, 6 * sizeof *v);
    samples(T0, 10000, 6, ts, NULL);
    add_checked(&m, ts, v, 6, 0);
    assert_buckets(&m, (struct bucket[]){{T0, 6, T0 + 50000, -1.5, 7.25, 9.75, -1}}, 1);
    minutes_release(&m);
    minutes_init(&m); /* an empty struct and no samples */
    add_ok(&m, NULL, NULL, 0);
    assert_int_equal(m.n, 0);
}

/* ---------------------------------------------------------------------------------------------
 * Round trips.
 */

static void round_trips(void **state)
{
    (void)state;
    static int64_t ts[MAX_SAMPLES];
    static double v[MAX_SAMPLES];
    struct minutes m;
    samples(T0, 10000, MAX_SAMPLES, ts, v);
    assert_int_equal(add_checked(&m, ts, v, MAX_SAMPLES, 4321), 1440);
    size_t len = round_trip(&m, 0, m.n);
    print_message("a day of minutes: %zu bytes, %.2f bytes/minute\n", len, (double)len / 1440);
    for (size_t from = 0; from < 10; from++) /* sub-ranges */
        for (size_t n = 1; from + n <= 10; n++)
            round_trip(&m, from * 101, n * n * 13);
    minutes_release(&m);

    /* buckets either side of 1970, gaps of days; the lowest and highest minutes an int64 ts has,
     * last_ts at INT64_MAX (a gap from one to the other: see int64_span) */
    const int64_t sets[][4] = {
        {-86400001, -60001, -1, 0},
        {59999, 60000, DAY_MS * 365, DAY_MS * 366},
        {FIRST_TS, LOWEST_MINUTE + 59999, LOWEST_MINUTE + MINUTE_MS, LOWEST_MINUTE + DAY_MS},
        {HIGHEST_MINUTE - DAY_MS, HIGHEST_MINUTE - 1, HIGHEST_MINUTE, INT64_MAX},
        {0, 1, DAY_MS, INT64_MAX},
    };
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        for (size_t n = 1; n <= 4; n++) {
            add_checked(&m, sets[s], v, n, 0);
            round_trip(&m, 0, m.n);
            minutes_release(&m);
        }
    }
    /* the most buckets a blob holds, a minute apart */
    size_t most = MINUTES_MAX;
    int64_t *many = malloc(most * sizeof *many);
    double *values = malloc(most * sizeof *values);
    samples(T0, MINUTE_MS + 1, most, many, values);
    assert_int_equal(add_checked(&m, many, values, most, 0), most);
    print_message("%zu minutes: %zu bytes\n", most, round_trip(&m, 0, m.n));
    minutes_release(&m);
    free(values);
    free(many);
}

/* +-0.0, +-inf; quiet NaNs (-NaN is what inf + -inf gives on x86), a signalling one and one
 * with a payload; the smallest subnormal and the largest negative one, DBL_MIN, +-DBL_MAX; 0.1
 * and 1e20 */
static const uint64_t special_bits[] = {
    0x0000000000000000u, 0x8000000000000000u, 0x7ff0000000000000u, 0xfff0000000000000u,
    0x7ff8000000000000u, 0xfff8000000000000u, 0x7ff0000000000001u, 0x7ff8dead0000beefu,
    0x0000000000000001u, 0x800fffffffffffffu, 0x0010000000000000u, 0x7fefffffffffffffu,
    0xffefffffffffffffu, 0x3fb999999999999au, 0x4415af1d78b58c40u,
};
#define NSPECIAL (sizeof special_bits / sizeof special_bits[0])

/* Buckets whose fields hold every special double, counts up to 2^53 and last_ts at both ends of
 * its minute: set by hand, as a decoder may hand them over; and a NaN sum as samples make one. */
static void special_values(void **state)
{
    (void)state;
    int64_t ts[NSPECIAL * 4];
    double v[NSPECIAL * 4];
    samples(T0 - 3 * MINUTE_MS, MINUTE_MS, NSPECIAL * 4, ts, v);
    struct minutes m;
    minutes_init(&m);
    add_ok(&m, ts, v, NSPECIAL * 4);
    for (size_t i = 0; i < m.n; i++) {
        m.min[i] = of_bits(special_bits[i % NSPECIAL]);
        m.max[i] = of_bits(special_bits[(i * 3 + 1) % NSPECIAL]);
        m.sum[i] = of_bits(special_bits[(i * 5 + 2) % NSPECIAL]);
        m.last[i] = of_bits(special_bits[(i * 7 + 3) % NSPECIAL]);
        m.count[i] = i % 4 == 0 ? (int64_t)COUNT_LIMIT : (int64_t)(i % 4);
        m.last_ts[i] = m.ts[i] + (i % 3 == 0 ? 0 : i % 3 == 1 ? 59999 : 12345);
    }
    round_trip(&m, 0, m.n);
    /* each special value in every field at once */
    for (size_t s = 0; s < NSPECIAL; s++) {
        for (size_t i = 0; i < m.n; i++)
            m.min[i] = m.max[i] = m.sum[i] = m.last[i] = of_bits(special_bits[s]);
        round_trip(&m, 0, m.n);
    }
    minutes_release(&m);
    /* finite samples whose partial sums overflow to +inf and -inf merge into a NaN sum */
    int64_t one_minute[] = {T0, T0 + 10000, T0 + 20000, T0 + 30000, T0 + 60000};
    double huge[] = {DBL_MAX, DBL_MAX, -DBL_MAX, -DBL_MAX, 1};
    add_split(&m, one_minute, huge, 5, (size_t[]){2}, 1, false);
    assert_true(m.n == 2 && m.count[0] == 4 && isnan(m.sum[0]));
    round_trip(&m, 0, m.n);
    minutes_release(&m);
}

/* add_split gives the buckets of all the samples added at once. */
static void assert_split(const int64_t *ts, const double *v, size_t n, const size_t *cuts,
                         size_t ncuts, bool held)
{
    struct minutes all, merged;
    minutes_init(&all);
    add_ok(&all, ts, v, n);
    add_split(&merged, ts, v, n, cuts, ncuts, held);
    assert_same(&merged, &all);
    minutes_release(&merged);
    minutes_release(&all);
}

/* Runs cut anywhere (into two, or three with the middle one inside a minute), each encoded on
 * its own, decode into the buckets of all the samples at once, also with special values on both
 * sides of a cut (sums whose order cannot matter: see split_sum_rounding). */
static void split_minutes(void **state)
{
    (void)state;
    int64_t ts[36];
    double v[36];
    samples(T0 + 50000, 10000, 36, ts, v);
    for (size_t k = 1; k < 36; k++)
        for (int held = 0; held < 2; held++)
            assert_split(ts, v, 36, &k, 1, held);
    const double sets[][7] = {
        {0.0, -0.0, 0.0, -0.0, 0.0, -0.0, 1},
        {-0.0, 0.0, -0.0, 0.0, -0.0, 0.0, -0.0},
        {1, 0x1p52, -0x1p52, 2, 3, 4, 5},
        {-0x1p51, 1, 0x1p51, 2, 0x1p51, 4, 5},
        {1e300, -1e-300, DBL_MIN, 0x1p-1074, -0x1p-1074, 5, DBL_MAX},
    };
    const size_t cuts[][2] = {{2, 4}, {1, 2}, {2, 3}, {1, 6}, {3, 5}};
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++)
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++)
            assert_split(ts, sets[s], 7, cuts[c], 2, false);
}

/* Floating point addition is not associative: a minute split between two runs may differ in
 * its sum's last bits from the sum of all its samples in order. Not a bug of minutes.c, but
 * what a check against a one-pass sum must allow for; the other fields are exact. */
static void split_sum_rounding(void **state)
{
    (void)state;
    int64_t ts[] = {T0, T0 + 10000, T0 + 20000};
    double v[] = {0.1, 0.2, 0.3};
    struct minutes all, merged;
    minutes_init(&all);
    add_ok(&all, ts, v, 3);
    add_split(&merged, ts, v, 3, (size_t[]){1}, 1, false);
    assert_int_equal(merged.n, 1);
    /* (0.1 + 0.2) + 0.3 is 0.6000000000000001; 0.1 + (0.2 + 0.3) is 0.6 */
    assert_true(all.sum[0] != merged.sum[0]);
    assert_true(fabs(all.sum[0] - merged.sum[0]) <= 2 * DBL_EPSILON * fabs(all.sum[0]));
    merged.sum[0] = all.sum[0];
    assert_same(&merged, &all);
    minutes_release(&merged);
    minutes_release(&all);
}

/* ---------------------------------------------------------------------------------------------
 * Encoder errors: E_INVALID or E_LIMIT with a message, out as it was (and NUL-terminated).
 */

static void expect_encode_error(const struct minutes *m, size_t n, size_t max, int want_rc,
                                const char *needle)
{
    struct buf out;
    buf_init(&out, max);
    assert_int_equal(buf_append(&out, "keep", 4), 0);
    struct err e;
    err_clear(&e);
    int rc = minutes_encode(m, 0, n, &out, &e);
    if (rc != want_rc || e.code != want_rc || !strstr(e.msg, needle))
        fail_msg("%zu buckets, limit %zu: rc %d '%s', wanted %d '%s'", n, max, rc, e.msg, want_rc,
                 needle);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "keep", 5);
    buf_release(&out);
}

static void encode_errors(void **state)
{
    (void)state;
    int64_t ts[] = {T0, T0 + 60000};
    double v[] = {1, 2};
    struct minutes m;
    minutes_init(&m);
    add_ok(&m, ts, v, 2);
    expect_encode_error(&m, 0, 1 << 20, E_INVALID, "0 minute buckets cannot be encoded: 1..1440");
    /* refused before any bucket is read */
    expect_encode_error(&m, MINUTES_MAX + 1, 1 << 20, E_INVALID, "1441 minute buckets");
    /* every limit below what the blob needs after what out holds */
    for (size_t max = 4, len = round_trip(&m, 0, 2); max < len + 4; max++)
        expect_encode_error(&m, 2, max, E_LIMIT, "no room for");
    minutes_release(&m);
}

/* ---------------------------------------------------------------------------------------------
 * Decoder errors.
 */

/* 12 buckets over 13 minutes with a gap, before 1970 and after, and some special values; and
 * their blob (release both). */
static void sample_blob(struct minutes *m, struct buf *blob)
{
    int64_t ts[80];
    double v[80];
    samples(-185000, 10000, 80, ts, v);
    for (size_t i = 40; i < 80; i++)
        ts[i] += 70000; /* an empty minute */
    v[3] = DBL_MAX;
    v[4] = -0.0;
    v[30] = -DBL_MAX;
    v[50] = 1.0 / 3;
    minutes_init(m);
    add_ok(m, ts, v, 80);
    encode_ok(m, 0, m->n, blob);
}

/* m holding one bucket: the minute before blob_first (when merge is false), or blob_first's. */
static void held_before(struct minutes *m, int64_t blob_first, bool merge)
{
    int64_t ts = merge ? blob_first + 7 : blob_first - MINUTE_MS + 59999;
    double v = 99.5;
    minutes_init(m);
    add_ok(m, &ts, &v, 1);
}

/* Decoding blob fails as expect_invalid says into an empty struct, one holding the minute before
 * first and one holding first's minute. */
static void expect_invalid_everywhere(const void *blob, size_t len, int64_t first,
                                      const char *needle)
{
    struct minutes m;
    minutes_init(&m);
    expect_invalid(&m, blob, len, needle);
    for (int merge = 0; merge < 2; merge++) {
        held_before(&m, first, merge);
        expect_invalid(&m, blob, len, needle);
        minutes_release(&m);
    }
}

static void not_blobs(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        const char *needle;
    } bad[] = {
        {"", 0, "not a minute summary blob"},
        {"\x8f", 1, "not a minute summary blob"},
        {"\x8fM", 2, "not a minute summary blob"},
        {"hello, world", 12, "not a minute summary blob"},
        {"M\x8f\x01", 3, "not a minute summary blob"},
        {"\x8fm\x01", 3, "not a minute summary blob"},
        {"\x8f"
         "C\x01\x01\x00\x00\x01",
         7, "not a minute summary blob"}, /* a chunk's */
        {"\x8fM\x02", 3, "minute summary of unknown version 2"},
        {"\x8fM\x00", 3, "minute summary of unknown version 0"},
        {"\x8fM\xff\x01\x00", 5, "minute summary of unknown version 255"},
        {"\x8fM\x01", 3, "its header is truncated or names no buckets"},
        {"\x8fM\x01\x01", 4, "its header is truncated or names no buckets"},
        {"\x8fM\x01\x01\x00", 5, "its payload is not one frame"},
    };
    struct minutes m;
    minutes_init(&m);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_invalid(&m, bad[i].bytes, bad[i].len, bad[i].needle);
    /* nor is a minute summary a chunk; e may be NULL */
    struct buf blob;
    encode_samples((int64_t[]){T0}, (double[]){1}, 1, &blob);
    size_t n;
    assert_int_equal(chunk_decode(blob.data, blob.len, NULL, NULL, 0, &n, NULL), E_INVALID);
    blob.data[2] = 2;
    assert_int_equal(minutes_decode_append(&m, blob.data, blob.len, NULL), E_INVALID);
    assert_int_equal(m.n, 0);
    buf_release(&blob);
}

/* Decodes bad into a struct holding one bucket (held_before, merge or not): E_INVALID with the
 * struct as it was, or 0 with buckets that keep the invariants and, unless want is NULL, are
 * want's. Returns the rc. */
static int decode_damaged(const char *bad, size_t len, int64_t first, bool merge,
                          const struct minutes *want)
{
    struct minutes m;
    held_before(&m, first, merge);
    struct err e;
    int rc = decode_checked(&m, bad, len, &e);
    if (rc == 0) {
        assert_invariants(&m);
        if (want)
            assert_same(&m, want);
    }
    minutes_release(&m);
    return rc;
}

/* A blob cut at every length, with every bit and every byte flipped, and with bytes of garbage:
 * never a crash; refused, or (a flip of a bit zstd ignores) decoded the same. */
static void damaged(void **state)
{
    (void)state;
    struct minutes full, want[2];
    struct buf blob;
    sample_blob(&full, &blob);
    for (size_t len = 0; len < blob.len; len++)
        expect_invalid_everywhere(blob.data, len, full.ts[0], NULL);
    for (int merge = 0; merge < 2; merge++) {
        held_before(&want[merge], full.ts[0], merge);
        decode_ok(&want[merge], blob.data, blob.len);
    }
    char *bad = malloc(blob.len);
    size_t decoded = 0;
    for (size_t i = 0; i < blob.len; i++) {
        for (int bit = 0; bit <= 8; bit++) {
            memcpy(bad, blob.data, blob.len);
            bad[i] ^= (char)(bit == 8 ? 0xff : 1 << bit);
            size_t merge = (i + (size_t)bit) % 2;
            decoded += decode_damaged(bad, blob.len, full.ts[0], merge, &want[merge]) == 0;
        }
    }
    print_message("%zu flips of a %zu-byte blob: %zu decoded the same, the rest refused\n",
                  blob.len * 9, blob.len, decoded);
    for (size_t i = 0; i < 3000; i++) {
        memcpy(bad, blob.data, blob.len);
        for (int k = 0; k < 1 + (int)(rnd() % 3); k++)
            bad[rnd() % blob.len] = (char)rnd();
        decode_damaged(bad, blob.len, full.ts[0], i % 2, NULL);
    }
    free(bad);
    buf_release(&blob);
    minutes_release(&want[1]);
    minutes_release(&want[0]);
    minutes_release(&full);
}

static void out_of_order(void **state)
{
    (void)state;
    int64_t ts[40];
    double v[40];
    samples(T0, 10000, 40, ts, v);
    const int64_t last = T0 + 6 * MINUTE_MS;
    int64_t wide_ts[] = {last - MINUTE_MS, last + 5 * MINUTE_MS};
    struct buf early, late, wide;
    encode_samples(ts, v, 20, &early);          /* minutes 0..3 */
    encode_samples(ts + 20, v + 20, 20, &late); /* minutes 3..6 (shares minute 3) */
    encode_samples(wide_ts, v, 2, &wide);       /* from the minute before 6 to after it */
    struct minutes m;
    minutes_init(&m);
    decode_ok(&m, late.data, late.len);
    char msg[128];
    snprintf(msg, sizeof msg, "minute buckets out of order: %lld after %lld", (long long)T0,
             (long long)last);
    expect_invalid(&m, early.data, early.len, msg);
    expect_invalid(&m, late.data, late.len, "out of order"); /* the same blob twice */
    expect_invalid(&m, wide.data, wide.len, "out of order");
    /* a one-bucket blob twice: merged, counts and sums add */
    minutes_release(&m);
    add_via_blob(&m, ts + 6, v + 6, 6);
    add_via_blob(&m, ts + 6, v + 6, 6);
    double sum = v[6] + v[7] + v[8] + v[9] + v[10] + v[11];
    assert_true(m.n == 1 && m.count[0] == 12 && m.sum[0] == 2 * sum && m.last_ts[0] == ts[11]);
    buf_release(&wide);
    buf_release(&late);
    buf_release(&early);
    minutes_release(&m);
}

/* ---------------------------------------------------------------------------------------------
 * Forged blobs: header and payload written here field by field from the format in minutes.c's
 * opening comment, so each check of the decoder is reached on its own.
 */

#define FORGED_MAX 4
#define RAW_CAP 2048

struct forged {
    uint64_t n;    /* the header's bucket count */
    int64_t first; /* the header's first bucket start */
    size_t rows;   /* buckets written in the payload */
    uint64_t gap[FORGED_MAX], count1[FORGED_MAX], offset[FORGED_MAX]; /* gap[i]: i to i + 1 */
    double col[4][FORGED_MAX];                                        /* min, max, sum, last */
    unsigned char raw[RAW_CAP];   /* the payload, from the fields above: forge_payload() */
    size_t raw_len, column_at[4]; /* where each value column starts in raw */
    bool no_content_size;
    const char *tail; /* bytes after the frame (may be NULL) */
};

/* 3 good buckets: minutes 0, 1 and 3 after T0. */
static const struct bucket forged_buckets[] = {
    {T0, 6, T0 + 50000, -1.5, 7.25, 9.75, -1},
    {T0 + 60000, 3, T0 + 60000 + 20000, 0, 2, 3, 1},
    {T0 + 180000, 1, T0 + 180000, 0.125, 0.125, 0.125, 0.125},
};

static void forge_payload(struct forged *f)
{
    size_t len = 0;
    for (size_t i = 0; i + 1 < f->rows; i++)
        len += ut_put_uvarint(f->raw + len, f->gap[i]);
    for (size_t i = 0; i < f->rows; i++)
        len += ut_put_uvarint(f->raw + len, f->count1[i]);
    for (size_t i = 0; i < f->rows; i++)
        len += ut_put_uvarint(f->raw + len, f->offset[i]);
    for (int c = 0; c < 4; c++) {
        f->column_at[c] = len;
        assert_true(len + chunk_values_bound(f->rows) <= RAW_CAP);
        len += chunk_put_values(f->raw + len, f->col[c], f->rows);
    }
    f->raw_len = len;
}

/* f as the first n of forged_buckets, its payload written. */
static void forge_good(struct forged *f, size_t n)
{
    const struct bucket *b = forged_buckets;
    memset(f, 0, sizeof *f);
    f->n = f->rows = n;
    f->first = b[0].ts;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n)
            f->gap[i] = (uint64_t)(b[i + 1].ts - b[i].ts) / MINUTE_MS;
        f->count1[i] = (uint64_t)b[i].count - 1;
        f->offset[i] = (uint64_t)(b[i].last_ts - b[i].ts);
        const double fields[] = {b[i].min, b[i].max, b[i].sum, b[i].last};
        for (int c = 0; c < 4; c++)
            f->col[c][i] = fields[c];
    }
    forge_payload(f);
}

/* The blob of f's header and its payload as it stands; returns its length. */
static size_t forge_blob(const struct forged *f, unsigned char *blob, size_t cap)
{
    size_t len = 0;
    blob[len++] = 0x8f;
    blob[len++] = 'M';
    blob[len++] = 1;
    len += ut_put_uvarint(blob + len, f->n);
    len += ut_put_uvarint(blob + len, zz(f->first));
    return len +
           ut_zstd_frame(blob + len, cap - len, f->raw, f->raw_len, f->no_content_size, f->tail);
}

/* f's blob with its payload as it stands (not rewritten from the fields) is refused. */
static void expect_raw(const struct forged *f, const char *needle)
{
    unsigned char blob[RAW_CAP + 256];
    size_t len = forge_blob(f, blob, sizeof blob);
    expect_invalid_everywhere(blob, len, T0, needle);
}

/* f's blob, its payload written from the fields, is refused. */
static void expect_forged(struct forged *f, const char *needle)
{
    forge_payload(f);
    expect_raw(f, needle);
}

/* Decodes f's blob, its payload written from the fields, into m: 0, or (unless ok_wanted)
 * E_INVALID as decode_checked checks it. */
static int decode_forged(struct forged *f, struct minutes *m, bool ok_wanted)
{
    unsigned char blob[RAW_CAP + 256];
    forge_payload(f);
    size_t len = forge_blob(f, blob, sizeof blob);
    struct err e;
    int rc = decode_checked(m, blob, len, &e);
    if (rc != 0 && ok_wanted)
        fail_msg("decoding a forged blob: %s", e.msg);
    assert_invariants(m);
    return rc;
}

/* f's blob, its payload as it stands, decodes into an empty struct as want[0 .. n). */
static void expect_decoded(const struct forged *f, const struct bucket *want, size_t n)
{
    unsigned char blob[RAW_CAP + 256];
    size_t len = forge_blob(f, blob, sizeof blob);
    struct minutes m;
    minutes_init(&m);
    decode_ok(&m, blob, len);
    assert_buckets(&m, want, n);
    minutes_release(&m);
}

static void forged_good(void **state)
{
    (void)state;
    struct forged f;
    forge_good(&f, 3);
    expect_decoded(&f, forged_buckets, 3);
    /* the bounds: a count of 2^53, last_ts at the end of its minute */
    struct bucket want[3];
    memcpy(want, forged_buckets, sizeof want);
    f.count1[0] = COUNT_LIMIT - 1;
    want[0].count = (int64_t)COUNT_LIMIT;
    f.offset[1] = 59999;
    want[1].last_ts = want[1].ts + 59999;
    forge_payload(&f);
    expect_decoded(&f, want, 3);
    /* columns the XOR way, with special doubles */
    for (size_t i = 0; i < 3; i++) {
        double *fields[] = {&want[i].min, &want[i].max, &want[i].sum, &want[i].last};
        for (size_t c = 0; c < 4; c++)
            f.col[c][i] = *fields[c] = of_bits(special_bits[c * 3 + i]);
    }
    forge_payload(&f);
    expect_decoded(&f, want, 3);
    /* one bucket: before 1970, in the lowest minute, in the highest with last_ts at INT64_MAX */
    const int64_t firsts[] = {-3 * MINUTE_MS, LOWEST_MINUTE, HIGHEST_MINUTE};
    for (size_t i = 0; i < 3; i++) {
        forge_good(&f, 1);
        f.first = firsts[i];
        f.offset[0] = (uint64_t)(INT64_MAX - HIGHEST_MINUTE);
        forge_payload(&f);
        struct bucket one = forged_buckets[0];
        one.ts = firsts[i];
        one.last_ts = firsts[i] + (INT64_MAX - HIGHEST_MINUTE);
        expect_decoded(&f, &one, 1);
    }
    /* a gap from T0 to the highest minute */
    forge_good(&f, 2);
    f.gap[0] = (uint64_t)(HIGHEST_MINUTE - T0) / MINUTE_MS;
    forge_payload(&f);
    memcpy(want, forged_buckets, sizeof want);
    want[1].ts = HIGHEST_MINUTE;
    want[1].last_ts = HIGHEST_MINUTE + 20000;
    expect_decoded(&f, want, 2);
    /* the smallest payload: 1 bucket, 4 XOR columns of one repeated +0.0 each */
    forge_good(&f, 1);
    memcpy(f.raw, "\0\0\0\x80\0\x80\0\x80\0\x80", 10);
    f.raw_len = 10;
    expect_decoded(&f, &(struct bucket){T0, 1, T0, 0, 0, 0, 0}, 1);
}

static void forged_header(void **state)
{
    (void)state;
    struct forged f;
    const uint64_t counts[] = {0, MINUTES_MAX + 1ull, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        forge_good(&f, 3);
        f.n = counts[i];
        expect_raw(&f, "its header is truncated or names no buckets");
    }
    /* more buckets than the payload can hold, or fewer than it has */
    forge_good(&f, 3);
    f.n = MINUTES_MAX;
    expect_raw(&f, "its payload is not one frame of a size its buckets can take");
    for (f.n = 1; f.n <= 5; f.n++)
        if (f.n != 3)
            expect_raw(&f, NULL);
    /* a first start off its minute */
    const int64_t starts[] = {T0 + 1, T0 - 1,    T0 + 30000,        -1,        1,
                              -59999, INT64_MIN, LOWEST_MINUTE - 1, INT64_MAX, HIGHEST_MINUTE + 1};
    for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++) {
        f.n = 3;
        f.first = starts[i];
        expect_raw(&f, "its first bucket does not start on a minute");
    }
}

/* A gap, count or last_ts offset out of its bounds, in buckets as forge_good writes them. */
static void forged_fields(void **state)
{
    (void)state;
    const char *const gap = "a bucket does not start after the one before";
    const char *const count = "a bucket's count is missing or out of range";
    const char *const offset = "a bucket's last sample lies outside its minute";
    const uint64_t to_highest = (uint64_t)(HIGHEST_MINUTE - T0) / MINUTE_MS;
    const uint64_t past_max = ((uint64_t)INT64_MAX - (uint64_t)LOWEST_MINUTE) / MINUTE_MS + 1;
    const uint64_t max_offset = (uint64_t)(INT64_MAX - HIGHEST_MINUTE);
    const struct {
        size_t rows;
        int64_t first;
        int field; /* 0: gap, 1: count - 1, 2: last_ts - start */
        size_t at;
        uint64_t value;
        const char *needle;
    } bad[] = {
        {3, T0, 0, 0, 0, gap},
        {3, T0, 0, 1, 0, gap},
        {3, T0, 0, 0, UINT64_MAX, gap},
        {3, T0, 0, 1, UINT64_MAX, gap},
        {2, T0, 0, 0, to_highest + 1, gap}, /* a minute past the highest */
        {3, T0, 0, 0, to_highest, gap},     /* the highest, and one after it */
        {2, LOWEST_MINUTE, 0, 0, past_max, gap},
        {3, T0, 1, 0, COUNT_LIMIT, count},
        {3, T0, 1, 1, COUNT_LIMIT + 1, count},
        {3, T0, 1, 2, UINT64_MAX / 2, count},
        {3, T0, 1, 0, UINT64_MAX, count},
        {3, T0, 2, 0, 60000, offset},
        {3, T0, 2, 1, 60001, offset},
        {3, T0, 2, 2, 1ull << 32, offset},
        {3, T0, 2, 0, UINT64_MAX, offset},
        {1, HIGHEST_MINUTE, 2, 0, max_offset + 1, offset}, /* last_ts past INT64_MAX */
        {1, HIGHEST_MINUTE, 2, 0, 59999, offset},
    };
    struct forged f;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        forge_good(&f, bad[i].rows);
        f.first = bad[i].first;
        uint64_t *fields[] = {f.gap, f.count1, f.offset};
        fields[bad[i].field][bad[i].at] = bad[i].value;
        expect_forged(&f, bad[i].needle);
    }
    /* a gap whose varint runs past 64 bits */
    forge_good(&f, 2);
    memset(f.raw, 0xff, 10);
    f.raw[10] = 0x01;
    memcpy(f.raw + 11, "\0\0\0\0\0\0", 6);
    f.raw_len = 17;
    expect_raw(&f, gap);
}

static void forged_columns(void **state)
{
    (void)state;
    struct forged f;
    forge_good(&f, 3);
    /* an unknown kind in each column */
    const unsigned char kinds[] = {2, 0x80, 0xff};
    for (int c = 0; c < 4; c++) {
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            forge_payload(&f);
            f.raw[f.column_at[c]] = kinds[k];
            char needle[64];
            snprintf(needle, sizeof needle, "a value column of unknown kind %u",
                     (unsigned)kinds[k]);
            expect_raw(&f, needle);
        }
    }
    /* the payload cut inside or before a column: the columns are what is missing */
    forge_payload(&f);
    size_t whole = f.raw_len;
    f.raw_len = f.column_at[3];
    expect_raw(&f, "a value column is missing");
    f.raw_len = whole - 1;
    expect_raw(&f, "ends early");
    for (f.raw_len = 0; f.raw_len < whole; f.raw_len++)
        expect_raw(&f, NULL);
    /* a bad decimal scale; an XOR column of a malformed word */
    forge_payload(&f);
    f.raw[f.column_at[0] + 1] = 0x20;
    expect_raw(&f, "no decimal scale");
    f.col[3][1] = 1.0 / 3; /* XOR */
    forge_payload(&f);
    f.raw[f.column_at[3] + 1] = 0x90; /* 9 leading zero bytes */
    expect_raw(&f, "value 0 of 3 is malformed");
    /* stray bytes after the last column */
    forge_payload(&f);
    f.raw[f.raw_len++] = 0;
    expect_raw(&f, "stray bytes end its payload");
}

static void forged_frames(void **state)
{
    (void)state;
    const char *const not_one = "its payload is not one frame of a size its buckets can take";
    struct forged f;
    forge_good(&f, 3);
    f.no_content_size = true;
    expect_raw(&f, not_one);
    f.no_content_size = false;
    f.tail = "x";
    expect_raw(&f, not_one);
    f.tail = "\x8fM\x01";
    expect_raw(&f, not_one);
    f.tail = NULL;
    /* two frames */
    unsigned char blob[2 * RAW_CAP];
    size_t len = forge_blob(&f, blob, sizeof blob);
    len += ut_zstd_frame(blob + len, sizeof blob - len, f.raw, f.raw_len, false, NULL);
    expect_invalid_everywhere(blob, len, T0, not_one);
    /* no frame at all, or its magic number alone */
    unsigned char varint[10];
    size_t header_len = 3 + ut_put_uvarint(varint, f.n) + ut_put_uvarint(varint, zz(f.first));
    forge_blob(&f, blob, sizeof blob);
    expect_invalid_everywhere(blob, header_len, T0, not_one);
    expect_invalid_everywhere(blob, header_len + 4, T0, not_one);
    /* content sizes out of bounds: one byte short of the smallest payload; far beyond the
     * largest */
    forge_good(&f, 1);
    memcpy(f.raw, "\0\0\0\x80\0\x80\0\x80\0", 9);
    f.raw_len = 9;
    expect_raw(&f, not_one);
    forge_good(&f, 3);
    memset(f.raw + f.raw_len, 0, 1000);
    f.raw_len += 1000;
    expect_raw(&f, not_one);
}

/* A merged count stays below 2^53, so that counts stay exact as doubles. */
static void merged_counts(void **state)
{
    (void)state;
    struct forged f;
    forge_good(&f, 1);
    struct minutes m;
    minutes_init(&m);
    f.count1[0] = COUNT_LIMIT - 1;
    decode_forged(&f, &m, true);
    assert_int_equal(decode_forged(&f, &m, false), E_INVALID); /* decode_checked: m unchanged */
    assert_int_equal(m.count[0], (int64_t)COUNT_LIMIT);
    minutes_release(&m);
    /* 2^53 - 2 and 1 merge, and what they make encodes and decodes */
    minutes_init(&m);
    f.count1[0] = COUNT_LIMIT - 3;
    decode_forged(&f, &m, true);
    f.count1[0] = 0;
    decode_forged(&f, &m, true);
    assert_int_equal(m.count[0], (int64_t)COUNT_LIMIT - 1);
    round_trip(&m, 0, m.n);
    minutes_release(&m);
}

/* Counts stay at most 2^53 everywhere: two halves that merge into exactly 2^53 decode (as a
 * single 2^53 does), one more sample for that minute is refused by minutes_add_samples, and
 * what is held encodes into a blob that decodes. */
static void count_limit(void **state)
{
    (void)state;
    struct forged f;
    forge_good(&f, 1);
    struct minutes merged;
    minutes_init(&merged);
    f.count1[0] = COUNT_LIMIT - 2;
    decode_forged(&f, &merged, true);
    f.count1[0] = 0;
    decode_forged(&f, &merged, true);
    assert_int_equal(merged.count[0], (int64_t)COUNT_LIMIT);
    int64_t ts = merged.ts[0] + 59999;
    double v = 1;
    struct err e;
    assert_int_equal(minutes_add_samples(&merged, &ts, &v, 1, &e), E_INVALID);
    assert_non_null(strstr(e.msg, "2^53 samples already"));
    assert_int_equal(merged.count[0], (int64_t)COUNT_LIMIT);
    round_trip(&merged, 0, merged.n);
    minutes_release(&merged);
}

/* A gap of more than INT64_MAX ms between two buckets (from the lowest minute to the highest)
 * decodes and encodes without signed overflow (UBSan would abort). */
static void int64_span(void **state)
{
    (void)state;
    struct forged f;
    forge_good(&f, 2);
    f.first = LOWEST_MINUTE;
    f.gap[0] = ((uint64_t)HIGHEST_MINUTE - (uint64_t)LOWEST_MINUTE) / MINUTE_MS;
    struct minutes m;
    minutes_init(&m);
    decode_forged(&f, &m, true);
    assert_int_equal(m.ts[1], HIGHEST_MINUTE);
    minutes_release(&m);
    int64_t ts[] = {FIRST_TS, INT64_MAX};
    add_checked(&m, ts, (double[]){1, 2}, 2, 0);
    round_trip(&m, 0, m.n);
    minutes_release(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runs),
        cmocka_unit_test(irregular),
        cmocka_unit_test(minute_starts),
        cmocka_unit_test(round_trips),
        cmocka_unit_test(special_values),
        cmocka_unit_test(split_minutes),
        cmocka_unit_test(split_sum_rounding),
        cmocka_unit_test(encode_errors),
        cmocka_unit_test(not_blobs),
        cmocka_unit_test(damaged),
        cmocka_unit_test(out_of_order),
        cmocka_unit_test(forged_good),
        cmocka_unit_test(forged_header),
        cmocka_unit_test(forged_fields),
        cmocka_unit_test(forged_columns),
        cmocka_unit_test(forged_frames),
        cmocka_unit_test(merged_counts),
        cmocka_unit_test(count_limit),
        cmocka_unit_test(int64_span),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
