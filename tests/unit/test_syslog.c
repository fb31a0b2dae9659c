/*
 * ingest: syslog messages into error_logs — RFC 5424 with structured data and NILVALUEs, RFC
 * 3164 with and without hostname, tag and pid, its year guessed across New Year and its zone
 * taken from TZ, severities mapped to levels, fingerprints equal to the JSON path's, malformed
 * messages, invalid UTF-8, long messages and senders' clocks ahead of ours.
 */
#include "unit_ingest.h"

#include <jansson.h>
#include <time.h>

/* Parses text as received now_ms and appends its row (peer 192.0.2.7); the row's fate in
 * t->rc: 0 stored, E_INVALID rejected. */
static struct parse *sl(const char *text, int64_t now_ms, struct syslog_message *m)
{
    struct parse *t = parse_new("error_logs", PREC_MS, 0);
    t->ctx.validate.now_ms = now_ms;
    struct err e;
    assert_int_equal(ingest_syslog_parse(text, strlen(text), now_ms, m, &e), 0);
    t->rc = ingest_syslog_row(&t->ctx, m, "192.0.2.7", &t->b, 0, &t->r) ? 0 : E_INVALID;
    return t;
}

/* The context column of row 0, parsed. */
static json_t *context_of(struct parse *t)
{
    const struct value *v = ut_cell(&t->b, 0, "context");
    assert_int_equal(v->type, VAL_TEXT);
    json_t *j = json_loadb(v->s, v->len, 0, NULL);
    assert_non_null(j);
    return j;
}

static void assert_json_text(json_t *obj, const char *path_a, const char *path_b, const char *want)
{
    json_t *v = json_object_get(obj, path_a);
    if (path_b)
        v = json_object_get(v, path_b);
    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0)
        fail_msg("context %s%s%s is not '%s'", path_a, path_b ? "." : "", path_b ? path_b : "",
                 want);
}

static void use_zone(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static void rfc5424_full(void **state)
{
    (void)state;
    int64_t now = time_now_ms(), sent = now - 90000;
    char ts[40], text[512];
    time_format_rfc3339(sent, ts, sizeof ts);
    snprintf(text, sizeof text,
             "<165>1 %s mymachine.example.com evntslog 1234 ID47 [exampleSDID@32473 iut=\"3\" "
             "eventSource=\"App \\\"x\\\" \\]\"][examplePriority@32473 class=\"high\"] "
             "\xEF\xBB\xBF"
             "An application event log entry",
             ts);
    struct syslog_message m;
    struct parse *t = sl(text, now, &m);
    assert_true(m.rfc5424);
    assert_int_equal(m.facility, 20);
    assert_int_equal(m.severity, 5);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, sent);
    assert_cell_text(&t->b, 0, "host", "mymachine.example.com");
    assert_cell_text(&t->b, 0, "service", "evntslog");
    assert_cell_text(&t->b, 0, "level", "notice");
    assert_cell_text(&t->b, 0, "message", "An application event log entry");
    json_t *c = context_of(t);
    assert_json_text(c, "facility", NULL, "local4");
    assert_json_text(c, "severity", NULL, "notice");
    assert_json_text(c, "procid", NULL, "1234");
    assert_json_text(c, "msgid", NULL, "ID47");
    assert_json_text(c, "peer", NULL, "192.0.2.7");
    assert_json_text(c, "format", NULL, "rfc5424");
    json_t *sd = json_object_get(c, "sd");
    assert_json_text(sd, "exampleSDID@32473", "iut", "3");
    assert_json_text(sd, "exampleSDID@32473", "eventSource", "App \"x\" ]");
    assert_json_text(sd, "examplePriority@32473", "class", "high");
    json_decref(c);
    parse_free(&t);
}

static void rfc5424_zone_offset(void **state)
{
    (void)state;
    int64_t now = time_now_ms();
    /* an hour ago, written as local time two hours east of UTC */
    int64_t sent = (now - 3600000) / 1000 * 1000;
    time_t secs = (time_t)(sent / 1000) + 7200;
    struct tm tm;
    gmtime_r(&secs, &tm);
    char text[256];
    snprintf(text, sizeof text, "<11>1 %04d-%02d-%02dT%02d:%02d:%02d+02:00 h app - - - boom",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    struct syslog_message m;
    struct parse *t = sl(text, now, &m);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, sent);
    assert_cell_text(&t->b, 0, "level", "error");
    parse_free(&t);
}

