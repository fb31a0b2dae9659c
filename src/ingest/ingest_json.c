/*
 * JSON ingestion: one object, an array of objects, or NDJSON (one object per line). Field names
 * are the table's column names; values are converted by the schema, so a bad value gets the same
 * message here as in CSV.
 */
#include "ingest/ingest_int.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static bool set_json_field(const struct ingest_ctx *ctx, struct batch *b, int col, json_t *v,
                           size_t index, struct rejects *r)
{
    const struct column *c = &b->table->columns[col];
    struct value *row = batch_row(b, b->nrows - 1);
    char why[160];
    bool ok = true;
    switch (json_typeof(v)) {
    case JSON_NULL:
        row[col].type = VAL_NULL;
        break;
    case JSON_STRING:
        return ingest_set_text(ctx, b, col, json_string_value(v), json_string_length(v), index, r);
    case JSON_INTEGER:
        ok = field_from_number(c, (double)json_integer_value(v), true, json_integer_value(v),
                               ctx->validate.precision, &row[col], why, sizeof why);
        break;
    case JSON_REAL:
        ok = field_from_number(c, json_real_value(v), false, 0, ctx->validate.precision, &row[col],
                               why, sizeof why);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        if (c->type != COL_BOOL) {
            snprintf(why, sizeof why, "expected %s, got a boolean",
                     c->type == COL_TEXT ? "text" : "a number");
            ok = false;
        } else {
            row[col].type = VAL_INT;
            row[col].i = json_is_true(v);
        }
        break;
    case JSON_OBJECT:
        if (c->type == COL_JSON) {
            char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
            ok = text && ingest_set_text(ctx, b, col, text, strlen(text), index, r);
            free(text);
            return ok;
        }
        snprintf(why, sizeof why, "expected %s, got an object",
                 c->type == COL_TEXT ? "text" : "a number");
        ok = false;
        break;
    case JSON_ARRAY:
        snprintf(why, sizeof why, "expected %s, got an array",
                 c->type == COL_JSON   ? "an object"
                 : c->type == COL_TEXT ? "text"
                                       : "a number");
        ok = false;
        break;
    }
    if (!ok) rejects_add(r, index, c->name, "%s %s", c->name, why);
    return ok;
}

static bool add_object(const struct ingest_ctx *ctx, struct batch *b, json_t *obj, size_t index,
                       struct rejects *r)
{
    if (!json_is_object(obj)) {
        rejects_add(r, index, "", "expected a JSON object");
        return false;
    }
    batch_add_row(b);
    bool ok = true;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int col = schema_column(b->table, key);
        if (col < 0) {
            rejects_add(r, index, key, "unknown field '%.40s' for table %s (see docs/schema.md)",
                        key, b->table->name);
            ok = false;
            continue;
        }
        if (!set_json_field(ctx, b, col, v, index, r)) ok = false;
    }
    return ingest_finish_row(ctx, b, ok, index, r);
}

static int parse_ndjson(const struct ingest_ctx *ctx, const char *data, size_t len, struct batch *b,
                        struct rejects *r)
{
    size_t line = 1, pos = 0, rows = 0; /* 1-based line numbers */
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t s = pos, e = end;
        while (s < e && (data[s] == ' ' || data[s] == '\t' || data[s] == '\r'))
            s++;
        while (e > s && (data[e - 1] == ' ' || data[e - 1] == '\t' || data[e - 1] == '\r'))
            e--;
        if (e > s) {
            if (++rows > ctx->max_rows) return E_LIMIT;
            json_error_t jerr;
            json_t *obj = json_loadb(data + s, e - s, JSON_REJECT_DUPLICATES, &jerr);
            if (!obj)
                rejects_add(r, line, "", "invalid JSON at column %d: %s", jerr.column, jerr.text);
            else
                add_object(ctx, b, obj, line, r);
            json_decref(obj);
        }
        line++;
        pos = end + 1;
    }
    return r->count ? E_INVALID : 0;
}

int ingest_parse_json(const struct ingest_ctx *ctx, const char *data, size_t len, bool ndjson,
                      struct batch *b, struct rejects *r)
{
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t'))
        i++;
    if (i == len) {
        rejects_add(r, 0, "", "the body is empty: send a JSON object, an array or NDJSON");
        return E_INVALID;
    }
    if (!ndjson && data[i] == '[') {
        json_error_t jerr;
        json_t *arr = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!arr) {
            rejects_add(r, 0, "", "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                        jerr.text);
            return E_INVALID;
        }
        if (json_array_size(arr) > ctx->max_rows) {
            json_decref(arr);
            return E_LIMIT;
        }
        size_t idx;
        json_t *obj;
        json_array_foreach(arr, idx, obj) add_object(ctx, b, obj, idx, r);
        json_decref(arr);
        return r->count ? E_INVALID : 0;
    }
    if (!ndjson) {
        /* a single object, possibly pretty-printed over several lines */
        json_error_t jerr;
        json_t *obj = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DISABLE_EOF_CHECK, &jerr);
        if (obj) {
            size_t used = jerr.position;
            while (used < len && (data[used] == ' ' || data[used] == '\n' || data[used] == '\r' ||
                                  data[used] == '\t'))
                used++;
            if (used == len) {
                add_object(ctx, b, obj, 0, r);
                json_decref(obj);
                return r->count ? E_INVALID : 0;
            }
            json_decref(obj); /* more follows: NDJSON */
        }
    }
    return parse_ndjson(ctx, data, len, b, r);
}
