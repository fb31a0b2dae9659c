/* opsdb query and opsdb view: read-only SQL and the views, printed as a table, JSON or CSV. */
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int print_result(const struct store_result *r, int fmt, const char *extra)
{
    struct buf out;
    buf_init(&out, (size_t)1 << 31);
    if (fmt == FORMAT_JSON) {
        query_write_json(r, extra, &out);
        buf_putc(&out, '\n');
    } else if (fmt == FORMAT_CSV) {
        query_write_csv(r, &out);
    } else {
        query_write_table(r, &out);
    }
    cli_write(&out);
    buf_release(&out);
    return 0;
}

static int format_flag(const char *v, int *fmt)
{
    *fmt = v ? query_format_parse(v) : -1;
    return *fmt < 0 ? -1 : 0;
}

int cmd_query(int argc, char **argv)
{
    const struct command *cmd = cli_command("query");
    struct cli_common c = {0};
    const char *sql = NULL;
    int fmt = FORMAT_TABLE;
    for (int i = 1; i < argc; i++) {
        int rc = cli_common_flag(&c, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc == 1)
            continue;
        if (strcmp(argv[i], "--format") == 0) {
            if (format_flag(i + 1 < argc ? argv[++i] : NULL, &fmt) != 0)
                return cli_usage(cmd, "--format must be table, json or csv");
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage(cmd, "unknown option '%s'", argv[i]);
        } else if (!sql) {
            sql = argv[i];
        } else {
            return cli_usage(cmd, "give the SQL as one argument (quote it)");
        }
    }
    if (c.help)
        return cli_help("query");
    if (!sql)
        return cli_usage(cmd, "missing SQL, e.g. opsdb query 'SELECT count(*) FROM api_usage'");
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(&c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    struct store_result r;
    struct err e;
    rc = query_sql(s, &cfg, sql, &r, &e);
    if (rc == 0)
        print_result(&r, fmt, NULL);
    else
        cli_fail("%s", e.msg);
    store_result_release(&r);
    store_close(&s);
    return rc ? 1 : 0;
}

static int view_flag(const struct command *cmd, struct view_request *vr, int argc, char **argv,
                     int *i, int *fmt)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (strcmp(a, "--format") == 0 || strcmp(a, "--window") == 0 || strcmp(a, "--now") == 0 ||
        strcmp(a, "--filter") == 0 || strcmp(a, "--order") == 0 || strcmp(a, "--limit") == 0) {
        if (!v)
            return cli_usage(cmd, "%s needs a value", a);
        (*i)++;
    }
    if (strcmp(a, "--format") == 0) {
        if (format_flag(v, fmt) != 0)
            return cli_usage(cmd, "--format must be table, json or csv");
    } else if (strcmp(a, "--window") == 0) {
        if (!time_parse_duration(v, &vr->window_ms) || vr->window_ms <= 0)
            return cli_usage(cmd, "--window '%s' is not a duration (e.g. 15m, 1h, 7d)", v);
    } else if (strcmp(a, "--now") == 0) {
        vr->has_now = true;
        if (!time_parse_point(v, &vr->now_ms))
            return cli_usage(cmd, "--now '%s' is not epoch seconds or RFC 3339", v);
    } else if (strcmp(a, "--filter") == 0) {
        const char *eq = strchr(v, '=');
        if (!eq || eq == v)
            return cli_usage(cmd, "--filter needs column=value");
        if (vr->nfilters >= QUERY_MAX_FILTERS)
            return cli_usage(cmd, "at most %d filters", QUERY_MAX_FILTERS);
        vr->filter_column[vr->nfilters] = strndup(v, (size_t)(eq - v));
        vr->filter_value[vr->nfilters++] = eq + 1;
    } else if (strcmp(a, "--order") == 0) {
        vr->order_by = v;
    } else if (strcmp(a, "--limit") == 0) {
        char *end;
        vr->limit = strtoll(v, &end, 10);
        if (*end || vr->limit <= 0)
            return cli_usage(cmd, "--limit must be a positive integer");
    } else {
        return cli_usage(cmd, "unknown option '%s'", a);
    }
    return 0;
}

int cmd_view(int argc, char **argv)
{
    const struct command *cmd = cli_command("view");
    struct cli_common c = {0};
    struct view_request vr = {0};
    const char *name = NULL;
    int fmt = FORMAT_TABLE, rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        int k = cli_common_flag(&c, argc, argv, &i);
        if (k < 0)
            rc = 2;
        else if (k == 1)
            continue;
        else if (argv[i][0] == '-' && argv[i][1])
            rc = view_flag(cmd, &vr, argc, argv, &i, &fmt);
        else if (!name)
            name = argv[i];
        else
            rc = cli_usage(cmd, "unexpected argument '%s'", argv[i]);
    }
    if (rc == 0 && c.help)
        rc = -1;
    if (rc == 0 && !name) {
        size_t n;
        const struct view_info *v = query_views(&n);
        fprintf(stderr, "opsdb view: name a view:\n");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  %-20s %s\n", v[i].name, v[i].doc);
        rc = 2;
    }
    struct config cfg;
    struct store *s = NULL;
    if (rc == 0)
        rc = cli_open_store(&c, &cfg, STORE_READONLY, &s);
    if (rc == 0) {
        struct store_result r;
        struct err e;
        if (query_view(s, &cfg, name, &vr, &r, &e) == 0) {
            char extra[300];
            snprintf(extra, sizeof extra, "\"view\":\"%.200s\"", name);
            print_result(&r, fmt, extra);
        } else {
            rc = cli_fail("%s", e.msg);
        }
        store_result_release(&r);
        store_close(&s);
    }
    for (size_t i = 0; i < vr.nfilters; i++)
        free((char *)vr.filter_column[i]);
    return rc == -1 ? cli_help("view") : rc;
}
