/*
 * The views in SQLite's dialect. Each reads its window from view parameters:
 * opsdb_now_ms() is the end of the window (parameter now_ms, default the clock) and
 * opsdb_param('window_ms', default) its length — 15 minutes for rates, 24 hours for summaries.
 * Every lookup is a range or point search on an index (tests/e2e check the query plans).
 */
#include "store/sqlite_int.h"

#define NOW "opsdb_now_ms()"
#define WINDOW(default_ms) "opsdb_param('window_ms', " #default_ms ")"

/* The newest sample of series r at or before NOW: the chunks come newest first for one series,
 * so this decodes one chunk. */
#define LATEST(col)                                                                                \
    " (SELECT c." col " FROM system_metrics_cold c WHERE c.series_id = r.id AND c.ts <= " NOW      \
    " ORDER BY c.ts DESC LIMIT 1)"
#define LATEST_TS LATEST("ts")
#define LATEST_VALUE LATEST("value")

/* The window (lo, hi] split for rollups, as the one-row CTE `bounds`: whole UTC days [d1, d2),
 * whole hours [h1, d1) and [d2, h2), whole minutes [m1, h1) and [h2, m2), raw rows (lo, m1) and
 * [m2, hi]. Ranges that do not exist are empty (a window with no whole minute is all raw:
 * m1 = m2 = h1 = h2 = d1 = d2 = hi + 1; one with no whole day has d1 = d2 = h2). A bucket
 * [b, b + size) is whole when lo < b and b + size - 1 <= hi: rows past now never count. */
#define SPLIT(default_ms) SPLIT_W0(default_ms) SPLIT_REST
#define SPLIT_W0(default_ms) "w0 AS (SELECT " NOW " - " WINDOW(default_ms) " AS lo, " NOW " AS hi),"
/* minutes are read from the rollups where retention has not dropped them: it records how far
 * it did (opsdb_meta '<table>_1m.dropped_before', set in the same transaction; the CTE `cut`,
 * see MINUTES_CUT), and each edge is judged on its own — a 30-day window reads the partial hour
 * at its old end from raw rows only once that end's minutes are gone. A window with no whole
 * hour uses minutes only when both ends have them. */
#define SPLIT_REST                                                                                 \
    " w1 AS (SELECT lo, hi, ((lo + 60000) / 60000) * 60000 AS m1,"                                 \
    "  ((hi + 1) / 60000) * 60000 AS m2 FROM w0),"                                                 \
    " w2 AS (SELECT lo, hi, m1 < m2 AS minutes, m1, m2,"                                           \
    "  ((m1 + 3599999) / 3600000) * 3600000 AS h1, (m2 / 3600000) * 3600000 AS h2,"                \
    "  m1 >= (SELECT v FROM cut) AS kept_lo,"                                                      \
    "  max((m2 / 3600000) * 3600000, m1) >= (SELECT v FROM cut) AS kept_hi FROM w1),"              \
    " w3 AS (SELECT lo, hi,"                                                                       \
    "  CASE WHEN NOT minutes THEN hi + 1 WHEN h1 < h2 THEN CASE WHEN kept_lo THEN m1 ELSE h1 END"  \
    "   WHEN kept_lo AND kept_hi THEN m1 ELSE hi + 1 END AS m1,"                                   \
    "  CASE WHEN NOT minutes THEN hi + 1 WHEN h1 < h2 THEN CASE WHEN kept_hi THEN m2 ELSE h2 END"  \
    "   WHEN kept_lo AND kept_hi THEN m2 ELSE hi + 1 END AS m2,"                                   \
    "  CASE WHEN minutes AND h1 < h2 THEN h1 WHEN minutes AND kept_lo AND kept_hi THEN m2"         \
    "   ELSE hi + 1 END AS h1,"                                                                    \
    "  CASE WHEN minutes AND h1 < h2 THEN h2 WHEN minutes AND kept_lo AND kept_hi THEN m2"         \
    "   ELSE hi + 1 END AS h2"                                                                     \
    "  FROM w2),"                                                                                  \
    " bounds AS (SELECT lo, hi, m1, m2, h1, h2,"                                                   \
    "  CASE WHEN " DAYS_INSIDE " THEN " H1_DAY_CEIL " ELSE h2 END AS d1,"                          \
    "  CASE WHEN " DAYS_INSIDE " THEN " H2_DAY_FLOOR " ELSE h2 END AS d2 FROM w3)"
