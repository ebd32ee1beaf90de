/*
 * TLS on a listener, with OpenSSL 3 over memory: the backends keep every
 * socket operation (io_uring or epoll, unchanged), and OpenSSL only ever sees
 * bytes in memory through a BIO of ours.
 *
 * - Input: a read's ciphertext is handed to OpenSSL in place (the BIO reads
 *   straight from the backend's buffer; a partial record stays in OpenSSL's
 *   own buffer, which SSL_MODE_RELEASE_BUFFERS frees when it empties), and
 *   the plaintext goes to the usual state machine (request head, frames).
 *   Everything a read holds is decrypted in that call, as a plain read is
 *   delivered whole, so pausing a connection never strands bytes inside
 *   OpenSSL with nothing left on the socket to wake it.
 * - Output: the send queue takes plaintext messages as on a plain
 *   connection (shared fan-out messages included). When the queue is about
 *   to be written, cws_tls_seal encrypts the plaintext at its tail into
 *   records, small messages packed together into one record, and the
 *   records take their place: a TLS connection's queue is records
 *   (CWS_MSG_SEALED) followed by plaintext not yet sealed. Records OpenSSL
 *   writes on its own (handshake, alerts, tickets) go in ahead of that
 *   plaintext, which is encrypted after them. Sealing late means a burst of
 *   replies is one record, and a connection whose write is in flight
 *   (io_uring) gathers what follows into the next.
 * - Certificates: one SSL_CTX per identity, chosen by SNI; a reload builds a
 *   new set and swaps it in for the next accept (open sessions keep theirs).
 *
 * Kernel TLS (kernel_offload): after a TLS 1.3 handshake the sending keys
 * go to the kernel (engine_tls_kernel.c) and the queue's plaintext is
 * written as it is; OpenSSL keeps reading, and never writes again (the BIO
 * refuses it: its records would reuse the kernel's nonces).
 */
#include "engine_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

typedef struct cws_tls_host {
    char *name; /* lower case; "*.example.com" for a wildcard */
    SSL_CTX *ctx;
} cws_tls_host;

/* The certificates in use: replaced whole by a reload. A session holds a
 * reference until its handshake is over (its SNI callback reads the hosts). */
struct cws_tls_identities {
    _Atomic uint32_t refs;
    SSL_CTX *def;
    cws_tls_host *hosts;
    uint32_t nhosts;
    uint8_t offload; /* what kernel_offload gives here: 0 none, 1 the kernel, 2 the emulation */
};

typedef struct cws_tls_conn {
    SSL *ssl;
    struct cws_tls_identities *ids; /* NULL once the handshake is over */
    cws_buffer *out;                /* the loop's tls_out */
    const uint8_t *in;              /* ciphertext being handed to OpenSSL */
    size_t in_len;
    uint8_t handshaken;
    uint8_t notified;               /* close_notify queued (or a fatal alert sent) */
    uint8_t offload;                /* the identities' mode at accept */
    uint8_t kernel_tx;              /* sending handed over: 1 the kernel, 2 the emulation (tx) */
    uint8_t refused_write;          /* OpenSSL tried to write after that */
    uint8_t secret_len;
    uint8_t secret[48];             /* SERVER_TRAFFIC_SECRET_0, until the hand-off */
    cws_tls_tx *tx;
} cws_tls_conn;

/* Plaintext gathered into one record: what fits a TLS record. */
#define CWS_TLS_RECORD 16384
/* Messages this big are encrypted from where they are instead of gathered. */
#define CWS_TLS_GATHER_MAX 4096
/* Records are queued as a message every so many bytes, so a big message's
 * records neither wait for the whole of it nor make tls_out as big. */
#define CWS_TLS_COMMIT_BYTES (256u << 10)

/* ---- the BIO: OpenSSL's view of our buffers ------------------------------ */

static BIO_METHOD *cws_bio_method;
static pthread_once_t cws_bio_once = PTHREAD_ONCE_INIT;

