/*
 * agent/tail: following real files in a temporary directory — a file that appears later,
 * partial lines, restarts from the saved offset (no duplicates, no gaps), rotation by rename and
 * create (also while the tail was down) and by copytruncate, a different file at the same path,
 * multi-line events across polls and restarts, long lines cut, bad lines counted, and the
 * caller's buffer checked.
 */
#include "unit.h"

#include "agent/tail.h"

#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ROWS 64

struct fixture {
    char dir[64];
    char path[128];
    char state[128];
    char spec[160];
    struct config cfg;
    struct buf out;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/opsdb-test-tail-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/app.log", f->dir);
    snprintf(f->state, sizeof f->state, "%s/state", f->dir);
    snprintf(f->spec, sizeof f->spec, "access:%s", f->path);
    config_defaults(&f->cfg);
    snprintf(f->cfg.logs_access_format, sizeof f->cfg.logs_access_format,
             "$msec $request_method $uri $status");
    buf_init(&f->out, 8 << 20);
    log_set_level(LOG_ERROR);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    buf_release(&f->out);
    free(f);
    return 0;
}

/* Appends text to path (created when missing). */
static void append(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* An access log line (with its newline) of a request for uri a minute ago. */
static const char *request(const char *uri)
{
    static char line[256];
    int64_t ms = time_now_ms() - 60000;
    snprintf(line, sizeof line, "%lld.%03lld GET %s 200\n", (long long)(ms / 1000),
             (long long)(ms % 1000), uri);
    return line;
}

/* The same without its newline. */
static const char *partial_request(const char *uri)
{
    char *line = (char *)request(uri);
    line[strlen(line) - 1] = '\0';
    return line;
}

/* Access log lines for requests /l<from> .. /l<to-1>. */
static void append_requests(const char *path, int from, int to)
{
    for (int i = from; i < to; i++) {
        char uri[32];
        snprintf(uri, sizeof uri, "/l%d", i);
        append(path, request(uri));
    }
}

static int64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static struct tail *open_tail(struct fixture *f, const char *spec)
{
    struct tail *t;
    struct err e;
    if (tail_open(&t, spec ? spec : f->spec, f->state, &f->cfg, &e) != 0)
        fail_msg("tail_open: %s", e.msg);
    return t;
}

/* Polls once; returns the rows' value of column (text) in got, comma-separated. */
static size_t poll_rows(struct fixture *f, struct tail *t, const char *column, char *got,
                        size_t size)
{
    const char *table;
    size_t rows;
    struct err e;
    f->out.len = 0;
    if (tail_poll(t, &f->out, &table, &rows, &e) != 0)
        fail_msg("tail_poll: %s", e.msg);
    got[0] = '\0';
    size_t n = 0, used = 0;
    for (char *line = f->out.data; line && line < f->out.data + f->out.len;) {
        char *nl = memchr(line, '\n', f->out.len - (size_t)(line - f->out.data));
        assert_non_null(nl);
        json_t *row = json_loadb(line, (size_t)(nl - line), 0, NULL);
        assert_non_null(row);
        assert_null(json_object_get(row, "fingerprint")); /* derived: left to the receiver */
        const char *v = json_string_value(json_object_get(row, column));
        used += (size_t)snprintf(got + used, size - used, "%s%s", n ? "," : "", v ? v : "?");
        json_decref(row);
        n++;
        line = nl + 1;
    }
    assert_int_equal(n, rows);
    return n;
}

static void commit(struct tail *t)
{
    struct err e;
    if (tail_commit(t, &e) != 0)
        fail_msg("tail_commit: %s", e.msg);
}

#define assert_poll(f, t, want)                                                                    \
    do {                                                                                           \
        char got_[4096];                                                                           \
        poll_rows((f), (t), "endpoint", got_, sizeof got_);                                        \
        if (strcmp(got_, (want)) != 0)                                                             \
            fail_msg("polled '%s', expected '%s'", got_, (want));                                  \
    } while (0)

static void file_that_appears_later_and_partial_lines(void **state)
{
    struct fixture *f = *state;
    struct tail *t = open_tail(f, NULL);
    assert_string_equal(tail_name(t), f->spec);
    assert_poll(f, t, "");
    struct tail_stats st;
    tail_get_stats(t, &st);
    assert_false(st.open);
    append_requests(f->path, 0, 2);
    char *half = (char *)request("/partial");
    half[20] = '\0';
    append(f->path, half);
    assert_poll(f, t, "/l0,/l1"); /* the partial line waits */
    append(f->path, request("/partial") + 20);
    assert_poll(f, t, "/partial");
    assert_poll(f, t, "");
    tail_get_stats(t, &st);
    assert_true(st.open);
    assert_int_equal(st.lines, 3);
    assert_int_equal(st.offset, file_size(f->path));
    tail_close(&t);
    assert_null(t);
}

/* A backlog larger than one read: the polls say there is more until they reach the end, so the
 * caller reads a backlog at once rather than a mebibyte a second. */
static void backlog_larger_than_one_read(void **state)
{
    struct fixture *f = *state;
    struct buf text;
    buf_init(&text, 4u << 20);
    size_t lines = 0;
    while (text.len < TAIL_READ_MAX + TAIL_READ_MAX / 4) {
        char uri[32];
        snprintf(uri, sizeof uri, "/l%zu", lines++);
        assert_int_equal(buf_printf(&text, "%s", request(uri)), 0);
    }
    append(f->path, text.data);
    buf_release(&text);
    struct tail *t = open_tail(f, NULL);
    struct tail_stats st;
    size_t rows = 0, polls = 0, got_size = 8 * lines; /* "GET," per row */
    char *got = malloc(got_size);
    assert_non_null(got);
    do {
        rows += poll_rows(f, t, "method", got, got_size);
        tail_get_stats(t, &st);
        polls++;
    } while (st.more && polls < 10);
    assert_true(polls >= 2);
    assert_false(st.more);
    assert_int_equal(rows, lines);
    assert_int_equal(st.offset, file_size(f->path));
    assert_int_equal(poll_rows(f, t, "method", got, got_size), 0);
    tail_get_stats(t, &st);
    assert_false(st.more); /* nothing new is no backlog */
    free(got);
    tail_close(&t);
}

static void restart_resumes_at_the_committed_offset(void **state)
{
    struct fixture *f = *state;
    struct tail *t = open_tail(f, NULL);
    append_requests(f->path, 0, 3);
    append(f->path, partial_request("/half"));
    assert_poll(f, t, "/l0,/l1,/l2");
    commit(t);
    append(f->path, "\n");
    append_requests(f->path, 3, 4);
    assert_poll(f, t, "/half,/l3"); /* polled, but not committed: read again after the restart */
    tail_close(&t);

    append_requests(f->path, 4, 5);
    t = open_tail(f, NULL);
    assert_poll(f, t, "/half,/l3,/l4"); /* not a row twice, none missing */
    commit(t);
    tail_close(&t);
    t = open_tail(f, NULL);
    assert_poll(f, t, "");
    tail_close(&t);
}

static void rotation_by_rename_and_create(void **state)
{
    struct fixture *f = *state;
    f->cfg.logs_rotate_wait_ms = 3600000; /* only data in the new file ends the old one */
    char rotated[160];
    snprintf(rotated, sizeof rotated, "%s.1", f->path);
    struct tail *t = open_tail(f, NULL);
    append_requests(f->path, 0, 2);
    assert_poll(f, t, "/l0,/l1");
    assert_int_equal(rename(f->path, rotated), 0);
    append(f->path, "");                       /* the new file, empty */
    append_requests(rotated, 2, 3);            /* the writer has not reopened yet */
    append(rotated, partial_request("/last")); /* and its last line has no newline */
    assert_poll(f, t, "/l2");
    append_requests(f->path, 3, 5); /* the writer moved on */
    assert_poll(f, t, "/last,/l3,/l4");
    struct tail_stats st;
    tail_get_stats(t, &st);
    assert_int_equal(st.rotations, 1);
    commit(t);
    tail_close(&t);
    t = open_tail(f, NULL);
    assert_poll(f, t, "");
    tail_close(&t);
}

static void rotated_while_the_tail_was_down(void **state)
{
    struct fixture *f = *state;
    char rotated[160];
    snprintf(rotated, sizeof rotated, "%s.1", f->path);
    struct tail *t = open_tail(f, NULL);
    append_requests(f->path, 0, 2);
    assert_poll(f, t, "/l0,/l1");
    commit(t);
    tail_close(&t);
    append_requests(f->path, 2, 3); /* written after the last commit */
    assert_int_equal(rename(f->path, rotated), 0);
    append_requests(f->path, 3, 4);
    t = open_tail(f, NULL);
    assert_poll(f, t, "/l2,/l3"); /* PATH.1 finished first, then the new file */
    tail_close(&t);
}

static void copytruncate(void **state)
{
    struct fixture *f = *state;
    struct tail *t = open_tail(f, NULL);
    append_requests(f->path, 0, 3);
    assert_poll(f, t, "/l0,/l1,/l2");
    assert_int_equal(truncate(f->path, 0), 0);
    append_requests(f->path, 3, 4);
    assert_poll(f, t, "/l3");
    /* truncated and written past the old offset before the next poll: the first bytes differ */
    assert_int_equal(truncate(f->path, 0), 0);
    append(f->path, request("/a-different-first-line"));
    append_requests(f->path, 4, 6);
    assert_poll(f, t, "/a-different-first-line,/l4,/l5");
    struct tail_stats st;
    tail_get_stats(t, &st);
    assert_int_equal(st.truncations, 2);
    tail_close(&t);
}

static void different_file_at_the_same_path(void **state)
{
    struct fixture *f = *state;
    struct tail *t = open_tail(f, NULL);
    append_requests(f->path, 0, 3);
    assert_poll(f, t, "/l0,/l1,/l2");
    commit(t);
    tail_close(&t);
    /* replaced while down (the inode may even be reused): read from its start */
    assert_int_equal(unlink(f->path), 0);
    append(f->path, request("/new-file-first-line-longer"));
    append_requests(f->path, 3, 6);
    t = open_tail(f, NULL);
    assert_poll(f, t, "/new-file-first-line-longer,/l3,/l4,/l5");
    tail_close(&t);
}

static void multiline_events_across_polls_and_restarts(void **state)
{
    struct fixture *f = *state;
    f->cfg.logs_multiline_wait_ms = 3600000;
    char spec[160], when[40], line[256], got[4096];
    snprintf(spec, sizeof spec, "json:%s", f->path);
    time_format_rfc3339(time_now_ms() - 60000, when, sizeof when);
    struct tail *t = open_tail(f, spec);
    snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"first\"}\n", when);
    append(f->path, line);
    append(f->path, "  at a\n");
    assert_int_equal(poll_rows(f, t, "stack_trace", got, sizeof got), 0);
    commit(t); /* saves the event's start: it is not complete */
    append(f->path, "  at b\n");
    snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"second\"}\n", when);
    append(f->path, line);
    append(f->path, "  at c\n");
    assert_int_equal(poll_rows(f, t, "stack_trace", got, sizeof got), 1);
    assert_string_equal(got, "  at a\n  at b");
    commit(t);
    tail_close(&t);

    /* the second event, pending at the commit, is read again whole; an idle file completes it */
    f->cfg.logs_multiline_wait_ms = 0;
    t = open_tail(f, spec);
    assert_int_equal(poll_rows(f, t, "message", got, sizeof got), 0);
    assert_int_equal(poll_rows(f, t, "stack_trace", got, sizeof got), 1);
    assert_string_equal(got, "  at c");
    commit(t);
    tail_close(&t);
    t = open_tail(f, spec);
    assert_int_equal(poll_rows(f, t, "message", got, sizeof got), 0);
    assert_int_equal(poll_rows(f, t, "message", got, sizeof got), 0);
    tail_close(&t);
}

