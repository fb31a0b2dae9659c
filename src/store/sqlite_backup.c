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
 * self-contained file, without a WAL to carry along.
 */
#include "store/sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

static int copy_progress_handler(void *arg)
{
    struct copy_progress *p = arg;
    struct stat st;
    if (p->fn && stat(p->path, &st) == 0)
        p->fn(p->arg, (int64_t)st.st_size, p->total_bytes);
    return 0;
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
        rc = err_set(e, (src & 0xff) == SQLITE_CORRUPT ? E_CORRUPT : E_STORE,
                     "backup: copying %s to %s: %s", s->cfg.db, path, sqlite3_errmsg(c.db));
    sqlite3_finalize(q);
    sqlite_conn_close(&c);
    if (rc == 0)
        copy_progress_handler(&p);
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
