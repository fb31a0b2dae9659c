/*
 * libmicrohttpd glue: a thread per connection (handlers may block on the writer's commit), a
 * request context that collects the body up to http.max_body_bytes, dispatch through the route
 * table, and per-route metrics.
 */
#include "http/http_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RESPONSE_MAX_BYTES (512u << 20)
#define DRAIN_MS 15000 /* how long stopping waits for the answers of requests under way */

const char *request_arg(struct request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *request_header(struct request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* Connection threads parse in parallel, but every row then waits for the one writer thread:
 * when they outnumber the cores they would take the writer's CPU time and slow every request.
 * A connection thread therefore runs at a lower priority (nice +5; raising niceness needs no
 * privilege). Linux applies it to the calling thread only. */
static void lower_thread_priority(void)
{
    static _Thread_local bool lowered;
    if (!lowered) {
        lowered = true;
        if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 5) != 0)
            log_debug("could not lower the priority of a connection thread");
    }
}

static double elapsed(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Sent with every response, errors included. The API answers JSON and text, and the coming
 * dashboard loads its scripts and styles from this server only: no inline script, no framing
 * (clickjacking), no MIME sniffing, no Referer with URLs that carry queries. HSTS only under
 * TLS: browsers ignore it over plain HTTP, and it would pin HTTPS on a host serving without. */
static const struct {
    const char *name, *value;
    bool tls_only;
} security_headers[] = {
    {"X-Content-Type-Options", "nosniff", false},
    {"Content-Security-Policy",
     "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
     "frame-ancestors 'none'",
     false},
    {"X-Frame-Options", "DENY", false},
    {"Referrer-Policy", "no-referrer", false},
    {"Strict-Transport-Security", "max-age=31536000", true},
};

static enum MHD_Result send_response(struct http_server *srv, struct request *req,
                                     struct response *res)
{
    size_t len = res->body.len;
    char *data = res->body.data;
    res->body.data = NULL; /* ownership passes to libmicrohttpd, which frees it */
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, data ? data : (char *)"", data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    if (res->content_type && len)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->content_type);
    if (res->header_name)
        MHD_add_response_header(r, res->header_name, res->header_value);
    for (size_t i = 0; i < sizeof security_headers / sizeof security_headers[0]; i++)
        if (!security_headers[i].tls_only || srv->tls)
            MHD_add_response_header(r, security_headers[i].name, security_headers[i].value);
    enum MHD_Result ok = MHD_queue_response(req->conn, res->status, r);
    MHD_destroy_response(r);
    metrics_observe(&srv->metrics, req->route, res->status, elapsed(&req->started));
    return ok;
}

static void dispatch(struct http_server *srv, struct request *req, struct response *res,
                     bool path_known)
{
    if (http_limits_check(srv, req, res))
        return;
    if (req->route < 0) {
        char msg[400];
        if (path_known) {
            route_allowed_methods(req->url, req->allowed, sizeof req->allowed);
            snprintf(msg, sizeof msg, "method %.10s is not allowed on %.200s (allowed: %.60s)",
                     req->method, req->url, req->allowed);
            respond_error(res, 405, msg, NULL);
            res->header_name = "Allow";
            res->header_value = req->allowed;
        } else {
            snprintf(msg, sizeof msg, "no route %.200s (see GET / for the API)", req->url);
            respond_error(res, 404, msg, NULL);
        }
        return;
    }
    http_auth_run(srv, req, res);
}

static void too_large(struct http_server *srv, struct response *res)
{
    char msg[200];
    snprintf(msg, sizeof msg,
             "the request body is larger than the limit of %lld bytes (http.max_body_bytes): "
             "send it in smaller batches",
             (long long)srv->deps.cfg->max_body_bytes);
    respond_error(res, 413, msg, NULL);
    metrics_reject(&srv->metrics, NULL, REJ_TOO_LARGE, 1);
}

