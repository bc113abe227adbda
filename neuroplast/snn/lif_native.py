"""The LIF scans as C loops on the CPU (``native/lif.c``), built by the machine's C compiler on first use.

The eager scan (``lif_scan``) makes 3 passes over a layer's activations per forward step and 6–8
per backward step; here each neuron block runs its whole recursion over T in one pass, u[t−1]
(or g[t+1]) staying in a stack buffer (conv SNN layer 1, 9.6 M activations: backward 5.1 → 2.6 ms).

* ``forward``: the eager scan's IEEE operations in its order, built without contraction
  (``-ffp-contract=off``), so u and s are bit-identical to ``lif_scan.scan_forward``; the default
  path uses it wherever it applies (CPU, float32).
* ``adjoint`` / ``gate``: the BPTT adjoint and grad·h'(u − θ) with the surrogate in closed form
  (``Derivative.native``), equal to the eager passes to float rounding (sigmoid's exp is a
  polynomial, < 2 ulp): only ``--compile`` uses them (``lif_fused``), so default runs keep their numbers.

The library is compiled once per source, flags and CPU (``-march=native``) into
``$NEUROPLAST_CACHE`` (default ``~/.cache/neuroplast``), written atomically; ``CC`` picks the
compiler (default ``cc``). OpenMP loops run on torch's own thread pool (torch loads its libgomp
first, ours resolves to it). Where no compiler builds it, or ``NEUROPLAST_NATIVE=0``, every call
returns None and the callers run the eager scans (``reason()`` says why).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from .neurons import LIFParams

Tensor = torch.Tensor
SOURCE = Path(__file__).with_name("native") / "lif.c"
#: surrogate name -> kernel index in lif.c
KINDS = {"sigmoid": 0, "fast_sigmoid": 1, "triangle": 2, "arctan": 3, "rectangular": 4, "gaussian": 5}
_FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared")
_OPTIONAL = (("-march=native", "-fopenmp"), ("-fopenmp",), ())   # tried in this order
_lock = threading.Lock()
_why: list[str] = []


def _cache_dir() -> Path:
    root = os.environ.get("NEUROPLAST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neuroplast"
    return Path(root) / "native"


def _cpu_signature() -> str:
    """The CPU's model and feature flags (a library built with -march=native runs only where they match)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() + platform.machine()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(keep))


def _build(cc: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Compile ``SOURCE`` into ``target`` (atomically); None on success, else the compiler's complaint."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        return f"cache {target.parent}: {exc}"
    try:
        proc = subprocess.run([cc, *_FLAGS, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode:
            return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL | None:
    if os.environ.get("NEUROPLAST_NATIVE", "1") == "0":
        _why.append("NEUROPLAST_NATIVE=0")
        return None
    cc = os.environ.get("CC", "cc")
    source = SOURCE.read_bytes()
    errors = []
    for extra in _OPTIONAL:
        key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(_FLAGS + extra).encode(),
                                         _cpu_signature().encode(), torch.__version__.encode()])).hexdigest()[:16]
        path = _cache_dir() / f"lif-{key}.so"
        for attempt in range(2):   # a cached file that does not load (truncated, stale) is built again once
            err = None if path.exists() and not attempt else _build(cc, extra, path)
            if err is None:
                try:
                    return _declare(ctypes.CDLL(str(path)))
                except OSError as exc:
                    err = str(exc)
            if err is not None and not path.exists():
                break
        errors.append(err)
    _why.append(f"no C library for the LIF scans ({cc}: {errors[0]})")
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    P, L, F, N = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int
    lib.lif_forward.argtypes = [P, L, P, P, P, P, L, L, F, F, N]
    lib.lif_adjoint.argtypes = [P, P, P, L, L, F, F, N, N, F, N]
    lib.lif_gate.argtypes = [P, P, P, L, F, N, F]
    lib.lif_kinds.restype = N
    if lib.lif_kinds() != len(KINDS):
        raise OSError("stale library: kernel table differs from KINDS")
    return lib


@functools.cache
def _library() -> ctypes.CDLL | None:
    with _lock:
        return _load()


def available() -> bool:
    """Whether the C library is built and loaded (builds it on the first call)."""
    return _library() is not None


def reason() -> str | None:
    """Why the C scans are not used (None where they are)."""
    return None if available() else (_why[-1] if _why else "unknown")


def _ok(*tensors: Tensor | None) -> bool:
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors) and available()


def _ptr(t: Tensor | None) -> ctypes.c_void_p | None:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def forward(current: Tensor, params: LIFParams, state: tuple[Tensor, Tensor] | None = None, *,
            keep_u: bool = True) -> tuple[Tensor | None, Tensor] | None:
    """(u[0:T] or None, s[0:T]) of ``lif_scan.scan_forward`` bit for bit, or None where the C scan does not
    apply (not a float32 CPU tensor, no library). A current with stride 0 over T (constant) is read once."""
    u0, s0 = state if state is not None else (None, None)
    if not _ok(current, u0, s0):
        return None
    T = current.shape[0]
    base = current[0].contiguous() if current.stride(0) == 0 else current.contiguous()
    N = current[0].numel()
    S = torch.empty(current.shape, dtype=current.dtype)
    U = torch.empty_like(S) if keep_u else None
    u0, s0 = (None, None) if state is None else (u0.contiguous(), s0.contiguous())
    _library().lif_forward(_ptr(base), 0 if current.stride(0) == 0 else N, _ptr(u0), _ptr(s0), _ptr(U), _ptr(S),
                           T, N, params.leak, params.threshold, int(params.reset == "hard"))
    return U, S


def _kind(derivative) -> tuple[int, float] | None:
    spec = getattr(derivative, "native", None)
    return None if spec is None else (KINDS[spec[0]], float(spec[1]))


def adjoint(grad: Tensor, U: Tensor, params: LIFParams, derivative, *, summed: bool = False) -> Tensor | None:
    """∂L/∂I[0:T] (or Σ_t ∂L/∂I[t] when ``summed``) as ``lif_scan.scan_backward``, to float rounding; None
    where the C scan does not apply (also: an estimator without a closed-form ``Derivative.native``)."""
    kind = _kind(derivative)
    if kind is None or not _ok(grad, U):
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
