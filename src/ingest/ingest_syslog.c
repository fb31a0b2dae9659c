/*
 * Syslog messages into error_logs, so that rsyslog, syslog-ng, logger and network devices can
 * send their errors to opsdb unchanged. One call parses one message (a UDP datagram or one TCP
 * frame; framing is the listener's business), in either of the two formats in use:
 *
 *     RFC 5424  <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID PARAM="V"...] MSG
 *     RFC 3164  <PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG
 *
 * told apart by the version digit after PRI. RFC 3164 is a description of practice more than a
 * grammar, so its parse is lenient as rsyslog's is: the timestamp may be missing or RFC 3339
 * (rsyslog's high-precision forwarding), and so may the hostname. Its timestamp has no year and
 * no zone: it is read in the server's local zone, in the year that puts it nearest to now (a
 * December message received on the 1st of January belongs to last year).
 *
 * The row goes through the same conversion and validation as the JSON path, so the fingerprint
 * of a syslog error is the one the JSON API gives the same service and message.
 */
#include "ingest/ingest_int.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const severity_names[8] = {"emerg",   "alert",  "crit", "err",
                                              "warning", "notice", "info", "debug"};
/* error_logs.level of each severity: the schema has no separate emerg and alert */
static const char *const severity_levels[8] = {"fatal",   "fatal",  "critical", "error",
                                               "warning", "notice", "info",     "debug"};
static const char *const facility_names[24] = {
    "kern",   "user",   "mail",     "daemon", "auth",   "syslog", "lpr",    "news",
    "uucp",   "cron",   "authpriv", "ftp",    "ntp",    "audit",  "alert",  "clock",
    "local0", "local1", "local2",   "local3", "local4", "local5", "local6", "local7"};

const char *ingest_syslog_severity_name(int severity)
{
    return severity >= 0 && severity < 8 ? severity_names[severity] : NULL;
}

int ingest_syslog_severity_parse(const char *name)
{
    for (int i = 0; i < 8; i++)
        if (strcmp(severity_names[i], name) == 0)
            return i;
    return -1;
}

/* ---- the parse ------------------------------------------------------------------------------ */

struct cursor {
    const char *d;
    size_t len, pos;
};

/* The next token up to a space (or the end); an empty token at a space. */
static const char *token(struct cursor *c, size_t *len)
{
    size_t start = c->pos;
    while (c->pos < c->len && c->d[c->pos] != ' ')
        c->pos++;
    *len = c->pos - start;
    return c->d + start;
}

static bool skip_space(struct cursor *c)
{
    if (c->pos >= c->len || c->d[c->pos] != ' ')
        return false;
    c->pos++;
    return true;
}

static int parse_pri(struct cursor *c, struct syslog_message *m, struct err *e)
{
    if (c->len == 0 || c->d[0] != '<')
        return err_set(e, E_INVALID, "message does not start with <PRI>");
    int pri = 0;
    size_t i = 1;
    while (i < c->len && i <= 4 && c->d[i] >= '0' && c->d[i] <= '9')
        pri = pri * 10 + (c->d[i++] - '0');
    if (i == 1 || i > 4 || i >= c->len || c->d[i] != '>' || pri > 191)
        return err_set(e, E_INVALID, "message does not start with <PRI> (a number 0..191)");
    m->facility = pri / 8;
    m->severity = pri % 8;
    c->pos = i + 1;
    return 0;
}

/* An RFC 5424 header field: NILVALUE "-" is absent. */
static bool header_field(struct cursor *c, const char **s, size_t *len, size_t max)
{
    *s = token(c, len);
    if (*len == 0 || *len > max || !skip_space(c))
        return false;
    if (*len == 1 && **s == '-')
        *len = 0;
    return true;
}

/* STRUCTURED-DATA: "-" or one or more [SD-ID PARAM="VALUE" ...] with \" \\ \] escapes. Only
 * its extent is checked here; its content is decoded when the row is built. */
