/*
 * The notifier (src/alert/notify.c) against real receivers: an HTTP server on 127.0.0.1 run by
 * the test, which records each request and can answer 500 or be slow, and programs written by
 * the test for exec receivers. Rows are read back from notification_log of a real store and
 * writer in a temporary directory. Covered: the webhook payload, grouping, group_wait,
 * group_interval and repeat_interval, resolved notifications (also of alerts fired before a
 * restart), routing (match, match_re, continue, inheritance), the engine's alerting keys left
 * alone (inhibition is the engine's), the alertmanager receiver's postable alerts, escalation
 * steps sent straight to their receiver, retries with backoff, giving up, the HMAC signature, a
 * dead and a slow receiver next to a healthy one, exec receivers and their timeout, config
 * errors with their lines, dropping (no receiver, invalid alerts, a full queue), shutdown and
 * metrics. Email receivers and a real Alertmanager: tests/e2e/test_notify_receivers.py.
 */
#include "unit.h"

#include "alert/alert_int.h"
#include "ingest/ingest.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STARTS_MS 1767225600123LL /* 2026-01-01T00:00:00.123Z */
#define ENDS_MS 1767225900000LL   /* 2026-01-01T00:05:00.000Z */

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* ---- a webhook receiver ------------------------------------------------------------------- */

#define REQS_MAX 64

struct req {
    char *head; /* request line and headers */
    char *body;
    int64_t at_ms; /* monotonic, when it was read */
};

struct srv {
    int fd, port;
    pthread_t thread;
    pthread_mutex_t lock;
    atomic_bool stop;
    int fail_first; /* answer 500 to the first fail_first requests */
    int sleep_ms;   /* wait this long before answering */
    size_t nreqs;
    struct req reqs[REQS_MAX];
};

/* Reads one request from c into r; false on a broken one. */
static bool read_request(int c, struct req *r)
{
    size_t cap = 1 << 20, len = 0;
    char *data = calloc(1, cap + 1);
    char *end = NULL;
    size_t want = 0;
    while (len < cap) {
        ssize_t got = recv(c, data + len, cap - len, 0);
        if (got <= 0)
            break;
        len += (size_t)got;
        data[len] = '\0';
        if (!end && (end = strstr(data, "\r\n\r\n"))) {
            const char *cl = strcasestr(data, "\r\ncontent-length:");
            want = (size_t)(end + 4 - data) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (end && len >= want)
            break;
    }
    if (!end || len < want) {
        free(data);
        return false;
    }
    size_t head_len = (size_t)(end - data);
    r->head = strndup(data, head_len);
    r->body = strndup(end + 4, want - head_len - 4);
    r->at_ms = now_ms();
    free(data);
    return true;
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        struct timeval tv = {5, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        struct req r;
        if (!read_request(c, &r)) {
            close(c);
            continue;
        }
        pthread_mutex_lock(&s->lock);
        size_t i = s->nreqs;
        if (i < REQS_MAX)
            s->reqs[s->nreqs++] = r;
        bool fail = (int)i < s->fail_first;
        int wait = s->sleep_ms;
        pthread_mutex_unlock(&s->lock);
        if (i >= REQS_MAX)
            free(r.head), free(r.body);
        for (int slept = 0; slept < wait && !atomic_load(&s->stop); slept += 10)
            sleep_ms(10);
        const char *answer = fail ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 12\r\n"
                                    "Connection: close\r\n\r\nbroken\nbadly"
                                  : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                                    "Connection: close\r\n\r\n";
        send(c, answer, strlen(answer), MSG_NOSIGNAL);
        close(c);
    }
    return NULL;
}

/* A listening socket on 127.0.0.1 and a free port; listen false: the port is closed again (a
 * dead receiver). */
static int bind_local(bool listening, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    if (!listening) {
        close(fd);
        return -1;
    }
    assert_int_equal(listen(fd, 16), 0);
    return fd;
}

static struct srv *srv_start(int fail_first, int sleep_for_ms)
{
    struct srv *s = calloc(1, sizeof *s);
    s->fd = bind_local(true, &s->port);
    s->fail_first = fail_first;
    s->sleep_ms = sleep_for_ms;
    pthread_mutex_init(&s->lock, NULL);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
    return s;
}

static void srv_stop(struct srv **sp)
{
    struct srv *s = *sp;
    if (!s)
        return;
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->fd);
    for (size_t i = 0; i < s->nreqs; i++)
        free(s->reqs[i].head), free(s->reqs[i].body);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *sp = NULL;
}

static size_t srv_count(struct srv *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->nreqs;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Waits up to timeout_ms for n requests; returns how many came. */
static size_t srv_wait(struct srv *s, size_t n, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    while (srv_count(s) < n && now_ms() < until)
        sleep_ms(5);
    return srv_count(s);
}

/* Request i's body as JSON (the caller decrefs). */
static json_t *srv_json(struct srv *s, size_t i)
{
    pthread_mutex_lock(&s->lock);
    assert_true(i < s->nreqs);
    json_error_t je;
    json_t *j = json_loads(s->reqs[i].body, 0, &je);
    pthread_mutex_unlock(&s->lock);
    if (!j)
        fail_msg("request %zu is not JSON: %s", i, je.text);
    return j;
}

/* ---- the environment: a store, its writer, a notifier ------------------------------------- */

/* The writer's commit hook: while closed, holds the writer (and whoever waits on it) at the first
 * commit of notification_log rows. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool closed;
    bool held; /* the writer is waiting in the hook */
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};

static void gate_hook(void *arg, const struct batch *const *batches, size_t n)
{
    (void)arg;
    bool log_rows = false;
    for (size_t i = 0; i < n; i++)
        log_rows |= strcmp(batches[i]->table->name, "notification_log") == 0;
    pthread_mutex_lock(&gate.lock);
    while (log_rows && gate.closed) {
        gate.held = true;
        pthread_cond_broadcast(&gate.cond);
        pthread_cond_wait(&gate.cond, &gate.lock);
    }
    gate.held = false;
    pthread_mutex_unlock(&gate.lock);
}

static void gate_set(bool closed)
{
    pthread_mutex_lock(&gate.lock);
    gate.closed = closed;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.lock);
}

