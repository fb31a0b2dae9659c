/*
 * opsdb ingest TABLE [FILE|-]: bulk load of NDJSON, CSV (header line) or a JSON array straight
 * into the database, in one transaction: every row is validated and either all are stored or,
 * when any is bad, none (the bad rows are listed). Large inputs are read in chunks with a
 * progress line. Log files (--format nginx, json-log, ...) go through the log parsers instead:
 * a line that makes no row is listed and skipped, as a log always has a few.
 */
#include "cli/cli.h"
#include "ingest/ingest.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_BYTES (8u << 20)

enum in_format { IN_NDJSON, IN_CSV, IN_JSON, IN_LOG };

/* --format names of the log parsers (docs/collection.md): they read a log file's lines into
 * their table, skipping (and listing) lines that make no row. */
static const struct {
    const char *format;
    const char *kind;
    const char *table;
} log_formats[] = {
    {"nginx", "nginx", "api_usage"},    {"nginx_timed", "nginx_timed", "api_usage"},
    {"apache", "apache", "api_usage"},  {"access", "access", "api_usage"},
    {"json-log", "json", "error_logs"}, {"plain-log", "plain", "error_logs"},
};

struct loader {
    const struct table *table;
    enum in_format fmt;
    enum time_precision precision;
    struct config cfg;
    struct fingerprint_rules *fp;
    struct store *store;
    const char *log_kind;     /* IN_LOG: the parser's kind */
    struct logparser *parser; /* IN_LOG */
    struct buf header;        /* CSV: the header line, prepended to every chunk after the first */
    size_t line_offset;       /* lines before the current chunk */
    size_t rows_ok, rows_bad, reported;
    bool failed;
    int64_t bytes_read, bytes_total;
    struct timespec started, last_progress;
};

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void progress(struct loader *l, bool final)
{
    bool tty = isatty(STDERR_FILENO);
    if (!final && since(&l->last_progress) < (tty ? 0.5 : 5.0))
        return;
    if (!tty && !final && l->bytes_total < (int64_t)CHUNK_BYTES * 4)
        return;
    clock_gettime(CLOCK_MONOTONIC, &l->last_progress);
    double secs = since(&l->started);
    if (l->bytes_total > 0)
        fprintf(stderr, "%singest: %.1f of %.1f MB (%.0f%%), %zu rows, %.0f rows/s%s",
                tty ? "\r" : "", (double)l->bytes_read / 1e6, (double)l->bytes_total / 1e6,
                100.0 * (double)l->bytes_read / (double)l->bytes_total, l->rows_ok,
                secs > 0 ? (double)l->rows_ok / secs : 0, tty && !final ? "" : "\n");
    else
        fprintf(stderr, "%singest: %.1f MB, %zu rows%s", tty ? "\r" : "",
                (double)l->bytes_read / 1e6, l->rows_ok, tty && !final ? "" : "\n");
}

static void report(struct loader *l, const struct rejects *r, size_t base)
{
    for (size_t i = 0; i < r->n && l->reported < REJECTS_MAX; i++, l->reported++)
        fprintf(stderr, "opsdb: rejected %s %zu: %s\n", r->row_word, r->items[i].row + base,
                r->items[i].reason);
}

/* Parses and (while nothing failed) writes one chunk; last: the end of the input. */
static void load_chunk(struct loader *l, const char *data, size_t len, bool last)
{
    struct ingest_ctx ctx;
    ingest_ctx_init(&ctx, &l->cfg, l->fp, l->precision);
    ctx.max_rows = SIZE_MAX;
    struct batch b;
    batch_init(&b, l->table);
    struct rejects *r = malloc(sizeof *r);
    if (!r)
        abort();
    rejects_init(r, l->fmt == IN_JSON ? "row" : "line");
    int rc;
    size_t base = l->line_offset;
    if (l->fmt == IN_CSV) {
        rc = ingest_parse_csv(&ctx, data, len, &b, r);
        base = l->line_offset ? l->line_offset - 1 : 0; /* the header repeats in every chunk */
    } else if (l->fmt == IN_LOG) {
        rc = ingest_parse_log(l->parser, &ctx, data, len, l->line_offset + 1, last, &b, r);
        base = 0;
        if (rc == E_INVALID) { /* bad lines are listed and skipped; the good rows are kept */
            report(l, r, base);
            l->rows_bad += r->count;
            rc = 0;
        }
    } else {
        rc = ingest_parse_json(&ctx, data, len, l->fmt == IN_NDJSON, &b, r);
    }
    if (rc != 0) {
        report(l, r, base);
        l->rows_bad += r->count;
        l->failed = true;
    } else if (!l->failed) {
        struct err e;
        if (store_write_batch(l->store, &b, &e) != 0) {
            fprintf(stderr, "opsdb: writing failed: %s\n", e.msg);
            l->failed = true;
        } else {
            l->rows_ok += b.nrows;
        }
    }
    free(r);
    batch_release(&b);
}

