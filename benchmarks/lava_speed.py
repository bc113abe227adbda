"""reports/lava_speed.md: Lava's CPU backend (fixed_pt, bit-accurate models) against the fast engine
on the same quantised 784-128-10 network, per time step: inference, and on-chip OPZO learning
(plastic 784->128 and 128->10 layers, noise units, feedback channels). Needs lava-nc (see README).

    python benchmarks/lava_speed.py [--steps 100]
"""
from __future__ import annotations

import argparse
import copy
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
    ap.add_argument("--learn-samples", type=int, default=20, help="samples of the on-chip learning run (T = 10)")
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
             f"{lava_ms / (eng256 / 256):.0f}× batched, {lava_ms / eng1:.0f}× for one sample.", "",
             *_learning_rows(net, chip, args.learn_samples)]
    atomic_write_text("reports/lava_speed.md", "\n".join(lines))
    print("\n".join(lines), file=sys.stderr)
    return 0


def _learning_rows(net, chip, samples: int, T: int = 10) -> list[str]:
    """On-chip OPZO learning: Lava (one sample at a time, an update after each) vs the engine."""
    from neuroplast.chip.onchip import OnChipLearner
    from neuroplast.lava.learning import build_learning_graph, engine_learning, first_mismatch, run_learning
    learner = OnChipLearner(net, chip, "opzo", lr=0.3, time_steps=T, seed=0)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(T, samples, 784, generator=g) * 0.3, torch.randint(0, 10, (samples,), generator=g)
    short = max(2, samples // 5)
    lava_s = {}
    for k in (short, samples):
        t0 = time.perf_counter()
        lava = run_learning(build_learning_graph(learner, learner.encode(x[:, :k]), y[:k]), timeout=1800)
        lava_s[k] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine, _ = engine_learning(learner, x, y)
    eng1 = 1e3 * (time.perf_counter() - t0) / (samples * T)
    batch = copy.deepcopy(learner)
    xb = torch.rand(T, 256, 784, generator=g) * 0.3
    t0 = time.perf_counter()
    batch.train_batch(xb, torch.randint(0, 10, (256,), generator=g))
    eng256 = 1e3 * (time.perf_counter() - t0) / T
    mismatch = first_mismatch(engine, lava)
    lava_ms = 1e3 * (lava_s[samples] - lava_s[short]) / ((samples - short) * T)
    return ["## On-chip OPZO learning (plastic layers, noise units, feedback channels, error unit)", "",
            f"{samples} samples × T = {T} steps, one weight update per sample; Lava's per-step time is the difference "
            f"of a {samples}- and a {short}-sample run ({lava_s[samples]:.2f} s and {lava_s[short]:.2f} s). "
            "Monitors record u, v and spikes of the hidden layer and every weight matrix is logged after each sample.",
            "", "| what | ms per time step | per sample-step |", "|---|---|---|",
            f"| Lava (fixed_pt, 1 sample at a time) | {lava_ms:.2f} | {lava_ms:.2f} ms |",
            f"| engine, 1 sample per batch | {eng1:.3f} | {eng1:.3f} ms |",
            f"| engine, batch of 256 | {eng256:.3f} | {1e3 * eng256 / 256:.2f} µs |", "",
            ("Spikes, voltages, weights and feedback of Lava and the engine (one sample per batch) were bit-exact."
             if mismatch is None else f"NOT bit-exact: {mismatch}"), ""]


if __name__ == "__main__":
    sys.exit(main())
