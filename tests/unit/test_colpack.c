/*
 * store: the column-pack codec (colpack.c) — bit-exact round trips of every value type and its
 * edges (integers whose deltas wrap, NaN payloads and signed zeros, binary and 1 MiB texts, the
 * row, column and size limits), with and without a group column, every error of the encoder,
 * truncated, flipped and forged blobs of both versions for the decoder (version 1 blobs are
 * written here, as databases hold them), the choice of the group column, and the bytes per row
 * on rows shaped like error logs. Forged blobs are built here with their own header writer and
 * zstd, so each check the decoder makes after zstd is reached on its own.
 */
#include "unit.h"

#include "store/colpack.h"

#define T0 1767225600000LL /* 2026-01-01T00:00:00Z */
#define NOISE_BYTES (2u << 20)

/* Random bytes, every one of the 256 values, that random texts are cut from. */
static char noise[NOISE_BYTES];

static int fill_noise(void **state)
{
    (void)state;
    for (size_t i = 0; i < NOISE_BYTES; i++)
        noise[i] = (char)(rnd() >> 56);
    return 0;
}

static struct value vnull(void)
{
    struct value v = {.type = VAL_NULL};
    return v;
}

static struct value vint(int64_t i)
{
    struct value v = {.i = i, .type = VAL_INT};
    return v;
}

static struct value vreal(uint64_t bits)
{
    struct value v = {.type = VAL_REAL};
    memcpy(&v.d, &bits, sizeof v.d);
    return v;
}

static struct value vtext(const char *s, size_t len)
{
    struct value v = {.s = s, .len = (uint32_t)len, .type = VAL_TEXT};
    return v;
}

/* Reals compare by their bits, texts by their bytes. */
static bool same_value(const struct value *a, const struct value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case VAL_INT:
        return a->i == b->i;
    case VAL_REAL:
        return bits_of(a->d) == bits_of(b->d);
    case VAL_TEXT:
        return a->len == b->len && (a->len == 0 || memcmp(a->s, b->s, a->len) == 0);
    default:
        return true;
    }
}

static const char *describe(const struct value *v, char *out, size_t size)
{
    if (v->type == VAL_INT)
        snprintf(out, size, "integer %lld", (long long)v->i);
    else if (v->type == VAL_REAL)
        snprintf(out, size, "real 0x%016llx", (unsigned long long)bits_of(v->d));
    else if (v->type == VAL_TEXT)
        snprintf(out, size, "text of %u bytes", v->len);
    else
        snprintf(out, size, "type %u", v->type);
    return out;
}

static void assert_same_cells(const struct value *want, size_t nrows, size_t ncols,
                              const struct colpack_block *got)
{
    assert_int_equal(got->nrows, nrows);
    assert_int_equal(got->ncols, ncols);
    for (size_t i = 0; i < nrows * ncols; i++) {
        char a[64], b[64];
        if (!same_value(&want[i], &got->cells[i]))
            fail_msg("row %zu, column %zu: %s came back as %s", i / ncols, i % ncols,
                     describe(&want[i], a, sizeof a), describe(&got->cells[i], b, sizeof b));
    }
}

static void encode_ok(const struct value *cells, size_t nrows, size_t ncols, int group,
                      struct buf *out)
{
    struct err e;
    err_clear(&e);
    buf_init(out, 256u << 20);
    int rc = colpack_encode(cells, nrows, ncols, group, out, &e);
    if (rc != 0)
        fail_msg("encoding %zu rows of %zu columns (group %d): rc %d: %s", nrows, ncols, group, rc,
                 e.msg);
}

static int decode(const void *blob, size_t len, struct colpack_block *b, struct err *e)
{
    err_clear(e);
    return colpack_decode(blob, len, b, e);
}

/* Encodes grouped by group, decodes and compares bit for bit; returns the blob's size. */
static size_t round_trip_group(const struct value *cells, size_t nrows, size_t ncols, int group)
{
    struct buf out;
    encode_ok(cells, nrows, ncols, group, &out);
    struct colpack_block b;
    colpack_block_init(&b);
    struct err e;
    int rc = decode(out.data, out.len, &b, &e);
    if (rc != 0)
        fail_msg("decoding %zu rows of %zu columns (group %d): rc %d: %s", nrows, ncols, group, rc,
                 e.msg);
    assert_same_cells(cells, nrows, ncols, &b);
    size_t len = out.len;
    colpack_block_release(&b);
    buf_release(&out);
    return len;
}

/* Round trips without a group, grouped by the first and the last column, and grouped as
 * colpack_pick_group says; returns the size without a group. */
static size_t round_trip(const struct value *cells, size_t nrows, size_t ncols)
{
    size_t len = round_trip_group(cells, nrows, ncols, -1);
    round_trip_group(cells, nrows, ncols, 0);
    if (ncols > 1)
        round_trip_group(cells, nrows, ncols, (int)ncols - 1);
    int picked = colpack_pick_group(cells, nrows, ncols);
    assert_true(picked >= -1 && picked < (int)ncols);
    if (picked > 0 && picked < (int)ncols - 1)
        round_trip_group(cells, nrows, ncols, picked);
    return len;
}

/* ---------------------------------------------------------------------------------------------
 * Round trips.
 */

static const uint64_t special_reals[] = {
    0x0000000000000000u, /* +0.0 */
    0x8000000000000000u, /* -0.0 */
    0x7ff0000000000000u, /* +inf */
    0xfff0000000000000u, /* -inf */
    0x7ff8000000000000u, /* quiet NaN */
    0xfff8000000000001u, /* negative quiet NaN with a payload */
    0x7ff0000000000001u, /* signalling NaN */
    0x7ff4c0ffee00f00du, /* signalling NaN with a payload */
    0xffffffffffffffffu, /* all ones: a NaN */
    0x0000000000000001u, /* smallest subnormal */
    0x800fffffffffffffu, /* largest negative subnormal */
    0x0010000000000000u, /* DBL_MIN */
    0x7fefffffffffffffu, /* DBL_MAX */
    0x3fb999999999999au, /* 0.1 */
};
#define NSPECIAL (sizeof special_reals / sizeof special_reals[0])

static const int64_t special_ints[] = {
    INT64_MIN, INT64_MAX, 0, -1, 1, INT64_MIN + 1, INT64_MAX - 1, T0, -T0, 63, 64, -64, -65,
};
#define NINTS (sizeof special_ints / sizeof special_ints[0])

static void one_value(void **state)
{
    (void)state;
    struct value v = vnull();
    round_trip(&v, 1, 1);
    for (size_t i = 0; i < NINTS; i++) {
        v = vint(special_ints[i]);
        round_trip(&v, 1, 1);
    }
    for (size_t i = 0; i < NSPECIAL; i++) {
        v = vreal(special_reals[i]);
        round_trip(&v, 1, 1);
    }
    v = vtext("", 0);
    round_trip(&v, 1, 1);
    v = vtext(NULL, 0); /* an empty text need not point anywhere */
    round_trip(&v, 1, 1);
    v = vtext("\0", 1);
    round_trip(&v, 1, 1);
    v = vtext("a\0b\xff\x80", 5);
    round_trip(&v, 1, 1);
}

/* Deltas of 2^64 - 1 and around it wrap; NULLs between integers do not reset the delta. */
static void extreme_integers(void **state)
{
    (void)state;
    struct value col[NINTS * NINTS * 2];
    size_t n = 0;
    for (size_t i = 0; i < NINTS; i++) /* every ordered pair of edges is a delta */
        for (size_t j = 0; j < NINTS; j++) {
            col[n++] = vint(special_ints[i]);
            col[n++] = j % 3 ? vint(special_ints[j]) : vnull();
        }
    round_trip(col, n, 1);
    round_trip(col, n / 2, 2);
    round_trip(col, n / 4, 4);

    size_t many = 5000;
    struct value *v = malloc(many * sizeof *v);
    for (size_t i = 0; i < many; i++)
        v[i] = vint((int64_t)rnd());
    round_trip(v, many, 1);
    for (size_t i = 0; i < many; i++) /* increasing timestamps, a few ms apart */
        v[i] = vint(T0 + (int64_t)(i * 3 + rnd() % 5));
    round_trip(v, many, 1);
    free(v);
}

