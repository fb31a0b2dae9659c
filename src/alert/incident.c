/*
 * Incidents: firing alerts grouped by what they share (incident.h).
 */
#include "alert/incident.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INCIDENTS_MAX 1000
#define KEPT_AFTER_RESOLVE_MS (86400 * 1000LL)

static const char *const keys[] = {"host", "component", "pipeline"};
#define NKEYS (sizeof keys / sizeof keys[0])

struct member {
    char alert_id[17];
    char rule[128];
    int64_t fired_ms, resolved_ms; /* resolved_ms 0 while it fires */
};

struct incident {
    char id[17];
    int64_t opened_ms, last_ms, resolved_ms;
    json_t *values[NKEYS]; /* arrays of the key values seen */
    struct member *members;
    size_t n, cap;
};

struct incidents {
    int64_t window_ms;
    struct incident *items;
    size_t n;
};

struct incidents *incidents_new(int64_t window_ms)
{
    struct incidents *in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->window_ms = window_ms;
    in->items = calloc(INCIDENTS_MAX, sizeof *in->items);
    if (!in->items) {
        free(in);
        return NULL;
    }
    return in;
}

static void incident_release(struct incident *c)
{
    for (size_t k = 0; k < NKEYS; k++)
        json_decref(c->values[k]);
    free(c->members);
    memset(c, 0, sizeof *c);
}

void incidents_free(struct incidents **inp)
{
    struct incidents *in = *inp;
    if (!in)
        return;
    for (size_t i = 0; i < in->n; i++)
        incident_release(&in->items[i]);
    free(in->items);
    free(in);
    *inp = NULL;
}

static bool has_value(json_t *arr, const char *v)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) if (strcmp(json_string_value(x), v) == 0) return true;
    return false;
}

/* Whether the incident is open, recent and shares a key value with labels. */
static bool shares(const struct incidents *in, const struct incident *c, json_t *labels,
                   int64_t now_ms)
{
    if (c->resolved_ms || now_ms - c->last_ms > in->window_ms)
        return false;
    for (size_t k = 0; k < NKEYS; k++) {
        const char *v = json_string_value(json_object_get(labels, keys[k]));
        if (v && *v && has_value(c->values[k], v))
            return true;
    }
    return false;
}

/* Room for a new incident: the oldest resolved one goes when the table is full. */
static struct incident *slot(struct incidents *in, int64_t now_ms)
{
    size_t keep = 0;
    for (size_t i = 0; i < in->n; i++) {
        struct incident *c = &in->items[i];
        if (c->resolved_ms && now_ms - c->resolved_ms > KEPT_AFTER_RESOLVE_MS) {
            incident_release(c);
            continue;
        }
        if (keep != i) {
            in->items[keep] = *c;
            memset(c, 0, sizeof *c);
        }
        keep++;
    }
    in->n = keep;
    if (in->n == INCIDENTS_MAX) {
        size_t oldest = 0;
        for (size_t i = 1; i < in->n; i++)
            if (in->items[i].last_ms < in->items[oldest].last_ms)
                oldest = i;
        incident_release(&in->items[oldest]);
        in->items[oldest] = in->items[--in->n];
        memset(&in->items[in->n], 0, sizeof in->items[in->n]);
    }
    return &in->items[in->n++];
}

const char *incidents_join(struct incidents *in, const char *alert_id, const char *rule,
                           json_t *labels, int64_t now_ms)
{
    struct incident *c = NULL;
    for (size_t i = 0; i < in->n && !c; i++)
        if (shares(in, &in->items[i], labels, now_ms))
            c = &in->items[i];
    if (!c) {
        c = slot(in, now_ms);
        unsigned char raw[8];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(c->id, sizeof c->id, raw, sizeof raw);
        c->opened_ms = now_ms;
        for (size_t k = 0; k < NKEYS; k++)
            c->values[k] = json_array();
    }
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->members[i].alert_id, alert_id) == 0 && !c->members[i].resolved_ms) {
            c->last_ms = now_ms;
            return c->id; /* fires on: already a member */
        }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 4;
        struct member *more = realloc(c->members, cap * sizeof *more);
        if (!more)
            return NULL;
        c->members = more;
        c->cap = cap;
    }
    struct member *m = &c->members[c->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->alert_id, sizeof m->alert_id, "%s", alert_id);
    snprintf(m->rule, sizeof m->rule, "%s", rule);
    m->fired_ms = now_ms;
    c->last_ms = now_ms;
    for (size_t k = 0; k < NKEYS; k++) {
        const char *v = json_string_value(json_object_get(labels, keys[k]));
        if (v && *v && !has_value(c->values[k], v))
            json_array_append_new(c->values[k], json_string(v));
    }
    return c->id;
}

void incidents_resolve(struct incidents *in, const char *alert_id, int64_t now_ms)
{
    for (size_t i = 0; i < in->n; i++) {
        struct incident *c = &in->items[i];
        if (c->resolved_ms)
            continue;
        bool open = false;
        for (size_t k = 0; k < c->n; k++) {
            if (strcmp(c->members[k].alert_id, alert_id) == 0 && !c->members[k].resolved_ms)
                c->members[k].resolved_ms = now_ms;
            open |= c->members[k].resolved_ms == 0;
        }
        if (!open)
            c->resolved_ms = now_ms;
    }
}

static json_t *time_json(int64_t ms)
{
    char t[40];
    if (!ms)
        return json_null();
    time_format_rfc3339(ms, t, sizeof t);
    return json_string(t);
}

json_t *incidents_json(struct incidents *in, int64_t now_ms)
{
    json_t *out = json_array();
    for (size_t i = 0; i < in->n; i++) {
        const struct incident *c = &in->items[i];
        if (c->resolved_ms && now_ms - c->resolved_ms > KEPT_AFTER_RESOLVE_MS)
            continue;
        json_t *members = json_array(), *cause = NULL;
        for (size_t k = 0; k < c->n; k++) {
            const struct member *m = &c->members[k];
            json_t *j = json_pack("{s:s, s:s, s:o, s:o}", "alert_id", m->alert_id, "rule", m->rule,
                                  "fired_at", time_json(m->fired_ms), "resolved_at",
                                  time_json(m->resolved_ms));
            json_array_append_new(members, j);
            if (k == 0) /* members join in time order: the first fired first */
                cause = json_pack("{s:s, s:s, s:o}", "alert_id", m->alert_id, "rule", m->rule,
                                  "fired_at", time_json(m->fired_ms));
        }
        json_t *kv = json_object();
        for (size_t k = 0; k < NKEYS; k++)
            json_object_set(kv, keys[k], c->values[k]);
        json_array_append_new(out,
                              json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "id", c->id, "state",
                                        c->resolved_ms ? "resolved" : "open", "opened_at",
                                        time_json(c->opened_ms), "resolved_at",
                                        time_json(c->resolved_ms), "keys", kv, "probable_cause",
                                        cause ? cause : json_null(), "alerts", members));
    }
    return out;
}
