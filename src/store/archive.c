/*
 * Archives: an event partition written out before retention drops it, as zstd-compressed NDJSON
 * (one row per line, the table's column names as keys: what `opsdb ingest` reads) next to a
 * manifest that says what it holds (table, partition, time range, rows, bytes, sha256 of the
 * compressed file). Files land atomically — temp file, fsync, rename, then the manifest the same
 * way, then the directory is fsynced — so a manifest always names a whole file, and an archive
 * is either listed or not there.
 *
 *   <dir>/<table>/<partition>.ndjson.zst     the rows, ordered by ts
 *   <dir>/<table>/<partition>.json           the manifest (format "opsdb-archive-1")
 *
 * JSON columns are written as strings holding their stored text, so a restore gives back the
 * very bytes that were stored. Nothing here knows the back end: rows come in and go out as
 * struct value rows; store.c and the back end move them in and out of the database.
 */
#include "store/store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define ARCHIVE_FORMAT "opsdb-archive-1"
#define ARCHIVE_ZSTD_LEVEL 9
#define ARCHIVE_MAX_LINE (64u << 20)

struct archive_writer {
    const struct table *t;
    char dir[4096], partition[128];
    char tmp_path[4200];
    int fd;
    ZSTD_CCtx *cctx;
    crypto_hash_sha256_state sha;
    struct buf line; /* rows not yet compressed */
    uint8_t *zbuf;   /* compressed output on its way to the file */
    size_t zcap;
    int64_t rows, bytes;
};

static void sha_hex(crypto_hash_sha256_state *sha, char hex[65])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(sha, digest);
    sodium_bin2hex(hex, 65, digest, sizeof digest);
}

static int make_dir(const char *path, struct err *e)
{
    if (mkdir(path, 0750) == 0 || errno == EEXIST)
        return 0;
    return err_set(e, E_IO, "archive: cannot create the directory %s: %s", path, strerror(errno));
}

int archive_writer_open(struct archive_writer **out, const char *dir, const struct table *t,
                        const char *partition, struct err *e)
{
    if (sodium_init() < 0)
        return err_set(e, E_IO, "archive: libsodium could not be initialised");
    struct archive_writer *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(e, E_NOMEM, "out of memory");
    w->t = t;
    w->fd = -1;
    snprintf(w->partition, sizeof w->partition, "%s", partition);
    int rc = make_dir(dir, e);
    snprintf(w->dir, sizeof w->dir, "%s/%s", dir, t->name);
    if (rc == 0)
        rc = make_dir(w->dir, e);
    snprintf(w->tmp_path, sizeof w->tmp_path, "%s/.%s.ndjson.zst.tmp", w->dir, partition);
    if (rc == 0 && (w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) < 0)
        rc = err_set(e, E_IO, "archive: cannot create %s: %s", w->tmp_path, strerror(errno));
    buf_init(&w->line, ARCHIVE_MAX_LINE);
    w->zcap = ZSTD_CStreamOutSize();
    if (rc == 0 && (!(w->cctx = ZSTD_createCCtx()) || !(w->zbuf = malloc(w->zcap))))
        rc = err_set(e, E_NOMEM, "archive: no memory for a zstd stream");
    if (rc == 0) {
        ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, ARCHIVE_ZSTD_LEVEL);
        ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
        crypto_hash_sha256_init(&w->sha);
    }
    if (rc) {
        archive_writer_abort(&w);
        return rc;
    }
    *out = w;
    return 0;
}

/* Compresses what w->line holds (and ends the frame when last) into the file. */
static int pump(struct archive_writer *w, bool last, struct err *e)
{
    ZSTD_inBuffer in = {w->line.data, w->line.len, 0};
    for (;;) {
        ZSTD_outBuffer out = {w->zbuf, w->zcap, 0};
        size_t left = ZSTD_compressStream2(w->cctx, &out, &in, last ? ZSTD_e_end : ZSTD_e_continue);
        if (ZSTD_isError(left))
            return err_set(e, E_IO, "archive: compressing: %s", ZSTD_getErrorName(left));
        if (out.pos > 0) {
            if (file_write_all(w->fd, w->zbuf, out.pos) != 0)
                return err_set(e, E_IO, "archive: writing %s: %s", w->tmp_path, strerror(errno));
            crypto_hash_sha256_update(&w->sha, w->zbuf, out.pos);
            w->bytes += (int64_t)out.pos;
        }
        if (last ? left == 0 : in.pos == in.size)
            break;
    }
    w->line.len = 0;
    return 0;
}

