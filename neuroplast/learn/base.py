"""Learning-rule interface. A rule only computes ``param.grad``; an optimizer applies it.

    rule.compute_grads(net, x_seq, y, loss_fn) -> StepResult(loss, logits, spikes)

so that any rule can be driven by any optimizer (torch.optim or a learned one) and wrapped by any
precision. Rules are registered by name in ``RULES`` (``make_rule("ottt")``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..registry import build, parse_options
from ..snn import Network

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class StepResult:
    """What one gradient computation saw: mean loss, logits [B, C] (detached), and per spiking
    layer the spike count of each neuron summed over the batch and the T steps ([*shape]: what the
    cost model needs, one reduction over all T·B rows instead of a [B, *shape] map per step)."""

    loss: float
    logits: Tensor
    spike_counts: dict[str, Tensor] = field(default_factory=dict)
    noise_draws: int = 0      # random numbers the rule drew for noise injection (cost model)


class StepAccumulator:
    """Sums what an online rule sees over the T steps of a batch into a ``StepResult``."""

    def __init__(self, time_steps: int):
        self.T, self.loss, self.logits, self.counts, self.noise_draws = time_steps, 0.0, 0.0, {}, 0

    def add(self, loss: Tensor, output: Tensor, spikes: dict[str, Tensor]) -> None:
        """One step: its loss, output [B, C] and spikes {layer: [B, ...]}."""
        self.add_window(loss[None], output[None], {k: v[None] for k, v in spikes.items()})

    def add_window(self, losses: Tensor, outputs: Tensor, spikes: dict[str, Tensor]) -> None:
        """K steps at once: their losses [K], outputs [K, B, C], spikes {layer: [K, B, *shape]}. Loss and
        logits are summed step by step in float64/the output dtype (read once in ``result``: no sync per step)."""
        for loss, o in zip(losses.detach().double(), outputs.detach()):
            self.loss = self.loss + loss
            self.logits = self.logits + o / self.T
        for k, v in spikes.items():  # spike counts are whole numbers: any order sums them exactly
            v = v.detach().flatten(0, 1).sum(0)
            self.counts[k] = self.counts[k] + v if k in self.counts else v

    def result(self) -> StepResult:
        return StepResult(loss=float(self.loss), logits=self.logits, spike_counts=self.counts, noise_draws=self.noise_draws)


class Rule:
    """Base class of learning rules."""

    name = "?"
    #: random source of rules that draw noise or feedback matrices (set by the training loop)
    generator: torch.Generator | None = None

    def compute_grads(self, net: Network, x_seq: Tensor, y: Tensor, loss_fn: LossFn) -> StepResult:
        raise NotImplementedError

    def feedback_sizes(self) -> dict[str, int]:
        """Entries of the feedback matrices the rule keeps, per layer (cost model: memory)."""
        return {k: int(v.numel()) for k, v in getattr(self, "feedback", {}).items()}

    def setup(self, net: Network) -> None:
        """Create what the rule needs for ``net`` before training (called before the optimizer is built)."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """The rule's own trained parameters (e.g. local readouts); the optimizer steps them too."""
        return []

    def readout_sizes(self) -> dict[str, int]:
        """Entries of auxiliary readouts (local learning, IGL), per readout (cost model: memory)."""
        return {}

    def set_progress(self, fraction: float) -> None:
        """Told before each update how far training is (0 → 1), for schedules such as OPZO's σ."""


RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    RULES[cls.name] = cls
    return cls


def make_rule(spec: str | Rule) -> Rule:
    """Build a rule from ``"name[:key=value,...]"``; unknown names list the valid ones."""
    if isinstance(spec, Rule):
        return spec
    parse_options(spec)  # bad options fail quoting the spec as written, before the "+ll" rewrite
    name, _, opts = str(spec).partition(":")
    if name.strip().lower().endswith("+ll"):  # "opzo+ll:sigma=0.5" == "opzo:sigma=0.5,ll=1"
        has_ll = any(p.split("=")[0].strip() == "ll" for p in opts.split(","))
        spec = name.strip()[:-3] + ":" + ",".join(filter(None, [opts, None if has_ll else "ll=1"]))
    return build(spec, RULES, "method")
