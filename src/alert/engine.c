/*
 * The alert engine: a thread that evaluates the rules and keeps the life of every alert.
 *
 * Each group runs on its interval; a threshold rule also runs as soon as rows of its table are
 * committed (the writer's after-commit hook marks the rules whose metric or table the commit
 * wrote — not every rule of system_metrics for every sample — and wakes the thread), at most every
 * COMMIT_EVAL_GAP_MS, so an alert with `for: 0` fires within a second of the sample that crossed.
 *
 * An alert is a rule and a label set (its id: a hash of group, rule and labels). Its states:
 * inactive (only its recent outcomes kept, for n_of_m) -> pending (condition true, `for` not yet
 * over) -> firing -> resolved (removed), and firing -> acknowledged by a person. The condition is
 * the rule's comparison with threshold while the alert is quiet and with resolve_threshold once it
 * is active (hysteresis); n_of_m counts true outcomes among the last M evaluations;
 * keep_firing_for holds a firing alert that long after its condition went away. Every transition
 * is a row of alert_history; firing and resolved go to the notifier. At start, the alerts that
 * alert_history shows active come back with their state and whether they were notified, so a
 * restart neither loses an alert nor notifies it twice.
 *
 * Locking: evaluation queries run without the lock; the transitions they cause are applied under
 * it, and the rows and notifications they make are written after it is released.
 */
#include "alert/alert_int.h"
#include "alert/escalate.h"
#include "alert/eval.h"
#include "alert/incident.h"
#include "alert/suppress.h"
#include "ingest/ingest.h"
#include "query/query.h"
#include "store/store.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMIT_EVAL_GAP_MS 200
#define ALERT_BUCKETS 4096
#define NOTIFY_DRAIN_MS 5000

enum alert_state { ST_INACTIVE, ST_PENDING, ST_FIRING, ST_ACKED };
static const char *const state_names[] = {"inactive", "pending", "firing", "acknowledged"};

struct alert {
    struct alert *next; /* in its hash bucket */
    char id[17];        /* 16 hex digits */
    char group[128], rule[128];
    char *labels_json; /* every label: the data's, the rule's, alertname */
    char *summary;
    char *annotations_json; /* expanded */
    enum alert_state state;
    double value;
    int64_t active_since_ms, fired_ms, last_hit_ms;
    int64_t notified_ms;  /* first notified firing in this episode: escalation counts from it */
    uint64_t outcomes[2]; /* the last evaluations' outcomes, newest in bit 0 (n_of_m) */
    bool notified;
    bool suppressed; /* firing, but silenced, in maintenance or inhibited: not notified */
    int escalation_level;
    char severity[16];   /* raised by an escalation step; "" = the labels' */
    char incident[17];   /* the incident it joined when it fired; "" = none */
    bool flap_announced; /* the one notification of its flapping spell */
    bool seen;           /* produced by the evaluation being applied */
};

/* The recent state changes of one alert id, kept after it resolves: an alert that changes
 * state more than alerting.flapping_transitions times within alerting.flapping_window is
 * flapping — notified once, then held as suppressed until it calms down. */
#define FLAP_TIMES_MAX 64
struct flap {
    struct flap *next;
    char id[17];
    int64_t times[FLAP_TIMES_MAX]; /* oldest first */
    size_t n;
    bool announced; /* the one notification of this flapping spell went out */
};

struct rule_state {
    bool committed; /* rows it reads were committed since it last ran */
    int64_t last_eval_ms, next_due_ms;
    double last_duration_ms;
    char last_error[512];
    uint64_t evaluations, failures;
};

/* A notification and the copies it points to (the alert may be gone when it is posted). */
struct note {
    struct notify_alert n;
    char id[17], incident[17], receiver[128];
    json_t *labels, *annotations;
};

/* What a transition leaves to do once the lock is released. */
struct pending_out {
    struct batch history;
    struct batch incidents; /* rows of the incidents that changed */
    char **annotations;     /* per history row, for a replay's trace (the table has no column) */
    struct note *notes;
    size_t nnotes, cap;
};

struct alert_engine {
    struct store *store;
    struct writer *writer;
    struct config cfg;
    struct notifier *notifier;
    struct suppressor *suppressor;
    struct escalations *escalations;
    struct incidents *incidents;
    /* a replay (alert_backtest): transitions and notifications go here, not to the writer and
     * the notifier */
    alert_trace_fn trace;
    void *trace_arg;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    bool any_committed; /* some rule's rows were committed since it last ran */
    /* the threshold rules on system_metrics by metric, sorted: what a commit's rows mark */
    struct metric_rule {
        const char *metric;
        size_t rule;
    } * by_metric;
    size_t nby_metric;
    struct alert_rules rules;
    struct rule_state *rstate;
    /* a reload's rules and receivers, checked, waiting for the thread to take them between two
     * evaluations (evaluations read the rules without the lock) */
    bool swap_pending;
    struct alert_rules next_rules;
    struct rule_state *next_rstate;
    struct notifier *next_notifier;
    struct suppressor *next_suppressor;
    struct escalations *next_escalations;
    struct alert *buckets[ALERT_BUCKETS];
    size_t nalerts;
    struct flap *flaps[ALERT_BUCKETS];
    int64_t flaps_swept_ms;
    uint64_t transitions_total, eval_failures_total, evaluations_total, flapping_total;
};

static const struct alert_rule *rule_named(const struct alert_rules *rules, const char *group,
                                           const char *name);
static void load_silences_since(struct alert_engine *a, int64_t since_ms);
static void restore_incidents(struct alert_engine *a);
static int read_table(struct alert_engine *a, const char *sql, struct store_result *res,
                      struct err *e);

/* ---- identity and labels ------------------------------------------------------------------- */

static void alert_id_of(const char *group, const char *rule, const char *labels, char out[17])
{
    crypto_generichash_state st;
    unsigned char h[8];
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)group, strlen(group) + 1);
    crypto_generichash_update(&st, (const unsigned char *)rule, strlen(rule) + 1);
    crypto_generichash_update(&st, (const unsigned char *)labels, strlen(labels));
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(out, 17, h, sizeof h);
}

static size_t bucket_of(const char *id)
{
    size_t h = 0;
    for (const char *p = id; *p; p++)
        h = h * 31 + (unsigned char)*p;
    return h % ALERT_BUCKETS;
}

static struct alert *find_alert(struct alert_engine *a, const char *id)
{
    for (struct alert *x = a->buckets[bucket_of(id)]; x; x = x->next)
        if (strcmp(x->id, id) == 0)
            return x;
    return NULL;
}

static void free_alert(struct alert *x)
{
    free(x->labels_json);
    free(x->summary);
    free(x->annotations_json);
    free(x);
}

static void remove_alert(struct alert_engine *a, struct alert *x)
{
    struct alert **p = &a->buckets[bucket_of(x->id)];
    while (*p != x)
        p = &(*p)->next;
    *p = x->next;
    a->nalerts--;
    free_alert(x);
}

/* The data's labels with the rule's on top, and alertname. */
static char *full_labels(const struct alert_rule *r, const char *data_labels)
{
    json_t *all = json_loads(data_labels, 0, NULL);
    json_t *extra = json_loads(r->labels_json, 0, NULL);
    if (!json_is_object(all)) {
        json_decref(all);
        all = json_object();
    }
    if (json_is_object(extra))
        json_object_update(all, extra);
    json_object_set_new(all, "alertname", json_string(r->name));
    char *text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(all);
    json_decref(extra);
    return text;
}

/* {{ $labels.name }} and {{ $value }} in an annotation; anything else is left as written. */
static void expand(struct buf *out, const char *tmpl, json_t *labels, double value)
{
    const char *p = tmpl;
    while (*p) {
        const char *open = strstr(p, "{{");
        const char *close = open ? strstr(open, "}}") : NULL;
        if (!close) {
            buf_append(out, p, strlen(p));
            return;
        }
        buf_append(out, p, (size_t)(open - p));
        const char *s = open + 2, *end = close;
        while (s < end && *s == ' ')
            s++;
        while (end > s && end[-1] == ' ')
            end--;
        size_t len = (size_t)(end - s);
        if (len == 6 && strncmp(s, "$value", 6) == 0) {
            char num[QUERY_NUMBER_TEXT_MAX];
            buf_append(out, num, isfinite(value) ? query_number_text(value, num) : 0);
        } else if (len > 8 && strncmp(s, "$labels.", 8) == 0) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(len - 8), s + 8);
            const char *v = json_string_value(json_object_get(labels, name));
            buf_append(out, v ? v : "", v ? strlen(v) : 0);
        } else {
            buf_append(out, open, (size_t)(close + 2 - open));
        }
        p = close + 2;
    }
}

/* Expands the rule's annotations for x; summary is the summary annotation or the rule name. */
static void annotate(struct alert *x, const struct alert_rule *r)
{
    json_t *labels = json_loads(x->labels_json, 0, NULL);
    json_t *tmpl = json_loads(r->annotations_json, 0, NULL);
    json_t *done = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(tmpl, key, v)
    {
        struct buf b;
        buf_init(&b, 1 << 16);
        expand(&b, json_string_value(v) ? json_string_value(v) : "", labels, x->value);
        json_object_set_new(done, key, json_stringn(b.data ? b.data : "", b.len));
        buf_release(&b);
    }
    free(x->annotations_json);
    x->annotations_json = json_dumps(done, JSON_COMPACT | JSON_SORT_KEYS);
    const char *summary = json_string_value(json_object_get(done, "summary"));
    free(x->summary);
    x->summary = strdup(summary ? summary : r->name);
    json_decref(done);
    json_decref(tmpl);
    json_decref(labels);
}

