/* Fused LIF scans for the CPU: the whole recursion over T in one pass per neuron block (lif_native.py).
 *
 * Layout: [T, N] float32, contiguous (N = batch x neurons); a current constant in time has i_stride 0.
 * Each block of BLOCK neurons keeps u[t-1] (and the adjoint's g[t+1]) in a stack buffer across t, so a
 * step reads I[t] and writes u[t], s[t] once: 1 pass where the eager scan makes 3 forward and 6-8
 * backward. Blocks are independent: OpenMP splits them over torch's own thread pool (the same
 * libgomp, loaded by torch first), and no result depends on how they are split.
 *
 * Forward, the eager scan's IEEE operations in its order (built with -ffp-contract=off, no
 * fast-math), so u and s are bit-identical to lif_scan.scan_forward:
 *   hard  u[t] = I[t] + (lambda*u[t-1])*k[t-1],  k = 1[u <= theta]   (addcmul)
 *   soft  u[t] = (u[t-1] + (-theta*s[t-1])*s[t-1])*lambda + I[t]
 *   s[t] = 1[u[t] > theta]
 * Backward (the adjoint of lif_scan.scan_backward, q = lambda*g[t+1]) and the surrogate h'(u - theta)
 * in closed form; equal to the eager passes to float rounding (sigmoid's exp is a polynomial here).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "stream.h"

#define BLOCK 512

enum { SIGMOID = 0, FAST_SIGMOID = 1, TRIANGLE = 2, ARCTAN = 3, RECTANGULAR = 4, GAUSSIAN = 5 };

/* e^a for a <= 0 (underflows to ~1e-38 below -87): Cody-Waite reduction a = n ln2 + r, |r| <= ln2/2,
 * and Cephes' degree-5 polynomial for e^r (< 2 ulp); branch-free, so gcc vectorises the loops it is in. */
static inline float exp_nonpos(float a) {
    a = a < -87.0f ? -87.0f : a;
    float n = a * 1.44269504088896341f + 12582912.0f;
    n = n - 12582912.0f;                                  /* round(a / ln2) */
    float r = a - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;              /* 2^n, n in [-126, 0] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* h'(x), x = u - theta, of each surrogate (surrogates.py gives the formulas and the papers). */
static inline float d_sigmoid(float x, float k) {
    float e = exp_nonpos(-fabsf(k * x));
    float d = 1.0f + e;
    return k * e / (d * d);
}
static inline float d_fast_sigmoid(float x, float k) { float d = fabsf(x) * k + 1.0f; return 1.0f / (d * d); }
static inline float d_triangle(float x, float w) {
    float h = fabsf(x) * (-1.0f / (w * w)) + 1.0f / w;
    return h > 0.0f ? h : 0.0f;
}
static inline float d_arctan(float x, float a) {
    float y = x * (0.5f * 3.14159265358979f * a);
    return 1.0f / (y * y + 1.0f) * (0.5f * a);
}
static inline float d_rectangular(float x, float w) { return fabsf(x) < 0.5f * w ? 1.0f / w : 0.0f; }
static inline float d_gaussian(float x, float s) {
    float y = x / s;
    return exp_nonpos(-0.5f * (y * y)) / (s * 2.50662827463100050f);
}

void lif_forward(const float *I, long i_stride, const float *u0, const float *s0, float *U, float *S,
                 long T, long N, float leak, float theta, int hard) {
    long nblocks = (N + BLOCK - 1) / BLOCK;
    int stream = T * N * (long)sizeof(float) > STREAM_BYTES;
#pragma omp parallel
    {
#pragma omp for schedule(static)
    for (long b = 0; b < nblocks; b++) {
        long j0 = b * BLOCK, n = N - j0 < BLOCK ? N - j0 : BLOCK;
        float ub[2][BLOCK], sb[2][BLOCK];      /* u, s of this step and the last, streamed out */
        const float *up = u0 ? u0 + j0 : 0, *sp = s0 ? s0 + j0 : 0;   /* sp: s[t-1] (soft; hard at t = 0) */
        for (long t = 0; t < T; t++) {
            const float *it = I + t * i_stride + j0;
            float *uo = ub[t & 1], *so = sb[t & 1];
            if (!up) {                                             /* from rest: u = I */
                for (long j = 0; j < n; j++) {
                    float u = it[j];
                    uo[j] = u;
                    so[j] = u > theta ? 1.0f : 0.0f;
                }
            } else if (hard) {                                     /* k[t-1] = 1 - s[t-1] */
                for (long j = 0; j < n; j++) {
                    float k = t ? (up[j] <= theta ? 1.0f : 0.0f) : 1.0f - sp[j];
                    float u = it[j] + (leak * up[j]) * k;
                    uo[j] = u;
                    so[j] = u > theta ? 1.0f : 0.0f;
                }
            } else {
                for (long j = 0; j < n; j++) {
                    float r = up[j] + (-theta * sp[j]) * sp[j];
                    float u = r * leak + it[j];
                    uo[j] = u;
                    so[j] = u > theta ? 1.0f : 0.0f;
                }
            }
            if (U) stream_copy(U + t * N + j0, uo, n, stream);
            stream_copy(S + t * N + j0, so, n, stream);
            up = uo;
            sp = so;
        }
    }
    stream_fence();
    }
}

/* out[t] = G[t] * h'(U[t] - theta), one kernel per surrogate (the switch stays outside the loops). */
#define GATE(NAME, D)                                                                                  \
    static void gate_##NAME(const float *G, const float *U, float *out, long N, float theta, float p) { \
        _Pragma("omp parallel for schedule(static)")                                                   \
        for (long b = 0; b < N; b += 4096) {                                                           \
            long e = b + 4096 < N ? b + 4096 : N;                                                      \
            for (long j = b; j < e; j++) out[j] = G[j] * D(U[j] - theta, p);                           \
        }                                                                                              \
    }

