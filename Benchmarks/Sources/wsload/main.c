/*
 * wsload: a WebSocket load generator for loopback servers (epoll, one thread).
 *
 *   wsload echo --url ws://127.0.0.1:PORT/PATH [--conns N] [--size BYTES]
 *               [--text|--binary] [--inflight K] [--duration S] [--warmup S]
 *               [--server-pid PID] [--server-cpu CPU] [--verify] [--deflate] [--envelope] [--result]
 *   wsload idle --url ws://127.0.0.1:PORT/PATH [--conns N] [--hold S]
 *               [--concurrency C] [--server-pid PID] [--result]
 *   wsload fanout --url ws://127.0.0.1:PORT/ws?ch=bench [--url ...] [--conns N]
 *               [--inflight K | --rate R] [--size BYTES] [--channel NAME]
 *               [--duration S] [--warmup S] [--concurrency C] [--settle S]
 *               [--server-pid PID]... [--aux-pid PID]... [--server-cpu CPU] [--result]
 *               [--read-during-joins]
 *
 * A wss:// URL speaks TLS (OpenSSL, no certificate check: loopback
 * benchmarks against a test certificate): the handshake before the upgrade,
 * then every read and write through the session.
 *
 * echo: opens N connections, keeps K messages in flight on each (all K frames
 * of a refill go out in one write), counts echoes and their round-trip times
 * (send -> complete echo) in a log-bucket histogram. Frames are masked once,
 * up front, with a fixed key: the payload buffer is never touched again.
 * Echoes are parsed header-only (payload bytes are skipped unless --verify).
 *
 * --deflate offers permessage-deflate with client_no_context_takeover and
 * server_no_context_takeover (and fails unless the server accepts): the payload
 * becomes JSON-like text, compressed once with zlib (every message compresses
 * the same without context takeover) and sent with RSV1 set. Echoes are
 * counted whether the server compressed them or not (RESULT reports how many
 * came back compressed); with --verify compressed echoes are inflated with
 * zlib and compared.
 *
 * --envelope sends text shaped as the library's envelope,
 * {"cmd":"e","param":"aaa..."} padded to --size (at least 22 bytes), for a
 * server that answers envelopes (`wsdemo --echo --envelope`, sync or async).
 *
 * idle: opens N connections (at most C handshakes outstanding), reports
 * handshakes/s, then the server's RSS per connection.
 *
 * fanout: N subscribers and one publisher join one channel of the chat
 * (`wsdemo`'s ChatHandler, or any server with its `say` semantics: a client's
 * {"channel","cmd":"say","param"} goes to every member of the channel as
 * {"from","channel","cmd":"say","param"}, sender included). With --url given
 * several times the subscribers are spread round-robin over the servers (a
 * cluster joined through Redis) and the publisher uses the first. Handshakes
 * are bounded as in idle mode. The chat tells every member of each join
 * (`online-update`): N^2/2 messages, 50 million for 10,000 subscribers. Read
 * as they come, each is a write and a read of its own (~6 us apiece on each
 * side): joining 10,000 took over 5 minutes. So while joining, subscribers
 * do not read (a 4 KiB receive buffer, no EPOLLIN): the server queues the
 * announcements and sends them in batches afterwards, as to slow readers.
 * Every subscriber sends a ping every 5 s until the measured window (a
 * heartbeat, as the browser client has), or the server's idle timer would
 * ping it and close it when the pong waits behind the backlog. Then the
 * buffers are set to 256 KiB (both servers measured get the
 * same sockets; --read-during-joins turns this off). Once everyone is in,
 * wsload waits for the join traffic to go quiet and sends barrier messages
 * until every subscriber has seen one, so the measured window holds only
 * `say` traffic. Then the publisher keeps K
 * messages in flight (a message is done when all N subscribers have it) or
 * publishes at R messages/s (at most 4096 in flight). Each param carries
 * {"s": sequence, "t": send time (this process's monotonic clock)}, so every
 * delivery's publish-to-receive latency is measured; the time until the last
 * subscriber has a message is the message's completion latency. Every
 * subscriber checks the sequence: gaps are lost deliveries, repeats
 * duplicates (both must be 0). Server CPU is per delivery (the publisher's
 * own copy not counted); --server-pid may be repeated (summed), --aux-pid
 * (e.g. redis-server) is reported apart.
 *
 * Given the server's PID, reports its CPU (utime+stime from /proc/PID/stat)
 * per message; given the server's core (--server-cpu), that core's busy time
 * (softirq included, from /proc/stat) per message, which is how the guide's
 * reference figures are measured. The generator's own CPU (getrusage) and, when
 * it is pinned to one core, that core's busy share tell whether it is the
 * bottleneck.
 *
 * Loopback only (127.0.0.0/8, ::1, localhost); bounded in connections and
 * time; stops by itself.
 *
 * Cost: user space is ~2.5% of wsload's CPU at 1 message in flight (perf); the
 * rest is the kernel's TCP path (on loopback the sender's write also runs the
 * receiver's softirq), which costs a client about what it costs the server.
 * So at 1 in flight a one-core client and the server saturate together, and
 * server CPU per message, not messages/s, is the figure to compare.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <zlib.h>

#define MAX_CONNS 100000
#define MAX_SECONDS 600.0
#define MAX_PAYLOAD (16u << 20)
#define MAX_INFLIGHT 1024
#define MAX_TARGETS 16  /* fanout: servers the subscribers are spread over */
#define MAX_PIDS 16

/* ---------------------------------------------------------------- utilities */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("wsload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double rusage_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of a whole process (all threads), seconds; -1 if unreadable. */
static double proc_cpu_s(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    if (!p) return -1;
    p += 2;
    /* fields after comm start at 3 (state); utime is 14, stime 15 */
    unsigned long long ut = 0, st = 0;
    int field = 3;
    for (char *tok = strtok(p, " "); tok; tok = strtok(NULL, " "), field++) {
        if (field == 14) ut = strtoull(tok, NULL, 10);
        if (field == 15) { st = strtoull(tok, NULL, 10); break; }
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A core's busy and total time from /proc/stat, seconds (busy = everything but
 * idle and iowait: user, nice, system, irq, softirq, steal). */
static int core_times(int cpu, double *busy, double *total, double *steal, double *softirq) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    char line[512], want[16];
    snprintf(want, sizeof want, "cpu%d ", cpu);
    int ok = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, want, strlen(want))) continue;
        unsigned long long v[10] = {0};
        sscanf(line + strlen(want), "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]);
        double hz = (double)sysconf(_SC_CLK_TCK);
        unsigned long long b = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        *busy = b / hz;
        *total = (b + v[3] + v[4]) / hz;
        *steal = v[7] / hz;
        *softirq = v[6] / hz;
        ok = 0;
        break;
    }
    fclose(f);
    return ok;
}

/* VmRSS and RssAnon of a process, bytes. */
static int proc_rss(int pid, long long *rss, long long *anon) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    *rss = *anon = -1;
    while (fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1) *rss = kb * 1024;
        if (sscanf(line, "RssAnon: %lld kB", &kb) == 1) *anon = kb * 1024;
    }
    fclose(f);
    return *rss < 0 ? -1 : 0;
}

/* The single CPU this process is pinned to, or -1. */
static int pinned_cpu(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set)) return -1;
    if (CPU_COUNT(&set) != 1) return -1;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set)) return i;
    return -1;
}

/* ---------------------------------------------------------------- histogram */
/* Log-linear buckets over nanoseconds: 16 sub-buckets per power of two
 * (<= 6.25% relative error), exact below 16 ns. */
#define HSUB 4
#define HBUCKETS (64 << HSUB)
typedef struct {
    uint64_t b[HBUCKETS];
    uint64_t count, max;
} histo;
static histo lat;      /* echo: round trips; fanout: publish -> one subscriber */
static histo done_lat; /* fanout: publish -> the last subscriber */

static inline unsigned hidx(uint64_t v) {
    if (v < (1u << HSUB)) return (unsigned)v;
    unsigned msb = 63 - (unsigned)__builtin_clzll(v);
    return ((msb - HSUB + 1) << HSUB) | (unsigned)((v >> (msb - HSUB)) & ((1u << HSUB) - 1));
}
static inline uint64_t hlow(unsigned i) {
    if (i < (1u << HSUB)) return i;
    unsigned msb = (i >> HSUB) + HSUB - 1;
    return (1ull << msb) | ((uint64_t)(i & ((1u << HSUB) - 1)) << (msb - HSUB));
}
static inline void hrecord(histo *h, uint64_t v) {
    h->b[hidx(v)]++;
    h->count++;
    if (v > h->max) h->max = v;
}
static double hpercentile(const histo *h, double p) { /* ns, bucket midpoint */
    if (!h->count) return 0;
    uint64_t want = (uint64_t)((double)h->count * p / 100.0);
    if (want >= h->count) want = h->count - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        seen += h->b[i];
        if (seen > want) {
            uint64_t lo = hlow(i), hi = i + 1 < HBUCKETS ? hlow(i + 1) : lo;
            double mid = (double)(lo + hi) / 2.0;
            return mid > (double)h->max ? (double)h->max : mid;
        }
    }
    return (double)h->max;
}

/* ---------------------------------------------------------------- options */

