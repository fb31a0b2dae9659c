/*
 * core schema: the table of tables is consistent (every table has ts, names unique, indexes and
 * keys name real columns, defaults obey their own limits) and the generated docs cover it.
 */
#include "unit.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>

static void every_table_has_ts(void **state)
{
    (void)state;
    size_t n;
    const struct table *t = schema_tables(&n);
    assert_true(n >= 8);
    assert_true(n <= 16); /* config.retention_days, ingest_ctx and writer_stats hold 16 */
    for (size_t i = 0; i < n; i++) {
        int ts = schema_column(&t[i], "ts");
        if (ts != 0)
            fail_msg("table %s: ts is column %d, expected the first", t[i].name, ts);
        assert_int_equal(t[i].columns[0].type, COL_TS);
        assert_true(t[i].columns[0].required);
    }
}

static void names_unique(void **state)
{
    (void)state;
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(t[i].name);
        assert_true(strlen(t[i].name) > 0);
        for (const char *p = t[i].name; *p; p++)
            assert_true(islower((unsigned char)*p) || *p == '_');
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(t[i].name, t[j].name) == 0)
                fail_msg("table %s twice", t[i].name);
        for (size_t a = 0; a < t[i].ncolumns; a++) {
            const char *ca = t[i].columns[a].name;
            for (const char *p = ca; *p; p++)
                assert_true(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_');
            for (size_t b = a + 1; b < t[i].ncolumns; b++)
                if (strcmp(ca, t[i].columns[b].name) == 0)
                    fail_msg("table %s: column %s twice", t[i].name, ca);
        }
        for (size_t a = 0; a < t[i].nindexes; a++)
            for (size_t b = a + 1; b < t[i].nindexes; b++)
                if (strcmp(t[i].indexes[a].name_suffix, t[i].indexes[b].name_suffix) == 0)
                    fail_msg("table %s: index %s twice", t[i].name, t[i].indexes[a].name_suffix);
    }
}

static void lookups(void **state)
{
    (void)state;
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(schema_table(t[i].name), &t[i]);
        for (size_t c = 0; c < t[i].ncolumns; c++)
            assert_int_equal(schema_column(&t[i], t[i].columns[c].name), (int)c);
        assert_int_equal(schema_column(&t[i], "no_such_column"), -1);
        assert_int_equal(schema_column(&t[i], ""), -1);
        assert_int_equal(schema_column(&t[i], "TS"), -1); /* names are exact */
    }
    assert_null(schema_table("nope"));
    assert_null(schema_table(""));
    assert_null(schema_table("API_USAGE"));
    const struct table *api = schema_table("api_usage");
    assert_non_null(api);
    assert_int_equal(api->kind, TABLE_EVENTS);
    int sc = schema_column(api, "status_code");
    assert_true(sc > 0);
    assert_int_equal(api->columns[sc].type, COL_INT);
    assert_true(api->columns[sc].min == 100 && api->columns[sc].max == 599);
    assert_int_equal(schema_table("system_metrics")->kind, TABLE_SERIES);
    assert_int_equal(schema_table("scheduled_jobs")->kind, TABLE_STATE);
    assert_true(schema_version() >= 1);
}

/* True when name is a column of t. */
static bool has_column(const struct table *t, const char *name, size_t len)
{
    for (size_t c = 0; c < t->ncolumns; c++)
        if (strlen(t->columns[c].name) == len && memcmp(t->columns[c].name, name, len) == 0)
            return true;
    return false;
}

static void indexes_and_keys_name_columns(void **state)
{
    (void)state;
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        for (size_t x = 0; x < t[i].nindexes; x++) {
            const char *p = t[i].indexes[x].columns;
            while (*p) {
                while (*p == ' ' || *p == ',')
                    p++;
                size_t len = strcspn(p, ", ");
                if (len && !has_column(&t[i], p, len))
                    fail_msg("table %s index %s: no column '%.*s'", t[i].name,
                             t[i].indexes[x].name_suffix, (int)len, p);
                p += len;
            }
            assert_non_null(t[i].indexes[x].purpose);
        }
        if (t[i].kind == TABLE_STATE) {
            assert_non_null(t[i].key_column);
            assert_true(schema_column(&t[i], t[i].key_column) >= 0);
        } else {
            assert_null(t[i].key_column);
        }
        size_t keys = 0;
        for (size_t c = 0; c < t[i].ncolumns; c++)
            keys += t[i].columns[c].series_key;
        if (t[i].kind == TABLE_SERIES) {
            assert_true(keys > 0);
            assert_true(schema_column(&t[i], "metric") >= 0);
            assert_true(schema_column(&t[i], "value") >= 0);
        } else {
            assert_int_equal(keys, 0);
        }
        assert_true(t[i].retention_days >= 0);
        assert_non_null(t[i].doc);
    }
}