static void rfc5424_nil_values(void **state)
{
    (void)state;
    int64_t now = time_now_ms();
    struct syslog_message m;
    struct parse *t = sl("<11>1 - - - - - - disk full", now, &m);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, now); /* no time: received now */
    assert_cell_text(&t->b, 0, "host", "192.0.2.7");   /* no HOSTNAME: the sender */
    assert_cell_text(&t->b, 0, "service", "");
    assert_cell_text(&t->b, 0, "message", "disk full");
    json_t *c = context_of(t);
    assert_null(json_object_get(c, "procid"));
    assert_null(json_object_get(c, "sd"));
    json_decref(c);
    parse_free(&t);
    /* no MSG at all is an event with an empty message */
    t = sl("<11>1 - host app - - -", now, &m);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "message", "");
    parse_free(&t);
}

static void rfc3164_forms(void **state)
{
    (void)state;
    use_zone("UTC");
    int64_t now = 1796001600000LL; /* 2026-11-30T01:20:00Z */
    struct {
        const char *text, *host, *service, *procid, *msg;
        int severity;
    } cases[] = {
        {"<34>Nov 30 01:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
         "mymachine", "su", NULL, "'su root' failed for lonvick on /dev/pts/8", 2},
        {"<13>Nov 30 01:00:00 web-1 nginx[4711]: upstream timed out", "web-1", "nginx", "4711",
         "upstream timed out", 5},
        {"<11>Nov 30 01:00:00 cron[12]: job failed", "192.0.2.7", "cron", "12", "job failed", 3},
        {"<11>Nov  3 01:00:00 app: padded day", "192.0.2.7", "app", NULL, "padded day", 3},
        {"<12>no header at all", "192.0.2.7", "", NULL, "no header at all", 4},
        {"<12>Nov 30 01:00:00 host only a message", "host", "", NULL, "only a message", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct syslog_message m;
        struct parse *t = sl(cases[i].text, now, &m);
        assert_false(m.rfc5424);
        assert_int_equal(m.severity, cases[i].severity);
        assert_parsed(t);
        assert_cell_text(&t->b, 0, "host", cases[i].host);
        assert_cell_text(&t->b, 0, "service", cases[i].service);
        assert_cell_text(&t->b, 0, "message", cases[i].msg);
        json_t *c = context_of(t);
        if (cases[i].procid)
            assert_json_text(c, "procid", NULL, cases[i].procid);
        else
            assert_null(json_object_get(c, "procid"));
        assert_json_text(c, "format", NULL, "rfc3164");
        json_decref(c);
        parse_free(&t);
    }
    struct syslog_message m;
    struct parse *t = sl("<34>Nov 30 01:14:15 mymachine su: x", now, &m);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, 1796001600000LL - 345000);
    parse_free(&t);
}

/* The time ingest_syslog_parse gives text received at now_ms. */
static int64_t bsd_time(const char *text, int64_t now_ms)
{
    struct syslog_message m;
    struct err e;
    assert_int_equal(ingest_syslog_parse(text, strlen(text), now_ms, &m, &e), 0);
    assert_true(m.has_time);
    return m.ts_ms;
}

/* RFC 3164 has no year: the one nearest to the time of receipt, across New Year both ways. */
static void rfc3164_year_wrap(void **state)
{
    (void)state;
    use_zone("UTC");
    int64_t jan1 = 1798761630000LL; /* 2027-01-01T00:00:30Z */
    assert_int_equal(bsd_time("<11>Dec 31 23:59:50 h app: late", jan1), jan1 - 40000);
    int64_t dec31 = 1798761599000LL; /* 2026-12-31T23:59:59Z */
    assert_int_equal(bsd_time("<11>Jan  1 00:00:05 h app: early", dec31), dec31 + 6000);
}

/* RFC 3164's time is the server's local time. */
static void rfc3164_local_zone(void **state)
{
    (void)state;
    use_zone("Europe/Berlin");
    int64_t summer = 1782907200000LL; /* 2026-07-01T12:00:00Z; CEST is UTC+2 */
    assert_int_equal(bsd_time("<11>Jul  1 12:00:00 h app: x", summer), summer - 2 * HOUR_MS);
    int64_t winter = 1768478400000LL; /* 2026-01-15T12:00:00Z; CET is UTC+1 */
    assert_int_equal(bsd_time("<11>Jan 15 12:00:00 h app: x", winter), winter - HOUR_MS);
    use_zone("UTC");
}

