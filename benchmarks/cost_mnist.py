"""reports/cost_mnist.md: training cost of BP, DFA, ZO and OPZO on MNIST FC (784-800-800-10, T=6)
on a Loihi chip model, counted from the run directories of `neuroplast compare --task mnist`.

    python benchmarks/cost_mnist.py --runs runs/compare_mnist --hw loihi1 --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from neuroplast.chip.cost import run_cost
from neuroplast.chip.hardware import load_chip
from neuroplast.fileio import atomic_write_json, atomic_write_text

METHODS = ("bptt", "dfa", "zo", "opzo")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/compare_mnist")
    ap.add_argument("--hw", default="loihi1")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="reports/cost_mnist.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    chip = load_chip(args.hw)
    rows = {}
    for m in METHODS:
        dirs = sorted(Path(args.runs).glob(f"{m}_s*"))
        if not dirs:
            print(f"no runs for {m} under {args.runs}", file=sys.stderr)
            return 2
        rows[m] = [run_cost(d, args.hw, args.data_dir) for d in dirs]
    first = rows["bptt"][0]

    def mean(m, f):
        return statistics.fmean(f(r) for r in rows[m])

    lines = [f"# Training cost on a chip model: MNIST FC `{first['net']}`, T={first['time_steps']}", "",
             f"Command: `python benchmarks/cost_mnist.py --runs {args.runs} --hw {args.hw}` "
             f"(from the run directories of `neuroplast compare --task mnist --net 784-800-800-10 --methods bptt dfa zo "
             f"opzo --seeds 3 --epochs 5`, reports/compare_mnist.md); {len(rows['bptt'])} seeds per method, "
             f"counts per training sample averaged over the seeds and the {first['samples']} training samples of a "
             f"run; activity {first['activity_source']}. Took {time.perf_counter() - t0:.0f} s.", "",
             f"Chip: `{chip.name}` ({chip.description}). Energy per event: synaptic op {chip.energy_pj['synaptic_op']} pJ, "
             f"neuron update (active) {chip.energy_pj['neuron_update_active']} pJ, synaptic update "
             f"{chip.energy_pj['synaptic_update']} pJ, spike within tile {chip.energy_pj['spike_within_tile']} pJ "
             f"({'; '.join(chip.sources[:1])}; {'pre-silicon figures, flagged as estimates in the chip file' if chip.is_estimated('energy.synaptic_op') else 'measured'}).",
             "", "| method | test acc | forward SynOps | feedback ops | weight updates | noise draws | learning memory (entries) "
             "| energy µJ / sample | cores |", "|---|---|---|---|---|---|---|---|---|"]
    for m in METHODS:
        lines.append(
            f"| `{m}` | {100 * mean(m, lambda r: r['test_acc']):.2f}% | {mean(m, lambda r: r['per_sample']['synops_forward']):.4g} | "
            f"{mean(m, lambda r: r['per_sample']['feedback_ops']):.4g} | {mean(m, lambda r: r['per_sample']['weight_updates']):.4g} | "
            f"{mean(m, lambda r: r['per_sample']['noise_draws']):.4g} | {rows[m][0]['memory_entries']['learning_state']} | "
            f"{mean(m, lambda r: r['energy_uj_per_sample_total']):.4g} | {rows[m][0]['mapping']['cores']} |")
    lines += ["", "Per layer (firing rate = spikes per neuron per step during training; SynOps into the layer):", "",
              "| method | " + " | ".join(f"{k} rate | {k} SynOps in" for k in first["per_layer"]) + " |",
              "|---|" + "---|---|" * len(first["per_layer"])]
    for m in METHODS:
        cells = []
        for k in first["per_layer"]:
            rate = [r["per_layer"][k]["firing_rate"] for r in rows[m]]
            cells.append("–" if rate[0] is None else f"{statistics.fmean(rate):.3f}")
            cells.append(f"{statistics.fmean(r['per_layer'][k]['synops_in'] for r in rows[m]):.4g}")
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    lines += ["", "Energy split (µJ per training sample, seed mean):", "",
              "| method | " + " | ".join(first["energy_uj_per_sample"]) + " |", "|---|" + "---|" * len(first["energy_uj_per_sample"])]
    for m in METHODS:
        lines.append(f"| `{m}` | " + " | ".join(f"{mean(m, lambda r, k=k: r['energy_uj_per_sample'][k]):.4g}"
                                              for k in first["energy_uj_per_sample"]) + " |")
    lines += ["", "How each column is counted (neuroplast/chip/cost.py): forward SynOps = Σ spikes × fan-out (and input "
              "events × fan-out), counted during training, except for ZO and OPZO with their noise after the neuron "
              "(the default): every hidden neuron then sends a graded s + σz at every step, so each synapse after a "
              "hidden layer carries T events and the forward pass is not spike-sparse (noise before the neuron, "
              "`site=before`, keeps it sparse); feedback ops and learning memory follow OPZO's Table 5 "
              "(BP: a transposed copy of W and T steps of activations; DFA: C·ΣN_l; ZO: ΣN_l; OPZO: C·ΣN_l with the "
              "momentum update doubling the ops); ANN-equivalent MACs per forward pass: "
              f"{first['per_sample']['ann_macs_forward']:.4g}. BP's feedback is dense (not spike-driven) and "
              "counted at the synaptic-op energy, which flatters it.", ""]
    atomic_write_text(args.out, "\n".join(lines))
    atomic_write_json(Path(args.out).with_suffix(".json"), rows)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
