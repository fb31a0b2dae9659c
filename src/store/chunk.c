/*
 * The chunk codec: one series' run of samples as one compressed blob. Samples stored a row each
 * cost tens of bytes; metric values are mostly numbers printed with a few decimals, scraped at a
 * fixed interval, so after delta-of-delta timestamps and a decimal (or XOR) transform of the
 * values almost every byte is a small repeated pattern that zstd makes nearly free. A blob comes
 * back from disk, so the decoder trusts nothing in it.
 *
 * Format, version 1. "uv" is an unsigned LEB128 varint (at most 10 bytes), "zz" a signed value
 * zigzag-mapped to a uv (0, -1, 1, -2 ... as 0, 1, 2, 3 ...). Differences are taken modulo 2^64,
 * so any int64 timestamps and scaled values round-trip and no arithmetic overflows.
 *
 *   header   8F 43          magic ('C' after a non-ASCII byte: text is never a chunk)
 *            01             version
 *            uv n           samples, 1..CHUNK_MAX_SAMPLES
 *            zz first_ts    ms
 *            zz last_ts     ms; must equal the last decoded ts
 *            flags          bit 0: the values are decimal, else XOR; the other bits are 0
 *   payload  one zstd frame (level 3, with its content size and checksum) filling the rest of
 *            the blob; its content size must lie within what n implies (raw_bounds), and the
 *            content must be used up exactly. What decides how it reads lies inside, under
 *            the checksum, but for the flags: flipping those derails the parse.
 *            ts       n - 1 times zz dod_i = d_i - d_(i-1), d_i = ts_i - ts_(i-1), d_0 = 0.
 *                     Regular scrapes give dod = 0: a zero byte each, which zstd all but drops.
 *            decimal  one byte: k (0..15) | 0x10 for delta-of-delta, then n times zz e_i,
 *                     where value_i is (double)m_i / 10^k bit for bit, |m_i| < 2^53, and
 *                     e_i = m_i - m_(i-1) (m_-1 = 0) or, with 0x10, e_i = d_i - d_(i-1) for
 *                     those deltas (d_-1 = 0). A value printed with 2 decimals is a count of
 * hundredths: a random walk's steps take a byte or two, and a counter whose rate drifts takes the
 * change of its rate. The encoder picks whichever order takes fewer varint bytes. XOR      n
 * control bytes, then the meaningful bytes of x_i = bits_i ^ bits_(i-1) (bits_-1 = 0): control =
 * leading zero bytes << 4 | trailing zero bytes, and the 8 - leading - trailing bytes between them
 * follow, most significant first. A repeated value is one 0x80 control byte. Keeping the control
 * bytes apart from the data gives zstd two regular streams.
 */
#include "store/chunk.h"
#include "store/varint.h"
#include "store/zstd_ctx.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* The decimal check recomputes (double)m / 10^k as the decoder will: both must round the same,
 * which holds when doubles are evaluated at their own precision. */
#if FLT_EVAL_METHOD != 0
#error "chunk.c needs FLT_EVAL_METHOD 0 (SSE2 or any 64-bit target) for bit-exact decimals"
#endif

enum {
    MAGIC0 = 0x8f,
    MAGIC1 = 'C',
    VERSION = 1,
    FLAG_DECIMAL = 1,
    SCALE_DOD = 0x10, /* in the decimal section's first byte, next to k */
    MAX_SCALE = 15,   /* 10^15 < 2^53: every power is exact */
    HEADER_MAX = 3 + 3 * 10 + 1,
    ZSTD_LEVEL = 3,
};

#define MANTISSA_LIMIT 0x1p53 /* |m| below this converts to double exactly */

static const double pow10_table[MAX_SCALE + 1] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                                  1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};

struct header {
    size_t n;
    int64_t first_ts, last_ts;
    unsigned flags;
    size_t len; /* bytes of the blob the header takes */
};

/* ---------------------------------------------------------------------------------------------
 * Header.
 */

static size_t put_header(uint8_t *p, const struct header *h)
{
    size_t i = 0;
    p[i++] = MAGIC0;
    p[i++] = MAGIC1;
    p[i++] = VERSION;
    i += put_uvarint(p + i, h->n);
    i += put_uvarint(p + i, zigzag(u64_of(h->first_ts)));
    i += put_uvarint(p + i, zigzag(u64_of(h->last_ts)));
    p[i++] = (uint8_t)h->flags;
    return i;
}

/* Checks what the header alone can: known flags, and room between first and last for n
 * distinct timestamps. */
