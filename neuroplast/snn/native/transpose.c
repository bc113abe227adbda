/* out[c, r] = a[r, c] for a [rows, cols] float32, row-major (native_lib.py; gemm.py uses it to hand
 * oneDNN a contiguous transposed operand: torch's strided copy is 2.5x slower at [768, 800]).
 * 32x32 tiles, so both the reads and the writes stay within a few cache lines per tile; tiles are
 * split over torch's OpenMP threads. A copy: bit-identical to a.t().contiguous(). */
#define TILE 32

void transpose(const float *a, float *out, long rows, long cols) {
#pragma omp parallel for schedule(static) collapse(2)
    for (long r0 = 0; r0 < rows; r0 += TILE)
        for (long c0 = 0; c0 < cols; c0 += TILE) {
            long r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < cols ? c0 + TILE : cols;
            for (long c = c0; c < c1; c++)
                for (long r = r0; r < r1; r++) out[c * rows + r] = a[r * cols + c];
        }
}
