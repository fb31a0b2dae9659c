/*
 * Cron expressions and their next firing time (cron.h).
 *
 * The next time is found by walking forward over local wall-clock time a minute at a time,
 * skipping whole months, days and hours that cannot match. Daylight saving changes are found
 * on the way by comparing how far the wall clock moved with how far real time did: a wall clock
 * that jumped ahead skipped some times (a gap), one that stands at a time it already showed is
 * in a repeated stretch.
 */
#include "jobs/cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define ZONEINFO_DIR "/usr/share/zoneinfo"
#define SEARCH_YEARS 8
#define GAP_LOOKBACK_S (3 * 3600) /* no DST change moves a clock by more */

struct field {
    const char *name;
    int lo, hi;
    const char *const *names; /* names of lo, lo+1, ... or NULL */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day of week", 0, 7, day_names}, /* 7 is Sunday too */
};

static const struct {
    const char *name, *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

/* A number or a name of the field; the text it used is [s, *end). */
static bool parse_value(const struct field *f, const char *s, const char **end, int *out)
{
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        const char *p = s;
        while (isdigit((unsigned char)*p) && v < 1000)
            v = v * 10 + (*p++ - '0');
        *end = p;
        *out = (int)v;
        return true;
    }
    for (int i = 0; f->names && f->names[i]; i++)
        if (strncasecmp(s, f->names[i], 3) == 0 && !isalpha((unsigned char)s[3])) {
            *end = s + 3;
            *out = f->lo + i;
            return true;
        }
    return false;
}

/* One field's text (a comma list of *, N, N-M, each with an optional /STEP) into bits. */
static int parse_field(const struct field *f, const char *text, uint64_t *bits, bool *star,
                       struct err *e)
{
    *bits = 0;
    *star = strcmp(text, "*") == 0;
    char item[64];
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item)
            return err_set(e, E_INVALID, "cron %s: '%s' has an empty or too long item", f->name,
                           text);
        memcpy(item, p, len);
        item[len] = '\0';
        p += len + (p[len] == ',');
        int lo = f->lo, hi = f->hi, step = 1;
        const char *q = item, *end;
        if (*q == '*') {
            q++;
            if (f->lo == 0 && f->hi == 7)
                hi = 6; /* the whole week once */
        } else if (parse_value(f, q, &end, &lo)) {
            q = end;
            hi = lo;
            if (*q == '-') {
                if (!parse_value(f, q + 1, &end, &hi))
                    goto bad;
                q = end;
            } else if (*q == '/') {
                hi = f->hi == 7 ? 6 : f->hi; /* N/S: from N to the end */
            }
        } else {
            goto bad;
        }
        if (*q == '/') {
            step = 0;
            const char *s = ++q;
            while (isdigit((unsigned char)*q) && step < 1000)
                step = step * 10 + (*q++ - '0');
            if (q == s || step < 1)
                goto bad;
        }
        if (*q)
            goto bad;
        if (lo < f->lo || hi > f->hi || lo > hi)
            return err_set(e, E_INVALID, "cron %s: '%s' is out of range %d-%d%s", f->name, item,
                           f->lo, f->hi,
                           lo > hi && hi >= f->lo ? " (or its start after its end)" : "");
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ull << (f->hi == 7 && v == 7 ? 0 : v);
        continue;
    bad:
        return err_set(e, E_INVALID,
                       "cron %s: '%s' is not *, a value, a range A-B or a step */N, A-B/N%s",
                       f->name, item, f->names ? " (numbers or names like jan, mon)" : "");
    }
    return 0;
}

int cron_parse(struct cron *c, const char *expr, struct err *e)
{
    memset(c, 0, sizeof *c);
    while (isspace((unsigned char)*expr))
        expr++;
    if (strncasecmp(expr, "@every", 6) == 0 && isspace((unsigned char)expr[6])) {
        const char *d = expr + 7;
        while (isspace((unsigned char)*d))
            d++;
        if (!time_parse_duration(d, &c->every_ms) || c->every_ms < 1000)
            return err_set(e, E_INVALID,
                           "cron: '@every %s': expected a duration of at least 1s (like 30s, 5m)",
                           d);
        return 0;
    }
    if (*expr == '@') {
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
            if (strcasecmp(expr, macros[i].name) == 0)
                return cron_parse(c, macros[i].expr, e);
        return err_set(e, E_INVALID,
                       "cron: '%s' is not one of @yearly, @monthly, @weekly, @daily, @hourly or "
                       "@every DURATION",
                       expr);
    }
    char copy[256];
    if (strlen(expr) >= sizeof copy)
        return err_set(e, E_INVALID, "cron: the expression is longer than %zu bytes",
                       sizeof copy - 1);
    snprintf(copy, sizeof copy, "%s", expr);
    char *parts[6], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(copy, " \t", &save); t && n < 6; t = strtok_r(NULL, " \t", &save))
        parts[n++] = t;
    if (n != 5)
        return err_set(e, E_INVALID,
                       "cron: '%s' has %d field%s; expected 5 (minute hour day-of-month month "
                       "day-of-week) or a macro like @daily",
                       expr, n, n == 1 ? "" : "s");
    uint64_t bits[5];
    bool star[5];
    for (int i = 0; i < 5; i++)
        if (parse_field(&fields[i], parts[i], &bits[i], &star[i], e) != 0)
            return E_INVALID;
    c->minutes = bits[0];
    c->hours = (uint32_t)bits[1];
    c->days = (uint32_t)bits[2];
    c->months = (uint16_t)bits[3];
    c->weekdays = (uint8_t)bits[4];
    c->any_day = star[2];
    c->any_weekday = star[4];
    c->fixed_time = bits[0] != (1ull << 60) - 1 && bits[1] != (1ull << 24) - 1;
    return 0;
}

