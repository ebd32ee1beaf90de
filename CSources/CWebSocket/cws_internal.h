/* Private to the C core: helpers shared between its files. Not installed. */
#ifndef CWS_INTERNAL_H
#define CWS_INTERNAL_H

#include "include/cwebsocket.h"

#if defined(__x86_64__) || defined(__i386__)
#define CWS_X86 1
#else
#define CWS_X86 0
#endif

#define CWS_LIKELY(x) __builtin_expect(!!(x), 1)
#define CWS_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* The reason phrase for an HTTP status (handshake.c). */
const char *cws_http_reason(int status);

/* Clamp a requested level to what this CPU can run. */
static inline int cws_simd_clamp(int level) {
    if (level > CWS_SIMD_AVX512) level = CWS_SIMD_AVX512;
    while (level > CWS_SIMD_SCALAR && !cws_simd_supported(level)) level--;
    return level < 0 ? CWS_SIMD_SCALAR : level;
}

#endif
