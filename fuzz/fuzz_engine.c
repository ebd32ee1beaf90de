/*
 * The engine, through its public C API only: one server on 127.0.0.1 (port
 * 0, one loop, permessage-deflate on, backend from CWS_BACKEND=uring|epoll)
 * lives for the whole run; each input is one client connection that sends a
 * handshake and then fuzz-derived frames, and goes away in a way the input
 * picks. The server echoes every message (and closes on "!close"), so
 * reading, reassembly, inflate, UTF-8, control frames, sending, deflate and
 * both close paths in engine*.c all run under the coverage-guided fuzzer.
 *
 * What is checked: the 101 response and its Sec-WebSocket-Accept, everything
 * the server sends parses as valid server frames (nothing after its close
 * frame, a valid close payload), and every opened connection is closed
 * (on_close) soon after the client is gone. Every wait is bounded.
 *
 * Input: [flags][offer][frames script...]: see run_script.
 */
#include "fuzz_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static cws_server *server;
static uint16_t port;
/* Opens and closes by the client's port (atomics, written on the loop
 * thread): an input's connection is told apart from an earlier one whose
 * open the server ran late (a raw input that never waited for its 101). */
static int opened[65536], closed[65536];

/* The peer's port, kept as the connection's user pointer (+1: never NULL). */
static void on_request(void *ctx, cws_request *req, const cws_http_request *http, const cws_upgrade_info *up) {
    if (up) {
        const char *remote = cws_request_remote(req), *colon = strrchr(remote, ':');
        unsigned long peer = colon ? strtoul(colon + 1, NULL, 10) : 0;
        cws_request_accept(req, NULL, (void *)(uintptr_t)((peer & 0xFFFF) + 1));
    } else {
        cws_request_respond(req, 404, "text/plain", NULL, "no", 2);
    }
}
static void on_open(void *ctx, cws_conn_id id, void *user) {
    __atomic_add_fetch(&opened[((uintptr_t)user - 1) & 0xFFFF], 1, __ATOMIC_SEQ_CST);
}
static void on_message(void *ctx, cws_conn_id id, void *user, uint8_t opcode, const void *data, size_t len) {
    if (len >= 6 && memcmp(data, "!close", 6) == 0) {
        cws_close(server, id, 4000, "asked", 5);
        return;
    }
    cws_send(server, id, opcode, data, len);
}
static void on_close(void *ctx, cws_conn_id id, void *user, uint16_t code, const void *reason, size_t len) {
    FZ_CHECK(code == 1005 || code == 1006 || cws_close_code_valid(code), "on_close with code %u", code);
    __atomic_add_fetch(&closed[((uintptr_t)user - 1) & 0xFFFF], 1, __ATOMIC_SEQ_CST);
}

static void start_server(void) {
    cws_server_config cfg;
    cws_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.loops = 1;
    cfg.handshake_timeout_ms = 2000;
    cfg.close_timeout_ms = 300;
    cfg.idle_timeout_ms = 0;
    cfg.max_message_size = 256 * 1024; /* small, so 1009 paths are reachable */
    cfg.callbacks.on_request = on_request;
    cfg.callbacks.on_open = on_open;
    cfg.callbacks.on_message = on_message;
    cfg.callbacks.on_close = on_close;
    cfg.deflate.enabled = 1;
    cfg.deflate.min_size = 16;
    char err[256] = "";
    server = cws_server_create(&cfg, err, sizeof err);
    FZ_CHECK(server != NULL, "cws_server_create: %s", err);
    FZ_CHECK(cws_server_start(server) == 0, "cws_server_start");
    port = cws_server_port(server);
    fprintf(stderr, "fuzz_engine: server on 127.0.0.1:%u, backend %s\n", port, cws_server_backend_name(server));
}

static uint64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* What the server sent, checked as a client-role frame stream. */
typedef struct server_stream {
    uint8_t *buf;
    size_t len, cap;
    size_t head_end; /* 0 until the response head's blank line was seen */
    int upgraded;    /* that head was a 101: frames follow */
    cws_parser parser;
    int saw_close, failed;
} server_stream;

