/*
 * auth: who may call the HTTP API. Users with a role (admin, writer, reader), API tokens that act
 * for a user (shown once, kept as a hash), the server's check of a token on every request
 * against an in-memory cache of the tokens, and the audit log of admin actions and refused
 * requests. Used by http/ (the check, the token routes) and cli/ (`opsdb user`, `opsdb token`,
 * `opsdb init`); docs/security.md is the user's side of it.
 *
 * A token reads opsdb_<id>_<secret>: id (12 hex digits) finds its row in api_tokens, secret (64
 * hex digits, 32 random bytes) is checked against the row's BLAKE2b-256 hash with a
 * constant-time compare. Neither the token nor its secret is ever stored, logged or put in an
 * error message; an id alone grants nothing.
 */
#ifndef OPSDB_AUTH_H
#define OPSDB_AUTH_H

#include "core/core.h"

struct store;
struct store_result;
struct writer;

/* ---- roles ---------------------------------------------------------------------------------- */

/* What a route needs and what a user has. admin may do everything; writer and reader are
 * separate (a writer token cannot read data, a reader token cannot write it). */
enum auth_role { AUTH_PUBLIC, AUTH_READER, AUTH_WRITER, AUTH_ADMIN };

/* The role named name ("public", "reader", "writer", "admin"), or -1. */
int auth_role_parse(const char *name);
const char *auth_role_name(enum auth_role r);
/* Whether a caller of role have may call a route that needs need. */
bool auth_role_allows(enum auth_role have, enum auth_role need);
/* The tables the read-only SQL route hides from a caller of role r (NULL-terminated; NULL:
 * none): users, api_tokens, audit_log and dbstat from all but admin. */
const char *const *auth_hidden_tables(enum auth_role r);

/* ---- the mode of a server ------------------------------------------------------------------- */

enum auth_mode { AUTH_MODE_OFF, AUTH_MODE_REQUIRED };

/* Whether listen (host:port, as the listen option) is a loopback address: 127.0.0.0/8, ::1 or
 * localhost. */
bool auth_listen_is_loopback(const char *listen);
/* The mode a server listening on listen runs in, from auth.mode (auto, required or off): auto is
 * off on a loopback address and required on any other; off on another address needs insecure
 * (`opsdb serve --insecure`). E_INVALID with what to do in e otherwise. */
int auth_mode_resolve(const char *configured, const char *listen, bool insecure,
                      enum auth_mode *out, struct err *e);

/* ---- tokens --------------------------------------------------------------------------------- */

#define AUTH_TOKEN_ID_LEN 12
#define AUTH_TOKEN_SECRET_LEN 64
/* "opsdb_" id "_" secret, and its NUL */
#define AUTH_TOKEN_SIZE (6 + AUTH_TOKEN_ID_LEN + 1 + AUTH_TOKEN_SECRET_LEN + 1)

/* Splits a presented token into its id and secret; false when it is not shaped like one. */
bool auth_token_split(const char *token, char id[AUTH_TOKEN_ID_LEN + 1],
                      char secret[AUTH_TOKEN_SECRET_LEN + 1]);
/* The hex BLAKE2b-256 hash of a secret, as api_tokens.secret_hash keeps it. */
void auth_secret_hash(const char *secret, char out[65]);

/* Who made a request: filled by the server for every request (see auth_check). */
struct auth_principal {
    bool authenticated; /* a valid token came with the request */
    enum auth_role role;
    char user[65];                        /* "" when not authenticated */
    char token_id[AUTH_TOKEN_ID_LEN + 1]; /* "" when not authenticated */
    char tables[1025];                    /* tables a writer token may write; "" = any */
    bool session; /* authenticated by a session cookie (auth_check_session), not a token */
};

/* Whether p may write rows of table: its role allows writing, and a token with tables names
 * it. */
bool auth_may_write_table(const struct auth_principal *p, const char *table);

