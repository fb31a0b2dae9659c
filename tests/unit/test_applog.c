/*
 * ingest: application logs into error_logs — JSON lines and their common field names, plain
 * text through logs.plain_pattern, the level mapping and logs.min_level, multi-line stack
 * traces (Python, Java, Go) joined into their event also when the lines arrive one at a time,
 * fingerprints equal to the JSON API's, and bad lines reported with their line numbers.
 */
#include "unit_ingest.h"

#define PATH "/var/log/shop/checkout.log"

static struct parse *new_parse(const char *min_level)
{
    struct parse *t = parse_new("error_logs", PREC_MS, 0);
    rejects_init(&t->r, "line");
    snprintf(t->cfg.logs_host, sizeof t->cfg.logs_host, "app-1");
    snprintf(t->cfg.logs_min_level, sizeof t->cfg.logs_min_level, "%s", min_level);
    return t;
}

static struct logparser *parser(struct parse *t, const char *kind)
{
    struct logparser *p;
    struct err e;
    if (logparser_new(&p, &t->cfg, kind, PATH, &e) != 0)
        fail_msg("logparser_new: %s", e.msg);
    assert_ptr_equal(logparser_table(p), schema_table("error_logs"));
    return p;
}

static struct parse *parse_text(struct parse *t, const char *kind, const char *text)
{
    struct logparser *p = parser(t, kind);
    t->rc = ingest_parse_log(p, &t->ctx, text, strlen(text), 1, true, &t->b, &t->r);
    logparser_free(&p);
    return t;
}

/* A time a minute ago as RFC 3339 (with ms) and in ms. */
static int64_t recent(char out[40])
{
    int64_t ms = time_now_ms() - 60000;
    time_format_rfc3339(ms, out, 40);
    return ms;
}

static void json_fields_map_to_columns(void **state)
{
    (void)state;
    char when[40], text[1024];
    int64_t ms = recent(when);
    snprintf(text, sizeof text,
             "{\"@timestamp\":\"%s\",\"level\":\"ERROR\",\"msg\":\"payment 4411 declined\","
             "\"logger\":\"payments\",\"traceId\":\"4bf92f35\",\"service\":\"shop\","
             "\"hostname\":\"pod-7\",\"user\":\"u1\",\"attempt\":3,"
             "\"error\":{\"type\":\"CardError\",\"message\":\"declined\","
             "\"stack\":\"CardError: declined\\n    at pay (pay.js:10)\"}}\n",
             when);
    struct parse *t = parse_text(new_parse("warning"), "json", text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ms);
    assert_cell_text(&t->b, 0, "level", "error");
    assert_cell_text(&t->b, 0, "message", "payment 4411 declined");
    assert_cell_text(&t->b, 0, "component", "payments");
    assert_cell_text(&t->b, 0, "trace_id", "4bf92f35");
    assert_cell_text(&t->b, 0, "service", "shop");
    assert_cell_text(&t->b, 0, "host", "pod-7");
    assert_cell_text(&t->b, 0, "error_type", "CardError");
    assert_cell_text(&t->b, 0, "stack_trace", "CardError: declined\n    at pay (pay.js:10)");
    assert_cell_text(&t->b, 0, "context", "{\"attempt\":3,\"user\":\"u1\"}");
    assert_int_equal(ut_cell(&t->b, 0, "fingerprint")->len, 16);
    parse_free(&t);
}

static void json_epoch_times_and_defaults(void **state)
{
    (void)state;
    int64_t ms = time_now_ms() - 60000;
    char text[1024];
    snprintf(text, sizeof text,
             "{\"time\":%lld,\"level\":50,\"msg\":\"pino ms\"}\n"
             "{\"ts\":%lld.%03lld,\"severity\":\"crit\",\"message\":\"seconds\"}\n"
             "{\"timestamp\":%lld000000,\"lvl\":\"warn\",\"msg\":\"nanoseconds\"}\n"
             "{\"msg\":\"no time, no level, an exception\",\"exc_type\":\"KeyError\"}\n",
             (long long)ms, (long long)(ms / 1000), (long long)(ms % 1000), (long long)ms);
    struct parse *t = parse_text(new_parse("warning"), "json", text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 4);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(ut_cell(&t->b, i, "ts")->i, ms);
    assert_cell_text(&t->b, 0, "level", "error");
    assert_cell_text(&t->b, 1, "level", "critical");
    assert_cell_text(&t->b, 2, "level", "warning");
    /* no time: the time it was read; no level but an exception: error */
    assert_int_equal(ut_cell(&t->b, 3, "ts")->i, t->ctx.validate.now_ms);
    assert_cell_text(&t->b, 3, "level", "error");
    assert_cell_text(&t->b, 3, "error_type", "KeyError");
    /* service from the file's name, host from logs.host */
    assert_cell_text(&t->b, 0, "service", "checkout");
    assert_cell_text(&t->b, 0, "host", "app-1");
    parse_free(&t);
}

