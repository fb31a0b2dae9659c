/*
 * The latency sketch (sketch.h): log buckets of relative width 2 * alpha, stored densely from the
 * lowest to the highest index in use and grown on demand within the fixed index range, so any
 * sketch, including one parsed from untrusted bytes, holds at most INDEX_RANGE counters. Counts
 * are integers, so merges are exact and order-independent.
 */
#include "core/sketch.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_RANGE (SKETCH_MAX_INDEX - SKETCH_MIN_INDEX + 1)
#define GROW_SLACK 64 /* extra buckets on each growth, so a spread of values reallocates rarely */
#define VARINT_MAX 10 /* bytes of a 64-bit LEB128 varint */

struct sketch {
    uint64_t count;      /* every observation, zeros included */
    uint64_t zero_count; /* observations below SKETCH_MIN_VALUE */
    uint64_t *bins;      /* bins[k] counts bucket index lo + k */
    int lo;              /* index of bins[0]; meaningless while nbins == 0 */
    int nbins;           /* allocated buckets, lo + nbins - 1 <= SKETCH_MAX_INDEX */
};

static double gamma_value(void)
{
    return (1 + SKETCH_RELATIVE_ACCURACY) / (1 - SKETCH_RELATIVE_ACCURACY);
}

/* The bucket of x >= SKETCH_MIN_VALUE, clamped to the index range. */
static int index_of(double x)
{
    double i = ceil(log(x) / log(gamma_value()));
    if (i < SKETCH_MIN_INDEX)
        return SKETCH_MIN_INDEX;
    if (i > SKETCH_MAX_INDEX)
        return SKETCH_MAX_INDEX;
    return (int)i;
}

static double representative(int index)
{
    double g = gamma_value();
    return 2 * pow(g, index) / (g + 1);
}

struct sketch *sketch_new(void)
{
    return calloc(1, sizeof(struct sketch));
}

void sketch_free(struct sketch **s)
{
    if (!*s)
        return;
    free((*s)->bins);
    free(*s);
    *s = NULL;
}

/* Makes bins cover indexes first..last (within the range); E_NOMEM leaves s unchanged. */
static int cover(struct sketch *s, int first, int last)
{
    if (s->nbins && first >= s->lo && last < s->lo + s->nbins)
        return 0;
    int lo = first, hi = last;
    if (s->nbins) {
        lo = s->lo <= first ? s->lo : first - GROW_SLACK;
        hi = s->lo + s->nbins - 1 >= last ? s->lo + s->nbins - 1 : last + GROW_SLACK;
    }
    lo = lo < SKETCH_MIN_INDEX ? SKETCH_MIN_INDEX : lo;
    hi = hi > SKETCH_MAX_INDEX ? SKETCH_MAX_INDEX : hi;
    uint64_t *bins = calloc((size_t)(hi - lo + 1), sizeof *bins);
    if (!bins)
        return E_NOMEM;
    if (s->nbins)
        memcpy(bins + (s->lo - lo), s->bins, (size_t)s->nbins * sizeof *bins);
    free(s->bins);
    s->bins = bins;
    s->lo = lo;
    s->nbins = hi - lo + 1;
    return 0;
}

int sketch_add(struct sketch *s, double x, uint64_t count, struct err *e)
{
    if (!isfinite(x) || x < 0)
        return err_set(e, E_INVALID, "sketch: value %g is not a latency (must be finite and >= 0)",
                       x);
    if (count == 0)
        return 0;
    if (count > UINT64_MAX - s->count)
        return err_set(e, E_LIMIT, "sketch: the count would pass %llu observations",
                       (unsigned long long)UINT64_MAX);
    if (x < SKETCH_MIN_VALUE) {
        s->zero_count += count;
    } else {
        int i = index_of(x);
        if (cover(s, i, i) != 0)
            return err_set(e, E_NOMEM, "sketch: out of memory");
        s->bins[i - s->lo] += count;
    }
    s->count += count;
    return 0;
}

/* The first and last non-empty bucket indexes; false when there is none. */
static bool used_range(const struct sketch *s, int *first, int *last)
{
    int a = 0, b = s->nbins - 1;
    while (a <= b && s->bins[a] == 0)
        a++;
    while (b >= a && s->bins[b] == 0)
        b--;
    if (a > b)
        return false;
    *first = s->lo + a;
    *last = s->lo + b;
    return true;
}