/* the start of the first minute bucket of table that retention kept (all before it ran) */
#define MINUTES_CUT(table)                                                                         \
    "cut AS (SELECT coalesce((SELECT value FROM opsdb_meta WHERE key = '" table                    \
    "_1m.dropped_before'), -9223372036854775807) AS v), "
#define SPLIT_API MINUTES_CUT("api_usage") SPLIT(900000)
#define SPLIT_ERRORS MINUTES_CUT("error_logs") SPLIT(86400000)
#define SPLIT_HANDLERS MINUTES_CUT("handler_metrics") SPLIT(900000)
/* the first midnight at or after h1, the last at or before h2: whole days exist between them */
#define H1_DAY_CEIL "((h1 + 86399999) / 86400000) * 86400000"
#define H2_DAY_FLOOR "(h2 / 86400000) * 86400000"
#define DAYS_INSIDE H1_DAY_CEIL " < " H2_DAY_FLOOR

#define ERROR_COLS                                                                                 \
    "r.fingerprint, r.host, r.count AS n, r.level_rank, r.error_type, r.component, r.last_ts"
/* error_logs rows in one raw range, in the shape of the rollup rows */
#define ERROR_RAW(range)                                                                           \
    "SELECT coalesce(e.fingerprint, ''), e.host, count(*), max(CASE e.level WHEN 'debug' THEN 0"   \
    " WHEN 'info' THEN 1 WHEN 'notice' THEN 2 WHEN 'warning' THEN 3 WHEN 'error' THEN 4"           \
    " WHEN 'critical' THEN 5 ELSE 6 END), max(e.error_type), max(e.component), max(e.ts)"          \
    " FROM bounds b CROSS JOIN error_logs e WHERE " range " GROUP BY 1, 2"
#define ERROR_RAW_LOW ERROR_RAW("e.ts > b.lo AND e.ts < b.m1")
#define ERROR_RAW_HIGH ERROR_RAW("e.ts >= b.m2 AND e.ts <= b.hi")
#define WINDOW_15M WINDOW(900000)

#define API_COLS                                                                                   \
    "r.service, r.endpoint, r.status_class, r.requests, r.request_bytes, r.response_bytes,"        \
    " r.latency_sum, r.latency_count, r.latency_sketch AS sk, r.last_ts"
/* api_usage rows in one raw range, in the shape of the rollup rows */
#define API_RAW(range)                                                                             \
    "SELECT a.service, a.endpoint, a.status_code / 100, sum(a.count), sum(a.request_bytes),"       \
    " sum(a.response_bytes), sum(a.latency_ms * a.count), sum(CASE WHEN a.latency_ms IS NOT NULL"  \
    " THEN a.count END), sketch(a.latency_ms, a.count), max(a.ts) FROM bounds b CROSS JOIN"        \
    " api_usage a WHERE " range " GROUP BY a.service, a.endpoint, a.status_code / 100"

#define API_RAW_LOW API_RAW("a.ts > b.lo AND a.ts < b.m1")
#define API_RAW_HIGH API_RAW("a.ts >= b.m2 AND a.ts <= b.hi")

#define HANDLER_COLS                                                                               \
    "r.handler, r.component, r.invocations, r.errors, r.retries, r.duration_sum,"                  \
    " r.duration_count, r.duration_p95_max, r.queue_depth_max, r.last_ts"
