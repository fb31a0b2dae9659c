/*
 * HTTPS for the HTTP server: libmicrohttpd over GnuTLS, TLS 1.2 and 1.3 only, with the
 * certificate and key of tls.cert and tls.key, reread on SIGHUP without closing the listening
 * socket.
 *
 * libmicrohttpd reads a certificate given as MHD_OPTION_HTTPS_MEM_CERT once, at start. To take
 * a renewed certificate without a restart (and without refusing connections meanwhile), the
 * server instead answers GnuTLS's certificate callback (MHD_OPTION_HTTPS_CERT_CALLBACK) from
 * here: each handshake gets the pair loaded last. The callback has no argument of its own; it
 * finds this struct through the connection (GnuTLS's session pointer is the MHD_Connection,
 * whose TLS state http_tls_conn_open() made when the connection was accepted).
 *
 * A pair that was served once is kept until the server stops: GnuTLS does not copy what the
 * callback returns, and a session that began with the old pair may still refer to it. Reloads
 * are rare (a certificate renewal), so this costs a few KiB each.
 */
#include "http/http_int.h"

#include <arpa/inet.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TLS 1.2 and 1.3 only, with GnuTLS's NORMAL cipher suites (no RC4, 3DES, export or anonymous
 * ones); the server's order of preference wins. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:%SERVER_PRECEDENCE"
#define CHAIN_MAX 16 /* certificates in tls.cert: the server's and its intermediates */

/* One certificate chain and its key, as loaded from the files. */
struct tls_pair {
    struct tls_pair *older; /* the pairs loaded before, kept until the server stops */
    gnutls_pcert_st chain[CHAIN_MAX];
    unsigned int nchain;
    gnutls_privkey_t key;
    char serial[80]; /* hex, for the log */
    int64_t not_after_s;
};

struct http_tls {
    char cert_path[4096], key_path[4096];
    pthread_mutex_t lock;
    struct tls_pair *current; /* under lock */
    atomic_uint_fast64_t handshakes_failed, reloads, reloads_failed;
};

static void pair_free(struct tls_pair *p)
{
    while (p) {
        struct tls_pair *older = p->older;
        for (unsigned int i = 0; i < p->nchain; i++)
            gnutls_pcert_deinit(&p->chain[i]);
        if (p->key)
            gnutls_privkey_deinit(p->key);
        free(p);
        p = older;
    }
}

/* Fills the pair's serial and expiry from its first certificate. */
static void pair_describe(struct tls_pair *p)
{
    gnutls_x509_crt_t crt;
    unsigned char serial[40];
    size_t len = sizeof serial;
    snprintf(p->serial, sizeof p->serial, "?");
    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, &p->chain[0].cert, GNUTLS_X509_FMT_DER) == 0) {
        if (gnutls_x509_crt_get_serial(crt, serial, &len) == 0)
            for (size_t i = 0; i < len && 2 * i + 2 < sizeof p->serial; i++)
                snprintf(p->serial + 2 * i, 3, "%02x", serial[i]);
        p->not_after_s = (int64_t)gnutls_x509_crt_get_expiration_time(crt);
    }
    gnutls_x509_crt_deinit(crt);
}

/* 0 when key is the private key of the chain's first certificate (their public keys are the
 * same); E_INVALID otherwise. */
static int pair_check_match(struct tls_pair *p, const char *cert_path, const char *key_path,
                            struct err *e)
{
    gnutls_pubkey_t from_key = NULL;
    gnutls_datum_t a = {NULL, 0}, b = {NULL, 0};
    int rc = 0;
    if (gnutls_pubkey_init(&from_key) < 0 ||
        gnutls_pubkey_import_privkey(from_key, p->key, 0, 0) < 0 ||
        gnutls_pubkey_export2(from_key, GNUTLS_X509_FMT_DER, &a) < 0 ||
        gnutls_pubkey_export2(p->chain[0].pubkey, GNUTLS_X509_FMT_DER, &b) < 0)
        rc = err_set(e, E_INVALID, "tls.key: cannot compare %s with the certificate of %s",
                     key_path, cert_path);
    else if (a.size != b.size || memcmp(a.data, b.data, a.size) != 0)
        rc = err_set(e, E_INVALID,
                     "tls.key: %s is not the key of the certificate in %s (its public key "
                     "differs): give the key the certificate was issued for",
                     key_path, cert_path);
    gnutls_free(a.data);
    gnutls_free(b.data);
    if (from_key)
        gnutls_pubkey_deinit(from_key);
    return rc;
}

