/*
 * ingest: Graphite plaintext into system_metrics — the built-in templates for collectd and
 * Netdata and the fallback, user templates with filters, globs and extra tags, Graphite 1.1
 * tags, timestamps, NaN, bad lines with their numbers (good lines kept), and bad templates.
 */
#include "unit_ingest.h"

/* Parses text with templates (NULL: the built-in ones only). */
static struct parse *gp(const char *templates, const char *text, size_t *nan)
{
    struct parse *t = parse_new("system_metrics", PREC_S, 0);
    struct graphite_templates *ts;
    struct err e;
    if (ingest_graphite_templates_new(&ts, templates, &e) != 0)
        fail_msg("templates refused: %s", e.msg);
    rejects_init(&t->r, "line");
    t->rc = ingest_parse_graphite(&t->ctx, ts, text, strlen(text), &t->b, &t->r, nan);
    ingest_graphite_templates_free(&ts);
    assert_null(ts);
    return t;
}

struct want {
    const char *host, *component, *metric, *labels;
    double value;
};

static void assert_rows(struct parse *t, const struct want *w, size_t n)
{
    assert_int_equal(t->b.nrows, n);
    for (size_t i = 0; i < n; i++) {
        assert_cell_text(&t->b, i, "host", w[i].host);
        assert_cell_text(&t->b, i, "component", w[i].component);
        assert_cell_text(&t->b, i, "metric", w[i].metric);
        assert_cell_text(&t->b, i, "labels", w[i].labels);
        assert_true(ut_cell(&t->b, i, "value")->d == w[i].value);
    }
}

/* A text of lines, each followed by the time one minute ago in seconds. */
static char *lines_at(const char *const *lines, size_t n, long long *secs)
{
    *secs = (long long)(time_now_ms() / 1000 - 60);
    struct buf b;
    buf_init(&b, 1 << 16);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s %lld\n", lines[i], *secs);
    return b.data;
}

/* What collectd's write_graphite sends with Prefix "collectd." (as the e2e test sees it). */
static void collectd_naming(void **state)
{
    (void)state;
    const char *lines[] = {
        "collectd.web1_example_com.cpu-0.cpu-user 65.02",
        "collectd.web1_example_com.memory.memory-used 147337216",
        "collectd.web1_example_com.load.load.shortterm 1.37",
        "collectd.db1.df-var-lib.df_complex-free 1e9",
    };
    long long secs;
    char *text = lines_at(lines, 4, &secs);
    struct parse *t = gp(NULL, text, NULL);
    assert_parsed(t);
    struct want w[] = {
        {"web1_example_com", "cpu", "cpu_user", "{\"instance\":\"0\"}", 65.02},
        {"web1_example_com", "memory", "memory_used", "{}", 147337216},
        {"web1_example_com", "load", "load_shortterm", "{}", 1.37},
        {"db1", "df", "df_complex_free", "{\"instance\":\"var-lib\"}", 1e9},
    };
    assert_rows(t, w, 4);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, secs * 1000);
    parse_free(&t);
    free(text);
}

static void netdata_and_fallback(void **state)
{
    (void)state;
    const char *lines[] = {
        "netdata.web1.system.cpu.user 1.5",
        "web2.requests.count 3",
        "requests 7",
    };
    long long secs;
    char *text = lines_at(lines, 3, &secs);
    struct parse *t = gp(NULL, text, NULL);
    assert_parsed(t);
    struct want w[] = {
        {"web1", "system", "cpu_user", "{}", 1.5},
        {"web2", "", "requests_count", "{}", 3},
        {"", "", "requests", "{}", 7}, /* one node: no host, the node is the metric */
    };
    assert_rows(t, w, 3);
    parse_free(&t);
    free(text);
}

/* The user's templates come before the built-in ones: first match wins. */
static void user_templates(void **state)
{
    (void)state;
    const char *tpl = "servers.* .host.component.metric* env=prod,host=ignored\n"
                      "app* .region.host.metric\n"
                      "collectd.special.* ..host.metric*";
    const char *lines[] = {
        "servers.web1.nginx.requests.total 10",
        "app7.eu.web3.latency.extra 0.25",
        "collectd.special.h9.x.y 1",
        "collectd.other.cpu-1.cpu-idle 99",
    };
    long long secs;
    char *text = lines_at(lines, 4, &secs);
    struct parse *t = gp(tpl, text, NULL);
    assert_parsed(t);
    struct want w[] = {
        /* a template's tags are defaults: the host node wins; env is a label */
        {"web1", "nginx", "requests_total", "{\"env\":\"prod\"}", 10},
        {"web3", "", "latency", "{\"region\":\"eu\"}", 0.25},
        {"h9", "", "x_y", "{}", 1},
        {"other", "cpu", "cpu_idle", "{\"instance\":\"1\"}", 99},
    };
    assert_rows(t, w, 4);
    parse_free(&t);
    free(text);
}

