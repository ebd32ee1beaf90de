/*
 * The opening handshake: the request-head parser fed whole and as a growing
 * buffer in random steps (same result, same slices); the upgrade checks
 * against a reference written from RFC 6455 section 4.2.1 and the order the
 * header documents; permessage-deflate negotiation against a reference offer
 * parser written from RFC 7692 section 5 / RFC 6455 section 9.1; the 101 and
 * error response writers, with Sec-WebSocket-Accept computed by a SHA-1
 * written here from FIPS 180-4 (not sha1.c).
 *
 * Input: [flags][max head][split seed: 4][deflate policy: 2][request bytes].
 */
#include "fuzz_common.h"

#include <strings.h>

/* ---- an independent SHA-1 (FIPS 180-4 section 6.1) ---- */

static uint32_t rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void ref_sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t H[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = (len + 9 + 63) / 64 * 64; /* message, 0x80, zeros, 64-bit length */
    uint8_t *m = calloc(total, 1);
    if (!m) abort();
    if (len) memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t blk = 0; blk < total; blk += 64) {
        uint32_t W[80];
        for (int t = 0; t < 16; t++)
            W[t] = (uint32_t)m[blk + 4 * t] << 24 | (uint32_t)m[blk + 4 * t + 1] << 16 | (uint32_t)m[blk + 4 * t + 2] << 8 |
                   m[blk + 4 * t + 3];
        for (int t = 16; t < 80; t++) W[t] = rotl(W[t - 3] ^ W[t - 8] ^ W[t - 14] ^ W[t - 16], 1);
        uint32_t a = H[0], b = H[1], c = H[2], d = H[3], e = H[4];
        for (int t = 0; t < 80; t++) {
            uint32_t f, k;
            if (t < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (t < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (t < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t T = rotl(a, 5) + f + e + k + W[t];
            e = d, d = c, c = rotl(b, 30), b = a, a = T;
        }
        H[0] += a, H[1] += b, H[2] += c, H[3] += d, H[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(H[i] >> (24 - 8 * j));
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* base64 of the 20-byte digest: 27 characters and one '='. */
static void ref_accept(const void *key, size_t key_len, char out[28]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t *msg = malloc(key_len + 36);
    if (!msg) abort();
    if (key_len) memcpy(msg, key, key_len);
    memcpy(msg + key_len, guid, 36);
    uint8_t d[21] = {0};
    ref_sha1(msg, key_len + 36, d);
    free(msg);
    for (int i = 0, o = 0; i < 21; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        if (o < 28) out[o++] = b64[v & 63];
    }
    out[27] = '=';
}

/* ---- reference upgrade checks ---- */

static int name_is(const cws_http_header *h, const char *lit) {
    return h->name.len == strlen(lit) && strncasecmp(h->name.ptr, lit, h->name.len) == 0;
}

static int ows(char c) { return c == ' ' || c == '\t'; }

/* RFC 9110 5.6.1 list: elements split at commas, OWS trimmed. */
static int list_has(cws_slice v, const char *tok) {
    size_t i = 0, n = strlen(tok);
    for (;;) {
        size_t j = i;
        while (j < v.len && v.ptr[j] != ',') j++;
        size_t a = i, b = j;
        while (a < b && ows(v.ptr[a])) a++;
        while (b > a && ows(v.ptr[b - 1])) b--;
        if (b - a == n && strncasecmp(v.ptr + a, tok, n) == 0) return 1;
        if (j >= v.len) return 0;
        i = j + 1;
    }
}

/* A Sec-WebSocket-Key that is base64 of 16 bytes: 22 characters, the last of
 * which carries 2 data bits (A, Q, g or w), then "==". */
static int key_ok(cws_slice k) {
    if (k.len != 24 || k.ptr[22] != '=' || k.ptr[23] != '=') return 0;
    for (int i = 0; i < 22; i++)
        if (!k.ptr[i] || !memchr(b64, k.ptr[i], 64)) return 0;
    return memchr("AQgw", k.ptr[21], 4) != NULL;
}

static int ref_validate(const cws_http_request *r, cws_slice *key) {
    int hosts = 0, keys = 0, versions = 0, conn = 0, upg = 0;
    cws_slice host = {0}, version = {0};
    for (int i = 0; i < r->header_count; i++) {
        const cws_http_header *h = &r->headers[i];
        if (name_is(h, "Host") && hosts++ == 0) host = h->value;
        if (name_is(h, "Connection")) conn |= list_has(h->value, "upgrade");
        if (name_is(h, "Upgrade")) upg |= list_has(h->value, "websocket");
        if (name_is(h, "Sec-WebSocket-Key") && keys++ == 0) *key = h->value;
        if (name_is(h, "Sec-WebSocket-Version") && versions++ == 0) version = h->value;
    }
    if (r->method.len != 3 || memcmp(r->method.ptr, "GET", 3)) return 405;
    if (r->http_major != 1 || r->http_minor < 1) return 400;
    if (hosts != 1 || host.len == 0) return 400;
    if (!conn || !upg) return 400;
    if (versions != 1 || version.len != 2 || memcmp(version.ptr, "13", 2)) return 426;
    if (keys != 1 || !key_ok(*key)) return 400;
    return 0;
}

static int ref_is_upgrade(const cws_http_request *r) {
    for (int i = 0; i < r->header_count; i++) {
        if (name_is(&r->headers[i], "Sec-WebSocket-Key")) return 1;
        if (name_is(&r->headers[i], "Upgrade") && list_has(r->headers[i].value, "websocket")) return 1;
    }
    return 0;
}

/* ---- reference permessage-deflate offer parser ---- */

typedef struct ref_offer {
    int snct, cnct, sbits, cbits; /* bits: -1 absent, 0 no value (client only), 8..15 */
} ref_offer;

static int tchar(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* 8..15 as 1*DIGIT without a leading zero, else -1. */
static int bits_value(const char *v, size_t n) {
    if (n == 0 || n > 2 || v[0] == '0') return -1;
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x >= 8 && x <= 15 ? x : -1;
}

/* One offer's text (between top-level commas). 1 if it is an acceptable
 * permessage-deflate offer. */
static int ref_offer_parse(const char *p, size_t n, ref_offer *o) {
    size_t i = 0;
    while (i < n && ows(p[i])) i++;
    size_t s = i;
    while (i < n && tchar((unsigned char)p[i])) i++;
    if (i - s != 18 || strncasecmp(p + s, "permessage-deflate", 18)) return 0;
    *o = (ref_offer){0, 0, -1, -1};
    for (;;) {
        while (i < n && ows(p[i])) i++;
        if (i == n) return 1;
        if (p[i++] != ';') return 0;
        while (i < n && ows(p[i])) i++;
        size_t ns = i;
        while (i < n && tchar((unsigned char)p[i])) i++;
        size_t nl = i - ns;
        if (!nl) return 0;
        while (i < n && ows(p[i])) i++;
        char val[64];
        size_t vl = 0;
        int has_val = 0;
        if (i < n && p[i] == '=') {
            has_val = 1;
            i++;
            while (i < n && ows(p[i])) i++;
            if (i < n && p[i] == '"') {
                i++;
                for (;;) {
                    if (i == n) return 0;
                    char c = p[i++];
                    if (c == '"') break;
                    if (c == '\\') {
                        if (i == n) return 0;
                        c = p[i++];
                    }
                    if (!tchar((unsigned char)c)) return 0; /* must unquote to a token */
                    if (vl < sizeof val) val[vl] = c;
                    vl++;
                }
                if (vl == 0 || vl > sizeof val) return 0;
            } else {
                while (i < n && tchar((unsigned char)p[i])) {
                    if (vl < sizeof val) val[vl] = p[i];
                    vl++, i++;
                }
                if (vl == 0 || vl > sizeof val) return 0;
            }
        }
        const char *nm = p + ns;
#define IS(lit) (nl == strlen(lit) && strncasecmp(nm, lit, nl) == 0)
        if (IS("server_no_context_takeover")) {
            if (has_val || o->snct) return 0;
            o->snct = 1;
        } else if (IS("client_no_context_takeover")) {
            if (has_val || o->cnct) return 0;
            o->cnct = 1;
        } else if (IS("server_max_window_bits")) {
            int b = has_val ? bits_value(val, vl) : -1;
            if (b < 0 || o->sbits >= 0) return 0;
            o->sbits = b;
        } else if (IS("client_max_window_bits")) {
            int b = has_val ? bits_value(val, vl) : 0;
            if (b < 0 || o->cbits >= 0) return 0;
            o->cbits = b;
        } else {
            return 0;
        }
#undef IS
    }
}

/* The first acceptable offer over all values, splitting each value at commas
 * outside quoted strings. 1 if there is one. */
static int ref_negotiate(const cws_slice *vals, size_t count, ref_offer *o) {
    for (size_t h = 0; h < count; h++) {
        const char *p = vals[h].ptr;
        size_t n = vals[h].len, start = 0;
        int q = 0;
        if (!p) continue;
        for (size_t i = 0; i <= n; i++) {
            if (i < n && q) {
                if (p[i] == '\\' && i + 1 < n) i++;
                else if (p[i] == '"') q = 0;
                continue;
            }
            if (i < n && p[i] == '"') q = 1;
            if (i == n || p[i] == ',') {
                if (ref_offer_parse(p + start, i - start, o)) return 1;
                start = i + 1;
            }
        }
    }
    return 0;
}

/* The answer must accept exactly the reference's offer, by its rules. */
static void check_negotiation(const cws_deflate_config *cfg, const cws_slice *vals, size_t count, int cap) {
    ref_offer o;
    int want = ref_negotiate(vals, count, &o);
    cws_deflate_params p;
    memset(&p, 0xEE, sizeof p);
    char resp[CWS_DEFLATE_RESPONSE_MAX + 8];
    memset(resp, 'Z', sizeof resp);
    int n = cws_deflate_negotiate(cfg, vals, count, &p, resp, (size_t)cap);
    if (!cfg->enabled) {
        FZ_CHECK(n == 0, "disabled policy answered %d", n);
        return;
    }
    if (n == -1) {
        FZ_CHECK(want && cap < CWS_DEFLATE_RESPONSE_MAX, "-1 with cap %d (reference accepts %d)", cap, want);
        return;
    }
    FZ_CHECK((n > 0) == want, "negotiation %s, reference %s", n > 0 ? "accepted" : "declined", want ? "accepts" : "declines");
    if (!n) return;
    FZ_CHECK(n < cap && resp[n] == 0 && strlen(resp) == (size_t)n, "response length %d, cap %d", n, cap);
    FZ_CHECK(strncmp(resp, "permessage-deflate", 18) == 0, "response %s", resp);
    FZ_CHECK(p.server_max_window_bits >= 8 && p.server_max_window_bits <= 15 && p.client_max_window_bits >= 8 &&
                 p.client_max_window_bits <= 15,
             "window bits %u %u", p.server_max_window_bits, p.client_max_window_bits);
    FZ_CHECK(p.server_no_context_takeover == (o.snct || cfg->server_no_context_takeover), "server_no_context_takeover");
    FZ_CHECK(p.client_no_context_takeover == (o.cnct || cfg->client_no_context_takeover), "client_no_context_takeover");
    FZ_CHECK(o.sbits < 0 || p.server_max_window_bits <= o.sbits, "server window above the offer");
    FZ_CHECK(p.server_max_window_bits <= (cfg->server_max_window_bits < 8 ? 8 : cfg->server_max_window_bits),
             "server window above the policy");
    int says_c = strstr(resp, "client_max_window_bits") != NULL;
    FZ_CHECK(!says_c || o.cbits >= 0, "client_max_window_bits answered but not offered: %s", resp);
    if (o.cbits > 0) FZ_CHECK(p.client_max_window_bits <= o.cbits, "client window above the offer");
    if (o.cbits < 0) FZ_CHECK(p.client_max_window_bits == 15, "client window without an offer");
    FZ_CHECK(!!strstr(resp, "server_no_context_takeover") == p.server_no_context_takeover, "response text vs params: %s", resp);
    FZ_CHECK(!!strstr(resp, "client_no_context_takeover") == p.client_no_context_takeover, "response text vs params: %s", resp);
}

/* ---- the parser, whole vs growing buffer ---- */

#define SLICE_OFF(s, base) ((s).ptr ? (long)((s).ptr - (const char *)(base)) : -1L)

static void same_slice(cws_slice a, const void *abase, cws_slice b, const void *bbase, const char *what) {
    if (a.ptr && b.ptr && a.len == 1 && b.len == 1 && *a.ptr == '/' && *b.ptr == '/') return; /* may be a literal "/" */
    FZ_CHECK(SLICE_OFF(a, abase) == SLICE_OFF(b, bbase) && a.len == b.len, "%s differs", what);
}

static void in_buf(cws_slice s, const uint8_t *buf, size_t len, const char *what) {
    if (!s.ptr || (s.len == 1 && *s.ptr == '/')) return;
    FZ_CHECK((const uint8_t *)s.ptr >= buf && (const uint8_t *)s.ptr + s.len <= buf + len, "%s outside the head", what);
}

static int verify_accept(void) {
    uint8_t d[20];
    ref_sha1((const uint8_t *)"abc", 3, d);
    static const uint8_t abc[20] = {0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e,
                                    0x25, 0x71, 0x78, 0x50, 0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d};
    char a[28];
    ref_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, a); /* RFC 6455 section 1.3 */
    return memcmp(d, abc, 20) == 0 && memcmp(a, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 28) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int checked;
    if (!checked) {
        FZ_CHECK(verify_accept(), "the reference SHA-1 fails its own test vectors");
        checked = 1;
    }
    fz_reader rd = {data, size};
    uint8_t flags = fz_u8(&rd);
    uint8_t mh = fz_u8(&rd);
    fz_rng rng = {fz_u32(&rd)};
    uint8_t pol1 = fz_u8(&rd), pol2 = fz_u8(&rd);
    size_t max_head = (flags & 1) ? 16 + (size_t)mh * 8 : 8192;
    const uint8_t *req = rd.p;
    size_t len = rd.len;

    void *wbase;
    const uint8_t *wbuf = fz_copy_at(req, len, 0, &wbase);
    cws_http_request *whole = malloc(sizeof *whole), *grow = malloc(sizeof *grow);
    if (!whole || !grow) abort();
    cws_http_request_init(whole, max_head);
    long rc = cws_http_parse(whole, wbuf, len);
    FZ_CHECK(rc == 0 || rc == -400 || rc == -431 || (rc > 0 && (size_t)rc <= len), "parse returned %ld", rc);
    FZ_CHECK(cws_http_parse(whole, wbuf, len) == rc, "a second call changed the answer");

    /* The same bytes arriving in steps, each call on an exact-size copy of
     * the bytes so far (the parser keeps offsets, not pointers). */
    cws_http_request_init(grow, max_head);
    void *gbase = NULL;
    const uint8_t *gbuf = NULL;
    long grc = 0;
    for (size_t n = 0; n < len && grc == 0;) {
        n += fz_chunk(&rng, len - n);
        free(gbase);
        gbuf = fz_copy_at(req, n, 0, &gbase);
        grc = cws_http_parse(grow, gbuf, n);
    }
    if (len == 0) grc = cws_http_parse(grow, wbuf, 0);
    FZ_CHECK(grc == rc, "whole %ld, in steps %ld", rc, grc);

    if (rc > 0) {
        FZ_CHECK((size_t)rc <= max_head, "head of %ld over max %zu", rc, max_head);
        FZ_CHECK(req[rc - 1] == '\n', "head does not end at a LF");
        FZ_CHECK(whole->header_count == grow->header_count && whole->http_major == grow->http_major &&
                     whole->http_minor == grow->http_minor && whole->head_len == grow->head_len,
                 "request fields differ");
        same_slice(whole->method, wbuf, grow->method, gbuf, "method");
        same_slice(whole->target, wbuf, grow->target, gbuf, "target");
        same_slice(whole->path, wbuf, grow->path, gbuf, "path");
        same_slice(whole->query, wbuf, grow->query, gbuf, "query");
        in_buf(whole->method, wbuf, (size_t)rc, "method");
        in_buf(whole->target, wbuf, (size_t)rc, "target");
        in_buf(whole->path, wbuf, (size_t)rc, "path");
        in_buf(whole->query, wbuf, (size_t)rc, "query");
        FZ_CHECK(whole->header_count <= CWS_HTTP_MAX_HEADERS, "header count");
        FZ_CHECK(whole->http_major == 1 && whole->http_minor <= 9, "version");
        for (size_t i = 0; i < whole->method.len; i++) FZ_CHECK(tchar((unsigned char)whole->method.ptr[i]), "method char");
        for (int i = 0; i < whole->header_count; i++) {
            const cws_http_header *h = &whole->headers[i], *g = &grow->headers[i];
            same_slice(h->name, wbuf, g->name, gbuf, "header name");
            same_slice(h->value, wbuf, g->value, gbuf, "header value");
            in_buf(h->name, wbuf, (size_t)rc, "header name");
            in_buf(h->value, wbuf, (size_t)rc, "header value");
            FZ_CHECK(h->name.len > 0, "empty header name");
            for (size_t k = 0; k < h->name.len; k++) FZ_CHECK(tchar((unsigned char)h->name.ptr[k]), "header name char");
            for (size_t k = 0; k < h->value.len; k++) {
                unsigned char c = (unsigned char)h->value.ptr[k];
                FZ_CHECK(c == '\t' || (c >= 0x20 && c != 0x7F), "control character in a value");
            }
            if (h->value.len) FZ_CHECK(!ows(h->value.ptr[0]) && !ows(h->value.ptr[h->value.len - 1]), "untrimmed value");
        }

        FZ_CHECK(cws_http_is_upgrade(whole) == ref_is_upgrade(whole), "is_upgrade");
        cws_upgrade_info info;
        cws_slice rkey = {0};
        int st = cws_upgrade_validate(whole, &info);
        int want = ref_validate(whole, &rkey);
        FZ_CHECK(st == want, "upgrade_validate %d, reference %d", st, want);

        /* Negotiation over the request's headers, with a policy from the input. */
        cws_deflate_config cfg;
        cws_deflate_config_init(&cfg);
        cfg.enabled = (pol1 & 1) ? 0 : 1;
        cfg.server_no_context_takeover = (pol1 >> 1) & 1;
        cfg.client_no_context_takeover = (pol1 >> 2) & 1;
        cfg.server_max_window_bits = (uint8_t)(7 + (pol2 & 15) % 10); /* 7..16: out of range too */
        cfg.client_max_window_bits = (uint8_t)(7 + (pol2 >> 4) % 10);
        cws_slice vals[CWS_HTTP_MAX_HEADERS];
        size_t nv = 0;
        for (int i = 0; i < whole->header_count; i++)
            if (name_is(&whole->headers[i], "Sec-WebSocket-Extensions")) vals[nv++] = whole->headers[i].value;
        int cap = (pol1 & 0x80) ? (pol1 >> 3) * 12 : CWS_DEFLATE_RESPONSE_MAX;
        check_negotiation(&cfg, vals, nv, cap);
        char ext[CWS_DEFLATE_RESPONSE_MAX];
        cws_deflate_params dp;
        int en = cws_deflate_negotiate_request(&cfg, whole, &dp, ext, sizeof ext);
        FZ_CHECK(en >= 0, "negotiate_request %d", en);

        if (st == 0) {
            FZ_CHECK(info.key.ptr == rkey.ptr && info.key.len == rkey.len, "info.key");
            FZ_CHECK(cws_http_is_upgrade(whole), "a valid upgrade that is not an upgrade");
            /* The 101 response, byte for byte. */
            const char *proto = (flags & 2) ? "chat" : NULL;
            char accept[28];
            ref_accept(info.key.ptr, info.key.len, accept);
            char want_resp[512];
            int wl = snprintf(want_resp, sizeof want_resp,
                              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: %.28s\r\n%s%s%s%s%s%s\r\n",
                              accept, proto ? "Sec-WebSocket-Protocol: " : "", proto ? proto : "", proto ? "\r\n" : "",
                              en > 0 ? "Sec-WebSocket-Extensions: " : "", en > 0 ? ext : "", en > 0 ? "\r\n" : "");
            char out[512];
            size_t n = cws_upgrade_response(out, sizeof out, info.key.ptr, info.key.len, proto, en > 0 ? ext : NULL);
            FZ_CHECK(n == (size_t)wl && memcmp(out, want_resp, n) == 0, "101 response differs:\n%.*s", (int)n, out);
            FZ_CHECK(cws_upgrade_response(out, n - 1, info.key.ptr, info.key.len, proto, en > 0 ? ext : NULL) == 0,
                     "a response that does not fit was written");
            FZ_CHECK(cws_upgrade_response(out, n, info.key.ptr, info.key.len, proto, en > 0 ? ext : NULL) == n,
                     "a response that just fits was refused");
        } else {
            char out[256];
            size_t n = cws_http_error_response(out, sizeof out, st);
            char head[32];
            snprintf(head, sizeof head, "HTTP/1.1 %d ", st);
            FZ_CHECK(n > 0 && strncmp(out, head, strlen(head)) == 0 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0,
                     "error response");
            FZ_CHECK((memmem(out, n, "Sec-WebSocket-Version: 13\r\n", 27) != NULL) == (st == 426), "426 version header");
        }
    }

    /* Negotiation straight from the bytes: a few values split at NUL bytes. */
    {
        cws_slice vals[4];
        size_t nv = 0, s = 0;
        for (size_t i = 0; i <= len && nv < 4; i++)
            if (i == len || req[i] == 0) {
                vals[nv++] = (cws_slice){(const char *)wbuf + s, i - s};
                s = i + 1;
            }
        cws_deflate_config cfg;
        cws_deflate_config_init(&cfg);
        cfg.enabled = 1;
        cfg.server_no_context_takeover = pol1 & 1;
        cfg.client_no_context_takeover = (pol1 >> 1) & 1;
        cfg.server_max_window_bits = (uint8_t)(8 + (pol2 & 7));
        cfg.client_max_window_bits = (uint8_t)(8 + (pol2 >> 5));
        check_negotiation(&cfg, vals, nv, CWS_DEFLATE_RESPONSE_MAX);
    }

    /* Accept keys of any bytes and length (the heap path past 220 bytes). */
    {
        char a[28], b[28];
        cws_accept_key(wbuf, len, a);
        ref_accept(wbuf, len, b);
        FZ_CHECK(memcmp(a, b, 28) == 0, "Sec-WebSocket-Accept of %zu bytes", len);
    }

    /* Error responses for any status, and the capacity rule. */
    {
        int st = (int)(mh | (pol2 << 8)) - 100;
        char out[256];
        size_t n = cws_http_error_response(out, sizeof out, st);
        FZ_CHECK(n > 0 && n < sizeof out && memcmp(out + n - 4, "\r\n\r\n", 4) == 0, "error response for %d", st);
        FZ_CHECK(cws_http_error_response(out, n - 1, st) == 0 && cws_http_error_response(out, n, st) == n, "error cap");
    }

    free(gbase);
    free(wbase);
    free(whole);
    free(grow);
    return 0;
}