static void long_lines_cut_and_bad_lines_counted(void **state)
{
    struct fixture *f = *state;
    f->cfg.logs_max_line_bytes = 256;
    struct tail *t = open_tail(f, NULL);
    char big[2000];
    memset(big, 'x', sizeof big - 2);
    memcpy(big, "1700000000.000 GET /", 20);
    big[sizeof big - 2] = '\n';
    big[sizeof big - 1] = '\0';
    append_requests(f->path, 0, 1);
    append(f->path, big); /* cut to 256 bytes: no status left, a bad line */
    append(f->path, "not a request\n");
    append_requests(f->path, 1, 2);
    assert_poll(f, t, "/l0,/l1");
    struct tail_stats st;
    tail_get_stats(t, &st);
    assert_int_equal(st.lines, 4);
    assert_int_equal(st.lines_truncated, 1);
    assert_int_equal(st.lines_bad, 2);
    commit(t);
    tail_close(&t);
    t = open_tail(f, NULL);
    assert_poll(f, t, "");
    tail_close(&t);
}

static void bad_specs_and_small_buffers(void **state)
{
    struct fixture *f = *state;
    struct tail *t;
    struct err e;
    assert_int_equal(tail_open(&t, "/var/log/x.log", f->state, &f->cfg, &e), E_INVALID);
    assert_non_null(strstr(e.msg, "KIND:PATH"));
    assert_int_equal(tail_open(&t, "syslog:/var/log/x.log", f->state, &f->cfg, &e), E_INVALID);
    assert_non_null(strstr(e.msg, "unknown log kind"));
    assert_int_equal(tail_open(&t, "json:", f->state, &f->cfg, &e), E_INVALID);
    t = open_tail(f, NULL);
    struct buf small;
    buf_init(&small, 4096);
    const char *table;
    size_t rows;
    assert_int_equal(tail_poll(t, &small, &table, &rows, &e), E_LIMIT);
    assert_string_equal(table, "api_usage");
    assert_true(tail_out_min(t) > 4096);
    buf_release(&small);
    tail_close(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(file_that_appears_later_and_partial_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_resumes_at_the_committed_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(backlog_larger_than_one_read, setup, teardown),
        cmocka_unit_test_setup_teardown(rotation_by_rename_and_create, setup, teardown),
        cmocka_unit_test_setup_teardown(rotated_while_the_tail_was_down, setup, teardown),
        cmocka_unit_test_setup_teardown(copytruncate, setup, teardown),
        cmocka_unit_test_setup_teardown(different_file_at_the_same_path, setup, teardown),
        cmocka_unit_test_setup_teardown(multiline_events_across_polls_and_restarts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(long_lines_cut_and_bad_lines_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_specs_and_small_buffers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
