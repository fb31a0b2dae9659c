/*
 * core fingerprints: the built-in folding of numbers, uuids, hex ids and quoted strings, the
 * configured regex rules, and the hash of type + component + normalised message.
 */
#include "unit.h"

/* fingerprint_normalize into a static buffer, for exact comparisons. */
static const char *norm(const struct fingerprint_rules *r, const char *msg)
{
    static char out[1024];
    struct buf b;
    buf_init(&b, 1 << 20);
    fingerprint_normalize(r, msg, &b);
    assert_non_null(b.data);
    snprintf(out, sizeof out, "%s", b.data);
    buf_release(&b);
    return out;
}

static const char *fp(const struct fingerprint_rules *r, const char *type, const char *comp,
                      const char *msg)
{
    static char out[4][17];
    static int next;
    char *o = out[next++ % 4];
    fingerprint_compute(r, type, comp, msg, o);
    return o;
}

static void folds_numbers(void **state)
{
    (void)state;
    assert_string_equal(norm(NULL, "timeout after 30 s on order 12345"),
                        "timeout after <n> s on order <n>");
    assert_string_equal(norm(NULL, "took 1.5 ms"), "took <n> ms");
    assert_string_equal(norm(NULL, "took 1.5ms"), "took <n>ms");
    assert_string_equal(norm(NULL, "id=42,retry=3"), "id=<n>,retry=<n>");
    assert_string_equal(norm(NULL, "peer 10.0.0.1:8080 reset"), "peer <n>:<n> reset");
    assert_string_equal(norm(NULL, "-5 degrees"), "-<n> degrees");
    assert_string_equal(norm(NULL, "item_7 failed"), "item_<n> failed");
    assert_string_equal(norm(NULL, "version 2."), "version <n>.");
    /* digits that are part of a word stay: they name things */
    assert_string_equal(norm(NULL, "v2 of utf8 on ipv6"), "v2 of utf8 on ipv6");
    assert_string_equal(norm(NULL, "e2e"), "e2e");
    assert_string_equal(norm(NULL, "42"), "<n>");
    assert_string_equal(norm(NULL, ""), "");
    assert_string_equal(norm(NULL, "no variable parts"), "no variable parts");
}

static void folds_uuids_and_hex(void **state)
{
    (void)state;
    assert_string_equal(norm(NULL, "user 123e4567-e89b-12d3-a456-426614174000 not found"),
                        "user <uuid> not found");
    assert_string_equal(norm(NULL, "req 123E4567-E89B-12D3-A456-426614174000."), "req <uuid>.");
    assert_string_equal(norm(NULL, "ptr 0x7ffd5a2b freed"), "ptr <hex> freed");
    assert_string_equal(norm(NULL, "ptr 0XABCDEF freed"), "ptr <hex> freed");
    assert_string_equal(norm(NULL, "flags 0x1"), "flags <hex>");
    assert_string_equal(norm(NULL, "commit a1b2c3d4e5 broke it"), "commit <hex> broke it");
    assert_string_equal(norm(NULL, "trace 4bf92f3577b34da6a3ce929d0e0e4736"), "trace <hex>");
    /* 8+ hex digits need a digit: words like deadbeef or facade stay words */
    assert_string_equal(norm(NULL, "deadbeef acceded"), "deadbeef acceded");
    assert_string_equal(norm(NULL, "id 1a2b3c4 x"), "id <n>a2b3c4 x"); /* 7 hex digits: too short */
    assert_string_equal(norm(NULL, "abc12345 long"), "<hex> long");
    /* a hex run glued to a longer word is no id */
    assert_string_equal(norm(NULL, "deadbeef1z"), "deadbeef1z");
    assert_string_equal(norm(NULL, "0xzz"), "<n>xzz");
}

