/*
 * Users and tokens in the database: adding, disabling, creating, revoking and listing them, each
 * change in one transaction with its audit row. The CLI writes to the store itself; the server
 * runs the same change on its writer thread, so the two never overwrite each other's rows.
 */
#include "auth/auth_int.h"
#include "ingest/ingest.h"

#include <assert.h>
#include <pwd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- running a change ---------------------------------------------------------------------- */

static int in_transaction(struct store *s, auth_change_fn fn, void *arg, struct err *e)
{
    int rc = store_write_begin(s, e);
    if (rc)
        return rc;
    if ((rc = fn(s, arg, e)) != 0) {
        store_write_rollback(s);
        return rc;
    }
    return store_write_commit(s, e);
}

struct task {
    auth_change_fn fn;
    void *arg;
    bool notify;
};

static int writer_task(struct store *s, void *arg, bool *answers_changed, struct err *e)
{
    struct task *t = arg;
    int rc = in_transaction(s, t->fn, t->arg, e);
    *answers_changed = rc == 0 && t->notify; /* the hooks hear of it: the cache loads again */
    return rc;
}

int auth_run_change(const struct auth_target *t, auth_change_fn fn, void *arg, bool notify,
                    struct err *e)
{
    if (!t->writer)
        return in_transaction(t->store, fn, arg, e);
    struct task task = {fn, arg, notify};
    return writer_run(t->writer, writer_task, &task, e);
}

/* ---- rows ------------------------------------------------------------------------------------ */

int auth_load_row(struct store *s, struct batch *b, const char *key, struct err *e)
{
    const struct table *t = b->table;
    struct buf sql;
    buf_init(&sql, 4096);
    buf_printf(&sql, "SELECT ");
    for (size_t i = 0; i < t->ncolumns; i++)
        buf_printf(&sql, "%s\"%s\"", i ? ", " : "", t->columns[i].name);
    buf_printf(&sql, " FROM %s WHERE \"%s\" = :key", t->name, t->key_column);
    struct store_param p = {.name = "key", .is_text = true, .text = key};
    struct store_query q = {.sql = sql.data, .params = &p, .nparams = 1, .max_rows = 2};
    struct store_result res;
    struct store_reader *r = store_reader_get(s);
    int rc = store_reader_query(r, &q, &res, e);
    store_reader_put(s, r);
    buf_release(&sql);
    if (rc == 0 && res.nrows == 1) {
        struct value *row = batch_add_row(b);
        for (size_t i = 0; i < t->ncolumns; i++) {
            row[i] = res.values[i];
            if (row[i].type == VAL_TEXT)
                row[i].s = arena_strndup(&b->arena, row[i].s, row[i].len);
        }
        rc = 1;
    }
    store_result_release(&res);
    return rc;
}

void auth_put_text(struct batch *b, struct value *row, const char *col, const char *text)
{
    int i = schema_column(b->table, col);
    assert(i >= 0);
    if (!text) {
        row[i] = (struct value){.type = VAL_NULL};
        return;
    }
    size_t len = strlen(text);
    row[i] = (struct value){
        .s = arena_strndup(&b->arena, text, len), .len = (uint32_t)len, .type = VAL_TEXT};
}

void auth_put_int(struct batch *b, struct value *row, const char *col, int64_t v)
{
    (void)b;
    int i = schema_column(b->table, col);
    assert(i >= 0);
    row[i] = (struct value){.i = v, .type = VAL_INT};
}

void auth_audit_row(struct batch *b, const struct auth_audit *a)
{
    struct value *row = batch_add_row(b);
    auth_put_int(b, row, "ts", a->ts_ms ? a->ts_ms : time_now_ms());
    auth_put_text(b, row, "actor", a->actor && *a->actor ? a->actor : "-");
    auth_put_text(b, row, "token_id", a->token_id && *a->token_id ? a->token_id : NULL);
    auth_put_text(b, row, "action", a->action);
    auth_put_text(b, row, "target", a->target && *a->target ? a->target : NULL);
    auth_put_text(b, row, "peer", a->peer && *a->peer ? a->peer : NULL);
    auth_put_text(b, row, "outcome", a->outcome ? a->outcome : "ok");
    if (a->status)
        auth_put_int(b, row, "status", a->status);
    auth_put_text(b, row, "detail", a->detail && *a->detail ? a->detail : NULL);
}

