/*
 * The samples of one collection and their two ways out: NDJSON rows for the agent's POST, and a
 * batch of system_metrics for the server's writer. Both spell a row the same way, so a host
 * collected by the agent and by the server itself gives the same series.
 */
#include "agent/agent.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void samples_init(struct samples *s, int64_t ts_ms, const char *host)
{
    memset(s, 0, sizeof *s);
    s->ts_ms = ts_ms;
    snprintf(s->host, sizeof s->host, "%s", host);
}

void samples_release(struct samples *s)
{
    free(s->items);
    s->items = NULL;
    s->n = s->cap = 0;
}

void samples_add(struct samples *s, const char *component, const char *metric,
                 const char *label_key, const char *label_value, double value)
{
    if (!isfinite(value))
        return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct sample *more = realloc(s->items, cap * sizeof *more);
        if (!more)
            abort();
        s->items = more;
        s->cap = cap;
    }
    struct sample *x = &s->items[s->n++];
    x->component = component;
    x->metric = metric;
    x->label_key = label_key;
    snprintf(x->label_value, sizeof x->label_value, "%s", label_key ? label_value : "");
    /* a mount point may be any bytes, and the cut may split a character: JSON needs UTF-8 */
    size_t len = strlen(x->label_value);
    if (!utf8_valid((const unsigned char *)x->label_value, len))
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)x->label_value[i] >= 0x80)
                x->label_value[i] = '?';
    x->value = value;
}

/* The labels as canonical JSON (compact, one key), malloc'd; NULL when out of memory. */
static char *labels_text(const struct sample *x)
{
    if (!x->label_key)
        return strdup("{}");
    json_t *o = json_object();
    json_object_set_new(o, x->label_key, json_string(x->label_value));
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

int samples_to_ndjson(const struct samples *s, struct buf *out)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct sample *x = &s->items[i];
        json_t *row = json_pack("{sIsssssssf}", "ts", (json_int_t)s->ts_ms, "host", s->host,
                                "component", x->component, "metric", x->metric, "value", x->value);
        if (row && x->label_key)
            json_object_set_new(row, "labels", json_pack("{ss}", x->label_key, x->label_value));
        char *line = row ? json_dumps(row, JSON_COMPACT) : NULL;
        json_decref(row);
        if (!line)
            abort(); /* only memory can fail here: samples_add keeps the strings UTF-8 */
        size_t before = out->len;
        int rc = buf_append(out, line, strlen(line));
        if (rc == 0)
            rc = buf_putc(out, '\n');
        free(line);
        if (rc != 0) {
            out->len = before; /* whole lines only */
            out->data[before] = '\0';
            return rc;
        }
    }
    return 0;
}

static void put_text(struct batch *b, struct value *row, const char *col, const char *text)
{
    int c = schema_column(b->table, col);
    size_t n = strlen(text);
    row[c] = (struct value){
        .s = arena_strndup(&b->arena, text, n), .len = (uint32_t)n, .type = VAL_TEXT};
}

void samples_to_batch(const struct samples *s, struct batch *b)
{
    int ts = schema_column(b->table, "ts"), value = schema_column(b->table, "value");
    for (size_t i = 0; i < s->n; i++) {
        const struct sample *x = &s->items[i];
        struct value *row = batch_add_row(b);
        row[ts] = (struct value){.i = s->ts_ms, .type = VAL_INT};
        row[value] = (struct value){.d = x->value, .type = VAL_REAL};
        put_text(b, row, "host", s->host);
        put_text(b, row, "component", x->component);
        put_text(b, row, "metric", x->metric);
        char *labels = labels_text(x);
        if (!labels)
            abort();
        put_text(b, row, "labels", labels);
        free(labels);
    }
}
