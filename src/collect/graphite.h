/*
 * collect/graphite: the Graphite plaintext receiver of `opsdb serve`. Lines "path value
 * timestamp" (over TCP and UDP as graphite.tcp and graphite.udp say) become system_metrics
 * samples, mapped by graphite.templates and the built-in templates for collectd and Netdata,
 * batched through the writer; each batch notes a heartbeat per sending host. docs/collection.md,
 * "Graphite", is the user's side of this.
 */
#ifndef OPSDB_COLLECT_GRAPHITE_H
#define OPSDB_COLLECT_GRAPHITE_H

#include "collect/heartbeat.h"

struct graphite_receiver;

/* Starts receiving when cfg sets graphite.udp or graphite.tcp; otherwise *out is NULL and
 * nothing runs. cfg, w and h (may be NULL) are borrowed and must outlive the receiver.
 * E_INVALID for a bad address or template (the message names it), E_IO when a port cannot be
 * bound. */
int graphite_receiver_start(struct graphite_receiver **out, const struct config *cfg,
                            struct writer *w, struct heartbeats *h, struct err *e);
/* Stops receiving, writes the samples still pending, frees; *r becomes NULL. NULL is a no-op. */
void graphite_receiver_stop(struct graphite_receiver **r);
/* The receiver's counters as Prometheus text (opsdb_graphite_...). NULL writes nothing. Any
 * thread. */
void graphite_receiver_metrics(struct graphite_receiver *r, struct buf *out);

#endif
