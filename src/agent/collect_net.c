/*
 * network: traffic of each interface from /proc/net/dev (bytes, packets, errors and drops, in
 * and out) as per-second rates between two reads.
 */
#include "agent/agent_int.h"

#include <stdio.h>
#include <string.h>

static const char *const metric_names[] = {
    "network_receive_bytes_per_second",   "network_receive_packets_per_second",
    "network_receive_errors_per_second",  "network_receive_drops_per_second",
    "network_transmit_bytes_per_second",  "network_transmit_packets_per_second",
    "network_transmit_errors_per_second", "network_transmit_drops_per_second"};

int collect_network(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    const char *text = collector_read(c, "proc/net/dev", e);
    if (!text)
        return E_IO;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *colon = strchr(p, ':'), *eol = strchr(p, '\n');
        if (!colon || (eol && colon > eol)) /* the two header lines have no colon */
            continue;
        char name[SAMPLE_LABEL_MAX];
        while (*p == ' ')
            p++;
        size_t len = (size_t)(colon - p) < sizeof name - 1 ? (size_t)(colon - p) : sizeof name - 1;
        memcpy(name, p, len);
        name[len] = '\0';
        /* receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes
         * packets errs drop ... */
        unsigned long long f[12];
        if (len == 0 || sscanf(colon + 1, "%llu %llu %llu %llu %*u %*u %*u %*u %llu %llu %llu %llu",
                               &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7]) != 8)
            continue;
        uint64_t v[8], d[8];
        for (size_t i = 0; i < 8; i++)
            v[i] = f[i];
        double s;
        if (!counters_update(&c->nets, name, v, 8, d, &s, mono_ms))
            continue;
        for (size_t i = 0; i < 8; i++)
            samples_add(out, "network", metric_names[i], "interface", name, (double)d[i] / s);
    }
    counters_sweep(&c->nets, mono_ms);
    return 0;
}
