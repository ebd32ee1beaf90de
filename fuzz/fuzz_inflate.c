/*
 * permessage-deflate decompression with limits, and compress -> inflate.
 *
 * Mode 0 (random data): 1-3 messages, each fed to cws_inflater_feed in random
 * pieces, with a window of 8-15 bits, context takeover on or off, a small
 * output limit and optional UTF-8 checking. The output never exceeds max + 1
 * bytes (nor does the buffer), and every result is checked against plain
 * zlib inflating the same bytes with the 00 00 FF FF tail (RFC 7692 7.2.2).
 *
 * Mode 1 (round trip): the messages are compressed by cws_deflater at every
 * level, memLevel and window the input picks, then inflated by cws_inflater
 * and by plain zlib (window 15); both must give the messages back.
 *
 * Input: [mode/flags][window][limit: 2][split seed: 4][n-1][len: 2 per message][bytes].
 */
#include "fuzz_common.h"

#include <zlib.h>

static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};

/* The references: plain zlib, one stream for the connection when the context
 * is taken over. After a final block (BFINAL) a message may go on with a new
 * stream; with takeover the window carries over (the new stream gets the last
 * 2^bits bytes as its dictionary), without it the context starts empty.
 *
 * zlib checks a match distance against its window plus the output of the
 * current inflate() call, so how far back a stream may reach depends on the
 * caller's output buffer. Two references bracket cws, whose buffer is in
 * between: strict (one output byte per call: distances within the window
 * only) and lenient (one call per message: anything within the message).
 * What the strict one accepts cws must accept; what the lenient one rejects
 * cws must reject. */
typedef struct ref_inflater {
    z_stream z;
    int bits, takeover, strict;
    uint8_t *hist; /* this connection's output (takeover only), for dictionaries */
    size_t hist_len;
} ref_inflater;

static void ref_init(ref_inflater *r, int bits, int takeover, int strict) {
    memset(r, 0, sizeof *r);
    r->bits = bits;
    r->takeover = takeover;
    r->strict = strict;
    if (inflateInit2(&r->z, -bits) != Z_OK) abort();
}

static void ref_reset(ref_inflater *r) {
    inflateReset(&r->z);
    free(r->hist);
    r->hist = NULL;
    r->hist_len = 0;
}

static void ref_end(ref_inflater *r) {
    inflateEnd(&r->z);
    free(r->hist);
}

/* Inflates msg + tail. Returns 0 with *out (malloc'd), -1 for corrupt data
 * (then *out holds what came before the error), or 1 once the output passes
 * stop bytes (a bomb need not be inflated to the end to be judged). */
static int ref_message(ref_inflater *r, const uint8_t *msg, size_t len, size_t stop, uint8_t **out, size_t *out_len) {
    uint8_t *in = malloc(len + 4);
    if (!in) abort();
    if (len) memcpy(in, msg, len);
    memcpy(in + len, tail, 4);
    size_t cap = stop + 2, n = 0;
    uint8_t *o = malloc(cap);
    if (!o) abort();
    r->z.next_in = in;
    r->z.avail_in = (uInt)(len + 4);
    int status = 0;
    for (;;) {
        if (n > stop) {
            status = 1;
            break;
        }
        size_t room = r->strict ? 1 : cap - n;
        r->z.next_out = o + n;
        r->z.avail_out = (uInt)room;
        int rc = inflate(&r->z, Z_SYNC_FLUSH);
        size_t got = room - r->z.avail_out;
        if (got && r->takeover) {
            r->hist = realloc(r->hist, r->hist_len + got);
            if (!r->hist) abort();
            memcpy(r->hist + r->hist_len, o + n, got);
            r->hist_len += got;
        }
        n += got;
        if (rc == Z_STREAM_END) {
            inflateReset(&r->z);
            size_t w = (size_t)1 << r->bits;
            if (r->takeover && r->hist_len) {
                size_t k = r->hist_len < w ? r->hist_len : w;
                if (inflateSetDictionary(&r->z, r->hist + r->hist_len - k, (uInt)k) != Z_OK) abort();
            }
            if (!r->z.avail_in) break;
            continue;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            status = -1;
            break;
        }
        if (!r->z.avail_in && r->z.avail_out) break; /* all input used, all output out */
        if (rc == Z_BUF_ERROR && r->z.avail_out) break;
    }
    if (status == 0 && n > stop) status = 1; /* the last call went past it */
    free(in);
    *out = o;
    *out_len = n;
    if (status != 0 || !r->takeover) ref_reset(r);
    return status;
}

