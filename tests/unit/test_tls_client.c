/*
 * core: the clients' CA files (tls_ca_file_check, tls_pem_read). A file of certificates passes;
 * one that is missing, empty, not PEM, a certificate whose body is damaged, or too large to be a
 * CA bundle fails with a message that names the option and the file.
 */
#include "unit.h"

#include <unistd.h>

/* A self-signed CA certificate (EC P-256), made once with openssl for this test. */
static const char CA_PEM[] = "-----BEGIN CERTIFICATE-----\n"
                             "MIIBkDCCATegAwIBAgIUQVRgJgmSelA4ikaSwSAIggb624AwCgYIKoZIzj0EAwIw\n"
                             "HTEbMBkGA1UEAwwSb3BzZGIgdW5pdCB0ZXN0IENBMCAXDTI2MTEzMDAyNDU0N1oY\n"
                             "DzIxMjYxMTA2MDI0NTQ3WjAdMRswGQYDVQQDDBJvcHNkYiB1bml0IHRlc3QgQ0Ew\n"
                             "WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASTDj+vM2xp6/i9N9pGZJHU538KpJ45\n"
                             "OIrk59sxX/NMss8A1RS62jzpND8fQGEVnf6e99lt5xumk4Tgc/7VFSRdo1MwUTAd\n"
                             "BgNVHQ4EFgQUkqF8Yv3xRdpIOlicege9uAbkUrUwHwYDVR0jBBgwFoAUkqF8Yv3x\n"
                             "RdpIOlicege9uAbkUrUwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBE\n"
                             "AiAVF9ntpA1ZRXGfBPvz0iYhJQFILc6iWj6aMbgzTbkqAQIgSUAzYxVdOvZjymNe\n"
                             "vLZPtxQ/a1PUx3xhjM/GN0k+0iQ=\n"
                             "-----END CERTIFICATE-----\n";

struct tmpfile {
    char path[64];
};

/* A new file holding len bytes of text. */
static void tmpfile_write(struct tmpfile *t, const char *text, size_t len)
{
    snprintf(t->path, sizeof t->path, "/tmp/opsdb-test-ca-XXXXXX");
    int fd = mkstemp(t->path);
    assert_true(fd >= 0);
    assert_int_equal(file_write_all(fd, text, len), 0);
    close(fd);
}

/* tls_ca_file_check of text; the error's message in e. */
static int check_text(const char *text, size_t len, struct err *e)
{
    struct tmpfile t;
    tmpfile_write(&t, text, len);
    err_clear(e);
    int rc = tls_ca_file_check(t.path, "agent.ca_file", e);
    if (rc)
        assert_non_null(strstr(e->msg, t.path));
    unlink(t.path);
    return rc;
}

static void certificates_pass(void **state)
{
    (void)state;
    struct err e;
    assert_int_equal(check_text(CA_PEM, strlen(CA_PEM), &e), 0);
    char two[2 * sizeof CA_PEM + 64]; /* a bundle, with text around the blocks as in Debian's */
    int n = snprintf(two, sizeof two, "# first\n%s\nsecond:\n%s", CA_PEM, CA_PEM);
    assert_int_equal(check_text(two, (size_t)n, &e), 0);
}

static void a_missing_file_names_the_option(void **state)
{
    (void)state;
    struct err e;
    assert_int_equal(tls_ca_file_check("/nonexistent/ca.pem", "tls_config.ca_file", &e), E_IO);
    assert_string_equal(e.msg,
                        "tls_config.ca_file: cannot read /nonexistent/ca.pem: No such file or "
                        "directory");
}

static void files_without_a_certificate_fail(void **state)
{
    (void)state;
    struct err e;
    assert_int_equal(check_text("", 0, &e), E_INVALID);
    assert_non_null(strstr(e.msg, "agent.ca_file: "));
    assert_non_null(strstr(e.msg, "holds no PEM certificate"));
    const char *junk = "this is not a certificate\n";
    assert_int_equal(check_text(junk, strlen(junk), &e), E_INVALID);
    const char *key =
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";
    assert_int_equal(check_text(key, strlen(key), &e), E_INVALID);
    /* the certificate with a byte of its body changed no longer parses */
    char damaged[sizeof CA_PEM];
    memcpy(damaged, CA_PEM, sizeof CA_PEM);
    char *body = strstr(damaged, "MIIB");
    body[0] = 'A';
    body[1] = 'A';
    assert_int_equal(check_text(damaged, strlen(damaged), &e), E_INVALID);
}

static void a_huge_file_is_not_read_whole(void **state)
{
    (void)state;
    size_t len = (16u << 20) + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, 'A', len);
    struct err e;
    assert_int_equal(check_text(big, len, &e), E_LIMIT);
    assert_non_null(strstr(e.msg, "is larger than"));
    free(big);
}

static void pem_read_reads_the_whole_file(void **state)
{
    (void)state;
    struct tmpfile t;
    tmpfile_write(&t, CA_PEM, strlen(CA_PEM));
    struct buf b;
    buf_init(&b, 0);
    struct err e;
    assert_int_equal(tls_pem_read(t.path, "tls.cert", &b, &e), 0);
    assert_int_equal(b.len, strlen(CA_PEM));
    assert_memory_equal(b.data, CA_PEM, b.len);
    buf_release(&b);
    unlink(t.path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(certificates_pass),
        cmocka_unit_test(a_missing_file_names_the_option),
        cmocka_unit_test(files_without_a_certificate_fail),
        cmocka_unit_test(a_huge_file_is_not_read_whole),
        cmocka_unit_test(pem_read_reads_the_whole_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
