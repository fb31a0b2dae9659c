/*
 * Per-request limits the route handlers should not each have to know: the size of a request's
 * line and headers (http.max_header_bytes, 431), and a rate limit per client (http.rate_limit,
 * 429 with Retry-After). The connection-level limits (connections per client address, the idle
 * timeout, the memory a connection may hold) are libmicrohttpd options set in http_start().
 *
 * A client is its bearer token when the request has an Authorization header, else its address:
 * clients behind one proxy keep separate budgets when they authenticate. The token is never
 * kept: a bucket is found by a keyed BLAKE2b digest of the header (the key is random per
 * process), so nothing in memory says what the token was.
 *
 * Buckets live in a fixed table (RATE_SLOTS entries, probed RATE_PROBES at a time), so memory
 * stays bounded whatever number of clients or tokens arrives. When every probed slot is taken,
 * the one used least recently is given to the new client: a bucket idle for burst/rate seconds
 * is full again anyway, and one taken from an active client at worst lets that client start
 * over with a full bucket.
 */
#include "http/http_int.h"

#include <math.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE_SLOTS 16384
#define RATE_PROBES 8
#define RATE_KEY_BYTES 16

struct bucket {
    uint8_t key[RATE_KEY_BYTES];
    bool used;
    double tokens;
    int64_t last_ms; /* when tokens were last brought up to date */
};

struct http_limits {
    pthread_mutex_t lock;
    double rate, burst; /* tokens per second; bucket size */
    uint8_t hash_key[crypto_generichash_KEYBYTES];
    struct bucket *slots; /* RATE_SLOTS, NULL when the rate limit is off */
    uint64_t rate_limited, headers_too_large;
};

int http_limits_new(struct http_limits **out, const struct config *cfg, struct err *e)
{
    struct http_limits *l = calloc(1, sizeof *l);
    if (!l)
        return err_set(e, E_NOMEM, "out of memory");
    pthread_mutex_init(&l->lock, NULL);
    l->rate = (double)cfg->rate_limit;
    l->burst = cfg->rate_limit_burst ? (double)cfg->rate_limit_burst : l->rate;
    if (l->rate > 0) {
        if (sodium_init() < 0 || !(l->slots = calloc(RATE_SLOTS, sizeof *l->slots))) {
            http_limits_free(&l);
            return err_set(e, E_NOMEM, "cannot set up the rate limiter (http.rate_limit)");
        }
        randombytes_buf(l->hash_key, sizeof l->hash_key);
    }
    *out = l;
    return 0;
}

void http_limits_free(struct http_limits **lp)
{
    struct http_limits *l = *lp;
    if (!l)
        return;
    free(l->slots);
    pthread_mutex_destroy(&l->lock);
    free(l);
    *lp = NULL;
}

void http_peer_name(struct request *req, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    snprintf(out, size, "?");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)size);
}

/* The bucket key of the request's client: a digest of its Authorization header, or else of
 * its address. */
static void client_key(const struct http_limits *l, struct request *req,
                       uint8_t key[RATE_KEY_BYTES])
{
    const char *auth = request_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    char peer[INET6_ADDRSTRLEN + 8] = "addr:";
    if (!auth || !*auth)
        http_peer_name(req, peer + 5, sizeof peer - 5);
    const char *what = auth && *auth ? auth : peer;
    crypto_generichash(key, RATE_KEY_BYTES, (const unsigned char *)what, strlen(what), l->hash_key,
                       sizeof l->hash_key);
}

/* The client's bucket: its own, a free slot, or the least recently used of the probed ones
 * (given over full). Called with the lock held. */
static struct bucket *bucket_of(struct http_limits *l, const uint8_t key[RATE_KEY_BYTES],
                                int64_t now_ms)
{
    uint64_t h;
    memcpy(&h, key, sizeof h);
    struct bucket *oldest = NULL;
    for (size_t i = 0; i < RATE_PROBES; i++) {
        struct bucket *b = &l->slots[(h + i) % RATE_SLOTS];
        if (b->used && memcmp(b->key, key, RATE_KEY_BYTES) == 0)
            return b;
        if (!b->used || !oldest || (oldest->used && b->last_ms < oldest->last_ms))
            oldest = b;
    }
    memcpy(oldest->key, key, RATE_KEY_BYTES);
    oldest->used = true;
    oldest->tokens = l->burst;
    oldest->last_ms = now_ms;
    return oldest;
}

