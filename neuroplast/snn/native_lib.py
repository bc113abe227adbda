"""The C kernels of ``snn/native/*.c``, built by the machine's C compiler on first use and loaded with ctypes.

One shared library from all sources, compiled once per sources, flags, compiler, torch and CPU
(``-march=native``) into ``$NEUROPLAST_CACHE`` (default ``~/.cache/neuroplast``), written
atomically; ``CC`` picks the compiler (default ``cc``). Its OpenMP loops run on torch's own thread
pool: torch loads its libgomp first, and ours resolves to it. Where no compiler builds it, or
``NEUROPLAST_NATIVE=0``, ``library()`` is None, ``reason()`` says why, and every caller runs its
torch twin. Users: ``lif_native`` (the LIF scans), ``surrogates`` (the sigmoid gate), ``pooling``,
``gemm`` (transposes before oneDNN products), ``chip.fixed`` (the integer LIF's float64 run),
``counter_rng`` (the random draws).
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

Tensor = torch.Tensor
SOURCES = sorted((Path(__file__).with_name("native")).glob("*.c"))
HEADERS = sorted((Path(__file__).with_name("native")).glob("*.h"))   # part of the cache key
_FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")   # no errno: sqrtf vectorises
_OPTIONAL = (("-march=native", "-fopenmp"), ("-fopenmp",), ())   # tried in this order
_lock = threading.Lock()
_why: list[str] = []
P, L, F, N, U64 = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int, ctypes.c_uint64
#: every exported function: (argument types, return type)
SIGNATURES = {
    "lif_forward": ([P, L, P, P, P, P, L, L, F, F, N], None),
    "lif_adjoint": ([P, P, P, L, L, F, F, N, N, F, N], None),
    "lif_gate": ([P, P, P, L, F, N, F], None),
    "lif_kinds": ([], N),
    "transpose": ([P, P, L, L], None),
    "avg_pool_forward": ([P, P, L, L, L, L, F, N], None),
    "avg_pool_backward": ([P, P, L, L, L, L, F, N], None),
    "avg_pool_forward_noisy": ([P, P, P, L, L, L, L, F, N, N], None),
    "sigmoid_gate_pre": ([P, P, L, F, F], None),
    "sigmoid_gate_post": ([P, P, P, L, F], None),
    "sigmoid_adjoint_pre": ([P, P, P, P, P, L, F, F, F, F, N], None),
    "sigmoid_adjoint_post": ([P, P, P, P, P, P, L, F, F, F, N, N], None),
    "int_lif_f64": ([P, L, P, P, P, L, P, L, L, *[ctypes.c_double] * 4, N, N], None),
    "rng_words": ([U64, L, P], None),
    "rng_uniform": ([U64, L, P], None),
    "rng_normal": ([U64, L, F, F, P], None),
}


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
    """Compile ``SOURCES`` into ``target`` (atomically); None on success, else the compiler's complaint."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        return f"cache {target.parent}: {exc}"
    try:
        proc = subprocess.run([cc, *_FLAGS, *flags, "-o", tmp, *map(str, SOURCES)], capture_output=True,
                              text=True, timeout=120)
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
    source = b"\0".join(p.read_bytes() for p in SOURCES + HEADERS)
    errors = []
    for extra in _OPTIONAL:
        key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(_FLAGS + extra).encode(),
                                         _cpu_signature().encode(), torch.__version__.encode()])).hexdigest()[:16]
        path = _cache_dir() / f"kernels-{key}.so"
        for attempt in range(2):   # a cached file that does not load (truncated, stale) is built again once
            err = None if path.exists() and not attempt else _build(cc, extra, path)
            if err is None:
                try:
                    return _declare(ctypes.CDLL(str(path)))
                except (OSError, AttributeError) as exc:
                    err = str(exc)
            if err is not None and not path.exists():
                break
        errors.append(err)
    _why.append(f"no C kernels ({cc}: {errors[0]})")
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, (args, res) in SIGNATURES.items():
        fn = getattr(lib, name)   # AttributeError: a stale or foreign library
        fn.argtypes, fn.restype = args, res
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels (built on the first call), or None where they cannot be built."""
    with _lock:
        return _load()


def reason() -> str | None:
    """Why the C kernels are not used (None where they are)."""
    return None if library() is not None else (_why[-1] if _why else "unknown")


def ptr(t: Tensor | None) -> ctypes.c_void_p | None:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def usable(*tensors: Tensor | None, dtype: torch.dtype = torch.float32) -> bool:
    """Whether the kernels are built and every tensor given is a CPU tensor of ``dtype`` (None: not given),
    and nothing traces the call (``torch.jit.trace`` would record a C kernel's output as a constant, and
    ``torch.compile`` hands fake tensors without data)."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == dtype) for t in tensors) \
        and not torch.jit.is_tracing() and not torch.compiler.is_compiling() and library() is not None
