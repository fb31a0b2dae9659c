/*
 * Manifests: what a backup holds (when it was taken, the schema version, rows per table, sizes
 * and sha256 of both the compressed file and the database in it) and when it was last
 * verified, as JSON beside the compressed file; and the listing of a backup directory, which
 * is the listing of its manifests.
 */
#include "backup/backup_int.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int64_t backup_elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

void backup_format_time(int64_t ms, bool with_ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y%m%dT%H%M%S", &tm);
    snprintf(out + n, 32 - n, with_ms ? ".%03dZ" : "Z", (int)(ms % 1000));
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

static int read_tables(json_t *tables, struct backup *b, const char *path, struct err *e)
{
    const char *key;
    json_t *v;
    if (!json_is_object(tables))
        return err_set(e, E_CORRUPT, "backup manifest %s: tables is not an object", path);
    json_object_foreach(tables, key, v)
    {
        if (b->ntables == BACKUP_MAX_TABLES || strlen(key) >= sizeof b->tables[0].name ||
            !json_is_integer(v))
            return err_set(e, E_CORRUPT, "backup manifest %s: bad table entry '%s'", path, key);
        snprintf(b->tables[b->ntables].name, sizeof b->tables[0].name, "%s", key);
        b->tables[b->ntables++].rows = json_integer_value(v);
    }
    return 0;
}

static int unpack(json_t *m, struct backup *b, const char *path, struct err *e)
{
    json_error_t jerr;
    const char *format = NULL, *name = NULL, *source = "", *sha = NULL, *db_sha = NULL;
    const char *data = NULL, *verify_error = "";
    json_t *tables = NULL;
    json_int_t created = 0, duration = 0, rows = 0, db_bytes = 0, bytes = 0, verified = 0;
    int version = 0, verify_ok = 0;
    if (json_unpack_ex(m, &jerr, 0,
                       "{s:s, s:s, s:I, s:I, s:i, s?s, s:o, s:I, s:I, s:I, s:s, s:s, s:s, s?I, "
                       "s?b, s?s}",
                       "format", &format, "name", &name, "created_at_ms", &created, "duration_ms",
                       &duration, "schema_version", &version, "source", &source, "tables", &tables,
                       "rows", &rows, "db_bytes", &db_bytes, "bytes", &bytes, "sha256", &sha,
                       "db_sha256", &db_sha, "data", &data, "verified_at_ms", &verified,
                       "verify_ok", &verify_ok, "verify_error", &verify_error) != 0)
        return err_set(e, E_CORRUPT, "backup manifest %s: %s", path, jerr.text);
    if (strcmp(format, BACKUP_FORMAT) != 0)
        return err_set(e, E_CORRUPT, "backup manifest %s: unknown format '%s'", path, format);
    if (strlen(sha) != 64 || strlen(db_sha) != 64 || strchr(data, '/') ||
        strlen(name) >= sizeof b->name)
        return err_set(e, E_CORRUPT, "backup manifest %s: bad sha256, data or name", path);
    snprintf(b->name, sizeof b->name, "%s", name);
    snprintf(b->source, sizeof b->source, "%s", source);
    snprintf(b->sha256, sizeof b->sha256, "%s", sha);
    snprintf(b->db_sha256, sizeof b->db_sha256, "%s", db_sha);
    snprintf(b->verify_error, sizeof b->verify_error, "%s", verify_error);
    char dir[4200];
    file_dirname(path, dir, sizeof dir);
    snprintf(b->data_path, sizeof b->data_path, "%.4000s/%.150s", dir, data);
    b->created_at_ms = created;
    b->duration_ms = duration;
    b->schema_version = version;
    b->rows = rows;
    b->db_bytes = db_bytes;
    b->bytes = bytes;
    b->verified_at_ms = verified;
    b->verify_ok = verify_ok;
    return read_tables(tables, b, path, e);
}

int manifest_read(const char *path, struct backup *b, struct err *e)
{
    memset(b, 0, sizeof *b);
    snprintf(b->manifest_path, sizeof b->manifest_path, "%s", path);
    json_error_t jerr;
    json_t *m = json_load_file(path, 0, &jerr);
    if (!m) {
        struct stat st;
        if (stat(path, &st) != 0)
            return err_set(e, E_NOTFOUND, "backup manifest %s: %s", path, strerror(errno));
        return err_set(e, E_CORRUPT, "backup manifest %s is not JSON: %s (line %d)", path,
                       jerr.text, jerr.line);
    }
    int rc = json_is_object(m) ? unpack(m, b, path, e)
                               : err_set(e, E_CORRUPT, "backup manifest %s: not an object", path);
    json_decref(m);
    if (rc) { /* only what names it stays */
        char manifest[sizeof b->manifest_path];
        snprintf(manifest, sizeof manifest, "%s", path);
        memset(b, 0, sizeof *b);
        snprintf(b->manifest_path, sizeof b->manifest_path, "%s", manifest);
    }
    return rc;
}

int manifest_write(const struct backup *b, struct err *e)
{
    json_t *tables = json_object();
    for (size_t i = 0; tables && i < b->ntables; i++)
        json_object_set_new(tables, b->tables[i].name, json_integer(b->tables[i].rows));
    char created[32];
    time_format_rfc3339(b->created_at_ms, created, sizeof created);
    const char *data = strrchr(b->data_path, '/');
    json_t *m = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:i, s:s, s:o, s:I, s:I, s:I, s:s, s:s, s:s}", "format",
        BACKUP_FORMAT, "name", b->name, "created_at", created, "created_at_ms",
        (json_int_t)b->created_at_ms, "duration_ms", (json_int_t)b->duration_ms, "schema_version",
        b->schema_version, "source", b->source, "tables", tables, "rows", (json_int_t)b->rows,
        "db_bytes", (json_int_t)b->db_bytes, "bytes", (json_int_t)b->bytes, "sha256", b->sha256,
        "db_sha256", b->db_sha256, "data", data ? data + 1 : b->data_path);
    if (m && b->verified_at_ms) {
        char verified[32];
        time_format_rfc3339(b->verified_at_ms, verified, sizeof verified);
        json_object_set_new(m, "verified_at", json_string(verified));
        json_object_set_new(m, "verified_at_ms", json_integer(b->verified_at_ms));
        json_object_set_new(m, "verify_ok", json_boolean(b->verify_ok));
        json_object_set_new(m, "verify_error", json_string(b->verify_error));
    }
    char *text = m ? json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    struct buf out;
    buf_init(&out, (size_t)1 << 20);
    int rc = text && buf_printf(&out, "%s\n", text) == 0
                 ? file_write_atomic(b->manifest_path, out.data, e)
                 : err_set(e, E_NOMEM, "out of memory");
    buf_release(&out);
    free(text);
    json_decref(m);
    return rc;
}

