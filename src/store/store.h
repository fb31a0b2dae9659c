/*
 * store: the operational_data database behind one interface. A store has one write path (used by
 * one thread at a time: the writer) and a pool of read connections. The back end (SQLite today)
 * is chosen from the database URI at open; nothing outside store/ knows which one it is.
 */
#ifndef OPSDB_STORE_H
#define OPSDB_STORE_H

#include "core/core.h"

struct store;
struct store_reader;

enum store_mode {
    STORE_READWRITE, /* creates and migrates the schema, opens the write path */
    STORE_READONLY,  /* readers only; fails if the database does not exist */
    STORE_EXISTING,  /* as STORE_READWRITE, but fails if the database does not exist
                        (maintenance: compaction, retention) */
};

/* Opens (and for STORE_READWRITE creates/migrates) the database named by cfg->db. Migration
 * progress is logged. Returns 0 and *out, or an error (E_STORE, E_INVALID for a database of a
 * newer schema version). Free with store_close(). */
int store_open(struct store **out, const struct config *cfg, enum store_mode mode, struct err *e);
void store_close(struct store **s);

/* Schema version recorded in the database. */
int store_schema_version(struct store *s);
/* Bytes the database occupies on disk (main file + WAL). */
int64_t store_size_bytes(struct store *s);
/* Human-readable name of the back end and where it keeps data, e.g. "sqlite ./data/x.db". */
const char *store_describe(struct store *s);

/* ---- write path: only the writer thread (or a single-threaded CLI) calls these. ----------- */

/* Starts a group: one transaction that the batches of many requests join. */
int store_write_begin(struct store *s, struct err *e);
/* Writes one validated batch inside the group, atomically: on failure the group is as it was
 * before this call (a savepoint is rolled back) and e says why. */
int store_write_batch(struct store *s, const struct batch *b, struct err *e);
/* Commits the group; 0 means every batch written into it is durable. On failure the whole group
 * is rolled back. */
int store_write_commit(struct store *s, struct err *e);
void store_write_rollback(struct store *s);
/* True when another connection (another process) committed since the last call. Writer thread
 * only. */
bool store_changed_elsewhere(struct store *s);
/* Checks that the database files are writable (for /readyz); any thread. */
int store_check_writable(struct store *s, struct err *e);

/* ---- read path: any thread, one reader per thread at a time. ------------------------------ */

/* Borrows a read connection, waiting until one is free. */
struct store_reader *store_reader_get(struct store *s);
void store_reader_put(struct store *s, struct store_reader *r);

/* A named parameter for a query: bound to :name placeholders and visible to the views through
 * the SQL function opsdb_param(name, default). */
struct store_param {
    const char *name;
    bool is_text;
    double number;
    const char *text;
};

struct store_query {
    const char *sql;
    const struct store_param *params;
    size_t nparams;
    int64_t timeout_ms; /* 0: no limit */
    int64_t max_rows;   /* 0: no limit; more rows is an E_LIMIT error */
    bool untrusted;     /* user SQL: one read-only statement, authorizer denies the rest */
};

/* A result: column names and rows of values, all in the result's arena. */
struct store_result {
    size_t ncols, nrows, cap_rows;
    const char **columns;
    struct value *values; /* nrows * ncols */
    struct arena arena;
};

/* Runs q on r and fills res (initialised here; release with store_result_release even on
 * error). Errors: E_INVALID (bad SQL, not read-only, denied by the authorizer), E_LIMIT (time or
 * row limit, the message names which), E_STORE. */
int store_reader_query(struct store_reader *r, const struct store_query *q,
                       struct store_result *res, struct err *e);
/* Runs an untrusted query (q->untrusted must be set) as store_reader_query does, except that it
 * may not read the tables named in hidden (NULL-terminated) nor their internal tables
 * (<name>_<anything>: partitions, packed blocks): E_INVALID naming the table. The back end's
 * authorizer refuses them, whatever the SQL spells (aliases, views, subqueries). */
int store_reader_query_hiding(struct store_reader *r, const struct store_query *q,
                              const char *const *hidden, struct store_result *res, struct err *e);
/* Building a result (back ends, and queries that assemble their own rows): names are copied into
 * the result's arena; add_row appends a row of NULLs and returns it. */
