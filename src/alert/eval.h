/*
 * Private to alert/: one evaluation of one rule (eval.c) — what the data says now, as label
 * sets with a value, before any state: the engine decides what is pending, firing or resolved.
 */
#ifndef OPSDB_ALERT_EVAL_H
#define OPSDB_ALERT_EVAL_H

#include "alert/alert.h"

/* One label set the rule's query returned. */
struct eval_sample {
    char *labels_json; /* the data's labels: a JSON object of text values, keys sorted */
    double value;
    bool has_value; /* false: the row had no (numeric) value */
};

struct eval_result {
    struct eval_sample *samples;
    size_t n, cap;
};

/* Runs rule r over the window that ends at now_ms (inclusive) and appends a sample per series
 * (system_metrics), per `by` group (event tables) or per row (SQL rules). out must be zeroed or
 * released before. E_INVALID when the rule's query is refused (an SQL rule that writes, a column
 * that is gone), E_LIMIT past the query time limit, E_STORE, E_NOMEM. */
int eval_rule(struct store *s, const struct config *cfg, const struct alert_rule *r, int64_t now_ms,
              struct eval_result *out, struct err *e);
void eval_result_release(struct eval_result *res);
/* Whether value compares with threshold as op says. */
bool eval_compare(enum alert_op op, double value, double threshold);

#endif
