/*
 * The seven views in SQLite's dialect. Each reads its window from view parameters:
 * opsdb_now_ms() is the end of the window (parameter now_ms, default the clock) and
 * opsdb_param('window_ms', default) its length — 15 minutes for rates, 24 hours for summaries.
 * Every lookup is a range or point search on an index (tests/e2e check the query plans).
 */
#include "store/sqlite_int.h"

#define NOW "opsdb_now_ms()"
#define WINDOW(default_ms) "opsdb_param('window_ms', " #default_ms ")"
#define IN_WINDOW(default_ms) "ts > " NOW " - " WINDOW(default_ms) " AND ts <= " NOW

static const char *const views[] = {
    /* system_health: per host/component the latest cpu, memory and disk, when it last reported
     * anything, and a status from the health.* thresholds; max over series of a metric (e.g.
     * several mounts) so the worst one decides. */
    "CREATE VIEW system_health AS "
    "WITH latest AS ("
    " SELECT r.host AS host, r.component AS component, r.metric AS metric,"
    "  (SELECT s.ts FROM system_metrics_samples s WHERE s.series_id = r.id AND s.ts <= " NOW
    "   ORDER BY s.ts DESC LIMIT 1) AS ts,"
    "  (SELECT s.value FROM system_metrics_samples s WHERE s.series_id = r.id AND s.ts <= " NOW
    "   ORDER BY s.ts DESC LIMIT 1) AS value"
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
     * that many requests, in the rates and (as weights) in the percentiles. Grouping by endpoint
     * first makes the sort that GROUP BY needs a third cheaper (endpoints differ early). */
    "CREATE VIEW api_performance AS "
    "SELECT service, endpoint, sum(count) AS requests,"
    " round(sum(count) * 1000.0 / " WINDOW(
        900000) ", 3) AS requests_per_s,"
                " round(1.0 * sum(CASE WHEN status_code BETWEEN 400 AND 499 THEN count ELSE 0 END)"
                "  / sum(count), 6) AS rate_4xx,"
                " round(1.0 * sum(CASE WHEN status_code >= 500 THEN count ELSE 0 END) / "
                "sum(count), 6)"
                "  AS rate_5xx,"
                " percentile(latency_ms, 50, count) AS latency_p50_ms,"
                " percentile(latency_ms, 95, count) AS latency_p95_ms,"
                " percentile(latency_ms, 99, count) AS latency_p99_ms,"
                " sum(latency_ms * count) / sum(CASE WHEN latency_ms IS NOT NULL THEN count END)"
                "  AS latency_avg_ms,"
                " sum(request_bytes) AS request_bytes, sum(response_bytes) AS response_bytes,"
                " max(ts) AS last_seen"
                " FROM api_usage WHERE " IN_WINDOW(900000) " GROUP BY endpoint, service",

    /* error_summary: per fingerprint over the window (default 24 h), with the count of the last
     * hour, when it was first seen at all, the most severe level, and the latest message as a
     * sample. */
    "CREATE VIEW error_summary AS "
    "SELECT g.fingerprint, g.error_type, g.component, g.level, g.count_1h, g.count_window,"
    " (SELECT min(e.ts) FROM error_logs e WHERE e.fingerprint = g.fingerprint) AS first_seen,"
    " g.last_seen,"
    " (SELECT e.message FROM error_logs e WHERE e.fingerprint = g.fingerprint AND e.ts <= " NOW
    "  ORDER BY e.ts DESC LIMIT 1) AS sample_message,"
    " g.hosts"
    " FROM (SELECT fingerprint, max(error_type) AS error_type, max(component) AS component,"
    "  CASE max(CASE level WHEN 'debug' THEN 0 WHEN 'info' THEN 1 WHEN 'notice' THEN 2"
    "   WHEN 'warning' THEN 3 WHEN 'error' THEN 4 WHEN 'critical' THEN 5 ELSE 6 END)"
    "   WHEN 0 THEN 'debug' WHEN 1 THEN 'info' WHEN 2 THEN 'notice' WHEN 3 THEN 'warning'"
    "   WHEN 4 THEN 'error' WHEN 5 THEN 'critical' ELSE 'fatal' END AS level,"
    "  sum(ts > " NOW " - 3600000) AS count_1h, count(*) AS count_window, max(ts) AS last_seen,"
    "  count(DISTINCT host) AS hosts"
    "  FROM error_logs WHERE " IN_WINDOW(86400000) " GROUP BY fingerprint) g",

    /* pipeline_health: runs in the window (default 24 h); a run failed if any of its rows
     * failed, succeeded if it reached succeeded without failing; freshness is the time since the
     * last success. */
    "CREATE VIEW pipeline_health AS "
    "WITH runs AS ("
    " SELECT pipeline, run_id, max(ts) AS ts,"
    "  max(status = 'failed') AS failed, max(status = 'succeeded') AS succeeded,"
    "  coalesce(max(finished_at) - min(started_at), max(duration_ms)) AS duration_ms"
    " FROM pipeline_status WHERE " IN_WINDOW(
        86400000) " GROUP BY pipeline, run_id)"
                  " SELECT r.pipeline,"
                  "  (SELECT p.status FROM pipeline_status p WHERE p.pipeline = r.pipeline AND "
                  "p.ts <= " NOW "   ORDER BY p.ts DESC LIMIT 1) AS last_status,"
                  "  (SELECT p.ts FROM pipeline_status p INDEXED BY pipeline_status_pipeline_ts"
                  "   WHERE p.pipeline = r.pipeline AND p.ts "
                  "<= " NOW
                  "   AND p.status = 'succeeded' ORDER BY p.ts DESC LIMIT 1) AS last_success,"
                  "  count(*) AS runs, sum(r.failed) AS failed_runs,"
                  "  round(1.0 * sum(r.succeeded AND NOT r.failed) / nullif(sum(r.succeeded OR "
                  "r.failed), 0), 6)"
                  "   AS success_rate,"
                  "  round(avg(CASE WHEN r.succeeded OR r.failed THEN r.duration_ms END), 1) AS "
                  "mean_duration_ms,"
                  "  " NOW
                  " - (SELECT p.ts FROM pipeline_status p INDEXED BY pipeline_status_pipeline_ts"
                  "   WHERE p.pipeline = r.pipeline "
                  "AND p.ts <= " NOW
                  "   AND p.status = 'succeeded' ORDER BY p.ts DESC LIMIT 1) AS freshness_ms"
                  " FROM runs r GROUP BY r.pipeline",

    /* handler_performance: per handler and component over the window (default 15 min);
     * latency is the invocation-weighted mean of the interval means, p95 the worst interval p95,
     * queue depth the latest reported and the window's maximum. */
    "CREATE VIEW handler_performance AS "
    "SELECT h.handler, h.component, sum(h.invocations) AS invocations,"
    " round(sum(h.invocations) * 1000.0 / " WINDOW(
        900000) ", 3) AS throughput_per_s,"
                " sum(h.errors) AS errors,"
                " round(1.0 * sum(h.errors) / nullif(sum(h.invocations), 0), 6) AS error_rate,"
                " sum(h.retries) AS retries,"
                " round(sum(h.duration_ms_avg * h.invocations) / nullif(sum(CASE WHEN "
                "h.duration_ms_avg IS NOT"
                "  NULL THEN h.invocations END), 0), 3) AS latency_avg_ms,"
                " max(h.duration_ms_p95) AS latency_p95_ms,"
                " (SELECT q.queue_depth FROM handler_metrics q INDEXED BY "
                "handler_metrics_handler_ts"
                "  WHERE q.handler = h.handler"
                "  AND q.component = h.component AND q.ts <= " NOW
                " ORDER BY q.ts DESC LIMIT 1) AS queue_depth,"
                " max(h.queue_depth) AS queue_depth_max, max(h.ts) AS last_seen"
                " FROM handler_metrics h WHERE " IN_WINDOW(
                    900000) " GROUP BY h.handler, h.component",

    /* active_alerts: the latest transition of every alert that is not resolved. */
    "CREATE VIEW active_alerts AS "
    "SELECT a.alert_id, a.rule, a.fingerprint, a.severity, a.state, a.value, a.labels, a.summary,"
    " a.escalation_level, a.notified, a.ts AS since,"
    " (SELECT min(f.ts) FROM alert_history f WHERE f.alert_id = a.alert_id) AS first_seen"
    " FROM alert_history a"
    " WHERE a.state IN ('pending', 'firing', 'acknowledged', 'escalated', 'suppressed')"
    " AND a.ts <= " NOW
    " AND NOT EXISTS (SELECT 1 FROM alert_history b WHERE b.alert_id = a.alert_id"
    "  AND (b.ts > a.ts OR (b.ts = a.ts AND b.rowid > a.rowid)) AND b.ts <= " NOW ")",

    /* job_status: every job with its live state; missed when the next run is overdue by more
     * than its grace period. */
    "CREATE VIEW job_status AS "
    "SELECT j.name, j.kind, j.schedule, j.enabled,"
    " CASE WHEN j.enabled = 0 THEN 'paused'"
    "  WHEN lr.status = 'running' THEN 'running'"
    "  WHEN j.next_run_at IS NOT NULL AND j.next_run_at + j.grace_s * 1000 < " NOW
    "   THEN 'missed'"
    "  WHEN lr.status IN ('failed', 'timeout') THEN 'failed'"
    "  WHEN lr.status = 'missed' THEN 'missed'"
    "  WHEN lr.status = 'ok' THEN 'ok'"
    "  ELSE coalesce(j.last_status, 'never') END AS status,"
    " coalesce(lr.ts, j.last_run_at) AS last_run_at,"
    " coalesce(lr.duration_ms, j.last_duration_ms) AS last_duration_ms,"
    " lr.status AS last_result, lr.exit_code AS last_exit_code, j.next_run_at,"
    " j.consecutive_failures"
    " FROM scheduled_jobs j LEFT JOIN job_runs lr ON lr.rowid ="
    " (SELECT r.rowid FROM job_runs r WHERE r.job = j.name AND r.ts <= " NOW
    "  ORDER BY r.ts DESC LIMIT 1)",
};

const char *sqlite_view_sql(size_t i)
{
    return views[i];
}
