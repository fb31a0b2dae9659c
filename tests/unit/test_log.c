/*
 * core logging to a file (log_open_file, log_reopen, log_close_file): rotation by size and age
 * keeps every line exactly once, whole and in order across the file and its gzip copies; keep
 * bounds the copies and <file>.1.gz is the newest; many threads logging through rotations; the
 * reopen after an external rename; open failures name the path.
 */
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define BIG (64 << 20)
/* every test line ends in this pad: a line cut anywhere fails to parse */
#define PAD "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define PAD_LEN 48

struct logdir {
    char dir[64];
    char file[128];
    struct config cfg;
};

/* A fresh directory with log.file = <dir>/opsdb.log and the given limits. */
static void logdir_init(struct logdir *d, int64_t max_bytes, int64_t max_age_ms, int64_t keep)
{
    snprintf(d->dir, sizeof d->dir, "/tmp/opsdb-test-log-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->file, sizeof d->file, "%s/opsdb.log", d->dir);
    config_defaults(&d->cfg);
    snprintf(d->cfg.log_file, sizeof d->cfg.log_file, "%s", d->file);
    d->cfg.log_max_bytes = max_bytes;
    d->cfg.log_max_age_ms = max_age_ms;
    d->cfg.log_keep = keep;
}

/* Closes the log and removes the directory with everything in it. */
static void logdir_release(struct logdir *d)
{
    log_close_file();
    DIR *dir = opendir(d->dir);
    assert_non_null(dir);
    for (struct dirent *ent; (ent = readdir(dir)) != NULL;) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", d->dir, ent->d_name);
        assert_int_equal(unlink(path), 0);
    }
    closedir(dir);
    assert_int_equal(rmdir(d->dir), 0);
}

static void open_log(struct logdir *d)
{
    struct err e;
    err_clear(&e);
    if (log_open_file(&d->cfg, &e) != 0)
        fail_msg("log_open_file: %s", e.msg);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Appends the whole file at path to out. */
static void read_plain(const char *path, struct buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(out, chunk, n), 0);
    fclose(f);
}

/* Appends the decompressed content of the gzip file at path to out; fails unless the file is
 * gzip (magic bytes, no trailing garbage, intact CRC). */
static void read_gz(const char *path, struct buf *out)
{
    struct buf raw;
    buf_init(&raw, BIG);
    read_plain(path, &raw);
    if (raw.len < 18 || (unsigned char)raw.data[0] != 0x1f || (unsigned char)raw.data[1] != 0x8b)
        fail_msg("%s is not gzip", path);
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 16 + 15), Z_OK);
    z.next_in = (Bytef *)raw.data;
    z.avail_in = (uInt)raw.len;
    int zr;
    do {
        unsigned char chunk[4096];
        z.next_out = chunk;
        z.avail_out = sizeof chunk;
        zr = inflate(&z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END)
            fail_msg("%s: corrupt gzip (%d)", path, zr);
        assert_int_equal(buf_append(out, chunk, sizeof chunk - z.avail_out), 0);
    } while (zr != Z_STREAM_END);
    assert_int_equal(z.avail_in, 0); /* one member, nothing after it */
    inflateEnd(&z);
    buf_release(&raw);
}

/* Appends <file>.<n>.gz (n > 0) or the file itself (n == 0) to out; returns its size. */
static size_t read_part(const struct logdir *d, int n, struct buf *out)
{
    size_t before = out->len;
    char path[160];
    if (n == 0) {
        read_plain(d->file, out);
    } else {
        snprintf(path, sizeof path, "%s.%d.gz", d->file, n);
        read_gz(path, out);
    }
    return out->len - before;
}

/* Number of rotated copies: <file>.1.gz, .2.gz, ... up to the first missing one. */
static int count_rotated(const struct logdir *d)
{
    char path[160];
    int n = 0;
    for (;; n++) {
        snprintf(path, sizeof path, "%s.%d.gz", d->file, n + 1);
        if (!exists(path))
            return n;
    }
}

/* The sequence numbers of the lines "TIME info seq=N ..." in text, in order, into seq (at most
 * max); fails on a line that is not whole or not in that shape. Returns how many. */
static size_t parse_seqs(const char *text, size_t len, long *seq, size_t max, int thread)
{
    size_t n = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            fail_msg("a line is split (no newline at the end): '%.*s'", (int)(end - p), p);
        const char *info = strstr(p, " info ");
        int t = -1, used = 0;
        long s = -1;
        if (!info || info > nl || sscanf(info, " info t=%d seq=%ld pad=%n", &t, &s, &used) != 2 ||
            used == 0 || nl - (info + used) != PAD_LEN || strspn(info + used, "x") != PAD_LEN)
            fail_msg("not a whole log line: '%.*s'", (int)(nl - p), p);
        if (t == thread) {
            assert_true(n < max);
            seq[n++] = s;
        }
        p = nl + 1;
    }
    return n;
}

