/*
 * Job definitions (defs.h): read from the config file, every mistake named by file and line.
 */
#include "jobs/defs.h"
#include "core/ydoc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFINITIONS_MAX 1000
#define AUTO_SCHEDULE "@every 1d"
#define AUTO_GRACE_MS (3600 * 1000LL)
#define BUILTIN_RETRIES 3

const char *job_kind_name(enum job_kind k)
{
    return k == JOB_BUILTIN ? "builtin" : k == JOB_COMMAND ? "command" : "external";
}

bool job_def_scheduled(const struct job_def *d)
{
    return d->schedule[0] && strcmp(d->schedule, "off") != 0;
}

bool job_name_ok(const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p; p++, n++)
        if (!(isalnum((unsigned char)*p) || strchr("_.-", *p)))
            return false;
    return n >= 1 && n <= JOB_NAME_MAX;
}

static void defaults(struct job_def *d)
{
    memset(d, 0, sizeof *d);
    d->overlap = OVERLAP_SKIP;
    d->alert_after = 1;
}

int job_def_builtin(struct job_def *d, const struct jobs_builtin *b, struct err *e)
{
    defaults(d);
    snprintf(d->name, sizeof d->name, "%s", b->name);
    d->kind = JOB_BUILTIN;
    d->builtin = b;
    d->retries = BUILTIN_RETRIES;
    if (b->every_ms > 0) {
        d->cron.every_ms = b->every_ms;
        snprintf(d->schedule, sizeof d->schedule, "@every %lldms", (long long)b->every_ms);
        return 0;
    }
    if (!b->schedule || strcmp(b->schedule, "off") == 0 || !*b->schedule) {
        snprintf(d->schedule, sizeof d->schedule, "off"); /* shown so; runs when asked */
        return 0;
    }
    snprintf(d->schedule, sizeof d->schedule, "%s", b->schedule);
    struct err ce;
    if (cron_parse(&d->cron, b->schedule, &ce) != 0)
        return err_set(e, E_INVALID, "jobs.%s: %s", b->name, ce.msg);
    return 0;
}

void job_def_auto(struct job_def *d, const char *name)
{
    defaults(d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->kind = JOB_EXTERNAL;
    snprintf(d->schedule, sizeof d->schedule, "%s", AUTO_SCHEDULE);
    struct err ignored;
    cron_parse(&d->cron, AUTO_SCHEDULE, &ignored);
    d->grace_ms = AUTO_GRACE_MS;
    d->auto_created = true;
}

static int want_duration(struct ydoc *y, const yaml_node_t *v, const char *key, int64_t *ms)
{
    const char *s = ydoc_text(v);
    if (!s || !time_parse_duration(s, ms) || *ms < 0)
        return ydoc_fail(y, v, "%s: expected a duration like 30s, 5m, 1h", key);
    return 0;
}

static int want_count(struct ydoc *y, const yaml_node_t *v, const char *key, int lo, int hi,
                      int *out)
{
    const char *s = ydoc_text(v);
    char *end;
    errno = 0;
    long n = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || n < lo || n > hi)
        return ydoc_fail(y, v, "%s: expected a whole number from %d to %d", key, lo, hi);
    *out = (int)n;
    return 0;
}

