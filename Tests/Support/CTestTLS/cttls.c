#include "cttls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cttls {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    char name[256];
    char alpn[64];
    char serial[128];
};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for what OpenSSL asked for; 0, or -2 past the deadline. */
static int wait_for(cttls *t, int err, long long deadline) {
    long long left = deadline - now_ms();
    if (left <= 0) return -2;
    struct pollfd p = {.fd = t->fd, .events = err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
    int rc = poll(&p, 1, (int)left);
    if (rc < 0 && errno == EINTR) return 0;
    return rc == 0 ? -2 : 0;
}

static void fail(char *err, size_t cap, const char *what) {
    char why[256] = "";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    if (err && cap) snprintf(err, cap, "%s: %s", what, why[0] ? why : "failed");
}

cttls *cttls_connect(int fd, const char *ca_file, const char *server_name, const char *cert_file,
                     const char *key_file, const char *alpn, size_t alpn_len, int timeout_ms, char *err,
                     size_t err_cap) {
    return cttls_connect_with(fd, ca_file, server_name, cert_file, key_file, alpn, alpn_len, 0, NULL, timeout_ms, err,
                              err_cap);
}

cttls *cttls_connect_with(int fd, const char *ca_file, const char *server_name, const char *cert_file,
                          const char *key_file, const char *alpn, size_t alpn_len, int tls12_only,
                          const char *ciphersuites, int timeout_ms, char *err, size_t err_cap) {
    cttls *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->fd = fd;
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (!t->ctx) goto fail;
    if (tls12_only) SSL_CTX_set_max_proto_version(t->ctx, TLS1_2_VERSION);
    if (ciphersuites && SSL_CTX_set_ciphersuites(t->ctx, ciphersuites) != 1) {
        fail(err, err_cap, "ciphersuites");
        goto out;
    }
    /* The server's FIN without close_notify reads as an end of stream. */
    SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (ca_file) {
        if (SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1) {
            fail(err, err_cap, "CA file");
            goto out;
        }
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    }
    if (cert_file && (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1 ||
                      SSL_CTX_use_PrivateKey_file(t->ctx, key_file, SSL_FILETYPE_PEM) != 1)) {
        fail(err, err_cap, "client certificate");
        goto out;
    }
    if (alpn) SSL_CTX_set_alpn_protos(t->ctx, (const unsigned char *)alpn, (unsigned)alpn_len);
    t->ssl = SSL_new(t->ctx);
    if (!t->ssl) goto fail;
    if (server_name) {
        SSL_set_tlsext_host_name(t->ssl, server_name);
        SSL_set1_host(t->ssl, server_name);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    SSL_set_fd(t->ssl, fd);
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int rc = SSL_connect(t->ssl);
        if (rc == 1) return t;
        int e = SSL_get_error(t->ssl, rc);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && wait_for(t, e, deadline) == 0) continue;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (err && err_cap) snprintf(err, err_cap, "handshake timed out");
        } else {
            fail(err, err_cap, "handshake");
        }
        goto out;
    }
fail:
    fail(err, err_cap, "setup");
out:
    cttls_free(t);
    return NULL;
}

int cttls_write(cttls *t, const void *data, size_t len, int timeout_ms) {
    long long deadline = now_ms() + timeout_ms;
    size_t done = 0;
    while (done < len) {
        int n = SSL_write(t->ssl, (const char *)data + done, (int)(len - done));
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && wait_for(t, e, deadline) == 0) continue;
        ERR_clear_error();
        return -1;
    }
    return 0;
}

long cttls_read(cttls *t, void *buf, size_t cap, int timeout_ms) {
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int n = SSL_read(t->ssl, buf, (int)cap);
        if (n > 0) return n;
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_for(t, e, deadline) < 0) return -2;
            continue;
        }
        /* A reset, or the end of the stream mid-record. */
        ERR_clear_error();
        return e == SSL_ERROR_SYSCALL && errno == ECONNRESET ? 0 : -1;
    }
}

int cttls_close_notify(cttls *t) {
    int rc = SSL_shutdown(t->ssl);
    ERR_clear_error();
    return rc < 0 ? -1 : 0;
}

int cttls_received_close_notify(const cttls *t) { return (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN) != 0; }

const char *cttls_peer_common_name(cttls *t) {
    t->name[0] = 0;
    X509 *cert = SSL_get1_peer_certificate(t->ssl);
    if (!cert) return t->name;
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, t->name, sizeof t->name);
    X509_free(cert);
    return t->name;
}

const char *cttls_peer_serial(cttls *t) {
    t->serial[0] = 0;
    X509 *cert = SSL_get1_peer_certificate(t->ssl);
    if (!cert) return t->serial;
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    if (hex) snprintf(t->serial, sizeof t->serial, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
    X509_free(cert);
    return t->serial;
}

const char *cttls_alpn(cttls *t) {
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &len);
    if (len >= sizeof t->alpn) len = sizeof t->alpn - 1;
    if (p) memcpy(t->alpn, p, len);
    t->alpn[len] = 0;
    return t->alpn;
}

const char *cttls_version(const cttls *t) { return SSL_get_version(t->ssl); }

void cttls_free(cttls *t) {
    if (!t) return;
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    free(t);
}

int cttls_request_key_update(cttls *t, int timeout_ms) {
    if (SSL_key_update(t->ssl, SSL_KEY_UPDATE_REQUESTED) != 1) return -1;
    /* Sent by the next write or handshake step: push it out now. */
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int rc = SSL_do_handshake(t->ssl);
        if (rc == 1) return 0;
        int e = SSL_get_error(t->ssl, rc);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && wait_for(t, e, deadline) == 0) continue;
        ERR_clear_error();
        return -1;
    }
}

const char *cttls_cipher(const cttls *t) { return SSL_get_cipher_name(t->ssl); }