/* Everything from the oldest copy (<file>.<rotated>.gz) to the current file, in order. */
static void read_all(const struct logdir *d, struct buf *all, size_t max_part)
{
    for (int n = count_rotated(d); n >= 0; n--) {
        size_t size = read_part(d, n, all);
        if (max_part && size > max_part)
            fail_msg("part %d holds %zu bytes, over the limit %zu", n, size, max_part);
        if (n > 0 && size == 0)
            fail_msg("rotated copy %d is empty", n);
    }
}

static void log_seq(int thread, long seq)
{
    log_info("t=%d seq=%ld pad=%.*s", thread, seq, PAD_LEN, PAD);
}

static void defaults(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    assert_string_equal(c.log_file, "");
    assert_int_equal(c.log_max_bytes, 10 * 1024 * 1024);
    assert_int_equal(c.log_max_age_ms, 86400000);
    assert_int_equal(c.log_keep, 7);
    struct err e;
    assert_int_equal(config_set(&c, "log.max_size", "0", &e), 0);
    assert_int_equal(config_set(&c, "log.max_age", "0", &e), 0);
    assert_int_equal(config_set(&c, "log.keep", "0", &e), 0);
    assert_int_equal(config_set(&c, "log.keep", "-1", &e), E_INVALID);
    assert_int_equal(config_set(&c, "log.file", "/var/log/opsdb/opsdb.log", &e), 0);
    assert_string_equal(c.log_file, "/var/log/opsdb/opsdb.log");
    /* no file: log_open_file leaves lines on stderr and succeeds */
    config_defaults(&c);
    assert_int_equal(log_open_file(&c, &e), 0);
}

/* Every line written appears exactly once, whole and in order, across the copies and the file;
 * no part is over max_bytes; .1.gz is the newest copy. */
static void rotation_by_size_keeps_every_line(void **state)
{
    (void)state;
    struct logdir d;
    logdir_init(&d, 1000, 0, 1000);
    open_log(&d);
    const long lines = 600;
    for (long i = 0; i < lines; i++)
        log_seq(0, i);
    int rotated = count_rotated(&d);
    assert_true(rotated >= 40); /* ~100-byte lines, 1000-byte files */
    struct buf all;
    buf_init(&all, BIG);
    read_all(&d, &all, 1000);
    long seq[1000];
    size_t n = parse_seqs(all.data, all.len, seq, 1000, 0);
    assert_int_equal(n, lines);
    for (long i = 0; i < lines; i++)
        assert_int_equal(seq[i], i);
    buf_release(&all);
    logdir_release(&d);
}

/* keep=3: exactly three copies remain, each newer than the next, and copies left over from a
 * larger keep are deleted at the next rotation. */
static void keep_bounds_the_copies(void **state)
{
    (void)state;
    struct logdir d;
    logdir_init(&d, 300, 0, 3);
    char stale[160];
    snprintf(stale, sizeof stale, "%s.9.gz", d.file);
    FILE *f = fopen(stale, "wb");
    assert_non_null(f);
    fclose(f);
    open_log(&d);
    for (long i = 0; i < 100; i++)
        log_seq(0, i);
    assert_int_equal(count_rotated(&d), 3);
    char path[160];
    for (int k = 4; k <= 10; k++) {
        snprintf(path, sizeof path, "%s.%d.gz", d.file, k);
        if (exists(path))
            fail_msg("%s is past log.keep=3 and should be gone", path);
    }
    snprintf(path, sizeof path, "%s.1.gz.tmp", d.file);
    assert_false(exists(path));
    /* oldest to newest: .3.gz, .2.gz, .1.gz, the file; together the last lines, in order */
    struct buf all;
    buf_init(&all, BIG);
    long prev_last = -1;
    for (int k = 3; k >= 0; k--) {
        size_t start = all.len;
        read_part(&d, k, &all);
        long seq[100];
        size_t n = parse_seqs(all.data + start, all.len - start, seq, 100, 0);
        assert_true(n > 0);
        if (prev_last >= 0)
            assert_int_equal(seq[0], prev_last + 1);
        for (size_t i = 1; i < n; i++)
            assert_int_equal(seq[i], seq[i - 1] + 1);
        prev_last = seq[n - 1];
    }
    assert_int_equal(prev_last, 99);
    buf_release(&all);
    logdir_release(&d);
}

/* keep=0: the file is emptied when full and no copy is kept. */
static void keep_zero_keeps_no_copy(void **state)
{
    (void)state;
    struct logdir d;
    logdir_init(&d, 300, 0, 0);
    open_log(&d);
    for (long i = 0; i < 20; i++)
        log_seq(0, i);
    assert_int_equal(count_rotated(&d), 0);
    struct buf cur;
    buf_init(&cur, BIG);
    read_part(&d, 0, &cur);
    long seq[20];
    size_t n = parse_seqs(cur.data, cur.len, seq, 20, 0);
    assert_true(n > 0 && n < 20);
    assert_int_equal(seq[n - 1], 19);
    buf_release(&cur);
    logdir_release(&d);
}

