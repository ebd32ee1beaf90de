/*
 * UTF-8 validation (RFC 3629), incremental and fail-fast.
 *
 * Two engines that must agree byte for byte:
 *  - a DFA, one table load and one shift per byte; its state is what a
 *    chunk boundary carries, and it alone decides the offset of a bad byte;
 *  - SIMD kernels (Keiser & Lemire, "Validating UTF-8 in less than one
 *    instruction per byte", 2021: the "lookup" algorithm) that only say
 *    whether a run of complete characters is valid, and where the first
 *    block with a problem starts. The DFA then re-reads from a character
 *    boundary just before that block, so errors cost a little rescanning
 *    and valid text never touches the DFA beyond its last 3 bytes.
 */
#include "cws_internal.h"

#include <string.h>

#if CWS_X86
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------
 * The DFA.
 *
 * States (RFC 3629 section 4, "UTF8-tail" cases spelled out):
 *   ACC  at a boundary            REJ  absorbing failure
 *   T1   need 1 byte 80-BF        T2   need 2      T3  need 3
 *   E0   need A0-BF, then T1 (no overlong 3-byte forms)
 *   ED   need 80-9F, then T1 (no surrogates)
 *   F0   need 90-BF, then T2 (no overlong 4-byte forms)
 *   F4   need 80-8F, then T2 (nothing above U+10FFFF)
 *
 * Each byte maps to a 64-bit row holding, in 6-bit fields, the next state
 * for every current state; a state is its field's bit offset, so a step is
 * `state = row[byte] >> state` (x86 masks the shift count to 6 bits, so the
 * `& 63` below costs nothing) and the loop-carried chain is a single shift.
 * ACC is offset 0, which makes "0 = boundary" in cws_utf8_state hold.
 * ------------------------------------------------------------------------ */
enum { ACC = 0, REJ = 6, T1 = 12, T2 = 18, T3 = 24, SE0 = 30, SED = 36, SF0 = 42, SF4 = 48 };

#define CWS_ROW(acc, t1, t2, t3, e0, ed, f0, f4)                                                     \
    (((uint64_t)(acc) << ACC) | ((uint64_t)REJ << REJ) | ((uint64_t)(t1) << T1) |                    \
     ((uint64_t)(t2) << T2) | ((uint64_t)(t3) << T3) | ((uint64_t)(e0) << SE0) |                     \
     ((uint64_t)(ed) << SED) | ((uint64_t)(f0) << SF0) | ((uint64_t)(f4) << SF4))

/* One row per byte class; the comment names the bytes. */
#define R_ASCII CWS_ROW(ACC, REJ, REJ, REJ, REJ, REJ, REJ, REJ) /* 00-7F */
#define R_C80 CWS_ROW(REJ, ACC, T1, T2, REJ, T1, REJ, T2)       /* 80-8F */
#define R_C90 CWS_ROW(REJ, ACC, T1, T2, REJ, T1, T2, REJ)       /* 90-9F */
#define R_CA0 CWS_ROW(REJ, ACC, T1, T2, T1, REJ, T2, REJ)       /* A0-BF */
#define R_BAD CWS_ROW(REJ, REJ, REJ, REJ, REJ, REJ, REJ, REJ)   /* C0 C1 F5-FF */
#define R_L2 CWS_ROW(T1, REJ, REJ, REJ, REJ, REJ, REJ, REJ)     /* C2-DF */
#define R_E0 CWS_ROW(SE0, REJ, REJ, REJ, REJ, REJ, REJ, REJ)    /* E0 */
#define R_L3 CWS_ROW(T2, REJ, REJ, REJ, REJ, REJ, REJ, REJ)     /* E1-EC EE EF */
#define R_ED CWS_ROW(SED, REJ, REJ, REJ, REJ, REJ, REJ, REJ)    /* ED */
#define R_F0 CWS_ROW(SF0, REJ, REJ, REJ, REJ, REJ, REJ, REJ)    /* F0 */
#define R_L4 CWS_ROW(T3, REJ, REJ, REJ, REJ, REJ, REJ, REJ)     /* F1-F3 */
#define R_F4 CWS_ROW(SF4, REJ, REJ, REJ, REJ, REJ, REJ, REJ)    /* F4 */

#define X2(r) r, r
#define X4(r) X2(r), X2(r)
#define X8(r) X4(r), X4(r)
#define X16(r) X8(r), X8(r)

