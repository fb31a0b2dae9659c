/*
 * collect/heartbeat: which sources deliver data, and when. Every collector (the agent and its
 * log tails, scrape targets, syslog and Graphite senders, Prometheus remote write, the server's
 * own host collection) notes a heartbeat each time a source delivers (or says it is alive with
 * nothing to send). The heartbeats keep one row per source in collection_sources (first and
 * last seen, expected interval, rows delivered) and record each silence longer than the source
 * may keep as a row of collection_gaps; the view collection_status turns them into last seen,
 * gaps and collection uptime over 24 hours and 30 days.
 */
#ifndef OPSDB_COLLECT_HEARTBEAT_H
#define OPSDB_COLLECT_HEARTBEAT_H

#include "core/core.h"
#include "ingest/ingest.h"

/* What delivers: the kind column of collection_sources. */
enum source_kind {
    SOURCE_AGENT,        /* opsdb agent: its host metrics */
    SOURCE_TAIL,         /* opsdb agent --tail: one log file */
    SOURCE_SCRAPE,       /* one Prometheus scrape target */
    SOURCE_SYSLOG,       /* one syslog sender (its HOSTNAME, or its address) */
    SOURCE_GRAPHITE,     /* one Graphite plaintext sender */
    SOURCE_REMOTE_WRITE, /* one Prometheus remote-write sender */
    SOURCE_HTTP,         /* a client of the ingestion API that names itself */
    SOURCE_SELF,         /* opsdb serve's own host collection */
};
/* "agent", "tail", ... ; NULL for a value out of range. */
const char *source_kind_name(enum source_kind kind);
/* The kind named name; -1 when none is. */
int source_kind_parse(const char *name);

/* Longest source name (longer names are cut). */
#define SOURCE_NAME_MAX 255

struct heartbeats;

/* Loads the sources known from earlier runs (so a restart keeps their history and counts the
 * server's downtime as their silence) and starts writing through w (borrowed; must outlive the
 * heartbeats) every second. cfg is borrowed. */
int heartbeats_new(struct heartbeats **out, struct store *s, struct writer *w,
                   const struct config *cfg, struct err *e);
/* Writes what changed since the last write, stops, frees; *h becomes NULL. NULL is a no-op. */
void heartbeats_free(struct heartbeats **h);

/* Source `name` of `kind` delivered `rows` rows now (0: alive with nothing to send).
 * interval_ms is how often it is expected to deliver (0: unknown; collection.silence decides
 * then). A heartbeat after a silence longer than the source may keep (3 intervals, and at
 * least collection.silence) records that gap. Cheap (in memory): any thread, h NULL is a
 * no-op. */
void heartbeat_note(struct heartbeats *h, enum source_kind kind, const char *name,
                    int64_t interval_ms, uint64_t rows);

#endif
