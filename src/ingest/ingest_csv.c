/*
 * CSV ingestion (RFC 4180): a header line names the columns, each following record is a row.
 * Quoted fields may hold commas, quotes ("") and newlines. Empty cells are NULL.
 */
#include "ingest/ingest_int.h"

#include <string.h>

#define CSV_MAX_COLUMNS 64

/* Reads one field starting at *pos into out (unescaped, NUL-terminated). Returns the delimiter
 * that ended it: ',', '\n' or 0 at the end of the data; or FIELD_UNTERMINATED, FIELD_BAD_QUOTE
 * (text after a closing quote) or FIELD_TOO_LONG (longer than out->max). */
enum { FIELD_UNTERMINATED = -1, FIELD_BAD_QUOTE = -2, FIELD_TOO_LONG = -3 };

static int read_field(const char *d, size_t len, size_t *pos, struct buf *out)
{
    size_t i = *pos;
    out->len = 0;
    if (buf_append(out, "", 0) != 0)
        return FIELD_TOO_LONG;
    if (i < len && d[i] == '"') {
        i++;
        for (;;) {
            if (i >= len)
                return FIELD_UNTERMINATED;
            if (d[i] == '"') {
                if (i + 1 < len && d[i + 1] == '"') {
                    if (buf_putc(out, '"') != 0)
                        return FIELD_TOO_LONG;
                    i += 2;
                    continue;
                }
                i++;
                break;
            }
            if (buf_putc(out, d[i++]) != 0)
                return FIELD_TOO_LONG;
        }
        if (i < len && d[i] != ',' && d[i] != '\n' && d[i] != '\r')
            return FIELD_BAD_QUOTE;
    } else {
        size_t start = i;
        while (i < len && d[i] != ',' && d[i] != '\n')
            i++;
        size_t end = i;
        if (end > start && d[end - 1] == '\r')
            end--;
        if (buf_append(out, d + start, end - start) != 0)
            return FIELD_TOO_LONG;
    }
    if (i < len && d[i] == '\r')
        i++;
    int delim = i < len ? d[i] : 0;
    *pos = i < len ? i + 1 : len;
    return delim;
}

static const char *field_error(int delim)
{
    return delim == FIELD_UNTERMINATED ? "unterminated quoted field"
           : delim == FIELD_BAD_QUOTE  ? "text after the closing quote of a field"
                                       : "field is longer than 1 MiB";
}

static int read_header(const char *d, size_t len, size_t *pos, struct batch *b, int *cols,
                       size_t *ncols, struct rejects *r)
{
    struct buf f;
    buf_init(&f, 4096);
    int delim;
    *ncols = 0;
    do {
        delim = read_field(d, len, pos, &f);
        if (delim < 0) {
            rejects_add(r, 1, "", "header: %s", field_error(delim));
            break;
        }
        if (*ncols >= CSV_MAX_COLUMNS) {
            rejects_add(r, 1, "", "the header has more than %d columns", CSV_MAX_COLUMNS);
            break;
        }
        int col = schema_column(b->table, f.data ? f.data : "");
        if (col < 0)
            rejects_add(r, 1, f.data ? f.data : "",
                        "header names unknown column '%.40s' for table %s", f.data ? f.data : "",
                        b->table->name);
        for (size_t k = 0; col >= 0 && k < *ncols; k++)
            if (cols[k] == col)
                rejects_add(r, 1, f.data, "header names column '%.40s' twice", f.data);
        cols[(*ncols)++] = col;
    } while (delim == ',');
    buf_release(&f);
    return r->count ? E_INVALID : 0;
}

int ingest_parse_csv(const struct ingest_ctx *ctx, const char *d, size_t len, struct batch *b,
                     struct rejects *r)
{
    int cols[CSV_MAX_COLUMNS];
    size_t ncols, pos = 0, line = 2, rows = 0; /* 1-based lines; the header is line 1 */
    if (len == 0) {
        rejects_add(r, 0, "", "the body is empty: send a header line and rows");
        return E_INVALID;
    }
    if (read_header(d, len, &pos, b, cols, &ncols, r) != 0)
        return E_INVALID;
    struct buf f;
    buf_init(&f, 1 << 20);
    while (pos < len) {
        if (d[pos] == '\n' || (d[pos] == '\r' && pos + 1 < len && d[pos + 1] == '\n')) {
            pos += d[pos] == '\r' ? 2 : 1; /* blank line */
            line++;
            continue;
        }
        if (++rows > ctx->max_rows) {
            buf_release(&f);
            return E_LIMIT;
        }
        size_t row_start = pos;
        batch_add_row(b);
        bool ok = true;
        size_t k = 0;
        int delim;
        do {
            delim = read_field(d, len, &pos, &f);
            if (delim < 0) {
                const char *col = k < ncols && cols[k] >= 0 ? b->table->columns[cols[k]].name : "";
                rejects_add(r, line, col, "%s%s%s", col, *col ? ": " : "", field_error(delim));
                ok = false;
                break;
            }
            if (k < ncols &&
                !ingest_set_text(ctx, b, cols[k], f.data ? f.data : "", f.len, line, r))
                ok = false;
            k++;
        } while (delim == ',');
        if (ok && k != ncols) {
            rejects_add(r, line, "", "has %zu fields, the header has %zu", k, ncols);
            ok = false;
        }
        ingest_finish_row(ctx, b, ok, line, r);
        /* the next row starts after every newline this one used (quoted fields may hold some) */
        for (size_t k2 = row_start; k2 < pos; k2++)
            line += d[k2] == '\n';
        if (delim < 0)
            break;
    }
    buf_release(&f);
    return r->count ? E_INVALID : 0;
}
