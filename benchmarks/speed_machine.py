"""What ``speed.py`` measures of the machine: its load (other processes, from /proc/stat), its float32
GEMM rate (the fastest of ``torch.mm``, the engine's oneDNN GEMM and ``F.conv2d``), and a step's FLOP
lower bound (the synaptic GEMMs/convs only; see ``speed.py``'s docstring)."""
from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from neuroplast.snn import draws, gemm
from neuroplast.snn.layers import Readout, SpikingLayer


# ---------------------------------------------------------------- machine load
def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


def _own_jiffies() -> int:
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime of this process (all threads)


class LoadMeter:
    """Average number of cores used by other processes between ``start`` and ``stop``."""

    def start(self):
        self.busy0, self.total0 = _cpu_jiffies()
        self.own0 = _own_jiffies()
        return self

    def stop(self) -> float:
        busy, total = _cpu_jiffies()
        own = _own_jiffies()
        if total == self.total0:
            return 0.0
        ncpu = os.cpu_count() or 1
        return max(0.0, (busy - self.busy0 - (own - self.own0)) / (total - self.total0) * ncpu)


def wait_idle(max_wait: float, threshold: float = 0.1, window: float = 2.0) -> dict:
    """Wait until other processes use < ``threshold`` cores over ``window`` s, at most ``max_wait`` s."""
    t0 = time.monotonic()
    while True:
        m = LoadMeter().start()
        time.sleep(window)
        load = m.stop()
        waited = time.monotonic() - t0
        if load < threshold or waited >= max_wait:
            return {"idle": load < threshold, "load_cores": load, "waited_s": waited}


# ---------------------------------------------------------------- FLOP bound
def flop_bound(net, method: str, T: int, B: int, constant_input: bool = True) -> dict:
    """FLOPs of the synaptic GEMMs/convs of one step (see the module docstring)."""
    method = method.removesuffix("+compile").removesuffix("_rademacher")
    fwd, first, feedback = 0, None, 0
    classes = next(layer.op.weight.shape[0] for layer in net.layers.values() if isinstance(layer, Readout))
    for name, layer in net.layers.items():
        op = getattr(layer, "op", None)
        if isinstance(layer, (SpikingLayer, Readout)):
            out = net.shapes[name]
            mac = math.prod(out) * op.weight[0].numel()  # per output: fan-in multiply-adds
            rows = B if first is None and constant_input else T * B
            f = 2 * rows * mac
            fwd += f
            first = f if first is None else first
            if isinstance(layer, SpikingLayer):
                feedback += 2 * T * B * classes * math.prod(out)
    if method in ("infer", "infer_fixed"):
        total = fwd
    elif method in ("dfa", "opzo"):
        total = 2 * fwd + feedback
    else:
        total = 3 * fwd - first
    return {"forward_flop": fwd, "step_flop": total}


#: calls of a kernel timed back to back between two syncs on a GPU (one call of a ~1 GFLOP GEMM there
#: lasts about as long as a sync and a launch, which would understate its rate)
GPU_CALLS = 20


def median_seconds(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` timings after ``warmup`` untimed calls; on a GPU
    each timing is ``GPU_CALLS`` calls back to back between two syncs, divided by their number."""
    calls = GPU_CALLS if device.type == "cuda" else 1
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        ts.append((time.perf_counter() - t0) / calls)
    return statistics.median(ts)


def gemm_rate(m: int, k: int, n: int, device: torch.device, repeats: int = 20, fn=torch.mm) -> float:
    """float32 FLOP/s of ``fn`` (torch.mm, or the engine's ``gemm.mm``) [m, k] @ [k, n] (median of repeats)."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    return 2 * m * k * n / median_seconds(lambda: fn(a, b), device, repeats, warmup=3)


def conv_rate(shape: tuple[int, ...], weight: tuple[int, ...], device: torch.device, repeats: int = 10) -> float:
    """float32 FLOP/s of F.conv2d of an input ``shape`` [N, C, H, W] with a 3×3 ``weight``, padding 1
    (median of repeats): the kernel the conv layers actually run, which may beat the im2col GEMM."""
    x, w = torch.randn(shape, device=device), torch.randn(weight, device=device)
    n, _, h, wd = shape
    return 2 * n * h * wd * math.prod(weight) / median_seconds(
        lambda: torch.nn.functional.conv2d(x, w, padding=1), device, repeats)


def machine_rate(arch: str, T: int, B: int, device: torch.device) -> tuple[float, str]:
    """The rate of the bound: the fastest of torch.mm and the engine's GEMM (``snn.gemm``: oneDNN where
    it is faster than torch's MKL path) at the net's largest GEMM and, for a conv net, F.conv2d at its
    largest conv layer (conv2), with the kernel that gave it."""
    m, k, n = representative_gemm(arch, T, B)
    rates = {f"mm {m}×{k}·{k}×{n}": gemm_rate(m, k, n, device)}
    if gemm._use_onednn(torch.empty(0, device=device), torch.empty(0, device=device), m, k, n):
        rates[f"oneDNN linear {m}×{k}·{k}×{n}"] = gemm_rate(m, k, n, device, fn=gemm.mm)
    if "C" in arch:
        rates[f"conv2d {T * B}×32×14×14 ⊛ 64×32×3×3"] = conv_rate((T * B, 32, 14, 14), (64, 32, 3, 3), device)
    best = max(rates, key=rates.get)
    return rates[best], best


def rng_time(sizes: list[int], device: torch.device, repeats: int = 10) -> float:
    """Seconds to draw float32 N(0, 1) numbers as OPZO draws them: one engine draw (``snn.draws``) of
    each size in ``sizes`` (median of repeats; alone, so caches and cores are as idle as they get)."""
    g = torch.Generator(device).manual_seed(0)
    return median_seconds(lambda: [draws.normal(n, g, device) for n in sizes], device, repeats)


def representative_gemm(arch: str, T: int, B: int) -> tuple[int, int, int]:
    """The largest GEMM of the net: FC [T·B, 800]·[800, 800]; conv: conv2's im2col [T·B·14·14, 32·9]·[.., 64]."""
    if "C" in arch:
        return T * B * 14 * 14, 32 * 9, 64
    return T * B, 800, 800


def describe_machine(device: torch.device) -> str:
    """The CPU's model (``/proc/cpuinfo`` where there is one) and count, and the GPU's name on CUDA."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    gpu = f"; GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return f"{model}, {os.cpu_count()} CPUs{gpu}"


def git_commit() -> str:
    """The checkout's commit (short hash, ``+changes`` when the tree differs from it), or ``?``."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "neuroplast", "benchmarks"],
                               cwd=root, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+changes" if dirty else "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)   # that device's queue (cuda:1 included), not the current one's