/* Writes the changed row of state and its audit row. */
static int write_with_audit(struct store *s, struct batch *state, const struct auth_actor *by,
                            const char *action, const char *target, struct err *e)
{
    int rc = store_write_batch(s, state, e);
    if (rc)
        return rc;
    struct batch audit;
    batch_init(&audit, schema_table("audit_log"));
    auth_audit_row(&audit, &(struct auth_audit){.actor = by->actor,
                                                .token_id = by->token_id,
                                                .action = action,
                                                .target = target,
                                                .peer = by->peer,
                                                .outcome = "ok"});
    rc = store_write_batch(s, &audit, e);
    batch_release(&audit);
    return rc;
}

void auth_cli_actor(char *out, size_t size)
{
    struct passwd pw, *found = NULL;
    char scratch[1024];
    if (getpwuid_r(getuid(), &pw, scratch, sizeof scratch, &found) == 0 && found)
        snprintf(out, size, "cli:%s", found->pw_name);
    else
        snprintf(out, size, "cli:uid %u", (unsigned)getuid());
}

/* ---- users ----------------------------------------------------------------------------------- */

bool auth_user_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == '-'))
            return false;
    }
    return true;
}

struct user_change {
    const struct auth_actor *by;
    const char *name, *role;
    bool add, disabled;
    bool set_password;         /* a password change: only password_hash is written */
    const char *password_hash; /* NULL: none */
};

/* The audit action of a change. */
static const char *user_action(const struct user_change *c)
{
    if (c->set_password)
        return c->password_hash ? "user.passwd" : "user.passwd.remove";
    return c->add ? "user.add" : c->disabled ? "user.disable" : "user.enable";
}

static int change_user(struct store *s, void *arg, struct err *e)
{
    struct user_change *c = arg;
    struct batch b;
    batch_init(&b, schema_table("users"));
    int rc = auth_load_row(s, &b, c->name, e);
    int64_t now = time_now_ms();
    if (rc < 0)
        goto out;
    if (c->add && rc == 1) {
        rc = err_set(e, E_CONFLICT, "user '%s' exists already (opsdb user list)", c->name);
        goto out;
    }
    if (!c->add && rc == 0) {
        rc = err_set(e, E_NOTFOUND, "no user '%s' (opsdb user list shows them)", c->name);
        goto out;
    }
    struct value *row = c->add ? batch_add_row(&b) : batch_row(&b, 0);
    auth_put_int(&b, row, "ts", now);
    if (c->add) {
        auth_put_text(&b, row, "name", c->name);
        auth_put_text(&b, row, "role", c->role);
        auth_put_int(&b, row, "created_at", now);
        auth_put_text(&b, row, "created_by", c->by->actor);
    }
    if (c->add || c->set_password)
        auth_put_text(&b, row, "password_hash", c->password_hash);
    if (!c->set_password)
        auth_put_int(&b, row, "disabled", c->disabled);
    rc = write_with_audit(s, &b, c->by, user_action(c), c->name, e);
out:
    batch_release(&b);
    return rc;
}

/* The argon2id hash of password into out (crypto_pwhash_STRBYTES). The interactive costs (64
 * MiB, 2 passes: about a tenth of a second) bound what a login costs the server; the rate limit
 * of failed logins bounds how many a client may try. */
