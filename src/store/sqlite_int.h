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
    int64_t deadline_ms; /* progress handler interrupts past this; 0 = none */
    bool untrusted;      /* authorizer is strict while true */
    const char *denied;  /* what the authorizer last denied, for the error message */
};

/* Opens a connection with opsdb's pragmas and SQL functions. flags as for sqlite3_open_v2. */
int sqlite_conn_open(struct sqlite_conn *c, const char *path, int flags, const struct config *cfg,
                     struct err *e);
void sqlite_conn_close(struct sqlite_conn *c);
/* Registers percentile(), opsdb_param(), opsdb_now_ms(), the authorizer and progress handler. */
int sqlite_register_functions(struct sqlite_conn *c);
/* Runs SQL with no result; fills e with the SQLite message on failure. */
int sqlite_exec(sqlite3 *db, const char *sql, struct err *e);

/* One metric sample on its way into <table>_samples. */
struct point {
    int64_t series_id;
    int64_t ts;
    double value;
    size_t order;  /* input order: the last write of a duplicate sample wins */
    bool replaced; /* the sample existed: its value was overwritten, its buckets are recomputed */
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

/* Creates or migrates the schema to schema_version(). Runs in one transaction. */
int sqlite_migrate(sqlite3 *db, struct err *e);
/* The CREATE VIEW statements of this back end, in store_view_names() order. */
const char *sqlite_view_sql(size_t i);

#endif
