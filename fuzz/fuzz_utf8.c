/*
 * UTF-8 differential: every SIMD level this CPU runs, and the dispatching
 * entry points, against a reference validator written from RFC 3629 section 4
 * (the byte ranges spelled out, one character at a time). They must agree on
 * the verdict, on the offset of the first byte that no continuation can make
 * valid (fail-fast), and on whether the text so far ends on a character
 * boundary, whole at several alignments and in random splits.
 *
 * Input: [flags][split seed: 4][text]. flags bits 0-2 pick how often the text
 * is repeated (long inputs cross the kernels' 64-byte blocks), bits 3-7 an
 * alignment.
 */
#include "fuzz_common.h"

/* The reference. Returns the offset of the first impossible byte, or len; sets
 * *boundary to 1 if p[0, len) ends between characters (only meaningful when
 * the whole prefix is possible) and, if at is not NULL, at[i] to 1 for every
 * i that is a character boundary before the first impossible byte. */
static size_t ref_first_bad(const uint8_t *p, size_t len, int *boundary, uint8_t *at) {
    size_t i = 0;
    *boundary = 1;
    if (at) memset(at, 0, len + 1);
    while (i < len) {
        if (at) at[i] = 1;
        uint8_t b = p[i];
        size_t need;             /* continuation bytes after the lead */
        uint8_t lo2 = 0x80, hi2 = 0xBF; /* allowed range of the second byte */
        if (b <= 0x7F) { i++; continue; }
        else if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b == 0xE0) { need = 2; lo2 = 0xA0; }
        else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
        else if (b == 0xED) { need = 2; hi2 = 0x9F; }
        else if (b == 0xF0) { need = 3; lo2 = 0x90; }
        else if (b >= 0xF1 && b <= 0xF3) need = 3;
        else if (b == 0xF4) { need = 3; hi2 = 0x8F; }
        else return i; /* 80-C1, F5-FF can never start a character */
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= len) {
                *boundary = 0;
                return len;
            }
            uint8_t c = p[i + k];
            uint8_t lo = k == 1 ? lo2 : 0x80, hi = k == 1 ? hi2 : 0xBF;
            if (c < lo || c > hi) return i + k;
        }
        i += need + 1;
    }
    if (at) at[len] = 1;
    return len;
}

static void check_whole(int level, const uint8_t *text, size_t len, size_t align, size_t ref_bad, int ref_boundary) {
    void *base;
    uint8_t *p = fz_copy_at(text, len, align, &base);
    size_t bad = (size_t)-1;
    int rc = level < 0 ? cws_utf8_validate(p, len, &bad) : cws_utf8_validate_with(level, p, len, &bad);
    int ref_valid = ref_bad == len && ref_boundary;
    FZ_CHECK(rc == (ref_valid ? CWS_UTF8_VALID : CWS_UTF8_INVALID), "level %d len %zu align %zu rc %d ref_bad %zu", level,
             len, align, rc, ref_bad);
    if (!ref_valid) FZ_CHECK(bad == ref_bad, "level %d len %zu align %zu bad %zu ref %zu", level, len, align, bad, ref_bad);
    /* Also with no place for the offset. */
    int rc2 = level < 0 ? cws_utf8_validate(p, len, NULL) : cws_utf8_validate_with(level, p, len, NULL);
    FZ_CHECK(rc2 == rc, "NULL bad_offset changes the verdict");
    free(base);
}

static void check_split(int level, const uint8_t *text, size_t len, fz_rng *g, size_t ref_bad, const uint8_t *at) {
    cws_utf8_state s;
    cws_utf8_init(&s);
    FZ_CHECK(s.state == 0 && cws_utf8_finish(&s) == CWS_UTF8_VALID, "init");
    size_t pos = 0;
    int failed = 0;
    while (pos < len) {
        size_t n = fz_chunk(g, len - pos);
        void *base;
        uint8_t *p = fz_copy_at(text + pos, n, (size_t)(fz_next(g) & 63), &base);
        size_t bad = (size_t)-1;
        int rc = level < 0 ? cws_utf8_feed(&s, p, n, &bad) : cws_utf8_feed_with(level, &s, p, n, &bad);
        free(base);
        if (failed) {
            FZ_CHECK(rc == CWS_UTF8_INVALID && bad == 0, "a poisoned state must stay failed");
        } else if (ref_bad < pos + n) {
            FZ_CHECK(rc == CWS_UTF8_INVALID, "level %d chunk [%zu,+%zu) must fail at %zu", level, pos, n, ref_bad);
            FZ_CHECK(pos + bad == ref_bad, "level %d split bad %zu ref %zu", level, pos + bad, ref_bad);
            failed = 1;
        } else {
            FZ_CHECK(rc == CWS_UTF8_VALID, "level %d chunk [%zu,+%zu) failed at %zu, ref %zu", level, pos, n, pos + bad,
                     ref_bad);
            int boundary = at[pos + n];
            FZ_CHECK((cws_utf8_finish(&s) == CWS_UTF8_VALID) == boundary && (s.state == 0) == boundary,
                     "level %d finish state after %zu bytes", level, pos + n);
        }
        pos += n;
    }
    if (!failed) FZ_CHECK(ref_bad == len, "never failed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_reader r = {data, size};
    uint8_t flags = fz_u8(&r);
    fz_rng g = {fz_u32(&r)};
    size_t reps = 1 + (flags & 7) * (flags & 7); /* 1..50 */
    if (r.len && reps > 65536 / r.len) reps = 65536 / r.len ? 65536 / r.len : 1;
    size_t len = r.len * reps;
    uint8_t *text = malloc(len ? len : 1);
    if (!text) return 0;
    for (size_t k = 0; k < reps; k++) memcpy(text + k * r.len, r.p, r.len);

    int boundary;
    uint8_t *at = malloc(len + 1);
    if (!at) abort();
    size_t ref_bad = ref_first_bad(text, len, &boundary, at);
    size_t aligns[3] = {0, (size_t)(flags >> 3), 1 + (size_t)(fz_next(&g) % 63)};
    /* level -1: the dispatching entry points (what the engine calls). */
    for (int level = -1; level <= CWS_SIMD_AVX512; level++) {
        if (level >= 0 && !cws_simd_supported(level)) continue;
        for (int a = 0; a < 3; a++) check_whole(level, text, len, aligns[a], ref_bad, boundary);
        fz_rng g2 = g;
        check_split(level, text, len, &g2, ref_bad, at);
    }
    free(at);
    free(text);
    return 0;
}
