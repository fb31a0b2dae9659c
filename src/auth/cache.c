/*
 * The server's side of auth: every request's token checked against the tokens held in memory
 * (no database read per request), loaded again when the writer's hook says users or api_tokens
 * changed — also when another process (`opsdb token revoke`) committed, which the writer notices
 * within a second. Audit rows and the tokens' last use are queued and written by a thread of
 * their own through the writer, so a request never waits for them. The users are held beside
 * the tokens, for the sessions' checks (session.c).
 */
#include "auth/auth_int.h"
#include "ingest/ingest.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUDIT_QUEUE_MAX 10000
#define USES_MAX 1024
#define USES_FLUSH_MS 10000 /* how often the tokens' last use is written */

struct cached_token {
    char id[AUTH_TOKEN_ID_LEN + 1];
    char hash[65];
    char user[65];
    char tables[1025];
    int role; /* the user's role; -1: the user is gone */
    bool disabled;
    int64_t expires_at, revoked_at; /* 0: none */
};

struct cached_user {
    char name[65];
    int role;
    bool disabled;
    char password_hash[AUTH_PASSWORD_HASH_SIZE]; /* "": none */
};

struct queued_audit {
    int64_t ts;
    int status;
    char actor[129], token_id[AUTH_TOKEN_ID_LEN + 1], action[129], target[257], peer[129];
    char outcome[8], detail[513];
};

struct token_use {
    char id[AUTH_TOKEN_ID_LEN + 1];
    int64_t at_ms;
};

struct auth {
    struct store *store;
    struct writer *writer;
    enum auth_mode mode;
    pthread_mutex_t lock;             /* guards everything below */
    uint64_t changes, loaded_changes; /* the cache is stale while they differ */
    bool loaded;
    struct cached_token *tokens; /* sorted by id */
    size_t ntokens;
    struct cached_user *users; /* sorted by name */
    size_t nusers;
    struct auth_sessions *sessions;
    struct queued_audit *audit;
    size_t naudit, audit_cap;
    struct token_use uses[USES_MAX];
    size_t nuses;
    struct auth_stats stats;
    pthread_t flusher;
    pthread_cond_t wake;
    bool stopping;
};

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct cached_token *)a)->id, ((const struct cached_token *)b)->id);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct cached_user *)a)->name, ((const struct cached_user *)b)->name);
}

static void copy_text(char *out, size_t size, const struct value *v)
{
    snprintf(out, size, "%.*s", v->type == VAL_TEXT ? (int)v->len : 0,
             v->type == VAL_TEXT ? v->s : "");
}

static int read_all(struct auth *a, const char *sql, struct store_result *res, struct err *e)
{
    struct store_query q = {.sql = sql};
    struct store_reader *r = store_reader_get(a->store);
    int rc = store_reader_query(r, &q, res, e);
    store_reader_put(a->store, r);
    return rc;
}

/* Reads every user into a new sorted array. */
static int load_users(struct auth *a, struct cached_user **out, size_t *n, struct err *e)
{
    struct store_result res;
    int rc = read_all(a, "SELECT name, role, disabled, password_hash FROM users", &res, e);
    struct cached_user *u = rc ? NULL : calloc(res.nrows ? res.nrows : 1, sizeof *u);
    if (rc == 0 && !u)
        rc = err_set(e, E_NOMEM, "out of memory loading %zu users", res.nrows);
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        const struct value *v = res.values + i * res.ncols;
        char role[16];
        copy_text(u[i].name, sizeof u[i].name, &v[0]);
        copy_text(role, sizeof role, &v[1]);
        u[i].role = auth_role_parse(role);
        u[i].disabled = v[2].type == VAL_INT && v[2].i;
        copy_text(u[i].password_hash, sizeof u[i].password_hash, &v[3]);
    }
    if (rc == 0) {
        *n = res.nrows;
        qsort(u, *n, sizeof *u, by_name);
        *out = u;
    }
    store_result_release(&res);
    return rc;
}