int sketch_merge(struct sketch *into, const struct sketch *from, struct err *e)
{
    if (from->count > UINT64_MAX - into->count)
        return err_set(e, E_LIMIT, "sketch: the merged count would pass %llu observations",
                       (unsigned long long)UINT64_MAX);
    int first, last;
    if (used_range(from, &first, &last)) {
        /* into == from needs no growth: from's used range is inside its own bins */
        if (cover(into, first, last) != 0)
            return err_set(e, E_NOMEM, "sketch: out of memory");
        for (int i = first; i <= last; i++)
            into->bins[i - into->lo] += from->bins[i - from->lo];
    }
    into->zero_count += from->zero_count;
    into->count += from->count;
    return 0;
}

uint64_t sketch_count(const struct sketch *s)
{
    return s->count;
}

/* The representative value of the observation at 0-based rank (< count) in ascending order. */
static double value_at_rank(const struct sketch *s, uint64_t rank)
{
    if (rank < s->zero_count)
        return 0;
    uint64_t seen = s->zero_count;
    for (int k = 0; k < s->nbins; k++) {
        seen += s->bins[k];
        if (rank < seen)
            return representative(s->lo + k);
    }
    return NAN; /* unreachable while count is the sum of the buckets */
}

double sketch_percentile(const struct sketch *s, double p)
{
    if (s->count == 0 || !(p >= 0 && p <= 100))
        return NAN;
    uint64_t last = s->count - 1;
    double rank = p / 100.0 * (double)last;
    /* (double)last may round up to 2^64: compare before converting, which would then be UB */
    uint64_t lo = rank >= (double)last ? last : (uint64_t)rank;
    double frac = rank - (double)lo;
    frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
    double v = value_at_rank(s, lo);
    if (lo == last || frac == 0)
        return v;
    double next = value_at_rank(s, lo + 1);
    return v + (next - v) * frac;
}

/* ---------------------------------------------------------------------------------------------
 * The blob.
 */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

int sketch_serialize(const struct sketch *s, struct buf *out)
{
    size_t nonempty = 0;
    for (int k = 0; k < s->nbins; k++)
        nonempty += s->bins[k] != 0;
    /* version, two header varints, then per bucket a delta (2 bytes in range) and a count */
    uint8_t *blob = malloc(1 + 2 * VARINT_MAX + nonempty * (2 + VARINT_MAX));
    if (!blob)
        return E_NOMEM;
    size_t n = 0;
    blob[n++] = SKETCH_BLOB_VERSION;
    n += put_varint(blob + n, s->zero_count);
    n += put_varint(blob + n, nonempty);
    int prev = 0;
    for (int k = 0; k < s->nbins; k++) {
        if (s->bins[k] == 0)
            continue;
        n += put_varint(blob + n, zigzag((int64_t)(s->lo + k) - prev));
        n += put_varint(blob + n, s->bins[k]);
        prev = s->lo + k;
    }
    int rc = buf_append(out, blob, n); /* one append: out is unchanged on failure */
    free(blob);
    return rc;
}

struct reader {
    const uint8_t *p;
    size_t len, pos;
    struct err *e;
};

/* Reads a minimal LEB128 varint of at most 10 bytes; E_INVALID naming what was read. */
static int get_varint(struct reader *r, const char *what, uint64_t *out)
{
    size_t start = r->pos;
    uint64_t v = 0;
    for (int shift = 0; shift < 7 * VARINT_MAX; shift += 7) {
        if (r->pos == r->len)
            return err_set(r->e, E_INVALID, "sketch blob: truncated in the %s at byte %zu", what,
                           start);
        uint8_t b = r->p[r->pos++];
        if (shift == 63 && b > 1)
            break; /* bits past 64 */
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift > 0)
                return err_set(r->e, E_INVALID,
                               "sketch blob: the %s at byte %zu is not minimally encoded", what,
                               start);
            *out = v;
            return 0;
        }
    }
    return err_set(r->e, E_INVALID, "sketch blob: the %s at byte %zu overflows 64 bits", what,
                   start);
}

/* What a blob holds, from a first pass that checks it whole. */
struct blob_summary {
    uint64_t count;  /* observations, zeros included */
    int first, last; /* bucket index range; first > last when there are no buckets */
};

/* Reads bucket number k (1-based) after index *prev; adds its count to into unless into is
 * NULL (the checking pass). */
