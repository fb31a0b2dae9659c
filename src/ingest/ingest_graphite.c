/*
 * Graphite's plaintext protocol into system_metrics, so that collectd's write_graphite, Netdata's
 * graphite exporter and anything else that speaks to carbon write to opsdb unchanged:
 *
 *     path[;tag=value...] value timestamp
 *
 * A dotted path has no columns, so templates (the scheme of InfluxDB's and Telegraf's graphite
 * input) say which node is what: "filter template [tag=value,...]". The first template whose
 * filter matches the path's first nodes (a node "*" or a glob matches any) names the nodes in
 * order: host, component, metric (repeatable; its nodes are joined with "_"), metric* (the rest
 * of the path), "" (skipped), any other name a label; "a-b" splits the node at its first "-"
 * into a and b, which is how collectd's plugin-instance reads. The user's templates come first,
 * then the defaults for collectd and Netdata, then "host.metric*". Graphite 1.1 tags and the
 * template's extra tags become labels (host and component fill their columns).
 */
#include "ingest/ingest_int.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GT_MAX_TEMPLATES 64
#define GT_MAX_NODES 32 /* nodes of a filter or a template */
#define GT_MAX_PATH_NODES 64
#define GT_MAX_TAGS 32 /* a template's extra tags; a line's Graphite tags */
#define GT_NAME_MAX 64

/* The templates opsdb knows without configuration (docs/collection.md, "Graphite"). */
static const char default_templates[] = "collectd.* .host.component-instance.metric*\n"
                                        "netdata.* .host.component.metric*\n"
                                        "host.metric*\n";

enum gt_kind { GT_SKIP, GT_HOST, GT_COMPONENT, GT_METRIC, GT_METRIC_REST, GT_LABEL };

struct gt_name {
    enum gt_kind kind;
    char label[GT_NAME_MAX];
};

struct gt_part {
    struct gt_name name, split; /* split.kind != GT_SKIP: "name-split" */
    bool has_split;
};

struct gt_template {
    char filter[GT_MAX_NODES][GT_NAME_MAX];
    size_t nfilter;
    struct gt_part parts[GT_MAX_NODES];
    size_t nparts;
    char tag_key[GT_MAX_TAGS][GT_NAME_MAX], tag_val[GT_MAX_TAGS][GT_NAME_MAX];
    size_t ntags;
};

struct graphite_templates {
    struct gt_template t[GT_MAX_TEMPLATES + 8];
    size_t n;
};

/* ---- templates ------------------------------------------------------------------------------ */

static int name_of(const char *s, size_t len, struct gt_name *out, size_t line, struct err *e)
{
    static const struct {
        const char *word;
        enum gt_kind kind;
    } words[] = {{"", GT_SKIP},
                 {"host", GT_HOST},
                 {"component", GT_COMPONENT},
                 {"metric", GT_METRIC},
                 {"metric*", GT_METRIC_REST}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i].word) == len && memcmp(words[i].word, s, len) == 0) {
            out->kind = words[i].kind;
            return 0;
        }
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return err_set(e, E_INVALID,
                           "graphite.templates line %zu: '%.*s' is not a name (host, component, "
                           "metric, metric*, or a label of letters, digits and _)",
                           line, (int)len, s);
    if (len >= GT_NAME_MAX)
        return err_set(e, E_INVALID, "graphite.templates line %zu: label '%.*s' is too long", line,
                       (int)len, s);
    out->kind = GT_LABEL;
    snprintf(out->label, sizeof out->label, "%.*s", (int)len, s);
    return 0;
}

