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

/* glibc compiles "x+" as "xx*" and "x{n,m}" as m copies of x, so the tree grows with the
 * product of nested repetitions: a pattern is held to this many atoms once expanded. */
#define REGEX_MAX_EXPANDED 2000
#define REGEX_MAX_NESTING 64

static bool quantifier_at(const char *p)
{
    return *p == '*' || *p == '+' || *p == '?' || *p == '{';
}

/* How many copies of the atom before it the quantifier at p makes; *end is set past it. */
static double copies_of(const char *p, const char **end)
{
    *end = p + 1;
    if (*p == '+')
        return 2;
    if (*p != '{')
        return 1;
    char *e;
    double lo = strtod(p + 1, &e), hi = lo;
    if (*e == ',')
        hi = e[1] == '}' ? lo + 1 : strtod(e + 1, &e);
    while (*e && *e != '}')
        e++;
    *end = *e ? e + 1 : e;
    return hi > 1 ? hi : 1;
}

/* Past the bracket expression that opens at p ('['): a ']' right after "[" or "[^" is a
 * member, and "[:alpha:]", "[.x.]", "[=x=]" inside hold their own ']'. */
static const char *bracket_end(const char *p)
{
    const char *q = p + 1;
    if (*q == '^')
        q++;
    if (*q == ']')
        q++;
    while (*q && *q != ']') {
        if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
            const char *close = strchr(q + 2, q[1]);
            while (close && close[1] != ']')
                close = strchr(close + 1, q[1]);
            q = close ? close + 2 : q + 1;
            continue;
        }
        q++;
    }
    return *q ? q + 1 : q;
}

struct scan {
    const char *p;
    const char *why; /* what made the pattern too costly, NULL while it is not */
};

/* The expanded size of the alternatives up to ')' or the end, with s->p left there. */
static double expanded(struct scan *s, int depth)
{
    double total = 0, branch = 0;
    if (depth > REGEX_MAX_NESTING) {
        s->why = "groups are nested too deeply";
        return 0;
    }
    while (*s->p && *s->p != ')' && !s->why) {
        if (*s->p == '|') {
            total += branch;
            branch = 0;
            s->p++;
            continue;
        }
        double atom = 1;
        if (*s->p == '(') {
            s->p++;
            atom = expanded(s, depth + 1);
            if (*s->p == ')')
                s->p++;
        } else if (*s->p == '[') {
            s->p = bracket_end(s->p);
        } else {
            s->p += s->p[0] == '\\' && s->p[1] ? 2 : 1;
        }
        for (bool first = true; quantifier_at(s->p); first = false) {
            if (!first) {
                s->why = "a quantifier follows another";
                return 0;
            }
            atom *= copies_of(s->p, &s->p);
        }
        branch += atom;
        if (total + branch > REGEX_MAX_EXPANDED)
            s->why = "its repetitions expand to more than 2000 atoms";
    }
    return total + branch;
}

bool regex_cost_ok(const char *re, char *why, size_t why_size)
{
    struct scan s = {re, NULL};
    while (*s.p && !s.why) {
        expanded(&s, 0);
        if (*s.p == ')')
            s.p++; /* an unbalanced ')': regcomp() will say what is wrong */
    }
    if (s.why)
        snprintf(why, why_size, "%s (at byte %zu)", s.why, (size_t)(s.p - re));
    return s.why == NULL;
}
