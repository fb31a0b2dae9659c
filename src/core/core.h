/*
 * core: what every other subsystem shares — errors, arenas, logging, time, the schema table,
 * typed record batches, validation, error fingerprints and the configuration table.
 *
 * Nothing here knows about SQL, HTTP or threads beyond being safe to call from any thread
 * (all functions are reentrant unless a comment says otherwise).
 */
#ifndef OPSDB_CORE_H
#define OPSDB_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------------------
 * Errors: a function that can fail returns 0 or one of these (negative) and fills a struct err.
 */
enum {
    E_OK = 0,
    E_INVALID = -1,    /* the caller's input is wrong: 4xx, a CLI usage error */
    E_NOMEM = -2,      /* allocation failed */
    E_STORE = -3,      /* the database failed (I/O, busy, full): 503, safe to retry */
    E_LIMIT = -4,      /* a named limit was hit (body size, rows, time): 413 / 422 */
    E_NOTFOUND = -5,   /* no such table, view, route, file */
    E_IO = -6,         /* a file or socket outside the database failed */
    E_CORRUPT = -7,    /* stored data is damaged (a chunk that does not decode): 500, no retry */
    E_CONFLICT = -8,   /* the thing is busy in a way the request cannot wait for (a job that
                          is running): 409 */
    E_DENIED = -9,     /* the caller's role does not allow it (a table a reader may not read):
                          403 */
    E_CANCELLED = -10, /* stopped because it was asked to stop (a job run cancelled) */
};

struct err {
    int code;
    char msg[512];
};

