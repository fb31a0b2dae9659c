/*
 * The notifier: Alertmanager's routing, grouping and delivery, for opsdb's alerts.
 *
 * notifier_post() copies a state change onto a bounded queue and returns. The dispatcher thread
 * hands each change to its router (route.c), which routes it through the routing tree
 * (alerting.route), files it in its group and decides, as Alertmanager does, when a group is
 * sent; this file reads the receivers and routes from the config, and delivers what the router
 * says is due. A notification goes to its receiver's own thread, which delivers it with retries
 * and exponential backoff, and writes every attempt to notification_log. The kinds of receivers
 * (receiver_kinds): webhook, an HTTP POST of Alertmanager's webhook payload version 4; exec, a
 * program that reads the same JSON on stdin; email, an RFC 5322 message over SMTP; alertmanager,
 * a POST of the alerts to an Alertmanager's /api/v2/alerts. An escalation step
 * (notify_alert.receiver) skips routing and grouping: it goes to the receiver it names at once,
 * in a group of its own, and is not repeated. What cannot be delivered (queue full, no receiver,
 * opsdb stopping) is counted and written as `dropped` rows.
 *
 * Threads: the callers of notifier_post() and notifier_metrics(), the dispatcher, and one per
 * receiver. n->lock guards the queues, the dropped rows waiting to be written and the counters;
 * the router belongs to the dispatcher alone. No lock is held across network I/O, a child process
 * or writer_submit().
 */
#include "alert/alert_int.h"
#include "alert/route.h"
#include "core/ydoc.h"
#include "ingest/ingest.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- limits and defaults ------------------------------------------------------------------ */

#define QUEUE_MAX 10000         /* state changes waiting for the dispatcher; more are dropped */
#define RECEIVER_QUEUE_MAX 1000 /* notifications waiting for one receiver; more are dropped */
#define DROPS_PENDING_MAX 1000  /* dropped rows waiting to be written; more are only counted */
#define RECEIVERS_MAX 64
#define ROUTE_DEPTH_MAX 16
#define LIST_MAX 32            /* group_by labels, matchers of a route, words of a command */
#define LABELS_MAX 64          /* labels and annotations of one alert */
#define TEXT_MAX 4096          /* one label value, annotation, config string */
#define ATTEMPTS_MAX 100       /* max_attempts */
#define ALERTS_MAX 100000      /* max_alerts */
#define TIMEOUT_MAX_MS 3600000 /* a receiver's timeout */
#define INTERVAL_MAX_MS (366 * 86400000LL)
#define ANSWER_QUOTE_BYTES 200 /* of a failed answer's body or a program's output, in the error */
#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000
#define EXEC_POLL_MS 10
#define ADDRESS_MAX_BYTES 254         /* one email address (RFC 5321's path limit) */
#define HEADER_TEXT_MAX 900           /* an email subject: a header line stays under 998 */
#define EMAIL_TEXT_MAX (1 << 20)      /* alerts past this many bytes of text are only counted */
#define EMAIL_MESSAGE_MAX (16u << 20) /* a message: the text and its quoted-printable growth */

#define DEFAULT_GROUP_WAIT_MS 30000
#define DEFAULT_GROUP_INTERVAL_MS 300000
#define DEFAULT_REPEAT_INTERVAL_MS 14400000
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_ATTEMPTS 5

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* Why alerts were dropped: the error text of their rows. */
#define QUEUE_MAX_TEXT STRINGIFY(QUEUE_MAX)
#define RECEIVER_QUEUE_MAX_TEXT STRINGIFY(RECEIVER_QUEUE_MAX)
static const char WHY_QUEUE_FULL[] = "the notification queue is full (" QUEUE_MAX_TEXT
                                     " waiting): alerts change faster than they are routed";
static const char WHY_NO_RECEIVER[] =
    "no receiver is configured: add alerting.receivers and alerting.route to the config file";
static const char WHY_INVALID[] =
    "invalid alert: it needs an id, status firing, resolved or muted, "
    "labels and annotations that are objects of text values, and "
    "a receiver, when it names one, of 1 to 128 bytes";
static const char WHY_RECEIVER_BUSY[] = "the receiver's queue is full (" RECEIVER_QUEUE_MAX_TEXT
                                        " notifications waiting): it is too slow or down";
static const char WHY_STOPPED[] = "opsdb stopped before this notification could be delivered";
#define NAME_MAX_BYTES 128 /* a receiver's name */

/* ---- types -------------------------------------------------------------------------------- */

enum status { ST_OK, ST_FAILED, ST_RETRYING, ST_DROPPED, NSTATUS };
static const char *const status_names[NSTATUS] = {"ok", "failed", "retrying", "dropped"};

struct delivery {
    struct delivery *next;
    char *group_key, *alert_id;
    size_t nalerts;
    char *body; /* the JSON payload */
    size_t len;
};

struct attempt {
    bool ok;
    long http_status; /* 0: none */
    char error[512];
};

struct receiver;
struct cfgp;
struct field;

/* A kind of receiver: its keys in the config, what it sends, and one delivery attempt. */
struct receiver_ops {
    const char *kind;
    const struct field *fields;
    size_t nfields;
    /* After the fields are read: what is missing or inconsistent. */
    int (*check)(struct cfgp *p, yaml_node_t *at, const char *ctx, struct receiver *r);
    /* On the dispatcher: the bytes of notification s with the first nsend of its alerts (the
     * others are counted, not listed); sets *len; free() it. */
    char *(*body)(const struct receiver *r, const struct router_send *s, size_t nsend, size_t *len);
    /* On the receiver's thread; fills out. */
    void (*attempt)(struct receiver *r, const struct delivery *d, struct attempt *out);
};

struct receiver {
    struct notifier *n;
    size_t index;
    char *name;
    const struct receiver_ops *ops;
    int64_t max_attempts, timeout_ms, max_alerts;
    bool send_resolved;
    /* where an attempt goes: webhook, its url; alertmanager, url + /api/v2/alerts; email,
     * smtp://<smtp> */
    char *url;
    char *hmac_secret; /* webhook */
    char *ca_file;     /* webhook, alertmanager, email: CA certificates (NULL: the system's) */
    char *to, *from, *smtp, *subject; /* email, as given */
    bool starttls;                    /* email */
    char **rcpt;                      /* email: the addresses of to */
    size_t nrcpt;
    CURL *curl;  /* the thread's handle, which keeps connections open */
    char **argv; /* exec: NULL-terminated */
    size_t argc;
    pthread_t thread;
    bool started;
    /* under n->lock */
    pthread_cond_t wake; /* a delivery was queued, or opsdb is stopping */
    struct delivery *head, *tail;
    size_t queued;
    bool busy;
};

struct counters {
    uint64_t n[NSTATUS]; /* dropped counts alerts, the others attempts */
    double latency_s;
    uint64_t latency_n;
};

/* A dropped row waiting to be written by the dispatcher. */
struct drop {
    size_t receiver; /* n->nreceivers: none */
    const char *why;
    char *group_key, *alert_id;
    uint64_t alerts;
};

struct log_columns {
    int ts, receiver, group_key, alert_id, alerts, status, attempt, http_status, error, latency_ms;
};

struct notifier {
    char *path;
    char *ca_file; /* alerting.ca_file: of the receivers that give none; NULL: none */
    struct writer *w;
    const struct table *log_table;
    struct log_columns col;
    struct receiver *receivers;
    size_t nreceivers;
    struct route *root; /* NULL: no route, every alert is dropped */
    size_t nroutes;

    pthread_mutex_t lock;
    pthread_cond_t wake; /* the dispatcher: a change queued, a drop to write, or stopping */
    pthread_cond_t idle; /* notifier_free(): a receiver finished a delivery */
    struct nalert *qhead, *qtail;
    size_t qlen;
    struct drop *drops;
    size_t ndrops;
    uint64_t drops_unrecorded;
    struct counters *counters; /* nreceivers + 1: the last is alerts without a receiver */
    bool stopping;             /* no more posts; the dispatcher flushes and ends */
    bool receivers_stopping;   /* receivers end once their queue is empty */
    atomic_bool abort;         /* the deadline passed: deliveries stop now */
    bool threads;              /* the receivers' conditions exist, their threads may have started */
    pthread_t dispatcher;
    bool dispatcher_started;

    /* the dispatcher's alone */
    struct router *router;
    router_send_fn send; /* what the router hands due notifications to: queue_send, trace_send */

    /* notifier_restore()'s log, read by the dispatcher once the restored alerts are queued */
    struct notify_sent *restored;
    size_t nrestored;

    /* a replay's (notifier_new_replay): no threads, notifications traced, not delivered */
    alert_trace_fn trace;
    void *trace_arg;
    int64_t clock_ms; /* the replay's clock */
};

/* ---- small helpers ------------------------------------------------------------------------ */

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static double mono_ms_precise(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

/* Waits on c (CLOCK_MONOTONIC) until at_ms, or forever when at_ms is INT64_MAX. */
static void cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, int64_t at_ms)
{
    if (at_ms == INT64_MAX) {
        pthread_cond_wait(c, m);
        return;
    }
    struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (at_ms % 1000) * 1000000};
    pthread_cond_timedwait(c, m, &ts);
}

static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* ---- alerts ------------------------------------------------------------------------------- */

/* A copy of obj (NULL: an empty object) when it is an object of at most LABELS_MAX text
 * values; NULL otherwise. */
static json_t *text_object_copy(json_t *obj)
{
    if (!obj)
        return json_object();
    if (!json_is_object(obj) || json_object_size(obj) > LABELS_MAX)
        return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (!json_is_string(v) || json_string_length(v) > TEXT_MAX || strlen(k) > TEXT_MAX)
            return NULL;
    }
    return json_deep_copy(obj);
}

