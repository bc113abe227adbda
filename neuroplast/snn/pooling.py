"""Average pooling with kernel = stride = k, as row adds and one 0/1 GEMM (faster than ``F.avg_pool2d`` on CPU).

    y[i, j] = (Σ_{a<k} Σ_{b<k} x[k·i + a, k·j + b]) / k²        (rows/columns beyond k·⌊H/k⌋ dropped)

Forward: the k rows of each window are added as strided slices (contiguous along W), then the
columns of each window are summed by one GEMM with the 0/1 matrix P [k·W', W'] and the result is
divided by k². On spikes and spike counts (small integers) every sum is exact, so the output equals
``F.avg_pool2d(x, k)`` to the bit; on arbitrary floats it differs only by the order of the k² adds
(float rounding). The backward sends ∂L/∂y / k² to each of the k² inputs of a window (zero to
dropped rows/columns), as ``avg_pool2d_backward`` does.
"""
from __future__ import annotations

import functools

import torch

Tensor = torch.Tensor


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, k: int) -> Tensor:
        ctx.shape, ctx.k = x.shape, k
        h2, w2 = x.shape[-2] // k, x.shape[-1] // k
        xc = x[..., : h2 * k, : w2 * k]
        rows = torch.add(xc[..., 0::k, :], xc[..., 1::k, :]) if k > 1 else xc.clone()
        for a in range(2, k):
            rows.add_(xc[..., a::k, :])
        y = rows.reshape(-1, w2 * k) @ _sum_matrix(w2, k, x.dtype, x.device)
        return y.view(*x.shape[:-2], h2, w2).div_(k * k)

    @staticmethod
    def backward(ctx, g: Tensor):
        k, shape = ctx.k, ctx.shape
        lead, (h2, w2) = g.shape[:-2], g.shape[-2:]
        if k & (k - 1) == 0 and g.is_floating_point():
            # k² a power of two: g·(1/k²) = g/k² exactly, so the column repeat is a GEMM with the 0/1·k⁻²
            # matrix (each output one product plus exact zeros), written into the first row of each window
            # and copied to the other k − 1 rows (2–4× faster than interleaving copies)
            out = torch.empty((g[..., 0].numel(), k, w2 * k), dtype=g.dtype, device=g.device)
            torch.mm(g.reshape(-1, w2), _repeat_matrix(w2, k, g.dtype, g.device), out=out[:, 0])
            for b in range(1, k):
                out[:, b].copy_(out[:, 0])
            g = out.view(*lead, h2 * k, w2 * k)
        else:
            g = (g / (k * k)).unsqueeze(-1).expand(*lead, h2, w2, k).reshape(*lead, h2, 1, w2 * k)
            g = g.expand(*lead, h2, k, w2 * k).reshape(*lead, h2 * k, w2 * k)   # then each row k times
        if tuple(g.shape) == tuple(shape):
            return g, None
        grad = torch.zeros(shape, dtype=g.dtype, device=g.device)  # dropped rows/columns get zero
        grad[..., : h2 * k, : w2 * k] = g
        return grad, None


@functools.lru_cache(maxsize=16)
def _repeat_matrix(w2: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[w2, k·w2] with 1/k² at (j, k·j + b): x @ it repeats each column of x k times, divided by k²."""
    out = torch.zeros(w2, w2 * k, dtype=dtype, device=device)
    for b in range(k):
        out[torch.arange(w2), torch.arange(w2) * k + b] = 1.0 / (k * k)
    return out


@functools.lru_cache(maxsize=16)
def _sum_matrix(w2: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[k·w2, w2] with 1 at (k·j + b, j): x @ it sums each group of k adjacent columns of x."""
    out = torch.zeros(w2 * k, w2, dtype=dtype, device=device)
    for b in range(k):
        out[torch.arange(w2) * k + b, torch.arange(w2)] = 1.0
    return out


def avg_pool(x: Tensor, k: int) -> Tensor:
    """``F.avg_pool2d(x, k)`` (kernel = stride = k, no padding) for x [..., H, W]."""
    return _AvgPool.apply(x, k)
