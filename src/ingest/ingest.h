/*
 * ingest: turning bytes into validated batches (JSON, NDJSON, CSV, InfluxDB line protocol, gzip)
 * and the writer thread that commits the batches of all connections in groups.
 */
#ifndef OPSDB_INGEST_H
#define OPSDB_INGEST_H

#include "core/core.h"
#include "store/store.h"

/* What a parser needs besides the bytes. */
struct ingest_ctx {
    struct validate_opts validate;
    size_t max_rows;                       /* rows (points) per request; more is E_LIMIT */
    int retention_days[SCHEMA_MAX_TABLES]; /* per schema table; validate.retention_days points here
                                            */
    /* JSON bodies: nesting and string bounds (ingest.max_json_depth, ingest.max_string_bytes);
     * past them the request is rejected naming the option. 0: the scanner's defaults. */
    int max_json_depth;
    size_t max_string_bytes;
};

/* Fills ctx from the configuration, with now = the current time and the given precision. The
 * fingerprint rules are borrowed and must outlive ctx. */
void ingest_ctx_init(struct ingest_ctx *ctx, const struct config *cfg,
                     const struct fingerprint_rules *fp, enum time_precision precision);

/* The parsers append rows to b (initialised by the caller for the target table) and record every
 * bad row in r. They return 0 when every row is good, E_INVALID when r holds rejections (the
 * batch must then not be written), E_LIMIT when max_rows was passed. */

/* A JSON object, a JSON array of objects, or NDJSON (one object per line; detected, or forced
 * with ndjson). Field names are column names; unknown fields are rejected. */
int ingest_parse_json(const struct ingest_ctx *ctx, const char *data, size_t len, bool ndjson,
                      struct batch *b, struct rejects *r);
/* CSV with a header line naming the columns (RFC 4180 quoting). */
int ingest_parse_csv(const struct ingest_ctx *ctx, const char *data, size_t len, struct batch *b,
                     struct rejects *r);
/* InfluxDB line protocol into system_metrics: measurement + "_" + field is the metric; tags host
 * and component fill their columns, other tags (and string fields) become labels. */
int ingest_parse_lineproto(const struct ingest_ctx *ctx, const char *data, size_t len,
                           struct batch *b, struct rejects *r);

/* Decompresses a gzip or zlib body into out (bounded by out->max: E_LIMIT beyond). */
int ingest_gunzip(const char *data, size_t len, struct buf *out, struct err *e);

/* ---- Prometheus: the text exposition format and remote write, into system_metrics ---------- */

/* Labels of one sample at most (the target's included); a label set must also fit the labels
 * column. */
#define PROM_MAX_LABELS 64

/* One label of a Prometheus sample (bytes, not necessarily NUL-terminated). */
struct prom_label {
    const char *name, *value;
    size_t name_len, value_len;
};

/* What a Prometheus parse read besides its rows. */
struct prom_stats {
    uint64_t samples;   /* samples read, stored or skipped */
    uint64_t nonfinite; /* NaN, +Inf and -Inf samples (staleness markers too): skipped */
};

/* Appends one Prometheus sample to b (a system_metrics batch) as Prometheus stores it: metric
 * = the __name__ label, host = the host label or else instance, component = job, every other
 * label (empty values dropped, as Prometheus drops them) into labels, a JSON object sorted by
 * name. A NaN or infinite value is counted in st (may be NULL) and not stored. Returns false
 * with a rejection at input_index (no __name__, a label name twice, text that is not UTF-8, a
 * row that fails validation) and true otherwise. The label bytes are copied into b's arena. */
bool ingest_prom_sample(const struct ingest_ctx *ctx, struct batch *b,
                        const struct prom_label *labels, size_t nlabels, int64_t ts_ms,
                        double value, size_t input_index, struct rejects *r, struct prom_stats *st);

/* How a scraped page's samples are labelled. */
struct prom_text_opts {
    int64_t default_ts_ms; /* time of samples without a timestamp (the scrape's) */
    /* labels the scraper attaches (job, instance, the target's labels): they win over labels of
     * the same name on the page, which are kept renamed exported_<name> (Prometheus'
     * honor_labels: false) */
    const struct prom_label *target_labels;
    size_t ntarget_labels;
};

