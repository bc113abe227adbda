"""``neuroplast report RUN_DIR...``: a markdown report with PNG figures from saved runs.

Runs are grouped by method (and network, estimator and epochs, when they differ; seeds pooled): an accuracy table (mean ± std), training and
validation curves, firing rate per layer, and, when the runs recorded their activity, the training
cost per sample on a chip (``chip.cost``, also as bars: SynOps, learning memory, energy). Every number
comes from the run directories on disk, plus two cheap re-computations on the saved networks:

- gradient variance per method and layer: the run's own rule (method + estimator of its config) is
  re-run on the trained weights for the first ``grad_batches`` training mini-batches (same batches
  for every method), with ``probe.probe_gradients``: variance (1/(N·D)) Σ_n ‖g_n − ḡ‖², relative
  variance (1/N) Σ_n ‖g_n − ḡ‖² / ‖ḡ‖² and cosine to BPTT's gradient on the same batch; averaged over
  the runs of a method. This is the variance of the estimate at the end of training (float rules),
  not a record of the variance during training.
- a spike raster of one test sample (the first) through the first run's network.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from functools import partial
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write, atomic_write_json, atomic_write_text, write_files


def _read_run(path: Path) -> dict:
    from .runs import read_run_config, read_summary
    if not (path / "config.json").exists():
        raise UserError(f"{path} is not a run directory (config.json missing); "
                        "give directories written by `neuroplast train --save`")
    config = read_run_config(path)
    summary = read_summary(path, required=_SUMMARY)
    where = path / "metrics.jsonl"
    try:
        metrics = [json.loads(line) for line in where.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{path} is not a run directory (metrics.jsonl missing); "
                        "give directories written by `neuroplast train --save`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: a run file is corrupt ({exc})") from None
    except OSError as exc:
        raise UserError(f"{where}: a run file cannot be read ({exc.strerror or exc})") from None
    for i, row in enumerate(metrics, 1):
        if not (isinstance(row, dict) and all(_fits(row.get(k), typ) for k, typ in _METRICS.items())):
            raise UserError(f"{where}: line {i} is not an epoch record with train_loss and "
                            "train_acc; re-run the training with --save")
    return {"path": str(path), "summary": summary, "config": config, "metrics": metrics}


#: what the report needs in summary.json (their types: ``runs.SUMMARY_TYPES``) and in every metrics.jsonl row
_SUMMARY = ("net", "method", "epochs", "test_acc", "wall_s")
_METRICS = {"train_loss": float, "train_acc": float}


def _fits(val, typ) -> bool:
    if isinstance(val, bool):
        return False
    return isinstance(val, (int, float)) if typ is float else isinstance(val, typ)


def _ms(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _grad_rows(runs: list[dict], grad_batches: int, device: str = "cpu", data_dir: str | None = None) -> list[dict]:
    """Per-layer gradient variance of each run's rule at its trained weights (see the module docstring),
    computed on ``device`` (not the device the run was trained on)."""
    import dataclasses

    from .probe import probe_gradients
    from .runs import load_run
    rows = []
    for r in runs:
        cfg, net, _ = load_run(r["path"], data_dir)
        cfg = dataclasses.replace(cfg, device=device)
        res = probe_gradients(cfg, methods=[cfg.method], weights=net.state_dict(), max_batches=grad_batches)
        trained = {"readout"} if getattr(cfg, "trainable", "all") == "readout" else None   # readout-only control
        rows += [{**row, "run": r["path"]} for row in res["rows"] if trained is None or row["layer"] in trained]
    return rows


def _raster(run: dict, sample: int = 0, data_dir: str | None = None) -> dict:
    """Spikes [T, N] per spiking layer of test sample ``sample`` through the run's saved network."""
    import torch

    from .data import encode
    from .runs import load_run
    cfg, net, data = load_run(run["path"], data_dir)
    x = encode(cfg.encoding, data.test.x[sample:sample + 1], cfg.time_steps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        res = net.simulate(x)
    return {"run": run["path"], "sample": sample, "label": int(data.test.y[sample]),
            "predicted": int(res.logits.argmax(1)[0]), "time_steps": cfg.time_steps,
            "layers": {k: v[:, 0].flatten(1).nonzero().tolist() for k, v in res.spikes.items()},
            "neurons": {k: int(v[0, 0].numel()) for k, v in res.spikes.items()}}


def build_report(run_dirs: list[str | Path], hw: str | None = "loihi1", grad_batches: int = 8,
                 device: str = "cpu", data_dir: str | None = None) -> dict:
    """Tables and figure data of the report; ``grad_batches`` = 0 skips the gradient variance (else
    computed on ``device``); ``data_dir``: where the runs' data sets are (default: as each run recorded)."""
    if isinstance(grad_batches, bool) or not isinstance(grad_batches, int) or grad_batches < 0:
        raise UserError(f"--grad-batches must be >= 0 (0 skips the gradient variance), got {grad_batches}")
    if hw:
        from .chip.hardware import load_chip
        load_chip(hw)   # an unknown chip or a bad chip file is an error of the command, not a note per method
    runs = [_read_run(Path(p)) for p in run_dirs]
    groups: dict[str, list[dict]] = defaultdict(list)
    # settings that tell groups apart when the runs differ in them (seeds of one setting pool, others never do)
    labels = {"net": "{}", "estimator": "{}", "epochs": "{} epochs"}
    varying = [k for k in labels if len({str(r["summary"].get(k)) for r in runs}) > 1]
    for r in runs:  # one group per method (and trained part, chip precision, and the varying settings)
        method, trainable = r["summary"]["method"], r["config"].get("trainable", "all")
        if trainable != "all":   # compare's control: BPTT on the readout alone
            method = "readout-only" if trainable == "readout" else f"{method} ({trainable} trained)"
        key = method + ("" if r["summary"].get("precision", "float") == "float" else f" ({r['summary']['precision']})")
        key += "".join(" · " + labels[k].format(r["summary"].get(k)) for k in varying)
        groups[key].append(r)
    table, costs, cost_notes = [], {}, {}
    for method, rs in groups.items():
        acc = _ms([r["summary"]["test_acc"] for r in rs])
        layers = sorted({k for r in rs for k in r["summary"].get("firing_rates", {})})
        rates = {k: statistics.fmean(r["summary"]["firing_rates"][k] for r in rs if k in r["summary"]["firing_rates"])
                 for k in layers}
        table.append({"method": method, "runs": len(rs), "test_acc_mean": acc[0], "test_acc_std": acc[1],
                      "epochs": rs[0]["summary"]["epochs"], "wall_s_mean": statistics.fmean(r["summary"]["wall_s"] for r in rs),
                      "net": rs[0]["summary"]["net"], "firing_rates": rates})
        if hw and any(r["summary"].get("trainable", "all") != "all" for r in rs):
            cost_notes[method] = "the cost model counts the training of the whole network, not of the readout alone."
        elif hw:
            from .chip.cost import CostUnavailable, run_cost
            try:   # runs without recorded SynOps: reconstructed from spike totals where that is exact (FC)
                per = [run_cost(r["path"], hw) for r in rs]
            except CostUnavailable as exc:
                cost_notes[method] = str(exc)
                continue
            costs[method] = {"activity": per[0]["activity_source"],"energy_uj_per_sample": statistics.fmean(c["energy_uj_per_sample_total"] for c in per),
                             "synops_forward": statistics.fmean(c["per_sample"]["synops_forward"] for c in per),
                             "feedback_ops": statistics.fmean(c["per_sample"]["feedback_ops"] for c in per),
                             "learning_memory": per[0]["memory_entries"]["learning_state"]}
    grads = []
    if grad_batches > 0:
        for method, rs in groups.items():
            rows = _grad_rows(rs, grad_batches, device, data_dir)
            for layer in dict.fromkeys(row["layer"] for row in rows):
                mine = [row for row in rows if row["layer"] == layer]
                grads.append({"method": method, "layer": layer, "batches": mine[0]["batches"], "runs": len(mine),
                              **{k: statistics.fmean(row[k] for row in mine) for k in ("variance", "rel_variance", "cosine")}})
    return {"runs": [r["path"] for r in runs], "table": table, "costs": costs, "cost_notes": cost_notes, "hw": hw, "gradients": grads,
            "raster": _raster(runs[0], data_dir=data_dir) if runs else None,
            "curves": {m: [r["metrics"] for r in rs] for m, rs in groups.items()}}


#: every figure a report can have (NAME_<what>.png)
FIGURES = ("curves", "rates", "costs", "gradients", "raster")


def check_report_name(name: str) -> str:
    """The file name stem of a report: not empty, not hidden, no folders (UserError otherwise)."""
    if not name or name.startswith(".") or "/" in name or "\\" in name or name in (".", ".."):
        raise UserError(f"--name {name!r}: give a plain file name stem such as 'report' (not empty, no '/', "
                        "not starting with '.')")
    return name


def _is_whole_folder(parent: str, runs: list[str]) -> bool:
    """Whether ``runs`` are all the entries of ``parent`` (what the shell's ``PARENT/*`` gives)."""
    return set(runs) == {str(p) for p in Path(parent).glob("*")}


def write_report(res: dict, out_dir: str | Path, *, name: str = "report", command: str = "") -> list[Path]:
    """Write NAME.md, NAME.json and the figures into ``out_dir`` (all or none: ``fileio.write_files``); figures
    of an earlier report of the same name that this one does not have (e.g. costs without --hw) are removed,
    so the folder holds one report."""
    check_report_name(name)
    out = Path(out_dir)
    lines = [f"# Training report: {', '.join(sorted({t['net'] for t in res['table']}))}", ""]
    if command:
        runs = res["runs"]
        parent = str(Path(runs[0]).parent) if runs and len({str(Path(r).parent) for r in runs}) == 1 else None
        if parent and " ".join(runs) in command and _is_whole_folder(parent, runs):
            command = command.replace(" ".join(runs), f"{parent}/*")   # the shell's expansion of PARENT/*
        where = (f"{len(runs)} run directories in {parent}: {', '.join(Path(r).name for r in runs)}" if parent
                 else ", ".join(runs))
        lines += [f"Command: `{command}`  ", f"Runs: {where}", ""]
    lines += ["| method | runs | epochs | test acc (mean ± std) | wall s (mean) | firing rate per layer |",
              "|---|---|---|---|---|---|"]
    for t in res["table"]:
        rates = ", ".join(f"{k} {v:.3f}" for k, v in t["firing_rates"].items()) or "–"
        lines.append(f"| `{t['method']}` | {t['runs']} | {t['epochs']} | {100 * t['test_acc_mean']:.2f} ± "
                     f"{100 * t['test_acc_std']:.2f}% | {t['wall_s_mean']:.1f} | {rates} |")
    if res["costs"]:
        lines += ["", (f"Training cost per sample on `{res['hw']}` (neuroplast/chip/cost.py; chip figures and their "
                       "sources in hardware_models/):"), "",
                  "| method | forward SynOps | feedback ops | learning memory (entries) | energy µJ |", "|---|---|---|---|---|"]
        for m, c in res["costs"].items():
            lines.append(f"| `{m}` | {c['synops_forward']:.4g} | {c['feedback_ops']:.4g} | {c['learning_memory']} | "
                         f"{c['energy_uj_per_sample']:.4g} |")
        sources = sorted({c["activity"] for c in res["costs"].values()})
        lines += ["", "Activity: " + "; ".join(sources) + "."]
    for m, note in res.get("cost_notes", {}).items():
        lines += ["", f"No training cost for `{m}` on `{res['hw']}`: {note}"]
    if res.get("gradients"):
        g0 = res["gradients"][0]
        lines += ["", (f"Gradient variance of each method's own estimate at the trained weights (first {g0['batches']} "
                       "training mini-batches; variance (1/(N·D)) Σ‖g_n − ḡ‖², relative variance (1/N) Σ‖g_n − ḡ‖²/‖ḡ‖², "
                       "cosine to BPTT on the same batch; mean over runs):"), "",
                  "| method | layer | variance | rel. variance | cosine to BPTT |", "|---|---|---|---|---|",
                  *(f"| `{g['method']}` | {g['layer']} | {g['variance']:.3g} | {g['rel_variance']:.3g} | {g['cosine']:.3f} |"
                    for g in res["gradients"])]
    figs = [("curves", _plot_curves), ("rates", _plot_rates)]
    if res["costs"]:
        figs.append(("costs", _plot_costs))
    if res.get("gradients"):
        figs.append(("gradients", _plot_gradients))
    if res.get("raster"):
        figs.append(("raster", _plot_raster))
    lines += ["", *(f"![{what}]({name}_{what}.png)" for what, _ in figs), ""]
    paths = write_files(out, {f"{name}.md": lambda p: atomic_write_text(p, "\n".join(lines)),
                              f"{name}.json": lambda p: atomic_write_json(p, res),
                              **{f"{name}_{what}.png": partial(plot, res) for what, plot in figs}})   # all or nothing
    for what in set(FIGURES) - {what for what, _ in figs}:
        (out / f"{name}_{what}.png").unlink(missing_ok=True)
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"), binary=True)
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
    fig.suptitle("mean over the runs of each method", fontsize=10)
    fig.tight_layout()
    fig.legend(*a1.get_legend_handles_labels(), fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
               title="method")          # outside the axes: it never hides a curve
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
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method")
    fig.tight_layout()
    return _save(fig, path)


def _grouped_bars(ax, labels: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(labels))], vals, width=width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=20, ha="right")


