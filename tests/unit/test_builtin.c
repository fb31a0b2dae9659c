/*
 * The builtin jobs (src/jobs/builtin.c) on a real store and writer in a temporary directory:
 * their schedules from the configuration, and each run doing its work and saying so —
 * compaction, compression, retention (the hooks hear of what it dropped), archiving, the
 * integrity check on a sound database and on a damaged copy, and optimize — and runs cancelled:
 * compression stopping between its steps, a backup leaving nothing behind.
 */
#include "unit_store.h"

#include "backup/backup.h"
#include "jobs/builtin.h"
#include "jobs/cron.h"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/stat.h>

static const struct jobs_builtin *find(const struct jobs_builtin *b, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(b[i].name, name) == 0)
            return &b[i];
    fail_msg("no builtin job %s", name);
    return NULL;
}

static const atomic_bool not_cancelled = false, cancelled = true;

/* Runs the builtin job name on d with *cancel as its cancel flag and returns its result; out
 * gets its summary. */
static int run_job_cancel(struct ut_db *d, const char *name, const atomic_bool *cancel,
                          struct buf *out, struct err *e)
{
    struct jobs_maintenance m = {.w = d->w, .s = d->store, .cfg = &d->cfg};
    struct jobs_builtin b[JOBS_BUILTIN_MAX];
    size_t n = jobs_builtins(&m, b, JOBS_BUILTIN_MAX);
    buf_release(out);
    buf_init(out, 4096);
    err_clear(e);
    return find(b, n, name)->run(find(b, n, name)->arg, cancel, out, e);
}

static int run_job(struct ut_db *d, const char *name, struct buf *out, struct err *e)
{
    return run_job_cancel(d, name, &not_cancelled, out, e);
}

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!strstr((hay), (needle)))                                                              \
            fail_msg("'%s' does not contain '%s'", (hay), (needle));                               \
    } while (0)

static void test_schedules(void **state)
{
    (void)state;
    struct config cfg;
    config_defaults(&cfg);
    struct jobs_maintenance m = {.cfg = &cfg};
    struct jobs_builtin b[JOBS_BUILTIN_MAX];
    size_t n = jobs_builtins(&m, b, JOBS_BUILTIN_MAX);
    assert_int_equal(n, 6);
    assert_int_equal(find(b, n, "compaction")->every_ms, 5 * 60000);
    assert_int_equal(find(b, n, "compression")->every_ms, 5 * 60000);
    assert_int_equal(find(b, n, "retention")->every_ms, 3600000);
    assert_string_equal(find(b, n, "archiving")->schedule, "15 2 * * *");
    assert_string_equal(find(b, n, "integrity_check")->schedule, "30 3 * * *");
    assert_string_equal(find(b, n, "optimize")->schedule, "45 4 * * 0");
    for (size_t i = 0; i < n; i++) { /* every schedule is one the engine reads */
        struct cron c;
        struct err e;
        if (cron_parse(&c, b[i].schedule, &e) != 0)
            fail_msg("%s: schedule '%s': %s", b[i].name, b[i].schedule, e.msg);
        assert_non_null(b[i].run);
        assert_ptr_equal(b[i].arg, &m);
    }

    /* a key set wins over the interval; retention_interval 0 is off; a short interval stays */
    struct err e;
    assert_int_equal(config_set(&cfg, "jobs.compaction", "*/10 * * * *", &e), 0);
    assert_int_equal(config_set(&cfg, "storage.retention_interval", "0", &e), 0);
    assert_int_equal(config_set(&cfg, "storage.compact_interval", "200ms", &e), 0);
    assert_int_equal(config_set(&cfg, "jobs.optimize", "off", &e), 0);
    n = jobs_builtins(&m, b, JOBS_BUILTIN_MAX);
    assert_string_equal(find(b, n, "compaction")->schedule, "*/10 * * * *");
    assert_int_equal(find(b, n, "compaction")->every_ms, 0);
    assert_int_equal(find(b, n, "compression")->every_ms, 200);
    assert_string_equal(find(b, n, "retention")->schedule, "off");
    assert_int_equal(find(b, n, "retention")->every_ms, 0);
    assert_string_equal(find(b, n, "optimize")->schedule, "off");
    assert_int_equal(jobs_builtins(&m, b, 2), 2);
}

