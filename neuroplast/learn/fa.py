"""Feedback alignment (FA; Lillicrap et al., Nat. Commun. 2016), online through time.

Like backprop (OTTT's online form: presynaptic traces, per-step loss), but the error goes back
from layer l+1 to layer l through a fixed random matrix B_{l+1} instead of W_{l+1}ᵀ:

    δ_l = ψ'(u_l) ⊙ (B_{l+1}ᵀ δ_{l+1}),     ΔW_l = −η·δ_l ⊗ x̂_{l−1}

B has the shape of W, drawn once per network U(−1/√fan_in, 1/√fan_in) from the rule's generator.
"""
from __future__ import annotations

import math

import torch

from .base import register
from .ottt import OTTT


@register
class FA(OTTT):
    name = "fa"

    def __init__(self):
        self.feedback: dict[str, torch.Tensor] = {}

    def step_options(self, net, x_seq):
        if not self.feedback:
            g = self.generator
            for name, layer in net.layers.items():
                if hasattr(layer, "op"):
                    w = layer.op.weight
                    bound = 1.0 / math.sqrt(w[0].numel())
                    B = torch.rand(w.shape, generator=g, device=g.device if g is not None else w.device)
                    self.feedback[name] = ((2 * B - 1) * bound).to(w.device, w.dtype)
        return {"feedback": self.feedback}
