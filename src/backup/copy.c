/*
 * A database copy, checked: opened read-only through the store like any database, its
 * structure checked, its rows counted per table through the normal read path (the same
 * partitions, chunks and packed blocks a query reads), and, for a backup decompressed again,
 * compared with what its manifest says.
 */
#include "backup/backup_int.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int count_rows(struct store *s, const struct table *t, int64_t *rows, struct err *e)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", t->name);
    struct store_query q = {.sql = sql};
    struct store_result res;
    struct store_reader *r = store_reader_get(s);
    int rc = store_reader_query(r, &q, &res, e);
    store_reader_put(s, r);
    if (rc == 0 && (res.nrows != 1 || res.ncols != 1 || res.values[0].type != VAL_INT))
        rc = err_set(e, E_STORE, "counting the rows of %s gave no number", t->name);
    if (rc == 0)
        *rows = res.values[0].i;
    store_result_release(&res);
    return rc;
}

int copy_inspect(const struct config *cfg, const char *path, bool integrity,
                 backup_progress progress, void *arg, struct backup *b, struct err *e)
{
    struct config copy_cfg = *cfg;
    if ((size_t)snprintf(copy_cfg.db, sizeof copy_cfg.db, "%s", path) >= sizeof copy_cfg.db)
        return err_set(e, E_IO, "the path %s is too long for a database (%zu bytes at most)", path,
                       sizeof copy_cfg.db - 1);
    copy_cfg.reader_connections = 1;
    struct store *s;
    int rc = store_open(&s, &copy_cfg, STORE_READONLY, e);
    if (rc)
        return rc;
    if (integrity && progress && progress(arg, "checking", 0, 1) != 0)
        rc = err_set(e, E_CANCELLED, "checking %s: cancelled", path);
    if (integrity && rc == 0) {
        struct buf report; /* e says what is damaged; the report's lines are not kept */
        buf_init(&report, 4096);
        rc = store_integrity_check(s, false, &report, e);
        if (rc == E_CORRUPT && report.len) /* the first problem names the damage */
            err_set(e, E_CORRUPT, "integrity check: %.*s", (int)strcspn(report.data, "\n"),
                    report.data);
        buf_release(&report);
    }
    size_t ntables;
    const struct table *tables = schema_tables(&ntables);
    b->schema_version = store_schema_version(s);
    b->ntables = 0;
    b->rows = 0;
    for (size_t i = 0; rc == 0 && i < ntables && i < BACKUP_MAX_TABLES; i++) {
        if (progress && progress(arg, "counting", (int64_t)i, (int64_t)ntables) != 0) {
            rc = err_set(e, E_CANCELLED, "counting the rows of %s: cancelled", path);
            break;
        }
        int64_t rows = 0;
        rc = count_rows(s, &tables[i], &rows, e);
        snprintf(b->tables[i].name, sizeof b->tables[i].name, "%s", tables[i].name);
        b->tables[i].rows = rows;
        b->ntables++;
        b->rows += rows;
    }
    store_close(&s);
    return rc;
}

static int64_t manifest_rows(const struct backup *b, const char *table)
{
    for (size_t i = 0; i < b->ntables; i++)
        if (strcmp(b->tables[i].name, table) == 0)
            return b->tables[i].rows;
    return -1;
}

/* The first table whose rows differ between the manifest and the copy. */
static int compare_counts(const struct backup *want, const struct backup *got, struct err *e)
{
    for (size_t i = 0; i < got->ntables; i++) {
        int64_t expected = manifest_rows(want, got->tables[i].name);
        if (expected != got->tables[i].rows)
            return err_set(e, E_CORRUPT, "backup %s: %s holds %lld rows, the manifest says %lld",
                           want->name, got->tables[i].name, (long long)got->tables[i].rows,
                           (long long)expected);
    }
    if (got->ntables != want->ntables)
        return err_set(e, E_CORRUPT, "backup %s: %zu tables, the manifest lists %zu", want->name,
                       got->ntables, want->ntables);
    return 0;
}

int copy_check(const struct config *cfg, const struct backup *b, const char *tmp_path,
               backup_progress progress, void *arg, struct err *e)
{
    if (b->problem[0])
        return err_set(e, E_CORRUPT, "%s", b->problem);
    if (b->schema_version != schema_version())
        return err_set(e, E_INVALID,
                       "backup %s has schema version %d and this opsdb %d: check and restore it "
                       "with the opsdb version that wrote it",
                       b->name, b->schema_version, schema_version());
    struct stat sb;
    if (stat(b->data_path, &sb) != 0)
        return err_set(e, E_CORRUPT, "backup %s: its compressed file %s cannot be read: %s",
                       b->name, b->data_path, strerror(errno));
    if ((int64_t)sb.st_size != b->bytes)
        return err_set(e, E_CORRUPT, "backup %s: %s is %lld bytes, the manifest says %lld", b->name,
                       b->data_path, (long long)sb.st_size, (long long)b->bytes);
    struct stream_stats st;
    int rc = stream_decompress(b->data_path, tmp_path, progress, arg, &st, e);
    if (rc)
        return rc;
    if (strcmp(st.sha_in, b->sha256) != 0)
        return err_set(e, E_CORRUPT, "backup %s: the sha256 of %s is %s, the manifest says %s",
                       b->name, b->data_path, st.sha_in, b->sha256);
    if (st.bytes_out != b->db_bytes || strcmp(st.sha_out, b->db_sha256) != 0)
        return err_set(e, E_CORRUPT,
                       "backup %s: the database in it (%lld bytes, sha256 %s) is not the one the "
                       "manifest names (%lld bytes, sha256 %s)",
                       b->name, (long long)st.bytes_out, st.sha_out, (long long)b->db_bytes,
                       b->db_sha256);
    struct backup seen;
    memset(&seen, 0, sizeof seen);
    rc = copy_inspect(cfg, tmp_path, true, progress, arg, &seen, e);
    if (rc) {
        char why[sizeof e->msg];
        snprintf(why, sizeof why, "%s", e->msg);
        return err_set(e, rc, "backup %s: %.400s", b->name, why);
    }
    return compare_counts(b, &seen, e);
}
