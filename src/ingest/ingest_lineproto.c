/*
 * InfluxDB line protocol into system_metrics, so Telegraf, the influx CLI and Influx client
 * libraries write to opsdb unchanged:
 *
 *     measurement[,tag=value...] field=value[,field=value...] [timestamp]
 *
 * Each numeric field is one sample; its metric is measurement + "_" + field (as VictoriaMetrics
 * names them: `cpu usage_user=3` is cpu_usage_user). Tags host and component fill their columns;
 * other tags, and string fields, become labels. Integers (1i, 1u), floats and booleans are
 * samples. Timestamps are integers in the request's precision (default ns); absent means now.
 */
#include "ingest/ingest_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LP_MAX_TAGS 64
#define LP_MAX_FIELDS 256

struct lp_pair {
    const char *key, *val;
    size_t key_len, val_len;
    bool key_escaped, val_escaped;
    bool is_string;
};

struct lp_cols {
    int ts, host, component, metric, value, labels;
};

/* Scans a token that ends at an unescaped stop character. */
static size_t scan(const char *d, size_t i, size_t end, const char *stops, bool *escaped)
{
    while (i < end) {
        char c = d[i];
        if (c == '\\' && i + 1 < end) {
            *escaped = true;
            i += 2;
            continue;
        }
        if (strchr(stops, c))
            break;
        i++;
    }
    return i;
}