/* A server to connect to: its address and the handshake request for it. */
typedef struct {
    char host[64];
    int port;
    char path[256];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char request[768];
    size_t request_len;
    int tls; /* wss:// */
} target;
static SSL_CTX *tls_ctx; /* made for the first wss:// URL */
static target targets[MAX_TARGETS];
static int n_targets;

static struct {
    int mode; /* 0 echo, 1 idle, 2 fanout */
    char host[64]; /* the first target's, for messages */
    int port;
    char path[256];
    int conns;
    size_t size;
    int binary;
    int inflight;
    double duration, warmup, hold;
    int concurrency;
    int inflight_set, size_set;
    int read_during_joins;   /* fanout: subscribers read the join traffic as it comes */
    int server_pid;          /* the first --server-pid */
    int server_pids[MAX_PIDS], n_server_pids;
    int aux_pids[MAX_PIDS], n_aux_pids;
    int server_cpu;
    double rate;             /* fanout: messages/s; 0 = --inflight K */
    double settle;           /* fanout: longest wait for the join traffic to drain */
    char channel[128];       /* fanout: the channel named in `say` (default: ?ch= of the first URL) */
    int verify;
    int deflate;
    int envelope;            /* echo: {"cmd":"e","param":"..."} payloads */
    int result;
    int quiet;
} opt = {.conns = 100, .size = 16, .binary = 1, .inflight = 1, .duration = 5, .warmup = 1, .hold = 2,
         .concurrency = 256, .server_cpu = -1, .settle = 300};

static void usage(void) {
    fputs("usage: wsload echo --url ws://127.0.0.1:PORT/PATH [--conns N] [--size BYTES] [--text|--binary]\n"
          "                   [--inflight K] [--duration S] [--warmup S] [--server-pid PID]\n"
          "                   [--server-cpu CPU] [--verify] [--deflate] [--envelope] [--result] [--quiet]\n"
          "       wsload idle --url ws://127.0.0.1:PORT/PATH [--conns N] [--hold S] [--concurrency C]\n"
          "                   [--server-pid PID] [--result] [--quiet]\n"
          "       wsload fanout --url ws://127.0.0.1:PORT/ws?ch=bench [--url ...] [--conns N] [--inflight K | --rate R]\n"
          "                   [--size BYTES] [--channel NAME] [--duration S] [--warmup S] [--concurrency C]\n"
          "                   [--settle S] [--server-pid PID]... [--aux-pid PID]... [--server-cpu CPU] [--result]\n"
          "                   [--read-during-joins]\n"
          "defaults: --conns 100 --size 16 --binary --inflight 1 --duration 5 --warmup 1 --hold 2\n"
          "          fanout: --size 0 (padding bytes in each param) --inflight 16 --settle 300 (s)\n"
          "          --concurrency 256 (handshakes outstanding at once)\n"
          "--server-pid: server CPU per message (/proc/PID/stat) and RSS (/proc/PID/status)\n"
          "--server-cpu: the core the server is pinned to: its busy time per message, softirq included\n"
          "--deflate:    offer permessage-deflate (no context takeover either way); JSON-like text payload\n"
          "--envelope:   text payloads {\"cmd\":\"e\",\"param\":\"aaa...\"} of --size bytes (an envelope echo)\n"
          "--result:     also print one machine-readable line: RESULT key=value...\n",
          stderr);
    exit(2);
}

static void parse_url(const char *url, target *t) {
    t->tls = !strncmp(url, "wss://", 6);
    if (strncmp(url, "ws://", 5) && !t->tls) die("only ws:// and wss:// URLs (loopback) are supported: %s", url);
    if (t->tls && !tls_ctx) {
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!tls_ctx) die("SSL_CTX_new failed");
        /* write() semantics: partial writes, retried from wherever the buffer is. */
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    const char *p = url + (t->tls ? 6 : 5), *hend, *pstart;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend) die("bad URL %s", url);
        if ((size_t)(hend - p - 1) >= sizeof t->host) die("bad host");
        memcpy(t->host, p + 1, (size_t)(hend - p - 1));
        t->host[hend - p - 1] = 0;
        p = hend + 1;
    } else {
        hend = p + strcspn(p, ":/");
        if ((size_t)(hend - p) >= sizeof t->host) die("bad host");
        memcpy(t->host, p, (size_t)(hend - p));
        t->host[hend - p] = 0;
        p = hend;
    }
    t->port = t->tls ? 443 : 80;
    if (*p == ':') t->port = (int)strtol(p + 1, (char **)&p, 10);
    pstart = *p ? p : "/";
    if (*pstart != '/' || strlen(pstart) >= sizeof t->path) die("bad path in %s", url);
    snprintf(t->path, sizeof t->path, "%s", pstart);
    if (t->port <= 0 || t->port > 65535) die("bad port in %s", url);
    if (!strcmp(t->host, "localhost")) snprintf(t->host, sizeof t->host, "127.0.0.1");
}

/* The value of ch= in a path's query, or "" */
static void query_channel(const char *path, char *out, size_t cap) {
    out[0] = 0;
    const char *q = strchr(path, '?');
    while (q) {
        q++;
        if (!strncmp(q, "ch=", 3)) {
            size_t n = strcspn(q + 3, "&#");
            if (n >= cap) die("channel name too long");
            memcpy(out, q + 3, n);
            out[n] = 0;
            return;
        }
        q = strchr(q, '&');
    }
}

static double argd(const char *v, double lo, double hi, const char *name) {
    char *end;
    double d = strtod(v, &end);
    if (*end || d < lo || d > hi) die("%s takes %g...%g", name, lo, hi);
    return d;
}

static void parse_args(int argc, char **argv) {
    if (argc < 2) usage();
    if (!strcmp(argv[1], "echo")) opt.mode = 0;
    else if (!strcmp(argv[1], "idle")) opt.mode = 1;
    else if (!strcmp(argv[1], "fanout")) opt.mode = 2;
    else usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED() do { if (!v) die("%s needs a value", a); i++; } while (0)
        if (!strcmp(a, "--url")) {
            NEED();
            if (n_targets == MAX_TARGETS) die("at most %d --url", MAX_TARGETS);
            parse_url(v, &targets[n_targets++]);
        }
        else if (!strcmp(a, "--conns")) { NEED(); opt.conns = (int)argd(v, 1, MAX_CONNS, a); }
        else if (!strcmp(a, "--size")) { NEED(); opt.size = (size_t)argd(v, 0, MAX_PAYLOAD, a); opt.size_set = 1; }
        else if (!strcmp(a, "--text")) opt.binary = 0;
        else if (!strcmp(a, "--binary")) opt.binary = 1;
        else if (!strcmp(a, "--inflight")) { NEED(); opt.inflight = (int)argd(v, 1, MAX_INFLIGHT, a); opt.inflight_set = 1; }
        else if (!strcmp(a, "--duration")) { NEED(); opt.duration = argd(v, 0.1, MAX_SECONDS, a); }
        else if (!strcmp(a, "--warmup")) { NEED(); opt.warmup = argd(v, 0, 60, a); }
        else if (!strcmp(a, "--hold")) { NEED(); opt.hold = argd(v, 0, MAX_SECONDS, a); }
        else if (!strcmp(a, "--concurrency")) { NEED(); opt.concurrency = (int)argd(v, 1, MAX_CONNS, a); }
        else if (!strcmp(a, "--server-pid")) {
            NEED();
            if (opt.n_server_pids == MAX_PIDS) die("at most %d --server-pid", MAX_PIDS);
            opt.server_pids[opt.n_server_pids++] = (int)argd(v, 1, 1 << 30, a);
            if (!opt.server_pid) opt.server_pid = opt.server_pids[0];
        }
        else if (!strcmp(a, "--aux-pid")) {
            NEED();
            if (opt.n_aux_pids == MAX_PIDS) die("at most %d --aux-pid", MAX_PIDS);
            opt.aux_pids[opt.n_aux_pids++] = (int)argd(v, 1, 1 << 30, a);
        }
        else if (!strcmp(a, "--read-during-joins")) opt.read_during_joins = 1;
        else if (!strcmp(a, "--rate")) { NEED(); opt.rate = argd(v, 1, 1e7, a); }
        else if (!strcmp(a, "--settle")) { NEED(); opt.settle = argd(v, 0, MAX_SECONDS, a); }
        else if (!strcmp(a, "--channel")) {
            NEED();
            if (strlen(v) >= sizeof opt.channel || strpbrk(v, "\"\\") || !*v) die("bad --channel");
            snprintf(opt.channel, sizeof opt.channel, "%s", v);
        }
        else if (!strcmp(a, "--server-cpu")) { NEED(); opt.server_cpu = (int)argd(v, 0, CPU_SETSIZE - 1, a); }
        else if (!strcmp(a, "--verify")) opt.verify = 1;
        else if (!strcmp(a, "--deflate")) { opt.deflate = 1; opt.binary = 0; }
        else if (!strcmp(a, "--envelope")) { opt.envelope = 1; opt.binary = 0; }
        else if (!strcmp(a, "--result")) opt.result = 1;
        else if (!strcmp(a, "--quiet")) opt.quiet = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage();
        else die("unknown argument %s (try --help)", a);
#undef NEED
    }
    if (!n_targets) die("--url is required");
    if (n_targets > 1 && opt.mode != 2) die("several --url only in fanout mode");
    memcpy(opt.host, targets[0].host, sizeof opt.host);
    opt.port = targets[0].port;
    memcpy(opt.path, targets[0].path, sizeof opt.path);
    if (opt.mode == 2) {
        if (!opt.channel[0]) query_channel(opt.path, opt.channel, sizeof opt.channel);
        if (!opt.channel[0]) snprintf(opt.channel, sizeof opt.channel, "bench");
        if (strpbrk(opt.channel, "\"\\%")) die("channel %s needs escaping; use a plain name", opt.channel);
        if (!opt.size_set) opt.size = 0;
        if (!opt.inflight_set) opt.inflight = 16;
        if (opt.size > 65536) die("fanout: --size at most 65536");
    }
    if (opt.envelope && (opt.mode != 0 || opt.deflate || opt.size < 22))
        die("--envelope: echo only, without --deflate, --size at least 22");
    if (opt.mode == 0 && (uint64_t)opt.size * (uint64_t)opt.inflight > (256u << 20))
        die("--size x --inflight over 256 MiB");
}

