"""The eager fast path of ``lif_sequence``: the LIF recursion as a tight scan over preallocated buffers.

Forward, per step, in-place ops into preallocated [T, ...] buffers, no allocation, float spikes
(bit-identical to ``neurons.lif_step`` with the exact Heaviside):

    hard reset  u[t] = I[t] + λ·u[t−1]·k[t−1],  s[t] = 1[u[t] > θ],  k[t] = 1[u[t] ≤ θ] = 1 − s[t]
    soft reset  u[t] = λ·(u[t−1] − θ·s[t−1]) + I[t],  s[t] = 1[u[t] > θ]

(λ·u·k is exact for k ∈ {0, 1}, so one addcmul gives the reference's λ·u·(1 − s) + I to the bit;
k is kept: it is ∂reset/∂u of the backward.)

Backward is the adjoint of ``lif_sequence`` with h[t] = h'(u[t] − θ) (the estimator's derivative,
called step by step from t = T−1 down to 0 as in the reference, so LocalZO draws the same numbers;
``spikefn.gate`` applies it in the estimator's fused form where there is one) and the reset's partial
derivatives written out (see ``scan_backward``): a few in-place ops per step on one step's slice
(batching them over all T was slower on CPU). Gradients equal the reference up to float rounding
(~1e-7 relative in float32); spikes exactly.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .neurons import LIFParams
from .spikefn import gate

Tensor = torch.Tensor


def scan_forward(current: Tensor, params: LIFParams,
                 state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(u[0:T], s[0:T], k[0:T]) of a LIF layer driven by I[0:T] (float spikes), from ``state`` =
    (u[−1], s[−1]) or rest; k = 1 − s for the hard reset (``scan_backward`` needs it), None for soft."""
    T = current.shape[0]
    U, S = torch.empty_like(current), torch.empty_like(current)
    if params.reset == "hard":
        K = torch.empty_like(current)
        for t in range(T):
            if t:
                torch.addcmul(current[t], U[t - 1], K[t - 1], value=params.leak, out=U[t])
            elif state is not None:
                u_prev, s_prev = state
                torch.addcmul(current[0], u_prev, torch.rsub(s_prev, 1.0), value=params.leak, out=U[0])
            else:
                U[0].copy_(current[0])  # from rest: λ·0 + I
            torch.gt(U[t], params.threshold, out=S[t])  # u > θ ⟺ u − θ > 0 (IEEE subtraction of unequal floats ≠ 0)
            torch.le(U[t], params.threshold, out=K[t])
        return U, S, K
    u_prev, s_prev = state if state is not None else (torch.zeros_like(current[0]),) * 2
    for t in range(T):
        r = U[t]
        torch.addcmul(u_prev, s_prev, s_prev, value=-params.threshold, out=r)  # u − θ·s (s·s = s exactly)
        r.mul_(params.leak).add_(current[t])
        torch.gt(r, params.threshold, out=S[t])
        u_prev, s_prev = r, S[t]
    return U, S, None


def cut_backward(grad_spikes: Tensor, U: Tensor, params: LIFParams, derivative: Callable[[Tensor], Tensor]) -> Tensor:
    """∂L/∂I[t] = ∂L/∂s[t]·h'(u[t] − θ) for every t, with the graph cut through time after each step
    (the folded online rules, ``learn.batched``); one step's cache-sized slice at a time."""
    out, x = torch.empty_like(U), torch.empty_like(U[0])
    for t in range(U.shape[0]):
        gate(derivative, grad_spikes[t], U[t], params.threshold, out[t], x)
    return out


def scan_backward(grad_spikes: Tensor, U: Tensor, K: Tensor | None, params: LIFParams,
                  derivative: Callable[[Tensor], Tensor]) -> Tensor:
    """∂L/∂I[0:T] from ∂L/∂s[0:T], the saved u[0:T] and k[0:T] = 1 − s[0:T] (hard reset; None for
    soft); one step at a time (cache-sized slices), t = T−1 … 0, with q = λ·g_u[t+1]:

        hard  g_u[t] = (∂L/∂s[t] − q·u[t])·h[t] + q·k[t]
        soft  g_u[t] = (∂L/∂s[t] − θ·q)·h[t] + q"""
    T = U.shape[0]
    G = torch.empty_like(U)
    x = torch.empty_like(U[0])
    hard = params.reset == "hard"
    q = None if hard else torch.empty_like(U[0])
    for t in range(T - 1, -1, -1):
        g = G[t]
        if t == T - 1:
            gate(derivative, grad_spikes[t], U[t], params.threshold, g, x)
        elif hard:
            torch.addcmul(grad_spikes[t], G[t + 1], U[t], value=-params.leak, out=g)   # (−λ·g_u[t+1])·u = −q·u
            gate(derivative, g, U[t], params.threshold, g, x)
            g.addcmul_(G[t + 1], K[t], value=params.leak)
        else:
            torch.mul(G[t + 1], params.leak, out=q)
            torch.add(grad_spikes[t], q, alpha=-params.threshold, out=g)
            gate(derivative, g, U[t], params.threshold, g, x)
            g.add_(q)
    return G
