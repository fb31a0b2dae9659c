/* opsdb backup: take a backup of the database while it is in use, list the backups of a
 * directory, verify them by restoring each into a temporary file, prune the old ones, and
 * check the database itself. The work is in backup/; this file parses flags and prints. */
#include "backup/backup.h"
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct options {
    const char *action, *dir;
    char **names;
    int nnames;
    int64_t keep; /* 0: backup.keep */
    bool all, quiet;
    int format;
};

static int create(struct cli_common *c, const struct options *o)
{
    struct config cfg;
    struct store *s;
    /* read-only: a running server keeps writing, and this process never migrates */
    int rc = cli_open_store(c, &cfg, STORE_READONLY, &s);
    if (rc)
        return rc;
    struct cli_progress progress = {.what = "backup", .quiet = o->quiet};
    struct backup_result r;
    struct err e;
    rc = backup_create(s, &cfg, o->dir, cli_progress_step, &progress, &r, &e);
    store_close(&s);
    cli_progress_end(&progress);
    if (rc)
        return cli_fail("backup failed (nothing of it is left in %s): %s", o->dir, e.msg);
    printf("backup %s: %lld rows, %.1f MB compressed to %.1f MB, in %.1f s\n  %s\n", r.name,
           (long long)r.rows, (double)r.db_bytes / 1e6, (double)r.bytes / 1e6,
           (double)r.duration_ms / 1000.0, r.path);
    return 0;
}

static void list_row(struct store_result *res, const struct backup *b)
{
    struct value *row = store_result_add_row(res);
    store_result_put_text(res, &row[0], b->name);
    if (b->problem[0]) {
        store_result_put_text(res, &row[9], b->problem);
        return;
    }
    char created[32], verified[32] = "", result[600];
    time_format_rfc3339(b->created_at_ms, created, sizeof created);
    if (b->verified_at_ms)
        time_format_rfc3339(b->verified_at_ms, verified, sizeof verified);
    snprintf(result, sizeof result, "%s%s",
             !b->verified_at_ms ? "never"
             : b->verify_ok     ? "ok"
                                : "FAILED: ",
             b->verified_at_ms && !b->verify_ok ? b->verify_error : "");
    store_result_put_text(res, &row[1], created);
    store_result_put_int(&row[2], b->schema_version);
    store_result_put_int(&row[3], b->rows);
    store_result_put_int(&row[4], b->db_bytes);
    store_result_put_int(&row[5], b->bytes);
    store_result_put_int(&row[6], b->duration_ms);
    store_result_put_text(res, &row[7], verified);
    store_result_put_text(res, &row[8], result);
}

static int list(const struct options *o)
{
    struct backup *all;
    size_t n;
    struct err e;
    if (backup_list(o->dir, &all, &n, &e) != 0)
        return cli_fail("%s", e.msg);
    static const char *const names[] = {"name",     "created_at", "schema_version", "rows",
                                        "db_bytes", "bytes",      "duration_ms",    "verified_at",
                                        "verified", "problem"};
    struct store_result res;
    store_result_init(&res);
    store_result_set_columns(&res, sizeof names / sizeof names[0], names);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        list_row(&res, &all[i]);
        bad += all[i].problem[0] != '\0';
    }
    cli_write_result(&res, o->format);
    store_result_release(&res);
    free(all);
    return bad ? cli_fail("%zu manifest%s cannot be read (column problem above)", bad,
                          bad == 1 ? "" : "s")
               : 0;
}

static int verify_one(const struct config *cfg, const struct backup *b, bool quiet)
{
    struct cli_progress progress = {.what = "verify", .quiet = quiet};
    struct backup_result r;
    struct err e;
    int rc = backup_verify(cfg, b, cli_progress_step, &progress, &r, &e);
    cli_progress_end(&progress);
    if (rc == 0)
        printf("ok      %s  %lld rows  %lld bytes  verified in %.1f s\n", b->name,
               (long long)b->rows, (long long)b->bytes, (double)r.duration_ms / 1000.0);
    else
        printf("FAILED  %s  %s\n", b->name, e.msg);
    return rc;
}

static int verify(struct cli_common *c, const struct options *o)
{
    struct config cfg;
    int rc = cli_load_config(c, &cfg);
    if (rc)
        return rc;
    struct backup *all;
    size_t n;
    struct err e;
    if (backup_list(o->dir, &all, &n, &e) != 0)
        return cli_fail("%s", e.msg);
    int failed = 0, checked = 0;
    for (int i = 0; i < o->nnames; i++) {
        struct backup b;
        int found = backup_find(o->dir, o->names[i], &b, &e);
        if (found != 0 && found != E_CORRUPT) {
            fprintf(stderr, "opsdb: %s\n", e.msg);
            failed++;
            continue;
        }
        if (found == E_CORRUPT) { /* verify names what is wrong */
            snprintf(b.name, sizeof b.name, "%.63s", o->names[i]);
            snprintf(b.problem, sizeof b.problem, "%s", e.msg);
        }
        checked++;
        failed += verify_one(&cfg, &b, o->quiet) != 0;
    }
    for (size_t i = 0; o->nnames == 0 && i < n && (o->all || i == 0); i++) {
        checked++;
        failed += verify_one(&cfg, &all[i], o->quiet) != 0;
    }
    free(all);
    if (checked == 0 && failed == 0)
        return cli_fail("there is no backup in %s to verify", o->dir);
    if (failed)
        return cli_fail("%d backup%s failed verification", failed, failed == 1 ? "" : "s");
    printf("%d backup%s verified\n", checked, checked == 1 ? "" : "s");
    return 0;
}