static bool skip_structured_data(struct cursor *c)
{
    if (c->pos < c->len && c->d[c->pos] == '-') {
        c->pos++;
        return true;
    }
    bool any = false;
    while (c->pos < c->len && c->d[c->pos] == '[') {
        bool quoted = false;
        c->pos++;
        while (c->pos < c->len && (quoted || c->d[c->pos] != ']')) {
            if (c->d[c->pos] == '\\' && quoted)
                c->pos++;
            else if (c->d[c->pos] == '"')
                quoted = !quoted;
            c->pos++;
        }
        if (c->pos >= c->len)
            return false;
        c->pos++;
        any = true;
    }
    return any;
}

static int parse_5424(struct cursor *c, struct syslog_message *m, struct err *e)
{
    m->rfc5424 = true;
    const char *ts;
    size_t ts_len;
    if (!header_field(c, &ts, &ts_len, 64))
        return err_set(e, E_INVALID, "RFC 5424 message: no TIMESTAMP after the version");
    if (ts_len) {
        if (!time_parse_rfc3339(ts, ts_len, &m->ts_ms))
            return err_set(e, E_INVALID, "RFC 5424 message: TIMESTAMP '%.*s' is not RFC 3339",
                           (int)(ts_len > 40 ? 40 : ts_len), ts);
        m->has_time = true;
        m->time_text = ts;
        m->time_len = ts_len;
    }
    static const struct {
        const char *name;
        size_t max, off_s, off_len;
    } fields[] = {
        {"HOSTNAME", 255, offsetof(struct syslog_message, hostname),
         offsetof(struct syslog_message, hostname_len)},
        {"APP-NAME", 48, offsetof(struct syslog_message, app_name),
         offsetof(struct syslog_message, app_name_len)},
        {"PROCID", 128, offsetof(struct syslog_message, procid),
         offsetof(struct syslog_message, procid_len)},
        {"MSGID", 32, offsetof(struct syslog_message, msgid),
         offsetof(struct syslog_message, msgid_len)},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char **s = (const char **)((char *)m + fields[i].off_s);
        size_t *len = (size_t *)((char *)m + fields[i].off_len);
        if (!header_field(c, s, len, fields[i].max))
            return err_set(e, E_INVALID, "RFC 5424 message: %s is missing or longer than %zu",
                           fields[i].name, fields[i].max);
    }
    size_t sd_start = c->pos;
    if (!skip_structured_data(c))
        return err_set(e, E_INVALID, "RFC 5424 message: STRUCTURED-DATA is neither - nor [...]");
    if (c->d[sd_start] == '[') {
        m->sd = c->d + sd_start;
        m->sd_len = c->pos - sd_start;
    }
    if (c->pos < c->len && !skip_space(c))
        return err_set(e, E_INVALID, "RFC 5424 message: no space after STRUCTURED-DATA");
    m->msg = c->d + c->pos;
    m->msg_len = c->len - c->pos;
    if (m->msg_len >= 3 && memcmp(m->msg, "\xEF\xBB\xBF", 3) == 0) { /* the UTF-8 BOM */
        m->msg += 3;
        m->msg_len -= 3;
    }
    return 0;
}

/* "Mmm dd hh:mm:ss" (day space-padded or not) at c, as broken-down time without a year. */
static bool bsd_timestamp(struct cursor *c, struct tm *tm)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const char *s = c->d + c->pos;
    size_t left = c->len - c->pos;
    if (left < 15)
        return false;
    const char *mon = NULL;
    for (int i = 0; i < 12 && !mon; i++)
        if (memcmp(s, months + i * 3, 3) == 0)
            mon = months + i * 3;
    if (!mon || s[3] != ' ')
        return false;
    char tail[16];
    size_t n = left - 4 < 15 ? left - 4 : 15;
    memcpy(tail, s + 4, n);
    tail[n] = '\0';
    int day, hour, min, sec, used = 0;
    if (sscanf(tail, "%2d %2d:%2d:%2d%n", &day, &hour, &min, &sec, &used) != 4 || day < 1 ||
        day > 31 || hour > 23 || min > 59 || sec > 60 || hour < 0 || min < 0 || sec < 0)
        return false;
    memset(tm, 0, sizeof *tm);
    tm->tm_mon = (int)(mon - months) / 3;
    tm->tm_mday = day;
    tm->tm_hour = hour;
    tm->tm_min = min;
    tm->tm_sec = sec;
    c->pos += 4 + (size_t)used;
    return true;
}

