/*
 * XOR masking (RFC 6455 section 5.3), in place or while copying.
 *
 * One kernel per SIMD level; all take a key already rotated so that byte 0 of
 * the buffer uses key byte 0. Every kernel consumes whole multiples of 4 bytes
 * before its tail, so the key phase never has to be recomputed mid-buffer.
 */
#include "cws_internal.h"

#include <string.h>

#if CWS_X86
#include <immintrin.h>
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mask.c assumes a little-endian CPU"
#endif

typedef void (*cws_mask_fn)(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key);

/* Key bytes as they apply from payload position `offset` on. */
static inline uint32_t cws_key_at(uint32_t key, size_t offset) {
    unsigned shift = (unsigned)(offset & 3) * 8;
    return shift ? (key >> shift) | (key << (32 - shift)) : key;
}

/* Fewer than 4 bytes: the key byte for position i is (key >> 8i). */
static inline void cws_mask_tail(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key) {
    for (size_t i = 0; i < len; i++) dst[i] = src[i] ^ (uint8_t)(key >> (8 * i));
}

/* 64-bit words: ~9 GB/s at 16 B and much more beyond, without SIMD. */
static inline void cws_mask_words(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key) {
    uint64_t k64 = ((uint64_t)key << 32) | key;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, src, 8);
        v ^= k64;
        memcpy(dst, &v, 8);
        src += 8; dst += 8; len -= 8;
    }
    if (len >= 4) {
        uint32_t v;
        memcpy(&v, src, 4);
        v ^= key;
        memcpy(dst, &v, 4);
        src += 4; dst += 4; len -= 4;
    }
    cws_mask_tail(dst, src, len, key);
}

static void cws_mask_scalar(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key) {
    cws_mask_words(dst, src, len, key);
}

#if CWS_X86
__attribute__((target("sse2")))
static void cws_mask_sse2(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key) {
    const __m128i k = _mm_set1_epi32((int)key);
    while (len >= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + 0));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + 48));
        _mm_storeu_si128((__m128i *)(dst + 0), _mm_xor_si128(a, k));
        _mm_storeu_si128((__m128i *)(dst + 16), _mm_xor_si128(b, k));
        _mm_storeu_si128((__m128i *)(dst + 32), _mm_xor_si128(c, k));
        _mm_storeu_si128((__m128i *)(dst + 48), _mm_xor_si128(d, k));
        src += 64; dst += 64; len -= 64;
    }
    while (len >= 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)src);
        _mm_storeu_si128((__m128i *)dst, _mm_xor_si128(a, k));
        src += 16; dst += 16; len -= 16;
    }
    cws_mask_words(dst, src, len, key);
}

__attribute__((target("avx2")))
static void cws_mask_avx2(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key) {
    /* Large buffers: align the stores first; split stores across cache lines
     * cost more than the few scalar bytes this takes. */
    if (len >= 512) {
        size_t head = (size_t)(-(uintptr_t)dst & 31);
        cws_mask_words(dst, src, head, key);
        key = cws_key_at(key, head);
        src += head; dst += head; len -= head;
    }
    const __m256i k = _mm256_set1_epi32((int)key);
    while (len >= 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + 0));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(src + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(src + 96));
        _mm256_storeu_si256((__m256i *)(dst + 0), _mm256_xor_si256(a, k));
        _mm256_storeu_si256((__m256i *)(dst + 32), _mm256_xor_si256(b, k));
        _mm256_storeu_si256((__m256i *)(dst + 64), _mm256_xor_si256(c, k));
        _mm256_storeu_si256((__m256i *)(dst + 96), _mm256_xor_si256(d, k));
        src += 128; dst += 128; len -= 128;
    }
    while (len >= 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)src);
        _mm256_storeu_si256((__m256i *)dst, _mm256_xor_si256(a, k));
        src += 32; dst += 32; len -= 32;
    }
    if (len >= 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)src);
        _mm_storeu_si128((__m128i *)dst, _mm_xor_si128(a, _mm256_castsi256_si128(k)));
        src += 16; dst += 16; len -= 16;
    }
    cws_mask_words(dst, src, len, key);
}

