"""``neuroplast report RUN_DIR...``: a markdown report with PNG figures from saved runs.

Runs are grouped by method (and network, when they differ; seeds pooled): an accuracy table (mean ± std), training and
validation curves, firing rate per layer, and, when the runs recorded their activity, the training
cost per sample on a chip (``chip.cost``). Every number comes from the run directories on disk.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write, atomic_write_json, atomic_write_text


def _read_run(path: Path) -> dict:
    try:
        summary = json.loads((path / "summary.json").read_text())
        config = json.loads((path / "config.json").read_text())
        metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except FileNotFoundError as exc:
        raise UserError(f"{path} is not a run directory ({Path(exc.filename).name} missing); "
                        "give directories written by `neuroplast train --save`") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: a run file is corrupt ({exc})") from None
    return {"path": str(path), "summary": summary, "config": config, "metrics": metrics}


def _ms(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def build_report(run_dirs: list[str | Path], hw: str | None = "loihi1") -> dict:
    runs = [_read_run(Path(p)) for p in run_dirs]
    groups: dict[str, list[dict]] = defaultdict(list)
    several_nets = len({r["summary"]["net"] for r in runs}) > 1
    for r in runs:  # one group per method (and chip precision, and network when runs differ in it)
        key = r["summary"]["method"] + ("" if r["summary"].get("precision", "float") == "float"
                                        else f" ({r['summary']['precision']})")
        groups[key + (f" · {r['summary']['net']}" if several_nets else "")].append(r)
    table, costs = [], {}
    for method, rs in groups.items():
        acc = _ms([r["summary"]["test_acc"] for r in rs])
        layers = sorted({k for r in rs for k in r["summary"].get("firing_rates", {})})
        rates = {k: statistics.fmean(r["summary"]["firing_rates"][k] for r in rs if k in r["summary"]["firing_rates"])
                 for k in layers}
        table.append({"method": method, "runs": len(rs), "test_acc_mean": acc[0], "test_acc_std": acc[1],
                      "epochs": rs[0]["summary"]["epochs"], "wall_s_mean": statistics.fmean(r["summary"]["wall_s"] for r in rs),
                      "net": rs[0]["summary"]["net"], "firing_rates": rates})
        if hw and all("train_synops" in r["summary"].get("activity", {}) for r in rs):
            from .chip.cost import run_cost
            per = [run_cost(r["path"], hw) for r in rs]
            costs[method] = {"energy_uj_per_sample": statistics.fmean(c["energy_uj_per_sample_total"] for c in per),
                             "synops_forward": statistics.fmean(c["per_sample"]["synops_forward"] for c in per),
                             "feedback_ops": statistics.fmean(c["per_sample"]["feedback_ops"] for c in per),
                             "learning_memory": per[0]["memory_entries"]["learning_state"]}
    return {"runs": [r["path"] for r in runs], "table": table, "costs": costs, "hw": hw,
            "curves": {m: [r["metrics"] for r in rs] for m, rs in groups.items()}}


def write_report(res: dict, out_dir: str | Path, *, name: str = "report", command: str = "") -> list[Path]:
    out = Path(out_dir)
    lines = [f"# Training report: {', '.join(sorted({t['net'] for t in res['table']}))}", ""]
    if command:
        lines += [f"Command: `{command}`  ", f"Runs: {', '.join(res['runs'])}", ""]
    lines += ["| method | runs | epochs | test acc (mean ± std) | wall s (mean) | firing rate per layer |",
              "|---|---|---|---|---|---|"]
    for t in res["table"]:
        rates = ", ".join(f"{k} {v:.3f}" for k, v in t["firing_rates"].items()) or "–"
        lines.append(f"| `{t['method']}` | {t['runs']} | {t['epochs']} | {100 * t['test_acc_mean']:.2f} ± "
                     f"{100 * t['test_acc_std']:.2f}% | {t['wall_s_mean']:.1f} | {rates} |")
    if res["costs"]:
        lines += ["", f"Training cost per sample on `{res['hw']}` (neuroplast/chip/cost.py; chip figures and their "
                  "sources in hardware_models/):", "",
                  "| method | forward SynOps | feedback ops | learning memory (entries) | energy µJ |", "|---|---|---|---|---|"]
        for m, c in res["costs"].items():
            lines.append(f"| `{m}` | {c['synops_forward']:.4g} | {c['feedback_ops']:.4g} | {c['learning_memory']} | "
                         f"{c['energy_uj_per_sample']:.4g} |")
    lines += ["", f"![curves]({name}_curves.png)", f"![firing rates]({name}_rates.png)", ""]
    return [atomic_write_text(out / f"{name}.md", "\n".join(lines)), atomic_write_json(out / f"{name}.json", res),
            _plot_curves(res, out / f"{name}_curves.png"), _plot_rates(res, out / f"{name}_rates.png")]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), binary=True)
    plt.close(fig)
    return path


def _plot_curves(res: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for method, runs in res["curves"].items():
        n = min(len(m) for m in runs)
        epochs = list(range(1, n + 1))
        a1.plot(epochs, [statistics.fmean(m[i]["train_loss"] for m in runs) for i in range(n)], marker="o", label=method)
        key = "val_acc" if all("val_acc" in m[0] for m in runs if m) else "train_acc"
        a2.plot(epochs, [100 * statistics.fmean(m[i][key] for m in runs) for i in range(n)], marker="o", label=method)
        a2.set_ylabel("validation accuracy (%)" if key == "val_acc" else "training accuracy (%)")
    a1.set_ylabel("training loss")
    a1.set_yscale("log")
    from matplotlib.ticker import MaxNLocator
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle("mean over the runs of each method", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _plot_rates(res: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = sorted({k for t in res["table"] for k in t["firing_rates"]})
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(layers) * max(1, len(res["table"])) / 2 + 3), 4))
    width = 0.8 / max(1, len(res["table"]))
    for i, t in enumerate(res["table"]):
        ax.bar([j + i * width for j in range(len(layers))], [t["firing_rates"].get(k, 0.0) for k in layers],
               width=width, label=t["method"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers)
    ax.set_ylabel("spikes per neuron per time step (test set)")
    ax.set_xlabel("layer")
    if res["table"]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