/* The Prometheus text exposition format 0.0.4 (what /metrics pages serve; OpenMetrics' final
 * `# EOF` is tolerated) into system_metrics: `name{label="value",...} value [timestamp_ms]`
 * lines, # HELP and # TYPE lines checked and otherwise ignored (a histogram or summary arrives
 * as its _bucket/_sum/_count series, with their le or quantile labels), other comments skipped.
 * Label values take the escapes \\, \" and \n. Rejections name the line (1-based). Returns as
 * the other parsers do (0, E_INVALID, E_LIMIT past ctx->max_rows samples); st may be NULL. */
int ingest_parse_promtext(const struct ingest_ctx *ctx, const char *data, size_t len,
                          const struct prom_text_opts *opts, struct batch *b, struct rejects *r,
                          struct prom_stats *st);

/* A Prometheus remote-write 1.0 body (a snappy block holding a protobuf WriteRequest) into
 * system_metrics, each sample mapped by ingest_prom_sample. A body that is not snappy, a
 * decoded size past max_decoded_bytes (E_LIMIT) or bytes that are no WriteRequest fail with
 * the reason in e before any row is parsed (E_INVALID); bad samples are rejections whose index
 * is the series' (0-based) in the request (E_INVALID); more than ctx->max_rows samples is
 * E_LIMIT. Fields opsdb does not store (metadata, exemplars, native histograms) are skipped. */
int ingest_parse_remote_write(const struct ingest_ctx *ctx, const char *data, size_t len,
                              size_t max_decoded_bytes, struct batch *b, struct rejects *r,
                              struct prom_stats *st, struct err *e);
/* ---- log files: access logs into api_usage, application logs into error_logs ---------------
 * (docs/collection.md, "Access and application logs"). A log parser reads one file's lines; it
 * is stateful, because an application log event may span lines (a stack trace), so each file
 * has its own, used by one thread at a time. Kinds:
 *   nginx        nginx's combined format                                  -> api_usage
 *   nginx_timed  combined + " $request_time $upstream_response_time"      -> api_usage
 *   apache       Apache's combined format                                 -> api_usage
 *   access       the format in logs.access_format (nginx or Apache syntax) -> api_usage
 *   json         JSON lines (one object per event)                        -> error_logs
 *   plain        plain text, event lines matching logs.plain_pattern      -> error_logs */
struct logparser;

/* The kinds above, for messages: "nginx, nginx_timed, apache, access, json, plain". */
const char *logparser_kinds(void);
/* A parser of kind for the file at path (NULL or "-": stdin; the service column defaults to a
 * name taken from the path, see ingest_log_service). Settings come from cfg's logs.* options
 * and are copied. E_INVALID with the reason for an unknown kind, a bad logs.access_format or
 * logs.plain_pattern. Free with logparser_free. */
int logparser_new(struct logparser **out, const struct config *cfg, const char *kind,
                  const char *path, struct err *e);
/* Frees; *p becomes NULL. NULL is a no-op. */
void logparser_free(struct logparser **p);
/* The table its rows are for (api_usage or error_logs); b must be initialised for it. */
const struct table *logparser_table(const struct logparser *p);

/* Feeds one complete line (without its newline; a trailing CR is ignored). line_no (from 1)
 * names the line in rejections; offset is the line's byte offset in its file, kept for
 * logparser_pending. An access log line becomes one row at once; an application log line may
 * complete the event before it (a new event starts) and become part of the next one. A row
 * that cannot be made is recorded in r, with the line number of its first line, and the call
 * returns E_INVALID; otherwise 0 (also for events below logs.min_level, which are skipped). */
int logparser_line(struct logparser *p, const struct ingest_ctx *ctx, const char *line, size_t len,
                   size_t line_no, int64_t offset, struct batch *b, struct rejects *r);
/* Completes the event still waiting for more lines (end of input, an idle or rotated file).
 * Returns as logparser_line. */
int logparser_flush(struct logparser *p, const struct ingest_ctx *ctx, struct batch *b,
                    struct rejects *r);

/* An event that has lines but is not complete yet: where its first line starts. */
struct logparser_pending {
    int64_t offset;
    size_t line_no;
    size_t bytes; /* the text it holds so far (bounded by the column limits) */
};
/* True (and *out filled) while an event waits for more lines. A reader that saves its position
 * saves out->offset then, so that after a restart the event is read again whole. */
bool logparser_pending(const struct logparser *p, struct logparser_pending *out);

