/*
 * What the libFuzzer targets share: one parse context for the process, and the invariants every
 * parsed batch must keep whatever the input. A broken invariant aborts, which libFuzzer reports
 * as a crash with the input saved.
 *
 * The input of the JSON and CSV targets starts with one selector byte (see fuzz_selector); the
 * seed corpora start with an ASCII digit, which picks the table by number and ms precision.
 * OPSDB_FUZZ_STRICT=1 in the environment also checks invariants that known, reported bugs break.
 */
#ifndef OPSDB_FUZZ_COMMON_H
#define OPSDB_FUZZ_COMMON_H

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "core/core.h"
#include "ingest/ingest.h"

#define FUZZ_MAX_ROWS 5000

#define fuzz_check(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n  ", #cond, __FILE__, __LINE__);   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* An exact-size heap copy of the input (free it), so that a read past its end is an ASan
 * report. */
static inline char *fuzz_copy(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    fuzz_check(copy != NULL, "no memory for %zu bytes", size);
    memcpy(copy, data, size);
    return copy;
}

/* For the codec targets (chunk, colpack): data is a byte L, L header bytes, then a payload that
 * is compressed here with zstd (its size and a checksum) after the header. Mutations of a real
 * blob's payload rarely get past zstd's checksum; this way they reach the codec's parser.
 * Returns the blob (free it) with its length in *len, or NULL when data is too short. */
static inline uint8_t *fuzz_zstd_blob(const uint8_t *data, size_t size, size_t *len)
{
    if (size == 0 || data[0] > size - 1)
        return NULL;
    size_t header_len = data[0], raw_len = size - 1 - header_len;
    const uint8_t *raw = data + 1 + header_len;
    size_t cap = header_len + ZSTD_compressBound(raw_len);
    uint8_t *blob = malloc(cap);
    fuzz_check(blob != NULL, "no memory for %zu bytes", cap);
    memcpy(blob, data + 1, header_len);
    ZSTD_CCtx *c = ZSTD_createCCtx();
    fuzz_check(c != NULL, "no zstd context");
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    size_t zlen = ZSTD_compress2(c, blob + header_len, cap - header_len, raw, raw_len);
    fuzz_check(!ZSTD_isError(zlen), "zstd: %s", ZSTD_getErrorName(zlen));
    ZSTD_freeCCtx(c);
    *len = header_len + zlen;
    return blob;
}

/* The process's parse contexts, one per precision (index = enum time_precision). Retention is
 * off and the future limit wide, so seeds with fixed dates stay valid as time passes. */
static struct ingest_ctx fuzz_ctx[4] __attribute__((unused));
static bool fuzz_strict __attribute__((unused));

static inline void fuzz_init(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    struct config cfg;
    config_defaults(&cfg);
    cfg.max_rows_per_request = FUZZ_MAX_ROWS;
    cfg.max_future_ms = 3650LL * 86400000;
    for (size_t i = 0; i < 16; i++)
        cfg.retention_days[i] = 0;
    for (int p = 0; p < 4; p++)
        ingest_ctx_init(&fuzz_ctx[p], &cfg, NULL, (enum time_precision)p);
    fuzz_strict = getenv("OPSDB_FUZZ_STRICT") != NULL;
    log_set_level(LOG_ERROR);
}

struct fuzz_selector {
    const struct table *table;
    const struct ingest_ctx *ctx;
    bool ndjson;
};

/* The first byte: bits 0-3 the table (modulo their count), bits 4-5 the precision (3 = ms, so
 * '0'..'9' mean ms), bit 7 forces NDJSON. */
static inline struct fuzz_selector fuzz_select(unsigned char b)
{
    static const enum time_precision precs[4] = {PREC_NS, PREC_US, PREC_S, PREC_MS};
    size_t n;
    const struct table *t = schema_tables(&n);
    struct fuzz_selector s = {&t[(b & 0x0f) % n], &fuzz_ctx[precs[(b >> 4) & 3]], (b & 0x80) != 0};
    return s;
}

static inline bool fuzz_utf8_valid(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len); /* jansson checks UTF-8: overlong forms, surrogates */
    if (j) {
        json_decref(j);
        return true;
    }
    /* in case this jansson refuses NUL bytes: those are valid UTF-8 */
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\0')
            return fuzz_utf8_valid(s, i) && fuzz_utf8_valid(s + i + 1, len - i - 1);
    return false;
}

