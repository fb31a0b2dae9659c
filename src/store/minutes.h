/*
 * Private to store/: per-minute summaries of metric samples — the 1-minute rollup of one
 * series (min, max, sum, count, last and last_ts per UTC minute) — computed from a run of
 * samples, encoded as one blob that is kept beside the samples' chunk, and read back.
 *
 * Keeping a chunk's minutes in the chunk's own row is what makes the minute rollup cost one
 * row per series and batch instead of one B-tree upsert per series and minute, and keeps it
 * exact by construction: it is rebuilt from the samples whenever they are rewritten.
 *
 * Buckets are mergeable: two runs that share a minute (a batch boundary inside a minute) give
 * two partial buckets, and minutes_decode_append() merges a bucket equal in ts to the last one
 * held. Samples are finite (ingestion refuses others); a sum that overflows (inf + -inf) is NaN,
 * which SQLite reads as NULL. Split sums are added in another order than one pass would: equal up
 * to floating-point rounding.
 *
 * The functions keep no state: any thread may call them at any time.
 */
#ifndef OPSDB_STORE_MINUTES_H
#define OPSDB_STORE_MINUTES_H

#include "core/core.h"

#define MINUTE_MS 60000LL
/* Buckets in one blob: a chunk holds one UTC day at most. */
#define MINUTES_MAX 1440

/* Buckets in ts order, each array of capacity cap. */
struct minutes {
    int64_t *ts; /* bucket start: a multiple of MINUTE_MS */
    double *min, *max, *sum, *last;
    int64_t *count, *last_ts;
    size_t n, cap;
};

void minutes_init(struct minutes *m);
void minutes_release(struct minutes *m);

/* Appends the buckets of n samples (ts strictly increasing, after every bucket held but the
 * last, which a sample of its minute joins). 0, or E_NOMEM, or E_INVALID for a ts within a
 * minute of INT64_MIN (it has no minute start) or a minute past 2^53 samples. */
int minutes_add_samples(struct minutes *m, const int64_t *ts, const double *values, size_t n,
                        struct err *e);

/* Appends to out the encoding of buckets [from, from + n) of m (1 <= n <= MINUTES_MAX, else
 * E_INVALID). 0, or E_NOMEM, or the buf's E_LIMIT; out is unchanged on error and e says
 * why. */
int minutes_encode(const struct minutes *m, size_t from, size_t n, struct buf *out, struct err *e);

/* Decodes a blob and appends its buckets, merging its first into the last held when they share
 * a minute (counts stay at most 2^53: a merge past that is E_INVALID). A blob comes from disk:
 * anything malformed is E_INVALID with a message (m keeps what it held before), never a read out of
 * bounds. E_NOMEM when memory is short. */
int minutes_decode_append(struct minutes *m, const void *blob, size_t len, struct err *e);

#endif