static void put_json_string(struct buf *b, const char *s, size_t len)
{
    buf_putc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(b, s + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c == '\n')
            buf_printf(b, "\\n");
        else if (c == '\t')
            buf_printf(b, "\\t");
        else
            buf_printf(b, "\\u%04x", c);
    }
    buf_append(b, s + run, len - run);
    buf_putc(b, '"');
}

int archive_writer_row(struct archive_writer *w, const struct value *row, struct err *e)
{
    struct buf *b = &w->line;
    size_t start = b->len;
    bool first = true;
    buf_putc(b, '{');
    for (size_t j = 0; j < w->t->ncolumns; j++) {
        const struct value *v = &row[j];
        if (v->type == VAL_NULL || (v->type == VAL_REAL && !isfinite(v->d)))
            continue;
        buf_printf(b, "%s\"%s\":", first ? "" : ",", w->t->columns[j].name);
        first = false;
        if (v->type == VAL_INT)
            buf_printf(b, "%lld", (long long)v->i);
        else if (v->type == VAL_REAL)
            buf_printf(b, "%.17g", v->d);
        else
            put_json_string(b, v->s, v->len);
    }
    if (buf_printf(b, "}\n") != 0) {
        b->len = start;
        return err_set(e, E_LIMIT, "archive: a row of %s is longer than %u bytes", w->partition,
                       ARCHIVE_MAX_LINE);
    }
    w->rows++;
    return b->len >= (1u << 20) ? pump(w, false, e) : 0;
}

int archive_writer_finish(struct archive_writer **wp, int64_t from_ms, int64_t to_ms, struct err *e)
{
    struct archive_writer *w = *wp;
    int rc = pump(w, true, e);
    if (rc == 0 && fsync(w->fd) != 0)
        rc = err_set(e, E_IO, "archive: syncing %s: %s", w->tmp_path, strerror(errno));
    char data_path[4300], manifest_path[4300], hex[65];
    snprintf(data_path, sizeof data_path, "%s/%s.ndjson.zst", w->dir, w->partition);
    snprintf(manifest_path, sizeof manifest_path, "%s/%s.json", w->dir, w->partition);
    if (rc == 0 && rename(w->tmp_path, data_path) != 0)
        rc = err_set(e, E_IO, "archive: renaming %s: %s", w->tmp_path, strerror(errno));
    if (rc == 0) {
        sha_hex(&w->sha, hex);
        json_t *m = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:i, s:s}", "format",
                              ARCHIVE_FORMAT, "table", w->t->name, "partition", w->partition,
                              "from_ms", (json_int_t)from_ms, "to_ms", (json_int_t)to_ms, "rows",
                              (json_int_t)w->rows, "bytes", (json_int_t)w->bytes, "sha256", hex,
                              "created_at_ms", (json_int_t)time_now_ms(), "schema_version",
                              schema_version(), "data", strrchr(data_path, '/') + 1);
        char *text = m ? json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        char *line = text ? malloc(strlen(text) + 2) : NULL;
        if (line)
            snprintf(line, strlen(text) + 2, "%s\n", text);
        rc =
            line ? file_write_atomic(manifest_path, line, e) : err_set(e, E_NOMEM, "out of memory");
        free(line);
        free(text);
        json_decref(m);
    }
    if (rc == 0) /* the data file's rename */
        rc = file_sync_dir(w->dir, e);
    if (rc == 0) { /* the file is in place: abort must not remove it */
        close(w->fd);
        w->fd = -1;
        w->tmp_path[0] = '\0';
    }
    archive_writer_abort(wp);
    return rc;
}

