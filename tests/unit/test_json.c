/*
 * ingest: JSON bodies — one object (also pretty-printed), an array of objects, or NDJSON
 * (detected or forced); values converted by the schema; rejections with array indexes or
 * 1-based NDJSON lines; the row limit.
 */
#include "unit_ingest.h"

static struct parse *js(const char *table, const char *text, bool ndjson, size_t max_rows)
{
    struct parse *t = parse_new(table, PREC_MS, max_rows);
    t->rc = ingest_parse_json(&t->ctx, text, strlen(text), ndjson, &t->b, &t->r);
    return t;
}

/* An api_usage object at now - 1 min with the given extra members (or ""). */
static char *api_obj(char *out, size_t size, const char *extra)
{
    char now[40];
    ut_time_text(-60000, now);
    snprintf(out, size,
             "{\"ts\":\"%s\",\"method\":\"GET\",\"endpoint\":\"/api/x\",\"status_code\":200%s%s}",
             now, *extra ? "," : "", extra);
    return out;
}

static void single_object(void **state)
{
    (void)state;
    char o[512];
    struct parse *t = js("api_usage", api_obj(o, sizeof o, "\"latency_ms\":12.5"), false, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    assert_cell_text(&t->b, 0, "endpoint", "/api/x");
    assert_int_equal(ut_cell(&t->b, 0, "status_code")->i, 200);
    assert_true(ut_cell(&t->b, 0, "latency_ms")->d == 12.5);
    assert_int_equal(ut_cell(&t->b, 0, "count")->i, 1); /* default */
    parse_free(&t);

    /* pretty-printed over several lines, with surrounding whitespace */
    char now[40], text[512];
    ut_time_text(-60000, now);
    snprintf(text, sizeof text,
             "\n  {\n    \"ts\": \"%s\",\n    \"level\": \"WARN\",\n    \"message\": "
             "\"disk 91%% full\"\n  }\n\n",
             now);
    t = js("error_logs", text, false, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    assert_cell_text(&t->b, 0, "level", "warning");
    assert_cell_text(&t->b, 0, "message", "disk 91% full");
    assert_int_equal(ut_cell(&t->b, 0, "fingerprint")->len, 16);
    parse_free(&t);
}

static void arrays(void **state)
{
    (void)state;
    char a[512], b[512], c[512], text[2048];
    snprintf(text, sizeof text, "[%s, %s,\n %s]", api_obj(a, sizeof a, ""),
             api_obj(b, sizeof b, "\"status_code\":500"),
             api_obj(c, sizeof c, "\"service\":\"s\""));
    struct parse *t = js("api_usage", text, false, 0);
    /* b names status_code twice: that row is rejected, naming the field */
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->r.count, 1);
    assert_int_equal(t->r.items[0].row, 1);
    assert_string_equal(t->r.items[0].field, "status_code");
    assert_rejected(&t->r, "twice");
    parse_free(&t);

    snprintf(text, sizeof text, "[%s, %s,\n %s]", api_obj(a, sizeof a, ""),
             api_obj(b, sizeof b, "\"host\":\"h1\""), api_obj(c, sizeof c, "\"service\":\"s\""));
    t = js("api_usage", text, false, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    assert_cell_text(&t->b, 1, "host", "h1");
    assert_cell_text(&t->b, 2, "service", "s");
    parse_free(&t);

    /* rejections name the 0-based array index */
    char now[40];
    api_obj(a, sizeof a, "");
    api_obj(c, sizeof c, "");
    ut_time_text(-60000, now);
    snprintf(b, sizeof b,
             "{\"ts\":\"%s\",\"method\":\"FETCH\",\"endpoint\":\"/\",\"status_code\":700}", now);
    snprintf(text, sizeof text, "[%s, %s, %s, 7]", a, b, c);
    t = js("api_usage", text, false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->r.count, 2);
    assert_reject_at(t, 1, "method 'FETCH' is not one of");
    assert_reject_at(t, 1, "status_code 700 is outside 100..599");
    assert_reject_at(t, 3, "expected a JSON object");
    assert_int_equal(t->b.nrows, 2);
    parse_free(&t);

    t = js("api_usage", "[]", false, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 0);
    parse_free(&t);
    t = js("api_usage", "[{\"ts\":", false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 0, "invalid JSON");
    parse_free(&t);
}

static void ndjson(void **state)
{
    (void)state;
    char a[512], b[512], text[2048];
    api_obj(a, sizeof a, "");
    api_obj(b, sizeof b, "\"host\":\"h2\"");
    /* detected: a second object follows the first */
    snprintf(text, sizeof text, "%s\n%s\n", a, b);
    struct parse *t = js("api_usage", text, false, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 2);
    assert_cell_text(&t->b, 1, "host", "h2");
    parse_free(&t);

    /* CRLF, blank lines and surrounding blanks; rejections name 1-based lines */
    snprintf(text, sizeof text, "%s\r\n\r\n  {\"bogus\": 1}\t\r\n%s\r\n{not json}\n%s", a, b, a);
    t = js("api_usage", text, false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->r.count, 2);
    assert_reject_at(t, 3, "unknown field 'bogus' for table api_usage (see docs/schema.md)");
    assert_string_equal(t->r.items[0].field, "bogus");
    assert_reject_at(t, 5, "invalid JSON at column");
    assert_int_equal(t->b.nrows, 3);
    parse_free(&t);

    /* forced: even a single line is NDJSON, and a line holding an array is no object */
    snprintf(text, sizeof text, "%s\n[%s]\n", a, b);
    t = js("api_usage", text, true, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 2, "expected a JSON object");
    parse_free(&t);
    t = js("api_usage", a, true, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    parse_free(&t);

    /* two objects on one line are not NDJSON */
    snprintf(text, sizeof text, "%s %s", a, b);
    t = js("api_usage", text, false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "invalid JSON");
    parse_free(&t);
}

static void empty_and_invalid(void **state)
{
    (void)state;
    const char *empties[] = {"", " ", "\n\r\n\t "};
    for (size_t i = 0; i < 3; i++) {
        struct parse *t = js("api_usage", empties[i], false, 0);
        assert_int_equal(t->rc, E_INVALID);
        assert_reject_at(t, 0, "the body is empty: send a JSON object, an array or NDJSON");
        parse_free(&t);
    }
    const char *bad[] = {"{", "nope", "\"text\"", "42", "{'ts': 1}", "{\"ts\":1,}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct parse *t = js("api_usage", bad[i], false, 0);
        if (t->rc != E_INVALID)
            fail_msg("'%s' was accepted", bad[i]);
        assert_int_equal(t->b.nrows, 0);
        assert_int_equal(t->r.count, 1);
        /* line 1 (NDJSON) or index 0 (one object): either way the reason speaks of JSON */
        assert_true(t->r.items[0].row <= 1);
        assert_rejected(&t->r, "JSON");
        parse_free(&t);
    }
    /* an unpaired surrogate escape is no valid JSON text */
    struct parse *t = js("error_logs", "{\"message\":\"\\ud800\"}", false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_rejected(&t->r, "JSON");
    parse_free(&t);
}

static void value_types(void **state)
{
    (void)state;
    char o[1024];
    struct {
        const char *member, *field, *reason;
    } bad[] = {
        {"\"status_code\":true", "status_code", "status_code expected a number, got a boolean"},
        {"\"status_code\":\"abc\"", "status_code", "status_code 'abc' is not a number"},
        {"\"status_code\":200.5", "status_code", "status_code 200.5 is not an integer"},
        {"\"status_code\":{}", "status_code", "status_code expected a number, got an object"},
        {"\"latency_ms\":[1]", "latency_ms", "latency_ms expected a number, got an array"},
        {"\"service\":5", "service", "service expected text, got a number"},
        {"\"service\":false", "service", "service expected text, got a boolean"},
        {"\"service\":{\"a\":1}", "service", "service expected text, got an object"},
        {"\"service\":[\"a\"]", "service", "service expected text, got an array"},
        {"\"request_bytes\":-1", "request_bytes", "request_bytes -1 is outside"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[1024];
        /* replace the status_code member when the case sets it */
        if (strncmp(bad[i].member, "\"status_code\"", 13) == 0) {
            char now[40];
            ut_time_text(-60000, now);
            snprintf(text, sizeof text, "{\"ts\":\"%s\",\"method\":\"GET\",\"endpoint\":\"/\",%s}",
                     now, bad[i].member);
        } else {
            api_obj(text, sizeof text, bad[i].member);
        }
        struct parse *t = js("api_usage", text, false, 0);
        if (t->rc != E_INVALID)
            fail_msg("%s was accepted", bad[i].member);
        assert_int_equal(t->r.count, 1);
        assert_reject_at(t, 0, bad[i].reason);
        assert_string_equal(t->r.items[0].field, bad[i].field);
        assert_int_equal(t->b.nrows, 0);
        parse_free(&t);
    }

    /* accepted conversions: numeric strings, 200.0, null for optional, epoch numbers */
    const char *good[] = {"\"latency_ms\":\"7.5\"", "\"latency_ms\":null", "\"host\":null",
                          "\"response_bytes\":1e3", "\"client_id\":\"\""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct parse *t = js("api_usage", api_obj(o, sizeof o, good[i]), false, 0);
        assert_parsed(t);
        parse_free(&t);
    }
    char text[512];
    long long now_ms = (long long)time_now_ms() - 1000;
    snprintf(text, sizeof text,
             "{\"ts\":%lld,\"method\":\"get\",\"endpoint\":\"/\",\"status_code\":200.0}", now_ms);
    struct parse *t = js("api_usage", text, false, 0);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, now_ms);
    assert_int_equal(ut_cell(&t->b, 0, "status_code")->i, 200);
    assert_cell_text(&t->b, 0, "method", "GET");
    parse_free(&t);

    /* a required member that is null is missing */
    snprintf(text, sizeof text,
             "{\"ts\":null,\"method\":\"GET\",\"endpoint\":\"/\",\"status_code\":1}");
    t = js("api_usage", text, false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 0, "missing required field ts");
    assert_reject_at(t, 0, "status_code 1 is outside 100..599");
    assert_int_equal(t->r.count, 1);
    parse_free(&t);
}

static void epoch_precision(void **state)
{
    (void)state;
    struct parse *t = parse_new("api_usage", PREC_S, 0);
    char text[256];
    long long s = (long long)(time_now_ms() / 1000) - 60;
    snprintf(text, sizeof text,
             "[{\"ts\":%lld,\"method\":\"GET\",\"endpoint\":\"/\",\"status_code\":200},"
             "{\"ts\":%lld.5,\"method\":\"GET\",\"endpoint\":\"/\",\"status_code\":200}]",
             s, s);
    t->rc = ingest_parse_json(&t->ctx, text, strlen(text), false, &t->b, &t->r);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, s * 1000);
    assert_int_equal(ut_cell(&t->b, 1, "ts")->i, s * 1000 + 500);
    parse_free(&t);
}

static void json_columns_and_escapes(void **state)
{
    (void)state;
    char now[40], text[1024];
    ut_time_text(-60000, now);
    snprintf(text, sizeof text,
             "{\"ts\":\"%s\",\"level\":\"error\",\"message\":\"line1\\nline2 \\u00e9 \\\"q\\\" "
             "\\\\ \\ud83d\\ude00\",\"context\":{\"z\":1,\"a\":{\"b\":[1,2]}},"
             "\"stack_trace\":\"at x\\tat y\"}",
             now);
    struct parse *t = js("error_logs", text, false, 0);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "message", "line1\nline2 \xc3\xa9 \"q\" \\ \xf0\x9f\x98\x80");
    assert_cell_text(&t->b, 0, "context", "{\"a\":{\"b\":[1,2]},\"z\":1}");
    assert_cell_text(&t->b, 0, "stack_trace", "at x\tat y");
    parse_free(&t);

    /* a JSON column also takes the object as a string */
    snprintf(text, sizeof text,
             "{\"ts\":\"%s\",\"level\":\"error\",\"message\":\"m\",\"context\":\"{\\\"k\\\": 2}\"}",
             now);
    t = js("error_logs", text, false, 0);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "context", "{\"k\":2}");
    parse_free(&t);

    snprintf(text, sizeof text,
             "{\"ts\":\"%s\",\"level\":\"error\",\"message\":\"m\",\"context\":[1]}", now);
    t = js("error_logs", text, false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 0, "context expected a JSON object, got an array");
    parse_free(&t);

    /* system_metrics labels: an object of strings, stored canonically */
    snprintf(
        text, sizeof text,
        "{\"ts\":\"%s\",\"metric\":\"cpu\",\"value\":1.5,\"labels\":{\"z\":\"1\",\"a\":\"2\"}}",
        now);
    t = js("system_metrics", text, false, 0);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "labels", "{\"a\":\"2\",\"z\":\"1\"}");
    parse_free(&t);
}

