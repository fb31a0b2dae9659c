/*
 * ingest: InfluxDB line protocol into system_metrics — measurement_field metrics, host and
 * component tags, other tags and string fields as labels, escapes, value types, timestamps in
 * the request's precision, rejections with line numbers, and the row limit.
 */
#include "unit_ingest.h"

static struct parse *lp(const char *text, enum time_precision p, size_t max_rows)
{
    struct parse *t = parse_new("system_metrics", p, max_rows);
    t->rc = ingest_parse_lineproto(&t->ctx, text, strlen(text), &t->b, &t->r);
    return t;
}

/* A timestamp one minute ago in the given precision. */
static long long recent(enum time_precision p)
{
    long long ms = (long long)(time_now_ms() - 60000);
    switch (p) {
    case PREC_NS:
        return ms * 1000000;
    case PREC_US:
        return ms * 1000;
    case PREC_MS:
        return ms;
    case PREC_S:
        return ms / 1000;
    }
    return ms;
}

static void one_line_two_fields(void **state)
{
    (void)state;
    char text[256];
    long long ts = recent(PREC_MS);
    snprintf(text, sizeof text, "cpu,host=web1,component=api usage_user=3.5,usage_system=1i %lld",
             ts);
    struct parse *t = lp(text, PREC_MS, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 2);
    assert_cell_text(&t->b, 0, "metric", "cpu_usage_user");
    assert_cell_text(&t->b, 1, "metric", "cpu_usage_system");
    for (size_t i = 0; i < 2; i++) {
        assert_cell_text(&t->b, i, "host", "web1");
        assert_cell_text(&t->b, i, "component", "api");
        assert_cell_text(&t->b, i, "labels", "{}");
        assert_int_equal(ut_cell(&t->b, i, "ts")->type, VAL_INT);
        assert_int_equal(ut_cell(&t->b, i, "ts")->i, ts);
    }
    assert_int_equal(ut_cell(&t->b, 0, "value")->type, VAL_REAL);
    assert_true(ut_cell(&t->b, 0, "value")->d == 3.5);
    assert_true(ut_cell(&t->b, 1, "value")->d == 1.0);
    parse_free(&t);
}

static void precisions(void **state)
{
    (void)state;
    enum time_precision ps[] = {PREC_NS, PREC_US, PREC_MS, PREC_S};
    for (size_t i = 0; i < 4; i++) {
        char text[128];
        long long ts = recent(ps[i]);
        snprintf(text, sizeof text, "mem used=1 %lld", ts);
        struct parse *t = lp(text, ps[i], 0);
        assert_parsed(t);
        assert_int_equal(t->b.nrows, 1);
        int64_t want;
        assert_true(time_epoch_int_to_ms(ts, ps[i], &want));
        assert_int_equal(ut_cell(&t->b, 0, "ts")->i, want);
        assert_cell_text(&t->b, 0, "metric", "mem_used");
        assert_cell_text(&t->b, 0, "host", ""); /* no host tag */
        parse_free(&t);
    }
    /* no timestamp: the time of the request */
    struct parse *t = lp("mem used=1", PREC_NS, 0);
    assert_parsed(t);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, t->ctx.validate.now_ms);
    parse_free(&t);
}

static void labels_from_tags_and_strings(void **state)
{
    (void)state;
    struct parse *t =
        lp("disk,host=h,dc=eu,az=1 free=10,path=\"/var lib\",mount=\"/\"", PREC_MS, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1); /* string fields are no samples */
    assert_cell_text(&t->b, 0, "metric", "disk_free");
    assert_cell_text(&t->b, 0, "host", "h");
    assert_cell_text(&t->b, 0, "labels",
                     "{\"az\":\"1\",\"dc\":\"eu\",\"mount\":\"/\",\"path\":\"/var lib\"}");
    parse_free(&t);

    /* the same labels in another order give the same text (one series) */
    t = lp("disk,dc=eu,az=1 free=1\ndisk,az=1,dc=eu free=2", PREC_MS, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 2);
    assert_cell_text(&t->b, 0, "labels", "{\"az\":\"1\",\"dc\":\"eu\"}");
    assert_cell_text(&t->b, 1, "labels", "{\"az\":\"1\",\"dc\":\"eu\"}");
    parse_free(&t);
}

