/*
 * Silences, maintenance windows and inhibition: the three reasons a firing alert is recorded
 * as suppressed instead of being notified (suppress.h).
 *
 * Configuration (the `alerting:` section of the config file):
 *
 *   inhibit_rules:
 *     - {source_matchers: "severity=critical", target_matchers: "severity=warning",
 *        equal: [component]}
 *   dependencies: {db: [api, worker]}   # a source on db also inhibits targets on api, worker
 *   maintenance:
 *     - {name: upgrade, matchers: "host=db-1", start: "2026-12-01T02:00:00Z",
 *        end: "2026-12-01T04:00:00Z"}
 *     - {name: patching, matchers: "component=web", weekdays: [sat, sun], from: "02:00",
 *        to: "04:00"}                 # weekly, UTC; to before from crosses midnight
 */
#include "alert/suppress.h"
#include "core/ydoc.h"
#include "query/query.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INHIBIT_MAX 64
#define WINDOWS_MAX 64
#define DEPENDENCIES_MAX 64
#define EQUAL_MAX 8

struct inhibit_rule {
    struct query_matchers *source, *target;
    char equal[EQUAL_MAX][64];
    size_t nequal;
};

struct window {
    char name[128];
    struct query_matchers *matchers;
    int64_t start_ms, end_ms; /* one-off; 0 when weekly */
    unsigned weekdays;        /* weekly: bit 0 = Sunday */
    int from_min, to_min;     /* weekly: minutes of the UTC day */
};

struct dependency {
    char component[128];
    char dependents[16][128];
    size_t n;
};

struct active_silence {
    struct alert_silence s;
    struct query_matchers *matchers;
};

struct suppressor {
    struct inhibit_rule inhibit[INHIBIT_MAX];
    size_t ninhibit;
    struct window windows[WINDOWS_MAX];
    size_t nwindows;
    struct dependency deps[DEPENDENCIES_MAX];
    size_t ndeps;
    struct active_silence *silences;
    size_t nsilences, cap;
};

/* ---- the config file ------------------------------------------------------------------------ */

static int matchers_at(struct ydoc *p, const yaml_node_t *v, const char *key,
                       struct query_matchers **out)
{
    const char *s = ydoc_text(v);
    if (!s)
        return ydoc_fail(p, v, "%s: expected label matchers like \"severity=critical\"", key);
    struct err me;
    if (query_matchers_new(out, s, &me) != 0)
        return ydoc_fail(p, v, "%s: %s", key, me.msg);
    return 0;
}

static int copy_at(struct ydoc *p, const yaml_node_t *v, const char *key, char *out, size_t size)
{
    const char *s = ydoc_text(v);
    if (!s || !*s || strlen(s) >= size)
        return ydoc_fail(p, v, "%s: expected a name of at most %zu bytes", key, size - 1);
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int parse_inhibit(struct ydoc *p, struct suppressor *s, const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(p, n,
                         "an inhibit rule must be a map (source_matchers, target_matchers, "
                         "equal)");
    if (s->ninhibit >= INHIBIT_MAX)
        return ydoc_fail(p, n, "more than %d inhibit rules", INHIBIT_MAX);
    struct inhibit_rule *r = &s->inhibit[s->ninhibit++];
    for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
        const char *key = ydoc_text(ydoc_node(p, kv->key));
        const yaml_node_t *v = ydoc_node(p, kv->value);
        if (key && strcmp(key, "source_matchers") == 0) {
            if (r->source || matchers_at(p, v, key, &r->source))
                return r->source && p->e->code == 0 ? ydoc_fail(p, v, "%s given twice", key)
                                                    : p->e->code;
        } else if (key && strcmp(key, "target_matchers") == 0) {
            if (r->target || matchers_at(p, v, key, &r->target))
                return r->target && p->e->code == 0 ? ydoc_fail(p, v, "%s given twice", key)
                                                    : p->e->code;
        } else if (key && strcmp(key, "equal") == 0 && v->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                if (r->nequal >= EQUAL_MAX)
                    return ydoc_fail(p, v, "equal: at most %d labels", EQUAL_MAX);
                if (copy_at(p, ydoc_node(p, *it), "equal", r->equal[r->nequal++],
                            sizeof r->equal[0]))
                    return p->e->code;
            }
        } else {
            return ydoc_fail(
                p, v,
                "unknown key '%s' in an inhibit rule (source_matchers, target_matchers, "
                "equal: [labels])",
                key ? key : "?");
        }
    }
    if (!r->source || !r->target)
        return ydoc_fail(p, n, "an inhibit rule needs source_matchers and target_matchers");
    return 0;
}

