/*
 * Application logs into error_logs: JSON lines (one object per event, common field names) or
 * plain text whose event lines match logs.plain_pattern. An event may span lines: stack traces
 * follow the line that starts the event, so an event stays pending until the next event line
 * arrives or the reader says the file is idle (logparser_flush). Continuation lines are those
 * that start with whitespace, "Traceback (most recent call last):", "Caused by:", "... N more"
 * or "goroutine N [", and, while an event is pending, any line that does not start an event
 * itself (a Python traceback's last line, a Go panic).
 *
 * Levels of every common spelling (WARN, ERR, CRIT, SEVERE, PANIC, syslog's 0-7, bunyan's and
 * pino's 10-60) map onto the schema's seven; events below logs.min_level are skipped. Rows are
 * completed by the schema's validation, so fingerprints are derived exactly as for rows sent to
 * the JSON API.
 */
#include "ingest/ingest_int.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum ev_field {
    EV_TS,
    EV_LEVEL,
    EV_MESSAGE,
    EV_TYPE,
    EV_STACK,
    EV_TRACE,
    EV_SERVICE,
    EV_COMPONENT,
    EV_HOST,
    EV_ERROR, /* JSON "error"/"exception": an object with type, message and stack, or text */
    EV_NFIELDS
};

/* The schema's levels, least severe first: an event's rank indexes this. */
static const char *const level_names[] = {"debug", "info",     "notice", "warning",
                                          "error", "critical", "fatal"};
#define RANK_INFO 1
#define RANK_ERROR 4

static const struct {
    const char *name;
    int rank;
} level_spellings[] = {
    {"trace", 0},         {"debug", 0},  {"dbg", 0},     {"verbose", 0},     {"fine", 0},
    {"finer", 0},         {"finest", 0}, {"info", 1},    {"information", 1}, {"inf", 1},
    {"informational", 1}, {"notice", 2}, {"warning", 3}, {"warn", 3},        {"wrn", 3},
    {"error", 4},         {"err", 4},    {"eror", 4},    {"severe", 4},      {"critical", 5},
    {"crit", 5},          {"alert", 5},  {"dpanic", 5},  {"fatal", 6},       {"emerg", 6},
    {"emergency", 6},     {"panic", 6},
};

/* JSON field names of the columns; every other field goes into context. */
static const struct {
    const char *key;
    enum ev_field field;
} json_keys[] = {
    {"ts", EV_TS},
    {"time", EV_TS},
    {"timestamp", EV_TS},
    {"@timestamp", EV_TS},
    {"level", EV_LEVEL},
    {"severity", EV_LEVEL},
    {"lvl", EV_LEVEL},
    {"levelname", EV_LEVEL},
    {"log.level", EV_LEVEL},
    {"msg", EV_MESSAGE},
    {"message", EV_MESSAGE},
    {"@message", EV_MESSAGE},
    {"error_type", EV_TYPE},
    {"exc_type", EV_TYPE},
    {"exception_type", EV_TYPE},
    {"error.type", EV_TYPE},
    {"error", EV_ERROR},
    {"err", EV_ERROR},
    {"exception", EV_ERROR},
    {"stack", EV_STACK},
    {"stack_trace", EV_STACK},
    {"stacktrace", EV_STACK},
    {"exc_info", EV_STACK},
    {"error.stack", EV_STACK},
    {"trace_id", EV_TRACE},
    {"traceId", EV_TRACE},
    {"traceid", EV_TRACE},
    {"trace.id", EV_TRACE},
    {"service", EV_SERVICE},
    {"service.name", EV_SERVICE},
    {"app", EV_SERVICE},
    {"component", EV_COMPONENT},
    {"logger", EV_COMPONENT},
    {"logger_name", EV_COMPONENT},
    {"host", EV_HOST},
    {"hostname", EV_HOST},
    {"host.name", EV_HOST},
};

