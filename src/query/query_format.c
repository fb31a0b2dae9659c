/*
 * Result formats: JSON for the API, CSV for tools, and an aligned table for people at a
 * terminal.
 */
#include "query/query.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int query_format_parse(const char *s)
{
    if (strcasecmp(s, "table") == 0)
        return FORMAT_TABLE;
    if (strcasecmp(s, "json") == 0)
        return FORMAT_JSON;
    if (strcasecmp(s, "csv") == 0)
        return FORMAT_CSV;
    return -1;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (n == 0 || s[0] > 0xf4 || n > avail || s[0] == 0xc0 || s[0] == 0xc1)
        return 0;
    for (size_t k = 1; k < n; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (n == 3 && s[0] == 0xed && s[1] >= 0xa0) ||
        (n == 4 && s[0] == 0xf0 && s[1] < 0x90) || (n == 4 && s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return n;
}

/* A JSON string literal. Bytes that are not UTF-8 (blobs, bad text) become U+FFFD, so the answer
 * is always valid JSON. */
static void json_string(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    buf_putc(out, '"');
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t n = utf8_seq((const unsigned char *)s + i, len - i);
            if (n) {
                i += n - 1;
                continue;
            }
            buf_append(out, s + start, i - start);
            buf_append(out, "\\ufffd", 6);
            start = i + 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(out, s + start, i - start);
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_append(out, esc, 2);
        } else if (c == '\n') {
            buf_append(out, "\\n", 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(out, esc, 6);
        }
        start = i + 1;
    }
    buf_append(out, s + start, len - start);
    buf_putc(out, '"');
}

/* Writes |m| (< 10^15) with k of its digits after a decimal point; returns the length. */
static size_t put_scaled(char *out, bool negative, uint64_t m, int k)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + m % 10);
        m /= 10;
    } while (m || n <= k); /* at least one digit before the point */
    size_t len = 0;
    if (negative)
        out[len++] = '-';
    while (n > 0) {
        if (n == k)
            out[len++] = '.';
        out[len++] = digits[--n];
    }
    out[len] = '\0';
    return len;
}

/* The text %.15g gives for d when d is an integer below 10^15 or has at most 4 decimals and is
 * below 10^11 (what metrics mostly hold), without printf and strtod: those were a quarter of a
 * series answer's time. Returns 0 for every other double. The text is the same because d is
 * then within half an ulp of m / 10^k, and m has at most 15 digits, so rounding d to 15
 * significant digits gives m's digits; %g drops the trailing zeros and, for these magnitudes
 * (10^-4 and up, below 10^15), uses no exponent. */
static size_t decimal_text(double d, char *out)
{
    static const double pow10[] = {1, 10, 100, 1000, 10000};
    double mag = fabs(d);
    if (d == 0)
        return signbit(d) ? 0 : put_scaled(out, false, 0, 0); /* -0 is left to printf */
    if (!(mag < 1e15))
        return 0;
    for (int k = 0; k <= 4; k++) {
        if (k > 0 && !(mag < 1e11))
            return 0;
        double scaled = nearbyint(mag * pow10[k]);
        if (scaled / pow10[k] == mag)
            return put_scaled(out, d < 0, (uint64_t)scaled, k);
    }
    return 0;
}

size_t query_number_text(double d, char out[static QUERY_NUMBER_TEXT_MAX])
{
    size_t len = decimal_text(d, out);
    if (len)
        return len;
    /* the shortest text that reads back as the same double */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, QUERY_NUMBER_TEXT_MAX, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return strlen(out);
}

void query_json_value(const struct value *v, struct buf *out)
{
    char num[40];
    switch (v->type) {
    case VAL_INT:
        buf_printf(out, "%lld", (long long)v->i);
        break;
    case VAL_REAL:
        if (!isfinite(v->d)) {
            buf_append(out, "null", 4);
            break;
        }
        buf_append(out, num, query_number_text(v->d, num));
        break;
    case VAL_TEXT:
        json_string(out, v->s, v->len);
        break;
    default:
        buf_append(out, "null", 4);
    }
}

int query_write_json(const struct store_result *res, const char *extra, struct buf *out)
{
    buf_putc(out, '{');
    if (extra)
        buf_printf(out, "%s,", extra);
    buf_printf(out, "\"columns\":[");
    for (size_t c = 0; c < res->ncols; c++) {
        if (c)
            buf_putc(out, ',');
        json_string(out, res->columns[c], strlen(res->columns[c]));
    }
    buf_printf(out, "],\"row_count\":%zu,\"rows\":[", res->nrows);
    for (size_t r = 0; r < res->nrows; r++) {
        const struct value *row = res->values + r * res->ncols;
        buf_append(out, r ? ",{" : "{", r ? 2 : 1);
        for (size_t c = 0; c < res->ncols; c++) {
            if (c)
                buf_putc(out, ',');
            json_string(out, res->columns[c], strlen(res->columns[c]));
            buf_putc(out, ':');
            query_json_value(&row[c], out);
        }
        buf_putc(out, '}');
    }
    return buf_append(out, "]}", 2);
}

