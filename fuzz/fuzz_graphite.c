/*
 * libFuzzer target: Graphite plaintext lines (ingest_parse_graphite) into system_metrics with
 * the built-in templates and a few user ones. The input is the bytes a connection sends.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    static struct graphite_templates *ts;
    if (!ts) {
        struct err e;
        int rc = ingest_graphite_templates_new(
            &ts, "servers.* .host.component.metric* env=prod;app* .region-zone.host.metric", &e);
        fuzz_check(rc == 0, "templates: %s", e.msg);
    }
    const struct ingest_ctx *ctx = &fuzz_ctx[PREC_S];
    char *body = fuzz_copy(data, size);
    struct batch b;
    batch_init(&b, schema_table("system_metrics"));
    struct rejects *r = malloc(sizeof *r);
    rejects_init(r, "line");
    size_t nan = 0;
    int rc = ingest_parse_graphite(ctx, ts, body, size, &b, r, &nan);
    fuzz_check(rc == 0 || rc == E_INVALID, "rc %d", rc);
    fuzz_check((rc == 0) == (r->count == 0), "rc %d with %zu rejections", rc, r->count);
    /* good lines stay beside the rejected ones: every row must be valid either way */
    fuzz_check_batch(ctx, 0, &b, &(struct rejects){0}, true);
    batch_release(&b);
    free(r);
    free(body);
    return 0;
}
