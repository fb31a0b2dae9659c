/*
 * Metric samples, the writer's side: every sample is kept in compressed per-series chunks in
 * <table>_chunks (chunk.c's codec). Ingestion writes each series' run of a batch as one chunk,
 * so a batch of 200,000 points is a thousand row inserts, not 200,000 B-tree entries; compaction
 * later rewrites a past day of one series, held in a chunk per batch, as one chunk (it compresses
 * better and reads faster). The virtual table that reads chunks back is sqlite_cold_vtab.c.
 *
 * A chunk holds samples of one series within one UTC day (so a day is a partition: retention
 * drops whole days of chunks) and at most ROW_SAMPLES_MAX samples. The invariant that makes the
 * chunks the table, with no sample counted twice: the chunks of a series never overlap in time.
 * A run of new samples that does overlap a chunk (a late or rewritten sample) is merged with its
 * day's chunks and the day is rewritten.
 *
 * <table>_samples, where samples were kept a row each before schema version 8, stays empty:
 * compaction still moves any raw sample it finds into chunks, which is how that migration
 * empties it.
 *
 * Every change happens inside the caller's write transaction: a failure rolls back with it.
 */
#include "store/chunk.h"
#include "store/minutes.h"
#include "store/sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW_SAMPLES_MAX 65536
/* A new run of samples is added to its series' last chunk, rather than starting a chunk of its
 * own, while the two together hold at most this many: a source that sends one sample per series
 * per request (an agent every 10 s) then fills chunks of a few hundred samples instead of a row
 * per sample, at the cost of re-encoding a small chunk per request. */
#define HEAD_SAMPLES_MAX 256

struct samples {
    int64_t *ts;
    double *values;
    size_t n, cap;
};

struct sqlite_cold {
    sqlite3 *db;
    sqlite3_stmt *day_chunks;   /* the chunks of one series in one day, by start */
    sqlite3_stmt *put_chunk;    /* insert one chunk */
    sqlite3_stmt *drop_chunks;  /* delete the chunks of one series in one day */
    sqlite3_stmt *chunk_before; /* the last chunk of one series starting at or before a ts */
    sqlite3_stmt *drop_chunk;   /* delete one chunk */
    sqlite3_stmt *days_to_fold; /* days of one series in more chunks than they need */
    sqlite3_stmt *hot_before;   /* raw samples of one series before a ts */
    sqlite3_stmt *drop_hot;     /* delete them */
    sqlite3_stmt *next_series;  /* series ids after a cursor */
    int64_t series_cursor;      /* compaction resumes after this id */
    struct samples merged;      /* scratch: a day of one series */
    struct buf blob;            /* scratch: one encoded chunk */
    struct minutes minutes;     /* scratch: the minute buckets of one chunk */
    struct buf minutes_blob;    /* scratch: their encoding */
};

void sqlite_cold_ddl(struct buf *b, const struct table *t)
{
    buf_printf(b,
               "CREATE TABLE IF NOT EXISTS %s_chunks (series_id INTEGER NOT NULL, day INTEGER NOT "
               "NULL, start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, count INTEGER NOT NULL, "
               "data BLOB NOT NULL, minutes BLOB, PRIMARY KEY (series_id, start_ts));\n"
               "CREATE INDEX IF NOT EXISTS %s_chunks_day ON %s_chunks (day);\n"
               "CREATE VIRTUAL TABLE IF NOT EXISTS %s_cold USING opsdb_chunks(%s_chunks);\n"
               "DROP VIEW IF EXISTS %s_raw;\n"
               "CREATE VIEW %s_raw AS SELECT series_id, ts, value FROM %s_cold UNION ALL "
               "SELECT series_id, ts, value FROM %s_samples;\n",
               t->name, t->name, t->name, t->name, t->name, t->name, t->name, t->name, t->name);
}

static int64_t day_of(int64_t ts)
{
    int64_t d = ts / MS_PER_DAY;
    return d * MS_PER_DAY > ts ? d - 1 : d;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, struct err *e)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "preparing '%.80s': %s", sql, sqlite3_errmsg(db));
    return 0;
}

