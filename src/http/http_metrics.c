/*
 * /metrics in the Prometheus text exposition format: what was ingested and rejected, how long
 * each route takes, how the writer groups commits, and how big the database is.
 */
#include "alert/alert.h"
#include "collect/graphite.h"
#include "collect/syslog.h"
#include "http/http_int.h"
#include "jobs/jobs.h"

#include <stdlib.h>
#include <string.h>

static const double latency_bounds[METRIC_LATENCY_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025,
                                                              0.05,  0.1,    0.25,  1,    5};
static const char *const reject_reasons[] = {"validation", "too_large", "store_unavailable",
                                             "bad_body"};

void metrics_init(struct http_metrics *m, size_t nroutes)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->requests_by_class = calloc(nroutes * 4, sizeof *m->requests_by_class);
    m->latency_buckets = calloc(nroutes * (METRIC_LATENCY_BUCKETS + 1), sizeof *m->latency_buckets);
    m->latency_sum = calloc(nroutes, sizeof *m->latency_sum);
    if (!m->requests_by_class || !m->latency_buckets || !m->latency_sum)
        abort();
}

void metrics_release(struct http_metrics *m)
{
    free(m->requests_by_class);
    free(m->latency_buckets);
    free(m->latency_sum);
    pthread_mutex_destroy(&m->lock);
}

void metrics_observe(struct http_metrics *m, int route, unsigned status, double seconds)
{
    if (route < 0)
        return; /* unknown paths are not a route: counting them would let clients add labels */
    size_t cls = status < 300 ? 0 : status < 400 ? 1 : status < 500 ? 2 : 3;
    pthread_mutex_lock(&m->lock);
    m->requests_by_class[(size_t)route * 4 + cls]++;
    uint64_t *b = m->latency_buckets + (size_t)route * (METRIC_LATENCY_BUCKETS + 1);
    for (size_t i = 0; i < METRIC_LATENCY_BUCKETS; i++)
        if (seconds <= latency_bounds[i])
            b[i]++;
    b[METRIC_LATENCY_BUCKETS]++;
    m->latency_sum[route] += seconds;
    pthread_mutex_unlock(&m->lock);
}

void metrics_reject(struct http_metrics *m, const struct table *t, enum reject_reason why,
                    uint64_t rows)
{
    size_t n;
    const struct table *tables = schema_tables(&n);
    size_t ti = t ? (size_t)(t - tables) : n; /* n: a request whose table is unknown */
    pthread_mutex_lock(&m->lock);
    m->rows_rejected[ti][why] += rows;
    pthread_mutex_unlock(&m->lock);
}