static void stream_push(server_stream *s, const uint8_t *p, size_t n) {
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
        if (!s->buf) abort();
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

/* Parses frames after the head; bytes already parsed are dropped. */
static void stream_parse(server_stream *s) {
    if (!s->upgraded) return;
    size_t pos = s->head_end;
    while (pos < s->len && !s->failed) {
        size_t used = 0;
        cws_frame_event ev;
        int rc = cws_parse(&s->parser, s->buf + pos, s->len - pos, &used, &ev);
        FZ_CHECK(rc >= 0, "the server sent an invalid frame (%d)", rc);
        pos += used;
        if (rc == CWS_PARSE_NEED_MORE) break;
        if (ev.frame_start) FZ_CHECK(!s->saw_close, "the server sent a frame after its close frame");
        if (ev.message_opcode == CWS_OP_CLOSE && ev.frame_start) {
            uint16_t code;
            const uint8_t *reason;
            size_t rl;
            /* (A close frame split across reads is not checked: rare, and
             * control payloads are small.) */
            if (ev.frame_end)
                FZ_CHECK(cws_close_payload_parse(ev.payload, ev.payload_len, &code, &reason, &rl) == 0,
                         "the server's close payload is invalid");
            s->saw_close = 1;
        }
    }
    /* Keep only the unparsed rest (a partial frame stays in the parser). */
    memmove(s->buf + s->head_end, s->buf + pos, s->len - pos);
    s->len = s->head_end + (s->len - pos);
}

static void stream_read(server_stream *s, int fd, int *eof) {
    uint8_t tmp[65536];
    for (;;) {
        ssize_t n = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n > 0) {
            stream_push(s, tmp, (size_t)n);
            if (!s->head_end) {
                uint8_t *e = memmem(s->buf, s->len, "\r\n\r\n", 4);
                if (e) {
                    s->head_end = (size_t)(e - s->buf) + 4;
                    s->upgraded = memcmp(s->buf, "HTTP/1.1 101 ", 13) == 0;
                }
            }
            stream_parse(s);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) *eof = 1;
        return;
    }
}

/* Sends everything (or until the server goes away), reading what comes back
 * so an echo never blocks both sides. */
static void send_all(int fd, const uint8_t *p, size_t n, server_stream *s, int *eof, uint64_t deadline) {
    while (n && !*eof && now_ms() < deadline) {
        struct pollfd pf = {fd, POLLIN | POLLOUT, 0};
        if (poll(&pf, 1, 50) <= 0) continue;
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) stream_read(s, fd, eof);
        if (pf.revents & POLLOUT) {
            ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                p += w;
                n -= (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                return; /* the server closed: what it sent is still to be read */
            }
        }
    }
}

static void drain(int fd, server_stream *s, int *eof, uint64_t deadline) {
    while (!*eof && now_ms() < deadline) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 50) > 0) stream_read(s, fd, eof);
    }
}

/* Compresses a payload as a permessage-deflate sender would (raw DEFLATE,
 * sync flush, tail stripped), with plain zlib so the engine's inflater meets
 * a compressor other than its own. */
static size_t deflate_payload(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int bits) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, -(bits < 9 ? 9 : bits), 8, Z_DEFAULT_STRATEGY) != Z_OK) return 0;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_SYNC_FLUSH);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_OK || len < 4) return 0;
    return len - 4;
}

/*
 * The script after the two flag bytes, one frame per entry:
 *   [op] bits 0-3 opcode (any, invalid ones too), bit 4 not-FIN, bit 5 RSV1,
 *        bit 6 compress the payload (and set RSV1), bit 7 a large payload;
 *   [len] payload length (large: len * 257 bytes, the data repeated);
 *   [payload bytes...]
 * Every frame is masked with a key that changes per frame.
 */
