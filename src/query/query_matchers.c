/*
 * Label matchers as the series API and alert rules take them: "host=h0,component!=db,
 * endpoint=~/api/.*" (=, !=, =~ and !~; regexes match the whole value, as in Prometheus).
 */
#include "query/query_int.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static int parse_one(const char *text, size_t len, struct matcher *m, struct err *e)
{
    static const struct {
        const char *op;
        enum match_op kind;
    } ops[] = {{"!=", MATCH_NE}, {"=~", MATCH_RE}, {"!~", MATCH_NRE}, {"=", MATCH_EQ}};
    size_t k = 0;
    while (k < len &&
           (text[k] == '_' || (text[k] >= 'a' && text[k] <= 'z') ||
            (text[k] >= 'A' && text[k] <= 'Z') || (k && text[k] >= '0' && text[k] <= '9')))
        k++;
    size_t i;
    for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (k && len - k >= strlen(ops[i].op) &&
            strncmp(text + k, ops[i].op, strlen(ops[i].op)) == 0)
            break;
    if (i == sizeof ops / sizeof ops[0] || k >= sizeof m->key)
        return err_set(e, E_INVALID,
                       "filter: '%.*s' is not a label matcher (label=value, label!=value, "
                       "label=~regex or label!~regex)",
                       (int)(len > 80 ? 80 : len), text);
    memcpy(m->key, text, k);
    m->key[k] = '\0';
    m->op = ops[i].kind;
    const char *v = text + k + strlen(ops[i].op);
    size_t vl = len - (size_t)(v - text);
    if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
        v++;
        vl -= 2;
    }
    if (vl >= sizeof m->value)
        return err_set(e, E_INVALID, "filter: the value of '%s' is too long", m->key);
    memcpy(m->value, v, vl);
    m->value[vl] = '\0';
    if (m->op == MATCH_RE || m->op == MATCH_NRE) {
        char costly[128];
        if (!regex_cost_ok(m->value, costly, sizeof costly)) {
            m->op = MATCH_EQ; /* nothing compiled to release */
            return err_set(e, E_INVALID, "filter: '%.80s' is too costly a regular expression: %s",
                           m->value, costly);
        }
        char anchored[sizeof m->value + 8];
        snprintf(anchored, sizeof anchored, "^(%s)$", m->value); /* whole value, as Prometheus */
        int rc = regcomp(&m->re, anchored, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &m->re, why, sizeof why);
            return err_set(e, E_INVALID, "filter: '%s' is not a valid regular expression: %s",
                           m->value, why);
        }
    }
    return 0;
}

/* Splits on commas, except inside double quotes or braces, so a value may be quoted
 * (host="a,b") and a regex may hold a quantifier (host=~w{1,3}). */
int matchers_parse(const char *filter, struct matcher *ms, size_t *n, struct err *e)
{
    *n = 0;
    if (!filter || !*filter)
        return 0;
    const char *start = filter;
    bool quoted = false;
    int braces = 0;
    for (const char *p = filter;; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == '{')
            braces++;
        else if (!quoted && *p == '}' && braces > 0)
            braces--;
        bool end = *p == '\0';
        if (end && (quoted || braces > 0))
            return err_set(e, E_INVALID, "filter: unbalanced %s in '%.80s'",
                           quoted ? "quote" : "brace", filter);
        if (!end && (*p != ',' || quoted || braces > 0))
            continue;
        if (*n >= QUERY_MATCHERS_MAX)
            return err_set(e, E_INVALID, "filter: at most %d matchers", QUERY_MATCHERS_MAX);
        int rc = parse_one(start, (size_t)(p - start), &ms[*n], e);
        if (rc)
            return rc;
        (*n)++;
        if (end)
            return 0;
        start = p + 1;
    }
}

void matchers_release(struct matcher *ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ms[i].op == MATCH_RE || ms[i].op == MATCH_NRE)
            regfree(&ms[i].re);
}

bool matchers_match(const struct matcher *ms, size_t n, const char *host, const char *component,
                    json_t *labels)
{
    for (size_t i = 0; i < n; i++) {
        const struct matcher *m = &ms[i];
        const char *v = "";
        if (strcmp(m->key, "host") == 0) {
            v = host;
        } else if (strcmp(m->key, "component") == 0) {
            v = component;
        } else if (labels) {
            const char *s = json_string_value(json_object_get(labels, m->key));
            v = s ? s : ""; /* a missing label is the empty string, as in Prometheus */
        }
        bool ok;
        switch (m->op) {
        case MATCH_EQ:
            ok = strcmp(v, m->value) == 0;
            break;
        case MATCH_NE:
            ok = strcmp(v, m->value) != 0;
            break;
        case MATCH_RE:
            ok = regexec(&m->re, v, 0, NULL, 0) == 0;
            break;
        default:
            ok = regexec(&m->re, v, 0, NULL, 0) != 0;
            break;
        }
        if (!ok)
            return false;
    }
    return true;
}

int query_filter_split(const char *filter, struct query_filter_term *out, size_t max, size_t *n,
                       struct err *e)
{
    static const char *const op_text[] = {"=", "!=", "=~", "!~"};
    struct matcher ms[QUERY_MATCHERS_MAX];
    size_t nms = 0;
    int rc = matchers_parse(filter, ms, &nms, e);
    *n = 0;
    for (size_t i = 0; rc == 0 && i < nms; i++) {
        if (i >= max) {
            rc = err_set(e, E_INVALID, "filter: at most %zu matchers", max);
            break;
        }
        memcpy(out[i].key, ms[i].key, sizeof out[i].key); /* the same sizes, NUL-ended */
        memcpy(out[i].value, ms[i].value, sizeof out[i].value);
        snprintf(out[i].op, sizeof out[i].op, "%s", op_text[ms[i].op]);
        *n = i + 1;
    }
    matchers_release(ms, nms);
    return rc;
}

struct query_matchers {
    size_t n;
    struct matcher ms[QUERY_MATCHERS_MAX];
};

int query_matchers_new(struct query_matchers **out, const char *filter, struct err *e)
{
    struct query_matchers *m = calloc(1, sizeof *m);
    if (!m)
        return err_set(e, E_NOMEM, "out of memory");
    int rc = matchers_parse(filter, m->ms, &m->n, e);
    if (rc) {
        matchers_release(m->ms, m->n);
        free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void query_matchers_free(struct query_matchers **mp)
{
    if (!*mp)
        return;
    matchers_release((*mp)->ms, (*mp)->n);
    free(*mp);
    *mp = NULL;
}

bool query_matchers_match(const struct query_matchers *m, json_t *labels)
{
    const char *host = json_string_value(json_object_get(labels, "host"));
    const char *component = json_string_value(json_object_get(labels, "component"));
    return matchers_match(m->ms, m->n, host ? host : "", component ? component : "", labels);
}
