/*
 * SQL functions over latency sketches (sqlite_sketch.h): a sketch blob per rollup bucket is a
 * few hundred bytes, and merging blobs gives p50/p95/p99 over any window within 1% without
 * keeping or rescanning the raw latencies. The functions are thin: parsing, merging and the
 * percentile are core/sketch.c's; here are only SQL types, NULLs and error messages.
 */
#include "store/sqlite_sketch.h"

#include "core/sketch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* The state of the sketch() and sketch_merge() aggregates. */
struct sketch_acc {
    struct sketch *sketch; /* NULL until the first non-NULL argument */
    bool failed;           /* an error is reported: final must not set a result over it */
};

/* Reports "<function>: <message>" as the statement's error. */
static void fail(sqlite3_context *ctx, const char *function, const char *msg)
{
    char text[640]; /* a struct err message and the function name */
    snprintf(text, sizeof text, "%s: %s", function, msg);
    sqlite3_result_error(ctx, text, -1);
}

/* The aggregate's state with its sketch allocated, or NULL with the error reported. */
static struct sketch_acc *acc_get(sqlite3_context *ctx)
{
    struct sketch_acc *acc = sqlite3_aggregate_context(ctx, sizeof *acc);
    if (!acc) {
        sqlite3_result_error_nomem(ctx);
        return NULL;
    }
    if (acc->failed)
        return NULL;
    if (!acc->sketch && !(acc->sketch = sketch_new())) {
        acc->failed = true;
        sqlite3_result_error_nomem(ctx);
        return NULL;
    }
    return acc;
}

/* Sets the result to s's blob; the blob's malloc'd bytes pass to SQLite, which frees them. */
static void result_sketch(sqlite3_context *ctx, const struct sketch *s)
{
    struct buf b;
    buf_init(&b, SKETCH_BLOB_MAX_BYTES);
    if (sketch_serialize(s, &b) != 0) {
        buf_release(&b);
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sqlite3_result_blob64(ctx, b.data, b.len, free);
}

static const char *type_name(int type)
{
    switch (type) {
    case SQLITE_INTEGER:
        return "an integer";
    case SQLITE_FLOAT:
        return "a real";
    case SQLITE_TEXT:
        return "text";
    case SQLITE_BLOB:
        return "a blob";
    default:
        return "NULL";
    }
}

static void sketch_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    int type = sqlite3_value_numeric_type(argv[0]);
    if (type == SQLITE_NULL)
        return;
    struct sketch_acc *acc = acc_get(ctx);
    if (!acc)
        return;
    if (type != SQLITE_INTEGER && type != SQLITE_FLOAT) {
        char msg[128];
        snprintf(msg, sizeof msg, "x is %s, not a latency; give numbers >= 0", type_name(type));
        fail(ctx, "sketch", msg);
        acc->failed = true;
        return;
    }
    uint64_t weight = 1;
    if (argc == 2 && sqlite3_value_type(argv[1]) != SQLITE_NULL) {
        if (sqlite3_value_numeric_type(argv[1]) != SQLITE_INTEGER ||
            sqlite3_value_int64(argv[1]) < 0) {
            fail(ctx, "sketch", "the weight must be a whole number >= 0 (a count)");
            acc->failed = true;
            return;
        }
        weight = (uint64_t)sqlite3_value_int64(argv[1]);
        if (weight == 0)
            return;
    }
    struct err e;
    err_clear(&e);
    if (sketch_add(acc->sketch, sqlite3_value_double(argv[0]), weight, &e) != 0) {
        sqlite3_result_error(ctx, e.msg, -1); /* already says "sketch: " */
        acc->failed = true;
    }
}

static void merge_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    int type = sqlite3_value_type(argv[0]);
    if (type == SQLITE_NULL)
        return;
    struct sketch_acc *acc = acc_get(ctx);
    if (!acc)
        return;
    struct err e;
    err_clear(&e);
    if (type != SQLITE_BLOB) {
        snprintf(e.msg, sizeof e.msg, "the argument is %s, not a blob made by sketch()",
                 type_name(type));
        e.code = E_INVALID;
    } else {
        const void *blob = sqlite3_value_blob(argv[0]);
        size_t len = (size_t)sqlite3_value_bytes(argv[0]);
        sketch_merge_blob(acc->sketch, blob, len, &e);
    }
    if (e.code != 0) {
        fail(ctx, "sketch_merge", e.msg);
        acc->failed = true;
    }
}

