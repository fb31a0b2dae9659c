/*
 * The SQLite back end: one write connection (WAL, group commits in one transaction, a savepoint
 * per batch so a request is all-or-nothing) and read-only connections for queries. Metric
 * samples go through an in-memory series dictionary so a point costs one insert into the
 * (series_id, ts) B-tree, sorted per batch so consecutive inserts land on the same pages.
 */
#include "store/sqlite_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* series dictionary: (metric, host, component, labels) -> id, open addressing */
struct series_entry {
    uint64_t hash;
    int64_t id; /* 0 = empty slot */
    char *key;  /* metric \x1f host \x1f component \x1f labels */
    uint32_t key_len;
};

struct series_map {
    struct series_entry *slots;
    size_t cap, count;
};

struct sqlite_store {
    struct sqlite_conn writer;
    char path[512];
    bool readonly;
    sqlite3_stmt *insert[SCHEMA_MAX_TABLES]; /* per schema table index */
    sqlite3_stmt *series_insert;
    struct sqlite_rollup *rollup;
    struct sqlite_cold *cold;
    struct sqlite_partitions
        *parts[SCHEMA_MAX_TABLES]; /* per schema table index: event tables' partitions */
    struct series_map series;
    /* series per metric (limits.max_series_per_metric): key the metric, id its count */
    struct series_map metric_series;
    int64_t max_series_per_metric; /* 0 = no limit */
    bool in_group;
    /* fault injection for tests (STYLE 21): OPSDB_FAULT=commit:N fails every Nth commit */
    long fault_commit_every, commits;
    int64_t data_version; /* last PRAGMA data_version seen by the writer (read at open) */
    int64_t partition_ms[SCHEMA_MAX_TABLES],
        retention_days[SCHEMA_MAX_TABLES]; /* from the configuration, per table */
    int64_t rollup_1m_retention_ms, rollup_1h_retention_ms, event_rollup_1m_retention_ms;
    int64_t partitions_version; /* PRAGMA data_version when the partition lists were checked */
};

static struct sqlite_store *impl(struct store *s)
{
    return s->impl;
}

/* ---- connections ---------------------------------------------------------------------------- */

int sqlite_conn_open(struct sqlite_conn *c, const char *path, int flags, const struct config *cfg,
                     struct err *e)
{
    memset(c, 0, sizeof *c);
    int rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        err_set(e, E_STORE, "cannot open database %s: %s", path,
                c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        c->db = NULL;
        return E_STORE;
    }
    sqlite3_busy_timeout(c->db, 10000);
    sqlite3_extended_result_codes(c->db, 1);
    if (sqlite_register_functions(c) != SQLITE_OK) {
        err_set(e, E_STORE, "registering SQL functions: %s", sqlite3_errmsg(c->db));
        sqlite3_close(c->db);
        c->db = NULL;
        return E_STORE;
    }
    /* view defaults from the configuration, overridable per query */
    struct store_param defaults[] = {
        {"cpu_warning", false, (double)cfg->health_cpu_warning, NULL},
        {"cpu_critical", false, (double)cfg->health_cpu_critical, NULL},
        {"memory_warning", false, (double)cfg->health_memory_warning, NULL},
        {"memory_critical", false, (double)cfg->health_memory_critical, NULL},
        {"disk_warning", false, (double)cfg->health_disk_warning, NULL},
        {"disk_critical", false, (double)cfg->health_disk_critical, NULL},
        {"stale_after_ms", false, (double)cfg->health_stale_ms, NULL},
        {"cpu_metric", true, 0, cfg->health_cpu_metric},
        {"memory_metric", true, 0, cfg->health_memory_metric},
        {"disk_metric", true, 0, cfg->health_disk_metric},
    };
    c->ndefaults = sizeof defaults / sizeof defaults[0];
    memcpy(c->params, defaults, sizeof defaults);
    c->nparams = c->ndefaults;
    return 0;
}

void sqlite_conn_close(struct sqlite_conn *c)
{
    if (c->db)
        sqlite3_close_v2(c->db);
    c->db = NULL;
}

static int pragmas(struct sqlite_conn *c, const struct config *cfg, bool writer, struct err *e)
{
    char sql[256];
    /* A new file gives the pages that dropped data leave back to the file system when optimize
     * asks (incremental vacuum). It can only be said before the first table, and before the
     * switch to WAL writes the file's first page; an older file is converted by a full vacuum
     * (store_file_vacuum). */
    if (writer && sqlite_pragma_int(c->db, "PRAGMA page_count") == 0) {
        int rc = sqlite_exec(c->db, "PRAGMA auto_vacuum=INCREMENTAL", e);
        if (rc)
            return rc;
    }
    if (writer) {
        snprintf(sql, sizeof sql,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA cache_size=-%lld;"
                 " PRAGMA temp_store=MEMORY; PRAGMA secure_delete=FAST;",
                 strcmp(cfg->sqlite_synchronous, "normal") == 0 ? "NORMAL" : "FULL",
                 (long long)cfg->sqlite_cache_mib * 1024);
    } else {
        snprintf(sql, sizeof sql, "PRAGMA cache_size=-%lld; PRAGMA query_only=1;",
                 (long long)(cfg->sqlite_cache_mib / 4 + 4) * 1024);
    }
    return sqlite_exec(c->db, sql, e);
}

/* ---- series dictionary ---------------------------------------------------------------------- */

