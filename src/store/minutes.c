/*
 * Per-minute summaries (minutes.h). Format, version 1. "uv" is an unsigned LEB128 varint, "zz" a
 * zigzag-mapped signed one (varint.h):
 *
 *   header   8F 4D 01      magic ('M' after a non-ASCII byte) and version
 *            uv n          buckets, 1..MINUTES_MAX (a chunk holds one day at most)
 *            zz first      the first bucket's start, a multiple of 60000 ms
 *   payload  one zstd frame (level 3, with its content size and checksum), used up exactly:
 *            n - 1 times uv  minutes from one bucket's start to the next (>= 1)
 *            n times uv      count - 1
 *            n times uv      last_ts - start, below 60000
 *            min, max, sum, last: four value columns in the chunk codec's value encoding
 *                            (chunk_put_values: decimal deltas or XOR, bit-exact)
 *
 * One frame for every column of a chunk's minutes: a minute's min, max and last look like the
 * samples they come from, and regular buckets make the first three sections nearly free.
 */
#include "store/minutes.h"
#include "store/chunk.h"
#include "store/varint.h"
#include "store/zstd_ctx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAGIC0 = 0x8f, MAGIC1 = 'M', VERSION = 1, HEADER_MAX = 3 + 10 + 10, ZSTD_LEVEL = 3 };

#define COUNT_MAX 0x1p53 /* counts, at most this, stay exact as doubles (SQL sums of them) */

void minutes_init(struct minutes *m)
{
    memset(m, 0, sizeof *m);
}

void minutes_release(struct minutes *m)
{
    free(m->ts);
    free(m->min);
    free(m->max);
    free(m->sum);
    free(m->last);
    free(m->count);
    free(m->last_ts);
    minutes_init(m);
}

static int reserve(struct minutes *m, size_t n, struct err *e)
{
    if (n <= m->cap)
        return 0;
    size_t cap = m->cap ? m->cap : 256;
    while (cap < n)
        cap *= 2;
    void **arrays[] = {(void **)&m->ts,   (void **)&m->min,   (void **)&m->max,    (void **)&m->sum,
                       (void **)&m->last, (void **)&m->count, (void **)&m->last_ts};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        void *grown = realloc(*arrays[i], cap * 8); /* every element is 8 bytes */
        if (!grown)
            return err_set(e, E_NOMEM, "out of memory for %zu minute buckets", n);
        *arrays[i] = grown;
    }
    m->cap = cap;
    return 0;
}

/* The start of ts's minute (floor, also before 1970); ts >= INT64_MIN + MINUTE_MS. */
static int64_t minute_of(int64_t ts)
{
    int64_t b = ts / MINUTE_MS * MINUTE_MS;
    return b > ts ? b - MINUTE_MS : b;
}

/* Folds one sample, or a partial bucket, into bucket i. */
static void merge_into(struct minutes *m, size_t i, double min, double max, double sum,
                       int64_t count, double last, int64_t last_ts)
{
    m->min[i] = min < m->min[i] ? min : m->min[i];
    m->max[i] = max > m->max[i] ? max : m->max[i];
    m->sum[i] += sum;
    m->count[i] += count;
    if (last_ts >= m->last_ts[i]) {
        m->last[i] = last;
        m->last_ts[i] = last_ts;
    }
}

static void put_bucket(struct minutes *m, int64_t ts, double min, double max, double sum,
                       int64_t count, double last, int64_t last_ts)
{
    size_t i = m->n++;
    m->ts[i] = ts;
    m->min[i] = min;
    m->max[i] = max;
    m->sum[i] = sum;
    m->count[i] = count;
    m->last[i] = last;
    m->last_ts[i] = last_ts;
}

int minutes_add_samples(struct minutes *m, const int64_t *ts, const double *values, size_t n,
                        struct err *e)
{
    int rc = reserve(m, m->n + n, e);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ts[i] < INT64_MIN + MINUTE_MS)
            return err_set(e, E_INVALID, "sample ts %lld has no minute", (long long)ts[i]);
        int64_t b = minute_of(ts[i]);
        double v = values[i];
        if (!m->n || m->ts[m->n - 1] != b)
            put_bucket(m, b, v, v, v, 1, v, ts[i]);
        else if ((double)m->count[m->n - 1] < COUNT_MAX)
            merge_into(m, m->n - 1, v, v, v, 1, v, ts[i]);
        else
            return err_set(e, E_INVALID, "the minute at %lld holds 2^53 samples already",
                           (long long)b);
    }
    return rc;
}