/* Reads every token with its user's role into a new sorted array. */
static int load_tokens(struct auth *a, struct cached_token **out, size_t *n, struct err *e)
{
    struct store_result res;
    int rc = read_all(a,
                      "SELECT t.id, t.secret_hash, t.user, t.tables, t.expires_at, t.revoked_at, "
                      "u.role, u.disabled FROM api_tokens t LEFT JOIN users u ON u.name = t.user",
                      &res, e);
    struct cached_token *t = rc ? NULL : calloc(res.nrows ? res.nrows : 1, sizeof *t);
    if (rc == 0 && !t)
        rc = err_set(e, E_NOMEM, "out of memory loading %zu tokens", res.nrows);
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        const struct value *v = res.values + i * res.ncols;
        copy_text(t[i].id, sizeof t[i].id, &v[0]);
        copy_text(t[i].hash, sizeof t[i].hash, &v[1]);
        copy_text(t[i].user, sizeof t[i].user, &v[2]);
        copy_text(t[i].tables, sizeof t[i].tables, &v[3]);
        t[i].expires_at = v[4].type == VAL_INT ? v[4].i : 0;
        t[i].revoked_at = v[5].type == VAL_INT ? v[5].i : 0;
        char role[16];
        copy_text(role, sizeof role, &v[6]);
        t[i].role = auth_role_parse(role);
        t[i].disabled = v[7].type == VAL_INT && v[7].i;
    }
    if (rc == 0) {
        *n = res.nrows;
        qsort(t, *n, sizeof *t, by_id);
        *out = t;
    }
    store_result_release(&res);
    return rc;
}

/* Loads the tokens again when they changed since the last load. False when none could ever be
 * loaded. */
static bool refresh(struct auth *a)
{
    pthread_mutex_lock(&a->lock);
    uint64_t changes = a->changes;
    bool fresh = a->loaded && a->loaded_changes == changes;
    pthread_mutex_unlock(&a->lock);
    if (fresh)
        return true;
    struct cached_token *t = NULL;
    struct cached_user *u = NULL;
    size_t n = 0, nu = 0;
    struct err e;
    int rc = load_tokens(a, &t, &n, &e);
    if (rc == 0 && (rc = load_users(a, &u, &nu, &e)) != 0)
        free(t);
    pthread_mutex_lock(&a->lock);
    if (rc == 0) {
        free(a->tokens);
        a->tokens = t;
        a->ntokens = n;
        free(a->users);
        a->users = u;
        a->nusers = nu;
        a->loaded = true;
        a->loaded_changes = changes;
        a->stats.cache_loads++;
    }
    bool usable = a->loaded;
    pthread_mutex_unlock(&a->lock);
    if (rc != 0)
        log_error("auth: the tokens could not be loaded: %s; %s", e.msg,
                  usable ? "the tokens loaded before are used" : "requests are refused (503)");
    return usable;
}

void auth_on_commit(void *arg, const struct batch *const *batches, size_t n)
{
    struct auth *a = arg;
    bool changed = n == 0;
    for (size_t i = 0; i < n && !changed; i++)
        changed = strcmp(batches[i]->table->name, "users") == 0 ||
                  strcmp(batches[i]->table->name, "api_tokens") == 0;
    if (!changed)
        return;
    pthread_mutex_lock(&a->lock);
    a->changes++;
    pthread_mutex_unlock(&a->lock);
}

static void note_use(struct auth *a, const char *id, int64_t now)
{
    for (size_t i = 0; i < a->nuses; i++)
        if (strcmp(a->uses[i].id, id) == 0) {
            a->uses[i].at_ms = now;
            return;
        }
    if (a->nuses < USES_MAX) {
        snprintf(a->uses[a->nuses].id, sizeof a->uses[0].id, "%s", id);
        a->uses[a->nuses++].at_ms = now;
    }
}

