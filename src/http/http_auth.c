/*
 * Every route's role enforced: the credentials of a request (Authorization: Bearer, Token —
 * as InfluxDB clients send it —, Basic with the token as password — as Prometheus remote_write
 * and Influx 1.x clients send it —, or Influx 1.x's ?p= on /write) are checked by auth/ against
 * the role the route table gives the route, before its handler runs. Refusals are answered
 * 401/403 without echoing the token, logged with the peer, counted and audited; audited routes
 * are recorded after their handler ran. Also the admin routes of users and tokens.
 */
#include "auth/auth.h"
#include "http/http_int.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define CREDENTIAL_MAX 512

void http_peer(struct request *req, bool with_port, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char ip[INET6_ADDRSTRLEN] = "-";
    unsigned port = 0;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
        port = ntohs(v4->sin_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
        port = ntohs(v6->sin6_port);
    }
    if (!with_port)
        snprintf(out, size, "%s", ip);
    else
        snprintf(out, size, sa && sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
}

static void peer_of(struct request *req, char *out, size_t size)
{
    http_peer(req, true, out, size);
}

/* The token the request carries into out ("" when none). Basic credentials are user:token; the
 * user part is not looked at. False when the request has no Authorization header (nor Influx's
 * ?p=): then it may be authenticated by a session cookie. */
static bool credentials_of(struct request *req, char *out, size_t size)
{
    out[0] = '\0';
    const char *h = request_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h) {
        const char *p = request_arg(req, "p"); /* InfluxDB 1.x: /write?u=name&p=token */
        if (p && strcmp(route_info_at(req->route)->path, "/write") == 0)
            snprintf(out, size, "%s", p);
        return p && strcmp(route_info_at(req->route)->path, "/write") == 0;
    }
    h += strspn(h, " ");
    size_t scheme = strcspn(h, " ");
    const char *v = h + scheme + strspn(h + scheme, " ");
    if ((scheme == 6 && strncasecmp(h, "Bearer", 6) == 0) ||
        (scheme == 5 && strncasecmp(h, "Token", 5) == 0)) {
        snprintf(out, size, "%.*s", (int)strcspn(v, " "), v);
    } else if (scheme == 5 && strncasecmp(h, "Basic", 5) == 0) {
        size_t len = 0;
        if (sodium_base642bin((unsigned char *)out, size - 1, v, strlen(v), " ", &len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0)
            len = 0;
        out[len] = '\0';
        char *colon = memchr(out, ':', len);
        if (colon)
            memmove(out, colon + 1, strlen(colon + 1) + 1);
    }
    return true;
}

/* Methods that change state: a request of these authenticated by a session cookie must carry
 * the session's CSRF token. */
static const char *const state_changing_methods[] = {"POST", "PUT", "PATCH", "DELETE", NULL};

static bool state_changing(const char *method)
{
    for (const char *const *m = state_changing_methods; *m; m++)
        if (strcmp(method, *m) == 0)
            return true;
    return false;
}

/* Checks the request's token, or its session cookie when no Authorization header came. */
static enum auth_result check_request(struct http_server *srv, struct request *req,
                                      enum auth_role need)
{
    char token[CREDENTIAL_MAX];
    bool has_credentials = credentials_of(req, token, sizeof token);
    const char *sid = has_credentials ? NULL
                                      : MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND,
                                                                    AUTH_SESSION_COOKIE);
    enum auth_result r =
        sid ? auth_check_session(srv->deps.auth, sid, request_header(req, AUTH_CSRF_HEADER),
                                 state_changing(req->method), need, &req->principal)
            : auth_check(srv->deps.auth, token, need, &req->principal);
    sodium_memzero(token, sizeof token);
    return r;
}

/* in with every "opsdb_..." path segment (a token someone put in a URL) cut to "opsdb_...", for
 * logs and the audit log, which never hold a token. */
static void redact(const char *in, char *out, size_t size)
{
    size_t used = 0;
    while (*in && used + 1 < size) {
        if (strncmp(in, "opsdb_", 6) == 0) {
            used += (size_t)snprintf(out + used, size - used, "opsdb_...");
            in += strcspn(in, "/?&");
        } else {
            out[used++] = *in++;
        }
    }
    out[used < size ? used : size - 1] = '\0';
}

