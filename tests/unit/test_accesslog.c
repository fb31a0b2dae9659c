/*
 * ingest: access logs into api_usage — nginx's combined and timed formats, Apache's, custom
 * formats in both syntaxes, the mapping of every field, endpoint folding, request lines that are
 * not requests, and bad lines reported with their line numbers while the good ones are kept.
 */
#include "unit_ingest.h"

#include <time.h>

#define PATH "/var/log/nginx/api.access.log"

/* Parses text as a log of kind (format: logs.access_format for kind access). */
static struct parse *al(const char *kind, const char *format, const char *text)
{
    struct parse *t = parse_new("api_usage", PREC_MS, 0);
    rejects_init(&t->r, "line");
    snprintf(t->cfg.logs_host, sizeof t->cfg.logs_host, "web-1");
    if (format)
        snprintf(t->cfg.logs_access_format, sizeof t->cfg.logs_access_format, "%s", format);
    struct logparser *p;
    struct err e;
    if (logparser_new(&p, &t->cfg, kind, PATH, &e) != 0)
        fail_msg("logparser_new: %s", e.msg);
    assert_ptr_equal(logparser_table(p), schema_table("api_usage"));
    t->rc = ingest_parse_log(p, &t->ctx, text, strlen(text), 1, true, &t->b, &t->r);
    logparser_free(&p);
    assert_null(p);
    return t;
}

/* A whole second a minute ago (ms), and its nginx $time_local text in UTC+offset_min. */
static int64_t minute_ago(int offset_min, char *local, size_t size)
{
    int64_t ms = (time_now_ms() / 1000 - 60) * 1000;
    time_t secs = (time_t)(ms / 1000) + offset_min * 60;
    struct tm tm;
    gmtime_r(&secs, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%d/%b/%Y:%H:%M:%S", &tm);
    int off = offset_min < 0 ? -offset_min : offset_min;
    snprintf(local, size, "%s %c%02d%02d", stamp, offset_min < 0 ? '-' : '+', off / 60, off % 60);
    return ms;
}

static void combined_line_maps_every_field(void **state)
{
    (void)state;
    char when[40], text[512];
    int64_t ms = minute_ago(-420, when, sizeof when);
    snprintf(text, sizeof text,
             "203.0.113.9 - - [%s] \"GET /api/users/123?page=2 HTTP/1.1\" 200 612 "
             "\"https://example.com/\" \"Mozilla/5.0 (X11)\"\n",
             when);
    struct parse *t = al("nginx", NULL, text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ms);
    assert_cell_text(&t->b, 0, "method", "GET");
    assert_cell_text(&t->b, 0, "endpoint", "/api/users/:id");
    assert_int_equal(ut_cell(&t->b, 0, "status_code")->i, 200);
    assert_int_equal(ut_cell(&t->b, 0, "response_bytes")->i, 612);
    assert_int_equal(ut_cell(&t->b, 0, "request_bytes")->type, VAL_NULL);
    assert_int_equal(ut_cell(&t->b, 0, "latency_ms")->type, VAL_NULL);
    assert_cell_text(&t->b, 0, "client_id", "203.0.113.9");
    assert_cell_text(&t->b, 0, "service", "api");
    assert_cell_text(&t->b, 0, "host", "web-1");
    assert_int_equal(ut_cell(&t->b, 0, "count")->i, 1);
    parse_free(&t);
}

static void timed_format_latency_from_request_or_upstream_time(void **state)
{
    (void)state;
    char when[40], text[1024];
    minute_ago(0, when, sizeof when);
    snprintf(text, sizeof text,
             "10.0.0.1 - alice [%s] \"POST /orders HTTP/1.1\" 201 0 \"-\" \"curl\" 0.250 0.200\n"
             "10.0.0.1 - - [%s] \"GET /slow HTTP/1.1\" 502 157 \"-\" \"curl\" - 1.000, 0.500\n"
             "10.0.0.1 - - [%s] \"GET /static HTTP/1.1\" 304 0 \"-\" \"curl\" 0.000 -\n",
             when, when, when);
    struct parse *t = al("nginx_timed", NULL, text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    assert_true(ut_cell(&t->b, 0, "latency_ms")->d == 250.0);
    assert_cell_text(&t->b, 0, "client_id", "alice"); /* $remote_user wins over the address */
    assert_cell_text(&t->b, 0, "method", "POST");
    assert_true(ut_cell(&t->b, 1, "latency_ms")->d == 1500.0); /* two upstreams tried */
    assert_cell_text(&t->b, 1, "client_id", "10.0.0.1");
    assert_true(ut_cell(&t->b, 2, "latency_ms")->d == 0.0);
    assert_int_equal(ut_cell(&t->b, 2, "response_bytes")->i, 0);
    parse_free(&t);
}

static void endpoints_fold_ids(void **state)
{
    (void)state;
    static const struct {
        const char *target, *endpoint;
    } cases[] = {
        {"/users/123", "/users/:id"},
        {"/users/456/", "/users/:id/"},
        {"/orders/550e8400-e29b-41d4-a716-446655440000/items", "/orders/:id/items"},
        {"/blobs/5f2b9c0e1a", "/blobs/:id"},
        {"/blobs/deadbeefcafe", "/blobs/deadbeefcafe"}, /* hex letters only: a word */
        {"/api/v1/a1b2c3", "/api/v1/a1b2c3"},           /* shorter than 8 */
        {"/search?q=1&page=2", "/search"},
        {"/", "/"},
        {"http://example.com/proxy/42?x", "/proxy/:id"},
        {"https://example.com", "/"},
    };
    char when[40], text[4096];
    minute_ago(0, when, sizeof when);
    size_t len = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "1.2.3.4 - - [%s] \"GET %s HTTP/1.1\" 200 1 \"-\" \"-\"\n", when,
                                cases[i].target);
    struct parse *t = al("nginx", NULL, text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, sizeof cases / sizeof cases[0]);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_cell_text(&t->b, i, "endpoint", cases[i].endpoint);
    parse_free(&t);
}

/* Every logged request is a row, whatever its request line held. */
static void request_lines_that_are_not_requests(void **state)
{
    (void)state;
    static const struct {
        const char *request, *method, *endpoint;
    } cases[] = {
        {"\\x16\\x03\\x01\\x00\\xA5\\x01", "OTHER", "(invalid)"}, /* TLS to a plain port */
        {"", "OTHER", "(invalid)"},                               /* nginx: closed early */
        {"GET", "OTHER", "(invalid)"},
        {"get /x HTTP/1.1", "OTHER", "(invalid)"},
        {"GET index.html HTTP/1.0", "OTHER", "(invalid)"},
        {"PROPFIND /dav/12345 HTTP/1.1", "OTHER", "/dav/:id"},
        {"OPTIONS * HTTP/1.1", "OPTIONS", "*"},
        {"GET /a b/c HTTP/1.1", "GET", "/a b/c"},
        {"GET /old", "GET", "/old"}, /* HTTP/0.9 */
    };
    char when[40], text[4096];
    minute_ago(0, when, sizeof when);
    size_t len = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        len +=
            (size_t)snprintf(text + len, sizeof text - len,
                             "1.2.3.4 - - [%s] \"%s\" 400 0 \"-\" \"-\"\n", when, cases[i].request);
    struct parse *t = al("nginx", NULL, text);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, sizeof cases / sizeof cases[0]);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_cell_text(&t->b, i, "method", cases[i].method);
        assert_cell_text(&t->b, i, "endpoint", cases[i].endpoint);
    }
    parse_free(&t);
}