void archive_writer_abort(struct archive_writer **wp)
{
    struct archive_writer *w = *wp;
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (w->tmp_path[0])
        unlink(w->tmp_path);
    ZSTD_freeCCtx(w->cctx);
    free(w->zbuf);
    buf_release(&w->line);
    free(w);
    *wp = NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Reading: manifests, and the rows back.
 */

static int read_manifest(const char *dir, const char *path, struct store_archive *a, struct err *e)
{
    json_error_t jerr;
    json_t *m = json_load_file(path, 0, &jerr);
    if (!m)
        return err_set(e, E_CORRUPT, "archive manifest %s: %s (line %d)", path, jerr.text,
                       jerr.line);
    const char *format = NULL, *table = NULL, *partition = NULL, *sha = NULL, *data = NULL;
    json_int_t from = 0, to = 0, rows = 0, bytes = 0, created = 0;
    int rc = 0;
    if (json_unpack_ex(m, &jerr, 0, "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:s}", "format",
                       &format, "table", &table, "partition", &partition, "from_ms", &from, "to_ms",
                       &to, "rows", &rows, "bytes", &bytes, "sha256", &sha, "created_at_ms",
                       &created, "data", &data) != 0)
        rc = err_set(e, E_CORRUPT, "archive manifest %s: %s", path, jerr.text);
    else if (strcmp(format, ARCHIVE_FORMAT) != 0)
        rc = err_set(e, E_CORRUPT, "archive manifest %s: unknown format '%s'", path, format);
    else if (!schema_table(table) || schema_table(table)->kind != TABLE_EVENTS)
        rc = err_set(e, E_CORRUPT, "archive manifest %s: '%s' is not an event table", path, table);
    else if (strlen(sha) != 64 || strchr(data, '/') || strlen(partition) >= sizeof a->partition)
        rc = err_set(e, E_CORRUPT, "archive manifest %s: bad sha256, data or partition", path);
    if (rc == 0) {
        memset(a, 0, sizeof *a);
        a->table = schema_table(table);
        snprintf(a->partition, sizeof a->partition, "%s", partition);
        snprintf(a->sha256, sizeof a->sha256, "%s", sha);
        snprintf(a->data_path, sizeof a->data_path, "%s/%s/%s", dir, table, data);
        snprintf(a->manifest_path, sizeof a->manifest_path, "%s", path);
        a->from_ms = from;
        a->to_ms = to;
        a->rows = rows;
        a->bytes = bytes;
        a->created_at_ms = created;
    }
    json_decref(m);
    return rc;
}

static int by_table_and_time(const void *x, const void *y)
{
    const struct store_archive *a = x, *b = y;
    int c = strcmp(a->table->name, b->table->name);
    return c ? c : a->from_ms < b->from_ms ? -1 : a->from_ms > b->from_ms;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

int store_archive_list(const char *dir, struct store_archive **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    DIR *top = opendir(dir);
    if (!top)
        return errno == ENOENT ? 0
                               : err_set(e, E_IO, "archive directory %s: %s", dir, strerror(errno));
    size_t cap = 0;
    int rc = 0;
    size_t ntables;
    const struct table *tables = schema_tables(&ntables);
    for (size_t i = 0; i < ntables && rc == 0; i++) {
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/%s", dir, tables[i].name);
        DIR *d = tables[i].kind == TABLE_EVENTS ? opendir(sub) : NULL;
        struct dirent *ent;
        while (d && rc == 0 && (ent = readdir(d)) != NULL) {
            if (ent->d_name[0] == '.' || !ends_with(ent->d_name, ".json"))
                continue;
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                struct store_archive *grown = realloc(*out, cap * sizeof *grown);
                if (!grown) {
                    rc = err_set(e, E_NOMEM, "out of memory");
                    break;
                }
                *out = grown;
            }
            char path[4500];
            snprintf(path, sizeof path, "%s/%s", sub, ent->d_name);
            struct store_archive *a = &(*out)[*n];
            struct err why;
            err_clear(&why);
            if (read_manifest(dir, path, a, &why) != 0) { /* listed, with what is wrong */
                memset(a, 0, sizeof *a);
                a->table = &tables[i];
                snprintf(a->partition, sizeof a->partition, "%.*s",
                         (int)(strlen(ent->d_name) - strlen(".json")), ent->d_name);
                snprintf(a->manifest_path, sizeof a->manifest_path, "%s", path);
                snprintf(a->problem, sizeof a->problem, "%s", why.msg);
            }
            (*n)++;
        }
        if (d)
            closedir(d);
    }
    closedir(top);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
        return rc;
    }
    if (*n > 1)
        qsort(*out, *n, sizeof **out, by_table_and_time);
    return 0;
}

