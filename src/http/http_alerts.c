/*
 * The alerting routes: the rules and their state, the active alerts, acknowledging one, and
 * reloading the rule files and receivers (as SIGHUP does).
 */
#include "alert/alert.h"
#include "http/http_int.h"

#include <jansson.h>
#include <string.h>

static bool alerting_on(struct http_server *srv, struct response *res)
{
    if (srv->deps.alerts)
        return true;
    respond_error(res, 404, "alerting is not running in this process", NULL);
    return false;
}

void handle_rules(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    if (alerting_on(srv, res))
        alert_engine_rules_json(srv->deps.alerts, &res->body);
}

void handle_alerts(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    if (alerting_on(srv, res))
        alert_engine_alerts_json(srv->deps.alerts, &res->body);
}

void handle_alerts_reload(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    struct err e;
    if (!alerting_on(srv, res))
        return;
    if (alert_engine_reload(srv->deps.alerts, &e) != 0)
        respond_error(res, status_for(e.code), e.msg, NULL);
    else
        respond_json(res, 200, "{\"reloaded\":true}");
}

/* POST /api/v1/alerts/{id}/ack, optionally with {"by": "name"} */
void handle_alert_ack(struct http_server *srv, struct request *req, struct response *res)
{
    if (!alerting_on(srv, res))
        return;
    char who[128] = "";
    if (req->body.len) {
        json_error_t jerr;
        json_t *body = json_loadb(req->body.data, req->body.len, 0, &jerr);
        const char *by = json_string_value(json_object_get(body, "by"));
        if (!json_is_object(body) || (json_object_get(body, "by") && !by)) {
            json_decref(body);
            respond_error(res, 400, "the body must be a JSON object like {\"by\": \"name\"}", NULL);
            return;
        }
        snprintf(who, sizeof who, "%s", by ? by : "");
        json_decref(body);
    }
    struct err e;
    if (alert_engine_ack(srv->deps.alerts, req->path_arg, who, &e) != 0) {
        respond_error(res, status_for(e.code), e.msg, NULL);
        return;
    }
    buf_printf(&res->body, "{\"acknowledged\":\"%s\"}", req->path_arg);
}

void handle_silences(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    if (alerting_on(srv, res))
        alert_engine_silences_json(srv->deps.alerts, &res->body);
}

/* A time member: epoch seconds (a number) or text as the API's from/to take it. */
static bool time_member(json_t *body, const char *name, int64_t *ms)
{
    json_t *v = json_object_get(body, name);
    if (json_is_number(v)) {
        *ms = (int64_t)(json_number_value(v) * 1000);
        return true;
    }
    return json_is_string(v) && time_parse_point(json_string_value(v), ms);
}

static bool text_member(json_t *body, const char *name, char *out, size_t size, bool required,
                        char *why, size_t why_size)
{
    json_t *v = json_object_get(body, name);
    if (!v && !required)
        return true;
    const char *s = json_string_value(v);
    if (!s || (required && !*s) || strlen(s) >= size) {
        snprintf(why, why_size, "%s: expected text of 1 to %zu bytes", name, size - 1);
        return false;
    }
    memcpy(out, s, strlen(s) + 1);
    return true;
}

/* POST /api/v1/silences {"matchers", "ends_at" or "duration", "starts_at"?, "created_by",
 * "comment"?, "id"?} */
void handle_silence_create(struct http_server *srv, struct request *req, struct response *res)
{
    if (!alerting_on(srv, res))
        return;
    json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL);
    struct alert_silence si = {0};
    char why[300] = "";
    int64_t duration_ms = 0;
    const char *duration = json_string_value(json_object_get(body, "duration"));
    if (!json_is_object(body))
        snprintf(why, sizeof why,
                 "the body must be a JSON object with matchers, ends_at or "
                 "duration, created_by and comment");
    else if (!text_member(body, "matchers", si.matchers, sizeof si.matchers, true, why,
                          sizeof why) ||
             !text_member(body, "created_by", si.created_by, sizeof si.created_by, true, why,
                          sizeof why) ||
             !text_member(body, "comment", si.comment, sizeof si.comment, false, why, sizeof why) ||
             !text_member(body, "id", si.id, sizeof si.id, false, why, sizeof why))
        ;
    else if (json_object_get(body, "starts_at") && !time_member(body, "starts_at", &si.starts_ms))
        snprintf(why, sizeof why, "starts_at: expected epoch seconds or RFC 3339");
    else if (duration && (!time_parse_duration(duration, &duration_ms) || duration_ms <= 0))
        snprintf(why, sizeof why, "duration: '%s' is not a duration like 2h", duration);
    else if (!duration && !time_member(body, "ends_at", &si.ends_ms))
        snprintf(why, sizeof why, "ends_at: expected epoch seconds or RFC 3339 (or give duration)");
    json_decref(body);
    if (why[0]) {
        respond_error(res, 400, why, NULL);
        return;
    }
    if (duration)
        si.ends_ms = (si.starts_ms ? si.starts_ms : time_now_ms()) + duration_ms;
    struct err e;
    if (alert_engine_silence(srv->deps.alerts, &si, &e) != 0) {
        respond_error(res, status_for(e.code), e.msg, NULL);
        return;
    }
    buf_printf(&res->body, "{\"id\":\"%s\"}", si.id);
}

void handle_silence_expire(struct http_server *srv, struct request *req, struct response *res)
{
    if (!alerting_on(srv, res))
        return;
    struct err e;
    if (alert_engine_silence_expire(srv->deps.alerts, req->path_arg, &e) != 0)
        respond_error(res, status_for(e.code), e.msg, NULL);
    else
        buf_printf(&res->body, "{\"expired\":\"%s\"}", req->path_arg);
}

void handle_incidents(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    if (alerting_on(srv, res))
        alert_engine_incidents_json(srv->deps.alerts, &res->body);
}