static int check_header(const struct header *h, struct err *e)
{
    if (h->flags & ~(unsigned)FLAG_DECIMAL)
        return err_set(e, E_INVALID, "the chunk is corrupt: unknown flags 0x%02x", h->flags);
    uint64_t span = u64_of(h->last_ts) - u64_of(h->first_ts);
    if (h->last_ts < h->first_ts || span < h->n - 1)
        return err_set(e, E_INVALID,
                       "the chunk is corrupt: %zu samples cannot lie between ts %lld and %lld",
                       h->n, (long long)h->first_ts, (long long)h->last_ts);
    return 0;
}

static int read_header(const void *blob, size_t len, struct header *h, struct err *e)
{
    struct reader r = {blob, len, 3};
    if (len < 2 || r.p[0] != MAGIC0 || r.p[1] != MAGIC1)
        return err_set(e, E_INVALID, "not a chunk: the blob of %zu bytes lacks the chunk magic",
                       len);
    if (len < 3)
        return err_set(e, E_INVALID, "the chunk is truncated: its header ends after 2 bytes");
    if (r.p[2] != VERSION)
        return err_set(e, E_INVALID, "chunk version %u is not supported (this build reads %d)",
                       r.p[2], VERSION);
    uint64_t n, first, last;
    if (!get_uvarint(&r, &n) || !get_zz(&r, &first) || !get_zz(&r, &last) || r.pos >= len)
        return err_set(e, E_INVALID,
                       "the chunk is truncated or corrupt: its header stops at byte %zu of %zu",
                       r.pos, len);
    if (n == 0 || n > CHUNK_MAX_SAMPLES)
        return err_set(e, E_INVALID, "the chunk is corrupt: it claims %llu samples (1..%u)",
                       (unsigned long long)n, CHUNK_MAX_SAMPLES);
    h->n = (size_t)n;
    h->first_ts = i64_of(first);
    h->last_ts = i64_of(last);
    h->flags = r.p[r.pos++];
    h->len = r.pos;
    return check_header(h, e);
}

/* ---------------------------------------------------------------------------------------------
 * Values: the decimal test and the two encodings.
 */

/* True when v is (double)m / 10^k bit for bit with |m| < 2^53; m gets it. -0.0, NaN and the
 * infinities never are. */
static bool decimal_fits(double v, int k, int64_t *m)
{
    double scaled = v * pow10_table[k];
    if (!(fabs(scaled) < MANTISSA_LIMIT)) /* also false for NaN */
        return false;
    long long rounded = llround(scaled);
    double back = (double)rounded / pow10_table[k];
    if (memcmp(&back, &v, sizeof v) != 0)
        return false;
    *m = rounded;
    return true;
}

/* The smallest k in 0..MAX_SCALE at which every value is decimal, or -1. k only grows, and each
 * growth restarts the scan, so this is at most MAX_SCALE + 1 passes. */
static int decimal_scale(const double *values, size_t n)
{
    int k = 0;
    int64_t m;
    for (size_t i = 0; i < n;) {
        if (decimal_fits(values[i], k, &m)) {
            i++;
        } else if (++k > MAX_SCALE) {
            return -1;
        } else {
            i = 0;
        }
    }
    return k;
}

/* Mantissa differences: m_i - m_(i-1), or with dod the change of that from the one before. */
struct diff {
    uint64_t prev, prev_delta;
    bool dod;
};

/* The zigzag-mapped difference that stores m. */
static uint64_t diff_next(struct diff *d, uint64_t m)
{
    uint64_t delta = m - d->prev;
    uint64_t stored = d->dod ? delta - d->prev_delta : delta;
    d->prev = m;
    d->prev_delta = delta;
    return zigzag(stored);
}

/* The m that a stored difference gives back. */
static uint64_t diff_undo(struct diff *d, uint64_t stored)
{
    uint64_t delta = d->dod ? d->prev_delta + unzigzag(stored) : unzigzag(stored);
    d->prev += delta;
    d->prev_delta = delta;
    return d->prev;
}

static uint64_t mantissa(double v, int k)
{
    int64_t m = 0;
    bool fits = decimal_fits(v, k, &m);
    assert(fits && "decimal_scale() checked every value at k");
    (void)fits;
    return u64_of(m);
}

static size_t uvarint_len(uint64_t v)
{
    size_t len = 1;
    for (; v >= 0x80; v >>= 7)
        len++;
    return len;
}

/* Whether second differences take fewer bytes than first ones: they do for counters whose rate
 * drifts (the rate's change is small, the increment is not), not for gauges that wander. */