static void series_map_clear(struct series_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static struct series_entry *series_slot(struct series_map *m, uint64_t h, const char *key,
                                        uint32_t len)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct series_entry *s = &m->slots[i];
        if (s->id == 0 || (s->hash == h && s->key_len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

static void series_map_put(struct series_map *m, uint64_t h, const char *key, uint32_t len,
                           int64_t id)
{
    if ((m->count + 1) * 4 >= m->cap * 3) {
        struct series_map grown = {calloc(m->cap ? m->cap * 2 : 1024, sizeof(struct series_entry)),
                                   m->cap ? m->cap * 2 : 1024, 0};
        if (!grown.slots)
            abort();
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].id) {
                *series_slot(&grown, m->slots[i].hash, m->slots[i].key, m->slots[i].key_len) =
                    m->slots[i];
                grown.count++;
            }
        free(m->slots);
        *m = grown;
    }
    struct series_entry *s = series_slot(m, h, key, len);
    if (s->id == 0) {
        s->key = malloc(len);
        if (!s->key)
            abort();
        memcpy(s->key, key, len);
        s->key_len = len;
        s->hash = h;
        m->count++;
    }
    s->id = id;
}

static int64_t series_map_get(struct series_map *m, uint64_t h, const char *key, uint32_t len)
{
    if (!m->cap)
        return 0;
    return series_slot(m, h, key, len)->id;
}

/* The series key columns of system_metrics, in schema order. */
static size_t series_key_columns(const struct table *t, int *cols)
{
    size_t n = 0;
    for (size_t i = 0; i < t->ncolumns; i++)
        if (t->columns[i].series_key)
            cols[n++] = (int)i;
    return n;
}

static void series_key(struct buf *k, const struct value *row, const int *cols, size_t n)
{
    k->len = 0;
    for (size_t i = 0; i < n; i++) {
        const struct value *v = &row[cols[i]];
        if (i)
            buf_putc(k, '\x1f');
        if (v->type == VAL_TEXT)
            buf_append(k, v->s, v->len);
    }
}

/* Series of metric so far (0 for a metric without any). */
static int64_t metric_series_count(struct sqlite_store *st, const char *metric, uint32_t len)
{
    return series_map_get(&st->metric_series, hash64(metric, len, 0), metric, len);
}

static void count_series(struct sqlite_store *st, const char *metric, uint32_t len)
{
    int64_t n = metric_series_count(st, metric, len);
    series_map_put(&st->metric_series, hash64(metric, len, 0), metric, len, n + 1);
}

static int series_load(struct sqlite_store *st, const struct table *t, struct err *e)
{
    int cols[16];
    size_t n = series_key_columns(t, cols);
    struct buf sql;
    buf_init(&sql, 4096);
    buf_printf(&sql, "SELECT id");
    for (size_t i = 0; i < n; i++)
        buf_printf(&sql, ", %s", t->columns[cols[i]].name);
    buf_printf(&sql, " FROM %s_series", t->name);
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(st->writer.db, sql.data, -1, &q, NULL);
    buf_release(&sql);
    if (rc != SQLITE_OK)
        return err_set(e, E_STORE, "loading series: %s", sqlite3_errmsg(st->writer.db));
    series_map_clear(&st->series);
    series_map_clear(&st->metric_series);
    size_t metric_at = 0;
    while (metric_at + 1 < n && strcmp(t->columns[cols[metric_at]].name, "metric") != 0)
        metric_at++;
    struct buf key;
    buf_init(&key, 1 << 20);
    while (sqlite3_step(q) == SQLITE_ROW) {
        key.len = 0;
        for (size_t i = 0; i < n; i++) {
            if (i)
                buf_putc(&key, '\x1f');
            const unsigned char *txt = sqlite3_column_text(q, (int)i + 1);
            buf_append(&key, txt, (size_t)sqlite3_column_bytes(q, (int)i + 1));
        }
        series_map_put(&st->series, hash64(key.data, key.len, 0), key.data, (uint32_t)key.len,
                       sqlite3_column_int64(q, 0));
        const char *metric = (const char *)sqlite3_column_text(q, (int)metric_at + 1);
        count_series(st, metric ? metric : "",
                     (uint32_t)sqlite3_column_bytes(q, (int)metric_at + 1));
    }
    buf_release(&key);
    sqlite3_finalize(q);
    return 0;
}

/* ---- statements ----------------------------------------------------------------------------- */

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, struct err *e)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "preparing '%.80s': %s", sql, sqlite3_errmsg(db));
    return 0;
}

static int prepare_inserts(struct sqlite_store *st, struct err *e)
{
    size_t n;
    const struct table *tables = schema_tables(&n);
    struct buf sql;
    buf_init(&sql, 1 << 16);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct table *t = &tables[i];
        sql.len = 0;
        if (t->kind == TABLE_SERIES) {
            int cols[16];
            size_t k = series_key_columns(t, cols);
            buf_printf(&sql, "INSERT INTO %s_series (", t->name);
            for (size_t j = 0; j < k; j++)
                buf_printf(&sql, "%s%s", j ? ", " : "", t->columns[cols[j]].name);
            buf_printf(&sql, ") VALUES (");
            for (size_t j = 0; j < k; j++)
                buf_printf(&sql, "%s?", j ? ", " : "");
            /* another process (opsdb ingest) may have created the series since the dictionary
             * was loaded: then its id comes back instead of a UNIQUE error */
            buf_printf(&sql, ") ON CONFLICT (");
            for (size_t j = 0; j < k; j++)
                buf_printf(&sql, "%s%s", j ? ", " : "", t->columns[cols[j]].name);
            buf_printf(&sql, ") DO UPDATE SET %s = excluded.%s RETURNING id",
                       t->columns[cols[0]].name, t->columns[cols[0]].name);
            rc = prepare(st->writer.db, sql.data, &st->series_insert, e);
            if (rc == 0)
                rc = sqlite_rollup_new(&st->rollup, st->writer.db, t, e);
            if (rc == 0)
                rc = sqlite_cold_new(&st->cold, st->writer.db, t, e);
            continue; /* samples go to chunks (sqlite_cold.c) */
        } else {
            sqlite_insert_sql(&sql, t, t->name);
            if (t->key_column) {
                buf_printf(&sql, " ON CONFLICT (%s) DO UPDATE SET ", t->key_column);
                bool first = true;
                for (size_t j = 0; j < t->ncolumns; j++) {
                    if (strcmp(t->columns[j].name, t->key_column) == 0)
                        continue;
                    buf_printf(&sql, "%s%s = excluded.%s", first ? "" : ", ", t->columns[j].name,
                               t->columns[j].name);
                    first = false;
                }
            }
        }
        if (rc == 0 && t->kind == TABLE_EVENTS) /* rows go to partitions, not the virtual table */
            rc = sqlite_partitions_new(&st->parts[i], st->writer.db, t, st->partition_ms[i], e);
        else if (rc == 0)
            rc = prepare(st->writer.db, sql.data, &st->insert[i], e);
    }
    buf_release(&sql);
    return rc;
}

