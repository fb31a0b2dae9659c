/*
 * The route table — method, path, role, handler — and the response helpers. A new route is one
 * row here and one handler function. Every route declares the role that may call it; the
 * security work enforces it from this table.
 */
#include "http/http_int.h"

#include <stdio.h>
#include <string.h>

struct route {
    struct route_info info;
    route_handler handle;
};

/* http_prom.c */
void handle_prom_write(struct http_server *srv, struct request *req, struct response *res);

static const struct route routes[] = {
    {{"GET", "/", "public", "index of the API"}, handle_index},
    {{"GET", "/healthz", "public", "alive: 200 while the process serves requests"}, handle_healthz},
    {{"GET", "/readyz", "public", "ready: 200 when the database accepts writes, else 503"},
     handle_readyz},
    {{"GET", "/metrics", "reader", "Prometheus text format metrics"}, handle_metrics},
    {{"POST", "/api/v1/ingest/{table}", "writer",
      "rows for one table: JSON object, array or NDJSON (gzip accepted)"},
     handle_ingest},
    {{"POST", "/write", "writer", "InfluxDB 1.x line protocol into system_metrics"},
     handle_influx_write},
    {{"POST", "/api/v2/write", "writer", "InfluxDB 2.x line protocol into system_metrics"},
     handle_influx_write},
    {{"POST", "/api/v1/heartbeat", "writer",
      "sources alive with nothing to send: {\"sources\": [{kind, name, interval}]}"},
     handle_heartbeat},
    {{"GET", "/ping", "public", "InfluxDB client handshake (204)"}, handle_influx_ping},
    {{"HEAD", "/ping", "public", "InfluxDB client handshake (204)"}, handle_influx_ping},
    {{"GET", "/api/v1/views", "reader", "the views and their parameters"}, handle_views_list},
    {{"GET", "/api/v1/views/{name}", "reader", "rows of one view (window, now, filters)"},
     handle_view},
    {{"GET", "/api/v1/query", "reader", "read-only SQL (?sql=...)"}, handle_query},
    {{"POST", "/api/v1/query", "reader", "read-only SQL in the body (text/plain)"}, handle_query},
    {{"GET", "/api/v1/schema", "reader", "tables and columns"}, handle_schema},
    {{"GET", "/api/v1/series", "reader",
      "time-bucketed series of one metric (metric, filter, from, to, step, agg, resolution)"},
     handle_series},
    {{"GET", "/api/v1/rules", "reader", "alert rule groups, each rule with its state"},
     handle_rules},
    {{"GET", "/api/v1/alerts", "reader", "the pending, firing and acknowledged alerts"},
     handle_alerts},
    {{"POST", "/api/v1/alerts/reload", "admin", "read the rule files and receivers again"},
     handle_alerts_reload},
    {{"POST", "/api/v1/alerts/{id}/ack", "writer",
      "acknowledge a firing alert (body: optional {\"by\": name})"},
     handle_alert_ack},
    {{"GET", "/api/v1/incidents", "reader",
      "incidents: correlated alerts, probable cause, related errors and failed pipeline runs"},
     handle_incidents},
    {{"GET", "/api/v1/silences", "reader", "silences, active, pending and expired"},
     handle_silences},
    {{"POST", "/api/v1/silences", "writer",
      "silence alerts: {matchers, ends_at or duration, created_by, comment}"},
     handle_silence_create},
    {{"DELETE", "/api/v1/silences/{id}", "writer", "expire a silence now"}, handle_silence_expire},
    {{"GET", "/api/v1/jobs", "reader",
      "scheduled jobs with their state, next run and last result (?all=true: removed ones too)"},
     handle_jobs},
    {{"GET", "/api/v1/jobs/{name}/history", "reader", "a job's runs, newest first (?limit=20)"},
     handle_job_history},
    {{"POST", "/api/v1/jobs/{name}/run", "admin", "start a builtin or command job now"},
     handle_job_run},
    {{"POST", "/api/v1/jobs/{name}/cancel", "admin",
      "stop a builtin or command job's running run (recorded as cancelled)"},
     handle_job_cancel},
    {{"POST", "/api/v1/jobs/{name}/pause", "admin", "pause a job: no runs, not missed"},
     handle_job_pause},
    {{"POST", "/api/v1/jobs/{name}/resume", "admin", "resume a paused job"}, handle_job_resume},
    {{"POST", "/api/v1/jobs/{name}/start", "writer",
      "an external job started (?run_id= pairs it with its end)"},
     handle_job_start},
    {{"POST", "/api/v1/jobs/{name}/success", "writer",
      "an external job succeeded (?exit_code=, ?run_id=; body: its log tail)"},
     handle_job_success},
    {{"POST", "/api/v1/jobs/{name}/fail", "writer",
      "an external job failed (?exit_code=, ?run_id=; body: its log tail)"},
     handle_job_fail},
    {{"POST", "/api/v1/prom/write", "writer",
      "Prometheus remote write 1.0 (snappy protobuf) into system_metrics (204)"},
     handle_prom_write},
    {{"POST", "/api/v1/write", "writer",
      "Prometheus remote write 1.0, the path other receivers use"},
     handle_prom_write},
    {{"GET", "/api/v1/users", "admin", "users with their roles and active tokens"}, handle_users},
    {{"POST", "/api/v1/users", "admin",
      "add a user: {\"name\", \"role\": admin|writer|reader, \"password\"?}"},
     handle_user_create},
    {{"GET", "/api/v1/tokens", "admin",
      "API tokens (never their secrets): user, role, tables, state, expiry, last use (?user=)"},
     handle_tokens},
    {{"POST", "/api/v1/tokens", "admin",
      "create a token: {\"user\", \"expires\"?: \"30d\", \"tables\"?, \"description\"?}; the "
      "answer holds the token, shown this once (201)"},
     handle_token_create},
    {{"DELETE", "/api/v1/tokens/{id}", "admin", "revoke a token: refused from now on"},
     handle_token_revoke},
    {{"POST", "/api/v1/session", "public",
      "sign in: {\"user\", \"password\"} or {\"token\"}; answers the session cookie and "
      "csrf_token (X-CSRF-Token on state-changing requests made with the cookie)"},
     handle_session_create},
    {{"GET", "/api/v1/session", "public",
      "the session of the cookie: signed_in, user, role, csrf_token"},
     handle_session_get},
    {{"DELETE", "/api/v1/session", "public", "sign out (needs X-CSRF-Token)"},
     handle_session_delete},
};

