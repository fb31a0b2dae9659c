/*
 * The schema of the operational_data database, as data. Each table is a list of columns with
 * their types, limits and documentation; the DDL of every back end, ingestion validation, the
 * JSON/CSV mapping and docs/schema.md are derived from these rows. Adding a column is one line.
 */
#include "core.h"

#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Bump together with a migration in store/sqlite_schema.c. */
#define SCHEMA_VERSION 17

static const char *const levels[] = {"debug", "info",     "notice", "warning",
                                     "error", "critical", "fatal",  NULL};
static const char *const methods[] = {"GET",     "HEAD",    "POST",  "PUT",   "PATCH", "DELETE",
                                      "OPTIONS", "CONNECT", "TRACE", "OTHER", NULL};
static const char *const pipeline_states[] = {"queued",  "running",   "succeeded", "failed",
                                              "skipped", "cancelled", NULL};
static const char *const alert_states[] = {
    "pending", "firing", "acknowledged", "escalated", "suppressed", "resolved", NULL};
static const char *const severities[] = {"info", "warning", "critical", "page", NULL};
static const char *const delivery_states[] = {"ok", "failed", "retrying", "dropped", NULL};
static const char *const incident_states[] = {"open", "resolved", NULL};
static const char *const job_kinds[] = {"builtin", "command", "external", NULL};
static const char *const job_states[] = {"ok",    "running", "failed",    "missed", "paused",
                                         "never", "removed", "cancelled", NULL};

/* Shorthands keep every column on one line. */
#define TS(name, req, doc)                                                                         \
    {                                                                                              \
        name, COL_TS, req, NULL, 0, 0, 0, NULL, false, false, doc                                  \
    }
#define TEXT(name, req, len, doc)                                                                  \
    {                                                                                              \
        name, COL_TEXT, req, NULL, 0, 0, len, NULL, false, false, doc                              \
    }
#define TEXTD(name, len, def, doc)                                                                 \
    {                                                                                              \
        name, COL_TEXT, false, NULL, 0, 0, len, def, false, false, doc                             \
    }
#define KEY(name, req, len, def, doc)                                                              \
    {                                                                                              \
        name, COL_TEXT, req, NULL, 0, 0, len, def, true, false, doc                                \
    }
#define ENUM(name, req, set, def, doc)                                                             \
    {                                                                                              \
        name, COL_TEXT, req, set, 0, 0, 32, def, false, false, doc                                 \
    }
#define INT(name, req, lo, hi, def, doc)                                                           \
    {                                                                                              \
        name, COL_INT, req, NULL, lo, hi, 0, def, false, false, doc                                \
    }
#define REAL(name, req, lo, hi, doc)                                                               \
    {                                                                                              \
        name, COL_REAL, req, NULL, lo, hi, 0, NULL, false, false, doc                              \
    }
#define JSON(name, len, doc)                                                                       \
    {                                                                                              \
        name, COL_JSON, false, NULL, 0, 0, len, NULL, false, false, doc                            \
    }
#define BOOL(name, def, doc)                                                                       \
    {                                                                                              \
        name, COL_BOOL, false, NULL, 0, 1, 0, def, false, false, doc                               \
    }

#define BIG 9.0e15 /* integers stay exact in a double below 2^53 */

static const struct column system_metrics_cols[] = {
    TS("ts", true, "time of the sample"),
    KEY("host", false, 255, "''", "host that produced the sample"),
    KEY("component", false, 255, "''", "component on the host (web, db, the agent, ...)"),
    KEY("metric", true, 255, NULL, "metric name, e.g. cpu_usage"),
    REAL("value", true, 0, 0, "sample value (finite double)"),
    {"labels", COL_JSON, false, NULL, 0, 0, 4096, "'{}'", true, false,
     "other labels as a JSON object of strings"},
};
static const struct table_index system_metrics_idx[] = {
    {"series_host", "host, component", "component-based: all series of a host/component"},
};

