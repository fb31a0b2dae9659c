/*
 * The partitions of every table, for `opsdb partitions`: event tables' time partitions (one
 * table each) from the catalogue, the days of compressed metric chunks, and the raw metric
 * samples not yet compressed; each with its time range, rows, bytes on disk and state (hot: raw
 * rows; cold: compressed).
 */
#include "query/query.h"

/* Bytes come from SQLite's dbstat (each table with its indexes; chunks by their blob sizes). */
static const char *const partitions_sql =
    "WITH sizes AS (SELECT name, pgsize FROM dbstat WHERE aggregate = 1)"
    " SELECT p.table_name AS \"table\", p.name AS partition, p.start_ts AS from_ms,"
    "  p.end_ts AS to_ms, p.rows,"
    "  (SELECT sum(pgsize) FROM sizes s WHERE s.name = p.name OR substr(s.name, 1,"
    "   length(p.name) + 1) = p.name || '_') AS bytes, p.state"
    " FROM opsdb_partitions p"
    " UNION ALL SELECT 'system_metrics', 'system_metrics_chunks day ' || date(day * 86400,"
    "  'unixepoch'), day * 86400000, (day + 1) * 86400000, sum(count), sum(length(data)),"
    "  'cold' FROM system_metrics_chunks GROUP BY day"
    " UNION ALL SELECT 'system_metrics', 'system_metrics_samples', (SELECT min((SELECT min(s.ts)"
    "  FROM system_metrics_samples s WHERE s.series_id = r.id)) FROM system_metrics_series r),"
    "  (SELECT max((SELECT max(s.ts) FROM system_metrics_samples s WHERE s.series_id = r.id))"
    "  FROM system_metrics_series r) + 1, (SELECT count(*) FROM system_metrics_samples),"
    "  (SELECT sum(pgsize) FROM sizes WHERE name = 'system_metrics_samples'), 'hot'"
    " ORDER BY 1, 3";

int query_partitions(struct store *s, struct store_result *res, struct err *e)
{
    struct store_reader *r = store_reader_get(s);
    struct store_query q = {partitions_sql, NULL, 0, 0, 0, false};
    int rc = store_reader_query(r, &q, res, e);
    store_reader_put(s, r);
    return rc;
}
