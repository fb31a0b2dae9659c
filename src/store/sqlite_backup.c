/*
 * What a backup needs of the SQLite back end: a consistent copy of a live database and the
 * database's files on disk (the main file, its write-ahead log and
 * the shared-memory index beside it) — whether a process has them open, putting them aside,
 * removing them.
 *
 * The copy is VACUUM INTO on a read-only connection of its own. In WAL mode a reader never
 * blocks the writer: the copy reads one snapshot (every transaction committed before it began,
 * nothing after) while group commits go on into the WAL, which only grows for as long as the
 * copy runs (checkpoints cannot pass the snapshot). The online backup API was the other
 * choice: in steps it starts over whenever another connection commits, so under steady
 * ingestion it would never finish, and in one step it holds the same snapshot as VACUUM INTO
 * but copies free pages too. VACUUM INTO writes a compact file in rollback-journal mode: one
 * self-contained file, without a WAL to carry along. The same copy, renamed over the database,
 * is the full vacuum (the end of this file).
 */
#include "store/sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The shared-memory index's "dead man switch" byte: every connection to a WAL database holds a
 * read lock on it for as long as it is open (SQLite's os_unix.c, UNIX_SHM_DMS). */
#define SHM_DMS_OFFSET 128

struct copy_progress {
    const char *path;
    int64_t total_bytes;
    store_backup_progress fn;
    void *arg;
};

/* SQLite's progress handler: non-zero interrupts the statement (SQLITE_INTERRUPT). */
static int copy_progress_handler(void *arg)
{
    struct copy_progress *p = arg;
    struct stat st;
    if (p->fn && stat(p->path, &st) == 0)
        return p->fn(p->arg, (int64_t)st.st_size, p->total_bytes);
    return 0;
}

/* The error of a copy (VACUUM INTO) that failed with src. */
static int copy_error(sqlite3 *db, int src, const char *what, const char *from, const char *to,
                      struct err *e)
{
    if ((src & 0xff) == SQLITE_INTERRUPT)
        return err_set(e, E_CANCELLED, "%s: copying %s to %s was cancelled", what, from, to);
    return err_set(e, (src & 0xff) == SQLITE_CORRUPT ? E_CORRUPT : E_STORE,
                   "%s: copying %s to %s: %s", what, from, to, sqlite3_errmsg(db));
}

int sqlite_backup_to(struct store *s, const char *path, store_backup_progress progress, void *arg,
                     struct err *e)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        return err_set(e, E_INVALID, "backup: %s exists already", path);
    struct sqlite_conn c;
    int rc = sqlite_conn_open(&c, s->cfg.db, SQLITE_OPEN_READONLY, &s->cfg, e);
    if (rc)
        return rc;
    struct copy_progress p = {path, store_size_bytes(s), progress, arg};
    sqlite3_progress_handler(c.db, 100000, copy_progress_handler, &p);
    sqlite3_stmt *q = NULL;
    int src = sqlite3_prepare_v2(c.db, "VACUUM INTO ?1", -1, &q, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_bind_text(q, 1, path, -1, SQLITE_TRANSIENT);
    if (src == SQLITE_OK && (src = sqlite3_step(q)) == SQLITE_DONE)
        src = SQLITE_OK;
    if (src != SQLITE_OK)
        rc = copy_error(c.db, src, "backup", s->cfg.db, path, e);
    sqlite3_finalize(q);
    sqlite_conn_close(&c);
    if (rc == 0 && copy_progress_handler(&p) != 0)
        rc = err_set(e, E_CANCELLED, "backup: cancelled");
    return rc;
}

static void side_path(char *out, size_t size, const char *path, const char *suffix)
{
    snprintf(out, size, "%s%s", path, suffix);
}

int sqlite_file_in_use(const char *path, long *pid, struct err *e)
{
    char shm[4200];
    *pid = 0;
    side_path(shm, sizeof shm, path, "-shm");
    int fd = open(shm, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : err_set(e, E_IO, "cannot open %s: %s", shm, strerror(errno));
    struct flock lk = {
        .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SHM_DMS_OFFSET, .l_len = 1};
    int rc = 0;
    if (fcntl(fd, F_GETLK, &lk) != 0)
        rc = err_set(e, E_IO, "cannot read the locks of %s: %s", shm, strerror(errno));
    else if (lk.l_type != F_UNLCK)
        *pid = lk.l_pid > 0 ? (long)lk.l_pid : -1;
    close(fd);
    return rc;
}

/* Gives path's file the name to as well (a hard link, or a copy-free rename when the file
 * system has no links); a missing file is not an error when optional. */
static int add_name(const char *path, const char *to, bool optional, struct err *e)
{
    if (link(path, to) == 0)
        return 0;
    if (errno == ENOENT && optional)
        return 0;
    if ((errno == EPERM || errno == ENOTSUP || errno == EXDEV) && rename(path, to) == 0)
        return 0;
    return err_set(e, E_IO, "cannot keep %s as %s: %s", path, to, strerror(errno));
}

/* The files beside a database that belong to it: its write-ahead log, the log's
 * shared-memory index, a rollback journal. */
static const char *const side_files[] = {"-wal", "-shm", "-journal"};

static int remove_side(const char *path, const char *suffix, struct err *e)
{
    char side[4200];
    side_path(side, sizeof side, path, suffix);
    if (unlink(side) == 0 || errno == ENOENT)
        return 0;
    return err_set(e, E_IO, "cannot remove %s: %s", side, strerror(errno));
}

static int remove_sides(const char *path, struct err *e)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof side_files / sizeof side_files[0]; i++)
        rc = remove_side(path, side_files[i], e);
    return rc;
}

