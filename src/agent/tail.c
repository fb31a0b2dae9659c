/*
 * Following one log file (see tail.h for the contract and the rotation rules). The file is
 * read with pread at explicit offsets, so "how far" is three numbers: read_pos (bytes read),
 * done (the end of the last complete line handed to the parser) and the parser's pending event
 * start. Only done and the pending start are ever saved: bytes of a partial line are read again
 * after a restart, and an application log event whose stack trace may still grow is parsed
 * again whole.
 */
#include "agent/tail.h"
#include "collect/heartbeat.h"
#include "ingest/ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HEAD_BYTES 256     /* the file's identity: a hash of its first bytes */
#define CHUNK_BYTES 65536  /* one pread */
#define ROW_SLACK 8192     /* NDJSON keys and numbers of one row */
#define EVENT_MAX 196608   /* text an application log event keeps at most (column limits) */
#define BAD_LINES_LOGGED 5 /* per poll; the rest are counted */

struct saved {
    bool valid;
    uint64_t dev, ino, head_hash;
    int64_t offset;
    size_t line_no, head_len;
    bool skipping;
};

struct tail {
    char spec[4200];
    char path[4096];
    char state_path[4200];
    struct config cfg;
    struct logparser *parser;
    int fd;
    uint64_t dev, ino;
    int64_t read_pos;   /* bytes of the file read */
    int64_t done;       /* after the last complete line fed to the parser */
    size_t line_no;     /* number of the next line */
    bool skipping;      /* in the rest of a line cut to max_line_bytes */
    struct buf line;    /* the partial line: the bytes [done, read_pos) */
    uint64_t head_hash; /* of the first head_len bytes, head_len <= done */
    size_t head_len;
    int64_t last_data_ms; /* monotonic time lines last arrived */
    struct saved saved;   /* the state of an earlier run, until the file is opened */
    char *chunk;
    struct heartbeats *heartbeats; /* borrowed; NULL: none */
    int64_t heartbeat_interval_ms;
    struct tail_stats stats;
};

/* What one poll is building. */
struct poll_out {
    struct ingest_ctx ctx;
    struct batch b;
    size_t serialized; /* rows of b already in out */
    struct rejects *r;
    struct buf *out;
    size_t rows;
    size_t lines;
    bool full; /* out has no room for the next line's rows */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tail_set_heartbeats(struct tail *t, struct heartbeats *h, int64_t interval_ms)
{
    t->heartbeats = h;
    t->heartbeat_interval_ms = interval_ms;
}

const char *tail_name(const struct tail *t)
{
    return t->spec;
}

void tail_get_stats(const struct tail *t, struct tail_stats *out)
{
    *out = t->stats;
    out->offset = t->done;
    struct logparser_pending p;
    if (logparser_pending(t->parser, &p))
        out->offset = p.offset;
    out->open = t->fd >= 0;
}

size_t tail_out_min(const struct tail *t)
{
    return 8 * ((size_t)t->cfg.logs_max_line_bytes + EVENT_MAX) + 2 * ROW_SLACK;
}

/* ---- state ------------------------------------------------------------------------------- */

static int load_state(struct tail *t, struct err *e)
{
    json_error_t jerr;
    json_t *j = json_load_file(t->state_path, 0, &jerr);
    if (!j) {
        if (access(t->state_path, F_OK) != 0 && errno == ENOENT)
            return 0; /* the first run */
        return err_set(e, E_IO,
                       "cannot read the tail state %s: %s (remove it to read %s from "
                       "its start)",
                       t->state_path, jerr.text, t->path);
    }
    const char *spec = json_string_value(json_object_get(j, "spec"));
    const char *hash = json_string_value(json_object_get(j, "head_hash"));
    struct saved *s = &t->saved;
    if (spec && strcmp(spec, t->spec) == 0 && hash) {
        s->dev = (uint64_t)json_integer_value(json_object_get(j, "dev"));
        s->ino = (uint64_t)json_integer_value(json_object_get(j, "ino"));
        s->offset = json_integer_value(json_object_get(j, "offset"));
        s->line_no = (size_t)json_integer_value(json_object_get(j, "line"));
        s->head_len = (size_t)json_integer_value(json_object_get(j, "head_len"));
        s->skipping = json_is_true(json_object_get(j, "skipping"));
        s->head_hash = strtoull(hash, NULL, 16);
        s->valid = s->offset >= 0 && s->line_no >= 1 && s->head_len <= HEAD_BYTES;
    }
    json_decref(j);
    return 0;
}

int tail_commit(struct tail *t, struct err *e)
{
    if (t->fd < 0)
        return 0; /* no file yet: an earlier run's state stays as it is */
    struct logparser_pending p;
    bool pending = logparser_pending(t->parser, &p);
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)t->head_hash);
    json_t *j = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:b, s:I, s:s}", "spec", t->spec, "dev", (json_int_t)t->dev,
        "ino", (json_int_t)t->ino, "offset", (json_int_t)(pending ? p.offset : t->done), "line",
        (json_int_t)(pending ? p.line_no : t->line_no), "skipping", !pending && t->skipping,
        "head_len", (json_int_t)t->head_len, "head_hash", hash);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return err_set(e, E_IO, "cannot encode the tail state of %s", t->spec);
    int rc = file_write_atomic(t->state_path, text, e);
    free(text);
    return rc;
}