static void fingerprint_labels(json_t *labels, char out[17])
{
    char *text = json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t h = text ? hash64(text, strlen(text), 0) : 0;
    free(text);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* Copies a; NULL when a is not a valid state change. */
static bool text_ok(const char *s, size_t max)
{
    return strlen(s) <= max && utf8_valid((const unsigned char *)s, strlen(s));
}

static struct nalert *nalert_new(const struct notify_alert *a)
{
    if (!a->alert_id || !*a->alert_id || strlen(a->alert_id) > TEXT_MAX || !a->status)
        return NULL;
    if (a->incident_id && !text_ok(a->incident_id, TEXT_MAX))
        return NULL;
    if (a->receiver && (!*a->receiver || !text_ok(a->receiver, NAME_MAX_BYTES)))
        return NULL;
    bool firing = strcmp(a->status, "firing") == 0, muted = strcmp(a->status, "muted") == 0;
    if (!firing && !muted && strcmp(a->status, "resolved") != 0)
        return NULL;
    json_t *labels = text_object_copy(a->labels);
    json_t *annotations = text_object_copy(a->annotations);
    if (!labels || !annotations) {
        json_decref(labels);
        json_decref(annotations);
        return NULL;
    }
    struct nalert *c = xcalloc(1, sizeof *c);
    c->refs = 1;
    c->id = xstrdup(a->alert_id);
    c->incident = a->incident_id && *a->incident_id ? xstrdup(a->incident_id) : NULL;
    c->receiver = a->receiver ? xstrdup(a->receiver) : NULL;
    c->firing = firing;
    c->muted = muted;
    c->labels = labels;
    c->annotations = annotations;
    c->value = a->value;
    c->starts_ms = a->starts_ms;
    c->ends_ms = firing ? 0 : a->ends_ms > 0 ? a->ends_ms : time_now_ms();
    fingerprint_labels(labels, c->fingerprint);
    return c;
}

/* ---- counters and notification_log rows --------------------------------------------------- */

struct row {
    const char *receiver, *group_key, *alert_id; /* alert_id may be NULL */
    int64_t alerts, attempt;
    enum status status;
    long http_status;  /* 0: none */
    const char *error; /* NULL: none */
    double latency_ms; /* < 0: none */
};

static void put_text(struct batch *b, struct value *row, int col, const char *s)
{
    const struct column *c = &b->table->columns[col];
    struct value *v = &row[col];
    size_t len = strlen(s);
    if (c->max_len && len > c->max_len) { /* cut at a character boundary */
        len = c->max_len;
        while (len && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
    }
    v->type = VAL_TEXT;
    v->s = arena_strndup(&b->arena, s, len);
    v->len = (uint32_t)len;
}

static void put_int(struct value *v, int64_t i)
{
    v->type = VAL_INT;
    v->i = i;
}

/* Writes one row through the writer (blocks until it is committed); a failure is logged, as
 * nobody else would hear of it. Never called with n->lock held. */
static void row_write(struct notifier *n, const struct row *r)
{
    if (!n->w)
        return;
    struct batch b;
    batch_init(&b, n->log_table);
    struct value *v = batch_add_row(&b);
    put_int(&v[n->col.ts], time_now_ms());
    put_text(&b, v, n->col.receiver, r->receiver);
    put_text(&b, v, n->col.group_key, r->group_key);
    if (r->alert_id)
        put_text(&b, v, n->col.alert_id, r->alert_id);
    put_int(&v[n->col.alerts], r->alerts);
    put_text(&b, v, n->col.status, status_names[r->status]);
    put_int(&v[n->col.attempt], r->attempt);
    if (r->http_status > 0)
        put_int(&v[n->col.http_status], r->http_status);
    if (r->error)
        put_text(&b, v, n->col.error, r->error);
    if (r->latency_ms >= 0) {
        v[n->col.latency_ms].type = VAL_REAL;
        v[n->col.latency_ms].d = r->latency_ms;
    }
    struct err e;
    err_clear(&e);
    if (writer_submit(n->w, &b, &e) != 0)
        log_warn("notifier: the notification_log row of receiver '%s' (%s) was not written: %s",
                 r->receiver, status_names[r->status], e.msg);
    batch_release(&b);
}

static const char *receiver_name(const struct notifier *n, size_t i)
{
    return i < n->nreceivers ? n->receivers[i].name : "";
}

/* The index of the receiver called name; n->nreceivers when there is none. */
static size_t receiver_find(const struct notifier *n, const char *name)
{
    size_t i = 0;
    while (i < n->nreceivers && strcmp(n->receivers[i].name, name) != 0)
        i++;
    return i;
}

/* The group key of an escalation step: "escalation/<receiver>/<alert id>". */
static char *escalation_key(const struct nalert *a)
{
    size_t len = strlen("escalation//") + strlen(a->receiver) + strlen(a->id) + 1;
    char *key = xcalloc(1, len);
    snprintf(key, len, "escalation/%s/%s", a->receiver, a->id);
    return key;
}

/* Counts alerts dropped for receiver i (n->nreceivers: none) and writes their row at once. On
 * a thread that may wait for the writer; never with n->lock held. */
static void drop_now(struct notifier *n, size_t receiver, const char *group_key,
                     const char *alert_id, uint64_t alerts, int64_t attempt, const char *why)
{
    pthread_mutex_lock(&n->lock);
    n->counters[receiver].n[ST_DROPPED] += alerts;
    pthread_mutex_unlock(&n->lock);
    row_write(n, &(struct row){receiver_name(n, receiver), group_key, alert_id, (int64_t)alerts,
                               attempt, ST_DROPPED, 0, why, -1});
}

/* Counts alerts dropped for receiver i and queues their row for the dispatcher. Consecutive
 * drops of one group for one reason share a row. Called with n->lock held. */
static void drop_locked(struct notifier *n, size_t receiver, const char *why, const char *group_key,
                        const char *alert_id, uint64_t alerts)
{
    n->counters[receiver].n[ST_DROPPED] += alerts;
    struct drop *last = n->ndrops ? &n->drops[n->ndrops - 1] : NULL;
    if (last && last->receiver == receiver && last->why == why &&
        strcmp(last->group_key, group_key) == 0) {
        last->alerts += alerts;
        return;
    }
    if (n->ndrops >= DROPS_PENDING_MAX) {
        n->drops_unrecorded += alerts;
        return;
    }
    if ((n->ndrops & (n->ndrops - 1)) == 0) /* 0, 1, 2, 4, ...: grow to the next power of 2 */
        n->drops = xrealloc(n->drops, (n->ndrops ? n->ndrops * 2 : 1) * sizeof *n->drops);
    n->drops[n->ndrops++] = (struct drop){receiver, why, xstrdup(group_key),
                                          alert_id ? xstrdup(alert_id) : NULL, alerts};
    pthread_cond_signal(&n->wake);
}

/* Drops alert a for every receiver it routes to (or none), or for its escalation's receiver.
 * Takes n->lock. */
static void drop_alert(struct notifier *n, const struct nalert *a, const char *why)
{
    const struct route *hit[ROUTES_MAX];
    size_t receivers[ROUTES_MAX], nhit = 0;
    char *keys[ROUTES_MAX];
    if (a->receiver) {
        receivers[nhit] = receiver_find(n, a->receiver);
        keys[nhit++] = escalation_key(a);
    } else if (n->root) {
        nhit = route_tree_match(n->root, a->labels, hit);
        for (size_t i = 0; i < nhit; i++) {
            receivers[i] = hit[i]->receiver;
            keys[i] = route_group_key(hit[i], a->labels, NULL);
        }
    }
    pthread_mutex_lock(&n->lock);
    if (nhit == 0)
        drop_locked(n, n->nreceivers, why, "", a->id, 1);
    for (size_t i = 0; i < nhit; i++)
        drop_locked(n, receivers[i], why, keys[i], a->id, 1);
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < nhit; i++)
        free(keys[i]);
}

/* Writes the dropped rows queued so far. Never called with n->lock held. */
static void drops_write(struct notifier *n)
{
    pthread_mutex_lock(&n->lock);
    struct drop *drops = n->drops;
    size_t ndrops = n->ndrops;
    uint64_t unrecorded = n->drops_unrecorded;
    n->drops = NULL;
    n->ndrops = 0;
    n->drops_unrecorded = 0;
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < ndrops; i++) {
        struct drop *d = &drops[i];
        row_write(n, &(struct row){receiver_name(n, d->receiver), d->group_key, d->alert_id,
                                   (int64_t)d->alerts, 1, ST_DROPPED, 0, d->why, -1});
        free(d->group_key);
        free(d->alert_id);
    }
    free(drops);
    if (unrecorded)
        log_warn("notifier: %llu dropped alerts were counted but not written to notification_log "
                 "(more than %d rows were waiting)",
                 (unsigned long long)unrecorded, DROPS_PENDING_MAX);
}

static void count_attempt(struct notifier *n, size_t receiver, enum status st, double latency_ms)
{
    pthread_mutex_lock(&n->lock);
    n->counters[receiver].n[st]++;
    n->counters[receiver].latency_s += latency_ms / 1000.0;
    n->counters[receiver].latency_n++;
    pthread_mutex_unlock(&n->lock);
}

/* ---- the payload -------------------------------------------------------------------------- */

/* The label (annotation) pairs every alert of list shares. */
static json_t *common_pairs(struct nalert *const *list, size_t n, bool annotations)
{
    json_t *common = json_object();
    if (n == 0)
        return common;
    json_t *first = annotations ? list[0]->annotations : list[0]->labels;
    const char *k;
    json_t *v;
    json_object_foreach(first, k, v)
    {
        bool shared = true;
        for (size_t i = 1; i < n && shared; i++) {
            json_t *o = json_object_get(annotations ? list[i]->annotations : list[i]->labels, k);
            shared = o && json_equal(o, v);
        }
        if (shared)
            json_object_set(common, k, v);
    }
    return common;
}

static json_t *alert_json(const struct nalert *a)
{
    char starts[40], ends[40] = "0001-01-01T00:00:00Z";
    time_format_rfc3339(a->starts_ms, starts, sizeof starts);
    if (!a->firing)
        time_format_rfc3339(a->ends_ms, ends, sizeof ends);
    return json_pack("{s:s, s:O, s:O, s:s, s:s, s:s, s:s}", "status",
                     a->firing ? "firing" : "resolved", "labels", a->labels, "annotations",
                     a->annotations, "startsAt", starts, "endsAt", ends, "generatorURL", "",
                     "fingerprint", a->fingerprint);
}

/* The compact text of j, which it takes; sets *len. */
static char *dump_json(json_t *j, size_t *len)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) {
        fprintf(stderr, "opsdb: out of memory building a notification\n");
        abort();
    }
    *len = strlen(text);
    return text;
}

/* Alertmanager's webhook payload, version 4, of the first nsend of the alerts of s (the rest
 * are counted as truncatedAlerts), plus "incident" when one of them belongs to one. */
static char *payload_json(const struct receiver *r, const struct router_send *s, size_t nsend,
                          size_t *len)
{
    struct nalert *const *list = s->alerts;
    size_t n = s->nalerts;
    bool firing = false;
    const char *incident = NULL;
    for (size_t i = 0; i < n; i++) {
        firing |= list[i]->firing;
        if (!incident && i < nsend)
            incident = list[i]->incident;
    }
    json_t *alerts = json_array();
    for (size_t i = 0; i < nsend; i++)
        json_array_append_new(alerts, alert_json(list[i]));
    json_t *p = json_pack("{s:s, s:s, s:I, s:s, s:s, s:O, s:o, s:o, s:s, s:o}", "version", "4",
                          "groupKey", s->group_key, "truncatedAlerts", (json_int_t)(n - nsend),
                          "status", firing ? "firing" : "resolved", "receiver", r->name,
                          "groupLabels", s->group_labels, "commonLabels",
                          common_pairs(list, n, false), "commonAnnotations",
                          common_pairs(list, n, true), "externalURL", "", "alerts", alerts);
    if (incident)
        json_object_set_new(p, "incident", json_string(incident));
    return dump_json(p, len);
}

/* Alertmanager's API v2 postable alerts (POST /api/v2/alerts) of the first nsend alerts of s:
 * endsAt is the resolve time, and left out while an alert fires (Alertmanager then ends it
 * after its resolve_timeout unless it is sent again). */
static char *postable_json(const struct receiver *r, const struct router_send *s, size_t nsend,
                           size_t *len)
{
    (void)r;
    struct nalert *const *list = s->alerts;
    json_t *alerts = json_array();
    for (size_t i = 0; i < nsend; i++) {
        char starts[40], ends[40];
        time_format_rfc3339(list[i]->starts_ms, starts, sizeof starts);
        json_t *a = json_pack("{s:O, s:O, s:s, s:s}", "labels", list[i]->labels, "annotations",
                              list[i]->annotations, "startsAt", starts, "generatorURL", "");
        if (!list[i]->firing) {
            time_format_rfc3339(list[i]->ends_ms, ends, sizeof ends);
            json_object_set_new(a, "endsAt", json_string(ends));
        }
        json_array_append_new(alerts, a);
    }
    return dump_json(alerts, len);
}

/* ---- webhook receivers -------------------------------------------------------------------- */

struct answer {
    char quote[ANSWER_QUOTE_BYTES + 1];
    size_t len;
};