static int hash_password(const char *password, char out[crypto_pwhash_STRBYTES], struct err *e)
{
    size_t len = strlen(password);
    if (len < AUTH_PASSWORD_MIN || len > AUTH_PASSWORD_MAX)
        return err_set(e, E_INVALID, "a password has %d to %d bytes; this one has %zu",
                       AUTH_PASSWORD_MIN, AUTH_PASSWORD_MAX, len);
    if (sodium_init() < 0 ||
        crypto_pwhash_str_alg(out, password, len, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return err_set(e, E_NOMEM, "hashing the password failed: out of memory (it needs %zu MiB)",
                       (size_t)crypto_pwhash_MEMLIMIT_INTERACTIVE >> 20);
    return 0;
}

int auth_user_add(const struct auth_target *t, const struct auth_actor *by, const char *name,
                  const char *role, struct err *e)
{
    return auth_user_add_with_password(t, by, name, role, NULL, e);
}

int auth_user_set_password(const struct auth_target *t, const struct auth_actor *by,
                           const char *name, const char *password, struct err *e)
{
    char hash[crypto_pwhash_STRBYTES];
    int rc = password ? hash_password(password, hash, e) : 0;
    if (rc)
        return rc;
    struct user_change c = {
        .by = by, .name = name, .set_password = true, .password_hash = password ? hash : NULL};
    rc = auth_run_change(t, change_user, &c, true, e);
    sodium_memzero(hash, sizeof hash);
    return rc;
}

int auth_user_add_with_password(const struct auth_target *t, const struct auth_actor *by,
                                const char *name, const char *role, const char *password,
                                struct err *e)
{
    if (!auth_user_name_valid(name))
        return err_set(e, E_INVALID,
                       "'%.80s' is not a user name: 1 to 64 letters, digits, '.', '_', '@' or '-'",
                       name);
    int r = auth_role_parse(role);
    if (r != AUTH_ADMIN && r != AUTH_WRITER && r != AUTH_READER)
        return err_set(e, E_INVALID, "role '%.40s' is not one of admin, writer, reader", role);
    char hash[crypto_pwhash_STRBYTES];
    int rc = password ? hash_password(password, hash, e) : 0;
    if (rc)
        return rc;
    struct user_change c = {by, name, role, true, false, false, password ? hash : NULL};
    rc = auth_run_change(t, change_user, &c, true, e);
    sodium_memzero(hash, sizeof hash);
    return rc;
}

int auth_user_set_disabled(const struct auth_target *t, const struct auth_actor *by,
                           const char *name, bool disabled, struct err *e)
{
    struct user_change c = {.by = by, .name = name, .disabled = disabled};
    return auth_run_change(t, change_user, &c, true, e);
}

static int read_rows(struct store *s, const char *sql, const struct store_param *p, size_t np,
                     struct store_result *res, struct err *e)
{
    struct store_query q = {.sql = sql, .params = p, .nparams = np};
    struct store_reader *r = store_reader_get(s);
    int rc = store_reader_query(r, &q, res, e);
    store_reader_put(s, r);
    return rc;
}

#define RFC3339(col) "strftime('%Y-%m-%dT%H:%M:%SZ', " col " / 1000, 'unixepoch')"

int auth_user_list(struct store *s, struct store_result *res, struct err *e)
{
    struct store_param now = {.name = "now", .number = (double)time_now_ms()};
    return read_rows(
        s,
        "SELECT u.name, u.role, u.disabled, u.password_hash IS NOT NULL AS password, " RFC3339(
            "u.created_at") " AS "
                            "created_at, u.created_by, (SELECT count(*) FROM api_tokens t WHERE "
                            "t.user = u.name AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR "
                            "t.expires_at > :now)) AS tokens FROM users u ORDER BY u.name",
        &now, 1, res, e);
}

int auth_admin_exists(struct store *s, bool *exists, struct err *e)
{
    struct store_result res;
    int rc = read_rows(s, "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled", NULL,
                       0, &res, e);
    *exists = rc == 0 && res.nrows == 1 && res.values[0].type == VAL_INT && res.values[0].i > 0;
    store_result_release(&res);
    return rc;
}

/* ---- tokens ---------------------------------------------------------------------------------- */

/* The state tables a token may be limited to besides the client tables: those that writer
 * routes change (acknowledgements, silences, job pings; the route table says which). */
static const char *const SCOPED_STATE_TABLES[] = {"alert_history", "silences", "job_runs", NULL};

static bool scopable(const struct table *t)
{
    if (!t)
        return false;
    if (t->access == ACCESS_DATA)
        return true;
    for (size_t i = 0; SCOPED_STATE_TABLES[i]; i++)
        if (strcmp(t->name, SCOPED_STATE_TABLES[i]) == 0)
            return true;
    return false;
}

/* Checks a --tables list: client tables (or the state tables writer routes change),
 * comma-separated, no blanks. */
static int check_tables(const char *tables, struct err *e)
{
    for (const char *s = tables; *s;) {
        size_t len = strcspn(s, ",");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), s);
        const struct table *t = schema_table(name);
        if (!scopable(t)) {
            char list[256];
            size_t n, used = 0;
            const struct table *all = schema_tables(&n);
            list[0] = '\0';
            for (size_t i = 0; i < n; i++)
                if (scopable(&all[i]) && used < sizeof list)
                    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s",
                                             used ? ", " : "", all[i].name);
            return err_set(e, E_INVALID,
                           "--tables: '%s' is not a table a token can be limited to (%s)", name,
                           list);
        }
        s += len + (s[len] == ',');
    }
    return 0;
}

