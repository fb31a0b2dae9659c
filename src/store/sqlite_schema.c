/*
 * The SQLite schema, derived from the schema table: CREATE TABLE/INDEX statements, forward
 * migration (missing tables, columns and indexes are added; numbered migrations run for what
 * cannot be derived), and the recorded schema version (PRAGMA user_version plus a log table).
 */
#include "store/sqlite_int.h"

#include <stdio.h>
#include <string.h>

int sqlite_exec(sqlite3 *db, const char *sql, struct err *e)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        err_set(e, E_STORE, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return E_STORE;
    }
    return 0;
}

const char *sqlite_column_type(const struct column *c)
{
    switch (c->type) {
    case COL_REAL:
        return "REAL";
    case COL_TEXT:
    case COL_JSON:
        return "TEXT";
    default:
        return "INTEGER";
    }
}

/* for_alter: ALTER TABLE ADD COLUMN cannot add NOT NULL without a default */
static void column_ddl(struct buf *b, const struct column *c, bool for_alter)
{
    buf_printf(b, "%s %s", c->name, sqlite_column_type(c));
    if (c->default_sql)
        buf_printf(b, " NOT NULL DEFAULT %s", c->default_sql);
    else if (c->required && !for_alter)
        buf_printf(b, " NOT NULL");
}

static bool is_series_key(const struct column *c)
{
    return c->series_key;
}

/* TABLE_SERIES is kept as <name>_series (the dictionary) and <name>_samples (the points), with a
 * view <name> that joins them back into the documented columns. */
static void series_ddl(struct buf *b, const struct table *t)
{
    buf_printf(b, "CREATE TABLE IF NOT EXISTS %s_series (id INTEGER PRIMARY KEY", t->name);
    for (size_t i = 0; i < t->ncolumns; i++)
        if (is_series_key(&t->columns[i])) {
            buf_printf(b, ", ");
            column_ddl(b, &t->columns[i], false);
        }
    buf_printf(b, ", UNIQUE (");
    bool first = true;
    for (size_t i = 0; i < t->ncolumns; i++)
        if (is_series_key(&t->columns[i]) && strcmp(t->columns[i].name, "metric") == 0) {
            buf_printf(b, "%s", t->columns[i].name);
            first = false;
        }
    for (size_t i = 0; i < t->ncolumns; i++)
        if (is_series_key(&t->columns[i]) && strcmp(t->columns[i].name, "metric") != 0) {
            buf_printf(b, "%s%s", first ? "" : ", ", t->columns[i].name);
            first = false;
        }
    buf_printf(b, "));\n");
    buf_printf(b,
               "CREATE TABLE IF NOT EXISTS %s_samples (series_id INTEGER NOT NULL, "
               "ts INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (series_id, ts)) "
               "WITHOUT ROWID;\n",
               t->name);
    sqlite_cold_ddl(b, t);
    /* one arm per storage (raw rows, compressed chunks), each a join the planner drives from the
     * series dictionary: a compound view over a join could not push series_id down */
    buf_printf(b, "DROP VIEW IF EXISTS %s;\nCREATE VIEW %s AS ", t->name, t->name);
    /* cold first: per series it is the older part, so rows come in ts order */
    static const char *const arms[] = {"cold", "samples"};
    for (size_t arm = 0; arm < 2; arm++) {
        buf_printf(b, "%sSELECT ", arm ? " UNION ALL " : "");
        for (size_t i = 0; i < t->ncolumns; i++) {
            const struct column *c = &t->columns[i];
            buf_printf(b, "%s%s.%s", i ? ", " : "", is_series_key(c) ? "r" : "s", c->name);
        }
        /* CROSS JOIN fixes the series dictionary as the outer loop: a time range then costs one
         * (series_id, ts) seek per series instead of a scan of every sample */
        buf_printf(b, " FROM %s_series r CROSS JOIN %s_%s s ON s.series_id = r.id", t->name,
                   t->name, arms[arm]);
    }
    buf_printf(b, ";\n");
    sqlite_rollup_ddl(b, t);
}