static size_t answer_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct answer *a = arg;
    size_t n = size * nmemb,
           take = n < ANSWER_QUOTE_BYTES - a->len ? n : ANSWER_QUOTE_BYTES - a->len;
    for (size_t i = 0; i < take; i++) /* keep the error text on one line */
        a->quote[a->len++] = (unsigned char)data[i] < 0x20 ? ' ' : data[i];
    a->quote[a->len] = '\0';
    return n;
}

/* The quote without trailing spaces (a last newline). */
static const char *answer_text(struct answer *a)
{
    while (a->len && a->quote[a->len - 1] == ' ')
        a->quote[--a->len] = '\0';
    return a->quote;
}

static int abort_check(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    struct notifier *n = arg;
    return atomic_load(&n->abort) ? 1 : 0;
}

/* "X-Opsdb-Signature: sha256=<hex of HMAC-SHA256(secret, body)>" */
static void signature_header(const char *secret, const char *body, size_t len, char *out,
                             size_t size)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char hex[2 * sizeof mac + 1];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    snprintf(out, size, "X-Opsdb-Signature: sha256=%s", hex);
}

/* The error text of a transfer that failed with rc. */
static void curl_error_text(struct receiver *r, CURLcode rc, const char *errbuf,
                            struct attempt *out)
{
    long os_errno = 0;
    curl_easy_getinfo(r->curl, CURLINFO_OS_ERRNO, &os_errno);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        snprintf(out->error, sizeof out->error, "timed out after %lld ms",
                 (long long)r->timeout_ms);
    else if (rc == CURLE_ABORTED_BY_CALLBACK)
        snprintf(out->error, sizeof out->error, "aborted: opsdb is stopping");
    else if (rc == CURLE_COULDNT_CONNECT && os_errno == ECONNREFUSED)
        snprintf(out->error, sizeof out->error, "connection refused");
    else
        snprintf(out->error, sizeof out->error, "%s", *errbuf ? errbuf : curl_easy_strerror(rc));
}

/* The thread's curl handle, reset for a new transfer (it keeps its open connections) with what
 * every transfer sets: the timeout, the check that stops it when opsdb stops, and errbuf. NULL
 * when there is none (out says so). */
static CURL *curl_start(struct receiver *r, char *errbuf, struct attempt *out)
{
    if (!r->curl && !(r->curl = curl_easy_init())) {
        snprintf(out->error, sizeof out->error, "cannot start a transfer (curl_easy_init)");
        return NULL;
    }
    CURL *c = r->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, abort_check);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, r->n);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    tls_client_setup(c, r->ca_file);
    return c;
}

/* POSTs the delivery's JSON to r->url, with header (NULL: none); a 2xx answer is success. */
static void http_post(struct receiver *r, const struct delivery *d, const char *header,
                      struct attempt *out)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *c = curl_start(r, errbuf, out);
    if (!c)
        return;
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    if (header)
        headers = curl_slist_append(headers, header);
    struct answer ans = {.len = 0};
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "opsdb-notifier");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, answer_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &ans);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(headers);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->http_status); /* 0: no answer */
    if (rc != CURLE_OK) {
        curl_error_text(r, rc, errbuf, out);
        return;
    }
    out->ok = out->http_status >= 200 && out->http_status < 300;
    if (!out->ok)
        snprintf(out->error, sizeof out->error, "HTTP %ld%s%s", out->http_status,
                 *answer_text(&ans) ? ": " : "", ans.quote);
}

static void webhook_attempt(struct receiver *r, const struct delivery *d, struct attempt *out)
{
    char sig[128];
    if (r->hmac_secret)
        signature_header(r->hmac_secret, d->body, d->len, sig, sizeof sig);
    http_post(r, d, r->hmac_secret ? sig : NULL, out);
}

/* ---- Alertmanager receivers --------------------------------------------------------------- */

/* One POST of postable_json() to an Alertmanager's /api/v2/alerts, per group send. */
static void alertmanager_attempt(struct receiver *r, const struct delivery *d, struct attempt *out)
{
    http_post(r, d, NULL, out);
}

/* ---- email receivers ---------------------------------------------------------------------- */

/* "Thu, 01 Jan 2026 00:00:00 +0000": RFC 5322's date-time, in UTC. */
static void rfc5322_date(int64_t ms, char *out, size_t size)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, size, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Alertmanager's default subject: [FIRING:<firing alerts>] or [RESOLVED], the values of the
 * group labels, then in parentheses those of the other labels all the alerts share (alertname
 * first, then by name; empty values left out, as Prometheus takes them for absent labels). */
static void default_subject(struct buf *b, const struct router_send *s)
{
    struct nalert *const *list = s->alerts;
    size_t n = s->nalerts;
    size_t firing = 0, k;
    for (size_t i = 0; i < n; i++)
        firing += list[i]->firing;
    if (firing)
        buf_printf(b, "[FIRING:%zu]", firing);
    else
        buf_printf(b, "[RESOLVED]");
    const char **names = label_names_sorted(s->group_labels, true, &k);
    for (size_t i = 0; i < k; i++)
        if (*label_value(s->group_labels, names[i]))
            buf_printf(b, " %s", label_value(s->group_labels, names[i]));
    free(names);
    json_t *common = common_pairs(list, n, false);
    names = label_names_sorted(common, true, &k);
    bool open = false;
    for (size_t i = 0; i < k; i++) {
        if (json_object_get(s->group_labels, names[i]) || !*label_value(common, names[i]))
            continue;
        buf_printf(b, "%s%s", open ? " " : " (", label_value(common, names[i]));
        open = true;
    }
    if (open)
        buf_putc(b, ')');
    free(names);
    json_decref(common);
}

/* "Name: value" and CRLF. Control characters in value become spaces and it is cut at
 * HEADER_TEXT_MAX bytes; text that is not all ASCII is RFC 2047 encoded (UTF-8, base64), in
 * words of at most 45 bytes on folded lines. */
static void put_header(struct buf *b, const char *name, const char *value)
{
    char text[HEADER_TEXT_MAX + 1];
    size_t len = 0;
    bool ascii = true;
    for (const char *s = value; *s && len < HEADER_TEXT_MAX; s++) {
        text[len++] = (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s;
        ascii &= (unsigned char)*s < 0x80;
    }
    while (len && ((unsigned char)value[len] & 0xC0) == 0x80) /* cut at a character boundary */
        len--;
    text[len] = '\0';
    buf_printf(b, "%s:", name);
    if (ascii) {
        buf_printf(b, " %s\r\n", text);
        return;
    }
    for (size_t at = 0; at < len;) {
        size_t take = len - at < 45 ? len - at : 45;
        while (at + take < len && ((unsigned char)text[at + take] & 0xC0) == 0x80)
            take--;
        char b64[sodium_base64_ENCODED_LEN(45, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof b64, (const unsigned char *)text + at, take,
                          sodium_base64_VARIANT_ORIGINAL);
        buf_printf(b, "%s=?UTF-8?B?%s?=", at ? "\r\n " : " ", b64);
        at += take;
    }
    buf_append(b, "\r\n", 2);
}

/* text as quoted-printable (RFC 2045): lines of at most 76 characters, newlines as CRLF. */
static void put_quoted_printable(struct buf *b, const char *text)
{
    size_t col = 0;
    for (const char *s = text; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') {
            buf_append(b, "\r\n", 2);
            col = 0;
            continue;
        }
        bool blank_at_end = (c == ' ' || c == '\t') && (s[1] == '\n' || s[1] == '\0');
        bool plain = ((c >= 33 && c <= 126 && c != '=') || c == ' ' || c == '\t') && !blank_at_end;
        size_t width = plain ? 1 : 3;
        if (col + width > 75) { /* a soft break: "=" ends the line */
            buf_append(b, "=\r\n", 3);
            col = 0;
        }
        if (plain)
            buf_putc(b, (char)c);
        else
            buf_printf(b, "=%02X", c);
        col += width;
    }
}

static void put_pairs(struct buf *b, const char *title, json_t *obj)
{
    size_t n;
    const char **names = label_names_sorted(obj, true, &n);
    buf_printf(b, "%s:\n", title);
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "  %s = %s\n", names[i], label_value(obj, names[i]));
    free(names);
}

/* The body's text: the group, then each alert (firing ones first) with its labels,
 * annotations, start and end, until EMAIL_TEXT_MAX bytes; what is not listed is counted. */
static void email_text(struct buf *b, const struct receiver *r, const struct router_send *s,
                       size_t nsend)
{
    struct nalert *const *list = s->alerts;
    size_t n = s->nalerts;
    buf_printf(b, "Receiver: %s\nGroup: %s\n", r->name, s->group_key);
    for (size_t i = 0; i < nsend; i++)
        if (list[i]->incident) {
            buf_printf(b, "Incident: %s\n", list[i]->incident);
            break;
        }
    size_t listed = 0;
    for (int firing = 1; firing >= 0; firing--) {
        for (size_t i = 0; i < nsend && b->len < EMAIL_TEXT_MAX; i++) {
            const struct nalert *a = list[i];
            if (a->firing != (firing == 1))
                continue;
            char starts[40], ends[40];
            time_format_rfc3339(a->starts_ms, starts, sizeof starts);
            buf_printf(b, "\n[%s] %s\n", a->firing ? "FIRING" : "RESOLVED",
                       label_value(a->labels, "alertname"));
            put_pairs(b, "Labels", a->labels);
            if (json_object_size(a->annotations))
                put_pairs(b, "Annotations", a->annotations);
            buf_printf(b, "Started: %s\n", starts);
            if (!a->firing) {
                time_format_rfc3339(a->ends_ms, ends, sizeof ends);
                buf_printf(b, "Ended: %s\n", ends);
            }
            listed++;
        }
    }
    if (listed < n)
        buf_printf(b, "\n%zu more alerts of this group are not listed here.\n", n - listed);
}

/* The RFC 5322 message of a notification: headers, and email_text() as a quoted-printable
 * text/plain body. */
static char *email_message(const struct receiver *r, const struct router_send *s, size_t nsend,
                           size_t *len)
{
    struct buf m, text;
    buf_init(&m, EMAIL_MESSAGE_MAX);
    buf_init(&text, EMAIL_MESSAGE_MAX);
    int64_t now = time_now_ms();
    char date[64], id[17];
    unsigned char random[8];
    rfc5322_date(now, date, sizeof date);
    randombytes_buf(random, sizeof random);
    sodium_bin2hex(id, sizeof id, random, sizeof random);
    buf_printf(&m, "Date: %s\r\nFrom: %s\r\nTo: ", date, r->from);
    for (size_t i = 0; i < r->nrcpt; i++)
        buf_printf(&m, "%s%s", i ? ", " : "", r->rcpt[i]);
    buf_append(&m, "\r\n", 2);
    if (r->subject) {
        put_header(&m, "Subject", r->subject);
    } else {
        default_subject(&text, s);
        put_header(&m, "Subject", text.data);
        text.len = 0;
    }
    buf_printf(&m,
               "Message-ID: <%lld.%s@%s>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
               (long long)now, id, strchr(r->from, '@') + 1);
    email_text(&text, r, s, nsend);
    put_quoted_printable(&m, text.data);
    buf_release(&text);
    *len = m.len;
    return m.data; /* the buffer's bytes, now the caller's */
}

struct upload {
    const char *data;
    size_t len, sent;
};

static size_t upload_read(char *dst, size_t size, size_t nitems, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nitems < u->len - u->sent ? size * nitems : u->len - u->sent;
    memcpy(dst, u->data + u->sent, n);
    u->sent += n;
    return n;
}

/* libcurl hands the SMTP server's reply lines to the header callback: keeps the last one that
 * refuses something (4xx, 5xx) for the error text. */