static void columns_consistent(void **state)
{
    (void)state;
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < t[i].ncolumns; c++) {
            const struct column *col = &t[i].columns[c];
            assert_non_null(col->doc);
            if (col->type == COL_TEXT || col->type == COL_JSON)
                assert_true(col->max_len > 0);
            if (col->allowed) {
                assert_int_equal(col->type, COL_TEXT);
                for (const char *const *a = col->allowed; *a; a++) {
                    assert_true(strlen(*a) <= col->max_len);
                    for (const char *const *b = a + 1; *b; b++)
                        if (strcasecmp(*a, *b) == 0)
                            fail_msg("%s.%s: '%s' allowed twice", t[i].name, col->name, *a);
                }
            }
            assert_true(col->min <= col->max);
            if (col->derived)
                assert_false(col->required);
            if (col->required)
                assert_null(col->default_sql);
            if (!col->default_sql)
                continue;
            /* a default must pass the column's own checks */
            const char *d = col->default_sql;
            if (col->type == COL_TEXT || col->type == COL_JSON) {
                size_t len = strlen(d);
                assert_true(len >= 2 && d[0] == '\'' && d[len - 1] == '\'');
                if (col->allowed) {
                    bool found = false;
                    for (const char *const *a = col->allowed; *a; a++)
                        found |= strlen(*a) == len - 2 && memcmp(*a, d + 1, len - 2) == 0;
                    if (!found)
                        fail_msg("%s.%s: default %s is not allowed", t[i].name, col->name, d);
                }
            } else {
                char *end;
                long long v = strtoll(d, &end, 10);
                assert_int_equal(*end, '\0');
                if (col->min < col->max && (v < col->min || v > col->max))
                    fail_msg("%s.%s: default %s outside its bounds", t[i].name, col->name, d);
            }
        }
    }
    /* exactly one derived column: error_logs.fingerprint */
    size_t derived = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < t[i].ncolumns; c++)
            derived += t[i].columns[c].derived;
    assert_int_equal(derived, 1);
    const struct table *el = schema_table("error_logs");
    assert_true(el->columns[schema_column(el, "fingerprint")].derived);
}

static void markdown_mentions_everything(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(schema_markdown(&b), 0);
    assert_non_null(b.data);
    assert_non_null(strstr(b.data, "# Schema reference"));
    char want[160];
    snprintf(want, sizeof want, "Schema version: %d.", schema_version());
    assert_non_null(strstr(b.data, want));
    size_t n;
    const struct table *t = schema_tables(&n);
    for (size_t i = 0; i < n; i++) {
        snprintf(want, sizeof want, "\n## %s\n", t[i].name);
        const char *section = strstr(b.data, want);
        if (!section)
            fail_msg("schema markdown lacks a section for %s", t[i].name);
        size_t start = (size_t)(section - b.data) + 1;
        const char *next = strstr(b.data + start, "\n## ");
        size_t section_len = next ? (size_t)(next - section) : strlen(section);
        for (size_t c = 0; c < t[i].ncolumns; c++) {
            snprintf(want, sizeof want, "| `%s` |", t[i].columns[c].name);
            const char *hit = strstr(section, want);
            if (!hit || (size_t)(hit - section) > section_len)
                fail_msg("schema markdown section %s lacks column %s", t[i].name,
                         t[i].columns[c].name);
        }
        for (size_t x = 0; x < t[i].nindexes; x++) {
            snprintf(want, sizeof want, "`%s_%s`", t[i].name, t[i].indexes[x].name_suffix);
            if (!strstr(section, want))
                fail_msg("schema markdown lacks index %s", want);
        }
        if (t[i].retention_days) {
            snprintf(want, sizeof want, "Default retention: %d days.", t[i].retention_days);
            assert_non_null(strstr(section, want));
        }
    }
    /* allowed sets and bounds are documented */
    assert_non_null(strstr(b.data, "one of `GET`, `HEAD`"));
    assert_non_null(strstr(b.data, "100..599"));
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_table_has_ts),
        cmocka_unit_test(names_unique),
        cmocka_unit_test(lookups),
        cmocka_unit_test(indexes_and_keys_name_columns),
        cmocka_unit_test(columns_consistent),
        cmocka_unit_test(markdown_mentions_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
