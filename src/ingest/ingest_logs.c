/*
 * Log parsers: the table of log kinds (which parser, which format, which table) and what the
 * kinds share — the service and host of a file's rows, and splitting text into lines. The
 * access log parser (ingest_accesslog.c) and the application log parser (ingest_applog.c) fill
 * in struct logparser_ops; the tailer (agent/tail.c) and `opsdb ingest --format` drive them
 * through this one interface.
 */
#include "ingest/ingest_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* nginx's predefined "combined" format; Apache's combined format logs the same fields. */
#define NGINX_COMBINED                                                                             \
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "             \
    "\"$http_referer\" \"$http_user_agent\""

enum log_parser_kind { KIND_ACCESS, KIND_JSON, KIND_PLAIN };

struct log_kind {
    const char *name;
    enum log_parser_kind parser;
    const char *format; /* access logs: the format, NULL = logs.access_format */
};

static const struct log_kind kinds[] = {
    {"nginx", KIND_ACCESS, NGINX_COMBINED},
    {"nginx_timed", KIND_ACCESS, NGINX_COMBINED " $request_time $upstream_response_time"},
    {"apache", KIND_ACCESS, "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\""},
    {"access", KIND_ACCESS, NULL},
    {"json", KIND_JSON, NULL},
    {"plain", KIND_PLAIN, NULL},
};

const char *logparser_kinds(void)
{
    return "nginx, nginx_timed, apache, access, json, plain";
}

/* Drops a suffix of name: a log file extension, then "access"/"error" with the separator
 * before it. */
static void strip_suffixes(char *name)
{
    static const char *const suffixes[] = {".log", ".jsonl", ".json", ".txt",
                                           ".out", "access", "error"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t len = strlen(name), n = strlen(suffixes[i]);
        if (len < n || strcmp(name + len - n, suffixes[i]) != 0)
            continue;
        len -= n;
        while (len > 0 && strchr(".-_", name[len - 1]))
            len--;
        name[len] = '\0';
    }
}

void ingest_log_service(const char *path, char *out, size_t size)
{
    out[0] = '\0';
    if (!path || strcmp(path, "-") == 0 || size == 0)
        return;
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    char *slash = strrchr(copy, '/');
    char *base = slash ? slash + 1 : copy;
    snprintf(out, size, "%s", base);
    strip_suffixes(out);
    if (out[0] || !slash || slash == copy)
        return;
    *slash = '\0'; /* nothing left of the name: the directory names the service */
    slash = strrchr(copy, '/');
    snprintf(out, size, "%s", slash ? slash + 1 : copy);
}

int logparser_new(struct logparser **out, const struct config *cfg, const char *kind,
                  const char *path, struct err *e)
{
    *out = NULL;
    const struct log_kind *k = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].name, kind) == 0)
            k = &kinds[i];
    if (!k)
        return err_set(e, E_INVALID, "unknown log kind '%s' (kinds: %s)", kind, logparser_kinds());
    struct logparser *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(e, E_NOMEM, "out of memory");
    p->service_set = cfg->logs_service[0] != '\0';
    char *full = path && strcmp(path, "-") != 0 ? realpath(path, NULL) : NULL;
    if (p->service_set)
        snprintf(p->service, sizeof p->service, "%s", cfg->logs_service);
    else /* the full path, so that a relative "access.log" is named after its directory */
        ingest_log_service(full ? full : path, p->service, sizeof p->service);
    free(full);
    if (cfg->logs_host[0])
        snprintf(p->host, sizeof p->host, "%s", cfg->logs_host);
    else if (gethostname(p->host, sizeof p->host - 1) != 0)
        p->host[0] = '\0';
    int rc = k->parser == KIND_ACCESS
                 ? accesslog_init(p, k->format ? k->format : cfg->logs_access_format, e)
                 : applog_init(p, cfg, k->parser == KIND_JSON, e);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->table = schema_table(p->ops->table);
    *out = p;
    return 0;
}

void logparser_free(struct logparser **p)
{
    if (!*p)
        return;
    (*p)->ops->release(*p);
    free(*p);
    *p = NULL;
}

const struct table *logparser_table(const struct logparser *p)
{
    return p->table;
}

int logparser_line(struct logparser *p, const struct ingest_ctx *ctx, const char *line, size_t len,
                   size_t line_no, int64_t offset, struct batch *b, struct rejects *r)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    return p->ops->line(p, ctx, line, len, line_no, offset, b, r);
}

int logparser_flush(struct logparser *p, const struct ingest_ctx *ctx, struct batch *b,
                    struct rejects *r)
{
    return p->ops->flush ? p->ops->flush(p, ctx, b, r) : 0;
}

bool logparser_pending(const struct logparser *p, struct logparser_pending *out)
{
    return p->ops->pending && p->ops->pending(p, out);
}

int ingest_parse_log(struct logparser *p, const struct ingest_ctx *ctx, const char *data,
                     size_t len, size_t first_line, bool final, struct batch *b, struct rejects *r)
{
    size_t pos = 0, line_no = first_line;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        logparser_line(p, ctx, data + pos, end - pos, line_no++, (int64_t)pos, b, r);
        if (b->nrows > ctx->max_rows)
            return E_LIMIT;
        pos = end + 1;
    }
    if (final)
        logparser_flush(p, ctx, b, r);
    if (b->nrows > ctx->max_rows)
        return E_LIMIT;
    return r->count ? E_INVALID : 0;
}

bool ingest_set_named(const struct ingest_ctx *ctx, struct batch *b, const char *name,
                      const char *s, size_t len, size_t input_index, struct rejects *r)
{
    int col = schema_column(b->table, name);
    if (col < 0 || !s || len == 0)
        return true;
    return ingest_set_text(ctx, b, col, s, len, input_index, r);
}

void ingest_set_int(struct batch *b, const char *name, int64_t v)
{
    int col = schema_column(b->table, name);
    assert(col >= 0);
    struct value *cell = &batch_row(b, b->nrows - 1)[col];
    cell->type = VAL_INT;
    cell->i = v;
}

void ingest_set_real(struct batch *b, const char *name, double v)
{
    int col = schema_column(b->table, name);
    assert(col >= 0);
    struct value *cell = &batch_row(b, b->nrows - 1)[col];
    cell->type = VAL_REAL;
    cell->d = v;
}
