"""Spike functions: the Heaviside H(x) = 1[x > 0] on x = u − θ, with a named gradient estimator.

Every estimator is an ``nn.Module`` mapping x to spikes, so layers call ``self.spike(u − θ)``
and never know which estimator is behind it. Surrogates (Neftci, Mostafa & Zenke 2019, Sec. IV)
keep the exact H forward and replace H'(x) in the backward pass by the derivative h'(x) of a
smooth primitive h(x) ≈ H(x):

    sigmoid:  h(x) = σ(k·x),   h'(x) = k·σ(k·x)·(1 − σ(k·x))      (OTTT / OPZO default, k = 4)

Later estimators (LocalZO's stochastic zeroth-order estimate, ASGL's learnable width with spike
noise) subclass ``SpikeEstimator`` and register in ``ESTIMATORS``; layers stay untouched.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from ..errors import SpecError

Tensor = torch.Tensor


def heaviside(x: Tensor) -> Tensor:
    """H(x) = 1 where x > 0 else 0 (a neuron spikes when u exceeds θ, as on Loihi)."""
    return (x > 0).to(x.dtype)


class SpikeEstimator(nn.Module):
    """Interface: ``forward(x)`` returns spikes of x = u − θ; its backward is the estimator."""

    name: str = "?"

    def extra_repr(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """The estimator as a spec string, e.g. ``sigmoid:k=4.0`` (round-trips through make_estimator)."""
        sig = inspect.signature(type(self).__init__)
        opts = [f"{p}={getattr(self, p)}" for p in sig.parameters if p != "self"]
        return self.name + (":" + ",".join(opts) if opts else "")


class _SurrogateSpike(torch.autograd.Function):
    """Forward H(x) (or the smooth h(x) when relaxed); backward grad · h'(x), h' hand-written."""

    @staticmethod
    def forward(ctx, x: Tensor, derivative: Callable[[Tensor], Tensor],
                primitive: Callable[[Tensor], Tensor] | None) -> Tensor:
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        return heaviside(x) if primitive is None else primitive(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * ctx.derivative(x), None, None


class SurrogateEstimator(SpikeEstimator):
    """A deterministic surrogate: subclasses give the smooth ``primitive`` h and its ``derivative`` h'.

    ``relaxed = True`` makes the forward pass emit h(x) instead of H(x) (a smooth network, used to
    check BPTT against finite differences) while the backward still uses the hand-written h'."""

    relaxed = False

    def primitive(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return _SurrogateSpike.apply(x, self.derivative, self.primitive if self.relaxed else None)


class Sigmoid(SurrogateEstimator):
    """h(x) = σ(k·x); h'(x) = k·σ(k·x)(1 − σ(k·x)). OTTT (Xiao et al. 2022) and OPZO use k = 4."""

    name = "sigmoid"

    def __init__(self, k: float = 4.0):
        super().__init__()
        if not k > 0:
            raise SpecError(f"sigmoid surrogate needs k > 0, got {k}")
        self.k = float(k)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.k * x)

    def derivative(self, x: Tensor) -> Tensor:
        sg = torch.sigmoid(self.k * x)
        return self.k * sg * (1.0 - sg)


ESTIMATORS: dict[str, type[SpikeEstimator]] = {cls.name: cls for cls in (Sigmoid,)}


def _parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_options(spec: str) -> tuple[str, dict]:
    """``"name:a=1,b=x"`` -> ("name", {"a": 1, "b": "x"})."""
    name, _, rest = spec.strip().partition(":")
    opts = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"cannot parse option {item!r} in {spec!r}; write name:key=value,key=value")
        opts[key.strip()] = _parse_value(val.strip())
    return name.strip().lower(), opts


def make_estimator(spec: str | SpikeEstimator) -> SpikeEstimator:
    """Build an estimator from a spec string such as ``"sigmoid:k=4"``."""
    if isinstance(spec, SpikeEstimator):
        return spec
    name, opts = parse_options(spec)
    if name not in ESTIMATORS:
        raise SpecError(f"unknown estimator {name!r}; valid estimators: {', '.join(sorted(ESTIMATORS))}")
    cls = ESTIMATORS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise SpecError(f"estimator {name!r} has no option(s) {unknown}; valid options: {valid}")
    return cls(**opts)
