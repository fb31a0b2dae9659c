/*
 * agent collectors on a /proc and /sys written by the test (a root directory holding proc/ and
 * sys/), so every figure is known: cpu shares from two reads of /proc/stat, memory and swap,
 * disk and network rates (loop, ram and partition entries left out; a counter that goes back
 * gives no rate), filesystems from a mounts file (pseudo filesystems and second mounts of a
 * source left out, escaped mount points read back), a missing file failing only its collector,
 * and the two ways out (NDJSON rows, a system_metrics batch) spelling labels the same.
 */
#include "unit.h"

#include "agent/agent_int.h"

#include <jansson.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct fake {
    char root[256];
    struct host_collector *c;
    struct samples s;
};

static void put(struct fake *f, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", f->root, rel);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void mkdir_in(struct fake *f, const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", f->root, rel);
    struct err e;
    if (file_mkdirs(path, &e) != 0)
        fail_msg("%s", e.msg);
}

static const char *mounts_template = "proc /proc proc rw 0 0\n"
                                     "tmpfs /run tmpfs rw 0 0\n"
                                     "/dev/sda1 %s ext4 rw 0 0\n"
                                     "/dev/sda1 %s/proc ext4 rw 0 0\n"
                                     "/dev/sdb1 %s/with\\040space ext4 rw 0 0\n";

/* The first state of every file (the reading host_collector_new takes). */
static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/opsdb-agent-unit-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    mkdir_in(f, "proc/net");
    mkdir_in(f, "proc/1");
    mkdir_in(f, "proc/22");
    mkdir_in(f, "proc/333");
    mkdir_in(f, "sys/block/vda");
    mkdir_in(f, "sys/block/loop0");
    mkdir_in(f, "with space");
    put(f, "proc/stat",
        "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n"
        "cpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\nprocs_running 3\nprocs_blocked 1\n");
    put(f, "proc/meminfo",
        "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n"
        "SwapTotal:          0 kB\nSwapFree:           0 kB\n");
    put(f, "proc/loadavg", "0.50 1.25 2.00 3/120 999\n");
    put(f, "proc/uptime", "12345.67 2000.00\n");
    put(f, "proc/diskstats",
        "   7       0 loop0 10 0 80 1 0 0 0 0 0 1 1 0 0 0 0\n"
        " 254       0 vda 100 0 2000 10 200 0 4000 20 0 100 30 0 0 0 0\n"
        " 254       1 vda1 100 0 2000 10 200 0 4000 20 0 100 30 0 0 0 0\n"
        "   1       0 ram0 5 0 5 0 5 0 5 0 0 0 0 0 0 0 0\n");
    put(f, "proc/net/dev",
        "Inter-|   Receive                            |  Transmit\n"
        " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop "
        "fifo colls carrier compressed\n"
        "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
        "  eth0: 5000 50 1 2 0 0 0 0 7000 70 3 4 0 0 0 0\n");
    char mounts[2048];
    snprintf(mounts, sizeof mounts, mounts_template, f->root, f->root, f->root);
    put(f, "proc/mounts", mounts);
    struct err e;
    if (host_collector_new(&f->c, f->root, &e) != 0)
        fail_msg("%s", e.msg);
    samples_init(&f->s, 1700000000000, "h1");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fake *f = *state;
    samples_release(&f->s);
    host_collector_free(&f->c);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* The value of metric (with the label value, or NULL for none); fails when missing. */
static double value_of(const struct samples *s, const char *metric, const char *label)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].metric, metric) == 0 &&
            (label ? s->items[i].label_key && strcmp(s->items[i].label_value, label) == 0
                   : !s->items[i].label_key))
            return s->items[i].value;
    fail_msg("no sample %s{%s}", metric, label ? label : "");
    return 0;
}

static bool has(const struct samples *s, const char *metric, const char *label)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].metric, metric) == 0 &&
            (!label || (s->items[i].label_key && strcmp(s->items[i].label_value, label) == 0)))
            return true;
    return false;
}

/* Collects 10 s after the first reading (rates divide by about 10 s). */
static int collect(struct fake *f)
{
    struct err e;
    int rc = host_collect(f->c, agent_mono_ms() + 10000, &f->s, &e);
    if (rc != 0)
        print_message("host_collect: %s\n", e.msg);
    return rc;
}

