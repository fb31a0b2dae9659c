/*
 * Reading metric series for the series API (store_series_read): the stored buckets of chosen
 * series over a time range, one series at a time, in ts order.
 *
 * The minute level lives in the chunk rows (minutes.c); it is read here straight from them,
 * without the <table>_1m virtual table: a chart over a day reads 1,440 buckets per series, and
 * passing each through SQL's virtual machine and a sorter cost more than decoding them. The
 * other levels are tables with the key (series_id, ts), and raw samples are the <table>_cold
 * virtual table plus <table>_samples (the rows of databases written before chunks were): both
 * are read with one statement per series, which comes back in ts order without a sort.
 */
#include "store/minutes.h"
#include "store/sqlite_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS_PER_CALL 1024 /* buckets handed to the sink at a time from SQL rows */

struct reading {
    struct sqlite_conn *c;
    const struct series_read *q;
    series_sink sink;
    void *arg;
    sqlite3_stmt *stmt;
    struct minutes m;
    struct series_bucket *buckets;
    size_t cap;
};

static int step_error(struct reading *rd, int rc, struct err *e)
{
    if ((rc & 0xff) == SQLITE_INTERRUPT)
        return err_set(e, E_LIMIT,
                       "query stopped: it ran past the time limit of %lld ms (narrow the time "
                       "range or raise query.timeout)",
                       (long long)rd->q->timeout_ms);
    if ((rc & 0xff) == SQLITE_CORRUPT)
        return err_set(e, E_CORRUPT, "query failed: %s", sqlite3_errmsg(rd->c->db));
    return err_set(e, E_STORE, "query failed: %s", sqlite3_errmsg(rd->c->db));
}

static int reserve(struct reading *rd, size_t n, struct err *e)
{
    if (n <= rd->cap)
        return 0;
    struct series_bucket *b = realloc(rd->buckets, n * sizeof *b);
    if (!b)
        return err_set(e, E_NOMEM, "out of memory");
    rd->buckets = b;
    rd->cap = n;
    return 0;
}

/* ---- the minute level, from the chunk rows ------------------------------------------------ */

/* Decodes the minutes of every chunk of one series that may hold a bucket in the range (merging
 * a minute split by a chunk boundary) and hands the buckets in range to the sink. */
static int read_minutes(struct reading *rd, int64_t id, struct err *e)
{
    const struct series_read *q = rd->q;
    sqlite3_stmt *st = rd->stmt;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, id);
    /* a chunk never spans a UTC day; a bucket at ts holds samples up to ts + 59,999 */
    sqlite3_bind_int64(st, 2,
                       q->from_ms > INT64_MIN + MS_PER_DAY ? q->from_ms - MS_PER_DAY : INT64_MIN);
    sqlite3_bind_int64(st, 3, q->to_ms < INT64_MAX - MINUTE_MS ? q->to_ms + MINUTE_MS : q->to_ms);
    sqlite3_bind_int64(st, 4, q->from_ms);
    rd->m.n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct err de = {0};
        if (minutes_decode_append(&rd->m, sqlite3_column_blob(st, 0),
                                  (size_t)sqlite3_column_bytes(st, 0), &de) != 0)
            return de.code == E_NOMEM
                       ? err_set(e, E_NOMEM, "out of memory")
                       : err_set(e, E_CORRUPT,
                                 "query failed: damaged compressed chunk of series %lld starting "
                                 "at ts %lld: %s",
                                 (long long)id, (long long)sqlite3_column_int64(st, 1), de.msg);
    }
    if (rc != SQLITE_DONE)
        return step_error(rd, rc, e);
    const struct minutes *m = &rd->m;
    size_t first = 0, end = m->n;
    while (first < end && m->ts[first] < q->from_ms)
        first++;
    while (end > first && m->ts[end - 1] >= q->to_ms)
        end--;
    if (first == end)
        return 0;
    if (reserve(rd, end - first, e) != 0)
        return e->code;
    for (size_t i = first; i < end; i++)
        rd->buckets[i - first] = (struct series_bucket){
            m->ts[i], m->count[i], m->last_ts[i], m->min[i], m->max[i], m->sum[i], m->last[i]};
    return rd->sink(rd->arg, id, rd->buckets, end - first, e);
}

/* ---- raw samples and the rollup tables, through SQL ----------------------------------------- */

