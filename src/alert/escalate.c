/*
 * Escalation policies, read from the config (escalate.h).
 */
#include "alert/escalate.h"
#include "core/ydoc.h"
#include "query/query.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICIES_MAX 64

struct policy {
    char name[128];
    struct query_matchers *matchers;
    struct escalation_step steps[ESCALATION_STEPS_MAX];
    size_t nsteps;
};

struct escalations {
    struct policy policies[POLICIES_MAX];
    size_t n;
    char file[512]; /* the config file, for messages */
};

static int parse_step(struct ydoc *d, const yaml_node_t *n, struct policy *p)
{
    static const char *const severities[] = {"info", "warning", "critical", "page", NULL};
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(d, n, "an escalation step must be a map (after, receiver, severity)");
    if (p->nsteps >= ESCALATION_STEPS_MAX)
        return ydoc_fail(d, n, "escalation %s: at most %d steps", p->name, ESCALATION_STEPS_MAX);
    struct escalation_step *st = &p->steps[p->nsteps];
    st->line = (int)n->start_mark.line + 1;
    bool has_after = false;
    for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
        const char *key = ydoc_text(ydoc_node(d, kv->key));
        const yaml_node_t *v = ydoc_node(d, kv->value);
        const char *t = ydoc_text(v);
        if (key && strcmp(key, "after") == 0) {
            if (!t || !time_parse_duration(t, &st->after_ms) || st->after_ms < 0)
                return ydoc_fail(d, v, "after: expected a duration like 15m");
            has_after = true;
        } else if (key && strcmp(key, "receiver") == 0 && t && *t &&
                   strlen(t) < sizeof st->receiver) {
            memcpy(st->receiver, t, strlen(t) + 1);
        } else if (key && strcmp(key, "severity") == 0) {
            size_t k = 0;
            while (severities[k] && !(t && strcmp(t, severities[k]) == 0))
                k++;
            if (!severities[k])
                return ydoc_fail(d, v, "severity: expected info, warning, critical or page");
            memcpy(st->severity, t, strlen(t) + 1);
        } else {
            return ydoc_fail(d, v,
                             "unknown or bad key '%s' in an escalation step (after: duration, "
                             "receiver: name, severity: info|warning|critical|page)",
                             key ? key : "?");
        }
    }
    if (!has_after || (!st->receiver[0] && !st->severity[0]))
        return ydoc_fail(d, n, "an escalation step needs after and a receiver or a severity");
    if (p->nsteps && st->after_ms <= p->steps[p->nsteps - 1].after_ms)
        return ydoc_fail(d, n, "escalation %s: each step comes after the one before", p->name);
    p->nsteps++;
    return 0;
}

static int parse_policy(struct ydoc *d, const yaml_node_t *n, struct escalations *es)
{
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(d, n, "an escalation must be a map (name, matchers, steps)");
    if (es->n >= POLICIES_MAX)
        return ydoc_fail(d, n, "more than %d escalations", POLICIES_MAX);
    struct policy *p = &es->policies[es->n++];
    const yaml_node_t *steps = NULL;
    for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
        const char *key = ydoc_text(ydoc_node(d, kv->key));
        const yaml_node_t *v = ydoc_node(d, kv->value);
        const char *t = ydoc_text(v);
        struct err me;
        if (key && strcmp(key, "name") == 0 && t && *t && strlen(t) < sizeof p->name)
            memcpy(p->name, t, strlen(t) + 1);
        else if (key && strcmp(key, "matchers") == 0 && t && !p->matchers) {
            if (query_matchers_new(&p->matchers, t, &me) != 0)
                return ydoc_fail(d, v, "matchers: %s", me.msg);
        } else if (key && strcmp(key, "steps") == 0 && v->type == YAML_SEQUENCE_NODE)
            steps = v;
        else
            return ydoc_fail(d, v,
                             "unknown or bad key '%s' in an escalation (name, matchers, steps: "
                             "[...])",
                             key ? key : "?");
    }
    if (!p->name[0] || !p->matchers || !steps)
        return ydoc_fail(d, n, "an escalation needs name, matchers and steps");
    for (yaml_node_item_t *it = steps->data.sequence.items.start;
         it < steps->data.sequence.items.top; it++)
        if (parse_step(d, ydoc_node(d, *it), p) != 0)
            return E_INVALID;
    return 0;
}

int escalations_new(struct escalations **out, const char *config_path, struct err *e)
{
    struct escalations *es = calloc(1, sizeof *es);
    if (!es)
        return err_set(e, E_NOMEM, "out of memory");
    int rc = 0;
    if (config_path && *config_path) {
        snprintf(es->file, sizeof es->file, "%s", config_path);
        struct ydoc d;
        rc = ydoc_load_file(&d, config_path, e);
        const yaml_node_t *list =
            rc == 0 ? ydoc_map_get(&d, ydoc_map_get(&d, ydoc_root(&d), "alerting"), "escalations")
                    : NULL;
        if (list && list->type != YAML_SEQUENCE_NODE)
            rc = ydoc_fail(&d, list, "escalations: expected a list");
        for (yaml_node_item_t *it = list && rc == 0 ? list->data.sequence.items.start : NULL;
             it && rc == 0 && it < list->data.sequence.items.top; it++)
            rc = parse_policy(&d, ydoc_node(&d, *it), es);
        ydoc_release(&d);
    }
    if (rc) {
        escalations_free(&es);
        return rc;
    }
    *out = es;
    return 0;
}

void escalations_free(struct escalations **esp)
{
    struct escalations *es = *esp;
    if (!es)
        return;
    for (size_t i = 0; i < es->n; i++)
        query_matchers_free(&es->policies[i].matchers);
    free(es);
    *esp = NULL;
}

int escalations_check_receivers(const struct escalations *es,
                                bool (*known)(const void *arg, const char *name), const void *arg,
                                struct err *e)
{
    for (size_t i = 0; i < es->n; i++)
        for (size_t k = 0; k < es->policies[i].nsteps; k++) {
            const struct escalation_step *st = &es->policies[i].steps[k];
            if (st->receiver[0] && !known(arg, st->receiver))
                return err_set(e, E_INVALID,
                               "%s:%d: escalation %s: receiver '%s' is not one of "
                               "alerting.receivers",
                               es->file, st->line, es->policies[i].name, st->receiver);
        }
    return 0;
}

bool escalations_due(const struct escalations *es, json_t *labels, int64_t notified_ms,
                     int64_t now_ms, int level, const struct escalation_step **step,
                     int *step_level)
{
    for (size_t i = 0; i < es->n; i++) {
        const struct policy *p = &es->policies[i];
        if (!query_matchers_match(p->matchers, labels))
            continue;
        if (level >= (int)p->nsteps || now_ms - notified_ms < p->steps[level].after_ms)
            return false;
        *step = &p->steps[level];
        *step_level = level + 1;
        return true;
    }
    return false;
}