static int newest_first(const void *x, const void *y)
{
    const struct backup *a = x, *b = y;
    if (!a->problem[0] != !b->problem[0])
        return a->problem[0] ? 1 : -1;
    if (a->created_at_ms != b->created_at_ms)
        return a->created_at_ms > b->created_at_ms ? -1 : 1;
    return strcmp(b->name, a->name);
}

static int add_entry(const char *dir, const char *file, struct backup **out, size_t *n, size_t *cap,
                     struct err *e)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        struct backup *grown = realloc(*out, *cap * sizeof *grown);
        if (!grown)
            return err_set(e, E_NOMEM, "out of memory");
        *out = grown;
    }
    struct backup *b = &(*out)[(*n)++];
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct err why;
    if (manifest_read(path, b, &why) != 0) { /* listed, with what is wrong */
        snprintf(b->name, sizeof b->name, "%.*s",
                 (int)(strlen(file) - strlen(BACKUP_MANIFEST_SUFFIX)), file);
        snprintf(b->problem, sizeof b->problem, "%s", why.msg);
    }
    return 0;
}

int backup_list(const char *dir, struct backup **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return err_set(e, errno == ENOENT ? E_NOTFOUND : E_IO, "backup directory %s: %s", dir,
                       strerror(errno));
    size_t cap = 0;
    int rc = 0;
    struct dirent *ent;
    while (rc == 0 && (ent = readdir(d)) != NULL)
        if (strncmp(ent->d_name, BACKUP_PREFIX, strlen(BACKUP_PREFIX)) == 0 &&
            ends_with(ent->d_name, BACKUP_MANIFEST_SUFFIX))
            rc = add_entry(dir, ent->d_name, out, n, &cap, e);
    closedir(d);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
        return rc;
    }
    if (*n > 1)
        qsort(*out, *n, sizeof **out, newest_first);
    return 0;
}

/* which names a file: the manifest itself, or the compressed file beside it. */
static int find_by_path(const char *which, struct backup *out, struct err *e)
{
    char manifest[4200];
    size_t len = strlen(which);
    if (ends_with(which, BACKUP_DATA_SUFFIX))
        len -= strlen(BACKUP_DATA_SUFFIX);
    else if (ends_with(which, BACKUP_MANIFEST_SUFFIX))
        len -= strlen(BACKUP_MANIFEST_SUFFIX);
    else
        return err_set(e, E_NOTFOUND,
                       "%s is not a backup: give a name from `opsdb backup list`, "
                       "latest, or a .json or .db.zst file",
                       which);
    snprintf(manifest, sizeof manifest, "%.*s%s", (int)len, which, BACKUP_MANIFEST_SUFFIX);
    int rc = manifest_read(manifest, out, e);
    if (rc == E_NOTFOUND)
        err_set(e, E_NOTFOUND, "%s has no manifest %s beside it: it is not a whole backup", which,
                manifest);
    return rc;
}

int backup_find(const char *dir, const char *which, struct backup *out, struct err *e)
{
    if (strchr(which, '/') || ends_with(which, BACKUP_DATA_SUFFIX) ||
        ends_with(which, BACKUP_MANIFEST_SUFFIX))
        return find_by_path(which, out, e);
    struct backup *all;
    size_t n;
    int rc = backup_list(dir, &all, &n, e);
    if (rc)
        return rc;
    bool latest = strcmp(which, "latest") == 0;
    rc = latest
             ? err_set(e, E_NOTFOUND, "there is no backup in %s", dir)
             : err_set(e, E_NOTFOUND,
                       "there is no backup named '%s' in %s (see `opsdb backup list`)", which, dir);
    for (size_t i = 0; i < n; i++) {
        if (latest ? all[i].problem[0] != '\0' : strcmp(all[i].name, which) != 0)
            continue;
        *out = all[i];
        err_clear(e);
        rc = all[i].problem[0] ? err_set(e, E_CORRUPT, "%s", all[i].problem) : 0;
        break;
    }
    free(all);
    return rc;
}