/* ---- the file ---------------------------------------------------------------------------- */

/* Hash of the first len bytes of fd; false when it has fewer. */
static bool head_of(int fd, size_t len, uint64_t *hash)
{
    char head[HEAD_BYTES];
    ssize_t n = len ? pread(fd, head, len, 0) : 0;
    if (n < 0 || (size_t)n != len)
        return false;
    *hash = hash64(head, len, 0);
    return true;
}

static void start_over(struct tail *t)
{
    t->read_pos = t->done = 0;
    t->line_no = 1;
    t->skipping = false;
    t->line.len = 0;
    t->head_len = 0;
    t->head_hash = hash64("", 0, 0);
}

/* Whether fd is the file the saved state describes, with the saved offset still in it. */
static bool is_saved_file(const struct saved *s, int fd, const struct stat *st)
{
    uint64_t hash;
    return s->valid && (uint64_t)st->st_dev == s->dev && (uint64_t)st->st_ino == s->ino &&
           st->st_size >= s->offset && head_of(fd, s->head_len, &hash) && hash == s->head_hash;
}

static void adopt(struct tail *t, int fd, const struct stat *st)
{
    t->fd = fd;
    t->dev = (uint64_t)st->st_dev;
    t->ino = (uint64_t)st->st_ino;
    start_over(t);
}

/* Opens the file at the path (or, right after start, its rotated predecessor PATH.1 when that
 * is the file the saved state describes). 0 when open, 1 when the file does not exist yet. */
static int open_file(struct tail *t, struct err *e)
{
    int fd = open(t->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0)
        return err_set(e, E_IO, "cannot open %s: %s", t->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return err_set(e, E_IO, "cannot stat %s: %s", t->path, strerror(errno));
    }
    struct saved *s = &t->saved;
    if (s->valid && !is_saved_file(s, fd, &st)) {
        char rotated[4200];
        snprintf(rotated, sizeof rotated, "%s.1", t->path);
        int old = open(rotated, O_RDONLY | O_CLOEXEC);
        struct stat ost;
        if (old >= 0 && fstat(old, &ost) == 0 && is_saved_file(s, old, &ost)) {
            close(fd); /* finished first; the rotation check then opens the path again */
            fd = old;
            st = ost;
        } else if (old >= 0) {
            close(old);
        }
    }
    adopt(t, fd, &st);
    if (s->valid && is_saved_file(s, fd, &st)) {
        t->read_pos = t->done = s->offset;
        t->line_no = s->line_no;
        t->skipping = s->skipping;
        t->head_len = s->head_len;
        t->head_hash = s->head_hash;
    }
    s->valid = false;
    return 0;
}

