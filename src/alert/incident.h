/*
 * Private to alert/: correlation of alerts into incidents (incident.c). Alerts that fire on the
 * same host, component or pipeline within alerting.correlation_window of the incident's last
 * alert are one incident; its earliest alert is the probable cause. An incident resolves when
 * its last alert resolves, and is kept a day after that for the API.
 *
 * Not thread safe: the engine calls it under its lock. Incidents live in memory and are kept in
 * the incidents table: the engine writes the rows of those that changed (incidents_take_changed)
 * and loads the recent ones at start (incidents_load), so a restart goes on with them.
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
/* The open incident alert_id fires in, or NULL. */
const char *incidents_of_alert(const struct incidents *in, const char *alert_id);
/* Adds to b (a batch of the incidents table) one row for each incident that changed since the
 * last call, stamped now_ms. */
void incidents_take_changed(struct incidents *in, struct batch *b, int64_t now_ms);
/* Takes up an incident from a row of the incidents table (its columns as text and numbers:
 * opened/resolved/last in epoch ms, resolved 0 while open, keys and alerts as the API gives
 * them). E_INVALID for a row it cannot read. */
int incidents_load(struct incidents *in, const char *id, int64_t opened_ms, int64_t resolved_ms,
                   int64_t last_ms, const char *keys_json, const char *alerts_json, struct err *e);
/* The incidents as a JSON array (a new reference): id, state, opened_at, resolved_at, keys
 * ({host: [...], component: [...], pipeline: [...]}), probable_cause ({alert_id, rule,
 * fired_at}), alerts ([{alert_id, rule, fired_at, resolved_at}]). */
json_t *incidents_json(struct incidents *in, int64_t now_ms);

#endif
