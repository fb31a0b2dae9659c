/*
 * What the two log parser targets share: a parser of the kind chosen by the input's first byte
 * (the seeds start with an ASCII digit), the rest of the input fed as a log file, and the
 * invariants: the return code agrees with the rejections, and every row kept — also next to
 * rejected lines — is valid.
 */
#ifndef OPSDB_FUZZ_LOGS_COMMON_H
#define OPSDB_FUZZ_LOGS_COMMON_H

#include "fuzz_common.h"

static inline void fuzz_log(const char *const *kinds, size_t nkinds, const uint8_t *data,
                            size_t size)
{
    fuzz_init();
    if (size == 0)
        return;
    struct config cfg;
    config_defaults(&cfg);
    snprintf(cfg.logs_min_level, sizeof cfg.logs_min_level, "debug");
    const char *kind = kinds[data[0] % nkinds];
    size--;
    /* access: the first line of the input is the format */
    const uint8_t *nl = memchr(data + 1, '\n', size);
    if (strcmp(kind, "access") == 0 && nl && (size_t)(nl - data - 1) < sizeof cfg.logs_access_format) {
        snprintf(cfg.logs_access_format, sizeof cfg.logs_access_format, "%.*s",
                 (int)(nl - data - 1), (const char *)data + 1);
        size -= (size_t)(nl - data);
        data = nl;
    }
    struct logparser *p;
    struct err e;
    if (logparser_new(&p, &cfg, kind, "/var/log/fuzz/app.log", &e) != 0) {
        fuzz_check(e.msg[0] != '\0', "no message for a refused format");
        return;
    }
    char *body = malloc(size ? size : 1); /* exact size: a read past the end is reported */
    memcpy(body, data + 1, size);
    const struct ingest_ctx *ctx = &fuzz_ctx[PREC_MS];
    struct batch b;
    batch_init(&b, logparser_table(p));
    struct rejects *r = malloc(sizeof *r), *none = malloc(sizeof *none);
    rejects_init(r, "line");
    rejects_init(none, "line");
    int rc = ingest_parse_log(p, ctx, body, size, 1, true, &b, r);
    fuzz_check_batch(ctx, rc, &b, r, true);
    if (rc != E_LIMIT)
        fuzz_check_batch(ctx, 0, &b, none, true); /* the rows kept are all valid */
    struct logparser_pending pending;
    fuzz_check(!logparser_pending(p, &pending), "an event pending after the final flush");
    logparser_free(&p);
    batch_release(&b);
    free(none);
    free(r);
    free(body);
}

#endif
