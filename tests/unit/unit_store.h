/*
 * Helpers of the tests that need a real database: a store and its writer in a temporary
 * directory, rows written through the JSON parser and the writer as a request writes them, and
 * one number read back with SQL.
 */
#ifndef OPSDB_TEST_UNIT_STORE_H
#define OPSDB_TEST_UNIT_STORE_H

#include "unit.h"

#include "ingest/ingest.h"
#include "store/store.h"

#include <ftw.h>
#include <stdarg.h>
#include <unistd.h>

struct ut_db {
    char dir[64];
    struct config cfg; /* of the store and the writer: set it between init and start */
    struct store *store;
    struct writer *w;
};

/* A temporary directory and the default configuration with the database in it. */
static inline void ut_db_init(struct ut_db *d, const char *name)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/opsdb-test-%s-XXXXXX", name);
    assert_non_null(mkdtemp(d->dir));
    config_defaults(&d->cfg);
    snprintf(d->cfg.db, sizeof d->cfg.db, "%s/db.sqlite", d->dir);
    snprintf(d->cfg.sqlite_synchronous, sizeof d->cfg.sqlite_synchronous, "normal");
}

/* Opens the store and starts its writer on d->cfg. */
static inline void ut_db_start(struct ut_db *d)
{
    struct err e;
    if (store_open(&d->store, &d->cfg, STORE_READWRITE, &e) != 0)
        fail_msg("store_open: %s", e.msg);
    if (writer_new(&d->w, d->store, &d->cfg, &e) != 0)
        fail_msg("writer_new: %s", e.msg);
}

static inline void ut_db_stop(struct ut_db *d)
{
    writer_free(&d->w);
    store_close(&d->store);
}

static inline int ut_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Stops what runs and removes the directory. */
static inline void ut_db_remove(struct ut_db *d)
{
    ut_db_stop(d);
    nftw(d->dir, ut_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Parses json (rows of table) with the default configuration — whatever retention d->cfg sets,
 * so rows past the store's policy can be written — and submits them through the writer. */
static inline void ut_db_write(struct ut_db *d, const char *table, const char *json)
{
    struct config cfg;
    config_defaults(&cfg);
    struct ingest_ctx ctx;
    ingest_ctx_init(&ctx, &cfg, NULL, PREC_MS);
    struct batch b;
    batch_init(&b, schema_table(table));
    struct rejects r;
    rejects_init(&r, "row");
    int rc = ingest_parse_json(&ctx, json, strlen(json), false, &b, &r);
    if (rc != 0)
        fail_msg("parsing %s rows: %d, %s", table, rc, r.n ? r.items[0].reason : "");
    struct err e;
    if (writer_submit(d->w, &b, &e) != 0)
        fail_msg("writing %s rows: %s", table, e.msg);
    batch_release(&b);
}

/* Two requests, an hour apart, each of n samples (one a second) of each of nseries series
 * (hosts h0, h1, ...) of metric, three days ago: a past day of two chunks per series, which
 * compaction rewrites into one. */
static inline void ut_db_write_old_samples(struct ut_db *d, const char *metric, int nseries, int n)
{
    int64_t day = (time_now_ms() / DAY_MS - 3) * DAY_MS;
    for (int req = 0; req < 2; req++) {
        struct buf b;
        buf_init(&b, 1 << 22);
        buf_putc(&b, '[');
        for (int i = 0; i < n * nseries; i++)
            buf_printf(&b,
                       "%s{\"ts\": %lld, \"host\": \"h%d\", \"component\": \"c\", \"metric\": "
                       "\"%s\", \"value\": %d}",
                       i ? "," : "", (long long)(day + HOUR_MS * req + 1000LL * (i / nseries)),
                       i % nseries, metric, i);
        buf_putc(&b, ']');
        ut_db_write(d, "system_metrics", b.data);
        buf_release(&b);
    }
}

/* One request of n api_usage rows at ts0, ts0 + 1 s, ... */
static inline void ut_db_write_requests(struct ut_db *d, int64_t ts0, int n)
{
    struct buf b;
    buf_init(&b, 1 << 22);
    buf_putc(&b, '[');
    for (int i = 0; i < n; i++)
        buf_printf(&b,
                   "%s{\"ts\": %lld, \"service\": \"api\", \"method\": \"GET\", \"endpoint\": "
                   "\"/x\", \"status_code\": 200, \"latency_ms\": %d}",
                   i ? "," : "", (long long)(ts0 + 1000LL * i), i);
    buf_putc(&b, ']');
    ut_db_write(d, "api_usage", b.data);
    buf_release(&b);
}

/* The first column of the first row of sql as an integer (-1 for none or NULL). */
static inline int64_t ut_db_int(struct ut_db *d, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    struct store_reader *r = store_reader_get(d->store);
    assert_non_null(r);
    struct store_query q = {.sql = sql};
    struct store_result res;
    struct err e;
    if (store_reader_query(r, &q, &res, &e) != 0)
        fail_msg("%s: %s", sql, e.msg);
    int64_t v = -1;
    if (res.nrows > 0 && res.ncols > 0 && res.values[0].type != VAL_NULL)
        v = res.values[0].type == VAL_INT ? res.values[0].i : (int64_t)res.values[0].d;
    store_result_release(&res);
    store_reader_put(d->store, r);
    return v;
}

#endif
