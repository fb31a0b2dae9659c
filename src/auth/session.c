/*
 * Dashboard sessions: a browser signs in once with a password or a token and then sends a cookie
 * instead of a token. The session id (32 random bytes) lives only in the cookie; the server keeps
 * its BLAKE2b hash, in memory, with the session's CSRF token, user and expiry. A session is
 * checked on each request against the users and tokens as the server's cache holds them now, so
 * disabling the user, changing its password or revoking the token it was opened with ends it.
 *
 * Failed logins are rate limited per user name and per client address (token buckets of
 * AUTH_LOGIN_BURST attempts, refilled at one a second), and at most LOGIN_CONCURRENT password
 * hashes are verified at once: each one takes 64 MiB for a tenth of a second, and a burst of
 * logins must not take the server's memory.
 */
#include "auth/auth_int.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_TTL_MS (12 * 3600 * 1000LL)
#define BUCKETS 1024
#define REFILL_PER_S 1.0
#define LOGIN_CONCURRENT 2
#define HASH_BYTES 32
#define TAG_BYTES 16

struct session {
    unsigned char id_hash[HASH_BYTES];
    char csrf[AUTH_SESSION_ID_LEN + 1];
    char user[65];
    char token_id[AUTH_TOKEN_ID_LEN + 1];  /* "": opened with a password */
    char tables[1025];                     /* of the token it was opened with */
    unsigned char password_tag[TAG_BYTES]; /* of the password hash it was opened with */
    int64_t created_ms, expires_ms;
};

/* Failed logins of one key ("user:NAME" or "peer:ADDRESS"): attempts left, refilled over time.
 * A full bucket is as good as none, so full ones are reused for new keys. */
struct bucket {
    char key[96];
    double left;
    int64_t at_ms;
};

struct auth_sessions {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t verifier_free;
    int verifying; /* password verifications running */
    int64_t ttl_ms;
    struct session *items;
    size_t n, cap;
    struct bucket buckets[BUCKETS];
    char dummy_hash[crypto_pwhash_STRBYTES]; /* verified for unknown users: same time taken */
    bool have_dummy;
};

int auth_sessions_new(struct auth_sessions **out, struct err *e)
{
    struct auth_sessions *s = calloc(1, sizeof *s);
    if (!s || sodium_init() < 0) {
        free(s);
        return err_set(e, E_NOMEM, "out of memory for the sessions");
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->verifier_free, NULL);
    s->ttl_ms = DEFAULT_TTL_MS;
    *out = s;
    return 0;
}

void auth_sessions_free(struct auth_sessions **sp)
{
    struct auth_sessions *s = *sp;
    if (!s)
        return;
    sodium_memzero(s->items, s->cap * sizeof *s->items);
    free(s->items);
    pthread_cond_destroy(&s->verifier_free);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *sp = NULL;
}

