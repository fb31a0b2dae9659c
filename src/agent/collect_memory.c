/*
 * memory and swap from /proc/meminfo. used is total minus available, as free(1) counts it
 * (page cache that can be dropped is not used); memory_usage, the share used in percent, sits
 * in component system beside cpu_usage and disk_usage, where system_health reads them.
 */
#include "agent/agent_int.h"

/* swap from the same read of meminfo */
static int add_swap(const struct host_collector *c, const char *text, struct samples *out,
                    struct err *e)
{
    uint64_t total_kib, free_kib;
    if (!proc_field(text, "SwapTotal", &total_kib) || !proc_field(text, "SwapFree", &free_kib))
        return err_set(e, E_IO, "no SwapTotal or SwapFree in %s/proc/meminfo", c->root);
    uint64_t used_kib = free_kib < total_kib ? total_kib - free_kib : 0;
    samples_add(out, "memory", "swap_total_bytes", NULL, NULL, (double)total_kib * 1024);
    samples_add(out, "memory", "swap_used_bytes", NULL, NULL, (double)used_kib * 1024);
    if (total_kib > 0) /* no swap: no share of it */
        samples_add(out, "memory", "swap_usage_percent", NULL, NULL,
                    100.0 * (double)used_kib / (double)total_kib);
    return 0;
}

int collect_memory(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    (void)mono_ms;
    const char *text = collector_read(c, "proc/meminfo", e);
    if (!text)
        return E_IO;
    uint64_t total_kib, avail_kib, free_kib = 0, buffers_kib = 0, cached_kib = 0;
    if (!proc_field(text, "MemTotal", &total_kib) || total_kib == 0)
        return err_set(e, E_IO, "no MemTotal in %s/proc/meminfo", c->root);
    if (!proc_field(text, "MemAvailable", &avail_kib)) {
        /* kernels before 3.14: free, buffers and page cache are about what can be had */
        proc_field(text, "MemFree", &free_kib);
        proc_field(text, "Buffers", &buffers_kib);
        proc_field(text, "Cached", &cached_kib);
        avail_kib = free_kib + buffers_kib + cached_kib;
    }
    if (avail_kib > total_kib)
        avail_kib = total_kib;
    double total = (double)total_kib * 1024, avail = (double)avail_kib * 1024;
    samples_add(out, "memory", "memory_total_bytes", NULL, NULL, total);
    samples_add(out, "memory", "memory_used_bytes", NULL, NULL, total - avail);
    samples_add(out, "memory", "memory_available_bytes", NULL, NULL, avail);
    samples_add(out, "system", "memory_usage", NULL, NULL, 100.0 * (total - avail) / total);
    return add_swap(c, text, out, e);
}