int sqlite_cold_new(struct sqlite_cold **out, sqlite3 *db, const struct table *t, struct err *e)
{
    struct sqlite_cold *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, E_NOMEM, "out of memory");
    c->db = db;
    buf_init(&c->blob, 64u << 20);
    buf_init(&c->minutes_blob, 64u << 20);
    minutes_init(&c->minutes);
    const char *n = t->name;
    char sql[9][400];
    snprintf(sql[0], sizeof sql[0],
             "SELECT data FROM %s_chunks WHERE series_id = ?1 AND start_ts >= ?2 AND "
             "start_ts < ?2 + %lld ORDER BY start_ts",
             n, MS_PER_DAY);
    snprintf(sql[1], sizeof sql[1],
             "INSERT INTO %s_chunks (series_id, day, start_ts, end_ts, count, data, minutes) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)",
             n);
    snprintf(sql[2], sizeof sql[2],
             "DELETE FROM %s_chunks WHERE series_id = ?1 AND start_ts >= ?2 AND "
             "start_ts < ?2 + %lld",
             n, MS_PER_DAY);
    snprintf(sql[3], sizeof sql[3],
             "SELECT start_ts, end_ts, count, data FROM %s_chunks WHERE series_id = ?1 AND "
             "start_ts <= ?2 ORDER BY start_ts DESC LIMIT 1",
             n);
    snprintf(sql[4], sizeof sql[4],
             "SELECT ts, value FROM %s_samples WHERE series_id = ? AND ts < ? ORDER BY ts", n);
    snprintf(sql[5], sizeof sql[5], "DELETE FROM %s_samples WHERE series_id = ? AND ts < ?", n);
    snprintf(sql[6], sizeof sql[6], "SELECT id FROM %s_series WHERE id > ? ORDER BY id LIMIT ?", n);
    snprintf(sql[7], sizeof sql[7],
             "SELECT day FROM %s_chunks WHERE series_id = ?1 GROUP BY day HAVING max(end_ts) < ?2 "
             "AND count(*) > (sum(count) + %d) / %d",
             n, ROW_SAMPLES_MAX - 1, ROW_SAMPLES_MAX);
    snprintf(sql[8], sizeof sql[8], "DELETE FROM %s_chunks WHERE series_id = ?1 AND start_ts = ?2",
             n);
    int rc = prepare(db, sql[0], &c->day_chunks, e);
    if (!rc)
        rc = prepare(db, sql[1], &c->put_chunk, e);
    if (!rc)
        rc = prepare(db, sql[2], &c->drop_chunks, e);
    if (!rc)
        rc = prepare(db, sql[3], &c->chunk_before, e);
    if (!rc)
        rc = prepare(db, sql[4], &c->hot_before, e);
    if (!rc)
        rc = prepare(db, sql[5], &c->drop_hot, e);
    if (!rc)
        rc = prepare(db, sql[6], &c->next_series, e);
    if (!rc)
        rc = prepare(db, sql[7], &c->days_to_fold, e);
    if (!rc)
        rc = prepare(db, sql[8], &c->drop_chunk, e);
    if (rc) {
        sqlite_cold_free(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void sqlite_cold_free(struct sqlite_cold **cp)
{
    struct sqlite_cold *c = *cp;
    if (!c)
        return;
    sqlite3_stmt *all[] = {c->day_chunks,   c->put_chunk,  c->drop_chunks,
                           c->chunk_before, c->drop_chunk, c->days_to_fold,
                           c->hot_before,   c->drop_hot,   c->next_series};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);
    free(c->merged.ts);
    free(c->merged.values);
    buf_release(&c->blob);
    buf_release(&c->minutes_blob);
    minutes_release(&c->minutes);
    free(c);
    *cp = NULL;
}

static int reserve(struct samples *s, size_t n, struct err *e)
{
    if (n <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 1024;
    while (cap < n)
        cap *= 2;
    int64_t *ts = realloc(s->ts, cap * sizeof *ts);
    if (ts)
        s->ts = ts;
    double *values = ts ? realloc(s->values, cap * sizeof *values) : NULL;
    if (!values)
        return err_set(e, E_NOMEM, "out of memory for %zu cold samples", n);
    s->values = values;
    s->cap = cap;
    return 0;
}

static int step_done(struct sqlite_cold *c, sqlite3_stmt *q, struct err *e)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return err_set(e, E_STORE, "cold storage write failed: %s", sqlite3_errmsg(c->db));
    return 0;
}

/* Appends the decoded chunks of one series' day to c->merged (they come in ts order). */
static int load_day(struct sqlite_cold *c, int64_t series_id, int64_t day_start, struct err *e)
{
    sqlite3_stmt *q = c->day_chunks;
    sqlite3_bind_int64(q, 1, series_id);
    sqlite3_bind_int64(q, 2, day_start);
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(q)) == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(q, 0);
        size_t len = (size_t)sqlite3_column_bytes(q, 0), n = 0;
        rc = chunk_header(blob, len, &n, NULL, NULL, e);
        if (rc == 0)
            rc = reserve(&c->merged, c->merged.n + n, e);
        size_t got = 0;
        if (rc == 0)
            rc = chunk_decode(blob, len, c->merged.ts + c->merged.n, c->merged.values + c->merged.n,
                              n, &got, e);
        c->merged.n += rc == 0 ? got : 0;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = err_set(e, E_STORE, "reading cold chunks: %s", sqlite3_errmsg(c->db));
    sqlite3_reset(q);
    if (rc == E_INVALID) { /* a corrupt chunk is a database problem, not the caller's */
        e->code = rc = E_CORRUPT;
        char why[sizeof e->msg];
        snprintf(why, sizeof why, "%s", e->msg);
        snprintf(e->msg, sizeof e->msg, "series %lld, day starting %lld: unreadable chunk: %.400s",
                 (long long)series_id, (long long)day_start, why);
    }
    return rc;
}