static int cws_bio_write(BIO *b, const char *data, int len) {
    cws_tls_conn *t = BIO_get_data(b);
    cws_buffer *o = t->out;
    BIO_clear_retry_flags(b);
    if (len <= 0) return 0;
    if (t->kernel_tx) {
        t->refused_write = 1;
        return -1;
    }
    if (o->len + (size_t)len > o->cap) {
        size_t cap = o->cap ? o->cap : 32768;
        while (cap < o->len + (size_t)len) cap *= 2;
        uint8_t *n = realloc(o->data, cap);
        if (!n) return -1;
        o->data = n;
        o->cap = cap;
    }
    memcpy(o->data + o->len, data, (size_t)len);
    o->len += (size_t)len;
    return len;
}

static int cws_bio_read(BIO *b, char *buf, int len) {
    cws_tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!t->in_len) {
        BIO_set_retry_read(b); /* "want read": the next read from the socket brings more */
        return -1;
    }
    size_t n = (size_t)len < t->in_len ? (size_t)len : t->in_len;
    memcpy(buf, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static long cws_bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num;
    (void)ptr;
    cws_tls_conn *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return t ? (long)t->in_len : 0;
    default:
        return 0;
    }
}

static int cws_bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static void cws_bio_init_method(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cwebsocket");
    if (!m) return;
    BIO_meth_set_write(m, cws_bio_write);
    BIO_meth_set_read(m, cws_bio_read);
    BIO_meth_set_ctrl(m, cws_bio_ctrl);
    BIO_meth_set_create(m, cws_bio_create);
    cws_bio_method = m;
}

/* ---- certificates ---------------------------------------------------------- */

static void cws_tls_error(char *err, size_t cap, const char *what, const char *file) {
    char why[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e) ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    if (err && cap) snprintf(err, cap, "TLS: %s %s: %s", what, file ? file : "", why[0] ? why : "failed");
}

static int cws_tls_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                        unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, http11, sizeof http11 - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    /* A client that offers only other protocols (h2) still gets HTTP/1.1,
     * without ALPN: refusing it would help nobody. */
    return SSL_TLSEXT_ERR_NOACK;
}

static int cws_name_matches(const char *pattern, const char *name) {
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        return dot && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, name) == 0;
}

/* Exact names first, then wildcards. */
static SSL_CTX *cws_tls_lookup(const struct cws_tls_identities *ids, const char *name) {
    for (int wild = 0; wild < 2; wild++)
        for (uint32_t i = 0; i < ids->nhosts; i++)
            if ((ids->hosts[i].name[0] == '*') == wild && cws_name_matches(ids->hosts[i].name, name))
                return ids->hosts[i].ctx;
    return NULL;
}

static int cws_tls_sni(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    const struct cws_tls_identities *ids = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    SSL_CTX *ctx = name ? cws_tls_lookup(ids, name) : NULL;
    if (ctx && ctx != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, ctx);
    return SSL_TLSEXT_ERR_OK; /* an unknown name gets the default certificate */
}

/* Only the server's application traffic secret is kept, for the hand-off. */
static void cws_tls_keylog(const SSL *ssl, const char *line) {
    cws_tls_conn *t = SSL_get_app_data(ssl);
    size_t len = 0;
    if (t && t->offload && cws_tls_tx_secret(line, t->secret, &len)) t->secret_len = (uint8_t)len;
}