/* Reals are XORed against the column's previous real: NULLs, integers and texts between them
 * must not disturb that chain. */
static void special_reals_round_trip(void **state)
{
    (void)state;
    struct value v[NSPECIAL * 4];
    size_t n = 0;
    for (size_t round = 0; round < 4; round++)
        for (size_t i = 0; i < NSPECIAL; i++) {
            size_t k = (i * 5 + round) % NSPECIAL;
            v[n++] = round == 2 && i % 3 == 0   ? vnull()
                     : round == 3 && i % 4 == 1 ? vint((int64_t)special_reals[k])
                     : round == 3 && i % 4 == 2 ? vtext("x", 1)
                                                : vreal(special_reals[k]);
        }
    round_trip(v, n, 1);
    round_trip(v, n / 2, 2);
    for (size_t i = 0; i < NSPECIAL; i++) { /* each alone, repeated */
        struct value same[3] = {vreal(special_reals[i]), vreal(special_reals[i]),
                                vreal(special_reals[i])};
        round_trip(same, 3, 1);
    }
}

static void texts(void **state)
{
    (void)state;
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i;
    char *zeros = calloc(1, 1u << 20);
    struct value v[] = {
        vtext("", 0),
        vtext("\0", 1),
        vtext("\0\0\0", 3),
        vtext(all, 256),
        vtext(noise, 127), /* the length's varint grows at 128 and 16384 */
        vtext(noise, 128),
        vtext(noise + 1, 16383),
        vtext(noise + 2, 16384),
        vtext(noise + 3, 1u << 20),
        vtext(zeros, 1u << 20),
        vtext("\xc3\x28 not UTF-8", 13),
    };
    size_t n = sizeof v / sizeof v[0];
    round_trip(v, n, 1);
    round_trip(v, 1, n);
    free(zeros);
}

/* A value of type t with the edges of its type often, and texts cut from the noise. */
static struct value random_value(unsigned t)
{
    uint64_t r = rnd();
    switch (t) {
    case VAL_INT:
        return vint(r % 4 == 0   ? special_ints[(r >> 8) % NINTS]
                    : r % 4 == 1 ? (int64_t)(r >> 8) % 1000
                                 : (int64_t)rnd());
    case VAL_REAL:
        return vreal(r % 3 == 0 ? special_reals[(r >> 8) % NSPECIAL] : rnd());
    case VAL_TEXT: {
        size_t len = r % 8 == 0 ? 0 : r % 8 < 6 ? (r >> 8) % 24 : (r >> 8) % 3000;
        return vtext(noise + (rnd() % (NOISE_BYTES - len)), len);
    }
    default:
        return vnull();
    }
}

/* Columns of one type (with NULLs now and then) and columns of every type mixed. */
static void fill_random(struct value *cells, size_t nrows, size_t ncols)
{
    for (size_t c = 0; c < ncols; c++) {
        unsigned kind = (unsigned)(rnd() % 5); /* 0..3 one type, 4 any */
        for (size_t r = 0; r < nrows; r++) {
            unsigned t = kind < 4 ? kind : (unsigned)(rnd() % 4);
            if (rnd() % 10 == 0)
                t = VAL_NULL;
            cells[r * ncols + c] = random_value(t);
        }
    }
}

static void random_mixes(void **state)
{
    (void)state;
    for (int round = 0; round < 40; round++) {
        size_t nrows = 1 + rnd() % (round < 20 ? 8 : 2000), ncols = 1 + rnd() % 12;
        struct value *cells = malloc(nrows * ncols * sizeof *cells);
        fill_random(cells, nrows, ncols);
        round_trip(cells, nrows, ncols);
        free(cells);
    }
}

static void most_rows(void **state)
{
    (void)state;
    size_t nrows = COLPACK_MAX_ROWS, ncols = 3;
    struct value *cells = malloc(nrows * ncols * sizeof *cells);
    fill_random(cells, nrows, ncols);
    for (size_t r = 0; r < nrows; r++)
        cells[r * ncols] = vint(T0 + (int64_t)r * 7);
    round_trip(cells, nrows, ncols);
    round_trip(cells, nrows, 1);
    free(cells);
}

static void most_columns(void **state)
{
    (void)state;
    size_t ncols = COLPACK_MAX_COLUMNS, nrows = 200;
    struct value *cells = malloc(nrows * ncols * sizeof *cells);
    fill_random(cells, nrows, ncols);
    round_trip(cells, nrows, ncols);
    round_trip(cells, 1, ncols);
    free(cells);
}

/* 64 texts of 1 MiB - 4 bytes are exactly COLPACK_MAX_RAW_BYTES unpacked: 1 type byte, a
 * 3-byte length and the bytes each. One byte more is refused (see encode_errors). */
#define BIG_TEXTS 64
#define BIG_TEXT_BYTES ((1u << 20) - 4)

static void largest_block(void **state)
{
    (void)state;
    struct value v[BIG_TEXTS];
    for (size_t i = 0; i < BIG_TEXTS; i++)
        v[i] = vtext(noise + i, BIG_TEXT_BYTES);
    assert_int_equal(BIG_TEXTS * (1 + 3 + BIG_TEXT_BYTES), COLPACK_MAX_RAW_BYTES);
    round_trip_group(v, BIG_TEXTS, 1, -1); /* grouping one column of 64 rows: nothing to try */
}

/* Encoding appends: two blobs side by side in one buffer each decode on their own. */
static void appends(void **state)
{
    (void)state;
    struct value a[] = {vint(1), vtext("one", 3)}, b[] = {vreal(special_reals[5])};
    struct buf out;
    encode_ok(a, 1, 2, 1, &out);
    size_t first = out.len;
    struct err e;
    err_clear(&e);
    assert_int_equal(colpack_encode(b, 1, 1, -1, &out, &e), 0);
    struct colpack_block block;
    colpack_block_init(&block);
    assert_int_equal(decode(out.data, first, &block, &e), 0);
    assert_same_cells(a, 1, 2, &block);
    assert_int_equal(decode(out.data + first, out.len - first, &block, &e), 0);
    assert_same_cells(b, 1, 1, &block);
    colpack_block_release(&block);
    buf_release(&out);
}

/* Texts that make templates of every kind: decimal numbers (0, 19 digits, leading zeros), hex
 * runs of odd and even length, runs of hex letters alone, bytes that need escaping, tokens
 * constant in every row of their template and tokens that vary, a template of one row, a text
 * that contains another column's text; grouped and not. */
static void templated_texts(void **state)
{
    (void)state;
    enum { ROWS = 600, COLS = 3 };
    static const char *const kinds[] = {"api", "db", "cache", "queue", "web"};
    static char text[ROWS][128], other[ROWS][48];
    static struct value v[ROWS * COLS];
    for (size_t r = 0; r < ROWS; r++) {
        unsigned a = (unsigned)(rnd() % 100000), b = (unsigned)(rnd() % 7);
        int len = 0, olen = snprintf(other[r], sizeof other[r], "order %u of cafe %u", a, b);
        switch (r % 8) {
        case 0:
            len = snprintf(text[r], sizeof text[r], "GET /v1/users/%u took %ums", a, b);
            break;
        case 1:
            len =
                snprintf(text[r], sizeof text[r], "dial tcp 10.1.%u.%u:5432: refused", b, a % 256);
            break;
        case 2:
            len = snprintf(text[r], sizeof text[r], "trace 0abc%04x span %05u f0f deadbeef", a, b);
            break;
        case 3:
            len = snprintf(text[r], sizeof text[r], "max 18446744073709551615 and %s 0 %u",
                           b % 2 ? "9999999999999999999" : "10000000000000000000", b);
            break;
        case 4:
            len = snprintf(text[r], sizeof text[r], "x%cy%c\x03z %u", 1, 2, b);
            text[r][6] = '\0'; /* a NUL inside the text */
            break;
        case 5:
            len = snprintf(text[r], sizeof text[r], "failed: %s (retry %u)", other[r], b);
            break;
        case 6:
            len = r == 6 ? snprintf(text[r], sizeof text[r], "only once %u", a) : 0;
            break;
        default:
            len = -1;
        }
        v[r * COLS] = vtext(other[r], (size_t)olen);
        v[r * COLS + 1] = len < 0 ? vnull() : vtext(text[r], (size_t)len);
        v[r * COLS + 2] = vtext(kinds[b % 5], strlen(kinds[b % 5]));
    }
    round_trip(v, ROWS, COLS);
    round_trip_group(v, ROWS, COLS, 2);
    round_trip_group(v, 7, COLS, 2);
    round_trip_group(v + 5 * COLS, 1, COLS, 1);
}

