/*
 * The virtual table <table>_cold (module opsdb_chunks): the compressed chunks of
 * <table>_chunks read back as (series_id, ts, value) rows, so SQL, the views and the series API
 * see cold samples under the same names as hot ones (<table>_raw and <table> are UNION ALL views
 * over both).
 *
 * Constraints are pushed down: series_id = ? picks one series' chunks through the (series_id,
 * start_ts) key, and a ts range skips the chunks outside it (a chunk never spans a UTC day, so a
 * chunk that can hold ts >= lo starts after lo - 1 day) and the samples outside it inside a
 * chunk (binary search). For one series the rows come in ts order, ascending or descending, so
 * `ORDER BY ts DESC LIMIT 1` decodes one chunk. Pruning is conservative and SQLite re-checks every
 * constraint (omit is never set): a constraint value of an unexpected type only costs speed.
 * The table is read-only.
 *
 * Minutes mode, opsdb_chunks(<chunks>, minutes), is <table>_1m: the minute buckets kept in each
 * chunk's row (minutes.c) as (series_id, ts, min, max, sum, count, last, last_ts). A series'
 * buckets in range are read whole, merging the two halves of a minute that a chunk boundary
 * split, so every minute is one row; the same constraints prune the chunks.
 */
#include "store/chunk.h"
#include "store/minutes.h"
#include "store/sqlite_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { VCOL_SERIES_ID, VCOL_TS, VCOL_VALUE }; /* the virtual table's columns */
/* ... and in minutes mode (opsdb_chunks(<chunks>, minutes)): the 1-minute rollup */
enum { MCOL_MIN = 2, MCOL_MAX, MCOL_SUM, MCOL_COUNT, MCOL_LAST, MCOL_LAST_TS };

/* idxNum bits: which constraints xFilter receives (in this order) and the row order */
enum {
    IDX_SERIES = 1,
    IDX_LO = 2,
    IDX_HI = 4,
    IDX_DESC = 8,
};

struct cold_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    char chunks[128]; /* the chunk table's name */
    bool minutes;     /* rows are the chunks' minute buckets, not their samples */
};

struct cold_cursor {
    sqlite3_vtab_cursor base;
    sqlite3_stmt *chunks; /* the chunks that may hold rows, in the output order */
    char chunks_sql[400]; /* its text: a filter with the same text (one per series of an IN
                           * list) rebinds it instead of preparing it again */
    bool desc, eof;
    int64_t lo, hi; /* ts bounds, inclusive */
    int64_t series_id;
    int64_t *ts;
    double *values;
    size_t n, cap;
    ptrdiff_t pos; /* index in ts/values of the current row */
    /* minutes mode: the buckets in [lo, hi] of one series, [first, end) of m, merged across
     * its chunks (a minute split by a chunk boundary is one row) */
    struct minutes m;
    size_t first, end;
    bool pending;  /* the statement is on a chunk of the next series, not decoded yet */
    bool finished; /* the statement has no more chunks (stepping it again would rerun it) */
};

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= 100)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static int cold_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                        sqlite3_vtab **out, char **errmsg)
{
    (void)aux;
    bool minutes = argc == 5 && strcmp(argv[4], "minutes") == 0;
    if ((argc != 4 && !minutes) || !valid_name(argv[3])) {
        *errmsg = sqlite3_mprintf("opsdb_chunks: expected the chunk table's name, then "
                                  "optionally 'minutes'");
        return SQLITE_ERROR;
    }
    int rc = sqlite3_declare_vtab(
        db, minutes ? "CREATE TABLE x(series_id INTEGER, ts INTEGER, min REAL, max REAL, sum "
                      "REAL, count INTEGER, last REAL, last_ts INTEGER)"
                    : "CREATE TABLE x(series_id INTEGER, ts INTEGER, value REAL)");
    if (rc != SQLITE_OK)
        return rc;
    struct cold_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v)
        return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->db = db;
    v->minutes = minutes;
    snprintf(v->chunks, sizeof v->chunks, "%s", argv[3]);
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
    *out = &v->base;
    return SQLITE_OK;
}

static int cold_disconnect(sqlite3_vtab *base)
{
    sqlite3_free(base);
    return SQLITE_OK;
}