static size_t smtp_reply(char *data, size_t size, size_t nitems, void *arg)
{
    struct answer *a = arg;
    size_t n = size * nitems;
    if (n >= 3 && (data[0] == '4' || data[0] == '5') && data[1] >= '0' && data[1] <= '9' &&
        data[2] >= '0' && data[2] <= '9') {
        a->len = 0;
        answer_write(data, 1, n, a);
    }
    return n;
}

/* One SMTP transaction: MAIL FROM, a RCPT TO per address of to (all must be accepted), DATA
 * with the message. */
static void email_attempt(struct receiver *r, const struct delivery *d, struct attempt *out)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *c = curl_start(r, errbuf, out);
    if (!c)
        return;
    char addr[ADDRESS_MAX_BYTES + 3];
    struct curl_slist *rcpt = NULL;
    for (size_t i = 0; i < r->nrcpt; i++) {
        snprintf(addr, sizeof addr, "<%s>", r->rcpt[i]);
        rcpt = curl_slist_append(rcpt, addr);
    }
    snprintf(addr, sizeof addr, "<%s>", r->from);
    struct upload up = {d->body, d->len, 0};
    struct answer reply = {.len = 0};
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp");
    curl_easy_setopt(c, CURLOPT_USE_SSL,
                     r->starttls ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_NONE);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, addr);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, upload_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &up);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)d->len);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, smtp_reply);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(rcpt);
    out->ok = rc == CURLE_OK;
    if (out->ok)
        return;
    if (*answer_text(&reply) && rc != CURLE_OPERATION_TIMEDOUT && rc != CURLE_ABORTED_BY_CALLBACK)
        snprintf(out->error, sizeof out->error, "SMTP %s", reply.quote);
    else
        curl_error_text(r, rc, errbuf, out);
}

/* ---- exec receivers ----------------------------------------------------------------------- */

/* The state of one run of a receiver's program. */
struct run {
    pid_t pid;
    int in, out; /* our ends of its stdin and of its stdout+stderr; -1 when closed */
    const char *body;
    size_t len, written;
    struct answer output;
    int status; /* from waitpid, once exited */
    bool exited;
};

static int run_start(struct receiver *r, struct run *run, char *why, size_t why_size)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        return snprintf(why, why_size, "cannot make a pipe: %s", strerror(errno)), -1;
    if (pipe2(out, O_CLOEXEC) != 0) {
        snprintf(why, why_size, "cannot make a pipe: %s", strerror(errno));
        close(in[0]), close(in[1]);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, out[1], 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, pipe_default;
    sigemptyset(&none);
    sigemptyset(&pipe_default);
    sigaddset(&pipe_default, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);            /* this thread blocks SIGPIPE */
    posix_spawnattr_setsigdefault(&attr, &pipe_default); /* opsdb serve ignores it */
    posix_spawnattr_setpgroup(&attr, 0); /* its own group: a timeout kills what it started too */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    int rc = posix_spawnp(&run->pid, r->argv[0], &fa, &attr, r->argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        snprintf(why, why_size, "cannot run %s: %s", r->argv[0], strerror(rc));
        close(in[1]), close(out[0]);
        return -1;
    }
    run->in = in[1];
    run->out = out[0];
    fcntl(run->in, F_SETFL, O_NONBLOCK);
    fcntl(run->out, F_SETFL, O_NONBLOCK);
    return 0;
}

static void fd_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Feeds stdin, collects output and looks for the exit, for at most wait_ms. */
static void run_step(struct run *run, int wait_ms)
{
    struct pollfd p[2];
    nfds_t np = 0;
    if (run->in >= 0)
        p[np++] = (struct pollfd){.fd = run->in, .events = POLLOUT};
    if (run->out >= 0)
        p[np++] = (struct pollfd){.fd = run->out, .events = POLLIN};
    if (np)
        poll(p, np, wait_ms);
    else
        usleep((useconds_t)wait_ms * 1000);
    if (run->in >= 0) {
        ssize_t w = write(run->in, run->body + run->written, run->len - run->written);
        if (w > 0)
            run->written += (size_t)w;
        if (run->written == run->len || (w < 0 && errno != EAGAIN && errno != EINTR)) {
            fd_close(&run->in); /* EPIPE: it does not read its input, which is its business */
            sigset_t pipe_sig;
            sigemptyset(&pipe_sig);
            sigaddset(&pipe_sig, SIGPIPE);
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe_sig, NULL, &zero); /* consume the SIGPIPE this thread blocks */
        }
    }
    if (run->out >= 0) {
        char chunk[4096];
        ssize_t got = read(run->out, chunk, sizeof chunk);
        if (got > 0)
            answer_write(chunk, 1, (size_t)got, &run->output);
        else if (got == 0 || (errno != EAGAIN && errno != EINTR))
            fd_close(&run->out);
    }
    if (waitpid(run->pid, &run->status, WNOHANG) == run->pid)
        run->exited = true;
}

static void exec_attempt(struct receiver *r, const struct delivery *d, struct attempt *out)
{
    struct run run = {.in = -1, .out = -1, .body = d->body, .len = d->len};
    if (run_start(r, &run, out->error, sizeof out->error) != 0)
        return;
    int64_t deadline = mono_ms() + r->timeout_ms;
    bool stopped = false, timed_out = false;
    while (!run.exited) {
        stopped = atomic_load(&r->n->abort);
        timed_out = mono_ms() >= deadline;
        if (stopped || timed_out) {
            kill(-run.pid, SIGKILL);
            waitpid(run.pid, &run.status, 0);
            break;
        }
        run_step(&run, EXEC_POLL_MS);
    }
    char chunk[512]; /* what it wrote just before it ended, for the error text */
    ssize_t got;
    while (run.out >= 0 && run.output.len < ANSWER_QUOTE_BYTES &&
           (got = read(run.out, chunk, sizeof chunk)) > 0)
        answer_write(chunk, 1, (size_t)got, &run.output);
    fd_close(&run.in);
    fd_close(&run.out);
    const char *sep = *answer_text(&run.output) ? ": " : "";
    if (stopped)
        snprintf(out->error, sizeof out->error, "killed: opsdb is stopping");
    else if (timed_out)
        snprintf(out->error, sizeof out->error, "killed after timeout (%lld ms)",
                 (long long)r->timeout_ms);
    else if (WIFEXITED(run.status) && WEXITSTATUS(run.status) == 0)
        out->ok = true;
    else if (WIFEXITED(run.status))
        snprintf(out->error, sizeof out->error, "exit status %d%s%s", WEXITSTATUS(run.status), sep,
                 run.output.quote);
    else
        snprintf(out->error, sizeof out->error, "killed by signal %d%s%s", WTERMSIG(run.status),
                 sep, run.output.quote);
}

/* ---- the receivers' threads --------------------------------------------------------------- */

static void delivery_free(struct delivery *d)
{
    free(d->group_key);
    free(d->alert_id);
    free(d->body);
    free(d);
}

static void delivery_dropped(struct receiver *r, const struct delivery *d, int64_t attempt,
                             const char *why)
{
    drop_now(r->n, r->index, d->group_key, d->alert_id, d->nalerts, attempt, why);
}

/* Sleeps before attempt + 1: 1 s, 2 s, 4 s ... up to BACKOFF_MAX_MS. False when opsdb stops
 * meanwhile. */
static bool backoff(struct receiver *r, int64_t attempt)
{
    int64_t delay = BACKOFF_FIRST_MS;
    for (int64_t i = 1; i < attempt && delay < BACKOFF_MAX_MS; i++)
        delay *= 2;
    int64_t until = mono_ms() + (delay < BACKOFF_MAX_MS ? delay : BACKOFF_MAX_MS);
    pthread_mutex_lock(&r->n->lock);
    while (!atomic_load(&r->n->abort) && mono_ms() < until)
        cond_wait_until(&r->wake, &r->n->lock, until);
    pthread_mutex_unlock(&r->n->lock);
    return !atomic_load(&r->n->abort);
}

static void deliver(struct receiver *r, const struct delivery *d)
{
    for (int64_t attempt = 1;; attempt++) {
        struct attempt a = {.ok = false};
        double t0 = mono_ms_precise();
        r->ops->attempt(r, d, &a);
        double ms = mono_ms_precise() - t0;
        bool last = attempt >= r->max_attempts || atomic_load(&r->n->abort);
        enum status st = a.ok ? ST_OK : last ? ST_FAILED : ST_RETRYING;
        if (st == ST_FAILED)
            log_warn("notifier: receiver '%s' gave up on %s after %lld attempts: %s", r->name,
                     d->group_key, (long long)attempt, a.error);
        row_write(r->n, &(struct row){r->name, d->group_key, d->alert_id, (int64_t)d->nalerts,
                                      attempt, st, a.http_status, a.ok ? NULL : a.error, ms});
        count_attempt(r->n, r->index, st, ms);
        if (st != ST_RETRYING)
            return;
        if (!backoff(r, attempt)) {
            char why[160];
            snprintf(why, sizeof why, "%s (attempt %lld was not made)", WHY_STOPPED,
                     (long long)attempt + 1);
            delivery_dropped(r, d, attempt + 1, why);
            return;
        }
    }
}

static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    struct notifier *n = r->n;
    sigset_t pipe_sig; /* a program that does not read its stdin: EPIPE, not the signal */
    sigemptyset(&pipe_sig);
    sigaddset(&pipe_sig, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_sig, NULL);
    pthread_mutex_lock(&n->lock);
    for (;;) {
        while (!r->head && !n->receivers_stopping)
            pthread_cond_wait(&r->wake, &n->lock);
        struct delivery *d = r->head;
        if (!d)
            break;
        r->head = d->next;
        if (!r->head)
            r->tail = NULL;
        r->queued--;
        r->busy = true;
        pthread_mutex_unlock(&n->lock);
        if (atomic_load(&n->abort))
            delivery_dropped(r, d, 1, WHY_STOPPED);
        else
            deliver(r, d);
        delivery_free(d);
        pthread_mutex_lock(&n->lock);
        r->busy = false;
        pthread_cond_broadcast(&n->idle);
    }
    pthread_mutex_unlock(&n->lock);
    if (r->curl)
        curl_easy_cleanup(r->curl);
    r->curl = NULL;
    return NULL;
}

/* Hands d to its receiver's thread, or drops it when that one has too much waiting. */
static void delivery_queue(struct notifier *n, struct receiver *r, struct delivery *d)
{
    pthread_mutex_lock(&n->lock);
    if (r->queued >= RECEIVER_QUEUE_MAX) {
        drop_locked(n, r->index, WHY_RECEIVER_BUSY, d->group_key, d->alert_id, d->nalerts);
        pthread_mutex_unlock(&n->lock);
        delivery_free(d);
        return;
    }
    if (r->tail)
        r->tail->next = d;
    else
        r->head = d;
    r->tail = d;
    r->queued++;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&n->lock);
}

/* Queues for receiver s->receiver the notification s: its alerts, as many as max_alerts allows.
 * The router's callback of a live notifier. */
static void queue_send(void *arg, const struct router_send *s)
{
    struct notifier *n = arg;
    struct receiver *r = &n->receivers[s->receiver];
    struct delivery *d = xcalloc(1, sizeof *d);
    d->group_key = xstrdup(s->group_key);
    d->alert_id = xstrdup(s->alerts[0]->id);
    d->nalerts = r->max_alerts > 0 && s->nalerts > (size_t)r->max_alerts ? (size_t)r->max_alerts
                                                                         : s->nalerts;
    d->body = r->ops->body(r, s, d->nalerts, &d->len);
    delivery_queue(n, r, d);
}

/* ---- a replay's notifications -------------------------------------------------------------- */

/* Hands the replay's trace one event of alert a (what: "notify firing", "notify resolved",
 * "notify dropped"). */