struct env {
    char dir[64];
    char path[128]; /* the config file */
    struct config cfg;
    struct store *store;
    struct writer *w;
    struct notifier *n;
    struct srv *srv[4];
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/opsdb-test-notify-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->path, sizeof e->path, "%s/opsdb.yaml", e->dir);
    config_defaults(&e->cfg);
    snprintf(e->cfg.db, sizeof e->cfg.db, "%s/db.sqlite", e->dir);
    snprintf(e->cfg.sqlite_synchronous, sizeof e->cfg.sqlite_synchronous, "normal");
    struct err err;
    if (store_open(&e->store, &e->cfg, STORE_READWRITE, &err) != 0)
        fail_msg("store_open: %s", err.msg);
    if (writer_new(&e->w, e->store, &e->cfg, &err) != 0)
        fail_msg("writer_new: %s", err.msg);
    writer_on_commit(e->w, gate_hook, NULL);
    *state = e;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct env *e = *state;
    gate_set(false);
    notifier_free(&e->n, 5000);
    for (size_t i = 0; i < 4; i++)
        srv_stop(&e->srv[i]);
    writer_free(&e->w);
    store_close(&e->store);
    nftw(e->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

/* Writes the config file from fmt (ports and paths filled in). */
static void write_config(struct env *e, const char *fmt, va_list ap)
{
    FILE *f = fopen(e->path, "w");
    assert_non_null(f);
    vfprintf(f, fmt, ap);
    fclose(f);
}

static void start(struct env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void start(struct env *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_config(e, fmt, ap);
    va_end(ap);
    struct err err;
    err_clear(&err);
    if (notifier_new(&e->n, e->path, "", e->w, &err) != 0)
        fail_msg("notifier_new: %s", err.msg);
}

/* Starts a notifier with one webhook receiver, hook, at port: extra adds keys to its webhook
 * map, route is the inside of the route's flow map (after receiver: hook), tail follows it. */
static void start_hook(struct env *e, int port, const char *extra, const char *route,
                       const char *tail)
{
    start(e,
          "alerting:\n"
          "  receivers:\n"
          "    - name: hook\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\"%s}\n"
          "  route: {receiver: hook, %s}\n"
          "%s",
          port, extra, route, tail);
}

static void post_at(struct env *e, const char *id, const char *status, const char *labels,
                    const char *incident)
{
    json_error_t je;
    json_t *l = json_loads(labels, 0, &je);
    if (!l)
        fail_msg("labels %s: %s", labels, je.text);
    json_t *ann = json_pack("{s:s, s:s}", "summary", id, "runbook", "https://runbooks/x");
    bool firing = strcmp(status, "firing") == 0;
    struct notify_alert a = {id,       status, l, ann, 97.5, STARTS_MS, firing ? 0 : ENDS_MS,
                             incident, NULL};
    notifier_post(e->n, &a);
    json_decref(l);
    json_decref(ann);
}

static void post(struct env *e, const char *id, const char *status, const char *labels)
{
    post_at(e, id, status, labels, NULL);
}

/* An escalation step of alert id: firing, to receiver. */
static void post_escalation(struct env *e, const char *id, const char *labels, const char *receiver)
{
    json_t *l = json_loads(labels, 0, NULL);
    assert_non_null(l);
    struct notify_alert a = {id, "firing", l, NULL, 97.5, STARTS_MS, 0, NULL, receiver};
    notifier_post(e->n, &a);
    json_decref(l);
}

/* ---- reading notification_log and the metrics --------------------------------------------- */

#define ROWS_MAX 64

/* The rows of receiver, oldest first, each as "status attempt http_status alerts|error", e.g.
 * "retrying 1 500 1|HTTP 500: broken badly"; NULL values are "-". Returns the count. */
static size_t rows_of(struct env *e, const char *receiver, char out[][300], double *latency_ms,
                      char group_keys[][300])
{
    struct store_reader *r = store_reader_get(e->store);
    struct store_param p = {"r", true, 0, receiver};
    struct store_query q = {.sql =
                                "SELECT status, attempt, http_status, alerts, error, latency_ms, "
                                "group_key FROM notification_log WHERE receiver = :r "
                                "ORDER BY ts, attempt",
                            .params = &p,
                            .nparams = 1};
    struct store_result res;
    struct err err;
    if (store_reader_query(r, &q, &res, &err) != 0)
        fail_msg("query: %s", err.msg);
    size_t n = res.nrows < ROWS_MAX ? res.nrows : ROWS_MAX;
    for (size_t i = 0; i < n; i++) {
        const struct value *v = res.values + i * res.ncols;
        char http[16] = "-";
        if (v[2].type == VAL_INT)
            snprintf(http, sizeof http, "%lld", (long long)v[2].i);
        snprintf(out[i], 300, "%.*s %lld %s %lld|%.*s", (int)v[0].len, v[0].s, (long long)v[1].i,
                 http, (long long)v[3].i, v[4].type == VAL_TEXT ? (int)v[4].len : 1,
                 v[4].type == VAL_TEXT ? v[4].s : "-");
        if (latency_ms)
            latency_ms[i] = v[5].type == VAL_REAL  ? v[5].d
                            : v[5].type == VAL_INT ? (double)v[5].i
                                                   : -1;
        if (group_keys)
            snprintf(group_keys[i], 300, "%.*s", (int)v[6].len, v[6].s);
    }
    store_result_release(&res);
    store_reader_put(e->store, r);
    return n;
}

/* Waits up to timeout_ms for n rows of receiver; returns how many there are. */
static size_t rows_wait(struct env *e, const char *receiver, size_t n, int timeout_ms,
                        char out[][300])
{
    int64_t until = now_ms() + timeout_ms;
    size_t got;
    while ((got = rows_of(e, receiver, out, NULL, NULL)) < n && now_ms() < until)
        sleep_ms(20);
    return got;
}

/* The value of the metric line that starts with name (its labels included); -1 when absent. */
static double metric(struct env *e, const char *name)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    notifier_metrics(e->n, &b);
    double v = -1;
    size_t len = strlen(name);
    for (const char *line = b.data; line && *line; line = strchr(line, '\n') + 1) {
        if (strncmp(line, name, len) == 0 && line[len] == ' ')
            v = strtod(line + len + 1, NULL);
        if (!strchr(line, '\n'))
            break;
    }
    buf_release(&b);
    return v;
}

static double metric_wait(struct env *e, const char *name, double want, int timeout_ms)
{
    int64_t until = now_ms() + timeout_ms;
    double v;
    while ((v = metric(e, name)) != want && now_ms() < until)
        sleep_ms(10);
    return v;
}

#define assert_str_contains(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            fail_msg("'%s' does not contain '%s'", h_ ? h_ : "(null)", n_);                        \
    } while (0)

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("member %s is not a string", key);
    return json_string_value(v);
}

/* Asserts that o is the object given as JSON text. */
static void assert_json_equal(json_t *o, const char *want)
{
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    if (!json_equal(o, w)) {
        char *got = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("got %s, want %s", got, want);
    }
    json_decref(w);
}

/* The index of the request whose groupLabels are want (JSON), or fails. */
static size_t find_group(struct srv *s, size_t n, const char *want)
{
    json_t *w = json_loads(want, 0, NULL);
    for (size_t i = 0; i < n; i++) {
        json_t *j = srv_json(s, i);
        bool same = json_equal(json_object_get(j, "groupLabels"), w);
        json_decref(j);
        if (same) {
            json_decref(w);
            return i;
        }
    }
    fail_msg("no request has groupLabels %s", want);
    return 0;
}

/* ---- the payload -------------------------------------------------------------------------- */

