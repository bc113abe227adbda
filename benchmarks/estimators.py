"""Benchmark: the MNIST conv SNN trained with every spike-gradient estimator (issue 3).

Network from tasks/mnist_conv.toml (1x28x28-32C3-AP2-64C3-AP2-100-FC, T=6, BPTT, Adam 1e-3,
cosine). LocalZO runs first and longest (it is the estimator with an accuracy target); the others
follow with ``--epochs-others`` epochs each. The report is rewritten after every run, so a
partial run still leaves its numbers. Never run in CI.

    python benchmarks/estimators.py --data-dir ../shared/data [--epochs-localzo 5] [--epochs-others 1]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from neuroplast.experiment import train
from neuroplast.fileio import atomic_write_json, atomic_write_text
from neuroplast.spec import TrainConfig, load_task_file

ESTIMATORS = ["localzo:m=1,delta=0.5,dist=normal", "sigmoid:k=4", "fast_sigmoid:k=4", "triangle:w=1",
              "arctan:alpha=2", "rectangular:w=1", "rectangular:w=2", "gaussian:sigma=0.5",
              "asgl:alpha=0.25,p=0.5"]


def write_report(res: dict, out: Path) -> None:
    lines = ["# Spike-gradient estimators on the MNIST conv SNN (issue 3)", "",
             f"Command: `{res['command']}`  ",
             f"Machine: {res['machine']}; torch {res['torch']}; started {res['date']}.  ",
             f"Task file `tasks/mnist_conv.toml`: network `{res['net']}` ({res['params']} parameters), T=6, "
             "batch 128, BPTT, Adam lr 1e-3 with a cosine schedule over the run's epochs, direct input, "
             "LIF λ=0.5 θ=1 hard reset, seed 0, LIF recursion fused with torch.compile (`--compile`).", "",
             "| estimator | epochs | test acc | train loss | firing rates | estimator stats | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        rates = ", ".join(f"{k} {v:.3f}" for k, v in r["firing_rates"].items())
        stats = "; ".join(f"{k}: " + ", ".join(f"{a} {b:.3g}" for a, b in v.items())
                          for k, v in r["estimator_stats"].items()) or "-"
        lines.append(f"| `{r['estimator']}` | {r['epochs']} | {100 * r['test_acc']:.2f}% | {r['train_loss']:.4f} | "
                     f"{rates} | {stats} | {r['wall_s']:.0f} |")
    lines += ["", "LocalZO ran more epochs than the others (it carries the issue's ≥ 99.0% target); the "
              "others show one short run each, so compare them with each other, not with LocalZO. "
              "Wall times are on a shared 2-core machine with other work running alongside.",
              "For LocalZO, `nonzero_grad_fraction` is the fraction of neuron-steps whose sampled H' was "
              "non-zero over the whole run (its gradient sparsity).",
              "`rectangular:w=1` failed: its window |u − θ| < 0.5 gives no gradient to neurons whose membrane "
              "starts far below threshold, so conv2 and the dense layer never fired (firing rate 0) and the "
              "network stayed at chance. The default window is now w = 2 (row `rectangular:w=2`)."]
    atomic_write_text(out / "estimators.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "estimators.json", res)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--epochs-localzo", type=int, default=5)
    ap.add_argument("--epochs-others", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="estimator specs to (re)run, merged into the existing report")
    ap.add_argument("--out", default="reports")
    args = ap.parse_args()
    base = load_task_file(Path(__file__).resolve().parents[1] / "tasks" / "mnist_conv.toml")
    res = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, "
           f"{torch.get_num_threads()} CPU threads", "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M"), "net": base["net"], "runs": []}
    if args.only and (Path(args.out) / "estimators.json").is_file():  # add to / replace rows of the last run
        old = json.loads((Path(args.out) / "estimators.json").read_text())
        res["runs"] = [r for r in old["runs"] if r["estimator"] not in args.only]
        res["params"], res["date"] = old.get("params"), old["date"]
        res["command"] = old["command"] + "; then " + res["command"]
    for spec in ESTIMATORS:
        if args.only and spec not in args.only:
            continue
        epochs = args.epochs_localzo if spec.startswith("localzo") else args.epochs_others
        cfg = TrainConfig(**{**base, "estimator": spec, "epochs": epochs, "data_dir": args.data_dir,
                             "compiled": True, "task": "mnist_conv"})
        summary = train(cfg, save=Path("runs") / f"mnist_conv_{spec.split(':')[0]}", overwrite=True, progress=False)
        res["params"] = summary["params"]
        res["runs"].append(summary)
        res["runs"].sort(key=lambda r: ESTIMATORS.index(r["estimator"]) if r["estimator"] in ESTIMATORS else 99)
        print(json.dumps({k: summary[k] for k in ("estimator", "epochs", "test_acc", "wall_s")}), file=sys.stderr)
        write_report(res, Path(args.out))


if __name__ == "__main__":
    main()
