/*
 * libFuzzer target: application logs (JSON lines, plain text through the default
 * logs.plain_pattern) with multi-line stack traces into error_logs. Input: a selector byte (even:
 * json, odd: plain), then the log.
 */
#include "fuzz_logs_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const kinds[] = {"json", "plain"};
    fuzz_log(kinds, sizeof kinds / sizeof kinds[0], data, size);
    return 0;
}