static void apache_combined_and_custom_formats(void **state)
{
    (void)state;
    char when[40], text[1024];
    int64_t ms = minute_ago(120, when, sizeof when);
    snprintf(text, sizeof text,
             "192.0.2.1 - frank [%s] \"GET /a\\\" b HTTP/1.1\" 404 - \"-\" \"Mozilla\"\n", when);
    struct parse *t = al("apache", NULL, text);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ms);
    assert_cell_text(&t->b, 0, "endpoint", "/a\\\" b"); /* a quote escaped inside the field */
    assert_int_equal(ut_cell(&t->b, 0, "status_code")->i, 404);
    assert_int_equal(ut_cell(&t->b, 0, "response_bytes")->type, VAL_NULL); /* "-" */
    assert_cell_text(&t->b, 0, "client_id", "frank");
    parse_free(&t);

    /* %D microseconds, %I and %O bytes, a %{...}x directive opsdb has no column for */
    snprintf(text, sizeof text, "192.0.2.1 [%s] \"DELETE /items/77 HTTP/2.0\" 204 1234 321 456 x\n",
             when);
    t = al("access", "%a %t \"%r\" %>s %D %I %O %{Foo}x", text);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "method", "DELETE");
    assert_cell_text(&t->b, 0, "endpoint", "/items/:id");
    assert_true(ut_cell(&t->b, 0, "latency_ms")->d == 1.234);
    assert_int_equal(ut_cell(&t->b, 0, "request_bytes")->i, 321);
    assert_int_equal(ut_cell(&t->b, 0, "response_bytes")->i, 456);
    parse_free(&t);
}