static const uint64_t cws_utf8_rows[256] = {
    X16(R_ASCII), X16(R_ASCII), X16(R_ASCII), X16(R_ASCII), /* 00-3F */
    X16(R_ASCII), X16(R_ASCII), X16(R_ASCII), X16(R_ASCII), /* 40-7F */
    X16(R_C80), X16(R_C90), X16(R_CA0), X16(R_CA0),         /* 80-BF */
    X2(R_BAD), X2(R_L2), X4(R_L2), X8(R_L2), X16(R_L2),     /* C0-DF */
    R_E0, X8(R_L3), X4(R_L3), R_ED, X2(R_L3),               /* E0-EF */
    R_F0, R_L4, X2(R_L4), R_F4, X8(R_BAD), X2(R_BAD), R_BAD /* F0-FF */
};

static inline uint32_t cws_utf8_step(uint32_t state, uint8_t byte) {
    return (uint32_t)(cws_utf8_rows[byte] >> (state & 63)) & 63;
}

static inline int cws_ascii16(const uint8_t *p) {
    uint64_t w0, w1;
    memcpy(&w0, p, 8);
    memcpy(&w1, p + 8, 8);
    return ((w0 | w1) & 0x8080808080808080ull) == 0;
}

/* Runs the DFA over p[0, len) from *state. Returns the index of the byte
 * that entered REJ, or len; *state is left at the state after the last byte
 * read. REJ is absorbing, so 16-byte runs go unchecked (the chain is then
 * one shift per byte) and only a failed run is read again byte by byte. */
static size_t cws_utf8_dfa(uint32_t *state, const uint8_t *p, size_t len) {
    uint64_t s = *state;
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
        if (s == ACC && cws_ascii16(p + i)) continue; /* text is mostly ASCII */
        uint64_t s0 = s;
        for (size_t k = 0; k < 16; k++) s = cws_utf8_rows[p[i + k]] >> (s & 63);
        s &= 63;
        if (CWS_UNLIKELY(s == REJ)) {
            s = s0;
            break;
        }
    }
    for (; i < len; i++) {
        s = (cws_utf8_rows[p[i]] >> (s & 63)) & 63;
        if (CWS_UNLIKELY(s == REJ)) {
            *state = REJ;
            return i;
        }
    }
    *state = (uint32_t)s;
    return len;
}

/* ------------------------------------------------------------------------
 * SIMD kernels: the lookup algorithm.
 *
 * For each byte, three 16-entry tables indexed by the high nibble of the
 * previous byte, its low nibble, and this byte's high nibble give a bit set
 * of the two-byte errors the pair could be; the AND keeps those all three
 * agree on. Bit 7 (TWO_CONTS) is not an error by itself: a continuation
 * after a continuation is exactly what a 3/4-byte lead two/three bytes back
 * requires, so bit 7 is XOR-ed with "must be a continuation" (byte -2 >= E0
 * or byte -3 >= F0) and any difference is an error.
 * ------------------------------------------------------------------------ */
#if CWS_X86

#define TOO_SHORT 0x01  /* lead, then not a continuation */
#define TOO_LONG 0x02   /* ASCII, then a continuation */
#define OVERLONG_3 0x04 /* E0 80-9F */
#define TOO_LARGE 0x08  /* F4 90-BF, F5-FF 90-BF */
#define SURROGATE 0x10  /* ED A0-BF */
#define OVERLONG_2 0x20 /* C0/C1 80-BF */
#define OVERLONG_4 0x40 /* F0 80-8F; shares its bit with F5-FF 80-8F */
#define TWO_CONTS 0x80  /* continuation, then a continuation */

#define CARRY (TOO_SHORT | TOO_LONG | TWO_CONTS) /* pair errors whatever the low nibble */

/* The three nibble tables, indexed by the previous byte's high nibble, its
 * low nibble, and this byte's high nibble. */
