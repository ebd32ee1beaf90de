/*
 * Kernel TLS for sending (engine_tls.c hands over here): after a TLS 1.3
 * handshake, the server's application traffic keys go to the kernel (the
 * "tls" upper-layer protocol, TLS_TX), so what the backend writes is
 * plaintext and the kernel makes the records; reading stays with OpenSSL.
 *
 * The keys: OpenSSL gives the traffic secret to the key-log callback
 * (SERVER_TRAFFIC_SECRET_0); key and IV are HKDF-Expand-Label(secret, "key" /
 * "iv") with the suite's hash (RFC 8446, 7.1 and 7.3). Sessions that may hand
 * over get no tickets, so nothing was written under those keys before: the
 * record sequence starts at 0.
 *
 * The emulation (mode 2, for tests) takes the same keys and writes the
 * records the kernel would, in user space: a client that decrypts them checks
 * the derivation, the nonces and the sequence on a kernel without the module.
 */
#include "engine_internal.h"

#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

struct cws_tls_tx {
    const EVP_CIPHER *cipher;
    EVP_CIPHER_CTX *ctx;
    uint8_t key[32];
    uint8_t iv[12];
    uint64_t seq;
};

enum { CWS_TX_AES128, CWS_TX_AES256, CWS_TX_CHACHA };

static int cws_hex(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int cws_tls_tx_secret(const char *line, uint8_t secret[48], size_t *len) {
    static const char label[] = "SERVER_TRAFFIC_SECRET_0 ";
    if (strncmp(line, label, sizeof label - 1) != 0) return 0;
    const char *p = strchr(line + sizeof label - 1, ' '); /* past the client random */
    if (!p) return 0;
    size_t n = 0;
    for (p++; p[0] && p[1] && n < 48; p += 2) {
        int hi = cws_hex(p[0]), lo = cws_hex(p[1]);
        if (hi < 0 || lo < 0) break;
        secret[n++] = (uint8_t)(hi << 4 | lo);
    }
    *len = n;
    return n == 32 || n == 48;
}

/* HKDF-Expand-Label(secret, label, "", out_len) of TLS 1.3. */
static int cws_expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len, const char *label,
                            uint8_t *out, size_t out_len) {
    uint8_t info[2 + 1 + 6 + 16 + 1];
    size_t label_len = strlen(label), n = 0;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + label_len);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, label_len);
    n += label_len;
    info[n++] = 0; /* no context */
    EVP_PKEY_CTX *k = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t got = out_len;
    int ok = k && EVP_PKEY_derive_init(k) > 0 && EVP_PKEY_CTX_set_hkdf_mode(k, EVP_PKEY_HKDEF_MODE_EXPAND_ONLY) > 0 &&
             EVP_PKEY_CTX_set_hkdf_md(k, md) > 0 && EVP_PKEY_CTX_set1_hkdf_key(k, secret, (int)secret_len) > 0 &&
             EVP_PKEY_CTX_add1_hkdf_info(k, info, (int)n) > 0 && EVP_PKEY_derive(k, out, &got) > 0 && got == out_len;
    EVP_PKEY_CTX_free(k);
    return ok;
}

/* The kernel's TLS_TX parameters for this suite; its length, or 0. */
static socklen_t cws_kernel_crypto_info(int suite, const struct cws_tls_tx *keys, void *out) {
    switch (suite) {
    case CWS_TX_AES128: {
        struct tls12_crypto_info_aes_gcm_128 *i = out;
        memset(i, 0, sizeof *i);
        i->info.version = TLS_1_3_VERSION;
        i->info.cipher_type = TLS_CIPHER_AES_GCM_128;
        memcpy(i->key, keys->key, sizeof i->key);
        memcpy(i->salt, keys->iv, sizeof i->salt); /* the IV's first 4 bytes, then 8 */
        memcpy(i->iv, keys->iv + sizeof i->salt, sizeof i->iv);
        return sizeof *i;
    }
    case CWS_TX_AES256: {
        struct tls12_crypto_info_aes_gcm_256 *i = out;
        memset(i, 0, sizeof *i);
        i->info.version = TLS_1_3_VERSION;
        i->info.cipher_type = TLS_CIPHER_AES_GCM_256;
        memcpy(i->key, keys->key, sizeof i->key);
        memcpy(i->salt, keys->iv, sizeof i->salt);
        memcpy(i->iv, keys->iv + sizeof i->salt, sizeof i->iv);
        return sizeof *i;
    }
#ifdef TLS_CIPHER_CHACHA20_POLY1305
    case CWS_TX_CHACHA: {
        struct tls12_crypto_info_chacha20_poly1305 *i = out;
        memset(i, 0, sizeof *i);
        i->info.version = TLS_1_3_VERSION;
        i->info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
        memcpy(i->key, keys->key, sizeof i->key);
        memcpy(i->iv, keys->iv, sizeof i->iv);
        return sizeof *i;
    }
#endif
    default:
        return 0;
    }
}

