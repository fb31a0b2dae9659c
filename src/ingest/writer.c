/*
 * The writer: one thread that owns the store's write path. Request threads queue validated
 * batches and wait; the writer takes everything queued (up to writer.max_group_rows), writes it
 * in one transaction with a savepoint per batch, commits once, runs the after-commit hooks and
 * wakes the waiters. One fsync then covers many requests (group commit), and a 2xx is only ever
 * sent for rows that are durable.
 */
#include "ingest/ingest.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A queued batch, or a task (batch NULL) run alone between groups. */
struct job {
    struct job *next;
    const struct batch *batch;
    writer_task_fn task;
    void *task_arg;
    int rc;
    struct err err;
    bool done;
};

#define MAX_HOOKS 8

struct writer {
    struct store *store;
    int64_t max_group_rows, queue_max_rows;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t work;  /* writer waits: queue empty */
    pthread_cond_t done;  /* submitters wait: their job finished */
    pthread_cond_t space; /* submitters wait: queue full */
    struct job *head, *tail;
    bool stopping;
    bool timers_on; /* the writer's own compaction, packing and retention timers */
    struct writer_stats stats;
    int64_t compress_after_ms, compact_interval_ms; /* 0: no compaction */
    struct timespec next_compaction;                /* CLOCK_MONOTONIC */
    int64_t compress_events_after_ms;               /* 0: event partitions are not packed */
    struct timespec next_packing;
    int64_t retention_interval_ms; /* 0: retention is not applied */
    struct timespec next_retention;
    size_t nhooks;
    writer_hook hooks[MAX_HOOKS];
    void *hook_args[MAX_HOOKS];
};

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Takes queued batches up to the group limit (always at least one: the head is a batch) and
 * stops before a task. Called with the lock held. */
static struct job *take_group(struct writer *w, size_t *rows)
{
    struct job *first = w->head, *last = NULL, *j = w->head;
    *rows = 0;
    while (j && j->batch &&
           (last == NULL || (int64_t)(*rows + j->batch->nrows) <= w->max_group_rows)) {
        *rows += j->batch->nrows;
        last = j;
        j = j->next;
    }
    w->head = j;
    if (!j)
        w->tail = NULL;
    last->next = NULL;
    return first;
}

static void record_group(struct writer *w, struct job *group, size_t rows, double secs,
                         bool committed)
{
    size_t n;
    const struct table *tables = schema_tables(&n);
    w->stats.queue_rows -= rows;
    w->stats.last_group_failed = !committed;
    if (!committed)
        snprintf(w->stats.last_error, sizeof w->stats.last_error, "%.250s", group->err.msg);
    size_t rows_written = 0;
    for (struct job *j = group; j; j = j->next) {
        if (j->rc == 0) {
            w->stats.batches_committed++;
            w->stats.rows_committed[j->batch->table - tables] += j->batch->nrows;
            rows_written += j->batch->nrows;
        } else {
            w->stats.batches_failed++;
        }
    }
    if (!committed)
        return;
    w->stats.groups_committed++;
    w->stats.group_rows_sum += rows_written;
    w->stats.commit_seconds_sum += secs;
    static const double bounds[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    for (size_t i = 0; i < 8; i++)
        if (i == 7 || (double)rows_written <= bounds[i])
            w->stats.group_rows_buckets[i]++;
}

static void write_group(struct writer *w, struct job *group, size_t rows)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct err e;
    bool committed = false;
    if (store_write_begin(w->store, &e) != 0) {
        for (struct job *j = group; j; j = j->next) {
            j->rc = E_STORE;
            j->err = e;
        }
    } else {
        for (struct job *j = group; j; j = j->next)
            j->rc = store_write_batch(w->store, j->batch, &j->err);
        if (store_write_commit(w->store, &e) == 0) {
            committed = true;
        } else {
            for (struct job *j = group; j; j = j->next)
                if (j->rc == 0) {
                    j->rc = E_STORE;
                    j->err = e;
                }
        }
    }
    if (committed) {
        const struct batch *done[1024];
        size_t n = 0;
        for (struct job *j = group; j; j = j->next) {
            if (j->rc == 0)
                done[n++] = j->batch;
            if (n == sizeof done / sizeof done[0] || (!j->next && n)) {
                for (size_t h = 0; h < w->nhooks; h++)
                    w->hooks[h](w->hook_args[h], done, n);
                n = 0;
            }
        }
    }
    double secs = seconds_since(&t0);
    pthread_mutex_lock(&w->lock);
    record_group(w, group, rows, secs, committed);
    for (struct job *j = group; j;) {
        struct job *next = j->next; /* j belongs to its submitter once done is set */
        j->done = true;
        j = next;
    }
    pthread_cond_broadcast(&w->done);
    pthread_cond_broadcast(&w->space);
    pthread_mutex_unlock(&w->lock);
}

