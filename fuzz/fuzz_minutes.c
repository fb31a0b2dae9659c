/*
 * libFuzzer target: per-minute summaries (src/store/minutes.c). Input: a selector byte, then
 *
 *   0 (mod 4)   a blob for minutes_decode_append, decoded into an empty struct: it decodes, or
 *               fails with E_INVALID and a message. What decodes keeps the documented
 *               invariants and survives an encode/decode round trip bit for bit, whole and as a
 *               sub-range. The blob is then decoded into a struct already holding a bucket
 *               (bits 2-3 of the selector: in the minute before the blob's first bucket, in
 *               that minute, in the minute after, or the blob itself once more): it appends,
 *               merges or is refused (out of order, or a merged count over 2^53), as
 *               minutes.h says; a refusal leaves the struct as it was.
 *   2 (mod 4)   the same on a blob made here in the layout of minutes.c's opening comment, so
 *               that mutations reach the decoder's own checks past zstd's checksum:
 *               - bit 4 clear: a byte (the bucket count - 1), 8 bytes of first bucket start
 *                 (moved onto a minute unless bit 5), then the payload itself, compressed here
 *                 with its size and a checksum (bit 6: and a stray byte after the frame).
 *               - bit 4 set: buckets spelled out field by field after 8 bytes of first start
 *                 (moved onto a minute unless bit 5): per bucket a gap byte (0xf0 and up: 2^43
 *                 minutes and more), 2 bytes of count - 1 (bit 6: around 2^53), 2 of last_ts -
 *                 start, and 4 doubles (min, max, sum, last), written as minutes.c writes them.
 *                 The decoder must take exactly the sound ones, bit for bit.
 *   odd         samples for minutes_add_samples: 8 bytes of first ts, then 9 bytes per sample
 *               (a ts step byte, 8 value bytes; values that are not finite, which ingestion
 *               refuses, are made finite), added as two runs cut where the selector says. The
 *               buckets must equal a naive recomputation and survive a round trip, and the two
 *               runs encoded apart must decode into the same buckets (but for the sum's
 *               rounding).
 *
 * The seeds are encoded summaries, payloads and bucket fields in the forms above, and sample sets.
 */
#include "fuzz_common.h"
#include "store/chunk.h"
#include "store/minutes.h"
#include "store/varint.h"

#include <float.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_SAMPLES 4096

/* The lowest and highest bucket starts an int64 ts can have, and the lowest ts
 * minutes_add_samples takes. */
#define LOWEST_MINUTE (-9223372036854720000LL)
#define HIGHEST_MINUTE 9223372036854720000LL
#define FIRST_TS (INT64_MIN + MINUTE_MS)

#define COUNT_LIMIT (1ull << 53)

static int64_t fuzz_ts[FUZZ_MAX_SAMPLES];
static double fuzz_values[FUZZ_MAX_SAMPLES];

struct bucket {
    int64_t ts, count, last_ts;
    double min, max, sum, last;
};

