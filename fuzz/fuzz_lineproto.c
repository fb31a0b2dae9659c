/*
 * libFuzzer target: InfluxDB line protocol (ingest_parse_lineproto) into system_metrics, in the
 * Influx default precision (ns). The input is the request body as is.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    const struct ingest_ctx *ctx = &fuzz_ctx[PREC_NS];
    /* an exact-size copy, so a read past the end is an ASan report */
    char *body = malloc(size ? size : 1);
    memcpy(body, data, size);
    struct batch b;
    batch_init(&b, schema_table("system_metrics"));
    struct rejects *r = malloc(sizeof *r);
    rejects_init(r, "line");
    int rc = ingest_parse_lineproto(ctx, body, size, &b, r);
    /* host/component/metric/labels skip the UTF-8 and duplicate-key checks (a known bug) */
    fuzz_check_batch(ctx, rc, &b, r, fuzz_strict);
    if (rc == 0)
        for (size_t i = 0; i < b.nrows; i++) {
            const struct value *metric = &batch_row(&b, i)[schema_column(b.table, "metric")];
            fuzz_check(metric->len > 1 && memchr(metric->s, '_', metric->len), "metric %.*s",
                       (int)metric->len, metric->s);
        }
    batch_release(&b);
    free(r);
    free(body);
    return 0;
}
