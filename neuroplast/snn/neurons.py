"""Leaky integrate-and-fire (LIF) neuron: the one place its update equation lives.

    u[t] = λ · reset(u[t−1], s[t−1]) + I[t]
    s[t] = H(u[t] − θ)

with hard reset ``reset(u, s) = u·(1 − s)`` (to 0) or soft reset ``reset(u, s) = u − θ·s``
(by subtraction). H is applied through a spike function whose backward pass is a gradient
estimator (``neuroplast.snn.spikefn``). This is the discrete LIF of the OTTT/OPZO papers
(Xiao et al. 2022, Sec. 3.1; Xiao et al. 2024, Sec. 3.1) with λ = 1 − 1/τ.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import SpecError

Tensor = torch.Tensor


def hard_reset(u: Tensor, s: Tensor, threshold: float) -> Tensor:
    """Reset to zero where the neuron spiked: u·(1 − s)."""
    return u * (1.0 - s)


def soft_reset(u: Tensor, s: Tensor, threshold: float) -> Tensor:
    """Reset by subtraction of the threshold where the neuron spiked: u − θ·s."""
    return u - threshold * s


RESETS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {"hard": hard_reset, "soft": soft_reset}


def hard_reset_grad(u: Tensor, s: Tensor, threshold: float) -> tuple[Tensor | float, Tensor | float]:
    """(∂reset/∂u, ∂reset/∂s) of u·(1 − s): (1 − s, −u)."""
    return 1.0 - s, -u


def soft_reset_grad(u: Tensor, s: Tensor, threshold: float) -> tuple[Tensor | float, Tensor | float]:
    """(∂reset/∂u, ∂reset/∂s) of u − θ·s: (1, −θ)."""
    return 1.0, -threshold


#: partial derivatives of each reset, for hand-written backward passes (``lif_sequence``)
RESET_GRADS = {"hard": hard_reset_grad, "soft": soft_reset_grad}


@dataclass(frozen=True)
class LIFParams:
    """Per-layer LIF constants: leak λ (0 < λ ≤ 1), threshold θ > 0, reset rule name."""

    leak: float = 0.5
    threshold: float = 1.0
    reset: str = "hard"

    def __post_init__(self):
        if not 0.0 < self.leak <= 1.0:
            raise SpecError(f"LIF leak λ must be in (0, 1], got {self.leak}")
        if not self.threshold > 0.0:
            raise SpecError(f"LIF threshold θ must be > 0, got {self.threshold}")
        if self.reset not in RESETS:
            raise SpecError(f"unknown reset {self.reset!r}; valid: {sorted(RESETS)}")


def lif_step(u: Tensor, s: Tensor, current: Tensor, params: LIFParams,
             spike: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """One LIF time step: (u[t−1], s[t−1], I[t]) -> (u[t], s[t]).

    ``spike`` maps u − θ to spikes (forward H, backward the chosen estimator)."""
    u = params.leak * RESETS[params.reset](u, s, params.threshold) + current
    return u, spike(u - params.threshold)


def lif_reference(current: Tensor, params: LIFParams, spike: Callable[[Tensor], Tensor]) -> Tensor:
    """Spikes [T, ...] of the plain time loop over ``lif_step`` from rest: the reference the fused
    and scanned LIF paths are tested against (autograd runs through it)."""
    u = s = torch.zeros_like(current[0])
    out = []
    for t in range(current.shape[0]):
        u, s = lif_step(u, s, current[t], params, spike)
        out.append(s)
    return torch.stack(out)
