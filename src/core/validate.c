/*
 * Field conversion and row validation, driven by the schema table: every input format (JSON,
 * CSV, line protocol) converts its fields here, so the same bad value gets the same message
 * whatever way it arrived.
 */
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static bool fail(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail(char *why, size_t why_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
    return false;
}

/* Canonical JSON object text: keys sorted, compact, so equal label sets compare equal. */
static bool json_object_text(const char *s, size_t len, bool strings_only, struct arena *a,
                             struct value *out, char *why, size_t why_size)
{
    json_error_t jerr;
    json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return fail(why, why_size, "is not valid JSON: %s", jerr.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return fail(why, why_size, "must be a JSON object");
    }
    if (strings_only) {
        const char *key;
        json_t *val;
        json_object_foreach(j, key, val)
        {
            if (!json_is_string(val)) {
                fail(why, why_size, "value of '%.40s' must be a string", key);
                json_decref(j); /* key points into j */
                return false;
            }
        }
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!text)
        return fail(why, why_size, "could not be encoded");
    out->type = VAL_TEXT;
    out->len = (uint32_t)strlen(text);
    out->s = arena_strndup(a, text, out->len);
    free(text);
    return true;
}

bool field_from_number(const struct column *c, double d, bool is_integer, int64_t i,
                       enum time_precision p, struct value *out, char *why, size_t why_size)
{
    switch (c->type) {
    case COL_TS: {
        bool ok =
            is_integer ? time_epoch_int_to_ms(i, p, &out->i) : time_epoch_to_ms(d, p, &out->i);
        if (!ok)
            return fail(why, why_size, "%g is not a valid epoch time in the given precision", d);
        out->type = VAL_INT;
        return true;
    }
    case COL_INT:
    case COL_BOOL:
        if (!is_integer) {
            if (!isfinite(d) || d != floor(d) || fabs(d) > 9.0e15)
                return fail(why, why_size, "%g is not an integer", d);
            i = (int64_t)d;
        }
        if (c->type == COL_BOOL && i != 0 && i != 1)
            return fail(why, why_size, "%lld is not a boolean (0 or 1)", (long long)i);
        out->type = VAL_INT;
        out->i = i;
        return true;
    case COL_REAL:
        if (!isfinite(d))
            return fail(why, why_size, "is not a finite number");
        out->type = VAL_REAL;
        out->d = is_integer ? (double)i : d;
        return true;
    case COL_TEXT:
    case COL_JSON:
        break;
    }
    return fail(why, why_size, "expected %s, got a number",
                c->type == COL_JSON ? "a JSON object" : "text");
}

static bool text_to_number(const struct column *c, const char *s, size_t len, enum time_precision p,
                           struct value *out, char *why, size_t why_size)
{
    char tmp[64];
    if (len >= sizeof tmp)
        return fail(why, why_size, "'%.20s...' is not a number", s);
    if (memchr(s, '\0', len) || isspace((unsigned char)s[0]) || isspace((unsigned char)s[len - 1]))
        return fail(why, why_size, "'%.*s' is not a number", (int)len, s);
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *end;
    errno = 0;
    long long iv = strtoll(tmp, &end, 10);
    if (*end == '\0' && errno == 0 && end != tmp)
        return field_from_number(c, (double)iv, true, iv, p, out, why, why_size);
    errno = 0;
    double dv = strtod(tmp, &end);
    if (*end != '\0' || end == tmp || strpbrk(tmp, "xX")) /* no hex floats */
        return fail(why, why_size, "'%s' is not a number", tmp);
    return field_from_number(c, dv, false, 0, p, out, why, why_size);
}

bool field_from_text(const struct column *c, const char *s, size_t len, enum time_precision p,
                     struct arena *a, struct value *out, char *why, size_t why_size)
{
    out->type = VAL_NULL;
    if (len == 0)
        return true;
    switch (c->type) {
    case COL_TS:
        if (time_parse_rfc3339(s, len, &out->i)) {
            out->type = VAL_INT;
            return true;
        }
        if (!isdigit((unsigned char)s[0]) && s[0] != '-')
            return fail(why, why_size, "'%.*s' is not an RFC 3339 time or epoch number",
                        (int)(len > 40 ? 40 : len), s);
        return text_to_number(c, s, len, p, out, why, why_size);
    case COL_INT:
    case COL_REAL:
        return text_to_number(c, s, len, p, out, why, why_size);
    case COL_BOOL: {
        static const char *const yes[] = {"true", "1", "yes", "t", NULL};
        static const char *const no[] = {"false", "0", "no", "f", NULL};
        for (int k = 0; yes[k]; k++) {
            if (strlen(yes[k]) == len && strncasecmp(s, yes[k], len) == 0) {
                out->type = VAL_INT;
                out->i = 1;
                return true;
            }
            if (strlen(no[k]) == len && strncasecmp(s, no[k], len) == 0) {
                out->type = VAL_INT;
                out->i = 0;
                return true;
            }
        }
        return fail(why, why_size, "'%.*s' is not a boolean", (int)(len > 20 ? 20 : len), s);
    }
    case COL_JSON:
        if (len > c->max_len)
            return fail(why, why_size, "is %zu bytes, longer than the limit of %u", len,
                        c->max_len);
        return json_object_text(s, len, c->series_key, a, out, why, why_size);
    case COL_TEXT:
        if (!utf8_valid((const unsigned char *)s, len))
            return fail(why, why_size, "is not valid UTF-8");
        if (memchr(s, '\0', len))
            return fail(why, why_size, "contains a NUL character");
        out->type = VAL_TEXT;
        out->len = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
        out->s = arena_strndup(a, s, len);
        return true;
    }
    return fail(why, why_size, "has an unknown type");
}

/* Common spellings of levels from syslog, log4j, Python and Go loggers. */
static const char *level_alias(const char *s, size_t len)
{
    static const struct {
        const char *alias, *level;
    } aliases[] = {{"warn", "warning"}, {"err", "error"},    {"crit", "critical"},
                   {"emerg", "fatal"},  {"panic", "fatal"},  {"alert", "critical"},
                   {"trace", "debug"},  {"severe", "error"}, {"information", "info"}};
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strlen(aliases[i].alias) == len && strncasecmp(aliases[i].alias, s, len) == 0)
            return aliases[i].level;
    return NULL;
}