/* Shared by both aggregates: the merged sketch, NULL when every argument was NULL. */
static void acc_final(sqlite3_context *ctx)
{
    struct sketch_acc *acc = sqlite3_aggregate_context(ctx, 0);
    if (!acc)
        return;
    if (!acc->failed && acc->sketch)
        result_sketch(ctx, acc->sketch);
    sketch_free(&acc->sketch);
}

/* The sketch in v for a scalar function (caller frees), or NULL with the error reported. */
static struct sketch *sketch_from_value(sqlite3_context *ctx, const char *function,
                                        sqlite3_value *v)
{
    if (sqlite3_value_type(v) != SQLITE_BLOB) {
        char msg[128];
        snprintf(msg, sizeof msg, "the argument is %s, not a blob made by sketch()",
                 type_name(sqlite3_value_type(v)));
        fail(ctx, function, msg);
        return NULL;
    }
    struct sketch *s = sketch_new();
    if (!s) {
        sqlite3_result_error_nomem(ctx);
        return NULL;
    }
    struct err e;
    err_clear(&e);
    const void *blob = sqlite3_value_blob(v);
    if (sketch_merge_blob(s, blob, (size_t)sqlite3_value_bytes(v), &e) != 0) {
        fail(ctx, function, e.msg);
        sketch_free(&s);
    }
    return s;
}

static void percentile_func(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL)
        return;
    int ptype = sqlite3_value_numeric_type(argv[1]);
    double p = sqlite3_value_double(argv[1]);
    if ((ptype != SQLITE_INTEGER && ptype != SQLITE_FLOAT) || !(p >= 0 && p <= 100)) {
        fail(ctx, "sketch_percentile", "p must be a number between 0 and 100");
        return;
    }
    struct sketch *s = sketch_from_value(ctx, "sketch_percentile", argv[0]);
    if (!s)
        return;
    double r = sketch_percentile(s, p);
    if (!isnan(r))
        sqlite3_result_double(ctx, r); /* an empty sketch has no percentile: NULL */
    sketch_free(&s);
}

/* sketch_combine(a, b): the merge of two sketch blobs, for upserts of rollup buckets; a NULL
 * side is an empty sketch. */
static void combine_func(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    bool a_null = sqlite3_value_type(argv[0]) == SQLITE_NULL;
    bool b_null = sqlite3_value_type(argv[1]) == SQLITE_NULL;
    if (a_null || b_null) {
        if (!(a_null && b_null))
            sqlite3_result_value(ctx, argv[a_null ? 1 : 0]);
        return;
    }
    struct sketch *s = sketch_from_value(ctx, "sketch_combine", argv[0]);
    if (!s)
        return;
    struct err e;
    err_clear(&e);
    const void *blob = sqlite3_value_blob(argv[1]);
    if (sqlite3_value_type(argv[1]) != SQLITE_BLOB)
        fail(ctx, "sketch_combine", "the second argument is not a blob made by sketch()");
    else if (sketch_merge_blob(s, blob, (size_t)sqlite3_value_bytes(argv[1]), &e) != 0)
        fail(ctx, "sketch_combine", e.msg);
    else
        result_sketch(ctx, s);
    sketch_free(&s);
}

static void count_func(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
        return;
    struct sketch *s = sketch_from_value(ctx, "sketch_count", argv[0]);
    if (!s)
        return;
    uint64_t n = sketch_count(s);
    if (n > INT64_MAX)
        fail(ctx, "sketch_count", "the count is past the 64-bit integer range");
    else
        sqlite3_result_int64(ctx, (sqlite3_int64)n);
    sketch_free(&s);
}

static const struct {
    const char *name;
    int nargs;
    void (*scalar)(sqlite3_context *, int, sqlite3_value **);
    void (*step)(sqlite3_context *, int, sqlite3_value **);
    void (*final)(sqlite3_context *);
} functions[] = {
    {"sketch", 1, NULL, sketch_step, acc_final},
    {"sketch", 2, NULL, sketch_step, acc_final},
    {"sketch_combine", 2, combine_func, NULL, NULL},
    {"sketch_merge", 1, NULL, merge_step, acc_final},
    {"sketch_percentile", 2, percentile_func, NULL, NULL},
    {"sketch_count", 1, count_func, NULL, NULL},
};

int sqlite_sketch_register(sqlite3 *db)
{
    int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
    for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
        int rc =
            sqlite3_create_function(db, functions[i].name, functions[i].nargs, flags, NULL,
                                    functions[i].scalar, functions[i].step, functions[i].final);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}