static void payload_shape(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, "", "group_by: [alertname], group_wait: 100ms", "");
    post_at(e, "HighCPU{host=\"a\"}", "firing",
            "{\"alertname\":\"HighCPU\",\"severity\":\"critical\",\"host\":\"a\"}", "inc-7");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    const char *head = e->srv[0]->reqs[0].head;
    assert_str_contains(head, "POST /hook HTTP/1.1");
    assert_str_contains(head, "Content-Type: application/json");
    assert_null(strcasestr(head, "X-Opsdb-Signature")); /* no secret, no signature */

    json_t *j = srv_json(e->srv[0], 0);
    static const char *const members[] = {
        "version",      "groupKey",          "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL",     "alerts", "incident"};
    assert_int_equal(json_object_size(j), sizeof members / sizeof members[0]);
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
        if (!json_object_get(j, members[i]))
            fail_msg("member %s is missing", members[i]);
    assert_string_equal(jstr(j, "version"), "4");
    assert_string_equal(jstr(j, "groupKey"), "{}:{alertname=\"HighCPU\"}");
    assert_int_equal(json_integer_value(json_object_get(j, "truncatedAlerts")), 0);
    assert_true(json_is_integer(json_object_get(j, "truncatedAlerts")));
    assert_string_equal(jstr(j, "status"), "firing");
    assert_string_equal(jstr(j, "receiver"), "hook");
    assert_json_equal(json_object_get(j, "groupLabels"), "{\"alertname\":\"HighCPU\"}");
    assert_json_equal(json_object_get(j, "commonLabels"),
                      "{\"alertname\":\"HighCPU\",\"severity\":\"critical\",\"host\":\"a\"}");
    assert_json_equal(
        json_object_get(j, "commonAnnotations"),
        "{\"summary\":\"HighCPU{host=\\\"a\\\"}\",\"runbook\":\"https://runbooks/x\"}");
    assert_string_equal(jstr(j, "externalURL"), "");
    assert_string_equal(jstr(j, "incident"), "inc-7");
    json_t *alerts = json_object_get(j, "alerts");
    assert_int_equal(json_array_size(alerts), 1);
    json_t *a = json_array_get(alerts, 0);
    assert_int_equal(json_object_size(a), 7);
    assert_string_equal(jstr(a, "status"), "firing");
    assert_json_equal(json_object_get(a, "labels"),
                      "{\"alertname\":\"HighCPU\",\"severity\":\"critical\",\"host\":\"a\"}");
    assert_json_equal(
        json_object_get(a, "annotations"),
        "{\"summary\":\"HighCPU{host=\\\"a\\\"}\",\"runbook\":\"https://runbooks/x\"}");
    assert_string_equal(jstr(a, "startsAt"), "2026-01-01T00:00:00.123Z");
    assert_string_equal(jstr(a, "endsAt"), "0001-01-01T00:00:00Z");
    assert_string_equal(jstr(a, "generatorURL"), "");
    const char *fp = jstr(a, "fingerprint");
    assert_int_equal(strlen(fp), 16);
    assert_int_equal(strspn(fp, "0123456789abcdef"), 16);
    char group_key[300];
    snprintf(group_key, sizeof group_key, "%s", jstr(j, "groupKey"));
    json_decref(j);

    char rows[ROWS_MAX][300], keys[ROWS_MAX][300];
    double latency[ROWS_MAX];
    assert_int_equal(rows_wait(e, "hook", 1, 3000, rows), 1);
    rows_of(e, "hook", rows, latency, keys);
    assert_string_equal(rows[0], "ok 1 200 1|-");
    assert_string_equal(keys[0], group_key);
    assert_true(latency[0] >= 0 && latency[0] < 3000);

    assert_true(metric(e, "opsdb_notifications_total{receiver=\"hook\",status=\"ok\"}") == 1);
    assert_true(metric(e, "opsdb_notifications_total{receiver=\"hook\",status=\"failed\"}") == 0);
    assert_true(metric(e, "opsdb_notification_latency_seconds_count{receiver=\"hook\"}") == 1);
    assert_true(metric(e, "opsdb_notification_queue_length") == 0);
    struct buf b;
    buf_init(&b, 1 << 16);
    notifier_metrics(e->n, &b);
    assert_str_contains(b.data, "# TYPE opsdb_notifications_total counter\n");
    assert_str_contains(b.data, "# HELP opsdb_notification_queue_length ");
    assert_str_contains(b.data, "# TYPE opsdb_notification_latency_seconds summary\n");
    buf_release(&b);
}

/* ---- grouping and timing ------------------------------------------------------------------ */

static void grouping(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, "", "group_by: [alertname], group_wait: 300ms", "");
    post(e, "x-a", "firing", "{\"alertname\":\"X\",\"host\":\"a\",\"team\":\"db\"}");
    post(e, "x-b", "firing", "{\"alertname\":\"X\",\"host\":\"b\",\"team\":\"db\"}");
    post(e, "y-a", "firing", "{\"alertname\":\"Y\",\"host\":\"a\"}");
    assert_int_equal(srv_wait(e->srv[0], 2, 3000), 2);
    sleep_ms(400);
    assert_int_equal(srv_count(e->srv[0]), 2); /* one POST per group, not per alert */
    json_t *x = srv_json(e->srv[0], find_group(e->srv[0], 2, "{\"alertname\":\"X\"}"));
    assert_int_equal(json_array_size(json_object_get(x, "alerts")), 2);
    assert_json_equal(json_object_get(x, "commonLabels"), "{\"alertname\":\"X\",\"team\":\"db\"}");
    assert_json_equal(json_object_get(x, "commonAnnotations"),
                      "{\"runbook\":\"https://runbooks/x\"}");
    for (size_t i = 0; i < 2; i++) { /* in the order they came */
        json_t *a = json_array_get(json_object_get(x, "alerts"), i);
        assert_string_equal(jstr(json_object_get(a, "labels"), "host"), i ? "b" : "a");
    }
    json_decref(x);
    json_t *y = srv_json(e->srv[0], find_group(e->srv[0], 2, "{\"alertname\":\"Y\"}"));
    assert_int_equal(json_array_size(json_object_get(y, "alerts")), 1);
    json_decref(y);
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "hook", 2, 3000, rows), 2);
}

static void max_alerts_truncates(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, ", max_alerts: 2", "group_wait: 100ms", "");
    post(e, "a", "firing", "{\"alertname\":\"X\",\"host\":\"a\"}");
    post(e, "b", "firing", "{\"alertname\":\"X\",\"host\":\"b\"}");
    post(e, "c", "firing", "{\"alertname\":\"X\",\"host\":\"c\"}");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    json_t *j = srv_json(e->srv[0], 0);
    assert_int_equal(json_array_size(json_object_get(j, "alerts")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "truncatedAlerts")), 1);
    assert_string_equal(jstr(j, "groupKey"), "{}:{}"); /* group_by empty: one group */
    assert_json_equal(json_object_get(j, "groupLabels"), "{}");
    json_decref(j);
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "hook", 1, 3000, rows), 1);
    assert_string_equal(rows[0], "ok 1 200 2|-"); /* the alerts it carried */
}