__attribute__((target("avx512f,avx512bw")))
static void cws_mask_avx512(uint8_t *dst, const uint8_t *src, size_t len, uint32_t key) {
    if (len >= 1024) {
        size_t head = (size_t)(-(uintptr_t)dst & 63);
        cws_mask_words(dst, src, head, key);
        key = cws_key_at(key, head);
        src += head; dst += head; len -= head;
    }
    const __m512i k = _mm512_set1_epi32((int)key);
    while (len >= 256) {
        __m512i a = _mm512_loadu_si512((const void *)(src + 0));
        __m512i b = _mm512_loadu_si512((const void *)(src + 64));
        __m512i c = _mm512_loadu_si512((const void *)(src + 128));
        __m512i d = _mm512_loadu_si512((const void *)(src + 192));
        _mm512_storeu_si512((void *)(dst + 0), _mm512_xor_si512(a, k));
        _mm512_storeu_si512((void *)(dst + 64), _mm512_xor_si512(b, k));
        _mm512_storeu_si512((void *)(dst + 128), _mm512_xor_si512(c, k));
        _mm512_storeu_si512((void *)(dst + 192), _mm512_xor_si512(d, k));
        src += 256; dst += 256; len -= 256;
    }
    while (len >= 64) {
        __m512i a = _mm512_loadu_si512((const void *)src);
        _mm512_storeu_si512((void *)dst, _mm512_xor_si512(a, k));
        src += 64; dst += 64; len -= 64;
    }
    if (len) {
        /* A masked load/store finishes any tail in one step; masked-off lanes
         * are not touched, so this never reads or writes past the buffer. */
        __mmask64 m = (1ULL << len) - 1; /* len < 64 here */
        __m512i a = _mm512_maskz_loadu_epi8(m, src);
        _mm512_mask_storeu_epi8(dst, m, _mm512_xor_si512(a, k));
    }
}
#endif /* CWS_X86 */

static cws_mask_fn cws_mask_kernel(int level) {
    switch (cws_simd_clamp(level)) {
#if CWS_X86
    case CWS_SIMD_AVX512: return cws_mask_avx512;
    case CWS_SIMD_AVX2: return cws_mask_avx2;
    case CWS_SIMD_SSE: return cws_mask_sse2;
#endif
    default: return cws_mask_scalar;
    }
}

static cws_mask_fn cws_mask_active_kernel;

static cws_mask_fn cws_mask_dispatch(void) {
    cws_mask_fn fn = __atomic_load_n(&cws_mask_active_kernel, __ATOMIC_RELAXED);
    if (CWS_UNLIKELY(!fn)) {
        fn = cws_mask_kernel(cws_simd_active());
        __atomic_store_n(&cws_mask_active_kernel, fn, __ATOMIC_RELAXED);
    }
    return fn;
}

/* Below this the word loop beats an indirect call into a vector kernel. */
#define CWS_MASK_SIMD_MIN 32

void cws_mask(void *buf, size_t len, uint32_t key, size_t offset) {
    key = cws_key_at(key, offset);
    if (len < CWS_MASK_SIMD_MIN) {
        cws_mask_words(buf, buf, len, key);
        return;
    }
    cws_mask_dispatch()(buf, buf, len, key);
}

void cws_mask_copy(void *dst, const void *src, size_t len, uint32_t key, size_t offset) {
    key = cws_key_at(key, offset);
    if (len < CWS_MASK_SIMD_MIN) {
        cws_mask_words(dst, src, len, key);
        return;
    }
    cws_mask_dispatch()(dst, src, len, key);
}

void cws_mask_with(int level, void *buf, size_t len, uint32_t key, size_t offset) {
    cws_mask_kernel(level)(buf, buf, len, cws_key_at(key, offset));
}
