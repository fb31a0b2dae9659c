/*
 * Restoring a backup as a database: decompressed and checked whole in a temporary file beside
 * the target, then put in place with rename(2), the database it replaces kept aside under a
 * timestamped name. The target path is at every moment either the old database or the
 * restored one, whole; a crash leaves at most a temporary file.
 *
 * A database is "live" when a process has it open (a running `opsdb serve`, or any other
 * client): the store tells (store_file_in_use). A live database is never replaced — the server
 * would go on writing into the file set aside — so the server is stopped first. A database
 * that is there but not open is replaced only when the caller forces it.
 */
#include "backup/backup_int.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* May db_path be replaced? 0, or E_INVALID saying why not. *exists: a database is there. */
static int may_replace(const char *db_path, bool force, bool *exists, struct err *e)
{
    long pid = 0;
    int rc = store_file_in_use(db_path, &pid, e);
    if (rc)
        return rc;
    if (pid)
        return err_set(e, E_INVALID,
                       "the database %s is live: process %ld has it open (a running opsdb "
                       "serve?); stop it, then restore",
                       db_path, pid);
    struct stat st;
    *exists = stat(db_path, &st) == 0;
    if (*exists && !S_ISREG(st.st_mode))
        return err_set(e, E_INVALID, "%s is not a database file", db_path);
    if (*exists && !force)
        return err_set(e, E_INVALID,
                       "a database is at %s: restoring over it needs --force (it is then kept "
                       "aside as %s.before-restore-<time>)",
                       db_path, db_path);
    return 0;
}

/* Puts the checked copy tmp in place of db_path, keeping the database there aside. */
static int put_in_place(const char *tmp, const char *db_path, bool exists,
                        struct backup_result *out, struct err *e)
{
    char dir[4200];
    file_dirname(db_path, dir, sizeof dir);
    if (exists) {
        char when[32];
        backup_format_time(time_now_ms(), false, when);
        snprintf(out->aside, sizeof out->aside, "%s.before-restore-%s", db_path, when);
        int rc = store_file_set_aside(db_path, out->aside, e);
        if (rc) {
            out->aside[0] = '\0';
            return rc;
        }
    }
    if (rename(tmp, db_path) != 0)
        return err_set(e, E_IO, "renaming %s to %s: %s%s%s", tmp, db_path, strerror(errno),
                       exists ? "; the database before is kept as " : "", out->aside);
    return file_sync_dir(dir, e);
}

int backup_restore(const struct config *cfg, const struct backup *b, const char *db_path,
                   bool force, backup_progress progress, void *arg, struct backup_result *out,
                   struct err *e)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(out, 0, sizeof *out);
    bool exists = false;
    int rc = may_replace(db_path, force, &exists, e); /* before the long work, and after it */
    char dir[4200], tmp[4400];
    file_dirname(db_path, dir, sizeof dir);
    const char *base = strrchr(db_path, '/') ? strrchr(db_path, '/') + 1 : db_path;
    snprintf(tmp, sizeof tmp, "%s/.%s.restore.tmp", dir, base);
    if (rc == 0)
        rc = file_mkdirs(dir, e);
    struct err ignored;
    if (rc)
        return rc;
    store_file_remove(tmp, &ignored); /* what a restore that stopped left */
    rc = copy_check(cfg, b, tmp, progress, arg, e);
    if (rc == 0)
        rc = may_replace(db_path, force, &exists, e);
    if (rc == 0)
        rc = put_in_place(tmp, db_path, exists, out, e);
    if (rc) {
        store_file_remove(tmp, &ignored);
        return rc;
    }
    snprintf(out->name, sizeof out->name, "%s", b->name);
    snprintf(out->path, sizeof out->path, "%s", db_path);
    out->rows = b->rows;
    out->db_bytes = b->db_bytes;
    out->bytes = b->bytes;
    out->duration_ms = backup_elapsed_ms(&t0);
    return 0;
}