static const struct column api_usage_cols[] = {
    TS("ts", true, "time the request finished"),
    TEXTD("service", 255, "''", "service that answered"),
    ENUM("method", true, methods, NULL, "HTTP method"),
    TEXT("endpoint", true, 1024, "route template, e.g. /api/users/:id"),
    INT("status_code", true, 100, 599, NULL, "HTTP status code"),
    REAL("latency_ms", false, 0, 86400000, "time to answer, milliseconds"),
    INT("request_bytes", false, 0, BIG, NULL, "request body bytes"),
    INT("response_bytes", false, 0, BIG, NULL, "response body bytes"),
    TEXTD("client_id", 255, NULL, "API client (key id, user, IP)"),
    TEXTD("host", 255, "''", "host that served the request"),
    INT("count", false, 1, BIG, "1", "requests this row stands for (pre-counted groups)"),
};
static const struct table_index api_usage_idx[] = {
    {"ts", "ts", "timestamp-based: windows over all endpoints"},
    {"endpoint_ts", "endpoint, ts", "performance: one endpoint over time"},
    {"service_ts", "service, ts", "component-based: one service over time"},
};

static const struct column error_logs_cols[] = {
    TS("ts", true, "time of the event"),
    TEXTD("service", 255, "''", "service that logged it"),
    TEXTD("component", 255, "''", "component within the service"),
    TEXTD("host", 255, "''", "host"),
    ENUM("level", true, levels, NULL,
         "severity: debug, info, notice, warning, error, critical, fatal"),
    TEXTD("error_type", 255, "''", "exception class or error kind"),
    TEXT("message", true, 16384, "the message"),
    TEXT("stack_trace", false, 65536, "stack trace, lines joined with \\n"),
    {"fingerprint", COL_TEXT, false, NULL, 0, 0, 64, NULL, false, true,
     "groups the same error: hash of the normalised message, type and component (derived when "
     "absent)"},
    TEXT("trace_id", false, 128, "distributed trace id"),
    JSON("context", 16384, "other fields as a JSON object"),
};
static const struct table_index error_logs_idx[] = {
    {"ts", "ts", "timestamp-based"},
    {"fingerprint_ts", "fingerprint, ts", "one error group over time"},
    {"component_ts", "component, ts", "component-based"},
};

static const struct column pipeline_status_cols[] = {
    TS("ts", true, "time of the state change"),
    TEXT("pipeline", true, 255, "pipeline name"),
    TEXT("run_id", true, 255, "run identifier"),
    TEXTD("stage", 255, "''", "stage within the run ('' for the run as a whole)"),
    ENUM("status", true, pipeline_states, NULL,
         "queued, running, succeeded, failed, skipped, cancelled"),
    TS("started_at", false, "run/stage start"),
    TS("finished_at", false, "run/stage end"),
    INT("duration_ms", false, 0, BIG, NULL, "run/stage duration"),
    INT("records_in", false, 0, BIG, NULL, "records read"),
    INT("records_out", false, 0, BIG, NULL, "records written"),
    INT("records_failed", false, 0, BIG, NULL, "records that failed"),
    TEXT("message", false, 4096, "status message or error"),
};
static const struct table_index pipeline_status_idx[] = {
    {"ts", "ts", "timestamp-based"},
    {"pipeline_ts", "pipeline, ts", "one pipeline over time"},
    {"status_ts", "status, ts", "failed runs over time"},
};

static const struct column handler_metrics_cols[] = {
    TS("ts", true, "end of the interval"),
    TEXT("handler", true, 255, "handler (queue consumer, event handler) name"),
    TEXTD("component", 255, "''", "component"),
    TEXTD("host", 255, "''", "host"),
    INT("invocations", true, 0, BIG, NULL, "invocations in the interval"),
    INT("errors", false, 0, BIG, "0", "failed invocations"),
    INT("retries", false, 0, BIG, "0", "retried invocations"),
    REAL("duration_ms_avg", false, 0, 86400000, "mean duration, milliseconds"),
    REAL("duration_ms_p95", false, 0, 86400000, "95th percentile duration, milliseconds"),
    INT("queue_depth", false, 0, BIG, NULL, "messages waiting at the end of the interval"),
};
static const struct table_index handler_metrics_idx[] = {
    {"ts", "ts", "timestamp-based"},
    {"handler_ts", "handler, ts", "performance: one handler over time"},
    {"component_ts", "component, ts", "component-based"},
};