/* ---------------------------------------------------------------- connections */

enum { C_CONNECTING, C_TLS, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DONE };

typedef struct conn {
    int fd;
    uint8_t state;
    uint8_t wantout;    /* EPOLLOUT registered */
    uint8_t hlen;       /* bytes of a split frame header held in hdr */
    uint8_t fin;        /* FIN bit of the frame being skipped */
    uint8_t op;         /* opcode of the frame being skipped (0 = continuation) */
    uint8_t hdr[14];
    uint64_t skip;      /* payload bytes of the current frame still to come */
    uint64_t poff;      /* offset within the current echoed message (for --verify) */
    uint32_t wpos;      /* offset within the frame of the next byte to write */
    uint32_t owed;      /* frames to write, not yet counted in wleft */
    uint64_t wleft;     /* bytes still to write */
    uint32_t inflight;  /* sent (or queued), not yet echoed */
    uint32_t ts_head;   /* ring of send times, inflight of them from ts_head */
    uint64_t *ts;
    uint16_t hsn;       /* handshake response bytes so far */
    char *hs;           /* handshake response buffer (freed when open) */
    uint8_t *ctl;       /* control frame payload being collected (ping/close) */
    uint32_t ctln;
    uint8_t zmsg;       /* the echo being read is compressed (RSV1 on its first frame) */
    z_stream *zs;       /* inflater for --verify --deflate, created on first use */
    uint8_t tgt;        /* index in targets */
    uint8_t ready;      /* fanout: a barrier message has arrived */
    uint8_t paused;     /* fanout: not reading until everyone has joined */
    uint8_t *msg;       /* fanout subscriber: the head of the message being read (msg_cap bytes) */
    uint32_t mlen;      /* bytes of that message so far (may exceed msg_cap) */
    uint32_t next;      /* fanout: the sequence number expected next */
    uint64_t uniq;      /* fanout: deliveries in sequence (gaps skipped, repeats not counted) */
    SSL *ssl;           /* wss:// */
} conn;

static conn *conns;
static int n_conns; /* opt.conns, plus the publisher in fanout mode */
static int epfd;
static uint8_t *frames;   /* inflight+1 copies of the masked frame, contiguous */
static size_t frame_len;  /* one masked frame */
static uint8_t *expect;   /* unmasked payload, for --verify */
static uint8_t *rbuf;
static size_t rbuf_cap;
static const uint8_t mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

static int n_open, n_connecting, n_failed, n_closed_by_peer, n_started;
static uint64_t last_rx;   /* when any connection last read bytes */
static uint32_t msg_cap;   /* fanout: message bytes kept per subscriber to find the sequence and time */
static void publisher_flush(void);
static int sending = 0, measuring = 0;
static uint64_t msgs_compressed, msgs_total, msgs_win, bytes_win, verify_errors, unexpected_frames, pings;
/* echo: data-frame payload bytes the server sent while measuring (what a
 * compressed echo costs on the wire, beside what it costs the server's CPU) */
static uint64_t rx_payload_win;
static uint64_t now_cached;

static const char *ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; /* for the RFC 6455 sample key */

static void resolve_peer(target *t) {
    memset(&t->addr, 0, sizeof t->addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&t->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&t->addr;
    if (inet_pton(AF_INET, t->host, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127) die("only loopback hosts (127.0.0.0/8, ::1): %s", t->host);
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)t->port);
        t->addrlen = sizeof *a4;
    } else if (inet_pton(AF_INET6, t->host, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr)) die("only loopback hosts (127.0.0.0/8, ::1): %s", t->host);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)t->port);
        t->addrlen = sizeof *a6;
    } else {
        die("host must be a loopback address literal or localhost: %s", t->host);
    }
    const char *hostfmt = t->addr.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d";
    char hostport[96];
    snprintf(hostport, sizeof hostport, hostfmt, t->host, t->port);
    t->request_len = (size_t)snprintf(t->request, sizeof t->request,
                                   "GET %s HTTP/1.1\r\n"
                                   "Host: %s\r\n"
                                   "Upgrade: websocket\r\n"
                                   "Connection: Upgrade\r\n"
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                   "Sec-WebSocket-Version: 13\r\n%s\r\n",
                                   t->path, hostport,
                                   opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; "
                                                 "server_no_context_takeover\r\n" : "");
}

/* Client frames must be masked: build one masked frame, once, and K+1 copies
 * of it back to back so any run of up to K frames starting anywhere inside
 * the first one is a single contiguous write. */
/* JSON-like text for --deflate: records of words from a small vocabulary, so it
 * compresses about like chat messages do (3-4x with zlib), not like a pattern. */
static void fill_json(uint8_t *out, size_t n) {
    static const char *words[] = {"hello", "world", "message", "channel", "server", "latency", "the", "a", "of",
                                  "to", "and", "socket", "frame", "update", "price", "user", "status", "online",
                                  "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "ok", "error", "retry"};
    uint32_t x = 12345;
    size_t i = 0, id = 0;
    char rec[256];
    while (i < n) {
        int k = snprintf(rec, sizeof rec, "{\"id\":%zu,\"user\":\"u%u\",\"text\":\"", id++, (x >> 8) % 1000);
        for (int w = 0; w < 8; w++) {
            x = x * 1103515245u + 12345u;
            k += snprintf(rec + k, sizeof rec - (size_t)k, "%s%s", w ? " " : "", words[(x >> 16) % 28]);
        }
        k += snprintf(rec + k, sizeof rec - (size_t)k, "\"},");
        for (int j = 0; j < k && i < n; j++) out[i++] = (uint8_t)rec[j];
    }
}

static uint8_t *zout;      /* --verify --deflate: inflated bytes */
#define ZOUT_CAP 65536
static size_t wire_len;    /* payload bytes on the wire per message (compressed with --deflate) */

static void build_frames(void) {
    size_t n = opt.size;
    uint8_t hdr[14];
    size_t h = 0;
    expect = malloc(n ? n : 1);
    if (!expect) die("out of memory");
    const uint8_t *body = expect;
    uint8_t *zbody = NULL;
    if (opt.deflate) {
        fill_json(expect, n);
        /* raw deflate, sync flush, minus the 00 00 ff ff tail (RFC 7692 7.2.1) */
        z_stream z = {0};
        if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) die("deflateInit2");
        size_t cap = deflateBound(&z, n) + 16;
        zbody = malloc(cap);
        if (!zbody) die("out of memory");
        z.next_in = expect;
        z.avail_in = (uInt)n;
        z.next_out = zbody;
        z.avail_out = (uInt)cap;
        if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in) die("deflate failed");
        n = cap - z.avail_out;
        if (n >= 4 && !memcmp(zbody + n - 4, "\x00\x00\xff\xff", 4)) n -= 4;
        deflateEnd(&z);
        body = zbody;
        if (opt.verify && !(zout = malloc(ZOUT_CAP))) die("out of memory");
    } else if (opt.envelope) {
        static const char head[] = "{\"cmd\":\"e\",\"param\":\"";
        memcpy(expect, head, sizeof head - 1);
        memset(expect + sizeof head - 1, 'a', n - (sizeof head - 1) - 2);
        memcpy(expect + n - 2, "\"}", 2);
    } else {
        for (size_t i = 0; i < n; i++) /* printable ASCII: valid as text too */
            expect[i] = (uint8_t)('a' + (i * 7 + i / 26) % 26);
    }
    wire_len = n;
    hdr[h++] = (uint8_t)(0x80 | (opt.deflate ? 0x40 : 0) | (opt.binary ? 2 : 1));
    if (n < 126) hdr[h++] = (uint8_t)(0x80 | n);
    else if (n <= 0xffff) { hdr[h++] = 0x80 | 126; hdr[h++] = (uint8_t)(n >> 8); hdr[h++] = (uint8_t)n; }
    else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(hdr + h, mask_key, 4);
    h += 4;
    frame_len = h + n;
    size_t copies = (size_t)opt.inflight + 1;
    frames = malloc(frame_len * copies);
    if (!frames) die("out of memory");
    memcpy(frames, hdr, h);
    for (size_t i = 0; i < n; i++) frames[h + i] = body[i] ^ mask_key[i & 3];
    free(zbody);
    for (size_t c = 1; c < copies; c++) memcpy(frames + c * frame_len, frames, frame_len);
}

static void set_events(conn *c, int out) {
    if (c->wantout == out) return;
    struct epoll_event ev = {.events = (c->paused ? 0 : EPOLLIN) | EPOLLRDHUP | (out ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev)) die("epoll_ctl: %s", strerror(errno));
    c->wantout = (uint8_t)out;
}

