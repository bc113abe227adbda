"""reports/lava_speed.md: Lava's CPU backend (fixed_pt, bit-accurate models) against the fast engine
on the same quantised 784-128-10 network, per time step. Needs lava-nc (see README).

    python benchmarks/lava_speed.py [--steps 100]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from neuroplast.chip.hardware import load_chip
from neuroplast.chip.quantize import quantize
from neuroplast.fileio import atomic_write_text
from neuroplast.lava.equivalence import compare_sample
from neuroplast.snn import build_network


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    net = build_network("784-128-10", input_shape=(784,), num_classes=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    chip = load_chip("loihi2")
    short = max(10, args.steps // 10)
    timings = {}
    for steps in (short, args.steps):  # two lengths: the difference removes Lava's compile/start-up time
        fixed = quantize(net, chip, time_steps=steps, timing="lava")
        x = fixed.encode_input(torch.rand(steps, 256, 784, generator=torch.Generator().manual_seed(1)) * 0.3)
        t0 = time.perf_counter()
        mismatch, _ = compare_sample(fixed, x[:, 0])      # Lava run (+ engine check) for one sample
        timings[steps] = time.perf_counter() - t0
        if mismatch is not None:
            print(f"NOT bit-exact: {mismatch}", file=sys.stderr)
            return 1
    lava_ms = 1e3 * (timings[args.steps] - timings[short]) / (args.steps - short)
    t0 = time.perf_counter()
    fixed.simulate(x[:, :1], integer_input=True)
    eng1 = 1e3 * (time.perf_counter() - t0) / (args.steps + 1)
    t0 = time.perf_counter()
    fixed.simulate(x, integer_input=True)
    eng256 = 1e3 * (time.perf_counter() - t0) / (args.steps + 1)
    lines = ["# Lava CPU backend vs the fast engine (784-128-10, fixed point, Lava timing)", "",
             f"Command: `python benchmarks/lava_speed.py --steps {args.steps}`; one run on the 2-core machine "
             f"(idle but for this run). Lava's per-step time is the difference of a {args.steps}-step and a "
             f"{short}-step run ({timings[args.steps]:.2f} s and {timings[short]:.2f} s, each including compiling, "
             "starting and stopping its runtime), so start-up is not counted. Lava runs with the equivalence harness's "
             "Monitors attached (u, v and spikes of every layer read at every step), which costs time of its own.", "",
             "| what | ms per time step | per sample-step |", "|---|---|---|",
             f"| Lava (fixed_pt, 1 sample) | {lava_ms:.2f} | {lava_ms:.2f} ms |",
             f"| engine, 1 sample | {eng1:.3f} | {eng1:.3f} ms |",
             f"| engine, batch of 256 | {eng256:.3f} | {1e3 * eng256 / 256:.2f} µs |",
             "", "u, v and spikes of both runs were bit-exact with the engine. Engine speed-up per sample-step: "
             f"{lava_ms / (eng256 / 256):.0f}× batched, {lava_ms / eng1:.0f}× for one sample.", ""]
    atomic_write_text("reports/lava_speed.md", "\n".join(lines))
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