/* ---- what transitions write -------------------------------------------------------------- */

static void set_text(struct batch *b, struct value *row, const char *col, const char *s)
{
    int c = schema_column(b->table, col);
    size_t len = strlen(s);
    row[c] = (struct value){
        .s = arena_strndup(&b->arena, s, len), .len = (uint32_t)len, .type = VAL_TEXT};
}

static const char *severity_of(const char *labels_json, json_t **keep)
{
    static const char *const known[] = {"info", "warning", "critical", "page"};
    *keep = json_loads(labels_json, 0, NULL);
    const char *s = json_string_value(json_object_get(*keep, "severity"));
    for (size_t i = 0; s && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(s, known[i]) == 0)
            return known[i];
    return "warning";
}

/* A row of alert_history for x entering state (a state name of the table). */
static void record_note(struct pending_out *o, const struct alert *x, const char *state,
                        int64_t now_ms, const char *note)
{
    struct value *row = batch_add_row(&o->history);
    const struct table *t = o->history.table;
    json_t *labels;
    const char *severity = severity_of(x->labels_json, &labels);
    if (x->severity[0])
        severity = x->severity;
    row[schema_column(t, "ts")] = (struct value){.i = now_ms, .type = VAL_INT};
    set_text(&o->history, row, "alert_id", x->id);
    set_text(&o->history, row, "rule", x->rule);
    set_text(&o->history, row, "fingerprint", x->id);
    set_text(&o->history, row, "severity", severity);
    set_text(&o->history, row, "state", state);
    if (isfinite(x->value))
        row[schema_column(t, "value")] = (struct value){.d = x->value, .type = VAL_REAL};
    set_text(&o->history, row, "labels", x->labels_json);
    char summary[1200];
    snprintf(summary, sizeof summary, "%s%s%s", x->summary ? x->summary : x->rule,
             note ? " - " : "", note ? note : "");
    set_text(&o->history, row, "summary", summary);
    row[schema_column(t, "escalation_level")] =
        (struct value){.i = x->escalation_level, .type = VAL_INT};
    row[schema_column(t, "notified")] = (struct value){.i = x->notified, .type = VAL_INT};
    json_decref(labels);
    char **more = realloc(o->annotations, o->history.nrows * sizeof *more);
    if (more) {
        o->annotations = more;
        more[o->history.nrows - 1] = x->annotations_json ? strdup(x->annotations_json) : NULL;
    }
}

static void record(struct pending_out *o, const struct alert *x, const char *state, int64_t now_ms)
{
    record_note(o, x, state, now_ms, NULL);
}

/* A notification of x (firing or resolved), copied for after the lock; receiver NULL: routed. */
static void notify_to(struct pending_out *o, const struct alert *x, const char *status,
                      int64_t now_ms, const char *receiver)
{
    if (o->nnotes == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 8;
        struct note *more = realloc(o->notes, cap * sizeof *more);
        if (!more) {
            log_error("alerting: out of memory; a notification of %s is lost", x->id);
            return;
        }
        o->notes = more;
        o->cap = cap;
    }
    struct note *t = &o->notes[o->nnotes++];
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", x->id);
    snprintf(t->incident, sizeof t->incident, "%s", x->incident);
    snprintf(t->receiver, sizeof t->receiver, "%s", receiver ? receiver : "");
    t->labels = json_loads(x->labels_json, 0, NULL);
    if (x->severity[0]) /* raised by an escalation */
        json_object_set_new(t->labels, "severity", json_string(x->severity));
    t->annotations = json_loads(x->annotations_json ? x->annotations_json : "{}", 0, NULL);
    /* the pointers into t are set by note_bind() when it is posted: notes move as they grow */
    t->n = (struct notify_alert){NULL,
                                 status,
                                 t->labels,
                                 t->annotations,
                                 x->value,
                                 x->fired_ms,
                                 strcmp(status, "resolved") == 0 ? now_ms : 0,
                                 NULL,
                                 NULL};
}

/* Points the note's notification at the note's own copies. */
static const struct notify_alert *note_bind(struct note *t)
{
    t->n.alert_id = t->id;
    t->n.incident_id = t->incident[0] ? t->incident : NULL;
    t->n.receiver = t->receiver[0] ? t->receiver : NULL;
    return &t->n;
}

static void notify(struct pending_out *o, const struct alert *x, const char *status, int64_t now_ms)
{
    notify_to(o, x, status, now_ms, NULL);
}

/* x's change under its labels, and, when an escalation raised its severity, also under the
 * severity it had before: the groups notified before the escalation hold it that way. */
static void notify_both(struct pending_out *o, const struct alert *x, const char *status,
                        int64_t now_ms)
{
    notify(o, x, status, now_ms);
    if (x->severity[0]) {
        struct alert before = *x;
        before.severity[0] = '\0';
        notify(o, &before, status, now_ms);
    }
}

static void pending_out_init(struct pending_out *o)
{
    memset(o, 0, sizeof *o);
    batch_init(&o->history, schema_table("alert_history"));
    batch_init(&o->incidents, schema_table("incidents"));
}

/* A replay's transitions: each row to the trace, instead of the writer. */
static void pending_out_trace(struct alert_engine *a, struct pending_out *o)
{
    const struct table *t = o->history.table;
    int ts = schema_column(t, "ts"), id = schema_column(t, "alert_id"),
        rule = schema_column(t, "rule"), state = schema_column(t, "state"),
        labels = schema_column(t, "labels"), value = schema_column(t, "value"),
        summary = schema_column(t, "summary");
    for (size_t i = 0; i < o->history.nrows; i++) {
        const struct value *row = batch_row(&o->history, i);
        const char *annotations = o->annotations && o->annotations[i] ? o->annotations[i] : "{}";
        a->trace(a->trace_arg, &(struct alert_trace){
                                   row[ts].i, row[state].s, row[id].s, row[rule].s, row[labels].s,
                                   annotations, row[value].type == VAL_REAL ? row[value].d : NAN,
                                   row[summary].s, NULL, NULL, NULL});
    }
}

static void pending_out_flush(struct alert_engine *a, struct pending_out *o)
{
    struct err e;
    size_t nannotations = o->history.nrows; /* the trace resets nrows */
    if (a->trace) { /* its notifications go to the replay's notifier, which traces them */
        pending_out_trace(a, o);
        o->history.nrows = 0; /* replayed, not written */
        o->incidents.nrows = 0;
    }
    if (o->history.nrows && writer_submit(a->writer, &o->history, &e) != 0)
        log_error("alerting: writing %zu alert_history rows failed: %s", o->history.nrows, e.msg);
    if (o->incidents.nrows && writer_submit(a->writer, &o->incidents, &e) != 0)
        log_error("alerting: writing %zu incidents rows failed: %s", o->incidents.nrows, e.msg);
    for (size_t i = 0; i < o->nnotes; i++) {
        if (a->notifier)
            notifier_post(a->notifier, note_bind(&o->notes[i]));
        json_decref(o->notes[i].labels);
        json_decref(o->notes[i].annotations);
    }
    free(o->notes);
    for (size_t i = 0; o->annotations && i < nannotations; i++)
        free(o->annotations[i]);
    free(o->annotations);
    batch_release(&o->history);
    batch_release(&o->incidents);
    memset(o, 0, sizeof *o);
}

/* ---- applying one evaluation ------------------------------------------------------------- */

static int popcount_last(const uint64_t bits[2], int m)
{
    int n = 0;
    for (int i = 0; i < m; i++)
        n += (int)((bits[i / 64] >> (i % 64)) & 1);
    return n;
}

static void push_outcome(uint64_t bits[2], bool hit)
{
    bits[1] = bits[1] << 1 | bits[0] >> 63;
    bits[0] = bits[0] << 1 | (hit ? 1 : 0);
}

/* The labels of the alerts firing and not suppressed, the sources of inhibition: built once per
 * evaluation, when an alert of it fires or fires on. */
struct firing_set {
    json_t **labels;
    size_t n;
    bool built;
};

static void firing_set_build(struct alert_engine *a, struct firing_set *f)
{
    f->built = true;
    f->labels = calloc(a->nalerts + 1, sizeof *f->labels);
    for (size_t b = 0; f->labels && b < ALERT_BUCKETS; b++)
        for (const struct alert *x = a->buckets[b]; x; x = x->next)
            if ((x->state == ST_FIRING || x->state == ST_ACKED) && !x->suppressed &&
                f->n < a->nalerts)
                f->labels[f->n++] = json_loads(x->labels_json, 0, NULL);
}

static void firing_set_release(struct firing_set *f)
{
    for (size_t i = 0; i < f->n; i++)
        json_decref(f->labels[i]);
    free(f->labels);
}

/* Notes a state change of alert id; returns its changes within the window (0: not tracked). */
static size_t flap_note(struct alert_engine *a, const char *id, int64_t now_ms)
{
    if (a->cfg.alert_flapping_transitions <= 0)
        return 0;
    size_t b = bucket_of(id);
    struct flap *f = a->flaps[b];
    while (f && strcmp(f->id, id) != 0)
        f = f->next;
    if (!f) {
        if (!(f = calloc(1, sizeof *f)))
            return 0;
        memcpy(f->id, id, sizeof f->id);
        f->next = a->flaps[b];
        a->flaps[b] = f;
    }
    size_t keep = 0;
    for (size_t i = 0; i < f->n; i++)
        if (f->times[i] > now_ms - a->cfg.alert_flapping_window_ms)
            f->times[keep++] = f->times[i];
    f->n = keep;
    if (f->n == FLAP_TIMES_MAX)
        memmove(f->times, f->times + 1, --f->n * sizeof *f->times);
    f->times[f->n++] = now_ms;
    if ((int64_t)f->n <= a->cfg.alert_flapping_transitions)
        f->announced = false; /* calm again: a new spell is announced again */
    return f->n;
}