/* cws_inflater_feed over msg in random pieces; checks the limits on the way. */
static int cws_message(cws_inflater *f, const uint8_t *msg, size_t len, uint64_t max, int utf8, fz_rng *rng,
                       cws_buffer *out) {
    cws_utf8_state u;
    cws_utf8_init(&u);
    size_t pos = 0;
    int rc = 0;
    do {
        size_t n = len ? fz_chunk(rng, len - pos) : 0;
        void *base;
        uint8_t *piece = fz_copy_at(msg + pos, n, 0, &base);
        pos += n;
        rc = cws_inflater_feed(f, piece, n, pos == len, out, max, utf8 ? &u : NULL);
        free(base);
        FZ_CHECK(rc == 0 || rc == -1009 || rc == -1007, "inflate returned %d", rc);
        FZ_CHECK(out->len <= max + 1 && out->cap <= max + 1 + 0, "output %zu / buffer %zu over max + 1 = %llu", out->len,
                 out->cap, (unsigned long long)max + 1);
        if (rc == 0) FZ_CHECK(out->len <= max, "success with %zu bytes over max %llu", out->len, (unsigned long long)max);
    } while (rc == 0 && pos < len);
    if (rc == 0 && utf8) {
        size_t bad = 0;
        FZ_CHECK(cws_utf8_validate(out->data, out->len, &bad) == 0 || bad == out->len,
                 "UTF-8 checking let invalid text through (bad at %zu of %zu)", bad, out->len);
    }
    return rc;
}

static void mode_random(uint8_t flags, int bits, uint64_t max, fz_rng *rng, const uint8_t **msgs, const size_t *lens,
                        int count) {
    int takeover = (flags >> 1) & 1, utf8 = (flags >> 2) & 1;
    cws_inflater *f = cws_inflater_new(bits, takeover);
    FZ_CHECK(f != NULL, "inflater_new(%d)", bits);
    ref_inflater strict, lenient;
    ref_init(&strict, bits, takeover, 1);
    ref_init(&lenient, bits, takeover, 0);
    for (int m = 0; m < count; m++) {
        cws_buffer out = {0};
        int rc = cws_message(f, msgs[m], lens[m], max, utf8, rng, &out);
        uint8_t *s_out, *l_out;
        size_t s_len, l_len;
        int src = ref_message(&strict, msgs[m], lens[m], (size_t)max, &s_out, &s_len);
        int lrc = ref_message(&lenient, msgs[m], lens[m], (size_t)max, &l_out, &l_len);
        /* Whatever cws made is what zlib makes of the same bytes. */
        size_t c1 = out.len < l_len ? out.len : l_len, c2 = out.len < s_len ? out.len : s_len;
        FZ_CHECK((!c1 || memcmp(out.data, l_out, c1) == 0) && (!c2 || memcmp(out.data, s_out, c2) == 0),
                 "message %d: output differs from zlib's", m);
        /* Text checking can only turn a success into 1007. */
        int text_ok = !utf8 || cws_utf8_validate(s_out, s_len > max ? (size_t)max : s_len, NULL) == 0;
        if (src == 0 && text_ok) {
            FZ_CHECK(rc == 0 && out.len == s_len, "message %d: zlib (strict) gives %zu bytes, cws %d with %zu (bits %d takeover %d)",
                     m, s_len, rc, out.len, bits, takeover);
        } else if (src == 1 && !utf8) {
            FZ_CHECK(rc == -1009, "message %d: over max %llu gave %d", m, (unsigned long long)max, rc);
        } else if (lrc == -1 && l_len <= max && !utf8) {
            FZ_CHECK(rc == -1007, "message %d: corrupt data gave %d (zlib: %zu bytes before the error, cws %zu, max %llu)", m,
                     rc, l_len, out.len, (unsigned long long)max);
        } else if (rc == 0) {
            FZ_CHECK(lrc == 0 && out.len == l_len, "message %d: cws succeeded with %zu bytes, zlib (lenient) %d with %zu", m,
                     out.len, lrc, l_len);
        }
        /* cws resets after an error: keep the references in step. */
        if (rc < 0) {
            ref_reset(&strict);
            ref_reset(&lenient);
        }
        free(s_out);
        free(l_out);
        cws_buffer_free(&out);
        FZ_CHECK(cws_inflater_memory(f) > 0, "inflater memory");
        /* cws took what the strict reference could not: with takeover their
         * contexts now differ, so the later messages prove nothing. */
        if (rc == 0 && src != 0 && takeover) break;
    }
    ref_end(&strict);
    ref_end(&lenient);
    cws_inflater_free(f);
}