static size_t count_lines(const char *d, size_t len)
{
    size_t n = 0;
    for (const char *p = d; (p = memchr(p, '\n', len - (size_t)(p - d))) != NULL; p++)
        n++;
    return n;
}

/* The end of the last complete record in data: after a newline outside CSV quotes. */
static size_t record_boundary(const char *d, size_t len, bool csv)
{
    size_t last = 0;
    bool quoted = false;
    for (size_t i = 0; i < len; i++) {
        if (csv && d[i] == '"')
            quoted = !quoted;
        else if (d[i] == '\n' && !quoted)
            last = i + 1;
    }
    return last;
}

static int read_all(FILE *f, struct loader *l)
{
    struct buf chunk;
    buf_init(&chunk, l->fmt == IN_JSON ? (size_t)1 << 34 : CHUNK_BYTES * 4);
    char block[1 << 16];
    size_t n;
    bool first = true;
    for (;;) {
        n = fread(block, 1, sizeof block, f);
        if (n > 0 && buf_append(&chunk, block, n) != 0) {
            buf_release(&chunk);
            return cli_fail("a single record is larger than %u MB", CHUNK_BYTES * 4 >> 20);
        }
        l->bytes_read += (int64_t)n;
        bool eof = n == 0;
        if (l->fmt == IN_JSON && !eof)
            continue;
        if (!eof && chunk.len < CHUNK_BYTES)
            continue;
        size_t cut = eof ? chunk.len : record_boundary(chunk.data, chunk.len, l->fmt == IN_CSV);
        if (cut == 0 && !eof)
            continue;
        if (first && l->fmt == IN_CSV) {
            size_t h = record_boundary(chunk.data, cut, true);
            const char *nl = memchr(chunk.data, '\n', cut);
            h = nl ? (size_t)(nl - chunk.data) + 1 : cut;
            buf_append(&l->header, chunk.data, h);
        }
        if (cut > 0 || (eof && l->fmt == IN_LOG)) { /* the log parser completes its event */
            struct buf part;
            buf_init(&part, (size_t)1 << 34);
            if (!first && l->fmt == IN_CSV)
                buf_append(&part, l->header.data, l->header.len);
            buf_append(&part, chunk.data, cut);
            load_chunk(l, part.data ? part.data : "", part.len, eof);
            buf_release(&part);
            l->line_offset += count_lines(chunk.data, cut);
            first = false;
        }
        if (chunk.len > cut) /* (an empty input has no buffer at all) */
            memmove(chunk.data, chunk.data + cut, chunk.len - cut);
        chunk.len -= cut;
        progress(l, false);
        if (eof)
            break;
    }
    buf_release(&chunk);
    if (ferror(f))
        return cli_fail("reading the input failed: %s", strerror(errno));
    return 0;
}