/* True when s is a JSON object (of strings when strings_only). */
static inline bool fuzz_json_object(const char *s, size_t len, bool strings_only)
{
    json_error_t jerr;
    json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = j && json_is_object(j);
    if (ok && strings_only) {
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) ok = ok && json_is_string(v);
    }
    json_decref(j);
    return ok;
}

/* The contract of every parser: the return code agrees with the rejections, and a batch that
 * parsed without rejections holds only valid, typed rows. */
static inline void fuzz_check_batch(const struct ingest_ctx *ctx, int rc, struct batch *b,
                                    const struct rejects *r, bool check_text)
{
    fuzz_check(rc == 0 || rc == E_INVALID || rc == E_LIMIT, "rc %d", rc);
    fuzz_check(r->n <= REJECTS_MAX, "n %zu", r->n);
    fuzz_check((r->n == 0) == (r->count == 0), "%zu items for %zu rows", r->n, r->count);
    for (size_t i = 0; i < r->n; i++) {
        fuzz_check(memchr(r->items[i].reason, '\0', sizeof r->items[i].reason) != NULL, "reason");
        fuzz_check(r->items[i].reason[0] != '\0', "empty reason %zu", i);
    }
    if (rc == E_LIMIT)
        return;
    fuzz_check((rc == 0) == (r->count == 0), "rc %d with %zu rejections", rc, r->count);
    fuzz_check(b->nrows <= ctx->max_rows, "%zu rows over the limit", b->nrows);
    if (rc != 0)
        return;
    const struct table *t = b->table;
    for (size_t i = 0; i < b->nrows; i++) {
        const struct value *row = batch_row(b, i);
        for (size_t c = 0; c < t->ncolumns; c++) {
            const struct column *col = &t->columns[c];
            const struct value *v = &row[c];
            if (v->type == VAL_NULL) {
                fuzz_check(!col->required && !col->default_sql && !col->derived,
                           "row %zu: %s is NULL", i, col->name);
                continue;
            }
            switch (col->type) {
            case COL_TS:
            case COL_INT:
            case COL_BOOL:
                fuzz_check(v->type == VAL_INT, "row %zu: %s has type %d", i, col->name, v->type);
                if (col->min < col->max && col->type != COL_TS)
                    fuzz_check(v->i >= col->min && v->i <= col->max, "row %zu: %s %lld", i,
                               col->name, (long long)v->i);
                if (strcmp(col->name, "ts") == 0)
                    fuzz_check(v->i <= ctx->validate.now_ms + ctx->validate.max_future_ms,
                               "row %zu: ts %lld in the future", i, (long long)v->i);
                break;
            case COL_REAL:
                fuzz_check(v->type == VAL_REAL, "row %zu: %s has type %d", i, col->name, v->type);
                fuzz_check(isfinite(v->d), "row %zu: %s is %g", i, col->name, v->d);
                if (col->min < col->max)
                    fuzz_check(v->d >= col->min && v->d <= col->max, "row %zu: %s %g", i, col->name,
                               v->d);
                break;
            case COL_TEXT:
            case COL_JSON:
                fuzz_check(v->type == VAL_TEXT, "row %zu: %s has type %d", i, col->name, v->type);
                fuzz_check(v->len <= col->max_len, "row %zu: %s is %u bytes", i, col->name, v->len);
                fuzz_check(v->s != NULL || v->len == 0, "row %zu: %s", i, col->name);
                if (col->allowed) {
                    bool found = false;
                    for (const char *const *a = col->allowed; *a; a++)
                        found |= strlen(*a) == v->len && memcmp(*a, v->s, v->len) == 0;
                    fuzz_check(found, "row %zu: %s '%.*s' not canonical", i, col->name, (int)v->len,
                               v->s);
                }
                if (check_text && col->type == COL_TEXT)
                    fuzz_check(fuzz_utf8_valid(v->s, v->len), "row %zu: %s is not UTF-8", i,
                               col->name);
                if (check_text && col->type == COL_JSON && v->len)
                    fuzz_check(fuzz_json_object(v->s, v->len, col->series_key),
                               "row %zu: %s is not a JSON object%s: %.*s", i, col->name,
                               col->series_key ? " of strings" : "", (int)v->len, v->s);
                break;
            }
        }
    }
}

#endif
