/*
 * ingest: the Prometheus text exposition format into system_metrics — the mapping of
 * __name__/instance/host/job onto the columns, target labels and exported_ renaming, label
 * escapes, NaN and infinities skipped and counted, optional timestamps, comments and # EOF,
 * histograms as their series, rejections with their line numbers, and the sample limit.
 */
#include "unit_ingest.h"

#include <math.h>

struct prom {
    struct parse *p;
    struct prom_stats st;
};

static const struct prom_label target[] = {
    {"job", "node", 3, 4},
    {"instance", "10.0.0.5:9100", 8, 13},
};

/* Parses text as a scrape of target (job node, instance 10.0.0.5:9100) at now - 1 min. */
static struct prom pt(const char *text, size_t max_rows)
{
    struct prom r = {parse_new("system_metrics", PREC_MS, max_rows), {0}};
    rejects_init(&r.p->r, "line");
    struct prom_text_opts opts = {time_now_ms() - 60000, target, 2};
    r.p->rc = ingest_parse_promtext(&r.p->ctx, text, strlen(text), &opts, &r.p->b, &r.p->r, &r.st);
    return r;
}

static int64_t default_ts(const struct prom *r)
{
    return ut_cell(&r->p->b, 0, "ts")->i;
}

static void maps_names_and_target_labels(void **state)
{
    (void)state;
    struct prom r = pt("# HELP http_requests_total Requests served.\n"
                       "# TYPE http_requests_total counter\n"
                       "http_requests_total{method=\"post\",code=\"200\"} 1027\n"
                       "process_open_fds 12\n",
                       0);
    assert_parsed(r.p);
    assert_int_equal(r.p->b.nrows, 2);
    assert_cell_text(&r.p->b, 0, "metric", "http_requests_total");
    assert_cell_text(&r.p->b, 0, "host", "10.0.0.5:9100");
    assert_cell_text(&r.p->b, 0, "component", "node");
    assert_cell_text(&r.p->b, 0, "labels", "{\"code\":\"200\",\"method\":\"post\"}");
    assert_true(ut_cell(&r.p->b, 0, "value")->d == 1027);
    assert_cell_text(&r.p->b, 1, "metric", "process_open_fds");
    assert_cell_text(&r.p->b, 1, "labels", "{}");
    assert_int_equal(r.st.samples, 2);
    assert_int_equal(r.st.nonfinite, 0);
    parse_free(&r.p);
}

static void host_label_wins_over_instance(void **state)
{
    (void)state;
    /* a page's own job and instance labels are kept renamed, as Prometheus does */
    struct prom r = pt("m{host=\"web1\",job=\"app\",instance=\"x\"} 1\n", 0);
    assert_parsed(r.p);
    assert_cell_text(&r.p->b, 0, "host", "web1");
    assert_cell_text(&r.p->b, 0, "component", "node");
    assert_cell_text(&r.p->b, 0, "labels",
                     "{\"exported_instance\":\"x\",\"exported_job\":\"app\","
                     "\"instance\":\"10.0.0.5:9100\"}");
    parse_free(&r.p);
}

static void label_escapes(void **state)
{
    (void)state;
    struct prom r =
        pt("m{path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\",nl=\"a\\nb\",other=\"\\t\"} 1\n", 0);
    assert_parsed(r.p);
    /* in JSON: C:\dir, say "hi", a<newline>b, and \t kept as written (backslash, t) */
    assert_cell_text(&r.p->b, 0, "labels",
                     "{\"nl\":\"a\\nb\",\"other\":\"\\\\t\",\"path\":\"C:\\\\dir\","
                     "\"q\":\"say \\\"hi\\\"\"}");
    parse_free(&r.p);
    /* a comma or brace inside quotes is text; a trailing comma is allowed; blanks around */
    r = pt("m { a = \"x,}y\" , b=\"\", } 2\n", 0);
    assert_parsed(r.p);
    assert_cell_text(&r.p->b, 0, "labels", "{\"a\":\"x,}y\"}");
    parse_free(&r.p);
}