/* ---------------------------------------------------------------------------------------------
 * Encoder errors.
 */

static void expect_encode_error(const struct value *cells, size_t nrows, size_t ncols, int group,
                                int want_rc, const char *needle)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    assert_int_equal(buf_append(&out, "keep", 4), 0);
    struct err e;
    err_clear(&e);
    int rc = colpack_encode(cells, nrows, ncols, group, &out, &e);
    if (rc != want_rc || e.code != want_rc || !strstr(e.msg, needle))
        fail_msg("%zu rows of %zu columns: rc %d '%s', wanted %d '%s'", nrows, ncols, rc, e.msg,
                 want_rc, needle);
    assert_int_equal(out.len, 4); /* unchanged */
    assert_memory_equal(out.data, "keep", 5);
    buf_release(&out);
}

static void encode_errors(void **state)
{
    (void)state;
    struct value v[6] = {vint(1), vtext("a", 1), vnull(), vreal(0), vint(2), vtext("", 0)};
    expect_encode_error(v, 0, 1, -1, E_INVALID,
                        "a block holds 1..65536 rows of 1..64 columns, not 0");
    expect_encode_error(v, COLPACK_MAX_ROWS + 1, 1, -1, E_INVALID, "not 65537 of 1");
    expect_encode_error(v, 1, 0, -1, E_INVALID, "not 1 of 0");
    expect_encode_error(v, 1, COLPACK_MAX_COLUMNS + 1, -1, E_INVALID, "not 1 of 65");
    expect_encode_error(v, 2, 3, 3, E_INVALID, "the group column 3 is not one of the 3 columns");
    expect_encode_error(v, 2, 3, -2, E_INVALID, "the group column -2 is not one of the 3 columns");
    v[5].type = 4;
    expect_encode_error(v, 2, 3, 1, E_INVALID, "row 1, column 2: a value of unknown type 4");
    v[5].type = 255;
    expect_encode_error(v, 2, 3, -1, E_INVALID, "unknown type 255");

    /* one byte past COLPACK_MAX_RAW_BYTES unpacked */
    struct value big[BIG_TEXTS];
    for (size_t i = 0; i < BIG_TEXTS; i++)
        big[i] = vtext(noise, BIG_TEXT_BYTES);
    big[BIG_TEXTS - 1].len++;
    expect_encode_error(big, BIG_TEXTS, 1, 0, E_LIMIT, "take more than 67108864 bytes unpacked");

    /* the output's limit: E_LIMIT, nothing appended */
    struct buf small;
    buf_init(&small, 20);
    assert_int_equal(buf_append(&small, "abc", 3), 0);
    struct err e;
    err_clear(&e);
    assert_int_equal(colpack_encode(v, 2, 2, -1, &small, &e), E_LIMIT);
    assert_int_equal(e.code, E_LIMIT);
    assert_non_null(strstr(e.msg, "no room for a block"));
    assert_int_equal(small.len, 3);
    assert_memory_equal(small.data, "abc", 4);
    buf_release(&small);
}

/* ---------------------------------------------------------------------------------------------
 * Decoder errors.
 */

#define SAMPLE_ROWS 300
#define SAMPLE_COLS 6

static const char *const services[] = {"api", "auth", "billing", "search", "worker"};
static const char *const levels[] = {"debug", "info", "warn", "error"};

/* Rows of a timestamp, a service, a level or NULL, a latency, a message and a status or NULL. */
static void sample_cells(struct value *cells, char text[][40])
{
    for (size_t r = 0; r < SAMPLE_ROWS; r++) {
        struct value *row = &cells[r * SAMPLE_COLS];
        const char *service = services[r % 5], *level = levels[(r / 7) % 4];
        int len = snprintf(text[r], 40, "request %zu took too long", r * 37 % 1000);
        row[0] = vint(T0 + (int64_t)r * 3);
        row[1] = vtext(service, strlen(service));
        row[2] = r % 9 ? vtext(level, strlen(level)) : vnull();
        row[3] = vreal(bits_of((double)(r % 97) / 4));
        row[4] = vtext(text[r], (size_t)len);
        row[5] = r % 4 ? vint(200 + (int64_t)(r % 3) * 100) : vnull();
    }
}

static struct value sample[SAMPLE_ROWS * SAMPLE_COLS];
static char sample_text[SAMPLE_ROWS][40];

/* Version 1 as the format describes it, written independently of colpack.c: databases hold
 * such blocks, and the encoder writes them only when version 2 does not fit. */
static uint64_t zz(uint64_t v)
{
    return (v << 1) ^ (0 - (v >> 63));
}

static size_t v1_payload(const struct value *cells, size_t nrows, size_t ncols, unsigned char *p)
{
    size_t len = 0;
    for (size_t c = 0; c < ncols; c++) {
        uint64_t prev_int = 0, prev_real = 0;
        for (size_t r = 0; r < nrows; r++)
            p[len++] = cells[r * ncols + c].type; /* VAL_NULL..VAL_TEXT are types 0..3 */
        for (size_t r = 0; r < nrows; r++) {
            const struct value *v = &cells[r * ncols + c];
            if (v->type == VAL_INT) {
                len += ut_put_uvarint(p + len, zz((uint64_t)v->i - prev_int));
                prev_int = (uint64_t)v->i;
            } else if (v->type == VAL_REAL) {
                uint64_t x = bits_of(v->d) ^ prev_real;
                prev_real = bits_of(v->d);
                for (int i = 0; i < 8; i++)
                    p[len++] = (unsigned char)(x >> (8 * i));
            } else if (v->type == VAL_TEXT) {
                len += ut_put_uvarint(p + len, v->len);
                if (v->len)
                    memcpy(p + len, v->s, v->len);
                len += v->len;
            }
        }
    }
    return len;
}

/* The header as the format describes it: version 1, or 2 with its group and text bytes. */
static size_t put_header(unsigned char *p, uint64_t nrows, uint64_t ncols)
{
    p[0] = 0x8f;
    p[1] = 'P';
    p[2] = 1;
    size_t len = 3;
    len += ut_put_uvarint(p + len, nrows);
    len += ut_put_uvarint(p + len, ncols);
    return len;
}

static size_t put_header2(unsigned char *p, uint64_t nrows, uint64_t ncols, uint64_t group,
                          uint64_t text_bytes)
{
    size_t len = put_header(p, nrows, ncols);
    p[2] = 2;
    len += ut_put_uvarint(p + len, group);
    len += ut_put_uvarint(p + len, text_bytes);
    return len;
}

/* A version 1 blob of the rows into out (initialised here). */
static void v1_blob(const struct value *cells, size_t nrows, size_t ncols, struct buf *out)
{
    size_t cap = nrows * ncols * 11;
    for (size_t i = 0; i < nrows * ncols; i++)
        cap += cells[i].type == VAL_TEXT ? cells[i].len : 0;
    unsigned char *raw = malloc(cap), *blob = malloc(32 + ZSTD_compressBound(cap));
    size_t raw_len = v1_payload(cells, nrows, ncols, raw);
    size_t len = put_header(blob, nrows, ncols);
    len += ut_zstd_frame(blob + len, 32 + ZSTD_compressBound(cap) - len, raw, raw_len, false, NULL);
    buf_init(out, 256u << 20);
    assert_int_equal(buf_append(out, blob, len), 0);
    free(raw);
    free(blob);
}