/* Takes a token for the client; false with the seconds until one is there when none is. */
static bool take_token(struct http_limits *l, const uint8_t key[RATE_KEY_BYTES],
                       int64_t *retry_after_s)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    pthread_mutex_lock(&l->lock);
    struct bucket *b = bucket_of(l, key, now_ms);
    b->tokens += (double)(now_ms - b->last_ms) / 1000.0 * l->rate;
    if (b->tokens > l->burst)
        b->tokens = l->burst;
    b->last_ms = now_ms;
    bool ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    else
        l->rate_limited++;
    double wait_s = ok ? 0 : ceil((1.0 - b->tokens) / l->rate);
    pthread_mutex_unlock(&l->lock);
    *retry_after_s = wait_s < 1 ? 1 : (int64_t)wait_s;
    return ok;
}

/* Bytes of the request line and headers as received (name, ": ", value, CRLF each). */
struct header_sum {
    size_t bytes;
};

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    struct header_sum *s = cls;
    s->bytes += strlen(key) + 4 + (value ? strlen(value) : 0);
    return MHD_YES;
}

static bool headers_too_large(struct http_server *srv, struct request *req, struct response *res)
{
    struct header_sum sum = {strlen(req->method) + strlen(req->url) + 12};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, add_header, &sum);
    int64_t max = srv->deps.cfg->max_header_bytes;
    if ((int64_t)sum.bytes <= max)
        return false;
    char peer[INET6_ADDRSTRLEN], msg[300];
    http_peer_name(req, peer, sizeof peer);
    snprintf(msg, sizeof msg,
             "the request line and headers are %zu bytes, more than the limit of %lld "
             "(http.max_header_bytes)",
             sum.bytes, (long long)max);
    log_warn("http: %s: %s", peer, msg);
    respond_error(res, 431, msg, NULL);
    pthread_mutex_lock(&srv->limits->lock);
    srv->limits->headers_too_large++;
    pthread_mutex_unlock(&srv->limits->lock);
    return true;
}

bool http_limits_check(struct http_server *srv, struct request *req, struct response *res)
{
    struct http_limits *l = srv->limits;
    if (!l)
        return false;
    if (headers_too_large(srv, req, res))
        return true;
    /* probes of a load balancer or orchestrator must not be refused */
    if (!l->slots || strcmp(req->url, "/healthz") == 0 || strcmp(req->url, "/readyz") == 0)
        return false;
    uint8_t key[RATE_KEY_BYTES];
    client_key(l, req, key);
    int64_t retry_s;
    if (take_token(l, key, &retry_s))
        return false;
    char peer[INET6_ADDRSTRLEN], msg[300];
    http_peer_name(req, peer, sizeof peer);
    log_debug("http: %s: rate limited on %.200s", peer, req->url);
    snprintf(msg, sizeof msg,
             "too many requests: this client may make %.15g requests per second with bursts of "
             "%.15g (http.rate_limit, http.rate_limit_burst); retry after %lld s",
             l->rate, l->burst, (long long)retry_s);
    respond_error(res, 429, msg, NULL);
    snprintf(req->retry_after, sizeof req->retry_after, "%lld", (long long)retry_s);
    res->header_name = "Retry-After";
    res->header_value = req->retry_after;
    return true;
}

void http_limits_metrics(struct http_limits *l, struct buf *out)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    uint64_t limited = l->rate_limited, large = l->headers_too_large;
    pthread_mutex_unlock(&l->lock);
    buf_printf(
        out,
        "# HELP opsdb_http_rate_limited_total Requests refused with 429 by http.rate_limit.\n"
        "# TYPE opsdb_http_rate_limited_total counter\n"
        "opsdb_http_rate_limited_total %llu\n"
        "# HELP opsdb_http_headers_too_large_total Requests refused with 431 by "
        "http.max_header_bytes.\n"
        "# TYPE opsdb_http_headers_too_large_total counter\n"
        "opsdb_http_headers_too_large_total %llu\n",
        (unsigned long long)limited, (unsigned long long)large);
}