/* Inserts one chunk of n samples (1..ROW_SAMPLES_MAX, one day, strictly increasing ts) with
 * their minute buckets. */
static int put_chunk(struct sqlite_cold *c, int64_t series_id, int64_t day, const int64_t *ts,
                     const double *values, size_t n, struct err *e)
{
    c->blob.len = 0;
    c->minutes.n = 0;
    c->minutes_blob.len = 0;
    int rc = chunk_encode(ts, values, n, &c->blob, e);
    if (rc == 0)
        rc = minutes_add_samples(&c->minutes, ts, values, n, e);
    if (rc == 0)
        rc = minutes_encode(&c->minutes, 0, c->minutes.n, &c->minutes_blob, e);
    if (rc)
        return rc;
    sqlite3_stmt *q = c->put_chunk;
    sqlite3_bind_int64(q, 1, series_id);
    sqlite3_bind_int64(q, 2, day);
    sqlite3_bind_int64(q, 3, ts[0]);
    sqlite3_bind_int64(q, 4, ts[n - 1]);
    sqlite3_bind_int64(q, 5, (int64_t)n);
    sqlite3_bind_blob(q, 6, c->blob.data, (int)c->blob.len, SQLITE_STATIC);
    sqlite3_bind_blob(q, 7, c->minutes_blob.data, (int)c->minutes_blob.len, SQLITE_STATIC);
    return step_done(c, q, e);
}

/* Replaces the chunks of the day with c->merged, ROW_SAMPLES_MAX samples per chunk. */
static int store_day(struct sqlite_cold *c, int64_t series_id, int64_t day_start, struct err *e)
{
    sqlite3_bind_int64(c->drop_chunks, 1, series_id);
    sqlite3_bind_int64(c->drop_chunks, 2, day_start);
    int rc = step_done(c, c->drop_chunks, e);
    for (size_t at = 0; rc == 0 && at < c->merged.n; at += ROW_SAMPLES_MAX) {
        size_t n = c->merged.n - at < ROW_SAMPLES_MAX ? c->merged.n - at : ROW_SAMPLES_MAX;
        rc = put_chunk(c, series_id, day_start / MS_PER_DAY, c->merged.ts + at,
                       c->merged.values + at, n, e);
    }
    return rc;
}

/* Merges points (one series, one day, sorted by ts then input order) into the day's chunks:
 * a later sample of the same ts replaces an earlier one and is marked replaced. */
