"""Learned optimizer against tuned hand-designed ones on one target SNN (the founding project's
experiments: conv SNN trained with LocalZO gradients; transfer from MLPs, "linear"; meta-trained
on the validation split only, "V").

1. Sweep: every baseline (SGD, SGD+momentum 0.9, Adam, AdaGrad, RMSprop, Adam with a cosine
   schedule to 0) runs each learning rate of its grid for H steps on ``sweep_seeds`` problem
   seeds; the lowest smoothed training loss at H picks its learning rate.
2. Evaluation: each tuned baseline and each learned optimizer trains ``seeds`` fresh problems
   (seeds unseen by sweep and meta-training) for ``long``·H steps, recording the mini-batch loss
   at every step and test accuracy at ``eval_points`` points. Adam+cosine runs twice, annealed
   over H and over long·H, so that each horizon is compared against a schedule tuned to it.
3. Report: train loss (mean of the last 10% of steps before the mark) and test accuracy at H
   and long·H, mean ± std over seeds, plus curves.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import SpecError
from ..fileio import atomic_write, atomic_write_json, atomic_write_text
from ..limits import check_count
from ..spec import check_types
from .learned import load_checkpoint
from .meta import learned_stepper
from .problems import SNNProblem

BASELINES = {
    "sgd": lambda ps, lr: torch.optim.SGD(ps, lr=lr),
    "momentum": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
    "adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr),
    "adagrad": lambda ps, lr: torch.optim.Adagrad(ps, lr=lr),
    "rmsprop": lambda ps, lr: torch.optim.RMSprop(ps, lr=lr),
    "adam_cosine": lambda ps, lr: torch.optim.Adam(ps, lr=lr),
}
SWEEP_SEED0, EVAL_SEED0 = 3_000_000, 2_000_000


@dataclass
class BenchConfig:
    dataset: str = "mnist"
    data_dir: str | None = None
    val_fraction: float = 0.0    # held out of the training split (experiment "V" meta-trains on it)
    net: str = "1x28x28-32C3-AP2-64C3-AP2-100-FC"
    estimator: str = "localzo:m=2"
    method: str = "bptt"
    batch_size: int = 64
    time_steps: int = 4
    encoding: str = "direct"
    horizon: int = 200
    long: int = 5
    seeds: int = 5
    sweep_seeds: int = 1
    test_samples: int = 2000
    eval_points: int = 5
    sweep: dict[str, list[float]] = field(default_factory=lambda: {
        k: [1e-4 * 3 ** i for i in range(7)] for k in BASELINES})
    learned: dict[str, str] = field(default_factory=dict)   # label -> checkpoint

    @classmethod
    def from_dict(cls, values: dict) -> BenchConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(f"unknown bench option(s) {unknown}; valid: {sorted(known)}")
        check_types(values, cls, "[bench]")
        cfg = cls(**values)
        bad = sorted(set(cfg.sweep) - set(BASELINES))
        if bad:
            raise SpecError(f"unknown baseline(s) {bad} in [bench.sweep]; valid: {', '.join(BASELINES)}")
        for name, lrs in cfg.sweep.items():
            if not lrs:
                raise SpecError(f"[bench.sweep] {name} is empty; give its learning rates, e.g. {name} = [0.01, 0.1]")
            if not all(math.isfinite(lr) and lr > 0 for lr in lrs):
                raise SpecError(f"[bench.sweep] {name} = {lrs}: learning rates must be finite numbers > 0")
        for name in ("horizon", "long", "seeds", "sweep_seeds", "batch_size", "time_steps", "test_samples",
                     "eval_points"):
            check_count(f"[bench] {name}", getattr(cfg, name))
        if not 0.0 <= cfg.val_fraction < 1.0:
            raise SpecError(f"[bench] val_fraction must be in [0, 1), got {cfg.val_fraction}")
        return cfg


def _curve(problem: SNNProblem, step_fn, steps: int, acc_at: list[int], test_samples: int) -> dict:
    theta, losses, acc = problem.init(), [], {}
    for t in range(steps):
        theta = theta.detach().requires_grad_(True)
        loss = problem.loss(theta, t)
        g = problem.grad(theta, loss, t)
        losses.append(float(loss.detach()))
        with torch.no_grad():
            theta = step_fn(theta.detach(), g)
        if not (math.isfinite(losses[-1]) and torch.isfinite(theta).all()):
            losses += [math.inf] * (steps - t - 1)
            break
        if t + 1 in acc_at:
            acc[t + 1] = problem.accuracy(theta, "test", test_samples)
    return {"loss": losses, "test_acc": {str(k): v for k, v in acc.items()}}


def _baseline_stepper(name: str, lr: float, n: int, steps: int):
    p = torch.nn.Parameter(torch.zeros(n))
    opt = BASELINES[name]([p], lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if name == "adam_cosine" else None

    def step(theta, g):
        p.data.copy_(theta)
        p.grad = g
        opt.step()
        if sched is not None:
            sched.step()
        return p.data.clone()
    return step


def _cached(cache_dir: Path | None, key: dict, run):
    """Curves of baselines are the same for every task on the same target, and a learned optimizer's
    are fixed by its checkpoint's bytes: keep them on disk (a stopped bench resumes seed by seed)."""
    if cache_dir is None:
        return run()
    path = cache_dir / (hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20] + ".json")
    if path.is_file():
        try:
            return json.loads(path.read_text())["curve"]
        except (ValueError, KeyError):
            pass  # a broken cache entry is recomputed
    curve = run()
    atomic_write_json(path, {"key": key, "curve": curve})
    return curve


