/*
 * libFuzzer target: CSV bodies (ingest_parse_csv) for any table. Input: a selector byte
 * (fuzz_common.h: table and precision), then the body.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (size == 0)
        return 0;
    struct fuzz_selector sel = fuzz_select(data[0]);
    size--;
    char *body = malloc(size ? size : 1);
    memcpy(body, data + 1, size);
    struct batch b;
    batch_init(&b, sel.table);
    struct rejects *r = malloc(sizeof *r);
    rejects_init(r, "row");
    int rc = ingest_parse_csv(sel.ctx, body, size, &b, r);
    fuzz_check_batch(sel.ctx, rc, &b, r, true);
    batch_release(&b);
    free(r);
    free(body);
    return 0;
}
