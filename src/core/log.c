/*
 * Logging: one line per event with UTC time and level, on stderr or, once log_open_file() has
 * run, only in the file named by log.file, rotated by size and age.
 *
 * A single write(2) per line keeps lines from different threads whole. With a file, one mutex
 * covers the rotation check, the rotation and the write, so a line is never split between two
 * files and never lost: a rotation first writes the gzip copy (temp file, fsync, rename) and only
 * then empties the file. The file is opened with O_APPEND, so an external truncation (logrotate's
 * copytruncate) is safe, and log_reopen() follows an external rename (logrotate, then SIGHUP).
 *
 * The log is the one piece of process-wide state here, like stderr itself.
 */
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define LINE_MAX_BYTES 2048
#define ROTATE_RETRY_MS 60000 /* after a failed rotation, lines go on and the next try waits */
#define NAME_MAX_BYTES (sizeof((struct config *)0)->log_file + 32) /* path + ".N.gz.tmp" */

static enum log_level log_threshold = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Everything below is guarded by file_lock. fd < 0: no file, lines go to stderr. */
static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int fd; /* O_RDWR | O_APPEND: rotation reads it back to compress it */
    char path[sizeof((struct config *)0)->log_file];
    int64_t max_bytes, max_age_ms, keep;
    int64_t opened_ms;       /* when the current file was opened or last emptied */
    int64_t retry_after_ms;  /* no rotation before this (after a failure) */
    unsigned char in[65536]; /* compression buffers, used only under the lock */
    unsigned char out[65536];
} lf = {.fd = -1};

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

/* Formats "TIME level message\n" into line (LINE_MAX_BYTES); returns its length. */
static size_t format_line(char *line, enum log_level level, const char *fmt, va_list ap)
{
    char when[40];
    time_format_rfc3339(time_now_ms(), when, sizeof when);
    int n = snprintf(line, LINE_MAX_BYTES, "%s %s ", when, level_names[level]);
    int m = vsnprintf(line + n, LINE_MAX_BYTES - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > LINE_MAX_BYTES - 2)
        len = LINE_MAX_BYTES - 2;
    line[len++] = '\n';
    return len;
}

