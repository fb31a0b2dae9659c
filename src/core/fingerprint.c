/*
 * Error fingerprints. Two log events are the same error when their messages differ only in the
 * values that vary per request: ids, numbers, quoted strings. The message is normalised by
 * folding those, then the configured regex rules run, then type + component + normalised message
 * are hashed.
 */
#include "core.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fp_rule {
    regex_t re;
    char *replacement;
};

struct fingerprint_rules {
    size_t n;
    struct fp_rule rules[CONFIG_MAX_FP_RULES];
};

#define FP_MAX_MESSAGE 16384 /* longer messages are fingerprinted on their first 16 KiB */

uint64_t hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    /* final avalanche so short keys spread over the whole range (hash tables use low bits) */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

struct fingerprint_rules *fingerprint_rules_new(void)
{
    struct fingerprint_rules *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    return r;
}

int fingerprint_rules_add(struct fingerprint_rules *r, const char *regex, const char *replacement,
                          struct err *e)
{
    if (r->n >= CONFIG_MAX_FP_RULES)
        return err_set(e, E_LIMIT, "too many fingerprint rules (limit %d)", CONFIG_MAX_FP_RULES);
    struct fp_rule *rule = &r->rules[r->n];
    char why[128];
    if (!regex_cost_ok(regex, why, sizeof why))
        return err_set(e, E_INVALID, "fingerprint rule '%.100s' is too costly a regex: %s", regex,
                       why);
    int rc = regcomp(&rule->re, regex, REG_EXTENDED);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &rule->re, msg, sizeof msg);
        return err_set(e, E_INVALID, "fingerprint rule '%s' is not a valid regex: %s", regex, msg);
    }
    rule->replacement = strdup(replacement);
    r->n++;
    return 0;
}

void fingerprint_rules_free(struct fingerprint_rules **rp)
{
    struct fingerprint_rules *r = *rp;
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        regfree(&r->rules[i].re);
        free(r->rules[i].replacement);
    }
    free(r);
    *rp = NULL;
}

static bool is_hex(char c)
{
    return isxdigit((unsigned char)c) != 0;
}

static bool word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* Length of a uuid at s, or 0. */
static size_t uuid_len(const char *s)
{
    static const int groups[] = {8, 4, 4, 4, 12};
    size_t i = 0;
    for (int g = 0; g < 5; g++) {
        for (int k = 0; k < groups[g]; k++, i++)
            if (!is_hex(s[i]))
                return 0;
        if (g < 4 && s[i++] != '-')
            return 0;
    }
    return i;
}

/* Length of a hex id at s: 0x-prefixed, or >= 8 hex digits with at least one digit and one
 * letter (all-digit runs are numbers, folded as such); 0 when there is none. */
static size_t hexid_len(const char *s)
{
    size_t i = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && is_hex(s[2])) {
        i = 2;
        while (is_hex(s[i]))
            i++;
        return word_char(s[i]) ? 0 : i;
    }
    bool digit = false, letter = false;
    while (is_hex(s[i])) {
        if (isdigit((unsigned char)s[i]))
            digit = true;
        else
            letter = true;
        i++;
    }
    return i >= 8 && digit && letter && !word_char(s[i]) ? i : 0;
}

static void fold_builtin(const char *msg, struct buf *out)
{
    size_t len = strnlen(msg, FP_MAX_MESSAGE);
    size_t i = 0;
    while (i < len) {
        char c = msg[i];
        bool at_word_start = i == 0 || !word_char(msg[i - 1]);
        size_t n;
        if (at_word_start && (n = uuid_len(msg + i)) > 0 && !word_char(msg[i + n])) {
            buf_append(out, "<uuid>", 6);
            i += n;
        } else if (at_word_start && (n = hexid_len(msg + i)) > 0) {
            buf_append(out, "<hex>", 5);
            i += n;
        } else if (c == '"' || (c == '\'' && at_word_start)) { /* not the one in "can't" */
            const char *end = memchr(msg + i + 1, c, len - i - 1);
            if (end) {
                buf_append(out, c == '"' ? "\"<str>\"" : "'<str>'", 7);
                i = (size_t)(end - msg) + 1;
            } else {
                buf_putc(out, c);
                i++;
            }
        } else if (!at_word_start && isalnum((unsigned char)c) &&
                   isalnum((unsigned char)msg[i - 1])) {
            /* letters and digits run together name things (sha256, v18, e2e): kept whole; a
             * number after '_' (item_7) is still folded */
            while (i < len && isalnum((unsigned char)msg[i]))
                buf_putc(out, msg[i++]);
        } else if (isdigit((unsigned char)c)) {
            /* numbers, including decimals and ip-like dotted runs, fold to one token */
            while (i < len && (isdigit((unsigned char)msg[i]) ||
                               (msg[i] == '.' && isdigit((unsigned char)msg[i + 1]))))
                i++;
            buf_append(out, "<n>", 3);
        } else {
            buf_putc(out, c);
            i++;
        }
    }
}

static void apply_rule(const struct fp_rule *rule, struct buf *text)
{
    struct buf out;
    buf_init(&out, FP_MAX_MESSAGE * 4);
    const char *p = text->data ? text->data : "";
    regmatch_t m;
    int eflags = 0;
    while (*p && regexec(&rule->re, p, 1, &m, eflags) == 0) {
        buf_append(&out, p, (size_t)m.rm_so);
        buf_append(&out, rule->replacement, strlen(rule->replacement));
        if (m.rm_eo == 0) { /* empty match: copy one byte to make progress */
            buf_putc(&out, *p);
            p++;
        } else {
            p += m.rm_eo;
        }
        eflags = REG_NOTBOL;
    }
    buf_append(&out, p, strlen(p));
    buf_release(text);
    *text = out;
}

void fingerprint_normalize(const struct fingerprint_rules *r, const char *msg, struct buf *out)
{
    fold_builtin(msg, out);
    if (!out->data)
        buf_append(out, "", 0);
    for (size_t i = 0; r && i < r->n; i++)
        apply_rule(&r->rules[i], out);
}

void fingerprint_compute(const struct fingerprint_rules *r, const char *error_type,
                         const char *component, const char *msg, char out[17])
{
    struct buf norm;
    buf_init(&norm, FP_MAX_MESSAGE * 4);
    fingerprint_normalize(r, msg, &norm);
    uint64_t h = hash64(error_type, strlen(error_type), 0);
    h = hash64(component, strlen(component), h);
    h = hash64(norm.data, norm.len, h);
    buf_release(&norm);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
