/*
 * Prometheus samples into system_metrics: the mapping every Prometheus source shares (scrapes
 * and remote write store a sample the same way, so a series has one identity whichever way it
 * arrived), and the text exposition format 0.0.4 that /metrics pages serve:
 *
 *     # HELP http_requests_total Requests served.
 *     # TYPE http_requests_total counter
 *     http_requests_total{method="post",code="200"} 1027 1395066363000
 *
 * The parser reads each line where it lies in the page; strings are copied into the batch.
 */
#include "ingest/ingest_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A value or timestamp token longer than this is no number. */
#define PROM_TOKEN_MAX 64

static const char *const metric_types[] = {"counter", "gauge",    "histogram",
                                           "summary", "untyped",  "unknown",
                                           "info",    "stateset", "gaugehistogram"};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool bytes_are(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names; label names take no colon. */
static size_t scan_name(const char *s, size_t i, size_t end, bool colon)
{
    size_t start = i;
    for (; i < end; i++) {
        char c = s[i];
        bool letter =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
        if (!letter && !(i > start && c >= '0' && c <= '9'))
            break;
    }
    return i;
}

static int cmp_label(const void *a, const void *b)
{
    const struct prom_label *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static void set_text(struct batch *b, struct value *v, const char *s, size_t len)
{
    v->type = VAL_TEXT;
    v->s = arena_strndup(&b->arena, s, len);
    v->len = (uint32_t)len;
}

/* The labels JSON of a sorted label set, leaving out the ones that became columns. */
static const char *labels_json(struct batch *b, const struct prom_label *l, size_t n,
                               const struct prom_label *const *skip, size_t nskip, size_t *len)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    buf_putc(&out, '{');
    for (size_t i = 0; i < n; i++) {
        bool skipped = false;
        for (size_t k = 0; k < nskip; k++)
            skipped |= skip[k] == &l[i];
        if (skipped)
            continue;
        if (out.len > 1)
            buf_putc(&out, ',');
        json_escape_into(&out, l[i].name, l[i].name_len);
        buf_putc(&out, ':');
        json_escape_into(&out, l[i].value, l[i].value_len);
    }
    buf_putc(&out, '}');
    *len = out.len;
    const char *s = arena_strndup(&b->arena, out.data, out.len);
    buf_release(&out);
    return s;
}

/* Sorts the non-empty labels into sorted; false with a rejection for a bad label set. */
static bool sort_labels(const struct prom_label *labels, size_t n, struct prom_label *sorted,
                        size_t *nsorted, size_t input_index, struct rejects *r)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct prom_label *l = &labels[i];
        if (!utf8_valid((const unsigned char *)l->name, l->name_len) ||
            !utf8_valid((const unsigned char *)l->value, l->value_len) ||
            memchr(l->value, '\0', l->value_len) || l->name_len == 0) {
            rejects_add(r, input_index, "labels",
                        "label %zu has an empty name or is not valid UTF-8 text", i + 1);
            return false;
        }
        if (l->value_len == 0)
            continue; /* an empty label is an absent one */
        if (k == PROM_MAX_LABELS) {
            rejects_add(r, input_index, "labels", "more than %d labels", PROM_MAX_LABELS);
            return false;
        }
        sorted[k++] = *l;
    }
    qsort(sorted, k, sizeof *sorted, cmp_label);
    for (size_t i = 1; i < k; i++)
        if (cmp_label(&sorted[i - 1], &sorted[i]) == 0) {
            rejects_add(r, input_index, "labels", "label '%.*s' appears twice",
                        (int)(sorted[i].name_len > 60 ? 60 : sorted[i].name_len), sorted[i].name);
            return false;
        }
    *nsorted = k;
    return true;
}

static const struct prom_label *find_label(const struct prom_label *l, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (bytes_are(l[i].name, l[i].name_len, name))
            return &l[i];
    return NULL;
}

