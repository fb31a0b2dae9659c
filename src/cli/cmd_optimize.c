/*
 * opsdb optimize: upkeep of a database file that no server has open — what the builtin job
 * optimize does on a server (planner statistics refreshed, free pages given back, the
 * write-ahead log truncated) and, with --vacuum, a full vacuum: the way to shrink a file made by
 * an older opsdb and to convert it so that optimize gives free pages back from then on.
 */
#include "cli/cli.h"
#include "jobs/builtin.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

static int copy_progress(void *arg, int64_t done, int64_t total)
{
    return cli_progress_step(arg, "copying", done, total);
}

static double mb(int64_t bytes)
{
    return (double)bytes / 1e6;
}

static int vacuum(const struct config *cfg, bool quiet)
{
    struct store_vacuum_stats st;
    struct err e;
    if (store_file_vacuum_plan(cfg, &st, &e) != 0)
        return cli_fail("optimize: %s", e.msg);
    if (!quiet)
        fprintf(stderr,
                "optimize: vacuuming %s (%.1f MB): its data (%.1f MB) is copied into a new file "
                "beside it, which needs that much free space (%.1f MB are free)\n",
                cfg->db, mb(st.bytes_before), mb(st.bytes_needed), mb(st.bytes_available));
    struct cli_progress progress = {.what = "optimize", .quiet = quiet};
    int rc = store_file_vacuum(cfg, copy_progress, &progress, &st, &e);
    cli_progress_end(&progress);
    if (rc)
        return cli_fail("optimize --vacuum failed, the database is as it was: %s", e.msg);
    printf("vacuumed %s: %.1f MB before, %.1f MB after; %s\n", cfg->db, mb(st.bytes_before),
           mb(st.bytes_after),
           st.shrinks_before ? "optimize gives free pages back, as before"
                             : "from now on optimize gives free pages back (auto_vacuum "
                               "incremental)");
    return 0;
}

static int optimize(struct cli_common *c, struct config *cfg)
{
    struct store *s;
    int rc = cli_open_store(c, cfg, STORE_EXISTING, &s);
    if (rc)
        return rc;
    struct store_optimize_stats os = {0};
    struct err e;
    rc = store_optimize(s, &os, &e);
    store_close(&s);
    if (rc)
        return cli_fail("optimize failed: %s", e.msg);
    struct buf line;
    buf_init(&line, 4096);
    jobs_optimize_summary(&os, &line);
    buf_append(&line, "\n", 1);
    cli_write(&line);
    buf_release(&line);
    return 0;
}

int cmd_optimize(int argc, char **argv)
{
    const struct command *cmd = cli_command("optimize");
    struct cli_common c = {0};
    bool full = false, quiet = false;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_flag(&c, argc, argv, &i);
        if (k < 0)
            return 2;
        if (k == 1)
            continue;
        if (strcmp(argv[i], "--vacuum") == 0)
            full = true;
        else if (strcmp(argv[i], "--quiet") == 0)
            quiet = true;
        else
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
    }
    if (c.help)
        return cli_help("optimize");
    struct config cfg;
    int rc = cli_load_config(&c, &cfg);
    if (rc)
        return rc;
    long pid = 0;
    struct err e;
    if (store_file_in_use(cfg.db, &pid, &e) != 0)
        return cli_fail("optimize: %s", e.msg);
    if (pid)
        return cli_fail("the database %s is live: process %ld has it open (a running opsdb "
                        "serve?); a server optimizes its database itself (`opsdb jobs run "
                        "optimize`); stop it to run --vacuum",
                        cfg.db, pid);
    return full ? vacuum(&cfg, quiet) : optimize(&c, &cfg);
}