static void test_compaction(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "builtin-compaction");
    ut_db_start(&d);
    writer_set_maintenance(d.w, false);
    ut_db_write_old_samples(&d, "cpu_usage", 2, 300);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM system_metrics_chunks"), 4);

    struct buf out = {0};
    struct err e;
    assert_int_equal(run_job(&d, "compaction", &out, &e), 0);
    assert_contains(out.data, "compacted 1200 samples of 2 series");
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM system_metrics_chunks"), 2);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM system_metrics"), 1200);
    struct writer_stats ws;
    writer_get_stats(d.w, &ws);
    assert_int_equal(ws.samples_compacted, 1200); /* /metrics still counts it */

    assert_int_equal(run_job(&d, "compaction", &out, &e), 0);
    assert_contains(out.data, "compacted 0 samples of 0 series");

    d.cfg.storage_compress_after_ms = 0;
    assert_int_equal(run_job(&d, "compaction", &out, &e), 0);
    assert_contains(out.data, "nothing to do");
    buf_release(&out);
    ut_db_remove(&d);
}

static void test_compression(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "builtin-compression");
    d.cfg.storage_pack_quiet_ms = 0; /* the rows were just written: pack them all the same */
    ut_db_start(&d);
    writer_set_maintenance(d.w, false);
    ut_db_write_requests(&d, (time_now_ms() / DAY_MS - 3) * DAY_MS, 50);
    ut_db_write_requests(&d, time_now_ms() - 60000, 5);

    struct buf out = {0};
    struct err e;
    assert_int_equal(run_job(&d, "compression", &out, &e), 0);
    assert_contains(out.data, "packed 1 partitions: 50 rows into ");
    assert_int_equal(
        ut_db_int(&d,
                  "SELECT count(*) FROM opsdb_partitions WHERE table_name = 'api_usage' AND state "
                  "= 'cold'"),
        1);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM api_usage"), 55);
    struct writer_stats ws;
    writer_get_stats(d.w, &ws);
    assert_int_equal(ws.partitions_packed, 1);

    assert_int_equal(run_job(&d, "compression", &out, &e), 0);
    assert_contains(out.data, "packed 0 partitions");
    buf_release(&out);
    ut_db_remove(&d);
}

/* A cancelled pass stops after its first step and keeps what it did; the next run does the
 * rest. */
static void test_compression_cancelled(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "builtin-compression-cancel");
    d.cfg.storage_pack_quiet_ms = 0; /* the rows were just written: pack them all the same */
    ut_db_start(&d);
    writer_set_maintenance(d.w, false);
    for (int day = 3; day <= 5; day++)
        ut_db_write_requests(&d, (time_now_ms() / DAY_MS - day) * DAY_MS, 20);
    const char *cold = "SELECT count(*) FROM opsdb_partitions WHERE table_name = 'api_usage' AND "
                       "state = 'cold'";

    struct buf out = {0};
    struct err e;
    assert_int_equal(run_job_cancel(&d, "compression", &cancelled, &out, &e), E_CANCELLED);
    assert_contains(e.msg, "cancelled after 1 step");
    assert_contains(out.data, "packed 1 partitions: 20 rows into ");
    assert_int_equal(ut_db_int(&d, cold), 1);
    assert_int_equal(run_job(&d, "compression", &out, &e), 0);
    assert_int_equal(ut_db_int(&d, cold), 3);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM api_usage"), 60);
    buf_release(&out);
    ut_db_remove(&d);
}