static int parse_flags(int argc, char **argv, struct cli_common *c, struct loader *l,
                       const char **table, const char **file)
{
    const struct command *cmd = cli_command("ingest");
    const char *fmt = NULL, *prec = "ms";
    for (int i = 1; i < argc; i++) {
        int rc = cli_common_flag(c, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc == 1)
            continue;
        if (strcmp(argv[i], "--format") == 0 || strcmp(argv[i], "--precision") == 0) {
            if (i + 1 >= argc)
                return cli_usage(cmd, "%s needs a value", argv[i]);
            *(argv[i][2] == 'f' ? &fmt : &prec) = argv[i + 1];
            i++;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage(cmd, "unknown option '%s'", argv[i]);
        } else if (!*table) {
            *table = argv[i];
        } else if (!*file) {
            *file = argv[i];
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (c->help)
        return -1;
    if (!*table)
        return cli_usage(cmd, "name the table, e.g. opsdb ingest api_usage rows.ndjson");
    if (!(l->table = schema_table(*table)))
        return cli_usage(cmd, "no table '%s' (see opsdb schema)", *table);
    if (!*file)
        *file = "-";
    if (!fmt) {
        size_t len = strlen(*file);
        fmt = len > 4 && strcmp(*file + len - 4, ".csv") == 0 ? "csv" : "ndjson";
    }
    for (size_t i = 0; i < sizeof log_formats / sizeof log_formats[0]; i++) {
        if (strcmp(fmt, log_formats[i].format) != 0)
            continue;
        if (strcmp(*table, log_formats[i].table) != 0)
            return cli_usage(cmd, "--format %s reads into %s, not %s", fmt, log_formats[i].table,
                             *table);
        l->fmt = IN_LOG;
        l->log_kind = log_formats[i].kind;
        return 0;
    }
    if (strcmp(fmt, "csv") == 0)
        l->fmt = IN_CSV;
    else if (strcmp(fmt, "ndjson") == 0 || strcmp(fmt, "jsonl") == 0)
        l->fmt = IN_NDJSON;
    else if (strcmp(fmt, "json") == 0)
        l->fmt = IN_JSON;
    else
        return cli_usage(cmd, "--format must be ndjson, csv or json, or a log format: nginx, "
                              "nginx_timed, apache, access (api_usage), json-log, plain-log "
                              "(error_logs)");
    int p = time_precision_parse(prec);
    if (p < 0)
        return cli_usage(cmd, "--precision must be ns, us, ms or s");
    l->precision = (enum time_precision)p;
    return 0;
}

static int finish(struct loader *l, const char *table)
{
    struct err e;
    if (l->failed) {
        store_write_rollback(l->store);
        if (l->rows_bad)
            return cli_fail("rejected %zu rows; nothing was written to %s", l->rows_bad, table);
        return cli_fail("nothing was written to %s", table);
    }
    if (l->fmt == IN_LOG && l->rows_ok == 0 && l->rows_bad > 0) {
        store_write_rollback(l->store);
        return cli_fail("no line could be read as a %s log (%zu bad lines); nothing was written "
                        "to %s",
                        l->log_kind, l->rows_bad, table);
    }
    if (store_write_commit(l->store, &e) != 0)
        return cli_fail("commit failed: %s; nothing was written", e.msg);
    progress(l, true);
    double secs = since(&l->started);
    printf("ingested %zu rows into %s in %.2f s (%.0f rows/s)\n", l->rows_ok, table, secs,
           secs > 0 ? (double)l->rows_ok / secs : 0.0);
    if (l->rows_bad)
        fprintf(stderr, "opsdb: skipped %zu bad lines (the first are listed above)\n", l->rows_bad);
    return 0;
}

int cmd_ingest(int argc, char **argv)
{
    struct cli_common c = {0};
    struct loader l = {0};
    const char *table = NULL, *file = NULL;
    int rc = parse_flags(argc, argv, &c, &l, &table, &file);
    if (rc) {
        return rc < 0 ? cli_help("ingest") : rc;
    }
    rc = cli_load_config(&c, &l.cfg);
    if (rc)
        return rc;
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (!f)
        return cli_fail("cannot open %s: %s", file, strerror(errno));
    struct stat sb;
    if (f != stdin && fstat(fileno(f), &sb) == 0)
        l.bytes_total = sb.st_size;
    struct err e;
    buf_init(&l.header, 1 << 20);
    if (!(l.fp = config_fingerprint_rules(&l.cfg, &e))) {
        rc = cli_fail("%s", e.msg);
    } else if (l.fmt == IN_LOG && logparser_new(&l.parser, &l.cfg, l.log_kind, file, &e) != 0) {
        rc = cli_fail("%s", e.msg);
    } else if (store_open(&l.store, &l.cfg, STORE_READWRITE, &e) != 0 ||
               store_write_begin(l.store, &e) != 0) {
        rc = cli_fail("%s", e.msg);
    } else {
        clock_gettime(CLOCK_MONOTONIC, &l.started);
        l.last_progress = l.started;
        rc = read_all(f, &l);
        if (rc)
            l.failed = true;
        int frc = finish(&l, table);
        rc = rc ? rc : frc;
    }
    store_close(&l.store);
    logparser_free(&l.parser);
    fingerprint_rules_free(&l.fp);
    buf_release(&l.header);
    if (f != stdin)
        fclose(f);
    return rc;
}
