/*
 * The virtual table behind each time-partitioned event table (module opsdb_partitioned): the
 * rows of the per-window tables listed in opsdb_partitions read back under the table's own name
 * and columns, so SQL, the views and the API see one table while retention drops whole
 * partitions.
 *
 * A UNION ALL view over the partitions would be simpler and would not do: SQLite materialises a
 * compound view that is joined or read by a correlated subquery, so every view would scan every
 * partition. Here each query's constraints reach each partition's own indexes: a ts range picks
 * the partitions that overlap it, and every constraint (ts ranges, equality on any column) is
 * put in the SQL run against each partition, where SQLite chooses the index. Rows come in ts
 * order when the query asks for it (ascending or descending), partition after partition, so
 * `ORDER BY ts DESC LIMIT 1` reads one row. SQLite re-checks every constraint (omit is never
 * set): pruning only has to keep every row that can match. The table is read-only: the writer
 * inserts into the partitions.
 */
#include "store/sqlite_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A row's rowid is (its partition's start in minutes, offset by 2^31 so that times before 1970
 * stay positive) << ROWID_BITS | its rowid in the partition: unique across partitions and
 * increasing with time, as rowids of one table were, for 4000 years either side of 1970 and up
 * to 2^31 rows per partition. */
#define ROWID_BITS 31
#define MINUTE_OFFSET (1LL << 31)

static uint64_t minute_key(int64_t start_ts)
{
    int64_t minute = start_ts / 60000;
    if (minute * 60000 > start_ts)
        minute--; /* floor, also before 1970 */
    return (uint64_t)(minute + MINUTE_OFFSET);
}

enum { IDX_DESC = 1, IDX_ORDERED = 2 };
#define USED_BITS 29 /* columns whose use idxNum carries, above the two flags */
#define USED_ALL ((1ULL << USED_BITS) - 1)
#define MAX_ARGS 32

struct part_vtab {
    sqlite3_vtab base;
    sqlite3 *db;
    const struct table *t;
    int ts_col;
};

/* One partition's statement for this cursor's plan. */
struct part_stmt {
    char name[128];
    int64_t start_ts;
    sqlite3_stmt *q;
};

struct part_cursor {
    sqlite3_vtab_cursor base;
    struct part_stmt *parts; /* the partitions of the current filter, in output order */
    size_t nparts, cap, at;
    /* statements prepared for earlier filters, kept for the next (a correlated subquery filters
     * once per outer row) */
    struct part_stmt *cache;
    size_t ncache, cache_cap;
    char sql_where[1024];          /* the plan's WHERE and ORDER BY, the same for every partition */
    sqlite3_value *argv[MAX_ARGS]; /* copies: bound to later partitions' statements */
    int argc;
    int rowid_arg;     /* the argument that is an equality on rowid, or -1 */
    int64_t rowid;     /* its value, as an integer */
    uint64_t col_used; /* the columns the statement reads (sqlite3_index_info.colUsed) */
    bool eof;
};

int sqlite_declare_event_vtab(sqlite3 *db, const struct table *t)
{
    struct buf ddl;
    buf_init(&ddl, 1 << 16);
    buf_printf(&ddl, "CREATE TABLE x(");
    for (size_t i = 0; i < t->ncolumns; i++)
        buf_printf(&ddl, "%s%s %s", i ? ", " : "", t->columns[i].name,
                   sqlite_column_type(&t->columns[i]));
    buf_printf(&ddl, ")");
    int rc = sqlite3_declare_vtab(db, ddl.data);
    buf_release(&ddl);
    return rc;
}

static int part_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                        sqlite3_vtab **out, char **errmsg)
{
    (void)aux;
    const struct table *t = argc == 4 ? schema_table(argv[3]) : NULL;
    if (!t || t->kind != TABLE_EVENTS) {
        *errmsg = sqlite3_mprintf("opsdb_partitioned: expected one argument, an event table");
        return SQLITE_ERROR;
    }
    int rc = sqlite_declare_event_vtab(db, t);
    if (rc != SQLITE_OK)
        return rc;
    struct part_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v)
        return SQLITE_NOMEM;
    memset(v, 0, sizeof *v);
    v->db = db;
    v->t = t;
    v->ts_col = schema_column(t, "ts");
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
    *out = &v->base;
    return SQLITE_OK;
}