def smoothed(losses: list[float], at: int) -> float:
    """Mean mini-batch loss over the last 10% of the steps up to ``at``."""
    w = max(1, at // 10)
    window = losses[at - w:at]
    return sum(window) / len(window) if window else math.inf


def run_bench(cfg: BenchConfig, *, progress: bool = True, cache_dir: str | Path | None = None) -> dict:
    from ..data import load_dataset, normalizes
    models = {label: load_checkpoint(path) for label, path in cfg.learned.items()}   # a bad one fails before the sweeps
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, time_steps=cfg.time_steps,
                        normalize=normalizes(cfg.encoding))

    def problem(seed):
        return SNNProblem(data, cfg.net, seed=seed, estimator=cfg.estimator, method=cfg.method,
                          batch_size=cfg.batch_size, time_steps=cfg.time_steps, encoding=cfg.encoding)
    H, long_h = cfg.horizon, cfg.horizon * cfg.long
    cache = Path(cache_dir) if cache_dir is not None else None
    target = {k: v for k, v in asdict(cfg).items() if k not in ("learned", "sweep", "seeds", "sweep_seeds", "data_dir")}
    n_runs = sum(len(v) for v in cfg.sweep.values()) * cfg.sweep_seeds
    n_runs += (len(cfg.sweep) + int("adam_cosine" in cfg.sweep) + len(cfg.learned)) * cfg.seeds
    bar = tqdm(total=n_runs, desc="meta-bench runs", disable=None if progress else True, file=sys.stderr)
    sweep, tuned = {}, {}
    for name, lrs in cfg.sweep.items():
        sweep[name] = {}
        for lr in lrs:
            vals = []
            for s in range(cfg.sweep_seeds):
                curve = _cached(cache, {**target, "opt": name, "lr": lr, "seed": SWEEP_SEED0 + s, "steps": H, "sweep": 1},
                                lambda s=s, name=name, lr=lr: _curve((pb := problem(SWEEP_SEED0 + s)),
                                                                     _baseline_stepper(name, lr, pb.n, H), H, [], 0))
                vals.append(smoothed(curve["loss"], H))
                bar.update(1)
            sweep[name][str(lr)] = sum(vals) / len(vals)
        tuned[name] = min(lrs, key=lambda lr: sweep[name][str(lr)])
    marks = sorted({round(long_h * (i + 1) / cfg.eval_points) for i in range(cfg.eval_points)} | {H, long_h})
    runs: dict[str, dict] = {}

    def evaluate(label, make_step, steps, key=None):
        runs[label] = {"seeds": []}
        for s in range(cfg.seeds):
            def run(s=s):
                pb = problem(EVAL_SEED0 + s)
                return _curve(pb, make_step(pb.n), steps, [m for m in marks if m <= steps], cfg.test_samples)
            runs[label]["seeds"].append(_cached(cache if key else None,
                                                {**target, **(key or {}), "seed": EVAL_SEED0 + s, "marks": marks}, run))
            bar.update(1)
    for name, lr in tuned.items():
        if name == "adam_cosine":
            evaluate(f"adam_cosine@{H}", lambda n, lr=lr: _baseline_stepper("adam_cosine", lr, n, H), H,
                     {"opt": name, "lr": lr, "steps": H})
        evaluate(name if name != "adam_cosine" else f"adam_cosine@{long_h}",
                 lambda n, name=name, lr=lr: _baseline_stepper(name, lr, n, long_h), long_h,
                 {"opt": name, "lr": lr, "steps": long_h})
    learned = {}
    for label, path in cfg.learned.items():
        model, blob = models[label]
        model.requires_grad_(False)
        learned[label] = learned_summary(path, model, blob)
        digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
        evaluate(label, lambda n, model=model: learned_stepper(model, n), long_h,
                 {"learned_sha1": digest, "steps": long_h})
    bar.close()
    table = [{"optimizer": label, "lr": tuned.get(label.split("@")[0]), **table_cells(r["seeds"], (H, long_h))}
             for label, r in runs.items()]
    return {"config": asdict(cfg), "horizon": H, "long_horizon": long_h, "sweep": sweep, "tuned_lr": tuned,
            "table": table, "runs": runs, "marks": marks, "learned": learned}


