/*
 * query: the read side users see — the views with their window and filter parameters, read-only
 * SQL with its limits, and the formats results are shown in (JSON, CSV, an aligned table).
 */
#ifndef OPSDB_QUERY_H
#define OPSDB_QUERY_H

#include "core/core.h"
#include "store/store.h"

#define QUERY_MAX_FILTERS 8

/* A view request: the window [now - window, now] and equality filters on output columns. */
struct view_request {
    bool has_now; /* false: now_ms is the current time */
    int64_t now_ms;
    int64_t window_ms; /* 0: the view's default */
    int64_t quick_ms;  /* alert_quality: episodes shorter than this are noise; 0: 5 minutes */
    size_t nfilters;
    const char *filter_column[QUERY_MAX_FILTERS];
    const char *filter_value[QUERY_MAX_FILTERS];
    const char *order_by; /* an output column, optionally followed by " desc"; NULL: as is */
    int64_t limit;        /* 0: no limit beyond query.max_rows */
};

struct view_info {
    const char *name;
    int64_t default_window_ms; /* 0: the view has no window */
    const char *doc;
    const char *tables; /* comma-separated tables it reads (cache invalidation) */
};

/* The view catalogue, in documentation order. */
const struct view_info *query_views(size_t *count);
const struct view_info *query_view_find(const char *name);

/* Runs a view. res is initialised here; release it with store_result_release() in every case.
 * E_NOTFOUND: no such view; E_INVALID: a filter names no column of the view. */
int query_view(struct store *s, const struct config *cfg, const char *name,
               const struct view_request *req, struct store_result *res, struct err *e);

/* Runs one read-only SQL statement under the query.timeout and query.max_rows limits. */
int query_sql(struct store *s, const struct config *cfg, const char *sql, struct store_result *res,
              struct err *e);
/* The same, refusing to read the tables of hidden (NULL-terminated; NULL: none) and their
 * internal tables: E_DENIED naming the table (store_reader_query_hiding). */
int query_sql_hiding(struct store *s, const struct config *cfg, const char *sql,
                     const char *const *hidden, struct store_result *res, struct err *e);

/* Runs EXPLAIN QUERY PLAN for sql (trusted: views and documented queries) into res. */
int query_explain(struct store *s, const char *sql, const struct store_param *params,
                  size_t nparams, struct store_result *res, struct err *e);

/* ---- series: time-bucketed samples for charts and rules ------------------------------------ */

struct series_request {
    const char *table;     /* NULL: system_metrics (the only series table) */
    const char *metric;    /* required */
    const char *filter;    /* label matchers "host=h0,component!=db,host=~web-.*"; may be NULL */
    bool has_from, has_to; /* false: to = now, from = to - 1h */
    int64_t from_ms, to_ms;
    int64_t step_ms;        /* 0: about 300 buckets, rounded to whole minutes or hours */
    const char *agg;        /* avg (NULL), min, max, sum, count, last */
    const char *resolution; /* auto (NULL), raw, or a rollup level name ("1m", "1h") */
};

/* Runs a series query and writes the answer as JSON into out:
 * {"table","metric","agg","step_ms","from","to","resolution","series":[{"labels":{...},
 * "values":[[bucket_ms, value], ...]}]}. The range is rounded out to whole steps; buckets are
 * [b, b + step). resolution auto picks the coarsest rollup whose buckets divide the step, so the
 * answer is the one raw samples give (up to floating-point rounding of sums). Errors: E_INVALID for
 * bad parameters (the message names the parameter), E_LIMIT past the point limit, E_STORE. */
int query_series(struct store *s, const struct config *cfg, const struct series_request *req,
                 struct buf *out, struct err *e);
/* The same answer as rows (labels as JSON text, ts, value) for the CLI's table and CSV output;
 * res is initialised here. */
int query_series_rows(struct store *s, const struct config *cfg, const struct series_request *req,
                      struct store_result *res, struct err *e);

/* One value per series over exactly [from_ms, to_ms) (has_from and has_to must be set; step
 * and resolution are ignored), from the raw samples, for alert rules: agg is also rate (the
 * per-second increase of a counter over the samples' span, a drop counting as a reset), p50, p95
 * or p99. Rows (host, component, labels, value) of the series that have samples; value is NULL
 * where it has none (a rate of one sample). Errors as query_series(). */
int query_series_window(struct store *s, const struct config *cfg, const struct series_request *req,
                        struct store_result *res, struct err *e);

/* A filter's label matchers, parsed and checked (regexes compile) but not compiled: for code
 * that turns them into SQL conditions. op is "=", "!=", "=~" or "!~". Up to max terms; E_INVALID
 * names the bad matcher. */