/* Splits data into lines (numbered from first_line, offsets from 0) and feeds them; a last line
 * without a newline is fed too. With final, the pending event is completed at the end. Returns
 * 0, E_INVALID when r holds rejections (the good rows are in b), or E_LIMIT past ctx->max_rows
 * rows. */
int ingest_parse_log(struct logparser *p, const struct ingest_ctx *ctx, const char *data,
                     size_t len, size_t first_line, bool final, struct batch *b, struct rejects *r);

/* The service name of a log file's rows when logs.service is empty: the file's base name
 * without ".log" and without an "access" or "error" part ("api.access.log" -> "api"); when
 * nothing is left, the name of its directory ("/var/log/nginx/access.log" -> "nginx"). "" for
 * NULL or "-". */
void ingest_log_service(const char *path, char *out, size_t size);
/* ---- syslog (ingest_syslog.c) ---------------------------------------------------------------- */

/* One syslog message, RFC 5424 or RFC 3164. The strings point into the parsed bytes and are not
 * NUL-terminated; a length of 0 is an absent field (RFC 5424's NILVALUE "-"). */
struct syslog_message {
    int facility;  /* 0 kern .. 23 local7 */
    int severity;  /* 0 emerg .. 7 debug */
    bool rfc5424;  /* else RFC 3164 (BSD) */
    bool has_time; /* ts_ms holds the message's own time */
    int64_t ts_ms;
    const char *time_text, *hostname, *app_name, *procid, *msgid, *sd, *msg;
    size_t time_len, hostname_len, app_name_len, procid_len, msgid_len, sd_len, msg_len;
};

/* Parses one message (a UDP datagram or one TCP frame, trailing LF/CR/NUL ignored) into m. The
 * format is told by the version after <PRI>. An RFC 3164 timestamp, which has no year and no
 * zone, is read in the local zone in the year nearest to now_ms. Returns 0, or E_INVALID with
 * the reason in e (no <PRI>, a broken RFC 5424 header). Thread safe. */
int ingest_syslog_parse(const char *data, size_t len, int64_t now_ms, struct syslog_message *m,
                        struct err *e);
/* Appends m to b (error_logs) as one row: ts from the message (now when it has none, or when it
 * is further ahead than ctx allows: the sender's time then goes to context.sender_time), host
 * from HOSTNAME (peer when absent), service from APP-NAME or TAG, level from the severity
 * (emerg and alert are fatal, crit critical, err error, the others by name), the message, and
 * context {facility, severity, format, procid, msgid, peer, sd: {SD-ID: {PARAM: VALUE}}}. Text
 * is cut to the column limits and invalid UTF-8 replaced by U+FFFD. Validated (and
 * fingerprinted) as the JSON path does; false with the reason in r (as row index) when the row
 * was rejected and dropped. */
bool ingest_syslog_row(const struct ingest_ctx *ctx, const struct syslog_message *m,
                       const char *peer, struct batch *b, size_t index, struct rejects *r);
/* "emerg" .. "debug" for 0..7; NULL otherwise. */
const char *ingest_syslog_severity_name(int severity);
/* The severity named name ("emerg" .. "debug"); -1 when none is. */
int ingest_syslog_severity_parse(const char *name);

/* ---- Graphite plaintext (ingest_graphite.c) -------------------------------------------------- */

/* Templates that map a dotted Graphite path to host, component, metric and labels. */
struct graphite_templates;

/* Compiles text (lines "[filter] template [tag=value,...]", separated by newlines or ';'; see
 * docs/collection.md) followed by the built-in templates for collectd, Netdata and the fallback
 * "host.metric*". *out is freed with ingest_graphite_templates_free. E_INVALID with the line
 * and the reason in e for a bad template. */
int ingest_graphite_templates_new(struct graphite_templates **out, const char *text, struct err *e);
/* Frees; *t becomes NULL. NULL is a no-op. */
void ingest_graphite_templates_free(struct graphite_templates **t);
/* Lines of Graphite's plaintext protocol ("path[;tag=v...] value [timestamp]", seconds; -1 or
 * no timestamp is now) into system_metrics rows, one per line, mapped by the first matching
 * template; Graphite tags become labels (host and component fill their columns). Unlike the
 * request parsers, good lines stay in b when others are rejected (a stream has no request to
 * refuse): returns E_INVALID when r holds rejections, else 0. Lines whose value is NaN or
 * infinite are skipped without a rejection and counted in *nan_lines (may be NULL). The
 * templates are only read: any number of threads may share them. */