static void trace_alert(struct notifier *n, const struct nalert *a, const char *what, int64_t at_ms,
                        const char *receiver, const char *group_key, const char *send,
                        const char *note)
{
    char *labels = json_dumps(a->labels, JSON_COMPACT | JSON_SORT_KEYS);
    char *annotations = json_dumps(a->annotations, JSON_COMPACT | JSON_SORT_KEYS);
    n->trace(n->trace_arg,
             &(struct alert_trace){at_ms, what, a->id, label_value(a->labels, "alertname"),
                                   labels ? labels : "{}", annotations ? annotations : "{}",
                                   a->value, note, receiver, group_key, send});
    free(labels);
    free(annotations);
}

/* The router's callback of a replay: each alert the notification lists (as many as max_alerts
 * allows), at the time it is due. */
static void trace_send(void *arg, const struct router_send *s)
{
    struct notifier *n = arg;
    const struct receiver *r = &n->receivers[s->receiver];
    size_t nsend = r->max_alerts > 0 && s->nalerts > (size_t)r->max_alerts ? (size_t)r->max_alerts
                                                                           : s->nalerts;
    for (size_t i = 0; i < nsend; i++)
        trace_alert(n, s->alerts[i], s->alerts[i]->firing ? "notify firing" : "notify resolved",
                    s->at_ms, r->name, s->group_key, router_send_kind_name(s->kind), NULL);
}

/* A replay's state change that is not valid (the live notifier drops it the same way). */
static void trace_invalid(struct notifier *n, const struct notify_alert *a)
{
    n->trace(n->trace_arg,
             &(struct alert_trace){n->clock_ms, "notify dropped", a->alert_id ? a->alert_id : "",
                                   "", "{}", "{}", a->value, WHY_INVALID, NULL, NULL, NULL});
}

/* An escalation step: to its receiver at once, in a group of its own (its key from
 * escalation_key(), the alert's labels as group labels) that is sent once and not kept, so
 * neither group_wait nor repeat_interval apply. An unknown receiver is a dropped row. */
static void dispatch_escalation(struct notifier *n, struct nalert *a, int64_t now)
{
    char *key = escalation_key(a);
    size_t i = receiver_find(n, a->receiver);
    if (i == n->nreceivers) {
        char why[300];
        snprintf(why, sizeof why,
                 "escalation to receiver '%s', which is not defined: add it to "
                 "alerting.receivers or name another in the escalation step",
                 a->receiver);
        if (n->trace)
            trace_alert(n, a, "notify dropped", now, a->receiver, key, NULL, why);
        else
            drop_now(n, i, key, a->id, 1, 1, why);
    } else if (a->firing || n->receivers[i].send_resolved) {
        struct router_send s = {i,  key, a->labels, &a, 1, a->firing ? SEND_FIRST : SEND_RESOLVED,
                                now};
        n->send(n, &s);
    }
    free(key);
}

/* When a restored alert's group last went out (router_restore()'s sent_at), on the
 * dispatcher's monotonic clock: from notifier_restore()'s log, else when the alert was notified. */
static int64_t restored_sent_at(void *arg, size_t receiver, const char *group_key,
                                const struct nalert *a)
{
    struct notifier *n = arg;
    int64_t at = a->sent_ms;
    for (size_t i = 0; i < n->nrestored; i++)
        if (strcmp(n->restored[i].receiver, n->receivers[receiver].name) == 0 &&
            strcmp(n->restored[i].group_key, group_key) == 0)
            at = n->restored[i].ts_ms;
    return mono_ms() - (time_now_ms() - at);
}

/* Routes a and files it in its groups (or drops it: no receiver); one notifier_restore() took
 * up is filed as sent. */
static void dispatch(struct notifier *n, struct nalert *a, int64_t now)
{
    if (a->sent_ms)
        router_restore(n->router, a, now, restored_sent_at, n);
    else if (a->receiver)
        dispatch_escalation(n, a, now);
    else if (router_add(n->router, a, now) || a->muted)
        return; /* a withdrawal no route takes has nothing to withdraw */
    else if (n->trace)
        trace_alert(n, a, "notify dropped", now, NULL, NULL, NULL, WHY_NO_RECEIVER);
    else
        drop_alert(n, a, WHY_NO_RECEIVER);
}

static void *dispatcher_main(void *arg)
{
    struct notifier *n = arg;
    int64_t next = INT64_MAX;
    pthread_mutex_lock(&n->lock);
    for (;;) {
        while (!n->qhead && !n->ndrops && !n->stopping && mono_ms() < next)
            cond_wait_until(&n->wake, &n->lock, next);
        struct nalert *q = n->qhead;
        n->qhead = n->qtail = NULL;
        n->qlen = 0;
        bool stopping = n->stopping;
        pthread_mutex_unlock(&n->lock);
        int64_t now = mono_ms();
        while (q) {
            struct nalert *a = q;
            q = q->next;
            dispatch(n, a, now);
            nalert_unref(a);
        }
        next = router_flush(n->router, mono_ms(), stopping);
        drops_write(n);
        pthread_mutex_lock(&n->lock);
        if (stopping && !n->qhead && !n->ndrops)
            break;
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

/* ---- the configuration -------------------------------------------------------------------- */

/* The state of reading the alerting section. */
struct cfgp {
    struct ydoc *d; /* the config file; its messages name the file and line */
    struct notifier *n;
};

enum ftype { F_STRING, F_DURATION, F_BOOL, F_INT, F_CUSTOM };

/* One key of a map in the config: where it goes in the struct being filled, its bounds. */
struct field {
    const char *key;
    enum ftype type;
    size_t offset;
    int64_t min, max; /* F_DURATION (ms), F_INT */
    /* F_CUSTOM: reads v into obj; ctx names the map the key is in */
    int (*custom)(struct cfgp *p, const struct field *f, yaml_node_t *v, const char *ctx,
                  void *obj);
};

static const char *text_of(struct cfgp *p, yaml_node_t *v, const char *ctx, int *rc)
{
    const char *s = ydoc_text(v);
    if (!s)
        *rc = ydoc_fail(p->d, v, "%s: expected a text value, not a %s", ctx,
                        v->type == YAML_MAPPING_NODE ? "map" : "list");
    else if (strlen(s) > TEXT_MAX)
        *rc = ydoc_fail(p->d, v, "%s: longer than %d bytes", ctx, TEXT_MAX), s = NULL;
    return s;
}

static bool label_name_ok(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
              (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

static int set_scalar_field(struct cfgp *p, const struct field *f, yaml_node_t *v, const char *ctx,
                            void *obj)
{
    int rc = 0;
    const char *s = text_of(p, v, ctx, &rc);
    if (!s)
        return rc;
    void *dst = (char *)obj + f->offset;
    int64_t i = 0;
    char *end;
    switch (f->type) {
    case F_STRING:
        free(*(char **)dst);
        *(char **)dst = xstrdup(s);
        return 0;
    case F_BOOL:
        if (strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0)
            *(bool *)dst = true;
        else if (strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0)
            *(bool *)dst = false;
        else
            return ydoc_fail(p->d, v, "%s: '%s' is not true or false", ctx, s);
        return 0;
    case F_DURATION:
        if (!time_parse_duration(s, &i))
            return ydoc_fail(
                p->d, v, "%s: '%s' is not a duration (e.g. 0s, 500ms, 30s, 5m, 4h, 1d)", ctx, s);
        if (i < f->min || i > f->max)
            return ydoc_fail(p->d, v, "%s: %s is outside %lldms..%lldms", ctx, s, (long long)f->min,
                             (long long)f->max);
        break;
    case F_INT:
        errno = 0;
        i = strtoll(s, &end, 10);
        if (errno || end == s || *end)
            return ydoc_fail(p->d, v, "%s: '%s' is not an integer", ctx, s);
        if (i < f->min || i > f->max)
            return ydoc_fail(p->d, v, "%s: %s is outside %lld..%lld", ctx, s, (long long)f->min,
                             (long long)f->max);
        break;
    case F_CUSTOM:
        break;
    }
    *(int64_t *)dst = i;
    return 0;
}

/* Reads the keys of map into obj by the table f; every key must be in it, once. */
static int parse_fields(struct cfgp *p, yaml_node_t *map, const char *ctx, const struct field *f,
                        size_t nf, void *obj)
{
    char known[256] = "";
    for (size_t i = 0, len = 0; i < nf && len < sizeof known; i++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "", f[i].key);
    if (map->type != YAML_MAPPING_NODE)
        return ydoc_fail(p->d, map, "%s: expected a map (keys: %s)", ctx, known);
    uint64_t seen = 0;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = ydoc_node(p->d, pr->key), *v = ydoc_node(p->d, pr->value);
        const char *key = ydoc_text(k);
        size_t i = 0;
        while (key && i < nf && strcmp(f[i].key, key) != 0)
            i++;
        if (!key || i == nf)
            return ydoc_fail(p->d, k, "%s: unknown key '%s' (known: %s)", ctx, key ? key : "?",
                             known);
        if (seen & (1ull << i))
            return ydoc_fail(p->d, k, "%s: '%s' is given twice", ctx, key);
        seen |= 1ull << i;
        char sub[300];
        snprintf(sub, sizeof sub, "%s.%s", ctx, key);
        int rc = f[i].type == F_CUSTOM ? f[i].custom(p, &f[i], v, ctx, obj)
                                       : set_scalar_field(p, &f[i], v, sub, obj);
        if (rc)
            return rc;
    }
    return 0;
}

/* A list of label names (or of words, label_names false) as a YAML list. */
static int parse_names(struct cfgp *p, yaml_node_t *v, const char *ctx, bool label_names,
                       char ***out, size_t *n)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(p->d, v, "%s: expected a list", ctx);
    size_t count = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (count > LIST_MAX)
        return ydoc_fail(p->d, v, "%s: more than %d items", ctx, LIST_MAX);
    free_strings(*out, *n);
    *out = xcalloc(count + 1, sizeof **out);
    *n = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        int rc = 0;
        yaml_node_t *item = ydoc_node(p->d, *it);
        const char *s = text_of(p, item, ctx, &rc);
        if (!s)
            return rc;
        if (label_names && !label_name_ok(s) && strcmp(s, "...") != 0)
            return ydoc_fail(p->d, item, "%s: '%s' is not a label name", ctx, s);
        (*out)[(*n)++] = xstrdup(s);
    }
    return 0;
}

/* match / match_re: label -> value or regex. */
static int parse_matchers(struct cfgp *p, const struct field *f, yaml_node_t *v, const char *ctx,
                          void *obj)
{
    struct matchers *m = (struct matchers *)((char *)obj + f->offset);
    bool is_re = strstr(f->key, "_re") != NULL;
    if (v->type != YAML_MAPPING_NODE)
        return ydoc_fail(p->d, v, "%s.%s: expected a map of label: %s", ctx, f->key,
                         is_re ? "regex" : "value");
    for (yaml_node_pair_t *pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = ydoc_node(p->d, pr->key), *val = ydoc_node(p->d, pr->value);
        const char *name = ydoc_text(k);
        char sub[300];
        snprintf(sub, sizeof sub, "%s.%s.%s", ctx, f->key, name ? name : "?");
        int rc = 0;
        const char *value = text_of(p, val, sub, &rc);
        if (!value)
            return rc;
        if (!name || !label_name_ok(name))
            return ydoc_fail(p->d, k, "%s.%s: '%s' is not a label name", ctx, f->key,
                             name ? name : "?");
        if (m->n >= LIST_MAX)
            return ydoc_fail(p->d, k, "%s: more than %d matchers", ctx, LIST_MAX);
        struct matcher mt = {.is_re = is_re};
        if (is_re) {
            size_t len = strlen(value) + 5;
            char *anchored = xcalloc(1, len);
            snprintf(anchored, len, "^(%s)$", value); /* anchored, as in Alertmanager */
            int err = regcomp(&mt.re, anchored, REG_EXTENDED | REG_NOSUB);
            free(anchored);
            if (err) {
                char why[200];
                regerror(err, &mt.re, why, sizeof why);
                return ydoc_fail(p->d, val,
                                 "%s: '%s' is not a valid regular expression (POSIX ERE): %s", sub,
                                 value, why);
            }
        }
        mt.name = xstrdup(name);
        mt.value = xstrdup(value);
        m->v = xrealloc(m->v, (m->n + 1) * sizeof *m->v);
        m->v[m->n++] = mt;
    }
    return 0;
}

/* -- receivers -- */

static int parse_command(struct cfgp *p, const struct field *f, yaml_node_t *v, const char *ctx,
                         void *obj)
{
    struct receiver *r = obj;
    char sub[300];
    snprintf(sub, sizeof sub, "%s.%s", ctx, f->key);
    if (v->type == YAML_SEQUENCE_NODE)
        return parse_names(p, v, sub, false, &r->argv, &r->argc);
    int rc = 0;
    const char *s = text_of(p, v, sub, &rc);
    if (!s)
        return rc;
    free_strings(r->argv, r->argc);
    r->argv = xcalloc(LIST_MAX + 1, sizeof *r->argv);
    r->argc = 0;
    for (const char *w = s + strspn(s, " "); *w; w += strspn(w, " ")) { /* split on spaces */
        size_t len = strcspn(w, " ");
        if (r->argc == LIST_MAX)
            return ydoc_fail(p->d, v, "%s: more than %d words", sub, LIST_MAX);
        r->argv[r->argc] = xcalloc(1, len + 1);
        memcpy(r->argv[r->argc++], w, len);
        w += len;
    }
    return 0;
}

static int http_url_check(struct cfgp *p, yaml_node_t *at, const char *ctx, const char *url,
                          const char *example)
{
    if (!url)
        return ydoc_fail(p->d, at, "%s: url is missing (e.g. url: %s)", ctx, example);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return ydoc_fail(p->d, at, "%s: url '%s' is not an http:// or https:// URL", ctx, url);
    return 0;
}

static int webhook_check(struct cfgp *p, yaml_node_t *at, const char *ctx, struct receiver *r)
{
    int rc = http_url_check(p, at, ctx, r->url, "http://127.0.0.1:9000/hook");
    if (rc)
        return rc;
    if (r->hmac_secret && !*r->hmac_secret)
        return ydoc_fail(p->d, at, "%s: hmac_secret is empty; remove it or give a secret", ctx);
    return 0;
}

static int exec_check(struct cfgp *p, yaml_node_t *at, const char *ctx, struct receiver *r)
{
    if (r->argc == 0)
        return ydoc_fail(p->d, at,
                         "%s: command is missing (e.g. command: /usr/local/bin/page-oncall)", ctx);
    return 0;
}

/* url is the Alertmanager's base URL; attempts go to url + /api/v2/alerts. */
static int alertmanager_check(struct cfgp *p, yaml_node_t *at, const char *ctx, struct receiver *r)
{
    int rc = http_url_check(p, at, ctx, r->url, "http://127.0.0.1:9093");
    if (rc)
        return rc;
    size_t len = strlen(r->url);
    while (len && r->url[len - 1] == '/')
        len--;
    if (strstr(r->url, "/api/"))
        return ydoc_fail(p->d, at,
                         "%s: url '%s' names an API path; give the Alertmanager's base URL "
                         "(e.g. http://127.0.0.1:9093): opsdb posts to /api/v2/alerts under it",
                         ctx, r->url);
    char *endpoint = xcalloc(1, len + sizeof "/api/v2/alerts");
    memcpy(endpoint, r->url, len);
    memcpy(endpoint + len, "/api/v2/alerts", sizeof "/api/v2/alerts");
    free(r->url);
    r->url = endpoint;
    return 0;
}

/* An address as SMTP takes it in MAIL FROM and RCPT TO: local@domain in printable ASCII, without
 * spaces, quotes, commas or angle brackets. */
static bool address_ok(const char *s, size_t len)
{
    const char *at = memchr(s, '@', len);
    if (len == 0 || len > ADDRESS_MAX_BYTES || !at || at == s || at == s + len - 1 ||
        memchr(at + 1, '@', len - (size_t)(at + 1 - s)))
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f ||
            strchr("<>,;:\"()[]\\", s[i]))
            return false;
    return true;
}

