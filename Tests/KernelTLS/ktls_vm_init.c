/*
 * The kernel TLS check, as the /init of a small VM (scripts/ktls-vm boots it
 * under KVM on Debian's kernel, which has the tls module): loads the module
 * and the kernel's AEADs, brings up loopback, then for each backend runs the
 * C engine with kernel_offload = 1 and a TLS 1.3 client in this process, per
 * suite: echoes across record sizes, the close handshake and close_notify
 * (sent by the kernel through a control message), and the engine's count of
 * sessions handed over. Prints "ktls-vm: PASS" or "ktls-vm: FAIL ..." and
 * powers off. Built statically against the engine's C sources.
 */
#include <cwebsocket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static cws_server *server;
static int failures;

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("ktls-vm: FAIL ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    failures++;
}

static void on_request(void *ctx, cws_request *req, const cws_http_request *http, const cws_upgrade_info *up) {
    (void)ctx;
    (void)http;
    if (up) cws_request_accept(req, NULL, NULL);
}

static void on_message(void *ctx, cws_conn_id id, void *user, uint8_t opcode, const void *data, size_t len) {
    (void)ctx;
    (void)user;
    cws_send(server, id, opcode, data, len);
}

static void on_log(void *ctx, int level, const char *message) {
    (void)ctx;
    (void)level;
    printf("ktls-vm: engine: %s\n", message);
}

static void load_module(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0)
        if (errno != EEXIST) printf("ktls-vm: module %s: %s\n", path, strerror(errno));
    if (fd >= 0) close(fd);
}

static void loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
}