static int merge_day(struct sqlite_cold *c, struct point *pts, size_t n, struct err *e)
{
    int64_t series_id = pts[0].series_id, day_start = day_of(pts[0].ts) * MS_PER_DAY;
    c->merged.n = 0;
    int rc = load_day(c, series_id, day_start, e);
    if (rc == 0)
        rc = reserve(&c->merged, c->merged.n + n, e);
    if (rc)
        return rc;
    /* merge from the back into the same array: old samples are c->merged[0, old) */
    size_t old = c->merged.n, i = old, j = n, out = old + n;
    while (j > 0) {
        struct point *p = &pts[j - 1];
        if (i > 0 && c->merged.ts[i - 1] > p->ts) {
            out--, i--;
            c->merged.ts[out] = c->merged.ts[i];
            c->merged.values[out] = c->merged.values[i];
            continue;
        }
        bool dup_in_batch = j >= 2 && pts[j - 2].ts == p->ts;
        if (i > 0 && c->merged.ts[i - 1] == p->ts) {
            i--; /* the new value replaces the old */
            p->replaced = true;
        }
        out--;
        c->merged.ts[out] = p->ts;
        c->merged.values[out] = p->value;
        j--;
        /* earlier duplicates in the batch are overwritten by this one: skip them */
        while (dup_in_batch && j > 0 && pts[j - 1].ts == p->ts) {
            p->replaced = true;
            j--;
        }
    }
    /* the old samples left, [0, i), are in place; the merged tail starts at out: close the gap
     * that dropped duplicates left between them */
    size_t kept = i, gap = out - i;
    if (gap) {
        memmove(c->merged.ts + kept, c->merged.ts + out, (old + n - out) * sizeof(int64_t));
        memmove(c->merged.values + kept, c->merged.values + out, (old + n - out) * sizeof(double));
    }
    c->merged.n = old + n - gap;
    return store_day(c, series_id, day_start, e);
}

/* Merges pts[0, n) (one series, sorted) day by day. */
static int merge_days(struct sqlite_cold *c, struct point *pts, size_t n, struct err *e)
{
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && day_of(pts[j].ts) == day_of(pts[i].ts))
            j++;
        int rc = merge_day(c, pts + i, j - i, e);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}

/* Appends pts[0, n) (sorted by ts then input order, all after what c->merged holds) to
 * c->merged: of samples with one ts the last written wins, the others are marked replaced (their
 * buckets are recomputed from what is stored). */
static int append_run(struct sqlite_cold *c, struct point *pts, size_t n, struct err *e)
{
    int rc = reserve(&c->merged, c->merged.n + n, e);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i + 1 < n && pts[i + 1].ts == pts[i].ts) {
            pts[i].replaced = true;
            continue;
        }
        c->merged.ts[c->merged.n] = pts[i].ts;
        c->merged.values[c->merged.n++] = pts[i].value;
    }
    return rc;
}

/* Writes c->merged (one series, one day) as chunks of at most ROW_SAMPLES_MAX samples. */
static int put_merged(struct sqlite_cold *c, int64_t series_id, int64_t day, struct err *e)
{
    int rc = 0;
    for (size_t at = 0; rc == 0 && at < c->merged.n; at += ROW_SAMPLES_MAX) {
        size_t k = c->merged.n - at < ROW_SAMPLES_MAX ? c->merged.n - at : ROW_SAMPLES_MAX;
        rc = put_chunk(c, series_id, day, c->merged.ts + at, c->merged.values + at, k, e);
    }
    return rc;
}

/* Decodes the chunk the statement q is on (series_id's; its blob in column data_col) into
 * c->merged. */
static int load_chunk_row(struct sqlite_cold *c, sqlite3_stmt *q, int data_col, int64_t series_id,
                          struct err *e)
{
    const void *blob = sqlite3_column_blob(q, data_col);
    size_t len = (size_t)sqlite3_column_bytes(q, data_col), n = 0, got = 0;
    int rc = chunk_header(blob, len, &n, NULL, NULL, e);
    if (rc == 0)
        rc = reserve(&c->merged, n, e);
    if (rc == 0)
        rc = chunk_decode(blob, len, c->merged.ts, c->merged.values, c->merged.cap, &got, e);
    c->merged.n = rc == 0 ? got : 0;
    if (rc == E_INVALID) { /* a corrupt chunk is a database problem, not the caller's */
        char why[sizeof e->msg];
        snprintf(why, sizeof why, "%s", e->msg);
        rc = err_set(e, E_CORRUPT, "series %lld: unreadable chunk: %.400s", (long long)series_id,
                     why);
    }
    return rc;
}

