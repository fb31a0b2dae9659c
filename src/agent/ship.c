/*
 * The shipper: batches of rows to a server's ingestion API, and into the spool while the server
 * does not take them. The order of batches is kept: while the spool holds anything, new batches
 * go behind it, and it is replayed oldest first when a try is due. Tries back off (1 s, doubling
 * up to retry_max) so that a server that comes back is not met by every agent at once, and a
 * server that is down costs one failed connection per try, not one per batch.
 *
 * What is worth retrying: no answer, a 5xx (the server's store is busy or full), 408 and 429.
 * Any other 4xx says the rows themselves are bad; sending them again would fail again, so the
 * batch is dropped with the server's reason in the log.
 */
#include "agent/agent_int.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANSWER_MAX (64u << 10) /* of a server's answer, kept for its error message */
#define BATCH_MAX (64u << 20)  /* a spooled batch read back (the server's default body limit) */
#define BACKOFF_FIRST_MS 1000

struct shipper {
    pthread_mutex_t lock;
    char server[1024], token[512], source_name[SAMPLE_LABEL_MAX], source_kind[32];
    char ca_file[4096];
    char curl_error[CURL_ERROR_SIZE]; /* libcurl's detail of the last failure */
    int64_t interval_ms, retry_max_ms, timeout_ms;
    CURL *curl;
    struct spool spool;
    struct buf answer, replay;
    int64_t backoff_ms, next_try_ms; /* CLOCK_MONOTONIC ms; 0: a try is due */
    bool down;                       /* the last try got no usable answer */
    struct ship_stats st;
};

enum outcome { SENT, REFUSED, FAILED };

static size_t on_answer(char *data, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t room = b->max > b->len ? b->max - b->len : 0;
    buf_append(b, data, size * n < room ? size * n : room); /* the rest is not needed */
    return size * n;
}

/* "error: detail; detail" from a JSON error answer, else the answer's first bytes. */
static void answer_message(const struct buf *a, char *out, size_t size)
{
    json_t *j = a->len ? json_loadb(a->data, a->len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "error"));
    if (!msg) {
        snprintf(out, size, "%.200s", a->len ? a->data : "(no body)");
        json_decref(j);
        return;
    }
    size_t len = (size_t)snprintf(out, size, "%s", msg);
    json_t *details = json_object_get(j, "details"), *d;
    size_t i;
    json_array_foreach(details, i, d)
    {
        if (i >= 3 || len >= size)
            break;
        const char *text = json_is_string(d) ? json_string_value(d) : NULL;
        char *dumped = text ? NULL : json_dumps(d, JSON_COMPACT);
        len += (size_t)snprintf(out + len, size - len, "%s%s", i ? "; " : ": ",
                                text     ? text
                                : dumped ? dumped
                                         : "?");
        free(dumped);
    }
    json_decref(j);
}

static struct curl_slist *request_headers(const struct shipper *s)
{
    char line[1024];
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    snprintf(line, sizeof line, "X-Opsdb-Source: %s", s->source_name);
    h = curl_slist_append(h, line);
    snprintf(line, sizeof line, "X-Opsdb-Source-Kind: %s", s->source_kind);
    h = curl_slist_append(h, line);
    /* with its unit: a bare number is seconds to the server */
    snprintf(line, sizeof line, "X-Opsdb-Interval: %" PRId64 "ms", s->interval_ms);
    h = curl_slist_append(h, line);
    if (s->token[0]) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", s->token);
        h = curl_slist_append(h, line);
    }
    return h;
}

/* One POST of body to route (/api/v1/ingest/<table>, /api/v1/heartbeat); why says what failed
 * (FAILED, REFUSED). */
static enum outcome post(struct shipper *s, const char *route, const char *body, size_t len,
                         char *why, size_t why_size)
{
    char url[1200];
    snprintf(url, sizeof url, "%s%s", s->server, route);
    struct curl_slist *headers = request_headers(s);
    s->answer.len = 0;
    curl_easy_setopt(s->curl, CURLOPT_URL, url);
    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    s->curl_error[0] = '\0';
    CURLcode rc = curl_easy_perform(s->curl);
    curl_slist_free_all(headers);
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) { /* the detail says which certificate check failed, for one */
        snprintf(why, why_size, "%s", s->curl_error[0] ? s->curl_error : curl_easy_strerror(rc));
        return FAILED;
    }
    if (status >= 200 && status <= 299)
        return SENT;
    char msg[600];
    answer_message(&s->answer, msg, sizeof msg);
    snprintf(why, why_size, "the server answered %ld: %s", status, msg);
    bool retry = status >= 500 || status == 408 || status == 429 || status < 200;
    return retry ? FAILED : REFUSED;
}