def _plot_costs(res: dict, path: Path) -> Path:
    """Three panels per method: SynOps (forward, feedback), learning memory, energy; log scales."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = list(res["costs"])
    c = res["costs"]
    fig, axes = plt.subplots(1, 3, figsize=(max(11, 1.6 * len(methods) * 3), 4.2))
    _grouped_bars(axes[0], methods, {"forward SynOps": [c[m]["synops_forward"] for m in methods],
                                     "feedback ops": [c[m]["feedback_ops"] for m in methods]})
    axes[0].set_ylabel("operations per training sample")
    axes[1].bar(methods, [c[m]["learning_memory"] for m in methods], color="tab:green")
    axes[1].set_ylabel("learning memory (entries)")
    axes[2].bar(methods, [c[m]["energy_uj_per_sample"] for m in methods], color="tab:red")
    axes[2].set_ylabel("energy per training sample (µJ)")
    for ax, title in zip(axes, ("synaptic and feedback ops", "learning state", "energy"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("method")
        ax.set_yscale("symlog" if any(p.get_height() <= 0 for p in ax.patches) else "log")
        if ax is not axes[0]:
            ax.tick_params(axis="x", labelrotation=20)
    lo, hi = axes[0].get_ylim()
    axes[0].set_ylim(lo, hi * 4)          # room for the legend above the bars
    axes[0].legend(fontsize=8, loc="upper left", ncol=2)
    fig.suptitle(f"training cost per sample on {res['hw']} (neuroplast/chip/cost.py)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _plot_gradients(res: dict, path: Path) -> Path:
    """Relative gradient variance and cosine to BPTT per layer, one bar per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = res["gradients"]
    layers, methods = list(dict.fromkeys(r["layer"] for r in rows)), list(dict.fromkeys(r["method"] for r in rows))
    val = {(r["method"], r["layer"]): r for r in rows}
    fig, axes = plt.subplots(2, 1, figsize=(min(14, max(7, 0.45 * len(layers) * len(methods) + 2)), 7), sharex=True)
    for ax, key, label in ((axes[0], "rel_variance", "relative variance ‖g − ḡ‖²/‖ḡ‖² (log)"),
                           (axes[1], "cosine", "cosine to the BPTT gradient")):
        _grouped_bars(ax, layers, {m: [val[m, lay][key] if (m, lay) in val else float("nan") for lay in layers]
                                   for m in methods})
        ax.set_ylabel(label, fontsize=9)
    axes[1].set_xlabel("layer")
    from .probe import log_y_if_positive
    log_y_if_positive(axes[0])
    axes[1].set_ylim(-1.05, 1.05)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method")
    axes[1].axhline(0, color="grey", lw=0.8)
    fig.suptitle(f"gradient estimate at the trained weights ({rows[0]['batches']} mini-batches, mean over runs)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _plot_raster(res: dict, path: Path) -> Path:
    """One panel per spiking layer: a dot per (time step, neuron) spike of one test sample."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    r = res["raster"]
    layers = list(r["layers"])
    T = r["time_steps"]
    # neurons along x, time steps along y: with few steps every step is a readable row of ticks
    fig, axes = plt.subplots(len(layers), 1, figsize=(9, 0.9 + (0.3 * T + 0.9) * len(layers)), squeeze=False)
    from matplotlib.ticker import MaxNLocator
    for ax, layer in zip(axes[:, 0], layers, strict=True):
        pts = r["layers"][layer]
        ax.scatter([p[1] for p in pts], [p[0] for p in pts], marker="|", s=60, linewidths=0.6, color="black")
        ax.set_xlim(-0.5, r["neurons"][layer] - 0.5)
        ax.set_ylim(T - 0.5, -0.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("time step")
        ax.set_xlabel(f"{layer} neuron index")
        ax.set_title(f"{layer}: {len(pts)} spikes in {T} steps", fontsize=9)
    fig.suptitle(f"spike raster, test sample {r['sample']} (label {r['label']}, predicted {r['predicted']}) of "
                 f"{Path(r['run']).name}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