/* The BPTT adjoint, t = T-1 ... 0 (hard: k[t] = 1[u[t] <= theta], recomputed from U):
 *   hard  g[t] = h[t]*(G[t] + (-lambda*g[t+1])*u[t]) + (lambda*g[t+1])*k[t]
 *   soft  g[t] = h[t]*(G[t] + (-theta)*(lambda*g[t+1])) + lambda*g[t+1]
 * summed: out[N] = g[T-1] + g[T-2] + ... + g[0] (a current constant in time). */
#define ADJOINT(NAME, D)                                                                               \
    static void adjoint_##NAME(const float *G, const float *U, float *out, long T, long N, float leak,  \
                               float theta, int hard, float p, int summed) {                           \
        long nblocks = (N + BLOCK - 1) / BLOCK;                                                        \
        _Pragma("omp parallel for schedule(static)")                                                   \
        for (long b = 0; b < nblocks; b++) {                                                           \
            long j0 = b * BLOCK, n = N - j0 < BLOCK ? N - j0 : BLOCK;                                  \
            float g[BLOCK], tot[BLOCK];                                                                \
            for (long t = T - 1; t >= 0; t--) {                                                        \
                const float *Gt = G + t * N + j0, *ut = U + t * N + j0;                                \
                if (t == T - 1) {                                                                      \
                    for (long j = 0; j < n; j++) g[j] = Gt[j] * D(ut[j] - theta, p);                   \
                } else if (hard) {                                                                     \
                    for (long j = 0; j < n; j++) {                                                     \
                        float a = Gt[j] + (-leak * g[j]) * ut[j];                                      \
                        float k = ut[j] <= theta ? 1.0f : 0.0f;                                        \
                        float q = leak * g[j];                                                         \
                        g[j] = a * D(ut[j] - theta, p) + q * k;                                        \
                    }                                                                                  \
                } else {                                                                               \
                    for (long j = 0; j < n; j++) {                                                     \
                        float q = g[j] * leak;                                                         \
                        float a = Gt[j] + -theta * q;                                                  \
                        g[j] = a * D(ut[j] - theta, p) + q;                                            \
                    }                                                                                  \
                }                                                                                      \
                if (!summed) {                                                                         \
                    memcpy(out + t * N + j0, g, n * sizeof(float));                                    \
                } else if (t == T - 1) {                                                               \
                    memcpy(tot, g, n * sizeof(float));                                                 \
                } else {                                                                               \
                    for (long j = 0; j < n; j++) tot[j] = tot[j] + g[j];                               \
                }                                                                                      \
            }                                                                                          \
            if (summed) memcpy(out + j0, tot, n * sizeof(float));                                      \
        }                                                                                              \
    }

#define KERNELS(NAME, D) GATE(NAME, D) ADJOINT(NAME, D)
KERNELS(sigmoid, d_sigmoid)
KERNELS(fast_sigmoid, d_fast_sigmoid)
KERNELS(triangle, d_triangle)
KERNELS(arctan, d_arctan)
KERNELS(rectangular, d_rectangular)
KERNELS(gaussian, d_gaussian)

typedef void (*gate_fn)(const float *, const float *, float *, long, float, float);
typedef void (*adjoint_fn)(const float *, const float *, float *, long, long, float, float, int, float, int);
static const gate_fn GATES[] = {gate_sigmoid, gate_fast_sigmoid, gate_triangle, gate_arctan, gate_rectangular,
                                gate_gaussian};
static const adjoint_fn ADJOINTS[] = {adjoint_sigmoid, adjoint_fast_sigmoid, adjoint_triangle, adjoint_arctan,
                                      adjoint_rectangular, adjoint_gaussian};

int lif_kinds(void) { return (int)(sizeof GATES / sizeof GATES[0]); }

void lif_gate(const float *G, const float *U, float *out, long N, float theta, int kind, float p) {
    GATES[kind](G, U, out, N, theta, p);
}

void lif_adjoint(const float *G, const float *U, float *out, long T, long N, float leak, float theta, int hard,
                 int kind, float p, int summed) {
    ADJOINTS[kind](G, U, out, T, N, leak, theta, hard, p, summed);
}