/* read(2) and write(2), through TLS on a wss:// connection: -1 with EAGAIN
 * while the session waits for the socket, 0 at its end. */
static ssize_t io_read(conn *c, void *buf, size_t n) {
    if (!c->ssl) return read(c->fd, buf, n);
    int r = SSL_read(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : EIO;
    return -1;
}

static ssize_t io_write(conn *c, const void *buf, size_t n) {
    if (!c->ssl) return write(c->fd, buf, n);
    int r = SSL_write(c->ssl, buf, (int)(n > (1u << 30) ? (1u << 30) : n));
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : EPIPE;
    return -1;
}

static void conn_close(conn *c, int by_peer) {
    if (c->state == C_DONE) return;
    if (c->state == C_CONNECTING || c->state == C_TLS || c->state == C_HANDSHAKE) {
        n_connecting--;
        n_failed++;
    } else {
        n_open--;
    }
    if (by_peer && c->state != C_CLOSING) n_closed_by_peer++;
    c->state = C_DONE;
    close(c->fd);
    c->fd = -1;
    free(c->hs);
    c->hs = NULL;
    free(c->ctl);
    c->ctl = NULL;
    free(c->msg);
    c->msg = NULL;
    if (c->zs) { inflateEnd(c->zs); free(c->zs); c->zs = NULL; }
    SSL_free(c->ssl);
    c->ssl = NULL;
}

/* --verify --deflate: inflate k bytes of a compressed echo (or, with tail, the
 * 00 00 ff ff that ends it) and compare with what was sent. */
static void verify_inflate(conn *c, const uint8_t *p, size_t k) {
    c->zs->next_in = (Bytef *)p;
    c->zs->avail_in = (uInt)k;
    do {
        c->zs->next_out = zout;
        c->zs->avail_out = ZOUT_CAP;
        int r = inflate(c->zs, Z_SYNC_FLUSH);
        if (r != Z_OK && r != Z_BUF_ERROR) { verify_errors++; return; }
        size_t got = ZOUT_CAP - c->zs->avail_out;
        if (c->poff + got > opt.size || memcmp(zout, expect + c->poff, got)) verify_errors++;
        c->poff += got;
        if (r == Z_BUF_ERROR) return;
    } while (c->zs->avail_in || c->zs->avail_out == 0);
}

static void start_connect(conn *c) {
    const target *t = &targets[c->tgt];
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (raise the open-file limit?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.mode == 2 && c != conns && !opt.read_during_joins) {
        int small = 4096; /* before connect: the window scale still follows the sysctl maximum */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    c->fd = fd;
    c->state = C_CONNECTING;
    n_connecting++;
    n_started++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)(c - conns)};
    c->wantout = 1;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)) die("epoll_ctl: %s", strerror(errno));
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) && errno != EINPROGRESS) {
        fprintf(stderr, "wsload: connect: %s\n", strerror(errno));
        conn_close(c, 0);
    }
}

/* Write what is owed. Frames are identical, so the bytes to write are always a
 * run inside `frames` starting at wpos. */
static void flush(conn *c) {
    if (c->owed) {
        uint64_t t = now_cached;
        for (uint32_t i = 0; i < c->owed; i++) c->ts[(c->ts_head + c->inflight + i) % (uint32_t)opt.inflight] = t;
        c->inflight += c->owed;
        c->wleft += (uint64_t)c->owed * frame_len;
        c->owed = 0;
    }
    while (c->wleft) {
        ssize_t n = io_write(c, frames + c->wpos, c->wleft);
        if (n < 0) {
            if (errno == EAGAIN) { set_events(c, 1); return; }
            if (errno == EINTR) continue;
            conn_close(c, 1);
            return;
        }
        c->wleft -= (uint64_t)n;
        c->wpos = (uint32_t)((c->wpos + (uint64_t)n) % frame_len);
    }
    set_events(c, 0);
}

static int publisher_busy(const conn *c);

static void send_raw(conn *c, const uint8_t *p, size_t n) { /* control frames; rare, best effort */
    if (c->wleft || publisher_busy(c)) return; /* would interleave inside a data frame; skip (only pongs / close at the end) */
    while (n) {
        ssize_t w = io_write(c, p, n);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void send_control(conn *c, uint8_t op, const uint8_t *payload, size_t n) {
    uint8_t f[6 + 125];
    if (n > 125) n = 125;
    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)(0x80 | n);
    memcpy(f + 2, mask_key, 4);
    for (size_t i = 0; i < n; i++) f[6 + i] = payload[i] ^ mask_key[i & 3];
    send_raw(c, f, 6 + n);
}

static void send_close(conn *c) {
    if (c->state != C_OPEN) return;
    const uint8_t code[2] = {0x03, 0xe8}; /* 1000 */
    c->owed = 0;
    if (c->wleft) { conn_close(c, 0); return; } /* stuck mid-frame: a close frame cannot follow; abort */
    send_control(c, 8, code, 2);
    c->state = C_CLOSING;
}

static void fanout_message(conn *c);

static void message_done(conn *c) {
    if (opt.mode == 2) { fanout_message(c); return; }
    msgs_total++;
    if (!c->inflight) { unexpected_frames++; return; }
    uint64_t sent = c->ts[c->ts_head];
    c->ts_head = (c->ts_head + 1) % (uint32_t)opt.inflight;
    c->inflight--;
    if (measuring) {
        msgs_win++;
        bytes_win += opt.size;
        hrecord(&lat, now_cached - sent);
    }
    if (sending) c->owed++;
}

/* Parse server frames: headers only; payload bytes are skipped (or compared
 * with --verify). Control frame payloads are collected to answer them. */
static void on_frames(conn *c, const uint8_t *p, size_t n) {
    while (n) {
        if (c->skip) {
            size_t k = c->skip < n ? (size_t)c->skip : n;
            if (c->op >= 8) {
                if (c->ctl) memcpy(c->ctl + c->ctln, p, k);
                c->ctln += (uint32_t)k;
            } else if (c->msg) {
                if (c->mlen < msg_cap) memcpy(c->msg + c->mlen, p, k < msg_cap - c->mlen ? k : msg_cap - c->mlen);
                c->mlen += (uint32_t)k;
            } else if (opt.verify && c->zmsg) {
                verify_inflate(c, p, k);
            } else if (opt.verify) {
                if (c->poff + k > opt.size || memcmp(p, expect + c->poff, k)) verify_errors++;
                c->poff += k;
            }
            c->skip -= k;
            p += k;
            n -= k;
            if (c->skip) return;
        } else {
            /* header: 2 bytes, then 2 or 8 of length (servers do not mask) */
            const uint8_t *h;
            size_t need;
            if (c->hlen) {
                while (c->hlen < 2 && n) { c->hdr[c->hlen++] = *p++; n--; }
                if (c->hlen < 2) return;
                need = 2 + ((c->hdr[1] & 127) == 126 ? 2 : (c->hdr[1] & 127) == 127 ? 8 : 0) + ((c->hdr[1] & 0x80) ? 4 : 0);
                while (c->hlen < need && n) { c->hdr[c->hlen++] = *p++; n--; }
                if (c->hlen < need) return;
                h = c->hdr;
                c->hlen = 0;
            } else {
                if (n < 2) { c->hdr[0] = p[0]; c->hlen = 1; return; }
                need = 2 + ((p[1] & 127) == 126 ? 2 : (p[1] & 127) == 127 ? 8 : 0) + ((p[1] & 0x80) ? 4 : 0);
                if (n < need) { memcpy(c->hdr, p, n); c->hlen = (uint8_t)n; return; }
                h = p;
                p += need;
                n -= need;
            }
            uint64_t len = h[1] & 127;
            if (len == 126) len = ((uint64_t)h[2] << 8) | h[3];
            else if (len == 127) { len = 0; for (int i = 0; i < 8; i++) len = (len << 8) | h[2 + i]; }
            c->fin = h[0] >> 7;
            uint8_t op = h[0] & 15;
            if (op >= 8) {
                if (len > 125) { conn_close(c, 1); return; }
                free(c->ctl);
                c->ctl = malloc(126);
                c->ctln = 0;
            } else if (op != 0) {
                c->poff = 0;
                c->mlen = 0;
                c->zmsg = (h[0] & 0x40) != 0;
                if (c->zmsg && opt.verify) {
                    if (!c->zs) {
                        if (!(c->zs = calloc(1, sizeof *c->zs))) die("out of memory");
                        if (inflateInit2(c->zs, -15) != Z_OK) die("inflateInit2");
                    } else {
                        inflateReset(c->zs); /* server_no_context_takeover */
                    }
                }
            }
            c->op = op;
            c->skip = len;
            if (op < 8 && measuring) rx_payload_win += len;
            if (len && n) continue;
            if (len) return;
        }
        /* a whole frame has been consumed */
        if (c->op >= 8) {
            if (c->op == 9) { pings++; send_control(c, 10, c->ctl, c->ctln); }
            else if (c->op == 8) {
                if (c->state == C_OPEN) {
                    static int shown;
                    if (!shown++)
                        fprintf(stderr, "wsload: the server closed a connection (code %d)\n",
                                c->ctln >= 2 ? (c->ctl[0] << 8 | c->ctl[1]) : 1005);
                    send_control(c, 8, c->ctl, c->ctln >= 2 ? 2 : 0);
                }
                free(c->ctl); c->ctl = NULL;
                conn_close(c, 1);
                return;
            }
            free(c->ctl);
            c->ctl = NULL;
            c->op = 0;
        } else if (c->fin) {
            if (c->zmsg) {
                msgs_compressed++;
                if (opt.verify) verify_inflate(c, (const uint8_t *)"\x00\x00\xff\xff", 4);
            }
            if (opt.verify && c->poff != opt.size) verify_errors++;
            message_done(c);
        }
    }
}

static void on_handshake(conn *c) {
    if (!c->hs && !(c->hs = malloc(1024))) die("out of memory");
    ssize_t r = io_read(c, c->hs + c->hsn, 1023 - c->hsn);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) { conn_close(c, 1); return; }
    c->hsn += (uint16_t)r;
    c->hs[c->hsn] = 0;
    char *end = strstr(c->hs, "\r\n\r\n");
    if (!end) {
        if (c->hsn >= 1023) { fprintf(stderr, "wsload: response head too long\n"); conn_close(c, 0); }
        return;
    }
    if (strncmp(c->hs, "HTTP/1.1 101", 12) || !strstr(c->hs, ACCEPT)) {
        static int shown;
        if (!shown++) fprintf(stderr, "wsload: handshake refused: %.*s\n", (int)strcspn(c->hs, "\r\n"), c->hs);
        conn_close(c, 0);
        return;
    }
    if (opt.deflate && !strcasestr(c->hs, "permessage-deflate")) {
        static int shown;
        if (!shown++) fprintf(stderr, "wsload: the server did not accept permessage-deflate\n");
        conn_close(c, 0);
        return;
    }
    size_t head = (size_t)(end + 4 - c->hs);
    size_t extra = c->hsn - head;
    c->state = C_OPEN;
    n_connecting--;
    n_open++;
    if (opt.mode == 0) {
        c->ts = calloc((size_t)opt.inflight, sizeof *c->ts);
        if (!c->ts) die("out of memory");
    }
    if (opt.mode == 2 && c != conns) { /* conns[0] is the publisher */
        if (!(c->msg = malloc(msg_cap))) die("out of memory");
        c->next = 1;
        if (!opt.read_during_joins) {
            c->paused = 1;
            struct epoll_event ev = {.events = EPOLLRDHUP, .data.u32 = (uint32_t)(c - conns)};
            c->wantout = 0;
            if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev)) die("epoll_ctl: %s", strerror(errno));
        }
    }
    if (extra) on_frames(c, (uint8_t *)c->hs + head, extra);
    if (c->state != C_DONE) { free(c->hs); c->hs = NULL; }
}