bool ingest_prom_sample(const struct ingest_ctx *ctx, struct batch *b,
                        const struct prom_label *labels, size_t nlabels, int64_t ts_ms,
                        double value, size_t input_index, struct rejects *r, struct prom_stats *st)
{
    if (st)
        st->samples++;
    if (!isfinite(value)) {
        if (st)
            st->nonfinite++;
        return true;
    }
    struct prom_label sorted[PROM_MAX_LABELS];
    size_t n;
    if (!sort_labels(labels, nlabels, sorted, &n, input_index, r))
        return false;
    const struct prom_label *name = find_label(sorted, n, "__name__");
    const struct prom_label *host = find_label(sorted, n, "host");
    if (!host)
        host = find_label(sorted, n, "instance");
    const struct prom_label *job = find_label(sorted, n, "job");
    if (!name) {
        rejects_add(r, input_index, "metric", "the sample has no metric name (__name__ label)");
        return false;
    }
    const struct prom_label *columns[3] = {name, host, job};
    const struct table *t = b->table;
    struct value *row = batch_add_row(b);
    row[schema_column(t, "ts")] = (struct value){.i = ts_ms, .type = VAL_INT};
    row[schema_column(t, "value")] = (struct value){.d = value, .type = VAL_REAL};
    set_text(b, &row[schema_column(t, "metric")], name->value, name->value_len);
    set_text(b, &row[schema_column(t, "host")], host ? host->value : "",
             host ? host->value_len : 0);
    set_text(b, &row[schema_column(t, "component")], job ? job->value : "",
             job ? job->value_len : 0);
    struct value *lv = &row[schema_column(t, "labels")];
    size_t len;
    lv->s = labels_json(b, sorted, n, columns, 3, &len);
    lv->len = (uint32_t)len;
    lv->type = VAL_TEXT;
    return ingest_finish_row(ctx, b, true, input_index, r);
}

/* ---- the text format -------------------------------------------------------------------- */

/* One sample line being read: its labels point into the page or into the batch arena. */
struct text_line {
    struct prom_label labels[PROM_MAX_LABELS + 1];
    size_t nlabels;
};

static bool add_label(struct text_line *L, const char *name, size_t name_len, const char *value,
                      size_t value_len, size_t lineno, struct rejects *r)
{
    if (L->nlabels > PROM_MAX_LABELS) {
        rejects_add(r, lineno, "labels", "more than %d labels", PROM_MAX_LABELS);
        return false;
    }
    L->labels[L->nlabels++] = (struct prom_label){name, value, name_len, value_len};
    return true;
}

/* A quoted label value starting after its opening quote at s[i]: returns the index past the
 * closing quote (0 when there is none) and the value, unescaped into the arena when it has
 * escapes. \\, \" and \n are decoded; another backslash pair is kept as written, as Prometheus
 * keeps it. */
static size_t scan_value(struct arena *a, const char *s, size_t i, size_t end, const char **out,
                         size_t *out_len)
{
    size_t start = i;
    bool escaped = false;
    for (; i < end && s[i] != '"'; i++)
        if (s[i] == '\\' && i + 1 < end) {
            escaped = true;
            i++;
        }
    if (i >= end)
        return 0;
    size_t len = i - start;
    if (!escaped) {
        *out = s + start;
        *out_len = len;
        return i + 1;
    }
    char *o = arena_alloc(a, len + 1);
    size_t k = 0;
    for (size_t j = start; j < i; j++) {
        if (s[j] == '\\' && s[j + 1] && strchr("\\\"n", s[j + 1])) {
            j++;
            o[k++] = s[j] == 'n' ? '\n' : s[j];
        } else {
            o[k++] = s[j];
        }
    }
    *out = o;
    *out_len = k;
    return i + 1;
}

static size_t skip_blanks(const char *s, size_t i, size_t end)
{
    while (i < end && is_blank(s[i]))
        i++;
    return i;
}