/* ---- users, tokens and the audit log in the database ---------------------------------------
 * Changes are made where target says: a CLI command writes to the store itself (writer NULL),
 * the server through its writer (on the writer thread). Every change is one transaction that
 * reads the current row, writes the new one and the audit row, so a change made by another
 * process at the same time is never undone. */
struct auth_target {
    struct store *store;
    struct writer *writer; /* NULL: write to the store directly (single-threaded CLI) */
};

/* Who is acting, for the audit log: actor a user name or "cli:<system user>", token_id the
 * token used ("" or NULL: none), peer the client address or "cli". */
struct auth_actor {
    const char *actor;
    const char *token_id;
    const char *peer;
};

/* Fills out with "cli:<system user>", for changes made by CLI commands. */
void auth_cli_actor(char *out, size_t size);

/* Adds a user. E_INVALID for a bad name or role, E_CONFLICT when the name is taken. */
int auth_user_add(const struct auth_target *t, const struct auth_actor *by, const char *name,
                  const char *role, struct err *e);
/* Whether name is a valid user name: 1 to 64 letters, digits, '.', '_', '@' or '-'. */
bool auth_user_name_valid(const char *name);

/* ---- passwords -------------------------------------------------------------------------------
 * A user may have a password, to open a dashboard session (POST /api/v1/session); API clients
 * use tokens. Only its argon2id hash (libsodium's crypto_pwhash_str: salt and costs inside) is
 * stored, in users.password_hash; the password itself is never stored, logged or echoed. */
#define AUTH_PASSWORD_MIN 8    /* bytes */
#define AUTH_PASSWORD_MAX 1024 /* bytes */
/* Adds a user as auth_user_add, with password (NULL: none) hashed in the same change.
 * E_INVALID also for a password outside AUTH_PASSWORD_MIN..AUTH_PASSWORD_MAX bytes; E_NOMEM
 * when hashing runs out of memory (it takes 64 MiB for a moment). */
int auth_user_add_with_password(const struct auth_target *t, const struct auth_actor *by,
                                const char *name, const char *role, const char *password,
                                struct err *e);
/* Sets the password of user name, or removes it (password NULL: the user signs in with tokens
 * only). Sessions opened with the old password end. E_NOTFOUND, E_INVALID, E_NOMEM. */
int auth_user_set_password(const struct auth_target *t, const struct auth_actor *by,
                           const char *name, const char *password, struct err *e);

/* Disables a user (every token of theirs is refused) or enables it again. E_NOTFOUND. */
int auth_user_set_disabled(const struct auth_target *t, const struct auth_actor *by,
                           const char *name, bool disabled, struct err *e);
/* The users (name, role, disabled, password: 1 when it has one, created_at, created_by, tokens:
 * active ones; never a password hash) into res
 * (release with store_result_release). */
int auth_user_list(struct store *s, struct store_result *res, struct err *e);
/* Whether an enabled admin user exists. */
int auth_admin_exists(struct store *s, bool *exists, struct err *e);

struct auth_token_spec {
    const char *user;
    int64_t expires_at_ms;   /* 0: never */
    const char *tables;      /* comma-separated client tables, "" or NULL: any */
    const char *description; /* may be NULL */
    const char *given;       /* NULL: a new random token; else this one (opsdb_<id>_<secret>,
                                from automation: OPSDB_ADMIN_TOKEN) */
};
/* Creates a token for spec->user and writes it (the only time it exists outside the client)
 * into token (AUTH_TOKEN_SIZE bytes); its id goes to id. E_NOTFOUND for an unknown user,
 * E_INVALID for a table that clients do not write, tables on a token of a reader, an expiry in
 * the past, or a given token that is not shaped like one; E_CONFLICT when its id is taken. */
int auth_token_create(const struct auth_target *t, const struct auth_actor *by,
                      const struct auth_token_spec *spec, char token[AUTH_TOKEN_SIZE],
                      char id[AUTH_TOKEN_ID_LEN + 1], struct err *e);