static void custom_nginx_format(void **state)
{
    (void)state;
    char iso[40], text[1024];
    int64_t ms = (time_now_ms() / 1000 - 60) * 1000;
    time_format_rfc3339(ms, iso, sizeof iso);
    /* $time_iso8601, method and uri apart, ${braced} names, an unknown variable, $host */
    snprintf(text, sizeof text, "%s|api.example.com|PUT|/v2/things/9?x=1|200|7|a b c|0.5\n", iso);
    const char *fmt = "$time_iso8601|$host|$request_method|$request_uri|${status}|"
                      "$bytes_sent|$http_x_custom|$request_time";
    struct parse *t = al("access", fmt, text);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ms);
    assert_cell_text(&t->b, 0, "service", "api.example.com"); /* logs.service is empty */
    assert_cell_text(&t->b, 0, "endpoint", "/v2/things/:id");
    assert_int_equal(ut_cell(&t->b, 0, "response_bytes")->i, 7);
    assert_true(ut_cell(&t->b, 0, "latency_ms")->d == 500.0);
    parse_free(&t);
}

static void msec_time(void **state)
{
    (void)state;
    char text[256];
    int64_t ms = time_now_ms() - 60000;
    snprintf(text, sizeof text, "%lld.%03lld GET /x 200\n", (long long)(ms / 1000),
             (long long)(ms % 1000));
    struct parse *t = al("access", "$msec $request_method $uri $status", text);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ms);
    parse_free(&t);
}

static void bad_lines_reported_good_lines_kept(void **state)
{
    (void)state;
    char when[40], text[2048];
    minute_ago(0, when, sizeof when);
    snprintf(text, sizeof text,
             "1.2.3.4 - - [%s] \"GET /ok HTTP/1.1\" 200 1 \"-\" \"-\"\n"
             "this is not an access log line\n"
             "1.2.3.4 - - [%s] \"GET /ok HTTP/1.1\" abc 1 \"-\" \"-\"\n"
             "1.2.3.4 - - [31/Foo/2020:00:00:00 +0000] \"GET /ok HTTP/1.1\" 200 1 \"-\" \"-\"\n"
             "1.2.3.4 - - [%s] \"GET /ok HTTP/1.1\" 999 1 \"-\" \"-\"\n"
             "\n"
             "1.2.3.4 - - [%s] \"GET /ok HTTP/1.1\" 200 1 \"-\" \"-\"\r\n",
             when, when, when, when);
    struct parse *t = al("nginx", NULL, text);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->b.nrows, 2); /* lines 1 and 7; line 6 is blank */
    assert_int_equal(t->r.count, 4);
    assert_reject_at(t, 2, "does not match the format");
    assert_reject_at(t, 3, "no HTTP status");
    assert_reject_at(t, 4, "no time");
    assert_reject_at(t, 5, "status_code 999 is outside");
    parse_free(&t);
}

static void formats_that_cannot_be_used(void **state)
{
    (void)state;
    struct config cfg;
    config_defaults(&cfg);
    struct logparser *p;
    struct err e;
    assert_int_equal(logparser_new(&p, &cfg, "squid", PATH, &e), E_INVALID);
    assert_non_null(strstr(e.msg, "nginx, nginx_timed, apache, access"));
    snprintf(cfg.logs_access_format, sizeof cfg.logs_access_format, "just text");
    assert_int_equal(logparser_new(&p, &cfg, "access", PATH, &e), E_INVALID);
    assert_non_null(strstr(e.msg, "names no field"));
    assert_null(p);
}

static void service_named_after_the_file(void **state)
{
    (void)state;
    static const struct {
        const char *path, *service;
    } cases[] = {
        {"/var/log/nginx/api.access.log", "api"},
        {"/var/log/nginx/access.log", "nginx"},
        {"/srv/shop/logs/shop-error.log", "shop"},
        {"billing.jsonl", "billing"},
        {"access.log", ""},
        {"-", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        ingest_log_service(cases[i].path, out, sizeof out);
        if (strcmp(out, cases[i].service) != 0)
            fail_msg("%s: '%s' != '%s'", cases[i].path, out, cases[i].service);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(combined_line_maps_every_field),
        cmocka_unit_test(timed_format_latency_from_request_or_upstream_time),
        cmocka_unit_test(endpoints_fold_ids),
        cmocka_unit_test(request_lines_that_are_not_requests),
        cmocka_unit_test(apache_combined_and_custom_formats),
        cmocka_unit_test(custom_nginx_format),
        cmocka_unit_test(msec_time),
        cmocka_unit_test(bad_lines_reported_good_lines_kept),
        cmocka_unit_test(formats_that_cannot_be_used),
        cmocka_unit_test(service_named_after_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
