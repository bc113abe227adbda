"""ASGL: adaptive smoothing gradient learning (Wang et al., ICLR 2023).

Dual-mode forward with spike noise: during training every neuron emits, independently with
probability p, its real spike H(x), and otherwise the smooth relaxation h_α(x) = σ(x/α):

    o = m ⊙ H(x) + (1 − m) ⊙ σ(x/α),     m ~ Bernoulli(p),   x = u − θ

Real spikes back-propagate through the surrogate h_α'(x); the smooth part through autograd, which
also gives α its gradient. α > 0 is a learnable per-layer width (stored as log α) trained by the
same optimizer as the weights, so the network can sharpen itself from a smooth network toward the
SNN. In evaluation mode the output is the pure spike H(x).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import SpecError
from . import draws
from .spikefn import SpikeEstimator, _SurrogateSpike, heaviside

Tensor = torch.Tensor


class ASGL(SpikeEstimator):
    """Learnable-width relaxation σ(x/α) mixed with real spikes with probability p."""

    name = "asgl"

    def __init__(self, alpha: float = 0.25, p: float = 0.5):
        super().__init__()
        if not float(alpha) > 0:
            raise SpecError(f"asgl needs an initial width alpha > 0, got {alpha}")
        if not 0.0 <= float(p) <= 1.0:
            raise SpecError(f"asgl needs a spike-noise probability p in [0, 1], got {p}")
        self.log_alpha = nn.Parameter(torch.tensor(math.log(float(alpha))))
        self.p = float(p)
        self.generator: torch.Generator | None = None

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def gradient_stats(self) -> dict[str, float]:
        return {"alpha": self.alpha}

    def _surrogate(self, x: Tensor) -> Tensor:
        a = self.log_alpha.detach().exp()
        sg = torch.sigmoid(x / a)
        return sg * (1.0 - sg) / a

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return heaviside(x)
        spikes = _SurrogateSpike.apply(x, self._surrogate, None)
        smooth = torch.sigmoid(x / self.log_alpha.exp())
        if self.p >= 1.0:
            return spikes
        g = self.generator
        mask = draws.uniform(x.shape, g, x.device)
        return torch.where(mask.to(x.device) < self.p, spikes, smooth)