/* A cancelled backup leaves nothing in the backup directory; one not cancelled is whole. */
static void test_backup_cancelled(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "builtin-backup-cancel");
    snprintf(d.cfg.backup_dir, sizeof d.cfg.backup_dir, "%s/backups", d.dir);
    ut_db_start(&d);
    ut_db_write_requests(&d, time_now_ms() - 60000, 50);
    struct backup_jobs bj = {.store = d.store, .cfg = &d.cfg};
    struct jobs_builtin b[2];
    assert_int_equal(backup_jobs(&bj, b, 2), 2);
    const struct jobs_builtin *backup = find(b, 2, "backup");
    struct buf out;
    buf_init(&out, 4096);
    struct err e;
    assert_int_equal(backup->run(backup->arg, &cancelled, &out, &e), E_CANCELLED);
    assert_contains(e.msg, "cancelled");
    struct backup *all = NULL;
    size_t n = 99;
    int rc = backup_list(d.cfg.backup_dir, &all, &n, &e);
    assert_true(rc == 0 || rc == E_NOTFOUND);
    assert_int_equal(rc == 0 ? n : 0, 0);
    free(all);
    DIR *dir = opendir(d.cfg.backup_dir); /* not even a temporary file */
    for (struct dirent *ent; dir && (ent = readdir(dir)) != NULL;)
        if (strcmp(ent->d_name, ".") != 0 && strcmp(ent->d_name, "..") != 0)
            fail_msg("a cancelled backup left %s", ent->d_name);
    if (dir)
        closedir(dir);

    assert_int_equal(backup->run(backup->arg, &not_cancelled, &out, &e), 0);
    assert_int_equal(backup_list(d.cfg.backup_dir, &all, &n, &e), 0);
    assert_int_equal(n, 1);
    free(all);
    buf_release(&out);
    ut_db_remove(&d);
}

static atomic_int all_changed;

static void count_all_changed(void *arg, const struct batch *const *batches, size_t n)
{
    (void)arg, (void)batches;
    if (n == 0)
        atomic_fetch_add(&all_changed, 1);
}

static void test_retention_and_archiving(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "builtin-retention");
    char archives[128];
    snprintf(archives, sizeof archives, "%s/archives", d.dir);
    struct err e;
    assert_int_equal(config_set(&d.cfg, "retention.api_usage", "3d", &e), 0);
    assert_int_equal(config_set(&d.cfg, "storage.archive_dir", archives, &e), 0);
    ut_db_start(&d);
    writer_set_maintenance(d.w, false);
    writer_on_commit(d.w, count_all_changed, NULL);
    ut_db_write_requests(&d, (time_now_ms() / DAY_MS - 10) * DAY_MS, 7); /* past the policy */
    ut_db_write_requests(&d, time_now_ms() - 60000, 3);
    atomic_store(&all_changed, 0);

    struct buf out = {0};
    assert_int_equal(run_job(&d, "retention", &out, &e), 0);
    assert_contains(out.data, "dropped 1 partitions (7 rows)");
    assert_contains(out.data, "archived 1 partitions");
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM api_usage"), 3);
    assert_int_equal(atomic_load(&all_changed), 1); /* caches and alerts hear of the drop */

    assert_int_equal(run_job(&d, "retention", &out, &e), 0);
    assert_contains(out.data, "dropped 0 partitions (0 rows)");
    assert_int_equal(atomic_load(&all_changed), 1); /* nothing dropped: nothing to hear */

    /* archiving: the archive is listed, then expires after storage.archive_retention */
    assert_int_equal(run_job(&d, "archiving", &out, &e), 0);
    assert_contains(out.data, "removed 0 archives");
    assert_contains(out.data, "; 1 archives (");
    d.cfg.storage_archive_retention_ms = DAY_MS;
    assert_int_equal(run_job(&d, "archiving", &out, &e), 0);
    assert_contains(out.data, "removed 1 archives past storage.archive_retention; 0 archives");

    /* a manifest that cannot be read fails the run, naming it */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/api_usage/api_usage_p20200101.json", archives);
    FILE *f = fopen(bad, "w");
    assert_non_null(f);
    fputs("{not json", f);
    fclose(f);
    assert_int_equal(run_job(&d, "archiving", &out, &e), E_CORRUPT);
    assert_contains(out.data, "1 unreadable, first api_usage_p20200101");
    assert_contains(e.msg, "api_usage_p20200101");

    d.cfg.storage_archive_dir[0] = '\0';
    assert_int_equal(run_job(&d, "archiving", &out, &e), 0);
    assert_contains(out.data, "nothing to do");
    buf_release(&out);
    ut_db_remove(&d);
}

