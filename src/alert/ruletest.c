/*
 * Rule unit tests (opsdb alerts test), the way promtool tests Prometheus rules: a test file
 * names rule files and gives tests; each test's input (metric samples in promtool's series
 * notation, rows of any table) is written into a fresh database of its own, the rules are
 * replayed over it (alert_backtest: the engine's own states, for, hysteresis, suppression), and
 * the alerts firing at each eval_time are compared with the expected ones.
 *
 * Times in a test are offsets from its start (default 2026-01-01T00:00:00Z, or `start:`), so a
 * test gives the same answer on any day.
 */
#include "alert/alert.h"
#include "core/ydoc.h"
#include "ingest/ingest.h"
#include "store/store.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_START "2026-01-01T00:00:00Z"
#define DEFAULT_SPACING_MS 60000
#define VALUES_MAX 1000000 /* samples of one test: a typo like 1x100000000 is refused */
#define ROWS_MAX 1000000

/* One input row's origin, for messages about it. */
struct row_origin {
    const yaml_node_t *node;
};

/* What one test writes: per schema table, a JSON array of rows and where each came from. */
struct test_input {
    json_t *rows[SCHEMA_MAX_TABLES];
    struct row_origin *origin[SCHEMA_MAX_TABLES];
    size_t n[SCHEMA_MAX_TABLES], cap[SCHEMA_MAX_TABLES];
    size_t total;
};

/* A transition of the replay (notifications are not alert states). */
struct transition {
    int64_t ts_ms;
    char *state, *rule, *alert_id, *labels_json, *annotations_json;
};

struct replay_log {
    struct transition *t;
    size_t n, cap;
    bool oom;
};

struct runner {
    struct ydoc doc;
    const struct config *cfg;
    char rule_files[sizeof((struct config *)0)->alert_rule_files];
    bool default_rules;
    FILE *out;
    struct alert_test_report *report;
    struct fingerprint_rules *fp;
};

static size_t line_of(const yaml_node_t *n)
{
    return n->start_mark.line + 1;
}

/* ---- reading the file --------------------------------------------------------------------- */

static int want_text(struct runner *r, const yaml_node_t *v, const char *key, const char **out)
{
    *out = ydoc_text(v);
    if (!*out)
        return ydoc_fail(&r->doc, v, "%s: expected a value, not a %s", key,
                         v->type == YAML_MAPPING_NODE ? "map" : "list");
    return 0;
}

static int want_duration(struct runner *r, const yaml_node_t *v, const char *key, int64_t *ms)
{
    const char *s;
    if (want_text(r, v, key, &s))
        return E_INVALID;
    if (!time_parse_duration(s, ms) || *ms < 0)
        return ydoc_fail(&r->doc, v, "%s: '%s' is not a duration (like 30s, 5m, 1h)", key, s);
    return 0;
}

static int want_kind(struct runner *r, const yaml_node_t *v, const char *key, yaml_node_type_t t)
{
    if (!v || v->type != t)
        return ydoc_fail(&r->doc, v, "%s: expected a %s", key,
                         t == YAML_MAPPING_NODE ? "map" : "list");
    return 0;
}

/* Fails for a key of map that is not in allowed (NULL-terminated). */
static int known_keys(struct runner *r, const yaml_node_t *map, const char *what,
                      const char *const *allowed)
{
    for (yaml_node_pair_t *kv = map->data.mapping.pairs.start; kv < map->data.mapping.pairs.top;
         kv++) {
        const yaml_node_t *kn = ydoc_node(&r->doc, kv->key);
        const char *name = ydoc_text(kn);
        bool ok = false;
        for (size_t i = 0; name && allowed[i] && !ok; i++)
            ok = strcmp(name, allowed[i]) == 0;
        if (!ok) {
            char list[300] = "";
            for (size_t i = 0, len = 0; allowed[i] && len < sizeof list; i++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                        allowed[i]);
            return ydoc_fail(&r->doc, kn, "%s: unknown key '%s' (expected %s)", what,
                             name ? name : "?", list);
        }
    }
    return 0;
}

/* A YAML value as JSON: plain scalars that read as numbers, booleans or null are those; quoted
 * scalars are text; maps and lists nest. */
