/*
 * SQL functions and guards of every SQLite connection opsdb opens:
 *   percentile(x, p [, weight])  the p-th percentile (0..100) of x, linearly interpolated; SQLite
 *                                has no percentile aggregate and the views need p50/p95/p99
 *   opsdb_param(name, default)   a view parameter set for this query, or the default
 *   opsdb_now_ms()               the query's reference time (parameter now_ms, else the clock)
 *   regexp(re, text)             X REGEXP Y: whether the POSIX extended regex matches the whole
 *                                text (as label matchers do); NULL text is the empty string
 * and the authorizer and progress handler that make user SQL read-only and time-bounded.
 */
#include "store/sqlite_int.h"
#include "store/sqlite_sketch.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct percentile_acc {
    double *values;
    double *weights; /* NULL while every weight is 1 */
    size_t n, cap;
    double p;
    bool p_set, bad_p;
};

static void percentile_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct percentile_acc *acc = sqlite3_aggregate_context(ctx, sizeof *acc);
    if (!acc)
        return;
    if (!acc->p_set) {
        acc->p = sqlite3_value_double(argv[1]);
        acc->p_set = true;
        acc->bad_p = !(acc->p >= 0 && acc->p <= 100);
    }
    int t = sqlite3_value_numeric_type(argv[0]);
    if (t != SQLITE_INTEGER && t != SQLITE_FLOAT)
        return; /* NULLs and text are ignored, as by avg() */
    double w = argc > 2 ? sqlite3_value_double(argv[2]) : 1.0;
    if (!(w > 0))
        return;
    if (acc->n == acc->cap) {
        size_t cap = acc->cap ? acc->cap * 2 : 256;
        double *v = sqlite3_realloc64(acc->values, cap * sizeof *v);
        if (!v) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
        acc->values = v;
        if (acc->weights) {
            double *wv = sqlite3_realloc64(acc->weights, cap * sizeof *wv);
            if (!wv) {
                sqlite3_result_error_nomem(ctx);
                return;
            }
            acc->weights = wv;
        }
        acc->cap = cap;
    }
    if (w != 1.0 && !acc->weights) {
        acc->weights = sqlite3_malloc64(acc->cap * sizeof *acc->weights);
        if (!acc->weights) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
        for (size_t i = 0; i < acc->n; i++)
            acc->weights[i] = 1.0;
    }
    acc->values[acc->n] = sqlite3_value_double(argv[0]);
    if (acc->weights)
        acc->weights[acc->n] = w;
    acc->n++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct weighted {
    double v, w;
};

static int cmp_weighted(const void *a, const void *b)
{
    return cmp_double(&((const struct weighted *)a)->v, &((const struct weighted *)b)->v);
}

/* Weighted: each value stands for w observations; the rank is taken over the expanded list. */
static double weighted_percentile(struct percentile_acc *acc)
{
    struct weighted *wv = sqlite3_malloc64(acc->n * sizeof *wv);
    if (!wv)
        return NAN;
    double total = 0;
    for (size_t i = 0; i < acc->n; i++) {
        wv[i].v = acc->values[i];
        wv[i].w = acc->weights[i];
        total += wv[i].w;
    }
    qsort(wv, acc->n, sizeof *wv, cmp_weighted);
    double rank = acc->p / 100.0 * (total - 1); /* 0-based rank in the expanded list */
    double seen = 0, result = wv[acc->n - 1].v;
    for (size_t i = 0; i < acc->n; i++) {
        if (rank < seen + wv[i].w) {
            double frac = rank - floor(rank);
            bool next_in_same = floor(rank) + 1 < seen + wv[i].w;
            double next = next_in_same || i + 1 == acc->n ? wv[i].v : wv[i + 1].v;
            result = wv[i].v + (next - wv[i].v) * frac;
            break;
        }
        seen += wv[i].w;
    }
    sqlite3_free(wv);
    return result;
}

