/*
 * backup: the compressed stream of a backup file (stream_compress / stream_decompress) — round
 * trips of sizes around zstd's 128 KiB output buffer (a stream that ends exactly on a full
 * buffer once read as cut short), the sha256 of both sides, a flipped byte and a file cut
 * short.
 */
#include "unit.h"

#include "backup/backup_int.h"

#include <unistd.h>

static char dir[] = "/tmp/opsdb-unit-stream-XXXXXX";

static void path_of(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

static void write_file(const char *path, size_t len, uint64_t seed)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unit_rng = seed;
    for (size_t i = 0; i < len; i++) /* half noise, half runs: compressible, not trivially */
        fputc(i % 8192 < 4096 ? (int)(rnd() & 0xff) : 'x', f);
    fclose(f);
}

static void round_trip(size_t len)
{
    char src[256], zst[256], back[256];
    path_of(src, sizeof src, "src");
    path_of(zst, sizeof zst, "src.zst");
    path_of(back, sizeof back, "back");
    unlink(zst);
    unlink(back);
    write_file(src, len, 7 + len);
    struct stream_stats c, d;
    struct err e;
    assert_int_equal(stream_compress(src, zst, NULL, NULL, &c, &e), 0);
    assert_int_equal(c.bytes_in, (int64_t)len);
    assert_int_equal(stream_decompress(zst, back, NULL, NULL, &d, &e), 0);
    assert_int_equal(d.bytes_in, c.bytes_out);
    assert_int_equal(d.bytes_out, (int64_t)len);
    assert_string_equal(d.sha_in, c.sha_out); /* the compressed file */
    assert_string_equal(d.sha_out, c.sha_in); /* the data */
}

static void test_round_trips(void **state)
{
    (void)state;
    size_t block = 128 * 1024;
    size_t sizes[] = {0, 1, 4096, block - 1, block, block + 1, 3 * block, 8 * block, 40 * block};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        round_trip(sizes[i]);
}

static void test_damage_is_named(void **state)
{
    (void)state;
    char src[256], zst[256], back[256];
    path_of(src, sizeof src, "src");
    path_of(zst, sizeof zst, "src.zst");
    path_of(back, sizeof back, "back");
    round_trip(16 * 4096);
    struct stream_stats d;
    struct err e;
    FILE *f = fopen(zst, "r+b"); /* a byte in the middle of the compressed data */
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, size / 2, SEEK_SET);
    fputc(c ^ 0xff, f);
    fclose(f);
    unlink(back);
    assert_int_equal(stream_decompress(zst, back, NULL, NULL, &d, &e), E_CORRUPT);
    assert_non_null(strstr(e.msg, "does not decompress"));
    assert_int_not_equal(access(back, F_OK), 0); /* nothing left behind */

    round_trip(16 * 4096);
    assert_int_equal(truncate(zst, size / 2), 0);
    unlink(back);
    assert_int_equal(stream_decompress(zst, back, NULL, NULL, &d, &e), E_CORRUPT);
    assert_non_null(strstr(e.msg, "cut short"));
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"src", "src.zst", "back"};
    for (size_t i = 0; i < 3; i++) {
        char p[256];
        path_of(p, sizeof p, names[i]);
        unlink(p);
    }
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_damage_is_named),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
