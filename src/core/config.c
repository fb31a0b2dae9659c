/*
 * Configuration: one table of options — name, type, where it lives in struct config, default,
 * bounds and help. The YAML file, command-line flags and OPSDB_* environment variables all set
 * options through config_set(), so every source gets the same checks and messages.
 */
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

enum opt_type { OPT_STRING, OPT_INT, OPT_DURATION, OPT_BYTES, OPT_CHOICE };

struct option {
    const char *name;
    enum opt_type type;
    size_t offset;
    size_t size; /* OPT_STRING/OPT_CHOICE: buffer size */
    const char *default_text;
    double min, max;
    const char *choices; /* OPT_CHOICE: '|'-separated */
    const char *help;
};

#define STR(n, f, d, h)                                                                            \
    {                                                                                              \
        n, OPT_STRING, offsetof(struct config, f), sizeof(((struct config *)0)->f), d, 0, 0, NULL, \
            h                                                                                      \
    }
#define INTO(n, f, d, lo, hi, h)                                                                   \
    {                                                                                              \
        n, OPT_INT, offsetof(struct config, f), 0, d, lo, hi, NULL, h                              \
    }
#define DUR(n, f, d, lo, hi, h)                                                                    \
    {                                                                                              \
        n, OPT_DURATION, offsetof(struct config, f), 0, d, lo, hi, NULL, h                         \
    }
#define BYTES(n, f, d, lo, hi, h)                                                                  \
    {                                                                                              \
        n, OPT_BYTES, offsetof(struct config, f), 0, d, lo, hi, NULL, h                            \
    }
#define CHOICE(n, f, d, c, h)                                                                      \
    {                                                                                              \
        n, OPT_CHOICE, offsetof(struct config, f), sizeof(((struct config *)0)->f), d, 0, 0, c, h  \
    }

