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
        h, w = shape[-2] // k * k, shape[-1] // k * k
        full = h == shape[-2] and w == shape[-1]
        grad = (torch.empty if full else torch.zeros)(shape, dtype=g.dtype, device=g.device)
        windows = grad[..., :h, :w].unflatten(-1, (w // k, k)).unflatten(-3, (h // k, k))
        windows.copy_((g / (k * k)).unsqueeze(-1).unsqueeze(-3))
        return grad, None


def avg_pool(x: Tensor, k: int) -> Tensor:
    """``F.avg_pool2d(x, k)`` (kernel = stride = k, no padding) for x [..., H, W]."""
    return _AvgPool.apply(x, k)
