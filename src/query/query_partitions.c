/*
 * The partitions of every table, for `opsdb partitions`: event tables' time partitions (one
 * table each) from the catalogue, the days of metric chunks, raw metric samples if a database
 * from before schema version 8 still has any, and the partitions retention archived and
 * dropped; each with its time range, rows, bytes and state (hot: raw rows, or a day of metric
 * samples still in a chunk per batch; cold: compressed, or compacted; restored: brought back
 * from an archive; archived: only in the archive directory, bytes of its file).
 */
#include "query/query.h"

#include <stdlib.h>
#include <string.h>

/* Bytes come from SQLite's dbstat (each table with its indexes; chunks by their blob sizes). */
static const char *const partitions_sql =
    "WITH sizes AS (SELECT name, pgsize FROM dbstat WHERE aggregate = 1)"
    " SELECT p.table_name AS \"table\", p.name AS partition, p.start_ts AS from_ms,"
    "  p.end_ts AS to_ms, p.rows,"
    "  (SELECT sum(pgsize) FROM sizes s WHERE s.name = p.name OR substr(s.name, 1,"
    "   length(p.name) + 1) = p.name || '_') AS bytes, p.state"
    " FROM opsdb_partitions p"
    " UNION ALL SELECT 'system_metrics', 'system_metrics_chunks day ' || date(day * 86400,"
    "  'unixepoch'), day * 86400000, (day + 1) * 86400000, sum(count),"
    "  sum(data + coalesce(minutes, 0)),"
    "  CASE WHEN max(n) > 1 THEN 'hot' ELSE 'cold' END"
    "  FROM (SELECT day, sum(count) AS count, sum(length(data)) AS data,"
    "   sum(length(minutes)) AS minutes, count(*) - (sum(count) + 65535) / 65536 + 1 AS n"
    "   FROM system_metrics_chunks GROUP BY day, series_id) GROUP BY day"
    " UNION ALL SELECT 'system_metrics', 'system_metrics_samples', (SELECT min((SELECT min(s.ts)"
    "  FROM system_metrics_samples s WHERE s.series_id = r.id)) FROM system_metrics_series r),"
    "  (SELECT max((SELECT max(s.ts) FROM system_metrics_samples s WHERE s.series_id = r.id))"
    "  FROM system_metrics_series r) + 1, (SELECT count(*) FROM system_metrics_samples),"
    "  (SELECT sum(pgsize) FROM sizes WHERE name = 'system_metrics_samples'), 'hot'"
    "  WHERE EXISTS (SELECT 1 FROM system_metrics_samples)"
    " ORDER BY 1, 3";

enum { COL_TABLE, COL_PARTITION, COL_FROM, COL_TO, COL_ROWS, COL_BYTES, COL_STATE, NCOLS };

static int by_table_and_start(const void *x, const void *y)
{
    const struct value *a = x, *b = y;
    int c = strcmp(a[COL_TABLE].s, b[COL_TABLE].s);
    if (c)
        return c;
    if (a[COL_FROM].type != b[COL_FROM].type) /* NULL (no samples) first, as in SQL */
        return a[COL_FROM].type == VAL_NULL ? -1 : 1;
    return a[COL_FROM].i < b[COL_FROM].i ? -1 : a[COL_FROM].i > b[COL_FROM].i;
}

/* Adds the archives that are not (or no longer) in the database, state archived. */
static int add_archived(const char *dir, struct store_result *res, struct err *e)
{
    struct store_archive *all;
    size_t n;
    int rc = store_archive_list(dir, &all, &n, e);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bool in_db = all[i].problem[0] != '\0'; /* unreadable: `archive verify` names it */
        for (size_t r = 0; r < res->nrows && !in_db; r++)
            in_db = strcmp(res->values[r * NCOLS + COL_PARTITION].s, all[i].partition) == 0;
        if (in_db)
            continue;
        struct value *row = store_result_add_row(res);
        if (!row) {
            rc = err_set(e, E_NOMEM, "out of memory");
            break;
        }
        store_result_put_text(res, &row[COL_TABLE], all[i].table->name);
        store_result_put_text(res, &row[COL_PARTITION], all[i].partition);
        store_result_put_int(&row[COL_FROM], all[i].from_ms);
        store_result_put_int(&row[COL_TO], all[i].to_ms);
        store_result_put_int(&row[COL_ROWS], all[i].rows);
        store_result_put_int(&row[COL_BYTES], all[i].bytes);
        store_result_put_text(res, &row[COL_STATE], "archived");
    }
    free(all);
    if (rc == 0)
        qsort(res->values, res->nrows, NCOLS * sizeof *res->values, by_table_and_start);
    return rc;
}

int query_partitions(struct store *s, const char *archive_dir, struct store_result *res,
                     struct err *e)
{
    struct store_reader *r = store_reader_get(s);
    struct store_query q = {partitions_sql, NULL, 0, 0, 0, false};
    int rc = store_reader_query(r, &q, res, e);
    store_reader_put(s, r);
    if (rc == 0 && archive_dir && archive_dir[0] && res->ncols == NCOLS)
        rc = add_archived(archive_dir, res, e);
    return rc;
}
