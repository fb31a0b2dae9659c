/*
 * libFuzzer target: cron expressions (cron_parse, then cron_next), as job definitions, the
 * backup.schedule options and the jobs API take them from users. Input: a selector byte (bits
 * 0-1 the time zone, bits 2-7 how far from a fixed instant the search starts), then the
 * expression. A parsed expression's next time lies after the start; unless it is @every it is
 * a whole minute, and in UTC its wall time matches the fields.
 */
#include "fuzz_common.h"
#include "jobs/cron.h"

#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 2026-03-29T00:30:00Z: hours before Europe's spring-forward change */
#define FUZZ_CRON_BASE_MS 1774744200000LL

static bool matches_utc(const struct cron *c, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    bool day = c->days >> tm.tm_mday & 1, weekday = c->weekdays >> tm.tm_wday & 1;
    bool day_ok = c->any_day || c->any_weekday ? day && weekday : day || weekday;
    return (c->months >> (tm.tm_mon + 1) & 1) && day_ok && (c->hours >> tm.tm_hour & 1) &&
           (c->minutes >> tm.tm_min & 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const zones[] = {"UTC", "Europe/Berlin", "America/New_York",
                                        "Australia/Lord_Howe"};
    static int zone = -1;
    fuzz_init();
    if (size == 0)
        return 0;
    int z = data[0] & 3;
    if (z != zone) {
        struct err ze;
        fuzz_check(cron_set_zone(zones[z], &ze) == 0, "zone %s: %s", zones[z], ze.msg);
        zone = z;
    }
    int64_t after = FUZZ_CRON_BASE_MS + (int64_t)(data[0] >> 2) * 3600000 * 37 + 12345;
    char *expr = malloc(size); /* the text up to a NUL, NUL-terminated, exact size */
    size_t len = strnlen((const char *)data + 1, size - 1);
    memcpy(expr, data + 1, len);
    expr[len] = '\0';
    struct cron c;
    struct err e;
    err_clear(&e);
    int rc = cron_parse(&c, expr, &e);
    fuzz_check(rc == 0 || (rc == E_INVALID && e.msg[0]), "rc %d without a message", rc);
    if (rc == 0) {
        int64_t next = cron_next(&c, after);
        fuzz_check(next > after, "'%s': next %lld is not after %lld", expr, (long long)next,
                   (long long)after);
        if (c.every_ms) {
            fuzz_check(next == after + c.every_ms, "'%s': @every", expr);
        } else if (next != INT64_MAX) {
            fuzz_check(next % 60000 == 0, "'%s': %lld is not a whole minute", expr,
                       (long long)next);
            if (z == 0)
                fuzz_check(matches_utc(&c, next), "'%s': %lld does not match the fields", expr,
                           (long long)next);
        }
    }
    free(expr);
    return 0;
}
