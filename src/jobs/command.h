/*
 * jobs/command: running a user command job — `/bin/sh -c COMMAND` in a process group of its
 * own, stdin from /dev/null, stdout and stderr captured together with only the last bytes kept,
 * stopped (SIGTERM, then SIGKILL) when it runs past its timeout or is cancelled.
 */
#ifndef OPSDB_JOBS_COMMAND_H
#define OPSDB_JOBS_COMMAND_H

#include "core/core.h"

#include <stdatomic.h>

struct command_result {
    int exit_code;  /* the exit status; 128 + N when killed by signal N */
    bool timed_out; /* stopped at the timeout */
    bool cancelled; /* stopped because *cancel became true */
    int64_t duration_ms;
    char *output; /* the last bytes of stdout and stderr (NUL-terminated); free() it */
    size_t output_len;
    size_t output_dropped; /* bytes written before those kept */
};

/* Runs command with the extra environment entries env ("NAME=value", or "NAME" to leave NAME
 * out; NULL-terminated; may be NULL), keeping the last max_output bytes of its output, for at most
 * timeout_ms (0: no limit) and until *cancel (may be NULL) turns true. Returns 0 when it ran
 * (whatever its exit status), E_IO when it could not be started. */
int command_run(const char *command, const char *const *env, int64_t timeout_ms, size_t max_output,
                const atomic_bool *cancel, struct command_result *out, struct err *e);
void command_result_release(struct command_result *r);

#endif
