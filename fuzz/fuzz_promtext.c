/*
 * libFuzzer target: the Prometheus text exposition format (ingest_parse_promtext) into
 * system_metrics, as a scrape of a target with job and instance labels reads it. The input is
 * the page as is.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    const struct ingest_ctx *ctx = &fuzz_ctx[PREC_MS];
    char *page = malloc(size ? size : 1); /* exact size: a read past the end is reported */
    memcpy(page, data, size);
    static const struct prom_label target[] = {{"job", "fuzz", 3, 4},
                                               {"instance", "127.0.0.1:9100", 8, 14}};
    struct prom_text_opts opts = {ctx->validate.now_ms, target, 2};
    struct batch b;
    batch_init(&b, schema_table("system_metrics"));
    struct rejects *r = malloc(sizeof *r);
    rejects_init(r, "line");
    struct prom_stats st = {0};
    int rc = ingest_parse_promtext(ctx, page, size, &opts, &b, r, &st);
    fuzz_check_batch(ctx, rc, &b, r, true);
    fuzz_check(st.nonfinite <= st.samples, "%llu non-finite of %llu samples",
               (unsigned long long)st.nonfinite, (unsigned long long)st.samples);
    if (rc == 0) {
        fuzz_check(b.nrows == st.samples - st.nonfinite, "%zu rows for %llu finite samples",
                   b.nrows, (unsigned long long)(st.samples - st.nonfinite));
        for (size_t i = 0; i < b.nrows; i++) {
            const struct value *row = batch_row(&b, i);
            const struct value *metric = &row[schema_column(b.table, "metric")];
            const struct value *component = &row[schema_column(b.table, "component")];
            fuzz_check(metric->len > 0, "row %zu has no metric", i);
            fuzz_check(component->len == 4 && memcmp(component->s, "fuzz", 4) == 0,
                       "row %zu: component %.*s is not the target's job", i, (int)component->len,
                       component->s);
        }
    }
    batch_release(&b);
    free(r);
    free(page);
    return 0;
}
