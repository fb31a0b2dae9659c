/*
 * One evaluation of one alert rule: the label sets and values its data gives now.
 *
 * A threshold rule on system_metrics reads each matching series' raw samples of the window
 * (query_series_window: the same matchers and storage as the series API). On an event table it
 * is one aggregate query grouped by the rule's `by` columns, its filter turned into bound
 * conditions; rows that stand for several events (api_usage's count) weigh as many. An SQL
 * rule is the user's read-only query with :window_start and :now bound, its columns labels and
 * `value` the value.
 */
#include "alert/eval.h"
#include "query/query.h"
#include "store/store.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILTER_TERMS_MAX 16

bool eval_compare(enum alert_op op, double value, double threshold)
{
    switch (op) {
    case ALERT_GT:
        return value > threshold;
    case ALERT_GE:
        return value >= threshold;
    case ALERT_LT:
        return value < threshold;
    case ALERT_LE:
        return value <= threshold;
    case ALERT_EQ:
        return value == threshold;
    default:
        return value != threshold;
    }
}

void eval_result_release(struct eval_result *res)
{
    for (size_t i = 0; i < res->n; i++)
        free(res->samples[i].labels_json);
    free(res->samples);
    memset(res, 0, sizeof *res);
}

/* Takes labels (an object; its reference is stolen) as one sample. */
static int add_sample(struct eval_result *res, json_t *labels, const struct value *v, struct err *e)
{
    if (res->n == res->cap) {
        size_t cap = res->cap ? 2 * res->cap : 16;
        struct eval_sample *more = realloc(res->samples, cap * sizeof *more);
        if (!more) {
            json_decref(labels);
            return err_set(e, E_NOMEM, "out of memory");
        }
        res->samples = more;
        res->cap = cap;
    }
    char *text = json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(labels);
    if (!text)
        return err_set(e, E_NOMEM, "out of memory");
    struct eval_sample *s = &res->samples[res->n++];
    s->labels_json = text;
    s->has_value = v && (v->type == VAL_INT || v->type == VAL_REAL);
    s->value = !s->has_value ? NAN : v->type == VAL_INT ? (double)v->i : v->d;
    return 0;
}

/* A value as label text: numbers as the answers write them, NULL as nothing. */
static json_t *label_text(const struct value *v)
{
    char num[QUERY_NUMBER_TEXT_MAX];
    switch (v->type) {
    case VAL_TEXT:
        return json_stringn(v->s, v->len);
    case VAL_INT:
        snprintf(num, sizeof num, "%lld", (long long)v->i);
        return json_string(num);
    case VAL_REAL:
        if (!isfinite(v->d))
            return NULL;
        query_number_text(v->d, num);
        return json_string(num);
    default:
        return NULL;
    }
}

/* ---- system_metrics ------------------------------------------------------------------------ */

static int eval_series(struct store *s, const struct config *cfg, const struct alert_rule *r,
                       int64_t now_ms, struct eval_result *out, struct err *e)
{
    struct series_request req = {.table = r->table,
                                 .metric = r->metric,
                                 .filter = r->filter,
                                 .has_from = true,
                                 .has_to = true,
                                 .from_ms = now_ms - r->window_ms + 1,
                                 .to_ms = now_ms + 1,
                                 .agg = alert_agg_name(r->agg)};
    struct store_result res;
    int rc = query_series_window(s, cfg, &req, &res, e);
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        json_t *labels =
            row[2].type == VAL_TEXT ? json_loadb(row[2].s, row[2].len, 0, NULL) : json_object();
        if (!json_is_object(labels)) {
            json_decref(labels);
            labels = json_object();
        }
        json_object_set_new(labels, "host", label_text(&row[0]));
        json_object_set_new(labels, "component", label_text(&row[1]));
        if (row[3].type != VAL_NULL)
            rc = add_sample(out, labels, &row[3], e);
        else
            json_decref(labels);
    }
    store_result_release(&res);
    return rc;
}

/* ---- event tables ---------------------------------------------------------------------------- */

/* The aggregate over the rows of the window; w weighs a row as the events it stands for. */
static void agg_sql(const struct alert_rule *r, const char *w, struct buf *sql)
{
    const char *m = r->metric;
    double window_s = (double)r->window_ms / 1000;
    switch (r->agg) {
    case ALERT_AVG:
        buf_printf(sql, "sum(%s * %s) * 1.0 / sum(CASE WHEN %s IS NOT NULL THEN %s END)", m, w, m,
                   w);
        break;
    case ALERT_MIN:
    case ALERT_MAX:
    case ALERT_SUM:
        buf_printf(sql, "%s(%s)", alert_agg_name(r->agg), m);
        break;
    case ALERT_COUNT:
    case ALERT_RATE:
        if (*m)
            buf_printf(sql, "coalesce(sum(CASE WHEN %s IS NOT NULL THEN %s END), 0)", m, w);
        else
            buf_printf(sql, "coalesce(sum(%s), 0)", w);
        if (r->agg == ALERT_RATE) /* a REAL divisor: the sum is an integer */
            buf_printf(sql, " * 1.0 / %.17g", window_s);
        break;
    default: {
        int p = r->agg == ALERT_P50 ? 50 : r->agg == ALERT_P95 ? 95 : 99;
        buf_printf(sql, "percentile(%s, %d, %s)", m, p, w);
    }
    }
}