static const struct column alert_history_cols[] = {
    TS("ts", true, "time of the transition"),
    TEXT("alert_id", true, 128, "identity of the alert (rule + labels)"),
    TEXT("rule", true, 255, "rule name"),
    TEXT("fingerprint", false, 64, "hash of rule and labels"),
    ENUM("severity", false, severities, "'warning'", "info, warning, critical, page"),
    ENUM("state", true, alert_states, NULL,
         "pending, firing, acknowledged, escalated, suppressed, resolved"),
    REAL("value", false, 0, 0, "value that caused the transition"),
    JSON("labels", 4096, "labels of the alert"),
    TEXT("summary", false, 4096, "human summary"),
    INT("escalation_level", false, 0, 100, "0", "escalation step reached"),
    BOOL("notified", "0", "whether a notification was sent for this transition"),
};
static const struct table_index alert_history_idx[] = {
    {"ts", "ts", "timestamp-based"},
    {"state_ts", "state, ts", "alert-tracking: alerts by state over time"},
    {"alert_ts", "alert_id, ts", "alert-tracking: one alert's transitions"},
};

static const struct column scheduled_jobs_cols[] = {
    TS("ts", true, "time of the last change to this row"),
    TEXT("name", true, 255, "job name (unique)"),
    TEXT("schedule", false, 255, "cron expression, @hourly, @every 30s"),
    ENUM("kind", true, job_kinds, NULL, "builtin, command or external"),
    TEXT("command", false, 4096, "command line of a command job"),
    INT("timeout_s", false, 0, 604800, "3600", "run time limit"),
    INT("grace_s", false, 0, 604800, "300", "how late a run may report before it is missed"),
    BOOL("enabled", "1", "whether the job is scheduled"),
    TS("last_run_at", false, "start of the last run"),
    ENUM("last_status", false, job_states, NULL,
         "ok, running, failed, missed, paused, never, cancelled (the last run), removed "
         "(its definition is gone)"),
    INT("last_duration_ms", false, 0, BIG, NULL, "duration of the last run"),
    TS("next_run_at", false, "next scheduled start"),
    INT("consecutive_failures", false, 0, BIG, "0", "failed runs in a row"),
    INT("alert_after", false, 1, 1000, "1",
        "failed runs in a row before the default rule JobFailed fires"),
};
static const struct table_index scheduled_jobs_idx[] = {
    {"next_run", "next_run_at", "scheduler: the next due job"},
};

static const char *const run_states[] = {"running", "ok",        "failed", "missed",
                                         "timeout", "cancelled", NULL};
static const struct column job_runs_cols[] = {
    TS("ts", true, "start of the run"),
    TEXT("job", true, 255, "job name"),
    TEXT("run_id", false, 128, "run identifier (pairs start and end pings)"),
    ENUM("status", true, run_states, NULL, "running, ok, failed, missed, timeout, cancelled"),
    TS("finished_at", false, "end of the run"),
    INT("duration_ms", false, 0, BIG, NULL, "duration"),
    INT("exit_code", false, -255, 255, NULL, "exit status"),
    TEXT("output", false, 16384, "output excerpt (bounded)"),
};
static const struct table_index job_runs_idx[] = {
    {"ts", "ts", "timestamp-based"},
    {"job_ts", "job, ts", "one job's history"},
    {"status_ts", "status, ts", "failures over time"},
};

