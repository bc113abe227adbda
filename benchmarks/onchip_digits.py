"""reports/onchip_digits.md: on-chip integer learning (loihi2 precision) against the same rule in
float, on digits 64-256-10, T=4, 20 epochs, batch 32, 3 seeds.

    python benchmarks/onchip_digits.py
"""
from __future__ import annotations

import statistics
import sys
import time

from neuroplast.experiment import train
from neuroplast.fileio import atomic_write_json, atomic_write_text
from neuroplast.spec import TrainConfig

METHODS = ("dfa", "opzo", "zo")
BASE = dict(dataset="digits", net="64-256-10", time_steps=4, epochs=20, batch_size=32)


def main() -> int:
    t_all = time.perf_counter()
    rows = {}
    for m in METHODS:
        for precision, lr in (("float", 2e-3), ("loihi2", 0.3)):
            accs, walls = [], []
            for seed in range(3):
                s = train(TrainConfig(**BASE, method=m, precision=precision, lr=lr, seed=seed), progress=False)
                accs.append(s["test_acc"])
                walls.append(s["wall_s"])
            rows[(m, precision)] = {"accs": accs, "wall": statistics.fmean(walls)}
            print(m, precision, accs, file=sys.stderr)
    lines = ["# On-chip integer learning vs float: digits `64-256-10`, T=4", "",
             "Command: `python benchmarks/onchip_digits.py` (20 epochs, batch 32, seeds 0-2; float: Adam lr 2e-3 with "
             "the rule's float surrogate; loihi2: integer forward and learning, SGD lr 0.3 as a power-of-two shift, "
             f"see neuroplast/chip/onchip.py). Total {time.perf_counter() - t_all:.0f} s on a shared 2-core machine.", "",
             "| method | float test acc | loihi2 test acc | gap (points) | wall s / run float | loihi2 |",
             "|---|---|---|---|---|---|"]
    for m in METHODS:
        f, q = rows[(m, "float")], rows[(m, "loihi2")]
        mf, mq = statistics.fmean(f["accs"]), statistics.fmean(q["accs"])
        lines.append(f"| `{m}` | {100 * mf:.2f} ± {100 * statistics.stdev(f['accs']):.2f}% | "
                     f"{100 * mq:.2f} ± {100 * statistics.stdev(q['accs']):.2f}% | {100 * (mf - mq):+.2f} | "
                     f"{f['wall']:.1f} | {q['wall']:.1f} |")
    lines += ["", "On chip: 8-bit weight mantissas (no biases), 7-bit presynaptic traces, 8-bit error payloads, "
              "8-bit DFA feedback / 16-bit OPZO momentum feedback, Rademacher noise from counter-based noise units (neuroplast/chip/rng.py; OPZO, ZO), "
              "boxcar ψ' on the integer membrane, stochastic rounding of every update.", ""]
    atomic_write_text("reports/onchip_digits.md", "\n".join(lines))
    atomic_write_json("reports/onchip_digits.json", {f"{m}|{p}": v for (m, p), v in rows.items()})
    print("wrote reports/onchip_digits.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