static SSL_CTX *cws_tls_ctx_new(const cws_tls_config *cfg, const cws_tls_identity *id, int offload, char *err,
                                size_t cap) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        cws_tls_error(err, cap, "SSL_CTX_new", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* An idle connection keeps no record buffers (16 KiB+ each way). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* TLS 1.2: forward-secret AEAD suites only (1.3's are all of that kind). */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    /* Resumption by tickets only: a server-side session cache would grow
     * with every client that ever connected. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, offload ? 0 : 1);
    if (offload) SSL_CTX_set_keylog_callback(ctx, cws_tls_keylog);
    SSL_CTX_set_alpn_select_cb(ctx, cws_tls_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, id->certificate_chain_file) != 1) {
        cws_tls_error(err, cap, "certificate chain", id->certificate_chain_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, id->private_key_file, SSL_FILETYPE_PEM) != 1) {
        cws_tls_error(err, cap, "private key", id->private_key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        cws_tls_error(err, cap, "private key does not match the certificate in", id->certificate_chain_file);
        goto fail;
    }
    if (cfg->client_ca_file && *cfg->client_ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca_file);
        if (!names || SSL_CTX_load_verify_locations(ctx, cfg->client_ca_file, NULL) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            cws_tls_error(err, cap, "client CA file", cfg->client_ca_file);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (cfg->require_client_certificate ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           NULL);
        static const unsigned char sid[] = "cwebsocket";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void cws_tls_ids_release(struct cws_tls_identities *ids) {
    if (!ids || atomic_fetch_sub(&ids->refs, 1) != 1) return;
    for (uint32_t i = 0; i < ids->nhosts; i++) {
        free(ids->hosts[i].name);
        SSL_CTX_free(ids->hosts[i].ctx);
    }
    free(ids->hosts);
    SSL_CTX_free(ids->def);
    free(ids);
}

static struct cws_tls_identities *cws_tls_ids_new(const cws_tls_config *cfg, char *err, size_t cap) {
    pthread_once(&cws_bio_once, cws_bio_init_method);
    if (!cws_bio_method) {
        cws_tls_error(err, cap, "BIO_meth_new", NULL);
        return NULL;
    }
    if (!cfg->identities || !cfg->identity_count) {
        if (err && cap) snprintf(err, cap, "TLS: no certificate configured");
        return NULL;
    }
    struct cws_tls_identities *ids = calloc(1, sizeof *ids);
    if (ids) ids->hosts = calloc(cfg->identity_count, sizeof *ids->hosts);
    if (!ids || !ids->hosts) {
        free(ids);
        if (err && cap) snprintf(err, cap, "TLS: out of memory");
        return NULL;
    }
    atomic_init(&ids->refs, 1);
    ids->offload = cfg->kernel_offload == 2 ? 2 : cfg->kernel_offload == 1 && cws_tls_kernel_offload_load() ? 1 : 0;
    uint32_t def = 0;
    for (uint32_t i = 0; i < cfg->identity_count; i++)
        if (!cfg->identities[i].server_name || !*cfg->identities[i].server_name) {
            def = i;
            break;
        }
    for (uint32_t i = 0; i < cfg->identity_count; i++) {
        const cws_tls_identity *id = &cfg->identities[i];
        SSL_CTX *ctx = cws_tls_ctx_new(cfg, id, ids->offload, err, cap);
        if (!ctx) goto fail;
        if (i == def) {
            SSL_CTX_up_ref(ctx);
            ids->def = ctx;
        }
        if (id->server_name && *id->server_name) {
            cws_tls_host *h = &ids->hosts[ids->nhosts++];
            h->ctx = ctx;
            h->name = strdup(id->server_name);
            if (!h->name) goto fail;
        } else {
            SSL_CTX_free(ctx); /* the default only: ids->def holds it */
        }
    }
    SSL_CTX_set_tlsext_servername_callback(ids->def, cws_tls_sni);
    SSL_CTX_set_tlsext_servername_arg(ids->def, ids);
    return ids;
fail:
    cws_tls_ids_release(ids);
    return NULL;
}

int cws_tls_server_init(cws_server *s, const cws_tls_config *cfg, char *err, size_t cap) {
    pthread_mutex_init(&s->tls_lock, NULL);
    s->tls = NULL;
    if (!cfg) return 0;
    s->tls = cws_tls_ids_new(cfg, err, cap);
    return s->tls ? 0 : -1;
}

void cws_tls_server_free(cws_server *s) {
    cws_tls_ids_release(s->tls);
    s->tls = NULL;
    pthread_mutex_destroy(&s->tls_lock);
}

int cws_server_tls_reload(cws_server *s, const cws_tls_config *cfg, char *err, size_t cap) {
    if (!s || !cfg) return -EINVAL;
    if (!s->tls_port) {
        if (err && cap) snprintf(err, cap, "TLS: this server has no TLS listener");
        return -EINVAL;
    }
    struct cws_tls_identities *ids = cws_tls_ids_new(cfg, err, cap);
    if (!ids) return -1;
    pthread_mutex_lock(&s->tls_lock);
    struct cws_tls_identities *old = s->tls;
    s->tls = ids;
    pthread_mutex_unlock(&s->tls_lock);
    cws_tls_ids_release(old);
    return 0;
}

int cws_tls_kernel_offload_available(void) {
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
    if (!f) return 0;
    char line[256], *save = NULL;
    int found = 0;
    if (fgets(line, sizeof line, f))
        for (char *tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
            if (strcmp(tok, "tls") == 0) found = 1;
    fclose(f);
    return found;
}

/* The module is often not loaded until a socket asks for it: asking on a
 * socket of our own makes the kernel load it (with CAP_NET_ADMIN; else an
 * operator's `modprobe tls`). The socket need not be connected: the module is
 * looked up before the state is checked. */
int cws_tls_kernel_offload_load(void) {
    if (cws_tls_kernel_offload_available()) return 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        (void)setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof "tls");
        close(fd);
    }
    return cws_tls_kernel_offload_available();
}

/* ---- sessions --------------------------------------------------------------- */

int cws_tls_conn_new(cws_loop *l, cws_conn *c) {
    cws_server *s = l->srv;
    cws_tls_conn *t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    pthread_mutex_lock(&s->tls_lock);
    struct cws_tls_identities *ids = s->tls;
    atomic_fetch_add(&ids->refs, 1);
    pthread_mutex_unlock(&s->tls_lock);
    t->ids = ids;
    t->out = &l->tls_out;
    t->offload = ids->offload;
    t->ssl = SSL_new(ids->def);
    BIO *b = t->ssl ? BIO_new(cws_bio_method) : NULL;
    if (!b) {
        SSL_free(t->ssl);
        cws_tls_ids_release(ids);
        free(t);
        ERR_clear_error();
        return -ENOMEM;
    }
    BIO_set_data(b, t);
    SSL_set_app_data(t->ssl, t); /* for the key log */
    SSL_set_bio(t->ssl, b, b); /* one BIO both ways: SSL_set_bio takes its one reference */
    SSL_set_accept_state(t->ssl);
    c->tls = t;
    return 0;
}

void cws_tls_conn_free(cws_conn *c) {
    cws_tls_conn *t = c->tls;
    if (!t) return;
    SSL_free(t->ssl);
    cws_tls_ids_release(t->ids);
    cws_tls_tx_free(t->tx);
    OPENSSL_cleanse(t->secret, sizeof t->secret);
    free(t);
    c->tls = NULL;
}

int cws_tls_kernel_sends(const cws_conn *c) { return c->tls && c->tls->kernel_tx == 1; }

/* The handshake is over: the sending keys go to the kernel (or the
 * emulation), unless this session cannot (TLS 1.2, a suite the kernel lacks)
 * or something is still queued under OpenSSL's records; then it stays in
 * user space, which is always correct. */
static void cws_tls_hand_off(cws_loop *l, cws_conn *c) {
    cws_tls_conn *t = c->tls;
    char why[160] = "";
    if (SSL_version(t->ssl) != TLS1_3_VERSION) {
        snprintf(why, sizeof why, "%s, not TLS 1.3", SSL_get_version(t->ssl));
    } else if (c->qcount) {
        snprintf(why, sizeof why, "records still queued");
    } else if (cws_tls_tx_start(c->fd, t->ssl, t->secret, t->secret_len, t->offload, &t->tx, why, sizeof why) == 0) {
        t->kernel_tx = t->offload;
        CWS_STAT_ADD(l, tls_kernel_offloads, 1);
    }
    OPENSSL_cleanse(t->secret, sizeof t->secret);
    t->secret_len = 0;
    if (!t->kernel_tx) {
        char peer[64];
        cws_format_peer(c->fd, peer, sizeof peer);
        cws_log(l, CWS_LOG_DEBUG, "TLS from %s: sending stays in user space: %s", peer, why);
    }
}

/* Encrypts plaintext into tls_out: OpenSSL's records, or the emulation's. */
static int cws_tls_write(cws_loop *l, cws_tls_conn *t, const uint8_t *data, size_t len) {
    if (t->kernel_tx == 2) return cws_tls_tx_seal(t->tx, &l->tls_out, 23, data, len);
    return SSL_write(t->ssl, data, (int)len) > 0 ? 0 : -1;
}

const char *cws_tls_server_name(const cws_conn *c) {
    if (!c->tls) return NULL;
    const char *name = SSL_get_servername(c->tls->ssl, TLSEXT_NAMETYPE_host_name);
    return name ? name : "";
}

/* ---- the queue -------------------------------------------------------------- */

/* Index of the first plaintext entry not yet sealed (qcount if none). */
static uint32_t cws_tls_unsealed(const cws_conn *c) {
    uint32_t i = c->qcount;
    while (i && c->q[(c->qhead + i - 1) & (c->qcap - 1)].msg->opcode != CWS_MSG_SEALED) i--;
    return i;
}

/* Queues what OpenSSL wrote as one message, ahead of the plaintext not yet
 * sealed (which will be encrypted after it). 0, or -ENOMEM. */
static int cws_tls_commit(cws_loop *l, cws_conn *c) {
    cws_buffer *o = &l->tls_out;
    if (!o->len) return 0;
    cws_msg *m = cws_msg_alloc(o->len);
    if (!m) {
        o->len = 0;
        return -ENOMEM;
    }
    memcpy(m->data, o->data, o->len);
    m->opcode = CWS_MSG_SEALED;
    o->len = 0;
    /* A big message's records grew the buffer: give it back. */
    if (o->cap > 4 * CWS_TLS_COMMIT_BYTES) {
        free(o->data);
        o->data = NULL;
        o->cap = 0;
    }
    int rc = cws_sendq_insert(l, c, cws_tls_unsealed(c), m);
    cws_msg_release(m);
    return rc;
}

/* The session failed: say why, send the alert OpenSSL wrote (if any) and
 * close. A connection still in its handshake had no WebSocket yet. */
static void cws_tls_fail(cws_loop *l, cws_conn *c, const char *what) {
    cws_tls_conn *t = c->tls;
    char why[200] = "";
    unsigned long e = ERR_peek_last_error();
    if (e) ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    char peer[64];
    cws_format_peer(c->fd, peer, sizeof peer);
    cws_log(l, CWS_LOG_DEBUG, "TLS %s from %s: %s", what, peer, why[0] ? why : "no reason given");
    if (!t->handshaken) CWS_STAT_ADD(l, tls_handshakes_failed, 1);
    t->notified = 1; /* a fatal alert ends the session: no close_notify after it */
    if (!t->handshaken && l->tls_out.len && cws_tls_commit(l, c) == 0) {
        cws_conn_close_after_queue(l, c);
        return;
    }
    l->tls_out.len = 0;
    cws_conn_finish(l, c);
}

int cws_tls_seal(cws_loop *l, cws_conn *c) {
    cws_tls_conn *t = c->tls;
    if (!t || !t->handshaken || c->state == CWS_CONN_DEAD || t->kernel_tx == 1) return 0;
    uint32_t first = cws_tls_unsealed(c);
    uint32_t k = c->qcount - first;
    if (!k) return 0;
    /* Take the plaintext off the queue; its records are pushed in its place. */
    cws_msg *stack[64];
    cws_msg **plain = k <= 64 ? stack : malloc(k * sizeof *plain);
    if (!plain) {
        cws_conn_finish(l, c);
        return -1;
    }
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < k; i++) {
        plain[i] = c->q[(c->qhead + first + i) & (c->qcap - 1)].msg;
        bytes += plain[i]->len;
    }
    c->qcount = first;
    c->qbytes -= bytes;
    uint8_t gather[CWS_TLS_RECORD];
    size_t gathered = 0;
    int rc = 0;
    for (uint32_t i = 0; i <= k && rc == 0; i++) {
        const cws_msg *m = i < k ? plain[i] : NULL;
        if (gathered && (!m || m->len > CWS_TLS_GATHER_MAX || gathered + m->len > sizeof gather)) {
            if (cws_tls_write(l, t, gather, gathered) < 0) rc = -1;
            else if (l->tls_out.len >= CWS_TLS_COMMIT_BYTES && cws_tls_commit(l, c) < 0) rc = -1;
            gathered = 0;
        }
        if (!m || rc) continue;
        if (m->len <= CWS_TLS_GATHER_MAX) {
            memcpy(gather + gathered, m->data, m->len);
            gathered += m->len;
        } else {
            for (size_t off = 0; off < m->len && rc == 0; off += CWS_TLS_COMMIT_BYTES) {
                size_t n = m->len - off < CWS_TLS_COMMIT_BYTES ? m->len - off : CWS_TLS_COMMIT_BYTES;
                if (cws_tls_write(l, t, m->data + off, n) < 0) rc = -1;
                else if (l->tls_out.len >= CWS_TLS_COMMIT_BYTES && cws_tls_commit(l, c) < 0) rc = -1;
            }
        }
    }
    if (rc == 0 && cws_tls_commit(l, c) < 0) rc = -1;
    for (uint32_t i = 0; i < k; i++) cws_msg_release(plain[i]);
    if (plain != stack) free(plain);
    if (rc < 0) {
        cws_tls_fail(l, c, "encryption failed");
        return -1;
    }
    return 0;
}