int sqlite_file_set_aside(const char *path, const char *aside, struct err *e)
{
    char wal[4200], aside_wal[4200];
    side_path(wal, sizeof wal, path, "-wal");
    side_path(aside_wal, sizeof aside_wal, aside, "-wal");
    struct stat st;
    if (lstat(aside, &st) == 0 || lstat(aside_wal, &st) == 0)
        return err_set(e, E_INVALID, "cannot set %s aside as %s: that name is taken", path, aside);
    /* the log first: from the moment aside exists it opens as the whole database */
    int rc = add_name(wal, aside_wal, true, e);
    if (rc == 0)
        rc = add_name(path, aside, false, e);
    return rc == 0 ? remove_sides(path, e) : rc;
}

int sqlite_file_remove(const char *path, struct err *e)
{
    int rc = remove_sides(path, e);
    return rc == 0 ? remove_side(path, "", e) : rc;
}

/* ---- a full vacuum ----------------------------------------------------------------------------
 * VACUUM INTO a file beside the database, with auto_vacuum=incremental asked for first (the
 * copy takes it: SQLite can only turn it on in a new file or by a vacuum), then that file
 * renamed over the database. Until the rename the database is as it was; the copy needs about
 * the data's size in the same file system, and the rename needs no more. An in-place VACUUM
 * would need twice the data's size (a temporary copy, then every page again in the WAL). */

#define VACUUM_SUFFIX ".vacuum-tmp"
#define VACUUM_MARGIN_BYTES (16 << 20) /* kept free beyond the copy's size */

static int64_t file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

static int refuse_live(const char *path, struct err *e)
{
    long pid = 0;
    int rc = sqlite_file_in_use(path, &pid, e);
    if (rc == 0 && pid)
        rc = err_set(e, E_CONFLICT,
                     "the database %s is live: process %ld has it open (a running opsdb serve?); "
                     "stop it first (a server runs its own optimize job: opsdb jobs run "
                     "optimize)",
                     path, pid);
    return rc;
}

/* Opens the database for a vacuum and measures it into st. */
static int vacuum_open(const struct config *cfg, struct sqlite_conn *c,
                       struct store_vacuum_stats *st, struct err *e)
{
    struct stat sb;
    if (stat(cfg->db, &sb) != 0)
        return err_set(e, E_NOTFOUND, "database %s does not exist", cfg->db);
    int rc = sqlite_conn_open(c, cfg->db, SQLITE_OPEN_READWRITE, cfg, e);
    if (rc)
        return rc;
    char wal[4200];
    side_path(wal, sizeof wal, cfg->db, "-wal");
    int64_t page = sqlite_pragma_int(c->db, "PRAGMA page_size");
    int64_t pages = sqlite_pragma_int(c->db, "PRAGMA page_count");
    int64_t free_pages = sqlite_pragma_int(c->db, "PRAGMA freelist_count");
    int64_t mode = sqlite_pragma_int(c->db, "PRAGMA auto_vacuum");
    if (page < 0 || pages < 0 || free_pages < 0 || mode < 0) {
        rc = err_set(e, E_STORE, "reading %s: %s", cfg->db, sqlite3_errmsg(c->db));
        sqlite_conn_close(c);
        return rc;
    }
    st->bytes_before = (int64_t)sb.st_size + file_bytes(wal);
    st->bytes_needed = (pages - free_pages) * page;
    st->shrinks_before = mode == 2;
    char dir[4200];
    file_dirname(cfg->db, dir, sizeof dir);
    struct statvfs fs;
    st->bytes_available =
        statvfs(dir, &fs) == 0 ? (int64_t)fs.f_bavail * (int64_t)fs.f_frsize : INT64_MAX;
    return 0;
}

