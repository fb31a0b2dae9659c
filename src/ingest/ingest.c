/*
 * What the parsers share: the parse context built from the configuration, field conversion with
 * rejection messages, and row completion (validation, dropping bad rows).
 */
#include "ingest/ingest_int.h"

#include <stdio.h>

void ingest_ctx_init(struct ingest_ctx *ctx, const struct config *cfg,
                     const struct fingerprint_rules *fp, enum time_precision precision)
{
    size_t n;
    schema_tables(&n);
    ctx->validate.now_ms = time_now_ms();
    ctx->validate.max_future_ms = cfg->max_future_ms;
    ctx->validate.precision = precision;
    ctx->validate.fingerprints = fp;
    for (size_t i = 0; i < n && i < 16; i++)
        ctx->retention_days[i] = (int)cfg->retention_days[i];
    ctx->validate.retention_days = ctx->retention_days;
    ctx->max_rows = (size_t)cfg->max_rows_per_request;
    ctx->validate.max_labels = (size_t)cfg->max_labels;
    ctx->max_json_depth = (int)cfg->max_json_depth;
    ctx->max_string_bytes = (size_t)cfg->max_string_bytes;
}

bool ingest_set_text(const struct ingest_ctx *ctx, struct batch *b, int col, const char *s,
                     size_t len, size_t input_index, struct rejects *r)
{
    const struct column *c = &b->table->columns[col];
    struct value *row = batch_row(b, b->nrows - 1);
    char why[160];
    if (!field_from_text(c, s, len, ctx->validate.precision, &b->arena, &row[col], why,
                         sizeof why)) {
        rejects_add(r, input_index, c->name, "%s %s", c->name, why);
        return false;
    }
    return true;
}

bool ingest_finish_row(const struct ingest_ctx *ctx, struct batch *b, bool row_ok,
                       size_t input_index, struct rejects *r)
{
    if (row_ok && validate_row(&ctx->validate, b, b->nrows - 1, input_index, r))
        return true;
    batch_drop_last(b);
    return false;
}

void json_escape_into(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    buf_putc(out, '"');
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(out, s + start, i - start);
        char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            buf_append(out, esc, 2);
        } else if (c == '\n' || c == '\t' || c == '\r' || c == '\b' || c == '\f') {
            /* the short forms, as jansson writes them on the JSON path */
            char short_esc[2] = {'\\', c == '\n'   ? 'n'
                                       : c == '\t' ? 't'
                                       : c == '\r' ? 'r'
                                       : c == '\b' ? 'b'
                                                   : 'f'};
            buf_append(out, short_esc, 2);
        } else {
            buf_append(out, esc, 6);
        }
        start = i + 1;
    }
    buf_append(out, s + start, len - start);
    buf_putc(out, '"');
}
