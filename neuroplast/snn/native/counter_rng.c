/* Counter-based random numbers (counter_rng.py has the definition and the torch twin; built by
 * native_lib.py).
 *
 * Word p of the stream with seed s is SplitMix64's output p (Steele, Lea & Flood, "Fast splittable
 * pseudorandom number generators", OOPSLA 2014):
 *     w_p = mix64(s + (p + 1) * 0x9e3779b97f4a7c15)          (mod 2^64)
 * Every word depends on (s, p) alone, so the loops split over torch's OpenMP threads and vectorise,
 * and the numbers do not depend on the number of threads. From word p:
 *     words:    out[2p] = w >> 32, out[2p+1] = w & (2^32 - 1)
 *     uniform:  out[2p] = (w >> 40) * 2^-24, out[2p+1] = ((w >> 8) & (2^24 - 1)) * 2^-24
 *     normal:   Box-Muller on u1 = ((w >> 40) + 1) * 2^-24 in (0, 1] and the low 24 bits b: quadrant
 *               q = b >> 22 and phi = (((b & (2^22 - 1)) + 1/2) * 2^-22 - 1/2) * pi/2 in (-pi/4, pi/4);
 *               r = sqrt(-2 log u1), (c, s) = (cos, sin)(q * pi/2 + phi),
 *               out[2p] = r*c*std + mean, out[2p+1] = r*s*std + mean,
 *               log, cos and sin by the polynomials of counter_rng.py (float32; against float64 Box-Muller < 4 ulp, relative < 3e-7),
 *               evaluated in the twin's order with -ffp-contract=off: bit-identical to it. */
#include <stdint.h>
#include <string.h>

#define GAMMA 0x9e3779b97f4a7c15ULL

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline float as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* Each kernel: the first ``pairs`` words of stream ``seed``, two numbers from each, into out[0:2*pairs]. */

/* int64 numbers in [0, 2^32) */
void rng_words(uint64_t seed, long pairs, int64_t *out) {
#pragma omp parallel for schedule(static)
    for (long p = 0; p < pairs; p++) {
        uint64_t w = mix64(seed + (uint64_t)(p + 1) * GAMMA);
        out[2 * p] = (int64_t)(w >> 32);
        out[2 * p + 1] = (int64_t)(w & 0xffffffffULL);
    }
}

/* float32 U[0, 1) numbers */
void rng_uniform(uint64_t seed, long pairs, float *out) {
#pragma omp parallel for schedule(static)
    for (long p = 0; p < pairs; p++) {
        uint64_t w = mix64(seed + (uint64_t)(p + 1) * GAMMA);
        out[2 * p] = (float)(uint32_t)(w >> 40) * 0x1p-24f;
        out[2 * p + 1] = (float)(uint32_t)((w >> 8) & 0xffffffULL) * 0x1p-24f;
    }
}

/* the constants of counter_rng.py (float32) */
#define SQRT2 0x1.6a09e6p+0f
#define LN2_HI 0x1.62e4p-1f
#define LN2_LO 0x1.7f7d1cp-20f
#define L3 0x1.555556p-2f
#define L5 0x1.99999ap-3f
#define L7 0x1.24924ap-3f
#define L9 0x1.c71c72p-4f
#define HALF_PI 0x1.921fb6p+0f
#define S3 -0x1.555556p-3f
#define S5 0x1.111112p-7f
#define S7 -0x1.a01a02p-13f
#define S9 0x1.71de3ap-19f
#define C2 -0x1p-1f
#define C4 0x1.555556p-5f
#define C6 -0x1.6c16c2p-10f
#define C8 0x1.a01a02p-16f
#define C10 -0x1.27e4fcp-22f

/* float32 N(mean, std^2) numbers */
void rng_normal(uint64_t seed, long pairs, float mean, float std, float *out) {
#pragma omp parallel for schedule(static)
    for (long p = 0; p < pairs; p++) {
        uint64_t w = mix64(seed + (uint64_t)(p + 1) * GAMMA);
        /* log u1: u1 = 2^e * m, m in [sqrt(1/2), sqrt(2)); log m = 2 atanh((m - 1) / (m + 1)) */
        float u1 = (float)(uint32_t)((w >> 40) + 1) * 0x1p-24f;
        uint32_t bits = as_uint(u1);
        int e = (int)(bits >> 23) - 127;
        float m = as_float((bits & 0x7fffffu) | 0x3f800000u);
        int big = m > SQRT2;
        m = big ? m * 0.5f : m;
        e = big ? e + 1 : e;
        float s = (m - 1.0f) / (m + 1.0f);
        float s2 = s * s;
        float t = s + s;
        float poly = s2 * (L3 + s2 * (L5 + s2 * (L7 + s2 * L9)));
        float logm = t + t * poly;
        float fe = (float)e;
        float logu = fe * LN2_HI + (fe * LN2_LO + logm);
        float r = sqrtf(-2.0f * logu);
        /* the angle q * pi/2 + phi */
        uint32_t b = (uint32_t)((w >> 8) & 0xffffffULL);
        uint32_t q = b >> 22;
        float f = ((float)(b & 0x3fffffu) + 0.5f) * 0x1p-22f - 0.5f;
        float phi = f * HALF_PI;
        float p2 = phi * phi;
        float sn = phi + phi * (p2 * (S3 + p2 * (S5 + p2 * (S7 + p2 * S9))));
        float cs = 1.0f + p2 * (C2 + p2 * (C4 + p2 * (C6 + p2 * (C8 + p2 * C10))));
        float x = q == 0 ? cs : q == 1 ? -sn : q == 2 ? -cs : sn;
        float y = q == 0 ? sn : q == 1 ? cs : q == 2 ? -sn : -cs;
        out[2 * p] = r * x * std + mean;
        out[2 * p + 1] = r * y * std + mean;
    }
}