void sqlite_event_table_ddl(struct buf *b, const struct table *t, const char *name)
{
    buf_printf(b, "CREATE TABLE IF NOT EXISTS %s (", name);
    for (size_t i = 0; i < t->ncolumns; i++) {
        if (i)
            buf_printf(b, ", ");
        column_ddl(b, &t->columns[i], false);
    }
    if (t->key_column)
        buf_printf(b, ", UNIQUE (%s)", t->key_column);
    buf_printf(b, ");\n");
    for (size_t i = 0; i < t->nindexes; i++)
        buf_printf(b, "CREATE INDEX IF NOT EXISTS %s_%s ON %s (%s);\n", name,
                   t->indexes[i].name_suffix, name, t->indexes[i].columns);
}

void sqlite_insert_sql(struct buf *b, const struct table *t, const char *name)
{
    buf_printf(b, "INSERT INTO %s (", name);
    for (size_t j = 0; j < t->ncolumns; j++)
        buf_printf(b, "%s%s", j ? ", " : "", t->columns[j].name);
    buf_printf(b, ") VALUES (");
    for (size_t j = 0; j < t->ncolumns; j++)
        buf_printf(b, "%s?", j ? ", " : "");
    buf_printf(b, ")");
}

/* Series tables: dictionary, samples, chunks and views; event tables: the virtual table over
 * their partitions (made as rows arrive) and rollups; state tables: one plain table. */
static void table_ddl(struct buf *b, const struct table *t)
{
    if (t->kind == TABLE_SERIES) {
        series_ddl(b, t);
        for (size_t i = 0; i < t->nindexes; i++)
            buf_printf(b, "CREATE INDEX IF NOT EXISTS %s_%s ON %s_series (%s);\n", t->name,
                       t->indexes[i].name_suffix, t->name, t->indexes[i].columns);
    } else if (t->kind == TABLE_EVENTS) {
        buf_printf(b, "CREATE VIRTUAL TABLE IF NOT EXISTS %s USING opsdb_partitioned(%s);\n",
                   t->name, t->name);
        sqlite_event_rollup_ddl(b, t);
        sqlite_run_rollup_ddl(b, t);
    } else {
        sqlite_event_table_ddl(b, t, t->name);
    }
}

/* Adds the columns the schema table has and the physical table `name` lacks. */
static int add_missing_columns(sqlite3 *db, const struct table *t, const char *name, struct buf *b,
                               struct err *e)
{
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT name FROM pragma_table_info('%s')", name);
    for (size_t i = 0; i < t->ncolumns; i++) {
        const struct column *c = &t->columns[i];
        if (t->kind == TABLE_SERIES && !is_series_key(c))
            continue; /* ts and value live in the fixed samples table */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
            return err_set(e, E_STORE, "migration: %s", sqlite3_errmsg(db));
        bool found = false;
        while (sqlite3_step(st) == SQLITE_ROW)
            if (strcmp((const char *)sqlite3_column_text(st, 0), c->name) == 0)
                found = true;
        sqlite3_finalize(st);
        if (found)
            continue;
        buf_printf(b, "ALTER TABLE %s ADD COLUMN ", name);
        column_ddl(b, c, true);
        buf_printf(b, ";\n");
        log_info("migration: adding column %s.%s", name, c->name);
    }
    return 0;
}

int sqlite_meta_raise(sqlite3 *db, const char *key, int64_t value, struct err *e)
{
    char sql[400];
    snprintf(sql, sizeof sql,
             "INSERT INTO opsdb_meta (key, value) VALUES ('%s', %lld) ON CONFLICT (key) DO "
             "UPDATE SET value = max(value, excluded.value)",
             key, (long long)value);
    return sqlite_exec(db, sql, e);
}

int sqlite_note_dropped(sqlite3 *db, const struct table *t, int64_t until_ms, struct err *e)
{
    char key[200];
    snprintf(key, sizeof key, "%s.dropped_until", t->name);
    return sqlite_meta_raise(db, key, until_ms, e);
}

bool sqlite_table_exists(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st;
    bool found = false;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    return found;
}

/* Adds column (its SQL declaration decl) to table when the table exists without it: a column
 * the derived step cannot add to a table an older version made. */
static int add_column_if_missing(sqlite3 *db, const char *table, const char *column,
                                 const char *decl, struct err *e)
{
    if (!sqlite_table_exists(db, table))
        return 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info(?) WHERE name = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "migration: %s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, column, -1, SQLITE_STATIC);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (found)
        return 0;
    char sql[300];
    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s %s", table, column, decl);
    return sqlite_exec(db, sql, e);
}

/* Version 8, before the derived step: a chunk table from before it gets its minutes column (a
 * database older than version 3 has none yet; the derived step creates it whole). */
