/*
 * The builtin jobs: one row per job in a table (name, what it does, its schedule key, its run),
 * and the runs. A run that writes goes through the writer (writer_run and the step functions
 * built on it), one bounded step per call, so requests are committed between steps as they
 * were between the writer's own timed steps; the integrity check reads on a read connection.
 * Each run writes one line of what it did into its output; a failure fills e and leaves in the
 * output what was done before it. Compaction and compression stop between their steps when
 * cancelled; the others are one step each.
 */
#include "jobs/builtin.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "12.3 MiB" */
static void put_bytes(struct buf *out, int64_t bytes)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        buf_printf(out, "%lld bytes", (long long)bytes);
    else
        buf_printf(out, "%.1f %s", v, units[u]);
}

/* ---- compaction and compression: a whole pass, a step per writer_run ------------------------ */

/* A pass stopped by a cancel after steps steps: what they did stays. */
static int cancelled(int steps, struct err *e)
{
    return err_set(e, E_CANCELLED, "cancelled after %d step%s (what they did is kept)", steps,
                   steps == 1 ? "" : "s");
}

static int run_compaction(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    const struct jobs_maintenance *m = arg;
    if (m->cfg->storage_compress_after_ms == 0) {
        buf_printf(out, "nothing to do: storage.compress_after is 0 (never)");
        return 0;
    }
    int64_t before_ms = time_now_ms() - m->cfg->storage_compress_after_ms;
    struct store_compact_stats cs = {0};
    int rc, steps = 0;
    do {
        rc = writer_compact_step(m->w, before_ms, &cs, e);
        steps++;
    } while (rc == 0 && !cs.pass_done && !atomic_load(cancel));
    buf_printf(out, "compacted %lld samples of %lld series (%lld series visited in %d steps)",
               (long long)cs.samples_moved, (long long)cs.series_compacted,
               (long long)cs.series_seen, steps);
    if (rc)
        return rc;
    if (!cs.pass_done)
        return cancelled(steps, e);
    if (cs.series_failed) {
        buf_printf(out, "; %lld series left as they were: %s", (long long)cs.series_failed,
                   cs.first_failure);
        return err_set(e, E_CORRUPT,
                       "%lld series have chunks that cannot be read (the others were "
                       "compacted): %s",
                       (long long)cs.series_failed, cs.first_failure);
    }
    return 0;
}

static int run_compression(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    const struct jobs_maintenance *m = arg;
    if (m->cfg->storage_compress_events_after_ms == 0) {
        buf_printf(out, "nothing to do: storage.compress_events_after is 0 (never)");
        return 0;
    }
    int64_t before_ms = time_now_ms() - m->cfg->storage_compress_events_after_ms;
    struct store_pack_stats ps = {0};
    int rc, steps = 0;
    do {
        rc = writer_pack_step(m->w, before_ms, &ps, e);
        steps++;
    } while (rc == 0 && !ps.done && !atomic_load(cancel));
    buf_printf(out, "packed %lld partitions: %lld rows into ", (long long)ps.partitions_packed,
               (long long)ps.rows_packed);
    put_bytes(out, ps.bytes_packed);
    if (ps.partitions_packed)
        buf_printf(out, " (the last %s)", ps.last);
    return rc == 0 && !ps.done ? cancelled(steps, e) : rc;
}

/* ---- retention ------------------------------------------------------------------------------ */

static int retention_task(struct store *s, void *arg, bool *answers_changed, struct err *e)
{
    struct store_retention_stats *rs = arg;
    int rc = store_retention_apply(s, time_now_ms(), rs, e);
    *answers_changed = rc == 0 && (rs->partitions_dropped || rs->chunks_dropped ||
                                   rs->samples_dropped || rs->rollup_rows_dropped);
    return rc;
}

