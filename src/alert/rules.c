/*
 * Alert rule files: YAML groups shaped like Prometheus rule files, read and checked whole.
 *
 * A rule that does not make sense is refused with the file and line of the key at fault, so
 * `opsdb alerts check` and a reload say exactly what to fix; a reload that fails keeps the rules
 * that ran before. What a rule means is documented in docs/alerts.md.
 */
#include "alert/alert.h"
#include "core/ydoc.h"
#include "query/query.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RULES_MAX 10000
#define DEFAULT_WINDOW_MS (5 * 60 * 1000LL)
#define MAX_WINDOW_MS (31 * 86400000LL)

static const char *const agg_names[] = {"avg",  "min", "max", "sum", "count",
                                        "rate", "p50", "p95", "p99", NULL};
static const char *const op_names[] = {">", ">=", "<", "<=", "==", "!=", NULL};

const char *alert_agg_name(enum alert_agg a)
{
    return agg_names[a];
}

const char *alert_op_name(enum alert_op op)
{
    return op_names[op];
}

static size_t line_of(const yaml_node_t *n)
{
    return n->start_mark.line + 1;
}

static int want_text(struct ydoc *p, const yaml_node_t *v, const char *key, const char **out)
{
    *out = ydoc_text(v);
    if (!*out)
        return ydoc_fail(p, v, "%s: expected a value, not a %s", key,
                         v->type == YAML_MAPPING_NODE ? "map" : "list");
    return 0;
}

static int want_copy(struct ydoc *p, const yaml_node_t *v, const char *key, char *out, size_t size)
{
    const char *s;
    if (want_text(p, v, key, &s))
        return p->e->code;
    if (strlen(s) >= size)
        return ydoc_fail(p, v, "%s: longer than %zu bytes", key, size - 1);
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int want_duration(struct ydoc *p, const yaml_node_t *v, const char *key, int64_t *ms)
{
    const char *s;
    if (want_text(p, v, key, &s))
        return p->e->code;
    if (!time_parse_duration(s, ms) || *ms < 0)
        return ydoc_fail(p, v, "%s: '%s' is not a duration (like 30s, 5m, 1h)", key, s);
    return 0;
}

static int want_number(struct ydoc *p, const yaml_node_t *v, const char *key, double *out)
{
    const char *s;
    if (want_text(p, v, key, &s))
        return p->e->code;
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(*out))
        return ydoc_fail(p, v, "%s: '%s' is not a number", key, s);
    return 0;
}

static int want_choice(struct ydoc *p, const yaml_node_t *v, const char *key,
                       const char *const *names, int *out)
{
    const char *s;
    if (want_text(p, v, key, &s))
        return p->e->code;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0) {
            *out = i;
            return 0;
        }
    char list[200] = "";
    for (size_t i = 0, len = 0; names[i] && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", names[i]);
    return ydoc_fail(p, v, "%s: '%s' is not one of %s", key, s, list);
}

static bool valid_name(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

/* labels or annotations: a map of names to text, kept as a JSON object's text */
static int want_map(struct ydoc *p, const yaml_node_t *v, const char *key, bool labels, char **out)
{
    if (v->type != YAML_MAPPING_NODE)
        return ydoc_fail(p, v, "%s: expected a map of names to values", key);
    json_t *obj = json_object();
    int rc = 0;
    for (yaml_node_pair_t *kv = v->data.mapping.pairs.start; kv < v->data.mapping.pairs.top; kv++) {
        const yaml_node_t *kn = ydoc_node(p, kv->key), *vn = ydoc_node(p, kv->value);
        const char *name = ydoc_text(kn), *val = ydoc_text(vn);
        if (!name || !valid_name(name)) {
            rc = ydoc_fail(p, kn, "%s: '%s' is not a valid name (letters, digits, _)", key,
                           name ? name : "?");
            break;
        }
        if (!val) {
            rc = ydoc_fail(p, vn, "%s.%s: expected a value", key, name);
            break;
        }
        if (labels && strcmp(name, "alertname") == 0) {
            rc = ydoc_fail(p, kn, "%s: alertname is the rule's name and cannot be set", key);
            break;
        }
        json_object_set_new(obj, name, json_string(val));
    }
    if (rc == 0) {
        free(*out);
        *out = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
        if (!*out)
            rc = err_set(p->e, E_NOMEM, "out of memory");
    }
    json_decref(obj);
    return rc;
}

static int want_by(struct ydoc *p, const yaml_node_t *v, struct alert_rule *r)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(p, v, "by: expected a list of columns");
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        if (r->nby >= ALERT_BY_MAX)
            return ydoc_fail(p, v, "by: at most %d columns", ALERT_BY_MAX);
        if (want_copy(p, ydoc_node(p, *it), "by", r->by[r->nby], sizeof r->by[0]))
            return p->e->code;
        r->nby++;
    }
    return 0;
}

