/*
 * Time parsing and formatting. Everything is converted to int64 epoch milliseconds in UTC at the
 * edge, so nothing deeper ever handles time zones or precisions.
 */
#include "core.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void time_deadline(struct timespec *out, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, out);
    out->tv_sec += ms / 1000;
    out->tv_nsec += (long)(ms % 1000) * 1000000;
    if (out->tv_nsec >= 1000000000) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000;
    }
}

int time_precision_parse(const char *s)
{
    static const struct {
        const char *name;
        enum time_precision p;
    } names[] = {{"ns", PREC_NS}, {"n", PREC_NS},  {"us", PREC_US},
                 {"u", PREC_US},  {"ms", PREC_MS}, {"s", PREC_S}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0)
            return (int)names[i].p;
    return -1;
}

/* Milliseconds are stored; years 0001..9999 bound every accepted timestamp. */
#define MS_MIN (-62135596800000LL)
#define MS_MAX (253402300799999LL)

bool time_epoch_int_to_ms(int64_t epoch, enum time_precision p, int64_t *ms)
{
    int64_t v;
    switch (p) {
    case PREC_NS: /* floor division, like the double conversion, also before 1970 */
        v = epoch / 1000000 - (epoch % 1000000 < 0);
        break;
    case PREC_US:
        v = epoch / 1000 - (epoch % 1000 < 0);
        break;
    case PREC_MS:
        v = epoch;
        break;
    case PREC_S:
        if (epoch > MS_MAX / 1000 || epoch < MS_MIN / 1000)
            return false;
        v = epoch * 1000;
        break;
    default:
        return false;
    }
    if (v < MS_MIN || v > MS_MAX)
        return false;
    *ms = v;
    return true;
}

bool time_epoch_to_ms(double epoch, enum time_precision p, int64_t *ms)
{
    static const double scale[] = {1e-6, 1e-3, 1.0, 1e3};
    if (!isfinite(epoch))
        return false;
    /* 1.001 s is 1000.9999999999999 ms in binary: a tolerance far below 1 ms keeps it 1001. It
     * grows with the value (a double holds about 16 digits: 1796008000.625 s can come out as
     * 1796008000624.9998 ms), and stays under a thousandth of a millisecond for any date. */
    double x = epoch * scale[p];
    if (!isfinite(x)) /* -1e308 s is -inf ms, and -inf plus its tolerance +inf is NaN */
        return false;
    double v = floor(x + 1e-6 + fabs(x) * 1e-15);
    if (v < (double)MS_MIN || v > (double)MS_MAX)
        return false;
    *ms = (int64_t)v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool time_parse_rfc3339(const char *s, size_t len, int64_t *ms)
{
    int y, mo, d, h, mi, sec;
    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        s[13] != ':' || s[16] != ':')
        return false;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
        !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec))
        return false;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return false;
    size_t i = 19;
    int64_t frac_ms = 0;
    if (i < len && s[i] == '.') {
        i++;
        size_t start = i;
        int64_t scale = 100;
        while (i < len && isdigit((unsigned char)s[i])) {
            frac_ms += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start || i - start > 9)
            return false;
    }
    int offset_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_min = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return false;
    }
    if (i != len)
        return false;
    if (sec == 60)
        sec = 59; /* a leap second is held as the last millisecond-aligned second */
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
    *ms = secs * 1000 + frac_ms;
    return *ms >= MS_MIN && *ms <= MS_MAX; /* an offset can move year 1 or 9999 out of range */
}

bool time_parse_point(const char *s, int64_t *ms)
{
    size_t len = strlen(s);
    if (len == 0)
        return false;
    if (time_parse_rfc3339(s, len, ms))
        return true;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0')
        return false;
    return time_epoch_to_ms(v, PREC_S, ms);
}

bool time_parse_duration(const char *s, int64_t *ms)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1},       {"s", 1000},           {"m", 60000}, {"h", 3600000},
                 {"d", 86400000}, {"w", 7 * 86400000LL}, {"", 1000}};
    int64_t total = 0;
    const char *p = s;
    if (!*p)
        return false;
    while (*p) {
        char *end;
        if (!isdigit((unsigned char)*p) && *p != '.')
            return false;
        double v = strtod(p, &end);
        if (end == p || v < 0)
            return false;
        p = end;
        size_t i;
        for (i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t ul = strlen(units[i].unit);
            if (strncmp(p, units[i].unit, ul) == 0 && (ul > 0 || *p == '\0') &&
                !(ul == 1 && units[i].unit[0] == 'm' && p[1] == 's')) {
                double add = v * (double)units[i].ms;
                if (add > 9e15 || (double)total + add > 9e15)
                    return false;
                total += (int64_t)add;
                p += ul;
                break;
            }
        }
        if (i == sizeof units / sizeof units[0])
            return false;
    }
    *ms = total;
    return true;
}

void time_format_rfc3339(int64_t ms, char *out, size_t out_size)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int millis = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
}

bool time_zone_known(const char *name)
{
    if (!*name || strcmp(name, "UTC") == 0)
        return true;
    bool plain = strstr(name, "..") == NULL && name[0] != '/';
    for (const char *p = name; plain && *p; p++)
        plain = isalnum((unsigned char)*p) || strchr("_+-/", *p);
    char path[512];
    snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", name);
    return plain && access(path, R_OK) == 0;
}