static void percentile_final(sqlite3_context *ctx)
{
    struct percentile_acc *acc = sqlite3_aggregate_context(ctx, 0);
    if (!acc)
        return; /* no rows: NULL */
    if (acc->bad_p) {
        sqlite3_result_error(ctx, "percentile: p must be between 0 and 100", -1);
    } else if (acc->n > 0) {
        double r;
        if (acc->weights) {
            r = weighted_percentile(acc);
        } else {
            qsort(acc->values, acc->n, sizeof(double), cmp_double);
            double rank = acc->p / 100.0 * (double)(acc->n - 1);
            size_t lo = (size_t)floor(rank);
            size_t hi = lo + 1 < acc->n ? lo + 1 : lo;
            r = acc->values[lo] + (acc->values[hi] - acc->values[lo]) * (rank - (double)lo);
        }
        sqlite3_result_double(ctx, r);
    }
    sqlite3_free(acc->values);
    sqlite3_free(acc->weights);
}

static const struct store_param *find_param(struct sqlite_conn *c, const char *name)
{
    /* later entries (the query's) override earlier ones (the connection defaults) */
    for (size_t i = c->nparams; i-- > 0;)
        if (strcmp(c->params[i].name, name) == 0)
            return &c->params[i];
    return NULL;
}

static void param_func(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    struct sqlite_conn *c = sqlite3_user_data(ctx);
    const char *name = (const char *)sqlite3_value_text(argv[0]);
    const struct store_param *p = name ? find_param(c, name) : NULL;
    if (!p)
        sqlite3_result_value(ctx, argv[1]);
    else if (p->is_text)
        sqlite3_result_text(ctx, p->text, -1, SQLITE_TRANSIENT);
    else if (p->number == floor(p->number) && fabs(p->number) < 9e15)
        sqlite3_result_int64(ctx, (sqlite3_int64)p->number);
    else
        sqlite3_result_double(ctx, p->number);
}

static void now_func(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct sqlite_conn *c = sqlite3_user_data(ctx);
    const struct store_param *p = find_param(c, "now_ms");
    sqlite3_result_int64(ctx, p && !p->is_text ? (sqlite3_int64)p->number : time_now_ms());
}

static int progress_handler(void *arg)
{
    struct sqlite_conn *c = arg;
    return c->deadline_ms && time_now_ms() > c->deadline_ms;
}

/* Whether table is one the connection hides from untrusted SQL: a name of the list, or an
 * internal table of one (<name>_p20260101, <name>_p20260101_packed). */
static bool hidden(struct sqlite_conn *c, const char *table)
{
    for (const char *const *h = c->hidden; h && *h && table; h++) {
        size_t n = strlen(*h);
        if (strncmp(table, *h, n) == 0 && (table[n] == '\0' || table[n] == '_')) {
            snprintf(c->denied_table, sizeof c->denied_table, "%s", *h);
            c->denied = "reading a table your role may not read";
            return true;
        }
    }
    return false;
}

/* Columns untrusted SQL reads as NULL, whatever the caller's role: hashes of passwords and
 * token secrets are of no use to a query and would be worth cracking offline. */
static const struct {
    const char *table, *column;
} secret_columns[] = {
    {"users", "password_hash"},
    {"api_tokens", "secret_hash"},
};

static bool secret(const char *table, const char *column)
{
    for (size_t i = 0; table && column && i < sizeof secret_columns / sizeof secret_columns[0]; i++)
        if (strcmp(table, secret_columns[i].table) == 0 &&
            strcmp(column, secret_columns[i].column) == 0)
            return true;
    return false;
}

/* Only reads, in the main database, with no way out to files or extensions. Pragmas that only
 * read the schema are allowed so tools can introspect. */
