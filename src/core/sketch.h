/*
 * sketch: a mergeable latency sketch (DDSketch-style log buckets) for p50/p95/p99 over any window
 * of pre-aggregated rollups, within SKETCH_RELATIVE_ACCURACY of the exact percentile.
 *
 * A value x > 0 falls in bucket i = ceil(log(x) / log(gamma)), gamma = (1 + a) / (1 - a), which
 * holds (gamma^(i-1), gamma^i]; the bucket stands for 2 * gamma^i / (gamma + 1), within a of every
 * value it holds. Values below SKETCH_MIN_VALUE count as zero (kept apart, reported as 0).
 * Bucket indexes are clamped to SKETCH_MIN_INDEX..SKETCH_MAX_INDEX: the top bucket stands for
 * about 1.7e18, so larger values are reported as that (latencies in ms never come close), and the
 * storage of a sketch is at most (SKETCH_MAX_INDEX - SKETCH_MIN_INDEX + 1) counters, about 25 KiB.
 *
 * Merging adds counts bucket by bucket, so a merge of sketches of parts is exactly the sketch of
 * the whole (equal serializations), whatever the order.
 *
 * Blob format (version 1; a change of alpha, bounds or layout is a new version):
 *   byte    version (1)
 *   varint  count of zeros
 *   varint  number of non-empty buckets, n (at most the index range)
 *   n times: zigzag varint index delta (from 0 for the first bucket, then from the previous
 *            one; indexes strictly increase), varint count (>= 1)
 * Varints are unsigned LEB128, minimal, at most 10 bytes. The encoding is canonical: a blob that
 * parses serializes back to the same bytes.
 *
 * A struct sketch belongs to one thread at a time; the functions keep no other state.
 */
#ifndef OPSDB_SKETCH_H
#define OPSDB_SKETCH_H

#include "core/core.h"

#define SKETCH_RELATIVE_ACCURACY 0.01
#define SKETCH_MIN_VALUE 1e-9 /* smaller values count as zero */
#define SKETCH_MIN_INDEX (-1100)
#define SKETCH_MAX_INDEX 2100
#define SKETCH_BLOB_VERSION 1
/* The largest blob sketch_serialize writes: header plus every bucket at its widest. */
#define SKETCH_BLOB_MAX_BYTES (1 + 10 + 2 + (SKETCH_MAX_INDEX - SKETCH_MIN_INDEX + 1) * (2 + 10))

struct sketch;

/* An empty sketch; NULL on allocation failure. Free with sketch_free. */
struct sketch *sketch_new(void);
/* Frees *s (NULL allowed) and clears the pointer. */
void sketch_free(struct sketch **s);

/* Adds count observations of x (a latency, >= 0). count 0 adds nothing. E_INVALID for a negative,
 * NaN or infinite x; E_LIMIT when the total count would pass UINT64_MAX; E_NOMEM. s is unchanged
 * on failure. */
int sketch_add(struct sketch *s, double x, uint64_t count, struct err *e);

/* Adds every observation of from to into (into == from doubles it). E_LIMIT when the total count
 * would pass UINT64_MAX; E_NOMEM. into is unchanged on failure. */
int sketch_merge(struct sketch *into, const struct sketch *from, struct err *e);

/* Number of observations, zeros included. */
uint64_t sketch_count(const struct sketch *s);

/* The p-th percentile (0..100), defined like opsdb's percentile(x, p) aggregate: the value at
 * rank p/100*(count-1) linearly interpolated between the two neighbouring ranks, each rank's value
 * taken as its bucket's representative (0 for zeros). Since each representative is within alpha
 * of the exact value at its rank, so is the interpolation. NAN when empty or p is outside
 * 0..100. */
double sketch_percentile(const struct sketch *s, double p);

/* Appends the blob (format above, at most SKETCH_BLOB_MAX_BYTES) to out. E_LIMIT when out's
 * maximum is reached, E_NOMEM; out is unchanged on failure. */
int sketch_serialize(const struct sketch *s, struct buf *out);

/* Merges a serialized sketch into s. E_INVALID with a message for any malformed blob (truncated,
 * unknown version, index out of range or not increasing, empty bucket, non-minimal varint,
 * trailing bytes, counts past UINT64_MAX); E_LIMIT when s's total would pass UINT64_MAX; E_NOMEM.
 * Never reads outside blob[0..len); allocates at most one sketch's bounded storage whatever the
 * bytes. s is unchanged on failure. */
int sketch_merge_blob(struct sketch *s, const void *blob, size_t len, struct err *e);

#endif