/* A boolean for a JSON column names what was expected (the first parser said "a number"). */
static void bool_for_json_column_message(void **state)
{
    (void)state;
    char now[40], text[512];
    ut_time_text(-60000, now);
    snprintf(text, sizeof text,
             "{\"ts\":\"%s\",\"level\":\"error\",\"message\":\"m\",\"context\":true}", now);
    struct parse *t = js("error_logs", text, false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 0, "context expected a JSON object, got a boolean");
    parse_free(&t);
}

/* A member name with \u0000 is an unknown field (column_of once compared with strncmp and read
 * past the column name: a global-buffer-overflow found by fuzz/fuzz_json; the input is
 * fuzz/crashes/json-column_of-global-overflow). */
static void nul_in_member_name(void **state)
{
    (void)state;
    struct parse *t = js("api_usage", "{\"ts\\u0000xxxxxxxxxxxx\":1}", false, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 0, "unknown field");
    parse_free(&t);
}

static void row_limits(void **state)
{
    (void)state;
    char a[512];
    api_obj(a, sizeof a, "");
    struct buf arr, nd;
    buf_init(&arr, 1 << 20);
    buf_init(&nd, 1 << 20);
    buf_putc(&arr, '[');
    for (int i = 0; i < 5; i++) {
        buf_printf(&arr, "%s%s", i ? "," : "", a);
        buf_printf(&nd, "%s\n", a);
    }
    buf_putc(&arr, ']');
    struct parse *t = js("api_usage", arr.data, false, 5);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 5);
    parse_free(&t);
    t = js("api_usage", arr.data, false, 4);
    assert_int_equal(t->rc, E_LIMIT);
    parse_free(&t);
    t = js("api_usage", nd.data, false, 5);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 5);
    parse_free(&t);
    t = js("api_usage", nd.data, false, 4);
    assert_int_equal(t->rc, E_LIMIT);
    parse_free(&t);
    t = js("api_usage", nd.data, true, 4);
    assert_int_equal(t->rc, E_LIMIT);
    parse_free(&t);
    buf_release(&arr);
    buf_release(&nd);
}

