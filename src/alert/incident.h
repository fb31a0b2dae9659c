/*
 * Private to alert/: correlation of alerts into incidents (incident.c). Alerts that fire on the
 * same host, component or pipeline within alerting.correlation_window of the incident's last
 * alert are one incident; its earliest alert is the probable cause. An incident resolves when
 * its last alert resolves, and is kept a day after that for the API.
 *
 * Not thread safe: the engine calls it under its lock. Incidents live in memory (a restart
 * starts afresh; alert_history keeps the alerts themselves).
 */
#ifndef OPSDB_ALERT_INCIDENT_H
#define OPSDB_ALERT_INCIDENT_H

#include "core/core.h"

#include <jansson.h>

struct incidents;

struct incidents *incidents_new(int64_t window_ms);
void incidents_free(struct incidents **in);
/* Joins a firing alert to the open incident that shares its host, component or pipeline label
 * and saw an alert within the window, or opens one; returns the incident's id (valid until the
 * next call). NULL when memory is short. */
const char *incidents_join(struct incidents *in, const char *alert_id, const char *rule,
                           json_t *labels, int64_t now_ms);
/* The alert resolved: an incident whose alerts all resolved is resolved. */
void incidents_resolve(struct incidents *in, const char *alert_id, int64_t now_ms);
/* The incidents as a JSON array (a new reference): id, state, opened_at, resolved_at, keys
 * ({host: [...], component: [...], pipeline: [...]}), probable_cause ({alert_id, rule,
 * fired_at}), alerts ([{alert_id, rule, fired_at, resolved_at}]). */
json_t *incidents_json(struct incidents *in, int64_t now_ms);

#endif
