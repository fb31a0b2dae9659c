/*
 * core validation: field conversion per column type (field_from_text, field_from_number) and
 * row checks (validate_row): required fields, bounds, allowed sets, lengths, the time horizon,
 * defaults and the derived fingerprint, plus how rejections are collected.
 */
#include "unit.h"

#include <math.h>

struct fixture {
    struct validate_opts opts;
    int retention[16];
    struct arena arena;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++)
        f->retention[i] = t[i].retention_days;
    f->opts.now_ms = time_now_ms();
    f->opts.max_future_ms = 5 * 60 * 1000;
    f->opts.retention_days = f->retention;
    f->opts.precision = PREC_MS;
    f->opts.fingerprints = NULL;
    arena_init(&f->arena);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    arena_release(&f->arena);
    free(f);
    return 0;
}

static const struct column *col(const char *table, const char *name)
{
    const struct table *t = schema_table(table);
    assert_non_null(t);
    int i = schema_column(t, name);
    assert_true(i >= 0);
    return &t->columns[i];
}

/* Converts s for table.column; fails the test if the outcome is not expect_ok. Returns the
 * reason text on failure (static storage). */
static const char *conv(struct arena *a, const char *table, const char *name, const char *s,
                        enum time_precision p, struct value *out, bool expect_ok)
{
    static char why[160];
    why[0] = '\0';
    bool ok = field_from_text(col(table, name), s, strlen(s), p, a, out, why, sizeof why);
    if (ok != expect_ok)
        fail_msg("%s.%s <- '%s': expected %s, got %s (%s)", table, name, s,
                 expect_ok ? "ok" : "a failure", ok ? "ok" : "a failure", why);
    return why;
}

/* ---- field_from_text --------------------------------------------------------------------- */

static void text_to_ts(void **state)
{
    struct fixture *f = *state;
    struct value v;
    conv(&f->arena, "api_usage", "ts", "2026-01-02T03:04:05.123Z", PREC_MS, &v, true);
    assert_int_equal(v.type, VAL_INT);
    assert_int_equal(v.i, 1767323045123LL);
    conv(&f->arena, "api_usage", "ts", "1767323045123", PREC_MS, &v, true);
    assert_int_equal(v.i, 1767323045123LL);
    conv(&f->arena, "api_usage", "ts", "1767323045", PREC_S, &v, true);
    assert_int_equal(v.i, 1767323045000LL);
    conv(&f->arena, "api_usage", "ts", "1767323045.5", PREC_S, &v, true);
    assert_int_equal(v.i, 1767323045500LL);
    conv(&f->arena, "api_usage", "ts", "1767323045123456", PREC_US, &v, true);
    assert_int_equal(v.i, 1767323045123LL);
    conv(&f->arena, "api_usage", "ts", "1767323045123456789", PREC_NS, &v, true);
    assert_int_equal(v.i, 1767323045123LL);
    conv(&f->arena, "api_usage", "ts", "-1000", PREC_MS, &v, true);
    assert_int_equal(v.i, -1000);

    const char *why = conv(&f->arena, "api_usage", "ts", "yesterday", PREC_MS, &v, false);
    assert_non_null(strstr(why, "is not an RFC 3339 time or epoch number"));
    why = conv(&f->arena, "api_usage", "ts", "2026-02-29T00:00:00Z", PREC_MS, &v, false);
    assert_non_null(strstr(why, "not a number"));
    why = conv(&f->arena, "api_usage", "ts", "99999999999999999", PREC_MS, &v, false);
    assert_non_null(strstr(why, "is not a valid epoch time in the given precision"));
    conv(&f->arena, "api_usage", "ts", "17673230451234", PREC_S, &v, false);
    conv(&f->arena, "api_usage", "ts", "12abc", PREC_MS, &v, false);

    /* empty is NULL, not an error */
    conv(&f->arena, "api_usage", "ts", "", PREC_MS, &v, true);
    assert_int_equal(v.type, VAL_NULL);
}