static uint64_t count_rows(const char *body, size_t len)
{
    uint64_t rows = 0;
    for (size_t i = 0; i < len; i++)
        rows += body[i] == '\n' && i > 0 && body[i - 1] != '\n';
    return rows + (len > 0 && body[len - 1] != '\n');
}

static void note_failure(struct shipper *s, const char *why)
{
    int64_t first = BACKOFF_FIRST_MS < s->retry_max_ms ? BACKOFF_FIRST_MS : s->retry_max_ms;
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : first;
    if (s->backoff_ms > s->retry_max_ms)
        s->backoff_ms = s->retry_max_ms;
    s->next_try_ms = agent_mono_ms() + s->backoff_ms;
    if (!s->down)
        log_warn("agent: cannot send to %s: %s; spooling batches in %s until it answers", s->server,
                 why, s->spool.dir);
    else if (s->spool.n)
        log_warn("agent: %s still does not answer (%s): %zu batches (%" PRIu64
                 " bytes) spooled; next try in %.1f s",
                 s->server, why, s->spool.n, s->spool.bytes, (double)s->backoff_ms / 1000.0);
    s->down = true;
}

static void note_success(struct shipper *s)
{
    if (s->down)
        log_info("agent: %s answers again", s->server);
    s->down = false;
    s->backoff_ms = 0;
    s->next_try_ms = 0;
}

static void refused(struct shipper *s, const char *table, uint64_t rows, const char *why)
{
    log_error("agent: %s refused a batch of %" PRIu64 " rows of %s, which is dropped (not "
              "retried): %s",
              s->server, rows, table, why);
    s->st.batches_refused++;
    s->st.rows_refused += rows;
}

/* Sends the spool oldest first while the server takes it; stops at the first failure. */
static void replay(struct shipper *s)
{
    uint64_t batches = 0, rows = 0;
    while (s->spool.n && agent_mono_ms() >= s->next_try_ms) {
        const struct spool_entry x = s->spool.items[0];
        struct err e;
        char why[800];
        if (spool_read_oldest(&s->spool, &s->replay, &e) != 0) {
            log_error("agent: dropping a spooled batch that cannot be read: %s", e.msg);
            s->st.batches_dropped++;
            s->st.rows_dropped += x.rows;
            spool_pop(&s->spool);
            continue;
        }
        char route[128];
        snprintf(route, sizeof route, "/api/v1/ingest/%s", x.table);
        enum outcome o = post(s, route, s->replay.data, s->replay.len, why, sizeof why);
        if (o == FAILED) {
            note_failure(s, why);
            break;
        }
        note_success(s);
        if (o == REFUSED)
            refused(s, x.table, x.rows, why);
        else {
            batches++, rows += x.rows;
            s->st.batches_sent++, s->st.rows_sent += x.rows;
            s->st.batches_replayed++, s->st.rows_replayed += x.rows;
        }
        spool_pop(&s->spool);
    }
    if (batches)
        log_info("agent: replayed %" PRIu64 " batches (%" PRIu64 " rows) from the spool; %zu "
                 "left",
                 batches, rows, s->spool.n);
}

