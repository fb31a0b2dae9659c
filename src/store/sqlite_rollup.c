/*
 * Rollups of metric samples: per series, per 1-minute and 1-hour bucket, min, max, sum, count
 * and last. The minutes live in the chunks' rows (sqlite_cold.c computes them whenever it writes
 * samples; <table>_1m is the opsdb_chunks virtual table in minutes mode). The hours are a table
 * written in the same transaction as the samples, from the batch the writer already holds
 * sorted by (series, ts): one upsert per series and bucket, never a rescan, so a 30-day chart
 * reads 720 hourly rows per series instead of 259,200 samples. A sample written again
 * (same series and ts) replaces the old value; only then is its bucket recomputed from raw rows,
 * which keeps every rollup exact whatever the order or lateness of the data (sums are added in
 * another order than a query over raw rows would: equal up to floating-point rounding). A sum
 * that overflows (inf + -inf) is NULL from then on, as SQLite stores NaN.
 */
#include "store/sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LEVELS 4

struct level {
    int64_t bucket_ms;
    sqlite3_stmt *merge;     /* upsert of one bucket's aggregate of new samples */
    sqlite3_stmt *recompute; /* one bucket from the raw samples */
};

struct sqlite_rollup {
    sqlite3 *db;
    size_t nlevels;
    struct level levels[MAX_LEVELS];
};

struct bucket {
    int64_t series_id, ts;
    double min, max, sum, last;
    int64_t count, last_ts;
};

bool sqlite_rollup_in_chunks(const struct rollup_level *lv)
{
    return lv->bucket_ms == 60000;
}

void sqlite_rollup_ddl(struct buf *b, const struct table *t)
{
    size_t n;
    const struct rollup_level *lv = store_rollup_levels(&n);
    for (size_t i = 0; i < n; i++)
        if (sqlite_rollup_in_chunks(&lv[i]))
            buf_printf(b,
                       "CREATE VIRTUAL TABLE IF NOT EXISTS %s_%s USING opsdb_chunks(%s_chunks, "
                       "minutes);\n",
                       t->name, lv[i].name, t->name);
        else
            buf_printf(
                b,
                "CREATE TABLE IF NOT EXISTS %s_%s (series_id INTEGER NOT NULL, ts INTEGER NOT "
                "NULL, min REAL NOT NULL, max REAL NOT NULL, sum REAL, count INTEGER "
                "NOT NULL, last REAL NOT NULL, last_ts INTEGER NOT NULL, "
                "PRIMARY KEY (series_id, ts)) WITHOUT ROWID;\n",
                t->name, lv[i].name);
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, struct err *e)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "preparing rollup statement: %s", sqlite3_errmsg(db));
    return 0;
}

int sqlite_rollup_new(struct sqlite_rollup **out, sqlite3 *db, const struct table *t, struct err *e)
{
    struct sqlite_rollup *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, E_NOMEM, "out of memory");
    r->db = db;
    size_t n;
    const struct rollup_level *lv = store_rollup_levels(&n);
    char sql[1024];
    int rc = 0;
    for (size_t i = 0; i < n && i < MAX_LEVELS && rc == 0; i++) {
        if (sqlite_rollup_in_chunks(&lv[i]))
            continue;
        struct level *L = &r->levels[r->nlevels++];
        L->bucket_ms = lv[i].bucket_ms;
        snprintf(sql, sizeof sql,
                 "INSERT INTO %s_%s (series_id, ts, min, max, sum, count, last, last_ts) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (series_id, ts) DO UPDATE "
                 "SET min = min(min, excluded.min), max = max(max, excluded.max), "
                 "sum = sum + excluded.sum, count = count + excluded.count, "
                 "last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END, "
                 "last_ts = max(last_ts, excluded.last_ts)",
                 t->name, lv[i].name);
        rc = prepare(db, sql, &L->merge, e);
        if (rc)
            break;
        /* the bucket [?2, ?2 + size) of series ?1, from raw and cold samples; gone when empty */
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO %s_%s (series_id, ts, min, max, sum, count, last, "
                 "last_ts) SELECT ?1, ?2, min(value), max(value), sum(value), count(*), "
                 "(SELECT l.value FROM %s_raw l WHERE l.series_id = ?1 AND l.ts >= ?2 AND "
                 "l.ts < ?2 + %lld ORDER BY l.ts DESC LIMIT 1), max(ts) FROM %s_raw WHERE "
                 "series_id = ?1 AND ts >= ?2 AND ts < ?2 + %lld HAVING count(*) > 0",
                 t->name, lv[i].name, t->name, (long long)lv[i].bucket_ms, t->name,
                 (long long)lv[i].bucket_ms);
        rc = prepare(db, sql, &L->recompute, e);
    }
    if (rc) {
        sqlite_rollup_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}