static bool check_allowed(const struct column *c, struct value *v)
{
    for (const char *const *a = c->allowed; *a; a++) {
        if (strlen(*a) == v->len && strncasecmp(*a, v->s, v->len) == 0) {
            v->s = *a; /* store the canonical spelling */
            return true;
        }
    }
    if (strcmp(c->name, "level") == 0) {
        const char *canon = level_alias(v->s, v->len);
        if (canon) {
            v->s = canon;
            v->len = (uint32_t)strlen(canon);
            return true;
        }
    }
    return false;
}

static void allowed_list(const struct column *c, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (const char *const *a = c->allowed; *a && used + 2 < size; a++) {
        int n = snprintf(out + used, size - used, "%s%s", a == c->allowed ? "" : ", ", *a);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* Text values are NUL-terminated for their readers (fingerprints), so a quoted SQL literal is
 * copied without its quotes. */
static void apply_default(const struct column *c, struct value *v, struct arena *a)
{
    const char *d = c->default_sql;
    if (!d)
        return;
    if (d[0] == '\'') {
        size_t len = strlen(d);
        v->type = VAL_TEXT;
        v->len = (uint32_t)(len >= 2 ? len - 2 : 0);
        v->s = v->len ? arena_strndup(a, d + 1, v->len) : "";
    } else {
        v->type = VAL_INT;
        v->i = strtoll(d, NULL, 10);
    }
}

static bool check_value(const struct validate_opts *o, const struct table *t, int tindex,
                        const struct column *c, struct value *v, size_t input_index,
                        struct rejects *r)
{
    char list[256];
    switch (c->type) {
    case COL_TS:
        if (strcmp(c->name, "ts") != 0)
            return true;
        if (v->i > o->now_ms + o->max_future_ms) {
            rejects_add(r, input_index, c->name,
                        "%s %.3f s is in the future (more than %lld s after now)", c->name,
                        (double)v->i / 1000.0, (long long)(o->max_future_ms / 1000));
            return false;
        }
        if (o->retention_days && tindex >= 0 && o->retention_days[tindex] > 0 &&
            v->i < o->now_ms - (int64_t)o->retention_days[tindex] * 86400000) {
            rejects_add(r, input_index, c->name,
                        "%s is older than the %s retention horizon of %d days", c->name, t->name,
                        o->retention_days[tindex]);
            return false;
        }
        return true;
    case COL_INT:
    case COL_BOOL:
        if (c->min < c->max && ((double)v->i < c->min || (double)v->i > c->max)) {
            rejects_add(r, input_index, c->name, "%s %lld is outside %.15g..%.15g", c->name,
                        (long long)v->i, c->min, c->max);
            return false;
        }
        return true;
    case COL_REAL:
        if (v->type == VAL_INT) {
            v->type = VAL_REAL;
            v->d = (double)v->i;
        }
        if (c->min < c->max && (v->d < c->min || v->d > c->max)) {
            rejects_add(r, input_index, c->name, "%s %g is outside %.15g..%.15g", c->name, v->d,
                        c->min, c->max);
            return false;
        }
        return true;
    case COL_TEXT:
    case COL_JSON:
        if (v->len > c->max_len) {
            rejects_add(r, input_index, c->name, "%s is %u bytes, longer than the limit of %u",
                        c->name, v->len, c->max_len);
            return false;
        }
        if (c->allowed && !check_allowed(c, v)) {
            allowed_list(c, list, sizeof list);
            rejects_add(r, input_index, c->name, "%s '%.40s' is not one of %s", c->name, v->s,
                        list);
            return false;
        }
        return true;
    }
    return true;
}

/* In a series table the labels may not repeat a key column (host, component, metric): the
 * series would then have two values for one label. */
static bool labels_clash(const struct table *t, const struct value *row, size_t input_index,
                         struct rejects *r)
{
    for (size_t i = 0; i < t->ncolumns; i++) {
        const struct column *c = &t->columns[i];
        if (c->type != COL_JSON || !c->series_key || row[i].type != VAL_TEXT || row[i].len <= 2)
            continue;
        for (size_t k = 0; k < t->ncolumns; k++) {
            const char *name = t->columns[k].name;
            size_t len = strlen(name);
            if (k == i || !t->columns[k].series_key)
                continue;
            /* cheap test first (this runs for every sample): the name in quotes anywhere */
            const char *p = row[i].s;
            bool found = false;
            while ((p = memmem(p, row[i].len - (size_t)(p - row[i].s), name, len)) != NULL) {
                if (p > row[i].s && p[-1] == '"' && p[len] == '"') {
                    found = true;
                    break;
                }
                p += len;
            }
            if (!found)
                continue;
            json_t *j = json_loadb(row[i].s, row[i].len, 0, NULL);
            bool has = j && json_object_get(j, name) != NULL;
            json_decref(j);
            if (has) {
                rejects_add(r, input_index, c->name,
                            "%s may not hold '%s': it is a column of %s, give it as %s", c->name,
                            name, t->name, name);
                return true;
            }
        }
    }
    return false;
}

/* Members of a series table's labels: an object of strings in canonical text, so every member
 * is two strings, four quotes that are not escaped. */
static size_t label_count(const struct value *v)
{
    size_t quotes = 0;
    for (uint32_t i = 0; i < v->len; i++) {
        if (v->s[i] == '\\')
            i++;
        else if (v->s[i] == '"')
            quotes++;
    }
    return quotes / 4;
}

/* limits.max_labels: a bound on what one sample costs in every index and answer. */
static bool too_many_labels(const struct validate_opts *o, const struct table *t,
                            const struct value *row, size_t input_index, struct rejects *r)
{
    for (size_t i = 0; i < t->ncolumns; i++) {
        const struct column *c = &t->columns[i];
        if (c->type != COL_JSON || !c->series_key || row[i].type != VAL_TEXT)
            continue;
        size_t n = label_count(&row[i]);
        if (n > o->max_labels) {
            rejects_add(r, input_index, c->name,
                        "%s has %zu labels, more than the limit of %zu (limits.max_labels)",
                        c->name, n, o->max_labels);
            return true;
        }
    }
    return false;
}

static void derive_fingerprint(const struct validate_opts *o, struct batch *b, struct value *row,
                               int col)
{
    const struct table *t = b->table;
    int msg = schema_column(t, "message"), type = schema_column(t, "error_type");
    int comp = schema_column(t, "component"), svc = schema_column(t, "service");
    const char *component = "";
    if (comp >= 0 && row[comp].type == VAL_TEXT && row[comp].len)
        component = row[comp].s;
    else if (svc >= 0 && row[svc].type == VAL_TEXT)
        component = row[svc].s;
    char fp[17];
    fingerprint_compute(o->fingerprints, type >= 0 && row[type].type == VAL_TEXT ? row[type].s : "",
                        component, msg >= 0 && row[msg].type == VAL_TEXT ? row[msg].s : "", fp);
    row[col].type = VAL_TEXT;
    row[col].len = 16;
    row[col].s = arena_strndup(&b->arena, fp, 16);
}

bool validate_row(const struct validate_opts *o, struct batch *b, size_t row_i, size_t input_index,
                  struct rejects *r)
{
    const struct table *t = b->table;
    size_t ntables;
    int tindex = (int)(t - schema_tables(&ntables));
    struct value *row = batch_row(b, row_i);
    bool ok = true;
    for (size_t i = 0; i < t->ncolumns; i++) {
        const struct column *c = &t->columns[i];
        struct value *v = &row[i];
        if (v->type == VAL_NULL) {
            if (c->required) {
                rejects_add(r, input_index, c->name, "missing required field %s", c->name);
                ok = false;
            } else {
                apply_default(c, v, &b->arena);
            }
            continue;
        }
        if (!check_value(o, t, tindex, c, v, input_index, r))
            ok = false;
    }
    if (!ok || (t->kind == TABLE_SERIES && labels_clash(t, row, input_index, r)))
        return false;
    if (t->kind == TABLE_SERIES && o->max_labels && too_many_labels(o, t, row, input_index, r))
        return false;
    for (size_t i = 0; i < t->ncolumns; i++)
        if (t->columns[i].derived && row[i].type == VAL_NULL)
            derive_fingerprint(o, b, row, (int)i);
    return true;
}