int store_result_set_columns(struct store_result *res, size_t ncols, const char *const *names);
struct value *store_result_add_row(struct store_result *res);
/* Sets one value of a result's row: text (copied into the result's arena; NULL or "" leaves
 * the value NULL) or an integer. */
void store_result_put_text(struct store_result *res, struct value *v, const char *text);
void store_result_put_int(struct value *v, int64_t i);
/* An empty result (what a failed query leaves); store_result_release() frees any result. */
void store_result_init(struct store_result *res);
void store_result_release(struct store_result *res);

/* Stored rollups of a TABLE_SERIES table: <table>_<name> holds, per series and bucket of
 * bucket_ms (bucket start in column ts), min, max, sum, count, last and last_ts, maintained
 * exactly in the transaction that writes the samples. Finest first. */
struct rollup_level {
    const char *name; /* "1m", "1h" */
    int64_t bucket_ms;
};
const struct rollup_level *store_rollup_levels(size_t *count);

/* Reading metric series for the series API and alert rules: what one stored bucket holds.
 * A rollup level's bucket as kept; a raw sample as a bucket of one (min, max, sum and last are
 * its value, count 1, last_ts its ts). sum is NaN where it overflowed. */
struct series_bucket {
    int64_t ts, count, last_ts;
    double min, max, sum, last;
};
/* Gets one series' buckets, in ts order; a series may come in several calls, one after the
 * other. Non-zero (an error code, with e set) stops the read, which returns that value. */
typedef int (*series_sink)(void *arg, int64_t series_id, const struct series_bucket *b, size_t n,
                           struct err *e);
struct series_read {
    const char *table;      /* a TABLE_SERIES table */
    const char *resolution; /* "raw" or a rollup level's name */
    const int64_t *ids;     /* ascending, no repeats */
    size_t nids;
    int64_t from_ms, to_ms; /* from_ms <= ts < to_ms */
    int64_t timeout_ms;     /* 0: no limit */
};
/* Hands sink the stored buckets of each series of q->ids that has any in the range, series in
 * the order of ids. E_INVALID for a table or resolution that does not exist, E_LIMIT past the
 * time limit, E_CORRUPT for damaged data, E_STORE. */
int store_series_read(struct store_reader *r, const struct series_read *q, series_sink sink,
                      void *arg, struct err *e);

/* Compaction: raw metric samples older than a horizon move into compressed per-series chunks
 * (one UTC day per chunk at most), which stay readable under the same table and view names. */
struct store_compact_stats {
    int64_t samples_moved;    /* raw samples now in chunks */
    int64_t series_compacted; /* series that had samples to move */
    int64_t series_seen;      /* series visited */
    bool pass_done;           /* every series was visited since the pass began */
    int64_t series_failed;    /* series left raw: a chunk of theirs could not be read */
    char first_failure[256];  /* why, for the first of them */
};
/* One bounded step (a few hundred series) in its own write transaction, adding to *stats; call
 * again until stats->pass_done. The caller must not hold a write transaction; writer thread
 * only. E_STORE when the database failed (nothing of the step is kept). */
int store_compact_step(struct store *s, int64_t before_ms, struct store_compact_stats *stats,
                       struct err *e);

/* Packing: event partitions whose whole window is older than a horizon become column-packed
 * zstd blocks (state cold), read back under the same table names; a late row for one unpacks
 * it. */
struct store_pack_stats {
    int64_t partitions_packed;
    int64_t rows_packed;
    int64_t bytes_packed; /* the blocks' bytes */
    bool done;      /* no partition before the horizon is left to pack now (one that got rows within
                       storage.pack_quiet waits for a later pass) */
    char last[128]; /* the partition packed last */
};
/* Packs at most one partition (the oldest of some table) that ends at or before before_ms, in
 * its own write transaction, adding to *stats; call again until stats->done. The caller must
 * not hold a write transaction; writer thread only. E_STORE when the database failed (nothing
 * of the step is kept). */
int store_pack_step(struct store *s, int64_t before_ms, struct store_pack_stats *stats,
                    struct err *e);

/* Retention: data past each table's policy is dropped whole — event partitions (DROP TABLE),
 * days of compressed metric samples — and rollup buckets past their resolution's policy. */