/* to: comma-separated addresses, into r->rcpt. */
static int parse_recipients(struct cfgp *p, yaml_node_t *at, const char *ctx, struct receiver *r)
{
    r->rcpt = xcalloc(LIST_MAX, sizeof *r->rcpt);
    for (const char *s = r->to;; s++) {
        s += strspn(s, " \t");
        size_t len = strcspn(s, ",");
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (!address_ok(s, len))
            return ydoc_fail(p->d, at,
                             "%s.to: '%.*s' is not an email address (local@domain; several are "
                             "separated by commas)",
                             ctx, (int)len, s);
        if (r->nrcpt == LIST_MAX)
            return ydoc_fail(p->d, at, "%s.to: more than %d addresses", ctx, LIST_MAX);
        r->rcpt[r->nrcpt] = xcalloc(1, len + 1);
        memcpy(r->rcpt[r->nrcpt++], s, len);
        s += strcspn(s, ",");
        if (!*s)
            return 0;
    }
}

/* smtp: host or host:port (a name, an IPv4 address or an [IPv6] one), into r->url. */
static int smtp_check(struct cfgp *p, yaml_node_t *at, const char *ctx, struct receiver *r)
{
    const char *port = strrchr(r->smtp, ':');
    if (port && strchr(port, ']'))
        port = NULL; /* [::1] without a port */
    char *end = NULL;
    long number = port ? strtol(port + 1, &end, 10) : 25;
    if (!*r->smtp || *r->smtp == ':' || strcspn(r->smtp, " \t/@?#") != strlen(r->smtp) ||
        (port && (end == port + 1 || *end || number < 1 || number > 65535)))
        return ydoc_fail(p->d, at,
                         "%s.smtp: '%s' is not host:port (e.g. smtp: \"127.0.0.1:25\"; no "
                         "smtp://, starttls: true asks for STARTTLS)",
                         ctx, r->smtp);
    size_t len = strlen(r->smtp) + sizeof "smtp://";
    r->url = xcalloc(1, len);
    snprintf(r->url, len, "smtp://%s", r->smtp);
    return 0;
}