static void nonfinite_values_are_skipped_and_counted(void **state)
{
    (void)state;
    struct prom r = pt("a NaN\nb +Inf\nc -Inf\nd Inf\ne 1.5e3\nf -0.25\n", 0);
    assert_parsed(r.p);
    assert_int_equal(r.st.samples, 6);
    assert_int_equal(r.st.nonfinite, 4);
    assert_int_equal(r.p->b.nrows, 2);
    assert_cell_text(&r.p->b, 0, "metric", "e");
    assert_true(ut_cell(&r.p->b, 0, "value")->d == 1500);
    assert_true(ut_cell(&r.p->b, 1, "value")->d == -0.25);
    parse_free(&r.p);
}

static void timestamps_are_optional_milliseconds(void **state)
{
    (void)state;
    long long ts = (long long)time_now_ms() - 3600000;
    char text[256];
    snprintf(text, sizeof text, "with_ts 1 %lld\nwithout_ts 2\nwith_ts_blanks\t3 \t%lld \r\n", ts,
             ts + 5);
    struct prom r = pt(text, 0);
    assert_parsed(r.p);
    assert_int_equal(r.p->b.nrows, 3);
    assert_int_equal(ut_cell(&r.p->b, 0, "ts")->i, ts);
    assert_int_equal(ut_cell(&r.p->b, 1, "ts")->i, r.p->ctx.validate.now_ms - 60000);
    assert_int_equal(ut_cell(&r.p->b, 2, "ts")->i, ts + 5);
    assert_true(ut_cell(&r.p->b, 2, "value")->d == 3);
    parse_free(&r.p);
}

static void comments_blank_lines_and_eof(void **state)
{
    (void)state;
    struct prom r = pt("\n# a free comment { not a sample\n   \n#TYPE x gauge\n"
                       "# TYPE x gauge\nx 1\n# EOF\nthis is not read\n",
                       0);
    assert_parsed(r.p);
    assert_int_equal(r.p->b.nrows, 1);
    assert_true(default_ts(&r) > 0);
    parse_free(&r.p);
}

static void histograms_arrive_as_their_series(void **state)
{
    (void)state;
    struct prom r = pt("# TYPE rpc_seconds histogram\n"
                       "rpc_seconds_bucket{le=\"0.1\"} 3\n"
                       "rpc_seconds_bucket{le=\"+Inf\"} 5\n"
                       "rpc_seconds_sum 0.8\n"
                       "rpc_seconds_count 5\n"
                       "# TYPE gc summary\n"
                       "gc{quantile=\"0.5\"} 0.002\n",
                       0);
    assert_parsed(r.p);
    assert_int_equal(r.p->b.nrows, 5);
    assert_cell_text(&r.p->b, 1, "metric", "rpc_seconds_bucket");
    assert_cell_text(&r.p->b, 1, "labels", "{\"le\":\"+Inf\"}");
    assert_cell_text(&r.p->b, 3, "metric", "rpc_seconds_count");
    assert_cell_text(&r.p->b, 4, "labels", "{\"quantile\":\"0.5\"}");
    parse_free(&r.p);
}

