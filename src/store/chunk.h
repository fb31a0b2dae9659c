/*
 * Private to store/: the compressed chunk codec for metric samples. A chunk is one series' run
 * of (ts, value) samples packed into one self-describing blob (format in chunk.c), so a day of
 * 10-second samples takes a few kilobytes instead of 8640 rows.
 *
 * The functions keep no state: any thread may call them at any time.
 */
#ifndef OPSDB_STORE_CHUNK_H
#define OPSDB_STORE_CHUNK_H

#include "core/core.h"

/* Samples in one chunk: bounds what a decoder allocates whatever a blob claims (about 20 MiB of
 * scratch at most). */
#define CHUNK_MAX_SAMPLES (1u << 20)

/* Appends to out the encoding of n samples: ts[] in ms, strictly increasing; values[] any
 * doubles, restored bit-exactly (including -0.0, NaN payloads, infinities, subnormals).
 * Returns 0, or E_INVALID (n == 0, n > CHUNK_MAX_SAMPLES, ts not strictly increasing), or the
 * buf's error (E_LIMIT, E_NOMEM), or E_NOMEM for the scratch memory; on any error out is left
 * unchanged and e says why. */
int chunk_encode(const int64_t *ts, const double *values, size_t n, struct buf *out, struct err *e);

/* Reads the sample count, first and last ts from a blob's header without decoding the rest
 * (nor checking it: only chunk_decode() proves a blob sound). Returns 0, or E_INVALID when the
 * blob is not a chunk, is of an unknown version or its header is truncated or inconsistent.
 * Any of n, first_ts, last_ts and e may be NULL. */
int chunk_header(const void *blob, size_t len, size_t *n, int64_t *first_ts, int64_t *last_ts,
                 struct err *e);

/* Decodes a whole blob into ts[] and values[] of capacity cap (both non-NULL when cap > 0);
 * *n (never NULL) gets the count. Returns 0, or E_INVALID with a message for any malformed,
 * truncated or corrupt blob (it never reads out of bounds and allocates at most what
 * CHUNK_MAX_SAMPLES implies, whatever the bytes), E_LIMIT when cap is smaller than the blob's
 * sample count, E_NOMEM when scratch memory is short. On error *n is 0 and the arrays hold
 * garbage. */
int chunk_decode(const void *blob, size_t len, int64_t *ts, double *values, size_t cap, size_t *n,
                 struct err *e);

/* One column of n doubles in the encoding the chunks use for values (decimal or XOR, chosen for
 * the column, behind a kind byte), without timestamps, header or compression: for codecs that
 * keep several columns over one run of timestamps and compress them together (minutes.c).
 * chunk_put_values writes at most chunk_values_bound(n) bytes at p and returns how many.
 * chunk_get_values reads n values at r, advancing it; E_INVALID (with a message) for bytes that
 * are not such a column, never reading out of bounds. Values come back bit for bit. */
struct reader;
size_t chunk_values_bound(size_t n);
size_t chunk_put_values(uint8_t *p, const double *values, size_t n);
int chunk_get_values(struct reader *r, size_t n, double *values, struct err *e);

#endif