/* Picks the constraints xFilter can use; argv order follows the IDX_ bits. */
static int cold_best_index(sqlite3_vtab *base, sqlite3_index_info *info)
{
    (void)base;
    int series = -1, lo = -1, hi = -1;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        if (!c->usable)
            continue;
        if (c->iColumn == VCOL_SERIES_ID && c->op == SQLITE_INDEX_CONSTRAINT_EQ)
            series = i;
        else if (c->iColumn == VCOL_TS &&
                 (c->op == SQLITE_INDEX_CONSTRAINT_GE || c->op == SQLITE_INDEX_CONSTRAINT_GT ||
                  c->op == SQLITE_INDEX_CONSTRAINT_EQ) &&
                 lo < 0)
            lo = i;
        else if (c->iColumn == VCOL_TS &&
                 (c->op == SQLITE_INDEX_CONSTRAINT_LE || c->op == SQLITE_INDEX_CONSTRAINT_LT) &&
                 hi < 0)
            hi = i;
    }
    int argv_index = 1, idx = 0;
    if (series >= 0) {
        info->aConstraintUsage[series].argvIndex = argv_index++;
        idx |= IDX_SERIES;
    }
    if (lo >= 0) {
        info->aConstraintUsage[lo].argvIndex = argv_index++;
        idx |= IDX_LO;
    }
    if (hi >= 0) {
        info->aConstraintUsage[hi].argvIndex = argv_index++;
        idx |= IDX_HI;
    }
    /* rows of one series come in ts order; without a series they come by (series_id, ts) */
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == VCOL_TS && series >= 0) {
        info->orderByConsumed = 1;
        if (info->aOrderBy[0].desc)
            idx |= IDX_DESC;
    } else if (info->nOrderBy == 2 && info->aOrderBy[0].iColumn == VCOL_SERIES_ID &&
               info->aOrderBy[1].iColumn == VCOL_TS && !info->aOrderBy[0].desc &&
               !info->aOrderBy[1].desc) {
        info->orderByConsumed = 1;
    }
    double cost = series >= 0 ? 1000 : 1e7;
    if (lo >= 0)
        cost /= 4;
    if (hi >= 0)
        cost /= 2;
    info->estimatedCost = cost;
    info->estimatedRows = (sqlite3_int64)cost;
    info->idxNum = idx;
    return SQLITE_OK;
}