static json_t *yaml_to_json(struct runner *r, const yaml_node_t *n)
{
    if (!n)
        return json_null();
    if (n->type == YAML_MAPPING_NODE) {
        json_t *obj = json_object();
        for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top;
             kv++) {
            const char *k = ydoc_text(ydoc_node(&r->doc, kv->key));
            if (k)
                json_object_set_new(obj, k, yaml_to_json(r, ydoc_node(&r->doc, kv->value)));
        }
        return obj;
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        json_t *arr = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++)
            json_array_append_new(arr, yaml_to_json(r, ydoc_node(&r->doc, *it)));
        return arr;
    }
    const char *s = ydoc_text(n);
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_string(s);
    if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)
        return json_boolean(s[0] == 't');
    if (strcmp(s, "null") == 0 || strcmp(s, "~") == 0 || !*s)
        return json_null();
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (!*end && !errno)
        return json_integer(i);
    double d = strtod(s, &end);
    if (!*end && !errno && isfinite(d))
        return json_real(d);
    return json_string(s);
}

static int input_add(struct runner *r, struct test_input *in, const struct table *t, json_t *row,
                     const yaml_node_t *origin)
{
    size_t ntables;
    size_t k = (size_t)(t - schema_tables(&ntables));
    if (in->total >= ROWS_MAX) {
        json_decref(row);
        return ydoc_fail(&r->doc, origin, "more than %d input rows in one test", ROWS_MAX);
    }
    if (in->n[k] == in->cap[k]) {
        size_t cap = in->cap[k] ? 2 * in->cap[k] : 64;
        struct row_origin *more = realloc(in->origin[k], cap * sizeof *more);
        if (!more) {
            json_decref(row);
            return err_set(r->doc.e, E_NOMEM, "out of memory");
        }
        in->origin[k] = more;
        in->cap[k] = cap;
    }
    if (!in->rows[k])
        in->rows[k] = json_array();
    json_array_append_new(in->rows[k], row);
    in->origin[k][in->n[k]++].node = origin;
    in->total++;
    return 0;
}

static void input_release(struct test_input *in)
{
    for (size_t k = 0; k < SCHEMA_MAX_TABLES; k++) {
        json_decref(in->rows[k]);
        free(in->origin[k]);
    }
    memset(in, 0, sizeof *in);
}

/* `metric{label="value", ...}` into the row's metric, host, component and labels. */
static int parse_series_name(struct runner *r, const yaml_node_t *at, const char *s, json_t *row)
{
    size_t len = strcspn(s, "{");
    while (len && s[len - 1] == ' ')
        len--;
    if (!len)
        return ydoc_fail(&r->doc, at, "series: '%s' names no metric (like cpu_usage{host=\"h1\"})",
                         s);
    json_object_set_new(row, "metric", json_stringn(s, len));
    json_t *labels = json_object();
    json_object_set_new(row, "labels", labels);
    const char *p = strchr(s, '{');
    if (!p)
        return 0;
    p++;
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '}' && !p[1])
            return 0;
        size_t nlen = strcspn(p, "= }");
        const char *name = p;
        p += nlen;
        while (*p == ' ')
            p++;
        if (!nlen || *p != '=' || p[1] != '"')
            return ydoc_fail(&r->doc, at,
                             "series: '%s': expected name=\"value\" pairs in braces, as "
                             "cpu_usage{host=\"h1\",component=\"web\"}",
                             s);
        p += 2;
        struct buf value;
        buf_init(&value, 4096);
        while (*p && *p != '"') {
            if (*p == '\\' && p[1])
                p++;
            buf_putc(&value, *p == 'n' && p[-1] == '\\' ? '\n' : *p);
            p++;
        }
        if (*p != '"') {
            buf_release(&value);
            return ydoc_fail(&r->doc, at, "series: '%s': a label value is not closed by \"", s);
        }
        p++;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)nlen, name);
        json_t *v = json_stringn(value.data ? value.data : "", value.len);
        buf_release(&value);
        if (strcmp(key, "host") == 0 || strcmp(key, "component") == 0)
            json_object_set_new(row, key, v);
        else
            json_object_set_new(labels, key, v);
    }
}

/* One token of promtool's value notation: "_", "_xN", "A", "AxN", "A+BxN", "A-BxN". Adds its
 * samples (NAN for a gap) to vals. */
