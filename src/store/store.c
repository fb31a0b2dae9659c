/*
 * The generic half of the store: picks the back end from the database URI, owns the pool of
 * read connections and forwards the write path. Back ends implement struct store_ops.
 */
#include "store/store_int.h"

#include <assert.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const view_names[] = {
    "system_health", "api_performance", "error_summary", "pipeline_health",  "handler_performance",
    "active_alerts", "alert_quality",   "job_status",    "collection_status"};

static const struct rollup_level rollup_levels[] = {{"1m", 60 * 1000}, {"1h", 3600 * 1000}};

const struct rollup_level *store_rollup_levels(size_t *count)
{
    *count = sizeof rollup_levels / sizeof rollup_levels[0];
    return rollup_levels;
}

const char *const *store_view_names(size_t *count)
{
    *count = sizeof view_names / sizeof view_names[0];
    return view_names;
}

static const struct store_ops *ops_for(const char *uri, struct err *e)
{
    if (strncmp(uri, "postgresql://", 13) == 0 || strncmp(uri, "postgres://", 11) == 0) {
        err_set(e, E_INVALID,
                "database %s: the PostgreSQL back end is not built into this "
                "opsdb yet; use a SQLite file path",
                uri);
        return NULL;
    }
    return &store_sqlite_ops;
}

int store_open(struct store **out, const struct config *cfg, enum store_mode mode, struct err *e)
{
    *out = NULL;
    const struct store_ops *ops = ops_for(cfg->db, e);
    if (!ops)
        return E_INVALID;
    struct store *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, E_NOMEM, "out of memory opening the store");
    s->ops = ops;
    s->cfg = *cfg;
    pthread_mutex_init(&s->readers_lock, NULL);
    pthread_cond_init(&s->readers_free, NULL);
    snprintf(s->description, sizeof s->description, "%s %s", ops->name, cfg->db);
    int rc = ops->open(s, mode, e);
    if (rc != 0) {
        pthread_mutex_destroy(&s->readers_lock);
        pthread_cond_destroy(&s->readers_free);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(struct store **sp)
{
    struct store *s = *sp;
    if (!s)
        return;
    struct store_reader *r = s->free_readers;
    while (r) {
        struct store_reader *next = r->next;
        s->ops->reader_close(r->conn);
        free(r);
        r = next;
    }
    s->ops->close(s);
    pthread_mutex_destroy(&s->readers_lock);
    pthread_cond_destroy(&s->readers_free);
    free(s);
    *sp = NULL;
}

int store_schema_version(struct store *s)
{
    return s->ops->schema_version(s);
}

int64_t store_size_bytes(struct store *s)
{
    return s->ops->size_bytes(s);
}

const char *store_describe(struct store *s)
{
    return s->description;
}

int store_write_begin(struct store *s, struct err *e)
{
    return s->ops->write_begin(s, e);
}

int store_write_batch(struct store *s, const struct batch *b, struct err *e)
{
    return s->ops->write_batch(s, b, e);
}

int store_write_commit(struct store *s, struct err *e)
{
    return s->ops->write_commit(s, e);
}

void store_write_rollback(struct store *s)
{
    s->ops->write_rollback(s);
}

bool store_changed_elsewhere(struct store *s)
{
    return s->ops->changed_elsewhere(s);
}

int store_retention_apply(struct store *s, int64_t now_ms, struct store_retention_stats *stats,
                          struct err *e)
{
    int rc = s->ops->retention_apply(s, now_ms, stats, e);
    /* the drop is committed: an archive that cannot be removed is reported, not a failure of
     * retention */
    struct err expire;
    err_clear(&expire);
    if (rc == 0 && s->cfg.storage_archive_dir[0] && s->cfg.storage_archive_retention_ms > 0 &&
        store_archive_expire(s->cfg.storage_archive_dir,
                             now_ms - s->cfg.storage_archive_retention_ms, &stats->archives_expired,
                             &expire) != 0)
        snprintf(stats->expire_failure, sizeof stats->expire_failure, "%s", expire.msg);
    return rc;
}

int store_archive_restore(struct store *s, const struct store_archive *a, int64_t *rows,
                          struct err *e)
{
    return s->ops->restore_partition(s, a, rows, e);
}

int store_archive_unload(struct store *s, const char *partition, struct err *e)
{
    return s->ops->unload_partition(s, partition, e);
}

int store_pack_step(struct store *s, int64_t before_ms, struct store_pack_stats *stats,
                    struct err *e)
{
    return s->ops->pack_step(s, before_ms, stats, e);
}

int store_compact_step(struct store *s, int64_t before_ms, struct store_compact_stats *stats,
                       struct err *e)
{
    return s->ops->compact_step(s, before_ms, stats, e);
}

int store_optimize(struct store *s, struct store_optimize_stats *stats, struct err *e)
{
    return s->ops->optimize(s, stats, e);
}

int store_integrity_check(struct store *s, bool quick, struct buf *report, struct err *e)
{
    struct store_reader *r = store_reader_get(s);
    if (!r)
        return err_set(e, E_STORE,
                       "integrity check: no read connection could be opened (the "
                       "log says why)");
    int rc = s->ops->integrity_check(r->conn, quick, report, e);
    store_reader_put(s, r);
    return rc;
}

int store_check_writable(struct store *s, struct err *e)
{
    return s->ops->check_writable(s, e);
}

int store_backup_to(struct store *s, const char *path, store_backup_progress progress, void *arg,
                    struct err *e)
{
    return s->ops->backup_to(s, path, progress, arg, e);
}

int store_file_in_use(const char *path, long *pid, struct err *e)
{
    const struct store_ops *ops = ops_for(path, e);
    *pid = 0;
    return ops ? ops->file_in_use(path, pid, e) : E_INVALID;
}

int store_file_set_aside(const char *path, const char *aside, struct err *e)
{
    const struct store_ops *ops = ops_for(path, e);
    return ops ? ops->file_set_aside(path, aside, e) : E_INVALID;
}

int store_file_remove(const char *path, struct err *e)
{
    const struct store_ops *ops = ops_for(path, e);
    return ops ? ops->file_remove(path, e) : E_INVALID;
}

int store_file_vacuum_plan(const struct config *cfg, struct store_vacuum_stats *stats,
                           struct err *e)
{
    const struct store_ops *ops = ops_for(cfg->db, e);
    memset(stats, 0, sizeof *stats);
    return ops ? ops->file_vacuum_plan(cfg, stats, e) : E_INVALID;
}

int store_file_vacuum(const struct config *cfg, store_backup_progress progress, void *arg,
                      struct store_vacuum_stats *stats, struct err *e)
{
    const struct store_ops *ops = ops_for(cfg->db, e);
    memset(stats, 0, sizeof *stats);
    return ops ? ops->file_vacuum(cfg, progress, arg, stats, e) : E_INVALID;
}

struct store_reader *store_reader_get(struct store *s)
{
    pthread_mutex_lock(&s->readers_lock);
    for (;;) {
        if (s->free_readers) {
            struct store_reader *r = s->free_readers;
            s->free_readers = r->next;
            pthread_mutex_unlock(&s->readers_lock);
            return r;
        }
        if (s->readers_open < s->cfg.reader_connections) {
            s->readers_open++;
            pthread_mutex_unlock(&s->readers_lock);
            struct err e;
            struct store_reader *r = calloc(1, sizeof *r);
            if (r && (r->conn = s->ops->reader_open(s, &e)) != NULL) {
                r->ops = s->ops;
                return r;
            }
            log_error("opening a read connection failed: %s", r ? e.msg : "out of memory");
            free(r);
            pthread_mutex_lock(&s->readers_lock);
            s->readers_open--;
            pthread_mutex_unlock(&s->readers_lock);
            return NULL;
        }
        pthread_cond_wait(&s->readers_free, &s->readers_lock);
    }
}

void store_reader_put(struct store *s, struct store_reader *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&s->readers_lock);
    r->next = s->free_readers;
    s->free_readers = r;
    pthread_cond_signal(&s->readers_free);
    pthread_mutex_unlock(&s->readers_lock);
}

