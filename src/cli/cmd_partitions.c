/* opsdb partitions: every table's partitions with time range, rows, bytes and state. */
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

int cmd_partitions(int argc, char **argv)
{
    const struct command *cmd = cli_command("partitions");
    struct cli_common c = {0};
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
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (c.help)
        return cli_help("partitions");
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(&c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    struct store_result res;
    struct err e;
    rc = query_partitions(s, cfg.storage_archive_dir, &res, &e);
    if (rc == 0) {
        cli_write_result(&res, fmt);
    }
    store_result_release(&res);
    store_close(&s);
    return rc ? cli_fail("%s", e.msg) : 0;
}