/* Writes one series' run pts[0, n) within one day. Chunks of a series never overlap: a run
 * that overlaps the series' chunks is merged with its day (merge_day); one that follows a small
 * chunk of the same day joins it; any other becomes a chunk of its own. */
static int append_series_day(struct sqlite_cold *c, struct point *pts, size_t n, struct err *e)
{
    int64_t series_id = pts[0].series_id, lo = pts[0].ts, hi = pts[n - 1].ts, day = day_of(lo);
    sqlite3_stmt *q = c->chunk_before; /* only the last chunk starting at or before hi can */
    sqlite3_bind_int64(q, 1, series_id);
    sqlite3_bind_int64(q, 2, hi);
    bool found = sqlite3_step(q) == SQLITE_ROW;
    int64_t start = found ? sqlite3_column_int64(q, 0) : 0;
    bool overlaps = found && sqlite3_column_int64(q, 1) >= lo;
    bool joins = found && !overlaps && day_of(start) == day &&
                 sqlite3_column_int64(q, 2) + (int64_t)n <= HEAD_SAMPLES_MAX;
    int rc = 0;
    c->merged.n = 0;
    if (joins && (rc = load_chunk_row(c, q, 3, series_id, e)) == E_CORRUPT) {
        joins = false; /* a damaged chunk is left as it is; the run starts a chunk of its own */
        rc = 0;
    }
    sqlite3_reset(q);
    if (rc)
        return rc;
    if (overlaps)
        return merge_day(c, pts, n, e);
    if (joins) {
        sqlite3_bind_int64(c->drop_chunk, 1, series_id);
        sqlite3_bind_int64(c->drop_chunk, 2, start);
        rc = step_done(c, c->drop_chunk, e);
    }
    if (rc == 0)
        rc = append_run(c, pts, n, e);
    return rc ? rc : put_merged(c, series_id, day, e);
}

int sqlite_cold_append(struct sqlite_cold *c, struct point *pts, size_t n, struct err *e)
{
    for (size_t i = 0; i < n;) {
        size_t j = i + 1; /* [i, j): one series in one day */
        while (j < n && pts[j].series_id == pts[i].series_id &&
               day_of(pts[j].ts) == day_of(pts[i].ts))
            j++;
        int rc = append_series_day(c, pts + i, j - i, e);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}

/* Moves one series' raw samples before before_ms into its chunks (raw samples exist only in a
 * database written before ingestion wrote chunks itself: the migration to schema version 8
 * moves them all). */
static int move_raw_samples(struct sqlite_cold *c, int64_t series_id, int64_t before_ms,
                            struct store_compact_stats *stats, struct err *e)
{
    struct point *pts = NULL;
    size_t n = 0, cap = 0;
    int rc = 0, step;
    sqlite3_stmt *q = c->hot_before;
    sqlite3_bind_int64(q, 1, series_id);
    sqlite3_bind_int64(q, 2, before_ms);
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            struct point *grown = realloc(pts, cap * sizeof *pts);
            if (!grown) {
                rc = err_set(e, E_NOMEM, "out of memory compacting series %lld",
                             (long long)series_id);
                break;
            }
            pts = grown;
        }
        pts[n] = (struct point){series_id, sqlite3_column_int64(q, 0), sqlite3_column_double(q, 1),
                                n, false};
        n++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = err_set(e, E_STORE, "reading samples to compact: %s", sqlite3_errmsg(c->db));
    sqlite3_reset(q);
    if (rc == 0 && n > 0)
        rc = merge_days(c, pts, n, e);
    if (rc == 0 && n > 0) {
        sqlite3_bind_int64(c->drop_hot, 1, series_id);
        sqlite3_bind_int64(c->drop_hot, 2, before_ms);
        rc = step_done(c, c->drop_hot, e);
    }
    if (rc == 0)
        stats->samples_moved += (int64_t)n;
    free(pts);
    return rc;
}

/* Rewrites the days of one series that lie in more chunks than they need (ingestion writes a
 * chunk per series and batch) and whose samples all precede before_ms as the fewest chunks. */
