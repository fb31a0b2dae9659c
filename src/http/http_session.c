/*
 * Dashboard sessions over HTTP: POST /api/v1/session signs in with a password or a token and
 * answers with the session cookie and the CSRF token, GET tells a page who it is signed in as
 * (and its CSRF token again, after a reload), DELETE signs out. The routes are public: they read
 * the cookie themselves. Logins are audited and logged with the peer, never with a password or
 * a token; auth/session.c holds the sessions and the rate limit of failed logins.
 */
#include "auth/auth.h"
#include "http/http_int.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

static const char *session_cookie(struct request *req)
{
    return MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, AUTH_SESSION_COOKIE);
}

/* The Set-Cookie header: the session id for max_age_s seconds (0 and id "": removes it). The
 * cookie is never readable by scripts (HttpOnly), never sent with requests that other sites
 * start (SameSite=Strict), and only over HTTPS when the server speaks it (Secure). */
static void set_cookie(struct http_server *srv, struct request *req, struct response *res,
                       const char *id, int64_t max_age_s)
{
    snprintf(req->set_cookie, sizeof req->set_cookie,
             "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Strict%s", AUTH_SESSION_COOKIE, id,
             (long long)max_age_s, srv->tls ? "; Secure" : "");
    res->header_name = "Set-Cookie";
    res->header_value = req->set_cookie;
}

static void write_session(const struct auth_session *s, struct response *res)
{
    char expires[40];
    time_format_rfc3339(s->expires_at_ms, expires, sizeof expires);
    buf_printf(&res->body,
               "{\"signed_in\":true,\"user\":\"%s\",\"role\":\"%s\",\"csrf_token\":\"%s\","
               "\"expires_at\":\"%s\"}",
               s->user, auth_role_name(s->role), s->csrf, expires);
}

static void audit(struct http_server *srv, struct request *req, const char *action,
                  const char *user, const char *token_id, unsigned status, const char *detail)
{
    char peer[80];
    http_peer(req, true, peer, sizeof peer);
    auth_audit(srv->deps.auth, &(struct auth_audit){.actor = user,
                                                    .token_id = token_id,
                                                    .action = action,
                                                    .target = user,
                                                    .peer = peer,
                                                    .outcome = status < 400 ? "ok" : "denied",
                                                    .status = (int)status,
                                                    .detail = detail});
}

/* Reads {user, password} or {token} into l; false after answering 400. */
static bool login_of(struct response *res, json_t *body, struct auth_login *l)
{
    json_t *user = json_object_get(body, "user"), *password = json_object_get(body, "password");
    json_t *token = json_object_get(body, "token");
    const char *why = NULL;
    if (token && (user || password))
        why = "send either user and password, or token";
    else if (token && !json_is_string(token))
        why = "token: expected a string";
    else if (!token && (!json_is_string(user) || !json_is_string(password)))
        why = "user and password (strings) or token are required";
    else if (!token && !auth_user_name_valid(json_string_value(user)))
        why = "user: 1 to 64 letters, digits, '.', '_', '@' or '-'";
    else if (!token && json_string_length(password) > AUTH_PASSWORD_MAX)
        why = "password: longer than any password";
    if (why) {
        respond_error(res, 400, why, NULL);
        return false;
    }
    l->user = json_string_value(user);
    l->password = json_string_value(password);
    l->token = json_string_value(token);
    return true;
}

static void refuse_login(struct http_server *srv, struct request *req, struct response *res,
                         const struct auth_login *l, enum auth_result r, const char *why)
{
    unsigned status = r == AUTH_LIMITED ? 429 : r == AUTH_UNAVAILABLE ? 503 : 401;
    char msg[300];
    if (r == AUTH_LIMITED)
        snprintf(msg, sizeof msg, "too many failed logins: wait a second and retry");
    else if (r == AUTH_UNAVAILABLE)
        snprintf(msg, sizeof msg, "the users could not be read from the database: retry");
    else if (l->token)
        snprintf(msg, sizeof msg, "%s: the token cannot open a session", auth_result_name(r));
    else /* one answer: a client cannot tell which names exist or have a password */
        snprintf(msg, sizeof msg, "wrong user name or password (or the user is disabled)");
    respond_error(res, status, msg, NULL);
    if (r == AUTH_LIMITED) {
        res->header_name = "Retry-After";
        res->header_value = "1";
    }
    char peer[80];
    http_peer(req, true, peer, sizeof peer);
    log_warn("auth: login from %s refused (%u): %s", peer, status, why);
    audit(srv, req, "session.create", l->token ? "-" : l->user, NULL, status, why);
}

void handle_session_create(struct http_server *srv, struct request *req, struct response *res)
{
    if (!srv->deps.auth) {
        respond_error(res, 503, "sessions are not available on this server", NULL);
        return;
    }
    json_t *body = http_body_object(req, res,
                                    "{\"user\": \"alice\", \"password\": \"...\"} or "
                                    "{\"token\": \"opsdb_...\"}");
    struct auth_login l = {0};
    if (!body || !login_of(res, body, &l)) {
        json_decref(body);
        return;
    }
    char address[64], why[200];
    http_peer(req, false, address, sizeof address);
    l.peer_address = address;
    struct auth_session s;
    enum auth_result r = auth_session_open(srv->deps.auth, &l, &s, why, sizeof why);
    if (r != AUTH_OK) {
        refuse_login(srv, req, res, &l, r, why);
    } else {
        write_session(&s, res);
        set_cookie(srv, req, res, s.id, (s.expires_at_ms - time_now_ms() + 999) / 1000);
        audit(srv, req, "session.create", s.user, NULL, 200, l.token ? "with a token" : NULL);
    }
    sodium_memzero(&s, sizeof s);
    json_decref(body); /* jansson does not clear the password it held */
}

void handle_session_get(struct http_server *srv, struct request *req, struct response *res)
{
    struct auth_session s;
    enum auth_result r = srv->deps.auth ? auth_session_get(srv->deps.auth, session_cookie(req), &s)
                                        : AUTH_NO_SESSION;
    if (r == AUTH_OK)
        write_session(&s, res);
    else if (r == AUTH_UNAVAILABLE)
        respond_error(res, 503, "the users could not be read from the database: retry", NULL);
    else /* a page asks before it shows the sign-in form: not an error */
        buf_printf(&res->body, "{\"signed_in\":false}");
    sodium_memzero(&s, sizeof s);
}

void handle_session_delete(struct http_server *srv, struct request *req, struct response *res)
{
    struct auth_principal who = {0};
    enum auth_result r = srv->deps.auth
                             ? auth_session_close(srv->deps.auth, session_cookie(req),
                                                  request_header(req, AUTH_CSRF_HEADER), &who)
                             : AUTH_NO_SESSION;
    if (r == AUTH_CSRF) {
        respond_error(res, 403, "signing out needs the session's CSRF token in " AUTH_CSRF_HEADER,
                      NULL);
        audit(srv, req, "session.end", who.user, who.token_id, 403, auth_result_name(r));
        return;
    }
    set_cookie(srv, req, res, "", 0);
    if (r != AUTH_OK) { /* signing out twice is not an error */
        buf_printf(&res->body, "{\"ended\":false}");
        return;
    }
    buf_printf(&res->body, "{\"ended\":true,\"user\":\"%s\"}", who.user);
    audit(srv, req, "session.end", who.user, who.token_id, 200, NULL);
}
