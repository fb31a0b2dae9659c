/* Private to ingest/: helpers the parsers share. */
#ifndef OPSDB_INGEST_INT_H
#define OPSDB_INGEST_INT_H

#include "ingest/ingest.h"

/* Converts text into column col of the last row of b; records a rejection on failure. */
bool ingest_set_text(const struct ingest_ctx *ctx, struct batch *b, int col, const char *s,
                     size_t len, size_t input_index, struct rejects *r);
/* Ends a parsed row: validates it, or drops it when it already had a bad field. Returns false
 * when the row was rejected. */
bool ingest_finish_row(const struct ingest_ctx *ctx, struct batch *b, bool row_ok,
                       size_t input_index, struct rejects *r);
/* Appends s as a JSON string literal (quoted, escaped). */
void json_escape_into(struct buf *out, const char *s, size_t len);

/* ---- log parsers (ingest_logs.c dispatches to ingest_accesslog.c and ingest_applog.c) ---- */

struct logparser_ops {
    const char *table; /* the schema table of its rows */
    int (*line)(struct logparser *p, const struct ingest_ctx *ctx, const char *line, size_t len,
                size_t line_no, int64_t offset, struct batch *b, struct rejects *r);
    int (*flush)(struct logparser *p, const struct ingest_ctx *ctx, struct batch *b,
                 struct rejects *r);
    bool (*pending)(const struct logparser *p, struct logparser_pending *out);
    void (*release)(struct logparser *p); /* frees impl */
};

struct logparser {
    const struct logparser_ops *ops;
    const struct table *table;
    char service[256]; /* logs.service, or the name taken from the path */
    bool service_set;  /* service came from logs.service (a line's own $host does not win) */
    char host[256];    /* logs.host, or this machine's name */
    void *impl;        /* the kind's own state */
};

/* Fill p->ops and p->impl for an access log in format (nginx log_format or Apache LogFormat
 * text), or for JSON (json) or plain-text application logs. E_INVALID with the reason. */
int accesslog_init(struct logparser *p, const char *format, struct err *e);
int applog_init(struct logparser *p, const struct config *cfg, bool json, struct err *e);

/* Sets text column name of the last row of b (converted by the schema; a rejection on failure).
 * A NULL or empty s leaves the column NULL. */
bool ingest_set_named(const struct ingest_ctx *ctx, struct batch *b, const char *name,
                      const char *s, size_t len, size_t input_index, struct rejects *r);
/* Sets integer or real column name of the last row of b (range checks come with validation). */
void ingest_set_int(struct batch *b, const char *name, int64_t v);
void ingest_set_real(struct batch *b, const char *name, double v);

/* ---- json_scan.c: a strict JSON scanner without allocation ------------------------------ */

enum json_kind {
    JSON_V_STRING,
    JSON_V_INT,
    JSON_V_REAL,
    JSON_V_TRUE,
    JSON_V_FALSE,
    JSON_V_NULL,
    JSON_V_OBJECT, /* s/len: the raw text of the nested object */
    JSON_V_ARRAY,  /* s/len: the raw text */
};

struct json_value {
    enum json_kind kind;
    const char *s; /* STRING: decoded bytes (into the input or a scratch buffer); numbers: text */
    size_t len;
};

struct json_cursor {
    const char *data;
    size_t len, pos;
    const char *error; /* first syntax error, NULL while none */
    bool first_member;
    int max_depth;        /* nesting at most (JSON_MAX_DEPTH unless set after init) */
    size_t max_string;    /* bytes of a string as written at most (SIZE_MAX unless set) */
    const char *limit_of; /* the option whose limit stopped the scan (error says which), or
                             NULL when error is a syntax error */
};

#define JSON_MAX_DEPTH 32

void json_cursor_init(struct json_cursor *c, const char *data, size_t len);
/* Expects '{' (after whitespace). */
bool json_object_begin(struct json_cursor *c);
/* The next member: 1 with key and value, 0 at '}', -1 on a syntax error (c->error). Strings with
 * escapes are decoded into the scratch buffers, valid until the next call. */
int json_object_next(struct json_cursor *c, const char **key, size_t *key_len, struct json_value *v,
                     struct buf *key_scratch, struct buf *val_scratch);
bool json_array_begin(struct json_cursor *c);
/* 1 when another element follows (the cursor is on it), 0 at ']', -1 on a syntax error. */
int json_array_next(struct json_cursor *c);
bool json_skip_value(struct json_cursor *c, struct buf *scratch);
/* True when only whitespace is left. */
bool json_at_end(struct json_cursor *c);

#endif
