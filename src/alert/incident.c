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
    bool changed; /* since its row was last taken */
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
            c->changed = true;
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
    c->changed = true;
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
            if (strcmp(c->members[k].alert_id, alert_id) == 0 && !c->members[k].resolved_ms) {
                c->members[k].resolved_ms = now_ms;
                c->changed = true;
            }
            open |= c->members[k].resolved_ms == 0;
        }
        if (!open)
            c->resolved_ms = now_ms;
    }
}

const char *incidents_of_alert(const struct incidents *in, const char *alert_id)
{
    for (size_t i = 0; i < in->n; i++) {
        const struct incident *c = &in->items[i];
        for (size_t k = 0; !c->resolved_ms && k < c->n; k++)
            if (!c->members[k].resolved_ms && strcmp(c->members[k].alert_id, alert_id) == 0)
                return c->id;
    }
    return NULL;
}

static json_t *time_json(int64_t ms)
{
    char t[40];
    if (!ms)
        return json_null();
    time_format_rfc3339(ms, t, sizeof t);
    return json_string(t);
}

/* An incident's alerts (members) and its probable cause, as the API gives them. */
static json_t *members_json(const struct incident *c, json_t **cause)
{
    json_t *members = json_array();
    *cause = NULL;
    for (size_t k = 0; k < c->n; k++) {
        const struct member *m = &c->members[k];
        json_t *j =
            json_pack("{s:s, s:s, s:o, s:o}", "alert_id", m->alert_id, "rule", m->rule, "fired_at",
                      time_json(m->fired_ms), "resolved_at", time_json(m->resolved_ms));
        json_array_append_new(members, j);
        if (k == 0) /* members join in time order: the first fired first */
            *cause = json_pack("{s:s, s:s, s:o}", "alert_id", m->alert_id, "rule", m->rule,
                               "fired_at", time_json(m->fired_ms));
    }
    return members;
}

static json_t *keys_json_of(const struct incident *c)
{
    json_t *kv = json_object();
    for (size_t k = 0; k < NKEYS; k++)
        json_object_set(kv, keys[k], c->values[k]);
    return kv;
}

json_t *incidents_json(struct incidents *in, int64_t now_ms)
{
    json_t *out = json_array();
    for (size_t i = 0; i < in->n; i++) {
        const struct incident *c = &in->items[i];
        if (c->resolved_ms && now_ms - c->resolved_ms > KEPT_AFTER_RESOLVE_MS)
            continue;
        json_t *cause;
        json_t *members = members_json(c, &cause);
        json_array_append_new(out, json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "id", c->id,
                                             "state", c->resolved_ms ? "resolved" : "open",
                                             "opened_at", time_json(c->opened_ms), "resolved_at",
                                             time_json(c->resolved_ms), "keys", keys_json_of(c),
                                             "probable_cause", cause ? cause : json_null(),
                                             "alerts", members));
    }
    return out;
}

static void set_text(struct batch *b, struct value *row, const char *column, const char *s)
{
    int c = schema_column(b->table, column);
    if (c < 0 || !s)
        return;
    size_t len = strlen(s);
    row[c] = (struct value){
        .s = arena_strndup(&b->arena, s, len), .len = (uint32_t)len, .type = VAL_TEXT};
}

static void set_time(struct batch *b, struct value *row, const char *column, int64_t ms)
{
    int c = schema_column(b->table, column);
    if (c >= 0 && ms)
        row[c] = (struct value){.i = ms, .type = VAL_INT};
}

void incidents_take_changed(struct incidents *in, struct batch *b, int64_t now_ms)
{
    for (size_t i = 0; i < in->n; i++) {
        struct incident *c = &in->items[i];
        if (!c->changed)
            continue;
        c->changed = false;
        json_t *cause;
        json_t *members = members_json(c, &cause);
        json_t *kv = keys_json_of(c);
        char *members_text = json_dumps(members, JSON_COMPACT);
        char *keys_text = json_dumps(kv, JSON_COMPACT);
        struct value *row = batch_add_row(b);
        set_time(b, row, "ts", now_ms);
        set_text(b, row, "id", c->id);
        set_text(b, row, "state", c->resolved_ms ? "resolved" : "open");
        set_time(b, row, "opened_at", c->opened_ms);
        set_time(b, row, "resolved_at", c->resolved_ms);
        set_time(b, row, "last_alert_at", c->last_ms);
        set_text(b, row, "probable_cause", json_string_value(json_object_get(cause, "alert_id")));
        set_text(b, row, "keys", keys_text);
        set_text(b, row, "alerts", members_text);
        free(members_text);
        free(keys_text);
        json_decref(members);
        json_decref(kv);
        json_decref(cause);
    }
}

static int64_t time_of(json_t *v)
{
    int64_t ms = 0;
    const char *s = json_string_value(v);
    return s && time_parse_point(s, &ms) ? ms : 0;
}

int incidents_load(struct incidents *in, const char *id, int64_t opened_ms, int64_t resolved_ms,
                   int64_t last_ms, const char *keys_json, const char *alerts_json, struct err *e)
{
    json_t *kv = json_loads(keys_json ? keys_json : "{}", 0, NULL);
    json_t *members = json_loads(alerts_json ? alerts_json : "[]", 0, NULL);
    int rc = 0;
    if (strlen(id) >= sizeof in->items[0].id || !json_is_object(kv) || !json_is_array(members))
        rc = err_set(e, E_INVALID, "incident %s: a row that cannot be read", id);
    struct incident *c = rc == 0 ? slot(in, time_now_ms()) : NULL;
    if (c) {
        snprintf(c->id, sizeof c->id, "%s", id);
        c->opened_ms = opened_ms;
        c->resolved_ms = resolved_ms;
        c->last_ms = last_ms;
        for (size_t k = 0; k < NKEYS; k++) {
            json_t *v = json_object_get(kv, keys[k]);
            c->values[k] = json_is_array(v) ? json_incref(v) : json_array();
        }
        size_t i;
        json_t *m;
        c->cap = json_array_size(members) + 1;
        c->members = calloc(c->cap, sizeof *c->members);
        json_array_foreach(members, i, m)
        {
            const char *aid = json_string_value(json_object_get(m, "alert_id"));
            const char *rule = json_string_value(json_object_get(m, "rule"));
            if (!c->members || !aid || !rule)
                continue;
            struct member *x = &c->members[c->n++];
            snprintf(x->alert_id, sizeof x->alert_id, "%s", aid);
            snprintf(x->rule, sizeof x->rule, "%s", rule);
            x->fired_ms = time_of(json_object_get(m, "fired_at"));
            x->resolved_ms = time_of(json_object_get(m, "resolved_at"));
        }
    }
    json_decref(kv);
    json_decref(members);
    return rc;
}