int store_archive_find(const char *dir, const char *partition, struct store_archive *out,
                       struct err *e)
{
    struct store_archive *all;
    size_t n;
    int rc = store_archive_list(dir, &all, &n, e);
    if (rc)
        return rc;
    rc = err_set(e, E_NOTFOUND, "no archive of a partition named '%s' in %s", partition, dir);
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].partition, partition) == 0) {
            *out = all[i];
            err_clear(e);
            rc = all[i].problem[0] ? err_set(e, E_CORRUPT, "%s", all[i].problem) : 0;
        }
    free(all);
    return rc;
}

/* One NDJSON line into the next row of b. */
static int parse_line(const struct store_archive *a, const char *line, size_t len, int64_t lineno,
                      struct batch *b, struct err *e)
{
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        return err_set(e, E_CORRUPT, "archive %s, line %lld: not a JSON object%s%s", a->partition,
                       (long long)lineno, obj ? "" : ": ", obj ? "" : jerr.text);
    }
    struct value *row = batch_add_row(b);
    int rc = row ? 0 : err_set(e, E_NOMEM, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int col = rc == 0 ? schema_column(a->table, key) : -1;
        if (rc)
            break;
        if (col < 0) {
            rc = err_set(e, E_CORRUPT, "archive %s, line %lld: %s has no column '%s'", a->partition,
                         (long long)lineno, a->table->name, key);
            break;
        }
        enum col_type type = a->table->columns[col].type;
        struct value *x = &row[col];
        if (json_is_null(v))
            continue;
        if ((type == COL_TS || type == COL_INT || type == COL_BOOL) && json_is_integer(v)) {
            x->type = VAL_INT;
            x->i = json_integer_value(v);
        } else if (type == COL_REAL && json_is_number(v)) {
            x->type = VAL_REAL;
            x->d = json_number_value(v);
        } else if ((type == COL_TEXT || type == COL_JSON) && json_is_string(v)) {
            x->type = VAL_TEXT;
            x->len = (uint32_t)json_string_length(v);
            x->s = arena_strndup(&b->arena, json_string_value(v), x->len);
        } else {
            rc = err_set(e, E_CORRUPT,
                         "archive %s, line %lld: column '%s' has a value of the "
                         "wrong type",
                         a->partition, (long long)lineno, key);
        }
    }
    json_decref(obj);
    return rc;
}

