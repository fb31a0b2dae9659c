/*
 * JSON ingestion: one object, an array of objects, or NDJSON (one object per line). Field names
 * are the table's column names; values are converted by the schema, so a bad value gets the same
 * message here as in CSV. The bytes are walked once by json_scan.c; no tree is built.
 */
#include "ingest/ingest_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct json_parse {
    const struct ingest_ctx *ctx;
    struct batch *b;
    struct rejects *r;
    struct buf key_scratch, val_scratch;
    /* the last nested object converted (labels, context) and its canonical value: rows of one
     * source repeat their labels, and canonical JSON costs a parse and a sort */
    struct buf last_object;
    int last_object_col;
    struct value last_object_value;
};

static int column_of(const struct table *t, const char *key, size_t len)
{
    for (size_t i = 0; i < t->ncolumns; i++) {
        const char *name = t->columns[i].name;
        if (len && name[0] == key[0] && strlen(name) == len && memcmp(name, key, len) == 0)
            return (int)i;
    }
    return -1;
}

static bool number_field(struct json_parse *p, int col, const struct json_value *v, size_t index)
{
    const struct column *c = &p->b->table->columns[col];
    struct value *row = batch_row(p->b, p->b->nrows - 1);
    char tmp[64], why[160];
    if (v->len >= sizeof tmp) {
        rejects_add(p->r, index, c->name, "%s number is too long", c->name);
        return false;
    }
    memcpy(tmp, v->s, v->len);
    tmp[v->len] = '\0';
    bool ok;
    errno = 0;
    long long i = v->kind == JSON_V_INT ? strtoll(tmp, NULL, 10) : 0;
    if (v->kind == JSON_V_INT && errno == 0)
        ok = field_from_number(c, (double)i, true, i, p->ctx->validate.precision, &row[col], why,
                               sizeof why);
    else
        ok = field_from_number(c, strtod(tmp, NULL), false, 0, p->ctx->validate.precision,
                               &row[col], why, sizeof why);
    if (!ok)
        rejects_add(p->r, index, c->name, "%s %s", c->name, why);
    return ok;
}

static bool set_field(struct json_parse *p, int col, const struct json_value *v, size_t index)
{
    const struct column *c = &p->b->table->columns[col];
    struct value *row = batch_row(p->b, p->b->nrows - 1);
    const char *expected = c->type == COL_JSON   ? "a JSON object"
                           : c->type == COL_TEXT ? "text"
                           : c->type == COL_BOOL ? "a boolean"
                                                 : "a number";
    switch (v->kind) {
    case JSON_V_NULL:
        row[col].type = VAL_NULL;
        return true;
    case JSON_V_STRING:
        return ingest_set_text(p->ctx, p->b, col, v->s, v->len, index, p->r);
    case JSON_V_INT:
    case JSON_V_REAL:
        return number_field(p, col, v, index);
    case JSON_V_TRUE:
    case JSON_V_FALSE:
        if (c->type == COL_BOOL) {
            row[col].type = VAL_INT;
            row[col].i = v->kind == JSON_V_TRUE;
            return true;
        }
        rejects_add(p->r, index, c->name, "%s expected %s, got a boolean", c->name, expected);
        return false;
    case JSON_V_OBJECT:
        if (c->type == COL_JSON) {
            if (p->last_object_col == col && p->last_object.len == v->len &&
                memcmp(p->last_object.data, v->s, v->len) == 0) {
                row[col] = p->last_object_value; /* in the batch arena: lives as long */
                return true;
            }
            if (!ingest_set_text(p->ctx, p->b, col, v->s, v->len, index, p->r))
                return false;
            p->last_object.len = 0;
            if (buf_append(&p->last_object, v->s, v->len) == 0) {
                p->last_object_col = col;
                p->last_object_value = row[col];
            } else {
                p->last_object_col = -1;
            }
            return true;
        }
        rejects_add(p->r, index, c->name, "%s expected %s, got an object", c->name, expected);
        return false;
    case JSON_V_ARRAY:
        rejects_add(p->r, index, c->name, "%s expected %s, got an array", c->name, expected);
        return false;
    }
    return false;
}

/* A cursor over data[0..len) with the request's limits. */
static void cursor_init(const struct json_parse *p, struct json_cursor *c, const char *data,
                        size_t len)
{
    json_cursor_init(c, data, len);
    if (p->ctx->max_json_depth)
        c->max_depth = p->ctx->max_json_depth;
    if (p->ctx->max_string_bytes)
        c->max_string = p->ctx->max_string_bytes;
}

