/*
 * libFuzzer target: column-pack blocks of event rows (src/store/colpack.c). Input: a selector
 * byte, then
 *
 *   0 (mod 4)   a blob for colpack_decode: it decodes, or fails with a message and an empty
 *               block; what decodes is within the bounds and survives an encode/decode round
 *               trip bit for bit.
 *   2 (mod 4)   the same checks on a blob made here: a byte L, L header bytes, then the
 *               payload before zstd, which is compressed with its size and a checksum.
 *               Mutations of a real blob's payload rarely get past zstd's checksum; this way
 *               they reach the column parser.
 *   odd         rows for colpack_encode: a byte b of the column count (1 + b % 64) and the
 *               group column (b >> 6: 0 none, 1 the one colpack_pick_group picks, 2 the first
 *               column, 3 the last), then cells in row order, each a type byte (bits 0-1 the
 *               type; for an integer bit 2 picks 8 bytes over a 1-byte step from the column's
 *               previous one) and its bytes: 8 for a real, a length byte and that many bytes for
 *               a text. Whole rows must come back bit for bit.
 *
 * Blobs that decode are encoded again without a group and grouped by their last column. The
 * seeds are encoded blocks in each of the first two forms (versions 1 and 2), and row sets.
 */
#include "fuzz_common.h"
#include "store/colpack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CELLS (1 << 16)

static struct value fuzz_cells[FUZZ_CELLS];

static bool same_value(const struct value *a, const struct value *b)
{
    if (a->type != b->type)
        return false;
    if (a->type == VAL_INT || a->type == VAL_REAL)
        return memcmp(&a->i, &b->i, sizeof a->i) == 0; /* reals by their bits */
    if (a->type == VAL_TEXT)
        return a->len == b->len && (a->len == 0 || memcmp(a->s, b->s, a->len) == 0);
    return true;
}

/* Encodes cells grouped by group and decodes them again: the same values, bit for bit. */
static void round_trip(const struct value *cells, size_t nrows, size_t ncols, int group)
{
    struct buf blob;
    buf_init(&blob, 256u << 20);
    struct err e;
    err_clear(&e);
    int rc = colpack_encode(cells, nrows, ncols, group, &blob, &e);
    fuzz_check(rc == 0, "encoding %zu rows of %zu columns (group %d): rc %d: %s", nrows, ncols,
               group, rc, e.msg);
    struct colpack_block b;
    colpack_block_init(&b);
    rc = colpack_decode(blob.data, blob.len, &b, &e);
    fuzz_check(rc == 0, "decoding what was encoded: rc %d: %s", rc, e.msg);
    fuzz_check(b.nrows == nrows && b.ncols == ncols, "%zu x %zu came back as %zu x %zu", nrows,
               ncols, b.nrows, b.ncols);
    for (size_t i = 0; i < nrows * ncols; i++)
        fuzz_check(same_value(&cells[i], &b.cells[i]), "row %zu, column %zu differs", i / ncols,
                   i % ncols);
    colpack_block_release(&b);
    buf_release(&blob);
}

static void decode_blob(const uint8_t *blob, size_t len)
{
    struct err e;
    err_clear(&e);
    struct colpack_block b;
    colpack_block_init(&b);
    int rc = colpack_decode(blob, len, &b, &e);
    fuzz_check(rc == 0 || rc == E_INVALID, "rc %d", rc);
    if (rc != 0) {
        fuzz_check(e.code == rc && e.msg[0] != '\0', "failure %d without a message", rc);
        fuzz_check(b.cells == NULL && b.raw == NULL && b.nrows == 0 && b.ncols == 0,
                   "failure with a block of %zu x %zu", b.nrows, b.ncols);
        return;
    }
    fuzz_check(e.msg[0] == '\0', "success with a message: %s", e.msg);
    fuzz_check(b.nrows >= 1 && b.nrows <= COLPACK_MAX_ROWS && b.ncols >= 1 &&
                   b.ncols <= COLPACK_MAX_COLUMNS,
               "%zu rows of %zu columns", b.nrows, b.ncols);
    for (size_t i = 0; i < b.nrows * b.ncols; i++)
        fuzz_check(b.cells[i].type <= VAL_TEXT, "cell %zu has type %u", i, b.cells[i].type);
    round_trip(b.cells, b.nrows, b.ncols, -1);
    round_trip(b.cells, b.nrows, b.ncols, (int)b.ncols - 1);
    colpack_block_release(&b);
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

/* Reads one cell at data (size bytes left) into v; returns the bytes used, 0 at the end. */
static size_t read_cell(const uint8_t *data, size_t size, int64_t *prev_int, struct value *v)
{
    struct value cell = {.type = (uint8_t)(data[0] & 3)};
    size_t used = 1;
    if (cell.type == VAL_INT && (data[0] & 4)) {
        if (size < 9)
            return 0;
        uint64_t u;
        memcpy(&u, data + 1, sizeof u);
        memcpy(&cell.i, &u, sizeof cell.i);
        used = 9;
    } else if (cell.type == VAL_INT) {
        if (size < 2)
            return 0;
        cell.i = (int64_t)((uint64_t)*prev_int + (uint64_t)(int8_t)data[1]); /* wraps */
        used = 2;
    } else if (cell.type == VAL_REAL) {
        if (size < 9)
            return 0;
        memcpy(&cell.d, data + 1, sizeof cell.d); /* any bits: NaN payloads, subnormals */
        used = 9;
    } else if (cell.type == VAL_TEXT) {
        if (size < 2 || data[1] > size - 2)
            return 0;
        cell.len = data[1];
        cell.s = cell.len ? (const char *)data + 2 : NULL; /* an empty text may point nowhere */
        used = 2 + cell.len;
    }
    if (cell.type == VAL_INT)
        *prev_int = cell.i;
    *v = cell;
    return used;
}

static void encode_rows(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t ncols = 1 + data[0] % COLPACK_MAX_COLUMNS, n = 0;
    unsigned grouping = data[0] >> 6;
    int64_t prev_int[COLPACK_MAX_COLUMNS] = {0};
    data++;
    size--;
    while (size > 0 && n < FUZZ_CELLS) {
        size_t used = read_cell(data, size, &prev_int[n % ncols], &fuzz_cells[n]);
        if (used == 0)
            break;
        data += used;
        size -= used;
        n++;
    }
    if (n < ncols)
        return;
    size_t nrows = n / ncols;
    int group = grouping == 0   ? -1
                : grouping == 1 ? colpack_pick_group(fuzz_cells, nrows, ncols)
                : grouping == 2 ? 0
                                : (int)ncols - 1;
    fuzz_check(group >= -1 && group < (int)ncols, "picked group %d of %zu columns", group, ncols);
    round_trip(fuzz_cells, nrows, ncols, group);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* an exact-size copy, so ASan sees a read one past the end */
    uint8_t *copy = malloc(size - 1 ? size - 1 : 1);
    memcpy(copy, data + 1, size - 1);
    if (data[0] & 1)
        encode_rows(copy, size - 1);
    else if (data[0] & 2)
        decode_payload(copy, size - 1);
    else
        decode_blob(copy, size - 1);
    free(copy);
    return 0;
}
