/* opsdb series: time-bucketed samples of one metric, from the rollups when they answer exactly. */
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

static int series_flag(const struct command *cmd, struct series_request *sr, const char *a,
                       const char *v, int *fmt)
{
    if (!v)
        return cli_usage(cmd, "%s needs a value", a);
    if (strcmp(a, "--metric") == 0) {
        sr->metric = v;
    } else if (strcmp(a, "--filter") == 0) {
        sr->filter = v;
    } else if (strcmp(a, "--agg") == 0) {
        sr->agg = v;
    } else if (strcmp(a, "--resolution") == 0) {
        sr->resolution = v;
    } else if (strcmp(a, "--table") == 0) {
        sr->table = v;
    } else if (strcmp(a, "--from") == 0 || strcmp(a, "--to") == 0) {
        *(a[2] == 'f' ? &sr->has_from : &sr->has_to) = true;
        if (!time_parse_point(v, a[2] == 'f' ? &sr->from_ms : &sr->to_ms))
            return cli_usage(cmd, "%s '%s' is not epoch seconds or RFC 3339", a, v);
    } else if (strcmp(a, "--step") == 0) {
        if (!time_parse_duration(v, &sr->step_ms) || sr->step_ms <= 0)
            return cli_usage(cmd, "--step '%s' is not a duration (e.g. 10s, 1m, 1h)", v);
    } else if (strcmp(a, "--format") == 0) {
        if ((*fmt = query_format_parse(v)) < 0)
            return cli_usage(cmd, "--format must be table, json or csv");
    } else {
        return cli_usage(cmd, "unknown option '%s'", a);
    }
    return 0;
}

static int print(struct store *s, const struct config *cfg, const struct series_request *sr,
                 int fmt)
{
    struct err e;
    struct buf out;
    buf_init(&out, (size_t)1 << 31);
    int rc;
    if (fmt == FORMAT_JSON) {
        rc = query_series(s, cfg, sr, &out, &e);
        buf_putc(&out, '\n');
    } else {
        struct store_result r;
        rc = query_series_rows(s, cfg, sr, &r, &e);
        if (rc == 0 && fmt == FORMAT_CSV)
            query_write_csv(&r, &out);
        else if (rc == 0)
            query_write_table(&r, &out);
        store_result_release(&r);
    }
    if (rc == 0)
        cli_write(&out);
    else
        cli_fail("%s", e.msg);
    buf_release(&out);
    return rc ? 1 : 0;
}

int cmd_series(int argc, char **argv)
{
    const struct command *cmd = cli_command("series");
    struct cli_common c = {0};
    struct series_request sr = {0};
    int fmt = FORMAT_TABLE;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_flag(&c, argc, argv, &i);
        if (k < 0)
            return 2;
        if (k == 1)
            continue;
        if (argv[i][0] != '-')
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        int rc = series_flag(cmd, &sr, argv[i], i + 1 < argc ? argv[i + 1] : NULL, &fmt);
        if (rc)
            return rc;
        i++;
    }
    if (c.help)
        return cli_help("series");
    if (!sr.metric)
        return cli_usage(cmd, "missing --metric, e.g. opsdb series --metric cpu_usage");
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(&c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    rc = print(s, &cfg, &sr, fmt);
    store_close(&s);
    return rc;
}
