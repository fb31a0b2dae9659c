/*
 * Private to store/: the back-end operations table and the parts of struct store that the
 * generic layer (store.c) shares with the back ends.
 */
#ifndef OPSDB_STORE_INT_H
#define OPSDB_STORE_INT_H

#include "store/store.h"

#include <pthread.h>

struct store_ops {
    const char *name;
    /* Opens the back end and sets s->impl. */
    int (*open)(struct store *s, enum store_mode mode, struct err *e);
    void (*close)(struct store *s);
    int (*schema_version)(struct store *s);
    int64_t (*size_bytes)(struct store *s);
    int (*write_begin)(struct store *s, struct err *e);
    int (*write_batch)(struct store *s, const struct batch *b, struct err *e);
    int (*write_commit)(struct store *s, struct err *e);
    void (*write_rollback)(struct store *s);
    int (*check_writable)(struct store *s, struct err *e);
    bool (*changed_elsewhere)(struct store *s);
    int (*compact_step)(struct store *s, int64_t before_ms, struct store_compact_stats *stats,
                        struct err *e);
    int (*pack_step)(struct store *s, int64_t before_ms, struct store_pack_stats *stats,
                     struct err *e);
    int (*retention_apply)(struct store *s, int64_t now_ms, struct store_retention_stats *stats,
                           struct err *e);
    int (*restore_partition)(struct store *s, const struct store_archive *a, int64_t *rows,
                             struct err *e);
    int (*unload_partition)(struct store *s, const char *partition, struct err *e);
    int (*backup_to)(struct store *s, const char *path, store_backup_progress progress, void *arg,
                     struct err *e);
    int (*file_in_use)(const char *path, long *pid, struct err *e);
    int (*file_set_aside)(const char *path, const char *aside, struct err *e);
    int (*file_remove)(const char *path, struct err *e);
    int (*file_vacuum_plan)(const struct config *cfg, struct store_vacuum_stats *stats,
                            struct err *e);
    int (*file_vacuum)(const struct config *cfg, store_backup_progress progress, void *arg,
                       struct store_vacuum_stats *stats, struct err *e);
    int (*optimize)(struct store *s, struct store_optimize_stats *stats, struct err *e);
    /* A read connection, owned by the generic reader pool. */
    void *(*reader_open)(struct store *s, struct err *e);
    void (*reader_close)(void *conn);
    int (*reader_query)(void *conn, const struct store_query *q, struct store_result *res,
                        struct err *e);
    /* tables untrusted queries on conn may not read from now on (NULL: none) */
    void (*reader_hide)(void *conn, const char *const *hidden);
    int (*series_read)(void *conn, const struct series_read *q, series_sink sink, void *arg,
                       struct err *e);
    int (*integrity_check)(void *conn, bool quick, struct buf *report, struct err *e);
};

struct store_reader {
    struct store_reader *next;
    const struct store_ops *ops;
    void *conn;
};

struct store {
    const struct store_ops *ops;
    void *impl;
    struct config cfg; /* copy: the store outlives nothing it borrowed */
    char description[600];
    pthread_mutex_t readers_lock;
    pthread_cond_t readers_free;
    struct store_reader *free_readers;
    int readers_open;
};

extern const struct store_ops store_sqlite_ops;

/* Writing an archive (archive.c): open, a row at a time (t->ncolumns values), then finish,
 * which puts the file and its manifest in place atomically and frees w; abort removes what was
 * written. E_IO for the files, E_LIMIT for a row longer than a line may be. */
struct archive_writer;
int archive_writer_open(struct archive_writer **out, const char *dir, const struct table *t,
                        const char *partition, struct err *e);
int archive_writer_row(struct archive_writer *w, const struct value *row, struct err *e);
int archive_writer_finish(struct archive_writer **w, int64_t from_ms, int64_t to_ms, struct err *e);
void archive_writer_abort(struct archive_writer **w);

/* Reading one back: hands batches of up to batch_rows rows to sink (NULL: only check), then
 * checks size, sha256 and row count against the manifest — a mismatch is E_CORRUPT after the
 * sink saw the rows, so a restore must keep them uncommitted until this returns 0. */
typedef int (*archive_sink)(void *arg, struct batch *b, struct err *e);
int archive_read(const struct store_archive *a, size_t batch_rows, archive_sink sink, void *arg,
                 struct err *e);

#endif
