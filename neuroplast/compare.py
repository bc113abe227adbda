"""Compare learning rules side by side on the same network, data and seeds.

For every method and seed: a full training run (``experiment.train``, run directory kept), plus
the readout-only control (hidden layers frozen at the same initialisation, trained with BPTT);
then the gradient-quality probe of every method against BPTT at the initial weights. Writes
``compare_<task>.md`` (mean ± std test accuracy, wall time, firing rates, gradient variance and
cosine to BP), ``compare_<task>.json`` and two plots: training curves and gradient quality.
"""
from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from .errors import UserError
from .experiment import train
from .fileio import atomic_write, atomic_write_json, atomic_write_text
from .limits import check_count
from .probe import _plot, probe_gradients
from .spec import TrainConfig

CONTROL = "readout-only"


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _tag(method: str) -> str:
    """The run-directory name part of a method spec."""
    return method.replace(":", "_").replace(",", "_").replace("=", "")


def check_compare_args(methods: list[str], seeds: int, probe_batches: int) -> None:
    """UserError unless there is at least one method, no two share a run directory, and seeds and
    probe_batches are counts in [1, MAX_SIZE] (``limits.check_count``; checked before any training)."""
    if not methods:
        raise UserError("--methods: give at least one method, e.g. --methods bptt dfa")
    seen: dict[str, str] = {}
    for m in methods:
        if _tag(m) in seen:
            raise UserError(f"--methods: {m!r} is given twice" + (f" (as {seen[_tag(m)]!r})" if seen[_tag(m)] != m else "")
                            + "; give each method once (use --seeds for repeats)")
        seen[_tag(m)] = m
    if CONTROL in methods:
        raise UserError(f"--methods: {CONTROL!r} is the control every comparison includes; leave it out")
    check_count("--seeds", seeds)
    check_count("--probe-batches", probe_batches)


def compare(cfg: TrainConfig, methods: list[str], *, seeds: int = 3, runs_dir: str | Path = "runs",
            probe_batches: int = 20, progress: bool = False) -> dict:
    """Train every method (and the control) with seeds 0..seeds−1; probe gradients; return all."""
    check_compare_args(methods, seeds, probe_batches)
    cfg = cfg.resolved()
    runs: dict[str, list[dict]] = {}
    curves: dict[str, list[list[dict]]] = {}
    for method in [*methods, CONTROL]:
        for seed in range(seeds):
            over = {"method": "bptt", "trainable": "readout"} if method == CONTROL else {"method": method}
            c = dataclasses.replace(cfg, seed=seed, **over)
            rows: list[dict] = []
            tag = _tag(method)
            s = train(c, save=Path(runs_dir) / f"compare_{cfg.task}" / f"{tag}_s{seed}", overwrite=True,
                      progress=progress, on_epoch=rows.append)
            runs.setdefault(method, []).append(s)
            curves.setdefault(method, []).append(rows)
    probe = probe_gradients(cfg, methods=methods, reference=f"bptt|{cfg.estimator}", max_batches=probe_batches)
    table = []
    for method, ss in runs.items():
        acc = _mean_std([s["test_acc"] for s in ss])
        wall = _mean_std([s["wall_s"] for s in ss])
        layers = ss[0]["firing_rates"].keys()
        rates = {k: statistics.fmean(s["firing_rates"][k] for s in ss) for k in layers}
        table.append({"method": method, "seeds": len(ss), "test_acc_mean": acc[0], "test_acc_std": acc[1],
                      "wall_s_mean": wall[0], "firing_rates": rates})
    return {"task": cfg.task, "net": cfg.net, "epochs": cfg.epochs, "config": cfg.to_dict(), "table": table,
            "runs": runs, "curves": curves, "probe": probe}


def write_compare_report(res: dict, out_dir: str | Path, command: str = "") -> list[Path]:
    out = Path(out_dir)
    stem = f"compare_{res['task']}"
    lines = [f"# Learning rules compared: {res['task']}, `{res['net']}`", "",
             (f"Command: `{command}`  \n" if command else "")
             + f"{res['epochs']} epochs per run; settings in `{stem}.json` (`config`). "
             f"`{CONTROL}`: the same network and initialisation with the hidden layers frozen (BPTT on the readout).",
             "", "| method | seeds | test acc (mean ± std) | wall s (mean) | firing rates |", "|---|---|---|---|---|"]
    for r in res["table"]:
        rates = ", ".join(f"{k} {v:.3f}" for k, v in r["firing_rates"].items())
        lines.append(f"| `{r['method']}` | {r['seeds']} | {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f}% | "
                     f"{r['wall_s_mean']:.1f} | {rates} |")
    lines += ["", f"## Gradient quality at initialisation (reference `{res['probe']['reference']}`, "
              f"{res['probe']['rows'][0]['batches'] if res['probe']['rows'] else 0} batches)", "",
              "| method | layer | variance | rel. variance | cosine to BP |", "|---|---|---|---|---|",
              *(f"| `{r['method']}` | {r['layer']} | {r['variance']:.3g} | {r['rel_variance']:.3g} | {r['cosine']:.3f} |"
                for r in res["probe"]["rows"]),
              "", "Variance as in OPZO Appendix C, (1/(N·D)) Σ_n ‖g_n − ḡ‖²; it depends on each rule's gradient "
              "scale (OPZO's is ∝ σ); the relative variance (1/N) Σ_n ‖g_n − ḡ‖² / ‖ḡ‖² does not.", "",
              f"![training curves]({stem}_curves.png)", f"![gradient quality]({stem}_gradients.png)", ""]
    paths = [atomic_write_text(out / f"{stem}.md", "\n".join(lines)), atomic_write_json(out / f"{stem}.json", res)]
    paths.append(_curves(res["curves"], out / f"{stem}_curves.png"))
    rows = [{**r, "estimator": r["method"]} for r in res["probe"]["rows"]]
    paths.append(_plot(rows, out / f"{stem}_gradients.png"))
    return paths


def _curves(curves: dict[str, list[list[dict]]], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for method, per_seed in curves.items():
        epochs = [r["epoch"] for r in per_seed[0]]
        for ax, key in zip(axes, ("train_loss", "train_acc")):
            vals = [statistics.fmean(rows[i][key] for rows in per_seed) for i in range(len(epochs))]
            ax.plot(epochs, vals, marker="o", label=method)
    for ax, title in zip(axes, ("training loss (mean over seeds)", "training accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), binary=True)
    plt.close(fig)
    return path