/* The year that puts tm nearest to now, in the local zone. */
static int64_t nearest_year_ms(const struct tm *tm_in, int64_t now_ms)
{
    time_t now = (time_t)(now_ms / 1000);
    struct tm local;
    localtime_r(&now, &local);
    int64_t best = 0, best_dist = INT64_MAX;
    for (int dy = -1; dy <= 1; dy++) {
        struct tm tm = *tm_in;
        tm.tm_year = local.tm_year + dy;
        tm.tm_isdst = -1;
        time_t t = mktime(&tm);
        if (t == (time_t)-1)
            continue;
        int64_t ms = (int64_t)t * 1000, dist = ms > now_ms ? ms - now_ms : now_ms - ms;
        if (dist < best_dist) {
            best = ms;
            best_dist = dist;
        }
    }
    return best_dist == INT64_MAX ? now_ms : best;
}

/* TAG[PID]: or TAG: at c; false (c unchanged) when the next word is no tag. */
static bool bsd_tag(struct cursor *c, struct syslog_message *m)
{
    size_t start = c->pos, i = start;
    while (i < c->len && i - start < 255 && c->d[i] != ' ' && c->d[i] != '[' && c->d[i] != ':')
        i++;
    if (i == start || i >= c->len)
        return false;
    size_t tag_end = i;
    const char *pid = NULL;
    size_t pid_len = 0;
    if (c->d[i] == '[') {
        const char *close = memchr(c->d + i, ']', c->len - i);
        if (!close || close - (c->d + i) > 129)
            return false;
        pid = c->d + i + 1;
        pid_len = (size_t)(close - pid);
        i = (size_t)(close - c->d) + 1;
    }
    if (i >= c->len || c->d[i] != ':')
        return false;
    i++;
    m->app_name = c->d + start;
    m->app_name_len = tag_end - start;
    m->procid = pid;
    m->procid_len = pid_len;
    if (i < c->len && c->d[i] == ' ')
        i++;
    c->pos = i;
    return true;
}

static void parse_3164(struct cursor *c, int64_t now_ms, struct syslog_message *m)
{
    struct tm tm;
    size_t ts_start = c->pos;
    const char *word;
    size_t word_len;
    if (bsd_timestamp(c, &tm)) {
        m->ts_ms = nearest_year_ms(&tm, now_ms);
        m->has_time = true;
    } else {
        word = token(c, &word_len); /* rsyslog's forwarding format: an RFC 3339 time */
        if (word_len && time_parse_rfc3339(word, word_len, &m->ts_ms))
            m->has_time = true;
        else
            c->pos = ts_start;
    }
    if (m->has_time) {
        m->time_text = c->d + ts_start;
        m->time_len = c->pos - ts_start;
        while (c->pos < c->len && c->d[c->pos] == ' ')
            c->pos++;
        /* a hostname follows a timestamp unless the next word is already the tag */
        size_t host_start = c->pos;
        word = token(c, &word_len);
        if (word_len && word_len <= 255 && word[word_len - 1] != ':' &&
            !memchr(word, '[', word_len) && skip_space(c)) {
            m->hostname = word;
            m->hostname_len = word_len;
        } else {
            c->pos = host_start;
        }
    }
    bsd_tag(c, m);
    m->msg = c->d + c->pos;
    m->msg_len = c->len - c->pos;
}