/* Revokes the token of this id (a whole token is taken too; only its id is read). E_NOTFOUND;
 * revoking a revoked token changes nothing and is not an error. */
int auth_token_revoke(const struct auth_target *t, const struct auth_actor *by, const char *id,
                      struct err *e);
/* The tokens (id, user, role, tables, description, state: active, expired, revoked or
 * disabled, created_at, expires_at, revoked_at, last_used_at) of user (NULL: all), never a
 * secret or its hash, into res. */
int auth_token_list(struct store *s, const char *user, struct store_result *res, struct err *e);

/* One audit row (audit_log); NULL strings are empty. */
struct auth_audit {
    int64_t ts_ms;
    const char *actor, *token_id, *action, *target, *peer;
    const char *outcome; /* ok, denied or failed */
    int status;          /* HTTP status, 0: none */
    const char *detail;
};

/* ---- the server's check ---------------------------------------------------------------------
 * The tokens and users are held in memory and loaded again once the tables changed (the
 * writer's hook: a change by this server or, within a second, by another process such as
 * `opsdb token revoke`). */
struct auth;

/* Loads the tokens from s. w (the server's writer) writes the audit rows and the tokens' last
 * use, batched, from a thread of its own. Free with auth_free before the writer. */
int auth_new(struct auth **out, struct store *s, struct writer *w, enum auth_mode mode,
             struct err *e);
/* Writes what is pending (audit rows, last uses) and frees; *a becomes NULL. */
void auth_free(struct auth **a);
enum auth_mode auth_mode_of(const struct auth *a);
/* The writer hook (writer_on_commit with a as arg): marks the cache stale when users or
 * api_tokens were written, or another process wrote (n == 0). */
void auth_on_commit(void *arg, const struct batch *const *batches, size_t n);

enum auth_result {
    AUTH_OK,
    AUTH_NO_TOKEN,    /* 401: none came */
    AUTH_MALFORMED,   /* 401: not shaped like a token */
    AUTH_UNKNOWN,     /* 401: no such token, or the secret does not match */
    AUTH_EXPIRED,     /* 401 */
    AUTH_REVOKED,     /* 401 */
    AUTH_DISABLED,    /* 401: its user is disabled or gone */
    AUTH_FORBIDDEN,   /* 403: valid, but the role does not allow the route */
    AUTH_UNAVAILABLE, /* 503: the tokens could not be loaded */
    AUTH_NO_SESSION,  /* 401: the session cookie names no open session (ended, expired) */
    AUTH_CSRF,        /* 403: a session's state-changing request without its CSRF token */
    AUTH_LIMITED,     /* 429: too many failed logins of this user or from this address */
    AUTH_BAD_LOGIN,   /* 401: wrong user name, password or token at login */
};
#define AUTH_RESULTS 13
/* "no token", "unknown token", "expired token", ... for messages, logs and metrics labels. */
const char *auth_result_name(enum auth_result r);

/* Checks token (NULL: none came) for a route that needs role need and fills *who (always: with
 * the token's user and role when the token is valid, even when the role falls short). With the
 * mode off every request passes, as an admin, and a token is not looked at. Any thread. */
enum auth_result auth_check(struct auth *a, const char *token, enum auth_role need,
                            struct auth_principal *who);
/* Queues an audit row; it is written within about a second. Any thread; never blocks on the
 * database. Past 10000 queued rows new ones are dropped and counted. */
void auth_audit(struct auth *a, const struct auth_audit *row);

