/*
 * The backup and verify builtin jobs of a server (backup.h): on backup.schedule a backup into
 * backup.dir, then the oldest pruned to backup.keep; on backup.verify_schedule the newest backup
 * verified (decompressed, checked, counted) and the result recorded in its manifest. A cancel
 * stops either at its next progress report (between steps, every 64 MiB, or during the copy).
 */
#include "backup/backup.h"
#include "jobs/jobs.h"

#include <stdio.h>

static void put_bytes(struct buf *out, int64_t n)
{
    if (n >= 10 << 20)
        buf_printf(out, "%.1f MB", (double)n / 1e6);
    else
        buf_printf(out, "%lld bytes", (long long)n);
}

/* The runs' progress: a cancelled run stops at the next report (every step, every 64 MiB). */
static int stop_when_cancelled(void *arg, const char *step, int64_t done, int64_t total)
{
    (void)step, (void)done, (void)total;
    return atomic_load((const atomic_bool *)arg) ? 1 : 0;
}

static int run_backup(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    struct backup_jobs *b = arg;
    struct backup_result r;
    int rc = backup_create(b->store, b->cfg, b->cfg->backup_dir, stop_when_cancelled,
                           (void *)cancel, &r, e);
    if (rc)
        return rc;
    buf_printf(out, "%s: %lld rows, ", r.name, (long long)r.rows);
    put_bytes(out, r.db_bytes);
    buf_printf(out, " compressed to ");
    put_bytes(out, r.bytes);
    buf_printf(out, " in %.1f s (%s)", (double)r.duration_ms / 1000, r.path);
    int64_t removed = 0;
    if (atomic_load(cancel)) /* the backup is whole: only the pruning is left undone */
        return err_set(e, E_CANCELLED, "cancelled before older backups were pruned");
    rc = backup_prune(b->cfg->backup_dir, b->cfg->backup_keep, &removed, e);
    if (rc == 0 && removed)
        buf_printf(out, "; %lld older backup%s removed (backup.keep %lld)", (long long)removed,
                   removed == 1 ? "" : "s", (long long)b->cfg->backup_keep);
    return rc;
}

static int run_verify(void *arg, const atomic_bool *cancel, struct buf *out, struct err *e)
{
    struct backup_jobs *b = arg;
    struct backup latest;
    int rc = backup_find(b->cfg->backup_dir, "latest", &latest, e);
    if (rc)
        return rc;
    struct backup_result r;
    rc = backup_verify(b->cfg, &latest, stop_when_cancelled, (void *)cancel, &r, e);
    if (rc == 0)
        buf_printf(out, "%s is sound: %lld rows as its manifest says, verified in %.1f s",
                   latest.name, (long long)r.rows, (double)r.duration_ms / 1000);
    return rc;
}

size_t backup_jobs(struct backup_jobs *b, struct jobs_builtin *out, size_t max)
{
    size_t n = 0;
    if (n < max)
        out[n++] = (struct jobs_builtin){"backup",
                                         "a backup into backup.dir, then the oldest past "
                                         "backup.keep removed",
                                         b->cfg->backup_schedule,
                                         0,
                                         run_backup,
                                         b};
    if (n < max)
        out[n++] = (struct jobs_builtin){"backup_verify",
                                         "the newest backup decompressed, checked and counted "
                                         "against its manifest",
                                         b->cfg->backup_verify_schedule,
                                         0,
                                         run_verify,
                                         b};
    return n;
}