int ingest_syslog_parse(const char *data, size_t len, int64_t now_ms, struct syslog_message *m,
                        struct err *e)
{
    memset(m, 0, sizeof *m);
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == '\0'))
        len--;
    struct cursor c = {data, len, 0};
    int rc = parse_pri(&c, m, e);
    if (rc)
        return rc;
    if (c.pos + 1 < len && c.d[c.pos] >= '1' && c.d[c.pos] <= '9' && c.d[c.pos + 1] == ' ') {
        c.pos += 2;
        return parse_5424(&c, m, e);
    }
    parse_3164(&c, now_ms, m);
    return 0;
}

/* ---- the row -------------------------------------------------------------------------------- */

/* s cut to at most max bytes of valid UTF-8, invalid sequences and NUL bytes replaced by U+FFFD
 * (senders of RFC 3164 use any 8-bit charset) and blanks around it dropped; into the arena. */
static const char *clean_text(struct arena *a, const char *s, size_t len, size_t max,
                              size_t *out_len)
{
    while (len && (*s == ' ' || *s == '\t')) { /* rsyslog forwards 3164's space after TAG: */
        s++;
        len--;
    }
    /* a bad byte becomes 3 (U+FFFD): the text may grow up to three times, then to max */
    char *o = arena_alloc(a, (len < max / 3 ? 3 * len : max) + 4);
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        size_t n = 1;
        unsigned char b = (unsigned char)s[i];
        if (b >= 0xC0)
            n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
        bool ok = b != 0 && i + n <= len && (b < 0x80 || b >= 0xC0) &&
                  utf8_valid((const unsigned char *)s + i, n);
        const char *piece = ok ? s + i : "\xEF\xBF\xBD";
        size_t piece_len = ok ? n : 3;
        if (k + piece_len > max)
            break;
        memcpy(o + k, piece, piece_len);
        k += piece_len;
        i += ok ? n : 1;
    }
    while (k && (o[k - 1] == ' ' || o[k - 1] == '\n' || o[k - 1] == '\r' || o[k - 1] == '\t'))
        k--;
    o[k] = '\0';
    *out_len = k;
    return o;
}

static json_t *clean_json_string(struct arena *a, const char *s, size_t len, size_t max)
{
    size_t n;
    const char *t = clean_text(a, s, len, max, &n);
    return json_stringn(t, n);
}

/* [id p="v" ...][...] (its extent checked by skip_structured_data) as {"id": {"p": "v"}}; a
 * name given twice keeps its last value. */
static json_t *structured_data_json(struct arena *a, const char *s, size_t len)
{
    json_t *sd = json_object();
    char *val = arena_alloc(a, len + 1);
    size_t i = 0, n;
    while (i < len && s[i] == '[') {
        size_t id_start = ++i;
        while (i < len && s[i] != ' ' && s[i] != ']')
            i++;
        const char *id = clean_text(a, s + id_start, i - id_start, 64, &n);
        json_t *params = json_object();
        while (i < len && s[i] == ' ') {
            size_t name_start = ++i;
            while (i < len && s[i] != '=' && s[i] != ']' && s[i] != ' ')
                i++;
            const char *name = clean_text(a, s + name_start, i - name_start, 64, &n);
            if (i + 1 >= len || s[i] != '=' || s[i + 1] != '"')
                break;
            size_t v = 0;
            for (i += 2; i < len && s[i] != '"'; i++) {
                if (s[i] == '\\' && i + 1 < len && strchr("\"\\]", s[i + 1]))
                    i++;
                val[v++] = s[i];
            }
            i++;
            json_object_set_new(params, name, clean_json_string(a, val, v, 4096));
        }
        while (i < len && s[i] != '[') /* past the element's ']' */
            i++;
        json_object_set_new(sd, id, params);
    }
    return sd;
}