static int email_check(struct cfgp *p, yaml_node_t *at, const char *ctx, struct receiver *r)
{
    const char *missing = !r->to ? "to" : !r->from ? "from" : !r->smtp ? "smtp" : NULL;
    if (missing)
        return ydoc_fail(p->d, at,
                         "%s: %s is missing (e.g. {to: \"oncall@example.com\", from: "
                         "\"opsdb@example.com\", smtp: \"mail.example.com:25\"})",
                         ctx, missing);
    int rc = parse_recipients(p, at, ctx, r);
    if (rc)
        return rc;
    if (!address_ok(r->from, strlen(r->from)))
        return ydoc_fail(p->d, at, "%s.from: '%s' is not an email address (local@domain)", ctx,
                         r->from);
    rc = smtp_check(p, at, ctx, r);
    if (rc)
        return rc;
    for (const char *c = r->subject; c && *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return ydoc_fail(p->d, at, "%s.subject: has a control character (a line break?)", ctx);
    if (r->subject && !*r->subject)
        return ydoc_fail(p->d, at, "%s.subject: is empty; remove it for the default subject", ctx);
    return 0;
}

static const struct field webhook_fields[] = {
    {"url", F_STRING, offsetof(struct receiver, url), 0, 0, NULL},
    {"hmac_secret", F_STRING, offsetof(struct receiver, hmac_secret), 0, 0, NULL},
    {"ca_file", F_STRING, offsetof(struct receiver, ca_file), 0, 0, NULL},
    {"timeout", F_DURATION, offsetof(struct receiver, timeout_ms), 1, TIMEOUT_MAX_MS, NULL},
    {"send_resolved", F_BOOL, offsetof(struct receiver, send_resolved), 0, 0, NULL},
    {"max_alerts", F_INT, offsetof(struct receiver, max_alerts), 0, ALERTS_MAX, NULL},
};

static const struct field exec_fields[] = {
    {"command", F_CUSTOM, 0, 0, 0, parse_command},
    {"timeout", F_DURATION, offsetof(struct receiver, timeout_ms), 1, TIMEOUT_MAX_MS, NULL},
    {"send_resolved", F_BOOL, offsetof(struct receiver, send_resolved), 0, 0, NULL},
    {"max_alerts", F_INT, offsetof(struct receiver, max_alerts), 0, ALERTS_MAX, NULL},
};

static const struct field email_fields[] = {
    {"to", F_STRING, offsetof(struct receiver, to), 0, 0, NULL},
    {"from", F_STRING, offsetof(struct receiver, from), 0, 0, NULL},
    {"smtp", F_STRING, offsetof(struct receiver, smtp), 0, 0, NULL},
    {"subject", F_STRING, offsetof(struct receiver, subject), 0, 0, NULL},
    {"timeout", F_DURATION, offsetof(struct receiver, timeout_ms), 1, TIMEOUT_MAX_MS, NULL},
    {"starttls", F_BOOL, offsetof(struct receiver, starttls), 0, 0, NULL},
    {"ca_file", F_STRING, offsetof(struct receiver, ca_file), 0, 0, NULL},
    {"send_resolved", F_BOOL, offsetof(struct receiver, send_resolved), 0, 0, NULL},
    {"max_alerts", F_INT, offsetof(struct receiver, max_alerts), 0, ALERTS_MAX, NULL},
};

static const struct field alertmanager_fields[] = {
    {"url", F_STRING, offsetof(struct receiver, url), 0, 0, NULL},
    {"ca_file", F_STRING, offsetof(struct receiver, ca_file), 0, 0, NULL},
    {"timeout", F_DURATION, offsetof(struct receiver, timeout_ms), 1, TIMEOUT_MAX_MS, NULL},
};

#define FIELDS(f) f, sizeof f / sizeof f[0]

/* The kinds of receivers: a new one is a row here, one in receiver_fields, and its functions. */
static const struct receiver_ops receiver_kinds[] = {
    {"webhook", FIELDS(webhook_fields), webhook_check, payload_json, webhook_attempt},
    {"exec", FIELDS(exec_fields), exec_check, payload_json, exec_attempt},
    {"email", FIELDS(email_fields), email_check, email_message, email_attempt},
    {"alertmanager", FIELDS(alertmanager_fields), alertmanager_check, postable_json,
     alertmanager_attempt},
};
#define NKINDS (sizeof receiver_kinds / sizeof receiver_kinds[0])

static int parse_kind(struct cfgp *p, const struct field *f, yaml_node_t *v, const char *ctx,
                      void *obj)
{
    struct receiver *r = obj;
    const struct receiver_ops *ops = NULL;
    for (size_t i = 0; i < NKINDS; i++)
        if (strcmp(receiver_kinds[i].kind, f->key) == 0)
            ops = &receiver_kinds[i];
    if (r->ops)
        return ydoc_fail(p->d, v,
                         "%s: has both %s and %s; a receiver delivers one way (define two "
                         "receivers and route to both with continue: true)",
                         ctx, r->ops->kind, ops->kind);
    r->ops = ops;
    char sub[300];
    snprintf(sub, sizeof sub, "%s.%s", ctx, f->key);
    int rc = parse_fields(p, v, sub, ops->fields, ops->nfields, r);
    return rc ? rc : ops->check(p, v, sub, r);
}

static const struct field receiver_fields[] = {
    {"name", F_STRING, offsetof(struct receiver, name), 0, 0, NULL},
    {"max_attempts", F_INT, offsetof(struct receiver, max_attempts), 1, ATTEMPTS_MAX, NULL},
    {"webhook", F_CUSTOM, 0, 0, 0, parse_kind},
    {"exec", F_CUSTOM, 0, 0, 0, parse_kind},
    {"email", F_CUSTOM, 0, 0, 0, parse_kind},
    {"alertmanager", F_CUSTOM, 0, 0, 0, parse_kind},
};

/* The receiver's ca_file is checked now, so that a wrong one is an error at start and not a
 * failed delivery later; a receiver without one takes alerting.ca_file (n->ca_file). */
static int receiver_ca_file(struct cfgp *p, yaml_node_t *v, const char *ctx, struct receiver *r)
{
    struct err e;
    char option[200];
    snprintf(option, sizeof option, "%s.%s.ca_file", ctx, r->ops->kind);
    if (r->ca_file && !*r->ca_file)
        return ydoc_fail(
            p->d, v, "%s: is empty; remove it for alerting.ca_file or the system's CAs", option);
    if (r->ca_file && tls_ca_file_check(r->ca_file, option, &e) != 0)
        return ydoc_fail(p->d, v, "%s", e.msg);
    if (!r->ca_file && p->n->ca_file && r->ops->attempt != exec_attempt)
        r->ca_file = xstrdup(p->n->ca_file);
    return 0;
}

static int parse_receiver(struct cfgp *p, yaml_node_t *v, size_t index)
{
    struct notifier *n = p->n;
    struct receiver *r = &n->receivers[index];
    r->n = n;
    r->index = index;
    r->max_attempts = DEFAULT_MAX_ATTEMPTS;
    r->timeout_ms = DEFAULT_TIMEOUT_MS;
    r->send_resolved = true;
    char ctx[64];
    snprintf(ctx, sizeof ctx, "receivers[%zu]", index);
    int rc = parse_fields(p, v, ctx, receiver_fields,
                          sizeof receiver_fields / sizeof receiver_fields[0], r);
    if (rc)
        return rc;
    if (!r->name || !*r->name)
        return ydoc_fail(p->d, v, "%s: name is missing (routes name their receiver)", ctx);
    if (strlen(r->name) > NAME_MAX_BYTES)
        return ydoc_fail(p->d, v, "%s: name is longer than %d bytes", ctx, NAME_MAX_BYTES);
    for (size_t i = 0; i < index; i++)
        if (strcmp(n->receivers[i].name, r->name) == 0)
            return ydoc_fail(p->d, v, "%s: receiver '%s' is defined twice", ctx, r->name);
    if (!r->ops)
        return ydoc_fail(p->d, v,
                         "%s: receiver '%s' needs one of webhook: {url: ...}, exec: {command: "
                         "...}, email: {to: ..., from: ..., smtp: ...} or alertmanager: {url: "
                         "...}",
                         ctx, r->name);
    return receiver_ca_file(p, v, ctx, r);
}

static int parse_receivers(struct cfgp *p, yaml_node_t *seq)
{
    struct notifier *n = p->n;
    if (seq->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(p->d, seq, "receivers: expected a list of {name: ..., webhook: {...}}");
    size_t count = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (count > RECEIVERS_MAX)
        return ydoc_fail(p->d, seq, "receivers: more than %d receivers", RECEIVERS_MAX);
    n->receivers = xcalloc(count, sizeof *n->receivers);
    for (size_t i = 0; i < count; i++) {
        n->nreceivers = i + 1; /* so that a failure frees what was read */
        int rc = parse_receiver(p, ydoc_node(p->d, seq->data.sequence.items.start[i]), i);
        if (rc)
            return rc;
    }
    return 0;
}

/* -- routes -- */

static int parse_route_receiver(struct cfgp *p, const struct field *f, yaml_node_t *v,
                                const char *ctx, void *obj)
{
    (void)f;
    struct route *rt = obj;
    int rc = 0;
    const char *name = text_of(p, v, ctx, &rc);
    if (!name)
        return rc;
    rt->receiver = receiver_find(p->n, name);
    if (rt->receiver < p->n->nreceivers)
        return 0;
    char names[200] = "";
    for (size_t i = 0, len = 0; i < p->n->nreceivers && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "",
                                p->n->receivers[i].name);
    return ydoc_fail(p->d, v, "%s: receiver '%s' is not defined (%s%s)", ctx, name,
                     *names ? "receivers: " : "alerting.receivers is empty", names);
}

static int parse_group_by(struct cfgp *p, const struct field *f, yaml_node_t *v, const char *ctx,
                          void *obj)
{
    struct route *rt = obj;
    char sub[300];
    snprintf(sub, sizeof sub, "%s.%s", ctx, f->key);
    int rc = parse_names(p, v, sub, true, &rt->group_by, &rt->ngroup_by);
    if (rc)
        return rc;
    rt->group_by_all = false;
    for (size_t i = 0; i < rt->ngroup_by; i++)
        if (strcmp(rt->group_by[i], "...") == 0)
            rt->group_by_all = true;
    if (rt->group_by_all && rt->ngroup_by > 1)
        return ydoc_fail(p->d, v, "%s: '...' (every label) stands alone", sub);
    return 0;
}

static int parse_child_routes(struct cfgp *p, const struct field *f, yaml_node_t *v,
                              const char *ctx, void *obj)
{
    (void)f;
    struct route *rt = obj;
    if (v->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(p->d, v, "%s.routes: expected a list of routes", ctx);
    rt->routes_node = v; /* read once this route's own settings are known */
    return 0;
}

static const struct field route_fields[] = {
    {"receiver", F_CUSTOM, 0, 0, 0, parse_route_receiver},
    {"group_by", F_CUSTOM, 0, 0, 0, parse_group_by},
    {"group_wait", F_DURATION, offsetof(struct route, group_wait_ms), 0, INTERVAL_MAX_MS, NULL},
    {"group_interval", F_DURATION, offsetof(struct route, group_interval_ms), 1, INTERVAL_MAX_MS,
     NULL},
    {"repeat_interval", F_DURATION, offsetof(struct route, repeat_interval_ms), 1, INTERVAL_MAX_MS,
     NULL},
    {"match", F_CUSTOM, offsetof(struct route, match), 0, 0, parse_matchers},
    {"match_re", F_CUSTOM, offsetof(struct route, match), 0, 0, parse_matchers},
    {"continue", F_BOOL, offsetof(struct route, cont), 0, 0, NULL},
    {"routes", F_CUSTOM, 0, 0, 0, parse_child_routes},
};

/* Reads rt from v: what it does not set comes from parent (the root's from the defaults). */
static int parse_route(struct cfgp *p, yaml_node_t *v, const char *ctx, const struct route *parent,
                       struct route *rt, int depth)
{
    if (depth > ROUTE_DEPTH_MAX)
        return ydoc_fail(p->d, v, "%s: routes nest deeper than %d levels", ctx, ROUTE_DEPTH_MAX);
    if (p->n->nroutes >= ROUTES_MAX)
        return ydoc_fail(p->d, v, "%s: more than %d routes", ctx, ROUTES_MAX);
    rt->index = p->n->nroutes++;
    rt->receiver = parent ? parent->receiver : SIZE_MAX;
    rt->group_wait_ms = parent ? parent->group_wait_ms : DEFAULT_GROUP_WAIT_MS;
    rt->group_interval_ms = parent ? parent->group_interval_ms : DEFAULT_GROUP_INTERVAL_MS;
    rt->repeat_interval_ms = parent ? parent->repeat_interval_ms : DEFAULT_REPEAT_INTERVAL_MS;
    if (parent) {
        rt->group_by_all = parent->group_by_all;
        rt->group_by = xcalloc(parent->ngroup_by + 1, sizeof *rt->group_by);
        for (size_t i = 0; i < parent->ngroup_by; i++)
            rt->group_by[rt->ngroup_by++] = xstrdup(parent->group_by[i]);
    }
    int rc =
        parse_fields(p, v, ctx, route_fields, sizeof route_fields / sizeof route_fields[0], rt);
    if (rc)
        return rc;
    if (!parent && rt->receiver == SIZE_MAX)
        return ydoc_fail(p->d, v,
                         "%s: receiver is missing: the root route names the receiver of every "
                         "alert no child route takes",
                         ctx);
    if (!parent && (rt->match.n || rt->cont))
        return ydoc_fail(p->d, v,
                         "%s: the root route takes every alert; match, match_re and continue "
                         "belong to its child routes",
                         ctx);
    rt->key = route_key(parent, rt);
    yaml_node_t *children = rt->routes_node;
    rt->routes_node = NULL;
    if (!children)
        return 0;
    size_t count =
        (size_t)(children->data.sequence.items.top - children->data.sequence.items.start);
    rt->routes = xcalloc(count, sizeof *rt->routes);
    for (size_t i = 0; i < count; i++) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s.routes[%zu]", ctx, i);
        rt->nroutes = i + 1;
        rc = parse_route(p, ydoc_node(p->d, children->data.sequence.items.start[i]), sub, rt,
                         &rt->routes[i], depth + 1);
        if (rc)
            return rc;
    }
    return 0;
}

/* The value of key in map (the last one when it is given twice); NULL when map is not a map or
 * has no such key. */
/* Reads alerting.receivers and alerting.route. The other keys of alerting (rule_files,
 * inhibit_rules, maintenance, escalations, ...) are the engine's and config.c's, which also says
 * which are unknown: they are not looked at here, nor is anything config.c reports (a root that
 * is not a map, an alerting that is not one). */
static int parse_alerting(struct cfgp *p, yaml_node_t *root)
{
    yaml_node_t *alerting = ydoc_map_get(p->d, root, "alerting");
    yaml_node_t *receivers = ydoc_map_get(p->d, alerting, "receivers");
    yaml_node_t *route = ydoc_map_get(p->d, alerting, "route");
    int rc = receivers ? parse_receivers(p, receivers) : 0;
    if (rc == 0 && route) {
        p->n->root = xcalloc(1, sizeof *p->n->root);
        rc = parse_route(p, route, "route", NULL, p->n->root, 0);
    } else if (rc == 0 && p->n->nreceivers) {
        rc = ydoc_fail(p->d, receivers,
                       "receivers: defined, but there is no route to them: add "
                       "alerting.route: {receiver: %s}",
                       p->n->receivers[0].name);
    }
    return rc;
}

static int config_read(struct notifier *n, const char *path, struct err *e)
{
    struct ydoc d;
    int rc = ydoc_load_file(&d, path, e);
    if (rc == 0)
        rc = parse_alerting(&(struct cfgp){&d, n}, ydoc_root(&d));
    ydoc_release(&d);
    return rc;
}

/* ---- the interface ------------------------------------------------------------------------ */

static void libraries_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sodium_init() < 0)
        abort(); /* no randomness source: nothing of opsdb's crypto could work */
}