static const struct cached_token *token_by_id(struct auth *a, const char *id)
{
    struct cached_token key;
    snprintf(key.id, sizeof key.id, "%s", id);
    return bsearch(&key, a->tokens, a->ntokens, sizeof key, by_id);
}

/* Whether token t may be used now: AUTH_OK or why not. */
static enum auth_result token_state(const struct cached_token *t, int64_t now)
{
    if (t->revoked_at && t->revoked_at <= now)
        return AUTH_REVOKED;
    if (t->expires_at && t->expires_at <= now)
        return AUTH_EXPIRED;
    if (t->role < AUTH_READER || t->disabled)
        return AUTH_DISABLED;
    return AUTH_OK;
}

/* The token's state, under the lock; fills who for a valid one. */
static enum auth_result look_up(struct auth *a, const char *id, const char *hash,
                                struct auth_principal *who)
{
    const struct cached_token *t = token_by_id(a, id);
    if (!t || sodium_memcmp(t->hash, hash, 64) != 0)
        return AUTH_UNKNOWN;
    int64_t now = time_now_ms();
    enum auth_result state = token_state(t, now);
    if (state != AUTH_OK)
        return state;
    who->authenticated = true;
    who->role = (enum auth_role)t->role;
    snprintf(who->user, sizeof who->user, "%s", t->user);
    snprintf(who->token_id, sizeof who->token_id, "%s", t->id);
    snprintf(who->tables, sizeof who->tables, "%s", t->tables);
    note_use(a, t->id, now);
    return AUTH_OK;
}

enum auth_result auth_cache_token(struct auth *a, const char *token, struct auth_principal *who)
{
    char id[AUTH_TOKEN_ID_LEN + 1], secret[AUTH_TOKEN_SECRET_LEN + 1], hash[65];
    if (!token || !*token)
        return AUTH_NO_TOKEN;
    if (!auth_token_split(token, id, secret))
        return AUTH_MALFORMED;
    auth_secret_hash(secret, hash);
    sodium_memzero(secret, sizeof secret);
    if (!refresh(a))
        return AUTH_UNAVAILABLE;
    pthread_mutex_lock(&a->lock);
    enum auth_result r = look_up(a, id, hash, who);
    pthread_mutex_unlock(&a->lock);
    return r;
}

enum auth_result auth_cache_token_id(struct auth *a, const char *id)
{
    if (!refresh(a))
        return AUTH_UNAVAILABLE;
    pthread_mutex_lock(&a->lock);
    const struct cached_token *t = token_by_id(a, id);
    enum auth_result r = t ? token_state(t, time_now_ms()) : AUTH_REVOKED; /* gone: as revoked */
    pthread_mutex_unlock(&a->lock);
    return r;
}

enum auth_result auth_cache_user(struct auth *a, const char *name, struct auth_user_state *out)
{
    if (!refresh(a))
        return AUTH_UNAVAILABLE;
    struct cached_user key;
    snprintf(key.name, sizeof key.name, "%s", name);
    pthread_mutex_lock(&a->lock);
    const struct cached_user *u = bsearch(&key, a->users, a->nusers, sizeof key, by_name);
    enum auth_result r = !u                                     ? AUTH_BAD_LOGIN
                         : u->disabled || u->role < AUTH_READER ? AUTH_DISABLED
                                                                : AUTH_OK;
    if (u) {
        out->role = u->role < AUTH_READER ? AUTH_PUBLIC : (enum auth_role)u->role;
        memcpy(out->password_hash, u->password_hash, sizeof out->password_hash);
    }
    pthread_mutex_unlock(&a->lock);
    return r;
}

