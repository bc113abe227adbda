"""Auxiliary readouts on hidden layers: local learning (LL) and intermediate global learning (IGL).

OPZO paper (Xiao et al.), Sec. 4.4 and Appendix C.1. A readout on hidden layer l,

    o_l[t] = a_l[t]·R_lᵀ + b_l,        L_l = L(o_l[t], y)/T,        e_l = ∂L_l/∂o_l,

(a_l the spikes layer l sends on, noise included) gives two things:

- LL: a purely local signal δ_l += scale·∂L_l/∂a_l = scale·e_l·R_l added to the global one.
  R_l is either fixed random (N(0, 1/N_l); Kaiser et al. 2020, DECOLLE) or trained by its own
  loss, ∂L_l/∂R_l = e_lᵀ·a_l (the paper's form, with the weight symmetry of one linear layer).
- IGL: the (trained) readout of a middle layer m acts as the output for the layers before m:
  they take their top-down signal from e_m instead of the network's output error, so in a deep
  network the signal travels a shorter way (the paper uses the 4th conv layer of 9).

Readout weights see a_l[t] itself (no trace), as the network's own readout does.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import SpecError

Tensor = torch.Tensor
LL_KINDS = {0: None, 1: "fixed", "0": None, "1": "fixed", "off": None, "fixed": "fixed", "trained": "trained"}


def local_kind(ll) -> str | None:
    """Parse the ``ll`` option: 0/off, 1/fixed (random readouts), trained."""
    key = ll.lower() if isinstance(ll, str) else ll
    if key not in LL_KINDS:
        raise SpecError(f"ll must be 0 (off), 1 or fixed (fixed random readouts) or trained, got {ll!r}")
    return LL_KINDS[key]


class AuxReadout(nn.Module):
    """A linear readout [C, N] on one hidden layer; ``trained`` makes R and b parameters."""

    def __init__(self, n_in: int, num_classes: int, *, trained: bool, generator: torch.Generator | None,
                 device, dtype):
        super().__init__()
        gdev = generator.device if generator is not None else device
        if trained:  # the network's own readout init: U(±1/√N), zero bias
            bound = 1.0 / math.sqrt(n_in)
            w = (torch.rand(num_classes, n_in, generator=generator, device=gdev) * 2 - 1) * bound
            self.weight = nn.Parameter(w.to(device, dtype))
            self.bias = nn.Parameter(torch.zeros(num_classes, device=device, dtype=dtype))
        else:
            w = torch.randn(num_classes, n_in, generator=generator, device=gdev) / math.sqrt(n_in)
            self.register_buffer("weight", w.to(device, dtype))
            self.register_buffer("bias", torch.zeros(num_classes, device=device, dtype=dtype))
        self.trained = trained

    def forward(self, a: Tensor) -> Tensor:
        return a.flatten(1) @ self.weight.t() + self.bias

    def error(self, a: Tensor, y: Tensor, loss_fn, time_steps: int) -> tuple[Tensor, Tensor]:
        """(o_l, e_l) for the spikes ``a`` [B, *shape]; a trained readout accumulates its own gradient."""
        a = a.detach().flatten(1)
        o = self(a).detach().requires_grad_(True)
        (e,) = torch.autograd.grad(loss_fn(o, y) / time_steps, o)
        if self.trained:
            for p, g in ((self.weight, e.t() @ a), (self.bias, e.sum(0))):
                p.grad = g if p.grad is None else p.grad + g
        return o.detach(), e

    def signal(self, e: Tensor) -> Tensor:
        """∂L_l/∂a_l = e_l·R_l [B, N]."""
        return e @ self.weight.detach()
