/*
 * The views as users call them: a catalogue (name, default window, documentation) and a runner
 * that turns window, reference time and filters into view parameters and a bound query.
 */
#include "query/query.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MIN15 (15 * 60 * 1000LL)
#define DAY (86400 * 1000LL)

static const struct view_info views[] = {
    {"system_health", 0,
     "per host/component: latest cpu, memory and disk, last seen, status "
     "ok/warning/critical/stale",
     "system_metrics"},
    {"api_performance", MIN15,
     "per service/endpoint: requests, requests/s, 4xx and 5xx rates, latency p50/p95/p99, bytes",
     "api_usage"},
    {"error_summary", DAY,
     "per error fingerprint: count in the last hour and the window, first/last seen, a sample",
     "error_logs"},
    {"pipeline_health", DAY,
     "per pipeline: last status, last success, success rate, mean duration, freshness",
     "pipeline_status"},
    {"handler_performance", MIN15, "per handler: throughput, error rate, latency, queue depth",
     "handler_metrics"},
    {"active_alerts", 0, "alerts whose latest transition is not resolved", "alert_history"},
    {"alert_quality", 7 * DAY,
     "per rule: alerts in the window, relevant (acknowledged or lasting) and noisy ones, "
     "relevance",
     "alert_history"},
    {"job_status", 0, "per job: status ok/running/failed/missed/paused, last and next run",
     "scheduled_jobs,job_runs"},
    {"collection_status", 0,
     "per source (agent, log tail, scrape target, syslog/Graphite sender...): status ok/silent, "
     "last seen, gaps and collection uptime % over 24 h and 30 d",
     "collection_sources,collection_gaps"},
};

const struct view_info *query_views(size_t *count)
{
    *count = sizeof views / sizeof views[0];
    return views;
}

uint32_t query_view_tables(const char *view)
{
    const struct view_info *v = query_view_find(view);
    uint32_t mask = 0;
    size_t n;
    const struct table *tables = schema_tables(&n);
    for (size_t i = 0; v && i < n; i++) {
        const char *p = strstr(v->tables, tables[i].name);
        size_t len = strlen(tables[i].name);
        if (p && (p[len] == ',' || p[len] == '\0') && (p == v->tables || p[-1] == ','))
            mask |= 1u << i;
    }
    return mask;
}

const struct view_info *query_view_find(const char *name)
{
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++)
        if (strcmp(views[i].name, name) == 0)
            return &views[i];
    return NULL;
}

static bool column_of(const struct store_result *cols, const char *name)
{
    for (size_t i = 0; i < cols->ncols; i++)
        if (strcmp(cols->columns[i], name) == 0)
            return true;
    return false;
}

/* Filter values that look like numbers are compared as numbers. */
static struct store_param filter_param(const char *name, const char *value)
{
    char *end;
    double d = strtod(value, &end);
    if (*value && *end == '\0' && !isspace((unsigned char)value[0]))
        return (struct store_param){name, false, d, NULL};
    return (struct store_param){name, true, 0, value};
}

static int build_sql(const struct view_info *v, const struct view_request *req,
                     const struct store_result *cols, struct buf *sql, struct store_param *params,
                     size_t *nparams, struct err *e)
{
    static const char *const fnames[QUERY_MAX_FILTERS] = {"f0", "f1", "f2", "f3",
                                                          "f4", "f5", "f6", "f7"};
    buf_printf(sql, "SELECT * FROM %s", v->name);
    for (size_t i = 0; i < req->nfilters; i++) {
        if (!column_of(cols, req->filter_column[i]))
            return err_set(e, E_INVALID, "filter '%s': the view %s has no such column",
                           req->filter_column[i], v->name);
        buf_printf(sql, "%s %s = :%s", i ? " AND" : " WHERE", req->filter_column[i], fnames[i]);
        params[(*nparams)++] = filter_param(fnames[i], req->filter_value[i]);
    }
    if (req->order_by) {
        char col[64];
        bool desc = false;
        const char *sp = strchr(req->order_by, ' ');
        size_t len = sp ? (size_t)(sp - req->order_by) : strlen(req->order_by);
        if (len >= sizeof col)
            return err_set(e, E_INVALID, "order: '%s' is not a column", req->order_by);
        memcpy(col, req->order_by, len);
        col[len] = '\0';
        if (sp && strcasecmp(sp + 1, "desc") == 0)
            desc = true;
        else if (sp && strcasecmp(sp + 1, "asc") != 0)
            return err_set(e, E_INVALID,
                           "order: '%s' must be 'column', 'column asc' or "
                           "'column desc'",
                           req->order_by);
        if (!column_of(cols, col))
            return err_set(e, E_INVALID, "order: the view %s has no column '%s'", v->name, col);
        buf_printf(sql, " ORDER BY %s %s", col, desc ? "DESC" : "ASC");
    }
    if (req->limit > 0)
        buf_printf(sql, " LIMIT %lld", (long long)req->limit);
    return 0;
}