static int prune(struct cli_common *c, const struct options *o)
{
    struct config cfg;
    int rc = cli_load_config(c, &cfg);
    if (rc)
        return rc;
    int64_t keep = o->keep ? o->keep : cfg.backup_keep, removed = 0;
    struct err e;
    if (backup_prune(o->dir, keep, &removed, &e) != 0)
        return cli_fail("%s", e.msg);
    printf("removed %lld backup%s; the newest %lld are kept\n", (long long)removed,
           removed == 1 ? "" : "s", (long long)keep);
    return 0;
}

static int check(struct cli_common *c)
{
    struct config cfg;
    int rc = cli_load_config(c, &cfg);
    if (rc)
        return rc;
    struct store *s;
    struct err e;
    rc = store_open(&s, &cfg, STORE_READONLY, &e);
    if (rc == 0) {
        struct buf report;
        buf_init(&report, 4096);
        rc = store_integrity_check(s, false, &report, &e);
        if (rc == E_CORRUPT && report.len)
            err_set(&e, E_CORRUPT, "integrity check: %.*s", (int)strcspn(report.data, "\n"),
                    report.data);
        buf_release(&report);
        store_close(&s);
    }
    if (rc == E_NOTFOUND)
        return cli_fail("%s", e.msg);
    if (rc)
        return cli_fail("the database %s is damaged or cannot be read: %s (to recover from the "
                        "latest backup see docs/disaster-recovery.md)",
                        cfg.db, e.msg);
    printf("the database %s is sound\n", cfg.db);
    return 0;
}

/* Parses argv into o; 0, or the exit status of a usage error. */
static int parse(const struct command *cmd, struct cli_common *c, int argc, char **argv,
                 struct options *o)
{
    for (int i = 1; i < argc; i++) {
        int k = cli_common_flag(c, argc, argv, &i);
        if (k < 0)
            return 2;
        if (k == 1)
            continue;
        const char *a = argv[i];
        if (strcmp(a, "--format") == 0) {
            if (i + 1 >= argc || (o->format = query_format_parse(argv[++i])) < 0)
                return cli_usage(cmd, "--format must be table, json or csv");
        } else if (strcmp(a, "--to") == 0 || strcmp(a, "--dir") == 0) {
            if (i + 1 >= argc || !argv[i + 1][0])
                return cli_usage(cmd, "%s needs a directory", a);
            o->dir = argv[++i];
        } else if (strcmp(a, "--keep") == 0) {
            char *end = NULL;
            o->keep = i + 1 < argc ? strtoll(argv[++i], &end, 10) : 0;
            if (!end || *end || o->keep < 1)
                return cli_usage(cmd, "--keep needs a number of backups, 1 or more");
        } else if (strcmp(a, "--all") == 0) {
            o->all = true;
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
        } else if (a[0] == '-') {
            return cli_usage(cmd, "unknown option '%s'", a);
        } else if (!o->action) {
            o->action = a;
        } else {
            o->names[o->nnames++] = argv[i];
        }
    }
    return 0;
}

static int usage_check(const struct command *cmd, const struct options *o)
{
    static const char *const actions[] = {"create", "list", "verify", "prune", "check"};
    bool known = false;
    for (size_t i = 0; o->action && i < sizeof actions / sizeof actions[0]; i++)
        known |= strcmp(o->action, actions[i]) == 0;
    if (!o->action)
        return cli_usage(cmd, "give an action: create, list, verify, prune or check");
    if (!known)
        return cli_usage(cmd, "unknown action '%s': create, list, verify, prune or check",
                         o->action);
    if (o->nnames && strcmp(o->action, "verify") != 0)
        return cli_usage(cmd, "%s takes no backup names", o->action);
    if (o->all && (o->nnames || strcmp(o->action, "verify") != 0))
        return cli_usage(cmd, "--all is for verify without names");
    if (o->keep && strcmp(o->action, "prune") != 0)
        return cli_usage(cmd, "--keep is for prune");
    return 0;
}

int cmd_backup(int argc, char **argv)
{
    const struct command *cmd = cli_command("backup");
    struct cli_common c = {0};
    struct options o = {.format = FORMAT_TABLE};
    o.names = calloc((size_t)argc + 1, sizeof *o.names);
    if (!o.names)
        return cli_fail("out of memory");
    int rc = parse(cmd, &c, argc, argv, &o);
    struct config cfg;
    if (rc == 0 && c.help)
        rc = -1;
    if (rc == 0)
        rc = usage_check(cmd, &o);
    if (rc == 0 && !o.dir && (rc = cli_load_config(&c, &cfg)) == 0)
        o.dir = cfg.backup_dir;
    if (rc == 0 && !o.dir[0])
        rc = cli_usage(cmd, "no backup directory: set backup.dir or give --to DIR");
    if (rc == 0) {
        if (strcmp(o.action, "create") == 0)
            rc = create(&c, &o);
        else if (strcmp(o.action, "list") == 0)
            rc = list(&o);
        else if (strcmp(o.action, "verify") == 0)
            rc = verify(&c, &o);
        else if (strcmp(o.action, "prune") == 0)
            rc = prune(&c, &o);
        else
            rc = check(&c);
    }
    free(o.names);
    return rc == -1 ? cli_help("backup") : rc;
}