static int cold_open(sqlite3_vtab *base, sqlite3_vtab_cursor **out)
{
    (void)base;
    struct cold_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static int cold_close(sqlite3_vtab_cursor *base)
{
    struct cold_cursor *c = (struct cold_cursor *)base;
    sqlite3_finalize(c->chunks);
    sqlite3_free(c->ts);
    sqlite3_free(c->values);
    minutes_release(&c->m);
    sqlite3_free(c);
    return SQLITE_OK;
}

/* A constraint value as an integer bound, rounded so that no matching row is excluded;
 * false when it is not a number (then it does not prune). */
static bool bound_of(sqlite3_value *v, bool lower, int64_t *out)
{
    int type = sqlite3_value_numeric_type(v);
    if (type == SQLITE_INTEGER) {
        *out = sqlite3_value_int64(v);
        return true;
    }
    if (type != SQLITE_FLOAT)
        return false;
    double d = lower ? floor(sqlite3_value_double(v)) : ceil(sqlite3_value_double(v));
    if (!(d > -9.2e18 && d < 9.2e18))
        return false;
    *out = (int64_t)d;
    return true;
}

static int set_error(struct cold_cursor *c, const char *msg)
{
    sqlite3_free(c->base.pVtab->zErrMsg);
    c->base.pVtab->zErrMsg = sqlite3_mprintf("%s", msg);
    return SQLITE_ERROR;
}

/* A chunk that does not decode: the stored data is damaged (SQLITE_CORRUPT), and the message
 * says which series and chunk. */
static int corrupt_chunk(struct cold_cursor *c, const char *why)
{
    sqlite3_free(c->base.pVtab->zErrMsg);
    c->base.pVtab->zErrMsg =
        sqlite3_mprintf("damaged compressed chunk of series %lld starting at ts %lld: %s",
                        (long long)sqlite3_column_int64(c->chunks, 0),
                        (long long)sqlite3_column_int64(c->chunks, 2), why);
    return SQLITE_CORRUPT_VTAB;
}

/* Decodes the chunk the statement is on; positions pos at the first row in [lo, hi] in the
 * cursor's order, or past the end when the chunk has none. */
static int load_chunk(struct cold_cursor *c)
{
    const void *blob = sqlite3_column_blob(c->chunks, 1);
    size_t len = (size_t)sqlite3_column_bytes(c->chunks, 1), n = 0;
    struct err e = {0};
    if (chunk_header(blob, len, &n, NULL, NULL, &e) != 0)
        return corrupt_chunk(c, e.msg);
    if (n > c->cap) {
        sqlite3_free(c->ts);
        sqlite3_free(c->values);
        c->ts = sqlite3_malloc64(n * sizeof *c->ts);
        c->values = sqlite3_malloc64(n * sizeof *c->values);
        c->cap = c->ts && c->values ? n : 0;
        if (!c->cap)
            return SQLITE_NOMEM;
    }
    if (chunk_decode(blob, len, c->ts, c->values, c->cap, &c->n, &e) != 0)
        return corrupt_chunk(c, e.msg);
    c->series_id = sqlite3_column_int64(c->chunks, 0);
    size_t first = 0, end = c->n; /* [first, end) is the part inside [lo, hi] */
    while (first < end && c->ts[first] < c->lo)
        first++;
    while (end > first && c->ts[end - 1] > c->hi)
        end--;
    c->pos = c->desc ? (ptrdiff_t)end - 1 : (ptrdiff_t)first;
    if (first == end)
        c->pos = c->desc ? -1 : (ptrdiff_t)c->n;
    return SQLITE_OK;
}

static bool pos_valid(const struct cold_cursor *c)
{
    return c->pos >= 0 && (size_t)c->pos < c->n && c->ts[c->pos] >= c->lo && c->ts[c->pos] <= c->hi;
}

/* Moves to the next chunk holding a row in range; eof when there is none. */
static int next_chunk(struct cold_cursor *c)
{
    for (;;) {
        int rc = sqlite3_step(c->chunks);
        if (rc == SQLITE_DONE) {
            c->eof = true;
            return SQLITE_OK;
        }
        if (rc != SQLITE_ROW)
            return rc;
        if ((rc = load_chunk(c)) != SQLITE_OK)
            return rc;
        if (pos_valid(c))
            return SQLITE_OK;
    }
}

/* Minutes mode: the statement's chunks come by (series_id, start_ts); loads the buckets of the
 * next series that has one in [lo, hi]; eof when none is left. */
static int next_series(struct cold_cursor *c)
{
    for (;;) {
        c->m.n = 0;
        while (!c->finished) {
            if (!c->pending) {
                int rc = sqlite3_step(c->chunks);
                if (rc != SQLITE_ROW) {
                    c->finished = true;
                    if (rc != SQLITE_DONE)
                        return rc;
                    break;
                }
                c->pending = true;
            }
            int64_t series = sqlite3_column_int64(c->chunks, 0);
            if (c->m.n && series != c->series_id)
                break; /* the next series' first chunk waits for the next call */
            c->series_id = series;
            c->pending = false;
            struct err e = {0};
            const void *blob = sqlite3_column_blob(c->chunks, 1);
            if (minutes_decode_append(&c->m, blob, (size_t)sqlite3_column_bytes(c->chunks, 1),
                                      &e) != 0)
                return e.code == E_NOMEM ? SQLITE_NOMEM : corrupt_chunk(c, e.msg);
        }
        if (c->m.n == 0) {
            c->eof = true;
            return SQLITE_OK;
        }
        c->first = 0;
        c->end = c->m.n;
        while (c->first < c->end && c->m.ts[c->first] < c->lo)
            c->first++;
        while (c->end > c->first && c->m.ts[c->end - 1] > c->hi)
            c->end--;
        if (c->first < c->end) {
            c->pos = c->desc ? (ptrdiff_t)c->end - 1 : (ptrdiff_t)c->first;
            return SQLITE_OK;
        }
    }
}

static int cold_filter(sqlite3_vtab_cursor *base, int idx, const char *idx_str, int argc,
                       sqlite3_value **argv)
{
    (void)idx_str;
    (void)argc;
    struct cold_cursor *c = (struct cold_cursor *)base;
    struct cold_vtab *v = (struct cold_vtab *)base->pVtab;
    c->eof = false;
    c->desc = idx & IDX_DESC;
    c->lo = INT64_MIN;
    c->hi = INT64_MAX;
    int a = 0;
    int64_t series = 0;
    bool by_series = false;
    if (idx & IDX_SERIES) {
        /* series ids are integers: 2.0 and '2' name series 2; 2.5 or 'x' name none */
        sqlite3_value *id = argv[a++];
        int type = sqlite3_value_numeric_type(id);
        double d = sqlite3_value_double(id);
        if (type == SQLITE_INTEGER) {
            series = sqlite3_value_int64(id);
        } else if (type == SQLITE_FLOAT && d == floor(d) && d > -9.2e18 && d < 9.2e18) {
            series = (int64_t)d;
        } else {
            c->eof = true;
            return SQLITE_OK;
        }
        by_series = true;
    }
    if ((idx & IDX_LO) && !bound_of(argv[a++], true, &c->lo))
        c->lo = INT64_MIN;
    if ((idx & IDX_HI) && !bound_of(argv[a++], false, &c->hi))
        c->hi = INT64_MAX;
    /* a chunk never spans a UTC day: one starting a day before lo cannot reach it; a minute
     * bucket at ts holds samples up to ts + 59999 */
    int64_t start_lo = c->lo > INT64_MIN + MS_PER_DAY ? c->lo - MS_PER_DAY : INT64_MIN;
    int64_t start_hi = v->minutes && c->hi < INT64_MAX - MINUTE_MS ? c->hi + MINUTE_MS - 1 : c->hi;
    /* minutes mode reads a series' chunks in ascending order and walks its buckets backwards */
    bool desc_chunks = c->desc && !v->minutes;
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT series_id, %s, start_ts FROM %s WHERE %s start_ts >= ?2 AND start_ts <= ?3 "
             "AND end_ts >= ?4 %s ORDER BY %s",
             v->minutes ? "minutes" : "data", v->chunks,
             by_series ? "series_id = ?1 AND" : "?1 IS NOT NULL AND",
             v->minutes ? "AND minutes IS NOT NULL" : "",
             by_series ? (desc_chunks ? "start_ts DESC" : "start_ts") : "series_id, start_ts");
    if (c->chunks && strcmp(sql, c->chunks_sql) == 0) {
        sqlite3_reset(c->chunks);
    } else {
        sqlite3_finalize(c->chunks);
        c->chunks = NULL;
        if (sqlite3_prepare_v2(v->db, sql, -1, &c->chunks, NULL) != SQLITE_OK)
            return set_error(c, sqlite3_errmsg(v->db));
        snprintf(c->chunks_sql, sizeof c->chunks_sql, "%s", sql);
    }
    sqlite3_bind_int64(c->chunks, 1, series);
    sqlite3_bind_int64(c->chunks, 2, start_lo);
    sqlite3_bind_int64(c->chunks, 3, start_hi);
    sqlite3_bind_int64(c->chunks, 4, c->lo);
    c->pending = c->finished = false;
    return v->minutes ? next_series(c) : next_chunk(c);
}

