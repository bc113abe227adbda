"""The eager fast path of ``lif_sequence``: the LIF recursion as a tight scan over preallocated buffers.

Forward, per step, four in-place ops into preallocated [T, ...] buffers, no allocation, float
spikes (bit-identical to ``neurons.lif_step`` with the exact Heaviside):

    u[t] = λ·reset(u[t−1], s[t−1]) + I[t]      reset = u − u·s (hard) or u − θ·s (soft), one addcmul
    s[t] = 1[u[t] > θ]

Backward is the adjoint of ``lif_sequence`` with h[t] = h'(u[t] − θ) (the estimator's derivative,
called step by step from t = T−1 down to 0 as in the reference, so LocalZO draws the same numbers)
and the reset's partial derivatives written out (see ``scan_backward``): 5–6 in-place ops per step
on one step's slice (which stays in cache; batching these over all T was slower on CPU). Gradients
equal the reference up to fused multiply-adds (~1e-7 relative in float32); spikes exactly.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .neurons import LIFParams

Tensor = torch.Tensor


def scan_forward(current: Tensor, params: LIFParams,
                 state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(u[0:T], s[0:T]) of a LIF layer driven by I[0:T] (float spikes), from ``state`` = (u[−1], s[−1])
    or zero."""
    T, shape = current.shape[0], current.shape[1:]
    opts = {"dtype": current.dtype, "device": current.device}
    U, S = torch.empty(current.shape, **opts), torch.empty(current.shape, **opts)
    u_prev, s_prev = state if state is not None else (torch.zeros(shape, **opts),) * 2
    # u − u·s and u − θ·s: the products are exact (s ∈ {0, 1}), so one addcmul equals the reference
    value = -1.0 if params.reset == "hard" else -params.threshold
    for t in range(T):
        r = U[t]
        torch.addcmul(u_prev, u_prev if params.reset == "hard" else s_prev, s_prev, value=value, out=r)
        r.mul_(params.leak).add_(current[t])
        torch.gt(r, params.threshold, out=S[t])  # u > θ ⟺ u − θ > 0 (IEEE subtraction of unequal floats ≠ 0)
        u_prev, s_prev = r, S[t]
    return U, S


def cut_backward(grad_spikes: Tensor, U: Tensor, params: LIFParams, derivative: Callable[[Tensor], Tensor]) -> Tensor:
    """∂L/∂I[t] = ∂L/∂s[t]·h'(u[t] − θ) for every t, with the graph cut through time after each step
    (the folded online rules, ``learn.batched``); one step's cache-sized slice at a time."""
    out, x = torch.empty_like(U), torch.empty_like(U[0])
    for t in range(U.shape[0]):
        torch.mul(grad_spikes[t], derivative(torch.sub(U[t], params.threshold, out=x)), out=out[t])
    return out


def scan_backward(grad_spikes: Tensor, U: Tensor, S: Tensor, params: LIFParams,
                  derivative: Callable[[Tensor], Tensor]) -> Tensor:
    """∂L/∂I[0:T] from ∂L/∂s[0:T] and the saved u[0:T], s[0:T]; one step at a time (cache-sized
    slices), t = T−1 … 0, with q = λ·g_u[t+1]:

        hard  g_u[t] = (∂L/∂s[t] − q·u[t])·h[t] + q·(1 − s[t])
        soft  g_u[t] = (∂L/∂s[t] − θ·q)·h[t] + q"""
    T = U.shape[0]
    G = torch.empty_like(U)
    x, q = torch.empty_like(U[0]), torch.empty_like(U[0])
    hard = params.reset == "hard"
    for t in range(T - 1, -1, -1):
        h = derivative(torch.sub(U[t], params.threshold, out=x))
        g = G[t]
        if t == T - 1:
            torch.mul(grad_spikes[t], h, out=g)
            continue
        torch.mul(G[t + 1], params.leak, out=q)
        if hard:
            torch.addcmul(grad_spikes[t], q, U[t], value=-1.0, out=g).mul_(h)
            g.addcmul_(q, torch.rsub(S[t], 1.0))
        else:
            torch.add(grad_spikes[t], q, alpha=-params.threshold, out=g).mul_(h).add_(q)
    return G