struct token_change {
    const struct auth_actor *by;
    const struct auth_token_spec *spec;
    const char *id; /* revoke: the token's id */
    char *id_out;   /* create: the new token's id and the token */
    char *token;
};

/* The id and secret of the given token (checked by the caller), or new random ones. */
static void new_secret(const char *given, char id[AUTH_TOKEN_ID_LEN + 1],
                       char secret[AUTH_TOKEN_SECRET_LEN + 1])
{
    if (given && auth_token_split(given, id, secret))
        return;
    unsigned char id_bytes[AUTH_TOKEN_ID_LEN / 2], secret_bytes[AUTH_TOKEN_SECRET_LEN / 2];
    randombytes_buf(id_bytes, sizeof id_bytes);
    randombytes_buf(secret_bytes, sizeof secret_bytes);
    sodium_bin2hex(id, AUTH_TOKEN_ID_LEN + 1, id_bytes, sizeof id_bytes);
    sodium_bin2hex(secret, AUTH_TOKEN_SECRET_LEN + 1, secret_bytes, sizeof secret_bytes);
    sodium_memzero(secret_bytes, sizeof secret_bytes);
}

static int create_token(struct store *s, void *arg, struct err *e)
{
    struct token_change *c = arg;
    struct batch users, tokens;
    batch_init(&users, schema_table("users"));
    batch_init(&tokens, schema_table("api_tokens"));
    int rc = auth_load_row(s, &users, c->spec->user, e);
    if (rc == 0)
        rc = err_set(e, E_NOTFOUND, "no user '%.64s' (add one with opsdb user add NAME --role R)",
                     c->spec->user);
    if (rc < 0)
        goto out;
    struct value *u = batch_row(&users, 0);
    const struct value *role = &u[schema_column(users.table, "role")];
    const struct value *disabled = &u[schema_column(users.table, "disabled")];
    if (disabled->type == VAL_INT && disabled->i) {
        rc = err_set(e, E_INVALID, "user '%s' is disabled (opsdb user enable %s)", c->spec->user,
                     c->spec->user);
        goto out;
    }
    const char *tables = c->spec->tables ? c->spec->tables : "";
    if (*tables && role->type == VAL_TEXT && role->len == 6 && memcmp(role->s, "reader", 6) == 0) {
        rc = err_set(e, E_INVALID, "--tables limits what a token writes, and user '%s' is a reader",
                     c->spec->user);
        goto out;
    }
    char id[AUTH_TOKEN_ID_LEN + 1], secret[AUTH_TOKEN_SECRET_LEN + 1], hash[65];
    new_secret(c->spec->given, id, secret);
    if ((rc = auth_load_row(s, &tokens, id, e)) != 0) {
        sodium_memzero(secret, sizeof secret);
        if (rc > 0)
            rc = err_set(e, E_CONFLICT, "a token with id %s exists already", id);
        goto out;
    }
    auth_secret_hash(secret, hash);
    snprintf(c->token, AUTH_TOKEN_SIZE, "opsdb_%s_%s", id, secret);
    sodium_memzero(secret, sizeof secret);
    int64_t now = time_now_ms();
    struct value *row = batch_add_row(&tokens);
    auth_put_int(&tokens, row, "ts", now);
    auth_put_text(&tokens, row, "id", id);
    auth_put_text(&tokens, row, "user", c->spec->user);
    auth_put_text(&tokens, row, "secret_hash", hash);
    auth_put_text(&tokens, row, "tables", tables);
    auth_put_text(&tokens, row, "description", c->spec->description);
    auth_put_int(&tokens, row, "created_at", now);
    auth_put_text(&tokens, row, "created_by", c->by->actor);
    if (c->spec->expires_at_ms)
        auth_put_int(&tokens, row, "expires_at", c->spec->expires_at_ms);
    memcpy(c->id_out, id, sizeof id);
    char target[160];
    snprintf(target, sizeof target, "%s (user %s)", id, c->spec->user);
    rc = write_with_audit(s, &tokens, c->by, "token.create", target, e);
out:
    batch_release(&users);
    batch_release(&tokens);
    return rc;
}

