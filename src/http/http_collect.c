/*
 * Collection heartbeats over HTTP: a client that ships data names itself in headers of its
 * ingestion requests (X-Opsdb-Source, X-Opsdb-Source-Kind, X-Opsdb-Interval), and POST
 * /api/v1/heartbeat says a source is alive when it has nothing to send (an idle log file).
 * Both feed collection_status (collect/heartbeat.h).
 */
#include "collect/heartbeat.h"
#include "http/http_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEARTBEAT_MAX_SOURCES 1000 /* sources in one POST /api/v1/heartbeat */

/* The kinds a client may claim: the server's own listeners note the others. */
static int client_kind(const char *name)
{
    int k = source_kind_parse(name);
    return k == SOURCE_AGENT || k == SOURCE_TAIL || k == SOURCE_HTTP ? k : -1;
}

/* Reads one source (kind, name, interval); fills msg and returns false when it is bad. */
static bool source_read(const char *kind, const char *name, const char *interval,
                        struct http_source *out, char *msg, size_t size)
{
    int k = client_kind(kind ? kind : "http");
    if (k < 0) {
        snprintf(msg, size, "source kind '%.40s' is not one of agent, tail, http", kind);
        return false;
    }
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > SOURCE_NAME_MAX) {
        snprintf(msg, size, "source name must be 1 to %d bytes", SOURCE_NAME_MAX);
        return false;
    }
    int64_t ms = 0;
    if (interval && (!time_parse_duration(interval, &ms) || ms < 0)) {
        snprintf(msg, size, "source interval '%.40s' is not a duration such as 10s", interval);
        return false;
    }
    out->kind = k;
    snprintf(out->name, sizeof out->name, "%s", name);
    out->interval_ms = ms;
    return true;
}

int http_source_of(struct request *req, struct response *res, struct http_source *out)
{
    out->kind = -1;
    const char *name = request_header(req, "X-Opsdb-Source");
    if (!name)
        return 0;
    char msg[200];
    if (source_read(request_header(req, "X-Opsdb-Source-Kind"), name,
                    request_header(req, "X-Opsdb-Interval"), out, msg, sizeof msg))
        return 0;
    char full[260];
    snprintf(full, sizeof full, "header X-Opsdb-Source*: %s; nothing was written", msg);
    respond_error(res, 400, full, NULL);
    return -1;
}

void http_source_note(struct http_server *srv, const struct http_source *src, uint64_t rows)
{
    if (src->kind >= 0)
        heartbeat_note(srv->deps.heartbeats, (enum source_kind)src->kind, src->name,
                       src->interval_ms, rows);
}

/* {"kind": ..., "name": ..., "interval": "10s"} */
static bool member_source(json_t *o, struct http_source *out, char *msg, size_t size)
{
    json_t *kind = json_object_get(o, "kind"), *name = json_object_get(o, "name");
    json_t *interval = json_object_get(o, "interval");
    if (!json_is_object(o) || (kind && !json_is_string(kind)) || !json_is_string(name) ||
        (interval && !json_is_string(interval))) {
        snprintf(msg, size,
                 "a source is an object with name and optional kind and interval "
                 "(strings)");
        return false;
    }
    return source_read(json_string_value(kind), json_string_value(name),
                       json_string_value(interval), out, msg, size);
}

void handle_heartbeat(struct http_server *srv, struct request *req, struct response *res)
{
    json_error_t jerr;
    json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, &jerr);
    json_t *list = json_is_object(body) ? json_object_get(body, "sources") : NULL;
    char msg[300];
    if (!json_is_array(list)) {
        respond_error(res, 400,
                      "the body must be {\"sources\": [{\"kind\": \"tail\", \"name\": ..., "
                      "\"interval\": \"10s\"}, ...]}",
                      NULL);
        json_decref(body);
        return;
    }
    size_t n = json_array_size(list);
    struct http_source *sources = n ? calloc(n, sizeof *sources) : NULL;
    if (n > HEARTBEAT_MAX_SOURCES || (n && !sources)) {
        snprintf(msg, sizeof msg, "at most %d sources per heartbeat", HEARTBEAT_MAX_SOURCES);
        respond_error(res, 413, msg, NULL);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char why[200];
        if (!member_source(json_array_get(list, i), &sources[i], why, sizeof why)) {
            snprintf(msg, sizeof msg, "sources[%zu]: %s; no heartbeat was noted", i, why);
            respond_error(res, 400, msg, NULL);
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++)
        http_source_note(srv, &sources[i], 0);
    buf_printf(&res->body, "{\"noted\":%zu}", n);
out:
    free(sources);
    json_decref(body);
}
