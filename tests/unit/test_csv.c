/*
 * ingest: CSV bodies (RFC 4180) — a header naming columns, quoting with "" escapes, commas and
 * newlines inside quotes, CRLF, blank lines, empty cells as NULL, header and field-count errors
 * with line numbers (the header is line 1), and the row limit.
 */
#include "unit_ingest.h"

static struct parse *csv_len(const char *table, const char *text, size_t len, size_t max_rows)
{
    struct parse *t = parse_new(table, PREC_MS, max_rows);
    t->rc = ingest_parse_csv(&t->ctx, text, len, &t->b, &t->r);
    return t;
}

static struct parse *csv(const char *table, const char *text, size_t max_rows)
{
    return csv_len(table, text, strlen(text), max_rows);
}

/* Text with every "@" replaced by an RFC 3339 time one minute ago (static storage). */
static const char *at_now(const char *fmt)
{
    static char out[8192];
    char now[40];
    ut_time_text(-60000, now);
    size_t k = 0;
    for (const char *p = fmt; *p && k + 40 < sizeof out; p++) {
        if (*p == '@') {
            k += (size_t)snprintf(out + k, sizeof out - k, "%s", now);
        } else {
            out[k++] = *p;
        }
    }
    out[k] = '\0';
    return out;
}

static void header_and_rows(void **state)
{
    (void)state;
    struct parse *t = csv("api_usage",
                          at_now("ts,method,endpoint,status_code,latency_ms,host\n"
                                 "@,GET,/a,200,1.5,h1\n"
                                 "@,post,/b,201,,\n"
                                 "@,DELETE,/c,404,3,h3"), /* no final newline */
                          0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    assert_cell_text(&t->b, 0, "endpoint", "/a");
    assert_cell_text(&t->b, 0, "host", "h1");
    assert_true(ut_cell(&t->b, 0, "latency_ms")->d == 1.5);
    assert_cell_text(&t->b, 1, "method", "POST");
    assert_int_equal(ut_cell(&t->b, 1, "latency_ms")->type, VAL_NULL); /* empty cell */
    assert_cell_text(&t->b, 1, "host", "");                            /* default */
    assert_int_equal(ut_cell(&t->b, 2, "status_code")->i, 404);
    parse_free(&t);

    /* columns in any order, a subset of them */
    t = csv("error_logs", at_now("message,level,ts\nboom,error,@\n"), 0);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "message", "boom");
    parse_free(&t);

    /* a header alone is no error */
    t = csv("error_logs", "ts,level,message\n", 0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 0);
    parse_free(&t);
}

static void quoting(void **state)
{
    (void)state;
    struct parse *t = csv("error_logs",
                          at_now("\"ts\",\"level\",\"message\",\"stack_trace\"\n"
                                 "@,error,\"a, b and c\",\"say \"\"hi\"\"\"\n"
                                 "\"@\",\"error\",\"line1\nline2\r\nline3\",\"\"\n"
                                 "@,error,\"\"\"\",x\n"),
                          0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    assert_cell_text(&t->b, 0, "message", "a, b and c");
    assert_cell_text(&t->b, 0, "stack_trace", "say \"hi\"");
    assert_cell_text(&t->b, 1, "message", "line1\nline2\r\nline3"); /* kept as sent */
    assert_int_equal(ut_cell(&t->b, 1, "stack_trace")->type, VAL_NULL);
    assert_cell_text(&t->b, 2, "message", "\"");
    parse_free(&t);

    /* JSON in a quoted cell */
    t = csv("error_logs",
            at_now("ts,level,message,context\n@,info,m,\"{\"\"b\"\": 1, \"\"a\"\": 2}\"\n"), 0);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "context", "{\"a\":2,\"b\":1}");
    parse_free(&t);
}