/* ---- rows -------------------------------------------------------------------------------- */

static json_t *cell_json(const struct column *c, const struct value *v)
{
    switch (v->type) {
    case VAL_INT:
        return json_integer(v->i);
    case VAL_REAL:
        return json_real(v->d);
    case VAL_TEXT:
        if (c->type == COL_JSON) {
            json_t *obj = json_loadb(v->s, v->len, 0, NULL);
            if (obj)
                return obj;
        }
        return json_stringn(v->s, v->len);
    }
    return NULL;
}

/* Appends the rows of b not yet written to out, then empties b once it has many. */
static void serialize(struct poll_out *po)
{
    const struct table *tab = po->b.table;
    for (; po->serialized < po->b.nrows; po->serialized++) {
        const struct value *row = batch_row(&po->b, po->serialized);
        json_t *obj = json_object();
        for (size_t c = 0; c < tab->ncolumns; c++) {
            json_t *v = tab->columns[c].derived ? NULL : cell_json(&tab->columns[c], &row[c]);
            if (v)
                json_object_set_new(obj, tab->columns[c].name, v);
        }
        char *text = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
        /* tail_out_min and the room check before every line keep this within out->max */
        if (text && buf_append(po->out, text, strlen(text)) == 0 && buf_putc(po->out, '\n') == 0)
            po->rows++;
        free(text);
    }
    if (po->b.nrows >= 256) {
        batch_release(&po->b);
        batch_init(&po->b, tab);
        po->serialized = 0;
    }
}

/* Whether out has room for the rows one more line of len bytes may complete. */
static bool room_for(const struct tail *t, const struct poll_out *po, size_t len)
{
    struct logparser_pending p = {0};
    logparser_pending(t->parser, &p);
    size_t pending = p.bytes < EVENT_MAX ? p.bytes : EVENT_MAX;
    size_t need = 8 * (len + pending) + 2 * ROW_SLACK;
    return po->out->max - po->out->len >= need;
}

/* Feeds one complete line that starts at offset done; false (nothing fed) when out is full. */
static bool feed_line(struct tail *t, struct poll_out *po, const char *s, size_t len)
{
    if (!room_for(t, po, len)) {
        po->full = true;
        return false;
    }
    logparser_line(t->parser, &po->ctx, s, len, t->line_no++, t->done, &po->b, po->r);
    po->lines++;
    t->stats.lines++;
    serialize(po);
    return true;
}

static void flush_event(struct tail *t, struct poll_out *po)
{
    logparser_flush(t->parser, &po->ctx, &po->b, po->r);
    serialize(po);
}

/* Splits the bytes read at pos into lines. False when out filled: read_pos is then set back
 * to the first line not fed. */
static bool feed_bytes(struct tail *t, struct poll_out *po, const char *data, size_t n, int64_t pos)
{
    size_t max_line = (size_t)t->cfg.logs_max_line_bytes, start = 0;
    while (start < n) {
        const char *nl = memchr(data + start, '\n', n - start);
        size_t end = nl ? (size_t)(nl - data) : n;
        if (t->skipping) { /* the rest of a line already cut */
            t->skipping = !nl;
            t->done = pos + (int64_t)(nl ? end + 1 : end);
            start = nl ? end + 1 : end;
            continue;
        }
        size_t room = max_line - t->line.len, seg = end - start;
        bool cut = seg > room;
        if (!nl && !cut) { /* a partial line waits for its newline */
            buf_append(&t->line, data + start, seg);
            break;
        }
        size_t take = cut ? room : seg;
        bool fed;
        if (t->line.len == 0) {
            fed = feed_line(t, po, data + start, take);
        } else {
            buf_append(&t->line, data + start, take);
            fed = feed_line(t, po, t->line.data, t->line.len);
        }
        if (!fed) {
            t->read_pos = t->done;
            t->line.len = 0;
            return false;
        }
        t->line.len = 0;
        t->done = pos + (int64_t)(start + take + (cut ? 0 : 1));
        t->skipping = cut;
        t->stats.lines_truncated += cut;
        start += take + (cut ? 0 : 1);
    }
    t->read_pos = pos + (int64_t)n;
    return true;
}