static const struct column notification_log_cols[] = {
    TS("ts", true, "time the attempt ended"),
    TEXT("receiver", true, 128, "receiver name"),
    TEXT("group_key", true, 1024, "the notification group: route and group_by label values"),
    TEXT("alert_id", false, 128, "the first alert of the notification"),
    INT("alerts", true, 0, BIG, NULL, "alerts the notification carried"),
    ENUM("status", true, delivery_states, NULL, "ok, failed (gave up), retrying, dropped"),
    INT("attempt", true, 1, BIG, NULL, "attempt number, from 1"),
    INT("http_status", false, 0, 999, NULL, "HTTP status of the answer (webhooks)"),
    TEXT("error", false, 1024, "why the attempt failed"),
    REAL("latency_ms", false, 0, 0, "time the attempt took"),
};
static const struct table_index notification_log_idx[] = {
    {"ts", "ts", "timestamp-based"},
    {"receiver_ts", "receiver, ts", "one receiver's deliveries"},
};

static const struct column silences_cols[] = {
    TS("ts", true, "time of the last change to this silence"),
    TEXT("id", true, 64, "silence id"),
    TEXT("matchers", true, 1024, "label matchers an alert must all match to be silenced"),
    TS("starts_at", true, "when it starts"),
    TS("ends_at", true, "when it ends (expired from then on)"),
    TEXT("created_by", true, 255, "who made it"),
    TEXT("comment", false, 4096, "why"),
};
static const struct table_index silences_idx[] = {
    {"ends", "ends_at", "the silences not yet expired"},
};

static const struct column incidents_cols[] = {
    TS("ts", true, "time of the last change to this incident"),
    TEXT("id", true, 64, "incident id"),
    ENUM("state", true, incident_states, NULL, "open or resolved"),
    TS("opened_at", true, "when its first alert fired"),
    TS("resolved_at", false, "when its last alert resolved"),
    TS("last_alert_at", true, "when an alert last joined it or fired on"),
    TEXT("probable_cause", false, 64, "alert_id of its earliest alert"),
    JSON("keys", 65536, "the host, component and pipeline values its alerts share"),
    JSON("alerts", 1048576, "its alerts: alert_id, rule, fired_at, resolved_at"),
};
static const struct table_index incidents_idx[] = {
    {"opened", "opened_at", "incidents by time"},
};

/* the kinds of source, in the order of enum source_kind (collect/heartbeat.h) */
static const char *const source_kinds[] = {"agent",        "tail", "scrape", "syslog", "graphite",
                                           "remote_write", "http", "self",   NULL};
static const struct column collection_sources_cols[] = {
    TS("ts", true, "time of the last change to this row"),
    TEXT("source", true, 300, "kind:name, the source's identity"),
    ENUM("kind", true, source_kinds, NULL,
         "agent, tail, scrape, syslog, graphite, remote_write, http, self"),
    TEXT("name", true, 255, "host name, log file, target URL or sender address"),
    TS("first_seen", true, "first heartbeat"),
    TS("last_seen", true, "latest heartbeat"),
    INT("interval_ms", false, 0, BIG, "0", "how often it delivers (0: unknown)"),
    INT("silence_ms", true, 0, BIG, NULL, "longest silence before it counts as a gap"),
    INT("rows", false, 0, BIG, "0", "rows delivered since first seen"),
    INT("gaps", false, 0, BIG, "0", "silences longer than silence_ms since first seen"),
};
static const struct table_index collection_sources_idx[] = {
    {"last_seen", "last_seen", "sources by freshness"},
};

static const struct column collection_gaps_cols[] = {
    TS("ts", true, "last heartbeat before the silence"),
    TEXT("source", true, 300, "kind:name of the source"),
    TS("ended_at", true, "the heartbeat that ended the silence"),
    INT("downtime_ms", true, 0, BIG, NULL,
        "collection time lost: the silence less the source's interval"),
};
static const struct table_index collection_gaps_idx[] = {
    {"source_ts", "source, ts", "one source's gaps"},
};

static const char *const roles[] = {"admin", "writer", "reader", NULL};
static const struct column users_cols[] = {
    TS("ts", true, "time of the last change to this user"),
    TEXT("name", true, 64, "user name: letters, digits, '.', '_', '@' or '-'"),
    ENUM("role", true, roles, NULL,
         "admin (everything), writer (ingestion, job pings) or reader (views, series, SQL)"),
    TS("created_at", true, "when the user was added"),
    TEXT("created_by", false, 128, "who added the user (`cli:` and the system user, or a user)"),
    BOOL("disabled", "0", "1: every token of the user is refused"),
    TEXT("password_hash", false, 256,
         "argon2id hash of the user's password (crypto_pwhash_str, with its salt and costs); "
         "NULL: no password, the user signs in with tokens only"),
};
static const struct table_index users_idx[] = {
    {"role", "role", "users by role (is there an admin yet?)"},
};