#define NROUTES (sizeof routes / sizeof routes[0])

const struct route_info *http_routes(size_t *count)
{
    static struct route_info infos[NROUTES];
    for (size_t i = 0; i < NROUTES; i++)
        infos[i] = routes[i].info;
    *count = NROUTES;
    return infos;
}

route_handler route_handler_at(int i)
{
    return routes[i].handle;
}

const struct route_info *route_info_at(int i)
{
    return &routes[i].info;
}

/* The routes whose every request is recorded in audit_log: admin actions on live state (the
 * token and user routes record their changes themselves). */
static const char *const audited_routes[] = {
    "POST /api/v1/alerts/reload",
    "POST /api/v1/alerts/{id}/ack",
    "POST /api/v1/silences",
    "DELETE /api/v1/silences/{id}",
    "POST /api/v1/jobs/{name}/run",
    "POST /api/v1/jobs/{name}/cancel",
    "POST /api/v1/jobs/{name}/pause",
    "POST /api/v1/jobs/{name}/resume",
    NULL,
};

/* Whether "METHOD path" names route i. */
static bool names_route(const char *spec, int i)
{
    size_t m = strlen(routes[i].info.method);
    return strncmp(spec, routes[i].info.method, m) == 0 && spec[m] == ' ' &&
           strcmp(spec + m + 1, routes[i].info.path) == 0;
}

bool route_audited(int i)
{
    for (const char *const *a = audited_routes; *a; a++)
        if (names_route(*a, i))
            return true;
    return false;
}

/* The writer routes that change one of opsdb's state tables (the ingestion routes check the
 * table of each request themselves): a token made with --tables calls them only when the
 * table is in its list. */
static const struct {
    const char *route, *table;
} route_tables[] = {
    {"POST /api/v1/alerts/{id}/ack", "alert_history"},
    {"POST /api/v1/silences", "silences"},
    {"DELETE /api/v1/silences/{id}", "silences"},
    {"POST /api/v1/jobs/{name}/start", "job_runs"},
    {"POST /api/v1/jobs/{name}/success", "job_runs"},
    {"POST /api/v1/jobs/{name}/fail", "job_runs"},
};

const char *route_writes(int i)
{
    for (size_t k = 0; k < sizeof route_tables / sizeof route_tables[0]; k++)
        if (names_route(route_tables[k].route, i))
            return route_tables[k].table;
    return NULL;
}

