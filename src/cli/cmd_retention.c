/* opsdb retention status|verify: the data held against each table's retention policy. */
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

int cmd_retention(int argc, char **argv)
{
    const struct command *cmd = cli_command("retention");
    struct cli_common c = {0};
    const char *action = NULL;
    int fmt = FORMAT_TABLE;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_flag(&c, argc, argv, &i);
        if (k < 0)
            return 2;
        if (k == 1)
            continue;
        if (strcmp(argv[i], "--format") == 0) {
            if (i + 1 >= argc || (fmt = query_format_parse(argv[++i])) < 0)
                return cli_usage(cmd, "--format must be table, json or csv");
        } else if (!action && (strcmp(argv[i], "status") == 0 || strcmp(argv[i], "verify") == 0)) {
            action = argv[i];
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (c.help)
        return cli_help("retention");
    if (!action)
        return cli_usage(cmd, "say status or verify");
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(&c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    struct store_result res;
    struct err e;
    size_t past = 0;
    rc = query_retention(s, &cfg, time_now_ms(), &res, &past, &e);
    if (rc == 0) {
        struct buf out;
        buf_init(&out, 1 << 20);
        if (fmt == FORMAT_JSON) {
            query_write_json(&res, NULL, &out);
            buf_putc(&out, '\n');
        } else if (fmt == FORMAT_CSV) {
            query_write_csv(&res, &out);
        } else {
            query_write_table(&res, &out);
        }
        cli_write(&out);
        buf_release(&out);
    } else {
        cli_fail("%s", e.msg);
    }
    store_result_release(&res);
    store_close(&s);
    if (rc)
        return 1;
    if (strcmp(action, "verify") == 0 && past > 0)
        return cli_fail("%zu table%s hold data older than their retention policy (status "
                        "'past policy' above)",
                        past, past == 1 ? "" : "s");
    return 0;
}
