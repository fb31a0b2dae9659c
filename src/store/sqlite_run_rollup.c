/*
 * The per-run rollup of pipeline_status, <table>_runs: one row per (pipeline, run_id) holding
 * what pipeline_health needs of a run — the first and last ts of its rows, how many rows it
 * has, whether any of them failed or succeeded, min(started_at), max(finished_at) and
 * max(duration_ms) — so that a window of a month reads one row per run instead of every state
 * change of every run.
 *
 * Like the event rollups (sqlite_event_rollup.c) it is folded in the write transaction from the
 * rows a batch just inserted into a partition (a rowid range), with one upsert, never a rescan.
 * Rows are only ever added and every measure merges exactly (min, max, a count), so late rows
 * and a run whose rows come in several requests (or partitions) keep it exact.
 *
 * The table is kept in first_ts order (primary key (first_ts, pipeline, run_id); the upsert
 * finds a run by UNIQUE (pipeline, run_id)), so the view reads the runs of a window (lo, hi] as
 * one range of it: a run with a row in the window has last_ts > lo and first_ts <= hi, so
 * first_ts > lo - span, where span is the longest last_ts - first_ts of any run. The writer
 * raises that span in opsdb_meta ('<table>_runs.max_span_ms') in the same transaction; nothing
 * lowers it, so it can only be too wide (a longer range to read), never too narrow.
 */
#include "store/sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNS_TABLE "pipeline_status"

#define RUN_COLUMNS                                                                                \
    "pipeline, run_id, first_ts, last_ts, rows, failed, succeeded, started_at_min, "               \
    "finished_at_max, duration_ms_max"
/* one run's measures over base rows, in RUN_COLUMNS order */
#define RUN_MEASURES                                                                               \
    "pipeline, run_id, min(ts), max(ts), count(*), max(status = 'failed'), "                       \
    "max(status = 'succeeded'), min(started_at), max(finished_at), max(duration_ms)"
/* a run's row plus the same run's new rows; min() and max() of one NULL side are NULL, hence
 * the coalesce where a column may be NULL */
#define RUN_MERGE                                                                                  \
    "first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts), "      \
    "rows = rows + excluded.rows, failed = max(failed, excluded.failed), "                         \
    "succeeded = max(succeeded, excluded.succeeded), started_at_min = "                            \
    "coalesce(min(started_at_min, excluded.started_at_min), started_at_min, "                      \
    "excluded.started_at_min), finished_at_max = coalesce(max(finished_at_max, "                   \
    "excluded.finished_at_max), finished_at_max, excluded.finished_at_max), duration_ms_max = "    \
    "coalesce(max(duration_ms_max, excluded.duration_ms_max), duration_ms_max, "                   \
    "excluded.duration_ms_max)"
#define SPAN_KEY RUNS_TABLE "_runs.max_span_ms"

struct sqlite_run_rollup {
    sqlite3 *db;
    sqlite3_stmt *fold;  /* ?1..?2: the batch's rowids; returns each run's span after the fold */
    int64_t span_raised; /* the longest span this fold raised SPAN_KEY to; -1 none yet */
};

bool sqlite_run_rollup_exists(const struct table *t)
{
    return strcmp(t->name, RUNS_TABLE) == 0;
}

void sqlite_run_rollup_ddl(struct buf *b, const struct table *t)
{
    if (!sqlite_run_rollup_exists(t))
        return;
    buf_printf(b,
               "CREATE TABLE IF NOT EXISTS %s_runs (pipeline TEXT NOT NULL, run_id TEXT NOT NULL, "
               "first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL, rows INTEGER NOT NULL, "
               "failed INTEGER NOT NULL, succeeded INTEGER NOT NULL, started_at_min INTEGER, "
               "finished_at_max INTEGER, duration_ms_max INTEGER, PRIMARY KEY (first_ts, "
               "pipeline, run_id), UNIQUE (pipeline, run_id)) WITHOUT ROWID;\n",
               t->name);
}

/* The rows of source (WHERE `where`) folded into their runs' rows. */
static void fold_sql(struct buf *b, const char *source, const char *where)
{
    buf_printf(b,
               "INSERT INTO " RUNS_TABLE "_runs (" RUN_COLUMNS ") SELECT " RUN_MEASURES
               " FROM %s WHERE %s GROUP BY pipeline, run_id ON CONFLICT (pipeline, run_id) DO "
               "UPDATE SET " RUN_MERGE,
               source, where);
}