/* The changes of f within the window ending at now_ms. */
static size_t flap_count(const struct alert_engine *a, const struct flap *f, int64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        n += f->times[i] > now_ms - a->cfg.alert_flapping_window_ms;
    return n;
}

static struct flap *flap_of(struct alert_engine *a, const char *id)
{
    struct flap *f = a->flaps[bucket_of(id)];
    while (f && strcmp(f->id, id) != 0)
        f = f->next;
    return f;
}

/* Drops the entries with no change left in the window (once a minute). */
static void flaps_sweep(struct alert_engine *a, int64_t now_ms)
{
    if (now_ms - a->flaps_swept_ms < 60000)
        return;
    a->flaps_swept_ms = now_ms;
    for (size_t b = 0; b < ALERT_BUCKETS; b++) {
        struct flap **p = &a->flaps[b];
        while (*p) {
            struct flap *f = *p;
            if (f->n && f->times[f->n - 1] > now_ms - a->cfg.alert_flapping_window_ms) {
                p = &f->next;
                continue;
            }
            *p = f->next;
            free(f);
        }
    }
}

/* Fires x or keeps it firing: notified unless suppressed, and a row whenever that changes. */
static void fire_on(struct alert_engine *a, struct alert *x, int64_t now_ms, bool first,
                    struct firing_set *f, struct pending_out *o)
{
    if (!f->built)
        firing_set_build(a, f);
    char why[512] = "";
    const char *note = NULL;
    json_t *labels = json_loads(x->labels_json, 0, NULL);
    bool suppressed =
        suppressor_check(a->suppressor, labels, now_ms, f->labels, f->n, why, sizeof why);
    json_decref(labels);
    if (first)
        flap_note(a, x->id, now_ms);
    struct flap *fl = flap_of(a, x->id);
    size_t changes = fl ? flap_count(a, fl, now_ms) : 0;
    if (!suppressed && fl && !x->flap_announced &&
        (int64_t)changes > a->cfg.alert_flapping_transitions) {
        snprintf(why, sizeof why, "flapping: %zu state changes within %lld s", changes,
                 (long long)(a->cfg.alert_flapping_window_ms / 1000));
        if (first && !fl->announced) {
            fl->announced = x->flap_announced = true;
            note = why; /* notified this once, with the reason */
            a->flapping_total++;
        } else {
            suppressed = true; /* held until its changes in the window fall to the limit */
        }
    }
    if (first && a->incidents) {
        json_t *l = json_loads(x->labels_json, 0, NULL);
        const char *incident = incidents_join(a->incidents, x->id, x->rule, l, now_ms);
        snprintf(x->incident, sizeof x->incident, "%s", incident ? incident : "");
        json_decref(l);
    }
    if (!first && suppressed == x->suppressed)
        return;
    x->suppressed = suppressed;
    a->transitions_total++;
    if (suppressed) {
        if (x->notified) /* withdrawn: no repeats, and no resolution while it is suppressed */
            notify_both(o, x, "muted", now_ms);
        x->notified = false;
        record_note(o, x, "suppressed", now_ms, why);
        return;
    }
    x->notified = true;
    if (!x->notified_ms)
        x->notified_ms = now_ms;
    record_note(o, x, "firing", now_ms, note);
    notify(o, x, "firing", now_ms);
}

/* The next escalation step of a firing alert nobody acknowledged, when it is due: a row
 * (state escalated, its level) and a notification to the step's receiver. */
static void escalate(struct alert_engine *a, struct alert *x, int64_t now_ms, struct pending_out *o)
{
    const struct escalation_step *st;
    int level;
    json_t *labels = json_loads(x->labels_json, 0, NULL);
    bool due = escalations_due(a->escalations, labels, x->notified_ms, now_ms, x->escalation_level,
                               &st, &level);
    json_decref(labels);
    if (!due)
        return;
    x->escalation_level = level;
    if (st->severity[0])
        snprintf(x->severity, sizeof x->severity, "%s", st->severity);
    char note[200];
    snprintf(note, sizeof note, "escalated to level %d%s%s%s%s", level,
             st->receiver[0] ? ", notifying " : "", st->receiver,
             st->severity[0] ? ", severity " : "", st->severity);
    record_note(o, x, "escalated", now_ms, note);
    notify_to(o, x, "firing", now_ms, st->receiver[0] ? st->receiver : NULL);
    a->transitions_total++;
}

/* One alert's step given this evaluation's outcome. Returns false when it is gone. */
static bool step(struct alert_engine *a, struct alert *x, const struct alert_rule *r, bool present,
                 double value, int64_t now_ms, struct firing_set *f, struct pending_out *o)
{
    bool active = x->state != ST_INACTIVE;
    bool cond =
        present && (r->is_sql && !r->has_threshold
                        ? true
                        : eval_compare(r->op, value, active ? r->resolve_threshold : r->threshold));
    if (present)
        x->value = value;
    push_outcome(x->outcomes, cond);
    bool hit = r->m_of ? popcount_last(x->outcomes, r->m_of) >= r->n_of : cond;
    if (hit) {
        x->last_hit_ms = now_ms;
        if (x->state == ST_INACTIVE) {
            x->state = ST_PENDING;
            x->active_since_ms = now_ms;
            annotate(x, r);
            if (r->for_ms > 0) {
                record(o, x, "pending", now_ms);
                a->transitions_total++;
            }
        }
        if (x->state == ST_PENDING && now_ms - x->active_since_ms >= r->for_ms) {
            x->state = ST_FIRING;
            x->fired_ms = now_ms;
            annotate(x, r);
            fire_on(a, x, now_ms, true, f, o);
        } else if (x->state == ST_FIRING || x->state == ST_ACKED) {
            fire_on(a, x, now_ms, false, f, o); /* a silence may have begun or ended */
        }
        if (x->state == ST_FIRING && !x->suppressed && x->notified_ms)
            escalate(a, x, now_ms, o);
        return true;
    }
    if (x->state == ST_FIRING || x->state == ST_ACKED) {
        if (r->keep_firing_for_ms && now_ms - x->last_hit_ms < r->keep_firing_for_ms)
            return true;
        annotate(x, r);
        record(o, x, "resolved", now_ms);
        if (x->notified)
            notify_both(o, x, "resolved", now_ms);
        a->transitions_total++;
        flap_note(a, x->id, now_ms);
        incidents_resolve(a->incidents, x->id, now_ms);
        return false;
    }
    if (x->state == ST_PENDING) { /* never fired: it goes, its row says so */
        x->state = ST_INACTIVE;
        if (r->for_ms > 0) {
            record(o, x, "resolved", now_ms);
            a->transitions_total++;
        }
    }
    /* inactive: kept while its recent outcomes can still add up to n_of_m */
    return r->m_of && popcount_last(x->outcomes, r->m_of) > 0;
}

static struct alert *new_alert(struct alert_engine *a, const struct alert_rule *r, const char *id,
                               char *labels)
{
    struct alert *x = calloc(1, sizeof *x);
    if (!x) {
        free(labels);
        return NULL;
    }
    memcpy(x->id, id, sizeof x->id);
    snprintf(x->group, sizeof x->group, "%s", r->group);
    snprintf(x->rule, sizeof x->rule, "%s", r->name);
    x->labels_json = labels;
    x->value = NAN;
    size_t b = bucket_of(id);
    x->next = a->buckets[b];
    a->buckets[b] = x;
    a->nalerts++;
    return x;
}

/* Applies one evaluation of rule r (under the lock). */
static void apply(struct alert_engine *a, const struct alert_rule *r, const struct eval_result *res,
                  int64_t now_ms, struct pending_out *o)
{
    struct firing_set f = {0};
    for (size_t i = 0; i < res->n; i++) {
        const struct eval_sample *s = &res->samples[i];
        if (!s->has_value && !(r->is_sql && !r->has_threshold))
            continue;
        char *labels = full_labels(r, s->labels_json);
        if (!labels)
            continue;
        char id[17];
        alert_id_of(r->group, r->name, labels, id);
        struct alert *x = find_alert(a, id);
        if (x)
            free(labels);
        else if (!(x = new_alert(a, r, id, labels)))
            continue;
        if (x->seen)
            continue; /* the same label set twice in one answer: the first counts */
        x->seen = true;
        if (!step(a, x, r, true, s->value, now_ms, &f, o))
            remove_alert(a, x);
    }
    for (size_t b = 0; b < ALERT_BUCKETS; b++) {
        struct alert **p = &a->buckets[b];
        while (*p) {
            struct alert *x = *p;
            bool mine = strcmp(x->rule, r->name) == 0 && strcmp(x->group, r->group) == 0;
            if (mine && !x->seen && !step(a, x, r, false, NAN, now_ms, &f, o)) {
                *p = x->next;
                a->nalerts--;
                free_alert(x);
                continue;
            }
            if (mine)
                x->seen = false;
            p = &x->next;
        }
    }
    firing_set_release(&f);
}

