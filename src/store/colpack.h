/*
 * Private to store/: the column-pack codec for cold event rows. A block is up to
 * COLPACK_MAX_ROWS rows of one table stored column after column (format in colpack.c) and
 * compressed with zstd: a column of one service name, status code or host repeated a thousand
 * times, or of timestamps a few milliseconds apart, is nearly free, which a row store with its
 * indexes cannot be. Rows can be grouped by a column (the same error's rows, one handler's rows
 * stored together), repeated texts are stored once and numbers and hex ids are taken out of
 * texts, so that log messages and stack traces cost little more than what varies in them.
 *
 * The functions keep no state: any thread may call them at any time.
 */
#ifndef OPSDB_STORE_COLPACK_H
#define OPSDB_STORE_COLPACK_H

#include "core/core.h"

/* Bounds of one block, whatever a blob claims: what a decoder allocates stays below them. */
#define COLPACK_MAX_ROWS (1u << 16)
#define COLPACK_MAX_COLUMNS 64u
#define COLPACK_MAX_RAW_BYTES (64u << 20)

/* Appends to out the encoding of nrows rows of ncols values (cells row-major, nrows * ncols;
 * VAL_TEXT may hold any bytes), its rows grouped by column group (0..ncols - 1) or not (-1).
 * Returns 0, or E_INVALID (no rows, too many rows or columns, a group column that is not one of
 * them, a value of unknown type), E_LIMIT (the rows take more than COLPACK_MAX_RAW_BYTES
 * unpacked, or out has no room), E_NOMEM; on error out is unchanged and e says why. */
int colpack_encode(const struct value *cells, size_t nrows, size_t ncols, int group,
                   struct buf *out, struct err *e);

/* The column to group rows like these by for colpack_encode, or -1 for none: the one (among
 * the columns of texts with at most one distinct text in 4 rows) that makes the first 2048 of
 * them pack smallest. It packs those once per candidate, so call it once on a sample (the first
 * block of a partition) and use its answer for the blocks like it. -1 too on any error (no
 * memory, rows colpack_encode refuses): grouping only saves bytes. */
int colpack_pick_group(const struct value *cells, size_t nrows, size_t ncols);

/* A decoded block: its values, row-major; text values point into the block's own memory (not
 * NUL-terminated: use len). */
struct colpack_block {
    size_t nrows, ncols;
    struct value *cells;
    uint8_t *raw; /* the unpacked bytes the text values point into */
};

void colpack_block_init(struct colpack_block *b);
void colpack_block_release(struct colpack_block *b);

/* Decodes blob into b (released first, so a block can be reused). Returns 0, or E_INVALID
 * with a message for any malformed, truncated or corrupt blob (it never reads out of bounds and
 * allocates within the bounds above whatever the bytes), E_NOMEM. On error b is empty. */
int colpack_decode(const void *blob, size_t len, struct colpack_block *b, struct err *e);

#endif
