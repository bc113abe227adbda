/* The two passes of the sigmoid surrogate's gate around torch's own sigmoid (surrogates.Sigmoid):
 *     pre   z = -|k*u + (-k*theta)|       (torch.add(-k*theta, u, alpha=k): one fused multiply-add)
 *     post  out = ((g * (1 - y)) * y) * k  (sigmoid_backward, then * k)
 * with y = sigmoid(z) from torch in between, so the gate is bit-identical to its six eager passes
 * in three. Built by native_lib.py; split over torch's OpenMP threads. */
#include <math.h>

void sigmoid_gate_pre(const float *u, float *z, long n, float k, float offset) {
#pragma omp parallel for schedule(static)
    for (long b = 0; b < n; b += 8192) {
        long e = b + 8192 < n ? b + 8192 : n;
        for (long j = b; j < e; j++) z[j] = -fabsf(fmaf(u[j], k, offset));
    }
}

void sigmoid_gate_post(const float *g, const float *y, float *out, long n, float k) {
#pragma omp parallel for schedule(static)
    for (long b = 0; b < n; b += 8192) {
        long e = b + 8192 < n ? b + 8192 : n;
        for (long j = b; j < e; j++) out[j] = ((g[j] * (1.0f - y[j])) * y[j]) * k;
    }
}

/* One step t of lif_scan.scan_backward for the sigmoid surrogate, in two passes around torch's sigmoid
 * (bit-identical to its eager ops: the multiply-adds where torch's addcmul and add-with-alpha make
 * them):
 *   pre   a = G[t]                                   (t = T-1: g_next NULL)
 *           hard  fma(-lambda*g_next, u, G[t])        (addcmul(G[t], g_next, u, value=-lambda))
 *           soft  fma(g_next*lambda, -theta, G[t])    (add(G[t], g_next*lambda, alpha=-theta))
 *         z = -|fma(u, k, -k*theta)|
 *   post  g = ((a*(1 - y))*y)*k, y = sigmoid(z);  then (t < T-1)
 *           hard  fma(lambda*g_next, 1[u <= theta], g)   soft  g + g_next*lambda
 *         total (if given) = g_next + g on the first sum (t = T-2), else total + g. */
void sigmoid_adjoint_pre(const float *gs, const float *g_next, const float *u, float *a, float *z, long n,
                         float leak, float theta, float k, float offset, int hard) {
#pragma omp parallel for schedule(static)
    for (long b = 0; b < n; b += 8192) {
        long e = b + 8192 < n ? b + 8192 : n;
        for (long j = b; j < e; j++) {
            float aj = gs[j];
            if (g_next) aj = hard ? fmaf(-leak * g_next[j], u[j], gs[j]) : fmaf(g_next[j] * leak, -theta, gs[j]);
            a[j] = aj;
            z[j] = -fabsf(fmaf(u[j], k, offset));
        }
    }
}

void sigmoid_adjoint_post(const float *a, const float *y, const float *g_next, const float *u, float *g,
                          float *total, long n, float leak, float theta, float k, int hard, int first_sum) {
#pragma omp parallel for schedule(static)
    for (long b = 0; b < n; b += 8192) {
        long e = b + 8192 < n ? b + 8192 : n;
        for (long j = b; j < e; j++) {
            float v = ((a[j] * (1.0f - y[j])) * y[j]) * k;
            if (g_next) v = hard ? fmaf(leak * g_next[j], u[j] <= theta ? 1.0f : 0.0f, v) : v + g_next[j] * leak;
            if (total) total[j] = first_sum ? g_next[j] + v : total[j] + v;
            g[j] = v;
        }
    }
}