/* ---- the thread -------------------------------------------------------------------------- */

static void evaluate(struct alert_engine *a, size_t i, int64_t now_ms)
{
    const struct alert_rule *r = &a->rules.rules[i];
    struct eval_result res = {0};
    struct err e = {0};
    int64_t t0 = time_now_ms();
    int rc = eval_rule(a->store, &a->cfg, r, now_ms, &res, &e);
    struct pending_out o;
    pending_out_init(&o);
    pthread_mutex_lock(&a->lock);
    struct rule_state *st = &a->rstate[i];
    st->evaluations++;
    a->evaluations_total++;
    st->last_eval_ms = now_ms;
    st->last_duration_ms = (double)(time_now_ms() - t0);
    if (rc) {
        st->failures++;
        a->eval_failures_total++;
        if (strcmp(st->last_error, e.msg) != 0)
            log_error("alerting: rule %s (%s:%d) failed: %s", r->name, r->file, r->line, e.msg);
        snprintf(st->last_error, sizeof st->last_error, "%s", e.msg);
    } else {
        st->last_error[0] = '\0';
        apply(a, r, &res, now_ms, &o);
        incidents_take_changed(a->incidents, &o.incidents, now_ms);
    }
    pthread_mutex_unlock(&a->lock);
    pending_out_flush(a, &o);
    eval_result_release(&res);
}

/* Runs what is due; returns when the next thing will be. Called with the lock held. */
static int64_t run_due(struct alert_engine *a)
{
    int64_t now = time_now_ms(), next = now + 60000;
    flaps_sweep(a, now);
    a->any_committed = false;
    for (size_t i = 0; i < a->rules.n && !a->stopping; i++) {
        const struct alert_rule *r = &a->rules.rules[i];
        struct rule_state *st = &a->rstate[i];
        bool committed = st->committed, due = now >= st->next_due_ms;
        if (committed && !due && now - st->last_eval_ms < COMMIT_EVAL_GAP_MS) {
            a->any_committed = true; /* not yet: its mark stays for a later pass */
            if (st->last_eval_ms + COMMIT_EVAL_GAP_MS < next)
                next = st->last_eval_ms + COMMIT_EVAL_GAP_MS;
            committed = false;
        }
        if (due || committed) {
            if (due)
                st->next_due_ms = now + r->interval_ms;
            st->committed = false;
            pthread_mutex_unlock(&a->lock);
            evaluate(a, i, time_now_ms());
            pthread_mutex_lock(&a->lock);
        }
        if (st->next_due_ms < next)
            next = st->next_due_ms;
    }
    return next;
}

static int cmp_metric_rule(const void *x, const void *y)
{
    const struct metric_rule *p = x, *q = y;
    int c = strcmp(p->metric, q->metric);
    return c ? c : (p->rule > q->rule) - (p->rule < q->rule);
}

/* Builds by_metric for the rules now loaded (under the lock). */
static void index_rules(struct alert_engine *a)
{
    free(a->by_metric);
    a->nby_metric = 0;
    a->by_metric = calloc(a->rules.n + 1, sizeof *a->by_metric);
    for (size_t i = 0; a->by_metric && i < a->rules.n; i++) {
        const struct alert_rule *r = &a->rules.rules[i];
        const struct table *t = r->is_sql ? NULL : schema_table(r->table);
        if (t && t->kind == TABLE_SERIES)
            a->by_metric[a->nby_metric++] = (struct metric_rule){r->metric, i};
    }
    if (a->by_metric)
        qsort(a->by_metric, a->nby_metric, sizeof *a->by_metric, cmp_metric_rule);
}

/* Compares a NUL-ended name with len bytes of text, as strcmp would. */
static int cmp_name(const char *name, const char *text, size_t len)
{
    int c = strncmp(name, text, len);
    return c ? c : name[len] != '\0';
}

/* Marks the rules on metric (a sample of it was committed). */
static void mark_metric(struct alert_engine *a, const char *metric, size_t len)
{
    size_t lo = 0, hi = a->nby_metric;
    while (lo < hi) { /* the first entry not below metric */
        size_t mid = (lo + hi) / 2;
        if (cmp_name(a->by_metric[mid].metric, metric, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < a->nby_metric; lo++) {
        if (cmp_name(a->by_metric[lo].metric, metric, len) != 0)
            break;
        a->rstate[a->by_metric[lo].rule].committed = true;
        a->any_committed = true;
    }
}

/* Marks the rules that read what batch b wrote. */
static void mark_batch(struct alert_engine *a, const struct batch *b)
{
    if (b->table->kind == TABLE_SERIES) {
        int col = schema_column(b->table, "metric");
        const char *prev = NULL;
        size_t prev_len = 0;
        for (size_t row = 0; col >= 0 && row < b->nrows; row++) {
            const struct value *v = &b->values[row * b->table->ncolumns + (size_t)col];
            if (v->type != VAL_TEXT ||
                (prev && v->len == prev_len && memcmp(v->s, prev, v->len) == 0))
                continue;
            prev = v->s;
            prev_len = v->len;
            mark_metric(a, v->s, v->len);
        }
        return;
    }
    for (size_t i = 0; i < a->rules.n; i++) {
        const struct alert_rule *r = &a->rules.rules[i];
        if (!r->is_sql && strcmp(r->table, b->table->name) == 0) {
            a->rstate[i].committed = true;
            a->any_committed = true;
        }
    }
}

/* Takes a reload's rules and receivers (on the thread, under the lock): the alerts of a rule
 * that is gone resolve; the others keep their state, and every rule is due at once. */
static void take_reload(struct alert_engine *a, struct pending_out *o, struct alert_rules *old,
                        struct rule_state **old_state, struct notifier **old_notifier)
{
    int64_t now = time_now_ms();
    for (size_t b = 0; b < ALERT_BUCKETS; b++) {
        struct alert **p = &a->buckets[b];
        while (*p) {
            struct alert *x = *p;
            if (rule_named(&a->next_rules, x->group, x->rule)) {
                p = &x->next;
                continue;
            }
            if (x->state != ST_INACTIVE) {
                record(o, x, "resolved", now);
                if (x->notified && x->state != ST_PENDING)
                    notify(o, x, "resolved", now);
            }
            *p = x->next;
            a->nalerts--;
            free_alert(x);
        }
    }
    *old = a->rules;
    *old_state = a->rstate;
    *old_notifier = a->notifier;
    a->rules = a->next_rules;
    index_rules(a);
    a->rstate = a->next_rstate;
    a->notifier = a->next_notifier;
    suppressor_free(&a->suppressor); /* its silences were copied into the next one */
    a->suppressor = a->next_suppressor;
    escalations_free(&a->escalations);
    a->escalations = a->next_escalations;
    a->next_escalations = NULL;
    memset(&a->next_rules, 0, sizeof a->next_rules);
    a->next_rstate = NULL;
    a->next_notifier = NULL;
    a->next_suppressor = NULL;
    a->swap_pending = false;
}

static void restore_notified(struct alert_engine *a, struct pending_out *o,
                             const int64_t *notified_ms);
static void note_as_sent(struct pending_out *o, int64_t *notified_ms, const struct alert *x,
                         int64_t at);

/* After a reload: the alerts notified and still firing, for the new notifier (under the lock;
 * *notified_ms is allocated, o initialised by the caller). */
static void notified_firing(struct alert_engine *a, struct pending_out *o, int64_t **notified_ms)
{
    *notified_ms = calloc(2 * a->nalerts + 1, sizeof **notified_ms);
    for (size_t b = 0; *notified_ms && b < ALERT_BUCKETS; b++)
        for (const struct alert *x = a->buckets[b]; x; x = x->next)
            if (x->notified && (x->state == ST_FIRING || x->state == ST_ACKED))
                note_as_sent(o, *notified_ms, x, x->notified_ms ? x->notified_ms : x->fired_ms);
}

static void *engine_main(void *arg)
{
    struct alert_engine *a = arg;
    pthread_mutex_lock(&a->lock);
    while (!a->stopping) {
        if (a->swap_pending) {
            struct pending_out o;
            struct alert_rules old;
            struct rule_state *old_state;
            struct notifier *old_notifier;
            struct pending_out firing;
            int64_t *notified_ms;
            pending_out_init(&o);
            pending_out_init(&firing);
            take_reload(a, &o, &old, &old_state, &old_notifier);
            notified_firing(a, &firing, &notified_ms);
            pthread_mutex_unlock(&a->lock);
            pending_out_flush(a, &o);
            notifier_free(&old_notifier, NOTIFY_DRAIN_MS); /* its last sends are logged now */
            restore_notified(a, &firing, notified_ms);     /* the new one repeats them */
            free(notified_ms);
            alert_rules_free(&old);
            free(old_state);
            pthread_mutex_lock(&a->lock);
        }
        int64_t next = run_due(a);
        if (a->stopping || a->swap_pending || (a->any_committed && time_now_ms() >= next))
            continue;
        int64_t wait_ms = next - time_now_ms();
        if (wait_ms > 0 && !a->any_committed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&a->wake, &a->lock, &ts);
        } else if (a->any_committed && wait_ms > 0) {
            /* committed rows wait for the gap; sleep at most until it is over */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long gap = wait_ms < COMMIT_EVAL_GAP_MS ? (long)wait_ms : COMMIT_EVAL_GAP_MS;
            ts.tv_nsec += gap * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&a->wake, &a->lock, &ts);
        }
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

void alert_engine_on_commit(void *arg, const struct batch *const *batches, size_t n)
{
    struct alert_engine *a = arg;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; n == 0 && i < a->rules.n; i++) /* another process wrote: anything */
        if (!a->rules.rules[i].is_sql)
            a->any_committed = a->rstate[i].committed = true;
    for (size_t i = 0; i < n; i++)
        mark_batch(a, batches[i]);
    if (a->any_committed)
        pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->lock);
}