/* "3/5": fire when the condition held in 3 of the last 5 evaluations */
static int want_n_of_m(struct ydoc *p, const yaml_node_t *v, struct alert_rule *r)
{
    const char *s;
    if (want_text(p, v, "n_of_m", &s))
        return p->e->code;
    int n = 0, m = 0, used = 0;
    if (sscanf(s, "%d/%d%n", &n, &m, &used) != 2 || s[used] || n < 1 || m < n || m > 100)
        return ydoc_fail(p, v, "n_of_m: '%s' is not N/M with 1 <= N <= M <= 100 (like 3/5)", s);
    r->n_of = n;
    r->m_of = m;
    return 0;
}

/* ---- one rule ---------------------------------------------------------------------------- */

/* The keys a rule gave, with their nodes: a check of what keys say together names the line of
 * the key at fault. */
struct seen_keys {
    const char *name[32];
    const yaml_node_t *node[32];
    size_t n;
};

/* The node of key name, or fallback when the rule does not give it. */
static const yaml_node_t *key_at(const struct seen_keys *k, const char *name,
                                 const yaml_node_t *fallback)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->name[i], name) == 0)
            return k->node[i];
    return fallback;
}

static int rule_key(struct ydoc *p, struct alert_rule *r, const char *key,
                    const yaml_node_t *key_node, const yaml_node_t *v)
{
    int choice;
    if (strcmp(key, "alert") == 0)
        return want_copy(p, v, key, r->name, sizeof r->name);
    if (strcmp(key, "table") == 0)
        return want_copy(p, v, key, r->table, sizeof r->table);
    if (strcmp(key, "metric") == 0)
        return want_copy(p, v, key, r->metric, sizeof r->metric);
    if (strcmp(key, "filter") == 0)
        return want_copy(p, v, key, r->filter, sizeof r->filter);
    if (strcmp(key, "by") == 0)
        return want_by(p, v, r);
    if (strcmp(key, "sql") == 0) {
        const char *s;
        if (want_text(p, v, key, &s))
            return p->e->code;
        free(r->sql);
        r->sql = strdup(s);
        r->is_sql = true;
        return r->sql ? 0 : err_set(p->e, E_NOMEM, "out of memory");
    }
    if (strcmp(key, "aggregation") == 0) {
        if (want_choice(p, v, key, agg_names, &choice))
            return p->e->code;
        r->agg = (enum alert_agg)choice;
        return 0;
    }
    if (strcmp(key, "op") == 0) {
        if (want_choice(p, v, key, op_names, &choice))
            return p->e->code;
        r->op = (enum alert_op)choice;
        return 0;
    }
    if (strcmp(key, "threshold") == 0)
        return want_number(p, v, key, &r->threshold);
    if (strcmp(key, "resolve_threshold") == 0)
        return want_number(p, v, key, &r->resolve_threshold);
    if (strcmp(key, "window") == 0)
        return want_duration(p, v, key, &r->window_ms);
    if (strcmp(key, "for") == 0)
        return want_duration(p, v, key, &r->for_ms);
    if (strcmp(key, "keep_firing_for") == 0)
        return want_duration(p, v, key, &r->keep_firing_for_ms);
    if (strcmp(key, "n_of_m") == 0)
        return want_n_of_m(p, v, r);
    if (strcmp(key, "labels") == 0)
        return want_map(p, v, key, true, &r->labels_json);
    if (strcmp(key, "annotations") == 0)
        return want_map(p, v, key, false, &r->annotations_json);
    return ydoc_fail(p, key_node,
                     "unknown key '%s' in a rule (alert, table, metric, filter, by, aggregation, "
                     "window, op, threshold, resolve_threshold, for, keep_firing_for, n_of_m, sql, "
                     "labels, annotations)",
                     key);
}