static int fold_days(struct sqlite_cold *c, int64_t series_id, int64_t before_ms,
                     struct store_compact_stats *stats, struct err *e)
{
    int64_t *days = NULL;
    size_t n = 0, cap = 0;
    int rc = 0, step;
    sqlite3_stmt *q = c->days_to_fold;
    sqlite3_bind_int64(q, 1, series_id);
    sqlite3_bind_int64(q, 2, before_ms);
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *grown = realloc(days, cap * sizeof *days);
            if (!grown) {
                rc = err_set(e, E_NOMEM, "out of memory compacting series %lld",
                             (long long)series_id);
                break;
            }
            days = grown;
        }
        days[n++] = sqlite3_column_int64(q, 0);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = err_set(e, E_STORE, "finding chunks to compact: %s", sqlite3_errmsg(c->db));
    sqlite3_reset(q);
    for (size_t i = 0; i < n && rc == 0; i++) {
        c->merged.n = 0;
        rc = load_day(c, series_id, days[i] * MS_PER_DAY, e);
        if (rc == 0)
            rc = store_day(c, series_id, days[i] * MS_PER_DAY, e);
        if (rc == 0)
            stats->samples_moved += (int64_t)c->merged.n;
    }
    free(days);
    return rc;
}

static int compact_series(struct sqlite_cold *c, int64_t series_id, int64_t before_ms,
                          struct store_compact_stats *stats, struct err *e)
{
    int64_t moved = stats->samples_moved;
    int rc = move_raw_samples(c, series_id, before_ms, stats, e);
    if (rc == 0)
        rc = fold_days(c, series_id, before_ms, stats, e);
    if (rc == 0 && stats->samples_moved > moved)
        stats->series_compacted++;
    return rc;
}

int sqlite_cold_compact(struct sqlite_cold *c, int64_t before_ms, size_t max_series,
                        struct store_compact_stats *stats, bool *pass_done, struct err *e)
{
    *pass_done = false;
    int64_t ids[512];
    size_t nids = 0;
    if (max_series > sizeof ids / sizeof ids[0])
        max_series = sizeof ids / sizeof ids[0];
    sqlite3_bind_int64(c->next_series, 1, c->series_cursor);
    sqlite3_bind_int64(c->next_series, 2, (int64_t)max_series);
    while (sqlite3_step(c->next_series) == SQLITE_ROW)
        ids[nids++] = sqlite3_column_int64(c->next_series, 0);
    sqlite3_reset(c->next_series);
    for (size_t i = 0; i < nids; i++) {
        /* a series whose chunks cannot be read is left as it was (and not counted); the others
         * go on */
        struct store_compact_stats before = *stats;
        int rc = sqlite_exec(c->db, "SAVEPOINT compact_series", e);
        if (rc == 0)
            rc = compact_series(c, ids[i], before_ms, stats, e);
        if (rc == 0) {
            rc = sqlite_exec(c->db, "RELEASE compact_series", e);
        } else if (rc == E_CORRUPT) {
            sqlite3_exec(c->db, "ROLLBACK TO compact_series; RELEASE compact_series", NULL, NULL,
                         NULL);
            stats->samples_moved = before.samples_moved;
            stats->series_compacted = before.series_compacted;
            if (stats->series_failed++ == 0)
                snprintf(stats->first_failure, sizeof stats->first_failure, "series %lld: %.200s",
                         (long long)ids[i], e->msg);
            rc = 0;
        }
        if (rc)
            return rc;
        stats->series_seen++;
    }
    if (nids < max_series) {
        *pass_done = true;
        c->series_cursor = 0;
    } else {
        c->series_cursor = ids[nids - 1];
    }
    return 0;
}

void sqlite_cold_abandon(struct sqlite_cold *c)
{
    c->series_cursor = 0; /* a rolled-back step is redone from the start of the pass */
}