/* The bytes the payload of n buckets takes before compression: at most (what a decoder
 * allows) and at least. */
static size_t payload_max(size_t n)
{
    return (n - 1) * 10 + n * 10 + n * 3 + 4 * chunk_values_bound(n);
}

static size_t payload_min(size_t n)
{
    return (n - 1) + n + n + 4 * (1 + n); /* a value column: a kind byte and a byte a value */
}

/* Buckets [from, from + n) of m as the payload; returns its length. */
static size_t put_payload(uint8_t *p, const struct minutes *m, size_t from, size_t n,
                          double *column)
{
    size_t len = 0;
    for (size_t i = from + 1; i < from + n; i++)
        len += put_uvarint(p + len, (u64_of(m->ts[i]) - u64_of(m->ts[i - 1])) / MINUTE_MS);
    for (size_t i = from; i < from + n; i++)
        len += put_uvarint(p + len, u64_of(m->count[i] - 1));
    for (size_t i = from; i < from + n; i++)
        len += put_uvarint(p + len, u64_of(m->last_ts[i] - m->ts[i]));
    double *const columns[] = {m->min, m->max, m->sum, m->last};
    for (size_t c = 0; c < 4; c++) {
        memcpy(column, columns[c] + from, n * sizeof *column);
        len += chunk_put_values(p + len, column, n);
    }
    return len;
}

int minutes_encode(const struct minutes *m, size_t from, size_t n, struct buf *out, struct err *e)
{
    if (n == 0 || n > MINUTES_MAX)
        return err_set(e, E_INVALID, "%zu minute buckets cannot be encoded: 1..%d", n, MINUTES_MAX);
    size_t raw_cap = payload_max(n), zcap = HEADER_MAX + ZSTD_compressBound(raw_cap);
    uint8_t *raw = malloc(raw_cap), *blob = malloc(zcap);
    double *column = malloc(n * sizeof *column);
    int rc = 0;
    if (!raw || !blob || !column) {
        rc = err_set(e, E_NOMEM, "out of memory encoding %zu minute buckets", n);
        goto out;
    }
    size_t hlen = 0;
    blob[hlen++] = MAGIC0;
    blob[hlen++] = MAGIC1;
    blob[hlen++] = VERSION;
    hlen += put_uvarint(blob + hlen, n);
    hlen += put_uvarint(blob + hlen, zigzag(u64_of(m->ts[from])));
    size_t raw_len = put_payload(raw, m, from, n, column);
    ZSTD_CCtx *cctx = zstd_thread_cctx(ZSTD_LEVEL);
    size_t z = cctx ? ZSTD_compress2(cctx, blob + hlen, zcap - hlen, raw, raw_len) : 0;
    if (!cctx || ZSTD_isError(z)) { /* with a bound-sized output only allocation can fail */
        rc = err_set(e, E_NOMEM, "compressing %zu minute buckets failed: %s", n,
                     cctx ? ZSTD_getErrorName(z) : "no zstd context");
        goto out;
    }
    rc = buf_append(out, blob, hlen + z);
    if (rc)
        err_set(e, rc, "no room for %zu bytes of minute buckets in the output (%zu of %zu used)",
                hlen + z, out->len, out->max);
out:
    free(column);
    free(blob);
    free(raw);
    return rc;
}

static int corrupt(struct err *e, const char *what)
{
    return err_set(e, E_INVALID, "the minute buckets are corrupt: %s", what);
}