static const struct option options[] = {
    STR("db", db, "./data/operational_data.db", "database: a SQLite file path"),
    STR("listen", listen, "127.0.0.1:8470", "HTTP listen address host:port"),
    CHOICE("log.level", log_level, "info", "debug|info|warn|error",
           "least severe log level written"),
    STR("log.file", log_file, "",
        "file `opsdb serve` appends its log lines to, instead of stderr (created 0640 in an "
        "existing directory; reopened on SIGHUP); empty: stderr only"),
    BYTES("log.max_size", log_max_bytes, "10MiB", 0, 1024.0 * 1024 * 1024,
          "log.file is rotated to log.file.1.gz before a line would take it past this size "
          "(0 = no size limit; see docs/logging.md)"),
    DUR("log.max_age", log_max_age_ms, "1d", 0, 3650.0 * 86400000,
        "log.file is rotated once opsdb has had it open this long (0 = no age limit)"),
    INTO("log.keep", log_keep, "7", 0, 1000,
         "rotated log files kept (log.file.1.gz is the newest); older ones are deleted"),
    BYTES("http.max_body_bytes", max_body_bytes, "64MiB", 1024, 1024.0 * 1024 * 1024,
          "largest request body accepted (413 beyond; after gzip decoding)"),
    INTO("http.max_connections", max_connections, "256", 4, 10000, "concurrent HTTP connections"),
    INTO("ingest.max_rows_per_request", max_rows_per_request, "1000000", 1, 100000000,
         "rows or points in one request (413 beyond)"),
    DUR("ingest.max_future", max_future_ms, "5m", 0, 365.0 * 86400000,
        "how far after now a timestamp may be"),
    INTO("writer.max_group_rows", writer_max_group_rows, "500000", 1, 100000000,
         "rows committed in one group commit at most"),
    INTO("writer.queue_max_rows", writer_queue_max_rows, "4000000", 1000, 1000000000,
         "rows waiting for the writer before new requests wait (back-pressure)"),
    DUR("query.timeout", query_timeout_ms, "3s", 10, 3600000, "time limit of one read-only query"),
    BYTES("query.cache_bytes", query_cache_bytes, "64MiB", 0, 64.0 * 1024 * 1024 * 1024,
          "memory for cached view and series answers (0 turns the cache off)"),
    INTO("query.max_rows", query_max_rows, "10000", 1, 10000000, "rows one query may return"),
    DUR("storage.compress_after", storage_compress_after_ms, "2h", 0, 3650.0 * 86400000,
        "a past day of metric samples, all older than this, is compacted from its chunk per "
        "request into one chunk per series (0 = never)"),
    DUR("storage.compress_events_after", storage_compress_events_after_ms, "1d", 0,
        3650.0 * 86400000,
        "event partitions whose whole window is older than this are packed column-wise with "
        "zstd, readable as before; a late row unpacks its partition again (0 = never)"),
    DUR("storage.pack_quiet", storage_pack_quiet_ms, "10m", 0, 86400000.0,
        "an event partition that got rows within this long is not packed yet: a backfill "
        "streaming into an old day would otherwise be packed and unpacked again and again "
        "(0 = pack as soon as it is past storage.compress_events_after)"),
    STR("alerting.rule_files", alert_rule_files, "",
        "alert rule files (YAML groups shaped like Prometheus rule files), a list or "
        "comma-separated; relative paths are read from the config file's directory; empty: "
        "no rules"),
    CHOICE("alerting.default_rules", alert_default_rules, "on", "on|off",
           "run the default rule set (docs/alerts.md; `opsdb alerts defaults` prints it) beside "
           "alerting.rule_files; a rule file's group of the same name replaces a default group"),
    INTO("alerting.flapping_transitions", alert_flapping_transitions, "6", 0, 1000,
         "an alert that changes state more often than this within alerting.flapping_window is "
         "flapping: notified once, then recorded as suppressed until it calms down (0 = off)"),
    DUR("alerting.flapping_window", alert_flapping_window_ms, "30m", 1000, 86400000.0,
        "the window of alerting.flapping_transitions"),
    DUR("alerting.correlation_window", alert_correlation_window_ms, "10m", 1000, 86400000.0,
        "alerts that fire on the same host, component or pipeline within this of an incident's "
        "last alert join that incident (GET /api/v1/incidents)"),
    DUR("alerting.interval", alert_interval_ms, "15s", 1000, 86400000.0,
        "how often a rule group is evaluated when it does not say (threshold rules are also "
        "evaluated as their table's rows are committed)"),
    STR("jobs.timezone", jobs_timezone, "UTC",
        "time zone of job schedules (a name of /usr/share/zoneinfo, like Europe/Berlin); daylight "
        "saving changes are handled as cron does (docs/jobs.md)"),
    CHOICE("jobs.auto_create", jobs_auto_create, "on", "on|off",
           "a ping for a job name not yet known creates that external job (as Healthchecks' "
           "auto-provisioning does)"),
    BYTES("jobs.output_bytes", jobs_output_bytes, "16KiB", 0, 16384,
          "the last bytes of a run's output (or a ping's body) kept in job_runs.output"),
    DUR("collection.silence", collection_silence_ms, "5m", 1000, 30.0 * 86400000,
        "collection_status: how long a source that does not say how often it delivers (a "
        "syslog or Graphite sender) may be silent before it counts as a gap; a source with an "
        "interval may be silent 3 intervals (at least 30 s)"),
    INTO("collection.max_sources", collection_max_sources, "10000", 1, 1000000,
         "sources collection_status keeps track of; heartbeats of more sources are not kept "
         "(a warning is logged once)"),
    STR("storage.archive_dir", storage_archive_dir, "",
        "directory where retention writes each event partition (zstd NDJSON plus a manifest) "
        "before dropping it; empty = dropped without an archive"),
    DUR("storage.archive_retention", storage_archive_retention_ms, "0", 0, 36500.0 * 86400000,
        "archives whose window ended longer ago than this are removed by retention (0 = kept "
        "forever)"),
    STR("backup.dir", backup_dir, "./data/backups",
        "directory of the backups (`opsdb backup`, `opsdb restore`, the backup jobs); a relative "
        "path is taken from the working directory, as db is"),
    INTO("backup.keep", backup_keep, "7", 1, 100000,
         "backups kept when pruning (`opsdb backup prune`, and after each scheduled backup): "
         "the newest ones; older ones are removed"),
    STR("backup.schedule", backup_schedule, "@daily",
        "when the builtin backup job takes a backup and prunes to backup.keep (a cron "
        "expression or @hourly, @daily, @weekly; times in UTC; empty: no scheduled backup)"),
    STR("backup.verify_schedule", backup_verify_schedule, "30 0 * * *",
        "when the builtin verify job restores the newest backup into a temporary file and "
        "checks it against its manifest (cron, UTC); the default, daily at 00:30, checks each "
        "daily backup half an hour after it was taken; empty: never"),
    DUR("storage.rollup_1m_retention", rollup_1m_retention_ms, "7d", 0, 36500.0 * 86400000,
        "per-minute rollups of system_metrics older than this are dropped by retention (0 = kept "
        "forever); older windows are answered from hourly rollups and raw data"),
    DUR("storage.event_rollup_1m_retention", event_rollup_1m_retention_ms, "35d", 0,
        36500.0 * 86400000,
        "per-minute rollups of api_usage, handler_metrics and error_logs older than this are "
        "dropped by retention (0 = kept forever); longer than raw rows by default, so a view's "
        "window reads minutes at both of its ends"),
    DUR("storage.rollup_1h_retention", rollup_1h_retention_ms, "400d", 0, 36500.0 * 86400000,
        "hourly and daily rollups, and pipeline_status's rows per run, older than this are "
        "dropped by retention (0 = kept forever); a run's row stays while raw rows of the run "
        "do"),
    DUR("storage.retention_interval", storage_retention_interval_ms, "1h", 0, 86400000,
        "how often the server applies the retention policies (the first time a minute after "
        "start; 0 = never: use `opsdb retention apply`)"),
    DUR("storage.compact_interval", storage_compact_interval_ms, "5m", 100, 86400000,
        "how often the server looks for samples to compress"),
    STR("jobs.compaction", jobs_compaction, "",
        "when the builtin job `compaction` compacts metric samples (storage.compress_after): a "
        "cron expression, `@every DURATION`, or `off` (only when run by hand); empty = every "
        "storage.compact_interval"),
    STR("jobs.compression", jobs_compression, "",
        "when the builtin job `compression` packs event partitions "
        "(storage.compress_events_after): cron, `@every DURATION` or `off`; empty = every "
        "storage.compact_interval"),
    STR("jobs.retention", jobs_retention, "",
        "when the builtin job `retention` applies the retention policies: cron, `@every "
        "DURATION` or `off`; empty = every storage.retention_interval (`off` when that is 0)"),
    STR("jobs.archiving", jobs_archiving, "15 2 * * *",
        "when the builtin job `archiving` removes the archives past storage.archive_retention "
        "and checks that every archive's manifest reads: cron, `@every DURATION` or `off` "
        "(default: daily at 02:15 in jobs.timezone)"),
    STR("jobs.integrity_check", jobs_integrity_check, "30 3 * * *",
        "when the builtin job `integrity_check` checks the database's structure (SQLite "
        "PRAGMA quick_check; it reads the whole file): cron, `@every DURATION` or `off` "
        "(default: daily at 03:30)"),
    STR("jobs.optimize", jobs_optimize, "45 4 * * 0",
        "when the builtin job `optimize` refreshes the query planner's statistics, frees pages "
        "where the file allows it and truncates the write-ahead log: cron, `@every DURATION` "
        "or `off` (default: Sundays at 04:45)"),
    INTO("store.reader_connections", reader_connections, "4", 1, 64,
         "read connections kept open for queries"),
    INTO("sqlite.cache_mib", sqlite_cache_mib, "64", 1, 16384,
         "page cache of the writer connection"),
    CHOICE("sqlite.synchronous", sqlite_synchronous, "full", "full|normal",
           "full: fsync every group commit (survives power loss); normal: survives a crash of "
           "opsdb but not of the machine"),
    INTO("health.cpu_warning", health_cpu_warning, "80", 0, 100,
         "system_health: cpu % for warning"),
    INTO("health.cpu_critical", health_cpu_critical, "95", 0, 100,
         "system_health: cpu % for critical"),
    INTO("health.memory_warning", health_memory_warning, "85", 0, 100, "system_health: memory %"),
    INTO("health.memory_critical", health_memory_critical, "95", 0, 100, "system_health: memory %"),
    INTO("health.disk_warning", health_disk_warning, "85", 0, 100, "system_health: disk %"),
    INTO("health.disk_critical", health_disk_critical, "95", 0, 100, "system_health: disk %"),
    STR("health.cpu_metric", health_cpu_metric, "cpu_usage",
        "system_health: metric holding cpu use in percent"),
    STR("health.memory_metric", health_memory_metric, "memory_usage",
        "system_health: metric holding memory use in percent"),
    STR("health.disk_metric", health_disk_metric, "disk_usage",
        "system_health: metric holding disk use in percent (the fullest series counts)"),
    DUR("health.stale_after", health_stale_ms, "2m", 1000, 30.0 * 86400000,
        "system_health: a host silent this long is stale"),
    STR("agent.server", agent_server, "",
        "`opsdb agent`: the server its rows go to (`--server`), e.g. http://db-1:8470"),
    STR("agent.token", agent_token, "",
        "`opsdb agent`: bearer token sent with every request (`--token`; better given as "
        "OPSDB_AGENT_TOKEN than on the command line); empty: none"),
    DUR("agent.interval", agent_interval_ms, "10s", 1000, 86400000.0,
        "`opsdb agent`: how often it collects the host and sends the rows (`--interval`)"),
    STR("agent.spool_dir", agent_spool_dir, "./data/agent-spool",
        "`opsdb agent`: directory of the batches the server has not taken yet (`--spool`); they "
        "survive a restart and are sent oldest first when the server answers again"),
    BYTES("agent.spool_max_bytes", agent_spool_max_bytes, "64MiB", 1024,
          1024.0 * 1024 * 1024 * 1024,
          "`opsdb agent`: bound of the spool (`--spool-max-bytes`); past it the oldest batches "
          "are dropped, with a warning"),
    DUR("agent.retry_max", agent_retry_max_ms, "30s", 100, 3600000,
        "`opsdb agent`: longest wait between two tries while the server does not answer (the "
        "wait starts at 1s and doubles)"),
    DUR("agent.timeout", agent_timeout_ms, "10s", 100, 600000,
        "`opsdb agent`: time limit of one request to the server (a request that takes longer is "
        "a failure: its batch is spooled)"),
    CHOICE("collection.self", collection_self, "on", "on|off",
           "`opsdb serve` collects the metrics of its own host and its own health "
           "(docs/collection.md); `--no-collect` turns it off too"),
    DUR("collection.interval", collection_interval_ms, "10s", 1000, 86400000.0,
        "how often `opsdb serve` collects its own host"),
    DUR("scrape.interval", scrape_interval_ms, "15s", 1000, 86400000.0,
        "how often a scrape job pulls its targets when it gives no scrape_interval (the jobs "
        "are the list scrape.configs; docs/collection.md)"),
    DUR("scrape.timeout", scrape_timeout_ms, "10s", 100, 86400000.0,
        "time limit of one scrape when its job gives no scrape_timeout (never longer than the "
        "job's interval)"),
    BYTES("scrape.body_limit", scrape_body_limit_bytes, "16MiB", 1024, 1024.0 * 1024 * 1024,
          "largest page a scrape reads (after gzip decoding); a larger one fails the scrape (up "
          "0)"),
    INTO("scrape.sample_limit", scrape_sample_limit, "50000", 1, 10000000,
         "samples one scrape may return; more fails the scrape (up 0), as Prometheus' "
         "sample_limit does"),
    BYTES("remote_write.max_decoded_bytes", remote_write_max_decoded_bytes, "32MiB", 1024,
          1024.0 * 1024 * 1024,
          "largest remote-write body after snappy decoding (413 beyond; the body as sent is "
          "bounded by http.max_body_bytes)"),
    STR("logs.access_format", logs_access_format,
        "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
        "\"$http_referer\" \"$http_user_agent\"",
        "format of access logs read as kind `access` (`opsdb ingest api_usage --format access`, "
        "`--tail access:PATH`): nginx log_format syntax ($variables and literal text) or Apache "
        "LogFormat syntax (%h %t \"%r\" %>s %b %D ...); default: nginx's combined format "
        "(docs/collection.md)"),
    STR("logs.plain_pattern", logs_plain_pattern,
        "^\\[?%{TIME}\\]?[[:space:]]+\\[?%{LEVEL}\\]?:?[[:space:]]+(\\[%{COMPONENT}\\]:?[[:space:]]"
        "+)?"
        "%{MESSAGE}$",
        "pattern of an event's first line in plain-text application logs: a POSIX extended "
        "regular expression with the placeholders %{TIME}, %{LEVEL}, %{COMPONENT}, %{SERVICE}, "
        "%{HOST}, %{TYPE}, %{TRACE} and %{MESSAGE} (docs/collection.md)"),
    STR("logs.service", logs_service, "",
        "service column of rows read from logs; empty: named after the log file "
        "(/var/log/nginx/api.access.log is api; access.log is named after its directory)"),
    STR("logs.host", logs_host, "",
        "host column of rows read from logs; empty: the host name of the machine reading them"),
    CHOICE("logs.min_level", logs_min_level, "warning",
           "debug|info|notice|warning|error|critical|fatal",
           "application log events less severe than this are skipped"),
    BYTES("logs.max_line_bytes", logs_max_line_bytes, "64KiB", 256, 16.0 * 1024 * 1024,
          "a log line longer than this is cut to it (and counted as truncated)"),
    DUR("logs.multiline_wait", logs_multiline_wait_ms, "2s", 0, 3600000,
        "a tailed application log idle this long completes the event whose stack trace lines "
        "were being joined"),
    DUR("logs.rotate_wait", logs_rotate_wait_ms, "5s", 0, 3600000,
        "after a tailed log is renamed away (rotation), it is read on until the new file has "
        "data or it has been quiet this long"),
    STR("syslog.udp", syslog_udp, "",
        "receive syslog messages (RFC 5424 and RFC 3164) over UDP on this host:port, e.g. "
        "127.0.0.1:5514 (0.0.0.0:514 needs privileges); empty: off (docs/collection.md)"),
    STR("syslog.tcp", syslog_tcp, "",
        "receive syslog over TCP on this host:port (octet counting or newline framing, "
        "detected per message); empty: off"),
    CHOICE("syslog.min_severity", syslog_min_severity, "warning",
           "emerg|alert|crit|err|warning|notice|info|debug",
           "syslog messages of this severity or worse become error_logs rows; the others "
           "are counted and dropped"),
    BYTES("syslog.max_message_size", syslog_max_message_bytes, "8KiB", 480, 65536,
          "longer syslog messages are cut to this size (and counted)"),
    INTO("syslog.max_connections", syslog_max_connections, "256", 1, 10000,
         "syslog TCP connections open at once; more are refused (and counted)"),
    DUR("syslog.flush_interval", syslog_flush_ms, "200ms", 10, 60000,
        "longest a received syslog message waits before its batch is written"),
    STR("graphite.udp", graphite_udp, "",
        "receive Graphite plaintext (path value timestamp) over UDP on this host:port, e.g. "
        "127.0.0.1:2003; empty: off"),
    STR("graphite.tcp", graphite_tcp, "",
        "receive Graphite plaintext over TCP on this host:port (collectd write_graphite, "
        "Netdata, carbon clients); empty: off"),
    STR("graphite.templates", graphite_templates, "",
        "templates that map Graphite paths to host, component, metric and labels, a list of "
        "\"[filter] template [tag=value,...]\" (or lines separated by ;), tried before the "
        "built-in ones for collectd, Netdata and the fallback host.metric* (docs/collection.md)"),
    BYTES("graphite.max_line_size", graphite_max_line_bytes, "4KiB", 64, 65536,
          "longer Graphite lines are rejected (and counted)"),
    INTO("graphite.max_connections", graphite_max_connections, "256", 1, 10000,
         "Graphite TCP connections open at once; more are refused (and counted)"),
    DUR("graphite.flush_interval", graphite_flush_ms, "200ms", 10, 60000,
        "longest a received Graphite sample waits before its batch is written"),
    STR("agent.tail", agent_tail, "",
        "`opsdb agent`: log files it follows and ships (`--tail KIND:PATH`, repeatable), a list "
        "or comma-separated; KIND is nginx, nginx_timed, apache, access, json or plain "
        "(docs/collection.md); empty: none"),
    CHOICE("agent.host", agent_host, "on", "on|off",
           "`opsdb agent` collects this host's metrics; off (`--no-host`): it ships only the "
           "files of agent.tail"),
    DUR("agent.tail_poll", agent_tail_poll_ms, "1s", 100, 60000,
        "`opsdb agent`: how often each tailed file is read for new lines"),
    CHOICE("auth.mode", auth_mode, "auto", "auto|required|off",
           "whether HTTP requests need a token (docs/security.md): required, off (on an address "
           "that is not loopback only with `opsdb serve --insecure`), or auto: off when listen "
           "is a loopback address, required on any other (`opsdb serve --auth`)"),
    STR("http.allowed_origins", allowed_origins, "",
        "origins (scheme://host[:port], comma-separated) besides the server's own whose web "
        "pages may send requests that change state; a browser request from any other origin "
        "is refused with 403 (docs/security.md)"),
    STR("tls.cert", tls_cert, "",
        "`opsdb serve` answers HTTPS only, with this certificate (PEM: the server's certificate "
        "first, then its intermediates; `--tls-cert`); reread on SIGHUP. Needs tls.key; empty: "
        "plain HTTP (docs/security.md)"),
    STR("tls.key", tls_key, "",
        "private key of tls.cert (PEM, unencrypted; `--tls-key`); reread with it on SIGHUP"),
    STR("agent.ca_file", agent_ca_file, "",
        "`opsdb agent`: CA certificates (PEM) an https:// server's certificate is verified "
        "against (`--ca-file`); empty: the system's CAs"),
    STR("alerting.ca_file", alert_ca_file, "",
        "CA certificates (PEM) that webhook, Alertmanager and email (STARTTLS) receivers verify "
        "their server against when they give no ca_file of their own; empty: the system's CAs"),
    STR("ca_file", ca_file, "",
        "CA certificates (PEM) the CLI's requests to a running server (`opsdb alerts`, `opsdb "
        "jobs`, `--server https://...`) verify it against (`--ca-file`, OPSDB_CA_FILE); empty: "
        "the system's CAs"),
    DUR("auth.session_ttl", auth_session_ttl_ms, "12h", 1000, 30.0 * 86400000,
        "a dashboard session (POST /api/v1/session) ends this long after it was opened; sessions "
        "are held in memory and end with the server too (docs/security.md)"),
    BYTES("http.max_header_bytes", max_header_bytes, "16KiB", 1024, 1024.0 * 1024,
          "request line and headers of one request at most, in bytes (431 beyond; "
          "docs/security.md)"),
    INTO("http.max_connections_per_client", max_connections_per_client, "64", 0, 10000,
         "HTTP connections one client address may hold open at once; more are closed at once "
         "(0 = no limit beyond http.max_connections)"),
    DUR("http.connection_timeout", connection_timeout_ms, "30s", 1000, 3600000,
        "an HTTP connection on which nothing arrives or is taken for this long is closed (an "
        "idle keep-alive connection, a client that stopped sending its request)"),
    DUR("http.request_timeout", request_timeout_ms, "60s", 1000, 3600000,
        "a request must have arrived whole (line, headers and body) this long after its "
        "connection was ready for it (the connect, or the previous answer); a client that "
        "sends it slower, even a byte at a time, has its connection closed"),
    INTO("http.rate_limit", rate_limit, "0", 0, 1000000,
         "requests per second one client may make on average (a token bucket per bearer token, "
         "or per address for requests without one); beyond it 429 with Retry-After "
         "(0 = off; /healthz and /readyz are never limited)"),
    INTO("http.rate_limit_burst", rate_limit_burst, "0", 0, 10000000,
         "requests one client may make at once above http.rate_limit (the bucket's size; 0 = "
         "one second's worth, http.rate_limit)"),
    INTO("ingest.max_json_depth", max_json_depth, "32", 2, 256,
         "JSON bodies: objects and arrays nested deeper than this are rejected (400)"),
    BYTES("ingest.max_string_bytes", max_string_bytes, "1MiB", 64, 64.0 * 1024 * 1024,
          "JSON bodies: a string (a value or a member name, before unescaping) longer than this "
          "rejects the request (400) before it is copied"),
    INTO("limits.max_series_per_metric", max_series_per_metric, "100000", 0, 100000000,
         "series (host, component, labels) one metric may have; a sample that would create "
         "one more is rejected with its request (400, nothing written; 0 = no limit)"),
    INTO("limits.max_labels", max_labels, "64", 0, 1000,
         "labels one metric sample may carry (members of its labels object; host and "
         "component are columns, not labels); more rejects the sample (400; 0 = no limit)"),
};

