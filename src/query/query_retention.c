/*
 * Retention as a check: for every table, the oldest and newest data held against the table's
 * retention policy (`opsdb retention status|verify`). Two ways to break it: data held past the
 * policy (retention has not run, or is failing), and data missing inside it — dropped while
 * the policy still keeps it (retention applied with a shorter policy than the one now
 * configured), known from the time retention last dropped data up to (opsdb_meta
 * '<table>.dropped_until').
 */
#include "query/query.h"

#include <stdio.h>
#include <string.h>

/* count, oldest and newest ts of one table, in one row */
static void stats_sql(const struct table *t, struct buf *sql)
{
    buf_printf(sql,
               "SELECT *, (SELECT value FROM opsdb_meta WHERE key = '%s.dropped_until') FROM (",
               t->name);
    if (t->kind == TABLE_SERIES)
        /* samples are keyed (series_id, ts): one seek per series finds its raw ends; chunks
         * carry their count and ends, and are older than the raw samples of their series */
        buf_printf(sql,
                   "SELECT (SELECT count(*) FROM %s_samples) + (SELECT coalesce(sum(count), 0) "
                   "FROM %s_chunks), (SELECT min(x) FROM (SELECT min(start_ts) AS x FROM "
                   "%s_chunks UNION ALL SELECT min((SELECT min(s.ts) FROM %s_samples s WHERE "
                   "s.series_id = r.id)) FROM %s_series r)), (SELECT max(x) FROM (SELECT "
                   "max(end_ts) AS x FROM %s_chunks UNION ALL SELECT max((SELECT max(s.ts) FROM "
                   "%s_samples s WHERE s.series_id = r.id)) FROM %s_series r))",
                   t->name, t->name, t->name, t->name, t->name, t->name, t->name, t->name);
    else if (t->kind == TABLE_EVENTS)
        /* partitioned: the catalogue counts rows; the ends come from the first and last
         * partitions' ts indexes. Partitions restored from archives are held on purpose, not
         * under the policy: they are left out. */
        buf_printf(sql,
                   "SELECT (SELECT coalesce(sum(rows), 0) FROM opsdb_partitions WHERE "
                   "table_name = '%s' AND state != 'restored'), (SELECT ts FROM %s WHERE ts >= "
                   "(SELECT min(start_ts) FROM opsdb_partitions WHERE table_name = '%s' AND "
                   "state != 'restored') ORDER BY ts LIMIT 1), (SELECT ts FROM %s ORDER BY ts "
                   "DESC LIMIT 1)",
                   t->name, t->name, t->name, t->name);
    else
        buf_printf(sql, "SELECT count(*), min(ts), max(ts) FROM %s", t->name);
    buf_printf(sql, ")");
}

static void set_text(struct store_result *res, struct value *v, const char *s)
{
    v->type = VAL_TEXT;
    v->len = (uint32_t)strlen(s);
    v->s = arena_strndup(&res->arena, s, v->len);
}

/* Times read by people: RFC 3339, NULL stays NULL. */
static void set_time(struct store_result *res, struct value *v, const struct value *ms)
{
    char text[40];
    if (ms->type != VAL_INT) {
        v->type = VAL_NULL;
        return;
    }
    time_format_rfc3339(ms->i, text, sizeof text);
    set_text(res, v, text);
}

int query_retention(struct store *s, const struct config *cfg, int64_t now_ms,
                    struct store_result *res, size_t *past_policy, size_t *missing, struct err *e)
{
    static const char *const cols[] = {"table", "retention_days", "oldest",        "newest",
                                       "rows",  "horizon",        "dropped_until", "status"};
    store_result_init(res);
    store_result_set_columns(res, 8, cols);
    *past_policy = 0;
    *missing = 0;
    size_t n;
    const struct table *tables = schema_tables(&n);
    struct store_reader *r = store_reader_get(s);
    struct buf sql;
    buf_init(&sql, 4096);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct table *t = &tables[i];
        sql.len = 0;
        stats_sql(t, &sql);
        struct store_result one;
        struct store_query q = {sql.data, NULL, 0, 0, 0, false};
        rc = store_reader_query(r, &q, &one, e);
        if (rc == 0 && one.nrows == 1) {
            const struct value *v = one.values;
            int64_t days = cfg->retention_days[i];
            int64_t horizon = now_ms - days * 86400000;
            struct value *out = store_result_add_row(res);
            set_text(res, &out[0], t->name);
            out[1] = (struct value){.i = days, .type = VAL_INT};
            set_time(res, &out[2], &v[1]);
            set_time(res, &out[3], &v[2]);
            out[4] = v[0];
            set_time(res, &out[6], &v[3]);
            const char *status = "ok";
            if (days == 0) {
                status = "kept forever";
            } else {
                struct value h = {.i = horizon, .type = VAL_INT};
                set_time(res, &out[5], &h);
                /* data goes a partition (or a day of chunks) at a time, once all of it is
                 * past the horizon: older rows in the partition that holds it are in policy */
                int64_t slack = t->kind == TABLE_EVENTS   ? cfg->partition_ms[i]
                                : t->kind == TABLE_SERIES ? 86400000
                                                          : 0;
                if (v[1].type == VAL_NULL)
                    status = "empty";
                else if (v[1].i < horizon - slack) {
                    status = "past policy";
                    (*past_policy)++;
                }
                if (v[3].type == VAL_INT && v[3].i > horizon) {
                    status = "missing inside policy";
                    (*missing)++;
                }
            }
            set_text(res, &out[7], status);
        }
        store_result_release(&one);
    }
    buf_release(&sql);
    store_reader_put(s, r);
    return rc;
}
