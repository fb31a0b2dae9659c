/*
 * Prometheus remote write 1.0 into system_metrics: the body is one snappy block (the block
 * format, not the framed one) holding a protobuf WriteRequest (src/ingest/remote_write.proto,
 * compiled by protoc-c at build time). A sender retries on 5xx only, so everything wrong with
 * the bytes is an E_INVALID or E_LIMIT here (a 4xx for the route): sending them again cannot
 * help.
 */
#include "ingest/ingest_int.h"
#include "ingest/remote_write.pb-c.h"

#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>

typedef Opsdb__RemoteWrite__WriteRequest write_request;
typedef Opsdb__RemoteWrite__TimeSeries time_series;

/* Decompresses the snappy block into out (malloc'd), refusing a claimed size past max. */
static int unsnappy(const char *data, size_t len, size_t max, char **out, size_t *out_len,
                    struct err *e)
{
    size_t n;
    if (snappy_uncompressed_length(data, len, &n) != SNAPPY_OK)
        return err_set(e, E_INVALID,
                       "the body is not snappy-compressed (remote write sends a snappy block "
                       "with Content-Encoding: snappy)");
    if (n > max)
        return err_set(e, E_LIMIT,
                       "the body decompresses to %zu bytes, more than the limit of %zu "
                       "(remote_write.max_decoded_bytes): lower the sender's "
                       "max_samples_per_send",
                       n, max);
    *out = malloc(n ? n : 1);
    if (!*out)
        return err_set(e, E_NOMEM, "out of memory for a %zu-byte body", n);
    *out_len = n;
    if (snappy_uncompress(data, len, *out, out_len) != SNAPPY_OK) {
        free(*out);
        *out = NULL;
        return err_set(e, E_INVALID, "the snappy block is damaged (it does not decompress)");
    }
    return 0;
}

/* Every sample of one series. */
static void add_series(const struct ingest_ctx *ctx, const time_series *ts, size_t index,
                       struct batch *b, struct rejects *r, struct prom_stats *st)
{
    if (ts->n_labels > PROM_MAX_LABELS) {
        rejects_add(r, index, "labels", "the series has %zu labels, more than %d", ts->n_labels,
                    PROM_MAX_LABELS);
        return;
    }
    struct prom_label labels[PROM_MAX_LABELS];
    for (size_t i = 0; i < ts->n_labels; i++) {
        const char *name = ts->labels[i]->name, *value = ts->labels[i]->value;
        labels[i] = (struct prom_label){name, value, strlen(name), strlen(value)};
    }
    for (size_t i = 0; i < ts->n_samples; i++)
        if (!ingest_prom_sample(ctx, b, labels, ts->n_labels, ts->samples[i]->timestamp,
                                ts->samples[i]->value, index, r, st))
            return; /* one rejection per series: its other samples fail the same way */
}

int ingest_parse_remote_write(const struct ingest_ctx *ctx, const char *data, size_t len,
                              size_t max_decoded_bytes, struct batch *b, struct rejects *r,
                              struct prom_stats *st, struct err *e)
{
    struct prom_stats local = {0};
    if (!st)
        st = &local;
    char *raw = NULL;
    size_t raw_len = 0;
    int rc = unsnappy(data, len, max_decoded_bytes, &raw, &raw_len, e);
    if (rc)
        return rc;
    write_request *req =
        opsdb__remote_write__write_request__unpack(NULL, raw_len, (const uint8_t *)raw);
    if (!req) {
        rc = err_set(e, E_INVALID,
                     "the body is not a remote-write WriteRequest (the protobuf does not decode)");
        goto out;
    }
    size_t samples = 0;
    for (size_t i = 0; i < req->n_timeseries; i++)
        samples += req->timeseries[i]->n_samples;
    if (samples > ctx->max_rows) {
        rc = err_set(e, E_LIMIT,
                     "the request has %zu samples, more than %zu (ingest.max_rows_per_request)",
                     samples, ctx->max_rows);
        goto out;
    }
    batch_reserve(b, samples);
    for (size_t i = 0; i < req->n_timeseries; i++)
        add_series(ctx, req->timeseries[i], i, b, r, st);
    if (r->count)
        rc = err_set(e, E_INVALID, "rejected %zu of %zu series", r->count, req->n_timeseries);
out:
    if (req)
        opsdb__remote_write__write_request__free_unpacked(req, NULL);
    free(raw);
    return rc;
}
