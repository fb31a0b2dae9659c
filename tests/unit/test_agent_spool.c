/*
 * agent spool: batches kept in order over a reopen (the agent restarting), temporary files of a
 * cut-short write removed, the byte bound dropping the oldest batches (and a batch larger than
 * the bound itself), and one process per spool directory.
 */
#include "unit.h"

#include "agent/agent_int.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/opsdb-spool-unit-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void open_spool(struct spool *sp, uint64_t max_bytes)
{
    struct err e;
    if (spool_open(sp, dir, max_bytes, &e) != 0)
        fail_msg("%s", e.msg);
}

static void put(struct spool *sp, const char *body, uint64_t rows, struct spool_dropped *d)
{
    struct err e;
    if (spool_put(sp, "system_metrics", body, strlen(body), rows, d, &e) != 0)
        fail_msg("%s", e.msg);
}

static void assert_oldest(struct spool *sp, const char *want)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    struct err e;
    if (spool_read_oldest(sp, &b, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    buf_release(&b);
}

static void order_survives_a_reopen(void **state)
{
    (void)state;
    struct spool sp;
    struct spool_dropped d = {0, 0};
    open_spool(&sp, 1 << 20);
    put(&sp, "{\"a\":1}\n", 1, &d);
    put(&sp, "{\"b\":1}\n{\"b\":2}\n", 2, &d);
    put(&sp, "{\"c\":1}\n", 1, &d);
    spool_pop(&sp);
    spool_close(&sp);
    /* a write a crash cut short, and a file that is no batch */
    char path[400];
    snprintf(path, sizeof path, "%s/00000000000000000009.system_metrics.1.ndjson.tmp", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"half", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    f = fopen(path, "w");
    fclose(f);

    open_spool(&sp, 1 << 20);
    assert_int_equal(sp.n, 2);
    assert_int_equal(sp.items[0].rows, 2);
    assert_string_equal(sp.items[0].table, "system_metrics");
    assert_int_equal(sp.bytes, strlen("{\"b\":1}\n{\"b\":2}\n") + strlen("{\"c\":1}\n"));
    assert_oldest(&sp, "{\"b\":1}\n{\"b\":2}\n");
    put(&sp, "{\"d\":1}\n", 1, &d); /* behind what was there */
    assert_true(sp.items[2].seq > sp.items[1].seq);
    spool_pop(&sp);
    assert_oldest(&sp, "{\"c\":1}\n");
    spool_close(&sp);
    struct stat st;
    snprintf(path, sizeof path, "%s/00000000000000000009.system_metrics.1.ndjson.tmp", dir);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_equal(d.batches, 0);
}

static void the_bound_drops_the_oldest(void **state)
{
    (void)state;
    struct spool sp;
    struct spool_dropped d = {0, 0};
    open_spool(&sp, 25); /* two batches of 10 bytes fit, a third does not */
    put(&sp, "{\"n\":111}\n", 1, &d);
    put(&sp, "{\"n\":222}\n", 2, &d);
    assert_int_equal(d.batches, 0);
    put(&sp, "{\"n\":333}\n", 3, &d);
    assert_int_equal(d.batches, 1);
    assert_int_equal(d.rows, 1);
    assert_int_equal(sp.n, 2);
    assert_true(sp.bytes <= 25);
    assert_oldest(&sp, "{\"n\":222}\n");
    /* larger than the whole spool: dropped itself, the spool unchanged */
    put(&sp, "{\"n\":\"a batch longer than 25 bytes\"}\n", 7, &d);
    assert_int_equal(d.batches, 2);
    assert_int_equal(d.rows, 8);
    assert_int_equal(sp.n, 2);
    assert_oldest(&sp, "{\"n\":222}\n");
    spool_close(&sp);
}

static void one_process_per_spool(void **state)
{
    (void)state;
    struct spool a, b;
    open_spool(&a, 1000);
    struct err e;
    assert_int_equal(spool_open(&b, dir, 1000, &e), E_IO);
    assert_non_null(strstr(e.msg, "in use by another agent"));
    spool_close(&b);
    spool_close(&a);
    open_spool(&b, 1000); /* free again once closed */
    spool_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(order_survives_a_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(the_bound_drops_the_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(one_process_per_spool, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
