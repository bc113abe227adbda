/* The float64 run of the Loihi integer CUBA LIF (chip/fixed.py, int_lif_steps) in one pass per neuron
 * block over all T (built by native_lib.py). Every value is an exact integer in float64 (the caller
 * checked the bounds), so each operation below is exact and the results are the torch loop's to the bit:
 *   u = trunc(u*cu) + a[t]*act                   cu = (4096 - (du + 1))/4096, act = 2^6
 *   wrapped to 24 bits:  u -= 2^24 * rint((u - 1/2) * 2^-24)      (if wraps)
 *   v = (trunc(v*cv) + u) + bias                 cv = (4096 - dv)/4096
 *   v = clamp(v, -(2^23 - 1), 2^23 - 1)          (if clips)
 *   s = v > vth;  v = s ? 0 : v
 * a has stride a_stride between steps (0: one step repeated); bias has period bias_n (1: a scalar). */
#include <math.h>

void int_lif_f64(const double *a, long a_stride, double *u, double *v, const double *bias, long bias_n,
                 unsigned char *spikes, long T, long N, double cu, double cv, double vth, double act, int wraps,
                 int clips) {
    const double span = 16777216.0, inv = 1.0 / 16777216.0, vmax = 8388607.0;
#pragma omp parallel for schedule(static)
    for (long b = 0; b < N; b += 1024) {
        long e = b + 1024 < N ? b + 1024 : N;
        for (long t = 0; t < T; t++) {
            const double *at = a + t * a_stride;
            unsigned char *st = spikes + t * N;
            for (long j = b; j < e; j++) {
                double uj = trunc(u[j] * cu) + at[j] * act;
                if (wraps) uj = uj - span * nearbyint((uj - 0.5) * inv);
                double vj = (trunc(v[j] * cv) + uj) + bias[bias_n == 1 ? 0 : j % bias_n];
                if (clips) vj = vj < -vmax ? -vmax : vj > vmax ? vmax : vj;
                unsigned char s = vj > vth;
                st[j] = s;
                v[j] = s ? 0.0 : vj;
                u[j] = uj;
            }
        }
    }
}
