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
    /* A read connection, owned by the generic reader pool. */
    void *(*reader_open)(struct store *s, struct err *e);
    void (*reader_close)(void *conn);
    int (*reader_query)(void *conn, const struct store_query *q, struct store_result *res,
                        struct err *e);
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

#endif