/* Matches path against a pattern; "{name}" takes one non-empty segment, at the end or between
 * fixed parts ("/api/v1/alerts/{id}/ack"). */
static bool path_matches(const char *pattern, const char *url, char *arg, size_t arg_size)
{
    const char *brace = strchr(pattern, '{');
    if (!brace)
        return strcmp(pattern, url) == 0;
    size_t prefix = (size_t)(brace - pattern);
    const char *suffix = strchr(brace, '}') + 1;
    size_t url_len = strlen(url), suffix_len = strlen(suffix);
    if (strncmp(pattern, url, prefix) != 0 || url_len < prefix + suffix_len ||
        strcmp(url + url_len - suffix_len, suffix) != 0)
        return false;
    const char *seg = url + prefix;
    size_t len = url_len - prefix - suffix_len;
    if (len == 0 || len >= arg_size || memchr(seg, '/', len))
        return false;
    memcpy(arg, seg, len);
    arg[len] = '\0';
    return true;
}

int route_match(const char *method, const char *url, struct request *req, bool *path_known)
{
    *path_known = false;
    for (size_t i = 0; i < NROUTES; i++) {
        if (!path_matches(routes[i].info.path, url, req->path_arg, sizeof req->path_arg))
            continue;
        *path_known = true;
        if (strcmp(routes[i].info.method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(routes[i].info.method, "GET") == 0))
            return (int)i;
    }
    return -1;
}

void route_allowed_methods(const char *url, char *out, size_t size)
{
    char arg[256];
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NROUTES && used < size; i++) {
        if (!path_matches(routes[i].info.path, url, arg, sizeof arg) ||
            strstr(out, routes[i].info.method))
            continue;
        int n = snprintf(out + used, size - used, "%s%s", used ? ", " : "", routes[i].info.method);
        used += n > 0 ? (size_t)n : 0;
    }
}

void respond_json(struct response *res, unsigned status, const char *json)
{
    res->status = status;
    res->content_type = "application/json";
    res->body.len = 0;
    buf_append(&res->body, json, strlen(json));
}

void respond_error(struct response *res, unsigned status, const char *msg, const struct rejects *r)
{
    res->status = status;
    res->content_type = "application/json";
    res->body.len = 0;
    struct value v = {.s = msg, .len = (uint32_t)strlen(msg), .type = VAL_TEXT};
    buf_append(&res->body, "{\"error\":", 9);
    query_json_value(&v, &res->body);
    buf_append(&res->body, ",\"details\":[", 12);
    for (size_t i = 0; r && i < r->n; i++) {
        const struct reject *it = &r->items[i];
        buf_printf(&res->body, "%s{\"%s\":%zu,\"field\":", i ? "," : "", r->row_word, it->row);
        v = (struct value){.s = it->field, .len = (uint32_t)strlen(it->field), .type = VAL_TEXT};
        query_json_value(&v, &res->body);
        buf_append(&res->body, ",\"reason\":", 10);
        v = (struct value){.s = it->reason, .len = (uint32_t)strlen(it->reason), .type = VAL_TEXT};
        query_json_value(&v, &res->body);
        buf_putc(&res->body, '}');
    }
    buf_append(&res->body, "]", 1);
    if (r)
        buf_printf(&res->body, ",\"rejected\":%zu", r->count);
    buf_append(&res->body, "}", 1);
}

unsigned status_for(int code)
{
    switch (code) {
    case E_INVALID:
        return 400;
    case E_NOTFOUND:
        return 404;
    case E_CONFLICT:
        return 409;
    case E_DENIED:
        return 403;
    case E_LIMIT:
        return 422;
    case E_STORE:
        return 503;
    default:
        return 500;
    }
}

void handle_index(struct http_server *srv, struct request *req, struct response *res)
{
    (void)srv;
    (void)req;
    buf_printf(&res->body, "{\"name\":\"opsdb\",\"routes\":[");
    for (size_t i = 0; i < NROUTES; i++) {
        const struct route_info *r = &routes[i].info;
        buf_printf(&res->body,
                   "%s{\"method\":\"%s\",\"path\":\"%s\",\"role\":\"%s\",\"doc\":", i ? "," : "",
                   r->method, r->path, r->role);
        struct value v = {.s = r->doc, .len = (uint32_t)strlen(r->doc), .type = VAL_TEXT};
        query_json_value(&v, &res->body);
        buf_putc(&res->body, '}');
    }
    buf_printf(&res->body, "]}");
}
