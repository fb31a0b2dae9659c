/*
 * jobs/builtin: opsdb's own maintenance as builtin jobs for the engine (jobs.h) — compaction of
 * metric samples, compression (packing) of event partitions, retention, archive upkeep, the
 * integrity check and optimisation of the database file. The work that writes runs on the
 * writer thread a step at a time (writer_run), so ingestion goes on between steps; each run
 * writes what it did as its summary.
 */
#ifndef OPSDB_JOBS_BUILTIN_H
#define OPSDB_JOBS_BUILTIN_H

#include "ingest/ingest.h"
#include "jobs/jobs.h"

/* How many builtin jobs jobs_builtins() may give. */
#define JOBS_BUILTIN_MAX 8

/* What the builtin jobs work on. The caller owns it (a server embeds one); it must outlive the
 * jobs engine, whose runs use it. */
struct jobs_maintenance {
    struct writer *w;
    struct store *s;
    const struct config *cfg;
    char every_text[JOBS_BUILTIN_MAX][48]; /* "@every ..." schedules; filled by jobs_builtins */
};

/* Fills out with the builtin jobs (at most max; JOBS_BUILTIN_MAX is enough) and returns how
 * many. Each job's schedule is its config key jobs.<name>: cron text or "off" as given, or, for
 * compaction, compression and retention left empty, every_ms from storage.compact_interval or
 * storage.retention_interval (then schedule is the same as "@every ..." text in m). The jobs'
 * arg is m. A server whose engine runs them turns the writer's own timers off
 * (writer_set_maintenance). */
size_t jobs_builtins(struct jobs_maintenance *m, struct jobs_builtin *out, size_t max);

/* The one line the optimize job writes of what store_optimize did ("database 1.2 MiB before,
 * ...; 300 KiB given back"), for `opsdb optimize` too. */
void jobs_optimize_summary(const struct store_optimize_stats *os, struct buf *out);

#endif
