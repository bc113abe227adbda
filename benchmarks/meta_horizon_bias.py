"""reports/meta_horizon_bias.md: does truncated meta-training (K = 20 unrolled steps) improve on a
learned optimizer that starts as tuned Adam? Summarises the meta-training histories (held-out loss
at H and 3H on held-out seeds, every 50 meta-iterations) of three variants on the digits conv SNN
with LocalZO gradients, and their meta-bench rows (5 evaluation seeds) against tuned Adam:

    tuned           learnable step size (scale_lr 0.05), starting at Adam's tuned lr 0.03
    tuned_fixed     step size fixed at 0.03 (scale_lr 0): only per-coordinate multipliers learn
    tuned_relative  fixed step size and multipliers centred to geometric mean 1 (relative = true)

Runs first (about 15 min of meta-training each on 2 cores, then meta-bench with cached baselines):
    neuroplast meta-train --task tasks/meta_digits_conv_tuned<_fixed|_relative>.toml \
        --out runs/meta_digits_conv_tuned<_fixed|_relative>
    neuroplast meta-bench --task meta_digits_conv_tuned<...> --out DIR
then: python benchmarks/meta_horizon_bias.py [--bench NAME=DIR/meta_NAME.json ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuroplast.fileio import atomic_write, atomic_write_text

VARIANTS = ("tuned", "tuned_fixed", "tuned_relative")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs", help="folder holding runs/meta_digits_conv_<variant>/history.jsonl")
    ap.add_argument("--bench", nargs="*", default=[], metavar="VARIANT=JSON", help="meta-bench results per variant")
    args = ap.parse_args()
    hist = {}
    for v in VARIANTS:
        path = Path(args.runs) / f"meta_digits_conv_{v}" / "history.jsonl"
        if path.is_file():
            hist[v] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not hist:
        print(f"no histories under {args.runs}/meta_digits_conv_*; run the meta-training first", file=sys.stderr)
        return 2
    bench = {}
    for item in args.bench:
        name, _, path = item.partition("=")
        bench[name] = json.loads(Path(path).read_text())
    lines = ["# Short-horizon bias: meta-training a learned optimizer that starts as tuned Adam", "",
             "Command: `python benchmarks/meta_horizon_bias.py " + " ".join(sys.argv[1:]) + "` (summary of the runs "
             "named in its docstring; digits conv SNN `1x8x8-16C3-AP2-32C3-AP2-64-FC`, LocalZO m=2, batch 64, T=4, "
             "K=20, meta-training horizon 200 with curriculum from 60, meta-loss `log`).", "",
             "Held-out loss (mean over 3 held-out seeds) during meta-training; iteration 0 is the untrained "
             "optimizer, i.e. Adam at lr 0.03 (the tuned Adam of reports/meta_digits_conv.md):", "",
             "| variant | iteration | loss @200 | loss @600 | step size |", "|---|---|---|---|---|"]
    for v, rows in hist.items():
        for r in rows:
            lines.append(f"| `{v}` | {r['iteration']} | {_num(r['loss_at']['200'])} | {_num(r['loss_at']['600'])} | "
                         f"{_num(r['step_size'])} |")
    lines += ["", "Meta-iterations run: " + ", ".join(f"`{v}` {rows[-1]['iteration']}" for v, rows in hist.items())
              + " (of 300; a run stopped early was stopped once its trend was clear)."]
    if bench:
        lines += ["", "meta-bench (5 evaluation seeds; `learned` is best.pt, selected on held-out seeds):", "",
                  "| variant | optimizer | train loss @200 | train loss @1000 | test acc @1000 |", "|---|---|---|---|---|"]
        for v, res in bench.items():
            for r in res["table"]:
                if r["optimizer"] in ("adam", "adam_cosine@1000", "learned"):
                    lines.append(f"| `{v}` | `{r['optimizer']}` | {r['loss@200'][0]:.4f} ± {r['loss@200'][1]:.4f} | "
                                 f"{r['loss@1000'][0]:.4f} ± {r['loss@1000'][1]:.4f} | "
                                 f"{100 * r['acc@1000'][0]:.2f} ± {100 * r['acc@1000'][1]:.2f}% |")
    lines += ["", "Every variant gets worse on held-out seeds as meta-training proceeds, at H and beyond it: with a "
              "learnable step size the step size falls from 0.03 to ≈ 0.01 (the greedy choice for 20-step "
              "segments: the short-horizon bias of truncated unrolls, Wu et al., ICLR 2018); with the step size "
              "fixed, and even with multipliers that can only move step size between coordinates, the held-out "
              "loss still rises. Selection on held-out seeds therefore keeps iteration 0, and the learned "
              "optimizer ties tuned Adam. Beating it needs meta-gradients without truncation bias (longer "
              "unrolls, or evolution strategies over whole trajectories, e.g. PES).", "",
              "![held-out loss during meta-training](meta_horizon_bias.png)", ""]
    out = Path("reports")
    atomic_write_text(out / "meta_horizon_bias.md", "\n".join(lines))
    _plot(hist, out / "meta_horizon_bias.png")
    print("\n".join(lines), file=sys.stderr)
    return 0


def _plot(hist: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, h in zip(axes, ("200", "600")):
        for v, rows in hist.items():
            ax.plot([r["iteration"] for r in rows], [r["loss_at"][h] for r in rows], marker="o", label=v)
        ax.set_xlabel("meta-training iteration")
        ax.set_ylabel(f"held-out train loss after {h} steps")
        ax.set_title(f"held-out seeds, step {h}")
        ax.grid(alpha=0.3)
    axes[0].legend(title="variant")
    fig.suptitle("learned optimizer during meta-training (iteration 0 = tuned Adam, lr 0.03)")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())


def _num(x) -> str:
    """A history value to 4 decimals; "diverged" for null (history.jsonl writes non-finite values as null)."""
    return "diverged" if x is None else f"{x:.4f}"