/* Where the zstd frame of a blob starts: after magic, version and its header's varints. */
static size_t header_len(const struct buf *blob)
{
    size_t len = 3;
    for (int n = blob->data[2] == 1 ? 2 : 4; n > 0; n--)
        while (blob->data[len++] & 0x80)
            ;
    return len;
}

/* The sample rows as a blob of version 1 or 2 (grouped by service). */
static void sample_blob(int version, struct buf *out)
{
    sample_cells(sample, sample_text);
    if (version == 1)
        v1_blob(sample, SAMPLE_ROWS, SAMPLE_COLS, out);
    else
        encode_ok(sample, SAMPLE_ROWS, SAMPLE_COLS, 1, out);
    assert_int_equal(out->data[2], version);
}

/* Version 1 blobs, as databases hold them, decode to their rows. */
static void version1_blobs(void **state)
{
    (void)state;
    struct buf blob;
    struct colpack_block b;
    colpack_block_init(&b);
    struct err e;
    sample_blob(1, &blob);
    assert_int_equal(decode(blob.data, blob.len, &b, &e), 0);
    assert_same_cells(sample, SAMPLE_ROWS, SAMPLE_COLS, &b);
    buf_release(&blob);
    for (int round = 0; round < 20; round++) {
        size_t nrows = 1 + rnd() % 2000, ncols = 1 + rnd() % 12;
        struct value *cells = malloc(nrows * ncols * sizeof *cells);
        fill_random(cells, nrows, ncols);
        v1_blob(cells, nrows, ncols, &blob);
        assert_int_equal(decode(blob.data, blob.len, &b, &e), 0);
        assert_same_cells(cells, nrows, ncols, &b);
        buf_release(&blob);
        free(cells);
    }
    colpack_block_release(&b);
}

/* A failed decode says what is wrong and leaves the block empty. */
static void assert_failed_cleanly(int rc, const struct err *e, const struct colpack_block *b)
{
    assert_int_equal(rc, E_INVALID);
    assert_int_equal(e->code, E_INVALID);
    if (!strstr(e->msg, "the packed block is corrupt: ") && !strstr(e->msg, "not a packed block") &&
        !strstr(e->msg, "a packed block of unknown version"))
        fail_msg("message '%s' does not say the block is corrupt", e->msg);
    assert_true(b->cells == NULL && b->raw == NULL && b->nrows == 0 && b->ncols == 0);
}

/* Every cut of a blob fails with E_INVALID; one block serves every decode, failed or not. */
static void truncated_version(int version)
{
    struct buf blob;
    sample_blob(version, &blob);
    struct colpack_block b;
    colpack_block_init(&b);
    struct err e;
    for (size_t len = 0; len < blob.len; len++) {
        char *cut = malloc(len ? len : 1); /* exact size: ASan sees any overread */
        memcpy(cut, blob.data, len);
        int rc = decode(cut, len, &b, &e);
        if (rc != E_INVALID)
            fail_msg("cut at %zu of %zu: rc %d", len, blob.len, rc);
        assert_failed_cleanly(rc, &e, &b);
        free(cut);
        if (len % 100 == 0) { /* a block that holds rows is emptied by a failed decode */
            assert_int_equal(decode(blob.data, blob.len, &b, &e), 0);
            assert_same_cells(sample, SAMPLE_ROWS, SAMPLE_COLS, &b);
        }
    }
    assert_int_equal(decode(blob.data, blob.len, &b, &e), 0);
    assert_string_equal(e.msg, "");
    assert_same_cells(sample, SAMPLE_ROWS, SAMPLE_COLS, &b);
    assert_int_equal(decode(blob.data, blob.len, &b, &e), 0); /* reused after success */
    assert_same_cells(sample, SAMPLE_ROWS, SAMPLE_COLS, &b);
    colpack_block_release(&b);
    colpack_block_release(&b); /* released twice: still empty */
    assert_null(b.cells);
    buf_release(&blob);
}

static void truncated(void **state)
{
    (void)state;
    truncated_version(1);
    truncated_version(2);
}

/* A decoded block is sane when it holds its counts within bounds and survives a round trip. */
static void assert_sane(const struct colpack_block *b)
{
    assert_true(b->nrows >= 1 && b->nrows <= COLPACK_MAX_ROWS);
    assert_true(b->ncols >= 1 && b->ncols <= COLPACK_MAX_COLUMNS);
    round_trip(b->cells, b->nrows, b->ncols);
}

/* Every single flipped bit is caught (the header by its checks, the payload by zstd's checksum
 * and the size checks), or changes nothing that is decoded, or (in the header's counts) makes
 * another block that is still sane. */
static void flipped_bits_version(int version)
{
    struct buf blob;
    sample_blob(version, &blob);
    unsigned char header[32];
    size_t hlen = header_len(&blob), decoded = 0, changed = 0;
    if (version == 1)
        assert_int_equal(put_header(header, SAMPLE_ROWS, SAMPLE_COLS), hlen);
    else /* the service column groups the rows; the text bytes are the encoder's to count */
        assert_int_equal(put_header2(header, SAMPLE_ROWS, SAMPLE_COLS, 2, 0), 8);
    assert_memory_equal(blob.data, header, version == 1 ? hlen : 7);
    char *bad = malloc(blob.len);
    struct colpack_block b;
    colpack_block_init(&b);
    struct err e;
    for (size_t i = 0; i < blob.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, blob.data, blob.len);
            bad[i] ^= (char)(1 << bit);
            int rc = decode(bad, blob.len, &b, &e);
            if (rc != 0) {
                assert_failed_cleanly(rc, &e, &b);
                continue;
            }
            decoded++;
            if (i >= hlen) { /* what zstd ignores may change: nothing it decodes */
                assert_same_cells(sample, SAMPLE_ROWS, SAMPLE_COLS, &b);
                continue;
            }
            changed++;
            assert_sane(&b);
        }
    }
    print_message("version %d: %zu flips of %zu bits decoded, %zu of them in the header\n", version,
                  decoded, blob.len * 8, changed);
    /* bytes of garbage: never a crash */
    for (size_t i = 0; i < 3000; i++) {
        memcpy(bad, blob.data, blob.len);
        bad[rnd() % blob.len] = (char)rnd();
        bad[rnd() % blob.len] = (char)rnd();
        int rc = decode(bad, blob.len, &b, &e);
        if (rc != 0)
            assert_failed_cleanly(rc, &e, &b);
        else
            assert_sane(&b);
    }
    colpack_block_release(&b);
    free(bad);
    buf_release(&blob);
}

static void flipped_bits(void **state)
{
    (void)state;
    flipped_bits_version(1);
    flipped_bits_version(2);
}

struct forged {
    const char *start; /* when set, 3 bytes in place of the magic and version */
    uint64_t nrows, ncols;
    const unsigned char *raw; /* payload before zstd */
    size_t raw_len;
    bool no_content_size;
    const char *tail; /* bytes after the frame */
    int version;      /* 0 or 1: version 1; 2: with the group and text bytes below */
    uint64_t group, text_bytes;
};

/* A blob with this header and payload in blob (cap bytes); returns its length. */
static size_t forge(const struct forged *f, unsigned char *blob, size_t cap)
{
    size_t len = f->version == 2 ? put_header2(blob, f->nrows, f->ncols, f->group, f->text_bytes)
                                 : put_header(blob, f->nrows, f->ncols);
    if (f->start)
        memcpy(blob, f->start, 3);
    return len +
           ut_zstd_frame(blob + len, cap - len, f->raw, f->raw_len, f->no_content_size, f->tail);
}