/* logs.plain_pattern's placeholders and the regular expressions they stand for. */
static const struct {
    const char *name;
    enum ev_field field;
    const char *regex;
} placeholders[] = {
    /* RFC 3339 and its relatives (space, comma, no zone, +hhmm), or epoch s/ms/us/ns */
    {"TIME", EV_TS,
     "([0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}([.,][0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{"
     "2})?|[0-9]{9,19}([.][0-9]+)?)"},
    {"LEVEL", EV_LEVEL, "([[:alpha:]]+|[0-9]+)"},
    {"COMPONENT", EV_COMPONENT, "([^][:space:]]+)"},
    {"SERVICE", EV_SERVICE, "([^[:space:]]+)"},
    {"HOST", EV_HOST, "([^[:space:]]+)"},
    {"TYPE", EV_TYPE, "([[:alpha:]_][[:alnum:]_.$]*)"},
    {"TRACE", EV_TRACE, "([[:alnum:]_-]+)"},
    {"MESSAGE", EV_MESSAGE, "(.*)"},
};

#define MAX_GROUPS 40
#define MESSAGE_MAX 16384
#define STACK_MAX 65536
#define TEXT_MAX 255

/* The event being read. */
struct event {
    bool active;
    bool skip; /* below logs.min_level, or already rejected: its lines are read and dropped */
    size_t line_no;
    int64_t offset;
    int64_t ts;
    bool has_ts;
    int rank; /* -1: the line named no level */
    struct buf text[EV_NFIELDS];
    struct buf context; /* JSON object text */
};

struct applog {
    bool json;
    int min_rank;
    regex_t re;
    bool re_compiled;
    int group_of[EV_NFIELDS]; /* regex group of each field, 0: none */
    struct buf scratch;       /* the line NUL-terminated for regexec */
    struct event events[2];   /* the pending event, and the next line parsed as one */
    int pending;              /* index of the pending one */
};

/* ---- levels and times -------------------------------------------------------------------- */

static int rank_of_number(long long n)
{
    if (n >= 0 && n <= 7) /* syslog severities */
        return n == 0 ? 6 : n <= 2 ? 5 : n == 3 ? 4 : n == 4 ? 3 : n == 5 ? 2 : n == 6 ? 1 : 0;
    if (n >= 10) /* bunyan, pino */
        return n >= 60 ? 6 : n >= 50 ? 4 : n >= 40 ? 3 : n >= 30 ? 1 : 0;
    return -1;
}

/* The rank of a level's text ("WARN", "[error]", "E", "50"); -1 when unknown. */
static int rank_of_level(const char *s, size_t len)
{
    while (len && (s[0] == '[' || s[0] == '<'))
        s++, len--;
    while (len && strchr("]>:", s[len - 1]))
        len--;
    if (len == 0)
        return -1;
    if (isdigit((unsigned char)s[0])) {
        long long n = 0;
        for (size_t i = 0; i < len && i < 6; i++) {
            if (!isdigit((unsigned char)s[i]))
                return -1;
            n = n * 10 + (s[i] - '0');
        }
        return len <= 6 ? rank_of_number(n) : -1;
    }
    for (size_t i = 0; i < sizeof level_spellings / sizeof level_spellings[0]; i++)
        if (strlen(level_spellings[i].name) == len &&
            strncasecmp(level_spellings[i].name, s, len) == 0)
            return level_spellings[i].rank;
    return -1;
}

static bool epoch_guess_ms(double v, int64_t *ms)
{
    double a = fabs(v);
    enum time_precision p = a < 1e11 ? PREC_S : a < 1e14 ? PREC_MS : a < 1e17 ? PREC_US : PREC_NS;
    return time_epoch_to_ms(v, p, ms);
}

/* RFC 3339 and its common relatives: "2026-01-02 03:04:05,123" (no zone: UTC), "+0200"
 * offsets; or an epoch number in s, ms, us or ns (told apart by size). */