static size_t build_frames(fz_reader *r, uint8_t *out, size_t cap, int bits) {
    size_t o = 0;
    uint32_t key = 0x9E3779B9;
    uint8_t *plain = malloc(70000), *comp = malloc(80000);
    if (!plain || !comp) abort();
    while (r->len >= 2) {
        uint8_t op = fz_u8(r), ln = fz_u8(r);
        size_t n = ln < r->len ? ln : r->len;
        size_t plen = n;
        if (n) memcpy(plain, r->p, n);
        r->p += n;
        r->len -= n;
        if ((op & 0x80) && n) {
            plen = (size_t)ln * 257;
            if (plen > 65000) plen = 65000;
            for (size_t i = n; i < plen; i++) plain[i] = plain[i % n];
        }
        const uint8_t *payload = plain;
        uint8_t rsv = (op & 0x20) ? CWS_RSV1 : 0;
        if (op & 0x40) {
            size_t c = deflate_payload(plain, plen, comp, 80000, bits);
            if (c || !plen) {
                payload = comp;
                plen = c;
                rsv = CWS_RSV1;
            }
        }
        if (o + CWS_MAX_HEADER_SIZE + plen > cap) break;
        key = key * 1664525u + 1013904223u;
        o += cws_frame_encode(out + o, !(op & 0x10), rsv, op & 0xF, payload, plen, 1, key);
    }
    free(plain);
    free(comp);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!server) start_server();
    fz_reader r = {data, size};
    uint8_t flags = fz_u8(&r), offer = fz_u8(&r);
    int raw = (flags & 3) == 3;   /* the input is the whole byte stream, head included */
    int ending = (flags >> 2) & 3; /* 0: FIN, 1: close frame then FIN, 2: RST, 3: close frame, wait */
    int bits = 9 + (offer & 7) % 7;

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_CHECK(fd >= 0, "socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Non-blocking from the start: libFuzzer's timer signals interrupt
     * blocking calls (a blocking connect then fails with EINTR). */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        FZ_CHECK(errno == EINPROGRESS || errno == EINTR, "connect: %s", strerror(errno));
        uint64_t until = now_ms() + 5000;
        struct pollfd pf = {fd, POLLOUT, 0};
        while (poll(&pf, 1, 50) <= 0 && now_ms() < until) {
        }
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        FZ_CHECK((pf.revents & POLLOUT) && err == 0, "connect: %s", strerror(err));
    }

    struct sockaddr_in local;
    socklen_t local_len = sizeof local;
    FZ_CHECK(getsockname(fd, (struct sockaddr *)&local, &local_len) == 0, "getsockname");
    unsigned lp = ntohs(local.sin_port);
    /* A port used again: what counted for its last connection is over. */
    __atomic_store_n(&opened[lp], 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&closed[lp], 0, __ATOMIC_SEQ_CST);
    server_stream s = {0};
    cws_parser_init(&s.parser, CWS_ROLE_CLIENT, 0);
    int eof = 0;
    uint64_t deadline = now_ms() + 5000;
    int accepted = 0;

    if (raw) {
        send_all(fd, r.p, r.len, &s, &eof, deadline);
    } else {
        char head[512];
        static const char *offers[] = {
            "",
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
        };
        int hl = snprintf(head, sizeof head,
                          "GET /fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                          offers[(offer >> 3) % 6]);
        send_all(fd, (const uint8_t *)head, (size_t)hl, &s, &eof, deadline);
        while (!s.head_end && !eof && now_ms() < deadline) {
            struct pollfd pf = {fd, POLLIN, 0};
            if (poll(&pf, 1, 50) > 0) stream_read(&s, fd, &eof);
        }
        FZ_CHECK(s.head_end, "no 101 response");
        FZ_CHECK(memcmp(s.buf, "HTTP/1.1 101 ", 13) == 0, "not a 101: %.40s", s.buf);
        FZ_CHECK(memmem(s.buf, s.head_end, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", 54) != NULL,
                 "wrong Sec-WebSocket-Accept");
        int deflate = memmem(s.buf, s.head_end, "permessage-deflate", 18) != NULL;
        FZ_CHECK(deflate == ((offer >> 3) % 6 != 0), "permessage-deflate answer");
        if (deflate) s.parser.rsv_allowed = CWS_RSV1;
        accepted = 1;
        stream_parse(&s);

        size_t cap = 4 * size + 70000 * 4;
        uint8_t *frames = malloc(cap);
        if (!frames) abort();
        size_t n = build_frames(&r, frames, cap, bits);
        if (ending == 1 || ending == 3) {
            static const uint8_t bye[] = {0x03, 0xE8, 'b', 'y', 'e'};
            n += cws_frame_encode(frames + n, 1, 0, CWS_OP_CLOSE, bye, sizeof bye, 1, 0x01020304);
        }
        send_all(fd, frames, n, &s, &eof, deadline);
        free(frames);
    }

    if (ending == 2) {
        struct linger l = {1, 0}; /* close() sends RST */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    } else {
        /* Without a close frame to answer (raw input), waiting without a
         * FIN would only wait out the handshake timeout. */
        if (ending != 3 || raw) shutdown(fd, SHUT_WR);
        drain(fd, &s, &eof, deadline);
        FZ_CHECK(eof, "the server kept the connection open for 5 s after the client was done");
    }
    uint64_t t_eof = now_ms();
    close(fd);
    free(s.buf);

    /* This input's connection, if the server opened it, is closed again,
     * soon. The 101 can be on the wire before on_open has run (epoll writes
     * it from inside cws_request_accept), so an accepted connection is first
     * waited for. */
    uint64_t close_deadline = now_ms() + 10000;
    while ((__atomic_load_n(&closed[lp], __ATOMIC_SEQ_CST) != __atomic_load_n(&opened[lp], __ATOMIC_SEQ_CST) ||
            (accepted && __atomic_load_n(&opened[lp], __ATOMIC_SEQ_CST) == 0)) &&
           now_ms() < close_deadline) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    int o = __atomic_load_n(&opened[lp], __ATOMIC_SEQ_CST), c = __atomic_load_n(&closed[lp], __ATOMIC_SEQ_CST);
    /* FUZZ_ENGINE_TRACE=1: show inputs that take long (exec/s is what
     * coverage-guided fuzzing of the engine lives on). */
    if (getenv("FUZZ_ENGINE_TRACE") && now_ms() - (deadline - 5000) > 500) {
        fprintf(stderr, "slow: start->eof %llu ms, eof->closed %llu ms, input:", (unsigned long long)(t_eof - (deadline - 5000)),
                (unsigned long long)(now_ms() - t_eof));
        for (size_t i = 0; i < size && i < 64; i++) fprintf(stderr, " %02x", data[i]);
        fprintf(stderr, "\n");
    }
    FZ_CHECK(o == c, "%d connections opened, %d closed, 10 s after the client went away", o, c);
    FZ_CHECK(o <= 1, "%d connections opened for one client socket", o);
    if (accepted) FZ_CHECK(o == 1, "the upgrade did not open a connection");
    return 0;
}