/* ---- loading, restoring, reloading ------------------------------------------------------- */

static int load_rules(const struct config *cfg, struct alert_rules *rules,
                      struct rule_state **rstate, struct err *e)
{
    int rc = alert_rules_load_config(rules, cfg, e);
    if (rc)
        return rc;
    *rstate = calloc(rules->n ? rules->n : 1, sizeof **rstate);
    if (!*rstate) {
        alert_rules_free(rules);
        return err_set(e, E_NOMEM, "out of memory");
    }
    return 0;
}

static const struct alert_rule *rule_named(const struct alert_rules *rules, const char *group,
                                           const char *name)
{
    for (size_t i = 0; i < rules->n; i++)
        if (strcmp(rules->rules[i].name, name) == 0 &&
            (!group || strcmp(rules->rules[i].group, group) == 0))
            return &rules->rules[i];
    return NULL;
}

/* What the engine reads of its own state at start (res is released by the caller). */
static int read_table(struct alert_engine *a, const char *sql, struct store_result *res,
                      struct err *e)
{
    struct store_query q = {sql, NULL, 0, 0, SILENCES_MAX * 10, false};
    struct store_reader *rd = store_reader_get(a->store);
    int rc = store_reader_query(rd, &q, res, e);
    store_reader_put(a->store, rd);
    return rc;
}

/* The rule of an alert in alert_history: its id is the hash of group, rule and labels, so of
 * the groups with a rule of that name the one whose hash matches. */
static const struct alert_rule *rule_of_id(struct alert_engine *a, const char *name,
                                           const char *labels, const char *id)
{
    for (size_t i = 0; i < a->rules.n; i++) {
        const struct alert_rule *r = &a->rules.rules[i];
        char computed[17];
        if (strcmp(r->name, name) != 0)
            continue;
        alert_id_of(r->group, r->name, labels, computed);
        if (strcmp(computed, id) == 0)
            return r;
    }
    return NULL;
}

/* x as the notifier was given it at at_ms, for notifier_restore (and, when an escalation raised
 * its severity, as it was before, in the groups of that severity): a note of o, its time in
 * notified_ms (as long as o's notes). */
static void note_as_sent(struct pending_out *o, int64_t *notified_ms, const struct alert *x,
                         int64_t at)
{
    size_t first = o->nnotes;
    notify_both(o, x, "firing", at);
    for (size_t i = first; i < o->nnotes; i++)
        notified_ms[i] = at;
}

/* Hands the notifier the notified alerts restore() took up (o's notes, notified_ms[i] when
 * each was), with the last send of each group that notification_log shows since then, so that
 * their groups repeat on the last run's schedule and their resolutions go to them; frees o. */
static void restore_notified(struct alert_engine *a, struct pending_out *o,
                             const int64_t *notified_ms)
{
    int64_t since = INT64_MAX;
    for (size_t i = 0; i < o->nnotes; i++)
        if (notified_ms[i] < since)
            since = notified_ms[i];
    struct store_result res;
    struct err e;
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT receiver, group_key, max(ts) FROM notification_log WHERE ts >= %lld AND"
             " status IN ('ok', 'failed', 'retrying') GROUP BY receiver, group_key",
             (long long)since);
    int rc = o->nnotes && a->notifier ? read_table(a, sql, &res, &e) : -1;
    if (rc == 0) {
        struct notify_sent *sent = calloc(res.nrows + 1, sizeof *sent);
        size_t nsent = 0;
        for (size_t i = 0; sent && i < res.nrows; i++) {
            const struct value *row = res.values + i * res.ncols;
            if (row[0].type == VAL_TEXT && row[1].type == VAL_TEXT && row[2].type == VAL_INT)
                sent[nsent++] = (struct notify_sent){row[0].s, row[1].s, row[2].i};
        }
        struct notify_alert *alerts = calloc(o->nnotes + 1, sizeof *alerts);
        for (size_t i = 0; alerts && i < o->nnotes; i++)
            alerts[i] = *note_bind(&o->notes[i]);
        if (alerts)
            notifier_restore(a->notifier, alerts, notified_ms, o->nnotes, sent, nsent);
        free(alerts);
        free(sent);
        store_result_release(&res);
    } else if (o->nnotes && a->notifier) {
        log_error("alerting: reading notification_log failed (%s): the %zu alerts taken up are "
                  "not known to the notifier, so their repeats stop until they change",
                  e.msg, o->nnotes);
        store_result_release(&res);
    }
    for (size_t i = 0; i < o->nnotes; i++) {
        json_decref(o->notes[i].labels);
        json_decref(o->notes[i].annotations);
    }
    o->nnotes = 0;
    pending_out_flush(a, o); /* nothing left to write or post: frees */
}

/* The alerts alert_history shows active, taken up again. Rows no loaded rule made (ingested
 * from elsewhere, or of a rule since removed) are left as they are: opsdb does not own them. */
static void restore(struct alert_engine *a)
{
    struct store_result res;
    struct err e;
    /* the times of the current episode: what follows the alert's last resolved row */
    int rc = read_table(
        a,
        "SELECT alert_id, rule, state, value, labels, summary, notified, escalation_level,"
        " (SELECT min(x.ts) FROM alert_history x WHERE x.alert_id = c.alert_id AND x.ts > c.lr)"
        "  AS since,"
        " (SELECT min(x.ts) FROM alert_history x WHERE x.alert_id = c.alert_id AND x.ts > c.lr"
        "  AND x.state IN ('firing', 'suppressed')) AS fired,"
        " EXISTS (SELECT 1 FROM alert_history k WHERE k.alert_id = c.alert_id AND k.ts > c.lr"
        "  AND k.state = 'acknowledged') AS acked, severity,"
        " (SELECT min(x.ts) FROM alert_history x WHERE x.alert_id = c.alert_id AND x.ts > c.lr"
        "  AND x.state = 'firing' AND x.notified = 1) AS first_notified_at,"
        " (SELECT max(x.ts) FROM alert_history x WHERE x.alert_id = c.alert_id AND x.ts > c.lr"
        "  AND x.state = 'firing' AND x.notified = 1) AS notified_at"
        " FROM (SELECT v.*, coalesce((SELECT max(r.ts) FROM alert_history r"
        "  WHERE r.alert_id = v.alert_id AND r.state = 'resolved'), -1) AS lr"
        "  FROM active_alerts v) c",
        &res, &e);
    if (rc) {
        log_error("alerting: reading the active alerts failed: %s", e.msg);
        store_result_release(&res);
        return;
    }
    size_t restored = 0;
    struct pending_out o; /* the notified ones, for the notifier */
    pending_out_init(&o);
    int64_t *notified_ms = calloc(2 * res.nrows + 1, sizeof *notified_ms);
    for (size_t i = 0; i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        if (row[0].type != VAL_TEXT || row[1].type != VAL_TEXT || row[4].type != VAL_TEXT ||
            row[0].len != 16 || find_alert(a, row[0].s))
            continue;
        const struct alert_rule *r = rule_of_id(a, row[1].s, row[4].s, row[0].s);
        if (!r)
            continue;
        struct alert *x = new_alert(a, r, row[0].s, strndup(row[4].s, row[4].len));
        if (!x || !x->labels_json)
            continue;
        const char *state = row[2].type == VAL_TEXT ? row[2].s : "";
        x->state = strcmp(state, "pending") == 0        ? ST_PENDING
                   : strcmp(state, "acknowledged") == 0 ? ST_ACKED
                                                        : ST_FIRING; /* escalated, suppressed */
        x->suppressed = strcmp(state, "suppressed") == 0;
        if (x->state == ST_FIRING && row[10].type == VAL_INT && row[10].i)
            x->state = ST_ACKED; /* acknowledged in this episode, then suppressed or escalated */
        x->value = row[3].type == VAL_REAL  ? row[3].d
                   : row[3].type == VAL_INT ? (double)row[3].i
                                            : NAN;
        x->summary = row[5].type == VAL_TEXT ? strndup(row[5].s, row[5].len) : NULL;
        x->notified = row[6].type == VAL_INT && row[6].i;
        x->escalation_level = row[7].type == VAL_INT ? (int)row[7].i : 0;
        x->active_since_ms = row[8].type == VAL_INT ? row[8].i : time_now_ms();
        x->fired_ms = row[9].type == VAL_INT ? row[9].i : x->active_since_ms;
        x->notified_ms = x->notified && row[12].type == VAL_INT ? row[12].i : 0;
        x->last_hit_ms = time_now_ms();
        json_t *labels;
        const char *own = severity_of(x->labels_json, &labels);
        if (row[11].type == VAL_TEXT && strcmp(row[11].s, own) != 0) /* raised by escalation */
            snprintf(x->severity, sizeof x->severity, "%s", row[11].s);
        json_decref(labels);
        annotate(x, r);
        restored++;
        if (x->notified && x->state != ST_PENDING && notified_ms)
            note_as_sent(&o, notified_ms, x, row[13].type == VAL_INT ? row[13].i : x->fired_ms);
    }
    if (restored)
        log_info("alerting: %zu active alerts taken up from alert_history", restored);
    store_result_release(&res);
    restore_notified(a, &o, notified_ms);
    free(notified_ms);
}

