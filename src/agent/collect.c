/*
 * The host collector: the table of collectors (one row each; a new source is one file and one
 * row), the files they read under a root (the real /proc and /sys, or a test's copy), and the
 * counter tables that turn two reads into rates.
 */
#include "agent/agent_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const struct {
    const char *name;
    collector_fn fn;
} collectors[] = {
    {"cpu", collect_cpu},
    {"memory", collect_memory},
    {"load", collect_load},
    {"uptime", collect_uptime},
    {"processes", collect_processes},
    {"disk", collect_disk},
    {"filesystem", collect_filesystem},
    {"network", collect_network},
};
#define NCOLLECTORS (sizeof collectors / sizeof collectors[0])

const char *const *host_collector_names(size_t *count)
{
    static const char *names[NCOLLECTORS];
    for (size_t i = 0; i < NCOLLECTORS; i++)
        names[i] = collectors[i].name;
    *count = NCOLLECTORS;
    return names;
}

int64_t agent_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int host_collector_new(struct host_collector **out, const char *root, struct err *e)
{
    struct host_collector *c = calloc(1, sizeof *c);
    if (c)
        c->cpus = calloc(CPUS_MAX, sizeof *c->cpus);
    if (!c || !c->cpus) {
        free(c);
        return err_set(e, E_NOMEM, "out of memory");
    }
    snprintf(c->root, sizeof c->root, "%s", strcmp(root ? root : "", "/") == 0 ? "" : root);
    if (gethostname(c->host, sizeof c->host - 1) != 0 || !c->host[0])
        snprintf(c->host, sizeof c->host, "localhost");
    buf_init(&c->file, PROC_FILE_MAX);
    /* the first reading of every rate: the first collection then has rates to report */
    struct samples first;
    samples_init(&first, 0, c->host);
    host_collect(c, agent_mono_ms(), &first, NULL);
    samples_release(&first);
    *out = c;
    return 0;
}

void host_collector_free(struct host_collector **c)
{
    if (!*c)
        return;
    buf_release(&(*c)->file);
    counters_release(&(*c)->disks);
    counters_release(&(*c)->nets);
    free((*c)->cpus);
    free(*c);
    *c = NULL;
}

const char *host_collector_host(const struct host_collector *c)
{
    return c->host;
}

int host_collect(struct host_collector *c, int64_t mono_ms, struct samples *out, struct err *e)
{
    int first = 0;
    for (size_t i = 0; i < NCOLLECTORS; i++) {
        struct err local;
        int rc = collectors[i].fn(c, mono_ms, out, &local);
        if (rc != 0 && first == 0)
            first = err_set(e, rc, "collector %s: %s", collectors[i].name, local.msg);
    }
    return first;
}

void collector_path(const struct host_collector *c, const char *rel, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", c->root, rel);
}

const char *collector_read(struct host_collector *c, const char *rel, struct err *e)
{
    char path[4200];
    collector_path(c, rel, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(e, E_IO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    c->file.len = 0;
    char chunk[16384];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || buf_append(&c->file, chunk, (size_t)n) != 0) {
            int rc = n < 0   ? err_set(e, E_IO, "reading %s: %s", path, strerror(errno))
                     : n > 0 ? err_set(e, E_IO, "%s is larger than %u bytes", path, PROC_FILE_MAX)
                             : 0;
            close(fd);
            if (rc)
                return NULL;
            break;
        }
    }
    if (buf_putc(&c->file, '\0') != 0) {
        err_set(e, E_IO, "%s is larger than %u bytes", path, PROC_FILE_MAX);
        return NULL;
    }
    c->file.len--;
    return c->file.data;
}

bool proc_field(const char *text, const char *name, uint64_t *out)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ':') {
            char *end;
            *out = strtoull(p + n + 1, &end, 10);
            return end != p + n + 1;
        }
    }
    return false;
}

/* ---- counters between two reads ------------------------------------------------------------ */

static struct counter_entry *entry_of(struct counter_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->items[i].name, name) == 0)
            return &t->items[i];
    if (t->n >= DEVICES_MAX)
        return NULL; /* beyond the limit a device has no rates */
    struct counter_entry *more = realloc(t->items, (t->n + 1) * sizeof *more);
    if (!more)
        return NULL;
    t->items = more;
    struct counter_entry *x = &t->items[t->n++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->generation = UINT64_MAX; /* new: no previous read */
    return x;
}

bool counters_update(struct counter_table *t, const char *name, const uint64_t *v, size_t n,
                     uint64_t *delta, double *seconds, int64_t mono_ms)
{
    struct counter_entry *x = entry_of(t, name);
    if (!x)
        return false;
    bool had = x->generation == t->generation && t->last_mono_ms > 0 && mono_ms > t->last_mono_ms;
    for (size_t i = 0; i < n && i < COUNTERS_MAX; i++) {
        if (v[i] < x->v[i])
            had = false; /* a counter went back: the device was reset or replaced */
        delta[i] = v[i] - x->v[i];
        x->v[i] = v[i];
    }
    x->generation = t->generation + 1;
    *seconds = (double)(mono_ms - t->last_mono_ms) / 1000.0;
    return had;
}

void counters_sweep(struct counter_table *t, int64_t mono_ms)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->items[i].generation == t->generation + 1)
            t->items[k++] = t->items[i];
    t->n = k;
    t->generation++;
    t->last_mono_ms = mono_ms;
}

void counters_release(struct counter_table *t)
{
    free(t->items);
    memset(t, 0, sizeof *t);
}