static void crlf_and_blank_lines(void **state)
{
    (void)state;
    struct parse *t = csv("error_logs",
                          at_now("ts,level,message\r\n"
                                 "@,error,one\r\n"
                                 "\r\n"
                                 "\n"
                                 "@,error,\"two\"\r\n"
                                 "@,error,three\r\n"),
                          0);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    assert_cell_text(&t->b, 0, "message", "one");
    assert_cell_text(&t->b, 1, "message", "two");
    assert_cell_text(&t->b, 2, "message", "three");
    parse_free(&t);

    /* blank lines count toward the line numbers of rejections */
    t = csv("error_logs", at_now("ts,level,message\r\n\r\n\n@,loud,x\r\n"), 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 4, "level 'loud' is not one of");
    parse_free(&t);
}

static void header_errors(void **state)
{
    (void)state;
    struct parse *t = csv("api_usage", "ts,method,bogus,endpoint\n", 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "header names unknown column 'bogus' for table api_usage");
    assert_string_equal(t->r.items[0].field, "bogus");
    parse_free(&t);

    t = csv("api_usage", "ts,method,ts\n", 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "header names column 'ts' twice");
    parse_free(&t);

    t = csv("api_usage", "ts,,method\n", 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "header names unknown column ''");
    parse_free(&t);

    t = csv("api_usage", "TS,Method\n", 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "header names unknown column 'TS'");
    parse_free(&t);

    struct buf b;
    buf_init(&b, 1 << 16);
    for (int i = 0; i < 70; i++)
        buf_printf(&b, "%sc%d", i ? "," : "", i);
    buf_putc(&b, '\n');
    t = csv("api_usage", b.data, 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "the header has more than 64 columns");
    parse_free(&t);
    buf_release(&b);

    t = csv("api_usage", "", 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 0, "the body is empty: send a header line and rows");
    parse_free(&t);
}

static void row_errors(void **state)
{
    (void)state;
    struct parse *t = csv("api_usage",
                          at_now("ts,method,endpoint,status_code\n"
                                 "@,GET,/a,200\n"
                                 "@,GET,/b\n"
                                 "@,GET,/c,200,extra\n"
                                 "@,GET,/d,999\n"
                                 "@,GET,/e,abc\n"
                                 ",GET,/f,200\n"
                                 "@,GET,/g,200\n"),
                          0);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->r.count, 5);
    assert_reject_at(t, 3, "has 3 fields, the header has 4");
    assert_reject_at(t, 4, "has 5 fields, the header has 4");
    assert_reject_at(t, 5, "status_code 999 is outside 100..599");
    assert_reject_at(t, 6, "status_code 'abc' is not a number");
    assert_reject_at(t, 7, "missing required field ts");
    assert_int_equal(t->b.nrows, 2); /* /a and /g */
    parse_free(&t);

    /* an unterminated quote ends the parse */
    t = csv("error_logs", at_now("ts,level,message\n@,error,\"open\n@,error,x\n"), 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_int_equal(t->r.count, 1);
    assert_reject_at(t, 2, "unterminated quoted field");
    assert_int_equal(t->b.nrows, 0);
    parse_free(&t);
}

/*
 * BUG (reported, minor): a quoted empty header cell ("") leaves the field buffer's previous text
 * in place (read_field resets len but appends nothing, so data is not re-terminated) and
 * read_header reads f.data as a C string: `ts,level,"",message` is "column 'level' twice".
 */
static void quoted_empty_header_cell(void **state)
{
    (void)state;
    struct parse *t = csv("error_logs", "ts,level,\"\",message\n", 0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 1, "header names unknown column ''");
    parse_free(&t);
}

/*
 * BUG (reported): the line counter advances once per record, so after a quoted field that spans
 * lines every later rejection names the wrong line (blank lines, by contrast, are counted).
 */
static void line_numbers_after_multiline_field(void **state)
{
    (void)state;
    struct parse *t = csv("error_logs",
                          at_now("ts,level,message\n"
                                 "@,error,\"one\ntwo\nthree\"\n"
                                 "@,loud,x\n"),
                          0);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 5, "level 'loud' is not one of");
    parse_free(&t);
}