/* Records why the scan stopped at c->pos (where: "column" in a line, "byte" in the body). */
static void reject_scan(struct json_parse *p, const struct json_cursor *c, size_t index,
                        const char *where, size_t at, const char *fallback)
{
    if (!c->limit_of)
        rejects_add(p->r, index, "", "invalid JSON at %s %zu: %s", where, at,
                    c->error ? c->error : fallback);
    else if (c->max_depth && strcmp(c->limit_of, "ingest.max_json_depth") == 0)
        rejects_add(p->r, index, "", "at %s %zu: %s of %d levels (%s)", where, at, c->error,
                    c->max_depth, c->limit_of);
    else
        rejects_add(p->r, index, "", "at %s %zu: %s of %zu bytes (%s)", where, at, c->error,
                    c->max_string, c->limit_of);
}

/* Parses the object at the cursor into a new row. Returns false on a syntax error (the cursor
 * cannot continue); a row with bad fields is rejected but parsing goes on. */
static bool add_object(struct json_parse *p, struct json_cursor *c, size_t index,
                       size_t column_base)
{
    if (!json_object_begin(c)) {
        rejects_add(p->r, index, "", "expected a JSON object");
        return false;
    }
    batch_add_row(p->b);
    bool ok = true;
    uint64_t seen = 0;
    const char *key;
    size_t key_len;
    struct json_value v;
    int rc;
    while ((rc = json_object_next(c, &key, &key_len, &v, &p->key_scratch, &p->val_scratch)) > 0) {
        int col = column_of(p->b->table, key, key_len);
        if (col < 0) {
            char name[41];
            snprintf(name, sizeof name, "%.*s", (int)(key_len > 40 ? 40 : key_len), key);
            rejects_add(p->r, index, name, "unknown field '%s' for table %s (see docs/schema.md)",
                        name, p->b->table->name);
            ok = false;
        } else if (seen & (1ull << col)) {
            rejects_add(p->r, index, p->b->table->columns[col].name, "field %s appears twice",
                        p->b->table->columns[col].name);
            ok = false;
        } else {
            seen |= 1ull << col;
            if (!set_field(p, col, &v, index))
                ok = false;
        }
    }
    if (rc < 0) {
        reject_scan(p, c, index, "column", c->pos - column_base + 1, "invalid value");
        batch_drop_last(p->b);
        return false;
    }
    ingest_finish_row(p->ctx, p->b, ok, index, p->r);
    return true;
}

static int parse_ndjson(struct json_parse *p, const char *data, size_t len)
{
    size_t line = 1, pos = 0, rows = 0; /* 1-based line numbers */
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        struct json_cursor c;
        cursor_init(p, &c, data + pos, end - pos);
        if (!json_at_end(&c)) {
            if (++rows > p->ctx->max_rows)
                return E_LIMIT;
            c.pos = 0;
            if (add_object(p, &c, line, 0) && !json_at_end(&c))
                rejects_add(p->r, line, "",
                            "invalid JSON at column %zu: unexpected data after "
                            "the object",
                            c.pos + 1);
        }
        line++;
        pos = end + 1;
    }
    return p->r->count ? E_INVALID : 0;
}

static int parse_array(struct json_parse *p, const char *data, size_t len)
{
    struct json_cursor c;
    cursor_init(p, &c, data, len);
    json_array_begin(&c);
    size_t index = 0;
    int more;
    while ((more = json_array_next(&c)) > 0) {
        if (index >= p->ctx->max_rows)
            return E_LIMIT;
        if (!add_object(p, &c, index, 0))
            return E_INVALID; /* a syntax error: the rest cannot be read */
        index++;
    }
    if (more < 0 || !json_at_end(&c)) {
        reject_scan(p, &c, index, "byte", c.pos + 1, "unexpected data after the array");
        return E_INVALID;
    }
    return p->r->count ? E_INVALID : 0;
}

int ingest_parse_json(const struct ingest_ctx *ctx, const char *data, size_t len, bool ndjson,
                      struct batch *b, struct rejects *r)
{
    struct json_parse p = {.ctx = ctx, .b = b, .r = r, .last_object_col = -1};
    buf_init(&p.key_scratch, 1 << 16);
    buf_init(&p.val_scratch, 1 << 26);
    buf_init(&p.last_object, 1 << 16);
    struct json_cursor c;
    cursor_init(&p, &c, data, len);
    int rc;
    if (json_at_end(&c)) {
        rejects_add(r, 0, "", "the body is empty: send a JSON object, an array or NDJSON");
        rc = E_INVALID;
    } else if (!ndjson && data[c.pos] == '[') {
        rc = parse_array(&p, data, len);
    } else if (!ndjson && data[c.pos] == '{' && add_object(&p, &c, 0, 0) && json_at_end(&c)) {
        rc = r->count ? E_INVALID : 0; /* one object, possibly over several lines */
    } else {
        /* more than one object: NDJSON, read again line by line */
        b->nrows = 0;
        rejects_init(r, r->row_word);
        r->row_word = "line";
        rc = parse_ndjson(&p, data, len);
    }
    buf_release(&p.key_scratch);
    buf_release(&p.val_scratch);
    buf_release(&p.last_object);
    return rc;
}