static void escapes(void **state)
{
    (void)state;
    struct parse *t = lp(
        "my\\ meas\\,x,host=web\\ 1,ta\\=g=v\\,al f\\ 1=1,s=\"say \\\"hi\\\" \\\\o/\"", PREC_MS, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 1);
    assert_cell_text(&t->b, 0, "metric", "my meas,x_f 1");
    assert_cell_text(&t->b, 0, "host", "web 1");
    assert_cell_text(&t->b, 0, "labels", "{\"s\":\"say \\\"hi\\\" \\\\o/\",\"ta=g\":\"v,al\"}");
    parse_free(&t);

    /* control characters in labels are escaped as JSON */
    t = lp("m,k=a\tb v=1", PREC_MS, 0);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "labels", "{\"k\":\"a\\tb\"}");
    parse_free(&t);
}

static void value_types(void **state)
{
    (void)state;
    struct parse *t =
        lp("m a=1i,b=2u,c=-3,d=1.5e3,e=t,f=FALSE,g=true,h=F,i=-7i,j=.5,k=0", PREC_MS, 0);
    assert_parsed(t);
    double want[] = {1, 2, -3, 1500, 1, 0, 1, 0, -7, 0.5, 0};
    assert_int_equal(t->b.nrows, 11);
    for (size_t i = 0; i < 11; i++)
        if (ut_cell(&t->b, i, "value")->d != want[i])
            fail_msg("field %zu: %g != %g", i, ut_cell(&t->b, i, "value")->d, want[i]);
    parse_free(&t);

    const char *bad[] = {"m v=abc",  "m v=",    "m v=1x", "m v=-1u",
                         "m v=1.5i", "m v=yes", "m v=+1", "m v=99999999999999999999i",
                         "m v=1e"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = lp(bad[i], PREC_MS, 0);
        if (t->rc != E_INVALID)
            fail_msg("'%s' was accepted", bad[i]);
        assert_int_equal(t->b.nrows, 0);
        assert_reject_at(t, 1, "integer (1i), boolean or quoted string");
        assert_string_equal(t->r.items[0].field, "fields");
        parse_free(&t);
    }
}

/* A sample value must be finite (the column is a finite double). */
static void non_finite_values_rejected(void **state)
{
    (void)state;
    const char *bad[] = {"m v=1e999", "m v=-inf", "m v=-nan", "m v=-1e999", "m v=-infinity"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct parse *t = lp(bad[i], PREC_MS, 0);
        if (t->rc != E_INVALID)
            fail_msg("'%s' accepted as %g", bad[i], ut_cell(&t->b, 0, "value")->d);
        assert_int_equal(t->b.nrows, 0);
        parse_free(&t);
    }
}

/*
 * BUG (reported, minor): field_number() lets strtod read hexadecimal floats, so "v=0x10" is a
 * sample of 16 and "v=0x1p3" of 8; InfluxDB refuses them.
 */
static void hex_floats_rejected(void **state)
{
    (void)state;
    const char *bad[] = {"m v=0x10", "m v=0x1p3", "m v=-0x1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct parse *t = lp(bad[i], PREC_MS, 0);
        if (t->rc != E_INVALID)
            fail_msg("'%s' accepted as %g", bad[i], ut_cell(&t->b, 0, "value")->d);
        parse_free(&t);
    }
}

/* Text from line protocol goes through the same UTF-8 check as JSON and CSV input (it once
 * went into host, component, metric and labels unchecked). */
static void invalid_utf8_rejected(void **state)
{
    (void)state;
    const char *bad[] = {"m,host=\xff v=1", "m\xc3 v=1", "m,dc=\xed\xa0\x80 v=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct parse *t = lp(bad[i], PREC_MS, 0);
        if (t->rc != E_INVALID)
            fail_msg("line %zu with invalid UTF-8 was accepted", i);
        parse_free(&t);
    }
}

