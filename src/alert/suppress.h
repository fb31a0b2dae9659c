/*
 * Private to alert/: what keeps a firing alert from being notified (suppress.c) — silences
 * (label matchers with a start and an end, made over the API and kept in the silences table),
 * maintenance windows (one-off or weekly, from the config), and inhibition rules (a firing
 * alert that matches a source suppresses the alerts that match a target and share the `equal`
 * labels; with `dependencies`, also those on the components that depend on the source's).
 * Suppressed alerts are still recorded, with the reason.
 *
 * Not thread safe: the engine calls it under its lock.
 */
#ifndef OPSDB_ALERT_SUPPRESS_H
#define OPSDB_ALERT_SUPPRESS_H

#include "alert/alert.h"

#include <jansson.h>

struct suppressor;

/* Reads alerting.inhibit_rules, alerting.maintenance and alerting.dependencies from the YAML
 * file at config_path ("" or none: nothing but silences). Errors name the file and line. */
int suppressor_new(struct suppressor **out, const char *config_path, struct err *e);
void suppressor_free(struct suppressor **s);

/* Adds a silence or replaces the one with its id. E_INVALID for matchers that do not parse
 * (naming them) or an end before the start; E_LIMIT past SILENCES_MAX. */
#define SILENCES_MAX 10000
int suppressor_put_silence(struct suppressor *s, const struct alert_silence *si, struct err *e);
/* The silences as JSON objects {"id", "matchers", "starts_at", "ends_at", "created_by",
 * "comment", "state": "active"|"pending"|"expired"} in a JSON array. */
void suppressor_silences_json(const struct suppressor *s, int64_t now_ms, struct buf *out);
const struct alert_silence *suppressor_silence(const struct suppressor *s, const char *id);
/* The i-th silence held, or NULL past the last. */
const struct alert_silence *suppressor_silence_at(const struct suppressor *s, size_t i);

/* Whether an alert with labels is suppressed at now_ms; firing[] are the labels of the alerts
 * firing now (for inhibition; an alert does not inhibit itself). why says by what. */
bool suppressor_check(const struct suppressor *s, json_t *labels, int64_t now_ms,
                      json_t *const *firing, size_t nfiring, char *why, size_t why_size);

#endif