int cws_tls_close_notify(cws_loop *l, cws_conn *c) {
    cws_tls_conn *t = c->tls;
    if (!t || t->notified || !t->handshaken) return 0;
    t->notified = 1;
    if (t->kernel_tx == 1) {
        /* The queue is written: the alert goes now, sealed by the kernel. */
        if (cws_tls_tx_kernel_close_notify(c->fd) < 0) {
            char peer[64];
            cws_format_peer(c->fd, peer, sizeof peer);
            cws_log(l, CWS_LOG_DEBUG, "TLS close_notify to %s not sent: %s", peer, strerror(errno));
        }
        return 0;
    }
    static const uint8_t close_notify[2] = { 1, 0 }; /* warning, close_notify */
    if (t->kernel_tx == 2) {
        if (cws_tls_tx_seal(t->tx, &l->tls_out, 21, close_notify, sizeof close_notify) < 0) return 0;
    } else {
        SSL_shutdown(t->ssl); /* writes close_notify; the peer's is not waited for here */
        ERR_clear_error();
    }
    return cws_tls_commit(l, c) == 0 && c->qcount;
}

/* ---- input ------------------------------------------------------------------ */

/* A key update the peer asked for must be answered before our next record,
 * and the kernel cannot send one: the session ends. 1 if it did. */
