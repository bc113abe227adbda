"""Meta-training a ``CoordinateLSTM`` on unrolled optimizee trajectories (Andrychowicz et al. 2016).

For a sampled optimizee (``meta_config.ProblemSampler``: fresh initialisation, width and init scale
drawn from the config) the learned optimizer runs up to ``horizon`` steps in segments of
K = ``unroll`` steps; each segment's meta-gradient (``meta_grad``: truncated BPTT or PES, of the
weighted segment loss (1/K) Σ_k w_t·ℓ(L(θ_t))) takes an Adam step on the LSTM weights φ (the
learnable log step size gets its own, larger learning rate) with the meta-gradient's norm clipped.
The horizon grows linearly from ``horizon_start`` to ``horizon`` over the first half of training
(curriculum). A non-finite optimizee is dropped and a new one sampled; a non-finite meta-loss or
meta-gradient restores the last good LSTM and is reported. Every ``eval_every`` iterations the
optimizer runs on held-out problem seeds; the checkpoint with the lowest mean log-loss over
``eval_horizons`` is kept as ``best.pt``; ``last.pt`` makes training resumable.

``last.pt`` (written atomically at every evaluation and every ``save_every_s``) holds everything the
continuation depends on, so that a run interrupted after it and resumed ends bit for bit where the
uninterrupted run ends: the LSTM, Adam's state, the counters (iteration, next problem seed,
restores, best score, history, wall time), the last good LSTM and Adam state (what a NaN restores),
the PES generator, torch's global generator, and the optimizee in progress — its seed and step, θ,
the LSTM state of its coordinates and the meta-loss's L_0 (truncated BPTT) or every PES particle's
θ, LSTM state, L_0 and accumulated perturbation ξ — with the problem's own generator, cached
mini-batch and learning-rule state (``state_dict`` of the problem). For a large optimizee this is
most of the file: θ and ~85 floats of LSTM state per coordinate, per PES particle. The curriculum's
horizon is a function of the iteration and ``meta_iters``: resuming with another ``meta_iters``
(allowed) changes it from there on.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import MetaFolderError, TrainingDiverged
from ..fileio import atomic_write_json, atomic_write_text, check_output_dir, json_finite
from ..runs import META_FILES  # a foreign file in a meta folder is left alone, also by --overwrite
from .learned import load_checkpoint, save_checkpoint
from .lstm import CoordinateLSTM, detach_state
from .meta_config import META_GRADS, WEIGHTS, MetaConfig, ProblemSampler
from .meta_grad import _meta_optimizer, _segment_loss, pes_segment

__all__ = ["EVAL_SEED0", "MAX_RESTORE_STREAK", "META_GRADS", "RESUMABLE", "RESUME_VERSION", "WEIGHTS", "MetaConfig",
           "ProblemSampler", "evaluate", "learned_stepper", "meta_train", "pes_segment", "run_trajectory",
           "torch_stepper"]

EVAL_SEED0 = 1_000_000  # held-out problem seeds start here; training seeds count up from cfg.seed


def run_trajectory(problem, step_fn, steps: int, record: list[int] | None = None) -> dict[int, float]:
    """Optimise ``problem`` for ``steps`` steps with ``step_fn(theta, g) -> theta`` (no meta-graph);
    returns eval losses at the steps in ``record`` (and at ``steps``); inf once θ is non-finite."""
    theta, out = problem.init(), {}
    marks = set(record or []) | {steps}
    for t in range(steps):
        theta = theta.detach().requires_grad_(True)
        loss = problem.loss(theta, t)
        g = problem.grad(theta, loss, t)
        with torch.no_grad():
            theta = step_fn(theta.detach(), g)
        if not torch.isfinite(theta).all():
            return {m: math.inf for m in marks}
        if t + 1 in marks:
            out[t + 1] = problem.eval_loss(theta)
    return out


def learned_stepper(model: CoordinateLSTM, n: int):
    """The LSTM as a ``step_fn`` for an ``n``-coordinate optimizee (its state carried from step to step)."""
    state = model.init_state(n)

    def step(theta, g):
        nonlocal state
        upd, state = model.step(g, state)
        return theta + upd
    return step


def torch_stepper(make_opt, n: int):
    """``make_opt([param]) -> torch.optim.Optimizer`` as a ``step_fn`` (for baselines)."""
    p = torch.nn.Parameter(torch.zeros(n))
    opt = make_opt([p])

    def step(theta, g):
        p.data.copy_(theta)
        p.grad = g.clone()
        opt.step()
        return p.data.clone()
    return step


def evaluate(model: CoordinateLSTM, sampler: ProblemSampler, cfg: MetaConfig) -> dict:
    """Mean eval loss at each horizon over the held-out seeds, and the score (mean log-loss)."""
    hs = sorted(cfg.eval_horizons)
    losses = {h: [] for h in hs}
    with torch.no_grad():
        model_eval = copy.deepcopy(model).requires_grad_(False)
    for i in range(cfg.eval_seeds):
        problem = sampler(EVAL_SEED0 + i)
        res = run_trajectory(problem, learned_stepper(model_eval, problem.n), hs[-1], hs)
        for h in hs:
            losses[h].append(res[h])
    mean = {h: sum(v) / len(v) for h, v in losses.items()}
    logs = [math.log(max(x, 1e-30)) if math.isfinite(x) else math.inf for v in losses.values() for x in v]
    return {"loss_at": {str(h): mean[h] for h in hs}, "score": sum(logs) / len(logs)}


#: settings a resumed meta-training may change; every other one must equal the checkpoint's
RESUMABLE = ("meta_iters", "eval_every", "save_every_s", "data_dir")
#: non-finite meta-losses in a row (each restoring the last good LSTM) after which meta-training stops
MAX_RESTORE_STREAK = 20
#: version of the ``resume`` entry of last.pt (the state besides the LSTM that an exact continuation needs)
RESUME_VERSION = 1


def _check_resume(cfg: MetaConfig, blob: dict, out: Path) -> None:
    """UserError naming the settings in which ``cfg`` differs from the checkpoint it would continue."""
    old = (blob.get("meta") or {}).get("config") or {}
    new = asdict(cfg)
    diff = [k for k in new if k not in RESUMABLE and k in old and old[k] != new[k]]
    if diff:
        raise MetaFolderError(f"--resume: {out} was meta-trained with " + ", ".join(f"{k} = {old[k]!r}" for k in diff)
                        + "; this run asks for " + ", ".join(f"{k} = {new[k]!r}" for k in diff)
                        + f". Give the same settings (only {', '.join(RESUMABLE)} may change) or start over "
                        "with --overwrite")


def _resume_state(blob: dict, last: Path) -> dict | None:
    """The ``resume`` entry of a last.pt; None, with a warning, for one written before it existed."""
    saved = blob.get("resume")
    if saved is None:
        warnings.warn(f"--resume: {last} was written by an older neuroplast that saved only the LSTM, Adam's "
                      "state and the counters, not the optimizee in progress and the random generators; "
                      f"continuing from iteration {blob['iteration']} with a freshly sampled optimizee, so the "
                      "result will not be identical to an uninterrupted run. For an exactly reproducible run "
                      "start over with --overwrite", UserWarning,
                      stacklevel=4)   # _resume_state <- _MetaRun.load <- meta_train <- its caller
        return None
    if saved.get("version") != RESUME_VERSION:
        raise MetaFolderError(f"--resume: {last} holds resume state of version {saved.get('version')!r}; this neuroplast "
                        f"continues version {RESUME_VERSION}. Resume it with the neuroplast that wrote it or start "
                        "over with --overwrite")
    return saved


def _horizon(cfg: MetaConfig, it: int) -> int:
    """The curriculum: ``horizon_start`` -> ``horizon`` linearly over the first half of ``meta_iters``."""
    frac = min(1.0, it / max(1, cfg.meta_iters // 2))
    return cfg.horizon if not cfg.horizon_start else int(cfg.horizon_start + frac * (cfg.horizon - cfg.horizon_start))


class _MetaRun:
    """One meta-training run: the LSTM, Adam and the counters (what every checkpoint holds), the last
    good LSTM and Adam state, the PES generator, the clocks and the optimizee in progress."""

    def __init__(self, cfg: MetaConfig, out: Path, sampler: ProblemSampler, progress: bool):
        self.cfg, self.out, self.last, self.sampler, self.progress = cfg, out, out / "last.pt", sampler, progress
        self.model = CoordinateLSTM(cfg.variant, hidden=cfg.hidden, step_input=cfg.step_input, init_lr=cfg.init_lr,
                                    relative=cfg.relative, learn_beta1=cfg.learn_beta1)
        self.opt = _meta_optimizer(self.model, cfg)
        self.it, self.best_score, self.history, self.restores = 0, math.inf, [], 0
        self.next_seed = cfg.seed * 100_003
        self.pes = cfg.meta_grad == "pes"
        # the optimizee in progress: problem (of seed problem_seed) at step t; θ, LSTM state and L_0 (truncated
        # BPTT) or the PES particles
        self.problem, self.problem_seed, self.t, self.theta, self.state, self.l0 = None, None, 0, None, None, None
        self.particles = []
        self.streak = 0           # non-finite meta-losses in a row (MAX_RESTORE_STREAK)

    def load(self) -> dict | None:
        """Continue last.pt: its LSTM, Adam state and counters; returns its ``resume`` entry (or None)."""
        model, blob = load_checkpoint(self.last)
        missing = [k for k in ("opt", "iteration", "best_score", "restores", "next_seed", "history") if k not in blob]
        if missing:
            raise MetaFolderError(f"--resume: {self.last} is a learned optimizer without meta-training state (no "
                            f"{missing[0]}), not a last.pt of meta-train; start over with --overwrite")
        _check_resume(self.cfg, blob, self.out)
        saved = _resume_state(blob, self.last)
        self.model, self.opt = model, _meta_optimizer(model, self.cfg)
        self.opt.load_state_dict(blob["opt"])
        self.it, self.best_score, self.restores = blob["iteration"], blob["best_score"], blob["restores"]
        self.next_seed, self.history = blob["next_seed"], blob["history"]
        return saved

    def start(self, saved: dict | None) -> None:
        """Write config.json; set the last good state, the generators, the optimizee in progress and the clocks."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", asdict(cfg))
        self.good = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict()))
        self.pes_gen = torch.Generator().manual_seed(cfg.seed * 7_919 + self.it)
        wall_before = 0.0     # wall time of the run before this resume (history's wall_s counts on from it)
        if saved is not None:
            self.good = (saved["good_model"], saved["good_opt"])
            self.pes_gen.set_state(saved["pes_gen"])
            wall_before = saved["wall_s"]
            traj = saved["trajectory"]
            if traj is not None:
                self.problem_seed, self.t, self.l0 = traj["seed"], traj["t"], traj["l0"]
                self.problem = self.sampler(self.problem_seed)
                self.problem.load_state_dict(traj["problem"])
                self.theta, self.state, self.particles = traj["theta"], traj["state"], traj["particles"]
            torch.set_rng_state(saved["torch_rng"])   # last: building the problem may draw from it
        self.t0 = time.perf_counter() - wall_before
        self.saved_at = time.perf_counter()
        self.bar = tqdm(total=cfg.meta_iters, initial=self.it, desc="meta-train",
                        disable=None if self.progress else True, file=sys.stderr)

    def resume_state(self) -> dict:
        """What last.pt needs besides the LSTM, Adam and the counters to continue exactly (module docstring)."""
        traj = None
        if self.problem is not None:
            pes = self.pes
            traj = {"seed": self.problem_seed, "t": self.t, "l0": self.l0, "problem": self.problem.state_dict(),
                    "theta": None if pes else self.theta.detach(), "state": None if pes else detach_state(self.state),
                    "particles": [{"theta": p["theta"].detach(), "state": detach_state(p["state"]), "l0": p["l0"],
                                   "xi": p["xi"], "rule": p.get("rule")} for p in self.particles]}
        return {"version": RESUME_VERSION, "good_model": self.good[0], "good_opt": self.good[1],
                "pes_gen": self.pes_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "wall_s": time.perf_counter() - self.t0, "trajectory": traj}

    def checkpoint(self, path: Path, resumable: bool = False) -> None:
        extra = {"resume": self.resume_state()} if resumable else {}
        save_checkpoint(path, self.model, meta={"iteration": self.it, "config": asdict(self.cfg)},
                        opt=self.opt.state_dict(), iteration=self.it, best_score=self.best_score,
                        restores=self.restores, next_seed=self.next_seed, history=self.history, **extra)

    def record_eval(self) -> float:
        """Evaluate on the held-out seeds, append to history.jsonl, keep best.pt; returns the score."""
        cfg, model = self.cfg, self.model
        ev = evaluate(model, self.sampler, cfg)
        row = {"iteration": self.it, **ev, "step_size": float(model.log_scale.detach().exp()),
               "beta1": model.beta1_value(), "wall_s": time.perf_counter() - self.t0}
        self.history.append(row)
        atomic_write_text(self.out / "history.jsonl", "".join(json.dumps(json_finite(r)) + "\n" for r in self.history))
        if self.progress:   # a line per evaluation also when stderr is no terminal (runs in the background)
            held = ", ".join(f"@{h} {v:.4f}" for h, v in ev["loss_at"].items())
            tqdm.write(f"meta-train: iteration {self.it}/{cfg.meta_iters}: held-out loss {held}; step size "
                       f"{row['step_size']:.4g}, β1 {row['beta1']:.3f}; {row['wall_s']:.0f} s", file=sys.stderr)
        if ev["score"] < self.best_score:
            self.best_score = ev["score"]
            self.checkpoint(self.out / "best.pt")
        return ev["score"]

    def iteration(self) -> None:
        """One outer iteration: a segment's meta-gradient and an Adam step on φ, or a restore if non-finite."""
        cfg = self.cfg
        horizon = _horizon(cfg, self.it)
        if self.problem is None or self.t >= horizon:
            self.new_problem()
        self.opt.zero_grad(set_to_none=True)
        meta_loss, finite = self.pes_grad(horizon) if self.pes else self.bptt_grad(horizon)
        if finite:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
            finite = math.isfinite(float(norm))
        if not finite:
            self.restore()
            return
        self.opt.step()
        self.it += 1
        self.streak = 0
        self.bar.update(1)
        self.bar.set_postfix(meta_loss=f"{float(meta_loss.detach()):.4g}",
                             lr=f"{float(self.model.log_scale.detach().exp()):.3g}")
        self.save()

    def new_problem(self) -> None:
        """Sample the next training optimizee: θ_0, fresh LSTM state (and PES particles) at step 0."""
        seed, model = self.next_seed, self.model
        problem = self.problem = self.sampler(seed)
        self.problem_seed, self.next_seed = seed, seed + 1
        self.theta, self.state, self.t, self.l0 = problem.init(), model.init_state(problem.n), 0, None
        self.particles = [{"theta": self.theta, "state": model.init_state(problem.n), "l0": None,
                           "xi": torch.zeros(sum(p.numel() for p in model.parameters()))}
                          for _ in range(self.cfg.pes_particles if self.pes else 0)]

    def bptt_grad(self, horizon: int) -> tuple[torch.Tensor, bool]:
        """Truncated BPTT through the next segment: the meta-gradient in the LSTM's .grad (if finite)."""
        theta = self.theta.detach().requires_grad_(True)
        state = detach_state(self.state)
        meta_loss, self.theta, self.state, self.l0 = _segment_loss(self.model, self.problem, theta, state, self.t,
                                                                   self.l0, horizon, self.cfg)
        self.t += self.cfg.unroll
        finite = torch.isfinite(meta_loss).item() and torch.isfinite(self.theta).all().item()
        if finite:
            meta_loss.backward()
        return meta_loss, finite

    def pes_grad(self, horizon: int) -> tuple[torch.Tensor, bool]:
        """PES over the next segment: the estimate (if finite) in the LSTM's .grad."""
        meta_loss, grad = pes_segment(self.model, self.problem, self.particles, self.t, horizon, self.cfg,
                                      self.pes_gen)
        self.t += self.cfg.unroll
        finite = math.isfinite(meta_loss) and bool(torch.isfinite(grad).all())
        if finite:
            params = list(self.model.parameters())
            for p, g in zip(params, grad.split([p.numel() for p in params])):
                p.grad = g.view_as(p).to(p.dtype).clone()
        return torch.tensor(meta_loss), finite

    def restore(self) -> None:
        """Non-finite meta-loss or meta-gradient: back to the last good LSTM and Adam state, drop the optimizee."""
        self.restores += 1
        self.streak += 1
        if self.streak > MAX_RESTORE_STREAK:
            raise TrainingDiverged(
                f"meta-training diverged: {self.streak} non-finite meta-losses in a row at iteration {self.it}, each "
                f"from the last good LSTM; lower --meta-lr or --scale-lr (now {self.cfg.meta_lr:g}, "
                f"{self.cfg.scale_lr:g})" + (f" or --pes-sigma (now {self.cfg.pes_sigma:g})" if self.pes else ""))
        self.model.load_state_dict(self.good[0])
        # Adam adopts the tensors it is given and steps them in place
        self.opt.load_state_dict(copy.deepcopy(self.good[1]))
        tqdm.write(f"meta-train: non-finite meta-loss at iteration {self.it}; restored the last good LSTM "
                   f"({self.restores} restore(s) so far) and sampled a new optimizee", file=sys.stderr)
        self.problem = None

    def save(self) -> None:
        """After a meta-step: evaluate and write last.pt every ``eval_every`` iterations (and at the end), else
        write last.pt if ``save_every_s`` have passed since it was last written."""
        it, cfg = self.it, self.cfg
        if it % cfg.eval_every == 0 or it == cfg.meta_iters:
            if math.isfinite(self.record_eval()):   # an LSTM whose held-out loss diverges is no good state to restore
                self.good = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict()))
            self.checkpoint(self.last, resumable=True)
            self.saved_at = time.perf_counter()
        elif time.perf_counter() - self.saved_at > cfg.save_every_s:   # resumable between evaluations too
            self.checkpoint(self.last, resumable=True)
            self.saved_at = time.perf_counter()
            tqdm.write(f"meta-train: iteration {it}, {self.saved_at - self.t0:.0f} s, saved {self.last}",
                       file=sys.stderr)

    def finish(self) -> dict:
        """Close the progress bar, make sure best.pt exists, write summary.json."""
        self.bar.close()
        if not (self.out / "best.pt").exists():
            self.checkpoint(self.out / "best.pt")
        summary = {"out": str(self.out), "iterations": self.it, "best_score": self.best_score,
                   "restores": self.restores, "history": self.history, "wall_s": time.perf_counter() - self.t0,
                   "config": asdict(self.cfg)}
        atomic_write_json(self.out / "summary.json", json_finite(summary))
        return summary


