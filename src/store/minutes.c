/*
 * Per-minute summaries (minutes.h). Format, version 1:
 *
 *   8F 4D 01                     magic ('M' after a non-ASCII byte) and version
 *   6 times: uv len, chunk blob  chunk.c's encoding over the bucket starts of
 *                                min, max, sum, last, count and last_ts - ts, in that order
 *
 * Every section has the same bucket starts; count is an integer >= 1 and last_ts - ts one in
 * [0, 60000), both exact as doubles. Reusing the chunk codec gives the decimal and XOR transforms
 * and zstd for free: a minute's min, max and last look like the samples they come from.
 */
#include "store/minutes.h"
#include "store/chunk.h"
#include "store/varint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAGIC0 = 0x8f, MAGIC1 = 'M', VERSION = 1, SECTIONS = 6 };

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

static int64_t minute_of(int64_t ts)
{
    int64_t b = ts / MINUTE_MS * MINUTE_MS;
    return b > ts ? b - MINUTE_MS : b; /* floor, also before 1970 */
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
        int64_t b = minute_of(ts[i]);
        double v = values[i];
        if (m->n && m->ts[m->n - 1] == b)
            merge_into(m, m->n - 1, v, v, v, 1, v, ts[i]);
        else
            put_bucket(m, b, v, v, v, 1, v, ts[i]);
    }
    return rc;
}

int minutes_encode(const struct minutes *m, size_t from, size_t n, struct buf *out, struct err *e)
{
    double *column = malloc((n ? n : 1) * sizeof *column);
    if (!column)
        return err_set(e, E_NOMEM, "out of memory encoding %zu minute buckets", n);
    size_t start = out->len;
    uint8_t head[3] = {MAGIC0, MAGIC1, VERSION};
    int rc = buf_append(out, head, sizeof head);
    struct buf section;
    buf_init(&section, out->max ? out->max : (size_t)1 << 30);
    const int64_t *ts = m->ts + from;
    for (int s = 0; s < SECTIONS && rc == 0; s++) {
        for (size_t i = 0; i < n; i++) {
            size_t k = from + i;
            column[i] = s == 0   ? m->min[k]
                        : s == 1 ? m->max[k]
                        : s == 2 ? m->sum[k]
                        : s == 3 ? m->last[k]
                        : s == 4 ? (double)m->count[k]
                                 : (double)(m->last_ts[k] - m->ts[k]);
        }
        section.len = 0;
        rc = chunk_encode(ts, column, n, &section, e);
        uint8_t len[10];
        if (rc == 0)
            rc = buf_append(out, len, put_uvarint(len, section.len));
        if (rc == 0)
            rc = buf_append(out, section.data, section.len);
    }
    buf_release(&section);
    free(column);
    if (rc)
        out->len = start;
    return rc;
}

/* An integer-valued double in [lo, hi]. */
static bool whole_in(double d, double lo, double hi)
{
    return d >= lo && d <= hi && d == floor(d);
}

/* Checks the decoded sections (bucket starts in ts, values in col[0..5]) and appends them. */
static int append_decoded(struct minutes *m, const int64_t *ts, double *const *col, size_t n,
                          struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        if (minute_of(ts[i]) != ts[i])
            return err_set(e, E_INVALID, "minute bucket %zu starts at %lld, not on a minute", i,
                           (long long)ts[i]);
        if (!whole_in(col[4][i], 1, 0x1p53) || !whole_in(col[5][i], 0, MINUTE_MS - 1))
            return err_set(e, E_INVALID, "minute bucket %zu has a bad count or last time", i);
    }
    if (m->n && ts[0] < m->ts[m->n - 1])
        return err_set(e, E_INVALID, "minute buckets out of order: %lld after %lld",
                       (long long)ts[0], (long long)m->ts[m->n - 1]);
    int rc = reserve(m, m->n + n, e);
    for (size_t i = 0; i < n && rc == 0; i++) {
        int64_t count = (int64_t)col[4][i], last_ts = ts[i] + (int64_t)col[5][i];
        if (i == 0 && m->n && m->ts[m->n - 1] == ts[0])
            merge_into(m, m->n - 1, col[0][i], col[1][i], col[2][i], count, col[3][i], last_ts);
        else
            put_bucket(m, ts[i], col[0][i], col[1][i], col[2][i], count, col[3][i], last_ts);
    }
    return rc;
}

int minutes_decode_append(struct minutes *m, const void *blob, size_t len, struct err *e)
{
    struct reader r = {blob, len, 0};
    if (len < 3 || r.p[0] != MAGIC0 || r.p[1] != MAGIC1)
        return err_set(e, E_INVALID, "not a minute summary blob");
    if (r.p[2] != VERSION)
        return err_set(e, E_INVALID, "minute summary of unknown version %u", r.p[2]);
    r.pos = 3;
    int64_t *ts = NULL, *other_ts = NULL;
    double *col[SECTIONS] = {0};
    size_t n = 0;
    int rc = 0;
    for (int s = 0; s < SECTIONS && rc == 0; s++) {
        uint64_t section_len;
        if (!get_uvarint(&r, &section_len) || section_len > len - r.pos) {
            rc = err_set(e, E_INVALID, "minute summary section %d is truncated", s);
            break;
        }
        const uint8_t *p = r.p + r.pos;
        r.pos += (size_t)section_len;
        size_t count;
        if ((rc = chunk_header(p, (size_t)section_len, &count, NULL, NULL, e)) != 0)
            break;
        if (s == 0) {
            n = count;
            ts = malloc(n * sizeof *ts);
            other_ts = malloc(n * sizeof *other_ts);
            bool short_of_memory = !ts || !other_ts;
            for (int k = 0; k < SECTIONS; k++)
                short_of_memory |= !(col[k] = malloc(n * sizeof *col[k]));
            if (short_of_memory) {
                rc = err_set(e, E_NOMEM, "out of memory decoding %zu minute buckets", n);
                break;
            }
        } else if (count != n) {
            rc = err_set(e, E_INVALID, "minute summary sections disagree: %zu and %zu buckets", n,
                         count);
            break;
        }
        size_t got;
        rc = chunk_decode(p, (size_t)section_len, s == 0 ? ts : other_ts, col[s], n, &got, e);
        if (rc == 0 && s > 0 && memcmp(ts, other_ts, n * sizeof *ts) != 0)
            rc = err_set(e, E_INVALID, "minute summary sections disagree on bucket starts");
    }
    if (rc == 0 && r.pos != len)
        rc = err_set(e, E_INVALID, "%zu bytes after the minute summary", len - r.pos);
    if (rc == 0)
        rc = append_decoded(m, ts, col, n, e);
    free(ts);
    free(other_ts);
    for (int k = 0; k < SECTIONS; k++)
        free(col[k]);
    return rc;
}