static void cpu_shares_between_two_reads(void **state)
{
    struct fake *f = *state;
    /* +200 ticks: user 30+10 nice, system 20+5 irq+5 softirq, idle 100, iowait 20, steal 10 */
    put(f, "proc/stat",
        "cpu  130 10 70 900 70 5 5 10 0 0\ncpu0 90 0 25 400 25 0 0 0 0 0\n"
        "cpu1 50 0 25 500 25 0 0 0 0 0\nprocs_running 3\nprocs_blocked 1\n");
    assert_int_equal(collect(f), 0);
    assert_float_equal(value_of(&f->s, "cpu_user_percent", NULL), 20.0, 1e-9);
    assert_float_equal(value_of(&f->s, "cpu_system_percent", NULL), 15.0, 1e-9);
    assert_float_equal(value_of(&f->s, "cpu_idle_percent", NULL), 50.0, 1e-9);
    assert_float_equal(value_of(&f->s, "cpu_iowait_percent", NULL), 10.0, 1e-9);
    assert_float_equal(value_of(&f->s, "cpu_steal_percent", NULL), 5.0, 1e-9);
    assert_float_equal(value_of(&f->s, "cpu_usage", NULL), 40.0, 1e-9);
    /* per cpu: cpu0 busy for all of its 40 ticks, cpu1 idle for all of its 100 */
    assert_float_equal(value_of(&f->s, "cpu_core_usage_percent", "0"), 100.0, 1e-9);
    assert_float_equal(value_of(&f->s, "cpu_core_usage_percent", "1"), 0.0, 1e-9);
    assert_false(has(&f->s, "cpu_usage", "0")); /* a core is never the host's cpu_usage */
    for (size_t i = 0; i < f->s.n; i++)
        if (strcmp(f->s.items[i].metric, "cpu_usage") == 0)
            assert_string_equal(f->s.items[i].component, "system");
}

static void memory_load_uptime_processes(void **state)
{
    struct fake *f = *state;
    assert_int_equal(collect(f), 0);
    assert_float_equal(value_of(&f->s, "memory_total_bytes", NULL), 1024000.0, 0);
    assert_float_equal(value_of(&f->s, "memory_available_bytes", NULL), 256000.0, 0);
    assert_float_equal(value_of(&f->s, "memory_used_bytes", NULL), 768000.0, 0);
    assert_float_equal(value_of(&f->s, "memory_usage", NULL), 75.0, 1e-9);
    assert_float_equal(value_of(&f->s, "swap_total_bytes", NULL), 0, 0);
    assert_false(has(&f->s, "swap_usage_percent", NULL)); /* no swap: no share of it */
    assert_float_equal(value_of(&f->s, "load_average_5m", NULL), 1.25, 0);
    assert_float_equal(value_of(&f->s, "uptime_seconds", NULL), 12345.67, 0);
    assert_float_equal(value_of(&f->s, "processes_total", NULL), 3, 0);
    assert_float_equal(value_of(&f->s, "processes_running", NULL), 3, 0);
    assert_float_equal(value_of(&f->s, "processes_blocked", NULL), 1, 0);
}

static void disk_and_network_rates(void **state)
{
    struct fake *f = *state;
    /* vda over ~10 s: +50 reads, +1000 sectors read, +100 writes, +2000 sectors, +5000 ms io */
    put(f, "proc/diskstats",
        "   7       0 loop0 99 0 800 1 0 0 0 0 0 1 1 0 0 0 0\n"
        " 254       0 vda 150 0 3000 10 300 0 6000 20 0 5100 30 0 0 0 0\n"
        " 254       1 vda1 150 0 3000 10 300 0 6000 20 0 5100 30 0 0 0 0\n"
        "   1       0 ram0 50 0 50 0 50 0 50 0 0 0 0 0 0 0 0\n");
    put(f, "proc/net/dev",
        "Inter-|\n face |\n"
        "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
        "  eth0: 15000 150 1 2 0 0 0 0 27000 270 3 4 0 0 0 0\n");
    assert_int_equal(collect(f), 0);
    assert_float_equal(value_of(&f->s, "disk_reads_per_second", "vda"), 5.0, 0.01);
    assert_float_equal(value_of(&f->s, "disk_writes_per_second", "vda"), 10.0, 0.01);
    assert_float_equal(value_of(&f->s, "disk_read_bytes_per_second", "vda"), 51200.0, 60);
    assert_float_equal(value_of(&f->s, "disk_written_bytes_per_second", "vda"), 102400.0, 120);
    assert_float_equal(value_of(&f->s, "disk_busy_percent", "vda"), 50.0, 0.1);
    assert_false(has(&f->s, "disk_reads_per_second", "loop0"));
    assert_false(has(&f->s, "disk_reads_per_second", "vda1"));
    assert_false(has(&f->s, "disk_reads_per_second", "ram0"));
    assert_float_equal(value_of(&f->s, "network_receive_bytes_per_second", "eth0"), 1000.0, 1.5);
    assert_float_equal(value_of(&f->s, "network_transmit_packets_per_second", "eth0"), 20.0, 0.03);
    assert_float_equal(value_of(&f->s, "network_receive_bytes_per_second", "lo"), 0.0, 0);

    /* a counter that went back (the device was replaced): no rates for it this time */
    samples_release(&f->s);
    samples_init(&f->s, 1700000010000, "h1");
    put(f, "proc/diskstats", " 254       0 vda 1 0 1 1 1 0 1 1 0 1 1 0 0 0 0\n");
    assert_int_equal(collect(f), 0);
    assert_false(has(&f->s, "disk_reads_per_second", "vda"));
}

