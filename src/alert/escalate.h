/*
 * Private to alert/: escalation policies (escalate.c) — ordered steps that act on a firing
 * alert nobody acknowledged: after a time, notify another receiver and/or raise the severity.
 * Acknowledging the alert stops them.
 *
 *   alerting:
 *     escalations:
 *       - name: critical-oncall
 *         matchers: "severity=critical"      # the first policy whose matchers match applies
 *         steps:
 *           - {after: 15m, receiver: oncall}
 *           - {after: 1h, receiver: manager, severity: page}
 */
#ifndef OPSDB_ALERT_ESCALATE_H
#define OPSDB_ALERT_ESCALATE_H

#include "core/core.h"

#include <jansson.h>

#define ESCALATION_STEPS_MAX 8

struct escalation_step {
    int64_t after_ms;   /* since the alert was first notified as firing */
    char receiver[128]; /* "" = through the routing tree */
    char severity[16];  /* "" = unchanged */
    int line;           /* of the step in the config file */
};

struct escalations;

/* Reads alerting.escalations from the YAML file at config_path ("" or none: no policy). Errors
 * name the file and line. */
int escalations_new(struct escalations **out, const char *config_path, struct err *e);
void escalations_free(struct escalations **es);
/* E_INVALID "file:line: ..." for the first step whose receiver known(arg, name) does not know:
 * a typo there would otherwise only show when the step is due, as a dropped notification. */
int escalations_check_receivers(const struct escalations *es,
                                bool (*known)(const void *arg, const char *name), const void *arg,
                                struct err *e);
/* The step an alert with labels, notified as firing since notified_ms, has reached at now_ms beyond
 * level (0 = none yet): the next one due, as *step and its level (1-based); false when none is due.
 */
bool escalations_due(const struct escalations *es, json_t *labels, int64_t notified_ms,
                     int64_t now_ms, int level, const struct escalation_step **step,
                     int *step_level);

#endif
