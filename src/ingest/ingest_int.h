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

#endif
