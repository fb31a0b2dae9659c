/*
 * jobs/cron: when a scheduled job is due. Cron expressions as crontab(5) writes them — five
 * fields (minute, hour, day of month, month, day of week) with lists, ranges, steps and names
 * (jan-dec, sun-sat) — the macros @yearly, @monthly, @weekly, @daily, @hourly, and `@every
 * DURATION` (a fixed interval).
 *
 * Times are read in the process's time zone (cron_set_zone, from jobs.timezone), the way
 * cronie treats daylight saving time: a time that a spring-forward change skips fires once at
 * the first minute after the change (for a job with a fixed minute and hour; an every-N-minutes
 * job just goes on), and a time that a fall-back change repeats fires once (a job with a fixed
 * minute and hour) or at both occurrences (one whose hour is a wildcard).
 */
#ifndef OPSDB_JOBS_CRON_H
#define OPSDB_JOBS_CRON_H

#include "core/core.h"

struct cron {
    uint64_t minutes;          /* bit m: minute m (0-59) */
    uint32_t hours;            /* bit h: hour h (0-23) */
    uint32_t days;             /* bit d: day of month d (1-31) */
    uint16_t months;           /* bit m: month m (1-12) */
    uint8_t weekdays;          /* bit w: day of week w (0 = Sunday) */
    bool any_day, any_weekday; /* the field was '*': when both are restricted, either fires */
    bool fixed_time;           /* minute and hour both restricted: see the DST rules above */
    int64_t every_ms;          /* @every: the interval, and the fields are not used */
};

/* Parses expr; E_INVALID with a message naming the field and what is wrong with it. */
int cron_parse(struct cron *c, const char *expr, struct err *e);
/* The first time after after_ms (epoch ms; the result is a whole minute) when c fires in the
 * process's time zone; for @every, after_ms + the interval. INT64_MAX when it never fires (as
 * "0 0 30 2 *") within eight years. */
int64_t cron_next(const struct cron *c, int64_t after_ms);
/* Makes name ("UTC", "Europe/Berlin", ... a file of /usr/share/zoneinfo) the process's time
 * zone for cron_next. Call before threads start: it sets TZ. E_INVALID for an unknown zone. */
int cron_set_zone(const char *name, struct err *e);
/* TZ as the process had it before the first cron_set_zone (NULL: not set). */
const char *cron_original_zone(void);

#endif
