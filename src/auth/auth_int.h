/* Private to auth/: rows of users, api_tokens and audit_log, and running a change. */
#ifndef OPSDB_AUTH_INT_H
#define OPSDB_AUTH_INT_H

#include "auth/auth.h"
#include "store/store.h"

/* A change: runs inside one write transaction opened by auth_run_change (reads see everything
 * committed before it, and no other process commits until it ends). */
typedef int (*auth_change_fn)(struct store *s, void *arg, struct err *e);
/* Runs fn in a write transaction on t's store: directly, or on the writer thread (writer_run)
 * when t->writer is set; commits when fn returns 0, else rolls back. notify: the writer's hooks
 * hear of it (n == 0), so the server's token cache loads again. */
int auth_run_change(const struct auth_target *t, auth_change_fn fn, void *arg, bool notify,
                    struct err *e);

/* Reads the row of state table name whose key is key into a new row of b (every column, in
 * schema order): 1 found, 0 none (no row added), or an error code. */
int auth_load_row(struct store *s, struct batch *b, const char *key, struct err *e);
/* Set one column of row (by name) to a copy of text (NULL: NULL) or to an integer. */
void auth_put_text(struct batch *b, struct value *row, const char *col, const char *text);
void auth_put_int(struct batch *b, struct value *row, const char *col, int64_t v);
/* Appends an audit row to b (a batch of audit_log). */
void auth_audit_row(struct batch *b, const struct auth_audit *a);

#endif