/* Loads and checks a pair from the files; NULL with e set. */
static struct tls_pair *pair_load(const char *cert_path, const char *key_path, struct err *e)
{
    struct tls_pair *p = calloc(1, sizeof *p);
    struct buf cert, key;
    buf_init(&cert, 0);
    buf_init(&key, 0);
    int rc = p ? 0 : err_set(e, E_NOMEM, "out of memory");
    if (rc == 0)
        rc = tls_pem_read(cert_path, "tls.cert", &cert, e);
    if (rc == 0)
        rc = tls_pem_read(key_path, "tls.key", &key, e);
    if (rc == 0) {
        gnutls_datum_t d = {(unsigned char *)(cert.data ? cert.data : ""), (unsigned)cert.len};
        p->nchain = CHAIN_MAX;
        int g = gnutls_pcert_list_import_x509_raw(p->chain, &p->nchain, &d, GNUTLS_X509_FMT_PEM, 0);
        if (g < 0 || p->nchain == 0) {
            p->nchain = 0;
            rc = err_set(e, E_INVALID,
                         "tls.cert: %s holds no usable PEM certificate chain (at most %d "
                         "certificates, the server's first): %s",
                         cert_path, CHAIN_MAX, g < 0 ? gnutls_strerror(g) : "none found");
        }
    }
    if (rc == 0) {
        gnutls_datum_t d = {(unsigned char *)(key.data ? key.data : ""), (unsigned)key.len};
        int g = gnutls_privkey_init(&p->key);
        if (g == 0)
            g = gnutls_privkey_import_x509_raw(p->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
        if (g < 0)
            rc = err_set(e, E_INVALID,
                         "tls.key: %s is not an unencrypted PEM private key (RSA, ECDSA or "
                         "Ed25519): %s",
                         key_path, gnutls_strerror(g));
    }
    if (rc == 0)
        rc = pair_check_match(p, cert_path, key_path, e);
    if (key.data) /* the key's text does not linger in freed memory */
        explicit_bzero(key.data, key.len);
    buf_release(&cert);
    buf_release(&key);
    if (rc != 0) {
        pair_free(p);
        return NULL;
    }
    pair_describe(p);
    return p;
}

/* A connection's TLS state (http_tls_conn_open). */
struct tls_conn {
    struct http_tls *t;
    atomic_bool cert_sent; /* the handshake got as far as the server's certificate */
};

/* GnuTLS asks, during a handshake, which certificate to present: the pair loaded last. */
static int retrieve_cert(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                         const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                         gnutls_pcert_st **pcert, unsigned int *pcert_length,
                         gnutls_privkey_t *privkey)
{
    (void)req_ca_dn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
    struct MHD_Connection *conn = gnutls_session_get_ptr(session);
    struct tls_conn *tc = http_conns_tls_state(conn);
    if (!tc)
        return -1; /* not one of ours: the handshake fails */
    struct http_tls *t = tc->t;
    pthread_mutex_lock(&t->lock);
    struct tls_pair *p = t->current;
    pthread_mutex_unlock(&t->lock);
    *pcert = p->chain;
    *pcert_length = p->nchain;
    *privkey = p->key;
    atomic_store(&tc->cert_sent, true);
    return 0;
}

/* "203.0.113.7:51234" or "[2001:db8::1]:51234" of the peer. */
static void peer_text(struct MHD_Connection *conn, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        port = ntohs(v4->sin_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        port = ntohs(v6->sin6_port);
    }
    snprintf(out, size, sa && sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

/* A new connection's TLS state, kept by http_conns.c (for retrieve_cert); NULL when out of
 * memory, and then its handshake fails (retrieve_cert finds no state: no certificate to send). */
void *http_tls_conn_open(struct http_tls *t)
{
    struct tls_conn *tc = calloc(1, sizeof *tc);
    if (tc) {
        tc->t = t;
        atomic_init(&tc->cert_sent, false);
    }
    return tc;
}

/* A connection that closes before the handshake reached the certificate is logged with its peer
 * and counted: plain HTTP to the HTTPS port, a client that offers only TLS 1.0 or 1.1 or no
 * cipher suite in common. (The GnuTLS session is not looked at here: libmicrohttpd may have
 * freed it by the time it reports the close.) */
void http_tls_conn_closed(struct http_tls *t, struct MHD_Connection *conn, void *state)
{
    struct tls_conn *tc = state;
    bool failed = !tc || !atomic_load(&tc->cert_sent);
    free(tc);
    if (!failed)
        return;
    atomic_fetch_add(&t->handshakes_failed, 1);
    char peer[INET6_ADDRSTRLEN + 10];
    peer_text(conn, peer, sizeof peer);
    log_warn("https: connection from %s closed before the TLS handshake reached the certificate "
             "(plain HTTP, or a client without TLS 1.2 or 1.3); counted in "
             "opsdb_http_tls_handshake_failures_total",
             peer);
}

size_t http_tls_options(struct http_tls *t, struct MHD_OptionItem *out)
{
    if (!t)
        return 0;
    /* libmicrohttpd takes each option's value as a pointer here, functions included */
    out[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)retrieve_cert};
    out[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES};
    return 2;
}

static void log_loaded(const char *what, const struct http_tls *t, const struct tls_pair *p)
{
    char until[40] = "?";
    time_format_rfc3339(p->not_after_s * 1000, until, sizeof until);
    log_info("https: %s %s (serial %s, valid until %s) with the key %s", what, t->cert_path,
             p->serial, until, t->key_path);
    if (p->not_after_s * 1000 < time_now_ms())
        log_warn("https: the certificate of %s expired at %s: clients will refuse it; renew it "
                 "and send SIGHUP",
                 t->cert_path, until);
}

int http_tls_new(struct http_tls **out, const struct config *cfg, struct err *e)
{
    *out = NULL;
    if (!cfg->tls_cert[0] && !cfg->tls_key[0])
        return 0;
    if (!cfg->tls_cert[0] || !cfg->tls_key[0])
        return err_set(e, E_INVALID,
                       "HTTPS needs both a certificate and its key: give --tls-cert FILE and "
                       "--tls-key FILE (tls.cert and tls.key), or neither for plain HTTP");
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
        MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES)
        return err_set(e, E_INVALID,
                       "this libmicrohttpd is built without HTTPS (GnuTLS) support: install "
                       "Debian's libmicrohttpd12, or serve plain HTTP behind a TLS proxy");
    struct tls_pair *p = pair_load(cfg->tls_cert, cfg->tls_key, e);
    if (!p)
        return e->code;
    struct http_tls *t = calloc(1, sizeof *t);
    if (!t) {
        pair_free(p);
        return err_set(e, E_NOMEM, "out of memory");
    }
    snprintf(t->cert_path, sizeof t->cert_path, "%s", cfg->tls_cert);
    snprintf(t->key_path, sizeof t->key_path, "%s", cfg->tls_key);
    pthread_mutex_init(&t->lock, NULL);
    t->current = p;
    log_loaded("serving", t, p);
    *out = t;
    return 0;
}

void http_tls_free(struct http_tls **tp)
{
    struct http_tls *t = *tp;
    if (!t)
        return;
    pair_free(t->current);
    pthread_mutex_destroy(&t->lock);
    free(t);
    *tp = NULL;
}

int http_tls_reload(struct http_server *s, struct err *e)
{
    struct http_tls *t = s ? s->tls : NULL;
    if (!t)
        return 0;
    struct tls_pair *p = pair_load(t->cert_path, t->key_path, e);
    if (!p) {
        atomic_fetch_add(&t->reloads_failed, 1);
        return e->code;
    }
    pthread_mutex_lock(&t->lock);
    p->older = t->current;
    t->current = p;
    pthread_mutex_unlock(&t->lock);
    atomic_fetch_add(&t->reloads, 1);
    log_loaded("reloaded", t, p);
    return 0;
}

void http_tls_metrics(struct http_tls *t, struct buf *out)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    int64_t not_after_s = t->current->not_after_s;
    pthread_mutex_unlock(&t->lock);
    buf_printf(out,
               "# HELP opsdb_http_tls_certificate_expiry_seconds When the served certificate "
               "expires (Unix time).\n"
               "# TYPE opsdb_http_tls_certificate_expiry_seconds gauge\n"
               "opsdb_http_tls_certificate_expiry_seconds %" PRId64 "\n"
               "# HELP opsdb_http_tls_handshake_failures_total Connections closed before the TLS "
               "handshake reached the certificate (plain HTTP, TLS 1.0/1.1 only).\n"
               "# TYPE opsdb_http_tls_handshake_failures_total counter\n"
               "opsdb_http_tls_handshake_failures_total %" PRIuFAST64 "\n"
               "# HELP opsdb_http_tls_reloads_total Certificate reloads (SIGHUP), by result.\n"
               "# TYPE opsdb_http_tls_reloads_total counter\n"
               "opsdb_http_tls_reloads_total{result=\"ok\"} %" PRIuFAST64 "\n"
               "opsdb_http_tls_reloads_total{result=\"failed\"} %" PRIuFAST64 "\n",
               not_after_s, atomic_load(&t->handshakes_failed), atomic_load(&t->reloads),
               atomic_load(&t->reloads_failed));
}