static bool parse_log_time(const char *s, size_t len, int64_t *ms)
{
    char t[48];
    if (len == 0 || len >= sizeof t - 2)
        return false;
    memcpy(t, s, len);
    t[len] = '\0';
    if (len >= 19 && t[4] == '-') {
        if (t[19] == ',')
            t[19] = '.';
        size_t n = len;
        if (isdigit((unsigned char)t[n - 1]) && n >= 5 && (t[n - 5] == '+' || t[n - 5] == '-') &&
            n - 5 >= 19) {
            memmove(t + n - 1, t + n - 2, 3); /* +0200 -> +02:00 */
            t[n - 2] = ':';
            n++;
        } else if (isdigit((unsigned char)t[n - 1])) {
            t[n++] = 'Z';
        }
        t[n] = '\0';
        return time_parse_rfc3339(t, n, ms);
    }
    char *end;
    double v = strtod(t, &end);
    return end != t && *end == '\0' && isdigit((unsigned char)t[0]) && epoch_guess_ms(v, ms);
}

/* ---- the pending event ------------------------------------------------------------------- */

static void event_init(struct event *ev)
{
    memset(ev, 0, sizeof *ev);
    for (int f = 0; f < EV_NFIELDS; f++)
        buf_init(&ev->text[f], f == EV_STACK ? STACK_MAX : f == EV_MESSAGE ? MESSAGE_MAX : 4096);
    buf_init(&ev->context, 16384);
}

static void event_release(struct event *ev)
{
    for (int f = 0; f < EV_NFIELDS; f++)
        buf_release(&ev->text[f]);
    buf_release(&ev->context);
}

static void event_reset(struct event *ev)
{
    ev->active = ev->skip = ev->has_ts = false;
    ev->rank = -1;
    for (int f = 0; f < EV_NFIELDS; f++)
        ev->text[f].len = 0;
    ev->context.len = 0;
}

/* Appends as much of s as fits, cut at a UTF-8 character boundary. */
static void append_cut(struct buf *b, const char *s, size_t len)
{
    size_t room = b->max > b->len ? b->max - b->len : 0;
    if (len > room) {
        len = room;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    buf_append(b, s, len);
}

static void set_text(struct event *ev, enum ev_field f, const char *s, size_t len)
{
    ev->text[f].len = 0;
    append_cut(&ev->text[f], s, len);
}

/* A continuation line joins the stack trace, up to its limit. */
static void event_continue(struct event *ev, const char *line, size_t len)
{
    struct buf *st = &ev->text[EV_STACK];
    if (st->len)
        append_cut(st, "\n", 1);
    append_cut(st, line, len);
}

static bool identifier_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '$';
}

/* "java.io.IOException: msg" or "ValueError: msg" or "KeyError" at s: the length of the name,
 * 0 when s does not start with an exception name. */
static size_t exception_name(const char *s, size_t len, bool any_name)
{
    size_t n = 0;
    while (n < len && identifier_char(s[n]))
        n++;
    if (n == 0 || !isalpha((unsigned char)s[0]) || (n < len && s[n] != ':'))
        return 0;
    if (any_name)
        return n;
    static const char *const endings[] = {"Exception", "Error", "Throwable", "Panic"};
    for (size_t i = 0; i < sizeof endings / sizeof endings[0]; i++) {
        size_t k = strlen(endings[i]);
        if (n >= k && memcmp(s + n - k, endings[i], k) == 0)
            return n;
    }
    return 0;
}

/* The exception type named in a stack trace: a Python traceback's last line, else the first
 * line that names an exception (Java's first line, "Caused by" excluded). */
static void type_from_stack(struct event *ev)
{
    const struct buf *st = &ev->text[EV_STACK];
    bool python = st->len >= 9 && memcmp(st->data, "Traceback", 9) == 0;
    const char *found = NULL;
    size_t found_len = 0;
    for (size_t pos = 0; pos < st->len;) {
        const char *line = st->data + pos;
        const char *nl = memchr(line, '\n', st->len - pos);
        size_t len = nl ? (size_t)(nl - line) : st->len - pos;
        pos += len + 1;
        while (len && (*line == ' ' || *line == '\t'))
            line++, len--;
        size_t n = exception_name(line, len, python);
        if (n && (python || !found)) {
            found = line;
            found_len = n;
        }
    }
    if (found)
        set_text(ev, EV_TYPE, found, found_len);
}