static const char *unescape(struct arena *a, const char *s, size_t len, bool escaped,
                            size_t *out_len)
{
    if (!escaped) {
        *out_len = len;
        return s;
    }
    char *o = arena_alloc(a, len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len && strchr(",= \"\\", s[i + 1]))
            i++;
        o[k++] = s[i];
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

static int cmp_pair(const void *a, const void *b)
{
    const struct lp_pair *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static bool key_is(const struct lp_pair *p, const char *name)
{
    size_t n = strlen(name);
    return p->key_len == n && memcmp(p->key, name, n) == 0;
}

/* Parses a field value: returns false for a value that is no number, boolean or string. */
static bool field_number(const char *s, size_t len, double *out)
{
    char tmp[64];
    if (len == 0 || len >= sizeof tmp)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    static const char *const truths[] = {"t", "T", "true", "True", "TRUE"};
    static const char *const falses[] = {"f", "F", "false", "False", "FALSE"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(tmp, truths[i]) == 0) {
            *out = 1;
            return true;
        }
        if (strcmp(tmp, falses[i]) == 0) {
            *out = 0;
            return true;
        }
    }
    char *end;
    errno = 0;
    if (tmp[len - 1] == 'i' || tmp[len - 1] == 'u') {
        tmp[len - 1] = '\0'; /* drop the i/u suffix */
        if (s[len - 1] == 'u') {
            unsigned long long u = strtoull(tmp, &end, 10);
            if (*end || end == tmp || errno || tmp[0] == '-')
                return false;
            *out = (double)u;
        } else {
            long long iv = strtoll(tmp, &end, 10);
            if (*end || end == tmp || errno)
                return false;
            *out = (double)iv;
        }
        return true;
    }
    *out = strtod(tmp, &end);
    return *end == '\0' && end != tmp && isfinite(*out) && !strpbrk(tmp, "xXnN") &&
           (tmp[0] == '-' || tmp[0] == '.' || (tmp[0] >= '0' && tmp[0] <= '9'));
}

/* Builds the labels JSON object of a line from its extra tags and string fields: unescaped,
 * sorted by key and encoded as the JSON path encodes them, so one label set is one series
 * whichever way it arrived. A key given twice is an error (NULL). */
static const char *labels_json(struct batch *b, struct lp_pair *extra, size_t n, struct buf *tmp,
                               uint32_t *len, const char **dup)
{
    if (n == 0) {
        *len = 2;
        return "{}";
    }
    for (size_t i = 0; i < n; i++) {
        extra[i].key = unescape(&b->arena, extra[i].key, extra[i].key_len, extra[i].key_escaped,
                                &extra[i].key_len);
        extra[i].val = unescape(&b->arena, extra[i].val, extra[i].val_len, extra[i].val_escaped,
                                &extra[i].val_len);
        extra[i].key_escaped = extra[i].val_escaped = false;
    }
    qsort(extra, n, sizeof *extra, cmp_pair);
    tmp->len = 0;
    buf_putc(tmp, '{');
    for (size_t i = 0; i < n; i++) {
        if (i && cmp_pair(&extra[i - 1], &extra[i]) == 0) {
            *dup = arena_strndup(&b->arena, extra[i].key, extra[i].key_len);
            return NULL;
        }
        if (i)
            buf_putc(tmp, ',');
        json_escape_into(tmp, extra[i].key, extra[i].key_len);
        buf_putc(tmp, ':');
        json_escape_into(tmp, extra[i].val, extra[i].val_len);
    }
    buf_putc(tmp, '}');
    *len = (uint32_t)tmp->len;
    return arena_strndup(&b->arena, tmp->data, tmp->len);
}

struct lp_line {
    const char *meas;
    size_t meas_len;
    bool meas_escaped;
    struct lp_pair tags[LP_MAX_TAGS];
    size_t ntags;
    struct lp_pair fields[LP_MAX_FIELDS];
    size_t nfields;
    int64_t ts_ms;
};

/* Splits one line into measurement, tags, fields and time; false (with a rejection) if bad. */
static bool split_line(const struct ingest_ctx *ctx, const char *d, size_t end, size_t lineno,
                       struct lp_line *L, struct rejects *r)
{
    size_t i = 0;
    L->meas_escaped = false;
    i = scan(d, 0, end, ", ", &L->meas_escaped);
    L->meas = d;
    L->meas_len = i;
    if (i == 0) {
        rejects_add(r, lineno, "measurement", "line has no measurement name");
        return false;
    }
    L->ntags = L->nfields = 0;
    while (i < end && d[i] == ',') {
        struct lp_pair p = {0};
        size_t k = scan(d, i + 1, end, "=, ", &p.key_escaped);
        if (k >= end || d[k] != '=' || k == i + 1) {
            rejects_add(r, lineno, "tags", "tag %zu is not key=value", L->ntags + 1);
            return false;
        }
        size_t v = scan(d, k + 1, end, ", ", &p.val_escaped);
        if (v == k + 1) {
            rejects_add(r, lineno, "tags", "tag '%.*s' has an empty value", (int)(k - i - 1),
                        d + i + 1);
            return false;
        }
        if (L->ntags >= LP_MAX_TAGS) {
            rejects_add(r, lineno, "tags", "more than %d tags", LP_MAX_TAGS);
            return false;
        }
        p.key = d + i + 1;
        p.key_len = k - i - 1;
        p.val = d + k + 1;
        p.val_len = v - k - 1;
        L->tags[L->ntags++] = p;
        i = v;
    }
    if (i >= end || d[i] != ' ') {
        rejects_add(r, lineno, "fields", "expected a space and a field set after the tags");
        return false;
    }
    while (i < end && d[i] == ' ')
        i++;
    for (;;) {
        struct lp_pair p = {0};
        size_t k = scan(d, i, end, "=, ", &p.key_escaped);
        if (k >= end || d[k] != '=' || k == i) {
            rejects_add(r, lineno, "fields", "field %zu is not key=value", L->nfields + 1);
            return false;
        }
        p.key = d + i;
        p.key_len = k - i;
        size_t v = k + 1;
        if (v < end && d[v] == '"') {
            size_t q = v + 1;
            while (q < end && d[q] != '"') {
                if (d[q] == '\\' && q + 1 < end) {
                    p.val_escaped = true;
                    q++;
                }
                q++;
            }
            if (q >= end) {
                rejects_add(r, lineno, "fields", "string field '%.*s' has no closing quote",
                            (int)p.key_len, p.key);
                return false;
            }
            p.val = d + v + 1;
            p.val_len = q - v - 1;
            p.is_string = true;
            v = q + 1;
        } else {
            p.val = d + v;
            v = scan(d, v, end, ", ", &p.val_escaped);
            p.val_len = (size_t)(d + v - p.val);
        }
        if (L->nfields >= LP_MAX_FIELDS) {
            rejects_add(r, lineno, "fields", "more than %d fields", LP_MAX_FIELDS);
            return false;
        }
        L->fields[L->nfields++] = p;
        i = v;
        if (i < end && d[i] == ',') {
            i++;
            continue;
        }
        break;
    }
    while (i < end && d[i] == ' ')
        i++;
    if (i == end) {
        L->ts_ms = ctx->validate.now_ms;
        return true;
    }
    char tmp[32];
    size_t tl = end - i;
    while (tl > 0 && (d[i + tl - 1] == ' ' || d[i + tl - 1] == '\r'))
        tl--;
    char *stop;
    if (tl == 0 || tl >= sizeof tmp) {
        rejects_add(r, lineno, "timestamp", "timestamp '%.*s' is not an integer",
                    (int)(tl > 30 ? 30 : tl), d + i);
        return false;
    }
    memcpy(tmp, d + i, tl);
    tmp[tl] = '\0';
    errno = 0;
    long long t = strtoll(tmp, &stop, 10);
    if (*stop || errno || !time_epoch_int_to_ms(t, ctx->validate.precision, &L->ts_ms)) {
        rejects_add(r, lineno, "timestamp",
                    "timestamp '%s' is not an integer time in the "
                    "request's precision",
                    tmp);
        return false;
    }
    return true;
}

static void set_text(struct value *v, const char *s, size_t len)
{
    v->type = VAL_TEXT;
    v->s = s;
    v->len = (uint32_t)len;
}

/* Emits one row per numeric field of the line. */
static bool emit_points(const struct ingest_ctx *ctx, struct batch *b, const struct lp_cols *c,
                        struct lp_line *L, size_t lineno, struct buf *tmp, struct rejects *r)
{
    struct lp_pair extra[LP_MAX_TAGS + LP_MAX_FIELDS];
    size_t nextra = 0;
    const char *host = "", *component = "";
    size_t host_len = 0, comp_len = 0;
    bool have_host = false, have_component = false;
    for (size_t t = 0; t < L->ntags; t++) {
        struct lp_pair *p = &L->tags[t];
        bool is_host = key_is(p, "host"), is_component = key_is(p, "component");
        if ((is_host && have_host) || (is_component && have_component)) {
            rejects_add(r, lineno, "tags", "tag '%s' appears twice",
                        is_host ? "host" : "component");
            return false;
        }
        if (is_host) {
            host = unescape(&b->arena, p->val, p->val_len, p->val_escaped, &host_len);
            have_host = true;
        } else if (is_component) {
            component = unescape(&b->arena, p->val, p->val_len, p->val_escaped, &comp_len);
            have_component = true;
        } else {
            extra[nextra++] = *p;
        }
    }
    size_t numeric = 0;
    for (size_t f = 0; f < L->nfields; f++)
        if (L->fields[f].is_string)
            extra[nextra++] = L->fields[f];
        else
            numeric++;
    if (numeric == 0) {
        rejects_add(r, lineno, "fields",
                    "line has only string fields; opsdb stores numbers, "
                    "booleans and integers as samples (string fields become labels of them)");
        return false;
    }
    uint32_t labels_len;
    const char *dup = NULL;
    const char *labels = labels_json(b, extra, nextra, tmp, &labels_len, &dup);
    if (!labels) {
        rejects_add(r, lineno, "tags", "tag or string field '%.40s' appears twice", dup);
        return false;
    }
    size_t meas_len;
    const char *meas = unescape(&b->arena, L->meas, L->meas_len, L->meas_escaped, &meas_len);
    bool ok = true;
    for (size_t f = 0; f < L->nfields; f++) {
        struct lp_pair *p = &L->fields[f];
        if (p->is_string)
            continue;
        double value;
        if (!field_number(p->val, p->val_len, &value)) {
            rejects_add(r, lineno, "fields",
                        "field '%.*s' value '%.*s' is not a finite "
                        "number, integer (1i), boolean or quoted string",
                        (int)p->key_len, p->key, (int)(p->val_len > 40 ? 40 : p->val_len), p->val);
            ok = false;
            continue;
        }
        size_t key_len;
        const char *key = unescape(&b->arena, p->key, p->key_len, p->key_escaped, &key_len);
        char *metric = arena_alloc(&b->arena, meas_len + key_len + 2);
        memcpy(metric, meas, meas_len);
        metric[meas_len] = '_';
        memcpy(metric + meas_len + 1, key, key_len);
        metric[meas_len + 1 + key_len] = '\0';
        struct value *row = batch_add_row(b);
        row[c->ts].type = VAL_INT;
        row[c->ts].i = L->ts_ms;
        set_text(&row[c->host], host, host_len);
        set_text(&row[c->component], component, comp_len);
        set_text(&row[c->metric], metric, meas_len + 1 + key_len);
        row[c->value].type = VAL_REAL;
        row[c->value].d = value;
        set_text(&row[c->labels], labels, labels_len);
        if (!ingest_finish_row(ctx, b, true, lineno, r))
            ok = false;
    }
    return ok;
}

int ingest_parse_lineproto(const struct ingest_ctx *ctx, const char *data, size_t len,
                           struct batch *b, struct rejects *r)
{
    const struct table *t = b->table;
    struct lp_cols c = {schema_column(t, "ts"),        schema_column(t, "host"),
                        schema_column(t, "component"), schema_column(t, "metric"),
                        schema_column(t, "value"),     schema_column(t, "labels")};
    struct lp_line *L = malloc(sizeof *L);
    if (!L)
        abort();
    struct buf tmp;
    buf_init(&tmp, 1 << 20);
    size_t pos = 0, lineno = 0, lines = 0;
    for (const char *p = data; p && p < data + len; p = memchr(p, '\n', (size_t)(data + len - p)))
        lines++, p++;
    bool reserved = false;
    int rc = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        lineno++;
        const char *line = data + pos;
        size_t line_len = end - pos;
        pos = end + 1;
        while (line_len && (line[0] == ' ' || line[0] == '\t')) {
            line++;
            line_len--;
        }
        while (line_len && (line[line_len - 1] == '\r' || line[line_len - 1] == ' '))
            line_len--;
        if (line_len == 0 || line[0] == '#')
            continue;
        if (!utf8_valid((const unsigned char *)line, line_len) || memchr(line, '\0', line_len)) {
            rejects_add(r, lineno, "", "line is not valid UTF-8 text (or holds a NUL byte)");
            continue;
        }
        if (split_line(ctx, line, line_len, lineno, L, r))
            emit_points(ctx, b, &c, L, lineno, &tmp, r);
        if (!reserved && b->nrows) { /* lines tend to have as many fields as the first */
            size_t guess = b->nrows * lines;
            batch_reserve(b, guess < ctx->max_rows ? guess : ctx->max_rows + 1);
            reserved = true;
        }
        if (b->nrows > ctx->max_rows) {
            rc = E_LIMIT;
            break;
        }
    }
    buf_release(&tmp);
    free(L);
    if (rc)
        return rc;
    if (lineno == 0 && r->count == 0 && b->nrows == 0)
        return 0;
    return r->count ? E_INVALID : 0;
}
