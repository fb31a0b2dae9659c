/*
 * Pruning a backup directory down to the newest backups, and clearing away what backups and
 * verifications that stopped halfway left behind.
 */
#include "backup/backup_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STALE_MS (3600 * 1000) /* longer than any step of a backup that is still running */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

/* What a backup or verification that stopped left: temporary files ('.opsdb-...', or a
 * manifest's '....json.tmp') and compressed files without a manifest, once not touched for an
 * hour. */
static bool leftover(const char *dir, const char *file)
{
    size_t plen = strlen(BACKUP_PREFIX);
    if (file[0] == '.')
        return strncmp(file + 1, BACKUP_PREFIX, plen) == 0;
    if (strncmp(file, BACKUP_PREFIX, plen) != 0)
        return false;
    if (ends_with(file, ".tmp"))
        return true;
    if (!ends_with(file, BACKUP_DATA_SUFFIX))
        return false;
    char manifest[4400];
    struct stat st;
    snprintf(manifest, sizeof manifest, "%s/%.*s%s", dir,
             (int)(strlen(file) - strlen(BACKUP_DATA_SUFFIX)), file, BACKUP_MANIFEST_SUFFIX);
    return stat(manifest, &st) != 0 && errno == ENOENT;
}

static int remove_leftovers(const char *dir, struct err *e)
{
    DIR *d = opendir(dir);
    if (!d)
        return err_set(e, E_IO, "backup directory %s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *ent;
    int64_t now_ms = time_now_ms();
    while (rc == 0 && (ent = readdir(d)) != NULL) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        struct stat st;
        if (!leftover(dir, ent->d_name) || stat(path, &st) != 0 ||
            now_ms - (int64_t)st.st_mtime * 1000 < STALE_MS)
            continue;
        if (unlink(path) != 0 && errno != ENOENT)
            rc = err_set(e, E_IO, "cannot remove %s: %s", path, strerror(errno));
    }
    closedir(d);
    return rc;
}

int backup_prune(const char *dir, int64_t keep, int64_t *removed, struct err *e)
{
    *removed = 0;
    if (keep < 1)
        return err_set(e, E_INVALID, "prune keeps at least 1 backup (asked to keep %lld)",
                       (long long)keep);
    struct backup *all;
    size_t n;
    int rc = backup_list(dir, &all, &n, e);
    if (rc)
        return rc;
    int64_t kept = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) { /* newest first */
        if (all[i].problem[0] || kept++ < keep)
            continue;
        /* the manifest first: a backup without one is no longer listed */
        if (unlink(all[i].manifest_path) != 0 || (unlink(all[i].data_path) != 0 && errno != ENOENT))
            rc = err_set(e, E_IO, "removing backup %s: %s", all[i].name, strerror(errno));
        else
            (*removed)++;
    }
    free(all);
    if (rc == 0)
        rc = remove_leftovers(dir, e);
    if (rc == 0 && *removed)
        rc = file_sync_dir(dir, e);
    return rc;
}