/* ---- the next time ----------------------------------------------------------------------- */

static void local_tm(int64_t t, struct tm *tm)
{
    time_t x = (time_t)t;
    localtime_r(&x, tm);
}

static int64_t offset_at(int64_t t)
{
    struct tm tm;
    local_tm(t, &tm);
    return tm.tm_gmtoff;
}

static bool day_matches(const struct cron *c, const struct tm *tm)
{
    bool day = c->days >> tm->tm_mday & 1, weekday = c->weekdays >> tm->tm_wday & 1;
    /* crontab(5): with both fields restricted a day matching either one fires */
    return c->any_day || c->any_weekday ? day && weekday : day || weekday;
}

static bool wall_matches(const struct cron *c, const struct tm *tm)
{
    return (c->months >> (tm->tm_mon + 1) & 1) && day_matches(c, tm) &&
           (c->hours >> tm->tm_hour & 1) && (c->minutes >> tm->tm_min & 1);
}

/* The first instant of a local date and time (normalised: day 32 is the next month's 1st). */
static int64_t local_start(int year, int mon, int mday, int hour)
{
    struct tm tm = {
        .tm_year = year, .tm_mon = mon, .tm_mday = mday, .tm_hour = hour, .tm_isdst = -1};
    return (int64_t)mktime(&tm);
}

/* A gap: when the wall clock jumped ahead within (prev, t], a fixed-time job whose time was
 * skipped fires at the change; returns that instant, or 0. */
static int64_t gap_firing(const struct cron *c, int64_t prev, int64_t t)
{
    int64_t p = prev > t - GAP_LOOKBACK_S ? prev : t - GAP_LOOKBACK_S;
    int64_t off_old = offset_at(p), off_new = offset_at(t);
    if (!c->fixed_time || off_new <= off_old)
        return 0;
    int64_t lo = p, hi = t; /* the change: the first minute with the new offset */
    while (hi - lo > 60) {
        int64_t mid = lo + (hi - lo) / 120 * 60;
        if (offset_at(mid) == off_new)
            hi = mid;
        else
            lo = mid;
    }
    for (int64_t wall = hi + off_old; wall < hi + off_new; wall += 60) {
        struct tm tm;
        time_t w = (time_t)wall;
        gmtime_r(&w, &tm); /* the wall time as broken-down fields */
        if (wall_matches(c, &tm))
            return hi;
    }
    return 0;
}

/* Whether t's wall time was already shown earlier (a fall-back change repeats it). */
static bool repeated(int64_t t)
{
    int64_t off = offset_at(t);
    for (int64_t back = 900; back <= GAP_LOOKBACK_S; back += 900) {
        int64_t before = offset_at(t - back);
        if (before > off && offset_at(t - (before - off)) == before)
            return true;
    }
    return false;
}

int64_t cron_next(const struct cron *c, int64_t after_ms)
{
    if (c->every_ms)
        return after_ms + c->every_ms;
    int64_t t = (after_ms >= 0 ? after_ms / 60000 : (after_ms - 59999) / 60000) * 60 + 60;
    int64_t prev = t - 60, limit = t + SEARCH_YEARS * 366 * 86400LL;
    while (t < limit) {
        int64_t gap = gap_firing(c, prev, t);
        if (gap && gap * 1000 > after_ms)
            return gap * 1000;
        prev = t;
        struct tm tm;
        local_tm(t, &tm);
        int64_t next;
        if (!(c->months >> (tm.tm_mon + 1) & 1))
            next = local_start(tm.tm_year, tm.tm_mon + 1, 1, 0);
        else if (!day_matches(c, &tm))
            next = local_start(tm.tm_year, tm.tm_mon, tm.tm_mday + 1, 0);
        else if (!(c->hours >> tm.tm_hour & 1))
            next = t + (60 - tm.tm_min) * 60 - tm.tm_sec;
        else if (!(c->minutes >> tm.tm_min & 1) || (c->fixed_time && repeated(t)))
            next = t + 60;
        else
            return t * 1000;
        int64_t minute = next - ((next % 60) + 60) % 60; /* whole minutes, always forward */
        t = minute > t ? minute : t + 60;
    }
    return INT64_MAX;
}

static char original_tz[256];
static bool original_saved, original_set;

const char *cron_original_zone(void)
{
    if (!original_saved)
        return getenv("TZ");
    return original_set ? original_tz : NULL;
}

int cron_set_zone(const char *name, struct err *e)
{
    if (!name || !*name)
        name = "UTC";
    if (!time_zone_known(name))
        return err_set(e, E_INVALID,
                       "jobs.timezone: '%s' is not a time zone of %s (like UTC, Europe/Berlin, "
                       "America/New_York; Debian's tzdata package has them)",
                       name, ZONEINFO_DIR);
    if (!original_saved) {
        const char *tz = getenv("TZ");
        original_set = tz != NULL;
        snprintf(original_tz, sizeof original_tz, "%s", tz ? tz : "");
        original_saved = true;
    }
    setenv("TZ", name, 1);
    tzset();
    return 0;
}
