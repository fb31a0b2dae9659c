/*
 * libFuzzer target: time parsing from untrusted text — RFC 3339 (time_parse_rfc3339, also via
 * field_from_text for ts columns), time points and durations (query parameters). Parsed times
 * must survive a format/parse round trip.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MS_MIN (-62135596800000LL) /* 0001-01-01 */
#define MS_MAX (253402300799999LL) /* 9999-12-31 */

static void round_trip(int64_t ms, const char *what)
{
    if (ms < MS_MIN || ms > MS_MAX) {
        /* offsets can move a time just outside the years 0001..9999 */
        fuzz_check(!fuzz_strict, "%s gave %lld, outside 0001..9999", what, (long long)ms);
        return;
    }
    char text[40];
    time_format_rfc3339(ms, text, sizeof text);
    int64_t back = 0;
    fuzz_check(time_parse_rfc3339(text, strlen(text), &back) && back == ms,
               "%s: %lld formats as %s which parses as %lld", what, (long long)ms, text,
               (long long)back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    char *exact = malloc(size ? size : 1); /* not NUL-terminated: reads stop at size */
    memcpy(exact, data, size);
    int64_t ms = 0;
    if (time_parse_rfc3339(exact, size, &ms))
        round_trip(ms, "time_parse_rfc3339");

    const struct table *t = schema_table("api_usage");
    const struct column *ts = &t->columns[schema_column(t, "ts")];
    struct arena a;
    arena_init(&a);
    for (int p = 0; p < 4; p++) {
        struct value v;
        char why[160];
        if (field_from_text(ts, exact, size, (enum time_precision)p, &a, &v, why, sizeof why))
            fuzz_check(v.type == VAL_NULL ? size == 0 : v.type == VAL_INT, "ts type %d", v.type);
        else
            fuzz_check(why[0] != '\0', "a failure without a reason");
    }
    arena_release(&a);
    free(exact);

    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    if (time_parse_point(text, &ms) && memchr(data, '\0', size) == NULL)
        fuzz_check(ms >= MS_MIN - 86400000 && ms <= MS_MAX + 86400000, "point %lld", (long long)ms);
    if (time_parse_duration(text, &ms))
        fuzz_check(ms >= 0, "duration '%s' is %lld ms", text, (long long)ms);
    (void)time_precision_parse(text);
    free(text);
    return 0;
}
