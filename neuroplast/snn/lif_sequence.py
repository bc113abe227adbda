"""LIF over a whole sequence with a hand-written backward pass (the fast BPTT path).

Forward runs the LIF recursion T times without building a graph and keeps u[t], s[t].
Backward runs the adjoint of the same recursion, from t = T−1 down to 0:

    g_s[t] = ∂L/∂s[t] + λ·g_u[t+1]·∂reset/∂s(u[t], s[t])
    g_u[t] = g_s[t]·h'(u[t] − θ) + λ·g_u[t+1]·∂reset/∂u(u[t], s[t])
    ∂L/∂I[t] = g_u[t]

with h' the estimator's pointwise derivative (a surrogate, or LocalZO's fresh draw). The default
path is the scan of ``lif_scan`` (its forward in C where ``lif_native`` is built, bit-identical; the
adjoint in eager ops on one step's slice at a time); with ``compiled=True`` the adjoint is fused too
(``lif_fused``: C on the CPU, ``torch.compile`` elsewhere; gradients to float rounding).
``tests/test_lif_sequence.py`` and ``tests/test_lif_native.py`` check them against the reference.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from . import lif_fused, lif_scan
from .neurons import RESET_GRADS, LIFParams, lif_step
from .spikefn import heaviside

Tensor = torch.Tensor


def forward_step(u: Tensor, s: Tensor, current: Tensor, params: LIFParams) -> tuple[Tensor, Tensor]:
    """One step of the reference LIF with the exact Heaviside."""
    return lif_step(u, s, current, params, heaviside)


def adjoint_step(grad_s: Tensor, g_u_next: Tensor, u: Tensor, s: Tensor, h: Tensor, params: LIFParams) -> Tensor:
    """g_u[t] from ∂L/∂s[t], g_u[t+1], the state (u[t], s[t]) and h = h'(u[t] − θ)."""
    dr_du, dr_ds = RESET_GRADS[params.reset](u, s, params.threshold)
    g_leak = params.leak * g_u_next
    return (grad_s + g_leak * dr_ds) * h + g_leak * dr_du


class _LIFScan(torch.autograd.Function):
    """``lif_scan.scan_forward`` / ``scan_backward``, or their fused twins (``lif_fused``) when ``fused``."""

    @staticmethod
    def forward(ctx, current, params, derivative, fused=False, steps=None):
        ctx.scans, ctx.constant = (lif_fused if fused else lif_scan), steps is not None
        U, spikes, K = ctx.scans.scan_forward(_repeated(current, steps), params)
        ctx.save_for_backward(U, K)
        ctx.params, ctx.derivative = params, derivative
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        U, K = ctx.saved_tensors
        grad = ctx.scans.scan_backward(grad_spikes, U, K, ctx.params, ctx.derivative, summed=ctx.constant)
        return grad, None, None, None, None


class _LIFSequence(torch.autograd.Function):
    """Step-by-step path (``forward_step`` / ``adjoint_step``): the reference the scans are checked against."""

    @staticmethod
    def forward(ctx, current, params, derivative):
        u = s = torch.zeros_like(current[0])
        us, spikes = [], []
        for cur in current.unbind(0):
            u, s = forward_step(u, s, cur, params)
            us.append(u)
            spikes.append(s)
        ctx.save_for_backward(*us, *spikes)  # the step outputs themselves: no copies
        ctx.params, ctx.derivative = params, derivative
        return torch.stack(spikes)

    @staticmethod
    def backward(ctx, grad_spikes):
        saved = ctx.saved_tensors
        T = len(saved) // 2
        p = ctx.params
        grads = [None] * T
        g_u = torch.zeros_like(saved[0])
        for t in range(T - 1, -1, -1):
            u, s = saved[t], saved[T + t]
            g_u = adjoint_step(grad_spikes[t], g_u, u, s, ctx.derivative(u - p.threshold), p)
            grads[t] = g_u
        return torch.stack(grads), None, None


def lif_sequence(current: Tensor, params: LIFParams, derivative: Callable[[Tensor], Tensor], *,
                 compiled: bool = False, stepwise: bool = False, steps: int | None = None) -> Tensor:
    """Spikes s[0:T] of a LIF layer driven by I[0:T] (``current``: [T, B, ...]), from zero state.

    ``steps=T``: ``current`` is [B, ...], the same at every one of T steps (direct encoding into the
    first layer); its gradient Σ_t ∂L/∂I[t] is summed inside the adjoint scan.
    ``compiled=True``: the scans fused (``lif_fused``; eager where that fails).
    ``stepwise=True`` forces the step-by-step path of ``forward_step``/``adjoint_step`` (the
    reference for tests)."""
    if stepwise:
        return _LIFSequence.apply(_repeated(current, steps), params, derivative)
    if not (torch.is_grad_enabled() and current.requires_grad) and (not compiled or current.device.type == "cpu"):
        # inference: spikes only (fused or not, the CPU's forward is lif_scan's)
        return lif_scan.scan_forward(_repeated(current, steps), params, keep_u=False, keep_k=False)[1]
    return _LIFScan.apply(current, params, derivative, compiled, steps)


def _repeated(current: Tensor, steps: int | None) -> Tensor:
    """[T, B, ...] of a current: itself, or with ``steps`` = T the [B, ...] current as a stride-0 view."""
    return current if steps is None else current.unsqueeze(0).expand(steps, *current.shape)