def meta_train(cfg: MetaConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Meta-train; writes ``out``/{config.json, history.jsonl, last.pt, best.pt, summary.json}. ``out`` is new or
    empty, or a meta-training folder to continue (``resume``) or to start over in (``overwrite``: its files are
    removed first); a run that stops before its first last.pt removes what it wrote."""
    cfg.validate()
    out = check_output_dir(out, "meta-training folder")
    _check_out(out, resume, overwrite)
    last = out / "last.pt"
    torch.manual_seed(cfg.seed)
    sampler = ProblemSampler(cfg)
    sampler.check()
    run = _MetaRun(cfg, out, sampler, progress)
    saved = run.load() if resume else None
    created = [p for p in (out, *out.parents) if not p.exists()]   # folders this run makes, deepest first
    if overwrite:
        _remove_meta_files(out)
    try:
        run.start(saved)
        if run.it == 0 and not run.history:
            run.record_eval()   # the untrained optimizer (Adam-like at init_lr for the adam variant) is a candidate too
        while run.it < cfg.meta_iters:
            run.iteration()
        return run.finish()
    except BaseException:
        # a failure (or Ctrl-C) before the first last.pt leaves nothing to resume: take back what this run wrote;
        # once last.pt exists the folder stays, to be continued with --resume
        if not resume and not last.exists():
            _remove_meta_files(out)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise


def _remove_meta_files(out: Path) -> None:
    for name in META_FILES:
        (out / name).unlink(missing_ok=True)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """UserError unless ``out`` may take this run: a new or empty folder (not with --resume), or a meta-training
    folder (its config.json has meta_iters) to continue (--resume, its last.pt) or to start over in (--overwrite).
    A training run or another non-empty folder is never written into."""
    if resume and overwrite:
        raise MetaFolderError("--resume and --overwrite exclude each other: --resume continues DIR/last.pt, --overwrite "
                        "starts over; give one")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise MetaFolderError(f"--resume: {out} holds no meta-training run to continue; drop --resume to start one")
        return
    try:
        values = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        values = None
    if not (isinstance(values, dict) and "meta_iters" in values):
        kind = "a training run of `neuroplast train`" if isinstance(values, dict) and "epochs" in values else \
            "a non-empty folder"
        raise MetaFolderError(f"{out} is {kind}, not a meta-training folder; meta-train writes only into a new or empty "
                        "folder or into a meta-training folder (never into others, also not with --overwrite): give "
                        "another folder")
    if resume and not (out / "last.pt").is_file():
        raise MetaFolderError(f"--resume: {out} has no last.pt (meta-training stopped before its first checkpoint); "
                        "start over with --overwrite")
    if not (resume or overwrite):
        raise MetaFolderError(f"{out} already holds a meta-training run; pass --resume to continue it or --overwrite to "
                        "start over")