#define NOPTIONS (sizeof options / sizeof options[0])

static void *field(struct config *c, const struct option *o)
{
    return (char *)c + o->offset;
}

static int parse_bytes(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !isfinite(v) || strpbrk(s, "xX"))
        return -1; /* also refuses nan, inf and hex */
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"KiB", 1024.0},
                 {"MiB", 1048576.0},
                 {"GiB", 1073741824.0},
                 {"KB", 1000.0},
                 {"MB", 1e6},
                 {"GB", 1e9},
                 {"k", 1024.0},
                 {"m", 1048576.0},
                 {"g", 1073741824.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suffix) == 0 && (units[i].suffix[0] || *end == '\0')) {
            /* too big for int64: kept as the largest value, which the bounds check refuses */
            *out = v * units[i].mult > 9e18 ? INT64_MAX : (int64_t)(v * units[i].mult);
            return 0;
        }
    }
    return -1;
}

static int set_option(struct config *c, const struct option *o, const char *value, struct err *e)
{
    int64_t v = 0;
    char *end;
    switch (o->type) {
    case OPT_STRING:
        if (strlen(value) >= o->size)
            return err_set(e, E_INVALID, "option %s: value is longer than %zu bytes", o->name,
                           o->size - 1);
        if (strcmp(o->name, "jobs.timezone") == 0 && !time_zone_known(value))
            return err_set(e, E_INVALID,
                           "option %s: '%s' is not a time zone of /usr/share/zoneinfo (like UTC, "
                           "Europe/Berlin; Debian's tzdata package has them)",
                           o->name, value);
        snprintf(field(c, o), o->size, "%s", value);
        return 0;
    case OPT_CHOICE: {
        size_t len = strlen(value);
        const char *p = o->choices;
        while (*p) {
            size_t n = strcspn(p, "|");
            if (n == len && strncasecmp(p, value, len) == 0) {
                snprintf(field(c, o), o->size, "%.*s", (int)n, p);
                return 0;
            }
            p += n + (p[n] == '|');
        }
        return err_set(e, E_INVALID, "option %s: '%s' is not one of %s", o->name, value,
                       o->choices);
    }
    case OPT_INT:
        errno = 0;
        v = strtoll(value, &end, 10);
        if (errno || end == value || *end)
            return err_set(e, E_INVALID, "option %s: '%s' is not an integer", o->name, value);
        break;
    case OPT_DURATION:
        if (!time_parse_duration(value, &v))
            return err_set(e, E_INVALID,
                           "option %s: '%s' is not a duration (e.g. 500ms, 30s, 5m, 2h, 7d)",
                           o->name, value);
        break;
    case OPT_BYTES:
        if (parse_bytes(value, &v) != 0)
            return err_set(e, E_INVALID, "option %s: '%s' is not a size (e.g. 512KiB, 64MiB)",
                           o->name, value);
        break;
    }
    if ((double)v < o->min || (double)v > o->max)
        return err_set(e, E_INVALID, "option %s: %s is outside %.15g..%.15g", o->name, value,
                       o->min, o->max);
    *(int64_t *)field(c, o) = v;
    return 0;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NOPTIONS; i++) {
        int rc = set_option(c, &options[i], options[i].default_text, NULL);
        (void)rc;
    }
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        c->retention_days[i] = t[i].retention_days;
        c->partition_ms[i] = 86400000;
    }
}