static void on_event(conn *c, uint32_t ev) {
    if (c->state == C_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            static int shown;
            if (!shown++) fprintf(stderr, "wsload: connect: %s\n", strerror(err));
            conn_close(c, 0);
            return;
        }
        const target *t = &targets[c->tgt];
        if (t->tls) {
            if (!(c->ssl = SSL_new(tls_ctx))) die("SSL_new failed");
            SSL_set_fd(c->ssl, c->fd);
            SSL_set_tlsext_host_name(c->ssl, "localhost");
            SSL_set_connect_state(c->ssl);
            c->state = C_TLS;
        } else {
            if (write(c->fd, t->request, t->request_len) != (ssize_t)t->request_len) { conn_close(c, 0); return; }
            c->state = C_HANDSHAKE;
            set_events(c, 0);
            return;
        }
    }
    if (c->state == C_TLS) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                set_events(c, e == SSL_ERROR_WANT_WRITE);
                return;
            }
            static int shown;
            char why[160] = "";
            ERR_error_string_n(ERR_get_error(), why, sizeof why);
            ERR_clear_error();
            if (!shown++) fprintf(stderr, "wsload: TLS handshake failed: %s\n", why);
            conn_close(c, 0);
            return;
        }
        const target *t = &targets[c->tgt];
        if (io_write(c, t->request, t->request_len) != (ssize_t)t->request_len) { conn_close(c, 0); return; }
        c->state = C_HANDSHAKE;
        set_events(c, 0);
        return;
    }
    if (c->state == C_HANDSHAKE) {
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) on_handshake(c);
        return;
    }
    if (ev & EPOLLIN || ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        for (;;) {
            ssize_t r = io_read(c, rbuf, rbuf_cap);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                conn_close(c, 1);
                return;
            }
            if (r == 0) { conn_close(c, 1); return; }
            last_rx = now_cached;
            on_frames(c, rbuf, (size_t)r);
            if (c->state == C_DONE) return;
            /* level-triggered: no extra read to see EAGAIN (TLS returns a record
             * at a time, so a short read says nothing: read on) */
            if ((size_t)r < rbuf_cap && !c->ssl) break;
        }
    }
    if (c->state == C_OPEN && (c->owed || (c->wleft && (ev & EPOLLOUT)))) flush(c);
    if (opt.mode == 2 && c == conns && c->state == C_OPEN && (ev & EPOLLOUT)) publisher_flush();
}

static int loop_once(int timeout_ms) {
    static struct epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        die("epoll_wait: %s", strerror(errno));
    }
    now_cached = now_ns();
    for (int i = 0; i < n; i++) on_event(&conns[evs[i].data.u32], evs[i].events);
    return n;
}

static void raise_nofile(int need) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)need + 64;
    if (rl.rlim_cur >= want) return;
    if (rl.rlim_max < want) rl.rlim_max = want; /* works as root */
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl)) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < want)
            die("need %llu open files, the hard limit is %llu", (unsigned long long)want, (unsigned long long)rl.rlim_max);
    }
}

static volatile sig_atomic_t interrupted;
static void on_signal(int s) { (void)s; interrupted = 1; }

/* fanout, before the measured window: a ping from every connection every 5 s
 * (inbound traffic, so the server's idle timer leaves them alone). */
static void heartbeat(void) {
    static uint64_t last;
    if (opt.mode != 2 || opt.read_during_joins || now_cached - last < 5000000000ull) return;
    last = now_cached;
    for (int i = 0; i < n_conns; i++) /* the publisher too: it is as silent while everyone joins */
        if (conns[i].state == C_OPEN) send_control(&conns[i], 9, NULL, 0);
}

/* Opens every connection, at most `concurrency` handshakes at a time. Returns
 * the seconds it took. */
static double open_all(double limit_s) {
    uint64_t t0 = now_ns();
    int next = 0;
    while (!interrupted) {
        heartbeat();
        while (next < n_conns && n_connecting < opt.concurrency) start_connect(&conns[next++]);
        if (next == n_conns && n_connecting == 0) break;
        loop_once(10);
        if ((now_ns() - t0) / 1e9 > limit_s) {
            fprintf(stderr, "wsload: connecting took over %.0f s; giving up\n", limit_s);
            break;
        }
    }
    return (now_ns() - t0) / 1e9;
}

/* Close handshake for everyone, then wait a little for the server's side. */
static void close_all(void) {
    sending = 0;
    for (int i = 0; i < n_conns; i++) send_close(&conns[i]);
    uint64_t t0 = now_ns();
    while (n_open > 0 && now_ns() - t0 < 2000000000ull && !interrupted) loop_once(10);
    for (int i = 0; i < n_conns; i++)
        if (conns[i].state != C_DONE) conn_close(&conns[i], 0);
}

static void fmt_ns(char *out, size_t cap, double ns) {
    if (ns < 1e3) snprintf(out, cap, "%.0f ns", ns);
    else if (ns < 1e6) snprintf(out, cap, "%.1f us", ns / 1e3);
    else snprintf(out, cap, "%.2f ms", ns / 1e6);
}

/* ---------------------------------------------------------------- fanout */

#define FAN_RING 8192          /* messages tracked at once (power of two, > any in-flight count) */
#define FAN_RATE_CAP 4096      /* --rate: most messages in flight; beyond, publishing waits */

typedef struct {
    uint64_t sent;             /* when the publisher queued it */
    uint32_t got;              /* subscribers that have it */
} fan_pending;
static fan_pending fan_ring[FAN_RING];

static uint8_t *pbuf;          /* publisher: masked frames not yet written */
static size_t pbuf_cap, pbuf_len, pbuf_off;
static uint32_t pub_next = 1;  /* sequence of the next message; 0 is the barrier */
static uint32_t fan_inflight;  /* published, not yet at every subscriber */
static uint64_t fan_completed, fan_deliveries, fan_dups, fan_gaps, fan_other, fan_bad, fan_pub_rx, fan_errors;
static uint64_t fan_deliv_win, fan_msgs_win, fan_pub_win, fan_other_win, fan_cap_hits;
static int fan_ready, fan_publishing;
static uint64_t fan_wire;      /* bytes of one delivered say message (payload), as last seen */

static int publisher_busy(const conn *c) { return opt.mode == 2 && c == conns && pbuf_len > pbuf_off; }

static void publisher_flush(void) {
    conn *c = &conns[0];
    if (c->state != C_OPEN) return;
    while (pbuf_off < pbuf_len) {
        ssize_t n = io_write(c, pbuf + pbuf_off, pbuf_len - pbuf_off);
        if (n < 0) {
            if (errno == EAGAIN) { set_events(c, 1); return; }
            if (errno == EINTR) continue;
            conn_close(c, 1);
            return;
        }
        pbuf_off += (size_t)n;
    }
    pbuf_len = pbuf_off = 0;
    set_events(c, 0);
}