/* Text after a closing quote is an error of that row (it once ended the record silently:
 * `"a"b` was the message "a"). */
static void text_after_closing_quote(void **state)
{
    (void)state;
    struct parse *t = csv("error_logs", at_now("ts,level,message\n@,error,\"a\"b\n"), 0);
    if (t->rc == 0)
        fail_msg("accepted with message '%s'", ut_cell(&t->b, 0, "message")->s);
    assert_int_equal(t->r.count, 1);
    assert_reject_at(t, 2, "quote");
    parse_free(&t);
}

/*
 * BUG (reported): read_field ignores buf_append's E_LIMIT. An unquoted cell longer than the
 * 1 MiB field buffer leaves the buffer empty, so the cell is silently NULL: an oversized
 * stack_trace is dropped and the row accepted instead of rejected for its length.
 */
static void oversized_unquoted_cell(void **state)
{
    (void)state;
    size_t big = (1 << 20) + 10;
    const char *head = at_now("ts,level,message,stack_trace\n@,error,m,");
    size_t hl = strlen(head);
    char *text = malloc(hl + big + 2);
    memcpy(text, head, hl);
    memset(text + hl, 's', big);
    text[hl + big] = '\n';
    text[hl + big + 1] = '\0';
    struct parse *t = csv("error_logs", text, 0);
    free(text);
    if (t->rc == 0)
        fail_msg("accepted, stack_trace type %d", ut_cell(&t->b, 0, "stack_trace")->type);
    assert_reject_at(t, 2, "stack_trace");
    parse_free(&t);
}

static void oversized_quoted_cell(void **state)
{
    (void)state;
    size_t big = (1 << 20) + 10;
    const char *head = at_now("ts,level,message,stack_trace\n@,error,m,\"");
    size_t hl = strlen(head);
    char *text = malloc(hl + big + 3);
    memcpy(text, head, hl);
    memset(text + hl, 's', big);
    memcpy(text + hl + big, "\"\n", 3);
    struct parse *t = csv("error_logs", text, 0);
    free(text);
    assert_int_equal(t->rc, E_INVALID);
    assert_reject_at(t, 2, "field is longer than 1 MiB");
    parse_free(&t);
}

static void not_nul_terminated(void **state)
{
    (void)state;
    /* only len bytes are read: the same text with garbage after len parses the same */
    const char *base = at_now("ts,level,message\n@,error,abc");
    size_t len = strlen(base);
    char *text = malloc(len + 8);
    memcpy(text, base, len);
    memcpy(text + len, "XYZ,\"\n\n", 8);
    struct parse *t = csv_len("error_logs", text, len, 0);
    assert_parsed(t);
    assert_cell_text(&t->b, 0, "message", "abc");
    parse_free(&t);
    free(text);
}

static void row_limit(void **state)
{
    (void)state;
    const char *text = at_now("ts,level,message\n@,error,1\n\n@,error,2\n@,error,3\n");
    struct parse *t = csv("error_logs", text, 3);
    assert_parsed(t);
    assert_int_equal(t->b.nrows, 3);
    parse_free(&t);
    t = csv("error_logs", text, 2); /* blank lines are no rows */
    assert_int_equal(t->rc, E_LIMIT);
    parse_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_and_rows),
        cmocka_unit_test(quoting),
        cmocka_unit_test(crlf_and_blank_lines),
        cmocka_unit_test(header_errors),
        cmocka_unit_test(row_errors),
        cmocka_unit_test(quoted_empty_header_cell),
        cmocka_unit_test(line_numbers_after_multiline_field),
        cmocka_unit_test(text_after_closing_quote),
        cmocka_unit_test(oversized_unquoted_cell),
        cmocka_unit_test(oversized_quoted_cell),
        cmocka_unit_test(not_nul_terminated),
        cmocka_unit_test(row_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