/* What a server and a replay both need: the rules, suppression, escalation, incidents. */
static int engine_load(struct alert_engine *a, struct store *s, const struct config *cfg,
                       struct err *e)
{
    a->store = s;
    a->cfg = *cfg;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->wake, NULL);
    int rc = load_rules(cfg, &a->rules, &a->rstate, e);
    if (rc == 0)
        rc = suppressor_new(&a->suppressor, cfg->config_path, e);
    if (rc == 0)
        rc = escalations_new(&a->escalations, cfg->config_path, e);
    if (rc == 0 && !(a->incidents = incidents_new(cfg->alert_correlation_window_ms)))
        rc = err_set(e, E_NOMEM, "out of memory");
    return rc;
}

int alert_engine_new(struct alert_engine **out, struct store *s, struct writer *w,
                     const struct config *cfg, struct err *e)
{
    struct alert_engine *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(e, E_NOMEM, "out of memory");
    a->writer = w;
    int rc = engine_load(a, s, cfg, e);
    if (rc == 0)
        rc = notifier_new(&a->notifier, cfg->config_path, cfg->alert_ca_file, w, e);
    if (rc == 0)
        rc = escalations_check_receivers(a->escalations, notifier_has_receiver, a->notifier, e);
    if (rc) {
        alert_engine_free(&a);
        return rc;
    }
    restore(a);
    restore_incidents(a);
    load_silences_since(a, time_now_ms() - 7 * 86400000LL); /* the week's, for the listing */
    index_rules(a);
    if (a->rules.n)
        log_info("alerting: %zu rules loaded", a->rules.n);
    *out = a;
    return 0;
}

int alert_engine_start(struct alert_engine *a, struct err *e)
{
    if (pthread_create(&a->thread, NULL, engine_main, a) != 0)
        return err_set(e, E_NOMEM, "cannot start the alert thread");
    a->started = true;
    return 0;
}

void alert_engine_free(struct alert_engine **ap)
{
    struct alert_engine *a = *ap;
    if (!a)
        return;
    if (a->started) {
        pthread_mutex_lock(&a->lock);
        a->stopping = true;
        pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->thread, NULL);
    }
    notifier_free(&a->notifier, NOTIFY_DRAIN_MS);
    notifier_free(&a->next_notifier, 0);
    suppressor_free(&a->suppressor);
    suppressor_free(&a->next_suppressor);
    escalations_free(&a->escalations);
    escalations_free(&a->next_escalations);
    incidents_free(&a->incidents);
    alert_rules_free(&a->next_rules);
    free(a->next_rstate);
    for (size_t b = 0; b < ALERT_BUCKETS; b++)
        while (a->buckets[b]) {
            struct alert *x = a->buckets[b];
            a->buckets[b] = x->next;
            free_alert(x);
        }
    for (size_t b = 0; b < ALERT_BUCKETS; b++)
        while (a->flaps[b]) {
            struct flap *f = a->flaps[b];
            a->flaps[b] = f->next;
            free(f);
        }
    alert_rules_free(&a->rules);
    free(a->rstate);
    free(a->by_metric);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->wake);
    free(a);
    *ap = NULL;
}

int alert_engine_reload(struct alert_engine *a, struct err *e)
{
    struct alert_rules rules = {0};
    struct rule_state *rstate = NULL;
    struct notifier *notifier = NULL;
    struct suppressor *suppressor = NULL;
    struct escalations *escalations = NULL;
    int rc = load_rules(&a->cfg, &rules, &rstate, e);
    if (rc == 0 && (rc = suppressor_new(&suppressor, a->cfg.config_path, e)) == 0 &&
        (rc = escalations_new(&escalations, a->cfg.config_path, e)) == 0 &&
        (rc = notifier_new(&notifier, a->cfg.config_path, a->cfg.alert_ca_file, a->writer, e)) == 0)
        rc = escalations_check_receivers(escalations, notifier_has_receiver, notifier, e);
    if (rc) {
        notifier_free(&notifier, 0);
        alert_rules_free(&rules);
        free(rstate);
        suppressor_free(&suppressor);
        escalations_free(&escalations);
        return rc;
    }
    pthread_mutex_lock(&a->lock);
    if (a->swap_pending) { /* a reload the thread has not taken yet: this one replaces it */
        alert_rules_free(&a->next_rules);
        free(a->next_rstate);
        notifier_free(&a->next_notifier, 0);
        suppressor_free(&a->next_suppressor);
        escalations_free(&a->next_escalations);
    }
    /* the silences made over the API live on in the new suppressor */
    for (size_t i = 0; a->suppressor && i < SILENCES_MAX; i++) {
        const struct alert_silence *si = suppressor_silence_at(a->suppressor, i);
        struct err ignored;
        if (!si)
            break;
        suppressor_put_silence(suppressor, si, &ignored);
    }
    a->next_rules = rules;
    a->next_rstate = rstate;
    a->next_notifier = notifier;
    a->next_suppressor = suppressor;
    a->next_escalations = escalations;
    a->swap_pending = true;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->lock);
    log_info("alerting: reloaded, %zu rules", rules.n);
    return 0;
}

/* ---- what the API shows ------------------------------------------------------------------ */

static void json_text(struct buf *out, const char *s)
{
    struct value v = {.s = s ? s : "", .len = (uint32_t)strlen(s ? s : ""), .type = VAL_TEXT};
    query_json_value(&v, out);
}

static void json_number(struct buf *out, double d)
{
    struct value v = {.d = d, .type = VAL_REAL};
    query_json_value(&v, out); /* null when not finite */
}

static void rule_json(struct alert_engine *a, size_t i, struct buf *out)
{
    const struct alert_rule *r = &a->rules.rules[i];
    const struct rule_state *st = &a->rstate[i];
    size_t pending = 0, firing = 0;
    for (size_t b = 0; b < ALERT_BUCKETS; b++)
        for (const struct alert *x = a->buckets[b]; x; x = x->next)
            if (strcmp(x->rule, r->name) == 0 && strcmp(x->group, r->group) == 0) {
                pending += x->state == ST_PENDING;
                firing += x->state == ST_FIRING || x->state == ST_ACKED;
            }
    buf_append(out, "{\"name\":", 8);
    json_text(out, r->name);
    buf_printf(out, ",\"kind\":\"%s\",\"file\":", r->is_sql ? "sql" : "threshold");
    json_text(out, r->file);
    buf_printf(out, ",\"line\":%d", r->line);
    if (r->is_sql) {
        buf_append(out, ",\"sql\":", 7);
        json_text(out, r->sql);
    } else {
        buf_append(out, ",\"table\":", 9);
        json_text(out, r->table);
        buf_append(out, ",\"metric\":", 10);
        json_text(out, r->metric);
        buf_append(out, ",\"filter\":", 10);
        json_text(out, r->filter);
        buf_printf(out, ",\"aggregation\":\"%s\",\"by\":[", alert_agg_name(r->agg));
        for (size_t k = 0; k < r->nby; k++) {
            buf_append(out, k ? "," : "", k ? 1 : 0);
            json_text(out, r->by[k]);
        }
        buf_putc(out, ']');
    }
    char n_of_m[32] = "null";
    if (r->m_of)
        snprintf(n_of_m, sizeof n_of_m, "\"%d/%d\"", r->n_of, r->m_of);
    buf_printf(out, ",\"op\":\"%s\",\"threshold\":", alert_op_name(r->op));
    if (r->has_threshold)
        json_number(out, r->threshold);
    else
        buf_append(out, "null", 4);
    buf_append(out, ",\"resolve_threshold\":", 21);
    if (r->has_threshold)
        json_number(out, r->resolve_threshold);
    else
        buf_append(out, "null", 4);
    buf_printf(out,
               ",\"window_s\":%g,\"for_s\":%g,\"keep_firing_for_s\":%g,\"n_of_m\":%s,"
               "\"labels\":%s,\"annotations\":%s,\"state\":\"%s\",\"pending\":%zu,"
               "\"firing\":%zu,\"evaluations\":%llu,\"failures\":%llu,\"last_evaluation\":%lld,"
               "\"last_duration_ms\":%g,\"last_error\":",
               (double)r->window_ms / 1000, (double)r->for_ms / 1000,
               (double)r->keep_firing_for_ms / 1000, n_of_m, r->labels_json, r->annotations_json,
               firing    ? "firing"
               : pending ? "pending"
                         : "inactive",
               pending, firing, (unsigned long long)st->evaluations,
               (unsigned long long)st->failures, (long long)st->last_eval_ms, st->last_duration_ms);
    if (st->last_error[0])
        json_text(out, st->last_error);
    else
        buf_append(out, "null", 4);
    buf_putc(out, '}');
}

void alert_engine_rules_json(struct alert_engine *a, struct buf *out)
{
    pthread_mutex_lock(&a->lock);
    buf_append(out, "{\"groups\":[", 11);
    for (size_t i = 0; i < a->rules.n; i++) {
        const struct alert_rule *r = &a->rules.rules[i];
        bool first_of_group = i == 0 || strcmp(a->rules.rules[i - 1].group, r->group) != 0;
        if (first_of_group) {
            buf_append(out, i ? "]}," : "", i ? 3 : 0);
            buf_append(out, "{\"name\":", 8);
            json_text(out, r->group);
            buf_printf(out, ",\"interval_s\":%g,\"rules\":[", (double)r->interval_ms / 1000);
        } else {
            buf_putc(out, ',');
        }
        rule_json(a, i, out);
    }
    buf_append(out, a->rules.n ? "]}]}" : "]}", a->rules.n ? 4 : 2);
    pthread_mutex_unlock(&a->lock);
}

