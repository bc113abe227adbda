"""The dense products of the synapses: y = x·Wᵀ + b and its gradients, on oneDNN where torch has it.

torch sends a float32 CPU ``mm``/``addmm`` to MKL, which takes its AVX2 path on AMD CPUs: on our AMD
EPYC (AVX-512) it reaches 225 GFLOP/s for the FC net's 768×800·800×800, while oneDNN's linear
(``torch.ops.mkldnn._linear_pointwise``, the kernel behind torch's own oneDNN fusions, plain fp32
arithmetic) reaches 470–530 GFLOP/s on the same product and its two transposes (backward data, weight
gradient): a 2.1× faster GEMM. ``mm`` and ``linear`` use it for float32 CPU tensors when the product
has at least ``MIN_MACS`` multiply-adds (below that its ~10 µs call overhead wins) and fall back to
torch's ``mm``/``F.linear`` otherwise: other dtypes (float64 tests), other devices, a torch without
the op (checked once against ``mm``), torch's oneDNN switched off (``torch.backends.mkldnn.flags``),
or ``NEUROPLAST_GEMM=default`` set before the first product.
The choice is by availability, not timed at run time (a timed choice would let two runs of one seed
take different kernels); on Intel CPUs, where MKL takes its AVX-512 path, the two were not compared
here. The two kernels sum in different orders, so results differ from MKL's by float rounding (~1e-7
relative); a given machine and torch always take the same kernel for a given shape.
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from . import native_lib

Tensor = torch.Tensor

#: smallest M·K·N sent to oneDNN
MIN_MACS = 1 << 20


@functools.lru_cache(maxsize=1)
def _onednn_available() -> bool:
    """Whether oneDNN's linear exists here and computes a product (checked once against ``mm``)."""
    if os.environ.get("NEUROPLAST_GEMM", "").lower() == "default" or not torch.backends.mkldnn.is_available():
        return False
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return False
    try:
        g = torch.Generator().manual_seed(0)
        a, w = torch.randn(67, 129, generator=g), torch.randn(33, 129, generator=g)
        with torch.no_grad():
            ok = torch.allclose(op(a, w, None, "none", [], ""), a @ w.t(), rtol=1e-4, atol=1e-4)
    except (RuntimeError, TypeError):
        return False
    return bool(ok)


def _use_onednn(a: Tensor, b: Tensor, m: int, k: int, n: int) -> bool:
    """Whether a product of these operands and sizes goes to oneDNN: not where torch's oneDNN use is
    switched off (``torch.backends.mkldnn.flags(enabled=False)``), under CPU autocast (which would
    make ``F.linear`` a bfloat16 product) or while ``torch.jit`` traces."""
    return (a.device.type == "cpu" and a.dtype == torch.float32 and b.dtype == torch.float32
            and m * k * n >= MIN_MACS and _onednn_available() and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing())


def _graph(*ts: Tensor | None) -> bool:
    """Whether a product of these would be recorded for a further backward (``create_graph=True``): the
    oneDNN op has no derivative, so such products stay torch's."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x·weightᵀ + bias on oneDNN (x [M, K], weight [N, K]; the caller checked ``_use_onednn``)."""
    return torch.ops.mkldnn._linear_pointwise(_contiguous(x), weight, bias, "none", [], "")


def _contiguous(x: Tensor) -> Tensor:
    """x itself, or a contiguous copy of it: oneDNN copies a strided x itself, but a transposed one (the
    weight gradient's gᵀ) goes through the C tiled transpose where it is built (``native_lib``), 2.5×
    faster than torch's strided copy at [768, 800] (FC BPTT step −0.4 ms); the same numbers."""
    if x.is_contiguous() or x.dim() != 2 or not x.t().is_contiguous() or not native_lib.usable(x):
        return x
    out = torch.empty(x.shape, dtype=x.dtype)
    native_lib.library().transpose(native_lib.ptr(x), native_lib.ptr(out), x.shape[1], x.shape[0])
    return out


def mm(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for a [M, K], b [K, N] (either may be a transposed view); differentiable (torch's own
    product) where autograd records it, e.g. in a backward pass with ``create_graph=True``."""
    if not _graph(a, b) and _use_onednn(a, b, a.shape[0], a.shape[1], b.shape[1]):
        return _onednn(a, b.t(), None)
    return a @ b


def _onednn_bias(bias: Tensor | None, n: int) -> bool:
    """oneDNN reads the bias as n contiguous numbers (a strided, expanded or broadcast one stays torch's)."""
    return bias is None or (bias.dim() == 1 and bias.shape[0] == n and bias.is_contiguous()
                            and bias.dtype == torch.float32)


class _Linear(torch.autograd.Function):
    """``linear``'s oneDNN product with its gradients (backward through ``mm``)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        grad_x = mm(g, weight) if ctx.needs_input_grad[0] else None
        grad_w = mm(g.t(), x) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` (x [..., K], weight [N, K]) with its gradients, on oneDNN where
    ``mm`` would use it."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if not (_onednn_bias(bias, weight.shape[0]) and _use_onednn(x2, weight, x2.shape[0], x2.shape[1], weight.shape[0])):
        return F.linear(x, weight, bias)
    y = _Linear.apply(x2, weight, bias) if _graph(x, weight, bias) else _onednn(x2, weight, bias)
    return y.view(*lead, weight.shape[0])


class Dense(nn.Linear):
    """``nn.Linear`` whose products go through ``linear`` (same parameters, state dict and maths).
    Above ``MIN_MACS`` in float32 on the CPU it is not a drop-in for ``torch.func`` transforms
    (vmap, jvp, forward-mode AD: ``_Linear`` defines none) or ``torch.jit.script``."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
