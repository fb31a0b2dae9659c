/*
 * collect/heartbeat: the sources' heartbeats (see heartbeat.h). First cut: the interface, kept
 * in memory only; collection_sources and collection_gaps follow.
 */
#include "collect/heartbeat.h"

#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"agent",    "tail",         "scrape", "syslog",
                                         "graphite", "remote_write", "http",   "self"};

const char *source_kind_name(enum source_kind kind)
{
    return (unsigned)kind < sizeof kind_names / sizeof kind_names[0] ? kind_names[kind] : NULL;
}

int source_kind_parse(const char *name)
{
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (strcmp(kind_names[i], name) == 0)
            return (int)i;
    return -1;
}

struct heartbeats {
    struct writer *writer;
};

int heartbeats_new(struct heartbeats **out, struct store *s, struct writer *w,
                   const struct config *cfg, struct err *e)
{
    (void)s, (void)cfg;
    *out = calloc(1, sizeof **out);
    if (!*out)
        return err_set(e, E_NOMEM, "out of memory");
    (*out)->writer = w;
    return 0;
}

void heartbeats_free(struct heartbeats **h)
{
    free(*h);
    *h = NULL;
}

void heartbeat_note(struct heartbeats *h, enum source_kind kind, const char *name,
                    int64_t interval_ms, uint64_t rows)
{
    (void)h, (void)kind, (void)name, (void)interval_ms, (void)rows;
}