static int set_partition(struct config *c, const char *table, const char *value, struct err *e)
{
    size_t n;
    const struct table *tables = schema_tables(&n);
    const struct table *t = schema_table(table);
    if (!t || t->kind != TABLE_EVENTS)
        return err_set(e, E_INVALID,
                       "option partition.%s: not a partitioned table (event tables: "
                       "api_usage, error_logs, pipeline_status, handler_metrics, "
                       "alert_history, job_runs)",
                       table);
    int64_t ms;
    bool ok = time_parse_duration(value, &ms) && ms >= 60000 && ms <= 366LL * 86400000 &&
              (86400000 % ms == 0 || ms % 86400000 == 0);
    if (!ok)
        return err_set(e, E_INVALID,
                       "option partition.%s: '%s' is not a partition window: a duration from 1m "
                       "to 366d that divides a day or is whole days (e.g. 1h, 1d, 7d)",
                       table, value);
    c->partition_ms[t - tables] = ms;
    return 0;
}

static int set_retention(struct config *c, const char *table, const char *value, struct err *e)
{
    size_t n;
    const struct table *tables = schema_tables(&n);
    const struct table *t = schema_table(table);
    if (!t)
        return err_set(e, E_INVALID, "option retention.%s: no such table", table);
    int64_t ms;
    if (!time_parse_duration(value, &ms) || ms % 86400000 != 0)
        return err_set(e, E_INVALID,
                       "option retention.%s: '%s' is not a whole number of days (e.g. 30d, 0 = "
                       "keep forever)",
                       table, value);
    c->retention_days[t - tables] = ms / 86400000;
    return 0;
}

