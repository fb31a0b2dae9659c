/*
 * Access logs (nginx, Apache) into api_usage: one logged request is one row. The format is
 * compiled once into tokens — literal text and fields — from nginx log_format syntax
 * ($remote_addr, ${status}) or Apache LogFormat syntax (%h, %>s, %{Referer}i); both name the
 * same fields, so the rest of the parser does not know which it was. A field's value runs to
 * the literal text that follows it in the format (backslash escapes skipped, as Apache writes
 * quotes inside quoted fields), "-" is an absent value, and variables opsdb has no column for
 * are read and dropped.
 *
 * Endpoints are route templates: the query string is dropped and path segments that are ids
 * (numbers, UUIDs, hex strings of 8 or more characters with a digit) become ":id", so that
 * /users/123 and /users/456 are one endpoint. A request line that is not "METHOD PATH PROTO"
 * (a scanner's bytes, an empty request) is still a request nginx answered and counted: it
 * becomes method OTHER and endpoint "(invalid)".
 */
#include "ingest/ingest_int.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum field {
    F_SKIP,
    F_ADDR,
    F_USER,
    F_TIME_LOCAL,
    F_TIME_ISO,
    F_MSEC,
    F_REQUEST,
    F_METHOD,
    F_URI,
    F_STATUS,
    F_BODY_BYTES,
    F_BYTES_SENT,
    F_REQUEST_LENGTH,
    F_REQUEST_TIME,  /* seconds with a fraction */
    F_UPSTREAM_TIME, /* seconds, a list when several upstreams answered */
    F_REQUEST_TIME_US,
    F_HOST,
    F_COUNT
};

struct name_field {
    const char *name;
    enum field field;
};

/* nginx variables; any other $variable is read and dropped. */
static const struct name_field nginx_vars[] = {
    {"remote_addr", F_ADDR},
    {"remote_user", F_USER},
    {"time_local", F_TIME_LOCAL},
    {"time_iso8601", F_TIME_ISO},
    {"msec", F_MSEC},
    {"request", F_REQUEST},
    {"request_method", F_METHOD},
    {"request_uri", F_URI},
    {"uri", F_URI},
    {"status", F_STATUS},
    {"body_bytes_sent", F_BODY_BYTES},
    {"bytes_sent", F_BYTES_SENT},
    {"request_length", F_REQUEST_LENGTH},
    {"request_time", F_REQUEST_TIME},
    {"upstream_response_time", F_UPSTREAM_TIME},
    {"host", F_HOST},
    {"server_name", F_HOST},
};

/* Apache LogFormat directives (after '%' and an optional '<' or '>'); others are dropped. %t is
 * "[time]" with its brackets. */
static const struct name_field apache_directives[] = {
    {"h", F_ADDR},         {"a", F_ADDR},
    {"u", F_USER},         {"t", F_TIME_LOCAL},
    {"r", F_REQUEST},      {"m", F_METHOD},
    {"U", F_URI},          {"s", F_STATUS},
    {"b", F_BODY_BYTES},   {"B", F_BODY_BYTES},
    {"O", F_BYTES_SENT},   {"I", F_REQUEST_LENGTH},
    {"T", F_REQUEST_TIME}, {"D", F_REQUEST_TIME_US},
    {"v", F_HOST},         {"V", F_HOST},
    {"{Host}i", F_HOST},
};

#define MAX_TOKENS 128

struct token {
    bool literal;
    enum field field;  /* fields */
    size_t start, len; /* literals: their text in format */
    bool bracketed;    /* Apache %t: the value is in [ ] */
};

struct accesslog {
    char format[1024];
    struct token tokens[MAX_TOKENS];
    size_t ntokens;
};

struct span {
    const char *s;
    size_t len;
};

static enum field lookup(const struct name_field *table, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(table[i].name) == len && memcmp(table[i].name, name, len) == 0)
            return table[i].field;
    return F_SKIP;
}