void sqlite_bind_value(sqlite3_stmt *q, int i, const struct value *v)
{
    switch (v->type) {
    case VAL_INT:
        sqlite3_bind_int64(q, i, v->i);
        break;
    case VAL_REAL:
        sqlite3_bind_double(q, i, v->d);
        break;
    case VAL_TEXT:
        sqlite3_bind_text(q, i, v->s, (int)v->len, SQLITE_STATIC);
        break;
    default:
        sqlite3_bind_null(q, i);
        break;
    }
}

static int step_done(sqlite3 *db, sqlite3_stmt *q, struct err *e)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return err_set(e, E_STORE, "write failed: %s", sqlite3_errmsg(db));
    return 0;
}

/* ---- write path ----------------------------------------------------------------------------- */

static int cmp_point(const void *a, const void *b)
{
    const struct point *x = a, *y = b;
    if (x->series_id != y->series_id)
        return x->series_id < y->series_id ? -1 : 1;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

/* Sorts pts by (series, ts, input order) into out. Series ids are dense, so a counting sort by
 * id (stable: input order kept) does most of the work in linear time; each series' run is then
 * sorted by ts only when it is out of order, which a live source seldom is. */
static void sort_points(const struct point *pts, struct point *out, size_t n)
{
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        lo = pts[i].series_id < lo ? pts[i].series_id : lo;
        hi = pts[i].series_id > hi ? pts[i].series_id : hi;
    }
    size_t *at = n && (uint64_t)(hi - lo) < 4 * (uint64_t)n + 1024
                     ? calloc((size_t)(hi - lo) + 2, sizeof *at)
                     : NULL;
    if (!at) {
        memcpy(out, pts, n * sizeof *out);
        qsort(out, n, sizeof *out, cmp_point);
        return;
    }
    size_t range = (size_t)(hi - lo) + 1;
    for (size_t i = 0; i < n; i++)
        at[pts[i].series_id - lo + 1]++;
    for (size_t k = 1; k <= range; k++)
        at[k] += at[k - 1];
    for (size_t i = 0; i < n; i++)
        out[at[pts[i].series_id - lo]++] = pts[i];
    free(at);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        bool sorted = true;
        for (; j < n && out[j].series_id == out[i].series_id; j++)
            sorted = sorted && out[j].ts >= out[j - 1].ts;
        if (!sorted)
            qsort(out + i, j - i, sizeof *out, cmp_point);
        i = j;
    }
}

/* The id of the row's series, created when new; or an error code (negative) with e filled. */
static int64_t series_resolve(struct sqlite_store *st, const struct value *row, const int *cols,
                              size_t ncols, struct buf *key, struct err *e)
{
    series_key(key, row, cols, ncols);
    uint64_t h = hash64(key->data ? key->data : "", key->len, 0);
    int64_t id = series_map_get(&st->series, h, key->data, (uint32_t)key->len);
    if (id)
        return id;
    const struct value *metric = &row[schema_column(schema_table("system_metrics"), "metric")];
    if (st->max_series_per_metric &&
        metric_series_count(st, metric->s, metric->len) >= st->max_series_per_metric) {
        return err_set(e, E_INVALID,
                       "metric %.200s has %lld series, the limit (limits.max_series_per_metric): a "
                       "sample with new host, component or labels cannot add another",
                       metric->s, (long long)st->max_series_per_metric);
    }
    for (size_t j = 0; j < ncols; j++)
        sqlite_bind_value(st->series_insert, (int)j + 1, &row[cols[j]]);
    int rc = sqlite3_step(st->series_insert);
    id = rc == SQLITE_ROW ? sqlite3_column_int64(st->series_insert, 0) : 0;
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st->series_insert);
    sqlite3_reset(st->series_insert);
    if (rc != SQLITE_DONE || !id)
        return err_set(e, E_STORE, "write failed: %s", sqlite3_errmsg(st->writer.db));
    series_map_put(&st->series, h, key->data ? key->data : "", (uint32_t)key->len, id);
    count_series(st, metric->s, metric->len);
    return id;
}

static int write_series(struct sqlite_store *st, const struct batch *b, struct err *e)
{
    const struct table *t = b->table;
    int cols[16];
    size_t ncols = series_key_columns(t, cols);
    int ts_col = schema_column(t, "ts"), value_col = schema_column(t, "value");
    struct point *in = malloc((b->nrows ? b->nrows : 1) * sizeof *in);
    struct point *pts = in ? malloc((b->nrows ? b->nrows : 1) * sizeof *pts) : NULL;
    if (!pts) {
        free(in);
        return err_set(e, E_NOMEM, "out of memory sorting %zu samples", b->nrows);
    }
    struct buf key;
    buf_init(&key, 1 << 16);
    int rc = 0;
    for (size_t i = 0; i < b->nrows; i++) {
        const struct value *row = b->values + i * t->ncolumns;
        int64_t id = series_resolve(st, row, cols, ncols, &key, e);
        if (id < 0) { /* an error code */
            rc = (int)id;
            goto out;
        }
        in[i] = (struct point){id, row[ts_col].i, row[value_col].d, i, false};
    }
    sort_points(in, pts, b->nrows);
    if ((rc = sqlite_cold_append(st->cold, pts, b->nrows, e)) != 0)
        goto out;
    rc = sqlite_rollup_apply(st->rollup, pts, b->nrows, e);
out:
    buf_release(&key);
    free(in);
    free(pts);
    return rc;
}

