/*
 * agent/: collecting a host's metrics from /proc and /sys, and getting rows to a server that may
 * be down. Three parts, used by `opsdb agent` (which ships to a server over HTTP) and by
 * `opsdb serve` (which collects its own host and writes through its writer):
 *
 *   host collectors  a table of collectors (cpu, memory, disk, network, ...), each appending
 *                    samples of system_metrics; rates come from two reads, so the first
 *                    collection after start has no rate metrics (docs/collection.md lists them)
 *   shipper          sends NDJSON batches to /api/v1/ingest/<table> and, while the server does
 *                    not answer, keeps them in a bounded on-disk spool replayed oldest first
 *   self collection  the server's thread that collects its own host and its own health
 */
#ifndef OPSDB_AGENT_H
#define OPSDB_AGENT_H

#include "core/core.h"

#include <signal.h>

/* ---- samples ------------------------------------------------------------------------------ */

/* Label values longer than this are cut (mount points, device and interface names). */
#define SAMPLE_LABEL_MAX 256

/* One sample of system_metrics without its time and host, which the whole set shares. The
 * component, metric and label_key strings are static (the collectors' names); label_key NULL
 * means no labels. */
struct sample {
    const char *component;
    const char *metric;
    const char *label_key;
    char label_value[SAMPLE_LABEL_MAX];
    double value;
};

/* The samples of one collection: one ts and one host for all. Embed and samples_init(). */
struct samples {
    int64_t ts_ms;
    char host[256];
    struct sample *items; /* malloc'd */
    size_t n, cap;
};

void samples_init(struct samples *s, int64_t ts_ms, const char *host);
void samples_release(struct samples *s);
/* Appends one sample (label_key NULL: no labels). A value that is not finite is left out: a
 * counter that went backwards or a zero divisor is no sample. Aborts when memory is out, as
 * batch_add_row does. */
void samples_add(struct samples *s, const char *component, const char *metric,
                 const char *label_key, const char *label_value, double value);
/* Appends the samples as system_metrics NDJSON rows (ts in ms, host, component, metric, value,
 * labels) to out; E_LIMIT when out's maximum is reached (out then holds whole lines only). */
int samples_to_ndjson(const struct samples *s, struct buf *out);
struct batch;
/* Appends the samples as rows to b, a batch of system_metrics (batch_init'ed by the caller),
 * every column filled (labels "{}" when none) as ingestion would. */
void samples_to_batch(const struct samples *s, struct batch *b);

/* ---- host collectors ---------------------------------------------------------------------- */

struct host_collector;

/* Reads /proc and /sys under root ("" or "/": the real ones; a directory holding proc/ and sys/
 * for tests) and takes the first reading of every counter whose rate is reported. Fails only
 * when memory is out. Free with host_collector_free. */
int host_collector_new(struct host_collector **out, const char *root, struct err *e);
void host_collector_free(struct host_collector **c);
/* The machine's host name (gethostname), the host column of every sample. */
const char *host_collector_host(const struct host_collector *c);
/* Runs every collector into out (samples_init'ed by the caller). mono_ms is CLOCK_MONOTONIC in
 * ms (rates divide by the time since the last call). A collector that fails (a file missing
 * or malformed) adds nothing; the others still run; the first failure is returned (E_IO) with
 * its collector and reason in e. Not thread safe: one thread per collector. */
int host_collect(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e);
/* The collectors' names, in order, for docs and --help. */
const char *const *host_collector_names(size_t *count);
/* CLOCK_MONOTONIC in ms. */
int64_t agent_mono_ms(void);

/* ---- shipper and spool --------------------------------------------------------------------- */

struct ship_opts {
    const char *server;      /* base URL, e.g. http://db:8470 ("http://" added when missing) */
    const char *token;       /* bearer token; NULL or "": none */
    const char *source_name; /* X-Opsdb-Source (the host name, a tailed file) */
    const char *source_kind; /* X-Opsdb-Source-Kind ("agent", "tail") */
    int64_t interval_ms;     /* X-Opsdb-Interval: how often the source sends */
    const char *spool_dir;   /* created when missing; one shipper per directory (locked) */
    int64_t spool_max_bytes; /* past this the oldest spooled batches are dropped */
    int64_t retry_max_ms;    /* cap of the backoff between tries while the server is down */
    int64_t timeout_ms;      /* of one HTTP request */
    const char *ca_file;     /* CA certificates of an https:// server; NULL or "": the system's */
};

struct ship_stats {
    uint64_t batches_sent, rows_sent;         /* acknowledged by the server (2xx) */
    uint64_t batches_replayed, rows_replayed; /* of those, sent from the spool */
    uint64_t batches_spooled;                 /* written to the spool */
    uint64_t batches_refused, rows_refused;   /* 4xx: dropped, not retried */
    uint64_t batches_dropped, rows_dropped;   /* oldest dropped for the spool bound */
    uint64_t spool_batches, spool_bytes;      /* in the spool now */
};