int ingest_parse_graphite(const struct ingest_ctx *ctx, const struct graphite_templates *ts,
                          const char *data, size_t len, struct batch *b, struct rejects *r,
                          size_t *nan_lines);

/* ---- the writer ----------------------------------------------------------------------------- */

struct writer;

struct writer_stats {
    uint64_t groups_committed;
    uint64_t batches_committed;
    uint64_t batches_failed;
    uint64_t rows_committed[SCHEMA_MAX_TABLES]; /* per schema table index */
    uint64_t queue_rows;                        /* rows waiting now */
    uint64_t group_rows_sum;                    /* for the group size summary */
    uint64_t
        group_rows_buckets[8]; /* cumulative counts of groups with <= 1,10,...,1e6 rows, +Inf */
    double commit_seconds_sum;
    bool last_group_failed;       /* the latest group failed to commit */
    char last_error[256];         /* its error */
    uint64_t samples_compacted;   /* metric samples compacted into day chunks */
    uint64_t partitions_packed;   /* event partitions packed into compressed blocks */
    uint64_t compaction_failures; /* compaction and packing steps rolled back */
};

/* Called on the writer thread after each successful commit with the batches it made durable, and
 * with n == 0 (batches NULL) when another process committed to the database: any table may have
 * changed. Must be quick: ingestion waits for it. */
typedef void (*writer_hook)(void *arg, const struct batch *const *batches, size_t n);

/* Starts the writer thread on s (which must outlive the writer). Between groups it also
 * maintains the store on its own timers, until writer_set_maintenance() turns them off: every
 * storage.compact_interval, raw metric samples older than storage.compress_after move into
 * compressed chunks, a few hundred series per transaction so that ingestion waits little
 * (store_compact_step), and event partitions older than storage.compress_events_after are
 * packed (store_pack_step); every storage.retention_interval it applies the retention policies
 * (store_retention_apply). */
int writer_new(struct writer **out, struct store *s, const struct config *cfg, struct err *e);
/* Stops the thread after the queued batches are committed; frees. */
void writer_free(struct writer **w);
/* Queues b and blocks until it is committed (0) or failed (E_STORE: nothing of b was written,
 * safe to retry; E_INVALID: the store refused the rows). b stays owned by the caller. Any
 * thread. Waits while the queue is full (back-pressure). */
int writer_submit(struct writer *w, const struct batch *b, struct err *e);
/* Registers a hook before the first submit. */
void writer_on_commit(struct writer *w, writer_hook hook, void *arg);
void writer_get_stats(struct writer *w, struct writer_stats *out);

/* Turns the writer's own maintenance timers (compaction, packing, retention; see writer_new)
 * off or on again. A server whose jobs engine runs the builtin maintenance jobs turns them off
 * right after writer_new(), so the two do not both do the work. Any thread. */
void writer_set_maintenance(struct writer *w, bool on);

/* A piece of maintenance run on the writer thread, where the write path may be used (no write
 * transaction is open when it starts, and it must leave none open). It sets *answers_changed
 * when it changed what queries answer (dropped or rewrote rows), and returns 0 or an error code
 * with e filled. */
typedef int (*writer_task_fn)(struct store *s, void *arg, bool *answers_changed, struct err *e);
/* Queues fn like a batch: the writer runs it alone between groups (at once when idle), then,
 * when it set *answers_changed, calls the hooks with n == 0 as for another process's commit (so
 * caches and the alert engine hear of it). Blocks until fn has run and returns what fn returned
 * (e filled by fn), or E_STORE when the writer is stopping (fn did not run). A task should be a
 * bounded step (ingestion waits while it runs): a long job calls writer_run once per step. Any
 * thread but the writer's own (not from a hook). */
int writer_run(struct writer *w, writer_task_fn fn, void *arg, struct err *e);
/* One step of compaction (store_compact_step) or of packing (store_pack_step) through
 * writer_run(), added to *stats and counted in writer_stats like the writer's own steps (a
 * step that failed adds nothing). Call again until stats->pass_done (stats->done). */
int writer_compact_step(struct writer *w, int64_t before_ms, struct store_compact_stats *stats,
                        struct err *e);
int writer_pack_step(struct writer *w, int64_t before_ms, struct store_pack_stats *stats,
                     struct err *e);

#endif