/* What the keys cannot say alone: the kind, the table and its columns, hysteresis. */
static int check_threshold_rule(struct ydoc *p, const yaml_node_t *at, const struct seen_keys *k,
                                struct alert_rule *r)
{
    const struct table *t = schema_table(r->table);
    if (!t || (t->kind != TABLE_SERIES && t->kind != TABLE_EVENTS))
        return ydoc_fail(p, key_at(k, "table", at),
                         "rule %s: table '%s' is not a table rules can watch (system_metrics "
                         "or an event table such as api_usage)",
                         r->name, r->table);
    struct query_filter_term terms[16];
    size_t nterms;
    if (query_filter_split(r->filter, terms, 16, &nterms, p->e) != 0)
        return ydoc_fail(p, key_at(k, "filter", at), "rule %s: %s", r->name, p->e->msg);
    if (t->kind == TABLE_SERIES) {
        if (!*r->metric)
            return ydoc_fail(p, at, "rule %s: metric is required on %s", r->name, r->table);
        if (r->nby)
            return ydoc_fail(p, key_at(k, "by", at),
                             "rule %s: by is for event tables; %s makes one alert per series",
                             r->name, r->table);
        return 0;
    }
    if (*r->metric) {
        int c = schema_column(t, r->metric);
        if (c < 0 || (t->columns[c].type != COL_INT && t->columns[c].type != COL_REAL))
            return ydoc_fail(p, key_at(k, "metric", at),
                             "rule %s: metric '%s' is not a numeric column of %s", r->name,
                             r->metric, r->table);
    } else if (r->agg != ALERT_COUNT && r->agg != ALERT_RATE) {
        return ydoc_fail(p, at, "rule %s: metric (a numeric column of %s) is required for %s",
                         r->name, r->table, agg_names[r->agg]);
    }
    for (size_t i = 0; i < r->nby; i++)
        if (schema_column(t, r->by[i]) < 0)
            return ydoc_fail(p, key_at(k, "by", at), "rule %s: by: '%s' is not a column of %s",
                             r->name, r->by[i], r->table);
    for (size_t i = 0; i < nterms; i++)
        if (schema_column(t, terms[i].key) < 0)
            return ydoc_fail(p, key_at(k, "filter", at),
                             "rule %s: filter: '%s' is not a column of %s", r->name, terms[i].key,
                             r->table);
    return 0;
}