/* Decodes the forged blob into b: rc want_rc and, on failure, a message containing needle. */
static void decode_forged(const struct forged *f, struct colpack_block *b, int want_rc,
                          const char *needle)
{
    static unsigned char blob[1 << 16];
    size_t len = forge(f, blob, sizeof blob);
    struct err e;
    int rc = decode(blob, len, b, &e);
    if (rc != want_rc || (needle && !strstr(e.msg, needle)))
        fail_msg("forged %llu rows of %llu columns, %zu bytes: rc %d '%s', wanted %d '%s'",
                 (unsigned long long)f->nrows, (unsigned long long)f->ncols, f->raw_len, rc, e.msg,
                 want_rc, needle ? needle : "");
    if (rc)
        assert_failed_cleanly(rc, &e, b);
}

static void expect_forged(const struct forged *f, const char *needle)
{
    struct colpack_block b;
    colpack_block_init(&b);
    decode_forged(f, &b, E_INVALID, needle);
}

/* 3 rows of 2 columns, as the format describes them:
 *   column 0: integer 1000, NULL, integer 990  (zigzag deltas 2000 = D0 0F, -10 = 19)
 *   column 1: real 1.5, real -1.5, text "ab"    (bits, then bits ^ previous: only the sign) */
static const unsigned char good[] = {
    1, 0,    1,    0xd0, 0x0f, 19, 2, 2, 3, 0, 0,    0, 0,   0,
    0, 0xf8, 0x3f, 0,    0,    0,  0, 0, 0, 0, 0x80, 2, 'a', 'b',
};
static const struct forged f = {NULL, 3, 2, good, sizeof good, false, NULL, 1, 0, 0};

static void forged_good(void **state)
{
    (void)state;
    struct value want[] = {vint(1000),           vreal(bits_of(1.5)), vnull(),
                           vreal(bits_of(-1.5)), vint(990),           vtext("ab", 2)};
    struct colpack_block b;
    colpack_block_init(&b);
    decode_forged(&f, &b, 0, NULL);
    assert_same_cells(want, 3, 2, &b);
    /* the encoder writes the same payload: the same blob, but for zstd's choices */
    round_trip(want, 3, 2);

    /* the least a block can hold: one type byte a cell, all NULL */
    const unsigned char nulls[6] = {0};
    struct forged t = {NULL, 3, 2, nulls, sizeof nulls, false, NULL, 1, 0, 0};
    decode_forged(&t, &b, 0, NULL);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(b.cells[i].type, VAL_NULL);
    /* a failed decode empties the block it was given */
    t.raw_len = 5;
    decode_forged(&t, &b, E_INVALID, "does not declare a size its rows can take");
    colpack_block_release(&b);
}

static void forged_headers(void **state)
{
    (void)state;
    struct forged t = f;
    t.start = "\x8fQ\x01";
    expect_forged(&t, "not a packed block (bad magic)");
    t.start = "P\x8f\x01";
    expect_forged(&t, "not a packed block (bad magic)");
    t.start = "\x8fP\x03";
    expect_forged(&t, "a packed block of unknown version 3");
    t.start = "\x8fP\x00";
    expect_forged(&t, "a packed block of unknown version 0");
    const char *counts = "its row or column count is out of bounds";
    const uint64_t bad_counts[][2] = {
        {0, 2}, {COLPACK_MAX_ROWS + 1, 2}, {UINT64_MAX, 2}, {3, 0}, {3, COLPACK_MAX_COLUMNS + 1},
    };
    for (size_t i = 0; i < sizeof bad_counts / sizeof bad_counts[0]; i++) {
        t = f;
        t.nrows = bad_counts[i][0];
        t.ncols = bad_counts[i][1];
        expect_forged(&t, counts);
    }

    /* blobs too short for a header, or with a count's varint past 64 bits */
    struct {
        const char *bytes;
        size_t len;
        const char *needle;
    } cases[] = {
        {"", 0, "not a packed block"},
        {"\x8f", 1, "not a packed block"},
        {"\x8fP", 2, "not a packed block"},
        {"hello, world", 12, "not a packed block"},
        {"\x8fP\x01", 3, "its header is cut short"},
        {"\x8fP\x01\x03", 4, "its header is cut short"},
        {"\x8fP\x01\x80", 4, "its header is cut short"},
        {"\x8fP\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x01", 14, "its header is cut short"},
        {"\x8fP\x01\x03\x02", 5, "its payload is truncated or followed by other bytes"},
        {"\x8fP\x02\x03\x02", 5, "its header is cut short"},
        {"\x8fP\x02\x03\x02\x01", 6, "its header is cut short"},
        {"\x8fP\x02\x03\x02\x03\x80", 7, "its header is cut short"},
        {"\x8fP\x02\x03\x02\x02\x00", 7, "its payload is truncated or followed by other bytes"},
        {"\x8fP\x02\x03\x02\x03\x00", 7, "its group column or text size is out of bounds"},
        {"\x8fP\x02\x03\x02\x00\x81\x80\x80\x20", 10,
         "its group column or text size is out of bounds"}, /* COLPACK_MAX_RAW_BYTES + 1 */
    };
    struct colpack_block b;
    colpack_block_init(&b);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *exact = malloc(cases[i].len ? cases[i].len : 1);
        memcpy(exact, cases[i].bytes, cases[i].len);
        struct err e;
        int rc = decode(exact, cases[i].len, &b, &e);
        if (rc != E_INVALID || !strstr(e.msg, cases[i].needle))
            fail_msg("case %zu: rc %d '%s', wanted '%s'", i, rc, e.msg, cases[i].needle);
        free(exact);
    }
    /* e may be NULL */
    assert_int_equal(colpack_decode("x", 1, &b, NULL), E_INVALID);
}

/* The frame: no content size, a size the rows cannot take, bytes after it, not a data frame. */
static void forged_frames(void **state)
{
    (void)state;
    const char *sizes = "its payload does not declare a size its rows can take";
    struct forged t = f;
    t.no_content_size = true;
    expect_forged(&t, sizes);
    t = f;
    t.raw_len = 5; /* fewer bytes than cells */
    expect_forged(&t, sizes);
    unsigned char *huge = calloc(1, COLPACK_MAX_RAW_BYTES + 1);
    t.raw = huge;
    t.raw_len = COLPACK_MAX_RAW_BYTES + 1;
    expect_forged(&t, sizes);
    free(huge);
    t = f;
    t.tail = "x";
    expect_forged(&t, "its payload is truncated or followed by other bytes");

    /* a second frame after the first, and a skippable frame in place of the payload */
    static unsigned char two[256];
    unsigned char header[32];
    size_t len = forge(&f, two, sizeof two), hlen = put_header(header, 3, 2);
    memcpy(two + len, two + hlen, len - hlen);
    struct colpack_block b;
    colpack_block_init(&b);
    struct err e;
    assert_failed_cleanly(decode(two, 2 * len - hlen, &b, &e), &e, &b);
    assert_non_null(strstr(e.msg, "followed by other bytes"));
    unsigned char skippable[64];
    len = put_header(skippable, 1, 1);
    memcpy(skippable + len, "\x50\x2a\x4d\x18\x04\x00\x00\x00\x00\x00\x00\x00", 12);
    assert_failed_cleanly(decode(skippable, len + 12, &b, &e), &e, &b);
}