static int parse_value_token(struct runner *r, const yaml_node_t *at, const char *tok,
                             double **vals, size_t *n, size_t *cap)
{
    double a = NAN, b = 0;
    long count = 1;
    const char *p = tok;
    char *end;
    bool gap = *p == '_';
    if (gap) {
        p++;
        if (*p == 'x') {
            count = strtol(p + 1, &end, 10);
            if (end == p + 1 || count < 1)
                goto bad;
            p = end;
        }
    } else {
        a = strtod(p, &end);
        if (end == p || !isfinite(a))
            goto bad;
        p = end;
        if ((*p == '+' || *p == '-') && p[1] != 'x') {
            double sign = *p == '-' ? -1 : 1;
            b = strtod(p + 1, &end);
            if (end == p + 1 || !isfinite(b) || *end != 'x')
                goto bad;
            b *= sign;
            p = end;
        }
        if (*p == 'x') {
            long more = strtol(p + 1, &end, 10);
            if (end == p + 1 || more < 0)
                goto bad;
            count = more + 1; /* a, a+b, ..., a+n*b */
            p = end;
        }
    }
    if (*p)
        goto bad;
    if ((size_t)count > VALUES_MAX - *n)
        return ydoc_fail(&r->doc, at, "values: more than %d samples in one test", VALUES_MAX);
    if (*n + (size_t)count > *cap) {
        size_t want = *cap ? *cap : 64;
        while (want < *n + (size_t)count)
            want *= 2;
        double *more = realloc(*vals, want * sizeof *more);
        if (!more)
            return err_set(r->doc.e, E_NOMEM, "out of memory");
        *vals = more;
        *cap = want;
    }
    for (long i = 0; i < count; i++)
        (*vals)[(*n)++] = gap ? NAN : a + b * (double)i;
    return 0;
bad:
    return ydoc_fail(&r->doc, at,
                     "values: '%s' is not a value (expected a number, _ for none, AxN for N+1 "
                     "times A, A+BxN or A-BxN for A then N steps of B, _xN for N gaps)",
                     tok);
}

/* input_series: [{series: 'cpu_usage{host="h1"}', values: '1 2 3 _ 5x3'}] */
static int read_series(struct runner *r, const yaml_node_t *list, int64_t start_ms,
                       int64_t spacing_ms, struct test_input *in, int64_t *last_ms)
{
    if (want_kind(r, list, "input_series", YAML_SEQUENCE_NODE))
        return E_INVALID;
    static const char *const keys[] = {"series", "values", NULL};
    const struct table *t = schema_table("system_metrics");
    for (yaml_node_item_t *it = list->data.sequence.items.start; it < list->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = ydoc_node(&r->doc, *it);
        if (want_kind(r, item, "input_series", YAML_MAPPING_NODE) ||
            known_keys(r, item, "input_series", keys))
            return E_INVALID;
        const yaml_node_t *name = ydoc_map_get(&r->doc, item, "series");
        const yaml_node_t *values = ydoc_map_get(&r->doc, item, "values");
        const char *name_text, *values_text;
        if (!name || !values)
            return ydoc_fail(&r->doc, item, "input_series: each needs series and values");
        if (want_text(r, name, "series", &name_text) ||
            want_text(r, values, "values", &values_text))
            return E_INVALID;
        json_t *proto = json_object();
        int rc = parse_series_name(r, name, name_text, proto);
        double *vals = NULL;
        size_t n = 0, cap = 0;
        char *copy = strdup(values_text);
        char *save = NULL;
        for (char *tok = copy ? strtok_r(copy, " \t\n", &save) : NULL; tok && rc == 0;
             tok = strtok_r(NULL, " \t\n", &save))
            rc = parse_value_token(r, values, tok, &vals, &n, &cap);
        free(copy);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (isnan(vals[i]))
                continue;
            json_t *row = json_deep_copy(proto);
            int64_t ts = start_ms + (int64_t)i * spacing_ms;
            json_object_set_new(row, "ts", json_integer(ts));
            json_object_set_new(row, "value", json_real(vals[i]));
            rc = input_add(r, in, t, row, values);
            if (ts > *last_ms)
                *last_ms = ts;
        }
        free(vals);
        json_decref(proto);
        if (rc)
            return rc;
    }
    return 0;
}

