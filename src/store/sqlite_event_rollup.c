/*
 * Rollups of event tables (api_usage, handler_metrics, error_logs): per group key and per 1-minute,
 * 1-hour and 1-day bucket, the sums, maxima and latency sketches the views need, so a window of a
 * day or a month reads a few thousand rollup rows instead of millions of events (a month of
 * hourly latency sketches is still ~70k merges for api_usage: the daily level makes it ~3k).
 *
 * They are maintained in the write transaction from the rows the batch just inserted into a
 * partition (a rowid range: the writer is the only one inserting, so they are contiguous): one
 * INSERT ... SELECT ... GROUP BY per level folds the batch into its buckets with an upsert, never
 * a rescan. Events are only ever added, so every bucket is exact at any lateness: sums add,
 * maxima take the larger, and latency sketches (core/sketch.h) merge, keeping p50/p95/p99 within
 * 1% of the exact value. Each table's rollup is a row of `defs`: its key, its measures and how
 * two buckets merge.
 */
#include "store/sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct event_rollup_def {
    const char *table;
    const char *key_ddl;   /* key columns of the rollup table (besides ts) */
    const char *keys;      /* their names */
    const char *key_exprs; /* their values over base rows */
    const char *measure_ddl;
    const char *measures;      /* measure column names */
    const char *measure_exprs; /* aggregates over base rows, in the same order */
    /* ON CONFLICT assignments, a bucket plus new rows: sums as coalesce(a + b, a, b) and maxima
     * as coalesce(max(a, b), a, b), so a side that is NULL (no value yet) does not win */
    const char *merge;
    const char
        *reduce; /* aggregates over rollup rows, in measure order: buckets into a wider one */
};