static int run_retention(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    (void)cancel; /* one step: a cancel lets it end as it would */
    const struct jobs_maintenance *m = arg;
    struct store_retention_stats rs = {0};
    int rc = writer_run(m->w, retention_task, &rs, e);
    if (rc)
        return rc;
    buf_printf(out,
               "dropped %lld partitions (%lld rows), %lld chunks (%lld samples), %lld rollup "
               "rows; archived %lld partitions, removed %lld expired archives",
               (long long)rs.partitions_dropped, (long long)rs.rows_dropped,
               (long long)rs.chunks_dropped, (long long)rs.samples_dropped,
               (long long)rs.rollup_rows_dropped, (long long)rs.partitions_archived,
               (long long)rs.archives_expired);
    if (rs.partitions_dropped || rs.chunks_dropped || rs.samples_dropped ||
        rs.rollup_rows_dropped) /* as the log has said since retention ran on a timer */
        log_info("retention dropped %lld partitions (%lld rows), %lld chunks (%lld samples), "
                 "%lld rollup rows",
                 (long long)rs.partitions_dropped, (long long)rs.rows_dropped,
                 (long long)rs.chunks_dropped, (long long)rs.samples_dropped,
                 (long long)rs.rollup_rows_dropped);
    /* the drop stands: archives left past their time are the archiving job's to report */
    if (rs.expire_failure[0])
        buf_printf(out, "; expired archives not all removed: %s", rs.expire_failure);
    return 0;
}

/* ---- archives ------------------------------------------------------------------------------- */

/* Expired archives go (retention also removes them, but only when it runs, and not at all when
 * storage.retention_interval is 0); an archive whose manifest cannot be read fails the run, so
 * that it shows before the archive is needed. */
static int run_archiving(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    (void)cancel; /* one step: a cancel lets it end as it would */
    const struct jobs_maintenance *m = arg;
    const char *dir = m->cfg->storage_archive_dir;
    if (!dir[0]) {
        buf_printf(out, "nothing to do: storage.archive_dir is not set");
        return 0;
    }
    int64_t removed = 0;
    int rc = 0;
    if (m->cfg->storage_archive_retention_ms > 0)
        rc = store_archive_expire(dir, time_now_ms() - m->cfg->storage_archive_retention_ms,
                                  &removed, e);
    buf_printf(out, "removed %lld archives past storage.archive_retention", (long long)removed);
    if (rc)
        return rc;
    struct store_archive *all;
    size_t n;
    if ((rc = store_archive_list(dir, &all, &n, e)) != 0)
        return rc;
    int64_t bytes = 0;
    size_t unreadable = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += all[i].bytes;
        if (all[i].problem[0] && unreadable++ == 0)
            first = i;
    }
    buf_printf(out, "; %zu archives (", n);
    put_bytes(out, bytes);
    buf_printf(out, ") in %s", dir);
    if (unreadable) {
        buf_printf(out, "; %zu unreadable, first %s: %s", unreadable, all[first].partition,
                   all[first].problem);
        rc = err_set(e, E_CORRUPT, "%zu archives in %s cannot be read (first %s: %s)", unreadable,
                     dir, all[first].partition, all[first].problem);
    }
    free(all);
    return rc;
}

/* ---- the database file ---------------------------------------------------------------------- */

#define INTEGRITY_REPORT_BYTES 4096

static int run_integrity_check(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    (void)cancel; /* one step: a cancel lets it end as it would */
    const struct jobs_maintenance *m = arg;
    struct buf report;
    buf_init(&report, INTEGRITY_REPORT_BYTES);
    int64_t t0 = time_now_ms();
    int rc = store_integrity_check(m->s, true, &report, e);
    if (rc == 0) {
        buf_printf(out, "ok: quick_check of ");
        put_bytes(out, store_size_bytes(m->s));
        buf_printf(out, " in %.1f s", (double)(time_now_ms() - t0) / 1000);
    } else if (report.len) {
        buf_printf(out, "%s", report.data);
    }
    buf_release(&report);
    return rc;
}

