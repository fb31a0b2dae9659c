/*
 * The agent's loop: collect this host on a fixed schedule and hand each collection to the
 * shipper as one batch; between collections, replay the spool when a try is due. The schedule
 * is kept on the monotonic clock (a slow send does not shift later collections; a tick missed
 * entirely is skipped rather than run late twice), and the first collection comes one second
 * after start so that its rates cover a second rather than nothing. The tailed files run
 * beside it, a thread each (tailer.c): started before the first collection, stopped after the
 * last, each logging its counts.
 */
#include "agent/agent_int.h"
#include "agent/tail.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define FIRST_COLLECTION_MS 1000
#define BODY_MAX (64u << 20)

struct loop {
    const struct agent_opts *o;
    struct host_collector *hc;
    struct shipper *sh;
    struct buf body;
    struct agent_stats *st;
    char last_problem[sizeof(((struct err *)0)->msg)]; /* logged once, until it changes */
};

/* One collection, sent; returns what ship_send returned. */
static int collect_and_send(struct loop *l, struct err *e)
{
    struct samples smp;
    samples_init(&smp, time_now_ms(), host_collector_host(l->hc));
    struct err ce;
    if (host_collect(l->hc, agent_mono_ms(), &smp, &ce) != 0) {
        if (strcmp(ce.msg, l->last_problem) != 0)
            log_warn("agent: %s (the other collectors go on)", ce.msg);
        snprintf(l->last_problem, sizeof l->last_problem, "%s", ce.msg);
    } else {
        l->last_problem[0] = '\0';
    }
    l->body.len = 0;
    int rc = samples_to_ndjson(&smp, &l->body);
    if (rc != 0)
        log_error("agent: a collection of %zu rows is larger than %u bytes; sending what fits",
                  smp.n, BODY_MAX);
    l->st->collections++;
    l->st->rows_collected += smp.n;
    samples_release(&smp);
    return l->body.len ? ship_send(l->sh, "system_metrics", l->body.data, l->body.len, e) : 0;
}

/* Waits up to ms for a stop signal; true when one came. */
static bool wait_stop(const sigset_t *stop, int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    int sig = sigtimedwait(stop, NULL, &ts);
    return sig > 0;
}

static int run(struct loop *l, const sigset_t *stop, struct err *e)
{
    const struct agent_opts *o = l->o;
    int64_t next = agent_mono_ms() + FIRST_COLLECTION_MS;
    for (;;) {
        int64_t now = agent_mono_ms();
        if (now >= next) {
            int rc = collect_and_send(l, e);
            if (o->once) {
                struct ship_stats ss;
                ship_get_stats(l->sh, &ss);
                if (rc == 0 && ss.spool_batches)
                    rc = err_set(e, E_STORE,
                                 "the server did not take the rows: %" PRIu64 " batches wait in "
                                 "the spool %s and go with the next run",
                                 ss.spool_batches, o->ship.spool_dir);
                return rc;
            }
            next += o->interval_ms;
            if (next <= agent_mono_ms())
                next = agent_mono_ms() + o->interval_ms;
            continue;
        }
        int64_t wait = next - now, retry = ship_retry_in_ms(l->sh);
        if (retry == 0) {
            ship_flush(l->sh, NULL);
            retry = ship_retry_in_ms(l->sh);
        }
        if (retry > 0 && retry < wait)
            wait = retry;
        if (wait_stop(stop, wait))
            return 0;
    }
}

/* Starts a tailer per file; on a failure stops those started. */
static int start_tails(const struct agent_opts *o, struct tailer **tailers, struct err *e)
{
    for (size_t i = 0; i < o->ntails; i++) {
        struct tailer_opts to = {.spec = o->tails[i],
                                 .ship = o->ship,
                                 .interval_ms = o->interval_ms,
                                 .poll_ms = o->tail_poll_ms,
                                 .cfg = o->cfg};
        int rc = tailer_start(&tailers[i], &to, e);
        if (rc != 0) {
            while (i > 0)
                tailer_free(&tailers[--i]);
            return rc;
        }
    }
    return 0;
}