static const struct event_rollup_def defs[] = {
    {"api_usage",
     "service TEXT NOT NULL, endpoint TEXT NOT NULL, method TEXT NOT NULL, "
     "status_class INTEGER NOT NULL",
     "service, endpoint, method, status_class", "service, endpoint, method, status_code / 100",
     "requests INTEGER NOT NULL, errors INTEGER NOT NULL, request_bytes INTEGER, response_bytes "
     "INTEGER, latency_sum REAL, latency_count INTEGER, latency_sketch BLOB, last_ts INTEGER NOT "
     "NULL",
     "requests, errors, request_bytes, response_bytes, latency_sum, latency_count, "
     "latency_sketch, last_ts",
     "sum(count), sum(CASE WHEN status_code >= 500 THEN count ELSE 0 END), sum(request_bytes), "
     "sum(response_bytes), sum(latency_ms * count), sum(CASE WHEN latency_ms IS NOT NULL THEN "
     "count END), sketch(latency_ms, count), max(ts)",
     "requests = requests + excluded.requests, errors = errors + excluded.errors, "
     "request_bytes = coalesce(request_bytes + excluded.request_bytes, request_bytes, "
     "excluded.request_bytes), response_bytes = coalesce(response_bytes + "
     "excluded.response_bytes, response_bytes, excluded.response_bytes), latency_sum = "
     "coalesce(latency_sum + excluded.latency_sum, latency_sum, excluded.latency_sum), "
     "latency_count = coalesce(latency_count + excluded.latency_count, latency_count, "
     "excluded.latency_count), latency_sketch = sketch_combine(latency_sketch, "
     "excluded.latency_sketch), last_ts = coalesce(max(last_ts, excluded.last_ts), "
     "last_ts, excluded.last_ts)",
     "sum(requests), sum(errors), sum(request_bytes), sum(response_bytes), sum(latency_sum), "
     "sum(latency_count), sketch_merge(latency_sketch), max(last_ts)"},
    {"handler_metrics", "handler TEXT NOT NULL, component TEXT NOT NULL", "handler, component",
     "handler, component",
     "invocations INTEGER NOT NULL, errors INTEGER, retries INTEGER, duration_sum REAL, "
     "duration_count INTEGER, duration_p95_max REAL, queue_depth_max INTEGER, last_ts INTEGER "
     "NOT NULL",
     "invocations, errors, retries, duration_sum, duration_count, duration_p95_max, "
     "queue_depth_max, last_ts",
     "sum(invocations), sum(errors), sum(retries), sum(duration_ms_avg * invocations), "
     "sum(CASE WHEN duration_ms_avg IS NOT NULL THEN invocations END), max(duration_ms_p95), "
     "max(queue_depth), max(ts)",
     "invocations = invocations + excluded.invocations, errors = coalesce(errors + "
     "excluded.errors, errors, excluded.errors), retries = coalesce(retries + "
     "excluded.retries, retries, excluded.retries), duration_sum = coalesce(duration_sum + "
     "excluded.duration_sum, duration_sum, excluded.duration_sum), duration_count = "
     "coalesce(duration_count + excluded.duration_count, duration_count, "
     "excluded.duration_count), duration_p95_max = coalesce(max(duration_p95_max, "
     "excluded.duration_p95_max), duration_p95_max, excluded.duration_p95_max), "
     "queue_depth_max = coalesce(max(queue_depth_max, excluded.queue_depth_max), "
     "queue_depth_max, excluded.queue_depth_max), last_ts = coalesce(max(last_ts, "
     "excluded.last_ts), last_ts, excluded.last_ts)",
     "sum(invocations), sum(errors), sum(retries), sum(duration_sum), sum(duration_count), "
     "max(duration_p95_max), max(queue_depth_max), max(last_ts)"},
    {"error_logs", "fingerprint TEXT NOT NULL, host TEXT NOT NULL", "fingerprint, host",
     "coalesce(fingerprint, ''), host",
     "count INTEGER NOT NULL, level_rank INTEGER NOT NULL, error_type TEXT NOT NULL, component "
     "TEXT NOT NULL, last_ts INTEGER NOT NULL",
     "count, level_rank, error_type, component, last_ts",
     /* severity as a rank, so that buckets merge with max(); error_summary names it back */
     "count(*), max(CASE level WHEN 'debug' THEN 0 WHEN 'info' THEN 1 WHEN 'notice' THEN 2 WHEN "
     "'warning' THEN 3 WHEN 'error' THEN 4 WHEN 'critical' THEN 5 ELSE 6 END), max(error_type), "
     "max(component), max(ts)",
     "count = count + excluded.count, level_rank = max(level_rank, excluded.level_rank), "
     "error_type = max(error_type, excluded.error_type), component = max(component, "
     "excluded.component), last_ts = max(last_ts, excluded.last_ts)",
     "sum(count), max(level_rank), max(error_type), max(component), max(last_ts)"},
};

/* Finest first; the daily level goes with the hourly one's retention. */
static const struct rollup_level levels[] = {{"1m", 60000}, {"1h", 3600000}, {"1d", 86400000}};

const struct rollup_level *sqlite_event_rollup_levels(size_t *count)
{
    *count = sizeof levels / sizeof levels[0];
    return levels;
}

static const struct event_rollup_def *def_of(const struct table *t)
{
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (strcmp(defs[i].table, t->name) == 0)
            return &defs[i];
    return NULL;
}

bool sqlite_event_rollup_exists(const struct table *t)
{
    return def_of(t) != NULL;
}

void sqlite_event_rollup_ddl(struct buf *b, const struct table *t)
{
    const struct event_rollup_def *d = def_of(t);
    if (!d)
        return;
    size_t n;
    const struct rollup_level *lv = sqlite_event_rollup_levels(&n);
    for (size_t i = 0; i < n; i++)
        buf_printf(b,
                   "CREATE TABLE IF NOT EXISTS %s_%s (ts INTEGER NOT NULL, %s, %s, PRIMARY KEY "
                   "(ts, %s)) WITHOUT ROWID;\n",
                   t->name, lv[i].name, d->key_ddl, d->measure_ddl, d->keys);
}

