/*
 * Prometheus remote write 1.0: POST /api/v1/prom/write (and /api/v1/write, the path Prometheus
 * users know from other receivers). Like the other ingestion routes a request is atomic and
 * answered after the commit. A sender retries on 5xx and drops the data on 4xx, so only a
 * database that cannot take the rows now answers 5xx; a bad body is 400 (or 413, 415) with a
 * JSON error, logged with the peer, counted in opsdb_rows_rejected_total, and nothing written.
 */
#include "collect/heartbeat.h"
#include "http/http_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* The sender's name for its heartbeat: X-Opsdb-Source when it names itself, else its address
 * (Prometheus does not name itself in its requests). */
static void sender_name(struct request *req, char *out, size_t size)
{
    const char *named = request_header(req, "X-Opsdb-Source");
    if (named && *named) {
        snprintf(out, size, "%s", named);
        return;
    }
    snprintf(out, size, "unknown");
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info ? info->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)size);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)size);
}

/* 415 unless the headers say remote write 1.0: a snappy protobuf WriteRequest. */
static bool headers_ok(struct request *req, struct response *res, char *why, size_t size)
{
    const char *enc = request_header(req, MHD_HTTP_HEADER_CONTENT_ENCODING);
    const char *type = request_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (enc && strcasecmp(enc, "snappy") != 0)
        snprintf(why, size, "Content-Encoding '%.40s' is not supported: remote write sends snappy",
                 enc);
    else if (type && strncasecmp(type, "application/x-protobuf", 22) != 0)
        snprintf(why, size, "Content-Type '%.60s' is not remote write's application/x-protobuf",
                 type);
    else if (type && strstr(type, "io.prometheus.write.v2"))
        snprintf(why, size,
                 "remote write 2.0 is not supported: configure the sender for 1.0 "
                 "(prometheus.WriteRequest)");
    else
        return true;
    respond_error(res, 415, why, NULL);
    return false;
}

/* The answer to a parse that failed: 413 past a limit, else 400 with the reason. */
static void refuse(struct http_server *srv, struct response *res, const struct table *t, int rc,
                   const struct err *e, const struct rejects *r, uint64_t rows)
{
    char msg[400];
    if (rc == E_LIMIT) {
        snprintf(msg, sizeof msg, "%.300s; nothing was written", e->msg);
        respond_error(res, 413, msg, NULL);
        metrics_reject(&srv->metrics, t, REJ_TOO_LARGE, 1);
    } else if (r->count) {
        snprintf(msg, sizeof msg, "%.300s: nothing was written", e->msg);
        respond_error(res, 400, msg, r);
        metrics_reject(&srv->metrics, t, REJ_VALIDATION, rows + r->count);
    } else {
        snprintf(msg, sizeof msg, "%.300s; nothing was written", e->msg);
        respond_error(res, rc == E_NOMEM ? 503 : 400, msg, NULL);
        metrics_reject(&srv->metrics, t, REJ_BAD_BODY, 1);
    }
}

/* Parses, validates and commits the body; fills res. Returns the rows written (0 on failure,
 * with *failed set). */
static size_t write_body(struct http_server *srv, struct request *req, struct response *res,
                         struct prom_stats *st, bool *failed)
{
    const struct table *t = schema_table("system_metrics");
    struct ingest_ctx ctx;
    ingest_ctx_init(&ctx, srv->deps.cfg, srv->deps.fingerprints, PREC_MS);
    struct batch b;
    batch_init(&b, t);
    struct rejects *r = malloc(sizeof *r);
    if (!r)
        abort();
    rejects_init(r, "series");
    struct err e;
    err_clear(&e);
    size_t written = 0;
    int rc = ingest_parse_remote_write(&ctx, req->body.data ? req->body.data : "", req->body.len,
                                       (size_t)srv->deps.cfg->remote_write_max_decoded_bytes, &b, r,
                                       st, &e);
    *failed = rc != 0;
    if (rc != 0) {
        refuse(srv, res, t, rc, &e, r, b.nrows);
    } else if (b.nrows == 0) {
        res->status = 204; /* only metadata, or only NaN samples: nothing to write */
    } else if ((rc = writer_submit(srv->deps.writer, &b, &e)) == E_INVALID) {
        refuse(srv, res, t, rc, &e, r, b.nrows); /* a store limit: 400, no retry */
        *failed = true;
    } else if (rc != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "the database did not take the rows (%.200s): retry", e.msg);
        respond_error(res, rc == E_STORE ? 503 : status_for(rc), msg, NULL);
        res->header_name = "Retry-After";
        res->header_value = "1";
        metrics_reject(&srv->metrics, t, REJ_STORE, b.nrows);
    } else {
        res->status = 204;
        written = b.nrows;
    }
    free(r);
    batch_release(&b);
    return written;
}

void handle_prom_write(struct http_server *srv, struct request *req, struct response *res)
{
    char sender[SOURCE_NAME_MAX + 1], why[200];
    if (!http_may_write(srv, req, res, schema_table("system_metrics")))
        return;
    sender_name(req, sender, sizeof sender);
    if (!headers_ok(req, res, why, sizeof why)) {
        metrics_reject(&srv->metrics, schema_table("system_metrics"), REJ_BAD_BODY, 1);
        log_warn("remote write from %s: %s", sender, why);
        return;
    }
    struct prom_stats st = {0};
    bool failed;
    size_t rows = write_body(srv, req, res, &st, &failed);
    if (failed && res->status < 500) {
        log_warn("remote write from %s: %u %.*s", sender, res->status,
                 (int)(res->body.len > 300 ? 300 : res->body.len), res->body.data);
        return;
    }
    if (res->status == 204) {
        heartbeat_note(srv->deps.heartbeats, SOURCE_REMOTE_WRITE, sender, 0, rows);
        if (st.nonfinite)
            log_debug("remote write from %s: %llu NaN or infinite samples not stored", sender,
                      (unsigned long long)st.nonfinite);
    }
}