/*
 * BUG (reported): repeated tag keys (or a tag and a string field of the same name) give a labels
 * object with duplicate keys, which the JSON path refuses (JSON_REJECT_DUPLICATES) and which is
 * no canonical series identity.
 */
static void duplicate_label_keys_rejected(void **state)
{
    (void)state;
    struct parse *t = lp("m,dc=a,dc=b v=1", PREC_MS, 0);
    if (t->rc == 0)
        fail_msg("accepted with labels %.*s", (int)ut_cell(&t->b, 0, "labels")->len,
                 ut_cell(&t->b, 0, "labels")->s);
    parse_free(&t);
}

/*
 * BUG (reported, minor): the labels text is meant to be canonical (the series identity), but
 * line protocol sorts the keys before unescaping them and escapes \r, \b, \f as \u00XX, while
 * JSON and CSV input goes through jansson (sorted real keys, "\r"). The same label set sent both
 * ways then makes two series.
 */
static void labels_canonical_like_json(void **state)
{
    (void)state;
    const struct table *sm = schema_table("system_metrics");
    const struct column *labels = &sm->columns[schema_column(sm, "labels")];
    struct {
        const char *line, *json;
    } cases[] = {
        {"m,a\\ b=1,a!=2 v=1", "{\"a b\":\"1\",\"a!\":\"2\"}"},
        {"m,k=a\rb v=1", "{\"k\":\"a\\rb\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct parse *t = lp(cases[i].line, PREC_MS, 0);
        assert_parsed(t);
        struct value want;
        char why[160];
        assert_true(field_from_text(labels, cases[i].json, strlen(cases[i].json), PREC_MS,
                                    &t->b.arena, &want, why, sizeof why));
        assert_cell_text(&t->b, 0, "labels", want.s);
        parse_free(&t);
    }
}

static void bad_lines(void **state)
{
    (void)state;
    struct {
        const char *line, *field, *reason;
    } cases[] = {
        {"cpu", "fields", "expected a space and a field set after the tags"},
        {"cpu,host=a", "fields", "expected a space and a field set after the tags"},
        {",host=a v=1", "measurement", "line has no measurement name"},
        {"cpu,host v=1", "tags", "tag 1 is not key=value"},
        {"cpu,=a v=1", "tags", "tag 1 is not key=value"},
        {"cpu,a=1,host= v=1", "tags", "tag 'host' has an empty value"},
        {"cpu v", "fields", "field 1 is not key=value"},
        {"cpu =1", "fields", "field 1 is not key=value"},
        {"cpu v=1,", "fields", "field 2 is not key=value"},
        {"cpu v=\"open", "fields", "string field 'v' has no closing quote"},
        {"cpu s=\"x\"", "fields", "line has only string fields"},
        {"cpu v=1 12abc", "timestamp", "timestamp '12abc' is not an integer time"},
        {"cpu v=1 1.5", "timestamp", "timestamp '1.5' is not an integer time"},
        {"cpu v=1 99999999999999999999", "timestamp", "is not an integer time"},
        {"cpu v=1 123456789012345678901234567890123", "timestamp", "is not an integer"},
        {"cpu v=1 1 2", "timestamp", "is not an integer time"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct parse *t = lp(cases[i].line, PREC_MS, 0);
        if (t->rc != E_INVALID)
            fail_msg("'%s' was accepted", cases[i].line);
        assert_int_equal(t->b.nrows, 0);
        assert_int_equal(t->r.count, 1);
        assert_reject_at(t, 1, cases[i].reason);
        assert_string_equal(t->r.items[0].field, cases[i].field);
        parse_free(&t);
    }
}

static void timestamps_out_of_horizon(void **state)
{
    (void)state;
    char text[128];
    snprintf(text, sizeof text, "m v=1 %lld", (long long)(time_now_ms() + 3600000));
    struct parse *t = lp(text, PREC_MS, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "is in the future");
    parse_free(&t);
    snprintf(text, sizeof text, "m v=1 %lld", (long long)(time_now_ms() - 40 * DAY_MS));
    t = lp(text, PREC_MS, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "older than the system_metrics retention horizon of 30 days");
    parse_free(&t);
    /* beyond the year 9999 in the precision */
    t = lp("m v=1 9223372036854775807", PREC_S, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "is not an integer time in the request's precision");
    parse_free(&t);
}

static void line_numbers(void **state)
{
    (void)state;
    struct parse *t = lp("# a comment\n"
                         "\n"
                         "cpu v=1\n"
                         "   # indented comment\n"
                         "cpu v=x\n"
                         "cpu v=2\n"
                         "\n"
                         "cpu,host v=1\n",
                         PREC_MS, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->r.count, 2);
    assert_reject_at(t, 5, "value 'x' is not a");
    assert_reject_at(t, 8, "tag 1 is not key=value");
    assert_int_equal(t->b.nrows, 2); /* good lines stay; the caller must not write the batch */
    parse_free(&t);
}

static void whitespace_and_crlf(void **state)
{
    (void)state;
    char text[256];
    long long ts = recent(PREC_NS);
    snprintf(text, sizeof text, "cpu v=1 %lld\r\n  cpu  v=2  \r\n\r\n\tcpu v=3\r\n", ts);
    struct parse *t = lp(text, PREC_NS, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    assert_int_equal(ut_cell(&t->b, 0, "ts")->i, ts / 1000000);
    assert_true(ut_cell(&t->b, 2, "value")->d == 3);
    parse_free(&t);

    /* nothing at all, or comments only, is no error */
    t = lp("", PREC_NS, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 0);
    parse_free(&t);
    t = lp("# nothing\n\n", PREC_NS, 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 0);
    parse_free(&t);
}

static void tag_and_field_limits(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    buf_printf(&b, "m");
    for (int i = 0; i < 64; i++)
        buf_printf(&b, ",t%d=v", i);
    buf_printf(&b, " v=1");
    struct parse *t = lp(b.data, PREC_MS, 0);
    assert_parsed(t); /* 64 tags are fine */
    parse_free(&t);
    b.len = 0;
    buf_printf(&b, "m");
    for (int i = 0; i < 65; i++)
        buf_printf(&b, ",t%d=v", i);
    buf_printf(&b, " v=1");
    t = lp(b.data, PREC_MS, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "more than 64 tags");
    parse_free(&t);

    b.len = 0;
    buf_printf(&b, "m ");
    for (int i = 0; i < 257; i++)
        buf_printf(&b, "%sf%d=%d", i ? "," : "", i, i);
    t = lp(b.data, PREC_MS, 1000);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "more than 256 fields");
    parse_free(&t);
    buf_release(&b);
}

static void row_limit(void **state)
{
    (void)state;
    struct parse *t = lp("m v=1\nm v=2\nm v=3\n", PREC_MS, 3);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    parse_free(&t);
    t = lp("m v=1\nm v=2\nm v=3\nm v=4\n", PREC_MS, 3);
    assert_int_equal(t->rc, E_LIMIT);
    parse_free(&t);
    /* points count, not lines */
    t = lp("m a=1,b=2\nm a=1,b=2\n", PREC_MS, 3);
    assert_int_equal(t->rc, E_LIMIT);
    parse_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_line_two_fields),
        cmocka_unit_test(precisions),
        cmocka_unit_test(labels_from_tags_and_strings),
        cmocka_unit_test(escapes),
        cmocka_unit_test(value_types),
        cmocka_unit_test(non_finite_values_rejected),
        cmocka_unit_test(hex_floats_rejected),
        cmocka_unit_test(invalid_utf8_rejected),
        cmocka_unit_test(duplicate_label_keys_rejected),
        cmocka_unit_test(labels_canonical_like_json),
        cmocka_unit_test(bad_lines),
        cmocka_unit_test(timestamps_out_of_horizon),
        cmocka_unit_test(line_numbers),
        cmocka_unit_test(whitespace_and_crlf),
        cmocka_unit_test(tag_and_field_limits),
        cmocka_unit_test(row_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
