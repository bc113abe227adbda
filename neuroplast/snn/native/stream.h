/* Streaming (non-temporal) stores for outputs larger than the caches (lif.c). */
#ifndef NEUROPLAST_STREAM_H
#define NEUROPLAST_STREAM_H
#include <stdint.h>
#include <string.h>

/* dst[0:n] = src[0:n], with streaming (non-temporal) stores where the CPU has them and ``stream`` is
 * set: an output larger than the caches is read again only by a later pass, so writing it around
 * them saves reading each line before it is written over (conv SNN layer 1: forward 2.5 -> 2.0 ms;
 * at the FC net's sizes, which stay in cache, no gain). Not for an output the next pass reads at
 * once: streaming the pooling backward's made the LIF adjoint after it 1.7 ms slower per conv step.
 * Callers end with stream_fence(). */
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif
#define STREAM_BYTES (16L << 20)   /* outputs above this size are streamed */
static inline void stream_copy(float *dst, const float *src, long n, int stream) {
    long j = 0;
    if (!stream) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
#if defined(__AVX512F__)
    for (; j < n && ((uintptr_t)(dst + j) & 63); j++) dst[j] = src[j];
    for (; j + 16 <= n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
#elif defined(__AVX__)
    for (; j < n && ((uintptr_t)(dst + j) & 31); j++) dst[j] = src[j];
    for (; j + 8 <= n; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
#endif
    for (; j < n; j++) dst[j] = src[j];
}
static inline void stream_fence(void) {
#if defined(__AVX512F__) || defined(__AVX__)
    _mm_sfence();
#endif
}

#endif
