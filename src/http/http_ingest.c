/*
 * Ingestion routes: /api/v1/ingest/{table} (JSON, NDJSON, CSV) and the InfluxDB line protocol
 * routes. A request is atomic: it is parsed and validated whole, and only a request with no bad
 * row is handed to the writer; the answer is sent after the commit.
 */
#include "http/http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum body_format { BODY_JSON, BODY_NDJSON, BODY_CSV, BODY_LINEPROTO };

/* Decodes Content-Encoding: gzip into *decoded when needed; returns the bytes to parse. */
static int body_bytes(struct http_server *srv, struct request *req, struct response *res,
                      struct buf *decoded, const char **data, size_t *len)
{
    const char *enc = request_header(req, MHD_HTTP_HEADER_CONTENT_ENCODING);
    *data = req->body.data ? req->body.data : "";
    *len = req->body.len;
    if (!enc || strcasecmp(enc, "identity") == 0)
        return 0;
    if (strcasecmp(enc, "gzip") != 0 && strcasecmp(enc, "deflate") != 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "Content-Encoding '%.40s' is not supported (use gzip)", enc);
        respond_error(res, 415, msg, NULL);
        metrics_reject(&srv->metrics, NULL, REJ_BAD_BODY, 1);
        return -1;
    }
    struct err e;
    int rc = ingest_gunzip(*data, *len, decoded, &e);
    if (rc != 0) {
        respond_error(res, rc == E_LIMIT ? 413 : 400, e.msg, NULL);
        metrics_reject(&srv->metrics, NULL, rc == E_LIMIT ? REJ_TOO_LARGE : REJ_BAD_BODY, 1);
        return -1;
    }
    *data = decoded->data;
    *len = decoded->len;
    return 0;
}

static bool precision_arg(struct request *req, struct response *res, const char *dflt,
                          enum time_precision *p)
{
    const char *s = request_arg(req, "precision");
    int v = time_precision_parse(s ? s : dflt);
    if (v < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "precision '%.20s' is not one of ns, us, ms, s", s);
        respond_error(res, 400, msg, NULL);
        return false;
    }
    *p = (enum time_precision)v;
    return true;
}

static enum body_format format_of(struct request *req)
{
    const char *f = request_arg(req, "format");
    const char *ct = request_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *what = f ? f : ct ? ct : "";
    if (strstr(what, "ndjson") || strstr(what, "jsonl") || strstr(what, "json-seq"))
        return BODY_NDJSON;
    if (strstr(what, "csv"))
        return BODY_CSV;
    return BODY_JSON;
}

/* Parses, validates and commits; fills res for every outcome. */
static void ingest(struct http_server *srv, struct request *req, struct response *res,
                   const struct table *t, enum body_format fmt, enum time_precision prec,
                   unsigned ok_status)
{
    struct http_source src;
    if (!http_may_write(srv, req, res, t) || http_source_of(req, res, &src) != 0)
        return;
    struct buf decoded;
    buf_init(&decoded, (size_t)srv->deps.cfg->max_body_bytes);
    const char *data;
    size_t len;
    if (body_bytes(srv, req, res, &decoded, &data, &len) != 0) {
        buf_release(&decoded);
        return;
    }
    struct ingest_ctx ctx;
    ingest_ctx_init(&ctx, srv->deps.cfg, srv->deps.fingerprints, prec);
    struct batch b;
    batch_init(&b, t);
    struct rejects *r = malloc(sizeof *r);
    if (!r)
        abort();
    rejects_init(r, fmt == BODY_JSON ? "row" : "line");
    int rc;
    switch (fmt) {
    case BODY_LINEPROTO:
        rc = ingest_parse_lineproto(&ctx, data, len, &b, r);
        break;
    case BODY_CSV:
        rc = ingest_parse_csv(&ctx, data, len, &b, r);
        break;
    default:
        rc = ingest_parse_json(&ctx, data, len, fmt == BODY_NDJSON, &b, r);
        break;
    }
    char msg[300];
    if (rc == E_LIMIT) {
        snprintf(msg, sizeof msg,
                 "the request has more than %zu rows (ingest.max_rows_per_request): send smaller "
                 "batches; nothing was written",
                 ctx.max_rows);
        respond_error(res, 413, msg, NULL);
        metrics_reject(&srv->metrics, t, REJ_TOO_LARGE, b.nrows);
    } else if (rc != 0) {
        snprintf(msg, sizeof msg, "rejected %zu of %zu %ss: nothing was written", r->count,
                 r->count + b.nrows, r->row_word);
        respond_error(res, 400, msg, r);
        metrics_reject(&srv->metrics, t, REJ_VALIDATION, r->count);
    } else {
        struct err e;
        if ((rc = writer_submit(srv->deps.writer, &b, &e)) == E_INVALID) {
            /* a limit of the store (limits.max_series_per_metric): retrying will not help */
            snprintf(msg, sizeof msg, "rejected: %.240s; nothing was written", e.msg);
            respond_error(res, 400, msg, NULL);
            metrics_reject(&srv->metrics, t, REJ_VALIDATION, b.nrows);
        } else if (rc != 0) {
            snprintf(msg, sizeof msg,
                     "the database did not take the rows (%.200s): nothing was "
                     "written, retry",
                     e.msg);
            respond_error(res, rc == E_STORE ? 503 : status_for(rc), msg, NULL);
            res->header_name = "Retry-After";
            res->header_value = "1";
            metrics_reject(&srv->metrics, t, REJ_STORE, b.nrows);
        } else if (http_source_note(srv, &src, b.nrows), ok_status == 204) {
            res->status = 204;
        } else {
            buf_printf(&res->body, "{\"table\":\"%s\",\"rows\":%zu}", t->name, b.nrows);
        }
    }
    free(r);
    batch_release(&b);
    buf_release(&decoded);
}

void handle_ingest(struct http_server *srv, struct request *req, struct response *res)
{
    const struct table *t = schema_table(req->path_arg);
    if (!t) {
        char msg[400];
        size_t n, used;
        const struct table *all = schema_tables(&n);
        used = (size_t)snprintf(msg, sizeof msg, "no table '%.60s'; tables are", req->path_arg);
        for (size_t i = 0; i < n && used < sizeof msg; i++)
            used +=
                (size_t)snprintf(msg + used, sizeof msg - used, "%s %s", i ? "," : "", all[i].name);
        respond_error(res, 404, msg, NULL);
        return;
    }
    enum time_precision p;
    if (precision_arg(req, res, "ms", &p))
        ingest(srv, req, res, t, format_of(req), p, 200);
}

void handle_influx_write(struct http_server *srv, struct request *req, struct response *res)
{
    enum time_precision p;
    if (precision_arg(req, res, "ns", &p))
        ingest(srv, req, res, schema_table("system_metrics"), BODY_LINEPROTO, p, 204);
}

void handle_influx_ping(struct http_server *srv, struct request *req, struct response *res)
{
    (void)srv;
    (void)req;
    res->status = 204;
    res->header_name = "X-Influxdb-Version";
    res->header_value = "1.8.10-opsdb";
}