static int write_rows(struct sqlite_store *st, const struct batch *b, sqlite3_stmt *ins,
                      struct err *e)
{
    size_t ncol = b->table->ncolumns;
    for (size_t i = 0; i < b->nrows; i++) {
        const struct value *row = b->values + i * ncol;
        for (size_t j = 0; j < ncol; j++)
            sqlite_bind_value(ins, (int)j + 1, &row[j]);
        int rc = step_done(st->writer.db, ins, e);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* After a rollback: what the in-memory state says of series and partitions created inside it
 * is wrong; reload it. */
static void forget_rolled_back(struct sqlite_store *st)
{
    series_load(st, schema_table("system_metrics"), NULL);
    for (size_t i = 0; i < sizeof st->parts / sizeof st->parts[0]; i++)
        if (st->parts[i])
            sqlite_partitions_forget(st->parts[i]);
}

/* Another process (opsdb ingest, opsdb retention apply) may have created or dropped partitions
 * since this connection last wrote: with the write lock held, a changed PRAGMA data_version
 * means the in-memory partition lists must be read again. */
static void notice_other_writers(struct sqlite_store *st)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->writer.db, "PRAGMA data_version", -1, &q, NULL) != SQLITE_OK)
        return;
    int64_t version = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    if (version != st->partitions_version)
        for (size_t i = 0; i < sizeof st->parts / sizeof st->parts[0]; i++)
            if (st->parts[i])
                sqlite_partitions_forget(st->parts[i]);
    st->partitions_version = version;
}

static int sq_write_begin(struct store *s, struct err *e)
{
    struct sqlite_store *st = impl(s);
    if (st->readonly)
        return err_set(e, E_STORE, "the store was opened read-only");
    int rc = sqlite_exec(st->writer.db, "BEGIN IMMEDIATE", e);
    st->in_group = rc == 0;
    if (rc == 0)
        notice_other_writers(st);
    return rc;
}

static int sq_write_batch(struct store *s, const struct batch *b, struct err *e)
{
    struct sqlite_store *st = impl(s);
    size_t n;
    const struct table *tables = schema_tables(&n);
    size_t ti = (size_t)(b->table - tables);
    if (sqlite_exec(st->writer.db, "SAVEPOINT batch", e) != 0)
        return E_STORE;
    int rc = b->table->kind == TABLE_SERIES   ? write_series(st, b, e)
             : b->table->kind == TABLE_EVENTS ? sqlite_partitions_write(st->parts[ti], b, e)
                                              : write_rows(st, b, st->insert[ti], e);
    if (rc != 0) {
        sqlite3_exec(st->writer.db, "ROLLBACK TO batch; RELEASE batch", NULL, NULL, NULL);
        /* series and partitions created inside the rolled-back savepoint are gone */
        forget_rolled_back(st);
        return rc;
    }
    return sqlite_exec(st->writer.db, "RELEASE batch", e);
}

static int sq_write_commit(struct store *s, struct err *e)
{
    struct sqlite_store *st = impl(s);
    st->in_group = false;
    st->commits++;
    if (st->fault_commit_every && st->commits % st->fault_commit_every == 0) {
        err_set(e, E_STORE, "injected fault: commit %ld failed (OPSDB_FAULT)", st->commits);
    } else if (sqlite_exec(st->writer.db, "COMMIT", e) == 0) {
        return 0;
    }
    sqlite3_exec(st->writer.db, "ROLLBACK", NULL, NULL, NULL);
    forget_rolled_back(st);
    return E_STORE;
}

static void sq_write_rollback(struct store *s)
{
    struct sqlite_store *st = impl(s);
    if (!st->in_group)
        return;
    st->in_group = false;
    sqlite3_exec(st->writer.db, "ROLLBACK", NULL, NULL, NULL);
    forget_rolled_back(st);
}

static int sq_compact_step(struct store *s, int64_t before_ms, struct store_compact_stats *stats,
                           struct err *e)
{
    struct sqlite_store *st = impl(s);
    int rc = sq_write_begin(s, e);
    if (rc)
        return rc;
    rc = sqlite_cold_compact(st->cold, before_ms, 256, stats, &stats->pass_done, e);
    if (rc == 0 && (rc = sq_write_commit(s, e)) == 0)
        return 0;
    sqlite_cold_abandon(st->cold);
    sq_write_rollback(s); /* a no-op when the commit already rolled back */
    return rc;
}

/* One partition of the first table that has one to pack; done once a step finds none. */
static int sq_pack_step(struct store *s, int64_t before_ms, struct store_pack_stats *stats,
                        struct err *e)
{
    struct sqlite_store *st = impl(s);
    int rc = sq_write_begin(s, e);
    if (rc)
        return rc;
    struct store_pack_stats before = *stats;
    for (size_t i = 0; i < sizeof st->parts / sizeof st->parts[0] && rc == 0; i++)
        if (st->parts[i] && stats->partitions_packed == before.partitions_packed)
            rc = sqlite_partitions_pack(st->parts[i], before_ms, s->cfg.storage_pack_quiet_ms,
                                        stats, e);
    stats->done = stats->partitions_packed == before.partitions_packed;
    if (rc == 0 && (rc = sq_write_commit(s, e)) == 0)
        return 0;
    sq_write_rollback(s);
    *stats = before; /* rolled back: nothing of the step is kept */
    return rc;
}

/* Drops the buckets of one rollup level before horizon_ms; *dropped_before is where the
 * level now begins. The series minutes live in the chunks (whole days at a time); other
 * levels are tables — series rollups keyed (series_id, ts), where the series list makes the
 * delete one range per series, not a scan. */
static int drop_rollup_level(struct sqlite_store *st, const struct table *t,
                             const struct rollup_level *lv, int64_t horizon_ms,
                             int64_t *dropped_before, struct store_retention_stats *stats,
                             struct err *e)
{
    bool series = t->kind == TABLE_SERIES;
    *dropped_before = horizon_ms;
    if (series && sqlite_rollup_in_chunks(lv)) {
        int64_t chunks;
        int rc =
            sqlite_cold_drop_minutes_before(st->cold, t, horizon_ms, &chunks, dropped_before, e);
        stats->rollup_rows_dropped += rc ? 0 : chunks;
        return rc;
    }
    char sql[512];
    snprintf(sql, sizeof sql, "DELETE FROM %s_%s WHERE %s ts < %lld", t->name, lv->name,
             series ? "series_id IN (SELECT id FROM system_metrics_series) AND" : "",
             (long long)horizon_ms);
    int rc = sqlite_exec(st->writer.db, sql, e);
    stats->rollup_rows_dropped += rc ? 0 : sqlite3_changes(st->writer.db);
    return rc;
}

