/* Private to http/: requests, responses, routes and metrics. */
#ifndef OPSDB_HTTP_INT_H
#define OPSDB_HTTP_INT_H

#include "auth/auth.h"
#include "http/http.h"
#include "query/query.h"

#include <microhttpd.h>
#include <pthread.h>
#include <time.h>

struct request {
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    int route; /* index in the route table, -1 when none matched */
    char path_arg[256];
    char allowed[64]; /* Allow header of a 405 */
    struct buf body;
    bool body_too_large;
    struct timespec started;
    bool in_flight; /* counted in http_server.in_flight until its response is sent */
    struct auth_principal principal; /* who sent it: filled before the handler runs */
    char set_cookie[256];            /* the Set-Cookie header of a session route's answer */
    char retry_after[24];            /* Retry-After of a 429 */
};

struct response {
    unsigned status;
    const char *content_type;
    struct buf body;
    const char *header_name, *header_value; /* one extra header, or NULL */
};

struct http_server;
typedef void (*route_handler)(struct http_server *srv, struct request *req, struct response *res);

/* Counters for /metrics; every field is guarded by lock. */
#define METRIC_LATENCY_BUCKETS 10
struct http_metrics {
    pthread_mutex_t lock;
    uint64_t *requests_by_class; /* per route: 2xx,3xx,4xx,5xx */
    uint64_t *latency_buckets;   /* per route: METRIC_LATENCY_BUCKETS + 1 (+Inf) */
    double *latency_sum;
    uint64_t rows_rejected[SCHEMA_MAX_TABLES + 1]
                          [4]; /* per table: validation, too_large, store_unavailable, bad_body */
};

enum reject_reason { REJ_VALIDATION, REJ_TOO_LARGE, REJ_STORE, REJ_BAD_BODY };

struct http_limits;

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_deps deps;
    struct http_metrics metrics;
    int port;
    struct http_tls *tls; /* NULL: plain HTTP */
    /* stopping: requests that began are answered before the daemon stops (an ingestion that
     * committed is acknowledged, so its client does not send it again); new ones get a 503 */
    pthread_mutex_t drain_lock;
    pthread_cond_t drained;
    unsigned in_flight;
    bool stopping;
    struct http_limits *limits; /* http_limits.c */
    struct http_conns *conns;   /* http_conns.c */
};

/* ---- limits (http_limits.c; docs/security.md, "Limits") ---------------------------------- */

/* The rate limiter of cfg's http.rate_limit (its buckets only when the limit is on). Free with
 * http_limits_free(). */
int http_limits_new(struct http_limits **out, const struct config *cfg, struct err *e);
void http_limits_free(struct http_limits **l);
/* Checks the request against http.max_header_bytes (431) and takes a token of its client's
 * rate limit (429 with Retry-After); true when it filled res with the refusal, and the request
 * must not be handled. Any connection thread. */
bool http_limits_check(struct http_server *srv, struct request *req, struct response *res);
/* Counters of the refusals, as /metrics lines. */
void http_limits_metrics(struct http_limits *l, struct buf *out);
/* The client's address as text ("?" when unknown), for log lines. */
void http_peer_name(struct request *req, char *out, size_t size);

/* Route table lookup: index or -1; fills req->path_arg for "{name}" routes. */
int route_match(const char *method, const char *url, struct request *req, bool *path_known);
route_handler route_handler_at(int i);
const struct route_info *route_info_at(int i);
/* Whether a request to route i is recorded in the audit log (admin actions). */
bool route_audited(int i);
/* The state table route i changes, which a token made with --tables must list to call it, or
 * NULL (no such table, or the handler checks the table of each request). */
const char *route_writes(int i);
/* The methods routes accept on url, comma-separated (for the Allow header of a 405). */
void route_allowed_methods(const char *url, char *out, size_t size);