/* Tells the hooks that any table may have changed (n == 0). Writer thread, lock not held. */
static void tell_hooks_anything_changed(struct writer *w)
{
    for (size_t h = 0; h < w->nhooks; h++)
        w->hooks[h](w->hook_args[h], NULL, 0);
}

/* Tells the hooks when another process (opsdb ingest on the same file) committed: they cannot
 * know which tables, so they hear n == 0. Called on the writer thread, lock not held. */
static void check_outside_writes(struct writer *w)
{
    if (store_changed_elsewhere(w->store))
        tell_hooks_anything_changed(w);
}

static void after(struct timespec *t, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000;
    if (t->tv_nsec >= 1000000000) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000;
    }
}

static bool due(const struct timespec *when)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > when->tv_sec ||
           (now.tv_sec == when->tv_sec && now.tv_nsec >= when->tv_nsec);
}

static bool timers_on(struct writer *w)
{
    pthread_mutex_lock(&w->lock);
    bool on = w->timers_on;
    pthread_mutex_unlock(&w->lock);
    return on;
}

/* One compaction step, added to *total and counted in the writer's stats (a step that failed
 * adds nothing: it was rolled back). Writer thread, lock not held. */
static int compact_step(struct writer *w, int64_t before_ms, struct store_compact_stats *total,
                        struct err *e)
{
    struct store_compact_stats cs = {0};
    int rc = store_compact_step(w->store, before_ms, &cs, e);
    pthread_mutex_lock(&w->lock);
    w->stats.samples_compacted += rc ? 0 : (uint64_t)cs.samples_moved;
    w->stats.compaction_failures += rc ? 1 : 0;
    pthread_mutex_unlock(&w->lock);
    if (rc)
        return rc;
    total->samples_moved += cs.samples_moved;
    total->series_compacted += cs.series_compacted;
    total->series_seen += cs.series_seen;
    total->pass_done = cs.pass_done;
    if (cs.series_failed && !total->series_failed)
        memcpy(total->first_failure, cs.first_failure, sizeof total->first_failure);
    total->series_failed += cs.series_failed;
    return 0;
}

/* One packing step, as compact_step(). */
static int pack_step(struct writer *w, int64_t before_ms, struct store_pack_stats *total,
                     struct err *e)
{
    struct store_pack_stats ps = {0};
    int rc = store_pack_step(w->store, before_ms, &ps, e);
    pthread_mutex_lock(&w->lock);
    w->stats.partitions_packed += rc ? 0 : (uint64_t)ps.partitions_packed;
    w->stats.compaction_failures += rc ? 1 : 0;
    pthread_mutex_unlock(&w->lock);
    if (rc)
        return rc;
    total->partitions_packed += ps.partitions_packed;
    total->rows_packed += ps.rows_packed;
    total->bytes_packed += ps.bytes_packed;
    total->done = ps.done;
    if (ps.partitions_packed) {
        memcpy(total->last, ps.last, sizeof total->last);
        log_info("packed %s: %lld rows into %lld bytes", ps.last, (long long)ps.rows_packed,
                 (long long)ps.bytes_packed);
    }
    return 0;
}

/* One compaction step when one is due; a pass that is not done continues after the next group
 * (or at once when idle). Returns whether a step ran and more is waiting. Writer thread, lock
 * not held. */
static bool compact_if_due(struct writer *w)
{
    if (!w->compact_interval_ms || !w->compress_after_ms || !due(&w->next_compaction) ||
        !timers_on(w))
        return false;
    struct store_compact_stats cs = {0};
    struct err e;
    int rc = compact_step(w, time_now_ms() - w->compress_after_ms, &cs, &e);
    if (rc)
        log_warn("compaction failed, retried in %llds: %s",
                 (long long)(w->compact_interval_ms / 1000), e.msg);
    else if (cs.series_failed)
        log_warn(
            "compaction failed for %lld series with unreadable chunks (they stay as they were; the "
            "others were compacted): %s",
            (long long)cs.series_failed, cs.first_failure);
    if (rc || cs.pass_done)
        after(&w->next_compaction, w->compact_interval_ms);
    return !rc && !cs.pass_done;
}