/* input_rows: [{table: api_usage, rows: [{at: 30s, endpoint: /x, ..., repeat: 5, every: 1s}]}] */
static int read_rows(struct runner *r, const yaml_node_t *list, int64_t start_ms,
                     struct test_input *in, int64_t *last_ms)
{
    if (want_kind(r, list, "input_rows", YAML_SEQUENCE_NODE))
        return E_INVALID;
    static const char *const keys[] = {"table", "rows", NULL};
    for (yaml_node_item_t *it = list->data.sequence.items.start; it < list->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = ydoc_node(&r->doc, *it);
        if (want_kind(r, item, "input_rows", YAML_MAPPING_NODE) ||
            known_keys(r, item, "input_rows", keys))
            return E_INVALID;
        const yaml_node_t *tn = ydoc_map_get(&r->doc, item, "table");
        const yaml_node_t *rows = ydoc_map_get(&r->doc, item, "rows");
        const char *tname;
        if (!tn || !rows)
            return ydoc_fail(&r->doc, item, "input_rows: each needs table and rows");
        if (want_text(r, tn, "table", &tname) || want_kind(r, rows, "rows", YAML_SEQUENCE_NODE))
            return E_INVALID;
        const struct table *t = schema_table(tname);
        if (!t)
            return ydoc_fail(&r->doc, tn, "table: no table '%s' (docs/schema.md lists them)",
                             tname);
        for (yaml_node_item_t *ri = rows->data.sequence.items.start;
             ri < rows->data.sequence.items.top; ri++) {
            const yaml_node_t *rn = ydoc_node(&r->doc, *ri);
            if (want_kind(r, rn, "rows", YAML_MAPPING_NODE))
                return E_INVALID;
            const yaml_node_t *at = ydoc_map_get(&r->doc, rn, "at");
            const yaml_node_t *repeat = ydoc_map_get(&r->doc, rn, "repeat");
            const yaml_node_t *every = ydoc_map_get(&r->doc, rn, "every");
            int64_t at_ms = 0, every_ms = 1000, times = 1;
            if (!at)
                return ydoc_fail(&r->doc, rn,
                                 "rows: each row needs at: (its time after the "
                                 "test's start, like 90s)");
            if (want_duration(r, at, "at", &at_ms) ||
                (every && want_duration(r, every, "every", &every_ms)))
                return E_INVALID;
            if (repeat) {
                const char *s;
                char *end;
                if (want_text(r, repeat, "repeat", &s))
                    return E_INVALID;
                times = strtoll(s, &end, 10);
                if (!*s || *end || times < 1 || times > ROWS_MAX)
                    return ydoc_fail(&r->doc, repeat, "repeat: '%s' is not a count from 1 to %d", s,
                                     ROWS_MAX);
            }
            json_t *proto = yaml_to_json(r, rn);
            json_object_del(proto, "at");
            json_object_del(proto, "repeat");
            json_object_del(proto, "every");
            if (json_object_get(proto, "ts")) {
                json_decref(proto);
                return ydoc_fail(&r->doc, rn, "rows: give at: (after the test's start), not ts:");
            }
            int rc = 0;
            for (int64_t k = 0; k < times && rc == 0; k++) {
                json_t *row = json_deep_copy(proto);
                int64_t ts = start_ms + at_ms + k * every_ms;
                json_object_set_new(row, "ts", json_integer(ts));
                rc = input_add(r, in, t, row, rn);
                if (ts > *last_ms)
                    *last_ms = ts;
            }
            json_decref(proto);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ---- running one test ------------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}

/* Writes the input into the store, one batch per table; a bad row names its line. */
static int write_input(struct runner *r, struct store *s, struct test_input *in, int64_t now_ms)
{
    struct ingest_ctx ctx;
    ingest_ctx_init(&ctx, r->cfg, r->fp, PREC_MS);
    ctx.max_rows = SIZE_MAX;
    memset(ctx.retention_days, 0, sizeof ctx.retention_days); /* a test's times are its own */
    ctx.validate.now_ms = now_ms;
    struct err *e = r->doc.e;
    int rc = store_write_begin(s, e);
    size_t ntables;
    const struct table *tables = schema_tables(&ntables);
    for (size_t k = 0; k < ntables && k < SCHEMA_MAX_TABLES && rc == 0; k++) {
        if (!in->n[k])
            continue;
        char *text = json_dumps(in->rows[k], JSON_COMPACT);
        struct batch b;
        batch_init(&b, &tables[k]);
        struct rejects *rej = malloc(sizeof *rej);
        if (!text || !rej) {
            rc = err_set(e, E_NOMEM, "out of memory");
        } else {
            rejects_init(rej, "row");
            rc = ingest_parse_json(&ctx, text, strlen(text), false, &b, rej);
            if (rc && rej->n && rej->items[0].row < in->n[k])
                rc = ydoc_fail(&r->doc, in->origin[k][rej->items[0].row].node, "input for %s: %s",
                               tables[k].name, rej->items[0].reason);
            else if (rc)
                rc = err_set(e, E_INVALID, "%s: input for %s was refused", r->doc.name,
                             tables[k].name);
            else
                rc = store_write_batch(s, &b, e);
        }
        free(rej);
        free(text);
        batch_release(&b);
    }
    if (rc == 0)
        rc = store_write_commit(s, e);
    else
        store_write_rollback(s);
    return rc;
}

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

static void on_trace(void *arg, const struct alert_trace *t)
{
    struct replay_log *log = arg;
    if (strncmp(t->what, "notify", 6) == 0 || log->oom)
        return;
    if (log->n == log->cap) {
        size_t cap = log->cap ? 2 * log->cap : 64;
        struct transition *more = realloc(log->t, cap * sizeof *more);
        if (!more) {
            log->oom = true;
            return;
        }
        log->t = more;
        log->cap = cap;
    }
    log->t[log->n++] = (struct transition){t->ts_ms,
                                           xstrdup(t->what),
                                           xstrdup(t->rule),
                                           xstrdup(t->alert_id),
                                           xstrdup(t->labels_json),
                                           xstrdup(t->annotations_json)};
}

static void replay_log_release(struct replay_log *log)
{
    for (size_t i = 0; i < log->n; i++) {
        struct transition *t = &log->t[i];
        free(t->state), free(t->rule), free(t->alert_id), free(t->labels_json);
        free(t->annotations_json);
    }
    free(log->t);
    memset(log, 0, sizeof *log);
}

/* Fills a fresh temporary database with the input (its last row at last_ms) and replays the
 * rules over [start, end]. */
static int replay(struct runner *r, struct test_input *in, int64_t start_ms, int64_t end_ms,
                  int64_t last_ms, struct replay_log *log)
{
    struct err *e = r->doc.e;
    const char *tmp = getenv("TMPDIR");
    char dir[400];
    if ((size_t)snprintf(dir, sizeof dir, "%s/opsdb-ruletest-XXXXXX", tmp && *tmp ? tmp : "/tmp") >=
        sizeof dir)
        return err_set(e, E_IO, "TMPDIR is too long a path");
    if (!mkdtemp(dir))
        return err_set(e, E_IO, "cannot make a temporary directory in %s: %s",
                       tmp && *tmp ? tmp : "/tmp", strerror(errno));
    struct config cfg = *r->cfg;
    snprintf(cfg.db, sizeof cfg.db, "%s/test.db", dir);
    snprintf(cfg.alert_rule_files, sizeof cfg.alert_rule_files, "%s", r->rule_files);
    snprintf(cfg.alert_default_rules, sizeof cfg.alert_default_rules, "%s",
             r->default_rules ? "on" : "off");
    struct store *s = NULL;
    int rc = store_open(&s, &cfg, STORE_READWRITE, e);
    if (rc == 0)
        rc = write_input(r, s, in, last_ms > end_ms ? last_ms : end_ms);
    if (rc == 0)
        rc = alert_backtest(s, &cfg, start_ms, end_ms, on_trace, log, NULL, e);
    if (rc == 0 && log->oom)
        rc = err_set(e, E_NOMEM, "out of memory");
    store_close(&s);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/* The labels without alertname (implied by the check), as sorted compact text. */
static char *labels_key(json_t *labels)
{
    json_t *copy = json_copy(labels);
    json_object_del(copy, "alertname");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    return text;
}

struct got_alert {
    const struct transition *last; /* its latest transition at the time */
    bool matched;
};

/* The alerts of rule firing at t (firing, suppressed, escalated or acknowledged). */
static struct got_alert *alerts_at(const struct replay_log *log, const char *rule, int64_t t,
                                   size_t *n)
{
    struct got_alert *got = calloc(log->n + 1, sizeof *got);
    *n = 0;
    for (size_t i = 0; got && i < log->n && log->t[i].ts_ms <= t; i++) {
        const struct transition *x = &log->t[i];
        if (strcmp(x->rule, rule) != 0)
            continue;
        size_t k = 0;
        while (k < *n && strcmp(got[k].last->alert_id, x->alert_id) != 0)
            k++;
        got[k].last = x;
        if (k == *n)
            (*n)++;
    }
    size_t kept = 0;
    for (size_t k = 0; got && k < *n; k++)
        if (strcmp(got[k].last->state, "pending") != 0 &&
            strcmp(got[k].last->state, "resolved") != 0)
            got[kept++] = got[k];
    *n = kept;
    return got;
}

static void print_alert(FILE *out, const char *prefix, const char *labels, const char *annotations)
{
    fprintf(out, "    %s %s", prefix, labels);
    if (annotations)
        fprintf(out, " annotations %s", annotations);
    fputc('\n', out);
}

/* One alert_rule_test entry: {eval_time, alertname, exp_alerts: [{exp_labels, exp_annotations}]}.
 * *ok is false when the alerts differ (printed to r->out). */
static int check_expectation(struct runner *r, const yaml_node_t *item, const char *test_name,
                             int64_t start_ms, const struct replay_log *log, bool *ok)
{
    const yaml_node_t *tn = ydoc_map_get(&r->doc, item, "eval_time");
    const yaml_node_t *nn = ydoc_map_get(&r->doc, item, "alertname");
    const yaml_node_t *exp = ydoc_map_get(&r->doc, item, "exp_alerts");
    int64_t at_ms;
    const char *alertname, *time_text;
    if (!tn || !nn)
        return ydoc_fail(&r->doc, item, "alert_rule_test: each needs eval_time and alertname");
    if (want_duration(r, tn, "eval_time", &at_ms) || want_text(r, nn, "alertname", &alertname))
        return E_INVALID;
    time_text = ydoc_text(tn);
    if (exp && exp->type == YAML_SCALAR_NODE && !*ydoc_text(exp))
        exp = NULL; /* exp_alerts: (empty) is none expected */
    if (exp && want_kind(r, exp, "exp_alerts", YAML_SEQUENCE_NODE))
        return E_INVALID;
    size_t ngot;
    struct got_alert *got = alerts_at(log, alertname, start_ms + at_ms, &ngot);
    if (!got)
        return err_set(r->doc.e, E_NOMEM, "out of memory");
    struct buf missing;
    buf_init(&missing, 1 << 20);
    size_t nmissing = 0, nexpected = 0;
    static const char *const keys[] = {"exp_labels", "exp_annotations", NULL};
    int rc = 0;
    for (yaml_node_item_t *it = exp ? exp->data.sequence.items.start : NULL;
         exp && it < exp->data.sequence.items.top && rc == 0; it++) {
        const yaml_node_t *e = ydoc_node(&r->doc, *it);
        if (want_kind(r, e, "exp_alerts", YAML_MAPPING_NODE) ||
            known_keys(r, e, "exp_alerts", keys)) {
            rc = E_INVALID;
            break;
        }
        nexpected++;
        const yaml_node_t *ln = ydoc_map_get(&r->doc, e, "exp_labels");
        const yaml_node_t *an = ydoc_map_get(&r->doc, e, "exp_annotations");
        if ((ln && want_kind(r, ln, "exp_labels", YAML_MAPPING_NODE)) ||
            (an && want_kind(r, an, "exp_annotations", YAML_MAPPING_NODE))) {
            rc = E_INVALID;
            break;
        }
        json_t *want_labels = ln ? yaml_to_json(r, ln) : json_object();
        json_t *want_annotations = an ? yaml_to_json(r, an) : NULL;
        /* values are compared as text, the way labels are kept */
        const char *k;
        json_t *v;
        json_object_foreach(want_labels, k, v)
        {
            if (json_is_string(v))
                continue;
            char *t = json_dumps(v, JSON_ENCODE_ANY);
            json_object_set_new(want_labels, k, json_string(t ? t : ""));
            free(t);
        }
        char *want_key = labels_key(want_labels);
        char *want_ann =
            want_annotations ? json_dumps(want_annotations, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        bool found = false;
        for (size_t g = 0; g < ngot && !found; g++) {
            if (got[g].matched)
                continue;
            json_t *gl = json_loads(got[g].last->labels_json, 0, NULL);
            json_t *ga = json_loads(got[g].last->annotations_json, 0, NULL);
            char *got_key = gl ? labels_key(gl) : NULL;
            found = got_key && want_key && strcmp(got_key, want_key) == 0 &&
                    (!want_annotations || json_equal(ga, want_annotations));
            got[g].matched = found;
            free(got_key);
            json_decref(gl);
            json_decref(ga);
        }
        if (!found) {
            buf_printf(&missing, "    expected %s%s%s\n", want_key ? want_key : "?",
                       want_ann ? " annotations " : "", want_ann ? want_ann : "");
            nmissing++;
        }
        free(want_key);
        free(want_ann);
        json_decref(want_labels);
        json_decref(want_annotations);
    }
    size_t nextra = 0;
    for (size_t g = 0; g < ngot; g++)
        nextra += !got[g].matched;
    *ok = rc == 0 && nmissing == 0 && nextra == 0;
    if (rc == 0 && !*ok) {
        fprintf(r->out, "%s:%zu: test \"%s\": %s at %s:\n", r->doc.name, line_of(item), test_name,
                alertname, time_text);
        if (missing.len)
            fwrite(missing.data, 1, missing.len, r->out);
        else if (nexpected == 0)
            fprintf(r->out, "    expected no %s alert firing\n", alertname);
        for (size_t g = 0; g < ngot; g++)
            if (!got[g].matched) {
                json_t *gl = json_loads(got[g].last->labels_json, 0, NULL);
                char *got_key = gl ? labels_key(gl) : NULL;
                print_alert(r->out, "got     ", got_key ? got_key : got[g].last->labels_json,
                            got[g].last->annotations_json);
                free(got_key);
                json_decref(gl);
            }
        if (ngot == 0)
            fprintf(r->out, "    got      no %s alert firing\n", alertname);
        else if (nextra == 0)
            fprintf(r->out, "    (the other %zu firing matched)\n", ngot);
    }
    buf_release(&missing);
    free(got);
    return rc;
}

static int run_test(struct runner *r, const yaml_node_t *test, size_t index, int64_t file_start)
{
    static const char *const keys[] = {"name",       "start",           "interval", "input_series",
                                       "input_rows", "alert_rule_test", NULL};
    if (want_kind(r, test, "tests", YAML_MAPPING_NODE) || known_keys(r, test, "tests", keys))
        return E_INVALID;
    char name[256];
    const yaml_node_t *nn = ydoc_map_get(&r->doc, test, "name");
    snprintf(name, sizeof name, "%s", nn && ydoc_text(nn) ? ydoc_text(nn) : "");
    if (!name[0])
        snprintf(name, sizeof name, "#%zu", index + 1);
    int64_t start_ms = file_start, spacing_ms = DEFAULT_SPACING_MS;
    const yaml_node_t *sn = ydoc_map_get(&r->doc, test, "start");
    const yaml_node_t *in_node = ydoc_map_get(&r->doc, test, "interval");
    if (sn) {
        const char *s;
        if (want_text(r, sn, "start", &s))
            return E_INVALID;
        if (!time_parse_point(s, &start_ms))
            return ydoc_fail(&r->doc, sn, "start: '%s' is not a time (RFC 3339)", s);
    }
    if (in_node && want_duration(r, in_node, "interval", &spacing_ms))
        return E_INVALID;
    if (spacing_ms <= 0)
        return ydoc_fail(&r->doc, in_node, "interval: must be more than 0");
    const yaml_node_t *checks = ydoc_map_get(&r->doc, test, "alert_rule_test");
    if (!checks)
        return ydoc_fail(&r->doc, test, "test \"%s\": no alert_rule_test (what to check)", name);
    if (want_kind(r, checks, "alert_rule_test", YAML_SEQUENCE_NODE))
        return E_INVALID;
    /* the replay runs to the last eval_time */
    int64_t end_ms = start_ms;
    static const char *const check_keys[] = {"eval_time", "alertname", "exp_alerts", NULL};
    for (yaml_node_item_t *it = checks->data.sequence.items.start;
         it < checks->data.sequence.items.top; it++) {
        const yaml_node_t *c = ydoc_node(&r->doc, *it);
        const yaml_node_t *tn = ydoc_map_get(&r->doc, c, "eval_time");
        int64_t at_ms;
        if (want_kind(r, c, "alert_rule_test", YAML_MAPPING_NODE) ||
            known_keys(r, c, "alert_rule_test", check_keys))
            return E_INVALID;
        if (!tn)
            return ydoc_fail(&r->doc, c, "alert_rule_test: each needs eval_time and alertname");
        if (want_duration(r, tn, "eval_time", &at_ms))
            return E_INVALID;
        if (start_ms + at_ms > end_ms)
            end_ms = start_ms + at_ms;
    }
    struct test_input in = {0};
    int64_t last_ms = start_ms;
    const yaml_node_t *series = ydoc_map_get(&r->doc, test, "input_series");
    const yaml_node_t *rows = ydoc_map_get(&r->doc, test, "input_rows");
    int rc = series ? read_series(r, series, start_ms, spacing_ms, &in, &last_ms) : 0;
    if (rc == 0 && rows)
        rc = read_rows(r, rows, start_ms, &in, &last_ms);
    struct replay_log log = {0};
    if (rc == 0)
        rc = replay(r, &in, start_ms, end_ms > start_ms ? end_ms : start_ms + 1000, last_ms, &log);
    input_release(&in);
    bool all_ok = true;
    size_t nchecks = 0;
    for (yaml_node_item_t *it = checks->data.sequence.items.start;
         rc == 0 && it < checks->data.sequence.items.top; it++) {
        bool ok = true;
        rc = check_expectation(r, ydoc_node(&r->doc, *it), name, start_ms, &log, &ok);
        all_ok = all_ok && ok;
        nchecks++;
    }
    replay_log_release(&log);
    if (rc)
        return rc;
    r->report->tests++;
    r->report->checks += nchecks;
    if (!all_ok)
        r->report->failed++;
    else
        fprintf(r->out, "%s: test \"%s\": ok (%zu check%s)\n", r->doc.name, name, nchecks,
                nchecks == 1 ? "" : "s");
    return 0;
}

/* rule_files relative to the test file, as absolute paths joined by commas. */
static int read_rule_files(struct runner *r, const yaml_node_t *list, const char *dir)
{
    if (want_kind(r, list, "rule_files", YAML_SEQUENCE_NODE))
        return E_INVALID;
    size_t len = 0;
    for (yaml_node_item_t *it = list->data.sequence.items.start; it < list->data.sequence.items.top;
         it++) {
        const yaml_node_t *f = ydoc_node(&r->doc, *it);
        const char *name;
        if (want_text(r, f, "rule_files", &name))
            return E_INVALID;
        char joined[PATH_MAX * 2], path[PATH_MAX];
        snprintf(joined, sizeof joined, "%s%s%s", name[0] == '/' ? "" : dir,
                 name[0] == '/' ? "" : "/", name);
        if (!realpath(joined, path))
            return ydoc_fail(&r->doc, f, "rule_files: cannot read %s: %s", joined, strerror(errno));
        if (strchr(path, ','))
            return ydoc_fail(&r->doc, f, "rule_files: %s: a path with a comma is not usable", path);
        int n =
            snprintf(r->rule_files + len, sizeof r->rule_files - len, "%s%s", len ? "," : "", path);
        if (n < 0 || (size_t)n >= sizeof r->rule_files - len)
            return ydoc_fail(&r->doc, f, "rule_files: too many files");
        len += (size_t)n;
    }
    return 0;
}

int alert_rules_test(const char *path, const struct config *cfg, FILE *out,
                     struct alert_test_report *report, struct err *e)
{
    struct runner r = {.cfg = cfg, .out = out, .report = report};
    int rc = ydoc_load_file(&r.doc, path, e);
    const yaml_node_t *root = rc == 0 ? ydoc_root(&r.doc) : NULL;
    static const char *const keys[] = {"rule_files", "default_rules", "start", "tests", NULL};
    if (rc == 0 && (!root || root->type != YAML_MAPPING_NODE))
        rc = err_set(e, E_INVALID, "%s: expected a map with rule_files and tests", path);
    if (rc == 0)
        rc = known_keys(&r, root, "the test file", keys);
    const yaml_node_t *files = rc == 0 ? ydoc_map_get(&r.doc, root, "rule_files") : NULL;
    const yaml_node_t *defaults = rc == 0 ? ydoc_map_get(&r.doc, root, "default_rules") : NULL;
    const yaml_node_t *start = rc == 0 ? ydoc_map_get(&r.doc, root, "start") : NULL;
    const yaml_node_t *tests = rc == 0 ? ydoc_map_get(&r.doc, root, "tests") : NULL;
    if (rc == 0 && defaults) {
        const char *s = ydoc_text(defaults);
        if (!s || (strcmp(s, "true") != 0 && strcmp(s, "false") != 0))
            rc = ydoc_fail(&r.doc, defaults, "default_rules: expected true or false");
        else
            r.default_rules = s[0] == 't';
    }
    if (rc == 0 && !files && !r.default_rules)
        rc = ydoc_fail(&r.doc, root,
                       "no rule_files (and default_rules is not true): nothing "
                       "to test");
    if (rc == 0 && files) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(dir, sizeof dir, ".");
        rc = read_rule_files(&r, files, dir);
    }
    int64_t file_start = 0;
    time_parse_point(DEFAULT_START, &file_start);
    if (rc == 0 && start) {
        const char *s = ydoc_text(start);
        if (!s || !time_parse_point(s, &file_start))
            rc = ydoc_fail(&r.doc, start, "start: '%s' is not a time (RFC 3339)", s ? s : "");
    }
    if (rc == 0 && !tests)
        rc = ydoc_fail(&r.doc, root, "no tests");
    if (rc == 0)
        rc = want_kind(&r, tests, "tests", YAML_SEQUENCE_NODE);
    if (rc == 0) {
        /* a bad rule file is its own error, before any test */
        struct config check = *cfg;
        snprintf(check.alert_rule_files, sizeof check.alert_rule_files, "%s", r.rule_files);
        snprintf(check.alert_default_rules, sizeof check.alert_default_rules, "%s",
                 r.default_rules ? "on" : "off");
        struct alert_rules rules;
        rc = alert_rules_load_config(&rules, &check, e);
        if (rc == 0)
            alert_rules_free(&rules);
    }
    if (rc == 0 && !(r.fp = config_fingerprint_rules(cfg, e)))
        rc = e->code ? e->code : E_INVALID;
    size_t index = 0;
    for (yaml_node_item_t *it = rc == 0 ? tests->data.sequence.items.start : NULL;
         rc == 0 && it < tests->data.sequence.items.top; it++, index++)
        rc = run_test(&r, ydoc_node(&r.doc, *it), index, file_start);
    fingerprint_rules_free(&r.fp);
    ydoc_release(&r.doc);
    return rc;
}