static void levels_map_onto_the_schema(void **state)
{
    (void)state;
    static const struct {
        const char *level, *want;
    } cases[] = {
        {"\"TRACE\"", "debug"},   {"\"debug\"", "debug"},
        {"\"INFO\"", "info"},     {"\"notice\"", "notice"},
        {"\"WARN\"", "warning"},  {"\"Warning\"", "warning"},
        {"\"ERR\"", "error"},     {"\"SEVERE\"", "error"},
        {"\"CRIT\"", "critical"}, {"\"alert\"", "critical"},
        {"\"FATAL\"", "fatal"},   {"\"PANIC\"", "fatal"},
        {"\"EMERG\"", "fatal"},   {"3", "error"},
        {"4", "warning"},         {"0", "fatal"},
        {"7", "debug"},           {"30", "info"},
        {"40", "warning"},        {"60", "fatal"},
        {"\"[error]\"", "error"},
    };
    char when[40], text[4096];
    recent(when);
    size_t len = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "{\"ts\":\"%s\",\"level\":%s,\"msg\":\"m%zu\"}\n", when,
                                cases[i].level, i);
    struct parse *t = parse_text(new_parse("debug"), "json", text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, sizeof cases / sizeof cases[0]);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_cell_text(&t->b, i, "level", cases[i].want);
    parse_free(&t);
}