static void alert_json(const struct alert *x, struct buf *out)
{
    char since[40], fired[40];
    time_format_rfc3339(x->active_since_ms, since, sizeof since);
    time_format_rfc3339(x->fired_ms, fired, sizeof fired);
    buf_printf(out, "{\"id\":\"%s\",\"rule\":", x->id);
    json_text(out, x->rule);
    buf_append(out, ",\"group\":", 9);
    json_text(out, x->group);
    buf_printf(out, ",\"state\":\"%s\",\"value\":", state_names[x->state]);
    json_number(out, x->value);
    buf_printf(out, ",\"labels\":%s,\"annotations\":%s,\"summary\":", x->labels_json,
               x->annotations_json ? x->annotations_json : "{}");
    json_text(out, x->summary);
    buf_printf(out, ",\"active_since\":\"%s\",\"fired_at\":", since);
    if (x->state == ST_FIRING || x->state == ST_ACKED)
        buf_printf(out, "\"%s\"", fired);
    else
        buf_append(out, "null", 4);
    buf_printf(out, ",\"notified\":%s}", x->notified ? "true" : "false");
}

void alert_engine_alerts_json(struct alert_engine *a, struct buf *out)
{
    pthread_mutex_lock(&a->lock);
    buf_append(out, "{\"alerts\":[", 11);
    bool first = true;
    for (size_t b = 0; b < ALERT_BUCKETS; b++)
        for (const struct alert *x = a->buckets[b]; x; x = x->next) {
            if (x->state == ST_INACTIVE)
                continue;
            buf_append(out, first ? "" : ",", first ? 0 : 1);
            first = false;
            alert_json(x, out);
        }
    buf_append(out, "]}", 2);
    pthread_mutex_unlock(&a->lock);
}

int alert_engine_ack(struct alert_engine *a, const char *alert_id, const char *who, struct err *e)
{
    struct pending_out o;
    pending_out_init(&o);
    pthread_mutex_lock(&a->lock);
    struct alert *x = find_alert(a, alert_id);
    int rc = 0;
    if (!x || x->state == ST_INACTIVE)
        rc = err_set(e, E_NOTFOUND, "no active alert has id '%s' (GET /api/v1/alerts lists them)",
                     alert_id);
    else if (x->state == ST_PENDING)
        rc = err_set(e, E_INVALID, "alert %s is pending, not firing: nothing to acknowledge yet",
                     alert_id);
    if (rc == 0 && x->state == ST_FIRING) {
        x->state = ST_ACKED;
        record(&o, x, "acknowledged", time_now_ms());
        a->transitions_total++;
        log_info("alerting: alert %s (%s) acknowledged by %s", x->id, x->rule,
                 who && *who ? who : "someone");
    }
    pthread_mutex_unlock(&a->lock);
    pending_out_flush(a, &o);
    return rc;
}

/* opsdb_alert_relevance{rule}: alert_quality's relevance over its default window (7 days). */
static void relevance_metrics(struct alert_engine *a, struct buf *out)
{
    struct store_result res;
    struct err e;
    if (read_table(a, "SELECT rule, relevance FROM alert_quality", &res, &e) == 0) {
        buf_printf(out, "# HELP opsdb_alert_relevance Share of a rule's alerts of the last 7 "
                        "days that were acknowledged or lasted (view alert_quality).\n"
                        "# TYPE opsdb_alert_relevance gauge\n");
        for (size_t i = 0; i < res.nrows; i++) {
            const struct value *row = res.values + i * res.ncols;
            /* rule names are checked when rules load; a row written by hand may hold anything,
             * and only plain names need no escaping in a label value */
            if (row[0].type != VAL_TEXT || (row[1].type != VAL_REAL && row[1].type != VAL_INT) ||
                strspn(row[0].s,
                       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
                    row[0].len)
                continue;
            buf_printf(out, "opsdb_alert_relevance{rule=\"%s\"} %g\n", row[0].s,
                       row[1].type == VAL_REAL ? row[1].d : (double)row[1].i);
        }
    }
    store_result_release(&res);
}

void alert_engine_metrics(struct alert_engine *a, struct buf *out)
{
    relevance_metrics(a, out);
    pthread_mutex_lock(&a->lock);
    size_t by_state[4] = {0};
    for (size_t b = 0; b < ALERT_BUCKETS; b++)
        for (const struct alert *x = a->buckets[b]; x; x = x->next)
            by_state[x->state]++;
    buf_printf(out,
               "# HELP opsdb_alert_rules Alert rules loaded.\n# TYPE opsdb_alert_rules gauge\n"
               "opsdb_alert_rules %zu\n"
               "# HELP opsdb_alerts Alerts by state.\n# TYPE opsdb_alerts gauge\n",
               a->rules.n);
    for (int s = ST_PENDING; s <= ST_ACKED; s++)
        buf_printf(out, "opsdb_alerts{state=\"%s\"} %zu\n", state_names[s], by_state[s]);
    buf_printf(out,
               "# HELP opsdb_alert_evaluations_total Rule evaluations.\n"
               "# TYPE opsdb_alert_evaluations_total counter\n"
               "opsdb_alert_evaluations_total %llu\n"
               "# HELP opsdb_alert_evaluation_failures_total Rule evaluations that failed.\n"
               "# TYPE opsdb_alert_evaluation_failures_total counter\n"
               "opsdb_alert_evaluation_failures_total %llu\n"
               "# HELP opsdb_alert_transitions_total Alert state transitions recorded.\n"
               "# TYPE opsdb_alert_transitions_total counter\n"
               "opsdb_alert_transitions_total %llu\n"
               "# HELP opsdb_alert_flapping_total Flapping spells detected (notified once, "
               "then held).\n"
               "# TYPE opsdb_alert_flapping_total counter\n"
               "opsdb_alert_flapping_total %llu\n",
               (unsigned long long)a->evaluations_total, (unsigned long long)a->eval_failures_total,
               (unsigned long long)a->transitions_total, (unsigned long long)a->flapping_total);
    if (a->notifier) /* under the lock: a reload frees the notifier it replaces */
        notifier_metrics(a->notifier, out);
    pthread_mutex_unlock(&a->lock);
}

/* ---- silences ------------------------------------------------------------------------------ */

/* Writes a silence's row (upserted by id). */
static int write_silence(struct alert_engine *a, const struct alert_silence *si, struct err *e)
{
    struct batch b;
    batch_init(&b, schema_table("silences"));
    struct value *row = batch_add_row(&b);
    row[schema_column(b.table, "ts")] = (struct value){.i = time_now_ms(), .type = VAL_INT};
    set_text(&b, row, "id", si->id);
    set_text(&b, row, "matchers", si->matchers);
    row[schema_column(b.table, "starts_at")] = (struct value){.i = si->starts_ms, .type = VAL_INT};
    row[schema_column(b.table, "ends_at")] = (struct value){.i = si->ends_ms, .type = VAL_INT};
    set_text(&b, row, "created_by", si->created_by);
    if (si->comment[0])
        set_text(&b, row, "comment", si->comment);
    int rc = writer_submit(a->writer, &b, e);
    batch_release(&b);
    return rc;
}

/* Puts si in the suppressors (the one a pending reload brings too) and makes every rule due, so
 * the alerts it covers change at once. Under the lock. */
static int hold_silence(struct alert_engine *a, const struct alert_silence *si, struct err *e)
{
    int rc = suppressor_put_silence(a->suppressor, si, e);
    if (rc == 0 && a->next_suppressor)
        rc = suppressor_put_silence(a->next_suppressor, si, e);
    for (size_t i = 0; rc == 0 && i < a->rules.n; i++)
        a->rstate[i].next_due_ms = 0;
    pthread_cond_signal(&a->wake);
    return rc;
}

int alert_engine_silence(struct alert_engine *a, struct alert_silence *si, struct err *e)
{
    int64_t now = time_now_ms();
    if (!si->id[0]) {
        unsigned char raw[8];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(si->id, sizeof si->id, raw, sizeof raw);
    }
    if (!si->starts_ms)
        si->starts_ms = now;
    if (si->ends_ms <= now)
        return err_set(e, E_INVALID, "ends_at: the silence would already be over");
    if (!si->created_by[0])
        return err_set(e, E_INVALID, "created_by: say who makes the silence");
    /* checked (matchers, times) before anything is written */
    struct suppressor *probe = NULL;
    int rc = suppressor_new(&probe, "", e);
    if (rc == 0)
        rc = suppressor_put_silence(probe, si, e);
    suppressor_free(&probe);
    if (rc == 0)
        rc = write_silence(a, si, e);
    if (rc == 0) {
        pthread_mutex_lock(&a->lock);
        rc = hold_silence(a, si, e);
        pthread_mutex_unlock(&a->lock);
        log_info("alerting: silence %s (%s) until %lld by %s", si->id, si->matchers,
                 (long long)si->ends_ms, si->created_by);
    }
    return rc;
}

int alert_engine_silence_expire(struct alert_engine *a, const char *id, struct err *e)
{
    pthread_mutex_lock(&a->lock);
    const struct alert_silence *found = suppressor_silence(a->suppressor, id);
    struct alert_silence si;
    if (found)
        si = *found;
    pthread_mutex_unlock(&a->lock);
    if (!found)
        return err_set(e, E_NOTFOUND, "no silence has id '%s' (GET /api/v1/silences lists them)",
                       id);
    int64_t now = time_now_ms();
    if (si.ends_ms <= now)
        return 0; /* over already */
    si.ends_ms = now;
    if (si.starts_ms >= now)
        si.starts_ms = now - 1; /* a pending silence ends before it began */
    int rc = write_silence(a, &si, e);
    if (rc == 0) {
        pthread_mutex_lock(&a->lock);
        rc = hold_silence(a, &si, e);
        pthread_mutex_unlock(&a->lock);
    }
    return rc;
}

void alert_engine_silences_json(struct alert_engine *a, struct buf *out)
{
    pthread_mutex_lock(&a->lock);
    buf_append(out, "{\"silences\":", 12);
    suppressor_silences_json(a->suppressor, time_now_ms(), out);
    buf_putc(out, '}');
    pthread_mutex_unlock(&a->lock);
}

/* The silences from the table that end after since_ms. */
static void load_silences_since(struct alert_engine *a, int64_t since_ms)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences WHERE "
             "ends_at > %lld",
             (long long)since_ms);
    struct store_result res;
    struct err e;
    int rc = read_table(a, sql, &res, &e);
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        struct alert_silence si = {0};
        if (row[0].type != VAL_TEXT || row[1].type != VAL_TEXT || row[2].type != VAL_INT ||
            row[3].type != VAL_INT)
            continue;
        snprintf(si.id, sizeof si.id, "%s", row[0].s);
        snprintf(si.matchers, sizeof si.matchers, "%s", row[1].s);
        si.starts_ms = row[2].i;
        si.ends_ms = row[3].i;
        snprintf(si.created_by, sizeof si.created_by, "%s",
                 row[4].type == VAL_TEXT ? row[4].s : "");
        snprintf(si.comment, sizeof si.comment, "%s", row[5].type == VAL_TEXT ? row[5].s : "");
        if (suppressor_put_silence(a->suppressor, &si, &e) != 0)
            log_error("alerting: silence %s is not used: %s", si.id, e.msg);
    }
    if (rc)
        log_error("alerting: reading the silences failed: %s", e.msg);
    store_result_release(&res);
}