/* The rows of source (WHERE `where`) grouped into one level's buckets, as rollup rows. */
static void fold_select_sql(struct buf *b, const struct event_rollup_def *d,
                            const struct rollup_level *lv, const char *source, const char *where)
{
    long long ms = (long long)lv->bucket_ms;
    buf_printf(b,
               "SELECT (ts - ((ts %% %lld) + %lld) %% %lld) AS bucket, %s, %s FROM %s WHERE %s "
               "GROUP BY bucket, %s",
               ms, ms, ms, d->key_exprs, d->measure_exprs, source, where, d->key_exprs);
}

/* The fold of the rows of source (WHERE `where`) into one level's buckets (the backfill). */
static void fold_sql(struct buf *b, const struct event_rollup_def *d, const struct rollup_level *lv,
                     const char *source, const char *where)
{
    buf_printf(b, "INSERT INTO %s_%s (ts, %s, %s) ", d->table, lv->name, d->keys, d->measures);
    fold_select_sql(b, d, lv, source, where);
    buf_printf(b, " ON CONFLICT (ts, %s) DO UPDATE SET %s", d->keys, d->merge);
}

/* Fills t's rollups (every table with rollups when t is NULL) from all base rows. */
static int backfill(sqlite3 *db, const char *table, struct err *e)
{
    size_t n;
    const struct rollup_level *lv = sqlite_event_rollup_levels(&n);
    struct buf sql;
    buf_init(&sql, 1 << 16);
    int rc = 0;
    for (size_t i = 0; i < sizeof defs / sizeof defs[0] && rc == 0; i++)
        for (size_t j = 0; j < n && rc == 0 && (!table || !strcmp(table, defs[i].table)); j++) {
            sql.len = 0;
            /* from scratch: whatever the tables held is replaced by what the rows say */
            buf_printf(&sql, "DELETE FROM %s_%s; ", defs[i].table, lv[j].name);
            fold_sql(&sql, &defs[i], &lv[j], defs[i].table, "true");
            rc = sqlite_exec(db, sql.data, e);
        }
    buf_release(&sql);
    return rc;
}

int sqlite_event_rollup_backfill(sqlite3 *db, struct err *e)
{
    return backfill(db, NULL, e);
}

int sqlite_error_rollup_backfill(sqlite3 *db, struct err *e)
{
    return backfill(db, "error_logs", e);
}

int sqlite_daily_rollup_backfill(sqlite3 *db, struct err *e)
{
    struct buf sql;
    buf_init(&sql, 1 << 16);
    int rc = 0;
    for (size_t i = 0; i < sizeof defs / sizeof defs[0] && rc == 0; i++) {
        const struct event_rollup_def *d = &defs[i];
        sql.len = 0;
        buf_printf(&sql,
                   "DELETE FROM %s_1d; INSERT INTO %s_1d (ts, %s, %s) SELECT (ts - ((ts %% "
                   "86400000) + 86400000) %% 86400000) AS bucket, %s, %s FROM %s_1h WHERE true "
                   "GROUP BY bucket, %s",
                   d->table, d->table, d->keys, d->measures, d->keys, d->reduce, d->table, d->keys);
        rc = sqlite_exec(db, sql.data, e);
    }
    buf_release(&sql);
    return rc;
}

#define MAX_LEVELS 4

/* A batch is folded in two steps: its rows are grouped once into per-minute deltas (a temp
 * table), and the deltas are upserted into every level; the wider levels group the few delta
 * rows, not the raw rows again. */
struct sqlite_event_rollup {
    sqlite3 *db;
    sqlite3_stmt *clear, *fold; /* fold: ?1..?2, the batch's rowids, into the deltas */
    size_t nlevels;
    sqlite3_stmt *upsert[MAX_LEVELS];
};

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, const struct table *t,
                   struct err *e)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "preparing the %s rollup: %s", t->name, sqlite3_errmsg(db));
    return 0;
}

