/*
 * collect/syslog: a listener with syslog framing, the syslog parser (ingest_syslog.c) and a
 * sink into error_logs (see syslog.h). Everything but the sink's commits runs on the
 * listener's thread, so the parse context and the rejections are reused without locks.
 */
#include "collect/syslog.h"

#include "collect/receiver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYSLOG_BATCH_ROWS 5000        /* rows in one batch at most */
#define SYSLOG_IDLE_TIMEOUT_MS 600000 /* a silent TCP sender is closed after this */

enum outcome { OUT_STORED, OUT_FILTERED, OUT_MALFORMED, OUT_REJECTED, OUT_COUNT };
static const char *const outcome_names[OUT_COUNT] = {"stored", "filtered", "malformed", "rejected"};

struct syslog_receiver {
    struct receiver base;
    struct ingest_ctx ctx;
    int min_severity;
    struct rejects rejects;
};

static void on_message(void *arg, const char *peer, const char *data, size_t len, bool truncated)
{
    (void)truncated; /* a cut message is still stored (and counted by the listener) */
    struct syslog_receiver *r = arg;
    char addr[LISTENER_PEER_MAX], sender[SOURCE_NAME_MAX + 1];
    listener_peer_address(peer, addr, sizeof addr);
    struct syslog_message m;
    struct err e;
    r->ctx.validate.now_ms = time_now_ms();
    enum outcome out = OUT_FILTERED;
    if (ingest_syslog_parse(data, len, r->ctx.validate.now_ms, &m, &e) != 0) {
        out = OUT_MALFORMED;
        listener_log(&r->base.log, "syslog", peer, "malformed message dropped: %s: '%.*s'", e.msg,
                     (int)(len < 80 ? len : 80), data);
    }
    if (out != OUT_MALFORMED && m.hostname_len)
        snprintf(sender, sizeof sender, "%.*s", (int)m.hostname_len, m.hostname);
    else
        snprintf(sender, sizeof sender, "%s", addr);
    struct batch *b = sink_acquire(r->base.sink);
    if (out != OUT_MALFORMED && m.severity <= r->min_severity) {
        rejects_init(&r->rejects, "message");
        out = ingest_syslog_row(&r->ctx, &m, addr, b, 0, &r->rejects) ? OUT_STORED : OUT_REJECTED;
    }
    sink_release(r->base.sink, sender, out == OUT_STORED);
    if (out == OUT_REJECTED && r->rejects.n)
        listener_log(&r->base.log, "syslog", peer, "message not stored: %s",
                     r->rejects.items[0].reason);
    receiver_count(&r->base, out, 1);
}

int syslog_receiver_start(struct syslog_receiver **out, const struct config *cfg, struct writer *w,
                          const struct fingerprint_rules *fp, struct heartbeats *h, struct err *e)
{
    *out = NULL;
    if (!cfg->syslog_udp[0] && !cfg->syslog_tcp[0])
        return 0;
    struct syslog_receiver *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, E_NOMEM, "out of memory");
    r->base = (struct receiver){
        .name = "syslog",
        .unit = "messages",
        .unit_help = "Syslog messages received, by what became of them: stored, filtered (below "
                     "syslog.min_severity), malformed, rejected (refused by validation).",
        .outcome_names = outcome_names,
        .noutcomes = OUT_COUNT,
    };
    ingest_ctx_init(&r->ctx, cfg, fp, PREC_MS);
    r->min_severity = ingest_syslog_severity_parse(cfg->syslog_min_severity);
    struct sink_config sc = {"syslog",          schema_table("error_logs"), w, h, SOURCE_SYSLOG,
                             SYSLOG_BATCH_ROWS, cfg->syslog_flush_ms};
    struct listener_config lc = {"syslog",
                                 cfg->syslog_udp,
                                 cfg->syslog_tcp,
                                 LISTENER_SYSLOG,
                                 (size_t)cfg->syslog_max_message_bytes,
                                 (size_t)cfg->syslog_max_connections,
                                 SYSLOG_IDLE_TIMEOUT_MS,
                                 on_message,
                                 r};
    int rc = receiver_start(&r->base, &sc, &lc, e);
    if (rc) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void syslog_receiver_stop(struct syslog_receiver **rp)
{
    struct syslog_receiver *r = *rp;
    if (!r)
        return;
    receiver_stop(&r->base);
    free(r);
    *rp = NULL;
}

void syslog_receiver_metrics(struct syslog_receiver *r, struct buf *out)
{
    if (r)
        receiver_metrics(&r->base, out);
}