static void header(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void write_writer(struct http_server *srv, struct buf *out)
{
    struct writer_stats ws;
    writer_get_stats(srv->deps.writer, &ws);
    size_t n;
    const struct table *t = schema_tables(&n);
    header(out, "opsdb_rows_ingested_total", "counter",
           "Rows committed to the database, by table.");
    for (size_t i = 0; i < n; i++)
        buf_printf(out, "opsdb_rows_ingested_total{table=\"%s\"} %llu\n", t[i].name,
                   (unsigned long long)ws.rows_committed[i]);
    header(out, "opsdb_writer_queue_rows", "gauge", "Rows waiting for the writer.");
    buf_printf(out, "opsdb_writer_queue_rows %llu\n", (unsigned long long)ws.queue_rows);
    header(out, "opsdb_writer_group_commit_rows", "histogram",
           "Rows per group commit (one transaction for the batches of many requests).");
    static const char *const bounds[] = {"1",     "10",     "100",   "1000",
                                         "10000", "100000", "1e+06", "+Inf"};
    for (size_t i = 0; i < 8; i++)
        buf_printf(out, "opsdb_writer_group_commit_rows_bucket{le=\"%s\"} %llu\n", bounds[i],
                   (unsigned long long)ws.group_rows_buckets[i]);
    buf_printf(out, "opsdb_writer_group_commit_rows_sum %llu\n",
               (unsigned long long)ws.group_rows_sum);
    buf_printf(out, "opsdb_writer_group_commit_rows_count %llu\n",
               (unsigned long long)ws.groups_committed);
    header(out, "opsdb_writer_commit_seconds_total", "counter",
           "Time the writer spent writing and committing groups.");
    buf_printf(out, "opsdb_writer_commit_seconds_total %.6f\n", ws.commit_seconds_sum);
    header(out, "opsdb_writer_batches_failed_total", "counter",
           "Request batches the database refused (answered 503).");
    buf_printf(out, "opsdb_writer_batches_failed_total %llu\n",
               (unsigned long long)ws.batches_failed);
    header(out, "opsdb_samples_compacted_total", "counter",
           "Metric samples compacted: rewritten from a chunk per request into a chunk per day.");
    buf_printf(out, "opsdb_samples_compacted_total %llu\n",
               (unsigned long long)ws.samples_compacted);
    header(out, "opsdb_partitions_packed_total", "counter",
           "Event partitions packed into compressed column blocks.");
    buf_printf(out, "opsdb_partitions_packed_total %llu\n",
               (unsigned long long)ws.partitions_packed);
    header(out, "opsdb_compaction_failures_total", "counter",
           "Compaction steps that failed and were rolled back (retried later).");
    buf_printf(out, "opsdb_compaction_failures_total %llu\n",
               (unsigned long long)ws.compaction_failures);
}

static void write_rejects(struct http_metrics *m, struct buf *out)
{
    size_t n;
    const struct table *t = schema_tables(&n);
    header(out, "opsdb_rows_rejected_total", "counter",
           "Rows (or, for too_large and bad_body, requests) rejected, by table and reason.");
    for (size_t i = 0; i <= n; i++)
        for (size_t r = 0; r < 4; r++)
            if (m->rows_rejected[i][r] || i < n)
                buf_printf(out, "opsdb_rows_rejected_total{table=\"%s\",reason=\"%s\"} %llu\n",
                           i < n ? t[i].name : "", reject_reasons[r],
                           (unsigned long long)m->rows_rejected[i][r]);
}

static void write_routes(struct http_metrics *m, struct buf *out)
{
    size_t n;
    const struct route_info *routes = http_routes(&n);
    static const char *const classes[] = {"2xx", "3xx", "4xx", "5xx"};
    header(out, "opsdb_http_requests_total", "counter", "HTTP requests by route and status class.");
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < 4; c++)
            buf_printf(out,
                       "opsdb_http_requests_total{method=\"%s\",route=\"%s\",code=\"%s\"} %llu\n",
                       routes[r].method, routes[r].path, classes[c],
                       (unsigned long long)m->requests_by_class[r * 4 + c]);
    header(out, "opsdb_http_request_duration_seconds", "histogram",
           "Time from the first byte of a request to its response, by route.");
    for (size_t r = 0; r < n; r++) {
        const uint64_t *b = m->latency_buckets + r * (METRIC_LATENCY_BUCKETS + 1);
        for (size_t i = 0; i <= METRIC_LATENCY_BUCKETS; i++) {
            buf_printf(
                out, "opsdb_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"",
                routes[r].method, routes[r].path);
            if (i < METRIC_LATENCY_BUCKETS)
                buf_printf(out, "%g", latency_bounds[i]);
            else
                buf_printf(out, "+Inf");
            buf_printf(out, "\"} %llu\n", (unsigned long long)b[i]);
        }
        buf_printf(out,
                   "opsdb_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n",
                   routes[r].method, routes[r].path, m->latency_sum[r]);
        buf_printf(out,
                   "opsdb_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %llu\n",
                   routes[r].method, routes[r].path, (unsigned long long)b[METRIC_LATENCY_BUCKETS]);
    }
}

void metrics_write(struct http_server *srv, struct buf *out)
{
    write_writer(srv, out);
    pthread_mutex_lock(&srv->metrics.lock);
    write_rejects(&srv->metrics, out);
    write_routes(&srv->metrics, out);
    pthread_mutex_unlock(&srv->metrics.lock);
    http_auth_metrics(srv, out);
    http_limits_metrics(srv->limits, out);
    http_conns_metrics(srv->conns, out);
    header(out, "opsdb_database_size_bytes", "gauge", "Bytes the database occupies on disk.");
    buf_printf(out, "opsdb_database_size_bytes %lld\n",
               (long long)store_size_bytes(srv->deps.store));
    if (srv->deps.alerts)
        alert_engine_metrics(srv->deps.alerts, out);
    if (srv->deps.jobs)
        jobs_metrics(srv->deps.jobs, out);
    syslog_receiver_metrics(srv->deps.syslog, out);
    graphite_receiver_metrics(srv->deps.graphite, out);
    http_tls_metrics(srv->tls, out);
    if (srv->deps.cache) {
        struct query_cache_stats cs;
        query_cache_get_stats(srv->deps.cache, &cs);
        header(out, "opsdb_query_cache_hits_total", "counter",
               "View and series answers served from the cache.");
        buf_printf(out, "opsdb_query_cache_hits_total %llu\n", (unsigned long long)cs.hits);
        header(out, "opsdb_query_cache_misses_total", "counter",
               "View and series answers computed.");
        buf_printf(out, "opsdb_query_cache_misses_total %llu\n", (unsigned long long)cs.misses);
        header(out, "opsdb_query_cache_evictions_total", "counter",
               "Answers evicted to stay within query.cache_bytes.");
        buf_printf(out, "opsdb_query_cache_evictions_total %llu\n",
                   (unsigned long long)cs.evictions);
        header(out, "opsdb_query_cache_size_bytes", "gauge", "Memory held by cached answers.");
        buf_printf(out, "opsdb_query_cache_size_bytes %llu\n", (unsigned long long)cs.bytes);
        header(out, "opsdb_query_cache_entries", "gauge", "Cached answers.");
        buf_printf(out, "opsdb_query_cache_entries %llu\n", (unsigned long long)cs.entries);
    }
    header(out, "opsdb_schema_version", "gauge", "Schema version of the open database.");
    buf_printf(out, "opsdb_schema_version %d\n", schema_version());
}

void handle_metrics(struct http_server *srv, struct request *req, struct response *res)
{
    (void)req;
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    metrics_write(srv, &res->body);
}
