"""The LIF scans of ``lif_scan`` fused by ``torch.compile`` (``--compile``; needs a C++ compiler).

Eager, each step of the scan is 4 forward and 6–8 backward element-wise passes over the layer's
activations; on a CPU these passes, not the synaptic GEMMs, are most of a conv SNN's step. Here a
window's whole forward recursion is one compiled function (one fused loop per step), and so is
each backward:

  forward     u[t] = λ·reset(u[t−1], s[t−1]) + I[t],  s[t] = 1[u[t] > θ]      (``scan_forward``)
  cut         ∂L/∂I[t] = ∂L/∂s[t]·h'(u[t] − θ)                                (online rules, ``_CutLIF``)
  adjoint     the BPTT adjoint of ``scan_backward``

The forward writes the same IEEE operations in the same order (inductor compiles with
``-ffp-contract=off``: no fused multiply-adds), so spikes and u equal the eager scan's bit for
bit; the backward may differ by float rounding (sigmoid, exp). Kernels are compiled once per
shape, constants and surrogate (tens of seconds the first time; cached on disk by inductor).
Where compiling fails (no compiler), ``available()`` is False, a warning says so once, and each
function runs its eager twin in ``lif_scan``.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch

from . import lif_scan
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
    S = torch.stack(ss)
    return torch.stack(us), S, (1.0 - S if hard else None)


def _cut(grad: Tensor, U: Tensor, threshold: float, derivative: Callable[[Tensor], Tensor]) -> Tensor:
    return grad * derivative(U - threshold)


def _adjoint(grad: Tensor, U: Tensor, K: Tensor | None, leak: float, threshold: float, hard: bool,
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
            g = ((grad[t] - q * U[t]) * h + q * K[t]) if hard else ((grad[t] - threshold * q) * h + q)
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
    """(U, S, K) as ``lif_scan.scan_forward``, fused (the eager scan where compiling failed; ``keep``
    is for it: the fused kernel returns all three)."""
    u0, s0 = state if state is not None else (torch.zeros_like(current[0]),) * 2
    out = _run(0, current, u0, s0, float(params.leak), float(params.threshold), params.reset == "hard")
    return out if out is not None else lif_scan.scan_forward(current, params, state, **keep)


def cut_backward(grad: Tensor, U: Tensor, params: LIFParams, derivative) -> Tensor:
    """``lif_scan.cut_backward``, fused."""
    out = _run(1, grad.contiguous(), U, float(params.threshold), raw(derivative))
    return out if out is not None else lif_scan.cut_backward(grad, U, params, derivative)


def scan_backward(grad: Tensor, U: Tensor, K: Tensor | None, params: LIFParams, derivative) -> Tensor:
    """``lif_scan.scan_backward``, fused."""
    out = _run(2, grad.contiguous(), U, K, float(params.leak), float(params.threshold), params.reset == "hard",
               raw(derivative))
    return out if out is not None else lif_scan.scan_backward(grad, U, K, params, derivative)
