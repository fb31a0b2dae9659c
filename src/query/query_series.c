/*
 * Series queries: the samples of one metric, selected by label matchers, bucketed by a step and
 * aggregated — what a chart or an alert rule asks for. The answer comes from the coarsest rollup
 * whose buckets divide the step (exact by construction: every stored bucket lies inside one
 * output bucket), or from the raw samples when none does.
 */
#include "query/query_int.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERIES_MAX 10000   /* series one query may return */
#define POINTS_MAX 2000000 /* buckets over all series one query may return */
#define DEFAULT_RANGE_MS (3600 * 1000LL)
#define TARGET_BUCKETS 300

struct series {
    int64_t id;
    const char *host, *component, *labels; /* in the candidates result */
    size_t first_point, npoints;
};

struct series_answer {
    bool window; /* one bucket over [from_ms, to_ms) of raw samples, for alert rules */
    const char *table, *metric, *agg, *resolution;
    int64_t step_ms, from_ms, to_ms;
    struct series *series; /* sorted by host, component, labels */
    size_t nseries;
    int64_t *ts;
    double *values;
    size_t npoints;
    struct store_result candidates, data;
};

/* ---- parameters ---------------------------------------------------------------------------- */

/* the first six answer from rollups; the others need raw samples, and only window aggregates
 * (alert rules) take them */
static const char *const aggs[] = {"avg",  "min", "max", "sum", "count", "last",
                                   "rate", "p50", "p95", "p99", NULL};
enum {
    AGG_AVG,
    AGG_MIN,
    AGG_MAX,
    AGG_SUM,
    AGG_COUNT,
    AGG_LAST,
    AGG_RATE,
    AGG_P50,
    AGG_P95,
    AGG_P99
};

/* Rounds an automatic step up to whole seconds, minutes or hours, so rollups can answer. */
static int64_t auto_step(int64_t range_ms)
{
    int64_t step = (range_ms + TARGET_BUCKETS - 1) / TARGET_BUCKETS;
    int64_t unit = step >= 3600000 ? 3600000 : step >= 60000 ? 60000 : 1000;
    return (step + unit - 1) / unit * unit;
}

static int64_t floor_to(int64_t v, int64_t step)
{
    int64_t r = v % step;
    return r < 0 ? v - r - step : v - r;
}

static int check_request(const struct series_request *req, struct series_answer *a, int *agg,
                         struct err *e)
{
    a->table = req->table ? req->table : "system_metrics";
    const struct table *t = schema_table(a->table);
    if (!t || t->kind != TABLE_SERIES)
        return err_set(e, E_INVALID, "table: '%s' has no series (use system_metrics)", a->table);
    if (!req->metric || !*req->metric)
        return err_set(e, E_INVALID, "metric: missing, e.g. metric=cpu_usage");
    a->metric = req->metric;
    a->agg = req->agg ? req->agg : "avg";
    for (*agg = 0; aggs[*agg] && strcmp(aggs[*agg], a->agg) != 0; (*agg)++)
        ;
    if (!aggs[*agg] || (*agg >= AGG_RATE && !a->window))
        return err_set(e, E_INVALID, "agg: '%s' is not one of avg, min, max, sum, count, last%s",
                       a->agg, a->window ? ", rate, p50, p95, p99" : "");
    a->to_ms = req->has_to ? req->to_ms : time_now_ms();
    a->from_ms = req->has_from ? req->from_ms : a->to_ms - DEFAULT_RANGE_MS;
    if (a->from_ms >= a->to_ms)
        return err_set(e, E_INVALID, "from must be before to");
    if (a->window) { /* one bucket, [from, to) as given */
        a->step_ms = a->to_ms - a->from_ms;
        return 0;
    }
    a->step_ms = req->step_ms ? req->step_ms : auto_step(a->to_ms - a->from_ms);
    if (a->step_ms < 1000)
        return err_set(e, E_INVALID, "step: at least 1s");
    a->from_ms = floor_to(a->from_ms, a->step_ms);
    a->to_ms = floor_to(a->to_ms + a->step_ms - 1, a->step_ms);
    if ((a->to_ms - a->from_ms) / a->step_ms > POINTS_MAX)
        return err_set(e, E_LIMIT, "step: %lld buckets is more than %d; use a larger step",
                       (long long)((a->to_ms - a->from_ms) / a->step_ms), POINTS_MAX);
    return 0;
}

