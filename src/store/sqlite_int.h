/*
 * Private to the SQLite back end: the connection wrapper with its query parameters, and the
 * functions the back end's files share.
 */
#ifndef OPSDB_SQLITE_INT_H
#define OPSDB_SQLITE_INT_H

#include "store/store_int.h"

#include <sqlite3.h>

#define SQLITE_MAX_PARAMS 32

/* One SQLite connection plus what its SQL functions and handlers read. */
struct sqlite_conn {
    sqlite3 *db;
    /* view parameters, read by opsdb_param(); defaults first, then the query's own */
    size_t nparams;
    struct store_param params[SQLITE_MAX_PARAMS];
    size_t ndefaults;
    int64_t deadline_ms;       /* progress handler interrupts past this; 0 = none */
    bool untrusted;            /* authorizer is strict while true */
    const char *denied;        /* what the authorizer last denied, for the error message */
    const char *const *hidden; /* tables (and <name>_*) untrusted SQL may not read, or NULL */
    char denied_table[96];     /* the hidden table it tried to read */
};

/* Opens a connection with opsdb's pragmas and SQL functions. flags as for sqlite3_open_v2. */
int sqlite_conn_open(struct sqlite_conn *c, const char *path, int flags, const struct config *cfg,
                     struct err *e);
void sqlite_conn_close(struct sqlite_conn *c);
/* Registers percentile(), opsdb_param(), opsdb_now_ms(), the authorizer and progress handler. */
int sqlite_register_functions(struct sqlite_conn *c);
/* Runs SQL with no result; fills e with the SQLite message on failure. */
int sqlite_exec(sqlite3 *db, const char *sql, struct err *e);
/* The first column of the first row of sql (a PRAGMA) as an integer; -1 when it fails. */
int64_t sqlite_pragma_int(sqlite3 *db, const char *sql);

/* Backups and the database's files (sqlite_backup.c): the store_ops of the same names. */
int sqlite_backup_to(struct store *s, const char *path, store_backup_progress progress, void *arg,
                     struct err *e);
int sqlite_file_in_use(const char *path, long *pid, struct err *e);
int sqlite_file_set_aside(const char *path, const char *aside, struct err *e);
int sqlite_file_remove(const char *path, struct err *e);
int sqlite_file_vacuum_plan(const struct config *cfg, struct store_vacuum_stats *stats,
                            struct err *e);
int sqlite_file_vacuum(const struct config *cfg, store_backup_progress progress, void *arg,
                       struct store_vacuum_stats *stats, struct err *e);

/* One metric sample on its way into <table>_samples. */
struct point {
    int64_t series_id;
    int64_t ts;
    double value;
    size_t order;  /* input order: the last write of a duplicate sample wins */
    bool replaced; /* the sample existed or came again later in the batch: not added to its
                      buckets, which are recomputed from what is stored */
};

/* Rollup maintenance for one TABLE_SERIES table (sqlite_rollup.c). Runs on the writer
 * connection, inside the write transaction. */
struct sqlite_rollup;
int sqlite_rollup_new(struct sqlite_rollup **out, sqlite3 *db, const struct table *t,
                      struct err *e);
void sqlite_rollup_free(struct sqlite_rollup **r);
/* Folds the samples just written (sorted by series and ts) into every rollup level: new samples
 * are merged into their buckets; buckets holding a replaced sample are recomputed from the raw
 * samples. */
int sqlite_rollup_apply(struct sqlite_rollup *r, const struct point *pts, size_t n, struct err *e);
/* DDL of the rollup tables of t, appended to b. */
void sqlite_rollup_ddl(struct buf *b, const struct table *t);
/* True for the level whose buckets live in the chunks' rows (the minutes), not in a table. */
bool sqlite_rollup_in_chunks(const struct rollup_level *lv);

#define MS_PER_DAY 86400000LL

/* Cold (compressed) samples of one TABLE_SERIES table (sqlite_cold.c), on the writer connection
 * and inside its write transaction. */
struct sqlite_cold;
int sqlite_cold_new(struct sqlite_cold **out, sqlite3 *db, const struct table *t, struct err *e);
void sqlite_cold_free(struct sqlite_cold **c);
/* Writes a batch's samples (pts sorted by series, ts, input order) as chunks: each series' run
 * within one day becomes a new chunk, unless chunks of that series already hold samples in its
 * time range — then the day's chunks and the run are merged and rewritten. Of samples with one
 * series and ts the last written wins; the others, and samples that overwrote a stored one, are
 * marked replaced. */
int sqlite_cold_append(struct sqlite_cold *c, struct point *pts, size_t n, struct err *e);
/* Compaction of up to max_series series (continuing where the last call stopped): moves raw
 * samples before before_ms into chunks, and rewrites each day whose samples all precede
 * before_ms and that lies in more chunks than it needs (ingestion's one per batch) as the
 * fewest chunks; *pass_done once the last series was visited. */
int sqlite_cold_compact(struct sqlite_cold *c, int64_t before_ms, size_t max_series,
                        struct store_compact_stats *stats, bool *pass_done, struct err *e);