/* handler_metrics rows in one raw range, in the shape of the rollup rows */
#define HANDLER_RAW(range)                                                                         \
    "SELECT h.handler, h.component, sum(h.invocations), sum(h.errors), sum(h.retries),"            \
    " sum(h.duration_ms_avg * h.invocations), sum(CASE WHEN h.duration_ms_avg IS NOT NULL THEN"    \
    " h.invocations END), max(h.duration_ms_p95), max(h.queue_depth), max(h.ts) FROM bounds b"     \
    " CROSS JOIN handler_metrics h WHERE " range " GROUP BY h.handler, h.component"

#define HANDLER_RAW_LOW HANDLER_RAW("h.ts > b.lo AND h.ts < b.m1")
#define HANDLER_RAW_HIGH HANDLER_RAW("h.ts >= b.m2 AND h.ts <= b.hi")

/* pipeline_health's runs come from the per-run rollup (sqlite_run_rollup.c). Every run with a
 * row in the window (lo, hi] has first_ts <= hi and last_ts > lo, hence first_ts > lo - span,
 * span being the longest last_ts - first_ts of any run (opsdb_meta, never lowered): one range of
 * the rollup's primary key (first_ts, ...) holds them all, `near`. A run wholly inside the
 * window (first_ts > lo and last_ts <= hi) has every row there, so its rollup row is what
 * grouping the window's rows gives. The others, `edges`, straddle an edge: rows on both sides
 * of lo or of hi. They are grouped from raw rows, read in two ranges of the window: (lo, l],
 * up to the last row of any run that began at or before lo, and [h, hi], from the first row of
 * any run that goes on past hi (h > l: no row is read twice). A straddling run's rows in the
 * window all lie there; one with no row in the window drops out of the join. */
#define WINDOW_24H WINDOW(86400000)
#define WINDOW_7D WINDOW(604800000)

/* Collection uptime (percent) of source s over the last W ms: see collection_status. */
#define DOWN_OPEN(W)                                                                               \
    "(CASE WHEN " NOW " - s.last_seen > s.silence_ms THEN max(0, " NOW                             \
    " - max(s.last_seen + s.interval_ms, " NOW " - " W ")) ELSE 0 END)"
#define DOWN_GAPS(W)                                                                               \
    "(SELECT coalesce(sum(max(0, min(g.ended_at, " NOW ") - max(g.ended_at - g.downtime_ms, " NOW  \
    " - " W "))), 0) FROM collection_gaps g WHERE g.source = s.source AND g.ended_at > " NOW       \
    " - " W " AND g.ts <= " NOW ")"
#define UPTIME(W)                                                                                  \
    " round(100.0 * (1 - 1.0 * (" DOWN_GAPS(W) " + " DOWN_OPEN(W) ") / max(1, " NOW                \
                                                                  " - max(s.first_seen, " NOW      \
                                                                  " - " W "))), 3)"
#define RUN_SPAN                                                                                   \
    "coalesce((SELECT value FROM opsdb_meta WHERE key = 'pipeline_status_runs.max_span_ms'), 0)"
