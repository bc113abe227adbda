"""Learning-rule interface. A rule only computes ``param.grad``; an optimizer applies it.

    rule.compute_grads(net, x_seq, y, loss_fn) -> StepResult(loss, logits, spikes)

so that any rule can be driven by any optimizer (torch.optim or a learned one) and wrapped by any
precision. Rules are registered by name in ``RULES`` (``make_rule("ottt")``)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import SpecError
from ..snn import Network
from ..snn.spikefn import parse_options

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class StepResult:
    """What one gradient computation saw: mean loss, logits [B, C] (detached), and per spiking
    layer the spike count of each neuron summed over the T steps ([B, *shape]; flat in T)."""

    loss: float
    logits: Tensor
    spike_counts: dict[str, Tensor] = field(default_factory=dict)


class Rule:
    """Base class of learning rules."""

    name = "?"

    def compute_grads(self, net: Network, x_seq: Tensor, y: Tensor, loss_fn: LossFn) -> StepResult:
        raise NotImplementedError


RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    RULES[cls.name] = cls
    return cls


def make_rule(spec: str | Rule) -> Rule:
    """Build a rule from ``"name[:key=value,...]"``; unknown names list the valid ones."""
    if isinstance(spec, Rule):
        return spec
    name, opts = parse_options(spec)
    if name not in RULES:
        raise SpecError(f"unknown method {name!r}; valid methods: {', '.join(sorted(RULES))}")
    cls = RULES[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise SpecError(f"method {name!r} has no option(s) {unknown}; valid options: {valid}")
    return cls(**opts)
