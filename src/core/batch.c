/*
 * Record batches: rows of one table as typed values, in one arena, so a whole request is parsed,
 * validated, handed to the writer and freed as a unit.
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void batch_init(struct batch *b, const struct table *t)
{
    b->table = t;
    b->nrows = 0;
    b->cap_rows = 0;
    b->values = NULL;
    arena_init(&b->arena);
}

void batch_release(struct batch *b)
{
    arena_release(&b->arena);
    free(b->values);
    b->values = NULL;
    b->nrows = b->cap_rows = 0;
}

void batch_reserve(struct batch *b, size_t rows)
{
    if (rows <= b->cap_rows)
        return;
    /* values live outside the arena so growth can reuse memory (realloc) instead of
     * abandoning the old block: a big request then costs its rows once, not twice */
    struct value *v = realloc(b->values, rows * b->table->ncolumns * sizeof *v);
    if (!v) {
        fprintf(stderr, "opsdb: out of memory growing a batch to %zu rows\n", rows);
        abort();
    }
    b->values = v;
    b->cap_rows = rows;
}

struct value *batch_add_row(struct batch *b)
{
    size_t ncol = b->table->ncolumns;
    if (b->nrows == b->cap_rows)
        batch_reserve(b, b->cap_rows ? b->cap_rows * 2 : 64);
    struct value *row = b->values + b->nrows * ncol;
    memset(row, 0, ncol * sizeof *row);
    b->nrows++;
    return row;
}

void batch_drop_last(struct batch *b)
{
    if (b->nrows)
        b->nrows--;
}

void rejects_init(struct rejects *r, const char *row_word)
{
    r->count = 0;
    r->n = 0;
    r->row_word = row_word;
    r->last_row = SIZE_MAX;
}

void rejects_add(struct rejects *r, size_t row, const char *field, const char *fmt, ...)
{
    /* count rows, not fields: a row with two bad fields is one rejected row */
    if (r->last_row != row)
        r->count++;
    r->last_row = row;
    if (r->n >= REJECTS_MAX)
        return;
    struct reject *it = &r->items[r->n++];
    it->row = row;
    snprintf(it->field, sizeof it->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->reason, sizeof it->reason, fmt, ap);
    va_end(ap);
}