static void min_level_skips_events_and_their_traces(void **state)
{
    (void)state;
    char when[40], text[1024];
    recent(when);
    snprintf(text, sizeof text,
             "%s INFO [web] request served\n"
             "%s DEBUG [web] details\n"
             "    with a continuation\n"
             "%s NOTICE [web] config reloaded\n"
             "%s WARNING [web] slow\n"
             "%s ERROR [web] failed\n",
             when, when, when, when, when);
    struct parse *t = parse_text(new_parse("warning"), "plain", text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 2);
    assert_cell_text(&t->b, 0, "message", "slow");
    assert_cell_text(&t->b, 1, "message", "failed");
    parse_free(&t);
    t = parse_text(new_parse("error"), "plain", text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    parse_free(&t);
}

static void plain_python_java_and_go_traces(void **state)
{
    (void)state;
    char text[4096];
    /* Python's logging: comma before the milliseconds, no zone (UTC) */
    int64_t ms = (time_now_ms() / 1000 - 60) * 1000 + 123;
    char when[40];
    time_format_rfc3339(ms, when, sizeof when);
    when[10] = ' ';
    when[19] = ',';
    when[23] = '\0';
    snprintf(text, sizeof text,
             "%s ERROR [worker] task 42 failed\n"
             "Traceback (most recent call last):\n"
             "  File \"task.py\", line 3, in run\n"
             "    raise ValueError(\"bad input 42\")\n"
             "ValueError: bad input 42\n"
             "%s CRITICAL [db] pool exhausted\n"
             "java.lang.IllegalStateException: no connection\n"
             "\tat com.shop.Pool.get(Pool.java:88)\n"
             "\t... 12 more\n"
             "Caused by: java.net.SocketTimeoutException: connect timed out\n"
             "\tat java.net.Socket.connect(Socket.java:601)\n"
             "%s FATAL [main] panic\n"
             "goroutine 1 [running]:\n"
             "main.main()\n"
             "\t/src/main.go:12 +0x1d\n"
             "\n",
             when, when, when);
    struct parse *t = parse_text(new_parse("warning"), "plain", text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ms);
    assert_cell_text(&t->b, 0, "level", "error");
    assert_cell_text(&t->b, 0, "component", "worker");
    assert_cell_text(&t->b, 0, "message", "task 42 failed");
    assert_cell_text(&t->b, 0, "error_type", "ValueError");
    assert_cell_text(&t->b, 0, "stack_trace",
                     "Traceback (most recent call last):\n"
                     "  File \"task.py\", line 3, in run\n"
                     "    raise ValueError(\"bad input 42\")\n"
                     "ValueError: bad input 42");
    assert_cell_text(&t->b, 1, "level", "critical");
    assert_cell_text(&t->b, 1, "error_type", "java.lang.IllegalStateException");
    assert_non_null(memmem(ut_cell(&t->b, 1, "stack_trace")->s,
                           ut_cell(&t->b, 1, "stack_trace")->len, "Caused by:", 10));
    assert_cell_text(&t->b, 2, "level", "fatal");
    assert_cell_text(&t->b, 2, "stack_trace",
                     "goroutine 1 [running]:\nmain.main()\n\t/src/main.go:12 +0x1d");
    parse_free(&t);
}

/* The tailer feeds lines as they come: an event waits for its trace until the next event line
 * or a flush, and reports where it started. */
static void event_completed_by_next_line_or_flush(void **state)
{
    (void)state;
    struct parse *t = new_parse("warning");
    struct logparser *p = parser(t, "plain");
    char when[40], line[200];
    recent(when);
    struct logparser_pending pend;
    assert_false(logparser_pending(p, &pend));
    int n = snprintf(line, sizeof line, "%s ERROR [a] first", when);
    assert_int_equal(logparser_line(p, &t->ctx, line, (size_t)n, 1, 0, &t->b, &t->r), 0);
    assert_true(logparser_pending(p, &pend));
    assert_int_equal(pend.offset, 0);
    assert_int_equal(pend.line_no, 1);
    assert_int_equal(t->b.nrows, 0);
    assert_int_equal(logparser_line(p, &t->ctx, "  at x", 6, 2, 100, &t->b, &t->r), 0);
    assert_int_equal(t->b.nrows, 0);
    n = snprintf(line, sizeof line, "%s ERROR [a] second", when);
    assert_int_equal(logparser_line(p, &t->ctx, line, (size_t)n, 3, 107, &t->b, &t->r), 0);
    assert_int_equal(t->b.nrows, 1);
    assert_cell_text(&t->b, 0, "stack_trace", "  at x");
    assert_true(logparser_pending(p, &pend));
    assert_int_equal(pend.offset, 107);
    assert_int_equal(pend.line_no, 3);
    assert_int_equal(logparser_flush(p, &t->ctx, &t->b, &t->r), 0);
    assert_int_equal(t->b.nrows, 2);
    assert_int_equal(ut_cell(&t->b, 1, "stack_trace")->type, VAL_NULL);
    assert_false(logparser_pending(p, &pend));
    assert_no_rejects(&t->r);
    logparser_free(&p);
    parse_free(&t);
}

/* The same event sent to the JSON API gets the same fingerprint. */
static void fingerprint_matches_the_json_path(void **state)
{
    (void)state;
    char when[40], text[1024], json[1024];
    recent(when);
    snprintf(text, sizeof text, "%s ERROR [orders] order 12345 failed for 'bob'\n", when);
    struct parse *t = parse_text(new_parse("warning"), "plain", text);
    assert_parsed(t);
    snprintf(json, sizeof json,
             "{\"ts\":\"%s\",\"level\":\"error\",\"component\":\"orders\",\"service\":"
             "\"checkout\",\"message\":\"order 12345 failed for 'bob'\"}",
             when);
    struct parse *j = new_parse("warning");
    j->rc = ingest_parse_json(&j->ctx, json, strlen(json), false, &j->b, &j->r);
    assert_parsed(j);
    assert_cell_text(&t->b, 0, "fingerprint", ut_cell(&j->b, 0, "fingerprint")->s);
    parse_free(&j);
    parse_free(&t);
}

static void bad_lines_reported_with_line_numbers(void **state)
{
    (void)state;
    char when[40], text[1024];
    recent(when);
    snprintf(text, sizeof text,
             "  a trace line with no event before it\n"
             "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"good\"}\n"
             "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\n"
             "{\"ts\":\"%s\",\"level\":\"loud\",\"msg\":\"bad level\"}\n"
             "  its trace is dropped with it\n"
             "{\"ts\":\"yesterday\",\"level\":\"error\",\"msg\":\"bad time\"}\n"
             "{\"ts\":\"%s\",\"level\":\"error\"}\n"
             "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"good again\"}\n",
             when, when, when, when, when);
    struct parse *t = parse_text(new_parse("warning"), "json", text);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->b.nrows, 2);
    assert_cell_text(&t->b, 0, "message", "good");
    assert_cell_text(&t->b, 1, "message", "good again");
    assert_reject_at(t, 1, "not a JSON object");
    assert_reject_at(t, 3, "invalid JSON");
    assert_reject_at(t, 4, "level 'loud' is not a level");
    assert_reject_at(t, 6, "not an RFC 3339 time");
    assert_reject_at(t, 7, "missing required field message");
    assert_int_equal(t->r.count, 5);
    parse_free(&t);
}