static void add_ship_stats(struct ship_stats *sum, const struct ship_stats *s)
{
    sum->batches_sent += s->batches_sent, sum->rows_sent += s->rows_sent;
    sum->batches_replayed += s->batches_replayed, sum->rows_replayed += s->rows_replayed;
    sum->batches_spooled += s->batches_spooled;
    sum->batches_refused += s->batches_refused, sum->rows_refused += s->rows_refused;
    sum->batches_dropped += s->batches_dropped, sum->rows_dropped += s->rows_dropped;
    sum->spool_batches += s->spool_batches, sum->spool_bytes += s->spool_bytes;
}

/* Stops every tailer (each finishes its poll: sent and committed), logs its counts, adds them
 * to st and frees it. */
static void stop_tails(struct tailer **tailers, size_t n, struct agent_stats *st)
{
    for (size_t i = 0; i < n; i++)
        tailer_ask_stop(tailers[i]); /* all at once: each may be waiting for the server */
    for (size_t i = 0; i < n; i++) {
        tailer_stop(tailers[i]);
        struct tail_stats ts;
        struct ship_stats ss;
        tailer_get_stats(tailers[i], &ts, &ss);
        log_info("agent: tail %s: stopped: lines=%" PRIu64 " lines_bad=%" PRIu64
                 " lines_truncated=%" PRIu64 " rows=%" PRIu64 " rows_sent=%" PRIu64
                 " batches_spooled=%" PRIu64 " rows_refused=%" PRIu64 " rows_dropped=%" PRIu64
                 " spool_batches=%" PRIu64 " rotations=%" PRIu64 " truncations=%" PRIu64
                 " offset=%" PRId64,
                 tailer_name(tailers[i]), ts.lines, ts.lines_bad, ts.lines_truncated, ts.rows,
                 ss.rows_sent, ss.batches_spooled, ss.rows_refused, ss.rows_dropped,
                 ss.spool_batches, ts.rotations, ts.truncations, ts.offset);
        st->tail_lines += ts.lines;
        st->tail_lines_bad += ts.lines_bad;
        st->tail_rows += ts.rows;
        add_ship_stats(&st->tail_ship, &ss);
        tailer_free(&tailers[i]);
    }
}

/* Opens the host collector and its shipper. */
static int open_host(struct loop *l, struct err *e)
{
    const struct agent_opts *o = l->o;
    int rc = host_collector_new(&l->hc, "", e);
    if (rc != 0)
        return rc;
    struct ship_opts so = o->ship;
    so.source_name = host_collector_host(l->hc);
    so.source_kind = "agent";
    so.interval_ms = o->interval_ms;
    if ((rc = shipper_new(&l->sh, &so, e)) != 0) {
        host_collector_free(&l->hc);
        return rc;
    }
    buf_init(&l->body, BODY_MAX);
    log_info("agent: collecting %s every %.3g s, sending to %s (spool %s)",
             host_collector_host(l->hc), (double)o->interval_ms / 1000.0, o->ship.server,
             o->ship.spool_dir);
    return 0;
}

int agent_run(const struct agent_opts *o, const sigset_t *stop_signals, struct agent_stats *st,
              struct err *e)
{
    memset(st, 0, sizeof *st);
    struct loop l = {.o = o, .st = st};
    struct tailer *tailers[AGENT_TAILS_MAX] = {0};
    size_t ntails = o->ntails < AGENT_TAILS_MAX ? o->ntails : AGENT_TAILS_MAX;
    int rc = o->host ? open_host(&l, e) : 0;
    if (rc == 0 && !o->host)
        log_info("agent: shipping %zu log files to %s, not collecting this host (agent.host off)",
                 o->ntails, o->ship.server);
    if (rc == 0 && (rc = start_tails(o, tailers, e)) != 0)
        ntails = 0;
    if (rc == 0 && o->host)
        rc = run(&l, stop_signals, e);
    else if (rc == 0)
        while (!wait_stop(stop_signals, 3600000))
            ; /* the tails' threads do the work */
    stop_tails(tailers, ntails, st);
    if (l.sh)
        ship_get_stats(l.sh, &st->ship);
    buf_release(&l.body);
    shipper_free(&l.sh);
    host_collector_free(&l.hc);
    return rc;
}
