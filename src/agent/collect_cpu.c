/*
 * cpu: shares of cpu time from /proc/stat between two reads, for the whole machine and per cpu.
 * user counts nice (and guest, which the kernel includes in user), system counts irq and
 * softirq; usage is everything but idle and iowait. The whole machine's usage is cpu_usage in
 * component system (what system_health and the default alert rules read); per cpu the figures
 * are cpu_core_* with a label cpu, so no single busy core stands for the host.
 */
#include "agent/agent_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses "cpuN user nice system idle iowait irq softirq steal ..." (fields after steal are
 * already in user); false when the line has fewer than 4 numbers. */
static bool parse_times(const char *p, struct cpu_times *t)
{
    uint64_t f[8] = {0};
    int n = 0;
    for (; n < 8; n++) {
        char *end;
        f[n] = strtoull(p, &end, 10);
        if (end == p)
            break;
        p = end;
    }
    if (n < 4)
        return false;
    t->user = f[0] + f[1];
    t->system = f[2] + f[5] + f[6];
    t->idle = f[3];
    t->iowait = f[4];
    t->steal = f[7];
    t->total = t->user + t->system + t->idle + t->iowait + t->steal;
    t->seen = true;
    return true;
}

static double share(uint64_t now, uint64_t before, uint64_t total)
{
    return now >= before ? 100.0 * (double)(now - before) / (double)total : 0.0;
}

static const char *const total_names[] = {"cpu_usage",          "cpu_user_percent",
                                          "cpu_system_percent", "cpu_iowait_percent",
                                          "cpu_steal_percent",  "cpu_idle_percent"};
static const char *const core_names[] = {"cpu_core_usage_percent",  "cpu_core_user_percent",
                                         "cpu_core_system_percent", "cpu_core_iowait_percent",
                                         "cpu_core_steal_percent",  "cpu_core_idle_percent"};

/* The shares between two reads of one line; nothing when no time passed or a counter reset. */
static void add_shares(struct samples *out, const struct cpu_times *now,
                       const struct cpu_times *before, const char *cpu)
{
    if (!before->seen || now->total <= before->total)
        return;
    uint64_t total = now->total - before->total;
    double idle = share(now->idle, before->idle, total);
    double iowait = share(now->iowait, before->iowait, total);
    double v[6] = {100.0 - idle - iowait,
                   share(now->user, before->user, total),
                   share(now->system, before->system, total),
                   iowait,
                   share(now->steal, before->steal, total),
                   idle};
    if (v[0] < 0)
        v[0] = 0;
    for (size_t i = 0; i < 6; i++) {
        if (cpu)
            samples_add(out, "cpu", core_names[i], "cpu", cpu, v[i]);
        else
            samples_add(out, i == 0 ? "system" : "cpu", total_names[i], NULL, NULL, v[i]);
    }
}

int collect_cpu(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    (void)mono_ms;
    const char *text = collector_read(c, "proc/stat", e);
    if (!text)
        return E_IO;
    bool total_seen = false;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, "cpu", 3) != 0)
            continue;
        struct cpu_times now = {0};
        if (p[3] == ' ') {
            if (!parse_times(p + 4, &now))
                continue;
            add_shares(out, &now, &c->cpu_total, NULL);
            c->cpu_total = now;
            total_seen = true;
            continue;
        }
        char *end;
        unsigned long n = strtoul(p + 3, &end, 10);
        if (end == p + 3 || *end != ' ' || n >= CPUS_MAX || !parse_times(end, &now))
            continue;
        char name[24];
        snprintf(name, sizeof name, "%lu", n);
        add_shares(out, &now, &c->cpus[n], name);
        c->cpus[n] = now;
    }
    if (!total_seen)
        return err_set(e, E_IO, "no cpu line in %s/proc/stat", c->root);
    return 0;
}
