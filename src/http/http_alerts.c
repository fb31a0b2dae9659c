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