static int parse_template(struct gt_template *t, const char *s, size_t line, struct err *e)
{
    size_t n = 0;
    for (const char *p = s;; n++) {
        size_t len = strcspn(p, ".");
        if (n >= GT_MAX_NODES)
            return err_set(e, E_INVALID, "graphite.templates line %zu: more than %d nodes", line,
                           GT_MAX_NODES);
        struct gt_part *part = &t->parts[n];
        const char *dash = memchr(p, '-', len);
        int rc = name_of(p, dash ? (size_t)(dash - p) : len, &part->name, line, e);
        if (!rc && dash) {
            part->has_split = true;
            rc = name_of(dash + 1, len - (size_t)(dash + 1 - p), &part->split, line, e);
        }
        if (rc)
            return rc;
        if ((part->name.kind == GT_METRIC_REST || part->split.kind == GT_METRIC_REST) &&
            p[len] != '\0')
            return err_set(e, E_INVALID, "graphite.templates line %zu: metric* must be last", line);
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    t->nparts = n + 1;
    return 0;
}

static int parse_filter(struct gt_template *t, const char *s, size_t line, struct err *e)
{
    for (const char *p = s;;) {
        size_t len = strcspn(p, ".");
        if (len == 0 || len >= GT_NAME_MAX || t->nfilter >= GT_MAX_NODES)
            return err_set(e, E_INVALID,
                           "graphite.templates line %zu: filter '%s' needs non-empty nodes of at "
                           "most %d characters, at most %d of them",
                           line, s, GT_NAME_MAX - 1, GT_MAX_NODES);
        snprintf(t->filter[t->nfilter++], GT_NAME_MAX, "%.*s", (int)len, p);
        if (p[len] == '\0')
            return 0;
        p += len + 1;
    }
}

static int parse_extra_tags(struct gt_template *t, char *s, size_t line, struct err *e)
{
    char *save = NULL;
    for (char *kv = strtok_r(s, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1] || t->ntags >= GT_MAX_TAGS ||
            (size_t)(eq - kv) >= GT_NAME_MAX || strlen(eq + 1) >= GT_NAME_MAX)
            return err_set(e, E_INVALID,
                           "graphite.templates line %zu: tags must be key=value[,key=value] "
                           "(at most %d, each part shorter than %d): '%s'",
                           line, GT_MAX_TAGS, GT_NAME_MAX, kv);
        *eq = '\0';
        snprintf(t->tag_key[t->ntags], GT_NAME_MAX, "%s", kv);
        snprintf(t->tag_val[t->ntags++], GT_NAME_MAX, "%s", eq + 1);
    }
    return 0;
}