/* Queues one `say` (masked) on the publisher; written by publisher_flush. */
static void publish(uint32_t seq) {
    static char *json;
    static size_t json_cap;
    size_t need = 128 + strlen(opt.channel) + opt.size;
    if (json_cap < need) {
        json_cap = need;
        if (!(json = realloc(json, json_cap))) die("out of memory");
    }
    uint64_t t = now_ns();
    int k = snprintf(json, json_cap, "{\"channel\":\"%s\",\"cmd\":\"say\",\"param\":{\"s\":\"%010" PRIu32 "\",\"t\":\"%020" PRIu64 "\"",
                     opt.channel, seq, t);
    size_t n = (size_t)k;
    if (opt.size) {
        memcpy(json + n, ",\"p\":\"", 6);
        n += 6;
        for (size_t i = 0; i < opt.size; i++) json[n++] = (char)('a' + i % 26);
        json[n++] = '"';
    }
    json[n++] = '}';
    json[n++] = '}';
    if (pbuf_cap - pbuf_len < n + 14) {
        if (pbuf_off) { /* compact first */
            memmove(pbuf, pbuf + pbuf_off, pbuf_len - pbuf_off);
            pbuf_len -= pbuf_off;
            pbuf_off = 0;
        }
        if (pbuf_cap - pbuf_len < n + 14) {
            pbuf_cap = (pbuf_cap + n + 14) * 2;
            if (!(pbuf = realloc(pbuf, pbuf_cap))) die("out of memory");
        }
    }
    uint8_t *f = pbuf + pbuf_len;
    size_t h = 0;
    f[h++] = 0x81; /* FIN, text */
    if (n < 126) f[h++] = (uint8_t)(0x80 | n);
    else { f[h++] = 0x80 | 126; f[h++] = (uint8_t)(n >> 8); f[h++] = (uint8_t)n; }
    memcpy(f + h, mask_key, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) f[h + i] = (uint8_t)json[i] ^ mask_key[i & 3];
    pbuf_len += h + n;
    if (seq) {
        fan_pending *p = &fan_ring[seq & (FAN_RING - 1)];
        p->sent = t;
        p->got = 0;
        fan_inflight++;
        if (measuring) fan_pub_win++;
    }
}

/* Tops up what is in flight: K messages, or what --rate says is due. */
static void publisher_pump(uint64_t start) {
    if (!fan_publishing || conns[0].state != C_OPEN) return;
    if (opt.rate > 0) {
        uint64_t due = (uint64_t)((double)(now_cached - start) * opt.rate / 1e9) + 1;
        while (pub_next <= due) {
            if (fan_inflight >= FAN_RATE_CAP) { fan_cap_hits++; break; }
            publish(pub_next++);
        }
    } else {
        while (fan_inflight < (uint32_t)opt.inflight) publish(pub_next++);
    }
    publisher_flush();
}

static uint64_t digits(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return UINT64_MAX;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    return v;
}

/* A whole text message arrived on a fanout connection. */
static void fanout_message(conn *c) {
    if (!c->msg) { fan_pub_rx++; return; } /* the publisher's own copy, and join traffic */
    const uint8_t *m = c->msg;
    size_t n = c->mlen < msg_cap ? c->mlen : msg_cap;
    if (!memmem(m, n, "\"cmd\":\"say\"", 11)) {
        fan_other++;
        if (measuring) fan_other_win++;
        if (memmem(m, n, "\"cmd\":\"error\"", 13) && !fan_errors++)
            fprintf(stderr, "wsload: the server answered an error: %.*s\n", (int)n, (const char *)m);
        return;
    }
    const uint8_t *ps = memmem(m, n, "\"s\":\"", 5), *pt = memmem(m, n, "\"t\":\"", 5);
    uint64_t seq = ps && ps + 15 <= m + n ? digits(ps + 5, 10) : UINT64_MAX;
    uint64_t sent = pt && pt + 25 <= m + n ? digits(pt + 5, 20) : UINT64_MAX;
    if (seq == UINT64_MAX || sent == UINT64_MAX || seq >= pub_next) {
        if (!fan_bad++) fprintf(stderr, "wsload: unexpected say message: %.*s\n", (int)n, (const char *)m);
        return;
    }
    fan_wire = c->mlen;
    if (seq == 0) { /* barrier */
        if (!c->ready) { c->ready = 1; fan_ready++; }
        return;
    }
    if (seq < c->next) { fan_dups++; return; }
    if (seq > c->next) fan_gaps += seq - c->next;
    c->next = (uint32_t)seq + 1;
    c->uniq++;
    fan_deliveries++;
    if (measuring) {
        fan_deliv_win++;
        hrecord(&lat, now_cached > sent ? now_cached - sent : 0);
    }
    fan_pending *p = &fan_ring[seq & (FAN_RING - 1)];
    if (++p->got == (uint32_t)opt.conns) {
        fan_inflight--;
        fan_completed++;
        if (measuring) {
            fan_msgs_win++;
            hrecord(&done_lat, now_cached - p->sent);
        }
    }
}

static double pids_cpu_s(const int *pids, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double v = proc_cpu_s(pids[i]);
        if (v < 0) return -1;
        sum += v;
    }
    return sum;
}

/* Samples of everything measured over a window. */
typedef struct {
    uint64_t t;
    double cli, srv, aux;
    double cb, ct, cs, ci; /* server core */
    double kb, kt, ks, ki; /* client core */
} sample;

static void take_sample(sample *s, int client_cpu) {
    s->t = now_ns();
    s->cli = rusage_cpu_s();
    s->srv = opt.n_server_pids ? pids_cpu_s(opt.server_pids, opt.n_server_pids) : 0;
    s->aux = opt.n_aux_pids ? pids_cpu_s(opt.aux_pids, opt.n_aux_pids) : 0;
    if (opt.server_cpu >= 0) core_times(opt.server_cpu, &s->cb, &s->ct, &s->cs, &s->ci);
    if (client_cpu >= 0) core_times(client_cpu, &s->kb, &s->kt, &s->ks, &s->ki);
}

