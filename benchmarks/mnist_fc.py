"""Benchmark: MNIST FC 784-800-800-10 SNN, T=6, batch 128, BPTT and OTTT (issue 2).

Measures, in one run on this machine:
  1. speed — one BPTT (and OTTT) training step of the engine vs a plain hand-written PyTorch loop
     of the same network (benchmarks/plain_loop.py), interleaved, median of repeats;
  2. memory — peak resident memory of a training step above a T=1 baseline, at T=6 and T=30,
     for BPTT and OTTT (each in a fresh subprocess);
  3. accuracy — 10 epochs of BPTT and of OTTT through ``neuroplast train``; test accuracy,
     firing rates, training samples/s.
Writes reports/mnist_fc.md and reports/mnist_fc.json. Never run in CI (tens of minutes).

    python benchmarks/mnist_fc.py --data-dir ../shared/data [--epochs 10] [--skip-train]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from plain_loop import PlainSNN, plain_step  # noqa: E402

from neuroplast.data import encode  # noqa: E402
from neuroplast.experiment import train  # noqa: E402
from neuroplast.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from neuroplast.learn import ce_mse_loss, make_rule  # noqa: E402
from neuroplast.snn import build_network  # noqa: E402
from neuroplast.spec import TrainConfig  # noqa: E402

ARCH, T, BATCH = "784-800-800-10", 6, 128


def _engine_step(method: str, T: int):
    torch.manual_seed(0)
    net = build_network(ARCH, input_shape=(1, 28, 28), num_classes=10, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    rule = make_rule(method)
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))

    def step(T=T):
        opt.zero_grad(set_to_none=True)
        rule.compute_grads(net, encode("direct", x, T), y, ce_mse_loss)
        opt.step()
    return step


def speed(repeats: int = 30) -> dict:
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    plain = PlainSNN()
    popt = torch.optim.Adam(plain.parameters(), 1e-3)
    fns = {"plain_loop": lambda: plain_step(plain, popt, x, y, T),
           "bptt": _engine_step("bptt", T), "ottt": _engine_step("ottt", T)}
    times = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(3):
            f()
    for _ in range(repeats):  # interleaved, so machine noise hits all alike
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    return {"ms_per_batch": ms, "ratio_plain_over_bptt": ms["plain_loop"] / ms["bptt"],
            "ratio_plain_over_ottt": ms["plain_loop"] / ms["ottt"], "repeats": repeats}


class _SavedBytes:
    """Counts bytes of tensors autograd keeps for the backward pass, live and at peak."""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, t):
        return _Handle(self, t)

    @staticmethod
    def unpack(h):
        return h.tensor


class _Handle:
    def __init__(self, counter, t):
        self.counter, self.tensor, self.n = counter, t, t.numel() * t.element_size()
        counter.live += self.n
        counter.peak = max(counter.peak, counter.live)

    def __del__(self):
        self.counter.live -= self.n


def memory_probe(method: str, T: int) -> dict:
    """Run in a fresh process: peak bytes saved for backward in one step, and peak RSS growth of
    training steps at T over a T=1 baseline."""
    step = _engine_step(method, T)
    for _ in range(2):
        step(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counter = _SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        for _ in range(3):
            step(T)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "T": T, "saved_for_backward_MiB": counter.peak / 2**20,
            "peak_rss_above_T1_MiB": (peak - base) / 1024}


def memory() -> list[dict]:
    rows = []
    for method in ("bptt", "ottt"):
        for t in (6, 30):
            out = subprocess.run([sys.executable, __file__, "--memory-probe", method, str(t)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def accuracy(data_dir: str, epochs: int, runs: Path) -> list[dict]:
    rows = []
    for method in ("bptt", "ottt"):
        cfg = TrainConfig(task="mnist", dataset="mnist", net=ARCH, method=method, time_steps=T, epochs=epochs,
                          batch_size=BATCH, optimizer="adam", lr=1e-3, schedule="cosine", data_dir=data_dir, seed=0)
        s = train(cfg, save=runs / f"mnist_fc_{method}", overwrite=True, progress=False)
        s["train_samples_per_s"] = 60000 * epochs / s["wall_s"]
        rows.append(s)
    return rows


def write_report(res: dict, path: Path) -> None:
    sp = res["speed"]["ms_per_batch"]
    lines = [
        "# MNIST FC SNN: BPTT and OTTT (issue 2)", "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']}; torch {res['torch']}; date {res['date']}.  ",
        f"Network `{ARCH}`, T={T}, batch {BATCH}, Adam lr 1e-3 with cosine schedule, direct encoding, "
        "LIF λ=0.5 θ=1 hard reset, sigmoid surrogate k=4, loss 0.95·CE + 0.05·MSE, seed 0.", "",
        "## Speed (one training step, median of interleaved repeats, same process)", "",
        "| step | ms / batch of 128 |", "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in sp.items()), "",
        f"Plain loop / engine BPTT = **{res['speed']['ratio_plain_over_bptt']:.2f}×** "
        f"(> 1 means the engine is faster); plain / OTTT = {res['speed']['ratio_plain_over_ottt']:.2f}×. "
        "Training throughput from these step times: "
        + ", ".join(f"{k} {128_000 / v:.0f} samples/s" for k, v in sp.items()) + ".", "",
        "## Memory of a training step (fresh process each)", "",
        "Peak bytes autograd holds for the backward pass during a step (counted exactly with "
        "saved-tensor hooks), and peak resident memory above a T=1 baseline (coarse: the allocator "
        "reuses freed memory).", "",
        "| method | T | peak saved for backward (MiB) | peak RSS above T=1 (MiB) |", "|---|---|---|---|",
        *(f"| {r['method']} | {r['T']} | {r['saved_for_backward_MiB']:.1f} | {r['peak_rss_above_T1_MiB']:.1f} |"
          for r in res["memory"]), "",
    ]
    if res.get("accuracy"):
        lines += ["## Accuracy after training", "", f"Command: `{res['accuracy_command']}`", "",
                  "| method | epochs | test acc | train loss | firing rates | wall s | train samples/s |",
                  "|---|---|---|---|---|---|---|",
                  *(f"| {r['method']} | {r['epochs']} | {100 * r['test_acc']:.2f}% | {r['train_loss']:.4f} | "
                    + ", ".join(f"{k} {v:.3f}" for k, v in r["firing_rates"].items())
                    + f" | {r['wall_s']:.0f} | {r['train_samples_per_s']:.0f} |" for r in res["accuracy"]), "",
                  "Run directories (config, metrics.jsonl, weights) were written under `runs/` (not committed). "
                  "Training wall times (and the samples/s derived from them) include evaluation after training "
                  "and whatever else ran on the shared 2-core machine at the time; the speed table above is the "
                  "clean measurement."]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "T"))
    ap.add_argument("--out", default="reports")
    args = ap.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe[0], int(args.memory_probe[1]))))
        return
    res = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} CPU threads", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d")}
    res["speed"] = speed()
    print(json.dumps(res["speed"]), file=sys.stderr)
    res["memory"] = memory()
    print(json.dumps(res["memory"]), file=sys.stderr)
    out = Path(args.out)
    if not args.skip_train:
        res["accuracy"] = accuracy(args.data_dir, args.epochs, Path("runs"))
        res["accuracy_command"] = res["command"]
    elif (out / "mnist_fc.json").is_file():  # keep the accuracy of the last full run
        old = json.loads((out / "mnist_fc.json").read_text())
        res["accuracy"], res["accuracy_command"] = old.get("accuracy"), old.get("accuracy_command", old["command"])
    atomic_write_json(out / "mnist_fc.json", res)
    write_report(res, out / "mnist_fc.md")
    print((out / "mnist_fc.md").read_text())


if __name__ == "__main__":
    main()