static void test_optimize(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "builtin-optimize");
    ut_db_start(&d);
    ut_db_write_requests(&d, time_now_ms() - 600000, 500);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", d.cfg.db);
    struct stat sb;
    assert_int_equal(stat(wal, &sb), 0);
    assert_true(sb.st_size > 0);

    struct buf out = {0};
    struct err e;
    assert_int_equal(run_job(&d, "optimize", &out, &e), 0);
    assert_contains(out.data, "database ");
    assert_contains(out.data, " free inside the file");
    if (strstr(out.data, "busy"))
        fail_msg("nothing reads, yet: %s", out.data);
    assert_int_equal(stat(wal, &sb), 0);
    assert_int_equal(sb.st_size, 0); /* the log was moved into the database and truncated */
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM api_usage"), 500);
    buf_release(&out);
    ut_db_remove(&d);
}

/* Overwrites the middle of the last leaf pages of the api_usage partitions in path with a
 * pattern that no b-tree page holds. SQLite's dbstat says where they are: the layout of a file
 * (auto_vacuum keeps pointer-map pages and moves root pages) puts other pages at its end. */
static void damage(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT pageno FROM dbstat WHERE name LIKE 'api_usage_p%'"
                                        " AND pagetype = 'leaf' ORDER BY pageno DESC LIMIT 6",
                                        -1, &q, NULL),
                     SQLITE_OK);
    int64_t pages[6];
    int n = 0;
    while (n < 6 && sqlite3_step(q) == SQLITE_ROW)
        pages[n++] = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    assert_true(n >= 3);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    const off_t page = 4096;
    char junk[3000];
    memset(junk, 0xa5, sizeof junk);
    for (int i = 0; i < n; i++)
        assert_int_equal(pwrite(fd, junk, sizeof junk, (pages[i] - 1) * page + 500),
                         (ssize_t)sizeof junk);
    close(fd);
}

static void test_integrity_check(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "builtin-integrity");
    ut_db_start(&d);
    for (int i = 0; i < 4; i++)
        ut_db_write_requests(&d, time_now_ms() - 3600000 + i * 600000, 400);
    struct buf out = {0};
    struct err e;
    assert_int_equal(run_job(&d, "integrity_check", &out, &e), 0);
    assert_contains(out.data, "ok: quick_check of ");
    ut_db_stop(&d); /* closing moves the log into the file: one file to copy */

    char copy[200], cmd[800];
    snprintf(copy, sizeof copy, "%s/copy.sqlite", d.dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", d.cfg.db, copy);
    assert_int_equal(system(cmd), 0);
    damage(copy);
    struct config cfg = d.cfg;
    snprintf(cfg.db, sizeof cfg.db, "%s", copy);
    struct store *s;
    if (store_open(&s, &cfg, STORE_READONLY, &e) != 0)
        fail_msg("store_open on the damaged copy: %s", e.msg);
    struct jobs_maintenance m = {.s = s, .cfg = &cfg};
    struct jobs_builtin b[JOBS_BUILTIN_MAX];
    size_t n = jobs_builtins(&m, b, JOBS_BUILTIN_MAX);
    const struct jobs_builtin *check = find(b, n, "integrity_check");
    buf_release(&out);
    buf_init(&out, 4096);
    assert_int_equal(check->run(check->arg, &not_cancelled, &out, &e), E_CORRUPT);
    assert_contains(e.msg, "quick_check found the database damaged");
    assert_true(out.len > 0);
    assert_null(strstr(out.data, "ok:"));
    assert_contains(out.data, "On tree page ");
    store_close(&s);
    buf_release(&out);
    ut_db_remove(&d);
}

int main(void)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_compression),
        cmocka_unit_test(test_retention_and_archiving),
        cmocka_unit_test(test_compression_cancelled),
        cmocka_unit_test(test_backup_cancelled),
        cmocka_unit_test(test_optimize),
        cmocka_unit_test(test_integrity_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