void sqlite_rollup_free(struct sqlite_rollup **rp)
{
    struct sqlite_rollup *r = *rp;
    if (!r)
        return;
    for (size_t i = 0; i < r->nlevels; i++) {
        sqlite3_finalize(r->levels[i].merge);
        sqlite3_finalize(r->levels[i].recompute);
    }
    free(r);
    *rp = NULL;
}

static int step(sqlite3 *db, sqlite3_stmt *q, struct err *e)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return err_set(e, E_STORE, "rollup write failed: %s", sqlite3_errmsg(db));
    return 0;
}

static int merge(struct sqlite_rollup *r, struct level *L, const struct bucket *b, struct err *e)
{
    sqlite3_stmt *q = L->merge;
    sqlite3_bind_int64(q, 1, b->series_id);
    sqlite3_bind_int64(q, 2, b->ts);
    sqlite3_bind_double(q, 3, b->min);
    sqlite3_bind_double(q, 4, b->max);
    sqlite3_bind_double(q, 5, b->sum);
    sqlite3_bind_int64(q, 6, b->count);
    sqlite3_bind_double(q, 7, b->last);
    sqlite3_bind_int64(q, 8, b->last_ts);
    return step(r->db, q, e);
}

static int64_t bucket_of(int64_t ts, int64_t size)
{
    int64_t b = ts / size * size;
    return b > ts ? b - size : b; /* floor, also before 1970 */
}

/* Merges the new samples of one level, bucket by bucket, in one pass over the sorted points. */
static int merge_new(struct sqlite_rollup *r, struct level *L, const struct point *pts, size_t n,
                     struct err *e)
{
    struct bucket b = {0};
    bool open = false;
    for (size_t i = 0; i < n; i++) {
        const struct point *p = &pts[i];
        if (p->replaced)
            continue;
        int64_t start = bucket_of(p->ts, L->bucket_ms);
        if (open && (b.series_id != p->series_id || b.ts != start)) {
            int rc = merge(r, L, &b, e);
            if (rc)
                return rc;
            open = false;
        }
        if (!open) {
            b = (struct bucket){p->series_id, start, p->value, p->value, 0, p->value, 0, p->ts};
            open = true;
        }
        b.min = p->value < b.min ? p->value : b.min;
        b.max = p->value > b.max ? p->value : b.max;
        b.sum += p->value;
        b.count++;
        if (p->ts >= b.last_ts) { /* sorted by ts: the last one of the bucket wins */
            b.last = p->value;
            b.last_ts = p->ts;
        }
    }
    return open ? merge(r, L, &b, e) : 0;
}

static int recompute_replaced(struct sqlite_rollup *r, struct level *L, const struct point *pts,
                              size_t n, struct err *e)
{
    int64_t last_series = -1, last_bucket = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pts[i].replaced)
            continue;
        int64_t start = bucket_of(pts[i].ts, L->bucket_ms);
        if (pts[i].series_id == last_series && start == last_bucket)
            continue;
        last_series = pts[i].series_id;
        last_bucket = start;
        sqlite3_bind_int64(L->recompute, 1, pts[i].series_id);
        sqlite3_bind_int64(L->recompute, 2, start);
        int rc = step(r->db, L->recompute, e);
        if (rc)
            return rc;
    }
    return 0;
}

int sqlite_rollup_apply(struct sqlite_rollup *r, const struct point *pts, size_t n, struct err *e)
{
    for (size_t i = 0; i < r->nlevels; i++) {
        int rc = merge_new(r, &r->levels[i], pts, n, e);
        if (rc == 0)
            rc = recompute_replaced(r, &r->levels[i], pts, n, e);
        if (rc)
            return rc;
    }
    return 0;
}