static int check_rule(struct ydoc *p, const yaml_node_t *at, const struct seen_keys *k,
                      struct alert_rule *r)
{
    const yaml_node_t *threshold = key_at(k, "threshold", NULL);
    const yaml_node_t *resolve = key_at(k, "resolve_threshold", NULL);
    if (!*r->name)
        return ydoc_fail(p, at, "a rule without alert: (its name)");
    if (!valid_name(r->name))
        return ydoc_fail(p, at, "alert: '%s' is not a valid name (letters, digits, _)", r->name);
    if (r->is_sql == (*r->table != '\0'))
        return ydoc_fail(
            p, at, "rule %s: give either table (a threshold rule) or sql (an SQL rule)", r->name);
    if (r->is_sql && (*r->metric || *r->filter || r->nby))
        return ydoc_fail(p, at, "rule %s: metric, filter and by are for threshold rules, not sql",
                         r->name);
    if (!r->is_sql && !threshold)
        return ydoc_fail(p, at, "rule %s: threshold is required", r->name);
    if (r->window_ms < 1000 || r->window_ms > MAX_WINDOW_MS)
        return ydoc_fail(p, key_at(k, "window", at), "rule %s: window must be between 1s and 31d",
                         r->name);
    if (!resolve)
        r->resolve_threshold = r->threshold;
    else if (!threshold)
        return ydoc_fail(p, resolve, "rule %s: resolve_threshold needs a threshold", r->name);
    bool above = r->op == ALERT_GT || r->op == ALERT_GE,
         below = r->op == ALERT_LT || r->op == ALERT_LE;
    if (resolve && !above && !below)
        return ydoc_fail(p, resolve, "rule %s: resolve_threshold needs op >, >=, < or <=", r->name);
    if (resolve && ((above && r->resolve_threshold > r->threshold) ||
                    (below && r->resolve_threshold < r->threshold)))
        return ydoc_fail(p, resolve,
                         "rule %s: resolve_threshold %g must be on the quiet side of threshold %g "
                         "(%s it for op %s)",
                         r->name, r->resolve_threshold, r->threshold,
                         above ? "at most" : "at least", op_names[r->op]);
    r->has_threshold = threshold != NULL;
    return r->is_sql ? 0 : check_threshold_rule(p, at, k, r);
}

static int parse_rule(struct ydoc *p, const yaml_node_t *n, const char *group, int64_t interval_ms,
                      struct alert_rule *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->group, sizeof r->group, "%s", group);
    snprintf(r->file, sizeof r->file, "%.*s", (int)sizeof r->file - 1, p->name);
    r->line = (int)line_of(n);
    r->interval_ms = interval_ms;
    r->window_ms = DEFAULT_WINDOW_MS;
    r->agg = ALERT_AVG;
    r->op = ALERT_GT;
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(p, n, "a rule must be a map (alert: ..., table: ... or sql: ...)");
    struct seen_keys k = {0};
    for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
        const yaml_node_t *key_node = ydoc_node(p, kv->key);
        const char *key = ydoc_text(key_node);
        if (!key)
            return ydoc_fail(p, key_node, "rule keys must be text");
        if (key_at(&k, key, NULL))
            return ydoc_fail(p, key_node, "%s given twice in one rule", key);
        if (k.n < sizeof k.name / sizeof k.name[0]) {
            k.name[k.n] = key;
            k.node[k.n++] = key_node;
        }
        if (rule_key(p, r, key, key_node, ydoc_node(p, kv->value)))
            return p->e->code;
    }
    return check_rule(p, n, &k, r);
}

/* ---- groups and files -------------------------------------------------------------------- */

static int add_rule(struct alert_rules *rs, size_t *cap, struct ydoc *p, const yaml_node_t *n,
                    const char *group, int64_t interval_ms)
{
    if (rs->n >= RULES_MAX)
        return ydoc_fail(p, n, "more than %d rules", RULES_MAX);
    if (rs->n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        struct alert_rule *more = realloc(rs->rules, c * sizeof *more);
        if (!more)
            return err_set(p->e, E_NOMEM, "out of memory");
        rs->rules = more;
        *cap = c;
    }
    struct alert_rule *r = &rs->rules[rs->n];
    int rc = parse_rule(p, n, group, interval_ms, r);
    if (rc == 0 && !r->labels_json)
        r->labels_json = strdup("{}");
    if (rc == 0 && !r->annotations_json)
        r->annotations_json = strdup("{}");
    if (rc == 0 && (!r->labels_json || !r->annotations_json))
        rc = err_set(p->e, E_NOMEM, "out of memory");
    rs->n++; /* freed with the set, whole or not */
    return rc;
}