/* The file was truncated in place (copytruncate) or its first bytes changed: the event read so
 * far is complete, and the file is read again from its start. */
static void check_truncation(struct tail *t, struct poll_out *po, const struct stat *st)
{
    uint64_t hash;
    if (st->st_size >= t->read_pos && head_of(t->fd, t->head_len, &hash) && hash == t->head_hash)
        return;
    flush_event(t, po);
    log_info("tail %s: the file was truncated or replaced; reading it from its start", t->spec);
    start_over(t);
    t->stats.truncations++;
}

/* Called at the end of the file: when another file has taken the path and the writer has moved
 * to it (it has data, or this one has been quiet logs.rotate_wait), this one is finished and
 * the new one opened. 1 when it switched to the new file, 0 when not (or when the new file is
 * gone again: the next poll waits for it), E_IO when the new file cannot be opened. */
static int check_rotation(struct tail *t, struct poll_out *po, struct err *e)
{
    struct stat st;
    if (stat(t->path, &st) != 0 || ((uint64_t)st.st_dev == t->dev && (uint64_t)st.st_ino == t->ino))
        return 0;
    if (st.st_size == 0 && mono_ms() - t->last_data_ms < t->cfg.logs_rotate_wait_ms)
        return 0;
    if (t->line.len > 0 && !t->skipping) { /* its last line has no newline: it never will */
        if (!feed_line(t, po, t->line.data, t->line.len))
            return 0;
        t->done = t->read_pos;
        t->line.len = 0;
    }
    flush_event(t, po);
    close(t->fd);
    t->fd = -1;
    t->stats.rotations++;
    log_info("tail %s: the file was rotated; reading the new one from its start", t->spec);
    int rc = open_file(t, e);
    return rc < 0 ? rc : rc == 0;
}

static void update_head(struct tail *t)
{
    if (t->head_len >= HEAD_BYTES || t->done <= (int64_t)t->head_len)
        return;
    size_t len = t->done < HEAD_BYTES ? (size_t)t->done : HEAD_BYTES;
    if (head_of(t->fd, len, &t->head_hash))
        t->head_len = len;
}