static void custom_plain_patterns(void **state)
{
    (void)state;
    struct parse *t = new_parse("warning");
    snprintf(t->cfg.logs_plain_pattern, sizeof t->cfg.logs_plain_pattern,
             "^%%{TIME} (svc=%%{SERVICE} )?trace=%%{TRACE} %%{LEVEL} %%{TYPE}: %%{MESSAGE}$");
    char when[40], text[512];
    int64_t ms = recent(when);
    snprintf(text, sizeof text,
             "%s svc=billing trace=ab-12 ERROR TimeoutError: upstream slow\n"
             "%s trace=cd-34 WARN Retry: again\n",
             when, when);
    parse_text(t, "plain", text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 2);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ms);
    assert_cell_text(&t->b, 0, "service", "billing");
    assert_cell_text(&t->b, 0, "trace_id", "ab-12");
    assert_cell_text(&t->b, 0, "error_type", "TimeoutError");
    assert_cell_text(&t->b, 0, "message", "upstream slow");
    assert_cell_text(&t->b, 1, "service", "checkout"); /* the optional group did not match */
    assert_cell_text(&t->b, 1, "level", "warning");
    parse_free(&t);

    static const struct {
        const char *pattern, *error;
    } bad[] = {
        {"%{TIME} %{NOPE} %{MESSAGE}", "unknown placeholder"},
        {"%{TIME} ([a-z %{MESSAGE}", "not a valid regular expression"},
        {"%{TIME} %{LEVEL}", "has no %{MESSAGE}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct config cfg;
        config_defaults(&cfg);
        snprintf(cfg.logs_plain_pattern, sizeof cfg.logs_plain_pattern, "%s", bad[i].pattern);
        struct logparser *p;
        struct err e;
        assert_int_equal(logparser_new(&p, &cfg, "plain", PATH, &e), E_INVALID);
        if (!strstr(e.msg, bad[i].error))
            fail_msg("%s: %s", bad[i].pattern, e.msg);
    }
}

static void long_messages_and_traces_are_cut(void **state)
{
    (void)state;
    char when[40];
    recent(when);
    struct buf text;
    buf_init(&text, 1 << 22);
    buf_printf(&text, "%s ERROR [big] ", when);
    for (int i = 0; i < 20000; i++)
        buf_putc(&text, 'm');
    buf_putc(&text, '\n');
    for (int i = 0; i < 2000; i++)
        buf_printf(&text, "  at frame %d of a very deep recursion in module.function\n", i);
    struct parse *t = new_parse("warning");
    struct logparser *p = parser(t, "plain");
    t->rc = ingest_parse_log(p, &t->ctx, text.data, text.len, 1, true, &t->b, &t->r);
    logparser_free(&p);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    assert_int_equal(ut_cell(&t->b, 0, "message")->len, 16384);
    assert_true(ut_cell(&t->b, 0, "stack_trace")->len <= 65536);
    assert_true(ut_cell(&t->b, 0, "stack_trace")->len > 60000);
    buf_release(&text);
    parse_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_fields_map_to_columns),
        cmocka_unit_test(json_epoch_times_and_defaults),
        cmocka_unit_test(levels_map_onto_the_schema),
        cmocka_unit_test(min_level_skips_events_and_their_traces),
        cmocka_unit_test(plain_python_java_and_go_traces),
        cmocka_unit_test(event_completed_by_next_line_or_flush),
        cmocka_unit_test(fingerprint_matches_the_json_path),
        cmocka_unit_test(bad_lines_reported_with_line_numbers),
        cmocka_unit_test(custom_plain_patterns),
        cmocka_unit_test(long_messages_and_traces_are_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