/* The per-run rows of t (pipeline_status) follow the hourly rollups' policy, but stay while any
 * raw row of their run does (sqlite_run_rollup.c): pipeline_health finds runs only there. */
static int drop_old_runs(struct sqlite_store *st, const struct table *t, int64_t now_ms,
                         struct store_retention_stats *stats, struct err *e)
{
    if (st->rollup_1h_retention_ms == 0 || !sqlite_run_rollup_exists(t))
        return 0;
    int64_t dropped;
    int rc = sqlite_run_rollup_drop_before(st->writer.db, t, now_ms - st->rollup_1h_retention_ms,
                                           &dropped, e);
    stats->rollup_rows_dropped += dropped;
    return rc;
}

/* Rollup buckets past their resolution's retention (0 keeps them). */
static int drop_old_rollups(struct sqlite_store *st, int64_t now_ms,
                            struct store_retention_stats *stats, struct err *e)
{
    size_t n, nlv;
    const struct table *tables = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        const struct table *t = &tables[i];
        bool series = t->kind == TABLE_SERIES;
        int rc = drop_old_runs(st, t, now_ms, stats, e);
        if (rc)
            return rc;
        if (!series && !sqlite_event_rollup_exists(t))
            continue;
        const struct rollup_level *lv =
            series ? store_rollup_levels(&nlv) : sqlite_event_rollup_levels(&nlv);
        for (size_t j = 0; j < nlv; j++) {
            /* daily buckets go with the hourly ones' policy; the event tables' minutes have
             * their own (the views' window edges read them) */
            int64_t keep_ms = lv[j].bucket_ms != 60000 ? st->rollup_1h_retention_ms
                              : series                 ? st->rollup_1m_retention_ms
                                                       : st->event_rollup_1m_retention_ms;
            if (keep_ms == 0)
                continue;
            int64_t dropped_before;
            rc = drop_rollup_level(st, t, &lv[j], now_ms - keep_ms, &dropped_before, stats, e);
            if (rc)
                return rc;
            /* the views read minutes only from where this leaves them (sqlite_views.c) */
            char key[200];
            snprintf(key, sizeof key, "%s_%s.dropped_before", t->name, lv[j].name);
            if ((rc = sqlite_meta_raise(st->writer.db, key, dropped_before, e)) != 0)
                return rc;
        }
    }
    return 0;
}

static int sq_retention_apply(struct store *s, int64_t now_ms, struct store_retention_stats *stats,
                              struct err *e)
{
    struct sqlite_store *st = impl(s);
    int rc = sq_write_begin(s, e);
    if (rc)
        return rc;
    size_t n;
    const struct table *tables = schema_tables(&n);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (st->retention_days[i] == 0)
            continue; /* kept forever */
        int64_t horizon = now_ms - st->retention_days[i] * MS_PER_DAY;
        if (tables[i].kind == TABLE_EVENTS)
            rc = sqlite_partitions_drop_before(st->parts[i], horizon, s->cfg.storage_archive_dir,
                                               stats, e);
        else if (tables[i].kind == TABLE_SERIES)
            rc = sqlite_cold_drop_before(st->cold, &tables[i], horizon, stats, e);
    }
    if (rc == 0)
        rc = drop_old_rollups(st, now_ms, stats, e);
    if (rc == 0 && (rc = sq_write_commit(s, e)) == 0)
        return 0;
    sq_write_rollback(s);
    return rc;
}

static int sq_restore_partition(struct store *s, const struct store_archive *a, int64_t *rows,
                                struct err *e)
{
    struct sqlite_store *st = impl(s);
    int rc = sq_write_begin(s, e);
    if (rc)
        return rc;
    rc = sqlite_partition_restore(st->writer.db, a, rows, e);
    if (rc == 0 && (rc = sq_write_commit(s, e)) == 0)
        return 0;
    sq_write_rollback(s);
    return rc;
}

static int sq_unload_partition(struct store *s, const char *partition, struct err *e)
{
    struct sqlite_store *st = impl(s);
    int rc = sq_write_begin(s, e);
    if (rc)
        return rc;
    rc = sqlite_partition_unload(st->writer.db, partition, e);
    if (rc == 0 && (rc = sq_write_commit(s, e)) == 0)
        return 0;
    sq_write_rollback(s);
    return rc;
}

/* ---- checks and upkeep ---------------------------------------------------------------------- */

int64_t sqlite_pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK) {
        if (sqlite3_step(q) == SQLITE_ROW)
            v = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    return v;
}

static int64_t sq_size_bytes(struct store *s);

static int sq_optimize(struct store *s, struct store_optimize_stats *stats, struct err *e)
{
    sqlite3 *db = impl(s)->writer.db;
    stats->bytes_before = sq_size_bytes(s);
    /* a bounded ANALYZE of what is stale, as SQLite advises for long-lived connections */
    int rc =
        sqlite_exec(db, "PRAGMA analysis_limit=400; PRAGMA optimize; PRAGMA analysis_limit=0", e);
    int64_t page_size = sqlite_pragma_int(db, "PRAGMA page_size");
    int64_t free_before = sqlite_pragma_int(db, "PRAGMA freelist_count");
    /* only a file created with auto_vacuum=incremental can shrink without a full VACUUM, which
     * would copy the whole database while ingestion waits */
    stats->cannot_shrink = sqlite_pragma_int(db, "PRAGMA auto_vacuum") != 2;
    if (rc == 0 && !stats->cannot_shrink)
        rc = sqlite_exec(db, "PRAGMA incremental_vacuum", e);
    int64_t free_after = sqlite_pragma_int(db, "PRAGMA freelist_count");
    if (rc == 0) {
        sqlite3_busy_timeout(db, 1000);
        int crc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_busy_timeout(db, 10000);
        if (crc == SQLITE_BUSY)
            stats->log_busy = true;
        else if (crc != SQLITE_OK)
            rc = err_set(e, E_STORE, "checkpointing the write-ahead log: %s", sqlite3_errmsg(db));
    }
    stats->free_bytes = free_after * page_size;
    stats->bytes_released = (free_before - free_after) * page_size;
    stats->bytes_after = sq_size_bytes(s);
    return rc;
}