static void text_to_int(void **state)
{
    struct fixture *f = *state;
    struct value v;
    conv(&f->arena, "api_usage", "status_code", "200", PREC_MS, &v, true);
    assert_int_equal(v.type, VAL_INT);
    assert_int_equal(v.i, 200);
    conv(&f->arena, "job_runs", "exit_code", "-3", PREC_MS, &v, true);
    assert_int_equal(v.i, -3);
    conv(&f->arena, "api_usage", "request_bytes", "1e3", PREC_MS, &v, true);
    assert_int_equal(v.i, 1000);
    conv(&f->arena, "api_usage", "request_bytes", "2.0", PREC_MS, &v, true);
    assert_int_equal(v.i, 2);
    conv(&f->arena, "api_usage", "request_bytes", "9000000000000000", PREC_MS, &v, true);
    assert_int_equal(v.i, 9000000000000000LL);

    const char *why = conv(&f->arena, "api_usage", "status_code", "2.5", PREC_MS, &v, false);
    assert_string_equal(why, "2.5 is not an integer");
    why = conv(&f->arena, "api_usage", "status_code", "abc", PREC_MS, &v, false);
    assert_string_equal(why, "'abc' is not a number");
    why = conv(&f->arena, "api_usage", "status_code", "200x", PREC_MS, &v, false);
    assert_string_equal(why, "'200x' is not a number");
    conv(&f->arena, "api_usage", "status_code", "200 ", PREC_MS, &v, false);
    conv(&f->arena, "api_usage", "request_bytes", "nan", PREC_MS, &v, false);
    conv(&f->arena, "api_usage", "request_bytes", "inf", PREC_MS, &v, false);
    why = conv(&f->arena, "api_usage", "request_bytes", "9223372036854775808", PREC_MS, &v, false);
    assert_non_null(strstr(why, "is not an integer"));
    why = conv(&f->arena, "api_usage", "request_bytes",
               "1234567890123456789012345678901234567890123456789012345678901234567890", PREC_MS,
               &v, false);
    assert_non_null(strstr(why, "is not a number"));
}

/*
 * BUG (reported, minor): text_to_number copies the cell and lets strtoll judge it, so a NUL byte
 * inside a cell ends the number ("200<NUL>junk", possible in CSV, is 200) and leading
 * whitespace is skipped (" 200" is accepted while "200 " is refused).
 */
static void text_to_number_strict(void **state)
{
    struct fixture *f = *state;
    struct value v;
    char why[160];
    assert_false(field_from_text(col("api_usage", "status_code"), "200\0junk", 8, PREC_MS,
                                 &f->arena, &v, why, sizeof why));
    assert_false(field_from_text(col("api_usage", "status_code"), " 200", 4, PREC_MS, &f->arena, &v,
                                 why, sizeof why));
}

static void text_to_real(void **state)
{
    struct fixture *f = *state;
    struct value v;
    conv(&f->arena, "api_usage", "latency_ms", "12.5", PREC_MS, &v, true);
    assert_int_equal(v.type, VAL_REAL);
    assert_true(v.d == 12.5);
    conv(&f->arena, "api_usage", "latency_ms", "7", PREC_MS, &v, true);
    assert_int_equal(v.type, VAL_REAL);
    assert_true(v.d == 7.0);
    conv(&f->arena, "api_usage", "latency_ms", "-1e-3", PREC_MS, &v, true);
    assert_true(v.d == -1e-3);
    const char *why = conv(&f->arena, "api_usage", "latency_ms", "nan", PREC_MS, &v, false);
    assert_string_equal(why, "is not a finite number");
    conv(&f->arena, "api_usage", "latency_ms", "inf", PREC_MS, &v, false);
    conv(&f->arena, "api_usage", "latency_ms", "1e999", PREC_MS, &v, false);
    conv(&f->arena, "api_usage", "latency_ms", "1.2.3", PREC_MS, &v, false);
}

static void text_to_bool(void **state)
{
    struct fixture *f = *state;
    struct value v;
    const char *yes[] = {"true", "TRUE", "True", "1", "yes", "Yes", "t", "T"};
    const char *no[] = {"false", "FALSE", "0", "no", "NO", "f", "F"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        conv(&f->arena, "alert_history", "notified", yes[i], PREC_MS, &v, true);
        assert_int_equal(v.type, VAL_INT);
        assert_int_equal(v.i, 1);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        conv(&f->arena, "alert_history", "notified", no[i], PREC_MS, &v, true);
        assert_int_equal(v.i, 0);
    }
    const char *why = conv(&f->arena, "alert_history", "notified", "maybe", PREC_MS, &v, false);
    assert_string_equal(why, "'maybe' is not a boolean");
    conv(&f->arena, "alert_history", "notified", "2", PREC_MS, &v, false);
    conv(&f->arena, "alert_history", "notified", "tru", PREC_MS, &v, false);
    conv(&f->arena, "alert_history", "notified", "yess", PREC_MS, &v, false);
}