struct shipper;

/* Opens (creating) and locks the spool directory, and takes up the batches an earlier run left
 * there (logged), to be sent before any new one. E_IO when the directory cannot be made or
 * another process holds it; E_INVALID for a bad option. Strings in o are copied. */
int shipper_new(struct shipper **out, const struct ship_opts *o, struct err *e);
/* Frees (what is spooled stays for the next run); *s becomes NULL. NULL is a no-op. */
void shipper_free(struct shipper **s);
/* Sends body (len bytes of NDJSON rows of table) as one POST to <server>/api/v1/ingest/<table>.
 * Returns 0 once the rows are acknowledged by the server (2xx) or durably in the spool (written
 * atomically); while the spool holds anything, body goes behind it, and the spool is replayed
 * first when a try is due (backoff after a failure, doubling up to retry_max_ms). E_INVALID
 * (message with the server's answer) when the server refused the rows with a 4xx: the batch is
 * dropped, not retried; E_IO when the spool cannot be written (the batch is lost). Logs what
 * happens to the server and the spool. Any thread (calls are serialised). */
int ship_send(struct shipper *s, const char *table, const char *body, size_t len, struct err *e);
/* Says the source is alive with nothing to send: POST <server>/api/v1/heartbeat naming it
 * (source_name, source_kind, interval_ms). Skipped (0) while the spool holds batches or a try
 * is not due: the batches will say it when they go. 0 when the server took it; E_IO when it did
 * not answer (the backoff is the batches'), E_INVALID when it refused it; e says why. */
int ship_alive(struct shipper *s, struct err *e);
/* Replays the spool when a try is due (as ship_send does first); 0, or E_IO when a spooled batch
 * could not be read. */
int ship_flush(struct shipper *s, struct err *e);
/* Milliseconds until the next try of a waiting spool is due (0: due now); -1 when the spool is
 * empty. */
int64_t ship_retry_in_ms(struct shipper *s);
void ship_get_stats(struct shipper *s, struct ship_stats *out);

/* ---- the agent ----------------------------------------------------------------------------- */

/* Most files one agent tails (agent.tail). */
#define AGENT_TAILS_MAX 64

struct agent_opts {
    struct ship_opts ship;
    int64_t interval_ms;
    bool once;                /* one collection (rates over one second), sent, then return */
    bool host;                /* collect this host's metrics (agent.host) */
    const char *const *tails; /* KIND:PATH of the files to ship, each agent_tail_check'ed */
    size_t ntails;            /* at most AGENT_TAILS_MAX; not with once */
    int64_t tail_poll_ms;     /* how often each file is read */
    const struct config *cfg; /* logs.* options of the tails; borrowed */
};

struct agent_stats {
    uint64_t collections, rows_collected;
    struct ship_stats ship; /* of the host's rows */
    /* the tails' sums: lines read, bad lines, rows made, and their shippers' counts */
    uint64_t tail_lines, tail_lines_bad, tail_rows;
    struct ship_stats tail_ship;
};

/* Checks a tail's "KIND:PATH" before the agent starts: E_INVALID (a usage error) for a bad
 * shape, kind or logs.* format, or a source name HOST:PATH longer than collection_status
 * keeps; E_IO when the path exists but is no regular file or cannot be read. A path that does
 * not exist yet is fine: the tail waits for it. */
int agent_tail_check(const char *spec, const struct config *cfg, struct err *e);

/* Runs the agent: every interval_ms (on a monotonic schedule) collects this host and sends the
 * rows through a shipper (unless host is false); between collections replays the spool when a
 * try is due. Each of tails is followed by a thread of its own (its rows go through a shipper
 * of its own with its spool under ship.spool_dir; see tailer_start). Returns when one of
 * stop_signals (blocked by the caller) arrives, or after one collection with once; logs one
 * line of counts per tail. 0, or an error with e filled: a spool could not be opened (at
 * start), or with once: the rows were refused (E_INVALID) or could only be spooled (E_STORE:
 * they go with the next run). */
int agent_run(const struct agent_opts *o, const sigset_t *stop_signals, struct agent_stats *st,
              struct err *e);

/* ---- the server's own host ------------------------------------------------------------------ */

struct writer;
struct heartbeats;
struct self_collection;

/* Starts a thread that, every cfg->collection_interval_ms, collects this host (the collectors
 * above) and the server's own health (component "opsdb": rows ingested per second, writer queue
 * depth, commit latency, its CPU and memory), writes them through w, and notes a heartbeat of
 * kind self in h (may be NULL). w, h and cfg are borrowed and must outlive it. */
int self_collection_start(struct self_collection **out, struct writer *w, struct heartbeats *h,
                          const struct config *cfg, struct err *e);
/* Stops the thread (a collection under way finishes) and frees; *s becomes NULL. NULL is a
 * no-op. */
void self_collection_stop(struct self_collection **s);

#endif