static int ssl_write_all(SSL *ssl, const void *data, size_t len) {
    size_t done = 0;
    while (done < len) {
        int n = SSL_write(ssl, (const char *)data + done, (int)(len - done));
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

static int ssl_read_exact(SSL *ssl, uint8_t *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        int n = SSL_read(ssl, buf + done, (int)(len - done));
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

/* One masked client frame. */
static int send_frame(SSL *ssl, uint8_t opcode, const uint8_t *payload, size_t len) {
    uint8_t head[14];
    size_t n = 0;
    head[n++] = 0x80 | opcode;
    if (len < 126) {
        head[n++] = 0x80 | (uint8_t)len;
    } else if (len < 65536) {
        head[n++] = 0x80 | 126;
        head[n++] = (uint8_t)(len >> 8);
        head[n++] = (uint8_t)len;
    } else {
        head[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) head[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    static const uint8_t mask[4] = { 0x11, 0x22, 0x33, 0x44 };
    memcpy(head + n, mask, 4);
    n += 4;
    uint8_t *masked = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++) masked[i] = payload[i] ^ mask[i & 3];
    int rc = ssl_write_all(ssl, head, n) == 0 && ssl_write_all(ssl, masked, len) == 0 ? 0 : -1;
    free(masked);
    return rc;
}

/* One unmasked server frame: opcode, payload (malloc'd), length. */
static int read_frame(SSL *ssl, uint8_t *opcode, uint8_t **payload, size_t *len) {
    uint8_t h[2];
    if (ssl_read_exact(ssl, h, 2) < 0) return -1;
    *opcode = h[0] & 0x0F;
    uint64_t n = h[1] & 0x7F;
    uint8_t ext[8];
    if (n == 126) {
        if (ssl_read_exact(ssl, ext, 2) < 0) return -1;
        n = (uint64_t)ext[0] << 8 | ext[1];
    } else if (n == 127) {
        if (ssl_read_exact(ssl, ext, 8) < 0) return -1;
        n = 0;
        for (int i = 0; i < 8; i++) n = n << 8 | ext[i];
    }
    *payload = malloc(n ? n : 1);
    *len = n;
    return ssl_read_exact(ssl, *payload, n);
}

static void check_session(uint16_t port, const char *suite) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_ciphersuites(ctx, suite);
    SSL_CTX_load_verify_locations(ctx, "/certs/ca.pem", NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    /* No socket timeout (the VM has one): on 6.1 the thread that destroyed an
     * io_uring server then sees one interruption, which a call without a
     * timeout restarts and one with a timeout fails with EINTR. */
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    SSL_set_fd(ssl, fd);
    int connected = connect(fd, (struct sockaddr *)&a, sizeof a) == 0, rc = 0;
    if (!connected && errno == EINTR) {
        /* Interrupted all the same: the connect goes on; wait for it. */
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int error = 0;
        socklen_t error_len = sizeof error;
        connected = poll(&p, 1, 10000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_len) == 0 && !error;
    }
    /* A socket with a timeout is not restarted after a signal: try again. */
    while (connected && (rc = SSL_connect(ssl)) != 1 && SSL_get_error(ssl, rc) == SSL_ERROR_SYSCALL && errno == EINTR) {}
    if (!connected || rc != 1) {
        char why[200] = "";
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
        fail("%s: handshake: %s (errno %s)", suite, why, strerror(errno));
        goto out;
    }
    static const char upgrade[] = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    char head[512] = "";
    size_t got = 0;
    if (ssl_write_all(ssl, upgrade, sizeof upgrade - 1) < 0) {
        fail("%s: upgrade not sent", suite);
        goto out;
    }
    while (got < sizeof head - 1 && !strstr(head, "\r\n\r\n")) {
        if (SSL_read(ssl, head + got, 1) != 1) break;
        head[++got] = 0;
    }
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        fail("%s: no 101 (%s)", suite, head);
        goto out;
    }
    static const size_t sizes[] = { 0, 5, 125, 16383, 16384, 16385, 65536, 1 << 20 };
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t len = sizes[s];
        uint8_t *payload = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) payload[i] = (uint8_t)(i * 31 + len);
        uint8_t opcode, *echo = NULL;
        size_t echo_len = 0;
        int sent = send_frame(ssl, 2, payload, len), read = sent < 0 ? -1 : read_frame(ssl, &opcode, &echo, &echo_len);
        if (sent < 0 || read < 0 || opcode != 2 || echo_len != len || memcmp(echo, payload, len) != 0) {
            char why[200] = "";
            ERR_error_string_n(ERR_get_error(), why, sizeof why);
            fail("%s: echo of %zu bytes (sent %d, read %d, got %zu bytes, opcode %d: %s, errno %s)", suite, len, sent,
                 read, echo_len, read < 0 ? -1 : opcode, why, strerror(errno));
            if (read == 0 && opcode == 8 && echo_len >= 2)
                printf("ktls-vm: the server closed %u: %.*s\n", echo[0] << 8 | echo[1], (int)echo_len - 2, echo + 2);
            if (read < 0) break;
        }
        free(payload);
        free(echo);
    }
    uint8_t code[2] = { 0x03, 0xE8 };
    uint8_t opcode, *reply = NULL;
    size_t reply_len = 0;
    if (send_frame(ssl, 8, code, 2) < 0 || read_frame(ssl, &opcode, &reply, &reply_len) < 0 || opcode != 8)
        fail("%s: close handshake", suite);
    free(reply);
    char rest[16];
    int n = SSL_read(ssl, rest, sizeof rest);
    if (n > 0 || SSL_get_error(ssl, n) != SSL_ERROR_ZERO_RETURN) fail("%s: no close_notify from the kernel", suite);
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
}

static void check_backend(const char *name, uint8_t backend) {
    cws_server_config cfg;
    cws_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.loops = 1;
    cfg.backend = backend;
    cfg.max_message_size = 4 << 20;
    cfg.callbacks.on_request = on_request;
    cfg.callbacks.on_message = on_message;
    cfg.callbacks.on_log = on_log;
    cws_tls_identity identity = { .certificate_chain_file = "/certs/server.pem", .private_key_file = "/certs/server.key" };
    cws_tls_config tls = { .identities = &identity, .identity_count = 1, .kernel_offload = 1 };
    cfg.tls = &tls;
    char err[256];
    server = cws_server_create(&cfg, err, sizeof err);
    if (!server || cws_server_start(server) != 0) {
        fail("%s: server: %s", name, server ? "start failed" : err);
        return;
    }
    printf("ktls-vm: %s backend: %s\n", name, cws_server_backend_name(server));
    static const char *suites[] = { "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256" };
    for (int i = 0; i < 3; i++) {
        int before = failures;
        check_session(cws_server_port(server), suites[i]);
        printf("ktls-vm: %s %s: %s\n", name, suites[i], failures == before ? "ok" : "failed");
    }
    cws_server_stats st;
    cws_server_get_stats(server, &st);
    if (st.tls_kernel_offloads != 3) fail("%s: %llu sessions handed to the kernel, not 3", name,
                                          (unsigned long long)st.tls_kernel_offloads);
    cws_server_stop(server, 500);
    cws_server_destroy(server);
}

int main(void) {
    mount("proc", "/proc", "proc", 0, NULL);
    static const char *modules[] = { "gf128mul", "ghash-generic", "ctr", "gcm", "libchacha", "chacha_generic",
                                     "libpoly1305", "poly1305_generic", "chacha20poly1305", "tls" };
    for (size_t i = 0; i < sizeof modules / sizeof *modules; i++) {
        char path[128];
        snprintf(path, sizeof path, "/modules/%s.ko", modules[i]);
        load_module(path);
    }
    loopback_up();
    printf("ktls-vm: kernel TLS available: %s\n", cws_tls_kernel_offload_available() ? "yes" : "no");
    if (!cws_tls_kernel_offload_available()) fail("no tls ULP after loading the module");
    check_backend("uring", CWS_BACKEND_URING);
    check_backend("epoll", CWS_BACKEND_EPOLL);
    printf(failures ? "ktls-vm: FAILED (%d)\n" : "ktls-vm: PASS\n", failures);
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