#define MS_PER_DAY_Q 86400000LL

/* Whether a rollup level still holds the range: retention drops old buckets (hourly, so a
 * day of margin is kept). */
static bool level_holds(const struct config *cfg, const struct rollup_level *lv, int64_t from_ms)
{
    int64_t keep_ms = lv->bucket_ms == 60000     ? cfg->rollup_1m_retention_ms
                      : lv->bucket_ms == 3600000 ? cfg->rollup_1h_retention_ms
                                                 : 0;
    return keep_ms == 0 || from_ms > time_now_ms() - keep_ms + MS_PER_DAY_Q;
}

/* The stored resolution to read: "raw" or a rollup level name. */
static int pick_resolution(const struct config *cfg, const struct series_request *req,
                           struct series_answer *a, struct err *e)
{
    size_t n;
    const struct rollup_level *lv = store_rollup_levels(&n);
    const char *want = req->resolution ? req->resolution : "auto";
    if (strcmp(want, "raw") == 0) {
        a->resolution = "raw";
        return 0;
    }
    if (strcmp(want, "auto") == 0) {
        a->resolution = "raw";
        for (size_t i = 0; i < n; i++)
            if (a->step_ms % lv[i].bucket_ms == 0 && level_holds(cfg, &lv[i], a->from_ms))
                a->resolution = lv[i].name;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(want, lv[i].name) != 0)
            continue;
        if (!level_holds(cfg, &lv[i], a->from_ms))
            return err_set(e, E_INVALID,
                           "resolution: %s rollups are not kept that far back (option "
                           "storage.rollup_%s_retention); use resolution=auto or raw",
                           want, want);
        if (a->step_ms % lv[i].bucket_ms != 0)
            return err_set(e, E_INVALID,
                           "resolution: %s buckets do not divide a step of %lld ms; use a step "
                           "that is a multiple of %lld ms, or resolution=auto",
                           want, (long long)a->step_ms, (long long)lv[i].bucket_ms);
        a->resolution = lv[i].name;
        return 0;
    }
    return err_set(e, E_INVALID, "resolution: '%s' is not auto, raw, 1m or 1h", want);
}

/* ---- the query ----------------------------------------------------------------------------- */

static int select_series(struct store_reader *r, const struct config *cfg,
                         const struct series_request *req, struct series_answer *a,
                         struct matcher *ms, size_t nms, struct err *e)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT id, host, component, labels FROM %s_series WHERE metric = :metric "
             "ORDER BY host, component, labels",
             a->table);
    struct store_param p = {"metric", true, 0, req->metric};
    struct store_query q = {sql, &p, 1, cfg->query_timeout_ms, 0, false};
    int rc = store_reader_query(r, &q, &a->candidates, e);
    if (rc)
        return rc;
    a->series = calloc(a->candidates.nrows ? a->candidates.nrows : 1, sizeof *a->series);
    if (!a->series)
        return err_set(e, E_NOMEM, "out of memory");
    for (size_t i = 0; i < a->candidates.nrows; i++) {
        const struct value *row = a->candidates.values + i * a->candidates.ncols;
        const char *host = row[1].type == VAL_TEXT ? row[1].s : "";
        const char *comp = row[2].type == VAL_TEXT ? row[2].s : "";
        const char *labels = row[3].type == VAL_TEXT ? row[3].s : "{}";
        json_t *lj = nms ? json_loads(labels, 0, NULL) : NULL;
        bool ok = matchers_match(ms, nms, host, comp, lj);
        json_decref(lj);
        if (!ok)
            continue;
        if (a->nseries >= SERIES_MAX)
            return err_set(e, E_LIMIT, "more than %d series match: narrow the filter", SERIES_MAX);
        a->series[a->nseries++] = (struct series){row[0].i, host, comp, labels, 0, 0};
    }
    return 0;
}

/* Aggregates the stored buckets of the selected series into the answer's step buckets: rows
 * (series_id, bucket start, value) of a->data, a slice per series in the order of ids. */
