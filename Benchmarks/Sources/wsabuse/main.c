/*
 * wsabuse: one hostile client and one canary against a loopback WebSocket
 * server, for issue 12 ("Hostile peers"): what one abusive connection does
 * to everyone else's latency and to the server's memory and descriptors.
 *
 *   wsabuse --url ws://127.0.0.1:PORT/PATH --abuse KIND [--duration S]
 *           [--interval-ms MS] [--canary-timeout-ms MS] [--count N]
 *           [--size BYTES] [--server-pid PID] [--fetch PATH] [--settle S]
 *
 * The canary sends the browser client's heartbeat envelope
 * ({"cmd":"_heartbeat"}, answered by the service without the handler; an echo
 * server echoes it) every --interval-ms and waits for the answer: round-trip
 * latencies go into p50/p99/max; an answer later than --canary-timeout-ms, or
 * a connection lost, is a failure (the canary reconnects and goes on).
 *
 * The abuser (one connection, same URL) does one of:
 *   none              nothing (the quiet baseline)
 *   ping-flood        125-byte pings as fast as the socket takes them, never reading
 *   ping-flood-empty  the same with empty pings
 *   envelope-flood    {"cmd":"leave","param":{"channel":"nope"}} (the chat answers
 *                     nothing), reading and discarding whatever comes back
 *   unknown-cmd       {"cmd":"no-such-command","param":{}} (the chat answers an error)
 *   unknown-cmd-big   the same with a cmd of --size bytes (default 1 MiB less the
 *                     envelope, so the message fits a 1 MiB limit), --count 10 by default
 *   bomb              permessage-deflate offered (and required): one text message of
 *                     --size bytes (default 16 MiB) of 'a', compressed once (~16 KB),
 *                     sent again and again, reading and discarding (the server needs --deflate)
 *   channels          join one channel with a 1 MB name, then 100,000 distinct ones
 *                     (c0, c1, ...), reading and discarding; then holds the connection
 * --count N stops sending after N messages (0: until the end; channels: the joins).
 *
 * Given --server-pid, samples the server's VmRSS every 100 ms (before anything
 * connects, peak, at the end of the abuse, and --settle seconds after both
 * clients closed) and counts /proc/PID/fd before and after. --fetch PATH:
 * at the end of the abuse (abuser still connected) GETs that page from the
 * same server and reports its size (the chat's admin overview: /admin/sockets).
 *
 * How the abuser ended: the close code and reason the server sent, "reset" or
 * "eof" (closed without a close frame), "open", with the failed write's error
 * in parentheses if one failed, and when it was seen (abuser_end_s, from the
 * abuser's upgrade). Flooders that never read look for the close frame at the
 * end, reading what was queued for them for at most 2 s (so their end is seen
 * only then).
 *
 * Output: a human summary on stderr and one line `RESULT {json}` on stdout.
 * Loopback (127.0.0.0/8) only; everything is bounded in time (at most
 * --duration + ~10 s); stops by itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_SECONDS 600.0
#define READ_CHUNK (256u << 10)

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("wsabuse: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

/* ----------------------------------------------------------------- options */

static struct {
    char host[64], path[1024];
    int port;
    const char *abuse;
    double duration, settle;
    double interval_ms, canary_timeout_ms;
    long long count;
    size_t size;
    int server_pid;
    const char *fetch;
} opt = {.duration = 10, .settle = 1, .interval_ms = 10, .canary_timeout_ms = 5000, .count = -1, .size = 0,
         .server_pid = 0, .abuse = "none"};

static const char *KINDS[] = {"none", "ping-flood", "ping-flood-empty", "envelope-flood", "unknown-cmd",
                              "unknown-cmd-big", "bomb", "channels", NULL};

static void usage(void) {
    fputs("usage: wsabuse --url ws://127.0.0.1:PORT/PATH --abuse KIND [--duration S] [--interval-ms MS]\n"
          "               [--canary-timeout-ms MS] [--count N] [--size BYTES] [--server-pid PID]\n"
          "               [--fetch PATH] [--settle S]\n"
          "KIND: none ping-flood ping-flood-empty envelope-flood unknown-cmd unknown-cmd-big bomb channels\n"
          "defaults: --duration 10 --interval-ms 10 --canary-timeout-ms 5000 --settle 1\n"
          "          --count 0 (until the end; unknown-cmd-big: 10; channels: 100000 joins)\n"
          "          --size: unknown-cmd-big 1 MiB less the envelope; bomb 16 MiB inflated\n"
          "prints one line RESULT {json} on stdout\n",
          stderr);
    exit(2);
}