static int add_token(struct accesslog *a, bool literal, enum field f, size_t start, size_t len,
                     struct err *e)
{
    if (literal && a->ntokens && a->tokens[a->ntokens - 1].literal &&
        a->tokens[a->ntokens - 1].start + a->tokens[a->ntokens - 1].len == start) {
        a->tokens[a->ntokens - 1].len += len; /* one literal run */
        return 0;
    }
    if (a->ntokens == MAX_TOKENS)
        return err_set(e, E_INVALID, "the access log format has more than %d parts", MAX_TOKENS);
    a->tokens[a->ntokens++] = (struct token){literal, f, start, len, false};
    return 0;
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* "$name" or "${name}" at format[i]; returns the characters it takes (0: a literal '$'). */
static size_t nginx_variable(const char *fmt, size_t i, enum field *f)
{
    size_t start = i + 1, end;
    bool braced = fmt[start] == '{';
    if (braced)
        start++;
    for (end = start; name_char(fmt[end]); end++)
        ;
    if (end == start || (braced && fmt[end] != '}'))
        return 0;
    *f = lookup(nginx_vars, sizeof nginx_vars / sizeof nginx_vars[0], fmt + start, end - start);
    return end - i + (braced ? 1 : 0);
}

/* "%x", "%>s", "%{Name}i" at format[i]; returns the characters it takes (0: not one). */
static size_t apache_directive(const char *fmt, size_t i, enum field *f)
{
    size_t start = i + 1;
    while (fmt[start] == '<' || fmt[start] == '>')
        start++;
    size_t end = start;
    if (fmt[end] == '{') {
        const char *close = strchr(fmt + end, '}');
        if (!close || !isalpha((unsigned char)close[1]))
            return 0;
        end = (size_t)(close - fmt) + 2;
    } else if (isalpha((unsigned char)fmt[end])) {
        end++;
    } else {
        return 0;
    }
    *f = lookup(apache_directives, sizeof apache_directives / sizeof apache_directives[0],
                fmt + start, end - start);
    return end - i;
}

static bool is_apache_format(const char *fmt)
{
    enum field f;
    bool directive = false;
    for (size_t i = 0; fmt[i]; i++) {
        if (fmt[i] == '$' && nginx_variable(fmt, i, &f))
            return false;
        if (fmt[i] == '%' && apache_directive(fmt, i, &f))
            directive = true;
    }
    return directive;
}

static int compile(struct accesslog *a, struct err *e)
{
    const char *fmt = a->format;
    bool apache = is_apache_format(fmt);
    for (size_t i = 0; fmt[i];) {
        enum field f = F_SKIP;
        size_t n = 0;
        if (apache && fmt[i] == '%' && fmt[i + 1] == '%') {
            if (add_token(a, true, F_SKIP, i + 1, 1, e) != 0)
                return E_INVALID;
            i += 2;
            continue;
        }
        if (apache && fmt[i] == '%')
            n = apache_directive(fmt, i, &f);
        else if (!apache && fmt[i] == '$')
            n = nginx_variable(fmt, i, &f);
        if (n == 0) {
            if (add_token(a, true, F_SKIP, i, 1, e) != 0)
                return E_INVALID;
            i++;
            continue;
        }
        if (add_token(a, false, f, i, n, e) != 0)
            return E_INVALID;
        /* Apache's %t writes its own brackets */
        a->tokens[a->ntokens - 1].bracketed = apache && f == F_TIME_LOCAL;
        i += n;
    }
    for (size_t i = 0; i < a->ntokens; i++)
        if (!a->tokens[i].literal)
            return 0;
    return err_set(e, E_INVALID,
                   "the access log format '%.100s' names no field ($variable or %%directive)", fmt);
}

/* Where value text that ends at the literal lit starts to be followed by it, from pos; skips
 * backslash escapes. len when not found. */
static size_t find_literal(const char *s, size_t len, size_t pos, const char *lit, size_t lit_len)
{
    for (size_t i = pos; i + lit_len <= len; i++) {
        if (s[i] == '\\') {
            i++;
            continue;
        }
        if (memcmp(s + i, lit, lit_len) == 0)
            return i;
    }
    return len;
}

/* Splits line into the format's fields. False (why filled) when it does not match. */
static bool split_fields(const struct accesslog *a, const char *s, size_t len,
                         struct span values[F_COUNT], char *why, size_t why_size)
{
    memset(values, 0, sizeof(struct span) * F_COUNT);
    size_t pos = 0;
    for (size_t i = 0; i < a->ntokens; i++) {
        const struct token *t = &a->tokens[i];
        const char *text = a->format + t->start;
        if (t->literal) {
            if (len - pos < t->len || memcmp(s + pos, text, t->len) != 0) {
                snprintf(why, why_size, "does not match the format at column %zu: expected '%.*s'",
                         pos + 1, (int)(t->len > 40 ? 40 : t->len), text);
                return false;
            }
            pos += t->len;
            continue;
        }
        size_t end;
        if (t->bracketed) {
            const char *close = pos < len && s[pos] == '[' ? memchr(s + pos, ']', len - pos) : NULL;
            if (!close) {
                snprintf(why, why_size, "has no [time] at column %zu", pos + 1);
                return false;
            }
            end = (size_t)(close - s) + 1;
        } else if (i + 1 < a->ntokens && a->tokens[i + 1].literal) {
            const struct token *next = &a->tokens[i + 1];
            end = find_literal(s, len, pos, a->format + next->start, next->len);
        } else if (i + 1 < a->ntokens) {
            const char *sp = memchr(s + pos, ' ', len - pos);
            end = sp ? (size_t)(sp - s) : len;
        } else {
            end = len;
        }
        struct span v = {s + pos, end - pos};
        if (t->bracketed && v.len >= 2) {
            v.s++;
            v.len -= 2;
        }
        if (t->field != F_SKIP && v.len > 0 && !(v.len == 1 && v.s[0] == '-'))
            values[t->field] = v;
        pos = end;
    }
    return true;
}

/* ---- values ------------------------------------------------------------------------------ */

static bool parse_uint(struct span v, int64_t *out)
{
    if (v.len == 0 || v.len > 15)
        return false;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (!isdigit((unsigned char)v.s[i]))
            return false;
        n = n * 10 + (v.s[i] - '0');
    }
    *out = n;
    return true;
}