static bool decimal_prefers_dod(const double *values, size_t n, int k)
{
    struct diff first = {0, 0, false}, second = {0, 0, true};
    size_t first_bytes = 0, second_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t m = mantissa(values[i], k);
        first_bytes += uvarint_len(diff_next(&first, m));
        second_bytes += uvarint_len(diff_next(&second, m));
    }
    return second_bytes < first_bytes;
}

static size_t put_decimal(uint8_t *p, const double *values, size_t n, int k, bool dod)
{
    size_t len = 0;
    p[len++] = (uint8_t)(k | (dod ? SCALE_DOD : 0));
    struct diff d = {0, 0, dod};
    for (size_t i = 0; i < n; i++)
        len += put_uvarint(p + len, diff_next(&d, mantissa(values[i], k)));
    return len;
}

static size_t put_xor(uint8_t *p, const double *values, size_t n)
{
    uint8_t *data = p + n;
    size_t data_len = 0;
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        uint64_t x = bits ^ prev;
        prev = bits;
        if (x == 0) {
            p[i] = 8 << 4;
            continue;
        }
        int lead = __builtin_clzll(x) / 8, trail = __builtin_ctzll(x) / 8;
        p[i] = (uint8_t)(lead << 4 | trail);
        for (int b = 7 - lead; b >= trail; b--)
            data[data_len++] = (uint8_t)(x >> (8 * b));
    }
    return n + data_len;
}

/* ---------------------------------------------------------------------------------------------
 * Encoding.
 */

/* The payload's size range before compression for n samples: what a decoder allows. */
static void raw_bounds(size_t n, bool decimal, size_t *min, size_t *max)
{
    *min = (n - 1) + (decimal ? 1 + n : n);
    *max = (n - 1) * 10 + (decimal ? 1 + n * 10 : n * 9);
}

static size_t put_timestamps(uint8_t *p, const int64_t *ts, size_t n)
{
    size_t len = 0;
    uint64_t prev_delta = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t delta = u64_of(ts[i]) - u64_of(ts[i - 1]);
        len += put_uvarint(p + len, zigzag(delta - prev_delta));
        prev_delta = delta;
    }
    return len;
}

static int check_samples(const int64_t *ts, size_t n, struct err *e)
{
    if (n == 0 || n > CHUNK_MAX_SAMPLES)
        return err_set(e, E_INVALID, "a chunk of %zu samples cannot be encoded: it holds 1..%u", n,
                       CHUNK_MAX_SAMPLES);
    for (size_t i = 1; i < n; i++)
        if (ts[i] <= ts[i - 1])
            return err_set(e, E_INVALID,
                           "sample %zu: ts %lld is not after ts %lld; a chunk's samples must be "
                           "sorted by ts without duplicates",
                           i, (long long)ts[i], (long long)ts[i - 1]);
    return 0;
}

/* Compresses raw into dst (of capacity cap); *zlen gets the compressed size. The checksum (4
 * bytes) catches a corrupt payload that would otherwise decode to other, plausible values. */
static int compress_payload(void *dst, size_t cap, const void *raw, size_t raw_len, size_t *zlen,
                            struct err *e)
{
    ZSTD_CCtx *cctx = zstd_thread_cctx(ZSTD_LEVEL);
    if (!cctx)
        return err_set(e, E_NOMEM, "no memory for a zstd context to encode a chunk");
    size_t rc = ZSTD_compress2(cctx, dst, cap, raw, raw_len);
    /* with a bound-sized output only allocation can fail */
    if (ZSTD_isError(rc))
        return err_set(e, E_NOMEM, "compressing a chunk's %zu bytes failed: %s", raw_len,
                       ZSTD_getErrorName(rc));
    *zlen = rc;
    return 0;
}