static uint64_t bits_of(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static struct bucket bucket_at(const struct minutes *m, size_t i)
{
    return (struct bucket){m->ts[i],  m->count[i], m->last_ts[i], m->min[i],
                           m->max[i], m->sum[i],   m->last[i]};
}

static void check_bucket(const struct bucket *got, const struct bucket *want, const char *what,
                         size_t i)
{
    bool same =
        got->ts == want->ts && got->count == want->count && got->last_ts == want->last_ts &&
        bits_of(got->min) == bits_of(want->min) && bits_of(got->max) == bits_of(want->max) &&
        bits_of(got->sum) == bits_of(want->sum) && bits_of(got->last) == bits_of(want->last);
    fuzz_check(same,
               "%s: bucket %zu: ts %lld/%lld count %lld/%lld last_ts %lld/%lld min %g/%g max "
               "%g/%g sum %g/%g last %g/%g",
               what, i, (long long)got->ts, (long long)want->ts, (long long)got->count,
               (long long)want->count, (long long)got->last_ts, (long long)want->last_ts, got->min,
               want->min, got->max, want->max, got->sum, want->sum, got->last, want->last);
}

/* a holds exactly the n buckets want (from a struct or an array). */
static void check_buckets(const struct minutes *a, const struct bucket *want, size_t n,
                          const char *what)
{
    fuzz_check(a->n == n, "%s: %zu buckets, wanted %zu", what, a->n, n);
    for (size_t i = 0; i < n; i++) {
        struct bucket got = bucket_at(a, i);
        check_bucket(&got, &want[i], what, i);
    }
}

/* m's buckets [from, from + n) as an array (free it). */
static struct bucket *snapshot(const struct minutes *m, size_t from, size_t n)
{
    struct bucket *b = malloc((n + 1) * sizeof *b);
    fuzz_check(b != NULL, "no memory");
    for (size_t i = 0; i < n; i++)
        b[i] = bucket_at(m, from + i);
    return b;
}

/* What minutes.h promises of a struct that decoded. */
static void check_invariants(const struct minutes *m)
{
    for (size_t i = 0; i < m->n; i++) {
        fuzz_check(m->ts[i] % MINUTE_MS == 0, "bucket %zu starts at %lld", i, (long long)m->ts[i]);
        fuzz_check(i == 0 || m->ts[i] > m->ts[i - 1], "bucket %zu not after the one before", i);
        fuzz_check(m->count[i] >= 1 && (uint64_t)m->count[i] <= COUNT_LIMIT,
                   "bucket %zu: count %lld", i, (long long)m->count[i]);
        fuzz_check(m->last_ts[i] >= m->ts[i] &&
                       (uint64_t)m->last_ts[i] - (uint64_t)m->ts[i] < (uint64_t)MINUTE_MS,
                   "bucket %zu at %lld: last_ts %lld", i, (long long)m->ts[i],
                   (long long)m->last_ts[i]);
    }
}

static void add_ok(struct minutes *m, const int64_t *ts, const double *v, size_t n)
{
    struct err e;
    err_clear(&e);
    int rc = minutes_add_samples(m, ts, v, n, &e);
    fuzz_check(rc == 0, "adding %zu samples: %s", n, e.msg);
}

static void encode_ok(const struct minutes *m, size_t from, size_t n, struct buf *out)
{
    struct err e;
    err_clear(&e);
    buf_init(out, 256u << 20);
    int rc = minutes_encode(m, from, n, out, &e);
    fuzz_check(rc == 0, "encoding buckets %zu..%zu of %zu: rc %d: %s", from, from + n, m->n, rc,
               e.msg);
}

/* Decodes an exact-size copy of blob (so ASan sees a read one past the end): 0, or E_INVALID
 * with a message and m as it was. */
static int decode(struct minutes *m, const void *blob, size_t len, struct err *e)
{
    uint8_t *copy = malloc(len ? len : 1);
    fuzz_check(copy != NULL, "no memory");
    if (len)
        memcpy(copy, blob, len);
    size_t n_before = m->n;
    struct bucket *before = snapshot(m, 0, m->n);
    err_clear(e);
    int rc = minutes_decode_append(m, copy, len, e);
    free(copy);
    fuzz_check(rc == 0 || rc == E_INVALID, "rc %d: %s", rc, e->msg);
    fuzz_check(rc == 0 ? e->msg[0] == '\0' : e->code == rc && e->msg[0] != '\0',
               "rc %d with message '%s'", rc, e->msg);
    if (rc != 0)
        check_buckets(m, before, n_before, "refused, changed");
    free(before);
    return rc;
}

/* Encodes m (whole, then [from, from + n)) and decodes it again: the same buckets, and the
 * same bytes when encoded once more. */
static void round_trip(const struct minutes *m, size_t from, size_t n)
{
    struct buf blob, again;
    struct minutes back;
    struct err e;
    for (int whole = 1; whole >= 0; whole--) {
        size_t first = whole ? 0 : from, count = whole ? m->n : n;
        if (count > MINUTES_MAX) /* a blob holds a day of minutes at most */
            count = MINUTES_MAX;
        encode_ok(m, first, count, &blob);
        minutes_init(&back);
        fuzz_check(decode(&back, blob.data, blob.len, &e) == 0, "decoding buckets %zu..%zu: %s",
                   first, first + count, e.msg);
        struct bucket *want = snapshot(m, first, count);
        check_buckets(&back, want, count, "round trip");
        free(want);
        if (whole) {
            encode_ok(&back, 0, back.n, &again);
            fuzz_check(again.len == blob.len && memcmp(again.data, blob.data, blob.len) == 0,
                       "encoding the decoded buckets gave other bytes");
            buf_release(&again);
        }
        buf_release(&blob);
        minutes_release(&back);
    }
}

/* The merge minutes_decode_append does of a bucket equal in ts to the last one held. */
static struct bucket merged(struct bucket held, const struct bucket *b)
{
    held.min = b->min < held.min ? b->min : held.min;
    held.max = b->max > held.max ? b->max : held.max;
    held.sum += b->sum;
    held.count += b->count;
    if (b->last_ts >= held.last_ts) {
        held.last = b->last;
        held.last_ts = b->last_ts;
    }
    return held;
}

/* Decodes blob into m holding one bucket (or, for how == 3, the blob itself) and checks the
 * outcome against `decoded`, what it gave into an empty struct (NULL when it failed). */
static void decode_after(const uint8_t *blob, size_t len, const struct minutes *decoded,
                         unsigned how, uint16_t offset_ms)
{
    int64_t held_ts = 0, first = decoded ? decoded->ts[0] : 0, offset = offset_ms % MINUTE_MS;
    bool refused = decoded == NULL;
    if (decoded && how == 0) { /* the minute before */
        if (first == LOWEST_MINUTE)
            return;
        held_ts = first - MINUTE_MS + offset;
    } else if (decoded && how == 1) { /* the same minute: merged */
        held_ts = first > INT64_MAX - offset ? first : first + offset;
    } else if (decoded && how == 2) { /* the minute after: out of order */
        if (first > HIGHEST_MINUTE - 2 * MINUTE_MS)
            return;
        held_ts = first + MINUTE_MS + offset;
        refused = true;
    }
    held_ts = held_ts < FIRST_TS ? FIRST_TS : held_ts; /* still in the minute meant */
    struct minutes m;
    minutes_init(&m);
    struct err e;
    if (how == 3 && decoded) {
        fuzz_check(decode(&m, blob, len, &e) == 0, "a blob that decoded did not: %s", e.msg);
        refused = decoded->n > 1;
    } else {
        double v = (double)offset_ms / 8;
        fuzz_check(minutes_add_samples(&m, &held_ts, &v, 1, &e) == 0, "%s", e.msg);
    }
    size_t n_held = m.n;
    struct bucket *held = snapshot(&m, 0, m.n);
    bool merge = decoded && held[n_held - 1].ts == first;
    if (merge && (uint64_t)held[n_held - 1].count + (uint64_t)decoded->count[0] >= COUNT_LIMIT)
        refused = true; /* minutes.c: merged counts stay below 2^53 */
    int rc = decode(&m, blob, len, &e);
    if (refused) {
        fuzz_check(rc == E_INVALID, "held bucket %lld, blob from %lld: rc %d", (long long)held_ts,
                   (long long)first, rc);
        goto out;
    }
    fuzz_check(rc == 0, "held bucket %lld, blob from %lld: %s", (long long)held_ts,
               (long long)first, e.msg);
    check_invariants(&m);
    struct bucket *want = malloc((n_held + decoded->n) * sizeof *want);
    fuzz_check(want != NULL, "no memory");
    memcpy(want, held, n_held * sizeof *want);
    for (size_t i = 0; i < decoded->n; i++) {
        struct bucket b = bucket_at(decoded, i);
        want[n_held - merge + i] = i == 0 && merge ? merged(held[n_held - 1], &b) : b;
    }
    check_buckets(&m, want, n_held + decoded->n - merge, "appended");
    free(want);
    round_trip(&m, 0, m.n);
out:
    free(held);
    minutes_release(&m);
}

static void decode_blob(const uint8_t *blob, size_t len, uint8_t selector, uint16_t offset_ms)
{
    struct minutes m;
    minutes_init(&m);
    struct err e;
    int rc = decode(&m, blob, len, &e);
    if (rc != 0) {
        fuzz_check(m.n == 0, "a failed decode left %zu buckets", m.n);
        decode_after(blob, len, NULL, 0, offset_ms);
        return;
    }
    fuzz_check(m.n >= 1, "an empty decode");
    check_invariants(&m);
    size_t from = offset_ms % m.n;
    round_trip(&m, from, 1 + (size_t)selector % (m.n - from));
    decode_after(blob, len, &m, (selector >> 2) & 3, offset_ms);
    /* a sample joins the last bucket: what minutes_add_samples makes of decoded buckets encodes
     * and decodes too (a bucket of 2^53 samples takes no more) */
    size_t last = m.n - 1;
    if (m.last_ts[last] - m.ts[last] < MINUTE_MS - 1 && m.last_ts[last] < INT64_MAX &&
        (uint64_t)m.count[last] < COUNT_LIMIT) {
        int64_t ts = m.last_ts[last] < FIRST_TS ? FIRST_TS : m.last_ts[last] + 1;
        add_ok(&m, &ts, &(double){0.5}, 1);
        round_trip(&m, last, 1);
    }
    minutes_release(&m);
}

/* 8 bytes of first bucket start, moved onto a minute unless keep_as_is. */
static int64_t first_start(const uint8_t *data, bool keep_as_is)
{
    int64_t first;
    memcpy(&first, data, sizeof first);
    return keep_as_is ? first : first % (INT64_MAX / MINUTE_MS) * MINUTE_MS;
}

/* The blob of a header (n, first) and a payload, compressed as fuzz_common.h does, with `tail`
 * bytes after the frame. Returns it (free it) and its length. */
static uint8_t *make_blob(uint64_t n, int64_t first, const uint8_t *raw, size_t raw_len,
                          size_t tail, size_t *len)
{
    uint8_t *input = malloc(1 + 23 + raw_len);
    fuzz_check(input != NULL, "no memory");
    size_t header = 0;
    input[1 + header++] = 0x8f;
    input[1 + header++] = 'M';
    input[1 + header++] = 1;
    header += put_uvarint(input + 1 + header, n);
    header += put_uvarint(input + 1 + header, zigzag((uint64_t)first));
    input[0] = (uint8_t)header;
    if (raw_len)
        memcpy(input + 1 + header, raw, raw_len);
    uint8_t *blob = fuzz_zstd_blob(input, 1 + header + raw_len, len);
    free(input);
    blob = realloc(blob, *len + tail);
    fuzz_check(blob != NULL, "no memory");
    memset(blob + *len, 0x5a, tail);
    *len += tail;
    return blob;
}

/* Mode 2, bit 4 clear: a payload of the fuzzer's own. */
static void decode_payload(const uint8_t *data, size_t size, uint8_t selector)
{
    if (size < 9)
        return;
    size_t len;
    uint8_t *blob = make_blob((uint64_t)data[0] + 1, first_start(data + 1, selector & 0x20),
                              data + 9, size - 9, (selector >> 6) & 1, &len);
    decode_blob(blob, len, selector, (uint16_t)(len * 7919));
    free(blob);
}

/* Mode 2, bit 4 set: buckets field by field, sound or not; the decoder must take exactly the
 * sound ones. */
static void decode_fields(const uint8_t *data, size_t size, uint8_t selector)
{
    enum { BUCKET_BYTES = 1 + 2 + 2 + 4 * 8 };
    static struct bucket want[FUZZ_MAX_SAMPLES];
    static double columns[4][FUZZ_MAX_SAMPLES];
    static uint8_t raw[FUZZ_MAX_SAMPLES * 23 + 4 * (2 + 10 * FUZZ_MAX_SAMPLES)];
    if (size < 8 + BUCKET_BYTES)
        return;
    int64_t first = first_start(data, selector & 0x20);
    /* the decoder reads every gap before any count or offset */
    bool gaps_sound = first % MINUTE_MS == 0, sound = gaps_sound;
    uint64_t ts = (uint64_t)first; /* modulo 2^64, as minutes.c computes room */
    size_t n = 0, len = 0;
    for (data += 8, size -= 8; size >= BUCKET_BYTES && n < FUZZ_MAX_SAMPLES;
         data += BUCKET_BYTES, size -= BUCKET_BYTES, n++) {
        uint64_t gap = data[0] < 0xf0 ? data[0] : 1ull << (43 + (data[0] & 15));
        uint16_t count, offset;
        memcpy(&count, data + 1, sizeof count);
        memcpy(&offset, data + 3, sizeof offset);
        uint64_t count1 = selector & 0x40 ? COUNT_LIMIT - 0x8000 + count : count;
        if (n > 0) {
            len += put_uvarint(raw + len, gap);
            gaps_sound &= gap >= 1 && gap <= ((uint64_t)INT64_MAX - ts) / MINUTE_MS;
            ts += gaps_sound ? gap * MINUTE_MS : 0;
            sound &= gaps_sound;
        }
        sound &= count1 < COUNT_LIMIT && offset < MINUTE_MS && i64_of(ts) <= INT64_MAX - offset;
        for (int c = 0; c < 4; c++)
            memcpy(&columns[c][n], data + 5 + 8 * c, sizeof(double));
        want[n] =
            (struct bucket){i64_of(ts),    (int64_t)count1 + 1, i64_of(ts + offset), columns[0][n],
                            columns[1][n], columns[2][n],       columns[3][n]};
    }
    for (size_t i = 0; i < n; i++)
        len += put_uvarint(raw + len, (uint64_t)want[i].count - 1);
    for (size_t i = 0; i < n; i++)
        len += put_uvarint(raw + len, (uint64_t)want[i].last_ts - (uint64_t)want[i].ts);
    for (int c = 0; c < 4; c++)
        len += chunk_put_values(raw + len, columns[c], n);
    size_t blob_len;
    uint8_t *blob = make_blob(n, first, raw, len, 0, &blob_len);
    struct minutes m;
    minutes_init(&m);
    struct err e;
    int rc = decode(&m, blob, blob_len, &e);
    fuzz_check((rc == 0) == sound, "%zu buckets from %lld, sound %d: rc %d '%s'", n,
               (long long)first, sound, rc, e.msg);
    if (rc == 0) {
        check_buckets(&m, want, n, "fields");
        decode_blob(blob, blob_len, selector, (uint16_t)(n * 7919));
    }
    minutes_release(&m);
    free(blob);
}

/* The start of ts's minute, computed apart from minutes.c (for ts >= LOWEST_MINUTE). */
static int64_t floor_minute(int64_t ts)
{
    int64_t r = ts % MINUTE_MS;
    return r < 0 ? ts - r - MINUTE_MS : ts - r;
}

/* The buckets of n samples folded a sample at a time, as minutes.h describes them. */
static size_t naive(const int64_t *ts, const double *v, size_t n, struct bucket *out)
{
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) {
        struct bucket one = {floor_minute(ts[i]), 1, ts[i], v[i], v[i], v[i], v[i]};
        if (nb > 0 && out[nb - 1].ts == one.ts)
            out[nb - 1] = merged(out[nb - 1], &one);
        else
            out[nb++] = one;
    }
    return nb;
}