static const struct column api_tokens_cols[] = {
    TS("ts", true, "time of the last change to this token"),
    TEXT("id", true, 32, "the token's id: the public part of opsdb_<id>_<secret>"),
    TEXT("user", true, 64, "the user the token acts for, with the user's role"),
    TEXT("secret_hash", true, 64,
         "BLAKE2b-256 of the token's secret part, hex; the token itself is never stored"),
    TEXTD("tables", 1024, "''",
          "tables a writer token may write, comma-separated; empty: every client table"),
    TEXT("description", false, 256, "what the token is for"),
    TS("created_at", true, "when the token was created"),
    TEXT("created_by", false, 128, "who created it (`cli:` and the system user, or a user)"),
    TS("expires_at", false, "refused from this time on; NULL: never expires"),
    TS("revoked_at", false, "refused from this time on; NULL: not revoked"),
    TS("last_used_at", false, "last request with the token (recorded within a minute)"),
};
static const struct table_index api_tokens_idx[] = {
    {"user", "user", "a user's tokens"},
};

static const char *const audit_outcomes[] = {"ok", "denied", "failed", NULL};
static const struct column audit_log_cols[] = {
    TS("ts", true, "when it happened"),
    TEXT("actor", true, 128,
         "who: the token's user, `cli:` and the system user, or `-` (no valid token)"),
    TEXT("token_id", false, 32, "id of the token used (never the token)"),
    TEXT("action", true, 128,
         "what: user.add, token.create, token.revoke, auth.failure, or the route "
         "(`POST /api/v1/alerts/reload`)"),
    TEXT("target", false, 256, "what it was done to: a user, a token id, a job, a silence"),
    TEXT("peer", false, 128, "from where: the client's address and port, or `cli`"),
    ENUM("outcome", true, audit_outcomes, NULL,
         "ok, denied (401/403) or failed (the action itself failed)"),
    INT("status", false, 100, 599, NULL, "HTTP status of the answer (NULL from the CLI)"),
    TEXT("detail", false, 512, "why, for a denial or a failure"),
};
static const struct table_index audit_log_idx[] = {
    {"action_ts", "action, ts", "one kind of action over time"},
    {"actor_ts", "actor, ts", "one user's actions"},
};

#define TABLE(nm, kind, doc, cols, idx, key, days)                                                 \
    {                                                                                              \
        nm, kind, doc, cols, N(cols), idx, N(idx), key, days, ACCESS_INTERNAL                      \
    }
/* A table clients write (POST /api/v1/ingest/{table}); the others hold opsdb's own state. */
#define DATA_TABLE(nm, kind, doc, cols, idx, key, days)                                            \
    {                                                                                              \
        nm, kind, doc, cols, N(cols), idx, N(idx), key, days, ACCESS_DATA                          \
    }
/* users, tokens and the audit log: written by opsdb only, read by admins only */
#define AUTH_TABLE(nm, kind, doc, cols, idx, key, days)                                            \
    {                                                                                              \
        nm, kind, doc, cols, N(cols), idx, N(idx), key, days, ACCESS_AUTH                          \
    }