static const uint8_t cws_lut_prev_high[16] __attribute__((aligned(16))) = {
    TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, TOO_LONG, /* 0-7 */
    TWO_CONTS, TWO_CONTS, TWO_CONTS, TWO_CONTS,                                     /* 8-B */
    TOO_SHORT | OVERLONG_2,                                                         /* C */
    TOO_SHORT,                                                                      /* D */
    TOO_SHORT | OVERLONG_3 | SURROGATE,                                             /* E */
    TOO_SHORT | TOO_LARGE | OVERLONG_4,                                             /* F */
};
static const uint8_t cws_lut_prev_low[16] __attribute__((aligned(16))) = {
    CARRY | OVERLONG_2 | OVERLONG_3 | OVERLONG_4, /* C0 E0 F0 */
    CARRY | OVERLONG_2,                           /* C1 */
    CARRY, CARRY,
    CARRY | TOO_LARGE,                            /* F4 */
    CARRY | TOO_LARGE | OVERLONG_4, CARRY | TOO_LARGE | OVERLONG_4, /* F5-FF */
    CARRY | TOO_LARGE | OVERLONG_4, CARRY | TOO_LARGE | OVERLONG_4,
    CARRY | TOO_LARGE | OVERLONG_4, CARRY | TOO_LARGE | OVERLONG_4,
    CARRY | TOO_LARGE | OVERLONG_4, CARRY | TOO_LARGE | OVERLONG_4,
    CARRY | TOO_LARGE | OVERLONG_4 | SURROGATE,   /* ED */
    CARRY | TOO_LARGE | OVERLONG_4, CARRY | TOO_LARGE | OVERLONG_4,
};
static const uint8_t cws_lut_cur_high[16] __attribute__((aligned(16))) = {
    TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT, /* 0-7 */
    TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | OVERLONG_4, /* 8 */
    TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE,  /* 9 */
    TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,   /* A */
    TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,   /* B */
    TOO_SHORT, TOO_SHORT, TOO_SHORT, TOO_SHORT,                  /* C-F */
};
/* Subtracting this (saturating) leaves something non-zero only if a block
 * ends inside a character: byte -1 >= C0, byte -2 >= E0 or byte -3 >= F0. */
static const uint8_t cws_incomplete_max[32] __attribute__((aligned(32))) = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0xDF, 0xBF,
};

/* The three bytes before p[i] in the top bytes of a 32-bit word (the top of
 * a vector), zero before p: the kernels only look three bytes back. */
static inline uint32_t cws_prev3(const uint8_t *p, size_t i) {
    uint32_t w = 0;
    for (size_t k = 1; k <= 3 && k <= i; k++) w |= (uint32_t)p[i - k] << (32 - 8 * k);
    return w;
}

/* --- SSSE3: 16-byte vectors, 64-byte blocks --- */

__attribute__((target("ssse3"))) static inline __m128i
cws_sse_errors(__m128i in, __m128i prev_in) {
    const __m128i lut_ph = _mm_load_si128((const __m128i *)cws_lut_prev_high);
    const __m128i lut_pl = _mm_load_si128((const __m128i *)cws_lut_prev_low);
    const __m128i lut_ch = _mm_load_si128((const __m128i *)cws_lut_cur_high);
    const __m128i nib = _mm_set1_epi8(0x0F);
    __m128i prev1 = _mm_alignr_epi8(in, prev_in, 15);
    __m128i prev2 = _mm_alignr_epi8(in, prev_in, 14);
    __m128i prev3 = _mm_alignr_epi8(in, prev_in, 13);
    __m128i ph = _mm_shuffle_epi8(lut_ph, _mm_and_si128(_mm_srli_epi16(prev1, 4), nib));
    __m128i pl = _mm_shuffle_epi8(lut_pl, _mm_and_si128(prev1, nib));
    __m128i ch = _mm_shuffle_epi8(lut_ch, _mm_and_si128(_mm_srli_epi16(in, 4), nib));
    __m128i pairs = _mm_and_si128(_mm_and_si128(ph, pl), ch);
    /* byte -2 >= E0 or byte -3 >= F0 <=> bit 7 of these saturating differences */
    __m128i third = _mm_subs_epu8(prev2, _mm_set1_epi8((char)(0xE0 - 0x80)));
    __m128i fourth = _mm_subs_epu8(prev3, _mm_set1_epi8((char)(0xF0 - 0x80)));
    __m128i must_cont = _mm_and_si128(_mm_or_si128(third, fourth), _mm_set1_epi8((char)0x80));
    return _mm_xor_si128(must_cont, pairs);
}

/* Returns n if p[0, n) is valid and ends on a boundary; otherwise the start
 * of the first 64-byte block in which a problem shows, with everything
 * before that offset a valid (possibly unfinished) prefix. n >= 64. */