/* One series' rows of the statement, (ts, min, max, sum, count, last, last_ts) or (ts, value),
 * handed on in slices of BUCKETS_PER_CALL. */
static int read_rows(struct reading *rd, int64_t id, bool raw, struct err *e)
{
    sqlite3_stmt *st = rd->stmt;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, rd->q->from_ms);
    sqlite3_bind_int64(st, 3, rd->q->to_ms);
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct series_bucket *b = &rd->buckets[n];
        b->ts = sqlite3_column_int64(st, 0);
        if (raw) {
            double v = sqlite3_column_double(st, 1);
            *b = (struct series_bucket){b->ts, 1, b->ts, v, v, v, v};
        } else {
            b->min = sqlite3_column_double(st, 1);
            b->max = sqlite3_column_double(st, 2);
            /* a sum that overflowed is NaN, which SQLite stores as NULL */
            b->sum = sqlite3_column_type(st, 3) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 3);
            b->count = sqlite3_column_int64(st, 4);
            b->last = sqlite3_column_double(st, 5);
            b->last_ts = sqlite3_column_int64(st, 6);
        }
        if (++n == BUCKETS_PER_CALL) {
            int src = rd->sink(rd->arg, id, rd->buckets, n, e);
            if (src)
                return src;
            n = 0;
        }
    }
    if (rc != SQLITE_DONE)
        return step_error(rd, rc, e);
    return n ? rd->sink(rd->arg, id, rd->buckets, n, e) : 0;
}

/* ---- the read -------------------------------------------------------------------------------- */

static bool level_in_chunks(const char *resolution, bool *known)
{
    size_t n;
    const struct rollup_level *lv = store_rollup_levels(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(lv[i].name, resolution) == 0) {
            *known = true;
            return sqlite_rollup_in_chunks(&lv[i]);
        }
    *known = strcmp(resolution, "raw") == 0;
    return false;
}

int sqlite_series_read(void *conn, const struct series_read *q, series_sink sink, void *arg,
                       struct err *e)
{
    const struct table *t = schema_table(q->table);
    if (!t || t->kind != TABLE_SERIES)
        return err_set(e, E_INVALID, "table: '%s' has no series", q->table);
    bool known;
    bool minutes = level_in_chunks(q->resolution, &known);
    if (!known)
        return err_set(e, E_INVALID, "resolution: '%s' is not raw or a rollup level",
                       q->resolution);
    bool raw = strcmp(q->resolution, "raw") == 0;
    char sql[600];
    if (minutes)
        snprintf(sql, sizeof sql,
                 "SELECT minutes, start_ts FROM %s_chunks WHERE series_id = ?1 AND start_ts >= "
                 "?2 AND start_ts < ?3 AND end_ts >= ?4 AND minutes IS NOT NULL ORDER BY start_ts",
                 t->name);
    else if (raw)
        snprintf(sql, sizeof sql,
                 "SELECT ts, value FROM %s_cold WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 "
                 "UNION ALL SELECT ts, value FROM %s_samples WHERE series_id = ?1 AND ts >= ?2 "
                 "AND ts < ?3 ORDER BY ts",
                 t->name, t->name);
    else
        snprintf(sql, sizeof sql,
                 "SELECT ts, min, max, sum, count, last, last_ts FROM %s_%s WHERE series_id = ?1 "
                 "AND ts >= ?2 AND ts < ?3 ORDER BY ts",
                 t->name, q->resolution);
    struct sqlite_conn *c = conn;
    struct reading rd = {.c = c, .q = q, .sink = sink, .arg = arg};
    minutes_init(&rd.m);
    c->untrusted = false;
    c->deadline_ms = q->timeout_ms ? time_now_ms() + q->timeout_ms : 0;
    int rc = 0;
    if (sqlite3_prepare_v2(c->db, sql, -1, &rd.stmt, NULL) != SQLITE_OK)
        rc = err_set(e, E_STORE, "query failed: %s", sqlite3_errmsg(c->db));
    else if (!minutes)
        rc = reserve(&rd, BUCKETS_PER_CALL, e);
    for (size_t i = 0; rc == 0 && i < q->nids; i++)
        rc = minutes ? read_minutes(&rd, q->ids[i], e) : read_rows(&rd, q->ids[i], raw, e);
    sqlite3_finalize(rd.stmt);
    c->deadline_ms = 0;
    minutes_release(&rd.m);
    free(rd.buckets);
    return rc;
}