static int complete_event(const struct applog *a, struct event *ev, const struct logparser *p,
                          const struct ingest_ctx *ctx, struct batch *b, struct rejects *r)
{
    if (!ev->active || ev->skip) {
        event_reset(ev);
        return 0;
    }
    struct buf *st = &ev->text[EV_STACK];
    while (st->len && isspace((unsigned char)st->data[st->len - 1]))
        st->len--;
    if (st->data)
        st->data[st->len] = '\0';
    if (ev->text[EV_TYPE].len == 0 && st->len)
        type_from_stack(ev);
    int rank = ev->rank;
    if (rank < 0)
        rank = ev->text[EV_TYPE].len || st->len ? RANK_ERROR : RANK_INFO;
    if (rank < a->min_rank) {
        event_reset(ev);
        return 0;
    }
    struct buf *msg = &ev->text[EV_MESSAGE];
    if (msg->len == 0 && ev->text[EV_TYPE].len)
        append_cut(msg, ev->text[EV_TYPE].data, ev->text[EV_TYPE].len);
    size_t line_no = ev->line_no;
    batch_add_row(b);
    ingest_set_int(b, "ts", ev->has_ts ? ev->ts : ctx->validate.now_ms);
    const char *level = level_names[rank];
    static const struct {
        const char *column;
        enum ev_field field;
    } columns[] = {{"message", EV_MESSAGE},    {"error_type", EV_TYPE}, {"stack_trace", EV_STACK},
                   {"trace_id", EV_TRACE},     {"service", EV_SERVICE}, {"host", EV_HOST},
                   {"component", EV_COMPONENT}};
    bool ok = ingest_set_named(ctx, b, "level", level, strlen(level), line_no, r);
    for (size_t i = 0; i < sizeof columns / sizeof columns[0]; i++) {
        const struct buf *t = &ev->text[columns[i].field];
        ok = ingest_set_named(ctx, b, columns[i].column, t->data, t->len, line_no, r) && ok;
    }
    if (!ev->text[EV_SERVICE].len)
        ok = ingest_set_named(ctx, b, "service", p->service, strlen(p->service), line_no, r) && ok;
    if (!ev->text[EV_HOST].len)
        ok = ingest_set_named(ctx, b, "host", p->host, strlen(p->host), line_no, r) && ok;
    if (ev->context.len > 2)
        ok = ingest_set_named(ctx, b, "context", ev->context.data, ev->context.len, line_no, r) &&
             ok;
    event_reset(ev);
    return ingest_finish_row(ctx, b, ok, line_no, r) ? 0 : E_INVALID;
}

/* ---- JSON lines -------------------------------------------------------------------------- */

static int json_key_field(const char *key)
{
    for (size_t i = 0; i < sizeof json_keys / sizeof json_keys[0]; i++)
        if (strcmp(json_keys[i].key, key) == 0)
            return (int)json_keys[i].field;
    return -1;
}

static const char *first_string(json_t *obj, const char *const *keys)
{
    for (; *keys; keys++) {
        const char *s = json_string_value(json_object_get(obj, *keys));
        if (s)
            return s;
    }
    return NULL;
}

/* "error": {"type", "message", "stack"} (pino, ECS), or text: a name ("ValueError") is the
 * type, anything else the message when there is none. False: keep it in context. */
static bool error_field(struct event *ev, json_t *v)
{
    static const char *const type_keys[] = {"type", "name", "class", "kind", NULL};
    static const char *const msg_keys[] = {"message", "msg", NULL};
    static const char *const stack_keys[] = {"stack", "stack_trace", "stacktrace", NULL};
    const char *type = NULL, *msg = NULL, *stack = NULL;
    if (json_is_object(v)) {
        type = first_string(v, type_keys);
        msg = first_string(v, msg_keys);
        stack = first_string(v, stack_keys);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = strlen(s);
        if (len && exception_name(s, len, true) == len)
            type = s;
        else
            msg = s;
    } else {
        return false;
    }
    if (type && !ev->text[EV_TYPE].len)
        set_text(ev, EV_TYPE, type, strlen(type));
    if (msg && !ev->text[EV_MESSAGE].len)
        set_text(ev, EV_MESSAGE, msg, strlen(msg));
    if (stack && !ev->text[EV_STACK].len)
        set_text(ev, EV_STACK, stack, strlen(stack));
    return type || stack || json_is_object(v);
}

