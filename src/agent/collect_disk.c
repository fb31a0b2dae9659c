/*
 * disk: I/O of each block device from /proc/diskstats, as rates between two reads. Only whole
 * devices (those of /sys/block: partitions would count their I/O twice), without loop and RAM
 * devices (ram, zram), which are memory, not disks. diskstats counts 512-byte sectors whatever
 * the device's block size; busy is the share of time the device had I/O in flight.
 */
#include "agent/agent_int.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *const skipped_prefixes[] = {"loop", "ram", "zram"};

static bool is_disk(struct host_collector *c, const char *name)
{
    for (size_t i = 0; i < sizeof skipped_prefixes / sizeof skipped_prefixes[0]; i++)
        if (strncmp(name, skipped_prefixes[i], strlen(skipped_prefixes[i])) == 0)
            return false;
    char rel[SAMPLE_LABEL_MAX + 16], path[4400];
    snprintf(rel, sizeof rel, "sys/block/%s", name);
    for (char *p = rel + 10; *p; p++)
        if (*p == '/') /* cciss/c0d0 is /sys/block/cciss!c0d0 */
            *p = '!';
    collector_path(c, rel, path, sizeof path);
    struct stat st;
    return stat(path, &st) == 0;
}

enum { READS, SECTORS_READ, WRITES, SECTORS_WRITTEN, IO_MS, NCOUNTERS };

int collect_disk(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    const char *text = collector_read(c, "proc/diskstats", e);
    if (!text)
        return E_IO;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        char name[SAMPLE_LABEL_MAX];
        unsigned long long f[10];
        /* major minor name reads merged sectors ms writes merged sectors ms in_flight io_ms */
        if (sscanf(p, "%*u %*u %255s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", name,
                   &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9]) != 11)
            continue;
        if (!is_disk(c, name))
            continue;
        uint64_t v[NCOUNTERS] = {f[0], f[2], f[4], f[6], f[9]}, d[NCOUNTERS];
        double s;
        if (!counters_update(&c->disks, name, v, NCOUNTERS, d, &s, mono_ms))
            continue;
        double busy = 100.0 * (double)d[IO_MS] / (s * 1000.0);
        samples_add(out, "disk", "disk_reads_per_second", "device", name, (double)d[READS] / s);
        samples_add(out, "disk", "disk_writes_per_second", "device", name, (double)d[WRITES] / s);
        samples_add(out, "disk", "disk_read_bytes_per_second", "device", name,
                    (double)d[SECTORS_READ] * 512.0 / s);
        samples_add(out, "disk", "disk_written_bytes_per_second", "device", name,
                    (double)d[SECTORS_WRITTEN] * 512.0 / s);
        samples_add(out, "disk", "disk_busy_percent", "device", name, busy > 100 ? 100 : busy);
    }
    counters_sweep(&c->disks, mono_ms);
    return 0;
}
