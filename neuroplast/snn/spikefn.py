"""Spike functions: the Heaviside H(x) = 1[x > 0] on x = u − θ, with a named gradient estimator.

Every estimator is an ``nn.Module`` mapping x to spikes, so layers call ``self.spike(u − θ)``
and never know which estimator is behind it. This module holds the interface and the surrogate
mechanism (exact H forward, hand-written h'(x) backward); the estimators themselves live in
``surrogates.py``, ``localzo.py`` and ``asgl.py`` and are registered in ``estimators.py``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

Tensor = torch.Tensor


def heaviside(x: Tensor) -> Tensor:
    """H(x) = 1 where x > 0 else 0 (a neuron spikes when u exceeds θ, as on Loihi)."""
    return (x > 0).to(x.dtype)


class SpikeEstimator(nn.Module):
    """Interface: ``forward(x)`` returns spikes of x = u − θ; its backward is the estimator."""

    name: str = "?"

    def extra_repr(self) -> str:
        return self.describe()

    def pointwise_derivative(self) -> Callable[[Tensor], Tensor] | None:
        """h'(x) to use in a backward pass when the forward is exactly H(x), else None.

        Estimators that give it can run in the fused LIF recursion (``lif_sequence``)."""
        return None

    def gradient_stats(self) -> dict[str, float]:
        """Statistics of the backward passes so far (e.g. LocalZO's fraction of non-zero gradients)."""
        return {}

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


class Derivative:
    """h'(x) of an estimator whose forward is exactly H(x), as the LIF scans use it: called on x it
    gives h'(x); ``gate(grad, u, θ, out, tmp)`` writes grad·h'(u − θ) into ``out`` with the
    estimator's own fused form where it has one (fewer passes over memory than the product; ``tmp``:
    scratch); ``native`` = (surrogate name, width) names the closed form the C scans
    (``lif_native``) evaluate, None where they have none."""

    def __init__(self, fn: Callable[[Tensor], Tensor], fused_gate: Callable[..., Tensor] | None = None,
                 native: tuple[str, float] | None = None):
        self.fn, self._gate, self.native = fn, fused_gate, native

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def gate(self, grad: Tensor, u: Tensor, threshold: float, out: Tensor, tmp: Tensor) -> Tensor:
        if self._gate is None:
            return _product_gate(self.fn, grad, u, threshold, out, tmp)
        return self._gate(grad, u, threshold, out, tmp)


def gate(derivative: Callable[[Tensor], Tensor], grad: Tensor, u: Tensor, threshold: float, out: Tensor,
         tmp: Tensor) -> Tensor:
    """out = grad·h'(u − θ) (``tmp``: scratch shaped as u, overwritten; it may be ``out`` itself
    where ``grad`` is not): a ``Derivative``'s fused form, else the product with ``derivative(u − θ)``."""
    fused = getattr(derivative, "gate", None)
    if fused is not None:
        return fused(grad, u, threshold, out, tmp)
    return _product_gate(derivative, grad, u, threshold, out, tmp)


def _product_gate(fn: Callable[[Tensor], Tensor], grad: Tensor, u: Tensor, threshold: float, out: Tensor,
                  tmp: Tensor) -> Tensor:
    """out = grad·fn(u − θ), u − θ into ``tmp``."""
    return torch.mul(grad, fn(torch.sub(u, threshold, out=tmp)), out=out)


def raw(derivative: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The plain h'(x) function behind a ``Derivative`` (what ``torch.compile`` traces)."""
    return getattr(derivative, "fn", derivative)


class SurrogateEstimator(SpikeEstimator):
    """A deterministic surrogate: subclasses give the smooth ``primitive`` h and its ``derivative`` h'.

    ``relaxed = True`` makes the forward pass emit h(x) instead of H(x) (a smooth network, used to
    check BPTT against finite differences) while the backward still uses the hand-written h'."""

    relaxed = False

    def primitive(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    #: optional ``gate(grad, u, θ, out, tmp)`` = grad·h'(u − θ) in fewer passes (see ``Derivative``)
    fused_gate: Callable[..., Tensor] | None = None
    #: the attribute holding the width, for surrogates the C scans know by ``name`` (``lif_native.KINDS``)
    native_param: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        return _SurrogateSpike.apply(x, self.derivative, self.primitive if self.relaxed else None)

    def pointwise_derivative(self):
        if self.relaxed:
            return None
        native = None if self.native_param is None else (self.name, getattr(self, self.native_param))
        return Derivative(self.derivative, self.fused_gate, native)


