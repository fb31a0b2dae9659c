/* Private to auth/: rows of users, api_tokens and audit_log, and running a change. */
#ifndef OPSDB_AUTH_INT_H
#define OPSDB_AUTH_INT_H

#include "auth/auth.h"
#include "store/store.h"

/* A change: runs inside one write transaction opened by auth_run_change (reads see everything
 * committed before it, and no other process commits until it ends). */
typedef int (*auth_change_fn)(struct store *s, void *arg, struct err *e);
/* Runs fn in a write transaction on t's store: directly, or on the writer thread (writer_run)
 * when t->writer is set; commits when fn returns 0, else rolls back. notify: the writer's hooks
 * hear of it (n == 0), so the server's token cache loads again. */
int auth_run_change(const struct auth_target *t, auth_change_fn fn, void *arg, bool notify,
                    struct err *e);

/* Reads the row of state table name whose key is key into a new row of b (every column, in
 * schema order): 1 found, 0 none (no row added), or an error code. */
int auth_load_row(struct store *s, struct batch *b, const char *key, struct err *e);
/* Set one column of row (by name) to a copy of text (NULL: NULL) or to an integer. */
void auth_put_text(struct batch *b, struct value *row, const char *col, const char *text);
void auth_put_int(struct batch *b, struct value *row, const char *col, int64_t v);
/* Appends an audit row to b (a batch of audit_log). */
void auth_audit_row(struct batch *b, const struct auth_audit *a);

/* ---- the server's cache, for the sessions (cache.c) ------------------------------------- */

#define AUTH_PASSWORD_HASH_SIZE 257 /* users.password_hash holds up to 256 bytes */

struct auth_user_state {
    enum auth_role role;
    char password_hash[AUTH_PASSWORD_HASH_SIZE]; /* "": none */
};
/* User name as the cache holds it now (loaded again when stale): AUTH_OK, AUTH_DISABLED (out is
 * filled for both), AUTH_BAD_LOGIN (no such user) or AUTH_UNAVAILABLE. Any thread. */
enum auth_result auth_cache_user(struct auth *a, const char *name, struct auth_user_state *out);
/* Checks a presented token with no route in mind: AUTH_OK with who filled, or why not. */
enum auth_result auth_cache_token(struct auth *a, const char *token, struct auth_principal *who);
/* Whether the token of this id may be used now: AUTH_OK, AUTH_REVOKED (also when it is gone),
 * AUTH_EXPIRED, AUTH_DISABLED or AUTH_UNAVAILABLE. */
enum auth_result auth_cache_token_id(struct auth *a, const char *id);
/* Counts a result: of a request's check, or (login) of a session's opening. */
void auth_count_result(struct auth *a, enum auth_result r, bool login);

/* ---- the sessions and the login rate limit (session.c) ------------------------------------ */

struct auth_sessions;
int auth_sessions_new(struct auth_sessions **out, struct err *e);
void auth_sessions_free(struct auth_sessions **s);
size_t auth_sessions_count(struct auth_sessions *s);
struct auth_sessions *auth_sessions_of(struct auth *a);

#endif