static void text_to_json(void **state)
{
    struct fixture *f = *state;
    struct value v;
    /* canonical: compact with sorted keys, so equal objects compare equal */
    conv(&f->arena, "error_logs", "context", "{ \"b\": 1, \"a\": [true, null] }", PREC_MS, &v,
         true);
    assert_int_equal(v.type, VAL_TEXT);
    assert_string_equal(v.s, "{\"a\":[true,null],\"b\":1}");
    assert_int_equal(v.len, strlen(v.s));
    conv(&f->arena, "error_logs", "context", "{}", PREC_MS, &v, true);
    assert_string_equal(v.s, "{}");

    const char *why = conv(&f->arena, "error_logs", "context", "[1,2]", PREC_MS, &v, false);
    assert_string_equal(why, "must be a JSON object");
    why = conv(&f->arena, "error_logs", "context", "{\"a\":", PREC_MS, &v, false);
    assert_non_null(strstr(why, "is not valid JSON"));
    conv(&f->arena, "error_logs", "context", "{\"a\":1,\"a\":2}", PREC_MS, &v, false);
    conv(&f->arena, "error_logs", "context", "\"text\"", PREC_MS, &v, false);

    /* labels of a series are objects of strings */
    conv(&f->arena, "system_metrics", "labels", "{\"dc\":\"eu\",\"cpu\":\"0\"}", PREC_MS, &v, true);
    assert_string_equal(v.s, "{\"cpu\":\"0\",\"dc\":\"eu\"}");
    /* other JSON columns take any values */
    conv(&f->arena, "alert_history", "labels", "{\"n\":0}", PREC_MS, &v, true);

    /* the limit applies to the input text */
    size_t big = col("error_logs", "context")->max_len + 1;
    char *s = malloc(big + 1);
    memset(s, ' ', big);
    memcpy(s, "{}", 2);
    s[big] = '\0';
    why = conv(&f->arena, "error_logs", "context", s, PREC_MS, &v, false);
    assert_string_equal(why, "is 16385 bytes, longer than the limit of 16384");
    free(s);
}

/* A labels object with a non-string value names the key (the key once was read after the
 * parsed object was freed: a heap-use-after-free under ASan). */
static void text_to_labels_non_string(void **state)
{
    struct fixture *f = *state;
    struct value v;
    const char *why =
        conv(&f->arena, "system_metrics", "labels", "{\"cpu\":0}", PREC_MS, &v, false);
    assert_string_equal(why, "value of 'cpu' must be a string");
}

static void text_to_text_utf8(void **state)
{
    struct fixture *f = *state;
    struct value v;
    const char *good[] = {"plain",        "h\xc3\xa9llo",     "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                          "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", "tab\there"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        conv(&f->arena, "error_logs", "message", good[i], PREC_MS, &v, true);
        assert_int_equal(v.type, VAL_TEXT);
        assert_int_equal(v.len, strlen(good[i]));
        assert_memory_equal(v.s, good[i], v.len);
        assert_int_equal(v.s[v.len], '\0'); /* copies are NUL-terminated */
    }
    const char *bad[] = {"\xff",
                         "ab\x80",
                         "\xc0\xaf", /* overlong '/' */
                         "\xe0\x80\xaf",
                         "\xed\xa0\x80", /* surrogate */
                         "\xe2\x82",
                         "x\xc3",
                         "\xf4\x90\x80\x80", /* > U+10FFFF */
                         "\xf8\x88\x80\x80\x80",
                         "\xc3\x28"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = conv(&f->arena, "error_logs", "message", bad[i], PREC_MS, &v, false);
        assert_string_equal(why, "is not valid UTF-8");
    }
    /* the input need not be NUL-terminated: only len bytes are read and copied */
    char why[160];
    assert_true(field_from_text(col("error_logs", "message"), "abcdef", 3, PREC_MS, &f->arena, &v,
                                why, sizeof why));
    assert_int_equal(v.len, 3);
    assert_string_equal(v.s, "abc");
}

/* ---- field_from_number ------------------------------------------------------------------- */