static unsigned status_of(enum auth_result r)
{
    static const unsigned status[AUTH_RESULTS] = {
        [AUTH_FORBIDDEN] = 403, [AUTH_CSRF] = 403, [AUTH_UNAVAILABLE] = 503, [AUTH_LIMITED] = 429};
    return status[r] ? status[r] : 401;
}

/* The answer and the records of a refused request. */
static void refuse(struct http_server *srv, struct request *req, struct response *res,
                   enum auth_result r, const char *need, const char *peer)
{
    const struct route_info *ri = route_info_at(req->route);
    char msg[400];
    if (r == AUTH_FORBIDDEN)
        snprintf(msg, sizeof msg, "%s %s needs the role %s; the token of user %s has role %s",
                 ri->method, ri->path, need, req->principal.user,
                 auth_role_name(req->principal.role));
    else if (r == AUTH_UNAVAILABLE)
        snprintf(msg, sizeof msg, "the tokens could not be read from the database: retry");
    else if (r == AUTH_CSRF)
        snprintf(msg, sizeof msg,
                 "%s %s is authenticated by the session cookie and changes state: send the "
                 "session's CSRF token (csrf_token of POST or GET /api/v1/session) in %s",
                 ri->method, ri->path, AUTH_CSRF_HEADER);
    else if (r == AUTH_NO_SESSION)
        snprintf(msg, sizeof msg,
                 "no session: the session cookie names no open session (it ended, expired, or "
                 "the server restarted); sign in again with POST /api/v1/session");
    else
        snprintf(msg, sizeof msg,
                 "%s: %s %s needs a token of role %s (Authorization: Bearer TOKEN; opsdb token "
                 "create)",
                 auth_result_name(r), ri->method, ri->path, need);
    respond_error(res, status_of(r), msg, NULL);
    if (status_of(r) == 401) {
        res->header_name = "WWW-Authenticate";
        res->header_value = "Bearer realm=\"opsdb\"";
    }
    char url[300], target[sizeof req->path_arg];
    redact(req->url, url, sizeof url);
    redact(req->path_arg, target, sizeof target);
    log_warn("auth: %s %s from %s refused (%u): %s%s%s", req->method, url, peer, status_of(r),
             auth_result_name(r), req->principal.user[0] ? ", user " : "", req->principal.user);
    char action[300];
    snprintf(action, sizeof action, "%s %s", ri->method, ri->path);
    auth_audit(srv->deps.auth, &(struct auth_audit){.actor = req->principal.user,
                                                    .token_id = req->principal.token_id,
                                                    .action = action,
                                                    .target = target,
                                                    .peer = peer,
                                                    .outcome = "denied",
                                                    .status = (int)status_of(r),
                                                    .detail = auth_result_name(r)});
}

/* Whether origin ("scheme://host[:port]") is one of the comma-separated origins of list. */
static bool origin_listed(const char *list, const char *origin)
{
    size_t n = strlen(origin);
    for (const char *s = list; *s;) {
        s += strspn(s, " ");
        size_t len = strcspn(s, ",");
        size_t trimmed = len;
        while (trimmed && s[trimmed - 1] == ' ')
            trimmed--;
        if (trimmed == n && strncasecmp(s, origin, n) == 0)
            return true;
        s += len + (s[len] == ',');
    }
    return false;
}

/* Browsers send Origin with every request a page makes that is not a GET or HEAD; other clients
 * send none. A page from another origin must not change state here, even with auth off: a page
 * on the open web could otherwise write to (or silence the alerts of) a server on the visitor's
 * loopback through a simple cross-site POST, which needs no CORS approval. The server's own
 * origin is the one whose host[:port] is the request's Host. True when res holds the 403. */
