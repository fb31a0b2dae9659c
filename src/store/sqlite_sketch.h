/*
 * Private to the SQLite back end: the SQL functions over latency sketches (core/sketch.h), so
 * rollups can keep one sketch blob per bucket and queries can merge them over any window.
 */
#ifndef OPSDB_SQLITE_SKETCH_H
#define OPSDB_SQLITE_SKETCH_H

#include <sqlite3.h>

/* Registers on db, deterministic and innocuous (safe in views and for untrusted SQL):
 *   sketch(x)                aggregate: the sketch blob of the non-NULL latencies x (>= 0, in
 *                            ms), NULL when there are none; an error for a negative, infinite
 *                            or non-numeric x
 *   sketch(x, weight)        the same with each x counted weight times (a whole number >= 0;
 *                            NULL counts once), for pre-counted rows
 *   sketch_combine(a, b)     scalar: the merge of two sketch blobs (NULL is empty), for upserts
 *   sketch_merge(blob)       aggregate: the merge of the non-NULL sketch blobs, NULL when none;
 *                            an error for anything that is not a valid sketch blob
 *   sketch_percentile(b, p)  REAL: the p-th percentile (0..100) of the sketch, within 1% of the
 *                            exact percentile(x, p); NULL when b or p is NULL or b is empty; an
 *                            error for p outside 0..100 or an invalid blob
 *   sketch_count(b)          INTEGER: the observations in b; NULL when b is NULL
 * Returns SQLITE_OK or the rc of the registration that failed. Call once per connection, from
 * the thread that owns it. */
int sqlite_sketch_register(sqlite3 *db);

#endif