/* Packs one event partition when due, on the compaction interval; a pass goes on partition by
 * partition between groups until none is left. Answers do not change. Writer thread, lock not
 * held. */
static bool pack_if_due(struct writer *w)
{
    if (!w->compact_interval_ms || !w->compress_events_after_ms || !due(&w->next_packing) ||
        !timers_on(w))
        return false;
    struct store_pack_stats ps = {0};
    struct err e;
    int rc = pack_step(w, time_now_ms() - w->compress_events_after_ms, &ps, &e);
    if (rc)
        log_warn("packing event partitions failed, retried in %llds: %s",
                 (long long)(w->compact_interval_ms / 1000), e.msg);
    if (rc || ps.done)
        after(&w->next_packing, w->compact_interval_ms);
    return !rc && !ps.done;
}

/* While no request waits, steps of a compaction or packing pass follow each other at once. */
static void maintain_while_idle(struct writer *w)
{
    for (;;) {
        bool more = compact_if_due(w);
        more = pack_if_due(w) || more;
        pthread_mutex_lock(&w->lock);
        bool busy = w->head || w->stopping;
        pthread_mutex_unlock(&w->lock);
        if (!more || busy)
            return;
    }
}

/* Applies the retention policies when due; what it drops changes answers, so the hooks hear of
 * it as of a write whose tables are unknown (n == 0). Writer thread, lock not held. */
static void apply_retention_if_due(struct writer *w)
{
    if (!w->retention_interval_ms || !due(&w->next_retention) || !timers_on(w))
        return;
    after(&w->next_retention, w->retention_interval_ms);
    struct store_retention_stats rs = {0};
    struct err e;
    if (store_retention_apply(w->store, time_now_ms(), &rs, &e) != 0) {
        log_warn("retention failed, retried in %llds: %s",
                 (long long)(w->retention_interval_ms / 1000), e.msg);
        return;
    }
    if (rs.expire_failure[0])
        log_warn("archives past storage.archive_retention were not all removed: %s",
                 rs.expire_failure);
    if (rs.partitions_dropped || rs.chunks_dropped || rs.samples_dropped ||
        rs.rollup_rows_dropped) {
        log_info("retention dropped %lld partitions (%lld rows), %lld chunks (%lld samples), "
                 "%lld rollup rows",
                 (long long)rs.partitions_dropped, (long long)rs.rows_dropped,
                 (long long)rs.chunks_dropped, (long long)rs.samples_dropped,
                 (long long)rs.rollup_rows_dropped);
        tell_hooks_anything_changed(w);
    }
}

/* Runs a task queued by writer_run() and wakes its caller. Writer thread, lock not held. */
static void run_task(struct writer *w, struct job *t)
{
    bool answers_changed = false;
    struct err e;
    err_clear(&e);
    int rc = t->task(w->store, t->task_arg, &answers_changed, &e);
    if (answers_changed)
        tell_hooks_anything_changed(w);
    pthread_mutex_lock(&w->lock);
    t->rc = rc;
    t->err = e;
    t->done = true; /* t belongs to its caller from here on */
    pthread_cond_broadcast(&w->done);
    pthread_mutex_unlock(&w->lock);
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->head && !w->stopping) {
            /* idle: look for commits of other processes once a second */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            if (pthread_cond_timedwait(&w->work, &w->lock, &until) != 0) {
                pthread_mutex_unlock(&w->lock);
                check_outside_writes(w);
                maintain_while_idle(w);
                apply_retention_if_due(w);
                pthread_mutex_lock(&w->lock);
            }
        }
        if (!w->head && w->stopping)
            break;
        if (w->head->task) {
            struct job *t = w->head;
            w->head = t->next;
            if (!w->head)
                w->tail = NULL;
            pthread_mutex_unlock(&w->lock);
            check_outside_writes(w);
            run_task(w, t);
            pthread_mutex_lock(&w->lock);
            continue;
        }
        size_t rows;
        struct job *group = take_group(w, &rows);
        pthread_mutex_unlock(&w->lock);
        check_outside_writes(w);
        write_group(w, group, rows);
        compact_if_due(w);
        pack_if_due(w);
        apply_retention_if_due(w);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int writer_new(struct writer **out, struct store *s, const struct config *cfg, struct err *e)
{
    struct writer *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(e, E_NOMEM, "out of memory");
    w->store = s;
    w->max_group_rows = cfg->writer_max_group_rows;
    w->queue_max_rows = cfg->writer_queue_max_rows;
    w->timers_on = true;
    w->compress_after_ms = cfg->storage_compress_after_ms;
    w->compact_interval_ms = cfg->storage_compact_interval_ms;
    after(&w->next_compaction, w->compact_interval_ms); /* not at start: let the server settle */
    w->compress_events_after_ms = cfg->storage_compress_events_after_ms;
    after(&w->next_packing, w->compact_interval_ms);
    w->retention_interval_ms = cfg->storage_retention_interval_ms;
    after(&w->next_retention, w->retention_interval_ms < 60000 ? w->retention_interval_ms : 60000);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->work, NULL);
    pthread_cond_init(&w->done, NULL);
    pthread_cond_init(&w->space, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        free(w);
        return err_set(e, E_NOMEM, "cannot start the writer thread");
    }
    *out = w;
    return 0;
}

