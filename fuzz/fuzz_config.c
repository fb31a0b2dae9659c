/*
 * libFuzzer target: the configuration file (config_load_text, the YAML `opsdb --config FILE`
 * reads), over the defaults. The input is the file's bytes. A file either loads or fails with a
 * message naming it; what loads keeps every option within its bounds (spot-checked on the
 * options that size buffers and limits) and its strings NUL-terminated.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TERMINATED(c, f) (memchr((c)->f, '\0', sizeof(c)->f) != NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    char *text = fuzz_copy(data, size);
    struct config *c = malloc(sizeof *c);
    fuzz_check(c != NULL, "no memory");
    config_defaults(c);
    struct err e;
    err_clear(&e);
    int rc = config_load_text(c, "fuzz.yaml", text, size, &e);
    fuzz_check(rc == 0 ||
                   ((rc == E_INVALID || rc == E_LIMIT) && strncmp(e.msg, "fuzz.yaml", 9) == 0),
               "rc %d: '%s'", rc, e.msg);
    if (rc == 0) {
        fuzz_check(c->max_body_bytes >= 1024 && c->max_body_bytes <= 1024LL * 1024 * 1024,
                   "http.max_body_bytes %lld", (long long)c->max_body_bytes);
        fuzz_check(c->max_rows_per_request >= 1, "rows %lld", (long long)c->max_rows_per_request);
        fuzz_check(c->max_connections >= 4 && c->max_connections <= 10000, "connections %lld",
                   (long long)c->max_connections);
        fuzz_check(c->nfp_rules <= CONFIG_MAX_FP_RULES, "%zu fingerprint rules", c->nfp_rules);
        fuzz_check(TERMINATED(c, db) && TERMINATED(c, listen) && TERMINATED(c, alert_rule_files) &&
                       TERMINATED(c, graphite_templates) && TERMINATED(c, logs_access_format),
                   "a string option is not terminated");
        for (size_t i = 0; i < 16; i++)
            fuzz_check(c->retention_days[i] >= 0, "retention %zu: %lld", i,
                       (long long)c->retention_days[i]);
        struct fingerprint_rules *fp = config_fingerprint_rules(c, &e);
        fingerprint_rules_free(&fp);
    }
    free(c);
    free(text);
    return 0;
}