/* Graphite 1.1 tags: host and component fill their columns over the template's, the rest are
 * labels; label sets are canonical (sorted), so a series is one series however it arrives. */
static void graphite_tags(void **state)
{
    (void)state;
    const char *lines[] = {
        "collectd.web1.cpu-0.cpu-user;dc=eu;host=web9;a=1 5",
        "disk.used;component=sda;zone=z 7",
    };
    long long secs;
    char *text = lines_at(lines, 2, &secs);
    struct parse *t = gp(NULL, text, NULL);
    assert_parsed(t);
    struct want w[] = {
        {"web9", "cpu", "cpu_user", "{\"a\":\"1\",\"dc\":\"eu\",\"instance\":\"0\"}", 5},
        {"disk", "sda", "used", "{\"zone\":\"z\"}", 7},
    };
    assert_rows(t, w, 2);
    parse_free(&t);
    free(text);
}

static void timestamps(void **state)
{
    (void)state;
    long long secs = (long long)(time_now_ms() / 1000 - 30);
    char text[256];
    snprintf(text, sizeof text, "a.b 1 %lld.5\na.c 2 -1\na.d 3\n", secs);
    struct parse *t = gp(NULL, text, NULL);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, secs * 1000 + 500);
    assert_int_equal(ut_cell(&t->b, 1, "ts")->i, t->ctx.validate.now_ms); /* -1: now */
    assert_int_equal(ut_cell(&t->b, 2, "ts")->i, t->ctx.validate.now_ms); /* none: now */
    parse_free(&t);
}

/* NaN and infinities are no samples: skipped and counted, not rejected. */
static void nan_skipped(void **state)
{
    (void)state;
    size_t nan = 0;
    struct parse *t =
        gp(NULL, "a.b nan -1\na.c NaN -1\na.d inf -1\na.e -Infinity -1\na.f 1 -1\n", &nan);
    assert_parsed(t);
    assert_int_equal(nan, 4);
    assert_int_equal(t->b.nrows, 1);
    assert_cell_text(&t->b, 0, "metric", "f");
    parse_free(&t);
}

/* Bad lines are rejected with their numbers; the good ones stay in the batch. */
static void bad_lines_keep_good_ones(void **state)
{
    (void)state;
    struct parse *t = gp(NULL,
                         "a.ok 1 -1\n"
                         "justapath\n"
                         "a.b notanumber -1\n"
                         "a.b 1 yesterday\n"
                         "a..b 1 -1\n"
                         "a.b;novalue 1 -1\n"
                         "a.b 1 -1 extra\n"
                         "a.b 0x10 -1\n"
                         "a.b 1 99999999999999\n"
                         "a.\xff 1 -1\n"
                         "\n"
                         "a.ok2 2 -1\r\n",
                         NULL);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->b.nrows, 2);
    assert_cell_text(&t->b, 0, "metric", "ok");
    assert_cell_text(&t->b, 1, "metric", "ok2");
    assert_int_equal(t->r.count, 9);
    assert_reject_at(t, 2, "fewer fields");
    assert_reject_at(t, 3, "is not a number");
    assert_reject_at(t, 4, "is not epoch seconds");
    assert_reject_at(t, 5, "empty node");
    assert_reject_at(t, 6, "tags must be");
    assert_reject_at(t, 7, "more fields");
    assert_reject_at(t, 8, "'0x10' is not a number");
    assert_reject_at(t, 10, "UTF-8");
    parse_free(&t);
}

static void bad_templates(void **state)
{
    (void)state;
    const char *bad[] = {
        "a.* .host.metric*.x",                           /* metric* not last */
        "a.* .ho$t.metric",                              /* not a name */
        "a.* .host.metric x y",                          /* too many words */
        "a.* .host.metric novalue", "a..b .host.metric", /* empty filter node */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct graphite_templates *ts = NULL;
        struct err e;
        err_clear(&e);
        if (ingest_graphite_templates_new(&ts, bad[i], &e) != E_INVALID)
            fail_msg("template '%s' was accepted", bad[i]);
        assert_null(ts);
        assert_non_null(strstr(e.msg, "graphite.templates line 1"));
    }
    /* lines separated by ';' as --set gives them; blank lines are skipped */
    struct graphite_templates *ts;
    struct err e;
    assert_int_equal(ingest_graphite_templates_new(&ts, "a.* .host.metric;\n ;b.* .metric", &e), 0);
    ingest_graphite_templates_free(&ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(collectd_naming),
        cmocka_unit_test(netdata_and_fallback),
        cmocka_unit_test(user_templates),
        cmocka_unit_test(graphite_tags),
        cmocka_unit_test(timestamps),
        cmocka_unit_test(nan_skipped),
        cmocka_unit_test(bad_lines_keep_good_ones),
        cmocka_unit_test(bad_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
