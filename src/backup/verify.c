/*
 * Verifying a backup: restored into a temporary file beside it and checked whole against its
 * manifest — the sha256 of both files, the store's integrity check, the rows of every table —
 * and the time and result recorded in the manifest, so that `opsdb backup list` shows when
 * each backup was last known to restore.
 */
#include "backup/backup_int.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int backup_verify(const struct config *cfg, const struct backup *b, backup_progress progress,
                  void *arg, struct backup_result *out, struct err *e)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(out, 0, sizeof *out);
    if (b->problem[0])
        return err_set(e, E_CORRUPT, "%s", b->problem);
    char dir[4200], tmp[4400];
    file_dirname(b->manifest_path, dir, sizeof dir);
    snprintf(tmp, sizeof tmp, "%s/.%s.verify.tmp", dir, b->name);
    struct err ignored;
    store_file_remove(tmp, &ignored); /* what a verification that stopped left */
    int rc = copy_check(cfg, b, tmp, progress, arg, e);
    store_file_remove(tmp, &ignored);
    if (rc != 0 && rc != E_CORRUPT)
        return rc; /* not a verdict on the backup: nothing to record */
    struct backup recorded = *b;
    recorded.verified_at_ms = time_now_ms();
    recorded.verify_ok = rc == 0;
    snprintf(recorded.verify_error, sizeof recorded.verify_error, "%s", rc ? e->msg : "");
    struct err record;
    if (manifest_write(&recorded, &record) != 0 && rc == 0)
        return err_set(e, E_IO, "backup %s is sound, but the result could not be recorded: %s",
                       b->name, record.msg);
    snprintf(out->name, sizeof out->name, "%s", b->name);
    snprintf(out->path, sizeof out->path, "%s", b->data_path);
    out->rows = b->rows;
    out->db_bytes = b->db_bytes;
    out->bytes = b->bytes;
    out->duration_ms = backup_elapsed_ms(&t0);
    return rc;
}