/* The buckets of samples [from, to) as a blob, decoded into m. */
static void add_via_blob(struct minutes *m, size_t from, size_t to)
{
    struct minutes run;
    minutes_init(&run);
    add_ok(&run, fuzz_ts + from, fuzz_values + from, to - from);
    struct buf blob;
    encode_ok(&run, 0, run.n, &blob);
    struct err e;
    fuzz_check(decode(m, blob.data, blob.len, &e) == 0, "%s", e.msg);
    buf_release(&blob);
    minutes_release(&run);
}

static void add_samples(const uint8_t *data, size_t size, uint8_t selector)
{
    static struct bucket want[FUZZ_MAX_SAMPLES];
    if (size < 8 + 9)
        return;
    int64_t ts;
    memcpy(&ts, data, sizeof ts);
    struct minutes m, both;
    minutes_init(&m);
    minutes_init(&both);
    struct err e;
    if (ts < FIRST_TS) { /* no minute: refused, nothing added */
        double v = 1;
        fuzz_check(minutes_add_samples(&m, &ts, &v, 1, &e) == E_INVALID && m.n == 0,
                   "ts %lld was taken", (long long)ts);
        ts = FIRST_TS;
    }
    size_t n = 0;
    for (data += 8, size -= 8; size >= 9 && n < FUZZ_MAX_SAMPLES; data += 9, size -= 9) {
        /* steps of 1 ms to about 4.5 days, and now and then a jump of 2^56 ms */
        int64_t step = data[0] == 0xff ? (int64_t)1 << 56 : (int64_t)data[0] * data[0] * 600 + 1;
        if (n > 0 && ts > INT64_MAX - step)
            break;
        ts += n > 0 ? step : 0;
        fuzz_ts[n] = ts;
        double v;
        memcpy(&v, data + 1, sizeof v);
        fuzz_values[n++] = isfinite(v) ? v : signbit(v) ? -DBL_MAX : DBL_MAX;
    }
    size_t cut = (size_t)(selector >> 1) * n / 128;
    add_ok(&m, fuzz_ts, fuzz_values, cut);
    add_ok(&m, fuzz_ts + cut, fuzz_values + cut, n - cut);
    size_t nb = naive(fuzz_ts, fuzz_values, n, want);
    check_buckets(&m, want, nb, "samples");
    check_invariants(&m);
    round_trip(&m, nb / 2, nb - nb / 2);
    /* the two runs encoded apart: the minute they share merges into the same bucket, but for
     * the sum's rounding (floating point addition is not associative) */
    if (cut == 0 || cut == n)
        goto out;
    add_via_blob(&both, 0, cut);
    add_via_blob(&both, cut, n);
    fuzz_check(both.n == nb, "%zu buckets from two blobs, %zu from the samples", both.n, nb);
    for (size_t i = 0; i < nb; i++) {
        struct bucket got = bucket_at(&both, i);
        got.sum = want[i].sum;
        check_bucket(&got, &want[i], "two blobs", i);
    }
out:
    minutes_release(&both);
    minutes_release(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (size == 0)
        return 0;
    uint8_t selector = data[0];
    if (selector & 1)
        add_samples(data + 1, size - 1, selector);
    else if ((selector & 0x12) == 0x12)
        decode_fields(data + 1, size - 1, selector);
    else if (selector & 2)
        decode_payload(data + 1, size - 1, selector);
    else
        decode_blob(data + 1, size - 1, selector, (uint16_t)(size * 7919));
    return 0;
}