/* The {name="value",...} set starting at s[i] == '{'; returns the index past '}' or 0. */
static size_t scan_labels(struct batch *b, const char *s, size_t i, size_t end, struct text_line *L,
                          size_t lineno, struct rejects *r)
{
    i = skip_blanks(s, i + 1, end);
    while (i < end && s[i] != '}') {
        size_t name_end = scan_name(s, i, end, false);
        size_t eq = skip_blanks(s, name_end, end);
        if (name_end == i || eq >= end || s[eq] != '=') {
            rejects_add(r, lineno, "labels", "label %zu is not name=\"value\"", L->nlabels + 1);
            return 0;
        }
        size_t q = skip_blanks(s, eq + 1, end);
        const char *value;
        size_t value_len;
        size_t next =
            q < end && s[q] == '"' ? scan_value(&b->arena, s, q + 1, end, &value, &value_len) : 0;
        if (next == 0) {
            rejects_add(r, lineno, "labels", "label '%.*s' needs a value in double quotes",
                        (int)(name_end - i), s + i);
            return 0;
        }
        if (!add_label(L, s + i, name_end - i, value, value_len, lineno, r))
            return 0;
        size_t after = skip_blanks(s, next, end);
        if (after < end && s[after] != ',' && s[after] != '}') {
            rejects_add(r, lineno, "labels", "expected , or } after label '%.*s'",
                        (int)(name_end - i), s + i);
            return 0;
        }
        i = after < end && s[after] == ',' ? skip_blanks(s, after + 1, end) : after;
    }
    if (i >= end) {
        rejects_add(r, lineno, "labels", "the label set has no closing }");
        return 0;
    }
    return i + 1;
}

/* The next blank-separated token at or after s[i] into tok; returns its end. */
static size_t next_token(const char *s, size_t i, size_t end, char tok[PROM_TOKEN_MAX + 1],
                         size_t *tok_len)
{
    i = skip_blanks(s, i, end);
    size_t start = i;
    while (i < end && !is_blank(s[i]))
        i++;
    *tok_len = i - start;
    size_t n = *tok_len > PROM_TOKEN_MAX ? PROM_TOKEN_MAX : *tok_len;
    memcpy(tok, s + start, n);
    tok[n] = '\0';
    return i;
}

/* A float as Go's ParseFloat reads it (NaN, +Inf, -Inf included). */
static bool parse_value(const char *tok, size_t len, double *out)
{
    if (len == 0 || len > PROM_TOKEN_MAX)
        return false;
    char *end;
    *out = strtod(tok, &end);
    return *end == '\0' && !strchr(tok, '(');
}

/* The value and optional timestamp after the name and labels. */
static bool value_and_time(const struct prom_text_opts *opts, const char *s, size_t i, size_t end,
                           double *value, int64_t *ts_ms, size_t lineno, struct rejects *r)
{
    char tok[PROM_TOKEN_MAX + 1];
    size_t len;
    if (i < end && !is_blank(s[i])) {
        rejects_add(r, lineno, "metric", "expected a blank after the metric name or labels");
        return false;
    }
    i = next_token(s, i, end, tok, &len);
    if (!parse_value(tok, len, value)) {
        rejects_add(r, lineno, "value", "value '%s' is not a number (or NaN, +Inf, -Inf)", tok);
        return false;
    }
    i = next_token(s, i, end, tok, &len);
    *ts_ms = opts->default_ts_ms;
    if (len > 0) {
        char *stop;
        errno = 0;
        long long t = strtoll(tok, &stop, 10);
        if (*stop || errno || len > PROM_TOKEN_MAX) {
            rejects_add(r, lineno, "timestamp",
                        "timestamp '%s' is not an integer of milliseconds since the epoch", tok);
            return false;
        }
        *ts_ms = t;
    }
    if (skip_blanks(s, i, end) != end) {
        rejects_add(r, lineno, "", "unexpected text after the timestamp");
        return false;
    }
    return true;
}

/* Adds the scraper's labels; a page label of the same name is kept as exported_<name>. */
static bool add_target_labels(struct batch *b, const struct prom_text_opts *opts,
                              struct text_line *L, size_t lineno, struct rejects *r)
{
    size_t page_labels = L->nlabels;
    for (size_t t = 0; t < opts->ntarget_labels; t++) {
        const struct prom_label *tl = &opts->target_labels[t];
        for (size_t i = 0; i < page_labels; i++) {
            struct prom_label *l = &L->labels[i];
            if (l->name_len == tl->name_len && memcmp(l->name, tl->name, l->name_len) == 0) {
                l->name = arena_printf(&b->arena, "exported_%.*s", (int)l->name_len, l->name);
                l->name_len += strlen("exported_");
            }
        }
        if (!add_label(L, tl->name, tl->name_len, tl->value, tl->value_len, lineno, r))
            return false;
    }
    return true;
}

