/*
 * libFuzzer target: the query parameters of the read routes, as a query string
 * "key=value&key=value" (no percent-decoding: libmicrohttpd has done that). Input: a selector
 * byte, then the string.
 *
 *   even   the series API's: filter (label matchers, parsed, split and matched against a label
 *          set), step and window (durations), from, to and now (time points)
 *   odd    a view request (GET /api/v1/views/NAME): view= picks the view, window, now, order,
 *          limit and quick_ms as the route reads them, every other key an equality filter; run
 *          against an empty database opened once (a filter or order naming no column of the
 *          view must fail with a message, never reach SQL)
 */
#include "fuzz_common.h"
#include "query/query.h"
#include "store/store.h"

#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PARAMS 24

struct params {
    size_t n;
    char *keys[MAX_PARAMS], *values[MAX_PARAMS];
};

/* Splits text (modified in place) on '&' and '='. */
static void split(char *text, struct params *p)
{
    p->n = 0;
    for (char *save = NULL, *kv = strtok_r(text, "&", &save); kv && p->n < MAX_PARAMS;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq)
            *eq++ = '\0';
        p->keys[p->n] = kv;
        p->values[p->n++] = eq ? eq : kv + strlen(kv); /* "key" alone: an empty value */
    }
}

static const char *param(const struct params *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->keys[i], key) == 0)
            return p->values[i];
    return NULL;
}

static void series_params(const struct params *p)
{
    const char *filter = param(p, "filter");
    struct err e;
    err_clear(&e);
    struct query_matchers *m = NULL;
    int rc = query_matchers_new(&m, filter, &e);
    fuzz_check(rc == 0 || (rc == E_INVALID && e.msg[0]), "matchers rc %d", rc);
    if (rc == 0) {
        json_t *labels =
            json_pack("{s:s, s:s, s:s}", "host", "web-1", "component", "nginx", "env", "prod,eu");
        (void)query_matchers_match(m, labels);
        json_decref(labels);
        query_matchers_free(&m);
    }
    struct query_filter_term terms[4];
    size_t n = 99;
    rc = query_filter_split(filter, terms, 4, &n, &e);
    fuzz_check(n <= 4, "%zu terms", n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        fuzz_check(memchr(terms[i].value, '\0', sizeof terms[i].value) && terms[i].key[0],
                   "term %zu", i);
    static const char *const durations[] = {"step", "window"};
    for (size_t i = 0; i < 2; i++) {
        int64_t ms = -1;
        const char *v = param(p, durations[i]);
        if (v && time_parse_duration(v, &ms))
            fuzz_check(ms >= 0 && ms <= 9000000000000000LL, "%s %s is %lld ms", durations[i], v,
                       (long long)ms);
    }
    static const char *const points[] = {"from", "to", "now"};
    for (size_t i = 0; i < 3; i++) {
        int64_t ms;
        const char *v = param(p, points[i]);
        if (v)
            (void)time_parse_point(v, &ms);
    }
}

static struct store *fuzz_store;
static struct config fuzz_cfg;

static void open_store(void)
{
    if (fuzz_store)
        return;
    char dir[] = "/tmp/opsdb-fuzz-query-XXXXXX";
    fuzz_check(mkdtemp(dir) != NULL, "mkdtemp");
    config_defaults(&fuzz_cfg);
    snprintf(fuzz_cfg.db, sizeof fuzz_cfg.db, "%s/q.db", dir);
    fuzz_cfg.query_timeout_ms = 1000;
    struct err e;
    fuzz_check(store_open(&fuzz_store, &fuzz_cfg, STORE_READWRITE, &e) == 0, "store: %s", e.msg);
}

static void view_params(const struct params *p)
{
    static const char *const reserved[] = {"view", "window", "now", "order", "limit", "quick_ms"};
    size_t nviews;
    const struct view_info *views = query_views(&nviews);
    const char *name = param(p, "view");
    if (!name)
        name = views[p->n % nviews].name;
    struct view_request vr = {0};
    const char *window = param(p, "window"), *now = param(p, "now");
    if (window && (!time_parse_duration(window, &vr.window_ms) || vr.window_ms <= 0))
        return; /* the route answers 400 */
    if (now && !(vr.has_now = time_parse_point(now, &vr.now_ms)))
        return;
    const char *limit = param(p, "limit");
    if (limit) {
        char *end;
        vr.limit = strtoll(limit, &end, 10);
        if (*end || vr.limit <= 0)
            return;
    }
    vr.order_by = param(p, "order");
    for (size_t i = 0; i < p->n; i++) {
        bool skip = false;
        for (size_t r = 0; r < sizeof reserved / sizeof reserved[0]; r++)
            skip |= strcmp(p->keys[i], reserved[r]) == 0;
        if (skip || vr.nfilters >= QUERY_MAX_FILTERS)
            continue;
        vr.filter_column[vr.nfilters] = p->keys[i];
        vr.filter_value[vr.nfilters++] = p->values[i];
    }
    open_store();
    struct store_result res;
    struct err e;
    err_clear(&e);
    int rc = query_view(fuzz_store, &fuzz_cfg, name, &vr, &res, &e);
    fuzz_check(rc == 0 || ((rc == E_INVALID || rc == E_NOTFOUND || rc == E_LIMIT) && e.msg[0]),
               "view %s: rc %d: %s", name, rc, e.msg);
    store_result_release(&res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (size == 0)
        return 0;
    size_t len = strnlen((const char *)data + 1, size - 1);
    char *text = malloc(len + 1);
    memcpy(text, data + 1, len);
    text[len] = '\0';
    struct params p;
    split(text, &p);
    if (data[0] & 1)
        view_params(&p);
    else
        series_params(&p);
    free(text);
    return 0;
}
