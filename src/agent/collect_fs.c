/*
 * filesystem: size and use of each real mount, from /proc/mounts and statvfs(3). Pseudo
 * filesystems (proc, sysfs, tmpfs, cgroup, ...) hold no disk; read-only images (squashfs,
 * iso9660) are always full; network filesystems are left out because statvfs on one whose
 * server is gone blocks the collection. A filesystem mounted at several places (bind mounts)
 * counts once, under its first mount point. used and usage follow df(1): blocks reserved for
 * root count neither as used nor as available, and disk_usage is used / (used + available).
 */
#include "agent/agent_int.h"

#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

static const char *const skipped_types[] = {
    "proc",        "sysfs",      "devtmpfs",   "devpts",    "tmpfs",     "ramfs",
    "cgroup",      "cgroup2",    "securityfs", "pstore",    "bpf",       "debugfs",
    "tracefs",     "configfs",   "fusectl",    "hugetlbfs", "mqueue",    "autofs",
    "binfmt_misc", "rpc_pipefs", "nsfs",       "efivarfs",  "selinuxfs", "squashfs",
    "iso9660",     "nfs",        "nfs4",       "cifs",      "smb3",      "fuse.sshfs"};

static bool skipped(const char *type)
{
    for (size_t i = 0; i < sizeof skipped_types / sizeof skipped_types[0]; i++)
        if (strcmp(type, skipped_types[i]) == 0)
            return true;
    return false;
}

/* /proc/mounts writes space, tab, newline and backslash as \040, \011, \012, \134. */
static void unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

#define MOUNTS_MAX 1024

/* The sources already counted, by hash (a collision would only hide a mount). */
struct seen_sources {
    uint64_t hash[MOUNTS_MAX];
    size_t n;
};

/* True the first time source is seen (and remembers it). */
static bool first_time(struct seen_sources *seen, const char *source)
{
    uint64_t h = hash64(source, strlen(source), 0);
    for (size_t i = 0; i < seen->n; i++)
        if (seen->hash[i] == h)
            return false;
    if (seen->n < MOUNTS_MAX)
        seen->hash[seen->n++] = h;
    return true;
}

static void add_mount(struct samples *out, const char *mount, const struct statvfs *st)
{
    double unit = (double)st->f_frsize;
    double size = (double)st->f_blocks * unit;
    double used = (double)(st->f_blocks - st->f_bfree) * unit;
    double avail = (double)st->f_bavail * unit;
    samples_add(out, "filesystem", "filesystem_size_bytes", "mount", mount, size);
    samples_add(out, "filesystem", "filesystem_used_bytes", "mount", mount, used);
    samples_add(out, "filesystem", "filesystem_available_bytes", "mount", mount, avail);
    if (used + avail > 0)
        samples_add(out, "system", "disk_usage", "mount", mount, 100.0 * used / (used + avail));
}

int collect_filesystem(struct host_collector *c, int64_t mono_ms, struct samples *out,
                       struct err *e)
{
    (void)mono_ms;
    const char *text = collector_read(c, "proc/mounts", e);
    if (!text)
        return E_IO;
    struct seen_sources seen = {.n = 0};
    bool root_seen = false;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        char source[SAMPLE_LABEL_MAX], mount[SAMPLE_LABEL_MAX], type[64];
        if (sscanf(p, "%255s %255s %63s", source, mount, type) != 3 || skipped(type))
            continue;
        unescape(mount);
        struct statvfs st;
        if (statvfs(mount, &st) != 0 || st.f_blocks == 0 || !first_time(&seen, source))
            continue;
        add_mount(out, mount, &st);
        root_seen |= strcmp(mount, "/") == 0;
    }
    /* in a chroot (and some containers) the root is no mount of /proc/mounts; it still holds
     * what the host writes, so it is always reported */
    struct statvfs st;
    if (!root_seen && !c->root[0] && statvfs("/", &st) == 0 && st.f_blocks > 0)
        add_mount(out, "/", &st);
    return 0;
}
