/*
 * The virtual table of a packed (cold) event partition (module opsdb_packed): the partition's
 * rows, once column-packed into blocks of <partition>_packed (colpack.c), read back under the
 * partition's own name and columns. The partitions' virtual table (sqlite_partition_vtab.c)
 * runs the same SQL against a packed partition as against a hot one, so nothing above knows
 * which it reads.
 *
 * Blocks hold rows in (ts, rowid) order, each block with its ts and rowid bounds: a ts range or
 * a rowid reads only the blocks that can hold it, and ORDER BY ts [, rowid] in either direction
 * is the stored order. Other constraints are left to SQLite (a packed partition has no indexes:
 * it is read by time). Read-only: a late row for a packed partition makes the writer unpack it
 * (sqlite_partition.c).
 *
 *   CREATE VIRTUAL TABLE <partition> USING opsdb_packed(<event table>, <partition>_packed)
 */
#include "store/colpack.h"
#include "store/sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { IDX_DESC = 1, IDX_ORDERED = 2 };

struct packed_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    const struct table *t;
    int ts_col;
    char blocks[160]; /* the table of blocks */
};

struct packed_cursor {
    sqlite3_vtab_cursor base;
    sqlite3_stmt *blocks[2]; /* ascending, descending: kept for the next filter */
    sqlite3_stmt *q;         /* the one stepping now */
    struct colpack_block block;
    int64_t block_id;
    size_t row; /* in block; counts down when descending */
    bool have_row, desc, eof;
    int64_t lo, hi; /* ts bounds, inclusive */
    bool by_rowid;
    int64_t rowid;
};

void sqlite_packed_blocks_ddl(struct buf *b, const char *partition)
{
    buf_printf(b,
               "CREATE TABLE %s_packed (block INTEGER PRIMARY KEY, min_ts INTEGER NOT NULL, "
               "max_ts INTEGER NOT NULL, min_rowid INTEGER NOT NULL, max_rowid INTEGER NOT NULL, "
               "rows INTEGER NOT NULL, data BLOB NOT NULL);\n",
               partition);
}

static int packed_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                          sqlite3_vtab **out, char **errmsg)
{
    (void)aux;
    const struct table *t = argc == 5 ? schema_table(argv[3]) : NULL;
    if (!t || t->kind != TABLE_EVENTS ||
        strlen(argv[4]) >= sizeof((struct packed_vtab *)0)->blocks) {
        *errmsg = sqlite3_mprintf("opsdb_packed: expected two arguments, an event table and the "
                                  "table of its blocks");
        return SQLITE_ERROR;
    }
    int rc = sqlite_declare_event_vtab(db, t);
    if (rc != SQLITE_OK)
        return rc;
    struct packed_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v)
        return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->db = db;
    v->t = t;
    v->ts_col = schema_column(t, "ts");
    snprintf(v->blocks, sizeof v->blocks, "%s", argv[4]);
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
    *out = &v->base;
    return SQLITE_OK;
}

static int packed_disconnect(sqlite3_vtab *base)
{
    sqlite3_free(base);
    return SQLITE_OK;
}

/* idxStr lists the used constraints as "<ts|rowid><op>," in argv order. */
static int packed_best_index(sqlite3_vtab *base, sqlite3_index_info *info)
{
    struct packed_vtab *v = (struct packed_vtab *)base;
    char plan[256] = "";
    size_t len = 0;
    int argv_index = 1;
    double cost = 1e6;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        const char *op = NULL;
        switch (c->usable ? c->op : 0) {
        case SQLITE_INDEX_CONSTRAINT_EQ:
            op = "=";
            break;
        case SQLITE_INDEX_CONSTRAINT_GT:
            op = ">";
            break;
        case SQLITE_INDEX_CONSTRAINT_GE:
            op = ">=";
            break;
        case SQLITE_INDEX_CONSTRAINT_LT:
            op = "<";
            break;
        case SQLITE_INDEX_CONSTRAINT_LE:
            op = "<=";
            break;
        }
        bool on_ts = c->iColumn == v->ts_col, on_rowid = c->iColumn < 0 && op && op[0] == '=';
        if (!op || !(on_ts || on_rowid) || len + 16 > sizeof plan)
            continue;
        info->aConstraintUsage[i].argvIndex = argv_index++;
        len += (size_t)snprintf(plan + len, sizeof plan - len, "%s%s,", on_ts ? "ts" : "rowid", op);
        cost /= on_rowid ? 1e5 : op[0] == '=' ? 1e4 : 10;
    }
    /* rows come in (ts, rowid) order either way round */
    bool ordered =
        info->nOrderBy >= 1 && info->nOrderBy <= 2 && info->aOrderBy[0].iColumn == v->ts_col &&
        (info->nOrderBy == 1 ||
         (info->aOrderBy[1].iColumn < 0 && info->aOrderBy[1].desc == info->aOrderBy[0].desc));
    info->idxNum = 0;
    if (ordered) {
        info->orderByConsumed = 1;
        info->idxNum = IDX_ORDERED | (info->aOrderBy[0].desc ? IDX_DESC : 0);
    }
    info->idxStr = sqlite3_mprintf("%s", plan);
    if (!info->idxStr)
        return SQLITE_NOMEM;
    info->needToFreeIdxStr = 1;
    info->estimatedCost = cost + 10;
    info->estimatedRows = (sqlite3_int64)cost + 1;
    return SQLITE_OK;
}

