"""The LIF scans fused for ``--compile``: hand-written C on the CPU, ``torch.compile`` elsewhere.

Eager, each step of the scan is 3 forward and 6–8 backward element-wise passes over the layer's
activations; on a CPU these passes, not the synaptic GEMMs, are much of a conv SNN's step. Fused,
a window's whole recursion is one loop:

  forward     u[t] = λ·reset(u[t−1], s[t−1]) + I[t],  s[t] = 1[u[t] > θ]      (``scan_forward``)
  cut         ∂L/∂I[t] = ∂L/∂s[t]·h'(u[t] − θ)                                (online rules, ``_CutLIF``; ``gate``)
  adjoint     the BPTT adjoint of ``scan_backward``, k[t] = 1[u[t] ≤ θ] recomputed from u

On the CPU, a surrogate with a closed form (``Derivative.native``) runs the C scans of
``lif_native`` (built in about a second, once per machine); other estimators, and other devices,
get one ``torch.compile``d function per scan (tens of seconds the first time; cached on disk by
inductor; ``-ffp-contract=off``). Either way the forward is the eager scan's IEEE operations in
its order, so spikes and u equal the eager scan's bit for bit; the backward may differ by float
rounding (sigmoid, exp). Where compiling fails (no compiler), ``available()`` is False, a warning
says so once, and each function runs its eager twin in ``lif_scan``.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch

from . import lif_native, lif_scan, spikefn
from .neurons import LIFParams
from .spikefn import raw

Tensor = torch.Tensor
_failed: list[str] = []


def _forward(current: Tensor, u: Tensor, s: Tensor, leak: float, threshold: float, hard: bool):
    us, ss = [], []
    for t in range(current.shape[0]):
        r = u - u * s if hard else u - threshold * s     # exact: s ∈ {0, 1}
        u = r * leak + current[t]
        s = (u > threshold).to(current.dtype)
        us.append(u)
        ss.append(s)
    return torch.stack(us), torch.stack(ss), None


def _cut(grad: Tensor, U: Tensor, threshold: float, derivative: Callable[[Tensor], Tensor]) -> Tensor:
    return grad * derivative(U - threshold)


def _adjoint(grad: Tensor, U: Tensor, leak: float, threshold: float, hard: bool,
             derivative: Callable[[Tensor], Tensor]) -> Tensor:
    T = U.shape[0]
    out = [None] * T
    g_next = None
    for t in range(T - 1, -1, -1):
        h = derivative(U[t] - threshold)
        if g_next is None:
            g = grad[t] * h
        else:
            q = g_next * leak
            g = ((grad[t] - q * U[t]) * h + q * (U[t] <= threshold).to(U.dtype)) if hard else \
                ((grad[t] - threshold * q) * h + q)
        out[t] = g
        g_next = g
    return torch.stack(out)


RECOMPILE_LIMIT = 64   # one kernel per (shape, constants, surrogate): a few layers × windows × nets


@functools.cache
def _kernels():
    import torch._dynamo.config as dynamo_config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    opts = {"dynamic": False, "fullgraph": True}
    return torch.compile(_forward, **opts), torch.compile(_cut, **opts), torch.compile(_adjoint, **opts)


def _run(which: int, *args):
    """Kernel ``which`` (0 forward, 1 cut, 2 adjoint) compiled; None where compiling failed."""
    if _failed:
        return None
    try:
        return _kernels()[which](*args)
    except torch.OutOfMemoryError:   # the data, not the compiler: eager would fail too; compiling stays on
        raise
    except Exception as exc:   # noqa: BLE001 - any compiler failure: fall back to the eager scans
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if "RecompileLimit" in type(exc).__name__:   # too many shapes: this call runs eagerly, later ones may not
            warnings.warn(f"--compile: {reason}; this call runs the eager LIF scan", RuntimeWarning, stacklevel=3)
            return None
        _failed.append(reason)
        warnings.warn(f"--compile: torch.compile failed ({reason}); running the eager LIF scans",
                      RuntimeWarning, stacklevel=3)
        return None


def available() -> bool:
    """False once compiling has failed in this process."""
    return not _failed


def scan_forward(current: Tensor, params: LIFParams, state: tuple[Tensor, Tensor] | None = None, **keep):
    """(U, S, None) as ``lif_scan.scan_forward``, fused: on the CPU that is ``lif_scan`` itself (its C scan,
    or eager where none is built); elsewhere compiled (``keep`` is for the eager scan)."""
    if current.device.type == "cpu":
        return lif_scan.scan_forward(current, params, state, **keep)
    u0, s0 = state if state is not None else (torch.zeros_like(current[0]),) * 2
    out = _run(0, current, u0, s0, float(params.leak), float(params.threshold), params.reset == "hard")
    return out if out is not None else lif_scan.scan_forward(current, params, state, **keep)


def gate(derivative, grad: Tensor, u: Tensor, threshold: float, out: Tensor, tmp: Tensor) -> Tensor:
    """``spikefn.gate`` (out = grad·h'(u − θ)), by the C gate where it applies."""
    res = lif_native.gate(derivative, grad, u, threshold, out)
    return res if res is not None else spikefn.gate(derivative, grad, u, threshold, out, tmp)


def cut_backward(grad: Tensor, U: Tensor, params: LIFParams, derivative) -> Tensor:
    """``lif_scan.cut_backward``, fused."""
    out = lif_native.gate(derivative, grad, U, params.threshold)
    if out is None:
        out = _run(1, grad.contiguous(), U, float(params.threshold), raw(derivative))
    return out if out is not None else lif_scan.cut_backward(grad, U, params, derivative)


def scan_backward(grad: Tensor, U: Tensor, K: Tensor | None, params: LIFParams, derivative, *,
                  summed: bool = False) -> Tensor:
    """``lif_scan.scan_backward``, fused (``K`` is for the eager scan; the fused ones recompute k from U)."""
    out = lif_native.adjoint(grad, U, params, derivative, summed=summed)
    if out is not None:
        return out
    out = _run(2, grad.contiguous(), U, float(params.leak), float(params.threshold), params.reset == "hard",
               raw(derivative))
    if out is None:
        return lif_scan.scan_backward(grad, U, K, params, derivative, summed=summed)
    return out.sum(0) if summed else out