/* ---- incidents ------------------------------------------------------------------------------- */

/* The incidents still open or resolved within the day (what the API lists), from their table;
 * the restored alerts rejoin theirs. */
static void restore_incidents(struct alert_engine *a)
{
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT id, opened_at, resolved_at, last_alert_at, keys, alerts FROM incidents"
             " WHERE resolved_at IS NULL OR resolved_at > %lld ORDER BY opened_at",
             (long long)(time_now_ms() - 86400000LL));
    struct store_result res;
    struct err e;
    int rc = read_table(a, sql, &res, &e);
    size_t loaded = 0;
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        if (row[0].type != VAL_TEXT || row[1].type != VAL_INT || row[3].type != VAL_INT)
            continue;
        struct err bad;
        if (incidents_load(a->incidents, row[0].s, row[1].i, row[2].type == VAL_INT ? row[2].i : 0,
                           row[3].i, row[4].type == VAL_TEXT ? row[4].s : NULL,
                           row[5].type == VAL_TEXT ? row[5].s : NULL, &bad) != 0)
            log_error("alerting: %s", bad.msg);
        else
            loaded++;
    }
    if (rc)
        log_error("alerting: reading the incidents failed: %s", e.msg);
    store_result_release(&res);
    for (size_t b = 0; loaded && b < ALERT_BUCKETS; b++)
        for (struct alert *x = a->buckets[b]; x; x = x->next) {
            const char *id = incidents_of_alert(a->incidents, x->id);
            snprintf(x->incident, sizeof x->incident, "%s", id ? id : "");
        }
}

/* Rows of an incident's window, as JSON objects: what is related to it. */
static json_t *related_rows(struct alert_engine *a, const char *sql, json_t *values, int64_t from,
                            int64_t to)
{
    char *list = json_dumps(values, JSON_COMPACT);
    struct store_param params[] = {{"values", true, 0, list ? list : "[]"},
                                   {"from", false, (double)from, NULL},
                                   {"to", false, (double)to, NULL}};
    struct store_query q = {sql, params, 3, a->cfg.query_timeout_ms, 100, false};
    struct store_result res;
    struct err e;
    struct store_reader *rd = store_reader_get(a->store);
    int rc = store_reader_query(rd, &q, &res, &e);
    store_reader_put(a->store, rd);
    free(list);
    json_t *rows = json_array();
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        json_t *row = json_object();
        for (size_t c = 0; c < res.ncols; c++) {
            const struct value *v = &res.values[i * res.ncols + c];
            json_t *j = v->type == VAL_INT    ? json_integer(v->i)
                        : v->type == VAL_REAL ? json_real(v->d)
                        : v->type == VAL_TEXT ? json_stringn(v->s, v->len)
                                              : json_null();
            json_object_set_new(row, res.columns[c], j);
        }
        json_array_append_new(rows, row);
    }
    if (rc)
        log_error("alerting: reading what relates to an incident failed: %s", e.msg);
    store_result_release(&res);
    return rows;
}

void alert_engine_incidents_json(struct alert_engine *a, struct buf *out)
{
    int64_t now = time_now_ms();
    pthread_mutex_lock(&a->lock);
    json_t *all = incidents_json(a->incidents, now);
    pthread_mutex_unlock(&a->lock);
    size_t i;
    json_t *inc;
    json_array_foreach(all, i, inc)
    {
        /* from a window before the first alert (the cause is often earlier) to its end */
        int64_t from = 0, to = now;
        const char *opened = json_string_value(json_object_get(inc, "opened_at"));
        const char *resolved = json_string_value(json_object_get(inc, "resolved_at"));
        if (opened && time_parse_point(opened, &from))
            from -= a->cfg.alert_correlation_window_ms;
        if (resolved)
            time_parse_point(resolved, &to);
        json_t *k = json_object_get(inc, "keys");
        json_t *hosts_components = json_array();
        json_array_extend(hosts_components, json_object_get(k, "host"));
        json_array_extend(hosts_components, json_object_get(k, "component"));
        json_t *related = json_object();
        json_object_set_new(
            related, "error_fingerprints",
            related_rows(a,
                         "SELECT fingerprint, error_type, component, count(*) AS events,"
                         " max(ts) AS last_seen, max(message) AS message FROM error_logs"
                         " WHERE ts >= :from AND ts <= :to AND (host IN (SELECT value FROM"
                         " json_each(:values)) OR component IN (SELECT value FROM"
                         " json_each(:values))) GROUP BY fingerprint ORDER BY events DESC"
                         " LIMIT 10",
                         hosts_components, from, to));
        json_object_set_new(
            related, "failed_pipeline_runs",
            related_rows(a,
                         "SELECT pipeline, run_id, max(ts) AS failed_at, max(stage) AS stage,"
                         " max(message) AS message FROM pipeline_status WHERE status = 'failed'"
                         " AND ts >= :from AND ts <= :to AND pipeline IN (SELECT value FROM"
                         " json_each(:values)) GROUP BY pipeline, run_id ORDER BY failed_at"
                         " DESC LIMIT 10",
                         json_object_get(k, "pipeline"), from, to));
        json_object_set_new(inc, "related", related);
        json_decref(hosts_components);
    }
    char *text = json_dumps(all, JSON_COMPACT);
    buf_append(out, "{\"incidents\":", 13);
    buf_append(out, text ? text : "[]", text ? strlen(text) : 2);
    buf_putc(out, '}');
    free(text);
    json_decref(all);
}

/* ---- replay ---------------------------------------------------------------------------------- */

int alert_backtest(struct store *s, const struct config *cfg, int64_t from_ms, int64_t to_ms,
                   alert_trace_fn fn, void *arg, struct alert_backtest_stats *stats, struct err *e)
{
    if (to_ms <= from_ms)
        return err_set(e, E_INVALID, "--to must come after --from");
    struct alert_engine *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(e, E_NOMEM, "out of memory");
    a->trace = fn;
    a->trace_arg = arg;
    int rc = engine_load(a, s, cfg, e);
    if (rc == 0)
        rc = notifier_new_replay(&a->notifier, cfg->config_path, fn, arg, e);
    if (rc == 0) {
        load_silences_since(a, from_ms); /* those that covered any part of the replay */
        int64_t steps = 0;
        for (int64_t t = from_ms; t <= to_ms; t += 1000) {
            notifier_advance(a->notifier, t); /* what fell due since the last step */
            for (size_t i = 0; i < a->rules.n; i++)
                if (t >= a->rstate[i].next_due_ms) {
                    a->rstate[i].next_due_ms = t + a->rules.rules[i].interval_ms;
                    evaluate(a, i, t);
                    steps++;
                }
            notifier_advance(a->notifier, t); /* what is due at once (group_wait: 0s) */
        }
        if (stats) {
            stats->evaluations = steps;
            stats->failures = a->eval_failures_total;
            stats->rules = a->rules.n;
        }
        for (size_t i = 0; i < a->rules.n && rc == 0; i++)
            if (a->rstate[i].failures)
                rc = err_set(e, E_INVALID, "rule %s (%s:%d) failed during the replay: %s",
                             a->rules.rules[i].name, a->rules.rules[i].file, a->rules.rules[i].line,
                             a->rstate[i].last_error);
    }
    alert_engine_free(&a);
    return rc;
}
