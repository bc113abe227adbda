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

from . import lif_native
from .neurons import LIFParams
from .spikefn import gate

Tensor = torch.Tensor


def scan_forward(current: Tensor, params: LIFParams, state: tuple[Tensor, Tensor] | None = None, *,
                 keep_u: bool = True, keep_k: bool = True) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(u[0:T], s[0:T], k[0:T]) of a LIF layer driven by I[0:T] (float spikes), from ``state`` =
    (u[−1], s[−1]) or rest; k = 1 − s for the hard reset (``scan_backward`` needs it), None for soft.
    ``keep_u=False`` / ``keep_k=False`` (no backward pass needs them): u / k live in two step buffers
    and None comes back in their place. On a float32 CPU tensor the C scan runs instead where it is
    built (``lif_native.forward``: the same u and s bit for bit, k = None: ``scan_backward`` recomputes it)."""
    native = lif_native.forward(current, params, state, keep_u=keep_u)
    if native is not None:
        return native[0], native[1], None
    T = current.shape[0]
    S = torch.empty_like(current)

    def buffer(full):
        return torch.empty(((T,) if full else (min(T, 2),)) + current.shape[1:], dtype=current.dtype,
                           device=current.device)
    U = buffer(keep_u)
    n = len(U)
    if params.reset == "hard":
        K = buffer(keep_k)
        m = len(K)
        u = None
        for t in range(T):
            u_prev, u, k = u, U[t % n], K[t % m]
            if t:
                torch.addcmul(current[t], u_prev, K[(t - 1) % m], value=params.leak, out=u)
            elif state is not None:
                u_prev, s_prev = state
                torch.addcmul(current[0], u_prev, torch.rsub(s_prev, 1.0), value=params.leak, out=u)
            elif keep_u:
                u.copy_(current[0])  # from rest: λ·0 + I
            else:
                u = current[0]       # nothing keeps u[0]: read I[0] itself, no copy
            torch.gt(u, params.threshold, out=S[t])  # u > θ ⟺ u − θ > 0 (IEEE subtraction of unequal floats ≠ 0)
            torch.le(u, params.threshold, out=k)
        return (U if keep_u else None), S, (K if keep_k else None)
    u_prev, s_prev = state if state is not None else (torch.zeros_like(current[0]),) * 2
    for t in range(T):
        r = U[t % n]
        torch.addcmul(u_prev, s_prev, s_prev, value=-params.threshold, out=r)  # u − θ·s (s·s = s exactly)
        r.mul_(params.leak).add_(current[t])
        torch.gt(r, params.threshold, out=S[t])
        u_prev, s_prev = r, S[t]
    return (U if keep_u else None), S, None


def cut_backward(grad_spikes: Tensor, U: Tensor, params: LIFParams, derivative: Callable[[Tensor], Tensor]) -> Tensor:
    """∂L/∂I[t] = ∂L/∂s[t]·h'(u[t] − θ) for every t, with the graph cut through time after each step
    (the folded online rules, ``learn.batched``, deterministic estimators only): no recursion, so one
    gate over the whole window (fewer, longer passes than step by step), the output its own scratch."""
    out = torch.empty_like(U)
    return gate(derivative, grad_spikes, U, params.threshold, out, out)


def scan_backward(grad_spikes: Tensor, U: Tensor, K: Tensor | None, params: LIFParams,
                  derivative: Callable[[Tensor], Tensor], *, summed: bool = False) -> Tensor:
    """∂L/∂I[0:T] from ∂L/∂s[0:T], the saved u[0:T] and k[0:T] = 1 − s[0:T] (hard reset; None: k[t] =
    1[u[t] ≤ θ] recomputed step by step); one step at a time (cache-sized slices), t = T−1 … 0, with
    q = λ·g_u[t+1]:

        hard  g_u[t] = (∂L/∂s[t] − q·u[t])·h[t] + q·k[t]
        soft  g_u[t] = (∂L/∂s[t] − θ·q)·h[t] + q

    ``summed=True`` returns Σ_t ∂L/∂I[t] instead (the gradient of a current constant in time), with
    two step buffers (and one for the sum) in place of the [T, ...] one."""
    native = lif_native.sigmoid_adjoint(grad_spikes, U, params, derivative, summed=summed)   # the same numbers
    if native is not None:
        return native
    T = U.shape[0]
    G = torch.empty((3,) + U.shape[1:], dtype=U.dtype, device=U.device) if summed else torch.empty_like(U)
    total = None
    x = torch.empty_like(U[0])
    hard = params.reset == "hard"
    q = None if hard else torch.empty_like(U[0])
    for t in range(T - 1, -1, -1):
        g, g_next = (G[t % 2], G[(t + 1) % 2]) if summed else (G[t], G[t + 1] if t < T - 1 else None)
        if t == T - 1:
            gate(derivative, grad_spikes[t], U[t], params.threshold, g, x)
        elif hard:
            torch.addcmul(grad_spikes[t], g_next, U[t], value=-params.leak, out=g)   # (−λ·g_u[t+1])·u = −q·u
            gate(derivative, g, U[t], params.threshold, g, x)
            g.addcmul_(g_next, K[t] if K is not None else torch.le(U[t], params.threshold, out=x),
                       value=params.leak)
        else:
            torch.mul(g_next, params.leak, out=q)
            torch.add(grad_spikes[t], q, alpha=-params.threshold, out=g)
            gate(derivative, g, U[t], params.threshold, g, x)
            g.add_(q)
        if summed:   # g[T−1] itself, then g[T−1] + g[T−2] into the third buffer (the ring reuses g's), then += g[t]
            total = g if total is None else torch.add(total, g, out=G[2]) if t == T - 2 else total.add_(g)
    return total if summed else G
