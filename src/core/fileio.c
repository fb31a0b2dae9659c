/*
 * Files that matter, written so that a crash leaves either the old file or the new one (STYLE
 * 15): write everything, fsync, rename over the name, fsync the directory. Shared by archives,
 * backups and anything else that puts a file in place.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int file_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int file_sync_dir(const char *dir, struct err *e)
{
    int fd = open(dir[0] ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int rc = err_set(e, E_IO, "syncing the directory %s: %s", dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    return 0;
}

void file_dirname(const char *path, char *out, size_t out_size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, out_size, ".");
    else if (slash == path)
        snprintf(out, out_size, "/");
    else
        snprintf(out, out_size, "%.*s", (int)(slash - path), path);
}

int file_write_atomic(const char *path, const char *text, struct err *e)
{
    char tmp[4200], dir[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return err_set(e, E_IO, "the path %s is too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return err_set(e, E_IO, "cannot create %s: %s", tmp, strerror(errno));
    int rc = 0;
    if (file_write_all(fd, text, strlen(text)) != 0 || fsync(fd) != 0)
        rc = err_set(e, E_IO, "writing %s: %s", tmp, strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = err_set(e, E_IO, "renaming %s to %s: %s", tmp, path, strerror(errno));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    file_dirname(path, dir, sizeof dir);
    return file_sync_dir(dir, e);
}

int file_mkdirs(const char *dir, struct err *e)
{
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s", dir) >= sizeof path)
        return err_set(e, E_IO, "the path %s is too long", dir);
    if (!path[0])
        return 0;
    for (char *p = path + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            if (mkdir(path, 0750) != 0 && errno != EEXIST)
                return err_set(e, E_IO, "cannot create the directory %s: %s", path,
                               strerror(errno));
            if (end)
                break;
            *p = '/';
        }
    }
    return 0;
}
