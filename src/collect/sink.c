/*
 * collect/sink: batches of received rows written on the sink's own thread (see sink.h). Two
 * batches take turns: receivers fill one while the other is being committed, which bounds the
 * memory to two batches whatever senders do.
 */
#include "collect/sink.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SINK_MAX_SENDERS 256 /* senders counted per batch; more are noted one message at a time */

struct sender {
    char name[SOURCE_NAME_MAX + 1];
    uint64_t rows;
};

struct sink {
    struct sink_config cfg;
    char name[32];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* the flusher: rows arrived, the batch is full, or stop */
    pthread_cond_t has_room; /* receivers: the pending batch was taken */
    struct batch pending, spare;
    struct sender senders[SINK_MAX_SENDERS], flushing[SINK_MAX_SENDERS];
    size_t nsenders;
    int64_t first_ms; /* when the pending batch got its first row or sender; 0: empty */
    bool stopping;
    struct sink_stats stats;
    int64_t last_error_log_ms;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wait_until(struct sink *s, int64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    pthread_cond_timedwait(&s->wake, &s->lock, &ts);
}

static bool full(const struct sink *s)
{
    return s->pending.nrows >= s->cfg.max_rows || s->nsenders >= SINK_MAX_SENDERS;
}

/* Commits b (unlocked), then notes its senders' heartbeats. */
static void write_batch(struct sink *s, struct batch *b, const struct sender *senders, size_t n)
{
    struct err e;
    bool ok = b->nrows == 0 || writer_submit(s->cfg.writer, b, &e) == 0;
    pthread_mutex_lock(&s->lock);
    if (b->nrows) {
        *(ok ? &s->stats.rows_written : &s->stats.rows_failed) += b->nrows;
        *(ok ? &s->stats.batches_written : &s->stats.batches_failed) += 1;
    }
    int64_t now = mono_ms();
    bool log = !ok && now - s->last_error_log_ms >= 10000;
    if (log)
        s->last_error_log_ms = now;
    pthread_mutex_unlock(&s->lock);
    if (log)
        log_error("%s: %zu received rows were not written: %s (opsdb_%s_rows_failed_total "
                  "counts them)",
                  s->name, b->nrows, e.msg, s->name);
    for (size_t i = 0; i < n; i++)
        heartbeat_note(s->cfg.heartbeats, s->cfg.kind, senders[i].name, 0,
                       ok ? senders[i].rows : 0);
}

static void *run(void *arg)
{
    struct sink *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stopping && s->first_ms == 0)
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->first_ms == 0)
            break; /* stopping with nothing pending */
        while (!s->stopping && !full(s) && mono_ms() < s->first_ms + s->cfg.flush_ms)
            wait_until(s, s->first_ms + s->cfg.flush_ms);
        struct batch b = s->pending;
        s->pending = s->spare;
        size_t n = s->nsenders;
        memcpy(s->flushing, s->senders, n * sizeof *s->senders);
        s->nsenders = 0;
        s->first_ms = 0;
        pthread_cond_broadcast(&s->has_room);
        pthread_mutex_unlock(&s->lock);
        write_batch(s, &b, s->flushing, n);
        batch_release(&b);
        batch_init(&b, s->cfg.table);
        pthread_mutex_lock(&s->lock);
        s->spare = b;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int sink_new(struct sink **out, const struct sink_config *cfg, struct err *e)
{
    struct sink *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, E_NOMEM, "out of memory");
    s->cfg = *cfg;
    snprintf(s->name, sizeof s->name, "%s", cfg->name);
    s->cfg.name = s->name;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&s->has_room, NULL);
    batch_init(&s->pending, cfg->table);
    batch_init(&s->spare, cfg->table);
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        s->stopping = true;
        sink_free(&s);
        return err_set(e, E_IO, "%s: cannot start a thread", cfg->name);
    }
    *out = s;
    return 0;
}

void sink_free(struct sink **sp)
{
    struct sink *s = *sp;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    bool running = !s->stopping;
    s->stopping = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    if (running)
        pthread_join(s->thread, NULL);
    batch_release(&s->pending);
    batch_release(&s->spare);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->has_room);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *sp = NULL;
}

struct batch *sink_acquire(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    while (full(s) && !s->stopping)
        pthread_cond_wait(&s->has_room, &s->lock);
    return &s->pending;
}

void sink_release(struct sink *s, const char *sender, uint64_t rows)
{
    bool was_empty = s->first_ms == 0;
    if (was_empty)
        s->first_ms = mono_ms();
    size_t i = 0;
    while (i < s->nsenders && strncmp(s->senders[i].name, sender, SOURCE_NAME_MAX) != 0)
        i++;
    if (i < SINK_MAX_SENDERS) {
        if (i == s->nsenders) {
            snprintf(s->senders[i].name, sizeof s->senders[i].name, "%s", sender);
            s->senders[i].rows = 0;
            s->nsenders++;
        }
        s->senders[i].rows += rows;
    }
    if (was_empty || full(s))
        pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    if (i >= SINK_MAX_SENDERS) /* only while stopping: acquire waits until there is room */
        heartbeat_note(s->cfg.heartbeats, s->cfg.kind, sender, 0, rows);
}

void sink_get_stats(struct sink *s, struct sink_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}