static void numbers_per_type(void **state)
{
    (void)state;
    struct value v;
    char why[160];
    const struct column *ts = col("api_usage", "ts");
    assert_true(field_from_number(ts, 0, true, 1767323045, PREC_S, &v, why, sizeof why));
    assert_int_equal(v.i, 1767323045000LL);
    assert_true(field_from_number(ts, 1767323045.25, false, 0, PREC_S, &v, why, sizeof why));
    assert_int_equal(v.i, 1767323045250LL);
    assert_true(
        field_from_number(ts, 0, true, 1767323045123456789LL, PREC_NS, &v, why, sizeof why));
    assert_int_equal(v.i, 1767323045123LL);
    assert_false(field_from_number(ts, 1e30, false, 0, PREC_MS, &v, why, sizeof why));
    assert_non_null(strstr(why, "is not a valid epoch time"));

    const struct column *status = col("api_usage", "status_code");
    assert_true(field_from_number(status, 404, true, 404, PREC_MS, &v, why, sizeof why));
    assert_int_equal(v.type, VAL_INT);
    assert_int_equal(v.i, 404);
    assert_true(field_from_number(status, 404.0, false, 0, PREC_MS, &v, why, sizeof why));
    assert_int_equal(v.i, 404);
    assert_false(field_from_number(status, 404.5, false, 0, PREC_MS, &v, why, sizeof why));
    assert_string_equal(why, "404.5 is not an integer");
    assert_false(field_from_number(status, NAN, false, 0, PREC_MS, &v, why, sizeof why));
    assert_false(field_from_number(status, 1e16, false, 0, PREC_MS, &v, why, sizeof why));

    const struct column *notified = col("alert_history", "notified");
    assert_true(field_from_number(notified, 1, true, 1, PREC_MS, &v, why, sizeof why));
    assert_int_equal(v.i, 1);
    assert_true(field_from_number(notified, 0.0, false, 0, PREC_MS, &v, why, sizeof why));
    assert_int_equal(v.i, 0);
    assert_false(field_from_number(notified, 2, true, 2, PREC_MS, &v, why, sizeof why));
    assert_string_equal(why, "2 is not a boolean (0 or 1)");

    const struct column *latency = col("api_usage", "latency_ms");
    assert_true(field_from_number(latency, 0, true, 12, PREC_MS, &v, why, sizeof why));
    assert_int_equal(v.type, VAL_REAL);
    assert_true(v.d == 12.0);
    assert_true(field_from_number(latency, 1.25, false, 0, PREC_MS, &v, why, sizeof why));
    assert_true(v.d == 1.25);
    assert_false(field_from_number(latency, INFINITY, false, 0, PREC_MS, &v, why, sizeof why));
    assert_string_equal(why, "is not a finite number");

    assert_false(
        field_from_number(col("api_usage", "endpoint"), 1, true, 1, PREC_MS, &v, why, sizeof why));
    assert_string_equal(why, "expected text, got a number");
    assert_false(
        field_from_number(col("error_logs", "context"), 1, true, 1, PREC_MS, &v, why, sizeof why));
    assert_string_equal(why, "expected a JSON object, got a number");
}

/* ---- validate_row ------------------------------------------------------------------------- */

/* Appends a row to b from name/value text pairs (NULL-terminated); conversion must succeed. */
static void add_row(struct batch *b, const char *const *kv)
{
    batch_add_row(b);
    struct value *row = batch_row(b, b->nrows - 1);
    for (size_t i = 0; kv[i]; i += 2) {
        int c = schema_column(b->table, kv[i]);
        if (c < 0)
            fail_msg("no column %s in %s", kv[i], b->table->name);
        char why[160];
        if (!field_from_text(&b->table->columns[c], kv[i + 1], strlen(kv[i + 1]), PREC_MS,
                             &b->arena, &row[c], why, sizeof why))
            fail_msg("%s <- '%s': %s", kv[i], kv[i + 1], why);
    }
}

struct check {
    struct batch b;
    struct rejects r;
    char now[40];
};

static void check_init(struct check *c, const char *table)
{
    batch_init(&c->b, schema_table(table));
    rejects_init(&c->r, "row");
    ut_time_text(-60 * 1000, c->now);
}

/* Validates the last row of c. */
static bool check_last(struct fixture *f, struct check *c, size_t input_index)
{
    return validate_row(&f->opts, &c->b, c->b.nrows - 1, input_index, &c->r);
}

