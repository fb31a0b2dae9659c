/*
 * query: the number text of JSON and CSV answers (query_number_text). Its fast path for integers
 * and short decimals must give, byte for byte, what the printf path gives (the %.15g text, or 16
 * or 17 digits when 15 do not read back): checked here on decimals of every scale and sign, on
 * the edges of the fast path's ranges, on doubles made of random bits, and on the values a
 * metric chunk decodes to.
 */
#include "unit.h"

#include "query/query.h"

#include <math.h>

/* What the answers printed before the fast path existed. */
static void reference_text(double d, char *out, size_t size)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

static void check(double d)
{
    char want[64], got[QUERY_NUMBER_TEXT_MAX];
    reference_text(d, want, sizeof want);
    size_t len = query_number_text(d, got);
    if (strcmp(want, got) != 0 || len != strlen(want))
        fail_msg("%.17g (bits %016llx): got \"%s\" (length %zu), want \"%s\"", d,
                 (unsigned long long)bits_of(d), got, len, want);
}

/* m / 10^k for random m of every width, k = 0..8, both signs */
static void test_decimals(void **state)
{
    (void)state;
    for (int k = 0; k <= 8; k++)
        for (int i = 0; i < 20000; i++) {
            int digits = 1 + (int)(rnd() % 17);
            uint64_t m = rnd() % (uint64_t)pow(10, digits > 16 ? 16 : digits);
            double d = (double)m / pow(10, k);
            check(d);
            check(-d);
        }
}

/* the fast path's limits: 10^15 for integers, 10^11 and 4 decimals otherwise, zeros */
static void test_edges(void **state)
{
    (void)state;
    static const double edges[] = {0.0,
                                   -0.0,
                                   1e15,
                                   1e15 - 1,
                                   -(1e15 - 1),
                                   1e15 + 2,
                                   1e11,
                                   1e11 - 0.5,
                                   1e11 - 0.0001,
                                   99999999999.9999,
                                   0.0001,
                                   0.00009,
                                   0.00015,
                                   0.5,
                                   -0.5,
                                   0.1 + 0.2,
                                   1.0 / 3,
                                   9007199254740992.0,
                                   9007199254740993.0,
                                   1e-300,
                                   5e-324,
                                   1.7976931348623157e308,
                                   123456.7890,
                                   2.675,
                                   1e21,
                                   4.35,
                                   0.29};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        check(edges[i]);
        check(nextafter(edges[i], INFINITY));
        check(nextafter(edges[i], -INFINITY));
    }
}

/* any finite double */
static void test_random_bits(void **state)
{
    (void)state;
    for (int i = 0; i < 200000; i++) {
        double d = of_bits(rnd());
        if (isfinite(d))
            check(d);
    }
}

/* what metrics hold: percentages with 2 decimals, byte counts, averages of those (sums divided
 * by counts, which are not short decimals) */
static void test_metric_values(void **state)
{
    (void)state;
    for (int i = 0; i < 100000; i++) {
        double pct = (double)(rnd() % 10001) / 100;
        double bytes = (double)(rnd() % 68719476736ull);
        check(pct);
        check(bytes);
        check((pct + (double)(rnd() % 10001) / 100) / 2);
        check((pct * 3 + 0.07) / 7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decimals),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_random_bits),
        cmocka_unit_test(test_metric_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