/* One member of the event object into its column; false when it belongs in context. */
static bool json_member(struct event *ev, const char *key, json_t *v, char *why, size_t why_size)
{
    int f = json_key_field(key);
    if (f < 0)
        return false;
    if (f == EV_ERROR)
        return error_field(ev, v);
    if ((f == EV_TS && ev->has_ts) || (f == EV_LEVEL && ev->rank >= 0))
        return false; /* a second spelling: kept in context */
    if (f == EV_TS && json_is_number(v)) {
        ev->has_ts = epoch_guess_ms(json_number_value(v), &ev->ts);
        if (!ev->has_ts)
            snprintf(why, why_size, "%s %g is not a time", key, json_number_value(v));
        return true;
    }
    if (f == EV_LEVEL && json_is_integer(v)) {
        ev->rank = rank_of_number(json_integer_value(v));
        if (ev->rank < 0)
            snprintf(why, why_size, "level %lld is not a level", json_integer_value(v));
        return true;
    }
    const char *s = json_string_value(v);
    if (!s || ev->text[f].len || (f == EV_TS && ev->has_ts))
        return false; /* another type, or a second spelling: kept as it is */
    size_t len = json_string_length(v);
    if (f == EV_TS) {
        ev->has_ts = parse_log_time(s, len, &ev->ts);
        if (!ev->has_ts)
            snprintf(why, why_size, "%s '%.40s' is not an RFC 3339 time or epoch number", key, s);
    } else if (f == EV_LEVEL) {
        ev->rank = rank_of_level(s, len);
        if (ev->rank < 0)
            snprintf(why, why_size,
                     "level '%.40s' is not a level (debug, info, notice, "
                     "warning, error, critical, fatal or a common spelling of one)",
                     s);
    } else {
        set_text(ev, f, s, len);
    }
    return true;
}

/* 1: line starts an event (in a->ev), 0: it is no JSON object, -1: a bad event (why). */
static int json_event(struct applog *a, struct event *ev, const char *line, size_t len, char *why,
                      size_t why_size)
{
    (void)a;
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i == len || line[i] != '{')
        return 0;
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(obj)) {
        json_decref(obj);
        snprintf(why, why_size, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        return -1;
    }
    json_t *context = json_object();
    const char *key;
    json_t *v;
    why[0] = '\0';
    json_object_foreach(obj, key, v)
    {
        if (!json_member(ev, key, v, why, why_size))
            json_object_set(context, key, v);
    }
    if (json_object_size(context) > 0) {
        char *text = json_dumps(context, JSON_COMPACT | JSON_SORT_KEYS);
        if (text && buf_append(&ev->context, text, strlen(text)) != 0)
            buf_printf(&ev->context, "{\"context_bytes_dropped\":%zu}", strlen(text));
        free(text);
    }
    json_decref(context);
    json_decref(obj);
    return why[0] ? -1 : 1;
}

/* ---- plain text -------------------------------------------------------------------------- */