int sqlite_file_vacuum_plan(const struct config *cfg, struct store_vacuum_stats *stats,
                            struct err *e)
{
    struct sqlite_conn c;
    int rc = vacuum_open(cfg, &c, stats, e);
    if (rc == 0)
        sqlite_conn_close(&c);
    return rc;
}

/* The copy: VACUUM INTO tmp on c, asking for auto_vacuum=incremental. */
static int vacuum_into(struct sqlite_conn *c, const char *tmp, struct copy_progress *p,
                       struct err *e)
{
    sqlite3_progress_handler(c->db, 100000, copy_progress_handler, p);
    int rc = sqlite_exec(c->db, "PRAGMA auto_vacuum=INCREMENTAL", e);
    sqlite3_stmt *q = NULL;
    int src = rc ? SQLITE_OK : sqlite3_prepare_v2(c->db, "VACUUM INTO ?1", -1, &q, NULL);
    if (rc == 0 && src == SQLITE_OK)
        src = sqlite3_bind_text(q, 1, tmp, -1, SQLITE_TRANSIENT);
    if (rc == 0 && src == SQLITE_OK && (src = sqlite3_step(q)) == SQLITE_DONE)
        src = SQLITE_OK;
    if (rc == 0 && src != SQLITE_OK)
        rc = copy_error(c->db, src, "vacuum", sqlite3_db_filename(c->db, "main"), tmp, e);
    sqlite3_finalize(q);
    return rc;
}

/* Puts the finished copy tmp in place of path, whose connections are all closed. */
static int vacuum_swap(const char *path, const char *tmp, struct err *e)
{
    char wal[4200], dir[4200];
    side_path(wal, sizeof wal, path, "-wal");
    if (file_bytes(wal) > 0) /* the last close moves the log into the file and removes it */
        return err_set(e, E_STORE,
                       "vacuum: the write-ahead log %s could not be moved into the database; "
                       "nothing was replaced",
                       wal);
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int rc = err_set(e, E_IO, "vacuum: syncing %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    int rc = refuse_live(path, e); /* a server may have opened it since the copy began */
    if (rc)
        return rc;
    if (rename(tmp, path) != 0)
        return err_set(e, E_IO, "vacuum: renaming %s to %s: %s", tmp, path, strerror(errno));
    file_dirname(path, dir, sizeof dir);
    if ((rc = file_sync_dir(dir, e)) != 0)
        return rc;
    return remove_sides(path, e); /* an empty log and its index, of the old file */
}

int sqlite_file_vacuum(const struct config *cfg, store_backup_progress progress, void *arg,
                       struct store_vacuum_stats *stats, struct err *e)
{
    const char *path = cfg->db;
    char tmp[4200];
    side_path(tmp, sizeof tmp, path, VACUUM_SUFFIX);
    struct sqlite_conn c = {0};
    int rc = refuse_live(path, e);
    if (rc == 0)
        rc = vacuum_open(cfg, &c, stats, e);
    if (rc)
        return rc;
    if (stats->bytes_available < stats->bytes_needed + VACUUM_MARGIN_BYTES)
        rc = err_set(e, E_LIMIT,
                     "vacuum: the copy of %s needs about %lld MB free beside it, and %lld MB "
                     "are free: make room, then run it again",
                     path, (long long)((stats->bytes_needed + VACUUM_MARGIN_BYTES) >> 20),
                     (long long)(stats->bytes_available >> 20));
    if (rc == 0)
        rc = sqlite_file_remove(tmp, e); /* left by a vacuum that stopped */
    struct copy_progress p = {tmp, stats->bytes_needed, progress, arg};
    if (rc == 0)
        rc = vacuum_into(&c, tmp, &p, e);
    sqlite_conn_close(&c);
    if (rc == 0 && copy_progress_handler(&p) != 0)
        rc = err_set(e, E_CANCELLED, "vacuum: cancelled");
    if (rc == 0)
        rc = vacuum_swap(path, tmp, e);
    if (rc) {
        struct err ignored;
        sqlite_file_remove(tmp, &ignored);
        return rc;
    }
    stats->bytes_after = file_bytes(path);
    return 0;
}
