/*
 * alert/: alert rules, their evaluation, the life of each alert, and its notifications.
 *
 * Rules live in YAML files of groups shaped like Prometheus rule files (docs/alerts.md). A
 * threshold rule aggregates one metric (system_metrics) or one numeric column (an event table)
 * over a window per series or per `by` group and compares it with a threshold; an SQL rule runs
 * a read-only query whose rows are alerts (columns are labels, `value` the value). The engine
 * evaluates each group on its interval, and threshold rules also as soon as rows of their table
 * are committed. An alert is rule + labels; it goes pending -> firing -> resolved (and
 * acknowledged), each transition a row of alert_history, and firing and resolved alerts are
 * handed to the notifier.
 */
#ifndef OPSDB_ALERT_H
#define OPSDB_ALERT_H

#include "core/core.h"

#include <stdio.h>

struct store;
struct writer;
struct batch;

/* ---- rules (rules.c) -------------------------------------------------------------------- */

enum alert_agg {
    ALERT_AVG,
    ALERT_MIN,
    ALERT_MAX,
    ALERT_SUM,
    ALERT_COUNT,
    ALERT_RATE, /* per second increase of a counter over the window (resets count from 0) */
    ALERT_P50,
    ALERT_P95,
    ALERT_P99,
};
enum alert_op { ALERT_GT, ALERT_GE, ALERT_LT, ALERT_LE, ALERT_EQ, ALERT_NE };

#define ALERT_BY_MAX 8

struct alert_rule {
    char name[128];  /* `alert:` */
    char group[128]; /* the group's name */
    char file[512];
    int line; /* of the rule's `alert:` key */
    bool is_sql;
    /* threshold rules */
    char table[64], metric[128], filter[512];
    char by[ALERT_BY_MAX][64]; /* event tables: the columns that make one alert each */
    size_t nby;
    enum alert_agg agg;
    /* SQL rules: :window_start and :now are bound (epoch ms) */
    char *sql;
    enum alert_op op;
    bool has_threshold; /* an SQL rule without one makes an alert of every row it returns */
    double threshold, resolve_threshold; /* resolve_threshold = threshold when not given */
    int64_t window_ms, for_ms, keep_firing_for_ms, interval_ms;
    int n_of, m_of; /* fire when true in n_of of the last m_of evaluations; 0: not used */
    char *labels_json, *annotations_json; /* objects of text values, "{}" when none */
};

struct alert_rules {
    struct alert_rule *rules;
    size_t n;
    char **groups; /* the names of the groups read, those without rules too */
    size_t ngroups;
};

/* Reads the comma-separated rule files (relative paths from base_dir, "" = the working
 * directory). Every error names the file and line: "rules.yaml:12: op: '=>' is not one of ...".
 * default_interval_ms is a group's interval when it gives none. */
int alert_rules_load(struct alert_rules *out, const char *files, const char *base_dir,
                     int64_t default_interval_ms, struct err *e);
/* Reads the rules of one rule file's text (NUL-terminated; name is what messages call it, as
 * "name:12: ..."), as alert_rules_load() reads a file. out is freed with alert_rules_free()
 * whatever the result; errors as alert_rules_load(). */
int alert_rules_load_text(struct alert_rules *out, const char *name, const char *text,
                          int64_t default_interval_ms, struct err *e);
/* The rules a server runs: cfg's alerting.rule_files (relative to the config file's
 * directory) and, with alerting.default_rules on, the default set (alert_default_rules()) but
 * for its groups that a user group of the same name replaces. Errors as alert_rules_load(). */
int alert_rules_load_config(struct alert_rules *out, const struct config *cfg, struct err *e);
/* The default rule set, as a rule file's text (docs/alerts.md). */
const char *alert_default_rules(void);
void alert_rules_free(struct alert_rules *r);
const char *alert_agg_name(enum alert_agg a);
const char *alert_op_name(enum alert_op op);

/* ---- the engine (engine.c) -------------------------------------------------------------- */

struct alert_engine;

/* Loads the rules and receivers named by cfg (E_INVALID or E_IO naming the file and line). The
 * store and the writer must outlive the engine. Alerts left pending or firing by the last run
 * are taken up again from alert_history, without notifying again what was notified; the
 * notified ones are filed in the notifier's groups as sent when notification_log last shows
 * their group sent, so repeats go on from then and a resolution goes to that group. */
int alert_engine_new(struct alert_engine **out, struct store *s, struct writer *w,
                     const struct config *cfg, struct err *e);
/* Starts the evaluation thread; register alert_engine_on_commit with the writer first. */
int alert_engine_start(struct alert_engine *a, struct err *e);
void alert_engine_free(struct alert_engine **a);
/* Reads the rule files and receivers again; on any error keeps what it had and says why. */
int alert_engine_reload(struct alert_engine *a, struct err *e);
/* The writer's after-commit hook (arg: the engine): wakes the threshold rules on those
 * tables. */