struct store_retention_stats {
    int64_t partitions_dropped; /* event partitions */
    int64_t rows_dropped;       /* their rows */
    int64_t chunks_dropped;     /* compressed metric chunks (one per series and day) */
    int64_t samples_dropped;    /* metric samples in them, and raw ones past policy */
    int64_t rollup_rows_dropped;
    int64_t partitions_archived; /* event partitions written to storage.archive_dir first */
    int64_t archives_expired;    /* archives past storage.archive_retention removed */
    char expire_failure[512];    /* why removing them failed ("" when it did not): the drop
                                    stands, and the next run tries again */
};
/* Applies every retention policy as of now_ms in one write transaction; the caller must not hold
 * one. E_STORE when the database failed (nothing is dropped then). Writer thread only. */
int store_retention_apply(struct store *s, int64_t now_ms, struct store_retention_stats *stats,
                          struct err *e);

/* ---- archives: event partitions written out before retention drops them -------------------
 * With storage.archive_dir set, retention writes each event partition it drops as
 * <dir>/<table>/<partition>.ndjson.zst (zstd NDJSON, one row per line, column names as keys)
 * plus a manifest <partition>.json, before the DROP; an archive that cannot be written stops the
 * drop. Archives older than storage.archive_retention are removed by retention. */
struct store_archive {
    const struct table *table;
    char partition[128];
    int64_t from_ms, to_ms; /* the partition's window, [from, to) */
    int64_t rows, bytes;    /* rows in it; bytes of the compressed file */
    int64_t created_at_ms;
    char sha256[65]; /* of the compressed file, hex */
    char data_path[4300], manifest_path[4600];
    char problem[512]; /* "" or why the manifest cannot be read (then only table, partition
                          and manifest_path are set) */
};

/* The archives under dir, sorted by table and time, those whose manifest cannot be read
 * included (with a problem); *out is malloc'd (free() it). A missing directory holds none. E_IO
 * when a directory cannot be read. */
int store_archive_list(const char *dir, struct store_archive **out, size_t *n, struct err *e);
/* The archive of the partition named partition: E_NOTFOUND when there is none. */
int store_archive_find(const char *dir, const char *partition, struct store_archive *out,
                       struct err *e);
/* Reads a whole archive: its size and sha256 match the manifest, it decompresses, and it holds
 * the manifest's rows, each a JSON object of the table's columns. E_CORRUPT says what is wrong;
 * E_NOTFOUND when the data file is gone. Any thread. */
int store_archive_verify(const struct store_archive *a, struct err *e);
/* Brings an archive back as a partition of its table in state 'restored', in one write
 * transaction (nothing of it stays on failure): queries and views read it again, and retention
 * leaves it alone until store_archive_unload(). Its rows are not folded into rollups, which
 * still count them or dropped them under their own policy. E_INVALID when a partition
 * overlapping its window is in the database; E_CORRUPT as for verify (the archive is checked
 * while it is read). *rows gets the rows restored. */
int store_archive_restore(struct store *s, const struct store_archive *a, int64_t *rows,
                          struct err *e);
/* Drops a restored partition again. E_INVALID when partition is not a restored one. */
int store_archive_unload(struct store *s, const char *partition, struct err *e);
/* Removes the archives under dir whose window ended at or before before_ms, adding to
 * *removed. */
int store_archive_expire(const char *dir, int64_t before_ms, int64_t *removed, struct err *e);

/* ---- backups: what backup/ needs of the back end ------------------------------------------
 * A copy of the whole database as of one moment, the integrity check, and the database's files
 * named by a path (cfg->db), for restoring one in place of another. */

/* Told now and then how far a copy is: bytes written so far of about total_bytes. Returns 0 to
 * go on; anything else stops the copy, which then fails with E_CANCELLED. */
typedef int (*store_backup_progress)(void *arg, int64_t bytes_done, int64_t total_bytes);
/* Writes a consistent copy of the whole database to path, a file that must not exist yet
 * (E_INVALID): every transaction committed before the call began is in it and none that
 * commits later, while the writer goes on committing — the copy is read in one snapshot on a
 * connection of its own, and neither waits for the writer nor holds it up. The copy is one
 * self-contained database file that store_open() opens. progress (may be NULL) is called from
 * this thread. Any thread; the caller removes path with store_file_remove() whatever the
 * result. E_STORE (or E_CORRUPT) when the database cannot be read, E_STORE for the copy. */