/* Drops the chunks of whole days before horizon_ms (and any raw samples before those days),
 * adding to stats. */
int sqlite_cold_drop_before(struct sqlite_cold *c, const struct table *t, int64_t horizon_ms,
                            struct store_retention_stats *stats, struct err *e);
/* Drops the minute buckets of the chunks of whole days before horizon_ms; *chunks counts the
 * chunks that lost theirs and *kept_from is where minutes now begin. */
int sqlite_cold_drop_minutes_before(struct sqlite_cold *c, const struct table *t,
                                    int64_t horizon_ms, int64_t *chunks, int64_t *kept_from,
                                    struct err *e);
/* The migration to schema version 8 (needs the chunk table with its minutes column): moves every
 * raw sample of t into chunks and gives every chunk its minute buckets. */
int sqlite_cold_migrate(sqlite3 *db, const struct table *t, struct err *e);
/* After a rolled-back compaction step: the next pass starts over. */
void sqlite_cold_abandon(struct sqlite_cold *c);
/* DDL of the chunk table, the cold virtual table and the <table>_raw view, appended to b. */
void sqlite_cold_ddl(struct buf *b, const struct table *t);
/* Registers the opsdb_chunks virtual table module on a connection (sqlite_cold_vtab.c). */
int sqlite_cold_register(sqlite3 *db);
/* store_series_read() on a read connection (sqlite_series.c). */
int sqlite_series_read(void *conn, const struct series_read *q, series_sink sink, void *arg,
                       struct err *e);

/* Rollups of event tables (sqlite_event_rollup.c): api_usage and handler_metrics per key and
 * per 1m / 1h bucket, folded in from each batch's rows inside the write transaction. */
struct sqlite_event_rollup;
/* Folds rows of source (t itself or one of its partitions). *out is NULL (and 0 returned) for
 * a table without rollups. */
int sqlite_event_rollup_new(struct sqlite_event_rollup **out, sqlite3 *db, const struct table *t,
                            const char *source, struct err *e);
void sqlite_event_rollup_free(struct sqlite_event_rollup **r);
/* Folds the base rows with rowids first..last (the batch just inserted) into every level. */
int sqlite_event_rollup_apply(struct sqlite_event_rollup *r, int64_t first_rowid,
                              int64_t last_rowid, struct err *e);
/* DDL of t's rollup tables (nothing for a table without rollups), appended to b. */
void sqlite_event_rollup_ddl(struct buf *b, const struct table *t);
bool sqlite_event_rollup_exists(const struct table *t);
/* Fills every event rollup from all base rows (the migration that introduced them). */
int sqlite_event_rollup_backfill(sqlite3 *db, struct err *e);
/* The same for error_logs' rollups alone (the migration that added them). */
int sqlite_error_rollup_backfill(sqlite3 *db, struct err *e);
/* Fills every daily event rollup from the hourly one (the migration that added them). */
int sqlite_daily_rollup_backfill(sqlite3 *db, struct err *e);
/* The levels of the event rollups (<table>_<name>), finest first: 1m, 1h, 1d. */
const struct rollup_level *sqlite_event_rollup_levels(size_t *count);

/* The per-run rollup of pipeline_status (sqlite_run_rollup.c): one row per (pipeline, run_id)
 * in <table>_runs, folded in from each batch's rows inside the write transaction; the longest
 * run's span is kept in opsdb_meta ('<table>_runs.max_span_ms') for the view to find runs by
 * their first_ts. */
struct sqlite_run_rollup;
/* Folds rows of source (one of t's partitions). *out is NULL (and 0 returned) for a table
 * without a per-run rollup. */
int sqlite_run_rollup_new(struct sqlite_run_rollup **out, sqlite3 *db, const struct table *t,
                          const char *source, struct err *e);
void sqlite_run_rollup_free(struct sqlite_run_rollup **r);
/* Folds the base rows with rowids first..last (the batch just inserted) into their runs. */
int sqlite_run_rollup_apply(struct sqlite_run_rollup *r, int64_t first_rowid, int64_t last_rowid,
                            struct err *e);
/* DDL of t's per-run rollup table and its index (nothing for other tables), appended to b. */
void sqlite_run_rollup_ddl(struct buf *b, const struct table *t);
bool sqlite_run_rollup_exists(const struct table *t);
/* Fills the per-run rollup from all base rows (the migration that introduced it). */
int sqlite_run_rollup_backfill(sqlite3 *db, struct err *e);
/* Deletes the runs of t that ended before horizon_ms and whose raw rows retention has all
 * dropped (they lie before '<table>.dropped_until'); *dropped counts them. */
int sqlite_run_rollup_drop_before(sqlite3 *db, const struct table *t, int64_t horizon_ms,
                                  int64_t *dropped, struct err *e);

/* Time partitions of event tables (sqlite_partition.c), on the writer connection and inside its
 * write transaction. */
