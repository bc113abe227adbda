"""Benchmark: ms per training step of every method against the GEMM lower bound of that step (issue 9).

For each network (FC 784-800-800-10 at T=6, batch 128; the MNIST conv SNN at T=6, batch 64) and each
method (BPTT, OTTT, DFA, OPZO with Gaussian and with Rademacher noise, LocalZO-BPTT, float inference,
fixed-point inference) it measures, in one
process, round-robin in blocks of consecutive steps (machine noise hits all alike; see ``time_steps``):

* ms per step (median, p10–p90 over ``--steps`` steps after warm-up) and samples/s; a training step is
  ``zero_grad`` + ``rule.compute_grads`` + Adam ``step`` (the engine's optimizer, ``make_optimizer``:
  torch's fused Adam);
* the float32 GEMM rate of this machine (the fastest of ``torch.mm`` and the engine's oneDNN GEMM,
  ``snn/gemm.py``, at the net's largest GEMM, and ``F.conv2d`` at its largest conv layer; before and
  after the steps, the faster; same run);
* the FLOP lower bound of the step: the multiply-adds of the synaptic GEMMs/convs only (2 FLOP each),

      forward  F = Σ_l rows_l · MAC_l     rows_l = T·B, or B for the first layer on a constant input
      BPTT, LocalZO, OTTT   F + F (weight grads) + F − F_1 (input grads, none for the first layer)
      DFA, OPZO             F + F (weight grads) + Σ_l T·B·C·N_l (top-down e·B_l)
      inference             F

  and the ratio step / (bound / GEMM rate): 1.0 would be a step that only runs GEMMs at full rate;
* ``<method>+compile``: BPTT, DFA, OPZO and inference with the LIF backward fused too (``--compile``: C on the
  CPU, torch.compile elsewhere);
* a plain PyTorch time-loop BPTT of the FC net (``plain_loop.py``) beside the engine;
* peak memory of OTTT and OPZO at T=6 and T=30 (fresh subprocess each: ``ru_maxrss`` and the bytes
  autograd holds for backward, counted with saved-tensor hooks).

It first waits (at most ``--max-wait`` s) for the machine to be idle (other processes < 0.1 core,
from /proc/stat) and reports the load of other processes during the measurement. Writes
``reports/speed.md`` (and ``.json``) atomically.

    python benchmarks/speed.py --data-dir ../shared/data [--quick] [--device cpu|cuda] [--json] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from plain_loop import PlainSNN, plain_step
from speed_machine import (
    LoadMeter,
    describe_machine,
    flop_bound,
    git_commit,
    machine_rate,
    representative_gemm,
    rng_time,
    sync,
    wait_idle,
)
from speed_report import write_report

from neuroplast.data import encode
from neuroplast.data.norm import InputNorm
from neuroplast.experiment import make_optimizer
from neuroplast.fileio import atomic_write_json
from neuroplast.learn import ce_mse_loss, make_rule
from neuroplast.snn import build_network
from neuroplast.snn.fold_input import fold_input_norm

NETS = {
    "fc": {"arch": "784-800-800-10", "T": 6, "batch": 128},
    "conv": {"arch": "1x28x28-32C3-AP2-64C3-AP2-100-FC", "T": 6, "batch": 64},
}
METHODS = {  # name -> (rule spec or None for inference, estimator)
    "bptt": ("bptt", "sigmoid:k=4"),
    "localzo": ("bptt", "localzo:m=2"),
    "ottt": ("ottt", "sigmoid:k=4"),
    "dfa": ("dfa", "sigmoid:k=4"),
    "opzo": ("opzo", "sigmoid:k=4"),
    "opzo_rademacher": ("opzo:noise=rademacher", "sigmoid:k=4"),   # ±σ noise: 32 signs per random word
    "infer": (None, "sigmoid:k=4"),
    "infer_fixed": ("fixed", "sigmoid:k=4"),
}
COMPILED = ("bptt", "dfa", "opzo", "infer")   # also measured as "<m>+compile": the net built with --compile
METHODS.update({f"{m}+compile": METHODS[m] for m in COMPILED})
INPUT_SHAPE, CLASSES = (1, 28, 28), 10



# ---------------------------------------------------------------- steps
def _inputs(data_dir: str | None, B: int, device) -> tuple[torch.Tensor, torch.Tensor, str, InputNorm]:
    """(x, y, what they are, the normalisation x carries): MNIST as float training takes it (normalised)."""
    if data_dir:
        try:
            from neuroplast.data import load_dataset
            data = load_dataset("mnist", data_dir=data_dir)
            return data.train.x[:B].to(device), data.train.y[:B].to(device), "MNIST train[:B]", data.norm
        except Exception as exc:  # noqa: BLE001 - fall back to random input, say so
            print(f"MNIST not loaded ({exc}); random input", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    return (torch.rand(B, *INPUT_SHAPE, generator=g).to(device),
            torch.randint(0, CLASSES, (B,), generator=g).to(device), "uniform random", InputNorm())


def make_step(arch: str, method: str, T: int, x: torch.Tensor, y: torch.Tensor, device,
              norm: InputNorm | None = None):
    """A closure running one step of ``method`` (training step, or inference) on (x, y); the integer
    network (``fixed``) takes x as intensities, ``norm`` folded into its first layer as on a chip."""
    rule_spec, estimator = METHODS[method]
    gen = torch.Generator().manual_seed(0)
    net = build_network(arch, input_shape=INPUT_SHAPE, num_classes=CLASSES, estimator=estimator,
                        generator=gen, compiled=method.endswith("+compile")).to(device)
    dev_gen = torch.Generator(device).manual_seed(1)
    net.seed_draws(1, device)
    if rule_spec is None:
        net.eval()

        def infer(T=T):
            with torch.no_grad():
                return net.simulate(encode("direct", x, T), record=False).logits
        return infer, net
    if rule_spec == "fixed":
        from neuroplast.chip.hardware import load_chip
        from neuroplast.chip.quantize import quantize
        norm = norm or InputNorm()
        fixed = quantize(fold_input_norm(net.cpu(), norm), load_chip("loihi2"), encoding="direct", time_steps=T)
        xc = norm.intensities(x.cpu())
        return (lambda T=T: fixed.simulate(encode("direct", xc, T))["v_out"]), net
    rule = make_rule(rule_spec)
    rule.generator = dev_gen
    rule.setup(net)
    opt = make_optimizer(SimpleNamespace(optimizer="adam", lr=1e-3, weight_decay=0.0),   # the engine's (fused)
                         list(net.parameters()) + rule.parameters())

    def train_step(T=T):
        opt.zero_grad(set_to_none=True)
        res = rule.compute_grads(net, encode("direct", x, T), y, ce_mse_loss)
        opt.step()
        return res
    return train_step, net


#: consecutive steps of one method per round; the first of each block is run but not timed
BLOCK = 3


def time_steps(fns: dict, steps: int, warmup: int, device, block: int = BLOCK) -> dict[str, list[float]]:
    """``steps`` timed steps per method, in round-robin blocks of ``block`` consecutive steps (machine
    noise hits all methods alike). Within a block the steps run back to back as in a training loop
    and as the GEMM rate is timed; the block's first step, which follows another method's step (and
    finds the caches full of that method's tensors), is not timed."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in fns}
    while any(len(v) < steps for v in times.values()):
        for k, f in fns.items():
            f()
            for _ in range(min(block - 1, steps - len(times[k]))):
                sync(device)
                t0 = time.perf_counter()
                f()
                sync(device)
                times[k].append(time.perf_counter() - t0)
    return times


#: op names whose self time is a GEMM/conv kernel; RNG ops; scopes that claim the ops inside them
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")
RNG_OPS = ("aten::normal_", "aten::uniform_", "aten::random_", "aten::bernoulli_")
SCOPES = (("_AvgPool", "pooling"), ("Optimizer.step", "optimizer"), ("neuroplast::draws", "rng"))
PARTS = ("gemm", "pooling", "rng", "optimizer", "other")
BREAKDOWN_STEPS = 9


def breakdown(fn, steps: int = BREAKDOWN_STEPS) -> dict[str, float]:
    """ms per step by kind, from the self CPU time of every op of a step under torch.profiler (median
    over ``steps`` steps, each profiled alone): ``gemm`` the synaptic GEMMs and convolutions,
    ``pooling`` everything inside the avg-pool autograd function (its 0/1 GEMM included), ``rng`` the
    random draws, ``optimizer`` the optimizer step, ``other`` the rest (LIF scans, surrogates, losses,
    traces, noise adds, copies). The profiler adds a few µs per op, so the parts sum to more than the
    timed step."""
    from torch.profiler import ProfilerActivity, profile
    per_step = []
    for _ in range(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        parts = dict.fromkeys(PARTS, 0.0)
        for ev in prof.events():
            part, up = None, ev   # the scope itself and everything under it
            while up is not None and part is None:
                part = next((kind for key, kind in SCOPES if key in up.name), None)
                up = up.cpu_parent
            if part is None:
                part = ("gemm" if ev.name in GEMM_OPS or "convolution" in ev.name else
                        "rng" if ev.name in RNG_OPS else "other")
            parts[part] += ev.self_cpu_time_total / 1000   # µs -> ms
        per_step.append(parts)
    return {k: statistics.median(p[k] for p in per_step) for k in PARTS}


def _quantile(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def bench_net(key: str, methods: list[str], steps: int, warmup: int, device, data_dir, plain: bool) -> dict:
    cfg = NETS[key]
    arch, T, B = cfg["arch"], cfg["T"], cfg["batch"]
    x, y, source, norm = _inputs(data_dir, B, device)
    fns, nets = {}, {}
    for m in methods:
        fns[m], nets[m] = make_step(arch, m, T, x, y, device, norm)
    if plain and key == "fc":
        torch.manual_seed(0)
        model = PlainSNN().to(device)
        popt = torch.optim.Adam(model.parameters(), 1e-3)
        fns["plain_loop_bptt"] = lambda: plain_step(model, popt, x, y, T)
    before = machine_rate(arch, T, B, device)
    meter = LoadMeter().start()
    times = time_steps(fns, steps, warmup, device)
    load = meter.stop()
    rate, kernel = max(before, machine_rate(arch, T, B, device))
    rows = {}
    for m, ts in times.items():
        net, method = nets.get(m, nets.get("bptt") or next(iter(nets.values()))), "bptt" if m == "plain_loop_bptt" else m
        bound = flop_bound(net, method, T, B)
        unhoisted = flop_bound(net, method, T, B, constant_input=False)
        med = statistics.median(ts)
        rows[m] = {"ms_median": 1000 * med, "ms_p10": 1000 * _quantile(ts, 0.1), "ms_p90": 1000 * _quantile(ts, 0.9),
                   "samples_per_s": B / med, "step_gflop": bound["step_flop"] / 1e9,
                   "bound_ms": 1000 * bound["step_flop"] / rate, "ratio_to_bound": med * rate / bound["step_flop"],
                   "ratio_to_unhoisted_bound": med * rate / unhoisted["step_flop"]}
    if device.type == "cpu":   # where the time goes (CPU op times; on a GPU they would be launch times)
        for m, f in fns.items():
            rows[m]["breakdown_ms"] = breakdown(f)
    if "opzo" in rows:  # OPZO's Gaussian draws alone
        n_drawn = fns["opzo"]().noise_draws
        per_layer = [B * math.prod(nets["opzo"].shapes[k]) for k in nets["opzo"].spiking_layers()]
        sizes = per_layer * (n_drawn // sum(per_layer))   # one draw per layer at every drawn step
        rows["opzo"].update(noise_draws=n_drawn, rng_ms=1000 * rng_time(sizes, device))
    return {"arch": arch, "T": T, "batch": B, "input": source, "gemm": list(representative_gemm(arch, T, B)),
            "gemm_gflops": rate / 1e9, "rate_kernel": kernel, "other_load_cores": load, "steps": steps, "warmup": warmup,
            "block": BLOCK, "breakdown_steps": BREAKDOWN_STEPS, "rows": rows}


# ---------------------------------------------------------------- memory
class _SavedBytes:
    """Bytes of tensors autograd holds for backward, live and at peak (saved-tensor hooks)."""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, t):
        n = t.numel() * t.element_size()
        self.live += n
        self.peak = max(self.peak, self.live)
        return (t, _Release(self, n))

    @staticmethod
    def unpack(packed):
        return packed[0]


class _Release:
    def __init__(self, counter, n):
        self.counter, self.n = counter, n

    def __del__(self):
        self.counter.live -= self.n


def _vm_hwm_kib() -> int:
    """Peak resident set of this process image (VmHWM; ru_maxrss would carry the parent's over exec)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_probe(method: str, T: int) -> dict:
    """In a fresh process: peak RSS (total, and above the set-up process after one T=1 step) and peak
    bytes saved for backward of FC training steps at T (uniform random input: no data set in memory)."""
    x, y, _, _ = _inputs(None, NETS["fc"]["batch"], torch.device("cpu"))
    step, _ = make_step(NETS["fc"]["arch"], method, T, x, y, torch.device("cpu"))
    step(1)
    base = _vm_hwm_kib()
    counter = _SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        for _ in range(3):
            step(T)
    peak = _vm_hwm_kib()
    return {"method": method, "T": T, "peak_rss_MiB": peak / 1024, "rss_above_setup_MiB": (peak - base) / 1024,
            "saved_for_backward_MiB": counter.peak / 2**20}


def memory(methods: list[str]) -> list[dict]:
    rows = []
    for m in methods:
        for t in (6, 30):
            cmd = [sys.executable, __file__, "--memory-probe", m, str(t), "--threads", str(torch.get_num_threads())]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def gpu_memory(methods: list[str], device: torch.device) -> list[dict]:
    """Peak bytes torch allocates on the GPU over 3 FC training steps at T = 6 and 30 (after one T=1
    step that sets up the net, the optimizer state and the allocator), per method, in this process."""
    x, y, _, _ = _inputs(None, NETS["fc"]["batch"], device)
    rows = []
    for m in methods:
        for t in (6, 30):
            step, _ = make_step(NETS["fc"]["arch"], m, t, x, y, device)
            step(1)
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(3):
                step(t)
            torch.cuda.synchronize(device)
            rows.append({"method": m, "T": t, "peak_gpu_MiB": torch.cuda.max_memory_allocated(device) / 2**20})
            del step
            torch.cuda.empty_cache()
    return rows




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("NEUROPLAST_DATA"))
    ap.add_argument("--quick", action="store_true", help="few steps, no memory probe: a smoke check")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per method (default 30, quick 5)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--max-wait", type=float, default=None, help="max seconds to wait for an idle machine")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe[0], int(args.memory_probe[1]))))
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available here")
    if device.type == "cuda":   # float32 means float32: no TF32 in the GEMMs/convs of the steps or the bound
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    steps = args.steps or (5 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    max_wait = args.max_wait if args.max_wait is not None else (0 if args.quick else 600)
    idle = wait_idle(max_wait)
    print(f"machine load before the run: {idle}", file=sys.stderr)
    res = {"command": "python " + " ".join(sys.argv), "machine": describe_machine(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "device": str(device), "date": time.strftime("%Y-%m-%d %H:%M"), "commit": git_commit(), "idle": idle,
           "nets": {}}
    for key in args.nets:
        res["nets"][key] = bench_net(key, args.methods, steps, warmup, device, args.data_dir, plain=True)
        print(json.dumps(res["nets"][key]["rows"]), file=sys.stderr)
    mem_methods = [m for m in ("ottt", "opzo") if m in args.methods]
    if not args.quick and not args.no_memory and device.type == "cpu" and mem_methods:
        res["memory"] = memory(mem_methods)
    if not args.quick and not args.no_memory and device.type == "cuda" and mem_methods:
        res["gpu_memory"] = gpu_memory(mem_methods, device)
    out = Path(args.out)
    atomic_write_json(out / "speed.json", res)
    write_report(res, out / "speed.md")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print((out / "speed.md").read_text())


if __name__ == "__main__":
    main()