__attribute__((target("ssse3"))) static size_t cws_utf8_sse(const uint8_t *p, size_t n) {
    const __m128i incomplete_max = _mm_load_si128((const __m128i *)(cws_incomplete_max + 16));
    __m128i prev = _mm_setzero_si128(); /* before p: a boundary, as if ASCII */
    __m128i prev_incomplete = _mm_setzero_si128();
    size_t i = 0;
    for (;;) {
        /* The last block overlaps the one before instead of reading past
         * the end; re-checking bytes is harmless because every check is
         * local to a byte and the three before it. */
        if (i + 64 > n) {
            if (i == n) break;
            i = n - 64;
            prev = _mm_set_epi32((int)cws_prev3(p, i), 0, 0, 0);
            prev_incomplete = _mm_subs_epu8(prev, incomplete_max);
        }
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(p + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(p + i + 48));
        __m128i any = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
        __m128i err;
        if (_mm_movemask_epi8(any) == 0) {
            err = prev_incomplete; /* ASCII can't finish a character */
            prev_incomplete = _mm_setzero_si128();
        } else {
            err = _mm_or_si128(cws_sse_errors(a, prev), cws_sse_errors(b, a));
            err = _mm_or_si128(err, cws_sse_errors(c, b));
            err = _mm_or_si128(err, cws_sse_errors(d, c));
            prev_incomplete = _mm_subs_epu8(d, incomplete_max);
        }
        if (CWS_UNLIKELY(_mm_movemask_epi8(_mm_cmpeq_epi8(err, _mm_setzero_si128())) != 0xFFFF))
            return i;
        prev = d;
        i += 64;
    }
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(prev_incomplete, _mm_setzero_si128())) != 0xFFFF)
        return n - 64;
    return n;
}

/* --- AVX2: 32-byte vectors, 64-byte blocks --- */

__attribute__((target("avx2"))) static inline __m256i
cws_avx2_errors(__m256i in, __m256i prev_in) {
    const __m256i lut_ph = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)cws_lut_prev_high));
    const __m256i lut_pl = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)cws_lut_prev_low));
    const __m256i lut_ch = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)cws_lut_cur_high));
    const __m256i nib = _mm256_set1_epi8(0x0F);
    /* alignr works within 128-bit lanes: splice prev's high lane below in's
     * low lane so every lane sees the 16 bytes that precede it. */
    __m256i spliced = _mm256_permute2x128_si256(prev_in, in, 0x21);
    __m256i prev1 = _mm256_alignr_epi8(in, spliced, 15);
    __m256i prev2 = _mm256_alignr_epi8(in, spliced, 14);
    __m256i prev3 = _mm256_alignr_epi8(in, spliced, 13);
    __m256i ph = _mm256_shuffle_epi8(lut_ph, _mm256_and_si256(_mm256_srli_epi16(prev1, 4), nib));
    __m256i pl = _mm256_shuffle_epi8(lut_pl, _mm256_and_si256(prev1, nib));
    __m256i ch = _mm256_shuffle_epi8(lut_ch, _mm256_and_si256(_mm256_srli_epi16(in, 4), nib));
    __m256i pairs = _mm256_and_si256(_mm256_and_si256(ph, pl), ch);
    __m256i third = _mm256_subs_epu8(prev2, _mm256_set1_epi8((char)(0xE0 - 0x80)));
    __m256i fourth = _mm256_subs_epu8(prev3, _mm256_set1_epi8((char)(0xF0 - 0x80)));
    __m256i must_cont =
        _mm256_and_si256(_mm256_or_si256(third, fourth), _mm256_set1_epi8((char)0x80));
    return _mm256_xor_si256(must_cont, pairs);
}

/* Same contract as cws_utf8_sse. n >= 64. */
__attribute__((target("avx2"))) static size_t cws_utf8_avx2(const uint8_t *p, size_t n) {
    const __m256i incomplete_max = _mm256_load_si256((const __m256i *)cws_incomplete_max);
    __m256i prev = _mm256_setzero_si256();
    __m256i prev_incomplete = _mm256_setzero_si256();
    size_t i = 0;
    for (;;) {
        if (i + 64 > n) {
            if (i == n) break;
            i = n - 64;
            prev = _mm256_set_epi32((int)cws_prev3(p, i), 0, 0, 0, 0, 0, 0, 0);
            prev_incomplete = _mm256_subs_epu8(prev, incomplete_max);
        }
        __m256i a = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        __m256i err;
        if (_mm256_movemask_epi8(_mm256_or_si256(a, b)) == 0) {
            err = prev_incomplete;
            prev_incomplete = _mm256_setzero_si256();
        } else {
            err = _mm256_or_si256(cws_avx2_errors(a, prev), cws_avx2_errors(b, a));
            prev_incomplete = _mm256_subs_epu8(b, incomplete_max);
        }
        if (CWS_UNLIKELY(!_mm256_testz_si256(err, err))) return i;
        prev = b;
        i += 64;
    }
    if (!_mm256_testz_si256(prev_incomplete, prev_incomplete)) return n - 64;
    return n;
}

