/*
 * libFuzzer target: metric sample chunks (src/store/chunk.c). Input: a selector byte, then
 *
 *   0 (mod 4)   a blob for chunk_decode: it decodes, or fails with a message; what decodes
 *               agrees with chunk_header, is strictly increasing in ts, and survives an
 *               encode/decode round trip bit for bit.
 *   2 (mod 4)   the same checks on a blob made here: a byte L, L header bytes, then the
 *               payload before zstd, which is compressed with a checksum. Mutations of a real
 *               blob's payload rarely get past zstd's checksum; this way they reach the parser.
 *   odd         samples for chunk_encode: 8 bytes of first ts, then 9 bytes per sample (a ts
 *               step byte, 8 value bytes); they must come back bit for bit. A value whose first
 *               byte has bit 7 set is made decimal (an int32 over 10^0..10^15), so both value
 *               encodings are reached.
 *
 * The seeds are encoded chunks in each of the first two forms, and sample sets.
 */
#include "fuzz_common.h"
#include "store/chunk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHUNK_CAP (1 << 16)

static int64_t fuzz_ts[FUZZ_CHUNK_CAP], again_ts[FUZZ_CHUNK_CAP];
static double fuzz_values[FUZZ_CHUNK_CAP], again_values[FUZZ_CHUNK_CAP];

/* Encodes ts/values and decodes them again: the same samples, bit for bit, and the header. */
static void round_trip(const int64_t *ts, const double *values, size_t n)
{
    struct buf blob;
    buf_init(&blob, 64u << 20);
    struct err e;
    err_clear(&e);
    int rc = chunk_encode(ts, values, n, &blob, &e);
    fuzz_check(rc == 0, "encoding %zu samples: rc %d: %s", n, rc, e.msg);
    size_t hn = 0, got = 0;
    int64_t first = 0, last = 0;
    rc = chunk_header(blob.data, blob.len, &hn, &first, &last, &e);
    fuzz_check(rc == 0 && hn == n && first == ts[0] && last == ts[n - 1], "header: %s", e.msg);
    rc = chunk_decode(blob.data, blob.len, again_ts, again_values, n, &got, &e);
    fuzz_check(rc == 0 && got == n, "decoding what was encoded: rc %d: %s", rc, e.msg);
    fuzz_check(memcmp(ts, again_ts, n * sizeof *ts) == 0, "timestamps differ");
    fuzz_check(memcmp(values, again_values, n * sizeof *values) == 0, "values differ");
    buf_release(&blob);
}

static void decode_blob(const uint8_t *blob, size_t len)
{
    struct err e;
    err_clear(&e);
    size_t n = 1;
    int rc = chunk_decode(blob, len, fuzz_ts, fuzz_values, FUZZ_CHUNK_CAP, &n, &e);
    fuzz_check(rc == 0 || rc == E_INVALID || rc == E_LIMIT, "rc %d", rc);
    size_t hn = 0;
    int64_t first = 0, last = 0;
    int hrc = chunk_header(blob, len, &hn, &first, &last, NULL);
    if (rc != 0) {
        fuzz_check(e.code == rc && e.msg[0] != '\0', "failure %d without a message", rc);
        fuzz_check(n == 0, "failure with a count of %zu", n);
        fuzz_check(rc != E_LIMIT || (hrc == 0 && hn > FUZZ_CHUNK_CAP), "E_LIMIT for %zu", hn);
        return;
    }
    fuzz_check(e.msg[0] == '\0', "success with a message: %s", e.msg);
    fuzz_check(hrc == 0 && hn == n && n >= 1 && n <= FUZZ_CHUNK_CAP, "count %zu, header %zu", n,
               hn);
    fuzz_check(fuzz_ts[0] == first && fuzz_ts[n - 1] == last, "header ts disagree");
    for (size_t i = 1; i < n; i++)
        fuzz_check(fuzz_ts[i] > fuzz_ts[i - 1], "ts %zu not increasing", i);
    round_trip(fuzz_ts, fuzz_values, n);
}

/* Decodes a blob made of the header bytes and the zstd-compressed payload in data. */
static void decode_payload(const uint8_t *data, size_t size)
{
    size_t len;
    uint8_t *blob = fuzz_zstd_blob(data, size, &len);
    if (blob)
        decode_blob(blob, len);
    free(blob);
}

/* One value from 8 input bytes: the bits as they are, or (bit 7 of the first byte) a decimal. */
static double value_of(const uint8_t *p)
{
    static const double scale[16] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    double v;
    if (p[0] & 0x80) {
        int32_t m;
        memcpy(&m, p + 1, sizeof m);
        return (double)m / scale[p[0] & 15];
    }
    memcpy(&v, p, sizeof v);
    return v;
}

static void encode_samples(const uint8_t *data, size_t size)
{
    if (size < 8 + 9)
        return;
    int64_t ts;
    memcpy(&ts, data, sizeof ts);
    data += 8;
    size -= 8;
    size_t n = 0;
    for (; size >= 9 && n < FUZZ_CHUNK_CAP; data += 9, size -= 9) {
        /* steps of 1 ms to about 4.5 days, and now and then a jump of 2^56 ms */
        int64_t step = data[0] == 0xff ? (int64_t)1 << 56 : (int64_t)data[0] * data[0] * 6000 + 1;
        if (n > 0 && ts > INT64_MAX - step)
            break;
        ts += n > 0 ? step : 0;
        fuzz_ts[n] = ts;
        fuzz_values[n++] = value_of(data + 1);
    }
    round_trip(fuzz_ts, fuzz_values, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* an exact-size copy, so ASan sees a read one past the end */
    uint8_t *copy = malloc(size - 1 ? size - 1 : 1);
    memcpy(copy, data + 1, size - 1);
    if (data[0] & 1)
        encode_samples(copy, size - 1);
    else if (data[0] & 2)
        decode_payload(copy, size - 1);
    else
        decode_blob(copy, size - 1);
    free(copy);
    return 0;
}