static void wait_interval_repeat(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, "",
               "group_by: [alertname], group_wait: 300ms, group_interval: 200ms, "
               "repeat_interval: 1s",
               "");
    int64_t t0 = now_ms();
    post(e, "a", "firing", "{\"alertname\":\"X\",\"host\":\"a\"}");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    int64_t at1 = e->srv[0]->reqs[0].at_ms;
    if (at1 - t0 < 280 || at1 - t0 > 900)
        fail_msg("the first notification came %lld ms after the alert, not after group_wait",
                 (long long)(at1 - t0));
    /* a change waits for group_interval after the last send, not for repeat_interval */
    post(e, "b", "firing", "{\"alertname\":\"X\",\"host\":\"b\"}");
    assert_int_equal(srv_wait(e->srv[0], 2, 3000), 2);
    int64_t at2 = e->srv[0]->reqs[1].at_ms;
    if (at2 - at1 < 150 || at2 - at1 > 700)
        fail_msg("the change came %lld ms after the first send, not group_interval",
                 (long long)(at2 - at1));
    json_t *j = srv_json(e->srv[0], 1);
    assert_int_equal(json_array_size(json_object_get(j, "alerts")), 2);
    json_decref(j);
    /* unchanged and firing: sent again after repeat_interval, and not before */
    sleep_ms(700);
    assert_int_equal(srv_count(e->srv[0]), 2);
    assert_int_equal(srv_wait(e->srv[0], 3, 3000), 3);
    int64_t at3 = e->srv[0]->reqs[2].at_ms;
    if (at3 - at2 < 950 || at3 - at2 > 1700)
        fail_msg("the repeat came %lld ms after the last send, not repeat_interval",
                 (long long)(at3 - at2));
    j = srv_json(e->srv[0], 2);
    assert_int_equal(json_array_size(json_object_get(j, "alerts")), 2);
    assert_string_equal(jstr(j, "status"), "firing");
    json_decref(j);
}

static void resolved_once(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    e->srv[1] = srv_start(0, 0);
    start(e,
          "alerting:\n"
          "  receivers:\n"
          "    - name: hook\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\", send_resolved: true}\n"
          "    - name: quiet\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\", send_resolved: false}\n"
          "  route:\n"
          "    receiver: hook\n"
          "    group_wait: 100ms\n"
          "    group_interval: 200ms\n"
          "    repeat_interval: 1h\n"
          "    routes:\n"
          "      - {receiver: quiet, continue: true}\n"
          "      - {receiver: hook}\n",
          e->srv[0]->port, e->srv[1]->port);
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    assert_int_equal(srv_wait(e->srv[1], 1, 3000), 1);
    post(e, "a", "resolved", "{\"alertname\":\"X\"}");
    assert_int_equal(srv_wait(e->srv[0], 2, 3000), 2);
    json_t *j = srv_json(e->srv[0], 1);
    assert_string_equal(jstr(j, "status"), "resolved");
    json_t *a = json_array_get(json_object_get(j, "alerts"), 0);
    assert_string_equal(jstr(a, "status"), "resolved");
    assert_string_equal(jstr(a, "startsAt"), "2026-01-01T00:00:00.123Z");
    assert_string_equal(jstr(a, "endsAt"), "2026-01-01T00:05:00.000Z");
    json_decref(j);
    sleep_ms(700); /* several group_intervals: nothing more, the group is gone */
    assert_int_equal(srv_count(e->srv[0]), 2);
    assert_int_equal(srv_count(e->srv[1]), 1); /* send_resolved: false */
    /* another alert of the group: its notification does not carry the resolved one again */
    post(e, "b", "firing", "{\"alertname\":\"X\"}");
    assert_int_equal(srv_wait(e->srv[0], 3, 3000), 3);
    j = srv_json(e->srv[0], 2);
    assert_string_equal(jstr(j, "status"), "firing");
    json_t *alerts = json_object_get(j, "alerts");
    assert_int_equal(json_array_size(alerts), 1);
    assert_string_equal(jstr(json_array_get(alerts, 0), "status"), "firing");
    json_decref(j);
}

/* After a restart (a new notifier), an alert that fired before it resolves: the engine posts only
 * the resolution, and it is sent although this notifier never sent the alert firing. */
static void resolved_after_restart(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, "", "group_by: [alertname], group_wait: 100ms", "");
    post(e, "a", "resolved", "{\"alertname\":\"X\"}");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    json_t *j = srv_json(e->srv[0], 0);
    assert_string_equal(jstr(j, "status"), "resolved");
    assert_string_equal(jstr(json_array_get(json_object_get(j, "alerts"), 0), "endsAt"),
                        "2026-01-01T00:05:00.000Z");
    json_decref(j);
    sleep_ms(300);
    assert_int_equal(srv_count(e->srv[0]), 1);
}

/* ---- routing ------------------------------------------------------------------------------ */

static void routing(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < 3; i++)
        e->srv[i] = srv_start(0, 0);
    start(e,
          "alerting:\n"
          "  receivers:\n"
          "    - name: root\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\"}\n"
          "    - name: crit\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\"}\n"
          "    - name: web\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\"}\n"
          "  route:\n"
          "    receiver: root\n"
          "    group_by: [alertname]\n"
          "    group_wait: 100ms\n"
          "    routes:\n"
          "      - match: {severity: critical}\n"
          "        receiver: crit\n"
          "        continue: true\n"
          "      - match_re: {host: \"web-.*\"}\n"
          "        receiver: web\n"
          "        group_by: [host]\n"
          "      - match: {alertname: X}\n" /* not reached: web took X */
          "        group_by: [severity]\n",
          e->srv[0]->port, e->srv[1]->port, e->srv[2]->port);
    post(e, "x", "firing", "{\"alertname\":\"X\",\"severity\":\"critical\",\"host\":\"web-1\"}");
    post(e, "y", "firing", "{\"alertname\":\"Y\",\"severity\":\"warning\",\"host\":\"db-1\"}");
    post(e, "z", "firing", "{\"alertname\":\"Z\",\"severity\":\"warning\",\"host\":\"old-web-1\"}");
    assert_int_equal(srv_wait(e->srv[0], 2, 3000), 2);
    assert_int_equal(srv_wait(e->srv[1], 1, 3000), 1);
    assert_int_equal(srv_wait(e->srv[2], 1, 3000), 1);
    sleep_ms(300);
    assert_int_equal(srv_count(e->srv[0]),
                     2); /* Y and Z: no child matched ("old-web-1": match_re is anchored) */
    assert_int_equal(srv_count(e->srv[1]), 1);
    assert_int_equal(srv_count(e->srv[2]), 1);
    find_group(e->srv[0], 2, "{\"alertname\":\"Y\"}");
    find_group(e->srv[0], 2, "{\"alertname\":\"Z\"}");
    json_t *j = srv_json(e->srv[1], 0); /* group_by inherited from the root */
    assert_json_equal(json_object_get(j, "groupLabels"), "{\"alertname\":\"X\"}");
    assert_string_equal(jstr(j, "groupKey"), "{}/{severity=\"critical\"}:{alertname=\"X\"}");
    assert_string_equal(jstr(j, "receiver"), "crit");
    json_decref(j);
    j = srv_json(e->srv[2], 0); /* continue: reached after crit; its own group_by */
    assert_json_equal(json_object_get(j, "groupLabels"), "{\"host\":\"web-1\"}");
    assert_string_equal(jstr(j, "groupKey"), "{}/{host=~\"web-.*\"}:{host=\"web-1\"}");
    json_decref(j);
}

