/*
 * Standard padded base64 (RFC 4648 section 4), as the handshake needs it:
 * encoding the accept hash and checking that Sec-WebSocket-Key is 16 bytes.
 *
 * Decoding is strict (RFC 4648 section 3.3 and 3.5 allow decoders to be):
 * the length must be a multiple of 4, only the alphabet is accepted (no
 * whitespace, no URL-safe characters), '=' may only end the last quantum, and
 * the bits that padding discards must be zero, so every byte string has
 * exactly one accepted encoding.
 */
#include "cws_internal.h"

static const char cws_b64_alphabet[65] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t cws_base64_encode(const void *in, size_t len, char *out) {
    const uint8_t *p = (const uint8_t *)in;
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        out[o++] = cws_b64_alphabet[v >> 18];
        out[o++] = cws_b64_alphabet[(v >> 12) & 63];
        out[o++] = cws_b64_alphabet[(v >> 6) & 63];
        out[o++] = cws_b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = cws_b64_alphabet[v >> 18];
        out[o++] = cws_b64_alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        out[o++] = cws_b64_alphabet[v >> 18];
        out[o++] = cws_b64_alphabet[(v >> 12) & 63];
        out[o++] = cws_b64_alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    return o;
}

/* 0..63 for an alphabet character, -1 for anything else ('=' included). */
static int cws_b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Also -1 when the decoded bytes would not fit in cap. */
long cws_base64_decode(const char *in, size_t len, void *out, size_t cap) {
    if (len % 4 != 0) return -1;
    if (len == 0) return 0;
    const unsigned char *s = (const unsigned char *)in;
    size_t pad = s[len - 1] == '=' ? (s[len - 2] == '=' ? 2 : 1) : 0;
    size_t out_len = len / 4 * 3 - pad;
    if (out_len > cap) return -1;

    uint8_t *o = (uint8_t *)out;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int v0 = cws_b64_value(s[i]);
        int v1 = cws_b64_value(s[i + 1]);
        if (v0 < 0 || v1 < 0) return -1;
        if (last && pad == 2) {
            if (v1 & 0x0F) return -1; /* non-zero bits under the padding */
            o[n++] = (uint8_t)((v0 << 2) | (v1 >> 4));
            break;
        }
        int v2 = cws_b64_value(s[i + 2]);
        if (v2 < 0) return -1;
        if (last && pad == 1) {
            if (v2 & 0x03) return -1;
            o[n++] = (uint8_t)((v0 << 2) | (v1 >> 4));
            o[n++] = (uint8_t)((v1 << 4) | (v2 >> 2));
            break;
        }
        int v3 = cws_b64_value(s[i + 3]);
        if (v3 < 0) return -1;
        o[n++] = (uint8_t)((v0 << 2) | (v1 >> 4));
        o[n++] = (uint8_t)((v1 << 4) | (v2 >> 2));
        o[n++] = (uint8_t)((v2 << 6) | v3);
    }
    return (long)n;
}