def learned_summary(path, model, blob: dict) -> dict:
    """What a learned row was meta-trained on and how: from its checkpoint (config, held-out history)."""
    meta_cfg = (blob.get("meta") or {}).get("config") or {}
    keys = ("dataset", "split", "nets", "estimator", "method", "meta_grad", "pes_particles", "unroll", "horizon",
            "meta_iters", "weights", "learn_beta1", "relative", "init_lr")
    return {"path": str(path), "selected_iteration": (blob.get("meta") or {}).get("iteration"),
            "step_size": float(model.log_scale.exp()), "beta1": model.beta1_value() if model.variant == "adam" else None,
            "meta_config": {k: meta_cfg[k] for k in keys if k in meta_cfg},
            "history": [{k: r.get(k) for k in ("iteration", "loss_at", "step_size", "beta1", "wall_s")}
                        for r in blob.get("history") or []]}


def table_cells(seeds: list[dict], marks) -> dict:
    """Mean ± std over the evaluation seeds at each mark of the smoothed train loss and the test accuracy,
    over the seeds that had not diverged by then, with ``diverged@mark`` = how many had (their loss is
    infinite and they have no accuracy: pooling them would crash the std or silently drop them)."""
    out = {}
    for mark in marks:
        losses = [smoothed(c["loss"], mark) for c in seeds if len(c["loss"]) >= mark]
        finite = [x for x in losses if math.isfinite(x)]
        out[f"loss@{mark}"] = _mean_std(finite)
        out[f"acc@{mark}"] = _mean_std([c["test_acc"][str(mark)] for c in seeds
                                        if str(mark) in c["test_acc"] and math.isfinite(c["test_acc"][str(mark)])])
        out[f"diverged@{mark}"] = len(losses) - len(finite)
    return out


def _mean_std(xs: list[float]) -> list[float] | None:
    if not xs:
        return None
    return [statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0]