int config_set(struct config *c, const char *name, const char *value, struct err *e)
{
    if (strncmp(name, "retention.", 10) == 0)
        return set_retention(c, name + 10, value, e);
    if (strncmp(name, "partition.", 10) == 0)
        return set_partition(c, name + 10, value, e);
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return set_option(c, &options[i], value, e);
    return err_set(e, E_INVALID, "unknown option '%s' (see docs/config.md)", name);
}

int config_apply_env(struct config *c, struct err *e)
{
    char envname[128];
    for (size_t i = 0; i < NOPTIONS; i++) {
        size_t k = (size_t)snprintf(envname, sizeof envname, "OPSDB_");
        for (const char *p = options[i].name; *p && k + 1 < sizeof envname; p++)
            envname[k++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
        envname[k] = '\0';
        const char *v = getenv(envname);
        struct err local;
        if (!e)
            e = &local;
        if (v && set_option(c, &options[i], v, e) != 0) {
            char msg[sizeof e->msg];
            snprintf(msg, sizeof msg, "%s", e->msg);
            return err_set(e, E_INVALID, "environment %s: %.400s", envname, msg);
        }
    }
    return 0;
}

/* ---- YAML ---------------------------------------------------------------------------------- */

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int load_fp_rules(struct config *c, yaml_document_t *doc, yaml_node_t *seq, struct err *e)
{
    if (seq->type != YAML_SEQUENCE_NODE)
        return err_set(e, E_INVALID,
                       "line %zu: fingerprint.rules must be a list of {regex, "
                       "replacement}",
                       seq->start_mark.line + 1);
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *m = yaml_document_get_node(doc, *it);
        const char *regex = NULL, *repl = "<x>";
        if (m->type != YAML_MAPPING_NODE)
            return err_set(e, E_INVALID, "line %zu: a fingerprint rule must be a map",
                           m->start_mark.line + 1);
        for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
             p++) {
            const char *k = scalar(yaml_document_get_node(doc, p->key));
            const char *v = scalar(yaml_document_get_node(doc, p->value));
            if (k && strcmp(k, "regex") == 0)
                regex = v;
            else if (k && strcmp(k, "replacement") == 0 && v)
                repl = v;
            else
                return err_set(e, E_INVALID, "line %zu: unknown key '%s' in fingerprint rule",
                               m->start_mark.line + 1, k ? k : "?");
        }
        if (!regex)
            return err_set(e, E_INVALID, "line %zu: fingerprint rule without regex",
                           m->start_mark.line + 1);
        if (c->nfp_rules >= CONFIG_MAX_FP_RULES)
            return err_set(e, E_LIMIT, "too many fingerprint rules (limit %d)",
                           CONFIG_MAX_FP_RULES);
        if (strlen(regex) >= sizeof c->fp_regex[0] || strlen(repl) >= sizeof c->fp_replacement[0])
            return err_set(e, E_INVALID, "line %zu: fingerprint rule too long",
                           m->start_mark.line + 1);
        snprintf(c->fp_regex[c->nfp_rules], sizeof c->fp_regex[0], "%s", regex);
        snprintf(c->fp_replacement[c->nfp_rules], sizeof c->fp_replacement[0], "%s", repl);
        c->nfp_rules++;
    }
    return 0;
}

