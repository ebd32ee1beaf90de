/*
 * SHA-1 (FIPS 180-4 section 6.1), only for Sec-WebSocket-Accept. It runs once
 * per handshake over ~60 bytes, so it is small rather than fast; it is not for
 * anything that needs collision resistance.
 */
#include "cws_internal.h"

#include <string.h>

static uint32_t cws_rol32(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static uint32_t cws_load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void cws_store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* One 64-byte block into the five-word state. */
static void cws_sha1_block(uint32_t h[5], const uint8_t block[64]) {
    uint32_t w[80];
    for (int t = 0; t < 16; t++) w[t] = cws_load_be32(block + 4 * t);
    for (int t = 16; t < 80; t++) w[t] = cws_rol32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);

    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999u;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1u;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6u;
        }
        uint32_t tmp = cws_rol32(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = cws_rol32(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void cws_sha1(const void *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    const uint8_t *p = (const uint8_t *)data;
    size_t left = len;
    for (; left >= 64; left -= 64, p += 64) cws_sha1_block(h, p);

    /* Padding: 0x80, zeros, then the bit length as 64-bit big-endian; one
     * block if the tail leaves room for the 9 extra bytes, else two. */
    uint8_t tail[128] = {0};
    if (left) memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t tail_len = left + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (size_t i = 0; i < 8; i++) tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    cws_sha1_block(h, tail);
    if (tail_len == 128) cws_sha1_block(h, tail + 64);

    for (int i = 0; i < 5; i++) cws_store_be32(out + 4 * i, h[i]);
}
