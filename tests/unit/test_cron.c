/*
 * jobs/cron: parsing crontab expressions and macros (and refusing bad ones with the field named),
 * the next firing time in UTC checked against a minute-by-minute search, and daylight saving
 * changes in Europe/Berlin and America/New_York as cronie handles them: a skipped fixed time
 * fires at the change, a repeated one fires once, wildcard-hour jobs run at both occurrences.
 */
#include "unit.h"

#include "jobs/cron.h"

#include <time.h>

static int64_t at(const char *rfc3339)
{
    int64_t ms = 0;
    if (!time_parse_rfc3339(rfc3339, strlen(rfc3339), &ms))
        fail_msg("bad time %s", rfc3339);
    return ms;
}

static struct cron parse(const char *expr)
{
    struct cron c;
    struct err e;
    if (cron_parse(&c, expr, &e) != 0)
        fail_msg("'%s' should parse: %s", expr, e.msg);
    return c;
}

static void zone(const char *name)
{
    struct err e;
    if (cron_set_zone(name, &e) != 0)
        fail_msg("zone %s: %s", name, e.msg);
}

/* next(expr, after) as RFC 3339, for readable failures */
static void assert_next(const char *expr, const char *after, const char *want)
{
    struct cron c = parse(expr);
    int64_t got = cron_next(&c, at(after));
    char text[40] = "never";
    if (got != INT64_MAX)
        time_format_rfc3339(got, text, sizeof text);
    if (strcmp(text, want) != 0)
        fail_msg("'%s' after %s: got %s, want %s", expr, after, text, want);
}

static void fields_and_macros(void **state)
{
    (void)state;
    struct cron c = parse("*/15 0-6/2 1,15 jan-mar mon-fri");
    assert_int_equal(c.minutes, 1ull << 0 | 1ull << 15 | 1ull << 30 | 1ull << 45);
    assert_int_equal(c.hours, 1u << 0 | 1u << 2 | 1u << 4 | 1u << 6);
    assert_int_equal(c.days, 1u << 1 | 1u << 15);
    assert_int_equal(c.months, 1u << 1 | 1u << 2 | 1u << 3);
    assert_int_equal(c.weekdays, 0x3e);
    assert_false(c.any_day || c.any_weekday);
    assert_true(c.fixed_time);
    c = parse("5/20 * * * 7");
    assert_int_equal(c.minutes, 1ull << 5 | 1ull << 25 | 1ull << 45);
    assert_int_equal(c.weekdays, 1); /* 7 is Sunday */
    assert_false(c.fixed_time);
    assert_true(c.any_day);
    c = parse("0 0 * * SUN,sat");
    assert_int_equal(c.weekdays, 1 | 1 << 6);
    c = parse("@daily");
    assert_int_equal(c.minutes, 1);
    assert_int_equal(c.hours, 1);
    assert_true(c.any_day && c.any_weekday && c.fixed_time);
    c = parse("@hourly");
    assert_int_equal(c.hours, (1u << 24) - 1);
    assert_false(c.fixed_time);
    c = parse("@weekly");
    assert_int_equal(c.weekdays, 1);
    c = parse("@every 30s");
    assert_int_equal(c.every_ms, 30000);
    assert_int_equal(cron_next(&c, 1000), 31000);
    c = parse("  @EVERY 2h");
    assert_int_equal(c.every_ms, 7200000);
}