int sqlite_run_rollup_backfill(sqlite3 *db, struct err *e)
{
    struct buf sql;
    buf_init(&sql, 1 << 14);
    /* from scratch: whatever the table held is replaced by what the rows say */
    buf_printf(&sql, "DELETE FROM " RUNS_TABLE "_runs;\n");
    fold_sql(&sql, RUNS_TABLE, "true");
    buf_printf(&sql, ";\nINSERT INTO opsdb_meta (key, value) SELECT '" SPAN_KEY
                     "', coalesce(max(last_ts - first_ts), 0) FROM " RUNS_TABLE
                     "_runs WHERE true ON CONFLICT (key) DO UPDATE SET value = max(value, "
                     "excluded.value);");
    int rc = sqlite_exec(db, sql.data, e);
    buf_release(&sql);
    return rc;
}

int sqlite_run_rollup_new(struct sqlite_run_rollup **out, sqlite3 *db, const struct table *t,
                          const char *source, struct err *e)
{
    *out = NULL;
    if (!sqlite_run_rollup_exists(t))
        return 0;
    struct sqlite_run_rollup *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, E_NOMEM, "out of memory");
    r->db = db;
    r->span_raised = -1;
    struct buf sql;
    buf_init(&sql, 1 << 14);
    fold_sql(&sql, source, "rowid BETWEEN ?1 AND ?2");
    buf_printf(&sql, " RETURNING last_ts - first_ts");
    int rc = 0;
    if (sqlite3_prepare_v3(db, sql.data, -1, SQLITE_PREPARE_PERSISTENT, &r->fold, NULL) !=
        SQLITE_OK)
        rc = err_set(e, E_STORE, "preparing the %s run rollup: %s", t->name, sqlite3_errmsg(db));
    buf_release(&sql);
    if (rc) {
        sqlite_run_rollup_free(&r);
        return rc;
    }
    *out = r;
    return 0;
}

void sqlite_run_rollup_free(struct sqlite_run_rollup **rp)
{
    struct sqlite_run_rollup *r = *rp;
    if (!r)
        return;
    sqlite3_finalize(r->fold);
    free(r);
    *rp = NULL;
}

int sqlite_run_rollup_apply(struct sqlite_run_rollup *r, int64_t first_rowid, int64_t last_rowid,
                            struct err *e)
{
    sqlite3_bind_int64(r->fold, 1, first_rowid);
    sqlite3_bind_int64(r->fold, 2, last_rowid);
    int64_t span = -1;
    int rc;
    while ((rc = sqlite3_step(r->fold)) == SQLITE_ROW) {
        int64_t s = sqlite3_column_int64(r->fold, 0);
        span = s > span ? s : span;
    }
    sqlite3_reset(r->fold);
    if (rc != SQLITE_DONE)
        return err_set(e, E_STORE, "run rollup write failed: %s", sqlite3_errmsg(r->db));
    if (span <= r->span_raised)
        return 0;
    /* the key may be larger already (other partitions, other processes): raising keeps it */
    if ((rc = sqlite_meta_raise(r->db, SPAN_KEY, span, e)) == 0)
        r->span_raised = span;
    return rc;
}

int sqlite_run_rollup_drop_before(sqlite3 *db, const struct table *t, int64_t horizon_ms,
                                  int64_t *dropped, struct err *e)
{
    *dropped = 0;
    if (!sqlite_run_rollup_exists(t))
        return 0;
    /* a run goes once it ended before the horizon and retention dropped all its raw rows
     * (they lie before '<table>.dropped_until'): while any are held the view may need it.
     * first_ts < horizon follows from last_ts < horizon and bounds the range of the key read. */
    char sql[600];
    snprintf(sql, sizeof sql,
             "DELETE FROM %s_runs WHERE first_ts < %lld AND last_ts < min(%lld, coalesce((SELECT "
             "value FROM opsdb_meta WHERE key = '%s.dropped_until'), -9223372036854775807))",
             t->name, (long long)horizon_ms, (long long)horizon_ms, t->name);
    int rc = sqlite_exec(db, sql, e);
    *dropped = rc ? 0 : sqlite3_changes(db);
    return rc;
}