static int day_minutes(struct ydoc *p, const yaml_node_t *v, const char *key, int *out)
{
    const char *s = ydoc_text(v);
    int h, m, used = 0;
    if (!s || sscanf(s, "%2d:%2d%n", &h, &m, &used) != 2 || s[used] || h > 24 || m > 59 ||
        (h == 24 && m))
        return ydoc_fail(p, v, "%s: expected a time of day HH:MM (UTC)", key);
    *out = h * 60 + m;
    return 0;
}

static int weekdays_at(struct ydoc *p, const yaml_node_t *v, unsigned *out)
{
    static const char *const names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
    if (v->type != YAML_SEQUENCE_NODE)
        return ydoc_fail(p, v, "weekdays: expected a list like [sat, sun]");
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        const char *d = ydoc_text(ydoc_node(p, *it));
        int k = 0;
        while (k < 7 && !(d && strcmp(d, names[k]) == 0))
            k++;
        if (k == 7)
            return ydoc_fail(p, ydoc_node(p, *it),
                             "weekdays: '%s' is not one of sun, mon, tue, wed, thu, "
                             "fri, sat",
                             d ? d : "?");
        *out |= 1u << k;
    }
    return 0;
}

static int parse_window(struct ydoc *p, struct suppressor *s, const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(p, n, "a maintenance window must be a map");
    if (s->nwindows >= WINDOWS_MAX)
        return ydoc_fail(p, n, "more than %d maintenance windows", WINDOWS_MAX);
    struct window *w = &s->windows[s->nwindows++];
    bool has_from = false, has_to = false;
    for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
        const char *key = ydoc_text(ydoc_node(p, kv->key));
        const yaml_node_t *v = ydoc_node(p, kv->value);
        const char *t = ydoc_text(v);
        int rc = 0;
        if (key && strcmp(key, "name") == 0)
            rc = copy_at(p, v, key, w->name, sizeof w->name);
        else if (key && strcmp(key, "matchers") == 0)
            rc = w->matchers ? ydoc_fail(p, v, "matchers given twice")
                             : matchers_at(p, v, key, &w->matchers);
        else if (key && (strcmp(key, "start") == 0 || strcmp(key, "end") == 0))
            rc = t && time_parse_point(t, key[0] == 's' ? &w->start_ms : &w->end_ms)
                     ? 0
                     : ydoc_fail(p, v, "%s: expected a time (RFC 3339 or epoch seconds)", key);
        else if (key && strcmp(key, "weekdays") == 0)
            rc = weekdays_at(p, v, &w->weekdays);
        else if (key && strcmp(key, "from") == 0)
            rc = (has_from = true, day_minutes(p, v, key, &w->from_min));
        else if (key && strcmp(key, "to") == 0)
            rc = (has_to = true, day_minutes(p, v, key, &w->to_min));
        else
            rc = ydoc_fail(p, v,
                           "unknown key '%s' in a maintenance window (name, matchers, start, end, "
                           "weekdays, from, to)",
                           key ? key : "?");
        if (rc)
            return rc;
    }
    if (!w->name[0] || !w->matchers)
        return ydoc_fail(p, n, "a maintenance window needs a name and matchers");
    bool one_off = w->start_ms || w->end_ms, weekly = w->weekdays || has_from || has_to;
    if (one_off == weekly)
        return ydoc_fail(p, n,
                         "maintenance window %s: give either start and end (once) or weekdays, "
                         "from and to (every week)",
                         w->name);
    if (one_off && (!w->start_ms || !w->end_ms || w->end_ms <= w->start_ms))
        return ydoc_fail(p, n, "maintenance window %s: end must come after start", w->name);
    if (weekly && (!w->weekdays || !has_from || !has_to || w->from_min == w->to_min))
        return ydoc_fail(p, n,
                         "maintenance window %s: weekdays, from and to are all needed (from "
                         "and to differ)",
                         w->name);
    return 0;
}

static int parse_dependencies(struct ydoc *p, struct suppressor *s, const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(p, n, "dependencies: expected a map like {db: [api, worker]}");
    for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
        const yaml_node_t *k = ydoc_node(p, kv->key), *v = ydoc_node(p, kv->value);
        if (s->ndeps >= DEPENDENCIES_MAX)
            return ydoc_fail(p, k, "more than %d dependencies", DEPENDENCIES_MAX);
        struct dependency *d = &s->deps[s->ndeps++];
        if (copy_at(p, k, "dependencies", d->component, sizeof d->component))
            return p->e->code;
        if (v->type != YAML_SEQUENCE_NODE)
            return ydoc_fail(p, v, "dependencies.%s: expected a list of components", d->component);
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            if (d->n >= 16)
                return ydoc_fail(p, v, "dependencies.%s: at most 16", d->component);
            if (copy_at(p, ydoc_node(p, *it), "dependencies", d->dependents[d->n++],
                        sizeof d->dependents[0]))
                return p->e->code;
        }
    }
    return 0;
}

