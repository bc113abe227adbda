"""The LIF scans as C loops on the CPU (``native/lif.c``), built by the machine's C compiler on first use.

The eager scan (``lif_scan``) makes 3 passes over a layer's activations per forward step and 6–8
per backward step; here each neuron block runs its whole recursion over T in one pass, u[t−1]
(or g[t+1]) staying in a stack buffer (conv SNN layer 1, 9.6 M activations: backward 5.1 → 2.6 ms).

* ``forward``: the eager scan's IEEE operations in its order, built without contraction
  (``-ffp-contract=off``), so u and s are bit-identical to ``lif_scan.scan_forward``; the default
  path uses it wherever it applies (CPU, float32).
* ``sigmoid_adjoint``: the default BPTT adjoint of the sigmoid surrogate, bit-identical to the eager
  one: two C passes per step around torch's own sigmoid (``native/sigmoid_gate.c``).
* ``adjoint`` / ``gate``: the BPTT adjoint and grad·h'(u − θ) with the surrogate in closed form
  (``Derivative.native``), equal to the eager passes to float rounding (sigmoid's exp is a
  polynomial, < 2 ulp): only ``--compile`` uses them (``lif_fused``), so default runs keep their numbers.

Built with the other kernels by ``native_lib`` (once per machine, about a second). Where it cannot
be built, or ``NEUROPLAST_NATIVE=0``, every call returns None and the callers run the eager scans
(``reason()`` says why).
"""
from __future__ import annotations

import functools

import torch

from . import native_lib
from .native_lib import ptr as _ptr
from .neurons import LIFParams
from .surrogates import sigmoid_offset

Tensor = torch.Tensor
#: surrogate name -> kernel index in native/lif.c (its ``lif_kinds()`` is checked against it)
KINDS = {"sigmoid": 0, "fast_sigmoid": 1, "triangle": 2, "arctan": 3, "rectangular": 4, "gaussian": 5}


def _library():
    lib = native_lib.library()
    return lib if lib is not None and _kinds_match(lib) else None


@functools.lru_cache(maxsize=4)
def _kinds_match(lib) -> bool:
    """Whether the library's kernel table is ``KINDS`` (asked once per loaded library, not per call)."""
    return lib.lif_kinds() == len(KINDS)


def available() -> bool:
    """Whether the C scans are built and loaded (builds them on the first call)."""
    return _library() is not None


def reason() -> str | None:
    """Why the C scans are not used (None where they are)."""
    return native_lib.reason() or (None if available() else "kernel table of native/lif.c differs from KINDS")


def _ok(*tensors: Tensor | None) -> bool:
    return native_lib.usable(*tensors) and available()


def forward(current: Tensor, params: LIFParams, state: tuple[Tensor, Tensor] | None = None, *,
            keep_u: bool = True) -> tuple[Tensor | None, Tensor] | None:
    """(u[0:T] or None, s[0:T]) of ``lif_scan.scan_forward`` bit for bit, or None where the C scan does not
    apply (not a float32 CPU tensor, no library). A current with stride 0 over T (constant) is read once."""
    u0, s0 = state if state is not None else (None, None)
    if not _ok(current, u0, s0) or not len(current):
        return None
    T, N, constant = current.shape[0], current[0].numel(), current.stride(0) == 0
    base = current[0].contiguous() if constant else current.contiguous()
    S = torch.empty(current.shape, dtype=current.dtype)
    U = torch.empty_like(S) if keep_u else None
    u0, s0 = (None, None) if state is None else (u0.contiguous(), s0.contiguous())
    _library().lif_forward(_ptr(base), 0 if constant else N, _ptr(u0), _ptr(s0), _ptr(U), _ptr(S),
                           T, N, params.leak, params.threshold, int(params.reset == "hard"))
    return U, S


def _kind(derivative) -> tuple[int, float] | None:
    spec = getattr(derivative, "native", None)
    return None if spec is None else (KINDS[spec[0]], float(spec[1]))


def adjoint(grad: Tensor, U: Tensor, params: LIFParams, derivative, *, summed: bool = False) -> Tensor | None:
    """∂L/∂I[0:T] (or Σ_t ∂L/∂I[t] when ``summed``) as ``lif_scan.scan_backward``, to float rounding; None
    where the C scan does not apply (also: an estimator without a closed-form ``Derivative.native``)."""
    kind = _kind(derivative)
    if kind is None or not _ok(grad, U) or not len(U):
        return None
    grad, U = grad.contiguous(), U.contiguous()
    T, N = U.shape[0], U[0].numel()
    out = torch.empty(U.shape[1:] if summed else U.shape, dtype=U.dtype)
    _library().lif_adjoint(_ptr(grad), _ptr(U), _ptr(out), T, N, params.leak, params.threshold,
                           int(params.reset == "hard"), *kind, int(summed))
    return out


def gate(derivative, grad: Tensor, u: Tensor, threshold: float, out: Tensor | None = None) -> Tensor | None:
    """grad·h'(u − θ) into ``out`` (a new tensor if None; it may be ``grad``), or None where the C gate does
    not apply (also: ``out`` not contiguous)."""
    kind = _kind(derivative)
    if kind is None or not _ok(grad, u, out) or (out is not None and not out.is_contiguous()):
        return None
    grad, u = grad.contiguous(), u.contiguous()
    out = torch.empty_like(u) if out is None else out
    _library().lif_gate(_ptr(grad), _ptr(u), _ptr(out), u.numel(), threshold, *kind)
    return out


def sigmoid_adjoint(grad: Tensor, U: Tensor, params: LIFParams, derivative, *, summed: bool = False) -> Tensor | None:
    """``lif_scan.scan_backward`` of the sigmoid surrogate, bit for bit: each step's eager passes (addcmul,
    the gate's six, the reset's addcmul, k = 1[u ≤ θ]) as two C passes around torch's own sigmoid
    (``native/sigmoid_gate.c``); None where it does not apply (another estimator, not float32 CPU)."""
    spec = getattr(derivative, "native", None)
    if spec is None or spec[0] != "sigmoid" or not _ok(grad, U) or not len(U):
        return None
    lib, (k, theta, leak), hard = _library(), (float(spec[1]), params.threshold, params.leak), params.reset == "hard"
    grad, U = grad.contiguous(), U.contiguous()
    T, n = U.shape[0], U[0].numel()
    offset = float(sigmoid_offset(k, theta, U.dtype))
    G = torch.empty((2,) + U.shape[1:], dtype=U.dtype) if summed else torch.empty_like(U)
    total = torch.empty_like(U[0]) if summed and T > 1 else None
    z = torch.empty_like(U[0])
    for t in range(T - 1, -1, -1):
        g = G[t % 2] if summed else G[t]
        g_next = None if t == T - 1 else G[(t + 1) % 2] if summed else G[t + 1]
        lib.sigmoid_adjoint_pre(_ptr(grad[t]), _ptr(g_next), _ptr(U[t]), _ptr(g), _ptr(z), n, leak, theta, k,
                                offset, int(hard))
        lib.sigmoid_adjoint_post(_ptr(g), _ptr(z.sigmoid_()), _ptr(g_next), _ptr(U[t]), _ptr(g),
                                 _ptr(total if t < T - 1 else None), n, leak, theta, k, int(hard), int(t == T - 2))
    if not summed:
        return G
    return total if total is not None else G[0]
