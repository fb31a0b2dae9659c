/*
 * Read routes: views, read-only SQL, the schema, health and readiness.
 */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the answer cache ---------------------------------------------------------------------- */

#define CACHE_KEY_MAX 8192
#define CACHE_ARGS_MAX 32

struct arg_list {
    size_t n;
    const char *keys[CACHE_ARGS_MAX], *values[CACHE_ARGS_MAX];
};

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct arg_list *a = cls;
    if (a->n >= CACHE_ARGS_MAX)
        return MHD_NO;
    a->keys[a->n] = key;
    a->values[a->n++] = value ? value : "";
    return MHD_YES;
}

/* Percent-encodes the separators, so no two requests share a key ("a=1&b" as one name). */
static void escape_into(struct buf *key, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '%' || c == '&' || c == '=' || c < 0x20 || c == 0x7f) {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(key, esc, 3);
        } else {
            buf_putc(key, (char)c);
        }
    }
}

/* The request as a cache key: path and parameters sorted, so ?a=1&b=2 and ?b=2&a=1 share an
 * answer. False when the request has too many parameters to be cached. */
static bool cache_key(struct request *req, struct buf *key)
{
    struct arg_list a = {0};
    if (MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &a) >=
        CACHE_ARGS_MAX)
        return false;
    for (size_t i = 1; i < a.n; i++) /* insertion sort: a handful of parameters */
        for (size_t j = i; j > 0 && strcmp(a.keys[j - 1], a.keys[j]) > 0; j--) {
            const char *k = a.keys[j], *v = a.values[j];
            a.keys[j] = a.keys[j - 1];
            a.values[j] = a.values[j - 1];
            a.keys[j - 1] = k;
            a.values[j - 1] = v;
        }
    buf_printf(key, "%s", req->url);
    for (size_t i = 0; i < a.n; i++) {
        buf_putc(key, i ? '&' : '?');
        escape_into(key, a.keys[i]);
        buf_putc(key, '=');
        escape_into(key, a.values[i]);
    }
    return key->len < key->max;
}

/* Serves a cached answer (true), or prepares to store the one about to be computed: the key,
 * the epochs now, and how long it may live — until a table it reads changes, and at most one
 * second when the request's time range ends at "now" (the clock moves the answer). */
struct cache_ticket {
    struct buf key;
    uint64_t epochs[QUERY_CACHE_TABLES];
    int64_t expires_ms;
    uint32_t tables;
    bool store;
};

static bool cache_lookup(struct http_server *srv, struct request *req, struct response *res,
                         uint32_t tables, const char *time_param, struct cache_ticket *t)
{
    buf_init(&t->key, CACHE_KEY_MAX);
    t->store = false;
    if (!srv->deps.cache || !cache_key(req, &t->key))
        return false;
    if (query_cache_get(srv->deps.cache, t->key.data, &res->body)) {
        res->header_name = "X-Opsdb-Cache";
        res->header_value = "hit";
        return true;
    }
    query_cache_epochs(srv->deps.cache, t->epochs);
    t->tables = tables;
    t->expires_ms = request_arg(req, time_param) ? 0 : time_now_ms() + 1000;
    t->store = true;
    res->header_name = "X-Opsdb-Cache";
    res->header_value = "miss";
    return false;
}

static void cache_store(struct http_server *srv, struct response *res, struct cache_ticket *t)
{
    if (t->store && res->status == 200 && res->content_type &&
        strcmp(res->content_type, "application/json") == 0)
        query_cache_put(srv->deps.cache, t->key.data, t->tables, t->epochs, t->expires_ms,
                        res->body.data ? res->body.data : "", res->body.len);
    buf_release(&t->key);
}

static int output_format(struct request *req, struct response *res)
{
    const char *f = request_arg(req, "format");
    int fmt = f ? query_format_parse(f) : FORMAT_JSON;
    if (fmt < 0 || fmt == FORMAT_TABLE) {
        respond_error(res, 400, "format must be json or csv", NULL);
        return -1;
    }
    return fmt;
}

static void write_result(struct response *res, int fmt, const struct store_result *r,
                         const char *extra)
{
    if (fmt == FORMAT_CSV) {
        res->content_type = "text/csv; charset=utf-8";
        query_write_csv(r, &res->body);
    } else {
        query_write_json(r, extra, &res->body);
    }
}

struct view_args {
    struct view_request *req;
    struct response *res;
    bool failed;
};