static void cell_text(const struct value *v, char *tmp, size_t size, const char **s, size_t *len)
{
    switch (v->type) {
    case VAL_INT:
        snprintf(tmp, size, "%lld", (long long)v->i);
        break;
    case VAL_REAL:
        query_number_text(v->d, tmp);
        break;
    case VAL_TEXT:
        *s = v->s;
        *len = v->len;
        return;
    default:
        tmp[0] = '\0';
    }
    *s = tmp;
    *len = strlen(tmp);
}

/* RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled. */
static void csv_field(struct buf *out, const char *s, size_t len)
{
    if (!memchr(s, ',', len) && !memchr(s, '"', len) && !memchr(s, '\n', len) &&
        !memchr(s, '\r', len)) {
        buf_append(out, s, len);
        return;
    }
    buf_putc(out, '"');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"')
            buf_putc(out, '"');
        buf_putc(out, s[i]);
    }
    buf_putc(out, '"');
}

int query_write_csv(const struct store_result *res, struct buf *out)
{
    for (size_t c = 0; c < res->ncols; c++) {
        if (c)
            buf_putc(out, ',');
        csv_field(out, res->columns[c], strlen(res->columns[c]));
    }
    buf_putc(out, '\n');
    char tmp[64];
    for (size_t r = 0; r < res->nrows; r++) {
        for (size_t c = 0; c < res->ncols; c++) {
            const char *s;
            size_t len;
            cell_text(&res->values[r * res->ncols + c], tmp, sizeof tmp, &s, &len);
            if (c)
                buf_putc(out, ',');
            csv_field(out, s, len);
        }
        buf_putc(out, '\n');
    }
    return 0;
}

/* Display width of UTF-8 text: one column per code point (no wide-character tables). */
static size_t width(const char *s, size_t len)
{
    size_t w = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            w++;
    return w;
}

#define TABLE_CELL_MAX 60 /* longer cells are cut with "..." so rows stay on one line */

int query_write_table(const struct store_result *res, struct buf *out)
{
    size_t *w = calloc(res->ncols ? res->ncols : 1, sizeof *w);
    if (!w)
        return E_NOMEM;
    char tmp[64];
    for (size_t c = 0; c < res->ncols; c++)
        w[c] = width(res->columns[c], strlen(res->columns[c]));
    for (size_t r = 0; r < res->nrows; r++)
        for (size_t c = 0; c < res->ncols; c++) {
            const char *s;
            size_t len;
            cell_text(&res->values[r * res->ncols + c], tmp, sizeof tmp, &s, &len);
            size_t cw = width(s, len);
            if (cw > TABLE_CELL_MAX)
                cw = TABLE_CELL_MAX;
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t c = 0; c < res->ncols; c++)
        buf_printf(out, "%s%-*s", c ? "  " : "", (int)w[c], res->columns[c]);
    buf_putc(out, '\n');
    for (size_t c = 0; c < res->ncols; c++) {
        buf_printf(out, "%s", c ? "  " : "");
        for (size_t i = 0; i < w[c]; i++)
            buf_putc(out, '-');
    }
    buf_putc(out, '\n');
    for (size_t r = 0; r < res->nrows; r++) {
        for (size_t c = 0; c < res->ncols; c++) {
            const struct value *v = &res->values[r * res->ncols + c];
            const char *s;
            size_t len;
            cell_text(v, tmp, sizeof tmp, &s, &len);
            size_t cw = width(s, len);
            if (c)
                buf_append(out, "  ", 2);
            bool numeric = v->type == VAL_INT || v->type == VAL_REAL;
            if (cw > TABLE_CELL_MAX) {
                size_t keep = 0, seen = 0;
                while (keep < len && seen < TABLE_CELL_MAX - 3) {
                    keep++;
                    while (keep < len && ((unsigned char)s[keep] & 0xc0) == 0x80)
                        keep++;
                    seen++;
                }
                buf_append(out, s, keep);
                buf_append(out, "...", 3);
                cw = TABLE_CELL_MAX;
            } else if (numeric) {
                for (size_t i = cw; i < w[c]; i++)
                    buf_putc(out, ' ');
                buf_append(out, s, len);
                cw = w[c];
            } else {
                for (size_t i = 0; i < len; i++)
                    buf_putc(out, s[i] == '\n' || s[i] == '\t' ? ' ' : s[i]);
            }
            if (c + 1 < res->ncols)
                for (size_t i = cw; i < w[c]; i++)
                    buf_putc(out, ' ');
        }
        buf_putc(out, '\n');
    }
    buf_printf(out, "(%zu row%s)\n", res->nrows, res->nrows == 1 ? "" : "s");
    free(w);
    return 0;
}
