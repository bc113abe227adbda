"""Meta-training a ``CoordinateLSTM`` on unrolled optimizee trajectories (Andrychowicz et al. 2016).

For a sampled optimizee (fresh initialisation, width and init scale drawn from the config) the
learned optimizer runs up to ``horizon`` steps in segments of K = ``unroll`` steps. Per segment

    meta-loss = (1/K) Σ_{k=1..K} w_t · ℓ(L(θ_t)),      θ_{t+1} = θ_t + Δθ(φ; g_t),

with g_t the optimizee's gradient estimate (detached: second derivatives dropped), and truncated
BPTT through the segment into the LSTM weights φ; Adam on φ (the learnable log step size gets its
own, larger learning rate) with the meta-gradient's norm clipped. ``weights`` chooses w·ℓ:

    sum: L_t          normalized: L_t / L_0          late: (t/H)·L_t / L_0          log: log L_t

(L_0 the optimizee's initial loss, H the horizon; a plain sum is dominated by the early high-loss
phase). The horizon grows linearly from ``horizon_start`` to ``horizon`` over the first half of
training (curriculum). A non-finite optimizee is dropped and a new one sampled; a non-finite
meta-loss or meta-gradient restores the last good LSTM and is reported. Every ``eval_every``
iterations the optimizer runs on held-out problem seeds; the checkpoint with the lowest mean
log-loss over ``eval_horizons`` is kept as ``best.pt``; ``last.pt`` makes training resumable.

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

``meta_grad = "pes"`` replaces truncated BPTT by persistent evolution strategies (``pes_segment``):
``pes_particles`` perturbed copies of the LSTM each run the problem's trajectory, and the
accumulated perturbations make the estimate unbiased for the whole trajectory (truncated BPTT,
which ignores how φ shaped the state each segment starts from, drove the step size of a tuned
Adam start down: reports/meta_horizon_bias.md). Forward passes only, N× the optimizee steps.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..errors import SpecError, TrainingDiverged, UserError
from ..fileio import atomic_write_json, atomic_write_text, check_output_dir, json_finite
from ..spec import check_types
from .learned import load_checkpoint, save_checkpoint
from .lstm import VARIANTS, CoordinateLSTM, detach_state
from .problems import NoisyQuadratic, SNNProblem

WEIGHTS = ("sum", "normalized", "late", "log")
META_GRADS = ("bptt", "pes")
EVAL_SEED0 = 1_000_000  # held-out problem seeds start here; training seeds count up from cfg.seed


@dataclass
class MetaConfig:
    """What to meta-train on and how (TOML table ``[meta]`` of a task file, or CLI flags)."""

    problem: str = "snn"                       # snn | quadratic
    dataset: str = "digits"
    data_dir: str | None = None
    split: str = "train"                       # train | val (experiment "V": meta-train on validation only)
    val_fraction: float = 0.0
    nets: list[str] = field(default_factory=lambda: ["64-64-10"])
    init_gains: list[float] = field(default_factory=lambda: [1.0])
    estimator: str = "localzo:m=2"
    method: str = "bptt"                       # how g is estimated: bptt (via the estimator) | opzo | zo | dfa
    batch_size: int = 128
    time_steps: int = 4
    encoding: str = "direct"
    dim: int = 10                              # quadratic problems
    noise: float = 1.0
    variant: str = "adam"
    hidden: int = 20
    step_input: bool = True
    relative: bool = False                     # multipliers with geometric mean 1 (no global shrinking)
    learn_beta1: bool = False                  # learnable momentum β₁ of the Adam-like direction
    init_lr: float = 1e-3
    unroll: int = 20
    horizon: int = 200
    horizon_start: int = 0                     # 0: no curriculum
    meta_iters: int = 500
    meta_lr: float = 1e-3
    scale_lr: float = 1e-2
    clip: float = 1.0
    weights: str = "log"
    eval_every: int = 50
    eval_seeds: int = 4
    eval_horizons: list[int] = field(default_factory=list)   # default: [horizon]
    save_every_s: float = 600.0                # last.pt also every this many seconds (long CPU runs)
    meta_grad: str = "bptt"                    # bptt (truncated, through the unroll) | pes (persistent ES)
    pes_particles: int = 8                     # PES: antithetic particles per segment (even)
    pes_sigma: float = 0.01                    # PES: std of the perturbation of the LSTM's parameters
    seed: int = 0

    def validate(self) -> MetaConfig:
        check_types(asdict(self), MetaConfig, "[meta]")
        if self.problem not in ("snn", "quadratic"):
            raise SpecError(f"meta problem must be snn or quadratic, got {self.problem!r}")
        if self.variant not in VARIANTS:
            raise SpecError(f"unknown learned-optimizer variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        if self.weights not in WEIGHTS:
            raise SpecError(f"unknown meta-loss weights {self.weights!r}; valid: {', '.join(WEIGHTS)}")
        if self.split not in ("train", "val"):
            raise SpecError(f"meta split must be train or val, got {self.split!r}")
        if self.split == "val" and not self.val_fraction > 0:
            raise SpecError("meta-training on the validation split needs val_fraction > 0 (e.g. 0.1)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise SpecError(f"meta val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("unroll", "horizon", "meta_iters", "eval_every", "eval_seeds", "batch_size", "time_steps",
                     "dim", "hidden"):
            if getattr(self, name) < 1:
                raise SpecError(f"meta {name} must be >= 1, got {getattr(self, name)}")
        if self.horizon_start < 0:
            raise SpecError(f"meta horizon_start must be >= 0 (0: no curriculum), got {self.horizon_start}")
        rates = (self.meta_lr, self.scale_lr, self.clip, self.init_lr)
        if not (all(math.isfinite(x) for x in rates) and self.meta_lr > 0 and self.scale_lr >= 0 and self.clip > 0
                and self.init_lr > 0):
            raise SpecError("meta_lr, clip and init_lr must be finite and > 0, and scale_lr finite and >= 0 (0 keeps "
                            f"the step size at init_lr); got {self.meta_lr}, {self.clip}, {self.init_lr} and "
                            f"{self.scale_lr}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise SpecError(f"meta noise must be a finite number >= 0, got {self.noise}")
        if not self.save_every_s > 0:
            raise SpecError(f"meta save_every_s must be > 0, got {self.save_every_s}")
        if not self.nets or not self.init_gains:
            raise SpecError("meta nets and init_gains must be non-empty lists")
        if not all(math.isfinite(g) and g > 0 for g in self.init_gains):
            raise SpecError(f"meta init_gains must be finite numbers > 0, got {self.init_gains}")
        if any(h < 1 for h in self.eval_horizons):
            raise SpecError(f"meta eval_horizons must be >= 1, got {self.eval_horizons}")
        if self.meta_grad not in META_GRADS:
            raise SpecError(f"unknown meta_grad {self.meta_grad!r}; valid: {', '.join(META_GRADS)}")
        if self.meta_grad == "pes" and not (self.pes_particles >= 2 and self.pes_particles % 2 == 0
                                             and math.isfinite(self.pes_sigma) and self.pes_sigma > 0):
            raise SpecError(f"pes needs an even pes_particles >= 2 and pes_sigma > 0, got {self.pes_particles} "
                            f"and {self.pes_sigma}")
        if not self.eval_horizons:
            self.eval_horizons = [self.horizon]
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MetaConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(f"unknown meta option(s) {unknown}; valid: {sorted(known)}")
        return cls(**values).validate()


class ProblemSampler:
    """Makes optimizees from a config: seed -> problem (net and init gain drawn from the seed)."""

    def __init__(self, cfg: MetaConfig):
        self.cfg, self.data = cfg, None
        if cfg.problem == "snn":
            from ..data import load_dataset, normalizes
            self.data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction,
                                     time_steps=cfg.time_steps, normalize=normalizes(cfg.encoding))

    def check(self) -> None:
        """Build every optimizee network once (SpecError for a bad network string or method) and throw it
        away: meta_train calls this before it writes anything. Own generator: the global one is untouched."""
        from ..learn import make_rule
        from ..snn import build_network
        if self.cfg.problem != "snn":
            return
        for arch in self.cfg.nets:
            build_network(arch, input_shape=self.data.input_shape, num_classes=self.data.num_classes,
                          estimator=self.cfg.estimator, generator=torch.Generator().manual_seed(0))
        if self.cfg.method != "bptt":
            make_rule(self.cfg.method)

    def __call__(self, seed: int):
        cfg = self.cfg
        if cfg.problem == "quadratic":
            return NoisyQuadratic(cfg.dim, cfg.noise, seed)
        pick = torch.Generator().manual_seed(seed)
        net = cfg.nets[int(torch.randint(len(cfg.nets), (1,), generator=pick))]
        gain = cfg.init_gains[int(torch.randint(len(cfg.init_gains), (1,), generator=pick))]
        return SNNProblem(self.data, net, split=cfg.split, seed=seed, estimator=cfg.estimator, method=cfg.method,
                          batch_size=cfg.batch_size, time_steps=cfg.time_steps, encoding=cfg.encoding,
                          init_gain=gain)


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


def _meta_loss_term(kind: str, loss, l0: float, t: int, horizon: int):
    if kind == "sum":
        return loss
    if kind == "normalized":
        return loss / l0
    if kind == "late":
        return (t / horizon) * loss / l0
    return loss.clamp_min(1e-30).log()


def _segment_loss(model: CoordinateLSTM, problem, theta, state, t: int, l0: float | None, horizon: int,
                  cfg: MetaConfig, graph: bool = True):
    """K = ``unroll`` optimizee steps from (θ, LSTM state) at step t: (meta-loss of the segment, θ, state, l0).
    ``graph=False``: θ is cut after every step (no meta-graph through the unroll, as PES needs)."""
    meta_loss = 0.0
    for _ in range(cfg.unroll):
        loss = problem.loss(theta, t)
        if l0 is None:
            l0 = max(float(loss.detach()), 1e-12)
        g = problem.grad(theta, loss, t)
        if t > 0:
            meta_loss = meta_loss + _meta_loss_term(cfg.weights, loss, l0, t, horizon)
        upd, state = model.step(g, state)
        theta, t = theta + upd, t + 1
        if not graph:                   # θ stays a leaf for the optimizee's next gradient
            theta = theta.detach().requires_grad_(True)
    meta_loss = (meta_loss + _meta_loss_term(cfg.weights, problem.loss(theta, t), l0, t, horizon)) / cfg.unroll
    return meta_loss, theta, state, l0


def pes_segment(model: CoordinateLSTM, problem, particles: list[dict], t: int, horizon: int, cfg: MetaConfig,
                generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """Persistent evolution strategies (Vicol, Metz & Sohl-Dickstein, ICML 2021) over one segment.

    Each particle i keeps its own trajectory (θ_i, LSTM state) and the sum ξ_i of the perturbations
    ε_i ~ N(0, σ²I) of the LSTM parameters φ it has run with since the trajectory began; after the
    segment run with φ + ε_i (antithetic pairs ε, −ε), the unbiased estimate of ∂(segment loss)/∂φ
    over the whole trajectory is ĝ = Σ_i ξ_i·L_i / (N σ²), with no truncation bias (truncated BPTT
    ignores the effect of φ on the state the segment starts from, which favours small steps).
    Every particle replays the segment on the same mini-batches and estimator noise (common random
    numbers), so the loss differences between particles come from their perturbations, not from
    the data they happened to draw; and each keeps its own learning-rule state (OPZO's momentum
    feedback follows its own trajectory).
    Returns (mean segment loss over the particles, ĝ as a flat vector); inf loss if one diverged."""
    phi = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    half = len(particles) // 2
    eps = torch.randn(half, phi.numel(), generator=generator) * cfg.pes_sigma
    eps = torch.cat([eps, -eps])
    losses, trainable = [], [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)      # forward only: no graph through the LSTM (the optimizee's own grads still work)
    rng = problem.rng_state()
    fresh = problem.rule_snapshot()    # a learning rule's state: each particle carries its own
    try:
        for i, p in enumerate(particles):
            problem.restore_rule(fresh if p.get("rule") is None else p["rule"])
            problem.set_rng_state(rng)
            torch.nn.utils.vector_to_parameters(phi + eps[i], model.parameters())
            loss, theta, state, p["l0"] = _segment_loss(model, problem, p["theta"].detach().requires_grad_(True),
                                                        p["state"], t, p["l0"], horizon, cfg, graph=False)
            p["theta"], p["state"] = theta.detach(), state
            p["xi"] = p["xi"] + eps[i]
            p["rule"] = problem.rule_snapshot()
            losses.append(float(loss.detach()) if torch.is_tensor(loss) else float(loss))
    finally:
        torch.nn.utils.vector_to_parameters(phi, model.parameters())
        for q, flag in zip(model.parameters(), trainable):
            q.requires_grad_(flag)
    if not all(math.isfinite(x) for x in losses):
        return math.inf, torch.zeros_like(phi)
    L = torch.tensor(losses, dtype=phi.dtype)
    grad = (torch.stack([p["xi"] for p in particles]) * (L - L.mean()).unsqueeze(1)).sum(0)
    return float(L.mean()), grad / (len(particles) * cfg.pes_sigma ** 2)


def _meta_optimizer(model: CoordinateLSTM, cfg: MetaConfig) -> torch.optim.Adam:
    """Adam on the LSTM; the learnable global scalars (log step size, β₁) get their own, larger rate."""
    scalars = ("log_scale", "beta1_logit")
    groups = [{"params": [p for n, p in model.named_parameters() if n not in scalars], "lr": cfg.meta_lr}]
    own = [p for n, p in model.named_parameters() if n in scalars]
    if own:
        groups.append({"params": own, "lr": cfg.scale_lr})
    return torch.optim.Adam(groups)


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
        raise UserError(f"--resume: {out} was meta-trained with " + ", ".join(f"{k} = {old[k]!r}" for k in diff)
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
                      "start over with --overwrite", UserWarning, stacklevel=3)
        return None
    if saved.get("version") != RESUME_VERSION:
        raise UserError(f"--resume: {last} holds resume state of version {saved.get('version')!r}; this neuroplast "
                        f"continues version {RESUME_VERSION}. Resume it with the neuroplast that wrote it or start "
                        "over with --overwrite")
    return saved


def meta_train(cfg: MetaConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Meta-train; writes ``out``/{config.json, history.jsonl, last.pt, best.pt, summary.json}."""
    cfg.validate()
    out = check_output_dir(out, "meta-training folder")
    last = out / "last.pt"
    if last.exists() and not (resume or overwrite):
        raise UserError(f"{out} already holds a meta-training run; pass --resume to continue it or --overwrite")
    torch.manual_seed(cfg.seed)
    sampler = ProblemSampler(cfg)
    sampler.check()
    model = CoordinateLSTM(cfg.variant, hidden=cfg.hidden, step_input=cfg.step_input, init_lr=cfg.init_lr,
                           relative=cfg.relative, learn_beta1=cfg.learn_beta1)
    opt = _meta_optimizer(model, cfg)
    it, best_score, history, restores, next_seed = 0, math.inf, [], 0, cfg.seed * 100_003
    saved = None
    if resume and last.exists():
        model, blob = load_checkpoint(last)
        _check_resume(cfg, blob, out)
        saved = _resume_state(blob, last)
        opt = _meta_optimizer(model, cfg)
        opt.load_state_dict(blob["opt"])
        it, best_score, restores, next_seed = blob["iteration"], blob["best_score"], blob["restores"], blob["next_seed"]
        history = blob["history"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", asdict(cfg))
    good = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    pes = cfg.meta_grad == "pes"
    pes_gen = torch.Generator().manual_seed(cfg.seed * 7_919 + it)
    # the optimizee in progress: problem (of seed problem_seed) at step t; θ, LSTM state and L_0 (truncated
    # BPTT) or the PES particles
    problem, problem_seed, t, theta, state, l0, particles = None, None, 0, None, None, None, []
    streak = 0           # non-finite meta-losses in a row (MAX_RESTORE_STREAK)
    wall_before = 0.0     # wall time of the run before this resume (history's wall_s counts on from it)
    if saved is not None:
        good = (saved["good_model"], saved["good_opt"])
        pes_gen.set_state(saved["pes_gen"])
        wall_before = saved["wall_s"]
        traj = saved["trajectory"]
        if traj is not None:
            problem_seed, t, l0 = traj["seed"], traj["t"], traj["l0"]
            problem = sampler(problem_seed)
            problem.load_state_dict(traj["problem"])
            theta, state, particles = traj["theta"], traj["state"], traj["particles"]
        torch.set_rng_state(saved["torch_rng"])   # last: building the problem may draw from it
    t0 = time.perf_counter() - wall_before
    saved_at = time.perf_counter()
    bar = tqdm(total=cfg.meta_iters, initial=it, desc="meta-train", disable=None if progress else True,
               file=sys.stderr)

    def resume_state() -> dict:
        """What last.pt needs besides the LSTM, Adam and the counters to continue exactly (module docstring)."""
        traj = None
        if problem is not None:
            traj = {"seed": problem_seed, "t": t, "l0": l0, "problem": problem.state_dict(),
                    "theta": None if pes else theta.detach(), "state": None if pes else detach_state(state),
                    "particles": [{"theta": p["theta"].detach(), "state": detach_state(p["state"]), "l0": p["l0"],
                                   "xi": p["xi"], "rule": p.get("rule")} for p in particles]}
        return {"version": RESUME_VERSION, "good_model": good[0], "good_opt": good[1],
                "pes_gen": pes_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "wall_s": time.perf_counter() - t0, "trajectory": traj}

    def checkpoint(path, resumable=False):
        extra = {"resume": resume_state()} if resumable else {}
        save_checkpoint(path, model, meta={"iteration": it, "config": asdict(cfg)}, opt=opt.state_dict(), iteration=it,
                        best_score=best_score, restores=restores, next_seed=next_seed, history=history, **extra)
    def record_eval():
        nonlocal best_score
        ev = evaluate(model, sampler, cfg)
        row = {"iteration": it, **ev, "step_size": float(model.log_scale.detach().exp()),
               "beta1": model.beta1_value(), "wall_s": time.perf_counter() - t0}
        history.append(row)
        atomic_write_text(out / "history.jsonl", "".join(json.dumps(json_finite(r)) + "\n" for r in history))
        if progress:   # a line per evaluation also when stderr is no terminal (runs in the background)
            held = ", ".join(f"@{h} {v:.4f}" for h, v in ev["loss_at"].items())
            tqdm.write(f"meta-train: iteration {it}/{cfg.meta_iters}: held-out loss {held}; step size "
                       f"{row['step_size']:.4g}, β1 {row['beta1']:.3f}; {row['wall_s']:.0f} s", file=sys.stderr)
        if ev["score"] < best_score:
            best_score = ev["score"]
            checkpoint(out / "best.pt")
        return ev["score"]

    if it == 0 and not history:
        record_eval()   # the untrained optimizer (Adam-like at init_lr for the adam variant) is a candidate too
    while it < cfg.meta_iters:
        frac = min(1.0, it / max(1, cfg.meta_iters // 2))
        horizon = cfg.horizon if not cfg.horizon_start else int(cfg.horizon_start + frac * (cfg.horizon - cfg.horizon_start))
        if problem is None or t >= horizon:
            problem, problem_seed, next_seed = sampler(next_seed), next_seed, next_seed + 1
            theta, state, t, l0 = problem.init(), model.init_state(problem.n), 0, None
            particles = [{"theta": theta, "state": model.init_state(problem.n), "l0": None,
                          "xi": torch.zeros(sum(p.numel() for p in model.parameters()))}
                         for _ in range(cfg.pes_particles if pes else 0)]
        opt.zero_grad(set_to_none=True)
        if pes:
            meta_loss, grad = pes_segment(model, problem, particles, t, horizon, cfg, pes_gen)
            t += cfg.unroll
            finite = math.isfinite(meta_loss) and bool(torch.isfinite(grad).all())
            if finite:
                params = list(model.parameters())
                for p, g in zip(params, grad.split([p.numel() for p in params])):
                    p.grad = g.view_as(p).to(p.dtype).clone()
            meta_loss = torch.tensor(meta_loss)
        else:
            theta = theta.detach().requires_grad_(True)
            state = detach_state(state)
            meta_loss, theta, state, l0 = _segment_loss(model, problem, theta, state, t, l0, horizon, cfg)
            t += cfg.unroll
            finite = torch.isfinite(meta_loss).item() and torch.isfinite(theta).all().item()
            if finite:
                meta_loss.backward()
        if finite:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            finite = math.isfinite(float(norm))
        if not finite:  # restore the last good LSTM, drop the optimizee
            restores += 1
            streak += 1
            if streak > MAX_RESTORE_STREAK:
                raise TrainingDiverged(
                    f"meta-training diverged: {streak} non-finite meta-losses in a row at iteration {it}, each from the "
                    f"last good LSTM; lower --meta-lr or --scale-lr (now {cfg.meta_lr:g}, {cfg.scale_lr:g})")
            model.load_state_dict(good[0])
            opt.load_state_dict(copy.deepcopy(good[1]))   # Adam adopts the tensors it is given and steps them in place
            tqdm.write(f"meta-train: non-finite meta-loss at iteration {it}; restored the last good LSTM "
                       f"({restores} restore(s) so far) and sampled a new optimizee", file=sys.stderr)
            problem = None
            continue
        opt.step()
        it += 1
        streak = 0
        bar.update(1)
        bar.set_postfix(meta_loss=f"{float(meta_loss.detach()):.4g}", lr=f"{float(model.log_scale.detach().exp()):.3g}")
        if it % cfg.eval_every == 0 or it == cfg.meta_iters:
            if math.isfinite(record_eval()):   # an LSTM whose held-out loss diverges is no good state to restore
                good = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
            checkpoint(last, resumable=True)
            saved_at = time.perf_counter()
        elif time.perf_counter() - saved_at > cfg.save_every_s:   # resumable between evaluations too
            checkpoint(last, resumable=True)
            saved_at = time.perf_counter()
            tqdm.write(f"meta-train: iteration {it}, {saved_at - t0:.0f} s, saved {last}", file=sys.stderr)
    bar.close()
    if not (out / "best.pt").exists():
        checkpoint(out / "best.pt")
    summary = {"out": str(out), "iterations": it, "best_score": best_score, "restores": restores,
               "history": history, "wall_s": time.perf_counter() - t0, "config": asdict(cfg)}
    atomic_write_json(out / "summary.json", json_finite(summary))
    return summary