/* max_age: a file open longer than that is rotated at the next line; an empty one is not. */
static void rotation_by_age(void **state)
{
    (void)state;
    struct logdir d;
    logdir_init(&d, 0, 100, 5);
    open_log(&d);
    log_seq(0, 0);
    log_seq(0, 1);
    assert_int_equal(count_rotated(&d), 0);
    usleep(150 * 1000);
    log_seq(0, 2);
    assert_int_equal(count_rotated(&d), 1);
    struct buf part;
    buf_init(&part, BIG);
    long seq[4];
    read_part(&d, 1, &part);
    assert_int_equal(parse_seqs(part.data, part.len, seq, 4, 0), 2);
    assert_int_equal(seq[0], 0);
    assert_int_equal(seq[1], 1);
    part.len = 0;
    read_part(&d, 0, &part);
    assert_int_equal(parse_seqs(part.data, part.len, seq, 4, 0), 1);
    assert_int_equal(seq[0], 2);
    buf_release(&part);
    logdir_release(&d);
}

#define THREADS 4
#define LINES_PER_THREAD 400

static void *log_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (long i = 0; i < LINES_PER_THREAD; i++)
        log_seq(t, i);
    return NULL;
}

/* Threads logging through many rotations: every thread's lines appear exactly once, whole and
 * in that thread's order. */
static void threads_through_rotations(void **state)
{
    (void)state;
    struct logdir d;
    logdir_init(&d, 2000, 0, 1000);
    open_log(&d);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, log_thread, (void *)(intptr_t)(t + 1)), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    assert_true(count_rotated(&d) >= 50);
    struct buf all;
    buf_init(&all, BIG);
    read_all(&d, &all, 2000);
    for (int t = 1; t <= THREADS; t++) {
        long seq[LINES_PER_THREAD + 1];
        size_t n = parse_seqs(all.data, all.len, seq, LINES_PER_THREAD + 1, t);
        assert_int_equal(n, LINES_PER_THREAD);
        for (long i = 0; i < LINES_PER_THREAD; i++)
            assert_int_equal(seq[i], i);
    }
    buf_release(&all);
    logdir_release(&d);
}

/* After an external rename (logrotate), log_reopen sends lines to a fresh file at the path. */
static void reopen_after_rename(void **state)
{
    (void)state;
    struct logdir d;
    logdir_init(&d, 0, 0, 7);
    open_log(&d);
    log_seq(0, 0);
    char moved[160];
    snprintf(moved, sizeof moved, "%s/moved.log", d.dir);
    assert_int_equal(rename(d.file, moved), 0);
    log_seq(0, 1); /* still to the open file, now named moved.log */
    struct err e;
    assert_int_equal(log_reopen(&e), 0);
    log_seq(0, 2);
    struct buf b;
    buf_init(&b, BIG);
    long seq[4];
    read_plain(moved, &b);
    assert_int_equal(parse_seqs(b.data, b.len, seq, 4, 0), 2);
    assert_int_equal(seq[1], 1);
    b.len = 0;
    read_plain(d.file, &b);
    assert_int_equal(parse_seqs(b.data, b.len, seq, 4, 0), 1);
    assert_int_equal(seq[0], 2);
    struct stat st;
    assert_int_equal(stat(d.file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640); /* created 0640 (umask 022 takes nothing) */
    buf_release(&b);
    logdir_release(&d);
}

/* A path whose directory is missing: E_IO naming the path and the reason; nothing opened. */
static void open_failure_names_the_path(void **state)
{
    (void)state;
    struct logdir d;
    logdir_init(&d, 0, 0, 7);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no-such-dir/opsdb.log", d.dir);
    snprintf(d.cfg.log_file, sizeof d.cfg.log_file, "%s", missing);
    struct err e;
    err_clear(&e);
    assert_int_equal(log_open_file(&d.cfg, &e), E_IO);
    assert_non_null(strstr(e.msg, missing));
    assert_non_null(strstr(e.msg, strerror(ENOENT)));
    assert_int_equal(log_reopen(&e), 0); /* no file open: nothing to do */
    logdir_release(&d);
}

int main(void)
{
    umask(022);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(rotation_by_size_keeps_every_line),
        cmocka_unit_test(keep_bounds_the_copies),
        cmocka_unit_test(keep_zero_keeps_no_copy),
        cmocka_unit_test(rotation_by_age),
        cmocka_unit_test(threads_through_rotations),
        cmocka_unit_test(reopen_after_rename),
        cmocka_unit_test(open_failure_names_the_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
