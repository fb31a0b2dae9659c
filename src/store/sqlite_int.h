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

/* Creates or migrates the schema to schema_version(). Runs in one transaction. */
int sqlite_migrate(sqlite3 *db, struct err *e);
/* The CREATE VIEW statements of this back end, in store_view_names() order. */
const char *sqlite_view_sql(size_t i);

#endif