/* The keys of alerting other than receivers and route belong to the engine (inhibit_rules,
 * maintenance and dependencies are suppress.c's, escalations escalate.c's) or to config.c: the
 * notifier reads none of them, and mutes nothing itself. */
static void other_alerting_keys_ignored(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, "", "group_by: [alertname, host], group_wait: 200ms",
               "  rule_files: [rules.yaml]\n"
               "  interval: 15s\n"
               "  default_rules: off\n"
               "  flapping_transitions: 6\n"
               "  flapping_window: 30m\n"
               "  inhibit_rules:\n"
               "    - {source_matchers: \"severity=critical\", target_matchers: "
               "\"severity=warning\", equal: [host]}\n"
               "    - {source_match: {severity: critical}, target_match: {severity: warning}}\n"
               "  dependencies: {db: [api, worker]}\n"
               "  maintenance:\n"
               "    - {name: upgrade, matchers: \"host=a\", weekdays: [sat], from: \"02:00\", "
               "to: \"04:00\"}\n"
               "  escalations:\n"
               "    - {name: db, matchers: \"team=db\", steps: [{after: 15m, receiver: hook}]}\n"
               "  some_future_key: {anything: [1, 2]}\n");
    post(e, "down-a", "firing",
         "{\"alertname\":\"Down\",\"severity\":\"critical\",\"host\":\"a\"}");
    post(e, "slow-a", "firing", "{\"alertname\":\"Slow\",\"severity\":\"warning\",\"host\":\"a\"}");
    assert_int_equal(srv_wait(e->srv[0], 2, 3000), 2); /* the warning is not muted here */
    find_group(e->srv[0], 2, "{\"alertname\":\"Down\",\"host\":\"a\"}");
    find_group(e->srv[0], 2, "{\"alertname\":\"Slow\",\"host\":\"a\"}");
}

/* ---- Alertmanager receivers --------------------------------------------------------------- */

/* POST {url}/api/v2/alerts with Alertmanager's postable alerts, one POST per group send; endsAt
 * only once resolved. (tests/e2e/test_notify_receivers.py runs a real Alertmanager.) */
static void alertmanager_postable_alerts(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start(e,
          "alerting:\n  receivers:\n"
          "    - {name: am, alertmanager: {url: \"http://127.0.0.1:%d/\", timeout: 2s}}\n"
          "  route: {receiver: am, group_by: [alertname], group_wait: 100ms, group_interval: "
          "100ms}\n",
          e->srv[0]->port);
    post(e, "a", "firing", "{\"alertname\":\"X\",\"host\":\"a\"}");
    post(e, "b", "firing", "{\"alertname\":\"X\",\"host\":\"b\"}");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    assert_str_contains(e->srv[0]->reqs[0].head, "POST /api/v2/alerts HTTP/1.1");
    assert_str_contains(e->srv[0]->reqs[0].head, "Content-Type: application/json");
    json_t *j = srv_json(e->srv[0], 0);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 2);
    json_t *a = json_array_get(j, 0);
    assert_int_equal(json_object_size(a), 4); /* no endsAt while firing */
    assert_json_equal(json_object_get(a, "labels"), "{\"alertname\":\"X\",\"host\":\"a\"}");
    assert_json_equal(json_object_get(a, "annotations"),
                      "{\"summary\":\"a\",\"runbook\":\"https://runbooks/x\"}");
    assert_string_equal(jstr(a, "startsAt"), "2026-01-01T00:00:00.123Z");
    assert_string_equal(jstr(a, "generatorURL"), "");
    json_decref(j);
    post(e, "a", "resolved", "{\"alertname\":\"X\",\"host\":\"a\"}");
    assert_int_equal(srv_wait(e->srv[0], 2, 3000), 2);
    j = srv_json(e->srv[0], 1);
    assert_int_equal(json_array_size(j), 2);
    for (size_t i = 0; i < 2; i++) {
        a = json_array_get(j, i);
        const char *host = jstr(json_object_get(a, "labels"), "host");
        if (strcmp(host, "a") == 0)
            assert_string_equal(jstr(a, "endsAt"), "2026-01-01T00:05:00.000Z");
        else
            assert_null(json_object_get(a, "endsAt"));
    }
    json_decref(j);
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "am", 2, 3000, rows), 2);
    assert_string_equal(rows[0], "ok 1 200 2|-");
}

/* ---- escalations ------------------------------------------------------------------------- */

/* notify_alert.receiver: straight to that receiver, not through the routing tree, not held by
 * group_wait, in a group of its own that is not repeated. */
static void escalation_to_its_receiver(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < 2; i++) /* hook, oncall */
        e->srv[i] = srv_start(0, 0);
    start(e,
          "alerting:\n  receivers:\n"
          "    - {name: hook, webhook: {url: \"http://127.0.0.1:%d/hook\"}}\n"
          "    - {name: oncall, webhook: {url: \"http://127.0.0.1:%d/hook\"}}\n"
          "  route: {receiver: hook, group_by: [alertname], group_wait: 1h, group_interval: "
          "100ms, repeat_interval: 200ms}\n",
          e->srv[0]->port, e->srv[1]->port);
    const char *labels = "{\"alertname\":\"Down\",\"severity\":\"page\",\"host\":\"a\"}";
    post(e, "down-a", "firing", labels); /* routed: group_wait holds it */
    int64_t t0 = now_ms();
    post_escalation(e, "down-a", labels, "oncall");
    assert_int_equal(srv_wait(e->srv[1], 1, 3000), 1);
    if (e->srv[1]->reqs[0].at_ms - t0 > 500)
        fail_msg("the escalation came %lld ms after it was posted",
                 (long long)(e->srv[1]->reqs[0].at_ms - t0));
    json_t *j = srv_json(e->srv[1], 0);
    assert_string_equal(jstr(j, "receiver"), "oncall");
    assert_string_equal(jstr(j, "groupKey"), "escalation/oncall/down-a");
    assert_string_equal(jstr(j, "status"), "firing");
    assert_json_equal(json_object_get(j, "groupLabels"), labels);
    assert_int_equal(json_array_size(json_object_get(j, "alerts")), 1);
    json_decref(j);
    char rows[ROWS_MAX][300], keys[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "oncall", 1, 3000, rows), 1);
    rows_of(e, "oncall", rows, NULL, keys);
    assert_string_equal(rows[0], "ok 1 200 1|-");
    assert_string_equal(keys[0], "escalation/oncall/down-a");
    sleep_ms(700); /* several repeat_intervals: no repeat, and hook still waits */
    assert_int_equal(srv_count(e->srv[1]), 1);
    assert_int_equal(srv_count(e->srv[0]), 0);
    /* the next step is sent again, at once */
    post_escalation(e, "down-a", labels, "oncall");
    assert_int_equal(srv_wait(e->srv[1], 2, 3000), 2);

    /* a receiver that does not exist: a dropped row that says so */
    post_escalation(e, "down-a", labels, "pager");
    assert_true(metric_wait(e, "opsdb_notifications_total{receiver=\"\",status=\"dropped\"}", 1,
                            3000) == 1);
    assert_int_equal(rows_wait(e, "", 1, 3000, rows), 1);
    rows_of(e, "", rows, NULL, keys);
    assert_string_equal(rows[0], "dropped 1 - 1|escalation to receiver 'pager', which is not "
                                 "defined: add it to alerting.receivers or name another in the "
                                 "escalation step");
    assert_string_equal(keys[0], "escalation/pager/down-a");
    assert_int_equal(srv_count(e->srv[0]), 0);
}

