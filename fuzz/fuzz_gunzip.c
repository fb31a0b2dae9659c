/*
 * libFuzzer target: gzip/zlib request bodies (ingest_gunzip) with a 1 MiB decoded limit. Every
 * input either decodes within the limit or fails with a message; nothing is read or written out
 * of bounds.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_GUNZIP_MAX (1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1);
    memcpy(body, data, size);
    struct buf out;
    buf_init(&out, FUZZ_GUNZIP_MAX);
    struct err e;
    err_clear(&e);
    int rc = ingest_gunzip(body, size, &out, &e);
    fuzz_check(rc == 0 || rc == E_INVALID || rc == E_LIMIT, "rc %d", rc);
    fuzz_check(out.len <= FUZZ_GUNZIP_MAX, "decoded %zu bytes", out.len);
    if (rc == 0) {
        fuzz_check(out.data != NULL && out.data[out.len] == '\0', "output not terminated");
        fuzz_check(e.msg[0] == '\0', "success with a message: %s", e.msg);
    } else {
        fuzz_check(e.code == rc && e.msg[0] != '\0', "failure %d without a message", rc);
    }
    buf_release(&out);
    free(body);
    return 0;
}
