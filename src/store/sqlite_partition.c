/*
 * Time partitions of event tables, the writer's side: each row goes to the table of its time
 * window (<table>_p<YYYYMMDD> for day windows), created with its indexes on first use and listed
 * in opsdb_partitions (name, table, [start_ts, end_ts), rows, state); the event rollups and
 * the per-run rollup fold in each partition's new rows; retention drops partitions whole (DROP
 * TABLE: no row-by-row DELETE, however many rows a day holds). The virtual table that reads them
 * back as one table is sqlite_partition_vtab.c.
 *
 * A row goes to the partition whose range holds its ts, whatever window made it; a missing one
 * is created aligned to the table's window now configured, so changing the window only shapes
 * new partitions. Every change happens in the caller's write transaction; after a rollback the
 * in-memory list is reloaded (sqlite_partitions_forget), as partitions created inside it are
 * gone.
 */
#include "store/colpack.h"
#include "store/sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct part {
    char name[128];
    int64_t start_ts, end_ts;
    bool packed;          /* cold: its rows are column-packed blocks (sqlite_packed_vtab.c) */
    bool restored;        /* brought back from an archive: retention leaves it alone */
    int64_t written_ms;   /* monotonic time of this process's last write to it (0: none) */
    sqlite3_stmt *insert; /* NULL while packed */
    struct sqlite_event_rollup *rollup; /* NULL for a table without rollups */
    struct sqlite_run_rollup *runs;     /* NULL for a table without a per-run rollup */
};

struct sqlite_partitions {
    sqlite3 *db;
    const struct table *t;
    int64_t window_ms;
    bool loaded;
    struct part *parts; /* sorted by start_ts */
    size_t n, cap;
    sqlite3_stmt *count_rows; /* opsdb_partitions.rows += n */
};

void sqlite_partition_catalogue_ddl(struct buf *b)
{
    buf_printf(b, "CREATE TABLE IF NOT EXISTS opsdb_partitions (name TEXT PRIMARY KEY, "
                  "table_name TEXT NOT NULL, start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, "
                  "rows INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'hot', "
                  "created_at INTEGER NOT NULL);\n"
                  "CREATE INDEX IF NOT EXISTS opsdb_partitions_table_start ON opsdb_partitions "
                  "(table_name, start_ts);\n");
}

static int64_t floor_to(int64_t ts, int64_t size)
{
    int64_t b = ts / size * size;
    return b > ts ? b - size : b;
}

