/*
 * Helpers of the parser tests: a parse context from the default configuration, a batch and its
 * rejections, and one call per format.
 */
#ifndef OPSDB_TEST_UNIT_INGEST_H
#define OPSDB_TEST_UNIT_INGEST_H

#include "unit.h"

#include "ingest/ingest.h"

struct parse {
    struct config cfg;
    struct ingest_ctx ctx;
    struct batch b;
    struct rejects r;
    int rc;
};

/* A context for table with the default configuration and precision p; max_rows 0 = default. */
static inline struct parse *parse_new(const char *table, enum time_precision p, size_t max_rows)
{
    struct parse *t = calloc(1, sizeof *t);
    assert_non_null(t);
    config_defaults(&t->cfg);
    if (max_rows)
        t->cfg.max_rows_per_request = (int64_t)max_rows;
    ingest_ctx_init(&t->ctx, &t->cfg, NULL, p);
    const struct table *tab = schema_table(table);
    assert_non_null(tab);
    batch_init(&t->b, tab);
    rejects_init(&t->r, "row");
    return t;
}

/* Starts over with an empty batch and no rejections (same context). */
static inline void parse_reset(struct parse *t)
{
    const struct table *tab = t->b.table;
    batch_release(&t->b);
    batch_init(&t->b, tab);
    rejects_init(&t->r, "row");
}

static inline void parse_free(struct parse **tp)
{
    batch_release(&(*tp)->b);
    free(*tp);
    *tp = NULL;
}

/* Fails the test printing the rejections unless rc is 0 and nothing was rejected. */
#define assert_parsed(t)                                                                           \
    do {                                                                                           \
        assert_no_rejects(&(t)->r);                                                                \
        assert_int_equal((t)->rc, 0);                                                              \
    } while (0)

/* Asserts one rejection at row (line) index row whose reason contains needle. */
#define assert_reject_at(t, row_, needle)                                                          \
    do {                                                                                           \
        assert_rejected(&(t)->r, (needle));                                                        \
        int k_ = ut_find_reject(&(t)->r, (needle));                                                \
        if ((t)->r.items[k_].row != (size_t)(row_))                                                \
            fail_msg("'%s' was reported at %zu, expected %zu", (t)->r.items[k_].reason,            \
                     (t)->r.items[k_].row, (size_t)(row_));                                        \
    } while (0)

#endif