int query_view(struct store *s, const struct config *cfg, const char *name,
               const struct view_request *req, struct store_result *res, struct err *e)
{
    const struct view_info *v = query_view_find(name);
    store_result_init(res);
    if (!v)
        return err_set(e, E_NOTFOUND, "no view named '%s' (see GET /api/v1/views)", name);
    if (req->nfilters > QUERY_MAX_FILTERS)
        return err_set(e, E_LIMIT, "at most %d filters", QUERY_MAX_FILTERS);
    struct store_reader *r = store_reader_get(s);
    struct store_param params[QUERY_MAX_FILTERS + 3];
    size_t nparams = 0;
    params[nparams++] = (struct store_param){
        "now_ms", false, (double)(req->has_now ? req->now_ms : time_now_ms()), NULL};
    if (req->window_ms)
        params[nparams++] = (struct store_param){"window_ms", false, (double)req->window_ms, NULL};
    if (req->quick_ms)
        params[nparams++] = (struct store_param){"quick_ms", false, (double)req->quick_ms, NULL};
    /* learn the view's columns (prepare only: LIMIT 0 reads nothing) to check filters */
    struct store_result cols;
    struct buf sql;
    buf_init(&sql, 8192);
    buf_printf(&sql, "SELECT * FROM %s LIMIT 0", v->name);
    struct store_query q = {sql.data, params, nparams, 0, 0, false};
    int rc = store_reader_query(r, &q, &cols, e);
    if (rc == 0) {
        sql.len = 0;
        rc = build_sql(v, req, &cols, &sql, params, &nparams, e);
    }
    store_result_release(&cols);
    if (rc == 0) {
        q = (struct store_query){
            sql.data, params, nparams, cfg->query_timeout_ms, cfg->query_max_rows, false};
        store_result_release(res);
        rc = store_reader_query(r, &q, res, e);
    }
    store_reader_put(s, r);
    buf_release(&sql);
    return rc;
}

int query_sql(struct store *s, const struct config *cfg, const char *sql, struct store_result *res,
              struct err *e)
{
    return query_sql_hiding(s, cfg, sql, NULL, res, e);
}

int query_sql_hiding(struct store *s, const struct config *cfg, const char *sql,
                     const char *const *hidden, struct store_result *res, struct err *e)
{
    struct store_reader *r = store_reader_get(s);
    struct store_param now = {"now_ms", false, (double)time_now_ms(), NULL};
    struct store_query q = {sql, &now, 1, cfg->query_timeout_ms, cfg->query_max_rows, true};
    int rc = store_reader_query_hiding(r, &q, hidden, res, e);
    store_reader_put(s, r);
    return rc;
}

int query_explain(struct store *s, const char *sql, const struct store_param *params,
                  size_t nparams, struct store_result *res, struct err *e)
{
    struct buf text;
    buf_init(&text, 1 << 20);
    buf_printf(&text, "EXPLAIN QUERY PLAN %s", sql);
    struct store_reader *r = store_reader_get(s);
    struct store_query q = {text.data, params, nparams, 0, 0, false};
    int rc = store_reader_query(r, &q, res, e);
    store_reader_put(s, r);
    buf_release(&text);
    return rc;
}