void sqlite_partition_name(const struct table *t, int64_t start_ts, int64_t window_ms, char *out,
                           size_t size)
{
    time_t secs = (time_t)(start_ts / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    if (window_ms % MS_PER_DAY == 0)
        snprintf(out, size, "%s_p%04d%02d%02d", t->name, tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday);
    else
        snprintf(out, size, "%s_p%04d%02d%02dt%02d%02d%02d", t->name, tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int sqlite_partitions_new(struct sqlite_partitions **out, sqlite3 *db, const struct table *t,
                          int64_t window_ms, struct err *e)
{
    struct sqlite_partitions *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(e, E_NOMEM, "out of memory");
    p->db = db;
    p->t = t;
    p->window_ms = window_ms > 0 ? window_ms : MS_PER_DAY;
    if (sqlite3_prepare_v3(db, "UPDATE opsdb_partitions SET rows = rows + ?2 WHERE name = ?1", -1,
                           SQLITE_PREPARE_PERSISTENT, &p->count_rows, NULL) != SQLITE_OK) {
        int rc = err_set(e, E_STORE, "preparing the partition catalogue: %s", sqlite3_errmsg(db));
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* Releases what writes into pt (its plain table is about to go, or the list is reloaded). */
static void close_part(struct part *pt)
{
    sqlite3_finalize(pt->insert);
    pt->insert = NULL;
    sqlite_event_rollup_free(&pt->rollup);
    sqlite_run_rollup_free(&pt->runs);
}

void sqlite_partitions_forget(struct sqlite_partitions *p)
{
    for (size_t i = 0; i < p->n; i++)
        close_part(&p->parts[i]);
    p->n = 0;
    p->loaded = false;
}

void sqlite_partitions_free(struct sqlite_partitions **pp)
{
    struct sqlite_partitions *p = *pp;
    if (!p)
        return;
    sqlite_partitions_forget(p);
    sqlite3_finalize(p->count_rows);
    free(p->parts);
    free(p);
    *pp = NULL;
}

/* Prepares the insert and the rollup fold of a partition the catalogue lists. */
static int open_part(struct sqlite_partitions *p, struct part *pt, struct err *e)
{
    struct buf sql;
    buf_init(&sql, 1 << 16);
    sqlite_insert_sql(&sql, p->t, pt->name);
    int rc = 0;
    if (sqlite3_prepare_v3(p->db, sql.data, -1, SQLITE_PREPARE_PERSISTENT, &pt->insert, NULL) !=
        SQLITE_OK)
        rc = err_set(e, E_STORE, "preparing inserts into %s: %s", pt->name, sqlite3_errmsg(p->db));
    buf_release(&sql);
    if (rc == 0)
        rc = sqlite_event_rollup_new(&pt->rollup, p->db, p->t, pt->name, e);
    if (rc == 0)
        rc = sqlite_run_rollup_new(&pt->runs, p->db, p->t, pt->name, e);
    return rc;
}

static int add_part(struct sqlite_partitions *p, const char *name, int64_t start, int64_t end,
                    const char *state, struct err *e)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        struct part *grown = realloc(p->parts, cap * sizeof *grown);
        if (!grown)
            return err_set(e, E_NOMEM, "out of memory");
        p->parts = grown;
        p->cap = cap;
    }
    size_t at = p->n;
    while (at > 0 && p->parts[at - 1].start_ts > start)
        at--;
    memmove(p->parts + at + 1, p->parts + at, (p->n - at) * sizeof *p->parts);
    struct part *pt = &p->parts[at];
    memset(pt, 0, sizeof *pt);
    snprintf(pt->name, sizeof pt->name, "%s", name);
    pt->start_ts = start;
    pt->end_ts = end;
    pt->packed = strcmp(state, "cold") == 0;
    pt->restored = strcmp(state, "restored") == 0;
    p->n++;
    return pt->packed ? 0 : open_part(p, pt, e);
}

static int load(struct sqlite_partitions *p, struct err *e)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(p->db,
                           "SELECT name, start_ts, end_ts, state FROM opsdb_partitions "
                           "WHERE table_name = ? ORDER BY start_ts",
                           -1, &q, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "reading partitions: %s", sqlite3_errmsg(p->db));
    sqlite3_bind_text(q, 1, p->t->name, -1, SQLITE_STATIC);
    int rc = 0;
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW)
        rc = add_part(p, (const char *)sqlite3_column_text(q, 0), sqlite3_column_int64(q, 1),
                      sqlite3_column_int64(q, 2), (const char *)sqlite3_column_text(q, 3), e);
    sqlite3_finalize(q);
    p->loaded = rc == 0;
    return rc;
}

/* Creates the partition of ts's window (table, indexes, catalogue row). */
static int create_part(struct sqlite_partitions *p, int64_t ts, struct part **out, struct err *e)
{
    int64_t start = floor_to(ts, p->window_ms), end = start + p->window_ms;
    /* a partition of another window may cover part of this one: stop where it starts */
    for (size_t i = 0; i < p->n; i++)
        if (p->parts[i].start_ts > ts && p->parts[i].start_ts < end)
            end = p->parts[i].start_ts;
        else if (p->parts[i].end_ts <= ts && p->parts[i].end_ts > start)
            start = p->parts[i].end_ts;
    char name[128];
    /* a window cut short by a neighbour of another width is named by its exact start, so it
     * never takes the name of a whole window of the same day */
    bool whole = end - start == p->window_ms && floor_to(start, p->window_ms) == start;
    sqlite_partition_name(p->t, start, whole ? p->window_ms : 1000, name, sizeof name);
    struct buf ddl;
    buf_init(&ddl, 1 << 16);
    sqlite_event_table_ddl(&ddl, p->t, name);
    buf_printf(&ddl,
               "INSERT INTO opsdb_partitions (name, table_name, start_ts, end_ts, created_at) "
               "VALUES ('%s', '%s', %lld, %lld, %lld);",
               name, p->t->name, (long long)start, (long long)end, (long long)time_now_ms());
    int rc = sqlite_exec(p->db, ddl.data, e);
    buf_release(&ddl);
    if (rc == 0)
        rc = add_part(p, name, start, end, "hot", e);
    if (rc == 0)
        for (size_t i = 0; i < p->n; i++)
            if (strcmp(p->parts[i].name, name) == 0)
                *out = &p->parts[i];
    return rc;
}

static int part_for(struct sqlite_partitions *p, int64_t ts, struct part **out, struct err *e)
{
    if (!p->loaded) {
        int rc = load(p, e);
        if (rc)
            return rc;
    }
    size_t lo = 0, hi = p->n; /* the last partition starting at or before ts */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->parts[mid].start_ts <= ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0 && ts < p->parts[lo - 1].end_ts) {
        *out = &p->parts[lo - 1];
        return 0;
    }
    return create_part(p, ts, out, e);
}