static int eval_events(struct store *s, const struct config *cfg, const struct alert_rule *r,
                       int64_t now_ms, struct eval_result *out, struct err *e)
{
    const struct table *t = schema_table(r->table);
    struct query_filter_term terms[FILTER_TERMS_MAX];
    size_t nterms = 0;
    int rc = query_filter_split(r->filter, terms, FILTER_TERMS_MAX, &nterms, e);
    if (rc)
        return rc;
    struct buf sql;
    buf_init(&sql, 1 << 16);
    buf_append(&sql, "SELECT ", 7);
    for (size_t i = 0; i < r->nby; i++) /* names checked against the schema when loaded */
        buf_printf(&sql, "%s, ", r->by[i]);
    agg_sql(r, schema_column(t, "count") >= 0 ? "coalesce(count, 1)" : "1", &sql);
    buf_printf(&sql, " AS value FROM %s WHERE ts >= :window_start AND ts <= :now", t->name);
    struct store_param params[FILTER_TERMS_MAX + 2];
    char names[FILTER_TERMS_MAX][24];
    for (size_t i = 0; i < nterms; i++) {
        const char *op = terms[i].op;
        snprintf(names[i], sizeof names[i], "f%zu", i);
        /* the column compared as it is (an integer column reads '500' as 500); a NULL is the
         * empty string, as a missing label is */
        if (op[1] == '~')
            buf_printf(&sql, " AND %scoalesce(%s, '') REGEXP :f%zu", op[0] == '!' ? "NOT " : "",
                       terms[i].key, i);
        else
            buf_printf(&sql, " AND %scoalesce(%s = :f%zu, :f%zu = '')", op[0] == '!' ? "NOT " : "",
                       terms[i].key, i, i);
        params[i] = (struct store_param){names[i], true, 0, terms[i].value};
    }
    if (r->nby) {
        buf_append(&sql, " GROUP BY ", 10);
        for (size_t i = 0; i < r->nby; i++)
            buf_printf(&sql, "%s%s", i ? ", " : "", r->by[i]);
    }
    params[nterms] =
        (struct store_param){"window_start", false, (double)(now_ms - r->window_ms + 1), NULL};
    params[nterms + 1] = (struct store_param){"now", false, (double)now_ms, NULL};
    struct store_query q = {sql.data, params, nterms + 2, cfg->query_timeout_ms, 100000, false};
    struct store_result res;
    struct store_reader *rd = store_reader_get(s);
    rc = store_reader_query(rd, &q, &res, e);
    store_reader_put(s, rd);
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        if (row[r->nby].type == VAL_NULL)
            continue; /* no rows in the window (an aggregate of nothing) */
        json_t *labels = json_object();
        for (size_t k = 0; k < r->nby; k++) {
            json_t *v = label_text(&row[k]);
            json_object_set_new(labels, r->by[k], v ? v : json_string(""));
        }
        rc = add_sample(out, labels, &row[r->nby], e);
    }
    store_result_release(&res);
    buf_release(&sql);
    return rc;
}

/* ---- SQL rules ------------------------------------------------------------------------------- */

static int eval_sql(struct store *s, const struct config *cfg, const struct alert_rule *r,
                    int64_t now_ms, struct eval_result *out, struct err *e)
{
    /* window_ms and now_ms are what the views read: a view in a rule covers the rule's window */
    struct store_param params[] = {
        {"window_start", false, (double)(now_ms - r->window_ms + 1), NULL},
        {"now", false, (double)now_ms, NULL},
        {"window_ms", false, (double)r->window_ms, NULL},
        {"now_ms", false, (double)now_ms, NULL},
    };
    struct store_query q = {r->sql, params, 4, cfg->query_timeout_ms, 100000, true};
    struct store_result res;
    struct store_reader *rd = store_reader_get(s);
    int rc = store_reader_query(rd, &q, &res, e);
    store_reader_put(s, rd);
    int value_col = -1;
    for (size_t c = 0; c < res.ncols; c++)
        if (strcmp(res.columns[c], "value") == 0)
            value_col = (int)c;
    if (rc == 0 && value_col < 0 && r->has_threshold)
        rc = err_set(e, E_INVALID, "rule %s: the query returns no column named value", r->name);
    for (size_t i = 0; rc == 0 && i < res.nrows; i++) {
        const struct value *row = res.values + i * res.ncols;
        json_t *labels = json_object();
        for (size_t c = 0; c < res.ncols; c++) {
            json_t *v = (int)c == value_col ? NULL : label_text(&row[c]);
            if (v)
                json_object_set_new(labels, res.columns[c], v);
        }
        rc = add_sample(out, labels, value_col >= 0 ? &row[value_col] : NULL, e);
    }
    store_result_release(&res);
    return rc;
}

int eval_rule(struct store *s, const struct config *cfg, const struct alert_rule *r, int64_t now_ms,
              struct eval_result *out, struct err *e)
{
    if (r->is_sql)
        return eval_sql(s, cfg, r, now_ms, out, e);
    const struct table *t = schema_table(r->table);
    if (!t)
        return err_set(e, E_INVALID, "rule %s: table %s does not exist", r->name, r->table);
    return t->kind == TABLE_SERIES ? eval_series(s, cfg, r, now_ms, out, e)
                                   : eval_events(s, cfg, r, now_ms, out, e);
}