/* One line "[filter] template [tags]". */
static int parse_line(struct gt_template *t, char *text, size_t line, struct err *e)
{
    char *words[4], *save = NULL;
    size_t n = 0;
    for (char *w = strtok_r(text, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
        if (n < 4)
            words[n++] = w;
        else
            n = 4;
    if (n == 0 || n > 3)
        return err_set(
            e, E_INVALID,
            "graphite.templates line %zu: expected \"[filter] template [tag=value,...]\"", line);
    memset(t, 0, sizeof *t);
    bool has_tags = n > 1 && strchr(words[n - 1], '=');
    size_t tpl = n == 3 || (n == 2 && !has_tags) ? 1 : 0;
    if (n == 3 && !has_tags)
        return err_set(e, E_INVALID, "graphite.templates line %zu: '%s' is not key=value tags",
                       line, words[2]);
    int rc = tpl ? parse_filter(t, words[0], line, e) : 0;
    if (!rc)
        rc = parse_template(t, words[tpl], line, e);
    if (!rc && has_tags)
        rc = parse_extra_tags(t, words[n - 1], line, e);
    return rc;
}

static int add_lines(struct graphite_templates *ts, const char *text, size_t max, struct err *e)
{
    size_t line = 0;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n;");
        char buf[1024];
        line++;
        if (len >= sizeof buf)
            return err_set(e, E_INVALID, "graphite.templates line %zu is too long", line);
        snprintf(buf, sizeof buf, "%.*s", (int)len, p);
        p += len + (p[len] != '\0');
        if (strspn(buf, " \t") == strlen(buf))
            continue;
        if (ts->n >= max)
            return err_set(e, E_LIMIT, "graphite.templates: more than %d templates",
                           GT_MAX_TEMPLATES);
        int rc = parse_line(&ts->t[ts->n], buf, line, e);
        if (rc)
            return rc;
        ts->n++;
    }
    return 0;
}

int ingest_graphite_templates_new(struct graphite_templates **out, const char *text, struct err *e)
{
    struct graphite_templates *ts = calloc(1, sizeof *ts);
    if (!ts)
        return err_set(e, E_NOMEM, "out of memory");
    int rc = add_lines(ts, text ? text : "", GT_MAX_TEMPLATES, e);
    if (!rc)
        rc = add_lines(ts, default_templates, GT_MAX_TEMPLATES + 8, e);
    if (rc) {
        free(ts);
        return rc;
    }
    *out = ts;
    return 0;
}

void ingest_graphite_templates_free(struct graphite_templates **t)
{
    free(*t);
    *t = NULL;
}

/* ---- lines ---------------------------------------------------------------------------------- */

struct gt_line {
    char *nodes[GT_MAX_PATH_NODES];
    size_t nnodes;
    struct buf host, component, metric;
    json_t *labels;
};

static void append_to(struct buf *b, const char *sep, const char *s, size_t len)
{
    if (b->len)
        buf_append(b, sep, strlen(sep));
    buf_append(b, s, len);
}

static void assign(struct gt_line *L, const struct gt_name *name, const char *s, size_t len)
{
    switch (name->kind) {
    case GT_SKIP:
        return;
    case GT_HOST:
        append_to(&L->host, ".", s, len);
        return;
    case GT_COMPONENT:
        append_to(&L->component, ".", s, len);
        return;
    case GT_METRIC:
    case GT_METRIC_REST:
        append_to(&L->metric, "_", s, len);
        return;
    case GT_LABEL:
        json_object_set_new(L->labels, name->label, json_stringn(s, len));
        return;
    }
}

static void assign_node(struct gt_line *L, const struct gt_part *part, const char *node)
{
    size_t len = strlen(node);
    const char *dash = part->has_split ? strchr(node, '-') : NULL;
    assign(L, &part->name, node, dash ? (size_t)(dash - node) : len);
    if (dash)
        assign(L, &part->split, dash + 1, len - (size_t)(dash + 1 - node));
}

static bool matches(const struct gt_template *t, const struct gt_line *L)
{
    if (t->nfilter > L->nnodes)
        return false;
    for (size_t i = 0; i < t->nfilter; i++)
        if (fnmatch(t->filter[i], L->nodes[i], 0) != 0)
            return false;
    return true;
}

static void apply(const struct gt_template *t, struct gt_line *L)
{
    for (size_t i = 0; i < t->nparts && i < L->nnodes; i++) {
        const struct gt_part *part = &t->parts[i];
        if (part->name.kind == GT_METRIC_REST || part->split.kind == GT_METRIC_REST) {
            assign_node(L, part, L->nodes[i]);
            for (size_t k = i + 1; k < L->nnodes; k++)
                append_to(&L->metric, "_", L->nodes[k], strlen(L->nodes[k]));
            break;
        }
        assign_node(L, part, L->nodes[i]);
    }
    for (size_t i = 0; i < t->ntags; i++) { /* defaults for what the nodes did not name */
        const char *key = t->tag_key[i], *val = t->tag_val[i];
        if (strcmp(key, "host") == 0 || strcmp(key, "component") == 0) {
            struct buf *col = key[0] == 'h' ? &L->host : &L->component;
            if (col->len == 0)
                buf_append(col, val, strlen(val));
        } else if (!json_object_get(L->labels, key)) {
            json_object_set_new(L->labels, key, json_string(val));
        }
    }
}

/* Graphite 1.1 tags after the path: ;name=value... (host and component fill their columns). */
static bool line_tags(struct gt_line *L, char *tags, const char **why)
{
    char *save = NULL;
    size_t n = 0;
    for (char *kv = strtok_r(tags, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1] || ++n > GT_MAX_TAGS) {
            *why = "tags must be ;name=value (non-empty, at most 32)";
            return false;
        }
        *eq = '\0';
        struct buf *col = strcmp(kv, "host") == 0        ? &L->host
                          : strcmp(kv, "component") == 0 ? &L->component
                                                         : NULL;
        if (col) {
            col->len = 0;
            buf_append(col, eq + 1, strlen(eq + 1));
        } else if (json_object_set_new(L->labels, kv, json_string(eq + 1)) != 0) {
            *why = "a tag is not valid UTF-8";
            return false;
        }
    }
    return true;
}

/* Splits the path into nodes (in place) and sets *tags to its tags (NULL when none); false
 * with why when it is no path. */
static bool split_path(struct gt_line *L, char *path, char **tags, const char **why)
{
    char *semi = strchr(path, ';');
    if (semi)
        *semi = '\0';
    *tags = semi ? semi + 1 : NULL;
    L->nnodes = 0;
    for (char *p = path;;) {
        char *dot = strchr(p, '.');
        if (dot)
            *dot = '\0';
        if (*p == '\0' || L->nnodes >= GT_MAX_PATH_NODES) {
            *why = *p ? "the path has more than 64 nodes" : "the path has an empty node";
            return false;
        }
        L->nodes[L->nnodes++] = p;
        if (!dot)
            return true;
        p = dot + 1;
    }
}

/* Names the nodes by the first template that matches, then by the line's own tags. */
static bool map_path(const struct graphite_templates *ts, struct gt_line *L, char *tags,
                     const char **why)
{
    for (size_t i = 0; i < ts->n; i++)
        if (matches(&ts->t[i], L)) {
            apply(&ts->t[i], L);
            break;
        }
    if (L->metric.len == 0) { /* too short a path for its template: the whole path names it */
        L->host.len = L->component.len = 0;
        for (size_t i = 0; i < L->nnodes; i++)
            append_to(&L->metric, ".", L->nodes[i], strlen(L->nodes[i]));
    }
    return !tags || line_tags(L, tags, why);
}