static void notifier_release(struct notifier *n)
{
    for (size_t i = 0; i < n->nreceivers; i++) {
        struct receiver *r = &n->receivers[i];
        free(r->name);
        free(r->url);
        free(r->hmac_secret);
        free(r->ca_file);
        free(r->to);
        free(r->from);
        free(r->smtp);
        free(r->subject);
        free_strings(r->rcpt, r->nrcpt);
        free_strings(r->argv, r->argc);
        if (n->threads)
            pthread_cond_destroy(&r->wake);
    }
    free(n->receivers);
    if (n->root)
        route_release(n->root);
    free(n->root);
    for (size_t i = 0; i < n->nrestored; i++) {
        free((char *)n->restored[i].receiver);
        free((char *)n->restored[i].group_key);
    }
    free(n->restored);
    free(n->counters);
    free(n->path);
    free(n->ca_file);
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->wake);
    pthread_cond_destroy(&n->idle);
    free(n);
}

static int column(const struct table *t, const char *name)
{
    int c = schema_column(t, name);
    if (c < 0) {
        fprintf(stderr, "opsdb: BUG: notification_log has no column %s\n", name);
        abort();
    }
    return c;
}

/* A router over n's routes and receivers that hands what is due to send (with n). */
static struct router *router_from_config(struct notifier *n, router_send_fn send)
{
    bool *send_resolved = xcalloc(n->nreceivers, sizeof *send_resolved);
    for (size_t i = 0; i < n->nreceivers; i++)
        send_resolved[i] = n->receivers[i].send_resolved;
    struct router *r = router_new(n->root, send_resolved, n->nreceivers, send, n);
    free(send_resolved);
    return r;
}

/* What a live and a replay notifier share: the config read, the router. NULL on an error. */
static struct notifier *notifier_load(const char *config_path, const char *ca_file,
                                      struct writer *w, router_send_fn send, struct err *e)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, libraries_init);
    struct notifier *n = xcalloc(1, sizeof *n);
    n->w = w;
    n->path = xstrdup(config_path ? config_path : "");
    n->ca_file = ca_file && *ca_file ? xstrdup(ca_file) : NULL;
    n->log_table = schema_table("notification_log");
    const struct table *t = n->log_table;
    n->col = (struct log_columns){column(t, "ts"),        column(t, "receiver"),
                                  column(t, "group_key"), column(t, "alert_id"),
                                  column(t, "alerts"),    column(t, "status"),
                                  column(t, "attempt"),   column(t, "http_status"),
                                  column(t, "error"),     column(t, "latency_ms")};
    pthread_mutex_init(&n->lock, NULL);
    cond_init_monotonic(&n->wake);
    cond_init_monotonic(&n->idle);
    atomic_init(&n->abort, false);
    if ((n->ca_file && tls_ca_file_check(n->ca_file, "alerting.ca_file", e) != 0) ||
        (*n->path && config_read(n, n->path, e) != 0)) {
        notifier_release(n);
        return NULL;
    }
    n->counters = xcalloc(n->nreceivers + 1, sizeof *n->counters);
    n->send = send;
    n->router = router_from_config(n, send);
    return n;
}

int notifier_new(struct notifier **out, const char *config_path, const char *ca_file,
                 struct writer *w, struct err *e)
{
    *out = NULL;
    struct notifier *n = notifier_load(config_path, ca_file, w, queue_send, e);
    if (!n)
        return e->code;
    int rc;
    for (size_t i = 0; i < n->nreceivers; i++)
        cond_init_monotonic(&n->receivers[i].wake);
    n->threads = true;
    for (size_t i = 0; i < n->nreceivers; i++) {
        struct receiver *r = &n->receivers[i];
        r->started = pthread_create(&r->thread, NULL, receiver_main, r) == 0;
        if (!r->started) {
            rc = err_set(e, E_NOMEM, "cannot start the thread of receiver '%s'", r->name);
            notifier_free(&n, 0);
            return rc;
        }
    }
    n->dispatcher_started = pthread_create(&n->dispatcher, NULL, dispatcher_main, n) == 0;
    if (!n->dispatcher_started) {
        notifier_free(&n, 0);
        return err_set(e, E_NOMEM, "cannot start the notification dispatcher thread");
    }
    *out = n;
    return 0;
}

int notifier_new_replay(struct notifier **out, const char *config_path, alert_trace_fn fn,
                        void *arg, struct err *e)
{
    *out = notifier_load(config_path, NULL, NULL, trace_send, e);
    if (!*out)
        return e->code;
    (*out)->trace = fn;
    (*out)->trace_arg = arg;
    return 0;
}

void notifier_advance(struct notifier *n, int64_t now_ms)
{
    for (int64_t due = router_next_due(n->router); due <= now_ms;
         due = router_next_due(n->router)) {
        if (due > n->clock_ms) /* not before the change that made it due */
            n->clock_ms = due;
        router_flush(n->router, n->clock_ms, false);
    }
    n->clock_ms = now_ms;
}

/* Puts c at the end of the dispatcher's queue and wakes it. Called with n->lock held. */
static void queue_locked(struct notifier *n, struct nalert *c)
{
    c->next = NULL;
    if (n->qtail)
        n->qtail->next = c;
    else
        n->qhead = c;
    n->qtail = c;
    n->qlen++;
    pthread_cond_signal(&n->wake);
}

void notifier_restore(struct notifier *n, const struct notify_alert *alerts,
                      const int64_t *notified_ms, size_t nalerts, const struct notify_sent *sent,
                      size_t nsent)
{
    struct nalert *head = NULL, **tail = &head;
    for (size_t i = 0; i < nalerts; i++) {
        struct nalert *c = nalert_new(&alerts[i]);
        if (!c || !c->firing || c->receiver) {
            nalert_unref(c);
            continue;
        }
        c->sent_ms = notified_ms[i] > 0 ? notified_ms[i] : 1;
        *tail = c;
        tail = &c->next;
    }
    pthread_mutex_lock(&n->lock);
    if (n->trace || n->restored || n->stopping || !head) { /* taken up once, by a live one */
        pthread_mutex_unlock(&n->lock);
        for (struct nalert *c = head, *next; c; c = next) {
            next = c->next;
            nalert_unref(c);
        }
        return;
    }
    n->restored = xcalloc(nsent, sizeof *n->restored);
    for (size_t i = 0; i < nsent; i++)
        n->restored[i] = (struct notify_sent){xstrdup(sent[i].receiver), xstrdup(sent[i].group_key),
                                              sent[i].ts_ms};
    n->nrestored = nsent;
    /* all at once: the dispatcher files them in one pass, before what is posted later */
    for (struct nalert *c = head, *next; c; c = next) {
        next = c->next;
        queue_locked(n, c);
    }
    pthread_mutex_unlock(&n->lock);
}

void notifier_post(struct notifier *n, const struct notify_alert *a)
{
    struct nalert *c = nalert_new(a);
    if (n->trace) { /* a replay: at once, on its clock */
        if (c)
            dispatch(n, c, n->clock_ms);
        else
            trace_invalid(n, a);
        nalert_unref(c);
        return;
    }
    if (!c) {
        const char *id = a->alert_id && strlen(a->alert_id) <= TEXT_MAX ? a->alert_id : NULL;
        pthread_mutex_lock(&n->lock);
        drop_locked(n, n->nreceivers, WHY_INVALID, "", id, 1);
        pthread_mutex_unlock(&n->lock);
        return;
    }
    pthread_mutex_lock(&n->lock);
    if (n->stopping || n->qlen >= QUEUE_MAX) {
        bool stopping = n->stopping;
        pthread_mutex_unlock(&n->lock);
        drop_alert(n, c, stopping ? WHY_STOPPED : WHY_QUEUE_FULL);
        nalert_unref(c);
        return;
    }
    queue_locked(n, c);
    pthread_mutex_unlock(&n->lock);
}

/* Lets the receivers finish their queues until deadline_ms, then stops them. */
static void receivers_stop(struct notifier *n, int64_t deadline_ms)
{
    pthread_mutex_lock(&n->lock);
    n->receivers_stopping = true;
    for (;;) {
        bool pending = false;
        for (size_t i = 0; i < n->nreceivers; i++) {
            pthread_cond_broadcast(&n->receivers[i].wake);
            pending |= n->receivers[i].head || n->receivers[i].busy;
        }
        if (!pending || mono_ms() >= deadline_ms)
            break;
        cond_wait_until(&n->idle, &n->lock, deadline_ms);
    }
    atomic_store(&n->abort, true); /* what is left is dropped, a running attempt stops */
    for (size_t i = 0; i < n->nreceivers; i++)
        pthread_cond_broadcast(&n->receivers[i].wake);
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < n->nreceivers; i++)
        if (n->receivers[i].started)
            pthread_join(n->receivers[i].thread, NULL);
}

void notifier_free(struct notifier **np, int64_t timeout_ms)
{
    struct notifier *n = *np;
    if (!n)
        return;
    *np = NULL;
    int64_t deadline = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_signal(&n->wake);
    pthread_mutex_unlock(&n->lock);
    if (n->dispatcher_started)
        pthread_join(n->dispatcher, NULL); /* it sends what the groups hold, and ends */
    if (n->threads)
        receivers_stop(n, deadline);
    drops_write(n);
    router_free(&n->router);
    for (struct nalert *q = n->qhead, *next; q; q = next) { /* only if the dispatcher never ran */
        next = q->next;
        nalert_unref(q);
    }
    notifier_release(n);
}

/* A Prometheus label value: \ " and newlines escaped. */
static void put_label(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            buf_append(b, "\\n", 2);
        else if (*s == '"' || *s == '\\')
            buf_printf(b, "\\%c", *s);
        else
            buf_putc(b, *s);
    }
}

void notifier_metrics(struct notifier *n, struct buf *out)
{
    pthread_mutex_lock(&n->lock);
    size_t nc = n->nreceivers + 1;
    struct counters *c = xcalloc(nc, sizeof *c);
    memcpy(c, n->counters, nc * sizeof *c);
    size_t qlen = n->qlen;
    pthread_mutex_unlock(&n->lock);
    buf_printf(out, "# HELP opsdb_notifications_total Notification attempts by receiver and "
                    "outcome (ok; retrying: failed, tried again; failed: the last attempt failed); "
                    "dropped counts alerts never delivered (queue full, no receiver, stopping).\n"
                    "# TYPE opsdb_notifications_total counter\n");
    for (size_t i = 0; i < nc; i++) {
        if (i == n->nreceivers && c[i].n[ST_DROPPED] == 0)
            continue; /* receiver="": alerts no route took; shown once there are some */
        for (size_t s = 0; s < NSTATUS; s++) {
            if (i == n->nreceivers && s != ST_DROPPED)
                continue;
            buf_printf(out, "opsdb_notifications_total{receiver=\"");
            put_label(out, receiver_name(n, i));
            buf_printf(out, "\",status=\"%s\"} %llu\n", status_names[s],
                       (unsigned long long)c[i].n[s]);
        }
    }
    buf_printf(out,
               "# HELP opsdb_notification_queue_length Alert state changes waiting to be "
               "routed.\n# TYPE opsdb_notification_queue_length gauge\n"
               "opsdb_notification_queue_length %zu\n",
               qlen);
    buf_printf(out, "# HELP opsdb_notification_latency_seconds Time of one delivery attempt.\n"
                    "# TYPE opsdb_notification_latency_seconds summary\n");
    for (size_t i = 0; i < n->nreceivers; i++) {
        buf_printf(out, "opsdb_notification_latency_seconds_sum{receiver=\"");
        put_label(out, receiver_name(n, i));
        buf_printf(out, "\"} %.6f\nopsdb_notification_latency_seconds_count{receiver=\"",
                   c[i].latency_s);
        put_label(out, receiver_name(n, i));
        buf_printf(out, "\"} %llu\n", (unsigned long long)c[i].latency_n);
    }
    free(c);
}

bool notifier_has_receiver(const void *notifier, const char *name)
{
    const struct notifier *n = notifier;
    return receiver_find(n, name) < n->nreceivers;
}
