/*
 * backup: whole-database backups — taken online while ingestion goes on, compressed with zstd,
 * described by a manifest, then listed, verified, pruned and restored. The same functions serve
 * the command line (`opsdb backup`, `opsdb restore`) and a running server's scheduled backup
 * and verify jobs: nothing here prints, and each long step reports progress to a callback.
 *
 * A backup in a directory is two files, named after the UTC time it began:
 *
 *   <dir>/opsdb-20260102T030405.123Z.db.zst   the database copy, zstd-compressed
 *   <dir>/opsdb-20260102T030405.123Z.json     its manifest (format "opsdb-backup-1")
 *
 * Files are written under temporary names that begin with '.' and renamed into place, the
 * manifest last, each synced with its directory: a backup is listed only once it is whole.
 * Only the store knows the back end: a copy is made, checked and counted through store.h.
 */
#ifndef OPSDB_BACKUP_H
#define OPSDB_BACKUP_H

#include "core/core.h"

struct store;

#define BACKUP_MAX_TABLES 16

/* One backup, as its manifest describes it. */
struct backup {
    char name[64]; /* opsdb-<UTC time>, the files' common name */
    char data_path[4200], manifest_path[4200];
    int64_t created_at_ms; /* when the copy's snapshot was taken */
    int64_t duration_ms;   /* how long taking the backup took */
    int schema_version;
    char source[600]; /* the database it is a copy of (store_describe) */
    size_t ntables;
    struct {
        char name[48];
        int64_t rows;
    } tables[BACKUP_MAX_TABLES];
    int64_t rows;           /* of all tables */
    int64_t db_bytes;       /* the database copy, uncompressed */
    int64_t bytes;          /* the compressed file */
    char sha256[65];        /* of the compressed file, hex */
    char db_sha256[65];     /* of the database copy, hex */
    int64_t verified_at_ms; /* the last verification (0: never verified) */
    bool verify_ok;         /* its result */
    char verify_error[512]; /* why it failed */
    char problem[512];      /* "" or why the manifest cannot be read: then only name and
                               manifest_path are set */
};

/* What one create, verify or restore did: for the command's output, and for a job run to
 * record. */
struct backup_result {
    char name[64];
    char path[4200];         /* create and verify: the compressed file; restore: the database */
    char aside[4300];        /* restore: where the database it replaced was kept ("" when none) */
    int64_t rows;            /* of all tables */
    int64_t db_bytes, bytes; /* uncompressed and compressed */
    int64_t duration_ms;
};

/* Told how far a long step is: step is "copying", "counting", "compressing",
 * "decompressing" or "checking"; done and total in bytes (counting: tables). Called from the
 * thread doing the work. Returns 0 to go on; anything else stops the work, which then fails
 * with E_CANCELLED as it fails on any error (a backup, for one, leaves nothing behind). */
typedef int (*backup_progress)(void *arg, const char *step, int64_t done, int64_t total);

/* Takes a backup of s into dir (created when missing): a consistent copy (store_backup_to:
 * ingestion goes on), its rows counted per table through the store's read path, compressed,
 * then the manifest. cfg is the configuration s was opened with (the copy is opened with it).
 * progress may be NULL. Fills *out. Works on the store of a running server and on one the CLI
 * opened (STORE_READONLY is enough). Nothing half-written stays listed: on failure every file
 * of this backup is removed. E_IO for the directory and files, E_STORE/E_CORRUPT when the
 * database cannot be copied, E_NOMEM. */
int backup_create(struct store *s, const struct config *cfg, const char *dir,
                  backup_progress progress, void *arg, struct backup_result *out, struct err *e);

/* The backups in dir, newest first, those whose manifest cannot be read included (with a
 * problem, sorted last); *out is malloc'd (free() it). E_NOTFOUND when dir does not exist,
 * E_IO when it cannot be read. */
int backup_list(const char *dir, struct backup **out, size_t *n, struct err *e);

/* The backup named by which: "latest" (the newest readable one in dir), a name from
 * backup_list(), or the path of a manifest (.json) or of a compressed file (.db.zst, whose
 * manifest lies beside it). E_NOTFOUND when there is none, E_CORRUPT when its manifest cannot
 * be read. */
int backup_find(const char *dir, const char *which, struct backup *out, struct err *e);

/* Verifies b: decompresses it into a temporary file beside it, compares size and both sha256
 * with the manifest, runs the store's integrity check on the copy and counts its rows per
 * table against the manifest; then records the time and the result in the manifest (replaced
 * atomically). cfg: the configuration to open the copy with. 0 when the backup is sound;
 * E_CORRUPT says what is wrong (and is recorded); E_IO, E_NOMEM, E_INVALID for a backup of
 * another schema version than this opsdb's. */
int backup_verify(const struct config *cfg, const struct backup *b, backup_progress progress,
                  void *arg, struct backup_result *out, struct err *e);

/* Removes the oldest backups of dir so that the keep newest readable ones stay (manifest
 * first, so a backup being removed is no longer listed), and temporary files of backups that
 * stopped over an hour ago. *removed: backups removed. Backups whose manifest cannot be read
 * are left for a person to look at. E_INVALID for keep < 1, E_NOTFOUND for a missing dir,
 * E_IO. */
int backup_prune(const char *dir, int64_t keep, int64_t *removed, struct err *e);

/* Restores b as the database at db_path: decompresses and verifies it (as backup_verify,
 * without recording) into a temporary file beside db_path, then, when a database is there,
 * keeps it aside as <db_path>.before-restore-<UTC time> (with its write-ahead log), and
 * renames the restored file into place: db_path is at every moment the old database or the
 * new one, whole. A database at db_path is replaced only with force (E_INVALID without), and
 * never while a process (a running server) has it open (E_INVALID naming the process). cfg:
 * the configuration to open the copy with. The directory of db_path is created when missing.
 * E_CORRUPT for a damaged backup (nothing changed), E_IO. */
int backup_restore(const struct config *cfg, const struct backup *b, const char *db_path,
                   bool force, backup_progress progress, void *arg, struct backup_result *out,
                   struct err *e);

/* ---- the server's builtin jobs (jobs.c) -------------------------------------------------- */

struct jobs_builtin;

/* What the backup jobs work on; owned by the caller (a server), outliving its jobs engine. */
struct backup_jobs {
    struct store *store;
    const struct config *cfg; /* backup.dir, backup.keep, backup.schedule, verify_schedule */
};
/* Fills out (room for max, 2 is enough) with the builtin jobs "backup" (backup_create into
 * backup.dir on backup.schedule, then backup_prune to backup.keep) and "backup_verify"
 * (backup_verify of the newest on backup.verify_schedule); returns how many. */
size_t backup_jobs(struct backup_jobs *b, struct jobs_builtin *out, size_t max);

#endif