static void valid_api_row(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "api_usage");
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "endpoint", "/api/x",
                                   "status_code", "200", "latency_ms", "12.5", NULL});
    assert_true(check_last(f, &c, 0));
    assert_no_rejects(&c.r);
    /* defaults of absent columns are applied; columns without a default stay NULL */
    assert_cell_text(&c.b, 0, "service", "");
    assert_cell_text(&c.b, 0, "host", "");
    assert_int_equal(ut_cell(&c.b, 0, "count")->type, VAL_INT);
    assert_int_equal(ut_cell(&c.b, 0, "count")->i, 1);
    assert_int_equal(ut_cell(&c.b, 0, "client_id")->type, VAL_NULL);
    assert_int_equal(ut_cell(&c.b, 0, "request_bytes")->type, VAL_NULL);
    batch_release(&c.b);
}

static void required_fields(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "api_usage");
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "status_code", "200", NULL});
    assert_false(check_last(f, &c, 7));
    assert_int_equal(c.r.count, 1);
    assert_int_equal(c.r.n, 1);
    assert_int_equal(c.r.items[0].row, 7);
    assert_string_equal(c.r.items[0].field, "endpoint");
    assert_string_equal(c.r.items[0].reason, "missing required field endpoint");

    /* an empty value is NULL, so it is missing too; two missing fields are one rejected row */
    add_row(&c.b,
            (const char *[]){"ts", "", "method", "", "endpoint", "/", "status_code", "200", NULL});
    assert_false(check_last(f, &c, 8));
    assert_int_equal(c.r.count, 2);
    assert_int_equal(c.r.n, 3);
    assert_string_equal(c.r.items[1].reason, "missing required field ts");
    assert_string_equal(c.r.items[2].reason, "missing required field method");
    batch_release(&c.b);
}

static void bounds(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "api_usage");
    const char *codes_ok[] = {"100", "599", "404"};
    for (size_t i = 0; i < 3; i++) {
        add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "endpoint", "/", "status_code",
                                       codes_ok[i], NULL});
        assert_true(check_last(f, &c, i));
    }
    assert_no_rejects(&c.r);
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "endpoint", "/", "status_code",
                                   "600", NULL});
    assert_false(check_last(f, &c, 3));
    assert_string_equal(c.r.items[0].field, "status_code");
    assert_string_equal(c.r.items[0].reason, "status_code 600 is outside 100..599");
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "endpoint", "/", "status_code",
                                   "99", NULL});
    assert_false(check_last(f, &c, 4));
    assert_string_equal(c.r.items[1].reason, "status_code 99 is outside 100..599");
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "endpoint", "/", "status_code",
                                   "200", "latency_ms", "-0.5", "count", "0", NULL});
    assert_false(check_last(f, &c, 5));
    assert_rejected(&c.r, "latency_ms -0.5 is outside 0..86400000");
    assert_rejected(&c.r, "count 0 is outside 1..9e+15");
    assert_int_equal(c.r.count, 3);
    batch_release(&c.b);

    check_init(&c, "job_runs");
    add_row(&c.b,
            (const char *[]){"ts", c.now, "job", "j", "status", "ok", "exit_code", "-255", NULL});
    assert_true(check_last(f, &c, 0));
    add_row(&c.b,
            (const char *[]){"ts", c.now, "job", "j", "status", "ok", "exit_code", "-256", NULL});
    assert_false(check_last(f, &c, 1));
    assert_rejected(&c.r, "exit_code -256 is outside -255..255");
    batch_release(&c.b);
}

static void allowed_sets(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "api_usage");
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "post", "endpoint", "/", "status_code",
                                   "201", NULL});
    assert_true(check_last(f, &c, 0));
    assert_cell_text(&c.b, 0, "method", "POST"); /* stored in the canonical spelling */
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "FETCH", "endpoint", "/", "status_code",
                                   "201", NULL});
    assert_false(check_last(f, &c, 1));
    assert_string_equal(c.r.items[0].field, "method");
    assert_string_equal(c.r.items[0].reason, "method 'FETCH' is not one of GET, HEAD, POST, PUT, "
                                             "PATCH, DELETE, OPTIONS, CONNECT, TRACE, OTHER");
    batch_release(&c.b);
}

