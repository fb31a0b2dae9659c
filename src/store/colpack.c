/*
 * The column-pack codec: rows of an event table as one compressed blob, column after column. A
 * blob comes back from disk, so the decoder trusts nothing in it.
 *
 * Format, version 1 (uv, zz and the int64 <-> uint64 mapping as in varint.h):
 *
 *   header   8F 50          magic ('P' after a non-ASCII byte: text is never a block)
 *            01             version
 *            uv nrows       1..COLPACK_MAX_ROWS
 *            uv ncols       1..COLPACK_MAX_COLUMNS
 *   payload  one zstd frame (with its content size and checksum) filling the rest of the blob;
 *            its content size lies within nrows * ncols .. COLPACK_MAX_RAW_BYTES and the content
 *            is used up exactly. For each column in turn:
 *            types    nrows bytes: 0 NULL, 1 integer, 2 real, 3 text
 *            values   in row order, for each non-NULL value:
 *                     integer  zz (v - the column's previous integer), the first against 0:
 *                              timestamps in order, ids and counts take a byte or two
 *                     real     8 bytes, little-endian, of bits ^ the previous real's bits
 *                     text     uv length, then the bytes
 * Keeping a column's type bytes together and its values together gives zstd long runs of the
 * same few patterns; a column of repeated strings becomes back-references.
 */
#include "store/colpack.h"
#include "store/varint.h"
#include "store/zstd_ctx.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

enum {
    MAGIC0 = 0x8f,
    MAGIC1 = 'P',
    VERSION = 1,
    HEADER_MAX = 3 + 2 * 10,
    ZSTD_LEVEL = 6, /* cold data is packed once and read rarely: trade a little time for size */
    TYPE_NULL = 0,
    TYPE_INT = 1,
    TYPE_REAL = 2,
    TYPE_TEXT = 3,
};

static uint64_t bits_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double double_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* Bytes the unpacked form takes, or 0 with e set when it cannot be packed. */
static size_t raw_size(const struct value *cells, size_t nrows, size_t ncols, struct err *e)
{
    size_t size = nrows * ncols;
    for (size_t c = 0; c < ncols; c++) {
        uint64_t prev = 0;
        for (size_t r = 0; r < nrows; r++) {
            const struct value *v = &cells[r * ncols + c];
            uint8_t tmp[10];
            switch (v->type) {
            case VAL_NULL:
                break;
            case VAL_INT:
                size += put_uvarint(tmp, zigzag(u64_of(v->i) - prev));
                prev = u64_of(v->i);
                break;
            case VAL_REAL:
                size += 8;
                break;
            case VAL_TEXT:
                size += put_uvarint(tmp, v->len) + v->len;
                break;
            default:
                err_set(e, E_INVALID, "row %zu, column %zu: a value of unknown type %u", r, c,
                        v->type);
                return 0;
            }
            if (size > COLPACK_MAX_RAW_BYTES) {
                err_set(e, E_LIMIT, "%zu rows take more than %u bytes unpacked", nrows,
                        COLPACK_MAX_RAW_BYTES);
                return 0;
            }
        }
    }
    return size;
}

static size_t put_column(uint8_t *p, const struct value *cells, size_t nrows, size_t ncols,
                         size_t c)
{
    static const uint8_t tags[] = {TYPE_NULL, TYPE_INT, TYPE_REAL, TYPE_TEXT};
    size_t len = 0;
    for (size_t r = 0; r < nrows; r++)
        p[len++] = tags[cells[r * ncols + c].type];
    uint64_t prev_int = 0, prev_real = 0;
    for (size_t r = 0; r < nrows; r++) {
        const struct value *v = &cells[r * ncols + c];
        if (v->type == VAL_INT) {
            len += put_uvarint(p + len, zigzag(u64_of(v->i) - prev_int));
            prev_int = u64_of(v->i);
        } else if (v->type == VAL_REAL) {
            uint64_t x = bits_of(v->d) ^ prev_real;
            prev_real = bits_of(v->d);
            for (int i = 0; i < 8; i++)
                p[len++] = (uint8_t)(x >> (8 * i));
        } else if (v->type == VAL_TEXT) {
            len += put_uvarint(p + len, v->len);
            if (v->len) /* an empty text may point nowhere (s NULL): memcpy must not see it */
                memcpy(p + len, v->s, v->len);
            len += v->len;
        }
    }
    return len;
}