static void folds_quoted_strings(void **state)
{
    (void)state;
    assert_string_equal(norm(NULL, "missing key \"user_id\" in 'payload'"),
                        "missing key \"<str>\" in '<str>'");
    assert_string_equal(norm(NULL, "\"a\"\"b\""), "\"<str>\"\"<str>\"");
    assert_string_equal(norm(NULL, "empty \"\" here"), "empty \"<str>\" here");
    /* the contents are not folded again: a number inside quotes is part of the string */
    assert_string_equal(norm(NULL, "file '/tmp/x 42.log' gone"), "file '<str>' gone");
    /* an unterminated quote is kept as it is, the rest still folds */
    assert_string_equal(norm(NULL, "say \"hi to 3 people"), "say \"hi to <n> people");
    assert_string_equal(norm(NULL, "it's 5"), "it's <n>");
}

static void long_messages(void **state)
{
    (void)state;
    /* only the first 16 KiB are fingerprinted */
    size_t n = 20000;
    char *a = malloc(n + 1), *b = malloc(n + 1);
    memset(a, 'a', n);
    memset(b, 'a', n);
    a[n] = b[n] = '\0';
    b[n - 10] = 'b';
    char fa[17], fb[17];
    fingerprint_compute(NULL, "T", "c", a, fa);
    fingerprint_compute(NULL, "T", "c", b, fb);
    assert_string_equal(fa, fb);
    b[100] = 'b';
    fingerprint_compute(NULL, "T", "c", b, fb);
    assert_string_not_equal(fa, fb);
    struct buf out;
    buf_init(&out, 1 << 20);
    fingerprint_normalize(NULL, a, &out);
    assert_int_equal(out.len, 16384);
    buf_release(&out);
    free(a);
    free(b);
}

static void same_group(void **state)
{
    (void)state;
    const char *base = fp(NULL, "TimeoutError", "checkout", "timeout after 30 s on order 12345");
    assert_int_equal(strlen(base), 16);
    for (const char *p = base; *p; p++)
        assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
    assert_string_equal(fp(NULL, "TimeoutError", "checkout", "timeout after 30 s on order 12345"),
                        base);
    assert_string_equal(fp(NULL, "TimeoutError", "checkout", "timeout after 5 s on order 9"), base);
    assert_string_equal(
        fp(NULL, "E", "c", "user 123e4567-e89b-12d3-a456-426614174000 ptr 0xdead key \"a\""),
        fp(NULL, "E", "c", "user 00000000-0000-0000-0000-000000000000 ptr 0x1 key \"bbbb\""));
    assert_string_equal(fp(NULL, "E", "c", "commit a1b2c3d4e5 broke"),
                        fp(NULL, "E", "c", "commit 99999999ff broke"));
    /* what is not variable tells errors apart */
    assert_string_not_equal(fp(NULL, "TimeoutError", "checkout", "timeout after 30 s"),
                            fp(NULL, "TimeoutError", "checkout", "timeout after 30 min"));
    assert_string_not_equal(fp(NULL, "TimeoutError", "checkout", "x 1"),
                            fp(NULL, "IOError", "checkout", "x 1"));
    assert_string_not_equal(fp(NULL, "TimeoutError", "checkout", "x 1"),
                            fp(NULL, "TimeoutError", "payment", "x 1"));
    /* the parts are hashed in sequence, without separators; documented here, not a promise */
    assert_string_not_equal(fp(NULL, "", "", "x"), fp(NULL, "", "", "y"));
}

/*
 * BUG (reported, minor): a digit right after a letter stays, but the next digit of the same run
 * (preceded by a digit) starts a number: "sha256" becomes "sha2<n>", "node12" "node1<n>".
 */
static void digits_inside_words_stay(void **state)
{
    (void)state;
    assert_string_equal(norm(NULL, "sha256 of node12"), "sha256 of node12");
}

/*
 * BUG (reported): a number of 8 or more digits matches the hex-id rule first and becomes <hex>,
 * shorter ones become <n>; so "took 9999999 us" and "took 10000000 us" fall into different
 * groups although they differ only in a number.
 */
static void long_numbers_group_with_short(void **state)
{
    (void)state;
    assert_string_equal(fp(NULL, "E", "c", "took 9999999 us"),
                        fp(NULL, "E", "c", "took 10000000 us"));
}

