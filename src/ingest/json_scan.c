/*
 * A strict, allocation-free JSON scanner for the rows opsdb ingests: flat objects of strings,
 * numbers, booleans and nulls, with nested objects (labels, context) passed through as raw text.
 * jansson builds a tree per row, which cost more than storing the row; this walks the bytes once.
 * It accepts exactly RFC 8259 JSON (the fuzz target compares nothing else in).
 */
#include "ingest/ingest_int.h"

#include <stdint.h>
#include <string.h>

static void skip_ws(struct json_cursor *c)
{
    while (c->pos < c->len) {
        char ch = c->data[c->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
            break;
        c->pos++;
    }
}

static bool fail(struct json_cursor *c, const char *why)
{
    if (!c->error)
        c->error = why;
    return false;
}

/* A named limit stopped the scan: error says what, limit_of names the option. */
static bool over_limit(struct json_cursor *c, const char *what, const char *option)
{
    if (!c->error) {
        c->error = what;
        c->limit_of = option;
    }
    return false;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static bool read_hex4(struct json_cursor *c, size_t at, unsigned *out)
{
    if (at + 4 > c->len)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < 4; i++) {
        int h = hexval(c->data[at + i]);
        if (h < 0)
            return false;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return true;
}

static void put_utf8(struct buf *out, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_append(out, b, n);
}

/* Decodes an escape at c->pos (just after the backslash) into out. */
static bool read_escape(struct json_cursor *c, struct buf *out)
{
    if (c->pos >= c->len)
        return fail(c, "unterminated string");
    char e = c->data[c->pos++];
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *k = strchr(from, e);
    if (e && k) {
        buf_putc(out, to[k - from]);
        return true;
    }
    if (e != 'u')
        return fail(c, "invalid escape in string");
    unsigned cp;
    if (!read_hex4(c, c->pos, &cp))
        return fail(c, "invalid \\u escape");
    c->pos += 4;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        unsigned lo;
        if (c->pos + 6 > c->len || c->data[c->pos] != '\\' || c->data[c->pos + 1] != 'u' ||
            !read_hex4(c, c->pos + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
            return fail(c, "unpaired surrogate in \\u escape");
        c->pos += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    } else if (cp >= 0xdc00 && cp <= 0xdfff) {
        return fail(c, "unpaired surrogate in \\u escape");
    }
    put_utf8(out, cp);
    return true;
}

/* Reads a string at c->pos (on the opening quote). Without escapes the result points into the
 * input; with escapes it is decoded into scratch. */
static bool read_string(struct json_cursor *c, const char **s, size_t *len, struct buf *scratch)
{
    size_t start = ++c->pos;
    /* room for max_string bytes and the closing quote */
    size_t end = c->len - start > c->max_string ? start + c->max_string + 1 : c->len;
    while (c->pos < end) {
        unsigned char ch = (unsigned char)c->data[c->pos];
        if (ch == '"') {
            *s = c->data + start;
            *len = c->pos - start;
            c->pos++;
            return true;
        }
        if (ch == '\\')
            break;
        if (ch < 0x20)
            return fail(c, "control character in string");
        c->pos++;
    }
    if (c->pos >= end)
        return end < c->len
                   ? over_limit(c, "a string is longer than the limit", "ingest.max_string_bytes")
                   : fail(c, "unterminated string");
    scratch->len = 0;
    buf_append(scratch, c->data + start, c->pos - start);
    while (c->pos < end) {
        unsigned char ch = (unsigned char)c->data[c->pos];
        if (ch == '"') {
            c->pos++;
            *s = scratch->data;
            *len = scratch->len;
            return true;
        }
        if (ch < 0x20)
            return fail(c, "control character in string");
        c->pos++;
        if (ch == '\\') {
            if (!read_escape(c, scratch))
                return false;
        } else {
            buf_putc(scratch, (char)ch);
        }
    }
    if (end < c->len)
        return over_limit(c, "a string is longer than the limit", "ingest.max_string_bytes");
    return fail(c, "unterminated string");
}

static bool read_number(struct json_cursor *c, struct json_value *v)
{
    size_t i = c->pos;
    const char *d = c->data;
    bool integer = true;
    if (i < c->len && d[i] == '-')
        i++;
    if (i >= c->len || d[i] < '0' || d[i] > '9')
        return fail(c, "invalid value");
    if (d[i] == '0')
        i++;
    else
        while (i < c->len && d[i] >= '0' && d[i] <= '9')
            i++;
    if (i < c->len && d[i] == '.') {
        integer = false;
        if (++i >= c->len || d[i] < '0' || d[i] > '9')
            return fail(c, "invalid number");
        while (i < c->len && d[i] >= '0' && d[i] <= '9')
            i++;
    }
    if (i < c->len && (d[i] == 'e' || d[i] == 'E')) {
        integer = false;
        i++;
        if (i < c->len && (d[i] == '+' || d[i] == '-'))
            i++;
        if (i >= c->len || d[i] < '0' || d[i] > '9')
            return fail(c, "invalid number");
        while (i < c->len && d[i] >= '0' && d[i] <= '9')
            i++;
    }
    v->kind = integer ? JSON_V_INT : JSON_V_REAL;
    v->s = d + c->pos;
    v->len = i - c->pos;
    c->pos = i;
    return true;
}

/* Skips a nested object or array, checking its syntax. */
static bool skip_value(struct json_cursor *c, struct buf *scratch, int depth);

static bool skip_container(struct json_cursor *c, struct buf *scratch, int depth)
{
    char open = c->data[c->pos], close = open == '{' ? '}' : ']';
    if (depth > c->max_depth)
        return over_limit(c, "objects and arrays are nested deeper than the limit",
                          "ingest.max_json_depth");
    c->pos++;
    skip_ws(c);
    if (c->pos < c->len && c->data[c->pos] == close) {
        c->pos++;
        return true;
    }
    for (;;) {
        skip_ws(c);
        if (open == '{') {
            const char *k;
            size_t kl;
            if (c->pos >= c->len || c->data[c->pos] != '"' || !read_string(c, &k, &kl, scratch))
                return fail(c, "expected a member name");
            skip_ws(c);
            if (c->pos >= c->len || c->data[c->pos++] != ':')
                return fail(c, "expected ':'");
            skip_ws(c);
        }
        if (!skip_value(c, scratch, depth + 1))
            return false;
        skip_ws(c);
        if (c->pos >= c->len)
            return fail(c, "unexpected end");
        char ch = c->data[c->pos++];
        if (ch == close)
            return true;
        if (ch != ',')
            return fail(c, open == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool literal(struct json_cursor *c, const char *word, enum json_kind kind,
                    struct json_value *v)
{
    size_t n = strlen(word);
    if (c->pos + n > c->len || memcmp(c->data + c->pos, word, n) != 0)
        return fail(c, "invalid value");
    c->pos += n;
    v->kind = kind;
    return true;
}

static bool read_value(struct json_cursor *c, struct json_value *v, struct buf *scratch, int depth)
{
    if (c->pos >= c->len)
        return fail(c, "unexpected end");
    switch (c->data[c->pos]) {
    case '"':
        v->kind = JSON_V_STRING;
        return read_string(c, &v->s, &v->len, scratch);
    case '{':
    case '[': {
        size_t start = c->pos;
        v->kind = c->data[c->pos] == '{' ? JSON_V_OBJECT : JSON_V_ARRAY;
        if (!skip_container(c, scratch, depth))
            return false;
        v->s = c->data + start;
        v->len = c->pos - start;
        return true;
    }
    case 't':
        return literal(c, "true", JSON_V_TRUE, v);
    case 'f':
        return literal(c, "false", JSON_V_FALSE, v);
    case 'n':
        return literal(c, "null", JSON_V_NULL, v);
    default:
        return read_number(c, v);
    }
}

static bool skip_value(struct json_cursor *c, struct buf *scratch, int depth)
{
    struct json_value v;
    return read_value(c, &v, scratch, depth);
}

void json_cursor_init(struct json_cursor *c, const char *data, size_t len)
{
    c->data = data;
    c->len = len;
    c->pos = 0;
    c->error = NULL;
    c->max_depth = JSON_MAX_DEPTH;
    c->max_string = SIZE_MAX;
    c->limit_of = NULL;
}

bool json_object_begin(struct json_cursor *c)
{
    skip_ws(c);
    if (c->pos >= c->len || c->data[c->pos] != '{')
        return fail(c, "expected a JSON object");
    c->pos++;
    c->first_member = true;
    return true;
}

int json_object_next(struct json_cursor *c, const char **key, size_t *key_len, struct json_value *v,
                     struct buf *key_scratch, struct buf *val_scratch)
{
    skip_ws(c);
    if (c->pos >= c->len)
        return fail(c, "unexpected end of object"), -1;
    if (c->data[c->pos] == '}' && c->first_member) {
        c->pos++;
        return 0;
    }
    if (!c->first_member) {
        char ch = c->data[c->pos++];
        if (ch == '}')
            return 0;
        if (ch != ',')
            return fail(c, "expected ',' or '}'"), -1;
        skip_ws(c);
    }
    c->first_member = false;
    if (c->pos >= c->len || c->data[c->pos] != '"' || !read_string(c, key, key_len, key_scratch))
        return fail(c, "expected a member name"), -1;
    skip_ws(c);
    if (c->pos >= c->len || c->data[c->pos++] != ':')
        return fail(c, "expected ':' after a member name"), -1;
    skip_ws(c);
    return read_value(c, v, val_scratch, 1) ? 1 : -1;
}

bool json_at_end(struct json_cursor *c)
{
    skip_ws(c);
    return c->pos == c->len;
}

bool json_array_begin(struct json_cursor *c)
{
    skip_ws(c);
    if (c->pos >= c->len || c->data[c->pos] != '[')
        return fail(c, "expected a JSON array");
    c->pos++;
    c->first_member = true;
    return true;
}

int json_array_next(struct json_cursor *c)
{
    skip_ws(c);
    if (c->pos >= c->len)
        return fail(c, "unexpected end of array"), -1;
    if (c->first_member) {
        c->first_member = false;
        if (c->data[c->pos] == ']') {
            c->pos++;
            return 0;
        }
        return 1;
    }
    char ch = c->data[c->pos++];
    if (ch == ']')
        return 0;
    if (ch != ',')
        return fail(c, "expected ',' or ']'"), -1;
    skip_ws(c);
    return 1;
}

bool json_skip_value(struct json_cursor *c, struct buf *scratch)
{
    skip_ws(c);
    return skip_value(c, scratch, 1);
}