static void level_aliases(void **state)
{
    struct fixture *f = *state;
    static const char *const pairs[] = {
        "warn",  "warning",  "WARN",   "warning",  "Warning", "warning", "err",         "error",
        "ERROR", "error",    "crit",   "critical", "emerg",   "fatal",   "panic",       "fatal",
        "alert", "critical", "trace",  "debug",    "severe",  "error",   "information", "info",
        "INFO",  "info",     "notice", "notice",   "Fatal",   "fatal",
    };
    struct check c;
    check_init(&c, "error_logs");
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i += 2) {
        add_row(&c.b, (const char *[]){"ts", c.now, "level", pairs[i], "message", "m", NULL});
        assert_true(check_last(f, &c, i / 2));
        assert_cell_text(&c.b, c.b.nrows - 1, "level", pairs[i + 1]);
    }
    assert_no_rejects(&c.r);
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "verbose", "message", "m", NULL});
    assert_false(check_last(f, &c, 99));
    assert_rejected(&c.r, "level 'verbose' is not one of debug, info, notice, warning, error, "
                          "critical, fatal");
    batch_release(&c.b);

    /* aliases belong to the level column only */
    check_init(&c, "alert_history");
    add_row(&c.b, (const char *[]){"ts", c.now, "alert_id", "a", "rule", "r", "state", "firing",
                                   "severity", "warn", NULL});
    assert_false(check_last(f, &c, 0));
    assert_rejected(&c.r, "severity 'warn' is not one of info, warning, critical, page");
    batch_release(&c.b);
}

static void length_limits(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "api_usage");
    char endpoint[1026];
    memset(endpoint, 'e', 1024);
    endpoint[1024] = '\0';
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "endpoint", endpoint,
                                   "status_code", "200", NULL});
    assert_true(check_last(f, &c, 0));
    endpoint[1024] = 'e';
    endpoint[1025] = '\0';
    add_row(&c.b, (const char *[]){"ts", c.now, "method", "GET", "endpoint", endpoint,
                                   "status_code", "200", NULL});
    assert_false(check_last(f, &c, 1));
    assert_string_equal(c.r.items[0].field, "endpoint");
    assert_string_equal(c.r.items[0].reason,
                        "endpoint is 1025 bytes, longer than the limit of 1024");
    batch_release(&c.b);
}

static void time_horizon(void **state)
{
    struct fixture *f = *state;
    struct check c;
    char t[40];
    check_init(&c, "api_usage");

    time_format_rfc3339(f->opts.now_ms + 4 * 60 * 1000, t, sizeof t); /* within max_future */
    add_row(&c.b, (const char *[]){"ts", t, "method", "GET", "endpoint", "/", "status_code", "200",
                                   NULL});
    assert_true(check_last(f, &c, 0));
    time_format_rfc3339(f->opts.now_ms + 10 * 60 * 1000, t, sizeof t);
    add_row(&c.b, (const char *[]){"ts", t, "method", "GET", "endpoint", "/", "status_code", "200",
                                   NULL});
    assert_false(check_last(f, &c, 1));
    assert_string_equal(c.r.items[0].field, "ts");
    assert_rejected(&c.r, "is in the future (more than 300 s after now)");

    time_format_rfc3339(f->opts.now_ms - 29 * DAY_MS, t, sizeof t);
    add_row(&c.b, (const char *[]){"ts", t, "method", "GET", "endpoint", "/", "status_code", "200",
                                   NULL});
    assert_true(check_last(f, &c, 2));
    time_format_rfc3339(f->opts.now_ms - 31 * DAY_MS, t, sizeof t);
    add_row(&c.b, (const char *[]){"ts", t, "method", "GET", "endpoint", "/", "status_code", "200",
                                   NULL});
    assert_false(check_last(f, &c, 3));
    assert_rejected(&c.r, "ts is older than the api_usage retention horizon of 30 days");
    assert_int_equal(c.r.count, 2);

    /* retention 0 keeps forever; the retention is per table */
    size_t n;
    const struct table *tables = schema_tables(&n);
    f->retention[schema_table("api_usage") - tables] = 0;
    add_row(&c.b, (const char *[]){"ts", "2001-01-01T00:00:00Z", "method", "GET", "endpoint", "/",
                                   "status_code", "200", NULL});
    assert_true(check_last(f, &c, 4));
    /* no retention table at all: nothing is too old */
    f->opts.retention_days = NULL;
    add_row(&c.b, (const char *[]){"ts", "1990-01-01T00:00:00Z", "method", "GET", "endpoint", "/",
                                   "status_code", "200", NULL});
    assert_true(check_last(f, &c, 5));
    batch_release(&c.b);

    /* only the ts column is checked against the horizon */
    check_init(&c, "pipeline_status");
    time_format_rfc3339(f->opts.now_ms + 30 * DAY_MS, t, sizeof t);
    add_row(&c.b, (const char *[]){"ts", c.now, "pipeline", "p", "run_id", "1", "status", "running",
                                   "started_at", "1990-01-01T00:00:00Z", "finished_at", t, NULL});
    assert_true(check_last(f, &c, 0));
    batch_release(&c.b);
}