static enum MHD_Result collect_filter(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    struct view_args *a = cls;
    static const char *const reserved[] = {"window", "now",      "format", "order",
                                           "limit",  "quick_ms", NULL};
    for (int i = 0; reserved[i]; i++)
        if (strcmp(key, reserved[i]) == 0)
            return MHD_YES;
    if (a->req->nfilters >= QUERY_MAX_FILTERS) {
        respond_error(a->res, 400, "too many filters (at most 8)", NULL);
        a->failed = true;
        return MHD_NO;
    }
    a->req->filter_column[a->req->nfilters] = key;
    a->req->filter_value[a->req->nfilters++] = value ? value : "";
    return MHD_YES;
}

static bool view_params(struct request *req, struct response *res, struct view_request *vr)
{
    const char *window = request_arg(req, "window");
    const char *now = request_arg(req, "now");
    const char *limit = request_arg(req, "limit");
    char msg[200];
    if (window && (!time_parse_duration(window, &vr->window_ms) || vr->window_ms <= 0)) {
        snprintf(msg, sizeof msg, "window '%.40s' is not a duration (e.g. 15m, 1h, 7d)", window);
        respond_error(res, 400, msg, NULL);
        return false;
    }
    vr->has_now = now != NULL;
    if (now && !time_parse_point(now, &vr->now_ms)) {
        snprintf(msg, sizeof msg, "now '%.40s' is not epoch seconds or an RFC 3339 time", now);
        respond_error(res, 400, msg, NULL);
        return false;
    }
    const char *quick = request_arg(req, "quick_ms");
    if (quick) {
        char *end;
        vr->quick_ms = strtoll(quick, &end, 10);
        if (!*quick || *end || vr->quick_ms <= 0) {
            respond_error(res, 400, "quick_ms must be a positive integer (milliseconds)", NULL);
            return false;
        }
    }
    if (limit) {
        char *end;
        vr->limit = strtoll(limit, &end, 10);
        if (*end || vr->limit <= 0) {
            respond_error(res, 400, "limit must be a positive integer", NULL);
            return false;
        }
    }
    vr->order_by = request_arg(req, "order");
    struct view_args a = {vr, res, false};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, collect_filter, &a);
    return !a.failed;
}

void handle_view(struct http_server *srv, struct request *req, struct response *res)
{
    int fmt = output_format(req, res);
    struct view_request vr = {0};
    if (fmt < 0 || !view_params(req, res, &vr))
        return;
    struct cache_ticket ticket;
    if (fmt == FORMAT_JSON &&
        cache_lookup(srv, req, res, query_view_tables(req->path_arg), "now", &ticket)) {
        buf_release(&ticket.key);
        return;
    }
    struct store_result r;
    struct err e;
    int rc = query_view(srv->deps.store, srv->deps.cfg, req->path_arg, &vr, &r, &e);
    if (rc != 0) {
        respond_error(res, status_for(rc), e.msg, NULL);
    } else {
        char extra[300];
        snprintf(extra, sizeof extra, "\"view\":\"%s\"", req->path_arg);
        write_result(res, fmt, &r, extra);
    }
    store_result_release(&r);
    if (fmt == FORMAT_JSON)
        cache_store(srv, res, &ticket);
}

void handle_views_list(struct http_server *srv, struct request *req, struct response *res)
{
    (void)srv;
    (void)req;
    size_t n;
    const struct view_info *v = query_views(&n);
    buf_printf(&res->body, "{\"views\":[");
    for (size_t i = 0; i < n; i++) {
        buf_printf(&res->body,
                   "%s{\"name\":\"%s\",\"default_window_s\":%lld,\"doc\":", i ? "," : "", v[i].name,
                   (long long)(v[i].default_window_ms / 1000));
        struct value d = {.s = v[i].doc, .len = (uint32_t)strlen(v[i].doc), .type = VAL_TEXT};
        query_json_value(&d, &res->body);
        buf_putc(&res->body, '}');
    }
    buf_printf(&res->body, "],\"parameters\":{\"window\":\"duration, e.g. 15m\","
                           "\"now\":\"end of the window: epoch seconds or RFC 3339\","
                           "\"order\":\"column [asc|desc]\",\"limit\":\"rows\","
                           "\"format\":\"json|csv\",\"<column>\":\"equality filter\"}}");
}

