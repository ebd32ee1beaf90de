/*
 * base64: the strict decoder against a reference written from RFC 4648
 * section 4 (and the strictness base64.c promises: length a multiple of 4,
 * alphabet only, '=' only as the last one or two characters, zero pad bits),
 * with every capacity around the decoded length; whatever decodes must
 * re-encode to exactly the input (one accepted encoding per byte string), and
 * encoding any bytes must decode back to them.
 *
 * Input: [cap selector][text]. The text is also encoded as bytes.
 */
#include "fuzz_common.h"

static const char ref_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int ref_val(unsigned char c) {
    const char *p = c ? memchr(ref_alpha, c, 64) : NULL;
    return p ? (int)(p - ref_alpha) : -1;
}

/* Decoded length, or -1. out has room for len / 4 * 3 bytes. */
static long ref_decode(const unsigned char *s, size_t len, uint8_t *out) {
    if (len % 4) return -1;
    size_t pad = 0;
    if (len >= 4 && s[len - 1] == '=') pad = s[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++)
        if (ref_val(s[i]) < 0) return -1;
    uint32_t bits = 0;
    int nbits = 0;
    long n = 0;
    for (size_t i = 0; i < len - pad; i++) {
        bits = (bits << 6) | (uint32_t)ref_val(s[i]);
        nbits += 6;
        if (nbits >= 8) {
            nbits -= 8;
            out[n++] = (uint8_t)(bits >> nbits);
            bits &= (1u << nbits) - 1;
        }
    }
    /* What the padding leaves over must be zero: 4 bits after "xx==", 2 after "xxx=". */
    if (bits != 0) return -1;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_reader r = {data, size};
    uint8_t capsel = fz_u8(&r);
    const unsigned char *text = r.p;
    size_t len = r.len;

    uint8_t *ref = malloc(len + 4); /* also holds the round trip below */
    if (!ref) abort();
    long want = ref_decode(text, len, ref);

    /* Capacities: exact, one short, generous, and one the input picks. */
    size_t caps[4] = {want > 0 ? (size_t)want : 0, want > 0 ? (size_t)want - 1 : 0, len, capsel};
    for (int c = 0; c < 4; c++) {
        void *base;
        const char *in = (const char *)fz_copy_at(text, len, 0, &base);
        uint8_t *out = malloc(caps[c] ? caps[c] : 1);
        if (!out) abort();
        long got = cws_base64_decode(in, len, out, caps[c]);
        long expect = want >= 0 && (size_t)want <= caps[c] ? want : -1;
        FZ_CHECK(got == expect, "len %zu cap %zu: decoded %ld, reference %ld (fits %d)", len, caps[c], got, want,
                 want >= 0 && (size_t)want <= caps[c]);
        if (got > 0) FZ_CHECK(memcmp(out, ref, (size_t)got) == 0, "decoded bytes differ");
        free(out);
        free(base);
    }

    if (want >= 0) {
        char *enc = malloc(4 * ((size_t)want / 3 + 1));
        if (!enc) abort();
        size_t n = cws_base64_encode(ref, (size_t)want, enc);
        FZ_CHECK(n == len && memcmp(enc, text, len) == 0, "accepted input is not the canonical encoding");
        free(enc);
    }

    /* Encode the raw bytes, decode them back. */
    size_t elen = 4 * ((len + 2) / 3);
    char *enc = malloc(elen + 1);
    uint8_t *back = malloc(len + 1);
    if (!enc || !back) abort();
    size_t n = cws_base64_encode(text, len, enc);
    FZ_CHECK(n == elen, "encoded %zu bytes into %zu, want %zu", len, n, elen);
    for (size_t i = 0; i < n; i++)
        FZ_CHECK(ref_val((unsigned char)enc[i]) >= 0 || (enc[i] == '=' && i >= n - 2), "bad output char at %zu", i);
    FZ_CHECK(cws_base64_decode(enc, n, back, len) == (long)len && (!len || memcmp(back, text, len) == 0),
             "round trip of %zu bytes", len);
    FZ_CHECK(ref_decode((const unsigned char *)enc, n, ref) == (long)len && (!len || memcmp(ref, text, len) == 0),
             "reference round trip");
    free(enc);
    free(back);
    free(ref);
    return 0;
}