/* 1: line starts an event, 0: it does not match the pattern. */
static int plain_event(struct applog *a, struct event *ev, const char *line, size_t len, char *why,
                       size_t why_size)
{
    a->scratch.len = 0;
    if (buf_append(&a->scratch, line, len) != 0 || memchr(line, '\0', len))
        return 0;
    regmatch_t m[MAX_GROUPS];
    if (regexec(&a->re, a->scratch.data, MAX_GROUPS, m, 0) != 0)
        return 0;
    why[0] = '\0';
    for (int f = 0; f < EV_NFIELDS; f++) {
        int g = a->group_of[f];
        if (g == 0 || m[g].rm_so < 0)
            continue;
        const char *s = line + m[g].rm_so;
        size_t n = (size_t)(m[g].rm_eo - m[g].rm_so);
        if (f == EV_TS) {
            ev->has_ts = parse_log_time(s, n, &ev->ts);
            if (!ev->has_ts)
                snprintf(why, why_size, "time '%.*s' is not a valid time", (int)(n > 40 ? 40 : n),
                         s);
        } else if (f == EV_LEVEL) {
            ev->rank = rank_of_level(s, n);
            if (ev->rank < 0)
                snprintf(why, why_size, "level '%.*s' is not a level", (int)(n > 40 ? 40 : n), s);
        } else {
            set_text(ev, (enum ev_field)f, s, n);
        }
    }
    return why[0] ? -1 : 1;
}

/* Where each '(' group of an extended regex opens: out[k] = offset of group k + 1. */
static int group_offsets(const char *re, size_t *out, int max)
{
    int n = 0;
    for (size_t i = 0; re[i]; i++) {
        if (re[i] == '\\' && re[i + 1]) {
            i++;
        } else if (re[i] == '[') { /* a bracket expression: ']' first is a literal */
            size_t j = i + 1;
            j += re[j] == '^';
            j += re[j] == ']';
            while (re[j] && re[j] != ']') {
                if (re[j] == '[' && re[j + 1] && strchr(":.=", re[j + 1])) {
                    const char *close = strchr(re + j + 2, ']');
                    j = close ? (size_t)(close - re) : strlen(re) - 1;
                }
                j++;
            }
            if (!re[j])
                return n;
            i = j;
        } else if (re[i] == '(' && n < max) {
            out[n++] = i;
        }
    }
    return n;
}

static int compile_pattern(struct applog *a, const char *pattern, struct err *e)
{
    struct buf re;
    buf_init(&re, 16384);
    size_t at[EV_NFIELDS];
    bool used[EV_NFIELDS] = {0};
    for (const char *p = pattern; *p;) {
        size_t k = sizeof placeholders / sizeof placeholders[0];
        if (p[0] == '%' && p[1] == '{') {
            const char *close = strchr(p, '}');
            for (k = 0; close && k < sizeof placeholders / sizeof placeholders[0]; k++)
                if (strlen(placeholders[k].name) == (size_t)(close - p - 2) &&
                    memcmp(placeholders[k].name, p + 2, (size_t)(close - p - 2)) == 0)
                    break;
            if (!close || k == sizeof placeholders / sizeof placeholders[0]) {
                buf_release(&re);
                return err_set(e, E_INVALID,
                               "logs.plain_pattern: unknown placeholder '%.30s' (use %%{TIME}, "
                               "%%{LEVEL}, %%{COMPONENT}, %%{SERVICE}, %%{HOST}, %%{TYPE}, "
                               "%%{TRACE}, %%{MESSAGE})",
                               p);
            }
            enum ev_field f = placeholders[k].field;
            used[f] = true;
            at[f] = re.len;
            buf_append(&re, placeholders[k].regex, strlen(placeholders[k].regex));
            p = close + 1;
        } else {
            buf_putc(&re, *p++);
        }
    }
    int rc = regcomp(&a->re, re.data ? re.data : "", REG_EXTENDED);
    if (rc != 0) {
        char msg[160];
        regerror(rc, &a->re, msg, sizeof msg);
        buf_release(&re);
        return err_set(e, E_INVALID, "logs.plain_pattern is not a valid regular expression: %s",
                       msg);
    }
    a->re_compiled = true;
    size_t groups[MAX_GROUPS];
    int ngroups = group_offsets(re.data ? re.data : "", groups, MAX_GROUPS - 1);
    for (int f = 0; f < EV_NFIELDS; f++)
        for (int g = 0; used[f] && g < ngroups; g++)
            if (groups[g] == at[f])
                a->group_of[f] = g + 1;
    buf_release(&re);
    if (!used[EV_MESSAGE])
        return err_set(e, E_INVALID, "logs.plain_pattern has no %%{MESSAGE}");
    return 0;
}

