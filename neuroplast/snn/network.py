"""Network: a feed-forward stack of layers, built from a network string, simulated over T steps.

``simulate`` runs all steps layer by layer (BPTT); ``step`` runs one time step through all layers
(online rules). Both return the readout o[t]; the classification output is the accumulated
readout membrane (1/T)·Σ_t o[t] (OTTT/OPZO, Appendix C), and spikes of every spiking layer are
recorded for firing rates and cost counting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from .arch import LayerSpec, parse_arch
from .estimators import make_estimator
from .gemm import Dense
from .layers import Dropout, Flatten, Layer, Pool, Readout, SpikingLayer
from .neurons import LIFParams

Tensor = torch.Tensor


@dataclass
class SimResult:
    """Result of simulating T steps: readout per step [T, B, C], its mean (logits [B, C]), spikes."""

    outputs: Tensor
    spikes: dict[str, Tensor] = field(default_factory=dict)

    @property
    def logits(self) -> Tensor:
        return self.outputs.mean(0)

    def firing_rates(self) -> dict[str, float]:
        """Mean spikes per neuron per time step, per spiking layer."""
        return {k: float(v.detach().float().mean()) for k, v in self.spikes.items()}


class Network(nn.Module):
    """A spiking network. ``layers`` is an ``nn.ModuleDict`` in execution order."""

    def __init__(self, layers: dict[str, Layer], *, arch: str, input_shape: tuple[int, ...], num_classes: int,
                 shapes: dict[str, tuple[int, ...]] | None = None):
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.arch, self.input_shape, self.num_classes = arch, tuple(input_shape), num_classes
        self.shapes = dict(shapes or {})  # per-sample output shape of every layer
        self._fan_out: dict[str, Tensor] | None = None

    def spiking_layers(self) -> list[str]:
        return [k for k, layer in self.layers.items() if layer.records_spikes]

    def check_input(self, x_seq: Tensor) -> None:
        if x_seq.dim() < 2 or tuple(x_seq.shape[2:]) != self.input_shape:
            raise SpecError(f"network {self.arch!r} expects input [T, B, {', '.join(map(str, self.input_shape))}], "
                            f"got {list(x_seq.shape)}")

    def simulate(self, x_seq: Tensor, *, record: bool = True) -> SimResult:
        """Run all T steps (layer by layer, batched over time). x_seq: [T, B, *input_shape]."""
        self.check_input(x_seq)
        h, spikes = x_seq, {}
        for name, layer in self.layers.items():
            h = layer.forward_seq(h)
            if record and layer.records_spikes:
                spikes[name] = h.detach()
        return SimResult(outputs=h, spikes=spikes)

    def forward(self, x_seq: Tensor) -> Tensor:
        """Logits (1/T)·Σ_t o[t] [B, C] (what ``torch.func.functional_call`` runs)."""
        return self.simulate(x_seq, record=False).logits

    def fan_out(self, name: str) -> Tensor:
        """Synapses leaving each neuron of layer ``name`` ("input" for the input), per-sample shape:
        how many neurons of the next synaptic layer it reaches, through pooling and flattening (a
        pooled cell passes every input on: sum pooling). Zero for the last layer. On the CPU whatever
        device the network is on (only the weights' shapes are read)."""
        names = list(self.layers)
        start = 0 if name == "input" else names.index(name) + 1
        shape = self.input_shape if name == "input" else self.shapes[name]
        x = torch.zeros((1, *shape), dtype=torch.float64, requires_grad=True)
        h = x
        for nxt in names[start:]:
            layer = self.layers[nxt]
            op = getattr(layer, "op", None)
            if isinstance(op, nn.Linear):
                h = h.flatten(1) @ torch.ones(op.weight.shape, dtype=torch.float64).t()
                break
            if isinstance(op, nn.Conv2d):
                h = F.conv2d(h, torch.ones(op.weight.shape, dtype=torch.float64), stride=op.stride, padding=op.padding)
                break
            if isinstance(layer, Pool):
                h = F.avg_pool2d(h, layer.k) * layer.k ** 2
            elif isinstance(layer, Flatten):
                h = h.flatten(1)
        else:
            return torch.zeros(shape)
        (grad,) = torch.autograd.grad(h.sum(), x)
        return grad[0].float()

    def count_synops(self, x_seq: Tensor, spike_counts: dict[str, Tensor]) -> dict[str, float]:
        """Synaptic events of one batch: Σ_j count_j·fanout_j per spiking layer (counts [*shape]
        summed over the batch and T), and for the input its non-zero entries (spikes or graded payloads)."""
        return {k: float(v) for k, v in self.synop_sums(x_seq, spike_counts).items()}

    def synop_sums(self, x_seq: Tensor, spike_counts: dict[str, Tensor]) -> dict[str, Tensor]:
        """``count_synops`` as 0-dim tensors on the counts' device (read them together: one device sync)."""
        out = {k: (v * self._fan_out_on(k, v.device)).sum() for k, v in spike_counts.items()}
        events = (x_seq != 0).sum((0, 1))
        out["input"] = (events * self._fan_out_on("input", events.device)).sum()
        return out

    def _fan_out_on(self, name: str, device: torch.device) -> Tensor:
        """``fan_out(name)`` made once, and a copy of it kept per device (no host-to-device copy per batch)."""
        if getattr(self, "_fan_out", None) is None:
            self._fan_out = {k: {torch.device("cpu"): self.fan_out(k)} for k in ["input", *self.spiking_layers()]}
        per_device = self._fan_out[name]
        if device not in per_device:
            per_device[device] = per_device[torch.device("cpu")].to(device)
        return per_device[device]

    def seed_draws(self, seed: int, device=None) -> None:
        """Give every part of the network that draws while running (dropout masks, LocalZO samples,
        ASGL spike noise) a generator of its own, seeded from ``seed`` and its place in the network.
        Each layer then draws the same numbers whatever order the layers run in: all T steps layer by
        layer (``simulate``) or step by step, with autograd interleaving layers and steps (``step``);
        and no two layers share, or repeat, a stream."""
        drawing = [m for m in self.modules() if m is not self and hasattr(m, "generator")]
        for i, m in enumerate(drawing):
            m.generator = torch.Generator(device if device is not None else "cpu").manual_seed(
                seed + 2_000_029 + 7_919 * i)

    def init_state(self) -> dict:
        """Zero state for ``step``: neuron states, dropout masks and presynaptic traces."""
        return {"layers": {k: None for k in self.layers}, "traces": {k: None for k in self.layers}}

    def step(self, x: Tensor, state: dict, *, traces: bool = False, isolate: bool = False,
             perturb: dict[str, Tensor] | None = None, perturb_site: str = "after",
             feedback: dict[str, Tensor] | None = None) -> tuple[Tensor, dict, dict[str, Tensor]]:
        """One time step: x [B, *input_shape] -> (o[t] [B, C], new state, spikes of this step).

        With ``traces=True`` every synaptic layer keeps x̂[t] = λ·x̂[t−1] + x[t] of its input
        (λ = the layer's ``trace_decay``, detached) and its weight gradient uses x̂ (OTTT).
        ``isolate=True`` cuts the graph between layers, so a gradient given to a layer's output
        reaches only that layer's own weights (local, three-factor rules: DFA, OPZO).
        ``perturb[name]`` is added to that spiking layer's output before the next layer sees it
        (``perturb_site="after"`` the neuron; the layer's own state keeps its clean spikes), or to
        its input current (``"before"`` the neuron, so it reaches the membrane and the spikes).
        ``feedback[name]`` replaces that layer's W in the gradient sent to its input (FA)."""
        h, new_layers, new_traces, spikes = x, {}, {}, {}
        for name, layer in self.layers.items():
            if isolate:
                h = h.detach()
            w_in = None
            if traces and layer.trace_decay:  # a layer with decay 0 (readout) uses x itself
                prev = state["traces"][name]
                w_in = h.detach() if prev is None else layer.trace_decay * prev + h.detach()
                new_traces[name] = w_in
            fb = feedback.get(name) if feedback else None
            noise = perturb.get(name) if perturb else None
            before = noise if perturb_site == "before" else None
            h, new_layers[name] = layer.step(h, state["layers"][name], w_in, fb, before)
            if layer.records_spikes:
                spikes[name] = h.detach()
            if noise is not None and perturb_site == "after":
                h = h + noise
        return h, {"layers": new_layers, "traces": new_traces}, spikes


def detach_state(state):
    """Cut a state (nested dict/tuple of tensors) from the autograd graph."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(v) for v in state)
    return state


def _init_synapse(op: nn.Module, generator: torch.Generator | None) -> None:
    """Weights U(−1/√fan_in, 1/√fan_in) (PyTorch's default scale for Linear/Conv2d), zero bias.

    A 2–4× larger init makes random hidden spikes good features on their own (a readout-only
    control on digits then reaches ~95%), which hides whether the hidden layers learn."""
    fan_in = op.weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        op.weight.uniform_(-bound, bound, generator=generator)
        if op.bias is not None:
            op.bias.zero_()


def _make_layer(spec: LayerSpec, shape: tuple[int, ...], lif: LIFParams, estimator: str, compiled: bool) -> Layer:
    if spec.kind == "conv":
        if len(shape) != 3:
            raise SpecError(f"layer {spec.index + 1} ({spec.token!r}): conv needs a CxHxW input, got {shape}")
        op = nn.Conv2d(shape[0], spec.size, spec.kernel, stride=spec.stride, padding=spec.kernel // 2)
        return SpikingLayer(op, lif=lif, spike=make_estimator(estimator), compiled=compiled)
    if spec.kind in ("dense", "readout"):
        op = Dense(math.prod(shape), spec.size)
        if spec.kind == "readout":
            return Readout(op)
        return SpikingLayer(op, lif=lif, spike=make_estimator(estimator), compiled=compiled)
    if spec.kind == "pool":
        return Pool(spec.pool, spec.kernel)
    if spec.kind == "dropout":
        return Dropout(spec.p)
    return Flatten()


def build_network(arch: str, *, input_shape: tuple[int, ...], num_classes: int, lif: LIFParams | None = None,
                  estimator: str = "sigmoid:k=4", generator: torch.Generator | None = None,
                  compiled: bool = False) -> Network:
    """Build a network from a string (see ``arch``); shapes are checked layer by layer.

    ``compiled=True`` fuses each spiking layer's LIF recursion and its backward (``lif_fused``)."""
    lif = lif or LIFParams()
    shape, layers, counts, shapes = tuple(input_shape), {}, {}, {}
    for spec in parse_arch(arch, shape, num_classes):
        if spec.kind in ("dense", "readout") and len(shape) > 1:
            counts["flatten"] = counts.get("flatten", 0) + 1
            shape = (math.prod(shape),)
            layers[f"flatten{counts['flatten']}"], shapes[f"flatten{counts['flatten']}"] = Flatten(), shape
        layer = _make_layer(spec, shape, lif, estimator, compiled)
        if hasattr(layer, "op"):
            _init_synapse(layer.op, generator)
        if isinstance(layer, Dropout):
            layer.generator = generator
        counts[spec.kind] = counts.get(spec.kind, 0) + 1
        name = spec.kind if spec.kind == "readout" else f"{spec.kind}{counts[spec.kind]}"
        try:
            with torch.no_grad():
                out = layer.step(torch.zeros(1, *shape), None)[0]
        except RuntimeError as exc:
            raise SpecError(f"network {arch!r}, layer {spec.index + 1} ({spec.token!r}) does not fit its "
                            f"input of shape {'x'.join(map(str, shape))}: {exc}") from None
        if out.numel() == 0:
            raise SpecError(f"network {arch!r}, layer {spec.index + 1} ({spec.token!r}) leaves nothing of its "
                            f"input of shape {'x'.join(map(str, shape))}")
        layers[name], shape = layer, tuple(out.shape[1:])
        shapes[name] = shape
    return Network(layers, arch=arch, input_shape=input_shape, num_classes=num_classes, shapes=shapes)