static bool parse_number(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return end != s && *end == '\0' && !strpbrk(s, "xX");
}

static const char *text_of(const struct buf *b)
{
    return b->len ? b->data : "";
}

static bool emit(const struct ingest_ctx *ctx, struct batch *b, struct gt_line *L, double value,
                 int64_t ts, size_t lineno, struct rejects *r)
{
    const struct table *t = b->table;
    for (size_t i = 0; i < L->metric.len; i++)
        if (L->metric.data[i] == '-')
            L->metric.data[i] = '_';
    struct value *row = batch_add_row(b);
    row[schema_column(t, "ts")] = (struct value){.i = ts, .type = VAL_INT};
    row[schema_column(t, "value")] = (struct value){.d = value, .type = VAL_REAL};
    char *labels = json_dumps(L->labels, JSON_COMPACT | JSON_SORT_KEYS);
    bool ok =
        ingest_set_text(ctx, b, schema_column(t, "host"), text_of(&L->host), L->host.len, lineno,
                        r) &&
        ingest_set_text(ctx, b, schema_column(t, "component"), text_of(&L->component),
                        L->component.len, lineno, r) &&
        ingest_set_text(ctx, b, schema_column(t, "metric"), text_of(&L->metric), L->metric.len,
                        lineno, r) &&
        labels &&
        ingest_set_text(ctx, b, schema_column(t, "labels"), labels, strlen(labels), lineno, r);
    free(labels);
    return ingest_finish_row(ctx, b, ok, lineno, r);
}

/* One line: path value [timestamp]; false with a rejection when bad, *nan when the value is no
 * number Graphite stores (NaN, Inf: skipped, not rejected). */
static bool parse_line_into(const struct ingest_ctx *ctx, const struct graphite_templates *ts,
                            char *line, size_t lineno, struct gt_line *L, struct batch *b,
                            struct rejects *r, bool *nan)
{
    char *save = NULL, *f[4];
    size_t n = 0;
    for (char *w = strtok_r(line, " \t", &save); w && n < 4; w = strtok_r(NULL, " \t", &save))
        f[n++] = w;
    if (n < 2 || n > 3) {
        rejects_add(r, lineno, "", "expected \"path value timestamp\" (%s fields)",
                    n < 2 ? "fewer" : "more");
        return false;
    }
    double value, secs = -1;
    if (!parse_number(f[1], &value)) {
        rejects_add(r, lineno, "value", "value '%.40s' is not a number", f[1]);
        return false;
    }
    if (!isfinite(value)) {
        *nan = true;
        return false;
    }
    int64_t ms = ctx->validate.now_ms;
    if (n == 3 &&
        (!parse_number(f[2], &secs) || (secs != -1 && !time_epoch_to_ms(secs, PREC_S, &ms)))) {
        rejects_add(r, lineno, "ts", "timestamp '%.40s' is not epoch seconds", f[2]);
        return false;
    }
    const char *why = NULL;
    L->host.len = L->component.len = L->metric.len = 0;
    json_object_clear(L->labels);
    char *tags;
    if (!split_path(L, f[0], &tags, &why) || !map_path(ts, L, tags, &why)) {
        rejects_add(r, lineno, "metric", "%s", why);
        return false;
    }
    return emit(ctx, b, L, value, ms, lineno, r);
}

int ingest_parse_graphite(const struct ingest_ctx *ctx, const struct graphite_templates *ts,
                          const char *data, size_t len, struct batch *b, struct rejects *r,
                          size_t *nan_lines)
{
    struct gt_line L = {.labels = json_object()};
    buf_init(&L.host, 4096);
    buf_init(&L.component, 4096);
    buf_init(&L.metric, 4096);
    struct buf line;
    buf_init(&line, len + 1);
    size_t lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len, l = end - pos;
        lineno++;
        line.len = 0;
        buf_append(&line, data + pos, l);
        pos = end + 1;
        while (line.len && strchr("\r \t", line.data[line.len - 1]))
            line.data[--line.len] = '\0';
        if (line.len == 0)
            continue;
        if (memchr(line.data, '\0', line.len) ||
            !utf8_valid((const unsigned char *)line.data, line.len)) {
            rejects_add(r, lineno, "", "line is not valid UTF-8 text (or holds a NUL byte)");
            continue;
        }
        bool nan = false;
        parse_line_into(ctx, ts, line.data, lineno, &L, b, r, &nan);
        if (nan && nan_lines)
            (*nan_lines)++;
    }
    buf_release(&line);
    buf_release(&L.host);
    buf_release(&L.component);
    buf_release(&L.metric);
    json_decref(L.labels);
    return r->count ? E_INVALID : 0;
}