int chunk_encode(const int64_t *ts, const double *values, size_t n, struct buf *out, struct err *e)
{
    int rc = check_samples(ts, n, e);
    if (rc)
        return rc;
    int k = decimal_scale(values, n);
    bool dod = k >= 0 && decimal_prefers_dod(values, n, k);
    struct header h = {n, ts[0], ts[n - 1], k >= 0 ? FLAG_DECIMAL : 0, 0};
    size_t raw_min, raw_max;
    raw_bounds(n, k >= 0, &raw_min, &raw_max);
    uint8_t *raw = malloc(raw_max);
    uint8_t *blob = malloc(HEADER_MAX + ZSTD_compressBound(raw_max));
    if (!raw || !blob) {
        rc = err_set(e, E_NOMEM, "no memory to encode a chunk of %zu samples", n);
        goto out;
    }
    size_t raw_len = put_timestamps(raw, ts, n);
    raw_len +=
        k >= 0 ? put_decimal(raw + raw_len, values, n, k, dod) : put_xor(raw + raw_len, values, n);
    h.len = put_header(blob, &h);
    size_t zlen = 0;
    rc = compress_payload(blob + h.len, ZSTD_compressBound(raw_max), raw, raw_len, &zlen, e);
    if (rc)
        goto out;
    rc = buf_append(out, blob, h.len + zlen);
    if (rc == E_LIMIT)
        err_set(e, rc, "no room for a chunk of %zu bytes in the output (%zu of %zu bytes used)",
                h.len + zlen, out->len, out->max);
    else if (rc)
        err_set(e, rc, "no memory to append a chunk of %zu bytes", h.len + zlen);
out:
    free(blob);
    free(raw);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding.
 */

int chunk_header(const void *blob, size_t len, size_t *n, int64_t *first_ts, int64_t *last_ts,
                 struct err *e)
{
    struct header h;
    int rc = read_header(blob, len, &h, e);
    if (rc)
        return rc;
    if (n)
        *n = h.n;
    if (first_ts)
        *first_ts = h.first_ts;
    if (last_ts)
        *last_ts = h.last_ts;
    return 0;
}

/* Decompresses the single zstd frame of z[0..zlen) into *raw (malloc'd, the caller frees),
 * having checked that its declared size is one that n samples can have. */
static int decompress_payload(const struct header *h, const uint8_t *z, size_t zlen, uint8_t **raw,
                              size_t *raw_len, struct err *e)
{
    size_t frame_len = ZSTD_findFrameCompressedSize(z, zlen);
    if (ZSTD_isError(frame_len))
        return err_set(e, E_INVALID, "the chunk is truncated or corrupt: %s",
                       ZSTD_getErrorName(frame_len));
    if (frame_len != zlen)
        return err_set(e, E_INVALID, "the chunk is corrupt: %zu bytes follow its payload",
                       zlen - frame_len);
    unsigned long long size = ZSTD_getFrameContentSize(z, zlen);
    size_t min, max;
    raw_bounds(h->n, h->flags & FLAG_DECIMAL, &min, &max);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR || size < min ||
        size > max)
        return err_set(e, E_INVALID,
                       "the chunk is corrupt: its payload does not declare a size within "
                       "%zu..%zu bytes, what %zu samples take",
                       min, max, h->n);
    *raw = malloc((size_t)size);
    if (!*raw)
        return err_set(e, E_NOMEM, "no memory to decode a chunk of %zu samples", h->n);
    ZSTD_DCtx *dctx = zstd_thread_dctx();
    if (!dctx)
        return err_set(e, E_NOMEM, "no memory for a zstd context to decode a chunk");
    size_t got = ZSTD_decompressDCtx(dctx, *raw, (size_t)size, z, zlen);
    if (ZSTD_isError(got) || got != size)
        return err_set(e, E_INVALID, "the chunk's payload is corrupt: %s",
                       ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short content");
    *raw_len = got;
    return 0;
}

static int decode_timestamps(struct reader *r, const struct header *h, int64_t *ts, struct err *e)
{
    ts[0] = h->first_ts;
    uint64_t delta = 0;
    for (size_t i = 1; i < h->n; i++) {
        uint64_t dod;
        if (!get_zz(r, &dod))
            return err_set(e, E_INVALID,
                           "the chunk is corrupt: ts %zu of %zu ends early or overflows", i, h->n);
        delta += dod;
        ts[i] = i64_of(u64_of(ts[i - 1]) + delta);
        if (ts[i] <= ts[i - 1])
            return err_set(e, E_INVALID, "the chunk is corrupt: ts %zu (%lld) is not after %lld", i,
                           (long long)ts[i], (long long)ts[i - 1]);
    }
    if (ts[h->n - 1] != h->last_ts)
        return err_set(e, E_INVALID,
                       "the chunk is corrupt: its last ts is %lld, its header says %lld",
                       (long long)ts[h->n - 1], (long long)h->last_ts);
    return 0;
}

static int decode_decimal(struct reader *r, size_t n, double *values, struct err *e)
{
    unsigned scale_byte = r->pos < r->len ? r->p[r->pos++] : 0xff;
    unsigned k = scale_byte & ~(unsigned)SCALE_DOD;
    if (k > MAX_SCALE)
        return err_set(e, E_INVALID, "the chunk is corrupt: no decimal scale in 0..%d", MAX_SCALE);
    double scale = pow10_table[k];
    struct diff d = {0, 0, scale_byte & SCALE_DOD};
    for (size_t i = 0; i < n; i++) {
        uint64_t stored;
        if (!get_uvarint(r, &stored))
            return err_set(e, E_INVALID,
                           "the chunk is corrupt: value %zu of %zu ends early or overflows", i, n);
        int64_t m = i64_of(diff_undo(&d, stored));
        if (!(m > -(int64_t)MANTISSA_LIMIT && m < (int64_t)MANTISSA_LIMIT))
            return err_set(e, E_INVALID, "the chunk is corrupt: value %zu is out of range", i);
        values[i] = (double)m / scale;
    }
    return 0;
}

/* One XOR word from its control byte and the data cursor; false when either is bad. */
static bool get_xor_word(uint8_t control, struct reader *data, uint64_t *x)
{
    unsigned lead = control >> 4, trail = control & 15;
    if (lead + trail > 8)
        return false;
    unsigned count = 8 - lead - trail;
    if (count > data->len - data->pos)
        return false;
    uint64_t w = 0;
    for (unsigned b = 0; b < count; b++)
        w = w << 8 | data->p[data->pos++];
    *x = count ? w << (8 * trail) : 0;
    return true;
}

static int decode_xor(struct reader *r, size_t n, double *values, struct err *e)
{
    if (n > r->len - r->pos)
        return err_set(e, E_INVALID, "the chunk is corrupt: %zu value control bytes are cut short",
                       n);
    const uint8_t *control = r->p + r->pos;
    r->pos += n;
    uint64_t bits = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t x;
        if (!get_xor_word(control[i], r, &x))
            return err_set(e, E_INVALID, "the chunk is corrupt: value %zu of %zu is malformed", i,
                           n);
        bits ^= x;
        memcpy(&values[i], &bits, sizeof bits);
    }
    return 0;
}