static void parse_url(const char *url) {
    if (strncmp(url, "ws://", 5)) die("only ws:// URLs on loopback: %s", url);
    const char *p = url + 5;
    size_t n = strcspn(p, ":/");
    if (n >= sizeof opt.host) die("bad host in %s", url);
    memcpy(opt.host, p, n);
    opt.host[n] = 0;
    if (!strcmp(opt.host, "localhost")) snprintf(opt.host, sizeof opt.host, "127.0.0.1");
    struct in_addr a;
    if (inet_pton(AF_INET, opt.host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127)
        die("loopback (127.0.0.0/8) only: %s", url);
    p += n;
    opt.port = 80;
    if (*p == ':') opt.port = (int)strtol(p + 1, (char **)&p, 10);
    if (opt.port <= 0 || opt.port > 65535) die("bad port in %s", url);
    const char *path = *p ? p : "/";
    if (*path != '/' || strlen(path) >= sizeof opt.path) die("bad path in %s", url);
    snprintf(opt.path, sizeof opt.path, "%s", path);
}

/* ------------------------------------------------------------ /proc probes */

static long long rss_kib(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static int fd_count(int pid) {
    if (pid <= 0) return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------ connections */

static int tcp_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int wait_fd(int fd, short events, int ms) {
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, ms);
    return r > 0 ? p.revents : r;
}

static int write_all(int fd, const void *buf, size_t len, uint64_t deadline) {
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) return -1;
        uint64_t t = now_ns();
        if (t >= deadline) return -1;
        wait_fd(fd, POLLOUT, (int)((deadline - t) / 1000000) + 1);
    }
    return 0;
}

/* A receive buffer and a frame parser (server frames are never masked). */
typedef struct {
    int fd;
    unsigned char *buf;
    size_t len, cap;
    int closed;           /* 1: close frame seen; 2: eof; 3: reset/error */
    int close_code;
    char close_reason[128];
} wsconn;

static void conn_init(wsconn *c, int fd) {
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->cap = READ_CHUNK * 2;
    c->buf = malloc(c->cap);
    if (!c->buf) die("out of memory");
}