static int cws_tls_key_update_refused(cws_loop *l, cws_conn *c) {
    cws_tls_conn *t = c->tls;
    if (!t->kernel_tx || (!t->refused_write && SSL_get_key_update_type(t->ssl) == SSL_KEY_UPDATE_NONE)) return 0;
    char peer[64];
    cws_format_peer(c->fd, peer, sizeof peer);
    cws_log(l, CWS_LOG_DEBUG, "TLS from %s asked for a key update, which kernel TLS cannot send: closing", peer);
    ERR_clear_error();
    l->tls_out.len = 0;
    cws_conn_finish(l, c);
    return 1;
}

void cws_tls_input(cws_loop *l, cws_conn *c, uint8_t *data, size_t len) {
    cws_tls_conn *t = c->tls;
    /* After a failure (a fatal alert on its way, or a failed connection's
     * close) nothing the peer sends is looked at, as on a plain connection. */
    if (c->state == CWS_CONN_DRAINING || c->state == CWS_CONN_DEAD || (c->flags & CWS_CF_READ_DONE)) return;
    t->in = data;
    t->in_len = len;
    if (!t->handshaken) {
        int rc = SSL_do_handshake(t->ssl);
        if (rc != 1) {
            int e = SSL_get_error(t->ssl, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                t->in_len = 0;
                if (cws_tls_commit(l, c) < 0) cws_conn_finish(l, c);
                return;
            }
            t->in_len = 0;
            cws_tls_fail(l, c, "handshake failed");
            return;
        }
        t->handshaken = 1;
        CWS_STAT_ADD(l, tls_handshakes, 1);
        cws_tls_ids_release(t->ids); /* SNI is done; a reload may free the old set */
        t->ids = NULL;
        if (cws_tls_commit(l, c) < 0) {
            cws_conn_finish(l, c);
            return;
        }
        if (t->offload) cws_tls_hand_off(l, c);
    }
    /* One record's plaintext at a time, all of what this read brought. */
    uint8_t plain[CWS_TLS_RECORD];
    for (;;) {
        int n = SSL_read(t->ssl, plain, (int)sizeof plain);
        if (n > 0) {
            cws_conn_plaintext(l, c, plain, (size_t)n);
            if (c->state == CWS_CONN_DEAD || c->state == CWS_CONN_DRAINING) break;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        t->in_len = 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: the peer is done. Before its WebSocket close
             * (or mid-message) this is an abnormal end, 1006, like a FIN. */
            if (c->state == CWS_CONN_OPEN) {
                char peer[64];
                cws_format_peer(c->fd, peer, sizeof peer);
                cws_log(l, CWS_LOG_DEBUG, "TLS close_notify from %s before the WebSocket close", peer);
            }
            ERR_clear_error();
            cws_conn_eof(l, c, 0);
            return;
        }
        if (!cws_tls_key_update_refused(l, c)) cws_tls_fail(l, c, "record layer failed");
        return;
    }
    t->in_len = 0;
    if (cws_tls_key_update_refused(l, c)) return;
    /* What reading wrote (a key update's answer) goes out before any reply. */
    if (c->state != CWS_CONN_DEAD && cws_tls_commit(l, c) < 0) cws_conn_finish(l, c);
}

void cws_tls_timed_out(cws_loop *l, cws_conn *c) {
    if (!c->tls || c->tls->handshaken) return;
    char peer[64];
    cws_format_peer(c->fd, peer, sizeof peer);
    cws_log(l, CWS_LOG_DEBUG, "TLS handshake from %s timed out", peer);
    CWS_STAT_ADD(l, tls_handshakes_failed, 1);
}

void cws_tls_truncated(cws_loop *l, cws_conn *c) {
    if (!c->tls || !c->tls->handshaken || c->state != CWS_CONN_OPEN) return;
    char peer[64];
    cws_format_peer(c->fd, peer, sizeof peer);
    cws_log(l, CWS_LOG_DEBUG, "TLS stream from %s ended without close_notify", peer);
}

void cws_log(cws_loop *l, int level, const char *fmt, ...) {
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (!cb->on_log) return;
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    cb->on_log(cb->ctx, level, line);
}
