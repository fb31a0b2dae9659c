/*
 * A bound on what compiling a regular expression may cost. glibc's regcomp() builds a tree in
 * which stacked quantifiers ("a+++") and counted repetitions ("(a{1,100}){1,100}") multiply:
 * a pattern of a few hundred bytes then takes seconds and gigabytes (found by fuzz_config on a
 * fingerprint rule). Patterns come from clients too (label matchers of the series API, REGEXP
 * in read-only SQL), so every pattern is checked here before it is compiled.
 */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REGEX_MAX_REPEAT_PRODUCT 1000 /* counted repetitions, their upper bounds multiplied */

static bool quantifier_at(const char *p)
{
    return *p == '*' || *p == '+' || *p == '?' || *p == '{';
}

/* The upper bound of the interval "{n}", "{n,}" or "{n,m}" at p (1 when it is not one); *end
 * is set past it. */
static long interval_upper(const char *p, const char **end)
{
    char *e;
    long lo = strtol(p + 1, &e, 10);
    long hi = lo;
    if (*e == ',')
        hi = e[1] == '}' ? 255 : strtol(e + 1, &e, 10); /* "{n,}": as glibc's RE_DUP_MAX 255 */
    while (*e && *e != '}')
        e++;
    *end = *e ? e + 1 : e;
    return hi > 0 ? hi : 1;
}

bool regex_cost_ok(const char *re, char *why, size_t why_size)
{
    long product = 1;
    bool after_quantifier = false, in_bracket = false;
    for (const char *p = re; *p;) {
        if (in_bracket) {
            in_bracket = *p != ']' || p[-1] == '[' || (p[-1] == '^' && p[-2] == '[');
            p++;
            continue;
        }
        if (*p == '\\' && p[1]) {
            p += 2;
            after_quantifier = false;
            continue;
        }
        if (quantifier_at(p)) {
            if (after_quantifier) {
                snprintf(why, why_size, "a quantifier follows another at '%.10s'", p);
                return false;
            }
            const char *end = p + 1;
            if (*p == '{') {
                product *= interval_upper(p, &end);
                if (product > REGEX_MAX_REPEAT_PRODUCT) {
                    snprintf(why, why_size, "counted repetitions allow more than %d repeats in all",
                             REGEX_MAX_REPEAT_PRODUCT);
                    return false;
                }
            }
            after_quantifier = true;
            p = end;
            continue;
        }
        in_bracket = *p == '[';
        after_quantifier = false;
        p++;
    }
    return true;
}