static int parse_one(struct ydoc *y, const yaml_node_t *n, struct job_def *d)
{
    defaults(d);
    if (n->type != YAML_MAPPING_NODE)
        return ydoc_fail(y, n,
                         "a job definition must be a map (name, command or external, "
                         "schedule, ...)");
    bool external = false, has_timeout = false;
    const yaml_node_t *jitter = NULL;
    for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
        const char *key = ydoc_text(ydoc_node(y, kv->key));
        const yaml_node_t *v = ydoc_node(y, kv->value);
        const char *t = ydoc_text(v);
        int rc = 0;
        if (!key) {
            rc = ydoc_fail(y, v, "a job's keys must be text");
        } else if (strcmp(key, "name") == 0) {
            if (!t || !job_name_ok(t))
                rc = ydoc_fail(y, v, "name: expected 1 to %d letters, digits, _ . or -",
                               JOB_NAME_MAX);
            else
                snprintf(d->name, sizeof d->name, "%s", t);
        } else if (strcmp(key, "command") == 0) {
            if (!t || !*t || strlen(t) >= sizeof d->command)
                rc = ydoc_fail(y, v, "command: expected a command line of at most %d bytes",
                               JOB_COMMAND_MAX - 1);
            else
                snprintf(d->command, sizeof d->command, "%s", t);
        } else if (strcmp(key, "external") == 0) {
            if (!t || (strcmp(t, "true") != 0 && strcmp(t, "false") != 0))
                rc = ydoc_fail(y, v, "external: expected true or false");
            external = t && t[0] == 't';
        } else if (strcmp(key, "schedule") == 0) {
            struct err ce;
            if (!t || strlen(t) >= sizeof d->schedule)
                rc = ydoc_fail(y, v, "schedule: expected a cron expression or @every DURATION");
            else if (cron_parse(&d->cron, t, &ce) != 0)
                rc = ydoc_fail(y, v, "schedule: %s", ce.msg);
            else
                snprintf(d->schedule, sizeof d->schedule, "%s", t);
        } else if (strcmp(key, "timeout") == 0) {
            rc = want_duration(y, v, key, &d->timeout_ms);
            has_timeout = true;
        } else if (strcmp(key, "grace") == 0) {
            rc = want_duration(y, v, key, &d->grace_ms);
        } else if (strcmp(key, "jitter") == 0) {
            rc = want_duration(y, v, key, &d->jitter_ms);
            jitter = v;
        } else if (strcmp(key, "overlap") == 0) {
            if (t && strcmp(t, "skip") == 0)
                d->overlap = OVERLAP_SKIP;
            else if (t && strcmp(t, "queue") == 0)
                d->overlap = OVERLAP_QUEUE;
            else
                rc = ydoc_fail(y, v, "overlap: expected skip or queue");
        } else if (strcmp(key, "retries") == 0) {
            rc = want_count(y, v, key, 0, 10, &d->retries);
        } else if (strcmp(key, "alert_after") == 0) {
            rc = want_count(y, v, key, 1, 1000, &d->alert_after);
        } else {
            rc = ydoc_fail(y, v,
                           "unknown key '%s' in a job (name, command, external, schedule, "
                           "timeout, grace, jitter, overlap, retries, alert_after)",
                           key);
        }
        if (rc)
            return rc;
    }
    if (!d->name[0])
        return ydoc_fail(y, n, "a job needs a name");
    if (external == (d->command[0] != '\0'))
        return ydoc_fail(y, n,
                         "job %s: give either command (opsdb runs it) or external: true "
                         "(it reports by pings)",
                         d->name);
    d->kind = external ? JOB_EXTERNAL : JOB_COMMAND;
    if (d->kind == JOB_COMMAND && !d->schedule[0])
        return ydoc_fail(y, n, "job %s: a command job needs a schedule", d->name);
    if (d->kind == JOB_COMMAND && !has_timeout)
        d->timeout_ms = 3600 * 1000LL;
    if (d->kind == JOB_EXTERNAL && d->jitter_ms)
        return ydoc_fail(y, jitter, "job %s: jitter is for jobs opsdb starts", d->name);
    return 0;
}

int job_defs_load(const char *config_path, const char *const *reserved, size_t nreserved,
                  struct job_def **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    if (!config_path || !*config_path)
        return 0;
    struct ydoc y;
    int rc = ydoc_load_file(&y, config_path, e);
    const yaml_node_t *list =
        rc == 0 ? ydoc_map_get(&y, ydoc_map_get(&y, ydoc_root(&y), "jobs"), "definitions") : NULL;
    if (list && list->type != YAML_SEQUENCE_NODE)
        rc = ydoc_fail(&y, list, "jobs.definitions: expected a list of jobs");
    size_t count = list && rc == 0
                       ? (size_t)(list->data.sequence.items.top - list->data.sequence.items.start)
                       : 0;
    if (count > DEFINITIONS_MAX)
        rc = ydoc_fail(&y, list, "jobs.definitions: more than %d jobs", DEFINITIONS_MAX);
    struct job_def *defs = count ? calloc(count, sizeof *defs) : NULL;
    if (count && !defs)
        rc = err_set(e, E_NOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < count; i++) {
        const yaml_node_t *item = ydoc_node(&y, list->data.sequence.items.start[i]);
        rc = parse_one(&y, item, &defs[i]);
        for (size_t k = 0; rc == 0 && k < i; k++)
            if (strcmp(defs[k].name, defs[i].name) == 0)
                rc = ydoc_fail(&y, item, "job %s: the name is given twice", defs[i].name);
        for (size_t k = 0; rc == 0 && k < nreserved; k++)
            if (strcmp(reserved[k], defs[i].name) == 0)
                rc = ydoc_fail(&y, item, "job %s: the name of a builtin job", defs[i].name);
    }
    ydoc_release(&y);
    if (rc) {
        free(defs);
        return rc;
    }
    *out = defs;
    *n = count;
    return 0;
}
