/* Run-time CPU detection for the SIMD kernels. */
#include "cws_internal.h"

#include <stdlib.h>
#include <string.h>

static int cws_detected_level = -1; /* best level the CPU runs */
static int cws_active_level = -1;   /* after the CWS_SIMD cap */

static int cws_detect(void) {
#if CWS_X86
    __builtin_cpu_init();
    /* The UTF-8 kernels need pshufb, so the SSE level means SSE2 + SSSE3. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return CWS_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2")) return CWS_SIMD_AVX2;
    if (__builtin_cpu_supports("ssse3")) return CWS_SIMD_SSE;
#endif
    return CWS_SIMD_SCALAR;
}

static int cws_detected(void) {
    int level = __atomic_load_n(&cws_detected_level, __ATOMIC_RELAXED);
    if (level < 0) {
        level = cws_detect();
        __atomic_store_n(&cws_detected_level, level, __ATOMIC_RELAXED);
    }
    return level;
}

int cws_simd_supported(int level) {
    if (level <= CWS_SIMD_SCALAR) return 1;
    if (level > CWS_SIMD_AVX512) return 0;
    return level <= cws_detected();
}

int cws_simd_active(void) {
    int level = __atomic_load_n(&cws_active_level, __ATOMIC_RELAXED);
    if (level >= 0) return level;
    level = cws_detected();
    const char *cap = getenv("CWS_SIMD");
    if (cap) {
        for (int l = CWS_SIMD_SCALAR; l <= CWS_SIMD_AVX512; l++) {
            if (strcmp(cap, cws_simd_name(l)) == 0 && l < level) level = l;
        }
    }
    __atomic_store_n(&cws_active_level, level, __ATOMIC_RELAXED);
    return level;
}

const char *cws_simd_name(int level) {
    switch (level) {
    case CWS_SIMD_SCALAR: return "scalar";
    case CWS_SIMD_SSE: return "sse";
    case CWS_SIMD_AVX2: return "avx2";
    case CWS_SIMD_AVX512: return "avx512";
    default: return "unknown";
    }
}