/* rsyslog's forwarding formats may put an RFC 3339 time into the BSD header. */
static void rfc3164_with_rfc3339_time(void **state)
{
    (void)state;
    int64_t now = time_now_ms(), sent = now - 5000;
    char ts[40], text[256];
    time_format_rfc3339(sent, ts, sizeof ts);
    snprintf(text, sizeof text, "<27>%s db1 postgres[99]: FATAL: too many connections", ts);
    struct syslog_message m;
    struct parse *t = sl(text, now, &m);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, sent);
    assert_cell_text(&t->b, 0, "host", "db1");
    assert_cell_text(&t->b, 0, "service", "postgres");
    assert_cell_text(&t->b, 0, "message", "FATAL: too many connections");
    parse_free(&t);
}

static void severities_to_levels(void **state)
{
    (void)state;
    const char *levels[8] = {"fatal",   "fatal",  "critical", "error",
                             "warning", "notice", "info",     "debug"};
    for (int sev = 0; sev < 8; sev++) {
        char text[64];
        snprintf(text, sizeof text, "<%d>1 - h app - - - m", 8 * 3 + sev);
        struct syslog_message m;
        struct parse *t = sl(text, time_now_ms(), &m);
        assert_parsed(t);
        assert_int_equal(m.facility, 3);
        assert_cell_text(&t->b, 0, "level", levels[sev]);
        assert_int_equal(ingest_syslog_severity_parse(ingest_syslog_severity_name(sev)), sev);
        parse_free(&t);
    }
    assert_int_equal(ingest_syslog_severity_parse("warn"), -1);
    assert_null(ingest_syslog_severity_name(8));
}

/* The same error through syslog and through the JSON API groups under one fingerprint. */
static void fingerprint_matches_json(void **state)
{
    (void)state;
    int64_t now = time_now_ms();
    struct syslog_message m;
    struct parse *t =
        sl("<11>1 - web1 checkout 77 - - payment 4711 failed for order 'x-1'", now, &m);
    assert_parsed(t);
    char json[256], ts[40];
    time_format_rfc3339(now, ts, sizeof ts);
    snprintf(json, sizeof json,
             "{\"ts\": \"%s\", \"service\": \"checkout\", \"host\": \"web1\", \"level\": "
             "\"error\", \"message\": \"payment 4711 failed for order 'x-1'\"}",
             ts);
    struct parse *j = parse_new("error_logs", PREC_MS, 0);
    j->rc = ingest_parse_json(&j->ctx, json, strlen(json), false, &j->b, &j->r);
    assert_parsed(j);
    const struct value *a = ut_cell(&t->b, 0, "fingerprint"), *b = ut_cell(&j->b, 0, "fingerprint");
    assert_int_equal(a->type, VAL_TEXT);
    assert_int_equal(a->len, 16);
    assert_memory_equal(a->s, b->s, 16);
    parse_free(&t);
    parse_free(&j);
}

static void malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "no pri here",
        "<>1 - - - - - - x",
        "<192>1 - - - - - - x",
        "<1234>x",
        "<13",
        "<13>1 yesterday h app - - - x",
        "<13>1 - h app - - [unterminated x=\"y\"",
        "<13>1 - h app - - nosd",
        "<13>1 - h",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct syslog_message m;
        struct err e;
        err_clear(&e);
        if (ingest_syslog_parse(bad[i], strlen(bad[i]), time_now_ms(), &m, &e) != E_INVALID)
            fail_msg("'%s' was not refused", bad[i]);
        assert_true(e.msg[0] != '\0');
    }
}

/* Senders of RFC 3164 use any charset, and messages may be long: the row is still stored. */
static void invalid_utf8_and_long_messages(void **state)
{
    (void)state;
    struct syslog_message m;
    struct parse *t =
        sl("<11>1 - h\xff app - - - caf\xe9 \xc3\xa9t\xe9\x00tail", time_now_ms(), &m);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "host", "h\xEF\xBF\xBD");
    assert_cell_text(&t->b, 0, "message", "caf\xEF\xBF\xBD \xc3\xa9t\xEF\xBF\xBD");
    parse_free(&t);
    size_t n = 40000;
    char *big = malloc(n + 32);
    int k = snprintf(big, n + 32, "<11>1 - h app - - - ");
    memset(big + k, 'x', n);
    big[k + (int)n] = '\0';
    memcpy(big + k + 16383, "\xc3\xa9", 2); /* a character across the column's limit */
    t = sl(big, time_now_ms(), &m);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "message")->len, 16383);
    parse_free(&t);
    free(big);
}

