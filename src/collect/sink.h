/*
 * collect/sink: rows that network receivers (syslog, Graphite) produce one message at a time,
 * gathered into batches and written through the writer on a thread of their own, so that a
 * receiver never waits for a commit unless the sink is full. A batch is written when it holds
 * max_rows rows or flush_ms after its first row, whichever comes first; each batch also notes
 * one heartbeat per sender it heard from (collect/heartbeat.h).
 */
#ifndef OPSDB_COLLECT_SINK_H
#define OPSDB_COLLECT_SINK_H

#include "collect/heartbeat.h"

struct sink_config {
    const char *name; /* "syslog", "graphite": in log lines */
    const struct table *table;
    struct writer *writer;         /* borrowed; outlives the sink */
    struct heartbeats *heartbeats; /* borrowed, may be NULL */
    enum source_kind kind;         /* of the heartbeats */
    size_t max_rows;               /* rows in one batch; receivers wait while one is full */
    int64_t flush_ms;              /* longest a row waits for its batch to be written */
};

struct sink_stats {
    uint64_t rows_written; /* committed */
    uint64_t rows_failed;  /* in batches the writer refused (logged) */
    uint64_t batches_written;
    uint64_t batches_failed;
};

struct sink;

/* Starts the sink's thread. cfg is copied (name too). */
int sink_new(struct sink **out, const struct sink_config *cfg, struct err *e);
/* Writes what is pending, stops the thread, frees; *s becomes NULL. NULL is a no-op. */
void sink_free(struct sink **s);

/* Lends the pending batch, locked, to append rows to (and to drop rejected ones from): waits
 * while it is full. Every acquire is followed by one sink_release from the same thread. */
struct batch *sink_acquire(struct sink *s);
/* Gives the batch back and notes that sender (a host name or an address; cut to
 * SOURCE_NAME_MAX) delivered rows of them (0: a message that made no row: the sender is
 * alive all the same). */
void sink_release(struct sink *s, const char *sender, uint64_t rows);
void sink_get_stats(struct sink *s, struct sink_stats *out);

#endif