int archive_read(const struct store_archive *a, size_t batch_rows, archive_sink sink, void *arg,
                 struct err *e)
{
    int fd = open(a->data_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, errno == ENOENT ? E_NOTFOUND : E_IO, "archive %s: cannot open %s: %s",
                       a->partition, a->data_path, strerror(errno));
    if (sodium_init() < 0) {
        close(fd);
        return err_set(e, E_IO, "archive: libsodium could not be initialised");
    }
    crypto_hash_sha256_state sha;
    crypto_hash_sha256_init(&sha);
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    size_t in_cap = ZSTD_DStreamInSize(), out_cap = ZSTD_DStreamOutSize();
    uint8_t *inb = malloc(in_cap), *outb = malloc(out_cap);
    struct buf line;
    buf_init(&line, ARCHIVE_MAX_LINE);
    struct batch b;
    batch_init(&b, a->table);
    int64_t bytes = 0, lines = 0;
    size_t frame_left = 1; /* 0 once a frame ended exactly */
    int rc = dctx && inb && outb ? 0 : err_set(e, E_NOMEM, "out of memory");
    ssize_t got;
    while (rc == 0 && (got = read(fd, inb, in_cap)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = err_set(e, E_IO, "archive %s: reading: %s", a->partition, strerror(errno));
            break;
        }
        bytes += got;
        crypto_hash_sha256_update(&sha, inb, (unsigned long long)got);
        ZSTD_inBuffer in = {inb, (size_t)got, 0};
        while (rc == 0 && in.pos < in.size) {
            ZSTD_outBuffer out = {outb, out_cap, 0};
            frame_left = ZSTD_decompressStream(dctx, &out, &in);
            if (ZSTD_isError(frame_left)) {
                rc = err_set(e, E_CORRUPT, "archive %s is corrupt: %s", a->partition,
                             ZSTD_getErrorName(frame_left));
                break;
            }
            const char *p = (const char *)outb, *end = p + out.pos;
            while (rc == 0 && p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *stop = nl ? nl : end;
                if (buf_append(&line, p, (size_t)(stop - p)) != 0) {
                    rc = err_set(e, E_CORRUPT, "archive %s, line %lld: longer than %u bytes",
                                 a->partition, (long long)lines + 1, ARCHIVE_MAX_LINE);
                    break;
                }
                p = nl ? nl + 1 : end;
                if (!nl)
                    break;
                rc = parse_line(a, line.data, line.len, ++lines, &b, e);
                line.len = 0;
                if (rc == 0 && b.nrows >= batch_rows) {
                    rc = sink ? sink(arg, &b, e) : 0;
                    batch_release(&b);
                    batch_init(&b, a->table);
                }
            }
        }
    }
    if (rc == 0 && (frame_left != 0 || line.len != 0))
        rc = err_set(e, E_CORRUPT, "archive %s is cut short", a->partition);
    if (rc == 0 && b.nrows > 0)
        rc = sink ? sink(arg, &b, e) : 0;
    char hex[65];
    sha_hex(&sha, hex);
    if (rc == 0 && bytes != a->bytes)
        rc = err_set(e, E_CORRUPT, "archive %s: %lld bytes, the manifest says %lld", a->partition,
                     (long long)bytes, (long long)a->bytes);
    else if (rc == 0 && strcmp(hex, a->sha256) != 0)
        rc = err_set(e, E_CORRUPT, "archive %s: sha256 %s, the manifest says %s", a->partition, hex,
                     a->sha256);
    else if (rc == 0 && lines != a->rows)
        rc = err_set(e, E_CORRUPT, "archive %s: %lld rows, the manifest says %lld", a->partition,
                     (long long)lines, (long long)a->rows);
    batch_release(&b);
    buf_release(&line);
    free(outb);
    free(inb);
    ZSTD_freeDCtx(dctx);
    close(fd);
    return rc;
}

int store_archive_verify(const struct store_archive *a, struct err *e)
{
    if (a->problem[0])
        return err_set(e, E_CORRUPT, "%s", a->problem);
    return archive_read(a, 4096, NULL, NULL, e);
}

int store_archive_expire(const char *dir, int64_t before_ms, int64_t *removed, struct err *e)
{
    struct store_archive *all;
    size_t n;
    int rc = store_archive_list(dir, &all, &n, e);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (all[i].problem[0] || all[i].to_ms > before_ms)
            continue; /* what cannot be read is not removed: verify names it */
        /* the manifest first: an archive without one is no longer listed */
        if (unlink(all[i].manifest_path) != 0 || (unlink(all[i].data_path) != 0 && errno != ENOENT))
            rc = err_set(e, E_IO, "archive %s: removing it: %s", all[i].partition, strerror(errno));
        else
            (*removed)++;
    }
    free(all);
    return rc;
}
