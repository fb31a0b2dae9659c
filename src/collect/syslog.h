/*
 * collect/syslog: the syslog receiver of `opsdb serve`. Messages (RFC 5424 and RFC 3164, over
 * UDP and TCP as syslog.udp and syslog.tcp say) of syslog.min_severity or worse become
 * error_logs rows, batched through the writer; every message notes its sender's heartbeat.
 * docs/collection.md, "Syslog", is the user's side of this.
 */
#ifndef OPSDB_COLLECT_SYSLOG_H
#define OPSDB_COLLECT_SYSLOG_H

#include "collect/heartbeat.h"

struct syslog_receiver;

/* Starts receiving when cfg sets syslog.udp or syslog.tcp; otherwise *out is NULL and nothing
 * runs. cfg, w, fp and h (may be NULL) are borrowed and must outlive the receiver. E_INVALID
 * for a bad address, E_IO when a port cannot be bound (the message says which and why). */
int syslog_receiver_start(struct syslog_receiver **out, const struct config *cfg, struct writer *w,
                          const struct fingerprint_rules *fp, struct heartbeats *h, struct err *e);
/* Stops receiving, writes the rows still pending, frees; *r becomes NULL. NULL is a no-op. */
void syslog_receiver_stop(struct syslog_receiver **r);
/* The receiver's counters as Prometheus text (opsdb_syslog_...). NULL writes nothing. Any
 * thread. */
void syslog_receiver_metrics(struct syslog_receiver *r, struct buf *out);

#endif
