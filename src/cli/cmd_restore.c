/* opsdb restore: a backup back as the database — checked whole before it replaces anything,
 * the database it replaces kept aside, never while a server has that database open. */
#include "backup/backup.h"
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

int cmd_restore(int argc, char **argv)
{
    const struct command *cmd = cli_command("restore");
    struct cli_common c = {0};
    const char *which = NULL, *dir = NULL;
    bool force = false, quiet = false;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_flag(&c, argc, argv, &i);
        if (k < 0)
            return 2;
        if (k == 1)
            continue;
        if (strcmp(argv[i], "--force") == 0)
            force = true;
        else if (strcmp(argv[i], "--quiet") == 0)
            quiet = true;
        else if ((strcmp(argv[i], "--from") == 0 || strcmp(argv[i], "--to") == 0) && i + 1 < argc &&
                 argv[i + 1][0])
            dir = argv[++i];
        else if (argv[i][0] == '-')
            return cli_usage(cmd, "unknown option '%s'", argv[i]);
        else if (!which)
            which = argv[i];
        else
            return cli_usage(cmd, "restore takes one backup (unexpected '%s')", argv[i]);
    }
    if (c.help)
        return cli_help("restore");
    if (!which)
        return cli_usage(cmd, "give the backup to restore: latest, a name from `opsdb backup "
                              "list`, or a backup's .json or .db.zst file");
    struct config cfg;
    int rc = cli_load_config(&c, &cfg);
    if (rc)
        return rc;
    if (!dir)
        dir = cfg.backup_dir;
    struct backup b;
    struct err e;
    if (backup_find(dir, which, &b, &e) != 0)
        return cli_fail("%s", e.msg);
    struct cli_progress progress = {.what = "restore", .quiet = quiet};
    struct backup_result r;
    rc = backup_restore(&cfg, &b, cfg.db, force, cli_progress_step, &progress, &r, &e);
    cli_progress_end(&progress);
    if (rc)
        return cli_fail("restore failed: %s%s%s", e.msg,
                        r.aside[0] ? "" : "; nothing was changed at ", r.aside[0] ? "" : cfg.db);
    char taken[32];
    time_format_rfc3339(b.created_at_ms, taken, sizeof taken);
    printf("restored %s (%lld rows, taken %s) to %s in %.1f s\n", r.name, (long long)r.rows, taken,
           r.path, (double)r.duration_ms / 1000.0);
    if (r.aside[0])
        printf("the database it replaced is kept as %s\n", r.aside);
    return 0;
}
