/*
 * agent/ private: the host collector's state and the collectors' shared helpers. One collector
 * per /proc source, each in its own file (collect_<name>.c), listed in the table of collect.c.
 */
#ifndef OPSDB_AGENT_INT_H
#define OPSDB_AGENT_INT_H

#include "agent/agent.h"

/* Largest /proc or /sys file read (/proc/stat of a 4096-cpu machine is about 600 KiB). */
#define PROC_FILE_MAX (8u << 20)
/* Most counters kept per device or interface, and most devices/interfaces/cpus tracked. */
#define COUNTERS_MAX 8
#define DEVICES_MAX 1024
#define CPUS_MAX 8192

/* The counters of one device (disk, interface) at the last read. */
struct counter_entry {
    char name[SAMPLE_LABEL_MAX];
    uint64_t v[COUNTERS_MAX];
    uint64_t generation; /* the read that last saw it */
};

/* Counters by name, for rates between two reads; devices that disappear are forgotten. */
struct counter_table {
    struct counter_entry *items;
    size_t n;
    uint64_t generation;
    int64_t last_mono_ms; /* time of the previous read; 0 before the first */
};

/* cpu time in USER_HZ ticks from one line of /proc/stat */
struct cpu_times {
    uint64_t user, system, idle, iowait, steal, total;
    bool seen;
};

struct host_collector {
    char root[4096]; /* "" for the real /proc and /sys */
    char host[256];
    struct buf file; /* the last file read (reused: collection allocates little) */
    struct cpu_times cpu_total;
    struct cpu_times *cpus; /* CPUS_MAX, by cpu number */
    struct counter_table disks, nets;
};

/* One collector: appends its samples; returns 0 or E_IO with the reason. mono_ms is the time
 * of this collection. */
typedef int (*collector_fn)(struct host_collector *c, int64_t mono_ms, struct samples *out,
                            struct err *e);

int collect_cpu(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e);
int collect_memory(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e);
int collect_load(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e);
int collect_uptime(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e);
int collect_processes(struct host_collector *c, int64_t mono_ms, struct samples *out,
                      struct err *e);
int collect_disk(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e);
int collect_filesystem(struct host_collector *c, int64_t mono_ms, struct samples *out,
                       struct err *e);
int collect_network(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e);

/* Reads root/<rel> (rel like "proc/stat") whole into c->file; returns its NUL-terminated text,
 * or NULL with E_IO in e naming the path. Valid until the next read. */
const char *collector_read(struct host_collector *c, const char *rel, struct err *e);
/* root/<rel> into out. */
void collector_path(const struct host_collector *c, const char *rel, char *out, size_t size);

/* The value of a "Name: 123 kB" line of a /proc file like meminfo (in the file's unit), or
 * false when the name is missing. */
bool proc_field(const char *text, const char *name, uint64_t *out);

/* Stores counters v[0..n) of name read at mono_ms; when the previous read of the same table had
 * it, fills delta (current minus previous; false when any counter went backwards: a reset) and
 * *seconds (time between the reads) and returns true. Call counters_sweep after each read. */
bool counters_update(struct counter_table *t, const char *name, const uint64_t *v, size_t n,
                     uint64_t *delta, double *seconds, int64_t mono_ms);
/* Ends a read: forgets the entries it did not see and remembers its time. */
void counters_sweep(struct counter_table *t, int64_t mono_ms);
void counters_release(struct counter_table *t);

/* ---- the spool: batches waiting for the server, one file each ----------------------------- */

/* One spooled batch: the file <dir>/<seq>.<table>.<rows>.ndjson (seq: 20 digits, in order). */
struct spool_entry {
    uint64_t seq;
    char table[64];
    uint64_t rows, bytes;
};

struct spool {
    char dir[4096];
    int lock_fd;               /* flock'ed <dir>/.lock: one process per spool */
    struct spool_entry *items; /* oldest first */
    size_t n, cap;
    uint64_t bytes, next_seq;
    uint64_t max_bytes;
};

/* What spool_put dropped to stay within max_bytes. */
struct spool_dropped {
    uint64_t batches, rows;
};

/* Creates and locks dir, removes temporary files a crash left, and takes up the batches there
 * (oldest first). E_IO naming the directory and the reason, also when it is locked. */
int spool_open(struct spool *sp, const char *dir, uint64_t max_bytes, struct err *e);
/* Unlocks and frees the list; the files stay. */
void spool_close(struct spool *sp);
/* Writes a batch behind the others atomically (temp file, fsync, rename, fsync of the
 * directory), first dropping the oldest batches (counted in *dropped, logged) as long as the
 * spool would pass max_bytes; a batch larger than max_bytes alone is dropped itself. E_IO when
 * the file cannot be written (nothing changed). */
int spool_put(struct spool *sp, const char *table, const char *body, size_t len, uint64_t rows,
              struct spool_dropped *dropped, struct err *e);
/* Reads the oldest batch's body into body (which must be able to hold it); E_IO when it cannot
 * be read (the caller drops it with spool_pop). */
int spool_read_oldest(struct spool *sp, struct buf *body, struct err *e);
/* Removes the oldest batch. */
void spool_pop(struct spool *sp);

/* ---- tailers: one thread per tailed file (tailer.c) ---------------------------------------- */

struct tail_stats;

struct tailer_opts {
    const char *spec;         /* KIND:PATH, checked with agent_tail_check */
    struct ship_opts ship;    /* server, token and limits; spool_dir is the agent's */
    int64_t interval_ms;      /* the agent's: X-Opsdb-Interval and the idle heartbeat */
    int64_t poll_ms;          /* how often the file is read */
    const struct config *cfg; /* logs.* (copied by the tail) */
};

struct tailer;

/* Opens the tail's shipper and tail in <ship.spool_dir>/tail-<hash of spec> (its spool and its
 * saved offset; locked: one agent per file) and starts its thread, which reads the file every
 * poll_ms, sends the rows (source HOST:PATH, kind tail) and commits the offset once they are
 * safe, and says the file is alive once per interval_ms when it has nothing to send. E_IO when
 * the directory cannot be made or is locked, E_INVALID for a bad spec; e says why. */
int tailer_start(struct tailer **out, const struct tailer_opts *o, struct err *e);
/* Asks the thread to stop after the poll under way, without waiting (so that several files
 * finish their sends at once). */
void tailer_ask_stop(struct tailer *t);
/* Stops the thread after the poll under way (its rows sent and committed) and waits for it;
 * idempotent. */
void tailer_stop(struct tailer *t);
/* The tail's and its shipper's counts; call after tailer_stop. */
void tailer_get_stats(struct tailer *t, struct tail_stats *ts, struct ship_stats *ss);
/* KIND:PATH. */
const char *tailer_name(const struct tailer *t);
/* Stops (when running) and frees; *t becomes NULL. NULL is a no-op. */
void tailer_free(struct tailer **t);

#endif