static int cold_next(sqlite3_vtab_cursor *base)
{
    struct cold_cursor *c = (struct cold_cursor *)base;
    c->pos += c->desc ? -1 : 1;
    if (((struct cold_vtab *)base->pVtab)->minutes)
        return c->pos >= (ptrdiff_t)c->first && c->pos < (ptrdiff_t)c->end ? SQLITE_OK
                                                                           : next_series(c);
    return pos_valid(c) ? SQLITE_OK : next_chunk(c);
}

static int cold_eof(sqlite3_vtab_cursor *base)
{
    return ((struct cold_cursor *)base)->eof;
}

/* A minute bucket's column; a NaN sum (inf + -inf) reads as NULL. */
static void minutes_column(const struct cold_cursor *c, sqlite3_context *ctx, int col)
{
    size_t i = (size_t)c->pos;
    switch (col) {
    case VCOL_TS:
        sqlite3_result_int64(ctx, c->m.ts[i]);
        break;
    case MCOL_MIN:
        sqlite3_result_double(ctx, c->m.min[i]);
        break;
    case MCOL_MAX:
        sqlite3_result_double(ctx, c->m.max[i]);
        break;
    case MCOL_SUM:
        sqlite3_result_double(ctx, c->m.sum[i]);
        break;
    case MCOL_COUNT:
        sqlite3_result_int64(ctx, c->m.count[i]);
        break;
    case MCOL_LAST:
        sqlite3_result_double(ctx, c->m.last[i]);
        break;
    default:
        sqlite3_result_int64(ctx, c->m.last_ts[i]);
        break;
    }
}

static int cold_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
    struct cold_cursor *c = (struct cold_cursor *)base;
    if (col != VCOL_SERIES_ID && ((struct cold_vtab *)base->pVtab)->minutes)
        minutes_column(c, ctx, col);
    else if (col == VCOL_SERIES_ID)
        sqlite3_result_int64(ctx, c->series_id);
    else if (col == VCOL_TS)
        sqlite3_result_int64(ctx, c->ts[c->pos]);
    else
        sqlite3_result_double(ctx, c->values[c->pos]);
    return SQLITE_OK;
}

static int cold_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
    struct cold_cursor *c = (struct cold_cursor *)base;
    /* unique per series only; nothing in opsdb relies on rowids here */
    *rowid = ((struct cold_vtab *)base->pVtab)->minutes ? c->m.ts[c->pos] : c->ts[c->pos];
    return SQLITE_OK;
}

static const sqlite3_module cold_module = {
    .iVersion = 0,
    .xCreate = cold_connect,
    .xConnect = cold_connect,
    .xBestIndex = cold_best_index,
    .xDisconnect = cold_disconnect,
    .xDestroy = cold_disconnect,
    .xOpen = cold_open,
    .xClose = cold_close,
    .xFilter = cold_filter,
    .xNext = cold_next,
    .xEof = cold_eof,
    .xColumn = cold_column,
    .xRowid = cold_rowid,
};

int sqlite_cold_register(sqlite3 *db)
{
    return sqlite3_create_module(db, "opsdb_chunks", &cold_module, NULL);
}