static void defaults_applied(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "alert_history");
    add_row(&c.b,
            (const char *[]){"ts", c.now, "alert_id", "a1", "rule", "r", "state", "firing", NULL});
    assert_true(check_last(f, &c, 0));
    assert_cell_text(&c.b, 0, "severity", "warning");
    assert_int_equal(ut_cell(&c.b, 0, "escalation_level")->i, 0);
    assert_int_equal(ut_cell(&c.b, 0, "notified")->type, VAL_INT);
    assert_int_equal(ut_cell(&c.b, 0, "notified")->i, 0);
    assert_int_equal(ut_cell(&c.b, 0, "labels")->type, VAL_NULL);
    batch_release(&c.b);

    check_init(&c, "scheduled_jobs");
    add_row(&c.b, (const char *[]){"ts", c.now, "name", "backup", "kind", "builtin", NULL});
    assert_true(check_last(f, &c, 0));
    assert_int_equal(ut_cell(&c.b, 0, "enabled")->i, 1);
    assert_int_equal(ut_cell(&c.b, 0, "timeout_s")->i, 3600);
    assert_int_equal(ut_cell(&c.b, 0, "grace_s")->i, 300);
    assert_int_equal(ut_cell(&c.b, 0, "consecutive_failures")->i, 0);
    batch_release(&c.b);

    check_init(&c, "system_metrics");
    add_row(&c.b, (const char *[]){"ts", c.now, "metric", "cpu", "value", "1", NULL});
    assert_true(check_last(f, &c, 0));
    assert_cell_text(&c.b, 0, "labels", "{}");
    assert_cell_text(&c.b, 0, "host", "");
    batch_release(&c.b);
}

static void fingerprint_derived(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "error_logs");
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message",
                                   "timeout after 30 s on order 12345", "error_type",
                                   "TimeoutError", "component", "checkout", NULL});
    assert_true(check_last(f, &c, 0));
    const struct value *fp = ut_cell(&c.b, 0, "fingerprint");
    assert_int_equal(fp->type, VAL_TEXT);
    assert_int_equal(fp->len, 16);
    char expect[17];
    fingerprint_compute(NULL, "TimeoutError", "checkout", "timeout after 30 s on order 12345",
                        expect);
    assert_memory_equal(fp->s, expect, 16);

    /* the same error with other numbers groups with it */
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message",
                                   "timeout after 45 s on order 777", "error_type", "TimeoutError",
                                   "component", "checkout", NULL});
    assert_true(check_last(f, &c, 1));
    assert_memory_equal(ut_cell(&c.b, 1, "fingerprint")->s, expect, 16);

    /* without a component, the service stands in for it */
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message", "boom", "service",
                                   "billing", NULL});
    assert_true(check_last(f, &c, 2));
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message", "boom", "component",
                                   "billing", "service", "other", NULL});
    assert_true(check_last(f, &c, 3));
    assert_memory_equal(ut_cell(&c.b, 2, "fingerprint")->s, ut_cell(&c.b, 3, "fingerprint")->s, 16);

    /* a given fingerprint is kept */
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message", "boom", "fingerprint",
                                   "mine", NULL});
    assert_true(check_last(f, &c, 4));
    assert_cell_text(&c.b, 4, "fingerprint", "mine");

    /* a rejected row gets no fingerprint */
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "nope", "message", "boom", NULL});
    assert_false(check_last(f, &c, 5));
    assert_int_equal(ut_cell(&c.b, 5, "fingerprint")->type, VAL_NULL);

    /* the configured rules take part */
    struct fingerprint_rules *rules = fingerprint_rules_new();
    assert_int_equal(fingerprint_rules_add(rules, "user [a-z]+", "user <u>", NULL), 0);
    f->opts.fingerprints = rules;
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message", "no user alice",
                                   "component", "c", NULL});
    assert_true(check_last(f, &c, 6));
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message", "no user bob",
                                   "component", "c", NULL});
    assert_true(check_last(f, &c, 7));
    assert_memory_equal(ut_cell(&c.b, 6, "fingerprint")->s, ut_cell(&c.b, 7, "fingerprint")->s, 16);
    f->opts.fingerprints = NULL;
    fingerprint_rules_free(&rules);
    assert_null(rules);
    batch_release(&c.b);
}