static int decode_payload(const struct header *h, const uint8_t *raw, size_t raw_len, int64_t *ts,
                          double *values, struct err *e)
{
    struct reader r = {raw, raw_len, 0};
    int rc = decode_timestamps(&r, h, ts, e);
    if (rc)
        return rc;
    rc = h->flags & FLAG_DECIMAL ? decode_decimal(&r, h->n, values, e)
                                 : decode_xor(&r, h->n, values, e);
    if (rc)
        return rc;
    if (r.pos != r.len)
        return err_set(e, E_INVALID, "the chunk is corrupt: %zu stray bytes end its payload",
                       r.len - r.pos);
    return 0;
}

int chunk_decode(const void *blob, size_t len, int64_t *ts, double *values, size_t cap, size_t *n,
                 struct err *e)
{
    *n = 0;
    struct header h;
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    int rc = read_header(blob, len, &h, e);
    if (rc)
        goto out;
    if (h.n > cap) {
        rc = err_set(e, E_LIMIT, "the chunk holds %zu samples, more than the %zu there is room for",
                     h.n, cap);
        goto out;
    }
    rc = decompress_payload(&h, (const uint8_t *)blob + h.len, len - h.len, &raw, &raw_len, e);
    if (rc)
        goto out;
    rc = decode_payload(&h, raw, raw_len, ts, values, e);
    if (rc)
        goto out;
    *n = h.n;
out:
    free(raw);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * One value column alone (chunk.h): a kind byte, then the decimal or XOR section.
 */

enum { COLUMN_XOR = 0, COLUMN_DECIMAL = 1 };

size_t chunk_values_bound(size_t n)
{
    return 1 + 1 + n * 10; /* kind, scale, a varint each (XOR: n control bytes + 8 n) */
}

size_t chunk_put_values(uint8_t *p, const double *values, size_t n)
{
    int k = decimal_scale(values, n);
    p[0] = k >= 0 ? COLUMN_DECIMAL : COLUMN_XOR;
    return 1 + (k >= 0 ? put_decimal(p + 1, values, n, k, decimal_prefers_dod(values, n, k))
                       : put_xor(p + 1, values, n));
}

int chunk_get_values(struct reader *r, size_t n, double *values, struct err *e)
{
    if (r->pos >= r->len)
        return err_set(e, E_INVALID, "a value column is missing");
    uint8_t kind = r->p[r->pos++];
    if (kind == COLUMN_DECIMAL)
        return decode_decimal(r, n, values, e);
    if (kind == COLUMN_XOR)
        return decode_xor(r, n, values, e);
    return err_set(e, E_INVALID, "a value column of unknown kind %u", kind);
}