/* ---------------------------------------------------------------------------------------------
 * Packing: a partition past storage.compress_events_after becomes column-packed blocks
 * (colpack.c) read through the opsdb_packed virtual table under its own name; a late row for it
 * unpacks it again (the next pass packs it anew), so the write path stays one plain INSERT.
 */

#define PACK_BLOCK_ROWS 8192
#define PACK_BLOCK_TEXT_BYTES (4u << 20) /* bounds what reading one block takes */

/* The rows of the block being packed: rowid, then the table's columns; strings in the arena.
 * The column that groups the rows is picked on the partition's first block (colpack.h). */
struct pack_block {
    size_t ncols, nrows, text_bytes;
    struct value *cells;
    struct arena arena;
    int group;
    bool group_picked;
};

static bool same_value(const struct value *a, const struct value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case VAL_INT:
        return a->i == b->i;
    case VAL_REAL:
        return memcmp(&a->d, &b->d, sizeof a->d) == 0;
    case VAL_TEXT:
        return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    default:
        return true;
    }
}

/* Encodes the block, proves it decodes to the same rows, and inserts it into the blocks table. */
static int flush_block(struct pack_block *pb, sqlite3_stmt *insert, int ts_col, struct buf *blob,
                       struct store_pack_stats *stats, struct err *e)
{
    blob->len = 0;
    if (!pb->group_picked) {
        pb->group = colpack_pick_group(pb->cells, pb->nrows, pb->ncols);
        pb->group_picked = true;
    }
    int rc = colpack_encode(pb->cells, pb->nrows, pb->ncols, pb->group, blob, e);
    if (rc)
        return rc;
    struct colpack_block check;
    colpack_block_init(&check);
    rc = colpack_decode(blob->data, blob->len, &check, e);
    for (size_t i = 0; rc == 0 && i < pb->nrows * pb->ncols; i++)
        if (!same_value(&check.cells[i], &pb->cells[i]))
            rc = err_set(e, E_CORRUPT, "packing: a block did not decode to its own rows");
    colpack_block_release(&check);
    if (rc)
        return rc;
    int64_t min_rowid = INT64_MAX, max_rowid = INT64_MIN;
    for (size_t r = 0; r < pb->nrows; r++) {
        int64_t rowid = pb->cells[r * pb->ncols].i;
        min_rowid = rowid < min_rowid ? rowid : min_rowid;
        max_rowid = rowid > max_rowid ? rowid : max_rowid;
    }
    sqlite3_bind_int64(insert, 1, pb->cells[(size_t)ts_col + 1].i);
    sqlite3_bind_int64(insert, 2, pb->cells[(pb->nrows - 1) * pb->ncols + (size_t)ts_col + 1].i);
    sqlite3_bind_int64(insert, 3, min_rowid);
    sqlite3_bind_int64(insert, 4, max_rowid);
    sqlite3_bind_int64(insert, 5, (int64_t)pb->nrows);
    sqlite3_bind_blob(insert, 6, blob->data, (int)blob->len, SQLITE_STATIC);
    rc = sqlite3_step(insert);
    sqlite3_reset(insert);
    if (rc != SQLITE_DONE)
        return err_set(e, E_STORE, "packing: %s", sqlite3_errmsg(sqlite3_db_handle(insert)));
    stats->rows_packed += (int64_t)pb->nrows;
    stats->bytes_packed += (int64_t)blob->len;
    pb->nrows = 0;
    pb->text_bytes = 0;
    arena_release(&pb->arena);
    arena_init(&pb->arena);
    return 0;
}

/* Columns first.. first+n-1 of q's current row as values; text is copied into a, or with a
 * NULL points into q (valid until q steps). */