size_t auth_sessions_count(struct auth_sessions *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void auth_set_session_ttl(struct auth *a, int64_t ttl_ms)
{
    struct auth_sessions *s = auth_sessions_of(a);
    pthread_mutex_lock(&s->lock);
    s->ttl_ms = ttl_ms > 0 ? ttl_ms : DEFAULT_TTL_MS;
    pthread_mutex_unlock(&s->lock);
}

static void hash_of(const char *text, unsigned char *out, size_t size)
{
    crypto_generichash(out, size, (const unsigned char *)text, strlen(text), NULL, 0);
}

static void random_hex(char out[AUTH_SESSION_ID_LEN + 1])
{
    unsigned char bytes[AUTH_SESSION_ID_LEN / 2];
    randombytes_buf(bytes, sizeof bytes);
    sodium_bin2hex(out, AUTH_SESSION_ID_LEN + 1, bytes, sizeof bytes);
    sodium_memzero(bytes, sizeof bytes);
}

/* ---- the table of sessions (under the lock) ------------------------------------------------ */

static void remove_at(struct auth_sessions *s, size_t i)
{
    s->items[i] = s->items[--s->n];
    sodium_memzero(&s->items[s->n], sizeof s->items[0]);
}

/* The index of the open session whose id hashes to h, or -1; expired ones met are dropped. */
static long find(struct auth_sessions *s, const unsigned char h[HASH_BYTES], int64_t now)
{
    for (size_t i = 0; i < s->n; i++) {
        if (memcmp(s->items[i].id_hash, h, HASH_BYTES) != 0)
            continue;
        if (s->items[i].expires_ms > now)
            return (long)i;
        remove_at(s, i);
        return -1;
    }
    return -1;
}

/* Room for one more: grows the table up to AUTH_SESSIONS_MAX, then drops the expired sessions
 * and, when none is, the oldest one. */
static void make_room(struct auth_sessions *s, int64_t now)
{
    if (s->n < s->cap)
        return;
    if (s->cap < AUTH_SESSIONS_MAX) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        cap = cap < AUTH_SESSIONS_MAX ? cap : AUTH_SESSIONS_MAX;
        struct session *grown = realloc(s->items, cap * sizeof *grown);
        if (grown) {
            s->items = grown;
            s->cap = cap;
            return;
        }
    }
    size_t oldest = 0;
    for (size_t i = s->n; i-- > 0;) {
        if (s->items[i].expires_ms <= now)
            remove_at(s, i);
        else if (s->items[i].created_ms < s->items[oldest].created_ms)
            oldest = i;
    }
    if (s->n == s->cap)
        remove_at(s, oldest);
}

/* ---- the rate limit of failed logins (under the lock) --------------------------------------- */

static struct bucket *bucket_of(struct auth_sessions *s, const char *key, int64_t now)
{
    struct bucket *reuse = NULL;
    for (size_t i = 0; i < BUCKETS; i++) {
        struct bucket *b = &s->buckets[i];
        double left = b->left + (double)(now - b->at_ms) / 1000.0 * REFILL_PER_S;
        b->left = left < AUTH_LOGIN_BURST ? left : AUTH_LOGIN_BURST;
        b->at_ms = now;
        if (b->key[0] && strcmp(b->key, key) == 0)
            return b;
        if (!reuse && (!b->key[0] || b->left >= AUTH_LOGIN_BURST))
            reuse = b;
    }
    if (!reuse) /* every bucket holds failures: the one closest to full goes */
        for (size_t i = 0; i < BUCKETS; i++)
            if (!reuse || s->buckets[i].left > reuse->left)
                reuse = &s->buckets[i];
    snprintf(reuse->key, sizeof reuse->key, "%s", key);
    reuse->left = AUTH_LOGIN_BURST;
    return reuse;
}

