/*
 * Helpers shared by the libFuzzer targets (header-only: every target is one
 * C file plus this). A differential mismatch or a broken invariant aborts, so
 * libFuzzer records it like a sanitizer report.
 */
#ifndef CWS_FUZZ_COMMON_H
#define CWS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../CSources/CWebSocket/include/cwebsocket.h"

#define FZ_CHECK(cond, ...)                                                          \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "FUZZ CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, "\n");                                                   \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* Reads parameters off the front of the input; past the end it yields zeros,
 * so every input is usable and a short one means "defaults". */
typedef struct fz_reader {
    const uint8_t *p;
    size_t len;
} fz_reader;

static inline uint8_t fz_u8(fz_reader *r) {
    if (!r->len) return 0;
    r->len--;
    return *r->p++;
}

static inline uint32_t fz_u32(fz_reader *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)fz_u8(r) << (8 * i);
    return v;
}

/* A small PRNG for split points: seeded from the input, so a split is part of
 * the test case and the fuzzer can mutate it like any other byte. */
typedef struct fz_rng {
    uint64_t s;
} fz_rng;

static inline uint64_t fz_next(fz_rng *g) {
    uint64_t z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The next chunk length, 1..left: mostly tiny (splits inside headers and
 * characters), sometimes large. */
static inline size_t fz_chunk(fz_rng *g, size_t left) {
    if (left <= 1) return left;
    uint64_t r = fz_next(g);
    size_t n;
    switch (r & 3) {
    case 0: n = 1; break;
    case 1: n = 1 + (size_t)((r >> 8) % 8); break;
    case 2: n = 1 + (size_t)((r >> 8) % 80); break;
    default: n = 1 + (size_t)((r >> 8) % left); break;
    }
    return n > left ? left : n;
}

/* A copy of data at the given misalignment in a block that ends exactly at
 * its last byte, so ASan reports any read past the end. free(*base) after. */
static inline uint8_t *fz_copy_at(const uint8_t *data, size_t len, size_t align, void **base) {
    uint8_t *b = malloc(align + len ? align + len : 1);
    if (!b) abort();
    *base = b;
    if (len) memcpy(b + align, data, len);
    return b + align;
}

#endif