/* ---- delivery: retries, giving up, signatures, dead receivers ----------------------------- */

static void retries_with_backoff(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(2, 0);
    start_hook(e, e->srv[0]->port, "", "group_wait: 0s", "");
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "hook", 3, 10000, rows), 3);
    assert_string_equal(rows[0], "retrying 1 500 1|HTTP 500: broken badly");
    assert_string_equal(rows[1], "retrying 2 500 1|HTTP 500: broken badly");
    assert_string_equal(rows[2], "ok 3 200 1|-");
    assert_int_equal(srv_count(e->srv[0]), 3);
    int64_t gap1 = e->srv[0]->reqs[1].at_ms - e->srv[0]->reqs[0].at_ms;
    int64_t gap2 = e->srv[0]->reqs[2].at_ms - e->srv[0]->reqs[1].at_ms;
    if (gap1 < 950 || gap1 > 1800 || gap2 < 1950 || gap2 > 2800)
        fail_msg("backoff: %lld ms then %lld ms, expected 1 s then 2 s", (long long)gap1,
                 (long long)gap2);
    json_t *first = srv_json(e->srv[0], 0), *last = srv_json(e->srv[0], 2);
    assert_true(json_equal(first, last)); /* the same notification each time */
    json_decref(first);
    json_decref(last);
    assert_true(metric(e, "opsdb_notifications_total{receiver=\"hook\",status=\"retrying\"}") == 2);
    assert_true(metric(e, "opsdb_notifications_total{receiver=\"hook\",status=\"ok\"}") == 1);
    assert_true(metric(e, "opsdb_notifications_total{receiver=\"hook\",status=\"failed\"}") == 0);
    assert_true(metric(e, "opsdb_notification_latency_seconds_count{receiver=\"hook\"}") == 3);
}

static void gives_up_after_max_attempts(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(100, 0);
    start(e,
          "alerting:\n  receivers:\n    - name: hook\n      max_attempts: 2\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\"}\n"
          "  route: {receiver: hook, group_wait: 0s}\n",
          e->srv[0]->port);
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "hook", 2, 5000, rows), 2);
    assert_string_equal(rows[0], "retrying 1 500 1|HTTP 500: broken badly");
    assert_string_equal(rows[1], "failed 2 500 1|HTTP 500: broken badly");
    sleep_ms(1300); /* no third attempt */
    assert_int_equal(srv_count(e->srv[0]), 2);
    assert_true(metric(e, "opsdb_notifications_total{receiver=\"hook\",status=\"failed\"}") == 1);
}

static void hmac_signature(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, ", hmac_secret: \"s3cret\"", "group_wait: 0s", "");
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    const char *body = e->srv[0]->reqs[0].body;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)"s3cret", 6);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, strlen(body));
    crypto_auth_hmacsha256_final(&st, mac);
    char want[128] = "\r\nX-Opsdb-Signature: sha256=";
    size_t len = strlen(want);
    for (size_t i = 0; i < sizeof mac; i++)
        len += (size_t)snprintf(want + len, sizeof want - len, "%02x", mac[i]);
    snprintf(want + len, sizeof want - len, "\r\n");
    assert_str_contains(e->srv[0]->reqs[0].head, want);
}

static void dead_and_slow_receivers_delay_only_themselves(void **state)
{
    struct env *e = *state;
    int dead_port;
    bind_local(false, &dead_port);
    e->srv[0] = srv_start(0, 0);    /* live */
    e->srv[1] = srv_start(0, 2000); /* slow: answers after 2 s, its receiver waits 500 ms */
    start(e,
          "alerting:\n"
          "  receivers:\n"
          "    - name: live\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\"}\n"
          "    - name: dead\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\"}\n"
          "    - name: slow\n"
          "      webhook: {url: \"http://127.0.0.1:%d/hook\", timeout: 500ms}\n"
          "  route:\n"
          "    receiver: live\n"
          "    group_by: [alertname]\n"
          "    group_wait: 0s\n"
          "    routes:\n"
          "      - {receiver: dead, continue: true}\n"
          "      - {receiver: slow, continue: true}\n"
          "      - {receiver: live}\n",
          e->srv[0]->port, dead_port, e->srv[1]->port);
    int64_t t0 = now_ms();
    post(e, "a", "firing", "{\"alertname\":\"A\"}");
    assert_int_equal(srv_wait(e->srv[0], 1, 3000), 1);
    if (e->srv[0]->reqs[0].at_ms - t0 > 400)
        fail_msg("the live receiver waited %lld ms", (long long)(e->srv[0]->reqs[0].at_ms - t0));
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "dead", 1, 3000, rows), 1);
    assert_string_equal(rows[0], "retrying 1 - 1|connection refused");
    /* while dead backs off and slow times out, live takes the next one at once */
    sleep_ms(200);
    int64_t t1 = now_ms();
    post(e, "b", "firing", "{\"alertname\":\"B\"}");
    assert_int_equal(srv_wait(e->srv[0], 2, 3000), 2);
    if (e->srv[0]->reqs[1].at_ms - t1 > 400)
        fail_msg("the live receiver waited %lld ms", (long long)(e->srv[0]->reqs[1].at_ms - t1));
    assert_true(rows_wait(e, "slow", 1, 3000, rows) >= 1);
    assert_string_equal(rows[0], "retrying 1 - 1|timed out after 500 ms");
    /* stopping: the deadline ends the backoff of dead, its next attempt is a dropped row */
    int64_t t2 = now_ms();
    notifier_free(&e->n, 300);
    if (now_ms() - t2 > 2500)
        fail_msg("notifier_free took %lld ms with a 300 ms timeout", (long long)(now_ms() - t2));
    size_t n = rows_of(e, "dead", rows, NULL, NULL);
    bool dropped = false;
    for (size_t i = 0; i < n; i++)
        dropped |= strncmp(rows[i], "dropped ", 8) == 0 && strstr(rows[i], "opsdb stopped");
    if (!dropped)
        fail_msg("no dropped row for dead after stopping (last: %s)", n ? rows[n - 1] : "none");
}

