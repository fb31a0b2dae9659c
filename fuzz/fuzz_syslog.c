/*
 * libFuzzer target: one syslog message (ingest_syslog_parse, then ingest_syslog_row into
 * error_logs), as a UDP datagram or a TCP frame delivers it: the input is the message as is.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    const struct ingest_ctx *ctx = &fuzz_ctx[PREC_MS];
    char *msg = fuzz_copy(data, size);
    struct syslog_message m;
    struct err e;
    int rc = ingest_syslog_parse(msg, size, ctx->validate.now_ms, &m, &e);
    fuzz_check(rc == 0 || (rc == E_INVALID && e.msg[0]), "rc %d", rc);
    if (rc == 0) {
        fuzz_check(m.facility >= 0 && m.facility < 24 && m.severity >= 0 && m.severity < 8,
                   "pri %d.%d", m.facility, m.severity);
        fuzz_check(m.msg >= msg && m.msg + m.msg_len <= msg + size, "msg outside the input");
        struct batch b;
        batch_init(&b, schema_table("error_logs"));
        struct rejects *r = malloc(sizeof *r);
        rejects_init(r, "message");
        bool stored = ingest_syslog_row(ctx, &m, "192.0.2.1", &b, 0, r);
        fuzz_check(stored == (b.nrows == 1), "stored %d with %zu rows", stored, b.nrows);
        /* every row is valid: text is made UTF-8 and cut to the column limits */
        fuzz_check_batch(ctx, stored ? 0 : E_INVALID, &b, r, true);
        batch_release(&b);
        free(r);
    }
    free(msg);
    return 0;
}
