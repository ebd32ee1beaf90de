/*
 * Writes the seed corpora under fuzz/seeds/<target>/ (scripts/fuzz seeds):
 * small valid inputs in each target's input format, so a run starts from
 * real handshakes and frames (masked, fragmented, control, compressed)
 * instead of having to discover the formats. Built with the C core itself,
 * so the frames and compressed payloads are what the library makes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../CSources/CWebSocket/include/cwebsocket.h"

static const char *root;

static void put(const char *target, const char *name, const void *data, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(root, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
        fprintf(stderr, "gen_seeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* A growable byte string. */
typedef struct bytes {
    uint8_t d[1 << 17];
    size_t n;
} bytes;

static void add(bytes *b, const void *p, size_t n) {
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void add1(bytes *b, uint8_t v) { add(b, &v, 1); }
static void adds(bytes *b, const char *s) { add(b, s, strlen(s)); }

static void frame(bytes *b, int fin, int rsv, int op, const void *p, size_t n, int masked) {
    b->n += cws_frame_encode(b->d + b->n, (uint8_t)fin, (uint8_t)rsv, (uint8_t)op, p, n, (uint8_t)masked, 0x37FA213D);
}

static size_t compress_msg(const void *in, size_t n, uint8_t *out, int takeover) {
    cws_deflater *d = cws_deflater_new(6, 8, 15, takeover);
    cws_buffer b = {0};
    cws_deflater_message(d, in, n, &b);
    memcpy(out, b.data, b.len);
    size_t len = b.len;
    cws_buffer_free(&b);
    cws_deflater_free(d);
    return len;
}

static const char json[] = "{\"channel\":\"lobby\",\"cmd\":\"chat\",\"param\":{\"text\":\"hello hello hello hello\"}}";

static void frame_seeds(void) {
    uint8_t comp[512];
    size_t cl = compress_msg(json, sizeof json - 1, comp, 0);
    uint8_t big[300];
    memset(big, 'x', sizeof big);
    static const uint8_t closep[] = {0x03, 0xE8, 'b', 'y', 'e'};
    for (int role = 0; role < 2; role++) {
        int masked = role == 0;
        bytes b = {.n = 0};
        /* [flags][limit][split seed: 4] */
        add1(&b, (uint8_t)(role | (1 << 1))); /* RSV1 allowed */
        add1(&b, 0);
        add(&b, "\x01\x02\x03\x04", 4);
        size_t hdr = b.n;
        frame(&b, 1, 0, CWS_OP_TEXT, "hello", 5, masked);
        frame(&b, 0, 0, CWS_OP_TEXT, "frag", 4, masked);
        frame(&b, 1, 0, CWS_OP_PING, "p", 1, masked);
        frame(&b, 0, 0, CWS_OP_CONTINUATION, "men", 3, masked);
        frame(&b, 1, 0, CWS_OP_CONTINUATION, "ted", 3, masked);
        frame(&b, 1, CWS_RSV1, CWS_OP_TEXT, comp, cl, masked);
        frame(&b, 1, 0, CWS_OP_BINARY, big, sizeof big, masked);
        frame(&b, 1, 0, CWS_OP_PONG, "", 0, masked);
        frame(&b, 1, 0, CWS_OP_CLOSE, closep, sizeof closep, masked);
        put("frame", role ? "client-stream" : "server-stream", b.d, b.n);
        /* A 64-bit length header, then a protocol error. */
        b.n = hdr;
        uint8_t h[CWS_MAX_HEADER_SIZE];
        add(&b, h, cws_frame_header_encode(h, 1, 0, CWS_OP_BINARY, 70000, (uint8_t)masked, 0x11223344));
        add(&b, big, 100);
        put("frame", role ? "client-64bit" : "server-64bit", b.d, b.n);
        b.n = hdr;
        frame(&b, 1, 0, CWS_OP_CONTINUATION, "x", 1, masked);
        put("frame", role ? "client-error" : "server-error", b.d, b.n);
    }
    /* Round-trip mode (flags bit 4): a script of (op, size) pairs. */
    static const uint8_t script[] = {0x12, 0x10, 0x01, 0x05, 0x03, 0x00, 0x40, 0x00, 0x08, 0x03,
                                     0x00, 0x07, 0x83, 0x04, 0x80, 0x05, 0x07, 0x02, 0x0b, 0x10};
    put("frame", "round-trip", script, sizeof script);
}

static const char upgrade[] =
    "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, permessage-deflate\r\n"
    "Sec-WebSocket-Extensions: foo; a=\"b,c\"\r\nCookie: a=b\r\n\r\n";

static void handshake_seeds(void) {
    static const char *reqs[][2] = {
        {"upgrade", upgrade},
        {"offers",
         "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
         "client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=\"12\", x-webkit-deflate-frame\r\n\r\n"},
        {"quoted", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Extensions: permessage-deflate; x=\"aaaaaaaaaaaaaaaaa, permessage-deflate, a\"\r\n"
                   "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"12345678901234567\", "
                   "permessage-deflate\r\n\r\n"},
        {"version-8", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"},
        {"post", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"},
        {"absolute-lf", "GET http://h:80/p?q HTTP/1.1\nHost: h\nUpgrade: WebSocket\nConnection: upgrade\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n"},
        {"http10", "GET / HTTP/1.0\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        bytes b = {.n = 0};
        /* [flags][max head][split seed: 4][policy: 2] */
        add(&b, "\x02\x00\x05\x06\x07\x08\x00\x77", 8);
        adds(&b, reqs[i][1]);
        put("handshake", reqs[i][0], b.d, b.n);
    }
    /* Values split at NUL for the direct negotiation check. */
    bytes b = {.n = 0};
    add(&b, "\x00\x00\x01\x01\x01\x01\x00\x00", 8);
    adds(&b, "permessage-deflate; client_max_window_bits=9");
    add1(&b, 0);
    adds(&b, "foo, permessage-deflate; server_max_window_bits=\"8\"");
    put("handshake", "values", b.d, b.n);
}

static void inflate_seeds(void) {
    uint8_t comp[4096], c2[4096];
    /* Random mode: [flags][window][limit: 2][seed: 4][count-1][len: 2 each][bytes] */
    for (int takeover = 0; takeover < 2; takeover++) {
        bytes b = {.n = 0};
        size_t l1 = compress_msg(json, sizeof json - 1, comp, takeover);
        cws_deflater *d = cws_deflater_new(6, 8, 15, takeover);
        cws_buffer m1 = {0}, m2 = {0};
        cws_deflater_message(d, json, sizeof json - 1, &m1);
        cws_deflater_message(d, json, sizeof json - 1, &m2);
        add1(&b, (uint8_t)(0x80 | (takeover << 1)));
        add1(&b, 7);
        add(&b, "\x00\x10", 2); /* limit 4096 */
        add(&b, "\x01\x02\x03\x04", 4);
        add1(&b, 1);
        add1(&b, (uint8_t)m1.len);
        add1(&b, (uint8_t)(m1.len >> 8));
        add1(&b, (uint8_t)m2.len);
        add1(&b, (uint8_t)(m2.len >> 8));
        add(&b, m1.data, m1.len);
        add(&b, m2.data, m2.len);
        put("inflate", takeover ? "two-messages-takeover" : "two-messages", b.d, b.n);
        cws_buffer_free(&m1);
        cws_buffer_free(&m2);
        cws_deflater_free(d);
        (void)l1;
    }
    /* A message that ends with a final block (BFINAL), then goes on. */
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (Bytef *)json;
    z.avail_in = sizeof json - 1;
    z.next_out = c2;
    z.avail_out = sizeof c2;
    deflate(&z, Z_FINISH);
    size_t fl = sizeof c2 - z.avail_out;
    deflateEnd(&z);
    bytes b = {.n = 0};
    add(&b, "\x00\x0f\xff\x00\x09\x08\x07\x06\x00", 9);
    add1(&b, (uint8_t)fl);
    add1(&b, 0);
    add(&b, c2, fl);
    put("inflate", "bfinal", b.d, b.n);
    /* A small bomb against a small limit. */
    static uint8_t zeros[4000];
    size_t bl = compress_msg(zeros, sizeof zeros, comp, 0);
    b.n = 0;
    add(&b, "\x00\x0f\x64\x00\x01\x01\x01\x01\x00", 9);
    add1(&b, (uint8_t)bl);
    add1(&b, 0);
    add(&b, comp, bl);
    put("inflate", "bomb", b.d, b.n);
    /* Round-trip mode. */
    b.n = 0;
    add(&b, "\x53\x2f\x00\x00\x01\x02\x03\x04\x02\x20\x00\x10\x00\x00\x00", 15);
    adds(&b, json);
    adds(&b, json);
    put("inflate", "round-trip", b.d, b.n);
}

static void utf8_seeds(void) {
    static const char *texts[][2] = {
        {"ascii", "Hello, world! The quick brown fox jumps over the lazy dog."},
        {"cjk", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 "
                "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xe4\xb8\xad\xe6\x96\x87"},
        {"emoji", "\xf0\x9f\x98\x80\xf0\x9f\x8e\x89 \xf4\x8f\xbf\xbf \xc2\xa9 \xe2\x82\xac \xf0\x90\x80\x80"},
        {"surrogate", "abc\xed\xa0\x80xyz"},
        {"overlong", "ab\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf"},
        {"too-large", "ok\xf4\x90\x80\x80"},
        {"truncated", "text\xe2\x82"},
        {"lone-continuation", "x\x80y\xbf"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        bytes b = {.n = 0};
        add(&b, "\x1b\x05\x06\x07\x08", 5); /* repeated 10 times, alignment 3 */
        adds(&b, texts[i][1]);
        put("utf8", texts[i][0], b.d, b.n);
    }
}

static void mask_seeds(void) {
    bytes b = {.n = 0};
    add(&b, "\x37\xfa\x21\x3d\x01\x00\x00\x00\x00\x05\x01\x02\x03\x04\x07", 15);
    for (int i = 0; i < 100; i++) add1(&b, (uint8_t)i);
    put("mask", "long", b.d, b.n);
    b.n = 0;
    add(&b, "\x01\x02\x03\x04\x03\x00\x00\x00\x01\x3f\x09\x08\x07\x06\x00hello", 20);
    put("mask", "short", b.d, b.n);
}

static void base64_seeds(void) {
    static const char *s[] = {"dGhlIHNhbXBsZSBub25jZQ==", "AQIDBAUGBwgJCgsMDQ4PEA==", "AQ==", "AAA=", "AAAA", "AB==",
                              "A===", "Zm9v YmFy", "-_-_"};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        bytes b = {.n = 0};
        add1(&b, 16);
        adds(&b, s[i]);
        char name[16];
        snprintf(name, sizeof name, "s%zu", i);
        put("base64", name, b.d, b.n);
    }
}

static void engine_seeds(void) {
    /* [flags][offer][script: op, len, payload...] */
    static const uint8_t plain[] = {0x00, 0x00, 0x01, 0x05, 'h', 'e', 'l', 'l', 'o', 0x02, 0x03, 1, 2, 3, 0x09, 0x01, 'p'};
    put("engine", "echo", plain, sizeof plain);
    static const uint8_t frag[] = {0x04, 0x08, 0x11, 0x03, 'a', 'b', 'c', 0x0a, 0x00, 0x10, 0x03, 'd', 'e', 'f',
                                   0x00, 0x03, 'g', 'h', 'i'};
    put("engine", "fragmented-close", frag, sizeof frag);
    static const uint8_t comp[] = {0x00, 0x08, 0x41, 0x10, '{', '"', 'c', 'm', 'd', '"', ':', '"', 'h', 'i', '"', '}',
                                   'x', 'x', 'x', 'x', 0xc2, 0x08, 'b', 'i', 'g', ' ', 'd', 'a', 't', 'a'};
    put("engine", "compressed", comp, sizeof comp);
    static const uint8_t cl[] = {0x0c, 0x10, 0x01, 0x06, '!', 'c', 'l', 'o', 's', 'e'};
    put("engine", "server-close", cl, sizeof cl);
    static const uint8_t bad[] = {0x08, 0x00, 0x01, 0x02, 0xc0, 0xaf, 0x0b, 0x00};
    put("engine", "invalid-rst", bad, sizeof bad);
    bytes b = {.n = 0};
    add(&b, "\x03\x00", 2);
    adds(&b, upgrade);
    put("engine", "raw-handshake", b.d, b.n);
    b.n = 0;
    add(&b, "\x03\x00", 2);
    adds(&b, "GET /page HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: x\r\n\r\n");
    put("engine", "raw-http", b.d, b.n);
}

int main(int argc, char **argv) {
    root = argc > 1 ? argv[1] : "fuzz/seeds";
    frame_seeds();
    handshake_seeds();
    inflate_seeds();
    utf8_seeds();
    mask_seeds();
    base64_seeds();
    engine_seeds();
    return 0;
}