static const struct table tables[] = {
    DATA_TABLE(
        "system_metrics", TABLE_SERIES,
        "One sample of one metric of one host/component. Stored as a series dictionary "
        "(metric, host, component, labels) plus (series, ts, value) samples; a sample is "
        "identified by its series and ts, and a second write of the same sample replaces it.",
        system_metrics_cols, system_metrics_idx, NULL, 30),
    DATA_TABLE("api_usage", TABLE_EVENTS,
               "One API request, or a pre-counted group of them (count).", api_usage_cols,
               api_usage_idx, NULL, 30),
    DATA_TABLE("error_logs", TABLE_EVENTS, "One error or warning event.", error_logs_cols,
               error_logs_idx, NULL, 30),
    DATA_TABLE("pipeline_status", TABLE_EVENTS, "One state change of one pipeline run or stage.",
               pipeline_status_cols, pipeline_status_idx, NULL, 90),
    DATA_TABLE("handler_metrics", TABLE_EVENTS, "One handler over one reporting interval.",
               handler_metrics_cols, handler_metrics_idx, NULL, 30),
    TABLE("alert_history", TABLE_EVENTS, "One transition of one alert.", alert_history_cols,
          alert_history_idx, NULL, 365),
    TABLE("scheduled_jobs", TABLE_STATE,
          "One job definition with its live state; written by name (a second write of the same "
          "name replaces the row).",
          scheduled_jobs_cols, scheduled_jobs_idx, "name", 0),
    TABLE("job_runs", TABLE_EVENTS, "One run of a scheduled job.", job_runs_cols, job_runs_idx,
          NULL, 90),
    TABLE("notification_log", TABLE_EVENTS,
          "One attempt to deliver an alert notification to a receiver.", notification_log_cols,
          notification_log_idx, NULL, 90),
    TABLE("silences", TABLE_STATE,
          "Silences of alerts: while one is active, the alerts its matchers match are recorded "
          "as suppressed and not notified. Upserted by id.",
          silences_cols, silences_idx, "id", 0),
    TABLE("incidents", TABLE_STATE,
          "Alerts on the same host, component or pipeline within alerting.correlation_window, "
          "as one incident (GET /api/v1/incidents). Upserted by id.",
          incidents_cols, incidents_idx, "id", 0),
    TABLE("collection_sources", TABLE_STATE,
          "Every source that delivers data (agent, log tail, scrape target, syslog or Graphite "
          "sender, remote-write sender, opsdb's own host) with its heartbeats: first and last "
          "seen, interval, rows. Upserted by source.",
          collection_sources_cols, collection_sources_idx, "source", 0),
    TABLE("collection_gaps", TABLE_EVENTS,
          "One silence of a source longer than it may keep, recorded when it delivers again.",
          collection_gaps_cols, collection_gaps_idx, NULL, 35),
    AUTH_TABLE(
        "users", TABLE_STATE,
        "The users of the HTTP API and their roles (`opsdb user`, docs/security.md). Upserted "
        "by name.",
        users_cols, users_idx, "name", 0),
    AUTH_TABLE("api_tokens", TABLE_STATE,
               "API tokens (`opsdb token`): each acts for one user; only a hash of its secret is "
               "kept. Upserted by id.",
               api_tokens_cols, api_tokens_idx, "id", 0),
    AUTH_TABLE("audit_log", TABLE_EVENTS,
               "Admin actions (users, tokens, alert reloads, jobs, silences) and refused requests: "
               "who, what, when, from where. Never holds a token or a secret.",
               audit_log_cols, audit_log_idx, NULL, 365),
};
/* config, the writer, the store and /metrics keep arrays per table */
_Static_assert(N(tables) <= SCHEMA_MAX_TABLES, "more tables than SCHEMA_MAX_TABLES");

const struct table *schema_tables(size_t *count)
{
    *count = N(tables);
    return tables;
}

const struct table *schema_table(const char *name)
{
    for (size_t i = 0; i < N(tables); i++)
        if (strcmp(tables[i].name, name) == 0)
            return &tables[i];
    return NULL;
}

int schema_column(const struct table *t, const char *name)
{
    for (size_t i = 0; i < t->ncolumns; i++)
        if (strcmp(t->columns[i].name, name) == 0)
            return (int)i;
    return -1;
}

int schema_version(void)
{
    return SCHEMA_VERSION;
}

static const char *type_doc(const struct column *c)
{
    static const char *const names[] = {"timestamp", "integer",     "real",
                                        "text",      "json object", "boolean"};
    return names[c->type];
}

