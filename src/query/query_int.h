/*
 * Private to query/: label matchers (query_matchers.c), shared by series queries and the
 * window aggregates of alert rules.
 */
#ifndef OPSDB_QUERY_INT_H
#define OPSDB_QUERY_INT_H

#include "query/query.h"

#include <jansson.h>
#include <regex.h>

#define QUERY_MATCHERS_MAX 16

enum match_op { MATCH_EQ, MATCH_NE, MATCH_RE, MATCH_NRE };

struct matcher {
    char key[128];
    char value[512];
    enum match_op op;
    regex_t re;
};

/* Parses a comma-separated filter into ms (room for QUERY_MATCHERS_MAX); *n says how many.
 * Commas inside double quotes or braces do not split. E_INVALID names the bad matcher; the
 * matchers parsed before it must still be released. NULL or "" is no matcher. */
int matchers_parse(const char *filter, struct matcher *ms, size_t *n, struct err *e);
void matchers_release(struct matcher *ms, size_t n);
/* Whether a series with these host, component and labels (an object, or NULL: none) matches
 * every matcher; a label it lacks is the empty string. */
bool matchers_match(const struct matcher *ms, size_t n, const char *host, const char *component,
                    json_t *labels);

#endif