/* ---- dashboard sessions ----------------------------------------------------------------------
 * A browser opens a session with a password or a token (POST /api/v1/session) and gets a random
 * session id in a cookie (HttpOnly, SameSite=Strict) and a CSRF token in the answer's body. The
 * server keeps only a hash of the id, in memory: sessions end with the server, at their expiry,
 * at logout, and as soon as their user is disabled or gone, their user's password changed, or
 * the token they were opened with is revoked or expired. A session acts with its user's role as
 * it is now. A request authenticated by the cookie must send the CSRF token in X-CSRF-Token on
 * every state-changing method (POST, PUT, PATCH, DELETE): a page of another site can make the
 * browser send the cookie, but it cannot read the token. */
#define AUTH_SESSION_COOKIE "opsdb_session"
#define AUTH_CSRF_HEADER "X-CSRF-Token"
#define AUTH_SESSION_ID_LEN 64 /* hex digits: 32 random bytes */
#define AUTH_SESSIONS_MAX 10000
/* Failed logins: this many at once per user name and per client address, then one a second. */
#define AUTH_LOGIN_BURST 5

/* Sessions last ttl_ms from their opening (auth.session_ttl); the default is 12 hours. */
void auth_set_session_ttl(struct auth *a, int64_t ttl_ms);

struct auth_login {
    const char *user, *password; /* a password login, or */
    const char *token;           /* a token login (user and password NULL) */
    const char *peer_address;    /* the client's address without its port: rate limits */
};

/* An open session: what the client is told. */
struct auth_session {
    char id[AUTH_SESSION_ID_LEN + 1];   /* for the cookie; only its hash is kept */
    char csrf[AUTH_SESSION_ID_LEN + 1]; /* for X-CSRF-Token */
    char user[65];
    enum auth_role role;
    int64_t expires_at_ms;
};

/* Opens a session for l: AUTH_OK and *out filled; AUTH_BAD_LOGIN (wrong user name or password,
 * or a user without a password: one answer for all, so that names cannot be probed), the token
 * results of auth_check (unknown, expired, revoked, disabled), AUTH_LIMITED (too many failed
 * logins of l->user or from l->peer_address: nothing was checked) or AUTH_UNAVAILABLE. why
 * (why_size bytes) gets the reason for the audit log and the server's log, never for the
 * client. Verifying a password takes a tenth of a second on purpose. Any thread. */
enum auth_result auth_session_open(struct auth *a, const struct auth_login *l,
                                   struct auth_session *out, char *why, size_t why_size);
/* Checks the session of id (the cookie) for a route that needs role need, as auth_check does
 * for a token, and fills *who (who->session set). state_changing: the request's method changes
 * state, so csrf (the X-CSRF-Token header, NULL: none came) must be the session's CSRF token,
 * else AUTH_CSRF. AUTH_NO_SESSION for an unknown or expired id, AUTH_DISABLED when its user was
 * disabled, AUTH_REVOKED / AUTH_EXPIRED when the token it was opened with is; such a session is
 * ended. With the mode off every request passes, as an admin. Any thread. */
enum auth_result auth_check_session(struct auth *a, const char *id, const char *csrf,
                                    bool state_changing, enum auth_role need,
                                    struct auth_principal *who);
/* The session of id into *out (its id left empty: the client has it), as auth_check_session
 * checks it (AUTH_OK or why it is not open). */
enum auth_result auth_session_get(struct auth *a, const char *id, struct auth_session *out);
/* Ends the session of id (logout); csrf must be its CSRF token. AUTH_OK (who names its user),
 * AUTH_NO_SESSION or AUTH_CSRF. */
enum auth_result auth_session_close(struct auth *a, const char *id, const char *csrf,
                                    struct auth_principal *who);

struct auth_stats {
    uint64_t results[AUTH_RESULTS]; /* checks by result */
    uint64_t audit_rows_written, audit_rows_dropped;
    uint64_t cache_loads;
    size_t tokens;                 /* in the cache now */
    uint64_t logins[AUTH_RESULTS]; /* session openings by result */
    size_t sessions;               /* open now */
};
void auth_get_stats(struct auth *a, struct auth_stats *out);

#endif