void writer_free(struct writer **wp)
{
    struct writer *w = *wp;
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->work);
    pthread_cond_destroy(&w->done);
    pthread_cond_destroy(&w->space);
    free(w);
    *wp = NULL;
}

void writer_on_commit(struct writer *w, writer_hook hook, void *arg)
{
    if (w->nhooks < MAX_HOOKS) {
        w->hooks[w->nhooks] = hook;
        w->hook_args[w->nhooks++] = arg;
    }
}

/* Queues j, wakes the writer and waits until j is done; returns j's result. Called with the
 * lock held; returns with it released. */
static int queue_and_wait(struct writer *w, struct job *j, struct err *e)
{
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return err_set(e, E_STORE, "the server is shutting down; retry");
    }
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    w->stats.queue_rows += j->batch ? j->batch->nrows : 0;
    pthread_cond_signal(&w->work);
    while (!j->done)
        pthread_cond_wait(&w->done, &w->lock);
    pthread_mutex_unlock(&w->lock);
    if (j->rc != 0 && e)
        *e = j->err;
    return j->rc;
}

int writer_submit(struct writer *w, const struct batch *b, struct err *e)
{
    if (b->nrows == 0)
        return 0;
    struct job j = {.batch = b};
    pthread_mutex_lock(&w->lock);
    /* back-pressure: wait while the queue is full, unless it is empty (a huge batch still goes) */
    while (w->head && (int64_t)(w->stats.queue_rows + b->nrows) > w->queue_max_rows && !w->stopping)
        pthread_cond_wait(&w->space, &w->lock);
    return queue_and_wait(w, &j, e);
}

void writer_get_stats(struct writer *w, struct writer_stats *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->stats;
    pthread_mutex_unlock(&w->lock);
}

void writer_set_maintenance(struct writer *w, bool on)
{
    pthread_mutex_lock(&w->lock);
    w->timers_on = on;
    pthread_mutex_unlock(&w->lock);
}

int writer_run(struct writer *w, writer_task_fn fn, void *arg, struct err *e)
{
    assert(!pthread_equal(pthread_self(), w->thread)); /* it would wait for itself */
    struct job t = {.task = fn, .task_arg = arg};
    pthread_mutex_lock(&w->lock);
    return queue_and_wait(w, &t, e);
}

struct step_task {
    struct writer *w;
    int64_t before_ms;
    void *stats;
};

static int compact_task(struct store *s, void *arg, bool *answers_changed, struct err *e)
{
    (void)s, (void)answers_changed; /* compaction keeps every sample: answers stay */
    struct step_task *st = arg;
    return compact_step(st->w, st->before_ms, st->stats, e);
}

static int pack_task(struct store *s, void *arg, bool *answers_changed, struct err *e)
{
    (void)s, (void)answers_changed; /* packed partitions read back the same rows */
    struct step_task *st = arg;
    return pack_step(st->w, st->before_ms, st->stats, e);
}

int writer_compact_step(struct writer *w, int64_t before_ms, struct store_compact_stats *stats,
                        struct err *e)
{
    struct step_task st = {w, before_ms, stats};
    return writer_run(w, compact_task, &st, e);
}

int writer_pack_step(struct writer *w, int64_t before_ms, struct store_pack_stats *stats,
                     struct err *e)
{
    struct step_task st = {w, before_ms, stats};
    return writer_run(w, pack_task, &st, e);
}