/* A list option (alerting.rule_files, agent.tail) given as a YAML list: kept as the
 * comma-separated text --set takes. */
static int load_list(struct config *c, yaml_document_t *doc, yaml_node_t *seq, const char *name,
                     struct err *e)
{
    char list[sizeof c->agent_tail] = "";
    size_t len = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        const char *text = scalar(item);
        if (!text || !*text || strchr(text, ','))
            return err_set(e, E_INVALID, "line %zu: %s must be a list of texts without commas",
                           item->start_mark.line + 1, name);
        int n = snprintf(list + len, sizeof list - len, "%s%s", len ? "," : "", text);
        if (n < 0 || (size_t)n >= sizeof list - len)
            return err_set(e, E_LIMIT, "line %zu: %s is longer than %zu bytes",
                           item->start_mark.line + 1, name, sizeof list - 1);
        len += (size_t)n;
    }
    return config_set(c, name, list, e);
}

/* graphite.templates as a YAML list: one template per line of the option's text. */
static int load_graphite_templates(struct config *c, yaml_document_t *doc, yaml_node_t *seq,
                                   struct err *e)
{
    struct buf text;
    buf_init(&text, sizeof c->graphite_templates - 1);
    int rc = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top && !rc; it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        const char *tpl = scalar(item);
        if (!tpl || strchr(tpl, '\n'))
            rc = err_set(e, E_INVALID,
                         "line %zu: graphite.templates must be a list of one-line "
                         "templates",
                         item->start_mark.line + 1);
        else if (buf_printf(&text, "%s%s", text.len ? "\n" : "", tpl) != 0)
            rc = err_set(e, E_LIMIT, "line %zu: graphite.templates is longer than %zu bytes",
                         item->start_mark.line + 1, sizeof c->graphite_templates - 1);
    }
    if (!rc)
        rc = config_set(c, "graphite.templates", text.data ? text.data : "", e);
    buf_release(&text);
    return rc;
}