/* Counts req in flight; false when the server is stopping (req must then be answered 503). */
static bool begin(struct http_server *srv, struct request *req)
{
    pthread_mutex_lock(&srv->drain_lock);
    req->in_flight = !srv->stopping;
    srv->in_flight += req->in_flight;
    pthread_mutex_unlock(&srv->drain_lock);
    return req->in_flight;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_server *srv = cls;
    struct request *req = *con_cls;
    struct response res = {200, "application/json", {0}, NULL, NULL};
    buf_init(&res.body, RESPONSE_MAX_BYTES);
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        lower_thread_priority();
        clock_gettime(CLOCK_MONOTONIC, &req->started);
        req->conn = conn;
        http_conns_busy(srv->conns, conn);
        req->method = method;
        req->url = url;
        buf_init(&req->body, (size_t)srv->deps.cfg->max_body_bytes);
        *con_cls = req;
        bool known;
        req->route = route_match(method, url, req, &known);
        if (!begin(srv, req)) {
            respond_error(&res, 503, "the server is stopping: retry against a running one", NULL);
            res.header_name = "Retry-After";
            res.header_value = "1";
            return send_response(srv, req, &res);
        }
        const char *cl = request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > (unsigned long long)srv->deps.cfg->max_body_bytes) {
            /* answer before reading the body; libmicrohttpd then closes the connection */
            too_large(srv, &res);
            return send_response(srv, req, &res);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (elapsed(&req->started) * 1000 > (double)srv->deps.cfg->request_timeout_ms) {
            /* a body trickling in: the connection is closed without an answer (libmicrohttpd
             * cannot send one before the body has been read) */
            char peer[INET6_ADDRSTRLEN + 16];
            http_peer_name(req, peer, sizeof peer);
            log_warn("http: %s %s from %s: the body did not arrive within http.request_timeout; "
                     "connection closed",
                     req->method, req->url, peer);
            http_conns_count_timeout(srv->conns);
            return MHD_NO;
        }
        if (!req->body_too_large && buf_append(&req->body, upload_data, *upload_size) != 0) {
            req->body_too_large = true;
            buf_release(&req->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    bool known = true;
    if (req->route < 0)
        route_match(method, url, req, &known);
    if (req->body_too_large)
        too_large(srv, &res);
    else
        dispatch(srv, req, &res, known);
    return send_response(srv, req, &res);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    struct http_server *srv = cls;
    struct request *req = *con_cls;
    if (!req)
        return;
    http_conns_idle(srv->conns, conn);
    if (req->in_flight) {
        pthread_mutex_lock(&srv->drain_lock);
        if (--srv->in_flight == 0)
            pthread_cond_broadcast(&srv->drained);
        pthread_mutex_unlock(&srv->drain_lock);
    }
    buf_release(&req->body);
    free(req);
    *con_cls = NULL;
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        struct err *e)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host)
        return err_set(e, E_INVALID, "listen address '%s' is not host:port", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return err_set(e, E_INVALID, "listen address '%s': port must be 0..65535", listen);
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return 0;
    }
    return err_set(e, E_INVALID, "listen address '%s': '%s' is not an IP address", listen, host);
}

int http_start(struct http_server **out, const struct http_deps *deps, struct err *e)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int rc = parse_listen(deps->cfg->listen, &ss, &sslen, e);
    if (rc)
        return rc;
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return err_set(e, E_NOMEM, "out of memory");
    srv->deps = *deps;
    pthread_mutex_init(&srv->drain_lock, NULL);
    pthread_cond_init(&srv->drained, NULL);
    if ((rc = http_limits_new(&srv->limits, deps->cfg, e)) != 0) {
        free(srv);
        return rc;
    }
    if ((rc = http_tls_new(&srv->tls, deps->cfg, e)) != 0) {
        http_limits_free(&srv->limits);
        free(srv);
        return rc;
    }
    if ((rc = http_conns_new(&srv->conns, (unsigned)deps->cfg->max_connections,
                             deps->cfg->request_timeout_ms, srv->tls, e))) {
        http_tls_free(&srv->tls);
        http_limits_free(&srv->limits);
        free(srv);
        return rc;
    }
    struct MHD_OptionItem more_options[HTTP_TLS_OPTIONS_MAX + 2];
    size_t ntls = http_tls_options(srv->tls, more_options);
    size_t nmore = ntls + http_conns_options(srv->conns, more_options + ntls);
    more_options[nmore] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    size_t nroutes;
    http_routes(&nroutes);
    metrics_init(&srv->metrics, nroutes);
    /* poll, not select: connections past descriptor 1024 must work too */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG |
                     (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0) | (ntls ? MHD_USE_TLS : 0);
    const struct config *cfg = deps->cfg;
    /* a connection's memory holds its request line and headers (http_limits.c answers 431 past
     * http.max_header_bytes) and its read buffer: room for both, so the 431 is ours */
    size_t conn_memory = (size_t)cfg->max_header_bytes * 2 + 32768;
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_client,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)((cfg->connection_timeout_ms + 999) / 1000),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, conn_memory, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        srv, MHD_OPTION_ARRAY, more_options, MHD_OPTION_END);
    if (!srv->daemon) {
        http_conns_free(&srv->conns);
        http_limits_free(&srv->limits);
        metrics_release(&srv->metrics);
        http_tls_free(&srv->tls);
        free(srv);
        return err_set(e, E_IO, "cannot listen on %s: %s (is another server using the port?)",
                       deps->cfg->listen, errno ? strerror(errno) : "libmicrohttpd failed");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : 0;
    *out = srv;
    return 0;
}

int http_port(struct http_server *s)
{
    return s->port;
}

void http_stop(struct http_server **sp)
{
    struct http_server *s = *sp;
    if (!s)
        return;
    /* let the requests under way finish, for at most DRAIN_MS: libmicrohttpd's stop would close
     * their connections before their answers go out */
    struct timespec until;
    time_deadline(&until, DRAIN_MS);
    pthread_mutex_lock(&s->drain_lock);
    s->stopping = true;
    while (s->in_flight && pthread_cond_timedwait(&s->drained, &s->drain_lock, &until) == 0)
        ;
    if (s->in_flight)
        log_warn("stopping with %u requests still unanswered after %d s", s->in_flight,
                 DRAIN_MS / 1000);
    pthread_mutex_unlock(&s->drain_lock);
    MHD_stop_daemon(s->daemon);
    pthread_cond_destroy(&s->drained);
    pthread_mutex_destroy(&s->drain_lock);
    http_conns_free(&s->conns);
    http_limits_free(&s->limits);
    metrics_release(&s->metrics);
    http_tls_free(&s->tls);
    free(s);
    *sp = NULL;
}