/* Responses. */
void respond_json(struct response *res, unsigned status, const char *json);
/* {"error": msg, "details": [...]} from rejections (may be NULL). */
void respond_error(struct response *res, unsigned status, const char *msg, const struct rejects *r);
/* Status for an error code (E_INVALID -> 400, ...). */
unsigned status_for(int code);
const char *request_arg(struct request *req, const char *name);
const char *request_header(struct request *req, const char *name);

void metrics_init(struct http_metrics *m, size_t nroutes);
void metrics_release(struct http_metrics *m);
void metrics_observe(struct http_metrics *m, int route, unsigned status, double seconds);
void metrics_reject(struct http_metrics *m, const struct table *t, enum reject_reason why,
                    uint64_t rows);
void metrics_write(struct http_server *srv, struct buf *out);

/* A client that names itself in X-Opsdb-Source (kind in X-Opsdb-Source-Kind: agent, tail or
 * http, the default; X-Opsdb-Interval: how often it sends) for collection_status. */
struct http_source {
    int kind; /* enum source_kind; -1: the request named no source */
    char name[256];
    int64_t interval_ms;
};
/* Reads the headers into out (kind -1 when absent); a bad header answers 400 and returns -1. */
int http_source_of(struct request *req, struct response *res, struct http_source *out);
/* Notes the source's heartbeat (nothing when it named none). */
void http_source_note(struct http_server *srv, const struct http_source *src, uint64_t rows);

/* HTTPS (http_tls.c). Loads tls.cert and tls.key of cfg and checks them (readable PEM, the key
 * matching the certificate); *out stays NULL when neither is set (plain HTTP). E_INVALID or
 * E_IO with a message naming the option and the file. Free with http_tls_free(). */
int http_tls_new(struct http_tls **out, const struct config *cfg, struct err *e);
void http_tls_free(struct http_tls **t);
/* Writes the libmicrohttpd options that serve t (certificate callback, TLS 1.2+ priorities)
 * into out, which has room for HTTP_TLS_OPTIONS_MAX; returns how many (0 when t is NULL). Start
 * the daemon with MHD_USE_TLS when it is not 0. */
#define HTTP_TLS_OPTIONS_MAX 2
size_t http_tls_options(struct http_tls *t, struct MHD_OptionItem *out);
/* A connection's TLS state, made when it opens and given back when it closes (http_conns.c
 * holds it; the close of a connection whose handshake never got to the certificate is logged
 * and counted). */
void *http_tls_conn_open(struct http_tls *t);
void http_tls_conn_closed(struct http_tls *t, struct MHD_Connection *conn, void *state);
/* Appends t's series to /metrics (nothing when t is NULL). */
void http_tls_metrics(struct http_tls *t, struct buf *out);

/* Open connections (http_conns.c): counted, and the one idle longest is closed when fewer than
 * a headroom of max_connections' places is free, so idle and slow clients cannot fill them;
 * one idle for request_timeout_ms (its request has not arrived whole) is closed too. tls (or
 * NULL) gets each connection's TLS state. Free with http_conns_free(). */
struct http_conns;
int http_conns_new(struct http_conns **out, unsigned max_connections, int64_t request_timeout_ms,
                   struct http_tls *tls, struct err *e);
/* Counts a request whose body did not arrive within http.request_timeout. */
void http_conns_count_timeout(struct http_conns *c);
void http_conns_free(struct http_conns **c);
/* Writes the libmicrohttpd option that reports connections to c into out (room for 1). */
size_t http_conns_options(struct http_conns *c, struct MHD_OptionItem *out);
/* A request of conn began (it is not idle until its answer went out, http_conns_idle). */
void http_conns_busy(struct http_conns *c, struct MHD_Connection *conn);
void http_conns_idle(struct http_conns *c, struct MHD_Connection *conn);
/* The TLS state http_tls_conn_open gave conn, or NULL. */
void *http_conns_tls_state(struct MHD_Connection *conn);
/* Appends the open and taken-back counts to /metrics. */
void http_conns_metrics(struct http_conns *c, struct buf *out);