/*
 * BUG (reported): defaults of TEXT columns point into the quoted SQL literal ("''" gives s = "'"
 * with len 0), and derive_fingerprint() passes those values on as C strings. So a row without
 * error_type/component/service is fingerprinted as type "'" and component "'", not "" and "".
 */
static void fingerprint_of_defaults(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "error_logs");
    add_row(&c.b, (const char *[]){"ts", c.now, "level", "error", "message", "boom", NULL});
    assert_true(check_last(f, &c, 0));
    char expect[17];
    fingerprint_compute(NULL, "", "", "boom", expect);
    const struct value *fp = ut_cell(&c.b, 0, "fingerprint");
    if (memcmp(fp->s, expect, 16) != 0) {
        char got[17];
        fingerprint_compute(NULL, "'", "'", "boom", got);
        print_error("derived %.16s; hash of (\"\", \"\") is %s; of (\"'\", \"'\") is %s\n", fp->s,
                    expect, got);
    }
    assert_memory_equal(fp->s, expect, 16);
    batch_release(&c.b);
}

static void rejects_bounded(void **state)
{
    struct fixture *f = *state;
    struct check c;
    check_init(&c, "api_usage");
    /* 150 bad rows with two bad fields each: every row counts, 100 items are kept */
    for (size_t i = 0; i < 150; i++) {
        add_row(&c.b, (const char *[]){"ts", c.now, "method", "BAD", "endpoint", "/", "status_code",
                                       "700", NULL});
        assert_false(check_last(f, &c, i));
        batch_drop_last(&c.b);
    }
    assert_int_equal(c.r.count, 150);
    assert_int_equal(c.r.n, REJECTS_MAX);
    assert_int_equal(c.r.items[0].row, 0);
    assert_int_equal(c.r.items[1].row, 0);
    assert_int_equal(c.r.items[99].row, 49);
    assert_int_equal(c.r.last_row, 149);
    assert_int_equal(c.b.nrows, 0);
    batch_release(&c.b);
}

static void rejects_api(void **state)
{
    (void)state;
    struct rejects r;
    rejects_init(&r, "line");
    assert_int_equal(r.count, 0);
    assert_int_equal(r.n, 0);
    assert_string_equal(r.row_word, "line");
    assert_int_equal(r.last_row, SIZE_MAX);
    rejects_add(&r, 0, NULL, "first %d", 1);
    rejects_add(&r, 0, "f", "same row");
    rejects_add(&r, 3, "a-field-name-that-is-much-longer-than-forty-eight-bytes-in-total", "%s",
                "long");
    assert_int_equal(r.count, 2);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.items[0].field, "");
    assert_string_equal(r.items[0].reason, "first 1");
    assert_int_equal(strlen(r.items[2].field), sizeof r.items[2].field - 1); /* truncated */
    char long_reason[400];
    memset(long_reason, 'x', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = '\0';
    rejects_add(&r, 4, "f", "%s", long_reason);
    assert_int_equal(strlen(r.items[3].reason), sizeof r.items[3].reason - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(text_to_ts, setup, teardown),
        cmocka_unit_test_setup_teardown(text_to_int, setup, teardown),
        cmocka_unit_test_setup_teardown(text_to_number_strict, setup, teardown),
        cmocka_unit_test_setup_teardown(text_to_real, setup, teardown),
        cmocka_unit_test_setup_teardown(text_to_bool, setup, teardown),
        cmocka_unit_test_setup_teardown(text_to_json, setup, teardown),
        cmocka_unit_test_setup_teardown(text_to_labels_non_string, setup, teardown),
        cmocka_unit_test_setup_teardown(text_to_text_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(numbers_per_type, setup, teardown),
        cmocka_unit_test_setup_teardown(valid_api_row, setup, teardown),
        cmocka_unit_test_setup_teardown(required_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(allowed_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(level_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(length_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(time_horizon, setup, teardown),
        cmocka_unit_test_setup_teardown(defaults_applied, setup, teardown),
        cmocka_unit_test_setup_teardown(fingerprint_derived, setup, teardown),
        cmocka_unit_test_setup_teardown(fingerprint_of_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(rejects_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(rejects_api, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
