/* opsdb archive: the archives retention wrote to storage.archive_dir — list them, verify them
 * against their manifests, restore one into the database for an investigation, and unload it
 * again. */
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int list(const char *dir, int fmt)
{
    struct store_archive *all;
    size_t n;
    struct err e;
    if (store_archive_list(dir, &all, &n, &e) != 0)
        return cli_fail("%s", e.msg);
    static const char *const names[] = {"table", "partition", "from_ms", "to_ms",
                                        "rows",  "bytes",     "sha256",  "problem"};
    struct store_result res;
    store_result_init(&res);
    int rc = store_result_set_columns(&res, 8, names);
    size_t bad = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct value *row = store_result_add_row(&res);
        if (!row) {
            rc = -1;
            break;
        }
        const char *text[] = {all[i].table->name, all[i].partition, all[i].sha256, all[i].problem};
        int at[] = {0, 1, 6, 7};
        bad += all[i].problem[0] != '\0';
        for (int k = 0; k < 4; k++) {
            if (!text[k][0])
                continue; /* NULL */
            row[at[k]].type = VAL_TEXT;
            row[at[k]].s = arena_strndup(&res.arena, text[k], strlen(text[k]));
            row[at[k]].len = (uint32_t)strlen(text[k]);
        }
        int64_t nums[] = {all[i].from_ms, all[i].to_ms, all[i].rows, all[i].bytes};
        for (int k = 0; k < 4 && !all[i].problem[0]; k++) {
            row[2 + k].type = VAL_INT;
            row[2 + k].i = nums[k];
        }
    }
    if (rc == 0)
        cli_write_result(&res, fmt);
    store_result_release(&res);
    free(all);
    if (rc)
        return cli_fail("out of memory");
    return bad ? cli_fail("%zu manifest%s cannot be read (column problem above)", bad,
                          bad == 1 ? "" : "s")
               : 0;
}

static bool wanted(const char *partition, char **names, int nnames)
{
    for (int i = 0; i < nnames; i++)
        if (strcmp(names[i], partition) == 0)
            return true;
    return nnames == 0;
}

static int verify(const char *dir, char **names, int nnames)
{
    struct store_archive *all;
    size_t n;
    struct err e;
    if (store_archive_list(dir, &all, &n, &e) != 0)
        return cli_fail("%s", e.msg);
    int failed = 0, checked = 0;
    for (int i = 0; i < nnames; i++) {
        bool found = false;
        for (size_t j = 0; j < n; j++)
            found |= strcmp(all[j].partition, names[i]) == 0;
        if (!found) {
            fprintf(stderr, "opsdb: no archive of a partition named '%s' in %s\n", names[i], dir);
            failed++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!wanted(all[i].partition, names, nnames))
            continue;
        checked++;
        if (store_archive_verify(&all[i], &e) == 0) {
            printf("ok      %s  %lld rows  %lld bytes\n", all[i].partition, (long long)all[i].rows,
                   (long long)all[i].bytes);
        } else {
            printf("FAILED  %s  %s\n", all[i].partition, e.msg);
            failed++;
        }
    }
    free(all);
    if (failed)
        return cli_fail("%d archive%s failed verification", failed, failed == 1 ? "" : "s");
    printf("%d archive%s verified\n", checked, checked == 1 ? "" : "s");
    return 0;
}

static int restore_or_unload(struct cli_common *c, const char *dir, const char *partition,
                             bool restore)
{
    struct store_archive a;
    struct err e;
    if (restore && store_archive_find(dir, partition, &a, &e) != 0)
        return cli_fail("%s", e.msg);
    struct config cfg;
    struct store *s;
    int rc = cli_open_store(c, &cfg, STORE_EXISTING, &s);
    if (rc)
        return rc;
    int64_t rows = 0;
    rc = restore ? store_archive_restore(s, &a, &rows, &e) : store_archive_unload(s, partition, &e);
    store_close(&s);
    if (rc)
        return cli_fail("%s%s", e.msg, restore ? " (nothing was restored)" : "");
    if (restore)
        printf("restored %lld rows of %s into %s (state restored: retention keeps it until "
               "`opsdb archive unload %s`)\n",
               (long long)rows, partition, a.table->name, partition);
    else
        printf("unloaded %s (its archive stays)\n", partition);
    return 0;
}

int cmd_archive(int argc, char **argv)
{
    const struct command *cmd = cli_command("archive");
    struct cli_common c = {0};
    int fmt = FORMAT_TABLE;
    const char *dir = NULL, *action = NULL;
    char **names = calloc((size_t)argc + 1, sizeof *names);
    int nnames = 0;
    if (!names)
        return cli_fail("out of memory");
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        int k = cli_common_flag(&c, argc, argv, &i);
        if (k < 0)
            rc = 2;
        else if (k == 1)
            continue;
        else if (strcmp(argv[i], "--format") == 0) {
            if (i + 1 >= argc || (fmt = query_format_parse(argv[++i])) < 0)
                rc = cli_usage(cmd, "--format must be table, json or csv");
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (argv[i][0] == '-') {
            rc = cli_usage(cmd, "unknown option '%s'", argv[i]);
        } else if (!action) {
            action = argv[i];
        } else {
            names[nnames++] = argv[i];
        }
    }
    struct config cfg;
    if (rc == 0 && c.help)
        rc = -1;
    else if (rc == 0 && !action)
        rc = cli_usage(cmd, "give an action: list, verify, restore or unload");
    else if (rc == 0 && (rc = cli_load_config(&c, &cfg)) == 0 && !dir)
        dir = cfg.storage_archive_dir;
    bool one = action && (strcmp(action, "restore") == 0 || strcmp(action, "unload") == 0);
    if (rc == 0 && !one && strcmp(action, "list") != 0 && strcmp(action, "verify") != 0)
        rc = cli_usage(cmd, "unknown action '%s': list, verify, restore or unload", action);
    bool needs_dir = action && strcmp(action, "unload") != 0; /* unload reads the database only */
    if (rc == 0 && needs_dir && (!dir || !dir[0]))
        rc = cli_usage(cmd, "no archive directory: set storage.archive_dir or give --dir DIR");
    else if (rc == 0 && one && nnames != 1)
        rc = cli_usage(cmd, "%s takes one partition name (see `opsdb archive list`)", action);
    else if (rc == 0 && strcmp(action, "list") == 0 && nnames)
        rc = cli_usage(cmd, "list takes no partition names");
    struct stat st;
    if (rc == 0 && needs_dir && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        rc = cli_fail("the archive directory %s does not exist (or is not a directory)", dir);
    if (rc == 0) {
        if (strcmp(action, "list") == 0)
            rc = list(dir, fmt);
        else if (strcmp(action, "verify") == 0)
            rc = verify(dir, names, nnames);
        else
            rc = restore_or_unload(&c, dir, names[0], strcmp(action, "restore") == 0);
    }
    free(names);
    return rc == -1 ? cli_help("archive") : rc;
}