/* Reads what is there (nonblocking); returns bytes read, 0 on nothing, -1 on eof/error (c->closed set). */
static ssize_t conn_fill(wsconn *c) {
    /* Frames over 8 MiB are dropped as they arrive (conn_frames), so the buffer stays under ~9 MiB. */
    if (c->cap - c->len < READ_CHUNK) {
        size_t cap = c->cap * 2;
        unsigned char *b = realloc(c->buf, cap);
        if (!b) die("out of memory");
        c->buf = b;
        c->cap = cap;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
    if (n > 0) {
        c->len += (size_t)n;
        return n;
    }
    if (n == 0) {
        if (!c->closed) c->closed = 2;
        return -1;
    }
    if (errno == EAGAIN || errno == EINTR) return 0;
    if (!c->closed) c->closed = 3;
    return -1;
}

/* Frames parsed from the buffer: calls on_text for complete text frames
 * (opcode 1 or continuation), notes a close frame, drops everything else.
 * A frame larger than the buffer allows is consumed as it arrives (skip). */
typedef struct {
    uint64_t frames, bytes, texts;
    uint64_t skip; /* payload bytes of an oversized frame still to drop */
} rxstats;

static void conn_frames(wsconn *c, rxstats *st, void (*on_text)(void *, const unsigned char *, size_t), void *ctx) {
    size_t off = 0;
    if (st->skip) {
        size_t k = c->len < st->skip ? c->len : (size_t)st->skip;
        off += k;
        st->skip -= k;
        st->bytes += k;
    }
    while (c->len - off >= 2) {
        const unsigned char *h = c->buf + off;
        int op = h[0] & 0x0f;
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (c->len - off < 4) break;
            plen = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (c->len - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | h[2 + i];
            hl = 10;
        }
        if (h[1] & 0x80) hl += 4; /* a masked server frame: not expected, skipped the same */
        if (c->len - off < hl) break;
        if (c->len - off - hl < plen) {
            /* Incomplete. Big data frames are dropped as they come rather than buffered. */
            if (op != 8 && plen > (8u << 20)) {
                st->frames++;
                size_t have = c->len - off - hl;
                st->skip = plen - have;
                st->bytes += have;
                off = c->len;
            }
            break;
        }
        const unsigned char *p = h + hl;
        st->frames++;
        st->bytes += plen;
        if (op == 8) {
            c->closed = 1;
            c->close_code = plen >= 2 ? (p[0] << 8 | p[1]) : 1005;
            size_t rl = plen > 2 ? (size_t)plen - 2 : 0;
            if (rl >= sizeof c->close_reason) rl = sizeof c->close_reason - 1;
            memcpy(c->close_reason, p + 2, rl);
            c->close_reason[rl] = 0;
        } else if (op == 1 || op == 0) {
            st->texts++;
            if (on_text) on_text(ctx, p, (size_t)plen);
        }
        off += hl + plen;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void mask_into(unsigned char *dst, const unsigned char *src, size_t n, const unsigned char key[4]) {
    for (size_t i = 0; i < n; i++) dst[i] = src[i] ^ key[i & 3];
}

/* A masked client frame (fin set); rsv1 for a compressed message. Returns its length. */
static size_t frame(unsigned char *out, int opcode, int rsv1, const void *payload, size_t n) {
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t hl = 0;
    out[hl++] = (unsigned char)(0x80 | (rsv1 ? 0x40 : 0) | opcode);
    if (n < 126) {
        out[hl++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        out[hl++] = 0x80 | 126;
        out[hl++] = (unsigned char)(n >> 8);
        out[hl++] = (unsigned char)n;
    } else {
        out[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) out[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    memcpy(out + hl, key, 4);
    hl += 4;
    mask_into(out + hl, payload, n, key);
    return hl + n;
}

/* Connects and upgrades; deflate: offers permessage-deflate and *accepted says
 * whether the server took it. Leftover bytes after the head stay in c. */
static int ws_open(wsconn *c, int deflate, int *accepted, char *why, size_t whylen) {
    int fd = tcp_connect();
    if (fd < 0) {
        snprintf(why, whylen, "connect: %s", strerror(errno));
        return -1;
    }
    conn_init(c, fd);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: YWJ1c2UtYmVuY2gta2V5MQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     opt.path, opt.host, opt.port,
                     deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; "
                               "server_no_context_takeover\r\n"
                             : "");
    uint64_t deadline = now_ns() + 5000000000ull;
    if (write_all(fd, req, (size_t)n, deadline)) {
        snprintf(why, whylen, "handshake write failed");
        return -1;
    }
    for (;;) {
        unsigned char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end) {
            size_t headlen = (size_t)(end - c->buf) + 4;
            char head[4096];
            size_t hn = headlen < sizeof head - 1 ? headlen : sizeof head - 1;
            memcpy(head, c->buf, hn);
            head[hn] = 0;
            if (strncmp(head, "HTTP/1.1 101", 12)) {
                char *eol = strstr(head, "\r\n");
                if (eol) *eol = 0;
                snprintf(why, whylen, "no upgrade: %s", head);
                return -1;
            }
            if (accepted) *accepted = strcasestr(head, "permessage-deflate") != NULL;
            memmove(c->buf, c->buf + headlen, c->len - headlen);
            c->len -= headlen;
            return 0;
        }
        uint64_t t = now_ns();
        if (t >= deadline) {
            snprintf(why, whylen, "handshake timed out");
            return -1;
        }
        wait_fd(fd, POLLIN, (int)((deadline - t) / 1000000) + 1);
        if (conn_fill(c) < 0) {
            snprintf(why, whylen, "closed during the handshake");
            return -1;
        }
    }
}

static void ws_close(wsconn *c) {
    if (c->fd < 0) return;
    unsigned char f[16];
    unsigned char code[2] = {0x03, 0xe8}; /* 1000 */
    size_t n = frame(f, 8, 0, code, 2);
    send(c->fd, f, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(c->fd, SHUT_WR);
    close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
}

/* -------------------------------------------------------------- the run */

static _Atomic int stopping;
static uint64_t t_end; /* monotonic ns: the abuse stops */

/* Canary */
static double *lat_ms;
static size_t lat_n, lat_cap;
static uint64_t canary_failures, canary_reconnects;
static char canary_error[200];

typedef struct {
    int got;
} canary_ctx;

static void canary_text(void *ctx, const unsigned char *p, size_t n) {
    if (memmem(p, n, "_heartbeat", 10)) ((canary_ctx *)ctx)->got++;
}

static void *canary_main(void *arg) {
    (void)arg;
    wsconn c;
    char why[200];
    int up = ws_open(&c, 0, NULL, why, sizeof why) == 0;
    if (!up) snprintf(canary_error, sizeof canary_error, "%s", why);
    static const char probe[] = "{\"cmd\":\"_heartbeat\"}";
    unsigned char f[64];
    size_t flen = frame(f, 1, 0, probe, sizeof probe - 1);
    rxstats st = {0};
    uint64_t next = now_ns();
    while (!atomic_load(&stopping)) {
        uint64_t t = now_ns();
        if (t < next) {
            sleep_ms((double)(next - t) / 1e6);
            continue;
        }
        next = t + (uint64_t)(opt.interval_ms * 1e6);
        if (!up) {
            canary_reconnects++;
            up = ws_open(&c, 0, NULL, why, sizeof why) == 0;
            if (!up) {
                canary_failures++;
                snprintf(canary_error, sizeof canary_error, "%s", why);
                continue;
            }
            memset(&st, 0, sizeof st);
        }
        uint64_t sent = now_ns(), deadline = sent + (uint64_t)(opt.canary_timeout_ms * 1e6);
        canary_ctx cx = {0};
        int ok = write_all(c.fd, f, flen, deadline) == 0;
        while (ok && !cx.got) {
            conn_frames(&c, &st, canary_text, &cx);
            if (cx.got || c.closed) break;
            uint64_t now = now_ns();
            if (now >= deadline) break;
            wait_fd(c.fd, POLLIN, (int)((deadline - now) / 1000000) + 1);
            if (conn_fill(&c) < 0) conn_frames(&c, &st, canary_text, &cx);
        }
        if (cx.got) {
            if (lat_n == lat_cap) {
                lat_cap = lat_cap ? lat_cap * 2 : 4096;
                lat_ms = realloc(lat_ms, lat_cap * sizeof *lat_ms);
                if (!lat_ms) die("out of memory");
            }
            lat_ms[lat_n++] = (double)(now_ns() - sent) / 1e6;
        } else {
            /* Late, lost or closed: count it and start over on a fresh connection
             * (a late answer must not be taken for the next probe's). */
            canary_failures++;
            snprintf(canary_error, sizeof canary_error, "%s",
                     c.closed == 1 ? "closed by the server" : c.closed ? "connection lost" : "no answer in time");
            ws_close(&c);
            up = 0;
        }
    }
    if (up) ws_close(&c);
    return NULL;
}

/* Abuser */
static uint64_t ab_sent, ab_bytes;
static rxstats ab_rx;
static char ab_end[200] = "open";
static int ab_close_code = -1;
static char ab_error[200];
static int ab_deflate_accepted = -1;
static size_t ab_msg_bytes; /* the wire size of one abusive message */
static double ab_send_s;    /* time spent until the last message went out */
static uint64_t ab_t0;      /* the abuser's connection opened */
static double ab_end_s = -1; /* open to the end seen (close frame, eof, reset, failed write) */
static long long rss_end_kib = -1;
static long long fetch_bytes = -1;
static int fetch_status = -1;
static _Atomic int abuse_done; /* the abuser has stopped; main may sample rss_end */

/* A deflate stream of n bytes of 'a' (raw, one sync-flushed message with its
 * 00 00 ff ff tail removed, as RFC 7692 sends it). */
static unsigned char *deflated_bomb(size_t n, size_t *outlen) {
    unsigned char *in = malloc(n);
    size_t cap = n / 500 + 4096;
    unsigned char *out = malloc(cap);
    if (!in || !out) die("out of memory");
    memset(in, 'a', n);
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY) != Z_OK) die("deflateInit2");
    z.next_in = in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in) die("deflate: output buffer too small");
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    free(in);
    if (len < 4 || memcmp(out + len - 4, "\x00\x00\xff\xff", 4)) die("deflate: no sync-flush tail");
    *outlen = len - 4;
    return out;
}

/* The message(s) one kind sends; channels builds its joins as it goes. */
static unsigned char *build_messages(const char *kind, size_t *len, size_t *per) {
    unsigned char *buf;
    if (!strcmp(kind, "ping-flood") || !strcmp(kind, "ping-flood-empty")) {
        size_t plen = !strcmp(kind, "ping-flood") ? 125 : 0;
        unsigned char payload[125];
        memset(payload, 'p', sizeof payload);
        unsigned char one[256];
        size_t fl = frame(one, 9, 0, payload, plen);
        size_t k = (64u << 10) / fl; /* 64 KiB of pings per write */
        buf = malloc(k * fl);
        for (size_t i = 0; i < k; i++) memcpy(buf + i * fl, one, fl);
        *len = k * fl;
        *per = fl;
        return buf;
    }
    if (!strcmp(kind, "envelope-flood") || !strcmp(kind, "unknown-cmd")) {
        const char *env = !strcmp(kind, "envelope-flood") ? "{\"cmd\":\"leave\",\"param\":{\"channel\":\"nope\"}}"
                                                          : "{\"cmd\":\"no-such-command\",\"param\":{}}";
        unsigned char one[256];
        size_t fl = frame(one, 1, 0, env, strlen(env));
        size_t k = (16u << 10) / fl; /* 16 KiB of envelopes per write */
        buf = malloc(k * fl);
        for (size_t i = 0; i < k; i++) memcpy(buf + i * fl, one, fl);
        *len = k * fl;
        *per = fl;
        return buf;
    }
    if (!strcmp(kind, "unknown-cmd-big")) {
        static const char pre[] = "{\"cmd\":\"", post[] = "\",\"param\":{}}";
        size_t total = opt.size ? opt.size : (1u << 20);
        if (total < sizeof pre + sizeof post) total = sizeof pre + sizeof post;
        char *env = malloc(total);
        memcpy(env, pre, sizeof pre - 1);
        memset(env + sizeof pre - 1, 'x', total - (sizeof pre - 1) - (sizeof post - 1));
        memcpy(env + total - (sizeof post - 1), post, sizeof post - 1);
        buf = malloc(total + 14);
        *len = *per = frame(buf, 1, 0, env, total);
        free(env);
        return buf;
    }
    if (!strcmp(kind, "bomb")) {
        size_t clen;
        unsigned char *z = deflated_bomb(opt.size ? opt.size : (16u << 20), &clen);
        buf = malloc(clen + 14);
        *len = *per = frame(buf, 1, 1, z, clen);
        free(z);
        return buf;
    }
    *len = *per = 0;
    return NULL;
}

/* Notes when the end was first seen. */
static void ab_mark_end(const wsconn *c) {
    if (ab_end_s < 0 && (c->closed || ab_error[0])) ab_end_s = (double)(now_ns() - ab_t0) / 1e9;
}

static void ab_note_close(wsconn *c) {
    if (c->closed == 1) {
        ab_close_code = c->close_code;
        snprintf(ab_end, sizeof ab_end, "close %d%s%s", c->close_code, c->close_reason[0] ? " " : "",
                 c->close_reason);
    } else if (c->closed == 2) {
        snprintf(ab_end, sizeof ab_end, "eof without a close frame");
    } else if (c->closed == 3) {
        snprintf(ab_end, sizeof ab_end, "reset");
    }
}

/* Reads and drops what has arrived, without blocking. */
static void ab_drain(wsconn *c) {
    for (int i = 0; i < 64; i++) {
        ssize_t n = conn_fill(c);
        conn_frames(c, &ab_rx, NULL, NULL);
        ab_mark_end(c);
        if (n <= 0) break;
    }
}

/* Sends buf (len bytes, `per` bytes a message) cyclically until the end,
 * the count, or an error; reading when `reads`. */
static void ab_flood(wsconn *c, const unsigned char *buf, size_t len, size_t per, long long count, int reads) {
    size_t pos = 0;
    uint64_t start = now_ns(), limit = count > 0 ? (uint64_t)count * per : UINT64_MAX;
    while (!atomic_load(&stopping) && ab_bytes < limit && !c->closed && !ab_error[0]) {
        size_t want = len - pos;
        if (want > limit - ab_bytes) want = (size_t)(limit - ab_bytes);
        ssize_t n = send(c->fd, buf + pos, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            ab_bytes += (uint64_t)n;
            pos = (pos + (size_t)n) % len;
            ab_sent = ab_bytes / per;
            ab_send_s = (double)(now_ns() - start) / 1e9;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            /* The end (close frame, reset) is read afterwards: see abuser_main. */
            snprintf(ab_error, sizeof ab_error, "write: %s", strerror(errno));
            ab_mark_end(c);
            break;
        }
        if (reads) ab_drain(c);
        if (n <= 0 || (size_t)n < want) {
            uint64_t t = now_ns();
            int ms = t < t_end ? (int)((t_end - t) / 1000000) + 1 : 1;
            if (ms > 50) ms = 50;
            wait_fd(c->fd, reads ? POLLIN | POLLOUT : POLLOUT, ms);
        }
    }
}

static void ab_channels(wsconn *c, long long joins) {
    /* One join with a 1 MB name, then `joins` distinct small ones. */
    size_t big = 1000000;
    char *env = malloc(big + 64);
    int pre = snprintf(env, 64, "{\"cmd\":\"join\",\"param\":{\"channel\":\"");
    memset(env + pre, 'b', big);
    size_t el = (size_t)pre + big;
    memcpy(env + el, "\"}}", 3);
    el += 3;
    unsigned char *fb = malloc(el + 14);
    size_t fl = frame(fb, 1, 0, env, el);
    free(env);
    uint64_t start = now_ns();
    int ok = write_all(c->fd, fb, fl, t_end) == 0;
    free(fb);
    if (ok) {
        ab_sent = 1;
        ab_bytes = fl;
    }
    unsigned char batch[64 << 10];
    long long i = 0;
    while (ok && i < joins && !atomic_load(&stopping) && !c->closed) {
        size_t bl = 0;
        while (i < joins && bl + 128 < sizeof batch) {
            char e[96];
            int n = snprintf(e, sizeof e, "{\"cmd\":\"join\",\"param\":{\"channel\":\"c%lld\"}}", i);
            bl += frame(batch + bl, 1, 0, e, (size_t)n);
            i++;
        }
        size_t off = 0;
        while (off < bl && !atomic_load(&stopping)) {
            ssize_t n = send(c->fd, batch + off, bl - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                off += (size_t)n;
                ab_bytes += (uint64_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                snprintf(ab_error, sizeof ab_error, "write: %s", strerror(errno));
                ab_mark_end(c);
                ok = 0;
                break;
            }
            ab_drain(c);
            if (c->closed) break;
            if (off < bl) wait_fd(c->fd, POLLIN | POLLOUT, 50);
        }
        if (off < bl) break; /* cut off at the end: only whole batches count */
        ab_sent = 1 + (uint64_t)i;
        ab_send_s = (double)(now_ns() - start) / 1e9;
    }
}

static void *abuser_main(void *arg) {
    (void)arg;
    const char *kind = opt.abuse;
    if (!strcmp(kind, "none")) {
        snprintf(ab_end, sizeof ab_end, "none");
        atomic_store(&abuse_done, 1);
        return NULL;
    }
    wsconn c;
    char why[200];
    int bomb = !strcmp(kind, "bomb");
    if (ws_open(&c, bomb, bomb ? &ab_deflate_accepted : NULL, why, sizeof why)) {
        snprintf(ab_end, sizeof ab_end, "did not open: %s", why);
        atomic_store(&abuse_done, 1);
        return NULL;
    }
    if (bomb && !ab_deflate_accepted) {
        snprintf(ab_end, sizeof ab_end, "permessage-deflate refused (start the server with --deflate)");
        ws_close(&c);
        atomic_store(&abuse_done, 1);
        return NULL;
    }
    ab_t0 = now_ns();
    int never_reads = !strncmp(kind, "ping-flood", 10);
    if (!strcmp(kind, "channels")) {
        ab_channels(&c, opt.count > 0 ? opt.count : 100000);
    } else {
        size_t len, per;
        unsigned char *buf = build_messages(kind, &len, &per);
        ab_msg_bytes = per;
        long long count = opt.count >= 0 ? opt.count : !strcmp(kind, "unknown-cmd-big") ? 10 : 0;
        ab_flood(&c, buf, len, per, count, !never_reads);
        free(buf);
    }
    /* Done sending (count reached or not): hold the connection, reading (except the
     * ping flooders), until the end; the server may still close it. */
    while (!atomic_load(&stopping) && !c.closed && !ab_error[0]) {
        if (!never_reads) {
            wait_fd(c.fd, POLLIN, 50);
            ab_drain(&c);
        } else {
            sleep_ms(50);
        }
    }
    atomic_store(&abuse_done, 1);
    /* Wait for main's end-of-abuse samples (RSS, --fetch) before closing. */
    while (atomic_load(&abuse_done) != 2) sleep_ms(5);
    /* How did it end? Look for a close frame behind whatever was queued for us. */
    if (!c.closed) {
        uint64_t deadline = now_ns() + 2000000000ull;
        while (!c.closed && now_ns() < deadline) {
            wait_fd(c.fd, POLLIN, 20);
            ab_drain(&c);
            if (!c.closed && ab_rx.skip == 0 && c.len == 0 && wait_fd(c.fd, POLLIN, 100) == 0) break; /* quiet */
        }
    }
    ab_note_close(&c);
    if (ab_error[0]) {
        char note[400];
        snprintf(note, sizeof note, "%s%s(%s)", c.closed ? ab_end : "", c.closed ? " " : "", ab_error);
        snprintf(ab_end, sizeof ab_end, "%s", note);
    }
    ws_close(&c);
    return NULL;
}

/* GET opt.fetch from the server; the response's size in bytes. */
static void fetch_page(void) {
    int fd = tcp_connect();
    if (fd < 0) return;
    char req[1400];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", opt.fetch,
                     opt.host, opt.port);
    uint64_t deadline = now_ns() + 5000000000ull;
    if (write_all(fd, req, (size_t)n, deadline)) {
        close(fd);
        return;
    }
    char buf[1 << 16];
    long long total = 0;
    while (now_ns() < deadline) {
        if (wait_fd(fd, POLLIN, 100) <= 0) continue;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0) break;
        if (total == 0 && r >= 12 && !strncmp(buf, "HTTP/1.", 7)) fetch_status = atoi(buf + 9);
        total += r;
    }
    fetch_bytes = total;
    close(fd);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!lat_n) return -1;
    size_t i = (size_t)(p * (double)(lat_n - 1) + 0.5);
    return lat_ms[i];
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

int main(int argc, char **argv) {
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage();
        if (i + 1 >= argc) die("%s needs a value (try --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--abuse")) opt.abuse = v;
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--interval-ms")) opt.interval_ms = atof(v);
        else if (!strcmp(a, "--canary-timeout-ms")) opt.canary_timeout_ms = atof(v);
        else if (!strcmp(a, "--count")) opt.count = atoll(v);
        else if (!strcmp(a, "--size")) opt.size = (size_t)atoll(v);
        else if (!strcmp(a, "--server-pid")) opt.server_pid = atoi(v);
        else if (!strcmp(a, "--fetch")) opt.fetch = v;
        else if (!strcmp(a, "--settle")) opt.settle = atof(v);
        else die("unknown option %s (try --help)", a);
    }
    if (!url) usage();
    parse_url(url);
    int known = 0;
    for (int i = 0; KINDS[i]; i++) known |= !strcmp(KINDS[i], opt.abuse);
    if (!known) die("unknown --abuse %s (try --help)", opt.abuse);
    if (!(opt.duration > 0 && opt.duration <= MAX_SECONDS)) die("--duration takes 0 < S <= %.0f", MAX_SECONDS);
    if (!(opt.interval_ms >= 0.1 && opt.interval_ms <= 10000)) die("--interval-ms takes 0.1 ... 10000");
    if (!(opt.canary_timeout_ms >= 1 && opt.canary_timeout_ms <= 60000)) die("--canary-timeout-ms takes 1 ... 60000");
    if (!(opt.settle >= 0 && opt.settle <= 60)) die("--settle takes 0 ... 60");
    if (opt.size > (256u << 20)) die("--size takes at most 256 MiB");
    if (opt.fetch && (opt.fetch[0] != '/' || strlen(opt.fetch) > 1024)) die("--fetch takes a path");
    signal(SIGPIPE, SIG_IGN);

    long long rss_before = rss_kib(opt.server_pid), rss_peak = rss_before;
    int fds_before = fd_count(opt.server_pid);
    if (opt.server_pid && rss_before < 0) die("cannot read /proc/%d/status", opt.server_pid);

    uint64_t t0 = now_ns();
    t_end = t0 + (uint64_t)(opt.duration * 1e9);
    pthread_t canary, abuser;
    if (pthread_create(&canary, NULL, canary_main, NULL) || pthread_create(&abuser, NULL, abuser_main, NULL))
        die("pthread_create");
    while (now_ns() < t_end) {
        long long r = rss_kib(opt.server_pid);
        if (r > rss_peak) rss_peak = r;
        sleep_ms(100);
    }
    /* End of the abuse: the senders stop; then the end-of-abuse samples while the
     * abuser still holds its connection. */
    atomic_store(&stopping, 1);
    uint64_t wait_until = now_ns() + 3000000000ull;
    while (!atomic_load(&abuse_done) && now_ns() < wait_until) sleep_ms(5);
    rss_end_kib = rss_kib(opt.server_pid);
    if (rss_end_kib > rss_peak) rss_peak = rss_end_kib;
    if (opt.fetch) fetch_page();
    atomic_store(&abuse_done, 2);
    pthread_join(canary, NULL);
    pthread_join(abuser, NULL);
    for (double s = 0; s < opt.settle; s += 0.1) {
        long long r = rss_kib(opt.server_pid);
        if (r > rss_peak) rss_peak = r;
        sleep_ms(100);
    }
    long long rss_after = rss_kib(opt.server_pid);
    int fds_after = fd_count(opt.server_pid);
    int server_alive = opt.server_pid ? kill(opt.server_pid, 0) == 0 : -1;

    qsort(lat_ms, lat_n, sizeof *lat_ms, cmp_double);
    double p50 = pct(0.5), p99 = pct(0.99), mx = lat_n ? lat_ms[lat_n - 1] : -1;
    double sent_s = ab_send_s > 0 ? ab_send_s : opt.duration;

    fprintf(stderr,
            "wsabuse %s, %.0f s: canary %zu round trips p50 %.3f ms p99 %.3f ms max %.3f ms, %llu failures%s%s%s\n"
            "  abuser: %llu messages (%llu bytes) sent, %llu frames received; ended: %s (seen at %.1f s)\n",
            opt.abuse, opt.duration, lat_n, p50, p99, mx, (unsigned long long)canary_failures,
            canary_error[0] ? " (last: " : "", canary_error, canary_error[0] ? ")" : "", (unsigned long long)ab_sent,
            (unsigned long long)ab_bytes, (unsigned long long)ab_rx.frames, ab_end, ab_end_s);
    if (opt.server_pid)
        fprintf(stderr, "  server RSS %.1f -> peak %.1f, end of abuse %.1f, after %.1f MiB; fds %d -> %d%s\n",
                rss_before / 1024.0, rss_peak / 1024.0, rss_end_kib / 1024.0, rss_after / 1024.0, fds_before,
                fds_after, server_alive ? "" : " (server gone)");
    if (opt.fetch)
        fprintf(stderr, "  GET %s at the end of the abuse: status %d, %lld bytes\n", opt.fetch, fetch_status,
                fetch_bytes);

    printf("RESULT {\"abuse\":");
    json_str(stdout, opt.abuse);
    printf(",\"duration_s\":%g,\"interval_ms\":%g,\"canary_round_trips\":%zu,\"canary_p50_ms\":%.3f,"
           "\"canary_p99_ms\":%.3f,\"canary_max_ms\":%.3f,\"canary_failures\":%llu,\"canary_reconnects\":%llu,",
           opt.duration, opt.interval_ms, lat_n, p50, p99, mx, (unsigned long long)canary_failures,
           (unsigned long long)canary_reconnects);
    printf("\"canary_error\":");
    json_str(stdout, canary_error);
    printf(",\"abuser_sent\":%llu,\"abuser_bytes\":%llu,\"abuser_msg_bytes\":%zu,\"abuser_send_s\":%.3f,"
           "\"abuser_rate_per_s\":%.0f,\"abuser_frames_received\":%llu,\"abuser_bytes_received\":%llu,",
           (unsigned long long)ab_sent, (unsigned long long)ab_bytes, ab_msg_bytes, ab_send_s,
           ab_sent / sent_s, (unsigned long long)ab_rx.frames, (unsigned long long)ab_rx.bytes);
    printf("\"abuser_close_code\":%d,\"abuser_end_s\":%.3f,\"abuser_end\":", ab_close_code, ab_end_s);
    json_str(stdout, ab_end);
    if (ab_deflate_accepted >= 0) printf(",\"deflate_accepted\":%s", ab_deflate_accepted ? "true" : "false");
    if (opt.server_pid)
        printf(",\"server_pid\":%d,\"rss_before_kib\":%lld,\"rss_peak_kib\":%lld,\"rss_end_kib\":%lld,"
               "\"rss_after_kib\":%lld,\"fds_before\":%d,\"fds_after\":%d,\"server_alive\":%s",
               opt.server_pid, rss_before, rss_peak, rss_end_kib, rss_after, fds_before, fds_after,
               server_alive ? "true" : "false");
    if (opt.fetch) printf(",\"fetch_status\":%d,\"fetch_bytes\":%lld", fetch_status, fetch_bytes);
    printf("}\n");
    fflush(stdout);
    free(lat_ms);
    return 0;
}
