"""Average pooling with kernel = stride = k, as k² strided adds (faster than ``F.avg_pool2d`` on CPU).

    y[i, j] = (Σ_{a<k} Σ_{b<k} x[k·i + a, k·j + b]) / k²        (rows/columns beyond k·⌊H/k⌋ dropped)

The sum runs in the order of PyTorch's CPU kernel (a, then b, from zero) and divides by k², so the
result is bit-identical to ``F.avg_pool2d(x, k)``; the backward sends ∂L/∂y / k² to each of the
k² inputs of a window (zero to dropped rows/columns), as ``avg_pool2d_backward`` does.
"""
from __future__ import annotations

import functools

import torch

Tensor = torch.Tensor


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, k: int) -> Tensor:
        ctx.shape, ctx.k = x.shape, k
        h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
        xc = x[..., :h, :w]
        y = None
        for a in range(k):
            for b in range(k):
                part = xc[..., a::k, b::k]
                y = part.clone() if y is None else y.add_(part)
        return y.div_(k * k)

    @staticmethod
    def backward(ctx, g: Tensor):
        k, shape = ctx.k, ctx.shape
        lead, (h2, w2) = g.shape[:-2], g.shape[-2:]
        if k & (k - 1) == 0 and g.is_floating_point():
            # k² a power of two: g·(1/k²) = g/k² exactly, so the column repeat is a GEMM with the 0/1·k⁻²
            # matrix (each output one product plus exact zeros; 2x faster than an interleaving copy)
            g = (g.reshape(-1, w2) @ _repeat_matrix(w2, k, g.dtype, g.device)).view(*lead, h2, 1, w2 * k)
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


def avg_pool(x: Tensor, k: int) -> Tensor:
    """``F.avg_pool2d(x, k)`` (kernel = stride = k, no padding) for x [..., H, W]."""
    return _AvgPool.apply(x, k)
