/*
 * jobs/command: a command job's process — its exit status, the last bytes of its output (stdout
 * and stderr together), the extra environment, a timeout that stops the whole process group,
 * cancellation, and a command that cannot run.
 */
#include "unit.h"

#include "jobs/command.h"

#include <signal.h>
#include <unistd.h>

static struct command_result run(const char *cmd, int64_t timeout_ms, size_t max_output,
                                 const atomic_bool *cancel)
{
    struct command_result r;
    struct err e;
    const char *env[] = {"OPSDB_JOB=unit", "HOME=/nonexistent-home", NULL};
    if (command_run(cmd, env, timeout_ms, max_output, cancel, &r, &e) != 0)
        fail_msg("'%s' did not run: %s", cmd, e.msg);
    return r;
}

static void exit_status_and_output(void **state)
{
    (void)state;
    struct command_result r = run("echo out; echo err >&2; exit 3", 10000, 1024, NULL);
    assert_int_equal(r.exit_code, 3);
    assert_false(r.timed_out || r.cancelled);
    assert_string_equal(r.output, "out\nerr\n");
    assert_int_equal(r.output_len, 8);
    assert_int_equal(r.output_dropped, 0);
    command_result_release(&r);
    r = run("true", 0, 1024, NULL);
    assert_int_equal(r.exit_code, 0);
    assert_string_equal(r.output, "");
    command_result_release(&r);
    r = run("kill -9 $$", 0, 1024, NULL);
    assert_int_equal(r.exit_code, 128 + SIGKILL);
    command_result_release(&r);
    /* no stdin: a job reading it gets end of file at once */
    r = run("cat; echo done", 5000, 1024, NULL);
    assert_string_equal(r.output, "done\n");
    command_result_release(&r);
}

static void only_the_last_bytes_are_kept(void **state)
{
    (void)state;
    struct command_result r = run("seq 1 100000", 10000, 20, NULL);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.output_len, 20);
    assert_string_equal(r.output, "\n99998\n99999\n100000\n");
    /* seq 1 100000 writes 588895 bytes */
    assert_int_equal(r.output_dropped + r.output_len, 588895);
    command_result_release(&r);
}

static void environment(void **state)
{
    (void)state;
    setenv("OPSDB_UNIT_INHERITED", "yes", 1);
    struct command_result r = run("echo $OPSDB_JOB $HOME $OPSDB_UNIT_INHERITED", 5000, 100, NULL);
    assert_string_equal(r.output, "unit /nonexistent-home yes\n");
    command_result_release(&r);
}

static void a_timeout_stops_the_process_group(void **state)
{
    (void)state;
    char marker[64];
    snprintf(marker, sizeof marker, "/tmp/opsdb-unit-command-%d", (int)getpid());
    unlink(marker);
    char cmd[256];
    /* a child that would write the marker after 3 s: the timeout kills it with the shell */
    snprintf(cmd, sizeof cmd, "(sleep 3; touch %s) & echo started; sleep 30", marker);
    struct command_result r = run(cmd, 500, 100, NULL);
    assert_true(r.timed_out);
    assert_false(r.cancelled);
    assert_int_equal(r.exit_code, 128 + SIGTERM);
    assert_true(r.duration_ms >= 500 && r.duration_ms < 3000);
    assert_string_equal(r.output, "started\n");
    command_result_release(&r);
    sleep(4);
    assert_int_not_equal(access(marker, F_OK), 0);
    /* one that ignores SIGTERM is killed after the grace */
    r = run("trap '' TERM; sleep 30", 200, 100, NULL);
    assert_true(r.timed_out);
    assert_int_equal(r.exit_code, 128 + SIGKILL);
    assert_true(r.duration_ms >= 5000 && r.duration_ms < 9000);
    command_result_release(&r);
}

static void cancel(void **state)
{
    (void)state;
    atomic_bool stop = true;
    struct command_result r = run("sleep 30", 0, 100, &stop);
    assert_true(r.cancelled);
    assert_false(r.timed_out);
    assert_true(r.duration_ms < 3000);
    command_result_release(&r);
}

static void a_missing_program(void **state)
{
    (void)state;
    struct command_result r = run("/nonexistent/program --flag", 5000, 200, NULL);
    assert_int_equal(r.exit_code, 127);
    assert_non_null(strstr(r.output, "/nonexistent/program"));
    command_result_release(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exit_status_and_output),
        cmocka_unit_test(only_the_last_bytes_are_kept),
        cmocka_unit_test(environment),
        cmocka_unit_test(a_timeout_stops_the_process_group),
        cmocka_unit_test(cancel),
        cmocka_unit_test(a_missing_program),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