static int packed_open(sqlite3_vtab *base, sqlite3_vtab_cursor **out)
{
    (void)base;
    struct packed_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    colpack_block_init(&c->block);
    *out = &c->base;
    return SQLITE_OK;
}

static int packed_close(sqlite3_vtab_cursor *base)
{
    struct packed_cursor *c = (struct packed_cursor *)base;
    sqlite3_finalize(c->blocks[0]);
    sqlite3_finalize(c->blocks[1]);
    colpack_block_release(&c->block);
    sqlite3_free(c);
    return SQLITE_OK;
}

/* Takes msg (from sqlite3_mprintf) as the statement's error. */
static int set_error(struct packed_cursor *c, char *msg)
{
    sqlite3_free(c->base.pVtab->zErrMsg);
    c->base.pVtab->zErrMsg = msg;
    return msg ? SQLITE_ERROR : SQLITE_NOMEM;
}

/* The inclusive ts bounds and the rowid of the plan. */
static void read_plan(struct packed_cursor *c, const char *plan, int argc, sqlite3_value **argv)
{
    c->lo = INT64_MIN;
    c->hi = INT64_MAX;
    c->by_rowid = false;
    const char *p = plan;
    for (int a = 0; *p && a < argc; a++) {
        bool is_ts = p[0] == 't';
        p += is_ts ? 2 : 5;
        const char *op = p;
        p += strcspn(p, ",");
        if (*p)
            p++;
        if (is_ts) {
            sqlite_ts_bound(op, argv[a], &c->lo, &c->hi);
        } else {
            c->by_rowid = true;
            if (!sqlite_rowid_of(argv[a], &c->rowid)) { /* no rowid equals it */
                c->lo = 0;
                c->hi = -1;
            }
        }
    }
}

static const struct value *cell(const struct packed_cursor *c, size_t col)
{
    static const struct value null_value = {.type = VAL_NULL};
    /* a block packed before a column was added has fewer columns: the rest read NULL */
    if (col >= c->block.ncols)
        return &null_value;
    return &c->block.cells[c->row * c->block.ncols + col];
}

/* Loads the next block the plan can use; false at the end (or on error, rc set). */
static bool next_block(struct packed_cursor *c, int *rc)
{
    struct packed_vtab *v = (struct packed_vtab *)c->base.pVtab;
    int step = sqlite3_step(c->q);
    if (step != SQLITE_ROW) {
        if (step != SQLITE_DONE)
            *rc = set_error(c, sqlite3_mprintf("packed partition %s: reading its blocks: %s",
                                               v->blocks, sqlite3_errmsg(v->db)));
        return false;
    }
    c->block_id = sqlite3_column_int64(c->q, 0);
    struct err e;
    err_clear(&e);
    if (colpack_decode(sqlite3_column_blob(c->q, 1), (size_t)sqlite3_column_bytes(c->q, 1),
                       &c->block, &e) != 0) {
        *rc = set_error(c, sqlite3_mprintf("packed partition %s, block %lld: %s", v->blocks,
                                           (long long)c->block_id, e.msg));
        return false;
    }
    return true;
}