/* Each bad line is rejected at its own (1-based) line number; the good lines are not. */
static void bad_lines_name_their_line(void **state)
{
    (void)state;
    static const struct {
        const char *line, *reason;
    } cases[] = {
        {"m", "is not a number"},
        {"m abc", "is not a number"},
        {"m 1 12.5", "is not an integer of milliseconds"},
        {"m 1 2 3", "unexpected text"},
        {"9m 1", "must start with a metric name"},
        {"m{a=\"1\" 1", "expected , or }"},
        {"m{a=1} 1", "needs a value in double quotes"},
        {"m{a=\"1} 1", "needs a value in double quotes"},
        {"m{a=\"1\",a=\"2\"} 1", "appears twice"},
        {"m{=\"1\"} 1", "is not name=\"value\""},
        {"m{a=\"1\"}1", "expected a blank"},
        {"# TYPE m gauges", "is not a metric type"},
        {"# HELP 1m help", "needs a metric name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "ok_before 1\n%s\nok_after 2\n", cases[i].line);
        struct prom r = pt(text, 0);
        if (r.p->rc != E_INVALID || r.p->r.count != 1)
            fail_msg("'%s': rc %d, %zu rejected", cases[i].line, r.p->rc, r.p->r.count);
        assert_reject_at(r.p, 2, cases[i].reason);
        parse_free(&r.p);
    }
}

static void invalid_utf8_and_nul_are_rejected(void **state)
{
    (void)state;
    struct prom r = pt("a 1\nm{x=\"\xff\"} 1\n", 0);
    assert_int_equal(r.p->rc, E_INVALID);
    assert_reject_at(r.p, 2, "UTF-8");
    parse_free(&r.p);
    const char with_nul[] = "a 1\nb{x=\"1\0\"} 2\n";
    struct parse *p = parse_new("system_metrics", PREC_MS, 0);
    struct prom_text_opts opts = {time_now_ms(), NULL, 0};
    p->rc =
        ingest_parse_promtext(&p->ctx, with_nul, sizeof with_nul - 1, &opts, &p->b, &p->r, NULL);
    assert_int_equal(p->rc, E_INVALID);
    assert_reject_at(p, 2, "NUL");
    parse_free(&p);
}

static void sample_limit(void **state)
{
    (void)state;
    struct prom r = pt("a 1\nb 2\nc NaN\nd 4\n", 3);
    assert_int_equal(r.p->rc, E_LIMIT);
    parse_free(&r.p);
    r = pt("a 1\nb 2\nc NaN\n", 3);
    assert_parsed(r.p);
    assert_int_equal(r.p->b.nrows, 2);
    parse_free(&r.p);
}

/* The mapping shared with remote write: no __name__ is refused, labels are sorted. */
static void sample_mapping(void **state)
{
    (void)state;
    struct parse *p = parse_new("system_metrics", PREC_MS, 0);
    const struct prom_label no_name[] = {{"job", "x", 3, 1}};
    assert_false(ingest_prom_sample(&p->ctx, &p->b, no_name, 1, time_now_ms(), 1, 7, &p->r, NULL));
    assert_reject_at(p, 7, "no metric name");
    parse_reset(p);
    const struct prom_label labels[] = {
        {"zone", "b", 4, 1}, {"__name__", "up", 8, 2}, {"alpha", "a", 5, 1}, {"job", "j", 3, 1}};
    struct prom_stats st = {0};
    assert_true(ingest_prom_sample(&p->ctx, &p->b, labels, 4, time_now_ms(), 1, 0, &p->r, &st));
    assert_true(ingest_prom_sample(&p->ctx, &p->b, labels, 4, time_now_ms(), NAN, 0, &p->r, &st));
    assert_int_equal(p->b.nrows, 1);
    assert_int_equal(st.samples, 2);
    assert_int_equal(st.nonfinite, 1);
    assert_cell_text(&p->b, 0, "metric", "up");
    assert_cell_text(&p->b, 0, "host", "");
    assert_cell_text(&p->b, 0, "component", "j");
    assert_cell_text(&p->b, 0, "labels", "{\"alpha\":\"a\",\"zone\":\"b\"}");
    parse_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(maps_names_and_target_labels),
        cmocka_unit_test(host_label_wins_over_instance),
        cmocka_unit_test(label_escapes),
        cmocka_unit_test(nonfinite_values_are_skipped_and_counted),
        cmocka_unit_test(timestamps_are_optional_milliseconds),
        cmocka_unit_test(comments_blank_lines_and_eof),
        cmocka_unit_test(histograms_arrive_as_their_series),
        cmocka_unit_test(bad_lines_name_their_line),
        cmocka_unit_test(invalid_utf8_and_nul_are_rejected),
        cmocka_unit_test(sample_limit),
        cmocka_unit_test(sample_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