int store_reader_query(struct store_reader *r, const struct store_query *q,
                       struct store_result *res, struct err *e)
{
    store_result_init(res);
    if (!r)
        return err_set(e, E_STORE, "no read connection could be opened (see the server log)");
    return r->ops->reader_query(r->conn, q, res, e);
}

int store_reader_query_hiding(struct store_reader *r, const struct store_query *q,
                              const char *const *hidden, struct store_result *res, struct err *e)
{
    assert(q->untrusted);
    store_result_init(res);
    if (!r)
        return err_set(e, E_STORE, "no read connection could be opened (see the server log)");
    r->ops->reader_hide(r->conn, hidden);
    int rc = r->ops->reader_query(r->conn, q, res, e);
    r->ops->reader_hide(r->conn, NULL);
    return rc;
}

int store_series_read(struct store_reader *r, const struct series_read *q, series_sink sink,
                      void *arg, struct err *e)
{
    if (!r)
        return err_set(e, E_STORE, "no read connection could be opened (see the server log)");
    return r->ops->series_read(r->conn, q, sink, arg, e);
}

void store_result_init(struct store_result *res)
{
    memset(res, 0, sizeof *res);
    arena_init(&res->arena);
}

void store_result_release(struct store_result *res)
{
    arena_release(&res->arena);
    memset(res, 0, sizeof *res);
}

int store_result_set_columns(struct store_result *res, size_t ncols, const char *const *names)
{
    res->ncols = ncols;
    res->columns = arena_alloc(&res->arena, (ncols ? ncols : 1) * sizeof *res->columns);
    for (size_t i = 0; i < ncols; i++)
        res->columns[i] = arena_strndup(&res->arena, names[i], strlen(names[i]));
    return 0;
}

struct value *store_result_add_row(struct store_result *res)
{
    if (res->nrows == res->cap_rows) {
        size_t cap = res->cap_rows ? res->cap_rows * 2 : 32;
        struct value *v = arena_alloc(&res->arena, cap * (res->ncols ? res->ncols : 1) * sizeof *v);
        if (res->nrows)
            memcpy(v, res->values, res->nrows * res->ncols * sizeof *v);
        res->values = v;
        res->cap_rows = cap;
    }
    struct value *row = res->values + res->nrows * res->ncols;
    memset(row, 0, res->ncols * sizeof *row);
    res->nrows++;
    return row;
}

void store_result_put_text(struct store_result *res, struct value *v, const char *text)
{
    if (!text || !text[0])
        return;
    v->type = VAL_TEXT;
    v->len = (uint32_t)strlen(text);
    v->s = arena_strndup(&res->arena, text, v->len);
}

void store_result_put_int(struct value *v, int64_t i)
{
    v->type = VAL_INT;
    v->i = i;
}