/* The deltas into one level: grouped by its bucket, reduced, upserted. */
static void upsert_sql(struct buf *b, const struct event_rollup_def *d,
                       const struct rollup_level *lv)
{
    long long ms = (long long)lv->bucket_ms;
    buf_printf(b,
               "INSERT INTO %s_%s (ts, %s, %s) SELECT (ts - ((ts %% %lld) + %lld) %% %lld) AS "
               "bucket, %s, %s FROM temp.%s_delta WHERE true GROUP BY bucket, %s ON CONFLICT "
               "(ts, %s) DO UPDATE SET %s",
               d->table, lv->name, d->keys, d->measures, ms, ms, ms, d->keys, d->reduce, d->table,
               d->keys, d->keys, d->merge);
}

static int prepare_all(struct sqlite_event_rollup *r, const struct event_rollup_def *d,
                       const struct table *t, const char *source, struct buf *sql, struct err *e)
{
    size_t n;
    const struct rollup_level *lv = sqlite_event_rollup_levels(&n);
    buf_printf(sql, "CREATE TEMP TABLE IF NOT EXISTS %s_delta (ts INTEGER NOT NULL, %s, %s)",
               d->table, d->key_ddl, d->measure_ddl);
    int rc = sqlite_exec(r->db, sql->data, e);
    sql->len = 0;
    buf_printf(sql, "DELETE FROM temp.%s_delta", d->table);
    if (rc == 0)
        rc = prepare(r->db, sql->data, &r->clear, t, e);
    sql->len = 0;
    buf_printf(sql, "INSERT INTO temp.%s_delta (ts, %s, %s) ", d->table, d->keys, d->measures);
    fold_select_sql(sql, d, &lv[0], source, "rowid BETWEEN ?1 AND ?2");
    if (rc == 0)
        rc = prepare(r->db, sql->data, &r->fold, t, e);
    for (size_t i = 0; i < n && i < MAX_LEVELS && rc == 0; i++) {
        sql->len = 0;
        upsert_sql(sql, d, &lv[i]);
        if ((rc = prepare(r->db, sql->data, &r->upsert[i], t, e)) == 0)
            r->nlevels++;
    }
    return rc;
}

int sqlite_event_rollup_new(struct sqlite_event_rollup **out, sqlite3 *db, const struct table *t,
                            const char *source, struct err *e)
{
    *out = NULL;
    const struct event_rollup_def *d = def_of(t);
    if (!d)
        return 0;
    struct sqlite_event_rollup *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, E_NOMEM, "out of memory");
    r->db = db;
    struct buf sql;
    buf_init(&sql, 1 << 16);
    int rc = prepare_all(r, d, t, source, &sql, e);
    buf_release(&sql);
    if (rc) {
        sqlite_event_rollup_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}

void sqlite_event_rollup_free(struct sqlite_event_rollup **rp)
{
    struct sqlite_event_rollup *r = *rp;
    if (!r)
        return;
    sqlite3_finalize(r->clear);
    sqlite3_finalize(r->fold);
    for (size_t i = 0; i < r->nlevels; i++)
        sqlite3_finalize(r->upsert[i]);
    free(r);
    *rp = NULL;
}

static int run(struct sqlite_event_rollup *r, sqlite3_stmt *q, struct err *e)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return err_set(e, E_STORE, "rollup write failed: %s", sqlite3_errmsg(r->db));
    return 0;
}

int sqlite_event_rollup_apply(struct sqlite_event_rollup *r, int64_t first_rowid,
                              int64_t last_rowid, struct err *e)
{
    sqlite3_bind_int64(r->fold, 1, first_rowid);
    sqlite3_bind_int64(r->fold, 2, last_rowid);
    int rc = run(r, r->clear, e);
    if (rc == 0)
        rc = run(r, r->fold, e);
    for (size_t i = 0; i < r->nlevels && rc == 0; i++)
        rc = run(r, r->upsert[i], e);
    return rc;
}
