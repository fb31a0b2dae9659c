/* opsdb init: creates the database or migrates it to this version's schema. */
#include "cli/cli.h"
#include "store/store.h"

#include <stdio.h>

int cmd_init(int argc, char **argv)
{
    struct cli_common c = {0};
    for (int i = 1; i < argc; i++) {
        int rc = cli_common_flag(&c, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc == 0)
            return cli_usage(cli_command("init"), "unexpected argument '%s'", argv[i]);
    }
    if (c.help)
        return cli_help("init");
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(&c, &cfg, STORE_READWRITE, &s);
    if (rc)
        return rc;
    size_t ntables, nviews;
    schema_tables(&ntables);
    store_view_names(&nviews);
    printf("database %s is ready: schema version %d, %zu tables, %zu views\n", cfg.db,
           store_schema_version(s), ntables, nviews);
    store_close(&s);
    return 0;
}