/* Appends text and a newline, cut to what report still holds. */
static void report_line(struct buf *report, const char *text)
{
    size_t room = report->max > report->len + 1 ? report->max - report->len - 1 : 0;
    size_t len = strlen(text);
    buf_append(report, text, len < room ? len : room);
    buf_append(report, "\n", 1);
}

/* Problems are rows other than "ok" (a row may hold several, a line each); a page too damaged
 * to walk stops the check with SQLITE_CORRUPT, which is a finding too. */
static int sq_integrity_check(void *conn, bool quick, struct buf *report, struct err *e)
{
    struct sqlite_conn *c = conn;
    sqlite3_stmt *q;
    const char *pragma = quick ? "quick_check" : "integrity_check";
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA %s(100)", pragma);
    if (sqlite3_prepare_v2(c->db, sql, -1, &q, NULL) != SQLITE_OK) {
        int code = sqlite3_errcode(c->db) & 0xff;
        if (code != SQLITE_CORRUPT && code != SQLITE_NOTADB)
            return err_set(e, E_STORE, "%s: %s", pragma, sqlite3_errmsg(c->db));
        report_line(report, sqlite3_errmsg(c->db));
        return err_set(e, E_CORRUPT, "%s: the database is damaged: %s", pragma,
                       sqlite3_errmsg(c->db));
    }
    int rc, problems = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(q, 0);
        if (line && strcmp(line, "ok") == 0)
            continue;
        for (const char *p = line ? line : "(no text)"; p; p = strchr(p + 1, '\n'))
            problems += strncmp(p + (*p == '\n'), "*** in database", 15) != 0;
        report_line(report, line ? line : "(no text)");
    }
    int code = rc == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(c->db) & 0xff;
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) {
        report_line(report, sqlite3_errmsg(c->db));
        problems++;
    } else if (code != SQLITE_OK) {
        err_set(e, E_STORE, "%s could not run: %s", pragma, sqlite3_errmsg(c->db));
        sqlite3_finalize(q);
        return E_STORE;
    }
    sqlite3_finalize(q);
    if (problems == 0) {
        buf_printf(report, "ok");
        return 0;
    }
    return err_set(e, E_CORRUPT, "%s found the database damaged (%d problem%s listed)", pragma,
                   problems, problems == 1 ? "" : "s");
}

/* PRAGMA data_version moves on the writer connection only when another connection commits. */
static bool sq_changed_elsewhere(struct store *s)
{
    struct sqlite_store *st = impl(s);
    sqlite3_stmt *q;
    bool changed = false;
    if (sqlite3_prepare_v2(st->writer.db, "PRAGMA data_version", -1, &q, NULL) != SQLITE_OK)
        return false;
    if (sqlite3_step(q) == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(q, 0);
        changed = st->data_version != 0 && v != st->data_version;
        st->data_version = v;
    }
    sqlite3_finalize(q);
    return changed;
}

/* Must not touch the writer connection: it belongs to the writer thread. */
static int sq_check_writable(struct store *s, struct err *e)
{
    struct sqlite_store *st = impl(s);
    if (st->readonly)
        return err_set(e, E_STORE, "the store was opened read-only");
    if (access(st->path, W_OK) != 0)
        return err_set(e, E_STORE, "the database file %s is not writable: %s", st->path,
                       strerror(errno));
    char dir[512];
    snprintf(dir, sizeof dir, "%s", st->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    if (access(slash ? dir : ".", W_OK) != 0)
        return err_set(e, E_STORE, "the database directory is not writable: %s", strerror(errno));
    return 0;
}

/* ---- open / close --------------------------------------------------------------------------- */

/* Creates the directories above the database file, like mkdir -p. */
static int ensure_parent_dir(const char *path, struct err *e)
{
    char dir[512];
    file_dirname(path, dir, sizeof dir);
    return file_mkdirs(dir, e);
}

static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* Process-wide SQLite settings, before the first connection: connections are never shared
 * between threads (each has one owner at a time), and the global memory statistics would put
 * a mutex around every allocation of every connection. */
static void configure_sqlite_once(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, configure_sqlite);
}

static int sq_schema_version(struct store *s);

/* A read-only open cannot migrate: an older or newer database is refused with what to do. */
static int check_version(struct store *s, struct err *e)
{
    int v = sq_schema_version(s);
    if (v < schema_version())
        return err_set(e, E_INVALID,
                       "database %s has schema version %d, older than this opsdb's %d: migrate "
                       "it with `opsdb init --db %s` (or start `opsdb serve` on it)",
                       impl(s)->path, v, schema_version(), impl(s)->path);
    if (v > schema_version())
        return err_set(e, E_INVALID,
                       "database %s has schema version %d, newer than this opsdb's %d: upgrade "
                       "opsdb to read it",
                       impl(s)->path, v, schema_version());
    return 0;
}