static void shutdown_sends_what_group_wait_holds(void **state)
{
    struct env *e = *state;
    e->srv[0] = srv_start(0, 0);
    start_hook(e, e->srv[0]->port, "", "group_wait: 1h", "");
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    sleep_ms(200);
    assert_int_equal(srv_count(e->srv[0]), 0);
    notifier_free(&e->n, 3000);
    assert_int_equal(srv_count(e->srv[0]), 1);
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_of(e, "hook", rows, NULL, NULL), 1);
    assert_string_equal(rows[0], "ok 1 200 1|-");
}

/* ---- exec receivers ----------------------------------------------------------------------- */

static void write_script(struct env *e, const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", e->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void exec_receiver(void **state)
{
    struct env *e = *state;
    char copy[128], fails[128], out[128];
    write_script(e, "copy.sh", "cat > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\n", copy, sizeof copy);
    write_script(e, "fails.sh", "cat >/dev/null; echo oops >&2; exit 3\n", fails, sizeof fails);
    snprintf(out, sizeof out, "%s/out.json", e->dir);
    start(e,
          "alerting:\n  receivers:\n"
          "    - name: script\n      exec: {command: \"/bin/sh %s %s\", timeout: 5s}\n"
          "    - name: broken\n      max_attempts: 1\n      exec: {command: [/bin/sh, %s]}\n"
          "  route: {receiver: script, group_wait: 0s, routes: [{receiver: broken, continue: "
          "true}, {receiver: script}]}\n",
          copy, out, fails);
    post_at(e, "a", "firing", "{\"alertname\":\"X\"}", "inc-9");
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "script", 1, 5000, rows), 1);
    assert_string_equal(rows[0], "ok 1 - 1|-");
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    if (!j)
        fail_msg("%s: %s", out, je.text);
    assert_string_equal(jstr(j, "receiver"), "script");
    assert_string_equal(jstr(j, "version"), "4");
    assert_string_equal(jstr(j, "incident"), "inc-9");
    assert_int_equal(json_array_size(json_object_get(j, "alerts")), 1);
    json_decref(j);
    assert_int_equal(rows_wait(e, "broken", 1, 5000, rows), 1);
    assert_string_equal(rows[0], "failed 1 - 1|exit status 3: oops");
}

static void exec_timeout_kills(void **state)
{
    struct env *e = *state;
    char slow[128];
    write_script(e, "slow.sh", "sleep 5\n", slow, sizeof slow);
    start(e,
          "alerting:\n  receivers:\n"
          "    - name: slow\n      max_attempts: 1\n      exec: {command: /bin/sh %s, timeout: "
          "300ms}\n"
          "  route: {receiver: slow, group_wait: 0s}\n",
          slow);
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    char rows[ROWS_MAX][300];
    double latency[ROWS_MAX];
    assert_int_equal(rows_wait(e, "slow", 1, 5000, rows), 1);
    rows_of(e, "slow", rows, latency, NULL);
    assert_string_equal(rows[0], "failed 1 - 1|killed after timeout (300 ms)");
    assert_true(latency[0] >= 290 && latency[0] < 2000);
}

/* ---- config errors ------------------------------------------------------------------------ */