static int part_disconnect(sqlite3_vtab *base)
{
    sqlite3_free(base);
    return SQLITE_OK;
}

static bool leads_an_index(const struct table *t, const char *column)
{
    size_t n = strlen(column);
    for (size_t i = 0; i < t->nindexes; i++) {
        const char *c = t->indexes[i].columns;
        if (strncmp(c, column, n) == 0 && (c[n] == '\0' || c[n] == ','))
            return true;
    }
    return false;
}

static const char *op_text(unsigned char op)
{
    switch (op) {
    case SQLITE_INDEX_CONSTRAINT_EQ:
        return "=";
    case SQLITE_INDEX_CONSTRAINT_GT:
        return ">";
    case SQLITE_INDEX_CONSTRAINT_GE:
        return ">=";
    case SQLITE_INDEX_CONSTRAINT_LT:
        return "<";
    case SQLITE_INDEX_CONSTRAINT_LE:
        return "<=";
    default:
        return NULL;
    }
}

/* idxStr lists the pushed constraints as "<column><op>," in argv order (EXPLAIN QUERY PLAN
 * shows it): equality on rowid or on a column that leads an index, and ranges of ts. */
static int part_best_index(sqlite3_vtab *base, sqlite3_index_info *info)
{
    struct part_vtab *v = (struct part_vtab *)base;
    char plan[512] = "";
    size_t len = 0;
    int argv_index = 1;
    double cost = 1e7;
    bool lo = false, hi = false, keyed = false;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &info->aConstraint[i];
        const char *op = c->usable ? op_text(c->op) : NULL;
        /* the partitions compare with their columns' collation (BINARY): a constraint under
         * another (x = 'A' COLLATE NOCASE) is left to SQLite, which applies it to every row */
        const char *coll = op ? sqlite3_vtab_collation(info, i) : NULL;
        if (coll && sqlite3_stricmp(coll, "BINARY") != 0)
            op = NULL;
        bool eq = op && op[0] == '=';
        if (!op || (!eq && c->iColumn != v->ts_col) || len + 40 > sizeof plan ||
            argv_index > MAX_ARGS)
            continue;
        const char *name = c->iColumn < 0 ? "rowid" : v->t->columns[c->iColumn].name;
        /* equality helps a partition only through an index it leads; SQLite filters the rest */
        if (eq && c->iColumn >= 0 && c->iColumn != v->ts_col && !leads_an_index(v->t, name))
            continue;
        info->aConstraintUsage[i].argvIndex = argv_index++;
        len += (size_t)snprintf(plan + len, sizeof plan - len, "%s%s,", name, op);
        if (c->iColumn < 0) {
            cost = 1; /* one row of one partition */
        } else if (c->iColumn == v->ts_col) {
            lo |= eq || op[0] == '>';
            hi |= eq || op[0] == '<';
        } else {
            keyed = true;
        }
    }
    cost /= keyed ? 1000 : 1;
    cost /= (lo ? 10 : 1) * (hi ? 10 : 1);
    info->idxNum = 0;
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == v->ts_col) {
        info->orderByConsumed = 1;
        info->idxNum = IDX_ORDERED | (info->aOrderBy[0].desc ? IDX_DESC : 0);
    }
    /* the columns the statement reads go in idxNum above its two flags: each partition
     * selects only those (a count(*), or a covering index, then reads no other column of a
     * row); a column past the 29th used means all of them */
    uint64_t used = info->colUsed;
    info->idxNum |= (int)((used >> USED_BITS ? USED_ALL : used & USED_ALL) << 2);
    info->idxStr = sqlite3_mprintf("%s", plan);
    if (!info->idxStr)
        return SQLITE_NOMEM;
    info->needToFreeIdxStr = 1;
    info->estimatedCost = cost + 10;
    info->estimatedRows = (sqlite3_int64)cost + 1;
    return SQLITE_OK;
}

