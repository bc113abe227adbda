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
    fixed = quantize(net, load_chip("loihi2"), time_steps=args.steps, timing="lava")
    x = fixed.encode_input(torch.rand(args.steps, 256, 784, generator=torch.Generator().manual_seed(1)) * 0.3)
    t0 = time.perf_counter()
    mismatch, _ = compare_sample(fixed, x[:, 0])          # Lava run (+ engine check) for one sample
    lava_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fixed.simulate(x[:, :1], integer_input=True)
    eng1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    fixed.simulate(x, integer_input=True)
    eng256 = time.perf_counter() - t0
    steps = args.steps + 1
    lines = ["# Lava CPU backend vs the fast engine (784-128-10, fixed point, Lava timing)", "",
             f"Command: `python benchmarks/lava_speed.py --steps {args.steps}`; one run on the 2-core machine, "
             "times as measured in this one run (Lava's includes compiling and starting its runtime).", "",
             "| what | wall s | ms per time step | per sample-step |", "|---|---|---|---|",
             f"| Lava, 1 sample | {lava_s:.2f} | {1e3 * lava_s / steps:.2f} | {1e3 * lava_s / steps:.2f} ms |",
             f"| engine, 1 sample | {eng1:.3f} | {1e3 * eng1 / steps:.3f} | {1e3 * eng1 / steps:.3f} ms |",
             f"| engine, batch of 256 | {eng256:.3f} | {1e3 * eng256 / steps:.3f} | {1e6 * eng256 / steps / 256:.2f} µs |",
             "", f"Bit-exact on the Lava sample: {'yes' if mismatch is None else 'NO: ' + str(mismatch)}. "
             f"Engine speed-up per sample-step: {lava_s / (eng256 / 256):.0f}× (batched), {lava_s / eng1:.0f}× (one sample).", ""]
    atomic_write_text("reports/lava_speed.md", "\n".join(lines))
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
