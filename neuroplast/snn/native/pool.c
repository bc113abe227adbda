/* Average pooling, kernel = stride = k, on [planes, H, W] float32 (pooling.py; built by native_lib.py).
 *
 * Forward, the eager path's operations in its order, so bit-identical to it: the k columns of each
 * window row summed left to right, then the k row sums top to bottom, then * (1/k^2) where that
 * is a power of two (exact) or / k^2 otherwise:
 *     y[i, j] = ((x[ki, kj] + x[ki, kj+1] + ...) + (x[ki+1, kj] + ...) + ...) * (1/k^2)
 * Backward: dL/dx[h, w] = dL/dy[h/k, w/k] * (1/k^2) (or / k^2), 0 in the rows and columns beyond
 * k*floor(H/k), k*floor(W/k): the same numbers as the eager 0/1-matrix product (which adds only
 * zeros to the one product), written once instead of through a GEMM. Planes are split over
 * torch's OpenMP threads. */

/* The forward loop over planes, TERM(i) the input element i of plane p (xp[i], or xp[i] + np_[i]). */
#define POOL_FORWARD(TERM)                                                                          \
    long H2 = H / k, W2 = W / k;                                                                    \
    _Pragma("omp parallel for schedule(static)")                                                    \
    for (long p = 0; p < planes; p++) {                                                             \
        const float *restrict xp = x + p * H * W;                                                   \
        const float *restrict np_ = noise ? noise + p * H * W : xp;                                 \
        float *yp = y + p * H2 * W2;                                                                \
        (void)np_;                                                                                  \
        for (long i = 0; i < H2; i++) {                                                             \
            float *restrict yi = yp + i * W2;                                                       \
            if (k == 2) {   /* the common case, written so that it vectorises */                    \
                long r0 = 2 * i * W, r1 = r0 + W;                                                   \
                for (long j = 0; j < W2; j++) {                                                     \
                    float c0 = TERM(r0 + 2 * j) + TERM(r0 + 2 * j + 1);                            \
                    float c1 = TERM(r1 + 2 * j) + TERM(r1 + 2 * j + 1);                            \
                    yi[j] = (c0 + c1) * scale;                                                      \
                }                                                                                   \
                continue;                                                                           \
            }                                                                                       \
            for (long a = 0; a < k; a++) {                                                          \
                long row = (i * k + a) * W;                                                         \
                for (long j = 0; j < W2; j++) {                                                     \
                    float c = TERM(row + j * k);                                                    \
                    for (long b = 1; b < k; b++) c = c + TERM(row + j * k + b);                     \
                    yi[j] = a ? yi[j] + c : c;                                                      \
                }                                                                                   \
            }                                                                                       \
            for (long j = 0; j < W2; j++) yi[j] = exact ? yi[j] * scale : yi[j] / scale;            \
        }                                                                                           \
    }

#define PLAIN(i) xp[i]
#define PLUS(i) (xp[i] + np_[i])
#define MINUS(i) (xp[i] - np_[i])

void avg_pool_forward(const float *x, float *y, long planes, long H, long W, long k, float scale, int exact) {
    const float *noise = 0;
    POOL_FORWARD(PLAIN)
}

/* OPZO's noisy spikes pooled in one pass: avg_pool_forward of x + noise (x - noise where negate),
 * each sum rounded as the eager add (or sub) rounds it before the pooling adds: the numbers of
 * pooling the eager sum, without writing it. */
void avg_pool_forward_noisy(const float *x, const float *noise, float *y, long planes, long H, long W, long k,
                            float scale, int exact, int negate) {
    if (negate) {
        POOL_FORWARD(MINUS)
    } else {
        POOL_FORWARD(PLUS)
    }
}

void avg_pool_backward(const float *g, float *out, long planes, long H, long W, long k, float scale, int exact) {
    long H2 = H / k, W2 = W / k;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < planes; p++) {
        const float *gp = g + p * H2 * W2;
        float *op = out + p * H * W;
        for (long h = 0; h < H; h++) {
            float *row = op + h * W;
            if (h >= H2 * k) {
                for (long w = 0; w < W; w++) row[w] = 0.0f;
                continue;
            }
            const float *restrict gi = gp + (h / k) * W2;
            if (k == 2) {
                float *restrict r = row;
                for (long j = 0; j < W2; j++) {
                    float v = gi[j] * scale;
                    r[2 * j] = v;
                    r[2 * j + 1] = v;
                }
            } else
            for (long j = 0; j < W2; j++) {
                float v = exact ? gi[j] * scale : gi[j] / scale;
                for (long b = 0; b < k; b++) row[j * k + b] = v;
            }
            for (long w = W2 * k; w < W; w++) row[w] = 0.0f;
        }
    }
}