/* One sample line. */
static bool sample_line(const struct ingest_ctx *ctx, const struct prom_text_opts *opts,
                        struct batch *b, const char *s, size_t end, size_t lineno,
                        struct text_line *L, struct rejects *r, struct prom_stats *st)
{
    size_t i = scan_name(s, 0, end, true);
    if (i == 0) {
        rejects_add(r, lineno, "metric",
                    "a sample line must start with a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
        return false;
    }
    L->nlabels = 0;
    add_label(L, "__name__", 8, s, i, lineno, r);
    size_t k = skip_blanks(s, i, end);
    if (k < end && s[k] == '{' && (i = scan_labels(b, s, k, end, L, lineno, r)) == 0)
        return false;
    double value;
    int64_t ts_ms;
    if (!value_and_time(opts, s, i, end, &value, &ts_ms, lineno, r) ||
        !add_target_labels(b, opts, L, lineno, r))
        return false;
    return ingest_prom_sample(ctx, b, L->labels, L->nlabels, ts_ms, value, lineno, r, st);
}

/* A comment: # HELP and # TYPE are checked; returns 1 at # EOF, -1 for a bad one, else 0. */
static int comment_line(const char *s, size_t end, size_t lineno, struct rejects *r)
{
    char word[PROM_TOKEN_MAX + 1];
    size_t len;
    size_t i = next_token(s, 1, end, word, &len);
    if (strcmp(word, "EOF") == 0 && skip_blanks(s, i, end) == end)
        return 1;
    bool help = strcmp(word, "HELP") == 0, type = strcmp(word, "TYPE") == 0;
    if (!help && !type)
        return 0;
    i = skip_blanks(s, i, end);
    size_t name_end = scan_name(s, i, end, true);
    if (name_end == i || (name_end < end && !is_blank(s[name_end]))) {
        rejects_add(r, lineno, "metric", "# %s needs a metric name", word);
        return -1;
    }
    if (!type)
        return 0;
    char kind[PROM_TOKEN_MAX + 1];
    size_t after = next_token(s, name_end, end, kind, &len);
    for (size_t t = 0; t < sizeof metric_types / sizeof metric_types[0]; t++)
        if (strcmp(kind, metric_types[t]) == 0 && skip_blanks(s, after, end) == end)
            return 0;
    rejects_add(r, lineno, "type",
                "'%s' is not a metric type (counter, gauge, histogram, summary, untyped)", kind);
    return -1;
}

int ingest_parse_promtext(const struct ingest_ctx *ctx, const char *data, size_t len,
                          const struct prom_text_opts *opts, struct batch *b, struct rejects *r,
                          struct prom_stats *st)
{
    struct prom_stats local = {0};
    if (!st)
        st = &local;
    struct text_line *L = malloc(sizeof *L);
    if (!L)
        abort();
    size_t pos = 0, lineno = 0;
    int rc = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        const char *line = data + pos;
        size_t line_len = end - pos;
        pos = end + 1;
        lineno++;
        while (line_len && (line[line_len - 1] == '\r' || is_blank(line[line_len - 1])))
            line_len--;
        size_t start = skip_blanks(line, 0, line_len);
        line += start;
        line_len -= start;
        if (line_len == 0)
            continue;
        if (!utf8_valid((const unsigned char *)line, line_len) || memchr(line, '\0', line_len)) {
            rejects_add(r, lineno, "", "line is not valid UTF-8 text (or holds a NUL byte)");
            continue;
        }
        if (line[0] == '#') {
            if (comment_line(line, line_len, lineno, r) == 1)
                break;
            continue;
        }
        sample_line(ctx, opts, b, line, line_len, lineno, L, r, st);
        if (st->samples > ctx->max_rows) {
            rc = E_LIMIT;
            break;
        }
    }
    free(L);
    if (rc)
        return rc;
    return r->count ? E_INVALID : 0;
}