int ship_send(struct shipper *s, const char *table, const char *body, size_t len, struct err *e)
{
    uint64_t rows = count_rows(body, len);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    replay(s);
    if (s->spool.n == 0 && agent_mono_ms() >= s->next_try_ms) {
        char why[800], route[128];
        snprintf(route, sizeof route, "/api/v1/ingest/%s", table);
        enum outcome o = post(s, route, body, len, why, sizeof why);
        if (o != FAILED)
            note_success(s);
        if (o == SENT) {
            s->st.batches_sent++, s->st.rows_sent += rows;
            goto out;
        }
        if (o == REFUSED) {
            refused(s, table, rows, why);
            rc = err_set(e, E_INVALID, "%s", why);
            goto out;
        }
        note_failure(s, why);
    }
    struct spool_dropped dropped = {0, 0};
    rc = spool_put(&s->spool, table, body, len, rows, &dropped, e);
    s->st.batches_dropped += dropped.batches;
    s->st.rows_dropped += dropped.rows;
    if (rc == 0 && dropped.batches == 0)
        s->st.batches_spooled++;
    else if (rc == 0)
        s->st.batches_spooled += len <= s->spool.max_bytes;
    else
        log_error("agent: a batch of %" PRIu64 " rows is lost: %s", rows, e->msg);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int ship_alive(struct shipper *s, struct err *e)
{
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (s->spool.n == 0 && agent_mono_ms() >= s->next_try_ms) {
        char interval[32];
        snprintf(interval, sizeof interval, "%" PRId64 "ms", s->interval_ms);
        json_t *j = json_pack("{s:[{s:s, s:s, s:s}]}", "sources", "kind", s->source_kind, "name",
                              s->source_name, "interval", interval);
        char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        char why[800];
        enum outcome o =
            body ? post(s, "/api/v1/heartbeat", body, strlen(body), why, sizeof why) : REFUSED;
        if (!body)
            snprintf(why, sizeof why, "out of memory");
        free(body);
        if (o == FAILED) {
            note_failure(s, why);
            rc = err_set(e, E_IO, "%s", why);
        } else {
            note_success(s);
            rc = o == SENT ? 0 : err_set(e, E_INVALID, "%s", why);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int ship_flush(struct shipper *s, struct err *e)
{
    (void)e; /* a batch that cannot be read is dropped and logged; nothing else can fail */
    pthread_mutex_lock(&s->lock);
    replay(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int64_t ship_retry_in_ms(struct shipper *s)
{
    pthread_mutex_lock(&s->lock);
    int64_t left = s->next_try_ms - agent_mono_ms();
    if (s->spool.n == 0)
        left = -1;
    else if (left < 0)
        left = 0;
    pthread_mutex_unlock(&s->lock);
    return left;
}

void ship_get_stats(struct shipper *s, struct ship_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->st;
    out->spool_batches = s->spool.n;
    out->spool_bytes = s->spool.bytes;
    pthread_mutex_unlock(&s->lock);
}

static int copy(char *dst, size_t size, const char *src, const char *what, struct err *e)
{
    if ((size_t)snprintf(dst, size, "%s", src ? src : "") >= size)
        return err_set(e, E_INVALID, "%s is longer than %zu bytes", what, size - 1);
    return 0;
}

int shipper_new(struct shipper **out, const struct ship_opts *o, struct err *e)
{
    *out = NULL;
    if (!o->server || !o->server[0])
        return err_set(e, E_INVALID, "no server to send to (--server URL, or agent.server)");
    struct shipper *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, E_NOMEM, "out of memory");
    s->spool.lock_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    buf_init(&s->answer, ANSWER_MAX);
    buf_init(&s->replay, BATCH_MAX);
    const char *scheme = strstr(o->server, "://") ? "" : "http://";
    size_t n = strlen(o->server);
    while (n > 0 && o->server[n - 1] == '/')
        n--; /* the routes are appended with their own slash */
    int rc = 0;
    if ((size_t)snprintf(s->server, sizeof s->server, "%s%.*s", scheme, (int)n, o->server) >=
        sizeof s->server)
        rc = err_set(e, E_INVALID, "the server URL is longer than %zu bytes", sizeof s->server);
    if (rc == 0)
        rc = copy(s->token, sizeof s->token, o->token, "the token", e);
    if (rc == 0)
        rc = copy(s->source_name, sizeof s->source_name, o->source_name, "the source name", e);
    if (rc == 0)
        rc = copy(s->source_kind, sizeof s->source_kind, o->source_kind, "the source kind", e);
    if (rc == 0)
        rc = copy(s->ca_file, sizeof s->ca_file, o->ca_file, "the CA file's path", e);
    if (rc == 0 && s->ca_file[0])
        rc = tls_ca_file_check(s->ca_file, "agent.ca_file", e);
    s->interval_ms = o->interval_ms;
    s->retry_max_ms = o->retry_max_ms > 0 ? o->retry_max_ms : 30000;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    if (rc == 0 && !(s->curl = curl_easy_init()))
        rc = err_set(e, E_NOMEM, "cannot start an HTTP client");
    if (rc == 0)
        rc = spool_open(&s->spool, o->spool_dir, (uint64_t)o->spool_max_bytes, e);
    if (rc != 0) {
        shipper_free(&s);
        return rc;
    }
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
    curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)s->timeout_ms);
    curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &s->answer);
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, s->curl_error);
    tls_client_setup(s->curl, s->ca_file);
    if (s->spool.n)
        log_info("agent: the spool %s holds %zu batches (%" PRIu64 " bytes) from an earlier "
                 "run; they are sent first",
                 s->spool.dir, s->spool.n, s->spool.bytes);
    *out = s;
    return 0;
}

void shipper_free(struct shipper **sp)
{
    struct shipper *s = *sp;
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    spool_close(&s->spool);
    buf_release(&s->answer);
    buf_release(&s->replay);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *sp = NULL;
}
