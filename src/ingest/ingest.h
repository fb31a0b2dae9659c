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
    size_t max_rows;        /* rows (points) per request; more is E_LIMIT */
    int retention_days[16]; /* per schema table; validate.retention_days points here */
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
    uint64_t rows_committed[16]; /* per schema table index */
    uint64_t queue_rows;         /* rows waiting now */
    uint64_t group_rows_sum;     /* for the group size summary */
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