/* ingest.max_json_depth and ingest.max_string_bytes: at the limit a body parses, one past it
 * the request is rejected with a reason naming the option. */
static void depth_and_string_limits(void **state)
{
    (void)state;
    char deep[512], fits[512], longer[512];
    struct parse *t = parse_new("error_logs", PREC_MS, 0);
    t->ctx.max_json_depth = 3;
    t->ctx.max_string_bytes = 30; /* the ts text is 24 */
    char now[40];
    ut_time_text(-60000, now);
    snprintf(deep, sizeof deep,
             "{\"ts\":\"%s\",\"level\":\"error\",\"message\":\"m\",\"context\":"
             "{\"a\":{\"b\":{\"c\":{}}}}}",
             now);
    t->rc = ingest_parse_json(&t->ctx, deep, strlen(deep), false, &t->b, &t->r);
    assert_reject_at(t, 1, "nested deeper than the limit of 3 levels (ingest.max_json_depth)");
    parse_reset(t);
    snprintf(fits, sizeof fits,
             "[{\"ts\":\"%s\",\"level\":\"error\",\"message\":\"123456789012345678901234567890\","
             "\"context\":"
             "{\"a\":{\"b\":{}}}}]",
             now);
    t->rc = ingest_parse_json(&t->ctx, fits, strlen(fits), false, &t->b, &t->r);
    assert_parsed(t);
    parse_reset(t);
    snprintf(
        longer, sizeof longer,
        "[{\"ts\":\"%s\",\"level\":\"error\",\"message\":\"1234567890123456789012345\\u00e9\"}]",
        now);
    t->rc = ingest_parse_json(&t->ctx, longer, strlen(longer), false, &t->b, &t->r);
    assert_reject_at(t, 0, "longer than the limit of 30 bytes (ingest.max_string_bytes)");
    parse_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_object),
        cmocka_unit_test(arrays),
        cmocka_unit_test(ndjson),
        cmocka_unit_test(empty_and_invalid),
        cmocka_unit_test(value_types),
        cmocka_unit_test(epoch_precision),
        cmocka_unit_test(json_columns_and_escapes),
        cmocka_unit_test(bool_for_json_column_message),
        cmocka_unit_test(nul_in_member_name),
        cmocka_unit_test(row_limits),
        cmocka_unit_test(depth_and_string_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