static void row_values(sqlite3_stmt *q, int first, size_t n, struct value *out, struct arena *a)
{
    for (size_t j = 0; j < n; j++) {
        struct value *v = &out[j];
        int col = first + (int)j;
        memset(v, 0, sizeof *v);
        switch (sqlite3_column_type(q, col)) {
        case SQLITE_INTEGER:
            v->type = VAL_INT;
            v->i = sqlite3_column_int64(q, col);
            break;
        case SQLITE_FLOAT:
            v->type = VAL_REAL;
            v->d = sqlite3_column_double(q, col);
            break;
        case SQLITE_NULL:
            v->type = VAL_NULL;
            break;
        default: /* text (event tables have no blob columns; a blob's bytes would read as text) */
            v->type = VAL_TEXT;
            v->s = (const char *)sqlite3_column_text(q, col);
            v->len = (uint32_t)sqlite3_column_bytes(q, col);
            if (a)
                v->s = arena_strndup(a, v->s, v->len);
        }
    }
}

/* Adds the current row of q (rowid, then the columns) to the block. */
static void take_row(struct pack_block *pb, sqlite3_stmt *q)
{
    struct value *row = pb->cells + pb->nrows * pb->ncols;
    row_values(q, 0, pb->ncols, row, &pb->arena);
    for (size_t j = 0; j < pb->ncols; j++)
        pb->text_bytes += row[j].type == VAL_TEXT ? row[j].len : 0;
    pb->nrows++;
}

/* Every column of t after its rowid, for SELECT and INSERT lists. */
static void column_list(struct buf *b, const struct table *t)
{
    for (size_t j = 0; j < t->ncolumns; j++)
        buf_printf(b, ", %s", t->columns[j].name);
}