#endif /* CWS_X86 */

/* ------------------------------------------------------------------------
 * Glue.
 * ------------------------------------------------------------------------ */

/* Below one 64-byte block the kernels would need a padded copy; the DFA
 * with its 8-byte ASCII skip is about as quick there. */
#define CWS_UTF8_SIMD_MIN 64

/* Where a character that runs past p[n) starts, or n. Only a split point:
 * malformed bytes around it are still judged by the kernel and the DFA. */
static size_t cws_utf8_tail(const uint8_t *p, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t b = p[n - k];
        if (b < 0x80) return n;
        if (b >= 0xC0) {
            size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
            return need > k ? n - k : n;
        }
    }
    return n;
}

/* A kernel run over p[0, n) from a boundary; returns an offset at or below
 * which the DFA may restart in state ACC, past everything known good. */
static size_t cws_utf8_simd(int level, const uint8_t *p, size_t n) {
    size_t good;
#if CWS_X86
    if (level >= CWS_SIMD_AVX2) good = cws_utf8_avx2(p, n);
    else good = cws_utf8_sse(p, n);
#else
    (void)level;
    (void)p;
    good = 0;
#endif
    if (good == n) return n;
    /* p[0, good) is a valid prefix, perhaps ending inside a character:
     * back up to that character's lead byte, which is a boundary. */
    size_t q = good;
    while (q > 0 && good - q < 3 && (p[q - 1] & 0xC0) == 0x80) q--;
    return q > 0 ? q - 1 : 0;
}

static int cws_utf8_feed_level(int level, cws_utf8_state *s, const void *buf, size_t len,
                               size_t *bad_offset) {
    const uint8_t *p = buf;
    uint32_t state = s->state;
    size_t i = 0, at;
    if (CWS_UNLIKELY(state == REJ)) {
        at = 0;
        goto fail;
    }
    /* Finish a character the previous chunk cut (at most 3 bytes). */
    while (state != ACC && i < len) {
        state = cws_utf8_step(state, p[i]);
        if (state == REJ) {
            at = i;
            goto fail;
        }
        i++;
    }
    if (level > CWS_SIMD_SCALAR && len - i >= CWS_UTF8_SIMD_MIN) {
        /* The kernel sees only whole characters, so a message that arrives
         * in one piece never pays for the carried state. */
        size_t n = len - i;
        size_t whole = cws_utf8_tail(p + i, n);
        if (whole >= CWS_UTF8_SIMD_MIN) i += cws_utf8_simd(level, p + i, whole);
    }
    at = i + cws_utf8_dfa(&state, p + i, len - i);
    if (CWS_LIKELY(state != REJ)) {
        s->state = state;
        return CWS_UTF8_VALID;
    }
fail:
    s->state = REJ;
    if (bad_offset) *bad_offset = at;
    return CWS_UTF8_INVALID;
}

void cws_utf8_init(cws_utf8_state *s) { s->state = ACC; }

int cws_utf8_feed(cws_utf8_state *s, const void *buf, size_t len, size_t *bad_offset) {
    return cws_utf8_feed_level(cws_simd_active(), s, buf, len, bad_offset);
}

int cws_utf8_feed_with(int level, cws_utf8_state *s, const void *buf, size_t len,
                       size_t *bad_offset) {
    return cws_utf8_feed_level(cws_simd_clamp(level), s, buf, len, bad_offset);
}

int cws_utf8_finish(const cws_utf8_state *s) {
    return s->state == ACC ? CWS_UTF8_VALID : CWS_UTF8_INVALID;
}

int cws_utf8_validate_with(int level, const void *buf, size_t len, size_t *bad_offset) {
    cws_utf8_state s = {ACC};
    if (cws_utf8_feed_level(cws_simd_clamp(level), &s, buf, len, bad_offset) != 0)
        return CWS_UTF8_INVALID;
    if (s.state != ACC) {
        if (bad_offset) *bad_offset = len;
        return CWS_UTF8_INVALID;
    }
    return CWS_UTF8_VALID;
}

int cws_utf8_validate(const void *buf, size_t len, size_t *bad_offset) {
    return cws_utf8_validate_with(cws_simd_active(), buf, len, bad_offset);
}
