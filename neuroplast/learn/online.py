"""Online three-factor learning through time: the loop DFA, OPZO and ZO share.

At every time step t the network advances one step with presynaptic traces and with the graph
cut between layers (``Network.step(isolate=True)``). The readout learns from the output error
e[t] = ∂L[t]/∂o[t] with L[t] = L(o[t], y)/T; every hidden spiking layer l receives a top-down
signal δ_l[t] from the rule, and autograd through that layer alone applies the third factor:

    ΔW_l ∝ −(ψ'(u_l[t]) ⊙ δ_l[t]) ⊗ x̂_{l−1}[t]

(ψ' the layer's spike-gradient estimator, x̂ the presynaptic trace). Gradients accumulate over t
and the optimizer steps once per batch, as in OTTT. Memory is independent of T.

Local learning (``ll=1``, or the method name with ``+ll``; OPZO Sec. 4.5): every hidden layer
also has a fixed random readout R_l [C, N_l] with its own loss L_l = L(s_l·R_lᵀ, y)/T, and
δ_l += ``ll_scale``·∂L_l/∂s_l — a purely local signal added to the global one.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import SpecError
from ..snn import detach_state
from .base import Rule, StepAccumulator

Tensor = torch.Tensor
NOISE_KINDS = ("gaussian", "rademacher")
SITES = ("after", "before")  # noise injected after the neuron (on spikes) or before (on the current)


def draw_noise(net, names, batch: int, kind: str, generator: torch.Generator | None,
               like: Tensor) -> dict[str, Tensor]:
    """Unit-variance noise z_l [B, *shape_l] for each named layer: N(0, 1) or Rademacher ±1."""
    dev = generator.device if generator is not None else like.device
    out = {}
    for name in names:
        z = torch.randn((batch, *net.shapes[name]), generator=generator, device=dev)
        out[name] = (z.sign() if kind == "rademacher" else z).to(like.device, like.dtype)
    return out


@dataclass
class StepInfo:
    """What a rule may use to form its top-down signals at one step."""

    e: Tensor                                           # ∂L[t]/∂o[t], [B, C] (includes 1/(B·T))
    o: Tensor                                           # output of this (possibly noisy) step, detached
    y: Tensor
    time_steps: int
    loss_fn: Callable
    rerun: Callable[[dict | None], Tensor]              # output of this step from the previous state,
                                                        # with another perturbation (no graph)


class ThreeFactorRule(Rule):
    """Base of rules whose hidden layers learn from a rule-given top-down signal.

    With noise injected before the neuron (``site = "before"``) the signal estimates the gradient
    with respect to the membrane input, so it is applied to u[t] (∂u/∂I = 1: no ψ' factor);
    otherwise to the spikes s[t], through the layer's estimator ψ'."""

    site = "after"

    local = False          # local learning: fixed random readout per hidden layer
    local_scale = 1.0
    last_draws = 0         # fresh random numbers drawn by the last ``noise`` call (cost model)

    def set_local(self, ll: bool | int, ll_scale: float) -> None:
        if not ll_scale > 0:
            raise SpecError(f"{self.name}: ll_scale must be > 0, got {ll_scale}")
        self.local, self.local_scale = bool(ll), float(ll_scale)
        self._local_readouts: dict[str, Tensor] = {}

    def _local_signals(self, net, state, y, loss_fn, T) -> dict[str, Tensor]:
        out = {}
        for name in net.spiking_layers():
            s = state["layers"][name][1].detach().flatten(1).requires_grad_(True)
            if name not in self._local_readouts:
                g = self.generator
                R = torch.randn(feedback_shape(net, name), generator=g, device=g.device if g is not None else s.device)
                self._local_readouts[name] = (R / math.sqrt(R.shape[1])).to(s.device, s.dtype)
            loss = loss_fn(s @ self._local_readouts[name].t(), y) / T
            (out[name],) = torch.autograd.grad(loss * self.local_scale, s)
        return out

    def prepare(self, net, x_seq: Tensor) -> None:
        """Create per-network state (feedback matrices) on first use."""

    def noise(self, net, t: int, batch: int, like: Tensor) -> dict[str, Tensor] | None:
        """Noise added to hidden spiking outputs at step t (None: a clean pass)."""
        return None

    def hidden_signals(self, net, info: StepInfo) -> dict[str, Tensor]:
        """δ_l [B, N_l] for every hidden spiking layer."""
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
            prev = state

            def rerun(perturb, x=x_seq[t], prev=prev):
                with torch.no_grad():
                    return net.step(x, prev, perturb=perturb, perturb_site=self.site)[0]
            o, state, s_t = net.step(x_seq[t], prev, traces=True, isolate=True, perturb=noise, perturb_site=self.site)
            loss = loss_fn(o, y) / T
            (e,) = torch.autograd.grad(loss, o, retain_graph=True)
            signals = self.hidden_signals(net, StepInfo(e, o.detach(), y, T, loss_fn, rerun))
            if self.local:
                for name, g in self._local_signals(net, state, y, loss_fn, T).items():
                    signals[name] = signals[name].reshape(g.shape) + g
            outs, grads = [o], [e]
            for name in hidden:
                u, s = state["layers"][name]  # graph-connected state of this layer
                target = u if self.site == "before" else s
                if target.requires_grad:  # frozen layers (readout-only control) get nothing
                    outs.append(target)
                    grads.append(signals[name].reshape(target.shape))
            torch.autograd.backward(outs, grads)
            self.observe(o.detach(), noise)
            state = detach_state(state)
            acc.add(loss, o, s_t)
            acc.noise_draws += self.last_draws
        return acc.result()


def feedback_shape(net, name: str) -> tuple[int, int]:
    """[C, N_l] of a feedback matrix from the output to hidden layer ``name``."""
    return net.num_classes, math.prod(net.shapes[name])