/* Reads up to TAIL_READ_MAX bytes from the open file, following rotations. */
static int read_file(struct tail *t, struct poll_out *po, struct err *e)
{
    struct stat st;
    if (fstat(t->fd, &st) != 0)
        return err_set(e, E_IO, "cannot stat %s: %s", t->path, strerror(errno));
    check_truncation(t, po, &st);
    size_t budget = TAIL_READ_MAX;
    while (budget > 0 && !po->full) {
        size_t want = budget < CHUNK_BYTES ? budget : CHUNK_BYTES;
        ssize_t n = pread(t->fd, t->chunk, want, t->read_pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return err_set(e, E_IO, "cannot read %s: %s", t->path, strerror(errno));
        if (n == 0) {
            int rc = check_rotation(t, po, e);
            if (rc <= 0)
                return rc;
            continue;
        }
        budget -= (size_t)n;
        size_t lines_before = po->lines;
        feed_bytes(t, po, t->chunk, (size_t)n, t->read_pos);
        if (po->lines > lines_before)
            t->last_data_ms = mono_ms();
        update_head(t);
    }
    t->stats.more = true; /* stopped by the budget or a full out, not by the end of the file */
    return 0;
}

static void report_rejects(struct tail *t, const struct rejects *r)
{
    for (size_t i = 0; i < r->n && i < BAD_LINES_LOGGED; i++)
        log_warn("tail %s: line %zu: %s", t->spec, r->items[i].row, r->items[i].reason);
    if (r->count > BAD_LINES_LOGGED)
        log_warn("tail %s: %zu more bad lines", t->spec, r->count - BAD_LINES_LOGGED);
    t->stats.lines_bad += r->count;
}

int tail_poll(struct tail *t, struct buf *out, const char **table, size_t *rows, struct err *e)
{
    *rows = 0;
    *table = logparser_table(t->parser)->name;
    if (out->max < tail_out_min(t))
        return err_set(e, E_LIMIT, "the row buffer of %zu bytes is below the %zu a tail needs",
                       out->max, tail_out_min(t));
    if (t->fd < 0) {
        int rc = open_file(t, e);
        if (rc != 0)
            return rc > 0 ? 0 : rc; /* not there yet: waited for */
        t->last_data_ms = mono_ms();
    }
    struct poll_out po = {.out = out};
    t->stats.more = false;
    ingest_ctx_init(&po.ctx, &t->cfg, NULL, PREC_MS);
    po.ctx.max_rows = SIZE_MAX;
    batch_init(&po.b, logparser_table(t->parser));
    po.r = malloc(sizeof *po.r);
    if (!po.r)
        abort();
    rejects_init(po.r, "line");
    int rc = read_file(t, &po, e);
    struct logparser_pending pending;
    if (rc == 0 && po.lines == 0 && !po.full && logparser_pending(t->parser, &pending) &&
        mono_ms() - t->last_data_ms >= t->cfg.logs_multiline_wait_ms)
        flush_event(t, &po); /* the file is idle: the event's trace is complete */
    report_rejects(t, po.r);
    free(po.r);
    batch_release(&po.b);
    *rows = po.rows;
    t->stats.rows += po.rows;
    if (rc == 0 && t->fd >= 0)
        heartbeat_note(t->heartbeats, SOURCE_TAIL, t->spec, t->heartbeat_interval_ms, po.rows);
    return rc;
}

/* ---- open and close ---------------------------------------------------------------------- */

int tail_open(struct tail **out, const char *spec, const char *state_dir, const struct config *cfg,
              struct err *e)
{
    *out = NULL;
    const char *colon = strchr(spec, ':');
    char kind[32];
    if (!colon || colon == spec || !colon[1] || (size_t)(colon - spec) >= sizeof kind)
        return err_set(e, E_INVALID, "tail '%.200s': expected KIND:PATH with KIND one of %s", spec,
                       logparser_kinds());
    if (strlen(spec) >= sizeof((struct tail *)0)->spec)
        return err_set(e, E_INVALID, "tail '%.200s...': the path is too long", spec);
    snprintf(kind, sizeof kind, "%.*s", (int)(colon - spec), spec);
    struct tail *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(e, E_NOMEM, "out of memory");
    t->fd = -1;
    t->cfg = *cfg;
    snprintf(t->spec, sizeof t->spec, "%s", spec);
    snprintf(t->path, sizeof t->path, "%s", colon + 1);
    snprintf(t->state_path, sizeof t->state_path, "%s/tail-%016llx.json", state_dir,
             (unsigned long long)hash64(spec, strlen(spec), 0));
    buf_init(&t->line, (size_t)cfg->logs_max_line_bytes);
    t->chunk = malloc(CHUNK_BYTES);
    start_over(t);
    int rc = t->chunk ? 0 : err_set(e, E_NOMEM, "out of memory");
    if (rc == 0)
        rc = logparser_new(&t->parser, cfg, kind, t->path, e);
    if (rc == 0)
        rc = file_mkdirs(state_dir, e);
    if (rc == 0)
        rc = load_state(t, e);
    if (rc != 0) {
        tail_close(&t);
        return rc;
    }
    *out = t;
    return 0;
}

void tail_close(struct tail **tp)
{
    struct tail *t = *tp;
    if (!t)
        return;
    if (t->fd >= 0)
        close(t->fd);
    logparser_free(&t->parser);
    buf_release(&t->line);
    free(t->chunk);
    free(t);
    *tp = NULL;
}
