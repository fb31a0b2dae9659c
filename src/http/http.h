/*
 * http: the HTTP server — route table, ingestion and query routes, /metrics, health.
 */
#ifndef OPSDB_HTTP_H
#define OPSDB_HTTP_H

#include "core/core.h"
#include "ingest/ingest.h"
#include "query/query.h"
#include "store/store.h"

/* What the server serves; all borrowed, all outlive the server. */
struct http_deps {
    const struct config *cfg;
    struct store *store;
    struct writer *writer;
    const struct fingerprint_rules *fingerprints;
    struct query_cache *cache;     /* answers of views and series */
    struct alert_engine *alerts;   /* NULL: alerting routes answer 404 */
    struct jobs *jobs;             /* NULL: job routes answer 404 */
    struct heartbeats *heartbeats; /* NULL: no heartbeats are noted */
    /* the network receivers, for their /metrics; NULL: off */
    struct syslog_receiver *syslog;
    struct graphite_receiver *graphite;
    struct auth *auth; /* tokens and the audit log; NULL: every request passes, as an admin */
};

struct http_server;
struct alert_engine;
struct jobs;
struct heartbeats;
struct syslog_receiver;
struct graphite_receiver;
struct auth;

/* Starts listening on cfg->listen with a thread per connection. */
int http_start(struct http_server **out, const struct http_deps *deps, struct err *e);
/* The port actually bound (useful with port 0). */
int http_port(struct http_server *s);
/* Stops accepting, waits for running requests, frees. */
void http_stop(struct http_server **s);
/* Rereads tls.cert and tls.key (SIGHUP) while serving: new handshakes get the new pair,
 * connections already open keep theirs. On an error (a file missing or unreadable, not PEM, a
 * key that does not match the certificate) the pair loaded before stays in use and e says why.
 * Logs the certificate it loaded. 0 also when the server speaks plain HTTP. Any thread. */
int http_tls_reload(struct http_server *s, struct err *e);

/* One row of the route table: exported so tests and docs can walk every route. */
struct route_info {
    const char *method;
    const char *path; /* a trailing "{name}" matches one path segment */
    const char *role; /* public, reader, writer or admin */
    const char *doc;
};
const struct route_info *http_routes(size_t *count);

#endif