static void config_errors(void **state)
{
    struct env *e = *state;
    static const struct {
        const char *yaml, *msg; /* msg follows "<path>:" */
    } cases[] = {
        {"alerting:\n  receivers:\n    - name: hook\n      webhok: {url: \"http://x/\"}\n"
         "  route: {receiver: hook}\n",
         "4: receivers[0]: unknown key 'webhok' (known: name, max_attempts, webhook, exec, email, "
         "alertmanager)"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "  route: {receiver: pager}\n",
         "5: route: receiver 'pager' is not defined (receivers: hook)"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "  route:\n    receiver: hook\n    group_wait: 5x\n",
         "7: route.group_wait: '5x' is not a duration (e.g. 0s, 500ms, 30s, 5m, 4h, 1d)"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "  route:\n    receiver: hook\n    routes:\n      - match_re:\n          host: "
         "\"web-(\"\n",
         "9: route.routes[0].match_re.host: 'web-(' is not a valid regular expression"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {timeout: 1s}\n"
         "  route: {receiver: hook}\n",
         "4: receivers[0].webhook: url is missing"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"ftp://x/\"}\n"
         "  route: {receiver: hook}\n",
         "4: receivers[0].webhook: url 'ftp://x/' is not an http:// or https:// URL"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\", "
         "max_attempts: 3}\n  route: {receiver: hook}\n",
         "4: receivers[0].webhook: unknown key 'max_attempts'"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "    - name: hook\n      exec: {command: /bin/true}\n  route: {receiver: hook}\n",
         "5: receivers[1]: receiver 'hook' is defined twice"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "      exec: {command: /bin/true}\n  route: {receiver: hook}\n",
         "5: receivers[0]: has both webhook and exec"},
        {"alerting:\n  receivers:\n    - name: hook\n      max_attempts: 0\n"
         "      webhook: {url: \"http://x/\"}\n  route: {receiver: hook}\n",
         "4: receivers[0].max_attempts: 0 is outside 1..100"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "  route: {receiver: hook, match: {severity: critical}}\n",
         "5: route: the root route takes every alert"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "  route: {receiver: hook, group_by: [host, '...']}\n",
         "5: route.group_by: '...' (every label) stands alone"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "  route:\n    receiver: hook\n    routes:\n      - {receiver: hook, continue: maybe}\n",
         "8: route.routes[0].continue: 'maybe' is not true or false"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n",
         "3: receivers: defined, but there is no route to them"},
        {"alerting:\n  route: {receiver: hook}\n",
         "2: route: receiver 'hook' is not defined (alerting.receivers is empty)"},
        {"alerting:\n  receivers:\n    - name: hook\n      webhook: {url: \"http://x/\"}\n"
         "  route: {receiver: hook, group_interval: 0s}\n",
         "5: route.group_interval: 0s is outside 1ms..31622400000ms"},
        {"alerting:\n  receivers:\n    - name: mail\n      email: {to: \"a@example.com\", from: "
         "\"opsdb@localhost\"}\n  route: {receiver: mail}\n",
         "4: receivers[0].email: smtp is missing"},
        {"alerting:\n  receivers:\n    - name: mail\n      email: {to: \"a@example.com, bob\", "
         "from: \"opsdb@localhost\", smtp: \"127.0.0.1:25\"}\n  route: {receiver: mail}\n",
         "4: receivers[0].email.to: 'bob' is not an email address"},
        {"alerting:\n  receivers:\n    - name: mail\n      email: {to: \"a@example.com\", from: "
         "\"opsdb\", smtp: \"127.0.0.1:25\"}\n  route: {receiver: mail}\n",
         "4: receivers[0].email.from: 'opsdb' is not an email address"},
        {"alerting:\n  receivers:\n    - name: mail\n      email: {to: \"a@example.com\", from: "
         "\"o@localhost\", smtp: \"smtp://127.0.0.1:25\"}\n  route: {receiver: mail}\n",
         "4: receivers[0].email.smtp: 'smtp://127.0.0.1:25' is not host:port"},
        {"alerting:\n  receivers:\n    - name: mail\n      email: {to: \"a@example.com\", from: "
         "\"o@localhost\", smtp: \"127.0.0.1:99999\"}\n  route: {receiver: mail}\n",
         "4: receivers[0].email.smtp: '127.0.0.1:99999' is not host:port"},
        {"alerting:\n  receivers:\n    - name: mail\n      email: {to: \"a@example.com\", from: "
         "\"o@localhost\", smtp: \"h:25\", subject: \"a\\nb\"}\n  route: {receiver: mail}\n",
         "4: receivers[0].email.subject: has a control character"},
        {"alerting:\n  receivers:\n    - name: am\n      alertmanager: {timeout: 1s}\n"
         "  route: {receiver: am}\n",
         "4: receivers[0].alertmanager: url is missing (e.g. url: http://127.0.0.1:9093)"},
        {"alerting:\n  receivers:\n    - name: am\n      alertmanager: {url: "
         "\"http://127.0.0.1:9093/api/v2/alerts\"}\n  route: {receiver: am}\n",
         "4: receivers[0].alertmanager: url 'http://127.0.0.1:9093/api/v2/alerts' names an API "
         "path"},
        {"alerting:\n  receivers:\n    - name: am\n      alertmanager: {url: \"http://x:9093\", "
         "send_resolved: false}\n  route: {receiver: am}\n",
         "4: receivers[0].alertmanager: unknown key 'send_resolved' (known: url, ca_file, timeout)"},
        {"alerting:\n  receivers: [\n", "3: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(e->path, "w");
        fputs(cases[i].yaml, f);
        fclose(f);
        struct err err;
        err_clear(&err);
        struct notifier *n = NULL;
        int rc = notifier_new(&n, e->path, "", e->w, &err);
        assert_null(n);
        char want[600];
        snprintf(want, sizeof want, "%s:%s", e->path, cases[i].msg);
        if (rc != E_INVALID || strncmp(err.msg, want, strlen(want)) != 0)
            fail_msg("case %zu: rc %d, message\n  %s\nexpected it to start with\n  %s", i, rc,
                     err.msg, want);
    }
    struct err err;
    struct notifier *n = NULL;
    assert_int_equal(notifier_new(&n, "/nonexistent/opsdb.yaml", "", e->w, &err), E_IO);
    assert_str_contains(err.msg, "/nonexistent/opsdb.yaml");
}

/* ---- dropping ----------------------------------------------------------------------------- */

static void no_receivers_drop_and_count(void **state)
{
    struct env *e = *state;
    start(e, "log:\n  level: warn\nalerting:\n  interval: 30s\n");
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    struct notify_alert bad = {.alert_id = "b", .status = "pending"};
    notifier_post(e->n, &bad);
    assert_true(metric_wait(e, "opsdb_notifications_total{receiver=\"\",status=\"dropped\"}", 2,
                            3000) == 2);
    char rows[ROWS_MAX][300];
    assert_int_equal(rows_wait(e, "", 2, 3000, rows), 2);
    bool none = false, invalid = false;
    for (int i = 0; i < 2; i++) {
        none |= strncmp(rows[i], "dropped 1 - 1|no receiver is configured", 39) == 0;
        invalid |= strncmp(rows[i], "dropped 1 - 1|invalid alert", 27) == 0;
    }
    if (!none || !invalid)
        fail_msg("rows: '%s', '%s'", rows[0], rows[1]);
    notifier_free(&e->n, 1000);
    struct err err; /* no config file at all: the same */
    assert_int_equal(notifier_new(&e->n, "", "", e->w, &err), 0);
    post(e, "a", "firing", "{\"alertname\":\"X\"}");
    assert_true(metric_wait(e, "opsdb_notifications_total{receiver=\"\",status=\"dropped\"}", 1,
                            3000) == 1);
}

static void queue_full_drops(void **state)
{
    struct env *e = *state;
    assert_int_equal(notifier_new(&e->n, "", "", e->w, &(struct err){0}), 0);
    /* hold the dispatcher: it writes the dropped row of the first alert, and the writer waits
     * in the gate */
    gate_set(true);
    post(e, "first", "firing", "{\"alertname\":\"X\"}");
    pthread_mutex_lock(&gate.lock);
    while (!gate.held)
        pthread_cond_wait(&gate.cond, &gate.lock);
    pthread_mutex_unlock(&gate.lock);
    const int posted = 30000;
    for (int i = 0; i < posted; i++)
        post(e, "many", "firing", "{\"alertname\":\"X\"}");
    double queued = metric(e, "opsdb_notification_queue_length");
    double dropped = metric(e, "opsdb_notifications_total{receiver=\"\",status=\"dropped\"}");
    assert_true(queued > 0 && queued < posted);
    assert_true(dropped == 1 + posted - queued); /* the first, and what did not fit */
    gate_set(false);
    /* the queue drains (and, without receivers, those are dropped too) */
    assert_true(metric_wait(e, "opsdb_notifications_total{receiver=\"\",status=\"dropped\"}",
                            1 + posted, 5000) == 1 + posted);
    assert_true(metric(e, "opsdb_notification_queue_length") == 0);
    notifier_free(&e->n, 1000);
    char rows[ROWS_MAX][300];
    size_t n = rows_of(e, "", rows, NULL, NULL);
    long long full = 0;
    for (size_t i = 0; i < n; i++)
        if (strstr(rows[i], "queue is full"))
            full += strtoll(rows[i] + strlen("dropped 1 - "), NULL, 10);
    assert_int_equal(full, posted - (long long)queued);
}

int main(void)
{
    log_set_level(LOG_ERROR); /* the notifier warns when it gives up: expected here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(payload_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(grouping, setup, teardown),
        cmocka_unit_test_setup_teardown(max_alerts_truncates, setup, teardown),
        cmocka_unit_test_setup_teardown(wait_interval_repeat, setup, teardown),
        cmocka_unit_test_setup_teardown(resolved_once, setup, teardown),
        cmocka_unit_test_setup_teardown(resolved_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(routing, setup, teardown),
        cmocka_unit_test_setup_teardown(other_alerting_keys_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(alertmanager_postable_alerts, setup, teardown),
        cmocka_unit_test_setup_teardown(escalation_to_its_receiver, setup, teardown),
        cmocka_unit_test_setup_teardown(retries_with_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(gives_up_after_max_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(hmac_signature, setup, teardown),
        cmocka_unit_test_setup_teardown(dead_and_slow_receivers_delay_only_themselves, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(shutdown_sends_what_group_wait_holds, setup, teardown),
        cmocka_unit_test_setup_teardown(exec_receiver, setup, teardown),
        cmocka_unit_test_setup_teardown(exec_timeout_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(no_receivers_drop_and_count, setup, teardown),
        cmocka_unit_test_setup_teardown(queue_full_drops, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