static int parse_group(struct alert_rules *rs, size_t *cap, struct ydoc *p, const yaml_node_t *g,
                       int64_t default_interval_ms)
{
    if (g->type != YAML_MAPPING_NODE)
        return ydoc_fail(p, g, "a group must be a map (name, interval, rules)");
    const char *name = NULL;
    int64_t interval_ms = default_interval_ms;
    const yaml_node_t *rules = NULL;
    for (yaml_node_pair_t *kv = g->data.mapping.pairs.start; kv < g->data.mapping.pairs.top; kv++) {
        const char *key = ydoc_text(ydoc_node(p, kv->key));
        const yaml_node_t *v = ydoc_node(p, kv->value);
        if (key && strcmp(key, "name") == 0) {
            if (want_text(p, v, key, &name))
                return p->e->code;
        } else if (key && strcmp(key, "interval") == 0) {
            if (want_duration(p, v, key, &interval_ms))
                return p->e->code;
            if (interval_ms < 1000)
                return ydoc_fail(p, v, "interval: at least 1s");
        } else if (key && strcmp(key, "rules") == 0) {
            rules = v;
        } else {
            return ydoc_fail(p, ydoc_node(p, kv->key),
                             "unknown key '%s' in a group (name, interval, rules)",
                             key ? key : "?");
        }
    }
    if (!name || !*name)
        return ydoc_fail(p, g, "a group without name:");
    if (strlen(name) >= sizeof rs->rules[0].group)
        return ydoc_fail(p, g, "group name longer than %zu bytes", sizeof rs->rules[0].group - 1);
    for (size_t i = 0; i < rs->ngroups; i++)
        if (strcmp(rs->groups[i], name) == 0)
            return ydoc_fail(p, g, "group '%s' is defined twice", name);
    char **more = realloc(rs->groups, (rs->ngroups + 1) * sizeof *more);
    if (!more || !(more[rs->ngroups] = strdup(name))) {
        if (more)
            rs->groups = more;
        return err_set(p->e, E_NOMEM, "out of memory");
    }
    rs->groups = more;
    rs->ngroups++;
    if (!rules || rules->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(p, rules ? rules : g, "group %s: rules: expected a list of rules", name);
    for (yaml_node_item_t *it = rules->data.sequence.items.start;
         it < rules->data.sequence.items.top; it++)
        if (add_rule(rs, cap, p, ydoc_node(p, *it), name, interval_ms))
            return p->e->code;
    return 0;
}

static int parse_document(struct alert_rules *rs, size_t *cap, struct ydoc *p,
                          int64_t default_interval_ms)
{
    yaml_node_t *root = ydoc_root(p);
    if (!root)
        return 0; /* an empty file: no groups */
    if (root->type != YAML_MAPPING_NODE)
        return ydoc_fail(p, root, "expected a map with groups: [...]");
    for (yaml_node_pair_t *kv = root->data.mapping.pairs.start; kv < root->data.mapping.pairs.top;
         kv++) {
        const char *key = ydoc_text(ydoc_node(p, kv->key));
        const yaml_node_t *v = ydoc_node(p, kv->value);
        if (!key || strcmp(key, "groups") != 0)
            return ydoc_fail(p, ydoc_node(p, kv->key),
                             "unknown key '%s' (a rule file holds groups:)", key ? key : "?");
        if (v->type != YAML_SEQUENCE_NODE)
            return ydoc_fail(p, v, "groups: expected a list of groups");
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++)
            if (parse_group(rs, cap, p, ydoc_node(p, *it), default_interval_ms))
                return p->e->code;
    }
    return 0;
}

/* Reads one rule file, or a text (path NULL) that messages call name. */
static int load_one(struct alert_rules *rs, size_t *cap, const char *path, const char *name,
                    const char *text, int64_t default_interval_ms, struct err *e)
{
    struct ydoc d;
    int rc = path ? ydoc_load_file(&d, path, e) : ydoc_load_text(&d, name, text, e);
    if (rc == 0)
        rc = parse_document(rs, cap, &d, default_interval_ms);
    ydoc_release(&d);
    return rc;
}