void handle_query(struct http_server *srv, struct request *req, struct response *res)
{
    int fmt = output_format(req, res);
    if (fmt < 0)
        return;
    const char *sql = request_arg(req, "sql");
    if (!sql && strcmp(req->method, "POST") == 0 && req->body.len)
        sql = req->body.data;
    if (!sql || !*sql) {
        respond_error(res, 400,
                      "missing sql: GET /api/v1/query?sql=SELECT... or POST the "
                      "statement as the body",
                      NULL);
        return;
    }
    struct store_result r;
    struct err e;
    int rc = query_sql_hiding(srv->deps.store, srv->deps.cfg, sql,
                              auth_hidden_tables(req->principal.role), &r, &e);
    if (rc != 0)
        respond_error(res, status_for(rc), e.msg, NULL);
    else
        write_result(res, fmt, &r, NULL);
    store_result_release(&r);
}

void handle_schema(struct http_server *srv, struct request *req, struct response *res)
{
    (void)srv;
    (void)req;
    static const char *const types[] = {"timestamp", "integer", "real", "text", "json", "boolean"};
    size_t n;
    const struct table *t = schema_tables(&n);
    buf_printf(&res->body, "{\"version\":%d,\"tables\":[", schema_version());
    for (size_t i = 0; i < n; i++) {
        buf_printf(&res->body, "%s{\"name\":\"%s\",\"columns\":[", i ? "," : "", t[i].name);
        for (size_t c = 0; c < t[i].ncolumns; c++) {
            const struct column *col = &t[i].columns[c];
            buf_printf(&res->body, "%s{\"name\":\"%s\",\"type\":\"%s\",\"required\":%s}",
                       c ? "," : "", col->name, types[col->type], col->required ? "true" : "false");
        }
        buf_printf(&res->body, "]}");
    }
    buf_printf(&res->body, "]}");
}

void handle_healthz(struct http_server *srv, struct request *req, struct response *res)
{
    (void)srv;
    (void)req;
    respond_json(res, 200, "{\"status\":\"ok\"}");
}

void handle_readyz(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    struct err e;
    struct writer_stats ws;
    writer_get_stats(srv->deps.writer, &ws);
    if (ws.last_group_failed)
        err_set(&e, E_STORE, "the last commit failed: %s", ws.last_error);
    if (ws.last_group_failed || store_check_writable(srv->deps.store, &e) != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "not ready: %.500s", e.msg);
        respond_error(res, 503, msg, NULL);
        return;
    }
    respond_json(res, 200, "{\"status\":\"ready\"}");
}

static bool time_arg(struct request *req, struct response *res, const char *name, bool *given,
                     int64_t *ms)
{
    const char *v = request_arg(req, name);
    *ms = 0;
    *given = v != NULL;
    if (v && !time_parse_point(v, ms)) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s '%.40s' is not epoch seconds or an RFC 3339 time", name, v);
        respond_error(res, 400, msg, NULL);
        return false;
    }
    return true;
}

void handle_series(struct http_server *srv, struct request *req, struct response *res)
{
    struct series_request sr = {
        .table = request_arg(req, "table"),
        .metric = request_arg(req, "metric"),
        .filter = request_arg(req, "filter"),
        .agg = request_arg(req, "agg"),
        .resolution = request_arg(req, "resolution"),
    };
    const char *step = request_arg(req, "step");
    if (step && (!time_parse_duration(step, &sr.step_ms) || sr.step_ms <= 0)) {
        char msg[200];
        snprintf(msg, sizeof msg, "step '%.40s' is not a duration (e.g. 10s, 1m, 1h)", step);
        respond_error(res, 400, msg, NULL);
        return;
    }
    if (!time_arg(req, res, "from", &sr.has_from, &sr.from_ms) ||
        !time_arg(req, res, "to", &sr.has_to, &sr.to_ms))
        return;
    size_t n;
    const struct table *tables = schema_tables(&n);
    const struct table *t = schema_table(sr.table ? sr.table : "system_metrics");
    struct cache_ticket ticket;
    if (cache_lookup(srv, req, res, t ? 1u << (t - tables) : 0, "to", &ticket)) {
        buf_release(&ticket.key);
        return;
    }
    struct err e;
    int rc = query_series(srv->deps.store, srv->deps.cfg, &sr, &res->body, &e);
    if (rc != 0)
        respond_error(res, status_for(rc), e.msg, NULL);
    cache_store(srv, res, &ticket);
}