static bool refuse_cross_origin(struct http_server *srv, struct request *req, struct response *res)
{
    if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0 ||
        strcmp(req->method, "OPTIONS") == 0)
        return false;
    const char *origin = request_header(req, "Origin");
    if (!origin)
        return false;
    const char *host = request_header(req, MHD_HTTP_HEADER_HOST);
    const char *sep = strstr(origin, "://");
    if ((sep && host && strcasecmp(sep + 3, host) == 0) ||
        origin_listed(srv->deps.cfg->allowed_origins, origin))
        return false;
    char msg[400], peer[INET6_ADDRSTRLEN + 16];
    snprintf(msg, sizeof msg,
             "a page of origin %.100s may not change state on this server (a cross-site "
             "request); list that origin in http.allowed_origins to allow it",
             origin);
    respond_error(res, 403, msg, NULL);
    peer_of(req, peer, sizeof peer);
    log_warn("auth: %s %s from %s refused (403): cross-site request from origin %.100s",
             req->method, route_info_at(req->route)->path, peer, origin);
    return true;
}

/* A token made with --tables calls a route that changes one of opsdb's state tables only when
 * that table is in its list. True when res holds the 403. */
static bool refuse_out_of_scope(struct request *req, const struct route_info *ri,
                                struct response *res)
{
    const char *writes = route_writes(req->route);
    if (!writes || auth_may_write_table(&req->principal, writes))
        return false;
    char msg[400];
    snprintf(msg, sizeof msg,
             "the token of user %s may write only the tables %.200s; %s %s changes %s",
             req->principal.user, req->principal.tables, ri->method, ri->path, writes);
    respond_error(res, 403, msg, NULL);
    return true;
}

void http_auth_run(struct http_server *srv, struct request *req, struct response *res)
{
    const struct route_info *ri = route_info_at(req->route);
    int need = auth_role_parse(ri->role);
    char peer[INET6_ADDRSTRLEN + 16];
    peer_of(req, peer, sizeof peer);
    if (need < 0) { /* a route without a known role is nobody's: refused, never served */
        log_error("route %s %s has no known role ('%s'): refused", ri->method, ri->path,
                  ri->role ? ri->role : "");
        respond_error(res, 500, "this route has no role: it is refused until it has one", NULL);
        return;
    }
    if (refuse_cross_origin(srv, req, res))
        return;
    if (!srv->deps.auth) {
        req->principal = (struct auth_principal){.role = AUTH_ADMIN};
    } else {
        enum auth_result r = check_request(srv, req, (enum auth_role)need);
        if (r != AUTH_OK) {
            refuse(srv, req, res, r, ri->role, peer);
            return;
        }
    }
    if (refuse_out_of_scope(req, ri, res))
        return;
    route_handler_at(req->route)(srv, req, res);
    if (!route_audited(req->route) || !srv->deps.auth)
        return;
    char action[300], target[sizeof req->path_arg];
    snprintf(action, sizeof action, "%s %s", ri->method, ri->path);
    redact(req->path_arg, target, sizeof target);
    auth_audit(srv->deps.auth, &(struct auth_audit){.actor = req->principal.user,
                                                    .token_id = req->principal.token_id,
                                                    .action = action,
                                                    .target = target,
                                                    .peer = peer,
                                                    .outcome = res->status < 400 ? "ok" : "failed",
                                                    .status = (int)res->status});
}

bool http_may_write(struct http_server *srv, struct request *req, struct response *res,
                    const struct table *t)
{
    (void)srv;
    char msg[400];
    const struct auth_principal *p = &req->principal;
    if (t->access == ACCESS_AUTH)
        snprintf(msg, sizeof msg,
                 "table %s is kept by opsdb itself (opsdb user, opsdb token, the audit log) and "
                 "is never written through ingestion",
                 t->name);
    else if (t->access == ACCESS_INTERNAL && p->role != AUTH_ADMIN)
        snprintf(msg, sizeof msg,
                 "table %s holds opsdb's own state: only admin tokens write it through this "
                 "route (clients write system_metrics, api_usage, error_logs, pipeline_status "
                 "and handler_metrics)",
                 t->name);
    else if (auth_may_write_table(p, t->name))
        return true;
    else if (p->role != AUTH_WRITER && p->role != AUTH_ADMIN)
        snprintf(msg, sizeof msg, "writing %s needs the role writer", t->name);
    else
        snprintf(msg, sizeof msg, "the token of user %s may write only the tables %.200s, not %s",
                 p->user, p->tables, t->name);
    respond_error(res, 403, msg, NULL);
    return false;
}