/* The column parser after zstd: each way a payload can lie about its columns. */
static void forged_columns(void **state)
{
    (void)state;
    struct {
        unsigned char raw[32];
        size_t len;
        uint64_t nrows, ncols;
        const char *needle;
    } cases[] = {
        {{1, 4, 1, 2, 2}, 5, 3, 1, "a value has an unknown type"},
        {{0xff}, 1, 1, 1, "a value has an unknown type"},
        {{1, 0x80}, 2, 1, 1, "an integer is cut short"},
        {{1, 1, 2}, 3, 2, 1, "an integer is cut short"},
        {{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
         11,
         1,
         1,
         "an integer is cut short"}, /* a varint of 70 bits */
        {{2, 0, 0, 0, 0, 0, 0, 0}, 8, 1, 1, "a real is cut short"},
        {{2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 11, 2, 1, "a real is cut short"},
        {{3, 0x80}, 2, 1, 1, "a text is cut short"},
        {{3, 3, 'a', 'b'}, 4, 1, 1, "a text is cut short"},
        {{3, 3, 2, 'a', 'b', 3, 'c'}, 7, 2, 1, "a text is cut short"},
        {{3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 'a'},
         11,
         1,
         1,
         "a text is cut short"}, /* a length of 2^63 - 1 */
        {{3, 3, 0, 0}, 4, 2, 2, "a column's types are cut short"},
        {{3, 1, 'x'}, 3, 1, 2, "a column's types are cut short"},
        {{1, 2, 0}, 3, 1, 1, "bytes are left over after the last column"},
        {{0, 0, 0, 0, 0}, 5, 2, 2, "bytes are left over after the last column"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct forged t = {
            NULL, cases[i].nrows, cases[i].ncols, cases[i].raw, cases[i].len, false, NULL, 1, 0, 0};
        expect_forged(&t, cases[i].needle);
    }
    /* the good payload with a byte more */
    unsigned char more[sizeof good + 1];
    memcpy(more, good, sizeof good);
    more[sizeof good] = 0;
    struct forged t = f;
    t.raw = more;
    t.raw_len = sizeof more;
    expect_forged(&t, "bytes are left over after the last column");
}

/* Version 2, as the format describes it: 4 rows of 3 columns grouped by column 0.
 *   column 0: "b", "a", "b", "a"  the group column: plain, row order; "b" is text 1, "a" text 2,
 *                                 so group order is rows 0, 2, 1, 3
 *   column 1: 10, 20, 30, 40      in group order: 10, 30, 20, 40 (zigzag deltas 20 40 19 40)
 *   column 2: "id 7 at b", "id 42 at a", "x\1 c0ffee", NULL
 *             templated, row order, referring to column 0: the template "id \0 at \3" twice
 *             (tokens 7 and 42, then column 0's text of the row), then "x", the escaped byte 1,
 *             " " and a hex run of 6 (tokens c0 ff ee). 28 bytes of texts expanded. */
struct part {
    const unsigned char *p;
    size_t len;
};
#define PART_INIT(...)                                                                             \
    {                                                                                              \
        (const unsigned char[]){__VA_ARGS__}, sizeof((const unsigned char[]){__VA_ARGS__})         \
    }
#define PART(...) ((struct part)PART_INIT(__VA_ARGS__))
static const struct part col0 = PART_INIT(0, 3, 3, 3, 3, 0, 1, 'b', 0, 1, 'a', 1, 2);
static const struct part col1 = PART_INIT(1, 1, 1, 1, 1, 20, 40, 19, 40);
static const struct part col2 =
    PART_INIT(2, 1, 5, 7, 42, 0xc0, 0xff, 0xee, 3, 3, 3, 0, 0, 9, 'i', 'd', ' ', 0, ' ', 'a', 't',
              ' ', 3, 1, 0, 6, 'x', 2, 1, ' ', 1, 6);

struct forged2 {
    struct part cols[3];
    uint64_t group, text_bytes;
};

/* Decodes the version 2 blob of f's columns into b: rc want_rc, and a message with needle. */
static void decode_forged2(const struct forged2 *f2, struct colpack_block *b, int want_rc,
                           const char *needle)
{
    unsigned char raw[256];
    size_t len = 0;
    for (int i = 0; i < 3; i++) {
        if (f2->cols[i].len)
            memcpy(raw + len, f2->cols[i].p, f2->cols[i].len);
        len += f2->cols[i].len;
    }
    struct forged t = {NULL, 4, 3, raw, len, false, NULL, 2, f2->group, f2->text_bytes};
    decode_forged(&t, b, want_rc, needle);
}

static void expect_forged2(struct part c0, struct part c1, struct part c2, uint64_t group,
                           uint64_t text_bytes, const char *needle)
{
    struct forged2 f2 = {{c0, c1, c2}, group, text_bytes};
    struct colpack_block b;
    colpack_block_init(&b);
    decode_forged2(&f2, &b, E_INVALID, needle);
}

static void forged2_good(void **state)
{
    (void)state;
    struct value want[] = {
        vtext("b", 1), vint(10), vtext("id 7 at b", 9),
        vtext("a", 1), vint(20), vtext("id 42 at a", 10),
        vtext("b", 1), vint(30), vtext("x\1 c0ffee", 9),
        vtext("a", 1), vint(40), vnull(),
    };
    struct forged2 f2 = {{col0, col1, col2}, 1, 28};
    struct colpack_block b;
    colpack_block_init(&b);
    decode_forged2(&f2, &b, 0, NULL);
    assert_same_cells(want, 4, 3, &b);
    colpack_block_release(&b);
    round_trip(want, 4, 3); /* and the encoder's own blobs of these rows */
    round_trip_group(want, 4, 3, 0);
}

/* The column parser of version 2: each way a payload can lie. */
static void forged2_columns(void **state)
{
    (void)state;
    expect_forged2(col0, PART(4, 1, 1, 1, 1, 20, 40, 19, 40), col2, 1, 28,
                   "a column has unknown flags");
    expect_forged2(PART(1, 3, 3, 3, 3, 0, 1, 'b', 0, 1, 'a', 1, 2), col1, col2, 1, 28,
                   "the group column is not plain and in row order");
    expect_forged2(PART(2, 0, 0, 3, 3, 3, 3, 0, 1, 'b', 0, 1, 'a', 1, 2), col1, col2, 1, 28,
                   "the group column is not plain and in row order");
    expect_forged2(col0, col1, col2, 0, 28, "a column is in group order without a group");
    /* the reference: to the column itself, past the columns, to a column not decoded yet */
    static const unsigned char tail2[] = {5, 7, 42,  0xc0, 0xff, 0xee, 3,   3,   3,   0,
                                          0, 9, 'i', 'd',  ' ',  0,    ' ', 'a', 't', ' ',
                                          3, 1, 0,   6,    'x',  2,    1,   ' ', 1,   6};
    unsigned char c2[64] = {2, 3};
    memcpy(c2 + 2, tail2, sizeof tail2);
    struct part bad_ref = {c2, 2 + sizeof tail2};
    expect_forged2(col0, col1, bad_ref, 1, 28, "a column refers to a column not decoded before it");
    c2[1] = 4;
    expect_forged2(col0, col1, bad_ref, 1, 28, "a column refers to a column not decoded before it");
    c2[1] = 0; /* no reference: its templates' \3 has nothing to stand for */
    expect_forged2(col0, col1, bad_ref, 1, 28, "a text refers to a text it cannot have");
    c2[1] = 2; /* column 1: decoded, but its values are integers */
    expect_forged2(col0, col1, bad_ref, 1, 28, "a text refers to a text it cannot have");
    /* column 0's text of row 0 is empty: a \3 must not stand for nothing (it would cost
     * nothing, and a template of them work without end) */
    expect_forged2(PART(0, 3, 3, 3, 3, 0, 0, 0, 1, 'a', 1, 2), col1, col2, 1, 27,
                   "a text refers to a text it cannot have");
    expect_forged2(col0, col1, PART(2, 1, 0x7f, 7), 1, 28, "a column's tokens are cut short");
    expect_forged2(col0, col1, PART(2, 1), 1, 28, "a column's tokens are cut short");
    expect_forged2(col0, col1, PART(2), 1, 28, "a column's reference is cut short");
    expect_forged2(col0, col1,
                   PART(2, 1, 6, 7, 42, 0xc0, 0xff, 0xee, 0, 3, 3, 3, 0, 0, 9, 'i', 'd', ' ', 0,
                        ' ', 'a', 't', ' ', 3, 1, 0, 6, 'x', 2, 1, ' ', 1, 6),
                   1, 28, "a column's tokens are left over");
    expect_forged2(col0, col1,
                   PART(2, 1, 0, 3, 3, 3, 0, 0, 9, 'i', 'd', ' ', 0, ' ', 'a', 't', ' ', 3, 1, 0, 6,
                        'x', 2, 1, ' ', 1, 6),
                   1, 28, "a number in a text is cut short");
    /* the hex run: longer than its tokens, and of length 0 */
    expect_forged2(col0, col1,
                   PART(2, 1, 5, 7, 42, 0xc0, 0xff, 0xee, 3, 3, 3, 0, 0, 9, 'i', 'd', ' ', 0, ' ',
                        'a', 't', ' ', 3, 1, 0, 6, 'x', 2, 1, ' ', 1, 7),
                   1, 29, "a hex run in a text is cut short or too long");
    expect_forged2(col0, col1,
                   PART(2, 1, 2, 7, 42, 3, 3, 3, 0, 0, 9, 'i', 'd', ' ', 0, ' ', 'a', 't', ' ', 3,
                        1, 0, 6, 'x', 2, 1, ' ', 1, 0),
                   1, 22, "a hex run in a text is cut short or too long");
    expect_forged2(col0, col1,
                   PART(2, 1, 2, 7, 42, 3, 3, 3, 0, 0, 9, 'i', 'd', ' ', 0, ' ', 'a', 't', ' ', 3,
                        1, 0, 2, 'x', 2),
                   1, 21, "a text ends in an escape");
    expect_forged2(col0, col1, col2, 1, 27, "its texts are longer than declared");
    expect_forged2(col0, col1, col2, 1, 2, "its texts are longer than declared");  /* "id " */
    expect_forged2(col0, col1, col2, 1, 3, "its texts are longer than declared");  /* 7 */
    expect_forged2(col0, col1, col2, 1, 20, "its texts are longer than declared"); /* \1 */
    expect_forged2(col0, col1, PART(0, 3, 3, 3, 0), 1, 0, "a text is cut short");
    expect_forged2(col0, col1, col2, 1, 18, "its texts are longer than declared");
    expect_forged2(col0, col1, col2, 1, 29, "its texts are shorter than declared");
    /* a text that refers to one not seen before, in the group column and in a template */
    expect_forged2(PART(0, 3, 3, 3, 3, 0, 1, 'b', 0, 1, 'a', 3, 2), col1, col2, 1, 28,
                   "a text refers to one not seen before");
    expect_forged2(PART(0, 3, 3, 3, 3, 0, 1, 'b', 0, 1, 'a', 1, 2), col1,
                   PART(2, 1, 5, 7, 42, 0xc0, 0xff, 0xee, 3, 3, 3, 0, 2), 1, 28,
                   "a text refers to one not seen before");
    expect_forged2(col0, col1, PART(0, 3, 3, 3, 0, 0, 1), 1, 0, "a text is cut short");
    expect_forged2(col0, col1, PART(0, 3, 3), 1, 0, "a column's types are cut short");
    expect_forged2(col0, col1, PART(0), 1, 0, "a column's types are cut short");
    expect_forged2(col0, col1, (struct part){NULL, 0}, 1, 0, "a column's flags are cut short");
    expect_forged2(col0, PART(1, 1, 1, 1, 9), col2, 1, 28, "a value has an unknown type");
    expect_forged2(col0, col1, PART(0, 3, 3, 3, 0, 0, 1, 'z', 1, 1, 0), 1, 0,
                   "bytes are left over after the last column");
    /* without a group the columns come in order, and a plain group of rows is fine */
    struct forged2 f2 = {{col0, PART(0, 1, 1, 1, 1, 20, 20, 20, 20), col2}, 0, 28};
    struct colpack_block b;
    colpack_block_init(&b);
    decode_forged2(&f2, &b, 0, NULL);
    for (size_t r = 0; r < 4; r++)
        assert_int_equal(b.cells[r * 3 + 1].i, 10 * (int64_t)(r + 1));
    colpack_block_release(&b);
}

/* The encoder writes version 1 when version 2 would pass the bounds: integers 0..63, reals and
 * texts that make COLPACK_MAX_RAW_BYTES in version 1 take in version 2 a byte a text more (the
 * mark of a text not seen before) and a byte a column (its flags). */
static void falls_back_to_version1(void **state)
{
    (void)state;
    enum { N = BIG_TEXTS, COLS = 3 };
    size_t fixed = N * COLS /* types */ + N /* integer deltas of 1 */ + N * 8 /* reals */ +
                   N * 3 /* text lengths */;
    size_t len = (COLPACK_MAX_RAW_BYTES - fixed) / N;
    assert_int_equal(fixed + N * len, COLPACK_MAX_RAW_BYTES);
    struct value v[N * COLS];
    for (size_t i = 0; i < N; i++) {
        v[i * COLS] = vint((int64_t)i);
        v[i * COLS + 1] = vreal(special_reals[i % NSPECIAL]);
        v[i * COLS + 2] = vtext(noise + i, len);
    }
    struct buf out;
    encode_ok(v, N, COLS, -1, &out);
    assert_int_equal(out.data[2], 1);
    struct colpack_block b;
    colpack_block_init(&b);
    struct err e;
    assert_int_equal(decode(out.data, out.len, &b, &e), 0);
    assert_same_cells(v, N, COLS, &b);
    colpack_block_release(&b);
    buf_release(&out);
    v[2].len -= 100; /* now it fits */
    encode_ok(v, N, COLS, -1, &out);
    assert_int_equal(out.data[2], 2);
    buf_release(&out);
}

/* ---------------------------------------------------------------------------------------------
 * Size: bytes per row on rows shaped like error logs.
 */

#define LOG_ROWS 8192
#define LOG_COLS 6
#define STACKS 10
#define STACK_BYTES 2048

static const char *const messages[] = {
    "connection to db:5432 refused after %d retries",
    "timeout after %d ms waiting for upstream",
    "user %d not found",
    "invalid token for session %d",
    "disk usage at %d%% on /var/lib/data",
    "deadline exceeded calling inventory (%d ms)",
    "retrying job %d: worker crashed",
    "failed to parse request body: unexpected byte at offset %d",
    "rate limit exceeded for api key %d",
    "cache miss storm: %d keys evicted",
};

static const char *const hosts[] = {
    "web-01", "web-02", "web-03", "web-04", "api-01", "api-02", "api-03",
    "api-04", "db-01",  "db-02",  "db-03",  "q-01",   "q-02",   "q-03",
    "w-01",   "w-02",   "w-03",   "w-04",   "w-05",   "w-06",
};

/* A Java-like stack trace of STACK_BYTES, one of STACKS shapes. */
static void make_stack(char *out, int which)
{
    size_t len =
        (size_t)snprintf(out, STACK_BYTES, "java.lang.IllegalStateException: case %d\n", which);
    for (int frame = 0; len < STACK_BYTES - 1; frame++)
        len += (size_t)snprintf(out + len, STACK_BYTES - len,
                                "\tat com.example.svc%d.Handler%d.step%d(Handler%d.java:%d)\n",
                                which, frame % 7, frame, frame % 7, 40 + frame * 13 + which);
}

/* Sum of the values' own sizes: 8 bytes a number, the bytes of a text, nothing for NULL. */
static size_t raw_bytes(const struct value *cells, size_t n)
{
    size_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += cells[i].type == VAL_TEXT ? cells[i].len : cells[i].type == VAL_NULL ? 0 : 8;
    return sum;
}

/* Packs LOG_ROWS error rows (ts, service, level, message, stack or NULL, host), a stack on one
 * row in stack_every; prints and returns the bytes per row. */
static double error_rows(size_t stack_every, size_t *ratio)
{
    static char stacks[STACKS][STACK_BYTES], text[LOG_ROWS][96];
    static struct value cells[LOG_ROWS * LOG_COLS];
    for (int i = 0; i < STACKS; i++)
        make_stack(stacks[i], i);
    int64_t ts = T0;
    for (size_t r = 0; r < LOG_ROWS; r++) {
        struct value *row = &cells[r * LOG_COLS];
        const char *service = services[rnd() % 5], *level = levels[rnd() % 4];
        const char *host = hosts[rnd() % 20];
        /* ~50 templates: 10 messages, each in 5 services' words */
        int len = snprintf(text[r], sizeof text[r], messages[rnd() % 10], (int)(rnd() % 100000));
        len += snprintf(text[r] + len, sizeof text[r] - (size_t)len, " [%s]", service);
        ts += 1 + (int64_t)(rnd() % 5);
        row[0] = vint(ts);
        row[1] = vtext(service, strlen(service));
        row[2] = vtext(level, strlen(level));
        row[3] = vtext(text[r], (size_t)len);
        row[4] = r % stack_every == 0 ? vtext(stacks[rnd() % STACKS], STACK_BYTES - 1) : vnull();
        row[5] = vtext(host, strlen(host));
    }
    size_t len = round_trip(cells, LOG_ROWS, LOG_COLS);
    size_t raw = raw_bytes(cells, LOG_ROWS * LOG_COLS);
    double per = (double)len / LOG_ROWS;
    *ratio = raw / len;
    print_message("error rows, a stack every %zu: %8zu bytes, %6.2f bytes/row, %zux smaller than "
                  "%zu raw bytes\n",
                  stack_every, len, per, *ratio, raw);
    return per;
}

static void size_error_logs(void **state)
{
    (void)state;
    size_t ratio;
    double per = error_rows(1, &ratio);
    assert_true(ratio >= 10);
    assert_true(per < 16);
    per = error_rows(10, &ratio);
    assert_true(ratio >= 10);
    assert_true(per < 14);
}

/* ---------------------------------------------------------------------------------------------
 * Grouping: which column colpack_pick_group picks, and what grouping and templates save on
 * rows like the reference workload's error logs (a random 128-bit trace id each, numbers in the
 * messages, stack traces that repeat their message).
 */

#define KINDS 30
#define KIND_COLS 6

static const char *const kind_texts[] = {
    "order %u not found for customer %u",
    "timeout after %u ms calling inventory (attempt %u)",
    "user u_%u locked after %u failed attempts",
    "refund of %u cents for payment %u rejected",
    "query on orders took %u ms, rows examined %u",
};

/* Rows of ts, kind, message, stack trace (a row in 5), trace id and host, with their texts. */
struct kind_rows {
    size_t n;
    struct value *cells;
    char (*msg)[96], (*stack)[192], (*trace)[33], (*kind)[16];
};

static void kind_rows_make(struct kind_rows *k, size_t n)
{
    k->n = n;
    k->cells = malloc(n * KIND_COLS * sizeof *k->cells);
    k->msg = malloc(n * sizeof *k->msg);
    k->stack = malloc(n * sizeof *k->stack);
    k->trace = malloc(n * sizeof *k->trace);
    k->kind = malloc(n * sizeof *k->kind);
    int64_t ts = T0;
    for (size_t r = 0; r < n; r++) {
        struct value *row = &k->cells[r * KIND_COLS];
        unsigned kind = (unsigned)(rnd() % KINDS);
        snprintf(k->kind[r], sizeof k->kind[r], "Kind%02u", kind);
        int len = snprintf(k->msg[r], sizeof k->msg[r], kind_texts[kind % 5],
                           (unsigned)(rnd() % 99999 + 1), (unsigned)(rnd() % 99999 + 1));
        len += snprintf(k->msg[r] + len, sizeof k->msg[r] - (size_t)len, " [%s]", k->kind[r]);
        int slen = snprintf(k->stack[r], sizeof k->stack[r],
                            "com.example.%s: %s\n\tat com.example.Service.run(Service.java:%u)\n"
                            "\tat java.base/java.lang.Thread.run(Thread.java:833)",
                            k->kind[r], k->msg[r], 20 + kind * 7);
        snprintf(k->trace[r], sizeof k->trace[r], "%016llx%016llx", (unsigned long long)rnd(),
                 (unsigned long long)rnd());
        ts += (int64_t)(rnd() % 4000);
        const char *host = hosts[(kind + rnd() % 3) % 20]; /* a kind's hosts are a few */
        row[0] = vint(ts);
        row[1] = vtext(k->kind[r], strlen(k->kind[r]));
        row[2] = vtext(k->msg[r], (size_t)len);
        row[3] = rnd() % 5 == 0 ? vtext(k->stack[r], (size_t)slen) : vnull();
        row[4] = vtext(k->trace[r], 32);
        row[5] = vtext(host, strlen(host));
    }
}

static void kind_rows_free(struct kind_rows *k)
{
    free(k->cells);
    free(k->msg);
    free(k->stack);
    free(k->trace);
    free(k->kind);
}

static void picks_group(void **state)
{
    (void)state;
    struct kind_rows k;
    kind_rows_make(&k, 4096);
    size_t n = k.n;
    assert_int_equal(colpack_pick_group(k.cells, n, KIND_COLS), 1); /* the kind */

    /* the only texts all differ (trace ids): nothing to group by */
    struct value *two = malloc(n * 2 * sizeof *two);
    for (size_t r = 0; r < n; r++) {
        two[r * 2] = k.cells[r * KIND_COLS];
        two[r * 2 + 1] = k.cells[r * KIND_COLS + 4];
    }
    assert_int_equal(colpack_pick_group(two, n, 2), -1);
    for (size_t r = 0; r < n; r++) /* integers only */
        two[r * 2 + 1] = vint((int64_t)(r % 7));
    assert_int_equal(colpack_pick_group(two, n, 2), -1);
    assert_int_equal(colpack_pick_group(two, 0, 2), -1);
    assert_int_equal(colpack_pick_group(two, n, 0), -1);
    two[5].type = 9; /* rows colpack_encode refuses */
    assert_int_equal(colpack_pick_group(two, n, 2), -1);
    free(two);
    kind_rows_free(&k);
}

/* 8192 such rows: what each row costs grouped by its kind, and without a group. */
static void size_grouped_logs(void **state)
{
    (void)state;
    struct kind_rows k;
    kind_rows_make(&k, 8192);
    double n = (double)k.n;
    struct buf v1;
    v1_blob(k.cells, k.n, KIND_COLS, &v1);
    double plain = (double)round_trip_group(k.cells, k.n, KIND_COLS, -1) / n;
    double grouped = (double)round_trip_group(k.cells, k.n, KIND_COLS, 1) / n;
    double raw = (double)raw_bytes(k.cells, k.n * KIND_COLS) / n;
    print_message("kind rows: %.1f raw bytes/row; packed %.2f bytes/row grouped by kind, %.2f "
                  "without a group; as version 1 (zstd level 3) %.2f\n",
                  raw, grouped, plain, (double)v1.len / n);
    /* noise alone is about 22.5 bytes a row: the trace id's 16 random bytes, the two numbers'
     * 33 bits, the times' 12, the kind's 5 and the host's 1.6 */
    assert_true(grouped < 27);
    assert_true(grouped < plain);
    assert_true(grouped * 1.3 < (double)v1.len / n);
    buf_release(&v1);
    kind_rows_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_value),
        cmocka_unit_test(extreme_integers),
        cmocka_unit_test(special_reals_round_trip),
        cmocka_unit_test(texts),
        cmocka_unit_test(templated_texts),
        cmocka_unit_test(random_mixes),
        cmocka_unit_test(most_rows),
        cmocka_unit_test(most_columns),
        cmocka_unit_test(largest_block),
        cmocka_unit_test(appends),
        cmocka_unit_test(encode_errors),
        cmocka_unit_test(truncated),
        cmocka_unit_test(flipped_bits),
        cmocka_unit_test(forged_good),
        cmocka_unit_test(forged_headers),
        cmocka_unit_test(forged_frames),
        cmocka_unit_test(forged_columns),
        cmocka_unit_test(version1_blobs),
        cmocka_unit_test(forged2_good),
        cmocka_unit_test(forged2_columns),
        cmocka_unit_test(falls_back_to_version1),
        cmocka_unit_test(size_error_logs),
        cmocka_unit_test(picks_group),
        cmocka_unit_test(size_grouped_logs),
    };
    return cmocka_run_group_tests(tests, fill_noise, NULL);
}