static int add_minutes_column(sqlite3 *db, struct err *e)
{
    return add_column_if_missing(db, "system_metrics_chunks", "minutes", "BLOB", e);
}

/* Version 14, before the derived step: scheduled_jobs of an older database gets alert_after. */
static int add_alert_after_column(sqlite3 *db, struct err *e)
{
    return add_column_if_missing(db, "scheduled_jobs", "alert_after", "INTEGER DEFAULT 1", e);
}

static int migrate_samples_to_chunks(sqlite3 *db, struct err *e)
{
    return sqlite_cold_migrate(db, schema_table("system_metrics"), e);
}

/* Numbered migrations for what the derived step cannot do (renames, data rewrites). Each runs
 * once, in order, inside the migration transaction: before the derived step, or after it when
 * it fills what the derived step created (backfills). */
struct migration {
    int version;
    const char *description;
    const char *sql;    /* NULL: the derived step alone brings the schema to this version */
    bool after_derived; /* runs once the derived step created what it needs (backfills) */
    int (*run)(sqlite3 *db, struct err *e); /* what SQL text alone cannot say; after sql */
};

/* A bucket's rollup from the raw samples, for the backfill of version 2. */
#define BACKFILL(level, ms)                                                                        \
    "INSERT OR REPLACE INTO system_metrics_" level " (series_id, ts, min, max, sum, count, "       \
    "last, last_ts) SELECT g.series_id, g.b, g.mn, g.mx, g.sm, g.n, (SELECT x.value FROM "         \
    "system_metrics_samples x WHERE x.series_id = g.series_id AND x.ts = g.lt), g.lt FROM "        \
    "(SELECT series_id, (ts - ((ts % " ms ") + " ms ") % " ms ") AS b, min(value) AS mn, "         \
    "max(value) AS mx, sum(value) AS sm, count(*) AS n, max(ts) AS lt FROM "                       \
    "system_metrics_samples GROUP BY series_id, b) g;\n"

static const struct migration migrations[] = {
    {1, "initial schema: seven tables, job_runs, indexes and views", NULL, false, NULL},
    {2, "system_metrics rollups per 1 minute and 1 hour, backfilled from the samples",
     BACKFILL("1h", "3600000"), true, NULL}, /* minutes: from the chunks since version 8 */
    {3,
     "cold storage: compressed per-series day chunks, the opsdb_chunks virtual table, views "
     "over raw and cold samples",
     NULL, false, NULL},
    {4, "api_usage and handler_metrics rollups per 1 minute and 1 hour, backfilled", NULL, true,
     sqlite_event_rollup_backfill},
    {5, "event tables partitioned by day: rows move into per-day tables behind a virtual table",
     NULL, true, sqlite_partition_migrate},
    {6, "error_logs rollups per fingerprint and host, per 1 minute and 1 hour, backfilled", NULL,
     true, sqlite_error_rollup_backfill},
    {7, "daily rollups of api_usage, handler_metrics and error_logs, built from the hourly ones",
     NULL, true, sqlite_daily_rollup_backfill},
    {8, "system_metrics minute rollups kept beside the samples in each chunk row, not in a table",
     "DROP TABLE IF EXISTS system_metrics_1m;", false, add_minutes_column},
    {8,
     "metric samples written as chunks from the start: raw samples moved into chunks, minute "
     "rollups computed for every chunk",
     NULL, true, migrate_samples_to_chunks},
    {9,
     "pipeline_status rollup per run (pipeline, run_id), backfilled from the rows, for "
     "pipeline_health",
     NULL, true, sqlite_run_rollup_backfill},
    {10, "notification_log: one row per attempt to deliver an alert notification", NULL, false,
     NULL},
    {11, "silences: label matchers that suppress alert notifications for a while", NULL, false,
     NULL},
    {12, "the view alert_quality: per rule, relevant and noisy alerts", NULL, false, NULL},
    {13, "incidents: correlated alerts kept across restarts", NULL, false, NULL},
    {14,
     "scheduled jobs: alert_after (failed runs in a row before JobFailed fires); job_status "
     "reads a running job from scheduled_jobs",
     NULL, false, add_alert_after_column},
    {15,
     "collection_sources and collection_gaps: heartbeats of the sources that deliver data; the "
     "view collection_status",
     NULL, false, NULL},
    {16, "users, api_tokens and audit_log: who may call the HTTP API, and what admins did", NULL,
     false, NULL},
    {17, "users.password_hash: an argon2id hash, for dashboard sessions opened with a password",
     NULL, false, NULL},
};