static int sq_open(struct store *s, enum store_mode mode, struct err *e)
{
    configure_sqlite_once();
    struct sqlite_store *st = calloc(1, sizeof *st);
    if (!st)
        return err_set(e, E_NOMEM, "out of memory");
    snprintf(st->path, sizeof st->path, "%s", s->cfg.db);
    st->readonly = mode == STORE_READONLY;
    memcpy(st->partition_ms, s->cfg.partition_ms, sizeof st->partition_ms);
    memcpy(st->retention_days, s->cfg.retention_days, sizeof st->retention_days);
    st->rollup_1m_retention_ms = s->cfg.rollup_1m_retention_ms;
    st->event_rollup_1m_retention_ms = s->cfg.event_rollup_1m_retention_ms;
    st->rollup_1h_retention_ms = s->cfg.rollup_1h_retention_ms;
    st->max_series_per_metric = s->cfg.max_series_per_metric;
    const char *fault = getenv("OPSDB_FAULT");
    if (fault && strncmp(fault, "commit:", 7) == 0)
        st->fault_commit_every = strtol(fault + 7, NULL, 10);
    s->impl = st;
    int rc;
    if (st->readonly) {
        struct stat sb;
        if (stat(st->path, &sb) != 0) {
            rc = err_set(e, E_NOTFOUND, "database %s does not exist: run `opsdb init --db %s`",
                         st->path, st->path);
            goto fail;
        }
        rc = sqlite_conn_open(&st->writer, st->path, SQLITE_OPEN_READONLY, &s->cfg, e);
        if (rc == 0)
            rc = pragmas(&st->writer, &s->cfg, false, e);
        if (rc == 0)
            rc = check_version(s, e);
        if (rc != 0)
            goto fail;
        return 0;
    }
    struct stat sb;
    if (mode == STORE_EXISTING && stat(st->path, &sb) != 0) {
        rc = err_set(e, E_NOTFOUND, "database %s does not exist: run `opsdb init --db %s`",
                     st->path, st->path);
        goto fail;
    }
    if ((rc = ensure_parent_dir(st->path, e)) != 0)
        goto fail;
    rc = sqlite_conn_open(&st->writer, st->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                          &s->cfg, e);
    if (rc == 0)
        rc = pragmas(&st->writer, &s->cfg, true, e);
    if (rc == 0)
        rc = sqlite_migrate(st->writer.db, e);
    if (rc == 0)
        rc = prepare_inserts(st, e);
    if (rc == 0)
        rc = series_load(st, schema_table("system_metrics"), e);
    if (rc != 0)
        goto fail;
    /* the baseline of sq_changed_elsewhere(): a commit by another process from now on counts */
    sq_changed_elsewhere(s);
    return 0;
fail:
    s->impl = NULL;
    sqlite_conn_close(&st->writer);
    free(st);
    return rc;
}

static void sq_close(struct store *s)
{
    struct sqlite_store *st = impl(s);
    if (!st)
        return;
    for (size_t i = 0; i < sizeof st->insert / sizeof st->insert[0]; i++)
        sqlite3_finalize(st->insert[i]);
    sqlite3_finalize(st->series_insert);
    sqlite_rollup_free(&st->rollup);
    sqlite_cold_free(&st->cold);
    for (size_t i = 0; i < sizeof st->parts / sizeof st->parts[0]; i++)
        sqlite_partitions_free(&st->parts[i]);
    series_map_clear(&st->series);
    series_map_clear(&st->metric_series);
    if (!st->readonly) /* refresh planner statistics where they are stale, as SQLite advises */
        sqlite3_exec(st->writer.db, "PRAGMA optimize", NULL, NULL, NULL);
    sqlite_conn_close(&st->writer);
    free(st);
    s->impl = NULL;
}

static int sq_schema_version(struct store *s)
{
    sqlite3_stmt *q;
    int v = -1;
    if (sqlite3_prepare_v2(impl(s)->writer.db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK) {
        if (sqlite3_step(q) == SQLITE_ROW)
            v = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
    }
    return v;
}

static int64_t sq_size_bytes(struct store *s)
{
    struct sqlite_store *st = impl(s);
    char wal[600];
    struct stat sb;
    int64_t total = 0;
    if (stat(st->path, &sb) == 0)
        total += sb.st_size;
    snprintf(wal, sizeof wal, "%s-wal", st->path);
    if (stat(wal, &sb) == 0)
        total += sb.st_size;
    return total;
}

/* ---- read path ------------------------------------------------------------------------------ */

static void *sq_reader_open(struct store *s, struct err *e)
{
    struct sqlite_conn *c = malloc(sizeof *c);
    if (!c) {
        err_set(e, E_NOMEM, "out of memory");
        return NULL;
    }
    if (sqlite_conn_open(c, impl(s)->path, SQLITE_OPEN_READONLY, &s->cfg, e) != 0 ||
        pragmas(c, &s->cfg, false, e) != 0) {
        sqlite_conn_close(c);
        free(c);
        return NULL;
    }
    /* One value may not grow past 16 MiB (SQLite allows 1 GB): a single huge printf() or
     * randomblob() would otherwise run past the time limit inside one step and take memory. */
    sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH, 16 << 20);
    sqlite3_limit(c->db, SQLITE_LIMIT_SQL_LENGTH, 1 << 20);
    return c;
}

static void sq_reader_close(void *conn)
{
    sqlite_conn_close(conn);
    free(conn);
}

static int bind_params(sqlite3_stmt *q, const struct store_query *sq, struct err *e)
{
    int n = sqlite3_bind_parameter_count(q);
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(q, i);
        if (!name || (name[0] != ':' && name[0] != '$' && name[0] != '@'))
            return err_set(e, E_INVALID, "query parameters must be named (:name)");
        const struct store_param *p = NULL;
        for (size_t k = 0; k < sq->nparams; k++)
            if (strcmp(sq->params[k].name, name + 1) == 0)
                p = &sq->params[k];
        if (!p)
            return err_set(e, E_INVALID, "query parameter %s has no value", name);
        if (p->is_text)
            sqlite3_bind_text(q, i, p->text, -1, SQLITE_TRANSIENT);
        else if (p->number > -9e15 && p->number < 9e15 && p->number == (double)(int64_t)p->number)
            sqlite3_bind_int64(q, i, (int64_t)p->number); /* integers stay integers in SQL */
        else
            sqlite3_bind_double(q, i, p->number);
    }
    return 0;
}

static void copy_column(struct store_result *res, sqlite3_stmt *q, int i, struct value *v)
{
    switch (sqlite3_column_type(q, i)) {
    case SQLITE_INTEGER:
        v->type = VAL_INT;
        v->i = sqlite3_column_int64(q, i);
        break;
    case SQLITE_FLOAT:
        v->type = VAL_REAL;
        v->d = sqlite3_column_double(q, i);
        break;
    case SQLITE_NULL:
        v->type = VAL_NULL;
        break;
    default: {
        const unsigned char *txt = sqlite3_column_text(q, i);
        v->type = VAL_TEXT;
        v->len = (uint32_t)sqlite3_column_bytes(q, i);
        v->s = arena_strndup(&res->arena, (const char *)(txt ? txt : (const unsigned char *)""),
                             v->len);
    }
    }
}