/* Takes one attempt from both keys' buckets: false (nothing taken) when either is empty. */
static bool take_attempt(struct auth_sessions *s, const char *k1, const char *k2)
{
    int64_t now = time_now_ms();
    pthread_mutex_lock(&s->lock);
    struct bucket *b1 = bucket_of(s, k1, now), *b2 = bucket_of(s, k2, now);
    bool ok = b1->left >= 1 && b2->left >= 1;
    if (ok) {
        b1->left -= 1;
        b2->left -= 1;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Gives the attempt back after a successful login: only failures count. */
static void give_back(struct auth_sessions *s, const char *k1, const char *k2)
{
    int64_t now = time_now_ms();
    pthread_mutex_lock(&s->lock);
    struct bucket *b1 = bucket_of(s, k1, now), *b2 = bucket_of(s, k2, now);
    b1->left = b1->left + 1 < AUTH_LOGIN_BURST ? b1->left + 1 : AUTH_LOGIN_BURST;
    b2->left = b2->left + 1 < AUTH_LOGIN_BURST ? b2->left + 1 : AUTH_LOGIN_BURST;
    pthread_mutex_unlock(&s->lock);
}

/* ---- opening a session ---------------------------------------------------------------------- */

/* The hash verified for users without a password, made once: the answer takes as long as for
 * one with a password, so that timing does not tell which names have one. "" when out of
 * memory. Called holding a verifier slot. */
static void dummy_hash(struct auth_sessions *s, char out[crypto_pwhash_STRBYTES])
{
    pthread_mutex_lock(&s->lock);
    bool have = s->have_dummy;
    memcpy(out, s->dummy_hash, crypto_pwhash_STRBYTES);
    pthread_mutex_unlock(&s->lock);
    if (have)
        return;
    char random[AUTH_SESSION_ID_LEN + 1];
    random_hex(random);
    if (crypto_pwhash_str_alg(out, random, strlen(random), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        out[0] = '\0';
        return;
    }
    pthread_mutex_lock(&s->lock);
    memcpy(s->dummy_hash, out, crypto_pwhash_STRBYTES);
    s->have_dummy = true;
    pthread_mutex_unlock(&s->lock);
}

/* Whether password matches hash ("": the user has none or does not exist; a dummy hash is
 * verified then). At most LOGIN_CONCURRENT verifications run at once; the others wait. */
static bool password_matches(struct auth_sessions *s, const char *hash, const char *password)
{
    pthread_mutex_lock(&s->lock);
    while (s->verifying >= LOGIN_CONCURRENT)
        pthread_cond_wait(&s->verifier_free, &s->lock);
    s->verifying++;
    pthread_mutex_unlock(&s->lock);
    char dummy[crypto_pwhash_STRBYTES];
    if (!hash[0])
        dummy_hash(s, dummy);
    const char *verified = hash[0] ? hash : dummy;
    bool ok = verified[0] && crypto_pwhash_str_verify(verified, password, strlen(password)) == 0;
    pthread_mutex_lock(&s->lock);
    s->verifying--;
    pthread_cond_signal(&s->verifier_free);
    pthread_mutex_unlock(&s->lock);
    return ok && hash[0];
}

/* Checks a password login into *n (user, role, password tag). */
static enum auth_result password_login(struct auth *a, const struct auth_login *l,
                                       struct session *n, enum auth_role *role, char *why,
                                       size_t size)
{
    struct auth_user_state st = {0};
    enum auth_result r = auth_cache_user(a, l->user, &st);
    if (r == AUTH_UNAVAILABLE)
        return r;
    bool match = password_matches(auth_sessions_of(a), r == AUTH_BAD_LOGIN ? "" : st.password_hash,
                                  l->password);
    if (r == AUTH_BAD_LOGIN)
        snprintf(why, size, "no user %s", l->user);
    else if (!st.password_hash[0])
        snprintf(why, size, "user %s has no password (opsdb user passwd %s)", l->user, l->user);
    else if (!match)
        snprintf(why, size, "wrong password for user %s", l->user);
    else if (r == AUTH_DISABLED)
        snprintf(why, size, "user %s is disabled", l->user);
    if (r == AUTH_OK && !match)
        r = AUTH_BAD_LOGIN;
    if (r != AUTH_OK)
        return r;
    snprintf(n->user, sizeof n->user, "%s", l->user);
    hash_of(st.password_hash, n->password_tag, TAG_BYTES);
    *role = st.role;
    return AUTH_OK;
}

static enum auth_result token_login(struct auth *a, const struct auth_login *l, struct session *n,
                                    enum auth_role *role, char *why, size_t size)
{
    struct auth_principal who;
    memset(&who, 0, sizeof who);
    enum auth_result r = auth_cache_token(a, l->token, &who);
    if (r != AUTH_OK) {
        snprintf(why, size, "%s", auth_result_name(r));
        return r;
    }
    snprintf(n->user, sizeof n->user, "%s", who.user);
    snprintf(n->token_id, sizeof n->token_id, "%s", who.token_id);
    snprintf(n->tables, sizeof n->tables, "%s", who.tables);
    *role = who.role;
    return AUTH_OK;
}

enum auth_result auth_session_open(struct auth *a, const struct auth_login *l,
                                   struct auth_session *out, char *why, size_t why_size)
{
    struct auth_sessions *s = auth_sessions_of(a);
    memset(out, 0, sizeof *out);
    snprintf(why, why_size, "%s", "");
    char user_key[96], peer_key[96];
    char id[AUTH_TOKEN_ID_LEN + 1] = "", secret[AUTH_TOKEN_SECRET_LEN + 1];
    if (l->token && auth_token_split(l->token, id, secret))
        sodium_memzero(secret, sizeof secret);
    snprintf(user_key, sizeof user_key, "user:%.64s", l->token ? id : l->user ? l->user : "");
    snprintf(peer_key, sizeof peer_key, "peer:%.64s", l->peer_address ? l->peer_address : "-");
    enum auth_result r;
    struct session n;
    memset(&n, 0, sizeof n);
    enum auth_role role = AUTH_PUBLIC;
    if (!take_attempt(s, user_key, peer_key)) {
        r = AUTH_LIMITED;
        snprintf(why, why_size, "more than %d failed logins of %s or from %s; one more a second",
                 AUTH_LOGIN_BURST, user_key + 5, peer_key + 5);
    } else if (l->token) {
        r = token_login(a, l, &n, &role, why, why_size);
    } else {
        r = l->user && l->password ? password_login(a, l, &n, &role, why, why_size)
                                   : AUTH_BAD_LOGIN;
    }
    if (r == AUTH_OK) {
        give_back(s, user_key, peer_key);
        random_hex(out->id);
        random_hex(n.csrf);
        hash_of(out->id, n.id_hash, HASH_BYTES);
        int64_t now = time_now_ms();
        pthread_mutex_lock(&s->lock);
        n.created_ms = now;
        n.expires_ms = now + s->ttl_ms;
        make_room(s, now);
        s->items[s->n++] = n;
        pthread_mutex_unlock(&s->lock);
        memcpy(out->csrf, n.csrf, sizeof out->csrf);
        memcpy(out->user, n.user, sizeof out->user);
        out->role = role;
        out->expires_at_ms = n.expires_ms;
        sodium_memzero(&n, sizeof n);
    }
    auth_count_result(a, r, true);
    return r;
}

/* ---- checking and ending sessions ----------------------------------------------------------- */

/* The session of id copied into *out (under the lock): false when there is none. */
static bool session_copy(struct auth_sessions *s, const char *id, struct session *out, bool remove)
{
    if (!id || strlen(id) != AUTH_SESSION_ID_LEN)
        return false;
    unsigned char h[HASH_BYTES];
    hash_of(id, h, HASH_BYTES);
    pthread_mutex_lock(&s->lock);
    long i = find(s, h, time_now_ms());
    if (i >= 0) {
        *out = s->items[i];
        if (remove)
            remove_at(s, (size_t)i);
    }
    pthread_mutex_unlock(&s->lock);
    return i >= 0;
}

static void session_end(struct auth_sessions *s, const char *id)
{
    struct session gone;
    session_copy(s, id, &gone, true);
    sodium_memzero(&gone, sizeof gone);
}

static bool csrf_matches(const struct session *n, const char *csrf)
{
    return csrf && strlen(csrf) == AUTH_SESSION_ID_LEN &&
           sodium_memcmp(csrf, n->csrf, AUTH_SESSION_ID_LEN) == 0;
}

/* Whether the session may still act, from its user and token as they are now; its role. */
static enum auth_result still_valid(struct auth *a, const struct session *n, enum auth_role *role)
{
    struct auth_user_state st = {0};
    enum auth_result r = auth_cache_user(a, n->user, &st);
    if (r == AUTH_BAD_LOGIN) /* the user is gone */
        return AUTH_DISABLED;
    if (r != AUTH_OK)
        return r;
    if (n->token_id[0]) {
        r = auth_cache_token_id(a, n->token_id);
    } else {
        unsigned char tag[TAG_BYTES];
        hash_of(st.password_hash, tag, TAG_BYTES);
        r = st.password_hash[0] && sodium_memcmp(tag, n->password_tag, TAG_BYTES) == 0
                ? AUTH_OK
                : AUTH_NO_SESSION; /* the password changed or was removed */
    }
    *role = st.role;
    return r;
}

/* The session of id checked: AUTH_OK with who filled (and *copy, when not NULL), or why not; a
 * session that may no longer act is ended. */
static enum auth_result resolve(struct auth *a, const char *id, const char *csrf,
                                bool state_changing, struct auth_principal *who,
                                struct session *copy)
{
    struct session n;
    if (!session_copy(auth_sessions_of(a), id, &n, false))
        return AUTH_NO_SESSION;
    snprintf(who->user, sizeof who->user, "%s", n.user);
    snprintf(who->token_id, sizeof who->token_id, "%s", n.token_id);
    who->session = true;
    enum auth_role role = AUTH_PUBLIC;
    enum auth_result r =
        state_changing && !csrf_matches(&n, csrf) ? AUTH_CSRF : still_valid(a, &n, &role);
    if (r != AUTH_OK && r != AUTH_CSRF && r != AUTH_UNAVAILABLE)
        session_end(auth_sessions_of(a), id);
    if (r == AUTH_OK) {
        who->authenticated = true;
        who->role = role;
        snprintf(who->tables, sizeof who->tables, "%s", n.tables);
        if (copy)
            *copy = n;
    }
    sodium_memzero(&n, sizeof n);
    return r;
}

enum auth_result auth_check_session(struct auth *a, const char *id, const char *csrf,
                                    bool state_changing, enum auth_role need,
                                    struct auth_principal *who)
{
    memset(who, 0, sizeof *who);
    enum auth_result r = AUTH_OK;
    if (auth_mode_of(a) == AUTH_MODE_OFF) {
        who->role = AUTH_ADMIN;
    } else {
        who->role = AUTH_PUBLIC;
        if (need != AUTH_PUBLIC)
            r = resolve(a, id, csrf, state_changing, who, NULL);
        if (r == AUTH_OK && !auth_role_allows(who->role, need))
            r = AUTH_FORBIDDEN;
    }
    auth_count_result(a, r, false);
    return r;
}

enum auth_result auth_session_get(struct auth *a, const char *id, struct auth_session *out)
{
    struct auth_principal who;
    struct session n;
    memset(&who, 0, sizeof who);
    memset(out, 0, sizeof *out);
    enum auth_result r = resolve(a, id, NULL, false, &who, &n);
    if (r == AUTH_OK) {
        memcpy(out->csrf, n.csrf, sizeof out->csrf);
        memcpy(out->user, n.user, sizeof out->user);
        out->role = who.role;
        out->expires_at_ms = n.expires_ms;
        sodium_memzero(&n, sizeof n);
    }
    return r;
}

enum auth_result auth_session_close(struct auth *a, const char *id, const char *csrf,
                                    struct auth_principal *who)
{
    struct auth_sessions *s = auth_sessions_of(a);
    struct session n;
    memset(who, 0, sizeof *who);
    if (!session_copy(s, id, &n, false))
        return AUTH_NO_SESSION;
    snprintf(who->user, sizeof who->user, "%s", n.user);
    snprintf(who->token_id, sizeof who->token_id, "%s", n.token_id);
    who->session = true;
    enum auth_result r = csrf_matches(&n, csrf) ? AUTH_OK : AUTH_CSRF;
    sodium_memzero(&n, sizeof n);
    if (r == AUTH_OK)
        session_end(s, id);
    return r;
}
