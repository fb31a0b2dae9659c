/*
 * Taking a backup: a consistent copy of the live database (the store makes it without
 * stopping the writer), its rows counted, compressed into the backup directory, and the
 * manifest written last. Every file goes in under a temporary name that begins with '.' and is
 * renamed into place once synced, so that a backup that stopped halfway is never listed.
 */
#include "backup/backup_int.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct relay {
    backup_progress fn;
    void *arg;
};

static int copy_progress(void *arg, int64_t done, int64_t total)
{
    struct relay *r = arg;
    return r->fn ? r->fn(r->arg, "copying", done, total) : 0;
}

/* The backup's name and file paths, from the time it begins; E_INVALID when taken. */
static int name_backup(const char *dir, int64_t now_ms, struct backup *b, char raw[4200],
                       char zst_tmp[4200], struct err *e)
{
    char when[32];
    backup_format_time(now_ms, true, when);
    snprintf(b->name, sizeof b->name, "%s%s", BACKUP_PREFIX, when);
    snprintf(b->data_path, sizeof b->data_path, "%s/%s%s", dir, b->name, BACKUP_DATA_SUFFIX);
    snprintf(b->manifest_path, sizeof b->manifest_path, "%s/%s%s", dir, b->name,
             BACKUP_MANIFEST_SUFFIX);
    snprintf(raw, 4200, "%s/.%s.db.tmp", dir, b->name);
    snprintf(zst_tmp, 4200, "%s/.%s%s.tmp", dir, b->name, BACKUP_DATA_SUFFIX);
    struct stat st;
    if (strlen(b->manifest_path) >= 4000)
        return err_set(e, E_IO, "the backup directory's path %s is too long", dir);
    if (stat(b->manifest_path, &st) == 0 || stat(b->data_path, &st) == 0)
        return err_set(e, E_INVALID, "a backup named %s is in %s already", b->name, dir);
    return 0;
}

int backup_create(struct store *s, const struct config *cfg, const char *dir,
                  backup_progress progress, void *arg, struct backup_result *out, struct err *e)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(out, 0, sizeof *out);
    struct backup b;
    memset(&b, 0, sizeof b);
    char raw[4200], zst_tmp[4200];
    int rc = file_mkdirs(dir, e);
    b.created_at_ms = time_now_ms();
    if (rc == 0)
        rc = name_backup(dir, b.created_at_ms, &b, raw, zst_tmp, e);
    if (rc)
        return rc;
    snprintf(b.source, sizeof b.source, "%s", store_describe(s));
    struct relay relay = {progress, arg};
    struct stream_stats st;
    rc = store_backup_to(s, raw, copy_progress, &relay, e);
    if (rc == 0)
        rc = copy_inspect(cfg, raw, false, progress, arg, &b, e);
    if (rc == 0)
        rc = stream_compress(raw, zst_tmp, progress, arg, &st, e);
    struct err ignored;
    store_file_remove(raw, &ignored);
    if (rc == 0 && rename(zst_tmp, b.data_path) != 0)
        rc = err_set(e, E_IO, "renaming %s: %s", zst_tmp, strerror(errno));
    if (rc == 0) {
        b.db_bytes = st.bytes_in;
        b.bytes = st.bytes_out;
        snprintf(b.db_sha256, sizeof b.db_sha256, "%s", st.sha_in);
        snprintf(b.sha256, sizeof b.sha256, "%s", st.sha_out);
        b.duration_ms = backup_elapsed_ms(&t0);
        rc = manifest_write(&b, e); /* syncs the directory, with the data file's rename */
    }
    if (rc) { /* nothing of it stays */
        unlink(zst_tmp);
        unlink(b.data_path);
        return rc;
    }
    snprintf(out->name, sizeof out->name, "%s", b.name);
    snprintf(out->path, sizeof out->path, "%s", b.data_path);
    out->rows = b.rows;
    out->db_bytes = b.db_bytes;
    out->bytes = b.bytes;
    out->duration_ms = b.duration_ms;
    return 0;
}
