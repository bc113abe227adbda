"""Layers of a spiking network. Each layer works in two modes over the same equations:

* ``step(x[t], state) -> (y[t], state)`` — one time step, explicit state (online rules, chips);
* ``forward_seq(x[0:T]) -> y[0:T]`` — all T steps at once (BPTT): synaptic products of all steps
  are one batched GEMM/conv, then the LIF recursion runs over time. Inputs that are constant in
  time (a stride-0 view from direct encoding) are multiplied once.

Spiking layers = synapse (dense or conv2d) + LIF (``neurons.lif_step``); the readout is a synapse
without spikes whose output o[t] is accumulated over time by the network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import draws
from .lif_sequence import lif_sequence
from .neurons import LIFParams, lif_step
from .pooling import avg_pool
from .spikefn import SpikeEstimator
from .synapse import synapse

Tensor = torch.Tensor


def _seq_apply(fn, x_seq: Tensor) -> Tensor:
    """Apply a per-step function to all T steps at once by folding time into the batch."""
    if x_seq.stride(0) == 0:  # constant in time: compute once, keep it a stride-0 view
        y = fn(x_seq[0])
        # expanded to at least 2 steps, then cut: a 1-step window of a constant input keeps stride 0
        # (expand(1, ...) would not), so the layers after it still see a constant input
        T = x_seq.shape[0]
        return y.unsqueeze(0).expand(max(T, 2), *y.shape)[:T]
    y = fn(x_seq.flatten(0, 1))
    return y.unflatten(0, x_seq.shape[:2])


class Layer(nn.Module):
    """Base layer. ``records_spikes`` marks layers whose outputs are spikes (rates, cost model)."""

    records_spikes = False
    #: decay of the presynaptic trace that online rules keep for this layer's input; None: no synapse
    trace_decay: float | None = None

    def step(self, x: Tensor, state, weight_input: Tensor | None = None, feedback: Tensor | None = None,
             current_noise: Tensor | None = None):
        """One step. Synaptic layers: ``weight_input`` is the eligibility input of the weight
        gradient (a trace), ``feedback`` replaces W in the gradient sent back to x; spiking layers
        add ``current_noise`` to their input current (noise injected before the neuron)."""
        return self.forward(x), None

    def forward_seq(self, x_seq: Tensor) -> Tensor:
        return _seq_apply(self.forward, x_seq)


class SpikingLayer(Layer):
    """Synapse + LIF: I[t] = W ⊛ x[t] + b; (u, s) = lif_step(u, s, I, params)."""

    records_spikes = True

    def __init__(self, op: nn.Module, *, lif: LIFParams, spike: SpikeEstimator, compiled: bool = False):
        super().__init__()
        self.op, self.lif, self.spike = op, lif, spike
        self.trace_decay = lif.leak
        self.compiled = compiled  # fuse the LIF recursion (lif_fused: C on the CPU, torch.compile elsewhere)

    def extra_repr(self) -> str:
        return f"leak={self.lif.leak}, threshold={self.lif.threshold}, reset={self.lif.reset}"

    def step(self, x, state, weight_input=None, feedback=None, current_noise=None):
        current = synapse(self.op, x, weight_input, feedback)
        if current_noise is not None:
            current = current + current_noise
        u, s = state if state is not None else (torch.zeros_like(current), torch.zeros_like(current))
        u, s = lif_step(u, s, current, self.lif, self.spike)
        return s, (u, s)

    def forward_seq(self, x_seq):
        derivative = self.spike.pointwise_derivative()
        if derivative is not None:  # estimator is "H forward, h'(x) backward": fused recursion
            if x_seq.stride(0) == 0:  # constant input: one synaptic product, its gradient summed in the scan
                return lif_sequence(self.op(x_seq[0]), self.lif, derivative, compiled=self.compiled,
                                    steps=x_seq.shape[0])
            return lif_sequence(_seq_apply(self.op, x_seq), self.lif, derivative, compiled=self.compiled)
        current = _seq_apply(self.op, x_seq)
        u = s = torch.zeros_like(current[0])
        spikes = []
        for cur in current.unbind(0):  # unbind: one backward for all steps (select would zero-fill T times)
            u, s = lif_step(u, s, cur, self.lif, self.spike)
            spikes.append(s)
        return torch.stack(spikes)


class Readout(Layer):
    """Non-spiking output o[t] = W·x[t] + b; the network accumulates o over time (mean over T)."""

    trace_decay = 0.0  # o[t] has no memory of x[t−1], so its weight gradient uses x[t] itself

    def __init__(self, op: nn.Linear):
        super().__init__()
        self.op = op

    def step(self, x, state, weight_input=None, feedback=None, current_noise=None):
        return synapse(self.op, x, weight_input, feedback), None

    def forward_seq(self, x_seq):
        return _seq_apply(self.op, x_seq)


class Pool(Layer):
    """Average or max pooling with kernel = stride = k."""

    def __init__(self, kind: str, k: int):
        super().__init__()
        self.kind, self.k = kind, k

    def extra_repr(self) -> str:
        return f"{self.kind}, k={self.k}"

    def forward(self, x):
        return avg_pool(x, self.k) if self.kind == "avg" else F.max_pool2d(x, self.k)


class Flatten(Layer):
    def forward(self, x):
        return x.flatten(1)


class Dropout(Layer):
    """Dropout with one mask per sequence, shared by all time steps (as in OTTT/OPZO)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def _mask(self, like: Tensor) -> Tensor:
        g = self.generator
        keep = draws.uniform(like.shape, g, like.device) >= self.p
        return keep.to(like.device, like.dtype) / (1.0 - self.p)

    def step(self, x, state, weight_input=None, feedback=None, current_noise=None):
        if not self.training or self.p == 0:
            return x, None
        mask = state if state is not None else self._mask(x)
        return x * mask, mask

    def forward_seq(self, x_seq):
        if not self.training or self.p == 0:
            return x_seq
        return x_seq * self._mask(x_seq[0])