/* Decodes the payload of n buckets starting at first into d (capacity n). */
static int get_payload(struct reader *r, int64_t first, size_t n, struct minutes *d, struct err *e)
{
    uint64_t v;
    d->ts[0] = first;
    for (size_t i = 1; i < n; i++) {
        uint64_t room = u64_of(INT64_MAX) - u64_of(d->ts[i - 1]); /* exact: < 2^64 */
        if (!get_uvarint(r, &v) || v == 0 || v > room / MINUTE_MS)
            return corrupt(e, "a bucket does not start after the one before");
        d->ts[i] = i64_of(u64_of(d->ts[i - 1]) + v * MINUTE_MS);
    }
    for (size_t i = 0; i < n; i++) {
        if (!get_uvarint(r, &v) || v >= (uint64_t)COUNT_MAX)
            return corrupt(e, "a bucket's count is missing or out of range");
        d->count[i] = (int64_t)v + 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!get_uvarint(r, &v) || v >= MINUTE_MS || d->ts[i] > INT64_MAX - (int64_t)v)
            return corrupt(e, "a bucket's last sample lies outside its minute");
        d->last_ts[i] = d->ts[i] + (int64_t)v;
    }
    double *const columns[] = {d->min, d->max, d->sum, d->last};
    static const char *const names[] = {"min", "max", "sum", "last"};
    for (size_t c = 0; c < 4; c++) {
        struct err why = {0};
        if (chunk_get_values(r, n, columns[c], &why) != 0)
            return err_set(e, E_INVALID, "the minute buckets are corrupt: column %s: %s", names[c],
                           why.msg);
    }
    return r->pos == r->len ? 0 : corrupt(e, "stray bytes end its payload");
}

/* Appends the decoded buckets d to m, merging d's first into m's last when they share a minute. */
static int append_decoded(struct minutes *m, const struct minutes *d, struct err *e)
{
    if (m->n && d->ts[0] < m->ts[m->n - 1])
        return err_set(e, E_INVALID, "minute buckets out of order: %lld after %lld",
                       (long long)d->ts[0], (long long)m->ts[m->n - 1]);
    bool shared = m->n && d->ts[0] == m->ts[m->n - 1];
    if (shared && (double)m->count[m->n - 1] + (double)d->count[0] > COUNT_MAX)
        return corrupt(e, "a merged bucket counts more than 2^53 samples");
    size_t skip = shared ? 1 : 0;
    int rc = reserve(m, m->n + d->n - skip, e); /* first: on failure m is as it was */
    if (rc)
        return rc;
    if (shared)
        merge_into(m, m->n - 1, d->min[0], d->max[0], d->sum[0], d->count[0], d->last[0],
                   d->last_ts[0]);
    for (size_t i = skip; i < d->n; i++)
        put_bucket(m, d->ts[i], d->min[i], d->max[i], d->sum[i], d->count[i], d->last[i],
                   d->last_ts[i]);
    return 0;
}

int minutes_decode_append(struct minutes *m, const void *blob, size_t len, struct err *e)
{
    struct reader r = {blob, len, 0};
    uint64_t n, first;
    if (len < 3 || r.p[0] != MAGIC0 || r.p[1] != MAGIC1)
        return err_set(e, E_INVALID, "not a minute summary blob");
    if (r.p[2] != VERSION)
        return err_set(e, E_INVALID, "minute summary of unknown version %u", r.p[2]);
    r.pos = 3;
    if (!get_uvarint(&r, &n) || n == 0 || n > MINUTES_MAX || !get_uvarint(&r, &first))
        return corrupt(e, "its header is truncated or names no buckets");
    int64_t first_ts = i64_of(unzigzag(first));
    if (first_ts % MINUTE_MS != 0)
        return corrupt(e, "its first bucket does not start on a minute");
    const uint8_t *z = r.p + r.pos;
    size_t zlen = len - r.pos;
    unsigned long long size = ZSTD_getFrameContentSize(z, zlen);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ||
        size < payload_min(n) || size > payload_max(n) ||
        ZSTD_findFrameCompressedSize(z, zlen) != zlen)
        return corrupt(e, "its payload is not one frame of a size its buckets can take");
    struct minutes d;
    minutes_init(&d);
    uint8_t *raw = malloc((size_t)size);
    int rc = raw ? reserve(&d, n, e) : err_set(e, E_NOMEM, "out of memory decoding minutes");
    ZSTD_DCtx *dctx = rc == 0 ? zstd_thread_dctx() : NULL;
    if (rc == 0 && !dctx)
        rc = err_set(e, E_NOMEM, "no zstd context to decode minutes");
    if (rc == 0) {
        size_t got = ZSTD_decompressDCtx(dctx, raw, (size_t)size, z, zlen);
        if (ZSTD_isError(got) || got != size)
            rc = corrupt(e, ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short payload");
    }
    if (rc == 0) {
        struct reader p = {raw, (size_t)size, 0};
        d.n = (size_t)n;
        rc = get_payload(&p, first_ts, (size_t)n, &d, e);
    }
    if (rc == 0)
        rc = append_decoded(m, &d, e);
    free(raw);
    minutes_release(&d);
    return rc;
}