static int pack(struct sqlite_partitions *p, struct part *pt, struct store_pack_stats *stats,
                struct err *e)
{
    struct pack_block pb = {.ncols = p->t->ncolumns + 1};
    arena_init(&pb.arena);
    pb.cells = malloc(PACK_BLOCK_ROWS * pb.ncols * sizeof *pb.cells);
    struct buf sql, blob;
    buf_init(&sql, 1 << 16);
    buf_init(&blob, 2 * COLPACK_MAX_RAW_BYTES);
    sqlite3_stmt *rows = NULL, *insert = NULL;
    int rc = pb.cells ? 0 : err_set(e, E_NOMEM, "no memory to pack %s", pt->name);
    if (rc == 0) {
        sqlite_packed_blocks_ddl(&sql, pt->name);
        rc = sqlite_exec(p->db, sql.data, e);
    }
    sql.len = 0;
    buf_printf(&sql, "SELECT rowid");
    column_list(&sql, p->t);
    buf_printf(&sql, " FROM %s ORDER BY ts, rowid", pt->name);
    char insert_sql[256];
    snprintf(insert_sql, sizeof insert_sql,
             "INSERT INTO %s_packed (min_ts, max_ts, min_rowid, max_rowid, rows, data) VALUES "
             "(?, ?, ?, ?, ?, ?)",
             pt->name);
    if (rc == 0 && (sqlite3_prepare_v2(p->db, sql.data, -1, &rows, NULL) != SQLITE_OK ||
                    sqlite3_prepare_v2(p->db, insert_sql, -1, &insert, NULL) != SQLITE_OK))
        rc = err_set(e, E_STORE, "packing %s: %s", pt->name, sqlite3_errmsg(p->db));
    int step = SQLITE_DONE;
    int ts_col = schema_column(p->t, "ts");
    while (rc == 0 && (step = sqlite3_step(rows)) == SQLITE_ROW) {
        take_row(&pb, rows);
        if (pb.nrows == PACK_BLOCK_ROWS || pb.text_bytes >= PACK_BLOCK_TEXT_BYTES)
            rc = flush_block(&pb, insert, ts_col, &blob, stats, e);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = err_set(e, E_STORE, "packing %s: %s", pt->name, sqlite3_errmsg(p->db));
    if (rc == 0 && pb.nrows > 0)
        rc = flush_block(&pb, insert, ts_col, &blob, stats, e);
    sqlite3_finalize(rows);
    sqlite3_finalize(insert);
    if (rc == 0) { /* the plain table goes: nothing may hold a statement on it */
        close_part(pt);
        sql.len = 0;
        buf_printf(&sql,
                   "DROP TABLE %s;\nCREATE VIRTUAL TABLE %s USING opsdb_packed(%s, %s_packed);\n"
                   "UPDATE opsdb_partitions SET state = 'cold' WHERE name = '%s';",
                   pt->name, pt->name, p->t->name, pt->name, pt->name);
        rc = sqlite_exec(p->db, sql.data, e);
        pt->packed = true; /* after a failure the caller rolls back and forgets the list */
    }
    if (rc == 0) {
        stats->partitions_packed++;
        snprintf(stats->last, sizeof stats->last, "%s", pt->name);
    }
    buf_release(&blob);
    buf_release(&sql);
    arena_release(&pb.arena);
    free(pb.cells);
    return rc;
}

/* Turns a packed partition back into a plain table with the same rows and rowids. */
static int unpack(struct sqlite_partitions *p, struct part *pt, struct err *e)
{
    struct buf sql;
    buf_init(&sql, 1 << 16);
    buf_printf(&sql,
               "CREATE VIRTUAL TABLE temp.opsdb_unpacking USING opsdb_packed(%s, %s_packed);\n"
               "DROP TABLE main.%s;\n",
               p->t->name, pt->name, pt->name);
    sqlite_event_table_ddl(&sql, p->t, pt->name);
    buf_printf(&sql, "INSERT INTO main.%s (rowid", pt->name);
    column_list(&sql, p->t);
    buf_printf(&sql, ") SELECT rowid");
    column_list(&sql, p->t);
    buf_printf(&sql,
               " FROM temp.opsdb_unpacking ORDER BY rowid;\nDROP TABLE temp.opsdb_unpacking;\n"
               "DROP TABLE main.%s_packed;\n"
               "UPDATE opsdb_partitions SET state = 'hot' WHERE name = '%s';",
               pt->name, pt->name);
    int rc = sqlite_exec(p->db, sql.data, e);
    buf_release(&sql);
    if (rc)
        return rc;
    log_info("%s was packed and got a late row: unpacked (packed again by the next pass)",
             pt->name);
    pt->packed = false;
    return open_part(p, pt, e);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sqlite_partitions_pack(struct sqlite_partitions *p, int64_t before_ms, int64_t quiet_ms,
                           struct store_pack_stats *stats, struct err *e)
{
    if (!p->loaded) {
        int rc = load(p, e);
        if (rc)
            return rc;
    }
    int64_t now = mono_ms();
    for (size_t i = 0; i < p->n; i++) {
        struct part *pt = &p->parts[i];
        if (pt->packed || pt->end_ts > before_ms)
            continue;
        if (pt->written_ms && now - pt->written_ms < quiet_ms)
            continue; /* rows still arrive for it: packing now would be undone by the next */
        return pack(p, pt, stats, e);
    }
    return 0;
}

/* Inserts rows (indexes into b) of one partition, then folds them into the rollups. */
static int write_part(struct sqlite_partitions *p, struct part *pt, const struct batch *b,
                      const size_t *rows, size_t n, struct err *e)
{
    if (pt->packed) {
        int rc = unpack(p, pt, e);
        if (rc)
            return rc;
    }
    if (pt->restored) { /* new rows make it live data again, under the policy like any other */
        char sql[300];
        snprintf(sql, sizeof sql, "UPDATE opsdb_partitions SET state = 'hot' WHERE name = '%s'",
                 pt->name);
        int rc = sqlite_exec(p->db, sql, e);
        if (rc)
            return rc;
        pt->restored = false;
    }
    pt->written_ms = mono_ms();
    size_t ncol = p->t->ncolumns;
    int64_t first_rowid = 0;
    for (size_t i = 0; i < n; i++) {
        const struct value *row = b->values + rows[i] * ncol;
        for (size_t j = 0; j < ncol; j++)
            sqlite_bind_value(pt->insert, (int)j + 1, &row[j]);
        int rc = sqlite3_step(pt->insert);
        sqlite3_reset(pt->insert);
        if (rc != SQLITE_DONE)
            return err_set(e, E_STORE, "write failed: %s", sqlite3_errmsg(p->db));
        if (i == 0)
            first_rowid = sqlite3_last_insert_rowid(p->db);
    }
    sqlite3_bind_text(p->count_rows, 1, pt->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(p->count_rows, 2, (int64_t)n);
    int rc = sqlite3_step(p->count_rows);
    sqlite3_reset(p->count_rows);
    if (rc != SQLITE_DONE)
        return err_set(e, E_STORE, "write failed: %s", sqlite3_errmsg(p->db));
    /* the only writer appends: the rows just inserted are the rowids first..last */
    int64_t last_rowid = sqlite3_last_insert_rowid(p->db);
    if (pt->rollup && (rc = sqlite_event_rollup_apply(pt->rollup, first_rowid, last_rowid, e)))
        return rc;
    if (pt->runs)
        return sqlite_run_rollup_apply(pt->runs, first_rowid, last_rowid, e);
    return 0;
}

int sqlite_partitions_write(struct sqlite_partitions *p, const struct batch *b, struct err *e)
{
    int ts_col = schema_column(p->t, "ts");
    size_t *rows = malloc((b->nrows ? b->nrows : 1) * sizeof *rows);
    struct part **of = malloc((b->nrows ? b->nrows : 1) * sizeof *of);
    int rc = rows && of ? 0 : err_set(e, E_NOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < b->nrows; i++)
        rc = part_for(p, b->values[i * p->t->ncolumns + (size_t)ts_col].i, &of[i], e);
    /* partition pointers move when one is created: map them to names' order once all exist */
    for (size_t i = 0; rc == 0 && i < b->nrows; i++)
        rc = part_for(p, b->values[i * p->t->ncolumns + (size_t)ts_col].i, &of[i], e);
    /* one pass per partition, rows in input order */
    bool *done = rc == 0 ? calloc(b->nrows ? b->nrows : 1, sizeof *done) : NULL;
    if (rc == 0 && !done)
        rc = err_set(e, E_NOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < b->nrows; i++) {
        if (done[i])
            continue;
        size_t n = 0;
        for (size_t j = i; j < b->nrows; j++)
            if (!done[j] && of[j] == of[i]) {
                rows[n++] = j;
                done[j] = true;
            }
        rc = write_part(p, of[i], b, rows, n, e);
    }
    free(done);
    free(of);
    free(rows);
    return rc;
}

/* Writes partition pt, rows in ts order, to an archive under dir. */
static int archive_part(struct sqlite_partitions *p, const struct part *pt, const char *dir,
                        struct err *e)
{
    struct archive_writer *w;
    int rc = archive_writer_open(&w, dir, p->t, pt->name, e);
    if (rc)
        return rc;
    struct buf sql;
    buf_init(&sql, 1 << 16);
    buf_printf(&sql, "SELECT rowid");
    column_list(&sql, p->t);
    buf_printf(&sql, " FROM %s ORDER BY ts, rowid", pt->name);
    sqlite3_stmt *q = NULL;
    struct value *row = malloc(p->t->ncolumns * sizeof *row);
    if (!row)
        rc = err_set(e, E_NOMEM, "out of memory");
    else if (sqlite3_prepare_v2(p->db, sql.data, -1, &q, NULL) != SQLITE_OK)
        rc = err_set(e, E_STORE, "archiving %s: %s", pt->name, sqlite3_errmsg(p->db));
    int step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(q)) == SQLITE_ROW) {
        row_values(q, 1, p->t->ncolumns, row, NULL);
        rc = archive_writer_row(w, row, e);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = err_set(e, E_STORE, "archiving %s: %s", pt->name, sqlite3_errmsg(p->db));
    sqlite3_finalize(q);
    free(row);
    buf_release(&sql);
    if (rc == 0)
        return archive_writer_finish(&w, pt->start_ts, pt->end_ts, e);
    archive_writer_abort(&w);
    return rc;
}

int sqlite_partitions_drop_before(struct sqlite_partitions *p, int64_t horizon_ms,
                                  const char *archive_dir, struct store_retention_stats *stats,
                                  struct err *e)
{
    if (!p->loaded) {
        int rc = load(p, e);
        if (rc)
            return rc;
    }
    char sql[512];
    size_t i = 0;
    while (i < p->n && p->parts[i].end_ts <= horizon_ms) {
        struct part *pt = &p->parts[i];
        if (pt->restored) { /* brought back for an investigation: `archive unload` drops it */
            i++;
            continue;
        }
        sqlite3_stmt *q;
        int64_t rows = 0;
        snprintf(sql, sizeof sql, "SELECT rows FROM opsdb_partitions WHERE name = '%s'", pt->name);
        if (sqlite3_prepare_v2(p->db, sql, -1, &q, NULL) == SQLITE_OK) {
            if (sqlite3_step(q) == SQLITE_ROW)
                rows = sqlite3_column_int64(q, 0);
            sqlite3_finalize(q);
        }
        int rc = archive_dir && archive_dir[0] ? archive_part(p, pt, archive_dir, e) : 0;
        if (rc == 0) {
            close_part(pt);
            snprintf(sql, sizeof sql,
                     "DROP TABLE %s; DROP TABLE IF EXISTS %s_packed; DELETE FROM opsdb_partitions "
                     "WHERE name = '%s';",
                     pt->name, pt->name, pt->name);
            rc = sqlite_exec(p->db, sql, e);
        }
        if (rc == 0)
            rc = sqlite_note_dropped(p->db, p->t, pt->end_ts, e);
        if (rc) {
            sqlite_partitions_forget(p);
            return rc;
        }
        memmove(p->parts + i, p->parts + i + 1, (p->n - i - 1) * sizeof *p->parts);
        p->n--;
        stats->partitions_dropped++;
        stats->rows_dropped += rows;
        stats->partitions_archived += archive_dir && archive_dir[0] ? 1 : 0;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Restoring archives.
 */

struct restore {
    sqlite3 *db;
    const struct table *t;
    sqlite3_stmt *insert;
    int64_t rows;
};

static int restore_rows(void *arg, struct batch *b, struct err *e)
{
    struct restore *r = arg;
    for (size_t i = 0; i < b->nrows; i++) {
        const struct value *row = b->values + i * r->t->ncolumns;
        for (size_t j = 0; j < r->t->ncolumns; j++)
            sqlite_bind_value(r->insert, (int)j + 1, &row[j]);
        int rc = sqlite3_step(r->insert);
        sqlite3_reset(r->insert);
        if (rc != SQLITE_DONE)
            return err_set(e, E_STORE, "restoring: %s", sqlite3_errmsg(r->db));
    }
    r->rows += (int64_t)b->nrows;
    return 0;
}

int sqlite_partition_restore(sqlite3 *db, const struct store_archive *a, int64_t *rows,
                             struct err *e)
{
    const struct table *t = a->table;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT name FROM opsdb_partitions WHERE table_name = ?1 AND "
                           "end_ts > ?2 AND start_ts < ?3",
                           -1, &q, NULL) != SQLITE_OK)
        return err_set(e, E_STORE, "restoring: %s", sqlite3_errmsg(db));
    sqlite3_bind_text(q, 1, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, a->from_ms);
    sqlite3_bind_int64(q, 3, a->to_ms);
    int rc = 0;
    if (sqlite3_step(q) == SQLITE_ROW)
        rc = err_set(e, E_INVALID,
                     "%s cannot be restored: partition %s of %s, which covers part of its "
                     "window, is in the database",
                     a->partition, (const char *)sqlite3_column_text(q, 0), t->name);
    sqlite3_finalize(q);
    if (rc)
        return rc;
    struct buf sql;
    buf_init(&sql, 1 << 16);
    sqlite_event_table_ddl(&sql, t, a->partition);
    buf_printf(&sql,
               "INSERT INTO opsdb_partitions (name, table_name, start_ts, end_ts, state, "
               "created_at) VALUES ('%s', '%s', %lld, %lld, 'restored', %lld);",
               a->partition, t->name, (long long)a->from_ms, (long long)a->to_ms,
               (long long)time_now_ms());
    rc = sqlite_exec(db, sql.data, e);
    struct restore r = {db, t, NULL, 0};
    if (rc == 0) {
        sql.len = 0;
        sqlite_insert_sql(&sql, t, a->partition);
        if (sqlite3_prepare_v2(db, sql.data, -1, &r.insert, NULL) != SQLITE_OK)
            rc = err_set(e, E_STORE, "restoring: %s", sqlite3_errmsg(db));
    }
    if (rc == 0)
        rc = archive_read(a, 4096, restore_rows, &r, e);
    sqlite3_finalize(r.insert);
    if (rc == 0) {
        sql.len = 0;
        buf_printf(&sql, "UPDATE opsdb_partitions SET rows = %lld WHERE name = '%s';",
                   (long long)r.rows, a->partition);
        rc = sqlite_exec(db, sql.data, e);
    }
    buf_release(&sql);
    *rows = r.rows;
    return rc;
}

int sqlite_partition_unload(sqlite3 *db, const char *partition, struct err *e)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT state FROM opsdb_partitions WHERE name = ?", -1, &q, NULL) !=
        SQLITE_OK)
        return err_set(e, E_STORE, "unloading: %s", sqlite3_errmsg(db));
    sqlite3_bind_text(q, 1, partition, -1, SQLITE_STATIC);
    int rc = 0;
    if (sqlite3_step(q) != SQLITE_ROW)
        rc = err_set(e, E_INVALID, "no partition named '%s' is in the database", partition);
    else if (strcmp((const char *)sqlite3_column_text(q, 0), "restored") != 0)
        rc = err_set(e, E_INVALID,
                     "%s is not a restored partition (its state is %s): only partitions "
                     "brought back by `opsdb archive restore` can be unloaded",
                     partition, (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    if (rc)
        return rc;
    char sql[512];
    snprintf(sql, sizeof sql,
             "DROP TABLE %s; DROP TABLE IF EXISTS %s_packed; DELETE FROM opsdb_partitions "
             "WHERE name = '%s';",
             partition, partition, partition);
    return sqlite_exec(db, sql, e);
}

/* A plain (pre-partition) table named t->name, as schema version 4 and before kept events. */
static bool is_plain_table(sqlite3 *db, const char *name)
{
    sqlite3_stmt *q;
    bool plain = false;
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ? AND "
                           "sql NOT LIKE 'CREATE VIRTUAL%'",
                           -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
        plain = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_finalize(q);
    }
    return plain;
}

/* Copies one day of the plain table into its new partition. */
static int migrate_day(sqlite3 *db, const struct table *t, int64_t start, struct buf *sql,
                       struct err *e)
{
    char name[128];
    sqlite_partition_name(t, start, MS_PER_DAY, name, sizeof name);
    sql->len = 0;
    sqlite_event_table_ddl(sql, t, name);
    buf_printf(sql, "INSERT INTO %s (", name);
    for (size_t j = 0; j < t->ncolumns; j++)
        buf_printf(sql, "%s%s", j ? ", " : "", t->columns[j].name);
    buf_printf(sql, ") SELECT ");
    for (size_t j = 0; j < t->ncolumns; j++)
        buf_printf(sql, "%s%s", j ? ", " : "", t->columns[j].name);
    buf_printf(sql,
               " FROM %s WHERE ts >= %lld AND ts < %lld ORDER BY rowid;\n"
               "INSERT INTO opsdb_partitions (name, table_name, start_ts, end_ts, rows, "
               "created_at) VALUES ('%s', '%s', %lld, %lld, changes(), %lld);\n",
               t->name, (long long)start, (long long)(start + MS_PER_DAY), name, t->name,
               (long long)start, (long long)(start + MS_PER_DAY), (long long)time_now_ms());
    return sqlite_exec(db, sql->data, e);
}

int sqlite_partition_migrate(sqlite3 *db, struct err *e)
{
    size_t n;
    const struct table *tables = schema_tables(&n);
    struct buf sql;
    buf_init(&sql, 1 << 20);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct table *t = &tables[i];
        if (t->kind != TABLE_EVENTS || !is_plain_table(db, t->name))
            continue;
        char q_sql[256];
        snprintf(q_sql, sizeof q_sql,
                 "SELECT DISTINCT (ts - ((ts %% %lld) + %lld) %% %lld) FROM %s ORDER BY 1",
                 MS_PER_DAY, MS_PER_DAY, MS_PER_DAY, t->name);
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(db, q_sql, -1, &q, NULL) != SQLITE_OK) {
            rc = err_set(e, E_STORE, "migration of %s: %s", t->name, sqlite3_errmsg(db));
            break;
        }
        int64_t *days = NULL;
        size_t ndays = 0, cap = 0;
        while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
            if (ndays == cap) {
                cap = cap ? cap * 2 : 256;
                int64_t *grown = realloc(days, cap * sizeof *days);
                if (!grown) {
                    rc = err_set(e, E_NOMEM, "out of memory migrating %s", t->name);
                    break;
                }
                days = grown;
            }
            days[ndays++] = sqlite3_column_int64(q, 0);
        }
        sqlite3_finalize(q);
        log_info("migration: moving %s into %zu day partition%s", t->name, ndays,
                 ndays == 1 ? "" : "s");
        for (size_t d = 0; d < ndays && rc == 0; d++)
            rc = migrate_day(db, t, days[d], &sql, e);
        free(days);
        if (rc == 0) {
            sql.len = 0;
            buf_printf(&sql, "DROP TABLE %s;\nCREATE VIRTUAL TABLE %s USING opsdb_partitioned(%s);",
                       t->name, t->name, t->name);
            rc = sqlite_exec(db, sql.data, e);
        }
    }
    buf_release(&sql);
    return rc;
}