void http_auth_metrics(struct http_server *srv, struct buf *out)
{
    if (!srv->deps.auth)
        return;
    struct auth_stats st;
    auth_get_stats(srv->deps.auth, &st);
    buf_printf(out, "# HELP opsdb_auth_checks_total Token checks of requests by result.\n"
                    "# TYPE opsdb_auth_checks_total counter\n");
    for (int r = 0; r < AUTH_RESULTS; r++)
        buf_printf(out, "opsdb_auth_checks_total{result=\"%s\"} %llu\n",
                   auth_result_name((enum auth_result)r), (unsigned long long)st.results[r]);
    buf_printf(out,
               "# HELP opsdb_auth_tokens API tokens held by the server (revoked and expired "
               "ones too).\n# TYPE opsdb_auth_tokens gauge\nopsdb_auth_tokens %zu\n"
               "# HELP opsdb_audit_rows_total Audit rows written, and dropped (queue full or "
               "database failed).\n# TYPE opsdb_audit_rows_total counter\n"
               "opsdb_audit_rows_total{outcome=\"written\"} %llu\n"
               "opsdb_audit_rows_total{outcome=\"dropped\"} %llu\n",
               st.tokens, (unsigned long long)st.audit_rows_written,
               (unsigned long long)st.audit_rows_dropped);
    buf_printf(out, "# HELP opsdb_auth_logins_total Dashboard sign-ins (POST /api/v1/session) by "
                    "result.\n# TYPE opsdb_auth_logins_total counter\n");
    for (int r = 0; r < AUTH_RESULTS; r++)
        if (st.logins[r] || r == AUTH_OK || r == AUTH_BAD_LOGIN || r == AUTH_LIMITED)
            buf_printf(out, "opsdb_auth_logins_total{result=\"%s\"} %llu\n",
                       auth_result_name((enum auth_result)r), (unsigned long long)st.logins[r]);
    buf_printf(out,
               "# HELP opsdb_auth_sessions Dashboard sessions open now.\n"
               "# TYPE opsdb_auth_sessions gauge\nopsdb_auth_sessions %zu\n",
               st.sessions);
}

/* ---- GET/POST /api/v1/users, GET/POST /api/v1/tokens, DELETE /api/v1/tokens/{id} ---------- */

static struct auth_actor actor_of(struct request *req, char *peer, size_t size)
{
    peer_of(req, peer, size);
    return (struct auth_actor){req->principal.user[0] ? req->principal.user : "-",
                               req->principal.token_id, peer};
}

static void respond_result(struct response *res, int rc, struct store_result *r,
                           const struct err *e)
{
    if (rc == 0)
        query_write_json(r, NULL, &res->body);
    else
        respond_error(res, status_for(rc), e->msg, NULL);
    store_result_release(r);
}

void handle_users(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    struct store_result r;
    struct err e;
    respond_result(res, auth_user_list(srv->deps.store, &r, &e), &r, &e);
}

void handle_tokens(struct http_server *srv, struct request *req, struct response *res)
{
    struct store_result r;
    struct err e;
    respond_result(res, auth_token_list(srv->deps.store, request_arg(req, "user"), &r, &e), &r, &e);
}

json_t *http_body_object(struct request *req, struct response *res, const char *shape)
{
    json_error_t jerr;
    json_t *body = req->body.len ? json_loadb(req->body.data, req->body.len, 0, &jerr) : NULL;
    if (!json_is_object(body)) {
        char msg[300];
        snprintf(msg, sizeof msg, "the body must be a JSON object like %s", shape);
        respond_error(res, 400, msg, NULL);
        json_decref(body);
        return NULL;
    }
    return body;
}