static void mode_round_trip(uint8_t flags, uint8_t wsel, fz_rng *rng, const uint8_t **msgs, const size_t *lens,
                            int count) {
    int bits = 8 + (wsel & 7), level = (wsel >> 3) % 10, mem = 1 + (flags >> 4) % 9, takeover = (flags >> 1) & 1;
    cws_deflater *d = cws_deflater_new(level, mem, bits, takeover);
    cws_inflater *f = cws_inflater_new(bits, takeover);
    FZ_CHECK(d && f, "new(%d, %d, %d)", level, mem, bits);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) abort();
    for (int m = 0; m < count; m++) {
        cws_buffer comp = {0};
        FZ_CHECK(cws_deflater_message(d, msgs[m], lens[m], &comp) == 0, "deflate");
        FZ_CHECK(comp.len >= 1, "an empty compressed message");
        cws_buffer out = {0};
        int rc = cws_message(f, comp.data, comp.len, lens[m] + 16, 0, rng, &out);
        FZ_CHECK(rc == 0 && out.len == lens[m] && (!lens[m] || memcmp(out.data, msgs[m], lens[m]) == 0),
                 "round trip of %zu bytes (level %d mem %d bits %d takeover %d): rc %d, %zu bytes", lens[m], level, mem, bits,
                 takeover, rc, out.len);
        /* Plain zlib agrees: the compressed bytes are standard raw DEFLATE. */
        uint8_t *in = malloc(comp.len + 4), *o = malloc(lens[m] + 64);
        if (!in || !o) abort();
        memcpy(in, comp.data, comp.len);
        memcpy(in + comp.len, tail, 4);
        z.next_in = in;
        z.avail_in = (uInt)(comp.len + 4);
        z.next_out = o;
        z.avail_out = (uInt)(lens[m] + 64);
        int zr = inflate(&z, Z_SYNC_FLUSH);
        size_t got = lens[m] + 64 - z.avail_out;
        FZ_CHECK((zr == Z_OK || zr == Z_BUF_ERROR) && z.avail_in == 0 && got == lens[m] &&
                     (!got || memcmp(o, msgs[m], got) == 0),
                 "zlib inflates %zu of %zu bytes (rc %d)", got, lens[m], zr);
        if (!takeover) inflateReset(&z);
        free(in);
        free(o);
        cws_buffer_free(&comp);
        cws_buffer_free(&out);
    }
    inflateEnd(&z);
    cws_deflater_free(d);
    cws_inflater_free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_reader r = {data, size};
    uint8_t flags = fz_u8(&r);
    uint8_t wsel = fz_u8(&r);
    uint32_t lim = fz_u8(&r) | (uint32_t)fz_u8(&r) << 8;
    fz_rng rng = {fz_u32(&r)};
    int count = 1 + fz_u8(&r) % 3;
    size_t want[3];
    for (int m = 0; m < count; m++) want[m] = fz_u8(&r) | (size_t)fz_u8(&r) << 8;
    const uint8_t *msgs[3];
    size_t lens[3];
    for (int m = 0; m < count; m++) {
        size_t n = m == count - 1 ? r.len : (want[m] < r.len ? want[m] : r.len);
        msgs[m] = r.p;
        lens[m] = n;
        r.p += n;
        r.len -= n;
    }
    if (flags & 1) {
        mode_round_trip(flags, wsel, &rng, msgs, lens, count);
    } else {
        /* Small limits most of the time: the max + 1 edge is the point. */
        uint64_t max = (flags & 0x80) ? lim % 20000 : lim % 300;
        mode_random(flags, 8 + (wsel & 7), max, &rng, msgs, lens, count);
    }
    return 0;
}
