/*
 * The spool: batches the server has not acknowledged yet, one file each, in a directory that
 * survives a restart. A file appears whole or not at all (written to a temporary name, fsynced,
 * renamed, directory fsynced), so a crash leaves only whole batches and temporaries, which
 * spool_open removes. File names carry the order, the table and the row count, so the spool is
 * taken up again by listing the directory, without reading any batch.
 */
#include "agent/agent_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static void entry_path(const struct spool *sp, const struct spool_entry *x, char *out, size_t size)
{
    snprintf(out, size, "%s/%020" PRIu64 ".%s.%" PRIu64 ".ndjson", sp->dir, x->seq, x->table,
             x->rows);
}

static int push(struct spool *sp, const struct spool_entry *x)
{
    if (sp->n == sp->cap) {
        size_t cap = sp->cap ? sp->cap * 2 : 64;
        struct spool_entry *more = realloc(sp->items, cap * sizeof *more);
        if (!more)
            return E_NOMEM;
        sp->items = more;
        sp->cap = cap;
    }
    sp->items[sp->n++] = *x;
    sp->bytes += x->bytes;
    if (x->seq >= sp->next_seq)
        sp->next_seq = x->seq + 1;
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    const struct spool_entry *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A batch file's entry from its name; false for anything else. */
static bool parse_name(const char *name, struct spool_entry *x)
{
    int end = 0;
    memset(x, 0, sizeof *x);
    if (sscanf(name, "%20" SCNu64 ".%63[a-z_].%" SCNu64 ".ndjson%n", &x->seq, x->table, &x->rows,
               &end) != 3)
        return false;
    return name[end] == '\0';
}

static int load(struct spool *sp, struct err *e)
{
    DIR *d = opendir(sp->dir);
    if (!d)
        return err_set(e, E_IO, "cannot list the spool %s: %s", sp->dir, strerror(errno));
    int rc = 0;
    for (struct dirent *de; rc == 0 && (de = readdir(d)) != NULL;) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", sp->dir, de->d_name);
        size_t len = strlen(de->d_name);
        struct spool_entry x;
        struct stat st;
        if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0)
            unlink(path); /* a write a crash cut short: never acknowledged as spooled */
        else if (parse_name(de->d_name, &x) && stat(path, &st) == 0) {
            x.bytes = (uint64_t)st.st_size;
            rc = push(sp, &x) == 0 ? 0 : err_set(e, E_NOMEM, "out of memory");
        }
    }
    closedir(d);
    if (sp->n)
        qsort(sp->items, sp->n, sizeof *sp->items, by_seq);
    return rc;
}

int spool_open(struct spool *sp, const char *dir, uint64_t max_bytes, struct err *e)
{
    memset(sp, 0, sizeof *sp);
    sp->lock_fd = -1;
    sp->max_bytes = max_bytes;
    if ((size_t)snprintf(sp->dir, sizeof sp->dir, "%s", dir) >= sizeof sp->dir - 64)
        return err_set(e, E_IO, "the spool directory %.100s... is too long", dir);
    if (file_mkdirs(dir, e) != 0)
        return E_IO;
    char path[4200];
    snprintf(path, sizeof path, "%s/.lock", dir);
    sp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (sp->lock_fd < 0)
        return err_set(e, E_IO, "cannot open %s: %s", path, strerror(errno));
    if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return err_set(e, E_IO,
                       "the spool %s is in use by another agent (each agent needs a spool "
                       "directory of its own: --spool DIR)",
                       dir);
    return load(sp, e);
}

void spool_close(struct spool *sp)
{
    if (sp->lock_fd >= 0)
        close(sp->lock_fd); /* releases the lock */
    sp->lock_fd = -1;
    free(sp->items);
    sp->items = NULL;
    sp->n = sp->cap = 0;
}

void spool_pop(struct spool *sp)
{
    if (sp->n == 0)
        return;
    char path[4400];
    entry_path(sp, &sp->items[0], path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("agent: cannot remove %s from the spool: %s", path, strerror(errno));
    sp->bytes -= sp->items[0].bytes;
    memmove(sp->items, sp->items + 1, (sp->n - 1) * sizeof *sp->items);
    sp->n--;
}

static int write_file(const char *tmp, const char *path, const char *body, size_t len,
                      struct err *e)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return err_set(e, E_IO, "cannot create %s: %s", tmp, strerror(errno));
    int rc = 0;
    if (file_write_all(fd, body, len) != 0 || fsync(fd) != 0)
        rc = err_set(e, E_IO, "writing %s: %s", tmp, strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = err_set(e, E_IO, "renaming %s to %s: %s", tmp, path, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}

int spool_put(struct spool *sp, const char *table, const char *body, size_t len, uint64_t rows,
              struct spool_dropped *dropped, struct err *e)
{
    if ((uint64_t)len > sp->max_bytes) {
        log_warn("agent: a batch of %zu bytes (%" PRIu64 " rows of %s) is larger than the whole "
                 "spool (agent.spool_max_bytes %" PRIu64 "): dropped",
                 len, rows, table, sp->max_bytes);
        dropped->batches++;
        dropped->rows += rows;
        return 0;
    }
    while (sp->n && sp->bytes + len > sp->max_bytes) {
        log_warn("agent: the spool is full (%" PRIu64 " bytes, agent.spool_max_bytes %" PRIu64
                 "): dropped its oldest batch (%" PRIu64 " rows of %s)",
                 sp->bytes, sp->max_bytes, sp->items[0].rows, sp->items[0].table);
        dropped->batches++;
        dropped->rows += sp->items[0].rows;
        spool_pop(sp);
    }
    struct spool_entry x = {.seq = sp->next_seq, .rows = rows, .bytes = len};
    snprintf(x.table, sizeof x.table, "%s", table);
    char path[4400], tmp[4410];
    entry_path(sp, &x, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = write_file(tmp, path, body, len, e);
    if (rc != 0)
        return rc;
    if (push(sp, &x) != 0) {
        unlink(path);
        return err_set(e, E_NOMEM, "out of memory");
    }
    return file_sync_dir(sp->dir, e); /* in the list either way: it is replayed if it lasts */
}

int spool_read_oldest(struct spool *sp, struct buf *body, struct err *e)
{
    char path[4400];
    entry_path(sp, &sp->items[0], path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, E_IO, "cannot open %s: %s", path, strerror(errno));
    body->len = 0;
    char chunk[65536];
    ssize_t n = 0;
    int rc = 0;
    while (rc == 0 && ((n = read(fd, chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0 && buf_append(body, chunk, (size_t)n) != 0)
            rc = err_set(e, E_IO, "%s is larger than a batch may be", path);
    if (rc == 0 && n < 0)
        rc = err_set(e, E_IO, "reading %s: %s", path, strerror(errno));
    close(fd);
    return rc;
}