static int query_error(struct sqlite_conn *c, int rc, const struct store_query *sq, struct err *e)
{
    if (rc == SQLITE_INTERRUPT || (rc & 0xff) == SQLITE_INTERRUPT)
        return err_set(e, E_LIMIT,
                       "query stopped: it ran past the time limit of %lld ms (narrow the time "
                       "range or raise query.timeout)",
                       (long long)sq->timeout_ms);
    if ((rc & 0xff) == SQLITE_AUTH && c->denied_table[0])
        return err_set(e, E_DENIED,
                       "query denied: table %s is not readable with your role (only admin "
                       "tokens read it)",
                       c->denied_table);
    if ((rc & 0xff) == SQLITE_AUTH)
        return err_set(e, E_INVALID, "query denied: %s is not allowed on the read-only SQL route",
                       c->denied ? c->denied : "this statement");
    if ((rc & 0xff) == SQLITE_CORRUPT)
        return err_set(e, E_CORRUPT, "query failed: %s", sqlite3_errmsg(c->db));
    if ((rc & 0xff) == SQLITE_TOOBIG)
        return err_set(e, E_LIMIT, "query stopped: a value grew past the limit of 16 MiB");
    if ((rc & 0xff) == SQLITE_READONLY || strstr(sqlite3_errmsg(c->db), "may not be modified"))
        return err_set(e, E_INVALID, "query denied: the SQL route is read-only (%s)",
                       sqlite3_errmsg(c->db)); /* the second: a write to a virtual table */
    if ((rc & 0xff) == SQLITE_ERROR || (rc & 0xff) == SQLITE_RANGE ||
        (rc & 0xff) == SQLITE_MISMATCH)
        return err_set(e, E_INVALID, "query failed: %s", sqlite3_errmsg(c->db));
    return err_set(e, E_STORE, "query failed: %s", sqlite3_errmsg(c->db));
}

static int run_statement(struct sqlite_conn *c, sqlite3_stmt *q, const struct store_query *sq,
                         struct store_result *res, struct err *e)
{
    int ncols = sqlite3_column_count(q);
    const char *names[256];
    if (ncols > 256)
        return err_set(e, E_LIMIT, "query returns %d columns, more than 256", ncols);
    for (int i = 0; i < ncols; i++)
        names[i] = sqlite3_column_name(q, i);
    store_result_set_columns(res, (size_t)ncols, names);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (sq->max_rows && (int64_t)res->nrows >= sq->max_rows)
            return err_set(e, E_LIMIT,
                           "query stopped: it returns more than the row limit of %lld rows (add "
                           "LIMIT or aggregate, or raise query.max_rows)",
                           (long long)sq->max_rows);
        struct value *row = store_result_add_row(res);
        for (int i = 0; i < ncols; i++)
            copy_column(res, q, i, &row[i]);
    }
    return rc == SQLITE_DONE ? 0 : query_error(c, rc, sq, e);
}

static int sq_reader_query(void *conn, const struct store_query *sq, struct store_result *res,
                           struct err *e)
{
    struct sqlite_conn *c = conn;
    if (sq->nparams + c->ndefaults > SQLITE_MAX_PARAMS)
        return err_set(e, E_LIMIT, "too many query parameters");
    if (sq->nparams)
        memcpy(c->params + c->ndefaults, sq->params, sq->nparams * sizeof *sq->params);
    c->nparams = c->ndefaults + sq->nparams;
    c->untrusted = sq->untrusted;
    c->denied = NULL;
    c->denied_table[0] = '\0';
    c->deadline_ms = sq->timeout_ms ? time_now_ms() + sq->timeout_ms : 0;
    sqlite3_stmt *q = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(c->db, sq->sql, -1, &q, &tail);
    if (rc != SQLITE_OK) {
        rc = query_error(c, rc, sq, e);
        goto out;
    }
    if (!q) {
        rc = err_set(e, E_INVALID, "query is empty");
        goto out;
    }
    if (sq->untrusted) {
        /* what follows the statement may only be whitespace, semicolons and comments: SQLite
         * prepares such a tail to no statement at all */
        sqlite3_stmt *next = NULL;
        int trc = tail && *tail ? sqlite3_prepare_v2(c->db, tail, -1, &next, NULL) : SQLITE_OK;
        sqlite3_finalize(next);
        if (trc != SQLITE_OK || next) {
            rc = err_set(e, E_INVALID, "query denied: only one statement is allowed");
            goto out;
        }
        if (!sqlite3_stmt_readonly(q)) {
            rc = err_set(e, E_INVALID, "query denied: the SQL route is read-only");
            goto out;
        }
    }
    if ((rc = bind_params(q, sq, e)) == 0)
        rc = run_statement(c, q, sq, res, e);
out:
    sqlite3_finalize(q);
    c->nparams = c->ndefaults;
    c->untrusted = false;
    c->deadline_ms = 0;
    return rc;
}

static void sq_reader_hide(void *conn, const char *const *hidden)
{
    struct sqlite_conn *c = conn;
    c->hidden = hidden;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .size_bytes = sq_size_bytes,
    .write_begin = sq_write_begin,
    .write_batch = sq_write_batch,
    .write_commit = sq_write_commit,
    .write_rollback = sq_write_rollback,
    .check_writable = sq_check_writable,
    .changed_elsewhere = sq_changed_elsewhere,
    .compact_step = sq_compact_step,
    .pack_step = sq_pack_step,
    .restore_partition = sq_restore_partition,
    .unload_partition = sq_unload_partition,
    .retention_apply = sq_retention_apply,
    .backup_to = sqlite_backup_to,
    .file_in_use = sqlite_file_in_use,
    .file_set_aside = sqlite_file_set_aside,
    .file_remove = sqlite_file_remove,
    .file_vacuum_plan = sqlite_file_vacuum_plan,
    .file_vacuum = sqlite_file_vacuum,
    .optimize = sq_optimize,
    .reader_open = sq_reader_open,
    .reader_close = sq_reader_close,
    .reader_query = sq_reader_query,
    .reader_hide = sq_reader_hide,
    .series_read = sqlite_series_read,
    .integrity_check = sq_integrity_check,
};