/* A decimal number ("0.123"); false for anything else. */
static bool parse_decimal(const char *s, size_t len, double *out)
{
    char tmp[32];
    if (len == 0 || len >= sizeof tmp || !isdigit((unsigned char)s[0]))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *end;
    double d = strtod(tmp, &end);
    if (*end != '\0' || !isfinite(d))
        return false;
    *out = d;
    return true;
}

/* nginx's $upstream_response_time: "0.050", "0.050, 0.020" (several servers tried) or
 * "0.010 : 0.030" (internal redirects): the sum; "-" entries count 0. */
static bool parse_upstream_seconds(struct span v, double *out)
{
    double sum = 0;
    bool any = false;
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && strchr(" ,:", v.s[i]))
            i++;
        size_t start = i;
        while (i < v.len && !strchr(" ,:", v.s[i]))
            i++;
        double d;
        if (i == start || (i - start == 1 && v.s[start] == '-'))
            continue;
        if (!parse_decimal(v.s + start, i - start, &d))
            return false;
        sum += d;
        any = true;
    }
    *out = sum;
    return any;
}

/* "10/Oct/2000:13:55:36 -0700" */
static bool parse_time_local(struct span v, int64_t *ms)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (v.len != 26 || v.s[2] != '/' || v.s[6] != '/' || v.s[11] != ':' || v.s[20] != ' ')
        return false;
    const char *m = NULL;
    for (int i = 0; i < 12 && !m; i++)
        if (memcmp(months + 3 * i, v.s + 3, 3) == 0)
            m = months + 3 * i;
    if (!m)
        return false;
    char text[32];
    int n = snprintf(text, sizeof text, "%.4s-%02d-%.2sT%.8s%.3s:%.2s", v.s + 7,
                     (int)((m - months) / 3 + 1), v.s, v.s + 12, v.s + 21, v.s + 24);
    return n == 25 && time_parse_rfc3339(text, (size_t)n, ms);
}

static bool parse_time(const struct span values[F_COUNT], int64_t *ms)
{
    double secs;
    if (values[F_TIME_LOCAL].s)
        return parse_time_local(values[F_TIME_LOCAL], ms);
    if (values[F_TIME_ISO].s)
        return time_parse_rfc3339(values[F_TIME_ISO].s, values[F_TIME_ISO].len, ms);
    if (values[F_MSEC].s)
        return parse_decimal(values[F_MSEC].s, values[F_MSEC].len, &secs) &&
               time_epoch_to_ms(secs, PREC_S, ms);
    return false;
}

