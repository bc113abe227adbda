"""Average pooling with kernel = stride = k, as k² strided adds (faster than ``F.avg_pool2d`` on CPU).

    y[i, j] = (Σ_{a<k} Σ_{b<k} x[k·i + a, k·j + b]) / k²        (rows/columns beyond k·⌊H/k⌋ dropped)

The sum runs in the order of PyTorch's CPU kernel (a, then b, from zero) and divides by k², so the
result is bit-identical to ``F.avg_pool2d(x, k)``; the backward sends ∂L/∂y / k² to each of the
k² inputs of a window (zero to dropped rows/columns), as ``avg_pool2d_backward`` does.
"""
from __future__ import annotations

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
        g = g / (k * k)  # repeat each value k times along W, then each row k times along H
        g = g.unsqueeze(-1).expand(*lead, h2, w2, k).reshape(*lead, h2, w2 * k)
        g = g.unsqueeze(-2).expand(*lead, h2, k, w2 * k).reshape(*lead, h2 * k, w2 * k)
        if tuple(g.shape) == tuple(shape):
            return g, None
        grad = torch.zeros(shape, dtype=g.dtype, device=g.device)  # dropped rows/columns get zero
        grad[..., : h2 * k, : w2 * k] = g
        return grad, None


def avg_pool(x: Tensor, k: int) -> Tensor:
    """``F.avg_pool2d(x, k)`` (kernel = stride = k, no padding) for x [..., H, W]."""
    return _AvgPool.apply(x, k)