static enum auth_result check(struct auth *a, const char *token, enum auth_role need,
                              struct auth_principal *who)
{
    memset(who, 0, sizeof *who);
    if (a->mode == AUTH_MODE_OFF) {
        who->role = AUTH_ADMIN;
        return AUTH_OK;
    }
    who->role = AUTH_PUBLIC;
    if (need == AUTH_PUBLIC)
        return AUTH_OK;
    enum auth_result r = auth_cache_token(a, token, who);
    if (r == AUTH_OK && !auth_role_allows(who->role, need))
        r = AUTH_FORBIDDEN;
    return r;
}

enum auth_result auth_check(struct auth *a, const char *token, enum auth_role need,
                            struct auth_principal *who)
{
    enum auth_result r = check(a, token, need, who);
    auth_count_result(a, r, false);
    return r;
}

void auth_count_result(struct auth *a, enum auth_result r, bool login)
{
    pthread_mutex_lock(&a->lock);
    if (login)
        a->stats.logins[r]++;
    else
        a->stats.results[r]++;
    pthread_mutex_unlock(&a->lock);
}

const char *auth_result_name(enum auth_result r)
{
    static const char *const names[AUTH_RESULTS] = {"ok",
                                                    "no token",
                                                    "malformed token",
                                                    "unknown token",
                                                    "expired token",
                                                    "revoked token",
                                                    "disabled user",
                                                    "forbidden",
                                                    "tokens unavailable",
                                                    "no session",
                                                    "csrf",
                                                    "too many failed logins",
                                                    "wrong credentials"};
    return names[r];
}

struct auth_sessions *auth_sessions_of(struct auth *a)
{
    return a->sessions;
}

enum auth_mode auth_mode_of(const struct auth *a)
{
    return a->mode;
}

void auth_get_stats(struct auth *a, struct auth_stats *out)
{
    pthread_mutex_lock(&a->lock);
    *out = a->stats;
    out->tokens = a->ntokens;
    pthread_mutex_unlock(&a->lock);
    out->sessions = auth_sessions_count(a->sessions);
}

/* ---- audit rows and last uses, written by the flusher ------------------------------------- */

#define COPY(field, s) snprintf(q->field, sizeof q->field, "%s", (s) ? (s) : "")

void auth_audit(struct auth *a, const struct auth_audit *row)
{
    pthread_mutex_lock(&a->lock);
    if (a->naudit == a->audit_cap && a->audit_cap < AUDIT_QUEUE_MAX) {
        size_t cap = a->audit_cap ? a->audit_cap * 2 : 64;
        struct queued_audit *grown = realloc(a->audit, cap * sizeof *grown);
        if (grown) {
            a->audit = grown;
            a->audit_cap = cap;
        }
    }
    if (a->naudit == a->audit_cap) {
        a->stats.audit_rows_dropped++;
    } else {
        struct queued_audit *q = &a->audit[a->naudit++];
        q->ts = row->ts_ms ? row->ts_ms : time_now_ms();
        q->status = row->status;
        COPY(actor, row->actor);
        COPY(token_id, row->token_id);
        COPY(action, row->action);
        COPY(target, row->target);
        COPY(peer, row->peer);
        COPY(outcome, row->outcome);
        COPY(detail, row->detail);
        pthread_cond_signal(&a->wake);
    }
    pthread_mutex_unlock(&a->lock);
}

struct flush {
    struct queued_audit *audit;
    size_t naudit;
    struct token_use *uses;
    size_t nuses;
};

static int write_flush(struct store *s, void *arg, struct err *e)
{
    struct flush *f = arg;
    struct batch audit, tokens;
    batch_init(&audit, schema_table("audit_log"));
    batch_init(&tokens, schema_table("api_tokens"));
    int rc = 0;
    for (size_t i = 0; i < f->naudit; i++) {
        const struct queued_audit *q = &f->audit[i];
        auth_audit_row(&audit,
                       &(struct auth_audit){q->ts, q->actor, q->token_id, q->action, q->target,
                                            q->peer, q->outcome, q->status, q->detail});
    }
    for (size_t i = 0; i < f->nuses && rc >= 0; i++) {
        /* the row as it is now, so that a revoke that just committed stays */
        if ((rc = auth_load_row(s, &tokens, f->uses[i].id, e)) == 1)
            auth_put_int(&tokens, batch_row(&tokens, tokens.nrows - 1), "last_used_at",
                         f->uses[i].at_ms);
    }
    rc = rc < 0 ? rc : 0;
    if (rc == 0 && audit.nrows)
        rc = store_write_batch(s, &audit, e);
    if (rc == 0 && tokens.nrows)
        rc = store_write_batch(s, &tokens, e);
    batch_release(&audit);
    batch_release(&tokens);
    return rc;
}