#define RUN_SOURCES                                                                                \
    "bounds AS (SELECT " NOW " - " WINDOW_24H " AS lo, " NOW " AS hi, " RUN_SPAN " AS span),"      \
    " near AS NOT MATERIALIZED (SELECT pr.pipeline, pr.run_id, pr.first_ts, pr.last_ts,"           \
    "  pr.failed, pr.succeeded, coalesce(pr.finished_at_max - pr.started_at_min,"                  \
    "  pr.duration_ms_max) AS duration_ms, pr.first_ts > b.lo AND pr.last_ts <= b.hi AS inside"    \
    "  FROM bounds b CROSS JOIN pipeline_status_runs pr"                                           \
    "  WHERE pr.first_ts > b.lo - b.span AND pr.first_ts <= b.hi AND pr.last_ts > b.lo),"          \
    " edges AS (SELECT pipeline, run_id, first_ts, last_ts FROM near WHERE NOT inside),"           \
    " reach AS (SELECT lo, hi, l, max(h, l + 1) AS h FROM (SELECT b.lo, b.hi, min(b.hi,"           \
    "  coalesce((SELECT max(e.last_ts) FROM edges e WHERE e.first_ts <= b.lo), b.lo)) AS l,"       \
    "  coalesce((SELECT min(e.first_ts) FROM edges e WHERE e.last_ts > b.hi), b.hi + 1) AS h"      \
    "  FROM bounds b)),"                                                                           \
    " edge_rows AS (SELECT " EDGE_ROW " WHERE p.ts > x.lo AND p.ts <= x.l"                         \
    "  UNION ALL SELECT " EDGE_ROW " WHERE p.ts >= x.h AND p.ts <= x.hi)"
#define EDGE_ROW                                                                                   \
    "p.pipeline, p.run_id, p.status, p.started_at, p.finished_at, p.duration_ms"                   \
    " FROM reach x CROSS JOIN pipeline_status p"
/* the runs that straddle an edge, grouped from their rows in the window */
#define RUNS_STRADDLING                                                                            \
    "SELECT e.pipeline, max(p.status = 'failed'), max(p.status = 'succeeded'),"                    \
    " coalesce(max(p.finished_at) - min(p.started_at), max(p.duration_ms))"                        \
    " FROM edges e JOIN edge_rows p ON p.pipeline = e.pipeline AND p.run_id = e.run_id"            \
    " GROUP BY e.pipeline, e.run_id"
/* the latest row of pipeline r.pipeline at or before now, and its latest success */
#define PIPE_LAST_STATUS                                                                           \
    "(SELECT p.status FROM pipeline_status p WHERE p.pipeline = r.pipeline AND p.ts <= " NOW       \
    " ORDER BY p.ts DESC LIMIT 1)"
#define PIPE_LAST_SUCCESS                                                                          \
    "(SELECT p.ts FROM pipeline_status p WHERE p.pipeline = r.pipeline AND p.ts <= " NOW           \
    " AND p.status = 'succeeded' ORDER BY p.ts DESC LIMIT 1)"

