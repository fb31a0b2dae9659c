/*
 * Logging: one line per event on stderr with UTC time and level. A single write(2) per line
 * keeps lines from different threads whole.
 */
#include "core.h"

#include <stdio.h>
#include <unistd.h>

static enum log_level log_threshold = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < log_threshold)
        return;
    char line[2048];
    char when[40];
    time_format_rfc3339(time_now_ms(), when, sizeof when);
    int n = snprintf(line, sizeof line, "%s %s ", when, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
