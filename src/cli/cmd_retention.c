/* opsdb retention status|verify|apply: the data held against each table's retention policy, and
 * dropping what is past it. */
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

/* Drops what is past policy now, as the server does every storage.retention_interval. */
static int apply(struct cli_common *c)
{
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(c, &cfg, STORE_EXISTING, &s);
    if (rc)
        return rc;
    struct store_retention_stats st = {0};
    struct err e;
    int64_t t0 = time_now_ms();
    rc = store_retention_apply(s, t0, &st, &e);
    store_close(&s);
    if (rc)
        return cli_fail("retention not applied (nothing was dropped): %s", e.msg);
    printf("dropped %lld partition%s (%lld rows), %lld chunk%s (%lld samples) and %lld rollup "
           "rows in %.3f s\n",
           (long long)st.partitions_dropped, st.partitions_dropped == 1 ? "" : "s",
           (long long)st.rows_dropped, (long long)st.chunks_dropped,
           st.chunks_dropped == 1 ? "" : "s", (long long)st.samples_dropped,
           (long long)st.rollup_rows_dropped, (double)(time_now_ms() - t0) / 1000.0);
    if (st.expire_failure[0])
        fprintf(stderr,
                "opsdb: warning: archives past storage.archive_retention were not all "
                "removed (retried by the next run): %s\n",
                st.expire_failure);
    if (st.partitions_archived || st.archives_expired)
        printf("archived %lld partition%s to %s first; removed %lld archive%s past "
               "storage.archive_retention\n",
               (long long)st.partitions_archived, st.partitions_archived == 1 ? "" : "s",
               cfg.storage_archive_dir, (long long)st.archives_expired,
               st.archives_expired == 1 ? "" : "s");
    return 0;
}

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
        } else if (!action && (strcmp(argv[i], "status") == 0 || strcmp(argv[i], "verify") == 0 ||
                               strcmp(argv[i], "apply") == 0)) {
            action = argv[i];
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (c.help)
        return cli_help("retention");
    if (!action)
        return cli_usage(cmd, "say status, verify or apply");
    if (strcmp(action, "apply") == 0)
        return apply(&c);
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(&c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    struct store_result res;
    struct err e;
    size_t past = 0, missing = 0;
    rc = query_retention(s, &cfg, time_now_ms(), &res, &past, &missing, &e);
    if (rc == 0) {
        cli_write_result(&res, fmt);
    } else {
        cli_fail("%s", e.msg);
    }
    store_result_release(&res);
    store_close(&s);
    if (rc)
        return 1;
    if (strcmp(action, "verify") == 0 && missing > 0)
        cli_fail("%zu table%s data inside the retention policy: retention dropped data up to "
                 "'dropped_until', after the policy's horizon (status 'missing inside policy' "
                 "above)",
                 missing, missing == 1 ? " misses" : "s miss");
    if (strcmp(action, "verify") == 0 && past > 0)
        return cli_fail("%zu table%s hold data older than their retention policy (status "
                        "'past policy' above)",
                        past, past == 1 ? "" : "s");
    return strcmp(action, "verify") == 0 && missing > 0 ? 1 : 0;
}
