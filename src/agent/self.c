/*
 * The server's own host: `opsdb serve` collects the machine it runs on with the agent's
 * collectors, plus its own health (component "opsdb"), and writes the rows through its writer
 * as any ingested batch, so a single server watches its host without an agent beside it. The
 * health figures are rates and means over the interval, from the writer's counters and the
 * process's own /proc/self files.
 */
#include "agent/agent_int.h"
#include "collect/heartbeat.h"
#include "ingest/ingest.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FIRST_COLLECTION_MS 1000

struct self_collection {
    struct writer *w;
    struct heartbeats *h;
    int64_t interval_ms;
    struct host_collector *hc;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    /* the previous collection's counters, for rates */
    struct writer_stats prev;
    uint64_t prev_cpu_ticks;
    int64_t prev_mono_ms;
    char last_problem[sizeof(((struct err *)0)->msg)];
};

static uint64_t rows_total(const struct writer_stats *ws)
{
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof ws->rows_committed / sizeof ws->rows_committed[0]; i++)
        n += ws->rows_committed[i];
    return n;
}

/* utime + stime of this process in clock ticks (fields 14 and 15 of /proc/self/stat, counted
 * after the command name, which may hold spaces); false when unreadable. */
static bool cpu_ticks(struct host_collector *c, uint64_t *ticks)
{
    const char *text = collector_read(c, "proc/self/stat", NULL);
    const char *p = text ? strrchr(text, ')') : NULL;
    unsigned long long utime, stime;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                     &stime) != 2)
        return false;
    *ticks = utime + stime;
    return true;
}

static void add_health(struct self_collection *sc, int64_t mono_ms, struct samples *out)
{
    struct writer_stats ws;
    writer_get_stats(sc->w, &ws);
    uint64_t ticks = 0;
    bool have_ticks = cpu_ticks(sc->hc, &ticks);
    double s = (double)(mono_ms - sc->prev_mono_ms) / 1000.0;
    if (sc->prev_mono_ms > 0 && s > 0) {
        uint64_t groups = ws.groups_committed - sc->prev.groups_committed;
        samples_add(out, "opsdb", "opsdb_ingest_rows_per_second", NULL, NULL,
                    (double)(rows_total(&ws) - rows_total(&sc->prev)) / s);
        samples_add(out, "opsdb", "opsdb_commits_per_second", NULL, NULL, (double)groups / s);
        if (groups) /* no commit: no latency to tell */
            samples_add(out, "opsdb", "opsdb_commit_latency_ms", NULL, NULL,
                        1000.0 * (ws.commit_seconds_sum - sc->prev.commit_seconds_sum) /
                            (double)groups);
        if (have_ticks && ticks >= sc->prev_cpu_ticks)
            samples_add(out, "opsdb", "opsdb_cpu_percent", NULL, NULL,
                        100.0 * (double)(ticks - sc->prev_cpu_ticks) /
                            ((double)sysconf(_SC_CLK_TCK) * s));
    }
    samples_add(out, "opsdb", "opsdb_writer_queue_rows", NULL, NULL, (double)ws.queue_rows);
    const char *statm = collector_read(sc->hc, "proc/self/statm", NULL);
    unsigned long long pages;
    if (statm && sscanf(statm, "%*u %llu", &pages) == 1)
        samples_add(out, "opsdb", "opsdb_rss_bytes", NULL, NULL,
                    (double)pages * (double)sysconf(_SC_PAGESIZE));
    sc->prev = ws;
    sc->prev_cpu_ticks = ticks;
    sc->prev_mono_ms = mono_ms;
}

static void collect_once(struct self_collection *sc)
{
    int64_t mono_ms = agent_mono_ms();
    const char *host = host_collector_host(sc->hc);
    struct samples smp;
    samples_init(&smp, time_now_ms(), host);
    struct err e;
    if (host_collect(sc->hc, mono_ms, &smp, &e) != 0) {
        if (strcmp(e.msg, sc->last_problem) != 0)
            log_warn("self collection: %s (the other collectors go on)", e.msg);
        snprintf(sc->last_problem, sizeof sc->last_problem, "%s", e.msg);
    } else {
        sc->last_problem[0] = '\0';
    }
    add_health(sc, mono_ms, &smp);
    struct batch b;
    batch_init(&b, schema_table("system_metrics"));
    samples_to_batch(&smp, &b);
    if (writer_submit(sc->w, &b, &e) != 0)
        log_error("self collection: writing %zu rows of this host failed: %s", b.nrows, e.msg);
    else
        heartbeat_note(sc->h, SOURCE_SELF, host, sc->interval_ms, b.nrows);
    batch_release(&b);
    samples_release(&smp);
}

static void *self_thread(void *arg)
{
    struct self_collection *sc = arg;
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    int64_t wait_ms = FIRST_COLLECTION_MS;
    pthread_mutex_lock(&sc->lock);
    while (!sc->stop) {
        at.tv_sec += wait_ms / 1000;
        at.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (at.tv_nsec >= 1000000000L)
            at.tv_sec++, at.tv_nsec -= 1000000000L;
        while (!sc->stop && pthread_cond_timedwait(&sc->wake, &sc->lock, &at) != ETIMEDOUT)
            ;
        if (sc->stop)
            break;
        pthread_mutex_unlock(&sc->lock);
        collect_once(sc);
        pthread_mutex_lock(&sc->lock);
        wait_ms = sc->interval_ms;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > at.tv_sec + wait_ms / 1000 + 1)
            at = now; /* fell behind by more than an interval: skip, do not catch up */
    }
    pthread_mutex_unlock(&sc->lock);
    return NULL;
}

int self_collection_start(struct self_collection **out, struct writer *w, struct heartbeats *h,
                          const struct config *cfg, struct err *e)
{
    *out = NULL;
    struct self_collection *sc = calloc(1, sizeof *sc);
    if (!sc)
        return err_set(e, E_NOMEM, "out of memory");
    sc->w = w;
    sc->h = h;
    sc->interval_ms = cfg->collection_interval_ms;
    int rc = host_collector_new(&sc->hc, "", e);
    if (rc != 0) {
        free(sc);
        return rc;
    }
    pthread_mutex_init(&sc->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&sc->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&sc->thread, NULL, self_thread, sc) != 0) {
        self_collection_stop(&sc);
        return err_set(e, E_NOMEM, "cannot start the self collection thread");
    }
    log_info("collecting this host (%s) every %.3g s (collection.self; --no-collect turns it off)",
             host_collector_host(sc->hc), (double)sc->interval_ms / 1000.0);
    *out = sc;
    return 0;
}

void self_collection_stop(struct self_collection **scp)
{
    struct self_collection *sc = *scp;
    if (!sc)
        return;
    if (sc->thread) {
        pthread_mutex_lock(&sc->lock);
        sc->stop = true;
        pthread_cond_signal(&sc->wake);
        pthread_mutex_unlock(&sc->lock);
        pthread_join(sc->thread, NULL);
    }
    pthread_cond_destroy(&sc->wake);
    pthread_mutex_destroy(&sc->lock);
    host_collector_free(&sc->hc);
    free(sc);
    *scp = NULL;
}