int colpack_encode(const struct value *cells, size_t nrows, size_t ncols, struct buf *out,
                   struct err *e)
{
    if (nrows == 0 || nrows > COLPACK_MAX_ROWS || ncols == 0 || ncols > COLPACK_MAX_COLUMNS)
        return err_set(e, E_INVALID, "a block holds 1..%u rows of 1..%u columns, not %zu of %zu",
                       COLPACK_MAX_ROWS, COLPACK_MAX_COLUMNS, nrows, ncols);
    size_t raw_len = raw_size(cells, nrows, ncols, e);
    if (raw_len == 0)
        return e->code;
    size_t zcap = HEADER_MAX + ZSTD_compressBound(raw_len);
    uint8_t *raw = malloc(raw_len), *blob = malloc(zcap);
    ZSTD_CCtx *cctx = zstd_thread_cctx(ZSTD_LEVEL);
    int rc = 0;
    if (!raw || !blob || !cctx) {
        rc = err_set(e, E_NOMEM, "no memory to pack %zu rows (%zu bytes)", nrows, raw_len);
        goto out;
    }
    size_t used = 0;
    for (size_t c = 0; c < ncols; c++)
        used += put_column(raw + used, cells, nrows, ncols, c);
    size_t hlen = 0;
    blob[hlen++] = MAGIC0;
    blob[hlen++] = MAGIC1;
    blob[hlen++] = VERSION;
    hlen += put_uvarint(blob + hlen, nrows);
    hlen += put_uvarint(blob + hlen, ncols);
    size_t z = ZSTD_compress2(cctx, blob + hlen, zcap - hlen, raw, used);
    if (ZSTD_isError(z)) { /* with a bound-sized output only allocation can fail */
        rc = err_set(e, E_NOMEM, "compressing %zu rows failed: %s", nrows, ZSTD_getErrorName(z));
        goto out;
    }
    rc = buf_append(out, blob, hlen + z);
    if (rc == E_LIMIT)
        err_set(e, rc, "no room for a block of %zu bytes in the output (%zu of %zu bytes used)",
                hlen + z, out->len, out->max);
    else if (rc)
        err_set(e, rc, "no memory to append a block of %zu bytes", hlen + z);
out:
    free(blob);
    free(raw);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding.
 */

void colpack_block_init(struct colpack_block *b)
{
    memset(b, 0, sizeof *b);
}

void colpack_block_release(struct colpack_block *b)
{
    free(b->cells);
    free(b->raw);
    colpack_block_init(b);
}

static int corrupt(struct err *e, const char *what)
{
    return err_set(e, E_INVALID, "the packed block is corrupt: %s", what);
}

static int decode_column(struct reader *r, struct colpack_block *b, size_t c, struct err *e)
{
    size_t nrows = b->nrows, ncols = b->ncols;
    if (r->len - r->pos < nrows)
        return corrupt(e, "a column's types are cut short");
    const uint8_t *types = r->p + r->pos;
    r->pos += nrows;
    uint64_t prev_int = 0, prev_real = 0;
    for (size_t row = 0; row < nrows; row++) {
        struct value *v = &b->cells[row * ncols + c];
        uint64_t u;
        switch (types[row]) {
        case TYPE_NULL:
            v->type = VAL_NULL;
            break;
        case TYPE_INT:
            if (!get_zz(r, &u))
                return corrupt(e, "an integer is cut short");
            prev_int += u;
            v->type = VAL_INT;
            v->i = i64_of(prev_int);
            break;
        case TYPE_REAL:
            if (r->len - r->pos < 8)
                return corrupt(e, "a real is cut short");
            u = 0;
            for (int i = 0; i < 8; i++)
                u |= (uint64_t)r->p[r->pos++] << (8 * i);
            prev_real ^= u;
            v->type = VAL_REAL;
            v->d = double_of(prev_real);
            break;
        case TYPE_TEXT:
            if (!get_uvarint(r, &u) || u > r->len - r->pos)
                return corrupt(e, "a text is cut short");
            v->type = VAL_TEXT;
            v->s = (const char *)r->p + r->pos;
            v->len = (uint32_t)u;
            r->pos += (size_t)u;
            break;
        default:
            return corrupt(e, "a value has an unknown type");
        }
    }
    return 0;
}

int colpack_decode(const void *blob, size_t len, struct colpack_block *b, struct err *e)
{
    colpack_block_release(b);
    struct reader h = {blob, len, 3};
    const uint8_t *p = blob;
    uint64_t nrows, ncols;
    if (len < 3 || p[0] != MAGIC0 || p[1] != MAGIC1)
        return err_set(e, E_INVALID, "not a packed block (bad magic)");
    if (p[2] != VERSION)
        return err_set(e, E_INVALID, "a packed block of unknown version %u", p[2]);
    if (!get_uvarint(&h, &nrows) || !get_uvarint(&h, &ncols))
        return corrupt(e, "its header is cut short");
    if (nrows == 0 || nrows > COLPACK_MAX_ROWS || ncols == 0 || ncols > COLPACK_MAX_COLUMNS)
        return corrupt(e, "its row or column count is out of bounds");
    const uint8_t *z = p + h.pos;
    size_t zlen = len - h.pos;
    size_t frame_len = ZSTD_findFrameCompressedSize(z, zlen);
    if (ZSTD_isError(frame_len) || frame_len != zlen)
        return corrupt(e, "its payload is truncated or followed by other bytes");
    /* the frame header descriptor follows the 4-byte magic; bit 2 says a checksum ends it */
    if (zlen < 5 || !(z[4] & 0x04))
        return corrupt(e, "its payload is a zstd frame without a checksum");
    unsigned long long size = ZSTD_getFrameContentSize(z, zlen);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ||
        size < nrows * ncols || size > COLPACK_MAX_RAW_BYTES)
        return corrupt(e, "its payload does not declare a size its rows can take");
    b->nrows = (size_t)nrows;
    b->ncols = (size_t)ncols;
    b->raw = malloc((size_t)size);
    b->cells = malloc(b->nrows * b->ncols * sizeof *b->cells);
    int rc = 0;
    if (!b->raw || !b->cells) {
        rc = err_set(e, E_NOMEM, "no memory to unpack %zu rows", b->nrows);
        goto fail;
    }
    ZSTD_DCtx *dctx = zstd_thread_dctx();
    size_t got = dctx ? ZSTD_decompressDCtx(dctx, b->raw, (size_t)size, z, zlen) : 0;
    if (!dctx) {
        rc = err_set(e, E_NOMEM, "no memory for a zstd context to unpack %zu rows", b->nrows);
        goto fail;
    }
    if (ZSTD_isError(got) || got != size) {
        rc = corrupt(e, ZSTD_isError(got) ? ZSTD_getErrorName(got) : "its payload is short");
        goto fail;
    }
    struct reader r = {b->raw, got, 0};
    for (size_t c = 0; c < b->ncols && rc == 0; c++)
        rc = decode_column(&r, b, c, e);
    if (rc == 0 && r.pos != r.len)
        rc = corrupt(e, "bytes are left over after the last column");
    if (rc == 0)
        return 0;
fail:
    colpack_block_release(b);
    return rc;
}