static int parse_alerting(struct ydoc *p, struct suppressor *s, const yaml_node_t *alerting)
{
    for (yaml_node_pair_t *kv = alerting->data.mapping.pairs.start;
         kv < alerting->data.mapping.pairs.top; kv++) {
        const char *key = ydoc_text(ydoc_node(p, kv->key));
        const yaml_node_t *v = ydoc_node(p, kv->value);
        bool list = v->type == YAML_SEQUENCE_NODE;
        int rc = 0;
        if (key && (strcmp(key, "inhibit_rules") == 0 || strcmp(key, "maintenance") == 0)) {
            if (!list)
                return ydoc_fail(p, v, "%s: expected a list", key);
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 rc == 0 && it < v->data.sequence.items.top; it++)
                rc = key[0] == 'i' ? parse_inhibit(p, s, ydoc_node(p, *it))
                                   : parse_window(p, s, ydoc_node(p, *it));
        } else if (key && strcmp(key, "dependencies") == 0) {
            rc = parse_dependencies(p, s, v);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int load_config(struct suppressor *s, const char *path, struct err *e)
{
    if (!path || !*path)
        return 0;
    struct ydoc d;
    int rc = ydoc_load_file(&d, path, e);
    const yaml_node_t *alerting = rc == 0 ? ydoc_map_get(&d, ydoc_root(&d), "alerting") : NULL;
    if (alerting && alerting->type == YAML_MAPPING_NODE)
        rc = parse_alerting(&d, s, alerting);
    ydoc_release(&d);
    return rc;
}

int suppressor_new(struct suppressor **out, const char *config_path, struct err *e)
{
    struct suppressor *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, E_NOMEM, "out of memory");
    int rc = load_config(s, config_path, e);
    if (rc) {
        suppressor_free(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void suppressor_free(struct suppressor **sp)
{
    struct suppressor *s = *sp;
    if (!s)
        return;
    for (size_t i = 0; i < s->ninhibit; i++) {
        query_matchers_free(&s->inhibit[i].source);
        query_matchers_free(&s->inhibit[i].target);
    }
    for (size_t i = 0; i < s->nwindows; i++)
        query_matchers_free(&s->windows[i].matchers);
    for (size_t i = 0; i < s->nsilences; i++)
        query_matchers_free(&s->silences[i].matchers);
    free(s->silences);
    free(s);
    *sp = NULL;
}

/* ---- silences ------------------------------------------------------------------------------ */

const struct alert_silence *suppressor_silence(const struct suppressor *s, const char *id)
{
    for (size_t i = 0; i < s->nsilences; i++)
        if (strcmp(s->silences[i].s.id, id) == 0)
            return &s->silences[i].s;
    return NULL;
}

const struct alert_silence *suppressor_silence_at(const struct suppressor *s, size_t i)
{
    return i < s->nsilences ? &s->silences[i].s : NULL;
}

int suppressor_put_silence(struct suppressor *s, const struct alert_silence *si, struct err *e)
{
    if (si->ends_ms <= si->starts_ms)
        return err_set(e, E_INVALID, "ends_at must come after starts_at");
    struct query_matchers *m;
    int rc = query_matchers_new(&m, si->matchers, e);
    if (rc && strncmp(e->msg, "filter: ", 8) == 0) { /* the field is called matchers here */
        char msg[sizeof e->msg];
        snprintf(msg, sizeof msg, "%s", e->msg + 8);
        err_set(e, rc, "matchers: %s", msg);
    }
    if (rc)
        return rc;
    if (!si->matchers[0]) {
        query_matchers_free(&m);
        return err_set(e, E_INVALID,
                       "matchers: a silence needs at least one matcher (it would "
                       "silence every alert)");
    }
    struct active_silence *slot = NULL;
    for (size_t i = 0; i < s->nsilences && !slot; i++)
        if (strcmp(s->silences[i].s.id, si->id) == 0)
            slot = &s->silences[i];
    if (slot) {
        query_matchers_free(&slot->matchers);
    } else {
        if (s->nsilences >= SILENCES_MAX) {
            query_matchers_free(&m);
            return err_set(e, E_LIMIT, "more than %d silences", SILENCES_MAX);
        }
        if (s->nsilences == s->cap) {
            size_t cap = s->cap ? 2 * s->cap : 16;
            struct active_silence *more = realloc(s->silences, cap * sizeof *more);
            if (!more) {
                query_matchers_free(&m);
                return err_set(e, E_NOMEM, "out of memory");
            }
            s->silences = more;
            s->cap = cap;
        }
        slot = &s->silences[s->nsilences++];
    }
    slot->s = *si;
    slot->matchers = m;
    return 0;
}

static void text_json(struct buf *out, const char *s)
{
    json_t *j = json_string(s);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    buf_append(out, t ? t : "\"\"", t ? strlen(t) : 2);
    free(t);
    json_decref(j);
}

void suppressor_silences_json(const struct suppressor *s, int64_t now_ms, struct buf *out)
{
    buf_putc(out, '[');
    for (size_t i = 0; i < s->nsilences; i++) {
        const struct alert_silence *si = &s->silences[i].s;
        char from[40], to[40];
        time_format_rfc3339(si->starts_ms, from, sizeof from);
        time_format_rfc3339(si->ends_ms, to, sizeof to);
        buf_append(out, i ? ",{\"id\":" : "{\"id\":", i ? 7 : 6);
        text_json(out, si->id);
        buf_append(out, ",\"matchers\":", 12);
        text_json(out, si->matchers);
        buf_printf(out, ",\"starts_at\":\"%s\",\"ends_at\":\"%s\",\"created_by\":", from, to);
        text_json(out, si->created_by);
        buf_append(out, ",\"comment\":", 11);
        text_json(out, si->comment);
        buf_printf(out, ",\"state\":\"%s\"}",
                   now_ms >= si->ends_ms    ? "expired"
                   : now_ms < si->starts_ms ? "pending"
                                            : "active");
    }
    buf_putc(out, ']');
}

/* ---- the check ----------------------------------------------------------------------------- */

static bool in_window(const struct window *w, int64_t now_ms)
{
    if (!w->weekdays)
        return now_ms >= w->start_ms && now_ms < w->end_ms;
    int64_t day = now_ms / 86400000, minute = now_ms % 86400000 / 60000;
    int weekday = (int)((day + 4) % 7); /* 1970-01-01 was a Thursday */
    if (w->from_min < w->to_min)
        return (w->weekdays >> weekday & 1) && minute >= w->from_min && minute < w->to_min;
    /* crosses midnight: the evening of a listed day, or the morning after it */
    int yesterday = (weekday + 6) % 7;
    return ((w->weekdays >> weekday & 1) && minute >= w->from_min) ||
           ((w->weekdays >> yesterday & 1) && minute < w->to_min);
}

static const char *label(json_t *labels, const char *name)
{
    const char *v = json_string_value(json_object_get(labels, name));
    return v ? v : "";
}

static bool depends_on(const struct suppressor *s, const char *component, const char *source)
{
    for (size_t i = 0; i < s->ndeps; i++) {
        if (strcmp(s->deps[i].component, source) != 0)
            continue;
        for (size_t k = 0; k < s->deps[i].n; k++)
            if (strcmp(s->deps[i].dependents[k], component) == 0)
                return true;
    }
    return false;
}

static bool inhibits(const struct suppressor *s, const struct inhibit_rule *r, json_t *source,
                     json_t *target)
{
    if (source == target || json_equal(source, target) || !query_matchers_match(r->source, source))
        return false;
    for (size_t i = 0; i < r->nequal; i++) {
        const char *a = label(source, r->equal[i]), *b = label(target, r->equal[i]);
        if (strcmp(a, b) != 0 && !(strcmp(r->equal[i], "component") == 0 && depends_on(s, b, a)))
            return false;
    }
    return true;
}

bool suppressor_check(const struct suppressor *s, json_t *labels, int64_t now_ms,
                      json_t *const *firing, size_t nfiring, char *why, size_t why_size)
{
    for (size_t i = 0; i < s->nsilences; i++) {
        const struct active_silence *a = &s->silences[i];
        if (now_ms >= a->s.starts_ms && now_ms < a->s.ends_ms &&
            query_matchers_match(a->matchers, labels)) {
            snprintf(why, why_size, "silenced by %s (%s, by %s)", a->s.id,
                     a->s.comment[0] ? a->s.comment : "no comment", a->s.created_by);
            return true;
        }
    }
    for (size_t i = 0; i < s->nwindows; i++)
        if (in_window(&s->windows[i], now_ms) &&
            query_matchers_match(s->windows[i].matchers, labels)) {
            snprintf(why, why_size, "maintenance window %s", s->windows[i].name);
            return true;
        }
    for (size_t i = 0; i < s->ninhibit; i++) {
        const struct inhibit_rule *r = &s->inhibit[i];
        if (!query_matchers_match(r->target, labels))
            continue;
        for (size_t k = 0; k < nfiring; k++)
            if (inhibits(s, r, firing[k], labels)) {
                snprintf(why, why_size, "inhibited by %s on %s %s", label(firing[k], "alertname"),
                         r->nequal ? r->equal[0] : "",
                         r->nequal ? label(firing[k], r->equal[0]) : "");
                return true;
            }
    }
    return false;
}
