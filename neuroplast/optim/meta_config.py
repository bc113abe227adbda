"""What meta-training runs on: ``MetaConfig`` (the ``[meta]`` table of a task file, or CLI flags) and
the ``ProblemSampler`` that turns a seed into an optimizee: a noisy quadratic, or an SNN whose network
and init gain are drawn from the seed (Andrychowicz et al. 2016 meta-train on such a distribution).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from ..errors import SpecError
from ..limits import check_count
from ..spec import check_types
from .lstm import VARIANTS
from .problems import NoisyQuadratic, SNNProblem

WEIGHTS = ("sum", "normalized", "late", "log")
META_GRADS = ("bptt", "pes")
#: largest meta_lr, scale_lr and init_lr: far beyond any that learns, well below where Adam's float32 step
#: overflows (about 3e37, a RuntimeError in its step)
MAX_RATE = 1e9
#: largest seed: the problem seeds (seed·100003 + n) must stay within torch's 64-bit generator seeds
MAX_SEED = 2 ** 40


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
            check_count(f"meta {name}", getattr(self, name))
        if self.horizon_start < 0:
            raise SpecError(f"meta horizon_start must be >= 0 (0: no curriculum), got {self.horizon_start}")
        if self.horizon_start > self.horizon:
            raise SpecError(f"meta horizon_start ({self.horizon_start}) must be <= horizon ({self.horizon}): the "
                            "curriculum grows the horizon from horizon_start to horizon; lower it or raise horizon")
        rates = (self.meta_lr, self.scale_lr, self.clip, self.init_lr)
        if not (all(math.isfinite(x) for x in rates) and self.meta_lr > 0 and self.scale_lr >= 0 and self.clip > 0
                and self.init_lr > 0):
            raise SpecError("meta_lr, clip and init_lr must be finite and > 0, and scale_lr finite and >= 0 (0 keeps "
                            f"the step size at init_lr); got {self.meta_lr}, {self.clip}, {self.init_lr} and "
                            f"{self.scale_lr}")
        for name in ("meta_lr", "scale_lr", "init_lr"):
            if getattr(self, name) > MAX_RATE:
                raise SpecError(f"{name} = {getattr(self, name):g} is too large (at most {MAX_RATE:g}; the "
                                f"default is {getattr(MetaConfig, name):g}); give a smaller one")
        if not 0 <= self.seed <= MAX_SEED:
            raise SpecError(f"meta seed must be in [0, 2^40] (its problem seeds count up from seed·100003), got "
                            f"{self.seed}")
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
