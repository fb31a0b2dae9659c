/* opsdb compact: rewrite the past days of metric samples older than a horizon, held in a chunk
 * per ingestion request, as one chunk per series and day (and move any raw samples a database
 * from before schema version 8 still has), and pack
 * event partitions older than theirs into compressed column blocks, now, as the server does
 * every storage.compact_interval. */
#include "cli/cli.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

int cmd_compact(int argc, char **argv)
{
    const struct command *cmd = cli_command("compact");
    struct cli_common c = {0};
    const char *older_than = NULL;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        int k = cli_common_flag(&c, argc, argv, &i);
        if (k < 0)
            return 2;
        if (k == 1)
            continue;
        if (strcmp(argv[i], "--older-than") == 0 && i + 1 < argc)
            older_than = argv[++i];
        else if (strcmp(argv[i], "--quiet") == 0)
            quiet = true;
        else
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
    }
    if (c.help)
        return cli_help("compact");
    int64_t age_ms = 0;
    if (older_than && !time_parse_duration(older_than, &age_ms))
        return cli_usage(cmd, "--older-than: '%s' is not a duration (e.g. 2h, 1d, 30m)",
                         older_than);
    struct config cfg;
    int rc = cli_load_config(&c, &cfg);
    if (rc)
        return rc;
    /* an age of 0 in the config means never; --older-than applies to both kinds */
    int64_t samples_age_ms = older_than ? age_ms : cfg.storage_compress_after_ms;
    int64_t events_age_ms = older_than ? age_ms : cfg.storage_compress_events_after_ms;
    bool samples = older_than || samples_age_ms > 0, events = older_than || events_age_ms > 0;
    if (!samples && !events) {
        printf("storage.compress_after and storage.compress_events_after are 0 (never "
               "compress): nothing done; give --older-than to compress anyway\n");
        return 0;
    }
    struct store *s;
    if ((rc = cli_open_store(&c, &cfg, STORE_EXISTING, &s)) != 0)
        return rc;
    int64_t now_ms = time_now_ms();
    struct store_compact_stats st = {.pass_done = !samples};
    struct err e;
    while (!st.pass_done && rc == 0) {
        rc = store_compact_step(s, now_ms - samples_age_ms, &st, &e);
        if (!quiet && rc == 0)
            fprintf(stderr, "\rcompact: %lld series visited, %lld samples moved",
                    (long long)st.series_seen, (long long)st.samples_moved);
    }
    if (!quiet && samples)
        fputc('\n', stderr);
    struct store_pack_stats ps = {.done = !events};
    while (!ps.done && rc == 0) {
        rc = store_pack_step(s, now_ms - events_age_ms, &ps, &e);
        if (!quiet && rc == 0 && !ps.done)
            fprintf(stderr, "compact: packed %s (%lld partitions, %lld rows so far)\n", ps.last,
                    (long long)ps.partitions_packed, (long long)ps.rows_packed);
    }
    store_close(&s);
    if (rc)
        return cli_fail("compaction stopped (what was done is kept): %s", e.msg);
    if (st.series_failed)
        return cli_fail(
            "compaction left %lld series as they were: a compressed chunk of theirs cannot be "
            "read (%s); the other series were compacted",
            (long long)st.series_failed, st.first_failure);
    if (!samples)
        printf("storage.compress_after is 0: metric samples are not compressed\n");
    if (!events)
        printf("storage.compress_events_after is 0: event partitions are not packed\n");
    if (samples)
        printf("compacted %lld samples of %lld series older than %s into chunks\n",
               (long long)st.samples_moved, (long long)st.series_compacted,
               older_than ? older_than : "storage.compress_after");
    if (events)
        printf("packed %lld event partitions older than %s (%lld rows) into %lld bytes\n",
               (long long)ps.partitions_packed,
               older_than ? older_than : "storage.compress_events_after", (long long)ps.rows_packed,
               (long long)ps.bytes_packed);
    return 0;
}