static void filesystems_from_mounts(void **state)
{
    struct fake *f = *state;
    assert_int_equal(collect(f), 0);
    struct statvfs st;
    assert_int_equal(statvfs(f->root, &st), 0);
    assert_float_equal(value_of(&f->s, "filesystem_size_bytes", f->root),
                       (double)st.f_blocks * (double)st.f_frsize, 0);
    char spaced[300];
    snprintf(spaced, sizeof spaced, "%s/with space", f->root);
    assert_true(has(&f->s, "filesystem_size_bytes", spaced)); /* \040 read back as a space */
    char second[300];
    snprintf(second, sizeof second, "%s/proc", f->root);
    assert_false(has(&f->s, "filesystem_size_bytes", second)); /* /dev/sda1 counted once */
    assert_false(has(&f->s, "filesystem_size_bytes", "/proc"));
    assert_false(has(&f->s, "filesystem_size_bytes", "/run"));
    double usage = value_of(&f->s, "disk_usage", f->root);
    assert_true(usage >= 0 && usage <= 100);
}

static void a_missing_file_fails_only_its_collector(void **state)
{
    struct fake *f = *state;
    char path[400];
    snprintf(path, sizeof path, "%s/proc/diskstats", f->root);
    assert_int_equal(unlink(path), 0);
    struct err e;
    assert_int_equal(host_collect(f->c, agent_mono_ms() + 10000, &f->s, &e), E_IO);
    assert_non_null(strstr(e.msg, "collector disk"));
    assert_non_null(strstr(e.msg, "diskstats"));
    assert_true(has(&f->s, "memory_usage", NULL));
    assert_true(has(&f->s, "network_receive_bytes_per_second", "eth0"));
}

static void ndjson_and_batch_spell_rows_alike(void **state)
{
    (void)state;
    struct samples s;
    samples_init(&s, 1700000000123, "web-1");
    samples_add(&s, "filesystem", "disk_usage", "mount", "/mnt/\"quoted\"\\x", 12.5);
    samples_add(&s, "filesystem", "disk_usage", "mount", "/mnt/bad\xff\xfe", 1);
    samples_add(&s, "system", "load_average_1m", NULL, NULL, 0.25);
    samples_add(&s, "system", "nothing", NULL, NULL, 0.0 / 0.0); /* not finite: left out */
    assert_int_equal(s.n, 3);
    struct buf out;
    buf_init(&out, 1 << 20);
    assert_int_equal(samples_to_ndjson(&s, &out), 0);
    struct batch b;
    batch_init(&b, schema_table("system_metrics"));
    samples_to_batch(&s, &b);
    assert_int_equal(b.nrows, 3);
    const char *line = out.data;
    for (size_t i = 0; i < 3; i++) {
        json_error_t je;
        json_t *row = json_loadb(line, strcspn(line, "\n"), 0, &je);
        assert_non_null(row);
        assert_int_equal(json_integer_value(json_object_get(row, "ts")), 1700000000123);
        assert_string_equal(json_string_value(json_object_get(row, "host")), "web-1");
        json_t *labels = json_object_get(row, "labels");
        char *text = labels ? json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
        const struct value *v = batch_row(&b, i);
        assert_string_equal(v[schema_column(b.table, "labels")].s, text);
        assert_float_equal(v[schema_column(b.table, "value")].d,
                           json_number_value(json_object_get(row, "value")), 0);
        free(text);
        json_decref(row);
        line = strchr(line, '\n') + 1;
    }
    assert_non_null(strstr(out.data, "/mnt/bad??"));
    /* a full buffer keeps whole lines only */
    struct buf small;
    buf_init(&small, 150);
    assert_int_equal(samples_to_ndjson(&s, &small), E_LIMIT);
    assert_true(small.len == 0 || small.data[small.len - 1] == '\n');
    buf_release(&small);
    batch_release(&b);
    buf_release(&out);
    samples_release(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(cpu_shares_between_two_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(memory_load_uptime_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_and_network_rates, setup, teardown),
        cmocka_unit_test_setup_teardown(filesystems_from_mounts, setup, teardown),
        cmocka_unit_test_setup_teardown(a_missing_file_fails_only_its_collector, setup, teardown),
        cmocka_unit_test(ndjson_and_batch_spell_rows_alike),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