struct sqlite_partitions;
int sqlite_partitions_new(struct sqlite_partitions **out, sqlite3 *db, const struct table *t,
                          int64_t window_ms, struct err *e);
void sqlite_partitions_free(struct sqlite_partitions **p);
/* Inserts the batch's rows into their partitions (creating those missing) and folds them into
 * the table's rollups. */
int sqlite_partitions_write(struct sqlite_partitions *p, const struct batch *b, struct err *e);
/* After a rollback: partitions created inside it are gone; reload the list when next used. */
void sqlite_partitions_forget(struct sqlite_partitions *p);
/* Drops (DROP TABLE) the partitions that end at or before horizon_ms, but restored ones, adding
 * to stats; with archive_dir set (not NULL or "") each is archived there first, and one that
 * cannot be is not dropped (the error stops the pass). */
int sqlite_partitions_drop_before(struct sqlite_partitions *p, int64_t horizon_ms,
                                  const char *archive_dir, struct store_retention_stats *stats,
                                  struct err *e);
/* Creates the archive's partition (state restored) and fills it from the archive, inside the
 * caller's write transaction; see store_archive_restore(). */
int sqlite_partition_restore(sqlite3 *db, const struct store_archive *a, int64_t *rows,
                             struct err *e);
/* Drops a restored partition; see store_archive_unload(). */
int sqlite_partition_unload(sqlite3 *db, const char *partition, struct err *e);
/* Packs the oldest hot partition that ends at or before before_ms (if any), and that this
 * process has not written for quiet_ms, into column-packed blocks (state cold), adding to
 * stats. A late row for a packed partition unpacks it (sqlite_partitions_write). */
int sqlite_partitions_pack(struct sqlite_partitions *p, int64_t before_ms, int64_t quiet_ms,
                           struct store_pack_stats *stats, struct err *e);
/* DDL of the table of blocks of the packed partition `partition`, appended to b. */
void sqlite_packed_blocks_ddl(struct buf *b, const char *partition);
/* Registers the opsdb_packed virtual table module (sqlite_packed_vtab.c). */
int sqlite_packed_register(sqlite3 *db);
/* DDL of the opsdb_partitions catalogue, appended to b. */
void sqlite_partition_catalogue_ddl(struct buf *b);
/* The name of t's partition that starts at start_ts. */
void sqlite_partition_name(const struct table *t, int64_t start_ts, int64_t window_ms, char *out,
                           size_t size);
/* Narrows the inclusive bounds [*lo, *hi] of an integer ts by the constraint `ts <op> v` (op
 * "=", ">", ">=", "<" or "<=", maybe followed by other text): exact for integers, rounded
 * outwards for fractions, left as they are for what is not a number (sqlite_partition_vtab.c;
 * both virtual tables use it). */
void sqlite_ts_bound(const char *op, sqlite3_value *v, int64_t *lo, int64_t *hi);
/* v as the integer a rowid equal to it has (an integer, or a real with a whole value); false
 * when no rowid can equal it. */
bool sqlite_rowid_of(sqlite3_value *v, int64_t *out);
/* Declares a virtual table with event table t's columns and types (xConnect of both the
 * partitioned and the packed virtual tables). */
int sqlite_declare_event_vtab(sqlite3 *db, const struct table *t);
/* Registers the opsdb_partitioned virtual table module (sqlite_partition_vtab.c). */
int sqlite_partition_register(sqlite3 *db);
/* Moves the rows of event tables stored as plain tables (schema version 4 and before) into
 * day partitions and puts the virtual table in their place. */
int sqlite_partition_migrate(sqlite3 *db, struct err *e);

/* DDL of one physical event table (a partition) named name with t's columns and indexes. */
void sqlite_event_table_ddl(struct buf *b, const struct table *t, const char *name);
/* "INSERT INTO name (<t's columns>) VALUES (?, ...)", parameters in column order, appended to b. */
void sqlite_insert_sql(struct buf *b, const struct table *t, const char *name);
/* Sets opsdb_meta's key to value, or keeps what it holds when that is larger. */
int sqlite_meta_raise(sqlite3 *db, const char *key, int64_t value, struct err *e);
/* Records in opsdb_meta ('<table>.dropped_until') that retention dropped t's data up to
 * until_ms (kept as the latest such time): `retention verify` finds data dropped inside the
 * policy with it. */
int sqlite_note_dropped(sqlite3 *db, const struct table *t, int64_t until_ms, struct err *e);
/* Whether a table (plain or virtual) of that name exists. */
bool sqlite_table_exists(sqlite3 *db, const char *name);
/* The SQLite type of a column. */
const char *sqlite_column_type(const struct column *c);
/* Binds a batch value to parameter i. */
void sqlite_bind_value(sqlite3_stmt *q, int i, const struct value *v);

/* Creates or migrates the schema to schema_version(). Runs in one transaction. */
int sqlite_migrate(sqlite3 *db, struct err *e);
/* The CREATE VIEW statements of this back end, in store_view_names() order. */
const char *sqlite_view_sql(size_t i);

#endif
