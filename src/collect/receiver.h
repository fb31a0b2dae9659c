/*
 * collect/receiver: what the syslog and Graphite receivers share — a listener that hands them
 * messages, a sink that writes their rows, counters of what became of the messages, and their
 * /metrics. A protocol's receiver embeds one and supplies on_message.
 */
#ifndef OPSDB_COLLECT_RECEIVER_H
#define OPSDB_COLLECT_RECEIVER_H

#include "collect/listener.h"
#include "collect/sink.h"

#include <pthread.h>

#define RECEIVER_MAX_OUTCOMES 8

struct receiver {
    const char *name; /* "syslog": metrics are opsdb_syslog_... */
    struct listener *listener;
    struct sink *sink;
    struct listener_ratelog log; /* warnings about senders; the listener's thread only */
    /* what became of each message (or line), by outcome: the counter opsdb_NAME_UNIT_total */
    const char *unit, *unit_help;
    const char *const *outcome_names;
    size_t noutcomes;
    pthread_mutex_t lock; /* guards outcomes */
    uint64_t outcomes[RECEIVER_MAX_OUTCOMES];
};

/* Starts r's sink, then its listener (whose on_message gets lc->arg). r's name, unit,
 * unit_help and outcome names are set by the caller first. On failure everything started is
 * stopped again and e says why. */
int receiver_start(struct receiver *r, const struct sink_config *sc,
                   const struct listener_config *lc, struct err *e);
/* Stops the listener (no more messages), then the sink (pending rows are written). Safe on a
 * receiver that failed to start. */
void receiver_stop(struct receiver *r);
/* Adds n to the counter of outcome. Any thread. */
void receiver_count(struct receiver *r, size_t outcome, uint64_t n);
/* The receiver's counters, its listener's and its sink's as Prometheus text. Any thread. */
void receiver_metrics(struct receiver *r, struct buf *out);

#endif
