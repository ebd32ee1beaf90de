/*
 * Masking differential: every SIMD level this CPU runs and the dispatching
 * entry points, in place and copying, against a byte loop written from
 * RFC 6455 section 5.3 (octet i of the payload is XOR-ed with key octet
 * i mod 4). Random key, payload offset, length and alignment; a payload masked
 * piece by piece (each piece at its own offset) must equal it masked whole;
 * no kernel may touch a byte outside its buffer.
 *
 * Input: [key: 4][offset: 4][align][split seed: 4][flags][payload]. flags
 * bits 0-2 pick how often the payload is repeated (the AVX kernels have paths
 * that only start at 512 and 1024 bytes).
 */
#include "fuzz_common.h"

#define GUARD 64
#define GUARD_BYTE 0xA5

static void ref_mask(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key, size_t offset) {
    uint8_t k[4];
    memcpy(k, &key, 4); /* wire order: byte 0 of the key first in memory */
    for (size_t i = 0; i < len; i++) dst[i] = src[i] ^ k[(offset + i) % 4];
}

/* A buffer with guard bytes on both sides, the payload at a given alignment. */
typedef struct guarded {
    uint8_t *block, *p;
    size_t len;
} guarded;

static guarded guarded_new(const uint8_t *src, size_t len, size_t align) {
    guarded g;
    g.block = malloc(GUARD + align + len + GUARD);
    if (!g.block) abort();
    memset(g.block, GUARD_BYTE, GUARD + align + len + GUARD);
    g.p = g.block + GUARD + align;
    g.len = len;
    if (len) memcpy(g.p, src, len);
    return g;
}

static void guarded_check(const guarded *g, size_t align, const char *what, int level) {
    for (size_t i = 0; i < GUARD + align; i++)
        FZ_CHECK(g->block[i] == GUARD_BYTE, "%s level %d wrote %zu bytes before the buffer", what, level, GUARD + align - i);
    for (size_t i = 0; i < GUARD; i++)
        FZ_CHECK(g->p[g->len + i] == GUARD_BYTE, "%s level %d wrote past the end (+%zu)", what, level, i);
    free(g->block);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_reader r = {data, size};
    uint32_t key = fz_u32(&r);
    size_t offset = fz_u32(&r);
    if (fz_u8(&r) & 1) offset = (size_t)offset << 24; /* large offsets: frames past 4 GiB */
    size_t align = fz_u8(&r) & 63;
    fz_rng rng = {fz_u32(&r)};
    uint8_t flags = fz_u8(&r);
    size_t reps = 1 + (size_t)(flags & 7) * (flags & 7) * 4; /* 1..197 */
    if (r.len && reps > 65536 / r.len) reps = 65536 / r.len ? 65536 / r.len : 1;
    size_t len = r.len * reps;
    uint8_t *src = malloc(len ? len : 1), *want = malloc(len ? len : 1);
    if (!src || !want) abort();
    for (size_t k = 0; k < reps; k++) memcpy(src + k * r.len, r.p, r.len);
    ref_mask(want, src, len, key, offset);

    for (int level = -1; level <= CWS_SIMD_AVX512; level++) {
        if (level >= 0 && !cws_simd_supported(level)) continue;

        /* In place, whole. */
        guarded g = guarded_new(src, len, align);
        if (level < 0) cws_mask(g.p, len, key, offset);
        else cws_mask_with(level, g.p, len, key, offset);
        FZ_CHECK(!len || memcmp(g.p, want, len) == 0, "in place level %d len %zu offset %zu align %zu", level, len, offset,
                 align);
        guarded_check(&g, align, "in place", level);

        /* In place, piecewise at random split points and alignments. */
        size_t a2 = (size_t)(fz_next(&rng) & 63);
        g = guarded_new(src, len, a2);
        for (size_t pos = 0; pos < len;) {
            size_t n = fz_chunk(&rng, len - pos);
            if (level < 0) cws_mask(g.p + pos, n, key, offset + pos);
            else cws_mask_with(level, g.p + pos, n, key, offset + pos);
            pos += n;
        }
        FZ_CHECK(!len || memcmp(g.p, want, len) == 0, "piecewise level %d len %zu", level, len);
        guarded_check(&g, a2, "piecewise", level);
    }

    /* Copying (the dispatcher only has a copying entry point): to a separate
     * buffer at another alignment, and with dst == src. */
    guarded in = guarded_new(src, len, align);
    size_t a3 = (size_t)(fz_next(&rng) & 63);
    guarded out = guarded_new(src, len, a3);
    memset(out.p, 0, len);
    cws_mask_copy(out.p, in.p, len, key, offset);
    FZ_CHECK(!len || memcmp(out.p, want, len) == 0, "copy len %zu offset %zu", len, offset);
    FZ_CHECK(!len || memcmp(in.p, src, len) == 0, "copy changed its source");
    guarded_check(&out, a3, "copy", -1);
    cws_mask_copy(in.p, in.p, len, key, offset);
    FZ_CHECK(!len || memcmp(in.p, want, len) == 0, "copy onto itself len %zu", len);
    guarded_check(&in, align, "copy onto itself", -1);

    /* Copying, piecewise. */
    in = guarded_new(src, len, align);
    out = guarded_new(src, len, a3);
    for (size_t pos = 0; pos < len;) {
        size_t n = fz_chunk(&rng, len - pos);
        cws_mask_copy(out.p + pos, in.p + pos, n, key, offset + pos);
        pos += n;
    }
    FZ_CHECK(!len || memcmp(out.p, want, len) == 0, "copy piecewise len %zu", len);
    guarded_check(&out, a3, "copy piecewise", -1);
    guarded_check(&in, align, "copy piecewise source", -1);

    free(src);
    free(want);
    return 0;
}