static int optimize_task(struct store *s, void *arg, bool *answers_changed, struct err *e)
{
    (void)answers_changed;
    return store_optimize(s, arg, e);
}

void jobs_optimize_summary(const struct store_optimize_stats *os, struct buf *out)
{
    buf_printf(out, "database ");
    put_bytes(out, os->bytes_before);
    buf_printf(out, " before, ");
    put_bytes(out, os->bytes_after);
    buf_printf(out, " after; ");
    put_bytes(out, os->free_bytes);
    buf_printf(out, " free inside the file");
    if (os->bytes_released) {
        buf_printf(out, " (");
        put_bytes(out, os->bytes_released);
        buf_printf(out, " given back)");
    }
    if (os->cannot_shrink && os->free_bytes)
        buf_printf(out, "; the file was made without incremental vacuum and keeps its free "
                        "pages: `opsdb optimize --vacuum` (server stopped) gives them back");
    if (os->log_busy)
        buf_printf(out, "; readers kept the write-ahead log busy: it is truncated next time");
}

static int run_optimize(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    (void)cancel; /* one step: a cancel lets it end as it would */
    const struct jobs_maintenance *m = arg;
    struct store_optimize_stats os = {0};
    int rc = writer_run(m->w, optimize_task, &os, e);
    if (rc == 0)
        jobs_optimize_summary(&os, out);
    return rc;
}

/* ---- the table ------------------------------------------------------------------------------ */

static int64_t every_compact_interval(const struct config *c)
{
    return c->storage_compact_interval_ms;
}

static int64_t every_retention_interval(const struct config *c)
{
    return c->storage_retention_interval_ms;
}

struct builtin_def {
    const char *name, *what;
    size_t schedule_key;                     /* offset of jobs.<name> in struct config */
    int64_t (*every)(const struct config *); /* the interval when the key is empty */
    int (*run)(void *arg, const atomic_bool *cancel, struct buf *output, struct err *e);
};

#define KEY(f) offsetof(struct config, f)

static const struct builtin_def defs[] = {
    {"compaction", "compacts past days of metric samples into one chunk per series and day",
     KEY(jobs_compaction), every_compact_interval, run_compaction},
    {"compression", "packs event partitions past storage.compress_events_after into zstd blocks",
     KEY(jobs_compression), every_compact_interval, run_compression},
    {"retention", "drops data past the retention policies (archiving partitions first)",
     KEY(jobs_retention), every_retention_interval, run_retention},
    {"archiving", "removes archives past storage.archive_retention and checks their manifests",
     KEY(jobs_archiving), NULL, run_archiving},
    {"integrity_check", "checks the database's structure (quick_check)", KEY(jobs_integrity_check),
     NULL, run_integrity_check},
    {"optimize", "refreshes planner statistics, frees pages, truncates the write-ahead log",
     KEY(jobs_optimize), NULL, run_optimize},
};

size_t jobs_builtins(struct jobs_maintenance *m, struct jobs_builtin *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof defs / sizeof defs[0] && n < max && n < JOBS_BUILTIN_MAX; i++) {
        const struct builtin_def *d = &defs[i];
        const char *key = (const char *)m->cfg + d->schedule_key;
        struct jobs_builtin *b = &out[n++];
        *b = (struct jobs_builtin){
            .name = d->name, .what = d->what, .schedule = key, .run = d->run, .arg = m};
        if (key[0] || !d->every)
            continue;
        b->every_ms = d->every(m->cfg);
        if (b->every_ms <= 0) { /* storage.retention_interval 0: never, but by hand */
            b->every_ms = 0;
            b->schedule = "off";
            continue;
        }
        snprintf(m->every_text[n - 1], sizeof m->every_text[n - 1], "@every %lldms",
                 (long long)b->every_ms);
        b->schedule = m->every_text[n - 1];
    }
    return n;
}