/* Each invalid byte becomes the three bytes of U+FFFD: the text triples within its limits. */
static void invalid_bytes_triple_in_size(void **state)
{
    (void)state;
    char text[256];
    int k = snprintf(text, sizeof text, "<11>1 - h app - - - ");
    memset(text + k, '\0', 100); /* NUL bytes, as the fuzzer sent them */
    struct syslog_message m;
    struct err e;
    assert_int_equal(ingest_syslog_parse(text, (size_t)k + 100, time_now_ms(), &m, &e), 0);
    struct parse *t = parse_new("error_logs", PREC_MS, 0);
    assert_true(ingest_syslog_row(&t->ctx, &m, "192.0.2.7", &t->b, 0, &t->r));
    assert_int_equal(ut_cell(&t->b, 0, "message")->len, 0); /* trailing NULs are framing */
    parse_free(&t);
    memset(text + k, '\xff', 100);
    assert_int_equal(ingest_syslog_parse(text, (size_t)k + 100, time_now_ms(), &m, &e), 0);
    t = parse_new("error_logs", PREC_MS, 0);
    assert_true(ingest_syslog_row(&t->ctx, &m, "192.0.2.7", &t->b, 0, &t->r));
    const struct value *msg = ut_cell(&t->b, 0, "message");
    assert_int_equal(msg->len, 300);
    for (size_t i = 0; i < 300; i += 3)
        assert_memory_equal(msg->s + i, "\xEF\xBF\xBD", 3);
    parse_free(&t);
}

/* A sender's clock ahead of ours: the error is stored now, its own time kept in context. */
static void clock_ahead_is_clamped(void **state)
{
    (void)state;
    int64_t now = time_now_ms();
    char ts[40], text[256];
    time_format_rfc3339(now + 3 * HOUR_MS, ts, sizeof ts);
    snprintf(text, sizeof text, "<11>1 %s h app - - - from the future", ts);
    struct syslog_message m;
    struct parse *t = sl(text, now, &m);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, now);
    json_t *c = context_of(t);
    assert_json_text(c, "sender_time", NULL, ts);
    json_decref(c);
    parse_free(&t);
    /* a message older than retention is refused by validation, as on the JSON path */
    time_format_rfc3339(now - 400 * DAY_MS, ts, sizeof ts);
    snprintf(text, sizeof text, "<11>1 %s h app - - - ancient", ts);
    t = sl(text, now, &m);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->b.nrows, 0);
    parse_free(&t);
}

/* Structured data far bigger than the context column keeps the other context fields. */
static void huge_structured_data(void **state)
{
    (void)state;
    struct buf text;
    buf_init(&text, 1 << 20);
    buf_printf(&text, "<11>1 - h app - - ");
    for (int i = 0; i < 400; i++)
        buf_printf(&text, "[id%d a=\"%060d\"]", i, i);
    buf_printf(&text, " msg");
    struct syslog_message m;
    struct parse *t = sl(text.data, time_now_ms(), &m);
    assert_parsed(t);
    json_t *c = context_of(t);
    assert_true(json_is_true(json_object_get(c, "sd_truncated")));
    assert_json_text(c, "facility", NULL, "user");
    json_decref(c);
    assert_cell_text(&t->b, 0, "message", "msg");
    parse_free(&t);
    buf_release(&text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc5424_full),
        cmocka_unit_test(rfc5424_zone_offset),
        cmocka_unit_test(rfc5424_nil_values),
        cmocka_unit_test(rfc3164_forms),
        cmocka_unit_test(rfc3164_year_wrap),
        cmocka_unit_test(rfc3164_local_zone),
        cmocka_unit_test(rfc3164_with_rfc3339_time),
        cmocka_unit_test(severities_to_levels),
        cmocka_unit_test(fingerprint_matches_json),
        cmocka_unit_test(malformed),
        cmocka_unit_test(invalid_utf8_and_long_messages),
        cmocka_unit_test(invalid_bytes_triple_in_size),
        cmocka_unit_test(clock_ahead_is_clamped),
        cmocka_unit_test(huge_structured_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
