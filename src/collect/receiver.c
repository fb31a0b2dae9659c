/*
 * collect/receiver: a listener, a sink and counters started, stopped and exported together
 * (see receiver.h). The metrics are a table of rows, the same for every protocol.
 */
#include "collect/receiver.h"

#include <string.h>

int receiver_start(struct receiver *r, const struct sink_config *sc,
                   const struct listener_config *lc, struct err *e)
{
    pthread_mutex_init(&r->lock, NULL);
    int rc = sink_new(&r->sink, sc, e);
    if (!rc)
        rc = listener_start(&r->listener, lc, e);
    if (rc)
        receiver_stop(r);
    return rc;
}

void receiver_stop(struct receiver *r)
{
    listener_stop(&r->listener);
    sink_free(&r->sink);
    pthread_mutex_destroy(&r->lock);
}

void receiver_count(struct receiver *r, size_t outcome, uint64_t n)
{
    pthread_mutex_lock(&r->lock);
    r->outcomes[outcome] += n;
    pthread_mutex_unlock(&r->lock);
}

/* One metric: opsdb_<receiver>_<name>{<label>} value. */
struct metric_row {
    const char *name, *type, *help, *label;
    uint64_t value;
};

void receiver_metrics(struct receiver *r, struct buf *out)
{
    struct listener_stats ls;
    struct sink_stats ss;
    uint64_t outcomes[RECEIVER_MAX_OUTCOMES];
    listener_get_stats(r->listener, &ls);
    sink_get_stats(r->sink, &ss);
    pthread_mutex_lock(&r->lock);
    memcpy(outcomes, r->outcomes, sizeof outcomes);
    pthread_mutex_unlock(&r->lock);
    const struct metric_row rows[] = {
        {"bytes_received_total", "counter", "Bytes received (UDP and TCP).", NULL, ls.bytes},
        {"truncated_total", "counter", "Messages longer than the limit, cut.", NULL, ls.truncated},
        {"connections_total", "counter", "TCP connections, by result.", "result=\"accepted\"",
         ls.connections_accepted},
        {"connections_total", NULL, NULL, "result=\"refused\"", ls.connections_refused},
        {"connections_open", "gauge", "TCP connections open now.", NULL, ls.connections_open},
        {"framing_errors_total", "counter",
         "TCP streams closed because an octet count was no length.", NULL, ls.framing_errors},
        {"rows_written_total", "counter", "Received rows committed to the database.", NULL,
         ss.rows_written},
        {"rows_failed_total", "counter",
         "Received rows lost because the database refused their batch.", NULL, ss.rows_failed},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct metric_row *m = &rows[i];
        if (m->type)
            buf_printf(out, "# HELP opsdb_%s_%s %s\n# TYPE opsdb_%s_%s %s\n", r->name, m->name,
                       m->help, r->name, m->name, m->type);
        buf_printf(out, "opsdb_%s_%s%s%s%s %llu\n", r->name, m->name, m->label ? "{" : "",
                   m->label ? m->label : "", m->label ? "}" : "", (unsigned long long)m->value);
    }
    buf_printf(out, "# HELP opsdb_%s_%s_total %s\n# TYPE opsdb_%s_%s_total counter\n", r->name,
               r->unit, r->unit_help, r->name, r->unit);
    for (size_t i = 0; i < r->noutcomes; i++)
        buf_printf(out, "opsdb_%s_%s_total{result=\"%s\"} %llu\n", r->name, r->unit,
                   r->outcome_names[i], (unsigned long long)outcomes[i]);
}