/* Takes what is queued (the audit rows always, the last uses when due) and writes it. */
static void flush(struct auth *a, bool uses_due)
{
    struct flush f = {0};
    struct token_use uses[USES_MAX];
    pthread_mutex_lock(&a->lock);
    f.audit = a->audit;
    f.naudit = a->naudit;
    a->audit = NULL;
    a->naudit = a->audit_cap = 0;
    if (uses_due) {
        memcpy(uses, a->uses, a->nuses * sizeof *uses);
        f.uses = uses;
        f.nuses = a->nuses;
        a->nuses = 0;
    }
    pthread_mutex_unlock(&a->lock);
    if (f.naudit || f.nuses) {
        struct auth_target t = {a->store, a->writer};
        struct err e;
        int rc = auth_run_change(&t, write_flush, &f, false, &e);
        if (rc != 0)
            log_error("auth: %zu audit rows and %zu token uses were not written: %s", f.naudit,
                      f.nuses, e.msg);
        pthread_mutex_lock(&a->lock);
        if (rc == 0)
            a->stats.audit_rows_written += f.naudit;
        else
            a->stats.audit_rows_dropped += f.naudit;
        pthread_mutex_unlock(&a->lock);
    }
    free(f.audit);
}

static void *flusher_main(void *arg)
{
    struct auth *a = arg;
    int64_t last_uses = time_now_ms();
    pthread_mutex_lock(&a->lock);
    while (!a->stopping) {
        struct timespec until;
        time_deadline(&until, 1000);
        pthread_cond_timedwait(&a->wake, &a->lock, &until);
        bool stopping = a->stopping;
        pthread_mutex_unlock(&a->lock);
        /* audit rows wait a moment so that a burst is written as one batch */
        int64_t now = time_now_ms();
        bool uses_due = stopping || now - last_uses >= USES_FLUSH_MS;
        if (uses_due)
            last_uses = now;
        if (!stopping)
            flush(a, uses_due);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int auth_new(struct auth **out, struct store *s, struct writer *w, enum auth_mode mode,
             struct err *e)
{
    struct auth *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(e, E_NOMEM, "out of memory");
    a->store = s;
    a->writer = w;
    a->mode = mode;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->wake, NULL);
    int rc = load_tokens(a, &a->tokens, &a->ntokens, e);
    if (rc == 0)
        rc = load_users(a, &a->users, &a->nusers, e);
    if (rc == 0)
        rc = auth_sessions_new(&a->sessions, e);
    if (rc == 0) {
        a->loaded = true;
        a->stats.cache_loads = 1;
        if (pthread_create(&a->flusher, NULL, flusher_main, a) != 0)
            rc = err_set(e, E_NOMEM, "cannot start the audit thread");
    }
    if (rc != 0) {
        auth_sessions_free(&a->sessions);
        free(a->tokens);
        free(a->users);
        pthread_cond_destroy(&a->wake);
        pthread_mutex_destroy(&a->lock);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void auth_free(struct auth **ap)
{
    struct auth *a = *ap;
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = true;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->flusher, NULL);
    flush(a, true);
    free(a->audit);
    free(a->tokens);
    free(a->users);
    auth_sessions_free(&a->sessions);
    pthread_cond_destroy(&a->wake);
    pthread_mutex_destroy(&a->lock);
    free(a);
    *ap = NULL;
}
