/*
 * The writer's maintenance interface (src/ingest/writer.c) on a real store: writer_run() runs a
 * task on the writer thread outside any group, hands back its result, tells the hooks when
 * answers changed, and lets ingestion go on between tasks; writer_set_maintenance() stops and
 * restarts the writer's own compaction timer; writer_compact_step() and writer_pack_step() are
 * counted in the writer's stats.
 */
#include "unit_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

static atomic_int hook_calls_all_changed, hook_calls_batches;

static void count_hook(void *arg, const struct batch *const *batches, size_t n)
{
    (void)arg, (void)batches;
    atomic_fetch_add(n == 0 ? &hook_calls_all_changed : &hook_calls_batches, 1);
}

struct probe {
    pthread_t thread;
    bool set_changed;
    int rc;
    int began; /* store_write_begin's answer inside the task */
};

static int probe_task(struct store *s, void *arg, bool *answers_changed, struct err *e)
{
    struct probe *p = arg;
    p->thread = pthread_self();
    /* the write path is free: no group is open while a task runs */
    p->began = store_write_begin(s, e);
    if (p->began == 0 && store_write_commit(s, e) != 0)
        p->began = -100;
    *answers_changed = p->set_changed;
    return p->rc ? err_set(e, p->rc, "probe failed on purpose") : 0;
}

static void test_run_on_the_writer_thread(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "writer-run");
    ut_db_start(&d);
    writer_on_commit(d.w, count_hook, NULL);
    atomic_store(&hook_calls_all_changed, 0);

    struct probe p = {0};
    struct err e;
    assert_int_equal(writer_run(d.w, probe_task, &p, &e), 0);
    assert_false(pthread_equal(p.thread, pthread_self()));
    assert_int_equal(p.began, 0);
    assert_int_equal(atomic_load(&hook_calls_all_changed), 0);

    p = (struct probe){.rc = E_INVALID};
    assert_int_equal(writer_run(d.w, probe_task, &p, &e), E_INVALID);
    assert_string_equal(e.msg, "probe failed on purpose");

    /* answers changed: the hooks hear of it as of another process's commit, once */
    p = (struct probe){.set_changed = true};
    assert_int_equal(writer_run(d.w, probe_task, &p, &e), 0);
    assert_int_equal(atomic_load(&hook_calls_all_changed), 1);

    /* the task runs on the writer's thread: the same one each time, which commits batches */
    pthread_t first = p.thread;
    p = (struct probe){0};
    assert_int_equal(writer_run(d.w, probe_task, &p, &e), 0);
    assert_true(pthread_equal(first, p.thread));
    ut_db_remove(&d);
}

/* ---- ingestion goes on between tasks ------------------------------------------------------- */

struct feeder {
    struct ut_db *d;
    atomic_bool stop;
    atomic_int batches;
};

static void *feed(void *arg)
{
    struct feeder *f = arg;
    while (!atomic_load(&f->stop)) {
        ut_db_write_requests(f->d, time_now_ms(), 1);
        atomic_fetch_add(&f->batches, 1);
    }
    return NULL;
}

struct slow {
    struct writer *w;
    uint64_t batches_seen;
};

static int slow_task(struct store *s, void *arg, bool *answers_changed, struct err *e)
{
    (void)s, (void)answers_changed, (void)e;
    struct slow *t = arg;
    struct writer_stats ws;
    writer_get_stats(t->w, &ws);
    t->batches_seen = ws.batches_committed;
    sleep_ms(30); /* a step of maintenance: requests queue meanwhile */
    return 0;
}

static void test_ingestion_goes_on_between_tasks(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "writer-interleave");
    ut_db_start(&d);
    struct feeder f = {.d = &d};
    pthread_t feeders[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&feeders[i], NULL, feed, &f), 0);
    while (atomic_load(&f.batches) < 4)
        sleep_ms(1);

    enum { TASKS = 10 };
    uint64_t seen[TASKS];
    struct err e;
    for (int i = 0; i < TASKS; i++) {
        struct slow t = {.w = d.w};
        assert_int_equal(writer_run(d.w, slow_task, &t, &e), 0);
        seen[i] = t.batches_seen;
    }
    atomic_store(&f.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(feeders[i], NULL);

    /* the requests that queued while a task ran were committed before the next task: tasks
     * wait their turn in the queue and do not starve ingestion */
    int grew = 0;
    for (int i = 1; i < TASKS; i++)
        grew += seen[i] > seen[i - 1];
    if (grew < TASKS - 3)
        fail_msg("batches were committed between only %d of %d pairs of tasks", grew, TASKS - 1);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM api_usage"), atomic_load(&f.batches));
    ut_db_remove(&d);
}

/* ---- the writer's own timers, off and on ----------------------------------------------------- */

static void test_maintenance_switch(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "writer-timers");
    d.cfg.storage_compact_interval_ms = 100;
    d.cfg.storage_compress_after_ms = HOUR_MS;
    ut_db_start(&d);
    writer_set_maintenance(d.w, false);
    ut_db_write_old_samples(&d, "cpu_usage", 1, 300);

    sleep_ms(2500); /* the idle writer looks every second: two looks, many intervals */
    struct writer_stats ws;
    writer_get_stats(d.w, &ws);
    assert_int_equal(ws.samples_compacted, 0);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM system_metrics_chunks"), 2);

    writer_set_maintenance(d.w, true);
    for (int i = 0; i < 100 && ws.samples_compacted == 0; i++) {
        sleep_ms(50);
        writer_get_stats(d.w, &ws);
    }
    assert_int_equal(ws.samples_compacted, 600);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM system_metrics_chunks"), 1);
    ut_db_remove(&d);
}

static void test_compact_step_is_counted(void **state)
{
    (void)state;
    struct ut_db d;
    ut_db_init(&d, "writer-steps");
    d.cfg.storage_compress_after_ms = HOUR_MS;
    ut_db_start(&d);
    writer_set_maintenance(d.w, false);
    ut_db_write_old_samples(&d, "cpu_usage", 1, 300);
    ut_db_write_old_samples(&d, "memory_usage", 1, 300);

    struct store_compact_stats cs = {0};
    struct err e;
    int steps = 0;
    do {
        assert_int_equal(writer_compact_step(d.w, time_now_ms() - HOUR_MS, &cs, &e), 0);
        assert_true(++steps < 100);
    } while (!cs.pass_done);
    assert_int_equal(cs.samples_moved, 1200);
    assert_int_equal(cs.series_compacted, 2);
    struct writer_stats ws;
    writer_get_stats(d.w, &ws);
    assert_int_equal(ws.samples_compacted, 1200);
    assert_int_equal(ws.compaction_failures, 0);
    assert_int_equal(ut_db_int(&d, "SELECT count(*) FROM system_metrics"), 1200);
    ut_db_remove(&d);
}

int main(void)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_on_the_writer_thread),
        cmocka_unit_test(test_ingestion_goes_on_between_tasks),
        cmocka_unit_test(test_maintenance_switch),
        cmocka_unit_test(test_compact_step_is_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