int auth_token_create(const struct auth_target *t, const struct auth_actor *by,
                      const struct auth_token_spec *spec, char token[AUTH_TOKEN_SIZE],
                      char id[AUTH_TOKEN_ID_LEN + 1], struct err *e)
{
    int rc = check_tables(spec->tables ? spec->tables : "", e);
    if (rc)
        return rc;
    if (spec->expires_at_ms && spec->expires_at_ms <= time_now_ms())
        return err_set(e, E_INVALID, "the expiry is not in the future");
    char gid[AUTH_TOKEN_ID_LEN + 1], gsecret[AUTH_TOKEN_SECRET_LEN + 1];
    if (spec->given && !auth_token_split(spec->given, gid, gsecret))
        return err_set(e, E_INVALID,
                       "the given token is not shaped like opsdb_<12 hex digits>_<64 hex digits> "
                       "(e.g. opsdb_$(openssl rand -hex 6)_$(openssl rand -hex 32))");
    sodium_memzero(gsecret, sizeof gsecret);
    struct token_change c = {by, spec, NULL, id, token};
    rc = auth_run_change(t, create_token, &c, true, e);
    if (rc)
        sodium_memzero(token, AUTH_TOKEN_SIZE);
    return rc;
}

static int revoke_token(struct store *s, void *arg, struct err *e)
{
    struct token_change *c = arg;
    struct batch b;
    batch_init(&b, schema_table("api_tokens"));
    int rc = auth_load_row(s, &b, c->id, e);
    if (rc == 0)
        rc = err_set(e, E_NOTFOUND, "no token with id '%s' (opsdb token list shows them)", c->id);
    if (rc < 0)
        goto out;
    struct value *row = batch_row(&b, 0);
    rc = 0;
    if (row[schema_column(b.table, "revoked_at")].type == VAL_NULL) {
        int64_t now = time_now_ms();
        auth_put_int(&b, row, "ts", now);
        auth_put_int(&b, row, "revoked_at", now);
        rc = write_with_audit(s, &b, c->by, "token.revoke", c->id, e);
    }
out:
    batch_release(&b);
    return rc;
}

int auth_token_revoke(const struct auth_target *t, const struct auth_actor *by, const char *id,
                      struct err *e)
{
    char tid[AUTH_TOKEN_ID_LEN + 1], secret[AUTH_TOKEN_SECRET_LEN + 1];
    if (auth_token_split(id, tid, secret)) /* a whole token: its id */
        sodium_memzero(secret, sizeof secret);
    else if (strlen(id) == AUTH_TOKEN_ID_LEN)
        memcpy(tid, id, sizeof tid);
    else
        return err_set(e, E_INVALID,
                       "'%.20s' is not a token id (12 hex digits, from opsdb token "
                       "list)",
                       id);
    struct token_change c = {by, NULL, tid, NULL, NULL};
    return auth_run_change(t, revoke_token, &c, true, e);
}

int auth_token_list(struct store *s, const char *user, struct store_result *res, struct err *e)
{
    struct store_param p[2] = {{.name = "now", .number = (double)time_now_ms()},
                               {.name = "user", .is_text = true, .text = user ? user : ""}};
    return read_rows(
        s,
        "SELECT t.id, t.user, u.role, t.tables, t.description, CASE WHEN t.revoked_at "
        "IS NOT "
        "NULL THEN 'revoked' WHEN t.expires_at IS NOT NULL AND t.expires_at <= :now "
        "THEN "
        "'expired' WHEN u.name IS NULL OR u.disabled THEN 'disabled' ELSE 'active' "
        "END AS state, " RFC3339("t.created_at") " AS created_at, " RFC3339(
            "t.expires_at") " AS expires_at, " RFC3339("t.revoked_at") " AS "
                                                                       "revoked_at,"
                                                                       " " RFC3339(
                                                                           "t."
                                                                           "la"
                                                                           "st"
                                                                           "_u"
                                                                           "se"
                                                                           "d_"
                                                                           "a"
                                                                           "t") " AS last_used_at "
                                                                                "FROM api_tokens t "
                                                                                "LEFT JOIN users u "
                                                                                "ON u.name = "
                                                                                "t.user WHERE "
                                                                                ":user = '' OR "
                                                                                "t.user = "
                                                                                ":user ORDER BY "
                                                                                "t.created_at, "
                                                                                "t.id",
        p, 2, res, e);
}
