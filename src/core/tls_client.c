/*
 * How opsdb's HTTP clients verify the servers they talk to. The agent, the notifiers, the
 * scrapes and the CLI each hold a libcurl handle; they all go through tls_client_setup(), so
 * verification is on everywhere and a new client cannot forget it. A CA file is checked when
 * it is configured (tls_ca_file_check), because libcurl would only say "problem with the SSL CA
 * cert" at the first request, long after the operator has looked away.
 */
#include "core.h"

#include <curl/curl.h>
#include <errno.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>

/* A CA bundle is a few hundred KiB at most, a certificate chain or a key a few KiB: a larger
 * file is not one. */
#define PEM_FILE_MAX_BYTES (16u << 20)

int tls_pem_read(const char *path, const char *option, struct buf *out, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, E_IO, "%s: cannot read %s: %s", option, path, strerror(errno));
    out->len = 0;
    out->max = PEM_FILE_MAX_BYTES;
    char chunk[8192];
    size_t got;
    int rc = 0;
    while (rc == 0 && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (buf_append(out, chunk, got) != 0)
            rc = err_set(e, E_LIMIT, "%s: %s is larger than %u bytes: not a PEM file", option, path,
                         PEM_FILE_MAX_BYTES);
    if (rc == 0 && ferror(f))
        rc = err_set(e, E_IO, "%s: cannot read %s: %s", option, path, strerror(errno));
    fclose(f);
    return rc;
}

int tls_ca_file_check(const char *path, const char *option, struct err *e)
{
    struct buf text;
    buf_init(&text, PEM_FILE_MAX_BYTES);
    int rc = tls_pem_read(path, option, &text, e);
    gnutls_x509_crt_t *certs = NULL;
    unsigned int ncerts = 0;
    if (rc == 0) {
        gnutls_datum_t data = {(unsigned char *)(text.data ? text.data : ""),
                               (unsigned int)text.len};
        int g = gnutls_x509_crt_list_import2(&certs, &ncerts, &data, GNUTLS_X509_FMT_PEM, 0);
        if (g < 0 || ncerts == 0)
            rc = err_set(e, E_INVALID,
                         "%s: %s holds no PEM certificate (-----BEGIN CERTIFICATE-----): %s",
                         option, path, g < 0 ? gnutls_strerror(g) : "none found");
    }
    for (unsigned int i = 0; i < ncerts; i++)
        gnutls_x509_crt_deinit(certs[i]);
    gnutls_free(certs);
    buf_release(&text);
    return rc;
}

void tls_client_setup(void *curl, const char *ca_file)
{
    CURL *c = curl;
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (ca_file && *ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
}