int alert_rules_load(struct alert_rules *out, const char *files, const char *base_dir,
                     int64_t default_interval_ms, struct err *e)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    int rc = 0;
    const char *p = files ? files : "";
    while (rc == 0 && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[512], path[sizeof name];
        while (len && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len >= sizeof name) {
            rc = err_set(e, E_INVALID, "alerting.rule_files: a path is longer than %zu bytes",
                         sizeof name - 1);
            break;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        if (len) {
            bool relative = name[0] != '/' && base_dir && *base_dir;
            int n = snprintf(path, sizeof path, "%s%s%s", relative ? base_dir : "",
                             relative ? "/" : "", name);
            rc = n < 0 || (size_t)n >= sizeof path
                     ? err_set(e, E_INVALID, "rule file path %s is longer than %zu bytes", name,
                               sizeof path - 1)
                     : load_one(out, &cap, path, NULL, NULL, default_interval_ms, e);
        }
        p = comma ? comma + 1 : p + strlen(p);
    }
    if (rc)
        alert_rules_free(out);
    return rc;
}

int alert_rules_load_text(struct alert_rules *out, const char *name, const char *text,
                          int64_t default_interval_ms, struct err *e)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    return load_one(out, &cap, NULL, name, text, default_interval_ms, e);
}

void alert_rules_free(struct alert_rules *r)
{
    for (size_t i = 0; i < r->ngroups; i++)
        free(r->groups[i]);
    free(r->groups);
    for (size_t i = 0; i < r->n; i++) {
        free(r->rules[i].sql);
        free(r->rules[i].labels_json);
        free(r->rules[i].annotations_json);
    }
    free(r->rules);
    memset(r, 0, sizeof *r);
}

static bool has_group(const struct alert_rules *rs, const char *group)
{
    for (size_t i = 0; i < rs->ngroups; i++)
        if (strcmp(rs->groups[i], group) == 0)
            return true;
    return false;
}

int alert_rules_load_config(struct alert_rules *out, const struct config *cfg, struct err *e)
{
    char dir[sizeof cfg->config_path];
    snprintf(dir, sizeof dir, "%s", cfg->config_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        dir[0] = '\0';
    int rc = alert_rules_load(out, cfg->alert_rule_files, dir, cfg->alert_interval_ms, e);
    if (rc || strcmp(cfg->alert_default_rules, "on") != 0)
        return rc;
    struct alert_rules defaults = {0};
    size_t cap = 0;
    rc = load_one(&defaults, &cap, NULL, "<default rules>", alert_default_rules(),
                  cfg->alert_interval_ms, e);
    /* the default groups first, but for those a user group of the same name replaces */
    size_t keep = 0;
    for (size_t i = 0; rc == 0 && i < defaults.n; i++)
        keep += !has_group(out, defaults.rules[i].group);
    struct alert_rules all = {0};
    if (rc == 0 && (all.rules = calloc(keep + out->n + 1, sizeof *all.rules)) == NULL)
        rc = err_set(e, E_NOMEM, "out of memory");
    if (rc) {
        alert_rules_free(&defaults);
        alert_rules_free(out);
        return rc;
    }
    for (size_t i = 0; i < defaults.n; i++) {
        if (has_group(out, defaults.rules[i].group))
            continue;
        all.rules[all.n++] = defaults.rules[i];
        memset(&defaults.rules[i], 0, sizeof defaults.rules[i]); /* moved */
    }
    if (out->n)
        memcpy(all.rules + all.n, out->rules, out->n * sizeof *out->rules);
    all.n += out->n;
    all.groups = out->groups; /* the user's: what a later merge would compare with */
    all.ngroups = out->ngroups;
    free(out->rules);
    alert_rules_free(&defaults);
    *out = all;
    return 0;
}