static void limits_doc(const struct column *c, struct buf *b)
{
    if (c->allowed) {
        for (const char *const *v = c->allowed; *v; v++)
            buf_printf(b, "%s`%s`", v == c->allowed ? "one of " : ", ", *v);
    } else if ((c->type == COL_INT || c->type == COL_REAL) && c->min < c->max && c->max < 1e15) {
        buf_printf(b, "%g..%g", c->min, c->max);
    } else if ((c->type == COL_INT || c->type == COL_REAL) && c->min == 0 && c->max > 1) {
        buf_printf(b, ">= 0");
    } else if (c->type == COL_INT && c->min == 1) {
        buf_printf(b, ">= 1");
    } else if (c->max_len) {
        buf_printf(b, "<= %u bytes", c->max_len);
    } else if (c->type == COL_TS) {
        buf_printf(b, "not in the future, within retention");
    }
}

int schema_markdown(struct buf *b)
{
    buf_printf(b,
               "# Schema reference\n\n"
               "Generated by `opsdb schema --markdown` from the schema table in "
               "`src/core/schema.c`; do not edit by hand (a test fails when it is stale).\n\n"
               "Schema version: %d. Timestamps are stored as INTEGER epoch milliseconds (UTC); "
               "on input they are RFC 3339 strings or epoch numbers with an explicit precision "
               "(`?precision=s|ms|us|ns`, default ms). Every table has a time column `ts`.\n\n",
               SCHEMA_VERSION);
    for (size_t i = 0; i < N(tables); i++) {
        const struct table *t = &tables[i];
        buf_printf(b, "## %s\n\n%s\n\n", t->name, t->doc);
        if (t->retention_days)
            buf_printf(b, "Default retention: %d days.\n\n", t->retention_days);
        static const char *const access_doc[] = {
            [ACCESS_INTERNAL] = "opsdb's own state: through `POST /api/v1/ingest/%s` only admin "
                                "tokens write it (backfills).",
            [ACCESS_DATA] = "Clients write it: `POST /api/v1/ingest/%s` with a writer token, "
                            "`opsdb ingest`.",
            [ACCESS_AUTH] = "Kept by opsdb (`opsdb user`, `opsdb token`): `POST "
                            "/api/v1/ingest/%s` refuses it, and only admin tokens read it with "
                            "SQL.",
        };
        buf_printf(b, access_doc[t->access], t->name);
        buf_printf(b, "\n\n");
        buf_printf(b, "| column | type | required | limits | default | description |\n"
                      "|---|---|---|---|---|---|\n");
        for (size_t j = 0; j < t->ncolumns; j++) {
            const struct column *c = &t->columns[j];
            buf_printf(b, "| `%s` | %s | %s | ", c->name, type_doc(c),
                       c->required ? "yes" : (c->derived ? "derived" : "no"));
            limits_doc(c, b);
            buf_printf(b, " | %s | %s |\n", c->default_sql ? c->default_sql : "", c->doc);
        }
        buf_printf(b, "\nIndexes:\n\n");
        for (size_t j = 0; j < t->nindexes; j++)
            buf_printf(b, "- `%s_%s` on (%s): %s\n", t->name, t->indexes[j].name_suffix,
                       t->indexes[j].columns, t->indexes[j].purpose);
        if (t->kind == TABLE_SERIES)
            buf_printf(b,
                       "- series unique on (metric, host, component, labels): find series by "
                       "metric, then host\n"
                       "- samples in compressed chunks keyed by (series_id, start_ts): one series "
                       "over time\n\n"
                       "Internal tables: `%s_series` (id, the series key columns), `%s_chunks` "
                       "(series_id, day, start_ts, end_ts, count, data, minutes: the samples, "
                       "compressed, with their minute buckets; see docs/storage.md), and the "
                       "rollups `%s_1m` and `%s_1h` (series_id, ts = bucket start, min, max, sum, "
                       "count, last, last_ts), kept exact in the transaction that writes the "
                       "samples; `GET /api/v1/series` reads them.\n",
                       t->name, t->name, t->name, t->name);
        buf_printf(b, "\n");
    }
    return 0;
}
