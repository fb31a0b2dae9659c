/*
 * The machine as a whole: load averages (/proc/loadavg), time since boot (/proc/uptime) and
 * process counts (the process directories of /proc; running and blocked from /proc/stat).
 */
#include "agent/agent_int.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int collect_load(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    (void)mono_ms;
    const char *text = collector_read(c, "proc/loadavg", e);
    if (!text)
        return E_IO;
    double load[3];
    if (sscanf(text, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
        return err_set(e, E_IO, "%s/proc/loadavg: expected three load averages", c->root);
    samples_add(out, "system", "load_average_1m", NULL, NULL, load[0]);
    samples_add(out, "system", "load_average_5m", NULL, NULL, load[1]);
    samples_add(out, "system", "load_average_15m", NULL, NULL, load[2]);
    return 0;
}

int collect_uptime(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    (void)mono_ms;
    const char *text = collector_read(c, "proc/uptime", e);
    if (!text)
        return E_IO;
    double up;
    if (sscanf(text, "%lf", &up) != 1 || up < 0)
        return err_set(e, E_IO, "%s/proc/uptime: expected seconds since boot", c->root);
    samples_add(out, "system", "uptime_seconds", NULL, NULL, up);
    return 0;
}

int collect_processes(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    (void)mono_ms;
    char path[4200];
    collector_path(c, "proc", path, sizeof path);
    DIR *d = opendir(path);
    if (!d)
        return err_set(e, E_IO, "cannot list %s", path);
    uint64_t total = 0;
    for (struct dirent *x; (x = readdir(d)) != NULL;)
        if (isdigit((unsigned char)x->d_name[0]))
            total++;
    closedir(d);
    const char *text = collector_read(c, "proc/stat", e);
    if (!text)
        return E_IO;
    /* lines "procs_running 3"; never the first line (that is "cpu ...") */
    const char *r = strstr(text, "\nprocs_running "), *b = strstr(text, "\nprocs_blocked ");
    if (!r || !b)
        return err_set(e, E_IO, "no procs_running or procs_blocked in %s/proc/stat", c->root);
    uint64_t running = strtoull(r + 15, NULL, 10), blocked = strtoull(b + 15, NULL, 10);
    samples_add(out, "processes", "processes_total", NULL, NULL, (double)total);
    samples_add(out, "processes", "processes_running", NULL, NULL, (double)running);
    samples_add(out, "processes", "processes_blocked", NULL, NULL, (double)blocked);
    return 0;
}