static void bad_expressions(void **state)
{
    (void)state;
    static const struct {
        const char *expr, *msg;
    } cases[] = {
        {"* * * *", "cron: '* * * *' has 4 fields; expected 5"},
        {"* * * * * *", "has 6 fields; expected 5"},
        {"", "has 0 fields"},
        {"60 * * * *", "cron minute: '60' is out of range 0-59"},
        {"* 24 * * *", "cron hour: '24' is out of range 0-23"},
        {"* * 0 * *", "cron day of month: '0' is out of range 1-31"},
        {"* * * 13 *", "cron month: '13' is out of range 1-12"},
        {"* * * * 8", "cron day of week: '8' is out of range 0-7"},
        {"5-1 * * * *", "cron minute: '5-1' is out of range 0-59 (or its start after its end)"},
        {"*/0 * * * *", "cron minute: '*/0' is not *, a value, a range"},
        {"a * * * *", "cron minute: 'a' is not *, a value"},
        {"1,,2 * * * *", "cron minute: '1,,2' has an empty or too long item"},
        {"* * * foo *", "cron month: 'foo' is not *, a value, a range A-B or a step */N, A-B/N "
                        "(numbers or names like jan, mon)"},
        {"1-2-3 * * * *", "cron minute: '1-2-3' is not"},
        {"@sometimes", "cron: '@sometimes' is not one of @yearly, @monthly"},
        {"@every 0s", "cron: '@every 0s': expected a duration of at least 1s"},
        {"@every soon", "cron: '@every soon': expected a duration"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cron c;
        struct err e;
        if (cron_parse(&c, cases[i].expr, &e) != E_INVALID)
            fail_msg("'%s' should be refused", cases[i].expr);
        if (!strstr(e.msg, cases[i].msg))
            fail_msg("'%s': got '%s', want '%s'", cases[i].expr, e.msg, cases[i].msg);
    }
}

static void next_in_utc(void **state)
{
    (void)state;
    zone("UTC");
    assert_next("*/15 * * * *", "2026-05-04T10:07:30Z", "2026-05-04T10:15:00.000Z");
    assert_next("*/15 * * * *", "2026-05-04T10:15:00Z", "2026-05-04T10:30:00.000Z");
    assert_next("0 0 * * *", "2026-05-04T10:07:00Z", "2026-05-05T00:00:00.000Z");
    assert_next("0 9 * * mon-fri", "2026-05-08T10:00:00Z", "2026-05-11T09:00:00.000Z");
    assert_next("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00.000Z");
    assert_next("0 0 30 2 *", "2026-03-01T00:00:00Z", "never");
    assert_next("0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00.000Z");
    /* both day fields restricted: the 1st or a Monday */
    assert_next("0 0 1 * mon", "2026-05-26T00:00:00Z", "2026-06-01T00:00:00.000Z");
    assert_next("0 0 1 * mon", "2026-06-01T00:00:00Z", "2026-06-08T00:00:00.000Z");
    assert_next("@yearly", "2026-05-04T10:07:00Z", "2027-01-01T00:00:00.000Z");
    assert_next("@monthly", "2026-12-31T23:59:59Z", "2027-01-01T00:00:00.000Z");
    assert_next("59 23 31 12 *", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00.000Z");
}

/* The first minute after `after` whose UTC fields match, the slow way. */
static int64_t slow_next(const struct cron *c, int64_t after_ms)
{
    for (int64_t t = (after_ms / 60000 + 1) * 60; t < after_ms / 1000 + 400 * 86400LL; t += 60) {
        struct tm tm;
        time_t x = (time_t)t;
        gmtime_r(&x, &tm);
        bool day = c->days >> tm.tm_mday & 1, wd = c->weekdays >> tm.tm_wday & 1;
        bool days = c->any_day || c->any_weekday ? day && wd : day || wd;
        if ((c->months >> (tm.tm_mon + 1) & 1) && days && (c->hours >> tm.tm_hour & 1) &&
            (c->minutes >> tm.tm_min & 1))
            return t * 1000;
    }
    return INT64_MAX;
}

static void next_matches_a_minute_by_minute_search(void **state)
{
    (void)state;
    zone("UTC");
    static const char *const exprs[] = {
        "*/7 * * * *",   "0 */5 * * *",       "30 4 1,15 * *", "0 0 * * 0",    "15 10 * jun *",
        "0 12 13 * fri", "*/20 9-17 * * 1-5", "0 0 1 1 *",     "5 5 5 5 5",    "45 23 * * 6",
        "0 0 31 * *",    "1-3 2 * feb,aug *", "0 6 * * sat",   "10 */3 2 * *", "0 0 1 * mon",
    };
    int64_t from = at("2026-01-01T00:00:00Z");
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        struct cron c = parse(exprs[i]);
        for (int k = 0; k < 12; k++) {
            int64_t after =
                from + (int64_t)(rnd() % (300 * 86400LL)) * 1000 + (int64_t)(rnd() % 1000);
            int64_t want = slow_next(&c, after), got = cron_next(&c, after);
            if (want != got)
                fail_msg("'%s' after %lld: got %lld, want %lld", exprs[i], (long long)after,
                         (long long)got, (long long)want);
        }
    }
}

static void daylight_saving_in_berlin(void **state)
{
    (void)state;
    zone("Europe/Berlin");
    /* 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z); 02:30 never happens */
    assert_next("30 2 * * *", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00.000Z");
    assert_next("30 2 * * *", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00.000Z");
    assert_next("0 3 * * *", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00.000Z");
    /* an hourly job skips the missing hour and goes on */
    assert_next("15 * * * *", "2026-03-29T00:30:00Z", "2026-03-29T01:15:00.000Z");
    assert_next("*/30 * * * *", "2026-03-29T00:45:00Z", "2026-03-29T01:00:00.000Z");
    /* a job on another day is not moved by the change */
    assert_next("30 2 * * mon", "2026-03-28T12:00:00Z", "2026-03-30T00:30:00.000Z");
    /* 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:30 happens twice */
    assert_next("30 2 * * *", "2026-10-24T12:00:00Z", "2026-10-25T00:30:00.000Z");
    assert_next("30 2 * * *", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00.000Z");
    assert_next("30 * * * *", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00.000Z");
    assert_next("*/20 * * * *", "2026-10-25T00:50:00Z", "2026-10-25T01:00:00.000Z");
    /* local midnight, in summer and in winter */
    assert_next("@daily", "2026-07-01T12:00:00Z", "2026-07-01T22:00:00.000Z");
    assert_next("@daily", "2026-12-01T12:00:00Z", "2026-12-01T23:00:00.000Z");
    zone("UTC");
}

static void daylight_saving_in_new_york(void **state)
{
    (void)state;
    zone("America/New_York");
    /* 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z) */
    assert_next("0 2 * * *", "2026-03-07T12:00:00Z", "2026-03-08T07:00:00.000Z");
    assert_next("0 2 * * *", "2026-03-08T07:00:00Z", "2026-03-09T06:00:00.000Z");
    /* 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z); 01:30 happens twice */
    assert_next("30 1 * * *", "2026-10-31T12:00:00Z", "2026-11-01T05:30:00.000Z");
    assert_next("30 1 * * *", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00.000Z");
    assert_next("30 * * * *", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00.000Z");
    zone("UTC");
}

static void zones(void **state)
{
    (void)state;
    struct err e;
    assert_int_equal(cron_set_zone("", &e), 0);
    assert_int_equal(cron_set_zone("UTC", &e), 0);
    assert_int_equal(cron_set_zone("Asia/Kolkata", &e), 0);
    assert_next("0 0 * * *", "2026-05-04T12:00:00Z", "2026-05-04T18:30:00.000Z");
    static const char *const bad[] = {"Mars/Olympus", "../etc/passwd", "/etc/localtime",
                                      "Europe/Berlin;rm"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cron_set_zone(bad[i], &e), E_INVALID);
        assert_non_null(strstr(e.msg, "is not a time zone of /usr/share/zoneinfo"));
    }
    zone("UTC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fields_and_macros),
        cmocka_unit_test(bad_expressions),
        cmocka_unit_test(next_in_utc),
        cmocka_unit_test(next_matches_a_minute_by_minute_search),
        cmocka_unit_test(daylight_saving_in_berlin),
        cmocka_unit_test(daylight_saving_in_new_york),
        cmocka_unit_test(zones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
