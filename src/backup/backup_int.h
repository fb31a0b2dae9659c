/*
 * Private to backup/: the manifest, the compressed stream, and checking a database copy — what
 * create, verify and restore share.
 */
#ifndef OPSDB_BACKUP_INT_H
#define OPSDB_BACKUP_INT_H

#include "backup/backup.h"

#include <time.h>

#define BACKUP_FORMAT "opsdb-backup-1"
#define BACKUP_PREFIX "opsdb-"
#define BACKUP_DATA_SUFFIX ".db.zst"
#define BACKUP_MANIFEST_SUFFIX ".json"

/* Reads the manifest at path into b (its data path: the file it names, beside it). E_CORRUPT
 * says what is wrong with it, E_NOTFOUND when there is none. */
int manifest_read(const char *path, struct backup *b, struct err *e);
/* Writes b's manifest to b->manifest_path atomically (temp file, fsync, rename, directory). */
int manifest_write(const struct backup *b, struct err *e);

/* What a pass over a compressed backup saw. */
struct stream_stats {
    int64_t bytes_in, bytes_out;
    char sha_in[65], sha_out[65]; /* hex sha256 of what was read and of what was written */
};
/* Compresses the file src into dst (created; must not exist), fsynced; or decompresses it.
 * Hashes both sides. progress gets step with the bytes read of src's size. E_IO for the files,
 * E_CORRUPT for input that does not decompress (the message says why), E_NOMEM. dst is
 * removed on failure. */
int stream_compress(const char *src, const char *dst, backup_progress progress, void *arg,
                    struct stream_stats *st, struct err *e);
int stream_decompress(const char *src, const char *dst, backup_progress progress, void *arg,
                      struct stream_stats *st, struct err *e);

/* Opens the database copy at path read-only with cfg, runs the integrity check when asked,
 * and fills b's schema_version, tables and rows by counting each table's rows through the
 * store's read path. E_CORRUPT when the check fails, else the store's errors. */
int copy_inspect(const struct config *cfg, const char *path, bool integrity,
                 backup_progress progress, void *arg, struct backup *b, struct err *e);

/* Decompresses b into tmp_path and checks it against the manifest: sizes, sha256 of both
 * files, the integrity check, schema version and row counts. E_CORRUPT says what differs;
 * tmp_path is left for the caller (who removes it with store_file_remove()). */
int copy_check(const struct config *cfg, const struct backup *b, const char *tmp_path,
               backup_progress progress, void *arg, struct err *e);

/* Milliseconds since t0 (CLOCK_MONOTONIC). */
int64_t backup_elapsed_ms(const struct timespec *t0);
/* "20260102T030405.123Z" (with_ms) or "20260102T030405Z" of ms. */
void backup_format_time(int64_t ms, bool with_ms, char out[32]);

#endif
