/*
 * libFuzzer target: Prometheus remote-write bodies (ingest_parse_remote_write), with a 1 MiB
 * decoded limit. The first byte selects the form: odd, the rest is the body as sent (snappy
 * framing and all); even, the rest is a protobuf WriteRequest that is snappy-compressed here,
 * so that mutations reach the protobuf decoder and the sample mapping.
 */
#include "fuzz_common.h"

#include <snappy-c.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DECODED_MAX (1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (size == 0)
        return 0;
    const struct ingest_ctx *ctx = &fuzz_ctx[PREC_MS];
    size_t len = size - 1;
    char *body;
    if (data[0] & 1) {
        body = malloc(len ? len : 1);
        memcpy(body, data + 1, len);
    } else {
        size_t cap = snappy_max_compressed_length(len);
        body = malloc(cap);
        fuzz_check(snappy_compress((const char *)data + 1, len, body, &cap) == SNAPPY_OK,
                   "snappy_compress of %zu bytes", len);
        len = cap;
    }
    struct batch b;
    batch_init(&b, schema_table("system_metrics"));
    struct rejects *r = malloc(sizeof *r);
    rejects_init(r, "series");
    struct prom_stats st = {0};
    struct err e;
    err_clear(&e);
    int rc = ingest_parse_remote_write(ctx, body, len, FUZZ_DECODED_MAX, &b, r, &st, &e);
    fuzz_check(rc == 0 || rc == E_INVALID || rc == E_LIMIT, "rc %d", rc);
    fuzz_check((rc == 0) == (e.msg[0] == '\0'), "rc %d with message '%s'", rc, e.msg);
    if (rc != E_LIMIT && r->count == 0 && rc == 0)
        fuzz_check(b.nrows == st.samples - st.nonfinite, "%zu rows for %llu finite samples",
                   b.nrows, (unsigned long long)(st.samples - st.nonfinite));
    if (rc == 0 || r->count)
        fuzz_check_batch(ctx, rc, &b, r, true);
    batch_release(&b);
    free(r);
    free(body);
    return 0;
}
