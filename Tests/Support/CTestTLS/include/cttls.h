/* Test support: a blocking TLS client over a connected socket (OpenSSL), for
 * the tests' WebSocket and HTTP clients. Every wait has a deadline. */
#ifndef CTTLS_H
#define CTTLS_H

#include <stddef.h>

typedef struct cttls cttls;

/* The handshake over fd (connected; made non-blocking here). ca_file: trust
 * only this CA (NULL: verify nothing). server_name: SNI and the name checked
 * (NULL: neither). cert/key: a client certificate (NULL: none). alpn: a
 * protocol list in wire format ("\x08http/1.1"), or NULL. NULL on failure,
 * with the reason in err. fd stays the caller's. */
cttls *cttls_connect(int fd, const char *ca_file, const char *server_name, const char *cert_file,
                     const char *key_file, const char *alpn, size_t alpn_len, int timeout_ms, char *err,
                     size_t err_cap);
/* cttls_connect, and: tls12_only: offer TLS 1.2 at most; ciphersuites: the
 * TLS 1.3 suites to offer (OpenSSL's list syntax; NULL: its default). */
cttls *cttls_connect_with(int fd, const char *ca_file, const char *server_name, const char *cert_file,
                          const char *key_file, const char *alpn, size_t alpn_len, int tls12_only,
                          const char *ciphersuites, int timeout_ms, char *err, size_t err_cap);
/* TLS 1.3: a KeyUpdate asking the server for one too, sent now. 0, or -1. */
int cttls_request_key_update(cttls *t, int timeout_ms);
/* The negotiated suite's name. */
const char *cttls_cipher(const cttls *t);
/* Writes everything: 0, or -1. */
int cttls_write(cttls *t, const void *data, size_t len, int timeout_ms);
/* Up to cap bytes: n > 0, 0 at the end of the stream, -1 on error, -2 when
 * nothing came within timeout_ms. */
long cttls_read(cttls *t, void *buf, size_t cap, int timeout_ms);
/* Sends close_notify (0, or -1). */
int cttls_close_notify(cttls *t);
/* 1 once the server's close_notify arrived. */
int cttls_received_close_notify(const cttls *t);
/* The common name of the server's certificate ("" if none). */
const char *cttls_peer_common_name(cttls *t);
/* The negotiated ALPN protocol ("" if none) and TLS version ("TLSv1.3"...). */
const char *cttls_alpn(cttls *t);
const char *cttls_version(const cttls *t);
/* The serial number of the server's certificate, as hex ("" if none). */
const char *cttls_peer_serial(cttls *t);
void cttls_free(cttls *t);

#endif
