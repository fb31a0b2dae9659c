/*
 * collect/graphite: a line listener, the Graphite parser (ingest_graphite.c) and a sink into
 * system_metrics (see graphite.h). Everything but the sink's commits runs on the listener's
 * thread, so the parse context and the rejections are reused without locks.
 */
#include "collect/graphite.h"

#include "collect/receiver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRAPHITE_BATCH_ROWS 10000       /* samples in one batch at most */
#define GRAPHITE_IDLE_TIMEOUT_MS 600000 /* a silent TCP sender is closed after this */

enum outcome { OUT_STORED, OUT_NAN, OUT_INVALID, OUT_COUNT };
static const char *const outcome_names[OUT_COUNT] = {"stored", "nan", "invalid"};

struct graphite_receiver {
    struct receiver base;
    struct graphite_templates *templates;
    struct ingest_ctx ctx;
    int host_col;
    struct rejects rejects;
};

/* One line (the listener cuts streams and datagrams into lines). */
static void on_message(void *arg, const char *peer, const char *data, size_t len, bool truncated)
{
    struct graphite_receiver *r = arg;
    char sender[SOURCE_NAME_MAX + 1];
    listener_peer_address(peer, sender, sizeof sender);
    r->ctx.validate.now_ms = time_now_ms();
    rejects_init(&r->rejects, "line");
    size_t nan = 0, rows = 0;
    struct batch *b = sink_acquire(r->base.sink);
    if (truncated) {
        rejects_add(&r->rejects, 0, "", "line longer than graphite.max_line_size dropped");
    } else {
        size_t before = b->nrows;
        ingest_parse_graphite(&r->ctx, r->templates, data, len, b, &r->rejects, &nan);
        rows = b->nrows - before;
        const struct value *host = rows ? &batch_row(b, before)[r->host_col] : NULL;
        if (host && host->type == VAL_TEXT && host->len)
            snprintf(sender, sizeof sender, "%.*s", (int)host->len, host->s);
    }
    sink_release(r->base.sink, sender, rows);
    if (r->rejects.n)
        listener_log(&r->base.log, "graphite", peer, "line dropped: %s: '%.*s'",
                     r->rejects.items[0].reason, (int)(len < 80 ? len : 80), data);
    receiver_count(&r->base, OUT_STORED, rows);
    receiver_count(&r->base, OUT_NAN, nan);
    receiver_count(&r->base, OUT_INVALID, r->rejects.count);
}

int graphite_receiver_start(struct graphite_receiver **out, const struct config *cfg,
                            struct writer *w, struct heartbeats *h, struct err *e)
{
    *out = NULL;
    if (!cfg->graphite_udp[0] && !cfg->graphite_tcp[0])
        return 0;
    struct graphite_receiver *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, E_NOMEM, "out of memory");
    r->base = (struct receiver){
        .name = "graphite",
        .unit = "lines",
        .unit_help = "Graphite lines received, by what became of them: stored, nan (a NaN or "
                     "infinite value, skipped as Graphite does), invalid.",
        .outcome_names = outcome_names,
        .noutcomes = OUT_COUNT,
    };
    ingest_ctx_init(&r->ctx, cfg, NULL, PREC_S);
    const struct table *t = schema_table("system_metrics");
    r->host_col = schema_column(t, "host");
    struct sink_config sc = {
        "graphite", t, w, h, SOURCE_GRAPHITE, GRAPHITE_BATCH_ROWS, cfg->graphite_flush_ms};
    struct listener_config lc = {"graphite",
                                 cfg->graphite_udp,
                                 cfg->graphite_tcp,
                                 LISTENER_LINES,
                                 (size_t)cfg->graphite_max_line_bytes,
                                 (size_t)cfg->graphite_max_connections,
                                 GRAPHITE_IDLE_TIMEOUT_MS,
                                 on_message,
                                 r};
    int rc = ingest_graphite_templates_new(&r->templates, cfg->graphite_templates, e);
    if (!rc)
        rc = receiver_start(&r->base, &sc, &lc, e);
    if (rc) {
        ingest_graphite_templates_free(&r->templates);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void graphite_receiver_stop(struct graphite_receiver **rp)
{
    struct graphite_receiver *r = *rp;
    if (!r)
        return;
    receiver_stop(&r->base);
    ingest_graphite_templates_free(&r->templates);
    free(r);
    *rp = NULL;
}

void graphite_receiver_metrics(struct graphite_receiver *r, struct buf *out)
{
    if (r)
        receiver_metrics(&r->base, out);
}