static void custom_rules(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct fingerprint_rules *r = fingerprint_rules_new();
    assert_int_equal(fingerprint_rules_add(r, "user [a-z]+", "user <user>", &e), 0);
    assert_int_equal(fingerprint_rules_add(r, "(shard|node)-[a-z]", "\\1-<x>", &e), 0);
    /* replacements are literal text: POSIX regexec has no back-references in replacements */
    assert_string_equal(norm(r, "no user alice on shard-q"), "no user <user> on \\1-<x>");
    fingerprint_rules_free(&r);

    r = fingerprint_rules_new();
    assert_int_equal(fingerprint_rules_add(r, "user [a-z]+", "user <user>", &e), 0);
    assert_string_equal(norm(r, "no user alice, user bob"), "no user <user>, user <user>");
    /* rules see the folded text */
    assert_int_equal(fingerprint_rules_add(r, "port <n>", "port <p>", &e), 0);
    assert_string_equal(norm(r, "port 8080 closed for user carol"),
                        "port <p> closed for user <user>");
    assert_string_equal(fp(r, "E", "c", "denied for user alice"),
                        fp(r, "E", "c", "denied for user bob"));
    assert_string_not_equal(fp(NULL, "E", "c", "denied for user alice"),
                            fp(NULL, "E", "c", "denied for user bob"));
    fingerprint_rules_free(&r);
    assert_null(r);
    fingerprint_rules_free(&r); /* freeing NULL is fine */

    /* anchors: ^ matches the start only once; an empty match makes progress */
    r = fingerprint_rules_new();
    assert_int_equal(fingerprint_rules_add(r, "^a", "A", &e), 0);
    assert_string_equal(norm(r, "aaa"), "Aaa");
    fingerprint_rules_free(&r);
    r = fingerprint_rules_new();
    assert_int_equal(fingerprint_rules_add(r, "x*", "-", &e), 0);
    assert_string_equal(norm(r, "ab"), "-a-b");
    fingerprint_rules_free(&r);
}

static void rule_errors(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct fingerprint_rules *r = fingerprint_rules_new();
    assert_int_equal(fingerprint_rules_add(r, "([a-z", "x", &e), E_INVALID);
    assert_int_equal(e.code, E_INVALID);
    assert_non_null(strstr(e.msg, "fingerprint rule '([a-z' is not a valid regex: "));
    for (int i = 0; i < CONFIG_MAX_FP_RULES; i++)
        assert_int_equal(fingerprint_rules_add(r, "a", "b", &e), 0);
    assert_int_equal(fingerprint_rules_add(r, "a", "b", &e), E_LIMIT);
    assert_string_equal(e.msg, "too many fingerprint rules (limit 32)");
    assert_int_equal(fingerprint_rules_add(r, "a", "b", NULL), E_LIMIT);
    fingerprint_rules_free(&r);
}

static void hashes(void **state)
{
    (void)state;
    assert_true(hash64("abc", 3, 0) == hash64("abc", 3, 0));
    assert_true(hash64("abc", 3, 0) != hash64("abd", 3, 0));
    assert_true(hash64("abc", 3, 0) != hash64("abc", 3, 1));
    assert_true(hash64("", 0, 0) != hash64("", 0, 1));
    /* short keys spread over the low bits (hash tables use them) */
    unsigned seen = 0;
    for (int i = 0; i < 64; i++) {
        char k[8];
        int n = snprintf(k, sizeof k, "k%d", i);
        seen |= 1u << (hash64(k, (size_t)n, 0) & 31);
    }
    assert_true(__builtin_popcount(seen) >= 24);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(folds_numbers),
        cmocka_unit_test(folds_uuids_and_hex),
        cmocka_unit_test(folds_quoted_strings),
        cmocka_unit_test(long_messages),
        cmocka_unit_test(same_group),
        cmocka_unit_test(long_numbers_group_with_short),
        cmocka_unit_test(digits_inside_words_stay),
        cmocka_unit_test(custom_rules),
        cmocka_unit_test(rule_errors),
        cmocka_unit_test(hashes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