/* Fills e (may be NULL) with code and a printf-style message; returns code. */
int err_set(struct err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Clears e to E_OK with an empty message. */
void err_clear(struct err *e);

/* ---------------------------------------------------------------------------------------------
 * Arena: many small allocations freed at once (one request, one batch). Not thread safe; an
 * arena belongs to one owner at a time. Allocation failure aborts: arenas are bounded by the
 * request limits, so running out of memory here means the process cannot go on anyway.
 */
struct arena_chunk;
struct arena {
    struct arena_chunk *head;
    size_t bytes_used; /* total bytes handed out, for limits and /metrics */
};

void arena_init(struct arena *a);
void arena_release(struct arena *a);
/* Returns size bytes aligned to 8, valid until arena_release(). */
void *arena_alloc(struct arena *a, size_t size);
/* Copies s[0..len) and NUL-terminates it. */
char *arena_strndup(struct arena *a, const char *s, size_t len);
char *arena_printf(struct arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------------------------------------
 * Growable byte buffer with a hard maximum (STYLE 12: sizes a client controls are bounded).
 */
struct buf {
    char *data;
    size_t len, cap, max;
};

void buf_init(struct buf *b, size_t max_bytes);
void buf_release(struct buf *b);
/* Appends; returns E_LIMIT (buffer unchanged) when len would pass max. Always NUL-terminated. */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_putc(struct buf *b, char c);

/* ---------------------------------------------------------------------------------------------
 * Files that matter are put in place atomically (STYLE 15): temp file, fsync, rename, fsync the
 * directory. Errors are E_IO naming the path and the reason.
 */
/* Writes all len bytes to fd, going on after short writes and EINTR; -1 (errno set) on
 * failure. */
int file_write_all(int fd, const void *data, size_t len);
/* fsyncs the directory dir ("" is the working directory), so that renames in it are durable. */
int file_sync_dir(const char *dir, struct err *e);
/* The directory part of path ("." when it has none) into out. */
void file_dirname(const char *path, char *out, size_t out_size);
/* Replaces path with text atomically: <path>.tmp, fsync, rename, fsync of the directory. */
int file_write_atomic(const char *path, const char *text, struct err *e);
/* Creates dir and the directories above it that are missing (mkdir -p, mode 0750). */
int file_mkdirs(const char *dir, struct err *e);

/* ---------------------------------------------------------------------------------------------
 * Logging, one line per call, with a level and UTC time: to stderr, or only to the file named by
 * the option log.file once log_open_file() has run (docs/logging.md). Every function here is
 * thread safe. A line is written with one write(2), is never split between two files, and goes
 * to stderr when the file cannot take it.
 */
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
void log_set_level(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct config;
/* When cfg->log_file is set, opens it for appending (O_APPEND; created 0640; its directory must
 * exist) and sends every later line there instead of stderr. Before a line would take the file
 * past cfg->log_max_bytes, or once it has been open cfg->log_max_age_ms (0: no limit), the file
 * is rotated: gzipped to <file>.1.gz (temp file, fsync, rename), the older <file>.N.gz shift to
 * N+1, those past cfg->log_keep are deleted (log_keep 0 keeps none), and the file is emptied.
 * A failed rotation is reported in the file and tried again a minute later; lines go on.
 * Returns 0 (also when log.file is empty: lines stay on stderr) or E_IO with the path and the
 * reason in e. cfg is only read during the call; a file already open is replaced. */
int log_open_file(const struct config *cfg, struct err *e);
/* Opens the log file again by its path, so that after an external rename (logrotate) lines go
 * to a fresh file at the original path; its age counts from now. For SIGHUP. Returns 0 (also
 * when no file is open) or E_IO with the reason in e, and then lines keep going to the file
 * open before. */
int log_reopen(struct err *e);
/* Closes the log file; later lines go to stderr. Does nothing when none is open. */
void log_close_file(void);
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* ---------------------------------------------------------------------------------------------
 * Time. Every timestamp inside opsdb is int64 milliseconds since the Unix epoch, UTC.
 */
enum time_precision { PREC_NS, PREC_US, PREC_MS, PREC_S };

int64_t time_now_ms(void);
struct timespec;
/* The CLOCK_REALTIME instant ms from now, for pthread_cond_timedwait on a default condition. */
void time_deadline(struct timespec *out, int64_t ms);
/* Parses "ns", "us", "ms", "s" (also Influx's "n", "u"); returns -1 when unknown. */
int time_precision_parse(const char *s);
/* Converts an epoch number in the given precision to ms; false when out of range. */
bool time_epoch_to_ms(double epoch, enum time_precision p, int64_t *ms);
bool time_epoch_int_to_ms(int64_t epoch, enum time_precision p, int64_t *ms);
/* Parses RFC 3339 ("2026-01-02T03:04:05.123Z", "+02:00" offsets, fraction to ns) into UTC ms. */
bool time_parse_rfc3339(const char *s, size_t len, int64_t *ms);
/* Accepts an RFC 3339 string or an epoch number in seconds (the CLI/API convention for
 * from/to/now parameters). */
bool time_parse_point(const char *s, int64_t *ms);
/* Whether name is a time zone of /usr/share/zoneinfo ("UTC", "Europe/Berlin"; "" is UTC). */
bool time_zone_known(const char *name);
/* Parses durations "250ms", "15s", "5m", "1h", "7d", "1w" (and a bare number = seconds). */
bool time_parse_duration(const char *s, int64_t *ms);
/* Writes "2026-01-02T03:04:05.123Z" into out (at least 32 bytes). */
void time_format_rfc3339(int64_t ms, char *out, size_t out_size);

/* ---------------------------------------------------------------------------------------------
 * The schema: one table of tables and columns. DDL for every back end, validation, CSV/JSON
 * mapping and docs/schema.md are all derived from it; nothing else spells a column list.
 */
enum col_type {
    COL_TS,   /* int64 epoch ms; input RFC 3339 or epoch with a precision */
    COL_INT,  /* int64 */
    COL_REAL, /* double */
    COL_TEXT, /* UTF-8 string, max_len bytes */
    COL_JSON, /* JSON object, stored as its compact text, max_len bytes */
    COL_BOOL, /* 0/1 */
};

enum table_kind {
    TABLE_EVENTS, /* append-only rows in time */
    TABLE_SERIES, /* metric samples: a series dictionary plus (series, ts, value) */
    TABLE_STATE,  /* one row per key, upserted (scheduled_jobs) */
};

struct column {
    const char *name;
    enum col_type type;
    bool required;
    const char *const *allowed; /* NULL-terminated set of allowed TEXT values, or NULL */
    double min, max;            /* numeric bounds (INT/REAL/TS-relative ignored) when min<max */
    unsigned max_len;           /* TEXT/JSON byte limit */
    const char *default_sql;    /* DEFAULT clause literal, or NULL */
    bool series_key;            /* TABLE_SERIES: part of the series identity */
    bool derived;               /* computed at ingestion when absent (fingerprint) */
    const char *doc;
};

struct table_index {
    const char *name_suffix; /* index name is <table>_<suffix> */
    const char *columns;     /* comma-separated column list, e.g. "endpoint, ts" */
    const char *purpose;     /* documented in docs/schema.md */
};

/* Who may write a table through the HTTP ingestion routes (and read it with SQL). */
enum table_access {
    ACCESS_INTERNAL = 0, /* opsdb's own state (jobs, alerts): admin tokens only, for backfills */
    ACCESS_DATA,         /* the operational data: clients with a writer token */
    ACCESS_AUTH,         /* users, tokens, audit log: never through ingestion; admins read it */
};

struct table {
    const char *name;
    enum table_kind kind;
    const char *doc;
    const struct column *columns;
    size_t ncolumns;
    const struct table_index *indexes;
    size_t nindexes;
    const char *key_column; /* TABLE_STATE: the upsert key */
    int retention_days;     /* default retention of raw rows */
    int access;             /* enum table_access: who writes it through the API */
};

/* All tables, in documentation order; arrays kept per table hold SCHEMA_MAX_TABLES. */
#define SCHEMA_MAX_TABLES 24
const struct table *schema_tables(size_t *count);
/* Returns the table or NULL. */
const struct table *schema_table(const char *name);
/* Returns the column index or -1. */
int schema_column(const struct table *t, const char *name);
/* Current schema version: bump it together with a new migration in store/. */
int schema_version(void);
/* Writes docs/schema.md's content into b. */
int schema_markdown(struct buf *b);

/* ---------------------------------------------------------------------------------------------
 * Values and batches: rows of one table, typed per the schema, with strings in the batch arena.
 */
enum value_type { VAL_NULL = 0, VAL_INT, VAL_REAL, VAL_TEXT };

struct value {
    union {
        int64_t i;
        double d;
        const char *s;
    };
    uint32_t len; /* bytes of s, without NUL */
    uint8_t type; /* enum value_type */
};

struct batch {
    const struct table *table;
    size_t nrows, cap_rows;
    struct value *values; /* nrows * table->ncolumns, row-major (malloc) */
    struct arena arena;   /* owns the strings */
};

void batch_init(struct batch *b, const struct table *t);
void batch_release(struct batch *b);
/* Appends a row with every value VAL_NULL and returns it (valid until the next add). */
struct value *batch_add_row(struct batch *b);
/* Makes room for rows rows in all (a parser that can count its rows ahead saves the copies of
 * growing by doubling); aborts when memory is out, as batch_add_row does. */
void batch_reserve(struct batch *b, size_t rows);
/* Drops the last row (a row that failed to parse). */
void batch_drop_last(struct batch *b);
static inline struct value *batch_row(struct batch *b, size_t i)
{
    return b->values + i * b->table->ncolumns;
}

/* ---------------------------------------------------------------------------------------------
 * Rejections: which row, which field, why. A request collects up to REJECTS_MAX of them.
 */
#define REJECTS_MAX 100
struct reject {
    size_t row; /* 0-based row (or line) index in the request */
    char field[48];
    char reason[200];
};
struct rejects {
    size_t count; /* total rejected rows, may exceed n */
    size_t n;     /* items filled, <= REJECTS_MAX */
    struct reject items[REJECTS_MAX];
    const char *row_word; /* "row" or "line" in messages */
    size_t last_row;      /* row of the last rejection, SIZE_MAX before the first */
};

void rejects_init(struct rejects *r, const char *row_word);
void rejects_add(struct rejects *r, size_t row, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---------------------------------------------------------------------------------------------
 * Field conversion and validation.
 */
struct fingerprint_rules;

struct validate_opts {
    int64_t now_ms;                /* reference time for the future limit */
    int64_t max_future_ms;         /* rows later than now + this are rejected */
    const int *retention_days;     /* per table index in schema_tables(); rows older rejected */
    enum time_precision precision; /* of epoch numbers in ts columns */
    const struct fingerprint_rules *fingerprints;
    size_t max_labels; /* members of a series table's labels object at most; 0 = no limit */
};

/* Converts text input (CSV cell, line-protocol tag) into the column's type. An empty string is
 * NULL. On failure returns false and writes the reason into why. */
bool field_from_text(const struct column *c, const char *s, size_t len, enum time_precision p,
                     struct arena *a, struct value *out, char *why, size_t why_size);
/* Converts a number. */
bool field_from_number(const struct column *c, double d, bool is_integer, int64_t i,
                       enum time_precision p, struct value *out, char *why, size_t why_size);

/* True when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF). */
bool utf8_valid(const unsigned char *s, size_t len);

/* Checks one converted row: required fields, bounds, allowed values, lengths, time horizon;
 * fills derived fields (fingerprint). Adds a rejection per bad field; returns false if any. */
bool validate_row(const struct validate_opts *o, struct batch *b, size_t row, size_t input_index,
                  struct rejects *r);

/* ---------------------------------------------------------------------------------------------
 * Error fingerprints: the same error from different requests groups together.
 */
struct fingerprint_rules *fingerprint_rules_new(void);
/* Adds a POSIX extended regex and its replacement, applied after the built-in folding. */
int fingerprint_rules_add(struct fingerprint_rules *r, const char *regex, const char *replacement,
                          struct err *e);
void fingerprint_rules_free(struct fingerprint_rules **r);
/* Normalises msg: uuids, hex ids, numbers and quoted strings are folded, then the rules run. */
void fingerprint_normalize(const struct fingerprint_rules *r, const char *msg, struct buf *out);
/* 16 hex digits of a 64-bit hash of type, component and the normalised message. */
void fingerprint_compute(const struct fingerprint_rules *r, const char *error_type,
                         const char *component, const char *msg, char out[17]);

/* Whether compiling the POSIX extended regex re stays cheap: no quantifier right after
 * another ("a++"), and at most 2000 atoms once repetitions are expanded as glibc expands them
 * ("x+" is two copies of x, "x{n,m}" m copies, nested ones multiply). Every pattern is checked
 * with this before regcomp(); false with the reason in why. */
bool regex_cost_ok(const char *re, char *why, size_t why_size);

/* 64-bit FNV-1a, used for fingerprints and hash tables. */
uint64_t hash64(const void *data, size_t len, uint64_t seed);

/* ---------------------------------------------------------------------------------------------
 * TLS of opsdb's HTTP clients (the agent, the notifiers, the scrapes, the CLI): one place that
 * says how a server's certificate is verified, so no client forgets it (docs/security.md).
 */
/* Checks, at start, that path is a readable file of PEM certificates, at least one of which
 * parses: a wrong CA file is then a clear error naming option (e.g. "agent.ca_file"), not a
 * failed handshake later. E_IO when it cannot be read, E_INVALID when it holds no certificate,
 * E_LIMIT past 16 MiB. */
int tls_ca_file_check(const char *path, const char *option, struct err *e);
/* Reads the whole PEM file path (certificates, a key) into out, which the caller has
 * initialised (its bound becomes 16 MiB, which no certificate or key file comes near) and
 * releases. E_IO naming option and path when it cannot be read; E_LIMIT past the bound. */
int tls_pem_read(const char *path, const char *option, struct buf *out, struct err *e);
/* Sets a libcurl easy handle (a CURL *; void * keeps curl.h out of core) to verify the
 * server's certificate chain and host name, with TLS 1.2 or newer, against the CA
 * certificates of ca_file (NULL or "": the system's CAs). Verification cannot be turned off.
 * Call after curl_easy_reset(), before curl_easy_perform(). */
void tls_client_setup(void *curl, const char *ca_file);

/* ---------------------------------------------------------------------------------------------
 * Configuration: one table of options (name, type, default, bounds, help). Precedence: the
 * YAML file, then command-line flags, then OPSDB_* environment variables.
 */
#define CONFIG_MAX_FP_RULES 32
struct config {
    char db[512];
    char listen[128];
    int64_t max_body_bytes;
    int64_t max_rows_per_request;
    int64_t max_future_ms;
    int64_t writer_max_group_rows;
    int64_t writer_queue_max_rows;
    int64_t query_timeout_ms;
    int64_t query_max_rows;
    int64_t query_cache_bytes;
    int64_t reader_connections;
    int64_t max_connections;
    int64_t sqlite_cache_mib;
    char sqlite_synchronous[16];
    int64_t health_cpu_warning, health_cpu_critical;
    int64_t health_memory_warning, health_memory_critical;
    int64_t health_disk_warning, health_disk_critical;
    int64_t health_stale_ms;
    char health_cpu_metric[128], health_memory_metric[128], health_disk_metric[128];
    int64_t retention_days[SCHEMA_MAX_TABLES]; /* per schema table, by index */
    int64_t partition_ms[SCHEMA_MAX_TABLES];   /* per schema table: window of one partition */
    int64_t rollup_1m_retention_ms, rollup_1h_retention_ms;
    int64_t event_rollup_1m_retention_ms; /* the event tables' minute rollups */
    int64_t storage_compress_after_ms, storage_compact_interval_ms, storage_retention_interval_ms;
    int64_t storage_compress_events_after_ms;
    int64_t storage_pack_quiet_ms;        /* a partition written within this long is not packed */
    char storage_archive_dir[4096];       /* "" = partitions are dropped without an archive */
    int64_t storage_archive_retention_ms; /* 0 = archives are kept forever */
    char backup_dir[4096];                /* where backups are written and looked for */
    int64_t backup_keep;                  /* backups prune keeps */
    char backup_schedule[128];            /* cron expressions of the backup and verify jobs */
    char backup_verify_schedule[128];
    /* schedules of the builtin jobs (cron text or "off"; "" = the storage.*_interval) */
    char jobs_compaction[128], jobs_compression[128], jobs_retention[128];
    char jobs_archiving[128], jobs_integrity_check[128], jobs_optimize[128];
    char log_level[16];
    char log_file[512]; /* "" = stderr */
    int64_t log_max_bytes, log_max_age_ms, log_keep;
    char config_path[512];       /* the file config_load_file() read last; "" = none */
    char alert_rule_files[2048]; /* comma-separated paths */
    int64_t alert_interval_ms;   /* default evaluation interval of a rule group */
    char alert_default_rules[8]; /* "on" or "off" */
    int64_t alert_flapping_transitions, alert_flapping_window_ms;
    int64_t alert_correlation_window_ms;
    char jobs_timezone[128];
    char jobs_auto_create[8]; /* "on" or "off" */
    int64_t jobs_output_bytes;
    int64_t collection_silence_ms;  /* collection_status: silence of a source with no interval */
    int64_t collection_max_sources; /* sources whose heartbeats are kept */
    /* network receivers inside `opsdb serve` (docs/collection.md) */
    char syslog_udp[128], syslog_tcp[128]; /* "host:port"; "" = off */
    char syslog_min_severity[16];
    int64_t syslog_max_message_bytes, syslog_max_connections, syslog_flush_ms;
    char graphite_udp[128], graphite_tcp[128];
    char graphite_templates[4096]; /* template lines separated by newlines */
    int64_t graphite_max_line_bytes, graphite_max_connections, graphite_flush_ms;
    size_t nfp_rules;
    char fp_regex[CONFIG_MAX_FP_RULES][256];
    char fp_replacement[CONFIG_MAX_FP_RULES][64];
    /* opsdb agent (docs/collection.md) */
    char agent_server[1024];
    char agent_token[512];
    int64_t agent_interval_ms;
    char agent_spool_dir[4096];
    int64_t agent_spool_max_bytes;
    int64_t agent_retry_max_ms, agent_timeout_ms;
    /* opsdb serve's collection of its own host */
    char collection_self[8]; /* "on" or "off" */
    int64_t collection_interval_ms;
    /* Prometheus: defaults of the scrape jobs (collect/scrape.h) and the remote-write route */
    int64_t scrape_interval_ms, scrape_timeout_ms;
    int64_t scrape_body_limit_bytes, scrape_sample_limit;
    int64_t remote_write_max_decoded_bytes;
    /* logs.*: the access and application log parsers and the file tailer (docs/collection.md) */
    char logs_access_format[1024];  /* nginx log_format or Apache LogFormat text */
    char logs_plain_pattern[1024];  /* POSIX ERE with %{FIELD} placeholders */
    char logs_service[256];         /* "" = named after the log file */
    char logs_host[256];            /* "" = this machine's host name */
    char logs_min_level[16];        /* application log events below it are skipped */
    int64_t logs_max_line_bytes;    /* longer lines are cut (and counted) */
    int64_t logs_multiline_wait_ms; /* an idle file completes its pending multi-line event */
    int64_t logs_rotate_wait_ms;    /* a renamed file is read this long after it went quiet */
    /* opsdb agent --tail: log files the agent ships (docs/collection.md) */
    char agent_tail[8192];      /* KIND:PATH specs, comma-separated */
    char agent_host[8];         /* "on" or "off": the agent collects this host's metrics */
    int64_t agent_tail_poll_ms; /* how often each tail reads its file */
    /* auth.mode: auto, required or off (src/auth/auth.h, docs/security.md) */
    char auth_mode[16];
    /* transport security (docs/security.md): HTTPS of opsdb serve, CA files of the clients */
    char tls_cert[4096], tls_key[4096]; /* PEM files; both "" = plain HTTP */
    char agent_ca_file[4096];           /* "" = the system's CAs */
    char alert_ca_file[4096];           /* receivers that give no ca_file of their own */
    char ca_file[4096];                 /* the CLI's requests to a server (--ca-file) */
    int64_t auth_session_ttl_ms;        /* auth.session_ttl: dashboard sessions' lifetime */
    char allowed_origins[2048];         /* http.allowed_origins: other origins whose pages may send
                                           requests that change state, comma-separated */
    /* limits on what clients send (docs/security.md, "Limits") */
    int64_t max_header_bytes;           /* http.max_header_bytes */
    int64_t max_connections_per_client; /* 0 = none */
    int64_t connection_timeout_ms;
    int64_t request_timeout_ms; /* http.request_timeout: the whole request must arrive in it */
    int64_t rate_limit, rate_limit_burst; /* requests/s per client (0 = off); bucket size */
    int64_t max_json_depth, max_string_bytes;
    int64_t max_series_per_metric, max_labels; /* 0 = no limit */
};

/* Fills c with every default. */
void config_defaults(struct config *c);
/* Loads a YAML file over c (keys as in `opsdb config --help`, nested maps use dots). */
int config_load_file(struct config *c, const char *path, struct err *e);
/* Loads YAML text of len bytes over c, as config_load_file() loads a file (name prefixes the
 * messages; config_path is left as it is, so relative paths stay those of the last file). */
int config_load_text(struct config *c, const char *name, const char *text, size_t len,
                     struct err *e);
/* Sets one option by its dotted name from text (flags, environment). */
int config_set(struct config *c, const char *name, const char *value, struct err *e);
/* Applies OPSDB_<NAME> environment variables (dots and dashes become underscores). */
int config_apply_env(struct config *c, struct err *e);
/* Writes the option reference (name, default, help) as markdown. */
int config_markdown(struct buf *b);
/* Builds the fingerprint rules from c; caller frees with fingerprint_rules_free. */
struct fingerprint_rules *config_fingerprint_rules(const struct config *c, struct err *e);

#endif