struct aggregation {
    struct series_answer *a;
    int agg;
    struct series **by_id; /* the selected series, by id */
    struct series *cur;    /* the series of the open bucket */
    int64_t cur_id, b;     /* the open bucket's series and start */
    bool open;
    double min, max, sum, last;
    int64_t count, last_ts;
    /* raw samples only: the counter increase (a drop is a reset: the new value counts from 0),
     * the first sample's time, and the values for percentiles */
    double increase;
    int64_t first_ts;
    double *values;
    size_t nvalues, cap_values;
};

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The p-th percentile (0..100) of the bucket's values, linearly interpolated between the two
 * nearest ranks, as the SQL function percentile() computes it. */
static double percentile_of(struct aggregation *g, double p)
{
    qsort(g->values, g->nvalues, sizeof *g->values, cmp_double);
    double rank = p / 100 * (double)(g->nvalues - 1);
    size_t lo = (size_t)rank;
    if (lo + 1 >= g->nvalues)
        return g->values[g->nvalues - 1];
    return g->values[lo] + (rank - (double)lo) * (g->values[lo + 1] - g->values[lo]);
}

/* Appends the open bucket as a row of a->data. */
static int flush(struct aggregation *g, struct err *e)
{
    struct series_answer *a = g->a;
    if (!g->open)
        return 0;
    g->open = false;
    if (a->data.nrows >= POINTS_MAX)
        return err_set(e, E_LIMIT,
                       "the answer has more than %d buckets: use a larger step, a "
                       "shorter range or a narrower filter",
                       POINTS_MAX);
    struct value *row = store_result_add_row(&a->data);
    if (!row)
        return err_set(e, E_NOMEM, "out of memory");
    row[0] = (struct value){.i = g->cur_id, .type = VAL_INT};
    row[1] = (struct value){.i = g->b, .type = VAL_INT};
    double v;
    switch (g->agg) {
    case AGG_AVG:
        v = g->sum / (double)g->count;
        break;
    case AGG_MIN:
        v = g->min;
        break;
    case AGG_MAX:
        v = g->max;
        break;
    case AGG_SUM:
        v = g->sum;
        break;
    case AGG_COUNT:
        row[2] = (struct value){.i = g->count, .type = VAL_INT};
        goto counted;
    case AGG_RATE: /* per second over the samples' own span; one sample has no rate */
        v = g->last_ts > g->first_ts ? g->increase * 1000 / (double)(g->last_ts - g->first_ts)
                                     : NAN;
        break;
    case AGG_P50:
        v = percentile_of(g, 50);
        break;
    case AGG_P95:
        v = percentile_of(g, 95);
        break;
    case AGG_P99:
        v = percentile_of(g, 99);
        break;
    default:
        v = g->last;
    }
    row[2] = isnan(v) ? (struct value){.type = VAL_NULL} : (struct value){.d = v, .type = VAL_REAL};
counted:
    if (g->cur->npoints++ == 0)
        g->cur->first_point = a->data.nrows - 1;
    return 0;
}

static int cmp_series_id(const void *k, const void *elem)
{
    int64_t id = *(const int64_t *)k;
    const struct series *const *s = elem;
    return (id > (*s)->id) - (id < (*s)->id);
}

static int take_buckets(void *arg, int64_t id, const struct series_bucket *b, size_t n,
                        struct err *e)
{
    struct aggregation *g = arg;
    if (!g->cur || g->cur->id != id) {
        int rc = flush(g, e);
        if (rc)
            return rc;
        struct series **s = bsearch(&id, g->by_id, g->a->nseries, sizeof *g->by_id, cmp_series_id);
        if (!s)
            return err_set(e, E_STORE, "series %lld was not asked for", (long long)id);
        g->cur = *s;
    }
    int64_t step = g->a->step_ms;
    bool percentiles = g->agg >= AGG_P50;
    for (size_t i = 0; i < n; i++) {
        int64_t bucket = g->a->window ? g->a->from_ms : floor_to(b[i].ts, step);
        if (g->open && (bucket != g->b || id != g->cur_id)) {
            int rc = flush(g, e);
            if (rc)
                return rc;
        }
        if (percentiles) {
            if (!g->open)
                g->nvalues = 0;
            if (g->nvalues == g->cap_values) {
                size_t cap = g->cap_values ? 2 * g->cap_values : 1024;
                double *v = realloc(g->values, cap * sizeof *v);
                if (!v)
                    return err_set(e, E_NOMEM, "out of memory");
                g->values = v;
                g->cap_values = cap;
            }
            g->values[g->nvalues++] = b[i].last;
        }
        if (!g->open) {
            g->open = true;
            g->increase = 0;
            g->first_ts = b[i].ts;
            g->cur_id = id;
            g->b = bucket;
            g->min = b[i].min;
            g->max = b[i].max;
            g->sum = b[i].sum;
            g->count = b[i].count;
            g->last = b[i].last;
            g->last_ts = b[i].last_ts;
            continue;
        }
        g->increase += b[i].last >= g->last ? b[i].last - g->last : b[i].last;
        g->min = b[i].min < g->min ? b[i].min : g->min;
        g->max = b[i].max > g->max ? b[i].max : g->max;
        g->sum += b[i].sum;
        g->count += b[i].count;
        if (b[i].last_ts >= g->last_ts) {
            g->last = b[i].last;
            g->last_ts = b[i].last_ts;
        }
    }
    return 0;
}