/* Moves to the next row in the plan's range (first is true for the first row of a filter). */
static int advance(struct packed_cursor *c, bool first)
{
    struct packed_vtab *v = (struct packed_vtab *)c->base.pVtab;
    int rc = SQLITE_OK;
    bool in_block = !first && c->block.nrows > 0;
    for (;;) {
        if (in_block) { /* step within the block */
            if (c->desc ? c->row == 0 : c->row + 1 >= c->block.nrows)
                in_block = false;
            else
                c->row = c->desc ? c->row - 1 : c->row + 1;
        }
        if (!in_block) {
            if (!next_block(c, &rc)) {
                c->eof = true;
                return rc;
            }
            in_block = true;
            c->row = c->desc ? c->block.nrows - 1 : 0;
        }
        const struct value *ts = cell(c, (size_t)v->ts_col + 1);
        if (ts->type == VAL_INT && (c->desc ? ts->i < c->lo : ts->i > c->hi)) {
            c->eof = true; /* sorted by ts: no later row is in range */
            return SQLITE_OK;
        }
        if (ts->type == VAL_INT && (ts->i < c->lo || ts->i > c->hi))
            continue;
        if (c->by_rowid && cell(c, 0)->i != c->rowid)
            continue;
        return SQLITE_OK;
    }
}

static int packed_filter(sqlite3_vtab_cursor *base, int idx, const char *plan, int argc,
                         sqlite3_value **argv)
{
    struct packed_cursor *c = (struct packed_cursor *)base;
    struct packed_vtab *v = (struct packed_vtab *)base->pVtab;
    read_plan(c, plan ? plan : "", argc, argv);
    c->desc = idx & IDX_DESC;
    sqlite3_stmt **q = &c->blocks[c->desc];
    if (!*q) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT block, data FROM %s WHERE max_ts >= ?1 AND min_ts <= ?2 AND "
                 "max_rowid >= ?3 AND min_rowid <= ?4 ORDER BY block%s",
                 v->blocks, c->desc ? " DESC" : "");
        if (sqlite3_prepare_v3(v->db, sql, -1, SQLITE_PREPARE_PERSISTENT, q, NULL) != SQLITE_OK)
            return set_error(
                c, sqlite3_mprintf("packed partition %s: %s", v->blocks, sqlite3_errmsg(v->db)));
    }
    sqlite3_reset(*q);
    sqlite3_bind_int64(*q, 1, c->lo);
    sqlite3_bind_int64(*q, 2, c->hi);
    sqlite3_bind_int64(*q, 3, c->by_rowid ? c->rowid : INT64_MIN);
    sqlite3_bind_int64(*q, 4, c->by_rowid ? c->rowid : INT64_MAX);
    c->q = *q;
    c->eof = false;
    colpack_block_release(&c->block);
    return advance(c, true);
}

static int packed_next(sqlite3_vtab_cursor *base)
{
    return advance((struct packed_cursor *)base, false);
}

static int packed_eof(sqlite3_vtab_cursor *base)
{
    return ((struct packed_cursor *)base)->eof;
}

static int packed_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
    const struct value *x = cell((struct packed_cursor *)base, (size_t)col + 1);
    switch (x->type) {
    case VAL_INT:
        sqlite3_result_int64(ctx, x->i);
        break;
    case VAL_REAL:
        sqlite3_result_double(ctx, x->d);
        break;
    case VAL_TEXT:
        sqlite3_result_text(ctx, x->s, (int)x->len, SQLITE_TRANSIENT);
        break;
    default:
        sqlite3_result_null(ctx);
    }
    return SQLITE_OK;
}

static int packed_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
    *rowid = cell((struct packed_cursor *)base, 0)->i;
    return SQLITE_OK;
}

static const sqlite3_module packed_module = {
    .iVersion = 0,
    .xCreate = packed_connect,
    .xConnect = packed_connect,
    .xBestIndex = packed_best_index,
    .xDisconnect = packed_disconnect,
    .xDestroy = packed_disconnect,
    .xOpen = packed_open,
    .xClose = packed_close,
    .xFilter = packed_filter,
    .xNext = packed_next,
    .xEof = packed_eof,
    .xColumn = packed_column,
    .xRowid = packed_rowid,
};

int sqlite_packed_register(sqlite3 *db)
{
    return sqlite3_create_module(db, "opsdb_packed", &packed_module, NULL);
}
