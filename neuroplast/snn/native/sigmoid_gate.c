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
