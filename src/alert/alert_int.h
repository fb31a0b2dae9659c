/*
 * Private to alert/: what the engine (engine.c) hands the notifier (notify.c).
 *
 * The notifier reads `alerting.receivers` and `alerting.route` from the config file, routes each
 * alert state change through the routing tree by its labels, groups alerts by the route's
 * group_by labels, and delivers each group to its receiver on its own thread, with retries and
 * backoff, writing every attempt to the notification_log table. It never blocks the caller:
 * a slow or dead receiver delays nothing but its own deliveries.
 */
#ifndef OPSDB_ALERT_INT_H
#define OPSDB_ALERT_INT_H

#include "alert/alert.h"

#include <jansson.h>

/* One alert as it changed state. */
struct notify_alert {
    const char *alert_id;    /* rule + labels, stable across restarts */
    const char *status;      /* "firing", "resolved", or "muted": a notified alert now silenced,
                              * inhibited or in maintenance, withdrawn from its groups (no
                              * repeats) without a notification */
    json_t *labels;          /* object of text values; includes alertname and severity */
    json_t *annotations;     /* object of text values, templates already expanded */
    double value;            /* the value that made the transition */
    int64_t starts_ms;       /* when it started firing */
    int64_t ends_ms;         /* when it resolved; 0 while firing */
    const char *incident_id; /* the incident it belongs to, or NULL */
    const char *receiver;    /* an escalation's receiver: delivered there, not routed; or NULL */
};

struct notifier;
struct writer;

/* Reads the receivers and the routing tree from the `alerting:` section of the YAML file at
 * config_path ("" or a file without receivers: every alert is dropped, and counted). Errors name
 * the file and line: E_INVALID for a bad receiver or route, E_IO for an unreadable file.
 * Attempts are written to notification_log through w (which must outlive the notifier).
 * ca_file (alerting.ca_file; NULL or "": none) is the CA file of the webhook, Alertmanager and
 * email receivers that give no ca_file of their own; an unreadable one is E_IO or E_INVALID. */
int notifier_new(struct notifier **out, const char *config_path, const char *ca_file,
                 struct writer *w, struct err *e);
/* Takes one state change (copied: the caller keeps a). Any thread; never blocks on delivery. */
void notifier_post(struct notifier *n, const struct notify_alert *a);
/* What a previous run last sent to one group of one receiver (notification_log). */
struct notify_sent {
    const char *receiver, *group_key;
    int64_t ts_ms; /* epoch ms */
};
/* Takes up, after a restart, the firing alerts a previous run notified (status "firing"),
 * before anything is posted: each is filed in the groups its routes give as carried by the
 * group's last notification, sent at the time sent[] gives for that receiver and group key, or
 * else at notified_ms[i] (epoch ms). Nothing is sent for them now: the group repeats
 * repeat_interval after that time, and a resolution goes to that group. Copies what it needs.
 * Any thread; never blocks on delivery. */
void notifier_restore(struct notifier *n, const struct notify_alert *alerts,
                      const int64_t *notified_ms, size_t nalerts, const struct notify_sent *sent,
                      size_t nsent);
/* Delivers what group_wait still holds, waits up to timeout_ms for the queued deliveries, then
 * stops the threads and frees. */
void notifier_free(struct notifier **n, int64_t timeout_ms);
/* True when alerting.receivers defines a receiver called name (arg: the notifier). */
bool notifier_has_receiver(const void *notifier, const char *name);
/* A notifier for a replay (alert_backtest): the receivers and routes of config_path as
 * notifier_new() reads them, but no threads, no deliveries and nothing written. notifier_post()
 * routes and files a change at once, at the time of the last notifier_advance(); fn gets one
 * alert_trace per alert of each notification the routes and groups send, and per alert dropped
 * (no receiver, an escalation to an undefined receiver), as the live notifier would. */
int notifier_new_replay(struct notifier **out, const char *config_path, alert_trace_fn fn,
                        void *arg, struct err *e);
/* A replay notifier's clock (epoch ms): traces what falls due up to now_ms, each notification
 * at the time it is due. */
void notifier_advance(struct notifier *n, int64_t now_ms);
/* Prometheus text lines: opsdb_notifications_total{receiver,status}, queue length, latency. */
void notifier_metrics(struct notifier *n, struct buf *out);

#endif