static int authorizer(void *arg, int action, const char *a1, const char *a2, const char *db,
                      const char *trigger)
{
    (void)db;
    (void)trigger;
    struct sqlite_conn *c = arg;
    if (!c->untrusted)
        return SQLITE_OK;
    static const char *const read_pragmas[] = {"table_info", "table_xinfo", "index_list",
                                               "index_info", "table_list",  "foreign_key_list",
                                               NULL};
    static const char *const denied_functions[] = {"load_extension", "readfile",       "writefile",
                                                   "edit",           "fts3_tokenizer", NULL};
    switch (action) {
    case SQLITE_READ:
        return hidden(c, a1) ? SQLITE_DENY : secret(a1, a2) ? SQLITE_IGNORE : SQLITE_OK;
    case SQLITE_SELECT:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        for (int i = 0; denied_functions[i]; i++)
            if (a2 && strcmp(a2, denied_functions[i]) == 0) {
                c->denied = "this function";
                return SQLITE_DENY;
            }
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        for (int i = 0; read_pragmas[i]; i++)
            if (a1 && strcmp(a1, read_pragmas[i]) == 0)
                return SQLITE_OK;
        c->denied = "PRAGMA";
        return SQLITE_DENY;
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        c->denied = "ATTACH/DETACH";
        return SQLITE_DENY;
    case SQLITE_UPDATE:
        /* table-valued pragmas (pragma_table_info) load the schema through an UPDATE check on
         * sqlite_master; the connection is read-only, so nothing can be written either way */
        if (a1 && (strcmp(a1, "sqlite_master") == 0 || strcmp(a1, "sqlite_schema") == 0))
            return SQLITE_OK;
        c->denied = "writing or changing the database";
        return SQLITE_DENY;
    case SQLITE_INSERT:
    case SQLITE_DELETE:
        c->denied = "writing or changing the database";
        return SQLITE_DENY;
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
        c->denied = "transaction control";
        return SQLITE_DENY;
    default:
        c->denied = "writing or changing the database";
        return SQLITE_DENY;
    }
}

static void free_regex(void *re)
{
    regfree(re);
    sqlite3_free(re);
}

/* The pattern is compiled once per statement (kept as the argument's auxiliary data). */
static void regexp_func(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    regex_t *re = sqlite3_get_auxdata(ctx, 0);
    if (!re) {
        const char *pattern = (const char *)sqlite3_value_text(argv[0]);
        if (!pattern) {
            sqlite3_result_null(ctx);
            return;
        }
        char costly[128], refusal[300];
        if (!regex_cost_ok(pattern, costly, sizeof costly)) {
            snprintf(refusal, sizeof refusal,
                     "regexp: '%.100s' is too costly a regular expression: %s", pattern, costly);
            sqlite3_result_error(ctx, refusal, -1);
            return;
        }
        char *anchored = sqlite3_mprintf("^(%s)$", pattern);
        re = sqlite3_malloc(sizeof *re);
        if (!anchored || !re) {
            sqlite3_free(anchored);
            sqlite3_free(re);
            sqlite3_result_error_nomem(ctx);
            return;
        }
        int rc = regcomp(re, anchored, REG_EXTENDED | REG_NOSUB);
        sqlite3_free(anchored);
        if (rc != 0) {
            char why[128], msg[300];
            regerror(rc, re, why, sizeof why);
            sqlite3_free(re);
            snprintf(msg, sizeof msg, "regexp: '%.100s' is not a valid regular expression: %s",
                     pattern, why);
            sqlite3_result_error(ctx, msg, -1);
            return;
        }
        sqlite3_set_auxdata(ctx, 0, re, free_regex);
        re = sqlite3_get_auxdata(ctx, 0); /* SQLite may have freed it already */
        if (!re) {
            sqlite3_result_error_nomem(ctx);
            return;
        }
    }
    const char *text = (const char *)sqlite3_value_text(argv[1]);
    sqlite3_result_int(ctx, regexec(re, text ? text : "", 0, NULL, 0) == 0);
}

int sqlite_register_functions(struct sqlite_conn *c)
{
    int flags = SQLITE_UTF8;
    int rc = sqlite3_create_function(c->db, "regexp", 2, flags | SQLITE_DETERMINISTIC, NULL,
                                     regexp_func, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(c->db, "percentile", 2, flags | SQLITE_DETERMINISTIC, NULL,
                                     NULL, percentile_step, percentile_final);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(c->db, "percentile", 3, flags | SQLITE_DETERMINISTIC, NULL,
                                     NULL, percentile_step, percentile_final);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(c->db, "opsdb_param", 2, flags, c, param_func, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(c->db, "opsdb_now_ms", 0, flags, c, now_func, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite_cold_register(c->db);
    if (rc == SQLITE_OK)
        rc = sqlite_partition_register(c->db);
    if (rc == SQLITE_OK)
        rc = sqlite_packed_register(c->db);
    if (rc == SQLITE_OK)
        rc = sqlite_sketch_register(c->db);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_progress_handler(c->db, 2000, progress_handler, c);
    sqlite3_set_authorizer(c->db, authorizer, c);
    return SQLITE_OK;
}