int store_backup_to(struct store *s, const char *path, store_backup_progress progress, void *arg,
                    struct err *e);
/* Whether another process has the database at path open: *pid its process id (-1 when it
 * cannot be told), 0 when none does or there is no such database. This process's own
 * connections are not seen. E_IO when it cannot be told; E_INVALID for a URI that is not a
 * file. */
int store_file_in_use(const char *path, long *pid, struct err *e);
/* Gives the database at path a second name, aside, under which it opens whole (with its
 * write-ahead log), and removes the files beside path that belong to it, so that path can be
 * replaced with rename(2) by another database file. The database must not be in use. E_INVALID
 * when aside is taken, E_IO. */
int store_file_set_aside(const char *path, const char *aside, struct err *e);
/* Removes the database at path and the files beside it that belong to it; missing files are
 * not an error. E_IO. */
int store_file_remove(const char *path, struct err *e);

/* ---- a full vacuum: shrinking and converting a database file no process has open ---------- */

struct store_vacuum_stats {
    int64_t bytes_before;    /* the database file and its write-ahead log */
    int64_t bytes_needed;    /* free space the copy takes beside the file: the data's pages */
    int64_t bytes_available; /* free space of the file system the database is on */
    int64_t bytes_after;     /* the compact file (store_file_vacuum) */
    bool shrinks_before;     /* the file could give pages back already (see store_optimize) */
};
/* What store_file_vacuum of the database at cfg->db would take: fills every field but
 * bytes_after. E_NOTFOUND when there is no database, E_STORE when it cannot be read. */
int store_file_vacuum_plan(const struct config *cfg, struct store_vacuum_stats *stats,
                           struct err *e);
/* Rewrites the database at cfg->db whole into a compact copy beside it, in the layout that lets
 * store_optimize give free pages back from then on (SQLite: VACUUM INTO with
 * auto_vacuum=incremental), and renames the copy over it. The database stays as it was until
 * that rename; a copy left by a stopped vacuum is removed by the next. progress (may be NULL)
 * hears of the copy's bytes. E_CONFLICT while another process has the database open (checked
 * before the copy and again before the rename), E_LIMIT when the file system has less free
 * space than the copy needs, E_NOTFOUND, E_STORE, E_IO. No store may be open on the file in
 * this process. */
int store_file_vacuum(const struct config *cfg, store_backup_progress progress, void *arg,
                      struct store_vacuum_stats *stats, struct err *e);

/* ---- checks and upkeep of the database ----------------------------------------------------- */

/* Checks the structure of the database (SQLite: PRAGMA quick_check when quick, else PRAGMA
 * integrity_check) on a read connection, so that writes go on meanwhile. report gets "ok", or
 * the first problems found, one a line (as much as report->max holds). 0 when the database is
 * sound; E_CORRUPT (report says what) when it is not; E_STORE when the check could not run.
 * Reads the whole file: takes long on a large database. Any thread. */
int store_integrity_check(struct store *s, bool quick, struct buf *report, struct err *e);

struct store_optimize_stats {
    int64_t bytes_before, bytes_after; /* store_size_bytes() before and after */
    int64_t free_bytes;                /* free pages left inside the file, reused by writes */
    int64_t bytes_released;            /* free pages given back to the file system */
    bool cannot_shrink; /* a file made without incremental vacuum: only store_file_vacuum shrinks
                           it */
    bool log_busy;      /* readers kept the write-ahead log from being emptied; the next run does */
};
/* Upkeep of the database file: refreshes the query planner's statistics where they are stale
 * (SQLite: PRAGMA optimize), gives free pages back to the file system where the file allows it
 * (incremental vacuum), and moves the write-ahead log into the database and truncates it
 * (waiting a second at most for readers). Writer thread only, outside a write transaction.
 * E_STORE when the database failed. */
int store_optimize(struct store *s, struct store_optimize_stats *stats, struct err *e);

/* Names of the views every back end defines, in documentation order. */
const char *const *store_view_names(size_t *count);

#endif