static int read_version(sqlite3 *db, int *version, struct err *e)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "reading the schema version: %s", sqlite3_errmsg(db));
    *version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    return 0;
}

static int run_numbered(sqlite3 *db, int from, bool after_derived, struct buf *b, struct err *e)
{
    for (size_t i = 0; i < sizeof migrations / sizeof migrations[0]; i++) {
        const struct migration *m = &migrations[i];
        if (m->version <= from || m->after_derived != after_derived)
            continue;
        log_info("migration to schema version %d: %s", m->version, m->description);
        if (m->sql && sqlite_exec(db, m->sql, e) != 0)
            return e->code;
        if (m->run && m->run(db, e) != 0)
            return e->code;
        buf_printf(b, "INSERT OR REPLACE INTO opsdb_migrations VALUES (%d, %lld, '%s');\n",
                   m->version, (long long)time_now_ms(), m->description);
    }
    return 0;
}

/* Adds missing columns to every physical table of t: the dictionary of a series table, each
 * partition of an event table (and the plain table it was before partitions), a state table. */
static int add_columns_everywhere(sqlite3 *db, const struct table *t, struct buf *b, struct err *e)
{
    char name[300];
    snprintf(name, sizeof name, "%s%s", t->name, t->kind == TABLE_SERIES ? "_series" : "");
    int rc = 0;
    if (sqlite_table_exists(db, name) && (rc = add_missing_columns(db, t, name, b, e)) != 0)
        return rc;
    if (t->kind != TABLE_EVENTS || !sqlite_table_exists(db, "opsdb_partitions"))
        return 0;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT name FROM opsdb_partitions WHERE table_name = ?", -1, &q,
                           NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "migration: %s", sqlite3_errmsg(db));
    sqlite3_bind_text(q, 1, t->name, -1, SQLITE_STATIC);
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(q, 0));
        rc = add_missing_columns(db, t, name, b, e);
    }
    sqlite3_finalize(q);
    return rc;
}

int sqlite_migrate(sqlite3 *db, struct err *e)
{
    int version = 0, rc;
    struct buf ddl;
    buf_init(&ddl, 1 << 20);
    if ((rc = sqlite_exec(db, "BEGIN IMMEDIATE", e)) != 0)
        goto out;
    if ((rc = read_version(db, &version, e)) != 0)
        goto rollback;
    if (version > schema_version()) {
        rc = err_set(e, E_INVALID,
                     "the database has schema version %d, newer than this opsdb's %d: upgrade "
                     "opsdb to open it",
                     version, schema_version());
        goto rollback;
    }
    if (version < schema_version())
        log_info("migrating the database from schema version %d to %d", version, schema_version());
    buf_printf(&ddl, "CREATE TABLE IF NOT EXISTS opsdb_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at INTEGER NOT NULL, description TEXT NOT NULL);\n"
                     "CREATE TABLE IF NOT EXISTS opsdb_meta (key TEXT PRIMARY KEY, value);\n");
    sqlite_partition_catalogue_ddl(&ddl);
    if ((rc = run_numbered(db, version, false, &ddl, e)) != 0)
        goto rollback;
    size_t n;
    const struct table *tables = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        if ((rc = add_columns_everywhere(db, &tables[i], &ddl, e)) != 0)
            goto rollback;
        table_ddl(&ddl, &tables[i]);
    }
    size_t nviews;
    const char *const *views = store_view_names(&nviews);
    for (size_t i = 0; i < nviews; i++)
        buf_printf(&ddl, "DROP VIEW IF EXISTS %s;\n%s;\n", views[i], sqlite_view_sql(i));
    buf_printf(&ddl, "PRAGMA user_version = %d;\n", schema_version());
    if ((rc = sqlite_exec(db, ddl.data, e)) != 0)
        goto rollback;
    ddl.len = 0;
    if ((rc = run_numbered(db, version, true, &ddl, e)) != 0 ||
        (ddl.len && (rc = sqlite_exec(db, ddl.data, e)) != 0))
        goto rollback;
    rc = sqlite_exec(db, "COMMIT", e);
    goto out;
rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
out:
    buf_release(&ddl);
    return rc;
}