static const char *const views[] = {
    /* system_health: per host/component the latest cpu, memory and disk, when it last reported
     * anything, and a status from the health.* thresholds; max over series of a metric (e.g.
     * several mounts) so the worst one decides. */
    "CREATE VIEW system_health AS "
    "WITH latest AS ("
    " SELECT r.host AS host, r.component AS component, r.metric AS metric,"
    "  " LATEST_TS " AS ts, " LATEST_VALUE " AS value"
    " FROM system_metrics_series r),"
    " hc AS ("
    " SELECT host, component,"
    "  max(CASE WHEN metric = opsdb_param('cpu_metric', 'cpu_usage') THEN value END) AS cpu,"
    "  max(CASE WHEN metric = opsdb_param('memory_metric', 'memory_usage') THEN value END) AS "
    "memory,"
    "  max(CASE WHEN metric = opsdb_param('disk_metric', 'disk_usage') THEN value END) AS disk,"
    "  max(ts) AS last_seen, count(*) AS series"
    " FROM latest WHERE ts IS NOT NULL GROUP BY host, component)"
    " SELECT host, component, cpu, memory, disk, last_seen, " NOW " - last_seen AS age_ms, series,"
    "  CASE WHEN " NOW " - last_seen > opsdb_param('stale_after_ms', 120000) THEN 'stale'"
    "   WHEN cpu >= opsdb_param('cpu_critical', 95) OR memory >= opsdb_param('memory_critical', 95)"
    "    OR disk >= opsdb_param('disk_critical', 95) THEN 'critical'"
    "   WHEN cpu >= opsdb_param('cpu_warning', 80) OR memory >= opsdb_param('memory_warning', 85)"
    "    OR disk >= opsdb_param('disk_warning', 85) THEN 'warning'"
    "   ELSE 'ok' END AS status"
    " FROM hc",

    /* api_performance: per service and endpoint over the window; rows with count > 1 stand for
     * that many requests. Whole hours and minutes of the window come from the rollups, only the
     * partial minutes at its edges from raw rows (see SPLIT); latency percentiles merge the
     * buckets' sketches (within 1% of the exact value). Grouping by endpoint first makes the
     * sort that GROUP BY needs cheaper (endpoints differ early). */
    "CREATE VIEW api_performance AS WITH " SPLIT_API ", parts AS ("
    " SELECT " API_COLS
    " FROM bounds b CROSS JOIN api_usage_1d r WHERE r.ts >= b.d1 AND r.ts < b.d2"
    " UNION ALL SELECT " API_COLS " FROM bounds b CROSS JOIN api_usage_1h r"
    "  WHERE r.ts >= b.h1 AND r.ts < b.d1"
    " UNION ALL SELECT " API_COLS " FROM bounds b CROSS JOIN api_usage_1h r"
    "  WHERE r.ts >= b.d2 AND r.ts < b.h2"
    " UNION ALL SELECT " API_COLS " FROM bounds b CROSS JOIN api_usage_1m r"
    "  WHERE r.ts >= b.m1 AND r.ts < b.h1"
    " UNION ALL SELECT " API_COLS " FROM bounds b CROSS JOIN api_usage_1m r"
    "  WHERE r.ts >= b.h2 AND r.ts < b.m2"
    " UNION ALL " API_RAW_LOW " UNION ALL " API_RAW_HIGH
    ") SELECT service, endpoint, sum(requests) AS requests,"
    " round(sum(requests) * 1000.0 / " WINDOW_15M ", 3) AS requests_per_s,"
    " round(1.0 * sum(CASE WHEN status_class = 4 THEN requests ELSE 0 END) / "
    "sum(requests), 6)"
    "  AS rate_4xx,"
    " round(1.0 * sum(CASE WHEN status_class >= 5 THEN requests ELSE 0 END) / "
    "sum(requests), 6)"
    "  AS rate_5xx,"
    " sketch_percentile(sketch_merge(sk), 50) AS latency_p50_ms,"
    " sketch_percentile(sketch_merge(sk), 95) AS latency_p95_ms,"
    " sketch_percentile(sketch_merge(sk), 99) AS latency_p99_ms,"
    " sum(latency_sum) / sum(latency_count) AS latency_avg_ms,"
    " sum(request_bytes) AS request_bytes, sum(response_bytes) AS response_bytes,"
    " max(last_ts) AS last_seen"
    " FROM parts GROUP BY endpoint, service",

    /* error_summary: per fingerprint over the window (default 24 h), with the count of the last
     * hour, when it was first seen at all, the most severe level, the hosts, and the latest
     * message as a sample. Whole hours and minutes come from the rollups (per fingerprint and
     * host, so distinct hosts stay exact), the edges and the last hour from raw rows. */
    "CREATE VIEW error_summary AS WITH " SPLIT_ERRORS ", parts AS ("
    " SELECT " ERROR_COLS " FROM bounds b CROSS JOIN error_logs_1d r"
    "  WHERE r.ts >= b.d1 AND r.ts < b.d2"
    " UNION ALL SELECT " ERROR_COLS " FROM bounds b CROSS JOIN error_logs_1h r"
    "  WHERE r.ts >= b.h1 AND r.ts < b.d1"
    " UNION ALL SELECT " ERROR_COLS " FROM bounds b CROSS JOIN error_logs_1h r"
    "  WHERE r.ts >= b.d2 AND r.ts < b.h2"
    " UNION ALL SELECT " ERROR_COLS " FROM bounds b CROSS JOIN error_logs_1m r"
    "  WHERE r.ts >= b.m1 AND r.ts < b.h1"
    " UNION ALL SELECT " ERROR_COLS " FROM bounds b CROSS JOIN error_logs_1m r"
    "  WHERE r.ts >= b.h2 AND r.ts < b.m2"
    " UNION ALL " ERROR_RAW_LOW " UNION ALL " ERROR_RAW_HIGH "),"
    " g AS (SELECT fingerprint, max(error_type) AS error_type, max(component) AS "
    "component,"
    "  max(level_rank) AS level_rank, sum(n) AS count_window, max(last_ts) AS "
    "last_seen,"
    "  count(DISTINCT host) AS hosts FROM parts GROUP BY fingerprint)"
    " SELECT g.fingerprint, g.error_type, g.component,"
    "  CASE g.level_rank WHEN 0 THEN 'debug' WHEN 1 THEN 'info' WHEN 2 THEN "
    "'notice'"
    "   WHEN 3 THEN 'warning' WHEN 4 THEN 'error' WHEN 5 THEN 'critical' ELSE "
    "'fatal' END AS level,"
    " (SELECT count(*) FROM bounds b CROSS JOIN error_logs e WHERE e.fingerprint "
    "= g.fingerprint"
    "  AND e.ts > max(b.hi - 3600000, b.lo) AND e.ts <= b.hi) AS count_1h,"
    " g.count_window,"
    " (SELECT e.ts FROM error_logs e WHERE e.fingerprint = g.fingerprint ORDER "
    "BY e.ts LIMIT 1)"
    "  AS first_seen,"
    " g.last_seen,"
    " (SELECT e.message FROM error_logs e WHERE e.fingerprint = g.fingerprint "
    "AND e.ts <= " NOW "  ORDER BY e.ts DESC LIMIT 1) AS sample_message,"
    " g.hosts"
    " FROM g",

    /* pipeline_health: runs in the window (default 24 h); a run failed if any of its rows
     * failed, succeeded if it reached succeeded without failing; freshness is the time since the
     * last success. Runs wholly inside the window come from the per-run rollup, runs that
     * straddle an edge from their raw rows in the window (see RUN_SOURCES). */
    "CREATE VIEW pipeline_health AS WITH " RUN_SOURCES ","
    " runs AS (SELECT pipeline, failed, succeeded, duration_ms FROM near WHERE inside"
    "  UNION ALL " RUNS_STRADDLING ")"
    " SELECT r.pipeline, " PIPE_LAST_STATUS " AS last_status, " PIPE_LAST_SUCCESS
    " AS last_success, count(*) AS runs, sum(r.failed) AS failed_runs,"
    " round(1.0 * sum(r.succeeded AND NOT r.failed) / nullif(sum(r.succeeded OR r.failed), 0), 6)"
    "  AS success_rate,"
    " round(avg(CASE WHEN r.succeeded OR r.failed THEN r.duration_ms END), 1) AS mean_duration_ms,"
    " " NOW " - " PIPE_LAST_SUCCESS " AS freshness_ms"
    " FROM runs r GROUP BY r.pipeline",

    /* handler_performance: per handler and component over the window (default 15 min), whole
     * hours and minutes from the rollups and the edges from raw rows (see SPLIT); latency is
     * the invocation-weighted mean of the interval means, p95 the worst interval p95, queue
     * depth the latest reported and the window's maximum. */
    "CREATE VIEW handler_performance AS WITH " SPLIT_HANDLERS ", parts AS ("
    " SELECT " HANDLER_COLS " FROM bounds b CROSS JOIN handler_metrics_1d r"
    "  WHERE r.ts >= b.d1 AND r.ts < b.d2"
    " UNION ALL SELECT " HANDLER_COLS " FROM bounds b CROSS JOIN handler_metrics_1h r"
    "  WHERE r.ts >= b.h1 AND r.ts < b.d1"
    " UNION ALL SELECT " HANDLER_COLS " FROM bounds b CROSS JOIN handler_metrics_1h r"
    "  WHERE r.ts >= b.d2 AND r.ts < b.h2"
    " UNION ALL SELECT " HANDLER_COLS " FROM bounds b CROSS JOIN handler_metrics_1m r"
    "  WHERE r.ts >= b.m1 AND r.ts < b.h1"
    " UNION ALL SELECT " HANDLER_COLS " FROM bounds b CROSS JOIN handler_metrics_1m r"
    "  WHERE r.ts >= b.h2 AND r.ts < b.m2"
    " UNION ALL " HANDLER_RAW_LOW " UNION ALL " HANDLER_RAW_HIGH
    ") SELECT p.handler, p.component, sum(p.invocations) AS invocations,"
    " round(sum(p.invocations) * 1000.0 / " WINDOW_15M ", 3) AS throughput_per_s,"
    " sum(p.errors) AS errors,"
    " round(1.0 * sum(p.errors) / nullif(sum(p.invocations), 0), 6) AS "
    "error_rate,"
    " sum(p.retries) AS retries,"
    " round(sum(p.duration_sum) / nullif(sum(p.duration_count), 0), 3) AS "
    "latency_avg_ms,"
    " max(p.duration_p95_max) AS latency_p95_ms,"
    " (SELECT q.queue_depth FROM handler_metrics q WHERE q.handler = "
    "p.handler"
    "  AND q.component = p.component AND q.ts <= " NOW
    "  ORDER BY q.ts DESC LIMIT 1) AS queue_depth,"
    " max(p.queue_depth_max) AS queue_depth_max, max(p.last_ts) AS last_seen"
    " FROM parts p GROUP BY p.handler, p.component",

    /* active_alerts: the latest transition of every alert that is not resolved. */
    "CREATE VIEW active_alerts AS "
    "SELECT a.alert_id, a.rule, a.fingerprint, a.severity, a.state, a.value, a.labels, a.summary,"
    " a.escalation_level, a.notified, a.ts AS since,"
    " (SELECT f.ts FROM alert_history f WHERE f.alert_id = a.alert_id ORDER BY f.ts LIMIT 1)"
    "  AS first_seen"
    " FROM alert_history a"
    " WHERE a.state IN ('pending', 'firing', 'acknowledged', 'escalated', 'suppressed')"
    " AND a.ts <= " NOW
    " AND NOT EXISTS (SELECT 1 FROM alert_history b WHERE b.alert_id = a.alert_id"
    "  AND (b.ts > a.ts OR (b.ts = a.ts AND b.rowid > a.rowid)) AND b.ts <= " NOW ")",

    /* alert_quality: per rule, its alert episodes (a firing or suppressed row that follows
     * nothing, a pending or a resolved row) that began in the window; relevant when
     * acknowledged, still active, or active for at least quick_ms (5 min). */
    "CREATE VIEW alert_quality AS WITH e AS MATERIALIZED ("
    "  SELECT s.rule, s.alert_id, s.ts AS started,"
    "    (SELECT min(r.ts) FROM alert_history r WHERE r.alert_id = s.alert_id"
    "     AND r.ts >= s.ts AND r.ts <= " NOW " AND r.state = 'resolved') AS ended,"
    "    EXISTS (SELECT 1 FROM alert_history k WHERE k.alert_id = s.alert_id"
    "     AND k.ts >= s.ts AND k.ts <= " NOW " AND k.state = 'acknowledged'"
    "     AND NOT EXISTS (SELECT 1 FROM alert_history r2 WHERE r2.alert_id = s.alert_id"
    "      AND r2.ts >= s.ts AND r2.ts < k.ts AND r2.state = 'resolved')) AS acked"
    "   FROM alert_history s"
    "   WHERE s.state IN ('firing', 'suppressed') AND s.ts > " NOW " - " WINDOW_7D
    "   AND s.ts <= " NOW " AND coalesce((SELECT p.state FROM alert_history p"
    "    WHERE p.alert_id = s.alert_id AND (p.ts < s.ts OR (p.ts = s.ts AND p.rowid < s.rowid))"
    "    ORDER BY p.ts DESC, p.rowid DESC LIMIT 1), 'resolved') IN ('resolved', 'pending'))"
    " SELECT rule, count(*) AS alerts, sum(relevant) AS relevant,"
    " count(*) - sum(relevant) AS noisy, round(1.0 * sum(relevant) / count(*), 4) AS relevance,"
    " sum(acked) AS acknowledged, sum(ended IS NULL) AS active,"
    " CAST(avg(coalesce(ended, " NOW ") - started) AS INTEGER) AS mean_duration_ms"
    " FROM (SELECT e.*, (e.acked OR e.ended IS NULL"
    "   OR e.ended - e.started >= opsdb_param('quick_ms', 300000)) AS relevant FROM e)"
    " GROUP BY rule",

    /* job_status: every job with its live state; missed when the next run is overdue by more
     * than its grace period; removed (and nothing else) when its definition is gone. */
    "CREATE VIEW job_status AS "
    "SELECT j.name, j.kind, j.schedule, j.enabled,"
    " CASE WHEN j.last_status = 'removed' THEN 'removed' WHEN j.enabled = 0 THEN 'paused'"
    "  WHEN j.last_status = 'running' OR lr.status = 'running' THEN 'running'"
    "  WHEN j.next_run_at IS NOT NULL AND j.next_run_at + CASE WHEN j.kind = 'external'"
    "   THEN j.grace_s * 1000 ELSE 300000 END < " NOW " THEN 'missed'"
    "  WHEN lr.status IN ('failed', 'timeout') THEN 'failed'"
    "  WHEN lr.status = 'missed' THEN 'missed'"
    "  WHEN lr.status = 'ok' THEN 'ok'"
    "  ELSE coalesce(j.last_status, 'never') END AS status,"
    " coalesce(lr.ts, j.last_run_at) AS last_run_at,"
    " coalesce(lr.duration_ms, j.last_duration_ms) AS last_duration_ms,"
    " lr.status AS last_result, lr.exit_code AS last_exit_code, j.next_run_at,"
    " j.consecutive_failures, j.alert_after"
    " FROM scheduled_jobs j LEFT JOIN job_runs lr ON lr.rowid ="
    " (SELECT r.rowid FROM job_runs r WHERE r.job = j.name AND r.ts <= " NOW
    "  ORDER BY r.ts DESC LIMIT 1)",

    /* collection_status: per source, silent when its last heartbeat is older than it may keep;
     * uptime over a window is 1 - downtime / the part of the window since it was first seen,
     * the downtime being the recorded gaps' (each ending at ended_at) and the silence going on
     * now, after the one interval in which data were still due, clipped to the window. */
    "CREATE VIEW collection_status AS "
    "SELECT s.source, s.kind, s.name,"
    " CASE WHEN " NOW " - s.last_seen > s.silence_ms THEN 'silent' ELSE 'ok' END AS status,"
    " s.last_seen, " NOW " - s.last_seen AS silent_for_ms, s.interval_ms, s.silence_ms, s.rows,"
    " s.first_seen, s.gaps,"
    " (SELECT count(*) FROM collection_gaps g WHERE g.source = s.source"
    "  AND g.ended_at > " NOW " - 86400000 AND g.ts <= " NOW ")"
    "  + (" NOW
    " - s.last_seen > s.silence_ms) AS gaps_24h," UPTIME("86400000") " AS uptime_24h," UPTIME(
        "2592000000") " AS uptime_30d"
                      " FROM collection_sources s WHERE s.first_seen <= " NOW,
};

const char *sqlite_view_sql(size_t i)
{
    return views[i];
}