static int fanout_main(int client_cpu) {
    int subs = opt.conns;
    msg_cap = (uint32_t)(192 + strlen(opt.channel) + opt.size);
    rbuf_cap = 256 * 1024;
    if (!(rbuf = malloc(rbuf_cap))) die("out of memory");
    conns[0].tgt = 0;
    for (int i = 1; i < n_conns; i++) conns[i].tgt = (uint8_t)((i - 1) % n_targets);

    /* 1. everyone joins */
    double csecs = open_all(300);
    if (n_open != n_conns) die("only %d of %d connections opened (%d failed)", n_open, n_conns, n_failed);
    if (!opt.quiet)
        fprintf(stderr, "wsload: %d subscribers + 1 publisher open in %.3f s over %d server%s; channel %s\n", subs,
                csecs, n_targets, n_targets == 1 ? "" : "s", opt.channel);

    /* 2. everyone reads again; wait for the join traffic to drain, then barriers until every subscriber has one */
    for (int i = 1; i < n_conns; i++) {
        conn *c = &conns[i];
        if (!c->paused || c->state != C_OPEN) continue;
        int big = 256 * 1024;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        c->paused = 0;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (c->wantout ? EPOLLOUT : 0), .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev)) die("epoll_ctl: %s", strerror(errno));
    }
    uint64_t s0 = now_ns(), limit = s0 + (uint64_t)(opt.settle * 1e9);
    now_cached = last_rx = now_ns();
    while (!interrupted && now_cached - last_rx < 300000000ull && now_cached < limit && n_open == n_conns) {
        heartbeat();
        loop_once(50);
    }
    double quiet_s = (now_ns() - s0) / 1e9;
    uint64_t last_progress = 0; /* a barrier sent, or a subscriber newly ready */
    int ready_then = 0, barriers = 0;
    while (!interrupted && fan_ready < subs && now_cached < limit && n_open == n_conns) {
        if (fan_ready != ready_then) { ready_then = fan_ready; last_progress = now_cached; }
        /* another barrier when the last one made no progress for a second
         * (e.g. a Redis subscription that was not active yet) */
        if (!pbuf_len && (!barriers || now_cached - last_progress > 1000000000ull)) {
            publish(0);
            publisher_flush();
            barriers++;
            last_progress = now_cached;
        }
        heartbeat();
        loop_once(10);
    }
    double settle_s = (now_ns() - s0) / 1e9;
    if (fan_ready < subs || n_open != n_conns) {
        fprintf(stderr, "wsload: after %.1f s only %d of %d subscribers saw a barrier (%d of %d connections open%s)\n",
                settle_s, fan_ready, subs, n_open, n_conns, conns[0].state == C_OPEN ? "" : ", not the publisher");
        close_all();
        return 1;
    }
    if (!opt.quiet)
        fprintf(stderr, "wsload: join traffic quiet after %.2f s (%" PRIu64 " other messages), all subscribers in after "
                "%.2f s (%d barrier%s); warming up %.1f s, measuring %.1f s\n", quiet_s, fan_other, settle_s, barriers,
                barriers == 1 ? "" : "s", opt.warmup, opt.duration);

    /* 3. publish: warm-up, then the measured window */
    now_cached = now_ns();
    uint64_t start = now_cached;
    uint64_t wstart = start + (uint64_t)(opt.warmup * 1e9);
    uint64_t wend = wstart + (uint64_t)(opt.duration * 1e9);
    sample a = {0}, b = {0};
    fan_publishing = 1;
    int tick = opt.rate > 0 ? 1 : 5;
    while (!interrupted) {
        publisher_pump(start);
        loop_once(tick);
        uint64_t t = now_cached;
        if (!measuring && !a.t && t >= wstart) { take_sample(&a, client_cpu); measuring = 1; }
        if (measuring && t >= wend) { take_sample(&b, client_cpu); measuring = 0; break; }
        if (n_open < n_conns) {
            fprintf(stderr, "wsload: %d connections closed by the server during the run\n", n_conns - n_open);
            break;
        }
    }
    if (!b.t) { /* interrupted or connections lost */
        take_sample(&b, client_cpu);
        if (!a.t) a = b;
        measuring = 0;
    }

    /* 4. drain: everything published must reach every subscriber */
    fan_publishing = 0;
    uint64_t d0 = now_ns();
    while (fan_inflight && n_open == n_conns && now_ns() - d0 < 10000000000ull && !interrupted) {
        publisher_flush();
        loop_once(5);
    }
    double drain_s = (now_ns() - d0) / 1e9;
    uint64_t published = pub_next - 1, uniq = 0;
    for (int i = 1; i < n_conns; i++) uniq += conns[i].uniq;
    uint64_t lost = published * (uint64_t)subs - uniq;
    close_all();

    double wall = (b.t - a.t) / 1e9;
    double dps = wall > 0 ? fan_deliv_win / wall : 0, mps = wall > 0 ? fan_msgs_win / wall : 0;
    double pps = wall > 0 ? fan_pub_win / wall : 0;
    double srv_us = (opt.n_server_pids && fan_deliv_win && a.srv >= 0 && b.srv >= 0) ? (b.srv - a.srv) * 1e6 / fan_deliv_win : -1;
    double srv_pct = opt.n_server_pids && wall > 0 ? (b.srv - a.srv) / wall * 100 : -1;
    double aux_us = (opt.n_aux_pids && fan_msgs_win) ? (b.aux - a.aux) * 1e6 / fan_msgs_win : -1;
    double aux_pct = opt.n_aux_pids && wall > 0 ? (b.aux - a.aux) / wall * 100 : -1;
    double core_us = (opt.server_cpu >= 0 && fan_deliv_win) ? (b.cb - a.cb) * 1e6 / fan_deliv_win : -1;
    double core_pct = (opt.server_cpu >= 0 && b.ct > a.ct) ? (b.cb - a.cb) / (b.ct - a.ct) * 100 : -1;
    double core_steal = (opt.server_cpu >= 0 && b.ct > a.ct) ? (b.cs - a.cs) / (b.ct - a.ct) * 100 : -1;
    double cli_pct = wall > 0 ? (b.cli - a.cli) / wall * 100 : 0;
    double cli_us = fan_deliv_win ? (b.cli - a.cli) * 1e6 / fan_deliv_win : -1;
    double ccore_pct = (client_cpu >= 0 && b.kt > a.kt) ? (b.kb - a.kb) / (b.kt - a.kt) * 100 : -1;
    double p50 = hpercentile(&lat, 50), p99 = hpercentile(&lat, 99), p999 = hpercentile(&lat, 99.9);
    double d50 = hpercentile(&done_lat, 50), d99 = hpercentile(&done_lat, 99), d999 = hpercentile(&done_lat, 99.9);
    int ok = n_closed_by_peer == 0 && lost == 0 && fan_dups == 0 && fan_bad == 0 && fan_errors == 0 && fan_deliv_win > 0;
    if (!opt.quiet) {
        char x[6][32];
        fmt_ns(x[0], 32, p50); fmt_ns(x[1], 32, p99); fmt_ns(x[2], 32, p999);
        fmt_ns(x[3], 32, d50); fmt_ns(x[4], 32, d99); fmt_ns(x[5], 32, d999);
        printf("fanout %s:%d%s%s: %d subscribers over %d server%s, %" PRIu64 " B say messages, ", opt.host, opt.port,
               opt.path, n_targets > 1 ? " (and others)" : "", subs, n_targets, n_targets == 1 ? "" : "s", fan_wire);
        if (opt.rate > 0) printf("%.0f msgs/s offered", opt.rate);
        else printf("%d in flight", opt.inflight);
        printf(", %.2f s\n", wall);
        printf("  %.0f deliveries/s, %.0f messages/s complete (%.0f published/s)\n", dps, mps, pps);
        printf("  delivery latency p50 %s, p99 %s, p99.9 %s; to the last subscriber p50 %s, p99 %s, p99.9 %s\n", x[0],
               x[1], x[2], x[3], x[4], x[5]);
        if (opt.n_server_pids)
            printf("  server process%s: %.3f us CPU/delivery (%.0f%% of a core, utime+stime)\n",
                   opt.n_server_pids > 1 ? "es" : "", srv_us, srv_pct);
        if (opt.n_aux_pids) printf("  aux process%s: %.2f us CPU/message (%.0f%% of a core)\n",
                                   opt.n_aux_pids > 1 ? "es" : "", aux_us, aux_pct);
        if (opt.server_cpu >= 0)
            printf("  server core %d: %.3f us busy/delivery, softirq included (%.0f%% busy, %.0f%% steal)\n",
                   opt.server_cpu, core_us, core_pct, core_steal);
        printf("  wsload: %.0f%% of a core (getrusage), %.3f us/delivery", cli_pct, cli_us);
        if (client_cpu >= 0) printf("; its core %d %.0f%% busy, softirq included", client_cpu, ccore_pct);
        printf("\n  lost %" PRIu64 ", duplicated %" PRIu64 " (of %" PRIu64 " published x %d); other messages in the "
               "window %" PRIu64 "; drained in %.2f s%s\n", lost, fan_dups, published, subs, fan_other_win, drain_s,
               fan_cap_hits ? "; the in-flight cap held publishing back" : "");
    }
    if (opt.result)
        printf("RESULT mode=fanout subs=%d servers=%d size=%zu wire_bytes=%" PRIu64 " inflight=%d rate=%.0f secs=%.3f "
               "deliveries=%" PRIu64 " deliveries_per_s=%.0f msgs_per_s=%.0f published_per_s=%.0f p50_us=%.2f "
               "p99_us=%.2f p999_us=%.2f max_us=%.2f done_p50_us=%.2f done_p99_us=%.2f done_p999_us=%.2f "
               "srv_us_per_delivery=%.4f srv_pct=%.1f aux_us_per_msg=%.3f aux_pct=%.1f core_us_per_delivery=%.4f "
               "core_pct=%.1f core_steal_pct=%.1f cli_pct=%.1f cli_us_per_delivery=%.4f cli_core_pct=%.1f "
               "lost=%" PRIu64 " dup=%" PRIu64 " gaps=%" PRIu64 " bad=%" PRIu64 " errors=%" PRIu64 " other_in_window=%" PRIu64
               " published=%" PRIu64 " connect_s=%.3f quiet_s=%.3f settle_s=%.3f drain_s=%.3f cap_hits=%" PRIu64
               " closed_by_peer=%d ok=%d\n",
               subs, n_targets, opt.size, fan_wire, opt.inflight, opt.rate, wall, fan_deliv_win, dps, mps, pps,
               p50 / 1e3, p99 / 1e3, p999 / 1e3, lat.max / 1e3, d50 / 1e3, d99 / 1e3, d999 / 1e3, srv_us, srv_pct,
               aux_us, aux_pct, core_us, core_pct, core_steal, cli_pct, cli_us, ccore_pct, lost, fan_dups, fan_gaps,
               fan_bad, fan_errors, fan_other_win, published, csecs, quiet_s, settle_s, drain_s, fan_cap_hits,
               n_closed_by_peer, ok);
    fflush(stdout);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    for (int i = 0; i < n_targets; i++) resolve_peer(&targets[i]);
    n_conns = opt.conns + (opt.mode == 2);
    raise_nofile(n_conns);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    conns = calloc((size_t)n_conns, sizeof *conns);
    if (!conns) die("out of memory");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1: %s", strerror(errno));
    int client_cpu = pinned_cpu();
    if (opt.mode == 2) return fanout_main(client_cpu);

    if (opt.mode == 1) { /* ---------------- idle */
        rbuf_cap = 4096;
        rbuf = malloc(rbuf_cap);
        long long rss0 = -1, anon0 = -1, rss1 = -1, anon1 = -1;
        if (opt.server_pid && proc_rss(opt.server_pid, &rss0, &anon0)) die("cannot read /proc/%d/status", opt.server_pid);
        double secs = open_all(120);
        double rate = n_open / (secs > 0 ? secs : 1e-9);
        /* hold: keep answering pings; sample RSS at the end of the hold */
        uint64_t t0 = now_ns();
        while (!interrupted && (now_ns() - t0) / 1e9 < opt.hold) loop_once(50);
        if (opt.server_pid) proc_rss(opt.server_pid, &rss1, &anon1);
        int held = n_open;
        if (!opt.quiet) {
            printf("idle %s:%d%s: %d of %d connections open in %.3f s: %.0f connections/s (%d failed, %d at once)\n",
                   opt.host, opt.port, opt.path, held, opt.conns, secs, rate, n_failed, opt.concurrency);
            if (opt.server_pid)
                printf("server RSS %.1f MiB -> %.1f MiB after %.1f s: %.0f B per connection (anonymous: %.0f B)\n",
                       rss0 / 1048576.0, rss1 / 1048576.0, opt.hold, held ? (double)(rss1 - rss0) / held : 0,
                       held ? (double)(anon1 - anon0) / held : 0);
        }
        if (!opt.quiet && (pings || n_closed_by_peer))
            printf("%" PRIu64 " pings answered; %d connections closed by the server during the hold\n", pings,
                   n_closed_by_peer);
        if (opt.result)
            printf("RESULT mode=idle conns=%d open=%d failed=%d connect_s=%.3f conns_per_s=%.0f rss_before=%lld "
                   "rss_after=%lld rss_per_conn=%.0f anon_per_conn=%.0f pings=%" PRIu64 " closed_by_peer=%d\n",
                   opt.conns, held, n_failed, secs, rate, rss0, rss1, held ? (double)(rss1 - rss0) / held : 0,
                   held ? (double)(anon1 - anon0) / held : 0, pings, n_closed_by_peer);
        fflush(stdout);
        close_all();
        return held == opt.conns ? 0 : 1;
    }

    /* ---------------- echo */
    build_frames();
    rbuf_cap = 256 * 1024;
    rbuf = malloc(rbuf_cap);
    double csecs = open_all(60);
    if (n_open != opt.conns) die("only %d of %d connections opened (%d failed)", n_open, opt.conns, n_failed);
    if (!opt.quiet)
        fprintf(stderr, "wsload: %d connections open in %.3f s; warming up %.1f s, measuring %.1f s\n", n_open, csecs,
                opt.warmup, opt.duration);

    now_cached = now_ns();
    sending = 1;
    for (int i = 0; i < opt.conns; i++) {
        conns[i].owed = (uint32_t)opt.inflight;
        flush(&conns[i]);
    }
    uint64_t start = now_ns();
    uint64_t wstart = start + (uint64_t)(opt.warmup * 1e9);
    uint64_t wend = wstart + (uint64_t)(opt.duration * 1e9);
    double srv0 = 0, srv1 = 0, cli0 = 0, cli1 = 0;
    double cb0 = 0, ct0 = 0, cs0 = 0, cb1 = 0, ct1 = 0, cs1 = 0, ci0 = 0, ci1 = 0; /* server core */
    double kb0 = 0, kt0 = 0, ks0 = 0, kb1 = 0, kt1 = 0, ks1 = 0, ki0 = 0, ki1 = 0; /* client core */
    uint64_t t_begin = 0, t_end = 0;
    while (!interrupted) {
        loop_once(5);
        uint64_t t = now_cached;
        if (!measuring && t >= wstart && !t_begin) {
            measuring = 1;
            t_begin = now_ns();
            cli0 = rusage_cpu_s();
            if (opt.server_pid) srv0 = proc_cpu_s(opt.server_pid);
            if (opt.server_cpu >= 0) core_times(opt.server_cpu, &cb0, &ct0, &cs0, &ci0);
            if (client_cpu >= 0) core_times(client_cpu, &kb0, &kt0, &ks0, &ki0);
        }
        if (measuring && t >= wend) {
            measuring = 0;
            t_end = now_ns();
            cli1 = rusage_cpu_s();
            if (opt.server_pid) srv1 = proc_cpu_s(opt.server_pid);
            if (opt.server_cpu >= 0) core_times(opt.server_cpu, &cb1, &ct1, &cs1, &ci1);
            if (client_cpu >= 0) core_times(client_cpu, &kb1, &kt1, &ks1, &ki1);
            break;
        }
        if (n_open < opt.conns) {
            fprintf(stderr, "wsload: %d connections closed by the server during the run\n", opt.conns - n_open);
            break;
        }
    }
    if (!t_end) { /* interrupted or connections lost: report what we have */
        t_end = now_ns();
        cli1 = rusage_cpu_s();
        if (opt.server_pid) srv1 = proc_cpu_s(opt.server_pid);
        if (opt.server_cpu >= 0) core_times(opt.server_cpu, &cb1, &ct1, &cs1, &ci1);
        if (client_cpu >= 0) core_times(client_cpu, &kb1, &kt1, &ks1, &ki1);
        if (!t_begin) { t_begin = start; cli0 = cli1; srv0 = srv1; cb0 = cb1; ct0 = ct1; cs0 = cs1; ci0 = ci1; kb0 = kb1; kt0 = kt1; ks0 = ks1; ki0 = ki1; }
        measuring = 0;
    }
    /* drain what is in flight (so the server is not writing into a closed socket), then close */
    sending = 0;
    uint64_t d0 = now_ns();
    int pending = 1;
    while (pending && now_ns() - d0 < 1000000000ull && !interrupted) {
        loop_once(5);
        pending = 0;
        for (int i = 0; i < opt.conns && !pending; i++) pending = conns[i].state == C_OPEN && conns[i].inflight;
    }
    close_all();

    double wall = (t_end - t_begin) / 1e9;
    double mps = wall > 0 ? msgs_win / wall : 0;
    double bps = wall > 0 ? (double)bytes_win / wall : 0;
    double srv_us = (opt.server_pid && msgs_win) ? (srv1 - srv0) * 1e6 / msgs_win : -1;
    double srv_pct = opt.server_pid ? (srv1 - srv0) / wall * 100 : -1;
    double core_us = (opt.server_cpu >= 0 && msgs_win) ? (cb1 - cb0) * 1e6 / msgs_win : -1;
    double si_us = (opt.server_cpu >= 0 && msgs_win) ? (ci1 - ci0) * 1e6 / msgs_win : -1;
    double core_pct = (opt.server_cpu >= 0 && ct1 > ct0) ? (cb1 - cb0) / (ct1 - ct0) * 100 : -1;
    double core_steal = (opt.server_cpu >= 0 && ct1 > ct0) ? (cs1 - cs0) / (ct1 - ct0) * 100 : -1;
    double cli_pct = wall > 0 ? (cli1 - cli0) / wall * 100 : 0;
    double ccore_pct = (client_cpu >= 0 && kt1 > kt0) ? (kb1 - kb0) / (kt1 - kt0) * 100 : -1;
    double p50 = hpercentile(&lat, 50), p99 = hpercentile(&lat, 99), p999 = hpercentile(&lat, 99.9);
    if (!opt.quiet) {
        char a[32], b[32], c[32], d[32];
        fmt_ns(a, sizeof a, p50);
        fmt_ns(b, sizeof b, p99);
        fmt_ns(c, sizeof c, p999);
        fmt_ns(d, sizeof d, (double)lat.max);
        printf("echo %s:%d%s: %d conns x %zu B %s, %d in flight, %.2f s\n", opt.host, opt.port, opt.path, opt.conns,
               opt.size, opt.binary ? "binary" : "text", opt.inflight, wall);
        printf("  %.0f msgs/s, %.1f MB/s each way; latency p50 %s, p99 %s, p99.9 %s, max %s\n", mps, bps / 1e6, a, b, c,
               d);
        if (opt.server_pid)
            printf("  server process: %.2f us CPU/msg (%.0f%% of a core, utime+stime)\n", srv_us, srv_pct);
        if (opt.server_cpu >= 0)
            printf("  server core %d: %.2f us busy/msg, softirq included (%.0f%% busy, %.0f%% steal); its softirq "
                   "%.2f us/msg\n", opt.server_cpu, core_us, core_pct, core_steal, si_us);
        printf("  wsload: %.0f%% of a core (getrusage)", cli_pct);
        if (client_cpu >= 0) printf("; its core %d %.0f%% busy, softirq included", client_cpu, ccore_pct);
        printf("\n");
        if (verify_errors || unexpected_frames || pings)
            printf("  verify errors %" PRIu64 ", unexpected frames %" PRIu64 ", pings %" PRIu64 "\n", verify_errors,
                   unexpected_frames, pings);
    }
    if (opt.result)
        printf("RESULT mode=echo conns=%d size=%zu inflight=%d secs=%.3f msgs=%" PRIu64 " msgs_per_s=%.0f "
               "bytes_per_s=%.0f p50_us=%.2f p99_us=%.2f p999_us=%.2f max_us=%.2f srv_us_per_msg=%.3f srv_pct=%.1f "
               "core_us_per_msg=%.3f core_si_us_per_msg=%.3f core_pct=%.1f core_steal_pct=%.1f cli_pct=%.1f cli_core_pct=%.1f "
               "verify_errors=%" PRIu64 " closed_by_peer=%d deflate=%d wire_bytes=%zu compressed=%" PRIu64
               " echo_wire_bytes=%.1f\n",
               opt.conns, opt.size, opt.inflight, wall, msgs_win, mps, bps, p50 / 1e3, p99 / 1e3, p999 / 1e3,
               lat.max / 1e3, srv_us, srv_pct, core_us, si_us, core_pct, core_steal, cli_pct, ccore_pct, verify_errors,
               n_closed_by_peer, opt.deflate, wire_len, msgs_compressed,
               msgs_win ? (double)rx_payload_win / (double)msgs_win : 0.0);
    fflush(stdout);
    return (verify_errors || n_closed_by_peer) ? 1 : 0;
}