/* The latency in ms: $request_time, else the upstream time, else %D microseconds. */
static bool latency_ms(const struct span values[F_COUNT], double *ms)
{
    double d;
    int64_t us;
    if (values[F_REQUEST_TIME].s &&
        parse_decimal(values[F_REQUEST_TIME].s, values[F_REQUEST_TIME].len, &d)) {
        *ms = d * 1000.0;
        return true;
    }
    if (values[F_UPSTREAM_TIME].s && parse_upstream_seconds(values[F_UPSTREAM_TIME], &d)) {
        *ms = d * 1000.0;
        return true;
    }
    if (values[F_REQUEST_TIME_US].s && parse_uint(values[F_REQUEST_TIME_US], &us)) {
        *ms = (double)us / 1000.0;
        return true;
    }
    return false;
}

/* ---- request line and endpoint ----------------------------------------------------------- */

static bool is_hex_id(const char *s, size_t len)
{
    if (len < 8)
        return false;
    bool digit = false;
    for (size_t i = 0; i < len; i++) {
        if (!isxdigit((unsigned char)s[i]))
            return false;
        digit |= isdigit((unsigned char)s[i]) != 0;
    }
    return digit;
}

static bool is_uuid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < len; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

static bool is_number(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return len > 0;
}

/* The route template of a path: ids folded to ":id", at most max bytes. */
static void fold_path(const char *path, size_t len, struct buf *out)
{
    size_t i = 0;
    while (i < len) {
        if (path[i] == '/') {
            buf_putc(out, '/');
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        const char *seg = path + start;
        size_t n = i - start;
        if (is_number(seg, n) || is_uuid(seg, n) || is_hex_id(seg, n))
            buf_append(out, ":id", 3);
        else
            buf_append(out, seg, n);
    }
}

/* The path of a request target: "/a/b?q" -> "/a/b"; "http://host/a" -> "/a"; "*" -> "*".
 * False for anything else. */
static bool target_path(const char *t, size_t len, const char **path, size_t *path_len)
{
    if (len == 1 && t[0] == '*') {
        *path = t;
        *path_len = 1;
        return true;
    }
    for (const char *scheme = "http://"; scheme; scheme = scheme[4] == ':' ? "https://" : NULL) {
        size_t n = strlen(scheme);
        if (len > n && strncasecmp(t, scheme, n) == 0) {
            const char *slash = memchr(t + n, '/', len - n);
            if (!slash) {
                *path = "/";
                *path_len = 1;
                return true;
            }
            len -= (size_t)(slash - t);
            t = slash;
            break;
        }
    }
    if (len == 0 || t[0] != '/')
        return false;
    size_t end = 0;
    while (end < len && t[end] != '?' && t[end] != '#')
        end++;
    *path = t;
    *path_len = end;
    return true;
}

static bool method_token(const char *s, size_t len)
{
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isupper((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
            return false;
    return true;
}

/* The method as the schema spells it, or OTHER. */
static const char *known_method(const struct table *t, const char *s, size_t len)
{
    const struct column *c = &t->columns[schema_column(t, "method")];
    for (const char *const *m = c->allowed; *m; m++)
        if (strlen(*m) == len && memcmp(*m, s, len) == 0)
            return *m;
    return "OTHER";
}

#define INVALID_ENDPOINT "(invalid)"

/* Method and endpoint of a request: from "METHOD TARGET PROTO" (request), or from the method
 * and URI fields. */
static void request_of(const struct table *t, const struct span values[F_COUNT],
                       const char **method, struct buf *endpoint)
{
    const char *m = values[F_METHOD].s, *target = values[F_URI].s;
    size_t m_len = values[F_METHOD].len, target_len = values[F_URI].len;
    struct span req = values[F_REQUEST];
    if (req.s) {
        const char *sp = memchr(req.s, ' ', req.len);
        m = req.s;
        m_len = sp ? (size_t)(sp - req.s) : req.len;
        target = sp ? sp + 1 : NULL;
        target_len = sp ? req.len - m_len - 1 : 0;
        /* the protocol is the last word; a target with spaces keeps them */
        const char *proto = target ? memmem(target, target_len, " HTTP/", 6) : NULL;
        if (proto)
            target_len = (size_t)(proto - target);
    }
    const char *path;
    size_t path_len;
    if (!m || !method_token(m, m_len) || !target ||
        !target_path(target, target_len, &path, &path_len)) {
        *method = "OTHER";
        buf_append(endpoint, INVALID_ENDPOINT, strlen(INVALID_ENDPOINT));
        return;
    }
    *method = known_method(t, m, m_len);
    if (path_len == 0)
        buf_putc(endpoint, '/');
    fold_path(path, path_len, endpoint);
}

/* ---- rows -------------------------------------------------------------------------------- */

static int reject(struct rejects *r, size_t line_no, const char *field, const char *why)
{
    rejects_add(r, line_no, field, "%s", why);
    return E_INVALID;
}

static int access_line(struct logparser *p, const struct ingest_ctx *ctx, const char *line,
                       size_t len, size_t line_no, int64_t offset, struct batch *b,
                       struct rejects *r)
{
    (void)offset;
    const struct accesslog *a = p->impl;
    struct span v[F_COUNT];
    char why[200];
    if (len == 0)
        return 0; /* blank lines are no requests */
    if (!split_fields(a, line, len, v, why, sizeof why)) {
        rejects_add(r, line_no, "", "line %s", why);
        return E_INVALID;
    }
    int64_t ts, status;
    if (!parse_time(v, &ts))
        return reject(r, line_no, "ts", "no time of the request in the line (or not one read)");
    if (!v[F_STATUS].s || !parse_uint(v[F_STATUS], &status))
        return reject(r, line_no, "status_code", "no HTTP status in the line");
    struct buf endpoint;
    buf_init(&endpoint, 1024);
    const char *method;
    request_of(b->table, v, &method, &endpoint);
    batch_add_row(b);
    ingest_set_int(b, "ts", ts);
    ingest_set_int(b, "status_code", status);
    bool ok = ingest_set_named(ctx, b, "method", method, strlen(method), line_no, r) &&
              ingest_set_named(ctx, b, "endpoint", endpoint.data, endpoint.len, line_no, r);
    buf_release(&endpoint);
    double latency;
    int64_t n;
    if (latency_ms(v, &latency))
        ingest_set_real(b, "latency_ms", latency);
    struct span bytes = v[F_BODY_BYTES].s ? v[F_BODY_BYTES] : v[F_BYTES_SENT];
    if (bytes.s && parse_uint(bytes, &n))
        ingest_set_int(b, "response_bytes", n);
    if (v[F_REQUEST_LENGTH].s && parse_uint(v[F_REQUEST_LENGTH], &n))
        ingest_set_int(b, "request_bytes", n);
    struct span client = v[F_USER].s ? v[F_USER] : v[F_ADDR];
    struct span service = {p->service, strlen(p->service)};
    if (!p->service_set && v[F_HOST].s)
        service = v[F_HOST];
    ok = ingest_set_named(ctx, b, "client_id", client.s, client.len, line_no, r) && ok;
    ok = ingest_set_named(ctx, b, "service", service.s, service.len, line_no, r) && ok;
    ok = ingest_set_named(ctx, b, "host", p->host, strlen(p->host), line_no, r) && ok;
    return ingest_finish_row(ctx, b, ok, line_no, r) ? 0 : E_INVALID;
}

static void access_release(struct logparser *p)
{
    free(p->impl);
    p->impl = NULL;
}

static const struct logparser_ops access_ops = {
    .table = "api_usage",
    .line = access_line,
    .release = access_release,
};

int accesslog_init(struct logparser *p, const char *format, struct err *e)
{
    struct accesslog *a = calloc(1, sizeof *a);
    if (!a)
        return err_set(e, E_NOMEM, "out of memory");
    if (strlen(format) >= sizeof a->format) {
        free(a);
        return err_set(e, E_INVALID, "the access log format is longer than %zu bytes",
                       sizeof a->format - 1);
    }
    snprintf(a->format, sizeof a->format, "%s", format);
    if (compile(a, e) != 0) {
        free(a);
        return E_INVALID;
    }
    p->ops = &access_ops;
    p->impl = a;
    return 0;
}