int sqlite_cold_drop_before(struct sqlite_cold *c, const struct table *t, int64_t horizon_ms,
                            struct store_retention_stats *stats, struct err *e)
{
    /* whole days only: a day goes once its last millisecond is past the horizon */
    int64_t first_kept_day = day_of(horizon_ms), chunks_before = stats->chunks_dropped;
    char sql[512];
    sqlite3_stmt *q;
    snprintf(sql, sizeof sql,
             "SELECT count(*), coalesce(sum(count), 0) FROM %s_chunks WHERE day < %lld", t->name,
             (long long)first_kept_day);
    if (sqlite3_prepare_v2(c->db, sql, -1, &q, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "retention of %s: %s", t->name, sqlite3_errmsg(c->db));
    if (sqlite3_step(q) == SQLITE_ROW) {
        stats->chunks_dropped += sqlite3_column_int64(q, 0);
        stats->samples_dropped += sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    /* raw samples past the horizon exist only when compaction is off or behind */
    snprintf(sql, sizeof sql,
             "DELETE FROM %s_chunks WHERE day < %lld; DELETE FROM %s_samples WHERE series_id IN "
             "(SELECT id FROM %s_series) AND ts < %lld * %lld;",
             t->name, (long long)first_kept_day, t->name, t->name, (long long)first_kept_day,
             MS_PER_DAY);
    int rc = sqlite_exec(c->db, sql, e);
    if (rc == 0)
        stats->samples_dropped += sqlite3_changes(c->db);
    if (rc == 0 && (stats->chunks_dropped > chunks_before || sqlite3_changes(c->db) > 0))
        rc = sqlite_note_dropped(c->db, t, first_kept_day * MS_PER_DAY, e);
    return rc;
}

int sqlite_cold_drop_minutes_before(struct sqlite_cold *c, const struct table *t,
                                    int64_t horizon_ms, int64_t *chunks, int64_t *kept_from,
                                    struct err *e)
{
    /* whole days only, as the chunks: a day's minutes go once its last one is past */
    int64_t first_kept_day = day_of(horizon_ms);
    char sql[300];
    snprintf(sql, sizeof sql,
             "UPDATE %s_chunks SET minutes = NULL WHERE day < %lld AND minutes IS NOT NULL",
             t->name, (long long)first_kept_day);
    int rc = sqlite_exec(c->db, sql, e);
    *chunks = rc == 0 ? sqlite3_changes(c->db) : 0;
    *kept_from = first_kept_day * MS_PER_DAY;
    return rc;
}

int sqlite_cold_migrate(sqlite3 *db, const struct table *t, struct err *e)
{
    struct sqlite_cold *c;
    int rc = sqlite_cold_new(&c, db, t, e);
    if (rc)
        return rc;
    struct store_compact_stats stats = {0};
    bool done = false;
    while (rc == 0 && !done) /* every raw sample: compaction moves them, day by day */
        rc = sqlite_cold_compact(c, INT64_MAX, 512, &stats, &done, e);
    if (rc == 0 && stats.series_failed) /* the damaged ones stay as they were */
        log_warn("%s: %lld series keep raw samples, their chunks are damaged; first: %s", t->name,
                 (long long)stats.series_failed, stats.first_failure);
    /* then every day whose chunks have no minutes yet */
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT DISTINCT series_id, day FROM %s_chunks WHERE minutes IS NULL ORDER BY 1, 2",
             t->name);
    sqlite3_stmt *q = NULL;
    if (rc == 0 && sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        rc = err_set(e, E_STORE, "migration: %s", sqlite3_errmsg(db));
    int64_t(*days)[2] = NULL;
    size_t n = 0, cap = 0;
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            int64_t(*grown)[2] = realloc(days, cap * sizeof *days);
            if (!grown) {
                rc = err_set(e, E_NOMEM, "out of memory listing chunks to migrate");
                break;
            }
            days = grown;
        }
        days[n][0] = sqlite3_column_int64(q, 0);
        days[n++][1] = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    for (size_t i = 0; i < n && rc == 0; i++) {
        c->merged.n = 0;
        rc = load_day(c, days[i][0], days[i][1] * MS_PER_DAY, e);
        if (rc == 0) {
            rc = store_day(c, days[i][0], days[i][1] * MS_PER_DAY, e);
        } else if (rc == E_CORRUPT) { /* left without minutes, readable as it was */
            log_warn("%s: %s", t->name, e->msg);
            rc = 0;
        }
    }
    free(days);
    sqlite_cold_free(&c);
    return rc;
}