static int cmp_by_id(const void *a, const void *b)
{
    const struct series *const *x = a, *const *y = b;
    return ((*x)->id > (*y)->id) - ((*x)->id < (*y)->id);
}

/* Reads the stored buckets of every selected series and aggregates them by step. */
static int read_buckets(struct store_reader *r, const struct config *cfg, int agg,
                        struct series_answer *a, struct err *e)
{
    static const char *const cols[] = {"series_id", "b", "value"};
    struct series **by_id = malloc(a->nseries * sizeof *by_id);
    int64_t *ids = malloc(a->nseries * sizeof *ids);
    int rc = 0;
    if (!by_id || !ids) {
        rc = err_set(e, E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < a->nseries; i++)
        by_id[i] = &a->series[i];
    qsort(by_id, a->nseries, sizeof *by_id, cmp_by_id);
    for (size_t i = 0; i < a->nseries; i++)
        ids[i] = by_id[i]->id;
    store_result_set_columns(&a->data, 3, cols);
    struct aggregation g = {.a = a, .agg = agg, .by_id = by_id};
    struct series_read q = {a->table, a->resolution,        ids, a->nseries, a->from_ms,
                            a->to_ms, cfg->query_timeout_ms};
    rc = store_series_read(r, &q, take_buckets, &g, e);
    if (rc == 0)
        rc = flush(&g, e);
    free(g.values);
out:
    free(by_id);
    free(ids);
    return rc;
}

static void answer_release(struct series_answer *a)
{
    store_result_release(&a->candidates);
    store_result_release(&a->data);
    free(a->series);
}

static int run(struct store *s, const struct config *cfg, const struct series_request *req,
               bool window, struct series_answer *a, struct err *e)
{
    memset(a, 0, sizeof *a);
    a->window = window;
    store_result_init(&a->candidates);
    store_result_init(&a->data);
    int agg = 0;
    struct matcher ms[QUERY_MATCHERS_MAX];
    size_t nms = 0;
    int rc = check_request(req, a, &agg, e);
    if (rc == 0)
        rc = window ? (a->resolution = "raw", 0) : pick_resolution(cfg, req, a, e);
    if (rc == 0)
        rc = matchers_parse(req->filter, ms, &nms, e);
    if (rc) {
        matchers_release(ms, nms); /* those parsed before the bad one */
        return rc;
    }
    struct store_reader *r = store_reader_get(s);
    rc = select_series(r, cfg, req, a, ms, nms, e);
    if (rc == 0 && a->nseries)
        rc = read_buckets(r, cfg, agg, a, e);
    store_reader_put(s, r);
    matchers_release(ms, nms);
    return rc;
}

/* The bucket's value; NAN when SQL gave NULL (a sum that overflowed), written as null. */
static double value_at(const struct series_answer *a, size_t i)
{
    const struct value *v = &a->data.values[i * a->data.ncols + 2];
    return v->type == VAL_INT ? (double)v->i : v->type == VAL_REAL ? v->d : NAN;
}

/* {"host":..,"component":.., other labels...} */
static void labels_json(struct buf *out, const struct series *s)
{
    struct value v;
    buf_append(out, "{\"host\":", 8);
    v = (struct value){.s = s->host, .len = (uint32_t)strlen(s->host), .type = VAL_TEXT};
    query_json_value(&v, out);
    buf_append(out, ",\"component\":", 13);
    v = (struct value){.s = s->component, .len = (uint32_t)strlen(s->component), .type = VAL_TEXT};
    query_json_value(&v, out);
    size_t ll = strlen(s->labels);
    if (ll > 2) {
        buf_putc(out, ',');
        buf_append(out, s->labels + 1, ll - 1); /* canonical JSON object text: skip its '{' */
    } else {
        buf_putc(out, '}');
    }
}

int query_series(struct store *s, const struct config *cfg, const struct series_request *req,
                 struct buf *out, struct err *e)
{
    struct series_answer a;
    int rc = run(s, cfg, req, false, &a, e);
    if (rc == 0) {
        struct value m = {.s = a.metric, .len = (uint32_t)strlen(a.metric), .type = VAL_TEXT};
        buf_printf(out, "{\"table\":\"%s\",\"metric\":", a.table);
        query_json_value(&m, out);
        buf_printf(out,
                   ",\"agg\":\"%s\",\"step_ms\":%lld,\"from\":%lld,\"to\":%lld,"
                   "\"resolution\":\"%s\",\"series\":[",
                   a.agg, (long long)a.step_ms, (long long)a.from_ms, (long long)a.to_ms,
                   a.resolution);
        bool first = true;
        for (size_t i = 0; i < a.nseries; i++) {
            const struct series *se = &a.series[i];
            if (!se->npoints)
                continue;
            buf_append(out, first ? "{\"labels\":" : ",{\"labels\":", first ? 10 : 11);
            first = false;
            labels_json(out, se);
            buf_append(out, ",\"values\":[", 11);
            for (size_t k = 0; k < se->npoints; k++) {
                size_t row = se->first_point + k;
                struct value v = {.d = value_at(&a, row), .type = VAL_REAL};
                buf_printf(out, "%s[%lld,", k ? "," : "",
                           (long long)a.data.values[row * a.data.ncols + 1].i);
                query_json_value(&v, out);
                buf_putc(out, ']');
            }
            buf_append(out, "]}", 2);
        }
        buf_append(out, "]}", 2);
    }
    answer_release(&a);
    return rc;
}

/* The first three columns of a row: the series' host, component and labels. */
static void put_labels(struct store_result *res, struct value *out, const struct series *se)
{
    const char *texts[] = {se->host, se->component, se->labels};
    for (int c = 0; c < 3; c++) {
        out[c].type = VAL_TEXT;
        out[c].len = (uint32_t)strlen(texts[c]);
        out[c].s = arena_strndup(&res->arena, texts[c], out[c].len);
    }
}

int query_series_rows(struct store *s, const struct config *cfg, const struct series_request *req,
                      struct store_result *res, struct err *e)
{
    struct series_answer a;
    store_result_init(res);
    int rc = run(s, cfg, req, false, &a, e);
    if (rc == 0) {
        static const char *const cols[] = {"host", "component", "labels", "ts", "value"};
        store_result_set_columns(res, 5, cols);
        for (size_t i = 0; i < a.nseries; i++) {
            const struct series *se = &a.series[i];
            for (size_t k = 0; k < se->npoints; k++) {
                size_t row = se->first_point + k;
                struct value *out = store_result_add_row(res);
                put_labels(res, out, se);
                out[3] =
                    (struct value){.i = a.data.values[row * a.data.ncols + 1].i, .type = VAL_INT};
                out[4] = (struct value){.d = value_at(&a, row), .type = VAL_REAL};
            }
        }
    }
    answer_release(&a);
    return rc;
}

int query_series_window(struct store *s, const struct config *cfg, const struct series_request *req,
                        struct store_result *res, struct err *e)
{
    struct series_answer a;
    store_result_init(res);
    int rc = run(s, cfg, req, true, &a, e);
    if (rc == 0) {
        static const char *const cols[] = {"host", "component", "labels", "value"};
        store_result_set_columns(res, 4, cols);
        for (size_t i = 0; i < a.nseries; i++) {
            const struct series *se = &a.series[i];
            if (se->npoints == 0)
                continue;
            struct value *out = store_result_add_row(res);
            put_labels(res, out, se);
            double v = value_at(&a, se->first_point);
            out[3] = isnan(v) ? (struct value){.type = VAL_NULL}
                              : (struct value){.d = v, .type = VAL_REAL};
        }
    }
    answer_release(&a);
    return rc;
}