/* The context column: what the schema has no column for. */
static void set_context(struct arena *a, const struct syslog_message *m, const char *peer,
                        const char *sender_time, json_t *ctx)
{
    if (m->facility >= 0 && m->facility < 24)
        json_object_set_new(ctx, "facility", json_string(facility_names[m->facility]));
    json_object_set_new(ctx, "severity", json_string(severity_names[m->severity & 7]));
    json_object_set_new(ctx, "format", json_string(m->rfc5424 ? "rfc5424" : "rfc3164"));
    if (m->procid_len)
        json_object_set_new(ctx, "procid", clean_json_string(a, m->procid, m->procid_len, 128));
    if (m->msgid_len)
        json_object_set_new(ctx, "msgid", clean_json_string(a, m->msgid, m->msgid_len, 32));
    if (peer && *peer)
        json_object_set_new(ctx, "peer", json_string(peer));
    if (sender_time)
        json_object_set_new(ctx, "sender_time", json_string(sender_time));
}

static const char *context_text(struct arena *a, const struct syslog_message *m, const char *peer,
                                const char *sender_time, size_t max, size_t *len)
{
    json_t *ctx = json_object();
    set_context(a, m, peer, sender_time, ctx);
    if (m->sd_len)
        json_object_set_new(ctx, "sd", structured_data_json(a, m->sd, m->sd_len));
    char *text = json_dumps(ctx, JSON_COMPACT | JSON_SORT_KEYS);
    if (text && strlen(text) > max) { /* too much structured data: keep the rest */
        free(text);
        json_object_del(ctx, "sd");
        json_object_set_new(ctx, "sd_truncated", json_true());
        text = json_dumps(ctx, JSON_COMPACT | JSON_SORT_KEYS);
    }
    json_decref(ctx);
    const char *out = arena_strndup(a, text ? text : "{}", text ? strlen(text) : 2);
    *len = strlen(out);
    free(text);
    return out;
}

static bool set_cleaned(const struct ingest_ctx *ctx, struct batch *b, const char *col,
                        const char *s, size_t len, size_t index, struct rejects *r)
{
    int i = schema_column(b->table, col);
    size_t n;
    const char *t = clean_text(&b->arena, s, len, b->table->columns[i].max_len, &n);
    return ingest_set_text(ctx, b, i, t, n, index, r);
}

bool ingest_syslog_row(const struct ingest_ctx *ctx, const struct syslog_message *m,
                       const char *peer, struct batch *b, size_t index, struct rejects *r)
{
    const struct table *t = b->table;
    int64_t ts = m->has_time ? m->ts_ms : ctx->validate.now_ms;
    char sender_time[64];
    bool clamped = ts > ctx->validate.now_ms + ctx->validate.max_future_ms;
    if (clamped) { /* a sender's clock (or zone) ahead of ours: its error still counts, now */
        snprintf(sender_time, sizeof sender_time, "%.*s", (int)m->time_len, m->time_text);
        ts = ctx->validate.now_ms;
    }
    struct value *row = batch_add_row(b);
    row[schema_column(t, "ts")] = (struct value){.i = ts, .type = VAL_INT};
    const char *host = m->hostname;
    size_t host_len = m->hostname_len;
    if (host_len == 0 && peer) {
        host = peer;
        host_len = strlen(peer);
    }
    int level = schema_column(t, "level");
    row[level] = (struct value){.s = severity_levels[m->severity & 7],
                                .len = (uint32_t)strlen(severity_levels[m->severity & 7]),
                                .type = VAL_TEXT};
    size_t ctx_len;
    const char *context = context_text(&b->arena, m, peer, clamped ? sender_time : NULL,
                                       t->columns[schema_column(t, "context")].max_len, &ctx_len);
    bool ok = set_cleaned(ctx, b, "host", host, host_len, index, r) &&
              set_cleaned(ctx, b, "service", m->app_name, m->app_name_len, index, r) &&
              set_cleaned(ctx, b, "message", m->msg, m->msg_len, index, r) &&
              ingest_set_text(ctx, b, schema_column(t, "context"), context, ctx_len, index, r);
    int msg = schema_column(t, "message");
    if (row[msg].type == VAL_NULL) /* an empty message is still an event */
        row[msg] = (struct value){.s = "", .type = VAL_TEXT};
    return ingest_finish_row(ctx, b, ok, index, r);
}
