"""Online three-factor learning through time: the loop DFA and OPZO share.

At every time step t the network advances one step with presynaptic traces and with the graph
cut between layers (``Network.step(isolate=True)``). The readout learns from the output error
e[t] = ∂L[t]/∂o[t] with L[t] = L(o[t], y)/T; every hidden spiking layer l receives a top-down
signal δ_l[t] from the rule, and autograd through that layer alone applies the third factor:

    ΔW_l ∝ −(ψ'(u_l[t]) ⊙ δ_l[t]) ⊗ x̂_{l−1}[t]

(ψ' the layer's spike-gradient estimator, x̂ the presynaptic trace). Gradients accumulate over t
and the optimizer steps once per batch, as in OTTT. Memory is independent of T.
"""
from __future__ import annotations

import torch

from ..errors import SpecError
from ..snn import detach_state
from .base import Rule, StepAccumulator

Tensor = torch.Tensor


class ThreeFactorRule(Rule):
    """Base of rules whose hidden layers learn from a rule-given top-down signal."""

    def prepare(self, net, x_seq: Tensor) -> None:
        """Create per-network state (feedback matrices) on first use."""

    def noise(self, net, t: int, batch: int, like: Tensor) -> dict[str, Tensor] | None:
        """Noise added to hidden spiking outputs at step t (None: a clean pass)."""
        return None

    def hidden_signal(self, name: str, e: Tensor) -> Tensor:
        """δ_l [B, N_l] for hidden layer ``name`` from the output error e [B, C]."""
        raise NotImplementedError

    def observe(self, o: Tensor, noise: dict[str, Tensor] | None) -> None:
        """See the step's output after the signals were used (OPZO updates its feedback here)."""

    def compute_grads(self, net, x_seq, y, loss_fn):
        net.check_input(x_seq)
        hidden = net.spiking_layers()
        if not hidden:
            raise SpecError(f"method {self.name!r} needs a network with at least one hidden spiking layer, "
                            f"got {net.arch!r}")
        self.prepare(net, x_seq)
        T = x_seq.shape[0]
        state, acc = net.init_state(), StepAccumulator(T)
        for t in range(T):
            noise = self.noise(net, t, x_seq.shape[1], x_seq)
            o, state, s_t = net.step(x_seq[t], state, traces=True, isolate=True, perturb=noise)
            loss = loss_fn(o, y) / T
            (e,) = torch.autograd.grad(loss, o, retain_graph=True)
            outs, grads = [o], [e]
            for name in hidden:
                s = state["layers"][name][1]  # graph-connected spikes of this layer
                if not s.requires_grad:  # frozen layer (readout-only control)
                    continue
                outs.append(s)
                grads.append(self.hidden_signal(name, e).reshape(s.shape))
            torch.autograd.backward(outs, grads)
            self.observe(o.detach(), noise)
            state = detach_state(state)
            acc.add(loss, o, s_t)
        return acc.result()