/* Handlers. */
void handle_healthz(struct http_server *srv, struct request *req, struct response *res);
void handle_readyz(struct http_server *srv, struct request *req, struct response *res);
void handle_metrics(struct http_server *srv, struct request *req, struct response *res);
void handle_ingest(struct http_server *srv, struct request *req, struct response *res);
void handle_influx_write(struct http_server *srv, struct request *req, struct response *res);
void handle_influx_ping(struct http_server *srv, struct request *req, struct response *res);
void handle_views_list(struct http_server *srv, struct request *req, struct response *res);
void handle_view(struct http_server *srv, struct request *req, struct response *res);
void handle_query(struct http_server *srv, struct request *req, struct response *res);
void handle_series(struct http_server *srv, struct request *req, struct response *res);
void handle_schema(struct http_server *srv, struct request *req, struct response *res);
void handle_index(struct http_server *srv, struct request *req, struct response *res);
void handle_rules(struct http_server *srv, struct request *req, struct response *res);
void handle_alerts(struct http_server *srv, struct request *req, struct response *res);
void handle_alerts_reload(struct http_server *srv, struct request *req, struct response *res);
void handle_alert_ack(struct http_server *srv, struct request *req, struct response *res);
void handle_silences(struct http_server *srv, struct request *req, struct response *res);
void handle_incidents(struct http_server *srv, struct request *req, struct response *res);
void handle_silence_create(struct http_server *srv, struct request *req, struct response *res);
void handle_silence_expire(struct http_server *srv, struct request *req, struct response *res);
void handle_jobs(struct http_server *srv, struct request *req, struct response *res);
void handle_job_cancel(struct http_server *srv, struct request *req, struct response *res);
void handle_job_history(struct http_server *srv, struct request *req, struct response *res);
void handle_job_run(struct http_server *srv, struct request *req, struct response *res);
void handle_job_pause(struct http_server *srv, struct request *req, struct response *res);
void handle_job_resume(struct http_server *srv, struct request *req, struct response *res);
void handle_job_start(struct http_server *srv, struct request *req, struct response *res);
void handle_job_success(struct http_server *srv, struct request *req, struct response *res);
void handle_job_fail(struct http_server *srv, struct request *req, struct response *res);
void handle_heartbeat(struct http_server *srv, struct request *req, struct response *res);

/* http_auth.c: checks the request's token against the route's role, runs the route's handler
 * when it may, and records audited routes and refusals. */
void http_auth_run(struct http_server *srv, struct request *req, struct response *res);
/* Whether the request may write rows of t (a client table, and the token's tables name it);
 * answers 403 and returns false when not. */
bool http_may_write(struct http_server *srv, struct request *req, struct response *res,
                    const struct table *t);
/* The auth counters for /metrics. */
void http_auth_metrics(struct http_server *srv, struct buf *out);
void handle_users(struct http_server *srv, struct request *req, struct response *res);
void handle_user_create(struct http_server *srv, struct request *req, struct response *res);
void handle_tokens(struct http_server *srv, struct request *req, struct response *res);
void handle_token_create(struct http_server *srv, struct request *req, struct response *res);
void handle_token_revoke(struct http_server *srv, struct request *req, struct response *res);
/* The client's address and port ("1.2.3.4:5678", "[::1]:5678"; "-" when unknown), or with
 * with_port false its address alone. */
void http_peer(struct request *req, bool with_port, char *out, size_t size);

/* The request's body as a JSON object (free with json_decref), or NULL after answering 400
 * with an example of the shape it must have. Needs <jansson.h>. */
struct json_t;
struct json_t *http_body_object(struct request *req, struct response *res, const char *shape);

/* http_session.c: dashboard sessions (POST, GET and DELETE /api/v1/session). */
void handle_session_create(struct http_server *srv, struct request *req, struct response *res);
void handle_session_get(struct http_server *srv, struct request *req, struct response *res);
void handle_session_delete(struct http_server *srv, struct request *req, struct response *res);

#endif