static size_t format_linef(char *line, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t format_linef(char *line, enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t len = format_line(line, level, fmt, ap);
    va_end(ap);
    return len;
}

/* One write(2) of a whole line to the file, or to stderr when there is none or the write
 * failed (disk full): a line is not lost silently. Called under file_lock. */
static void write_line(const char *line, size_t len)
{
    if (lf.fd >= 0 && write(lf.fd, line, len) == (ssize_t)len)
        return;
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int open_append(const char *path, struct err *e)
{
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return err_set(e, E_IO,
                       "cannot open log file %s: %s (its directory must exist and be writable)",
                       path, strerror(errno));
    return fd;
}

/* Compresses everything in src_fd into a new gzip file dst, fsynced. On failure dst is gone. */
static int gzip_fd(int src_fd, const char *dst, struct err *e)
{
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (out < 0)
        return err_set(e, E_IO, "cannot create %s: %s", dst, strerror(errno));
    int rc = 0;
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        rc = err_set(e, E_NOMEM, "cannot start gzip compression for %s", dst);
        goto out_fd;
    }
    for (off_t off = 0;;) {
        ssize_t n = pread(src_fd, lf.in, sizeof lf.in, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = err_set(e, E_IO, "cannot read %s: %s", lf.path, strerror(errno));
            goto out_z;
        }
        off += n;
        z.next_in = lf.in;
        z.avail_in = (uInt)n;
        do {
            z.next_out = lf.out;
            z.avail_out = sizeof lf.out;
            deflate(&z, n == 0 ? Z_FINISH : Z_NO_FLUSH); /* cannot fail on a valid stream */
            if (write_all(out, lf.out, sizeof lf.out - z.avail_out) != 0) {
                rc = err_set(e, E_IO, "cannot write %s: %s", dst, strerror(errno));
                goto out_z;
            }
        } while (z.avail_out == 0);
        if (n == 0)
            break;
    }
    if (fsync(out) != 0)
        rc = err_set(e, E_IO, "cannot fsync %s: %s", dst, strerror(errno));
out_z:
    deflateEnd(&z);
out_fd:
    if (close(out) != 0 && rc == 0)
        rc = err_set(e, E_IO, "cannot write %s: %s", dst, strerror(errno));
    if (rc != 0)
        unlink(dst);
    return rc;
}

/* Splits lf.path into its directory (dir, "." when none) and its base name (returned). */
static const char *split_path(char *dir, size_t size)
{
    const char *slash = strrchr(lf.path, '/');
    if (!slash) {
        snprintf(dir, size, ".");
        return lf.path;
    }
    snprintf(dir, size, "%.*s", slash == lf.path ? 1 : (int)(slash - lf.path), lf.path);
    return slash + 1;
}

/* Deletes the rotated files <path>.N.gz with N > lf.keep (left by a larger keep, or shifted
 * past it), then fsyncs the directory so the renames before it are durable too. */
static int prune_and_sync_dir(struct err *e)
{
    char dir[NAME_MAX_BYTES];
    const char *base = split_path(dir, sizeof dir);
    size_t base_len = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return err_set(e, E_IO, "cannot read directory %s: %s", dir, strerror(errno));
    int rc = 0;
    for (struct dirent *ent; (ent = readdir(d)) != NULL;) {
        const char *name = ent->d_name;
        if (strncmp(name, base, base_len) != 0 || name[base_len] != '.')
            continue;
        char *end;
        errno = 0;
        long long n = strtoll(name + base_len + 1, &end, 10);
        if (errno || end == name + base_len + 1 || strcmp(end, ".gz") != 0 || n <= lf.keep)
            continue;
        char victim[NAME_MAX_BYTES * 2];
        snprintf(victim, sizeof victim, "%s/%s", dir, name);
        if (unlink(victim) != 0 && errno != ENOENT && rc == 0)
            rc = err_set(e, E_IO, "cannot delete %s: %s", victim, strerror(errno));
    }
    int dfd = dirfd(d);
    if (rc == 0 && fsync(dfd) != 0)
        rc = err_set(e, E_IO, "cannot fsync directory %s: %s", dir, strerror(errno));
    closedir(d);
    return rc;
}

/* path.1.gz <- gzip(current file), older copies shift up by one, those past keep go, then the
 * current file is emptied. Until the gzip copy is in place the current file is untouched, so a
 * failure anywhere loses no line (a crash between the rename and the truncation can repeat
 * lines in .1.gz and the file; it cannot drop any). */
static int rotate_files(struct err *e)
{
    char tmp[NAME_MAX_BYTES], from[NAME_MAX_BYTES], to[NAME_MAX_BYTES];
    int rc;
    snprintf(tmp, sizeof tmp, "%s.1.gz.tmp", lf.path);
    if (lf.keep > 0) {
        if ((rc = gzip_fd(lf.fd, tmp, e)) != 0)
            return rc;
        for (int64_t n = lf.keep - 1; n >= 1; n--) {
            snprintf(from, sizeof from, "%s.%lld.gz", lf.path, (long long)n);
            snprintf(to, sizeof to, "%s.%lld.gz", lf.path, (long long)n + 1);
            if (rename(from, to) != 0 && errno != ENOENT) {
                rc = err_set(e, E_IO, "cannot rename %s: %s", from, strerror(errno));
                goto out;
            }
        }
        snprintf(to, sizeof to, "%s.1.gz", lf.path);
        if (rename(tmp, to) != 0) {
            rc = err_set(e, E_IO, "cannot rename %s: %s", tmp, strerror(errno));
            goto out;
        }
    }
    if ((rc = prune_and_sync_dir(e)) != 0)
        goto out;
    if (ftruncate(lf.fd, 0) != 0)
        rc = err_set(e, E_IO, "cannot truncate %s: %s", lf.path, strerror(errno));
out:
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/* Rotates when the line would take the file past max_bytes or the file is older than
 * max_age_ms. An empty file is never rotated; its age starts again. Called under file_lock. */
static void rotate_if_due(size_t line_len)
{
    struct stat st;
    if (fstat(lf.fd, &st) != 0)
        return;
    int64_t now = time_now_ms();
    if (st.st_size == 0) {
        lf.opened_ms = now;
        return;
    }
    bool too_big = lf.max_bytes > 0 && st.st_size + (int64_t)line_len > lf.max_bytes;
    bool too_old = lf.max_age_ms > 0 && now - lf.opened_ms >= lf.max_age_ms;
    if ((!too_big && !too_old) || now < lf.retry_after_ms)
        return;
    struct err e;
    if (rotate_files(&e) == 0) {
        lf.opened_ms = now;
        return;
    }
    /* the file grows past its limits until the next try; the reason goes where lines go */
    lf.retry_after_ms = now + ROTATE_RETRY_MS;
    char line[LINE_MAX_BYTES];
    size_t len = format_linef(line, LOG_ERROR, "log rotation failed, tried again in %ds: %s",
                              ROTATE_RETRY_MS / 1000, e.msg);
    write_line(line, len);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < log_threshold)
        return;
    char line[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    size_t len = format_line(line, level, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&file_lock);
    if (lf.fd >= 0)
        rotate_if_due(len);
    write_line(line, len);
    pthread_mutex_unlock(&file_lock);
}

int log_open_file(const struct config *cfg, struct err *e)
{
    if (cfg->log_file[0] == '\0')
        return 0;
    int fd = open_append(cfg->log_file, e);
    if (fd < 0)
        return fd;
    pthread_mutex_lock(&file_lock);
    if (lf.fd >= 0)
        close(lf.fd);
    lf.fd = fd;
    snprintf(lf.path, sizeof lf.path, "%s", cfg->log_file);
    lf.max_bytes = cfg->log_max_bytes;
    lf.max_age_ms = cfg->log_max_age_ms;
    lf.keep = cfg->log_keep;
    lf.opened_ms = time_now_ms();
    lf.retry_after_ms = 0;
    pthread_mutex_unlock(&file_lock);
    return 0;
}

int log_reopen(struct err *e)
{
    int rc = 0;
    pthread_mutex_lock(&file_lock);
    if (lf.fd >= 0) {
        int fd = open_append(lf.path, e);
        if (fd >= 0) {
            close(lf.fd);
            lf.fd = fd;
            lf.opened_ms = time_now_ms();
            lf.retry_after_ms = 0;
        } else {
            rc = fd;
        }
    }
    pthread_mutex_unlock(&file_lock);
    return rc;
}

void log_close_file(void)
{
    pthread_mutex_lock(&file_lock);
    if (lf.fd >= 0)
        close(lf.fd);
    lf.fd = -1;
    pthread_mutex_unlock(&file_lock);
}