static int load_node(struct config *c, yaml_document_t *doc, yaml_node_t *n, const char *prefix,
                     struct err *e)
{
    if (n->type != YAML_MAPPING_NODE)
        return err_set(e, E_INVALID, "line %zu: expected a map of options", n->start_mark.line + 1);
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        const char *key = scalar(k);
        if (!key)
            return err_set(e, E_INVALID, "line %zu: option names must be text",
                           k->start_mark.line + 1);
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", key);
        int rc;
        if (strcmp(name, "fingerprint.rules") == 0)
            rc = load_fp_rules(c, doc, v, e);
        else if ((strcmp(name, "alerting.rule_files") == 0 || strcmp(name, "agent.tail") == 0) &&
                 v->type == YAML_SEQUENCE_NODE)
            rc = load_list(c, doc, v, name, e);
        else if (strcmp(name, "graphite.templates") == 0 && v->type == YAML_SEQUENCE_NODE)
            rc = load_graphite_templates(c, doc, v, e);
        else if (strcmp(name, "alerting.receivers") == 0 || strcmp(name, "alerting.route") == 0 ||
                 strcmp(name, "alerting.inhibit_rules") == 0 ||
                 strcmp(name, "alerting.maintenance") == 0 ||
                 strcmp(name, "alerting.dependencies") == 0 ||
                 strcmp(name, "alerting.escalations") == 0)
            rc = 0; /* read by the alert module from config_path (docs/alerts.md) */
        else if (strcmp(name, "jobs.definitions") == 0)
            rc = 0; /* read by the jobs module from config_path (docs/jobs.md) */
        else if (strcmp(name, "scrape.configs") == 0 ||
                 (strcmp(name, "scrape") == 0 && v->type == YAML_SEQUENCE_NODE))
            rc = 0; /* read by the scrape jobs from config_path (docs/collection.md) */
        else if (v->type == YAML_MAPPING_NODE)
            rc = load_node(c, doc, v, name, e);
        else if (v->type == YAML_SCALAR_NODE)
            rc = config_set(c, name, scalar(v), e);
        else
            rc = err_set(e, E_INVALID, "option %s: expected a value, not a list", name);
        if (rc != 0) {
            if (v->type == YAML_SCALAR_NODE && !strstr(e->msg, "line ")) {
                char msg[sizeof e->msg];
                snprintf(msg, sizeof msg, "%s", e->msg);
                err_set(e, rc, "line %zu: %.400s", v->start_mark.line + 1, msg);
            }
            return rc;
        }
    }
    return 0;
}