static int get_bucket(struct reader *r, struct sketch *into, struct blob_summary *sum, uint64_t k,
                      int *prev)
{
    uint64_t delta_zz = 0, count = 0;
    int rc = get_varint(r, "bucket index", &delta_zz);
    if (rc == 0)
        rc = get_varint(r, "bucket count", &count);
    if (rc != 0)
        return rc;
    /* a valid delta is at most the index range either way; checked before it is decoded */
    if (delta_zz > 2 * (uint64_t)INDEX_RANGE)
        return err_set(r->e, E_INVALID, "sketch blob: bucket %llu index is out of range",
                       (unsigned long long)k);
    int64_t delta = (int64_t)(delta_zz >> 1) ^ -(int64_t)(delta_zz & 1);
    int64_t index = *prev + delta;
    if (index < SKETCH_MIN_INDEX || index > SKETCH_MAX_INDEX)
        return err_set(r->e, E_INVALID, "sketch blob: bucket %llu index %lld is outside %d..%d",
                       (unsigned long long)k, (long long)index, SKETCH_MIN_INDEX, SKETCH_MAX_INDEX);
    if (k > 1 && delta <= 0)
        return err_set(r->e, E_INVALID, "sketch blob: bucket %llu index %lld does not increase",
                       (unsigned long long)k, (long long)index);
    if (count == 0)
        return err_set(r->e, E_INVALID, "sketch blob: bucket %llu is empty", (unsigned long long)k);
    if (count > UINT64_MAX - sum->count)
        return err_set(r->e, E_INVALID, "sketch blob: the counts add up past 64 bits");
    if (into)
        into->bins[index - into->lo] += count;
    sum->count += count;
    if (k == 1)
        sum->first = (int)index;
    sum->last = (int)index;
    *prev = (int)index;
    return 0;
}

/* One pass over a whole blob: checks it (into NULL) or adds it to into, whose bins already
 * cover the blob's range (the checking pass found it). */
static int parse(struct reader *r, struct sketch *into, struct blob_summary *sum)
{
    if (r->len == 0)
        return err_set(r->e, E_INVALID, "sketch blob: empty (not a sketch)");
    if (r->p[0] != SKETCH_BLOB_VERSION)
        return err_set(r->e, E_INVALID, "sketch blob: version %u is not supported (expected %d)",
                       r->p[0], SKETCH_BLOB_VERSION);
    r->pos = 1;
    uint64_t nbuckets = 0, zeros = 0;
    int rc = get_varint(r, "zero count", &zeros);
    if (rc == 0)
        rc = get_varint(r, "bucket count", &nbuckets);
    if (rc != 0)
        return rc;
    *sum = (struct blob_summary){zeros, 1, 0};
    if (into)
        into->zero_count += zeros;
    if (nbuckets > INDEX_RANGE)
        return err_set(r->e, E_INVALID, "sketch blob: %llu buckets, more than the %d possible",
                       (unsigned long long)nbuckets, INDEX_RANGE);
    int prev = 0;
    for (uint64_t k = 1; k <= nbuckets; k++)
        if ((rc = get_bucket(r, into, sum, k, &prev)) != 0)
            return rc;
    if (r->pos != r->len)
        return err_set(r->e, E_INVALID, "sketch blob: %zu trailing bytes after the last bucket",
                       r->len - r->pos);
    return 0;
}

int sketch_merge_blob(struct sketch *s, const void *blob, size_t len, struct err *e)
{
    /* checked whole first, so s is untouched by a blob that turns out bad; then added straight
     * into s: merging many small blobs (rollup buckets) allocates nothing per blob */
    struct reader r = {blob, len, 0, e};
    struct blob_summary sum;
    int rc = parse(&r, NULL, &sum);
    if (rc != 0)
        return rc;
    if (sum.count > UINT64_MAX - s->count)
        return err_set(e, E_LIMIT, "sketch: the merged count would pass %llu observations",
                       (unsigned long long)UINT64_MAX);
    if (sum.first <= sum.last && cover(s, sum.first, sum.last) != 0)
        return err_set(e, E_NOMEM, "sketch: out of memory");
    r.pos = 0;
    rc = parse(&r, s, &sum);
    assert(rc == 0); /* the same bytes passed the check */
    s->count += sum.count;
    return 0;
}