void handle_user_create(struct http_server *srv, struct request *req, struct response *res)
{
    json_t *body = http_body_object(req, res, "{\"name\": \"ci\", \"role\": \"writer\"}");
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *role = json_string_value(json_object_get(body, "role"));
    json_t *password = json_object_get(body, "password");
    char peer[80];
    struct auth_actor by = actor_of(req, peer, sizeof peer);
    struct auth_target t = {srv->deps.store, srv->deps.writer};
    struct err e;
    if (!name || !role)
        respond_error(res, 400, "name and role (admin, writer or reader) are required", NULL);
    else if (password && !json_is_string(password))
        respond_error(res, 400, "password: expected a string (it is stored as an argon2id hash)",
                      NULL);
    else if (auth_user_add_with_password(&t, &by, name, role, json_string_value(password), &e) != 0)
        respond_error(res, status_for(e.code), e.msg, NULL);
    else {
        res->status = 201;
        buf_printf(&res->body, "{\"user\":\"%s\",\"role\":\"%s\"}", name, role);
    }
    json_decref(body);
}

/* "tables": "a,b" or ["a", "b"] into out; false when it is neither. */
static bool tables_member(json_t *body, char *out, size_t size)
{
    json_t *v = json_object_get(body, "tables");
    out[0] = '\0';
    if (!v || json_is_null(v))
        return true;
    if (json_is_string(v))
        return (size_t)snprintf(out, size, "%s", json_string_value(v)) < size;
    if (!json_is_array(v))
        return false;
    size_t i, used = 0;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item) || used >= size)
            return false;
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? "," : "",
                                 json_string_value(item));
    }
    return used < size;
}

void handle_token_create(struct http_server *srv, struct request *req, struct response *res)
{
    json_t *body = http_body_object(req, res, "{\"user\": \"ci\", \"expires\": \"30d\"}");
    if (!body)
        return;
    struct auth_token_spec spec = {.user = json_string_value(json_object_get(body, "user")),
                                   .description =
                                       json_string_value(json_object_get(body, "description"))};
    const char *expires = json_string_value(json_object_get(body, "expires"));
    char tables[1025], token[AUTH_TOKEN_SIZE], id[AUTH_TOKEN_ID_LEN + 1], peer[80];
    int64_t ms = 0;
    struct err e;
    if (!spec.user) {
        respond_error(res, 400, "user is required", NULL);
    } else if (expires && !time_parse_duration(expires, &ms)) {
        respond_error(res, 400, "expires: expected a duration like 30d, 12h or 1w", NULL);
    } else if (!tables_member(body, tables, sizeof tables)) {
        respond_error(res, 400, "tables: expected \"a,b\" or [\"a\", \"b\"]", NULL);
    } else {
        spec.expires_at_ms = ms ? time_now_ms() + ms : 0;
        spec.tables = tables;
        struct auth_actor by = actor_of(req, peer, sizeof peer);
        struct auth_target t = {srv->deps.store, srv->deps.writer};
        if (auth_token_create(&t, &by, &spec, token, id, &e) != 0) {
            respond_error(res, status_for(e.code), e.msg, NULL);
        } else {
            res->status = 201;
            buf_printf(&res->body, "{\"id\":\"%s\",\"token\":\"%s\",\"user\":", id, token);
            struct value v = {.s = spec.user, .len = (uint32_t)strlen(spec.user), .type = VAL_TEXT};
            query_json_value(&v, &res->body);
            buf_putc(&res->body, '}');
            sodium_memzero(token, sizeof token);
        }
    }
    json_decref(body);
}

void handle_token_revoke(struct http_server *srv, struct request *req, struct response *res)
{
    char peer[80];
    struct auth_actor by = actor_of(req, peer, sizeof peer);
    struct auth_target t = {srv->deps.store, srv->deps.writer};
    struct err e;
    if (auth_token_revoke(&t, &by, req->path_arg, &e) != 0)
        respond_error(res, status_for(e.code), e.msg, NULL);
    else /* the id only: the path may hold a whole token */
        buf_printf(&res->body, "{\"revoked\":\"%.*s\"}", AUTH_TOKEN_ID_LEN,
                   strncmp(req->path_arg, "opsdb_", 6) == 0 ? req->path_arg + 6 : req->path_arg);
}