struct query_filter_term {
    char key[128];
    char value[512];
    char op[3];
};
int query_filter_split(const char *filter, struct query_filter_term *out, size_t max, size_t *n,
                       struct err *e);

/* Compiled label matchers, for matching label sets outside series queries (silences,
 * inhibition, routes). Free with query_matchers_free(). */
struct query_matchers;
int query_matchers_new(struct query_matchers **out, const char *filter, struct err *e);
void query_matchers_free(struct query_matchers **m);
/* Whether labels (a JSON object of text values; a missing label is "") match them all. */
struct json_t;
bool query_matchers_match(const struct query_matchers *m, struct json_t *labels);

/* ---- answer cache -------------------------------------------------------------------------- */

/* A bounded LRU cache of answers (views, series) keyed by the request. An answer depends on
 * tables; every commit that writes a table bumps that table's epoch (from the writer's
 * after-commit hook), and an answer computed under older epochs is never served. Thread safe. */
struct query_cache;

#define QUERY_CACHE_TABLES 16
struct query_cache_stats {
    uint64_t hits, misses, evictions;
    uint64_t bytes, entries;
};

/* max_bytes 0 makes a cache that stores nothing. Free with query_cache_free(). */
struct query_cache *query_cache_new(size_t max_bytes);
void query_cache_free(struct query_cache **c);
/* Records that a commit changed schema table index t (0..QUERY_CACHE_TABLES-1). */
void query_cache_bump(struct query_cache *c, size_t table_index);
/* Copies the epochs now current; take them before computing an answer. */
void query_cache_epochs(struct query_cache *c, uint64_t epochs[QUERY_CACHE_TABLES]);
/* Appends the cached answer for key to out and returns true when there is a valid one:
 * computed under the current epochs of every table in tables_mask, and not past expires_ms. */
bool query_cache_get(struct query_cache *c, const char *key, struct buf *out);
/* Stores an answer computed under epochs (from query_cache_epochs) for the tables in
 * tables_mask (bit i = schema table i), valid until expires_ms (0: until a table changes). */
void query_cache_put(struct query_cache *c, const char *key, uint32_t tables_mask,
                     const uint64_t epochs[QUERY_CACHE_TABLES], int64_t expires_ms,
                     const char *body, size_t len);
void query_cache_get_stats(struct query_cache *c, struct query_cache_stats *out);
/* Bit mask of the schema tables a view reads (0 for an unknown view). */
uint32_t query_view_tables(const char *view);

/* ---- retention ------------------------------------------------------------------------------ */

/* One row per table: table, retention_days, oldest, newest (RFC 3339), rows, horizon (now -
 * retention, RFC 3339), dropped_until (how far retention has dropped data, RFC 3339) and status:
 * ok, empty, kept forever, "past policy" when data older than the horizon is held (counted in
 * *past_policy), or "missing inside policy" when data newer than the horizon was dropped
 * (counted in *missing). res is initialised here. */
int query_retention(struct store *s, const struct config *cfg, int64_t now_ms,
                    struct store_result *res, size_t *past_policy, size_t *missing, struct err *e);

/* One row per partition of every table: table, partition, from_ms, to_ms (exclusive), rows,
 * bytes, state (hot: raw rows, cold: compressed, restored: brought back from an archive), and,
 * with archive_dir set, the archives of partitions no longer in the database (state archived,
 * bytes of the file). Sorted by table and from_ms. The caller releases res. */
int query_partitions(struct store *s, const char *archive_dir, struct store_result *res,
                     struct err *e);

/* Output formats. */
enum query_format { FORMAT_TABLE, FORMAT_JSON, FORMAT_CSV };
int query_format_parse(const char *s); /* -1 when unknown */
/* JSON: {"columns": [...], "rows": [{col: value, ...}], "row_count": n} with extra leading
 * members given as a raw JSON fragment (may be NULL), e.g. "\"view\":\"x\"". */
int query_write_json(const struct store_result *res, const char *extra, struct buf *out);
int query_write_csv(const struct store_result *res, struct buf *out);
int query_write_table(const struct store_result *res, struct buf *out);
/* The shortest text that reads back as d (the %.15g text when that reads back), NUL-ended;
 * returns its length. Finite d only. */
#define QUERY_NUMBER_TEXT_MAX 40
size_t query_number_text(double d, char out[static QUERY_NUMBER_TEXT_MAX]);
/* Appends one value as JSON. */
void query_json_value(const struct value *v, struct buf *out);

#endif