int cws_tls_tx_start(int fd, SSL *ssl, const uint8_t *secret, size_t secret_len, int mode, cws_tls_tx **emulation,
                     char *why, size_t cap) {
    *emulation = NULL;
    if (SSL_version(ssl) != TLS1_3_VERSION) {
        snprintf(why, cap, "%s, not TLS 1.3", SSL_get_version(ssl));
        return -1;
    }
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    uint32_t id = c ? SSL_CIPHER_get_id(c) & 0xFFFF : 0;
    int suite;
    const EVP_MD *md;
    const EVP_CIPHER *cipher;
    size_t key_len;
    switch (id) {
    case 0x1301: suite = CWS_TX_AES128; md = EVP_sha256(); cipher = EVP_aes_128_gcm(); key_len = 16; break;
    case 0x1302: suite = CWS_TX_AES256; md = EVP_sha384(); cipher = EVP_aes_256_gcm(); key_len = 32; break;
    case 0x1303: suite = CWS_TX_CHACHA; md = EVP_sha256(); cipher = EVP_chacha20_poly1305(); key_len = 32; break;
    default:
        snprintf(why, cap, "suite %s", c ? SSL_CIPHER_get_name(c) : "unknown");
        return -1;
    }
    if (secret_len != (size_t)EVP_MD_get_size(md)) {
        snprintf(why, cap, "no traffic secret from OpenSSL's key log");
        return -1;
    }
    struct cws_tls_tx keys = { .cipher = cipher };
    if (!cws_expand_label(md, secret, secret_len, "key", keys.key, key_len) ||
        !cws_expand_label(md, secret, secret_len, "iv", keys.iv, sizeof keys.iv)) {
        snprintf(why, cap, "key derivation failed");
        return -1;
    }
    int rc = -1;
    if (mode == 2) {
        struct cws_tls_tx *tx = calloc(1, sizeof *tx);
        EVP_CIPHER_CTX *ctx = tx ? EVP_CIPHER_CTX_new() : NULL;
        if (ctx) {
            tx->cipher = cipher;
            tx->ctx = ctx;
            memcpy(tx->key, keys.key, sizeof keys.key);
            memcpy(tx->iv, keys.iv, sizeof keys.iv);
            *emulation = tx;
            rc = 0;
        } else {
            free(tx);
            snprintf(why, cap, "out of memory");
        }
    } else {
        union {
            struct tls12_crypto_info_aes_gcm_128 a;
            struct tls12_crypto_info_aes_gcm_256 b;
#ifdef TLS_CIPHER_CHACHA20_POLY1305
            struct tls12_crypto_info_chacha20_poly1305 c;
#endif
        } info;
        socklen_t len = cws_kernel_crypto_info(suite, &keys, &info);
        if (!len) {
            snprintf(why, cap, "suite not known to this kernel's headers");
        } else if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof "tls") < 0) {
            snprintf(why, cap, "TCP_ULP tls: %s", strerror(errno));
        } else if (setsockopt(fd, SOL_TLS, TLS_TX, &info, len) < 0) {
            snprintf(why, cap, "TLS_TX: %s", strerror(errno));
        } else {
            rc = 0;
        }
        OPENSSL_cleanse(&info, sizeof info);
    }
    OPENSSL_cleanse(&keys, sizeof keys);
    return rc;
}

int cws_tls_tx_seal(cws_tls_tx *tx, cws_buffer *out, uint8_t type, const uint8_t *data, size_t len) {
    size_t records = len / CWS_TLS_MAX_PLAINTEXT + 1;
    size_t need = out->len + len + records * (5 + 1 + 16);
    if (need > out->cap) {
        size_t cap = out->cap ? out->cap : 32768;
        while (cap < need) cap *= 2;
        uint8_t *grown = realloc(out->data, cap);
        if (!grown) return -1;
        out->data = grown;
        out->cap = cap;
    }
    do {
        size_t n = len < CWS_TLS_MAX_PLAINTEXT ? len : CWS_TLS_MAX_PLAINTEXT;
        size_t inner = n + 1 + 16; /* content type, tag */
        uint8_t *h = out->data + out->len;
        h[0] = 0x17; /* application_data outside; the real type inside */
        h[1] = 0x03;
        h[2] = 0x03;
        h[3] = (uint8_t)(inner >> 8);
        h[4] = (uint8_t)inner;
        uint8_t nonce[12];
        memcpy(nonce, tx->iv, sizeof nonce);
        for (int i = 0; i < 8; i++) nonce[11 - i] ^= (uint8_t)(tx->seq >> (8 * i));
        int got = 0, more = 0;
        uint8_t *body = h + 5;
        if (EVP_EncryptInit_ex(tx->ctx, tx->cipher, NULL, tx->key, nonce) != 1 ||
            EVP_EncryptUpdate(tx->ctx, NULL, &got, h, 5) != 1 ||
            (n && EVP_EncryptUpdate(tx->ctx, body, &got, data, (int)n) != 1) ||
            EVP_EncryptUpdate(tx->ctx, body + n, &more, &type, 1) != 1 ||
            EVP_EncryptFinal_ex(tx->ctx, body + n + 1, &more) != 1 ||
            EVP_CIPHER_CTX_ctrl(tx->ctx, EVP_CTRL_AEAD_GET_TAG, 16, body + n + 1) != 1)
            return -1;
        tx->seq++;
        out->len += 5 + inner;
        data += n;
        len -= n;
    } while (len);
    return 0;
}

int cws_tls_tx_kernel_close_notify(int fd) {
    /* An alert record: the type goes in a control message, the kernel seals it. */
    uint8_t alert[2] = { 1, 0 }; /* warning, close_notify */
    char control[CMSG_SPACE(sizeof(uint8_t))];
    struct iovec iov = { .iov_base = alert, .iov_len = sizeof alert };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_TLS;
    cm->cmsg_type = TLS_SET_RECORD_TYPE;
    cm->cmsg_len = CMSG_LEN(sizeof(uint8_t));
    *CMSG_DATA(cm) = 21; /* alert */
    return sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof alert ? 0 : -1;
}

void cws_tls_tx_free(cws_tls_tx *tx) {
    if (!tx) return;
    EVP_CIPHER_CTX_free(tx->ctx);
    OPENSSL_cleanse(tx, sizeof *tx);
    free(tx);
}