/* Loads a YAML document over c, read from f or else from text[0..len); name (the file, or
 * what a text is called) prefixes the messages. */
static int load_yaml(struct config *c, const char *name, FILE *f, const char *text, size_t len,
                     struct err *e)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    if (f)
        yaml_parser_set_input_file(&parser, f);
    else
        yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = err_set(e, E_INVALID, "%s line %zu: %s", name, parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0)) {
        rc = load_node(c, &doc, root, "", e);
        if (rc != 0) {
            char msg[sizeof e->msg];
            snprintf(msg, sizeof msg, "%s", e->msg);
            err_set(e, rc, "%s: %.400s", name, msg);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int config_load_file(struct config *c, const char *path, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, E_IO, "cannot open config file %s: %s", path, strerror(errno));
    snprintf(c->config_path, sizeof c->config_path, "%s", path);
    int rc = load_yaml(c, path, f, NULL, 0, e);
    fclose(f);
    return rc;
}

int config_load_text(struct config *c, const char *name, const char *text, size_t len,
                     struct err *e)
{
    return load_yaml(c, name, NULL, text, len, e);
}

int config_markdown(struct buf *b)
{
    buf_printf(b, "# Configuration reference\n\n"
                  "Generated by `opsdb config --markdown` from the option table in "
                  "`src/core/config.c`.\n\n"
                  "Options come from the YAML file given with `--config FILE` (nested maps: "
                  "`http: {max_body_bytes: 1MiB}` is `http.max_body_bytes`), then from "
                  "command-line flags (`--set name=value`, and the shorthands `--db`, "
                  "`--listen`), then from environment variables `OPSDB_<NAME>` with dots as "
                  "underscores (`OPSDB_HTTP_MAX_BODY_BYTES`), each overriding the one before.\n\n"
                  "| option | default | description |\n|---|---|---|\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct option *o = &options[i];
        buf_printf(b, "| `%s` | `%s` | %s", o->name, o->default_text, o->help);
        if (o->type == OPT_CHOICE) {
            buf_printf(b, " (one of ");
            for (const char *p = o->choices; *p;) {
                size_t n = strcspn(p, "|");
                buf_printf(b, "%s`%.*s`", p == o->choices ? "" : ", ", (int)n, p);
                p += n + (p[n] == '|');
            }
            buf_printf(b, ")");
        }
        buf_printf(b, " |\n");
    }
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++)
        buf_printf(b,
                   "| `retention.%s` | `%dd` | rows older than this are rejected at ingestion, and "
                   "`opsdb retention status\\|verify` reports stored data past it (0 = keep "
                   "forever) |\n",
                   t[i].name, t[i].retention_days);
    for (size_t i = 0; i < n; i++)
        if (t[i].kind == TABLE_EVENTS)
            buf_printf(b,
                       "| `partition.%s` | `1d` | time window of one partition (one table each; "
                       "retention drops whole partitions); a duration that divides a day or is "
                       "whole days; a change shapes new partitions only |\n",
                       t[i].name);
    buf_printf(b, "| `fingerprint.rules` | `[]` | list of `{regex: ..., replacement: ...}` applied "
                  "to error messages after the built-in folding of numbers, ids and quoted "
                  "strings |\n");
    buf_printf(b, "| `scrape.configs` | `[]` | the Prometheus scrape jobs: a list of `{job_name, "
                  "targets, scrape_interval, ...}` shaped like Prometheus' scrape_configs (also "
                  "accepted as a list right under `scrape:`; docs/collection.md) |\n");
    return 0;
}

struct fingerprint_rules *config_fingerprint_rules(const struct config *c, struct err *e)
{
    struct fingerprint_rules *r = fingerprint_rules_new();
    for (size_t i = 0; i < c->nfp_rules; i++) {
        if (fingerprint_rules_add(r, c->fp_regex[i], c->fp_replacement[i], e) != 0) {
            fingerprint_rules_free(&r);
            return NULL;
        }
    }
    return r;
}
