"""Backpropagation through time with a surrogate spike derivative (Neftci et al. 2019, Sec. III).

The network is unrolled over T steps, the loss is taken on the accumulated readout
(1/T)·Σ_t o[t], and autograd runs back through time and layers:
∂L/∂W_l = Σ_t δ_l[t] ⊗ s_{l−1}[t] with δ carried through u[t] → u[t+1] by the LIF recursion.
Memory grows linearly with T."""
from __future__ import annotations

from .base import Rule, StepResult, register


@register
class BPTT(Rule):
    name = "bptt"

    def compute_grads(self, net, x_seq, y, loss_fn):
        out = net.simulate(x_seq)
        loss = loss_fn(out.logits, y)
        loss.backward()
        return StepResult(loss=float(loss.detach()), logits=out.logits.detach(),
                          spike_counts={k: v.flatten(0, 1).sum(0) for k, v in out.spikes.items()})