def write_bench_report(res: dict, out_dir: str | Path, name: str, command: str, wall_s: float) -> list[Path]:
    out = Path(out_dir)
    H, L = res["horizon"], res["long_horizon"]
    cfg = res["config"]

    def fmt(ms, pct=False):
        if ms is None:
            return "–"
        return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}%" if pct else f"{ms[0]:.4f} ± {ms[1]:.4f}"
    lines = [f"# Learned optimizer vs tuned optimizers: `{name}`", "",
             f"Command: `{command}`  ", f"Target: {cfg['dataset']} `{cfg['net']}`, gradient estimate "
             f"`{cfg['method']}` with `{cfg['estimator']}`, batch {cfg['batch_size']}, T={cfg['time_steps']}; "
             f"meta-training horizon H = {H}, long horizon {L}; {cfg['seeds']} evaluation seeds; learning rates "
             f"tuned on {cfg['sweep_seeds']} other seed(s) at H; wall time {wall_s / 60:.1f} min.", "",
             f"| optimizer | lr | train loss @{H} | test acc @{H} | train loss @{L} | test acc @{L} |",
             "|---|---|---|---|---|---|"]
    def div(r, mark):
        n = r.get(f"diverged@{mark}", 0)
        return f" ({n} of {cfg['seeds']} seeds diverged)" if n else ""
    for r in res["table"]:
        lines.append(f"| `{r['optimizer']}` | {r['lr'] if r['lr'] is not None else 'learned'} | "
                     f"{fmt(r[f'loss@{H}'])}{div(r, H)} | {fmt(r[f'acc@{H}'], True)} | {fmt(r[f'loss@{L}'])}"
                     f"{div(r, L)} | {fmt(r[f'acc@{L}'], True)} |")
    lines += ["", "Train loss: mean mini-batch loss over the last 10% of steps before the mark. "
              "`adam_cosine@N`: Adam with its learning rate annealed to 0 over N steps.", "",
              "Learning-rate sweep (smoothed train loss at H):", ""]
    for name_, d in res["sweep"].items():
        lines.append(f"- `{name_}`: " + ", ".join(f"{lr}: {v:.4f}" for lr, v in d.items())
                     + f" → {res['tuned_lr'][name_]}")
    for label, info in (res.get("learned") or {}).items():
        mc = info["meta_config"]
        lines += ["", f"`{label}`: `{info['path']}`, the checkpoint of meta-iteration {info['selected_iteration']} "
                  f"(selected on held-out problem seeds); step size {info['step_size']:.4g}"
                  + (f", β₁ {info['beta1']:.3f}" if info["beta1"] is not None else "") + ". Meta-trained on "
                  f"{mc.get('dataset')} ({mc.get('split', 'train')} split) `{', '.join(mc.get('nets', []))}` with "
                  f"`{mc.get('estimator')}` ({mc.get('method')}), meta-gradient `{mc.get('meta_grad', 'bptt')}`"
                  + (f" ({mc.get('pes_particles')} particles)" if mc.get("meta_grad") == "pes" else "")
                  + f", K = {mc.get('unroll')}, horizon {mc.get('horizon')}, {mc.get('meta_iters')} meta-iterations "
                  f"planned, meta-loss `{mc.get('weights')}`.", ""]
        if info["history"]:
            hs = sorted(info["history"][0]["loss_at"], key=int)
            lines += ["| meta-iteration | " + " | ".join(f"held-out loss @{h}" for h in hs)
                      + " | step size | β₁ | wall s |", "|---" * (len(hs) + 4) + "|"]
            for r in info["history"]:
                b1 = f"{r['beta1']:.3f}" if r.get("beta1") is not None else "–"
                lines.append(f"| {r['iteration']} | " + " | ".join(f"{r['loss_at'][h]:.4f}" for h in hs)
                             + f" | {r['step_size']:.4g} | {b1} | {r['wall_s']:.0f} |")
    stem = name if name.startswith("meta_") else f"meta_{name}"
    lines += ["", f"![curves]({stem}.png)", ""]
    paths = [atomic_write_text(out / f"{stem}.md", "\n".join(lines)),
             atomic_write_json(out / f"{stem}.json", res), _plot(res, out / f"{stem}.png")]
    return paths


def _plot(res: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    learned = set(res["config"]["learned"])
    for label, r in res["runs"].items():
        n = max(len(c["loss"]) for c in r["seeds"])
        w = max(1, n // 50)
        curves = torch.tensor([c["loss"] for c in r["seeds"] if len(c["loss"]) == n])
        smooth = torch.nn.functional.avg_pool1d(curves.clamp(max=10).unsqueeze(1), w, w).squeeze(1)
        x = (torch.arange(smooth.shape[1]) + 1) * w
        style = {"color": "black", "lw": 2.4, "ls": "--", "zorder": 5} if label in learned else {"lw": 1.2}
        a1.plot(x, smooth.mean(0), label=label, **style)
        marks = sorted({int(k) for c in r["seeds"] for k in c["test_acc"]})
        accs = [100 * statistics.fmean(c["test_acc"][str(m)] for c in r["seeds"] if str(m) in c["test_acc"])
                for m in marks]
        a2.plot(marks, accs, marker="o", label=label, **style)
    for ax, title, ylabel in ((a1, "training loss (mini-batch, smoothed; mean over seeds)", "loss"),
                              (a2, "test accuracy (mean over seeds)", "test accuracy (%)")):
        ax.axvline(res["horizon"], color="grey", ls=":", lw=1)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    a1.set_yscale("log")
    a2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()

    def write(fh):
        fig.savefig(fh, format="png", dpi=110)
    atomic_write(path, write, binary=True)
    plt.close(fig)
    return path