static int part_open(sqlite3_vtab *base, sqlite3_vtab_cursor **out)
{
    (void)base;
    struct part_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static void clear_cache(struct part_cursor *c)
{
    for (size_t i = 0; i < c->ncache; i++)
        sqlite3_finalize(c->cache[i].q);
    c->ncache = 0;
}

static void free_args(struct part_cursor *c)
{
    for (int i = 0; i < c->argc; i++)
        sqlite3_value_free(c->argv[i]);
    c->argc = 0;
}

static int part_close(sqlite3_vtab_cursor *base)
{
    struct part_cursor *c = (struct part_cursor *)base;
    free_args(c);
    clear_cache(c);
    sqlite3_free(c->cache);
    sqlite3_free(c->parts);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int set_error(struct part_cursor *c, const char *msg)
{
    sqlite3_free(c->base.pVtab->zErrMsg);
    c->base.pVtab->zErrMsg = sqlite3_mprintf("%s", msg);
    return SQLITE_ERROR;
}

static int64_t clip(double d)
{
    return d < -9.2e18 ? INT64_MIN : d > 9.2e18 ? INT64_MAX : (int64_t)d;
}

void sqlite_ts_bound(const char *op, sqlite3_value *v, int64_t *lo, int64_t *hi)
{
    int type = sqlite3_value_numeric_type(v);
    int64_t below, above; /* the whole milliseconds v lies between (equal when it is one) */
    if (type == SQLITE_INTEGER) {
        below = above = sqlite3_value_int64(v);
    } else if (type == SQLITE_FLOAT && !isnan(sqlite3_value_double(v))) {
        below = clip(floor(sqlite3_value_double(v)));
        above = clip(ceil(sqlite3_value_double(v)));
    } else {
        return; /* not a number: no pruning, SQLite applies the constraint itself */
    }
    bool whole = below == above, or_equal = op[0] == '=' || op[1] == '=';
    int64_t from = op[0] == '<'                              ? INT64_MIN
                   : whole && !or_equal && above < INT64_MAX ? above + 1
                                                             : above;
    int64_t to = op[0] == '>'                              ? INT64_MAX
                 : whole && !or_equal && below > INT64_MIN ? below - 1
                                                           : below;
    *lo = from > *lo ? from : *lo;
    *hi = to < *hi ? to : *hi;
}

bool sqlite_rowid_of(sqlite3_value *v, int64_t *out)
{
    int type = sqlite3_value_numeric_type(v);
    double d = type == SQLITE_FLOAT ? sqlite3_value_double(v) : 0;
    if (type == SQLITE_INTEGER)
        *out = sqlite3_value_int64(v);
    else if (type == SQLITE_FLOAT && d == floor(d) && d >= -9.2e18 && d <= 9.2e18)
        *out = (int64_t)d;
    else
        return false;
    return true;
}

/* Builds the WHERE/ORDER BY every partition runs from the plan (see part_best_index), and the
 * inclusive ts bounds and rowid that pick partitions. */
static int plan_sql(struct part_cursor *c, int idx, const char *plan, sqlite3_value **argv,
                    int argc, int64_t *lo, int64_t *hi)
{
    size_t len = 0;
    *lo = INT64_MIN;
    *hi = INT64_MAX;
    c->rowid_arg = -1;
    c->sql_where[0] = '\0';
    const char *p = plan;
    c->col_used = ((uint64_t)idx >> 2) & USED_ALL;
    if (c->col_used == USED_ALL)
        c->col_used = ~0ULL;
    for (int a = 0; *p && a < argc; a++) {
        size_t name_len = strcspn(p, "=<>"), op_len = strspn(p + name_len, "=<>");
        if (name_len == 0 || op_len == 0 || p[name_len + op_len] != ',')
            return set_error(c, "opsdb_partitioned: bad plan");
        const char *op = p + name_len;
        len += (size_t)snprintf(c->sql_where + len, sizeof c->sql_where - len, "%s%.*s %.*s ?%d",
                                a ? " AND " : " WHERE ", (int)name_len, p, (int)op_len, op, a + 1);
        bool is_ts = name_len == 2 && strncmp(p, "ts", 2) == 0;
        if (name_len == 5 && strncmp(p, "rowid", 5) == 0)
            c->rowid_arg = a; /* bound as the partition's own rowid; picks the partition */
        if (is_ts)
            sqlite_ts_bound(op, argv[a], lo, hi);
        p += name_len + op_len + 1;
    }
    if (idx & IDX_ORDERED)
        len += (size_t)snprintf(c->sql_where + len, sizeof c->sql_where - len,
                                " ORDER BY ts%s, rowid%s", (idx & IDX_DESC) ? " DESC" : "",
                                (idx & IDX_DESC) ? " DESC" : "");
    if (len >= sizeof c->sql_where)
        return set_error(c, "opsdb_partitioned: query too complex");
    return SQLITE_OK;
}

/* The partitions that may hold rows in [lo, hi], in output order, into c->parts. */
static int list_parts(struct part_cursor *c, struct part_vtab *v, int64_t lo, int64_t hi, bool desc)
{
    sqlite3_stmt *q;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT name, start_ts FROM opsdb_partitions WHERE table_name = ?1 AND end_ts > ?2 "
             "AND start_ts <= ?3 ORDER BY start_ts%s",
             desc ? " DESC" : "");
    if (sqlite3_prepare_v2(v->db, sql, -1, &q, NULL) != SQLITE_OK)
        return set_error(c, sqlite3_errmsg(v->db));
    sqlite3_bind_text(q, 1, v->t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, lo);
    sqlite3_bind_int64(q, 3, hi);
    c->nparts = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (c->nparts == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 16;
            struct part_stmt *grown = sqlite3_realloc64(c->parts, cap * sizeof *grown);
            if (!grown) {
                sqlite3_finalize(q);
                return SQLITE_NOMEM;
            }
            c->parts = grown;
            c->cap = cap;
        }
        struct part_stmt *p = &c->parts[c->nparts++];
        snprintf(p->name, sizeof p->name, "%s", (const char *)sqlite3_column_text(q, 0));
        p->start_ts = sqlite3_column_int64(q, 1);
        p->q = NULL;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The statement of partition p for the current plan, from the cache or prepared now. */
static int stmt_for(struct part_cursor *c, struct part_vtab *v, struct part_stmt *p)
{
    for (size_t i = 0; i < c->ncache; i++)
        if (strcmp(c->cache[i].name, p->name) == 0) {
            p->q = c->cache[i].q;
            return SQLITE_OK;
        }
    if (c->ncache == c->cache_cap) {
        size_t cap = c->cache_cap ? c->cache_cap * 2 : 16;
        struct part_stmt *grown = sqlite3_realloc64(c->cache, cap * sizeof *grown);
        if (!grown)
            return SQLITE_NOMEM;
        c->cache = grown;
        c->cache_cap = cap;
    }
    struct buf sql;
    buf_init(&sql, 1 << 16);
    buf_printf(&sql, "SELECT rowid");
    for (size_t i = 0; i < v->t->ncolumns; i++)
        buf_printf(&sql, ", %s",
                   i >= 64 || c->col_used & (1ULL << i) ? v->t->columns[i].name : "NULL");
    buf_printf(&sql, " FROM %s%s", p->name, c->sql_where);
    int rc = sqlite3_prepare_v3(v->db, sql.data, -1, SQLITE_PREPARE_PERSISTENT, &p->q, NULL);
    buf_release(&sql);
    if (rc != SQLITE_OK)
        return set_error(c, sqlite3_errmsg(v->db));
    c->cache[c->ncache++] = *p;
    return SQLITE_OK;
}

/* Steps to the next row, moving on through the partitions; eof after the last. */
static int advance(struct part_cursor *c, bool start_partition)
{
    struct part_vtab *v = (struct part_vtab *)c->base.pVtab;
    for (;;) {
        if (c->at >= c->nparts) {
            c->eof = true;
            return SQLITE_OK;
        }
        struct part_stmt *p = &c->parts[c->at];
        if (start_partition) {
            int rc = stmt_for(c, v, p);
            if (rc != SQLITE_OK)
                return rc;
            sqlite3_reset(p->q);
            for (int i = 0; i < c->argc; i++) {
                if (i == c->rowid_arg)
                    sqlite3_bind_int64(p->q, i + 1,
                                       (int64_t)((uint64_t)c->rowid & ((1ULL << ROWID_BITS) - 1)));
                else
                    sqlite3_bind_value(p->q, i + 1, c->argv[i]);
            }
        }
        int rc = sqlite3_step(p->q);
        if (rc == SQLITE_ROW)
            return SQLITE_OK;
        sqlite3_reset(p->q);
        if (rc != SQLITE_DONE)
            return set_error(c, sqlite3_errmsg(v->db));
        c->at++;
        start_partition = true;
    }
}

static int part_filter(sqlite3_vtab_cursor *base, int idx, const char *plan, int argc,
                       sqlite3_value **argv)
{
    struct part_cursor *c = (struct part_cursor *)base;
    struct part_vtab *v = (struct part_vtab *)base->pVtab;
    char previous[sizeof c->sql_where];
    memcpy(previous, c->sql_where, sizeof previous);
    uint64_t previous_used = c->col_used;
    int64_t lo, hi;
    int rc = plan_sql(c, idx, plan ? plan : "", argv, argc, &lo, &hi);
    if (rc != SQLITE_OK)
        return rc;
    if (strcmp(previous, c->sql_where) != 0 || previous_used != c->col_used)
        clear_cache(c);      /* another plan: the cached statements say something else */
    if (c->rowid_arg >= 0) { /* the rowid names its partition's start minute */
        if (!sqlite_rowid_of(argv[c->rowid_arg], &c->rowid)) {
            lo = 0; /* not an integer: no rowid matches */
            hi = -1;
        } else {
            uint64_t r = (uint64_t)c->rowid;
            int64_t start = ((int64_t)(r >> ROWID_BITS) - MINUTE_OFFSET) * 60000;
            lo = start > lo ? start : lo;
            hi = start < hi ? start : hi;
        }
    }
    if ((rc = list_parts(c, v, lo, hi, idx & IDX_DESC)) != SQLITE_OK)
        return rc;
    if (c->rowid_arg >= 0) { /* only the partition that starts at that minute */
        size_t keep = 0;
        uint64_t r = (uint64_t)c->rowid;
        for (size_t i = 0; i < c->nparts; i++)
            if (minute_key(c->parts[i].start_ts) == (r >> ROWID_BITS))
                c->parts[keep++] = c->parts[i];
        c->nparts = keep;
    }
    free_args(c);
    for (int i = 0; i < argc && i < (int)(sizeof c->argv / sizeof c->argv[0]); i++) {
        if (!(c->argv[i] = sqlite3_value_dup(argv[i])))
            return SQLITE_NOMEM;
        c->argc = i + 1;
    }
    c->at = 0;
    c->eof = false;
    return advance(c, true);
}

static int part_next(sqlite3_vtab_cursor *base)
{
    return advance((struct part_cursor *)base, false);
}

static int part_eof(sqlite3_vtab_cursor *base)
{
    return ((struct part_cursor *)base)->eof;
}

static int part_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
    struct part_cursor *c = (struct part_cursor *)base;
    sqlite3_result_value(ctx, sqlite3_column_value(c->parts[c->at].q, col + 1));
    return SQLITE_OK;
}

static int part_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
    struct part_cursor *c = (struct part_cursor *)base;
    const struct part_stmt *p = &c->parts[c->at];
    *rowid = (sqlite3_int64)((minute_key(p->start_ts) << ROWID_BITS) |
                             (uint64_t)sqlite3_column_int64(p->q, 0));
    return SQLITE_OK;
}

static const sqlite3_module part_module = {
    .iVersion = 0,
    .xCreate = part_connect,
    .xConnect = part_connect,
    .xBestIndex = part_best_index,
    .xDisconnect = part_disconnect,
    .xDestroy = part_disconnect,
    .xOpen = part_open,
    .xClose = part_close,
    .xFilter = part_filter,
    .xNext = part_next,
    .xEof = part_eof,
    .xColumn = part_column,
    .xRowid = part_rowid,
};

int sqlite_partition_register(sqlite3 *db)
{
    return sqlite3_create_module(db, "opsdb_partitioned", &part_module, NULL);
}