void alert_engine_on_commit(void *arg, const struct batch *const *batches, size_t n);
/* GET /api/v1/rules: {"groups": [{"name", "interval_s", "rules": [...]}]} with each rule's
 * definition, state, last evaluation and its error if any. */
void alert_engine_rules_json(struct alert_engine *a, struct buf *out);
/* GET /api/v1/alerts: {"alerts": [...]} the pending, firing and acknowledged alerts. */
void alert_engine_alerts_json(struct alert_engine *a, struct buf *out);
/* Acknowledges a firing alert by its id (E_NOTFOUND when no such alert is active). */
int alert_engine_ack(struct alert_engine *a, const char *alert_id, const char *who, struct err *e);
/* Silences: while one is active, the alerts its label matchers all match are recorded as
 * suppressed (with the silence in the summary) and not notified; they are kept in the silences
 * table. Times in epoch ms. */
struct alert_silence {
    char id[64]; /* "" on creation: one is made */
    char matchers[1024];
    int64_t starts_ms, ends_ms;
    char created_by[256];
    char comment[1024];
};
/* Creates or replaces (by id) a silence and writes it; s->id is set. E_INVALID names the bad
 * field (matchers that do not parse, an end not after the start or already past). */
int alert_engine_silence(struct alert_engine *a, struct alert_silence *s, struct err *e);
/* Ends a silence now (E_NOTFOUND for an unknown id). */
int alert_engine_silence_expire(struct alert_engine *a, const char *id, struct err *e);
/* GET /api/v1/silences: {"silences": [...]} with each one's state (active, pending, expired). */
void alert_engine_silences_json(struct alert_engine *a, struct buf *out);
/* GET /api/v1/incidents: {"incidents": [...]} — alerts that fired on the same host, component
 * or pipeline within alerting.correlation_window, the earliest as probable cause, with the
 * error fingerprints of those hosts and components and the failed runs of those pipelines in
 * the incident's time. */
void alert_engine_incidents_json(struct alert_engine *a, struct buf *out);
/* ---- replay (opsdb alerts backtest) ------------------------------------------------------ */

/* One event of a replay: a transition (what is a state of alert_history: pending, firing,
 * suppressed, escalated, resolved; note is the row's summary), or one alert of a notification
 * the notifier's routing and grouping would have sent ("notify firing", "notify resolved": its
 * status in it; receiver, group_key and send set) or dropped ("notify dropped": note says why,
 * e.g. no receiver is configured). Strings are lent for the call. */
struct alert_trace {
    int64_t ts_ms;
    const char *what, *alert_id, *rule, *labels_json;
    const char *annotations_json; /* expanded, "{}" when none */
    double value;                 /* NaN when none */
    const char *note, *receiver;  /* NULL when none */
    const char *group_key;        /* a notification's group (Alertmanager's groupKey), or NULL */
    const char *send; /* a notification's kind: "first", "update", "repeat", "resolved" */
};
typedef void (*alert_trace_fn)(void *arg, const struct alert_trace *t);
struct alert_backtest_stats {
    int64_t evaluations, failures;
    size_t rules;
};
/* Replays the rules cfg names over the stored data of [from_ms, to_ms]: each group evaluated on
 * its interval with the data as of that moment, through the same states as the engine (for,
 * hysteresis, keep_firing_for, n_of_m, silences of that time, maintenance windows, inhibition,
 * flapping, escalation), and the notifications through the notifier's routes and groups of
 * cfg's config file on the replay's clock (group_wait, group_interval, repeat_interval; what
 * falls due after to_ms is not shown), handing fn every transition and notification. Writes
 * and sends nothing.
 * E_INVALID for bad rules, or when a rule fails during the replay (naming it). */
int alert_backtest(struct store *s, const struct config *cfg, int64_t from_ms, int64_t to_ms,
                   alert_trace_fn fn, void *arg, struct alert_backtest_stats *stats, struct err *e);

/* ---- rule unit tests (opsdb alerts test, ruletest.c) --------------------------------------- */

struct alert_test_report {
    size_t tests, failed, checks;
};
/* Runs the tests of a rule test file (docs/alerts.md, "Rule unit tests"): for each test, its
 * input rows go into a fresh temporary database, the rule files are replayed over it with cfg's
 * alerting settings, and the alerts firing at each eval_time are compared with the expected
 * ones. Each test's result is written to out (a failure names the file, line, expected and got
 * alerts) and counted in report. Returns E_INVALID naming the file and line for a test file or
 * rule file that cannot be run (nothing after it runs), E_IO for one that cannot be read. */
int alert_rules_test(const char *path, const struct config *cfg, FILE *out,
                     struct alert_test_report *report, struct err *e);

/* Prometheus text lines for /metrics. */
void alert_engine_metrics(struct alert_engine *a, struct buf *out);

#endif
