"""Direct feedback alignment (DFA; Nøkland, NeurIPS 2016), online through time.

A fixed random matrix B_l projects the output error e = ∂L/∂o straight to hidden layer l:

    δ_l = e·B_l,    ΔW_l = −η·(ψ'(u_l) ⊙ δ_l) ⊗ x̂_{l−1}

With IGL, e is the error of the middle layer's readout for the layers before it.
B_l [C, N_l] is drawn once per network, N(0, 1/C), from the rule's generator, and never learns.
"""
from __future__ import annotations

import math

import torch

from .base import register
from .online import ThreeFactorRule, feedback_shape


@register
class DFA(ThreeFactorRule):
    name = "dfa"

    def __init__(self, ll: int | str = 0, ll_scale: float = 1.0, igl: int | str = 0):
        self.feedback: dict[str, torch.Tensor] = {}
        self.set_local(ll, ll_scale, igl)

    def prepare(self, net, x_seq):
        if self.feedback:
            return
        g = self.generator
        for name in net.spiking_layers():
            C, n = feedback_shape(net, name)
            B = torch.randn(C, n, generator=g, device=g.device if g is not None else x_seq.device) / math.sqrt(C)
            self.feedback[name] = B.to(x_seq.device, x_seq.dtype)

    def hidden_signals(self, net, info):
        return {name: info.e @ self.feedback[name] for name in info.layers}

    def window_feedback(self, net, E, outs, states, layers):
        return {name: self.feedback[name] for name in layers}