/* ---- lines ------------------------------------------------------------------------------- */

static bool starts_with(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

/* Lines that continue the event before them, whatever the pattern says. */
static bool continuation_line(const char *s, size_t len)
{
    return len == 0 || s[0] == ' ' || s[0] == '\t' ||
           starts_with(s, len, "Traceback (most recent call last):") ||
           starts_with(s, len, "Caused by:") || starts_with(s, len, "at ") ||
           starts_with(s, len, "...") ||
           (starts_with(s, len, "goroutine ") && len > 10 && isdigit((unsigned char)s[10]));
}

static int applog_line(struct logparser *p, const struct ingest_ctx *ctx, const char *line,
                       size_t len, size_t line_no, int64_t offset, struct batch *b,
                       struct rejects *r)
{
    struct applog *a = p->impl;
    struct event *ev = &a->events[a->pending], *next = &a->events[!a->pending];
    if (ev->active && continuation_line(line, len)) {
        event_continue(ev, line, len);
        return 0;
    }
    char why[200];
    event_reset(next);
    int is_event = a->json ? json_event(a, next, line, len, why, sizeof why)
                           : plain_event(a, next, line, len, why, sizeof why);
    if (is_event == 0) {
        if (ev->active) { /* a line of the pending event's trace */
            event_continue(ev, line, len);
            return 0;
        }
        if (len == 0)
            return 0;
        rejects_add(r, line_no, "",
                    a->json ? "line is not a JSON object, nor part of an event's stack trace"
                            : "line does not match logs.plain_pattern, nor is it part of an "
                              "event's stack trace");
        return E_INVALID;
    }
    int rc = complete_event(a, ev, p, ctx, b, r);
    a->pending = !a->pending;
    next->active = true;
    next->line_no = line_no;
    next->offset = offset;
    if (is_event < 0) { /* its trace lines are read with it, and dropped */
        rejects_add(r, line_no, "", "%s", why);
        next->skip = true;
        return E_INVALID;
    }
    if (next->rank >= 0 && next->rank < a->min_rank)
        next->skip = true;
    return rc;
}

static int applog_flush(struct logparser *p, const struct ingest_ctx *ctx, struct batch *b,
                        struct rejects *r)
{
    struct applog *a = p->impl;
    return complete_event(a, &a->events[a->pending], p, ctx, b, r);
}

static bool applog_pending(const struct logparser *p, struct logparser_pending *out)
{
    const struct applog *a = p->impl;
    const struct event *ev = &a->events[a->pending];
    if (!ev->active)
        return false;
    out->offset = ev->offset;
    out->line_no = ev->line_no;
    out->bytes = ev->context.len;
    for (int f = 0; f < EV_NFIELDS; f++)
        out->bytes += ev->text[f].len;
    return true;
}

static void applog_release(struct logparser *p)
{
    struct applog *a = p->impl;
    if (!a)
        return;
    if (a->re_compiled)
        regfree(&a->re);
    event_release(&a->events[0]);
    event_release(&a->events[1]);
    buf_release(&a->scratch);
    free(a);
    p->impl = NULL;
}

static const struct logparser_ops applog_ops = {
    .table = "error_logs",
    .line = applog_line,
    .flush = applog_flush,
    .pending = applog_pending,
    .release = applog_release,
};

int applog_init(struct logparser *p, const struct config *cfg, bool json, struct err *e)
{
    struct applog *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(e, E_NOMEM, "out of memory");
    a->json = json;
    a->min_rank = rank_of_level(cfg->logs_min_level, strlen(cfg->logs_min_level));
    event_init(&a->events[0]);
    event_init(&a->events[1]);
    event_reset(&a->events[0]);
    buf_init(&a->scratch, (size_t)cfg->logs_max_line_bytes + 1);
    p->ops = &applog_ops;
    p->impl = a;
    if (!json && compile_pattern(a, cfg->logs_plain_pattern, e) != 0) {
        applog_release(p);
        return E_INVALID;
    }
    return 0;
}
