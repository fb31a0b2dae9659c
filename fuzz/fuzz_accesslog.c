/*
 * libFuzzer target: access logs (nginx, nginx_timed, apache, and a custom format taken from the
 * input's first line) into api_usage. Input: a selector byte (the kind), then the log.
 */
#include "fuzz_logs_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const kinds[] = {"nginx", "nginx_timed", "apache", "access"};
    fuzz_log(kinds, sizeof kinds / sizeof kinds[0], data, size);
    return 0;
}
